//! `forward.client-ip` and fairness against scripted peers: IMAP `ID` before the login,
//! SMTP/LMTP `XCLIENT` then a new greeting and EHLO/LHLO, refusals, a connection bound to
//! one client, and the connections kept for callers without refused logins.

mod peer;

use peer::{open, plain_b64, ImapServer, SmtpServer};
use remote_directory::Kind;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";
const FORWARD: &str = "forward.client-ip = true";

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

fn id(text: &str) -> String {
    format!("ID (\"x-originating-ip\" \"{text}\")")
}

#[test]
fn imap_sends_id_before_authenticate() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR ID").start();
    let dir = open("imap", &peer, &[FORWARD]);
    dir.auth_from(ALICE, ALICE_PASS, ip("203.0.113.5")).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [vec![
            "a1 CAPABILITY".to_string(),
            format!("a2 {}", id("203.0.113.5")),
            format!("a3 AUTHENTICATE PLAIN {}", plain_b64(ALICE, ALICE_PASS)),
            "a4 LOGOUT".into(),
        ]]
    );
    peer.assert_clean();
}

#[test]
fn without_forwarding_or_without_an_address_nothing_is_told() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR ID").start();
    let plain = open("imap", &peer, &[]);
    plain
        .auth_from(ALICE, "wrong", ip("203.0.113.5"))
        .unwrap_err();
    let forwarding = open("imap", &peer, &[FORWARD]);
    forwarding.auth(ALICE, "wrong").unwrap_err();
    drop((plain, forwarding));
    peer.wait_all_ended();
    for commands in peer.all_commands() {
        assert!(!commands.iter().any(|c| c.contains(" ID ")), "{commands:?}");
    }
    peer.assert_clean();
}

#[test]
fn an_imap_connection_serves_only_the_client_it_named() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR ID").start();
    let dir = open("imap", &peer, &[FORWARD, "pool.max-connections = 2"]);
    // Refusals keep the connection; each later call must find the one bound to its client.
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.1"] {
        let e = dir.auth_from(ALICE, "wrong", ip(client)).unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{e}");
    }
    assert_eq!(peer.connections(), 2);
    // Both connections idle and bound: a third client takes the place of the oldest idle
    // one, and a call with no address gets a connection that named nobody.
    dir.auth_from(ALICE, "wrong", ip("203.0.113.3"))
        .unwrap_err();
    dir.auth(ALICE, "wrong").unwrap_err();
    drop(dir);
    peer.wait_all_ended();
    let told: Vec<Vec<String>> = peer
        .all_commands()
        .iter()
        .map(|commands| {
            commands
                .iter()
                .filter(|c| c.contains(" ID ") || c.contains("AUTHENTICATE"))
                .map(|c| match c.split_once(" ID ") {
                    Some((_, rest)) => format!("ID {rest}"),
                    None => "login".into(),
                })
                .collect()
        })
        .collect();
    let login = || "login".to_string();
    assert_eq!(
        told,
        [
            vec![id("203.0.113.1"), login(), login(), login()],
            vec![id("203.0.113.2"), login()],
            vec![id("203.0.113.3"), login()],
            vec![login()],
        ]
    );
    assert!(peer.max_concurrent() <= 2);
    peer.assert_clean();
}

#[test]
fn imap_without_id_or_refusing_it_is_temporary_and_sends_no_login() {
    let cases = [
        (
            ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR"),
            "the server does not offer ID (RFC 2971)",
        ),
        (
            ImapServer {
                id_reply: "NO ID not allowed".into(),
                ..ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR ID")
            },
            "NO ID not allowed (allow this relay in login_trusted_networks (Dovecot)",
        ),
    ];
    for (server, expected) in cases {
        let peer = server.start();
        let dir = open("imap", &peer, &[FORWARD]);
        let e = dir
            .auth_from(ALICE, ALICE_PASS, ip("203.0.113.5"))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Deferred, "{e}");
        assert!(e.to_string().contains(expected), "{e}");
        assert!(e.to_string().contains("ID (\"x-originating-ip\""), "{e}");
        assert_eq!(dir.open_connections(), 0, "the connection was ended");
        drop(dir);
        peer.wait_all_ended();
        let commands = peer.all_commands().concat();
        assert!(
            !commands.iter().any(|c| c.contains("AUTHENTICATE")),
            "{commands:?}"
        );
    }
}

