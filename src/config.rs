//! Configuration: Stalwart's `directory.<name>` keys (both generations) into typed settings.
//!
//! Only the `directory` table is read, so a whole Stalwart configuration file can be given.
//! Inside the selected directory every key is known or it is an error naming it: a typo such
//! as `allow-invalid-cert` must not silently leave a default in force.

use crate::error::{Error, Result};
pub use crate::servers::ServerAddress;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Value;

/// Which protocol the remote server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Smtp,
    Lmtp,
}

impl Protocol {
    /// The `type` value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Smtp => "smtp",
            Protocol::Lmtp => "lmtp",
        }
    }

    fn default_port(self, implicit_tls: bool) -> u16 {
        match (self, implicit_tls) {
            (Protocol::Imap, true) => 993,
            (Protocol::Imap, false) => 143,
            (Protocol::Smtp, true) => 465,
            (Protocol::Smtp, false) => 25,
            (Protocol::Lmtp, _) => 24,
        }
    }
}

/// Which TLS implementation carries the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsBackend {
    /// rustls with the ring provider: always built.
    Rustls,
    /// The platform's TLS (OpenSSL on Linux): only with the `native-tls` cargo feature.
    Native,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// TLS from the first byte; otherwise STARTTLS when the server offers it.
    pub implicit: bool,
    /// Accept any certificate. For tests only.
    pub dangerous_allow_invalid_certs: bool,
    /// Extra trusted CAs, PEM.
    pub ca_file: Option<PathBuf>,
    pub backend: TlsBackend,
}

/// The result cache; `None` in [`Settings`] when `cache.size` is `false`, `0` or `"disable"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most entries kept in each map (recipients, logins, refused logins).
    pub entries: usize,
    /// `cache.size`, the byte budget the entries came from; `None` when `cache.entries` gave
    /// the count directly.
    pub size_bytes: Option<u64>,
    /// How long an existing recipient is remembered.
    pub ttl_positive: Duration,
    /// How long an unknown recipient is remembered.
    pub ttl_negative: Duration,
    /// How long a successful login is remembered (as a salted hash); `None`: never.
    pub auth_ttl: Option<Duration>,
    /// How long a refused (user, password) pair is remembered (as a keyed hash); `None`: never.
    pub auth_negative_ttl: Option<Duration>,
    /// How long after expiry a positive answer may still be served when no server can be
    /// reached (`cache.stale-if-error`); `None`: never.
    pub stale_if_error: Option<Duration>,
}

impl CacheSettings {
    /// The cache as it is when a `cache.*` key (or `store.url`) turns it on.
    fn defaults() -> Self {
        CacheSettings {
            entries: (DEFAULT_CACHE_BYTES / CACHE_BYTES_PER_ENTRY) as usize,
            size_bytes: Some(DEFAULT_CACHE_BYTES),
            ttl_positive: Duration::from_secs(3600),
            ttl_negative: Duration::from_secs(600),
            auth_ttl: None,
            auth_negative_ttl: None,
            stale_if_error: None,
        }
    }
}

/// Defences against password guessing (issue 8): `throttle.*` and `forward.client-ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Refused logins allowed per user and window.
    pub throttle_user: Option<crate::throttle::Rate>,
    /// Refused logins allowed per client address and window.
    pub throttle_client: Option<crate::throttle::Rate>,
    /// How long a throttled login waits before its answer.
    pub throttle_delay: Duration,
    /// Tell the server who the client is (IMAP `ID`, SMTP/LMTP `XCLIENT`).
    pub forward_client_ip: bool,
}

/// About what Dovecot takes to refuse a password: a throttled guess costs the guesser the
/// same time, and a guessing loop waits instead of spinning on the CPU real users need.
const DEFAULT_THROTTLE_DELAY: Duration = Duration::from_millis(500);

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            throttle_user: None,
            throttle_client: None,
            throttle_delay: DEFAULT_THROTTLE_DELAY,
            forward_client_ip: false,
        }
    }
}

/// Everything one directory handle needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The directory's name (`directory.<name>`).
    pub name: String,
    pub protocol: Protocol,
    /// The remote servers (`address`, alias `host`), tried in this order.
    pub servers: Vec<ServerAddress>,
    pub failover: FailoverSettings,
    pub tls: TlsSettings,
    /// Bound on one call's network work: connect, TLS, every read and write together.
    pub timeout: Duration,
    /// RCPT TO commands on one connection before it is ended.
    pub max_rcpts: u32,
    /// Failed authentications on one connection before it is ended.
    pub max_auth_errors: u32,
    /// Local domains, lower case, without a trailing dot.
    pub domains: Vec<String>,
    pub max_connections: usize,
    /// Idle connections kept open ahead of demand.
    pub min_idle: usize,
    /// Longest wait for a free connection slot.
    pub wait_timeout: Duration,
    pub cache: Option<CacheSettings>,
    pub guard: GuardSettings,
    /// The store shared by a fleet (`store.*`, cargo feature `redis`).
    pub store: Option<StoreSettings>,
    /// `disable = true`: defined, shown by `--show-config`, but never opened.
    pub disabled: bool,
    /// Bound on opening one connection: connect, TLS, greeting, EHLO/CAPABILITY, STARTTLS.
    pub create_timeout: Duration,
    /// Bound on checking an idle pooled connection before it serves a call.
    pub recycle_timeout: Duration,
    /// The EHLO/LHLO name; `None`: the local address as a literal (`[192.0.2.1]`).
    pub hello_name: Option<String>,
    /// How a login name becomes the name sent to the server (`user.*`).
    pub user: crate::user_map::UserMapping,
}

/// `store.*`: where a fleet of relays shares results and throttle counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub url: StoreUrl,
    /// Prefix of every key (`store.prefix`).
    pub prefix: String,
    /// Bound on one store operation (`store.timeout`).
    pub timeout: Duration,
    /// The fleet's HMAC key for login entries (`store.secret-file`).
    pub secret_file: Option<PathBuf>,
}

/// `store.url`, which may hold the store's password: its `Debug` shows it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(pub String);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::effective::mask_url_password(&self.0))
    }
}

/// How long a server that failed at connection level is left alone (`failover.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverSettings {
    /// The first pause after a failure; each further failure in a row doubles it.
    pub backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

/// Files larger than this are not configuration files.
const MAX_FILE_SIZE: u64 = 16 << 20;
const MAX_CONNECTIONS: i64 = 10_000;
const MAX_CACHE_ENTRIES: i64 = 10_000_000;
/// What one cache entry is reckoned to cost, to turn Stalwart's `cache.size` (bytes) into a
/// count of entries: the address (typically 20 to 40 bytes, at most 320), the server's reply
/// kept with a refusal (about 100), the expiry, and the hash table's own overhead.
pub const CACHE_BYTES_PER_ENTRY: u64 = 256;
/// Stalwart's default `cache.size`: 1 MiB, that is 4096 entries.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 20;
/// How long a check of an idle pooled connection may take by default (`pool.timeout.recycle`).
const DEFAULT_RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `path` and selects directory `name` (or the only one when `name` is `None`).
pub fn load_file(path: &Path, name: Option<&str>) -> Result<Settings> {
    load_target_file(path, name)?.remote()
}

/// Reads `path` and selects directory `name` (or the only one), of any type.
pub fn load_target_file(path: &Path, name: Option<&str>) -> Result<Target> {
    let origin = path.display().to_string();
    let text = read_text(path, &origin)?;
    load(&text, name, &origin, path.parent())
}

/// Reads and parses a whole configuration file, with the errors of [`load_file`].
/// remote-directoryd reads its `[daemon]` table and the directory names from it.
pub fn read_file(path: &Path) -> Result<toml::Table> {
    let origin = path.display().to_string();
    parse(&read_text(path, &origin)?, &origin)
}

fn read_text(path: &Path, origin: &str) -> Result<String> {
    let bytes = read_regular_file(path, MAX_FILE_SIZE)
        .map_err(|msg| Error::config(format!("{origin}: cannot read configuration: {msg}")))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "{origin}: cannot read configuration: not UTF-8 text"
        ))
    })
}

