//! The C API. The only `unsafe` of the crate lives here.
//!
//! Every exported function runs its body inside [`boundary!`], so a panic becomes
//! `DIRECTORY_RESULT_INTERNAL` instead of unwinding into C. Arguments are checked by the
//! `handle!` and `input!` macros before anything else happens.
#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C, where `unsafe fn` means nothing; each
// function's documentation states the pointer contract instead (as rustls-ffi does).
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::directory::{
    parse_client_ip, Directory, DIRECTORY_MAX_ADDRESS, DIRECTORY_MAX_CLIENT_IP,
    DIRECTORY_MAX_DOMAIN, DIRECTORY_MAX_SECRET, DIRECTORY_MAX_USER,
};
use crate::error::{Error, Kind};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

/// Result of every call. Values are ABI: never renumbered, never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum directory_result {
    /// Accepted / the recipient exists / the domain is local.
    DIRECTORY_RESULT_OK = 0,
    /// Wrong credentials / no such recipient / the domain is not local.
    DIRECTORY_RESULT_REJECTED = 1,
    /// Undecided now (network, timeout, TLS, a 4xx reply, a protocol error): try later.
    /// Never a reason to tell a user the password is wrong.
    DIRECTORY_RESULT_TEMPORARY = 2,
    /// The operation is impossible for this directory type (rcpt on imap).
    DIRECTORY_RESULT_UNSUPPORTED = 3,
    /// An argument is NULL, not UTF-8, contains CR/LF/NUL, or is too long. Nothing was sent.
    DIRECTORY_RESULT_INVALID_INPUT = 4,
    /// The configuration is missing, unreadable or invalid.
    DIRECTORY_RESULT_CONFIG = 5,
    /// A bug was contained at the boundary. Please report it.
    DIRECTORY_RESULT_INTERNAL = 6,
}

use directory_result::*;

/// An opaque, thread-safe directory handle, from `directory_open` or `directory_open_str`.
pub struct directory {
    _private: [u8; 0],
}

// A handle is shared by any number of threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Directory>()
};

/// The one place where error kinds become results (the statistics' `result` label and
/// remote-directoryd's protocols too).
pub fn result_of(kind: Kind) -> directory_result {
    match kind {
        Kind::InvalidInput => DIRECTORY_RESULT_INVALID_INPUT,
        Kind::Config => DIRECTORY_RESULT_CONFIG,
        Kind::Unsupported => DIRECTORY_RESULT_UNSUPPORTED,
        Kind::Rejected => DIRECTORY_RESULT_REJECTED,
        Kind::Network
        | Kind::Timeout
        | Kind::Tls
        | Kind::Protocol
        | Kind::Deferred
        | Kind::Cleartext
        | Kind::PoolTimeout
        | Kind::Throttled => DIRECTORY_RESULT_TEMPORARY,
        Kind::Internal => DIRECTORY_RESULT_INTERNAL,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Longest message kept for `directory_last_error`, in characters: a server's line can be
/// 8 KiB, a C caller's log line should not be. Cut after redaction, never before it.
const MAX_LAST_ERROR: usize = 1024;

fn set_last_error(message: &str) {
    let mut text: String = message.chars().take(MAX_LAST_ERROR).collect();
    if text.len() < message.len() {
        text.push_str("...");
    }
    // Messages are made printable upstream; a stray NUL must still not lose the message.
    let c = CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Sets the thread's last error from the outcome of a call and returns its result.
fn finish(outcome: crate::error::Result<()>) -> directory_result {
    match outcome {
        Ok(()) => {
            // An OK that needs a word (served stale: `cache.stale-if-error`) says so.
            if let Some(notice) = crate::directory::take_notice() {
                set_last_error(&notice);
            }
            DIRECTORY_RESULT_OK
        }
        Err(e) => {
            set_last_error(&e.to_string());
            result_of(e.kind())
        }
    }
}

/// Runs the body with the last error cleared, turning a panic into INTERNAL.
macro_rules! boundary {
    ($($body:tt)*) => {{
        set_last_error("");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> directory_result { $($body)* })) {
            Ok(result) => result,
            Err(_) => {
                set_last_error("internal error: a panic was contained at the C boundary; please report it");
                DIRECTORY_RESULT_INTERNAL
            }
        }
    }};
}

/// `&Directory` from a handle pointer, or INVALID_INPUT for NULL.
macro_rules! handle {
    ($ptr:expr) => {{
        let ptr = $ptr as *const Directory;
        if ptr.is_null() {
            return finish(Err(Error::input("directory handle is NULL")));
        }
        // SAFETY: non-NULL handles come from `directory_open*` (a leaked Box<Directory>)
        // and the caller promises not to close it while other calls run.
        unsafe { &*ptr }
    }};
}

/// `&str` from a C string: NULL, non-UTF-8 and over-long values are INVALID_INPUT.
macro_rules! input {
    ($ptr:expr, $what:expr, $max:expr) => {
        // SAFETY: the caller passes NULL or a NUL-terminated string valid during the call.
        match unsafe { c_str($ptr, $what, $max) } {
            Ok(s) => s,
            Err(e) => return finish(Err(e)),
        }
    };
}

/// # Safety
/// `ptr` is NULL or a NUL-terminated string that outlives `'a`.
unsafe fn c_str<'a>(ptr: *const c_char, what: &str, max: usize) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(Error::input(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promised.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    if bytes.len() > max {
        return Err(Error::input(format!("{what} is longer than {max} bytes")));
    }
    std::str::from_utf8(bytes).map_err(|_| Error::input(format!("{what} is not valid UTF-8")))
}

