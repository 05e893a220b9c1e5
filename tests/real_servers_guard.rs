//! Defences against password guessing (`throttle.*`, `cache.auth-negative-ttl`) against the
//! real Dovecot of `tests/servers/servers.sh`. What reached the server is counted in
//! Dovecot's own log (`passwd-file(USER,...): Password mismatch` or `unknown user`, one line
//! per refused check; successes are not logged), never from what the client believes it sent.

mod common;

use common::{servers, BOB};
use remote_directory::{Directory, Kind};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn open(extra: &str) -> Directory {
    let config = servers().config("imap", "RD_IMAP_PORT", false, extra);
    Directory::open_str(&config, None).unwrap_or_else(|e| panic!("open: {e}"))
}

/// A user name no other test uses, so its log lines are this test's alone. Lower case:
/// Dovecot logs names lower-cased.
fn unique_user(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("guard-{tag}-{}-{nanos}@example.org", std::process::id()).to_lowercase()
}

/// Lines of a server log (`dovecot.log`, `postfix.log`) that contain `needle`, once the
/// log is quiet: servers write a moment after the reply, so two reads must agree.
fn logged(log: &str, needle: &str) -> Vec<String> {
    let path = format!("{}/log/{log}", servers().var("RD_DIR"));
    let read = || -> Vec<String> {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the server log {path}: {e}"))
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    };
    let mut last = read();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now.len() == last.len() || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Refused password checks Dovecot's auth process logged for `user`.
fn refusals_logged_for(user: &str) -> usize {
    logged("dovecot.log", &format!("passwd-file({user},")).len()
}

#[test]
fn forwarded_logins_are_logged_with_the_clients_address_never_the_relays() {
    // IMAP (ID), Dovecot submission and Postfix (XCLIENT before STARTTLS), one handle each,
    // two clients through it; one connection at most, so the second client cannot reuse
    // the first one's connection and must get its own.
    for (index, (kind, port)) in [
        ("imap", "RD_IMAP_PORT"),
        ("smtp", "RD_SUBMISSION_PORT"),
        ("smtp", "RD_SMTP_PORT"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = servers().config(
            kind,
            port,
            false,
            "forward.client-ip = true\npool.max-connections = 1",
        );
        let dir = Directory::open_str(&config, None).unwrap();
        // The harness's Postfix runs with inet_protocols = ipv4: it refuses IPv6 in XCLIENT
        // (501 Bad ADDR syntax, TEMPORARY here).
        let clients = match port {
            "RD_SMTP_PORT" => ["203.0.113.5", "198.51.100.5"],
            _ => ["203.0.113.5", "2001:db8::5"],
        };
        // Short names: Dovecot's auth log cuts long ones.
        let users: Vec<String> = (0..clients.len())
            .map(|c| unique_user(&format!("f{index}{c}")))
            .collect();
        for round in 0..2 {
            for (user, client) in users.iter().zip(clients) {
                let e = dir
                    .auth_from(
                        user,
                        &format!("guess{round}"),
                        Some(client.parse().unwrap()),
                    )
                    .unwrap_err();
                assert_eq!(e.kind(), Kind::Rejected, "{port} {client}: {e}");
            }
        }
        drop(dir);
        for (user, client) in users.iter().zip(clients) {
            let lines = logged("dovecot.log", &format!("passwd-file({user},"));
            assert_eq!(lines.len(), 2, "{port}: {lines:?}");
            for line in &lines {
                // `(user,ip,<session>)` from imap/submission, `(user,ip)` through Postfix.
                let seen = |end: char| line.contains(&format!("passwd-file({user},{client}{end}"));
                assert!(
                    seen(',') || seen(')'),
                    "{port}: the server saw another address: {line}"
                );
            }
        }
        if port != "RD_SMTP_PORT" {
            // imap-login and submission-login log each failed connection with `rip=`.
            for (user, client) in users.iter().zip(clients) {
                let lines = logged("dovecot.log", &format!("user=<{user}>"));
                assert!(
                    !lines.is_empty(),
                    "{port}: Dovecot logged nothing for {user}"
                );
                for line in &lines {
                    assert!(line.contains(&format!("rip={client},")), "{line}");
                }
            }
        }
        if port == "RD_SMTP_PORT" {
            for client in clients {
                let lines = logged(
                    "postfix.log",
                    &format!("[{client}]: SASL PLAIN authentication failed"),
                );
                assert!(lines.len() >= 2, "Postfix: {client}: {lines:?}");
            }
        }
    }
}

#[test]
fn same_wrong_password_is_answered_from_the_negative_cache() {
    let dir = open("cache.auth-negative-ttl = \"5m\"");
    let before = refusals_logged_for(BOB.0);
    for _ in 0..5 {
        let e = dir.auth(BOB.0, "old-password").unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{e}");
        assert!(!e.to_string().contains("old-password"), "{e}");
    }
    assert_eq!(
        refusals_logged_for(BOB.0) - before,
        1,
        "one check for five tries"
    );
    assert_eq!(
        dir.auth(BOB.0, "another-password").unwrap_err().kind(),
        Kind::Rejected
    );
    assert_eq!(
        refusals_logged_for(BOB.0) - before,
        2,
        "another password still goes"
    );
    dir.auth(BOB.0, BOB.1).expect("bob's right password");
    assert_eq!(
        dir.auth(BOB.0, "old-password").unwrap_err().kind(),
        Kind::Rejected
    );
    assert_eq!(
        refusals_logged_for(BOB.0) - before,
        3,
        "the success forgot the refusal: the old password was checked again"
    );
}

#[test]
fn user_budget_stops_checks_at_the_server() {
    let dir = open("throttle.user = \"3/10m\"\nthrottle.delay = \"300ms\"");
    let user = unique_user("user");
    for i in 0..3 {
        let e = dir.auth(&user, &format!("guess-{i}")).unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{e}");
    }
    for i in 3..6 {
        let asked = Instant::now();
        let e = dir.auth(&user, &format!("guess-{i}")).unwrap_err();
        assert_eq!(e.kind(), Kind::Throttled, "{e}");
        assert!(
            asked.elapsed() >= Duration::from_millis(300),
            "a throttled answer waits throttle.delay first"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "throttled: user '{user}' reached 3 refused logins within 10m (throttle.user = \"3/10m\"); not asked again until "
            )),
            "{msg}"
        );
        assert!(!msg.contains("guess-"), "{msg}");
    }
    assert_eq!(refusals_logged_for(&user), 3);
    assert_eq!(
        dir.open_connections(),
        dir.idle_connections(),
        "nothing in use"
    );
}

