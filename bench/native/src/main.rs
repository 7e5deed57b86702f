//! Native side of `npm run bench`: the reference implementations the TypeScript API is
//! measured against. Every subcommand prints one JSON object to stdout.
//!
//! - `raw <op> <dir> <n> [--source PATH] [--prefix STR]`: the raw btrfs ioctl done directly
//!   from Rust, `n` times, on entries `<dir>/<prefix><i>` (ops: create, snapshot, snapshot-ro,
//!   delete). Each operation is timed as a whole (open the directories it needs, the ioctl,
//!   close) and the ioctl alone, in nanoseconds.
//! - `walk-delete <path>`: delete a subvolume the way moby's btrfs graph driver does
//!   (`subvolDelete`): walk every directory of the tree, lstat each directory to find nested
//!   subvolumes (inode 256), delete those first (recursively, clearing read-only), then the top.
//! - `populate <path> <dirs> <files> [--bytes N]`: fill an existing directory with `dirs`
//!   directories (two levels) and `files` small files spread evenly over them.
//! - `populate-mixed <path> <files> <min> <max> <large> <large_bytes> [--dirs N] [--seed S]`:
//!   `files` files of log-uniform random sizes from `min` to `max` bytes plus `large` files of
//!   `large_bytes`, pseudo-random (incompressible) content, spread over `dirs` directories.
//! - `changes <new> <old> <walk|walk1|send|since> [--scratch DIR]`: one changes computation
//!   between two trees, timed: the parallel tree walk (`changes_walk`, rayon's global pool),
//!   the same on one thread (`changes_walk_single_threaded`), the send fast path
//!   (`changes_send`, with a temporary read-only snapshot in `--scratch` of each side that is
//!   writable), or the generation fast path (`snapshot_origin` + `changes_since`; `new` must
//!   be a snapshot of `old`).
//! - `remap <path> [--host-id N] [--method auto|statx]`: `remap_path` from no mapping to
//!   container ids 0..65535 at host ids N.. (default 100000), uids and gids, timed; `auto` uses
//!   the inode table where it may, `statx` never. Parallel on rayon's global pool: run it with
//!   RAYON_NUM_THREADS=1 for the single-threaded walk.

use btrfs_layers_core::ioctl::{self, put_name};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match args.first().and_then(|a| a.to_str()) {
        Some("raw") => cmd_raw(&args[1..], false),
        Some("core") => cmd_raw(&args[1..], true),
        Some("serve") => cmd_serve(),
        Some("walk-delete") => cmd_walk_delete(&args[1..]),
        Some("populate") => cmd_populate(&args[1..]),
        Some("populate-mixed") => cmd_populate_mixed(&args[1..]),
        Some("changes") => cmd_changes(&args[1..]),
        Some("remap") => cmd_remap(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(json) => {
            if !json.is_empty() {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{json}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("btrfs-layers-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  btrfs-layers-bench raw <create|snapshot|snapshot-ro|delete> <dir> <n> [--source PATH] [--prefix STR]
  btrfs-layers-bench core <create|snapshot|snapshot-ro|delete> <dir> <n> [--source PATH] [--prefix STR]
  btrfs-layers-bench serve    (one op per stdin line: via<TAB>op<TAB>dir<TAB>name[<TAB>source])
  btrfs-layers-bench walk-delete <path>
  btrfs-layers-bench populate <path> <dirs> <files> [--bytes N]
  btrfs-layers-bench populate-mixed <path> <files> <min> <max> <large> <large_bytes> [--dirs N] [--seed S]
  btrfs-layers-bench changes <new> <old> <walk|walk1|send|since> [--scratch DIR]
  btrfs-layers-bench remap <path> [--host-id N] [--method auto|statx]";

/// `--key value` options, in order.
type Opts = Vec<(String, OsString)>;

/// Positional arguments and `--key value` options.
fn parse(args: &[OsString]) -> Res<(Vec<OsString>, Opts)> {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some(k) if k.starts_with("--") => {
                let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
                opts.push((k[2..].to_string(), v.clone()));
            }
            _ => pos.push(a.clone()),
        }
    }
    Ok((pos, opts))
}

fn opt<'a>(opts: &'a [(String, OsString)], key: &str) -> Option<&'a OsString> {
    opts.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn num(v: &OsStr, what: &str) -> Res<u64> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what} must be a number, got {v:?}"))
}

