//! Cyrus saslauthd's protocol (`daemon.saslauthd.socket`): what Cyrus SASL's
//! `pwcheck_method: saslauthd` (Postfix `smtpd_sasl_type = cyrus`, Cyrus IMAP, Sendmail),
//! Exim's `saslauthd` condition and `testsaslauthd` send. One request per connection: four
//! counted strings (a 2-byte network-order length, then that many bytes, at most 256 as in
//! saslauthd): login, password, service, realm. Cyrus SASL 2.1.28 and Exim send these four;
//! newer Cyrus SASL sends a fifth, the client's address (`ip;port`). The answer is one counted
//! string, `OK...` or `NO...`; then the daemon half-closes the connection and reads what the
//! client still sends until it closes (a fifth field that came after the answer).
//!
//! The protocol has no "try again later". Every known client takes a connection closed
//! without an answer as a failure of the service, not of the password (Cyrus SASL returns
//! SASL_FAIL, which Postfix answers with 454; Exim defers), while any `NO` is a wrong
//! password. So a TEMPORARY closes the connection unanswered, and is logged as temporary.
//!
//! Cyrus SASL splits `user@realm` at the last `@` before sending; saslauthd's `-r` joins
//! them again. `daemon.saslauthd.join-realm` (default on) does the same.

use crate::config::Section;
use crate::listener::{Context, Exchange, Service, Step};
use crate::password::{check, DirectoryChoice, Login, Verdict};
use remote_directory::Result;
use std::net::IpAddr;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Longest field, as saslauthd's `MAX_REQ_LEN`.
pub const MAX_FIELD: usize = 256;
/// Longest request: five counted fields.
pub const MAX_REQUEST: usize = 5 * (2 + MAX_FIELD);

/// One request. The password is wiped when dropped.
pub struct Request {
    pub login: Vec<u8>,
    pub password: Zeroizing<Vec<u8>>,
    pub service: Vec<u8>,
    pub realm: Vec<u8>,
    /// The fifth field of newer clients: `ip;port`.
    pub client: Option<Vec<u8>>,
}

pub enum Parsed {
    /// The request is not complete.
    More,
    /// A request, and the bytes it took.
    Request(Request, usize),
    /// A field longer than [`MAX_FIELD`]: saslauthd answers `NO` and closes.
    TooLong(&'static str),
}

const FIELDS: [&str; 5] = ["login", "password", "service", "realm", "client address"];

/// A field, the offset after it; or the name of a field that is too long.
type Field<'a> = std::result::Result<(&'a [u8], usize), &'static str>;

/// The field at `at`, `None` while incomplete.
fn field<'a>(input: &'a [u8], at: usize, name: &'static str) -> Option<Field<'a>> {
    let count = input.get(at..at + 2)?;
    let len = usize::from(u16::from_be_bytes([count[0], count[1]]));
    if len > MAX_FIELD {
        return Some(Err(name));
    }
    let body = input.get(at + 2..at + 2 + len)?;
    Some(Ok((body, at + 2 + len)))
}

/// Parses the request at the start of `input`. Four fields make a request; when more bytes
/// follow at once, they are the fifth field (all clients write a request in one go).
pub fn parse(input: &[u8]) -> Parsed {
    let mut fields: Vec<&[u8]> = Vec::with_capacity(5);
    let mut at = 0;
    for name in &FIELDS[..4] {
        match field(input, at, name) {
            None => return Parsed::More,
            Some(Err(name)) => return Parsed::TooLong(name),
            Some(Ok((body, next))) => {
                fields.push(body);
                at = next;
            }
        }
    }
    let client = if input.len() == at {
        None
    } else {
        match field(input, at, FIELDS[4]) {
            None => return Parsed::More,
            Some(Err(name)) => return Parsed::TooLong(name),
            Some(Ok((body, next))) => {
                at = next;
                Some(body.to_vec())
            }
        }
    };
    let request = Request {
        login: fields[0].to_vec(),
        password: Zeroizing::new(fields[1].to_vec()),
        service: fields[2].to_vec(),
        realm: fields[3].to_vec(),
        client,
    };
    Parsed::Request(request, at)
}

