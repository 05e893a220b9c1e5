//! Faults of the network and of hostile servers, seen through the C API: connection refused,
//! a server that stops mid-reply or after its greeting, a stall at every step of a dialogue,
//! a slow drip bounded by the call's deadline, invalid UTF-8 and NUL bytes in replies, and
//! TLS failures (handshake, wrong host, expired, not yet valid, unknown CA).
//!
//! The rule under test everywhere: an outage is TEMPORARY, never REJECTED, and it comes
//! within `timeout` plus a small margin. Cases of one kind run concurrently (each against
//! its own scripted peer) so the whole file takes a few seconds, not a minute.

mod peer;

use peer::dialogue::*;
use peer::{ca_file_line, server_config, CDirectory, Conn, Peer, PeerError, PeerResult, Validity};
use remote_directory::ffi::{self, directory_result, directory_result::*};
use rustls::ServerConfig;
use std::ffi::CStr;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";
/// What a call may take beyond its `timeout`: thread scheduling on a loaded 2-core machine
/// with a dozen calls timing out at once. Measured overruns are 1-20 ms (RELIABILITY.md).
const MARGIN: Duration = Duration::from_millis(750);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Auth,
    Rcpt,
}

type Script = Box<dyn Fn(&mut Conn) -> PeerResult + Send + Sync>;

/// One fault: a directory of `kind` with `extra` settings against a peer running `script`.
struct Case {
    name: &'static str,
    kind: &'static str,
    op: Op,
    extra: Vec<String>,
    script: Script,
}

/// A case named `"<kind>: <what>"`: the name's prefix is the kind of directory it opens.
fn case(
    name: &'static str,
    op: Op,
    extra: &[&str],
    script: impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static,
) -> Case {
    let kind = match name.split_once(':') {
        Some((kind @ ("imap" | "smtp" | "lmtp"), _)) => kind,
        _ => panic!("case {name:?} does not start with its kind (imap:, smtp: or lmtp:)"),
    };
    Case {
        name,
        kind,
        op,
        extra: extra.iter().map(|s| s.to_string()).collect(),
        script: Box::new(script),
    }
}

/// What one case produced.
struct Outcome {
    name: &'static str,
    result: directory_result,
    /// `directory_last_error()` as raw bytes (checked to be clean UTF-8 by `message`).
    raw_message: Vec<u8>,
    took: Duration,
    commands: Vec<Vec<String>>,
    /// Every connection's script ended once the handle was closed.
    ended: bool,
    peer_errors: Vec<String>,
}

impl Outcome {
    /// The last error, which must be valid UTF-8 without control characters.
    fn message(&self) -> String {
        let text = std::str::from_utf8(&self.raw_message).unwrap_or_else(|e| {
            panic!(
                "{}: last error is not UTF-8 ({e}): {:?}",
                self.name, self.raw_message
            )
        });
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\t'),
            "{}: control character in the last error {text:?}",
            self.name
        );
        text.to_owned()
    }

    /// Lines received that carry credentials (any AUTH, AUTHENTICATE or LOGIN command).
    fn credential_lines(&self) -> Vec<String> {
        self.commands
            .iter()
            .flatten()
            .filter(|l| {
                let upper = l.to_ascii_uppercase();
                upper.starts_with("AUTH ")
                    || upper.contains(" AUTHENTICATE ")
                    || upper.contains(" LOGIN ")
            })
            .cloned()
            .collect()
    }
}

fn raw_last_error() -> Vec<u8> {
    // SAFETY: directory_last_error never returns NULL; the string stays valid until the next
    // call on this thread, and it is copied at once.
    unsafe { CStr::from_ptr(ffi::directory_last_error()) }
        .to_bytes()
        .to_vec()
}

fn call(dir: &CDirectory, op: Op) -> (directory_result, Vec<u8>, Duration) {
    let start = Instant::now();
    let result = match op {
        Op::Auth => dir.auth(ALICE, ALICE_PASS).0,
        Op::Rcpt => dir.rcpt(ALICE).0,
    };
    (result, raw_last_error(), start.elapsed())
}

