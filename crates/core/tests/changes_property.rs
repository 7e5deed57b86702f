//! Property: on many random trees and random changes, the send fast path, the generation fast
//! path (as it runs, and with every part in parallel), the parallel walk, the single-threaded
//! walk and an independent oracle (a plain sequential std::fs comparison written from the
//! rules) return the same list. A second property changes the parent too after the child was
//! made, which only the walk and the generation path can compare (the parent is live), and
//! checks them against the oracle.
//!
//! CHANGES_SEED picks the first seed, CHANGES_ITERATIONS the number of trees (default 100).

mod changes_common;

use btrfs_layers_core::changes::{changes_walk, Change, ChangeKind, Options, Parallelism};
use btrfs_layers_core::subvolume;
use changes_common::*;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// xorshift64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| b'a' + self.below(26) as u8).collect()
    }
    /// A symlink target (never empty: symlink(2) refuses that).
    fn target(&mut self) -> Vec<u8> {
        let mut t = self.bytes(11);
        t.push(b'/');
        t
    }
    fn name(&mut self) -> OsString {
        const POOL: &[&[u8]] = &[
            b"a",
            b"b",
            b"c",
            b"etc",
            b"lib",
            b"bin",
            b"x.conf",
            b"o257-5-0",
            b"caf\xe9",
            b"\xff",
            b"-",
            b"a.b",
        ];
        let mut n = POOL[self.below(POOL.len())].to_vec();
        if self.chance(50) {
            n.push(b'0' + self.below(4) as u8);
        }
        OsStr::from_bytes(&n).to_os_string()
    }
}

/// One entry of a live tree, as the mutations choose among them.
struct Found {
    path: PathBuf,
    dir: bool,
    file: bool,
    symlink: bool,
    boundary: bool,
}

fn boundary_dir(m: &std::fs::Metadata, root_dev: u64) -> bool {
    m.is_dir() && (m.ino() == 256 || m.ino() == 2 || m.dev() != root_dev)
}

