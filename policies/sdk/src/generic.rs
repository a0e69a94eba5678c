//! Run-to-completion jobs: the workload of the generic `first-fit`, `bin-pack` and `spread`
//! schedulers (and the format the `batch` example extends).
//!
//! ```toml
//! retries = 3            # relaunches of a task that failed or was lost [3]
//! backoff_ms = 1000      # wait after a failure, doubled per failure in a row [1000]
//! max_backoff_ms = 60000 # the longest wait [60000]
//! image = "busybox:latest"   # any task field here is the default of every [[task]]
//! cpus = 0.1
//!
//! [[task]]
//! name = "hello"         # [task-N]; instance names: letters, digits, '_' and '-'
//! command = ["sh", "-c", "echo hello"]
//! retries = 1            # this task's own retries
//! ```
//!
//! Each `[[task]]` runs until one attempt finishes (exit 0). An attempt that ends
//! otherwise (failed, lost, killed, …) is relaunched as a new attempt, up to `retries`
//! times, after a failure once its wait is over (see [`crate::backoff`]); when a task has
//! no retries left the framework fails. When every task has
//! finished the framework completes. A task removed from the workload by an update is
//! killed; a task added is launched.

use std::collections::BTreeSet;

use crate::backoff::Backoff;
use crate::place::{Placer, Strategy};
use crate::tasks::{valid_name, Tasks};
use crate::workload::{Doc, TaskFields, Template};
use crate::{finish, is_live, state_name, Decision, SchedulerView, Task, TaskState, Want};

/// Relaunches of a failed task when the workload names no `retries`.
pub const DEFAULT_RETRIES: u32 = 3;

/// One `[[task]]` of a job workload.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// Relaunches after the first attempt.
    pub retries: u32,
    pub template: Template,
}

/// Reads `retries`, the task defaults and the `[[task]]` list out of `doc`; the caller
/// takes its own top-level keys out first.
///
/// # Errors
///
/// `workload: …`: no tasks, a bad or repeated name, an unknown key, a bad value.
pub fn parse_jobs(mut doc: Doc, default_retries: u32) -> Result<Vec<Job>, String> {
    let retries = doc.take::<u32>("retries")?.unwrap_or(default_retries);
    let entries = doc.take::<Vec<toml::Table>>("task")?.unwrap_or_default();
    let defaults: TaskFields = doc.rest()?;
    if entries.is_empty() {
        return Err("workload: no [[task]] entries".into());
    }
    let mut names = BTreeSet::new();
    let mut jobs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let mut entry = Doc::from_table(entry);
        let name = entry
            .take::<String>("name")?
            .unwrap_or_else(|| format!("task-{i}"));
        if !valid_name(&name) {
            return Err(format!(
                "workload: task name {name:?} must be 1 to 64 letters, digits, '_' or '-'"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("workload: two tasks are named {name:?}"));
        }
        let retries = entry.take::<u32>("retries")?.unwrap_or(retries);
        let fields: TaskFields = entry
            .rest()
            .map_err(|e| e.replacen("workload: ", &format!("workload: task {name}: "), 1))?;
        let template = fields.over(&defaults).template()?;
        jobs.push(Job {
            name,
            retries,
            template,
        });
    }
    Ok(jobs)
}

/// Where a job stands, from its attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'v> {
    /// One attempt finished.
    Done,
    /// An attempt is live.
    Running,
    /// No live attempt, retries left (or never launched): launch attempt `attempts`.
    Launch,
    /// Every attempt failed and no retries are left; the last one.
    Exhausted(&'v Task),
}

/// Where `job` stands given its attempts in the view (oldest first).
pub fn progress<'v>(job: &Job, attempts: &[&'v Task]) -> Progress<'v> {
    if attempts.iter().any(|t| t.state == TaskState::Finished) {
        return Progress::Done;
    }
    if attempts.iter().any(|t| is_live(t)) {
        return Progress::Running;
    }
    // Older attempts may have left the view; the newest one's number counts them all.
    match attempts.last() {
        Some(last) if last.attempt as usize >= job.retries as usize => Progress::Exhausted(last),
        _ => Progress::Launch,
    }
}

