//! The effective configuration of a directory: its settings written back as the keys of a
//! `[directory.<name>]` table, defaults filled in and secrets masked, as `postconf -n` and
//! `doveconf -n` show theirs (`directory-check --show-config`).
//!
//! [`Settings::effective`] is the one list of keys and values; [`render`] turns it into TOML
//! that opens again to the same settings (secrets aside). Masking is done here, from the key
//! names and the values, so a new key is masked without anyone remembering to.

use crate::config::{self, Settings, Target, TlsBackend};
use crate::error::{Error, Result};
use std::path::Path;
use std::time::Duration;
use toml::Value;

/// What replaces a secret in the output.
pub const MASK: &str = "********";

impl Settings {
    /// Every key of this directory with the value in force: `None` for a key that is not set
    /// and has no default. Keys are the current (v0.7+) names, never the older aliases.
    /// Adding a key to the reader means adding its line here: a test compares both lists.
    pub fn effective(&self) -> Vec<(&'static str, Option<Value>)> {
        let int = |i: u64| Some(Value::Integer(i64::try_from(i).unwrap_or(i64::MAX)));
        let dur = |d: Duration| Some(Value::String(format_duration(d)));
        let text = |s: &str| Some(Value::String(s.to_string()));
        let cache = self.cache.as_ref();
        let boolean = |b: bool| Some(Value::Boolean(b));
        vec![
            ("type", text(self.protocol.name())),
            ("disable", boolean(self.disabled)),
            ("address", self.address_value()),
            ("port", int(self.servers[0].port.into())),
            ("tls.implicit", Some(Value::Boolean(self.tls.implicit))),
            (
                "tls.backend",
                text(match self.tls.backend {
                    TlsBackend::Rustls => "rustls",
                    TlsBackend::Native => "native",
                }),
            ),
            (
                "tls.allow-invalid-certs",
                Some(Value::Boolean(self.tls.dangerous_allow_invalid_certs)),
            ),
            (
                "tls.ca-file",
                self.tls
                    .ca_file
                    .as_ref()
                    .and_then(|p| text(&p.display().to_string())),
            ),
            ("timeout", dur(self.timeout)),
            ("limits.rcpt", int(self.max_rcpts.into())),
            ("limits.auth-errors", int(self.max_auth_errors.into())),
            (
                "lookup.domains",
                Some(Value::Array(
                    self.domains.iter().map(|d| d.as_str().into()).collect(),
                )),
            ),
            ("pool.max-connections", int(self.max_connections as u64)),
            ("pool.min-idle", int(self.min_idle as u64)),
            ("pool.timeout.wait", dur(self.wait_timeout)),
            ("pool.timeout.create", dur(self.create_timeout)),
            ("pool.timeout.recycle", dur(self.recycle_timeout)),
            ("failover.backoff", dur(self.failover.backoff)),
            ("failover.max-backoff", dur(self.failover.max_backoff)),
            (
                "cache.size",
                match cache {
                    None => boolean(false),
                    Some(c) => c.size_bytes.and_then(int),
                },
            ),
            (
                "cache.entries",
                cache
                    .filter(|c| c.size_bytes.is_none())
                    .and_then(|c| int(c.entries as u64)),
            ),
            (
                "cache.ttl.positive",
                cache.and_then(|c| dur(c.ttl_positive)),
            ),
            (
                "cache.ttl.negative",
                cache.and_then(|c| dur(c.ttl_negative)),
            ),
            (
                "cache.auth-ttl",
                cache.and_then(|c| c.auth_ttl).and_then(dur),
            ),
            (
                "cache.auth-negative-ttl",
                cache.and_then(|c| c.auth_negative_ttl).and_then(dur),
            ),
            (
                "cache.stale-if-error",
                cache.and_then(|c| c.stale_if_error).and_then(dur),
            ),
            (
                "forward.client-ip",
                Some(Value::Boolean(self.guard.forward_client_ip)),
            ),
            (
                "throttle.user",
                self.guard
                    .throttle_user
                    .map(|r| Value::String(r.to_string())),
            ),
            ("throttle.delay", dur(self.guard.throttle_delay)),
            (
                "throttle.client",
                self.guard
                    .throttle_client
                    .map(|r| Value::String(r.to_string())),
            ),
            (
                "store.url",
                self.store
                    .as_ref()
                    .map(|st| Value::String(st.url.0.clone())),
            ),
            (
                "store.prefix",
                self.store
                    .as_ref()
                    .map(|st| Value::String(st.prefix.clone())),
            ),
            (
                "store.timeout",
                self.store.as_ref().and_then(|st| dur(st.timeout)),
            ),
            (
                "store.secret-file",
                self.store
                    .as_ref()
                    .and_then(|st| st.secret_file.as_ref())
                    .and_then(|p| text(&p.display().to_string())),
            ),
            ("user.lowercase", boolean(self.user.lowercase)),
            (
                "user.append-domain",
                self.user.append_domain.as_deref().and_then(text),
            ),
            (
                "user.require-local-domain",
                boolean(self.user.require_local_domain),
            ),
            ("user.strip-domain", boolean(self.user.strip_domain)),
        ]
    }
}