fn open_dir(p: &Path) -> Res<OwnedFd> {
    open(p, DIR_FLAGS, Mode::empty()).map_err(|e| format!("open {}: {e}", p.display()))
}

fn ns(d: std::time::Duration) -> u64 {
    d.as_nanos() as u64
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2
    }
}

fn json_list(out: &mut String, v: &[u64]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// raw: the ioctl straight from Rust

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Create,
    Snapshot,
    SnapshotRo,
    Delete,
}

/// `raw` times the bare ioctl; `core` (diagnostic) times the btrfs-layers-core call the napi
/// binding makes (same checks and syscalls as the TS API, without Node, napi or the thread pool).
fn cmd_raw(args: &[OsString], via_core: bool) -> Res<String> {
    let (pos, opts) = parse(args)?;
    if pos.len() != 3 {
        return Err(USAGE.to_string());
    }
    let op_name = pos[0].to_str().unwrap_or("");
    let op = match op_name {
        "create" => Op::Create,
        "snapshot" => Op::Snapshot,
        "snapshot-ro" => Op::SnapshotRo,
        "delete" => Op::Delete,
        other => return Err(format!("unknown op {other:?}")),
    };
    let dir = PathBuf::from(&pos[1]);
    let n = num(&pos[2], "n")?;
    let prefix = opt(&opts, "prefix")
        .cloned()
        .unwrap_or_else(|| OsString::from("raw-"));
    let source = opt(&opts, "source").map(PathBuf::from);
    if matches!(op, Op::Snapshot | Op::SnapshotRo) && source.is_none() {
        return Err("snapshot needs --source".into());
    }

    let mut total = Vec::with_capacity(n as usize);
    let mut only = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut name = prefix.clone();
        name.push(i.to_string());
        let (t, k) = if via_core {
            core_op(op, source.as_deref(), &dir, &name)?
        } else {
            match op {
                Op::Create => raw_create(&dir, &name)?,
                Op::Snapshot => raw_snapshot(source.as_deref().unwrap(), &dir, &name, false)?,
                Op::SnapshotRo => raw_snapshot(source.as_deref().unwrap(), &dir, &name, true)?,
                Op::Delete => raw_delete(&dir, &name)?,
            }
        };
        total.push(t);
        only.push(k);
    }
    let mut s = String::from("{\"via\":");
    json_str(&mut s, if via_core { "core" } else { "raw" });
    s.push_str(",\"op\":");
    json_str(&mut s, op_name);
    let _ = write!(
        s,
        ",\"n\":{n},\"median_ns\":{},\"ioctl_median_ns\":{},\"ns\":",
        median(&total),
        median(&only)
    );
    json_list(&mut s, &total);
    s.push_str(",\"ioctl_ns\":");
    json_list(&mut s, &only);
    s.push('}');
    Ok(s)
}

