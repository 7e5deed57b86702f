//! OCI layer tar streams: writing a layer diff (`write`), applying one safely (`apply`),
//! and the compression around both (`compress`).

pub mod apply;
pub mod compress;
pub mod write;
