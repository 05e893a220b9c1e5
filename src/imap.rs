//! IMAP client: greeting, capabilities, STARTTLS and authentication.
//!
//! The parsing half is pure functions over one line of bytes; [`ImapSession`] drives them
//! over a [`Connection`].

use crate::config::Settings;
use crate::error::{printable, Error, Kind, Result};
use crate::net::{Connection, Transport};
use crate::secret::{base64_secret, sasl_plain};
use std::net::IpAddr;
use std::time::Instant;
use zeroize::Zeroizing;

/// Untagged lines tolerated before one tagged reply; the deadline bounds time, this bounds
/// a server that streams lines forever.
const MAX_UNTAGGED: usize = 1000;
/// Most literal bytes skipped in untagged lines while waiting for one tagged reply: real
/// servers send none before a login's reply.
const MAX_SKIPPED_LITERALS: usize = 1 << 20;

/// One server line, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `* ...`: the text after `* `.
    Untagged(&'a [u8]),
    /// `+ ...`: a continuation request, with its text.
    Continuation(&'a [u8]),
    /// `tag STATUS [code] text`.
    Tagged(Tagged<'a>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Tagged<'a> {
    pub tag: &'a [u8],
    pub status: Status,
    /// The response code without brackets, e.g. `AUTHENTICATIONFAILED` or `CAPABILITY ...`.
    pub code: Option<&'a [u8]>,
    /// The whole line after the tag, for messages.
    pub text: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// Classifies one line (without CRLF).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>> {
    if let Some(rest) = line.strip_prefix(b"* ") {
        return Ok(Line::Untagged(rest));
    }
    if line == b"+" {
        return Ok(Line::Continuation(b""));
    }
    if let Some(rest) = line.strip_prefix(b"+ ") {
        return Ok(Line::Continuation(rest));
    }
    let bad = || Error::protocol(format!("unexpected line from server: {}", printable(line)));
    let space = line.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let (tag, text) = (&line[..space], &line[space + 1..]);
    if tag.is_empty() || tag == b"*" || tag == b"+" {
        return Err(bad());
    }
    let (word, rest) = split_word(text);
    let status = if word.eq_ignore_ascii_case(b"OK") {
        Status::Ok
    } else if word.eq_ignore_ascii_case(b"NO") {
        Status::No
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Status::Bad
    } else {
        return Err(bad());
    };
    Ok(Line::Tagged(Tagged {
        tag,
        status,
        code: response_code(rest),
        text,
    }))
}

fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

/// `[CODE args] text` → `CODE args`.
fn response_code(rest: &[u8]) -> Option<&[u8]> {
    let inner = rest.strip_prefix(b"[")?;
    let end = inner.iter().position(|&b| b == b']')?;
    Some(&inner[..end])
}

/// `{123}` or `{123+}` at the end of a line: the length of the literal that follows.
pub fn trailing_literal(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What the server says it can do, as far as logging in is concerned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    pub login_disabled: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
    pub sasl_ir: bool,
    pub literal_plus: bool,
    pub unauthenticate: bool,
    /// RFC 2971 `ID`: how a trusted relay names its client (`x-originating-ip`).
    pub id: bool,
}

impl Capabilities {
    /// From the words after `CAPABILITY` (in an untagged line or a response code).
    pub fn parse(words: &[u8]) -> Self {
        let mut caps = Capabilities::default();
        for word in words.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
            let is = |name: &[u8]| word.eq_ignore_ascii_case(name);
            if is(b"STARTTLS") {
                caps.starttls = true;
            } else if is(b"LOGINDISABLED") {
                caps.login_disabled = true;
            } else if is(b"AUTH=PLAIN") {
                caps.auth_plain = true;
            } else if is(b"AUTH=LOGIN") {
                caps.auth_login = true;
            } else if is(b"SASL-IR") {
                caps.sasl_ir = true;
            } else if is(b"LITERAL+") {
                caps.literal_plus = true;
            } else if is(b"UNAUTHENTICATE") {
                caps.unauthenticate = true;
            } else if is(b"ID") {
                caps.id = true;
            }
        }
        caps
    }

    /// From `CAPABILITY ...` (untagged text or a response code); other data gives `None`.
    pub fn from_data(data: &[u8]) -> Option<Self> {
        let (word, rest) = split_word(data);
        word.eq_ignore_ascii_case(b"CAPABILITY")
            .then(|| Self::parse(rest))
    }
}

/// `ID ("x-originating-ip" "...")` naming the real client; Dovecot honours it from
/// `login_trusted_networks` and logs the login with `rip=` that address.
pub fn id_command(client: IpAddr) -> String {
    format!("ID (\"x-originating-ip\" \"{client}\")")
}

/// The first line a server sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeting {
    /// `* OK`, with the capabilities when the server put them in the greeting.
    Ok(Option<Capabilities>),
    /// `* PREAUTH` or `* BYE` (the text for the message).
    Refused(String),
}

pub fn parse_greeting(line: &[u8]) -> Result<Greeting> {
    let bad = || Error::protocol(format!("unexpected greeting: {}", printable(line)));
    let Line::Untagged(rest) = parse_line(line).map_err(|_| bad())? else {
        return Err(bad());
    };
    let (word, after) = split_word(rest);
    if word.eq_ignore_ascii_case(b"OK") {
        Ok(Greeting::Ok(
            response_code(after).and_then(Capabilities::from_data),
        ))
    } else if word.eq_ignore_ascii_case(b"PREAUTH") || word.eq_ignore_ascii_case(b"BYE") {
        Ok(Greeting::Refused(printable(line)))
    } else {
        Err(bad())
    }
}

/// What a tagged reply to a login means (DESIGN.md's table): `Ok(())`, or the error kind.
/// `text` is the reply after the tag: `NO [AUTHENTICATIONFAILED] Authentication failed.`
pub fn auth_verdict(status: Status, text: &[u8]) -> std::result::Result<(), Kind> {
    match status {
        Status::Ok => Ok(()),
        Status::Bad => Err(Kind::Deferred),
        Status::No => match response_code(split_word(text).1).map(|c| split_word(c).0) {
            None => Err(Kind::Rejected),
            Some(c)
                if c.eq_ignore_ascii_case(b"AUTHENTICATIONFAILED")
                    || c.eq_ignore_ascii_case(b"AUTHORIZATIONFAILED")
                    || c.eq_ignore_ascii_case(b"EXPIRED") =>
            {
                Err(Kind::Rejected)
            }
            Some(_) => Err(Kind::Deferred),
        },
    }
}

/// An IMAP string for the LOGIN command: quoted when that can carry it, else a literal.
enum ImapString {
    Quoted(Zeroizing<Vec<u8>>),
    Literal(Zeroizing<Vec<u8>>),
}

impl ImapString {
    fn len(&self) -> usize {
        match self {
            ImapString::Quoted(b) | ImapString::Literal(b) => b.len(),
        }
    }
}

fn imap_string(s: &str) -> ImapString {
    // RFC 3501 quoted strings are 7-bit text; anything else travels as a literal.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        // Sized exactly: a reallocation would leave an unwiped copy behind.
        let escapes = s.bytes().filter(|&b| b == b'"' || b == b'\\').count();
        let mut q = Zeroizing::new(Vec::with_capacity(s.len() + escapes + 2));
        q.push(b'"');
        for b in s.bytes() {
            if b == b'"' || b == b'\\' {
                q.push(b'\\');
            }
            q.push(b);
        }
        q.push(b'"');
        ImapString::Quoted(q)
    } else {
        ImapString::Literal(Zeroizing::new(s.as_bytes().to_vec()))
    }
}