/// `serve`: read requests from stdin until EOF, answer each with one JSON line.
fn cmd_serve() -> Res<String> {
    let mut out = io::stdout().lock();
    for line in io::stdin().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        if line.is_empty() {
            continue;
        }
        let reply = match serve_one(&line) {
            Ok((t, k)) => format!("{{\"ns\":{t},\"ioctl_ns\":{k}}}"),
            Err(e) => {
                let mut s = String::from("{\"error\":");
                json_str(&mut s, &e);
                s.push('}');
                s
            }
        };
        writeln!(out, "{reply}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(String::new())
}

fn serve_one(line: &str) -> Res<(u64, u64)> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 4 {
        return Err(format!("bad request {line:?}"));
    }
    let op = match f[1] {
        "create" => Op::Create,
        "snapshot" => Op::Snapshot,
        "snapshot-ro" => Op::SnapshotRo,
        "delete" => Op::Delete,
        other => return Err(format!("unknown op {other:?}")),
    };
    let dir = Path::new(f[2]);
    let name = OsStr::new(f[3]);
    let source = f.get(4).map(Path::new);
    if matches!(op, Op::Snapshot | Op::SnapshotRo) && source.is_none() {
        return Err("snapshot needs a source".into());
    }
    match (f[0], op) {
        ("core", _) => core_op(op, source, dir, name),
        ("raw", Op::Create) => raw_create(dir, name),
        ("raw", Op::Snapshot) => raw_snapshot(source.unwrap(), dir, name, false),
        ("raw", Op::SnapshotRo) => raw_snapshot(source.unwrap(), dir, name, true),
        ("raw", Op::Delete) => raw_delete(dir, name),
        (other, _) => Err(format!("unknown implementation {other:?}")),
    }
}

fn errno_msg(what: &str, p: &Path, name: &OsStr, e: nix::errno::Errno) -> String {
    format!("{what} {}: {e}", p.join(name).display())
}

/// The btrfs-layers-core call behind the TS API; both figures are the whole call.
fn core_op(op: Op, source: Option<&Path>, dir: &Path, name: &OsStr) -> Res<(u64, u64)> {
    use btrfs_layers_core::{delete, subvolume};
    let path = dir.join(name);
    let t0 = Instant::now();
    let r = match op {
        Op::Create => subvolume::create(&path),
        Op::Snapshot => subvolume::snapshot(source.unwrap(), &path, false),
        Op::SnapshotRo => subvolume::snapshot(source.unwrap(), &path, true),
        Op::Delete => delete::delete(&path, false),
    };
    let t = ns(t0.elapsed());
    r.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((t, t))
}

/// Open the parent, SUBVOL_CREATE_V2, close. Returns (whole op, ioctl alone) in ns.
fn raw_create(dir: &Path, name: &OsStr) -> Res<(u64, u64)> {
    let t0 = Instant::now();
    let fd = open_dir(dir)?;
    let mut args = ioctl::VolArgsV2::default();
    put_name(&mut args.name, name.as_bytes());
    let t1 = Instant::now();
    // SAFETY: zeroed btrfs_ioctl_vol_args_v2 with a NUL-terminated name.
    let r = unsafe { ioctl::subvol_create_v2(fd.as_raw_fd(), &args) };
    let t2 = Instant::now();
    drop(fd);
    let t3 = Instant::now();
    r.map_err(|e| errno_msg("BTRFS_IOC_SUBVOL_CREATE_V2", dir, name, e))?;
    Ok((ns(t3 - t0), ns(t2 - t1)))
}

/// Open source and destination parent, SNAP_CREATE_V2 (read-only if asked), close.
fn raw_snapshot(source: &Path, dir: &Path, name: &OsStr, read_only: bool) -> Res<(u64, u64)> {
    let t0 = Instant::now();
    let src = open_dir(source)?;
    let fd = open_dir(dir)?;
    let mut args = ioctl::VolArgsV2 {
        fd: src.as_raw_fd() as i64,
        flags: if read_only { ioctl::SUBVOL_RDONLY } else { 0 },
        ..Default::default()
    };
    put_name(&mut args.name, name.as_bytes());
    let t1 = Instant::now();
    // SAFETY: zeroed btrfs_ioctl_vol_args_v2 with a live source fd and a NUL-terminated name.
    let r = unsafe { ioctl::snap_create_v2(fd.as_raw_fd(), &args) };
    let t2 = Instant::now();
    drop(fd);
    drop(src);
    let t3 = Instant::now();
    r.map_err(|e| errno_msg("BTRFS_IOC_SNAP_CREATE_V2", dir, name, e))?;
    Ok((ns(t3 - t0), ns(t2 - t1)))
}

