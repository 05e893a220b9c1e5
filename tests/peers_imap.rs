//! IMAP authentication against scripted peers: what the client sends for each capability
//! set, how each reply is judged, when connections are reused, and faults real servers do
//! not produce on demand (stalls, endless lines, injected bytes around STARTTLS).

mod peer;

use peer::{
    b64, ca_file_line, open, plain_b64, sent_for_one_login, CDirectory, Conn, ImapServer, Peer,
    PeerError, PeerResult,
};
use remote_directory::ffi::directory_result::{self, *};
use remote_directory::{Error, Kind};
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";
const BOB: &str = "bob@example.org";
/// Quote, backslash, space and a non-ASCII letter: 12 bytes of UTF-8.
const BOB_PASS: &str = "p\"a\\ss wörd";

/// `AUTHENTICATE PLAIN` with the initial response for `user` and `secret`, untagged.
fn plain_ir(user: &str, secret: &str) -> String {
    format!("AUTHENTICATE PLAIN {}", plain_b64(user, secret))
}

/// `commands` tagged as the client tags them: a1, a2...
fn tagged(commands: &[&str]) -> Vec<String> {
    (1..)
        .zip(commands)
        .map(|(n, command)| format!("a{n} {command}"))
        .collect()
}

/// What one connection carries for a wrong login, the right one, then LOGOUT.
fn wrong_then_right_on_one_connection() -> Vec<String> {
    tagged(&[
        "CAPABILITY",
        &plain_ir(ALICE, "wrong"),
        &plain_ir(ALICE, ALICE_PASS),
        "LOGOUT",
    ])
}

fn count(commands: &[String], needle: &str) -> usize {
    commands.iter().filter(|c| c.contains(needle)).count()
}

/// One call through the Rust API, then one through the C API, each on a handle of its own
/// (directory `extra` settings) against `peer`: the Rust error must be of `kind`, the C
/// result TEMPORARY. Returns the Rust error and how long that call took.
fn fails_through_both_apis(peer: &Peer, extra: &[&str], kind: Kind) -> (Error, Duration) {
    let dir = open("imap", peer, extra);
    let start = Instant::now();
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), kind, "{e}");
    let c = CDirectory::open("imap", peer, extra);
    let (result, last) = c.auth(ALICE, ALICE_PASS);
    assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{last}");
    (e, took)
}

/// One successful login for each way the capabilities and the characters of the
/// credentials choose what the client sends. The peer notes a violation (an initial
/// response or a literal sent before its `+`), which `assert_clean` turns into a failure.
#[test]
fn imap_one_login_sends_what_the_capabilities_choose() {
    assert_eq!(BOB_PASS.len(), 12);
    let quoted_user = r#"q"uo\te@example.org"#;
    let quoted_pass = r#"p"a\ss word"#;
    let non_ascii_user = "jörg@example.org";
    let alice_ir = plain_ir(ALICE, ALICE_PASS);
    let exchange = ImapServer {
        greeting: Some("* OK The Microsoft Exchange IMAP4 service is ready.".into()),
        ..ImapServer::new(
            "IMAP4 IMAP4rev1 AUTH=NTLM AUTH=GSSAPI AUTH=PLAIN SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+",
        )
    };
    let cases: Vec<(&str, ImapServer, &str, &str, Vec<String>)> = vec![
        (
            "with SASL-IR: AUTHENTICATE PLAIN on one line",
            ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR"),
            ALICE,
            ALICE_PASS,
            tagged(&["CAPABILITY", &alice_ir, "LOGOUT"]),
        ),
        (
            "without SASL-IR: PLAIN after the continuation",
            ImapServer::new("IMAP4rev1 AUTH=PLAIN"),
            ALICE,
            ALICE_PASS,
            vec![
                "a1 CAPABILITY".into(),
                "a2 AUTHENTICATE PLAIN".into(),
                plain_b64(ALICE, ALICE_PASS),
                "a3 LOGOUT".into(),
            ],
        ),
        (
            "only AUTH=LOGIN: user, then password",
            ImapServer::new("IMAP4rev1 AUTH=LOGIN"),
            ALICE,
            ALICE_PASS,
            vec![
                "a1 CAPABILITY".into(),
                "a2 AUTHENTICATE LOGIN".into(),
                b64(ALICE),
                b64(ALICE_PASS),
                "a3 LOGOUT".into(),
            ],
        ),
        (
            "no AUTH=: LOGIN with quote and backslash escaped",
            ImapServer::new("IMAP4rev1").user(quoted_user, quoted_pass),
            quoted_user,
            quoted_pass,
            tagged(&[
                "CAPABILITY",
                r#"LOGIN "q\"uo\\te@example.org" "p\"a\\ss word""#,
                "LOGOUT",
            ]),
        ),
        (
            "LITERAL+: a non-ASCII password as a non-synchronizing literal",
            ImapServer::new("IMAP4rev1 LITERAL+").user(BOB, BOB_PASS),
            BOB,
            BOB_PASS,
            tagged(&[
                "CAPABILITY",
                "LOGIN \"bob@example.org\" {12+}\r\np\"a\\ss wörd",
                "LOGOUT",
            ]),
        ),
        (
            "no LITERAL+: a synchronizing literal after the continuation",
            ImapServer::new("IMAP4rev1").user(BOB, BOB_PASS),
            BOB,
            BOB_PASS,
            tagged(&[
                "CAPABILITY",
                "LOGIN \"bob@example.org\" {12}\r\np\"a\\ss wörd",
                "LOGOUT",
            ]),
        ),
        (
            "non-ASCII user and password: each literal after its continuation",
            ImapServer::new("IMAP4rev1").user(non_ascii_user, BOB_PASS),
            non_ascii_user,
            BOB_PASS,
            tagged(&[
                "CAPABILITY",
                "LOGIN {17}\r\njörg@example.org {12}\r\np\"a\\ss wörd",
                "LOGOUT",
            ]),
        ),
        (
            "Exchange's capabilities: AUTHENTICATE PLAIN",
            exchange,
            ALICE,
            ALICE_PASS,
            tagged(&["CAPABILITY", &alice_ir, "LOGOUT"]),
        ),
    ];
    for (name, server, user, secret, sent) in cases {
        let peer = server.start();
        assert_eq!(
            sent_for_one_login(name, "imap", &peer, user, secret),
            [sent],
            "{name}"
        );
    }
}

