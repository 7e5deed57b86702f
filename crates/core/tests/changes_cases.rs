//! Changes between a layer and its parent, case by case, on a real btrfs: each case is checked
//! against its expected list for the parallel walk, the single-threaded walk, the send fast
//! path and the generation fast path.

mod changes_common;

use btrfs_layers_core::changes::{
    changed_inodes, changes_send, changes_since, changes_walk, snapshot_origin, Change,
    ChangeKind::*, Options,
};
use btrfs_layers_core::{subvolume, Control};
use changes_common::*;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Build a base with `setup`, change a child layer with `change`, and check all five ways.
fn case(test: &str, setup: impl FnOnce(&Path), change: impl FnOnce(&Path), expected: &[Change]) {
    let Some(fs) = Btrfs::new(test) else { return };
    let layers = Layers::new(&fs, "c", setup);
    next_ctime_tick(&fs.mnt);
    change(&layers.layer);
    layers.freeze();
    for (how, got) in &five_ways(&layers) {
        assert_eq!(
            got,
            expected,
            "{test}: {how} gave\n{}expected\n{}",
            show(got),
            show(expected)
        );
    }
    layers.delete();
}

/// Wait until the filesystem's clock for ctime has moved past now. btrfs stamps ctime from the
/// coarse clock (one jiffy), and the walk reads an inode's xattrs only when its ctime moved, so a
/// change made in the same tick as the setup looks unchanged to the walk: a known limit of the
/// unprivileged walk (the search and send paths compare transids). A probe file outside the
/// layers shows when the tick has passed; no fixed sleep.
fn next_ctime_tick(mnt: &Path) {
    let probe = mnt.join("ctime-probe");
    let ctime = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    write(&probe, b"0");
    let t0 = ctime(&probe);
    while ctime(&probe) == t0 {
        std::thread::sleep(std::time::Duration::from_micros(200));
        write(&probe, b"1");
    }
    std::fs::remove_file(&probe).unwrap();
}

fn etc(base: &Path) {
    mkdirs(&base.join("etc"));
    write(&base.join("etc/passwd"), b"root:x:0:0\n");
    write(&base.join("etc/group"), b"root:x:0:\n");
    mkdirs(&base.join("var"));
}

#[test]
fn add_file() {
    case(
        "add_file",
        etc,
        |l| {
            write(&l.join("etc/shadow"), b"x");
            write(&l.join("top"), b"");
        },
        &[ch("etc", Modify), ch("etc/shadow", Add), ch("top", Add)],
    );
}

#[test]
fn add_dir_with_subtree() {
    case(
        "add_dir",
        etc,
        |l| {
            mkdirs(&l.join("var/lib/apt/lists"));
            write(&l.join("var/lib/apt/lists/a"), b"1");
            write(&l.join("var/lib/b"), b"2");
        },
        &[
            ch("var", Modify),
            ch("var/lib", Add),
            ch("var/lib/apt", Add),
            ch("var/lib/apt/lists", Add),
            ch("var/lib/apt/lists/a", Add),
            ch("var/lib/b", Add),
        ],
    );
}

#[test]
fn delete_file() {
    case(
        "delete_file",
        etc,
        |l| std::fs::remove_file(l.join("etc/passwd")).unwrap(),
        &[ch("etc", Modify), ch("etc/passwd", Delete)],
    );
}

#[test]
fn names_lost_while_others_were_added_in_one_directory() {
    // The generation path reads a changed directory only when its size is not explained by
    // the names its changed inodes add: here every directory also lost a name no changed
    // inode stands for (an unlinked file, the other name of a hard link, a rename's old
    // name, a nested subvolume's placeholder), so each must be read.
    case(
        "names_lost",
        |b| {
            for d in ["d1", "d2", "d3", "d4"] {
                mkdirs(&b.join(d));
            }
            write(&b.join("d1/gone"), b"g");
            write(&b.join("d2/a"), b"a");
            std::fs::hard_link(b.join("d2/a"), b.join("d2/b")).unwrap();
            write(&b.join("d3/old"), b"o");
            subvolume::create(&b.join("d4/sv")).unwrap();
        },
        |l| {
            write(&l.join("d1/new1"), b"n"); // as long as "gone": 4 bytes in, 4 out
            std::fs::remove_file(l.join("d1/gone")).unwrap();
            write(&l.join("d2/cc"), b"c");
            std::fs::remove_file(l.join("d2/b")).unwrap();
            std::fs::rename(l.join("d3/old"), l.join("d3/new")).unwrap();
            write(&l.join("d4/zz"), b"z");
            std::fs::remove_dir(l.join("d4/sv")).unwrap(); // the placeholder
        },
        &[
            ch("d1", Modify),
            ch("d1/gone", Delete),
            ch("d1/new1", Add),
            ch("d2", Modify),
            ch("d2/b", Delete),
            ch("d2/cc", Add),
            ch("d3", Modify),
            ch("d3/new", Add),
            ch("d3/old", Delete),
            ch("d4", Modify),
            ch("d4/sv", Delete),
            ch("d4/zz", Add),
        ],
    );
}

