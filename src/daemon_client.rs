//! A `type = "daemon"` directory: every call is one request to remote-directoryd over its
//! Unix socket, in the protocol of [`crate::wire`], on connections kept open between calls.
//! The daemon runs the call on its own handle and sends back the outcome, which is returned
//! as it came: same result, same message. The daemon unreachable is a temporary failure.

use crate::config::DaemonClientSettings;
use crate::error::{Error, Kind, Result};
use crate::wire::{self, Call, Request};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connections kept open for later calls; more concurrent calls open more, and close them.
const MAX_IDLE: usize = 16;

/// How long a caller may poll for the daemon's answer before it sleeps in read(2). A
/// thread that sleeps is woken 15-30 us after its answer arrives on an idle machine
/// (measured on a 2-core VM, where that was most of the daemon's overhead), while an answer
/// from the daemon's cache is back within a few microseconds. A call polls only when the
/// last answer to its kind of call on this handle came within this time (a cached login, a
/// warm recipient check), so the caller spends at most about the time it waits anyway;
/// logins that go to a slow server, and the one call of a process per login, do not poll.
/// And only a call alone in flight in its process polls: with several, the CPUs are awake
/// anyway, and polling callers took CPU from the daemon (cached logins from 8 threads:
/// 22-35 % fewer per second).
const POLL: Duration = Duration::from_micros(300);

/// Calls to any daemon in flight in this process now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One call counted in [`IN_FLIGHT`] while it lives.
struct InFlight {
    alone: bool,
}

