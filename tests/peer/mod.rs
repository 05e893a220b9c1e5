//! Scripted in-process peers for the protocol tests (`tests/peers_*.rs`).
//!
//! A [`Peer`] listens on 127.0.0.1 port 0; every accepted connection runs a script in its
//! own thread. A script talks through a [`Conn`]: send lines or raw bytes, expect a command,
//! stall, close, upgrade to TLS server-side. Every line the peer receives is recorded per
//! connection (secrets included: only the test sees them), so tests assert what the client
//! SENT: the number of connections, the commands of each one, the most connections open at
//! once.
//!
//! [`ImapServer`] and [`SmtpServer`] are ready-made configurable servers; fault tests write
//! their own scripts with [`Peer::start`].
//!
//! Every peer thread ends when its [`Peer`] is dropped: reads and writes have timeouts,
//! stalls poll a stop flag, and drop shuts every socket down before joining the threads.

// Each test crate (`peers_imap`, `peers_smtp`, `peers_pool`) uses a different part of this
// shared module; the rest would be reported as dead code in that crate.
#![allow(dead_code)]

pub mod dialogue;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use remote_directory::ffi::{self, directory_result};
use remote_directory::Directory;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::ffi::{CStr, CString};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a peer waits for the client by default before giving up on a read.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line a peer buffers; beyond it the client is misbehaving.
const PEER_MAX_LINE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Errors of scripts

#[derive(Debug)]
pub enum PeerError {
    /// The client closed the connection.
    Closed,
    /// The test ended (the peer was dropped).
    Stopped,
    /// Nothing came within the time given.
    Timeout(String),
    /// The client sent something other than what the script expected.
    Unexpected {
        expected: String,
        got: String,
    },
    Io(std::io::Error),
    Tls(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Closed => f.write_str("client closed the connection"),
            PeerError::Stopped => f.write_str("peer stopped"),
            PeerError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            PeerError::Unexpected { expected, got } => {
                write!(f, "expected {expected:?}, got {got:?}")
            }
            PeerError::Io(e) => write!(f, "I/O: {e}"),
            PeerError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

pub type PeerResult<T = ()> = Result<T, PeerError>;

// ---------------------------------------------------------------------------------------
// What a peer records

/// One line received from the client.
#[derive(Debug, Clone)]
pub struct Command {
    /// The line without CRLF (lossy UTF-8). IMAP literals are joined in: see [`ImapServer`].
    pub line: String,
    /// Ordinal of the socket read that completed this line: two lines with the same number
    /// arrived together (one segment / one TLS record).
    pub read_no: u64,
    /// Received over TLS.
    pub tls: bool,
    pub at: Instant,
}

/// Everything one connection saw.
#[derive(Default)]
pub struct ConnLog {
    commands: Mutex<Vec<Command>>,
    /// Protocol violations the peer noticed (e.g. a literal sent before `+`).
    notes: Mutex<Vec<String>>,
    /// The script's error, if it ended with one (other than the client closing).
    error: Mutex<Option<String>>,
    ended: AtomicBool,
    bytes_sent: AtomicUsize,
    bytes_received: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Script = dyn Fn(&mut Conn) -> PeerResult + Send + Sync + 'static;

struct Shared {
    stop: AtomicBool,
    logs: Mutex<Vec<Arc<ConnLog>>>,
    /// Clones of the accepted sockets, shut down at drop to wake blocked reads.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A listening scripted peer. Dropping it stops every connection and joins every thread.
pub struct Peer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Peer {
    /// Listens on 127.0.0.1 port 0; each connection runs `script`.
    pub fn start(script: impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Peer::start_on(listener, script)
    }

    /// As [`Peer::start`], on a listener the test made (e.g. bound inside a network
    /// namespace of its own, see `tests/reliability_netns.rs`).
    pub fn start_on(
        listener: TcpListener,
        script: impl Fn(&mut Conn) -> PeerResult + Send + Sync + 'static,
    ) -> Peer {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            logs: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
        });
        let script: Arc<Script> = Arc::new(script);
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared, script))
        };
        Peer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address the peer listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections whose script is still running now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.logs).len()
    }

    /// The most connections open at the same time as the client saw them, taken at each
    /// accept: a connection counts from its accept until its client closed it (the kernel
    /// has the FIN) or its script ended. A client that closes one connection and at once
    /// opens another is not counted twice because the script has not read the close yet.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    fn log(&self, conn: usize) -> Arc<ConnLog> {
        let logs = lock(&self.shared.logs);
        logs.get(conn)
            .unwrap_or_else(|| panic!("no connection #{conn}: only {} accepted", logs.len()))
            .clone()
    }

    /// The lines connection `conn` (0-based, in accept order) received.
    pub fn commands(&self, conn: usize) -> Vec<String> {
        self.records(conn).into_iter().map(|c| c.line).collect()
    }

    pub fn records(&self, conn: usize) -> Vec<Command> {
        lock(&self.log(conn).commands).clone()
    }

    /// The lines of every connection, in accept order.
    pub fn all_commands(&self) -> Vec<Vec<String>> {
        (0..self.connections()).map(|i| self.commands(i)).collect()
    }

    /// Bytes the peer wrote on connection `conn`.
    pub fn bytes_sent(&self, conn: usize) -> usize {
        self.log(conn).bytes_sent.load(Ordering::SeqCst)
    }

    pub fn bytes_received(&self, conn: usize) -> usize {
        self.log(conn).bytes_received.load(Ordering::SeqCst)
    }

    /// Whether the script of connection `conn` has ended (client gone, or script done).
    pub fn ended(&self, conn: usize) -> bool {
        self.log(conn).ended.load(Ordering::SeqCst)
    }

    /// Protocol violations noticed, as `#conn: note`.
    pub fn notes(&self) -> Vec<String> {
        let logs = lock(&self.shared.logs).clone();
        let mut out = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            out.extend(lock(&log.notes).iter().map(|n| format!("#{i}: {n}")));
        }
        out
    }

    /// Scripts that ended with an error other than the client closing, as `#conn: error`.
    pub fn errors(&self) -> Vec<String> {
        let logs = lock(&self.shared.logs).clone();
        logs.iter()
            .enumerate()
            .filter_map(|(i, log)| lock(&log.error).as_ref().map(|e| format!("#{i}: {e}")))
            .collect()
    }

    /// No violation noticed and no script error.
    pub fn assert_clean(&self) {
        let notes = self.notes();
        let errors = self.errors();
        assert!(
            notes.is_empty() && errors.is_empty(),
            "peer saw violations {notes:?} and script errors {errors:?}; commands: {:?}",
            self.all_commands()
        );
    }

    /// Polls `cond` until it holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&Peer) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (up to 5 s) until every connection accepted so far has ended, so its log is
    /// complete. Call it after dropping the `Directory` (which closes idle connections).
    pub fn wait_all_ended(&self) {
        let done = self.wait_until(Duration::from_secs(5), |p| {
            (0..p.connections()).all(|i| p.ended(i))
        });
        assert!(
            done,
            "connections still open after 5 s: {:?}; commands: {:?}",
            (0..self.connections())
                .filter(|&i| !self.ended(i))
                .collect::<Vec<_>>(),
            self.all_commands()
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for socket in lock(&self.shared.sockets).iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Whether the client has closed its side: the kernel flags the FIN (POLLRDHUP) when it
/// arrives, before the script has read what came ahead of it.
fn client_closed(socket: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a socket this peer owns, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, script: Arc<Script>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let tcp = match listener.accept() {
            Ok((tcp, _)) => tcp,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        shared.active.fetch_add(1, Ordering::SeqCst);
        let log = Arc::new(ConnLog::default());
        let _ = tcp.set_nonblocking(false);
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_write_timeout(Some(PEER_TIMEOUT));
        {
            let (mut logs, mut sockets) = (lock(&shared.logs), lock(&shared.sockets));
            // Open at the client now: scripts still running whose client has not closed.
            let open = logs
                .iter()
                .zip(sockets.iter())
                .filter(|(log, socket)| !log.ended.load(Ordering::SeqCst) && !client_closed(socket))
                .count();
            shared.max_active.fetch_max(open + 1, Ordering::SeqCst);
            logs.push(log.clone());
            sockets.push(tcp.try_clone().expect("clone of an accepted socket"));
        }
        let thread = {
            let shared = shared.clone();
            let script = script.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::new(tcp, log.clone(), shared.clone());
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| script(&mut conn)));
                let error = match outcome {
                    Ok(Ok(())) | Ok(Err(PeerError::Closed)) | Ok(Err(PeerError::Stopped)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(format!(
                        "script panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("?")
                    )),
                };
                *lock(&log.error) = error;
                conn.close();
                shared.active.fetch_sub(1, Ordering::SeqCst);
                log.ended.store(true, Ordering::SeqCst);
            })
        };
        lock(&shared.threads).push(thread);
    }
}

