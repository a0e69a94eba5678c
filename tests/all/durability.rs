//! Faults with real processes and containers: agents and masters killed with SIGKILL and
//! started again, agents drained.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{agent_id, unique, wait_for, ContainerCleanup, Master, TempDir, TEST_IMAGE};

fn tasks(master: &Master) -> Vec<Value> {
    let out = master.cli(&["task", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("task list json")
}

fn task(master: &Master, id: &str) -> Option<Value> {
    tasks(master).into_iter().find(|t| t["id"] == id)
}

/// The ids of the containers (running or not) of a task.
fn containers_of(task_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=corral.task_id={task_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn container_running(container: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", container])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

#[test]
fn a_restarted_agent_reattaches_its_containers_and_reports_what_ended() {
    crate::harness::require_docker();
    let master = Master::start(&["--agent-timeout", "30s"]);
    let dir = TempDir::new("reattach-agent");
    let mut agent = master.agent(&dir.0, &["--cpus", "4"]);
    let _cleanup = ContainerCleanup(dir.0.clone());
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });
    let sleepers: Vec<String> = (0..10).map(|i| unique(&format!("sleeper{i}"))).collect();
    for id in &sleepers {
        let out = master.cli(&[
            "task",
            "run",
            "--image",
            TEST_IMAGE,
            "--id",
            id,
            "--cpus",
            "0.1",
            "--mem",
            "16",
            "--",
            "sh",
            "-c",
            "sleep 600",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // This one exits with code 5 once /tmp/stop exists in its container.
    let ender = unique("ender");
    let out = master.cli(&[
        "task",
        "run",
        "--image",
        TEST_IMAGE,
        "--id",
        &ender,
        "--cpus",
        "0.1",
        "--mem",
        "16",
        "--",
        "sh",
        "-c",
        "while [ ! -e /tmp/stop ]; do sleep 0.2; done; exit 5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("11 running tasks", Duration::from_secs(60), || {
        tasks(&master)
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count()
            == 11
    });
    let before: Vec<Vec<String>> = sleepers.iter().map(|id| containers_of(id)).collect();
    for c in &before {
        assert_eq!(c.len(), 1, "one container per task: {before:?}");
    }

    // The agent dies; while it is down one task's container exits with code 5.
    agent.kill9();
    let ender_container = containers_of(&ender);
    assert_eq!(ender_container.len(), 1);
    let status = Command::new("docker")
        .args(["exec", &ender_container[0], "touch", "/tmp/stop"])
        .status()
        .expect("docker exec");
    assert!(status.success());
    wait_for(
        "the container to exit while its agent is down",
        Duration::from_secs(30),
        || !container_running(&ender_container[0]),
    );

    let _agent = master.agent(&dir.0, &["--cpus", "4"]);
    wait_for(
        "the ended task reported with its exit code",
        Duration::from_secs(30),
        || {
            task(&master, &ender)
                .is_some_and(|t| t["state"] != "TASK_RUNNING" && t["exit_code"].as_i64().is_some())
        },
    );
    let t = task(&master, &ender).expect("ender");
    assert_eq!(t["state"], "TASK_FAILED", "{t}");
    assert_eq!(t["exit_code"], 5, "{t}");
    // All ten re-attached: still running, in the same containers, none launched again.
    for (id, c) in sleepers.iter().zip(&before) {
        let t = task(&master, id).expect("sleeper");
        assert_eq!(t["state"], "TASK_RUNNING", "{t}");
        assert_eq!(&containers_of(id), c, "{id} kept its one container");
        assert!(container_running(&c[0]));
    }
    // And supervised again: a kill after the restart is carried out.
    let out = master.cli(&["task", "kill", &sleepers[0]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the re-attached task killed",
        Duration::from_secs(30),
        || task(&master, &sleepers[0]).is_some_and(|t| t["state"] == "TASK_KILLED"),
    );
    let id = agent_id(&dir.0).expect("agent id");
    assert_eq!(master.agent_state(&id).as_deref(), Some("active"));
}
