//! A real Postfix asks the daemon through `relay_recipient_maps = socketmap:...` (the test
//! servers' smtpd on RD_SOCKETMAP_SMTP_PORT, a backup MX for example.org): an existing
//! recipient is accepted, an unknown one refused with 550, and with the remote server down
//! the recipient is deferred with 4xx. Then `curl` reads /metrics: the counters match that
//! traffic exactly (which also shows that Postfix's `@domain` and local-part lookups cost
//! no call).

mod common;

use common::*;

fn config(lmtp_port_key: Option<&str>, metrics_port: u16) -> String {
    let socket = servers().var("RD_SOCKETMAP_SOCKET").to_string();
    let directory = match lmtp_port_key {
        Some(key) => directory("rcpt", "lmtp", key, ""),
        None => format!(
            "[directory.rcpt]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = {}\ntimeout = \"2s\"\n",
            port_base() + 3001 // nothing listens there
        ),
    };
    format!(
        "{directory}\n[daemon]\nsocketmap.socket = \"{socket}\"\nsocketmap.socket-mode = \"0666\"\n\
         metrics.listen = \"127.0.0.1:{metrics_port}\"\n"
    )
}

/// The reply code to each RCPT TO, in one session with the socketmap smtpd.
fn rcpt_codes(recipients: &[&str]) -> Vec<u16> {
    rcpt_replies("RD_SOCKETMAP_SMTP_PORT", recipients)
        .iter()
        .map(|line| line[..3].parse().unwrap())
        .collect()
}

fn metrics(port: u16) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl is needed: apt-get install curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn postfix_relay_recipient_maps_through_the_daemon() {
    let metrics_port = port_base() + 3002;
    let dir = temp_dir("socketmap");
    let daemon = Daemon::start_in(dir, &config(Some("RD_LMTP_PORT"), metrics_port));

    assert_eq!(rcpt_codes(&[ALICE.0, NOBODY, BOB.0]), [250, 550, 250]);

    let text = metrics(metrics_port);
    let calls = |result: &str| {
        value(
            &text,
            &format!(
                "remote_directory_calls_total{{directory=\"rcpt\",op=\"rcpt\",result=\"{result}\"}}"
            ),
        )
    };
    // Two addresses found, one not: Postfix's further lookups of the unknown one (its
    // local part, @example.org) were answered without asking the directory.
    assert_eq!(calls("ok"), Some(2.0), "{text}");
    assert_eq!(calls("rejected"), Some(1.0), "{text}");
    assert_eq!(calls("temporary"), None, "{text}");
    assert_eq!(
        value(
            &text,
            "remote_directory_call_duration_seconds_count{directory=\"rcpt\",op=\"rcpt\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE remote_directory_calls_total counter"),
        "{text}"
    );

    // The remote server goes away (a reload points the directory at a dead port): Postfix
    // defers instead of refusing.
    daemon.rewrite_config(&config(None, metrics_port));
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reloaded");
    let codes = rcpt_codes(&[ALICE.0]);
    assert!((400..500).contains(&codes[0]), "{codes:?}");
    let text = metrics(metrics_port);
    assert_eq!(
        value(
            &text,
            "remote_directory_calls_total{directory=\"rcpt\",op=\"rcpt\",result=\"temporary\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let down = format!("127.0.0.1:{}", port_base() + 3001);
    assert_eq!(
        value(&text, &format!("remote_directory_connections_total{{directory=\"rcpt\",server=\"{down}\",event=\"failed\"}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("remote_directory_server_up{{directory=\"rcpt\",server=\"{down}\"}}")
        ),
        Some(0.0),
        "{text}"
    );
}
