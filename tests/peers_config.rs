//! Stalwart's v0.11+ keys and `user.*` against scripted peers: `pool.timeout.create` bounds
//! opening a connection, `pool.timeout.recycle` bounds checking an idle one, the EHLO/LHLO name
//! comes from `server.hostname` / `lookup.default.hostname` / this host, and the server
//! receives exactly the mapped user name.

mod peer;

use peer::{config, open, plain_b64, ImapServer, Peer, SmtpServer};
use remote_directory::config::choose_hello_name;
use remote_directory::{Directory, Kind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";

/// Longer than the library's `RECYCLE_CHECK_AFTER` (5 s): an idle session is checked.
const IDLE_LONG_ENOUGH: Duration = Duration::from_millis(5_300);

/// An SMTP peer that accepts one probe per connection; on the first connection it then
/// reads the client's next command and, when `answer_noop`, answers it, else never answers.
fn recycling_peer(answer_noop: bool) -> Peer {
    let connection = AtomicUsize::new(0);
    Peer::start(move |c| {
        let first = connection.fetch_add(1, Ordering::SeqCst) == 0;
        c.send("220 peer ESMTP")?;
        c.expect("EHLO")?;
        c.send_lines(&["250-peer", "250 PIPELINING"])?;
        c.expect("MAIL FROM:<>")?;
        c.send("250 2.1.0 Ok")?;
        c.expect("RCPT TO:")?;
        c.send("250 2.1.5 Ok")?;
        c.timeout = Duration::from_secs(20);
        if first {
            c.expect("NOOP")?;
            if !answer_noop {
                // A firewall that forgot the connection: nothing comes back.
                return c.stall(Duration::from_secs(20));
            }
            c.send("250 2.0.0 Ok")?;
            c.expect("RCPT TO:")?;
            c.send("250 2.1.5 Ok")?;
        }
        c.expect("QUIT")?;
        Ok(())
    })
}

#[test]
fn an_idle_pooled_connection_is_checked_with_noop_before_reuse() {
    let peer = recycling_peer(true);
    let dir = open("smtp", &peer, &["cache.size = false"]);
    dir.rcpt(ALICE).unwrap();
    std::thread::sleep(IDLE_LONG_ENOUGH);
    dir.rcpt("bob@example.org").unwrap();
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.all_commands(),
        [[
            "EHLO client.test",
            "MAIL FROM:<>",
            "RCPT TO:<alice@example.org>",
            "NOOP",
            "RCPT TO:<bob@example.org>",
            "QUIT"
        ]]
    );
}

#[test]
fn a_silent_pooled_connection_costs_only_pool_timeout_recycle() {
    let peer = recycling_peer(false);
    // Without the recycle bound the NOOP would use up the whole 3 s of the call, and the
    // fresh connection would have no time left: the call would fail.
    let dir = open(
        "smtp",
        &peer,
        &[
            "cache.size = false",
            "timeout = \"3s\"",
            "pool.timeout.recycle = \"300ms\"",
        ],
    );
    dir.rcpt(ALICE).unwrap();
    std::thread::sleep(IDLE_LONG_ENOUGH);
    dir.rcpt("bob@example.org")
        .expect("answered on a fresh connection");
    assert_eq!(peer.connections(), 2);
    let first = peer.commands(0);
    assert_eq!(first.last().map(String::as_str), Some("NOOP"), "{first:?}");
    assert_eq!(
        peer.commands(1)[..3],
        [
            "EHLO client.test",
            "MAIL FROM:<>",
            "RCPT TO:<bob@example.org>"
        ]
    );
}

#[test]
fn opening_a_connection_is_bounded_by_pool_timeout_create() {
    // Accepts, then never greets.
    let peer = Peer::start(|c| c.stall(Duration::from_secs(20)));
    let dir = open(
        "lmtp",
        &peer,
        &["timeout = \"10s\"", "pool.timeout.create = \"300ms\""],
    );
    let e = dir.rcpt(ALICE).unwrap_err();
    assert_eq!(e.kind(), Kind::Timeout, "{e}");
    assert!(
        e.to_string().contains("(pool.timeout.create is 300ms)"),
        "{e}"
    );
}