/// Counted strings: each a 2-byte network-order length and its bytes (cut at 65535), as a
/// client sends its request and the daemon its answer.
pub fn counted(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let field = &field[..field.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(field.len() as u16).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The counted answer string.
pub fn answer(text: &str) -> Vec<u8> {
    counted(&[text.as_bytes()])
}

/// The user name to check: `login@realm` when joining and a realm was sent, else the login.
pub fn user_name(login: &str, realm: &str, join_realm: bool) -> String {
    if join_realm && !realm.is_empty() {
        format!("{login}@{realm}")
    } else {
        login.to_string()
    }
}

/// The address in Cyrus SASL's `ip;port` (or a bare address); anything else is unknown.
pub fn client_ip(field: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(field).ok()?;
    text.split(';').next()?.parse().ok()
}

/// The saslauthd service of `daemon.saslauthd`.
struct Saslauthd {
    choice: DirectoryChoice,
    join_realm: bool,
}

/// Reads `saslauthd.directory`, `saslauthd.services` and `saslauthd.join-realm`.
pub fn build(section: &mut Section) -> Result<Arc<dyn Service>> {
    Ok(Arc::new(Saslauthd {
        choice: DirectoryChoice::read(section, "saslauthd.directory", "saslauthd.services")?,
        join_realm: section.boolean("saslauthd.join-realm")?.unwrap_or(true),
    }))
}

impl Service for Saslauthd {
    fn name(&self) -> &'static str {
        "saslauthd"
    }

    fn max_request(&self) -> usize {
        MAX_REQUEST
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Conversation {
            choice: self.choice.clone(),
            join_realm: self.join_realm,
        })
    }
}

struct Conversation {
    choice: DirectoryChoice,
    join_realm: bool,
}

const REFUSED: &str = "NO authentication failed";

