//! The result cache (`cache.*`), the `pool.min-idle` keeper and the protocol trace, against
//! scripted peers that count what reaches them.

mod peer;

use peer::{open, ImapServer, SmtpServer};
use remote_directory::Kind;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";

fn rcpts(peer: &peer::Peer) -> usize {
    peer.all_commands()
        .iter()
        .flatten()
        .filter(|c| c.starts_with("RCPT TO"))
        .count()
}

#[test]
fn cached_recipients_are_answered_without_the_server() {
    let peer = SmtpServer::lmtp(&["PIPELINING"]).start();
    let dir = open(
        "lmtp",
        &peer,
        &[
            "cache.entries = 100",
            "cache.ttl.positive = \"1h\"",
            "cache.ttl.negative = \"1h\"",
        ],
    );
    for _ in 0..5 {
        dir.rcpt(ALICE).unwrap();
        let e = dir.rcpt("nobody@example.org").unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected);
    }
    assert_eq!(
        rcpts(&peer),
        2,
        "one probe per address, the rest from the cache"
    );
    let e = dir.rcpt("nobody@example.org").unwrap_err();
    assert!(e.to_string().ends_with("User unknown (cached)"), "{e}");
    assert_eq!(dir.cached_entries(), (2, 0));
}

#[test]
fn temporary_answers_are_never_cached() {
    let mut server = SmtpServer::lmtp(&["PIPELINING"]);
    server.rcpt_replies = vec![("busy@example.org".into(), "451 4.3.0 try later".into())];
    let peer = server.start();
    let dir = open("lmtp", &peer, &["cache.entries = 100"]);
    for _ in 0..3 {
        assert_eq!(
            dir.rcpt("busy@example.org").unwrap_err().kind(),
            Kind::Deferred
        );
    }
    assert_eq!(rcpts(&peer), 3);
    assert_eq!(dir.cached_entries(), (0, 0));
}

#[test]
fn negative_answers_expire_after_their_ttl() {
    let peer = SmtpServer::lmtp(&["PIPELINING"]).start();
    let dir = open(
        "lmtp",
        &peer,
        &["cache.entries = 100", "cache.ttl.negative = \"200ms\""],
    );
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    assert_eq!(rcpts(&peer), 1);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    assert_eq!(rcpts(&peer), 2, "asked again after the ttl");
}

#[test]
fn logins_are_not_cached_without_auth_ttl() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open("imap", &peer, &["cache.entries = 100"]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.auth(ALICE, ALICE_PASS).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.connections(), 2, "each login went to the server");
}

#[test]
fn with_auth_ttl_only_the_same_right_secret_is_cached() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open(
        "imap",
        &peer,
        &["cache.auth-ttl = \"1m\"", "limits.auth-errors = 10"],
    );
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.auth(ALICE, ALICE_PASS).unwrap();
    for _ in 0..2 {
        assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    }
    drop(dir);
    peer.wait_all_ended();
    let logins: usize = peer
        .all_commands()
        .iter()
        .flatten()
        .filter(|c| c.contains("AUTHENTICATE"))
        .count();
    assert_eq!(
        logins, 3,
        "one right login, then two wrong ones: a rejection is never cached"
    );
}

#[test]
fn min_idle_connections_are_ready_before_the_first_call() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open(
        "imap",
        &peer,
        &["pool.min-idle = 2", "pool.max-connections = 4"],
    );
    let ready = Instant::now() + Duration::from_secs(5);
    while dir.idle_connections() < 2 && Instant::now() < ready {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        dir.idle_connections(),
        2,
        "the keeper opened min-idle connections"
    );
    assert_eq!(peer.connections(), 2);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    // The login used a ready connection (then ended it); the keeper replaces it.
    let refilled = Instant::now() + Duration::from_secs(5);
    while dir.idle_connections() < 2 && Instant::now() < refilled {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dir.idle_connections(), 2);
    assert_eq!(peer.connections(), 3);
    assert!(dir.open_connections() <= 4);
    drop(dir);
    peer.wait_all_ended();
    let logged_in = |conn: usize| {
        peer.commands(conn)
            .iter()
            .any(|c| c.contains("AUTHENTICATE PLAIN"))
    };
    assert!(
        logged_in(0) ^ logged_in(1),
        "one of the ready connections served the login"
    );
    assert!(!logged_in(2), "the replacement waits idle");
}

#[test]
fn trace_shows_the_dialogue_but_never_the_credentials() {
    let path = std::env::temp_dir().join(format!("rd-trace-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // The trace is chosen when a handle opens; this test binary sets it for itself only.
    std::env::set_var("REMOTE_DIRECTORY_TRACE", &path);
    let imap = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let smtp = SmtpServer::smtp(&["AUTH LOGIN", "PIPELINING"]).start();
    let imap_dir = open("imap", &imap, &[]);
    let smtp_dir = open("smtp", &smtp, &[]);
    std::env::remove_var("REMOTE_DIRECTORY_TRACE");
    let secret = "tr4ce-s3cret-value";
    assert_eq!(
        imap_dir.auth(ALICE, secret).unwrap_err().kind(),
        Kind::Rejected
    );
    imap_dir.auth(ALICE, ALICE_PASS).unwrap();
    assert_eq!(
        smtp_dir.auth(ALICE, secret).unwrap_err().kind(),
        Kind::Rejected
    );
    smtp_dir.rcpt(ALICE).unwrap();
    let trace = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(trace.contains("C: a1 CAPABILITY"), "{trace}");
    assert!(
        trace.contains("AUTHENTICATE PLAIN <credentials elided>"),
        "{trace}"
    );
    assert!(
        trace.contains("S: 235") || trace.contains("S: 535"),
        "{trace}"
    );
    assert!(trace.contains(&format!("C: RCPT TO:<{ALICE}>")), "{trace}");
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    for needle in [
        secret.to_string(),
        ALICE_PASS.to_string(),
        b64(secret.as_bytes()),
        b64(format!("\0{ALICE}\0{secret}").as_bytes()),
        b64(format!("\0{ALICE}\0{ALICE_PASS}").as_bytes()),
    ] {
        assert!(!trace.contains(&needle), "trace leaks {needle:?}");
    }
}
