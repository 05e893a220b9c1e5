//! The one error type of the crate: what went wrong, where (server), while doing what
//! (command, never with a secret argument) and what came back (the server's reply).
//!
//! Its `Display` is the text the C caller reads from `directory_last_error()`.

use std::fmt;

/// What kind of failure this is. The FFI layer maps each kind to a `directory_result` in one
/// exhaustive match; what a server reply *means* is decided by the protocol modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's argument is unusable (NULL, not UTF-8, CR/LF/NUL, too long).
    InvalidInput,
    /// The configuration is missing, unreadable or invalid.
    Config,
    /// The operation is impossible for this directory type (rcpt on IMAP).
    Unsupported,
    /// The server gave a definite no: wrong credentials, no such recipient, not local.
    Rejected,
    /// Connect, resolve, read or write failed, or the server closed the connection.
    Network,
    /// The deadline of the call passed.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The server said something this client cannot interpret or must not trust.
    Protocol,
    /// The server answered with a temporary refusal or a reply that decides nothing.
    Deferred,
    /// Sending credentials would expose them (no TLS to a non-loopback host).
    Cleartext,
    /// No connection slot became free within `pool.timeout.wait`.
    PoolTimeout,
    /// A failure budget (`throttle.user`, `throttle.client`) is used up: nothing was sent.
    Throttled,
    /// A bug, contained.
    Internal,
}

impl Kind {
    /// Failures of the connection itself: the session cannot be used again.
    pub(crate) fn breaks_connection(self) -> bool {
        matches!(
            self,
            Kind::Network | Kind::Timeout | Kind::Tls | Kind::Protocol | Kind::Internal
        )
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: Kind,
    /// `host:port` of the remote server, when one was involved.
    server: Option<String>,
    /// The command as sent, with any secret argument elided (e.g. `AUTHENTICATE PLAIN`).
    command: Option<String>,
    /// The server's reply or a description of what failed.
    detail: String,
}

impl Error {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            server: None,
            command: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn input(detail: impl Into<String>) -> Self {
        Error::new(Kind::InvalidInput, detail)
    }

    pub(crate) fn config(detail: impl Into<String>) -> Self {
        Error::new(Kind::Config, detail)
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Error::new(Kind::Protocol, detail)
    }

    /// Refusing to send credentials without TLS to a non-loopback host.
    pub(crate) fn cleartext() -> Self {
        Error::new(
            Kind::Cleartext,
            "server offers no STARTTLS; credentials are not sent in clear text to a non-loopback address",
        )
    }

    /// Maps an I/O error: timeouts are `Timeout`, everything else `Network`.
    pub(crate) fn io(what: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let kind = match err.kind() {
            WouldBlock | TimedOut => Kind::Timeout,
            _ => Kind::Network,
        };
        let detail = match err.kind() {
            WouldBlock | TimedOut => format!("{what}: timed out"),
            UnexpectedEof => format!("{what}: connection closed by server"),
            _ => format!("{what}: {err}"),
        };
        Error::new(kind, detail)
    }

    pub(crate) fn with_server(mut self, server: &str) -> Self {
        if self.server.is_none() {
            self.server = Some(server.to_owned());
        }
        self
    }

    pub(crate) fn with_command(mut self, command: &str) -> Self {
        if self.command.is_none() {
            self.command = Some(command.to_owned());
        }
        self
    }

    /// The same error with every wire form of a credential cut out of its text.
    pub(crate) fn redacted(mut self, redactor: &crate::secret::Redactor) -> Self {
        self.detail = redactor.apply(&self.detail);
        self
    }

    /// The same error with a note on which setting bounded it.
    pub(crate) fn noted(mut self, note: &str) -> Self {
        self.detail.push_str(&format!(" ({note})"));
        self
    }

    /// The same answer, marked as coming from the cache.
    pub(crate) fn cached(mut self) -> Self {
        self.detail.push_str(" (cached)");
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }

    /// The reply or failure description without server and command.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(server) = &self.server {
            write!(f, "{server}: ")?;
        }
        if let Some(command) = &self.command {
            write!(f, "{command}: ")?;
        }
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Server bytes made safe for a message: invalid UTF-8 and control characters (NUL, CR,
/// escape sequences) become U+FFFD, so a C caller gets a clean string it can log.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_server_command_and_reply() {
        let e = Error::new(
            Kind::Rejected,
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
        )
        .with_server("imap.example.org:993")
        .with_command("AUTHENTICATE PLAIN");
        assert_eq!(
            e.to_string(),
            "imap.example.org:993: AUTHENTICATE PLAIN: NO [AUTHENTICATIONFAILED] Authentication failed."
        );
    }

    #[test]
    fn first_context_wins() {
        let e = Error::protocol("x")
            .with_command("EHLO")
            .with_command("AUTH PLAIN");
        assert_eq!(e.command(), Some("EHLO"));
    }

    #[test]
    fn printable_removes_controls_and_bad_utf8() {
        assert_eq!(
            printable(b"550 no\0such\x1b[31m \xff user"),
            "550 no\u{fffd}such\u{fffd}[31m \u{fffd} user"
        );
        assert_eq!(printable("ok wörd\t!".as_bytes()), "ok wörd\t!");
    }

    #[test]
    fn timeouts_are_timeouts() {
        let io = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        assert_eq!(Error::io("read", &io).kind(), Kind::Timeout);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Error::io("read", &io).kind(), Kind::Network);
    }
}
