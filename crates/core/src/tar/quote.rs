//! Messages about bad input that never echo it: the tar reader quotes the bytes it could not
//! parse (a whole header block, and the "name" that follows: the first lines of whatever file
//! was passed), and an error message must not carry a file's contents into a terminal or a log.

use std::fmt::Write;

/// Most bytes of the input an error message quotes.
pub const EXCERPT: usize = 16;

/// `bytes` as a short quoted excerpt: at most [`EXCERPT`] bytes, anything but printable ASCII
/// escaped as `\xNN`, `...` when cut.
pub fn excerpt(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(EXCERPT) {
        match b {
            b'"' | b'\\' => {
                let _ = write!(out, "\\{}", b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if bytes.len() > EXCERPT {
        out.push_str("...");
    }
    out
}

/// The message of an error the tar reader (or a decompressor) returned for the input, without
/// the input: the reader's words up to the first ": " (what went wrong), which field it was
/// reading, and an excerpt of the offending bytes. The reader's own forms are
/// `<what went wrong>: <field bytes> when getting <field> for <header name bytes>`.
pub fn input_error(e: &std::io::Error) -> String {
    let full = e.to_string();
    let Some((kind, rest)) = full.split_once(": ") else {
        // No quoted bytes, unless it is long or not plain text.
        let plain = full.len() <= 80 && full.bytes().all(|b| (0x20..=0x7e).contains(&b));
        return if plain {
            full
        } else {
            format!("unreadable input near {}", excerpt(full.as_bytes()))
        };
    };
    let (field, getting) = match rest.split_once(" when getting ") {
        Some((f, t)) => (f, t.split(" for ").next()),
        None => (rest, None),
    };
    let getting = getting
        .filter(|w| w.len() <= 16 && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|w| format!(" (reading the {w} field)"))
        .unwrap_or_default();
    // The reader's words are plain ASCII prose; anything else before ": " is input.
    let prose = kind.len() <= 60
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -_'".contains(&b));
    if !prose {
        return format!("unreadable input near {}", excerpt(full.as_bytes()));
    }
    format!("{kind}{getting}, at {}", excerpt(field.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt(b"abc"), "\"abc\"");
        assert_eq!(excerpt(b"a\"b\\c\n\xff"), "\"a\\\"b\\\\c\\x0a\\xff\"");
        assert_eq!(excerpt(&[b'x'; 40]), format!("\"{}\"...", "x".repeat(16)));
    }

    #[test]
    fn the_readers_quotes_of_the_input_are_cut() {
        let secret =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin";
        let e = std::io::Error::other(format!(
            "numeric field was not a number: login\nsy when getting cksum for {secret}"
        ));
        let m = input_error(&e);
        assert_eq!(
            m,
            "numeric field was not a number (reading the cksum field), at \"login\\x0asy\""
        );
        assert!(!m.contains("root:x"), "{m}");
        let plain = std::io::Error::other("archive header checksum mismatch");
        assert_eq!(input_error(&plain), "archive header checksum mismatch");
        let long = std::io::Error::other("x".repeat(200));
        assert!(input_error(&long).len() < 60);
    }
}
