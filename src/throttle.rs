//! Failure budgets per user and per client address (`throttle.user`, `throttle.client`).
//!
//! Pure: every function takes the clock as an argument, so windows and bounds are tested
//! without sleeping.
//!
//! A budget is a fixed window per key that starts at the key's first counted attempt and
//! lasts PERIOD. An attempt is counted *before* it goes to the server and given back when it
//! did not fail (accepted, or nothing decided): so with any number of threads at once, at most
//! N refused logins per key and window ever reach the server, exactly. Beyond that the key is
//! throttled until its window ends; the entry then expires. Counting up front and giving back
//! is also what a shared store does with `INCR` and `DECR` on a key with a TTL, which is why
//! the storage sits behind [`FailureCounter`].

use crate::error::{Error, Kind};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `"N/PERIOD"`: at most N refused logins within PERIOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    /// `"10/10m"`, `"5/30s"`, `"100/1h"`; PERIOD as in every other duration key (a bare
    /// number is seconds). N is 1 to 1,000,000; PERIOD 1 ms to 1 day.
    pub fn parse(text: &str) -> Option<Rate> {
        let (n, period) = text.split_once('/')?;
        let limit: u32 = n.trim().parse().ok()?;
        let period = crate::config::parse_duration(period)?;
        let valid = (1..=1_000_000).contains(&limit)
            && !period.is_zero()
            && period <= Duration::from_secs(86_400);
        valid.then_some(Rate { limit, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, Human(self.period))
    }
}

/// Where failure counts live. [`Windows`] keeps them in this process; a store shared by a
/// fleet of relays implements the same four operations (`INCR`+`EXPIRE`, `DECR`, `DEL`,
/// `GET`), and [`Throttle`] does not know which one it talks to.
pub trait FailureCounter: Send + Sync {
    /// Counts one attempt for `key`, or refuses it with the end of the key's window when the
    /// window already holds `limit` attempts.
    fn begin(&self, key: &str, now: Instant) -> Result<(), Instant>;
    /// The attempt counted by `begin` did not fail: it no longer counts.
    fn give_back(&self, key: &str, now: Instant);
    /// Forgets `key` (a successful login resets its user).
    fn reset(&self, key: &str);
    /// Whether `key` has counted attempts in its current window (failed, or under way).
    fn has_attempts(&self, key: &str, now: Instant) -> bool;
}

const SHARDS: usize = 16;

/// Default bound on keys held per table: 16 shards of 4096. An entry is about 40 bytes (the
/// key is kept as a 64-bit keyed hash, never as the name), so a full table stays near 3 MiB
/// however many distinct users or addresses are tried.
pub const MAX_KEYS: usize = 65_536;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

#[derive(Default)]
struct Shard {
    windows: HashMap<u64, Window>,
    /// Keys in the order their windows started, oldest first, to expire and evict in order.
    /// An element whose start no longer matches its key's window is stale and skipped.
    order: VecDeque<(u64, Instant)>,
}

impl Shard {
    /// Drops windows that have ended, and the oldest live ones while over `cap`.
    fn trim(&mut self, now: Instant, period: Duration, cap: usize) {
        while let Some(&(key, start)) = self.order.front() {
            let live = self.windows.get(&key).is_some_and(|w| w.start == start);
            let ended = now.saturating_duration_since(start) >= period;
            if live && !ended && self.windows.len() < cap {
                break;
            }
            self.order.pop_front();
            if live {
                self.windows.remove(&key);
            }
        }
        // Resets leave stale elements behind; keep the queue within twice the table.
        if self.order.len() > 2 * cap {
            let windows = &self.windows;
            self.order
                .retain(|(key, start)| windows.get(key).is_some_and(|w| w.start == *start));
        }
    }
}

/// Fixed windows in this process: sharded, bounded, oldest out first.
pub struct Windows {
    rate: Rate,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl Windows {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Windows {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> (MutexGuard<'_, Shard>, u64) {
        let hash = self.hasher.hash_one(key);
        // Every update is a single insert or remove: a panic cannot leave a shard half-done.
        let shard = self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (shard, hash)
    }

    /// The key's window if it is still running.
    fn current(&self, shard: &Shard, hash: u64, now: Instant) -> Option<Window> {
        shard
            .windows
            .get(&hash)
            .filter(|w| now.saturating_duration_since(w.start) < self.rate.period)
            .copied()
    }

    /// Keys held now, for tests and statistics.
    pub fn keys_held(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).windows.len())
            .sum()
    }
}

