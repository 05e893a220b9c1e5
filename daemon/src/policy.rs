//! Postfix policy delegation (`daemon.policy.listen` / `.socket`), for
//! `check_policy_service`: refuses recipients the directory does not know, with 550 as
//! Postfix itself refuses unknown users, and defers when the directory cannot tell.
//!
//! A request is `name=value` lines ended by an empty line; the reply is `action=...` and an
//! empty line. For `request=smtpd_access_policy` in `protocol_state=RCPT`:
//!
//! | situation | action |
//! |---|---|
//! | the recipient's domain is not in `lookup.domains` | `DUNNO` (not ours to judge) |
//! | the recipient exists | `DUNNO` (later restrictions decide) |
//! | the directory refuses it | `550 5.1.1 user unknown` |
//! | anything else (server down, timeout, ...) | `DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable` |
//! | no recipient, another state or request | `DUNNO` |
//!
//! Postfix writes `<addr>: Recipient address rejected: ` before the text, so the client sees
//! `550 5.1.1 <addr>: Recipient address rejected: user unknown`. A numeric action, because
//! `REJECT` would be answered with `access_map_reject_code` (554).

use crate::config::Section;
use crate::listener::{Context, Exchange, Service, Step};
use crate::log::log;
use remote_directory::{Kind, Result};
use std::sync::Arc;

/// Bytes per attribute line, without the newline.
pub const MAX_LINE: usize = 4096;
/// Attributes per request; Postfix 3.x sends about 30.
pub const MAX_ATTRIBUTES: usize = 128;
/// Bytes per request.
pub const MAX_REQUEST: usize = 64 * 1024;

pub fn build(section: &mut Section) -> Result<Arc<dyn Service>> {
    let directory = section.string("policy.directory")?.ok_or_else(|| {
        section.error(
            "policy.directory",
            "missing: the directory that checks recipients",
        )
    })?;
    Ok(Arc::new(Policy { directory }))
}

struct Policy {
    directory: String,
}

impl Service for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn max_request(&self) -> usize {
        MAX_REQUEST
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Policy {
            directory: self.directory.clone(),
        })
    }
}

/// The attributes the decision needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub request: &'a str,
    pub protocol_state: &'a str,
    pub recipient: &'a str,
}

/// Why bytes are not a policy request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    LineTooLong,
    TooManyAttributes,
    TooLong,
    NoEquals,
    NotUtf8,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::LineTooLong => {
                write!(f, "malformed request: line longer than {MAX_LINE} bytes")
            }
            PolicyError::TooManyAttributes => {
                write!(
                    f,
                    "malformed request: more than {MAX_ATTRIBUTES} attributes"
                )
            }
            PolicyError::TooLong => write!(f, "malformed request: longer than {MAX_REQUEST} bytes"),
            PolicyError::NoEquals => write!(f, "malformed request: attribute line without '='"),
            PolicyError::NotUtf8 => write!(f, "malformed request: not UTF-8"),
        }
    }
}

/// The request at the start of `input` and the bytes it took; `None` when incomplete.
/// Lines end with `\n` (a `\r` before it is dropped).
pub fn parse_request(
    input: &[u8],
) -> std::result::Result<Option<(Request<'_>, usize)>, PolicyError> {
    let mut request = Request::default();
    let mut at = 0;
    let mut attributes = 0;
    loop {
        let rest = &input[at..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE + 1 {
                return Err(PolicyError::LineTooLong);
            }
            if input.len() > MAX_REQUEST {
                return Err(PolicyError::TooLong);
            }
            return Ok(None);
        };
        let line = rest[..newline]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..newline]);
        at += newline + 1;
        if line.len() > MAX_LINE {
            return Err(PolicyError::LineTooLong);
        }
        if line.is_empty() {
            return Ok(Some((request, at)));
        }
        attributes += 1;
        if attributes > MAX_ATTRIBUTES {
            return Err(PolicyError::TooManyAttributes);
        }
        let line = std::str::from_utf8(line).map_err(|_| PolicyError::NotUtf8)?;
        let (name, value) = line.split_once('=').ok_or(PolicyError::NoEquals)?;
        match name {
            "request" => request.request = value,
            "protocol_state" => request.protocol_state = value,
            "recipient" => request.recipient = value,
            _ => {}
        }
    }
}

const DUNNO: &str = "DUNNO";
const UNKNOWN: &str = "550 5.1.1 user unknown";
const DEFER: &str = "DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable";

/// The action for `request`, given the directory's answers (`is_local_domain`, `rcpt`), and
/// what to log about it, if anything (never a refusal: those are routine).
pub fn decide(
    request: &Request,
    is_local_domain: impl FnOnce(&str) -> Result<()>,
    rcpt: impl FnOnce(&str) -> Result<()>,
) -> (&'static str, Option<String>) {
    let recipient = request.recipient;
    if request.request != "smtpd_access_policy"
        || !request.protocol_state.eq_ignore_ascii_case("RCPT")
        || recipient.is_empty()
    {
        return (DUNNO, None);
    }
    let Some((_, domain)) = recipient.rsplit_once('@').filter(|(_, d)| !d.is_empty()) else {
        // No domain: not a question for a remote directory.
        return (DUNNO, None);
    };
    match is_local_domain(domain) {
        Ok(()) => {}
        Err(e) if e.kind() == Kind::Rejected => return (DUNNO, None),
        Err(e) => return (DUNNO, Some(format!("domain of <{recipient}>: {e}"))),
    }
    match rcpt(recipient) {
        Ok(()) => (DUNNO, None),
        Err(e) if e.kind() == Kind::Rejected => (UNKNOWN, None),
        Err(e) => (DEFER, Some(format!("<{recipient}>: {e}"))),
    }
}