/// Open the parent, SNAP_DESTROY by name, close.
fn raw_delete(dir: &Path, name: &OsStr) -> Res<(u64, u64)> {
    let t0 = Instant::now();
    let fd = open_dir(dir)?;
    let mut args = ioctl::VolArgs::default();
    put_name(&mut args.name, name.as_bytes());
    let t1 = Instant::now();
    // SAFETY: zeroed btrfs_ioctl_vol_args with a NUL-terminated name.
    let r = unsafe { ioctl::snap_destroy(fd.as_raw_fd(), &args) };
    let t2 = Instant::now();
    drop(fd);
    let t3 = Instant::now();
    r.map_err(|e| errno_msg("BTRFS_IOC_SNAP_DESTROY", dir, name, e))?;
    Ok((ns(t3 - t0), ns(t2 - t1)))
}

// ---------------------------------------------------------------------------------------------
// walk-delete: moby's daemon/graphdriver/btrfs subvolDelete, in Rust

#[derive(Default)]
struct WalkStats {
    dirs: u64,
    entries: u64,
    lstats: u64,
    nested: u64,
    cleared_read_only: u64,
}

fn cmd_walk_delete(args: &[OsString]) -> Res<String> {
    let (pos, _) = parse(args)?;
    if pos.len() != 1 {
        return Err(USAGE.to_string());
    }
    let full = PathBuf::from(&pos[0]);
    let parent = full.parent().ok_or("path has no parent")?.to_path_buf();
    let name = full.file_name().ok_or("path has no name")?.to_os_string();
    let mut st = WalkStats::default();
    let t0 = Instant::now();
    subvol_delete(&parent, &name, &mut st)?;
    let t = ns(t0.elapsed());
    Ok(format!(
        "{{\"ns\":{t},\"dirs\":{},\"entries\":{},\"lstats\":{},\"nested\":{},\"cleared_read_only\":{}}}",
        st.dirs, st.entries, st.lstats, st.nested, st.cleared_read_only
    ))
}

/// `subvolDelete(dirpath, name)`: walk the whole tree below `dirpath/name` (filepath.WalkDir:
/// lexical order, directory entries with their d_type), lstat every directory and delete any
/// nested subvolume found (recursively, which walks it again first), then destroy `name`.
/// moby never clears read-only flags (it fails on a read-only subvolume holding nested ones);
/// we clear one only where it is needed: before deleting a nested subvolume inside it.
fn subvol_delete(dirpath: &Path, name: &OsStr, st: &mut WalkStats) -> Res<()> {
    let full = dirpath.join(name);
    let mut writable = false;
    walk(&full, &full, &mut writable, st)?;
    let fd = open_dir(dirpath)?;
    let mut args = ioctl::VolArgs::default();
    put_name(&mut args.name, name.as_bytes());
    // SAFETY: zeroed btrfs_ioctl_vol_args with a NUL-terminated name.
    unsafe { ioctl::snap_destroy(fd.as_raw_fd(), &args) }
        .map_err(|e| errno_msg("BTRFS_IOC_SNAP_DESTROY", dirpath, name, e))?;
    Ok(())
}

fn clear_read_only(p: &Path, st: &mut WalkStats) -> Res<()> {
    let fd = open_dir(p)?;
    let mut flags = 0u64;
    // SAFETY: a u64 out-parameter.
    unsafe { ioctl::subvol_getflags(fd.as_raw_fd(), &mut flags) }
        .map_err(|e| format!("BTRFS_IOC_SUBVOL_GETFLAGS {}: {e}", p.display()))?;
    if flags & ioctl::SUBVOL_RDONLY != 0 {
        let f = flags & !ioctl::SUBVOL_RDONLY;
        // SAFETY: a u64 in-parameter.
        unsafe { ioctl::subvol_setflags(fd.as_raw_fd(), &f) }
            .map_err(|e| format!("BTRFS_IOC_SUBVOL_SETFLAGS {}: {e}", p.display()))?;
        st.cleared_read_only += 1;
    }
    Ok(())
}

