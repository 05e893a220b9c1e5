//! Against the real Dovecot (IMAP, LMTP, submission) and Postfix (SMTP with Dovecot SASL)
//! started by `tests/servers/servers.sh`, with certificate verification on (`tls.ca-file`).

mod common;

use common::{servers, ALICE, BOB, NOBODY};
use remote_directory::{Directory, Kind};
use std::sync::Arc;

fn open(kind: &str, port_key: &str, implicit: bool, extra: &str) -> Directory {
    let config = servers().config(kind, port_key, implicit, extra);
    Directory::open_str(&config, None).unwrap_or_else(|e| panic!("open: {e}"))
}

fn assert_rejected(result: remote_directory::Result<()>, what: &str) -> String {
    let e = result.expect_err(what);
    assert_eq!(e.kind(), Kind::Rejected, "{what}: {e}");
    e.to_string()
}

#[test]
fn imap_starttls_auth_ok_wrong_and_unknown_user() {
    let dir = open("imap", "RD_IMAP_PORT", false, "");
    dir.auth(ALICE.0, ALICE.1).expect("alice's right password");
    let msg = assert_rejected(dir.auth(ALICE.0, "wrong"), "wrong password");
    assert!(
        msg.contains("AUTHENTICATE PLAIN: NO [AUTHENTICATIONFAILED]"),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("localhost:{}: ", servers().port("RD_IMAP_PORT"))),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "the secret must not appear: {msg}");
    assert_rejected(dir.auth(NOBODY, "whatever"), "unknown user");
}

#[test]
fn imap_implicit_tls_auth_ok_and_wrong() {
    let dir = open("imap", "RD_IMAPS_PORT", true, "");
    dir.auth(ALICE.0, ALICE.1).expect("alice over implicit TLS");
    assert_rejected(dir.auth(ALICE.0, "alice-pass-2"), "wrong password");
}

#[test]
fn password_with_quote_backslash_space_and_umlaut() {
    for (kind, port, implicit) in [
        ("imap", "RD_IMAP_PORT", false),
        ("smtp", "RD_SUBMISSION_PORT", false),
        ("smtp", "RD_SMTP_PORT", false),
    ] {
        let dir = open(kind, port, implicit, "");
        dir.auth(BOB.0, BOB.1)
            .unwrap_or_else(|e| panic!("bob on {port}: {e}"));
        assert_rejected(dir.auth(BOB.0, "p\"a\\ss word"), port);
    }
}

#[test]
fn imap_without_the_test_ca_is_a_tls_failure_not_a_rejection() {
    let config = format!(
        "[directory.d]\ntype = \"imap\"\naddress = \"localhost\"\nport = {}\ntimeout = \"5s\"\n",
        servers().port("RD_IMAP_PORT")
    );
    let dir = Directory::open_str(&config, None).unwrap();
    let e = dir.auth(ALICE.0, ALICE.1).unwrap_err();
    assert_eq!(e.kind(), Kind::Tls, "{e}");
    assert!(e.to_string().contains("STARTTLS"), "{e}");
}

#[test]
fn imap_rcpt_is_unsupported() {
    let dir = open("imap", "RD_IMAP_PORT", false, "");
    assert_eq!(dir.rcpt(ALICE.0).unwrap_err().kind(), Kind::Unsupported);
    assert_eq!(dir.open_connections(), 0);
}

#[test]
fn lmtp_rcpt_existing_and_unknown() {
    let dir = open("lmtp", "RD_LMTP_PORT", false, "");
    dir.rcpt(ALICE.0).expect("alice exists");
    dir.rcpt("ALICE@Example.org").expect("any case");
    let msg = assert_rejected(dir.rcpt(NOBODY), "unknown recipient");
    assert!(
        msg.contains(&format!("RCPT TO:<{NOBODY}>: 550 5.1.1")),
        "{msg}"
    );
    dir.rcpt(BOB.0).expect("bob exists");
}

#[test]
fn postfix_rcpt_existing_unknown_and_foreign() {
    let dir = open("smtp", "RD_SMTP_PORT", false, "");
    dir.rcpt(ALICE.0).expect("alice exists");
    let msg = assert_rejected(dir.rcpt(NOBODY), "unknown recipient");
    assert!(
        msg.contains("550 5.1.1") && msg.contains("User unknown"),
        "{msg}"
    );
    assert_rejected(dir.rcpt("someone@other.test"), "relay denied");
}

#[test]
fn postfix_many_probes_stay_fast_and_right_across_reconnects() {
    // 30 probes with limits.rcpt = 10: three connections, never near Postfix's error limits.
    let dir = open("smtp", "RD_SMTP_PORT", false, "limits.rcpt = 10");
    for i in 0..30 {
        if i % 3 == 0 {
            assert_rejected(dir.rcpt(NOBODY), "unknown");
        } else {
            dir.rcpt(ALICE.0)
                .unwrap_or_else(|e| panic!("probe {i}: {e}"));
        }
    }
    assert!(dir.open_connections() <= 1);
}

