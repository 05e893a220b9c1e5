//! The store a fleet of relays shares (`store.*`, cargo feature `redis`): Redis 7 or Valkey.
//!
//! It always sits behind the in-process cache ([`crate::cache::Shared`]) and the in-process
//! throttle tables ([`crate::throttle::FailureCounter`]): a key the process already holds
//! never costs a round trip, and whatever the store does (slow, down, refusing, garbage,
//! flushed) the call goes on with local state within `store.timeout`. A circuit breaker
//! stops paying that timeout on every call while the store is down: one call per second
//! tries it again, and sharing resumes by itself when it answers. Going down and coming
//! back are each written once to standard error and show in `remote_directory_store_up`.
//!
//! Keys are `<store.prefix><directory>:<kind>:<id>`, every one with a TTL. Recipient
//! results are keyed by the address; throttle counters by a SHA-256 of the user name or
//! client address; login results only by HMACs under the fleet's key (`store.secret-file`),
//! so the store never holds a password or an unkeyed hash of one.

use crate::cache::Shared;
use crate::config::Settings;
use crate::error::{printable, Error, Kind, Result};
use crate::secret::sasl_plain;
use crate::throttle::{FailureCounter, Rate, Windows, MAX_KEYS};
use redis::{Connection, RedisResult};
use ring::{digest, hmac};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the store is left alone after a failure before one call tries it again.
const RETRY: Duration = Duration::from_secs(1);
/// Idle store connections kept per handle.
const MAX_IDLE: usize = 16;
/// Longest value read back: a recipient's refusal text is one server line.
const MAX_VALUE: usize = 4096;

/// Counts one attempt in a window of `ARGV[2]` ms, or refuses it when the window already
/// holds `ARGV[1]`: returns -1 when counted, else the ms left in the window. Atomic, so
/// concurrent hosts never lose a count; the TTL is set when the window starts (and on a key
/// that somehow has none).
const BEGIN: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return redis.call('PTTL', KEYS[1])
end
return -1
";

/// Takes one attempt back, never below zero.
const GIVE_BACK: &str = r"
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) and tonumber(v) > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

struct Breaker {
    /// Not tried before this instant; `None` while the store answers.
    retry_at: Option<Instant>,
}