/// Walk the directory `p` of the subvolume whose root is `root`; `writable` records that the
/// read-only flag of `root` was already checked (and cleared if set).
fn walk(p: &Path, root: &Path, writable: &mut bool, st: &mut WalkStats) -> Res<()> {
    let rd = match std::fs::read_dir(p) {
        Ok(rd) => rd,
        // Gone: most likely a nested subvolume deleted on the way; moby ignores it too.
        Err(e) if e.kind() == io::ErrorKind::NotFound && p != root => return Ok(()),
        Err(e) => return Err(format!("read_dir {}: {e}", p.display())),
    };
    st.dirs += 1;
    let mut entries: Vec<(OsString, bool)> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("read_dir {}: {e}", p.display()))?;
        let is_dir = e
            .file_type()
            .map_err(|e| format!("file_type {}: {e}", p.display()))?
            .is_dir();
        entries.push((e.file_name(), is_dir));
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    st.entries += entries.len() as u64;
    for (name, is_dir) in entries {
        if !is_dir {
            continue;
        }
        let child = p.join(&name);
        st.lstats += 1;
        let md = match std::fs::symlink_metadata(&child) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("lstat {}: {e}", child.display())),
        };
        if md.ino() == ioctl::FIRST_FREE_OBJECTID {
            st.nested += 1;
            if !*writable {
                // Its entry in a read-only subvolume could not be removed.
                clear_read_only(root, st)?;
                *writable = true;
            }
            subvol_delete(p, &name, st)?;
            // WalkDir would now try to read the deleted directory, get ENOENT and skip it.
            continue;
        }
        walk(&child, root, writable, st)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// populate: a tree of directories and small files, fast

fn cmd_populate(args: &[OsString]) -> Res<String> {
    let (pos, opts) = parse(args)?;
    if pos.len() != 3 {
        return Err(USAGE.to_string());
    }
    let root = PathBuf::from(&pos[0]);
    let dirs = num(&pos[1], "dirs")?.max(1);
    let files = num(&pos[2], "files")?;
    let bytes = opt(&opts, "bytes")
        .map(|v| num(v, "bytes"))
        .transpose()?
        .unwrap_or(100) as usize;
    let t0 = Instant::now();
    // Two levels: `top` directories d0000.., the rest spread below them as dNNNN/sNNNNN.
    let top = ((dirs as f64).sqrt().ceil() as u64).clamp(1, dirs);
    let mut paths = Vec::with_capacity(dirs as usize);
    for i in 0..dirs {
        let p = if i < top {
            root.join(format!("d{i:04}"))
        } else {
            root.join(format!("d{:04}", i % top))
                .join(format!("s{i:05}"))
        };
        std::fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        paths.push(p);
    }
    let mut body = vec![0u8; bytes];
    for j in 0..files {
        let p = paths[(j % dirs) as usize].join(format!("f{j:07}"));
        let tag = format!("file {j}\n");
        for (k, b) in body.iter_mut().enumerate() {
            *b = tag.as_bytes()[k % tag.len()];
        }
        std::fs::write(&p, &body).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    let t = ns(t0.elapsed());
    Ok(format!(
        "{{\"ns\":{t},\"dirs\":{dirs},\"files\":{files},\"bytes\":{bytes}}}"
    ))
}

// ---------------------------------------------------------------------------------------------
// populate-mixed: files of mixed sizes with incompressible content

/// xorshift64*: fast, deterministic, good enough for file contents and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn cmd_populate_mixed(args: &[OsString]) -> Res<String> {
    let (pos, opts) = parse(args)?;
    if pos.len() != 6 {
        return Err(USAGE.to_string());
    }
    let root = PathBuf::from(&pos[0]);
    let files = num(&pos[1], "files")?;
    let min = num(&pos[2], "min")?.max(1);
    let max = num(&pos[3], "max")?.max(min);
    let large = num(&pos[4], "large")?;
    let large_bytes = num(&pos[5], "large_bytes")?;
    let dirs = opt(&opts, "dirs")
        .map(|v| num(v, "dirs"))
        .transpose()?
        .unwrap_or(50)
        .max(1);
    let seed = opt(&opts, "seed")
        .map(|v| num(v, "seed"))
        .transpose()?
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut paths = Vec::with_capacity(dirs as usize);
    for i in 0..dirs {
        let p = root.join(format!("dir{i:03}"));
        std::fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        paths.push(p);
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut write = |p: &Path, size: u64, rng: &mut Rng| -> Res<()> {
        let mut f = std::fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| format!("write {}: {e}", p.display()))?;
            left -= n as u64;
        }
        total += size;
        Ok(())
    };
    let (lmin, lmax) = ((min as f64).ln(), (max as f64).ln());
    for j in 0..files {
        let size = (lmin + (lmax - lmin) * rng.unit()).exp().round() as u64;
        let p = paths[(j % dirs) as usize].join(format!("file{j:06}.bin"));
        write(&p, size.clamp(min, max), &mut rng)?;
    }
    for j in 0..large {
        let p = root.join(format!("large{j:02}.bin"));
        write(&p, large_bytes, &mut rng)?;
    }
    let t = ns(t0.elapsed());
    Ok(format!(
        "{{\"ns\":{t},\"files\":{},\"dirs\":{dirs},\"bytes\":{total}}}",
        files + large
    ))
}

