//! Crash states: what a disk holds after a power cut, chosen from the write log.
//!
//! A disk with a volatile write cache keeps every write that a completed flush covered, and may
//! lose or reorder the writes after the last flush; it persists a write in whole sectors, so a
//! large write can also be torn. A crash state is therefore: the base image, every write before
//! some flush (the durable prefix), and any subset of the writes received after that flush and
//! before the cut, each whole (`reordered`) or in 4 KiB pieces (`torn`).
//!
//! The budget goes first to the prefixes that end with a new superblock (a transaction or log
//! commit): btrfs never overwrites what the last superblock references, so a prefix without a
//! superblock write since the one before mounts as that one did. Random subsets are drawn from
//! the segments that hold a superblock write, where a lost write can matter, and sometimes from
//! any other.
//!
//! A write logged before a flush counts as covered by it. The logger answers in log order, so
//! such a write had completed before the flush was handled, though it may have been issued
//! after the flush was: its loss at that flush is only drawn among the subsets of the segment
//! before it, not combined with the writes after it.

use crate::log::Record;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The primary btrfs superblock: 4 KiB at 64 KiB.
pub const SUPERBLOCK: (u64, u64) = (64 << 10, 68 << 10);
/// The unit a disk writes atomically.
pub const SECTOR: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Exactly the writes before a flush.
    Prefix,
    /// A flushed prefix plus whole writes from after it, any subset.
    Reordered,
    /// A flushed prefix plus 4 KiB pieces of writes from after it, any subset.
    Torn,
}

/// Bytes `start..end` of the data of the write at `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Piece {
    pub record: usize,
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashState {
    pub id: usize,
    pub kind: Kind,
    /// Records `0..durable` reached the disk whole: 0 (the base image), just after a flush, or
    /// every record (no cut).
    pub durable: usize,
    /// Flushes among them.
    pub flushes: usize,
    /// The power went before record `cut` was received: the marks before it had been written.
    pub cut: usize,
    /// Parts of the writes in `durable..cut` that reached the disk anyway, in log order.
    pub pieces: Vec<Piece>,
    /// Whether the disk holds a superblock written after the previous flush.
    pub commit: bool,
    /// What the state is, for people.
    pub label: String,
}

pub struct Options {
    /// How many states at most.
    pub states: usize,
    pub seed: u64,
}

/// Records between two flushes: `start..end`, where `end` is the closing flush (or the end of
/// the log for the unflushed tail).
struct Segment {
    start: usize,
    end: usize,
    /// Flushes before `start`.
    flushes: usize,
    writes: Vec<usize>,
    superblock: bool,
}

fn segments(records: &[Record]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut seg = Segment {
        start: 0,
        end: 0,
        flushes: 0,
        writes: Vec::new(),
        superblock: false,
    };
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Write { offset, len, .. } => {
                seg.writes.push(i);
                seg.superblock |= overlaps(*offset, *len, SUPERBLOCK);
            }
            Record::Flush => {
                seg.end = i;
                let flushes = seg.flushes + 1;
                out.push(std::mem::replace(
                    &mut seg,
                    Segment {
                        start: i + 1,
                        end: 0,
                        flushes,
                        writes: Vec::new(),
                        superblock: false,
                    },
                ));
            }
            Record::Mark(_) => {}
        }
    }
    seg.end = records.len();
    out.push(seg);
    out
}

/// Whether `r` writes (part of) the primary superblock.
pub fn writes_superblock(r: &Record) -> bool {
    matches!(r, Record::Write { offset, len, .. } if overlaps(*offset, *len, SUPERBLOCK))
}

fn overlaps(offset: u64, len: u32, (start, end): (u64, u64)) -> bool {
    offset < end && offset + u64::from(len) > start
}

/// The first write at or after `from`, else the end of the log: a cut there loses nothing more.
fn next_write(records: &[Record], from: usize) -> usize {
    (from..records.len())
        .find(|&i| records[i].is_write())
        .unwrap_or(records.len())
}

