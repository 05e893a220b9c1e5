//! Failover across several servers (`address` as a list), against the real Dovecot and
//! Postfix of `tests/servers/servers.sh`.
//!
//! Each "server" of a list is a [`Relay`]: a TCP relay on a loopback port of its own that
//! passes every byte to and from the real server (TLS included, end to end), counts the
//! connections it relayed, and can be stopped (its port then refuses connections, as a
//! server that is down) and started again on the same port. The answers are Dovecot's and
//! Postfix's; the relays only tell the test which server of the list was asked. A server
//! that is black-holed is a scripted peer that accepts and never speaks, or a port whose
//! listen queue is full, so that the kernel drops every SYN (nothing answers at all;
//! `common/syn_drop.rs`).

mod common;
mod peer;

use common::relay::Relay;
use common::syn_drop::SynDrop;
use common::{servers, ALICE, NOBODY};
use peer::{CDirectory, Peer};
use remote_directory::ffi::directory_result;
use remote_directory::{stats, Directory, Kind};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Configuration of directory `test` of `kind` with `address` listing `entries`; TLS by
/// STARTTLS, certificates verified against the test CA.
fn config(kind: &str, entries: &[String], extra: &str) -> String {
    let list = entries
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[directory.test]\ntype = \"{kind}\"\naddress = [{list}]\ntls.ca-file = {:?}\n{extra}\n",
        servers().ca()
    )
}

fn open(kind: &str, entries: &[String], extra: &str) -> Directory {
    let text = config(kind, entries, extra);
    Directory::open_str(&text, None).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A port with nothing listening on it: connections are refused.
fn refused_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

/// Runs `call`, asserting it ends within `bound`; returns its result.
fn within<T>(bound: Duration, what: &str, call: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = call();
    let took = start.elapsed();
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
    out
}

const TIMEOUT: Duration = Duration::from_secs(4);
/// What a call may take beyond its `timeout`: scheduling on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn first_server_refused_second_answers_then_traffic_returns_to_the_first() {
    let imap = servers().port("RD_IMAP_PORT");
    let mut first = Relay::start(imap);
    let second = Relay::start(imap);
    let dir = open(
        "imap",
        &[first.address(), second.address()],
        "timeout = \"4s\"\nfailover.backoff = \"200ms\"\nfailover.max-backoff = \"400ms\"",
    );

    // Both up: the first answers; a wrong password is asked of it only.
    dir.auth(ALICE.0, ALICE.1)
        .expect("alice through the first server");
    let e = dir.auth(ALICE.0, "wrong-password").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().starts_with(&first.address()), "{e}");
    assert_eq!(
        second.relayed(),
        0,
        "a refusal is an answer: never asked again"
    );

    // The first goes down: every call is answered by the second, within its timeout.
    first.stop();
    let before = second.relayed();
    for _ in 0..3 {
        within(TIMEOUT + SLACK, "auth with the first server down", || {
            dir.auth(ALICE.0, ALICE.1)
        })
        .expect("alice through the second server");
    }
    let e = dir.auth(ALICE.0, "wrong-password").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().starts_with(&second.address()), "{e}");
    assert!(second.relayed() > before, "the second server was asked");

    // The first comes back: once its backoff has passed, traffic returns to it.
    first.restart();
    let relayed_first = first.relayed();
    std::thread::sleep(Duration::from_millis(500));
    dir.auth(ALICE.0, ALICE.1)
        .expect("alice after the first came back");
    assert!(
        first.relayed() > relayed_first,
        "the first server is asked again"
    );
    let second_after = second.relayed();
    for _ in 0..3 {
        dir.auth(ALICE.0, ALICE.1).expect("alice");
    }
    assert_eq!(
        second.relayed(),
        second_after,
        "the second is left alone again"
    );
}

