//! First-fit scheduler: each task that should run goes on the first offer (in the view's
//! order) with room for its resources and host ports.
//!
//! The workload is a list of run-to-completion `[[task]]` entries with retries (see
//! `corral_scheduler_sdk::generic` and policies/README.md); the framework completes
//! when every task has finished and fails when a task runs out of retries.

use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::{export_scheduler, generic, Decision, Guest, SchedulerView, TaskStatus};

struct FirstFit;

impl Guest for FirstFit {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        generic::decide(&view, Strategy::FirstFit)
    }

    fn status(view: SchedulerView, _updates: Vec<TaskStatus>) -> Vec<Decision> {
        generic::decide(&view, Strategy::FirstFit)
    }
}

export_scheduler!(FirstFit);