/// Whether the server still knows about a connection after a call: the session layer
/// decides reuse from this and the error kind.
pub struct ImapSession {
    conn: Connection,
    caps: Capabilities,
    /// Capabilities of the not-authenticated state, restored after UNAUTHENTICATE.
    pre_login_caps: Capabilities,
    next_tag: u32,
}

impl ImapSession {
    /// Connects, reads the greeting, upgrades with STARTTLS when offered, learns capabilities.
    pub fn connect(settings: &Settings, tls: &Transport, deadline: Instant) -> Result<Self> {
        let conn = Connection::open(settings, tls, deadline)?;
        let mut session = ImapSession {
            conn,
            caps: Capabilities::default(),
            pre_login_caps: Capabilities::default(),
            next_tag: 0,
        };
        session.start(settings, tls)?;
        Ok(session)
    }

    fn start(&mut self, settings: &Settings, tls: &Transport) -> Result<()> {
        let line = self
            .conn
            .read_line()
            .map_err(|e| e.with_command("greeting"))?;
        let greeting = parse_greeting(line).map_err(|e| e.with_command("greeting"))?;
        let caps = match greeting {
            Greeting::Ok(caps) => caps,
            Greeting::Refused(text) => {
                return Err(Error::new(Kind::Deferred, text).with_command("greeting"));
            }
        };
        self.caps = match caps {
            Some(c) => c,
            None => self.capability()?,
        };
        if !self.conn.is_tls() && self.caps.starttls {
            let reply = self.command(b"STARTTLS", "STARTTLS")?;
            if reply.0 != Status::Ok {
                return Err(Error::new(Kind::Deferred, reply.1).with_command("STARTTLS"));
            }
            self.conn
                .starttls(settings, tls)
                .map_err(|e| e.with_command("STARTTLS"))?;
            // Capabilities from before TLS may have been forged: ask again.
            self.caps = self.capability()?;
        }
        Ok(())
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("a{}", self.next_tag)
    }

