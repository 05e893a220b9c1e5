//! Postfix socketmap (`daemon.socketmap.socket`): a table lookup per netstring, for
//! `relay_recipient_maps = socketmap:unix:/run/remote-directory/socketmap:NAME`.
//!
//! The request is `NAME KEY` in a netstring; NAME is a directory name, KEY what Postfix looks
//! up. The reply is a netstring starting `OK`, `NOTFOUND`, `TEMP` or `PERM` (socketmap_table(5)).
//! Postfix asks for an address, then the address without its extension, then the bare local
//! part, then `@domain`: only full addresses are asked of the directory; the other keys are
//! NOTFOUND at once (an `OK` for `@domain` would make the table a catch-all).

use crate::config::Section;
use crate::listener::{Context, Exchange, Service, Step};
use remote_directory::ffi::{directory_result, result_of};
use remote_directory::Result;
use std::sync::Arc;

/// Longest request netstring payload: a directory name and an address fit many times over.
pub const MAX_REQUEST: usize = 4096;
/// Longest reply payload, far below Postfix's `socketmap_max_reply_size` (100000).
const MAX_REPLY: usize = 1000;

pub fn build(_: &mut Section) -> Result<Arc<dyn Service>> {
    Ok(Arc::new(Socketmap))
}

struct Socketmap;

impl Service for Socketmap {
    fn name(&self) -> &'static str {
        "socketmap"
    }

    fn max_request(&self) -> usize {
        // The length digits, the colon and the comma around the payload.
        MAX_REQUEST + 12
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Socketmap)
    }
}

/// Why bytes are not a netstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetstringError {
    TooLong(usize),
    Malformed(&'static str),
}

impl std::fmt::Display for NetstringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetstringError::TooLong(n) => {
                write!(f, "netstring of {n} bytes, more than {MAX_REQUEST}")
            }
            NetstringError::Malformed(why) => write!(f, "not a netstring: {why}"),
        }
    }
}

/// The payload of the netstring at the start of `input` and the bytes it took; `None` when
/// incomplete. `[len]:[payload],` with `len` in decimal, at most `max`.
pub fn parse_netstring(
    input: &[u8],
    max: usize,
) -> std::result::Result<Option<(&[u8], usize)>, NetstringError> {
    let digits = input.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == input.len() {
        // Only digits so far: more to come, unless there are already too many.
        return match digits {
            d if d > 9 => Err(NetstringError::Malformed("length has more than 9 digits")),
            _ => Ok(None),
        };
    }
    if digits == 0 {
        return Err(NetstringError::Malformed("does not start with a length"));
    }
    if digits > 9 {
        return Err(NetstringError::Malformed("length has more than 9 digits"));
    }
    if input[digits] != b':' {
        return Err(NetstringError::Malformed("no ':' after the length"));
    }
    // At most 9 digits: fits in usize.
    let length: usize = std::str::from_utf8(&input[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(NetstringError::Malformed("bad length"))?;
    if length > max {
        return Err(NetstringError::TooLong(length));
    }
    let start = digits + 1;
    let end = start + length;
    match input.get(end) {
        None => Ok(None),
        Some(b',') => Ok(Some((&input[start..end], end + 1))),
        Some(_) => Err(NetstringError::Malformed("no ',' after the payload")),
    }
}

/// `payload` as a netstring.
pub fn netstring(payload: &str) -> Vec<u8> {
    format!("{}:{payload},", payload.len()).into_bytes()
}

/// What a request asks: the directory (map) name and the key.
#[derive(Debug, PartialEq, Eq)]
pub struct Lookup<'a> {
    pub map: &'a str,
    pub key: &'a str,
}

/// `NAME KEY` (split at the first space; the key may hold spaces, as a quoted local part).
pub fn parse_lookup(payload: &[u8]) -> std::result::Result<Lookup<'_>, &'static str> {
    let text = std::str::from_utf8(payload).map_err(|_| "request is not UTF-8")?;
    let (map, key) = text
        .split_once(' ')
        .ok_or("request has no space between name and key")?;
    if map.is_empty() {
        return Err("request has an empty map name");
    }
    Ok(Lookup { map, key })
}

/// A key the directory is asked about: `local@domain` with both parts present. A bare local
/// part or `@domain` is a table lookup Postfix makes in case of a catch-all.
pub fn is_address(key: &str) -> bool {
    match key.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => false,
    }
}

/// The reply payload for `lookup`: a pure function of the directory's answer.
pub fn reply(lookup: &Lookup, ctx: &Context) -> String {
    if !is_address(lookup.key) {
        return "NOTFOUND ".into();
    }
    let Some(directory) = ctx.directories.get(lookup.map) else {
        return format!(
            "PERM remote-directoryd serves no directory named '{}'",
            lookup.map
        );
    };
    verdict(directory.rcpt(lookup.key))
}

