//! `Driver::receive` (issue 15): a new layer from a btrfs send stream, without btrfs-progs.
//!
//! The stream's first command says what the layer starts from: SUBVOL an empty subvolume,
//! SNAPSHOT a snapshot of its parent: the layer the caller names, taken at its word (a parent
//! sent read-write went as a temporary snapshot whose UUID no receiver has), else the layer of
//! this store the stream names by UUID and transid (its received UUID and stransid, or its own
//! UUID and ctransid). The layer is built under a temporary
//! name (staging.rs), every command applied confined to it (crate::receive), its data written
//! back, then marked received (SET_RECEIVED_SUBVOL, the sender's UUID and ctransid) and
//! published read-only, as `btrfs receive` leaves it. Any error or abort keeps nothing.

use super::replicate::{ReceiveOptions, Received};
use crate::control::Control;
use crate::driver::record::Record;
use crate::driver::Driver;
use crate::error::{Context, Error, Result};
use crate::layer::Origin;
use crate::receive::{bad_stream, Receiver, Root};
use crate::sendstream::{Command, StreamError, StreamReader};
use crate::subvolume::{self, uuid_string, SubvolumeInfo};
use nix::errno::Errno;
use std::cell::Cell;
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Bytes read from the input at a time.
const INPUT_BUFFER: usize = 1 << 20;
/// Progress is reported after at least this many more bytes.
const PROGRESS_STEP: u64 = 1 << 20;

pub(super) fn receive(
    driver: &Driver,
    id: &str,
    input: &mut (dyn Read + Send),
    opts: &ReceiveOptions<'_>,
    control: Control<'_>,
) -> Result<Received> {
    driver.require_writable("receive")?;
    driver.require_new(id, "receive")?;
    let shown = driver.layer_path(id);
    let named = match opts.parent {
        Some(p) => Some((p, driver.require_layer(p, "receive")?)),
        None => None,
    };
    let read = Cell::new(0u64);
    let counted = Counted { input, read: &read };
    let bad = |e: StreamError| stream_error(e, &shown);
    let mut stream =
        StreamReader::new(BufReader::with_capacity(INPUT_BUFFER, counted)).map_err(bad)?;
    let first = match stream.next_command().map_err(bad)? {
        Some(raw) => Command::parse(&raw).map_err(bad)?,
        None => return Err(bad(StreamError::Truncated)),
    };
    let mut layers = Layers {
        driver,
        index: None,
    };
    let base = Base::of(&first, named, &mut layers, &shown)?;
    let parent = base.parent.as_ref();
    let ((uid_maps, gid_maps), root) = driver.inherited(parent.map(|(p, fd)| (fd, p.as_str())))?;
    let (uids, gids) = driver.mappings(&uid_maps, &gid_maps)?;
    let staged = driver.stage_new(id, parent.map(|(_, fd)| fd.as_fd()), root)?;
    let parent = base.parent.map(|(p, _)| p);
    // Taken before the apply: the snapshot's origin is what it was made from, and when.
    let info = staged.info()?;
    let mut find = |uuid: &[u8; 16], ctransid: u64| match &base.alias {
        Some((a, p)) if a == uuid => driver.require_layer(p, "receive").map(Some),
        _ => Ok(layers.find(uuid, ctransid)?.map(|(_, fd)| fd)),
    };
    let root = Root::new(staged.fd(), &shown);
    let receiver = Receiver::new(root, base.uuid, &uids, &gids, &mut find);
    let commands = 1 + apply_all(&mut stream, receiver, &read, control, &shown)?;
    control.check("receive", &shown)?;
    // Written back before the rename, so no committed tree holds the name without the data.
    nix::unistd::syncfs(staged.fd()).at("syncfs", staged.path())?;
    subvolume::set_received_fd(staged.fd(), &base.uuid, base.ctransid, staged.path())?;
    let rec = Record {
        parent: parent.clone(),
        created: Some(crate::driver::now_ms()),
        uid_maps,
        gid_maps,
        uuid: Some(uuid_string(&info.uuid)),
        origin: parent.as_ref().and_then(|_| Origin::of(&info)),
        ..Record::default()
    };
    // The commit point; read-only, as btrfs receive leaves a received subvolume.
    staged.publish(id, &rec, true)?;
    Ok(Received {
        bytes: read.get(),
        commands,
        parent,
        received_uuid: uuid_string(&base.uuid),
    })
}

/// What the stream's first command says the layer starts from.
struct Base {
    /// The sender's UUID and ctransid of the subvolume sent: the new layer's received UUID.
    uuid: [u8; 16],
    ctransid: u64,
    /// The layer an incremental stream applies to, open.
    parent: Option<(String, OwnedFd)>,
    /// The stream's UUID for the parent the caller named: clones from it come from that layer.
    alias: Option<([u8; 16], String)>,
}

