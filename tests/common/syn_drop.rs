//! A port that drops every SYN: a listener with a backlog of 0 whose accept queue is filled
//! and never accepted from. Linux drops a SYN when the accept queue is full, so a client's
//! connect hears nothing at all, as from a host behind a firewall that drops packets. No
//! root, no network namespace, no packet filter needed.

use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::time::Duration;

pub struct SynDrop {
    _listener: Socket,
    /// The connections that fill the queue.
    _queued: Vec<Socket>,
    port: u16,
}

impl SynDrop {
    /// On `addr` (port 0: any free port of that address).
    pub fn on(addr: SocketAddr) -> SynDrop {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.set_reuse_address(true).unwrap();
        listener.bind(&addr.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue: connect until a connect no longer completes at once.
        let mut queued = Vec::new();
        loop {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            match s.connect_timeout(&addr.into(), Duration::from_millis(300)) {
                Ok(()) => queued.push(s),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the accept queue does not fill");
        }
        SynDrop {
            _listener: listener,
            _queued: queued,
            port: addr.port(),
        }
    }

    /// `127.0.0.1:PORT`, as an `address` entry.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
