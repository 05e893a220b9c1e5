//! IMAP server lines: classification, greeting, capabilities, literals and the verdict of
//! a tagged reply. The input is what a hostile server sends; it is split into lines the way
//! the client's line reader does (LF, an optional CR before it removed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directory::imap::{
    auth_verdict, parse_greeting, parse_line, trailing_literal, Capabilities, Greeting, Line,
};

fuzz_target!(|data: &[u8]| {
    // The whole input as one line, and each LF-separated line, as the client would read it.
    one_line(data);
    for line in data.split(|&b| b == b'\n') {
        one_line(line.strip_suffix(b"\r").unwrap_or(line));
    }
});

fn one_line(line: &[u8]) {
    if let Some(n) = trailing_literal(line) {
        // At most 9 digits: the client compares it with its own bound before skipping.
        assert!(n < 1_000_000_000, "literal length {n} not bounded");
    }
    match parse_greeting(line) {
        Ok(Greeting::Ok(_)) => {}
        Ok(Greeting::Refused(text)) => assert_clean(&text),
        Err(e) => assert_clean(&e.to_string()),
    }
    match parse_line(line) {
        Ok(Line::Untagged(data)) => {
            let _ = Capabilities::from_data(data);
        }
        Ok(Line::Continuation(_)) => {}
        Ok(Line::Tagged(t)) => {
            assert!(!t.tag.is_empty());
            if let Some(code) = t.code {
                let _ = Capabilities::from_data(code);
            }
            let _ = auth_verdict(t.status, t.text);
        }
        Err(e) => assert_clean(&e.to_string()),
    }
    let _ = Capabilities::parse(line);
}

/// Messages built from server bytes reach C callers: no NUL, CR, LF or other controls.
fn assert_clean(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\t'),
        "control character in message {text:?}"
    );
}
