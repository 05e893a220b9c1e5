//! Dovecot's authentication protocol, client side (`daemon.dovecot-auth.socket` / `.listen`):
//! what Postfix (`smtpd_sasl_type = dovecot`) and Exim (`driver = dovecot`) speak to Dovecot's
//! auth service. Lines of TAB-separated fields ending in LF, at most 16 KiB each (Dovecot's
//! own bound): the server greets with `VERSION`, `MECH`, `SPID`, `CUID`, `COOKIE`, `DONE`;
//! the client sends `VERSION`, `CPID`, then `AUTH <id> <mech> service=... [rip=...]
//! [resp=<base64>]` and `CONT <id> <base64>`; the server answers `OK`, `FAIL` or `CONT` with
//! the same id. Mechanisms PLAIN and LOGIN.
//!
//! A temporary failure: protocol 1.1 and later has `FAIL <id> code=temp_fail` (and the older
//! flag `temp`). Postfix and Exim announce protocol 1.0 and take every `FAIL` as a wrong
//! password (Postfix answers 535); the only failure they report as temporary (Postfix: 454
//! "Temporary authentication failure") is losing the connection before the answer. So a
//! TEMPORARY is `FAIL ... code=temp_fail` for clients of 1.1 and later, and the connection
//! closed without an answer for 1.0 clients.

use crate::config::Section;
use crate::listener::{Context, Exchange, Service, Step};
use crate::password::{check, DirectoryChoice, Login, Verdict};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use remote_directory::Result;
use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Longest line, LF included: Dovecot's `AUTH_CLIENT_MAX_LINE_LENGTH`.
pub const MAX_LINE: usize = 16384;
/// Requests of one connection waiting for a `CONT` (Postfix and Exim have one at a time);
/// beyond, the oldest is forgotten.
const MAX_PENDING: usize = 16;
/// The protocol version this server speaks (Dovecot 2.3's).
const VERSION: (u32, u32) = (1, 2);

/// One client line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Version { major: u32, minor: u32 },
    Cpid,
    Auth(AuthRequest),
    Cont { id: u32, data: Vec<u8> },
    Cancel { id: u32 },
}

/// `AUTH <id> <mechanism> [params]`, with the parameters this server uses.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthRequest {
    pub id: u32,
    /// Upper case.
    pub mechanism: String,
    pub service: String,
    /// `rip=`, the mail client's address; absent or not an address: unknown.
    pub client_ip: Option<IpAddr>,
    /// `resp=`, the initial response, still in base64; always the last parameter.
    pub initial: Option<Vec<u8>>,
}

/// The first complete line of `input` without its LF (and a CR before it), and the bytes it
/// took; `None` while the LF has not arrived.
pub fn next_line(input: &[u8]) -> Option<(&[u8], usize)> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let line = &input[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// Parses one line. An error is a protocol violation: Dovecot disconnects such a client.
pub fn parse(line: &[u8]) -> std::result::Result<Command, String> {
    let mut fields = line.split(|&b| b == b'\t');
    let name = fields.next().unwrap_or_default();
    match name {
        b"VERSION" => {
            let major = number(fields.next(), "VERSION major")?;
            let minor = number(fields.next(), "VERSION minor")?;
            Ok(Command::Version { major, minor })
        }
        b"CPID" => Ok(Command::Cpid),
        b"AUTH" => {
            let id = number(fields.next(), "AUTH id")?;
            let mechanism = match fields.next() {
                Some(m) if !m.is_empty() => String::from_utf8_lossy(m).to_ascii_uppercase(),
                _ => return Err("AUTH without a mechanism".into()),
            };
            let mut request = AuthRequest {
                id,
                mechanism,
                service: String::new(),
                client_ip: None,
                initial: None,
            };
            for param in fields {
                if let Some(resp) = param.strip_prefix(b"resp=") {
                    // Always last: anything after it is ignored, as Dovecot does.
                    request.initial = Some(resp.to_vec());
                    break;
                } else if let Some(service) = param.strip_prefix(b"service=") {
                    request.service = String::from_utf8_lossy(&unescape(service)).into_owned();
                } else if let Some(rip) = param.strip_prefix(b"rip=") {
                    request.client_ip = std::str::from_utf8(&unescape(rip))
                        .ok()
                        .and_then(|s| s.parse().ok());
                }
            }
            Ok(Command::Auth(request))
        }
        b"CONT" => {
            let id = number(fields.next(), "CONT id")?;
            let data = fields.next().unwrap_or_default().to_vec();
            Ok(Command::Cont { id, data })
        }
        b"CANCEL" => Ok(Command::Cancel {
            id: number(fields.next(), "CANCEL id")?,
        }),
        other => Err(format!(
            "unknown command '{}'",
            String::from_utf8_lossy(&other[..other.len().min(32)]).escape_default()
        )),
    }
}

fn number(field: Option<&[u8]>, what: &str) -> std::result::Result<u32, String> {
    field
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what} is not a number"))
}

