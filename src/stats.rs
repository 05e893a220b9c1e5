//! Counters and histograms of this process's calls, by directory name: what
//! remote-directoryd serves on `/metrics` and what `directory_metrics` gives a C program.
//!
//! Counters live as long as the process and are shared by every handle of the same name, so
//! reopening a directory (the daemon's SIGHUP) continues them instead of starting at zero, as
//! Prometheus expects. The hot path is a few relaxed atomic additions; only the per-server
//! tables take a lock.

use crate::error::Result;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The operations, as the `op` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Auth,
    Rcpt,
    IsLocalDomain,
}

const OPS: [Op; 3] = [Op::Auth, Op::Rcpt, Op::IsLocalDomain];

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Auth => "auth",
            Op::Rcpt => "rcpt",
            Op::IsLocalDomain => "is_local_domain",
        }
    }
}

/// The `result` label, indexed by the C result code (`directory_result`).
const RESULTS: [&str; 7] = [
    "ok",
    "rejected",
    "temporary",
    "unsupported",
    "invalid_input",
    "config",
    "internal",
];

/// What happened to a connection to a remote server (`event` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A new connection was set up (TCP, TLS, greeting).
    Opened,
    /// An idle connection served a call.
    Reused,
    /// An idle connection had been closed by the server and was replaced.
    Replaced,
    /// A connection could not be set up.
    Failed,
}

const EVENTS: [ConnectionEvent; 4] = [
    ConnectionEvent::Opened,
    ConnectionEvent::Reused,
    ConnectionEvent::Replaced,
    ConnectionEvent::Failed,
];

impl ConnectionEvent {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionEvent::Opened => "opened",
            ConnectionEvent::Reused => "reused",
            ConnectionEvent::Replaced => "replaced",
            ConnectionEvent::Failed => "failed",
        }
    }
}

/// Upper bounds of the duration histogram's buckets, in seconds: from a cached answer
/// (microseconds) to a call that waits for its whole timeout.
const BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Calls per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

#[derive(Default)]
struct Server {
    events: [u64; EVENTS.len()],
    up: Option<bool>,
}

/// The counters of one directory name.
#[derive(Default)]
pub struct DirectoryStats {
    calls: [[AtomicU64; RESULTS.len()]; OPS.len()],
    durations: [Histogram; OPS.len()],
    cache_hits: [AtomicU64; OPS.len()],
    throttled: AtomicU64,
    servers: Mutex<BTreeMap<String, Server>>,
    /// The shared store (`store.url`): 0 none, 1 down, 2 up.
    store: AtomicU8,
}

impl DirectoryStats {
    /// One call that returned `outcome` after `elapsed`.
    pub(crate) fn record_call(&self, op: Op, outcome: &Result<()>, elapsed: Duration) {
        let result = match outcome {
            Ok(()) => 0,
            Err(e) => crate::ffi::result_of(e.kind()) as usize,
        };
        self.calls[op as usize][result].fetch_add(1, Relaxed);
        self.durations[op as usize].observe(elapsed);
    }

    /// A call answered from the result cache.
    pub(crate) fn record_cache_hit(&self, op: Op) {
        self.cache_hits[op as usize].fetch_add(1, Relaxed);
    }

    /// A login answered TEMPORARY by a throttle, without asking the server.
    pub fn record_throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// A connection event for `server` (`host:port`).
    pub fn record_connection(&self, server: &str, event: ConnectionEvent) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(server.to_string()).or_default().events[event as usize] += 1;
    }

    /// Whether the shared store answers now (set by its circuit breaker).
    #[cfg(feature = "redis")]
    pub(crate) fn set_store_up(&self, up: bool) {
        self.store.store(if up { 2 } else { 1 }, Relaxed);
    }

    /// Whether `server` answers now (set by the failover logic).
    pub fn set_server_up(&self, server: &str, up: bool) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(server.to_string()).or_default().up = Some(up);
    }
}

type Registry = Mutex<BTreeMap<String, Arc<DirectoryStats>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The counters of directory `name`, created at zero the first time.
pub(crate) fn for_directory(name: &str) -> Arc<DirectoryStats> {
    let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
    all.entry(name.to_string()).or_default().clone()
}

/// One value of one series, e.g. `remote_directory_calls_total{directory="imap",op="auth",
/// result="ok"} 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with `_bucket`, `_sum` or `_count` for the histogram.
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    /// The label's value, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

const CALLS: &str = "remote_directory_calls_total";
const DURATION: &str = "remote_directory_call_duration_seconds";
const CACHE_HITS: &str = "remote_directory_cache_hits_total";
const THROTTLED: &str = "remote_directory_throttled_total";
const CONNECTIONS: &str = "remote_directory_connections_total";
const SERVER_UP: &str = "remote_directory_server_up";
const STORE_UP: &str = "remote_directory_store_up";

