//! remote-directoryd's request parsers over arbitrary bytes: Postfix socketmap netstrings
//! and lookups, Postfix policy requests, HTTP request heads (/metrics). Whatever parses used
//! no more bytes than it was given and stays within each parser's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directoryd::{http, policy, socketmap};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((payload, used))) = socketmap::parse_netstring(data, socketmap::MAX_REQUEST) {
        assert!(used <= data.len() && payload.len() <= socketmap::MAX_REQUEST);
        if let Ok(lookup) = socketmap::parse_lookup(payload) {
            assert!(!lookup.map.is_empty());
            let _ = socketmap::is_address(lookup.key);
        }
    }
    if let Ok(Some((request, used))) = policy::parse_request(data) {
        assert!(used <= data.len());
        for value in [request.request, request.protocol_state, request.recipient] {
            assert!(value.len() <= policy::MAX_LINE && !value.contains('\n'));
        }
    }
    if let Ok(Some((head, used))) = http::parse_head(data) {
        assert!(used <= data.len() && used <= http::MAX_HEAD);
        assert!(head.headers.len() <= http::MAX_HEADERS);
    }
});
