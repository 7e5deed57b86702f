//! Test harness for the core's integration tests: a real btrfs on a sparse, loop-mounted image
//! (torn down by a Drop guard, even when the test panics), and btrfs-progs as the oracle.
//!
//! Gating: without root (or without mkfs.btrfs / loop devices) every test prints a LOUD
//! message straight to stderr (past the test harness' capture) and returns early, i.e. is
//! skipped; with BTRFS_LAYERS_REQUIRE_BTRFS=1 it panics instead. A test that checks effects
//! with another tool (setfacl, setcap, GNU tar, ...) says so with `require_tools!`, and is
//! skipped or fails the same way when that tool is missing, naming the package to install.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REQUIRE_ENV: &str = "BTRFS_LAYERS_REQUIRE_BTRFS";
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
pub const GIB: u64 = 1 << 30;

/// Run a command; Ok(stdout) on success, Err(description) otherwise.
pub fn try_run<S: AsRef<OsStr>>(cmd: &str, args: &[S]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        Err(format!(
            "{cmd} {} failed ({}): {}{}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Run a command that must succeed.
pub fn run<S: AsRef<OsStr>>(cmd: &str, args: &[S]) -> String {
    try_run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `btrfs <args>`, which must succeed.
pub fn btrfs<S: AsRef<OsStr>>(args: &[S]) -> String {
    run("btrfs", args)
}

fn probe() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Some(format!(
            "not running as root (euid {uid}); loop devices and mounts need root"
        ));
    }
    for tool in ["mkfs.btrfs", "btrfs", "losetup", "mount", "umount"] {
        if let Err(e) = Command::new(tool).arg("--version").output() {
            return Some(format!(
                "{tool} is not available ({e}); install btrfs-progs / util-linux"
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() && !Path::new("/dev/loop0").exists() {
        return Some("no loop device support (/dev/loop-control missing; modprobe loop)".into());
    }
    // The real thing: make and mount one.
    match Btrfs::create(&Options::default()) {
        Ok(fs) => {
            drop(fs);
            None
        }
        Err(e) => Some(format!("cannot make and loop-mount a btrfs: {e}")),
    }
}

fn availability() -> &'static Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(probe)
}

/// A mounted test filesystem, or None when the test is to be skipped (after a loud message).
/// Panics when btrfs is unavailable and BTRFS_LAYERS_REQUIRE_BTRFS=1.
pub fn btrfs_fs() -> Option<Btrfs> {
    btrfs_fs_with(Options::default())
}

pub fn btrfs_fs_with(opts: Options) -> Option<Btrfs> {
    if let Some(reason) = availability() {
        let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1");
        static WARN: Once = Once::new();
        WARN.call_once(|| {
            let bar = "!".repeat(100);
            let verdict = if required {
                format!("{REQUIRE_ENV}=1 is set, so the btrfs tests FAIL.")
            } else {
                format!("The btrfs tests of this binary are SKIPPED (they pass vacuously). Set {REQUIRE_ENV}=1 to fail instead.")
            };
            // Straight to the stderr fd: the test harness does not capture this.
            let _ = std::io::stderr().write_all(
                format!(
                    "\n{bar}\n!!! btrfs-layers-core: CANNOT TEST AGAINST A REAL BTRFS FILESYSTEM\n!!! Reason: {reason}\n!!! {verdict}\n!!! Run as root on Linux with btrfs-progs and loop devices.\n{bar}\n\n"
                )
                .as_bytes(),
            );
        });
        if required {
            panic!("btrfs unavailable and {REQUIRE_ENV}=1: {reason}");
        }
        return None;
    }
    Some(Btrfs::create(&opts).unwrap_or_else(|e| panic!("making the test filesystem: {e}")))
}

/// Skip the test (return) when no btrfs can be had; see [`btrfs_fs`].
#[macro_export]
macro_rules! require_btrfs {
    () => {
        match common::btrfs_fs() {
            Some(fs) => fs,
            None => return,
        }
    };
    ($opts:expr) => {
        match common::btrfs_fs_with($opts) {
            Some(fs) => fs,
            None => return,
        }
    };
}

/// The Debian package of each tool the tests check effects with (beyond btrfs-progs).
pub const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("setfacl", "acl"),
    ("getfacl", "acl"),
    ("setfattr", "attr"),
    ("getfattr", "attr"),
    ("setcap", "libcap2-bin"),
    ("getcap", "libcap2-bin"),
    ("zstd", "zstd"),
    ("gzip", "gzip"),
    ("tar", "tar"),
];

/// The package that provides `tool`, for the messages.
pub fn package_of(tool: &str) -> &'static str {
    TOOL_PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or("?", |(_, p)| p)
}

/// Whether `tool` can be run from PATH (spawning it is the test: it may exist and not run).
fn tool_runs(tool: &str) -> bool {
    static SEEN: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap();
    *seen.entry(tool.to_string()).or_insert_with(|| {
        Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// Whether the running test must be skipped for want of one of `tools`: prints a LOUD message
/// naming them and their packages, or panics when BTRFS_LAYERS_REQUIRE_BTRFS=1.
pub fn missing_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !tool_runs(t)).collect();
    if missing.is_empty() {
        return false;
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| package_of(t)).collect();
    packages.dedup();
    let named: Vec<String> = missing
        .iter()
        .map(|t| format!("{t} ({})", package_of(t)))
        .collect();
    let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1");
    let verdict = if required {
        format!("{REQUIRE_ENV}=1 is set, so this test FAILS.")
    } else {
        format!("This test is SKIPPED (it passes vacuously). Set {REQUIRE_ENV}=1 to fail instead.")
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let bar = "!".repeat(100);
    // Straight to the stderr fd: the test harness does not capture this.
    let _ = std::io::stderr().write_all(
        format!(
            "\n{bar}\n!!! btrfs-layers-core: {test} NEEDS A TOOL THAT IS NOT INSTALLED: {}\n!!! Install it: apt-get install -y {}\n!!! {verdict}\n{bar}\n\n",
            named.join(", "),
            packages.join(" ")
        )
        .as_bytes(),
    );
    if required {
        panic!(
            "{} not installed and {REQUIRE_ENV}=1 (apt-get install -y {})",
            named.join(", "),
            packages.join(" ")
        );
    }
    true
}

/// Skip the test (return) when one of the tools it runs is missing; see [`missing_tools`].
#[macro_export]
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if common::missing_tools(&[$($tool),+]) {
            return;
        }
    };
}

#[derive(Default, Clone)]
pub struct Options {
    pub size: Option<u64>,
    pub label: Option<String>,
    pub mkfs_args: Vec<String>,
}

/// A loop-mounted btrfs in a fresh temporary directory; Drop unmounts, detaches, removes.
pub struct Btrfs {
    pub mnt: PathBuf,
    pub image: PathBuf,
    pub dir: PathBuf,
}

fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "btrfs-layers-core-test-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&p) {
            Ok(()) => return p,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("mkdir {}: {e}", p.display()),
        }
    }
}

