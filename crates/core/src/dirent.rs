//! Reading a directory with getdents64 on a plain fd: no libc `DIR` (whose `fdopendir` costs
//! an fstat and two fcntl per directory), names as bytes, the inode number and type readdir
//! gives for free. The walks open thousands of directories; this is their reader.

use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// What readdir says an entry is (`d_type`); None when the filesystem does not say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One entry of a directory, `.` and `..` left out.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: CString,
    pub ino: u64,
    pub kind: Option<Kind>,
}

/// An open directory.
pub struct Dir {
    fd: OwnedFd,
    read: bool,
}

const BUF: usize = 32 * 1024;
/// Offsets in `struct linux_dirent64`: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
const RECLEN_AT: usize = 16;
const TYPE_AT: usize = 18;
const NAME_AT: usize = 19;

impl Dir {
    /// Read the directory open at `fd` (opened with O_DIRECTORY).
    pub fn from_fd(fd: OwnedFd) -> Dir {
        Dir { fd, read: false }
    }

    /// Every entry but `.` and `..`, in readdir order; from the start on every call.
    pub fn entries(&mut self) -> Result<Vec<DirEntry>, Errno> {
        let raw = self.fd.as_raw_fd();
        if self.read {
            // SAFETY: lseek on an fd we own.
            if unsafe { libc::lseek(raw, 0, libc::SEEK_SET) } < 0 {
                return Err(Errno::last());
            }
        }
        self.read = true;
        let mut buf = vec![0u64; BUF / 8];
        let mut out = Vec::new();
        loop {
            // SAFETY: buf is BUF writable bytes; getdents64 writes at most that many.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    raw,
                    buf.as_mut_ptr().cast::<u8>(),
                    BUF,
                )
            };
            if n < 0 {
                return Err(Errno::last());
            }
            if n == 0 {
                return Ok(out);
            }
            // SAFETY: the kernel initialized the first n bytes; u8 has no invalid values.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            parse(bytes, &mut out)?;
        }
    }
}

/// Append the records of one getdents64 reply to `out`.
fn parse(mut bytes: &[u8], out: &mut Vec<DirEntry>) -> Result<(), Errno> {
    while bytes.len() > NAME_AT {
        let reclen = usize::from(u16::from_ne_bytes([bytes[RECLEN_AT], bytes[RECLEN_AT + 1]]));
        if reclen <= NAME_AT || reclen > bytes.len() {
            return Err(Errno::EIO);
        }
        let record = &bytes[..reclen];
        let name = CStr::from_bytes_until_nul(&record[NAME_AT..]).map_err(|_| Errno::EIO)?;
        if name != c"." && name != c".." {
            let ino = u64::from_ne_bytes(record[..8].try_into().expect("8 bytes"));
            let kind = match record[TYPE_AT] {
                libc::DT_DIR => Some(Kind::Dir),
                libc::DT_REG => Some(Kind::File),
                libc::DT_LNK => Some(Kind::Symlink),
                libc::DT_UNKNOWN => None,
                _ => Some(Kind::Other),
            };
            out.push(DirEntry {
                name: name.to_owned(),
                ino,
                kind,
            });
        }
        bytes = &bytes[reclen..];
    }
    Ok(())
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;

    fn record(ino: u64, kind: u8, name: &[u8]) -> Vec<u8> {
        let len = (NAME_AT + name.len() + 1).div_ceil(8) * 8;
        let mut r = vec![0u8; len];
        r[..8].copy_from_slice(&ino.to_ne_bytes());
        r[RECLEN_AT..RECLEN_AT + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        r[TYPE_AT] = kind;
        r[NAME_AT..NAME_AT + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn parses_records_and_skips_dot_entries() {
        let mut bytes = Vec::new();
        for (ino, kind, name) in [
            (2u64, libc::DT_DIR, &b"."[..]),
            (1, libc::DT_DIR, b".."),
            (257, libc::DT_REG, b"file"),
            (258, libc::DT_DIR, b"d"),
            (259, libc::DT_LNK, b"\xffl"),
            (260, libc::DT_FIFO, b"p"),
            (261, libc::DT_UNKNOWN, b"u"),
        ] {
            bytes.extend(record(ino, kind, name));
        }
        let mut out = Vec::new();
        parse(&bytes, &mut out).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.ino, e.kind, e.name.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (257, Some(Kind::File), b"file".to_vec()),
                (258, Some(Kind::Dir), b"d".to_vec()),
                (259, Some(Kind::Symlink), b"\xffl".to_vec()),
                (260, Some(Kind::Other), b"p".to_vec()),
                (261, None, b"u".to_vec()),
            ]
        );
        // A record length past the buffer is refused, not read beyond.
        let mut bad = record(5, libc::DT_REG, b"x");
        bad[RECLEN_AT] = 200;
        assert_eq!(parse(&bad, &mut Vec::new()).unwrap_err(), Errno::EIO);
    }

    #[test]
    fn reads_a_real_directory_twice() {
        let dir = std::env::temp_dir().join(format!("dirent-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..500 {
            std::fs::write(dir.join(format!("file-with-a-longer-name-{i:04}")), b"").unwrap();
        }
        let fd = open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let mut d = Dir::from_fd(fd);
        for _ in 0..2 {
            let mut names: Vec<_> = d.entries().unwrap().into_iter().map(|e| e.name).collect();
            names.sort();
            assert_eq!(names.len(), 501);
            assert_eq!(names[0].as_bytes(), b"file-with-a-longer-name-0000");
            assert_eq!(names[500].as_bytes(), b"sub");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