impl Settings {
    /// `address` as written back: the host of a single server (its port is `port`), or
    /// every server as `host:port` (`[v6]:port`).
    fn address_value(&self) -> Option<Value> {
        match self.servers.as_slice() {
            [one] => Some(Value::String(one.host.clone())),
            many => Some(Value::Array(
                many.iter().map(|s| Value::String(s.to_string())).collect(),
            )),
        }
    }
}

/// The effective configuration of directory `name` of the file, or of every directory when
/// `name` is `None`, separated by blank lines. Any invalid directory makes it an error that
/// lists every invalid directory, one per line: nothing is shown from a file that will not open.
pub fn show_file(path: &Path, name: Option<&str>) -> Result<String> {
    match name {
        Some(name) => config::load_target_file(path, Some(name)).map(|t| render_target(&t)),
        None => {
            let all = config::load_all_file(path)?;
            let (shown, errors) = split(all);
            if errors.is_empty() {
                Ok(shown.join("\n"))
            } else {
                Err(Error::config(errors.join("\n")))
            }
        }
    }
}

/// Checks every directory of the file, not stopping at the first invalid one. `Ok` holds
/// the report, one line per directory (`directory.NAME: ok` or the error); `Err` when the
/// file cannot be read or parsed, or when any directory is invalid (then its message is the
/// errors, one per line, and `report` has been filled in all the same).
pub fn check_file(path: &Path, report: &mut String) -> Result<()> {
    let all = config::load_all_file(path)?;
    let mut errors = Vec::new();
    for (name, settings) in all {
        match settings {
            Ok(_) => report.push_str(&format!("directory.{name}: ok\n")),
            Err(e) => {
                report.push_str(&format!("{e}\n"));
                errors.push(e.to_string());
            }
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Error::config(errors.join("\n"))),
    }
}

fn split(all: Vec<(String, Result<Target>)>) -> (Vec<String>, Vec<String>) {
    let mut shown = Vec::new();
    let mut errors = Vec::new();
    for (_, target) in all {
        match target {
            Ok(t) => shown.push(render_target(&t)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (shown, errors)
}

/// A remote server's directory as [`render`] shows it; a `type = "daemon"` client's with
/// its four keys.
pub fn render_target(target: &Target) -> String {
    match target {
        Target::Remote(settings) => render(settings),
        Target::Daemon(d) => {
            let text = |s: &str| Value::String(s.to_string());
            let keys = [
                ("type", text("daemon")),
                ("socket", text(&d.socket.display().to_string())),
                ("directory", text(&d.directory)),
                ("timeout", text(&format_duration(d.timeout))),
            ];
            let mut out = format!("[directory.{}]\n", toml_key(&d.name));
            for (key, value) in keys {
                out.push_str(&format!("{key} = {value}\n"));
            }
            out
        }
    }
}

/// `[directory.<name>]` and one `key = value` line per key; a key that is not set is a
/// comment saying so. Secrets are masked (see [`mask`]).
pub fn render(settings: &Settings) -> String {
    let mut out = format!("[directory.{}]\n", toml_key(&settings.name));
    // Not a key of the directory: it comes from the file's [server] or [lookup] table.
    match &settings.hello_name {
        Some(name) => out.push_str(&format!(
            "# EHLO/LHLO name (server.hostname, lookup.default.hostname or this host): {name}\n"
        )),
        None => out.push_str(
            "# EHLO/LHLO name: the local address as a literal, e.g. [192.0.2.1] (no server.hostname; this host's name has no dot)\n",
        ),
    }
    for (key, value) in settings.effective() {
        match value {
            Some(value) => out.push_str(&format!("{key} = {}\n", mask(key, value))),
            None => out.push_str(&format!("# {key} is not set\n")),
        }
    }
    out
}

/// A key whose last part names a secret or a password (and is not the name of a file that
/// holds one) is masked whole; a URL anywhere keeps its user but loses its password
/// (`redis://u:p@host` shows as `redis://u:********@host`).
pub fn mask(key: &str, value: Value) -> Value {
    let last = key.rsplit('.').next().unwrap_or(key);
    let secret_name = (last.contains("secret") || last.contains("password"))
        && !last.ends_with("-file")
        && !last.ends_with("-ttl");
    match value {
        Value::String(_) if secret_name => Value::String(MASK.into()),
        Value::String(s) => Value::String(mask_url_password(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| mask(key, v)).collect()),
        other => other,
    }
}

/// `scheme://user:password@rest` with the password replaced; anything else unchanged.
pub(crate) fn mask_url_password(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = s[authority_start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| authority_start + i);
    let authority = &s[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{MASK}{}",
                &s[..authority_start + colon + 1],
                &s[authority_start + at..]
            ),
            None => s.to_string(),
        },
        None => s.to_string(),
    }
}

/// A bare TOML key when it is one, else a quoted one.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_string()
    } else {
        Value::String(name.to_string()).to_string()
    }
}

