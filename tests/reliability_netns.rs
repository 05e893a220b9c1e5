//! Downgrade, seen from a server that is not on loopback: the scripted peers listen inside
//! a network namespace this test makes (`ip netns`, a veth pair, a /30 of 10.203.0.0/16
//! chosen from the process id), reached from this host through the veth only. With
//! `tls.implicit = false`, a server that offers no STARTTLS (or stops offering it, or
//! refuses it, or injects data after its STARTTLS reply) never receives credentials: the
//! result is TEMPORARY (kind Cleartext or Protocol). Recipient probes still work in clear
//! text there, and with STARTTLS offered the same peer authenticates over TLS.
//!
//! Needs root (network namespaces): without it the test fails, saying so. The namespace and
//! the veth pair are removed when the test ends, whatever happened.

mod peer;

use peer::{ca_file_line, config, server_config, Conn, ImapServer, Peer, SmtpServer, Validity};
use remote_directory::{Directory, Kind};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with one veth pair to this host: `host` here, `inside` there.
struct Netns {
    name: String,
    veth: String,
    host: Ipv4Addr,
    inside: Ipv4Addr,
}

impl Netns {
    fn create() -> Netns {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test builds a network namespace (ip netns, veth) and needs root; run the \
             tests as root (CI does)"
        );
        let pid = std::process::id();
        let (c, d) = ((pid % 250) as u8, ((pid / 250) % 64 * 4) as u8);
        let ns = Netns {
            name: format!("rdtest-{pid}"),
            veth: format!("rdv{pid}"),
            host: Ipv4Addr::new(10, 203, c, d + 1),
            inside: Ipv4Addr::new(10, 203, c, d + 2),
        };
        let peer_end = format!("{}x", ns.veth);
        let host = format!("{}/30", ns.host);
        let inside = format!("{}/30", ns.inside);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.name],
            vec![
                "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer_end,
            ],
            vec!["link", "set", &peer_end, "netns", &ns.name],
            vec!["addr", "add", &host, "dev", &ns.veth],
            vec!["link", "set", &ns.veth, "up"],
            vec!["-n", &ns.name, "addr", "add", &inside, "dev", &peer_end],
            vec!["-n", &ns.name, "link", "set", &peer_end, "up"],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(&step) {
                drop(ns);
                panic!(
                    "cannot build the test's network namespace ({e}); this test needs root and \
                     the iproute2 `ip` command with network namespace support"
                );
            }
        }
        ns
    }

    /// A listener on `inside`, port 0, made by a thread that entered the namespace (the
    /// socket stays in it; the other threads stay where they are).
    fn listen(&self) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let inside = self.inside;
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a valid namespace descriptor; it affects this thread only,
            // which ends right after binding.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind((inside, 0)).expect("bind inside the namespace")
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; then the namespace.
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The configuration of `peer` with the namespace's address instead of 127.0.0.1.
fn remote_config(ns: &Netns, kind: &str, peer: &Peer, extra: &[&str]) -> Directory {
    let text = config(kind, peer, extra).replace("127.0.0.1", &ns.inside.to_string());
    Directory::open_str(&text, None).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn credential_lines(peer: &Peer) -> Vec<String> {
    peer.all_commands()
        .into_iter()
        .flatten()
        .filter(|l| {
            let u = l.to_ascii_uppercase();
            u.starts_with("AUTH") || u.contains(" AUTHENTICATE") || u.contains(" LOGIN")
        })
        .collect()
}

#[test]
fn credentials_never_go_in_clear_text_to_a_server_off_loopback() {
    let ns = Netns::create();

    // SMTP without STARTTLS: no AUTH, TEMPORARY (Cleartext); probes still work.
    let peer = SmtpServer::smtp(&["AUTH PLAIN LOGIN", "PIPELINING"]).start_on(ns.listen());
    assert_eq!(peer.addr().ip(), ns.inside);
    let dir = remote_config(&ns, "smtp", &peer, &[]);
    for _ in 0..3 {
        let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
        assert_eq!(e.kind(), Kind::Cleartext, "{e}");
        assert!(e.to_string().contains(&ns.inside.to_string()), "{e}");
    }
    dir.rcpt(ALICE).expect("a recipient probe in clear text");
    assert_eq!(
        dir.rcpt("nobody@example.org").unwrap_err().kind(),
        Kind::Rejected
    );
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(credential_lines(&peer), Vec::<String>::new());
    assert!(peer.records(0).iter().all(|r| !r.tls));
    eprintln!("smtp, no STARTTLS: {:?}", peer.all_commands());

    // LMTP without STARTTLS: probes work.
    let peer = SmtpServer::lmtp(&["PIPELINING"]).start_on(ns.listen());
    let dir = remote_config(&ns, "lmtp", &peer, &[]);
    dir.rcpt(ALICE).unwrap();
    drop(dir);

    // IMAP without STARTTLS, AUTH=PLAIN and LOGIN both possible: nothing sent.
    for caps in ["IMAP4rev1 AUTH=PLAIN AUTH=LOGIN SASL-IR", "IMAP4rev1"] {
        let peer = ImapServer::new(caps).start_on(ns.listen());
        let dir = remote_config(&ns, "imap", &peer, &[]);
        let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
        assert_eq!(e.kind(), Kind::Cleartext, "{caps}: {e}");
        drop(dir);
        peer.wait_all_ended();
        assert_eq!(credential_lines(&peer), Vec::<String>::new(), "{caps}");
    }

    // A server that offered STARTTLS and then stops offering it (stripped by someone on
    // the path): the first login goes over TLS, the second is not sent at all.
    let tls_config = server_config(&[&ns.inside.to_string()], Validity::Current);
    let connections = Arc::new(AtomicUsize::new(0));
    let peer = Peer::start_on(ns.listen(), {
        let connections = connections.clone();
        let tls_config = tls_config.clone();
        move |c: &mut Conn| {
            let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
            c.send("220 mx.example.org ESMTP")?;
            c.expect("EHLO")?;
            if first {
                c.send_lines(&["250-mx.example.org", "250-STARTTLS", "250 PIPELINING"])?;
                c.expect("STARTTLS")?;
                c.send("220 2.0.0 Ready to start TLS")?;
                c.start_tls_with(tls_config.clone())?;
                c.expect("EHLO")?;
            }
            c.send_lines(&["250-mx.example.org", "250-AUTH PLAIN", "250 PIPELINING"])?;
            loop {
                let line = c.next_line()?;
                if line.starts_with("AUTH") {
                    c.send("535 5.7.8 Error: authentication failed")?;
                } else if line == "QUIT" {
                    return c.send("221 2.0.0 Bye");
                } else {
                    c.send("250 2.0.0 Ok")?;
                }
            }
        }
    });
    let ca = ca_file_line();
    let dir = remote_config(&ns, "smtp", &peer, &[&ca, "limits.auth-errors = 1"]);
    assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
    assert_eq!(e.kind(), Kind::Cleartext, "{e}");
    drop(dir);
    peer.wait_all_ended();
    let all = peer.all_commands();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        !all[1].iter().any(|l| l.starts_with("AUTH")),
        "credentials sent to the stripped connection: {all:?}"
    );
    let first = peer.records(0);
    assert!(
        first
            .iter()
            .filter(|r| r.line.starts_with("AUTH"))
            .all(|r| r.tls),
        "{all:?}"
    );

    // STARTTLS offered but refused, and STARTTLS with data injected after its reply:
    // TEMPORARY, nothing sent.
    for inject in [false, true] {
        let peer = Peer::start_on(ns.listen(), move |c: &mut Conn| {
            c.send("220 mx.example.org ESMTP")?;
            c.expect("EHLO")?;
            c.send_lines(&["250-mx.example.org", "250-STARTTLS", "250 AUTH PLAIN"])?;
            c.expect("STARTTLS")?;
            if inject {
                c.send_raw(b"220 2.0.0 Ready to start TLS\r\n250-mx\r\n250 AUTH PLAIN\r\n")?;
            } else {
                c.send("454 4.7.0 TLS not available due to local problem")?;
            }
            loop {
                let line = c.next_line()?;
                if line == "QUIT" {
                    return c.send("221 2.0.0 Bye");
                }
                c.send("503 5.5.1 Error: bad sequence")?;
            }
        });
        let dir = remote_config(&ns, "smtp", &peer, &[&ca]);
        let e = dir.auth(ALICE, ALICE_PASS).unwrap_err();
        let expected = if inject {
            Kind::Protocol
        } else {
            Kind::Deferred
        };
        assert_eq!(e.kind(), expected, "inject {inject}: {e}");
        drop(dir);
        peer.wait_all_ended();
        assert_eq!(
            credential_lines(&peer),
            Vec::<String>::new(),
            "inject {inject}"
        );
    }

    // The contrast: STARTTLS offered, a certificate for the namespace's address. The same
    // login goes through, over TLS.
    let peer = Peer::start_on(ns.listen(), {
        let tls_config = tls_config.clone();
        move |c: &mut Conn| {
            c.send("220 mx.example.org ESMTP")?;
            c.expect("EHLO")?;
            c.send_lines(&["250-mx.example.org", "250 STARTTLS"])?;
            c.expect("STARTTLS")?;
            c.send("220 2.0.0 Ready to start TLS")?;
            c.start_tls_with(tls_config.clone())?;
            c.expect("EHLO")?;
            c.send_lines(&["250-mx.example.org", "250 AUTH PLAIN"])?;
            let line = c.expect("AUTH PLAIN")?;
            if line == format!("AUTH PLAIN {}", peer::plain_b64(ALICE, ALICE_PASS)) {
                c.send("235 2.7.0 Authentication successful")?;
            } else {
                c.send("535 5.7.8 Error: authentication failed")?;
            }
            c.expect("QUIT")?;
            c.send("221 2.0.0 Bye")
        }
    });
    let dir = remote_config(&ns, "smtp", &peer, &[&ca]);
    dir.auth(ALICE, ALICE_PASS).expect("login over STARTTLS");
    drop(dir);
    peer.wait_all_ended();
    assert!(peer
        .records(0)
        .iter()
        .filter(|r| r.line.starts_with("AUTH"))
        .all(|r| r.tls));
    peer.assert_clean();
    drop(ns);
}
