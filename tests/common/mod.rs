//! Access to the real Dovecot and Postfix that `tests/servers/servers.sh` starts.
//!
//! The test command starts them and exports `RD_SERVERS_ENV`; a test that needs them and
//! cannot find them fails with instructions, it is never skipped.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod relay;
pub mod syn_drop;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

pub struct Servers {
    vars: HashMap<String, String>,
}

pub const ALICE: (&str, &str) = ("alice@example.org", "alice-pass-1");
pub const BOB: (&str, &str) = ("bob@example.org", "p\"a\\ss w\u{f6}rd");
pub const NOBODY: &str = "nosuchuser@example.org";

/// The running servers, or a panic saying how to start them.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let how = "start them with `tests/servers/servers.sh start /tmp/rd-servers` and \
                   `export RD_SERVERS_ENV=/tmp/rd-servers/env`, or run ./scripts/test.sh, which does both";
        let path = std::env::var("RD_SERVERS_ENV")
            .unwrap_or_else(|_| panic!("these tests need the real Dovecot and Postfix: RD_SERVERS_ENV is not set; {how}"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read RD_SERVERS_ENV={path}: {e}; {how}"));
        let vars = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export ").or(Some(l.trim())))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
            .collect();
        let servers = Servers { vars };
        for key in ["RD_IMAP_PORT", "RD_LMTP_PORT", "RD_SMTP_PORT"] {
            let port = servers.port(key);
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("{key}={port} from {path} does not answer ({e}); {how}"));
        }
        servers
    })
}

impl Servers {
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from RD_SERVERS_ENV"))
    }

    pub fn port(&self, key: &str) -> u16 {
        self.var(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a port"))
    }

    pub fn ca(&self) -> &str {
        self.var("RD_CA")
    }

    /// A one-directory configuration for the server on `port_key`, verifying certificates
    /// with the test CA; `extra` lines are appended inside the directory table.
    pub fn config(&self, kind: &str, port_key: &str, implicit: bool, extra: &str) -> String {
        format!(
            "[directory.test]\ntype = \"{kind}\"\naddress = \"localhost\"\nport = {}\ntimeout = \"10s\"\n\
             tls.implicit = {implicit}\ntls.ca-file = \"{}\"\nlookup.domains = [\"example.org\"]\n{extra}\n",
            self.port(port_key),
            self.ca()
        )
    }
}
