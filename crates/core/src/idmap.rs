//! User-namespace id maps: container id ranges shifted onto host id ranges.

use crate::error::{Code, Error, Result};
use nix::errno::Errno;
use std::path::Path;

/// One range: container ids `[container_id, container_id + size)` map to host ids
/// `[host_id, host_id + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// A validated set of ranges, with lookups in both directions by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMapping {
    /// Sorted by container id.
    by_container: Vec<IdMap>,
    /// Sorted by host id.
    by_host: Vec<IdMap>,
}

impl IdMapping {
    /// Validate: no empty range, no range past 2^32-1, no overlap on either side. EINVAL otherwise.
    pub fn new(maps: &[IdMap], what: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::invalid(
                Errno::EINVAL,
                "idmap",
                Path::new(""),
                format!("{what}: {why}"),
            )
        };
        for m in maps {
            if m.size == 0 {
                return Err(bad(format!("range {m:?} is empty")));
            }
            // 4294967295 is (uid_t)-1, "no change" to chown: never an id.
            let last = |start: u32| start as u64 + m.size as u64 - 1;
            if last(m.container_id) >= u32::MAX as u64 || last(m.host_id) >= u32::MAX as u64 {
                return Err(bad(format!("range {m:?} runs past 4294967294")));
            }
        }
        let mut by_container = maps.to_vec();
        by_container.sort_by_key(|m| m.container_id);
        let mut by_host = maps.to_vec();
        by_host.sort_by_key(|m| m.host_id);
        for w in by_container.windows(2) {
            if w[0].container_id as u64 + w[0].size as u64 > w[1].container_id as u64 {
                return Err(bad(format!(
                    "container ranges {:?} and {:?} overlap",
                    w[0], w[1]
                )));
            }
        }
        for w in by_host.windows(2) {
            if w[0].host_id as u64 + w[0].size as u64 > w[1].host_id as u64 {
                return Err(bad(format!(
                    "host ranges {:?} and {:?} overlap",
                    w[0], w[1]
                )));
            }
        }
        Ok(IdMapping {
            by_container,
            by_host,
        })
    }

    /// No ranges: ids are not remapped.
    pub fn is_identity(&self) -> bool {
        self.by_container.is_empty()
    }

    pub fn ranges(&self) -> &[IdMap] {
        &self.by_container
    }

    /// The host id of container id `id`; ERR_ID_MAPPING when no range holds it.
    pub fn to_host(&self, id: u32) -> Result<u32> {
        if self.is_identity() {
            return Ok(id);
        }
        lookup(&self.by_container, id, |m| m.container_id, |m| m.host_id)
            .ok_or_else(|| unmapped(id, "container"))
    }

    /// The host id of the id `id` a layer (a tar header, a send stream) gives its entry at
    /// `shown`: ERR_BAD_LAYER of operation `op` when it is no u32 or the top id (-1 to chown,
    /// no id at all), ERR_ID_MAPPING when no range holds it.
    pub fn layer_to_host(&self, id: u64, op: &'static str, shown: &Path) -> Result<u32> {
        let id = u32::try_from(id)
            .ok()
            .filter(|&i| i != u32::MAX)
            .ok_or_else(|| Error::bad_layer(op, shown, format!("id {id} is out of range")))?;
        self.to_host(id).map_err(|e| Error {
            path: Some(shown.to_path_buf()),
            ..e
        })
    }

    /// The container id of host id `id`; ERR_ID_MAPPING when no range holds it.
    pub fn to_container(&self, id: u32) -> Result<u32> {
        if self.is_identity() {
            return Ok(id);
        }
        lookup(&self.by_host, id, |m| m.host_id, |m| m.container_id)
            .ok_or_else(|| unmapped(id, "host"))
    }
}

fn lookup(
    sorted: &[IdMap],
    id: u32,
    from: impl Fn(&IdMap) -> u32,
    to: impl Fn(&IdMap) -> u32,
) -> Option<u32> {
    // The last range starting at or below id is the only one that can hold it.
    let i = sorted.partition_point(|m| from(m) <= id).checked_sub(1)?;
    let m = &sorted[i];
    let off = id - from(m);
    (off < m.size).then(|| to(m) + off)
}

fn unmapped(id: u32, side: &str) -> Error {
    Error {
        code: Code::IdMapping,
        syscall: "",
        op: "idmap",
        path: None,
        message: format!("{side} id {id} is outside the id maps"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap {
            container_id: c,
            host_id: h,
            size: s,
        }
    }

    #[test]
    fn maps_both_ways() {
        let map = IdMapping::new(&[m(1000, 200000, 10), m(0, 100000, 1000)], "uid").unwrap();
        assert_eq!(map.to_host(0).unwrap(), 100000);
        assert_eq!(map.to_host(999).unwrap(), 100999);
        assert_eq!(map.to_host(1005).unwrap(), 200005);
        assert_eq!(map.to_host(1010).unwrap_err().code, Code::IdMapping);
        assert_eq!(map.to_container(100500).unwrap(), 500);
        assert_eq!(map.to_container(200009).unwrap(), 1009);
        assert_eq!(map.to_container(99999).unwrap_err().code, Code::IdMapping);
        assert_eq!(IdMapping::default().to_host(7).unwrap(), 7);
    }

    #[test]
    fn rejects_overlap_overflow_and_empty() {
        assert!(IdMapping::new(&[m(0, 100, 10), m(5, 1000, 10)], "uid").is_err());
        assert!(IdMapping::new(&[m(0, 100, 10), m(100, 105, 10)], "uid").is_err());
        assert!(IdMapping::new(&[m(0, u32::MAX, 2)], "uid").is_err());
        assert!(IdMapping::new(&[m(0, 0, 0)], "uid").is_err());
        assert!(IdMapping::new(&[m(0, u32::MAX, 1)], "uid").is_err());
        assert!(IdMapping::new(&[m(0, u32::MAX - 1, 1)], "uid").is_ok());
        assert!(IdMapping::new(&[m(0, 100, 10), m(10, 110, 10)], "uid").is_ok());
    }
}
