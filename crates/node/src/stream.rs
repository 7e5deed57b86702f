//! Byte channels between a Rust worker thread and JS: bounded, so memory stays flat and a slow
//! consumer (or producer) applies backpressure to the other side.

use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunks handed to JS are this size (JS hands over about 1 MiB at a time).
pub const CHUNK: usize = 4 << 20;
/// Chunks in flight per channel.
const DEPTH: usize = 4;

pub fn channel() -> (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) {
    sync_channel(DEPTH)
}

/// A `Write` that sends full chunks down a channel; the receiver hung up is EPIPE.
pub struct ChannelWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: SyncSender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| std::io::Error::from_raw_os_error(libc_epipe()))
    }
}

fn libc_epipe() -> i32 {
    32
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A `Read` over chunks received from a channel; the sender dropped is end of stream.
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_the_channel_in_order() {
        let (tx, rx) = channel();
        let producer = std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx);
            for i in 0..3_000_000u32 {
                w.write_all(&[(i % 251) as u8]).unwrap();
            }
            w.flush().unwrap();
        });
        let mut data = Vec::new();
        ChannelReader::new(rx).read_to_end(&mut data).unwrap();
        producer.join().unwrap();
        assert_eq!(data.len(), 3_000_000);
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn writer_fails_when_reader_is_gone() {
        let (tx, rx) = channel();
        drop(rx);
        let mut w = ChannelWriter::new(tx);
        assert!(w.write_all(&vec![0u8; CHUNK * 2]).is_err());
    }
}
