//! Transport: TCP with a per-call deadline, TLS (rustls; native-tls behind a feature),
//! the STARTTLS upgrade, and one bounded line reader over all of it.

use crate::config::{ServerAddress, Settings, TlsBackend};
use crate::error::{Error, Kind, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest line accepted from a server, CRLF included. Capability lines of real servers are
/// well under 1 KiB; anything near this bound is garbage or an attack on memory.
pub const MAX_LINE: usize = 8192;

/// What every connection to one server shares: built once at open, so the root store is
/// parsed once and TLS sessions resume across reconnects (rustls keeps its ticket cache in
/// the `ClientConfig`, which the servers of one handle share: tickets are kept per name).
pub struct Transport {
    address: ServerAddress,
    trace: Option<Arc<Trace>>,
    rustls: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    #[cfg(feature = "native-tls")]
    native: Option<native_tls::TlsConnector>,
}

impl Transport {
    /// One transport per server of `settings.servers`, in the same order.
    pub fn per_server(settings: &Settings) -> Result<Vec<Self>> {
        let ca_certs = match &settings.tls.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(Kind::Internal, format!("TLS setup: {e}")))?;
        let config = if settings.tls.dangerous_allow_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(DangerousAcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for cert in &ca_certs {
                roots.add(cert.clone()).map_err(|e| {
                    Error::config(format!(
                        "tls.ca-file: {}: unusable certificate: {e}",
                        ca_name(settings)
                    ))
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let trace = Trace::from_env().map(Arc::new);
        let rustls = Arc::new(config);
        #[cfg(feature = "native-tls")]
        let native = match settings.tls.backend {
            TlsBackend::Native => Some(native_connector(settings, &ca_certs)?),
            TlsBackend::Rustls => None,
        };
        settings
            .servers
            .iter()
            .map(|address| {
                let server_name = ServerName::try_from(address.host.clone()).map_err(|_| {
                    Error::config(format!(
                        "address: '{}' is not a valid TLS server name",
                        address.host
                    ))
                })?;
                Ok(Transport {
                    address: address.clone(),
                    trace: trace.clone(),
                    rustls: rustls.clone(),
                    server_name,
                    #[cfg(feature = "native-tls")]
                    native: native.clone(),
                })
            })
            .collect()
    }

    /// The server this transport connects to.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }
}

/// The protocol trace for administrators: with `REMOTE_DIRECTORY_TRACE=/path/file` in the
/// environment when a handle is opened, every line sent and received is appended to that
/// file. Lines that carry credentials are written as their command name only.
pub struct Trace {
    file: std::sync::Mutex<std::fs::File>,
}

/// The environment variable that turns the trace on.
pub const TRACE_ENV: &str = "REMOTE_DIRECTORY_TRACE";

impl Trace {
    fn from_env() -> Option<Self> {
        let path = std::env::var_os(TRACE_ENV)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(Trace {
            file: std::sync::Mutex::new(file),
        })
    }

    fn record(&self, peer: &SocketAddr, direction: &str, data: &[u8]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut text = String::new();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            text.push_str(&format!(
                "{}.{:03} {peer} {direction} {}\n",
                now.as_secs(),
                now.subsec_millis(),
                crate::error::printable(line)
            ));
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A trace that cannot be written must not fail the call.
        let _ = file.write_all(text.as_bytes());
    }
}

fn ca_name(settings: &Settings) -> String {
    settings
        .tls
        .ca_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A CA bundle larger than this is not one (the whole Mozilla bundle is about 200 KiB).
const MAX_CA_FILE: u64 = 4 << 20;

fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |msg: String| Error::config(format!("tls.ca-file: {}: {msg}", path.display()));
    let bytes = crate::config::read_regular_file(path, MAX_CA_FILE)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    Ok(certs)
}

#[cfg(feature = "native-tls")]
fn native_connector(
    settings: &Settings,
    ca_certs: &[CertificateDer<'static>],
) -> Result<native_tls::TlsConnector> {
    let mut builder = native_tls::TlsConnector::builder();
    for cert in ca_certs {
        let cert = native_tls::Certificate::from_der(cert)
            .map_err(|e| Error::config(format!("tls.ca-file: {}: {e}", ca_name(settings))))?;
        builder.add_root_certificate(cert);
    }
    builder.danger_accept_invalid_certs(settings.tls.dangerous_allow_invalid_certs);
    builder
        .build()
        .map_err(|e| Error::config(format!("tls.backend: native TLS unavailable: {e}")))
}

/// `tls.allow-invalid-certs = true`: any certificate and host name is accepted, but the
/// handshake signatures are still checked so the session is at least consistent.
#[derive(Debug)]
struct DangerousAcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for DangerousAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

enum Stream {
    Plain(TcpStream),
    Rustls(Box<StreamOwned<ClientConnection, TcpStream>>),
    #[cfg(feature = "native-tls")]
    Native(Box<native_tls::TlsStream<TcpStream>>),
    /// Only while an upgrade is under way; a failed upgrade leaves the connection unusable.
    Gone,
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Rustls(s) => Some(&s.sock),
            #[cfg(feature = "native-tls")]
            Stream::Native(s) => Some(s.get_ref()),
            Stream::Gone => None,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Rustls(s) => s.read(buf),
            #[cfg(feature = "native-tls")]
            Stream::Native(s) => s.read(buf),
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(data),
            Stream::Rustls(s) => {
                s.write_all(data)?;
                s.flush()
            }
            #[cfg(feature = "native-tls")]
            Stream::Native(s) => {
                s.write_all(data)?;
                s.flush()
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// One TCP connection (maybe TLS) with a read buffer and the deadline of the current call.
pub struct Connection {
    stream: Stream,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    deadline: Instant,
    peer: SocketAddr,
    trace: Option<Arc<Trace>>,
    /// While credentials are being exchanged: what to cut from traced server lines.
    redactor: Option<Arc<crate::secret::Redactor>>,
    /// Reads left that first set TCP_QUICKACK (a young TLS connection, see `handshake`).
    quickack_reads: u8,
    /// SO_RCVTIMEO / SO_SNDTIMEO as last set (None: unknown), so that a call does not pay
    /// two setsockopt calls when the value would barely change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// How far a socket timeout may differ from the time left before the call's deadline.
const TIMEOUT_SLACK: Duration = Duration::from_millis(50);

/// Whether a socket timeout set earlier is too far from the time left to keep.
fn timeout_stale(set: Option<Duration>, left: Duration) -> bool {
    match set {
        None => true,
        Some(t) => t > left + TIMEOUT_SLACK || t + TIMEOUT_SLACK < left,
    }
}

impl Connection {
    /// Connects to each resolved address in turn until one answers, then does the implicit
    /// TLS handshake when configured.
    pub fn open(settings: &Settings, tls: &Transport, deadline: Instant) -> Result<Self> {
        let server = &tls.address;
        let addrs: Vec<SocketAddr> = (server.host.as_str(), server.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    Kind::Network,
                    format!("cannot resolve {}: {e}", server.host),
                )
            })?
            .collect();
        let mut last = Error::new(
            Kind::Network,
            format!("{} resolves to no address", server.host),
        );
        for addr in addrs {
            let left = remaining(deadline)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    // Commands are written whole; Nagle would only delay them.
                    tcp.set_nodelay(true)
                        .map_err(|e| Error::io("connect", &e))?;
                    let mut conn = Connection {
                        stream: Stream::Plain(tcp),
                        buf: vec![0; MAX_LINE].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        deadline,
                        peer: addr,
                        trace: tls.trace.clone(),
                        redactor: None,
                        quickack_reads: 0,
                        read_timeout: None,
                        write_timeout: None,
                    };
                    if settings.tls.implicit {
                        conn.handshake(settings, tls)?;
                    }
                    return Ok(conn);
                }
                Err(e) => last = Error::io(&format!("connect to {addr}"), &e),
            }
        }
        Err(last)
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self.stream, Stream::Plain(_) | Stream::Gone)
    }

    /// The local address, for the EHLO/LHLO argument.
    pub fn local_ip(&self) -> IpAddr {
        self.stream
            .tcp()
            .and_then(|t| t.local_addr().ok())
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip())
    }

    /// Loopback peers may receive credentials without TLS; nobody else may.
    pub fn is_loopback(&self) -> bool {
        match self.peer.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }

    /// Upgrades a plain connection after the server's positive STARTTLS reply. Bytes the
    /// server sent after that reply would be read as if they came through TLS: refuse them.
    pub fn starttls(&mut self, settings: &Settings, tls: &Transport) -> Result<()> {
        if self.start != self.end {
            return Err(Error::protocol(
                "server sent data after its STARTTLS reply, before the TLS handshake (possible injection)",
            ));
        }
        self.handshake(settings, tls)
    }

    fn handshake(&mut self, settings: &Settings, tls: &Transport) -> Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(Error::new(
                Kind::Internal,
                "TLS handshake on a connection that is not plain",
            ));
        };
        let left = remaining(self.deadline)?;
        set_timeouts(&tcp, left)?;
        self.stream = match settings.tls.backend {
            TlsBackend::Rustls => {
                Stream::Rustls(Box::new(rustls_handshake(tls, tcp, self.deadline)?))
            }
            #[cfg(feature = "native-tls")]
            TlsBackend::Native => Stream::Native(Box::new(native_handshake(tls, tcp)?)),
            #[cfg(not(feature = "native-tls"))]
            TlsBackend::Native => {
                // config rejects `tls.backend = "native"` when the feature is off.
                return Err(Error::new(
                    Kind::Internal,
                    "built without the native-tls feature",
                ));
            }
        };
        // Postfix (no TCP_NODELAY) sends its TLS 1.3 session tickets, then holds its small
        // first reply until they are acknowledged, and Linux delays that ACK by ~40 ms.
        // Acknowledge at once while the connection is young (BENCHMARKS.md: stall rows).
        self.quickack_reads = 4;
        // The handshake set both timeouts.
        self.read_timeout = None;
        self.write_timeout = None;
        Ok(())
    }

    /// Reads one line, without its CRLF (a bare LF is accepted too). The slice is valid until
    /// the next read.
    pub fn read_line(&mut self) -> Result<&[u8]> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line_start = self.start;
                let mut line_end = self.start + pos;
                self.start = line_end + 1;
                if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                if let Some(trace) = &self.trace {
                    let line = &self.buf[line_start..line_end];
                    match &self.redactor {
                        Some(r) => trace.record(
                            &self.peer,
                            "S:",
                            r.apply(&crate::error::printable(line)).as_bytes(),
                        ),
                        None => trace.record(&self.peer, "S:", line),
                    }
                }
                return Ok(&self.buf[line_start..line_end]);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                return Err(Error::protocol(format!(
                    "server sent a line longer than {MAX_LINE} bytes"
                )));
            }
            self.fill()?;
        }
    }

    /// Skips `n` bytes (an IMAP literal in an untagged line we do not need).
    pub fn skip(&mut self, mut n: usize) -> Result<()> {
        loop {
            let take = n.min(self.end - self.start);
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.start = 0;
            self.end = 0;
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<()> {
        let left = remaining(self.deadline)?;
        if let Some(tcp) = self.stream.tcp() {
            if timeout_stale(self.read_timeout, left) {
                tcp.set_read_timeout(Some(left))
                    .map_err(|e| Error::io("read", &e))?;
                self.read_timeout = Some(left);
            }
            if self.quickack_reads > 0 {
                self.quickack_reads -= 1;
                quickack(tcp);
            }
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(Error::new(Kind::Network, "connection closed by server")),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Error::io("read", &e)),
        }
    }

    /// Cut these credentials out of traced server lines until `None` is set again.
    pub(crate) fn set_redactor(&mut self, redactor: Option<Arc<crate::secret::Redactor>>) {
        self.redactor = redactor;
    }

    /// Writes one whole command (one write, then flush).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        if let Some(trace) = &self.trace {
            trace.record(&self.peer, "C:", data);
        }
        self.write(data)
    }

    /// Writes data that carries a credential; the trace shows only `shown`.
    pub fn send_secret(&mut self, data: &[u8], shown: &str) -> Result<()> {
        if let Some(trace) = &self.trace {
            trace.record(
                &self.peer,
                "C:",
                format!("{shown} <credentials elided>").as_bytes(),
            );
        }
        self.write(data)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let left = remaining(self.deadline)?;
        if let Some(tcp) = self.stream.tcp() {
            if timeout_stale(self.write_timeout, left) {
                tcp.set_write_timeout(Some(left))
                    .map_err(|e| Error::io("write", &e))?;
                self.write_timeout = Some(left);
            }
        }
        self.stream
            .write_all(data)
            .map_err(|e| Error::io("write", &e))
    }
}

fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        Err(Error::new(Kind::Timeout, "timed out"))
    } else {
        Ok(left)
    }
}

fn set_timeouts(tcp: &TcpStream, left: Duration) -> Result<()> {
    tcp.set_read_timeout(Some(left))
        .and_then(|_| tcp.set_write_timeout(Some(left)))
        .map_err(|e| Error::io("TLS handshake", &e))
}

fn rustls_handshake(
    tls: &Transport,
    mut tcp: TcpStream,
    deadline: Instant,
) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let mut conn = ClientConnection::new(tls.rustls.clone(), tls.server_name.clone())
        .map_err(|e| Error::new(Kind::Tls, format!("TLS handshake: {e}")))?;
    while conn.is_handshaking() {
        set_timeouts(&tcp, remaining(deadline)?)?;
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(tls_err) => Error::new(Kind::Tls, format!("TLS handshake: {tls_err}")),
                    None => {
                        let mut err = Error::io("TLS handshake", &e);
                        if err.kind() == Kind::Network {
                            err = Error::new(Kind::Tls, err.detail().to_string());
                        }
                        err
                    }
                },
            );
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

#[cfg(feature = "native-tls")]
fn native_handshake(tls: &Transport, tcp: TcpStream) -> Result<native_tls::TlsStream<TcpStream>> {
    let Some(connector) = &tls.native else {
        return Err(Error::new(Kind::Internal, "native TLS connector missing"));
    };
    connector
        .connect(&tls.address.host, tcp)
        .map_err(|e| match e {
            native_tls::HandshakeError::Failure(e) => {
                Error::new(Kind::Tls, format!("TLS handshake: {e}"))
            }
            native_tls::HandshakeError::WouldBlock(_) => {
                Error::new(Kind::Timeout, "TLS handshake: timed out")
            }
        })
}

/// Acknowledge the next segments at once (Linux; the kernel clears the flag by itself, so it
/// is set before each read that should benefit). Only an optimisation: failures are ignored.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quickack(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quickack(_tcp: &TcpStream) {}
