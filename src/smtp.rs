//! SMTP and LMTP client: greeting, EHLO/LHLO, STARTTLS, AUTH, and recipient probes.
//!
//! Replies are assembled by [`ReplyParser`], a pure function of the lines fed to it.

use crate::config::{Protocol, Settings};
use crate::error::{printable, Error, Kind, Result};
use crate::net::{Connection, Transport};
use crate::secret::{base64_secret, sasl_plain};
use std::fmt;
use std::net::IpAddr;
use std::time::Instant;
use zeroize::Zeroizing;

/// Lines in one reply; EHLO replies of real servers have about 12.
const MAX_REPLY_LINES: usize = 128;
/// Bytes of text kept from one reply.
const MAX_REPLY_TEXT: usize = 16 * 1024;

/// A complete reply: its code and the text of each line (after `NNN-` / `NNN `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Assembles a reply from lines: `feed` returns `Some` at the last line.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
    text_len: usize,
}

impl ReplyParser {
    pub fn feed(&mut self, line: &[u8]) -> Result<Option<Reply>> {
        let bad = |why: &str| Error::protocol(format!("{why}: {}", printable(line)));
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Err(bad("not an SMTP reply line"));
        }
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(bad("not an SMTP reply line")),
        };
        if *self.code.get_or_insert(code) != code {
            return Err(bad("reply code changed within a multi-line reply"));
        }
        if self.lines.len() == MAX_REPLY_LINES {
            return Err(bad("reply has too many lines"));
        }
        let text = printable(line.get(4..).unwrap_or_default());
        self.text_len += text.len();
        if self.text_len > MAX_REPLY_TEXT {
            return Err(bad("reply is too long"));
        }
        self.lines.push(text);
        if !last {
            return Ok(None);
        }
        self.code = None;
        self.text_len = 0;
        Ok(Some(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// The error for a reply that is not the one wanted.
fn refused(kind: Kind, shown: &str, reply: &Reply) -> Error {
    Error::new(kind, reply.to_string()).with_command(shown)
}

/// What an EHLO/LHLO reply offers that this client uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
    pub pipelining: bool,
    pub smtputf8: bool,
    /// `XCLIENT` is offered (to this client: servers offer it only to trusted relays).
    pub xclient: bool,
    /// ...and accepts its `NAME` attribute (Postfix does, Dovecot submission does not).
    pub xclient_name: bool,
}

impl Extensions {
    /// The first line is the server's name; each further line one keyword and its params.
    pub fn parse(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("STARTTLS") {
                ext.starttls = true;
            } else if is("PIPELINING") {
                ext.pipelining = true;
            } else if is("SMTPUTF8") {
                ext.smtputf8 = true;
            } else if is("XCLIENT") {
                ext.xclient = true;
                ext.xclient_name = words.any(|w| w.eq_ignore_ascii_case("NAME"));
            } else if is("AUTH") || keyword.to_ascii_uppercase().starts_with("AUTH=") {
                // `AUTH=PLAIN LOGIN` is the pre-RFC form some servers still send.
                let first = keyword.get(5..).filter(|_| keyword.len() > 5);
                for mech in first.into_iter().chain(words) {
                    ext.auth_plain |= mech.eq_ignore_ascii_case("PLAIN");
                    ext.auth_login |= mech.eq_ignore_ascii_case("LOGIN");
                }
            }
        }
        ext
    }
}

/// `XCLIENT ADDR=...` naming the real client (Postfix XCLIENT_README; Dovecot submission).
/// `NAME=[UNAVAILABLE]` keeps Postfix from logging the relay's host name with the client's
/// address; it is sent only to a server that lists `NAME`.
pub fn xclient_command(client: IpAddr, with_name: bool) -> String {
    let addr = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("IPV6:{ip}"),
    };
    let name = if with_name { " NAME=[UNAVAILABLE]" } else { "" };
    format!("XCLIENT ADDR={addr}{name}\r\n")
}