#[test]
fn imap_logindisabled_without_auth_is_temporary_and_sends_no_credentials() {
    let peer = ImapServer::new("IMAP4rev1 LOGINDISABLED").start();
    fails_through_both_apis(&peer, &[], Kind::Deferred);
    peer.wait_all_ended();
    for commands in peer.all_commands() {
        assert_eq!(commands, ["a1 CAPABILITY", "a2 LOGOUT"]);
    }
    peer.assert_clean();
}

#[test]
fn imap_untagged_lines_and_literals_before_the_tagged_reply_are_skipped() {
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
    // An untagged CAPABILITY, a FETCH whose literal holds CRLF and a word that would be a
    // protocol error if read as a line, and an ALERT.
    server.untagged_before_reply = concat!(
        "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n",
        "* 1 FETCH (BODY[] {5}\r\nNO\r\nX)\r\n",
        "* OK [ALERT] System going down at midnight\r\n",
    )
    .into();
    let peer = server.start();
    let dir = open("imap", &peer, &[]);
    let e = dir.auth(ALICE, "wrong").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // Still in step: the same connection gives the next answer.
    dir.auth(ALICE, ALICE_PASS).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [wrong_then_right_on_one_connection()]);
    peer.assert_clean();
}

/// Each tagged failure reply, through the Rust API (kind) and the C API (result).
#[test]
fn imap_failure_replies_map_to_rejected_or_temporary() {
    let cases: &[(&str, Kind, directory_result)] = &[
        (
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
            Kind::Rejected,
            DIRECTORY_RESULT_REJECTED,
        ),
        (
            "NO Login failed.",
            Kind::Rejected,
            DIRECTORY_RESULT_REJECTED,
        ),
        (
            "NO [EXPIRED] Password expired.",
            Kind::Rejected,
            DIRECTORY_RESULT_REJECTED,
        ),
        (
            "NO [UNAVAILABLE] Authentication backend unavailable.",
            Kind::Deferred,
            DIRECTORY_RESULT_TEMPORARY,
        ),
        (
            "BAD Invalid base64 data in initial response",
            Kind::Deferred,
            DIRECTORY_RESULT_TEMPORARY,
        ),
    ];
    for &(reply, kind, result) in cases {
        let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
        server.failure = reply.into();
        let peer = server.start();
        let dir = open("imap", &peer, &[]);
        let e = dir.auth(ALICE, "wrong-secret").unwrap_err();
        assert_eq!(e.kind(), kind, "{reply}: {e}");
        let message = e.to_string();
        assert!(
            message.contains(reply) && message.contains("AUTHENTICATE PLAIN"),
            "{reply}: {message}"
        );
        assert!(!message.contains("wrong-secret"), "{message}");
        let c = CDirectory::open("imap", &peer, &[]);
        let (r, last) = c.auth(ALICE, "wrong-secret");
        assert_eq!(r, result, "{reply}: {last}");
        assert!(last.contains(reply), "{last}");
        drop((dir, c));
        peer.wait_all_ended();
        for commands in peer.all_commands() {
            assert_eq!(
                commands,
                tagged(&["CAPABILITY", &plain_ir(ALICE, "wrong-secret"), "LOGOUT"]),
                "{reply}"
            );
        }
        peer.assert_clean();
    }
}

