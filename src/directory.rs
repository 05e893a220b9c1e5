//! The Rust API: a directory handle that answers auth, rcpt and local-domain questions.

use crate::config::{self, normalize_domain, Protocol, Settings};
use crate::error::{Error, Kind, Result};
use crate::net::TlsContext;
use crate::pool::Pool;
use crate::session::{Outcome, Session};
use std::path::Path;
use std::time::Instant;

/// Longest user name accepted by `directory_auth`, in bytes (NUL excluded).
pub const DIRECTORY_MAX_USER: usize = 320;
/// Longest secret accepted by `directory_auth`, in bytes.
pub const DIRECTORY_MAX_SECRET: usize = 4096;
/// Longest address accepted by `directory_rcpt`, in bytes.
pub const DIRECTORY_MAX_ADDRESS: usize = 320;
/// Longest domain accepted by `directory_is_local_domain`, in bytes.
pub const DIRECTORY_MAX_DOMAIN: usize = 255;

/// A remote directory: its settings, its TLS context and its idle connections. Shared by
/// any number of threads; every call blocks the calling thread only.
pub struct Directory {
    settings: Settings,
    tls: TlsContext,
    pool: Pool,
}

impl Directory {
    /// Opens directory `name` (or the only one) of the configuration file at `path`.
    pub fn open(path: &Path, name: Option<&str>) -> Result<Self> {
        Self::with_settings(config::load_file(path, name)?)
    }

    /// Opens directory `name` (or the only one) of configuration text.
    pub fn open_str(toml: &str, name: Option<&str>) -> Result<Self> {
        Self::with_settings(config::load_str(toml, name)?)
    }

    pub fn with_settings(settings: Settings) -> Result<Self> {
        let tls = TlsContext::new(&settings).map_err(|e| {
            Error::new(
                e.kind(),
                format!("directory.{}.{}", settings.name, e.detail()),
            )
        })?;
        let pool = Pool::new(settings.max_connections, settings.wait_timeout);
        Ok(Directory {
            settings,
            tls,
            pool,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Is `secret` the password of `user`? `Ok(())` when the server accepted it;
    /// `Kind::Rejected` when it refused it; other kinds when nothing was decided.
    pub fn auth(&self, user: &str, secret: &str) -> Result<()> {
        check_text("user", user, DIRECTORY_MAX_USER)?;
        check_secret(secret)?;
        self.call(|session| session.auth(&self.settings, user, secret))
    }

    /// Does `address` exist? `Ok(())` when the server accepted it as a recipient;
    /// `Kind::Rejected` when it refused it; `Kind::Unsupported` on an IMAP directory.
    /// `lookup.domains` is not consulted.
    pub fn rcpt(&self, address: &str) -> Result<()> {
        check_address(address)?;
        if self.settings.protocol == Protocol::Imap {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "directory '{}' is of type imap: it cannot check recipients",
                    self.settings.name
                ),
            ));
        }
        self.call(|session| session.rcpt(&self.settings, address))
    }

    /// Is `domain` in `lookup.domains`? Case-insensitive; a trailing dot is ignored.
    /// `Kind::Rejected` when it is not. No network.
    pub fn is_local_domain(&self, domain: &str) -> Result<()> {
        check_text("domain", domain, DIRECTORY_MAX_DOMAIN)?;
        let wanted = normalize_domain(domain);
        if self.settings.domains.contains(&wanted) {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Rejected,
                format!(
                    "'{domain}' is not in directory.{}.lookup.domains",
                    self.settings.name
                ),
            ))
        }
    }

    /// Runs one operation on a pooled session. A reused session that the server closed while
    /// it was idle is replaced once by a fresh connection, so the caller gets the real answer.
    fn call(&self, op: impl Fn(Session) -> Outcome) -> Result<()> {
        let mut slot = self.pool.acquire()?;
        let deadline = Instant::now() + self.settings.timeout;
        if let Some(mut session) = slot.take_idle() {
            session.set_deadline(deadline);
            match op(session) {
                (Err(e), None) if e.kind() == Kind::Network => {
                    // Stale: its idle siblings probably went the same way.
                    for idle in self.pool.drain_idle() {
                        drop(idle);
                    }
                }
                (result, back) => {
                    slot.release(back);
                    return result;
                }
            }
        }
        let session = Session::open(&self.settings, &self.tls, deadline)?;
        let (result, back) = op(session);
        slot.release(back);
        result
    }

    /// Connections open now (idle and in use).
    pub fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }

    /// Connections open and idle now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_connections()
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        for mut session in self.pool.drain_idle() {
            session.set_deadline(deadline);
            session.close();
        }
    }
}

