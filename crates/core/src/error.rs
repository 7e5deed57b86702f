//! One error type for the whole core: a Node-style code, the errno when the kernel gave one,
//! the operation (syscall or ioctl name) and the path it concerned.

use nix::errno::Errno;
use std::fmt;
use std::path::{Path, PathBuf};

/// The codes of DESIGN.md; errno-derived codes use the errno's own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Errno(Errno),
    NotBtrfs,
    Prerequisites,
    BadLayer,
    IdMapping,
    Aborted,
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub syscall: &'static str,
    pub path: Option<PathBuf>,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error the kernel returned for `syscall` on `path`.
    pub fn sys(errno: Errno, syscall: &'static str, path: &Path) -> Self {
        Error {
            code: Code::Errno(errno),
            syscall,
            path: Some(path.to_path_buf()),
            message: errno.desc().to_string(),
        }
    }

    /// Input rejected before any syscall, with the errno a syscall would have given.
    pub fn invalid(
        errno: Errno,
        syscall: &'static str,
        path: &Path,
        why: impl Into<String>,
    ) -> Self {
        Error {
            code: Code::Errno(errno),
            syscall,
            path: Some(path.to_path_buf()),
            message: why.into(),
        }
    }

    /// An `std::io::Error` from `syscall` on `path`, keeping its errno.
    pub fn io(e: std::io::Error, syscall: &'static str, path: &Path) -> Self {
        Error::sys(
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            syscall,
            path,
        )
    }

    pub fn not_btrfs(syscall: &'static str, path: &Path) -> Self {
        Error {
            code: Code::NotBtrfs,
            syscall,
            path: Some(path.to_path_buf()),
            message: "not on a btrfs filesystem".into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            code: Code::Internal,
            syscall: "",
            path: None,
            message: message.into(),
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self.code {
            Code::Errno(e) => Some(e as i32),
            _ => None,
        }
    }

    pub fn code_str(&self) -> &'static str {
        match self.code {
            Code::Errno(e) => errno_name(e),
            Code::NotBtrfs => "ERR_NOT_BTRFS",
            Code::Prerequisites => "ERR_PREREQUISITES",
            Code::BadLayer => "ERR_BAD_LAYER",
            Code::IdMapping => "ERR_ID_MAPPING",
            Code::Aborted => "ABORT_ERR",
            Code::Internal => "ERR_INTERNAL",
        }
    }

    pub fn is(&self, errno: Errno) -> bool {
        self.code == Code::Errno(errno)
    }
}

/// The symbolic name of an errno, as Node's `err.code` spells it.
pub fn errno_name(e: Errno) -> &'static str {
    use Errno::*;
    match e {
        ENOENT => "ENOENT",
        EEXIST => "EEXIST",
        EINVAL => "EINVAL",
        ENAMETOOLONG => "ENAMETOOLONG",
        EPERM => "EPERM",
        EACCES => "EACCES",
        EBUSY => "EBUSY",
        ENOTEMPTY => "ENOTEMPTY",
        ENOSPC => "ENOSPC",
        EXDEV => "EXDEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EROFS => "EROFS",
        ELOOP => "ELOOP",
        ENOTTY => "ENOTTY",
        EOPNOTSUPP => "EOPNOTSUPP",
        EDQUOT => "EDQUOT",
        EIO => "EIO",
        ENOMEM => "ENOMEM",
        EMFILE => "EMFILE",
        ENFILE => "ENFILE",
        EOVERFLOW => "EOVERFLOW",
        EFAULT => "EFAULT",
        EAGAIN => "EAGAIN",
        EINTR => "EINTR",
        ENODEV => "ENODEV",
        ENXIO => "ENXIO",
        ESTALE => "ESTALE",
        ENOSYS => "ENOSYS",
        _ => "EUNKNOWN",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code_str(), self.message)?;
        if !self.syscall.is_empty() {
            write!(f, ", {}", self.syscall)?;
        }
        if let Some(p) = &self.path {
            write!(f, " '{}'", p.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Attach the operation and path to a bare errno.
pub trait Context<T> {
    fn at(self, syscall: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, Errno> {
    fn at(self, syscall: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::sys(e, syscall, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_node_names() {
        let e = Error::sys(Errno::ENOENT, "open", Path::new("/x"));
        assert_eq!(e.code_str(), "ENOENT");
        assert_eq!(e.errno(), Some(libc_enoent()));
        assert_eq!(
            e.to_string(),
            "ENOENT: No such file or directory, open '/x'"
        );
        assert_eq!(
            Error::not_btrfs("statfs", Path::new("/")).code_str(),
            "ERR_NOT_BTRFS"
        );
        assert_eq!(Error::not_btrfs("statfs", Path::new("/")).errno(), None);
    }

    fn libc_enoent() -> i32 {
        2
    }
}