/// A greeting that refuses the session: TEMPORARY, the greeting's text in the message, and
/// not one command sent.
#[test]
fn imap_bye_or_preauth_greeting_is_temporary_and_nothing_is_sent() {
    for (greeting, text) in [
        (
            "* BYE Too many connections, try later",
            "Too many connections",
        ),
        (
            "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice",
            "Logged in as alice",
        ),
    ] {
        let peer = ImapServer {
            greeting: Some(greeting.into()),
            ..ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR")
        }
        .start();
        let (e, _) = fails_through_both_apis(&peer, &[], Kind::Deferred);
        assert!(e.to_string().contains(text), "{greeting}: {e}");
        peer.wait_all_ended();
        assert_eq!(
            peer.all_commands(),
            [Vec::<String>::new(), Vec::new()],
            "{greeting}"
        );
    }
}

#[test]
fn imap_successful_login_is_followed_by_logout_and_never_reused() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open("imap", &peer, &[]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    assert_eq!((dir.open_connections(), dir.idle_connections()), (0, 0));
    dir.auth(ALICE, ALICE_PASS).unwrap();
    assert_eq!((dir.open_connections(), dir.idle_connections()), (0, 0));
    // LOGOUT went out before the call returned: no need to drop the handle.
    peer.wait_all_ended();
    let expected = tagged(&["CAPABILITY", &plain_ir(ALICE, ALICE_PASS), "LOGOUT"]);
    assert_eq!(peer.all_commands(), [expected.clone(), expected]);
    peer.assert_clean();
}

#[test]
fn imap_failed_login_connection_is_reused_for_the_next_auth() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open("imap", &peer, &[]);
    assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    assert_eq!((dir.open_connections(), dir.idle_connections()), (1, 1));
    dir.auth(ALICE, ALICE_PASS).unwrap();
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [wrong_then_right_on_one_connection()]);
    peer.assert_clean();
}

#[test]
fn imap_auth_errors_limit_of_two_ends_the_connection_after_two_failures() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open("imap", &peer, &["limits.auth-errors = 2"]);
    for _ in 0..5 {
        assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    }
    assert_eq!(dir.idle_connections(), 1);
    drop(dir);
    peer.wait_all_ended();
    let all = peer.all_commands();
    let per_connection: Vec<usize> = all.iter().map(|c| count(c, "AUTHENTICATE PLAIN")).collect();
    assert_eq!(per_connection, [2, 2, 1], "{all:?}");
    for commands in &all {
        assert_eq!(
            commands.last().unwrap(),
            &format!("a{} LOGOUT", commands.len())
        );
    }
    peer.assert_clean();
}