/// Dovecot's tab-escaping: `\x01` then `0` NUL, `1` itself, `t` TAB, `r` CR, `n` LF; before
/// any other byte it is dropped.
pub fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b != 1 {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(1),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The inverse of [`unescape`], for values this server sends (`user=`).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\0' => out.push_str("\x010"),
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            c => out.push(c),
        }
    }
    out
}

/// What the server says first. MECH lines come before SPID: Postfix and Exim take a SPID
/// before any MECH for Dovecot's master socket and give up.
pub fn handshake(spid: u32, cuid: u32, cookie: u128) -> Vec<u8> {
    format!(
        "VERSION\t{}\t{}\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
         SPID\t{spid}\nCUID\t{cuid}\nCOOKIE\t{cookie:032x}\nDONE\n",
        VERSION.0, VERSION.1
    )
    .into_bytes()
}

/// `OK <id> user=<user>`: Postfix requires the user field.
pub fn ok(id: u32, user: &str) -> Vec<u8> {
    format!("OK\t{id}\tuser={}\n", escape(user)).into_bytes()
}

/// `FAIL <id> [user=] [code=temp_fail temp] [reason=]`.
pub fn fail(id: u32, user: Option<&str>, temporary: bool, reason: Option<&str>) -> Vec<u8> {
    let mut line = format!("FAIL\t{id}");
    if let Some(user) = user {
        line.push_str("\tuser=");
        line.push_str(&escape(user));
    }
    if temporary {
        line.push_str("\tcode=temp_fail\ttemp");
    }
    if let Some(reason) = reason {
        line.push_str("\treason=");
        line.push_str(&escape(reason));
    }
    line.push('\n');
    line.into_bytes()
}

/// `CONT <id> <base64 challenge>`.
pub fn cont(id: u32, challenge: &[u8]) -> Vec<u8> {
    format!("CONT\t{id}\t{}\n", STANDARD.encode(challenge)).into_bytes()
}

/// Credentials decoded from the client's SASL messages; wiped when dropped.
#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, secret: <elided> }}",
            self.user
        )
    }
}

/// A SASL message in base64, decoded into a buffer that is wiped when dropped.
pub fn decode_base64(data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(data.len() / 4 * 3 + 3));
    STANDARD.decode_vec(data, &mut out).ok()?;
    Some(out)
}

/// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`. An authorization identity other
/// than the user's own (a master user logging in as someone else) is refused: a remote
/// server checks one user's own password only.
pub fn decode_plain(message: &[u8]) -> std::result::Result<Credentials, &'static str> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid PLAIN message");
    };
    if !authzid.is_empty() && authzid != authcid {
        return Err("Authorization identity not supported");
    }
    let user = std::str::from_utf8(authcid).map_err(|_| "User name is not UTF-8")?;
    let secret = std::str::from_utf8(passwd).map_err(|_| "Password is not UTF-8")?;
    Ok(Credentials {
        user: user.to_string(),
        secret: Zeroizing::new(secret.to_string()),
    })
}

/// The Dovecot auth service of `daemon.dovecot-auth`.
struct DovecotAuth {
    choice: DirectoryChoice,
}

/// Reads `dovecot-auth.directory` and `dovecot-auth.services`.
pub fn build(section: &mut Section) -> Result<Arc<dyn Service>> {
    Ok(Arc::new(DovecotAuth {
        choice: DirectoryChoice::read(section, "dovecot-auth.directory", "dovecot-auth.services")?,
    }))
}

/// Connection numbers for CUID, unique for the life of the process.
static NEXT_CUID: AtomicU32 = AtomicU32::new(1);

impl Service for DovecotAuth {
    fn name(&self) -> &'static str {
        "dovecot-auth"
    }

    fn max_request(&self) -> usize {
        MAX_LINE
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Conversation {
            choice: self.choice.clone(),
            minor: 0,
            pending: BTreeMap::new(),
        })
    }
}