/// Largest configuration text accepted by `directory_open_str`, and path length.
const MAX_CONFIG_TEXT: usize = 16 << 20;
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 1024;

fn open_with(
    out: *mut *mut directory,
    name: *const c_char,
    open: impl FnOnce(Option<&str>) -> crate::error::Result<Directory>,
) -> directory_result {
    if out.is_null() {
        return finish(Err(Error::input("out is NULL")));
    }
    // SAFETY: `name` is NULL or a NUL-terminated string, as for every string argument.
    let name = match unsafe { optional_name(name) } {
        Ok(n) => n,
        Err(e) => return finish(Err(e)),
    };
    match open(name) {
        Ok(dir) => {
            // SAFETY: `out` is non-NULL and points to writable storage for a pointer.
            unsafe { *out = Box::into_raw(Box::new(dir)) as *mut directory };
            DIRECTORY_RESULT_OK
        }
        Err(e) => finish(Err(e)),
    }
}

/// # Safety
/// As [`c_str`].
unsafe fn optional_name<'a>(name: *const c_char) -> Result<Option<&'a str>, Error> {
    if name.is_null() {
        Ok(None)
    } else {
        c_str(name, "name", MAX_NAME).map(Some)
    }
}

/// Opens the directory `name` of the TOML configuration file at `config_path`.
///
/// `name` selects `[directory.<name>]`; it may be NULL when the file defines exactly one
/// directory. Other tables of the file are ignored, so a whole Stalwart configuration file
/// can be given. On `DIRECTORY_RESULT_OK`, `*out` receives a handle to free with
/// `directory_close`; on any other result `*out` is left untouched and
/// `directory_last_error()` names the file, the key and, for syntax errors, the line.
///
/// No network traffic happens here. Thread-safe.
#[no_mangle]
pub extern "C" fn directory_open(
    config_path: *const c_char,
    name: *const c_char,
    out: *mut *mut directory,
) -> directory_result {
    boundary! {
        let path = input!(config_path, "config_path", MAX_PATH);
        open_with(out, name, |name| Directory::open(Path::new(path), name))
    }
}

/// As `directory_open`, with the TOML text itself instead of a file path.
///
/// Thread-safe.
#[no_mangle]
pub extern "C" fn directory_open_str(
    config_toml: *const c_char,
    name: *const c_char,
    out: *mut *mut directory,
) -> directory_result {
    boundary! {
        let text = input!(config_toml, "config_toml", MAX_CONFIG_TEXT);
        open_with(out, name, |name| Directory::open_str(text, name))
    }
}

