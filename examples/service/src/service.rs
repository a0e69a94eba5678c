// The `service` scheduler's logic, shared by the spread build (`src/lib.rs`) and the
// bin-pack build (`bin-pack/src/lib.rs`), which differ only in their placement strategy.

use std::collections::BTreeSet;

use corral_scheduler_sdk::backoff::Backoff;
use corral_scheduler_sdk::generic::kill_removed;
use corral_scheduler_sdk::place::{Placer, Strategy};
use corral_scheduler_sdk::tasks::{valid_name, Tasks};
use corral_scheduler_sdk::workload::{Doc, TaskFields, Template};
use corral_scheduler_sdk::{
    finish, log_info, state_name, Decision, SchedulerView, Task, TaskState, TaskStatus, Want,
};

/// A parsed service workload.
struct Service {
    /// Instance names are `{prefix}-{i}`.
    prefix: String,
    instances: u32,
    backoff: Backoff,
    template: Template,
}

fn parse(view: &SchedulerView) -> Result<Service, String> {
    let mut doc = Doc::parse(&view.workload)?;
    let prefix = match doc.take::<String>("name")? {
        Some(name) => name,
        None if valid_name(&view.name) && view.name.len() <= 48 => view.name.clone(),
        None => "svc".into(),
    };
    if !valid_name(&prefix) || prefix.len() > 48 {
        return Err(format!(
            "workload: name {prefix:?} must be 1 to 48 letters, digits, '_' or '-'"
        ));
    }
    let instances = doc.take::<u32>("instances")?.unwrap_or(1);
    if instances > 10_000 {
        return Err(format!(
            "workload: instances must be at most 10000, got {instances}"
        ));
    }
    let backoff = Backoff::take(&mut doc)?;
    let fields: TaskFields = doc.rest()?;
    Ok(Service {
        prefix,
        instances,
        backoff,
        template: fields.template()?,
    })
}

/// Logs what happened to instances, for the operator: when one is replaced, and after
/// how long a wait (see `Backoff`).
fn log_updates(view: &SchedulerView, backoff: &Backoff, tasks: &Tasks<'_>, updates: &[TaskStatus]) {
    let failed = |u: &&TaskStatus| {
        matches!(
            u.state,
            TaskState::Failed | TaskState::Lost | TaskState::Error | TaskState::Dropped
        )
    };
    if !updates.iter().any(|u| failed(&u)) {
        return;
    }
    // Each task's name, found once: a lost agent ends many tasks in one call.
    let names: std::collections::BTreeMap<&str, &str> = view
        .tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.name.as_str()))
        .collect();
    for u in updates.iter().filter(failed) {
        let name = names.get(u.task_id.as_str()).copied().unwrap_or("");
        let wait = backoff.remaining(tasks.of(name), view.now_ms);
        let when = if wait > 0 {
            format!("replacing it in {:.1} s", wait as f64 / 1000.0)
        } else {
            "replacing it".to_owned()
        };
        log_info(&format!(
            "service: {} ended {}: {}; {when}",
            u.task_id,
            state_name(u.state),
            u.message
        ));
    }
}

/// The service's decisions for this view.
///
/// Per instance: its *target* is its newest live task of the current generation on an
/// agent that is not draining. No live task at all: launch one now (first start, restart
/// of a failed one, replacement of a lost one). Live tasks but no target (an older
/// generation, or a draining agent): the instance needs a replacement, and replacements go
/// one at a time. A target next to older tasks is a replacement in flight: once it is
/// running (and healthy, with a health check) the older tasks are killed, and the next
/// replacement starts when their agents say they are being killed.
pub fn decide(view: &SchedulerView, strategy: Strategy) -> Vec<Decision> {
    decide_after(view, &[], strategy)
}

/// [`decide`] after status `updates`, which are logged first.
pub fn status(view: &SchedulerView, updates: &[TaskStatus], strategy: Strategy) -> Vec<Decision> {
    decide_after(view, updates, strategy)
}