/// An `AUTH` waiting for the client's `CONT`.
struct Pending {
    service: String,
    client_ip: Option<IpAddr>,
    stage: Stage,
}

enum Stage {
    /// PLAIN without an initial response: the whole message comes next.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password comes next.
    LoginPassword(String),
}

struct Conversation {
    choice: DirectoryChoice,
    /// The client's protocol minor version; 0 until it says otherwise.
    minor: u32,
    pending: BTreeMap<u32, Pending>,
}

/// What a step answers besides the bytes it consumed.
enum Answer {
    Send(Vec<u8>),
    /// Close without answering: a 1.0 client's only "temporary failure".
    Hang,
}

impl Exchange for Conversation {
    fn greeting(&mut self) -> Vec<u8> {
        // The cookie only serves the master's REQUEST command, which this server does not
        // have; it need not be secret, only different per connection.
        let cuid = NEXT_CUID.fetch_add(1, Ordering::Relaxed);
        let half = || u128::from(RandomState::new().hash_one(cuid));
        handshake(std::process::id(), cuid, half() << 64 | half())
    }

    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        let Some((line, consumed)) = next_line(input) else {
            return Step::More;
        };
        let command = match parse(line) {
            Ok(command) => command,
            Err(reason) => {
                return Step::Refuse {
                    reply: Vec::new(),
                    reason,
                }
            }
        };
        match self.answer(command, ctx) {
            Ok(Answer::Send(reply)) => Step::Reply {
                consumed,
                reply,
                close: false,
            },
            Ok(Answer::Hang) => Step::Reply {
                consumed,
                reply: Vec::new(),
                close: true,
            },
            Err(reason) => Step::Refuse {
                reply: Vec::new(),
                reason,
            },
        }
    }
}

impl Conversation {
    fn answer(&mut self, command: Command, ctx: &Context) -> std::result::Result<Answer, String> {
        match command {
            Command::Version { major, minor } => {
                if major != VERSION.0 {
                    return Err(format!("protocol version {major}.{minor} is not 1.x"));
                }
                self.minor = minor;
                Ok(Answer::Send(Vec::new()))
            }
            Command::Cpid => Ok(Answer::Send(Vec::new())),
            Command::Cancel { id } => {
                self.pending.remove(&id);
                Ok(Answer::Send(Vec::new()))
            }
            Command::Auth(request) => self.auth(request, ctx),
            Command::Cont { id, data } => {
                let Some(pending) = self.pending.remove(&id) else {
                    return Err(format!("CONT for unknown request {id}"));
                };
                let Some(message) = decode_base64(&data) else {
                    return Ok(Answer::Send(fail(
                        id,
                        None,
                        false,
                        Some("Invalid base64 data in continued response"),
                    )));
                };
                match pending.stage {
                    Stage::Plain => Ok(self.verify_plain(id, &pending, &message, ctx)),
                    Stage::LoginUser => {
                        let user = String::from_utf8_lossy(&message).into_owned();
                        self.pending.insert(
                            id,
                            Pending {
                                stage: Stage::LoginPassword(user),
                                ..pending
                            },
                        );
                        Ok(Answer::Send(cont(id, b"Password:")))
                    }
                    Stage::LoginPassword(ref user) => {
                        let Ok(secret) = std::str::from_utf8(&message) else {
                            return Ok(Answer::Send(fail(
                                id,
                                Some(user),
                                false,
                                Some("Password is not UTF-8"),
                            )));
                        };
                        let credentials = Credentials {
                            user: user.clone(),
                            secret: Zeroizing::new(secret.to_string()),
                        };
                        Ok(self.verify(id, &pending, &credentials, ctx))
                    }
                }
            }
        }
    }

