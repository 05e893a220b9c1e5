//! rdbench-daemon: what remote-directoryd costs and saves (issue 9), against the real
//! Dovecot of the benchmark's servers. Run by bench/daemon.sh, which starts the servers and
//! writes the tables.
//!
//! 1. Overhead per call through the daemon against in process, same warm directory: a cached
//!    login (cache.auth-ttl) and a warm recipient probe (LMTP, pooled connection).
//! 2. Process per login (directory-check, one process each), right password, with
//!    cache.auth-ttl: straight to the server against through the daemon.
//! 3. The remote's connection count under 200 concurrent process-per-login clients, with
//!    and without the daemon (the server's ends sampled with ss(8), the daemon's exactly).

mod cpu;

use cpu::thread_cpu;
use remote_directory::Directory;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALICE: (&str, &str) = ("alice@example.org", "alice-pass-1");

struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    fn read(path: &str) -> Env {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env { vars }
    }

    fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the env file"))
    }
}

fn directory(env: &Env, name: &str, kind: &str, port_key: &str, extra: &str) -> String {
    format!(
        "[directory.{name}]\ntype = \"{kind}\"\naddress = \"localhost\"\nport = {}\ntimeout = \"10s\"\n\
         tls.ca-file = \"{}\"\nlookup.domains = [\"example.org\"]\n{extra}\n",
        env.get(port_key),
        env.get("RD_CA")
    )
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(binary: &Path, config: &Path, socket: &Path) -> Daemon {
        let _ = std::fs::remove_file(socket);
        let child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .expect("start remote-directoryd");
        let until = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < until, "remote-directoryd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU time another process has used so far (user and system, every thread), from
/// /proc/PID/stat; clock-tick resolution (10 ms), so measure long stretches.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after = after_name(&stat);
    let field = |n: usize| -> u64 { after.split(' ').nth(n).unwrap().parse().unwrap() };
    // utime and stime are fields 14 and 15 of the line; `after` starts at field 3.
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos((field(11) + field(12)) * 1_000_000_000 / hz)
}

/// A /proc/PID/stat line from field 3 (the state) on: past the command name, which is in
/// parentheses and may hold spaces.
fn after_name(stat: &str) -> &str {
    stat.rfind(')')
        .map_or("", |i| stat.get(i + 2..).unwrap_or(""))
}

/// How long each cell of the many-threads table runs.
const CONCURRENT: Duration = Duration::from_secs(3);

/// Calls per second of `threads` threads calling `call` on `dir` for [`CONCURRENT`].
fn calls_per_second(threads: usize, dir: &Directory, call: fn(&Directory)) -> f64 {
    let stop = AtomicBool::new(false);
    let calls = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    call(dir);
                    n += 1;
                }
                calls.fetch_add(n, Ordering::SeqCst);
            });
        }
        std::thread::sleep(CONCURRENT);
        stop.store(true, Ordering::SeqCst);
    });
    calls.load(Ordering::SeqCst) as f64 / CONCURRENT.as_secs_f64()
}

/// Median and 99th percentile of `samples`, in microseconds.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// `n` calls of `call`, one after the other, after `warm` unmeasured ones, with the CPU
/// time this thread spent in them.
fn time_calls(n: usize, warm: usize, mut call: impl FnMut()) -> (Vec<Duration>, Duration) {
    for _ in 0..warm {
        call();
    }
    let cpu = thread_cpu();
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            call();
            t.elapsed()
        })
        .collect();
    (times, thread_cpu() - cpu)
}

/// Established TCP connections with 127.0.0.1:`port` now, as ss(8) lists them from the
/// kernel's socket table, counted at one `end`: `"dport"` the clients' ends, `"sport"` the
/// server's. A connection a client has closed leaves ESTABLISHED on its side at once, on
/// the server's side only when the FIN has arrived.
fn established(end: &str, port: u16) -> usize {
    Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( {end} = :{port} )"),
        ])
        .output()
        .map_or(0, |o| o.stdout.iter().filter(|&&b| b == b'\n').count())
}

/// The daemon's established TCP connections to `port`, exactly: the daemon is stopped
/// (SIGSTOP, and every thread seen stopped) while its descriptor table and socket table are
/// read, then continued. ss(8) reads the kernel's table as a dump that runs while sockets
/// close and open, so it can count a closed connection and its replacement both.
fn daemon_connections_to(pid: u32, port: u16) -> usize {
    let stopped = |stat: &str| after_name(stat).starts_with(['T', 't']);
    let threads = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // SAFETY: kill(2) with a process id this program started and a constant signal.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let until = Instant::now() + Duration::from_millis(100);
    while !threads(pid).iter().all(|t| stopped(t)) && Instant::now() < until {
        std::thread::yield_now();
    }
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy();
                    Some(
                        link.strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tables: String = ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .collect();
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    let established_to_port = |fields: &[&str]| {
        fields[3] == "01"
            && fields[2]
                .rsplit(':')
                .next()
                .is_some_and(|p| u16::from_str_radix(p, 16) == Ok(port))
    };
    tables
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && established_to_port(f) && sockets.contains(&f[9].to_string()))
        .count()
}

