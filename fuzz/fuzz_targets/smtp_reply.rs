//! SMTP/LMTP replies: the multi-line reply parser, EHLO extensions and the verdicts of AUTH
//! and RCPT replies. The input is a hostile server's byte stream, split into lines as the
//! client's line reader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directory::smtp::{auth_verdict, rcpt_verdict, Extensions, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::default();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parser.feed(line) {
            Ok(None) => {}
            Ok(Some(reply)) => {
                assert!((200..600).contains(&reply.code), "code {}", reply.code);
                assert!(!reply.lines.is_empty());
                assert_clean(&reply.to_string());
                let _ = Extensions::parse(&reply);
                let _ = auth_verdict(&reply);
                let _ = rcpt_verdict(&reply);
                if reply.is_positive() {
                    assert!(rcpt_verdict(&reply).is_ok());
                }
            }
            Err(e) => {
                assert_clean(&e.to_string());
                // The client drops the connection after a protocol error; start afresh.
                parser = ReplyParser::default();
            }
        }
    }
});

/// Reply text reaches C callers through `directory_last_error`: no controls in it.
fn assert_clean(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\t'),
        "control character in {text:?}"
    );
}
