//! SMTP and LMTP against scripted peers: greeting, EHLO/LHLO, AUTH mechanisms and replies,
//! recipient probes (one transaction per connection, pipelining, limits), STARTTLS, and a
//! server that drops idle connections.

mod peer;

use peer::dialogue::smtp_hello;
use peer::{
    b64, ca_file_line, open, plain_b64, sent_for_one_login, CDirectory, ImapServer, Peer,
    SmtpServer,
};
use remote_directory::ffi::directory_result::{self, *};
use remote_directory::{Directory, Kind};
use std::time::Duration;

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";
/// `peer::config` sets `server.hostname = "client.test"` (`peer::HELLO_NAME`).
const EHLO: &str = "EHLO client.test";
const LHLO: &str = "LHLO client.test";

fn rcpt(address: &str) -> String {
    format!("RCPT TO:<{address}>")
}

/// `AUTH PLAIN` with the initial response for ALICE and `secret`.
fn auth_plain(secret: &str) -> String {
    format!("AUTH PLAIN {}", plain_b64(ALICE, secret))
}

/// What a connection carries that authenticates ALICE with each of `secrets` in turn.
fn auth_session(secrets: &[&str]) -> Vec<String> {
    let auths = secrets.iter().map(|secret| auth_plain(secret));
    std::iter::once(EHLO.to_owned())
        .chain(auths)
        .chain(["QUIT".to_owned()])
        .collect()
}

/// What a connection carries that probes `addresses` in one transaction.
fn probe_session(addresses: &[&str]) -> Vec<String> {
    let rcpts = addresses.iter().map(|address| rcpt(address));
    [EHLO.to_owned(), "MAIL FROM:<>".to_owned()]
        .into_iter()
        .chain(rcpts)
        .chain(["QUIT".to_owned()])
        .collect()
}

fn count(commands: &[String], prefix: &str) -> usize {
    commands.iter().filter(|c| c.starts_with(prefix)).count()
}

#[test]
fn smtp_multiline_greeting_is_read_whole_and_ehlo_follows() {
    let mut server = SmtpServer::smtp(&["PIPELINING", "8BITMIME"]);
    server.greeting = vec![
        "220-mx.example.org ESMTP".into(),
        "220-Unauthorized use prohibited".into(),
        "220 ready".into(),
    ];
    let peer = server.start();
    let dir = open("smtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [probe_session(&[ALICE])]);
    peer.assert_clean();
}

#[test]
fn lmtp_uses_lhlo_and_probes_recipients() {
    let peer = SmtpServer::lmtp(&["PIPELINING", "ENHANCEDSTATUSCODES"]).start();
    let dir = open("lmtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    let e = dir.rcpt("nobody@example.org").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(
        e.to_string()
            .contains("RCPT TO:<nobody@example.org>: 550 5.1.1"),
        "{e}"
    );
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [[
            LHLO,
            "MAIL FROM:<>",
            &rcpt(ALICE),
            &rcpt("nobody@example.org"),
            "QUIT"
        ]]
    );
    // The LMTP peer notes an EHLO.
    peer.assert_clean();
}

/// One successful login for each way the offered mechanisms choose what the client sends.
/// The peer notes an answer sent before its 334 and an LMTP LHLO, which `assert_clean`
/// turns into a failure.
#[test]
fn smtp_one_login_sends_what_the_extensions_choose() {
    let cases: [(&str, &[&str], Vec<String>); 3] = [
        (
            "EHLO, not LHLO",
            &["AUTH PLAIN"],
            auth_session(&[ALICE_PASS]),
        ),
        (
            "AUTH PLAIN: the initial response on the AUTH line",
            &["AUTH PLAIN LOGIN"],
            auth_session(&[ALICE_PASS]),
        ),
        (
            "only AUTH LOGIN: the answers to the 334 challenges",
            &["AUTH LOGIN"],
            vec![
                EHLO.into(),
                "AUTH LOGIN".into(),
                b64(ALICE),
                b64(ALICE_PASS),
                "QUIT".into(),
            ],
        ),
    ];
    for (name, ehlo, sent) in cases {
        let peer = SmtpServer::smtp(ehlo).start();
        assert_eq!(
            sent_for_one_login(name, "smtp", &peer, ALICE, ALICE_PASS),
            [sent],
            "{name}"
        );
    }
}