fn run_case(case: Case) -> Outcome {
    let Case {
        name,
        kind,
        op,
        extra,
        script,
    } = case;
    let peer = Peer::start(script);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let dir = CDirectory::open(kind, &peer, &extra);
    let (result, raw_message, took) = call(&dir, op);
    drop(dir);
    let ended = peer.wait_until(Duration::from_secs(5), |p| {
        (0..p.connections()).all(|i| p.ended(i))
    });
    Outcome {
        name,
        result,
        raw_message,
        took,
        commands: peer.all_commands(),
        ended,
        peer_errors: peer.errors(),
    }
}

/// Runs every case at once, each in its own thread against its own peer.
fn run_all(cases: Vec<Case>) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .into_iter()
            .map(|c| s.spawn(move || run_case(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a case thread panicked"))
            .collect()
    })
}

/// Asserts TEMPORARY within `within`, a clean message, no credentials after a failure
/// (unless the case sent them legitimately before the fault) and peers that ended.
fn assert_temporary(outcomes: &[Outcome], within: Duration) {
    let mut failures = Vec::new();
    for o in outcomes {
        let message = o.message();
        eprintln!("{:<44} {:>6} ms  {}", o.name, o.took.as_millis(), message);
        if o.result != DIRECTORY_RESULT_TEMPORARY {
            failures.push(format!(
                "{}: {:?} instead of TEMPORARY: {message}",
                o.name, o.result
            ));
        }
        if o.took > within {
            failures.push(format!("{}: took {:?} > {within:?}", o.name, o.took));
        }
        if message.is_empty() {
            failures.push(format!("{}: empty last error", o.name));
        }
        if !o.ended {
            failures.push(format!("{}: a peer connection outlived the handle", o.name));
        }
        if !o.peer_errors.is_empty() {
            failures.push(format!(
                "{}: peer script errors {:?}",
                o.name, o.peer_errors
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Sends `data` one byte at a time, `every` apart.
fn drip(c: &mut Conn, data: &[u8], every: Duration) -> PeerResult {
    for &b in data {
        c.send_raw(&[b])?;
        c.pause(every)?;
    }
    Ok(())
}

/// Sends `lines` one at a time, `every` apart.
fn drip_lines(c: &mut Conn, lines: impl Iterator<Item = String>, every: Duration) -> PeerResult {
    for line in lines {
        c.send(&line)?;
        c.pause(every)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// connection refused, server gone mid-reply, server closing after its greeting

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn text_config(kind: &str, port: u16, extra: &str) -> String {
    format!(
        "[directory.test]\ntype = \"{kind}\"\naddress = \"127.0.0.1\"\nport = {port}\ntimeout = \"2s\"\n{extra}\n"
    )
}

#[test]
fn connection_refused_is_temporary_at_once() {
    let port = closed_port();
    for (kind, op) in [
        ("imap", Op::Auth),
        ("smtp", Op::Auth),
        ("smtp", Op::Rcpt),
        ("lmtp", Op::Rcpt),
    ] {
        for implicit in [false, true] {
            let dir = CDirectory::open_text(&text_config(
                kind,
                port,
                &format!("tls.implicit = {implicit}"),
            ));
            for _ in 0..3 {
                let (result, raw, took) = call(&dir, op);
                let message = String::from_utf8(raw).unwrap();
                assert_eq!(
                    result, DIRECTORY_RESULT_TEMPORARY,
                    "{kind} {op:?}: {message}"
                );
                assert!(message.contains("refused"), "{message}");
                assert!(took < Duration::from_millis(500), "{kind}: took {took:?}");
            }
        }
    }
}

#[test]
fn server_stopping_mid_reply_or_after_its_greeting_is_temporary_never_rejected() {
    let imap_greeted = |c: &mut Conn| c.send(IMAP_CAPS);
    let cases = vec![
        case(
            "imap: greeting cut",
            Op::Auth,
            &[],
            closing_after(at_connect, b"* OK [CAPABILITY IMAP4rev1 AUTH=PL"),
        ),
        case(
            "imap: closed after greeting",
            Op::Auth,
            &[],
            closing_after(at_connect, b"* OK ready\r\n"),
        ),
        case(
            "imap: closed after greeting with capabilities",
            Op::Auth,
            &[],
            closing_after(imap_greeted, b""),
        ),
        case(
            "imap: capability reply cut",
            Op::Auth,
            &[],
            closing_after(
                imap_to_capability,
                b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 O",
            ),
        ),
        case("imap: auth NO reply cut", Op::Auth, &[], |c| {
            let tag = imap_to_auth(c)?;
            c.send_raw(format!("{tag} NO [AUTHENTICATIONFAILED] Authentica").as_bytes())?;
            c.close();
            Ok(())
        }),
        case(
            "imap: closed instead of auth reply",
            Op::Auth,
            &[],
            closing_after(imap_to_auth, b""),
        ),
        case(
            "imap: untagged lines then closed",
            Op::Auth,
            &[],
            closing_after(imap_to_auth, b"* OK still working\r\n* NO [ALERT] hm\r\n"),
        ),
        case(
            "smtp: greeting cut",
            Op::Rcpt,
            &[],
            closing_after(at_connect, b"220 mx.exam"),
        ),
        case(
            "smtp: multi-line greeting cut",
            Op::Rcpt,
            &[],
            closing_after(at_connect, b"220-mx.example.org\r\n220-more\r\n"),
        ),
        case(
            "smtp: closed after greeting",
            Op::Rcpt,
            &[],
            closing_after(|c: &mut Conn| c.send(SMTP_GREETING), b""),
        ),
        case(
            "lmtp: closed after greeting",
            Op::Rcpt,
            &[],
            closing_after(|c: &mut Conn| c.send(LMTP_GREETING), b""),
        ),
        case(
            "smtp: EHLO reply cut",
            Op::Auth,
            &[],
            closing_after(
                smtp_to_ehlo,
                b"250-mx.example.org\r\n250-AUTH PLAIN\r\n250-PIPE",
            ),
        ),
        case(
            "smtp: 535 cut before CRLF",
            Op::Auth,
            &[],
            closing_after(smtp_to_auth, b"535 5.7.8 Error: authentication failed"),
        ),
        case(
            "smtp: multi-line 535 cut",
            Op::Auth,
            &[],
            closing_after(smtp_to_auth, b"535-5.7.8 Error: authentication failed\r\n"),
        ),
        case(
            "smtp: closed instead of auth reply",
            Op::Auth,
            &[],
            closing_after(smtp_to_auth, b""),
        ),
        case(
            "smtp: 550 cut before CRLF",
            Op::Rcpt,
            &[],
            closing_after(
                smtp_to_rcpt,
                b"250 2.1.0 Ok\r\n550 5.1.1 <alice@example.org>: User unkn",
            ),
        ),
        case(
            "smtp: multi-line 550 cut",
            Op::Rcpt,
            &[],
            closing_after(smtp_to_rcpt, b"250 2.1.0 Ok\r\n550-5.1.1 User unknown\r\n"),
        ),
        case(
            "smtp: closed instead of RCPT reply",
            Op::Rcpt,
            &[],
            closing_after(smtp_to_rcpt, b"250 2.1.0 Ok\r\n"),
        ),
        case(
            "lmtp: 550 cut before CRLF",
            Op::Rcpt,
            &[],
            closing_after(lmtp_to_rcpt, b"550 5.1.1 <alice@example.org> User doesn't"),
        ),
    ];
    let outcomes = run_all(cases);
    assert_temporary(&outcomes, Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// stalls

/// A listener on 127.0.0.1 whose accept queue is full: further SYNs are dropped, so a
/// connect to it neither succeeds nor fails until the client gives up. Keep the returned
/// values alive for as long as the stall is needed.
fn full_backlog_listener() -> (TcpListener, Vec<TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; it is handed to a
    // TcpListener, which closes it.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let rc = libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        // Backlog 0: the queue holds one connection; the SYN of the next is dropped.
        assert_eq!(
            libc::listen(fd, 0),
            0,
            "listen: {}",
            std::io::Error::last_os_error()
        );
        listener
    };
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => return (listener, fillers),
        }
    }
    panic!("the accept queue of {addr} never filled: SYNs are not dropped here");
}

#[test]
fn connect_to_a_listener_that_drops_syns_times_out_within_the_timeout() {
    let (listener, _fillers) = full_backlog_listener();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_secs(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = [("imap", Op::Auth), ("smtp", Op::Rcpt), ("lmtp", Op::Rcpt)]
            .into_iter()
            .map(|(kind, op)| {
                s.spawn(move || {
                    let dir = CDirectory::open_text(
                        &text_config(kind, port, "").replace("\"2s\"", "\"1s\""),
                    );
                    let (result, raw, took) = call(&dir, op);
                    (kind, result, String::from_utf8(raw).unwrap(), took)
                })
            })
            .collect();
        for h in handles {
            let (kind, result, message, took) = h.join().unwrap();
            eprintln!("connect stall {kind}: {} ms {message}", took.as_millis());
            assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{kind}: {message}");
            assert!(message.contains("timed out"), "{kind}: {message}");
            assert!(
                took >= timeout - Duration::from_millis(50) && took <= timeout + MARGIN,
                "{kind}: took {took:?}"
            );
        }
    });
}

#[test]
fn a_stall_at_every_step_is_temporary_within_the_timeout() {
    let ca = ca_file_line();
    let t = ["timeout = \"1s\"", ca.as_str()];
    let ti = ["timeout = \"1s\"", ca.as_str(), "tls.implicit = true"];
    let cases = vec![
        case("imap: greeting", Op::Auth, &t, stalling_after(at_connect)),
        case(
            "imap: implicit TLS handshake",
            Op::Auth,
            &ti,
            stalling_after(at_connect),
        ),
        case(
            "imap: CAPABILITY reply",
            Op::Auth,
            &t,
            stalling_after(imap_to_capability),
        ),
        case(
            "imap: STARTTLS reply",
            Op::Auth,
            &t,
            stalling_after(imap_to_starttls),
        ),
        case(
            "imap: TLS handshake after STARTTLS",
            Op::Auth,
            &t,
            stalling_after(imap_at_handshake),
        ),
        case(
            "imap: CAPABILITY reply after TLS",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                imap_at_handshake(c)?;
                c.start_tls()?;
                c.expect_imap("CAPABILITY")
            }),
        ),
        case(
            "imap: auth reply (TLS)",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                imap_to_tls(c)?;
                c.expect_imap("AUTHENTICATE PLAIN")
            }),
        ),
        // Without SASL-IR: the client waits for the continuation request.
        case(
            "imap: continuation request",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")?;
                c.expect_imap("AUTHENTICATE PLAIN")
            }),
        ),
        case(
            "imap: LOGIN reply",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                c.send("* OK [CAPABILITY IMAP4rev1] ready")?;
                c.expect_imap("LOGIN")
            }),
        ),
        case("smtp: greeting", Op::Auth, &t, stalling_after(at_connect)),
        case(
            "smtp: implicit TLS handshake",
            Op::Auth,
            &ti,
            stalling_after(at_connect),
        ),
        case(
            "smtp: multi-line greeting",
            Op::Rcpt,
            &t,
            stalling_after(|c: &mut Conn| c.send("220-mx.example.org ESMTP")),
        ),
        case(
            "smtp: EHLO reply",
            Op::Rcpt,
            &t,
            stalling_after(smtp_to_ehlo),
        ),
        case(
            "lmtp: LHLO reply",
            Op::Rcpt,
            &t,
            stalling_after(lmtp_to_lhlo),
        ),
        case(
            "smtp: STARTTLS reply",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_hello(c, &["STARTTLS"])?;
                c.expect("STARTTLS")
            }),
        ),
        case(
            "smtp: TLS handshake after STARTTLS",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| smtp_at_handshake(c, &["STARTTLS"])),
        ),
        case(
            "smtp: EHLO reply after TLS",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_at_handshake(c, &["STARTTLS"])?;
                c.start_tls()?;
                c.expect("EHLO")
            }),
        ),
        case(
            "smtp: AUTH reply (TLS)",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_to_tls(c, &["AUTH PLAIN LOGIN"])?;
                c.expect("AUTH PLAIN")
            }),
        ),
        case(
            "smtp: AUTH LOGIN challenge (TLS)",
            Op::Auth,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_to_tls(c, &["AUTH LOGIN"])?;
                c.expect("AUTH LOGIN")
            }),
        ),
        case(
            "smtp: MAIL reply (no pipelining)",
            Op::Rcpt,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_to_tls(c, &["8BITMIME"])?;
                c.expect("MAIL FROM")
            }),
        ),
        case(
            "smtp: RCPT reply (TLS)",
            Op::Rcpt,
            &t,
            stalling_after(|c: &mut Conn| {
                smtp_to_tls(c, &["PIPELINING"])?;
                c.expect("MAIL FROM")?;
                c.expect("RCPT TO")?;
                c.send("250 2.1.0 Ok")
            }),
        ),
        case(
            "lmtp: RCPT reply",
            Op::Rcpt,
            &t,
            stalling_after(lmtp_to_rcpt),
        ),
    ];
    let outcomes = run_all(cases);
    assert_temporary(&outcomes, Duration::from_secs(1) + MARGIN);
    for o in &outcomes {
        let message = o.message();
        assert!(message.contains("timed out"), "{}: {message}", o.name);
        assert!(
            o.took >= Duration::from_millis(950),
            "{}: gave up early, after {:?}",
            o.name,
            o.took
        );
    }
    let worst = outcomes.iter().map(|o| o.took).max().unwrap();
    eprintln!("stalls: {} cases, slowest {worst:?}", outcomes.len());
}

