//! The daemon as a system service: `--check`, its sockets (mode, group, a stale file
//! replaced, a live one never taken over), SIGTERM with a call in flight, and no secret in
//! its log.

mod common;

use common::*;
use remote_directory::{Directory, Kind};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

fn config(extra_daemon: &str) -> String {
    format!(
        "{}\n{}\n[daemon]\nsocket = \"@DIR@/socket\"\n{extra_daemon}\n",
        directory("imap", "imap", "RD_IMAP_PORT", ""),
        directory("lmtp", "lmtp", "RD_LMTP_PORT", ""),
    )
}

#[test]
fn check_validates_the_whole_file() {
    let dir = temp_dir("check");
    let cases: Vec<(String, i32, &str)> = vec![
        (config(""), 0, ": OK (2 directories, 1 sockets)"),
        (
            format!("{}[directory.x\n", config("")),
            5,
            "remote-directory.toml: line ",
        ),
        (config("sockt = \"/x\""), 5, "daemon.sockt: unknown key"),
        (
            config("policy.listen = \"127.0.0.1:1\""),
            5,
            "daemon.policy.directory: missing",
        ),
        (
            config("").replace("type = \"lmtp\"", "type = \"lmtp\"\nlimits.rcpt = 0"),
            5,
            "directory.lmtp.limits.rcpt: 0 is out of range",
        ),
        (
            format!(
                "{}[directory.loop]\ntype = \"daemon\"\nsocket = \"/s\"\n",
                config("")
            ),
            5,
            "directory.loop.type: \"daemon\" is for the daemon's clients",
        ),
    ];
    for (text, code, expected) in cases {
        let path = dir.join("remote-directory.toml");
        std::fs::write(&path, text.replace("@DIR@", dir.to_str().unwrap())).unwrap();
        let (got, out, err) = run_binary(&["--check", "-c", path.to_str().unwrap()]);
        assert_eq!(got, code, "{expected}: stdout {out} stderr {err}");
        assert!(
            out.contains(expected) || err.contains(expected),
            "{expected}: stdout {out} stderr {err}"
        );
        assert!(!dir.join("socket").exists(), "--check binds nothing");
    }
    let (code, _, err) = run_binary(&["--bogus"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sockets_get_their_mode_and_group_and_a_live_one_is_never_taken_over() {
    let daemon = Daemon::start(
        "sockets",
        &config("socket-group = \"mail\"\nsocketmap.socket = \"@DIR@/socketmap\"\nsocketmap.socket-mode = \"0600\"\n"),
    );
    let own = std::fs::metadata(daemon.path("socket")).unwrap();
    assert!(own.file_type().is_socket());
    assert_eq!(
        own.permissions().mode() & 0o777,
        0o660,
        "owner and group only by default"
    );
    assert_eq!(own.gid(), 8, "group mail");
    let map = std::fs::metadata(daemon.path("socketmap")).unwrap();
    assert_eq!(map.permissions().mode() & 0o777, 0o600);
    assert_eq!(map.gid(), 8);

    // A second daemon on the same file: refuses with a clear error, the first goes on.
    let (code, _, err) = run_binary(&["-c", daemon.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "another process is listening on it (a second remote-directoryd?); not taking it over"
        ),
        "{err}"
    );
    let client = Directory::open_str(
        &client_config("lmtp", &daemon.path("socket"), "lmtp", ""),
        None,
    )
    .unwrap();
    client.rcpt(ALICE.0).unwrap();
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_left_alone() {
    let dir = temp_dir("stale");
    // What a daemon killed with SIGKILL leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap());
    let daemon = Daemon::start_in(dir.clone(), &config(""));
    let client = Directory::open_str(
        &client_config("lmtp", &daemon.path("socket"), "lmtp", ""),
        None,
    )
    .unwrap();
    client.rcpt(ALICE.0).unwrap();
    drop(daemon);

    let other = temp_dir("not-a-socket");
    std::fs::write(other.join("socket"), "precious").unwrap();
    let path = other.join("remote-directory.toml");
    std::fs::write(&path, config("").replace("@DIR@", other.to_str().unwrap())).unwrap();
    let (code, _, err) = run_binary(&["-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("exists and is not a socket; not replacing it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("socket")).unwrap(),
        "precious"
    );
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn sigterm_lets_the_call_in_flight_finish_then_exits_0() {
    let mut daemon = Daemon::start("term", &config("shutdown-timeout = \"5s\"\n"));
    let socket = daemon.path("socket");
    let client = Directory::open_str(&client_config("imap", &socket, "imap", ""), None).unwrap();
    // Dovecot answers a wrong password after about half a second: a call in flight.
    let call =
        std::thread::spawn(move || client.auth(ALICE.0, "wrong-password").map_err(|e| e.kind()));
    std::thread::sleep(Duration::from_millis(150));
    let stopped = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        call.join().unwrap(),
        Err(Kind::Rejected),
        "the server's answer, not a cut"
    );
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(6)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(stopped.elapsed() < Duration::from_secs(6));
    assert!(!socket.exists(), "the socket file is removed");
    daemon.wait_log("stopped");
}

#[test]
fn no_secret_reaches_the_log() {
    let daemon = Daemon::start("secrets", &config("request-timeout = \"500ms\"\n"));
    let secret = "hunter2-Sup3r-secret";
    let client = Directory::open_str(
        &client_config("imap", &daemon.path("socket"), "imap", ""),
        None,
    )
    .unwrap();
    assert_eq!(
        client.auth(ALICE.0, secret).unwrap_err().kind(),
        Kind::Rejected
    );
    client.auth(ALICE.0, ALICE.1).unwrap();
    // A request cut in the middle of its secret, and a malformed one around a secret.
    let request = remote_directory::wire::encode_request(&remote_directory::wire::Request {
        directory: "imap",
        call: remote_directory::wire::Call::Auth {
            user: ALICE.0,
            secret,
            client_ip: None,
        },
    });
    let mut s = std::os::unix::net::UnixStream::connect(daemon.path("socket")).unwrap();
    use std::io::{Read, Write};
    s.write_all(&request[..request.len() - 4]).unwrap();
    let mut buf = [0u8; 8];
    let _ = s.read(&mut buf);
    let mut bad = request.to_vec();
    bad.push(0);
    bad[3] += 1; // one trailing byte: malformed
    let mut s = std::os::unix::net::UnixStream::connect(daemon.path("socket")).unwrap();
    s.write_all(&bad).unwrap();
    let _ = s.read(&mut buf);
    daemon.wait_log("trailing bytes");
    let log = daemon.log();
    for leak in [secret, ALICE.1] {
        assert!(!log.contains(leak), "{leak} in the log:\n{log}");
    }
}
