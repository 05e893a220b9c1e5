//! Abuse resistance. What `limits.auth-errors` protects: servers (or fail2ban-style filters
//! in front of them) that ban the client's address after too many failed logins on one
//! connection would, once the library's proxy address is banned, turn every user's login
//! into an outage. And however many threads call, a handle never opens more than
//! `pool.max-connections` connections, whether the server is fast, slow, silent or down.

mod peer;

use peer::{plain_b64, CDirectory, Conn, Peer, PeerResult, SmtpServer};
use remote_directory::ffi::directory_result::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";

/// A server that bans the client for good when it tries a 4th login on a connection that
/// already failed 3 times: from then on every connection is refused at the greeting.
fn banning_imap(banned: Arc<AtomicBool>) -> impl Fn(&mut Conn) -> PeerResult {
    move |c| {
        if banned.load(Ordering::SeqCst) {
            return c.send("* BYE [UNAVAILABLE] Your address is banned.");
        }
        c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")?;
        let mut failures = 0;
        loop {
            let line = c.next_line()?;
            let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
            if rest.eq_ignore_ascii_case("LOGOUT") {
                return c.send_lines(&["* BYE bye", &format!("{tag} OK Logout completed.")]);
            }
            if failures >= 3 {
                banned.store(true, Ordering::SeqCst);
                return c.send("* BYE Too many authentication failures: banned.");
            }
            if rest == format!("AUTHENTICATE PLAIN {}", plain_b64(ALICE, ALICE_PASS)) {
                return c.send(&format!("{tag} OK Logged in"));
            }
            failures += 1;
            c.send(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] Authentication failed."
            ))?;
        }
    }
}

/// The same for SMTP: `421` and close on the 4th AUTH after 3 failures, `421` at the
/// greeting once banned.
fn banning_smtp(banned: Arc<AtomicBool>) -> impl Fn(&mut Conn) -> PeerResult {
    move |c| {
        if banned.load(Ordering::SeqCst) {
            return c.send("421 4.7.0 mx.example.org Your address is banned");
        }
        c.send("220 mx.example.org ESMTP")?;
        c.expect("EHLO")?;
        c.send_lines(&["250-mx.example.org", "250 AUTH PLAIN"])?;
        let mut failures = 0;
        loop {
            let line = c.next_line()?;
            if line.eq_ignore_ascii_case("QUIT") {
                return c.send("221 2.0.0 Bye");
            }
            if failures >= 3 {
                banned.store(true, Ordering::SeqCst);
                return c.send("421 4.7.0 mx.example.org Error: too many authentication failures");
            }
            if line == format!("AUTH PLAIN {}", plain_b64(ALICE, ALICE_PASS)) {
                return c.send("235 2.7.0 Authentication successful");
            }
            failures += 1;
            c.send("535 5.7.8 Error: authentication failed")?;
        }
    }
}

/// A peer of `kind` (imap or smtp) that bans the client as `banning_imap` and
/// `banning_smtp` do, and the flag it sets when it bans.
fn banning_peer(kind: &str) -> (Peer, Arc<AtomicBool>) {
    let banned = Arc::new(AtomicBool::new(false));
    let peer = match kind {
        "imap" => Peer::start(banning_imap(banned.clone())),
        "smtp" => Peer::start(banning_smtp(banned.clone())),
        _ => panic!("no banning peer for {kind}"),
    };
    (peer, banned)
}

fn logins(peer: &Peer) -> Vec<usize> {
    peer.all_commands()
        .iter()
        .map(|c| c.iter().filter(|l| l.contains("AUTH")).count())
        .collect()
}

#[test]
fn auth_errors_limit_of_three_ends_each_connection_before_a_ban() {
    for kind in ["imap", "smtp"] {
        let (peer, banned) = banning_peer(kind);
        let dir = CDirectory::open(kind, &peer, &["limits.auth-errors = 3"]);
        // Ten users mistype their passwords through the same proxy.
        for i in 0..10 {
            let (r, m) = dir.auth(ALICE, &format!("typo-{i}"));
            assert_eq!(r, DIRECTORY_RESULT_REJECTED, "{kind} #{i}: {m}");
        }
        // And the next user still gets in.
        let (r, m) = dir.auth(ALICE, ALICE_PASS);
        assert_eq!(r, DIRECTORY_RESULT_OK, "{kind}: {m}");
        drop(dir);
        peer.wait_all_ended();
        assert!(
            !banned.load(Ordering::SeqCst),
            "{kind}: the client was banned"
        );
        let per_connection = logins(&peer);
        assert!(
            per_connection.iter().all(|&n| n <= 3),
            "{kind}: logins per connection {per_connection:?}"
        );
        assert_eq!(per_connection.iter().sum::<usize>(), 11, "{kind}");
        assert_eq!(peer.connections(), 4, "{kind}: {per_connection:?}");
    }
}