#[test]
fn a_stall_on_a_reused_connection_is_bounded_by_the_new_calls_deadline() {
    // The first probe is answered; the second, on the same idle connection, never is.
    let peer = Peer::start(|c| {
        smtp_to_rcpt(c)?;
        c.send_lines(&["250 2.1.0 Ok", "250 2.1.5 Ok"])?;
        c.expect("RCPT TO")?;
        c.stall(STALL)
    });
    // The cache (on by default) would answer the second probe of the same address itself.
    let dir = CDirectory::open("smtp", &peer, &["timeout = \"1s\"", "cache.size = false"]);
    assert_eq!(call(&dir, Op::Rcpt).0, DIRECTORY_RESULT_OK);
    // Idle for longer than the timeout: the deadline is the new call's, not the old one's.
    std::thread::sleep(Duration::from_millis(1200));
    let (result, raw, took) = call(&dir, Op::Rcpt);
    let message = String::from_utf8(raw).unwrap();
    assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(
        took >= Duration::from_millis(950) && took <= Duration::from_secs(1) + MARGIN,
        "took {took:?}"
    );
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.connections(), 1);
}

// ---------------------------------------------------------------------------------------
// slow drip: the timeout bounds the whole call, not each read

#[test]
fn a_slow_drip_is_cut_by_the_call_deadline_not_only_per_read() {
    let t2 = ["timeout = \"2s\""];
    let ms = Duration::from_millis;
    let cases = vec![
        case(
            "imap: greeting, 1 byte / 250 ms",
            Op::Auth,
            &t2,
            stalling_after(move |c: &mut Conn| {
                drip(
                    c,
                    b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] Dovecot ready.\r\n",
                    ms(250),
                )
            }),
        ),
        // Each byte comes well within any per-read timeout of 2 s.
        case(
            "smtp: greeting, 1 byte / 1000 ms",
            Op::Rcpt,
            &t2,
            stalling_after(move |c: &mut Conn| drip(c, b"220 mx.example.org ESMTP\r\n", ms(1000))),
        ),
        case(
            "smtp: EHLO lines, 1 line / 400 ms",
            Op::Rcpt,
            &t2,
            stalling_after(move |c: &mut Conn| {
                smtp_to_ehlo(c)?;
                drip_lines(c, (0..100).map(|i| format!("250-X-KEYWORD-{i}")), ms(400))
            }),
        ),
        case(
            "imap: untagged lines, 1 / 300 ms",
            Op::Auth,
            &t2,
            stalling_after(move |c: &mut Conn| {
                imap_to_auth(c)?;
                drip_lines(
                    c,
                    (0..100).map(|_| "* OK still thinking".to_owned()),
                    ms(300),
                )
            }),
        ),
        case(
            "lmtp: RCPT reply, 1 byte / 200 ms",
            Op::Rcpt,
            &t2,
            stalling_after(move |c: &mut Conn| {
                lmtp_to_rcpt(c)?;
                drip(c, b"250 2.1.5 OK, after a long think\r\n", ms(200))
            }),
        ),
        case(
            "smtp: every step 700 ms (3 steps > 2 s)",
            Op::Rcpt,
            &t2,
            stalling_after(move |c: &mut Conn| {
                let step = ms(700);
                c.pause(step)?;
                c.send(SMTP_GREETING)?;
                c.expect("EHLO")?;
                c.pause(step)?;
                smtp_ehlo_reply(c, &["8BITMIME"])?;
                c.expect("MAIL FROM")?;
                c.pause(step)?;
                c.send("250 2.1.0 Ok")?;
                c.expect("RCPT TO")?;
                c.pause(step)?;
                c.send("250 2.1.5 Ok")
            }),
        ),
    ];
    let outcomes = run_all(cases);
    assert_temporary(&outcomes, Duration::from_secs(2) + MARGIN);
    for o in &outcomes {
        assert!(
            o.message().contains("timed out"),
            "{}: {}",
            o.name,
            o.message()
        );
    }
}