/// Reads a regular file of at most `max` bytes. A FIFO, a device such as /dev/zero or a
/// directory is refused before it is opened: reading one could block or never end.
pub(crate) fn read_regular_file(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Parses TOML text given directly; relative `tls.ca-file` paths are taken as they are.
pub fn load_str(text: &str, name: Option<&str>) -> Result<Settings> {
    load_target_str(text, name)?.remote()
}

/// Parses TOML text given directly and selects directory `name` (or the only one), of any
/// type.
pub fn load_target_str(text: &str, name: Option<&str>) -> Result<Target> {
    load(text, name, "<string>", None)
}

/// What a `[directory.<name>]` table describes.
// Made once per open and taken apart at once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A remote IMAP, SMTP or LMTP server, asked by this process.
    Remote(Settings),
    /// A directory of remote-directoryd, asked over its socket (`type = "daemon"`).
    Daemon(DaemonClientSettings),
}

impl Target {
    /// The settings of a remote server; a `type = "daemon"` directory is an error here.
    pub fn remote(self) -> Result<Settings> {
        match self {
            Target::Remote(settings) => Ok(settings),
            Target::Daemon(d) => Err(Error::config(format!(
                "directory.{}: type \"daemon\" is served by remote-directoryd; open it as a Directory",
                d.name
            ))),
        }
    }
}

/// A `type = "daemon"` directory: every call is asked of remote-directoryd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonClientSettings {
    /// This directory's name (`directory.<name>`).
    pub name: String,
    /// The daemon's `daemon.socket`.
    pub socket: PathBuf,
    /// The daemon's directory that answers; by default the same name.
    pub directory: String,
    /// Longest wait for the daemon's answer to one call.
    pub timeout: Duration,
}

/// A `type = "daemon"` directory waits this long for an answer by default: longer than the
/// daemon's own default `timeout` plus `pool.timeout.wait`, so the daemon's answer (and its
/// message) arrives first.
const DEFAULT_DAEMON_TIMEOUT: Duration = Duration::from_secs(75);

fn load(text: &str, name: Option<&str>, origin: &str, base: Option<&Path>) -> Result<Target> {
    let root = parse(text, origin)?;
    let directories = directory_tables(&root, origin)?;
    let hello = hello_name(&root, origin)?;
    let err = |msg: String| Error::config(format!("{origin}: {msg}"));
    let names = || quoted_names(directories);
    let (name, table) = match name {
        Some(n) => match directories.get(n) {
            Some(t) => (n, t),
            None => {
                return Err(err(format!(
                    "no directory named '{n}'; defined: {}",
                    if directories.is_empty() {
                        "none".to_string()
                    } else {
                        names()
                    }
                )))
            }
        },
        None => {
            let mut it = directories.iter();
            match (it.next(), it.next()) {
                (Some((n, t)), None) => (n.as_str(), t),
                (None, _) => return Err(err("no [directory.<name>] table".into())),
                _ => {
                    return Err(err(format!(
                        "several directories defined ({}): give a directory name",
                        names()
                    )))
                }
            }
        }
    };
    read_target(name, table, origin, base, &hello)
}

/// One `directory.<name>` table: a remote server's settings, or a `type = "daemon"` client's.
fn read_target(
    name: &str,
    table: &Value,
    origin: &str,
    base: Option<&Path>,
    hello: &Option<String>,
) -> Result<Target> {
    if table.get("type").and_then(Value::as_str) == Some("daemon") {
        if let Value::Table(t) = table {
            let mut reader = KeyReader::new(origin, format!("directory.{name}"), t);
            let settings = reader.daemon_client(name, base)?;
            reader.reject_unknown()?;
            return Ok(Target::Daemon(settings));
        }
    }
    read_directory(name, table, origin, base, hello)
        .0
        .map(Target::Remote)
}

/// Every directory of a file, in file order of names (sorted), each read on its own: one
/// invalid directory does not hide the others (`directory-check --check-config`).
pub fn load_all_file(path: &Path) -> Result<Vec<(String, Result<Target>)>> {
    let origin = path.display().to_string();
    let text = read_text(path, &origin)?;
    load_all(&text, &origin, path.parent())
}

/// [`load_all_file`] for TOML text given directly.
pub fn load_all_str(text: &str) -> Result<Vec<(String, Result<Target>)>> {
    load_all(text, "<string>", None)
}

fn load_all(
    text: &str,
    origin: &str,
    base: Option<&Path>,
) -> Result<Vec<(String, Result<Target>)>> {
    let root = parse(text, origin)?;
    let directories = directory_tables(&root, origin)?;
    let hello = hello_name(&root, origin)?;
    if directories.is_empty() {
        return Err(Error::config(format!(
            "{origin}: no [directory.<name>] table"
        )));
    }
    Ok(directories
        .iter()
        .map(|(name, table)| {
            let target = read_target(name, table, origin, base, &hello);
            (name.clone(), target)
        })
        .collect())
}

/// The EHLO/LHLO name of every directory of the file, as Stalwart chose its own:
/// `server.hostname` (v0.11.2+), else `lookup.default.hostname` (earlier), else this
/// machine's host name when it is a domain name (see [`choose_hello_name`]).
fn hello_name(root: &toml::Table, origin: &str) -> Result<Option<String>> {
    let configured = |table: &str, key: &str| -> Result<Option<String>> {
        let value = root
            .get(table)
            .and_then(|t| t.get(key.split('.').next()?))
            .and_then(|v| match key.split_once('.') {
                Some((_, rest)) => v.get(rest),
                None => Some(v),
            });
        match value {
            None => Ok(None),
            Some(Value::String(h)) if valid_hello_name(h) => Ok(Some(h.to_lowercase())),
            Some(v) => Err(Error::config(format!(
                "{origin}: {table}.{key}: {} is not a host name (used as the EHLO/LHLO name)",
                match v {
                    Value::String(h) => format!("{h:?}"),
                    other => other.type_str().to_string(),
                }
            ))),
        }
    };
    let server = configured("server", "hostname")?;
    let lookup = configured("lookup", "default.hostname")?;
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    Ok(choose_hello_name(
        server.as_deref(),
        lookup.as_deref(),
        machine.as_deref().map(str::trim),
    ))
}

/// The first of the configured names, else the machine's name if it has a dot: a name
/// without one (`vm`, a container id) is refused by servers that check HELO, such as Postfix
/// with `reject_non_fqdn_helo_hostname`, where the address literal `[192.0.2.1]` (`None`)
/// always passes the syntax checks.
pub fn choose_hello_name(
    server_hostname: Option<&str>,
    lookup_default_hostname: Option<&str>,
    machine: Option<&str>,
) -> Option<String> {
    server_hostname
        .or(lookup_default_hostname)
        .or(machine.filter(|m| m.contains('.') && valid_hello_name(m)))
        .map(str::to_lowercase)
}

/// A name that can follow EHLO on the line: letters, digits, `.`, `-`, `_`, or an address
/// literal in brackets; no spaces, no CR/LF (it is written to the wire as is).
fn valid_hello_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        })
}

fn parse(text: &str, origin: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| syntax_error(origin, text, &e))
}

fn directory_tables<'a>(root: &'a toml::Table, origin: &str) -> Result<&'a toml::Table> {
    match root.get("directory") {
        Some(Value::Table(t)) => Ok(t),
        Some(_) => Err(Error::config(format!(
            "{origin}: directory: expected a table"
        ))),
        None => Err(Error::config(format!(
            "{origin}: no [directory.<name>] table"
        ))),
    }
}

