//! nginx's mail `auth_http` protocol (`daemon.auth-http.listen` / `.socket`), as nginx,
//! freenginx and Angie mail proxies speak it, plus a JSON form of the same endpoint for the
//! Dovecot 2.4 Lua passdb shipped in `contrib/` (Dovecot 2.4 removed `checkpassword`).
//!
//! nginx form: `GET` with `Auth-User` and `Auth-Pass` (nginx percent-escapes space, `%` and
//! control bytes in them), `Auth-Method`, `Auth-Protocol` (imap, pop3, smtp),
//! `Auth-Login-Attempt` and `Client-IP`. The answer is in headers: `Auth-Status: OK` with
//! `Auth-Server` (an IP address: nginx does not resolve names) and `Auth-Port` of the backend
//! nginx proxies the session to, or `Auth-Status: <text for the client>` with `Auth-Wait: <s>`
//! (nginx waits, then lets the client try again) while attempts are left; without
//! `Auth-Wait` nginx closes the client's connection.
//!
//! JSON form: `POST` with `Content-Type: application/json` and a body `{"user": ...,
//! "password": ..., "service": ..., "client_ip": ...}`; the answer's status says it all: 200
//! accepted, 403 refused, 503 temporary (with the body `{"result": "OK" | "REJECTED" |
//! "TEMPORARY"}`).
//!
//! One request per connection (HTTP/1.0, `Connection: close`): nginx opens one per login.

use crate::config::{Directories, Section};
use crate::http::{parse_request, Head, HeadError, MAX_HEAD};
use crate::listener::{Context, Exchange, Service, Step};
use crate::log::log;
use crate::password::{check, DirectoryChoice, Login, Verdict};
use remote_directory::Result;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest JSON body.
pub const MAX_BODY: usize = 8192;

/// Which form a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Nginx,
    Json,
}

/// One login request. The password is wiped when dropped.
pub struct Request {
    pub form: Form,
    pub user: String,
    pub secret: Zeroizing<String>,
    /// `Auth-Protocol` (nginx) or `service` (JSON), lower case; "" when absent.
    pub protocol: String,
    /// `Auth-Login-Attempt`, from 1.
    pub attempt: u32,
    pub client_ip: Option<IpAddr>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("form", &self.form)
            .field("user", &self.user)
            .field("protocol", &self.protocol)
            .field("attempt", &self.attempt)
            .field("client_ip", &self.client_ip)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum Parsed {
    More,
    Request(Request, usize),
    /// Not a request this endpoint answers: the status to send, and why (for the log).
    Bad(u16, String),
}

/// Parses the request at the start of `input`.
pub fn parse(input: &[u8]) -> Parsed {
    let (head, body, used) = match parse_request(input, MAX_BODY) {
        Ok(None) => return Parsed::More,
        Ok(Some(request)) => request,
        Err(e @ HeadError::TooLong) => return Parsed::Bad(431, e.to_string()),
        Err(e @ HeadError::BodyTooLong(_)) => return Parsed::Bad(413, e.to_string()),
        Err(e @ HeadError::Malformed(_)) => return Parsed::Bad(400, e.to_string()),
    };
    let request = match head.method {
        "GET" => nginx_request(&head),
        "POST" => {
            let json = head.header("Content-Type").is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
            if !json {
                return Parsed::Bad(415, "POST without Content-Type: application/json".into());
            }
            json_request(body)
        }
        other => return Parsed::Bad(405, format!("method {other}")),
    };
    match request {
        Ok(r) => Parsed::Request(r, used),
        Err(why) => Parsed::Bad(400, why),
    }
}

fn nginx_request(head: &Head) -> std::result::Result<Request, String> {
    // apop, cram-md5 and external hand over a digest or a certificate, not the password a
    // remote server can check.
    let method = head.header("Auth-Method").unwrap_or("plain");
    if !method.eq_ignore_ascii_case("plain") && !method.eq_ignore_ascii_case("login") {
        return Err(format!(
            "Auth-Method {method} (only plain: a remote server checks passwords, not digests)"
        ));
    }
    let decoded = |name: &str| -> std::result::Result<Zeroizing<String>, String> {
        let value = head.header(name).ok_or(format!("no {name}"))?;
        let bytes = percent_decode(value.as_bytes()).ok_or(format!("{name}: bad %-escape"))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| format!("{name} is not UTF-8"))?;
        Ok(Zeroizing::new(text.to_string()))
    };
    let attempt = match head.header("Auth-Login-Attempt") {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| "Auth-Login-Attempt is not a number")?,
    };
    Ok(Request {
        form: Form::Nginx,
        user: decoded("Auth-User")?.to_string(),
        secret: decoded("Auth-Pass")?,
        protocol: head
            .header("Auth-Protocol")
            .unwrap_or_default()
            .to_ascii_lowercase(),
        attempt,
        client_ip: head.header("Client-IP").and_then(|v| v.parse().ok()),
    })
}

