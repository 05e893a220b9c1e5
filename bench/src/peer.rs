//! A scripted LMTP/SMTP peer on 127.0.0.1 that answers every command (and greets) after a
//! fixed delay: a remote server across a network, without the network.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// RCPT commands every peer of this process received (the fleet scenario's probe count).
pub static RCPTS: AtomicU64 = AtomicU64::new(0);

/// Starts the peer on an ephemeral port; it serves until the process exits.
pub fn start(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind peer");
    let port = listener.local_addr().expect("peer addr").port();
    std::thread::Builder::new()
        .name("peer".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = serve(conn, delay);
                    })
                    .expect("spawn peer connection");
            }
        })
        .expect("spawn peer");
    port
}

fn serve(conn: TcpStream, delay: Duration) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    pause(delay);
    out.write_all(b"220 peer ESMTP ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .split([' ', '\r', '\n', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        pause(delay);
        let reply: &[u8] = match verb.as_str() {
            "LHLO" | "EHLO" => b"250-peer\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            "MAIL" => b"250 2.1.0 Ok\r\n",
            "RCPT" => {
                RCPTS.fetch_add(1, Ordering::Relaxed);
                b"250 2.1.5 Ok\r\n"
            }
            "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => b"500 5.5.1 Unknown command\r\n",
        };
        out.write_all(reply)?;
    }
}

fn pause(delay: Duration) {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}
