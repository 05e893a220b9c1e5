//! Running N threads against one operation for a fixed time, and what comes out of it:
//! calls, wall time, latency percentiles (from a fixed-size log-linear histogram, so a run
//! of ten million calls needs no more memory than a run of ten), errors, peak memory.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Latency histogram: exact below 128 ns, then 64 buckets per power of two (error < 1.6 %).
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const EXACT: u64 = 128;
const SUB: u32 = 6; // 64 sub-buckets per power of two
const BUCKETS: usize = 128 + (64 - 7) * 64;

fn bucket(ns: u64) -> usize {
    if ns < EXACT {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros(); // >= 7
    let m = (ns >> (e - SUB)) & 63;
    (EXACT + u64::from(e - 7) * 64 + m) as usize
}

fn bucket_value(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT {
        return b;
    }
    let e = (b - EXACT) / 64 + 7;
    let m = (b - EXACT) % 64;
    let low = (64 + m) << (e - u64::from(SUB));
    let width = 1u64 << (e - u64::from(SUB));
    low + width / 2
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Calls that took longer than `ns` (to the histogram's precision).
    pub fn count_above(&self, ns: u64) -> u64 {
        self.counts[bucket(ns) + 1..].iter().sum()
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_value(i);
            }
        }
        bucket_value(BUCKETS - 1)
    }
}

/// What one scenario at one thread count measured.
pub struct Outcome {
    pub calls: u64,
    pub wall: Duration,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub errors: u64,
    /// Calls that took more than 20 ms (the Postfix TLS 1.3 stall is ~40 ms).
    pub slow: u64,
    pub first_error: String,
    pub hist: Histogram,
}

impl Outcome {
    /// Adds another run of the same work (interleaved runs of two competitors).
    pub fn merge(&mut self, other: Outcome) {
        self.hist.merge(&other.hist);
        self.calls = self.hist.total;
        self.wall += other.wall;
        self.errors += other.errors;
        self.slow += other.slow;
        if self.first_error.is_empty() {
            self.first_error = other.first_error;
        }
        self.p50_ns = self.hist.quantile(0.5);
        self.p99_ns = self.hist.quantile(0.99);
    }
}

/// Runs `call` on `threads` threads for `duration` (or until `max_calls` per thread), after
/// each thread's untimed `setup` (opening the connection of a floor client, warming a pool).
/// All threads start together at a barrier; the wall time runs from the barrier to the
/// last thread's end. `call` returns Err(text) when the answer was not the expected one.
pub fn run<S, Setup, Call>(
    threads: usize,
    duration: Duration,
    max_calls: u64,
    setup: Setup,
    call: Call,
) -> Outcome
where
    Setup: Fn(usize) -> S + Sync,
    Call: Fn(&mut S) -> Result<(), String> + Sync,
{
    run_paced(threads, duration, max_calls, Duration::ZERO, setup, call)
}

/// As [`run`], with an untimed pause of `pace` after every call (sparse traffic).
pub fn run_paced<S, Setup, Call>(
    threads: usize,
    duration: Duration,
    max_calls: u64,
    pace: Duration,
    setup: Setup,
    call: Call,
) -> Outcome
where
    Setup: Fn(usize) -> S + Sync,
    Call: Fn(&mut S) -> Result<(), String> + Sync,
{
    let barrier = Barrier::new(threads + 1);
    let first_error = Mutex::new(String::new());
    let start_cell: Mutex<Option<Instant>> = Mutex::new(None);
    let results: Vec<(Histogram, u64, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, setup, call, first_error) = (&barrier, &setup, &call, &first_error);
                let start_cell = &start_cell;
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        let mut state = setup(i);
                        let mut hist = Histogram::new();
                        let mut errors = 0u64;
                        barrier.wait();
                        let start = start_cell.lock().unwrap().expect("start set");
                        let end_at = start + duration;
                        let mut n = 0u64;
                        loop {
                            let t0 = Instant::now();
                            if let Err(e) = call(&mut state) {
                                errors += 1;
                                let mut f = first_error.lock().unwrap();
                                if f.is_empty() {
                                    *f = e;
                                }
                            }
                            let t1 = Instant::now();
                            hist.record((t1 - t0).as_nanos() as u64);
                            n += 1;
                            if t1 >= end_at || n >= max_calls {
                                break;
                            }
                            if !pace.is_zero() {
                                std::thread::sleep(pace);
                            }
                        }
                        drop(state);
                        (hist, errors, Instant::now())
                    })
                    .expect("spawn")
            })
            .collect();
        *start_cell.lock().unwrap() = Some(Instant::now());
        barrier.wait();
        handles.into_iter().map(|h| h.join().expect("bench thread panicked")).collect()
    });
    let start = start_cell.into_inner().unwrap().unwrap();
    let mut hist = Histogram::new();
    let mut errors = 0;
    let slow = results.iter().map(|r| r.0.count_above(20_000_000)).sum();
    let mut last = start;
    for (h, e, end) in &results {
        hist.merge(h);
        errors += e;
        last = last.max(*end);
    }
    Outcome {
        calls: hist.total,
        wall: last - start,
        p50_ns: hist.quantile(0.5),
        p99_ns: hist.quantile(0.99),
        errors,
        slow,
        first_error: first_error.into_inner().unwrap(),
        hist,
    }
}

/// A value from /proc/self/status in KiB (VmHWM, VmRSS).
pub fn proc_status_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Shared, so the orchestrator and the children agree on the one-line result format:
/// `RESULT calls wall_s p50_ns p99_ns errors hwm_kib slow first-error...`
pub fn result_line(o: &Outcome) -> String {
    result_line_named(o, "")
}

/// The same, for one of several results of one child: `RESULT:name ...`.
pub fn result_line_named(o: &Outcome, name: &str) -> String {
    let err = if o.first_error.is_empty() {
        String::from("-")
    } else {
        o.first_error.replace(['\n', '\r', '\t'], " ")
    };
    format!(
        "RESULT{}{} {:.6} {} {} {} {} {} {}",
        if name.is_empty() { " ".to_string() } else { format!(":{name} ") },
        o.calls,
        o.wall.as_secs_f64(),
        o.p50_ns,
        o.p99_ns,
        o.errors,
        proc_status_kib("VmHWM"),
        o.slow,
        err
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 1000, 12345, 1 << 20, 999_999_999, 5_000_000_000] {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            let back = bucket_value(b);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {back}");
        }
    }
}