impl Base {
    fn of(
        first: &Command<'_>,
        named: Option<(&str, OwnedFd)>,
        layers: &mut Layers<'_>,
        shown: &Path,
    ) -> Result<Base> {
        match *first {
            Command::Subvol { uuid, ctransid, .. } => match named {
                Some((p, _)) => Err(Error::invalid(
                    Errno::EINVAL,
                    "receive",
                    &layers.driver.layer_path(p),
                    "the stream is a full one: it has no parent",
                )),
                None => Ok(Base {
                    uuid,
                    ctransid,
                    parent: None,
                    alias: None,
                }),
            },
            Command::Snapshot {
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
                ..
            } => {
                // The caller's word: a parent sent as a read-write layer went as a temporary
                // snapshot whose UUID no receiver has.
                let alias = named.as_ref().map(|(p, _)| (clone_uuid, p.to_string()));
                let parent = match named {
                    Some((p, fd)) => (p.to_string(), fd),
                    None => layers.find(&clone_uuid, clone_ctransid)?.ok_or_else(|| {
                        Error::invalid(
                            Errno::ENOENT,
                            "receive",
                            shown,
                            format!(
                                "the stream's parent, {} at transaction {clone_ctransid}, is not a layer of this store (name it with `parent`)",
                                uuid_string(&clone_uuid)
                            ),
                        )
                    })?,
                };
                Ok(Base {
                    uuid,
                    ctransid,
                    parent: Some(parent),
                    alias,
                })
            }
            ref other => Err(bad_stream(
                shown,
                format!(
                    "the stream starts with {}, not subvol or snapshot",
                    other.name()
                ),
            )),
        }
    }
}

/// Apply the commands after the first up to END, which must end the input; returns how many
/// were read, END included. Stops with ABORT_ERR between two commands once `control` aborts.
fn apply_all(
    stream: &mut StreamReader<impl Read>,
    mut receiver: Receiver<'_>,
    read: &Cell<u64>,
    control: Control<'_>,
    shown: &Path,
) -> Result<u64> {
    let bad = |e: StreamError| stream_error(e, shown);
    let mut commands = 0;
    let mut reported = 0;
    loop {
        control.check("receive", shown)?;
        let Some(raw) = stream.next_command().map_err(bad)? else {
            return Err(bad_stream(shown, "the stream ends before its END command"));
        };
        let c = Command::parse(&raw).map_err(bad)?;
        commands += 1;
        if c == Command::End {
            break;
        }
        receiver.apply(&c)?;
        if read.get() - reported >= PROGRESS_STEP {
            reported = read.get();
            control.progress(reported);
        }
    }
    if !stream.at_end().map_err(bad)? {
        return Err(bad_stream(
            shown,
            "bytes after the END command (one layer is one subvolume)",
        ));
    }
    control.progress(read.get());
    Ok(commands)
}

/// This store's layers with what the kernel says of their subvolumes, listed once, when a
/// stream first names a subvolume by UUID.
struct Layers<'d> {
    driver: &'d Driver,
    index: Option<Vec<(String, SubvolumeInfo)>>,
}

impl Layers<'_> {
    /// The layer a stream names by `uuid` at `ctransid`, open: one received from that
    /// subvolume (its received UUID and stransid) first, as btrfs receive looks, else that
    /// subvolume itself (its UUID and ctransid).
    fn find(&mut self, uuid: &[u8; 16], ctransid: u64) -> Result<Option<(String, OwnedFd)>> {
        let driver = self.driver;
        let index = match &mut self.index {
            Some(index) => index,
            None => self.index.insert(layer_infos(driver)?),
        };
        let received = index
            .iter()
            .find(|(_, i)| i.received_uuid == *uuid && i.stransid == ctransid);
        let found = received.or_else(|| {
            index
                .iter()
                .find(|(_, i)| i.uuid == *uuid && i.ctransid == ctransid)
        });
        match found {
            Some((id, _)) => Ok(Some((id.clone(), driver.require_layer(id, "receive")?))),
            None => Ok(None),
        }
    }
}

/// Every layer of the store with what the kernel says of its subvolume.
fn layer_infos(driver: &Driver) -> Result<Vec<(String, SubvolumeInfo)>> {
    let mut out = Vec::new();
    for id in driver.layers()? {
        // A layer removed meanwhile is no candidate.
        let Ok(fd) = driver.require_layer(&id, "receive") else {
            continue;
        };
        let info = subvolume::info_fd(fd.as_fd(), &driver.layer_path(&id))?;
        out.push((id, info));
    }
    Ok(out)
}

/// A stream that cannot be read: the input's errno, or ERR_BAD_LAYER.
fn stream_error(e: StreamError, shown: &Path) -> Error {
    match e {
        StreamError::Io(e) => Error::io(e, "read", shown),
        e => bad_stream(shown, e.to_string()),
    }
}

/// The input, counting the bytes read.
struct Counted<'a> {
    input: &'a mut (dyn Read + Send),
    read: &'a Cell<u64>,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}