#[test]
fn nested_subvolume_made_as_a_file_of_as_long_a_name_went() {
    // The directory's size does not move, and no inode of the tree changed but the
    // directory: a nested subvolume in the layer turns the size rule off.
    case(
        "subvolume_for_file",
        |b| {
            mkdirs(&b.join("d"));
            write(&b.join("d/aa"), b"a");
        },
        |l| {
            std::fs::remove_file(l.join("d/aa")).unwrap();
            subvolume::create(&l.join("d/bb")).unwrap();
        },
        &[ch("d", Modify), ch("d/aa", Delete), ch("d/bb", Add)],
    );
}

#[test]
fn delete_dir_with_subtree() {
    case(
        "delete_dir",
        |b| {
            etc(b);
            mkdirs(&b.join("usr/lib/x/y"));
            write(&b.join("usr/lib/x/y/z"), b"z");
            write(&b.join("usr/lib/x/f"), b"f");
            write(&b.join("usr/keep"), b"k");
        },
        |l| std::fs::remove_dir_all(l.join("usr/lib")).unwrap(),
        &[ch("usr", Modify), ch("usr/lib", Delete)],
    );
}

#[test]
fn modify_content_same_size_new_mtime() {
    case(
        "modify_content",
        etc,
        |l| {
            let p = l.join("etc/passwd");
            write(&p, b"ROOT:x:0:0\n");
            set_mtime(&p, 1_700_000_000, 5).unwrap();
            // Same size and the old mtime put back: not a change, by the engines' rules.
            let g = l.join("etc/group");
            let before = std::fs::symlink_metadata(&g).unwrap();
            write(&g, b"ROOT:x:0:\n");
            use std::os::unix::fs::MetadataExt;
            set_mtime(&g, before.mtime(), before.mtime_nsec()).unwrap();
        },
        &[ch("etc/passwd", Modify)],
    );
}

#[test]
fn mtime_nanoseconds_alone() {
    case(
        "mtime_nsec",
        |b| {
            etc(b);
            set_mtime(&b.join("etc/passwd"), 1_600_000_000, 1).unwrap();
        },
        |l| set_mtime(&l.join("etc/passwd"), 1_600_000_000, 2).unwrap(),
        &[ch("etc/passwd", Modify)],
    );
}

#[test]
fn chmod_file_and_dir() {
    case(
        "chmod",
        etc,
        |l| {
            chmod(&l.join("etc/passwd"), 0o600);
            chmod(&l.join("var"), 0o700);
        },
        &[ch("etc/passwd", Modify), ch("var", Modify)],
    );
}

#[test]
fn chown_file_and_symlink() {
    case(
        "chown",
        |b| {
            etc(b);
            std::os::unix::fs::symlink("passwd", b.join("etc/link")).unwrap();
        },
        |l| {
            lchown(&l.join("etc/passwd"), 1000, 0);
            lchown(&l.join("etc/link"), 0, 1000);
        },
        &[ch("etc/link", Modify), ch("etc/passwd", Modify)],
    );
}

#[test]
fn setuid_setgid_sticky() {
    case(
        "setuid",
        |b| {
            etc(b);
            write(&b.join("su"), b"#!");
            chmod(&b.join("su"), 0o755);
        },
        |l| {
            chmod(&l.join("su"), 0o4755);
            chmod(&l.join("etc/group"), 0o2644);
            chmod(&l.join("var"), 0o1755);
        },
        &[ch("etc/group", Modify), ch("su", Modify), ch("var", Modify)],
    );
}