#[test]
fn every_server_down_is_temporary_naming_each_server() {
    let (a, b) = (refused_port(), refused_port());
    let dir = CDirectory::open_text(&config("imap", &[a.clone(), b.clone()], "timeout = \"2s\""));
    for _ in 0..2 {
        // The second round finds both in their backoff and tries them all the same.
        let (result, message) = dir.auth(ALICE.0, ALICE.1);
        assert_eq!(result, directory_result::DIRECTORY_RESULT_TEMPORARY);
        for server in [&a, &b] {
            assert!(
                message.contains(&format!("{server}: connect to {server}")),
                "{server} missing from {message:?}"
            );
        }
        assert!(message.contains("no server could be reached"), "{message}");
    }
    // The statistics say so too, per server.
    let text = stats::prometheus_text(&stats::snapshot());
    for server in [&a, &b] {
        for line in [
            format!("remote_directory_server_up{{directory=\"test\",server=\"{server}\"}} 0"),
            format!(
                "remote_directory_connections_total{{directory=\"test\",server=\"{server}\",event=\"failed\"}} 2"
            ),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}

/// One black-holed first server of each kind: the second answers within the timeout, and
/// the next calls skip the first while it is in its backoff.
#[test]
fn first_server_black_holed_second_answers_within_the_timeout() {
    let imap = servers().port("RD_IMAP_PORT");
    let silent = Peer::start(|conn| conn.stall(Duration::from_secs(30)));
    let syn_drop = SynDrop::on("127.0.0.1:0".parse().unwrap());
    let cases = [
        (
            "accepts and never speaks",
            format!("127.0.0.1:{}", silent.port()),
        ),
        ("drops every SYN", syn_drop.address()),
    ];
    for (what, black_hole) in cases {
        let second = Relay::start(imap);
        let dir = open(
            "imap",
            &[black_hole.clone(), second.address()],
            "timeout = \"4s\"\nfailover.backoff = \"1m\"\nfailover.max-backoff = \"1m\"",
        );
        within(TIMEOUT + SLACK, what, || dir.auth(ALICE.0, ALICE.1))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(second.relayed(), 1, "{what}: the second server answered");
        let e = dir.auth(ALICE.0, "wrong-password").unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{what}: {e}");
        assert!(e.to_string().starts_with(&second.address()), "{what}: {e}");
    }
    assert_eq!(
        silent.connections(),
        1,
        "the silent server was tried once, then left alone for its backoff"
    );
}

#[test]
fn recipients_fail_over_too_and_answers_are_not_retried() {
    let lmtp = servers().port("RD_LMTP_PORT");
    let mut first = Relay::start(lmtp);
    let second = Relay::start(lmtp);
    let dir = open(
        "lmtp",
        &[first.address(), second.address()],
        // The cache (on by default) would answer the second NOBODY itself.
        "timeout = \"4s\"\nfailover.backoff = \"1m\"\ncache.size = false",
    );
    let e = dir.rcpt(NOBODY).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert_eq!(second.relayed(), 0, "a 550 is an answer");
    first.stop();
    // The pooled connection to the first was cut: the call still gets the right answer.
    within(TIMEOUT + SLACK, "rcpt with the first down", || {
        dir.rcpt(ALICE.0)
    })
    .expect("alice exists, answered by the second");
    let e = dir.rcpt(NOBODY).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().starts_with(&second.address()), "{e}");
}

/// `cache.stale-if-error`: with every server down, a login and a recipient accepted a moment
/// ago are still OK (the message says so); anything else is TEMPORARY; a server's own
/// answer always stands.
#[test]
fn stale_if_error_keeps_recent_users_in_during_an_outage() {
    let (imap, lmtp) = (
        servers().port("RD_IMAP_PORT"),
        servers().port("RD_LMTP_PORT"),
    );
    let stale = "timeout = \"3s\"\ncache.ttl.positive = \"100ms\"\ncache.ttl.negative = \"1h\"\n\
                 cache.stale-if-error = \"1h\"";
    let mut imap_relays = [Relay::start(imap), Relay::start(imap)];
    let mut lmtp_relays = [Relay::start(lmtp), Relay::start(lmtp)];
    let addresses = |relays: &[Relay; 2]| [relays[0].address(), relays[1].address()];
    let logins = CDirectory::open_text(&config("imap", &addresses(&imap_relays), stale));
    let rcpts = CDirectory::open_text(&config("lmtp", &addresses(&lmtp_relays), stale));
    use directory_result::*;
    assert_eq!(logins.auth(ALICE.0, ALICE.1).0, DIRECTORY_RESULT_OK);
    assert_eq!(rcpts.rcpt(ALICE.0).0, DIRECTORY_RESULT_OK);
    assert_eq!(rcpts.rcpt(NOBODY).0, DIRECTORY_RESULT_REJECTED);

    // Server up: no cache.auth-ttl, so the login is asked again; a wrong password is
    // refused by the server even though alice's login is remembered for outages.
    std::thread::sleep(Duration::from_millis(150));
    let relayed = imap_relays[0].relayed();
    assert_eq!(
        logins.auth(ALICE.0, ALICE.1),
        (DIRECTORY_RESULT_OK, String::new())
    );
    assert_eq!(imap_relays[0].relayed(), relayed + 1, "asked the server");
    assert_eq!(logins.auth(ALICE.0, "wrong").0, DIRECTORY_RESULT_REJECTED);

    for relay in imap_relays.iter_mut().chain(lmtp_relays.iter_mut()) {
        relay.stop();
    }
    std::thread::sleep(Duration::from_millis(150)); // alice's positive entries expire
    let (result, message) = logins.auth(ALICE.0, ALICE.1);
    assert_eq!(result, DIRECTORY_RESULT_OK, "{message}");
    assert!(message.contains("cache.stale-if-error"), "{message}");
    for relay in &imap_relays {
        assert!(message.contains(&relay.address()), "{message}");
    }
    let (result, message) = rcpts.rcpt(ALICE.0);
    assert_eq!(result, DIRECTORY_RESULT_OK, "{message}");
    assert!(message.contains("cache.stale-if-error"), "{message}");
    let cases = [
        ("a wrong password", logins.auth(ALICE.0, "wrong")),
        (
            "a login never seen",
            logins.auth(common::BOB.0, common::BOB.1),
        ),
        ("a recipient never seen", rcpts.rcpt("bob@example.org")),
    ];
    for (what, (result, message)) in cases {
        assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{what}: {message}");
        assert!(
            message.contains("no server could be reached"),
            "{what}: {message}"
        );
    }
    // A refusal is never served stale; this one is still fresh (1h) and answered as such.
    assert_eq!(rcpts.rcpt(NOBODY).0, DIRECTORY_RESULT_REJECTED);

    // A server that answers 451 is an answer: TEMPORARY, never the stale OK.
    let listener = TcpListener::bind(("127.0.0.1", lmtp_relays[0].port())).unwrap();
    let mut deferring = peer::SmtpServer::lmtp(&["PIPELINING"]);
    deferring.rcpt_replies = vec![(ALICE.0.into(), "451 4.3.0 try again later".into())];
    let _deferring = deferring.start_on(listener);
    std::thread::sleep(Duration::from_millis(1100)); // past the first server's backoff
    let (result, message) = rcpts.rcpt(ALICE.0);
    assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{message}");
    assert!(message.contains("451 4.3.0 try again later"), "{message}");
}
