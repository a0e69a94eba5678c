//! Scheduler call time: the built-in `hello` scheduler (C) on views of growing size.
//!
//! `cargo bench -p corral-policy --bench scheduler` (no criterion: median of repeated
//! runs, printed). Two calls are measured: `schedule` with 100 offers and every task still
//! to launch (the launch turn), and `status` with 100 updates on a view whose tasks all run
//! (the turns that follow the launches).

use std::time::{Duration, Instant};

use corral_policy::scheduler::{
    ResourceOffer, Resources, SchedulerView, Task, TaskReason, TaskState, TaskStatus,
};
use corral_policy::{PolicyConfig, PolicyHost, SchedulerSlot};

const RUNS: usize = 11;

fn view(tasks: usize, offers: usize, count: usize) -> SchedulerView {
    let framework_id = "hello-bench-a1b2c3".to_owned();
    SchedulerView {
        now_ms: 1_000_000,
        framework_id: framework_id.clone(),
        name: "hello-bench".into(),
        role: "*".into(),
        workload: format!(
            "count = {count}\nimage = \"bench/simulated:1\"\ncpus = 0.01\nmem_mb = 8\n"
        ),
        generation: 1,
        offers: (0..offers)
            .map(|i| ResourceOffer {
                agent_id: format!("agent-{i:04}-0123456789abcdef"),
                hostname: format!("sim-{i}"),
                resources: Resources {
                    cpus_milli: 2_000 * (count as u64 / offers as u64 + 1) / 100,
                    mem_mb: 16 * (count as u64 / offers as u64 + 1),
                    disk_mb: 0,
                },
                ports: Vec::new(),
            })
            .collect(),
        tasks: (0..tasks)
            .map(|i| Task {
                task_id: format!("{framework_id}.hello-{i}.1"),
                name: format!("hello-{i}"),
                attempt: 1,
                agent_id: format!("agent-{:04}-0123456789abcdef", i % 100),
                state: TaskState::Running,
                reason: TaskReason::Unspecified,
                message: String::new(),
                exit_code: None,
                healthy: None,
                generation: 1,
                resources: Resources {
                    cpus_milli: 10,
                    mem_mb: 8,
                    disk_mb: 0,
                },
                launched_ms: 1_000,
                updated_ms: 2_000,
            })
            .collect(),
        draining: Vec::new(),
        suppressed: false,
    }
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = PolicyHost::new(PolicyConfig {
        scheduler_budget: Duration::from_secs(10),
        ..Default::default()
    })?;
    let slot = SchedulerSlot::new(&host, "framework/hello-bench");
    let hello = corral_policy::builtin::scheduler("hello").ok_or("no hello scheduler")?;
    slot.swap(hello, "bench")?;
    println!("scheduler calls, hello (C), median of {RUNS}:");
    for &n in &[1_000usize, 10_000, 50_000] {
        let launch = view(0, 100, n);
        let times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let decisions = slot.schedule(&launch).map_err(|e| e.to_string())?;
                let took = start.elapsed();
                assert!(!decisions.is_empty(), "hello launched nothing");
                Ok(took)
            })
            .collect::<Result<_, String>>()?;
        println!(
            "  schedule, {n:>6} tasks to launch on 100 offers: {:>8.3} ms",
            ms(median(times))
        );
        let running = view(n, 0, n);
        let updates: Vec<TaskStatus> = running.tasks[..100.min(n)]
            .iter()
            .map(|t| TaskStatus {
                task_id: t.task_id.clone(),
                agent_id: t.agent_id.clone(),
                state: TaskState::Running,
                reason: TaskReason::Unspecified,
                message: String::new(),
                exit_code: None,
                healthy: None,
            })
            .collect();
        let clone: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let v = running.clone();
                let took = start.elapsed();
                drop(v);
                took
            })
            .collect();
        let times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                slot.status(&running, &updates).map_err(|e| e.to_string())?;
                Ok(start.elapsed())
            })
            .collect::<Result<_, String>>()?;
        println!(
            "  status,   {n:>6} tasks running, 100 updates:     {:>8.3} ms (cloning the view alone: {:.3} ms)",
            ms(median(times)),
            ms(median(clone))
        );
    }
    Ok(())
}
