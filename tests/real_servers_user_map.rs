//! User name mapping (`user.*`) against the real Dovecot started by `tests/servers/servers.sh`
//! (IMAP, and Postfix submission through Dovecot SASL): mapped logins are accepted, and a login
//! in a foreign domain under `user.require-local-domain` opens no connection at all.
//!
//! The harness Dovecot itself lower-cases names (its default `auth_username_format = %Lu`) and
//! completes bare ones (`auth_default_realm`), so it accepts `alice` and `ALICE@EXAMPLE.ORG`
//! without our mapping too; that the server receives exactly the mapped name is shown against
//! scripted peers that accept one exact name (tests/peers_config.rs).

mod common;

use common::{servers, ALICE};
use remote_directory::{Directory, Kind};

fn open(kind: &str, port_key: &str, extra: &str) -> Directory {
    let config = servers().config(kind, port_key, false, extra);
    Directory::open_str(&config, None).unwrap_or_else(|e| panic!("open: {e}\n{config}"))
}

#[test]
fn bare_name_with_append_domain_logs_in() {
    for (kind, port) in [("imap", "RD_IMAP_PORT"), ("smtp", "RD_SUBMISSION_PORT")] {
        let mapped = open(kind, port, "user.append-domain = \"example.org\"");
        mapped
            .auth("alice", ALICE.1)
            .unwrap_or_else(|e| panic!("{port}: alice + example.org: {e}"));
        // A name that has a domain keeps it.
        mapped
            .auth(ALICE.0, ALICE.1)
            .unwrap_or_else(|e| panic!("{port}: {e}"));
    }
}

#[test]
fn upper_case_login_with_lowercase_logs_in() {
    let shouting = ALICE.0.to_uppercase();
    let mapped = open("imap", "RD_IMAP_PORT", "user.lowercase = true");
    mapped
        .auth(&shouting, ALICE.1)
        .unwrap_or_else(|e| panic!("{shouting} with user.lowercase: {e}"));
    let e = mapped.auth(&shouting, "not-alices").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
}

#[test]
fn strip_domain_with_the_servers_own_realm_logs_in() {
    // `alice` reaches Dovecot, whose auth_default_realm makes it alice@example.org again:
    // the setup of a remote that wants bare names.
    let dir = open("imap", "RD_IMAP_PORT", "user.strip-domain = true");
    dir.auth(ALICE.0, ALICE.1)
        .expect("alice@example.org sent as alice");
}

#[test]
fn foreign_domain_with_require_local_domain_sends_nothing() {
    let dir = open(
        "imap",
        "RD_IMAP_PORT",
        "user.require-local-domain = true\nuser.lowercase = true",
    );
    let e = dir.auth("Mallory@Other.Test", "guess").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert_eq!(
        e.to_string(),
        "'Mallory@Other.Test': 'other.test' is not one of lookup.domains (user.require-local-domain): not asked"
    );
    assert_eq!(dir.open_connections(), 0, "no connection was opened");
    // A local domain is asked as before, on the same handle.
    dir.auth(&ALICE.0.to_uppercase(), ALICE.1)
        .expect("a local domain goes to the server");
    assert!(dir.open_connections() <= 1);
}
