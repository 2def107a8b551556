//! A watcher's proof of life, for the systemd watchdog: the supervisor reads it, the
//! watcher only beats. It lives here, not in `systemd`, so `vault/` knows nothing of
//! how it is used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Proof of life from one watcher: the time of its last completed poll round.
#[derive(Clone)]
pub struct Heartbeat {
    base: Instant,
    last_ms: Arc<AtomicU64>,
    /// Longer than this without a round means the watcher is stuck.
    max_gap: Duration,
}

impl Heartbeat {
    pub fn new(max_gap: Duration) -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            max_gap,
        }
    }

    pub fn beat(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn is_fresh(&self) -> bool {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last) <= self.max_gap
    }
}
