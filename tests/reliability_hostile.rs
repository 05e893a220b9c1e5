//! Hostile traffic under 64 threads: mixed client addresses and users guessing passwords
//! against a scripted IMAP server while real users log in. Budgets are exact (counted in what
//! the server received, not in what the client believes), every forwarded connection carries
//! one client's logins only, real users are never throttled, and no descriptor leaks.

mod peer;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use peer::{open, ImapServer};
use remote_directory::Kind;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const THREADS: usize = 64;
const CALLS_PER_THREAD: usize = 60;
const GUESSING_ADDRESSES: usize = 16;
const CLIENT_BUDGET: usize = 7;
const GUESSED_USERS: usize = 24;
const USER_BUDGET: usize = 5;
const BUDGETED_USERS: usize = 8;

/// The tests count the process's descriptors: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The user of an `aN AUTHENTICATE PLAIN <base64>` line.
fn login_user(command: &str) -> Option<String> {
    let b64 = command.split_once(" AUTHENTICATE PLAIN ")?.1;
    let plain = BASE64.decode(b64).ok()?;
    let mut fields = plain.split(|&b| b == 0);
    let (_, user) = (fields.next()?, fields.next()?);
    Some(String::from_utf8_lossy(user).into_owned())
}

/// The address of an `aN ID ("x-originating-ip" "...")` line.
fn id_address(command: &str) -> Option<&str> {
    let rest = command.split_once(" ID (\"x-originating-ip\" \"")?.1;
    rest.split_once('"').map(|(ip, _)| ip)
}

#[test]
fn sixty_four_threads_of_guessers_and_real_users_keep_exact_budgets_and_bound_connections() {
    let _serial = serial();
    let fds_before = open_fds();
    let mut server = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR ID");
    let real_users: Vec<(String, String)> = (0..8)
        .map(|i| (format!("real{i}@example.org"), format!("real-pass-{i}")))
        .collect();
    for (u, p) in &real_users {
        server = server.user(u, p);
    }
    let peer = server.start();
    let dir = open(
        "imap",
        &peer,
        &[
            "forward.client-ip = true",
            "pool.max-connections = 12",
            &format!("throttle.client = \"{CLIENT_BUDGET}/10m\""),
            // Thousands of throttled answers: no wait before each.
            "throttle.delay = \"1ms\"",
        ],
    );
    let throttled = AtomicUsize::new(0);
    let real_ok = AtomicUsize::new(0);
    let unexpected = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (dir, throttled, real_ok, unexpected, real_users) =
                (&dir, &throttled, &real_ok, &unexpected, &real_users);
            s.spawn(move || {
                for call in 0..CALLS_PER_THREAD {
                    let n = t * CALLS_PER_THREAD + call;
                    if n % 8 == 0 {
                        // A real user from an address of its own: always accepted.
                        let (user, pass) = &real_users[n / 8 % real_users.len()];
                        let ip: IpAddr = format!("198.51.100.{}", n / 8 % 200 + 1).parse().unwrap();
                        match dir.auth_from(user, pass, Some(ip)) {
                            Ok(()) => real_ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                unexpected.lock().unwrap().push(format!("real user: {e}"));
                                0
                            }
                        };
                        continue;
                    }
                    // Guesses: the user name carries the address, for the binding check.
                    // The guess's index among guesses, so every address gets its share.
                    let g = n - n / 8 - 1;
                    let address = g % GUESSING_ADDRESSES;
                    let ip: IpAddr = format!("203.0.113.{}", address + 1).parse().unwrap();
                    let user = format!("g{}-a{}@example.org", g % GUESSED_USERS, address + 1);
                    match dir.auth_from(&user, "guess", Some(ip)) {
                        Err(e) if e.kind() == Kind::Throttled => {
                            throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == Kind::Rejected => {}
                        other => unexpected.lock().unwrap().push(format!("guess: {other:?}")),
                    }
                }
            });
        }
    });
    assert_eq!(unexpected.into_inner().unwrap(), Vec::<String>::new());
    drop(dir);
    peer.wait_all_ended();
    // What the server received, connection by connection.
    let mut refused_per_address: HashMap<String, usize> = HashMap::new();
    let mut logins = 0;
    for commands in peer.all_commands() {
        let ids: Vec<&str> = commands.iter().filter_map(|c| id_address(c)).collect();
        assert_eq!(ids.len(), 1, "one ID per connection: {commands:?}");
        let id = ids[0];
        for user in commands.iter().filter_map(|c| login_user(c)) {
            logins += 1;
            if user.starts_with("real") {
                assert!(id.starts_with("198.51.100."), "{user} on {id}'s connection");
                continue;
            }
            let address = user
                .rsplit_once("-a")
                .unwrap()
                .1
                .trim_end_matches("@example.org");
            assert_eq!(
                id,
                format!("203.0.113.{address}"),
                "{user} sent on the connection of {id}"
            );
            *refused_per_address.entry(id.to_string()).or_default() += 1;
        }
    }
    assert!(refused_per_address.len() <= GUESSING_ADDRESSES);
    for (address, n) in &refused_per_address {
        assert!(
            *n <= CLIENT_BUDGET,
            "{address}: {n} refusals reached the server"
        );
    }
    let guesses = THREADS * CALLS_PER_THREAD - THREADS * CALLS_PER_THREAD / 8;
    let refused: usize = refused_per_address.values().sum();
    assert_eq!(
        refused + throttled.load(Ordering::Relaxed),
        guesses,
        "every guess either reached the server or was throttled"
    );
    assert_eq!(
        refused,
        GUESSING_ADDRESSES * CLIENT_BUDGET,
        "each address used its whole budget, no more"
    );
    assert_eq!(
        real_ok.load(Ordering::Relaxed),
        THREADS * CALLS_PER_THREAD / 8
    );
    assert_eq!(logins, refused + real_ok.load(Ordering::Relaxed));
    drop(peer);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

#[test]
fn sixty_four_threads_guessing_eight_users_reach_the_server_exactly_the_user_budget() {
    let _serial = serial();
    let fds_before = open_fds();
    let peer = ImapServer::new("IMAP4rev1 AUTH=PLAIN SASL-IR").start();
    let dir = open(
        "imap",
        &peer,
        &[
            "pool.max-connections = 8",
            &format!("throttle.user = \"{USER_BUDGET}/10m\""),
            "throttle.delay = \"1ms\"",
        ],
    );
    let throttled = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (dir, throttled) = (&dir, &throttled);
            s.spawn(move || {
                for call in 0..20 {
                    let user = format!("victim{}@example.org", (t + call) % BUDGETED_USERS);
                    match dir.auth(&user, &format!("guess-{t}-{call}")) {
                        Err(e) if e.kind() == Kind::Throttled => {
                            assert!(e.to_string().contains(&format!("user '{user}'")), "{e}");
                            throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => assert_eq!(e.kind(), Kind::Rejected, "{e}"),
                        Ok(()) => panic!("a guess was accepted"),
                    }
                }
            });
        }
    });
    drop(dir);
    peer.wait_all_ended();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for user in peer
        .all_commands()
        .concat()
        .iter()
        .filter_map(|c| login_user(c))
    {
        *per_user.entry(user).or_default() += 1;
    }
    assert_eq!(per_user.len(), BUDGETED_USERS);
    for (user, n) in &per_user {
        assert_eq!(*n, USER_BUDGET, "{user}");
    }
    assert_eq!(
        throttled.into_inner(),
        THREADS * 20 - BUDGETED_USERS * USER_BUDGET
    );
    drop(peer);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}
