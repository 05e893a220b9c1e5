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
use std::sync::Mutex;
use std::time::Instant;

/// Connections kept open for later calls; more concurrent calls open more, and close them.
const MAX_IDLE: usize = 16;

pub(crate) struct DaemonClient {
    settings: DaemonClientSettings,
    idle: Mutex<Vec<UnixStream>>,
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
        }
    }

    /// Asks the daemon; its answer, or TEMPORARY-kind errors when it cannot be asked.
    pub(crate) fn call(&self, call: Call) -> Result<()> {
        let request = wire::encode_request(&Request {
            directory: &self.settings.directory,
            call,
        });
        let deadline = Instant::now() + self.settings.timeout;
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(stream) = kept {
            match self.exchange(stream, &request, deadline) {
                Ok(outcome) => return outcome,
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::Stale) => {
                    // Its siblings were closed the same way.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
        }
        let stream = self.connect(deadline)?;
        match self.exchange(stream, &request, deadline) {
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
        let mut response = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        loop {
            match wire::decode_response(&response) {
                Ok(Some((answer, used))) if used == response.len() => {
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
