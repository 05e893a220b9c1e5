//! The Rust API: a directory handle that answers auth, rcpt and local-domain questions.

use crate::cache::Cache;
use crate::config::{self, normalize_domain, Protocol, Settings, Target};
use crate::daemon_client::DaemonClient;
use crate::error::{Error, Kind, Result};
use crate::pool::Drained;
use crate::servers::{Reply, Servers};
use crate::session::{Outcome, Session};
use crate::stats::{self, DirectoryStats, Op};
use crate::throttle::Throttle;
use crate::wire::Call;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest user name accepted by `directory_auth`, in bytes (NUL excluded).
pub const DIRECTORY_MAX_USER: usize = 320;
/// Longest secret accepted by `directory_auth`, in bytes.
pub const DIRECTORY_MAX_SECRET: usize = 4096;
/// Longest address accepted by `directory_rcpt`, in bytes.
pub const DIRECTORY_MAX_ADDRESS: usize = 320;
/// Longest domain accepted by `directory_is_local_domain`, in bytes.
pub const DIRECTORY_MAX_DOMAIN: usize = 255;

/// A directory: remote servers asked by this process, or one of remote-directoryd's
/// directories asked over its socket (`type = "daemon"`). Shared by any number of threads;
/// every call blocks the calling thread only.
pub struct Directory {
    backend: Backend,
    /// This process's counters for the directory's name (`stats`).
    stats: Arc<DirectoryStats>,
}

enum Backend {
    Remote(Remote),
    Daemon(DaemonClient),
}

/// A directory of remote servers: its settings, its servers (each with its TLS context and
/// idle connections) and its result cache.
struct Remote {
    inner: Arc<Inner>,
    /// The `pool.min-idle` keeper, when configured.
    keeper: Option<Keeper>,
}

struct Inner {
    settings: Settings,
    servers: Servers,
    cache: Option<Cache>,
    throttle: Option<Throttle>,
    stats: Arc<DirectoryStats>,
    /// The fleet's store (`store.url`), behind `cache` and `throttle`.
    #[cfg(feature = "redis")]
    store: Option<Arc<crate::store::Store>>,
}

