//! Hostile input through the C API: NULL in every pointer, bytes that are not UTF-8, CR, LF
//! and other control characters, NUL (through the Rust API: a C string cannot hold one),
//! over-long values, `directory_close(NULL)`, odd configuration paths. Every refused call is
//! INVALID_INPUT (or CONFIG), names the argument, never echoes a secret, and the scripted
//! peers behind the handles receive nothing: not a connection.
//!
//! Values that are valid but look like protocol syntax (quotes, literals, `*`, tags) reach
//! the server exactly as given, which the peers check by authenticating them.

mod peer;

use peer::{
    c_last_error, config, CDirectory, ImapServer, Peer, SmtpServer, IMAP_CAPS_OF_EVERY_MECHANISM,
};
use remote_directory::ffi::{self, directory_result, directory_result::*};
use remote_directory::{
    Directory, Kind, DIRECTORY_MAX_ADDRESS, DIRECTORY_MAX_DOMAIN, DIRECTORY_MAX_SECRET,
    DIRECTORY_MAX_USER,
};
use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::time::Duration;

const ALICE: &str = "alice@example.org";
const SECRET: &str = "hostile-input-secret";

fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL inside")
}

/// Values every string argument must refuse, as (label, bytes).
fn bad_values(max: usize) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), b"".to_vec()),
        ("lone 0xff".into(), b"alice\xff@example.org".to_vec()),
        (
            "overlong '/' (C0 AF)".into(),
            b"a\xc0\xafb@example.org".to_vec(),
        ),
        (
            "UTF-16 surrogate".into(),
            b"a\xed\xa0\x80@example.org".to_vec(),
        ),
        (
            "truncated sequence".into(),
            b"alice@example.org\xe2\x82".to_vec(),
        ),
        ("Latin-1 e-acute".into(), b"ren\xe9@example.org".to_vec()),
        ("CR".into(), b"alice@example.org\rQUIT".to_vec()),
        ("LF".into(), b"alice@example.org\nQUIT".to_vec()),
        (
            "CRLF + command".into(),
            b"alice@example.org\r\nRCPT TO:<root@example.org>".to_vec(),
        ),
        ("CRLF + IMAP command".into(), b"alice\r\na9 LOGOUT".to_vec()),
        ("CRLF at the end".into(), b"alice@example.org\r\n".to_vec()),
        (format!("{} bytes", max + 1), vec![b'a'; max + 1]),
        ("1 MiB".into(), vec![b'a'; 1 << 20]),
    ];
    v.push((
        "overlong and not UTF-8".into(),
        [vec![b'a'; max], vec![0xff]].concat(),
    ));
    v
}

/// Values refused in user, address and domain (not in a secret, which may hold any
/// character but NUL, CR and LF).
fn bad_text_values() -> Vec<(String, Vec<u8>)> {
    vec![
        ("ESC".into(), b"al\x1b[2Jice@example.org".to_vec()),
        ("TAB".into(), b"al\tice@example.org".to_vec()),
        ("DEL".into(), b"al\x7fice@example.org".to_vec()),
        (
            "NEL U+0085".into(),
            "al\u{85}ice@example.org".as_bytes().to_vec(),
        ),
        ("BEL".into(), b"alice\x07@example.org".to_vec()),
    ]
}

fn check_invalid(what: &str, label: &str, result: directory_result, secret_in_play: bool) {
    let message = c_last_error();
    assert_eq!(
        result, DIRECTORY_RESULT_INVALID_INPUT,
        "{what} {label}: {message}"
    );
    assert!(!message.is_empty(), "{what} {label}: empty last error");
    if secret_in_play {
        assert!(
            !message.contains(SECRET),
            "{what} {label}: echoes the secret"
        );
        assert!(
            !message.contains("aaaa"),
            "{what} {label}: echoes the value"
        );
    }
}

/// Peers that count connections: whatever these handles are asked, nothing reaches them.
fn silent_peers() -> (Peer, Peer, Peer) {
    (
        ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start(),
        SmtpServer::smtp(&["AUTH PLAIN", "PIPELINING"]).start(),
        SmtpServer::lmtp(&["PIPELINING"]).start(),
    )
}

