//! Shared by the receive tests: trees built with coreutils and btrfs-progs, streams from
//! `btrfs send`, `btrfs receive` as the oracle, and a comparison of two trees that reads
//! contents, modes, owners, xattrs (`getfattr`), hardlinks, holes (SEEK_DATA/SEEK_HOLE) and
//! mtimes.
#![allow(dead_code)]

use crate::common::*;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Run a shell script in `dir`, which must succeed.
pub fn sh(dir: &Path, script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `btrfs subvolume snapshot -r src dst`.
pub fn snapshot_ro(src: &Path, dst: &Path) {
    btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("snapshot"),
        OsStr::new("-r"),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
}

/// `btrfs send [extra] -f out snap`.
pub fn send(snap: &Path, extra: &[&str], out: &Path) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("send"), OsStr::new("-q")];
    args.extend(extra.iter().map(OsStr::new));
    args.extend([OsStr::new("-f"), out.as_os_str(), snap.as_os_str()]);
    btrfs(&args);
}

/// `btrfs receive -f stream dir`.
pub fn oracle_receive(stream: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    btrfs(&[
        OsStr::new("receive"),
        OsStr::new("-f"),
        stream.as_os_str(),
        dir.as_os_str(),
    ]);
}

/// What the comparison reads of one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub rdev: u64,
    pub content: u64,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, String>,
    /// Data ranges of a regular file (SEEK_DATA/SEEK_HOLE): its holes are what is not here.
    pub data: Vec<(u64, u64)>,
    /// For a file with more than one link: the first path of its inode in this tree.
    pub link_group: Option<PathBuf>,
}

/// Every entry below `root` (the root itself as ""), by relative path.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut paths = vec![PathBuf::new()];
    let mut i = 0;
    while i < paths.len() {
        let p = root.join(&paths[i]);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut names: Vec<PathBuf> = fs::read_dir(&p)
                .unwrap()
                .map(|e| paths[i].join(e.unwrap().file_name()))
                .collect();
            names.sort();
            paths.extend(names);
        }
        i += 1;
    }
    paths.sort();
    let mut first_of: HashMap<u64, PathBuf> = HashMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let t = m.file_type();
        let kind = if t.is_dir() {
            "dir"
        } else if t.is_file() {
            "file"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_fifo() {
            "fifo"
        } else if t.is_char_device() {
            "char"
        } else if t.is_block_device() {
            "block"
        } else {
            "socket"
        };
        let link_group = (t.is_file() && m.nlink() > 1)
            .then(|| first_of.entry(m.ino()).or_insert(rel.clone()).clone());
        let (content, data) = if t.is_file() {
            let bytes = fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (h.finish(), data_ranges(&p, m.len()))
        } else {
            (0, Vec::new())
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if t.is_dir() { 0 } else { m.len() },
                rdev: m.rdev(),
                content,
                target: t.is_symlink().then(|| fs::read_link(&p).unwrap()),
                xattrs: oracle_xattrs(&p),
                data,
                link_group,
            },
        );
    }
    out
}

/// The xattrs `getfattr` sees on `p` itself, the driver's record left out.
pub fn oracle_xattrs(p: &Path) -> BTreeMap<String, String> {
    let out = std::process::Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.contains("btrfs-layers.record"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The data ranges of file `p` of size `len`, by SEEK_DATA and SEEK_HOLE.
pub fn data_ranges(p: &Path, len: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(p).unwrap();
    let mut out = Vec::new();
    let mut at = 0i64;
    while (at as u64) < len {
        // SAFETY: a live fd; lseek has no memory effects.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        out.push((data as u64, hole as u64));
        at = hole;
    }
    out
}

/// Assert that the trees at `ours` and `oracle` are the same, entry by entry.
pub fn assert_same_tree(ours: &Path, oracle: &Path) {
    let (a, b) = (read_tree(ours), read_tree(oracle));
    let names = |t: &BTreeMap<PathBuf, Entry>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same names");
    for (k, v) in &a {
        assert_eq!(v, &b[k], "entry {}", k.display());
    }
}

/// Physical extents of `p` (`filefrag -v`): (logical start, physical start, length), in blocks.
pub fn extents(p: &Path) -> Vec<(u64, u64, u64)> {
    let out = run("filefrag", &[OsStr::new("-v"), p.as_os_str()]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').map(str::trim).collect();
            if f.len() < 4 || f[0].parse::<u64>().is_err() {
                return None;
            }
            let logical = f[1].split("..").next()?.trim().parse().ok()?;
            let physical = f[2].split("..").next()?.trim().parse().ok()?;
            let len = f[3].split_whitespace().next()?.parse().ok()?;
            Some((logical, physical, len))
        })
        .collect()
}

/// Whether `filefrag -v` marks any extent of `p` encoded (compressed).
pub fn has_encoded_extents(p: &Path) -> bool {
    run("filefrag", &[OsStr::new("-v"), p.as_os_str()]).contains("encoded")
}

/// The command names of `btrfs receive --dump` of `stream`.
pub fn dump_commands(stream: &Path) -> Vec<String> {
    run(
        "btrfs",
        &[
            OsStr::new("receive"),
            OsStr::new("--dump"),
            OsStr::new("-f"),
            stream.as_os_str(),
        ],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
    .collect()
}

/// Names in `dir` (none when it is missing).
pub fn names_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| String::from_utf8_lossy(e.unwrap().file_name().as_bytes()).into_owned())
        .collect();
    v.sort();
    v
}

/// The first tree of the chain: every kind of entry the comparison reads.
pub const BASE: &str = r#"
mkdir -p etc dir/sub private
printf 'hello\n' > etc/hello
head -c 3000000 /dev/urandom > big
cp --reflink=always big big.reflink
truncate -s 10M sparse
printf 'middle' | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
printf 'linked' > dir/a
ln dir/a dir/a.hard
ln -s ../etc/hello dir/rel-link
ln -s /etc/passwd abs-link
mkfifo dir/fifo
mknod dir/null c 1 3
setfattr -n user.color -v blue etc/hello
setfattr -n user.empty dir
printf 'suid' > suid && chown 1000:1000 suid && chmod 4755 suid
chown 123:456 private && chmod 0700 private
touch -h -d '2001-02-03 04:05:06.789' abs-link
touch -d '2010-01-01 00:00:00.5' etc/hello etc
"#;

/// The second step: renames, deletes, new data, metadata changes.
pub const STEP2: &str = r#"
printf 'changed\n' >> etc/hello
mv dir/sub dir/sub-renamed
mv big big.moved
rm abs-link
rm dir/a.hard
ln etc/hello etc/hello.hard
printf 'new' > dir/sub-renamed/new
setfattr -n user.color -v green etc/hello
setfattr -x user.empty dir
chmod 0640 suid
chown 7:8 dir/fifo
printf 'x' | dd of=sparse bs=1 seek=9000000 conv=notrunc status=none
"#;

/// The third step: a tree removed, a reflink of a file the parent has, a truncate.
pub const STEP3: &str = r#"
rm -r dir/sub-renamed
cp --reflink=always big.moved big.again
truncate -s 100 big.reflink
mkdir -p deep/er/est
printf 'deep' > deep/er/est/f
touch -d '2020-05-05 05:05:05' deep/er
"#;
