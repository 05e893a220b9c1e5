//! CPU time, for the tables that say what a call costs besides its wall time.

use std::time::Duration;

/// This thread's CPU time: what the calls cost the client itself, which other work on the
/// machine does not inflate the way it inflates wall time.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