// ---------------------------------------------------------------------------------------
// hostile bytes in replies

#[test]
fn invalid_utf8_nul_and_escapes_in_replies_leave_a_clean_c_string() {
    let cases = vec![
        case("imap: NUL and 0xff in the greeting", Op::Auth, &[], |c| {
            c.send_raw(
                b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] \xff\xfe\0\x1b[2J\x07 ready\r\n",
            )?;
            let (tag, _) = c.expect_imap("AUTHENTICATE")?;
            c.send_raw(format!("{tag} NO [UNAVAILABLE] \u{0}").as_bytes())?;
            c.send_raw(b"\xc3\x28\xa0\xa1 \x1b]0;owned\x07 bad\rtext\r\n")?;
            c.expect_imap("LOGOUT").map(|_| ())
        }),
        case(
            "imap: binary garbage greeting",
            Op::Auth,
            &[],
            stalling_after_reply(at_connect, b"\0\0\0\xff\xfe\x00garbage\x1b[31m\r\n"),
        ),
        case(
            "smtp: binary garbage greeting",
            Op::Rcpt,
            &[],
            stalling_after_reply(at_connect, b"\xff\xfe\0\0 220 hello\x1b[0m\r\n"),
        ),
        case("smtp: NUL in the EHLO reply", Op::Rcpt, &[], |c| {
            smtp_to_ehlo(c)?;
            c.send_raw(b"250-mx\0.example.org\r\n250-PIPE\0LINING\xff\r\n250 8BIT\x1bMIME\r\n")?;
            c.expect("MAIL FROM")?;
            c.send_raw(b"451 4.3.0 \xff\xfe\0 try \x1b[5mlater\r\n")?;
            c.stall(STALL)
        }),
        case(
            "smtp: 454 with bad bytes to AUTH",
            Op::Auth,
            &[],
            stalling_after_reply(
                smtp_to_auth,
                b"454-4.7.0 \xe2\x28\xa1\0\r\n454 4.7.0 \x7f\x1b[H\r\n",
            ),
        ),
    ];
    let outcomes = run_all(cases);
    assert_temporary(&outcomes, Duration::from_secs(5) + MARGIN);
    // The same bytes in replies that decide: REJECTED, and still a clean message.
    let cases = vec![
        case("imap: NO with bad bytes", Op::Auth, &[], |c| {
            let tag = imap_to_auth(c)?;
            c.send_raw(format!("{tag} NO [AUTHENTICATIONFAILED] \u{0}\u{1b}[31m").as_bytes())?;
            c.send_raw(b" \xff\xfe\xc0\xaf fail\r\n")?;
            c.stall(STALL)
        }),
        case("smtp: 550 with bad bytes", Op::Rcpt, &[], stalling_after_reply(smtp_to_rcpt, b"250 2.1.0 Ok\r\n550-5.1.1 \0\xff\xfe\r\n550 5.1.1 \x1b[2J\x08\x08 unknown \xed\xa0\x80\r\n")),
        case("smtp: 535 with bad bytes", Op::Auth, &[], stalling_after_reply(smtp_to_auth, b"535 5.7.8 \0\0\xf8\x88\x80\x80\x80 \x1b[1mno\r\n")),
    ];
    for o in run_all(cases) {
        let message = o.message();
        eprintln!("{:<44} {message}", o.name);
        assert_eq!(o.result, DIRECTORY_RESULT_REJECTED, "{}: {message}", o.name);
        assert!(message.contains('\u{fffd}'), "{}: {message}", o.name);
    }
}