#[test]
fn null_in_every_pointer_is_invalid_input_and_sends_nothing() {
    let (imap, smtp, lmtp) = silent_peers();
    let dirs = [
        CDirectory::open("imap", &imap, &[]),
        CDirectory::open("smtp", &smtp, &["lookup.domains = [\"example.org\"]"]),
        CDirectory::open("lmtp", &lmtp, &[]),
    ];
    let s = cstr(ALICE.as_bytes());
    let null = ptr::null::<c_char>();
    for dir in &dirs {
        let d = dir.as_ptr();
        for (label, r) in [
            (
                "auth(dir, NULL, secret)",
                ffi::directory_auth(d, null, s.as_ptr()),
            ),
            (
                "auth(dir, user, NULL)",
                ffi::directory_auth(d, s.as_ptr(), null),
            ),
            ("auth(dir, NULL, NULL)", ffi::directory_auth(d, null, null)),
            ("rcpt(dir, NULL)", ffi::directory_rcpt(d, null)),
            (
                "is_local_domain(dir, NULL)",
                ffi::directory_is_local_domain(d, null),
            ),
        ] {
            check_invalid("NULL", label, r, false);
        }
    }
    let nd = ptr::null_mut::<ffi::directory>();
    for (label, r) in [
        (
            "auth(NULL, ..)",
            ffi::directory_auth(nd, s.as_ptr(), s.as_ptr()),
        ),
        (
            "auth(NULL, NULL, NULL)",
            ffi::directory_auth(nd, null, null),
        ),
        ("rcpt(NULL, ..)", ffi::directory_rcpt(nd, s.as_ptr())),
        ("rcpt(NULL, NULL)", ffi::directory_rcpt(nd, null)),
        (
            "is_local_domain(NULL, ..)",
            ffi::directory_is_local_domain(nd, s.as_ptr()),
        ),
    ] {
        check_invalid("NULL", label, r, false);
        assert!(c_last_error().contains("handle is NULL"), "{label}");
    }
    // Opening: NULL text, path or out; *out untouched on failure.
    let text = cstr(config("imap", &imap, &[]).as_bytes());
    let sentinel = 0x5a5a_usize as *mut ffi::directory;
    let mut out = sentinel;
    for (label, r) in [
        ("open(NULL, ..)", ffi::directory_open(null, null, &mut out)),
        (
            "open_str(NULL, ..)",
            ffi::directory_open_str(null, null, &mut out),
        ),
        (
            "open_str(text, NULL, NULL)",
            ffi::directory_open_str(text.as_ptr(), null, ptr::null_mut()),
        ),
        (
            "open(path, NULL, NULL)",
            ffi::directory_open(s.as_ptr(), null, ptr::null_mut()),
        ),
    ] {
        check_invalid("NULL", label, r, false);
    }
    assert_eq!(out, sentinel, "*out is written only on OK");
    // NULL is a no-op for close, many times over.
    for _ in 0..3 {
        ffi::directory_close(ptr::null_mut());
    }
    // The static strings never fail.
    for r in [0, 1, 6, 7, 99, u32::MAX] {
        // SAFETY: directory_result_name returns a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(ffi::directory_result_name(r)) };
        assert!(!name.to_bytes().is_empty(), "{r}");
    }
    // SAFETY: as above.
    assert!(!unsafe { CStr::from_ptr(ffi::directory_version()) }
        .to_bytes()
        .is_empty());
    drop(dirs);
    for (name, peer) in [("imap", &imap), ("smtp", &smtp), ("lmtp", &lmtp)] {
        assert_eq!(peer.connections(), 0, "{name} peer was contacted");
    }
}

