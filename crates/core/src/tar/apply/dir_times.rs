//! Directory times, set after every entry is in (adding an entry changes its directory's
//! mtime), deepest first.

use crate::error::Result;
use crate::open::open_beneath;
use nix::errno::Errno;
use std::collections::HashMap;
use std::os::fd::AsFd;

use super::attrs::Times;
use super::name::{shown, split};
use super::parents::{InodeId, LayerDir, Parents};
use crate::error::Context;
use nix::sys::stat::fstat;
use nix::sys::time::TimeSpec;

#[derive(Default)]
pub(super) struct DirTimes {
    /// By layer path (empty: the root); a later entry for the same directory wins.
    pending: HashMap<Box<[u8]>, Times>,
    /// Directories whose entries this stream changed, with the times they had before: put
    /// back unless the stream sets them, so applying a layer changes no time it does not carry.
    touched: HashMap<InodeId, (Box<[u8]>, Times)>,
}

impl DirTimes {
    pub fn record(&mut self, path: &[u8], times: Times) {
        self.pending.insert(path.into(), times);
    }

    /// Note the times of directory `dir` (at layer path `path`) before the stream first changes
    /// one of its entries.
    pub fn touch(&mut self, path: &[u8], dir: &LayerDir) -> Result<()> {
        if self.touched.contains_key(&dir.id) {
            return Ok(());
        }
        let st = fstat(dir.fd.as_fd()).at("fstat", shown(path))?;
        let times = Times {
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        };
        self.touched.insert(dir.id, (path.into(), times));
        Ok(())
    }

    /// Set every recorded directory's times, children before parents. A directory a later
    /// entry replaced or a whiteout removed is skipped.
    pub fn apply(mut self, parents: &mut Parents) -> Result<()> {
        for (id, (path, times)) in std::mem::take(&mut self.touched) {
            // Only where the directory is still the one we saw; the stream's own times win.
            if !self.pending.contains_key(&path)
                && parents.open(&path, false).is_ok_and(|d| d.id == id)
            {
                self.pending.insert(path, times);
            }
        }
        let mut pending: Vec<_> = self.pending.into_iter().collect();
        pending.sort_unstable_by_key(|(path, _)| std::cmp::Reverse(depth(path)));
        for (path, times) in pending {
            if path.is_empty() {
                times.set_on_fd(parents.root(), shown(&path))?;
                continue;
            }
            let (dir_path, name) = split(&path);
            let opened = parents
                .open(dir_path, false)
                .and_then(|dir| open_beneath(dir.fd.as_fd(), shown(name), shown(&path)));
            match opened {
                Ok(fd) => times.set_on_fd(fd.as_fd(), shown(&path))?,
                Err(e)
                    if [Errno::ENOENT, Errno::ENOTDIR, Errno::ELOOP]
                        .iter()
                        .any(|&n| e.is(n)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|&&b| b == b'/').count()
    }
}
