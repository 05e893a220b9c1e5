//! Secrets: across many failing calls (wrong passwords, timeouts, protocol errors, TLS
//! errors, servers closing) against scripted peers and the real Dovecot and Postfix, no
//! error message, no `Debug` of an error and no line of the protocol trace
//! (`REMOTE_DIRECTORY_TRACE`) contains the password, its base64, or the base64 of the SASL
//! PLAIN message; and after the calls the password's bytes are found nowhere in the
//! process's writable memory (zeroized copies).
//!
//! The trace is chosen when a handle opens, from the environment: every test here holds
//! one lock, and the variable is set once under it before any handle exists.

mod common;
mod peer;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use peer::dialogue::{
    closing_after, imap_to_auth, smtp_hello, smtp_to_auth, stalling_after, stalling_after_reply,
};
use peer::{
    CDirectory, Conn, ImapServer, Peer, PeerResult, SmtpServer, IMAP_CAPS_OF_EVERY_MECHANISM,
};
use remote_directory::ffi::directory_result::*;
use remote_directory::{Directory, Kind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

const ALICE: &str = "alice@example.org";

/// The lock a test holds; when the test ends, the trace it wrote is removed.
struct Held {
    _lock: MutexGuard<'static, ()>,
    trace: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.trace);
    }
}

/// The lock every test holds, and the trace file all handles of this process write to.
fn setup() -> (Held, PathBuf) {
    static LOCK: Mutex<()> = Mutex::new(());
    static TRACE: OnceLock<PathBuf> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let path = TRACE
        .get_or_init(|| {
            let path =
                std::env::temp_dir().join(format!("rd-secrets-trace-{}.log", std::process::id()));
            let _ = std::fs::remove_file(&path);
            // Set while this test holds the lock and before any handle opens; nothing else
            // runs in this process then.
            std::env::set_var("REMOTE_DIRECTORY_TRACE", &path);
            path
        })
        .clone();
    (
        Held {
            _lock: guard,
            trace: path.clone(),
        },
        path,
    )
}

/// Every form in which a secret could leak.
fn needles(user: &str, secret: &str) -> Vec<String> {
    let mut n = vec![
        secret.to_string(),
        BASE64.encode(secret),
        BASE64.encode(format!("\0{user}\0{secret}")),
        BASE64.encode(format!("{user}\0{user}\0{secret}")),
    ];
    // Quoted for IMAP LOGIN.
    n.push(secret.replace('\\', "\\\\").replace('"', "\\\""));
    n
}

fn assert_no_leak(where_: &str, text: &str, secrets: &[(String, String)]) {
    for (user, secret) in secrets {
        for needle in needles(user, secret) {
            assert!(
                !text.contains(&needle),
                "{where_} contains {needle:?} (secret {secret:?}):\n{text}"
            );
        }
    }
}

/// Every message a failing call produced: the C last error, and the Rust error's Display
/// and Debug.
#[derive(Default)]
struct Collected {
    messages: Vec<String>,
    secrets: Vec<(String, String)>,
}

impl Collected {
    fn c_auth(&mut self, dir: &CDirectory, user: &str, secret: &str) {
        let (r, message) = dir.auth(user, secret);
        assert_ne!(r, DIRECTORY_RESULT_OK, "{user}: {message}");
        assert!(!message.is_empty());
        self.messages.push(message);
        self.secrets.push((user.into(), secret.into()));
    }

    fn rust_auth(&mut self, dir: &Directory, user: &str, secret: &str) -> Kind {
        let e = dir.auth(user, secret).unwrap_err();
        self.messages.push(e.to_string());
        self.messages.push(format!("{e:?}"));
        self.secrets.push((user.into(), secret.into()));
        e.kind()
    }
}

type Script = Box<dyn Fn(&mut Conn) -> PeerResult + Send + Sync>;

/// What the directories of [`failing_peers`] are opened with: each call fails fast.
const FAILING_PEER_SETTINGS: [&str; 1] = ["timeout = \"1s\""];

