//! The replication driver methods (issue 15): `send` a pull stream of a btrfs send stream,
//! `receive` a push sink (or straight from a file) making a new layer.

use crate::diff::bytes;
use crate::driver::NativeDriver;
use crate::pull::{pull, Chunks, Started};
use crate::sink::{sink, Input};
use crate::stream::{channel, ChannelReader, ChannelWriter};
use crate::worker::Worker;
use btrfs_layers_core::driver::replicate::{ReceiveOptions, Received, SendOptions, Sent};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// What a finished `send` wrote.
#[napi(object)]
pub struct SentStream {
    /// Bytes of the stream.
    pub bytes: f64,
    /// Its protocol version (1 or 2).
    pub protocol: u32,
}

/// What `receive` made.
#[napi(object)]
pub struct ReceivedLayer {
    /// Bytes of stream read.
    pub bytes: f64,
    /// Commands applied.
    pub commands: f64,
    /// The layer an incremental stream was applied to.
    pub parent: Option<String>,
    /// The received UUID set on the new layer (the sender's subvolume UUID).
    pub received_uuid: String,
}

fn received_layer(r: Received) -> ReceivedLayer {
    ReceivedLayer {
        bytes: bytes(r.bytes),
        commands: r.commands as f64,
        parent: r.parent,
        received_uuid: r.received_uuid,
    }
}

pull!(
    [
        " `send` under way: chunks of the send stream, pulled. The first `next()` resolves with an",
        " empty Buffer once the layer (and parent) are open, their read-only views taken and the",
        " ioctl writing (or rejects when a layer is missing or the protocol unsupported)."
    ]
    SendStream,
    Sent
);

#[napi]
impl SendStream {
    /// Once `next()` resolved with `null` (the end): what was sent; else `null`.
    #[napi]
    pub fn sent(&self) -> Option<SentStream> {
        self.chunks.done(|s| SentStream {
            bytes: bytes(s.bytes),
            protocol: s.protocol,
        })
    }
}

sink!(
    [
        " `receive` under way: chunks of a send stream, pushed (none when it reads a file); an",
        " abort or a failure keeps nothing of the new layer."
    ]
    ReceiveSink,
    "receive",
    Received,
    ReceivedLayer,
    received_layer,
    "Promise<ReceivedLayer>",
    "Bytes of stream read so far."
);

#[napi]
impl NativeDriver {
    /// `protocol`: 1 or 2, `null` for the best the kernel writes; `compressed` needs 2.
    #[napi(js_name = "sendStart")]
    pub fn send_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        protocol: Option<u32>,
        compressed: bool,
    ) -> Result<SendStream> {
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-send", "send", move |ctl| {
            let opts = SendOptions {
                parent: parent.as_deref(),
                protocol,
                compressed,
            };
            let mut out = Started::new(tx.clone(), ChannelWriter::new(tx));
            Ok(d.send(&id, &opts, &mut out, ctl)?)
        })?;
        Ok(SendStream {
            chunks: Chunks::new(rx, worker),
        })
    }

    /// Start receiving a send stream pushed through the returned sink into the new layer `id`.
    #[napi(js_name = "receiveStart")]
    pub fn receive_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
    ) -> Result<ReceiveSink> {
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-receive", "receive", move |ctl| {
            let opts = ReceiveOptions {
                parent: parent.as_deref(),
            };
            Ok(d.receive(&id, &mut ChannelReader::new(rx), &opts, ctl)?)
        })?;
        Ok(ReceiveSink {
            input: Input::new(Some(tx)),
            worker,
        })
    }

    /// `receiveStart` from a file (or FIFO) read directly by the native side; the sink is only
    /// for abort/progress.
    #[napi(js_name = "receiveFile")]
    pub fn receive_file(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        file: String,
    ) -> Result<ReceiveSink> {
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-receive", "receive", move |ctl| {
            let mut f = btrfs_layers_core::tar::source::open(std::path::Path::new(&file))?;
            let opts = ReceiveOptions {
                parent: parent.as_deref(),
            };
            Ok(d.receive(&id, &mut f, &opts, ctl)?)
        })?;
        Ok(ReceiveSink {
            input: Input::new(None),
            worker,
        })
    }
}

/// The newest send protocol this kernel writes (2 on Linux 6.0+, else 1).
#[napi(js_name = "sendStreamVersion")]
pub fn send_stream_version() -> u32 {
    btrfs_layers_core::send::kernel_protocol()
}
