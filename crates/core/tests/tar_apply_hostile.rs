//! Hostile layers: each is applied to a fresh root with a sentinel directory beside it
//! (outside the root), which must keep every byte, mode, owner, xattr and mtime, and nothing
//! may appear next to the root. Needs root, not btrfs.

mod tar_apply_support;

use btrfs_layers_core::{Code, Error};
use nix::errno::Errno;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Instant;
use tar_apply_support::*;

/// What a case may end in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Applied (confined): the check function looks at the root.
    Applied,
    /// Fails with one of these codes.
    Fails(&'static [Code]),
}

const BAD: Expect = Expect::Fails(&[Code::BadLayer]);

fn errno(e: Errno) -> Code {
    Code::Errno(e)
}

/// Paths a case may aim at: the sentinel's absolute path and its path relative to the root.
struct Aim {
    abs: String,
    rel: String,
}

struct Case {
    name: &'static str,
    /// Runs before the apply (to plant a lower layer).
    setup: fn(&Scratch, &Aim),
    layer: fn(&Aim) -> Vec<u8>,
    expect: Expect,
    /// Runs after a successful apply.
    check: fn(&Scratch, &Aim),
}

fn nothing(_: &Scratch, _: &Aim) {}

fn case(name: &'static str, layer: fn(&Aim) -> Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        setup: nothing,
        layer,
        expect,
        check: nothing,
    }
}

fn escape_marker() -> String {
    format!("/tmp/btrfs-layers-escape-{}", std::process::id())
}