#[test]
fn security_capability() {
    case(
        "capability",
        |b| {
            for f in ["ping", "drop", "same"] {
                write(&b.join(f), b"elf");
                set_xattr(
                    &b.join(f),
                    "security.capability",
                    &capability_value(1 << 13),
                )
                .unwrap();
            }
            write(&b.join("gain"), b"elf");
            write(&b.join("other"), b"elf");
        },
        |l| {
            set_xattr(
                &l.join("ping"),
                "security.capability",
                &capability_value(1 << 12),
            )
            .unwrap();
            remove_xattr(&l.join("drop"), "security.capability").unwrap();
            set_xattr(&l.join("gain"), "security.capability", &capability_value(1)).unwrap();
            // The same value again (ctime moves, so it is read and compared), another xattr:
            // neither is a change.
            set_xattr(
                &l.join("same"),
                "security.capability",
                &capability_value(1 << 13),
            )
            .unwrap();
            set_xattr(&l.join("other"), "user.note", b"hi").unwrap();
        },
        &[ch("drop", Modify), ch("gain", Modify), ch("ping", Modify)],
    );
}

#[test]
fn rename_file() {
    case(
        "rename_file",
        etc,
        |l| {
            std::fs::rename(l.join("etc/passwd"), l.join("etc/passwd-")).unwrap();
            std::fs::rename(l.join("etc/group"), l.join("var/group")).unwrap();
        },
        &[
            ch("etc", Modify),
            ch("etc/group", Delete),
            ch("etc/passwd", Delete),
            ch("etc/passwd-", Add),
            ch("var", Modify),
            ch("var/group", Add),
        ],
    );
}

#[test]
fn rename_dir() {
    case(
        "rename_dir",
        |b| {
            mkdirs(&b.join("usr/lib/x"));
            write(&b.join("usr/lib/x/f"), b"f");
            write(&b.join("usr/lib/g"), b"g");
        },
        |l| std::fs::rename(l.join("usr/lib"), l.join("usr/lib64")).unwrap(),
        &[
            ch("usr", Modify),
            ch("usr/lib", Delete),
            ch("usr/lib64", Add),
            ch("usr/lib64/g", Add),
            ch("usr/lib64/x", Add),
            ch("usr/lib64/x/f", Add),
        ],
    );
}

#[test]
fn exchanged_dirs() {
    // The same paths, other inodes: send names only the two directories.
    case(
        "exchange",
        |b| {
            mkdirs(&b.join("x"));
            mkdirs(&b.join("y"));
            write(&b.join("x/f1"), b"1");
            write(&b.join("x/f2"), b"2");
            write(&b.join("y/f1"), b"11");
            write(&b.join("y/same"), b"s");
            std::fs::hard_link(b.join("y/same"), b.join("x/same")).unwrap();
        },
        |l| exchange(&l.join("x"), &l.join("y")).unwrap(),
        &[
            ch("x", Modify),
            ch("x/f1", Modify),
            ch("x/f2", Delete),
            ch("y", Modify),
            ch("y/f1", Modify),
            ch("y/f2", Add),
        ],
    );
}

#[test]
fn type_changes() {
    case(
        "type_change",
        |b| {
            etc(b);
            mkdirs(&b.join("d/sub"));
            write(&b.join("d/sub/f"), b"f");
        },
        |l| {
            std::fs::remove_file(l.join("etc/passwd")).unwrap();
            mkdirs(&l.join("etc/passwd/inner"));
            write(&l.join("etc/passwd/x"), b"x");
            std::fs::remove_dir_all(l.join("d")).unwrap();
            write(&l.join("d"), b"now a file");
            std::fs::remove_file(l.join("etc/group")).unwrap();
            std::os::unix::fs::symlink("passwd", l.join("etc/group")).unwrap();
        },
        &[
            ch("d", Modify),
            ch("etc/group", Modify),
            ch("etc/passwd", Modify),
            ch("etc/passwd/inner", Add),
            ch("etc/passwd/x", Add),
        ],
    );
}

