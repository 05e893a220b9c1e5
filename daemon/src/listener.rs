//! The listener layer every protocol shares: it owns the sockets, the peer credentials, the
//! bounds (request size, request and idle time, concurrent clients) and the worker threads.
//! A protocol only turns request bytes into reply bytes ([`Service`], [`Exchange`]).
//!
//! Model: one accept thread per socket, one worker thread per connection, at most
//! `daemon.max-clients` connections per socket at once (beyond, new connections wait in the
//! kernel's backlog until a worker is free). Every call into the library blocks its worker
//! only.

use crate::config::Directories;
use crate::log::log;
use crate::state::State;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Where a protocol listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket created with `mode` (e.g. 0o660) and, when given, owned by `group`.
    Unix {
        path: PathBuf,
        mode: u32,
        group: Option<String>,
    },
    /// TCP on a loopback address (checked by the configuration).
    Tcp(SocketAddr),
}

/// Bounds the listener enforces on every connection of every protocol.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once per socket.
    pub max_clients: usize,
    /// From the first byte of a request to its last; a slow client is cut off after it.
    pub request_timeout: Duration,
    /// Longest silence between requests on a kept-open connection.
    pub idle_timeout: Duration,
}

/// A protocol, as the listener layer sees it. One value serves every connection of its
/// socket(s), from many threads.
pub trait Service: Send + Sync {
    /// For log lines: `socketmap`, `policy`, ...
    fn name(&self) -> &'static str;
    /// The longest request this protocol accepts, in bytes; the connection of a client that
    /// sends more without completing a request is closed.
    fn max_request(&self) -> usize;
    /// The state of one new connection.
    fn open(&self) -> Box<dyn Exchange>;
}

/// One connection's conversation: a pure function of the bytes received so far (plus the
/// directories), which says how many it used and what to answer.
pub trait Exchange: Send {
    /// Bytes sent as soon as the client connects (Dovecot's handshake); none by default.
    fn greeting(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Looks at the unanswered bytes `input` (the start of a request). The listener calls it
    /// again with what is left after `Step::Reply`.
    fn step(&mut self, input: &[u8], ctx: &Context) -> Step;
    /// After a reply with `close`: half-close the connection and read until the client
    /// closes its side (bounded), instead of closing at once. For protocols whose clients may
    /// still be sending when they are answered (saslauthd's optional fifth field): closing a
    /// socket with unread bytes would reset it. Off by default.
    fn drain_at_close(&self) -> bool {
        false
    }
}

/// What an [`Exchange`] decided about the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The request is not complete yet.
    More,
    /// `consumed` bytes made one request; `reply` is its answer. With `close`, the
    /// connection ends after the reply (HTTP without keep-alive, a protocol's fatal error).
    Reply {
        consumed: usize,
        reply: Vec<u8>,
        close: bool,
    },
    /// The client broke the protocol: `reply` (maybe empty) is sent, `reason` logged with
    /// the peer's credentials, and the connection closed.
    Refuse { reply: Vec<u8>, reason: String },
}

/// What a request is answered with: the directories of the moment and who is asking.
pub struct Context<'a> {
    pub directories: &'a Directories,
    pub peer: &'a Peer,
}

/// Who is on the other end: SO_PEERCRED of a Unix socket, or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Unix {
        pid: i32,
        uid: u32,
        gid: u32,
    },
    /// Credentials could not be read (the peer is gone).
    UnixUnknown,
    Tcp(SocketAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { pid, uid, gid } => write!(f, "pid={pid} uid={uid} gid={gid}"),
            Peer::UnixUnknown => f.write_str("unix peer (credentials unavailable)"),
            Peer::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// A bound socket, ready to accept.
pub struct Bound {
    key: String,
    socket: Socket,
}

enum Socket {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// To remove the file at exit only if it is still ours.
        inode: u64,
    },
    Tcp(TcpListener),
}