/// Peers that fail an authentication in every way after the credentials were sent, as
/// (name, kind, script); each is called with [`FAILING_PEER_SETTINGS`].
fn failing_peers() -> Vec<(&'static str, &'static str, Script)> {
    vec![
        (
            "imap BAD after AUTHENTICATE",
            "imap",
            Box::new(stalling_after(|c: &mut Conn| {
                let tag = imap_to_auth(c)?;
                c.send(&format!(
                    "{tag} BAD Invalid base64 data in initial response"
                ))
            })),
        ),
        (
            "imap garbage after AUTHENTICATE",
            "imap",
            Box::new(stalling_after_reply(imap_to_auth, b"?? what\r\n")),
        ),
        (
            "imap stall after AUTHENTICATE",
            "imap",
            Box::new(stalling_after(imap_to_auth)),
        ),
        (
            "imap close after AUTHENTICATE",
            "imap",
            Box::new(closing_after(imap_to_auth, b"")),
        ),
        (
            "imap extra continuation",
            "imap",
            Box::new(stalling_after(|c: &mut Conn| {
                let tag = imap_to_auth(c)?;
                c.send("+ more please")?;
                c.expect("*")?;
                c.send(&format!("{tag} BAD cancelled"))
            })),
        ),
        (
            "imap BYE after LOGIN",
            "imap",
            Box::new(closing_after(
                |c: &mut Conn| {
                    c.send("* OK [CAPABILITY IMAP4rev1] ready")?;
                    c.expect_imap("LOGIN")
                },
                b"* BYE go away\r\n",
            )),
        ),
        (
            "smtp 454 after AUTH",
            "smtp",
            Box::new(stalling_after_reply(
                smtp_to_auth,
                b"454 4.7.0 Temporary authentication failure\r\n",
            )),
        ),
        (
            "smtp unexpected 334 after AUTH PLAIN",
            "smtp",
            Box::new(stalling_after(|c: &mut Conn| {
                smtp_to_auth(c)?;
                c.send("334 ")?;
                c.expect("*")?;
                c.send("501 5.7.0 Authentication aborted")
            })),
        ),
        (
            "smtp stall after AUTH LOGIN password",
            "smtp",
            Box::new(stalling_after(|c: &mut Conn| {
                smtp_hello(c, &["AUTH LOGIN"])?;
                c.expect("AUTH LOGIN")?;
                c.send("334 VXNlcm5hbWU6")?;
                c.next_line()?;
                c.send("334 UGFzc3dvcmQ6")?;
                c.next_line()
            })),
        ),
        (
            "smtp garbage after AUTH",
            "smtp",
            Box::new(stalling_after_reply(smtp_to_auth, b"\xff\xfe garbage\r\n")),
        ),
    ]
}