#[test]
fn postfix_auth_through_dovecot_sasl_after_starttls() {
    let dir = open("smtp", "RD_SMTP_PORT", false, "");
    dir.auth(ALICE.0, ALICE.1).expect("alice via Postfix SASL");
    let msg = assert_rejected(dir.auth(ALICE.0, "nope"), "wrong password");
    assert!(msg.contains("AUTH PLAIN: 535"), "{msg}");
    assert_rejected(dir.auth(NOBODY, "nope"), "unknown user");
}

#[test]
fn submission_auth_starttls_and_implicit() {
    for (port, implicit) in [("RD_SUBMISSION_PORT", false), ("RD_SUBMISSIONS_PORT", true)] {
        let dir = open("smtp", port, implicit, "");
        dir.auth(ALICE.0, ALICE.1)
            .unwrap_or_else(|e| panic!("{port}: {e}"));
        assert_rejected(dir.auth(ALICE.0, "nope"), port);
    }
}

#[test]
fn submission_rcpt_without_auth_is_temporary_not_rejected() {
    // Dovecot submission wants AUTH before MAIL: the refused MAIL FROM decides nothing.
    let dir = open("smtp", "RD_SUBMISSION_PORT", false, "");
    let e = dir.rcpt(ALICE.0).unwrap_err();
    assert_eq!(e.kind(), Kind::Deferred, "{e}");
    assert!(e.to_string().contains("MAIL FROM:<>: 530"), "{e}");
}

#[test]
fn sixteen_threads_share_one_handle() {
    let imap = Arc::new(open(
        "imap",
        "RD_IMAP_PORT",
        false,
        "pool.max-connections = 8",
    ));
    let lmtp = Arc::new(open(
        "lmtp",
        "RD_LMTP_PORT",
        false,
        "pool.max-connections = 4",
    ));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (imap, lmtp) = (imap.clone(), lmtp.clone());
            std::thread::spawn(move || {
                for i in 0..6 {
                    match (t + i) % 4 {
                        0 => imap
                            .auth(ALICE.0, ALICE.1)
                            .unwrap_or_else(|e| panic!("t{t} auth: {e}")),
                        1 => lmtp
                            .rcpt(ALICE.0)
                            .unwrap_or_else(|e| panic!("t{t} rcpt: {e}")),
                        2 => assert_eq!(lmtp.rcpt(NOBODY).unwrap_err().kind(), Kind::Rejected),
                        _ => {
                            if i == 3 {
                                let e = imap.auth(BOB.0, "wrong").unwrap_err();
                                assert_eq!(e.kind(), Kind::Rejected, "t{t}: {e}");
                            } else {
                                imap.auth(BOB.0, BOB.1)
                                    .unwrap_or_else(|e| panic!("t{t} bob: {e}"));
                            }
                        }
                    }
                    assert!(imap.open_connections() <= 8 && lmtp.open_connections() <= 4);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread panicked");
    }
}

#[cfg(feature = "native-tls")]
#[test]
fn native_tls_backend_verifies_with_the_ca_file() {
    for (port, implicit) in [("RD_IMAP_PORT", false), ("RD_IMAPS_PORT", true)] {
        let dir = open("imap", port, implicit, "tls.backend = \"native\"");
        dir.auth(ALICE.0, ALICE.1)
            .unwrap_or_else(|e| panic!("{port}: {e}"));
        assert_rejected(dir.auth(ALICE.0, "nope"), port);
    }
    let lmtp = open("lmtp", "RD_LMTP_PORT", false, "tls.backend = \"native\"");
    lmtp.rcpt(ALICE.0).expect("alice over native TLS");
    // Without the test CA the platform's verifier refuses the certificate.
    let config = format!(
        "[directory.d]\ntype = \"imap\"\naddress = \"localhost\"\nport = {}\ntls.backend = \"native\"\n",
        servers().port("RD_IMAPS_PORT")
    );
    let config = config.replace("tls.backend", "tls.implicit = true\ntls.backend");
    let e = Directory::open_str(&config, None)
        .unwrap()
        .auth(ALICE.0, ALICE.1)
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Tls, "{e}");
}

#[test]
fn auth_on_lmtp_without_auth_is_unsupported() {
    let dir = open("lmtp", "RD_LMTP_PORT", false, "");
    let e = dir.auth(ALICE.0, ALICE.1).unwrap_err();
    assert_eq!(e.kind(), Kind::Unsupported, "{e}");
    assert!(
        e.to_string()
            .contains("LHLO: server offers neither AUTH PLAIN nor AUTH LOGIN"),
        "{e}"
    );
}
