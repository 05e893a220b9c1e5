//! Memory under hostile servers: an endless line, an endless multi-line reply, endless
//! untagged lines and literals. Each is a TEMPORARY protocol error found after a bounded
//! number of bytes, and the process's peak RSS hardly moves.
//!
//! Measured per case, one case at a time (this binary has one test, so nothing else runs):
//! - bytes the client took: what the peer wrote before it saw the client close. The peer
//!   writes in batches paced 1 ms apart, far below what the client reads per ms, so this is
//!   what the client read plus at most two batches still in flight;
//! - peak RSS growth: `VmHWM` after resetting it through /proc/self/clear_refs, minus the
//!   RSS before the call.

mod peer;

use peer::dialogue::{at_connect, imap_to_auth, imap_to_capability, lmtp_to_rcpt, smtp_to_ehlo};
use peer::{CDirectory, Conn, Peer, PeerResult};
use remote_directory::ffi::directory_result::*;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";
const ALICE_PASS: &str = "alice-pass-1";
/// Peak RSS growth allowed for one hostile call: the client's buffers are 8 KiB (line) and
/// 16 KiB (reply text); the rest is thread stacks touched and allocator noise.
const RSS_GROWTH_LIMIT_KB: u64 = 4 * 1024;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

struct Measure {
    name: &'static str,
    took: Duration,
    /// Bytes the peer wrote before it saw the client close.
    peer_sent: usize,
    /// The most `peer_sent` may be.
    peer_sent_limit: usize,
    rss_growth_kb: u64,
    message: String,
}

/// Sends `unit` over and over (until the client closes, or 128 MiB), in batches of at
/// least `batch` bytes paced 1 ms apart.
fn flood(c: &mut Conn, unit: &[u8], batch: usize) -> PeerResult {
    let mut data = Vec::new();
    while data.len() < batch {
        data.extend_from_slice(unit);
    }
    let mut sent = 0;
    while sent < 128 << 20 {
        c.send_raw(&data)?;
        sent += data.len();
        c.pause(Duration::from_millis(1))?;
    }
    Ok(())
}

/// A script: `dialogue`, then `start` (raw bytes, may be empty), then a [`flood`] of `unit`.
fn flooding_after<T>(
    dialogue: impl Fn(&mut Conn) -> PeerResult<T> + Send + Sync + 'static,
    start: &'static [u8],
    unit: Vec<u8>,
    batch: usize,
) -> impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static {
    move |c| {
        dialogue(c)?;
        c.send_raw(start)?;
        flood(c, &unit, batch)
    }
}

/// Runs one case named `"<kind>: <what>"` against a peer running `script`: an IMAP case
/// authenticates, an SMTP or LMTP case probes a recipient. `peer_sent_limit` follows from
/// the client's limits (see the test).
fn measure(
    name: &'static str,
    peer_sent_limit: usize,
    script: impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static,
) -> Measure {
    let kind = name.split_once(':').map_or(name, |(kind, _)| kind);
    let rcpt = match kind {
        "imap" => false,
        "smtp" | "lmtp" => true,
        _ => panic!("case {name:?} does not start with its kind (imap:, smtp: or lmtp:)"),
    };
    let peer = Peer::start(script);
    let dir = CDirectory::open(kind, &peer, &["timeout = \"10s\""]);
    // Warm up code paths (TLS roots, thread-locals) outside the measured window.
    let _ = dir.rcpt("x\r");
    let rss_before = status_kb("VmRSS:");
    reset_peak();
    let start = Instant::now();
    let (result, message) = if rcpt {
        dir.rcpt(ALICE)
    } else {
        dir.auth(ALICE, ALICE_PASS)
    };
    let took = start.elapsed();
    let peak = status_kb("VmHWM:");
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(result, DIRECTORY_RESULT_TEMPORARY, "{name}: {message}");
    Measure {
        name,
        took,
        peer_sent: peer.bytes_sent(0),
        peer_sent_limit,
        rss_growth_kb: peak.saturating_sub(rss_before),
        message,
    }
}

