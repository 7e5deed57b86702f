//! The driver's staging of a layer under construction, against a real loop-mounted btrfs:
//! a create that fails at its commit point deletes its temporary subvolume and gives its space
//! back before it returns (btrfs-progs `subvolume list -d` is the oracle), and the layer that
//! won is complete.

mod common;

use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use common::*;
use std::fs;
use std::sync::{Arc, Barrier};

/// Subvolumes deleted but not yet dropped by the kernel's cleaner.
fn deleted_not_cleaned(fs: &Btrfs) -> Vec<String> {
    btrfs(&["subvolume", "list", "-d", fs.mnt.to_str().unwrap()])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_create_that_loses_the_race_for_its_name_gives_its_space_back_at_once() {
    let fs = require_btrfs!();
    let home = fs.mnt.join("home");
    let driver = Arc::new(Driver::init(&home, DriverOptions::default()).unwrap());
    driver
        .create("parent", None, &CreateOptions::default())
        .unwrap();
    let parent = home.join("subvolumes/parent");
    for i in 0..200 {
        fs::write(parent.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    let opts = CreateOptions {
        read_only: true,
        ..CreateOptions::default()
    };
    // Both pass the name check, both snapshot (a commit each), one publishes first: the other
    // fails at its rename. Tried until that happens; each snapshot takes a commit, so it does
    // at once in practice.
    let mut lost_at_publish = 0;
    for round in 0..20 {
        let id = format!("same{round}");
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<_> = (0..2)
            .map(|_| {
                let (d, b, id, opts) = (driver.clone(), barrier.clone(), id.clone(), opts.clone());
                std::thread::spawn(move || {
                    b.wait();
                    d.create(&id, Some("parent"), &opts)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        let err = results.into_iter().find_map(|r| r.err()).unwrap();
        assert_eq!(err.code_str(), "EEXIST");
        assert_eq!(
            deleted_not_cleaned(&fs),
            Vec::<String>::new(),
            "round {round}"
        );
        let names: Vec<String> = fs::read_dir(home.join("subvolumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "temporaries left: {names:?}");
        assert!(oracle_ro(&home.join("subvolumes").join(&id)));
        assert_eq!(
            fs::read_dir(home.join("subvolumes").join(&id))
                .unwrap()
                .count(),
            200
        );
        if err.syscall == "renameat2" {
            lost_at_publish += 1;
            if lost_at_publish >= 3 {
                break;
            }
        }
    }
    assert!(
        lost_at_publish > 0,
        "no create ever lost the race at its commit point"
    );
}