impl FailureCounter for Windows {
    fn begin(&self, key: &str, now: Instant) -> Result<(), Instant> {
        let (mut shard, hash) = self.shard(key);
        match self.current(&shard, hash, now) {
            Some(w) if w.count >= self.rate.limit => Err(w.start + self.rate.period),
            Some(w) => {
                shard.windows.insert(
                    hash,
                    Window {
                        count: w.count + 1,
                        ..w
                    },
                );
                Ok(())
            }
            None => {
                shard.trim(now, self.rate.period, self.per_shard);
                shard.windows.insert(
                    hash,
                    Window {
                        start: now,
                        count: 1,
                    },
                );
                shard.order.push_back((hash, now));
                Ok(())
            }
        }
    }

    fn give_back(&self, key: &str, now: Instant) {
        let (mut shard, hash) = self.shard(key);
        if let Some(w) = self.current(&shard, hash, now) {
            shard.windows.insert(
                hash,
                Window {
                    count: w.count.saturating_sub(1),
                    ..w
                },
            );
        }
    }

    fn reset(&self, key: &str) {
        let (mut shard, hash) = self.shard(key);
        shard.windows.remove(&hash);
    }

    fn has_attempts(&self, key: &str, now: Instant) -> bool {
        let (shard, hash) = self.shard(key);
        self.current(&shard, hash, now).is_some_and(|w| w.count > 0)
    }
}

/// The two budgets of one handle.
pub struct Throttle {
    user: Option<(Rate, Box<dyn FailureCounter>)>,
    client: Option<(Rate, Box<dyn FailureCounter>)>,
}

/// Attempts counted for one login, to settle when its answer is known.
#[must_use]
pub struct Ticket<'a> {
    throttle: &'a Throttle,
    user: Option<&'a str>,
    client: Option<String>,
}

impl Throttle {
    /// `None` when neither budget is configured.
    pub fn new(user: Option<Rate>, client: Option<Rate>) -> Option<Self> {
        Self::with_tables(user, client, |_, rate| {
            Box::new(Windows::new(rate, MAX_KEYS))
        })
    }

    /// As [`Throttle::new`], with the tables `table` makes (for `"user"` and `"client"`),
    /// e.g. counters shared by a fleet through a store.
    pub fn with_tables(
        user: Option<Rate>,
        client: Option<Rate>,
        table: impl Fn(&'static str, Rate) -> Box<dyn FailureCounter>,
    ) -> Option<Self> {
        (user.is_some() || client.is_some()).then(|| Throttle {
            user: user.map(|rate| (rate, table("user", rate))),
            client: client.map(|rate| (rate, table("client", rate))),
        })
    }

    /// Whether this user or address has attempts in its current window: such callers do not
    /// get the connections kept for everybody else.
    pub fn suspect(&self, user: &str, client: Option<IpAddr>, now: Instant) -> bool {
        let user_seen = self
            .user
            .as_ref()
            .is_some_and(|(_, c)| c.has_attempts(user, now));
        user_seen
            || match (&self.client, client) {
                (Some((_, c)), Some(ip)) => c.has_attempts(&ip.to_string(), now),
                _ => false,
            }
    }

    /// Counts one login attempt against both budgets, or says who is throttled until when
    /// (`Kind::Throttled`, nothing counted).
    pub fn begin<'a>(
        &'a self,
        user: &'a str,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Ticket<'a>, Error> {
        let mut ticket = Ticket {
            throttle: self,
            user: None,
            client: None,
        };
        if let Some((rate, counter)) = &self.user {
            counter
                .begin(user, now)
                .map_err(|until| throttled(&format!("user '{user}'"), "user", *rate, until, now))?;
            ticket.user = Some(user);
        }
        if let (Some((rate, counter)), Some(ip)) = (&self.client, client) {
            let key = ip.to_string();
            // On refusal `ticket` drops here and gives the user's attempt back.
            counter
                .begin(&key, now)
                .map_err(|until| throttled(&format!("client {ip}"), "client", *rate, until, now))?;
            ticket.client = Some(key);
        }
        Ok(ticket)
    }
}

impl Ticket<'_> {
    /// The server refused the password: the attempts stay counted.
    pub fn refused(mut self) {
        self.user = None;
        self.client = None;
    }

    /// The server accepted the password: the user starts afresh. The address keeps its count,
    /// or one valid account would let a client reset its own budget between guesses.
    pub fn accepted(mut self, now: Instant) {
        if let (Some(user), Some((_, counter))) = (self.user.take(), &self.throttle.user) {
            counter.reset(user);
        }
        self.give_back(now);
    }