    fn capability(&mut self) -> Result<Capabilities> {
        let before = self.caps;
        self.caps = Capabilities::default();
        let (status, text) = self.command(b"CAPABILITY", "CAPABILITY")?;
        if status != Status::Ok {
            return Err(Error::new(Kind::Deferred, text).with_command("CAPABILITY"));
        }
        let caps = self.caps;
        self.caps = before;
        Ok(caps)
    }

    /// Sends `tag command` and reads to its tagged reply: (status, reply text).
    fn command(&mut self, command: &[u8], shown: &str) -> Result<(Status, String)> {
        let tag = self.tag();
        let mut line = Vec::with_capacity(tag.len() + command.len() + 3);
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        self.conn.send(&line).map_err(|e| e.with_command(shown))?;
        self.tagged_reply(&tag, shown)
    }

    /// Reads until the tagged reply for `tag`. Untagged CAPABILITY lines update the
    /// capabilities; `* BYE` means the server is closing.
    fn tagged_reply(&mut self, tag: &str, shown: &str) -> Result<(Status, String)> {
        // Without `stop_at_continuation` a continuation request is an error, never `None`.
        self.read_until_tagged(tag, shown, false)?.ok_or_else(|| {
            Error::new(Kind::Internal, "continuation request not handled").with_command(shown)
        })
    }

    /// As `tagged_reply`, but a continuation request ends the wait with `None` when
    /// `stop_at_continuation`.
    fn read_until_tagged(
        &mut self,
        tag: &str,
        shown: &str,
        stop_at_continuation: bool,
    ) -> Result<Option<(Status, String)>> {
        let with = |e: Error| e.with_command(shown);
        let mut skipped = 0usize;
        for _ in 0..MAX_UNTAGGED {
            let line = self.conn.read_line().map_err(with)?;
            let literal = trailing_literal(line);
            match parse_line(line).map_err(with)? {
                Line::Tagged(t) if t.tag == tag.as_bytes() => {
                    if let Some(caps) = t.code.and_then(Capabilities::from_data) {
                        self.caps = caps;
                    }
                    return Ok(Some((t.status, printable(t.text))));
                }
                Line::Tagged(t) => {
                    return Err(with(Error::protocol(format!(
                        "reply for another tag: {}",
                        printable(t.tag)
                    ))))
                }
                Line::Continuation(_) if stop_at_continuation => return Ok(None),
                Line::Continuation(text) => {
                    return Err(with(Error::protocol(format!(
                        "unexpected continuation request: + {}",
                        printable(text)
                    ))))
                }
                Line::Untagged(data) => {
                    if let Some(caps) = Capabilities::from_data(data) {
                        self.caps = caps;
                    } else if split_word(data).0.eq_ignore_ascii_case(b"BYE") {
                        // The server is closing: the connection is gone, whatever follows.
                        return Err(with(Error::new(Kind::Network, printable(line))));
                    }
                    if let Some(n) = literal {
                        skipped = skipped.saturating_add(n);
                        if skipped > MAX_SKIPPED_LITERALS {
                            return Err(with(Error::protocol(format!(
                                "more than {MAX_SKIPPED_LITERALS} bytes of literals in untagged replies"
                            ))));
                        }
                        self.conn.skip(n).map_err(with)?;
                        // The literal is followed by the rest of its line: read it as a line.
                        self.conn.read_line().map_err(with)?;
                    }
                }
            }
        }
        Err(with(Error::protocol(format!(
            "more than {MAX_UNTAGGED} untagged lines"
        ))))
    }

    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Tells the server which client the next login is for (forward.client-ip). Servers
    /// honour only the first ID of a connection: the caller binds the connection to `client`.
    pub fn tell_client(&mut self, client: IpAddr) -> Result<()> {
        let command = id_command(client);
        if !self.caps.id {
            return Err(Error::new(
                Kind::Deferred,
                "forward.client-ip is set but the server does not offer ID (RFC 2971): it cannot be told the client's address; use a server that does (Dovecot, with this relay in login_trusted_networks) or set forward.client-ip = false",
            )
            .with_command(&command));
        }
        let (status, text) = self.command(command.as_bytes(), &command)?;
        if status != Status::Ok {
            return Err(Error::new(
                Kind::Deferred,
                format!("{text} (allow this relay in login_trusted_networks (Dovecot), or set forward.client-ip = false)"),
            )
            .with_command(&command));
        }
        Ok(())
    }

