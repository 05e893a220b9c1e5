//! The connection pool seen from the server side: the bound on connections open at once,
//! waiting for a free slot and giving up after `pool.timeout.wait`, and idle connections
//! counting toward the bound.

mod peer;

use peer::{open, CDirectory, ImapServer, SmtpServer};
use remote_directory::ffi::directory_result::*;
use remote_directory::Kind;
use std::time::{Duration, Instant};

const ALICE: &str = "alice@example.org";

#[test]
fn pool_of_two_never_opens_more_than_two_connections_for_eight_threads() {
    let mut server = SmtpServer::smtp(&["PIPELINING"]);
    server.rcpt_delay = Duration::from_millis(100);
    let peer = server.start();
    let dir = open("smtp", &peer, &["pool.max-connections = 2"]);
    let addresses: Vec<String> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                ALICE.to_string()
            } else {
                format!("nobody{i}@example.org")
            }
        })
        .collect();
    let start = Instant::now();
    let answers: Vec<Result<(), Kind>> = std::thread::scope(|s| {
        let handles: Vec<_> = addresses
            .iter()
            .map(|a| {
                let dir = &dir;
                s.spawn(move || dir.rcpt(a).map_err(|e| e.kind()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = start.elapsed();
    for (address, answer) in addresses.iter().zip(&answers) {
        let expected = if address == ALICE {
            Ok(())
        } else {
            Err(Kind::Rejected)
        };
        assert_eq!(answer, &expected, "{address}");
    }
    // 8 probes of 100 ms over 2 connections cannot take less than 400 ms.
    assert!(took >= Duration::from_millis(390), "took {took:?}");
    assert!(dir.open_connections() <= 2);
    drop(dir);
    peer.wait_all_ended();
    assert!(peer.max_concurrent() <= 2, "max {}", peer.max_concurrent());
    let all = peer.all_commands();
    assert!(all.len() <= 2, "{all:?}");
    let rcpts: usize = all
        .iter()
        .map(|c| c.iter().filter(|l| l.starts_with("RCPT TO:")).count())
        .sum();
    assert_eq!(rcpts, 8, "{all:?}");
    peer.assert_clean();
}

#[test]
fn pool_wait_timeout_gives_pool_timeout_to_the_second_caller_after_200ms() {
    let mut server = SmtpServer::smtp(&["PIPELINING"]);
    // The first caller's RCPT is never answered within its timeout.
    server.rcpt_delay = Duration::from_secs(5);
    let peer = server.start();
    let extra = [
        "pool.max-connections = 1",
        "pool.timeout.wait = \"200ms\"",
        "timeout = \"1500ms\"",
    ];
    let dir = open("smtp", &peer, &extra);
    let c = CDirectory::open("smtp", &peer, &extra);
    std::thread::scope(|s| {
        let first = s.spawn(|| dir.rcpt(ALICE).map_err(|e| e.kind()));
        let first_c = s.spawn(|| c.rcpt(ALICE).0);
        // Both handles' only connection is busy once the peer holds both RCPTs.
        assert!(peer.wait_until(Duration::from_secs(5), |p| {
            (0..p.connections())
                .filter(|&i| p.commands(i).iter().any(|l| l.starts_with("RCPT")))
                .count()
                == 2
        }));
        let start = Instant::now();
        let e = dir.rcpt(ALICE).unwrap_err();
        let took = start.elapsed();
        assert_eq!(e.kind(), Kind::PoolTimeout, "{e}");
        assert!(
            took >= Duration::from_millis(180) && took < Duration::from_millis(1000),
            "took {took:?}"
        );
        let start = Instant::now();
        let (r, last) = c.rcpt(ALICE);
        let took = start.elapsed();
        assert_eq!(r, DIRECTORY_RESULT_TEMPORARY, "{last}");
        assert!(last.contains("pool.timeout.wait"), "{last}");
        assert!(took < Duration::from_millis(1000), "took {took:?}");
        assert_eq!(first.join().unwrap(), Err(Kind::Timeout));
        assert_eq!(first_c.join().unwrap(), DIRECTORY_RESULT_TEMPORARY);
    });
    drop((dir, c));
    peer.wait_all_ended();
    // The callers that timed out in the pool sent nothing.
    assert_eq!(peer.connections(), 2);
    for commands in peer.all_commands() {
        assert_eq!(
            commands,
            [
                "EHLO client.test",
                "MAIL FROM:<>",
                "RCPT TO:<alice@example.org>"
            ]
        );
    }
}

#[test]
fn pool_idle_connection_after_an_auth_error_counts_toward_max_connections() {
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR");
    server.delay = Duration::from_millis(800);
    let peer = server.start();
    let dir = open(
        "imap",
        &peer,
        &["pool.max-connections = 1", "pool.timeout.wait = \"200ms\""],
    );
    assert_eq!(dir.auth(ALICE, "wrong").unwrap_err().kind(), Kind::Rejected);
    assert_eq!((dir.open_connections(), dir.idle_connections()), (1, 1));
    std::thread::scope(|s| {
        // Takes the idle connection and waits 800 ms for its answer.
        let first = s.spawn(|| dir.auth(ALICE, "wrong").map_err(|e| e.kind()));
        assert!(peer.wait_until(Duration::from_secs(5), |p| p.commands(0).len() == 3));
        assert_eq!((dir.open_connections(), dir.idle_connections()), (1, 0));
        // The lent-out connection still counts: no second connection, a pool timeout.
        let start = Instant::now();
        let e = dir.auth(ALICE, "wrong").unwrap_err();
        assert_eq!(e.kind(), Kind::PoolTimeout, "{e}");
        assert!(start.elapsed() < Duration::from_millis(700));
        assert_eq!(first.join().unwrap(), Err(Kind::Rejected));
    });
    assert_eq!((dir.open_connections(), dir.idle_connections()), (1, 1));
    drop(dir);
    peer.wait_all_ended();
    assert_eq!(peer.connections(), 1);
    assert_eq!(peer.max_concurrent(), 1);
    let commands = peer.commands(0);
    assert_eq!(commands.len(), 4, "{commands:?}");
    assert_eq!(commands[3], "a4 LOGOUT");
    peer.assert_clean();
}