#[test]
fn bad_bytes_and_overlong_values_in_every_argument_send_nothing() {
    let (imap, smtp, lmtp) = silent_peers();
    let dirs = [
        ("imap", CDirectory::open("imap", &imap, &[])),
        (
            "smtp",
            CDirectory::open("smtp", &smtp, &["lookup.domains = [\"example.org\"]"]),
        ),
        ("lmtp", CDirectory::open("lmtp", &lmtp, &[])),
    ];
    let good_user = cstr(ALICE.as_bytes());
    let good_secret = cstr(SECRET.as_bytes());
    let mut calls = 0;
    for (kind, dir) in &dirs {
        let d = dir.as_ptr();
        for (label, bytes) in bad_values(DIRECTORY_MAX_USER)
            .into_iter()
            .chain(bad_text_values())
        {
            let v = cstr(&bytes);
            let r = ffi::directory_auth(d, v.as_ptr(), good_secret.as_ptr());
            check_invalid(&format!("{kind} user"), &label, r, true);
            calls += 1;
        }
        for (label, bytes) in bad_values(DIRECTORY_MAX_SECRET) {
            let mut bytes = bytes;
            // The secret itself in the value: a message must not repeat it.
            bytes.splice(0..0, SECRET.bytes());
            if label == "empty" {
                bytes.clear();
            }
            let v = cstr(&bytes);
            let r = ffi::directory_auth(d, good_user.as_ptr(), v.as_ptr());
            check_invalid(&format!("{kind} secret"), &label, r, true);
            calls += 1;
        }
        for (label, bytes) in bad_values(DIRECTORY_MAX_ADDRESS)
            .into_iter()
            .chain(bad_text_values())
            .chain([
                ("'<'".to_string(), b"<alice@example.org".to_vec()),
                (
                    "'>' + parameter".to_string(),
                    b"alice@example.org> NOTIFY=NEVER".to_vec(),
                ),
                ("space".to_string(), b"alice@example.org SIZE=1".to_vec()),
                ("open quote".to_string(), b"\"alice@example.org".to_vec()),
            ])
        {
            let v = cstr(&bytes);
            let r = ffi::directory_rcpt(d, v.as_ptr());
            // IMAP directories refuse rcpt anyway; bad input is still reported as such.
            check_invalid(&format!("{kind} address"), &label, r, false);
            calls += 1;
        }
        for (label, bytes) in bad_values(DIRECTORY_MAX_DOMAIN)
            .into_iter()
            .chain(bad_text_values())
        {
            let v = cstr(&bytes);
            let r = ffi::directory_is_local_domain(d, v.as_ptr());
            check_invalid(&format!("{kind} domain"), &label, r, false);
            calls += 1;
        }
    }
    eprintln!("{calls} refused calls");
    drop(dirs);
    for (name, peer) in [("imap", &imap), ("smtp", &smtp), ("lmtp", &lmtp)] {
        assert_eq!(peer.connections(), 0, "{name} peer was contacted");
    }
}

#[test]
fn nul_inside_a_value_is_invalid_input_through_the_rust_api() {
    // C cannot pass a NUL inside a string (it ends it); Rust, Python and others can.
    let (imap, smtp, _lmtp) = silent_peers();
    let idir = Directory::open_str(&config("imap", &imap, &[]), None).unwrap();
    let sdir = Directory::open_str(&config("smtp", &smtp, &[]), None).unwrap();
    for (label, result) in [
        ("user", idir.auth("alice\0a9 LOGOUT", SECRET)),
        ("secret", idir.auth(ALICE, "secret\0more")),
        ("address", sdir.rcpt("alice@example.org\0")),
        ("domain", sdir.is_local_domain("example.org\0evil")),
        ("smtp user", sdir.auth("\0", SECRET)),
    ] {
        let e = result.unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{label}: {e}");
        assert!(!e.to_string().contains("secret\0"), "{label}");
    }
    drop((idir, sdir));
    assert_eq!(imap.connections() + smtp.connections(), 0);
}

