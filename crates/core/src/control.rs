//! How a caller stops a long call and hears how far it got: one value that every options
//! struct of a long call embeds, and that a call passes on to the parts it runs.

use crate::error::{Code, Error, Result};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// An abort flag and a progress callback, each optional. Two references: copy it freely.
#[derive(Clone, Copy, Default)]
pub struct Control<'a> {
    abort: Option<&'a AtomicBool>,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<'a> Control<'a> {
    /// Never aborted; progress goes nowhere.
    pub const NONE: Control<'static> = Control {
        abort: None,
        progress: None,
    };

    /// Stopped once `abort` is set (from any thread); progress reported to `progress`.
    pub fn new(abort: &'a AtomicBool, progress: &'a (dyn Fn(u64) + Sync)) -> Self {
        Control {
            abort: Some(abort),
            progress: Some(progress),
        }
    }

    /// Stopped once `abort` is set; progress goes nowhere.
    pub fn abort_on(abort: &'a AtomicBool) -> Self {
        Control {
            abort: Some(abort),
            progress: None,
        }
    }

    /// Whether the caller asked to stop.
    pub fn aborted(&self) -> bool {
        self.abort.is_some_and(|a| a.load(Ordering::Relaxed))
    }

    /// ABORT_ERR of operation `op` at `shown` (no path when empty) once the caller asked to stop.
    pub fn check(&self, op: &'static str, shown: &Path) -> Result<()> {
        if !self.aborted() {
            return Ok(());
        }
        Err(Error {
            code: Code::Aborted,
            syscall: "",
            op,
            path: (!shown.as_os_str().is_empty()).then(|| shown.to_path_buf()),
            message: "the operation was aborted".into(),
        })
    }

    /// Report `n`: what the call counts (bytes, inodes) so far.
    pub fn progress(&self, n: u64) {
        if let Some(report) = self.progress {
            report(n);
        }
    }
}

impl fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("abort", &self.abort)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn none_never_aborts_and_drops_progress() {
        let c = Control::NONE;
        assert!(!c.aborted());
        assert!(c.check("changes", Path::new("/x")).is_ok());
        c.progress(7);
    }

    #[test]
    fn check_gives_abort_err_once_the_flag_is_set() {
        let flag = AtomicBool::new(false);
        let c = Control::abort_on(&flag);
        assert!(c.check("remap", Path::new("/x")).is_ok());
        flag.store(true, Ordering::Relaxed);
        let e = c.check("remap", Path::new("/x")).unwrap_err();
        assert_eq!(e.code_str(), "ABORT_ERR");
        assert_eq!((e.syscall, e.op), ("", "remap"));
        assert_eq!(e.path.as_deref(), Some(Path::new("/x")));
        assert_eq!(e.message, "the operation was aborted");
        assert_eq!(c.check("", Path::new("")).unwrap_err().path, None);
    }

    #[test]
    fn progress_reaches_the_callback() {
        let (flag, seen) = (AtomicBool::new(false), AtomicU64::new(0));
        let report = |n: u64| seen.store(n, Ordering::Relaxed);
        Control::new(&flag, &report).progress(42);
        assert_eq!(seen.load(Ordering::Relaxed), 42);
    }
}