    fn auth(&mut self, request: AuthRequest, ctx: &Context) -> std::result::Result<Answer, String> {
        let id = request.id;
        if self.pending.contains_key(&id) {
            return Err(format!("AUTH reuses the id {id} of a request in progress"));
        }
        let mut pending = Pending {
            service: request.service,
            client_ip: request.client_ip,
            stage: Stage::Plain,
        };
        let initial = match request.initial.as_deref() {
            None => None,
            Some(data) => match decode_base64(data) {
                Some(message) => Some(message),
                None => {
                    return Ok(Answer::Send(fail(
                        id,
                        None,
                        false,
                        Some("Invalid base64 data in initial response"),
                    )))
                }
            },
        };
        let challenge: &[u8] = match (request.mechanism.as_str(), initial) {
            ("PLAIN", Some(message)) => return Ok(self.verify_plain(id, &pending, &message, ctx)),
            ("PLAIN", None) => b"",
            // LOGIN's initial response, when a client sends one, is the user name.
            ("LOGIN", Some(user)) if !user.is_empty() => {
                pending.stage = Stage::LoginPassword(String::from_utf8_lossy(&user).into_owned());
                b"Password:"
            }
            ("LOGIN", _) => {
                pending.stage = Stage::LoginUser;
                b"Username:"
            }
            _ => {
                return Ok(Answer::Send(fail(
                    id,
                    None,
                    false,
                    Some("Unsupported authentication mechanism"),
                )))
            }
        };
        if self.pending.len() >= MAX_PENDING {
            // A client abandons a conversation without telling (Postfix, when the SMTP
            // client answers "*"): the oldest gives way, the connection goes on.
            self.pending.pop_first();
        }
        self.pending.insert(id, pending);
        Ok(Answer::Send(cont(id, challenge)))
    }

    fn verify_plain(&self, id: u32, pending: &Pending, message: &[u8], ctx: &Context) -> Answer {
        match decode_plain(message) {
            Ok(credentials) => self.verify(id, pending, &credentials, ctx),
            Err(reason) => Answer::Send(fail(id, None, false, Some(reason))),
        }
    }