// ---------------------------------------------------------------------------------------
// One connection, as a script sees it

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Closed,
}

/// The server side of one accepted connection.
pub struct Conn {
    stream: Stream,
    /// For timeouts and shutdown, whatever the stream is wrapped in.
    tcp: TcpStream,
    buf: Vec<u8>,
    reads: u64,
    log: Arc<ConnLog>,
    shared: Arc<Shared>,
    /// How long `expect` and friends wait.
    pub timeout: Duration,
}

impl Conn {
    fn new(tcp: TcpStream, log: Arc<ConnLog>, shared: Arc<Shared>) -> Conn {
        let clone = tcp.try_clone().expect("clone accepted socket");
        Conn {
            stream: Stream::Plain(tcp),
            tcp: clone,
            buf: Vec::new(),
            reads: 0,
            log,
            shared,
            timeout: PEER_TIMEOUT,
        }
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Records a violation of the protocol by the client; tests see it in [`Peer::notes`].
    pub fn note(&self, what: impl Into<String>) {
        lock(&self.log.notes).push(what.into());
    }

    /// Records a received line as a command.
    pub fn record(&self, line: &[u8]) {
        lock(&self.log.commands).push(Command {
            line: String::from_utf8_lossy(line).into_owned(),
            read_no: self.reads,
            tls: self.is_tls(),
            at: Instant::now(),
        });
    }

    // -- writing

    /// Sends raw bytes (one write).
    pub fn send_raw(&mut self, data: &[u8]) -> PeerResult {
        if self.stopped() {
            return Err(PeerError::Stopped);
        }
        let result = match &mut self.stream {
            Stream::Plain(s) => s.write_all(data).and_then(|_| s.flush()),
            Stream::Tls(s) => s.write_all(data).and_then(|_| s.flush()),
            Stream::Closed => return Err(PeerError::Closed),
        };
        match result {
            Ok(()) => {
                self.log.bytes_sent.fetch_add(data.len(), Ordering::SeqCst);
                Ok(())
            }
            Err(_) if self.stopped() => Err(PeerError::Stopped),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::BrokenPipe
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                ) =>
            {
                Err(PeerError::Closed)
            }
            Err(e) => Err(PeerError::Io(e)),
        }
    }

    /// Sends one line; CRLF is appended.
    pub fn send(&mut self, line: &str) -> PeerResult {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.send_raw(&data)
    }

    /// Sends several lines in one write (one segment).
    pub fn send_lines(&mut self, lines: &[&str]) -> PeerResult {
        let mut data = Vec::new();
        for line in lines {
            data.extend_from_slice(line.as_bytes());
            data.extend_from_slice(b"\r\n");
        }
        self.send_raw(&data)
    }

    // -- reading

