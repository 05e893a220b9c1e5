//! `GET /metrics` on `daemon.metrics.listen` (or `.socket`): the daemon's call statistics in
//! the Prometheus text format, the library's own rendering of them
//! ([`remote_directory::stats`]). One request per connection.

use crate::config::Section;
use crate::http::{self, parse_head, MAX_HEAD};
use crate::listener::{Context, Exchange, Service, Step};
use remote_directory::{stats, Result};
use std::sync::Arc;

pub fn build(_: &mut Section) -> Result<Arc<dyn Service>> {
    Ok(Arc::new(Metrics))
}

struct Metrics;

impl Service for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn max_request(&self) -> usize {
        MAX_HEAD
    }

    fn open(&self) -> Box<dyn Exchange> {
        Box::new(Metrics)
    }
}

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exchange for Metrics {
    fn step(&mut self, input: &[u8], _: &Context) -> Step {
        match parse_head(input) {
            Ok(None) => Step::More,
            Ok(Some((head, consumed))) => Step::Reply {
                consumed,
                reply: reply(head.method, head.path),
                close: true,
            },
            Err(e) => Step::Refuse {
                reply: http::response("400 Bad Request", "text/plain", &[], b"bad request\n"),
                reason: e.to_string(),
            },
        }
    }
}

/// The answer to `method path`: the metrics, or why not.
pub fn reply(method: &str, path: &str) -> Vec<u8> {
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => {
            let text = stats::prometheus_text(&stats::snapshot());
            http::response("200 OK", TEXT_FORMAT, &[], text.as_bytes())
        }
        (_, "/metrics") => http::response(
            "405 Method Not Allowed",
            "text/plain",
            &[("Allow", "GET")],
            b"only GET\n",
        ),
        _ => http::response("404 Not Found", "text/plain", &[], b"see /metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            ("GET", "/metrics", "HTTP/1.1 200 OK\r\n"),
            ("GET", "/metrics?x=1", "HTTP/1.1 200 OK\r\n"),
            ("POST", "/metrics", "HTTP/1.1 405 "),
            ("GET", "/", "HTTP/1.1 404 "),
            ("GET", "/metricsx", "HTTP/1.1 404 "),
        ];
        for (method, path, start) in cases {
            let r = String::from_utf8(reply(method, path)).unwrap();
            assert!(r.starts_with(start), "{method} {path}: {r}");
        }
        let ok = String::from_utf8(reply("GET", "/metrics")).unwrap();
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
    }
}
