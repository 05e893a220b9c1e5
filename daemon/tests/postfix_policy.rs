//! A real Postfix asks the daemon's policy service (`check_policy_service` of the test
//! servers' smtpd on RD_POLICY_SMTP_PORT, which asks inet:127.0.0.1:RD_POLICY_PORT): an
//! existing recipient is accepted, an unknown one refused with 550 5.1.1 by the policy,
//! and with the remote server down the recipient is deferred (4xx).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn config(up: bool) -> String {
    let directory = if up {
        directory("lmtp", "lmtp", "RD_LMTP_PORT", "")
    } else {
        format!(
            "[directory.lmtp]\ntype = \"lmtp\"\naddress = \"127.0.0.1\"\nport = {}\ntimeout = \"2s\"\n\
             lookup.domains = [\"example.org\"]\n",
            port_base() + 3001 // nothing listens there
        )
    };
    format!(
        "{directory}\n[daemon]\npolicy.listen = \"127.0.0.1:{}\"\npolicy.directory = \"lmtp\"\n",
        servers().port("RD_POLICY_PORT")
    )
}

/// One SMTP session on the policy smtpd: each RCPT TO's reply line.
fn rcpt_replies(recipients: &[&str]) -> Vec<String> {
    let port = servers().port("RD_POLICY_SMTP_PORT");
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Postfix");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = |cmd: Option<&str>| -> String {
        if let Some(cmd) = cmd {
            writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "short reply {line:?} to {cmd:?}");
            if line.as_bytes()[3] == b' ' {
                return line.trim_end().to_string();
            }
        }
    };
    assert!(reply(None).starts_with("220"));
    assert!(reply(Some("EHLO test.example")).starts_with("250"));
    assert!(reply(Some("MAIL FROM:<sender@example.net>")).starts_with("250"));
    let replies = recipients
        .iter()
        .map(|r| reply(Some(&format!("RCPT TO:<{r}>"))))
        .collect();
    let _ = reply(Some("QUIT"));
    replies
}

#[test]
fn postfix_check_policy_service_through_the_daemon() {
    let daemon = Daemon::start("policy", &config(true));
    let replies = rcpt_replies(&[ALICE.0, NOBODY]);
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(
        replies[1].starts_with("550 5.1.1 ")
            && replies[1].ends_with("Recipient address rejected: user unknown"),
        "{replies:?}"
    );

    daemon.rewrite_config(&config(false));
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reloaded");
    let replies = rcpt_replies(&[ALICE.0]);
    assert!(replies[0].starts_with("450 4.3.0 "), "{replies:?}");
    assert!(
        daemon.log().contains("policy: ") && daemon.log().contains("connect"),
        "the deferral is logged with its reason:\n{}",
        daemon.log()
    );
}