    fn give_back(&mut self, now: Instant) {
        if let (Some(user), Some((_, counter))) = (self.user.take(), &self.throttle.user) {
            counter.give_back(user, now);
        }
        if let (Some(key), Some((_, counter))) = (self.client.take(), &self.throttle.client) {
            counter.give_back(&key, now);
        }
    }
}

/// Nothing was decided (a network failure, a 4xx, a panic): the attempts do not count.
impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.give_back(Instant::now());
    }
}

fn throttled(who: &str, key: &str, rate: Rate, until: Instant, now: Instant) -> Error {
    let left = until.saturating_duration_since(now);
    let wall = SystemTime::now() + left;
    // Whole seconds, rounded up: a client told "in 0s" would retry at once.
    let left_secs = Duration::from_secs((left.as_millis() as u64).div_ceil(1_000).max(1));
    Error::new(
        Kind::Throttled,
        format!(
            "throttled: {who} reached {} refused logins within {} (throttle.{key} = \"{rate}\"); not asked again until {} (in {})",
            rate.limit,
            Human(rate.period),
            Utc(wall),
            Human(left_secs),
        ),
    )
}

/// A duration the way the configuration writes it: `10m`, `90s`, `500ms`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        match units.iter().find(|(size, _)| ms % size == 0 && ms >= *size) {
            Some((size, unit)) => write!(f, "{}{unit}", ms / size),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// A wall-clock time as `2026-12-04T13:50:10Z`.
