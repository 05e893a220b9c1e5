//! Several servers and a fleet (issue 11): `rdbench fleet --env DIR/env [--out FILE]`.
//!
//! - failover: a directory lists two servers, each a relay to the real Dovecot IMAP
//!   (STARTTLS); the first dies (refused; black-holed: accepts and never speaks; black-holed:
//!   drops every SYN), then comes back. Reported: the time to the first right answer after
//!   it died, and the time until traffic is back on it after it came back.
//! - fleet: 10,000 recipient checks spread over 4 handles (4 threads, one handle each) from
//!   1,000 distinct addresses, against a scripted LMTP peer that counts RCPT commands, with a
//!   shared store (a redis-server started here) and without.
//! - cost: the median of an in-process cache hit, a store hit (a key another handle learnt)
//!   and a remote probe (a warm connection to the real Dovecot LMTP).
//!
//! Prints Markdown to stdout (and FILE with --out). Talks to 127.0.0.1 only.

#[path = "../../tests/common/relay.rs"]
mod relay;
// `address()` is for the tests: this file places it on a port of its own.
#[allow(dead_code)]
#[path = "../../tests/common/syn_drop.rs"]
mod syn_drop;

use crate::{lib_config, load_env, open, Env, PASS, USER};
use relay::Relay;
use remote_directory::Directory;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHECKS: usize = 10_000;
const DISTINCT: usize = 1_000;
const HANDLES: usize = 4;
const COST_SAMPLES: usize = 2_000;

pub fn main(args: &[String]) {
    let mut env_path = std::env::var("RD_SERVERS_ENV").unwrap_or_default();
    let mut out = None;
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--env", Some(v)) => env_path = v.clone(),
            ("--out", Some(v)) => out = Some(v.clone()),
            _ => panic!("usage: rdbench fleet --env DIR/env [--out FILE]"),
        }
    }
    let env = load_env(&env_path);
    let redis = RedisServer::start(redis_port(&env));
    let mut md = String::from("#### several servers and a fleet (issue 11)\n\n");
    md += &failover(&env);
    md += &fleet(&redis);
    md += &cost(&env, &redis);
    print!("{md}");
    if let Some(path) = out {
        std::fs::write(&path, &md).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// The servers' port base + 3790 (60000 + 3790 under bench/run.sh).
fn redis_port(env: &Env) -> u16 {
    env.imap - 143 + 3790
}

struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// How the first server stops answering.
enum Death {
    Refused,
    Silent,
    SynDrop,
}

/// What sits on the first server's port while it is dead; [`Corpse::clear`] frees it.
enum Corpse {
    Nothing,
    Silent(Arc<AtomicBool>, std::thread::JoinHandle<()>),
    Queue(syn_drop::SynDrop),
}

impl Corpse {
    /// Frees the port, waiting until it is free.
    fn clear(self) {
        match self {
            Corpse::Nothing => {}
            Corpse::Silent(stop, thread) => {
                stop.store(true, Ordering::SeqCst);
                thread.join().unwrap();
            }
            Corpse::Queue(port) => drop(port),
        }
    }
}

fn bury(port: u16, death: &Death) -> Corpse {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    match death {
        Death::Refused => Corpse::Nothing,
        Death::Silent => {
            let listener = TcpListener::bind(addr).expect("bind the silent server");
            listener.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = stop.clone();
            // Accepts and holds every connection, never writing a byte.
            let thread = std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stopped.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => held.push(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Corpse::Silent(stop, thread)
        }
        Death::SynDrop => Corpse::Queue(syn_drop::SynDrop::on(addr)),
    }
}

fn failover(env: &Env) -> String {
    let mut md = String::from(
        "Failover: two servers (relays to the real Dovecot IMAP, STARTTLS), `timeout = \"4s\"`, \
         `failover.backoff = \"1s\"`; one login per 50 ms. \"First right answer\" is the \
         duration of the first call after the first server died; \"back on the first\" is the \
         time from its return to the first call it answers.\n\n\
         | the first server | first right answer after it died (ms) | next calls, median (ms) | back on the first after it returned (ms) |\n\
         |---|---|---|---|\n",
    );
    let cases = [
        ("refuses connections", Death::Refused),
        ("accepts and never speaks", Death::Silent),
        ("drops every SYN", Death::SynDrop),
    ];
    for (what, death) in cases {
        let mut first = Relay::start(env.imap);
        let second = Relay::start(env.imap);
        let config = format!(
            "[directory.bench]\ntype = \"imap\"\naddress = [\"{}\", \"{}\"]\ntimeout = \"4s\"\n\
             failover.backoff = \"1s\"\ntls.ca-file = \"{}\"\n",
            first.address(),
            second.address(),
            env.ca
        );
        let dir = open(&config);
        for _ in 0..3 {
            dir.auth(USER, PASS).expect("warm-up");
        }
        first.stop();
        let corpse = bury(first.port(), &death);
        let start = Instant::now();
        dir.auth(USER, PASS).expect("answered by the second");
        let first_answer = start.elapsed();
        let mut next = Vec::new();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(50));
            let t = Instant::now();
            dir.auth(USER, PASS).expect("second");
            next.push(t.elapsed());
        }
        next.sort();
        corpse.clear();
        first.restart();
        let back = Instant::now();
        let before = first.relayed();
        let returned = loop {
            dir.auth(USER, PASS).expect("after the return");
            if first.relayed() > before {
                break back.elapsed();
            }
            assert!(
                back.elapsed() < Duration::from_secs(120),
                "{what}: never back"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} |",
            ms(first_answer),
            ms(next[next.len() / 2]),
            ms(returned)
        );
    }
    md.push('\n');
    md
}