/// The largest unit that divides the duration exactly: `1d`, `2h`, `30m`, `45s`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        let cases = [
            (500, "500ms"),
            (1_000, "1s"),
            (1_500, "1500ms"),
            (30_000, "30s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (3_600_000, "1h"),
            (86_400_000, "1d"),
        ];
        for (ms, text) in cases {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(crate::config::parse_duration(text), Some(d), "{text}");
        }
    }

    #[test]
    fn masking() {
        let s = |v: &str| Value::String(v.into());
        let cases = [
            (
                "store.url",
                "redis://u:pw@h:6379/0",
                "redis://u:********@h:6379/0",
            ),
            ("store.url", "rediss://:pw@h/0", "rediss://:********@h/0"),
            ("store.url", "redis://h:6379/0", "redis://h:6379/0"),
            ("store.url", "redis://user@h/0", "redis://user@h/0"),
            ("store.url", "redis://h/0?x=a:b@c", "redis://h/0?x=a:b@c"),
            ("store.secret", "hunter2", MASK),
            ("auth.password", "hunter2", MASK),
            ("store.secret-file", "/etc/rd/key", "/etc/rd/key"),
            ("address", "imap.example.org", "imap.example.org"),
        ];
        for (key, value, shown) in cases {
            assert_eq!(mask(key, s(value)), s(shown), "{key} = {value}");
        }
        assert_eq!(
            mask("x.password", Value::Array(vec![s("a")])),
            Value::Array(vec![s(MASK)])
        );
    }

    #[test]
    fn daemon_clients_are_shown_and_checked_too() {
        let text = "[directory.remote]\ntype = \"lmtp\"\naddress = \"h\"\n[directory.viad]\ntype = \"daemon\"\nsocket = \"/run/rd/socket\"\n";
        let all = config::load_all_str(text).unwrap();
        assert!(all.iter().all(|(_, t)| t.is_ok()), "{all:?}");
        let shown = render_target(all[1].1.as_ref().unwrap());
        assert_eq!(
            shown,
            "[directory.viad]\ntype = \"daemon\"\nsocket = \"/run/rd/socket\"\ndirectory = \"viad\"\ntimeout = \"".to_string()
                + &format_duration(match all[1].1.as_ref().unwrap() {
                    Target::Daemon(d) => d.timeout,
                    Target::Remote(_) => unreachable!(),
                })
                + "\"\n"
        );
        let again = config::load_all_str(&shown).unwrap();
        assert_eq!(format!("{:?}", again[0].1), format!("{:?}", all[1].1));
    }

    #[test]
    fn rendered_configuration_opens_to_the_same_settings() {
        let texts = [
            "[directory.imap]\ntype = \"imap\"\nhost = \"imap.example.org\"\n",
            "[directory.\"my lmtp\"]\ntype = \"lmtp\"\naddress = \"::1\"\nport = 11200\ntimeout = \"1500ms\"\ntls.enable = true\ntls.ca-file = \"/etc/ca.pem\"\nlookup.domains = [\"Example.ORG.\"]\npool = { max-connections = 3, min-idle = 1, timeout.recycle = \"1s\" }\ncache.entries = 7\ncache.auth-ttl = \"1m\"\ncache.auth-negative-ttl = \"5m\"\nthrottle.user = \"10/10m\"\nthrottle.client = \"3/1500ms\"\nthrottle.delay = \"20ms\"\nforward.client-ip = true\nuser = { lowercase = true, append-domain = \"example.org\", require-local-domain = true }\n",
            "[directory.smtp]\ntype = \"smtp\"\naddress = [\"mx1\", \"[2001:db8::1]:2525\"]\nport = 587\nfailover.backoff = \"2s\"\ncache.stale-if-error = \"1d\"\n",
            "[directory.x]\ntype = \"smtp\"\naddress = \"h\"\ndisable = true\ncache.size = false\nuser.strip-domain = true\n",
        ];
        for text in texts {
            let settings = load_str(text, None).unwrap();
            let shown = render(&settings);
            let again = load_str(&shown, None).unwrap_or_else(|e| panic!("{shown}\n{e}"));
            assert_eq!(again, settings, "{shown}");
        }
        let hello = "[server]\nhostname = \"MX.example.org\"\n[directory.x]\ntype = \"smtp\"\naddress = \"h\"\n";
        let shown = render(&load_str(hello, None).unwrap());
        assert!(
            shown.starts_with("[directory.x]\n# EHLO/LHLO name (server.hostname, lookup.default.hostname or this host): mx.example.org\n"),
            "{shown}"
        );
        let shown = render(&load_str(texts[0], None).unwrap());
        assert!(
            shown.starts_with("[directory.imap]\n# EHLO/LHLO name"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "\ntype = \"imap\"\ndisable = false\naddress = \"imap.example.org\"\nport = 143\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("\ncache.size = 1048576\n# cache.entries is not set\n"),
            "{shown}"
        );
        assert!(shown.contains("\n# tls.ca-file is not set\n"), "{shown}");
    }
}
