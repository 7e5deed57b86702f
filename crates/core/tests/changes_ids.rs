//! Changes compared in container ids: a layer remapped to other host ids differs from its
//! parent on disk in every owner, but not in container ids.

mod changes_common;

use btrfs_layers_core::changes::{
    changes_send, changes_walk, ChangeKind::*, ContainerIds, Options,
};
use btrfs_layers_core::idmap::{IdMap, IdMapping};
use btrfs_layers_core::remap::{remap_path, Method, RemapOptions};
use btrfs_layers_core::Control;
use changes_common::*;
use std::os::fd::AsFd;
use std::sync::Arc;

#[test]
fn remapped_layer_differs_only_where_container_ids_differ() {
    let Some(fs) = Btrfs::new("remapped_layer") else {
        return;
    };
    let layers = Layers::new(&fs, "r", |b| {
        mkdirs(&b.join("etc"));
        write(&b.join("etc/passwd"), b"root:x:0:0\n");
        write(&b.join("home"), b"user file");
        lchown(&b.join("home"), 1000, 1000);
    });
    let shifted = IdMapping::new(
        &[IdMap {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        }],
        "t",
    )
    .unwrap();
    let none = IdMapping::default();
    let opts = RemapOptions {
        from_uids: &none,
        from_gids: &none,
        to_uids: &shifted,
        to_gids: &shifted,
        cross_subvolumes: false,
        method: Method::Auto,
        control: Control::NONE,
    };
    let outcome = remap_path(&layers.layer, &opts).unwrap();
    assert!(
        outcome.errors.is_empty() && outcome.changed == 4,
        "{outcome:?}"
    );
    // One real change in container ids: a file now owned by container uid 0.
    lchown(&layers.layer.join("home"), 100000, 101000);
    layers.freeze();
    let (old, new) = (open(&layers.old), open(&layers.new));

    // In host ids, every entry changed owner.
    let opts = Options::default();
    let host = changes_walk(new.as_fd(), Some(old.as_fd()), &layers.new, &opts).unwrap();
    assert_eq!(host.len(), 3, "{}", show(&host));
    assert_eq!(
        changes_send(new.as_fd(), old.as_fd(), &layers.new, &opts).unwrap(),
        host
    );

    // In container ids, only `home` did.
    let ids = ContainerIds {
        new: Arc::new((shifted.clone(), shifted.clone())),
        old: Arc::new((none.clone(), none.clone())),
    };
    let with_ids = Options {
        ids: Some(&ids),
        ..Options::default()
    };
    let expected = vec![ch("home", Modify)];
    assert_eq!(
        changes_walk(new.as_fd(), Some(old.as_fd()), &layers.new, &with_ids).unwrap(),
        expected
    );
    assert_eq!(
        changes_send(new.as_fd(), old.as_fd(), &layers.new, &with_ids).unwrap(),
        expected
    );
    drop((old, new));
    layers.delete();
}
