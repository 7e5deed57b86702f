//! `Driver::receive` (issue 15).

use super::{ReceiveOptions, Received};
use crate::control::Control;
use crate::driver::Driver;
use crate::error::{Error, Result};
use nix::errno::Errno;
use std::io::Read;

pub(super) fn receive(
    driver: &Driver,
    id: &str,
    input: &mut (dyn Read + Send),
    opts: &ReceiveOptions<'_>,
    control: Control<'_>,
) -> Result<Received> {
    let _ = (input, opts, control);
    Err(Error::invalid(
        Errno::ENOSYS,
        "receive",
        &driver.layer_path(id),
        "not built yet",
    ))
}
