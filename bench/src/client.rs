//! Minimal SMTP/LMTP/IMAP clients on std::net + rustls: the floor (commands on a connection
//! already open) and "the usual way" (a new connection, and a new TLS configuration, for
//! every call, as a PAM module or saslauthd's rimap does).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

pub fn read_ca(path: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Clone, Copy, Default)]
pub struct TlsOpts {
    /// Offer TLS 1.2 only (Postfix then sends its ticket inside the handshake).
    pub tls12_only: bool,
    /// setsockopt(TCP_QUICKACK) before each of the first socket reads after the handshake.
    pub quickack: bool,
}

/// A client configuration trusting only the test CA (built per call by the "usual" clients:
/// no session resumption, the CA parsed every time).
pub fn client_config(ca: &[CertificateDer<'static>], opts: TlsOpts) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).expect("test CA");
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The TCP socket, with TCP_QUICKACK set before each of its next `quickack_reads` reads.
pub struct Sock {
    tcp: TcpStream,
    quickack_reads: u32,
}

pub fn set_quickack(tcp: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to an int of the right size.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.quickack_reads > 0 {
            self.quickack_reads -= 1;
            set_quickack(&self.tcp);
        }
        self.tcp.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Stream {
    Plain(Sock),
    Tls(Box<StreamOwned<ClientConnection, Sock>>),
    Gone,
}

/// One connection with a line reader.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    opts: TlsOpts,
}

pub type R<T> = Result<T, String>;

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Conn {
    pub fn connect(port: u16, opts: TlsOpts) -> R<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| err("connect", e))?;
        tcp.set_nodelay(true).map_err(|e| err("nodelay", e))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| err("timeout", e))?;
        Ok(Conn {
            stream: Stream::Plain(Sock {
                tcp,
                quickack_reads: 0,
            }),
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            opts,
        })
    }

    /// The TLS handshake (implicit TLS, or after a positive STARTTLS reply).
    pub fn handshake(&mut self, config: Arc<ClientConfig>) -> R<()> {
        let Stream::Plain(mut sock) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err("handshake on a TLS connection".into());
        };
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut tls = ClientConnection::new(config, name).map_err(|e| err("TLS", e))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).map_err(|e| err("TLS handshake", e))?;
        }
        if self.opts.quickack {
            // While young: the server's session tickets and first reply come next.
            sock.quickack_reads = 4;
        }
        self.stream = Stream::Tls(Box::new(StreamOwned::new(tls, sock)));
        Ok(())
    }

    pub fn send(&mut self, data: &[u8]) -> R<()> {
        let r = match &mut self.stream {
            Stream::Plain(s) => s.tcp.write_all(data),
            Stream::Tls(s) => s.write_all(data).and_then(|_| s.flush()),
            Stream::Gone => return Err("gone".into()),
        };
        r.map_err(|e| err("write", e))
    }

    fn fill(&mut self) -> R<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut self.buf[self.end..]),
            Stream::Tls(s) => s.read(&mut self.buf[self.end..]),
            Stream::Gone => return Err("gone".into()),
        }
        .map_err(|e| err("read", e))?;
        if n == 0 {
            return Err("connection closed by server".into());
        }
        self.end += n;
        Ok(())
    }

    /// The next line without CRLF, as a range of the buffer (valid until the next read).
    fn line(&mut self) -> R<(usize, usize)> {
        loop {
            if let Some(p) = self.buf[self.start..self.end].iter().position(|&b| b == b'\n') {
                let s = self.start;
                let mut e = s + p;
                self.start = e + 1;
                if e > s && self.buf[e - 1] == b'\r' {
                    e -= 1;
                }
                return Ok((s, e));
            }
            if self.end == self.buf.len() {
                return Err("line too long".into());
            }
            self.fill()?;
        }
    }

    /// An SMTP reply (all its lines): its code.
    pub fn reply(&mut self) -> R<u16> {
        loop {
            let (s, e) = self.line()?;
            let l = &self.buf[s..e];
            if l.len() < 3 || !l[..3].iter().all(u8::is_ascii_digit) {
                return Err(format!("bad reply {:?}", String::from_utf8_lossy(l)));
            }
            if l.len() == 3 || l[3] == b' ' {
                return Ok(u16::from(l[0] - b'0') * 100
                    + u16::from(l[1] - b'0') * 10
                    + u16::from(l[2] - b'0'));
            }
        }
    }

    /// Sends a command and wants a reply with code `want`.
    pub fn cmd(&mut self, line: &[u8], want: u16) -> R<()> {
        self.send(line)?;
        let code = self.reply()?;
        if code != want {
            return Err(format!(
                "{} -> {code}",
                String::from_utf8_lossy(line).trim_end()
            ));
        }
        Ok(())
    }

    /// IMAP: reads up to the line tagged `tag`; true when it is OK.
    pub fn tagged(&mut self, tag: &[u8]) -> R<bool> {
        loop {
            let (s, e) = self.line()?;
            let l = &self.buf[s..e];
            if l.starts_with(tag) && l.get(tag.len()) == Some(&b' ') {
                return Ok(l[tag.len() + 1..].starts_with(b"OK"));
            }
        }
    }

    /// IMAP: the greeting line, `* OK`.
    pub fn imap_greeting(&mut self) -> R<()> {
        let (s, e) = self.line()?;
        if !self.buf[s..e].starts_with(b"* OK") {
            return Err(format!("greeting {:?}", String::from_utf8_lossy(&self.buf[s..e])));
        }
        Ok(())
    }
}