thread_local! {
    /// What the thread's last OK answer needs said (today: that it was served stale).
    static NOTICE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

pub(crate) fn set_notice(text: String) {
    NOTICE.with(|n| *n.borrow_mut() = Some(text));
}

/// A note about this thread's last `auth` or `rcpt` that returned OK, when it needs one
/// (taken once): an answer served from an expired cache entry because no server could be
/// reached says so here. The C API puts it in `directory_last_error()`.
pub fn take_notice() -> Option<String> {
    NOTICE.with(|n| n.borrow_mut().take())
}

/// Forgets the thread's notice: every call starts without one.
fn clear_notice() {
    NOTICE.with(|n| n.borrow_mut().take());
}

impl Directory {
    /// Opens directory `name` (or the only one) of the configuration file at `path`.
    pub fn open(path: &Path, name: Option<&str>) -> Result<Self> {
        Self::with_target(config::load_target_file(path, name)?)
    }

    /// Opens directory `name` (or the only one) of configuration text.
    pub fn open_str(toml: &str, name: Option<&str>) -> Result<Self> {
        Self::with_target(config::load_target_str(toml, name)?)
    }

    /// A directory of remote servers, from settings made by [`config`].
    pub fn with_settings(settings: Settings) -> Result<Self> {
        Self::with_target(Target::Remote(settings))
    }

    fn with_target(target: Target) -> Result<Self> {
        let (name, backend) = match target {
            Target::Remote(settings) => (
                settings.name.clone(),
                Backend::Remote(Remote::with_settings(settings)?),
            ),
            Target::Daemon(settings) => (
                settings.name.clone(),
                Backend::Daemon(DaemonClient::new(settings)),
            ),
        };
        Ok(Directory {
            backend,
            stats: stats::for_directory(&name),
        })
    }

    /// The settings of a directory of remote servers; `None` for a `type = "daemon"` one.
    pub fn settings(&self) -> Option<&Settings> {
        self.remote().map(|r| &r.inner.settings)
    }

    /// Is `secret` the password of `user`? `Ok(())` when the server accepted it;
    /// `Kind::Rejected` when it refused it; other kinds when nothing was decided.
    /// The same as [`Directory::auth_from`] with an unknown client address.
    pub fn auth(&self, user: &str, secret: &str) -> Result<()> {
        self.auth_from(user, secret, None)
    }

    /// As [`Directory::auth`], for a login that came from `client_ip` (`None`: unknown). The
    /// address is what `throttle.client` counts and, with `forward.client-ip`, what the
    /// server is told.
    ///
    /// In order: a login known good (`cache.auth-ttl`) is OK and a password refused within
    /// `cache.auth-negative-ttl` is REJECTED, both without traffic; then a user or address
    /// beyond its `throttle.*` budget is `Kind::Throttled` (TEMPORARY), without traffic;
    /// only then is the server asked. Through the daemon, all of this happens there.
    pub fn auth_from(&self, user: &str, secret: &str, client_ip: Option<IpAddr>) -> Result<()> {
        self.measured(Op::Auth, || match &self.backend {
            Backend::Remote(r) => r.auth_from(user, secret, client_ip),
            Backend::Daemon(d) => {
                clear_notice();
                check_text("user", user, DIRECTORY_MAX_USER)?;
                check_secret(secret)?;
                let client_ip = client_ip.map(|ip| ip.to_string());
                d.call(Call::Auth {
                    user,
                    secret,
                    client_ip: client_ip.as_deref(),
                })
            }
        })
    }

    /// Does `address` exist? `Ok(())` when the server accepted it as a recipient;
    /// `Kind::Rejected` when it refused it; `Kind::Unsupported` on an IMAP directory.
    /// `lookup.domains` is not consulted.
    pub fn rcpt(&self, address: &str) -> Result<()> {
        self.measured(Op::Rcpt, || match &self.backend {
            Backend::Remote(r) => r.rcpt(address),
            Backend::Daemon(d) => {
                clear_notice();
                check_address(address)?;
                d.call(Call::Rcpt { address })
            }
        })
    }

    /// Is `domain` in `lookup.domains`? Case-insensitive; a trailing dot is ignored.
    /// `Kind::Rejected` when it is not. No network (but the daemon's socket for a
    /// `type = "daemon"` directory, whose `lookup.domains` is the daemon's).
    pub fn is_local_domain(&self, domain: &str) -> Result<()> {
        self.measured(Op::IsLocalDomain, || match &self.backend {
            Backend::Remote(r) => r.is_local_domain(domain),
            Backend::Daemon(d) => {
                check_text("domain", domain, DIRECTORY_MAX_DOMAIN)?;
                d.call(Call::IsLocalDomain { domain })
            }
        })
    }

    /// Runs one call and counts it in this process's statistics.
    fn measured(&self, op: Op, call: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = Instant::now();
        let outcome = call();
        self.stats.record_call(op, &outcome, started.elapsed());
        if outcome.as_ref().is_err_and(|e| e.kind() == Kind::Throttled) {
            self.stats.record_throttled();
        }
        outcome
    }

    /// Connections to remote servers open now in this process (idle and in use), on every
    /// server; 0 for a `type = "daemon"` directory.
    pub fn open_connections(&self) -> usize {
        self.remote()
            .map_or(0, |r| r.inner.servers.open_connections())
    }

    /// Connections open and idle now in this process, on every server.
    pub fn idle_connections(&self) -> usize {
        self.remote()
            .map_or(0, |r| r.inner.servers.idle_connections())
    }

    /// Whether the shared store (`store.url`) answered its last request: `None` without a
    /// store (and for a `type = "daemon"` directory). While it is `false`, calls go on with
    /// this process's own state.
    pub fn store_up(&self) -> Option<bool> {
        #[cfg(feature = "redis")]
        return self
            .remote()
            .and_then(|r| r.inner.store.as_ref())
            .map(|s| s.is_up());
        #[cfg(not(feature = "redis"))]
        None
    }

    /// Entries in this process's result cache now: (recipients, logins).
    pub fn cached_entries(&self) -> (usize, usize) {
        self.remote()
            .and_then(|r| r.inner.cache.as_ref())
            .map_or((0, 0), Cache::len)
    }

    fn remote(&self) -> Option<&Remote> {
        match &self.backend {
            Backend::Remote(r) => Some(r),
            Backend::Daemon(_) => None,
        }
    }
}

impl Remote {
    fn with_settings(settings: Settings) -> Result<Self> {
        if settings.disabled {
            return Err(Error::config(format!(
                "directory.{} is disabled (disable = true): it is not opened",
                settings.name
            )));
        }
        let servers = Servers::new(&settings).map_err(|e| {
            Error::new(
                e.kind(),
                format!("directory.{}.{}", settings.name, e.detail()),
            )
        })?;
        #[cfg(feature = "redis")]
        let store = crate::store::Store::open(&settings)?.map(Arc::new);
        #[cfg(feature = "redis")]
        let shared = store.clone().map(|s| s as Arc<dyn crate::cache::Shared>);
        #[cfg(not(feature = "redis"))]
        let shared = None;
        let cache = match &settings.cache {
            Some(c) => Some(Cache::new(c, shared)?),
            None => None,
        };
        let (user, client) = (settings.guard.throttle_user, settings.guard.throttle_client);
        #[cfg(feature = "redis")]
        let throttle = match &store {
            Some(store) => Throttle::with_tables(user, client, |kind, rate| {
                Box::new(crate::store::SharedCounter::new(store.clone(), kind, rate))
            }),
            None => Throttle::new(user, client),
        };
        #[cfg(not(feature = "redis"))]
        let throttle = Throttle::new(user, client);
        let stats = stats::for_directory(&settings.name);
        let inner = Arc::new(Inner {
            settings,
            servers,
            cache,
            throttle,
            stats,
            #[cfg(feature = "redis")]
            store,
        });
        let keeper = match inner.settings.min_idle {
            0 => None,
            _ => Some(Keeper::start(inner.clone())?),
        };
        Ok(Remote { inner, keeper })
    }

    fn auth_from(&self, user: &str, secret: &str, client_ip: Option<IpAddr>) -> Result<()> {
        clear_notice();
        check_text("user", user, DIRECTORY_MAX_USER)?;
        check_secret(secret)?;
        // From here on `user` is the name the server is asked about (`user.*`): the caches
        // and the throttles key on it; messages of our own quote the caller's `given` name.
        let given = user;
        let settings = &self.inner.settings;
        let mapped = settings
            .user
            .map(given, &settings.domains)
            .map_err(|why| Error::new(Kind::Rejected, format!("'{given}': {why}")))?;
        check_text("user", &mapped, DIRECTORY_MAX_USER)?;
        let user = mapped.as_str();
        // `::ffff:203.0.113.5` from a dual-stack socket is the same client as `203.0.113.5`.
        let client_ip = client_ip.map(|ip| ip.to_canonical());
        let inner = &*self.inner;
        let cache = inner.cache.as_ref();
        if cache.is_some_and(|c| c.login_known(user, secret)) {
            inner.stats.record_cache_hit(Op::Auth);
            return Ok(());
        }
        if cache.is_some_and(|c| c.login_refused(user, secret)) {
            inner.stats.record_cache_hit(Op::Auth);
            return Err(Error::new(
                Kind::Rejected,
                format!(
                    "the server refused this password for '{given}' within cache.auth-negative-ttl (cached)"
                ),
            ));
        }
        let now = Instant::now();
        let (ticket, suspect) = match &inner.throttle {
            Some(throttle) => {
                let suspect = throttle.suspect(user, client_ip, now);
                match throttle.begin(user, client_ip, now) {
                    Ok(ticket) => (Some(ticket), suspect),
                    Err(e) => {
                        // A guessing loop waits here (throttle.delay) instead of spinning.
                        std::thread::sleep(inner.settings.guard.throttle_delay);
                        // The budget is the mapped name's; the caller knows its own.
                        return Err(if given == user {
                            e
                        } else {
                            e.noted(&format!("login name '{given}' sent as '{user}'"))
                        });
                    }
                }
            }
            None => (None, false),
        };
        let result = match inner.call(client_ip, suspect, |session| {
            session.auth(&inner.settings, user, secret, client_ip)
        }) {
            Reply::Answer(result) => result,
            // The ticket drops: its attempts are given back, nothing was asked.
            Reply::Unreachable(e) => {
                return stale_if_error(e, || cache.is_some_and(|c| c.login_was_known(user, secret)))
            }
        };
        match &result {
            Ok(()) => {
                if let Some(cache) = cache {
                    cache.remember_login(user, secret);
                }
                if let Some(ticket) = ticket {
                    ticket.accepted(Instant::now());
                }
            }
            Err(e) if e.kind() == Kind::Rejected => {
                if let Some(cache) = cache {
                    cache.remember_refusal(user, secret);
                }
                if let Some(ticket) = ticket {
                    ticket.refused();
                }
            }
            // Nothing decided: the ticket gives its attempts back as it drops.
            Err(_) => {}
        }
        result
    }

    fn rcpt(&self, address: &str) -> Result<()> {
        clear_notice();
        check_address(address)?;
        let inner = &*self.inner;
        if inner.settings.protocol == Protocol::Imap {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "directory '{}' is of type imap: it cannot check recipients",
                    inner.settings.name
                ),
            ));
        }
        if let Some(known) = inner.cache.as_ref().and_then(|c| c.rcpt(address)) {
            inner.stats.record_cache_hit(Op::Rcpt);
            return known;
        }
        let cache = inner.cache.as_ref();
        match inner.call(None, false, |session| {
            session.rcpt(&inner.settings, address)
        }) {
            Reply::Answer(result) => {
                if let Some(cache) = cache {
                    cache.remember_rcpt(address, &result);
                }
                result
            }
            Reply::Unreachable(e) => {
                stale_if_error(e, || cache.is_some_and(|c| c.rcpt_existed(address)))
            }
        }
    }

    fn is_local_domain(&self, domain: &str) -> Result<()> {
        check_text("domain", domain, DIRECTORY_MAX_DOMAIN)?;
        let settings = &self.inner.settings;
        if settings.domains.contains(&normalize_domain(domain)) {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Rejected,
                format!(
                    "'{domain}' is not in directory.{}.lookup.domains",
                    settings.name
                ),
            ))
        }
    }
}

