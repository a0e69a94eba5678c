//! Faults with real processes and containers: agents and masters killed with SIGKILL and
//! started again, agents drained.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{agent_id, unique, wait_for, ContainerCleanup, Master, TempDir, TEST_IMAGE};

fn tasks(master: &Master) -> Vec<Value> {
    master.cli_list(&["task", "list", "--json"])
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

/// Whether `docker exec CONTAINER args…` ran and exited 0.
fn exec_in(container: &str, args: &[&str]) -> bool {
    Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
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
        run_small(&master, id, &[], "sleep 600");
    }
    // This one exits with code 5 once /tmp/stop exists in its container.
    let ender = unique("ender");
    run_small(
        &master,
        &ender,
        &[],
        "while [ ! -e /tmp/stop ]; do sleep 0.2; done; exit 5",
    );
    // This one, killed, exits with code 3 once /tmp/stop exists after its SIGTERM: its
    // agent is killed in between.
    let terminating = unique("terminating");
    run_small(
        &master,
        &terminating,
        &["--kill-grace", "60s"],
        "trap 'touch /tmp/termed; while [ ! -e /tmp/stop ]; do sleep 0.2; done; exit 3' TERM; \
         while true; do sleep 0.2; done",
    );
    // And this one, killed, ignores its SIGTERM: it still runs when its agent comes back,
    // and is killed again (SIGKILL after its 10 s grace).
    let stubborn = unique("stubborn");
    run_small(
        &master,
        &stubborn,
        &["--kill-grace", "10s"],
        "trap 'touch /tmp/termed' TERM; while true; do sleep 0.2; done",
    );
    wait_for("13 running tasks", Duration::from_secs(60), || {
        tasks(&master)
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count()
            == 13
    });
    let before: Vec<Vec<String>> = sleepers.iter().map(|id| containers_of(id)).collect();
    for c in &before {
        assert_eq!(c.len(), 1, "one container per task: {before:?}");
    }

    let mut killed_containers = Vec::new();
    for id in [&terminating, &stubborn] {
        let out = master.cli(&["task", "kill", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let container = containers_of(id);
        assert_eq!(container.len(), 1);
        killed_containers.extend(container);
    }
    for container in &killed_containers {
        wait_for(
            "the killed task to receive its SIGTERM",
            Duration::from_secs(30),
            || exec_in(container, &["test", "-e", "/tmp/termed"]),
        );
    }
    let (terminating_container, stubborn_container) =
        (&killed_containers[..1], &killed_containers[1]);

    // The agent dies; while it is down one task's container exits with code 5, and the
    // killed one's with code 3.
    agent.kill9();
    assert!(
        container_running(stubborn_container),
        "the stubborn task still runs: its grace period had not ended when its agent died"
    );
    // Before the master notices (its connection to the agent lives until it times out),
    // two tasks are launched into the void, and one of them is killed: when the agent is
    // back, the first is sent again and runs, the second is killed without running.
    let (unsent, unsent_killed) = (unique("unsent"), unique("unsent-killed"));
    for id in [&unsent, &unsent_killed] {
        run_small(&master, id, &[], "echo ran");
    }
    let out = master.cli(&["task", "kill", &unsent_killed]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kill waits for the agent, and the task list says so.
    let t = task(&master, &unsent_killed).expect("unsent-killed");
    assert_eq!(t["kill_requested"], true, "{t}");
    assert!(
        !t["state"].as_str().unwrap_or("").ends_with("KILLED"),
        "{t}"
    );
    let ender_container = containers_of(&ender);
    assert_eq!(ender_container.len(), 1);
    for container in [&ender_container[0], &terminating_container[0]] {
        assert!(exec_in(container, &["touch", "/tmp/stop"]));
        wait_for(
            "the container to exit while its agent is down",
            Duration::from_secs(30),
            || !container_running(container),
        );
    }
    // And another task's container is removed altogether.
    let (removed, sleepers) = sleepers.split_last().expect("ten sleepers");
    let (removed_container, before) = before.split_last().expect("ten containers");
    let status = Command::new("docker")
        .args(["rm", "-f", &removed_container[0]])
        .status()
        .expect("docker rm");
    assert!(status.success());

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
    wait_for(
        "the launch lost with the connection to run",
        Duration::from_secs(30),
        || task(&master, &unsent).is_some_and(|t| t["state"] == "TASK_FINISHED"),
    );
    let t = task(&master, &unsent_killed).expect("unsent-killed");
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    assert_eq!(t["kill_requested"], false, "{t}");
    assert!(containers_of(&unsent_killed).is_empty(), "it never ran");
    // The task whose kill had begun is reported killed, with the exit code it ended with.
    let t = exited(
        &master,
        &terminating,
        "the task killed while its agent was down reported",
        Duration::from_secs(30),
    );
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    assert_eq!(t["reason"], "REASON_KILLED_BY_REQUEST", "{t}");
    assert_eq!(t["exit_code"], 3, "{t}");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("while the agent was down")),
        "{t}"
    );
    // The task still running when its agent came back is killed again.
    let t = exited(
        &master,
        &stubborn,
        "the stubborn task killed by the restarted agent",
        Duration::from_secs(60),
    );
    assert_eq!(t["state"], "TASK_KILLED", "{t}");
    assert_eq!(t["exit_code"], 137, "ended by SIGKILL: {t}");
    assert!(!container_running(stubborn_container));
    // The task whose container is gone is lost, not left running forever.
    wait_for(
        "the task without a container reported lost",
        Duration::from_secs(30),
        || task(&master, removed).is_some_and(|t| t["state"] == "TASK_LOST"),
    );
    // The other nine re-attached: still running, in the same containers, none launched
    // again.
    for (id, c) in sleepers.iter().zip(before) {
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

/// Task `id` once the master has its exit code (waiting for it, as `what`, up to `timeout`).
fn exited(master: &Master, id: &str, what: &str, timeout: Duration) -> Value {
    wait_for(what, timeout, || {
        task(master, id).is_some_and(|t| t["exit_code"].as_i64().is_some())
    });
    task(master, id).unwrap_or_else(|| panic!("task {id} is gone"))
}

/// `corral task run` of a small task (0.1 CPUs, 16 MB) running `sh -c script`, with
/// `extra` options.
fn run_small(master: &Master, id: &str, extra: &[&str], script: &str) {
    let mut args = vec![
        "task", "run", "--image", TEST_IMAGE, "--id", id, "--cpus", "0.1", "--mem", "16",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = master.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `corral framework show NAME --json`, parsed.
fn framework(master: &Master, name: &str) -> Value {
    master.cli_json(&["framework", "show", name, "--json"])
}

fn framework_tasks(master: &Master, name: &str) -> Vec<Value> {
    framework(master, name)["task_list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for framework `name` to end (completed, failed, killed) and returns it; on
/// timeout, panics with its tasks' states and the tail of the restarted master's log.
fn wait_for_end(master: &Master, name: &str, timeout: Duration) -> Value {
    let start = std::time::Instant::now();
    loop {
        let f = framework(master, name);
        if f["state"] != "active" || start.elapsed() > timeout {
            if f["state"] == "active" {
                let log = master.proc.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {name} to end\n{}\nmaster log, newest first:\n{}",
                    task_summary(&framework_tasks(master, name)),
                    tail.join("\n")
                );
            }
            return f;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `TASK_FINISHED: 45, TASK_RUNNING: 5`, and the tasks that did not finish.
fn task_summary(tasks: &[Value]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        *counts.entry(t["state"].to_string()).or_default() += 1;
    }
    let others: Vec<String> = tasks
        .iter()
        .filter(|t| t["state"] != "TASK_FINISHED")
        .map(|t| format!("{} {} {}", t["id"], t["state"], t["message"]))
        .collect();
    format!("{counts:?}\n{}", others.join("\n"))
}

fn submit(master: &Master, dir: &TempDir, name: &str, scheduler: &str, workload: &str) {
    let path = dir.0.join(format!("{name}.toml"));
    std::fs::write(&path, workload).expect("workload");
    let out = master.cli(&[
        "framework",
        "submit",
        name,
        "--scheduler",
        scheduler,
        "--workload",
        &path.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of the frameworks `corral framework list --json` shows.
fn framework_names(master: &Master) -> Vec<String> {
    let mut names: Vec<String> = master
        .cli_list(&["framework", "list", "--json"])
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn only_the_newest_ended_frameworks_are_kept_across_a_restart() {
    // No agents: the frameworks are killed before they have tasks.
    let mut master = Master::start(&["--max-completed-frameworks", "2"]);
    let dir = TempDir::new("forget");
    let names: Vec<String> = (0..4).map(|i| unique(&format!("ended{i}"))).collect();
    let workload = "[[task]]\nimage = \"corral/busybox:test\"\ncommand = [\"true\"]\n";
    for name in &names {
        submit(&master, &dir, name, "first-fit", workload);
        master.cli_ok(&["framework", "kill", name]);
    }
    let mut newest = names[2..].to_vec();
    newest.sort();
    wait_for(
        "the two oldest ended frameworks to be forgotten",
        Duration::from_secs(10),
        || framework_names(&master) == newest,
    );
    assert_eq!(
        framework(&master, &names[3])["state"].as_str(),
        Some("killed")
    );
    let out = master.cli(&["framework", "show", &names[0]]);
    assert!(!out.status.success(), "a forgotten framework is not found");

    // The registry's file forgot them too: right after the restart, before the master's
    // first housekeeping tick could forget them again, only the newest two are listed.
    master.restart_gracefully();
    assert_eq!(framework_names(&master), newest);
    assert!(
        !std::fs::read_to_string(master.dir.0.join("master-restarted.log"))
            .unwrap_or_default()
            .contains("ended framework forgotten"),
        "the restarted master had frameworks to forget again"
    );
    // And so did the policy history: the scheduler slots of the newest two only.
    let mut slots: Vec<String> = master
        .cli_list(&["policy", "list", "--json"])
        .iter()
        .filter_map(|r| {
            r["slot"]
                .as_str()
                .and_then(|s| s.strip_prefix("framework/"))
        })
        .map(str::to_owned)
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots, newest);
}

#[test]
fn a_master_killed_mid_batch_finishes_it_with_every_task_run_once() {
    crate::harness::require_docker();
    let mut master = Master::start(&["--allocation-interval", "100ms"]);
    let dirs = [TempDir::new("midbatch-a"), TempDir::new("midbatch-b")];
    // Declared before the agents, so dropped after them: a live scheduler would replace
    // the containers the cleanup removes.
    let _cleanup: Vec<_> = dirs.iter().map(|d| ContainerCleanup(d.0.clone())).collect();
    let _agents: Vec<_> = dirs.iter().map(|d| master.agent(&d.0, &[])).collect();
    wait_for("the agents", Duration::from_secs(10), || {
        master.agents().len() == 2
    });
    let name = unique("midbatch");
    // 50 tasks of a second or so; 2 agents of 2 CPUs run 20 at a time.
    let mut workload = String::from("retries = 0\n");
    for i in 0..50 {
        workload.push_str(&format!(
            "\n[[task]]\nname = \"t{i}\"\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"sleep 1; echo ran {i}\"]\ncpus = 0.2\nmem_mb = 16\n"
        ));
    }
    submit(&master, &dirs[0], &name, "batch", &workload);
    let fw_id = framework(&master, &name)["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for("a few tasks finished", Duration::from_secs(60), || {
        framework_tasks(&master, &name)
            .iter()
            .filter(|t| t["state"] == "TASK_FINISHED")
            .count()
            >= 5
    });

    master.proc.kill9();
    master.restart();
    // The framework is back with its workload, and the scheduler's history survived.
    let f = framework(&master, &name);
    assert_eq!(f["id"], fw_id.as_str(), "{f}");
    assert!(f["workload"].as_str().is_some_and(|w| w.contains("t49")));
    let records = master.cli_list(&["policy", "list", "--json"]);
    let slot = format!("framework/{name}");
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["slot"] == slot.as_str())
        .collect();
    assert!(
        mine.iter()
            .any(|r| r["who"] != "restored" && r["state"] == "superseded"),
        "the submit before the restart: {mine:?}"
    );
    assert!(
        mine.iter()
            .any(|r| r["who"] == "restored" && r["state"] == "active"),
        "the scheduler loaded again: {mine:?}"
    );
    let f = wait_for_end(&master, &name, Duration::from_secs(120));
    let tasks = framework_tasks(&master, &name);
    assert_eq!(
        f["state"],
        "completed",
        "{}\n{}",
        f["message"],
        task_summary(&tasks)
    );
    // Its scheduler no longer runs: retired, not active.
    let states: Vec<String> = master
        .cli_list(&["policy", "list", "--json"])
        .iter()
        .filter(|r| r["slot"] == slot.as_str())
        .map(|r| r["state"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(states, ["superseded", "retired"]);
    for i in 0..50 {
        let attempts: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["name"] == format!("t{i}").as_str())
            .collect();
        assert_eq!(attempts.len(), 1, "t{i} launched once: {attempts:?}");
        assert_eq!(attempts[0]["state"], "TASK_FINISHED", "{:?}", attempts[0]);
        let id = attempts[0]["id"].as_str().unwrap_or("");
        assert_eq!(containers_of(id).len(), 1, "one container for {id}");
    }
    // And no container of the framework beyond its 50 tasks.
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=corral.framework_id={fw_id}"),
        ])
        .output()
        .expect("docker ps");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count(),
        50
    );
}

#[test]
fn draining_an_agent_moves_its_service_instances_before_the_deadline() {
    crate::harness::require_docker();
    let master = Master::start(&["--allocation-interval", "100ms"]);
    let dirs = [TempDir::new("drain-a"), TempDir::new("drain-b")];
    // Declared before the agents, so dropped after them: a live scheduler would replace
    // the containers the cleanup removes.
    let _cleanup: Vec<_> = dirs.iter().map(|d| ContainerCleanup(d.0.clone())).collect();
    let _agents: Vec<_> = dirs.iter().map(|d| master.agent(&d.0, &[])).collect();
    wait_for("the agents", Duration::from_secs(10), || {
        master.agents().len() == 2
    });
    let name = unique("drain");
    let workload = format!(
        "instances = 4\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"sleep 600\"]\ncpus = 0.1\nmem_mb = 16\n"
    );
    submit(&master, &dirs[0], &name, "service", &workload);
    let running = |tasks: &[Value]| -> Vec<Value> {
        tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .cloned()
            .collect()
    };
    wait_for("4 instances", Duration::from_secs(60), || {
        running(&framework_tasks(&master, &name)).len() == 4
    });
    let drained = agent_id(&dirs[0].0).expect("agent id");
    assert!(
        running(&framework_tasks(&master, &name))
            .iter()
            .any(|t| t["agent_id"] == drained.as_str()),
        "spread puts instances on both agents"
    );
    let out = master.cli(&["agent", "drain", &drained, "--deadline", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(master.agent_state(&drained).as_deref(), Some("draining"));
    // Within 55 s: before the 60 s deadline would kill what is left.
    wait_for(
        "the instances to move off the drained agent",
        Duration::from_secs(55),
        || {
            let tasks = framework_tasks(&master, &name);
            let r = running(&tasks);
            r.len() == 4
                && r.iter().all(|t| t["agent_id"] != drained.as_str())
                && tasks.iter().all(|t| {
                    t["agent_id"] != drained.as_str()
                        || !matches!(
                            t["state"].as_str(),
                            Some(
                                "TASK_RUNNING" | "TASK_STARTING" | "TASK_STAGING" | "TASK_KILLING"
                            )
                        )
                })
        },
    );
    // Moved by the scheduler (killed after their replacements ran), not lost.
    let tasks = framework_tasks(&master, &name);
    assert!(
        tasks
            .iter()
            .filter(|t| t["agent_id"] == drained.as_str())
            .all(|t| t["state"] == "TASK_KILLED"),
        "{tasks:?}"
    );
    let out = master.cli(&["agent", "undrain", &drained]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(master.agent_state(&drained).as_deref(), Some("active"));
}