/// Asks the remote server whether `secret` is the password of `user`.
///
/// Returns OK (accepted), REJECTED (wrong user or password), TEMPORARY (nothing decided:
/// network, timeout, TLS, a temporary reply; never treat it as a wrong password),
/// UNSUPPORTED (an SMTP/LMTP server that offers neither AUTH PLAIN nor AUTH LOGIN),
/// INVALID_INPUT (NULL, not UTF-8, NUL/CR/LF, empty, user over 320 or secret over 4096
/// bytes: nothing was sent). Blocks for at most `timeout` after a connection slot was
/// obtained (`pool.timeout.wait`). The secret is never logged nor put in an error message;
/// the library's copies are zeroized. Thread-safe: any number of threads may call this on one
/// handle at once.
#[no_mangle]
pub extern "C" fn directory_auth(
    dir: *mut directory,
    user: *const c_char,
    secret: *const c_char,
) -> directory_result {
    boundary! {
        let dir = handle!(dir);
        let user = input!(user, "user", DIRECTORY_MAX_USER);
        let secret = input!(secret, "secret", DIRECTORY_MAX_SECRET);
        finish(dir.auth(user, secret))
    }
}

/// As `directory_auth`, for a login that came from `client_ip`: an IPv4 or IPv6 address as
/// text, without port, brackets or zone (`"203.0.113.5"`, `"2001:db8::1"`). NULL means the
/// address is unknown, exactly as `directory_auth`.
///
/// The address is what `throttle.client` counts, and with `forward.client-ip = true` it is
/// told to the server (IMAP `ID`, SMTP/LMTP `XCLIENT`), so the server's own defences see the
/// client rather than this relay. A `client_ip` that is not an IP address is INVALID_INPUT
/// and nothing is sent. Beyond a `throttle.*` budget the result is TEMPORARY without any
/// traffic, and `directory_last_error()` says who is throttled and until when. Other
/// results, blocking and secrets as `directory_auth`. Thread-safe.
#[no_mangle]
pub extern "C" fn directory_auth_from(
    dir: *mut directory,
    user: *const c_char,
    secret: *const c_char,
    client_ip: *const c_char,
) -> directory_result {
    boundary! {
        let dir = handle!(dir);
        let user = input!(user, "user", DIRECTORY_MAX_USER);
        let secret = input!(secret, "secret", DIRECTORY_MAX_SECRET);
        let client_ip = match client_ip.is_null() {
            true => None,
            false => {
                let text = input!(client_ip, "client_ip", DIRECTORY_MAX_CLIENT_IP);
                match parse_client_ip(text) {
                    Ok(ip) => Some(ip),
                    Err(e) => return finish(Err(e)),
                }
            }
        };
        finish(dir.auth_from(user, secret, client_ip))
    }
}

/// Asks the remote SMTP or LMTP server whether `address` is a recipient it accepts
/// (`MAIL FROM:<>` then `RCPT TO:<address>`; no mail is sent).
///
/// Returns OK (2xx), REJECTED (5xx), TEMPORARY (4xx, network, refused MAIL FROM, ...),
/// UNSUPPORTED (an IMAP directory), INVALID_INPUT (as for `directory_auth`, plus `<`, `>`
/// or a space outside quotes; over 320 bytes). `lookup.domains` is not consulted.
/// Thread-safe: any number of threads may call this on one handle at once.
#[no_mangle]
pub extern "C" fn directory_rcpt(dir: *mut directory, address: *const c_char) -> directory_result {
    boundary! {
        let dir = handle!(dir);
        let address = input!(address, "address", DIRECTORY_MAX_ADDRESS);
        finish(dir.rcpt(address))
    }
}

/// Whether `domain` is one of `lookup.domains` (case-insensitive; a trailing dot is
/// ignored): OK if it is, REJECTED if not, INVALID_INPUT for bad input. No network traffic.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn directory_is_local_domain(
    dir: *const directory,
    domain: *const c_char,
) -> directory_result {
    boundary! {
        let dir = handle!(dir);
        let domain = input!(domain, "domain", DIRECTORY_MAX_DOMAIN);
        finish(dir.is_local_domain(domain))
    }
}

/// Writes a string made here to `*out`, for the caller to free with `directory_string_free`.
fn give_string(out: *mut *mut c_char, text: String) {
    // Rendered text never holds a NUL (TOML strings escape it); replace one all the same
    // rather than lose the text.
    let c = CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default();
    // SAFETY: `out` was checked to be non-NULL and points to writable storage for a pointer.
    unsafe { *out = c.into_raw() };
}

