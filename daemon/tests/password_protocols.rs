//! The password protocols of remote-directoryd against the real programs that speak them:
//! Postfix with `smtpd_sasl_type = dovecot` and with `smtpd_sasl_type = cyrus` (Cyrus SASL,
//! `pwcheck_method: saslauthd`), `testsaslauthd`, nginx's mail proxy with `auth_http`, and
//! Dovecot's Lua passdb running the script shipped in contrib/. The remote server is the test
//! Dovecot; directory "down" names a port where nothing listens.

mod common;

use common::*;
use remote_directoryd::saslauthd::counted;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Extra ports, from issue 10's offsets (3500-3599).
const AUTH_HTTP_NGINX: u16 = 3580;
const AUTH_HTTP_LUA: u16 = 3581;
const AUTH_HTTP_HOSTILE: u16 = 3582;
const NGINX_IMAP: u16 = 3543;
const LUA_DOVECOT_IMAP: u16 = 3550;
/// Nothing listens here: the remote of directory "down".
const DOWN: u16 = 3599;

/// Directories "imap" (the test Dovecot, told the client's address) and "down"; `daemon` is the `[daemon]` table's body.
fn config(daemon: &str) -> String {
    format!(
        "{}\n[directory.down]\ntype = \"imap\"\naddress = \"127.0.0.1\"\nport = {}\ntimeout = \"2s\"\n\n\
         [daemon]\nsocket-mode = \"0666\"\n{daemon}\n",
        directory("imap", "imap", "RD_IMAP_PORT", "forward.client-ip = true"),
        port_base() + DOWN,
    )
}

/// The `[daemon]` keys of one protocol section: directory "imap", service "down" to "down".
fn section(name: &str, address: &str) -> String {
    format!("[daemon.{name}]\n{address}\ndirectory = \"imap\"\nservices = {{ down = \"down\" }}\n")
}

