//! `Driver::send` (issue 15).

use super::{SendOptions, Sent};
use crate::control::Control;
use crate::driver::Driver;
use crate::error::{Error, Result};
use nix::errno::Errno;
use std::io::Write;

pub(super) fn send(
    driver: &Driver,
    id: &str,
    opts: &SendOptions<'_>,
    out: &mut (dyn Write + Send),
    control: Control<'_>,
) -> Result<Sent> {
    let _ = (opts, out, control);
    Err(Error::invalid(
        Errno::ENOSYS,
        "send",
        &driver.layer_path(id),
        "not built yet",
    ))
}