    /// Logs in with the best mechanism on offer. `Ok(())` is a successful login: the
    /// session is then authenticated (see [`ImapSession::unauthenticate`]).
    pub fn login(&mut self, user: &str, secret: &str) -> Result<()> {
        let caps = self.caps;
        // The login's reply may announce post-login capabilities: keep the ones in force
        // before it, for the next login after UNAUTHENTICATE.
        self.pre_login_caps = caps;
        let (shown, result) = if caps.auth_plain {
            (
                "AUTHENTICATE PLAIN",
                self.authenticate_plain(user, secret, caps.sasl_ir),
            )
        } else if caps.auth_login {
            ("AUTHENTICATE LOGIN", self.authenticate_login(user, secret))
        } else if !caps.login_disabled {
            ("LOGIN", self.login_command(user, secret, caps.literal_plus))
        } else {
            return Err(Error::new(
                Kind::Deferred,
                "server offers no usable login mechanism (LOGINDISABLED, no AUTH=PLAIN or AUTH=LOGIN)",
            ));
        };
        let (status, text) = result.map_err(|e| e.with_command(shown))?;
        auth_verdict(status, text.as_bytes())
            .map_err(|kind| Error::new(kind, text).with_command(shown))
    }

    fn authenticate_plain(
        &mut self,
        user: &str,
        secret: &str,
        sasl_ir: bool,
    ) -> Result<(Status, String)> {
        let response = base64_secret(&sasl_plain(user, secret));
        let tag = self.tag();
        let mut line = Zeroizing::new(Vec::with_capacity(response.len() + 32));
        line.extend_from_slice(tag.as_bytes());
        line.extend_from_slice(b" AUTHENTICATE PLAIN");
        if sasl_ir {
            line.push(b' ');
            line.extend_from_slice(response.as_bytes());
            line.extend_from_slice(b"\r\n");
            self.conn
                .send_secret(&line, &format!("{tag} AUTHENTICATE PLAIN"))?;
        } else {
            line.extend_from_slice(b"\r\n");
            self.conn.send(&line)?;
            if let Some(done) = self.read_until_tagged(&tag, "AUTHENTICATE PLAIN", true)? {
                return Ok(done);
            }
            self.send_secret_line(response.as_bytes())?;
        }
        self.finish_authenticate(&tag)
    }

    fn authenticate_login(&mut self, user: &str, secret: &str) -> Result<(Status, String)> {
        let tag = self.tag();
        self.conn
            .send(format!("{tag} AUTHENTICATE LOGIN\r\n").as_bytes())?;
        for answer in [
            base64_secret(user.as_bytes()),
            base64_secret(secret.as_bytes()),
        ] {
            if let Some(done) = self.read_until_tagged(&tag, "AUTHENTICATE LOGIN", true)? {
                return Ok(done);
            }
            self.send_secret_line(answer.as_bytes())?;
        }
        self.finish_authenticate(&tag)
    }

    /// After the last answer: the tagged reply. A further challenge is cancelled with `*`.
    fn finish_authenticate(&mut self, tag: &str) -> Result<(Status, String)> {
        match self.read_until_tagged(tag, "AUTHENTICATE", true)? {
            Some(done) => Ok(done),
            None => {
                self.conn.send(b"*\r\n")?;
                self.tagged_reply(tag, "AUTHENTICATE")?;
                Err(Error::protocol(
                    "server asked for more than the mechanism has; cancelled",
                ))
            }
        }
    }