fn json_request(body: &[u8]) -> std::result::Result<Request, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    // Moved out of the document, not copied, so that the one buffer holding it is wiped.
    let secret = match value.get_mut("password") {
        Some(serde_json::Value::String(s)) => Zeroizing::new(std::mem::take(s)),
        _ => return Err("no \"password\" string".into()),
    };
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    Ok(Request {
        form: Form::Json,
        user: field("user").ok_or("no \"user\" string")?.to_string(),
        secret,
        protocol: field("service").unwrap_or_default().to_ascii_lowercase(),
        attempt: 1,
        client_ip: field("client_ip").and_then(|v| v.parse().ok()),
    })
}

/// `%XX` escapes decoded; other bytes kept. A `%` without two hex digits after it: `None`.
pub fn percent_decode(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len()));
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    Some(out)
}

/// How refusals are told to nginx: `Auth-Wait` seconds while `Auth-Login-Attempt` is below
/// `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub wait_secs: u64,
    pub max_attempts: u32,
}

/// What the client reads after a refusal or a temporary failure, in its protocol's words
/// (response codes of RFC 5530 for IMAP, RFC 3206 for POP3), and for SMTP the reply code.
fn client_text(protocol: &str, verdict: Verdict) -> (&'static str, Option<&'static str>) {
    let temporary = verdict == Verdict::Temporary;
    match (protocol, temporary) {
        ("smtp", false) => ("Authentication failed", Some("535 5.7.8")),
        ("smtp", true) => ("Temporary authentication failure", Some("454 4.7.0")),
        ("pop3", false) => ("[AUTH] Authentication failed.", None),
        ("pop3", true) => (
            "[SYS/TEMP] Temporary authentication failure, try again later.",
            None,
        ),
        (_, false) => ("[AUTHENTICATIONFAILED] Authentication failed.", None),
        (_, true) => (
            "[UNAVAILABLE] Temporary authentication failure, try again later.",
            None,
        ),
    }
}

/// The nginx-form answer. `backend` is where nginx proxies an accepted login.
pub fn nginx_answer(
    verdict: Verdict,
    protocol: &str,
    attempt: u32,
    retry: Retry,
    backend: Option<SocketAddr>,
) -> Vec<u8> {
    let mut head = String::from("HTTP/1.0 200 OK\r\n");
    match (verdict, backend) {
        (Verdict::Accepted, Some(backend)) => {
            head.push_str(&format!(
                "Auth-Status: OK\r\nAuth-Server: {}\r\nAuth-Port: {}\r\n",
                backend.ip(),
                backend.port()
            ));
        }
        (verdict, _) => {
            // An accepted login without a backend cannot be proxied: a configuration error,
            // told to the client as a temporary failure.
            let verdict = if verdict == Verdict::Accepted {
                Verdict::Temporary
            } else {
                verdict
            };
            let (text, code) = client_text(protocol, verdict);
            head.push_str(&format!("Auth-Status: {text}\r\n"));
            if let Some(code) = code {
                head.push_str(&format!("Auth-Error-Code: {code}\r\n"));
            }
            if attempt < retry.max_attempts {
                head.push_str(&format!("Auth-Wait: {}\r\n", retry.wait_secs));
            }
        }
    }
    head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    head.into_bytes()
}