#[test]
fn smtp_auth_235_is_ok_then_quit_and_the_connection_is_never_reused() {
    let peer = SmtpServer::smtp(&["AUTH PLAIN"]).start();
    let dir = open("smtp", &peer, &[]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    assert_eq!((dir.open_connections(), dir.idle_connections()), (0, 0));
    dir.auth(ALICE, ALICE_PASS).unwrap();
    peer.wait_all_ended();
    let one = auth_session(&[ALICE_PASS]);
    assert_eq!(peer.all_commands(), [one.clone(), one]);
    peer.assert_clean();
}

#[test]
fn smtp_auth_535_is_rejected_and_the_connection_is_reused() {
    let peer = SmtpServer::smtp(&["AUTH PLAIN"]).start();
    let dir = open("smtp", &peer, &[]);
    for _ in 0..2 {
        let e = dir.auth(ALICE, "wrong-secret").unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{e}");
        assert!(e.to_string().contains("AUTH PLAIN: 535"), "{e}");
        assert!(!e.to_string().contains("wrong-secret"), "{e}");
    }
    assert_eq!((dir.open_connections(), dir.idle_connections()), (1, 1));
    dir.auth(ALICE, ALICE_PASS).unwrap();
    let c = CDirectory::open("smtp", &peer, &[]);
    assert_eq!(c.auth(ALICE, "wrong").0, DIRECTORY_RESULT_REJECTED);
    drop((dir, c));
    peer.wait_all_ended();
    let all = peer.all_commands();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[0],
        auth_session(&["wrong-secret", "wrong-secret", ALICE_PASS])
    );
    peer.assert_clean();
}

/// 534, 538, 504 say the server will not take this mechanism now (a configuration
/// problem), 454 is a temporary failure: none says the password is wrong.
#[test]
fn smtp_auth_534_538_504_and_454_are_temporary() {
    for reply in [
        "534 5.7.9 Authentication mechanism is too weak",
        "538 5.7.11 Encryption required for requested authentication mechanism",
        "504 5.5.4 Unrecognized authentication type",
        "454 4.7.0 Temporary authentication failure",
    ] {
        let mut server = SmtpServer::smtp(&["AUTH PLAIN"]);
        server.auth_reply = Some(reply.into());
        let peer = server.start();
        let dir = open("smtp", &peer, &[]);
        let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
        assert_eq!(e.kind(), Kind::Deferred, "{reply}: {e}");
        assert!(e.to_string().contains(reply), "{e}");
        let c = CDirectory::open("smtp", &peer, &[]);
        let (r, last) = c.auth(ALICE, ALICE_PASS);
        assert_eq!(r, DIRECTORY_RESULT_TEMPORARY, "{reply}: {last}");
        drop((dir, c));
        peer.wait_all_ended();
        for commands in peer.all_commands() {
            assert_eq!(commands, auth_session(&[ALICE_PASS]), "{reply}");
        }
        peer.assert_clean();
    }
}

#[test]
fn smtp_rcpt_sends_one_mail_from_per_connection_and_no_rset_between_probes() {
    let peer = SmtpServer::smtp(&["PIPELINING"]).start();
    // The cache (on by default) would answer the second ALICE itself.
    let dir = open("smtp", &peer, &["cache.size = false"]);
    let probes = [
        ALICE,
        "nobody@example.org",
        "bob@example.org",
        "ghost@example.org",
        ALICE,
    ];
    for address in probes {
        let _ = dir.rcpt(address);
    }
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.all_commands(), [probe_session(&probes)]);
    peer.assert_clean();
}

