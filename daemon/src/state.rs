//! What every worker reads: the directories of the moment (replaced as a whole by SIGHUP)
//! and whether the daemon is stopping.

use crate::config::Directories;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub struct State {
    directories: RwLock<Arc<Directories>>,
    stopping: AtomicBool,
}

impl State {
    pub fn new(directories: Directories) -> Self {
        State {
            directories: RwLock::new(Arc::new(directories)),
            stopping: AtomicBool::new(false),
        }
    }

    /// The directories new calls use. A call keeps the `Arc` it took until it returns, so a
    /// reload never pulls a handle from under it; the old handles close after the last one.
    pub fn directories(&self) -> Arc<Directories> {
        self.directories
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `directories` the ones new calls use.
    pub fn replace(&self, directories: Directories) {
        let old = std::mem::replace(
            &mut *self.directories.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(directories),
        );
        // Dropped outside the lock: closing idle sessions takes a moment.
        drop(old);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}
