//! remote-directoryd: one process keeps the pools, caches and throttles of every directory
//! of a configuration file for all the programs of a host, and answers them on local sockets.
//!
//! One module per protocol, each a pure parser plus a [`listener::Service`]; the listener
//! layer they share owns sockets, limits, timeouts and peer credentials. Every answer comes
//! from the library's [`remote_directory::Directory`]: a protocol module only translates.
#![forbid(unsafe_code)]

pub mod auth_http;
pub mod config;
pub mod dovecot_auth;
pub mod http;
pub mod listener;
mod log;
pub mod metrics;
pub mod own;
pub mod password;
pub mod policy;
pub mod protocols;
pub mod saslauthd;
pub mod socketmap;
pub mod state;

use crate::log::log;
use listener::Bound;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use state::State;
use std::sync::Arc;
use std::time::Instant;

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the directories. An error is a socket or
/// thread that could not be set up.
pub fn run(
    path: &std::path::Path,
    directories: config::Directories,
    daemon: config::DaemonConfig,
) -> Result<(), String> {
    if daemon.endpoints.is_empty() {
        return Err(format!(
            "{}: [daemon] names no socket: nothing to serve (see daemon.socket)",
            path.display()
        ));
    }
    // Signals are caught before any socket exists, so none is lost to the default action.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    let names = directories.names().collect::<Vec<_>>().join(", ");
    let state = Arc::new(State::new(directories));
    let mut bound = Vec::new();
    for endpoint in &daemon.endpoints {
        bound.push((
            Bound::bind(&endpoint.key, &endpoint.address)?,
            endpoint.service.clone(),
        ));
    }
    let mut running = Vec::new();
    for (b, service) in bound {
        log!("info", "listening: {} ({})", b.describe(), service.name());
        running.push(
            listener::serve(b, service, daemon.limits, state.clone())
                .map_err(|e| format!("cannot start a thread: {e}"))?,
        );
    }
    log!("info", "ready; directories: {names}");
    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(path, &state),
            _ => break,
        }
    }
    log!(
        "info",
        "stopping: no new connections; finishing calls in flight"
    );
    state.stop();
    for r in &running {
        r.stop_accepting();
    }
    let until = Instant::now() + daemon.shutdown_timeout;
    let mut clean = true;
    for r in running {
        clean &= r.finish(until);
    }
    if !clean {
        log!(
            "warning",
            "calls still running after {:?} (daemon.shutdown-timeout); exiting anyway",
            daemon.shutdown_timeout
        );
    }
    log!("info", "stopped");
    Ok(())
}

/// SIGHUP: new directories for new calls; on any error the old ones stay.
fn reload(path: &std::path::Path, state: &State) {
    match config::load(path) {
        Ok((directories, _)) => {
            let n = directories.count();
            state.replace(directories);
            log!(
                "info",
                "reloaded {}: {n} directories (changes to [daemon] need a restart)",
                path.display()
            );
        }
        Err(e) => log!(
            "error",
            "reload failed, the previous configuration stays in force: {e}"
        ),
    }
}