impl Bound {
    /// Binds `address`. A Unix socket file left by a dead daemon is replaced; one that
    /// answers is never taken over; any other file at that path is left alone.
    pub fn bind(key: &str, address: &Address) -> Result<Bound, String> {
        let socket = match address {
            Address::Unix { path, mode, group } => {
                let (listener, inode) = bind_unix(path, *mode, group.as_deref())
                    .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
                Socket::Unix {
                    listener,
                    path: path.clone(),
                    inode,
                }
            }
            Address::Tcp(addr) => {
                Socket::Tcp(TcpListener::bind(addr).map_err(|e| format!("{key}: {addr}: {e}"))?)
            }
        };
        Ok(Bound {
            key: key.to_string(),
            socket,
        })
    }

    /// Where it listens, for log lines.
    pub fn describe(&self) -> String {
        match &self.socket {
            Socket::Unix { path, .. } => format!("{} = {}", self.key, path.display()),
            Socket::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("{} = {a}", self.key),
                Err(_) => self.key.clone(),
            },
        }
    }

    fn accept(&self) -> io::Result<(Conn, Peer)> {
        match &self.socket {
            Socket::Unix { listener, .. } => {
                let (stream, _) = listener.accept()?;
                let peer = peer_credentials(&stream);
                Ok((Conn::Unix(stream), peer))
            }
            Socket::Tcp(listener) => {
                let (stream, addr) = listener.accept()?;
                // Replies are small and answer a request: send them at once.
                stream.set_nodelay(true)?;
                Ok((Conn::Tcp(stream), Peer::Tcp(addr)))
            }
        }
    }

    /// Wakes the accept thread: accept(2) on a socket shut down returns an error.
    fn shut(&self) {
        let fd = match &self.socket {
            Socket::Unix { listener, .. } => listener.as_raw_fd(),
            Socket::Tcp(listener) => listener.as_raw_fd(),
        };
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }

    /// Removes the socket file, if the path still names the socket this daemon made.
    fn remove(&self) {
        if let Socket::Unix { path, inode, .. } = &self.socket {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *inode) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> io::Result<(UnixListener, u64)> {
    let gid = match group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => return Err(io::Error::other(format!("no group named '{name}'"))),
            Err(e) => return Err(io::Error::other(format!("group '{name}': {e}"))),
        },
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::other(
                "exists and is not a socket; not replacing it",
            ))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::other(
                    "another process is listening on it (a second remote-directoryd?); not taking it over",
                ))
            }
            // Nobody listens: the file of a daemon that died. It is replaced below.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bound at a private name, given its mode and group, then renamed into place: the socket
    // is never reachable with looser permissions, and a stale file is replaced atomically.
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file path"))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.new",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .and_then(|()| match gid {
            Some(gid) => std::os::unix::fs::chown(&temporary, None, Some(gid)),
            None => Ok(()),
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let inode = std::fs::symlink_metadata(path)?.ino();
    Ok((listener, inode))
}

fn peer_credentials(stream: &UnixStream) -> Peer {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(c) => Peer::Unix {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(_) => Peer::UnixUnknown,
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(Some(t)),
            Conn::Tcp(s) => s.set_write_timeout(Some(t)),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts the connections of one socket being served, to bound them and to wait for them.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    changed: Condvar,
    /// Whether the bound was reached and not left since: said once per episode in the log.
    full: std::sync::atomic::AtomicBool,
}

impl Active {
    /// Waits for a free place (or `stop`); true when one was taken.
    fn enter(&self, max: usize, state: &State) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if *n < max / 2 {
            self.full.store(false, Relaxed);
        }
        while *n >= max && !state.stopping() {
            if !self.full.swap(true, Relaxed) {
                log!(
                    "warning",
                    "{max} clients at once (daemon.max-clients): new connections wait"
                );
            }
            n = self
                .changed
                .wait_timeout(n, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if state.stopping() {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.changed.notify_all();
    }

    /// Waits until no connection is served, or `until`; true when none is left.
    fn drain(&self, until: Instant) -> bool {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .changed
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A socket being served: its accept thread and its connections.
pub struct Running {
    bound: Arc<Bound>,
    active: Arc<Active>,
    accept: std::thread::JoinHandle<()>,
}

/// Starts serving `bound` with `service`.
pub fn serve(
    bound: Bound,
    service: Arc<dyn Service>,
    limits: Limits,
    state: Arc<State>,
) -> io::Result<Running> {
    let bound = Arc::new(bound);
    let active = Arc::new(Active::default());
    let accept = {
        let (bound, active) = (bound.clone(), active.clone());
        std::thread::Builder::new()
            .name(format!("accept-{}", service.name()))
            .spawn(move || accept_loop(&bound, &service, limits, &state, &active))?
    };
    Ok(Running {
        bound,
        active,
        accept,
    })
}

impl Running {
    /// Stops accepting at once (the caller has set `state.stopping`).
    pub fn stop_accepting(&self) {
        self.bound.shut();
    }

    /// Waits for the accept thread and, until `until`, for the connections; removes the
    /// socket file. True when every connection finished in time.
    pub fn finish(self, until: Instant) -> bool {
        let _ = self.accept.join();
        let drained = self.active.drain(until);
        self.bound.remove();
        drained
    }
}

fn accept_loop(
    bound: &Bound,
    service: &Arc<dyn Service>,
    limits: Limits,
    state: &Arc<State>,
    active: &Arc<Active>,
) {
    while active.enter(limits.max_clients, state) {
        let accepted = bound.accept();
        if state.stopping() {
            active.leave();
            return;
        }
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                active.leave();
                // Out of descriptors or a connection reset before accept: go on calmly.
                log!("warning", "{}: accept: {e}", bound.key);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let worker = {
            let (service, state, active) = (service.clone(), state.clone(), active.clone());
            std::thread::Builder::new()
                .name(format!("client-{}", service.name()))
                .spawn(move || {
                    serve_connection(conn, &peer, &*service, limits, &state);
                    active.leave();
                })
        };
        if let Err(e) = worker {
            active.leave();
            log!(
                "warning",
                "{}: cannot start a worker thread: {e}",
                bound.key
            );
        }
    }
}

/// How long a worker waits on a silent client before it looks whether the daemon stops.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Bytes read at once.
const READ_CHUNK: usize = 4096;

fn serve_connection(
    mut conn: Conn,
    peer: &Peer,
    service: &dyn Service,
    limits: Limits,
    state: &State,
) {
    let mut exchange = service.open();
    // Request bytes may hold a password: wiped when the connection ends.
    let mut buffer = Buffer::default();
    if conn.set_write_timeout(limits.request_timeout).is_err() {
        return;
    }
    let greeting = exchange.greeting();
    if !greeting.is_empty() && conn.write_all(&greeting).is_err() {
        return;
    }
    let max = service.max_request();
    let mut chunk = [0u8; READ_CHUNK];
    // When the request now in `buffer` began (None: between requests).
    let mut started: Option<Instant> = None;
    let mut idle_since = Instant::now();
    loop {
        let until = match started {
            Some(t) => t + limits.request_timeout,
            None => idle_since + limits.idle_timeout,
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if started.is_some() {
                log!(
                    "notice",
                    "{}: {peer}: no complete request within {:?} (daemon.request-timeout); closed",
                    service.name(),
                    limits.request_timeout
                );
            }
            break;
        }
        if state.stopping() && started.is_none() {
            break;
        }
        if conn.set_read_timeout(left.min(STOP_POLL)).is_err() {
            break;
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) => {
                if started.is_some() {
                    log!(
                        "notice",
                        "{}: {peer}: closed the connection in the middle of a request",
                        service.name()
                    );
                }
                break;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log!("notice", "{}: {peer}: read: {e}", service.name());
                break;
            }
        };
        buffer.extend(&chunk[..n]);
        chunk[..n].zeroize();
        started.get_or_insert_with(Instant::now);
        match answer_all(
            &mut conn,
            &mut buffer,
            &mut *exchange,
            peer,
            service,
            max,
            state,
        ) {
            Continue::Open => {}
            Continue::Close => break,
            Continue::Answered => {
                if exchange.drain_at_close() {
                    drain(&mut conn);
                }
                break;
            }
        }
        if buffer.is_empty() {
            started = None;
            idle_since = Instant::now();
        }
    }
}

enum Continue {
    Open,
    Close,
    /// The last answer is sent (a reply with `close`).
    Answered,
}

/// How long, and how many bytes, a half-closed connection is read before it is closed.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: usize = 16 * 1024;

/// Half-closes `conn` (the client reads the end of the answer) and discards what the client
/// still sends until it closes, at most DRAIN_BYTES within DRAIN_TIME.
fn drain(conn: &mut Conn) {
    if conn.shutdown_write().is_err() {
        return;
    }
    let until = Instant::now() + DRAIN_TIME;
    let mut chunk = [0u8; READ_CHUNK];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(left).is_err() {
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                chunk[..n].zeroize();
                drained += n;
            }
        }
    }
}

/// Answers every complete request in `buffer`.
fn answer_all(
    conn: &mut Conn,
    buffer: &mut Buffer,
    exchange: &mut dyn Exchange,
    peer: &Peer,
    service: &dyn Service,
    max: usize,
    state: &State,
) -> Continue {
    loop {
        if buffer.is_empty() {
            return Continue::Open;
        }
        // The directories of this moment: a reload during the call does not affect it.
        let directories = state.directories();
        let ctx = Context {
            directories: &directories,
            peer,
        };
        match exchange.step(buffer.bytes(), &ctx) {
            Step::More if buffer.len() > max => {
                log!(
                    "notice",
                    "{}: {peer}: request larger than {max} bytes; closed",
                    service.name()
                );
                return Continue::Close;
            }
            Step::More => return Continue::Open,
            Step::Reply {
                consumed,
                reply,
                close,
            } => {
                buffer.consume(consumed);
                if let Err(e) = conn.write_all(&reply) {
                    log!("notice", "{}: {peer}: write: {e}", service.name());
                    return Continue::Close;
                }
                if close {
                    return Continue::Answered;
                }
                if state.stopping() {
                    return Continue::Close;
                }
            }
            Step::Refuse { reply, reason } => {
                log!("notice", "{}: {peer}: {reason}; closed", service.name());
                let _ = conn.write_all(&reply);
                return Continue::Close;
            }
        }
    }
}

/// Received bytes not yet answered. Whatever it held is overwritten with zeros when it is
/// consumed or dropped: requests carry passwords.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
}

impl Buffer {
    fn extend(&mut self, data: &[u8]) {
        if self.bytes.capacity() - self.bytes.len() < data.len() {
            // Growing would leave the old allocation unwiped: move to a new one ourselves.
            let mut grown = Vec::with_capacity((self.bytes.len() + data.len()).max(READ_CHUNK) * 2);
            grown.extend_from_slice(&self.bytes);
            self.bytes.zeroize();
            self.bytes = grown;
        }
        self.bytes.extend_from_slice(data);
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.bytes.copy_within(n.., 0);
        let left = self.bytes.len() - n;
        self.bytes[left..].zeroize();
        self.bytes.truncate(left);
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_consumes_from_the_front() {
        let mut b = Buffer::default();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.bytes(), b"world");
        b.extend(&[b'x'; 10_000]);
        assert_eq!(b.len(), 10_005);
        b.consume(100_000);
        assert!(b.is_empty());
    }

    #[test]
    fn peer_names_its_credentials() {
        let p = Peer::Unix {
            pid: 12,
            uid: 1000,
            gid: 100,
        };
        assert_eq!(p.to_string(), "pid=12 uid=1000 gid=100");
    }
}