#[test]
fn symlink_target_changed() {
    case(
        "symlink",
        |b| {
            mkdirs(&b.join("links"));
            std::os::unix::fs::symlink("a", b.join("links/same_len")).unwrap();
            std::os::unix::fs::symlink("a", b.join("links/longer")).unwrap();
            std::os::unix::fs::symlink("a", b.join("links/kept")).unwrap();
            set_mtime(&b.join("links/same_len"), 1_500_000_000, 0).unwrap();
        },
        |l| {
            std::fs::remove_file(l.join("links/same_len")).unwrap();
            std::os::unix::fs::symlink("b", l.join("links/same_len")).unwrap();
            std::fs::remove_file(l.join("links/longer")).unwrap();
            std::os::unix::fs::symlink("/usr/bin/a", l.join("links/longer")).unwrap();
        },
        &[ch("links/longer", Modify), ch("links/same_len", Modify)],
    );
}

#[test]
fn hardlink_added() {
    case(
        "hardlink_added",
        etc,
        |l| std::fs::hard_link(l.join("etc/passwd"), l.join("var/passwd")).unwrap(),
        &[ch("var", Modify), ch("var/passwd", Add)],
    );
}

#[test]
fn hardlinked_file_changed_under_every_name() {
    // Send names the inode once; every other name is found through INO_PATHS.
    case(
        "hardlink_chmod",
        |b| {
            etc(b);
            std::fs::hard_link(b.join("etc/passwd"), b.join("var/p1")).unwrap();
            std::fs::hard_link(b.join("etc/passwd"), b.join("p2")).unwrap();
        },
        |l| chmod(&l.join("var/p1"), 0o640),
        &[
            ch("etc/passwd", Modify),
            ch("p2", Modify),
            ch("var/p1", Modify),
        ],
    );
}

#[test]
fn file_with_hundreds_of_long_names_changed_under_every_name() {
    // Past what one INODE_REF item holds the names go to INODE_EXTREF items, over several
    // tree blocks; the generation path must still find every one (or take INO_PATHS, or walk).
    let names: Vec<String> = (0..300)
        .map(|i| format!("d{}/{}-{i:03}", i % 3, "n".repeat(180)))
        .collect();
    let mut expected = vec![ch("d0/f", Modify)];
    expected.extend(names.iter().map(|n| ch(n, Modify)));
    expected.sort_by(|a, b| a.path.cmp(&b.path));
    case(
        "many_names",
        |b| {
            for d in 0..3 {
                mkdirs(&b.join(format!("d{d}")));
            }
            write(&b.join("d0/f"), b"linked");
            for n in &names {
                std::fs::hard_link(b.join("d0/f"), b.join(n)).unwrap();
            }
        },
        |l| chmod(&l.join("d0/f"), 0o600),
        &expected,
    );
}

#[test]
fn fifo_and_devices() {
    case(
        "devices",
        |b| {
            mkdirs(&b.join("dev"));
            mknod_char(&b.join("dev/tty"), 5, 0);
        },
        |l| {
            mkfifo(&l.join("dev/fifo"));
            mknod_char(&l.join("dev/null"), 1, 3);
            std::fs::remove_file(l.join("dev/tty")).unwrap();
            mknod_char(&l.join("dev/tty"), 5, 1);
            // Same rdev, same mode, new inode: nothing to report but the mtime.
        },
        &[
            ch("dev", Modify),
            ch("dev/fifo", Add),
            ch("dev/null", Add),
            ch("dev/tty", Modify),
        ],
    );
}

#[test]
fn non_utf8_names() {
    case(
        "non_utf8",
        |b| {
            mkdirs(&b.join("d"));
            write(&b.join(os(b"d/old\xff")), b"x");
        },
        |l| {
            write(&l.join(os(b"caf\xe9")), b"x");
            mkdirs(&l.join(os(b"\xfe\xff")));
            write(&l.join(os(b"\xfe\xff/\x80")), b"y");
            std::fs::remove_file(l.join(os(b"d/old\xff"))).unwrap();
        },
        &[
            ch(b"caf\xe9", Add),
            ch(b"d", Modify),
            ch(b"d/old\xff", Delete),
            ch(b"\xfe\xff", Add),
            ch(b"\xfe\xff/\x80", Add),
        ],
    );
}

fn os(name: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(name)
}