/// When no server could be reached (`e`, TEMPORARY): OK if `known` finds a positive answer
/// that expired less than `cache.stale-if-error` ago, with a notice saying so. Never for a
/// server's answer (TEMPORARY included), never from a refusal, and the stale entry is not
/// renewed by it.
fn stale_if_error(e: Error, known: impl FnOnce() -> bool) -> Result<()> {
    if known() {
        set_notice(format!(
            "OK from an expired cache entry (cache.stale-if-error): {e}"
        ));
        Ok(())
    } else {
        Err(e)
    }
}

impl Inner {
    /// Runs one operation on a session of the first server that can be reached
    /// (`servers.rs`), one that may serve `client` (forward.client-ip); `suspect` callers do
    /// not get the connections kept for everybody else (`pool.rs`). When no server can be
    /// reached, says so with an error naming each server.
    fn call(
        &self,
        client: Option<IpAddr>,
        suspect: bool,
        op: impl Fn(Session) -> Outcome,
    ) -> Reply {
        self.servers.call(&self.settings, client, suspect, op)
    }

    /// Ends idle sessions politely, with a short bound on each.
    fn close_idle(&self, mut drained: Drained<'_>) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for mut session in drained.take_sessions() {
            session.set_deadline(deadline);
            session.close();
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop(&self.inner.servers);
        }
        for server in self.inner.servers.iter() {
            self.inner.close_idle(server.pool().drain_idle());
        }
    }
}