/// The JSON-form answer.
pub fn json_answer(verdict: Verdict) -> Vec<u8> {
    let (status, result) = match verdict {
        Verdict::Accepted => ("200 OK", "OK"),
        Verdict::Refused => ("403 Forbidden", "REJECTED"),
        Verdict::Temporary => ("503 Service Unavailable", "TEMPORARY"),
    };
    let body = format!("{{\"result\":\"{result}\"}}\n");
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A bare status for requests this endpoint does not answer.
pub fn error_answer(status: u16) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    format!("HTTP/1.0 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// The auth_http service of `daemon.auth-http`.
struct AuthHttp {
    choice: DirectoryChoice,
    retry: Retry,
    /// Where nginx proxies the logins checked against each directory.
    backends: BTreeMap<String, SocketAddr>,
}

/// Reads `auth-http.directory`, `.services`, `.wait`, `.max-attempts` and `.backends`.
pub fn build(section: &mut Section) -> Result<Arc<dyn Service>> {
    let choice = DirectoryChoice::read(section, "auth-http.directory", "auth-http.services")?;
    let wait = section
        .duration("auth-http.wait")?
        .unwrap_or(Duration::from_secs(3));
    if wait.as_secs() == 0 || wait.subsec_nanos() != 0 {
        return Err(section.error("auth-http.wait", "nginx takes whole seconds, at least 1s"));
    }
    let max_attempts = section
        .integer("auth-http.max-attempts", 1, 20)?
        .unwrap_or(3) as u32;
    let mut backends = BTreeMap::new();
    for (directory, value) in section.table("auth-http.backends") {
        let address = value
            .as_str()
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                section.error(
                    &format!("auth-http.backends.{directory}"),
                    "expected \"IP:port\" (nginx takes an IP address, not a host name)",
                )
            })?;
        backends.insert(directory, address);
    }
    Ok(Arc::new(AuthHttp {
        choice,
        retry: Retry {
            wait_secs: wait.as_secs(),
            max_attempts,
        },
        backends,
    }))
}

impl Service for AuthHttp {
    fn name(&self) -> &'static str {
        "auth-http"
    }

    fn max_request(&self) -> usize {
        MAX_HEAD + MAX_BODY
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Conversation {
            choice: self.choice.clone(),
            retry: self.retry,
            backends: self.backends.clone(),
        })
    }
}

struct Conversation {
    choice: DirectoryChoice,
    retry: Retry,
    backends: BTreeMap<String, SocketAddr>,
}

impl Conversation {
    /// The backend of the directory that answers `protocol`.
    fn backend(&self, protocol: &str, directories: &Directories) -> Option<SocketAddr> {
        let (name, _) = self.choice.pick(protocol, directories).ok()?;
        let backend = self.backends.get(&name).copied();
        if backend.is_none() {
            log!(
                "error",
                "auth-http: no daemon.auth-http.backends.{name}: nginx has nowhere to proxy \
                 logins checked against directory '{name}'"
            );
        }
        backend
    }
}