#[test]
fn a_higher_auth_errors_limit_gets_the_client_banned_and_then_every_login_is_temporary() {
    // The contrast: with limits.auth-errors = 5 the 4th attempt on one connection trips
    // the ban. The library reports the ban as TEMPORARY (never as a wrong password), but
    // every user's login fails from then on: this is what the default of 3 prevents.
    for kind in ["imap", "smtp"] {
        let (peer, banned) = banning_peer(kind);
        let dir = CDirectory::open(kind, &peer, &["limits.auth-errors = 5"]);
        for i in 0..3 {
            assert_eq!(
                dir.auth(ALICE, &format!("typo-{i}")).0,
                DIRECTORY_RESULT_REJECTED
            );
        }
        let (r, m) = dir.auth(ALICE, "typo-3");
        assert_eq!(r, DIRECTORY_RESULT_TEMPORARY, "{kind}: {m}");
        assert!(banned.load(Ordering::SeqCst), "{kind}");
        for _ in 0..2 {
            let (r, m) = dir.auth(ALICE, ALICE_PASS);
            assert_eq!(r, DIRECTORY_RESULT_TEMPORARY, "{kind}: {m}");
            assert!(m.contains("banned"), "{kind}: {m}");
        }
    }
}

#[test]
fn many_threads_never_get_more_than_max_connections_from_a_fast_or_slow_server() {
    for (delay, threads, calls) in [
        (Duration::ZERO, 128, 20),
        (Duration::from_millis(20), 128, 2),
    ] {
        let mut server = SmtpServer::lmtp(&["PIPELINING"]);
        server.rcpt_delay = delay;
        let peer = server.start();
        let dir = CDirectory::open(
            "lmtp",
            &peer,
            &["pool.max-connections = 4", "limits.rcpt = 1000"],
        );
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let dir = &dir;
                s.spawn(move || {
                    for i in 0..calls {
                        let (address, expected) = if (t + i) % 3 == 0 {
                            (
                                format!("nobody{t}.{i}@example.org"),
                                DIRECTORY_RESULT_REJECTED,
                            )
                        } else {
                            (ALICE.to_string(), DIRECTORY_RESULT_OK)
                        };
                        let (r, m) = dir.rcpt(&address);
                        assert_eq!(r, expected, "{address}: {m}");
                    }
                });
            }
        });
        let took = start.elapsed();
        drop(dir);
        peer.wait_all_ended();
        eprintln!(
            "{threads} threads x {calls} probes, server delay {delay:?}: {took:?}, {} connections, at most {} at once",
            peer.connections(),
            peer.max_concurrent()
        );
        assert!(peer.max_concurrent() <= 4, "max {}", peer.max_concurrent());
        assert!(
            peer.connections() <= 4,
            "{} connections",
            peer.connections()
        );
        peer.assert_clean();
    }
}

#[test]
fn a_silent_server_or_one_that_is_down_cannot_make_the_pool_grow() {
    // Silent: each connection waits for a greeting that never comes. 64 callers, 2 slots,
    // a short pool wait: two connections at a time, the rest TEMPORARY from the pool.
    let peer = Peer::start(|c| c.stall(Duration::from_secs(20)));
    let dir = CDirectory::open(
        "smtp",
        &peer,
        &[
            "pool.max-connections = 2",
            "pool.timeout.wait = \"300ms\"",
            "timeout = \"1s\"",
        ],
    );
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..64 {
            let dir = &dir;
            s.spawn(move || {
                let (r, m) = dir.rcpt(ALICE);
                assert_eq!(r, DIRECTORY_RESULT_TEMPORARY, "{m}");
            });
        }
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(dir);
    peer.wait_all_ended();
    assert!(peer.max_concurrent() <= 2, "max {}", peer.max_concurrent());
    // 64 callers with a 300 ms wait behind 1 s stalls: only the first two got a slot.
    assert_eq!(peer.connections(), 2);
    // Down: every attempt is refused; slots come back, nothing stays counted.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = CDirectory::open_text(&format!(
        "[directory.d]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = {port}\npool.max-connections = 3\n"
    ));
    std::thread::scope(|s| {
        for _ in 0..32 {
            let dir = &dir;
            s.spawn(move || {
                for _ in 0..20 {
                    assert_eq!(dir.auth(ALICE, "x").0, DIRECTORY_RESULT_TEMPORARY);
                }
            });
        }
    });
}
