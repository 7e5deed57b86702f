//! BTRFS_IOC_SEND into a pipe: the ioctl writes on a thread of its own while the caller reads
//! the other end. `changes` reads a metadata-only stream for its candidates; `Driver::send`
//! copies a whole stream out.

use crate::error::{Context, Error, Result};
use crate::ioctl::{self, SendArgs};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Where the kernel says which send protocols it has (Linux 5.19+; absent: only 1).
const STREAM_VERSION: &str = "/sys/fs/btrfs/features/send_stream_version";

/// What BTRFS_IOC_SEND is asked for, besides the subvolume sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendRequest {
    /// Root id of the read-only subvolume the stream is a difference against; 0: none.
    pub parent_root: u64,
    /// `SEND_FLAG_*`.
    pub flags: u64,
    /// The protocol, with `SEND_FLAG_VERSION`.
    pub version: u32,
}

/// The newest send protocol this kernel writes: 2 on 6.0+, else 1.
pub fn kernel_protocol() -> u32 {
    std::fs::read_to_string(STREAM_VERSION)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// Run BTRFS_IOC_SEND of the read-only subvolume `subvol` into a pipe, and `read` the other
/// end here. `read` owns the read end: when it returns early the end closes, and the ioctl
/// still writing stops with EPIPE (which is then not the error reported: `read`'s is).
pub fn send_piped<R>(
    subvol: BorrowedFd<'_>,
    request: &SendRequest,
    shown: &Path,
    read: impl FnOnce(File) -> Result<R>,
) -> Result<R> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).at("pipe2", shown)?;
    // A larger pipe means fewer wakeups; the default size works too.
    let _ = fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(1 << 20));
    std::thread::scope(|s| {
        let sender = s.spawn(move || send_into(subvol, request, write_end, shown));
        let read = read(File::from(read_end));
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the send thread panicked")));
        match (sent, read) {
            // The reader hung up first: its reason is the one.
            (Err(e), Err(r)) if e.is(Errno::EPIPE) => Err(r),
            // The ioctl's own error (EPERM, ENOSPC, ...) explains a short stream best.
            (Err(e), _) => Err(e),
            (Ok(()), r) => r,
        }
    })
}

fn send_into(
    subvol: BorrowedFd<'_>,
    request: &SendRequest,
    pipe: OwnedFd,
    shown: &Path,
) -> Result<()> {
    let args = SendArgs {
        send_fd: i64::from(pipe.as_raw_fd()),
        parent_root: request.parent_root,
        flags: request.flags,
        version: request.version,
        ..Default::default()
    };
    // SAFETY: args is a zeroed btrfs_ioctl_send_args with no clone sources and a live pipe fd.
    let r = unsafe { ioctl::send(subvol.as_raw_fd(), &args) };
    drop(pipe); // the reader's end of stream
    r.map(drop).at("BTRFS_IOC_SEND", shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_protocol_is_one_or_more() {
        assert!(kernel_protocol() >= 1);
    }
}