fn quoted_names(directories: &toml::Table) -> String {
    directories
        .keys()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads one `directory.<name>` table. The reader comes back too: it knows every key it was
/// asked for (the tests check that each appears in the effective configuration).
fn read_directory<'a>(
    name: &str,
    table: &'a Value,
    origin: &'a str,
    base: Option<&Path>,
    hello_name: &Option<String>,
) -> (Result<Settings>, KeyReader<'a>) {
    let mut keys = BTreeMap::new();
    if let Value::Table(table) = table {
        flatten("", table, &mut keys);
    }
    let mut reader = KeyReader {
        origin,
        prefix: format!("directory.{name}"),
        keys,
        known: Vec::new(),
    };
    let settings = match table {
        Value::Table(_) => match reader.settings(name, base) {
            Ok(s) => reader.reject_unknown().map(|()| Settings {
                hello_name: hello_name.clone(),
                ..s
            }),
            // A missing `address` is often a mistyped one: say so.
            Err(e) => Err(match reader.typos() {
                Some(typos) => Error::config(format!("{e}; {typos}")),
                None => e,
            }),
        },
        _ => Err(Error::config(format!(
            "{origin}: directory.{name}: expected a table"
        ))),
    };
    (settings, reader)
}

/// `file: line N: message` for TOML syntax errors. A table defined twice (Stalwart's own
/// documentation has one) also names the table and the line of its first definition, which
/// the parser's message does not.
fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> Error {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim_end();
    match line {
        Some(line) => match first_definition(text, line) {
            Some((table, first)) => Error::config(format!(
                "{origin}: line {line}: table [{table}] is defined twice, first at line {first} ({message})"
            )),
            None => Error::config(format!("{origin}: line {line}: {message}")),
        },
        None => Error::config(format!("{origin}: {message}")),
    }
}

/// When line `line` (1-based) of `text` is a table header whose table an earlier header
/// already defined: the table's dotted name and the earlier line.
fn first_definition(text: &str, line: usize) -> Option<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let target = table_header(lines.get(line.checked_sub(1)?)?)?;
    lines[..line - 1]
        .iter()
        .position(|l| table_header(l).as_ref() == Some(&target))
        .map(|i| (target.join("."), i + 1))
}

/// The key parts of a `[a."b c".d]` header line (not `[[array]]`), unquoted; `None` for any
/// other line. Used only to point at lines: the parser has already read the file.
fn table_header(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('[')?;
    if inner.starts_with('[') {
        return None;
    }
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quote = None;
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => part.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => parts.push(std::mem::take(&mut part)),
            (None, ']') => {
                parts.push(part);
                return Some(parts);
            }
            (None, c) if c.is_whitespace() => {}
            (None, c) => part.push(c),
        }
    }
    None
}

/// Dotted keys to leaf values: `[x.tls] implicit = true` and `tls.implicit = true` are one key.
fn flatten<'a>(prefix: &str, table: &'a toml::Table, out: &mut BTreeMap<String, &'a Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => flatten(&key, t, out),
            _ => {
                out.insert(key, v);
            }
        }
    }
}

/// Reads the keys of one directory. Every key a reader method is asked for is remembered in
/// `known`: that list is what an unknown key is compared with for a suggestion, so adding a
/// key to [`KeyReader::settings`] is all it takes for it to be known.
pub struct KeyReader<'a> {
    origin: &'a str,
    prefix: String,
    /// Keys not yet consumed; what is left at the end is unknown.
    keys: BTreeMap<String, &'a Value>,
    /// Every key asked for, in order, each with whether it is an alias of another.
    known: Vec<(&'static str, bool)>,
}

impl<'a> KeyReader<'a> {
    /// A reader of `table`'s keys (nested tables as dotted keys); errors name
    /// `origin: prefix.key`. remote-directoryd reads its `[daemon]` table with it, so both
    /// report errors alike.
    pub fn new(origin: &'a str, prefix: String, table: &'a toml::Table) -> Self {
        let mut keys = BTreeMap::new();
        flatten("", table, &mut keys);
        KeyReader {
            origin,
            prefix,
            keys,
            known: Vec::new(),
        }
    }

    /// A CONFIG error about `key` of this table.
    pub fn error(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::config(format!("{}: {}.{key}: {msg}", self.origin, self.prefix))
    }