/// Decode the octal escapes of /proc/self/mountinfo.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(((b[i + 1] - b'0') << 6) | ((b[i + 2] - b'0') << 3) | (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Mount points at or below `p`, or whose source is one of `devices`; deepest first.
pub fn mounts_of(p: &Path, devices: &[String]) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let (pre, post) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        let mp = match pre.split(' ').nth(4) {
            Some(m) => unescape(m),
            None => continue,
        };
        let source = post.split(' ').nth(1).map(unescape).unwrap_or_default();
        if (mp.starts_with(p) || devices.iter().any(|d| Path::new(d) == source))
            && !out.contains(&mp)
        {
            out.push(mp);
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out
}

pub fn is_mount_point(p: &Path) -> bool {
    mounts_of(p, &[]).iter().any(|m| m == p)
}

/// Loop devices backing `image` (`losetup -j`).
pub fn loop_devices(image: &Path) -> Vec<String> {
    try_run("losetup", &[OsStr::new("-j"), image.as_os_str()])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .filter(|s| s.starts_with("/dev/"))
        .collect()
}

impl Btrfs {
    fn create(opts: &Options) -> Result<Btrfs, String> {
        let dir = fresh_dir();
        let fs = Btrfs {
            mnt: dir.join("mnt"),
            image: dir.join("image"),
            dir,
        };
        // From here on, Drop cleans up whatever was made.
        fs::create_dir(&fs.mnt).map_err(|e| e.to_string())?;
        let f = fs::File::create(&fs.image).map_err(|e| e.to_string())?;
        f.set_len(opts.size.unwrap_or(GIB))
            .map_err(|e| e.to_string())?;
        drop(f);
        let mut args: Vec<String> = vec!["-q".into(), "-f".into()];
        if let Some(l) = &opts.label {
            args.push("-L".into());
            args.push(l.clone());
        }
        args.extend(opts.mkfs_args.iter().cloned());
        args.push(fs.image.to_string_lossy().into_owned());
        try_run("mkfs.btrfs", &args)?;
        try_run(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("loop"),
                fs.image.as_os_str(),
                fs.mnt.as_os_str(),
            ],
        )?;
        let st = nix::sys::statfs::statfs(&fs.mnt).map_err(|e| e.to_string())?;
        if st.filesystem_type().0 as i64 != BTRFS_SUPER_MAGIC {
            return Err(format!("{} is not btrfs after mounting", fs.mnt.display()));
        }
        Ok(fs)
    }

    /// A path inside the filesystem.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let devices = loop_devices(&self.image);
        for attempt in 0..10 {
            let ms = mounts_of(&self.mnt, &devices);
            if ms.is_empty() {
                break;
            }
            for m in &ms {
                let _ = try_run("umount", &[m.as_os_str()]);
            }
            if !mounts_of(&self.mnt, &devices).is_empty() {
                std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
            }
        }
        let stuck = mounts_of(&self.mnt, &devices);
        for m in &stuck {
            let _ = try_run("umount", &[OsStr::new("-l"), m.as_os_str()]);
        }
        let still = mounts_of(&self.mnt, &devices);
        if !still.is_empty() {
            problems.push(format!("still mounted after umount -l: {still:?}"));
        }
        let mut loops = loop_devices(&self.image);
        for attempt in 0..30 {
            if loops.is_empty() {
                break;
            }
            for d in &loops {
                let _ = try_run("losetup", &["-d", d.as_str()]);
            }
            loops = loop_devices(&self.image);
            if !loops.is_empty() {
                std::thread::sleep(Duration::from_millis(100 + 20 * attempt));
            }
        }
        if !loops.is_empty() {
            problems.push(format!(
                "loop device(s) {loops:?} still attached to {} (something holds the filesystem open; lazily unmounted: {stuck:?})",
                self.image.display()
            ));
        }
        let _ = fs::remove_file(&self.image);
        // Never a recursive delete where a mount might remain.
        if !is_mount_point(&self.mnt) {
            let _ = fs::remove_dir(&self.mnt);
            let _ = fs::remove_dir(&self.dir);
        }
        problems
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            let msg = format!("btrfs teardown left things behind: {}", problems.join("; "));
            if std::thread::panicking() {
                let _ = std::io::stderr().write_all(format!("{msg}\n").as_bytes());
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// A bind mount, undone on drop.
pub struct BindMount(pub PathBuf);

impl BindMount {
    pub fn new(src: &Path, dst: &Path) -> BindMount {
        run(
            "mount",
            &[OsStr::new("--bind"), src.as_os_str(), dst.as_os_str()],
        );
        BindMount(dst.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// Unmount whatever is mounted at `at` (mounts stacked there too), lazily as a last resort.
/// A tmpfs mounted on `at` for the guard's life.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn new(at: &Path) -> Tmpfs {
        run(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new("tmpfs"),
                OsStr::new("tmpfs"),
                at.as_os_str(),
            ],
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

pub fn unmount(at: &Path) {
    for _ in 0..5 {
        if !is_mount_point(at) {
            return;
        }
        let _ = try_run("umount", &[at.as_os_str()]);
    }
    if is_mount_point(at) {
        let _ = try_run("umount", &[OsStr::new("-l"), at.as_os_str()]);
    }
}

/// A directory outside the filesystem under test, full of files; removed on drop.
pub struct Sentinel {
    pub dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Sentinel {
    pub fn new(tag: &str) -> Sentinel {
        let dir = fresh_dir().join(tag);
        fs::create_dir(&dir).unwrap();
        let mut files = Vec::new();
        for i in 0..20u8 {
            let rel = if i % 3 == 0 {
                PathBuf::from(format!("sub/f{i}"))
            } else {
                PathBuf::from(format!("f{i}"))
            };
            let data: Vec<u8> = (0..(40 + i as usize))
                .map(|k| (k as u8).wrapping_mul(i).wrapping_add(7))
                .collect();
            fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
            fs::write(dir.join(&rel), &data).unwrap();
            files.push((rel, data));
        }
        Sentinel { dir, files }
    }

    /// Every file still there with its content.
    pub fn assert_intact(&self) {
        for (rel, data) in &self.files {
            let got = fs::read(self.dir.join(rel))
                .unwrap_or_else(|e| panic!("sentinel {}: {e}", rel.display()));
            assert_eq!(&got, data, "sentinel file {} changed", rel.display());
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if mounts_of(&self.dir, &[]).is_empty() {
            let _ = fs::remove_dir_all(self.dir.parent().unwrap());
        }
    }
}

/// Make a subvolume with btrfs-progs (independent of the code under test).
pub fn mk_subvol(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    btrfs(&[OsStr::new("subvolume"), OsStr::new("create"), p.as_os_str()]);
}

pub fn set_ro(p: &Path, ro: bool) {
    btrfs(&[
        OsStr::new("property"),
        OsStr::new("set"),
        OsStr::new("-t"),
        OsStr::new("subvol"),
        p.as_os_str(),
        OsStr::new("ro"),
        OsStr::new(if ro { "true" } else { "false" }),
    ]);
}

pub fn oracle_ro(p: &Path) -> bool {
    let out = btrfs(&[
        OsStr::new("property"),
        OsStr::new("get"),
        OsStr::new("-t"),
        OsStr::new("subvol"),
        p.as_os_str(),
        OsStr::new("ro"),
    ]);
    match out.trim() {
        "ro=true" => true,
        "ro=false" => false,
        o => panic!("unexpected btrfs property output {o}"),
    }
}

/// One line of `btrfs subvolume list -q -u`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub top_level: u64,
    pub path: String,
    pub uuid: String,
    pub parent_uuid: String,
}

fn parse_list(out: &str) -> Vec<Listed> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // ID n gen g top level t parent_uuid p uuid u path <rest>
            assert_eq!(w[0], "ID", "{l}");
            let path_at = l.find(" path ").expect(l) + 6;
            Listed {
                id: w[1].parse().unwrap(),
                top_level: w[6].parse().unwrap(),
                parent_uuid: w[8].to_string(),
                uuid: w[10].to_string(),
                path: l[path_at..].trim_start_matches("<FS_TREE>/").to_string(),
            }
        })
        .collect()
}

/// `btrfs subvolume list -q -u <mnt>`.
pub fn oracle_list(mnt: &Path) -> Vec<Listed> {
    parse_list(&btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("list"),
        OsStr::new("-q"),
        OsStr::new("-u"),
        mnt.as_os_str(),
    ]))
}

