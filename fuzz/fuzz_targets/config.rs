//! The configuration reader: arbitrary text as a whole configuration file, read with no
//! directory name and with a name, plus the duration, throttle rate and client address
//! syntaxes on their own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_directory::config::{load_str, normalize_domain, parse_duration};
use remote_directory::parse_client_ip;
use remote_directory::throttle::Rate;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in [None, Some("test"), Some("")] {
        match load_str(text, name) {
            Ok(settings) => {
                // What validation promises to everything after it.
                assert!(!settings.servers.is_empty());
                for server in &settings.servers {
                    assert!(server.port > 0 && !server.host.is_empty());
                    let _ = server.to_string();
                }
                assert!(settings.max_connections >= 1);
                assert!(settings.max_rcpts >= 1 && settings.max_auth_errors >= 1);
                assert!(
                    !settings.timeout.is_zero() && settings.timeout <= Duration::from_secs(86_400)
                );
                assert!(settings.wait_timeout <= Duration::from_secs(86_400));
                for d in &settings.domains {
                    assert!(!d.is_empty() && d.len() <= 255, "domain {d:?}");
                    assert!(!d.bytes().any(|b| b.is_ascii_control() || b == b' '));
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let _ = normalize_domain(text);
    if let Some(d) = parse_duration(text) {
        let _ = d.as_millis();
    }
    if let Some(rate) = Rate::parse(text) {
        assert!((1..=1_000_000).contains(&rate.limit));
        assert!(!rate.period.is_zero() && rate.period <= Duration::from_secs(86_400));
        // What the effective configuration prints reads back the same.
        assert_eq!(Rate::parse(&rate.to_string()), Some(rate));
    }
    if let Ok(ip) = parse_client_ip(text) {
        assert_eq!(parse_client_ip(&ip.to_string()).ok(), Some(ip));
    }
});