/// The server settings that let this relay name its clients, for error messages.
const XCLIENT_SETTINGS: &str =
    "allow this relay in smtpd_authorized_xclient_hosts (Postfix) or login_trusted_networks (Dovecot submission), or set forward.client-ip = false";

/// What a reply to AUTH means (DESIGN.md): 235 OK, 535 REJECTED, anything else TEMPORARY.
pub fn auth_verdict(reply: &Reply) -> std::result::Result<(), Kind> {
    match reply.code {
        235 => Ok(()),
        535 => Err(Kind::Rejected),
        421 => Err(Kind::Network),
        _ => Err(Kind::Deferred),
    }
}

/// What a reply to RCPT TO means: 2xx OK, 5xx REJECTED, 4xx TEMPORARY (421: the server is
/// closing the connection). 500, 502, 503 and 530 say the server did not take the command
/// (syntax, sequence, authentication first): they say nothing about the recipient.
pub fn rcpt_verdict(reply: &Reply) -> std::result::Result<(), Kind> {
    match reply.code {
        200..=299 => Ok(()),
        421 => Err(Kind::Network),
        500 | 502 | 503 | 530 => Err(Kind::Deferred),
        500..=599 => Err(Kind::Rejected),
        _ => Err(Kind::Deferred),
    }
}

pub struct SmtpSession {
    conn: Connection,
    ext: Extensions,
    hello: &'static str,
    helo_name: String,
    parser: ReplyParser,
    /// `MAIL FROM:<>` accepted and no RSET since: probes are one RCPT each.
    in_transaction: bool,
}