/// Every series of this process now, metric by metric, directories in name order. Series
/// that never counted anything are left out, except the histogram of an operation that ran.
pub fn snapshot() -> Vec<Sample> {
    let all: Vec<(String, Arc<DirectoryStats>)> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Vec::new();
    let dir = |name: &str| ("directory", name.to_string());
    for (name, s) in &all {
        for op in OPS {
            for (r, result) in RESULTS.iter().enumerate() {
                let labels = || {
                    vec![
                        dir(name),
                        ("op", op.label().into()),
                        ("result", (*result).into()),
                    ]
                };
                push_count(
                    &mut out,
                    CALLS,
                    labels,
                    s.calls[op as usize][r].load(Relaxed),
                );
            }
        }
    }
    for (name, s) in &all {
        for op in OPS {
            let h = &s.durations[op as usize];
            let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let labels = || vec![dir(name), ("op", op.label().to_string())];
            let mut cumulative = 0;
            for (i, count) in counts.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let mut l = labels();
                l.push(("le", le));
                out.push(Sample {
                    name: "remote_directory_call_duration_seconds_bucket",
                    labels: l,
                    value: cumulative as f64,
                });
            }
            out.push(Sample {
                name: "remote_directory_call_duration_seconds_sum",
                labels: labels(),
                value: h.sum_nanos.load(Relaxed) as f64 / 1e9,
            });
            out.push(Sample {
                name: "remote_directory_call_duration_seconds_count",
                labels: labels(),
                value: total as f64,
            });
        }
    }
    for (name, s) in &all {
        for op in OPS {
            let labels = || vec![dir(name), ("op", op.label().into())];
            push_count(
                &mut out,
                CACHE_HITS,
                labels,
                s.cache_hits[op as usize].load(Relaxed),
            );
        }
    }
    for (name, s) in &all {
        push_count(
            &mut out,
            THROTTLED,
            || vec![dir(name)],
            s.throttled.load(Relaxed),
        );
    }
    let servers: Vec<(String, String, [u64; EVENTS.len()], Option<bool>)> = all
        .iter()
        .flat_map(|(name, s)| {
            let servers = s.servers.lock().unwrap_or_else(|e| e.into_inner());
            servers
                .iter()
                .map(|(server, v)| (name.clone(), server.clone(), v.events, v.up))
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, server, events, _) in &servers {
        for event in EVENTS {
            let labels = || {
                vec![
                    dir(name),
                    ("server", server.clone()),
                    ("event", event.label().into()),
                ]
            };
            push_count(&mut out, CONNECTIONS, labels, events[event as usize]);
        }
    }
    for (name, s) in &all {
        let state = s.store.load(Relaxed);
        if state > 0 {
            out.push(Sample {
                name: STORE_UP,
                labels: vec![dir(name)],
                value: if state == 2 { 1.0 } else { 0.0 },
            });
        }
    }
    for (name, server, _, up) in &servers {
        if let Some(up) = up {
            out.push(Sample {
                name: SERVER_UP,
                labels: vec![dir(name), ("server", server.clone())],
                value: if *up { 1.0 } else { 0.0 },
            });
        }
    }
    out
}

/// A counter's sample, only when it counted something (series that never counted are left
/// out of the snapshot).
fn push_count(
    out: &mut Vec<Sample>,
    name: &'static str,
    labels: impl FnOnce() -> Vec<(&'static str, String)>,
    n: u64,
) {
    if n > 0 {
        out.push(Sample {
            name,
            labels: labels(),
            value: n as f64,
        });
    }
}

/// The metric a sample belongs to (the histogram's series share one).
fn family(sample: &Sample) -> &'static str {
    if sample.name.starts_with(DURATION) {
        DURATION
    } else {
        sample.name
    }
}

fn help(family: &str) -> (&'static str, &'static str) {
    match family {
        CALLS => ("counter", "Calls answered, by operation and result."),
        DURATION => ("histogram", "Time to answer a call, in seconds."),
        CACHE_HITS => ("counter", "Calls answered from the result cache."),
        THROTTLED => ("counter", "Logins answered TEMPORARY by a throttle."),
        CONNECTIONS => ("counter", "Connections to remote servers, by event."),
        STORE_UP => (
            "gauge",
            "Whether the shared store answers (1) or calls go on with local state (0).",
        ),
        _ => ("gauge", "Whether the remote server answers (1) or not (0)."),
    }
}