/// How an attempt ended, for messages: `failed (exit 1): message`.
pub fn describe(t: &Task) -> String {
    let mut s = state_name(t.state).to_owned();
    if let Some(code) = t.exit_code {
        s.push_str(&format!(" (exit {code})"));
    }
    if !t.message.is_empty() {
        s.push_str(": ");
        s.push_str(&t.message);
    }
    s
}

/// The launches of one call of a job scheduler (the generic ones and `batch`): each job due
/// a new attempt is placed on the call's offers, or counted as wanted when none has room
/// or it still waits after a failure (see [`Backoff`]).
pub struct Launches<'v> {
    view: &'v SchedulerView,
    backoff: Backoff,
    placer: Placer,
    want: Option<Want>,
    waiting: bool,
}

impl<'v> Launches<'v> {
    pub fn new(view: &'v SchedulerView, strategy: Strategy, backoff: Backoff) -> Self {
        Launches {
            view,
            backoff,
            placer: Placer::new(view, strategy),
            want: None,
            waiting: false,
        }
    }

    /// Launches `job`'s next attempt, or counts it wanted.
    pub fn launch(&mut self, job: &Job, tasks: &Tasks<'_>) {
        let t = &job.template;
        // After a failed attempt, wanted but not launched until its wait is over (offers
        // keep coming meanwhile, and with them calls).
        let wait = self
            .backoff
            .remaining(tasks.of(&job.name), self.view.now_ms)
            > 0;
        self.waiting |= wait;
        let place = if wait {
            None
        } else {
            self.placer.place(&t.resources, &t.host_ports())
        };
        match place {
            Some(p) => {
                let id = tasks.next_id(&job.name);
                let spec = t.spec(id, &self.view.framework_id, &job.name, &p.host_ports);
                self.placer.launch(&p, spec);
            }
            None => {
                self.want
                    .get_or_insert(Want {
                        resources: t.resources,
                        count: 0,
                    })
                    .count += 1;
            }
        }
    }

    /// Ends the call's `decisions`: the launches, and the demand (see [`finish`]). Offers
    /// left unused are declined for a while when they did not fit, not while a job waits
    /// (they come back at the next cycle, and with them a call).
    pub fn finish(self, decisions: &mut Vec<Decision>) {
        let decline = self.want.is_some() && !self.waiting;
        decisions.extend(self.placer.decisions(decline));
        finish(self.view, decisions, self.want);
    }
}

/// The generic schedulers' decisions: see the module documentation.
pub fn decide(view: &SchedulerView, strategy: Strategy) -> Vec<Decision> {
    let parsed = Doc::parse(&view.workload).and_then(|mut doc| {
        let backoff = Backoff::take(&mut doc)?;
        Ok((backoff, parse_jobs(doc, DEFAULT_RETRIES)?))
    });
    let (backoff, jobs) = match parsed {
        Ok(p) => p,
        Err(e) => return vec![Decision::Fail(e)],
    };
    let tasks = Tasks::new(view);
    let mut decisions = kill_removed(&tasks, jobs.iter().map(|j| j.name.as_str()));
    let mut launches = Launches::new(view, strategy, backoff);
    let mut done = 0;
    for job in &jobs {
        match progress(job, tasks.of(&job.name)) {
            Progress::Done => done += 1,
            Progress::Running => {}
            Progress::Exhausted(last) => {
                return vec![Decision::Fail(format!(
                    "task {} failed {} times; last attempt {}",
                    job.name,
                    tasks.attempts(&job.name),
                    describe(last)
                ))];
            }
            Progress::Launch => launches.launch(job, &tasks),
        }
    }
    if done == jobs.len() && !view.tasks.iter().any(is_live) {
        return vec![Decision::Complete];
    }
    launches.finish(&mut decisions);
    decisions
}

/// Kills of the live tasks whose instance name is not in `keep`.
pub fn kill_removed<'a>(tasks: &Tasks<'_>, keep: impl Iterator<Item = &'a str>) -> Vec<Decision> {
    let keep: BTreeSet<&str> = keep.collect();
    tasks
        .names()
        .filter(|(name, _)| !keep.contains(name))
        .flat_map(|(_, ts)| {
            ts.iter()
                .filter(|t| is_live(t) && t.state != TaskState::Killing)
        })
        .map(|t| Decision::Kill(t.task_id.clone()))
        .collect()
}
