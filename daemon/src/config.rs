//! The configuration file as the daemon reads it: every `[directory.*]` (opened by the
//! library, with the library's messages) and the `[daemon]` table, which the library ignores.
//!
//! `[daemon]` keys shared by every protocol are read here; each protocol reads its own keys
//! from its sub-table (`daemon.<section>.*`) through [`Section`]. A key nobody read is an
//! error that names it, as in the library.

use crate::listener::{Address, Limits, Service};
use crate::protocols::{ListenerKeys, PROTOCOLS};
use remote_directory::config::{read_file, KeyReader};
use remote_directory::{Directory, Error, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where one protocol listens, and the service that answers there.
pub struct Endpoint {
    /// `daemon.socket`, `daemon.socketmap.socket`, ...: for messages.
    pub key: String,
    pub address: Address,
    pub service: Arc<dyn Service>,
}

/// The `[daemon]` table, validated.
pub struct DaemonConfig {
    pub endpoints: Vec<Endpoint>,
    pub limits: Limits,
    /// Longest wait for calls in flight at SIGTERM.
    pub shutdown_timeout: Duration,
}

/// The directories of one reading of the file, by name. A reload builds a new one; calls in
/// flight keep the one they started with (an `Arc`).
pub struct Directories {
    by_name: BTreeMap<String, Arc<Directory>>,
}

impl Directories {
    pub fn get(&self, name: &str) -> Option<&Arc<Directory>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn count(&self) -> usize {
        self.by_name.len()
    }
}

/// Reads the file: the directories (each opened once) and the `[daemon]` table.
pub fn load(path: &Path) -> Result<(Directories, DaemonConfig)> {
    let root = read_file(path)?;
    let origin = path.display().to_string();
    let directories = open_directories(path, &origin, &root)?;
    let empty = toml::Table::new();
    let table = match root.get("daemon") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            return Err(Error::new(
                remote_directory::Kind::Config,
                format!("{origin}: daemon: expected a table"),
            ))
        }
        None => &empty,
    };
    let daemon = daemon_config(&origin, table)?;
    Ok((directories, daemon))
}

fn open_directories(path: &Path, origin: &str, root: &toml::Table) -> Result<Directories> {
    let config_error = |msg: String| Error::new(remote_directory::Kind::Config, msg);
    let Some(toml::Value::Table(tables)) = root.get("directory") else {
        return Err(config_error(format!(
            "{origin}: no [directory.<name>] table: the daemon has nothing to serve"
        )));
    };
    let mut by_name = BTreeMap::new();
    for (name, table) in tables {
        let kind = table.get("type").and_then(toml::Value::as_str);
        if kind == Some("daemon") {
            // It would ask itself, forever.
            return Err(config_error(format!(
                "{origin}: directory.{name}.type: \"daemon\" is for the daemon's clients; \
                 the daemon's own file names the remote servers"
            )));
        }
        if table.get("disable").and_then(toml::Value::as_bool) == Some(true) {
            // Stalwart's `disable = true`: kept in the file, not served.
            continue;
        }
        by_name.insert(name.clone(), Arc::new(Directory::open(path, Some(name))?));
    }
    Ok(Directories { by_name })
}

/// Default mode of the daemon's Unix sockets: owner and group only.
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const MAX_CLIENTS: i64 = 100_000;

fn daemon_config(origin: &str, table: &toml::Table) -> Result<DaemonConfig> {
    let mut keys = KeyReader::new(origin, "daemon".into(), table);
    let limits = Limits {
        max_clients: keys
            .integer("max-clients", None, 1, MAX_CLIENTS)?
            .unwrap_or(256) as usize,
        request_timeout: keys
            .duration("request-timeout", None)?
            .unwrap_or(Duration::from_secs(10)),
        idle_timeout: keys
            .duration("idle-timeout", None)?
            .unwrap_or(Duration::from_secs(60)),
    };
    let shutdown_timeout = keys
        .duration("shutdown-timeout", None)?
        .unwrap_or(Duration::from_secs(10));
    let default_mode = socket_mode(&mut keys, "socket-mode")?.unwrap_or(DEFAULT_SOCKET_MODE);
    let default_group = keys.string("socket-group", None)?;
    let mut endpoints = Vec::new();
    for protocol in PROTOCOLS {
        let addresses = addresses(
            &mut keys,
            &protocol.keys,
            default_mode,
            default_group.as_deref(),
        )?;
        if addresses.is_empty() {
            continue;
        }
        let service = (protocol.build)(&mut Section { keys: &mut keys })?;
        for (key, address) in addresses {
            endpoints.push(Endpoint {
                key,
                address,
                service: service.clone(),
            });
        }
    }
    keys.reject_unknown()?;
    Ok(DaemonConfig {
        endpoints,
        limits,
        shutdown_timeout,
    })
}

fn socket_mode(keys: &mut KeyReader, key: &'static str) -> Result<Option<u32>> {
    match keys.string(key, None)? {
        None => Ok(None),
        Some(text) => match u32::from_str_radix(&text, 8) {
            Ok(mode) if mode <= 0o777 => Ok(Some(mode)),
            _ => Err(keys.error(
                key,
                format!("'{text}' is not a file mode such as \"0660\" (octal)"),
            )),
        },
    }
}

/// The `[daemon]` keys, for one protocol's `build`. Keys are written in full, relative to
/// `[daemon]`: `section.string("socketmap.directory")` reads `daemon.socketmap.directory`.
pub struct Section<'r, 'a> {
    keys: &'r mut KeyReader<'a>,
}