#[test]
fn nested_subvolumes_are_entries_never_descended() {
    let Some(fs) = Btrfs::new("nested") else {
        return;
    };
    let layers = Layers::new(&fs, "n", |b| {
        etc(b);
        subvolume::create(&b.join("kept")).unwrap();
        write(&b.join("kept/inside"), b"not part of the layer");
        subvolume::create(&b.join("gone")).unwrap();
    });
    subvolume::create(&layers.layer.join("etc/vol")).unwrap();
    write(&layers.layer.join("etc/vol/inside"), b"x");
    mkdirs(&layers.layer.join("etc/vol/dir"));
    // The child's copy of a nested subvolume is an empty placeholder; rmdir takes it away.
    std::fs::remove_dir(layers.layer.join("gone")).unwrap();
    layers.freeze();
    let expected = [ch("etc", Modify), ch("etc/vol", Add), ch("gone", Delete)];
    for (how, got) in &five_ways(&layers) {
        assert_eq!(got, &expected, "{how} gave\n{}", show(got));
    }
    // The walk on the live layers stops at the real subvolumes too (base holds kept/inside
    // for real, the layer a placeholder): kept is a boundary on both sides.
    let (b, l) = (open(&layers.base), open(&layers.layer));
    let opts = Options::default();
    let live = changes_walk(l.as_fd(), Some(b.as_fd()), &layers.layer, &opts).unwrap();
    assert_eq!(live, expected, "live walk gave\n{}", show(&live));
    delete_nested(&layers);
}

fn delete_nested(layers: &Layers) {
    for p in [&layers.new, &layers.layer, &layers.old, &layers.base] {
        btrfs_layers_core::delete::delete(p, true).unwrap();
    }
}

#[test]
fn no_parent_means_everything_added() {
    let Some(fs) = Btrfs::new("no_parent") else {
        return;
    };
    let layers = Layers::new(&fs, "p", etc);
    let n = open(&layers.old);
    let opts = Options::default();
    let got = changes_walk(n.as_fd(), None, &layers.old, &opts).unwrap();
    let expected = [
        ch("etc", Add),
        ch("etc/group", Add),
        ch("etc/passwd", Add),
        ch("var", Add),
    ];
    assert_eq!(got, expected);
    layers.delete();
}

#[test]
fn unchanged_layer_has_no_changes() {
    case("unchanged", etc, |_| {}, &[]);
}

#[test]
fn send_refuses_writable_and_non_subvolume_and_foreign_trees() {
    let Some(fs) = Btrfs::new("send_errors") else {
        return;
    };
    let layers = Layers::new(&fs, "e", etc);
    layers.freeze();
    let (old, new, layer) = (open(&layers.old), open(&layers.new), open(&layers.layer));
    let opts = Options::default();
    let err = changes_send(layer.as_fd(), old.as_fd(), &layers.layer, &opts).unwrap_err();
    assert_eq!(
        (err.code_str(), err.syscall),
        ("EINVAL", "BTRFS_IOC_SEND"),
        "{err}"
    );
    let err = changes_send(new.as_fd(), layer.as_fd(), &layers.new, &opts).unwrap_err();
    assert_eq!(err.code_str(), "EINVAL", "{err}");
    let etc_dir = open(&layers.new.join("etc"));
    let err = changes_send(etc_dir.as_fd(), old.as_fd(), &layers.new, &opts).unwrap_err();
    assert_eq!(err.code_str(), "EINVAL", "{err}");

    let Some(other) = Btrfs::new("send_errors_other") else {
        return;
    };
    let foreign = Layers::new(&other, "f", etc);
    let foreign_old = open(&foreign.old);
    let err = changes_send(new.as_fd(), foreign_old.as_fd(), &layers.new, &opts).unwrap_err();
    assert_eq!(err.code_str(), "EXDEV", "{err}");
    drop((old, new, layer, etc_dir, foreign_old));
    foreign.delete();
    layers.delete();
}

