//! The project's own protocol between `type = "daemon"` directories and remote-directoryd:
//! one request, one response, on a kept-open Unix socket. Pure functions over bytes; the
//! library's client and the daemon share this one implementation.
//!
//! Every message is a frame: a 4-byte big-endian body length, then the body. A body starts
//! with the protocol version (1) so that a client and a daemon of different versions say so
//! instead of misreading each other.
//!
//! ```text
//! request  = version(1) op(1) directory auth|rcpt|domain
//!   auth   = user secret client-ip        (client-ip empty: unknown)
//!   rcpt   = address
//!   domain = domain
//! response = version(1) 0 notice                          (OK; notice empty: none)
//!          | version(1) kind(1) server command detail      (an error of that kind)
//! field    = length(2, big-endian) bytes (UTF-8)
//! ```
//! A response carries the error's kind and its three parts, so the client rebuilds the same
//! error: the same result and the same last-error text as in process.

use crate::error::{Error, Kind};
use zeroize::Zeroizing;

/// The version this code speaks.
pub const VERSION: u8 = 1;
/// Longest request body: a directory name, a user, a 4096-byte secret and an address fit.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Longest response body; a longer error detail is cut when it is encoded.
pub const MAX_RESPONSE: usize = 4 * 1024;
/// Longest directory name in a request.
pub const MAX_DIRECTORY_NAME: usize = 1024;

const OP_AUTH: u8 = 1;
const OP_RCPT: u8 = 2;
const OP_DOMAIN: u8 = 3;

/// One call, as the daemon receives it; the strings borrow the request bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The daemon's directory that answers.
    pub directory: &'a str,
    pub call: Call<'a>,
}

#[derive(PartialEq, Eq)]
pub enum Call<'a> {
    Auth {
        user: &'a str,
        secret: &'a str,
        /// The address of the client that is logging in, as text; `None`: unknown.
        client_ip: Option<&'a str>,
    },
    Rcpt {
        address: &'a str,
    },
    IsLocalDomain {
        domain: &'a str,
    },
}

impl std::fmt::Debug for Call<'_> {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Auth {
                user, client_ip, ..
            } => write!(f, "Auth {{ user: {user:?}, client_ip: {client_ip:?} }}"),
            Call::Rcpt { address } => write!(f, "Rcpt {{ address: {address:?} }}"),
            Call::IsLocalDomain { domain } => write!(f, "IsLocalDomain {{ domain: {domain:?} }}"),
        }
    }
}

/// Why bytes are not a message of this protocol. The daemon answers it (when the version
/// differs) or closes the connection; the client reports it as a protocol failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix announces more than the limit.
    TooLong { length: usize, max: usize },
    /// A version this code does not speak.
    Version(u8),
    /// Anything else: unknown operation, truncated field, trailing bytes, not UTF-8.
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLong { length, max } => {
                write!(f, "message of {length} bytes, longer than {max}")
            }
            WireError::Version(v) => write!(
                f,
                "protocol version {v}; this side speaks version {VERSION} (upgrade both together)"
            ),
            WireError::Malformed(what) => write!(f, "malformed message: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A complete frame's body and the bytes it took, or `None` when more bytes are needed.
fn frame(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(prefix) = input.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length > max {
        return Err(WireError::TooLong { length, max });
    }
    Ok(input.get(4..4 + length).map(|body| (body, 4 + length)))
}

/// Reads fields off a body, front to back.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(WireError::Malformed("truncated"))?;
        self.0 = rest;
        Ok(b)
    }

    fn text(&mut self) -> Result<&'a str, WireError> {
        let Some(prefix) = self.0.get(..2) else {
            return Err(WireError::Malformed("truncated field length"));
        };
        let length = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
        let bytes = self
            .0
            .get(2..2 + length)
            .ok_or(WireError::Malformed("truncated field"))?;
        self.0 = &self.0[2 + length..];
        std::str::from_utf8(bytes).map_err(|_| WireError::Malformed("field is not UTF-8"))
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0 {
            [] => Ok(()),
            _ => Err(WireError::Malformed("trailing bytes")),
        }
    }
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    // Callers bound every field far below 64 KiB; a longer one is cut, never wrapped.
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn finish_frame(mut body: Vec<u8>) -> Vec<u8> {
    let length = (body.len() as u32).to_be_bytes();
    body.splice(0..0, length);
    body
}

/// The frame of `request`, in memory that is wiped when dropped (it holds the secret).
pub fn encode_request(request: &Request) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(64 + secret_len(&request.call)));
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    match &request.call {
        Call::Auth {
            user,
            secret,
            client_ip,
        } => {
            out.push(OP_AUTH);
            push_text(&mut out, request.directory);
            push_text(&mut out, user);
            push_text(&mut out, secret);
            push_text(&mut out, client_ip.unwrap_or(""));
        }
        Call::Rcpt { address } => {
            out.push(OP_RCPT);
            push_text(&mut out, request.directory);
            push_text(&mut out, address);
        }
        Call::IsLocalDomain { domain } => {
            out.push(OP_DOMAIN);
            push_text(&mut out, request.directory);
            push_text(&mut out, domain);
        }
    }
    // Written in place: `finish_frame` would copy the secret into a second allocation.
    let length = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out
}

