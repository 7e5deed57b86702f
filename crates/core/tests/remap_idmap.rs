//! IdMapping: validation (EINVAL for empty, overflowing or overlapping ranges, on either side)
//! and lookups both ways, at every range edge, against a linear-scan oracle.

use btrfs_layers_core::idmap::{IdMap, IdMapping};
use btrfs_layers_core::Code;
use nix::errno::Errno;

fn m(c: u32, h: u32, s: u32) -> IdMap {
    IdMap {
        container_id: c,
        host_id: h,
        size: s,
    }
}

fn einval(maps: &[IdMap], why: &str) {
    match IdMapping::new(maps, "uidMaps") {
        Ok(_) => panic!("{why}: {maps:?} accepted"),
        Err(e) => {
            assert_eq!(e.code, Code::Errno(Errno::EINVAL), "{why}: {e:?}");
            assert_eq!(e.code_str(), "EINVAL");
            assert!(
                e.message.contains("uidMaps"),
                "{why}: the message names the option: {}",
                e.message
            );
        }
    }
}

fn ok(maps: &[IdMap]) -> IdMapping {
    IdMapping::new(maps, "uidMaps").unwrap_or_else(|e| panic!("{maps:?} rejected: {e:?}"))
}

#[test]
fn rejects_empty_ranges() {
    einval(&[m(0, 100000, 0)], "size 0");
    einval(
        &[m(0, 100000, 10), m(10, 100010, 0)],
        "size 0 after a good range",
    );
    einval(&[m(5, 5, 0)], "size 0 even where the ids are fine");
}

#[test]
fn rejects_ranges_past_u32_max() {
    einval(&[m(0, u32::MAX, 2)], "host side overflows by one");
    einval(&[m(u32::MAX, 0, 2)], "container side overflows by one");
    einval(&[m(2, 0, u32::MAX)], "container 2 + 2^32-1");
    einval(&[m(0, 2, u32::MAX)], "host 2 + 2^32-1");
    einval(&[m(u32::MAX, u32::MAX, u32::MAX)], "both sides");
    // 2^32-1 is (uid_t)-1, chown's "no change": not an id on either side.
    einval(&[m(0, u32::MAX, 1)], "host 2^32-1");
    einval(&[m(u32::MAX, 0, 1)], "container 2^32-1");
    einval(&[m(1, 0, u32::MAX)], "container range reaching 2^32-1");
    // The last id, 2^32-2, is fine.
    ok(&[m(0, u32::MAX - 1, 1)]);
    ok(&[m(u32::MAX - 1, 0, 1)]);
    ok(&[m(1, 0, u32::MAX - 1)]);
    ok(&[m(0, 1, u32::MAX - 1)]);
}

#[test]
fn rejects_overlapping_container_ranges() {
    einval(&[m(0, 100000, 10), m(9, 200000, 10)], "one id shared");
    einval(&[m(0, 100000, 10), m(0, 200000, 10)], "same start");
    einval(&[m(0, 100000, 100), m(10, 200000, 5)], "nested");
    einval(
        &[m(10, 200000, 5), m(0, 100000, 100)],
        "nested, given in reverse",
    );
    einval(
        &[m(50, 300000, 10), m(0, 100000, 10), m(5, 200000, 10)],
        "unsorted input",
    );
    ok(&[m(0, 100000, 10), m(10, 200000, 10)]);
}

#[test]
fn rejects_overlapping_host_ranges() {
    einval(
        &[m(0, 100000, 10), m(100, 100009, 10)],
        "one host id shared",
    );
    einval(&[m(0, 100000, 10), m(100, 100000, 1)], "same start");
    einval(
        &[m(100, 100005, 1), m(0, 100000, 10)],
        "nested, given in reverse",
    );
    ok(&[m(0, 100000, 10), m(100, 100010, 10)]);
    // Adjacent on both sides: one range split in two.
    ok(&[m(0, 100000, 10), m(10, 100010, 10)]);
}

#[test]
fn identity_maps_every_id_to_itself() {
    let id = ok(&[]);
    assert!(id.is_identity());
    for x in [0, 1, 1000, 65535, 65536, u32::MAX - 1, u32::MAX] {
        assert_eq!(id.to_host(x).unwrap(), x);
        assert_eq!(id.to_container(x).unwrap(), x);
    }
}

#[test]
fn lookups_both_ways_at_every_edge() {
    // Given out of order on purpose.
    let map = ok(&[
        m(1000, 200000, 10),
        m(0, 100000, 1000),
        m(5000, 50, 1),
        m(u32::MAX - 5, 300000, 5),
    ]);
    let cases = [
        (0, Some(100000)),
        (1, Some(100001)),
        (999, Some(100999)),
        (1000, Some(200000)),
        (1009, Some(200009)),
        (1010, None),
        (4999, None),
        (5000, Some(50)),
        (5001, None),
        (u32::MAX - 6, None),
        (u32::MAX - 5, Some(300000)),
        (u32::MAX - 1, Some(300004)),
        (u32::MAX, None),
    ];
    for (c, h) in cases {
        match h {
            Some(h) => {
                assert_eq!(map.to_host(c).unwrap(), h, "to_host({c})");
                assert_eq!(map.to_container(h).unwrap(), c, "to_container({h})");
            }
            None => {
                let e = map.to_host(c).unwrap_err();
                assert_eq!(e.code, Code::IdMapping, "to_host({c})");
                assert_eq!(e.code_str(), "ERR_ID_MAPPING");
                assert!(
                    e.message.contains(&c.to_string()),
                    "the message names the id: {}",
                    e.message
                );
            }
        }
    }
    for h in [
        0,
        49,
        51,
        99999,
        101000,
        199999,
        200010,
        299999,
        300005,
        u32::MAX,
    ] {
        assert_eq!(
            map.to_container(h).unwrap_err().code,
            Code::IdMapping,
            "to_container({h})"
        );
    }
}

#[test]
fn lookups_agree_with_a_linear_scan_over_many_ranges() {
    // 1,000 ranges of varying sizes with gaps, host side in reverse order.
    let mut maps = Vec::new();
    let mut c = 7u32;
    for i in 0..1000u32 {
        let size = 1 + (i * 37) % 50;
        maps.push(m(c, 4_000_000_000 - (i + 1) * 100, size));
        c += size + (i % 3);
    }
    let map = ok(&maps);
    let scan_host = |id: u32| {
        maps.iter()
            .find(|r| id >= r.container_id && id - r.container_id < r.size)
            .map(|r| r.host_id + (id - r.container_id))
    };
    let scan_cont = |id: u32| {
        maps.iter()
            .find(|r| id >= r.host_id && id - r.host_id < r.size)
            .map(|r| r.container_id + (id - r.host_id))
    };
    for id in 0..c + 10 {
        assert_eq!(map.to_host(id).ok(), scan_host(id), "to_host({id})");
    }
    for r in &maps {
        for h in [
            r.host_id.wrapping_sub(1),
            r.host_id,
            r.host_id + r.size - 1,
            r.host_id + r.size,
        ] {
            assert_eq!(map.to_container(h).ok(), scan_cont(h), "to_container({h})");
        }
    }
}

#[test]
fn ranges_come_back_sorted_and_equal_mappings_compare_equal() {
    let a = ok(&[m(10, 200, 5), m(0, 100, 5)]);
    let b = ok(&[m(0, 100, 5), m(10, 200, 5)]);
    assert_eq!(a.ranges(), &[m(0, 100, 5), m(10, 200, 5)]);
    assert_eq!(a, b);
}
