//! The C API called as C would call it: NULL everywhere, bad bytes, the last-error contract,
//! and the shape of the shared library (SONAME, exported symbols).

use remote_directory::ffi::*;
use std::ffi::{CStr, CString};
use std::ptr;

const OK: directory_result = directory_result::DIRECTORY_RESULT_OK;
const REJECTED: directory_result = directory_result::DIRECTORY_RESULT_REJECTED;
const INVALID: directory_result = directory_result::DIRECTORY_RESULT_INVALID_INPUT;
const CONFIG: directory_result = directory_result::DIRECTORY_RESULT_CONFIG;
const UNSUPPORTED: directory_result = directory_result::DIRECTORY_RESULT_UNSUPPORTED;

fn last_error() -> String {
    // SAFETY: directory_last_error never returns NULL and the string lives until our next call.
    unsafe { CStr::from_ptr(directory_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// An LMTP directory on a closed port: enough for everything that sends nothing.
fn open_lmtp() -> *mut directory {
    let config = c("[directory.d]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = 9\nlookup.domains = [\"example.org\"]\n");
    let mut dir = ptr::null_mut();
    assert_eq!(
        directory_open_str(config.as_ptr(), ptr::null(), &mut dir),
        OK,
        "{}",
        last_error()
    );
    assert!(!dir.is_null());
    dir
}

#[test]
fn null_arguments_are_invalid_input() {
    let dir = open_lmtp();
    let s = c("x@example.org");
    let mut out = ptr::null_mut();
    assert_eq!(directory_open(ptr::null(), ptr::null(), &mut out), INVALID);
    assert_eq!(last_error(), "config_path is NULL");
    assert_eq!(
        directory_open_str(ptr::null(), ptr::null(), &mut out),
        INVALID
    );
    assert_eq!(
        directory_open_str(s.as_ptr(), ptr::null(), ptr::null_mut()),
        INVALID
    );
    assert_eq!(last_error(), "out is NULL");
    assert!(out.is_null(), "*out is written only on OK");
    assert_eq!(
        directory_auth(ptr::null_mut(), s.as_ptr(), s.as_ptr()),
        INVALID
    );
    assert_eq!(last_error(), "directory handle is NULL");
    assert_eq!(directory_auth(dir, ptr::null(), s.as_ptr()), INVALID);
    assert_eq!(last_error(), "user is NULL");
    assert_eq!(directory_auth(dir, s.as_ptr(), ptr::null()), INVALID);
    assert_eq!(last_error(), "secret is NULL");
    assert_eq!(directory_rcpt(ptr::null_mut(), s.as_ptr()), INVALID);
    assert_eq!(directory_rcpt(dir, ptr::null()), INVALID);
    assert_eq!(directory_is_local_domain(ptr::null(), s.as_ptr()), INVALID);
    assert_eq!(directory_is_local_domain(dir, ptr::null()), INVALID);
    directory_close(ptr::null_mut());
    directory_close(dir);
}

#[test]
fn non_utf8_and_injection_are_invalid_input_and_send_nothing() {
    let dir = open_lmtp();
    let bad_utf8 = CString::new(vec![b'a', 0xff, b'@', b'x']).unwrap();
    assert_eq!(directory_rcpt(dir, bad_utf8.as_ptr()), INVALID);
    assert_eq!(last_error(), "address is not valid UTF-8");
    for bad in ["a@x\r\nDATA", "a@x\nRSET", "<a@x>", "a b@x"] {
        let s = c(bad);
        assert_eq!(directory_rcpt(dir, s.as_ptr()), INVALID, "{bad:?}");
    }
    let user = c("alice\r\na1 LOGOUT");
    let secret = c("pw");
    assert_eq!(directory_auth(dir, user.as_ptr(), secret.as_ptr()), INVALID);
    let long = c(&"a".repeat(321));
    assert_eq!(directory_rcpt(dir, long.as_ptr()), INVALID);
    assert_eq!(last_error(), "address is longer than 320 bytes");
    let long_secret = c(&"s".repeat(4097));
    assert_eq!(
        directory_auth(dir, secret.as_ptr(), long_secret.as_ptr()),
        INVALID
    );
    assert!(!last_error().contains("sss"));
    directory_close(dir);
}

#[test]
fn client_ip_must_be_an_ip_address_or_null() {
    let dir = open_lmtp();
    let (user, secret) = (c("alice@example.org"), c("pw"));
    let cases: &[(&[u8], &str)] = &[
        (
            b"localhost",
            "client_ip 'localhost' is not an IPv4 or IPv6 address",
        ),
        (
            b"203.0.113.5:25",
            "client_ip '203.0.113.5:25' is not an IPv4",
        ),
        (b"[2001:db8::1]", "client_ip '[2001:db8::1]' is not an IPv4"),
        (b"1.2.3.4\r\nQUIT", "client_ip contains NUL, CR or LF"),
        (b"", "client_ip is empty"),
        (b"\xff1.2.3.4", "client_ip is not valid UTF-8"),
    ];
    for (bad, message) in cases {
        let ip = CString::new(*bad).unwrap();
        assert_eq!(
            directory_auth_from(dir, user.as_ptr(), secret.as_ptr(), ip.as_ptr()),
            INVALID,
            "{bad:?}"
        );
        assert!(
            last_error().starts_with(message),
            "{bad:?}: {}",
            last_error()
        );
    }
    let long = c(&"1".repeat(65));
    assert_eq!(
        directory_auth_from(dir, user.as_ptr(), secret.as_ptr(), long.as_ptr()),
        INVALID
    );
    assert_eq!(
        directory_auth_from(ptr::null_mut(), user.as_ptr(), secret.as_ptr(), ptr::null()),
        INVALID
    );
    assert_eq!(
        directory_auth_from(dir, ptr::null(), secret.as_ptr(), ptr::null()),
        INVALID
    );
    // NULL and valid addresses pass the checks and reach the (closed) server port.
    for ip in [None, Some(c("203.0.113.5")), Some(c("2001:db8::1"))] {
        let ptr = ip.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        assert_eq!(
            directory_auth_from(dir, user.as_ptr(), secret.as_ptr(), ptr),
            directory_result::DIRECTORY_RESULT_TEMPORARY
        );
        assert!(
            last_error().starts_with("127.0.0.1:9: "),
            "{}",
            last_error()
        );
    }
    directory_close(dir);
}

#[test]
fn last_error_is_per_thread_and_cleared_by_the_next_call() {
    let dir = open_lmtp() as usize;
    let domain = c("other.test");
    assert_eq!(
        directory_is_local_domain(dir as *const directory, domain.as_ptr()),
        REJECTED
    );
    assert_eq!(
        last_error(),
        "'other.test' is not in directory.d.lookup.domains"
    );
    std::thread::spawn(move || {
        assert_eq!(
            last_error(),
            "",
            "another thread's error is not visible here"
        );
        let ours = c("EXAMPLE.org.");
        assert_eq!(
            directory_is_local_domain(dir as *const directory, ours.as_ptr()),
            OK
        );
    })
    .join()
    .unwrap();
    assert_eq!(
        last_error(),
        "'other.test' is not in directory.d.lookup.domains"
    );
    let ours = c("example.org");
    assert_eq!(
        directory_is_local_domain(dir as *const directory, ours.as_ptr()),
        OK
    );
    assert_eq!(last_error(), "", "an OK call clears it");
    directory_close(dir as *mut directory);
}

#[test]
fn rcpt_on_imap_is_unsupported() {
    let config = c("[directory.i]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = 9\n");
    let mut dir = ptr::null_mut();
    assert_eq!(
        directory_open_str(config.as_ptr(), c("i").as_ptr(), &mut dir),
        OK
    );
    assert_eq!(directory_rcpt(dir, c("a@b").as_ptr()), UNSUPPORTED);
    directory_close(dir);
}

#[test]
fn config_errors_through_the_c_api() {
    let mut out = ptr::null_mut();
    let path = c("/nonexistent/remote-directory.toml");
    assert_eq!(directory_open(path.as_ptr(), ptr::null(), &mut out), CONFIG);
    assert!(
        last_error().starts_with("/nonexistent/remote-directory.toml: cannot read configuration"),
        "{}",
        last_error()
    );
    let two = c("[directory.a]\ntype = \"imap\"\naddress = \"h\"\n[directory.b]\ntype = \"smtp\"\naddress = \"h\"\n");
    assert_eq!(
        directory_open_str(two.as_ptr(), ptr::null(), &mut out),
        CONFIG
    );
    assert!(
        last_error().contains("several directories defined ('a', 'b')"),
        "{}",
        last_error()
    );
    assert_eq!(
        directory_open_str(two.as_ptr(), c("c").as_ptr(), &mut out),
        CONFIG
    );
    assert!(
        last_error().contains("no directory named 'c'; defined: 'a', 'b'"),
        "{}",
        last_error()
    );
    assert!(out.is_null());
    assert_eq!(
        directory_open_str(two.as_ptr(), c("b").as_ptr(), &mut out),
        OK
    );
    directory_close(out);
}

#[test]
fn result_names_and_version() {
    let name = |r: u32| {
        unsafe { CStr::from_ptr(directory_result_name(r)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    let expected = [
        "OK",
        "REJECTED",
        "TEMPORARY",
        "UNSUPPORTED",
        "INVALID_INPUT",
        "CONFIG",
        "INTERNAL",
    ];
    for (value, want) in expected.iter().enumerate() {
        assert_eq!(name(value as u32), *want);
    }
    assert_eq!(name(7), "UNKNOWN");
    assert_eq!(name(u32::MAX), "UNKNOWN");
    assert_eq!(directory_result::DIRECTORY_RESULT_INTERNAL as u32, 6);
    let version = unsafe { CStr::from_ptr(directory_version()) }
        .to_str()
        .unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

/// The release shared library, as C programs link it; built here when the test command has
/// not built it yet (`cargo test` alone builds no cdylib).
fn shared_library() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("target/release/libremote_directory.so");
    if !lib.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--lib"])
            .current_dir(root)
            .status()
            .expect("run cargo build --release");
        assert!(status.success(), "cargo build --release failed");
    }
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (binutils) is needed: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shared_library_exports_only_the_api_and_has_a_soname() {
    let lib = shared_library();
    let lib = lib.to_str().unwrap();
    let symbols: Vec<String> = run("nm", &["-D", "--defined-only", lib])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let mut expected = vec![
        "directory_auth",
        "directory_auth_from",
        "directory_close",
        "directory_config_check",
        "directory_config_show",
        "directory_is_local_domain",
        "directory_last_error",
        "directory_metrics",
        "directory_open",
        "directory_open_str",
        "directory_rcpt",
        "directory_result_name",
        "directory_string_free",
        "directory_version",
    ];
    expected.sort();
    let mut got: Vec<&str> = symbols.iter().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, expected);
    assert!(run("readelf", &["-d", lib]).contains("Library soname: [libremote_directory.so.0]"));
}

#[test]
fn committed_header_declares_exactly_the_api() {
    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/include/remote_directory.h"
    ))
    .unwrap();
    for decl in [
        "typedef uint32_t directory_result;",
        "typedef struct directory directory;",
        "DIRECTORY_RESULT_OK = 0,",
        "DIRECTORY_RESULT_INTERNAL = 6,",
        "directory_result directory_open(const char *config_path, const char *name, directory **out);",
        "directory_result directory_open_str(const char *config_toml, const char *name, directory **out);",
        "directory_result directory_auth(directory *dir, const char *user, const char *secret);",
        "directory_result directory_auth_from(directory *dir,\n                                     const char *user,\n                                     const char *secret,\n                                     const char *client_ip);",
        "directory_result directory_rcpt(directory *dir, const char *address);",
        "directory_result directory_is_local_domain(const directory *dir, const char *domain);",
        "void directory_close(directory *dir);",
        "const char *directory_last_error(void);",
        "const char *directory_result_name(uint32_t result);",
        "const char *directory_version(void);",
        "directory_result directory_config_show(const char *config_path, const char *name, char **out);",
        "directory_result directory_config_check(const char *config_path, char **report);",
        "void directory_string_free(char *s);",
        "directory_result directory_metrics(char *buf, size_t size, size_t *needed);",
    ] {
        assert!(header.contains(decl), "header lacks: {decl}");
    }
}

/// A configuration file written for one test, in a directory of its own; both are removed
/// when the test drops it.
struct ConfigFile {
    path: std::path::PathBuf,
    c_path: CString,
}

impl ConfigFile {
    fn as_ptr(&self) -> *const std::ffi::c_char {
        self.c_path.as_ptr()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Writes `text` to a fresh file `name` (unique among the tests of this binary).
fn config_file(name: &str, text: &str) -> ConfigFile {
    let dir = std::env::temp_dir().join(format!("rd-ffi-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    ConfigFile {
        c_path: c(path.to_str().unwrap()),
        path,
    }
}

fn take_string(s: *mut std::ffi::c_char) -> String {
    assert!(!s.is_null());
    // SAFETY: a string from directory_config_*, freed right after.
    let text = unsafe { CStr::from_ptr(s) }.to_str().unwrap().to_string();
    directory_string_free(s);
    text
}

#[test]
fn show_config_renders_defaults_and_masks_nothing_it_should_not() {
    let path = config_file(
        "show.toml",
        "[directory.a]\ntype = \"lmtp\"\nhost = \"127.0.0.1\"\n[directory.b]\ntype = \"imap\"\naddress = \"h\"\ntls.enable = true\n",
    );
    let mut out = ptr::null_mut();
    assert_eq!(
        directory_config_show(path.as_ptr(), ptr::null(), &mut out),
        OK
    );
    let all = take_string(out);
    assert!(all.starts_with("[directory.a]\n# EHLO/LHLO name"), "{all}");
    assert!(
        all.contains("\ntype = \"lmtp\"\ndisable = false\naddress = \"127.0.0.1\"\nport = 24\n"),
        "{all}"
    );
    assert!(all.contains("\n[directory.b]\n"), "{all}");
    assert!(
        all.contains("\ntype = \"imap\"\ndisable = false\naddress = \"h\"\nport = 993\ntls.implicit = true\n"),
        "{all}"
    );
    let name = c("b");
    let mut out = ptr::null_mut();
    assert_eq!(
        directory_config_show(path.as_ptr(), name.as_ptr(), &mut out),
        OK
    );
    let one = take_string(out);
    assert!(
        one.starts_with("[directory.b]\n") && !one.contains("directory.a"),
        "{one}"
    );

    let bad = config_file("bad.toml", "[directory.a]\ntype = \"imap\"\n");
    let mut out = ptr::null_mut();
    assert_eq!(
        directory_config_show(bad.as_ptr(), ptr::null(), &mut out),
        CONFIG
    );
    assert!(out.is_null(), "*out is written only on OK");
    assert!(
        last_error().contains("directory.a.address: missing"),
        "{}",
        last_error()
    );
    assert_eq!(
        directory_config_show(ptr::null(), ptr::null(), &mut out),
        INVALID
    );
    assert_eq!(
        directory_config_show(path.as_ptr(), ptr::null(), ptr::null_mut()),
        INVALID
    );
    assert_eq!(last_error(), "out is NULL");
    directory_string_free(ptr::null_mut());
}

#[test]
fn check_config_reports_every_directory() {
    let path = config_file(
        "check.toml",
        "[directory.a]\ntype = \"imap\"\naddress = \"h\"\n[directory.b]\ntype = \"imap\"\naddress = \"h\"\nprot = 1\n[directory.c]\ntype = \"pop3\"\naddress = \"h\"\n",
    );
    let mut report = ptr::null_mut();
    assert_eq!(directory_config_check(path.as_ptr(), &mut report), CONFIG);
    let text = take_string(report);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "directory.a: ok");
    assert!(
        lines[1].ends_with("directory.b.prot: unknown key; did you mean 'port'?"),
        "{text}"
    );
    assert!(
        lines[2].contains("directory.c.type: unknown type 'pop3'"),
        "{text}"
    );
    assert!(
        last_error().contains("'port'") && last_error().contains("pop3"),
        "{}",
        last_error()
    );

    let good = config_file(
        "good.toml",
        "[directory.a]\ntype = \"imap\"\naddress = \"h\"\n",
    );
    let mut report = ptr::null_mut();
    assert_eq!(directory_config_check(good.as_ptr(), &mut report), OK);
    assert_eq!(take_string(report), "directory.a: ok\n");

    let broken = config_file("broken.toml", "[directory.a\n");
    let mut report = ptr::null_mut();
    assert_eq!(directory_config_check(broken.as_ptr(), &mut report), CONFIG);
    assert!(report.is_null(), "no report for a file that does not parse");
    assert!(last_error().contains("line 1"), "{}", last_error());
    assert_eq!(
        directory_config_check(good.as_ptr(), ptr::null_mut()),
        INVALID
    );
}

#[test]
fn metrics_text_counts_this_process_calls() {
    let config = c("[directory.ffi-metrics]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = 9\nlookup.domains = [\"example.org\"]\n");
    let mut dir = ptr::null_mut();
    assert_eq!(
        directory_open_str(config.as_ptr(), ptr::null(), &mut dir),
        OK
    );
    let domain = c("example.org");
    for _ in 0..3 {
        assert_eq!(directory_is_local_domain(dir, domain.as_ptr()), OK);
    }
    let other = c("example.net");
    assert_eq!(directory_is_local_domain(dir, other.as_ptr()), REJECTED);
    directory_close(dir);

    // Asking for the size first: INVALID_INPUT, and the size needed.
    let mut needed = 0usize;
    assert_eq!(directory_metrics(ptr::null_mut(), 0, &mut needed), INVALID);
    assert!(needed > 1);
    let mut small = [b'x' as std::ffi::c_char; 4];
    assert_eq!(
        directory_metrics(small.as_mut_ptr(), small.len(), &mut needed),
        INVALID
    );
    assert_eq!(small[0], 0, "an empty string when it does not fit");
    assert!(last_error().contains("too small"), "{}", last_error());
    let mut buf = vec![0 as std::ffi::c_char; needed + 4096];
    assert_eq!(
        directory_metrics(buf.as_mut_ptr(), buf.len(), ptr::null_mut()),
        OK
    );
    // SAFETY: directory_metrics wrote a NUL-terminated string into buf.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    for line in [
        "remote_directory_calls_total{directory=\"ffi-metrics\",op=\"is_local_domain\",result=\"ok\"} 3",
        "remote_directory_calls_total{directory=\"ffi-metrics\",op=\"is_local_domain\",result=\"rejected\"} 1",
        "remote_directory_call_duration_seconds_count{directory=\"ffi-metrics\",op=\"is_local_domain\"} 4",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}
