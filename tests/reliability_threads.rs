//! Many threads: 64 threads share one handle per directory and make 20,000 mixed auth,
//! rcpt and domain calls, once against scripted peers and once against the real Dovecot
//! and Postfix. Every answer is checked; the whole run is bounded in time (no deadlock);
//! connections never exceed `pool.max-connections` (the peers count them, and for the real
//! servers the kernel's table of established sockets is sampled); `limits.*` hold on every
//! connection (the peers count RCPTs and failed logins per connection); and no file
//! descriptor is left open once the handles are closed.
//!
//! The tests of this file take one lock each: the file-descriptor count is per process.

mod common;
mod peer;

use common::{servers, BOB, NOBODY};
use peer::{plain_b64, CDirectory, ImapServer, SmtpServer};
use remote_directory::ffi::directory_result::{self, *};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const THREADS: usize = 64;
const CALLS: usize = 20_000;
/// Wrong passwords cost ~500 ms each at Dovecot: few of them against the real servers.
const REAL_WRONG_PASSWORDS: usize = 24;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `work(thread, call)` for `CALLS` calls spread over `THREADS` threads; panics if it
/// is not all done within `limit` (a deadlock or a call that ignores its timeout).
fn run_bounded(limit: Duration, work: impl Fn(usize, usize) + Sync) -> Duration {
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let work = &work;
        let done = &done;
        let failed = &failed;
        for t in 0..THREADS {
            s.spawn(move || {
                let mut call = t;
                while call < CALLS && !failed.load(Ordering::SeqCst) {
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(t, call)));
                    if let Err(panic) = outcome {
                        failed.store(true, Ordering::SeqCst);
                        std::panic::resume_unwind(panic);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    call += THREADS;
                }
            });
        }
        // The watchdog: progress must complete within `limit`.
        let deadline = Instant::now() + limit;
        while done.load(Ordering::SeqCst) < CALLS && !failed.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                eprintln!(
                    "stuck: {} of {CALLS} calls done after {limit:?}",
                    done.load(Ordering::SeqCst)
                );
                // Not a clean exit, but a hung test must not hang CI.
                std::process::exit(101);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    start.elapsed()
}

fn check(what: &str, got: (directory_result, String), expected: directory_result) {
    assert_eq!(got.0, expected, "{what}: {}", got.1);
}