/// One `directory-check auth` process per login; its wall time and whether it said OK.
fn login_process(directory_check: &Path, config: &Path, directory: &str) -> (Duration, bool) {
    let t = Instant::now();
    let mut child = Command::new(directory_check)
        .args(["-c"])
        .arg(config)
        .args(["-d", directory, "auth", ALICE.0])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run directory-check");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ALICE.1.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    (t.elapsed(), status.success())
}

/// What a row of process-per-login measured.
struct Logins {
    /// Successful logins per second.
    rate: f64,
    median_us: f64,
    p99_us: f64,
    /// Logins that did not come back OK (TEMPORARY: the server refused the connection).
    failed: usize,
    /// Most connections open at once to the server: (clients' ends, server's ends).
    peak: (usize, usize),
}

/// `clients` threads each running `per_client` login processes.
fn concurrent_logins(
    directory_check: &Path,
    config: &Path,
    directory: &'static str,
    clients: usize,
    per_client: usize,
    imap_port: u16,
    daemon_pid: Option<u32>,
) -> Logins {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            for round in 0usize.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let clients = match daemon_pid {
                    None => established("dport", imap_port),
                    // Stopping the daemon costs it time: every 25 ms only.
                    Some(pid) if round % 5 == 0 => daemon_connections_to(pid, imap_port),
                    Some(_) => 0,
                };
                let server = established("sport", imap_port);
                peak.0.fetch_max(clients, Ordering::SeqCst);
                peak.1.fetch_max(server, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (dc, cfg) = (directory_check.to_path_buf(), config.to_path_buf());
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| login_process(&dc, &cfg, directory))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(Duration, bool)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    let rate = (results.len() - failed) as f64 / elapsed.as_secs_f64();
    let (median_us, p99_us) = quantiles(results.into_iter().map(|(d, _)| d).collect());
    Logins {
        rate,
        median_us,
        p99_us,
        failed,
        peak: (peak.0.load(Ordering::SeqCst), peak.1.load(Ordering::SeqCst)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let env = Env::read(&arg("--env"));
    let daemon_bin = PathBuf::from(arg("--daemon"));
    let directory_check = PathBuf::from(arg("--directory-check"));
    let work = PathBuf::from(arg("--dir"));
    let calls: usize = arg("--calls").parse().expect("--calls");
    let logins: usize = arg("--logins").parse().expect("--logins");
    let imap_port: u16 = env.get("RD_IMAP_PORT").parse().unwrap();
    std::fs::create_dir_all(&work).unwrap();

    // The daemon's file and the in-process directories are the same text.
    let max_connections = 4;
    let pool = format!("pool.max-connections = {max_connections}\npool.timeout.wait = \"60s\"");
    let served = format!(
        "{}\n{}\n{}",
        directory(&env, "nocache", "imap", "RD_IMAP_PORT", &pool),
        directory(
            &env,
            "imap",
            "imap",
            "RD_IMAP_PORT",
            &format!("cache.auth-ttl = \"10m\"\n{pool}")
        ),
        // A warm probe, not a cache hit: the cache is on by default.
        directory(
            &env,
            "lmtp",
            "lmtp",
            "RD_LMTP_PORT",
            "limits.rcpt = 100000\ncache.size = false"
        )
    );
    let socket = work.join("socket");
    let daemon_config = work.join("daemon.toml");
    std::fs::write(
        &daemon_config,
        format!(
            "{served}\n[daemon]\nsocket = \"{}\"\nmax-clients = 1024\n",
            socket.display()
        ),
    )
    .unwrap();
    let direct_config = work.join("direct.toml");
    std::fs::write(&direct_config, &served).unwrap();
    let client_config = work.join("client.toml");
    std::fs::write(
        &client_config,
        format!(
            "[directory.imap]\ntype = \"daemon\"\nsocket = \"{0}\"\n\n[directory.lmtp]\ntype = \"daemon\"\nsocket = \"{0}\"\n\n\
             [directory.nocache]\ntype = \"daemon\"\nsocket = \"{0}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&daemon_bin, &daemon_config, &socket);
    let daemon_pid = daemon.child.id();

    println!("#### Through the daemon against in process, one thread, {calls} calls each\n");
    println!("| call | in process: median / p99 (us) | through the daemon: median / p99 (us) | overhead of the median | ratio of medians | CPU per call (us): in process / through the daemon, caller + daemon |");
    println!("|---|---|---|---|---|---|");
    let local_imap = Directory::open(&direct_config, Some("imap")).unwrap();
    let remote_imap = Directory::open(&client_config, Some("imap")).unwrap();
    let local_lmtp = Directory::open(&direct_config, Some("lmtp")).unwrap();
    let remote_lmtp = Directory::open(&client_config, Some("lmtp")).unwrap();
    // Interleaved in blocks, so that load from elsewhere on the machine hits both alike.
    let mut rows = Vec::new();
    for (what, local, remote, call) in [
        (
            "auth, cached (cache.auth-ttl)",
            &local_imap,
            &remote_imap,
            (|d: &Directory| d.auth(ALICE.0, ALICE.1).unwrap()) as fn(&Directory),
        ),
        (
            "rcpt, warm (LMTP, pooled connection)",
            &local_lmtp,
            &remote_lmtp,
            |d: &Directory| d.rcpt(ALICE.0).unwrap(),
        ),
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut a_cpu, mut b_cpu, mut daemon_cpu) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..10 {
            let (times, cpu) = time_calls(calls / 10, 20, || call(local));
            a.extend(times);
            a_cpu += cpu;
            let before = process_cpu(daemon_pid);
            let (times, cpu) = time_calls(calls / 10, 20, || call(remote));
            daemon_cpu += process_cpu(daemon_pid) - before;
            b.extend(times);
            b_cpu += cpu;
        }
        let per_call = |d: Duration| d.as_secs_f64() * 1e6 / (calls / 10 * 10) as f64;
        let ((am, ap), (bm, bp)) = (quantiles(a), quantiles(b));
        rows.push(format!(
            "| {what} | {am:.1} / {ap:.1} | {bm:.1} / {bp:.1} | {:+.1} us | {:.2}x | {:.1} / {:.1} + {:.1} |",
            bm - am,
            bm / am,
            per_call(a_cpu),
            per_call(b_cpu),
            per_call(daemon_cpu),
        ));
    }
    for r in rows {
        println!("{r}");
    }

    // Many callers at once: polling callers must not take the CPU the daemon needs.
    println!(
        "\n#### Many threads at once, {} s per cell: calls per second\n",
        CONCURRENT.as_secs()
    );
    println!("| call | threads | in process | through the daemon | ratio |");
    println!("|---|---|---|---|---|");
    for (what, local, remote, call) in [
        (
            "auth, cached",
            &local_imap,
            &remote_imap,
            (|d: &Directory| d.auth(ALICE.0, ALICE.1).unwrap()) as fn(&Directory),
        ),
        ("rcpt, warm", &local_lmtp, &remote_lmtp, |d: &Directory| {
            d.rcpt(ALICE.0).unwrap()
        }),
    ] {
        for threads in [8, 64] {
            let (a, b) = (
                calls_per_second(threads, local, call),
                calls_per_second(threads, remote, call),
            );
            println!("| {what} | {threads} | {a:.0} | {b:.0} | {:.2}x |", b / a);
        }
    }

    println!("\n#### Process per login (directory-check auth, right password), {logins} logins per row\n");
    println!("| way | clients at once | OK logins/s | median (ms) | p99 (ms) | failed | most connections open at once: clients' ends (the daemon's, exact) / server's ends (ss) |");
    println!("|---|---|---|---|---|---|---|");
    let mut rates = HashMap::new();
    for (way, config, directory, pid) in [
        ("straight to the server", &direct_config, "imap", None),
        (
            "through the daemon",
            &client_config,
            "imap",
            Some(daemon_pid),
        ),
        (
            "through the daemon, no cache",
            &client_config,
            "nocache",
            Some(daemon_pid),
        ),
    ] {
        for clients in [1usize, 200] {
            let per_client = (logins / clients).max(1);
            let l = concurrent_logins(
                &directory_check,
                config,
                directory,
                clients,
                per_client,
                imap_port,
                pid,
            );
            rates.insert((way, clients), l.rate);
            println!(
                "| {way} | {clients} | {:.0} | {:.2} | {:.2} | {} of {} | {} / {} |",
                l.rate,
                l.median_us / 1000.0,
                l.p99_us / 1000.0,
                l.failed,
                clients * per_client,
                l.peak.0,
                l.peak.1
            );
        }
    }
    println!(
        "\nThrough the daemon (cache.auth-ttl on the daemon's directory), one client at a time: {:.1}x the \
         logins per second of straight to the server; 200 at once: {:.1}x. The daemon's directories have \
         pool.max-connections = {max_connections}.",
        rates[&("through the daemon", 1)] / rates[&("straight to the server", 1)],
        rates[&("through the daemon", 200)] / rates[&("straight to the server", 200)],
    );
}