#[test]
fn no_password_in_any_message_debug_output_or_trace_line() {
    let (_guard, trace) = setup();
    let mut got = Collected::default();
    // Wrong passwords with every mechanism the peers offer, through both APIs.
    let mut n = 0;
    let mut next_secret = |tag: &str| {
        n += 1;
        format!("S3cr\"e\\t-{tag}-{n}-wörd")
    };
    let imap = IMAP_CAPS_OF_EVERY_MECHANISM.map(|caps| ("imap", ImapServer::new(caps).start()));
    let smtp = ["AUTH PLAIN", "AUTH LOGIN"].map(|ehlo| ("smtp", SmtpServer::smtp(&[ehlo]).start()));
    for (kind, peer) in imap.into_iter().chain(smtp) {
        let c = CDirectory::open(kind, &peer, &[]);
        let r = Directory::open_str(&peer::config(kind, &peer, &[]), None).unwrap();
        for _ in 0..3 {
            got.c_auth(&c, ALICE, &next_secret(&format!("{kind}-c")));
            assert_eq!(
                got.rust_auth(&r, ALICE, &next_secret(&format!("{kind}-r"))),
                Kind::Rejected
            );
        }
        if kind == "imap" {
            // 7-bit secrets travel as quoted strings with LOGIN.
            got.c_auth(&c, ALICE, "plain-ascii-secret-1");
        }
    }
    // Failures after the credentials went out: protocol errors, timeouts, closes.
    for (name, kind, script) in failing_peers() {
        let peer = Peer::start(script);
        let r =
            Directory::open_str(&peer::config(kind, &peer, &FAILING_PEER_SETTINGS), None).unwrap();
        let secret = next_secret(name);
        let k = got.rust_auth(&r, ALICE, &secret);
        assert_ne!(
            k,
            Kind::Rejected,
            "{name}: an outage is never a wrong password"
        );
        let c = CDirectory::open(kind, &peer, &FAILING_PEER_SETTINGS);
        got.c_auth(&c, ALICE, &next_secret(name));
    }
    // TLS failures: the secret is never sent, and never shown.
    let tls_peer = SmtpServer::smtp(&["STARTTLS", "AUTH PLAIN"]).start();
    let no_ca = Directory::open_str(&peer::config("smtp", &tls_peer, &[]), None).unwrap();
    assert_eq!(got.rust_auth(&no_ca, ALICE, &next_secret("tls")), Kind::Tls);
    // The real servers: wrong passwords over IMAP (STARTTLS, implicit TLS), Dovecot
    // submission and Postfix through Dovecot SASL. Each costs ~500 ms: run them at once.
    let servers = common::servers();
    let real: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = [
            ("imap", "RD_IMAP_PORT", false),
            ("imap", "RD_IMAPS_PORT", true),
            ("smtp", "RD_SUBMISSION_PORT", false),
            ("smtp", "RD_SMTP_PORT", false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (kind, port, implicit))| {
            s.spawn(move || {
                let dir =
                    Directory::open_str(&servers.config(kind, port, implicit, ""), None).unwrap();
                let secret = format!("real-S3cret-{i}-\"wö\\rd");
                let e = dir.auth(ALICE, &secret).unwrap_err();
                assert_eq!(e.kind(), Kind::Rejected, "{port}: {e}");
                (format!("{e} | {e:?}"), secret)
            })
        })
        .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (message, secret) in real {
        got.messages.push(message);
        got.secrets.push((ALICE.into(), secret));
    }
    // Also: the right password of a real user, which is never in a message since the call
    // succeeds, must not be in the trace either.
    let ok = Directory::open_str(&servers.config("imap", "RD_IMAP_PORT", false, ""), None).unwrap();
    ok.auth(ALICE, "alice-pass-1").unwrap();
    got.secrets.push((ALICE.into(), "alice-pass-1".into()));
    drop(ok);

    eprintln!(
        "{} messages from {} failing calls checked",
        got.messages.len(),
        got.secrets.len()
    );
    for message in &got.messages {
        assert_no_leak("an error message", message, &got.secrets);
    }
    let trace_text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        trace_text.contains("AUTHENTICATE PLAIN") && trace_text.contains("S: "),
        "the trace at {} was not written: is REMOTE_DIRECTORY_TRACE still supported?",
        trace.display()
    );
    eprintln!("trace: {} lines checked", trace_text.lines().count());
    for line in trace_text.lines() {
        assert_no_leak("the trace", line, &got.secrets);
    }
}

#[test]
fn defences_put_no_password_in_messages_or_trace() {
    // Throttled, negative-cached and forwarded logins (IMAP ID, XCLIENT to Dovecot
    // submission and Postfix), and forwarding refused by a scripted server.
    let (_guard, trace) = setup();
    let mut got = Collected::default();
    let servers = common::servers();
    let defences =
        "forward.client-ip = true\nthrottle.user = \"2/10m\"\ncache.auth-negative-ttl = \"5m\"";
    let client = Some("203.0.113.99".parse().unwrap());
    for (kind, port) in [
        ("imap", "RD_IMAP_PORT"),
        ("smtp", "RD_SUBMISSION_PORT"),
        ("smtp", "RD_SMTP_PORT"),
    ] {
        let dir = Directory::open_str(&servers.config(kind, port, false, defences), None).unwrap();
        let secret = format!("defence-S3cret-{port}-\"wö\\rd");
        let mut kinds = Vec::new();
        // Refused, refused again from the negative cache, another refused, then throttled.
        for secret in [
            &secret,
            &secret,
            &format!("{secret}-2"),
            &format!("{secret}-3"),
        ] {
            let e = dir.auth_from(ALICE, secret, client).unwrap_err();
            kinds.push(e.kind());
            got.messages.push(format!("{e} | {e:?}"));
            got.secrets.push((ALICE.into(), secret.clone()));
        }
        assert_eq!(
            kinds,
            [
                Kind::Rejected,
                Kind::Rejected,
                Kind::Rejected,
                Kind::Throttled
            ],
            "{port}"
        );
    }
    let refusing = SmtpServer {
        xclient_reply: Some("550 5.7.0 Error: insufficient authorization".into()),
        ..SmtpServer::smtp(&["XCLIENT NAME ADDR", "AUTH PLAIN"])
    }
    .start();
    let dir = Directory::open_str(
        &peer::config("smtp", &refusing, &["forward.client-ip = true"]),
        None,
    )
    .unwrap();
    let secret = "refused-forwarding-S3cret";
    let e = dir.auth_from(ALICE, secret, client).unwrap_err();
    assert_eq!(e.kind(), Kind::Deferred, "{e}");
    got.messages.push(format!("{e} | {e:?}"));
    got.secrets.push((ALICE.into(), secret.into()));
    for message in &got.messages {
        assert_no_leak("an error message", message, &got.secrets);
    }
    let trace_text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        trace_text.contains("x-originating-ip") && trace_text.contains("XCLIENT ADDR="),
        "the trace lacks the forwarding commands"
    );
    for line in trace_text.lines() {
        assert_no_leak("the trace", line, &got.secrets);
    }
}