fn decide_after(view: &SchedulerView, updates: &[TaskStatus], strategy: Strategy) -> Vec<Decision> {
    let svc = match parse(view) {
        Ok(s) => s,
        Err(e) => return vec![Decision::Fail(e)],
    };
    let names: Vec<String> = (0..svc.instances)
        .map(|i| format!("{}-{i}", svc.prefix))
        .collect();
    let tasks = Tasks::new(view);
    log_updates(view, &svc.backoff, &tasks, updates);
    let draining: BTreeSet<&str> = view.draining.iter().map(String::as_str).collect();
    let mut decisions = kill_removed(&tasks, names.iter().map(String::as_str));
    let current = |t: &Task| {
        t.generation == view.generation
            && !draining.contains(t.agent_id.as_str())
            && t.state != TaskState::Killing
    };
    let ready = |t: &Task| {
        t.state == TaskState::Running && (svc.template.health.is_none() || t.healthy == Some(true))
    };

    let mut launch_now: Vec<&str> = Vec::new();
    // Instances whose failed task is still in its wait (see `Backoff`): wanted, not
    // launched yet (offers keep coming meanwhile, and with them calls).
    let mut waiting = 0u32;
    let mut replace: Vec<(bool, &str)> = Vec::new();
    let mut in_flight = false;
    // Kills asked for in this call: offers stay wanted until their agents answer, so that
    // calls keep coming and a kill that was lost (its agent away) is asked for again.
    let mut killing = false;
    for name in &names {
        let live: Vec<&Task> = tasks
            .live(name)
            .filter(|t| t.state != TaskState::Killing)
            .collect();
        match live.iter().rev().find(|t| current(t)) {
            Some(target) => {
                let older: Vec<&&Task> = live
                    .iter()
                    .filter(|t| t.task_id != target.task_id)
                    .collect();
                // A replacement is in flight until its older tasks are gone: killed now
                // once it is ready, they still count until their agent says they are
                // being killed, so the next replacement waits for that.
                in_flight |= !older.is_empty();
                if ready(target) {
                    killing |= !older.is_empty();
                    decisions.extend(older.iter().map(|t| Decision::Kill(t.task_id.clone())));
                }
            }
            None if live.is_empty() => {
                if svc.backoff.remaining(tasks.of(name), view.now_ms) > 0 {
                    waiting += 1;
                } else {
                    launch_now.push(name);
                }
            }
            None => {
                let on_draining = live.iter().any(|t| draining.contains(t.agent_id.as_str()));
                replace.push((!on_draining, name));
            }
        }
    }
    // Instances on draining agents move before those that only need the new generation.
    replace.sort_by_key(|(not_draining, _)| *not_draining);
    if !in_flight {
        if let Some((_, name)) = replace.first() {
            launch_now.push(name);
        }
    }

    let t = &svc.template;
    let mut placer = Placer::new(view, strategy);
    let mut unplaced = waiting;
    for name in launch_now {
        match placer.place(&t.resources, &t.host_ports()) {
            Some(p) => {
                let spec = t.spec(tasks.next_id(name), &view.framework_id, name, &p.host_ports);
                placer.launch(&p, spec);
            }
            None => unplaced += 1,
        }
    }
    // Asked for as whole agents (a zero demand, as many as there are): the allocator then
    // offers every agent with room, and the placement strategy (spread or bin-pack)
    // chooses among them. A sized demand would have the allocator pick the agent.
    let want = (unplaced > 0 || killing).then_some(Want {
        resources: corral_scheduler_sdk::Resources {
            cpus_milli: 0,
            mem_mb: 0,
            disk_mb: 0,
        },
        count: u32::MAX,
    });
    // Offers left unused are declined for a while when they did not fit, not while an
    // instance waits (they come back at the next cycle, and with them a call).
    decisions.extend(placer.decisions(want.is_some() && waiting == 0));
    finish(view, &mut decisions, want);
    decisions
}