/// `btrfs subvolume list -o -q -u <p>`: the subvolumes directly below the one at `p`.
pub fn oracle_list_below(p: &Path) -> Vec<Listed> {
    parse_list(&btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("list"),
        OsStr::new("-o"),
        OsStr::new("-q"),
        OsStr::new("-u"),
        p.as_os_str(),
    ]))
}

/// Subvolumes strictly below `p` (a path inside `mnt`), as (path relative to `p`, id), sorted.
pub fn oracle_below(mnt: &Path, p: &Path) -> Vec<(PathBuf, u64)> {
    let rel = p.strip_prefix(mnt).unwrap();
    let mut v: Vec<(PathBuf, u64)> = oracle_list(mnt)
        .into_iter()
        .filter_map(|s| {
            let sp = PathBuf::from(&s.path);
            if rel.as_os_str().is_empty() {
                Some((sp, s.id))
            } else {
                sp.strip_prefix(rel)
                    .ok()
                    .filter(|r| !r.as_os_str().is_empty())
                    .map(|r| (r.to_path_buf(), s.id))
            }
        })
        .collect();
    v.sort();
    v
}

/// A field of `btrfs subvolume show <p>`.
pub fn oracle_show(p: &Path) -> std::collections::HashMap<String, String> {
    let out = btrfs(&[OsStr::new("subvolume"), OsStr::new("show"), p.as_os_str()]);
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
