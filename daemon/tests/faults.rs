//! The daemon under faults: killed and restarted under load, reloaded with a good and a
//! broken file under load, slow and hostile local clients, a thousand connections at once.
//! Clients are the library's `type = "daemon"` directories (and raw sockets for the
//! hostile ones); the remote is the real Dovecot LMTP.

mod common;

use common::*;
use remote_directory::{Directory, Kind};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn config(extra_daemon: &str) -> String {
    format!(
        "{}\n[daemon]\nsocket = \"@DIR@/socket\"\n{extra_daemon}\n",
        directory("lmtp", "lmtp", "RD_LMTP_PORT", "")
    )
}

/// A client of the daemon's `lmtp` directory that gives up after `timeout`.
fn client(daemon: &Daemon, timeout: &str) -> Directory {
    let text = client_config(
        "lmtp",
        &daemon.path("socket"),
        "lmtp",
        &format!("timeout = \"{timeout}\""),
    );
    Directory::open_str(&text, None).unwrap()
}

/// A call's outcome as a comparable value: its kind and message.
type Outcome = Result<(), (Kind, String)>;

/// What each call of a load test returned, when it started and how long it took.
#[derive(Default)]
struct Record {
    calls: Vec<(Instant, Duration, Outcome)>,
}

/// `threads` threads calling `rcpt(ALICE)` on `dir` until `stop`.
fn load(
    dir: &Arc<Directory>,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Record>> {
    (0..threads)
        .map(|_| {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut record = Record::default();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let outcome = dir.rcpt(ALICE.0).map_err(|e| (e.kind(), e.to_string()));
                    record.calls.push((started, started.elapsed(), outcome));
                    std::thread::sleep(Duration::from_millis(5));
                }
                record
            })
        })
        .collect()
}

#[test]
fn sigkill_under_16_clients_is_temporary_and_they_recover_after_restart() {
    let mut daemon = Daemon::start("kill", &config(""));
    let dir = Arc::new(client(&daemon, "3s"));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&dir, 16, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    daemon.kill();
    std::thread::sleep(Duration::from_millis(500));
    let restarted_at = Instant::now();
    daemon.spawn();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let record = t.join().unwrap();
        let mut failed_while_down = 0;
        let mut ok_after_restart = 0;
        for (started, took, outcome) in &record.calls {
            assert!(
                *took < Duration::from_secs(4),
                "a call hung for {took:?} (timeout 3s): {outcome:?}"
            );
            match outcome {
                Ok(()) if *started > restarted_at => ok_after_restart += 1,
                Ok(()) => {}
                Err((kind, text)) => {
                    assert_eq!(*kind, Kind::Network, "{text}");
                    assert!(text.starts_with("remote-directoryd at "), "{text}");
                    assert!(
                        *started + *took >= killed_at,
                        "failed before the kill: {text}"
                    );
                    failed_while_down += 1;
                }
            }
        }
        assert!(failed_while_down > 0, "no call saw the daemon down");
        assert!(ok_after_restart > 0, "no call succeeded after the restart");
    }
}

#[test]
fn sighup_with_good_and_broken_files_under_load_fails_no_call() {
    let daemon = Daemon::start("reload", &config(""));
    let dir = Arc::new(client(&daemon, "10s"));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&dir, 8, &stop);
    for _ in 0..3 {
        daemon.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(150));
        // A file broken mid-edit: the previous configuration stays in force.
        daemon.rewrite_config(&format!("{}\n[directory.broken\n", config("")));
        daemon.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(150));
        daemon.rewrite_config(&config(""));
    }
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let mut calls = 0;
    for t in threads {
        for (_, _, outcome) in t.join().unwrap().calls {
            assert_eq!(outcome, Ok(()));
            calls += 1;
        }
    }
    assert!(calls > 50, "only {calls} calls during the reloads");
    let log = daemon.log();
    assert_eq!(log.matches("reloaded").count(), 4, "{log}");
    assert_eq!(
        log.matches("reload failed, the previous configuration stays in force")
            .count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("line "),
        "the syntax error names its line:\n{log}"
    );
}

#[test]
fn half_a_request_is_cut_off_after_the_request_timeout_and_others_are_served() {
    let daemon = Daemon::start(
        "stall",
        &config("request-timeout = \"1s\"\nmax-clients = 4\n"),
    );
    // Half of a frame: the length says 100 bytes, 10 come.
    let mut stalled = UnixStream::connect(daemon.path("socket")).unwrap();
    stalled.write_all(&100u32.to_be_bytes()).unwrap();
    stalled.write_all(&[1; 10]).unwrap();
    let started = Instant::now();
    let dir = client(&daemon, "5s");
    for _ in 0..3 {
        dir.rcpt(ALICE.0).unwrap();
    }
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        stalled.read(&mut buf).unwrap(),
        0,
        "closed without an answer"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    daemon.wait_log("no complete request within 1s (daemon.request-timeout); closed");
    assert!(
        daemon
            .log()
            .contains(&format!("pid={} uid=", std::process::id())),
        "the refusal names the peer's credentials:\n{}",
        daemon.log()
    );
}