// ---------------------------------------------------------------------------------------
// TLS failures

/// Answers EHLO, AUTH (235), MAIL/RCPT (250) and QUIT after a successful handshake, so a
/// test that expected the handshake to fail sees what the client sent.
fn smtp_serve_after_tls(c: &mut Conn) -> PeerResult {
    loop {
        let line = c.next_line()?;
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "LHLO" => smtp_ehlo_reply(c, &["PIPELINING", "AUTH PLAIN"])?,
            "AUTH" => c.send("235 2.7.0 Authentication successful")?,
            "QUIT" => return c.send("221 2.0.0 Bye"),
            _ => c.send("250 2.0.0 Ok")?,
        }
    }
}

/// SMTP with STARTTLS whose handshake uses `config`.
fn smtp_starttls_with(config: Arc<ServerConfig>) -> impl Fn(&mut Conn) -> PeerResult {
    move |c| {
        smtp_at_handshake(c, &["STARTTLS", "AUTH PLAIN"])?;
        match c.start_tls_with(config.clone()) {
            Ok(()) => smtp_serve_after_tls(c),
            // The client refused the certificate: the test checks that it sent nothing.
            Err(PeerError::Tls(_)) | Err(PeerError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// IMAP with implicit TLS whose handshake uses `config`.
fn imap_implicit_with(config: Arc<ServerConfig>) -> impl Fn(&mut Conn) -> PeerResult {
    move |c| {
        match c.start_tls_with(config.clone()) {
            Ok(()) => {}
            Err(PeerError::Tls(_)) | Err(PeerError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
        c.send(IMAP_CAPS)?;
        loop {
            let line = c.next_line()?;
            let tag = line.split(' ').next().unwrap_or_default().to_owned();
            if line.to_ascii_uppercase().contains(" LOGOUT") {
                return c.send_lines(&["* BYE bye", &format!("{tag} OK done")]);
            }
            c.send(&format!("{tag} OK Logged in"))?;
        }
    }
}

/// SMTP up to the client's ClientHello after STARTTLS (waits up to 5 s for it).
fn client_hello_after_starttls(c: &mut Conn) -> PeerResult<bool> {
    smtp_at_handshake(c, &["STARTTLS"])?;
    c.data_within(Duration::from_secs(5))
}

#[test]
fn tls_failures_are_temporary_and_send_no_credentials() {
    let ca = ca_file_line();
    let with_ca = [ca.as_str()];
    let implicit = [ca.as_str(), "tls.implicit = true"];
    let no_ca: [&str; 0] = [];
    let local = || server_config(&["localhost", "127.0.0.1"], Validity::Current);
    let other = || server_config(&["mx.other.example"], Validity::Current);
    let expired = || server_config(&["localhost", "127.0.0.1"], Validity::Expired);
    let future = || server_config(&["localhost", "127.0.0.1"], Validity::NotYetValid);
    let cases = vec![
        case(
            "smtp: certificate for another host",
            Op::Auth,
            &with_ca,
            smtp_starttls_with(other()),
        ),
        case(
            "imap: certificate for another host",
            Op::Auth,
            &implicit,
            imap_implicit_with(other()),
        ),
        case(
            "smtp: expired certificate",
            Op::Auth,
            &with_ca,
            smtp_starttls_with(expired()),
        ),
        case(
            "imap: expired certificate",
            Op::Auth,
            &implicit,
            imap_implicit_with(expired()),
        ),
        case(
            "smtp: certificate not yet valid",
            Op::Auth,
            &with_ca,
            smtp_starttls_with(future()),
        ),
        case(
            "smtp: unknown CA (no tls.ca-file)",
            Op::Auth,
            &no_ca,
            smtp_starttls_with(local()),
        ),
        case(
            "imap: unknown CA (no tls.ca-file)",
            Op::Auth,
            &["tls.implicit = true"],
            imap_implicit_with(local()),
        ),
        case(
            "smtp: fatal alert instead of a handshake",
            Op::Auth,
            &with_ca,
            // After the ClientHello: a fatal handshake_failure alert record.
            stalling_after_reply(
                client_hello_after_starttls,
                &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
            ),
        ),
        case(
            "smtp: connection closed in the handshake",
            Op::Rcpt,
            &with_ca,
            closing_after(client_hello_after_starttls, b""),
        ),
        case(
            "imap: plain text instead of implicit TLS",
            Op::Auth,
            &implicit,
            stalling_after(|c: &mut Conn| {
                c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain text server")
            }),
        ),
    ];
    let outcomes = run_all(cases);
    assert_temporary(&outcomes, Duration::from_secs(5));
    for o in &outcomes {
        let message = o.message();
        assert!(
            o.credential_lines().is_empty(),
            "{}: credentials sent: {:?}",
            o.name,
            o.credential_lines()
        );
        assert!(
            message.contains("TLS") || message.contains("certificate"),
            "{}: {message}",
            o.name
        );
    }
    let by_name = |n: &str| outcomes.iter().find(|o| o.name == n).unwrap().message();
    assert!(
        by_name("smtp: expired certificate").contains("xpired"),
        "{}",
        by_name("smtp: expired certificate")
    );
    assert!(
        by_name("smtp: certificate for another host").contains("not valid for name"),
        "{}",
        by_name("smtp: certificate for another host")
    );
    // The same peers with `tls.allow-invalid-certs = true`: the handshake completes and the
    // dialogue goes on, which shows that the failures above came from verification.
    let dangerous = ["tls.allow-invalid-certs = true"];
    let dangerous_implicit = ["tls.allow-invalid-certs = true", "tls.implicit = true"];
    let cases = vec![
        case(
            "smtp: another host, verification off",
            Op::Auth,
            &dangerous,
            smtp_starttls_with(other()),
        ),
        case(
            "imap: expired, verification off",
            Op::Auth,
            &dangerous_implicit,
            imap_implicit_with(expired()),
        ),
    ];
    for o in run_all(cases) {
        assert_eq!(o.result, DIRECTORY_RESULT_OK, "{}: {}", o.name, o.message());
    }
}
