//! `service`: keeps `instances` copies of a long-running task up, spread across agents.
//!
//! ```toml
//! name = "web"          # instances are web-0, web-1, … [the framework's name]
//! instances = 3         # [1]
//! image = "nginx:alpine"
//! cpus = 0.25
//! mem_mb = 64
//! ports = [80]          # container port 80 on any free host port of the offer
//!
//! [health]              # optional; a rolling update waits for a healthy replacement
//! http = { port = 80, path = "/" }
//! interval_ms = 2000
//! ```
//!
//! A failed instance is restarted and a lost one replaced at once. After
//! `corral framework update` (a new generation) the instances are replaced one at a time:
//! a replacement of the new generation is launched, and once it is running (and healthy,
//! with a health check) one old instance is killed; then the next. Instances on draining
//! agents are moved the same way (replacement first, then kill), before the others.
//!
//! This build places instances with the spread strategy (the agent with the fewest
//! instances first); `service-bin-pack` is the same scheduler packing agents instead, and
//! `corral policy swap framework/NAME` switches between them.

mod service;

use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::{export_scheduler, Decision, Guest, SchedulerView, TaskStatus};

struct Service;

impl Guest for Service {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        service::decide(&view, Strategy::Spread)
    }

    fn status(view: SchedulerView, updates: Vec<TaskStatus>) -> Vec<Decision> {
        service::status(&view, &updates, Strategy::Spread)
    }
}

export_scheduler!(Service);
