//! The daemon tests' harness: the real servers (the library's tests/common) and the real
//! `remote-directoryd` binary, started on a configuration written for the test.
#![allow(dead_code)] // each test binary uses its own part of this module

#[path = "../../../tests/common/mod.rs"]
mod servers;

pub use nix::sys::signal::Signal;
#[allow(unused_imports)] // each test binary uses its own part of this module
pub use servers::{servers, ALICE, BOB, NOBODY};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The servers' port base (RD_PORT_BASE): extra ports are this plus an offset, so that
/// several test sets never collide. Offsets 3000-3499 are the daemon tests' (issue 9).
pub fn port_base() -> u16 {
    servers().port("RD_IMAP_PORT") - 143
}

/// A directory of its own for one test, under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rdd-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `[directory.NAME]` table for the real server on `port_key` (the harness's CA).
pub fn directory(name: &str, kind: &str, port_key: &str, extra: &str) -> String {
    servers().config(kind, port_key, false, extra).replacen(
        "[directory.test]",
        &format!("[directory.{name}]"),
        1,
    )
}

/// A running remote-directoryd; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub config: PathBuf,
    pub dir: PathBuf,
    log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_remote-directoryd")
}

impl Daemon {
    /// Writes `config` (where `@DIR@` is replaced by the test's directory) and starts the
    /// daemon on it; returns once it has bound its sockets and said "ready".
    pub fn start(what: &str, config: &str) -> Daemon {
        Self::start_in(temp_dir(what), config)
    }

    pub fn start_in(dir: PathBuf, config: &str) -> Daemon {
        let path = dir.join("remote-directory.toml");
        std::fs::write(&path, config.replace("@DIR@", dir.to_str().unwrap())).unwrap();
        let mut d = Daemon {
            child: None,
            config: path,
            log: dir.join("daemon.log"),
            dir,
        };
        d.spawn();
        d
    }

    /// Starts the process (again, after `kill`) and waits for its "ready" line.
    pub fn spawn(&mut self) {
        let before = self.log().matches("ready;").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run remote-directoryd");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while self.log().matches("ready;").count() == before {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("remote-directoryd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "remote-directoryd not ready after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("kill({signal}): {e}"));
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself, at most `limit`; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `text` (at most 10 s).
    pub fn wait_log(&self, text: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < until,
                "no {text:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the configuration file (for SIGHUP tests).
    pub fn rewrite_config(&self, config: &str) {
        let text = config.replace("@DIR@", self.dir.to_str().unwrap());
        let tmp = self.dir.join("new.toml");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }
}

impl Drop for Daemon {
    /// Kills the daemon and removes the test's directory, unless the test failed (then its
    /// configuration and log stay for a look).
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `remote-directoryd` with `args`; (exit code, stdout, stderr).
pub fn run_binary(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client configuration: directory `name` served by the daemon at `socket`.
pub fn client_config(name: &str, socket: &Path, daemon_directory: &str, extra: &str) -> String {
    format!(
        "[directory.{name}]\ntype = \"daemon\"\nsocket = \"{}\"\ndirectory = \"{daemon_directory}\"\n{extra}\n",
        socket.display()
    )
}

/// One SMTP session with the test servers' smtpd on `port_key`: EHLO, `MAIL FROM`, then
/// `RCPT TO` for each of `recipients`; the last line of each RCPT reply.
pub fn rcpt_replies(port_key: &str, recipients: &[&str]) -> Vec<String> {
    let port = servers().port(port_key);
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Postfix");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = |cmd: Option<&str>| -> String {
        if let Some(cmd) = cmd {
            writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "short reply {line:?} to {cmd:?}");
            if line.as_bytes()[3] == b' ' {
                return line.trim_end().to_string();
            }
        }
    };
    assert!(reply(None).starts_with("220"));
    assert!(reply(Some("EHLO test.example")).starts_with("250"));
    assert!(reply(Some("MAIL FROM:<sender@example.net>")).starts_with("250"));
    let replies = recipients
        .iter()
        .map(|r| reply(Some(&format!("RCPT TO:<{r}>"))))
        .collect();
    let _ = reply(Some("QUIT"));
    replies
}