#[test]
fn hello_name_from_the_file_or_this_host() {
    let peer = SmtpServer::lmtp(&["PIPELINING"]).start();
    let directory = format!(
        "[directory.d]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = {}\ncache.size = false\n",
        peer.port()
    );
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let this_host = choose_hello_name(None, None, machine.as_deref().map(str::trim))
        .unwrap_or_else(|| "[127.0.0.1]".to_string());
    let cases = [
        (String::new(), this_host),
        (
            "[lookup.default]\nhostname = \"Old.Example.org\"\n".to_string(),
            "old.example.org".to_string(),
        ),
        (
            "[server]\nhostname = \"mx.example.org\"\n[lookup.default]\nhostname = \"old.example.org\"\n"
                .to_string(),
            "mx.example.org".to_string(),
        ),
    ];
    for (i, (root, name)) in cases.iter().enumerate() {
        let dir = Directory::open_str(&format!("{root}{directory}"), None).unwrap();
        dir.rcpt(ALICE).unwrap();
        drop(dir);
        assert!(peer.wait_until(Duration::from_secs(5), |p| p.ended(i)));
        assert_eq!(peer.commands(i)[0], format!("LHLO {name}"), "{root}");
    }
}

#[test]
fn the_server_receives_exactly_the_mapped_name() {
    let cases = [
        ("user.append-domain = \"example.org\"", "alice", ALICE),
        ("user.lowercase = true", "Alice@Example.ORG", ALICE),
        ("user.strip-domain = true", ALICE, "alice"),
        (
            "user = { lowercase = true, append-domain = \"example.org\", require-local-domain = true }",
            "ALICE",
            ALICE,
        ),
    ];
    for (line, given, sent) in cases {
        let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR")
            .user("alice", ALICE_PASS)
            .start();
        let text = config("imap", &peer, &["lookup.domains = [\"example.org\"]", line]);
        let dir = Directory::open_str(&text, None).unwrap();
        dir.auth(given, ALICE_PASS)
            .unwrap_or_else(|e| panic!("{line}: {given}: {e}"));
        drop(dir);
        peer.wait_all_ended();
        let commands = peer.commands(0);
        let expected = format!("AUTHENTICATE PLAIN {}", plain_b64(sent, ALICE_PASS));
        assert!(
            commands.iter().any(|c| c.ends_with(&expected)),
            "{line}: {given} should be sent as {sent}: {commands:?}"
        );
    }
}

#[test]
fn a_foreign_domain_is_refused_without_connecting() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open(
        "imap",
        &peer,
        &[
            "lookup.domains = [\"example.org\"]",
            "user.require-local-domain = true",
        ],
    );
    let e = dir.auth("guess@elsewhere.test", "x").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected);
    assert!(e.to_string().starts_with("'guess@elsewhere.test': "), "{e}");
    drop(dir);
    assert_eq!(peer.connections(), 0, "nothing was sent");
}

#[test]
fn caches_and_throttles_key_on_the_mapped_name() {
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open(
        "imap",
        &peer,
        &[
            "user.lowercase = true",
            "cache.auth-negative-ttl = \"1m\"",
            "throttle.user = \"2/1m\"",
            "throttle.delay = \"1ms\"",
        ],
    );
    let e = dir.auth("ALICE@EXAMPLE.ORG", "wrong-1").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // The same refused password under another spelling of the same name: the cache answers,
    // quoting the name this caller gave.
    let e = dir.auth("Alice@Example.org", "wrong-1").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(
        e.to_string()
            .contains("for 'Alice@Example.org' within cache.auth-negative-ttl (cached)"),
        "{e}"
    );
    let e = dir.auth("alice@example.org", "wrong-2").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // Two refusals of alice@example.org, however spelled: the budget is spent.
    let e = dir.auth("ALICE@example.ORG", "wrong-3").unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("throttled: user 'alice@example.org'"),
        "{text}"
    );
    assert!(
        text.ends_with("(login name 'ALICE@example.ORG' sent as 'alice@example.org')"),
        "{text}"
    );
    drop(dir);
    peer.wait_all_ended();
    let logins: usize = peer
        .all_commands()
        .iter()
        .flatten()
        .filter(|c| c.contains("AUTHENTICATE PLAIN"))
        .count();
    assert_eq!(logins, 2, "only the two first refusals reached the server");
}