/// Every entry below `root` (not crossing nested subvolumes), parents first.
fn entries(root: &Path) -> Vec<Found> {
    fn go(dir: &Path, dev: u64, out: &mut Vec<Found>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let boundary = boundary_dir(&m, dev);
            out.push(Found {
                path: p.clone(),
                dir: m.is_dir(),
                file: m.is_file(),
                symlink: m.file_type().is_symlink(),
                boundary,
            });
            if m.is_dir() && !boundary {
                go(&p, dev, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, std::fs::metadata(root).unwrap().dev(), &mut out);
    out
}

fn dirs_of(root: &Path, all: &[Found]) -> Vec<PathBuf> {
    let mut d = vec![root.to_path_buf()];
    d.extend(
        all.iter()
            .filter(|f| f.dir && !f.boundary)
            .map(|f| f.path.clone()),
    );
    d
}

fn random_file(rng: &mut Rng, p: &Path) {
    write(p, &rng.bytes(40));
    if rng.chance(30) {
        let _ = set_mtime(
            p,
            1_000_000_000 + rng.below(1000) as i64,
            rng.below(3) as i64,
        );
    }
}

fn random_mode(rng: &mut Rng) -> u32 {
    [0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o700, 0o444][rng.below(8)]
}

/// A random base tree.
fn populate(rng: &mut Rng, root: &Path) {
    let count = 5 + rng.below(45);
    for _ in 0..count {
        let all = entries(root);
        let dirs = dirs_of(root, &all);
        let p = rng.pick(&dirs).unwrap().join(rng.name());
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        let files: Vec<&Found> = all.iter().filter(|f| f.file).collect();
        match rng.below(100) {
            0..=27 => mkdirs(&p),
            28..=59 => random_file(rng, &p),
            60..=66 => std::os::unix::fs::symlink(OsStr::from_bytes(&rng.target()), &p).unwrap(),
            67..=74 => match rng.pick(&files) {
                Some(f) => std::fs::hard_link(&f.path, &p).unwrap(),
                None => random_file(rng, &p),
            },
            75..=78 => mkfifo(&p),
            79..=81 => mknod_char(&p, 1, 3 + rng.below(3) as u32),
            82..=86 => {
                random_file(rng, &p);
                set_xattr(
                    &p,
                    "security.capability",
                    &capability_value(1 << rng.below(3)),
                )
                .unwrap();
            }
            87..=91 => {
                random_file(rng, &p);
                chmod(&p, random_mode(rng));
            }
            92..=95 => {
                random_file(rng, &p);
                lchown(&p, rng.below(3) as u32, rng.below(3) as u32);
            }
            96..=97 => {
                subvolume::create(&p).unwrap();
                write(&p.join("inside"), b"not part of the layer");
            }
            _ => {
                random_file(rng, &p);
                set_xattr(&p, "user.note", b"n").unwrap();
            }
        }
    }
    if rng.chance(40) {
        let all = entries(root);
        let dirs: Vec<PathBuf> = all
            .iter()
            .filter(|f| f.dir && !f.boundary)
            .map(|f| f.path.clone())
            .collect();
        if let Some(d) = rng.pick(&dirs) {
            twin(rng, &d.clone());
        }
    }
}

/// A copy of directory `dir` beside it as `<name>.twin`, one child's mode changed.
fn twin(rng: &mut Rng, dir: &Path) {
    let mut name = dir.file_name().unwrap().to_os_string();
    name.push(".twin");
    let twin = dir.with_file_name(name);
    if std::fs::symlink_metadata(&twin).is_ok() || copy_tree(dir, &twin).is_err() {
        return;
    }
    let inner: Vec<PathBuf> = std::fs::read_dir(&twin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if let Some(p) = rng.pick(&inner) {
        chmod(p, random_mode(rng));
    }
}

/// Apply random changes to the layer at `root`; returns what was done, for a failure report.
fn mutate(rng: &mut Rng, root: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let ops = 1 + rng.below(14);
    for _ in 0..ops {
        let all = entries(root);
        let dirs = dirs_of(root, &all);
        let Some(target) = rng.pick(&all).map(|f| Found {
            path: f.path.clone(),
            ..*f
        }) else {
            write(&root.join(rng.name()), b"first");
            continue;
        };
        let t = &target.path;
        let fresh = rng.pick(&dirs).unwrap().join(rng.name());
        let files: Vec<&Found> = all.iter().filter(|f| f.file).collect();
        let free = std::fs::symlink_metadata(&fresh).is_err();
        let op = rng.below(23);
        let line = format!("op {op} on {t:?} (new name {fresh:?})");
        let _ = match op {
            0 if free => {
                random_file(rng, &fresh);
                Ok(())
            }
            1 => std::fs::create_dir(&fresh).map(|_| {
                for _ in 0..rng.below(3) {
                    let p = fresh.join(rng.name());
                    random_file(rng, &p);
                }
            }),
            2 | 3 if target.boundary => std::fs::remove_dir(t).or_else(|_| {
                btrfs_layers_core::delete::delete(t, true)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }),
            2 | 3 if target.dir => std::fs::remove_dir_all(t),
            2 | 3 => std::fs::remove_file(t),
            4 if target.file => {
                write(t, &rng.bytes(40));
                Ok(())
            }
            5 if target.file => {
                // Same size, other bytes, mtime put back: not a change, though send sees a write.
                let m = std::fs::symlink_metadata(t).unwrap();
                let mut data = std::fs::read(t).unwrap();
                data.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                write(t, &data);
                set_mtime(t, m.mtime(), m.mtime_nsec())
            }
            6 => set_mtime(t, 1_100_000_000 + rng.below(5) as i64, rng.below(2) as i64),
            7 if target.file => std::fs::OpenOptions::new()
                .write(true)
                .open(t)
                .and_then(|f| f.set_len(rng.below(50) as u64)),
            8 | 9 if !target.symlink => {
                chmod(t, random_mode(rng));
                Ok(())
            }
            10 => {
                lchown(t, rng.below(3) as u32, rng.below(3) as u32);
                Ok(())
            }
            11 | 12 => std::fs::rename(t, &fresh),
            // RENAME_EXCHANGE with a nested subvolume's placeholder aborts the transaction
            // and forces the filesystem read-only (Linux 6.18): keep boundaries out of it.
            13 if !target.boundary => match rng.pick(&all).filter(|o| !o.boundary) {
                Some(other) => exchange(t, &other.path),
                None => Ok(()),
            },
            14 if target.dir => std::fs::remove_dir_all(t).map(|_| write(t, b"was a dir")),
            14 => std::fs::remove_file(t)
                .and_then(|_| std::fs::create_dir(t))
                .map(|_| random_file(rng, &t.join("in"))),
            15 if target.file => set_xattr(
                t,
                "security.capability",
                &capability_value(1 << rng.below(3)),
            ),
            16 if target.file => remove_xattr(t, "security.capability"),
            17 => set_xattr(t, "user.other", &rng.bytes(5)),
            18 => match rng.pick(&files) {
                Some(f) => std::fs::hard_link(&f.path, &fresh),
                None => Ok(()),
            },
            19 if target.symlink => std::fs::remove_file(t)
                .and_then(|_| std::os::unix::fs::symlink(OsStr::from_bytes(&rng.target()), t)),
            19 if free => std::os::unix::fs::symlink(OsStr::from_bytes(&rng.target()), &fresh),
            20 if target.dir && !target.boundary => {
                // The same name, a new inode, the same content: a walk of the whole subtree.
                let tmp = t.with_file_name("renewed.tmp");
                std::fs::rename(t, &tmp)
                    .and_then(|_| copy_tree(&tmp, t))
                    .and_then(|_| std::fs::remove_dir_all(&tmp))
            }
            21 if free && rng.chance(50) => subvolume::create(&fresh)
                .map(|_| write(&fresh.join("x"), b"x"))
                .map_err(|e| std::io::Error::other(e.to_string())),
            21 => {
                // A changed inode with several names, changed through one of them.
                let linked: Vec<&&Found> = files
                    .iter()
                    .filter(|f| std::fs::symlink_metadata(&f.path).unwrap().nlink() > 1)
                    .collect();
                match rng.pick(&linked) {
                    Some(f) => {
                        chmod(&f.path, random_mode(rng));
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            22 => {
                // Twins exchanged: the same names hold other, existing inodes, and send names
                // only the two directories.
                let twins: Vec<&Found> = all
                    .iter()
                    .filter(|f| f.path.as_os_str().as_bytes().ends_with(b".twin"))
                    .collect();
                match rng.pick(&twins) {
                    Some(twin) => {
                        let name = twin.path.file_name().unwrap().as_bytes();
                        let original = twin
                            .path
                            .with_file_name(OsStr::from_bytes(&name[..name.len() - 5]));
                        exchange(&twin.path, &original)
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        log.push(line);
    }
    log
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    let m = std::fs::symlink_metadata(from)?;
    std::fs::set_permissions(to, m.permissions())?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let m = std::fs::symlink_metadata(&src)?;
        if m.is_dir() && !boundary_dir(&m, std::fs::metadata(from)?.dev()) {
            copy_tree(&src, &dst)?;
        } else if m.is_file() {
            std::fs::copy(&src, &dst)?;
            set_mtime(&dst, m.mtime(), m.mtime_nsec())?;
        }
    }
    Ok(())
}

// ---- the oracle: the rules, written plainly over std::fs -------------------------------------

struct Meta {
    m: std::fs::Metadata,
    cap: Option<Vec<u8>>,
    boundary: bool,
}

fn meta(p: &Path, root_dev: u64) -> Option<Meta> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let boundary = boundary_dir(&m, root_dev);
    Some(Meta {
        cap: if boundary {
            None
        } else {
            get_xattr(p, "security.capability")
        },
        boundary,
        m,
    })
}

fn differ(a: &Meta, b: &Meta) -> bool {
    let fmt = |m: &std::fs::Metadata| m.mode() & libc::S_IFMT;
    if fmt(&a.m) != fmt(&b.m) {
        return true;
    }
    if a.boundary && b.boundary {
        return false;
    }
    let (a2, b2) = (&a.m, &b.m);
    a2.mode() & 0o7777 != b2.mode() & 0o7777
        || a2.uid() != b2.uid()
        || a2.gid() != b2.gid()
        || a2.rdev() != b2.rdev()
        || a.cap != b.cap
        || (!b2.is_dir()
            && (a2.size() != b2.size()
                || a2.mtime() != b2.mtime()
                || a2.mtime_nsec() != b2.mtime_nsec()))
}

fn names(dir: Option<&Path>) -> BTreeSet<Vec<u8>> {
    let Some(d) = dir else { return BTreeSet::new() };
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

fn oracle(old: &Path, new: &Path) -> Vec<Change> {
    let devs = (
        std::fs::metadata(old).unwrap().dev(),
        std::fs::metadata(new).unwrap().dev(),
    );
    let mut out = Vec::new();
    compare(Some(old), Some(new), Path::new(""), devs, &mut out);
    let mut parents = Vec::new();
    for c in &out {
        if c.kind != ChangeKind::Modify {
            if let Some(p) = c.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !out.iter().any(|x| x.path == p) {
                    parents.push(Change {
                        path: p.to_path_buf(),
                        kind: ChangeKind::Modify,
                    });
                }
            }
        }
    }
    out.extend(parents);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup();
    out
}

fn compare(
    old: Option<&Path>,
    new: Option<&Path>,
    rel: &Path,
    devs: (u64, u64),
    out: &mut Vec<Change>,
) {
    let all: BTreeSet<Vec<u8>> = names(old).union(&names(new)).cloned().collect();
    for n in all {
        let n = OsStr::from_bytes(&n);
        let path = rel.join(n);
        let o = old.and_then(|d| meta(&d.join(n), devs.0));
        let nw = new.and_then(|d| meta(&d.join(n), devs.1));
        let into = |m: &Option<Meta>| m.as_ref().is_some_and(|m| m.m.is_dir() && !m.boundary);
        match (&o, &nw) {
            (None, None) => {}
            (None, Some(_)) => {
                out.push(Change {
                    path: path.clone(),
                    kind: ChangeKind::Add,
                });
                if into(&nw) {
                    compare(None, Some(&new.unwrap().join(n)), &path, devs, out);
                }
            }
            (Some(_), None) => out.push(Change {
                path,
                kind: ChangeKind::Delete,
            }),
            (Some(a), Some(b)) => {
                if differ(a, b) {
                    out.push(Change {
                        path: path.clone(),
                        kind: ChangeKind::Modify,
                    });
                }
                if b.m.is_dir() {
                    let od = (a.m.is_dir() && into(&o)).then(|| old.unwrap().join(n));
                    let nd = into(&nw).then(|| new.unwrap().join(n));
                    if od.is_some() || nd.is_some() {
                        compare(od.as_deref(), nd.as_deref(), &path, devs, out);
                    }
                }
            }
        }
    }
}

#[test]
fn send_walk_single_threaded_walk_and_oracle_agree_on_random_trees() {
    let Some(fs) = Btrfs::new("property") else {
        return;
    };
    let (seeds, iterations) = seeds();
    let mut nonempty = 0;
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let layers = Layers::new(&fs, &format!("s{seed}"), |b| populate(&mut rng, b));
        let log = mutate(&mut rng, &layers.layer);
        layers.freeze();
        let expected = oracle(&layers.old, &layers.new);
        for (how, got) in &five_ways(&layers) {
            assert!(
                *got == expected,
                "seed {seed}: {how} differs from the oracle\nchanges made:\n  {}\n{how}:\n{}oracle:\n{}",
                log.join("\n  "),
                show(got),
                show(&expected)
            );
        }
        nonempty += usize::from(!expected.is_empty());
        layers.delete();
    }
    assert!(
        nonempty as u64 >= iterations / 2,
        "too few trees changed: {nonempty}"
    );
}

/// The seeds to try: CHANGES_SEED.. (1), CHANGES_ITERATIONS of them (100).
fn seeds() -> (std::ops::Range<u64>, u64) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (first, iterations) = (env("CHANGES_SEED", 1), env("CHANGES_ITERATIONS", 100));
    (first..first + iterations, iterations)
}

/// The entries on which two lists differ, as lstat sees them in both trees.
fn differing(a: &[Change], b: &[Change], old: &Path, new: &Path) -> String {
    let describe = |root: &Path, rel: &Path| match std::fs::symlink_metadata(root.join(rel)) {
        Ok(m) => format!(
            "mode {:o} ino {} dev {} nlink {} size {} ctime {}.{:09} mtime {}.{:09}",
            m.mode(),
            m.ino(),
            m.dev(),
            m.nlink(),
            m.size(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(e) => e.to_string(),
    };
    let mut out = String::new();
    for c in a
        .iter()
        .filter(|c| !b.contains(c))
        .chain(b.iter().filter(|c| !a.contains(c)))
    {
        out.push_str(&format!(
            "  {:?}\n    old: {}\n    new: {}\n",
            c.path,
            describe(old, &c.path),
            describe(new, &c.path)
        ));
    }
    out
}

#[test]
fn generation_path_and_walk_agree_with_the_oracle_when_both_sides_changed() {
    let Some(fs) = Btrfs::new("property_both") else {
        return;
    };
    let (seeds, iterations) = seeds();
    let mut nonempty = 0;
    let opts = Options::default();
    for seed in seeds {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let layers = Layers::new(&fs, &format!("b{seed}"), |b| populate(&mut rng, b));
        // Interleaved, so both trees change in the same transactions and the same clock ticks.
        let mut log = Vec::new();
        for round in 0..2 {
            for (side, root) in [("child", &layers.layer), ("parent", &layers.base)] {
                if round == 0 || rng.chance(50) {
                    log.extend(
                        mutate(&mut rng, root)
                            .into_iter()
                            .map(|l| format!("{side}: {l}")),
                    );
                }
            }
        }
        let expected = oracle(&layers.base, &layers.layer);
        let (b, l) = (open(&layers.base), open(&layers.layer));
        let walk = changes_walk(l.as_fd(), Some(b.as_fd()), &layers.layer, &opts).unwrap();
        let generation = generation_way(&layers.base, &layers.layer);
        let parallel = generation_way_with(&layers.base, &layers.layer, Parallelism::ALWAYS);
        for (how, got) in [
            ("walk", &walk),
            ("generation", &generation),
            ("generation, all parallel", &parallel),
        ] {
            assert!(
                *got == expected,
                "seed {seed}: {how} differs from the oracle\nchanges made:\n  {}\n{how}:\n{}oracle:\n{}differing entries:\n{}",
                log.join("\n  "),
                show(got),
                show(&expected),
                differing(got, &expected, &layers.base, &layers.layer)
            );
        }
        nonempty += usize::from(!expected.is_empty());
        layers.delete();
    }
    assert!(
        nonempty as u64 >= iterations / 2,
        "too few trees changed: {nonempty}"
    );
}
