//! The daemon protocol's codec: arbitrary bytes as a request (what the daemon reads) and as a
//! response (what a `type = "daemon"` directory reads); whatever decodes re-encodes to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directory::wire::{decode_request, decode_response, encode_request, encode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = decode_request(data) {
        assert!(used <= data.len());
        assert_eq!(&encode_request(&request)[..], &data[..used]);
    }
    if let Ok(Some((answer, used))) = decode_response(data) {
        assert!(used <= data.len());
        let again = encode_response(&answer);
        let (decoded, n) = decode_response(&again).unwrap().unwrap();
        assert_eq!(n, again.len());
        assert_eq!(decoded.notice, answer.notice);
        assert_eq!(
            decoded.outcome.map_err(|e| (e.kind(), e.to_string())),
            answer.outcome.map_err(|e| (e.kind(), e.to_string()))
        );
    }
});