#[test]
fn smtp_with_pipelining_sends_mail_from_and_rcpt_without_waiting() {
    let peer = Peer::start(|c| {
        smtp_hello(c, &["PIPELINING", "8BITMIME"])?;
        c.expect("MAIL FROM:<>")?;
        // No reply yet: a pipelining client has sent its RCPT already.
        c.expect_within("RCPT TO:<alice@example.org>", Duration::from_secs(2))?;
        c.send_lines(&["250 2.1.0 Ok", "250 2.1.5 Ok"])?;
        c.expect("QUIT")?;
        c.send("221 2.0.0 Bye")
    });
    let dir = open("smtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    peer.assert_clean();
    let records = peer.records(0);
    assert_eq!(
        records.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        probe_session(&[ALICE])
    );
    assert_eq!(
        records[1].read_no, records[2].read_no,
        "MAIL FROM and RCPT TO should arrive in one segment"
    );
}

#[test]
fn smtp_without_pipelining_waits_for_the_mail_reply_before_rcpt() {
    let peer = Peer::start(|c| {
        smtp_hello(c, &["8BITMIME"])?;
        c.expect("MAIL FROM:<>")?;
        if c.data_within(Duration::from_millis(300))? {
            c.note("RCPT sent before the reply to MAIL FROM");
        }
        c.send("250 2.1.0 Ok")?;
        c.expect("RCPT TO:<alice@example.org>")?;
        c.send("250 2.1.5 Ok")?;
        c.expect("QUIT")?;
        c.send("221 2.0.0 Bye")
    });
    let dir = open("smtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    peer.assert_clean();
    assert_eq!(peer.all_commands(), [probe_session(&[ALICE])]);
}

/// Every RCPT reply class, through the Rust API (kind) and the C API (result).
#[test]
fn smtp_rcpt_2xx_is_ok_5xx_is_rejected_4xx_is_temporary() {
    let classes: [(Result<(), Kind>, directory_result, [&str; 3]); 3] = [
        (
            Ok(()),
            DIRECTORY_RESULT_OK,
            [
                "250 2.1.5 Ok",
                "251 2.1.5 User not local; will forward",
                "252 2.1.5 Cannot VRFY user, but will accept message",
            ],
        ),
        (
            Err(Kind::Rejected),
            DIRECTORY_RESULT_REJECTED,
            [
                "550 5.1.1 User unknown",
                "551 5.1.6 User has moved",
                "553 5.1.3 Bad recipient address syntax",
            ],
        ),
        (
            Err(Kind::Deferred),
            DIRECTORY_RESULT_TEMPORARY,
            [
                "450 4.2.0 Mailbox busy",
                "451 4.3.0 Local error in processing",
                "452 4.5.3 Too many recipients",
            ],
        ),
    ];
    // Each reply goes to an address of its own, named after its code: r250@example.org...
    let cases: Vec<(String, &str, Result<(), Kind>, directory_result)> = classes
        .iter()
        .flat_map(|(kind, result, replies)| {
            replies.iter().map(|reply| {
                (
                    format!("r{}@example.org", &reply[..3]),
                    *reply,
                    *kind,
                    *result,
                )
            })
        })
        .collect();
    let mut server = SmtpServer::smtp(&["PIPELINING"]);
    server.rcpt_replies = cases
        .iter()
        .map(|(address, reply, ..)| (address.clone(), reply.to_string()))
        .collect();
    let peer = server.start();
    let dir = open("smtp", &peer, &[]);
    let c = CDirectory::open("smtp", &peer, &[]);
    for (address, reply, kind, result) in &cases {
        let got = dir.rcpt(address).map_err(|e| {
            assert!(e.to_string().contains(reply), "{e}");
            e.kind()
        });
        assert_eq!(&got, kind, "{reply}");
        let (r, last) = c.rcpt(address);
        assert_eq!(r, *result, "{reply}: {last}");
    }
    drop((dir, c));
    peer.wait_all_ended();
    let addresses: Vec<&str> = cases.iter().map(|(address, ..)| address.as_str()).collect();
    let expected = probe_session(&addresses);
    assert_eq!(peer.all_commands(), [expected.clone(), expected]);
    peer.assert_clean();
}

#[test]
fn smtp_mail_from_refused_with_530_is_temporary() {
    for pipelining in [false, true] {
        let ehlo: &[&str] = if pipelining { &["PIPELINING"] } else { &[] };
        let mut server = SmtpServer::smtp(ehlo);
        server.mail_reply = "530 5.7.0 Must issue a STARTTLS command first".into();
        let peer = server.start();
        let dir = open("smtp", &peer, &[]);
        let e = dir.rcpt(ALICE).unwrap_err();
        assert_eq!(e.kind(), Kind::Deferred, "pipelining {pipelining}: {e}");
        assert!(e.to_string().contains("MAIL FROM:<>: 530"), "{e}");
        let c = CDirectory::open("smtp", &peer, &[]);
        assert_eq!(c.rcpt(ALICE).0, DIRECTORY_RESULT_TEMPORARY);
        drop((dir, c));
        peer.wait_all_ended();
        for commands in peer.all_commands() {
            if pipelining {
                // The RCPT went out with MAIL FROM and got its own (503) reply.
                assert_eq!(commands, probe_session(&[ALICE]));
            } else {
                assert_eq!(commands, [EHLO, "MAIL FROM:<>", "QUIT"]);
            }
        }
        peer.assert_clean();
    }
}

#[test]
fn smtp_rcpt_limit_of_three_quits_and_opens_a_new_connection() {
    let peer = SmtpServer::smtp(&["PIPELINING"]).start();
    let dir = open("smtp", &peer, &["limits.rcpt = 3", "cache.size = false"]);
    for i in 0..10 {
        let address = if i % 2 == 0 {
            ALICE
        } else {
            "nobody@example.org"
        };
        let _ = dir.rcpt(address);
    }
    drop(dir);
    peer.wait_all_ended();
    let all = peer.all_commands();
    let rcpts: Vec<usize> = all.iter().map(|c| count(c, "RCPT TO:")).collect();
    assert_eq!(rcpts, [3, 3, 3, 1], "{all:?}");
    for commands in &all {
        assert_eq!(count(commands, "MAIL FROM:"), 1, "{commands:?}");
        assert_eq!(count(commands, "RSET"), 0, "{commands:?}");
        assert_eq!(commands[0], EHLO);
        assert_eq!(commands.last().unwrap(), "QUIT");
    }
    peer.assert_clean();
}

/// A server offering `ehlo` that answers 421 and closes a connection idle for 200 ms, and a
/// handle (directory `extra` settings) whose first probe of ALICE left in its pool a
/// connection the server has closed that way since.
fn after_an_idle_421(ehlo: &[&str], extra: &[&str]) -> (Peer, Directory) {
    let mut server = SmtpServer::smtp(ehlo);
    server.idle_421_after = Some(Duration::from_millis(200));
    let peer = server.start();
    let dir = open("smtp", &peer, extra);
    dir.rcpt(ALICE).unwrap();
    assert_eq!(dir.idle_connections(), 1);
    // The server answers 421 and closes the idle connection.
    assert!(peer.wait_until(Duration::from_secs(5), |p| p.ended(0)));
    (peer, dir)
}

#[test]
fn smtp_421_on_an_idle_pooled_connection_is_replaced_transparently() {
    let (peer, dir) = after_an_idle_421(&["PIPELINING"], &["cache.size = false"]);
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [
            vec![EHLO.to_string(), "MAIL FROM:<>".into(), rcpt(ALICE)],
            probe_session(&[ALICE])
        ]
    );
    peer.assert_clean();
}

#[test]
fn rcpt_on_an_imap_directory_is_unsupported_and_connects_nowhere() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open("imap", &peer, &[]);
    let e = dir.rcpt(ALICE).unwrap_err();
    assert_eq!(e.kind(), Kind::Unsupported, "{e}");
    let c = CDirectory::open("imap", &peer, &[]);
    assert_eq!(c.rcpt(ALICE).0, DIRECTORY_RESULT_UNSUPPORTED);
    drop((dir, c));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(peer.connections(), 0);
}

