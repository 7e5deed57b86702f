//! btrfs_layers_core::filesystem against a real loop-mounted btrfs, checked with btrfs-progs.

mod common;

use btrfs_layers_core::filesystem;
use btrfs_layers_core::subvolume::uuid_string;
use common::*;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

fn dump_super_field(dev: &str, name: &str) -> String {
    let out = btrfs(&["inspect-internal", "dump-super", dev]);
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| panic!("no {name} in dump-super"))
}

#[test]
fn info_matches_btrfs_progs() {
    let fs = require_btrfs!(Options {
        label: Some("core-label".into()),
        mkfs_args: vec!["--nodesize".into(), "32768".into()],
        ..Default::default()
    });
    mk_subvol(&fs.path("sv"));
    let mut f = std::fs::File::create(fs.path("sv/data")).unwrap();
    f.write_all(&vec![5u8; 2 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    filesystem::sync(&fs.mnt).unwrap();
    let info = filesystem::info(&fs.path("sv")).unwrap();
    let dev = loop_devices(&fs.image).pop().unwrap();
    assert_eq!(uuid_string(&info.fsid), dump_super_field(&dev, "fsid"));
    assert_eq!(info.label, "core-label");
    assert_eq!(info.node_size, 32768);
    assert_eq!(
        info.sector_size.to_string(),
        dump_super_field(&dev, "sectorsize")
    );
    assert_eq!(
        info.generation.to_string(),
        dump_super_field(&dev, "generation")
    );
    assert_eq!(info.devices.len(), 1);
    let d = &info.devices[0];
    assert_eq!(d.id, 1);
    assert_eq!(d.path, dev);
    assert_eq!(
        uuid_string(&d.uuid),
        dump_super_field(&dev, "dev_item.uuid")
    );
    assert_eq!(d.total_bytes, GIB);
    let show = btrfs(&[
        OsStr::new("filesystem"),
        OsStr::new("show"),
        OsStr::new("--raw"),
        fs.mnt.as_os_str(),
    ]);
    assert!(
        show.contains(&format!("uuid: {}", uuid_string(&info.fsid))),
        "{show}"
    );
    assert!(
        show.contains(&format!(
            "devid    1 size {} used {} path {}",
            d.total_bytes, d.bytes_used, d.path
        )),
        "{show}"
    );
    let df = btrfs(&[
        OsStr::new("filesystem"),
        OsStr::new("df"),
        OsStr::new("-b"),
        fs.mnt.as_os_str(),
    ]);
    let sum = |kind: &str| -> (u64, u64) {
        df.lines()
            .filter(|l| l.starts_with(&format!("{kind},")))
            .fold((0, 0), |(t, u), l| {
                let num = |k: &str| -> u64 {
                    l.split(k)
                        .nth(1)
                        .unwrap()
                        .split(',')
                        .next()
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap()
                };
                (t + num("total="), u + num("used="))
            })
    };
    assert_eq!((info.data.total, info.data.used), sum("Data"));
    assert_eq!((info.metadata.total, info.metadata.used), sum("Metadata"));
    assert_eq!((info.system.total, info.system.used), sum("System"));
    assert!(info.data.used >= 2 << 20);
}

#[test]
fn info_errors() {
    let fs = require_btrfs!();
    assert_eq!(
        filesystem::info(&fs.path("missing"))
            .unwrap_err()
            .code_str(),
        "ENOENT"
    );
    assert_eq!(
        filesystem::info(Path::new("/proc")).unwrap_err().code_str(),
        "ERR_NOT_BTRFS"
    );
    assert_eq!(
        filesystem::info(Path::new("")).unwrap_err().code_str(),
        "EINVAL"
    );
    assert_eq!(
        filesystem::sync(Path::new("/proc")).unwrap_err().code_str(),
        "ERR_NOT_BTRFS"
    );
    assert_eq!(
        filesystem::sync(&fs.path("missing"))
            .unwrap_err()
            .code_str(),
        "ENOENT"
    );
    assert_eq!(filesystem::info(&fs.mnt).unwrap().label, "");
}

#[test]
fn sync_commits_the_transaction() {
    let fs = require_btrfs!();
    let dev = loop_devices(&fs.image).pop().unwrap();
    filesystem::sync(&fs.mnt).unwrap();
    let before: u64 = dump_super_field(&dev, "generation").parse().unwrap();
    mk_subvol(&fs.path("change"));
    filesystem::sync(&fs.path("change")).unwrap();
    let after: u64 = dump_super_field(&dev, "generation").parse().unwrap();
    assert!(after > before, "{after} > {before}");
    assert_eq!(filesystem::info(&fs.mnt).unwrap().generation, after);
}