    fn verify(
        &self,
        id: u32,
        pending: &Pending,
        credentials: &Credentials,
        ctx: &Context,
    ) -> Answer {
        let temporary_fail = self.minor >= 1;
        let login = Login {
            protocol: "dovecot-auth",
            service: &pending.service,
            user: &credentials.user,
            secret: &credentials.secret,
            client_ip: pending.client_ip,
        };
        let said = if temporary_fail {
            "answered FAIL code=temp_fail"
        } else {
            "connection closed unanswered (a protocol 1.0 client takes only that as temporary)"
        };
        match check(&self.choice, ctx.directories, &login, said) {
            Verdict::Accepted => Answer::Send(ok(id, &credentials.user)),
            Verdict::Refused => Answer::Send(fail(id, Some(&credentials.user), false, None)),
            Verdict::Temporary if temporary_fail => {
                Answer::Send(fail(id, Some(&credentials.user), true, None))
            }
            Verdict::Temporary => Answer::Hang,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(
        id: u32,
        mech: &str,
        service: &str,
        ip: Option<&str>,
        initial: Option<&str>,
    ) -> Command {
        Command::Auth(AuthRequest {
            id,
            mechanism: mech.into(),
            service: service.into(),
            client_ip: ip.map(|i| i.parse().unwrap()),
            initial: initial.map(|i| i.as_bytes().to_vec()),
        })
    }

    #[test]
    fn lines_parse() {
        let cases: Vec<(&str, std::result::Result<Command, &str>)> = vec![
            ("VERSION\t1\t0", Ok(Command::Version { major: 1, minor: 0 })),
            ("VERSION\t1", Err("VERSION minor is not a number")),
            ("CPID\t4242", Ok(Command::Cpid)),
            (
                // What Postfix 3.7 sends.
                "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.7\tresp=AGFsaWNlAHB3",
                Ok(auth(1, "PLAIN", "smtp", Some("127.0.0.7"), Some("AGFsaWNlAHB3"))),
            ),
            (
                "AUTH\t7\tlogin\tservice=smtp\trip=2001:db8::1\tsecured",
                Ok(auth(7, "LOGIN", "smtp", Some("2001:db8::1"), None)),
            ),
            (
                // resp= is last: what follows is ignored; a bad rip is an unknown address.
                "AUTH\t2\tPLAIN\tservice=imap\trip=unix\tresp=QQ==\tservice=evil",
                Ok(auth(2, "PLAIN", "imap", None, Some("QQ=="))),
            ),
            (
                "AUTH\t3\tPLAIN\tservice=sm\x01ttp",
                Ok(auth(3, "PLAIN", "sm\ttp", None, None)),
            ),
            ("AUTH\tx\tPLAIN", Err("AUTH id is not a number")),
            ("AUTH\t4294967296\tPLAIN", Err("AUTH id is not a number")),
            ("AUTH\t5", Err("AUTH without a mechanism")),
            (
                "CONT\t9\tYWxpY2U=",
                Ok(Command::Cont {
                    id: 9,
                    data: b"YWxpY2U=".to_vec(),
                }),
            ),
            ("CANCEL\t9", Ok(Command::Cancel { id: 9 })),
            ("REQUEST\t1\t2\t3\t4", Err("unknown command 'REQUEST'")),
            ("", Err("unknown command ''")),
        ];
        for (line, expected) in cases {
            let got = parse(line.as_bytes());
            match expected {
                Ok(command) => assert_eq!(got, Ok(command), "{line:?}"),
                Err(msg) => assert_eq!(got, Err(msg.to_string()), "{line:?}"),
            }
        }
    }

    #[test]
    fn lines_are_cut_at_lf_with_or_without_cr() {
        assert_eq!(next_line(b"CPID\t1"), None);
        assert_eq!(next_line(b"CPID\t1\nAUTH"), Some((&b"CPID\t1"[..], 7)));
        assert_eq!(next_line(b"CPID\t1\r\nAUTH"), Some((&b"CPID\t1"[..], 8)));
        assert_eq!(next_line(b"\n"), Some((&b""[..], 1)));
    }

    #[test]
    fn escaping_round_trips() {
        let cases = [
            ("plain", "plain"),
            ("a\tb", "a\x01tb"),
            ("\0\x01\r\n", "\x010\x011\x01r\x01n"),
            ("w\u{f6}rd", "w\u{f6}rd"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(escape(raw), escaped, "{raw:?}");
            assert_eq!(unescape(escaped.as_bytes()), raw.as_bytes(), "{escaped:?}");
        }
        // An escape before an ordinary byte is dropped; a trailing one vanishes.
        assert_eq!(unescape(b"a\x01xb\x01"), b"axb");
    }

    #[test]
    fn handshake_lists_mechanisms_before_spid() {
        let text = String::from_utf8(handshake(42, 7, 0xabc)).unwrap();
        assert_eq!(
            text,
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t42\nCUID\t7\n\
             COOKIE\t00000000000000000000000000000abc\nDONE\n"
        );
    }

    #[test]
    fn replies_are_encoded() {
        let cases = [
            (
                ok(1, "alice@example.org"),
                "OK\t1\tuser=alice@example.org\n",
            ),
            (ok(2, "t\tab"), "OK\t2\tuser=t\x01tab\n"),
            (fail(3, None, false, None), "FAIL\t3\n"),
            (
                fail(4, Some("bob"), true, None),
                "FAIL\t4\tuser=bob\tcode=temp_fail\ttemp\n",
            ),
            (
                fail(
                    5,
                    None,
                    false,
                    Some("Invalid base64 data in initial response"),
                ),
                "FAIL\t5\treason=Invalid base64 data in initial response\n",
            ),
            (cont(6, b""), "CONT\t6\t\n"),
            (cont(7, b"Username:"), "CONT\t7\tVXNlcm5hbWU6\n"),
        ];
        for (got, expected) in cases {
            assert_eq!(String::from_utf8(got).unwrap(), expected);
        }
    }

    #[test]
    fn plain_messages_decode() {
        let ok = |user: &str, secret: &str| {
            Ok(Credentials {
                user: user.into(),
                secret: Zeroizing::new(secret.into()),
            })
        };
        let cases: Vec<(&[u8], std::result::Result<Credentials, &str>)> = vec![
            (b"\0alice\0pw", ok("alice", "pw")),
            (b"alice\0alice\0pw", ok("alice", "pw")),
            (
                "\0bob@example.org\0p\"a\\ss w\u{f6}rd".as_bytes(),
                ok("bob@example.org", "p\"a\\ss w\u{f6}rd"),
            ),
            (b"\0\0", ok("", "")),
            (
                b"admin\0alice\0pw",
                Err("Authorization identity not supported"),
            ),
            (b"\0alice", Err("Invalid PLAIN message")),
            (b"\0a\0b\0c", Err("Invalid PLAIN message")),
            (b"\0\xff\0pw", Err("User name is not UTF-8")),
            (b"\0a\0\xff", Err("Password is not UTF-8")),
        ];
        for (message, expected) in cases {
            assert_eq!(decode_plain(message), expected, "{message:?}");
        }
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(
            decode_base64(b"AGFsaWNlAHB3").unwrap().as_slice(),
            b"\0alice\0pw"
        );
        assert_eq!(decode_base64(b"").unwrap().as_slice(), b"");
        for bad in [&b"AGFsaWNlAHB"[..], b"***", b"QQ", b"Q Q=="] {
            assert!(decode_base64(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = decode_plain(b"\0alice\0hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