/// Choose at most `o.states` crash states of the log, in log order.
pub fn plan(records: &[Record], o: &Options) -> Vec<CrashState> {
    if o.states == 0 {
        return Vec::new();
    }
    let segs = segments(records);
    let total_flushes = segs.len() - 1;
    let mut rng = Rng::new(o.seed);

    // Prefixes: the base, then one after each flush, then (if writes follow the last flush)
    // every write.
    let mut prefixes: Vec<CrashState> = Vec::new();
    let prefix = |durable: usize, flushes: usize, commit: bool, label: String| CrashState {
        id: 0,
        kind: Kind::Prefix,
        durable,
        flushes,
        cut: next_write(records, durable),
        pieces: Vec::new(),
        commit,
        label,
    };
    prefixes.push(prefix(0, 0, true, "the base image".into()));
    for s in &segs[..total_flushes] {
        let durable = s.end + 1;
        let k = s.flushes + 1;
        prefixes.push(prefix(
            durable,
            k,
            s.superblock,
            format!(
                "every write through flush {k} of {total_flushes} (record {}){}",
                s.end,
                if s.superblock { ", a commit" } else { "" }
            ),
        ));
    }
    let tail = &segs[total_flushes];
    if !tail.writes.is_empty() {
        prefixes.push(prefix(
            records.len(),
            total_flushes,
            tail.superblock,
            "every write (no cut)".into(),
        ));
    }

    let budget = (o.states * 2 / 3).max(1);
    let (commits, others): (Vec<CrashState>, Vec<CrashState>) =
        prefixes.into_iter().partition(|p| p.commit);
    let mut chosen = if commits.len() > budget {
        sample(commits, budget, &mut rng)
    } else {
        let room = budget - commits.len();
        let mut c = commits;
        c.extend(sample(others, room, &mut rng));
        c
    };

    // Random subsets of the unflushed writes of a segment.
    let eligible: Vec<&Segment> = segs.iter().filter(|s| !s.writes.is_empty()).collect();
    let with_super: Vec<&Segment> = eligible.iter().copied().filter(|s| s.superblock).collect();
    // The same disk twice is checked once: a small log has few distinct subsets.
    let same = |s: &CrashState| (s.durable, s.cut, s.pieces.clone());
    let mut seen: HashSet<_> = chosen.iter().map(same).collect();
    let mut draws = 0;
    while chosen.len() < o.states && !eligible.is_empty() && draws < 20 * o.states {
        let seg = if !with_super.is_empty() && rng.below(4) != 0 {
            with_super[rng.below(with_super.len())]
        } else {
            eligible[rng.below(eligible.len())]
        };
        let kind = if draws % 2 == 0 {
            Kind::Reordered
        } else {
            Kind::Torn
        };
        draws += 1;
        let s = subset(records, seg, kind, &mut rng);
        if seen.insert(same(&s)) {
            chosen.push(s);
        }
    }

    chosen.sort_by_key(|s| (s.durable, s.cut, s.kind != Kind::Prefix));
    for (i, s) in chosen.iter_mut().enumerate() {
        s.id = i;
    }
    chosen
}

/// `k` of `items` picked at random, in their order.
fn sample<T>(items: Vec<T>, k: usize, rng: &mut Rng) -> Vec<T> {
    if items.len() <= k {
        return items;
    }
    let mut keep = vec![false; items.len()];
    let mut left = k;
    while left > 0 {
        let i = rng.below(items.len());
        if !keep[i] {
            keep[i] = true;
            left -= 1;
        }
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(x, k)| k.then_some(x))
        .collect()
}

/// A crash in `seg`: its first writes were received, and some of them (or of their sectors)
/// reached the disk.
fn subset(records: &[Record], seg: &Segment, kind: Kind, rng: &mut Rng) -> CrashState {
    let received = 1 + rng.below(seg.writes.len());
    let cut = if received == seg.writes.len() {
        seg.end
    } else {
        seg.writes[received]
    };
    let writes = &seg.writes[..received];
    let whole = |i: usize| {
        let Record::Write { len, .. } = records[i] else {
            unreachable!("segments hold only writes")
        };
        Piece {
            record: i,
            start: 0,
            end: len,
        }
    };
    let mut pieces: Vec<Piece> = Vec::new();
    match kind {
        Kind::Torn => {
            let mut torn_any = false;
            for &i in writes {
                if !rng.coin() {
                    continue;
                }
                let parts = sectors(records, i);
                let kept: Vec<Piece> = parts.iter().copied().filter(|_| rng.coin()).collect();
                torn_any |= !kept.is_empty() && kept.len() < parts.len();
                pieces.extend(kept);
            }
            // Make sure one write really is torn, when one spans more than a sector.
            let multi: Vec<usize> = writes
                .iter()
                .copied()
                .filter(|&i| sectors(records, i).len() > 1)
                .collect();
            if !torn_any && !multi.is_empty() {
                let i = multi[rng.below(multi.len())];
                pieces.retain(|p| p.record != i);
                let parts = sectors(records, i);
                let drop = rng.below(parts.len());
                let mut kept: Vec<Piece> = parts
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != drop && rng.coin())
                    .map(|(_, p)| *p)
                    .collect();
                if kept.is_empty() {
                    kept.push(parts[(drop + 1) % parts.len()]);
                }
                pieces.extend(kept);
            }
        }
        _ => {
            for &i in writes {
                if rng.coin() {
                    pieces.push(whole(i));
                }
            }
        }
    }
    if pieces.is_empty() {
        pieces.push(whole(writes[rng.below(writes.len())]));
    }
    pieces.sort_by_key(|p| (p.record, p.start));
    let commit = pieces.iter().any(|p| {
        let Record::Write { offset, .. } = records[p.record] else {
            return false;
        };
        overlaps(offset + u64::from(p.start), p.end - p.start, SUPERBLOCK)
    });
    let kept_writes = {
        let mut r: Vec<usize> = pieces.iter().map(|p| p.record).collect();
        r.dedup();
        r.len()
    };
    let base = if seg.flushes == 0 {
        "the base image".to_string()
    } else {
        format!(
            "every write through flush {} (record {})",
            seg.flushes,
            seg.start - 1
        )
    };
    let label = format!(
        "{base}, then {}{} of the {} writes after it{}{}, cut before record {}",
        if kind == Kind::Torn {
            format!("{} pieces of ", pieces.len())
        } else {
            String::new()
        },
        kept_writes,
        received,
        if kind == Kind::Torn {
            ", torn at 4 KiB"
        } else {
            ", in any order"
        },
        if commit {
            ", a new superblock among them"
        } else {
            ""
        },
        cut
    );
    CrashState {
        id: 0,
        kind,
        durable: seg.start,
        flushes: seg.flushes,
        cut,
        pieces,
        commit,
        label,
    }
}