#[test]
fn client_budget_is_exact_under_threads_and_spares_other_clients() {
    let dir = open("throttle.client = \"5/10m\"\npool.max-connections = 8");
    let guesser: IpAddr = "203.0.113.50".parse().unwrap();
    let users: Vec<String> = (0..16).map(|i| unique_user(&format!("c{i}"))).collect();
    let results: Vec<Kind> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .map(|user| {
                let dir = &dir;
                s.spawn(move || {
                    dir.auth_from(user, "guess", Some(guesser))
                        .unwrap_err()
                        .kind()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rejected = results.iter().filter(|k| **k == Kind::Rejected).count();
    let throttled = results.iter().filter(|k| **k == Kind::Throttled).count();
    assert_eq!((rejected, throttled), (5, 11), "{results:?}");
    let checked: usize = users.iter().map(|u| refusals_logged_for(u)).sum();
    assert_eq!(checked, 5, "exactly the budget reached Dovecot");
    // Another address, and a login without an address, are not throttled.
    let other = unique_user("other");
    let e = dir
        .auth_from(&other, "guess", Some("203.0.113.51".parse().unwrap()))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    let e = dir.auth(&other, "guess2").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // The same client in its IPv4-mapped IPv6 form is the same client.
    let mapped: IpAddr = "::ffff:203.0.113.50".parse().unwrap();
    let e = dir.auth_from(&other, "guess3", Some(mapped)).unwrap_err();
    assert_eq!(e.kind(), Kind::Throttled, "{e}");
    assert!(e.to_string().contains("client 203.0.113.50 "), "{e}");
}