#[test]
fn values_at_the_length_limits_are_sent_and_answered() {
    let user = format!("{}@example.org", "u".repeat(DIRECTORY_MAX_USER - 12));
    assert_eq!(user.len(), DIRECTORY_MAX_USER);
    let secret = "s".repeat(DIRECTORY_MAX_SECRET);
    let imap = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR")
        .user(&user, &secret)
        .start();
    let dir = CDirectory::open("imap", &imap, &[]);
    let (r, message) = dir.auth(&user, &secret);
    assert_eq!(r, DIRECTORY_RESULT_OK, "{message}");
    let address = format!("{}@example.org", "a".repeat(DIRECTORY_MAX_ADDRESS - 12));
    let mut server = SmtpServer::lmtp(&["PIPELINING"]);
    server.recipients.push(address.clone());
    let lmtp = server.start();
    let ldir = CDirectory::open(
        "lmtp",
        &lmtp,
        &[&format!(
            "lookup.domains = [\"{}\"]",
            "d".repeat(DIRECTORY_MAX_DOMAIN)
        )],
    );
    assert_eq!(
        ldir.rcpt(&address).0,
        DIRECTORY_RESULT_OK,
        "{}",
        c_last_error()
    );
    let domain = cstr("D".repeat(DIRECTORY_MAX_DOMAIN).as_bytes());
    assert_eq!(
        ffi::directory_is_local_domain(ldir.as_ptr(), domain.as_ptr()),
        DIRECTORY_RESULT_OK
    );
    drop((dir, ldir));
    imap.wait_all_ended();
    lmtp.wait_all_ended();
    imap.assert_clean();
    lmtp.assert_clean();
}

#[test]
fn protocol_syntax_inside_valid_values_reaches_the_server_verbatim() {
    // Each value must arrive as exactly this user and password, whatever the mechanism:
    // quoted strings, literals, SASL base64. The peers authenticate only the exact pair.
    let tricky = [
        ("a9 LOGOUT", "x\" a9 LOGOUT"),
        ("{5}", "{5+}"),
        ("\"quoted\"", "back\\slash\\"),
        ("*", "*"),
        ("user name", " leading and trailing "),
        ("jörg@exämple.org", "pä\"ss {3}\\"),
        ("=?utf-8?b?YWxpY2U=?=", "AGFsaWNlAHB3"),
    ];
    for caps in IMAP_CAPS_OF_EVERY_MECHANISM {
        let mut server = ImapServer::new(caps);
        for (u, p) in tricky {
            server = server.user(u, p);
        }
        let peer = server.start();
        let dir = CDirectory::open("imap", &peer, &[]);
        for (u, p) in tricky {
            let (r, message) = dir.auth(u, p);
            assert_eq!(r, DIRECTORY_RESULT_OK, "{caps}: {u:?}/{p:?}: {message}");
        }
        drop(dir);
        peer.wait_all_ended();
        peer.assert_clean();
        // One login per connection: nothing was split into extra commands.
        for commands in peer.all_commands() {
            assert!(commands.len() <= 5, "{caps}: {commands:?}");
        }
    }
    for ehlo in [["AUTH PLAIN"], ["AUTH LOGIN"]] {
        let mut server = SmtpServer::smtp(&ehlo);
        for (u, p) in tricky {
            server.users.push((u.to_string(), p.to_string()));
        }
        let peer = server.start();
        let dir = CDirectory::open("smtp", &peer, &[]);
        for (u, p) in tricky {
            let (r, message) = dir.auth(u, p);
            assert_eq!(r, DIRECTORY_RESULT_OK, "{ehlo:?}: {u:?}/{p:?}: {message}");
        }
        drop(dir);
        peer.wait_all_ended();
        peer.assert_clean();
    }
    // A quoted local part with spaces is one valid address, sent as one RCPT.
    let mut server = SmtpServer::smtp(&["PIPELINING", "SMTPUTF8"]);
    server.recipients.push("\"john doe\"@example.org".into());
    let peer = server.start();
    let dir = CDirectory::open("smtp", &peer, &[]);
    assert_eq!(dir.rcpt("\"john doe\"@example.org").0, DIRECTORY_RESULT_OK);
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(
        peer.commands(0)[2],
        "RCPT TO:<\"john doe\"@example.org>",
        "{:?}",
        peer.commands(0)
    );
}