/// No NUL, CR or LF anywhere; not empty; bounded.
fn check_common(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::input(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(Error::input(format!("{what} is longer than {max} bytes")));
    }
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(Error::input(format!("{what} contains NUL, CR or LF")));
    }
    Ok(())
}

/// User names, addresses and domains: no control characters at all.
fn check_text(what: &str, value: &str, max: usize) -> Result<()> {
    check_common(what, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(Error::input(format!("{what} contains a control character")));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<()> {
    check_common("secret", secret, DIRECTORY_MAX_SECRET)
}

/// A mailbox for `RCPT TO:<...>`: no angle brackets, spaces only inside a quoted local part.
fn check_address(address: &str) -> Result<()> {
    check_text("address", address, DIRECTORY_MAX_ADDRESS)?;
    if address.contains(['<', '>']) {
        return Err(Error::input("address contains '<' or '>'"));
    }
    let mut quoted = false;
    let mut escaped = false;
    for c in address.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => {
                return Err(Error::input("address contains a space outside quotes"))
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Error::input("address has an unterminated quote"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::open_str(
            "[directory.d]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = 1\nlookup.domains = [\"Example.org\", \"mail.example.net.\"]\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn local_domains_ignore_case_and_trailing_dot() {
        let d = dir();
        for yes in [
            "example.org",
            "EXAMPLE.ORG",
            "example.org.",
            "Mail.Example.Net",
        ] {
            assert!(d.is_local_domain(yes).is_ok(), "{yes}");
        }
        for no in [
            "example.com",
            "sub.example.org",
            "example.org..",
            "xample.org",
        ] {
            assert_eq!(
                d.is_local_domain(no).unwrap_err().kind(),
                Kind::Rejected,
                "{no}"
            );
        }
        assert_eq!(
            d.is_local_domain("").unwrap_err().kind(),
            Kind::InvalidInput
        );
    }

    #[test]
    fn bad_input_is_refused_before_any_connection() {
        let d = dir();
        let long = "a".repeat(DIRECTORY_MAX_ADDRESS + 1);
        for bad in [
            "",
            "a\r\nb@x",
            "a\nb",
            "a\0b",
            "<a@b>",
            "a>b",
            "a b@x",
            "\"a b@x",
            long.as_str(),
            "a\tb@x",
            "a\x1b@x",
        ] {
            let e = d.rcpt(bad).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad:?}: {e}");
        }
        assert!(check_address("\"john doe\"@example.org").is_ok());
        assert!(check_address("\"a\\\" b\"@x").is_ok());
        let e = d
            .auth("alice", &"p".repeat(DIRECTORY_MAX_SECRET + 1))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(!e.to_string().contains("ppp"), "never echo the secret");
        assert_eq!(d.auth("alice", "").unwrap_err().kind(), Kind::InvalidInput);
        assert_eq!(
            d.auth("alice", "a\rb").unwrap_err().kind(),
            Kind::InvalidInput
        );
        assert_eq!(
            d.auth(&"u".repeat(DIRECTORY_MAX_USER + 1), "x")
                .unwrap_err()
                .kind(),
            Kind::InvalidInput
        );
        assert_eq!(
            d.auth("al\nice", "x").unwrap_err().kind(),
            Kind::InvalidInput
        );
        assert_eq!(d.open_connections(), 0, "nothing was sent");
    }

    #[test]
    fn rcpt_on_imap_is_unsupported() {
        let d = Directory::open_str(
            "[directory.i]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = 1\n",
            None,
        )
        .unwrap();
        assert_eq!(
            d.rcpt("alice@example.org").unwrap_err().kind(),
            Kind::Unsupported
        );
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let e = Directory::open_str(
            "[directory.d]\ntype = \"imap\"\naddress = \"h\"\ntls.ca-file = \"/nonexistent/ca.pem\"\n",
            None,
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), Kind::Config);
        assert!(
            e.to_string()
                .contains("directory.d.tls.ca-file: /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
    }
}