struct Utc(SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self
            .0
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (days, rest) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u32, secs: u64) -> Rate {
        Rate {
            limit,
            period: Duration::from_secs(secs),
        }
    }

    #[test]
    fn rates_parse() {
        let cases: &[(&str, Option<(u32, u64)>)] = &[
            ("10/10m", Some((10, 600_000))),
            ("5/30s", Some((5, 30_000))),
            ("1/500ms", Some((1, 500))),
            (" 3 / 1h ", Some((3, 3_600_000))),
            ("100/60", Some((100, 60_000))),
            ("1000000/1d", Some((1_000_000, 86_400_000))),
            ("0/1m", None),
            ("1000001/1m", None),
            ("10/0s", None),
            ("10/2d", None),
            ("10", None),
            ("/1m", None),
            ("10/", None),
            ("-1/1m", None),
            ("ten/1m", None),
            ("10/1x", None),
            ("10/1m/2", None),
        ];
        for (text, expected) in cases {
            let expected = expected.map(|(limit, ms)| Rate {
                limit,
                period: Duration::from_millis(ms),
            });
            assert_eq!(Rate::parse(text), expected, "{text:?}");
        }
        assert_eq!(Rate::parse("10/600s").unwrap().to_string(), "10/10m");
        assert_eq!(Rate::parse("3/90s").unwrap().to_string(), "3/90s");
        assert_eq!(Rate::parse("3/1500ms").unwrap().to_string(), "3/1500ms");
    }

    #[test]
    fn window_allows_limit_then_refuses_until_it_ends() {
        let w = Windows::new(rate(3, 60), 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(w.begin("alice", t0 + Duration::from_secs(i)), Ok(()));
        }
        let end = t0 + Duration::from_secs(60);
        assert_eq!(w.begin("alice", t0 + Duration::from_secs(10)), Err(end));
        assert_eq!(w.begin("alice", end - Duration::from_millis(1)), Err(end));
        assert_eq!(w.begin("bob", t0), Ok(()), "keys are independent");
        assert_eq!(w.begin("alice", end), Ok(()), "a new window");
        assert!(w.has_attempts("alice", end));
        assert!(!w.has_attempts("carol", end));
    }

    #[test]
    fn given_back_attempts_do_not_count_and_reset_forgets() {
        let w = Windows::new(rate(2, 60), 100);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(w.begin("alice", t0), Ok(()));
            w.give_back("alice", t0);
        }
        assert!(!w.has_attempts("alice", t0));
        assert_eq!(w.begin("alice", t0), Ok(()));
        assert_eq!(w.begin("alice", t0), Ok(()));
        assert!(w.begin("alice", t0).is_err());
        w.reset("alice");
        assert!(!w.has_attempts("alice", t0));
        assert_eq!(w.begin("alice", t0), Ok(()));
        // Giving back to a key that was reset meanwhile changes nothing.
        w.reset("alice");
        w.give_back("alice", t0);
        assert_eq!(w.keys_held(), 0);
    }

    #[test]
    fn ended_windows_expire_and_the_table_stays_bounded() {
        let w = Windows::new(rate(5, 60), 64);
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_millis(i);
            assert!(w.begin(&format!("user{i}"), now).is_ok());
            assert!(w.keys_held() <= 64, "{} keys after {i}", w.keys_held());
        }
        let held: usize = w.shards.iter().map(|s| s.lock().unwrap().order.len()).sum();
        assert!(held <= 2 * 64 + SHARDS, "order queue {held}");
        // The newest keys survive eviction; the oldest went first.
        let last = t0 + Duration::from_millis(99_999);
        assert!(w.has_attempts("user99999", last));
        assert!(!w.has_attempts("user0", last));
        // After the window, everything has expired once new keys arrive.
        let later = last + Duration::from_secs(61);
        for s in 0..SHARDS {
            // One insert per shard trims it; find keys that land in each shard.
            let key = (0..)
                .map(|i| format!("late{i}"))
                .find(|k| (w.hasher.hash_one(k.as_str()) as usize) % SHARDS == s)
                .unwrap();
            w.begin(&key, later).unwrap();
        }
        assert_eq!(w.keys_held(), SHARDS);
    }

    #[test]
    fn oldest_window_is_evicted_first() {
        // One shard's worth: capacity 16 over 16 shards is one key per shard.
        let w = Windows::new(rate(5, 60), SHARDS);
        let t0 = Instant::now();
        let same_shard: Vec<String> = (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| (w.hasher.hash_one(k.as_str()) as usize) % SHARDS == 0)
            .take(2)
            .collect();
        w.begin(&same_shard[0], t0).unwrap();
        w.begin(&same_shard[1], t0 + Duration::from_secs(1))
            .unwrap();
        let now = t0 + Duration::from_secs(2);
        assert!(!w.has_attempts(&same_shard[0], now), "oldest out");
        assert!(w.has_attempts(&same_shard[1], now));
    }

    #[test]
    fn throttle_counts_both_budgets_and_says_who_and_until_when() {
        let t = Throttle::new(Some(rate(2, 600)), Some(rate(3, 60))).unwrap();
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let now = Instant::now();
        t.begin("alice", Some(ip), now).unwrap().refused();
        t.begin("alice", Some(ip), now).unwrap().refused();
        let e = t.begin("alice", Some(ip), now).err().unwrap();
        assert_eq!(e.kind(), Kind::Throttled);
        let msg = e.to_string();
        assert!(
            msg.starts_with("throttled: user 'alice' reached 2 refused logins within 10m (throttle.user = \"2/10m\"); not asked again until 20"),
            "{msg}"
        );
        assert!(msg.ends_with("Z (in 10m)"), "{msg}");
        // The refused user did not use up the address's budget.
        t.begin("bob", Some(ip), now).unwrap().refused();
        let e = t.begin("carol", Some(ip), now).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("throttled: client 203.0.113.5 reached 3 refused logins within 1m"),
            "{e}"
        );
        // ...and carol's user attempt was given back when the address refused her.
        assert!(!t.suspect("carol", None, now));
        assert!(t.suspect("dave", Some(ip), now), "the address failed");
        assert!(t.begin("carol", None, now).is_ok(), "unknown address");
    }

    #[test]
    fn success_resets_the_user_not_the_address_and_undecided_gives_back() {
        let t = Throttle::new(Some(rate(2, 600)), Some(rate(2, 600))).unwrap();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Instant::now();
        t.begin("alice", Some(ip), now).unwrap().refused();
        t.begin("alice", None, now).unwrap().accepted(now);
        assert!(!t.suspect("alice", None, now), "success reset the user");
        drop(t.begin("alice", Some(ip), now).unwrap()); // nothing decided
        t.begin("alice", Some(ip), now).unwrap().refused();
        let e = t.begin("bob", Some(ip), now).err().unwrap();
        assert!(e.to_string().contains("client 2001:db8::1"), "{e}");
    }

    #[test]
    fn exact_budget_under_threads() {
        let t = Throttle::new(None, Some(rate(10, 600))).unwrap();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(ticket) = t.begin("x", Some(ip), Instant::now()) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            ticket.refused();
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
    }

    #[test]
    fn utc_times_print_as_calendar_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_397_010, "2026-12-04T15:10:10Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ];
        for (secs, text) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(Utc(t).to_string(), text, "{secs}");
        }
    }
}