// ---------------------------------------------------------------------------------------
// clients

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from`, so that the
/// server sees a client address of its own.
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .unwrap();
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    socket.into()
}

/// One SMTP session from 127.0.0.`from`: EHLO, then AUTH with `mechanism`; the reply code
/// to the AUTH.
fn smtp_auth(from: u8, port: u16, mechanism: &str, user: &str, secret: &str) -> u16 {
    let stream = connect_from([127, 0, 0, from], port);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    assert!(read_line(&mut r).starts_with("220"));
    w.write_all(b"EHLO client.test\r\n").unwrap();
    let mut ehlo = String::new();
    loop {
        let line = read_line(&mut r);
        assert!(line.starts_with("250"), "EHLO: {line}");
        ehlo.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "no AUTH offered: {ehlo}");
    let code = |line: &str| line[..3].parse::<u16>().unwrap();
    let reply = match mechanism {
        "PLAIN" => {
            let message = format!("\0{user}\0{secret}");
            w.write_all(format!("AUTH PLAIN {}\r\n", STANDARD.encode(message)).as_bytes())
                .unwrap();
            read_line(&mut r)
        }
        "LOGIN" => {
            w.write_all(b"AUTH LOGIN\r\n").unwrap();
            assert_eq!(read_line(&mut r).trim_end(), "334 VXNlcm5hbWU6");
            w.write_all(format!("{}\r\n", STANDARD.encode(user)).as_bytes())
                .unwrap();
            assert_eq!(read_line(&mut r).trim_end(), "334 UGFzc3dvcmQ6");
            w.write_all(format!("{}\r\n", STANDARD.encode(secret)).as_bytes())
                .unwrap();
            read_line(&mut r)
        }
        other => panic!("mechanism {other}"),
    };
    let _ = w.write_all(b"QUIT\r\n");
    code(&reply)
}

/// `testsaslauthd -f socket ...`: (stdout, stderr).
fn testsaslauthd(
    socket: &Path,
    user: &str,
    secret: &str,
    service: &str,
    realm: &str,
) -> (String, String) {
    let mut cmd = Command::new("testsaslauthd");
    cmd.arg("-f")
        .arg(socket)
        .args(["-u", user, "-p", secret, "-s", service]);
    if !realm.is_empty() {
        cmd.args(["-r", realm]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("testsaslauthd: {e}; install Debian's sasl2-bin (scripts/install-deps.sh)")
    });
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// IMAP LOGIN on `port`: the tagged reply line.
fn imap_login(port: u16, user: &str, secret: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let greeting = read_line(&mut r);
    assert!(greeting.starts_with("* OK"), "greeting {greeting:?}");
    w.write_all(format!("a LOGIN {} {}\r\n", quoted(user), quoted(secret)).as_bytes())
        .unwrap();
    loop {
        let line = read_line(&mut r);
        assert!(
            !line.is_empty(),
            "connection closed before the tagged reply"
        );
        if line.starts_with("a ") {
            let _ = w.write_all(b"b LOGOUT\r\n");
            return line.trim_end().to_string();
        }
    }
}

/// A program started for a test; killed when dropped.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} does not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Postfix

/// Both Postfix SASL types against one daemon on the sockets tests/servers/servers.sh
/// configured Postfix with (RD_DAEMON_SOCKETS).
#[test]
fn postfix_smtp_auth_through_the_daemon() {
    let s = servers();
    let sockets = Path::new(s.var("RD_DAEMON_SOCKETS")).to_path_buf();
    let daemon_config = config(&format!(
        "{}{}",
        section(
            "dovecot-auth",
            &format!("socket = \"{}\"", sockets.join("dovecot-auth").display())
        ),
        section(
            "saslauthd",
            &format!("socket = \"{}\"", sockets.join("saslauthd").display())
        ),
    ));
    let daemon = Daemon::start("postfix", &daemon_config);
    let dovecot = s.port("RD_DAEMON_SASL_SMTP_PORT");
    let dovecot_down = s.port("RD_DAEMON_SASL_DOWN_SMTP_PORT");
    let cyrus = s.port("RD_CYRUS_SMTP_PORT");
    let cyrus_down = s.port("RD_CYRUS_DOWN_SMTP_PORT");
    let cases: &[(&str, u16, &str, &str, &str, u16)] = &[
        ("dovecot", dovecot, "PLAIN", ALICE.0, ALICE.1, 235),
        ("dovecot", dovecot, "LOGIN", ALICE.0, ALICE.1, 235),
        ("dovecot", dovecot, "PLAIN", BOB.0, BOB.1, 235),
        ("dovecot", dovecot, "PLAIN", ALICE.0, "wrong", 535),
        ("dovecot", dovecot, "LOGIN", NOBODY, "x", 535),
        // The remote is down: TEMPORARY, which Postfix must answer 454, never 535. Twice:
        // the same smtpd process then reconnects to the daemon.
        ("dovecot down", dovecot_down, "PLAIN", ALICE.0, ALICE.1, 454),
        ("dovecot down", dovecot_down, "PLAIN", ALICE.0, ALICE.1, 454),
        ("cyrus", cyrus, "PLAIN", ALICE.0, ALICE.1, 235),
        ("cyrus", cyrus, "LOGIN", BOB.0, BOB.1, 235),
        ("cyrus", cyrus, "PLAIN", ALICE.0, "wrong", 535),
        ("cyrus", cyrus, "PLAIN", NOBODY, "x", 535),
        ("cyrus down", cyrus_down, "PLAIN", ALICE.0, ALICE.1, 454),
        // Still answering after the temporary failures.
        ("dovecot", dovecot, "PLAIN", ALICE.0, ALICE.1, 235),
    ];
    for &(what, port, mechanism, user, secret, expected) in cases {
        let got = smtp_auth(1, port, mechanism, user, secret);
        assert_eq!(
            got,
            expected,
            "{what} {mechanism} {user}\ndaemon log:\n{}",
            daemon.log()
        );
    }
    // Postfix tells the daemon who the SMTP client is (rip=); with forward.client-ip the
    // remote Dovecot logs the login from that address, not from the daemon's.
    assert_eq!(smtp_auth(57, dovecot, "PLAIN", BOB.0, BOB.1), 235);
    let remote_log =
        std::fs::read_to_string(Path::new(s.var("RD_DIR")).join("log/dovecot.log")).unwrap();
    assert!(
        remote_log
            .lines()
            .any(|l| l.contains("Login: user=<bob@example.org>") && l.contains("rip=127.0.0.57")),
        "the remote did not see the SMTP client's address:\n{}",
        remote_log
            .lines()
            .filter(|l| l.contains("bob@example.org"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = daemon.log();
    assert!(
        log.contains("dovecot-auth: down: login of alice@example.org"),
        "{log}"
    );
    assert!(log.contains("TEMPORARY"), "{log}");
    assert!(
        !log.contains(ALICE.1) && !log.contains("wrong"),
        "a password in the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// testsaslauthd

#[test]
fn testsaslauthd_against_the_daemon() {
    let daemon = Daemon::start(
        "saslauthd",
        &config(&section("saslauthd", "socket = \"@DIR@/saslauthd\"")),
    );
    let socket = daemon.path("saslauthd");
    let ok = "0: OK \"Success.\"";
    let no = "0: NO \"authentication failed\"";
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (ALICE.0, ALICE.1, "smtp", "", ok),
        // Cyrus SASL splits user@realm; the daemon joins them again (join-realm).
        ("alice", ALICE.1, "imap", "example.org", ok),
        (BOB.0, BOB.1, "smtp", "", ok),
        (ALICE.0, "wrong", "smtp", "", no),
        (NOBODY, "x", "smtp", "", no),
    ];
    for &(user, secret, service, realm, expected) in cases {
        let (out, err) = testsaslauthd(&socket, user, secret, service, realm);
        assert_eq!(
            out.trim(),
            expected,
            "{user} {service} {realm}: stderr {err}"
        );
    }
    // The remote is down: no answer at all (saslauthd has no "try later"; Cyrus SASL turns
    // a missing answer into SASL_FAIL, a temporary failure), logged as TEMPORARY.
    let (out, err) = testsaslauthd(&socket, ALICE.0, ALICE.1, "down", "");
    assert!(!out.contains("OK") && !out.contains("NO"), "{out} {err}");
    assert!(err.contains("size read failed"), "{err}");
    daemon.wait_log("saslauthd: down: login of alice@example.org TEMPORARY");

    // A fifth field sent after the answer (a newer client slow to send its address): the
    // daemon has half-closed and still reads, so the client's write succeeds and it then
    // reads the end of the stream, not a reset.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&counted(&[
        ALICE.0.as_bytes(),
        ALICE.1.as_bytes(),
        b"smtp",
        b"",
    ]))
    .unwrap();
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"\x00\x02OK");
    s.write_all(&counted(&[b"192.0.2.1;25"]))
        .expect("the daemon still reads after its answer");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).expect("an EOF, not a reset"), 0);
}

// ---------------------------------------------------------------------------------------
// nginx

fn start_nginx(dir: &Path, auth_http_port: u16, listen: u16) -> Program {
    let module = "/usr/lib/nginx/modules/ngx_mail_module.so";
    assert!(
        Path::new(module).exists(),
        "{module} missing: install Debian's nginx-light and libnginx-mod-mail (scripts/install-deps.sh)"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {module};\nworker_processes 1;\ndaemon off;\nmaster_process off;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log info;\n\
             events {{ worker_connections 64; }}\n\
             mail {{\n  auth_http 127.0.0.1:{auth_http_port}/nginx;\n  proxy_pass_error_message on;\n\
               server {{\n    listen 127.0.0.1:{listen};\n    protocol imap;\n  }}\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("nginx: {e}; install Debian's nginx-light (scripts/install-deps.sh)")
        });
    let nginx = Program(child);
    wait_port(listen, "nginx");
    nginx
}

#[test]
fn nginx_mail_proxy_logs_in_through_auth_http() {
    let s = servers();
    let auth_port = port_base() + AUTH_HTTP_NGINX;
    let imap_port = port_base() + NGINX_IMAP;
    let daemon = Daemon::start(
        "nginx",
        &config(&format!(
            "{}wait = \"1s\"\nmax-attempts = 2\nbackends = {{ imap = \"127.0.0.1:{}\" }}\n",
            section("auth-http", &format!("listen = \"127.0.0.1:{auth_port}\"")),
            s.port("RD_IMAP_PORT")
        )),
    );
    let _nginx = start_nginx(&daemon.dir, auth_port, imap_port);
    let cases: &[(&str, &str, &str)] = &[
        // nginx logs in at the backend (the test Dovecot) itself: its OK comes back.
        (ALICE.0, ALICE.1, "a OK"),
        (BOB.0, BOB.1, "a OK"),
        (
            ALICE.0,
            "wrong",
            "a NO [AUTHENTICATIONFAILED] Authentication failed.",
        ),
        (
            NOBODY,
            "x",
            "a NO [AUTHENTICATIONFAILED] Authentication failed.",
        ),
    ];
    for &(user, secret, expected) in cases {
        let got = imap_login(imap_port, user, secret);
        assert!(
            got.starts_with(expected),
            "{user}: {got}\ndaemon log:\n{}",
            daemon.log()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Dovecot Lua passdb (the script of contrib/)

/// A second, minimal Dovecot whose passdb is the shipped Lua script, pointed at the daemon.
fn start_lua_dovecot(dir: &Path, auth_http_port: u16, imap_port: u16) -> Program {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/dovecot-passdb.lua");
    let script = script.canonicalize().unwrap();
    assert!(
        Path::new("/usr/lib/dovecot/modules/auth/libauthdb_lua.so").exists(),
        "Dovecot's Lua passdb is missing: install Debian's dovecot-auth-lua (scripts/install-deps.sh)"
    );
    let base = dir.join("dovecot");
    std::fs::create_dir_all(&base).unwrap();
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {base}\nstate_dir = {base}\n\
             instance_name = rd-lua-{pid}\nlog_path = {dir}/dovecot.log\nssl = no\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\nauth_verbose = yes\n\
             auth_failure_delay = 0\n\
             import_environment = $import_environment REMOTE_DIRECTORY_URL=http://127.0.0.1:{auth_http_port}/dovecot\n\
             passdb {{\n  driver = lua\n  args = file={script}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n\
               inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n",
            base = base.display(),
            dir = dir.display(),
            pid = std::process::id(),
            script = script.display(),
        ),
    )
    .unwrap();
    let child = Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("dovecot: {e}; install Debian's dovecot-core"));
    let dovecot = Program(child);
    wait_port(imap_port, "the Lua Dovecot");
    dovecot
}

#[test]
fn dovecot_lua_passdb_asks_the_daemon() {
    let auth_port = port_base() + AUTH_HTTP_LUA;
    let imap_port = port_base() + LUA_DOVECOT_IMAP;
    let daemon = Daemon::start(
        "lua",
        &config(&section(
            "auth-http",
            &format!("listen = \"127.0.0.1:{auth_port}\""),
        )),
    );
    let _dovecot = start_lua_dovecot(&daemon.dir, auth_port, imap_port);
    let mut daemon = daemon;
    // Last: the daemon stopped, so the script's request fails: a temporary failure.
    let cases: &[(&str, &str, bool, &str)] = &[
        (ALICE.0, ALICE.1, true, "a OK"),
        (BOB.0, BOB.1, true, "a OK"),
        (ALICE.0, "wrong", true, "a NO [AUTHENTICATIONFAILED]"),
        (ALICE.0, ALICE.1, false, "a NO [UNAVAILABLE]"),
    ];
    for &(user, secret, daemon_runs, expected) in cases {
        if !daemon_runs {
            daemon.kill();
        }
        let got = imap_login(imap_port, user, secret);
        assert!(
            got.starts_with(expected),
            "{user}: {got}\ndaemon log:\n{}\ndovecot log:\n{}",
            daemon.log(),
            std::fs::read_to_string(daemon.path("dovecot.log")).unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------
// hostile local clients

/// Reads until the daemon closes the connection (or `limit`); what it sent.
fn read_until_closed(stream: &mut impl Read, limit: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(got),
        }
    }
    None
}

/// A Dovecot-protocol login on a fresh connection: the reply line to the AUTH.
fn dovecot_login(socket: &Path, user: &str, secret: &str) -> String {
    dovecot_auth(socket, 2, "imap", user, secret).expect("closed before the answer")
}

/// A Dovecot-protocol client announcing protocol 1.`minor`: the reply line to its AUTH, or
/// `None` when the daemon closed the connection without one.
fn dovecot_auth(
    socket: &Path,
    minor: u32,
    service: &str,
    user: &str,
    secret: &str,
) -> Option<String> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let resp = STANDARD.encode(format!("\0{user}\0{secret}"));
    s.write_all(
        format!("VERSION\t1\t{minor}\nCPID\t1\nAUTH\t1\tPLAIN\tservice={service}\tresp={resp}\n")
            .as_bytes(),
    )
    .unwrap();
    let mut r = BufReader::new(s);
    loop {
        let line = read_line(&mut r);
        if line.is_empty() {
            return None;
        }
        if line.starts_with("OK\t") || line.starts_with("FAIL\t") {
            return Some(line.trim_end().to_string());
        }
    }
}

/// Conversations a client abandons (Postfix, when the SMTP client cancels AUTH LOGIN with
/// "*", does not tell the auth server) never break the connection: the oldest are forgotten.
#[test]
fn dovecot_abandoned_conversations_do_not_break_the_connection() {
    let daemon = Daemon::start(
        "dovecot-abandoned",
        &config(&section("dovecot-auth", "socket = \"@DIR@/dovecot-auth\"")),
    );
    let mut s = UnixStream::connect(daemon.path("dovecot-auth")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut requests = String::from("VERSION\t1\t0\nCPID\t1\n");
    for id in 1..=40 {
        requests.push_str(&format!("AUTH\t{id}\tLOGIN\tservice=smtp\n"));
    }
    let resp = STANDARD.encode(format!("\0{}\0{}", ALICE.0, ALICE.1));
    requests.push_str(&format!("AUTH\t41\tPLAIN\tservice=smtp\tresp={resp}\n"));
    s.write_all(requests.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut conts = 0;
    loop {
        let line = read_line(&mut r);
        assert!(
            !line.is_empty(),
            "the daemon closed the connection after {conts} CONTs"
        );
        if line.starts_with("CONT\t") {
            conts += 1;
        } else if line.starts_with("OK\t") || line.starts_with("FAIL\t") {
            assert_eq!(line.trim_end(), "OK\t41\tuser=alice@example.org");
            break;
        }
    }
    assert_eq!(conts, 40);
}

/// How a temporary failure is said depends on the client's protocol version: 1.1 and later
/// have `code=temp_fail`; 1.0 clients (Postfix, Exim) read any FAIL as a wrong password, so
/// they get no answer at all (tested with Postfix above: 454).
#[test]
fn dovecot_temporary_failures_by_protocol_version() {
    let daemon = Daemon::start(
        "dovecot-versions",
        &config(&section("dovecot-auth", "socket = \"@DIR@/dovecot-auth\"")),
    );
    let socket = daemon.path("dovecot-auth");
    let cases: &[(u32, &str, &str, Option<&str>)] = &[
        (
            2,
            "down",
            ALICE.1,
            Some("FAIL\t1\tuser=alice@example.org\tcode=temp_fail\ttemp"),
        ),
        (
            1,
            "down",
            ALICE.1,
            Some("FAIL\t1\tuser=alice@example.org\tcode=temp_fail\ttemp"),
        ),
        (0, "down", ALICE.1, None),
        (0, "smtp", "wrong", Some("FAIL\t1\tuser=alice@example.org")),
        (0, "smtp", ALICE.1, Some("OK\t1\tuser=alice@example.org")),
    ];
    for &(minor, service, secret, expected) in cases {
        let got = dovecot_auth(&socket, minor, service, ALICE.0, secret);
        assert_eq!(
            got.as_deref(),
            expected,
            "protocol 1.{minor}, service {service}"
        );
    }
}

#[test]
fn hostile_local_clients_do_not_stop_the_others() {
    let auth_port = port_base() + AUTH_HTTP_HOSTILE;
    let daemon = Daemon::start(
        "hostile",
        &config(&format!(
            "max-clients = 2000\nrequest-timeout = \"1s\"\n{}{}{}",
            section("dovecot-auth", "socket = \"@DIR@/dovecot-auth\""),
            section("saslauthd", "socket = \"@DIR@/saslauthd\""),
            section("auth-http", &format!("listen = \"127.0.0.1:{auth_port}\"")),
        )),
    );
    let dovecot = daemon.path("dovecot-auth");
    let saslauthd = daemon.path("saslauthd");
    let healthy = || {
        assert!(
            dovecot_login(&dovecot, ALICE.0, ALICE.1).starts_with("OK\t1\tuser=alice@example.org")
        );
        let (out, err) = testsaslauthd(&saslauthd, ALICE.0, ALICE.1, "smtp", "");
        assert_eq!(out.trim(), "0: OK \"Success.\"", "{err}");
        let mut http = TcpStream::connect(("127.0.0.1", auth_port)).unwrap();
        let body = format!("{{\"user\":\"{}\",\"password\":\"{}\"}}", ALICE.0, ALICE.1);
        http.write_all(
            format!("POST /dovecot HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .as_bytes(),
        )
        .unwrap();
        let answer = read_until_closed(&mut http, Duration::from_secs(20)).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.0 200 OK"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    };
    healthy();

    // (what, socket or TCP, bytes sent, what the daemon answers before it closes)
    enum To<'a> {
        Unix(&'a Path),
        Tcp,
    }
    let big_line = [
        b"AUTH\t1\tPLAIN\tservice=imap\tresp=".to_vec(),
        vec![b'A'; 20_000],
    ]
    .concat();
    let huge_head = [b"GET / HTTP/1.0\r\nX: ".to_vec(), vec![b'a'; 20_000]].concat();
    let cases: Vec<(&str, To, Vec<u8>, &[u8])> = vec![
        (
            "dovecot: oversized line",
            To::Unix(&dovecot),
            big_line,
            b"VERSION",
        ),
        (
            "dovecot: garbage",
            To::Unix(&dovecot),
            b"\x00\xff\x16\x03garbage\n".to_vec(),
            b"VERSION",
        ),
        (
            "dovecot: half a line",
            To::Unix(&dovecot),
            b"AUTH\t1\tPL".to_vec(),
            b"VERSION",
        ),
        (
            "saslauthd: oversized field",
            To::Unix(&saslauthd),
            vec![0xff, 0xff, b'x'],
            b"\x00\x02NO",
        ),
        (
            "saslauthd: half a request",
            To::Unix(&saslauthd),
            counted(&[b"alice", b"pw"]),
            b"",
        ),
        (
            "auth-http: oversized head",
            To::Tcp,
            huge_head,
            b"HTTP/1.0 431",
        ),
        (
            "auth-http: garbage",
            To::Tcp,
            b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
            b"HTTP/1.0 400",
        ),
        (
            "auth-http: half a request",
            To::Tcp,
            b"GET /nginx HTTP/1.0\r\nAuth-User: a".to_vec(),
            b"",
        ),
    ];
    for (what, to, bytes, answer) in cases {
        let got = match to {
            To::Unix(path) => {
                let mut s = UnixStream::connect(path).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = s.write_all(&bytes);
                read_until_closed(&mut s, Duration::from_secs(5))
            }
            To::Tcp => {
                let mut s = TcpStream::connect(("127.0.0.1", auth_port)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let _ = s.write_all(&bytes);
                read_until_closed(&mut s, Duration::from_secs(5))
            }
        };
        let got = got.unwrap_or_else(|| panic!("{what}: the daemon did not close within 5 s"));
        assert!(
            got.starts_with(answer),
            "{what}: {:?}",
            String::from_utf8_lossy(&got)
        );
        healthy();
    }

    // 500 idle connections on each socket in turn: the others are still answered.
    for path in [&dovecot, &saslauthd] {
        let idle: Vec<UnixStream> = (0..500)
            .map(|i| {
                UnixStream::connect(path)
                    .unwrap_or_else(|e| panic!("{}: connection {i}: {e}", path.display()))
            })
            .collect();
        healthy();
        drop(idle);
    }
    // Closed with a reset: closed normally, the client side would keep 500 ports of the
    // ephemeral range in TIME-WAIT for a minute, and the fixed test ports of a high
    // RD_PORT_BASE lie in that range (a later listener there would fail to bind).
    let idle: Vec<TcpStream> = (0..500)
        .map(|i| {
            let s = TcpStream::connect(("127.0.0.1", auth_port))
                .unwrap_or_else(|e| panic!("auth-http connection {i}: {e}"));
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            s
        })
        .collect();
    healthy();
    drop(idle);
    let log = daemon.log();
    assert!(!log.contains(ALICE.1), "a password in the log:\n{log}");
}
