//! Guest-side helpers for Corral's Rust scheduler policies.
//!
//! A scheduler is a component of the `scheduler` world in `wit/policy.wit`: a pure function
//! of its view (the framework's workload, offers and tasks: the live ones, the ended ones
//! launched last and the newest attempt of every name) that returns decisions. This crate holds
//! what every Rust scheduler needs:
//!
//! - [`bindings`]: the world's types, generated once here; a scheduler implements
//!   [`Guest`] and exports it with [`export_scheduler!`].
//! - [`workload`]: the task fields of a workload TOML file (image, command, resources,
//!   ports, health check, …) and [`workload::parse`], which turns a file into the
//!   scheduler's own serde type with errors that start with `workload:`.
//! - [`tasks`]: the framework's tasks by instance name, attempts and task ids
//!   (`{framework-id}.{name}.{attempt}`).
//! - [`place`]: placement of tasks over the view's offers (resources and host ports) with
//!   a [`place::Strategy`]: first-fit, bin-pack or spread. Deterministic.
//! - [`backoff`]: how long to wait before relaunching an instance whose attempt failed
//!   (`backoff_ms`, doubled with every attempt, at most `max_backoff_ms`).
//! - [`Want`] and [`finish`]: the demand / suppress / revive bookkeeping that ends a call.
//! - [`generic`]: the run-to-completion scheduler behind the generic `first-fit`,
//!   `bin-pack` and `spread` components.
//!
//! ```ignore
//! use corral_scheduler_sdk::{export_scheduler, generic, place::Strategy, Decision, Guest,
//!     SchedulerView, TaskStatus};
//!
//! struct Spread;
//! impl Guest for Spread {
//!     fn schedule(view: SchedulerView) -> Vec<Decision> {
//!         generic::decide(&view, Strategy::Spread)
//!     }
//!     fn status(view: SchedulerView, _updates: Vec<TaskStatus>) -> Vec<Decision> {
//!         generic::decide(&view, Strategy::Spread)
//!     }
//! }
//! export_scheduler!(Spread);
//! ```

pub mod backoff;
pub mod generic;
pub mod place;
pub mod tasks;
pub mod workload;

/// Bindings for the `scheduler` world, generated once for every scheduler crate.
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "scheduler",
        generate_all,
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_scheduler",
        default_bindings_module: "corral_scheduler_sdk::bindings",
    });
}

pub use bindings::corral::policy::types::{
    Check, Decision, Decline, Demand, HealthCheck, HttpCheck, KeyValue, Launch, NetworkMode,
    PortMapping, PortRange, ResourceOffer, Resources, SchedulerView, Task, TaskReason, TaskSpec,
    TaskState, TaskStatus, Volume,
};
pub use bindings::{export_scheduler, Guest};

/// How long a declined offer's agent is refused, in seconds.
pub const REFUSE_SECONDS: u32 = 5;

/// Writes a line to the master's log (rate-limited by the host).
pub fn log_info(message: &str) {
    bindings::corral::policy::log::log(bindings::corral::policy::log::Level::Info, message);
}

/// Writes a warning to the master's log.
pub fn log_warn(message: &str) {
    bindings::corral::policy::log::log(bindings::corral::policy::log::Level::Warn, message);
}

/// Whether a task in `state` has ended for good (as the host's `is_terminal`). An
/// unreachable task is not: its agent may come back, and the master reports it lost when
/// it does not.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished
            | TaskState::Failed
            | TaskState::Killed
            | TaskState::Lost
            | TaskState::Error
            | TaskState::Dropped
            | TaskState::Gone
    )
}

/// Whether a task is still live (may run, or runs): not terminal.
pub fn is_live(task: &Task) -> bool {
    !is_terminal(task.state)
}

/// The lowercase name of a state, for messages.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "staging",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Lost => "lost",
        TaskState::Killing => "killing",
        TaskState::Error => "error",
        TaskState::Unreachable => "unreachable",
        TaskState::Dropped => "dropped",
        TaskState::Gone => "gone",
        TaskState::Unknown => "unknown",
    }
}

/// Resources `a + b`, saturating.
pub fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        cpus_milli: a.cpus_milli.saturating_add(b.cpus_milli),
        mem_mb: a.mem_mb.saturating_add(b.mem_mb),
        disk_mb: a.disk_mb.saturating_add(b.disk_mb),
    }
}

/// Whether `need` fits in `free`.
pub fn fits(free: &Resources, need: &Resources) -> bool {
    free.cpus_milli >= need.cpus_milli && free.mem_mb >= need.mem_mb && free.disk_mb >= need.disk_mb
}

/// What a scheduler still wants after a call's launches: `count` more tasks of about
/// `resources` each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Want {
    pub resources: Resources,
    pub count: u32,
}

/// Ends a call's decisions with the framework's wishes: with something still wanted, a
/// `demand` (and a `revive` if the framework is suppressed); with nothing wanted, a
/// `suppress` (unless it is suppressed already).
pub fn finish(view: &SchedulerView, decisions: &mut Vec<Decision>, want: Option<Want>) {
    match want {
        Some(w) if w.count > 0 => {
            if view.suppressed {
                decisions.push(Decision::Revive);
            }
            decisions.push(Decision::Demand(Demand {
                resources: w.resources,
                count: w.count,
            }));
        }
        _ => {
            if !view.suppressed {
                decisions.push(Decision::Suppress);
            }
        }
    }
}
