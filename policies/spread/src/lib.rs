//! Spread scheduler: each task that should run goes on the agent that runs the fewest live
//! tasks of this framework (ties: the earlier offer).
//!
//! The workload is a list of run-to-completion `[[task]]` entries with retries (see
//! `corral_scheduler_sdk::generic` and policies/README.md); the framework completes
//! when every task has finished and fails when a task runs out of retries.

use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::{export_scheduler, generic, Decision, Guest, SchedulerView, TaskStatus};

struct Spread;

impl Guest for Spread {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        generic::decide(&view, Strategy::Spread)
    }

    fn status(view: SchedulerView, _updates: Vec<TaskStatus>) -> Vec<Decision> {
        generic::decide(&view, Strategy::Spread)
    }
}

export_scheduler!(Spread);
