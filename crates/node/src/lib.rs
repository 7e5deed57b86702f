//! napi-rs bindings: convert types and schedule work on the libuv thread pool. No logic that
//! `btrfs-layers-core` could hold lives here.

mod diff;
mod driver;
mod error;
mod job;
mod pull;
mod remap;
mod replicate;
mod sink;
mod stream;
mod subvolume;
mod worker;

pub use job::Job;
