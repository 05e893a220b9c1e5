//! A real Postfix asks the daemon's policy service (`check_policy_service` of the test
//! servers' smtpd on RD_POLICY_SMTP_PORT, which asks inet:127.0.0.1:RD_POLICY_PORT): an
//! existing recipient is accepted, an unknown one refused with 550 5.1.1 by the policy,
//! and with the remote server down the recipient is deferred (4xx).

mod common;

use common::*;

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

#[test]
fn postfix_check_policy_service_through_the_daemon() {
    let daemon = Daemon::start("policy", &config(true));
    let replies = rcpt_replies("RD_POLICY_SMTP_PORT", &[ALICE.0, NOBODY]);
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(
        replies[1].starts_with("550 5.1.1 ")
            && replies[1].ends_with("Recipient address rejected: user unknown"),
        "{replies:?}"
    );

    daemon.rewrite_config(&config(false));
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reloaded");
    let replies = rcpt_replies("RD_POLICY_SMTP_PORT", &[ALICE.0]);
    assert!(replies[0].starts_with("450 4.3.0 "), "{replies:?}");
    assert!(
        daemon.log().contains("policy: ") && daemon.log().contains("connect"),
        "the deferral is logged with its reason:\n{}",
        daemon.log()
    );
}
