//! Several remote servers for one directory: the address list, each server's health and
//! backoff, one pool per server, and the order in which a call tries them.
//!
//! A connection-level failure (refused, timeout, TLS failure, a greeting such as 421 or
//! `* BYE`) marks a server down for `failover.backoff`, doubling up to
//! `failover.max-backoff`, and the same call goes on to the next server within its own
//! `timeout`. A reply to the question is an answer and is never asked of another server: a
//! wrong password reaches one server only. Once a server's backoff has passed, one call
//! tries it again (the others keep away meanwhile); when it answers, traffic is back on it,
//! since servers are always tried in the configured order.

use crate::config::{FailoverSettings, Settings};
use crate::error::{Error, Kind, Result};
use crate::net::Transport;
use crate::pool::Pool;
use crate::session::{Outcome, Session};
use crate::stats::{self, ConnectionEvent, DirectoryStats};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use toml::Value;

/// Most entries in `address`: a list longer than this is a mistake, and each entry costs a
/// share of a call's `timeout` when the ones before it fail.
const MAX_SERVERS: usize = 16;

/// One entry of `address`: a host name or IP address and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ServerAddress {
    /// `host:port`, or `[v6]:port`, as it appears in messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Reads one `address` entry: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6
/// address; an entry without a port takes `default_port`.
pub fn parse_address(entry: &str, default_port: u16) -> std::result::Result<ServerAddress, String> {
    let bad = || format!("'{entry}' is not a host name or IP address, with an optional :port");
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match entry.matches(':').count() {
            0 => (entry, None),
            1 => {
                let (host, port) = entry.split_once(':').ok_or_else(bad)?;
                (host, Some(port))
            }
            _ => {
                entry.parse::<Ipv6Addr>().map_err(|_| bad())?;
                (entry, None)
            }
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(p) if p > 0 && text.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => {
                return Err(format!(
                    "'{entry}': the port must be a number from 1 to 65535"
                ))
            }
        },
    };
    Ok(ServerAddress {
        host: host.to_string(),
        port,
    })
}

/// Reads the `address` key's entries (strings); a list is neither empty, nor longer than
/// [`MAX_SERVERS`], nor names a server twice.
pub fn parse_addresses(
    entries: &[&Value],
    default_port: u16,
) -> std::result::Result<Vec<ServerAddress>, String> {
    if entries.is_empty() {
        return Err("an empty list: name at least one server".into());
    }
    if entries.len() > MAX_SERVERS {
        return Err(format!(
            "{} servers listed; at most {MAX_SERVERS}",
            entries.len()
        ));
    }
    let mut out: Vec<ServerAddress> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::String(text) = entry else {
            return Err(format!(
                "expected a host name, an IP address or a list of them, found {}",
                entry.type_str()
            ));
        };
        let address = parse_address(text, default_port)?;
        if out.contains(&address) {
            return Err(format!("{address} is listed twice"));
        }
        out.push(address);
    }
    Ok(out)
}

/// A server's health: down since its last connection-level failure, until `retry_at`.
#[derive(Default)]
struct Health {
    /// Connection-level failures in a row; 0 while the server answers.
    failures: u32,
    /// Not tried before this instant (unless every server is down).
    retry_at: Option<Instant>,
    /// Why it was marked down, for the message when every server fails.
    last_error: Option<Error>,
}

/// One remote server: where it is, its idle connections and its health.
pub struct Server {
    /// `host:port`, as in messages and in the `server` label of the statistics.
    shown: String,
    transport: Transport,
    pool: Pool,
    health: Mutex<Health>,
}