#[test]
fn configuration_paths_that_are_not_files_are_config_errors_without_hanging() {
    let dir = std::env::temp_dir().join(format!("rd-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("config.fifo");
    let _ = std::fs::remove_file(&fifo);
    let fifo_c = cstr(fifo.to_str().unwrap().as_bytes());
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    let cases: Vec<(&str, Vec<u8>, directory_result)> = vec![
        (
            "a directory",
            dir.to_str().unwrap().as_bytes().to_vec(),
            DIRECTORY_RESULT_CONFIG,
        ),
        (
            "missing",
            b"/nonexistent/rd.toml".to_vec(),
            DIRECTORY_RESULT_CONFIG,
        ),
        ("empty path", b"".to_vec(), DIRECTORY_RESULT_CONFIG),
        (
            "not UTF-8",
            b"/tmp/\xff.toml".to_vec(),
            DIRECTORY_RESULT_INVALID_INPUT,
        ),
        (
            "4097 bytes",
            vec![b'/'; 4097],
            DIRECTORY_RESULT_INVALID_INPUT,
        ),
        // A FIFO nobody writes to: opening it for reading blocks forever.
        (
            "a FIFO",
            fifo.to_str().unwrap().as_bytes().to_vec(),
            DIRECTORY_RESULT_CONFIG,
        ),
        // A character device that never ends: reading it whole exhausts memory. Not run
        // here (it would take the test process down); see the FIFO case and RELIABILITY.md.
    ];
    let mut hung: Vec<String> = Vec::new();
    for (label, path, expected) in cases {
        let path = cstr(&path);
        let (tx, rx) = std::sync::mpsc::channel();
        let path_ptr = path.as_ptr() as usize;
        let worker = std::thread::spawn(move || {
            let mut out = ptr::null_mut();
            let r = ffi::directory_open(path_ptr as *const c_char, ptr::null(), &mut out);
            let _ = tx.send((r, c_last_error(), out.is_null()));
        });
        let outcome = rx.recv_timeout(Duration::from_secs(2));
        if outcome.is_err() {
            // Unblock the reader so the thread ends; report at the end.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            let _ = worker.join();
            hung.push(format!(
                "directory_open on {label} did not return within 2 s"
            ));
            continue;
        }
        worker.join().unwrap();
        let (r, message, out_null) = outcome.unwrap();
        assert_eq!(r, expected, "{label}: {message}");
        assert!(out_null, "{label}: *out written");
        assert!(!message.is_empty(), "{label}");
        drop(path);
    }
    // The same FIFO as `tls.ca-file`: read when the handle is opened.
    {
        let text = cstr(
            format!(
                "[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.ca-file = \"{}\"\n",
                fifo.display()
            )
            .as_bytes(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let text_ptr = text.as_ptr() as usize;
        let worker = std::thread::spawn(move || {
            let mut out = ptr::null_mut();
            let r = ffi::directory_open_str(text_ptr as *const c_char, ptr::null(), &mut out);
            let _ = tx.send((r, c_last_error()));
        });
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok((r, message)) => {
                worker.join().unwrap();
                assert_eq!(r, DIRECTORY_RESULT_CONFIG, "ca-file FIFO: {message}");
            }
            Err(_) => {
                let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
                let _ = worker.join();
                hung.push(
                    "directory_open_str with a FIFO as tls.ca-file did not return within 2 s"
                        .into(),
                );
            }
        }
        drop(text);
    }
    // Several directories and no name; a name that is not UTF-8; a name not defined.
    let two = cstr(b"[directory.a]\ntype = \"imap\"\naddress = \"h\"\n[directory.b]\ntype = \"lmtp\"\naddress = \"h\"\n");
    let mut out = ptr::null_mut();
    assert_eq!(
        ffi::directory_open_str(two.as_ptr(), ptr::null(), &mut out),
        DIRECTORY_RESULT_CONFIG
    );
    let bad_name = cstr(b"\xff");
    assert_eq!(
        ffi::directory_open_str(two.as_ptr(), bad_name.as_ptr(), &mut out),
        DIRECTORY_RESULT_INVALID_INPUT
    );
    let missing = cstr(b"c");
    assert_eq!(
        ffi::directory_open_str(two.as_ptr(), missing.as_ptr(), &mut out),
        DIRECTORY_RESULT_CONFIG
    );
    let bad_text = cstr(b"[directory.a]\ntype = \"imap\"\naddress = \"\xff\"\n");
    assert_eq!(
        ffi::directory_open_str(bad_text.as_ptr(), ptr::null(), &mut out),
        DIRECTORY_RESULT_INVALID_INPUT
    );
    assert!(out.is_null());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(hung.is_empty(), "{hung:#?}");
}