/// `action=...` and the empty line.
pub fn reply(action: &str) -> Vec<u8> {
    format!("action={action}\n\n").into_bytes()
}

impl Exchange for Policy {
    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        match parse_request(input) {
            Ok(None) => Step::More,
            Ok(Some((request, consumed))) => {
                let (action, note) = match ctx.directories.get(&self.directory) {
                    Some(d) => decide(&request, |x| d.is_local_domain(x), |x| d.rcpt(x)),
                    None => (
                        DEFER,
                        Some(format!(
                            "daemon.policy.directory: no directory named '{}'",
                            self.directory
                        )),
                    ),
                };
                if let Some(note) = note {
                    log!("warning", "policy: {}: {note}", ctx.peer);
                }
                Step::Reply {
                    consumed,
                    reply: reply(action),
                    close: false,
                }
            }
            Err(e) => Step::Refuse {
                reply: Vec::new(),
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remote_directory::Error;

    #[test]
    fn requests() {
        type Want = std::result::Result<
            Option<(&'static str, &'static str, &'static str, usize)>,
            PolicyError,
        >;
        let long = format!("recipient={}\n\n", "a".repeat(MAX_LINE));
        let unended = format!("recipient={}", "a".repeat(MAX_LINE));
        let many: String = (0..=MAX_ATTRIBUTES)
            .map(|i| format!("x{i}=y\n"))
            .collect::<String>()
            + "\n";
        let cases: Vec<(&[u8], Want)> = vec![
            (
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@b\nclient_address=192.0.2.1\n\n",
                Ok(Some(("smtpd_access_policy", "RCPT", "a@b", 88))),
            ),
            (
                b"request=smtpd_access_policy\r\nrecipient=a@b\r\n\r\n",
                Ok(Some(("smtpd_access_policy", "", "a@b", 46))),
            ),
            (b"\n", Ok(Some(("", "", "", 1)))),
            (b"recipient=a=b@c\n\nrest", Ok(Some(("", "", "a=b@c", 17)))),
            (b"request=smtpd_access_policy\n", Ok(None)),
            (b"request=smtpd_acc", Ok(None)),
            (b"", Ok(None)),
            (b"no equals\n\n", Err(PolicyError::NoEquals)),
            (b"recipient=\xff\n\n", Err(PolicyError::NotUtf8)),
            (long.as_bytes(), Err(PolicyError::LineTooLong)),
            (unended.as_bytes(), Err(PolicyError::LineTooLong)),
            (many.as_bytes(), Err(PolicyError::TooManyAttributes)),
        ];
        for (input, want) in cases {
            let got = parse_request(input)
                .map(|o| o.map(|(r, n)| (r.request, r.protocol_state, r.recipient, n)));
            let got =
                got.map(|o| o.map(|(a, b, c, n)| (a.to_string(), b.to_string(), c.to_string(), n)));
            let want = want
                .map(|o| o.map(|(a, b, c, n)| (a.to_string(), b.to_string(), c.to_string(), n)));
            assert_eq!(
                got,
                want,
                "{:?}",
                String::from_utf8_lossy(&input[..input.len().min(60)])
            );
        }
        // Many short lines without an end: bounded by the request size.
        let endless = "x=y\n".repeat(MAX_ATTRIBUTES - 1) + &"z".repeat(MAX_REQUEST);
        assert!(parse_request(endless.as_bytes()).is_err());
    }

    #[test]
    fn requests_fed_in_chunks_wait_for_the_empty_line() {
        let input = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@b\n\n";
        for cut_at in 0..input.len() {
            assert_eq!(parse_request(&input[..cut_at]), Ok(None), "{cut_at}");
        }
        assert!(parse_request(input).unwrap().is_some());
    }

    #[test]
    fn decisions() {
        let ok = || Ok(());
        let err = |kind| move || Err(Error::new(kind, "why"));
        let rcpt_state = |recipient: &'static str, state: &'static str| Request {
            request: "smtpd_access_policy",
            protocol_state: state,
            recipient,
        };
        type Answer = Box<dyn Fn() -> Result<()>>;
        let cases: Vec<(Request, Answer, Answer, &str, bool)> = vec![
            (
                rcpt_state("a@example.org", "RCPT"),
                Box::new(ok),
                Box::new(ok),
                DUNNO,
                false,
            ),
            (
                rcpt_state("a@example.org", "rcpt"),
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                UNKNOWN,
                false,
            ),
            (
                rcpt_state("a@example.org", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Network)),
                DEFER,
                true,
            ),
            (
                rcpt_state("a@example.org", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Timeout)),
                DEFER,
                true,
            ),
            (
                rcpt_state("a@example.org", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Unsupported)),
                DEFER,
                true,
            ),
            (
                rcpt_state("a@example.net", "RCPT"),
                Box::new(err(Kind::Rejected)),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
            (
                rcpt_state("a@example.org", "DATA"),
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
            (
                rcpt_state("", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
            (
                rcpt_state("postmaster", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
            (
                rcpt_state("a@", "RCPT"),
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
            (
                Request {
                    request: "junk",
                    protocol_state: "RCPT",
                    recipient: "a@example.org",
                },
                Box::new(ok),
                Box::new(err(Kind::Rejected)),
                DUNNO,
                false,
            ),
        ];
        for (request, local, rcpt, action, logged) in cases {
            let (got, note) = decide(&request, |_| local(), |_| rcpt());
            assert_eq!((got, note.is_some()), (action, logged), "{request:?}");
        }
        assert_eq!(reply(DUNNO), b"action=DUNNO\n\n");
    }
}
