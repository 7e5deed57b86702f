//! The inflate overlapped with the apply: the calling thread reads and decompresses the input
//! while a scoped thread parses the tar and writes the files, fed through a few reused blocks.
//!
//! The calling thread keeps the input, so nothing has to join a thread blocked reading a
//! stalled input: when the parser stops (an error, an abort), it drops its ends of the
//! channels and the reading side stops at its next hand-over.

use super::meter::Meter;
use crate::error::{Error, Result};
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Decompressed bytes handed over at a time (at most: one read of the decompressor each).
const BLOCK: usize = 256 << 10;
/// Blocks in flight or in use: the memory between the two threads is flat.
const BLOCKS: usize = 4;

/// A block and how many of its bytes are tar, or the error the reading side met instead.
type Filled = io::Result<(Vec<u8>, usize)>;

/// Run `parse` on a scoped thread over the bytes of `plain`, read on this thread meanwhile.
/// An error reading `plain` (an abort included) reaches `parse` as the error of its next
/// read, so it fails as it would have reading `plain` itself; the result is `parse`'s.
pub(super) fn overlapped<T: Send>(
    plain: &mut impl Read,
    meter: &Meter<'_>,
    parse: impl FnOnce(Inflated) -> Result<T> + Send,
) -> Result<T> {
    let (tx, rx) = sync_channel::<Filled>(BLOCKS);
    // Never holds more than the BLOCKS blocks there are: giving one back never blocks.
    let (back_tx, back) = sync_channel::<Vec<u8>>(BLOCKS);
    std::thread::scope(|s| {
        let parser = std::thread::Builder::new()
            .name("btrfs-layers-untar".into())
            .spawn_scoped(s, move || {
                parse(Inflated {
                    rx,
                    back: back_tx,
                    cur: Vec::new(),
                    pos: 0,
                    len: 0,
                })
            })
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        pump(plain, meter, tx, back);
        parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Read `plain` into blocks and send them until its end, its error (sent too), or the parser
/// has gone. Dropping `tx` on return is the end of stream the parser sees.
fn pump(plain: &mut impl Read, meter: &Meter<'_>, tx: SyncSender<Filled>, back: Receiver<Vec<u8>>) {
    let mut made = 0;
    loop {
        let mut block = match back.try_recv() {
            Ok(block) => block,
            Err(_) if made < BLOCKS => {
                made += 1;
                vec![0; BLOCK]
            }
            Err(_) => match back.recv() {
                Ok(block) => block,
                Err(_) => return,
            },
        };
        match meter
            .check_abort()
            .and_then(|()| read_once(plain, &mut block))
        {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Ok((block, n))).is_err() {
                    return;
                }
            }
            Err(e) => {
                // An abort closes the input too: the stream cut short is the abort's doing.
                let e = meter.check_abort().err().unwrap_or(e);
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// One read, as a BufReader does: never wait for more than is there, or a stalled input
/// would hold back bytes the parser could act on (and its abort check).
fn read_once(plain: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    loop {
        match plain.read(block) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// The parser's end: the decompressed tar, block by block; each block goes back once read.
pub(super) struct Inflated {
    rx: Receiver<Filled>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Read for Inflated {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            let done = std::mem::take(&mut self.cur);
            if !done.is_empty() {
                // The reading side gone (it finished), the block is dropped here.
                let _ = self.back.try_send(done);
            }
            (self.pos, self.len) = (0, 0);
            match self.rx.recv() {
                Ok(Ok((block, len))) => (self.cur, self.len) = (block, len),
                Ok(Err(e)) => return Err(e),
                // The reading side returned without an error: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = (self.len - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
