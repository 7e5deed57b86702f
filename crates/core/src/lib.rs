//! The btrfs layer store core: kernel interface, subvolume operations and recursive deletion.
//! Pure Rust over `nix`; the napi bindings live in `crates/node`.

pub mod control;
pub mod delete;
pub mod digest;
pub mod dirent;
pub mod error;
pub mod filesystem;
pub mod ioctl;
pub mod nested;
pub mod open;
pub mod path;
pub mod subvolume;

pub use control::Control;
pub use error::{Code, Error, Result};
pub mod changes;
pub mod driver;
pub mod idmap;
pub mod idmount;
pub mod inodes;
pub mod layer;
pub mod mounts;
pub mod quota;
pub mod receive;
pub mod remap;
pub mod search;
pub mod send;
pub mod sendstream;
pub mod tar;
pub mod trace;
pub mod xattr;
