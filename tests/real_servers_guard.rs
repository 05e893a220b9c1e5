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

/// A user name no other test uses, so its log lines are this test's alone.
fn unique_user(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("guard-{tag}-{}-{nanos}@example.org", std::process::id())
}

/// Refused password checks Dovecot's auth process logged for `user`, once the log is quiet.
fn refusals_logged_for(user: &str) -> usize {
    let path = format!("{}/log/dovecot.log", servers().var("RD_DIR"));
    let needle = format!("passwd-file({user},");
    let count = || {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read Dovecot's log {path}: {e}"))
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    };
    // The log process writes a moment after the reply: wait until two reads agree.
    let mut last = count();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
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
    let dir = open("throttle.user = \"3/10m\"");
    let user = unique_user("user");
    for i in 0..3 {
        let e = dir.auth(&user, &format!("guess-{i}")).unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{e}");
    }
    for i in 3..6 {
        let e = dir.auth(&user, &format!("guess-{i}")).unwrap_err();
        assert_eq!(e.kind(), Kind::Throttled, "{e}");
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