fn secret_len(call: &Call) -> usize {
    match call {
        Call::Auth { secret, user, .. } => secret.len() + user.len(),
        Call::Rcpt { address } => address.len(),
        Call::IsLocalDomain { domain } => domain.len(),
    }
}

/// One request from the start of `input`: the request and the bytes it took, `None` when
/// the frame is not complete yet.
pub fn decode_request(input: &[u8]) -> Result<Option<(Request<'_>, usize)>, WireError> {
    let Some((body, used)) = frame(input, MAX_REQUEST)? else {
        return Ok(None);
    };
    let mut f = Fields(body);
    let version = f.byte()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let op = f.byte()?;
    let directory = f.text()?;
    if directory.len() > MAX_DIRECTORY_NAME {
        return Err(WireError::Malformed("directory name too long"));
    }
    let call = match op {
        OP_AUTH => {
            let user = f.text()?;
            let secret = f.text()?;
            let client_ip = Some(f.text()?).filter(|ip| !ip.is_empty());
            Call::Auth {
                user,
                secret,
                client_ip,
            }
        }
        OP_RCPT => Call::Rcpt { address: f.text()? },
        OP_DOMAIN => Call::IsLocalDomain { domain: f.text()? },
        _ => return Err(WireError::Malformed("unknown operation")),
    };
    f.end()?;
    Ok(Some((Request { directory, call }, used)))
}

/// Stable numbers of the error kinds on the wire (0 is OK). Never renumbered.
fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::InvalidInput => 1,
        Kind::Config => 2,
        Kind::Unsupported => 3,
        Kind::Rejected => 4,
        Kind::Network => 5,
        Kind::Timeout => 6,
        Kind::Tls => 7,
        Kind::Protocol => 8,
        Kind::Deferred => 9,
        Kind::Cleartext => 10,
        Kind::PoolTimeout => 11,
        Kind::Internal => 12,
        Kind::Throttled => 13,
    }
}

fn kind_of(code: u8) -> Option<Kind> {
    Some(match code {
        1 => Kind::InvalidInput,
        2 => Kind::Config,
        3 => Kind::Unsupported,
        4 => Kind::Rejected,
        5 => Kind::Network,
        6 => Kind::Timeout,
        7 => Kind::Tls,
        8 => Kind::Protocol,
        9 => Kind::Deferred,
        10 => Kind::Cleartext,
        11 => Kind::PoolTimeout,
        12 => Kind::Internal,
        13 => Kind::Throttled,
        _ => return None,
    })
}

/// What the daemon answers: the outcome, and for an OK the note that goes with it, if any
/// (served stale, `cache.stale-if-error`), which the client shows as in process.
#[derive(Debug)]
pub struct Answer {
    pub outcome: crate::Result<()>,
    pub notice: Option<String>,
}

/// The frame of an answer: OK and its notice, or the error's kind, server, command and
/// detail.
pub fn encode_response(answer: &Answer) -> Vec<u8> {
    let mut body = vec![VERSION];
    match &answer.outcome {
        Ok(()) => {
            body.push(0);
            let room = MAX_RESPONSE - body.len() - 2;
            push_text(&mut body, cut(answer.notice.as_deref().unwrap_or(""), room));
        }
        Err(e) => {
            body.push(kind_code(e.kind()));
            push_text(&mut body, e.server().unwrap_or(""));
            push_text(&mut body, e.command().unwrap_or(""));
            // Room for the other fields: the detail is the part that can be long.
            let room = MAX_RESPONSE - body.len() - 2;
            push_text(&mut body, cut(e.detail(), room));
        }
    }
    finish_frame(body)
}