#[test]
fn send_without_cap_sys_admin_is_eperm() {
    let Some(fs) = Btrfs::new("send_eperm") else {
        return;
    };
    let layers = Layers::new(&fs, "x", etc);
    layers.freeze();
    let (old, new) = (open(&layers.old), open(&layers.new));
    let opts = Options::default();
    let err =
        unprivileged(|| changes_send(new.as_fd(), old.as_fd(), &layers.new, &opts).unwrap_err());
    assert_eq!(
        (err.code_str(), err.syscall),
        ("EPERM", "BTRFS_IOC_SEND"),
        "{err}"
    );
    // The walk needs no privilege beyond reading, and is the fallback.
    assert!(
        changes_walk(new.as_fd(), Some(old.as_fd()), &layers.new, &opts)
            .unwrap()
            .is_empty()
    );
    drop((old, new));
    layers.delete();
}

/// Run `f` without CAP_SYS_ADMIN. Capabilities are per thread, and the fast paths run on
/// rayon's pool: `f` runs in a pool of its own whose every thread dropped it.
fn unprivileged<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| drop_cap_sys_admin())
        .build()
        .unwrap();
    pool.install(f)
}

fn drop_cap_sys_admin() {
    const CAP_SYS_ADMIN: u32 = 21;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: a v3 capability header and two data structs, as capget expects.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) },
        0
    );
    d[0].effective &= !(1 << CAP_SYS_ADMIN);
    d[0].permitted &= !(1 << CAP_SYS_ADMIN);
    // SAFETY: as above; lowering this thread's own capabilities is always allowed.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) },
        0
    );
}

#[test]
fn generation_path_reads_only_the_inodes_that_changed() {
    let Some(fs) = Btrfs::new("generation_inodes") else {
        return;
    };
    // 10,000 files: enough inode numbers for the search to split into ranges, one per thread.
    let layers = Layers::new(&fs, "g", |b| {
        for d in 0..50 {
            mkdirs(&b.join(format!("d{d}")));
            for f in 0..200 {
                write(&b.join(format!("d{d}/f{f}")), b"content\n");
            }
        }
    });
    let l = &layers.layer;
    let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
    write(&l.join("d3/f1"), b"rewritten, longer\n");
    chmod(&l.join("d4/f2"), 0o600);
    write(&l.join("d7/new"), b"added\n");
    chmod(&l.join("d9"), 0o700);
    std::fs::remove_file(l.join("d11/f5")).unwrap();
    chmod(&l.join("d25/f100"), 0o640);
    write(&l.join("d49/f199"), b"the last one\n");
    let (b, lf) = (open(&layers.base), open(l));
    let since = snapshot_origin(lf.as_fd(), b.as_fd(), l).unwrap().unwrap();
    let mut got = changed_inodes(lf.as_fd(), since, l).unwrap().unwrap();
    got.sort_unstable();
    let mut expected = vec![
        (ino(&l.join("d3/f1")), false),
        (ino(&l.join("d4/f2")), false),
        (ino(&l.join("d7/new")), false),
        (ino(&l.join("d7")), true),
        (ino(&l.join("d9")), true),
        (ino(&l.join("d11")), true),
        (ino(&l.join("d25/f100")), false),
        (ino(&l.join("d49/f199")), false),
    ];
    expected.sort_unstable();
    assert_eq!(got, expected, "changed inodes of the child of 10,000 files");
    let parent = changed_inodes(b.as_fd(), since, &layers.base)
        .unwrap()
        .unwrap();
    assert_eq!(parent, vec![], "the parent did not change");
    // And the list, from those candidates, is the walk's.
    layers.freeze();
    let expected = [
        ch("d11", Modify),
        ch("d11/f5", Delete),
        ch("d25/f100", Modify),
        ch("d3/f1", Modify),
        ch("d4/f2", Modify),
        ch("d49/f199", Modify),
        ch("d7", Modify),
        ch("d7/new", Add),
        ch("d9", Modify),
    ];
    for (how, got) in &five_ways(&layers) {
        assert_eq!(got, &expected, "{how} gave\n{}", show(got));
    }
    drop((b, lf));
    layers.delete();
}

#[test]
fn generation_path_sees_a_size_change_made_right_after_the_snapshot() {
    let Some(fs) = Btrfs::new("generation_unsynced") else {
        return;
    };
    // Written, snapshotted and appended to within a few milliseconds: the append may fall in
    // the clock tick of the file's mtime (no mtime update), and its size reaches the inode
    // item only at writeback. The path syncs before it searches.
    for round in 0..20 {
        let layers = Layers::new(&fs, &format!("u{round}"), |b| {
            write(&b.join("f"), b"0123456789")
        });
        let f = layers.layer.join("f");
        let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        std::io::Write::write_all(&mut file, b"more").unwrap();
        drop(file);
        let got = generation_way(&layers.base, &layers.layer);
        assert_eq!(got, [ch("f", Modify)], "round {round}: {}", show(&got));
        layers.delete();
    }
}

