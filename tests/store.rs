//! The store a fleet shares (`store.*`, cargo feature `redis`), against a real
//! `redis-server` that each test starts on a port of its own (`RD_PORT_BASE` + 3790..3799)
//! and the real Dovecot of `tests/servers/servers.sh`. Two handles stand for two hosts:
//! each reaches the remote through its own counting [`Relay`], so a test sees that a handle
//! answered without asking the remote at all.
//!
//! Built and run with the feature (`cargo test --all-features`, which the test command
//! runs); a machine without `redis-server` fails here, saying how to install it.

mod common;
mod peer;

use common::relay::Relay;
use common::{servers, ALICE, NOBODY};
use peer::ImapServer;
use remote_directory::{stats, Directory, Kind};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A throwaway redis-server, killed when dropped.
struct Redis {
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

/// The test servers' port base: `RD_PORT_BASE`, else read back from the IMAP port (+143).
fn port_base() -> u16 {
    match std::env::var("RD_PORT_BASE") {
        Ok(base) => base.parse().expect("RD_PORT_BASE is a port number"),
        Err(_) => servers().port("RD_IMAP_PORT") - 143,
    }
}

impl Redis {
    /// Starts redis-server on `RD_PORT_BASE + offset` with `extra` arguments.
    fn start(offset: u16, extra: &[String]) -> Redis {
        let port = port_base() + offset;
        let dir = std::env::temp_dir().join(format!("rd-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--dir".into(), dir.display().to_string()]);
        if !extra.iter().any(|a| a == "--tls-port") {
            args.extend(["--port".into(), port.to_string()]);
        }
        args.extend(extra.iter().cloned());
        let mut redis = Redis {
            port,
            args,
            dir,
            child: None,
        };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            panic!(
                "port {} is taken: another redis-server or test run? (RD_PORT_BASE moves it)",
                self.port
            );
        }
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): these tests need Debian's redis-server; \
                     install it with scripts/install-deps.sh (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < end,
                "redis-server did not listen on {} within 10 s (args {:?})",
                self.port,
                self.args
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The store dies at once (SIGKILL): nothing is flushed, connections are cut.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of the test's own, to look at what the library stored.
    fn inspect(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory named `fleet` of `kind` reached through `relay`, with `extra` lines.
fn open(kind: &str, relay: &Relay, extra: &str) -> Directory {
    open_named("fleet", kind, relay, extra)
}

fn open_named(name: &str, kind: &str, relay: &Relay, extra: &str) -> Directory {
    let text = format!(
        "[directory.{name}]\ntype = \"{kind}\"\naddress = \"{}\"\ntimeout = \"5s\"\n\
         tls.ca-file = {:?}\n{extra}\n",
        relay.address(),
        servers().ca()
    );
    Directory::open_str(&text, None).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn store_line(redis: &Redis) -> String {
    format!("store.url = \"redis://127.0.0.1:{}/\"", redis.port)
}

#[test]
fn a_second_host_answers_what_the_first_learnt_without_asking_the_remote() {
    let redis = Redis::start(3791, &[]);
    let lmtp = servers().port("RD_LMTP_PORT");
    let (relay_a, relay_b) = (Relay::start(lmtp), Relay::start(lmtp));
    let store = store_line(&redis);
    let (a, b) = (
        open("lmtp", &relay_a, &store),
        open("lmtp", &relay_b, &store),
    );

    assert_eq!(a.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    a.rcpt(ALICE.0).expect("alice exists");
    let e = b.rcpt(NOBODY).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().contains("(cached)"), "{e}");
    b.rcpt(ALICE.0).expect("alice, from the store");
    assert_eq!(
        relay_b.relayed(),
        0,
        "B answered with no traffic to the remote"
    );
    assert_eq!(b.store_up(), Some(true));

    // Every key has the prefix and a TTL.
    let mut inspect = redis.inspect();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut inspect).unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("rd:fleet:r:"), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut inspect).unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }

    // Garbage in the store is no answer: B asks the remote and gets the right one.
    let bob = "bob@example.org";
    let () = redis::cmd("SET")
        .arg(format!("rd:fleet:r:{bob}"))
        .arg("REJECTED-ish \u{1b} garbage")
        .arg("PX")
        .arg(60_000)
        .query(&mut inspect)
        .unwrap();
    b.rcpt(bob).expect("bob exists, whatever the store held");
    assert_eq!(relay_b.relayed(), 1, "asked the remote");
}

