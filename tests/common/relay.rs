//! A loopback TCP relay to a real test server, which a test can stop (its port then refuses
//! connections, as a server that is down) and start again on the same port. It counts the
//! connections it relayed, so a test knows which server of a list was asked, or that a
//! handle asked nothing at all.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A loopback TCP relay to a real server that can be stopped and started again.
pub struct Relay {
    port: u16,
    target: SocketAddr,
    relayed: Arc<AtomicUsize>,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// A relay to `127.0.0.1:target_port` on a free port of its own, listening.
    pub fn start(target_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a relay");
        let mut relay = Relay {
            port: listener.local_addr().unwrap().port(),
            target: ([127, 0, 0, 1], target_port).into(),
            relayed: Arc::new(AtomicUsize::new(0)),
            running: None,
        };
        relay.listen(listener);
        relay
    }

    fn listen(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (target, relayed) = (self.target, self.relayed.clone());
        let accept = {
            let (stop, sockets) = (stop.clone(), sockets.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            relayed.fetch_add(1, Ordering::SeqCst);
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = TcpStream::connect(target) else {
                                continue;
                            };
                            let mut list = sockets.lock().unwrap();
                            list.push(client.try_clone().unwrap());
                            list.push(server.try_clone().unwrap());
                            pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                            pump(server, client);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => panic!("relay accept: {e}"),
                    }
                }
                // The listener is dropped here: the port refuses connections from now on.
            })
        };
        self.running = Some(Running {
            stop,
            sockets,
            accept,
        });
    }

    /// The server goes down: its port refuses connections, its connections are cut.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            running.accept.join().unwrap();
            for socket in running.sockets.lock().unwrap().drain(..) {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// The server is back, on the same port.
    pub fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind again");
        self.listen(listener);
    }

    pub fn relayed(&self) -> usize {
        self.relayed.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as an `address` entry.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies one direction until either side closes; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
