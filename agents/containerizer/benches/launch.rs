//! Task launch latency through the Docker containerizer, next to the `docker` CLI.
//!
//! `cargo bench -p corral-containerizer` prints:
//! - the median time from `launch` to `TASK_RUNNING` over 20 sequential launches, next to
//!   the median of 20 sequential `docker run -d` of the same image, and their ratio;
//! - the total time of 50 concurrent launches (until all are RUNNING) next to 50 concurrent
//!   `docker run -d`, and their ratio.
//!
//! The CLI is used here only, as the baseline. Every container made is removed.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use corral_containerizer::{Containerizer, DockerConfig, DockerContainerizer};
use corral_wire::pb::{self, TaskSpec, TaskState, TaskStatus};
use tokio::sync::mpsc;

const IMAGE: &str = "corral/busybox:test";
/// Launches measured one after another, and at once, by `cargo bench`. `cargo test
/// --benches` (which does not pass `--bench`) runs a smoke test of a few instead.
const SEQUENTIAL_FULL: usize = 20;
const CONCURRENT_FULL: usize = 50;
const BASELINE_LABEL: &str = "corral.bench";

fn spec(task_id: &str) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        framework_id: "bench".into(),
        image: IMAGE.into(),
        command: vec!["sleep".into(), "600".into()],
        resources: Some(pb::Resources {
            cpus_milli: 100,
            mem_mb: 32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits for all of `task_ids` to be RUNNING; panics if one ends first, or after 2 minutes.
async fn until_running(rx: &mut mpsc::Receiver<TaskStatus>, task_ids: &mut Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !task_ids.is_empty() {
        let status = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => panic!("status channel closed"),
            Err(_) => panic!("tasks {task_ids:?} not RUNNING within 120 s"),
        };
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
        match state {
            TaskState::TaskRunning => task_ids.retain(|id| *id != status.task_id),
            // Tasks of an earlier round end when the cleanup removes them: not a failure.
            TaskState::TaskFailed | TaskState::TaskKilled | TaskState::TaskFinished
                if task_ids.contains(&status.task_id) =>
            {
                panic!(
                    "task {} ended {state:?}: {}",
                    status.task_id, status.message
                )
            }
            _ => {}
        }
    }
}

async fn docker_run(run_id: &str, i: usize) -> Duration {
    let started = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            &format!("{BASELINE_LABEL}={run_id}"),
            "--cpu-period",
            "100000",
            "--cpu-quota",
            "10000",
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
            "--name",
            &format!("corral-bench-cli-{run_id}-{i}"),
            IMAGE,
            "sleep",
            "600",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running the docker CLI failed: {e}"));
    assert!(
        out.status.success(),
        "docker run -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

async fn remove_labelled(docker: &Docker, label: &str) -> usize {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![label.to_string()]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default();
    let removals = containers.into_iter().filter_map(|c| c.id).map(|id| {
        let docker = docker.clone();
        async move {
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            docker.remove_container(&id, Some(options)).await.is_ok()
        }
    });
    futures::future::join_all(removals)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count()
}

async fn cleanup(docker: &Docker, run_id: &str, agent_id: &str) {
    let a = remove_labelled(docker, &format!("corral.agent_id={agent_id}")).await;
    let b = remove_labelled(docker, &format!("{BASELINE_LABEL}={run_id}")).await;
    println!("removed {} containers", a + b);
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sequential, concurrent) = if full {
        (SEQUENTIAL_FULL, CONCURRENT_FULL)
    } else {
        (3, 5)
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let run_id = format!("{:x}", nanos % (1 << 40));
    let agent_id = format!("bench-{run_id}");
    let (tx, mut rx) = mpsc::channel(1024);
    let c = match DockerContainerizer::connect(DockerConfig::default(), tx).await {
        Ok(c) => c,
        Err(e) => panic!("the Docker engine does not answer ({e}); start dockerd and try again"),
    };
    let docker = c.docker().clone();
    if let Err(e) = docker.inspect_image(IMAGE).await {
        panic!("the image {IMAGE} is missing ({e}); run scripts/test to build it");
    }

    // Warm-up: one of each, not counted.
    c.launch(spec(&format!("warm-{run_id}")), &agent_id)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}"));
    until_running(&mut rx, &mut vec![format!("warm-{run_id}")]).await;
    docker_run(&run_id, 9999).await;

    // Sequential, interleaved so that drift in the engine hits both alike.
    let mut ours = Vec::with_capacity(sequential);
    let mut cli = Vec::with_capacity(sequential);
    for i in 0..sequential {
        let id = format!("seq-{run_id}-{i}");
        let started = Instant::now();
        c.launch(spec(&id), &agent_id)
            .await
            .unwrap_or_else(|e| panic!("launch: {e}"));
        until_running(&mut rx, &mut vec![id]).await;
        ours.push(started.elapsed());
        cli.push(docker_run(&run_id, i).await);
    }
    let (ours_med, cli_med) = (median(ours), median(cli));
    cleanup(&docker, &run_id, &agent_id).await;

    // Concurrent.
    let ids: Vec<String> = (0..concurrent)
        .map(|i| format!("con-{run_id}-{i}"))
        .collect();
    let started = Instant::now();
    for id in &ids {
        c.launch(spec(id), &agent_id)
            .await
            .unwrap_or_else(|e| panic!("launch: {e}"));
    }
    until_running(&mut rx, &mut ids.clone()).await;
    let ours_total = started.elapsed();
    cleanup(&docker, &run_id, &agent_id).await;

    let started = Instant::now();
    futures::future::join_all((0..concurrent).map(|i| docker_run(&run_id, 1000 + i))).await;
    let cli_total = started.elapsed();
    cleanup(&docker, &run_id, &agent_id).await;

    println!();
    println!("launch latency, median of {sequential} sequential (request to RUNNING):");
    println!("  corral docker containerizer  {:8.1} ms", ms(ours_med));
    println!("  docker run -d                {:8.1} ms", ms(cli_med));
    println!(
        "  ratio                        {:8.2}  (goal <= 1.2)",
        ms(ours_med) / ms(cli_med)
    );
    println!("total of {concurrent} concurrent launches:");
    println!("  corral docker containerizer  {:8.1} ms", ms(ours_total));
    println!("  docker run -d                {:8.1} ms", ms(cli_total));
    println!(
        "  ratio                        {:8.2}  (goal <= 1.2)",
        ms(ours_total) / ms(cli_total)
    );
}
