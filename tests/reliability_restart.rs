//! The real Dovecot and Postfix restarted while handles hold idle connections: during the
//! outage every call is TEMPORARY (a wrong password too: nothing was decided), and after it
//! the next calls succeed on fresh connections, the stale ones replaced transparently.
//!
//! Two restarts: the daemons alone on the same configuration and certificate (what an
//! administrator's restart or a crash looks like), then `tests/servers/servers.sh stop` and
//! `start` on the same directory, which also makes a new CA and certificate: handles that
//! trusted the old CA then get TEMPORARY (TLS), never REJECTED, and new handles work.
//!
//! This file holds one test: it stops the servers every other real-server test uses, and
//! cargo runs test binaries one after another.

mod common;

use common::{servers, BOB, NOBODY};
use remote_directory::{Directory, Kind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/servers.sh")
}

/// Runs a command to its end. Its output goes to a file, not a pipe: the daemons it starts
/// inherit stdout and stderr and would keep a pipe open forever.
fn run(cmd: &mut Command) {
    let log = std::env::temp_dir().join(format!("rd-restart-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "{cmd:?}: {status}\n{output}");
}

/// Waits until every port answers: with a greeting, except the implicit-TLS ones (whose
/// greeting comes after a handshake), which must accept connections.
fn wait_greetings(ports: &[u16], implicit_tls: &[u16]) {
    use std::io::Read as _;
    let end = Instant::now() + Duration::from_secs(30);
    for &port in ports {
        loop {
            let ok =
                TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                    .and_then(|mut s| {
                        if implicit_tls.contains(&port) {
                            return Ok(());
                        }
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)
                    })
                    .is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < end,
                "port {port} did not come back within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Makes sure the servers run again when the test ends, whatever happened, with their env
/// file (`servers.sh stop` removes it: no env file means "not running" to other tests).
struct Restore {
    dir: String,
    base: u16,
    ports: Vec<u16>,
    env_path: PathBuf,
}

impl Restore {
    fn running(&self) -> bool {
        self.env_path.exists() && self.listening()
    }

    fn listening(&self) -> bool {
        self.ports.iter().all(|&p| {
            TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), Duration::from_millis(500))
                .is_ok()
        })
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.running() {
            // Never through a pipe: the daemons would hold it open.
            let quiet = |c: &mut Command| {
                let _ = c
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            quiet(Command::new(script()).args(["stop", &self.dir]));
            quiet(
                Command::new(script())
                    .args(["start", &self.dir])
                    .env("RD_PORT_BASE", self.base.to_string()),
            );
        }
    }
}

fn open(kind: &str, port: &str, extra: &str) -> Directory {
    let text = servers().config(kind, port, false, extra);
    Directory::open_str(&text, None).unwrap_or_else(|e| panic!("{text}: {e}"))
}

struct Handles {
    imap: Directory,
    submission: Directory,
    lmtp: Directory,
    postfix: Directory,
}

impl Handles {
    fn open() -> Handles {
        Handles {
            imap: open("imap", "RD_IMAP_PORT", ""),
            submission: open("smtp", "RD_SUBMISSION_PORT", ""),
            lmtp: open("lmtp", "RD_LMTP_PORT", ""),
            postfix: open("smtp", "RD_SMTP_PORT", ""),
        }
    }

    /// Leaves one idle connection in each handle.
    fn make_idle(&self) {
        assert_eq!(
            self.imap.auth(ALICE, "wrong").unwrap_err().kind(),
            Kind::Rejected
        );
        assert_eq!(
            self.submission.auth(BOB.0, "wrong").unwrap_err().kind(),
            Kind::Rejected
        );
        self.lmtp.rcpt(ALICE).unwrap();
        self.postfix.rcpt(BOB.0).unwrap();
        for (name, d) in self.all() {
            assert_eq!(d.idle_connections(), 1, "{name}");
        }
    }

    fn all(&self) -> [(&'static str, &Directory); 4] {
        [
            ("imap", &self.imap),
            ("submission", &self.submission),
            ("lmtp", &self.lmtp),
            ("postfix", &self.postfix),
        ]
    }

    /// Every answer right, on the first try.
    fn answer_right(&self, when: &str) {
        self.imap
            .auth(ALICE, ALICE_PASS)
            .unwrap_or_else(|e| panic!("{when}: imap: {e}"));
        assert_eq!(
            self.imap.auth(BOB.0, "wrong").unwrap_err().kind(),
            Kind::Rejected,
            "{when}"
        );
        self.imap
            .auth(BOB.0, BOB.1)
            .unwrap_or_else(|e| panic!("{when}: imap bob: {e}"));
        self.submission
            .auth(ALICE, ALICE_PASS)
            .unwrap_or_else(|e| panic!("{when}: submission: {e}"));
        self.lmtp
            .rcpt(BOB.0)
            .unwrap_or_else(|e| panic!("{when}: lmtp: {e}"));
        assert_eq!(
            self.lmtp.rcpt(NOBODY).unwrap_err().kind(),
            Kind::Rejected,
            "{when}"
        );
        self.postfix
            .rcpt(ALICE)
            .unwrap_or_else(|e| panic!("{when}: postfix: {e}"));
        assert_eq!(
            self.postfix.rcpt(NOBODY).unwrap_err().kind(),
            Kind::Rejected,
            "{when}"
        );
    }

    /// During an outage: TEMPORARY for everything, a wrong password included.
    fn all_temporary(&self, when: &str) -> Vec<String> {
        let mut messages = Vec::new();
        let start = Instant::now();
        for (name, result) in [
            ("imap right", self.imap.auth(ALICE, ALICE_PASS)),
            ("imap wrong", self.imap.auth(ALICE, "wrong")),
            ("submission wrong", self.submission.auth(ALICE, "wrong")),
            ("lmtp", self.lmtp.rcpt(NOBODY)),
            ("postfix", self.postfix.rcpt(NOBODY)),
        ] {
            let e = result.expect_err(name);
            assert_ne!(e.kind(), Kind::Rejected, "{when}: {name}: {e}");
            assert!(
                matches!(e.kind(), Kind::Network | Kind::Timeout | Kind::Tls),
                "{when}: {name}: {e}"
            );
            messages.push(format!("{name}: {e}"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{when}: {:?}",
            start.elapsed()
        );
        messages
    }
}

#[test]
fn servers_restarted_under_idle_connections_then_next_calls_succeed() {
    let s = servers();
    let dir = s.var("RD_DIR").to_string();
    let ports: Vec<u16> = [
        "RD_IMAP_PORT",
        "RD_IMAPS_PORT",
        "RD_LMTP_PORT",
        "RD_SUBMISSION_PORT",
        "RD_SUBMISSIONS_PORT",
        "RD_SMTP_PORT",
        "RD_POLICY_SMTP_PORT",
    ]
    .iter()
    .map(|k| s.port(k))
    .collect();
    let base = s.port("RD_IMAP_PORT") - 143;
    let env_path = PathBuf::from(std::env::var("RD_SERVERS_ENV").unwrap());
    let env_text = std::fs::read_to_string(&env_path).unwrap();
    let restore = Restore {
        dir: dir.clone(),
        base,
        ports: ports.clone(),
        env_path: env_path.clone(),
    };
    let stop = || run(Command::new(script()).args(["stop", &dir]));

    // 1. The daemons restarted on the same configuration and certificate.
    let held = Handles::open();
    held.make_idle();
    let during = Handles::open();
    let t = Instant::now();
    stop();
    eprintln!("stopped in {:?}", t.elapsed());
    for m in during.all_temporary("servers stopped") {
        eprintln!("  outage: {m}");
    }
    let t = Instant::now();
    run(Command::new("dovecot").args(["-c", &format!("{dir}/dovecot/dovecot.conf")]));
    run(Command::new("postfix").args(["-c", &format!("{dir}/postfix"), "start"]));
    wait_greetings(
        &ports,
        &[s.port("RD_IMAPS_PORT"), s.port("RD_SUBMISSIONS_PORT")],
    );
    eprintln!("daemons back in {:?}", t.elapsed());
    // Same ports, same CA: the env file `stop` removed is true again.
    std::fs::write(&env_path, &env_text).unwrap();
    // The handles still count their idle (now dead) connections; the next calls replace them.
    held.answer_right("after the daemons' restart");
    during.answer_right("after the outage");

    // 2. servers.sh stop and start on the same directory: a new CA and certificate. (Fresh
    // handles: a connection that is still open may outlive its daemon's master process and
    // answer rightly, as Dovecot's submission process does.)
    let old_ca = Handles::open();
    stop();
    for m in Handles::open().all_temporary("servers.sh stopped") {
        eprintln!("  outage: {m}");
    }
    let t = Instant::now();
    run(Command::new(script())
        .args(["start", &dir])
        .env("RD_PORT_BASE", base.to_string()));
    eprintln!("servers.sh start took {:?}", t.elapsed());
    assert!(restore.running());
    // `old_ca` trusts the old CA only: every TLS connection now fails, as TEMPORARY.
    for (name, result) in [
        ("imap", old_ca.imap.auth(ALICE, ALICE_PASS)),
        ("imap wrong", old_ca.imap.auth(ALICE, "wrong")),
        ("lmtp", old_ca.lmtp.rcpt(NOBODY)),
        ("postfix", old_ca.postfix.rcpt(NOBODY)),
    ] {
        let e = result.expect_err(name);
        assert_eq!(e.kind(), Kind::Tls, "{name}: {e}");
    }
    // New handles read the new CA and work at once.
    Handles::open().answer_right("after servers.sh start");
    drop(restore);
}
