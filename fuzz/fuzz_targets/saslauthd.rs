//! remote-directoryd's saslauthd protocol: counted strings from a hostile local client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directoryd::saslauthd::{client_ip, parse, Parsed, MAX_FIELD, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::More => assert!(data.len() < MAX_REQUEST, "More with {} bytes", data.len()),
        Parsed::TooLong(_) => {}
        Parsed::Request(r, used) => {
            assert!(used <= data.len() && used <= MAX_REQUEST);
            for field in [&r.login, &*r.password, &r.service, &r.realm] {
                assert!(field.len() <= MAX_FIELD);
            }
            if let Some(client) = &r.client {
                assert!(client.len() <= MAX_FIELD);
                let _ = client_ip(client);
            }
        }
    }
});
