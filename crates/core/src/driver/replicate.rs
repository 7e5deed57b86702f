//! Replication (issue 15): `send` writes a btrfs send stream of a layer; `receive` makes a new
//! layer from one, in Rust, confined to the new subvolume. This file fixes the interface the
//! binding uses; `send` and `receive` are filled in by their own modules.

use super::{receive, send, Driver};
use crate::control::Control;
use crate::error::Result;
use std::io::{Read, Write};

/// What `send` is asked for.
#[derive(Debug, Clone, Default)]
pub struct SendOptions<'a> {
    /// Send only the difference against this layer of the store (both sides have it).
    pub parent: Option<&'a str>,
    /// Send protocol: None = the best the kernel offers (2 on 6.0+, else 1); Some(1) or Some(2).
    pub protocol: Option<u32>,
    /// With protocol 2: pass compressed extents through as they are (ENCODED_WRITE).
    pub compressed: bool,
}

/// What `send` did.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Bytes of stream written.
    pub bytes: u64,
    /// The protocol version of the stream.
    pub protocol: u32,
}

/// What `receive` is asked for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions<'a> {
    /// The layer an incremental stream applies to; when absent it is found by received UUID
    /// among this store's layers.
    pub parent: Option<&'a str>,
}

/// What `receive` did.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Bytes of stream read.
    pub bytes: u64,
    /// Commands applied.
    pub commands: u64,
    /// The parent layer the stream was applied to (incremental streams).
    pub parent: Option<String>,
    /// The received UUID set on the new layer (the sender's subvolume UUID), canonical text.
    pub received_uuid: String,
}

impl Driver {
    /// Write a btrfs send stream of layer `id` to `out`.
    pub fn send(
        &self,
        id: &str,
        opts: &SendOptions<'_>,
        out: &mut (dyn Write + Send),
        control: Control<'_>,
    ) -> Result<Sent> {
        send::send(self, id, opts, out, control)
    }

    /// Make the new layer `id` from the send stream `input`. Nothing is kept on failure.
    pub fn receive(
        &self,
        id: &str,
        input: &mut (dyn Read + Send),
        opts: &ReceiveOptions<'_>,
        control: Control<'_>,
    ) -> Result<Received> {
        receive::receive(self, id, input, opts, control)
    }
}