    /// One read into the buffer. `Ok(false)` when nothing came before `deadline`.
    fn fill(&mut self, deadline: Instant) -> PeerResult<bool> {
        if self.stopped() {
            return Err(PeerError::Stopped);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let _ = self
            .tcp
            .set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let mut chunk = [0u8; 16 * 1024];
        let result = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk),
            Stream::Tls(s) => s.read(&mut chunk),
            Stream::Closed => return Err(PeerError::Closed),
        };
        match result {
            Ok(0) => Err(PeerError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.reads += 1;
                self.log.bytes_received.fetch_add(n, Ordering::SeqCst);
                Ok(true)
            }
            Err(_) if self.stopped() => Err(PeerError::Stopped),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                Err(PeerError::Closed)
            }
            Err(e) => Err(PeerError::Io(e)),
        }
    }

    /// The next line (without CRLF; not recorded), or `None` if none came within `wait`.
    pub fn read_line_within(&mut self, wait: Duration) -> PeerResult<Option<Vec<u8>>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.buf.len() > PEER_MAX_LINE {
                return Err(PeerError::Unexpected {
                    expected: "a line".into(),
                    got: format!("{} bytes without a newline", self.buf.len()),
                });
            }
            if !self.fill(deadline)? && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The next line, recorded as a command; waits up to `self.timeout`.
    pub fn next_line(&mut self) -> PeerResult<String> {
        match self.read_line_within(self.timeout)? {
            Some(line) => {
                self.record(&line);
                Ok(String::from_utf8_lossy(&line).into_owned())
            }
            None => Err(PeerError::Timeout("a line from the client".into())),
        }
    }

    /// The next line, recorded; it must start with `prefix` (ASCII case-insensitive).
    pub fn expect(&mut self, prefix: &str) -> PeerResult<String> {
        self.expect_within(prefix, self.timeout)
    }

    /// As [`Conn::expect`], but only `wait` long.
    pub fn expect_within(&mut self, prefix: &str, wait: Duration) -> PeerResult<String> {
        let line = match self.read_line_within(wait)? {
            Some(line) => line,
            None => return Err(PeerError::Timeout(format!("{prefix:?}"))),
        };
        self.record(&line);
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.len() >= prefix.len()
            && line.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        {
            Ok(line)
        } else {
            Err(PeerError::Unexpected {
                expected: prefix.into(),
                got: line,
            })
        }
    }

    /// An IMAP command: the line must be `<tag> <command>...`; returns (tag, line).
    pub fn expect_imap(&mut self, command: &str) -> PeerResult<(String, String)> {
        let line = self.next_line()?;
        let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
        if rest.len() >= command.len()
            && rest.as_bytes()[..command.len()].eq_ignore_ascii_case(command.as_bytes())
        {
            Ok((tag.to_owned(), line.clone()))
        } else {
            Err(PeerError::Unexpected {
                expected: format!("<tag> {command}"),
                got: line,
            })
        }
    }

    /// Exactly `n` bytes (e.g. an IMAP literal), not recorded.
    pub fn read_bytes(&mut self, n: usize) -> PeerResult<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            if !self.fill(deadline)? && Instant::now() >= deadline {
                return Err(PeerError::Timeout(format!("{n} bytes")));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Whether the client sends anything within `wait` (what came stays buffered).
    pub fn data_within(&mut self, wait: Duration) -> PeerResult<bool> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        let deadline = Instant::now() + wait;
        loop {
            if self.fill(deadline)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Everything the client sends until it closes (or `wait` passes), not recorded.
    pub fn read_until_closed(&mut self, wait: Duration) -> PeerResult<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) if Instant::now() >= deadline => {
                    return Err(PeerError::Timeout("the client to close".into()))
                }
                Ok(false) => {}
                Err(PeerError::Closed) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits `d` without answering. What the client sends meanwhile stays buffered for the
    /// next read; the client closing ends the wait with `Closed`, the test ending with
    /// `Stopped`, so a pausing script never outlives its client.
    pub fn pause(&mut self, d: Duration) -> PeerResult {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.fill(end)?;
        }
        Ok(())
    }

    /// Reads and discards what the client sends, answering nothing, until it closes or
    /// `d` passes. Ok either way.
    pub fn stall(&mut self, d: Duration) -> PeerResult {
        match self.read_until_closed(d) {
            Ok(_) | Err(PeerError::Timeout(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes the connection (both directions).
    pub fn close(&mut self) {
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
        self.stream = Stream::Closed;
    }

    /// Server-side TLS handshake with the test certificate (see [`ca_file`]). Bytes the
    /// client sent before its handshake are a violation: noted, then dropped.
    pub fn start_tls(&mut self) -> PeerResult {
        self.start_tls_with(tls_material().server.clone())
    }

    /// As [`Conn::start_tls`], with another server configuration (e.g. from
    /// [`server_config`]: a certificate for another name, or an expired one).
    pub fn start_tls_with(&mut self, config: Arc<ServerConfig>) -> PeerResult {
        if !self.buf.is_empty() {
            self.note(format!(
                "client sent {} bytes after STARTTLS before the TLS handshake",
                self.buf.len()
            ));
            self.buf.clear();
        }
        let Stream::Plain(mut tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(PeerError::Tls("not a plain connection".into()));
        };
        let mut tls = ServerConnection::new(config).map_err(|e| PeerError::Tls(e.to_string()))?;
        let _ = tcp.set_read_timeout(Some(self.timeout));
        while tls.is_handshaking() {
            if self.stopped() {
                return Err(PeerError::Stopped);
            }
            if let Err(e) = tls.complete_io(&mut tcp) {
                return Err(match e.kind() {
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => PeerError::Closed,
                    _ => PeerError::Tls(e.to_string()),
                });
            }
        }
        self.stream = Stream::Tls(Box::new(StreamOwned::new(tls, tcp)));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// TLS material: a test CA and a leaf for 127.0.0.1 / localhost, made once per test process

struct TlsMaterial {
    server: Arc<ServerConfig>,
    ca_path: PathBuf,
    /// The test CA, for further certificates ([`server_config`]).
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// Validity period of a certificate made by [`server_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year or so (what rcgen makes by default: 1975 to 4096).
    Current,
    /// Expired: 2000-01-01 to 2001-01-01.
    Expired,
    /// Not valid before 2090-01-01.
    NotYetValid,
}

/// A TLS server configuration whose leaf certificate, signed by the test CA (so trusted
/// through [`ca_file`]), names `names` and has `validity`.
pub fn server_config(names: &[&str], validity: Validity) -> Arc<ServerConfig> {
    use rcgen::{date_time_ymd, CertificateParams, DnType, KeyPair};
    let material = tls_material();
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("peer"));
    match validity {
        Validity::Current => {}
        Validity::Expired => {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        Validity::NotYetValid => {
            params.not_before = date_time_ymd(2090, 1, 1);
            params.not_after = date_time_ymd(2091, 1, 1);
        }
    }
    let leaf = params
        .signed_by(&key, &material.issuer)
        .expect("leaf certificate");
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate"),
    )
}

fn tls_material() -> &'static TlsMaterial {
    static MATERIAL: OnceLock<TlsMaterial> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "remote-directory test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server certificate");
        // One file per test process: the test binaries may run at the same time.
        let ca_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("peer-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_path, ca_cert.pem()).expect("write the test CA");
        TlsMaterial {
            server: Arc::new(server),
            ca_path,
            issuer,
        }
    })
}

/// PEM file of the CA that signed the peers' certificate (for `tls.ca-file`).
pub fn ca_file() -> PathBuf {
    tls_material().ca_path.clone()
}

/// The config line trusting the peers' CA.
pub fn ca_file_line() -> String {
    format!("tls.ca-file = {:?}", ca_file().display().to_string())
}

// ---------------------------------------------------------------------------------------
// Client side helpers

/// The EHLO/LHLO name every directory of [`config`] gives (`server.hostname`): without it
/// the name would be this machine's, which differs from one test machine to the next.
pub const HELLO_NAME: &str = "client.test";

/// Configuration text of directory `test` of `kind` pointing at `peer`, with `extra` lines
/// (dotted keys). `timeout = "5s"` unless `extra` sets one.
pub fn config(kind: &str, peer: &Peer, extra: &[&str]) -> String {
    let mut text = format!(
        "[server]\nhostname = \"{HELLO_NAME}\"\n[directory.test]\ntype = \"{kind}\"\naddress = \"127.0.0.1\"\nport = {}\n",
        peer.port()
    );
    if !extra.iter().any(|l| l.trim_start().starts_with("timeout")) {
        text.push_str("timeout = \"5s\"\n");
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Opens directory `test` of `kind` against `peer` through the Rust API.
pub fn open(kind: &str, peer: &Peer, extra: &[&str]) -> Directory {
    let text = config(kind, peer, extra);
    Directory::open_str(&text, None).unwrap_or_else(|e| panic!("open {text:?}: {e}"))
}

/// Logs `user` in once with its right `secret` through a fresh handle of `kind` against
/// `peer`, closes the handle and returns what the client sent on each connection. The call
/// must succeed and the peer must have noticed no violation; `case` names the call in a
/// failure.
pub fn sent_for_one_login(
    case: &str,
    kind: &str,
    peer: &Peer,
    user: &str,
    secret: &str,
) -> Vec<Vec<String>> {
    let dir = open(kind, peer, &[]);
    dir.auth(user, secret)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    drop(dir);
    peer.wait_all_ended();
    peer.assert_clean();
    peer.all_commands()
}

/// The same directory through the C API, for the result codes C callers get.
pub struct CDirectory(*mut ffi::directory);

impl CDirectory {
    pub fn open(kind: &str, peer: &Peer, extra: &[&str]) -> CDirectory {
        CDirectory::open_text(&config(kind, peer, extra))
    }

    /// From whole configuration text (one directory).
    pub fn open_text(text: &str) -> CDirectory {
        let text = CString::new(text).unwrap();
        let mut out = std::ptr::null_mut();
        let r = ffi::directory_open_str(text.as_ptr(), std::ptr::null(), &mut out);
        assert_eq!(
            r,
            directory_result::DIRECTORY_RESULT_OK,
            "{}",
            c_last_error()
        );
        CDirectory(out)
    }

    /// The result and `directory_last_error()`.
    pub fn auth(&self, user: &str, secret: &str) -> (directory_result, String) {
        let user = CString::new(user).unwrap();
        let secret = CString::new(secret).unwrap();
        let r = ffi::directory_auth(self.0, user.as_ptr(), secret.as_ptr());
        (r, c_last_error())
    }

    /// The raw handle, for calls with arguments `auth` and `rcpt` cannot make (NULL,
    /// bytes that are not UTF-8).
    pub fn as_ptr(&self) -> *mut ffi::directory {
        self.0
    }

    pub fn rcpt(&self, address: &str) -> (directory_result, String) {
        let address = CString::new(address).unwrap();
        let r = ffi::directory_rcpt(self.0, address.as_ptr());
        (r, c_last_error())
    }
}

// SAFETY: the C API documents a handle as shared by any number of threads for every call
// but `directory_close`, which only `Drop` makes (once, with exclusive ownership).
unsafe impl Send for CDirectory {}
unsafe impl Sync for CDirectory {}

impl Drop for CDirectory {
    fn drop(&mut self) {
        ffi::directory_close(self.0);
    }
}

pub fn c_last_error() -> String {
    // SAFETY: directory_last_error never returns NULL; the string is valid until the next
    // call on this thread, and it is copied at once.
    unsafe { CStr::from_ptr(ffi::directory_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Base64 of SASL PLAIN `\0user\0secret`.
pub fn plain_b64(user: &str, secret: &str) -> String {
    BASE64.encode(format!("\0{user}\0{secret}"))
}

/// IMAP capability sets, one for each way the client logs in: AUTHENTICATE PLAIN with and
/// without an initial response, AUTHENTICATE LOGIN, LOGIN with quoted strings or literals,
/// LOGIN with non-synchronizing literals.
pub const IMAP_CAPS_OF_EVERY_MECHANISM: [&str; 5] = [
    "IMAP4rev1 AUTH=PLAIN SASL-IR",
    "IMAP4rev1 AUTH=PLAIN",
    "IMAP4rev1 AUTH=LOGIN",
    "IMAP4rev1",
    "IMAP4rev1 LITERAL+",
];

pub fn b64(s: &str) -> String {
    BASE64.encode(s)
}

fn b64_decode(s: &str) -> Option<String> {
    BASE64
        .decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

fn decode_plain(s: &str) -> Option<(String, String)> {
    let text = b64_decode(s)?;
    let mut parts = text.split('\0');
    let (_authz, user, secret) = (parts.next()?, parts.next()?, parts.next()?);
    parts
        .next()
        .is_none()
        .then(|| (user.to_owned(), secret.to_owned()))
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_ascii_whitespace()
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn check_user(users: &[(String, String)], user: &str, secret: &str) -> bool {
    users.iter().any(|(u, s)| u == user && s == secret)
}

/// Client-gone ends a ready-made server normally.
fn client_gone_is_fine(result: PeerResult) -> PeerResult {
    match result {
        Err(PeerError::Closed) => Ok(()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// A configurable fake IMAP server

/// A fake IMAP server. Commands are recorded one per line, except that a line ending in a
/// literal `{n}`/`{n+}` is joined with CRLF, the literal and the rest of the line:
/// `a2 LOGIN "bob" {4+}\r\npass`.
#[derive(Clone)]
pub struct ImapServer {
    /// Whole greeting line; default `* OK [CAPABILITY caps] ...` or `* OK ...`.
    pub greeting: Option<String>,
    pub caps_in_greeting: bool,
    /// Capabilities before TLS (and without TLS).
    pub caps: String,
    /// Capabilities after STARTTLS; default: `caps` without STARTTLS.
    pub caps_tls: Option<String>,
    /// Capabilities in force once logged in, sent in the login's `OK [CAPABILITY ...]`.
    pub caps_after_login: Option<String>,
    pub users: Vec<(String, String)>,
    /// Tagged reply (after the tag) to wrong credentials.
    pub failure: String,
    /// Raw bytes sent before every tagged reply to a login (untagged lines).
    pub untagged_before_reply: String,
    /// Delay before answering each command.
    pub delay: Duration,
    /// `* BYE` and close after this long without a command.
    pub bye_after_idle: Option<Duration>,
    /// TLS from the first byte (`tls.implicit = true`); `caps_tls` then applies throughout.
    pub implicit_tls: bool,
    /// Tagged reply (after the tag) to `ID`, when `ID` is a capability.
    pub id_reply: String,
}

impl ImapServer {
    pub fn new(caps: &str) -> ImapServer {
        ImapServer {
            greeting: None,
            caps_in_greeting: false,
            caps: caps.to_owned(),
            caps_tls: None,
            caps_after_login: None,
            users: vec![("alice@example.org".into(), "alice-pass-1".into())],
            failure: "NO [AUTHENTICATIONFAILED] Authentication failed.".into(),
            untagged_before_reply: String::new(),
            delay: Duration::ZERO,
            bye_after_idle: None,
            implicit_tls: false,
            id_reply: "OK ID completed.".into(),
        }
    }

    pub fn user(mut self, user: &str, secret: &str) -> ImapServer {
        self.users.push((user.into(), secret.into()));
        self
    }

    pub fn start(self) -> Peer {
        Peer::start(move |c| client_gone_is_fine(run_imap(&self, c)))
    }

    /// As [`ImapServer::start`], on a listener the test made.
    pub fn start_on(self, listener: TcpListener) -> Peer {
        Peer::start_on(listener, move |c| client_gone_is_fine(run_imap(&self, c)))
    }
}

/// `{n}` or `{n+}` at the end of a line: (n, non-synchronizing).
fn imap_literal(line: &[u8]) -> Option<(usize, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let (digits, plus) = match digits.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (digits, false),
    };
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, plus))
}

/// IMAP astrings (atom, quoted string, literal joined as `{n}\r\n<bytes>`) from `s`.
fn imap_args(mut s: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        while s.first() == Some(&b' ') {
            s = &s[1..];
        }
        if s.is_empty() {
            return Some(out);
        }
        if s[0] == b'"' {
            let mut value = Vec::new();
            let mut i = 1;
            loop {
                match *s.get(i)? {
                    b'\\' => {
                        value.push(*s.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => break,
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            out.push(value);
            s = &s[i + 1..];
        } else if s[0] == b'{' {
            let close = s.iter().position(|&b| b == b'}')?;
            let digits = s[1..close].strip_suffix(b"+").unwrap_or(&s[1..close]);
            let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
            let data = s.get(close + 1..)?.strip_prefix(b"\r\n")?;
            out.push(data.get(..n)?.to_vec());
            s = &data[n..];
        } else {
            let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
            out.push(s[..end].to_vec());
            s = &s[end..];
        }
    }
}

/// Reads one IMAP command, joining literals (sending `+` for synchronizing ones after
/// checking that the client waited for it). `None` when idle for `idle`.
fn read_imap_command(c: &mut Conn, caps: &str, idle: Duration) -> PeerResult<Option<Vec<u8>>> {
    let Some(mut line) = c.read_line_within(idle)? else {
        return Ok(None);
    };
    while let Some((n, nonsync)) = imap_literal(&line) {
        if nonsync {
            if !has_word(caps, "LITERAL+") {
                c.note("non-synchronizing literal without LITERAL+");
            }
        } else {
            if c.data_within(Duration::from_millis(100))? {
                c.note("literal sent before the server's continuation request");
            }
            c.send("+ Ready for literal data")?;
        }
        let data = c.read_bytes(n)?;
        let rest = c.read_line_within(c.timeout)?.ok_or(PeerError::Timeout(
            "the rest of a line after a literal".into(),
        ))?;
        line.extend_from_slice(b"\r\n");
        line.extend_from_slice(&data);
        line.extend_from_slice(&rest);
    }
    c.record(&line);
    Ok(Some(line))
}

/// A continuation response line from the client (recorded), after `+ <challenge>`. Notes
/// a client that answered before the challenge.
fn imap_continuation(c: &mut Conn, challenge: &str) -> PeerResult<String> {
    if c.data_within(Duration::from_millis(100))? {
        c.note(format!(
            "answer sent before the continuation request '+ {challenge}'"
        ));
    }
    c.send(&format!("+ {challenge}"))?;
    c.next_line()
}

fn run_imap(cfg: &ImapServer, c: &mut Conn) -> PeerResult {
    let mut caps = cfg.caps.clone();
    if cfg.implicit_tls {
        c.start_tls()?;
        caps = cfg.caps_tls.clone().unwrap_or(caps);
    }
    let greeting = cfg.greeting.clone().unwrap_or_else(|| {
        if cfg.caps_in_greeting {
            format!("* OK [CAPABILITY {caps}] Fake IMAP ready.")
        } else {
            "* OK Fake IMAP ready.".into()
        }
    });
    c.send(&greeting)?;
    let mut logged_in = false;
    loop {
        let in_force = match (&cfg.caps_after_login, logged_in) {
            (Some(after), true) => after.clone(),
            _ => caps.clone(),
        };
        let idle = cfg.bye_after_idle.unwrap_or(c.timeout);
        let Some(line) = read_imap_command(c, &in_force, idle)? else {
            if cfg.bye_after_idle.is_some() {
                c.send("* BYE Disconnected for inactivity.")?;
                return Ok(());
            }
            return Err(PeerError::Timeout("an IMAP command".into()));
        };
        c.pause(cfg.delay)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let (tag, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let tag = tag.to_owned();
        let (command, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let command = command.to_ascii_uppercase();
        let login = |c: &mut Conn, user: &str, secret: &str, logged_in: &mut bool| {
            if !cfg.untagged_before_reply.is_empty() {
                c.send_raw(cfg.untagged_before_reply.as_bytes())?;
            }
            if check_user(&cfg.users, user, secret) {
                *logged_in = true;
                match &cfg.caps_after_login {
                    Some(after) => c.send(&format!("{tag} OK [CAPABILITY {after}] Logged in")),
                    None => c.send(&format!("{tag} OK Logged in")),
                }
            } else {
                c.send(&format!("{tag} {}", cfg.failure))
            }
        };
        let auth_command = matches!(command.as_str(), "AUTHENTICATE" | "LOGIN");
        if auth_command && logged_in {
            c.note(format!("{command} while logged in"));
            c.send(&format!("{tag} BAD Already logged in"))?;
            continue;
        }
        match command.as_str() {
            "CAPABILITY" => {
                c.send(&format!("* CAPABILITY {in_force}"))?;
                c.send(&format!("{tag} OK Capability completed."))?;
            }
            "NOOP" => c.send(&format!("{tag} OK NOOP completed."))?,
            "ID" if has_word(&in_force, "ID") => {
                if logged_in {
                    c.note("ID after login: too late to name the client");
                }
                c.send("* ID (\"name\" \"Fake\")")?;
                c.send(&format!("{tag} {}", cfg.id_reply))?;
            }
            "LOGOUT" => {
                c.send("* BYE Logging out")?;
                c.send(&format!("{tag} OK Logout completed."))?;
                return Ok(());
            }
            "STARTTLS" if has_word(&caps, "STARTTLS") && !c.is_tls() => {
                c.send(&format!("{tag} OK Begin TLS negotiation now."))?;
                c.start_tls()?;
                caps = cfg.caps_tls.clone().unwrap_or_else(|| {
                    caps.split_ascii_whitespace()
                        .filter(|w| !w.eq_ignore_ascii_case("STARTTLS"))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            }
            "UNAUTHENTICATE" if logged_in && has_word(&in_force, "UNAUTHENTICATE") => {
                logged_in = false;
                c.send(&format!("{tag} OK Returned to unauthenticated state."))?;
            }
            "AUTHENTICATE" => {
                let mut words = args.split_ascii_whitespace();
                let mech = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                if !has_word(&in_force, &format!("AUTH={mech}")) {
                    c.note(format!("AUTHENTICATE {mech} not advertised"));
                }
                if initial.is_some() && !has_word(&in_force, "SASL-IR") {
                    c.note("initial response without SASL-IR");
                }
                let credentials = match mech.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(r) => r,
                            None => imap_continuation(c, "")?,
                        };
                        if response == "*" {
                            c.send(&format!("{tag} BAD Authentication cancelled"))?;
                            continue;
                        }
                        decode_plain(&response)
                    }
                    "LOGIN" => {
                        let user = imap_continuation(c, &b64("Username:"))?;
                        let secret = imap_continuation(c, &b64("Password:"))?;
                        b64_decode(&user).zip(b64_decode(&secret))
                    }
                    _ => {
                        c.send(&format!("{tag} NO Unsupported authentication mechanism"))?;
                        continue;
                    }
                };
                match credentials {
                    Some((user, secret)) => login(c, &user, &secret, &mut logged_in)?,
                    None => c.send(&format!("{tag} BAD Invalid base64 data"))?,
                }
            }
            "LOGIN" => {
                if has_word(&in_force, "LOGINDISABLED") {
                    c.note("LOGIN although LOGINDISABLED");
                    c.send(&format!(
                        "{tag} NO [PRIVACYREQUIRED] Plaintext login disabled"
                    ))?;
                    continue;
                }
                let args_start = line.len() - args.len();
                match imap_args(&line[args_start..]) {
                    Some(a) if a.len() == 2 => {
                        let user = String::from_utf8_lossy(&a[0]).into_owned();
                        let secret = String::from_utf8_lossy(&a[1]).into_owned();
                        login(c, &user, &secret, &mut logged_in)?;
                    }
                    _ => {
                        c.note(format!("malformed LOGIN arguments: {args:?}"));
                        c.send(&format!("{tag} BAD Invalid arguments"))?;
                    }
                }
            }
            _ => {
                c.note(format!("unexpected command: {text}"));
                c.send(&format!("{tag} BAD Unknown command"))?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A configurable fake SMTP / LMTP server

#[derive(Clone)]
pub struct SmtpServer {
    /// LMTP: LHLO expected; SMTP: EHLO.
    pub lmtp: bool,
    /// Whole greeting lines, e.g. `["220-mx ESMTP", "220 ready"]`.
    pub greeting: Vec<String>,
    /// EHLO/LHLO keywords (after the name line), before TLS.
    pub ehlo: Vec<String>,
    /// Keywords after STARTTLS; default: `ehlo` without STARTTLS.
    pub ehlo_tls: Option<Vec<String>>,
    pub users: Vec<(String, String)>,
    /// A fixed reply to every completed AUTH, whatever the credentials.
    pub auth_reply: Option<String>,
    /// Reply to wrong credentials.
    pub auth_failure: String,
    /// Reply to `MAIL FROM`.
    pub mail_reply: String,
    /// Recipients answered `250`.
    pub recipients: Vec<String>,
    /// Reply to other recipients.
    pub unknown_reply: String,
    /// Per-address replies, checked first.
    pub rcpt_replies: Vec<(String, String)>,
    /// Delay before answering each command.
    pub delay: Duration,
    /// Extra delay before answering each RCPT.
    pub rcpt_delay: Duration,
    /// `421` and close after this long without a command.
    pub idle_421_after: Option<Duration>,
    /// TLS from the first byte (`tls.implicit = true`); `ehlo_tls` then applies throughout.
    pub implicit_tls: bool,
    /// Reply to `XCLIENT` when it is offered; `None`: a new greeting for the first one and
    /// Postfix's `550 5.7.0 Error: insufficient authorization` for any later one.
    pub xclient_reply: Option<String>,
}

impl SmtpServer {
    pub fn smtp(ehlo: &[&str]) -> SmtpServer {
        SmtpServer {
            lmtp: false,
            greeting: vec!["220 fake.example.org ESMTP Fake".into()],
            ehlo: ehlo.iter().map(|s| s.to_string()).collect(),
            ehlo_tls: None,
            users: vec![("alice@example.org".into(), "alice-pass-1".into())],
            auth_reply: None,
            auth_failure: "535 5.7.8 Error: authentication failed".into(),
            mail_reply: "250 2.1.0 Ok".into(),
            recipients: vec!["alice@example.org".into(), "bob@example.org".into()],
            unknown_reply: "550 5.1.1 Recipient address rejected: User unknown".into(),
            rcpt_replies: Vec::new(),
            delay: Duration::ZERO,
            rcpt_delay: Duration::ZERO,
            idle_421_after: None,
            implicit_tls: false,
            xclient_reply: None,
        }
    }

    pub fn lmtp(lhlo: &[&str]) -> SmtpServer {
        SmtpServer {
            lmtp: true,
            greeting: vec!["220 fake.example.org LMTP Fake".into()],
            ..SmtpServer::smtp(lhlo)
        }
    }

    pub fn start(self) -> Peer {
        Peer::start(move |c| client_gone_is_fine(run_smtp(&self, c)))
    }

    /// As [`SmtpServer::start`], on a listener the test made.
    pub fn start_on(self, listener: TcpListener) -> Peer {
        Peer::start_on(listener, move |c| client_gone_is_fine(run_smtp(&self, c)))
    }
}

/// `RCPT TO:<addr> ...` → `addr`.
fn angle_address(args: &str) -> Option<&str> {
    let open = args.find('<')?;
    let close = args[open..].find('>')? + open;
    Some(&args[open + 1..close])
}

/// A response to a 334 challenge (recorded); notes a client that answered early.
fn smtp_challenge(c: &mut Conn, challenge: &str) -> PeerResult<String> {
    if c.data_within(Duration::from_millis(100))? {
        c.note(format!(
            "answer sent before the challenge '334 {challenge}'"
        ));
    }
    c.send(&format!("334 {challenge}"))?;
    c.next_line()
}

/// The reply to EHLO or LHLO from `host`, offering `keywords`.
pub fn ehlo_reply(c: &mut Conn, host: &str, keywords: &[impl AsRef<str>]) -> PeerResult {
    let mut lines = vec![format!("250-{host}")];
    lines.extend(keywords.iter().map(|k| format!("250-{}", k.as_ref())));
    let last = lines.pop().unwrap_or_default().replacen("250-", "250 ", 1);
    lines.push(last);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    c.send_lines(&refs)
}

fn run_smtp(cfg: &SmtpServer, c: &mut Conn) -> PeerResult {
    let hello = if cfg.lmtp { "LHLO" } else { "EHLO" };
    let mut ext = cfg.ehlo.clone();
    if cfg.implicit_tls {
        c.start_tls()?;
        ext = cfg.ehlo_tls.clone().unwrap_or(ext);
    }
    let greeting: Vec<&str> = cfg.greeting.iter().map(String::as_str).collect();
    c.send_lines(&greeting)?;
    let mut helo_done = false;
    let mut authenticated = false;
    let mut xclient_done = false;
    // MAIL FROM accepted, or attempted (a pipelined RCPT after a refused MAIL is fine).
    let mut in_transaction = false;
    let mut mail_attempted = false;
    // The open transaction was declared SMTPUTF8 (RFC 6531).
    let mut smtputf8 = false;
    loop {
        let idle = cfg.idle_421_after.unwrap_or(c.timeout);
        let Some(line) = c.read_line_within(idle)? else {
            if cfg.idle_421_after.is_some() {
                c.send("421 4.4.2 fake.example.org Error: timeout exceeded")?;
                return Ok(());
            }
            return Err(PeerError::Timeout("an SMTP command".into()));
        };
        c.record(&line);
        c.pause(cfg.delay)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let (verb, args) = text.split_once(' ').unwrap_or((&text, ""));
        let verb = verb.to_ascii_uppercase();
        let advertised = |ext: &[String], mech: &str| {
            ext.iter().any(|k| {
                let mut words = k.split_ascii_whitespace();
                words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH"))
                    && words.any(|w| w.eq_ignore_ascii_case(mech))
            })
        };
        match verb.as_str() {
            "EHLO" | "LHLO" if verb == hello => {
                helo_done = true;
                in_transaction = false;
                mail_attempted = false;
                ehlo_reply(c, "fake.example.org", &ext)?;
            }
            "EHLO" | "LHLO" | "HELO" => {
                c.note(format!("{verb} sent to a server expecting {hello}"));
                c.send("500 5.5.2 Error: command not recognized")?;
            }
            "STARTTLS" if !c.is_tls() && ext.iter().any(|k| k.eq_ignore_ascii_case("STARTTLS")) => {
                c.send("220 2.0.0 Ready to start TLS")?;
                c.start_tls()?;
                helo_done = false;
                ext = cfg.ehlo_tls.clone().unwrap_or_else(|| {
                    ext.iter()
                        .filter(|k| !k.eq_ignore_ascii_case("STARTTLS"))
                        .cloned()
                        .collect()
                });
            }
            "AUTH" => {
                if !helo_done || authenticated || in_transaction {
                    c.note(format!(
                        "AUTH out of sequence (hello {helo_done}, authenticated {authenticated}, transaction {in_transaction})"
                    ));
                    c.send("503 5.5.1 Error: bad sequence of commands")?;
                    continue;
                }
                let mut words = args.split_ascii_whitespace();
                let mech = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                if !advertised(&ext, &mech) {
                    c.note(format!("AUTH {mech} not advertised"));
                }
                let credentials = match mech.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(r) => r,
                            None => smtp_challenge(c, "")?,
                        };
                        if response == "*" {
                            c.send("501 5.7.0 Authentication aborted")?;
                            continue;
                        }
                        decode_plain(&response)
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(u) => u,
                            None => smtp_challenge(c, &b64("Username:"))?,
                        };
                        let secret = smtp_challenge(c, &b64("Password:"))?;
                        if user == "*" || secret == "*" {
                            c.send("501 5.7.0 Authentication aborted")?;
                            continue;
                        }
                        b64_decode(&user).zip(b64_decode(&secret))
                    }
                    _ => {
                        c.send("504 5.5.4 Unrecognized authentication type")?;
                        continue;
                    }
                };
                match (&cfg.auth_reply, credentials) {
                    (Some(reply), _) => c.send(reply)?,
                    (None, Some((user, secret))) if check_user(&cfg.users, &user, &secret) => {
                        authenticated = true;
                        c.send("235 2.7.0 Authentication successful")?;
                    }
                    (None, Some(_)) => c.send(&cfg.auth_failure)?,
                    (None, None) => c.send("501 5.5.2 Cannot decode response")?,
                }
            }
            "MAIL" => {
                if !helo_done {
                    c.note(format!("MAIL before {hello}"));
                }
                if in_transaction {
                    c.note("nested MAIL command");
                    c.send("503 5.5.1 Error: nested MAIL command")?;
                    continue;
                }
                mail_attempted = true;
                in_transaction = cfg.mail_reply.starts_with('2');
                smtputf8 = args
                    .split_ascii_whitespace()
                    .skip(1)
                    .any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
                if smtputf8 && !ext.iter().any(|k| k.eq_ignore_ascii_case("SMTPUTF8")) {
                    c.note("MAIL FROM with SMTPUTF8 that was not advertised");
                }
                c.send(&cfg.mail_reply)?;
            }
            "RCPT" => {
                if !in_transaction {
                    if !mail_attempted {
                        c.note("RCPT without MAIL");
                    }
                    c.send("503 5.5.1 Error: need MAIL command")?;
                    continue;
                }
                c.pause(cfg.rcpt_delay)?;
                let address = angle_address(args).unwrap_or("");
                if !address.is_ascii() && !smtputf8 {
                    // What Postfix answers (smtpd): the transaction must be declared.
                    c.send("553 5.6.7 Must declare SMTPUTF8 to send unicode address")?;
                    continue;
                }
                let reply = cfg
                    .rcpt_replies
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(address))
                    .map(|(_, r)| r.clone())
                    .or_else(|| {
                        cfg.recipients
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(address))
                            .then(|| "250 2.1.5 Ok".to_owned())
                    })
                    .unwrap_or_else(|| cfg.unknown_reply.clone());
                c.send(&reply)?;
            }
            "RSET" => {
                in_transaction = false;
                mail_attempted = false;
                c.send("250 2.0.0 Ok")?;
            }
            "XCLIENT"
                if ext
                    .iter()
                    .any(|k| k.to_ascii_uppercase().starts_with("XCLIENT")) =>
            {
                if !helo_done || authenticated || in_transaction {
                    c.note("XCLIENT out of sequence");
                }
                match &cfg.xclient_reply {
                    Some(reply) => c.send(reply)?,
                    None if xclient_done => {
                        c.send("550 5.7.0 Error: insufficient authorization")?
                    }
                    None => {
                        xclient_done = true;
                        helo_done = false;
                        c.send_lines(&greeting)?;
                    }
                }
            }
            "NOOP" => c.send("250 2.0.0 Ok")?,
            "QUIT" => {
                c.send("221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => {
                c.note(format!("unexpected command: {text}"));
                c.send("502 5.5.2 Error: command not recognized")?;
            }
        }
    }
}