    fn send_secret_line(&mut self, data: &[u8]) -> Result<()> {
        let mut line = Zeroizing::new(Vec::with_capacity(data.len() + 2));
        line.extend_from_slice(data);
        line.extend_from_slice(b"\r\n");
        self.conn.send_secret(&line, "(answer)")
    }

    /// `LOGIN user password`, each a quoted string or a literal (non-synchronizing with
    /// LITERAL+, else sent after the server's continuation request).
    fn login_command(
        &mut self,
        user: &str,
        secret: &str,
        literal_plus: bool,
    ) -> Result<(Status, String)> {
        let tag = self.tag();
        let args = [imap_string(user), imap_string(secret)];
        // Sized once for everything: a reallocation would leave an unwiped copy behind.
        let capacity = tag.len() + 8 + args.iter().map(|a| a.len() + 16).sum::<usize>();
        let mut pending = Zeroizing::new(Vec::with_capacity(capacity));
        pending.extend_from_slice(tag.as_bytes());
        pending.extend_from_slice(b" LOGIN");
        for arg in args {
            pending.push(b' ');
            match arg {
                ImapString::Quoted(q) => pending.extend_from_slice(&q),
                ImapString::Literal(bytes) if literal_plus => {
                    pending.extend_from_slice(format!("{{{}+}}\r\n", bytes.len()).as_bytes());
                    pending.extend_from_slice(&bytes);
                }
                ImapString::Literal(bytes) => {
                    pending.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                    self.conn.send_secret(&pending, &format!("{tag} LOGIN"))?;
                    pending.clear();
                    if let Some(done) = self.read_until_tagged(&tag, "LOGIN", true)? {
                        return Ok(done);
                    }
                    pending.extend_from_slice(&bytes);
                }
            }
        }
        pending.extend_from_slice(b"\r\n");
        self.conn.send_secret(&pending, &format!("{tag} LOGIN"))?;
        self.tagged_reply(&tag, "LOGIN")
    }

    /// After a successful login: RFC 8437 UNAUTHENTICATE when offered, so the connection can
    /// serve the next login. `Ok(true)` when the session is reusable.
    pub fn unauthenticate(&mut self) -> Result<bool> {
        if !self.caps.unauthenticate {
            return Ok(false);
        }
        let (status, _) = self.command(b"UNAUTHENTICATE", "UNAUTHENTICATE")?;
        // Back in the not-authenticated state: its capabilities apply again.
        self.caps = self.pre_login_caps;
        Ok(status == Status::Ok)
    }

    /// `NOOP`: is the connection still there and answering (`pool.timeout.recycle`)?
    pub fn noop(&mut self) -> Result<()> {
        match self.command(b"NOOP", "NOOP")? {
            (Status::Ok, _) => Ok(()),
            (_, text) => Err(Error::protocol(text).with_command("NOOP")),
        }
    }

