//! Idle sessions of one handle, the bound on open connections, and waiting for a slot.
//!
//! The lock is held only to pop or push; all I/O happens outside it.
//!
//! Fairness: a quarter of `pool.max-connections` (rounded down) is kept for callers that
//! are not suspect. A caller is suspect when its user or client address has refused or
//! pending logins in its `throttle.*` window; suspects together hold at most the rest, so
//! password guessing, which Dovecot answers only after a delay, cannot take every
//! connection from real users.

use crate::error::{Error, Kind, Result};
use crate::session::Session;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State {
    /// Ready sessions with the time they went idle, most recent last (reused first: least
    /// likely to be stale).
    idle: Vec<(Instant, Session)>,
    /// Connections counted against the limit: idle ones plus those lent out.
    open: usize,
    /// Callers blocked in `acquire`: only then is a condition-variable wake-up needed.
    waiters: usize,
    /// Suspect callers among the waiters: a freed slot may suit only some waiters then.
    suspect_waiters: usize,
    /// Slots lent to suspect callers now.
    suspects_in: usize,
    /// The handle is closing: the min-idle keeper stops.
    closing: bool,
}

pub struct Pool {
    state: Mutex<State>,
    freed: Condvar,
    /// Wakes the min-idle keeper when the idle sessions fall below `min_idle`.
    demand: Condvar,
    min_idle: usize,
    max: usize,
    /// Most slots suspect callers may hold together: `max` less the kept share.
    max_suspect: usize,
    wait: Duration,
}

/// The right to use one connection: an idle session, or room to open a new one. Dropping
/// the slot without [`Slot::release`] gives the room back (a panic cannot leak it).
pub struct Slot<'a> {
    pool: &'a Pool,
    /// An idle session with the time it went idle.
    session: Option<(Instant, Session)>,
    /// An idle session that could not serve this caller, given up to make room: the caller
    /// closes it (outside the lock) and opens its own in its place.
    evicted: Option<Session>,
    /// Counted in `suspects_in`.
    suspect: bool,
    /// A session went back to the idle list: the connection stays counted.
    kept: bool,
}

