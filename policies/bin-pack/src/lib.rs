//! Bin-pack scheduler: each task that should run goes on the offer it leaves the least room
//! in, so agents fill up before empty ones are used. Built for `wasm32-wasip2`: it runs
//! under the host's deny-all WASI context.
//!
//! The workload is a list of run-to-completion `[[task]]` entries with retries (see
//! `corral_scheduler_sdk::generic` and policies/README.md); the framework completes
//! when every task has finished and fails when a task runs out of retries.

use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::{export_scheduler, generic, Decision, Guest, SchedulerView, TaskStatus};

struct BinPack;

impl Guest for BinPack {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        generic::decide(&view, Strategy::BinPack)
    }

    fn status(view: SchedulerView, _updates: Vec<TaskStatus>) -> Vec<Decision> {
        generic::decide(&view, Strategy::BinPack)
    }
}

export_scheduler!(BinPack);
