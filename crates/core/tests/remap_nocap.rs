//! remap by a caller without CAP_SYS_ADMIN: TREE_SEARCH_V2 says EPERM, so Method::Auto takes
//! the statx way and the result is the same. A binary of its own: the capability is dropped
//! from a thread, and rayon's pool, started from that thread, inherits the loss.

mod common;
mod remap_support;

use btrfs_layers_core::inodes::InodeTable;
use btrfs_layers_core::remap::Method;
use btrfs_layers_core::Control;
use common::{mk_subvol, Sentinel};
use nix::errno::Errno;
use remap_support::*;
use std::os::fd::AsFd;

const CAP_SYS_ADMIN: u32 = 21;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop `cap` from the calling thread's effective and permitted sets.
fn drop_capability(cap: u32) {
    let mut head = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills a v3 header and two data structs we own.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut head, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget: {}", std::io::Error::last_os_error());
    let (i, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    data[i].effective &= !bit;
    data[i].permitted &= !bit;
    // SAFETY: as above; capset reads them.
    let r = unsafe { libc::syscall(libc::SYS_capset, &head, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn without_cap_sys_admin_the_statx_way_is_taken_with_the_same_result() {
    let fs = require_btrfs!();
    require_tools!("setcap", "setfacl");
    let root = fs.path("t");
    mk_subvol(&root);
    let outside = Sentinel::new("nocap");
    build_rich(&root, &Side::identity(), &outside.dir);
    let r = root.clone();
    std::thread::spawn(move || {
        drop_capability(CAP_SYS_ADMIN);
        // The premise: no TREE_SEARCH_V2 for this thread.
        let dir = std::fs::File::open(&r).unwrap();
        let e = InodeTable::read(dir.as_fd(), Control::NONE, &r).unwrap_err();
        assert!(e.is(Errno::EPERM), "{e:?}");
        set_method(Method::Auto);
        let out = remap_ok(&r, &Side::identity(), &Side::shifted(100_000), false);
        assert_eq!(out.from_table, 0);
        assert_eq!((out.visited, out.changed), (21, 21));
        assert_rich_owners(&r, &Side::shifted(100_000), "without CAP_SYS_ADMIN");
    })
    .join()
    .unwrap();
    let cap = xattr(&root.join("cap"), "security.capability");
    assert!(cap.is_some(), "the capability survived");
    outside.assert_intact();
}
