//! remote-directoryd's Dovecot auth protocol: client lines as a hostile local client sends
//! them, split at LF as the daemon does, and the SASL messages inside them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directoryd::dovecot_auth::{
    decode_base64, decode_plain, escape, fail, next_line, ok, parse, unescape, Command, MAX_LINE,
};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some((line, used)) = next_line(rest) {
        assert!(used <= rest.len() && used > line.len());
        if line.len() > MAX_LINE {
            // The listener cuts such a client off before the parser sees it.
            break;
        }
        match parse(line) {
            Ok(Command::Auth(request)) => {
                if let Some(message) = request.initial.as_deref().and_then(decode_base64) {
                    if let Ok(c) = decode_plain(&message) {
                        // What goes back to the client is one line whatever the user name.
                        one_line(&ok(request.id, &c.user));
                        one_line(&fail(request.id, Some(&c.user), true, Some(&c.user)));
                        assert_eq!(unescape(escape(&c.user).as_bytes()), c.user.as_bytes());
                    }
                }
            }
            Ok(Command::Cont { data, .. }) => {
                if let Some(message) = decode_base64(&data) {
                    let _ = decode_plain(&message);
                }
            }
            Ok(_) | Err(_) => {}
        }
        rest = &rest[used..];
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(unescape(escape(text).as_bytes()), text.as_bytes());
    }
});

fn one_line(reply: &[u8]) {
    assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(reply.last(), Some(&b'\n'));
}