    /// Takes `key` or its `alias`; both present is an error.
    pub fn take(
        &mut self,
        key: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<(String, &'a Value)>> {
        self.known.push((key, false));
        self.known.extend(alias.map(|a| (a, true)));
        let a = self.keys.remove(key).map(|v| (key.to_string(), v));
        let b = alias.and_then(|al| self.keys.remove(al).map(|v| (al.to_string(), v)));
        match (a, b) {
            (Some(_), Some((bk, _))) => Err(self.error(
                key,
                format!("set twice, also as '{}.{bk}'; keep one", self.prefix),
            )),
            (a, b) => Ok(a.or(b)),
        }
    }

    /// Every key under `prefix` (a table whose keys the user names, such as a map from a
    /// service to a directory), consumed: each key without the prefix, and its value.
    pub fn table(&mut self, prefix: &'static str) -> Vec<(String, &'a Value)> {
        self.known.push((prefix, false));
        let start = format!("{prefix}.");
        let names: Vec<String> = self
            .keys
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, _)| k.clone())
            .collect();
        names
            .into_iter()
            .filter_map(|k| {
                let v = self.keys.remove(&k)?;
                Some((k[start.len()..].to_string(), v))
            })
            .collect()
    }

    pub fn string(
        &mut self,
        key: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<String>> {
        match self.take(key, alias)? {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((k, v)) => {
                Err(self.error(&k, format!("expected a string, found {}", v.type_str())))
            }
        }
    }

    pub fn boolean(
        &mut self,
        key: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<bool>> {
        match self.take(key, alias)? {
            None => Ok(None),
            Some((_, Value::Boolean(b))) => Ok(Some(*b)),
            Some((k, v)) => Err(self.error(
                &k,
                format!("expected true or false, found {}", v.type_str()),
            )),
        }
    }

    pub fn integer(
        &mut self,
        key: &'static str,
        alias: Option<&'static str>,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>> {
        match self.take(key, alias)? {
            None => Ok(None),
            Some((k, Value::Integer(i))) if *i < min || *i > max => {
                Err(self.error(&k, format!("{i} is out of range {min}..={max}")))
            }
            Some((_, Value::Integer(i))) => Ok(Some(*i)),
            Some((k, v)) => {
                Err(self.error(&k, format!("expected an integer, found {}", v.type_str())))
            }
        }
    }

    pub fn duration(
        &mut self,
        key: &'static str,
        alias: Option<&'static str>,
    ) -> Result<Option<Duration>> {
        let parsed = match self.take(key, alias)? {
            None => return Ok(None),
            Some((k, Value::Integer(i))) => (k, u64::try_from(*i).ok().map(Duration::from_secs)),
            Some((k, Value::String(s))) => (k, parse_duration(s)),
            Some((k, v)) => {
                return Err(self.error(
                    &k,
                    format!(
                        "expected a duration such as \"30s\", found {}",
                        v.type_str()
                    ),
                ))
            }
        };
        match parsed {
            (_, Some(d)) if !d.is_zero() && d <= Duration::from_secs(86_400) => Ok(Some(d)),
            (k, _) => Err(self.error(
                &k,
                "expected a duration between 1ms and 1d, such as \"500ms\", \"30s\", \"2m\" or an integer of seconds",
            )),
        }
    }

    fn domains(&mut self) -> Result<Vec<String>> {
        let values: Vec<&Value> = match self.take("lookup.domains", None)? {
            None => return Ok(Vec::new()),
            Some((_, Value::Array(a))) => a.iter().collect(),
            Some((_, v @ Value::String(_))) => vec![v],
            Some((k, v)) => {
                return Err(self.error(
                    &k,
                    format!("expected a list of domains, found {}", v.type_str()),
                ))
            }
        };
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Value::String(s) => {
                    let d = normalize_domain(s);
                    if d.is_empty()
                        || d.len() > 255
                        || d.bytes().any(|b| b.is_ascii_control() || b == b' ')
                    {
                        return Err(self.error("lookup.domains", format!("'{s}' is not a domain")));
                    }
                    out.push(d);
                }
                other => {
                    return Err(self.error(
                        "lookup.domains",
                        format!("expected strings, found {}", other.type_str()),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn settings(&mut self, name: &str, base: Option<&Path>) -> Result<Settings> {
        let protocol = match self.string("type", None)?.as_deref() {
            Some("imap") => Protocol::Imap,
            Some("smtp") => Protocol::Smtp,
            Some("lmtp") => Protocol::Lmtp,
            Some("daemon") => {
                return Err(self.error(
                    "type",
                    "\"daemon\" names a directory of remote-directoryd, not a server: open it as a Directory",
                ))
            }
            Some(other) => {
                return Err(self.error(
                    "type",
                    format!("unknown type '{other}'; expected imap, smtp, lmtp or daemon"),
                ))
            }
            None => {
                return Err(self.error("type", "missing; expected imap, smtp, lmtp or daemon"))
            }
        };
        let implicit = self
            .boolean("tls.implicit", Some("tls.enable"))?
            .unwrap_or(false);
        let backend = match self.string("tls.backend", None)?.as_deref() {
            None | Some("rustls") => TlsBackend::Rustls,
            Some("native") if cfg!(feature = "native-tls") => TlsBackend::Native,
            Some("native") => {
                return Err(self.error(
                    "tls.backend",
                    "\"native\" needs the library built with the native-tls feature",
                ))
            }
            Some(other) => {
                return Err(self.error(
                    "tls.backend",
                    format!("unknown backend '{other}'; expected rustls or native"),
                ))
            }
        };
        let tls = TlsSettings {
            implicit,
            dangerous_allow_invalid_certs: self
                .boolean("tls.allow-invalid-certs", None)?
                .unwrap_or(false),
            ca_file: self.string("tls.ca-file", None)?.map(|f| match base {
                Some(dir) => dir.join(f),
                None => PathBuf::from(f),
            }),
            backend,
        };
        let port = match self.integer("port", None, 1, 65535)? {
            Some(p) => p as u16,
            None => protocol.default_port(implicit),
        };
        let servers = self.servers(port)?;
        let failover = self.failover()?;
        let timeout = self
            .duration("timeout", None)?
            .unwrap_or(Duration::from_secs(30));
        let max_rcpts = self
            .integer("limits.rcpt", None, 1, 1_000_000)?
            .unwrap_or(10) as u32;
        let max_auth_errors = self
            .integer("limits.auth-errors", None, 1, 1_000_000)?
            .unwrap_or(3) as u32;
        let domains = self.domains()?;
        let max_connections = self
            .integer("pool.max-connections", None, 1, MAX_CONNECTIONS)?
            .unwrap_or(10) as usize;
        let min_idle = self
            .integer("pool.min-idle", None, 0, MAX_CONNECTIONS)?
            .unwrap_or(0) as usize;
        if min_idle > max_connections {
            return Err(self.error(
                "pool.min-idle",
                format!("{min_idle} is more than pool.max-connections ({max_connections})"),
            ));
        }
        let wait_timeout = self
            .duration("pool.timeout.wait", None)?
            .unwrap_or(Duration::from_secs(30));
        let mut cache = self.cache()?;
        let guard = self.guard()?;
        let disabled = self.boolean("disable", None)?.unwrap_or(false);
        let create_timeout = self
            .duration("pool.timeout.create", None)?
            .unwrap_or(timeout);
        let recycle_timeout = self
            .duration("pool.timeout.recycle", None)?
            .unwrap_or(DEFAULT_RECYCLE_TIMEOUT.min(timeout));
        let user = self.user_mapping(&domains)?;
        let store = self.store(base, &mut cache)?;
        Ok(Settings {
            name: name.to_string(),
            protocol,
            servers,
            failover,
            tls,
            timeout,
            max_rcpts,
            max_auth_errors,
            domains,
            max_connections,
            min_idle,
            wait_timeout,
            cache,
            guard,
            store,
            disabled,
            create_timeout,
            recycle_timeout,
            hello_name: None,
            user,
        })
    }

    fn user_mapping(&mut self, domains: &[String]) -> Result<crate::user_map::UserMapping> {
        let lowercase = self.boolean("user.lowercase", None)?.unwrap_or(false);
        let strip_domain = self.boolean("user.strip-domain", None)?.unwrap_or(false);
        let append_domain = match self.string("user.append-domain", None)? {
            Some(d) => {
                let domain = normalize_domain(&d);
                if domain.is_empty()
                    || domain.len() > 255
                    || domain
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || c == '@')
                {
                    return Err(self.error("user.append-domain", format!("'{d}' is not a domain")));
                }
                Some(domain)
            }
            None => None,
        };
        let require_local_domain = self
            .boolean("user.require-local-domain", None)?
            .unwrap_or(false);
        if strip_domain && append_domain.is_some() {
            return Err(self.error(
                "user.append-domain",
                "set together with user.strip-domain, which would remove it again; keep one",
            ));
        }
        if require_local_domain && domains.is_empty() {
            return Err(self.error(
                "user.require-local-domain",
                "needs lookup.domains: the list of domains a login may have",
            ));
        }
        Ok(crate::user_map::UserMapping {
            lowercase,
            strip_domain,
            append_domain,
            require_local_domain,
        })
    }

    /// `store.*`. A store shares the result cache, so it turns the cache on (defaults) when
    /// no `cache.*` key did; sharing login results needs the fleet's key.
    fn store(
        &mut self,
        base: Option<&Path>,
        cache: &mut Option<CacheSettings>,
    ) -> Result<Option<StoreSettings>> {
        let url = self.string("store.url", None)?;
        let prefix = self.string("store.prefix", None)?;
        let timeout = self.duration("store.timeout", None)?;
        let secret_file = self.string("store.secret-file", None)?.map(|f| match base {
            Some(dir) => dir.join(f),
            None => PathBuf::from(f),
        });
        let Some(url) = url else {
            if let Some(key) = [
                prefix.as_ref().map(|_| "store.prefix"),
                timeout.map(|_| "store.timeout"),
                secret_file.as_ref().map(|_| "store.secret-file"),
            ]
            .into_iter()
            .flatten()
            .next()
            {
                return Err(self.error(key, "has no effect without store.url"));
            }
            return Ok(None);
        };
        if !cfg!(feature = "redis") {
            return Err(self.error(
                "store.url",
                "needs the library built with the redis feature",
            ));
        }
        let cache = cache.get_or_insert_with(CacheSettings::defaults);
        let shares_logins = cache.auth_ttl.is_some() || cache.auth_negative_ttl.is_some();
        if shares_logins && secret_file.is_none() {
            return Err(self.error(
                "store.secret-file",
                "missing: login results (cache.auth-ttl, cache.auth-negative-ttl) are shared \
                 through store.url only as HMACs under the fleet's key in this file",
            ));
        }
        Ok(Some(StoreSettings {
            url: StoreUrl(url),
            prefix: prefix.unwrap_or_else(|| "rd:".to_string()),
            timeout: timeout.unwrap_or(Duration::from_millis(100)),
            secret_file,
        }))
    }

    fn rate(&mut self, key: &'static str) -> Result<Option<crate::throttle::Rate>> {
        match self.string(key, None)? {
            None => Ok(None),
            Some(text) => crate::throttle::Rate::parse(&text).map(Some).ok_or_else(|| {
                self.error(
                    key,
                    format!("'{text}' is not \"N/PERIOD\" such as \"10/10m\" (N 1 to 1000000, PERIOD 1ms to 1d)"),
                )
            }),
        }
    }

    fn guard(&mut self) -> Result<GuardSettings> {
        Ok(GuardSettings {
            throttle_user: self.rate("throttle.user")?,
            throttle_client: self.rate("throttle.client")?,
            throttle_delay: self
                .duration("throttle.delay", None)?
                .unwrap_or(DEFAULT_THROTTLE_DELAY),
            forward_client_ip: self.boolean("forward.client-ip", None)?.unwrap_or(false),
        })
    }

    /// `address` (alias `host`): one entry or a list; an entry without a port uses `port`.
    fn servers(&mut self, port: u16) -> Result<Vec<ServerAddress>> {
        let entries: Vec<&Value> = match self.take("address", Some("host"))? {
            None => {
                return Err(self.error(
                    "address",
                    "missing: the remote server's host name or IP address",
                ))
            }
            Some((_, Value::Array(a))) => a.iter().collect(),
            Some((_, v)) => vec![v],
        };
        crate::servers::parse_addresses(&entries, port).map_err(|msg| self.error("address", msg))
    }

    fn failover(&mut self) -> Result<FailoverSettings> {
        let backoff = self
            .duration("failover.backoff", None)?
            .unwrap_or(Duration::from_secs(1));
        let max_backoff = self
            .duration("failover.max-backoff", None)?
            .unwrap_or(Duration::from_secs(60));
        if max_backoff < backoff {
            return Err(self.error(
                "failover.max-backoff",
                format!("{max_backoff:?} is less than failover.backoff ({backoff:?})"),
            ));
        }
        Ok(FailoverSettings {
            backoff,
            max_backoff,
        })
    }

    fn daemon_client(&mut self, name: &str, base: Option<&Path>) -> Result<DaemonClientSettings> {
        self.take("type", None)?;
        let socket = match self.string("socket", None)? {
            Some(s) if !s.is_empty() => match base {
                Some(dir) => dir.join(s),
                None => PathBuf::from(s),
            },
            _ => {
                return Err(self.error(
                    "socket",
                    "missing: the daemon's socket (its daemon.socket), e.g. \"/run/remote-directory/socket\"",
                ))
            }
        };
        let directory = self.string("directory", None)?.unwrap_or(name.to_string());
        if directory.is_empty() || directory.len() > crate::wire::MAX_DIRECTORY_NAME {
            return Err(self.error(
                "directory",
                "expected the name of one of the daemon's directories",
            ));
        }
        Ok(DaemonClientSettings {
            name: name.to_string(),
            socket,
            directory,
            timeout: self
                .duration("timeout", None)?
                .unwrap_or(DEFAULT_DAEMON_TIMEOUT),
        })
    }

    /// Stalwart v0.11+ `cache.size` is a byte budget (default 1 MiB, on); `false`, `0` or
    /// `"disable"` turn the cache off. The older `cache.entries` gives the count itself.
    fn cache(&mut self) -> Result<Option<CacheSettings>> {
        let size = self.byte_size("cache.size")?;
        let entries = self.integer("cache.entries", None, 1, MAX_CACHE_ENTRIES)?;
        let ttl_positive = self.duration("cache.ttl.positive", None)?;
        let ttl_negative = self.duration("cache.ttl.negative", None)?;
        let auth_ttl = self.duration("cache.auth-ttl", None)?;
        let auth_negative_ttl = self.duration("cache.auth-negative-ttl", None)?;
        let stale_if_error = self.duration("cache.stale-if-error", None)?;
        let (entries, size_bytes) = match (size, entries) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "cache.entries",
                    "set together with cache.size; keep one (cache.size is Stalwart v0.11+'s byte budget, cache.entries the older count)",
                ))
            }
            (Some(0), None) => {
                let set = [
                    ("cache.auth-ttl", auth_ttl),
                    ("cache.auth-negative-ttl", auth_negative_ttl),
                    ("cache.stale-if-error", stale_if_error),
                ];
                if let Some((key, _)) = set.iter().find(|(_, v)| v.is_some()) {
                    return Err(self.error(key, "set while cache.size turns the cache off"));
                }
                return Ok(None);
            }
            (Some(bytes), None) => (bytes, Some(bytes)),
            (None, Some(n)) => (n as u64 * CACHE_BYTES_PER_ENTRY, None),
            (None, None) => (DEFAULT_CACHE_BYTES, Some(DEFAULT_CACHE_BYTES)),
        };
        let entries = (entries / CACHE_BYTES_PER_ENTRY).max(1) as usize;
        Ok(Some(CacheSettings {
            entries,
            size_bytes,
            ttl_positive: ttl_positive.unwrap_or(Duration::from_secs(3600)),
            ttl_negative: ttl_negative.unwrap_or(Duration::from_secs(600)),
            auth_ttl,
            auth_negative_ttl,
            stale_if_error,
        }))
    }

    /// A size in bytes: an integer, or a string with a unit (`"1mb"`, `"512k"`, 1024-based);
    /// `false`, `0` and `"disable"` are 0 (off).
    fn byte_size(&mut self, key: &'static str) -> Result<Option<u64>> {
        let max = MAX_CACHE_ENTRIES as u64 * CACHE_BYTES_PER_ENTRY;
        let bytes = match self.take(key, None)? {
            None => return Ok(None),
            Some((_, Value::Boolean(false))) => Some(0),
            Some((_, Value::Integer(i))) => u64::try_from(*i).ok(),
            Some((_, Value::String(s))) if s.eq_ignore_ascii_case("disable") => Some(0),
            Some((_, Value::String(s))) => parse_byte_size(s),
            Some(_) => None,
        };
        match bytes {
            Some(b) if b <= max => Ok(Some(b)),
            _ => Err(self.error(
                key,
                format!("expected a size in bytes up to {max} (an integer, or \"1mb\", \"512kb\"), or false to turn the cache off"),
            )),
        }
    }

    /// Every key left over is unknown; each is named, with the nearest known key when one
    /// is close enough to be a typo of it.
    pub fn reject_unknown(&self) -> Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let known: Vec<&str> = self.known.iter().map(|(k, _)| *k).collect();
        let unknown: Vec<String> = self
            .keys
            .keys()
            .map(|k| match crate::suggest::nearest(k, &known) {
                Some(near) => format!("{}.{k}: unknown key; did you mean '{near}'?", self.prefix),
                None => format!("{}.{k}: unknown key", self.prefix),
            })
            .collect();
        Err(Error::config(format!(
            "{}: {}",
            self.origin,
            unknown.join("; ")
        )))
    }

    /// After an error, when not every key has been asked for yet: the keys left over that are
    /// within typo distance of a key asked for (the last-part rule would guess too freely
    /// among keys not read yet).
    fn typos(&self) -> Option<String> {
        let known: Vec<&str> = self.known.iter().map(|(k, _)| *k).collect();
        let typos: Vec<String> = self
            .keys
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .filter_map(|k| {
                let near = known.iter().find(|n| {
                    crate::suggest::distance(k, n) <= crate::suggest::threshold(k.chars().count())
                })?;
                Some(format!(
                    "{}.{k}: unknown key; did you mean '{near}'?",
                    self.prefix
                ))
            })
            .collect();
        (!typos.is_empty()).then(|| typos.join("; "))
    }

    /// The keys this reader knows, aliases left out: what the effective configuration lists.
    #[cfg(test)]
    fn canonical_keys(&self) -> Vec<&'static str> {
        self.known
            .iter()
            .filter(|(_, alias)| !alias)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// `"500ms"`, `"30s"`, `"2m"`, `"1h"`, `"1d"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }?;
    Some(Duration::from_millis(ms))
}

