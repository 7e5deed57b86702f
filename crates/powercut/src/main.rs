//! `powercut`: the power-cut simulator of the test suite (`__test__/powercut.spec.ts`). The
//! kernel here has no dm-log-writes, so the log is taken one level lower, at the loop device's
//! backing file, served over FUSE.
//!
//! - `serve MOUNTPOINT --base IMG --backing FILE --log LOG`: copy IMG to FILE and serve it as
//!   MOUNTPOINT/disk (back a loop device with it, `losetup --direct-io=on`), logging every
//!   write and flush to LOG, and every write to MOUNTPOINT/marks as a mark. Prints `ready`
//!   once mounted; runs until unmounted. Exit 3 if a write came from the page cache or could
//!   not be logged (the log would be wrong).
//! - `plan --log LOG --states N --seed S`: choose at most N crash states of the log; prints
//!   JSON: the marks (with their record numbers), counts, and the states.
//! - `build --base IMG --log LOG --plan PLAN --state ID --out FILE`: write the disk of state
//!   ID of the plan (as `plan` printed it) to FILE.

mod crash;
mod image;
mod log;
mod logfs;
mod rng;
#[cfg(test)]
mod testdir;

use crate::crash::CrashState;
use crate::log::{LogWriter, Record};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Plan {
    seed: u64,
    records: usize,
    writes: usize,
    flushes: usize,
    /// Bytes written in all.
    written: u64,
    marks: Vec<Mark>,
    /// Record numbers of the flushes.
    flush_records: Vec<usize>,
    /// Record numbers of the writes to the primary superblock (the commits).
    superblock_writes: Vec<usize>,
    states: Vec<CrashState>,
}

#[derive(Serialize, Deserialize)]
struct Mark {
    record: usize,
    text: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("plan") => plan(&args[1..]),
        Some("build") => build(&args[1..]),
        _ => Err("usage: powercut serve|plan|build ... (see the module doc)".into()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("powercut: {e}");
            ExitCode::from(2)
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// `--name value` options and positional arguments.
fn options(args: &[String]) -> Result<(HashMap<String, String>, Vec<String>)> {
    let mut named = HashMap::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let v = it.next().ok_or(format!("--{name} needs a value"))?;
            named.insert(name.to_string(), v.clone());
        } else {
            positional.push(a.clone());
        }
    }
    Ok((named, positional))
}

fn required<'a>(named: &'a HashMap<String, String>, name: &str) -> Result<&'a str> {
    named
        .get(name)
        .map(String::as_str)
        .ok_or(format!("--{name} is required"))
}

fn number<T: std::str::FromStr>(named: &HashMap<String, String>, name: &str) -> Result<T> {
    required(named, name)?
        .parse()
        .map_err(|_| format!("--{name} must be a number"))
}

fn serve(args: &[String]) -> Result<ExitCode> {
    let (named, positional) = options(args)?;
    let [mountpoint] = positional.as_slice() else {
        return Err("serve takes one mount point".into());
    };
    let backing_path = PathBuf::from(required(&named, "backing")?);
    image::copy_sparse(Path::new(required(&named, "base")?), &backing_path)
        .map_err(|e| format!("copying the base image: {e}"))?;
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&backing_path)
        .map_err(|e| format!("{}: {e}", backing_path.display()))?;
    let log_path = required(&named, "log")?;
    let log = Arc::new(Mutex::new(
        LogWriter::create(Path::new(log_path)).map_err(|e| format!("{log_path}: {e}"))?,
    ));
    let faults = Arc::new(logfs::Faults::default());
    let fs = logfs::LoggingFs::new(backing, log.clone(), faults.clone())
        .map_err(|e| format!("{}: {e}", backing_path.display()))?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("powercut".into()),
        fuser::MountOption::Subtype("powercut".into()),
    ];
    // One thread: the log's order is the order the requests were handled in.
    config.n_threads = Some(1);
    let session = fuser::Session::new(fs, Path::new(mountpoint), &config)
        .map_err(|e| format!("mounting on {mountpoint}: {e}"))?;
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    session.run().map_err(|e| format!("serving: {e}"))?;
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .finish()
        .map_err(|e| format!("{log_path}: {e}"))?;
    let cached = faults.cached_writes.load(Ordering::Relaxed);
    let errors = faults.io_errors.load(Ordering::Relaxed);
    if cached > 0 || errors > 0 {
        eprintln!(
            "powercut: {cached} writes came from the page cache and {errors} could not be logged or stored: the log is wrong"
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(args: &[String]) -> Result<ExitCode> {
    let (named, _) = options(args)?;
    let log_path = required(&named, "log")?;
    let records = log::read(Path::new(log_path)).map_err(|e| format!("{log_path}: {e}"))?;
    let seed: u64 = number(&named, "seed")?;
    let states = crash::plan(
        &records,
        &crash::Options {
            states: number(&named, "states")?,
            seed,
        },
    );
    let plan = Plan {
        seed,
        records: records.len(),
        writes: records.iter().filter(|r| r.is_write()).count(),
        flushes: records.iter().filter(|r| **r == Record::Flush).count(),
        written: records
            .iter()
            .map(|r| match r {
                Record::Write { len, .. } => u64::from(*len),
                _ => 0,
            })
            .sum(),
        marks: records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Record::Mark(text) => Some(Mark {
                    record: i,
                    text: text.clone(),
                }),
                _ => None,
            })
            .collect(),
        flush_records: (0..records.len())
            .filter(|&i| records[i] == Record::Flush)
            .collect(),
        superblock_writes: (0..records.len())
            .filter(|&i| crash::writes_superblock(&records[i]))
            .collect(),
        states,
    };
    println!(
        "{}",
        serde_json::to_string(&plan).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

fn build(args: &[String]) -> Result<ExitCode> {
    let (named, _) = options(args)?;
    let log_path = required(&named, "log")?;
    let plan_path = required(&named, "plan")?;
    let plan: Plan =
        serde_json::from_slice(&std::fs::read(plan_path).map_err(|e| format!("{plan_path}: {e}"))?)
            .map_err(|e| format!("{plan_path}: {e}"))?;
    let id: usize = number(&named, "state")?;
    let state = plan
        .states
        .iter()
        .find(|s| s.id == id)
        .ok_or(format!("no state {id} in {plan_path}"))?;
    let records = log::read(Path::new(log_path)).map_err(|e| format!("{log_path}: {e}"))?;
    if records.len() != plan.records {
        return Err(format!("{plan_path} was not made from {log_path}"));
    }
    image::build(
        Path::new(required(&named, "base")?),
        Path::new(log_path),
        &records,
        state,
        Path::new(required(&named, "out")?),
    )
    .map_err(|e| format!("building state {id}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
