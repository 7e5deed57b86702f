//! The logging filesystem: a FUSE filesystem of two files, served by one thread so that its
//! log has one order.
//!
//! - `disk`: the disk image a loop device is backed by. Its data lives in a backing file;
//!   every write is also appended to the log, and every fsync (the loop driver turns a flush
//!   request into `vfs_fsync` of its backing file) is logged as a flush.
//! - `marks`: whatever the workload writes here is logged as a mark, between the disk writes
//!   received before it and those received after.
//!
//! Both are opened with FOPEN_DIRECT_IO and the kernel is not offered a writeback cache, so
//! each write reaches this process when it is issued, not when the page cache gets to it; a
//! write that still comes from the page cache (FUSE_WRITE_CACHE) fails with EIO and is counted.

use crate::log::LogWriter;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, WriteFlags,
};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const DISK: INodeNo = INodeNo(2);
const MARKS: INodeNo = INodeNo(3);
pub const DISK_NAME: &str = "disk";
pub const MARKS_NAME: &str = "marks";
/// Attributes never change behind the kernel's back, except the size, which never changes.
const TTL: Duration = Duration::from_secs(3600);

/// What went wrong while serving, reported when the session ends.
#[derive(Default)]
pub struct Faults {
    /// Writes that came from the page cache: the log would not be in issue order.
    pub cached_writes: AtomicU64,
    /// Writes or flushes that could not be logged or stored.
    pub io_errors: AtomicU64,
}

pub struct LoggingFs {
    backing: File,
    size: u64,
    log: Arc<Mutex<LogWriter>>,
    faults: Arc<Faults>,
    started: SystemTime,
}

impl LoggingFs {
    pub fn new(
        backing: File,
        log: Arc<Mutex<LogWriter>>,
        faults: Arc<Faults>,
    ) -> std::io::Result<Self> {
        let size = backing.metadata()?.len();
        Ok(LoggingFs {
            backing,
            size,
            log,
            faults,
            started: SystemTime::now(),
        })
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o755, 0, 2),
            DISK => (FileType::RegularFile, 0o600, self.size, 1),
            MARKS => (FileType::RegularFile, 0o200, 0, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn fault(&self) -> Errno {
        self.faults.io_errors.fetch_add(1, Ordering::Relaxed);
        Errno::EIO
    }
}

impl Filesystem for LoggingFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent, name.to_str()) {
            (INodeNo::ROOT, Some(DISK_NAME)) => DISK,
            (INodeNo::ROOT, Some(MARKS_NAME)) => MARKS,
            _ => return reply.error(Errno::ENOENT),
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The disk has a fixed size; a truncation of the marks file (open O_TRUNC) is harmless.
        if ino == DISK && size.is_some_and(|s| s != self.size) {
            return reply.error(Errno::EPERM);
        }
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            DISK | MARKS => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DISK {
            return reply.data(&[]);
        }
        let end = (offset + u64::from(size)).min(self.size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        match self.backing.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(self.fault()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match ino {
            DISK => {
                if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                    self.faults.cached_writes.fetch_add(1, Ordering::Relaxed);
                    eprintln!("powercut: a write of {} bytes at {offset} came from the page cache; the log would be wrong", data.len());
                    return reply.error(Errno::EIO);
                }
                if offset + data.len() as u64 > self.size {
                    return reply.error(Errno::ENOSPC);
                }
                match self
                    .backing
                    .write_all_at(data, offset)
                    .and_then(|_| log.write(offset, data))
                {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(_) => reply.error(self.fault()),
                }
            }
            MARKS => {
                let text = String::from_utf8_lossy(data);
                match log.mark(text.trim_end()) {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(_) => reply.error(self.fault()),
                }
            }
            _ => reply.error(Errno::EBADF),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Called on every close(): not a durability point, so not logged.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if ino != DISK {
            return reply.ok();
        }
        // Answering ENOSYS would make the kernel stop sending fsyncs (fc->no_fsync).
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match log.flush_barrier() {
            Ok(()) => reply.ok(),
            Err(_) => reply.error(self.fault()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DISK, FileType::RegularFile, DISK_NAME),
            (MARKS, FileType::RegularFile, MARKS_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