#[test]
fn generation_without_cap_sys_admin_is_eperm() {
    let Some(fs) = Btrfs::new("generation_eperm") else {
        return;
    };
    let layers = Layers::new(&fs, "x", etc);
    let (old, new) = (open(&layers.base), open(&layers.layer));
    let since = snapshot_origin(new.as_fd(), old.as_fd(), &layers.layer)
        .unwrap()
        .unwrap();
    let opts = Options::default();
    let err = unprivileged(|| {
        changes_since(new.as_fd(), old.as_fd(), since, &layers.layer, &opts).unwrap_err()
    });
    assert_eq!(err.code_str(), "EPERM", "{err}");
    drop((old, new));
    layers.delete();
}

#[test]
fn snapshot_origin_only_for_a_snapshot_of_that_subvolume() {
    let Some(fs) = Btrfs::new("snapshot_origin") else {
        return;
    };
    let layers = Layers::new(&fs, "o", etc);
    layers.freeze();
    let (base, layer, new, old) = (
        open(&layers.base),
        open(&layers.layer),
        open(&layers.new),
        open(&layers.old),
    );
    let otransid = subvolume::info(&layers.layer).unwrap().otransid;
    let shown = &layers.layer;
    assert_eq!(
        snapshot_origin(layer.as_fd(), base.as_fd(), shown).unwrap(),
        Some(otransid)
    );
    // Not the other way round, not a sibling, not a snapshot of a snapshot.
    assert_eq!(
        snapshot_origin(base.as_fd(), layer.as_fd(), shown).unwrap(),
        None
    );
    assert_eq!(
        snapshot_origin(layer.as_fd(), old.as_fd(), shown).unwrap(),
        None
    );
    assert_eq!(
        snapshot_origin(new.as_fd(), base.as_fd(), shown).unwrap(),
        None
    );
    drop((base, layer, new, old));
    layers.delete();
}

/// The walk on the live layers (the parent changed too, so no read-only snapshot stands for it)
/// and the generation fast path must both give `expected`.
fn both_sides_changed(
    test: &str,
    rounds: usize,
    setup: impl Fn(&Path),
    change: impl Fn(&Path, &Path),
    expected: &[Change],
) {
    let Some(fs) = Btrfs::new(test) else { return };
    let opts = Options::default();
    for round in 0..rounds {
        let layers = Layers::new(&fs, &format!("r{round}"), &setup);
        change(&layers.base, &layers.layer);
        let (b, l) = (open(&layers.base), open(&layers.layer));
        let walk = changes_walk(l.as_fd(), Some(b.as_fd()), &layers.layer, &opts).unwrap();
        let generation = generation_way(&layers.base, &layers.layer);
        for (how, got) in [("walk", &walk), ("generation", &generation)] {
            assert_eq!(
                got,
                expected,
                "{test} round {round}: {how} gave\n{}",
                show(got)
            );
        }
        drop((b, l));
        layers.delete();
    }
}

#[test]
fn parent_replaced_a_file_by_a_nested_subvolume_after_the_child_was_made() {
    // No inode of the parent's tree stands for the new name: only its directory changed.
    both_sides_changed(
        "parent_subvolume_over_file",
        1,
        |b| write(&b.join("x"), b"a file"),
        |base, _| {
            std::fs::remove_file(base.join("x")).unwrap();
            subvolume::create(&base.join("x")).unwrap();
        },
        &[ch("x", Modify)],
    );
}

#[test]
fn capability_set_in_the_child_and_another_xattr_in_the_parent_at_once() {
    // Both inodes changed after the child was made, maybe within one clock tick: the same
    // ctime on both sides must not pass for the shared, unchanged inode item.
    both_sides_changed(
        "capability_both_sides",
        20,
        |b| write(&b.join("f"), b"program"),
        |base, layer| {
            set_xattr(
                &layer.join("f"),
                "security.capability",
                &capability_value(1),
            )
            .unwrap();
            set_xattr(&base.join("f"), "user.other", b"x").unwrap();
        },
        &[ch("f", Modify)],
    );
}