#[test]
fn a_server_echoing_the_credentials_back_does_not_put_them_in_the_message_or_trace() {
    // Some servers quote the offending command in their error reply ("502 5.5.2 Error:
    // command not recognized: <line>", "BAD Invalid base64: <data>"). The library builds
    // its message and trace line from that reply: the credentials must not come through.
    let (_guard, trace) = setup();
    let secret = "echo-S3cret-9";
    let imap = Peer::start(|c| {
        c.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")?;
        let (tag, line) = c.expect_imap("AUTHENTICATE")?;
        c.send(&format!("{tag} BAD Unknown command: {line}"))?;
        c.stall(Duration::from_secs(5))
    });
    let smtp = Peer::start(|c| {
        c.send("220 mx.example.org ESMTP")?;
        c.expect("EHLO")?;
        c.send_lines(&["250-mx.example.org", "250 AUTH LOGIN"])?;
        c.expect("AUTH LOGIN")?;
        c.send("334 VXNlcm5hbWU6")?;
        c.next_line()?;
        c.send("334 UGFzc3dvcmQ6")?;
        let password_line = c.next_line()?;
        c.send(&format!(
            "535 5.7.8 Authentication failed for password {password_line}"
        ))?;
        c.stall(Duration::from_secs(5))
    });
    let mut messages = Vec::new();
    for (kind, peer) in [("imap", &imap), ("smtp", &smtp)] {
        let c = CDirectory::open(kind, peer, &[]);
        let (r, message) = c.auth(ALICE, secret);
        assert_ne!(r, DIRECTORY_RESULT_OK);
        messages.push(message);
    }
    let secrets = [(ALICE.to_string(), secret.to_string())];
    for message in &messages {
        assert_no_leak("an error message", message, &secrets);
    }
    let trace_text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        trace_text.contains("S: "),
        "the trace at {} was not written",
        trace.display()
    );
    for line in trace_text.lines() {
        assert_no_leak("the trace", line, &secrets);
    }
}

/// An allocator that hands out zeroed blocks and wipes every block it takes back, and that
/// counts the blocks freed (or moved by `realloc`) by a watched thread while they still
/// hold a tail of the watched secret. Zeroing on both ends means no stale bytes ever reach
/// a block, so a block that holds the secret when it is freed was written since it was
/// allocated: an unwiped copy made by the code under test, caught before anything reuses
/// it. (Only the watched thread counts: the library works on its caller's thread, while
/// the in-process peers, which decode the password, run on their own.)
struct Watching;

thread_local! {
    static WATCH_ON: Cell<bool> = const { Cell::new(false) };
}
static WATCHED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
static FREED_WITH_SECRET: AtomicUsize = AtomicUsize::new(0);
static MOVED_WITH_SECRET: AtomicUsize = AtomicUsize::new(0);
/// Size of the first block caught, for the report.
static FIRST_CAUGHT_SIZE: AtomicUsize = AtomicUsize::new(0);

fn holds_secret(ptr: *mut u8, size: usize) -> bool {
    if !WATCH_ON.try_with(Cell::get).unwrap_or(false) {
        return false;
    }
    let Some(needles) = WATCHED.get() else {
        return false;
    };
    // SAFETY: `ptr` is a live block of `size` bytes handed to dealloc/realloc.
    let block = unsafe { std::slice::from_raw_parts(ptr, size) };
    needles
        .iter()
        .any(|n| n.len() <= block.len() && block.windows(n.len()).any(|w| w == &n[..]))
}

