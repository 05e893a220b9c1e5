//! remote-directory: ask a remote IMAP, SMTP or LMTP server whether a password is right and
//! whether a recipient exists, from Rust or through the C API in [`ffi`].
//!
//! Stalwart Mail Server's "remote directory", made into a small blocking, thread-safe library.
#![deny(unsafe_code)]

mod cache;
pub mod config;
mod daemon_client;
mod directory;
pub mod effective;
pub mod error;
pub mod imap;
mod net;
mod pool;
mod secret;
mod servers;
mod session;
pub mod smtp;
pub mod stats;
#[cfg(feature = "redis")]
mod store;
mod suggest;
pub mod throttle;
pub mod user_map;
pub mod wire;

#[allow(unsafe_code)]
pub mod ffi;

pub use directory::{
    parse_client_ip, take_notice, Directory, DIRECTORY_MAX_ADDRESS, DIRECTORY_MAX_CLIENT_IP,
    DIRECTORY_MAX_DOMAIN, DIRECTORY_MAX_SECRET, DIRECTORY_MAX_USER,
};
pub use error::{Error, Kind, Result};