impl Server {
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // Every update of Health is a few plain assignments: a panic cannot leave it torn.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may try this server now. When its backoff has just passed, this call
    /// is the one that tries it again, and the others keep away for one `timeout`.
    fn take_turn(&self, now: Instant, timeout: Duration) -> bool {
        let mut health = self.health();
        match health.retry_at {
            None => true,
            Some(at) if at <= now => {
                health.retry_at = Some(now + timeout);
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the server is not in its backoff now (for the min-idle keeper).
    fn is_up(&self, now: Instant) -> bool {
        match self.health().retry_at {
            None => true,
            Some(at) => at <= now,
        }
    }

    fn mark_up(&self, stats: &DirectoryStats) {
        let mut health = self.health();
        if health.failures > 0 {
            *health = Health::default();
            drop(health);
            stats.set_server_up(&self.shown, true);
        }
    }

    /// A connection-level failure: left alone for the backoff, doubled per failure in a row.
    fn mark_down(&self, error: &Error, failover: &FailoverSettings, stats: &DirectoryStats) {
        stats.set_server_up(&self.shown, false);
        let mut health = self.health();
        let doublings = health.failures.min(31);
        let backoff = failover
            .backoff
            .checked_mul(1 << doublings)
            .map_or(failover.max_backoff, |b| b.min(failover.max_backoff));
        health.failures = health.failures.saturating_add(1);
        health.retry_at = Some(Instant::now() + backoff);
        health.last_error = Some(error.clone());
    }

    /// The last failure, with how long the server is still left alone.
    fn down_message(&self, now: Instant) -> String {
        let health = self.health();
        let why = health
            .last_error
            .as_ref()
            .map_or_else(|| self.transport.address().to_string(), Error::to_string);
        let left = health
            .retry_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        format!("{why} (down: not tried again for {} ms)", left.as_millis())
    }
}

/// What trying the servers came to.
pub enum Reply {
    /// A server was reached and asked: its answer, whatever it is.
    Answer(Result<()>),
    /// Every server failed at connection level: nothing was asked. The error names each.
    Unreachable(Error),
}

/// The servers of one directory, in the configured order.
pub struct Servers {
    servers: Vec<Server>,
    failover: FailoverSettings,
    /// The directory's counters: connection events and which servers answer.
    stats: Arc<DirectoryStats>,
}

/// Who a call is for: the client a connection must serve (forward.client-ip), and whether
/// the caller may use the connections kept for callers without refused logins.
struct Caller {
    client: Option<IpAddr>,
    suspect: bool,
}

/// What one server came to for one call.
enum Attempt {
    Answer(Result<()>),
    Unreachable(Error),
}

impl Servers {
    pub fn new(settings: &Settings) -> Result<Self> {
        let stats = stats::for_directory(&settings.name);
        let servers: Vec<Server> = Transport::per_server(settings)?
            .into_iter()
            .map(|transport| Server {
                shown: transport.address().to_string(),
                transport,
                pool: Pool::new(
                    settings.max_connections,
                    settings.min_idle,
                    settings.wait_timeout,
                ),
                health: Mutex::new(Health::default()),
            })
            .collect();
        for server in &servers {
            stats.set_server_up(&server.shown, true);
        }
        Ok(Servers {
            servers,
            failover: settings.failover,
            stats,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter()
    }

    /// The first server not in its backoff (the first of all when every one is down): where
    /// calls go now, so where the min-idle keeper keeps connections ready.
    pub fn preferred(&self) -> &Server {
        let now = Instant::now();
        self.servers
            .iter()
            .find(|s| s.is_up(now))
            .unwrap_or(&self.servers[0])
    }

    /// Runs `op` on a session of the first server that can be reached. Servers in their
    /// backoff are passed over, unless every server is: then each is tried in order, since
    /// the call has nowhere else to go.
    pub fn call(
        &self,
        settings: &Settings,
        client: Option<IpAddr>,
        suspect: bool,
        op: impl Fn(Session) -> Outcome,
    ) -> Reply {
        let caller = Caller { client, suspect };
        let mut deadline = None;
        let mut failures: Vec<String> = Vec::new();
        let mut passed_over: Vec<&Server> = Vec::new();
        let mut last: Option<Error> = None;
        let count = self.servers.len();
        for (i, server) in self.servers.iter().enumerate() {
            if !server.take_turn(Instant::now(), settings.timeout) {
                passed_over.push(server);
                continue;
            }
            match self.attempt(server, settings, &caller, &mut deadline, count - i, &op) {
                Attempt::Answer(result) => return Reply::Answer(result),
                Attempt::Unreachable(e) => {
                    failures.push(e.to_string());
                    last = Some(e);
                }
            }
        }
        if last.is_none() {
            // Every server is in its backoff: try them all the same.
            let count = passed_over.len();
            for (i, server) in passed_over.drain(..).enumerate() {
                match self.attempt(server, settings, &caller, &mut deadline, count - i, &op) {
                    Attempt::Answer(result) => return Reply::Answer(result),
                    Attempt::Unreachable(e) => {
                        failures.push(e.to_string());
                        last = Some(e);
                    }
                }
            }
        }
        let Some(last) = last else {
            return Reply::Unreachable(Error::new(Kind::Internal, "no server configured"));
        };
        if count == 1 {
            return Reply::Unreachable(last);
        }
        let now = Instant::now();
        failures.extend(passed_over.iter().map(|s| s.down_message(now)));
        Reply::Unreachable(Error::new(
            last.kind(),
            format!("no server could be reached: {}", failures.join("; ")),
        ))
    }

    /// One server for one call. `deadline` is the call's, set when it first gets a
    /// connection slot; opening a connection may use `1/left` of what remains of it, so the
    /// servers after this one still get their turn when it does not answer.
    fn attempt(
        &self,
        server: &Server,
        settings: &Settings,
        caller: &Caller,
        deadline: &mut Option<Instant>,
        left: usize,
        op: &impl Fn(Session) -> Outcome,
    ) -> Attempt {
        let serves = |s: &Session| s.serves(settings, caller.client);
        let mut slot = match server.pool.acquire(caller.suspect, serves) {
            Ok(slot) => slot,
            // Busy here is local load, not the server's failure: no other server is asked.
            Err(e) => return Attempt::Answer(Err(e)),
        };
        if let Some(mut other) = slot.take_evicted() {
            // An idle connection of another client gave up its place: end it politely.
            other.set_deadline(Instant::now() + Duration::from_secs(1));
            other.close();
        }
        let start = Instant::now();
        let deadline = *deadline.get_or_insert_with(|| start + settings.timeout);
        if let Some((idle_since, mut session)) = slot.take_idle() {
            let recent = start.saturating_duration_since(idle_since) < RECYCLE_CHECK_AFTER;
            if !recent && !recycle(server, settings, &mut session, deadline) {
                self.stats
                    .record_connection(&server.shown, ConnectionEvent::Replaced);
            } else {
                session.set_deadline(deadline);
                match op(session) {
                    (Err(e), None) if e.kind() == Kind::Network => {
                        // Stale: its idle siblings probably went the same way.
                        self.stats
                            .record_connection(&server.shown, ConnectionEvent::Replaced);
                        server.pool.drain_idle();
                    }
                    (result, back) => {
                        self.stats
                            .record_connection(&server.shown, ConnectionEvent::Reused);
                        slot.release(back);
                        return Attempt::Answer(self.judge(server, result));
                    }
                }
            }
        }
        let share = deadline.saturating_duration_since(Instant::now()) / left.max(1) as u32;
        let opened = open_session(
            settings,
            &server.transport,
            Instant::now() + share,
            caller.client,
        );
        let mut session = match opened {
            Ok(session) => session,
            Err(e) => {
                self.stats
                    .record_connection(&server.shown, ConnectionEvent::Failed);
                server.mark_down(&e, &self.failover, &self.stats);
                return Attempt::Unreachable(e);
            }
        };
        self.stats
            .record_connection(&server.shown, ConnectionEvent::Opened);
        session.set_deadline(deadline);
        let (result, back) = op(session);
        slot.release(back);
        Attempt::Answer(self.judge(server, result))
    }

    /// A server that went silent or dropped the connection in the middle of a question is
    /// marked down (the next calls go elsewhere), but the question is not asked again
    /// elsewhere: the server may have acted on it. Any other result means it answers.
    fn judge(&self, server: &Server, result: Result<()>) -> Result<()> {
        match &result {
            Err(e) if matches!(e.kind(), Kind::Timeout | Kind::Network) => {
                server.mark_down(e, &self.failover, &self.stats);
                server.pool.drain_idle();
            }
            _ => server.mark_up(&self.stats),
        }
        result
    }

    /// Connections open now on every server (idle and in use).
    pub fn open_connections(&self) -> usize {
        self.servers.iter().map(|s| s.pool.open_connections()).sum()
    }

    pub fn idle_connections(&self) -> usize {
        self.servers.iter().map(|s| s.pool.idle_connections()).sum()
    }
}

/// A pooled session idle at least this long is checked (NOOP, within
/// `pool.timeout.recycle`) before it serves a call: a firewall or NAT that forgot the
/// connection drops packets silently, and the call would otherwise spend its whole `timeout`
/// on it. One used more recently is reused at once (no round trip added under load); if the
/// server closed it, the call notices and opens a new one as before.
const RECYCLE_CHECK_AFTER: Duration = Duration::from_secs(5);

/// Checks a session that was idle a while (NOOP) within `pool.timeout.recycle`. One that
/// fails is dropped, and so are its idle siblings: a server restart or a firewall that
/// forgot the connections took them all.
fn recycle(server: &Server, settings: &Settings, session: &mut Session, deadline: Instant) -> bool {
    session.set_deadline(deadline.min(Instant::now() + settings.recycle_timeout));
    let fine = session.check().is_ok();
    if !fine {
        server.pool.drain_idle();
    }
    fine
}

/// A new connection, opened by `limit` and within `pool.timeout.create`.
pub fn open_session(
    settings: &Settings,
    transport: &Transport,
    limit: Instant,
    client: Option<std::net::IpAddr>,
) -> Result<Session> {
    let create = Instant::now() + settings.create_timeout;
    Session::open(settings, transport, limit.min(create), client).map_err(|e| {
        if e.kind() == Kind::Timeout && create < limit {
            e.noted(&format!(
                "pool.timeout.create is {}",
                crate::effective::format_duration(settings.create_timeout)
            ))
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_entries() {
        let ok: &[(&str, &str, u16)] = &[
            ("imap.example.org", "imap.example.org", 993),
            ("imap.example.org:1143", "imap.example.org", 1143),
            ("192.0.2.7", "192.0.2.7", 993),
            ("192.0.2.7:25", "192.0.2.7", 25),
            ("[2001:db8::1]:993", "2001:db8::1", 993),
            ("[2001:db8::1]:143", "2001:db8::1", 143),
            ("[::1]", "::1", 993),
            ("2001:db8::1", "2001:db8::1", 993),
            ("mx_1.example.org:65535", "mx_1.example.org", 65535),
        ];
        for (entry, host, port) in ok {
            let a = parse_address(entry, 993).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!((a.host.as_str(), a.port), (*host, *port), "{entry}");
        }
        let bad = [
            "",
            "h h",
            "host:",
            "host:0",
            "host:70000",
            "host:+25",
            "host:port",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[2001:db8::1]:",
            "[example.org]:25",
            "a:b:c",
            ":25",
            "h\u{e9}te",
        ];
        for entry in bad {
            assert!(parse_address(entry, 993).is_err(), "{entry:?} accepted");
        }
    }

    #[test]
    fn display_brackets_ipv6() {
        let cases = [
            ("imap.example.org:993", "imap.example.org:993"),
            ("[2001:db8::1]:993", "[2001:db8::1]:993"),
            ("2001:db8::1", "[2001:db8::1]:143"),
        ];
        for (entry, shown) in cases {
            assert_eq!(parse_address(entry, 143).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn address_lists() {
        let s = |v: &str| Value::String(v.into());
        let (a, b) = (s("a.example"), s("b.example:25"));
        let list = parse_addresses(&[&a, &b], 587).unwrap();
        assert_eq!(list[0].to_string(), "a.example:587");
        assert_eq!(list[1].to_string(), "b.example:25");
        let dup = s("a.example:587");
        let errors = [
            (parse_addresses(&[], 25), "empty list"),
            (parse_addresses(&[&a, &dup], 587), "listed twice"),
            (parse_addresses(&[&Value::Integer(1)], 25), "found integer"),
        ];
        for (result, expected) in errors {
            let e = result.unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
        let many: Vec<Value> = (0..=MAX_SERVERS).map(|i| s(&format!("h{i}"))).collect();
        let refs: Vec<&Value> = many.iter().collect();
        assert!(parse_addresses(&refs, 25).unwrap_err().contains("at most"));
    }

    #[test]
    fn address_key_in_a_configuration() {
        let s = crate::config::load_str(
            "[directory.d]\ntype = \"smtp\"\nhost = [\"mx1\", \"mx2:2525\", \"[::1]\"]\nport = 587\nfailover = { backoff = \"500ms\", max-backoff = \"2m\" }\n",
            None,
        )
        .unwrap();
        let shown: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["mx1:587", "mx2:2525", "[::1]:587"]);
        assert_eq!(s.failover.backoff, Duration::from_millis(500));
        assert_eq!(s.failover.max_backoff, Duration::from_secs(120));
        let errors = [
            ("address = []", "directory.d.address: an empty list"),
            (
                "address = [\"a\", \"a:25\"]",
                "directory.d.address: a:25 is listed twice",
            ),
            (
                "address = \"a:0\"",
                "directory.d.address: 'a:0': the port must be",
            ),
            (
                "address = \"a\"\nfailover.backoff = \"2m\"",
                "directory.d.failover.max-backoff: 60s is less",
            ),
            (
                "address = \"a\"\nfailover.retries = 2",
                "directory.d.failover.retries: unknown key",
            ),
        ];
        for (lines, expected) in errors {
            let text = format!("[directory.d]\ntype = \"smtp\"\n{lines}\n");
            let e = crate::config::load_str(&text, None).unwrap_err();
            assert!(e.to_string().contains(expected), "{lines}: {e}");
        }
    }

    fn server(backoff_ms: u64, max_ms: u64) -> (Server, FailoverSettings) {
        let settings = crate::config::load_str(
            "[directory.d]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = 1\n",
            None,
        )
        .unwrap();
        let transport = Transport::per_server(&settings).unwrap().remove(0);
        let server = Server {
            shown: transport.address().to_string(),
            transport,
            pool: Pool::new(1, 0, Duration::from_secs(1)),
            health: Mutex::new(Health::default()),
        };
        let failover = FailoverSettings {
            backoff: Duration::from_millis(backoff_ms),
            max_backoff: Duration::from_millis(max_ms),
        };
        (server, failover)
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_resets_on_an_answer() {
        let (server, failover) = server(100, 350);
        let stats = stats::for_directory("servers-test-backoff");
        let e = Error::new(Kind::Network, "refused");
        let mut seen = Vec::new();
        for _ in 0..5 {
            server.mark_down(&e, &failover, &stats);
            let at = server.health().retry_at.unwrap();
            let ms = at.saturating_duration_since(Instant::now()).as_millis() + 5;
            seen.push(ms / 50 * 50);
        }
        assert_eq!(seen, [100, 200, 350, 350, 350]);
        server.mark_up(&stats);
        assert!(server.is_up(Instant::now()));
        server.mark_down(&e, &failover, &stats);
        let left = server.health().retry_at.unwrap() - Instant::now();
        assert!(left <= Duration::from_millis(100), "{left:?}: reset");
    }

    #[test]
    fn one_caller_retries_a_server_whose_backoff_passed() {
        let (server, failover) = server(10, 10);
        let stats = stats::for_directory("servers-test-turn");
        server.mark_down(&Error::new(Kind::Network, "refused"), &failover, &stats);
        let now = Instant::now();
        assert!(!server.take_turn(now, Duration::from_secs(5)), "in backoff");
        let later = now + Duration::from_millis(20);
        assert!(
            server.take_turn(later, Duration::from_secs(5)),
            "first after it"
        );
        assert!(
            !server.take_turn(later, Duration::from_secs(5)),
            "the others keep away while it is tried"
        );
        assert!(server
            .down_message(later)
            .contains("refused (down: not tried again"));
    }
}