/// 10,000 checks of 1,000 addresses over 4 handles: RCPT commands the remote received.
fn fleet(redis: &RedisServer) -> String {
    let mut md = format!(
        "Fleet: {CHECKS} recipient checks of {DISTINCT} distinct addresses (pseudo-random \
         order), spread over {HANDLES} handles run by {HANDLES} threads, against a scripted \
         LMTP peer that counts RCPT commands.\n\n\
         | | RCPT commands the remote received | per distinct address | wall time (ms) |\n\
         |---|---|---|---|\n"
    );
    for (what, store) in [("no shared store", false), ("shared store", true)] {
        let port = crate::peer::start(Duration::ZERO);
        let before = crate::peer::RCPTS.load(Ordering::SeqCst);
        let extra = if store {
            format!(
                "store.url = \"{}\"\nstore.prefix = \"bench-{port}:\"\n",
                redis.url()
            )
        } else {
            String::new()
        };
        let config = format!(
            "[directory.bench]\ntype = \"lmtp\"\naddress = \"127.0.0.1:{port}\"\n\
             limits.rcpt = 1000\ncache.entries = 10000\n{extra}"
        );
        let handles: Vec<Arc<Directory>> = (0..HANDLES).map(|_| Arc::new(open(&config))).collect();
        let start = Instant::now();
        let threads: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(h, dir)| {
                std::thread::spawn(move || {
                    let mut x = 12_345u64 + h as u64;
                    for _ in 0..CHECKS / HANDLES {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let n = (x >> 33) as usize % DISTINCT;
                        dir.rcpt(&format!("user{n}@example.org"))
                            .expect("the peer accepts all");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let wall = start.elapsed();
        let probes = crate::peer::RCPTS.load(Ordering::SeqCst) - before;
        let _ = writeln!(
            md,
            "| {what} | {probes} | {:.2} | {} |",
            probes as f64 / DISTINCT as f64,
            ms(wall)
        );
    }
    md.push('\n');
    md
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Medians, one thread, interleaved per round: an in-process hit, a store hit, a probe.
fn cost(env: &Env, redis: &RedisServer) -> String {
    let store = format!(
        "store.url = \"{}\"\nstore.prefix = \"bench-cost:\"\nlimits.rcpt = 1000\ncache.entries = 10000\n",
        redis.url()
    );
    let learner = open(&lib_config(env, "lmtp", env.lmtp, false, &store));
    let reader = open(&lib_config(env, "lmtp", env.lmtp, false, &store));
    let prober = open(&lib_config(
        env,
        "lmtp",
        env.lmtp,
        false,
        "limits.rcpt = 1000\n",
    ));
    // Warm: connections open, the hot address cached.
    learner.rcpt(USER).unwrap();
    reader.rcpt(USER).unwrap();
    prober.rcpt(USER).unwrap();
    let (mut local, mut shared, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..COST_SAMPLES {
        let fresh = format!("alice+c{i}@example.org");
        learner.rcpt(&fresh).unwrap(); // into the store
        let t = Instant::now();
        reader.rcpt(USER).unwrap();
        local.push(t.elapsed());
        let t = Instant::now();
        reader.rcpt(&fresh).unwrap();
        shared.push(t.elapsed());
        let t = Instant::now();
        prober.rcpt(&format!("alice+p{i}@example.org")).unwrap();
        remote.push(t.elapsed());
    }
    let (local, shared, remote) = (median(local), median(shared), median(remote));
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    format!(
        "Cost of one recipient answer, median of {COST_SAMPLES}, one thread (store: \
         redis-server on loopback; remote: the real Dovecot LMTP, warm connection).\n\n\
         | answered from | median (µs) | ÷ in-process hit |\n|---|---|---|\n\
         | in-process cache | {} | 1 |\n| shared store (another handle learnt it) | {} | {:.0} |\n\
         | remote probe (`RCPT TO`) | {} | {:.0} |\n\n",
        us(local),
        us(shared),
        shared.as_secs_f64() / local.as_secs_f64(),
        us(remote),
        remote.as_secs_f64() / local.as_secs_f64()
    )
}