/// Idle sessions older than this are replaced by the keeper: servers close connections that
/// have not logged in after a while (Dovecot: 3 minutes), and a fresh one is ready at once.
const KEEPER_MAX_IDLE: Duration = Duration::from_secs(60);
/// How often the keeper looks for old sessions when nothing wakes it.
const KEEPER_TICK: Duration = Duration::from_secs(1);
/// How long the keeper waits after a failed connection, or when the pool is full.
const KEEPER_BACKOFF: Duration = Duration::from_secs(5);
const KEEPER_FULL_PAUSE: Duration = Duration::from_millis(50);

/// A background thread that keeps `pool.min-idle` sessions connected and ready, so a call
/// does not wait for connect and TLS. The pool wakes it as soon as a call takes one.
struct Keeper {
    thread: std::thread::JoinHandle<()>,
}

impl Keeper {
    fn start(inner: Arc<Inner>) -> Result<Self> {
        let thread = std::thread::Builder::new()
            .name("remote-directory-keeper".into())
            .spawn(move || keep_idle(&inner))
            .map_err(|e| {
                Error::new(
                    Kind::Internal,
                    format!("cannot start the pool.min-idle thread: {e}"),
                )
            })?;
        Ok(Keeper { thread })
    }

    /// Stops the thread; waits for it, which is at most one connection attempt (`timeout`).
    fn stop(self, servers: &Servers) {
        for server in servers.iter() {
            server.pool().close();
        }
        let _ = self.thread.join();
    }
}