/// At most `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One response from the start of `input`, `None` when the frame is not complete yet.
pub fn decode_response(input: &[u8]) -> Result<Option<(Answer, usize)>, WireError> {
    let Some((body, used)) = frame(input, MAX_RESPONSE)? else {
        return Ok(None);
    };
    let mut f = Fields(body);
    let version = f.byte()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let code = f.byte()?;
    if code == 0 {
        let notice = f.text()?;
        f.end()?;
        let answer = Answer {
            outcome: Ok(()),
            notice: Some(notice.to_string()).filter(|n| !n.is_empty()),
        };
        return Ok(Some((answer, used)));
    }
    let kind = kind_of(code).ok_or(WireError::Malformed("unknown result kind"))?;
    let server = f.text()?;
    let command = f.text()?;
    let detail = f.text()?;
    f.end()?;
    let mut error = Error::new(kind, detail);
    if !server.is_empty() {
        error = error.with_server(server);
    }
    if !command.is_empty() {
        error = error.with_command(command);
    }
    let answer = Answer {
        outcome: Err(error),
        notice: None,
    };
    Ok(Some((answer, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth<'a>(user: &'a str, secret: &'a str, ip: Option<&'a str>) -> Request<'a> {
        Request {
            directory: "imap",
            call: Call::Auth {
                user,
                secret,
                client_ip: ip,
            },
        }
    }

    #[test]
    fn requests_round_trip_in_any_chunking() {
        let long = "x".repeat(4096);
        let requests = [
            auth("alice@example.org", "s3cret", Some("192.0.2.1")),
            auth("bob", "p", None),
            auth("wörd", &long, Some("2001:db8::1")),
            Request {
                directory: "lmtp",
                call: Call::Rcpt {
                    address: "alice@example.org",
                },
            },
            Request {
                directory: "",
                call: Call::IsLocalDomain {
                    domain: "example.org",
                },
            },
        ];
        for request in &requests {
            let bytes = encode_request(request);
            for cut_at in 0..bytes.len() {
                assert_eq!(decode_request(&bytes[..cut_at]), Ok(None), "{request:?}");
            }
            let mut twice = bytes.to_vec();
            twice.extend_from_slice(&bytes);
            let (decoded, used) = decode_request(&twice).unwrap().unwrap();
            assert_eq!((&decoded, used), (request, bytes.len()));
        }
    }

    #[test]
    fn responses_round_trip_with_the_same_text() {
        let outcomes: Vec<crate::Result<()>> = vec![
            Ok(()),
            Err(Error::new(
                Kind::Rejected,
                "NO [AUTHENTICATIONFAILED] Authentication failed.",
            )
            .with_server("127.0.0.1:143")
            .with_command("AUTHENTICATE PLAIN")),
            Err(Error::new(Kind::Timeout, "read: timed out").with_server("[::1]:25")),
            Err(Error::input("user is empty")),
            Err(Error::new(Kind::PoolTimeout, "no free connection")),
        ];
        for outcome in outcomes {
            let answer = Answer {
                outcome,
                notice: None,
            };
            let bytes = encode_response(&answer);
            assert!(matches!(
                decode_response(&bytes[..bytes.len() - 1]),
                Ok(None)
            ));
            let (decoded, used) = decode_response(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert!(decoded.notice.is_none());
            match (&answer.outcome, decoded.outcome) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(b)) => {
                    let b = &b;
                    assert_eq!((a.kind(), a.to_string()), (b.kind(), b.to_string()));
                    assert_eq!((a.server(), a.command()), (b.server(), b.command()));
                }
                (a, b) => panic!("{a:?} became {b:?}"),
            }
        }
    }

    #[test]
    fn every_kind_has_a_code_that_comes_back() {
        for code in 1..=13 {
            let kind = kind_of(code).unwrap();
            assert_eq!(kind_code(kind), code);
        }
        assert_eq!(kind_of(0), None);
        assert_eq!(kind_of(14), None);
    }

    #[test]
    fn an_ok_carries_its_notice() {
        let answer = Answer {
            outcome: Ok(()),
            notice: Some("OK from an expired cache entry".into()),
        };
        let (decoded, _) = decode_response(&encode_response(&answer)).unwrap().unwrap();
        assert!(decoded.outcome.is_ok());
        assert_eq!(decoded.notice, answer.notice);
    }

    #[test]
    fn long_details_are_cut_to_fit() {
        let long = "é".repeat(MAX_RESPONSE);
        let bytes = encode_response(&Answer {
            outcome: Err(Error::new(Kind::Deferred, long)),
            notice: None,
        });
        assert!(bytes.len() <= 4 + MAX_RESPONSE);
        let (decoded, _) = decode_response(&bytes).unwrap().unwrap();
        assert!(decoded.outcome.unwrap_err().detail().starts_with("éé"));
    }

    #[test]
    fn bad_requests() {
        let frame = |body: &[u8]| {
            let mut v = (body.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        };
        let cases: &[(Vec<u8>, WireError)] = &[
            (
                (MAX_REQUEST as u32 + 1).to_be_bytes().to_vec(),
                WireError::TooLong {
                    length: MAX_REQUEST + 1,
                    max: MAX_REQUEST,
                },
            ),
            (
                u32::MAX.to_be_bytes().to_vec(),
                WireError::TooLong {
                    length: u32::MAX as usize,
                    max: MAX_REQUEST,
                },
            ),
            (frame(&[2, 1]), WireError::Version(2)),
            (frame(&[]), WireError::Malformed("truncated")),
            (
                frame(&[1, 9, 0, 0]),
                WireError::Malformed("unknown operation"),
            ),
            (
                frame(&[1, 2, 0, 1, b'd', 0, 5, b'a']),
                WireError::Malformed("truncated field"),
            ),
            (
                frame(&[1, 2, 0, 1, b'd', 0, 1, b'a', 0]),
                WireError::Malformed("trailing bytes"),
            ),
            (
                frame(&[1, 2, 0, 1, b'd', 0, 1, 0xff]),
                WireError::Malformed("field is not UTF-8"),
            ),
            (
                frame(&[1, 2, 0]),
                WireError::Malformed("truncated field length"),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                decode_request(bytes).map(|o| o.map(|(r, n)| format!("{r:?} {n}"))),
                Err(expected.clone()),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let text = format!("{:?}", auth("alice", "hunter2", None));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("alice"));
    }
}