impl Exchange for Conversation {
    fn step(&mut self, input: &[u8], ctx: &Context) -> Step {
        let (request, consumed) = match parse(input) {
            Parsed::More => return Step::More,
            Parsed::Bad(status, reason) => {
                return Step::Refuse {
                    reply: error_answer(status),
                    reason,
                }
            }
            Parsed::Request(request, consumed) => (request, consumed),
        };
        let login = Login {
            protocol: "auth-http",
            service: &request.protocol,
            user: &request.user,
            secret: &request.secret,
            client_ip: request.client_ip,
        };
        let reply = match request.form {
            Form::Nginx => {
                // Without a backend an accepted login could not be proxied: ask nobody.
                let backend = self.backend(&request.protocol, ctx.directories);
                let verdict = match backend {
                    Some(_) => check(
                        &self.choice,
                        ctx.directories,
                        &login,
                        "answered with a temporary-failure text and Auth-Wait",
                    ),
                    None => Verdict::Temporary,
                };
                nginx_answer(
                    verdict,
                    &request.protocol,
                    request.attempt,
                    self.retry,
                    backend,
                )
            }
            Form::Json => json_answer(check(&self.choice, ctx.directories, &login, "answered 503")),
        };
        Step::Reply {
            consumed,
            reply,
            close: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Retry = Retry {
        wait_secs: 3,
        max_attempts: 3,
    };

    fn nginx(user: &str, pass: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: {user}\r\n\
             Auth-Pass: {pass}\r\nAuth-Protocol: imap\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn json(body: &str) -> Vec<u8> {
        format!(
            "POST /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: Keep-Alive\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn requests_parse() {
        // (input, form, user, password, protocol, attempt, client ip)
        type Case<'a> = (
            Vec<u8>,
            Form,
            &'a str,
            &'a str,
            &'a str,
            u32,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                nginx(
                    "alice@example.org",
                    "alice-pass-1",
                    "Auth-Login-Attempt: 2\r\nClient-IP: 192.0.2.42\r\nClient-Host: [UNAVAILABLE]\r\n",
                ),
                Form::Nginx,
                "alice@example.org",
                "alice-pass-1",
                "imap",
                2,
                Some("192.0.2.42"),
            ),
            (
                // What nginx sends for bob: space escaped, the rest raw UTF-8.
                nginx("bob@example.org", "p\"a\\ss%20w\u{f6}rd", ""),
                Form::Nginx,
                "bob@example.org",
                "p\"a\\ss w\u{f6}rd",
                "imap",
                1,
                None,
            ),
            (
                nginx("a%25b", "%00%0a%7f", "Client-IP: 2001:db8::1\r\n"),
                Form::Nginx,
                "a%b",
                "\0\n\x7f",
                "imap",
                1,
                Some("2001:db8::1"),
            ),
            (
                json(r#"{"user":"bob@example.org","password":"p\"a\\ss w\u00f6rd","service":"IMAP","client_ip":"203.0.113.5"}"#),
                Form::Json,
                "bob@example.org",
                "p\"a\\ss w\u{f6}rd",
                "imap",
                1,
                Some("203.0.113.5"),
            ),
            (
                json(r#"{"user":"u","password":"p","client_ip":"not an address"}"#),
                Form::Json,
                "u",
                "p",
                "",
                1,
                None,
            ),
        ];
        for (input, form, user, pass, protocol, attempt, ip) in cases {
            let Parsed::Request(r, n) = parse(&input) else {
                panic!("{:?}: {:?}", String::from_utf8_lossy(&input), parse(&input));
            };
            assert_eq!(n, input.len());
            assert_eq!(
                (
                    r.form,
                    r.user.as_str(),
                    r.secret.as_str(),
                    r.protocol.as_str(),
                    r.attempt
                ),
                (form, user, pass, protocol, attempt)
            );
            assert_eq!(r.client_ip, ip.map(|i| i.parse().unwrap()));
            // Any prefix is incomplete, never a request nor an error.
            for cut in 0..input.len() {
                assert!(matches!(parse(&input[..cut]), Parsed::More), "cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_requests_get_a_status() {
        let long_header = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"\x16\x03\x01 garbage\r\n\r\n".to_vec(), 400),
            (nginx("u", "100%", ""), 400),
            (nginx("u", "%zz", ""), 400),
            (b"GET / HTTP/1.0\r\nAuth-User: u\r\n\r\n".to_vec(), 400),
            (
                b"GET / HTTP/1.0\r\nAuth-Method: cram-md5\r\nAuth-User: u\r\nAuth-Pass: d\r\n\r\n".to_vec(),
                400,
            ),
            (b"DELETE / HTTP/1.0\r\n\r\n".to_vec(), 405),
            (b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}".to_vec(), 415),
            (
                b"POST / HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                400,
            ),
            (b"POST / HTTP/1.0\r\nContent-Type: application/json\r\n\r\n".to_vec(), 400),
            (
                format!("POST / HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).into_bytes(),
                413,
            ),
            (json("{\"user\":\"u\"}"), 400),
            (json("[1,2"), 400),
            (long_header.into_bytes(), 431),
            (vec![b'G'; MAX_HEAD + 1], 431),
        ];
        for (input, status) in cases {
            match parse(&input) {
                Parsed::Bad(got, _) => {
                    assert_eq!(got, status, "{:?}", String::from_utf8_lossy(&input))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&input)),
            }
        }
    }

    #[test]
    fn percent_escapes_decode() {
        let cases: [(&[u8], Option<&[u8]>); 6] = [
            (b"plain", Some(b"plain")),
            (b"a%20b", Some(b"a b")),
            (b"%25%2F%ff", Some(b"%/\xff")),
            (b"%", None),
            (b"%2", None),
            (b"%g0", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                percent_decode(input).as_deref().map(Vec::as_slice),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn nginx_answers_say_the_verdict_in_the_protocols_words() {
        let backend: SocketAddr = "127.0.0.1:10143".parse().unwrap();
        let cases = [
            (
                Verdict::Accepted, "imap", 1, Some(backend),
                "Auth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 10143\r\n",
            ),
            (
                Verdict::Refused, "imap", 1, Some(backend),
                "Auth-Status: [AUTHENTICATIONFAILED] Authentication failed.\r\nAuth-Wait: 3\r\n",
            ),
            (
                // The last attempt: no Auth-Wait, nginx closes the client's connection.
                Verdict::Refused, "imap", 3, Some(backend),
                "Auth-Status: [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            ),
            (
                Verdict::Temporary, "imap", 2, Some(backend),
                "Auth-Status: [UNAVAILABLE] Temporary authentication failure, try again later.\r\nAuth-Wait: 3\r\n",
            ),
            (
                Verdict::Temporary, "smtp", 1, None,
                "Auth-Status: Temporary authentication failure\r\nAuth-Error-Code: 454 4.7.0\r\nAuth-Wait: 3\r\n",
            ),
            (
                Verdict::Refused, "smtp", 5, None,
                "Auth-Status: Authentication failed\r\nAuth-Error-Code: 535 5.7.8\r\n",
            ),
            (
                Verdict::Refused, "pop3", 1, None,
                "Auth-Status: [AUTH] Authentication failed.\r\nAuth-Wait: 3\r\n",
            ),
            (
                // Accepted, but nowhere to proxy: temporary.
                Verdict::Accepted, "pop3", 1, None,
                "Auth-Status: [SYS/TEMP] Temporary authentication failure, try again later.\r\nAuth-Wait: 3\r\n",
            ),
        ];
        for (verdict, protocol, attempt, backend, headers) in cases {
            let got = String::from_utf8(nginx_answer(verdict, protocol, attempt, RETRY, backend))
                .unwrap();
            let expected = format!(
                "HTTP/1.0 200 OK\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(got, expected, "{verdict:?} {protocol} {attempt}");
        }
    }

    #[test]
    fn json_answers_carry_the_verdict_in_the_status() {
        let cases = [
            (Verdict::Accepted, "200 OK", "OK"),
            (Verdict::Refused, "403 Forbidden", "REJECTED"),
            (Verdict::Temporary, "503 Service Unavailable", "TEMPORARY"),
        ];
        for (verdict, status, result) in cases {
            let got = String::from_utf8(json_answer(verdict)).unwrap();
            let body = format!("{{\"result\":\"{result}\"}}\n");
            assert_eq!(
                got,
                format!(
                    "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            );
        }
    }

    #[test]
    fn requests_never_print_the_password() {
        let Parsed::Request(r, _) = parse(&nginx("u", "hunter2", "")) else {
            panic!()
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
