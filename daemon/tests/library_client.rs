//! `type = "daemon"` directories against the real daemon and the real servers: every call
//! gives the same outcome (kind and message) as the same directory opened in process, and
//! an unreachable daemon is a temporary failure, never a refusal.

mod common;

use common::*;
use remote_directory::{Directory, Kind};

/// The daemon's directories: Dovecot IMAP and LMTP, and an LMTP server that is down.
fn daemon_config() -> String {
    let down = port_base() + 3001; // nothing listens there
    format!(
        "{}\n{}\n[directory.down]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = {down}\ntimeout = \"2s\"\n\n\
         [daemon]\nsocket = \"@DIR@/socket\"\n",
        directory("imap", "imap", "RD_IMAP_PORT", ""),
        directory("lmtp", "lmtp", "RD_LMTP_PORT", ""),
    )
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Auth(&'static str, &'static str),
    Rcpt(&'static str),
    Domain(&'static str),
}

fn run(d: &Directory, call: Call) -> Result<(), (Kind, String)> {
    match call {
        Call::Auth(u, s) => d.auth(u, s),
        Call::Rcpt(a) => d.rcpt(a),
        Call::Domain(x) => d.is_local_domain(x),
    }
    .map_err(|e| (e.kind(), e.to_string()))
}

#[test]
fn every_call_through_the_daemon_answers_as_in_process() {
    let daemon = Daemon::start("client", &daemon_config());
    let socket = daemon.path("socket");
    let cases: &[(&str, Call, Option<Kind>)] = &[
        ("imap", Call::Auth(ALICE.0, ALICE.1), None),
        ("imap", Call::Auth(BOB.0, BOB.1), None),
        ("imap", Call::Auth(ALICE.0, "wrong"), Some(Kind::Rejected)),
        ("imap", Call::Auth(NOBODY, "x"), Some(Kind::Rejected)),
        (
            "imap",
            Call::Auth("al\u{1b}ice", "x"),
            Some(Kind::InvalidInput),
        ),
        ("imap", Call::Rcpt(ALICE.0), Some(Kind::Unsupported)),
        ("lmtp", Call::Rcpt(ALICE.0), None),
        ("lmtp", Call::Rcpt(NOBODY), Some(Kind::Rejected)),
        (
            "lmtp",
            Call::Rcpt("a b@example.org"),
            Some(Kind::InvalidInput),
        ),
        ("lmtp", Call::Domain("Example.ORG."), None),
        ("lmtp", Call::Domain("example.com"), Some(Kind::Rejected)),
        ("down", Call::Rcpt(ALICE.0), Some(Kind::Network)),
    ];
    for &(name, call, expected) in cases {
        let local = Directory::open(&daemon.config, Some(name)).unwrap();
        let client = Directory::open_str(&client_config(name, &socket, name, ""), None).unwrap();
        let want = run(&local, call);
        let got = run(&client, call);
        assert_eq!(
            want.as_ref().err().map(|e| e.0),
            expected,
            "{name} {call:?}: {want:?}"
        );
        assert_eq!(got, want, "{name} {call:?} through the daemon");
        assert_eq!(
            client.open_connections(),
            0,
            "the client itself connects to no server"
        );
    }
}

#[test]
fn unknown_daemon_directory_is_a_config_error_naming_the_served_ones() {
    let daemon = Daemon::start("client-unknown", &daemon_config());
    let client = Directory::open_str(
        &client_config("x", &daemon.path("socket"), "nosuch", ""),
        None,
    )
    .unwrap();
    let e = client.rcpt(ALICE.0).unwrap_err();
    assert_eq!(e.kind(), Kind::Config);
    assert_eq!(
        e.to_string(),
        "remote-directoryd serves no directory named 'nosuch'; it serves 'down', 'imap', 'lmtp'"
    );
}

#[test]
fn unreachable_daemon_is_temporary_never_rejected() {
    let dir = temp_dir("client-unreachable");
    let socket = dir.join("socket");
    let client = Directory::open_str(&client_config("imap", &socket, "imap", ""), None).unwrap();
    for outcome in [client.auth(ALICE.0, ALICE.1), client.rcpt(ALICE.0)] {
        let e = outcome.unwrap_err();
        assert_eq!(e.kind(), Kind::Network, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "remote-directoryd at {}: connect: No such file or directory (os error 2)",
                socket.display()
            )
        );
    }
    // A socket file nobody listens on (a dead daemon's): refused, also temporary.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    let e = client.auth(ALICE.0, ALICE.1).unwrap_err();
    assert_eq!(e.kind(), Kind::Network, "{e}");
    assert!(e.to_string().contains("Connection refused"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kept_connections_survive_a_daemon_restart() {
    let mut daemon = Daemon::start("client-restart", &daemon_config());
    let client = Directory::open_str(
        &client_config("lmtp", &daemon.path("socket"), "lmtp", ""),
        None,
    )
    .unwrap();
    client.rcpt(ALICE.0).unwrap();
    daemon.kill();
    assert_eq!(client.rcpt(ALICE.0).unwrap_err().kind(), Kind::Network);
    daemon.spawn();
    // The kept connection is dead; the client notices and uses a new one, without error.
    client.rcpt(ALICE.0).unwrap();
    client.rcpt(ALICE.0).unwrap();
}
