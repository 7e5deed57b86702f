//! `Driver::send` (issue 15): BTRFS_IOC_SEND of a read-only view of the layer (the layer
//! itself when read-only, else a temporary read-only snapshot), against a read-only view of
//! `parent` when given, copied from the ioctl's pipe to `out` on the caller's thread.
//!
//! A read-write parent is sent against as it is now, through a snapshot of its own: the
//! stream then names that snapshot's UUID, which no receiver has, so the receiver must be told
//! which of its layers holds that same tree (`receive`'s `parent`). A read-write layer sent is
//! named after its temporary snapshot (`.tmp-<id>-...`) in the stream, and is received under
//! that name by `btrfs receive` (ours names it by the id it is given).

use super::replicate::{SendOptions, Sent};
use crate::control::Control;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::ioctl::{SEND_FLAG_COMPRESSED, SEND_FLAG_VERSION};
use crate::open;
use crate::send::{kernel_protocol, send_piped, SendRequest};
use crate::subvolume::is_read_only_fd;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// Bytes copied from the pipe at a time.
const CHUNK: usize = 1 << 20;
/// How often a copy waiting on the ioctl looks at the abort flag.
const ABORT_POLL_MS: u16 = 100;

pub(super) fn send(
    driver: &Driver,
    id: &str,
    opts: &SendOptions<'_>,
    out: &mut (dyn Write + Send),
    control: Control<'_>,
) -> Result<Sent> {
    let shown = driver.layer_path(id);
    let request = request(opts, kernel_protocol(), &shown)?;
    let layer = driver.require_layer(id, "send")?;
    let parent = match opts.parent {
        Some(p) => Some((p, driver.require_layer(p, "send")?)),
        None => None,
    };
    // A reader takes no snapshot: only read-only layers can be sent from it.
    let read_write = std::iter::once((id, &layer))
        .chain(parent.as_ref().map(|(p, fd)| (*p, fd)))
        .try_fold(false, |rw, (name, fd)| {
            Ok::<_, Error>(rw || !is_read_only_fd(fd.as_fd(), &driver.layer_path(name))?)
        })?;
    if read_write {
        driver.require_writable("send")?;
    }
    control.check("send", &shown)?;
    let view = driver.read_only_view(id, layer)?;
    let parent_view = match parent {
        Some((p, fd)) => Some((p, driver.read_only_view(p, fd)?)),
        None => None,
    };
    let request = SendRequest {
        parent_root: match &parent_view {
            Some((p, v)) => open::subvolume_id(v.fd.as_fd(), &driver.layer_path(p))?,
            None => 0,
        },
        ..request
    };
    let bytes = send_piped(view.fd.as_fd(), &request, &shown, |pipe| {
        copy(pipe, out, control, &shown)
    })?;
    // The views (and any temporary snapshot) go when they are dropped, also on an error.
    Ok(Sent {
        bytes,
        protocol: request.version,
    })
}

/// The ioctl request for `opts` on a kernel that writes protocols up to `offered`: EINVAL for
/// a protocol it does not write, or compression without protocol 2.
fn request(opts: &SendOptions<'_>, offered: u32, shown: &Path) -> Result<SendRequest> {
    let bad = |why: String| Error::invalid(Errno::EINVAL, "send", shown, why);
    let version = match opts.protocol {
        None => offered,
        Some(v @ (1 | 2)) if v <= offered => v,
        Some(v @ (1 | 2)) => {
            return Err(bad(format!(
                "send protocol {v} needs Linux 6.0 or newer: this kernel writes protocol {offered} at most"
            )))
        }
        Some(v) => return Err(bad(format!("send protocol must be 1 or 2, got {v}"))),
    };
    if opts.compressed && version < 2 {
        return Err(bad("compressed extents need send protocol 2".into()));
    }
    // Protocol 1 without the flag: kernels before 5.19 refuse flags they do not know.
    let mut flags = if version >= 2 { SEND_FLAG_VERSION } else { 0 };
    if opts.compressed {
        flags |= SEND_FLAG_COMPRESSED;
    }
    Ok(SendRequest {
        parent_root: 0,
        flags,
        version,
    })
}

/// Copy the stream from `pipe` to `out` until the ioctl closes it; the bytes copied. An abort
/// returns at once (the pipe's end closes, and the ioctl stops with EPIPE).
fn copy(
    pipe: File,
    out: &mut (dyn Write + Send),
    control: Control<'_>,
    shown: &Path,
) -> Result<u64> {
    let mut pipe = pipe;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        control.check("send", shown)?;
        if !readable(&pipe, shown)? {
            continue;
        }
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(e, "read", shown)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(e, "write", shown))?;
        total += n as u64;
        control.progress(total);
    }
    out.flush().map_err(|e| Error::io(e, "write", shown))?;
    Ok(total)
}

/// Whether `pipe` has bytes (or its end) within the abort poll interval.
fn readable(pipe: &File, shown: &Path) -> Result<bool> {
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ABORT_POLL_MS)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(Error::sys(e, "poll", shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(protocol: Option<u32>, compressed: bool) -> SendOptions<'static> {
        SendOptions {
            parent: None,
            protocol,
            compressed,
        }
    }

    #[test]
    fn the_best_protocol_the_kernel_offers_by_default() {
        let p = Path::new("x");
        let r = request(&opts(None, false), 2, p).unwrap();
        assert_eq!((r.version, r.flags), (2, SEND_FLAG_VERSION));
        let r = request(&opts(None, false), 1, p).unwrap();
        assert_eq!((r.version, r.flags), (1, 0));
    }

    #[test]
    fn protocol_one_sets_no_flag_and_compression_sets_its_flag() {
        let p = Path::new("x");
        assert_eq!(request(&opts(Some(1), false), 2, p).unwrap().flags, 0);
        let r = request(&opts(Some(2), true), 2, p).unwrap();
        assert_eq!(r.flags, SEND_FLAG_VERSION | SEND_FLAG_COMPRESSED);
    }

    #[test]
    fn an_unsupported_protocol_is_einval() {
        let p = Path::new("x");
        for (protocol, compressed, offered) in [
            (Some(2), false, 1),
            (Some(3), false, 2),
            (Some(0), false, 2),
            (Some(1), true, 2),
            (None, true, 1),
        ] {
            let e = request(&opts(protocol, compressed), offered, p).unwrap_err();
            assert_eq!(
                e.code_str(),
                "EINVAL",
                "{protocol:?} {compressed} {offered}"
            );
        }
    }
}