#[test]
fn imap_unauthenticate_lets_one_connection_serve_the_next_login() {
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
    server.caps_after_login = Some("IMAP4rev1 AUTH=PLAIN SASL-IR UNAUTHENTICATE".into());
    let peer = server.start();
    let dir = open("imap", &peer, &[]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    assert_eq!(dir.idle_connections(), 1);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    drop(dir);
    peer.wait_all_ended();
    let alice_ir = plain_ir(ALICE, ALICE_PASS);
    assert_eq!(
        peer.all_commands(),
        [tagged(&[
            "CAPABILITY",
            &alice_ir,
            "UNAUTHENTICATE",
            &alice_ir,
            "UNAUTHENTICATE",
            "LOGOUT"
        ])]
    );
    peer.assert_clean();
}

/// After UNAUTHENTICATE the session is back in the not-authenticated state, whose
/// capabilities (AUTH=PLAIN SASL-IR) apply again; those of the authenticated state (which
/// list no AUTH= mechanism, as real servers' do) must not choose the next mechanism.
/// Re-asking CAPABILITY in between is fine; falling back to LOGIN is not.
#[test]
fn imap_after_unauthenticate_the_next_login_uses_the_pre_login_mechanism() {
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
    server.caps_after_login = Some("IMAP4rev1 IDLE NAMESPACE UNAUTHENTICATE".into());
    let peer = server.start();
    let dir = open("imap", &peer, &[]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.auth(ALICE, ALICE_PASS).unwrap();
    drop(dir);
    peer.wait_all_ended();
    let all = peer.all_commands();
    assert_eq!(all.len(), 1, "{all:?}");
    let logins: Vec<&String> = all[0]
        .iter()
        .filter(|c| c.contains(" AUTHENTICATE ") || c.contains(" LOGIN "))
        .collect();
    let ir = plain_ir(ALICE, ALICE_PASS);
    assert!(
        logins.len() == 2 && logins.iter().all(|c| c.ends_with(&ir)),
        "both logins should be {ir:?}: {all:?}"
    );
    assert_eq!(count(&all[0], "UNAUTHENTICATE"), 2, "{all:?}");
    peer.assert_clean();
}

#[test]
fn imap_starttls_capabilities_are_asked_again_after_tls() {
    let mut server = ImapServer::new("IMAP4rev1 STARTTLS LOGINDISABLED");
    server.caps_tls = Some("IMAP4rev1 AUTH=PLAIN SASL-IR".into());
    let peer = server.start();
    let dir = open("imap", &peer, &[&ca_file_line()]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    peer.wait_all_ended();
    let records = peer.records(0);
    let seen: Vec<(String, bool)> = records.into_iter().map(|r| (r.line, r.tls)).collect();
    assert_eq!(
        seen,
        [
            ("a1 CAPABILITY".to_string(), false),
            ("a2 STARTTLS".into(), false),
            ("a3 CAPABILITY".into(), true),
            (format!("a4 {}", plain_ir(ALICE, ALICE_PASS)), true),
            ("a5 LOGOUT".into(), true),
        ]
    );
    peer.assert_clean();
}

#[test]
fn imap_starttls_with_allow_invalid_certs_accepts_the_peer_certificate() {
    let mut server = ImapServer::new("IMAP4rev1 STARTTLS LOGINDISABLED");
    server.caps_tls = Some("IMAP4rev1 AUTH=PLAIN SASL-IR".into());
    server.caps_in_greeting = true;
    let peer = server.start();
    let dir = open("imap", &peer, &["tls.allow-invalid-certs = true"]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    // Without either, the unknown CA is refused before any credential goes out.
    let strict = open("imap", &peer, &[]);
    assert_eq!(
        strict.auth(ALICE, ALICE_PASS).unwrap_err().kind(),
        Kind::Tls
    );
    peer.wait_all_ended();
    assert_eq!(
        peer.commands(0),
        tagged(&[
            "STARTTLS",
            "CAPABILITY",
            &plain_ir(ALICE, ALICE_PASS),
            "LOGOUT"
        ])
    );
    assert_eq!(peer.commands(1), ["a1 STARTTLS"]);
}

/// A greeting that offers STARTTLS, and AUTH=PLAIN without it.
const STARTTLS_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR] ready";

/// A server up to its `OK` to the client's STARTTLS; the ClientHello comes next.
fn starttls_answered(c: &mut Conn) -> PeerResult {
    c.send(STARTTLS_GREETING)?;
    let (tag, _) = c.expect_imap("STARTTLS")?;
    c.send(&format!("{tag} OK Begin TLS"))
}

#[test]
fn imap_starttls_reply_followed_by_pipelined_bytes_is_refused() {
    let peer = Peer::start(|c| {
        c.send(STARTTLS_GREETING)?;
        let (tag, _) = c.expect_imap("STARTTLS")?;
        // One write: the injected line arrives in the same segment as the reply.
        c.send_raw(format!("{tag} OK Begin TLS\r\n* OK injected\r\n").as_bytes())?;
        let after = c.read_until_closed(Duration::from_secs(5))?;
        if !after.is_empty() {
            c.note(format!(
                "client sent {} bytes after the injected reply",
                after.len()
            ));
        }
        Ok(())
    });
    fails_through_both_apis(&peer, &[&ca_file_line()], Kind::Protocol);
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [["a1 STARTTLS"], ["a1 STARTTLS"]]);
    peer.assert_clean();
}

#[test]
fn imap_silent_peer_times_out_within_the_configured_timeout() {
    let peer = Peer::start(|c| {
        c.send("* OK silent server")?;
        c.expect_imap("CAPABILITY")?;
        c.stall(Duration::from_secs(10))
    });
    let (_, took) = fails_through_both_apis(&peer, &["timeout = \"1s\""], Kind::Timeout);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [["a1 CAPABILITY"], ["a1 CAPABILITY"]]);
    peer.assert_clean();
}

#[test]
fn imap_endless_line_is_a_protocol_error_and_reading_is_bounded() {
    const GIVE_UP: usize = 16 << 20;
    let peer = Peer::start(|c| {
        c.send_raw(b"* OK ")?;
        let chunk = [b'x'; 1024];
        let mut sent = 0;
        // Paced, so the bytes the client took are about what it read before closing.
        while sent < GIVE_UP {
            c.send_raw(&chunk)?;
            sent += chunk.len();
            c.pause(Duration::from_millis(1))?;
        }
        Err(PeerError::Timeout("the client to close".into()))
    });
    let dir = open("imap", &peer, &[]);
    let start = Instant::now();
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(e.to_string().contains("8192"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
    peer.wait_all_ended();
    let sent = peer.bytes_sent(0);
    assert!(
        (8192..64 * 1024).contains(&sent),
        "the peer sent {sent} bytes before the client closed"
    );
    assert_eq!(peer.all_commands(), [Vec::<String>::new()]);
    peer.assert_clean();
}

#[test]
fn imap_bye_on_an_idle_pooled_connection_is_replaced_transparently() {
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
    server.bye_after_idle = Some(Duration::from_millis(200));
    let peer = server.start();
    let dir = open("imap", &peer, &[]);
    assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    assert_eq!(dir.idle_connections(), 1);
    // The server says BYE and closes the idle connection.
    assert!(peer.wait_until(Duration::from_secs(5), |p| p.ended(0)));
    dir.auth(ALICE, ALICE_PASS).unwrap();
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [
            tagged(&["CAPABILITY", &plain_ir(ALICE, "wrong")]),
            tagged(&["CAPABILITY", &plain_ir(ALICE, ALICE_PASS), "LOGOUT"])
        ]
    );
    peer.assert_clean();
}

#[test]
fn imap_implicit_tls_speaks_tls_from_the_first_byte() {
    let mut server = ImapServer::new("IMAP4rev1 LOGINDISABLED");
    server.caps_tls = Some("IMAP4rev1 AUTH=PLAIN SASL-IR".into());
    server.implicit_tls = true;
    let peer = server.start();
    let dir = open("imap", &peer, &["tls.implicit = true", &ca_file_line()]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    peer.wait_all_ended();
    let records = peer.records(0);
    assert_eq!(
        records.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        tagged(&["CAPABILITY", &plain_ir(ALICE, ALICE_PASS), "LOGOUT"])
    );
    assert!(records.iter().all(|r| r.tls));
    peer.assert_clean();
}

#[test]
fn imap_peer_stalling_in_the_tls_handshake_times_out() {
    let peer = Peer::start(|c| {
        starttls_answered(c)?;
        // Takes the ClientHello and never answers it.
        c.stall(Duration::from_secs(10))
    });
    let dir = open("imap", &peer, &["timeout = \"1s\"", &ca_file_line()]);
    let start = Instant::now();
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), Kind::Timeout, "{e}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [["a1 STARTTLS"]]);
    peer.assert_clean();
}

#[test]
fn imap_garbage_instead_of_a_tls_handshake_is_a_tls_error() {
    let peer = Peer::start(|c| {
        starttls_answered(c)?;
        // Separately, after the client started its handshake.
        c.pause(Duration::from_millis(100))?;
        c.send("* OK this is not TLS")?;
        c.stall(Duration::from_secs(10))
    });
    fails_through_both_apis(&peer, &[&ca_file_line()], Kind::Tls);
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [["a1 STARTTLS"], ["a1 STARTTLS"]]);
    peer.assert_clean();
}

#[test]
fn imap_endless_untagged_lines_before_the_tagged_reply_are_bounded() {
    const GIVE_UP: usize = 1_000_000;
    let peer = Peer::start(|c| {
        c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")?;
        c.expect_imap("AUTHENTICATE PLAIN")?;
        let batch = "* OK still thinking\r\n".repeat(100);
        for _ in 0..GIVE_UP / 100 {
            c.send_raw(batch.as_bytes())?;
        }
        Err(PeerError::Timeout("the client to give up".into()))
    });
    let dir = open("imap", &peer, &[]);
    let start = Instant::now();
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(e.to_string().contains("untagged"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [tagged(&[&plain_ir(ALICE, ALICE_PASS)])]
    );
    peer.assert_clean();
}