/// Base64 (standard alphabet, padded), for AUTH PLAIN.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SMTP or LMTP up to an open transaction: greeting, EHLO/LHLO, [STARTTLS, EHLO/LHLO],
/// MAIL FROM:<>. `tls` = None keeps the session plain.
pub fn smtp_open(port: u16, lmtp: bool, tls: Option<Arc<ClientConfig>>, opts: TlsOpts) -> R<Conn> {
    let hello: &[u8] = if lmtp { b"LHLO [127.0.0.1]\r\n" } else { b"EHLO [127.0.0.1]\r\n" };
    let mut c = Conn::connect(port, opts)?;
    if c.reply()? != 220 {
        return Err("greeting".into());
    }
    c.cmd(hello, 250)?;
    if let Some(config) = tls {
        c.cmd(b"STARTTLS\r\n", 220)?;
        c.handshake(config)?;
        c.cmd(hello, 250)?;
    }
    c.cmd(b"MAIL FROM:<>\r\n", 250)?;
    Ok(c)
}

/// The usual recipient check: a new connection (and TLS configuration) per address.
pub fn usual_rcpt(
    port: u16,
    lmtp: bool,
    ca: &[CertificateDer<'static>],
    opts: TlsOpts,
    rcpt: &[u8],
) -> R<()> {
    let config = client_config(ca, opts);
    let mut c = smtp_open(port, lmtp, Some(config), opts)?;
    c.cmd(rcpt, 250)?;
    c.cmd(b"QUIT\r\n", 221)
}

/// The usual IMAP login: new connection, [STARTTLS], LOGIN, LOGOUT.
pub fn usual_imap_login(
    port: u16,
    implicit: bool,
    ca: &[CertificateDer<'static>],
    login: &[u8],
    expect_ok: bool,
    wait_logout: bool,
) -> R<()> {
    let opts = TlsOpts::default();
    let config = client_config(ca, opts);
    let mut c = Conn::connect(port, opts)?;
    if implicit {
        c.handshake(config)?;
        c.imap_greeting()?;
    } else {
        c.imap_greeting()?;
        c.send(b"a STARTTLS\r\n")?;
        if !c.tagged(b"a")? {
            return Err("STARTTLS refused".into());
        }
        c.handshake(config)?;
    }
    c.send(login)?;
    let ok = c.tagged(b"b")?;
    c.send(b"c LOGOUT\r\n")?;
    if wait_logout {
        let _ = c.tagged(b"c");
    }
    if ok != expect_ok {
        return Err(format!("LOGIN: {}", if ok { "OK" } else { "NO" }));
    }
    Ok(())
}

/// The usual SMTP AUTH: new connection, EHLO, STARTTLS, EHLO, AUTH PLAIN, QUIT.
pub fn usual_smtp_auth(
    port: u16,
    ca: &[CertificateDer<'static>],
    auth_line: &[u8],
    expect_ok: bool,
) -> R<()> {
    let opts = TlsOpts::default();
    let config = client_config(ca, opts);
    let mut c = Conn::connect(port, opts)?;
    if c.reply()? != 220 {
        return Err("greeting".into());
    }
    c.cmd(b"EHLO [127.0.0.1]\r\n", 250)?;
    c.cmd(b"STARTTLS\r\n", 220)?;
    c.handshake(config)?;
    c.cmd(b"EHLO [127.0.0.1]\r\n", 250)?;
    c.send(auth_line)?;
    let code = c.reply()?;
    let _ = c.cmd(b"QUIT\r\n", 221);
    match (code, expect_ok) {
        (235, true) | (535, false) => Ok(()),
        _ => Err(format!("AUTH PLAIN -> {code}")),
    }
}

/// The floor: RCPT after RCPT on one open transaction. Every `PER_TRANSACTION` RCPTs the
/// transaction is renewed (RSET, MAIL FROM:<>) inside the timed call, as Postfix accepts
/// at most 1000 recipients per transaction.
pub struct Floor {
    conn: Conn,
    n: u32,
}

pub const PER_TRANSACTION: u32 = 900;

impl Floor {
    pub fn open(port: u16, lmtp: bool, tls: Option<Arc<ClientConfig>>) -> R<Self> {
        Ok(Floor {
            conn: smtp_open(port, lmtp, tls, TlsOpts::default())?,
            n: 0,
        })
    }

    pub fn rcpt(&mut self, line: &[u8]) -> R<()> {
        if self.n == PER_TRANSACTION {
            self.conn.cmd(b"RSET\r\n", 250)?;
            self.conn.cmd(b"MAIL FROM:<>\r\n", 250)?;
            self.n = 0;
        }
        self.n += 1;
        self.conn.cmd(line, 250)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