// ---------------------------------------------------------------------------------------------
// changes and remap through btrfs-layers-core, timed in this process

/// User plus system CPU time of this process so far, in ns.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills a zeroed struct we own.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: nix::libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn cmd_changes(args: &[OsString]) -> Res<String> {
    use btrfs_layers_core::changes::{
        changes_send, changes_since, changes_walk, changes_walk_single_threaded, snapshot_origin,
        Options,
    };
    use btrfs_layers_core::{delete, subvolume};
    use std::os::fd::AsFd;
    let (pos, opts) = parse(args)?;
    if pos.len() != 3 {
        return Err(USAGE.to_string());
    }
    let new = PathBuf::from(&pos[0]);
    let old = PathBuf::from(&pos[1]);
    let mode = pos[2].to_str().unwrap_or("").to_string();
    let scratch = opt(&opts, "scratch").map(PathBuf::from);
    // The send path's parts: temporary snapshots, the send itself, deleting the snapshots.
    let (mut snapshot_ns, mut send_ns, mut cleanup_ns) = (0u64, 0u64, 0u64);
    let c0 = cpu_ns();
    let t0 = Instant::now();
    let list = match mode.as_str() {
        "walk" | "walk1" => {
            let n = open_dir(&new)?;
            let o = open_dir(&old)?;
            let f = if mode == "walk" {
                changes_walk
            } else {
                changes_walk_single_threaded
            };
            f(n.as_fd(), Some(o.as_fd()), &new, &Options::default())
                .map_err(|e| format!("{mode}: {e}"))?
        }
        "send" => {
            let scratch = scratch.ok_or("send needs --scratch DIR")?;
            // A read-only view of each side, as the driver takes one: the side itself when
            // read-only, else a temporary read-only snapshot, deleted after.
            let mut temps = Vec::new();
            let mut view = |p: &Path, tag: &str| -> Res<PathBuf> {
                if subvolume::is_read_only(p).map_err(|e| e.to_string())? {
                    return Ok(p.to_path_buf());
                }
                let t = scratch.join(format!("ro-{tag}-{}", std::process::id()));
                subvolume::snapshot(p, &t, true).map_err(|e| e.to_string())?;
                temps.push(t.clone());
                Ok(t)
            };
            let r = view(&new, "new").and_then(|nv| {
                let ov = view(&old, "old")?;
                let n = open_dir(&nv)?;
                let o = open_dir(&ov)?;
                let t1 = Instant::now();
                snapshot_ns = ns(t1 - t0);
                let r = changes_send(n.as_fd(), o.as_fd(), &new, &Options::default())
                    .map_err(|e| format!("send: {e}"));
                send_ns = ns(t1.elapsed());
                r
            });
            let t2 = Instant::now();
            for t in &temps {
                let _ = delete::delete(t, false);
            }
            cleanup_ns = ns(t2.elapsed());
            r?
        }
        "since" => {
            let n = open_dir(&new)?;
            let o = open_dir(&old)?;
            let since = snapshot_origin(n.as_fd(), o.as_fd(), &new)
                .map_err(|e| format!("since: {e}"))?
                .ok_or("since: <new> is not a snapshot of <old>")?;
            changes_since(n.as_fd(), o.as_fd(), since, &new, &Options::default())
                .map_err(|e| format!("since: {e}"))?
        }
        other => return Err(format!("unknown changes mode {other:?}")),
    };
    let t = ns(t0.elapsed());
    let cpu = cpu_ns() - c0;
    let mut s = format!(
        "{{\"ns\":{t},\"cpu_ns\":{cpu},\"mode\":\"{mode}\",\"count\":{}",
        list.len()
    );
    if mode == "send" {
        let _ = write!(
            s,
            ",\"snapshot_ns\":{snapshot_ns},\"send_ns\":{send_ns},\"cleanup_ns\":{cleanup_ns}"
        );
    }
    if list.len() <= 1000 {
        s.push_str(",\"list\":[");
        for (i, c) in list.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let mut p = String::from("/");
            p.push_str(&c.path.to_string_lossy());
            s.push('[');
            json_str(&mut s, &p);
            s.push(',');
            json_str(&mut s, c.kind.as_str());
            s.push(']');
        }
        s.push(']');
    }
    s.push('}');
    Ok(s)
}

