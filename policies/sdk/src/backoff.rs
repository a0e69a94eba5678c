//! How long a scheduler waits before it relaunches an instance whose attempt failed.
//!
//! A task that fails as soon as it starts (a bad command, a missing file, a crash at
//! start-up) would otherwise be relaunched as fast as offers come, for ever. After `n`
//! failures in a row, each after a run of less than ten minutes, the wait is
//! `backoff_ms · 2ⁿ⁻¹`, at most `max_backoff_ms`, counted from when the last one ended.
//! Only the task's own failures count (`failed`, `error`): an attempt lost with its agent,
//! killed (by an update, a drain, an operator) or that ran ten minutes or more ends the
//! run of failures, and its instance is relaunched at once. Failures are counted in the
//! view, which holds the ended tasks launched last: a longer row counts as that long.
//!
//! ```toml
//! backoff_ms = 1000        # wait after one failure; 0: never wait [1000]
//! max_backoff_ms = 60000   # the longest wait [60000]
//! ```

use crate::workload::Doc;
use crate::{Task, TaskState};

/// An attempt that ran this long before it failed ends a run of failures.
pub const RESET_AFTER_MS: u64 = 10 * 60 * 1000;

/// The waits between failed attempts of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After one failure; 0 never waits.
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

/// Whether `t` failed by itself, soon after it was launched.
fn quick_failure(t: &Task) -> bool {
    matches!(t.state, TaskState::Failed | TaskState::Error)
        && t.launched_ms != 0
        && t.updated_ms.saturating_sub(t.launched_ms) < RESET_AFTER_MS
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

    /// When an instance whose attempts (oldest first, as [`crate::tasks::Tasks::of`]
    /// gives them) end with a run of quick failures may be launched again, in
    /// milliseconds since the Unix epoch (compare with the view's `now-ms`); 0 when at
    /// once.
    pub fn relaunch_at(&self, attempts: &[&Task]) -> u64 {
        let failures = attempts
            .iter()
            .rev()
            .take_while(|t| quick_failure(t))
            .count();
        let Some(last) = attempts.last() else {
            return 0;
        };
        if failures == 0 || self.initial_ms == 0 {
            return 0;
        }
        let wait = self
            .initial_ms
            .saturating_mul(1u64 << (failures - 1).min(32))
            .min(self.max_ms);
        last.updated_ms.saturating_add(wait)
    }

    /// How long the instance with these `attempts` must still wait at `now_ms`, in
    /// milliseconds (0: launch it now).
    pub fn remaining(&self, attempts: &[&Task], now_ms: u64) -> u64 {
        self.relaunch_at(attempts).saturating_sub(now_ms)
    }
}