#[test]
fn smtp_starttls_extensions_are_read_again_after_tls() {
    let mut server = SmtpServer::smtp(&["PIPELINING", "STARTTLS"]);
    server.ehlo_tls = Some(vec!["PIPELINING".into(), "AUTH PLAIN LOGIN".into()]);
    let peer = server.start();
    let dir = open("smtp", &peer, &[&ca_file_line()]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    let seen: Vec<Vec<(String, bool)>> = (0..peer.connections())
        .map(|i| {
            peer.records(i)
                .into_iter()
                .map(|r| (r.line, r.tls))
                .collect()
        })
        .collect();
    let s = |l: &str, tls| (l.to_string(), tls);
    assert_eq!(
        seen,
        [
            vec![
                s(EHLO, false),
                s("STARTTLS", false),
                s(EHLO, true),
                s(&auth_plain(ALICE_PASS), true),
                s("QUIT", true)
            ],
            vec![
                s(EHLO, false),
                s("STARTTLS", false),
                s(EHLO, true),
                s("MAIL FROM:<>", true),
                s(&rcpt(ALICE), true),
                s("QUIT", true)
            ]
        ]
    );
    peer.assert_clean();
}

#[test]
fn smtp_without_starttls_on_loopback_authenticates_and_probes_in_clear() {
    let peer = SmtpServer::smtp(&["PIPELINING", "AUTH PLAIN"]).start();
    let dir = open("smtp", &peer, &[]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.rcpt(ALICE).unwrap();
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [
            auth_session(&[ALICE_PASS]),
            probe_session(&[ALICE, "nobody@example.org"])
        ]
    );
    assert!((0..2).all(|i| peer.records(i).iter().all(|r| !r.tls)));
    peer.assert_clean();
}

#[test]
fn smtp_starttls_reply_followed_by_pipelined_bytes_is_refused() {
    let peer = Peer::start(|c| {
        smtp_hello(c, &["STARTTLS", "AUTH PLAIN"])?;
        c.expect("STARTTLS")?;
        // One write: the injected reply arrives in the same segment as the 220.
        c.send_raw(b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN\r\n")?;
        let after = c.read_until_closed(Duration::from_secs(5))?;
        if !after.is_empty() {
            c.note(format!(
                "client sent {} bytes after the injection",
                after.len()
            ));
        }
        Ok(())
    });
    let dir = open("smtp", &peer, &[&ca_file_line()]);
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    let c = CDirectory::open("smtp", &peer, &[&ca_file_line()]);
    assert_eq!(c.rcpt(ALICE).0, DIRECTORY_RESULT_TEMPORARY);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [[EHLO, "STARTTLS"], [EHLO, "STARTTLS"]]
    );
    peer.assert_clean();
}

#[test]
fn smtp_implicit_tls_speaks_tls_from_the_first_byte() {
    let mut server = SmtpServer::smtp(&[]);
    server.ehlo_tls = Some(vec!["PIPELINING".into(), "AUTH PLAIN".into()]);
    server.implicit_tls = true;
    let peer = server.start();
    let dir = open("smtp", &peer, &["tls.implicit = true", &ca_file_line()]);
    dir.auth(ALICE, ALICE_PASS).unwrap();
    dir.rcpt(ALICE).unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [auth_session(&[ALICE_PASS]), probe_session(&[ALICE])]
    );
    assert!((0..2).all(|i| peer.records(i).iter().all(|r| r.tls)));
    peer.assert_clean();
}

