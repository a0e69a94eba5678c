//! `service-bin-pack`: the `service` scheduler (see `../src/lib.rs`) placing instances
//! with the bin-pack strategy: agents are filled before empty ones are used.

#[path = "../../src/service.rs"]
mod service;

use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::{export_scheduler, Decision, Guest, SchedulerView, TaskStatus};

struct ServiceBinPack;

impl Guest for ServiceBinPack {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        service::decide(&view, Strategy::BinPack)
    }

    fn status(view: SchedulerView, updates: Vec<TaskStatus>) -> Vec<Decision> {
        service::status(&view, &updates, Strategy::BinPack)
    }
}

export_scheduler!(ServiceBinPack);