/// The effective configuration of directory `name` of the TOML file at `config_path`, or of
/// every directory of it when `name` is NULL: the `[directory.<name>]` tables with every key
/// and the value in force (defaults filled in, the older key names replaced by the current
/// ones, secrets masked as `********`, keys without a value as comments). The text opens again
/// as the same configuration, secrets aside.
///
/// On `DIRECTORY_RESULT_OK`, `*out` receives a NUL-terminated string allocated by the library:
/// free it with `directory_string_free`, never with `free()`. On any other result `*out` is
/// left untouched: CONFIG when the file or any selected directory is invalid
/// (`directory_last_error()` lists every invalid directory, one per line), INVALID_INPUT for
/// a NULL `config_path` or `out`. No network traffic; thread-safe.
#[no_mangle]
pub extern "C" fn directory_config_show(
    config_path: *const c_char,
    name: *const c_char,
    out: *mut *mut c_char,
) -> directory_result {
    boundary! {
        let path = input!(config_path, "config_path", MAX_PATH);
        if out.is_null() {
            return finish(Err(Error::input("out is NULL")));
        }
        // SAFETY: `name` is NULL or a NUL-terminated string, as for every string argument.
        let name = match unsafe { optional_name(name) } {
            Ok(n) => n,
            Err(e) => return finish(Err(e)),
        };
        match crate::effective::show_file(Path::new(path), name) {
            Ok(text) => {
                give_string(out, text);
                DIRECTORY_RESULT_OK
            }
            Err(e) => finish(Err(e)),
        }
    }
}

/// Checks every directory of the TOML file at `config_path`, all of them even when one is
/// invalid, as `directory_open` would read each (no network traffic).
///
/// Returns OK when every directory is valid, CONFIG otherwise (and when the file cannot be
/// read or parsed), INVALID_INPUT for a NULL `config_path` or `report`. When the file could
/// be parsed (OK, and CONFIG for invalid directories), `*report` receives a NUL-terminated
/// string allocated by the library, one line per directory: `directory.NAME: ok` or that
/// directory's error. Free it with `directory_string_free`. When the file cannot be read or
/// parsed, `*report` is left untouched and `directory_last_error()` says why. Thread-safe.
#[no_mangle]
pub extern "C" fn directory_config_check(
    config_path: *const c_char,
    report: *mut *mut c_char,
) -> directory_result {
    boundary! {
        let path = input!(config_path, "config_path", MAX_PATH);
        if report.is_null() {
            return finish(Err(Error::input("report is NULL")));
        }
        let mut text = String::new();
        let outcome = crate::effective::check_file(Path::new(path), &mut text);
        if !text.is_empty() {
            give_string(report, text);
        }
        finish(outcome)
    }
}

/// Frees a string returned by `directory_config_show` or `directory_config_check`. NULL is
/// a no-op. Each string is freed once, with this function only. Thread-safe.
#[no_mangle]
pub extern "C" fn directory_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `s` came from `CString::into_raw` in `give_string` and is freed once.
        drop(unsafe { CString::from_raw(s) });
    }));
}

/// Frees a handle and closes its idle connections (sending LOGOUT/QUIT without waiting).
///
/// NULL is a no-op. Call it once, after every other call on this handle has returned; the
/// handle must not be used afterwards.
#[no_mangle]
pub extern "C" fn directory_close(dir: *mut directory) {
    if dir.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `dir` came from `Box::into_raw` in `directory_open*` and is freed once.
        drop(unsafe { Box::from_raw(dir as *mut Directory) });
    }));
}

/// The message of this thread's last call that did not return OK: the server, the command
/// (never a secret) and the server's reply, e.g.
/// `imap.example.org:993: AUTHENTICATE PLAIN: NO [AUTHENTICATIONFAILED] Authentication failed.`
///
/// Every call but this one, `directory_result_name` and `directory_version` resets it; it is
/// "" after a call that returned OK, except an OK that `directory_auth` or `directory_rcpt`
/// answered from an expired cache entry because no server could be reached
/// (`cache.stale-if-error`): then it says so and names each server's error. The pointer stays valid until the next call on the
/// same thread; never NULL; do not free it. Thread-safe (each thread has its own).
#[no_mangle]
pub extern "C" fn directory_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The name of a result: "OK", "REJECTED", "TEMPORARY", "UNSUPPORTED", "INVALID_INPUT",
/// "CONFIG", "INTERNAL", or "UNKNOWN" for any other value. Static string; thread-safe.
#[no_mangle]
pub extern "C" fn directory_result_name(result: u32) -> *const c_char {
    let name: &'static CStr = match result {
        0 => c"OK",
        1 => c"REJECTED",
        2 => c"TEMPORARY",
        3 => c"UNSUPPORTED",
        4 => c"INVALID_INPUT",
        5 => c"CONFIG",
        6 => c"INTERNAL",
        _ => c"UNKNOWN",
    };
    name.as_ptr()
}