fn cmd_remap(args: &[OsString]) -> Res<String> {
    use btrfs_layers_core::idmap::{IdMap, IdMapping};
    use btrfs_layers_core::remap::{remap_path, Method, RemapOptions};
    use btrfs_layers_core::Control;
    let (pos, opts) = parse(args)?;
    if pos.len() != 1 {
        return Err(USAGE.to_string());
    }
    let path = PathBuf::from(&pos[0]);
    let host = opt(&opts, "host-id")
        .map(|v| num(v, "host-id"))
        .transpose()?
        .unwrap_or(100_000) as u32;
    let method = match opt(&opts, "method").and_then(|v| v.to_str()) {
        None | Some("auto") => Method::Auto,
        Some("statx") => Method::Statx,
        Some(other) => return Err(format!("--method auto|statx, got {other:?}")),
    };
    let none = IdMapping::default();
    let to = IdMapping::new(
        &[IdMap {
            container_id: 0,
            host_id: host,
            size: 65536,
        }],
        "to",
    )
    .map_err(|e| e.to_string())?;
    let o = RemapOptions {
        from_uids: &none,
        from_gids: &none,
        to_uids: &to,
        to_gids: &to,
        cross_subvolumes: false,
        method,
        control: Control::NONE,
    };
    let c0 = cpu_ns();
    let t0 = Instant::now();
    let out = remap_path(&path, &o).map_err(|e| e.to_string())?;
    let t = ns(t0.elapsed());
    let cpu = cpu_ns() - c0;
    if let Some(e) = out.errors.first() {
        return Err(format!("{} remap errors, first: {e}", out.errors.len()));
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let mut s = format!(
        "{{\"ns\":{t},\"cpu_ns\":{cpu},\"visited\":{},\"changed\":{},\"from_table\":{},\"rayon_num_threads\":",
        out.visited, out.changed, out.from_table
    );
    json_str(&mut s, &threads);
    s.push('}');
    Ok(s)
}