fn cases() -> Vec<Case> {
    vec![
        case("dotdot", |_| Layer::new().file("../x", "x").finish(), BAD),
        case(
            "dotdot in the middle",
            |_| Layer::new().file("a/../../x", "x").finish(),
            BAD,
        ),
        case(
            "dotdot to the sentinel",
            |a| Layer::new().file(&format!("{}/file", a.rel), "x").finish(),
            BAD,
        ),
        case(
            "dotdot through gnu long name",
            |_| {
                Layer::new()
                    .gnu_long_name(b"../../escape")
                    .add(Entry::file("x", "x"))
                    .finish()
            },
            BAD,
        ),
        case(
            "dotdot through pax path",
            |_| {
                Layer::new()
                    .add(Entry::file("x", "x").with_pax("path", "../escape"))
                    .finish()
            },
            BAD,
        ),
        Case {
            name: "absolute names land inside the root",
            layer: |a| {
                Layer::new()
                    .file(&format!("{}/file", a.abs), "inside")
                    .file(&escape_marker(), "inside")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, a| {
                assert_eq!(
                    fs::read(s.root.join(format!(".{}/file", a.abs))).unwrap(),
                    b"inside"
                );
                assert!(!Path::new(&escape_marker()).exists());
                assert!(s
                    .root
                    .join(escape_marker().trim_start_matches('/'))
                    .exists());
            },
            setup: nothing,
        },
        case(
            "symlink to the sentinel (absolute), file through it",
            |a| {
                Layer::new()
                    .symlink("s", &a.abs)
                    .file("s/file", "evil")
                    .file("s/new", "evil")
                    .finish()
            },
            BAD,
        ),
        case(
            "symlink to the sentinel (relative), file through it",
            |a| {
                Layer::new()
                    .symlink("s", &a.rel)
                    .file("s/file", "evil")
                    .finish()
            },
            BAD,
        ),
        case(
            "symlink chain aiming at the sentinel",
            |_| {
                Layer::new()
                    .symlink("a", "/b")
                    .symlink("b", "../../sentinel")
                    .file("a/file", "evil")
                    .finish()
            },
            BAD,
        ),
        Case {
            name: "symlink chain resolves inside",
            layer: |_| {
                Layer::new()
                    .symlink("a", "b")
                    .symlink("b", "../../..")
                    .file("a/sentinel/file", "clamped")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| assert_eq!(fs::read(s.path("sentinel/file")).unwrap(), b"clamped"),
            setup: nothing,
        },
        case(
            "symlink loop",
            |_| {
                Layer::new()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", "x")
                    .finish()
            },
            Expect::Fails(&[Code::Errno(Errno::ELOOP)]),
        ),
        Case {
            name: "file replaces a symlink to the sentinel file",
            layer: |a| {
                Layer::new()
                    .symlink("x", &format!("{}/file", a.abs))
                    .file("x", "replaced")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| {
                assert!(fs::symlink_metadata(s.path("x")).unwrap().is_file());
                assert_eq!(fs::read(s.path("x")).unwrap(), b"replaced");
            },
            setup: nothing,
        },
        Case {
            name: "file replaces a lower symlink to the sentinel file",
            setup: |s, a| {
                std::os::unix::fs::symlink(format!("{}/file", a.abs), s.path("x")).unwrap()
            },
            layer: |_| {
                Layer::new()
                    .file("x", "replaced")
                    .add(Entry::device(EntryType::Fifo, "x", 0, 0))
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| {
                assert!(fs::symlink_metadata(s.path("x"))
                    .unwrap()
                    .file_type()
                    .is_fifo())
            },
        },
        case(
            "hardlink to ../sentinel/file",
            |a| {
                Layer::new()
                    .hardlink("h", &format!("{}/file", a.rel))
                    .finish()
            },
            BAD,
        ),
        case(
            "hardlink to the sentinel's absolute path",
            |a| {
                Layer::new()
                    .hardlink("h", &format!("{}/file", a.abs))
                    .finish()
            },
            BAD,
        ),
        case(
            "hardlink through a symlinked dir outside",
            |a| {
                Layer::new()
                    .symlink("s", &a.abs)
                    .hardlink("h", "s/file")
                    .finish()
            },
            BAD,
        ),
        Case {
            name: "hardlink to a symlink pointing outside, then a file at its name",
            layer: |a| {
                Layer::new()
                    .symlink("s", &format!("{}/file", a.abs))
                    .hardlink("h", "s")
                    .file("h", "replaced")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, a| {
                assert_eq!(fs::read(s.path("h")).unwrap(), b"replaced");
                assert_eq!(
                    fs::read_link(s.path("s")).unwrap(),
                    Path::new(&format!("{}/file", a.abs))
                );
            },
            setup: nothing,
        },
        case(
            "hardlink to a symlinked dir outside, then a file under it",
            |a| {
                Layer::new()
                    .symlink("s", &a.abs)
                    .hardlink("h", "s")
                    .file("h/file", "evil")
                    .finish()
            },
            BAD,
        ),
        case(
            "hardlink to a directory",
            |_| Layer::new().dir("d/").hardlink("h", "d").finish(),
            BAD,
        ),
        case(
            "hardlink to the root",
            |_| Layer::new().hardlink("h", "./").finish(),
            BAD,
        ),
        case(
            "hardlink to a missing target",
            |_| Layer::new().hardlink("h", "nowhere").finish(),
            BAD,
        ),
        case(
            "root entry is a file",
            |_| Layer::new().file("./", "x").finish(),
            BAD,
        ),
        case(
            "root entry is a symlink",
            |a| Layer::new().symlink(".", &a.abs).finish(),
            BAD,
        ),
        case(
            "root entry is a hardlink",
            |_| Layer::new().file("f", "x").hardlink("/", "f").finish(),
            BAD,
        ),
        case(
            "whiteout of nothing",
            |_| Layer::new().file(".wh.", "").finish(),
            BAD,
        ),
        case(
            "whiteout of dot",
            |_| Layer::new().file("a/.wh..", "").finish(),
            BAD,
        ),
        case(
            "whiteout of dotdot",
            |_| Layer::new().file("a/b/.wh...", "").finish(),
            BAD,
        ),
        Case {
            name: "whiteout through a lower symlink to the sentinel dir",
            setup: |s, a| std::os::unix::fs::symlink(&a.abs, s.path("link")).unwrap(),
            layer: |_| Layer::new().file("link/.wh.file", "").finish(),
            expect: BAD,
            check: nothing,
        },
        Case {
            name: "whiteout through a symlink deletes inside the root only",
            setup: |s, a| {
                let inside = s.root.join(format!(".{}", a.abs));
                fs::create_dir_all(&inside).unwrap();
                fs::write(inside.join("file"), "lower copy inside the root").unwrap();
            },
            layer: |a| {
                Layer::new()
                    .symlink("link", &a.abs)
                    .file("link/.wh.file", "")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, a| assert!(!s.root.join(format!(".{}/file", a.abs)).exists()),
        },
        Case {
            name: "opaque whiteout under a symlinked dir pointing outside",
            setup: |s, a| std::os::unix::fs::symlink(&a.rel, s.path("link")).unwrap(),
            layer: |_| Layer::new().file("link/.wh..wh..opq", "").finish(),
            expect: BAD,
            check: nothing,
        },
        Case {
            name: "opaque whiteout through a symlink to /",
            setup: |s, _| fs::write(s.path("lower"), "lower").unwrap(),
            layer: |_| {
                Layer::new()
                    .symlink("top", "/")
                    .file("top/.wh..wh..opq", "")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| {
                assert!(!s.path("lower").exists());
                assert!(fs::symlink_metadata(s.path("top"))
                    .unwrap()
                    .file_type()
                    .is_symlink());
            },
        },
        case(
            "duplicate paths: dir, then symlink outside, then file under it",
            |a| {
                Layer::new()
                    .dir("d/")
                    .file("d/a", "a")
                    .symlink("d", &a.abs)
                    .file("d/file", "evil")
                    .finish()
            },
            BAD,
        ),
        Case {
            name: "duplicate paths: symlink outside, then dir, then file under it",
            layer: |a| {
                Layer::new()
                    .symlink("d", &a.rel)
                    .dir("d/")
                    .file("d/file", "inside")
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| assert_eq!(fs::read(s.path("d/file")).unwrap(), b"inside"),
            setup: nothing,
        },
        case(
            "file under a file",
            |_| Layer::new().file("f", "x").file("f/x", "x").finish(),
            Expect::Fails(&[Code::Errno(Errno::ENOTDIR)]),
        ),
        case(
            "device major out of range",
            |_| {
                Layer::new()
                    .add(Entry::device(EntryType::Char, "dev", 4096, 0))
                    .finish()
            },
            BAD,
        ),
        case(
            "device minor out of range",
            |_| {
                Layer::new()
                    .add(Entry::device(EntryType::Block, "dev", 8, 1 << 20))
                    .finish()
            },
            BAD,
        ),
        case(
            "trusted xattr",
            |_| {
                Layer::new()
                    .add(Entry::file("f", "x").with_pax("SCHILY.xattr.trusted.overlay.opaque", "y"))
                    .finish()
            },
            BAD,
        ),
        case(
            "xattr of an unknown namespace",
            |_| {
                Layer::new()
                    .add(Entry::file("f", "x").with_pax("SCHILY.xattr.system.nfs4_acl", "y"))
                    .finish()
            },
            BAD,
        ),
        Case {
            name: "xattrs on a symlink pointing outside stay on the symlink",
            layer: |a| {
                Layer::new()
                    .add(
                        Entry::symlink("s", format!("{}/file", a.abs))
                            .with_pax("SCHILY.xattr.user.evil", "1")
                            .with_pax("SCHILY.xattr.security.btrfs-layers-test", "2"),
                    )
                    .add(
                        Entry::symlink("r", format!("{}/file", a.rel))
                            .with_pax("SCHILY.xattr.user.evil", "1"),
                    )
                    .finish()
            },
            expect: Expect::Applied,
            check: |s, _| {
                let on_link = xattr(&s.path("s"), b"security.btrfs-layers-test");
                assert_eq!(on_link.as_deref(), Some(&b"2"[..]));
            },
            setup: nothing,
        },
        case(
            "unsupported entry type",
            |_| {
                let mut e = Entry::file("v", "");
                e.kind = EntryType::new(b'V');
                Layer::new().add(e).finish()
            },
            BAD,
        ),
        case(
            "truncated mid-body",
            |_| {
                let mut bytes = Layer::new().file("f", &"x".repeat(1000)).bytes;
                bytes.truncate(512 + 300);
                bytes
            },
            BAD,
        ),
        case(
            "truncated at an entry boundary",
            |_| Layer::new().file("f", "x").bytes,
            BAD,
        ),
        case(
            "truncated gzip",
            |_| {
                let gz = gzip(&Layer::new().file("f", &"x".repeat(100_000)).finish());
                gz[..gz.len() / 2].to_vec()
            },
            BAD,
        ),
        case(
            "truncated zstd",
            |_| {
                let z = zstd(&Layer::new().file("f", &"xy".repeat(100_000)).finish());
                z[..z.len() - 10].to_vec()
            },
            BAD,
        ),
        case(
            "corrupt gzip trailer",
            |_| {
                let mut gz = gzip(&Layer::new().file("f", "x").finish());
                let n = gz.len();
                gz[n - 6] ^= 0xff;
                gz
            },
            BAD,
        ),
        case(
            "corrupt header checksum",
            |_| {
                let mut bytes = Layer::new().file("f", "x").finish();
                bytes[0] = b'g';
                bytes
            },
            BAD,
        ),
        case(
            "garbage",
            |_| {
                (0..8192u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect()
            },
            BAD,
        ),
        case(
            "oversized pax header",
            |_| {
                Layer::new()
                    .add(Entry::file("f", "x").with_pax("comment", vec![b'z'; 9 << 20]))
                    .finish()
            },
            BAD,
        ),
        case("sparse file of holes only (bomb)", |_| sparse_bomb(), BAD),
        case(
            "path of 5000 bytes",
            |_| {
                Layer::new()
                    .file(&format!("{}/f", vec!["d".repeat(99); 50].join("/")), "x")
                    .finish()
            },
            Expect::Fails(&[Code::Errno(Errno::ENAMETOOLONG), Code::BadLayer]),
        ),
        case(
            "name of 300 bytes",
            |_| Layer::new().file(&"n".repeat(300), "x").finish(),
            Expect::Fails(&[Code::Errno(Errno::ENAMETOOLONG), Code::BadLayer]),
        ),
    ]
}

/// A GNU sparse entry claiming 1 TiB made of nothing but a hole.
fn sparse_bomb() -> Vec<u8> {
    let mut h = ::tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(1 << 40);
    gnu.sparse[0].set_offset(1 << 40);
    gnu.sparse[0].set_length(0);
    h.set_cksum();
    Layer::new().raw(h.as_bytes()).finish()
}

fn check_case(c: &Case) {
    let s = Scratch::new();
    let aim = Aim {
        abs: s.sentinel.display().to_string(),
        rel: "../sentinel".into(),
    };
    (c.setup)(&s, &aim);
    let before = s.outside();
    let result = s.apply(&(c.layer)(&aim));
    eprintln!(
        "{}: {}",
        c.name,
        result
            .as_ref()
            .map_or_else(|e| e.to_string(), |n| format!("applied {n} bytes"))
    );
    match (c.expect, &result) {
        (Expect::Applied, Ok(_)) => (c.check)(&s, &aim),
        (Expect::Fails(codes), Err(e)) if codes.contains(&e.code) => {}
        _ => panic!("{}: expected {:?}, got {result:?}", c.name, c.expect),
    }
    assert_eq!(
        s.outside(),
        before,
        "{}: something outside the root changed",
        c.name
    );
}

#[test]
fn hostile_layers_stay_inside_the_root() {
    let cases = cases();
    assert!(cases.len() >= 25);
    for c in &cases {
        check_case(c);
    }
    assert!(!Path::new(&escape_marker()).exists());
}

/// A gzip stream made lazily: the header of a 200 MB file of zeros, then the same deflate
/// block of 1 MiB of zeros over and over (each block starts after a full flush, so it is
/// byte-for-byte the same).
struct GzipBomb {
    head: Vec<u8>,
    block: Vec<u8>,
    at: usize,
    served: u64,
}

impl GzipBomb {
    fn new() -> GzipBomb {
        let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
        let mut compress = |data: &[u8]| {
            let mut out = Vec::with_capacity(data.len() + 1024);
            deflate
                .compress_vec(data, &mut out, flate2::FlushCompress::Full)
                .unwrap();
            out
        };
        let mut head = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        head.extend(compress(&Entry::file("zeros", "").header(200_000_000)));
        let zeros = vec![0u8; 1 << 20];
        let block = compress(&zeros);
        assert_eq!(
            compress(&zeros),
            block,
            "full flush makes every block the same"
        );
        GzipBomb {
            head,
            block,
            at: 0,
            served: 0,
        }
    }
}

impl Read for GzipBomb {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = if !self.head.is_empty() {
            let n = self.head.len().min(buf.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            n
        } else {
            let n = (self.block.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
            self.at = (self.at + n) % self.block.len();
            n
        };
        self.served += n as u64;
        Ok(n)
    }
}

#[test]
fn gzip_bomb_trips_the_ratio_guard_early() {
    let s = Scratch::new();
    let before = s.outside();
    let start = Instant::now();
    let mut bomb = GzipBomb::new();
    let err: Error = s.apply_from(&mut bomb).unwrap_err();
    assert_eq!(err.code, Code::BadLayer, "{err}");
    assert!(err.message.contains("bomb"), "{err}");
    assert!(
        bomb.served < 1 << 20,
        "stopped after {} compressed bytes",
        bomb.served
    );
    assert!(start.elapsed().as_secs() < 30);
    assert_eq!(s.outside(), before);
}

#[test]
fn sentinel_snapshot_sees_changes() {
    // The oracle itself: a change to the sentinel must show.
    let s = Scratch::new();
    let before = s.outside();
    set_mtime(&s.sentinel.join("file"), SENTINEL_MTIME + 1);
    assert_ne!(s.outside(), before);
    let before = s.outside();
    fs::write(s.dir.join("x"), "x").unwrap();
    assert_ne!(s.outside(), before);
    let _ = errno(Errno::EIO);
}
