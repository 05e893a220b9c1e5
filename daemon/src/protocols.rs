//! Every protocol the daemon speaks, with the `[daemon]` keys it is configured by.
//! Adding one: a module with a pure parser and a `build` function, and a line here
//! (see the daemon section of the README).

use crate::config::Section;
use crate::listener::Service;
use remote_directory::Result;
use std::sync::Arc;

pub struct Protocol {
    /// Where it listens, as `[daemon]` keys.
    pub keys: ListenerKeys,
    /// Reads the protocol's own keys and makes its service. Called only when it has a
    /// socket or a listen address.
    pub build: fn(&mut Section) -> Result<Arc<dyn Service>>,
}

/// The `[daemon]` keys of a protocol's listeners (relative to `[daemon]`).
pub struct ListenerKeys {
    pub socket: &'static str,
    /// `None`: the `[daemon]` defaults apply (`socket-mode`, `socket-group`).
    pub socket_mode: Option<&'static str>,
    pub socket_group: Option<&'static str>,
    /// `None`: Unix socket only.
    pub listen: Option<&'static str>,
}

/// A protocol configured in its own sub-table `daemon.<section>`: `socket`, `socket-mode`,
/// `socket-group`, `listen`, and its own keys.
macro_rules! protocol {
    ($section:literal, $build:path) => {
        Protocol {
            keys: ListenerKeys {
                socket: concat!($section, ".socket"),
                socket_mode: Some(concat!($section, ".socket-mode")),
                socket_group: Some(concat!($section, ".socket-group")),
                listen: Some(concat!($section, ".listen")),
            },
            build: $build,
        }
    };
}

pub const PROTOCOLS: &[Protocol] = &[
    // The library's `type = "daemon"` directories: `daemon.socket`, Unix only, with the
    // `[daemon]` mode and group.
    Protocol {
        keys: ListenerKeys {
            socket: "socket",
            socket_mode: None,
            socket_group: None,
            listen: None,
        },
        build: crate::own::build,
    },
    protocol!("socketmap", crate::socketmap::build),
    protocol!("policy", crate::policy::build),
    protocol!("metrics", crate::metrics::build),
    protocol!("dovecot-auth", crate::dovecot_auth::build),
    protocol!("saslauthd", crate::saslauthd::build),
    protocol!("auth-http", crate::auth_http::build),
];