#[test]
fn smtp_and_lmtp_send_xclient_then_greet_again() {
    let cases = [
        (
            SmtpServer::smtp(&["XCLIENT NAME ADDR PROTO HELO", "AUTH PLAIN LOGIN"]),
            "203.0.113.21",
            "XCLIENT ADDR=203.0.113.21 NAME=[UNAVAILABLE]",
            "EHLO",
        ),
        (
            SmtpServer::smtp(&["XCLIENT ADDR PORT PROTO HELO LOGIN", "AUTH PLAIN"]),
            "2001:db8::7",
            "XCLIENT ADDR=IPV6:2001:db8::7",
            "EHLO",
        ),
        (
            SmtpServer::lmtp(&["XCLIENT ADDR", "AUTH PLAIN"]),
            "198.51.100.4",
            "XCLIENT ADDR=198.51.100.4",
            "LHLO",
        ),
    ];
    for (server, client, xclient, hello) in cases {
        let peer = server.start();
        let kind = if hello == "LHLO" { "lmtp" } else { "smtp" };
        let dir = open(kind, &peer, &[FORWARD]);
        dir.auth_from(ALICE, ALICE_PASS, ip(client)).unwrap();
        drop(dir);
        peer.wait_all_ended();
        let commands = peer.commands(0);
        let verbs: Vec<&str> = commands
            .iter()
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            verbs,
            [hello, "XCLIENT", hello, "AUTH", "QUIT"],
            "{commands:?}"
        );
        assert_eq!(commands[1], xclient);
        peer.assert_clean();
    }
}

#[test]
fn smtp_not_offering_or_refusing_xclient_is_temporary_and_sends_no_auth() {
    let cases = [
        (
            SmtpServer::smtp(&["AUTH PLAIN"]),
            "forward.client-ip is set but the server does not offer XCLIENT to this relay: allow this relay in smtpd_authorized_xclient_hosts (Postfix)",
        ),
        (
            SmtpServer {
                xclient_reply: Some("550 5.7.0 Error: insufficient authorization".into()),
                ..SmtpServer::smtp(&["XCLIENT NAME ADDR", "AUTH PLAIN"])
            },
            "XCLIENT ADDR=203.0.113.9 NAME=[UNAVAILABLE]: 550 5.7.0 Error: insufficient authorization (allow this relay in smtpd_authorized_xclient_hosts",
        ),
    ];
    for (server, expected) in cases {
        let peer = server.start();
        let dir = open("smtp", &peer, &[FORWARD]);
        let e = dir
            .auth_from(ALICE, ALICE_PASS, ip("203.0.113.9"))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Deferred, "{e}");
        assert!(e.to_string().contains(expected), "{e}");
        drop(dir);
        peer.wait_all_ended();
        let commands = peer.all_commands().concat();
        assert!(
            !commands.iter().any(|c| c.starts_with("AUTH")),
            "{commands:?}"
        );
    }
}

#[test]
fn smtp_probes_and_unknown_clients_speak_as_the_relay_on_their_own_connections() {
    let peer = SmtpServer::smtp(&["XCLIENT NAME ADDR", "AUTH PLAIN"]).start();
    let dir = open("smtp", &peer, &[FORWARD]);
    dir.rcpt("alice@example.org").unwrap();
    dir.auth_from(ALICE, "wrong", ip("203.0.113.9"))
        .unwrap_err();
    dir.auth(ALICE, "wrong").unwrap_err();
    dir.auth_from(ALICE, "wrong", ip("203.0.113.9"))
        .unwrap_err();
    drop(dir);
    peer.wait_all_ended();
    let xclients: Vec<usize> = peer
        .all_commands()
        .iter()
        .map(|cs| cs.iter().filter(|c| c.starts_with("XCLIENT")).count())
        .collect();
    // The probe's connection (no XCLIENT) also served the login without an address; the
    // client's connection named it once and served it twice.
    assert_eq!(xclients, [0, 1]);
    peer.assert_clean();
}

#[test]
fn callers_with_refused_logins_leave_a_quarter_of_the_pool_to_others() {
    // Every command waits, so the guessers' logins hold their connections a while.
    let peer = ImapServer {
        delay: Duration::from_millis(400),
        ..ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR")
    }
    .start();
    let dir = open(
        "imap",
        &peer,
        &["pool.max-connections = 4", "throttle.client = \"100/10m\""],
    );
    let guesser = ip("203.0.113.66");
    dir.auth_from("x@example.org", "guess", guesser)
        .unwrap_err();
    std::thread::scope(|s| {
        for i in 0..6 {
            let dir = &dir;
            s.spawn(move || {
                let user = format!("user{i}@example.org");
                dir.auth_from(&user, "guess", guesser).unwrap_err();
            });
        }
        // The guessers fill their three connections and the rest of them wait...
        let deadline = Instant::now() + Duration::from_secs(5);
        while peer.connections() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(dir.open_connections(), 3, "the fourth is kept");
        // ...while a caller from another address gets the fourth at once.
        dir.auth_from(ALICE, ALICE_PASS, ip("198.51.100.1"))
            .expect("the real user");
    });
    assert!(peer.max_concurrent() <= 4);
}