impl Pool {
    pub fn new(max: usize, min_idle: usize, wait: Duration) -> Self {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiters: 0,
                suspect_waiters: 0,
                suspects_in: 0,
                closing: false,
            }),
            freed: Condvar::new(),
            demand: Condvar::new(),
            min_idle,
            max,
            max_suspect: max - max / 4,
            wait,
        }
    }

    fn slot(
        &self,
        session: Option<(Instant, Session)>,
        evicted: Option<Session>,
        suspect: bool,
    ) -> Slot<'_> {
        Slot {
            pool: self,
            session,
            evicted,
            suspect,
            kept: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State inconsistent: every update is one statement.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits up to `pool.timeout.wait` for an idle session that `serves` this caller, or
    /// room for a new connection. When every connection is open and only idle sessions that
    /// cannot serve it are left, the oldest of them is given up for it. A `suspect` caller
    /// waits while suspects hold their whole share.
    pub fn acquire(&self, suspect: bool, serves: impl Fn(&Session) -> bool) -> Result<Slot<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        loop {
            if !suspect || state.suspects_in < self.max_suspect {
                if let Some(slot) = self.take(&mut state, suspect, &serves) {
                    return Ok(slot);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let detail = if suspect && state.suspects_in >= self.max_suspect {
                    format!(
                        "{} of {} connections (pool.max-connections) are kept for callers without refused logins, and the rest stayed busy for {:?} (pool.timeout.wait)",
                        self.max - self.max_suspect, self.max, self.wait
                    )
                } else {
                    format!(
                        "all {} connections (pool.max-connections) stayed busy for {:?} (pool.timeout.wait)",
                        self.max, self.wait
                    )
                };
                return Err(Error::new(Kind::PoolTimeout, detail));
            }
            state.waiters += 1;
            state.suspect_waiters += usize::from(suspect);
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            state.waiters -= 1;
            state.suspect_waiters -= usize::from(suspect);
        }
    }

    /// A slot now, if there is one for this caller.
    fn take(
        &self,
        state: &mut State,
        suspect: bool,
        serves: &impl Fn(&Session) -> bool,
    ) -> Option<Slot<'_>> {
        // Most recent first: least likely to be stale.
        let found = state.idle.iter().rposition(|(_, s)| serves(s));
        let slot = if let Some(index) = found {
            let idle = state.idle.remove(index);
            if state.idle.len() < self.min_idle {
                self.demand.notify_one();
            }
            self.slot(Some(idle), None, suspect)
        } else if state.open < self.max {
            state.open += 1;
            self.slot(None, None, suspect)
        } else if !state.idle.is_empty() {
            // Its room passes to this caller: `open` is unchanged.
            let (_, evicted) = state.idle.remove(0);
            self.slot(None, Some(evicted), suspect)
        } else {
            return None;
        };
        state.suspects_in += usize::from(suspect);
        Some(slot)
    }

    /// For the min-idle keeper: waits until fewer than `min_idle` sessions are idle, or at
    /// most `timeout`. `false` once the handle is closing.
    pub fn wait_for_demand(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .demand
            .wait_timeout_while(state, timeout, |s| {
                !s.closing && s.idle.len() >= self.min_idle
            })
            .unwrap_or_else(|p| p.into_inner());
        !state.closing
    }

    /// For the min-idle keeper: waits `pause`, or less if the handle starts closing.
    /// `false` once the handle is closing.
    pub fn pause(&self, pause: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .demand
            .wait_timeout_while(state, pause, |s| !s.closing)
            .unwrap_or_else(|p| p.into_inner());
        !state.closing
    }

    /// Stops the min-idle keeper at its next wait.
    pub fn close(&self) {
        self.lock().closing = true;
        self.demand.notify_all();
    }

    /// Room for one more connection if there is some, without waiting (for `pool.min-idle`).
    pub fn try_reserve(&self) -> Option<Slot<'_>> {
        let mut state = self.lock();
        if state.open < self.max {
            state.open += 1;
            Some(self.slot(None, None, false))
        } else {
            None
        }
    }

    /// Takes every idle session out to be closed (at close, or when one turned out stale: its
    /// siblings were most likely closed by the same server timeout or restart).
    pub fn drain_idle(&self) -> Drained<'_> {
        self.drain_idle_since(Instant::now())
    }

    /// Takes out the sessions idle since before `cutoff`, to be closed.
    pub fn drain_idle_since(&self, cutoff: Instant) -> Drained<'_> {
        let mut state = self.lock();
        let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle)
            .into_iter()
            .partition(|(since, _)| *since <= cutoff);
        state.idle = fresh;
        Drained {
            pool: self,
            counted: old.len(),
            sessions: old.into_iter().map(|(_, session)| session).collect(),
        }
    }

    /// Connections open now (idle and lent out), for tests and statistics.
    pub fn open_connections(&self) -> usize {
        self.lock().open
    }

    pub fn idle_connections(&self) -> usize {
        self.lock().idle.len()
    }
}

/// Idle sessions taken out of the pool to be closed. Their connections count against
/// `pool.max-connections` until this is dropped, when they are closed: no caller opens a new
/// one while they still hold the server's sockets.
pub struct Drained<'a> {
    pool: &'a Pool,
    sessions: Vec<Session>,
    counted: usize,
}

impl Drained<'_> {
    /// The sessions, to end politely; those not taken are closed at drop.
    pub fn take_sessions(&mut self) -> std::vec::Drain<'_, Session> {
        self.sessions.drain(..)
    }
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        self.sessions.clear();
        if self.counted > 0 {
            self.pool.lock().open -= self.counted;
            self.pool.freed.notify_all();
        }
    }
}

impl Slot<'_> {
    /// The idle session this slot came with, if any (taken once), and since when it was idle.
    pub fn take_idle(&mut self) -> Option<(Instant, Session)> {
        self.session.take()
    }

    /// The idle session given up to make room for this caller, to close (taken once).
    pub fn take_evicted(&mut self) -> Option<Session> {
        self.evicted.take()
    }

    /// Gives the slot back: with a session, which then waits idle for the next call.
    pub fn release(mut self, session: Option<Session>) {
        if let Some(session) = session {
            self.pool.lock().idle.push((Instant::now(), session));
            self.kept = true;
        }
        // Drop wakes a waiter and, without a session, frees the room.
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if !self.kept {
            state.open -= 1;
        }
        state.suspects_in -= usize::from(self.suspect);
        let (waiters, suspects) = (state.waiters, state.suspect_waiters);
        drop(state);
        if suspects > 0 {
            // One woken waiter might be a suspect that cannot use this slot: wake them all.
            self.pool.freed.notify_all();
        } else if waiters > 0 {
            self.pool.freed.notify_one();
        }
    }
}