    /// Ends the session politely without waiting for the answer.
    pub fn logout(mut self) {
        let tag = self.tag();
        let _ = self.conn.send(format!("{tag} LOGOUT\r\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            parse_line(b"* OK ready").unwrap(),
            Line::Untagged(b"OK ready")
        );
        assert_eq!(parse_line(b"+ ").unwrap(), Line::Continuation(b""));
        assert_eq!(parse_line(b"+").unwrap(), Line::Continuation(b""));
        assert_eq!(
            parse_line(b"+ VXNlcm5hbWU6").unwrap(),
            Line::Continuation(b"VXNlcm5hbWU6")
        );
        let Line::Tagged(t) =
            parse_line(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.tag, b"a1");
        assert_eq!(t.status, Status::No);
        assert_eq!(t.code, Some(&b"AUTHENTICATIONFAILED"[..]));
        assert_eq!(t.text, b"NO [AUTHENTICATIONFAILED] Authentication failed.");
        let Line::Tagged(t) = parse_line(b"a2 ok").unwrap() else {
            panic!()
        };
        assert_eq!((t.status, t.code), (Status::Ok, None));
        for bad in [&b""[..], b"a1", b"a1 MAYBE", b"* ", b" OK x", b"\xff\xfe"] {
            if bad == b"* " {
                continue; // untagged with empty data is legal to classify
            }
            assert!(parse_line(bad).is_err(), "{:?}", printable(bad));
        }
    }

    #[test]
    fn verdicts_follow_the_design_table() {
        let cases: &[(&[u8], std::result::Result<(), Kind>)] = &[
            (b"a OK Logged in", Ok(())),
            (b"a OK [CAPABILITY IMAP4rev1 NOTIFY] Logged in", Ok(())),
            (b"a NO Login failed", Err(Kind::Rejected)),
            (
                b"a NO [AUTHENTICATIONFAILED] Authentication failed.",
                Err(Kind::Rejected),
            ),
            (b"a NO [AUTHORIZATIONFAILED] no", Err(Kind::Rejected)),
            (b"a NO [EXPIRED] password expired", Err(Kind::Rejected)),
            (b"a NO [UNAVAILABLE] try later", Err(Kind::Deferred)),
            (b"a NO [SERVERBUG] oops", Err(Kind::Deferred)),
            (b"a NO [LIMIT] too many", Err(Kind::Deferred)),
            (
                b"a NO [PRIVACYREQUIRED] Plaintext authentication disabled.",
                Err(Kind::Deferred),
            ),
            (
                b"a BAD Invalid base64 data in initial response",
                Err(Kind::Deferred),
            ),
        ];
        for (line, expected) in cases {
            let Line::Tagged(t) = parse_line(line).unwrap() else {
                panic!()
            };
            assert_eq!(
                auth_verdict(t.status, t.text),
                *expected,
                "{}",
                printable(line)
            );
        }
    }

    #[test]
    fn capabilities_of_real_and_odd_servers() {
        let dovecot = Capabilities::from_data(
            b"CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN",
        )
        .unwrap();
        assert!(
            dovecot.starttls
                && dovecot.sasl_ir
                && dovecot.auth_plain
                && dovecot.auth_login
                && dovecot.literal_plus
        );
        assert!(!dovecot.login_disabled && !dovecot.unauthenticate);
        let exchange = Capabilities::from_data(
            b"CAPABILITY IMAP4 IMAP4rev1 AUTH=NTLM AUTH=GSSAPI AUTH=PLAIN SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+",
        )
        .unwrap();
        assert!(exchange.auth_plain && exchange.sasl_ir && !exchange.auth_login);
        let remote =
            Capabilities::from_data(b"capability IMAP4rev1 STARTTLS LOGINDISABLED").unwrap();
        assert!(remote.login_disabled && remote.starttls && !remote.auth_plain);
        assert_eq!(Capabilities::from_data(b"OK hello"), None);
    }

    #[test]
    fn greetings() {
        let g = parse_greeting(
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.",
        )
        .unwrap();
        assert!(matches!(g, Greeting::Ok(Some(c)) if c.starttls && c.auth_plain));
        assert_eq!(
            parse_greeting(b"* OK IMAP ready").unwrap(),
            Greeting::Ok(None)
        );
        assert!(
            matches!(parse_greeting(b"* BYE go away").unwrap(), Greeting::Refused(t) if t == "* BYE go away")
        );
        assert!(matches!(
            parse_greeting(b"* PREAUTH welcome").unwrap(),
            Greeting::Refused(_)
        ));
        assert!(parse_greeting(b"220 smtp.example.org ESMTP").is_err());
        assert!(parse_greeting(b"a1 OK").is_err());
    }

    #[test]
    fn literals_at_line_end() {
        assert_eq!(trailing_literal(b"* 1 FETCH (BODY[] {12}"), Some(12));
        assert_eq!(trailing_literal(b"* X {0+}"), Some(0));
        assert_eq!(trailing_literal(b"* X {}"), None);
        assert_eq!(trailing_literal(b"* X {12a}"), None);
        assert_eq!(trailing_literal(b"* X {9999999999}"), None);
        assert_eq!(trailing_literal(b"* X 12}"), None);
    }

    #[test]
    fn login_strings_quote_or_go_literal() {
        let quoted = |s: &str| match imap_string(s) {
            ImapString::Quoted(q) => String::from_utf8(q.to_vec()).unwrap(),
            ImapString::Literal(_) => panic!("{s} should be quoted"),
        };
        assert_eq!(quoted("alice@example.org"), "\"alice@example.org\"");
        assert_eq!(quoted(r#"p"a\ss word"#), r#""p\"a\\ss word""#);
        assert!(matches!(imap_string("p\"a\\ss wörd"), ImapString::Literal(b) if b.len() == 12));
        assert!(matches!(imap_string("tab\there"), ImapString::Literal(_)));
    }
}