/// `OK`, `NOTFOUND`, or why not, by the C result of what the library decided.
pub fn verdict(outcome: Result<()>) -> String {
    use directory_result::*;
    let e = match outcome {
        Ok(()) => return "OK OK".into(),
        Err(e) => e,
    };
    let text = match result_of(e.kind()) {
        // No such recipient, or not an address a server could accept.
        DIRECTORY_RESULT_REJECTED | DIRECTORY_RESULT_INVALID_INPUT => return "NOTFOUND ".into(),
        // rcpt on an IMAP directory: the table is misconfigured, not the address.
        DIRECTORY_RESULT_UNSUPPORTED | DIRECTORY_RESULT_CONFIG => format!("PERM {e}"),
        // (An error is never OK.)
        DIRECTORY_RESULT_OK | DIRECTORY_RESULT_TEMPORARY | DIRECTORY_RESULT_INTERNAL => {
            format!("TEMP {e}")
        }
    };
    cut(text, MAX_REPLY)
}

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Exchange for Socketmap {
    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        match parse_netstring(input, MAX_REQUEST) {
            Ok(None) => Step::More,
            Ok(Some((payload, consumed))) => {
                let answer = match parse_lookup(payload) {
                    Ok(lookup) => reply(&lookup, ctx),
                    Err(why) => format!("PERM {why}"),
                };
                Step::Reply {
                    consumed,
                    reply: netstring(&answer),
                    close: false,
                }
            }
            Err(e) => Step::Refuse {
                reply: netstring(&format!("PERM {e}")),
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remote_directory::{Error, Kind};

    #[test]
    fn netstrings() {
        type Want = std::result::Result<Option<(&'static [u8], usize)>, NetstringError>;
        let cases: &[(&[u8], usize, Want)] = &[
            (b"3:abc,", 10, Ok(Some((b"abc", 6)))),
            (b"0:,", 10, Ok(Some((b"", 3)))),
            (b"3:abc,5:", 10, Ok(Some((b"abc", 6)))),
            (b"3:ab", 10, Ok(None)),
            (b"3:abc", 10, Ok(None)),
            (b"3", 10, Ok(None)),
            (b"", 10, Ok(None)),
            (b"123456789", 10, Ok(None)),
            (b"11:abc", 10, Err(NetstringError::TooLong(11))),
            (
                b"1234567890",
                10,
                Err(NetstringError::Malformed("length has more than 9 digits")),
            ),
            (b"999999999:", 10, Err(NetstringError::TooLong(999_999_999))),
            (
                b":abc,",
                10,
                Err(NetstringError::Malformed("does not start with a length")),
            ),
            (
                b"x",
                10,
                Err(NetstringError::Malformed("does not start with a length")),
            ),
            (
                b"3;abc,",
                10,
                Err(NetstringError::Malformed("no ':' after the length")),
            ),
            (
                b"3:abcd",
                10,
                Err(NetstringError::Malformed("no ',' after the payload")),
            ),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                &parse_netstring(input, *max),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn netstrings_in_chunks() {
        let stream = b"10:lmtp a@b.c,4:x @y,";
        for cut_at in 0..stream.len() {
            let got = parse_netstring(&stream[..cut_at], MAX_REQUEST).unwrap();
            match got {
                None => assert!(cut_at < 14, "{cut_at}"),
                Some((payload, used)) => assert_eq!((payload, used), (&b"lmtp a@b.c"[..], 14)),
            }
        }
        assert_eq!(netstring("NOTFOUND "), b"9:NOTFOUND ,");
    }

    #[test]
    fn lookups() {
        type Want = std::result::Result<(&'static str, &'static str), &'static str>;
        let cases: &[(&[u8], Want)] = &[
            (b"lmtp alice@example.org", Ok(("lmtp", "alice@example.org"))),
            (
                b"lmtp \"john doe\"@example.org",
                Ok(("lmtp", "\"john doe\"@example.org")),
            ),
            (b"lmtp ", Ok(("lmtp", ""))),
            (b"lmtp", Err("request has no space between name and key")),
            (b" alice@example.org", Err("request has an empty map name")),
            (b"lmtp \xff", Err("request is not UTF-8")),
        ];
        for (payload, want) in cases {
            let got = parse_lookup(payload).map(|l| (l.map, l.key));
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn only_full_addresses_are_asked() {
        for (key, asked) in [
            ("alice@example.org", true),
            ("alice+tag@example.org", true),
            ("\"a@b\"@example.org", true),
            ("alice", false),
            ("@example.org", false),
            ("alice@", false),
            ("", false),
            ("@", false),
        ] {
            assert_eq!(is_address(key), asked, "{key:?}");
        }
    }

    #[test]
    fn verdicts() {
        let e = |kind, text: &str| Err(Error::new(kind, text));
        let cases: Vec<(Result<()>, &str)> = vec![
            (Ok(()), "OK OK"),
            (e(Kind::Rejected, "550 5.1.1 unknown"), "NOTFOUND "),
            (
                e(Kind::InvalidInput, "address contains a space"),
                "NOTFOUND ",
            ),
            (
                e(Kind::Network, "127.0.0.1:24: connect: refused"),
                "TEMP 127.0.0.1:24: connect: refused",
            ),
            (
                e(Kind::Deferred, "451 4.3.0 try later"),
                "TEMP 451 4.3.0 try later",
            ),
            (
                e(Kind::Unsupported, "directory 'imap' is of type imap"),
                "PERM directory 'imap' is of type imap",
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(verdict(outcome), want);
        }
        let long = verdict(e(Kind::Deferred, &"é".repeat(MAX_REPLY)));
        assert!(long.len() <= MAX_REPLY && long.starts_with("TEMP é"));
    }
}