#[test]
fn a_thousand_connections_at_once_are_all_answered() {
    let daemon = Daemon::start("thousand", &config("max-clients = 64\n"));
    let request = remote_directory::wire::encode_request(&remote_directory::wire::Request {
        directory: "lmtp",
        call: remote_directory::wire::Call::IsLocalDomain {
            domain: "example.org",
        },
    })
    .to_vec();
    let n = 1000;
    let barrier = Arc::new(Barrier::new(n));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, failures, request) = (barrier.clone(), failures.clone(), request.clone());
            let path = daemon.path("socket");
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    barrier.wait();
                    let answer = (|| -> std::io::Result<Vec<u8>> {
                        let mut s = UnixStream::connect(&path)?;
                        s.set_read_timeout(Some(Duration::from_secs(60)))?;
                        // Each holds its worker a moment: more clients than
                        // daemon.max-clients are connected at once, the rest wait.
                        s.write_all(&request[..4])?;
                        std::thread::sleep(Duration::from_millis(200));
                        s.write_all(&request[4..])?;
                        let mut got = Vec::new();
                        let mut buf = [0u8; 64];
                        while remote_directory::wire::decode_response(&got)
                            .map_err(std::io::Error::other)?
                            .is_none()
                        {
                            let k = s.read(&mut buf)?;
                            if k == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                            got.extend_from_slice(&buf[..k]);
                        }
                        Ok(got)
                    })();
                    match answer.map(|a| remote_directory::wire::decode_response(&a)) {
                        Ok(Ok(Some((a, _)))) if a.outcome.is_ok() => {}
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // And the daemon goes on as before.
    client(&daemon, "5s").rcpt(ALICE.0).unwrap();
    // The bound was reached and said, once per episode, not once per waiting connection.
    let said = daemon
        .log()
        .matches("64 clients at once (daemon.max-clients): new connections wait")
        .count();
    assert!((1..=50).contains(&said), "said {said} times");
}

/// Sends `bytes` on a new connection to `path`; what came back before the daemon closed it.
fn refused(path: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The daemon may close before reading everything: a reset is an answer too.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn oversized_and_malformed_requests_close_the_connection_and_nothing_else() {
    let daemon = Daemon::start(
        "oversized",
        &config("socketmap.socket = \"@DIR@/socketmap\"\npolicy.socket = \"@DIR@/policy\"\npolicy.directory = \"lmtp\"\nmetrics.socket = \"@DIR@/metrics\"\n"),
    );
    let own = daemon.path("socket");
    // (what, socket, bytes sent, start of the reply, what the log says)
    type Case<'a> = (&'a str, std::path::PathBuf, Vec<u8>, &'a [u8], &'a str);
    let cases: Vec<Case> = vec![
        (
            "own: length over the limit",
            own.clone(),
            (64u32 << 20).to_be_bytes().to_vec(),
            b"",
            "message of 67108864 bytes, longer than 8192",
        ),
        (
            "own: unknown operation",
            own.clone(),
            vec![0, 0, 0, 4, 1, 9, 0, 0],
            b"",
            "malformed message: unknown operation",
        ),
        (
            "socketmap: netstring over the limit",
            daemon.path("socketmap"),
            b"99999999:lmtp a@b,".to_vec(),
            b"PERM netstring of 99999999 bytes",
            "netstring of 99999999 bytes",
        ),
        (
            "socketmap: endless length",
            daemon.path("socketmap"),
            b"1234567890123".to_vec(),
            b"PERM not a netstring",
            "length has more than 9 digits",
        ),
        (
            "socketmap: no netstring at all",
            daemon.path("socketmap"),
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            b"PERM not a netstring",
            "does not start with a length",
        ),
        (
            "policy: line over 4 KiB",
            daemon.path("policy"),
            format!("recipient={}\n\n", "a".repeat(5000)).into_bytes(),
            b"",
            "line longer than 4096 bytes",
        ),
        (
            "policy: endless request",
            daemon.path("policy"),
            "x=y\n".repeat(20_000).into_bytes(),
            b"",
            "more than 128 attributes",
        ),
        (
            "metrics: endless header",
            daemon.path("metrics"),
            format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(20_000)).into_bytes(),
            b"HTTP/1.1 400 ",
            "request head longer than 8192 bytes",
        ),
    ];
    for (what, path, bytes, reply_start, logged) in cases {
        let got = refused(&path, &bytes);
        let found =
            reply_start.is_empty() || got.windows(reply_start.len()).any(|w| w == reply_start);
        assert!(found, "{what}: got {:?}", String::from_utf8_lossy(&got));
        daemon.wait_log(logged);
        // Every service still answers.
        client(&daemon, "5s").rcpt(ALICE.0).unwrap();
    }
}