/// The write at `record` split at sector boundaries of the disk.
fn sectors(records: &[Record], record: usize) -> Vec<Piece> {
    let Record::Write { offset, len, .. } = records[record] else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = 0u32;
    while start < len {
        let at = offset + u64::from(start);
        let next_boundary = (at / SECTOR + 1) * SECTOR;
        let end = (next_boundary - offset).min(u64::from(len)) as u32;
        out.push(Piece { record, start, end });
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: u64, len: u32) -> Record {
        Record::Write { offset, len, at: 0 }
    }

    /// A log with commits (superblock writes), marks, and unflushed writes at the end.
    fn sample_log() -> Vec<Record> {
        let sb = SUPERBLOCK.0;
        vec![
            Record::Mark("begin a".into()),
            w(1 << 20, 16384),
            w(2 << 20, 4096),
            Record::Flush,
            w(sb, 4096),
            Record::Flush,
            Record::Mark("end a".into()),
            Record::Mark("begin b".into()),
            w(3 << 20, 8192),
            w((4 << 20) + 512, 12288),
            Record::Flush,
            w(5 << 20, 4096),
            w(sb, 4096),
            Record::Flush,
            Record::Mark("end b".into()),
            w(6 << 20, 32768),
            w(7 << 20, 4096),
            w(sb, 4096),
        ]
    }

    fn plan_of(records: &[Record], states: usize, seed: u64) -> Vec<CrashState> {
        plan(records, &Options { states, seed })
    }

    fn last_flush_before(records: &[Record], i: usize) -> Option<usize> {
        (0..i).rev().find(|&j| records[j] == Record::Flush)
    }

    #[test]
    fn prefixes_end_at_flushes() {
        let log = sample_log();
        let states = plan_of(&log, 100, 1);
        let prefixes: Vec<&CrashState> = states.iter().filter(|s| s.kind == Kind::Prefix).collect();
        // The base, four flushes and the unflushed end: all fit in the budget.
        assert_eq!(
            prefixes.iter().map(|s| s.durable).collect::<Vec<_>>(),
            vec![0, 4, 6, 11, 14, log.len()]
        );
        for s in &prefixes {
            assert!(s.pieces.is_empty());
            assert!(
                s.durable == 0 || s.durable == log.len() || log[s.durable - 1] == Record::Flush,
                "{s:?}"
            );
            let flushes = log[..s.durable]
                .iter()
                .filter(|r| **r == Record::Flush)
                .count();
            assert_eq!(s.flushes, flushes);
        }
        // The cut runs on to the next write: the marks right after a flush count as written.
        let after_a = prefixes.iter().find(|s| s.durable == 6).unwrap();
        assert_eq!(after_a.cut, 8);
        assert!(after_a.commit);
        assert!(!prefixes.iter().find(|s| s.durable == 4).unwrap().commit);
    }

    #[test]
    fn commit_prefixes_come_first_within_the_budget() {
        let log = sample_log();
        // 3 states: a budget of 2 prefixes, both taken by commits (the base counts as one).
        let states = plan_of(&log, 3, 7);
        let prefixes: Vec<&CrashState> = states.iter().filter(|s| s.kind == Kind::Prefix).collect();
        assert_eq!(prefixes.len(), 2);
        assert!(prefixes.iter().all(|s| s.commit));
        assert_eq!(states.len(), 3);
    }

    #[test]
    fn subsets_take_only_writes_after_the_last_flush_before_the_cut() {
        let log = sample_log();
        for seed in 0..200 {
            for s in plan_of(&log, 30, seed) {
                if s.kind == Kind::Prefix {
                    continue;
                }
                assert!(!s.pieces.is_empty(), "{s:?}");
                assert!(s.durable == 0 || log[s.durable - 1] == Record::Flush);
                assert!(s.cut > s.durable);
                assert!(
                    log[s.durable..s.cut].iter().all(|r| *r != Record::Flush),
                    "a flush inside the unflushed part: {s:?}"
                );
                assert_eq!(
                    last_flush_before(&log, s.cut).map_or(0, |f| f + 1),
                    s.durable
                );
                for p in &s.pieces {
                    assert!((s.durable..s.cut).contains(&p.record), "{p:?} of {s:?}");
                    assert!(log[p.record].is_write());
                }
                assert!(s
                    .pieces
                    .windows(2)
                    .all(|w| (w[0].record, w[0].start) < (w[1].record, w[1].start)));
            }
        }
    }

    #[test]
    fn torn_pieces_are_whole_sectors_of_the_disk() {
        let log = sample_log();
        let mut seen_torn = 0;
        for seed in 0..200 {
            for s in plan_of(&log, 30, seed) {
                if s.kind != Kind::Torn {
                    continue;
                }
                for p in &s.pieces {
                    let Record::Write { offset, len, .. } = log[p.record] else {
                        unreachable!()
                    };
                    assert!(p.start < p.end && p.end <= len);
                    let (a, b) = (offset + u64::from(p.start), offset + u64::from(p.end));
                    assert!(p.start == 0 || a % SECTOR == 0, "{p:?}");
                    assert!(p.end == len || b % SECTOR == 0, "{p:?}");
                    assert!(b - a <= SECTOR);
                }
                // When a received write spans sectors, one is kept only in part.
                let received: Vec<usize> = (s.durable..s.cut)
                    .filter(|&i| sectors(&log, i).len() > 1)
                    .collect();
                if !received.is_empty() {
                    let partial = received.iter().any(|&i| {
                        let n = s.pieces.iter().filter(|p| p.record == i).count();
                        n > 0 && n < sectors(&log, i).len()
                    });
                    assert!(partial, "nothing torn: {s:?}");
                    seen_torn += 1;
                }
            }
        }
        assert!(seen_torn > 50);
    }

    #[test]
    fn no_disk_is_chosen_twice() {
        let log = sample_log();
        for seed in 0..50 {
            let states = plan_of(&log, 60, seed);
            let mut disks: Vec<_> = states
                .iter()
                .map(|s| (s.durable, s.cut, s.pieces.clone()))
                .collect();
            let n = disks.len();
            disks.sort_by_key(|d| {
                (
                    d.0,
                    d.1,
                    d.2.iter()
                        .map(|p| (p.record, p.start, p.end))
                        .collect::<Vec<_>>(),
                )
            });
            disks.dedup();
            assert_eq!(disks.len(), n);
        }
    }

    #[test]
    fn an_unaligned_write_splits_at_disk_sector_boundaries() {
        let log = vec![w(4096 + 512, 12288)];
        let p = sectors(&log, 0);
        assert_eq!(
            p.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(),
            vec![(0, 3584), (3584, 7680), (7680, 11776), (11776, 12288)]
        );
    }

    #[test]
    fn the_same_seed_chooses_the_same_states() {
        let log = sample_log();
        assert_eq!(plan_of(&log, 12, 99), plan_of(&log, 12, 99));
        assert_ne!(
            (0..20).map(|s| plan_of(&log, 12, s)).collect::<Vec<_>>(),
            vec![plan_of(&log, 12, 0); 20]
        );
        assert!(plan_of(&log, 0, 1).is_empty());
        let ids: Vec<usize> = plan_of(&log, 12, 5).iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..ids.len()).collect::<Vec<_>>());
    }

    #[test]
    fn random_subsets_favour_segments_with_a_superblock() {
        let log = sample_log();
        let mut with_super = 0;
        let mut total = 0;
        for seed in 0..100 {
            for s in plan_of(&log, 30, seed) {
                if s.kind == Kind::Prefix {
                    continue;
                }
                total += 1;
                if log[s.durable..]
                    .iter()
                    .take_while(|r| **r != Record::Flush)
                    .any(|r| matches!(r, Record::Write { offset, len, .. } if overlaps(*offset, *len, SUPERBLOCK)))
                {
                    with_super += 1;
                }
            }
        }
        assert!(with_super * 2 > total, "{with_super} of {total}");
    }
}