impl Exchange for Conversation {
    /// A fifth field that arrives after the answer is read and dropped, so the client's
    /// connection ends with an EOF, never a reset.
    fn drain_at_close(&self) -> bool {
        true
    }

    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        let (request, consumed) = match parse(input) {
            Parsed::More => return Step::More,
            Parsed::TooLong(name) => {
                return Step::Refuse {
                    reply: answer("NO"),
                    reason: format!("{name} longer than {MAX_FIELD} bytes"),
                }
            }
            Parsed::Request(request, consumed) => (request, consumed),
        };
        let reply = |reply: Vec<u8>| Step::Reply {
            consumed,
            reply,
            close: true,
        };
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_string);
        let (Ok(login), Ok(realm), Ok(service)) = (
            text(&request.login),
            text(&request.realm),
            text(&request.service),
        ) else {
            return reply(answer("NO login, realm or service is not UTF-8"));
        };
        let Ok(secret) = std::str::from_utf8(&request.password) else {
            return reply(answer("NO password is not UTF-8"));
        };
        if login.is_empty() || secret.is_empty() {
            // saslauthd refuses these without asking anyone, and so do we.
            return reply(answer("NO empty login or password"));
        }
        let user = user_name(&login, &realm, self.join_realm);
        let login = Login {
            protocol: "saslauthd",
            service: &service,
            user: &user,
            secret,
            client_ip: request.client.as_deref().and_then(client_ip),
        };
        let said = "connection closed unanswered (saslauthd clients take that as temporary)";
        match check(&self.choice, ctx.directories, &login, said) {
            Verdict::Accepted => reply(answer("OK")),
            Verdict::Refused => reply(answer(REFUSED)),
            Verdict::Temporary => reply(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (login, password, service, realm, client, consumed) of a parsed request.
    type Fields = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>, usize);

    fn fields(parsed: Parsed) -> Option<Fields> {
        match parsed {
            Parsed::Request(r, n) => Some((
                r.login,
                r.password.to_vec(),
                r.service,
                r.realm,
                r.client,
                n,
            )),
            _ => None,
        }
    }

    #[test]
    fn four_and_five_field_requests_parse() {
        let bob = "p\"a\\ss w\u{f6}rd".as_bytes();
        let four = counted(&[b"alice", b"alice-pass-1", b"smtp", b"example.org"]);
        let five = counted(&[b"bob", bob, b"imap", b"", b"192.0.2.1;4242"]);
        let cases: Vec<(Vec<u8>, Fields)> = vec![
            (
                four.clone(),
                (
                    b"alice".to_vec(),
                    b"alice-pass-1".to_vec(),
                    b"smtp".to_vec(),
                    b"example.org".to_vec(),
                    None,
                    four.len(),
                ),
            ),
            (
                five.clone(),
                (
                    b"bob".to_vec(),
                    bob.to_vec(),
                    b"imap".to_vec(),
                    Vec::new(),
                    Some(b"192.0.2.1;4242".to_vec()),
                    five.len(),
                ),
            ),
            (
                counted(&[b"", b"", b"", b""]),
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), None, 8),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(fields(parse(&input)), Some(expected.clone()), "{input:?}");
            // Fed cut short, as Exim's separate writes may arrive: More until the fourth
            // field is complete, then a four-field request (what a 2.1.28 client sends),
            // then More again while a fifth field is incomplete.
            let four = counted(&[&expected.0, &expected.1, &expected.2, &expected.3]).len();
            for cut in 0..input.len() {
                match parse(&input[..cut]) {
                    Parsed::More => assert_ne!(cut, four, "{input:?} cut at {cut}"),
                    Parsed::Request(r, n) => {
                        assert_eq!((cut, n), (four, four), "{input:?}");
                        assert_eq!(r.client, None);
                    }
                    Parsed::TooLong(f) => panic!("{f} too long at {cut}"),
                }
            }
        }
    }

    #[test]
    fn oversized_fields_are_refused_at_their_count() {
        let long = vec![b'x'; MAX_FIELD + 1];
        let at_limit = vec![b'x'; MAX_FIELD];
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (counted(&[&long]), Some("login")),
            (counted(&[b"a", &long]), Some("password")),
            (counted(&[b"a", b"b", b"c", &long]), Some("realm")),
            (
                counted(&[b"a", b"b", b"c", b"d", &long]),
                Some("client address"),
            ),
            // Only the count is needed to refuse: the body never has to arrive.
            (vec![0xff, 0xff], Some("login")),
            (
                counted(&[&at_limit, &at_limit, &at_limit, &at_limit, &at_limit]),
                None,
            ),
        ];
        for (input, expected) in cases {
            match (parse(&input), expected) {
                (Parsed::TooLong(name), Some(field)) => assert_eq!(name, field),
                (Parsed::Request(_, n), None) => assert_eq!(n, MAX_REQUEST),
                (_, e) => panic!("{input:?}: expected {e:?}"),
            }
        }
    }

    #[test]
    fn answers_are_counted() {
        assert_eq!(answer("OK"), b"\x00\x02OK");
        assert_eq!(answer(REFUSED), [&[0, 24][..], REFUSED.as_bytes()].concat());
    }

    #[test]
    fn realms_join_like_saslauthd_r() {
        let cases = [
            ("alice", "example.org", true, "alice@example.org"),
            ("alice@example.org", "", true, "alice@example.org"),
            ("a@b", "example.org", true, "a@b@example.org"),
            ("alice", "example.org", false, "alice"),
        ];
        for (login, realm, join, expected) in cases {
            assert_eq!(user_name(login, realm, join), expected);
        }
    }

    #[test]
    fn client_addresses_parse() {
        let cases: [(&[u8], Option<&str>); 5] = [
            (b"192.0.2.1;4242", Some("192.0.2.1")),
            (b"2001:db8::1;25", Some("2001:db8::1")),
            (b"198.51.100.7", Some("198.51.100.7")),
            (b"localhost;25", None),
            (b"\xff", None),
        ];
        for (field, expected) in cases {
            assert_eq!(
                client_ip(field),
                expected.map(|e| e.parse().unwrap()),
                "{field:?}"
            );
        }
    }
}