/// Label values are quoted; `\`, `"` and newlines escaped (Prometheus text format 0.0.4).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `samples` in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus_text(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut last = "";
    for s in samples {
        let f = family(s);
        if f != last {
            let (kind, text) = help(f);
            let _ = writeln!(out, "# HELP {f} {text}\n# TYPE {f} {kind}");
            last = f;
        }
        out.push_str(s.name);
        if !s.labels.is_empty() {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(out, " {}", s.value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Kind};

    fn samples_of(directory: &str) -> Vec<Sample> {
        snapshot()
            .into_iter()
            .filter(|s| s.label("directory") == Some(directory))
            .collect()
    }

    #[test]
    fn calls_are_counted_by_op_and_result() {
        let s = for_directory("stats-test-calls");
        let ms = Duration::from_millis(2);
        s.record_call(Op::Auth, &Ok(()), ms);
        s.record_call(Op::Auth, &Ok(()), ms);
        s.record_call(Op::Auth, &Err(Error::new(Kind::Rejected, "no")), ms);
        s.record_call(Op::Rcpt, &Err(Error::new(Kind::Timeout, "t")), ms);
        s.record_cache_hit(Op::Auth);
        let calls: Vec<(String, String, f64)> = samples_of("stats-test-calls")
            .iter()
            .filter(|x| x.name == CALLS)
            .map(|x| {
                (
                    x.label("op").unwrap().into(),
                    x.label("result").unwrap().into(),
                    x.value,
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("auth".into(), "ok".into(), 2.0),
                ("auth".into(), "rejected".into(), 1.0),
                ("rcpt".into(), "temporary".into(), 1.0)
            ]
        );
        // The same name is the same counters.
        assert_eq!(
            for_directory("stats-test-calls").calls[0][0].load(Relaxed),
            2
        );
    }

    #[test]
    fn histogram_is_cumulative_and_counts_every_call() {
        let s = for_directory("stats-test-histogram");
        for d in [50u64, 300, 2_000_000] {
            s.record_call(Op::Rcpt, &Ok(()), Duration::from_micros(d));
        }
        let samples = samples_of("stats-test-histogram");
        let bucket = |le: &str| {
            samples
                .iter()
                .find(|x| x.name.ends_with("_bucket") && x.label("le") == Some(le))
                .unwrap()
                .value
        };
        assert_eq!(
            (bucket("0.0001"), bucket("0.0005"), bucket("1"), bucket("5")),
            (1.0, 2.0, 2.0, 3.0)
        );
        assert_eq!(bucket("+Inf"), 3.0);
        let count = samples.iter().find(|x| x.name.ends_with("_count")).unwrap();
        assert_eq!(count.value, 3.0);
        let sum = samples.iter().find(|x| x.name.ends_with("_sum")).unwrap();
        assert!((sum.value - 2.00035).abs() < 1e-9, "{}", sum.value);
    }

    #[test]
    fn text_format_has_help_type_and_escaped_labels() {
        let samples = [
            Sample {
                name: CALLS,
                labels: vec![
                    ("directory", "a\"b\\c\nd".into()),
                    ("op", "auth".into()),
                    ("result", "ok".into()),
                ],
                value: 3.0,
            },
            Sample {
                name: SERVER_UP,
                labels: vec![("directory", "x".into()), ("server", "h:1".into())],
                value: 1.0,
            },
        ];
        assert_eq!(
            prometheus_text(&samples),
            "# HELP remote_directory_calls_total Calls answered, by operation and result.\n\
             # TYPE remote_directory_calls_total counter\n\
             remote_directory_calls_total{directory=\"a\\\"b\\\\c\\nd\",op=\"auth\",result=\"ok\"} 3\n\
             # HELP remote_directory_server_up Whether the remote server answers (1) or not (0).\n\
             # TYPE remote_directory_server_up gauge\n\
             remote_directory_server_up{directory=\"x\",server=\"h:1\"} 1\n"
        );
    }

    #[test]
    fn servers_are_listed_with_their_events() {
        let s = for_directory("stats-test-servers");
        s.record_connection("h:25", ConnectionEvent::Opened);
        s.record_connection("h:25", ConnectionEvent::Opened);
        s.record_connection("h:25", ConnectionEvent::Failed);
        s.set_server_up("h:25", false);
        s.record_throttled();
        let text = prometheus_text(&samples_of("stats-test-servers"));
        for line in [
            "remote_directory_connections_total{directory=\"stats-test-servers\",server=\"h:25\",event=\"opened\"} 2",
            "remote_directory_connections_total{directory=\"stats-test-servers\",server=\"h:25\",event=\"failed\"} 1",
            "remote_directory_server_up{directory=\"stats-test-servers\",server=\"h:25\"} 0",
            "remote_directory_throttled_total{directory=\"stats-test-servers\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
