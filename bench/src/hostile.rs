//! Hostile traffic (issue 8):
//! `rdbench hostile --env DIR/env [--secs S] [--out FILE] [--part flood|phone|hot]...`.
//!
//! - flood: 5 client addresses send wrong passwords for random users from 50 threads, as
//!   fast as they can, against the real Dovecot IMAP; one real user from another address
//!   logs in every 200 ms. Its latency is compared with the same user on an idle handle,
//!   and the guesses that reached Dovecot are counted in Dovecot's own log.
//! - phone: one user retries the same wrong password every 100 ms with
//!   `cache.auth-negative-ttl = "5m"`; the checks Dovecot logged are counted.
//! - hot path: warm recipient probes and cached logins, with throttles configured and
//!   without, interleaved in one process.
//!
//! Prints Markdown to stdout (and FILE with --out); `--part` runs only some scenarios.

use crate::cpu::thread_cpu;
use crate::{lib_config, load_env, open, Env, PASS, USER};
use remote_directory::{Directory, Kind};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The defences the flood runs against (the README's recommendation, a shorter window so
/// that the run's budget is plain: per address, at most 10 refusals per minute).
const DEFENCES: &str = "throttle.user = \"10/10m\"\nthrottle.client = \"10/1m\"\n";
const GUESSERS: usize = 50;
const GUESSING_ADDRESSES: usize = 5;
const REAL_USER_EVERY: Duration = Duration::from_millis(200);
const PHONE_EVERY: Duration = Duration::from_millis(100);

pub fn main(args: &[String]) {
    let mut env_path = std::env::var("RD_SERVERS_ENV").unwrap_or_default();
    let mut secs = 20.0;
    let mut out = None;
    let mut parts: Vec<String> = Vec::new();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--env", Some(v)) => env_path = v.clone(),
            ("--secs", Some(v)) => secs = v.parse().expect("--secs"),
            ("--out", Some(v)) => out = Some(v.clone()),
            ("--part", Some(v)) => parts.push(v.clone()),
            _ => panic!("usage: rdbench hostile --env DIR/env [--secs S] [--out FILE] [--part flood|phone|hot]..."),
        }
    }
    let env = load_env(&env_path);
    let log = dovecot_log(&env_path);
    let d = Duration::from_secs_f64(secs);
    let mut md = format!(
        "#### hostile traffic (issue 8): real Dovecot IMAP (STARTTLS), {secs} s per run\n\n"
    );
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("flood") {
        md += &flood(&env, &log, d);
    }
    if wanted("phone") {
        md += &phone(&env, &log, d);
    }
    if wanted("hot") {
        md += &hot_path(&env);
    }
    print!("{md}");
    if let Some(path) = out {
        std::fs::write(&path, &md).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// Dovecot's log file, from `RD_DIR` in the env file.
fn dovecot_log(env_path: &str) -> String {
    let text = std::fs::read_to_string(env_path).expect("env file");
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("RD_DIR="))
        .expect("RD_DIR in the env file");
    format!("{}/log/dovecot.log", dir.trim())
}

/// Password checks Dovecot's auth process logged for users whose name starts with
/// `prefix`, once the log is quiet (it is written a moment after each reply).
fn checks_logged(log: &str, prefix: &str) -> usize {
    let needle = format!("passwd-file({prefix}");
    let count = || {
        std::fs::read_to_string(log)
            .unwrap_or_else(|e| panic!("{log}: {e}"))
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    };
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff)
}

/// A cheap per-thread random number (xorshift), so guessers do not share a generator.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The real user's logins from `me`, one every 200 ms for `d`. Every login must be
/// accepted: a throttled or timed-out real user is a failure of the defences, counted apart.
fn real_user(dir: &Directory, me: IpAddr, d: Duration) -> (Latencies, usize) {
    let mut took = Vec::new();
    let mut failed = 0;
    let end = Instant::now() + d;
    let mut next_at = Instant::now();
    while Instant::now() < end {
        let t = Instant::now();
        match dir.auth_from(USER, PASS, Some(me)) {
            Ok(()) => took.push(t.elapsed()),
            Err(_) => failed += 1,
        }
        next_at += REAL_USER_EVERY;
        std::thread::sleep(next_at.saturating_duration_since(Instant::now()));
    }
    (Latencies(took), failed)
}

struct FloodRun {
    real: Latencies,
    real_failed: usize,
    /// The same user on a second handle that nobody floods, at the same time (100 ms
    /// apart): the machine's load, shared by other work, weighs on both alike.
    beside: Latencies,
    beside_failed: usize,
    guesses: u64,
    throttled: u64,
    reached: usize,
}

