//! A connection plus its counters, and the rules for when it may serve another call.

use crate::config::{Protocol, Settings};
use crate::error::{Error, Kind, Result};
use crate::imap::ImapSession;
use crate::net::{Connection, Transport};
use crate::secret::Redactor;
use crate::smtp::SmtpSession;
use std::sync::Arc;
use std::time::Instant;

enum Link {
    Imap(ImapSession),
    Smtp(SmtpSession),
}

pub struct Session {
    link: Link,
    /// `host:port` of the server, for messages.
    server: String,
    /// RCPT TO commands sent on this connection.
    rcpts: u32,
    /// Failed authentications on this connection.
    auth_errors: u32,
}

/// What a call gives back: its result and, when the connection may serve again, the session.
pub type Outcome = (Result<()>, Option<Session>);

impl Session {
    pub fn open(settings: &Settings, tls: &Transport, deadline: Instant) -> Result<Self> {
        let server = tls.address().to_string();
        let link = match settings.protocol {
            Protocol::Imap => ImapSession::connect(settings, tls, deadline).map(Link::Imap),
            Protocol::Smtp | Protocol::Lmtp => {
                SmtpSession::connect(settings, tls, deadline).map(Link::Smtp)
            }
        }
        .map_err(|e| e.with_server(&server))?;
        Ok(Session {
            link,
            server,
            rcpts: 0,
            auth_errors: 0,
        })
    }

    fn connection(&mut self) -> &mut Connection {
        match &mut self.link {
            Link::Imap(s) => s.connection(),
            Link::Smtp(s) => s.connection(),
        }
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.connection().set_deadline(deadline);
    }

    /// Checks a password. An authenticated connection is never reused, except through IMAP
    /// UNAUTHENTICATE, which returns it to the not-authenticated state.
    pub fn auth(mut self, settings: &Settings, user: &str, secret: &str) -> Outcome {
        let conn = self.connection();
        if !conn.is_tls() && !conn.is_loopback() {
            // Nothing was sent: the connection is as good as before.
            return (
                Err(Error::cleartext().with_server(&self.server)),
                Some(self),
            );
        }
        // Whatever the server sends back during the exchange may quote the credentials.
        let redactor = Arc::new(Redactor::new(user, secret));
        self.connection().set_redactor(Some(redactor.clone()));
        let result = match &mut self.link {
            Link::Imap(s) => s.login(user, secret),
            Link::Smtp(s) => s.login(user, secret),
        };
        self.connection().set_redactor(None);
        let result = result.map_err(|e| e.redacted(&redactor).with_server(&self.server));
        match result {
            Ok(()) => {
                let reusable = match &mut self.link {
                    Link::Imap(s) => s.unauthenticate().unwrap_or(false),
                    Link::Smtp(_) => false,
                };
                if reusable {
                    return (Ok(()), Some(self));
                }
                self.close();
                (Ok(()), None)
            }
            Err(e) if e.kind().breaks_connection() => (Err(e), None),
            Err(e) => {
                // Servers ban clients after too many failures on one connection:
                // `limits.auth-errors` ends it first.
                self.auth_errors += 1;
                let keep = self.auth_errors < settings.max_auth_errors;
                let back = self.keep_if(keep);
                (Err(e), back)
            }
        }
    }

    /// Probes one recipient. Every RCPT sent counts toward `limits.rcpt`, whatever the answer:
    /// servers count rejected recipients toward their error limits per connection.
    pub fn rcpt(mut self, settings: &Settings, address: &str) -> Outcome {
        let result = match &mut self.link {
            Link::Imap(_) => Err(Error::new(
                Kind::Unsupported,
                "rcpt is not possible on an IMAP directory",
            )),
            Link::Smtp(s) => s.rcpt(address),
        }
        .map_err(|e| e.with_server(&self.server));
        match result {
            Err(e) if e.kind().breaks_connection() => (Err(e), None),
            result => {
                self.rcpts += 1;
                let keep = self.rcpts < settings.max_rcpts;
                let back = self.keep_if(keep);
                (result, back)
            }
        }
    }

    fn keep_if(self, keep: bool) -> Option<Session> {
        if keep {
            Some(self)
        } else {
            self.close();
            None
        }
    }

    /// Ends the session politely (LOGOUT / QUIT), without waiting for the answer.
    pub fn close(self) {
        match self.link {
            Link::Imap(s) => s.logout(),
            Link::Smtp(s) => s.quit(),
        }
    }
}