/// The library's version, e.g. "0.1.0". Static string; thread-safe.
#[no_mangle]
pub extern "C" fn directory_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// This process's call statistics in the Prometheus text format (version 0.0.4): the
/// counters and histograms of every directory opened in this process, under the names
/// remote-directoryd serves on `/metrics` (`remote_directory_calls_total{directory,op,result}`,
/// `remote_directory_call_duration_seconds`, `remote_directory_cache_hits_total`,
/// `remote_directory_connections_total`, ...). Counters are per directory name and live as
/// long as the process, across `directory_close` and reopening.
///
/// Writes the text and a terminating NUL into `buf` of `size` bytes, and the size it needs
/// (text plus NUL) into `*needed` when `needed` is not NULL. Returns OK when it fit;
/// INVALID_INPUT when `buf` is NULL or `size` is too small (then `buf`, if not NULL and
/// `size` > 0, holds an empty string): call again with at least `*needed` bytes, plus some
/// room, since counters may have grown meanwhile. `buf` is the caller's; nothing is kept.
/// Thread-safe: any thread, any time, concurrently with calls on any handle.
#[no_mangle]
pub extern "C" fn directory_metrics(
    buf: *mut c_char,
    size: usize,
    needed: *mut usize,
) -> directory_result {
    boundary! {
        let text = crate::stats::prometheus_text(&crate::stats::snapshot());
        let want = text.len() + 1;
        if !needed.is_null() {
            // SAFETY: non-NULL `needed` points to writable storage for a size_t.
            unsafe { *needed = want };
        }
        if buf.is_null() {
            return finish(Err(Error::input("buf is NULL")));
        }
        // SAFETY: the caller promises `buf` points to `size` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, size) };
        if size < want {
            if let Some(first) = out.first_mut() {
                *first = 0;
            }
            return finish(Err(Error::input(format!(
                "buffer of {size} bytes is too small: {want} needed"
            ))));
        }
        out[..text.len()].copy_from_slice(text.as_bytes());
        out[text.len()] = 0;
        DIRECTORY_RESULT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panicking() -> directory_result {
        boundary! {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: the kind of bug the boundary must contain.
            finish(if v[usize::MAX / 2] == 0 { Ok(()) } else { Err(Error::input("x")) })
        }
    }

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = panicking();
        std::panic::set_hook(hook);
        assert_eq!(result, DIRECTORY_RESULT_INTERNAL);
        let msg = unsafe { CStr::from_ptr(directory_last_error()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("panic was contained"), "{msg}");
    }

    #[test]
    fn long_messages_are_cut_for_c() {
        set_last_error(&"x".repeat(9000));
        let msg = unsafe { CStr::from_ptr(directory_last_error()) }
            .to_str()
            .unwrap();
        assert_eq!(msg.len(), MAX_LAST_ERROR + 3);
        assert!(msg.ends_with("..."));
    }

    #[test]
    fn every_kind_maps_to_its_result() {
        assert_eq!(result_of(Kind::Rejected), DIRECTORY_RESULT_REJECTED);
        assert_eq!(result_of(Kind::Cleartext), DIRECTORY_RESULT_TEMPORARY);
        assert_eq!(result_of(Kind::PoolTimeout), DIRECTORY_RESULT_TEMPORARY);
        assert_eq!(result_of(Kind::Deferred), DIRECTORY_RESULT_TEMPORARY);
        assert_eq!(result_of(Kind::Throttled), DIRECTORY_RESULT_TEMPORARY);
        assert_eq!(result_of(Kind::Config), DIRECTORY_RESULT_CONFIG);
        assert_eq!(
            result_of(Kind::InvalidInput),
            DIRECTORY_RESULT_INVALID_INPUT
        );
    }
}
