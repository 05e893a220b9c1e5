//! The openings that fault scripts share. Each function plays the server side of a dialogue
//! up to one step, the step where a test's fault comes, so that a case reads as "up to here,
//! then this" (see the builders [`closing_after`], [`stalling_after`] and
//! [`stalling_after_reply`]).

use super::{ehlo_reply, Conn, PeerResult};
use std::time::Duration;

/// How long a stalling script waits: far beyond every `timeout` the fault tests use. It
/// ends sooner when the client closes.
pub const STALL: Duration = Duration::from_secs(20);

/// An IMAP greeting that offers AUTHENTICATE PLAIN with an initial response.
pub const IMAP_CAPS: &str = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready";
/// An IMAP greeting that allows nothing before STARTTLS.
pub const IMAP_STARTTLS_CAPS: &str = "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready";
pub const SMTP_GREETING: &str = "220 mx.example.org ESMTP";
pub const LMTP_GREETING: &str = "220 mx.example.org LMTP";
/// The host name of the EHLO and LHLO replies.
const HOST: &str = "mx.example.org";

/// Nothing yet: the fault comes right after the connection is accepted.
pub fn at_connect(_: &mut Conn) -> PeerResult {
    Ok(())
}

/// IMAP up to the client's CAPABILITY (the greeting listed none).
pub fn imap_to_capability(c: &mut Conn) -> PeerResult {
    c.send("* OK ready")?;
    c.expect_imap("CAPABILITY").map(drop)
}

/// IMAP up to the client's AUTHENTICATE; returns its tag.
pub fn imap_to_auth(c: &mut Conn) -> PeerResult<String> {
    c.send(IMAP_CAPS)?;
    c.expect_imap("AUTHENTICATE").map(|(tag, _)| tag)
}

/// IMAP up to the client's STARTTLS; returns its tag.
pub fn imap_to_starttls(c: &mut Conn) -> PeerResult<String> {
    c.send(IMAP_STARTTLS_CAPS)?;
    c.expect_imap("STARTTLS").map(|(tag, _)| tag)
}

/// IMAP up to the TLS handshake: STARTTLS answered, the client's ClientHello next.
pub fn imap_at_handshake(c: &mut Conn) -> PeerResult {
    let tag = imap_to_starttls(c)?;
    c.send(&format!("{tag} OK Begin TLS negotiation now."))
}

/// IMAP up to a TLS session with the peer's certificate (STARTTLS, capabilities again).
pub fn imap_to_tls(c: &mut Conn) -> PeerResult {
    imap_at_handshake(c)?;
    c.start_tls()?;
    let (tag, _) = c.expect_imap("CAPABILITY")?;
    c.send_lines(&[
        "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR",
        &format!("{tag} OK done"),
    ])
}

/// The reply to EHLO offering `keywords`.
pub fn smtp_ehlo_reply(c: &mut Conn, keywords: &[&str]) -> PeerResult {
    ehlo_reply(c, HOST, keywords)
}

/// SMTP up to the client's EHLO.
pub fn smtp_to_ehlo(c: &mut Conn) -> PeerResult {
    c.send(SMTP_GREETING)?;
    c.expect("EHLO").map(drop)
}

/// SMTP up to the reply to EHLO, which offers `keywords`.
pub fn smtp_hello(c: &mut Conn, keywords: &[&str]) -> PeerResult {
    smtp_to_ehlo(c)?;
    smtp_ehlo_reply(c, keywords)
}

/// SMTP up to the client's `AUTH PLAIN` (the only mechanism offered).
pub fn smtp_to_auth(c: &mut Conn) -> PeerResult {
    smtp_hello(c, &["AUTH PLAIN"])?;
    c.expect("AUTH PLAIN").map(drop)
}

/// SMTP with PIPELINING up to the client's `MAIL FROM` and `RCPT TO`, both unanswered.
pub fn smtp_to_rcpt(c: &mut Conn) -> PeerResult {
    smtp_hello(c, &["PIPELINING"])?;
    c.expect("MAIL FROM")?;
    c.expect("RCPT TO").map(drop)
}

/// SMTP up to the TLS handshake: EHLO offering `keywords` (STARTTLS among them), STARTTLS
/// answered, the client's ClientHello next.
pub fn smtp_at_handshake(c: &mut Conn, keywords: &[&str]) -> PeerResult {
    smtp_hello(c, keywords)?;
    c.expect("STARTTLS")?;
    c.send("220 2.0.0 Ready to start TLS")
}

/// SMTP up to the EHLO reply after STARTTLS, offering `keywords` then.
pub fn smtp_to_tls(c: &mut Conn, keywords: &[&str]) -> PeerResult {
    smtp_at_handshake(c, &["PIPELINING", "STARTTLS"])?;
    c.start_tls()?;
    c.expect("EHLO")?;
    smtp_ehlo_reply(c, keywords)
}

/// LMTP up to the client's LHLO.
pub fn lmtp_to_lhlo(c: &mut Conn) -> PeerResult {
    c.send(LMTP_GREETING)?;
    c.expect("LHLO").map(drop)
}

/// LMTP up to the client's `RCPT TO` (LHLO and `MAIL FROM` answered one by one).
pub fn lmtp_to_rcpt(c: &mut Conn) -> PeerResult {
    lmtp_to_lhlo(c)?;
    c.send(&format!("250 {HOST}"))?;
    c.expect("MAIL FROM")?;
    c.send("250 2.1.0 OK")?;
    c.expect("RCPT TO").map(drop)
}

// ---------------------------------------------------------------------------------------
// Scripts made of an opening and a fault

/// A script: `dialogue`, then `reply` (raw bytes, often a reply cut short; may be empty),
/// then the connection closed.
pub fn closing_after<T>(
    dialogue: impl Fn(&mut Conn) -> PeerResult<T> + Send + Sync + 'static,
    reply: &'static [u8],
) -> impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static {
    move |c| {
        dialogue(c)?;
        c.send_raw(reply)?;
        c.close();
        Ok(())
    }
}

/// A script: `dialogue`, then silence for [`STALL`].
pub fn stalling_after<T>(
    dialogue: impl Fn(&mut Conn) -> PeerResult<T> + Send + Sync + 'static,
) -> impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static {
    move |c| {
        dialogue(c)?;
        c.stall(STALL)
    }
}

/// A script: `dialogue`, then `reply` (raw bytes), then silence for [`STALL`].
pub fn stalling_after_reply<T>(
    dialogue: impl Fn(&mut Conn) -> PeerResult<T> + Send + Sync + 'static,
    reply: &'static [u8],
) -> impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static {
    stalling_after(move |c: &mut Conn| {
        dialogue(c)?;
        c.send_raw(reply)
    })
}