#[test]
fn generation_path_refuses_a_non_subvolume_and_foreign_trees_and_changes_nothing() {
    let Some(fs) = Btrfs::new("generation_errors") else {
        return;
    };
    let layers = Layers::new(&fs, "e", etc);
    write(&layers.layer.join("etc/new"), b"x");
    let (base, layer) = (open(&layers.base), open(&layers.layer));
    let since = snapshot_origin(layer.as_fd(), base.as_fd(), &layers.layer)
        .unwrap()
        .unwrap();
    let opts = Options::default();
    let before = changes_walk(layer.as_fd(), Some(base.as_fd()), &layers.layer, &opts).unwrap();
    let etc_dir = open(&layers.layer.join("etc"));
    let err =
        changes_since(etc_dir.as_fd(), base.as_fd(), since, &layers.layer, &opts).unwrap_err();
    assert_eq!(err.code_str(), "EINVAL", "{err}");

    let Some(other) = Btrfs::new("generation_errors_other") else {
        return;
    };
    let foreign = Layers::new(&other, "f", etc);
    let foreign_base = open(&foreign.base);
    let err = changes_since(
        layer.as_fd(),
        foreign_base.as_fd(),
        since,
        &layers.layer,
        &opts,
    )
    .unwrap_err();
    assert_eq!(
        (err.code_str(), err.syscall),
        ("EXDEV", "BTRFS_IOC_TREE_SEARCH_V2"),
        "{err}"
    );
    // Refused calls leave both trees as they were.
    let after = changes_walk(layer.as_fd(), Some(base.as_fd()), &layers.layer, &opts).unwrap();
    assert_eq!(after, before);
    assert_eq!(
        changes_walk(foreign_base.as_fd(), None, &foreign.base, &opts).unwrap(),
        changes_walk(open(&foreign.old).as_fd(), None, &foreign.old, &opts).unwrap()
    );
    drop((base, layer, etc_dir, foreign_base));
    foreign.delete();
    layers.delete();
}

#[test]
fn every_way_stops_with_abort_err_once_asked_and_the_same_call_runs_without() {
    let Some(fs) = Btrfs::new("abort") else {
        return;
    };
    let layers = Layers::new(&fs, "a", etc);
    write(&layers.layer.join("etc/new"), b"x");
    layers.freeze();
    let stop = std::sync::atomic::AtomicBool::new(true);
    let go = std::sync::atomic::AtomicBool::new(false);
    let (base, layer) = (open(&layers.base), open(&layers.layer));
    let (old, new) = (open(&layers.old), open(&layers.new));
    let since = snapshot_origin(layer.as_fd(), base.as_fd(), &layers.layer)
        .unwrap()
        .unwrap();
    let expected = [ch("etc", Modify), ch("etc/new", Add)];
    for (flag, aborted) in [(&stop, true), (&go, false)] {
        let o = Options {
            control: Control::abort_on(flag),
            ..Options::default()
        };
        let got = [
            (
                "walk",
                changes_walk(new.as_fd(), Some(old.as_fd()), &layers.new, &o),
            ),
            (
                "whole walk",
                changes_walk(new.as_fd(), None, &layers.new, &o),
            ),
            (
                "send",
                changes_send(new.as_fd(), old.as_fd(), &layers.new, &o),
            ),
            (
                "generation",
                changes_since(layer.as_fd(), base.as_fd(), since, &layers.layer, &o),
            ),
        ];
        for (how, r) in got {
            match (aborted, r) {
                (true, Err(e)) => assert_eq!(e.code_str(), "ABORT_ERR", "{how}: {e}"),
                (true, Ok(l)) => panic!("{how}: not stopped, gave\n{}", show(&l)),
                (false, Ok(l)) if how == "whole walk" => assert!(l.len() > 2, "{how}"),
                (false, Ok(l)) => assert_eq!(l, expected, "{how}"),
                (false, Err(e)) => panic!("{how}: {e}"),
            }
        }
    }
    drop((base, layer, old, new));
    layers.delete();
}
