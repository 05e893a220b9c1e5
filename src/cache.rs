//! The result cache (Stalwart's `cache.*` keys).
//!
//! Recipient answers (OK and REJECTED, never TEMPORARY) are kept for `cache.ttl.positive` /
//! `cache.ttl.negative`. Logins are cached only when `cache.auth-ttl` is set, and then only
//! successful ones, as an HMAC of user and secret under a key drawn at open: the cache can
//! confirm a secret it is shown again, but holds nothing that reveals it.
//!
//! With `cache.stale-if-error`, entries are kept that much longer after they expire: a
//! positive answer (an existing recipient, a successful login) expired less than that long
//! ago is served when every server fails at connection level. A refusal never is.
//!
//! Entries live in 16 independently locked shards, so threads asking about different keys
//! rarely meet on a lock, and no lock is held across network I/O.

use crate::config::CacheSettings;
use crate::error::{Error, Result};
use crate::secret::sasl_plain;
use ring::hmac;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// One lock's worth of entries: key to (expiry, value).
type Shard<V> = HashMap<Box<str>, (Instant, V)>;

/// A bounded map whose entries expire, and are kept `grace` longer for stale answers. Each
/// shard holds at most `per_shard` entries; when a shard is full, entries past their grace
/// go first, then an arbitrary one.
struct TtlMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
    hasher: RandomState,
    grace: Duration,
}

