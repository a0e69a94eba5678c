//! How long a scheduler waits before it relaunches an instance whose attempt failed.
//!
//! A task that fails as soon as it starts (a bad command, a missing file, a crash at
//! start-up) would otherwise be relaunched as fast as offers come, for ever. The wait is
//! `backoff_ms` after the first attempt, doubled with every attempt since, at most
//! `max_backoff_ms`; an attempt that ran for ten minutes or more before it failed is not
//! a crash loop, and its instance is relaunched at once. Only the task's own failures
//! count (`failed`, `error`): an instance whose task was lost with its agent, or killed,
//! is relaunched at once.
//!
//! ```toml
//! backoff_ms = 1000        # wait after the first failed attempt; 0: never wait [1000]
//! max_backoff_ms = 60000   # the longest wait [60000]
//! ```

use crate::workload::Doc;
use crate::{Task, TaskState};

/// An attempt that ran this long before it failed does not delay the next one.
pub const RESET_AFTER_MS: u64 = 10 * 60 * 1000;

/// The waits between failed attempts of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first attempt; 0 never waits.
    pub initial_ms: u64,
    /// The longest wait.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1_000,
            max_ms: 60_000,
        }
    }
}

impl Backoff {
    /// Takes `backoff_ms` and `max_backoff_ms` out of `doc` (defaults for those absent).
    ///
    /// # Errors
    ///
    /// `workload: …` when a value is not a whole number of milliseconds.
    pub fn take(doc: &mut Doc) -> Result<Self, String> {
        let default = Backoff::default();
        Ok(Backoff {
            initial_ms: doc.take::<u64>("backoff_ms")?.unwrap_or(default.initial_ms),
            max_ms: doc.take::<u64>("max_backoff_ms")?.unwrap_or(default.max_ms),
        })
    }

    /// When the instance whose newest attempt is `last` may be launched again, in
    /// milliseconds since the Unix epoch (compare with the view's `now-ms`); 0 when at
    /// once. Attempts are numbered from 0, so the wait after attempt `n` is
    /// `initial_ms · 2ⁿ`.
    pub fn relaunch_at(&self, last: &Task) -> u64 {
        let failed = matches!(last.state, TaskState::Failed | TaskState::Error);
        let ran = last.updated_ms.saturating_sub(last.launched_ms);
        if !failed || self.initial_ms == 0 || last.launched_ms == 0 || ran >= RESET_AFTER_MS {
            return 0;
        }
        let wait = self
            .initial_ms
            .saturating_mul(1u64 << last.attempt.min(32))
            .min(self.max_ms);
        last.updated_ms.saturating_add(wait)
    }

    /// Whether the instance whose newest attempt is `last` must still wait at `now_ms`.
    pub fn waiting(&self, last: Option<&Task>, now_ms: u64) -> bool {
        last.is_some_and(|t| now_ms < self.relaunch_at(t))
    }
}