// SAFETY: blocks come from the system allocator with the caller's layout; they are zeroed
// when handed out and wiped before they are returned, which only adds writes to memory the
// allocator owns at that moment.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if holds_secret(ptr, layout.size()) {
            FREED_WITH_SECRET.fetch_add(1, Ordering::SeqCst);
            let _ = FIRST_CAUGHT_SIZE.compare_exchange(
                0,
                layout.size(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        std::ptr::write_bytes(ptr, 0, layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A moved block leaves its old copy behind, unwiped: zeroize cannot see it.
        if holds_secret(ptr, layout.size()) {
            MOVED_WITH_SECRET.fetch_add(1, Ordering::SeqCst);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = System.alloc_zeroed(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            std::ptr::write_bytes(ptr, 0, layout.size());
            System.dealloc(ptr, layout);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// Every readable and writable mapping of this process.
fn writable_memory() -> Vec<(usize, Vec<u8>)> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !perms.starts_with("rw") || name.starts_with("[v") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; end - start];
        if mem.seek(SeekFrom::Start(start as u64)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.push((start, buf));
        }
    }
    out
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = hay[i..].iter().position(|&b| b == needle[0]) {
        let at = i + p;
        if hay[at..].starts_with(needle) {
            found.push(at);
        }
        i = at + 1;
        if i + needle.len() > hay.len() {
            break;
        }
    }
    found
}

#[test]
fn no_copy_of_the_password_is_left_in_memory_after_the_calls() {
    let (_guard, _trace) = setup();
    // Secrets that appear in no binary: made at run time, in place (never reallocated, so
    // no stale partial copy of ours is left behind). Long, because a freed heap chunk keeps
    // all but its first 16 bytes (the allocator's links), so the tail of an unwiped copy
    // survives, and tails are what is looked for. One 7-bit secret (IMAP LOGIN sends it as
    // a quoted string) and one with a non-ASCII letter (sent as a literal).
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut ascii = String::with_capacity(80);
    let mut quoted = String::with_capacity(80);
    let mut utf8 = String::with_capacity(80);
    {
        use std::fmt::Write as _;
        write!(ascii, "Zq{nonce:x}Vw-{nonce:x}-padding-tail-Kx").unwrap();
        // Escaped in an IMAP quoted string (the tail is not).
        write!(quoted, "Xr\"\\{nonce:x}-{nonce:x}-quoted-tail-Hw").unwrap();
        write!(utf8, "Yp{nonce:x}Wö-{nonce:x}-pädding-tail-Jy").unwrap();
    }
    // Every form of each, built before the calls without temporaries; matches inside our
    // own buffers do not count.
    let mut needles: Vec<Vec<u8>> = Vec::with_capacity(9);
    for secret in [&ascii, &quoted, &utf8] {
        let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(ALICE.len() + secret.len() + 2));
        plain.push(0);
        plain.extend_from_slice(ALICE.as_bytes());
        plain.push(0);
        plain.extend_from_slice(secret.as_bytes());
        let b64 = |data: &[u8]| {
            let mut out = String::with_capacity(data.len() * 2 + 4);
            BASE64.encode_string(data, &mut out);
            out.into_bytes()
        };
        let mut raw = Vec::with_capacity(secret.len());
        raw.extend_from_slice(secret.as_bytes());
        needles.push(raw);
        needles.push(b64(secret.as_bytes()));
        needles.push(b64(&plain));
    }
    let own: Vec<(usize, usize)> = needles
        .iter()
        .map(|n| (n.as_ptr() as usize, n.capacity()))
        .chain([&ascii, &quoted, &utf8].map(|s| (s.as_ptr() as usize, s.capacity())))
        .collect();
    // The allocator watches for the last 24 bytes of each form (see `Watching`).
    let tails: Vec<Vec<u8>> = needles.iter().map(|n| n[n.len() - 24..].to_vec()).collect();
    assert!(WATCHED.set(tails).is_ok(), "one watch per process");
    // Runs `f` watched; records which scenario left unwiped blocks.
    let mut caught: Vec<String> = Vec::new();
    let mut watched = |what: &str, f: &mut dyn FnMut()| {
        let before = (
            FREED_WITH_SECRET.load(Ordering::SeqCst),
            MOVED_WITH_SECRET.load(Ordering::SeqCst),
        );
        WATCH_ON.with(|w| w.set(true));
        f();
        WATCH_ON.with(|w| w.set(false));
        let freed = FREED_WITH_SECRET.load(Ordering::SeqCst) - before.0;
        let moved = MOVED_WITH_SECRET.load(Ordering::SeqCst) - before.1;
        if freed + moved > 0 {
            caught.push(format!("{what}: {freed} freed, {moved} moved by realloc"));
        }
    };
    // Scripted peers: every mechanism, a wrong then the right password, through both APIs.
    for caps in IMAP_CAPS_OF_EVERY_MECHANISM {
        for secret in [&ascii, &quoted, &utf8] {
            let peer = ImapServer::new(caps).user(ALICE, secret).start();
            let rust = Directory::open_str(&peer::config("imap", &peer, &[]), None).unwrap();
            let c = CDirectory::open("imap", &peer, &[]);
            // Made before the watch: the C strings are the test's copies, not the library's.
            let c_user = std::ffi::CString::new(ALICE).unwrap();
            let c_secret = std::ffi::CString::new(secret.as_str()).unwrap();
            let what = format!("{caps}, secret {}…", &secret[..4]);
            watched(&format!("{what}, wrong"), &mut || {
                assert_eq!(
                    rust.auth(ALICE, &secret[1..]).unwrap_err().kind(),
                    Kind::Rejected
                );
            });
            watched(&format!("{what}, right"), &mut || {
                rust.auth(ALICE, secret).unwrap();
            });
            watched(&format!("{what}, right, C API"), &mut || {
                let r = remote_directory::ffi::directory_auth(
                    c.as_ptr(),
                    c_user.as_ptr(),
                    c_secret.as_ptr(),
                );
                assert_eq!(r, DIRECTORY_RESULT_OK, "{caps}");
            });
            drop((rust, c));
            peer.wait_all_ended();
        }
    }
    for ehlo in [["AUTH PLAIN"], ["AUTH LOGIN"]] {
        let mut server = SmtpServer::smtp(&ehlo);
        for secret in [&ascii, &quoted, &utf8] {
            server.users.push((ALICE.into(), secret.to_string()));
        }
        let peer = server.start();
        let rust = Directory::open_str(&peer::config("smtp", &peer, &[]), None).unwrap();
        for secret in [&ascii, &quoted, &utf8] {
            watched(&format!("SMTP {}, wrong", ehlo[0]), &mut || {
                assert_eq!(
                    rust.auth(ALICE, &secret[1..]).unwrap_err().kind(),
                    Kind::Rejected
                );
            });
            watched(&format!("SMTP {}, right", ehlo[0]), &mut || {
                rust.auth(ALICE, secret).unwrap();
            });
        }
        drop(rust);
        peer.wait_all_ended();
    }
    // The real servers (TLS): wrong passwords.
    let servers = common::servers();
    for (kind, port, implicit) in [
        ("imap", "RD_IMAP_PORT", false),
        ("imap", "RD_IMAPS_PORT", true),
        ("smtp", "RD_SUBMISSION_PORT", false),
    ] {
        let dir = Directory::open_str(&servers.config(kind, port, implicit, ""), None).unwrap();
        watched(&format!("real {port}, wrong"), &mut || {
            let e = dir.auth(ALICE, &utf8).unwrap_err();
            assert_eq!(e.kind(), Kind::Rejected, "{port}: {e}");
            dir.auth(ALICE, "alice-pass-1").unwrap();
        });
        drop(dir);
    }
    assert!(
        caught.is_empty(),
        "heap blocks freed or moved while holding the password (or its base64) unwiped \
         (first freed block: {} bytes):\n{}",
        FIRST_CAUGHT_SIZE.load(Ordering::SeqCst),
        caught.join("\n")
    );
    // What is still alive after the handles are gone: no copy either (freed memory holds
    // nothing: the allocator wipes it).
    let tails = WATCHED.get().unwrap();
    let own: Vec<(usize, usize)> = own
        .into_iter()
        .chain(tails.iter().map(|t| (t.as_ptr() as usize, t.capacity())))
        .collect();
    let mut leaks = Vec::new();
    for (base, bytes) in writable_memory() {
        for needle in tails {
            for off in find_all(&bytes, needle) {
                let addr = base + off;
                if own
                    .iter()
                    .any(|&(p, len)| addr >= p && addr < p + len.max(1))
                {
                    continue;
                }
                let from = off.saturating_sub(24);
                let to = (off + needle.len() + 24).min(bytes.len());
                leaks.push(format!(
                    "{:#x}: {:?}",
                    addr,
                    String::from_utf8_lossy(&bytes[from..to])
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the password (or its base64) is still in memory at {} places:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
