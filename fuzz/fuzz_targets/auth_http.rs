//! remote-directoryd's auth_http endpoint: HTTP requests (nginx's header form and the JSON
//! form) from a hostile local client, and the answers built from what it sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directoryd::auth_http::{nginx_answer, parse, Parsed, Retry, MAX_BODY};
use remote_directoryd::http::MAX_HEAD;
use remote_directoryd::password::Verdict;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::More => assert!(data.len() <= MAX_HEAD + MAX_BODY),
        Parsed::Bad(status, _) => assert!((400..500).contains(&status)),
        Parsed::Request(r, used) => {
            assert!(used <= data.len());
            let retry = Retry {
                wait_secs: 3,
                max_attempts: 3,
            };
            for verdict in [Verdict::Accepted, Verdict::Refused, Verdict::Temporary] {
                let answer = nginx_answer(verdict, &r.protocol, r.attempt, retry, None);
                // Nothing the client sent reaches the answer's headers: one head, one end.
                let text = String::from_utf8(answer).unwrap();
                assert_eq!(text.matches("\r\n\r\n").count(), 1);
                assert!(text.ends_with("\r\n\r\n"));
            }
        }
    }
});