#[test]
fn endless_lines_and_replies_are_bounded_in_bytes_time_and_memory() {
    // Bounds on what the client takes follow from its limits: 8 KiB per line, 128 lines or
    // 16 KiB of text per SMTP reply, 1000 untagged lines per IMAP reply, 64 KiB per skipped
    // literal; plus two batches in flight.
    let literal = [
        &b"* 1 FETCH (BODY[] {61440}\r\n"[..],
        &[b'L'; 61440],
        b")\r\n",
    ]
    .concat();
    let results = vec![
        measure(
            "imap: endless greeting line",
            16 << 10,
            flooding_after(at_connect, b"* OK ", b"x".to_vec(), 1024),
        ),
        measure(
            "smtp: endless greeting line",
            16 << 10,
            flooding_after(at_connect, b"220 ", b"y".to_vec(), 1024),
        ),
        measure(
            "smtp: endless multi-line greeting",
            16 << 10,
            flooding_after(
                at_connect,
                b"",
                b"220-mx.example.org ESMTP and more and more\r\n".to_vec(),
                1024,
            ),
        ),
        measure(
            "smtp: endless multi-line EHLO reply",
            16 << 10,
            flooding_after(
                smtp_to_ehlo,
                b"",
                b"250-X-KEYWORD-WITH-A-LONG-NAME\r\n".to_vec(),
                1024,
            ),
        ),
        measure(
            "smtp: multi-line reply of 8000-byte lines",
            48 << 10,
            flooding_after(
                smtp_to_ehlo,
                b"",
                [&b"250-"[..], &[b'k'; 8000], b"\r\n"].concat(),
                1,
            ),
        ),
        measure(
            "lmtp: endless RCPT reply",
            16 << 10,
            flooding_after(lmtp_to_rcpt, b"", b"250-still checking\r\n".to_vec(), 1024),
        ),
        measure(
            "imap: endless untagged lines",
            32 << 10,
            flooding_after(imap_to_auth, b"", b"* OK still thinking\r\n".to_vec(), 1024),
        ),
        measure(
            "imap: endless untagged 60 KiB literals",
            1000 * (61440 + 32) + (2 << 20),
            flooding_after(imap_to_auth, b"", literal, 8 * 61440),
        ),
        measure(
            "imap: literal of 999999999 bytes",
            16 << 10,
            flooding_after(
                imap_to_auth,
                b"* 1 FETCH (BODY[] {999999999}\r\n",
                b"L".to_vec(),
                1024,
            ),
        ),
        measure(
            "imap: endless CAPABILITY line",
            16 << 10,
            flooding_after(
                imap_to_capability,
                b"* CAPABILITY IMAP4rev1",
                b" AUTH=PLAIN".to_vec(),
                1024,
            ),
        ),
    ];
    let mut failures = Vec::new();
    eprintln!(
        "{:<42} {:>6} {:>11} {:>9}  message",
        "case", "ms", "peer wrote", "RSS+ KiB"
    );
    for m in &results {
        let shown: String = m.message.chars().take(120).collect();
        eprintln!(
            "{:<42} {:>6} {:>11} {:>9}  {shown}",
            m.name,
            m.took.as_millis(),
            m.peer_sent,
            m.rss_growth_kb,
        );
        if m.rss_growth_kb > RSS_GROWTH_LIMIT_KB {
            failures.push(format!("{}: peak RSS grew {} KiB", m.name, m.rss_growth_kb));
        }
        if m.took > Duration::from_secs(10) {
            failures.push(format!("{}: took {:?}", m.name, m.took));
        }
        if m.peer_sent > m.peer_sent_limit {
            failures.push(format!(
                "{}: the client took {} bytes (> {})",
                m.name, m.peer_sent, m.peer_sent_limit
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