#[test]
fn throttle_budgets_are_shared_exactly_by_two_hosts() {
    let redis = Redis::start(3792, &[]);
    let remote = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let config = format!(
        "[directory.fleet]\ntype = \"imap\"\naddress = \"127.0.0.1:{}\"\ntimeout = \"5s\"\n\
         throttle.user = \"10/10m\"\npool.max-connections = 16\n{}\n",
        remote.port(),
        store_line(&redis)
    );
    let hosts: Vec<Arc<Directory>> = (0..2)
        .map(|_| Arc::new(Directory::open_str(&config, None).unwrap()))
        .collect();
    let (rejected, throttled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let host = hosts[i % 2].clone();
            let (rejected, throttled) = (rejected.clone(), throttled.clone());
            std::thread::spawn(move || {
                for round in 0..2 {
                    let e = host
                        .auth(ALICE.0, &format!("guess-{i}-{round}"))
                        .unwrap_err();
                    match e.kind() {
                        Kind::Rejected => rejected.fetch_add(1, Ordering::SeqCst),
                        Kind::Throttled => throttled.fetch_add(1, Ordering::SeqCst),
                        other => panic!("{other:?}: {e}"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        rejected.load(Ordering::SeqCst),
        10,
        "the budget, fleet-wide"
    );
    assert_eq!(throttled.load(Ordering::SeqCst), 54);
    let asked = remote
        .all_commands()
        .into_iter()
        .flatten()
        .filter(|l| l.contains("AUTHENTICATE"))
        .count();
    assert_eq!(asked, 10, "guesses that reached the remote");
}

#[test]
fn the_store_dying_changes_no_answer_and_sharing_resumes_when_it_is_back() {
    let mut redis = Redis::start(3793, &[]);
    let lmtp = servers().port("RD_LMTP_PORT");
    let (relay_a, relay_b) = (Relay::start(lmtp), Relay::start(lmtp));
    let store = format!("{}\ncache.ttl.positive = \"1h\"", store_line(&redis));
    // A name of its own: the statistics are per directory name.
    let (a, b) = (
        open_named("dying", "lmtp", &relay_a, &store),
        open_named("dying", "lmtp", &relay_b, &store),
    );
    let store_up = || {
        let text = stats::prometheus_text(&stats::snapshot());
        ["0", "1"]
            .into_iter()
            .find(|v| {
                text.contains(&format!(
                    "remote_directory_store_up{{directory=\"dying\"}} {v}\n"
                ))
            })
            .map(|v| v == "1")
    };
    let expected = [
        (ALICE.0, true),
        ("bob@example.org", true),
        (NOBODY, false),
        ("nobody-else@example.org", false),
    ];
    let check = |host: &Directory, round: usize| {
        for (address, exists) in expected {
            let result = host.rcpt(address);
            assert_eq!(
                result.is_ok(),
                exists,
                "round {round}, {address}: {result:?}"
            );
            if let Err(e) = result {
                assert_eq!(e.kind(), Kind::Rejected, "round {round}, {address}: {e}");
            }
        }
    };
    for round in 0..30 {
        if round == 10 {
            redis.kill();
        }
        if round == 20 {
            redis.restart();
        }
        check(&a, round);
        check(&b, round);
        // Fresh names each round, so the store is asked every time.
        let fresh = format!("alice+r{round}@example.org");
        a.rcpt(&fresh).expect("alice+tag exists");
        b.rcpt(&fresh).expect("alice+tag exists");
        if (11..20).contains(&round) {
            assert_eq!(a.store_up(), Some(false), "round {round}");
            assert_eq!(store_up(), Some(false), "the metric, round {round}");
        }
    }
    // Back for a while: what A learns now, B answers without the remote.
    std::thread::sleep(Duration::from_millis(1100));
    let before = relay_b.relayed();
    a.rcpt("alice+resumed@example.org").expect("learnt by A");
    assert_eq!(a.store_up(), Some(true));
    assert_eq!(store_up(), Some(true), "the metric");
    b.rcpt("alice+resumed@example.org").expect("from the store");
    assert_eq!(relay_b.relayed(), before, "B did not ask the remote");
}

#[test]
fn rediss_with_the_test_ca() {
    let tls = PathBuf::from(servers().ca())
        .parent()
        .expect("the CA's folder")
        .to_path_buf();
    let port = port_base() + 3794;
    let redis = Redis::start(
        3794,
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            tls.join("server.pem").display().to_string(),
            "--tls-key-file".into(),
            tls.join("server.key").display().to_string(),
            "--tls-ca-cert-file".into(),
            servers().ca().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    let lmtp = servers().port("RD_LMTP_PORT");
    let (relay_a, relay_b) = (Relay::start(lmtp), Relay::start(lmtp));
    let store = format!("store.url = \"rediss://localhost:{}/\"", redis.port);
    let (a, b) = (
        open("lmtp", &relay_a, &store),
        open("lmtp", &relay_b, &store),
    );
    assert_eq!(a.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    assert_eq!(a.store_up(), Some(true), "TLS to the store works");
    assert_eq!(b.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    assert_eq!(relay_b.relayed(), 0, "shared over TLS");
}

#[test]
fn a_wrong_store_password_falls_back_to_local_state_never_a_wrong_answer() {
    let redis = Redis::start(3795, &["--requirepass".into(), "fleet-pass".into()]);
    let lmtp = servers().port("RD_LMTP_PORT");
    let (relay_a, relay_b) = (Relay::start(lmtp), Relay::start(lmtp));
    let wrong = format!("store.url = \"redis://:not-it@127.0.0.1:{}/\"", redis.port);
    let a = open("lmtp", &relay_a, &wrong);
    assert_eq!(a.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    a.rcpt(ALICE.0).expect("alice");
    assert_eq!(
        a.store_up(),
        Some(false),
        "the store refused us: local state only"
    );

    let right = format!(
        "store.url = \"redis://:fleet-pass@127.0.0.1:{}/\"",
        redis.port
    );
    let (c, b) = (
        open("lmtp", &relay_a, &right),
        open("lmtp", &relay_b, &right),
    );
    assert_eq!(c.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    assert_eq!(b.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected);
    assert_eq!(
        relay_b.relayed(),
        0,
        "with the right password the store is shared"
    );
}

#[test]
fn refused_logins_are_shared_as_hmacs_under_the_fleet_key() {
    let redis = Redis::start(3796, &[]);
    let imap = servers().port("RD_IMAP_PORT");
    let (relay_a, relay_b) = (Relay::start(imap), Relay::start(imap));
    let dir = std::env::temp_dir().join(format!("rd-store-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("fleet.key");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let store = format!(
        "{}\ncache.auth-negative-ttl = \"5m\"\nstore.secret-file = {:?}",
        store_line(&redis),
        secret.display().to_string()
    );
    let (a, b) = (
        open("imap", &relay_a, &store),
        open("imap", &relay_b, &store),
    );
    assert_eq!(
        a.auth(ALICE.0, "old-password").unwrap_err().kind(),
        Kind::Rejected
    );
    let e = b.auth(ALICE.0, "old-password").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert_eq!(
        relay_b.relayed(),
        0,
        "B knew the refusal without the remote"
    );
    b.auth(ALICE.0, ALICE.1)
        .expect("the right password still goes to the remote");
    assert_eq!(relay_b.relayed(), 1);

    // Nothing in the store holds the user name or the password, keyed or not.
    let mut inspect = redis.inspect();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut inspect).unwrap();
    for key in &keys {
        assert!(!key.contains("alice") && !key.contains("password"), "{key}");
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut inspect).unwrap();
        let dump = String::from_utf8_lossy(&dump);
        assert!(
            !dump.contains("alice") && !dump.contains("old-password"),
            "{key}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn store_configuration_errors_name_the_key_and_never_the_password() {
    let secret_dir = std::env::temp_dir().join(format!("rd-store-short-{}", std::process::id()));
    std::fs::create_dir_all(&secret_dir).unwrap();
    let short = secret_dir.join("short.key");
    std::fs::write(&short, "tiny\n").unwrap();
    let short_line = format!(
        "store.url = \"redis://127.0.0.1:1/\"\nstore.secret-file = {:?}",
        short.display().to_string()
    );
    let cases: &[(&str, &str)] = &[
        (
            "store.url = \"redis://127.0.0.1:1/\"\ncache.auth-negative-ttl = \"5m\"",
            "directory.fleet.store.secret-file: missing",
        ),
        (
            "store.url = \"redis://127.0.0.1:1/\"\ncache.auth-ttl = \"5m\"",
            "directory.fleet.store.secret-file: missing",
        ),
        (
            "store.prefix = \"x:\"",
            "directory.fleet.store.prefix: has no effect",
        ),
        (
            "store.url = \"memcache://:sekrit@127.0.0.1:1/\"",
            "directory.fleet.store.url: memcache://:********@127.0.0.1:1/: expected a redis://",
        ),
        (
            "store.url = \"redis://:sekrit@127.0.0.1:notaport/\"",
            "directory.fleet.store.url: redis://:********@127.0.0.1:notaport/: not a usable",
        ),
        (&short_line, "store.secret-file: "),
        (&short_line, "at least 16 random bytes"),
    ];
    for (lines, expected) in cases {
        let text =
            format!("[directory.fleet]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\n{lines}\n");
        let e = Directory::open_str(&text, None).err().expect(lines);
        assert_eq!(e.kind(), Kind::Config, "{lines}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(expected), "{lines}: {shown}");
        assert!(!shown.contains("sekrit"), "{shown}");
    }
    std::fs::remove_dir_all(&secret_dir).unwrap();
}