impl InFlight {
    fn enter() -> Self {
        InFlight {
            alone: IN_FLIGHT.fetch_add(1, Ordering::Relaxed) == 0,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct DaemonClient {
    settings: DaemonClientSettings,
    idle: Mutex<Vec<UnixStream>>,
    /// Per kind of call: whether its last answer came within [`POLL`].
    quick: [AtomicBool; 3],
}

/// Why an exchange failed, and whether the call may be sent again.
enum Failure {
    /// Nothing came back on a kept connection: the daemon closed it meanwhile (idle timeout,
    /// restart). Sending the call once more on a new connection is safe.
    Stale,
    Error(Error),
}

impl DaemonClient {
    pub(crate) fn new(settings: DaemonClientSettings) -> Self {
        DaemonClient {
            settings,
            idle: Mutex::new(Vec::new()),
            quick: Default::default(),
        }
    }

    /// Asks the daemon; its answer, or TEMPORARY-kind errors when it cannot be asked.
    pub(crate) fn call(&self, call: Call) -> Result<()> {
        let quick = &self.quick[match call {
            Call::Auth { .. } => 0,
            Call::Rcpt { .. } => 1,
            Call::IsLocalDomain { .. } => 2,
        }];
        let request = wire::encode_request(&Request {
            directory: &self.settings.directory,
            call,
        });
        let in_flight = InFlight::enter();
        let poll = if in_flight.alone && quick.load(Ordering::Relaxed) {
            POLL
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + self.settings.timeout;
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(stream) = kept {
            match self.exchange(stream, &request, deadline, quick, poll) {
                Ok(outcome) => return outcome,
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::Stale) => {
                    // Its siblings were closed the same way.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
        }
        let stream = self.connect(deadline)?;
        match self.exchange(stream, &request, deadline, quick, poll) {
            Ok(outcome) => outcome,
            Err(Failure::Error(e)) => Err(e),
            Err(Failure::Stale) => Err(self.error(
                Kind::Network,
                "the daemon closed the connection without answering",
            )),
        }
    }

    fn error(&self, kind: Kind, detail: impl std::fmt::Display) -> Error {
        Error::new(
            kind,
            format!(
                "remote-directoryd at {}: {detail}",
                self.settings.socket.display()
            ),
        )
    }

    fn io_error(&self, what: &str, e: &io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.error(
                Kind::Timeout,
                format!(
                    "{what}: no answer within {:?} (the directory's timeout)",
                    self.settings.timeout
                ),
            ),
            _ => self.error(Kind::Network, format!("{what}: {e}")),
        }
    }

    /// A new connection. The send timeout also bounds connect(2), which waits while the
    /// daemon's backlog is full.
    fn connect(&self, deadline: Instant) -> Result<UnixStream> {
        let left = deadline.saturating_duration_since(Instant::now());
        let connected = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
            .and_then(|s| {
                s.set_write_timeout(Some(left.max(std::time::Duration::from_millis(1))))?;
                Ok(s)
            })
            .and_then(|s| {
                let address = SockAddr::unix(&self.settings.socket)?;
                s.connect(&address)?;
                Ok(s)
            });
        match connected {
            Ok(s) => Ok(s.into()),
            Err(e) => Err(self.io_error("connect", &e)),
        }
    }

    /// Sends the request and reads the answer; keeps the connection when all went well.
    fn exchange(
        &self,
        mut stream: UnixStream,
        request: &[u8],
        deadline: Instant,
        quick: &AtomicBool,
        poll: Duration,
    ) -> std::result::Result<Result<()>, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Error(
                self.io_error("send", &io::Error::from(io::ErrorKind::TimedOut)),
            ));
        }
        let stale_or = |client: &Self, what: &str, e: &io::Error, got_nothing: bool| {
            let closed = matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            );
            if closed && got_nothing {
                Failure::Stale
            } else {
                Failure::Error(client.io_error(what, e))
            }
        };
        if let Err(e) = stream
            .set_write_timeout(Some(left))
            .and_then(|()| stream.write_all(request))
        {
            return Err(stale_or(self, "send", &e, true));
        }
        let sent = Instant::now();
        let mut response = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        if !poll.is_zero() {
            match poll_briefly(&stream, &mut chunk, poll) {
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(stale_or(self, "receive", &e, true)),
            }
        }
        loop {
            match wire::decode_response(&response) {
                Ok(Some((answer, used))) if used == response.len() => {
                    quick.store(sent.elapsed() <= POLL, Ordering::Relaxed);
                    let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() < MAX_IDLE {
                        idle.push(stream);
                    }
                    if let Some(notice) = answer.notice {
                        crate::directory::set_notice(notice);
                    }
                    return Ok(answer.outcome);
                }
                Ok(Some(_)) => {
                    return Err(Failure::Error(
                        self.error(Kind::Protocol, "the daemon sent more than one answer"),
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::Error(self.error(Kind::Protocol, e))),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let read = if left.is_zero() {
                Err(io::Error::from(io::ErrorKind::TimedOut))
            } else {
                stream
                    .set_read_timeout(Some(left))
                    .and_then(|()| stream.read(&mut chunk))
            };
            match read {
                Ok(0) => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Err(stale_or(self, "receive", &eof, response.is_empty()));
                }
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stale_or(self, "receive", &e, response.is_empty())),
            }
        }
    }
}

/// Reads what arrives within `poll` without sleeping; 0 bytes when nothing came (the caller
/// then blocks in read(2) as usual). End of stream is an `UnexpectedEof`.
fn poll_briefly(stream: &UnixStream, chunk: &mut [u8], poll: Duration) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let until = Instant::now() + poll;
    let read = loop {
        match (&*stream).read(chunk) {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => break Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < until => {
                // Gives the CPU to the daemon if both share it.
                std::thread::yield_now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_reads_what_arrived_sees_the_end_and_leaves_the_stream_blocking() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut chunk = [0u8; 16];
        let short = Duration::from_micros(50);
        // Nothing comes: no bytes, and the stream blocks again (the read times out rather
        // than failing with WouldBlock at once).
        assert_eq!(poll_briefly(&ours, &mut chunk, short).unwrap(), 0);
        ours.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let started = Instant::now();
        assert!((&ours).read(&mut chunk).is_err());
        assert!(started.elapsed() >= Duration::from_millis(15));
        // An answer that is already there.
        theirs.write_all(b"answer").unwrap();
        assert_eq!(poll_briefly(&ours, &mut chunk, short).unwrap(), 6);
        assert_eq!(&chunk[..6], b"answer");
        // One that comes from another thread while the caller polls.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(100));
            theirs.write_all(b"late").unwrap();
            theirs
        });
        let mut got = 0;
        let until = Instant::now() + Duration::from_secs(5);
        while got == 0 && Instant::now() < until {
            got = poll_briefly(&ours, &mut chunk, POLL).unwrap();
        }
        assert_eq!(&chunk[..got], b"late");
        // The daemon closed the connection.
        drop(writer.join().unwrap());
        let closed = poll_briefly(&ours, &mut chunk, short).unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
    }
}