/// The real user alone (`guessers` false) or under the flood.
fn flood_run(env: &Env, log: &str, extra: &str, d: Duration, guessers: bool) -> FloodRun {
    let dir = open(&lib_config(env, "imap", env.imap, false, extra));
    let quiet = open(&lib_config(env, "imap", env.imap, false, extra));
    let prefix = format!("flood-{}-", run_id());
    let stop = AtomicBool::new(false);
    let guesses = AtomicU64::new(0);
    let throttled = AtomicU64::new(0);
    let ((real, real_failed), (beside, beside_failed)) = std::thread::scope(|s| {
        let mut attackers = Vec::new();
        if guessers {
            for t in 0..GUESSERS {
                let (dir, stop, guesses, throttled, prefix) =
                    (&dir, &stop, &guesses, &throttled, &prefix);
                attackers.push(s.spawn(move || {
                    let address = t % GUESSING_ADDRESSES + 1;
                    let ip: IpAddr = format!("203.0.113.{address}").parse().unwrap();
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                    while !stop.load(Ordering::Relaxed) {
                        let user = format!("{prefix}{}@example.org", next(&mut rng) % 1_000_000);
                        let r = dir.auth_from(&user, "guess", Some(ip));
                        guesses.fetch_add(1, Ordering::Relaxed);
                        if r.is_err_and(|e| e.kind() == Kind::Throttled) {
                            throttled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            // Let the flood start before the real user arrives.
            std::thread::sleep(Duration::from_millis(200));
        }
        let quiet = &quiet;
        let beside = s.spawn(move || {
            std::thread::sleep(REAL_USER_EVERY / 2);
            real_user(quiet, "198.51.100.2".parse().unwrap(), d)
        });
        let real = real_user(&dir, "198.51.100.1".parse().unwrap(), d);
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.join().unwrap();
        }
        (real, beside.join().unwrap())
    });
    let reached = if guessers {
        checks_logged(log, &prefix)
    } else {
        0
    };
    FloodRun {
        real,
        real_failed,
        beside,
        beside_failed,
        guesses: guesses.into_inner(),
        throttled: throttled.into_inner(),
        reached,
    }
}

fn flood(env: &Env, log: &str, d: Duration) -> String {
    let idle = flood_run(env, log, DEFENCES, d, false);
    let defended = flood_run(env, log, DEFENCES, d, true);
    let bare = flood_run(env, log, "", d, true);
    let mut md = String::from(
        "##### flood: 50 threads from 5 addresses guess passwords of random users; alice logs in every 200 ms from another address\n\n\
         `pool.max-connections = 10` (default), no login cache. Defences: `throttle.user = \"10/10m\"`, \
         `throttle.client = \"10/1m\"`, `throttle.delay` at its default 500 ms (budget: 10 refusals per address per minute, 50 for the run). \
         In every run alice also logs in, 100 ms apart, on a second handle of the same configuration that nobody floods \
         (\"beside\"): the ratio compares the flooded handle with it, so that load from outside the run weighs on both alike. \
         \"reached Dovecot\" counts the `passwd-file(...)` lines of Dovecot's own log for the guessed users.\n\n\
         | run | handle | alice's logins | failed | median | p99 | p99 ÷ p99 beside | guesses made | throttled (no traffic) | reached Dovecot |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in [
        ("no flood, defences on", &idle),
        ("flood, defences on", &defended),
        ("flood, no defences", &bare),
    ] {
        let stats = |l: &Latencies, failed: usize| match l.0.is_empty() {
            true => format!("0 | {failed} | - | - |"),
            false => format!(
                "{} | {failed} | {} | {} |",
                l.0.len(),
                ms(l.quantile(0.5)),
                ms(l.quantile(0.99))
            ),
        };
        let ratio = match (r.real.0.is_empty(), r.beside.0.is_empty()) {
            (false, false) => format!(
                "{:.2}",
                r.real.quantile(0.99).as_secs_f64() / r.beside.quantile(0.99).as_secs_f64()
            ),
            _ => "-".into(),
        };
        let traffic = if r.guesses == 0 {
            "- | - | -".to_string()
        } else {
            format!("{} | {} | {}", r.guesses, r.throttled, r.reached)
        };
        md += &format!(
            "| {name} | {} | {} {ratio} | {traffic} |\n",
            if r.guesses == 0 { "first" } else { "flooded" },
            stats(&r.real, r.real_failed)
        );
        md += &format!(
            "| {name} | beside | {} | | | |\n",
            stats(&r.beside, r.beside_failed)
        );
    }
    md += "\n";
    md
}

fn phone(env: &Env, log: &str, d: Duration) -> String {
    let config = lib_config(
        env,
        "imap",
        env.imap,
        false,
        "cache.auth-negative-ttl = \"5m\"\n",
    );
    let dir = open(&config);
    let user = format!("phone-{}@example.org", run_id());
    let (mut tries, mut rejected) = (0, 0);
    let end = Instant::now() + d;
    let mut next_at = Instant::now();
    while Instant::now() < end {
        tries += 1;
        if dir
            .auth(&user, "last-years-password")
            .is_err_and(|e| e.kind() == Kind::Rejected)
        {
            rejected += 1;
        }
        next_at += PHONE_EVERY;
        std::thread::sleep(next_at.saturating_duration_since(Instant::now()));
    }
    let reached = checks_logged(log, &user);
    format!(
        "##### phone: one user retries the same wrong password every 100 ms, `cache.auth-negative-ttl = \"5m\"`\n\n\
         | tries | answered REJECTED | reached Dovecot (its log) |\n|---:|---:|---:|\n| {tries} | {rejected} | {reached} |\n\n"
    )
}

/// Wall time and this thread's CPU time spent in one side's calls.
#[derive(Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

/// `a` and `b` called alternately for `d` (batches a b, then b a, and so on), each batch
/// timed on its own: whatever else the machine does weighs on both alike. Batches of 64
/// calls keep the clocks' own cost out of sub-microsecond calls. Returns the calls made by
/// each side and what they spent.
fn alternate(d: Duration, a: impl Fn(), b: impl Fn()) -> (u32, Spent, Spent) {
    const BATCH: u32 = 64;
    let start = Instant::now();
    let (mut sa, mut sb) = (Spent::default(), Spent::default());
    let mut batches = 0u32;
    let timed = |f: &dyn Fn(), spent: &mut Spent| {
        let (t, c) = (Instant::now(), thread_cpu());
        for _ in 0..BATCH {
            f();
        }
        spent.cpu += thread_cpu() - c;
        spent.wall += t.elapsed();
    };
    while start.elapsed() < d {
        if batches.is_multiple_of(2) {
            timed(&a, &mut sa);
            timed(&b, &mut sb);
        } else {
            timed(&b, &mut sb);
            timed(&a, &mut sa);
        }
        batches += 1;
    }
    (batches * BATCH, sa, sb)
}

fn hot_path(env: &Env) -> String {
    const RUN: Duration = Duration::from_secs(12);
    let mut md = String::from(
        "##### hot path: the same calls with throttles configured (B) and without (A), 1 thread, 12 s, batches of 64 calls alternating between the two handles\n\n\
         Wall time is what a caller waits; CPU time is what the calls cost this thread (the \
         library's own work, which the defences would add to), and is far less disturbed by other work on the machine.\n\n\
         | call | A calls/s | B calls/s | B ÷ A (wall) | A CPU per call | B CPU per call | B ÷ A (CPU) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let rcpt = |extra: &str| {
        let dir = open(&lib_config(
            env,
            "lmtp",
            env.lmtp,
            false,
            &format!("limits.rcpt = 1000\n{extra}"),
        ));
        dir.rcpt(USER).expect("warm-up probe");
        dir
    };
    let cached = |extra: &str| {
        let dir = open(&lib_config(
            env,
            "imap",
            env.imap,
            false,
            &format!("cache.auth-ttl = \"1h\"\n{extra}"),
        ));
        dir.auth(USER, PASS).expect("warm-up login");
        dir
    };
    let client: IpAddr = "198.51.100.1".parse().unwrap();
    type Case<'a> = (
        &'a str,
        Box<dyn Fn(&Directory) + 'a>,
        Box<dyn Fn(&str) -> Directory + 'a>,
    );
    let cases: [Case; 2] = [
        (
            "warm rcpt (LMTP, pooled connection)",
            Box::new(|d: &Directory| d.rcpt(USER).expect("rcpt")),
            Box::new(rcpt),
        ),
        (
            "cached auth (`cache.auth-ttl`), with a client address",
            Box::new(move |d: &Directory| d.auth_from(USER, PASS, Some(client)).expect("auth")),
            Box::new(cached),
        ),
    ];
    for (name, call, make) in cases {
        let a = make("");
        let b = make(DEFENCES);
        let (n, sa, sb) = alternate(RUN, || call(&a), || call(&b));
        let n = f64::from(n);
        let (ra, rb) = (n / sa.wall.as_secs_f64(), n / sb.wall.as_secs_f64());
        let (ca, cb) = (sa.cpu.as_secs_f64() / n, sb.cpu.as_secs_f64() / n);
        md += &format!(
            "| {name} | {ra:.0} | {rb:.0} | {:.3} | {:.2} µs | {:.2} µs | {:.3} |\n",
            rb / ra,
            ca * 1e6,
            cb * 1e6,
            cb / ca
        );
    }
    md += "\n";
    md
}
