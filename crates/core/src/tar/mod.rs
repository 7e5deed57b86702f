//! OCI layer tar streams: writing a layer diff (`write`), applying one safely (`apply`), the
//! compression around both (`compress`), and the file an applied layer is read from (`source`).

pub mod apply;
pub mod compress;
pub mod source;
pub mod write;

mod quote;
pub(crate) use quote::input_error;