/// Keeps sessions ready on the server calls go to now (the first one up).
fn keep_idle(inner: &Inner) {
    loop {
        let server = inner.servers.preferred();
        let pool = server.pool();
        if !pool.wait_for_demand(KEEPER_TICK) {
            return;
        }
        if let Some(cutoff) = Instant::now().checked_sub(KEEPER_MAX_IDLE) {
            for server in inner.servers.iter() {
                inner.close_idle(server.pool().drain_idle_since(cutoff));
            }
        }
        while pool.idle_connections() < inner.settings.min_idle {
            let Some(slot) = pool.try_reserve() else {
                // Every connection is busy: look again shortly.
                if !pool.pause(KEEPER_FULL_PAUSE) {
                    return;
                }
                break;
            };
            let deadline = Instant::now() + inner.settings.timeout;
            match crate::servers::open_session(&inner.settings, server.transport(), deadline, None)
            {
                Ok(session) => slot.release(Some(session)),
                Err(_) => {
                    // The server is down or refusing: calls will report it; retry calmly.
                    if !pool.pause(KEEPER_BACKOFF) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Longest client address text accepted: an IPv6 address with an embedded IPv4 one is 45.
pub const DIRECTORY_MAX_CLIENT_IP: usize = 64;

/// A client address as the C API and the integrations receive it: IPv4 or IPv6 text,
/// without port, brackets or zone. Anything else is `Kind::InvalidInput`.
pub fn parse_client_ip(text: &str) -> Result<IpAddr> {
    check_text("client_ip", text, DIRECTORY_MAX_CLIENT_IP)?;
    text.parse().map_err(|_| {
        Error::input(format!(
            "client_ip '{text}' is not an IPv4 or IPv6 address (no port, brackets or zone)"
        ))
    })
}

/// No NUL, CR or LF anywhere; not empty; bounded.
fn check_common(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::input(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(Error::input(format!("{what} is longer than {max} bytes")));
    }
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(Error::input(format!("{what} contains NUL, CR or LF")));
    }
    Ok(())
}

/// User names, addresses and domains: no control characters at all.
fn check_text(what: &str, value: &str, max: usize) -> Result<()> {
    check_common(what, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(Error::input(format!("{what} contains a control character")));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<()> {
    check_common("secret", secret, DIRECTORY_MAX_SECRET)
}

/// A mailbox for `RCPT TO:<...>`: no angle brackets, spaces only inside a quoted local part.
fn check_address(address: &str) -> Result<()> {
    check_text("address", address, DIRECTORY_MAX_ADDRESS)?;
    if address.contains(['<', '>']) {
        return Err(Error::input("address contains '<' or '>'"));
    }
    let mut quoted = false;
    let mut escaped = false;
    for c in address.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => {
                return Err(Error::input("address contains a space outside quotes"))
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Error::input("address has an unterminated quote"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::open_str(
            "[directory.d]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = 1\nlookup.domains = [\"Example.org\", \"mail.example.net.\"]\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn local_domains_ignore_case_and_trailing_dot() {
        let d = dir();
        for yes in [
            "example.org",
            "EXAMPLE.ORG",
            "example.org.",
            "Mail.Example.Net",
        ] {
            assert!(d.is_local_domain(yes).is_ok(), "{yes}");
        }
        for no in [
            "example.com",
            "sub.example.org",
            "example.org..",
            "xample.org",
        ] {
            assert_eq!(
                d.is_local_domain(no).unwrap_err().kind(),
                Kind::Rejected,
                "{no}"
            );
        }
        assert_eq!(
            d.is_local_domain("").unwrap_err().kind(),
            Kind::InvalidInput
        );
    }

    #[test]
    fn bad_input_is_refused_before_any_connection() {
        let d = dir();
        let long = "a".repeat(DIRECTORY_MAX_ADDRESS + 1);
        for bad in [
            "",
            "a\r\nb@x",
            "a\nb",
            "a\0b",
            "<a@b>",
            "a>b",
            "a b@x",
            "\"a b@x",
            long.as_str(),
            "a\tb@x",
            "a\x1b@x",
        ] {
            let e = d.rcpt(bad).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad:?}: {e}");
        }
        assert!(check_address("\"john doe\"@example.org").is_ok());
        assert!(check_address("\"a\\\" b\"@x").is_ok());
        let e = d
            .auth("alice", &"p".repeat(DIRECTORY_MAX_SECRET + 1))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(!e.to_string().contains("ppp"), "never echo the secret");
        assert_eq!(d.auth("alice", "").unwrap_err().kind(), Kind::InvalidInput);
        assert_eq!(
            d.auth("alice", "a\rb").unwrap_err().kind(),
            Kind::InvalidInput
        );
        assert_eq!(
            d.auth(&"u".repeat(DIRECTORY_MAX_USER + 1), "x")
                .unwrap_err()
                .kind(),
            Kind::InvalidInput
        );
        assert_eq!(
            d.auth("al\nice", "x").unwrap_err().kind(),
            Kind::InvalidInput
        );
        assert_eq!(d.open_connections(), 0, "nothing was sent");
    }

    #[test]
    fn client_addresses_parse_or_are_invalid_input() {
        let good = [
            ("203.0.113.5", "203.0.113.5"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
            ("::ffff:203.0.113.5", "::ffff:203.0.113.5"),
        ];
        for (text, shown) in good {
            assert_eq!(parse_client_ip(text).unwrap().to_string(), shown, "{text}");
        }
        let long = "1".repeat(DIRECTORY_MAX_CLIENT_IP + 1);
        for bad in [
            "",
            "localhost",
            "203.0.113.5:25",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "203.0.113",
            "203.0.113.5 ",
            "1.2.3.4\n",
            long.as_str(),
        ] {
            let e = parse_client_ip(bad).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn rcpt_on_imap_is_unsupported() {
        let d = Directory::open_str(
            "[directory.i]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = 1\n",
            None,
        )
        .unwrap();
        assert_eq!(
            d.rcpt("alice@example.org").unwrap_err().kind(),
            Kind::Unsupported
        );
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let e = Directory::open_str(
            "[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.ca-file = \"/nonexistent/ca.pem\"\n",
            None,
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), Kind::Config);
        assert!(
            e.to_string()
                .contains("directory.d.tls.ca-file: /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
    }
}