impl SmtpSession {
    /// Connects, greets, and with `client` (forward.client-ip) names that client with
    /// XCLIENT right after the first EHLO/LHLO, so that everything after it, STARTTLS
    /// included, is the client's session as far as the server is concerned.
    pub fn connect(
        settings: &Settings,
        tls: &Transport,
        deadline: Instant,
        client: Option<IpAddr>,
    ) -> Result<Self> {
        let conn = Connection::open(settings, tls, deadline)?;
        let helo_name = match (&settings.hello_name, conn.local_ip()) {
            (Some(name), _) => name.clone(),
            (None, std::net::IpAddr::V4(ip)) => format!("[{ip}]"),
            (None, std::net::IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        };
        let mut session = SmtpSession {
            conn,
            ext: Extensions::default(),
            hello: if settings.protocol == Protocol::Lmtp {
                "LHLO"
            } else {
                "EHLO"
            },
            helo_name,
            parser: ReplyParser::default(),
            in_transaction: false,
        };
        session.start(settings, tls, client)?;
        Ok(session)
    }

    fn start(
        &mut self,
        settings: &Settings,
        tls: &Transport,
        client: Option<IpAddr>,
    ) -> Result<()> {
        let greeting = self.read_reply().map_err(|e| e.with_command("greeting"))?;
        if greeting.code != 220 {
            let kind = if greeting.code == 421 {
                Kind::Network
            } else {
                Kind::Deferred
            };
            return Err(Error::new(kind, greeting.to_string()).with_command("greeting"));
        }
        self.hello()?;
        if let Some(client) = client {
            self.xclient(client)?;
        }
        if !self.conn.is_tls() && self.ext.starttls {
            let reply = self.command(b"STARTTLS\r\n", "STARTTLS")?;
            if reply.code != 220 {
                return Err(Error::new(Kind::Deferred, reply.to_string()).with_command("STARTTLS"));
            }
            self.conn
                .starttls(settings, tls)
                .map_err(|e| e.with_command("STARTTLS"))?;
            // What the server offered before TLS may have been forged: ask again.
            self.hello()?;
        }
        Ok(())
    }

    /// XCLIENT, answered by a new greeting; then EHLO/LHLO again. A server that does not
    /// offer it or refuses it is TEMPORARY: the login is never sent from the relay's address
    /// instead, where one guessing client would get every user locked out.
    fn xclient(&mut self, client: IpAddr) -> Result<()> {
        if !self.ext.xclient {
            return Err(Error::new(
                Kind::Deferred,
                format!("forward.client-ip is set but the server does not offer XCLIENT to this relay: {XCLIENT_SETTINGS}"),
            )
            .with_command(self.hello));
        }
        let line = xclient_command(client, self.ext.xclient_name);
        let shown = line.trim_end().to_string();
        let reply = self.command(line.as_bytes(), &shown)?;
        match reply.code {
            220 => self.hello(),
            421 => Err(refused(Kind::Network, &shown, &reply)),
            // Postfix: `550 5.7.0 Error: insufficient authorization`.
            550 => Err(
                Error::new(Kind::Deferred, format!("{reply} ({XCLIENT_SETTINGS})"))
                    .with_command(&shown),
            ),
            _ => Err(refused(Kind::Deferred, &shown, &reply)),
        }
    }

    fn hello(&mut self) -> Result<()> {
        let line = format!("{} {}\r\n", self.hello, self.helo_name);
        let reply = self.command(line.as_bytes(), self.hello)?;
        if !reply.is_positive() {
            let kind = if reply.code == 421 {
                Kind::Network
            } else {
                Kind::Deferred
            };
            return Err(Error::new(kind, reply.to_string()).with_command(self.hello));
        }
        self.ext = Extensions::parse(&reply);
        Ok(())
    }

    fn read_reply(&mut self) -> Result<Reply> {
        loop {
            let line = self.conn.read_line()?;
            if let Some(reply) = self.parser.feed(line)? {
                return Ok(reply);
            }
        }
    }

    fn command(&mut self, line: &[u8], shown: &str) -> Result<Reply> {
        self.conn.send(line).map_err(|e| e.with_command(shown))?;
        self.read_reply().map_err(|e| e.with_command(shown))
    }

    /// As `command`, for a line that carries a credential: the trace shows only `shown`.
    fn command_secret(&mut self, line: &[u8], shown: &str) -> Result<Reply> {
        self.conn
            .send_secret(line, shown)
            .map_err(|e| e.with_command(shown))?;
        self.read_reply().map_err(|e| e.with_command(shown))
    }

    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// AUTH PLAIN with an initial response, else AUTH LOGIN.
    pub fn login(&mut self, user: &str, secret: &str) -> Result<()> {
        if self.in_transaction {
            // AUTH is not allowed inside a mail transaction.
            let reply = self.command(b"RSET\r\n", "RSET")?;
            if !reply.is_positive() {
                // 421: the server closed the idle connection; the caller retries afresh.
                let kind = if reply.code == 421 {
                    Kind::Network
                } else {
                    Kind::Protocol
                };
                return Err(refused(kind, "RSET", &reply));
            }
            self.in_transaction = false;
        }
        let (shown, reply) = if self.ext.auth_plain {
            let response = base64_secret(&sasl_plain(user, secret));
            let mut line = Zeroizing::new(Vec::with_capacity(response.len() + 13));
            line.extend_from_slice(b"AUTH PLAIN ");
            line.extend_from_slice(response.as_bytes());
            line.extend_from_slice(b"\r\n");
            ("AUTH PLAIN", self.command_secret(&line, "AUTH PLAIN"))
        } else if self.ext.auth_login {
            ("AUTH LOGIN", self.auth_login(user, secret))
        } else {
            // Nothing to try later: this server cannot check passwords for us.
            return Err(Error::new(
                Kind::Unsupported,
                "server offers neither AUTH PLAIN nor AUTH LOGIN: it cannot check passwords",
            )
            .with_command(self.hello));
        };
        let reply = reply?;
        if reply.code == 334 {
            // A challenge where none belongs: cancel and give up on this connection.
            let _ = self.command(b"*\r\n", shown);
            return Err(refused(Kind::Protocol, shown, &reply));
        }
        auth_verdict(&reply).map_err(|kind| refused(kind, shown, &reply))
    }

    fn auth_login(&mut self, user: &str, secret: &str) -> Result<Reply> {
        let mut reply = self.command(b"AUTH LOGIN\r\n", "AUTH LOGIN")?;
        for answer in [
            base64_secret(user.as_bytes()),
            base64_secret(secret.as_bytes()),
        ] {
            if reply.code != 334 {
                return Ok(reply);
            }
            let mut line = Zeroizing::new(Vec::with_capacity(answer.len() + 2));
            line.extend_from_slice(answer.as_bytes());
            line.extend_from_slice(b"\r\n");
            reply = self.command_secret(&line, "AUTH LOGIN")?;
        }
        Ok(reply)
    }

    /// One recipient probe: `RCPT TO` inside the open `MAIL FROM:<>` transaction (opened
    /// first when needed, pipelined with the RCPT when the server allows).
    pub fn rcpt(&mut self, address: &str) -> Result<()> {
        let mut out = Vec::with_capacity(address.len() + 40);
        let opening = !self.in_transaction;
        if opening {
            out.extend_from_slice(b"MAIL FROM:<>");
            // Declared for the whole transaction: later probes in it may be non-ASCII.
            if self.ext.smtputf8 {
                out.extend_from_slice(b" SMTPUTF8");
            }
            out.extend_from_slice(b"\r\n");
            if !self.ext.pipelining {
                let reply = self.command(&out, "MAIL FROM:<>")?;
                self.check_mail(&reply)?;
                out.clear();
            }
        }
        let shown = format!("RCPT TO:<{address}>");
        out.extend_from_slice(shown.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.conn.send(&out).map_err(|e| e.with_command(&shown))?;
        if opening && self.ext.pipelining {
            let reply = self
                .read_reply()
                .map_err(|e| e.with_command("MAIL FROM:<>"))?;
            if let Err(e) = self.check_mail(&reply) {
                // The pipelined RCPT gets its own (error) reply; read it to stay in step.
                self.read_reply().map_err(|e| e.with_command(&shown))?;
                return Err(e);
            }
        }
        let reply = self.read_reply().map_err(|e| e.with_command(&shown))?;
        rcpt_verdict(&reply).map_err(|kind| refused(kind, &shown, &reply))
    }

    fn check_mail(&mut self, reply: &Reply) -> Result<()> {
        if reply.is_positive() {
            self.in_transaction = true;
            return Ok(());
        }
        // A refused sender decides nothing about the recipient.
        let kind = if reply.code == 421 {
            Kind::Network
        } else {
            Kind::Deferred
        };
        Err(refused(kind, "MAIL FROM:<>", reply))
    }

    /// Ends the session politely without waiting for the answer.
    /// `NOOP`: is the connection still there and answering (`pool.timeout.recycle`)?
    pub fn noop(&mut self) -> Result<()> {
        let reply = self.command(b"NOOP\r\n", "NOOP")?;
        if reply.is_positive() {
            Ok(())
        } else {
            Err(Error::protocol(reply.to_string()).with_command("NOOP"))
        }
    }

    pub fn quit(mut self) {
        let _ = self.conn.send(b"QUIT\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &[u8]) -> Result<Vec<Reply>> {
        let mut parser = ReplyParser::default();
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(r) = parser.feed(line)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line_replies() {
        for sep in ["\n", "\r\n"] {
            let text = [
                "220-mx.example.org ESMTP",
                "220-second line",
                "220 last",
                "250 2.1.0 Ok",
                "535",
            ]
            .join(sep);
            let replies = parse_all(format!("{text}{sep}").as_bytes()).unwrap();
            assert_eq!(replies.len(), 3);
            assert_eq!(replies[0].code, 220);
            assert_eq!(
                replies[0].lines,
                ["mx.example.org ESMTP", "second line", "last"]
            );
            assert_eq!(
                replies[0].to_string(),
                "220 mx.example.org ESMTP second line last"
            );
            assert_eq!(replies[1].to_string(), "250 2.1.0 Ok");
            assert_eq!(replies[2].lines, [""]);
        }
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        for bad in [
            &b"25"[..],
            b"abc def",
            b"250x",
            b"150 hi",
            b"650 no",
            b"250-a\n251 b",
        ] {
            let e = parse_all(bad).unwrap_err();
            assert_eq!(e.kind(), Kind::Protocol, "{:?}", printable(bad));
        }
    }

    #[test]
    fn replies_are_bounded() {
        let mut parser = ReplyParser::default();
        let mut err = None;
        for _ in 0..=MAX_REPLY_LINES {
            if let Err(e) = parser.feed(b"250-x") {
                err = Some(e);
                break;
            }
        }
        assert!(err.unwrap().to_string().contains("too many lines"));
        let mut parser = ReplyParser::default();
        let long = [b"250-".as_slice(), &[b'a'; 8000]].concat();
        let err = (0..4).find_map(|_| parser.feed(&long).err()).unwrap();
        assert!(err.to_string().contains("too long"));
    }

    #[test]
    fn ehlo_extensions() {
        let postfix = parse_all(b"250-localhost\n250-PIPELINING\n250-SIZE 10240000\n250-STARTTLS\n250-ENHANCEDSTATUSCODES\n250-SMTPUTF8\n250 CHUNKING\n").unwrap();
        let e = Extensions::parse(&postfix[0]);
        assert!(e.starttls && e.pipelining && e.smtputf8 && !e.auth_plain && !e.auth_login);
        let after = parse_all(b"250-localhost\n250-AUTH PLAIN LOGIN\n250 8BITMIME\n").unwrap();
        let e = Extensions::parse(&after[0]);
        assert!(e.auth_plain && e.auth_login && !e.starttls);
        let old = parse_all(b"250-mx\n250-AUTH=LOGIN\n250 AUTH GSSAPI NTLM\n").unwrap();
        let e = Extensions::parse(&old[0]);
        assert!(e.auth_login && !e.auth_plain);
        let empty_auth = parse_all(b"250-localhost\n250-AUTH \n250 STARTTLS\n").unwrap();
        let e = Extensions::parse(&empty_auth[0]);
        assert!(!e.auth_plain && !e.auth_login && e.starttls);
        // The server's name line is not a keyword.
        let named = parse_all(b"250-STARTTLS\n250 SIZE\n").unwrap();
        assert!(!Extensions::parse(&named[0]).starttls);
    }

    #[test]
    fn verdicts_follow_the_design_table() {
        let reply = |code| Reply {
            code,
            lines: vec![],
        };
        let auth = [
            (235, Ok(())),
            (535, Err(Kind::Rejected)),
            (534, Err(Kind::Deferred)),
            (538, Err(Kind::Deferred)),
            (504, Err(Kind::Deferred)),
            (454, Err(Kind::Deferred)),
            (421, Err(Kind::Network)),
            (250, Err(Kind::Deferred)),
        ];
        for (code, expected) in auth {
            assert_eq!(auth_verdict(&reply(code)), expected, "auth {code}");
        }
        let rcpt = [
            (250, Ok(())),
            (251, Ok(())),
            (252, Ok(())),
            (550, Err(Kind::Rejected)),
            (551, Err(Kind::Rejected)),
            (553, Err(Kind::Rejected)),
            (450, Err(Kind::Deferred)),
            (451, Err(Kind::Deferred)),
            (452, Err(Kind::Deferred)),
            (421, Err(Kind::Network)),
            (501, Err(Kind::Rejected)),
            (554, Err(Kind::Rejected)),
            (503, Err(Kind::Deferred)),
            (530, Err(Kind::Deferred)),
            (500, Err(Kind::Deferred)),
        ];
        for (code, expected) in rcpt {
            assert_eq!(rcpt_verdict(&reply(code)), expected, "rcpt {code}");
        }
    }
}