impl Section<'_, '_> {
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        self.keys.string(key, None)
    }

    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>> {
        self.keys.duration(key, None)
    }

    pub fn integer(&mut self, key: &'static str, min: i64, max: i64) -> Result<Option<i64>> {
        self.keys.integer(key, None, min, max)
    }

    pub fn boolean(&mut self, key: &'static str) -> Result<Option<bool>> {
        self.keys.boolean(key, None)
    }

    /// The keys under `prefix` (a table such as `saslauthd.services`), each without the
    /// prefix, with its value.
    pub fn table(&mut self, prefix: &'static str) -> Vec<(String, toml::Value)> {
        self.keys
            .table(prefix)
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect()
    }

    /// A CONFIG error about `key` (`origin: daemon.key: msg`).
    pub fn error(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        self.keys.error(key, msg)
    }
}

/// Where a protocol listens: `socket` (a Unix socket path, with `socket-mode` and
/// `socket-group` falling back to the `[daemon]` defaults) and `listen` (`host:port` on
/// loopback). Either, both or neither.
fn addresses(
    keys: &mut KeyReader,
    names: &ListenerKeys,
    default_mode: u32,
    default_group: Option<&str>,
) -> Result<Vec<(String, Address)>> {
    let socket = keys.string(names.socket, None)?;
    let mode = match names.socket_mode {
        Some(k) => socket_mode(keys, k)?,
        None => None,
    };
    let group = match names.socket_group {
        Some(k) => keys.string(k, None)?,
        None => None,
    };
    let mut out = Vec::new();
    if let Some(path) = socket {
        let address = Address::Unix {
            path: PathBuf::from(path),
            mode: mode.unwrap_or(default_mode),
            group: group.or(default_group.map(str::to_string)),
        };
        out.push((format!("daemon.{}", names.socket), address));
    }
    let Some(listen_key) = names.listen else {
        return Ok(out);
    };
    if let Some(listen) = keys.string(listen_key, None)? {
        let addr: SocketAddr = listen.parse().map_err(|_| {
            keys.error(
                listen_key,
                format!("'{listen}' is not an address such as \"127.0.0.1:10040\""),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(keys.error(
                listen_key,
                format!("{addr} is not a loopback address: the daemon answers only local programs"),
            ));
        }
        out.push((format!("daemon.{listen_key}"), Address::Tcp(addr)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(text: &str) -> Result<DaemonConfig> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let empty = toml::Table::new();
        let t = match table.get("daemon") {
            Some(toml::Value::Table(t)) => t,
            _ => &empty,
        };
        daemon_config("f.toml", t)
    }

    #[test]
    fn a_disabled_directory_is_not_served() {
        let dir = std::env::temp_dir().join(format!("rd-daemon-disable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[directory.on]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\n\
             [directory.off]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\ndisable = true\n",
        )
        .unwrap();
        let (directories, _) = load(&path).unwrap();
        assert_eq!(directories.names().collect::<Vec<_>>(), ["on"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults() {
        let d = daemon("").unwrap();
        assert!(d.endpoints.is_empty());
        assert_eq!(d.limits.max_clients, 256);
        assert_eq!(d.limits.request_timeout, Duration::from_secs(10));
        assert_eq!(d.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn sockets_take_the_default_mode_and_group_unless_their_own() {
        let d = daemon(
            "[daemon]\nsocket = \"/run/rd/socket\"\nsocket-mode = \"0600\"\nsocket-group = \"mail\"\n\
             metrics.socket = \"/run/rd/metrics\"\nmetrics.socket-mode = \"0666\"\n",
        )
        .unwrap();
        let got: Vec<(String, String)> = d
            .endpoints
            .iter()
            .map(|e| (e.key.clone(), format!("{:?}", e.address)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "daemon.socket".to_string(),
                    "Unix { path: \"/run/rd/socket\", mode: 384, group: Some(\"mail\") }"
                        .to_string()
                ),
                (
                    "daemon.metrics.socket".to_string(),
                    "Unix { path: \"/run/rd/metrics\", mode: 438, group: Some(\"mail\") }"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[daemon]\nsockt = \"/x\"\n",
                "f.toml: daemon.sockt: unknown key",
            ),
            (
                "[daemon]\nsocket-mode = \"rw\"\n",
                "f.toml: daemon.socket-mode: 'rw' is not a file mode",
            ),
            (
                "[daemon]\nmax-clients = 0\n",
                "f.toml: daemon.max-clients: 0 is out of range",
            ),
            (
                "[daemon]\nidle-timeout = \"soon\"\n",
                "f.toml: daemon.idle-timeout: expected a duration",
            ),
            (
                "[daemon]\nmetrics.listen = \"0.0.0.0:9100\"\n",
                "f.toml: daemon.metrics.listen: 0.0.0.0:9100 is not a loopback address",
            ),
            (
                "[daemon]\nmetrics.listen = \"localhost\"\n",
                "f.toml: daemon.metrics.listen: 'localhost' is not an address",
            ),
            (
                "[daemon]\nnosuch.socket = \"/x\"\n",
                "f.toml: daemon.nosuch.socket: unknown key",
            ),
        ];
        for (text, expected) in cases {
            let e = daemon(text).err().expect(text);
            assert!(e.to_string().starts_with(expected), "{text:?}: {e}");
        }
    }
}
