//! HTTP/1.x request heads for the daemon's HTTP endpoints (`/metrics`; nginx `auth_http`),
//! parsed by `httparse` with our bounds, and the replies they send. Pure functions.

/// Longest request head accepted, and most header lines.
pub const MAX_HEAD: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 32;

/// A request head; strings borrow the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Header names as sent (compare them case-insensitively) and values as text.
    pub headers: Vec<(&'a str, &'a str)>,
}

impl Head<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Why bytes are not an acceptable request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    TooLong,
    /// A `Content-Length` over the endpoint's bound.
    BodyTooLong(usize),
    Malformed(String),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLong => write!(f, "request head longer than {MAX_HEAD} bytes"),
            HeadError::BodyTooLong(max) => write!(f, "request body longer than {max} bytes"),
            HeadError::Malformed(why) => write!(f, "malformed HTTP request: {why}"),
        }
    }
}

/// The head at the start of `input` and the bytes it took; `None` when incomplete. A
/// request body is refused: these endpoints take none.
pub fn parse_head(input: &[u8]) -> Result<Option<(Head<'_>, usize)>, HeadError> {
    parse_request(input, 0).map(|r| r.map(|(head, _, used)| (head, used)))
}

/// A request head, its body and the bytes both took.
pub type Request<'a> = (Head<'a>, &'a [u8], usize);

/// The head at the start of `input`, its body (`Content-Length` bytes, at most `max_body`;
/// chunked bodies are refused) and the bytes both took; `None` when incomplete.
pub fn parse_request(input: &[u8], max_body: usize) -> Result<Option<Request<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(HeadError::TooLong),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return Err(HeadError::TooLong),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let mut out = Vec::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HeadError::Malformed(format!("header {} is not UTF-8", h.name)))?;
        out.push((h.name, value.trim()));
    }
    let head = Head {
        method: request.method.unwrap_or_default(),
        path: request.path.unwrap_or_default(),
        headers: out,
    };
    let no_body = || HeadError::Malformed("a request body is not accepted".into());
    if head.header("transfer-encoding").is_some() {
        return Err(no_body());
    }
    let length = match head.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| HeadError::Malformed("Content-Length is not a number".into()))?,
    };
    match length {
        0 => Ok(Some((head, &[], used))),
        _ if max_body == 0 => Err(no_body()),
        _ if length > max_body => Err(HeadError::BodyTooLong(max_body)),
        _ => Ok(input
            .get(used..used + length)
            .map(|body| (head, body, used + length))),
    }
}

/// A complete response that ends the connection.
pub fn response(status: &str, content_type: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        type Want = Result<Option<(&'static str, &'static str, usize)>, HeadError>;
        let cases: &[(&[u8], Want)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Ok(Some(("GET", "/metrics", 34))),
            ),
            (
                b"GET /metrics HTTP/1.0\n\n",
                Ok(Some(("GET", "/metrics", 23))),
            ),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Ok(None)),
            (b"GET /met", Ok(None)),
            (b"", Ok(None)),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                Err(HeadError::Malformed(
                    "a request body is not accepted".into(),
                )),
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HeadError::Malformed(
                    "a request body is not accepted".into(),
                )),
            ),
            (
                b"\x00GET / HTTP/1.1\r\n\r\n",
                Err(HeadError::Malformed("invalid token".into())),
            ),
        ];
        for (input, want) in cases {
            let got = parse_head(input).map(|o| o.map(|(h, n)| (h.method, h.path, n)));
            let got = got.map(|o| o.map(|(m, p, n)| (m.to_string(), p.to_string(), n)));
            let want = want
                .clone()
                .map(|o| o.map(|(m, p, n)| (m.to_string(), p.to_string(), n)));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn bounds() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse_head(&long).unwrap_err(), HeadError::TooLong);
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&long).unwrap_err(), HeadError::TooLong);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        let input = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(input.as_bytes()),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn headers_are_found_case_insensitively() {
        let (head, _) = parse_head(b"GET / HTTP/1.1\r\nAuth-User: alice\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.header("auth-user"), Some("alice"));
        assert_eq!(head.header("auth-pass"), None);
    }

    #[test]
    fn response_has_length_and_closes() {
        let r = response("200 OK", "text/plain", &[("Auth-Status", "OK")], b"hi");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\nAuth-Status: OK\r\n\r\nhi"
        );
    }
}
