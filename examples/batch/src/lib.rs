//! `batch`: a list of commands, each run until it succeeds, with retries and a tolerance
//! for failures.
//!
//! ```toml
//! retries = 2        # relaunches of a failed attempt, per task [0]
//! max_failures = 0   # tasks that may run out of retries before the framework fails [0]
//! backoff_ms = 1000  # wait after a failure, doubled per failure in a row [1000]
//! max_backoff_ms = 60000  # the longest wait [60000]
//! image = "busybox:latest"   # any task field here is every task's default
//!
//! [[task]]
//! name = "extract"
//! command = ["sh", "-c", "echo extracting"]
//! cpus = 0.2
//! mem_mb = 64
//! retries = 5        # this task's own
//! ```
//!
//! Every call derives everything from the view: a task is done when one of its attempts
//! finished; an attempt that failed (or was lost, killed, …) is relaunched as attempt
//! `n + 1` while the task has retries left (after a failure, once its wait is over); a task with none left counts as failed. The
//! framework fails as soon as more than `max_failures` tasks have failed, and completes
//! when every task is done or failed. Tasks are placed first-fit, many per offer.

use corral_scheduler_sdk::backoff::Backoff;
use corral_scheduler_sdk::generic::{
    describe, kill_removed, parse_jobs, progress, Launches, Progress,
};
use corral_scheduler_sdk::place::Strategy;
use corral_scheduler_sdk::tasks::Tasks;
use corral_scheduler_sdk::workload::Doc;
use corral_scheduler_sdk::{
    export_scheduler, is_live, log_info, state_name, Decision, Guest, SchedulerView, TaskState,
    TaskStatus,
};

struct Batch;

impl Guest for Batch {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        decide(&view)
    }

    fn status(view: SchedulerView, updates: Vec<TaskStatus>) -> Vec<Decision> {
        for u in &updates {
            if matches!(
                u.state,
                TaskState::Failed | TaskState::Lost | TaskState::Error | TaskState::Dropped
            ) {
                log_info(&format!(
                    "batch: {} ended {}: {}",
                    u.task_id,
                    state_name(u.state),
                    u.message
                ));
            }
        }
        decide(&view)
    }
}

export_scheduler!(Batch);

fn decide(view: &SchedulerView) -> Vec<Decision> {
    let parsed = Doc::parse(&view.workload).and_then(|mut doc| {
        let max_failures = doc.take::<u32>("max_failures")?.unwrap_or(0);
        let backoff = Backoff::take(&mut doc)?;
        Ok((max_failures, backoff, parse_jobs(doc, 0)?))
    });
    let (max_failures, backoff, jobs) = match parsed {
        Ok(p) => p,
        Err(e) => return vec![Decision::Fail(e)],
    };
    let tasks = Tasks::new(view);
    let mut decisions = kill_removed(&tasks, jobs.iter().map(|j| j.name.as_str()));
    let mut launches = Launches::new(view, Strategy::FirstFit, backoff);
    let mut failed = Vec::new();
    let mut finished = 0usize;
    for job in &jobs {
        match progress(job, tasks.of(&job.name)) {
            Progress::Done => finished += 1,
            Progress::Running => {}
            Progress::Exhausted(last) => failed.push(format!(
                "{} ({} attempts, last {})",
                job.name,
                tasks.attempts(&job.name),
                describe(last)
            )),
            Progress::Launch => launches.launch(job, &tasks),
        }
    }
    if failed.len() > max_failures as usize {
        return vec![Decision::Fail(format!(
            "{} of {} tasks failed (max_failures = {max_failures}): {}",
            failed.len(),
            jobs.len(),
            failed.join("; ")
        ))];
    }
    if finished + failed.len() == jobs.len() && !view.tasks.iter().any(is_live) {
        if !failed.is_empty() {
            log_info(&format!(
                "batch: completed with {} failed task(s): {}",
                failed.len(),
                failed.join("; ")
            ));
        }
        return vec![Decision::Complete];
    }
    launches.finish(&mut decisions);
    decisions
}