#[test]
fn sixty_four_threads_twenty_thousand_calls_against_scripted_peers() {
    let _serial = serial();
    // Warm up what stays for the process (TLS material, thread-locals) before counting.
    drop(SmtpServer::lmtp(&[]).start());
    let fds_before = open_fds();
    let wrong = "wrong-pass";
    // IMAP with UNAUTHENTICATE (connections serve several logins), SMTP without (each
    // successful AUTH ends its connection), LMTP for probes.
    let imap = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR UNAUTHENTICATE")
        .user(BOB.0, BOB.1)
        .start();
    let mut smtp = SmtpServer::smtp(&["AUTH PLAIN", "PIPELINING"]);
    smtp.users.push((BOB.0.into(), BOB.1.into()));
    let smtp = smtp.start();
    let mut lmtp = SmtpServer::lmtp(&["PIPELINING"]);
    lmtp.recipients = (0..50).map(|i| format!("user{i}@example.org")).collect();
    let lmtp = lmtp.start();
    let limits = [
        "pool.max-connections = 8",
        "limits.rcpt = 10",
        "limits.auth-errors = 3",
    ];
    let domains = "lookup.domains = [\"example.org\", \"example.net\"]";
    let imap_dir = CDirectory::open("imap", &imap, &[limits[0], limits[2], domains]);
    let smtp_dir = CDirectory::open("smtp", &smtp, &[limits[0], limits[2]]);
    let lmtp_dir = CDirectory::open("lmtp", &lmtp, &[limits[0], limits[1]]);
    let sampler = Sampler::start(&[imap.port(), smtp.port(), lmtp.port()]);
    let took = {
        let took = run_bounded(Duration::from_secs(120), |t, call| {
            let what = format!("thread {t} call {call}");
            match call % 20 {
                0..=7 => {
                    let i = call % 60;
                    let expected = if i < 50 {
                        DIRECTORY_RESULT_OK
                    } else {
                        DIRECTORY_RESULT_REJECTED
                    };
                    check(
                        &what,
                        lmtp_dir.rcpt(&format!("user{i}@example.org")),
                        expected,
                    );
                }
                8..=11 => check(
                    &what,
                    imap_dir.auth(ALICE, "alice-pass-1"),
                    DIRECTORY_RESULT_OK,
                ),
                12 => check(&what, imap_dir.auth(BOB.0, BOB.1), DIRECTORY_RESULT_OK),
                13 => check(
                    &what,
                    smtp_dir.auth(ALICE, "alice-pass-1"),
                    DIRECTORY_RESULT_OK,
                ),
                14 => check(
                    &what,
                    imap_dir.auth(ALICE, wrong),
                    DIRECTORY_RESULT_REJECTED,
                ),
                15 => check(
                    &what,
                    smtp_dir.auth(BOB.0, wrong),
                    DIRECTORY_RESULT_REJECTED,
                ),
                16 | 17 => {
                    let domain = std::ffi::CString::new(if call % 40 < 20 {
                        "EXAMPLE.net."
                    } else {
                        "example.com"
                    })
                    .unwrap();
                    let r = remote_directory::ffi::directory_is_local_domain(
                        imap_dir.as_ptr(),
                        domain.as_ptr(),
                    );
                    let expected = if call % 40 < 20 {
                        DIRECTORY_RESULT_OK
                    } else {
                        DIRECTORY_RESULT_REJECTED
                    };
                    assert_eq!(r, expected, "{what}");
                }
                _ => check(&what, smtp_dir.rcpt(ALICE), DIRECTORY_RESULT_OK),
            }
        });
        took
    };
    let (samples, peaks) = sampler.finish();
    drop((imap_dir, smtp_dir, lmtp_dir));
    for peer in [&imap, &smtp, &lmtp] {
        peer.wait_all_ended();
        peer.assert_clean();
    }
    for (i, (name, peer)) in [("imap", &imap), ("smtp", &smtp), ("lmtp", &lmtp)]
        .into_iter()
        .enumerate()
    {
        let seen = peaks[i];
        // The peer counts a connection until it has read the close, so under churn it may
        // see a closed one and its replacement at once; the client's descriptors are exact.
        eprintln!(
            "{name}: {} connections; at most {seen} open at once in {samples} snapshots (client), {} (peer)",
            peer.connections(),
            peer.max_concurrent()
        );
        assert!(seen <= 8, "{name}: {seen} connections open at once");
        assert!(seen >= 2, "{name}: the sampler saw nothing ({seen})");
    }
    // Per connection: at most 10 RCPTs, at most 3 failed logins.
    for (name, peer) in [("smtp", &smtp), ("lmtp", &lmtp)] {
        for (i, commands) in peer.all_commands().iter().enumerate() {
            let rcpts = commands.iter().filter(|l| l.starts_with("RCPT")).count();
            assert!(rcpts <= 10, "{name} connection {i}: {rcpts} RCPTs");
        }
    }
    let failed_imap = [plain_b64(ALICE, wrong)];
    let failed_smtp = [plain_b64(BOB.0, wrong)];
    for (name, peer, failing) in [("imap", &imap, &failed_imap), ("smtp", &smtp, &failed_smtp)] {
        for (i, commands) in peer.all_commands().iter().enumerate() {
            let failures = commands
                .iter()
                .filter(|l| failing.iter().any(|f| l.ends_with(f.as_str())))
                .count();
            assert!(
                failures <= 3,
                "{name} connection {i}: {failures} failed logins"
            );
        }
    }
    drop((imap, smtp, lmtp));
    eprintln!("{CALLS} calls on {THREADS} threads against scripted peers: {took:?}");
    let fds_after = open_fds();
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
}

/// Counts, in exact snapshots, this process's open TCP sockets connected to each of some
/// ports, and keeps the peak per port. Reading /proc while 64 threads open and close
/// connections gives no snapshot (a socket closed and its replacement can both be listed),
/// so a helper process stops this process (SIGSTOP), reads its descriptor table and socket
/// table, and lets it go on (SIGCONT), every 10 ms. A descriptor is closed before the pool
/// frees its slot, so "sockets open" must never exceed `pool.max-connections`.
struct Sampler {
    child: std::process::Child,
}

const SAMPLER: &str = r#"
import os, select, signal, sys
pid = int(sys.argv[1]); ports = [int(p) for p in sys.argv[2:]]
peak = {p: 0 for p in ports}; samples = 0
def remote_ports():
    by_inode = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            by_inode[f[9]] = int(f[2].rsplit(":", 1)[1], 16)
    return by_inode
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0.01)
    if ready:
        break
    os.kill(pid, signal.SIGSTOP)
    try:
        inodes = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.append(link[8:-1])
        ports_of = remote_ports()
    finally:
        os.kill(pid, signal.SIGCONT)
    counts = {p: 0 for p in ports}
    for inode in inodes:
        p = ports_of.get(inode)
        if p in counts:
            counts[p] += 1
    for p in ports:
        peak[p] = max(peak[p], counts[p])
    samples += 1
print(samples, *(peak[p] for p in ports))
"#;

