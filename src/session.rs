//! A connection plus its counters, and the rules for when it may serve another call.

use crate::config::{Protocol, Settings};
use crate::error::{Error, Kind, Result};
use crate::imap::ImapSession;
use crate::net::{Connection, Transport};
use crate::secret::Redactor;
use crate::smtp::SmtpSession;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

enum Link {
    Imap(ImapSession),
    Smtp(SmtpSession),
}

/// Which client a connection speaks for, with `forward.client-ip`. Servers honour only the
/// first client named on a connection, so once bound it serves that client only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Nothing said yet (IMAP, where `ID` comes just before the login).
    Open,
    /// Named this client (`Some`), or spoke as the relay itself (`None`: address unknown,
    /// or recipient probes).
    Bound(Option<IpAddr>),
}

pub struct Session {
    link: Link,
    /// `host:port` of the server, for messages.
    server: String,
    binding: Binding,
    /// RCPT TO commands sent on this connection.
    rcpts: u32,
    /// Failed authentications on this connection.
    auth_errors: u32,
}

/// What a call gives back: its result and, when the connection may serve again, the session.
pub type Outcome = (Result<()>, Option<Session>);

impl Session {
    /// Opens a connection. With `forward.client-ip`, an SMTP/LMTP connection is bound to
    /// `client` at once (XCLIENT comes before STARTTLS); an IMAP one when it first logs in.
    pub fn open(
        settings: &Settings,
        tls: &Transport,
        deadline: Instant,
        client: Option<IpAddr>,
    ) -> Result<Self> {
        let server = tls.address().to_string();
        let forwarding = settings.guard.forward_client_ip;
        let (link, binding) = match settings.protocol {
            Protocol::Imap => (
                ImapSession::connect(settings, tls, deadline).map(Link::Imap),
                Binding::Open,
            ),
            Protocol::Smtp | Protocol::Lmtp => {
                let xclient = client.filter(|_| forwarding);
                (
                    SmtpSession::connect(settings, tls, deadline, xclient).map(Link::Smtp),
                    Binding::Bound(xclient),
                )
            }
        };
        let link = link.map_err(|e| e.with_server(&server))?;
        Ok(Session {
            link,
            server,
            binding,
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

    /// Checks that an idle connection still answers (NOOP) before it serves a call.
    pub fn check(&mut self) -> Result<()> {
        match &mut self.link {
            Link::Imap(s) => s.noop(),
            Link::Smtp(s) => s.noop(),
        }
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.connection().set_deadline(deadline);
    }

    /// Whether this connection may serve a call for `client`: always without
    /// `forward.client-ip`; otherwise if it is not yet bound, or bound to that client.
    pub fn serves(&self, settings: &Settings, client: Option<IpAddr>) -> bool {
        !settings.guard.forward_client_ip
            || match self.binding {
                Binding::Open => true,
                Binding::Bound(bound) => bound == client,
            }
    }

    /// With `forward.client-ip`, names the client before the first login of an IMAP
    /// connection (SMTP did at connect). A refusal ends the connection: it was not told.
    fn bind(&mut self, settings: &Settings, client: Option<IpAddr>) -> Result<()> {
        if !settings.guard.forward_client_ip || self.binding != Binding::Open {
            return Ok(());
        }
        if let (Link::Imap(s), Some(ip)) = (&mut self.link, client) {
            s.tell_client(ip)?;
        }
        self.binding = Binding::Bound(client);
        Ok(())
    }

    /// Checks a password. An authenticated connection is never reused, except through IMAP
    /// UNAUTHENTICATE, which returns it to the not-authenticated state.
    pub fn auth(
        mut self,
        settings: &Settings,
        user: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Outcome {
        let conn = self.connection();
        if !conn.is_tls() && !conn.is_loopback() {
            // Nothing was sent: the connection is as good as before.
            return (
                Err(Error::cleartext().with_server(&self.server)),
                Some(self),
            );
        }
        if let Err(e) = self.bind(settings, client) {
            let e = e.with_server(&self.server);
            self.close();
            return (Err(e), None);
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