#[test]
fn smtp_non_ascii_recipient_declares_smtputf8_when_offered() {
    let mut server = SmtpServer::smtp(&["PIPELINING", "SMTPUTF8"]);
    server.recipients.push("jörg@example.org".into());
    let peer = server.start();
    let dir = open("smtp", &peer, &[]);
    dir.rcpt("jörg@example.org").unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [[
            EHLO,
            "MAIL FROM:<> SMTPUTF8",
            "RCPT TO:<jörg@example.org>",
            "QUIT"
        ]]
    );
    peer.assert_clean();
}

/// The open transaction is reused across probes, so whether it was declared SMTPUTF8 must
/// not depend on the first probe: Postfix answers a non-ASCII RCPT in an undeclared
/// transaction with `553 5.6.7 Must declare SMTPUTF8 to send unicode address`, which is no
/// verdict on the recipient.
#[test]
fn smtp_non_ascii_recipient_after_an_ascii_probe_is_still_accepted() {
    let mut server = SmtpServer::smtp(&["PIPELINING", "SMTPUTF8"]);
    server.recipients.push("jörg@example.org".into());
    let peer = server.start();
    let dir = open("smtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    let second = dir.rcpt("jörg@example.org");
    drop(dir);
    peer.wait_all_ended();
    assert!(
        second.is_ok(),
        "an existing non-ASCII recipient was judged {:?}; commands {:?}",
        second.map_err(|e| e.to_string()),
        peer.all_commands()
    );
    peer.assert_clean();
}

#[test]
fn smtp_auth_on_a_probe_connection_resets_the_transaction_first() {
    let peer = SmtpServer::smtp(&["PIPELINING", "AUTH PLAIN"]).start();
    let dir = open("smtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    dir.rcpt("bob@example.org").unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [[
            EHLO,
            "MAIL FROM:<>",
            &rcpt(ALICE),
            "RSET",
            &auth_plain("wrong"),
            "MAIL FROM:<>",
            &rcpt("bob@example.org"),
            "QUIT"
        ]]
    );
    peer.assert_clean();
}

/// A probe connection waits idle inside its transaction; an AUTH on it first sends RSET.
/// If the server closed the idle connection with 421 meanwhile, the 421 arrives as the
/// RSET reply, and the connection must be replaced as for any other stale connection.
#[test]
fn smtp_421_on_an_idle_probe_connection_before_auth_is_replaced_transparently() {
    let (peer, dir) = after_an_idle_421(&["PIPELINING", "AUTH PLAIN"], &[]);
    let auth = dir.auth(ALICE, ALICE_PASS);
    drop(dir);
    peer.wait_all_ended();
    assert!(
        auth.is_ok(),
        "auth on a replaced connection: {:?}; commands {:?}",
        auth.map_err(|e| e.to_string()),
        peer.all_commands()
    );
    assert_eq!(peer.commands(1), auth_session(&[ALICE_PASS]));
    peer.assert_clean();
}

#[test]
fn smtp_421_on_an_idle_tls_connection_is_replaced_transparently() {
    let (peer, dir) = after_an_idle_421(&["PIPELINING", "STARTTLS"], &[&ca_file_line()]);
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.connections(), 2);
    assert_eq!(
        peer.commands(1),
        [
            EHLO,
            "STARTTLS",
            EHLO,
            "MAIL FROM:<>",
            &rcpt("nobody@example.org"),
            "QUIT"
        ]
    );
    peer.assert_clean();
}