impl Sampler {
    fn start(ports: &[u16]) -> Sampler {
        let child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SAMPLER)
            .arg(std::process::id().to_string())
            .args(ports.iter().map(|p| p.to_string()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (tests/servers/servers.sh needs it too) runs the sampler");
        Sampler { child }
    }

    /// (number of snapshots, peak per port in the order given).
    fn finish(mut self) -> (usize, Vec<usize>) {
        use std::io::Write as _;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"stop\n").unwrap();
        drop(stdin);
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<usize> = text
            .split_whitespace()
            .map(|n| n.parse().expect("sampler output"))
            .collect();
        assert!(numbers.len() > 1, "sampler output {text:?}");
        (numbers[0], numbers[1..].to_vec())
    }
}

#[test]
fn sixty_four_threads_twenty_thousand_calls_against_the_real_servers() {
    let _serial = serial();
    let servers = servers();
    let max = [("imap", 6), ("lmtp", 6), ("smtp", 4)];
    let imap_dir = CDirectory::open_text(&servers.config(
        "imap",
        "RD_IMAP_PORT",
        false,
        "pool.max-connections = 6\npool.timeout.wait = \"60s\"",
    ));
    let lmtp_dir = CDirectory::open_text(&servers.config(
        "lmtp",
        "RD_LMTP_PORT",
        false,
        "pool.max-connections = 6\nlimits.rcpt = 200\npool.timeout.wait = \"60s\"",
    ));
    // Postfix: the default limits.rcpt (10), as its error counters want.
    let smtp_dir = CDirectory::open_text(&servers.config(
        "smtp",
        "RD_SMTP_PORT",
        false,
        "pool.max-connections = 4\npool.timeout.wait = \"60s\"",
    ));
    // Warm up (TLS roots, first connections), then count descriptors.
    check("warm-up", lmtp_dir.rcpt(ALICE), DIRECTORY_RESULT_OK);
    let fds_before = open_fds();
    let ports = [
        servers.port("RD_IMAP_PORT"),
        servers.port("RD_LMTP_PORT"),
        servers.port("RD_SMTP_PORT"),
    ];
    let wrong_every = CALLS / REAL_WRONG_PASSWORDS;
    let sampler = Sampler::start(&ports);
    let took = {
        let took = run_bounded(Duration::from_secs(240), |t, call| {
            let what = format!("thread {t} call {call}");
            if call % wrong_every == wrong_every / 2 {
                let user = if call % 2 == 0 { ALICE } else { BOB.0 };
                check(
                    &what,
                    imap_dir.auth(user, "wrong-password"),
                    DIRECTORY_RESULT_REJECTED,
                );
                return;
            }
            match call % 40 {
                0..=21 => {
                    let (address, expected) = if call % 7 == 0 {
                        (NOBODY, DIRECTORY_RESULT_REJECTED)
                    } else {
                        (
                            if call % 2 == 0 { ALICE } else { BOB.0 },
                            DIRECTORY_RESULT_OK,
                        )
                    };
                    check(&what, lmtp_dir.rcpt(address), expected);
                }
                22..=30 => {
                    // Postfix: existing recipients (a 550 counts toward its error limits).
                    let address = if call % 2 == 0 { ALICE } else { BOB.0 };
                    check(&what, smtp_dir.rcpt(address), DIRECTORY_RESULT_OK);
                }
                31 | 32 => check(
                    &what,
                    imap_dir.auth(ALICE, "alice-pass-1"),
                    DIRECTORY_RESULT_OK,
                ),
                33 => check(&what, imap_dir.auth(BOB.0, BOB.1), DIRECTORY_RESULT_OK),
                _ => {
                    let (domain, expected) = if call % 3 == 0 {
                        ("other.test", DIRECTORY_RESULT_REJECTED)
                    } else {
                        ("Example.ORG", DIRECTORY_RESULT_OK)
                    };
                    let d = std::ffi::CString::new(domain).unwrap();
                    let r = remote_directory::ffi::directory_is_local_domain(
                        lmtp_dir.as_ptr(),
                        d.as_ptr(),
                    );
                    assert_eq!(r, expected, "{what}");
                }
            }
        });
        took
    };
    let (samples, peaks) = sampler.finish();
    drop((imap_dir, lmtp_dir, smtp_dir));
    for (i, (name, limit)) in max.iter().enumerate() {
        let seen = peaks[i];
        eprintln!("{name}: at most {seen} connections open at once in {samples} snapshots (limit {limit})");
        assert!(seen <= *limit, "{name}: {seen} connections > {limit}");
    }
    eprintln!(
        "{CALLS} calls ({REAL_WRONG_PASSWORDS} wrong passwords) on {THREADS} threads against Dovecot and Postfix: {took:?}"
    );
    // The handles are closed: their sockets too (the warm-up connection included).
    let fds_after = open_fds();
    assert!(
        fds_after < fds_before,
        "file descriptors: {fds_before} with one idle LMTP connection, {fds_after} after close"
    );
    assert_eq!(fds_after, fds_before - 1, "file descriptors leaked");
}