impl<V: Clone> TtlMap<V> {
    fn new(size: usize, grace: Duration) -> Self {
        TtlMap {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: size.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            grace,
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // Entries are replaced whole; a panic cannot leave one half-written.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str, now: Instant) -> Option<V> {
        self.lookup(key, now, false)
    }

    /// An entry that has not expired, or expired less than `grace` ago.
    fn get_stale(&self, key: &str, now: Instant) -> Option<V> {
        self.lookup(key, now, true)
    }

    fn lookup(&self, key: &str, now: Instant, stale: bool) -> Option<V> {
        let mut shard = self.shard(key);
        let (expires, value) = shard.get(key)?;
        let kept_until = *expires + self.grace;
        if *expires > now || (stale && kept_until > now) {
            Some(value.clone())
        } else {
            if kept_until <= now {
                shard.remove(key);
            }
            None
        }
    }

    fn insert(&self, key: &str, value: V, ttl: Duration, now: Instant) {
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|_, (expires, _)| *expires + self.grace > now);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().cloned() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key.into(), (now + ttl, value));
    }

    fn remove(&self, key: &str) {
        self.shard(key).remove(key);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Results shared with the other handles and hosts of a fleet (the store of `store.url`,
/// cargo feature `redis`), asked only when this process does not know the answer. Every
/// method degrades to "not known" / nothing done when the store cannot answer in time.
pub trait Shared: Send + Sync {
    /// A recipient's stored answer and the time it has left.
    fn rcpt(&self, address: &str) -> Option<(Result<()>, Duration)>;
    fn remember_rcpt(&self, address: &str, result: &Result<()>, ttl: Duration);
    /// The time left to a stored successful login of this exact user and secret.
    fn login_known(&self, user: &str, secret: &str) -> Option<Duration>;
    /// Forgets the user's stored refusals and, with a TTL, stores the success.
    fn remember_login(&self, user: &str, secret: &str, ttl: Option<Duration>);
    fn login_refused(&self, user: &str, secret: &str) -> bool;
    fn remember_refusal(&self, user: &str, secret: &str, ttl: Duration);
}

pub struct Cache {
    /// Behind the local maps, never in front of them.
    shared: Option<Arc<dyn Shared>>,
    rcpts: TtlMap<Result<()>>,
    ttl_positive: Duration,
    ttl_negative: Duration,
    /// Drawn at open when logins are cached at all; never leaves the process.
    login_key: Option<hmac::Key>,
    /// Successful logins, with `cache.auth-ttl` (or a zero fresh TTL when only
    /// `cache.stale-if-error` asks for them).
    logins: Option<(TtlMap<hmac::Tag>, Duration)>,
    refusals: Option<(TtlMap<Refusals>, Duration)>,
}

/// Most refused passwords remembered per user: a phone retrying an old one, a user trying
/// two or three variants. Beyond that the oldest is forgotten.
const REFUSALS_PER_USER: usize = 4;

/// Refused passwords of one user, each as a keyed hash with its own expiry.
type Refusals = Vec<(Instant, hmac::Tag)>;

impl Cache {
    pub fn new(settings: &CacheSettings, shared: Option<Arc<dyn Shared>>) -> Result<Self> {
        let grace = settings.stale_if_error.unwrap_or(Duration::ZERO);
        let login_ttl = match (settings.auth_ttl, settings.stale_if_error) {
            (Some(ttl), _) => Some(ttl),
            (None, Some(_)) => Some(Duration::ZERO),
            (None, None) => None,
        };
        let login_key = match login_ttl.or(settings.auth_negative_ttl) {
            Some(_) => Some(
                hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).map_err(
                    |_| {
                        Error::new(
                            crate::Kind::Internal,
                            "no randomness for the login cache key",
                        )
                    },
                )?,
            ),
            None => None,
        };
        Ok(Cache {
            shared,
            rcpts: TtlMap::new(settings.entries, grace),
            ttl_positive: settings.ttl_positive,
            ttl_negative: settings.ttl_negative,
            login_key,
            logins: login_ttl.map(|ttl| (TtlMap::new(settings.entries, grace), ttl)),
            refusals: settings
                .auth_negative_ttl
                .map(|ttl| (TtlMap::new(settings.entries, Duration::ZERO), ttl)),
        })
    }

    /// A remembered answer for `address`: OK or REJECTED (with the server's words).
    pub fn rcpt(&self, address: &str) -> Option<Result<()>> {
        let now = Instant::now();
        if let Some(known) = self.rcpts.get(address, now) {
            return Some(known);
        }
        let (result, left) = self.shared.as_ref()?.rcpt(address)?;
        let result = result.map_err(Error::cached);
        self.rcpts.insert(address, result.clone(), left, now);
        Some(result)
    }

    /// Whether `address` was known to exist until less than `cache.stale-if-error` ago.
    pub fn rcpt_existed(&self, address: &str) -> bool {
        matches!(self.rcpts.get_stale(address, Instant::now()), Some(Ok(())))
    }

    /// Remembers a definite answer; anything else (TEMPORARY and the like) is not kept.
    pub fn remember_rcpt(&self, address: &str, result: &Result<()>) {
        let ttl = match result {
            Ok(()) => self.ttl_positive,
            Err(e) if e.kind() == crate::Kind::Rejected => self.ttl_negative,
            Err(_) => return,
        };
        let kept = result.clone().map_err(|e| e.cached());
        self.rcpts.insert(address, kept, ttl, Instant::now());
        if let Some(shared) = &self.shared {
            shared.remember_rcpt(address, result, ttl);
        }
    }

    /// Whether this exact user and secret logged in successfully within `cache.auth-ttl`.
    pub fn login_known(&self, user: &str, secret: &str) -> bool {
        if self.login_in(user, secret, false) {
            return true;
        }
        let (Some(shared), Some((logins, ttl)), Some(key)) =
            (&self.shared, &self.logins, &self.login_key)
        else {
            return false;
        };
        if ttl.is_zero() {
            // Remembered for cache.stale-if-error only: never an answer while servers answer.
            return false;
        }
        match shared.login_known(user, secret) {
            Some(left) => {
                let tag = hmac::sign(key, &sasl_plain(user, secret));
                logins.insert(user, tag, left.min(*ttl), Instant::now());
                true
            }
            None => false,
        }
    }

    /// Whether this exact user and secret logged in successfully, in an entry that expired
    /// less than `cache.stale-if-error` ago.
    pub fn login_was_known(&self, user: &str, secret: &str) -> bool {
        self.login_in(user, secret, true)
    }

    fn login_in(&self, user: &str, secret: &str, stale: bool) -> bool {
        let (Some((logins, _)), Some(key)) = (&self.logins, &self.login_key) else {
            return false;
        };
        match logins.lookup(user, Instant::now(), stale) {
            Some(tag) => hmac::verify(key, &sasl_plain(user, secret), tag.as_ref()).is_ok(),
            None => false,
        }
    }

    /// Remembers a successful login, and forgets the user's refused passwords.
    pub fn remember_login(&self, user: &str, secret: &str) {
        if let Some((refusals, _)) = &self.refusals {
            refusals.remove(user);
        }
        if let Some(shared) = &self.shared {
            let ttl = self.logins.as_ref().map(|(_, ttl)| *ttl);
            shared.remember_login(user, secret, ttl.filter(|t| !t.is_zero()));
        }
        if let (Some((logins, ttl)), Some(key)) = (&self.logins, &self.login_key) {
            let tag = hmac::sign(key, &sasl_plain(user, secret));
            logins.insert(user, tag, *ttl, Instant::now());
        }
    }

    /// Whether the server refused this exact user and secret within `cache.auth-negative-ttl`.
    pub fn login_refused(&self, user: &str, secret: &str) -> bool {
        let (Some((refusals, _)), Some(key)) = (&self.refusals, &self.login_key) else {
            return false;
        };
        let now = Instant::now();
        let message = sasl_plain(user, secret);
        let known = refusals.get(user, now).is_some_and(|tags| {
            tags.iter().any(|(expires, tag)| {
                *expires > now && hmac::verify(key, &message, tag.as_ref()).is_ok()
            })
        });
        if known {
            return true;
        }
        // Another host's refusal: kept here too, so a phone retrying costs one round trip.
        let shared = self
            .shared
            .as_ref()
            .is_some_and(|s| s.login_refused(user, secret));
        if shared {
            self.remember_refusal_here(user, secret);
        }
        shared
    }

    /// Remembers a refused password (only its keyed hash), here and in the shared store.
    pub fn remember_refusal(&self, user: &str, secret: &str) {
        self.remember_refusal_here(user, secret);
        if let (Some(shared), Some((_, ttl))) = (&self.shared, &self.refusals) {
            shared.remember_refusal(user, secret, *ttl);
        }
    }

    fn remember_refusal_here(&self, user: &str, secret: &str) {
        let (Some((refusals, ttl)), Some(key)) = (&self.refusals, &self.login_key) else {
            return;
        };
        let now = Instant::now();
        let tag = hmac::sign(key, &sasl_plain(user, secret));
        let mut tags = refusals.get(user, now).unwrap_or_default();
        tags.retain(|(expires, _)| *expires > now);
        if tags.len() >= REFUSALS_PER_USER {
            tags.remove(0);
        }
        tags.push((now + *ttl, tag));
        refusals.insert(user, tags, *ttl, now);
    }

    /// Entries held now (recipients, logins), for tests.
    pub fn len(&self) -> (usize, usize) {
        (
            self.rcpts.len(),
            self.logins.as_ref().map_or(0, |(l, _)| l.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Cache {
        fn new_local(settings: &CacheSettings) -> Result<Self> {
            Cache::new(settings, None)
        }
    }
    use crate::Kind;

    fn settings(entries: usize, auth_ttl: Option<Duration>) -> CacheSettings {
        CacheSettings {
            entries,
            size_bytes: None,
            ttl_positive: Duration::from_secs(60),
            ttl_negative: Duration::from_millis(50),
            auth_ttl,
            auth_negative_ttl: None,
            stale_if_error: None,
        }
    }

    #[test]
    fn keeps_ok_and_rejected_never_temporary() {
        let cache = Cache::new_local(&settings(100, None)).unwrap();
        cache.remember_rcpt("a@x", &Ok(()));
        cache.remember_rcpt("b@x", &Err(Error::new(Kind::Rejected, "550 no such user")));
        cache.remember_rcpt("c@x", &Err(Error::new(Kind::Deferred, "451 try later")));
        cache.remember_rcpt("d@x", &Err(Error::new(Kind::Timeout, "timed out")));
        assert!(matches!(cache.rcpt("a@x"), Some(Ok(()))));
        let rejected = cache.rcpt("b@x").unwrap().unwrap_err();
        assert_eq!(rejected.kind(), Kind::Rejected);
        assert_eq!(rejected.to_string(), "550 no such user (cached)");
        assert!(cache.rcpt("c@x").is_none() && cache.rcpt("d@x").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.rcpt("b@x").is_none(), "negative ttl expired");
        assert!(cache.rcpt("a@x").is_some(), "positive ttl not expired");
    }

    #[test]
    fn stays_bounded() {
        let cache = Cache::new_local(&settings(64, None)).unwrap();
        for i in 0..10_000 {
            cache.remember_rcpt(&format!("user{i}@x"), &Ok(()));
        }
        let (n, _) = cache.len();
        assert!(n <= 64, "{n} entries");
        assert!(n >= 32, "{n} entries: shards should fill");
    }

    #[test]
    fn logins_only_when_configured_and_only_the_same_secret() {
        let off = Cache::new_local(&settings(10, None)).unwrap();
        off.remember_login("alice", "pw");
        assert!(!off.login_known("alice", "pw"));
        let on = Cache::new_local(&settings(10, Some(Duration::from_millis(50)))).unwrap();
        on.remember_login("alice", "pw");
        assert!(on.login_known("alice", "pw"));
        assert!(!on.login_known("alice", "pw2"));
        assert!(!on.login_known("bob", "pw"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!on.login_known("alice", "pw"), "auth ttl expired");
    }

    #[test]
    fn refusals_only_the_same_secret_until_a_success_or_the_ttl() {
        let off = Cache::new_local(&settings(10, None)).unwrap();
        off.remember_refusal("alice", "bad");
        assert!(!off.login_refused("alice", "bad"), "not configured");
        let mut s = settings(10, None);
        s.auth_negative_ttl = Some(Duration::from_millis(80));
        let on = Cache::new_local(&s).unwrap();
        on.remember_refusal("alice", "bad");
        assert!(on.login_refused("alice", "bad"));
        assert!(
            !on.login_refused("alice", "bad2"),
            "another password goes on"
        );
        assert!(!on.login_refused("bob", "bad"), "another user goes on");
        on.remember_login("alice", "good");
        assert!(
            !on.login_refused("alice", "bad"),
            "a success forgets refusals"
        );
        assert!(!on.login_known("alice", "good"), "auth-ttl is not set");
        on.remember_refusal("alice", "bad");
        std::thread::sleep(Duration::from_millis(90));
        assert!(!on.login_refused("alice", "bad"), "negative ttl expired");
    }

    #[test]
    fn refusals_keep_the_newest_few_per_user() {
        let mut s = settings(10, None);
        s.auth_negative_ttl = Some(Duration::from_secs(60));
        let cache = Cache::new_local(&s).unwrap();
        for i in 0..=REFUSALS_PER_USER {
            cache.remember_refusal("alice", &format!("guess{i}"));
        }
        assert!(!cache.login_refused("alice", "guess0"), "oldest forgotten");
        for i in 1..=REFUSALS_PER_USER {
            assert!(cache.login_refused("alice", &format!("guess{i}")), "{i}");
        }
    }

    #[test]
    fn stale_if_error_serves_expired_positive_answers_only() {
        let stale = CacheSettings {
            stale_if_error: Some(Duration::from_millis(200)),
            ttl_positive: Duration::from_millis(30),
            ttl_negative: Duration::from_millis(30),
            ..settings(100, None)
        };
        let cache = Cache::new_local(&stale).unwrap();
        cache.remember_rcpt("a@x", &Ok(()));
        cache.remember_rcpt("b@x", &Err(Error::new(Kind::Rejected, "550 no such user")));
        cache.remember_login("alice", "pw");
        assert!(
            !cache.login_known("alice", "pw"),
            "no cache.auth-ttl: never fresh"
        );
        assert!(cache.login_was_known("alice", "pw"));
        assert!(!cache.login_was_known("alice", "other"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.rcpt("a@x").is_none(), "expired");
        assert!(cache.rcpt_existed("a@x"), "expired less than 200 ms ago");
        assert!(
            !cache.rcpt_existed("b@x"),
            "a refusal is never served stale"
        );
        assert!(!cache.rcpt_existed("c@x"));
        std::thread::sleep(Duration::from_millis(220));
        assert!(!cache.rcpt_existed("a@x") && !cache.login_was_known("alice", "pw"));
        let off = Cache::new_local(&settings(10, None)).unwrap();
        off.remember_rcpt("a@x", &Ok(()));
        assert!(off.rcpt_existed("a@x"), "fresh counts as known");
    }
}
