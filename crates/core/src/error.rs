//! One error type for the whole core: a Node-style code, the errno when the kernel gave one,
//! the system call that failed, the operation it served and the path it concerned.
//!
//! The rule: `syscall` names only a real system call or ioctl (`openat`,
//! `BTRFS_IOC_SNAP_CREATE_V2`) whose failure or result the error reports; `op` names the
//! operation of this crate (`create`, `remap`, `idmap`) that refused an argument or a state,
//! or stopped. A check of an argument has an `op` and no `syscall`.

pub use nix::errno::Errno;
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
    /// Content that does not match its digest (or size).
    Digest,
    Aborted,
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    /// The system call or ioctl that failed (or whose result was refused); empty for checks.
    pub syscall: &'static str,
    /// The operation of this crate that failed (`create`, `remap`); empty where not known.
    pub op: &'static str,
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
            op: "",
            path: Some(path.to_path_buf()),
            message: errno.desc().to_string(),
        }
    }

    /// Input (or a state) that operation `op` refused before any system call, with the errno
    /// a system call would have given. No `syscall`.
    pub fn invalid(errno: Errno, op: &'static str, path: &Path, why: impl Into<String>) -> Self {
        Error {
            code: Code::Errno(errno),
            syscall: "",
            op,
            path: Some(path.to_path_buf()),
            message: why.into(),
        }
    }

    /// What `syscall` returned, refused: the call succeeded but its result does not do (fstat
    /// shows no directory, flock shows the lock held), with the errno that says why.
    pub fn refused(
        errno: Errno,
        syscall: &'static str,
        path: &Path,
        why: impl Into<String>,
    ) -> Self {
        Error {
            code: Code::Errno(errno),
            syscall,
            op: "",
            path: Some(path.to_path_buf()),
            message: why.into(),
        }
    }

    /// This error with its operation set to `op`, unless a more precise one is set already.
    pub fn during(mut self, op: &'static str) -> Self {
        if self.op.is_empty() {
            self.op = op;
        }
        self
    }

    /// An `std::io::Error` from `syscall` on `path`, keeping its errno.
    pub fn io(e: std::io::Error, syscall: &'static str, path: &Path) -> Self {
        Error::sys(
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            syscall,
            path,
        )
    }

    /// A malformed or hostile layer (a tar or a send stream) that operation `op` refused, about
    /// the entry at `path` (none when empty).
    pub fn bad_layer(op: &'static str, path: &Path, why: impl Into<String>) -> Self {
        Error {
            code: Code::BadLayer,
            syscall: "",
            op,
            path: (!path.as_os_str().is_empty()).then(|| path.to_path_buf()),
            message: why.into(),
        }
    }

    pub fn not_btrfs(syscall: &'static str, path: &Path) -> Self {
        Error {
            code: Code::NotBtrfs,
            syscall,
            op: "",
            path: Some(path.to_path_buf()),
            message: "not on a btrfs filesystem".into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            code: Code::Internal,
            syscall: "",
            op: "",
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
            Code::Digest => "ERR_DIGEST",
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
        // A send stream's reader gone; a send protocol the kernel does not write.
        EPIPE => "EPIPE",
        EPROTO => "EPROTO",
        _ => "EUNKNOWN",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code_str(), self.message)?;
        // Like Node's fs errors: the call that failed, else the operation that refused.
        let call = if self.syscall.is_empty() {
            self.op
        } else {
            self.syscall
        };
        if !call.is_empty() {
            write!(f, ", {call}")?;
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

    #[test]
    fn a_check_names_its_operation_and_no_syscall() {
        let e = Error::invalid(Errno::EINVAL, "create", Path::new("x"), "bad id");
        assert_eq!((e.syscall, e.op), ("", "create"));
        assert_eq!(e.to_string(), "EINVAL: bad id, create 'x'");
        let e = Error::sys(Errno::EEXIST, "BTRFS_IOC_SUBVOL_CREATE_V2", Path::new("/l"));
        assert_eq!((e.syscall, e.op), ("BTRFS_IOC_SUBVOL_CREATE_V2", ""));
        // `during` names the operation a system call served, and keeps the system call.
        let e = e.during("create");
        assert_eq!((e.syscall, e.op), ("BTRFS_IOC_SUBVOL_CREATE_V2", "create"));
        assert_eq!(
            e.to_string(),
            "EEXIST: File exists, BTRFS_IOC_SUBVOL_CREATE_V2 '/l'"
        );
        // A more precise operation set where the error arose is kept.
        let e = Error::invalid(Errno::EINVAL, "idmap", Path::new(""), "overlap").during("init");
        assert_eq!(e.op, "idmap");
        let e = Error::refused(Errno::EBUSY, "flock", Path::new("/h/.lock"), "held");
        assert_eq!((e.syscall, e.op), ("flock", ""));
    }

    fn libc_enoent() -> i32 {
        2
    }
}
