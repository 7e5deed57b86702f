//! Test harness for the changes tests: a real btrfs (a sparse image, mkfs.btrfs, loop-mounted
//! in a temporary directory, torn down in Drop even when a test fails), layers on it, the
//! three ways to compute changes, and the file operations the cases need.
//!
//! Needs root, mkfs.btrfs and loop devices; without them the tests print a loud SKIP and
//! pass, unless BTRFS_LAYERS_REQUIRE_BTRFS=1, which makes that a failure.
#![allow(dead_code)] // each test binary uses its own part

use btrfs_layers_core::changes::{
    changes_send, changes_since, changes_walk, changes_walk_single_threaded, snapshot_origin,
    Change, ChangeKind, Options, Parallelism,
};
use btrfs_layers_core::{delete, subvolume};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Btrfs {
    dir: PathBuf,
    image: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

fn run(cmd: &str, args: &[&OsStr]) -> Result<(), String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

fn skip(test: &str, why: &str) -> Option<Btrfs> {
    let required = std::env::var("BTRFS_LAYERS_REQUIRE_BTRFS").as_deref() == Ok("1");
    let bar = "!".repeat(100);
    eprintln!(
        "\n{bar}\n!!! btrfs-layers: CANNOT TEST AGAINST A REAL BTRFS ({test})\n!!! Reason: {why}"
    );
    if required {
        eprintln!("!!! BTRFS_LAYERS_REQUIRE_BTRFS=1 is set, so this is a FAILURE.\n{bar}\n");
        panic!("no btrfs to test on: {why}");
    }
    eprintln!("!!! SKIPPED. Run as root with btrfs-progs and loop devices; BTRFS_LAYERS_REQUIRE_BTRFS=1 makes this fail.\n{bar}\n");
    None
}

impl Btrfs {
    /// A fresh btrfs for `test`, or None (after a loud SKIP) where none can be made.
    pub fn new(test: &str) -> Option<Btrfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip(test, "not running as root (loop mounts need root)");
        }
        let dir = std::env::temp_dir().join(format!(
            "btrfs-layers-changes-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let mut fs = Btrfs {
            image: dir.join("image"),
            mnt: dir.join("mnt"),
            dir,
            mounted: false,
        };
        if let Err(why) = fs.make() {
            return skip(test, &why);
        }
        Some(fs)
    }

    fn make(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.mnt).map_err(|e| e.to_string())?;
        File::create(&self.image)
            .and_then(|f| f.set_len(2 << 30))
            .map_err(|e| e.to_string())?;
        run(
            "mkfs.btrfs",
            &["-q".as_ref(), "-f".as_ref(), self.image.as_os_str()],
        )?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                self.image.as_os_str(),
                self.mnt.as_os_str(),
            ],
        )?;
        self.mounted = true;
        Ok(())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        if self.mounted && run("umount", &[self.mnt.as_os_str()]).is_err() {
            let _ = run("umount", &["-l".as_ref(), self.mnt.as_os_str()]);
        }
        let _ = std::fs::remove_file(&self.image);
        // rmdir only: never a recursive delete through something still mounted.
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The base subvolume, its read-only snapshot, a writable child layer, and (after
/// [`Layers::freeze`]) the child's read-only snapshot.
pub struct Layers {
    pub base: PathBuf,
    pub old: PathBuf,
    pub layer: PathBuf,
    pub new: PathBuf,
}

impl Layers {
    /// `setup` fills the base; the child layer is a snapshot of it.
    pub fn new(fs: &Btrfs, name: &str, setup: impl FnOnce(&Path)) -> Layers {
        let l = Layers {
            base: fs.path(&format!("{name}-base")),
            old: fs.path(&format!("{name}-old")),
            layer: fs.path(&format!("{name}-layer")),
            new: fs.path(&format!("{name}-new")),
        };
        subvolume::create(&l.base).unwrap();
        setup(&l.base);
        subvolume::snapshot(&l.base, &l.old, true).unwrap();
        subvolume::snapshot(&l.base, &l.layer, false).unwrap();
        l
    }

    /// Snapshot the (changed) layer read-only.
    pub fn freeze(&self) {
        subvolume::snapshot(&self.layer, &self.new, true).unwrap();
    }

    pub fn delete(self) {
        for p in [&self.new, &self.layer, &self.old, &self.base] {
            if p.exists() {
                delete::delete(p, true).unwrap();
            }
        }
    }
}

pub fn open(p: &Path) -> File {
    File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// changes_walk, changes_walk_single_threaded and changes_send of `new` against `old`.
pub fn three_ways(old: &Path, new: &Path) -> [Vec<Change>; 3] {
    let (o, n) = (open(old), open(new));
    let opts = Options::default();
    [
        changes_walk(n.as_fd(), Some(o.as_fd()), new, &opts).unwrap(),
        changes_walk_single_threaded(n.as_fd(), Some(o.as_fd()), new, &opts).unwrap(),
        changes_send(n.as_fd(), o.as_fd(), new, &opts).unwrap(),
    ]
}

/// The five ways, by name: [`three_ways`] between the read-only snapshots, and the generation
/// fast path between the live (writable) layer and its base, from the kernel's snapshot origin:
/// as `changes_since` runs it (a small change on the calling thread) and with every part in
/// parallel, so the parallel code runs on small trees too.
pub fn five_ways(layers: &Layers) -> [(&'static str, Vec<Change>); 5] {
    let [walk, single, send] = three_ways(&layers.old, &layers.new);
    [
        ("walk", walk),
        ("single-threaded walk", single),
        ("send", send),
        ("generation", generation_way(&layers.base, &layers.layer)),
        (
            "generation, all parallel",
            generation_way_with(&layers.base, &layers.layer, Parallelism::ALWAYS),
        ),
    ]
}

/// changes_since of the layer `new` against `old`, which `new` must be a snapshot of.
pub fn generation_way(old: &Path, new: &Path) -> Vec<Change> {
    let (o, n) = (open(old), open(new));
    let since = snapshot_origin(n.as_fd(), o.as_fd(), new)
        .unwrap()
        .expect("the layer is a snapshot of its base");
    let opts = Options::default();
    changes_since(n.as_fd(), o.as_fd(), since, new, &opts).unwrap()
}

/// [`generation_way`] with its parts run in parallel as `parallel` says.
pub fn generation_way_with(old: &Path, new: &Path, parallel: Parallelism) -> Vec<Change> {
    let (o, n) = (open(old), open(new));
    let since = snapshot_origin(n.as_fd(), o.as_fd(), new)
        .unwrap()
        .expect("the layer is a snapshot of its base");
    let options = Options {
        parallel,
        ..Options::default()
    };
    changes_since(n.as_fd(), o.as_fd(), since, new, &options).unwrap()
}

pub fn ch(path: impl AsRef<[u8]>, kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(OsStr::from_bytes(path.as_ref())),
        kind,
    }
}

pub fn show(list: &[Change]) -> String {
    list.iter()
        .map(|c| format!("  {:<6} {:?}\n", c.kind.as_str(), c.path))
        .collect()
}

// ---- file operations the cases and the property test need ----------------------------------

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Set atime and mtime without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) -> std::io::Result<()> {
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [t, t];
    // SAFETY: the path is NUL-terminated and times points at two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cstr(p).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A version 2 `security.capability` value granting `permitted` (effective bit set).
pub fn capability_value(permitted: u32) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[0..4].copy_from_slice(&(0x0200_0001u32).to_le_bytes());
    v[4..8].copy_from_slice(&permitted.to_le_bytes());
    v
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let n = CString::new(name).unwrap();
    // SAFETY: path and name are NUL-terminated; value is valid for value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn remove_xattr(p: &Path, name: &str) -> std::io::Result<()> {
    let n = CString::new(name).unwrap();
    // SAFETY: path and name are NUL-terminated.
    let r = unsafe { libc::lremovexattr(cstr(p).as_ptr(), n.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: path and name are NUL-terminated; buf is valid for its length.
    let r = unsafe {
        libc::lgetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

pub fn mknod_char(p: &Path, major: u32, minor: u32) {
    // SAFETY: the path is NUL-terminated; makedev has no preconditions.
    let r = unsafe {
        libc::mknod(
            cstr(p).as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mkfifo(p: &Path) {
    // SAFETY: the path is NUL-terminated.
    let r = unsafe { libc::mkfifo(cstr(p).as_ptr(), 0o644) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// Exchange two names atomically (renameat2 RENAME_EXCHANGE).
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cstr(a).as_ptr(),
            libc::AT_FDCWD,
            cstr(b).as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