pub struct Store {
    client: redis::Client,
    /// `store.url` without its password, for messages.
    shown: String,
    /// `<prefix><directory>:`
    namespace: String,
    timeout: Duration,
    /// The fleet's HMAC key for login entries (`store.secret-file`).
    secret: Option<hmac::Key>,
    idle: Mutex<Vec<Connection>>,
    breaker: Mutex<Breaker>,
    begin: redis::Script,
    give_back: redis::Script,
    /// The directory's counters: `remote_directory_store_up`.
    stats: Arc<crate::stats::DirectoryStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded value is replaced whole: a panic cannot leave one torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// The store of a directory with `store.url`, prepared; nothing is connected yet (a
    /// store that is down at open is no reason to refuse to open). `rediss://` trusts the
    /// Mozilla roots, or only `tls.ca-file` when it is set.
    pub fn open(settings: &Settings) -> Result<Option<Self>> {
        let Some(store) = &settings.store else {
            return Ok(None);
        };
        let directory = &settings.name;
        let url = store.url.0.as_str();
        let shown = crate::effective::mask_url_password(url);
        let bad =
            |key: &str, what: String| Error::config(format!("directory.{directory}.{key}: {what}"));
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(bad(
                "store.url",
                format!("{shown}: expected a redis:// or rediss:// URL"),
            ));
        }
        let ca = match (&settings.tls.ca_file, url.starts_with("rediss://")) {
            (Some(path), true) => Some(
                crate::config::read_regular_file(path, 4 << 20)
                    .map_err(|e| bad("tls.ca-file", format!("{}: {e}", path.display())))?,
            ),
            _ => None,
        };
        // The client's own errors may quote the URL, password included: none is passed on.
        let client = match ca {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => redis::Client::open(url),
        }
        .map_err(|_| bad("store.url", format!("{shown}: not a usable Redis URL")))?;
        let secret = match &store.secret_file {
            Some(path) => {
                let bytes =
                    zeroize::Zeroizing::new(crate::config::read_regular_file(path, 4096).map_err(
                        |e| bad("store.secret-file", format!("{}: {e}", path.display())),
                    )?);
                let key = bytes.trim_ascii();
                if key.len() < 16 {
                    return Err(bad(
                        "store.secret-file",
                        format!(
                            "{}: holds {} bytes; at least 16 random bytes are needed (e.g. `openssl rand -hex 32`)",
                            path.display(),
                            key.len()
                        ),
                    ));
                }
                Some(hmac::Key::new(hmac::HMAC_SHA256, key))
            }
            None => None,
        };
        let stats = crate::stats::for_directory(directory);
        stats.set_store_up(true);
        Ok(Some(Store {
            client,
            shown,
            namespace: format!("{}{directory}:", store.prefix),
            timeout: store.timeout,
            secret,
            idle: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker { retry_at: None }),
            begin: redis::Script::new(BEGIN),
            give_back: redis::Script::new(GIVE_BACK),
            stats,
        }))
    }

    /// Whether the store answered its last request (or has not been asked yet).
    pub fn is_up(&self) -> bool {
        lock(&self.breaker).retry_at.is_none()
    }

    /// Runs `op` on a store connection within `store.timeout`, or `None` when the store is
    /// in its breaker pause or fails now (then the caller goes on with local state).
    fn run<T>(&self, op: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Option<T> {
        {
            let mut breaker = lock(&self.breaker);
            match breaker.retry_at {
                Some(at) if at > Instant::now() => return None,
                // This call tries the store again; the others keep away meanwhile.
                Some(_) => breaker.retry_at = Some(Instant::now() + RETRY),
                None => {}
            }
        }
        let idle = lock(&self.idle).pop();
        let mut connection = match idle.map_or_else(|| self.connect(), Ok) {
            Ok(c) => c,
            Err(e) => {
                self.failed(&e);
                return None;
            }
        };
        match op(&mut connection) {
            Ok(value) => {
                let mut idle = lock(&self.idle);
                if idle.len() < MAX_IDLE {
                    idle.push(connection);
                }
                drop(idle);
                self.answered();
                Some(value)
            }
            Err(e) => {
                // The connection may hold half a reply: it is dropped, never reused.
                self.failed(&e);
                None
            }
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    fn failed(&self, e: &redis::RedisError) {
        let mut breaker = lock(&self.breaker);
        let was_up = breaker.retry_at.is_none();
        breaker.retry_at = Some(Instant::now() + RETRY);
        drop(breaker);
        lock(&self.idle).clear();
        if was_up {
            self.stats.set_store_up(false);
            eprintln!(
                "remote-directory: store {} down ({}); going on with local state",
                self.shown,
                describe(e)
            );
        }
    }

    fn answered(&self) {
        let mut breaker = lock(&self.breaker);
        if breaker.retry_at.take().is_some() {
            drop(breaker);
            self.stats.set_store_up(true);
            eprintln!(
                "remote-directory: store {} back; sharing resumes",
                self.shown
            );
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.namespace)
    }

    /// `l:` and `n:` keys: HMACs under the fleet's key, hex.
    fn keyed(&self, data: &[u8]) -> Option<String> {
        self.secret
            .as_ref()
            .map(|key| hex(hmac::sign(key, data).as_ref()))
    }

    /// The key of a (user, secret) pair, and the key of the user's refusals.
    fn login_keys(&self, user: &str, secret: &str) -> Option<(String, String)> {
        let pair = self.keyed(&sasl_plain(user, secret))?;
        let user = self.keyed(format!("user\0{user}").as_bytes())?;
        Some((pair, user))
    }
}

/// What went wrong with the store, without anything the URL held.
fn describe(e: &redis::RedisError) -> String {
    let text = match e.kind() {
        redis::ErrorKind::Io if e.is_timeout() => "timed out".to_string(),
        redis::ErrorKind::Io => "connection failed".to_string(),
        kind => format!("{kind:?}"),
    };
    match e.code() {
        Some(code) => format!("{text}: {code}"),
        None => text,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// A stored recipient result: `OK`, or `REJECTED ` and the server's refusal as first
/// reported. Anything else (garbage, another version's value) is no entry.
fn decode_rcpt(value: &[u8]) -> Option<Result<()>> {
    if value.len() > MAX_VALUE {
        return None;
    }
    if value == b"OK" {
        return Some(Ok(()));
    }
    let text = value.strip_prefix(b"REJECTED ")?;
    Some(Err(Error::new(Kind::Rejected, printable(text))))
}

fn encode_rcpt(result: &Result<()>) -> Option<String> {
    match result {
        Ok(()) => Some("OK".into()),
        Err(e) if e.kind() == Kind::Rejected => Some(format!("REJECTED {e}")),
        Err(_) => None,
    }
}

impl Shared for Store {
    fn rcpt(&self, address: &str) -> Option<(Result<()>, Duration)> {
        let key = self.key("r", address);
        let (value, left): (Option<Vec<u8>>, i64) = self.run(|c| {
            redis::pipe()
                .get(&key)
                .pttl(&key)
                .query::<(Option<Vec<u8>>, i64)>(c)
        })?;
        let left = u64::try_from(left).ok().filter(|&l| l > 0)?;
        Some((decode_rcpt(&value?)?, Duration::from_millis(left)))
    }

    fn remember_rcpt(&self, address: &str, result: &Result<()>, ttl: Duration) {
        let Some(value) = encode_rcpt(result) else {
            return;
        };
        let key = self.key("r", address);
        self.run(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ms(ttl))
                .exec(c)
        });
    }

    fn login_known(&self, user: &str, secret: &str) -> Option<Duration> {
        let (pair, _) = self.login_keys(user, secret)?;
        let key = self.key("l", &pair);
        let left: i64 = self.run(|c| redis::cmd("PTTL").arg(&key).query(c))?;
        u64::try_from(left)
            .ok()
            .filter(|&l| l > 0)
            .map(Duration::from_millis)
    }

    fn remember_login(&self, user: &str, secret: &str, ttl: Option<Duration>) {
        let Some((pair, user)) = self.login_keys(user, secret) else {
            return;
        };
        let (login, refusals) = (self.key("l", &pair), self.key("n", &user));
        self.run(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic().del(&refusals).ignore();
            if let Some(ttl) = ttl {
                pipe.cmd("SET")
                    .arg(&login)
                    .arg("1")
                    .arg("PX")
                    .arg(ms(ttl))
                    .ignore();
            }
            pipe.exec(c)
        });
    }

    fn login_refused(&self, user: &str, secret: &str) -> bool {
        let Some((pair, user)) = self.login_keys(user, secret) else {
            return false;
        };
        let key = self.key("n", &user);
        let until: Option<u64> = self
            .run(|c| redis::cmd("HGET").arg(&key).arg(&pair).query(c))
            .flatten();
        until.is_some_and(|until| until > unix_ms())
    }

    fn remember_refusal(&self, user: &str, secret: &str, ttl: Duration) {
        let Some((pair, user)) = self.login_keys(user, secret) else {
            return;
        };
        let key = self.key("n", &user);
        let until = unix_ms().saturating_add(ms(ttl));
        self.run(|c| {
            redis::pipe()
                .atomic()
                .hset(&key, &pair, until)
                .ignore()
                .pexpire(&key, ms(ttl) as i64)
                .ignore()
                .exec(c)
        });
    }
}

/// A throttle table shared through the store, with this process's own table as the
/// fallback while the store cannot answer.
pub struct SharedCounter {
    store: Arc<Store>,
    /// `tu` (users) or `tc` (client addresses), in keys.
    kind: &'static str,
    rate: Rate,
    local: Windows,
}

impl SharedCounter {
    /// The table for `"user"` or `"client"` budgets.
    pub fn new(store: Arc<Store>, table: &'static str, rate: Rate) -> Self {
        SharedCounter {
            store,
            kind: if table == "user" { "tu" } else { "tc" },
            rate,
            local: Windows::new(rate, MAX_KEYS),
        }
    }

    /// User names and addresses are not secrets, but the store need not list them: a hash.
    fn key(&self, key: &str) -> String {
        let digest = digest::digest(&digest::SHA256, key.as_bytes());
        self.store.key(self.kind, &hex(&digest.as_ref()[..16]))
    }
}

impl FailureCounter for SharedCounter {
    fn begin(&self, key: &str, now: Instant) -> std::result::Result<(), Instant> {
        let stored = self.key(key);
        let answer: Option<i64> = self.store.run(|c| {
            self.store
                .begin
                .key(&stored)
                .arg(self.rate.limit)
                .arg(ms(self.rate.period))
                .invoke(c)
        });
        match answer {
            Some(left) if left < 0 => Ok(()),
            Some(left) => Err(now + Duration::from_millis(left as u64)),
            None => self.local.begin(key, now),
        }
    }

    fn give_back(&self, key: &str, now: Instant) {
        let stored = self.key(key);
        let done = self
            .store
            .run(|c| self.store.give_back.key(&stored).invoke::<i64>(c));
        if done.is_none() {
            self.local.give_back(key, now);
        }
    }

    fn reset(&self, key: &str) {
        let stored = self.key(key);
        self.store.run(|c| redis::cmd("DEL").arg(&stored).exec(c));
        self.local.reset(key);
    }

    fn has_attempts(&self, key: &str, now: Instant) -> bool {
        let stored = self.key(key);
        match self
            .store
            .run(|c| redis::cmd("GET").arg(&stored).query::<Option<i64>>(c))
        {
            Some(count) => count.is_some_and(|n| n > 0),
            None => self.local.has_attempts(key, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_values_round_trip_and_garbage_is_no_entry() {
        let rejected = Err(Error::new(Kind::Rejected, "550 5.1.1 no such user"));
        for result in [Ok(()), rejected] {
            let encoded = encode_rcpt(&result).unwrap();
            let back = decode_rcpt(encoded.as_bytes()).unwrap();
            assert_eq!(back.is_ok(), result.is_ok());
            if let (Err(a), Err(b)) = (&back, &result) {
                assert_eq!(a.to_string(), b.to_string());
            }
        }
        let temporary = Err(Error::new(Kind::Deferred, "451 later"));
        assert!(encode_rcpt(&temporary).is_none(), "never stored");
        let long = vec![b'x'; MAX_VALUE + 1];
        for garbage in [&b""[..], b"ok", b"OK ", b"REJECTED", b"1", &long] {
            assert!(decode_rcpt(garbage).is_none(), "{garbage:?}");
        }
        let controls = decode_rcpt(b"REJECTED 550 a\x1b[31m\0b")
            .unwrap()
            .unwrap_err();
        assert_eq!(controls.kind(), Kind::Rejected);
        assert!(!controls.to_string().contains('\0'), "{controls}");
    }
}