/// `"1048576"`, `"1024k"`, `"1kb"`, `"1m"`, `"1mb"`, `"1g"`, `"1gb"` (any case, 1024-based).
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Lower case, one trailing dot removed: the form domains are compared in.
pub fn normalize_domain(d: &str) -> String {
    d.strip_suffix('.').unwrap_or(d).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Settings> {
        load_str(text, None)
    }

    fn config_error(text: &str) -> String {
        let e = cfg(text).expect_err("expected a CONFIG error");
        assert_eq!(e.kind(), crate::error::Kind::Config);
        e.to_string()
    }

    const MINIMAL: &str = "[directory.imap]\ntype = \"imap\"\naddress = \"imap.example.org\"\n";

    #[test]
    fn defaults_per_type_and_tls_mode() {
        let cases = [
            ("imap", "false", 143),
            ("imap", "true", 993),
            ("smtp", "false", 25),
            ("smtp", "true", 465),
            ("lmtp", "false", 24),
            ("lmtp", "true", 24),
        ];
        for (ty, implicit, port) in cases {
            let text = format!(
                "[directory.d]\ntype = \"{ty}\"\naddress = \"h\"\ntls.implicit = {implicit}\n"
            );
            let s = cfg(&text).unwrap();
            assert_eq!(s.servers[0].port, port, "{ty} implicit={implicit}");
        }
        let s = cfg(MINIMAL).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!((s.max_rcpts, s.max_auth_errors), (10, 3));
        assert_eq!((s.max_connections, s.min_idle), (10, 0));
        assert_eq!(s.wait_timeout, Duration::from_secs(30));
        assert!(!s.tls.implicit && !s.tls.dangerous_allow_invalid_certs);
        assert_eq!(s.tls.backend, TlsBackend::Rustls);
        assert!(s.domains.is_empty());
        let cache = s.cache.as_ref().unwrap();
        assert_eq!((cache.entries, cache.size_bytes), (4096, Some(1 << 20)));
        assert_eq!(cache.auth_ttl, None);
        assert!(!s.disabled && s.user.is_identity());
        assert_eq!(s.create_timeout, Duration::from_secs(30));
        assert_eq!(s.recycle_timeout, Duration::from_secs(5));
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.servers[0].to_string(), "imap.example.org:143");
        assert_eq!(
            s.failover,
            FailoverSettings {
                backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn both_key_generations_read_the_same() {
        // v0.4-v0.6: `address`, `tls.implicit`; v0.7 renamed them `host`, `tls.enable`.
        let old = "[directory.x]\ntype = \"smtp\"\naddress = \"mx\"\ntls.implicit = true\ntls.allow-invalid-certs = true\ncache.entries = 50\ncache.ttl.positive = 3600\ncache.ttl.negative = \"10m\"\n";
        let new = "[directory.x]\ntype = \"smtp\"\nhost = \"mx\"\n[directory.x.tls]\nenable = true\nallow-invalid-certs = true\n[directory.x.cache]\nentries = 50\nttl = {positive = \"1h\", negative = \"10m\"}\n";
        let a = cfg(old).unwrap();
        assert_eq!(a, cfg(new).unwrap());
        assert_eq!(a.servers[0].port, 465);
        let c = a.cache.unwrap();
        assert_eq!(
            (c.entries, c.size_bytes, c.ttl_positive, c.ttl_negative),
            (
                50,
                None,
                Duration::from_secs(3600),
                Duration::from_secs(600)
            )
        );
    }

    #[test]
    fn cache_size_is_a_byte_budget() {
        // (line, (entries, cache.size in bytes) or off)
        type Expected = Option<(usize, Option<u64>)>;
        let cases: &[(&str, Expected)] = &[
            ("", Some((4096, Some(1 << 20)))),
            ("cache.size = 2097152", Some((8192, Some(2 << 20)))),
            ("cache.size = \"2mb\"", Some((8192, Some(2 << 20)))),
            ("cache.size = \"512K\"", Some((2048, Some(512 << 10)))),
            ("cache.size = 100", Some((1, Some(100)))),
            ("cache.entries = 7", Some((7, None))),
            ("cache.size = false", None),
            ("cache.size = 0", None),
            ("cache.size = \"disable\"", None),
            ("cache.size = \"Disable\"", None),
        ];
        for (line, expected) in cases {
            let s = cfg(&format!("{MINIMAL}{line}\n")).unwrap();
            let got = s.cache.map(|c| (c.entries, c.size_bytes));
            assert_eq!(got, *expected, "{line}");
        }
        let errors = [
            (
                "cache.size = true",
                "directory.imap.cache.size: expected a size in bytes",
            ),
            (
                "cache.size = -1",
                "directory.imap.cache.size: expected a size in bytes",
            ),
            (
                "cache.size = \"lots\"",
                "directory.imap.cache.size: expected a size in bytes",
            ),
            (
                "cache.size = 1024\ncache.entries = 4",
                "directory.imap.cache.entries: set together with cache.size",
            ),
            (
                "cache.size = false\ncache.auth-ttl = \"1m\"",
                "directory.imap.cache.auth-ttl: set while cache.size turns the cache off",
            ),
        ];
        for (line, expected) in errors {
            let msg = config_error(&format!("{MINIMAL}{line}\n"));
            assert!(msg.contains(expected), "{line}: {msg}");
        }
    }

    #[test]
    fn hello_name_is_chosen_as_stalwart_chose_it() {
        let cases = [
            (
                Some("MX.example.org"),
                Some("old.example.org"),
                Some("vm.example.net"),
                Some("mx.example.org"),
            ),
            (
                None,
                Some("Old.Example.org"),
                Some("vm.example.net"),
                Some("old.example.org"),
            ),
            (None, None, Some("vm.example.net"), Some("vm.example.net")),
            (None, None, Some("vm"), None),
            (None, None, Some("bad name.example"), None),
            (None, None, None, None),
            (Some("localhost"), None, None, Some("localhost")),
        ];
        for (server, lookup, machine, expected) in cases {
            assert_eq!(
                choose_hello_name(server, lookup, machine).as_deref(),
                expected,
                "{server:?} {lookup:?} {machine:?}"
            );
        }
        let with = |root: &str| load_str(&format!("{root}\n{MINIMAL}"), None);
        assert_eq!(
            with("[server]\nhostname = \"mx.example.org\"")
                .unwrap()
                .hello_name
                .as_deref(),
            Some("mx.example.org")
        );
        assert_eq!(
            with("[lookup.default]\nhostname = \"old.example.org\"")
                .unwrap()
                .hello_name
                .as_deref(),
            Some("old.example.org")
        );
        let e = with("[server]\nhostname = \"mx.example.org\\r\\nRSET\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("server.hostname: \"mx.example.org\\r\\nRSET\" is not a host name"),
            "{e}"
        );
    }

    #[test]
    fn stalwart_v015_file_opens_as_it_is() {
        let text = r#"
[server]
hostname = "mx.example.org"
max-connections = 8192

[server.listener.smtp]
bind = ["[::]:25"]
protocol = "smtp"

[server.listener.submissions]
bind = ["[::]:465"]
protocol = "smtp"
tls.implicit = true

[storage]
data = "rocksdb"
blob = "rocksdb"
lookup = "rocksdb"
directory = "imap"

[store.rocksdb]
type = "rocksdb"
path = "/opt/stalwart/data"
compression = "lz4"

[directory.imap]
type = "imap"
disable = false
host = "imap.example.org"
port = 993
timeout = "15s"

[directory.imap.tls]
enable = true
allow-invalid-certs = false

[directory.imap.pool]
max-connections = 10

[directory.imap.pool.timeout]
create = "30s"
wait = "30s"
recycle = "30s"

[directory.imap.cache]
size = 1048576
ttl = { positive = "1h", negative = "10m" }

[directory.imap.lookup]
domains = ["example.org"]

[directory.lmtp]
type = "lmtp"
disable = true
host = "127.0.0.1"
port = 11200

[session.auth]
mechanisms = "[plain, login]"
directory = "'imap'"

[session.rcpt]
directory = "'imap'"
relay = false
"#;
        let s = load_str(text, Some("imap")).unwrap();
        assert_eq!(s.servers[0].to_string(), "imap.example.org:993");
        assert!(s.tls.implicit && !s.disabled);
        assert_eq!(s.timeout, Duration::from_secs(15));
        assert_eq!(s.create_timeout, Duration::from_secs(30));
        assert_eq!(s.recycle_timeout, Duration::from_secs(30));
        assert_eq!(s.cache.as_ref().map(|c| c.entries), Some(4096));
        assert_eq!(s.hello_name.as_deref(), Some("mx.example.org"));
        let lmtp = load_str(text, Some("lmtp")).unwrap();
        assert!(lmtp.disabled);
        let e = crate::Directory::open_str(text, Some("lmtp"))
            .err()
            .unwrap();
        assert_eq!(e.kind(), crate::error::Kind::Config);
        assert_eq!(
            e.to_string(),
            "directory.lmtp is disabled (disable = true): it is not opened"
        );
    }

    #[test]
    fn stalwart_v04_to_v06_file_opens_as_it_is() {
        let text = r#"
[server]
hostname = "mx.example.org"

[directory."lmtp"]
type = "lmtp"
address = "127.0.0.1"
port = 11200
timeout = "30s"

[directory."lmtp".tls]
implicit = false
allow-invalid-certs = true

[directory."lmtp".pool]
max-connections = 10

[directory."lmtp".pool.timeout]
create = "30s"
wait = "30s"
recycle = "30s"

[directory."lmtp".cache]
entries = 500
ttl = {positive = "1h", negative = "10m"}

[directory."lmtp".lookup]
domains = ["example.org"]
"#;
        let s = load_str(text, None).unwrap();
        assert_eq!(
            (s.protocol, s.servers[0].to_string()),
            (Protocol::Lmtp, "127.0.0.1:11200".to_string())
        );
        assert!(!s.tls.implicit && s.tls.dangerous_allow_invalid_certs);
        assert_eq!(
            s.cache.map(|c| (c.entries, c.size_bytes)),
            Some((500, None))
        );
    }

    #[test]
    fn stalwart_v07_to_v010_file_opens_as_it_is() {
        let text = r#"
[lookup.default]
hostname = "mail.example.org"

[directory."smtp"]
type = "smtp"
host = "mx.example.org"
port = 587
timeout = "1m"

[directory."smtp".tls]
enable = false
allow-invalid-certs = false

[directory."smtp".pool]
max-connections = 5

[directory."smtp".pool.timeout]
create = "10s"
wait = "30s"
recycle = "2s"

[directory."smtp".limits]
auth-errors = 3
rcpt = 5

[directory."smtp".cache]
entries = 1000
ttl = {positive = "1h", negative = "10m"}

[directory."smtp".lookup]
domains = ["example.org", "example.net"]
"#;
        let s = load_str(text, None).unwrap();
        assert_eq!(
            (s.protocol, s.servers[0].to_string()),
            (Protocol::Smtp, "mx.example.org:587".to_string())
        );
        assert_eq!(s.hello_name.as_deref(), Some("mail.example.org"));
        assert_eq!(
            (s.create_timeout, s.recycle_timeout),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        assert_eq!((s.max_rcpts, s.max_auth_errors), (5, 3));
        assert_eq!(s.cache.map(|c| c.entries), Some(1000));
    }

    #[test]
    fn user_mapping_keys_are_read_and_checked() {
        let s = cfg(&format!("{MINIMAL}lookup.domains = [\"example.org\"]\nuser = {{ lowercase = true, append-domain = \"Example.ORG.\", require-local-domain = true }}\n")).unwrap();
        assert_eq!(
            s.user,
            crate::user_map::UserMapping {
                lowercase: true,
                strip_domain: false,
                append_domain: Some("example.org".into()),
                require_local_domain: true,
            }
        );
        let errors = [
            (
                "user.strip-domain = true\nuser.append-domain = \"example.org\"",
                "directory.imap.user.append-domain: set together with user.strip-domain",
            ),
            (
                "user.require-local-domain = true",
                "directory.imap.user.require-local-domain: needs lookup.domains",
            ),
            (
                "user.append-domain = \"a b\"",
                "directory.imap.user.append-domain: 'a b' is not a domain",
            ),
            (
                "user.lowercase = \"yes\"",
                "directory.imap.user.lowercase: expected true or false",
            ),
            ("user.lower-case = true", "did you mean 'user.lowercase'?"),
        ];
        for (line, expected) in errors {
            let msg = config_error(&format!("{MINIMAL}{line}\n"));
            assert!(msg.contains(expected), "{line}: {msg}");
        }
    }

    #[test]
    fn all_keys_are_read() {
        let text = r#"
[directory.lmtp]
type = "lmtp"
address = "127.0.0.1"
port = 11200
timeout = "500ms"
tls.ca-file = "ca.pem"
limits = { rcpt = 5, auth-errors = 2 }
lookup.domains = ["Example.ORG.", "example.com"]
pool = { max-connections = 4, min-idle = 1, timeout.wait = "2m" }
cache.auth-ttl = "1m"
"#;
        let s = cfg(text).unwrap();
        assert_eq!(s.protocol, Protocol::Lmtp);
        assert_eq!(s.servers[0].port, 11200);
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.tls.ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!((s.max_rcpts, s.max_auth_errors), (5, 2));
        assert_eq!(s.domains, ["example.org", "example.com"]);
        assert_eq!((s.max_connections, s.min_idle), (4, 1));
        assert_eq!(s.wait_timeout, Duration::from_secs(120));
        assert_eq!(s.cache.unwrap().auth_ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn whole_stalwart_file_with_other_tables_opens() {
        let text = r#"
[server]
hostname = "mx.example.org"
[server.listener."smtp"]
bind = ["[::]:25"]
protocol = "smtp"
[storage]
directory = "imap"
[store."rocksdb"]
type = "rocksdb"
path = "/var/lib/stalwart"
[directory."imap"]
type = "imap"
address = "127.0.0.1"
port = 993
[directory."imap".pool]
max-connections = 10
[directory."imap".pool.timeout]
wait = "30s"
[directory."imap".tls]
implicit = true
allow-invalid-certs = true
[directory."imap".lookup]
domains = ["example.org"]
"#;
        let s = load_str(text, Some("imap")).unwrap();
        assert_eq!(s.servers[0].port, 993);
        assert!(s.tls.implicit);
        assert_eq!(s.name, "imap");
    }

    #[test]
    fn stalwart_doc_example_with_duplicate_table_fails_clearly() {
        // Stalwart's documentation defines [directory."imap".tls] twice.
        let text = "[directory.\"imap\"]\ntype = \"imap\"\naddress = \"imap.example.org\"\nport = 993\n\n[directory.\"imap\".tls]\nimplicit = true\nallow-invalid-certs = false\n\n[directory.\"lmtp\"]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = 11200\n\n[directory.\"imap\".tls]\nimplicit = false\nallow-invalid-certs = true\n";
        let msg = config_error(text);
        assert!(
            msg.starts_with(
                "<string>: line 15: table [directory.imap.tls] is defined twice, first at line 6 ("
            ),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("duplicate"), "{msg}");
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[directory.d]\naddress = \"h\"\n", "directory.d.type: missing"),
            ("[directory.d]\ntype = \"imap\"\n", "directory.d.address: missing"),
            ("[directory.d]\ntype = \"ldap\"\naddress = \"h\"\n", "directory.d.type: unknown type 'ldap'"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.allow-invalid-cert = true\n", "directory.d.tls.allow-invalid-cert: unknown key"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nport = \"993\"\n", "directory.d.port: expected an integer, found string"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nport = 70000\n", "directory.d.port: 70000 is out of range"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntimeout = \"soon\"\n", "directory.d.timeout: expected a duration"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntimeout = \"0s\"\n", "directory.d.timeout: expected a duration"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.implicit = \"yes\"\n", "directory.d.tls.implicit: expected true or false"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nhost = \"h\"\n", "directory.d.address: set twice"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nlookup.domains = [1]\n", "directory.d.lookup.domains: expected strings"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\npool.max-connections = 0\n", "directory.d.pool.max-connections: 0 is out of range"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.backend = \"gnutls\"\n", "directory.d.tls.backend: unknown backend"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h h\"\n", "directory.d.address: 'h h' is not a host"),
            ("[server]\nx = 1\n", "no [directory.<name>] table"),
            ("directory = 3\n", "directory: expected a table"),
            ("[directory.a]\ntype = \"imap\"\naddress = \"h\"\n[directory.b]\ntype = \"imap\"\naddress = \"h\"\n", "several directories defined ('a', 'b')"),
            ("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nlimits.rcpt = 0\n", "directory.d.limits.rcpt: 0 is out of range"),
        ];
        for (text, expected) in cases {
            let msg = config_error(text);
            assert!(msg.starts_with("<string>: "), "{msg}");
            assert!(
                msg.contains(expected),
                "for {text:?}: got {msg:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn effective_configuration_lists_exactly_the_known_keys() {
        let root: toml::Table = toml::from_str(MINIMAL).unwrap();
        let table = &root["directory"]["imap"];
        let (settings, reader) = read_directory("imap", table, "<string>", None, &None);
        let mut shown: Vec<&str> = settings
            .unwrap()
            .effective()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        let mut known = reader.canonical_keys();
        shown.sort_unstable();
        known.sort_unstable();
        known.dedup();
        assert_eq!(
            shown, known,
            "Settings::effective and KeyReader::settings disagree"
        );
    }

    #[test]
    fn unknown_keys_name_the_nearest_known_key() {
        let cases = [
            ("tls.allow-invalid-cert = true", "directory.d.tls.allow-invalid-cert: unknown key; did you mean 'tls.allow-invalid-certs'?"),
            ("timout = 3", "directory.d.timout: unknown key; did you mean 'timeout'?"),
            ("implicit = true", "directory.d.implicit: unknown key; did you mean 'tls.implicit'?"),
            ("tls.enabled = true", "directory.d.tls.enabled: unknown key; did you mean 'tls.enable'?"),
            ("bogus = 1", "directory.d.bogus: unknown key"),
        ];
        for (line, expected) in cases {
            let msg = config_error(&format!(
                "[directory.d]\ntype = \"imap\"\naddress = \"h\"\n{line}\n"
            ));
            assert_eq!(msg, format!("<string>: {expected}"));
        }
        let msg =
            config_error("[directory.d]\ntype = \"imap\"\naddress = \"h\"\nprot = 1\nbogus = 2\n");
        assert_eq!(msg, "<string>: directory.d.bogus: unknown key; directory.d.prot: unknown key; did you mean 'port'?");
    }

    #[test]
    fn every_directory_is_checked_on_its_own() {
        let text = "[directory.a]\ntype = \"imap\"\naddress = \"h\"\n[directory.b]\ntype = \"imap\"\n[directory.c]\ntype = \"smtp\"\naddress = \"h\"\nprot = 1\n";
        let all = load_all_str(text).unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(all[0].1.is_ok());
        assert!(all[1]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("directory.b.address: missing"));
        assert!(all[2]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("did you mean 'port'"));
        assert!(load_all_str("[server]\n")
            .unwrap_err()
            .to_string()
            .contains("no [directory.<name>] table"));
    }

    #[test]
    fn guard_keys_are_read_and_checked() {
        let s = cfg(&format!(
            "{MINIMAL}throttle.user = \"10/10m\"\nthrottle.client = \"20/1h\"\ncache.auth-negative-ttl = \"5m\"\n"
        ))
        .unwrap();
        let rate = |limit, secs| crate::throttle::Rate {
            limit,
            period: Duration::from_secs(secs),
        };
        assert_eq!(s.guard.throttle_user, Some(rate(10, 600)));
        assert_eq!(s.guard.throttle_client, Some(rate(20, 3600)));
        assert!(!s.guard.forward_client_ip);
        assert_eq!(s.guard.throttle_delay, Duration::from_millis(500));
        let delayed = cfg(&format!("{MINIMAL}throttle.delay = \"1ms\"\n")).unwrap();
        assert_eq!(delayed.guard.throttle_delay, Duration::from_millis(1));
        let forwarding = cfg(&format!("{MINIMAL}forward.client-ip = true\n")).unwrap();
        assert!(forwarding.guard.forward_client_ip);
        let cache = s.cache.unwrap();
        assert_eq!(cache.auth_negative_ttl, Some(Duration::from_secs(300)));
        assert_eq!(cache.auth_ttl, None);
        assert_eq!(cfg(MINIMAL).unwrap().guard, GuardSettings::default());
        for (line, expected) in [
            (
                "throttle.user = \"10\"",
                "directory.imap.throttle.user: '10' is not \"N/PERIOD\"",
            ),
            (
                "throttle.client = \"0/1m\"",
                "directory.imap.throttle.client: '0/1m' is not",
            ),
            (
                "throttle.client = 5",
                "directory.imap.throttle.client: expected a string",
            ),
            (
                "throttle.users = \"1/1m\"",
                "directory.imap.throttle.users: unknown key",
            ),
            (
                "cache.auth-negative-ttl = \"soon\"",
                "directory.imap.cache.auth-negative-ttl: expected a duration",
            ),
        ] {
            let msg = config_error(&format!("{MINIMAL}{line}\n"));
            assert!(msg.contains(expected), "{line}: {msg}");
        }
    }

    #[test]
    fn daemon_directories_name_a_socket_and_a_directory() {
        let t = load_target_str(
            "[directory.imap]\ntype = \"daemon\"\nsocket = \"/run/remote-directory/socket\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            t,
            Target::Daemon(DaemonClientSettings {
                name: "imap".into(),
                socket: "/run/remote-directory/socket".into(),
                directory: "imap".into(),
                timeout: DEFAULT_DAEMON_TIMEOUT,
            })
        );
        let t = load_target_str(
            "[directory.x]\ntype = \"daemon\"\nsocket = \"s\"\ndirectory = \"lmtp\"\ntimeout = \"5s\"\n",
            None,
        )
        .unwrap();
        let Target::Daemon(d) = t else { panic!() };
        assert_eq!(
            (d.directory.as_str(), d.timeout),
            ("lmtp", Duration::from_secs(5))
        );
        for (text, expected) in [
            (
                "[directory.x]\ntype = \"daemon\"\n",
                "directory.x.socket: missing",
            ),
            (
                "[directory.x]\ntype = \"daemon\"\nsocket = \"s\"\naddress = \"h\"\n",
                "directory.x.address: unknown key",
            ),
            (
                "[directory.x]\ntype = \"daemon\"\nsocket = \"s\"\ndirectory = \"\"\n",
                "directory.x.directory: expected the name",
            ),
        ] {
            let e = load_target_str(text, None).unwrap_err();
            assert!(e.to_string().contains(expected), "{text:?}: {e}");
        }
        let e = load_str("[directory.x]\ntype = \"daemon\"\nsocket = \"s\"\n", None).unwrap_err();
        assert!(e.to_string().contains("served by remote-directoryd"), "{e}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let msg = config_error("[directory.d]\ntype = \"imap\"\naddress = \n");
        assert!(msg.starts_with("<string>: line 3: "), "{msg}");
    }

    #[test]
    fn unknown_name_lists_the_names() {
        let e = load_str(MINIMAL, Some("smtp")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "<string>: no directory named 'smtp'; defined: 'imap'"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let e = load_file(Path::new("/nonexistent/remote-directory.toml"), None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/remote-directory.toml: cannot read configuration"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("rd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.ca-file = \"ca.pem\"\n",
        )
        .unwrap();
        let s = load_file(&path, None).unwrap();
        assert_eq!(
            s.tls.ca_file,
            Some(dir.join("ca.pem")),
            "relative to the file's folder"
        );
        std::fs::write(
            &path,
            "[directory.d]\ntype = \"imap\"\naddress = \"h\"\nbogus = 1\n",
        )
        .unwrap();
        let e = load_file(&path, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: directory.d.bogus: unknown key", path.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations() {
        let cases = [
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("1d", Some(86_400_000)),
            ("7", Some(7_000)),
            ("", None),
            ("s", None),
            ("5x", None),
            ("-1s", None),
            ("99999999999999999999s", None),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                ms.map(Duration::from_millis),
                "{text:?}"
            );
        }
    }
}
