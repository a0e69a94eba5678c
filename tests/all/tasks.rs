//! Tasks through the whole path: `corral task run` → master → agent → Docker → status
//! updates back, on the real engine with the local test image.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{unique, wait_for, ContainerCleanup, Master, TempDir, TEST_IMAGE};

fn task(master: &Master, id: &str) -> Option<Value> {
    master
        .cli_list(&["task", "list", "--json"])
        .into_iter()
        .find(|t| t["id"] == id)
}

fn run(master: &Master, args: &[&str]) -> std::process::Output {
    let mut full = vec!["task", "run", "--image", TEST_IMAGE];
    full.extend_from_slice(args);
    master.cli(&full)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tasks_run_report_and_fail_with_clear_errors() {
    crate::harness::require_docker();
    // Three ended tasks kept: the fourth to end makes the master forget the first.
    let master = Master::start(&["--max-completed-tasks", "3"]);
    let agent_dir = TempDir::new("task-agent");
    let _agent = master.agent(&agent_dir.0, &["--ports", "31100-31199"]);
    let _cleanup = ContainerCleanup(agent_dir.0.clone());
    let (env_id, exit_id, sleep_id, noimage_id) = (
        unique("env"),
        unique("exit3"),
        unique("sleep"),
        unique("noimage"),
    );
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });

    // Echo the environment: FINISHED, and the output comes back through the master.
    let out = run(
        &master,
        &[
            "--id",
            &env_id,
            "--env",
            "GREETING=hello-corral",
            "--wait",
            "--",
            "sh",
            "-c",
            "env",
        ],
    );
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("TASK_FINISHED"), "{}", stdout(&out));
    let logs = master.cli(&["task", "logs", &env_id]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(
        stdout(&logs).contains("GREETING=hello-corral"),
        "logs: {}",
        stdout(&logs)
    );

    // A failing command: FAILED with its exit code; `--wait` exits 1.
    let out = run(
        &master,
        &["--id", &exit_id, "--wait", "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(1));
    let t = task(&master, &exit_id).expect("task listed");
    assert_eq!(t["state"], "TASK_FAILED");
    assert_eq!(t["exit_code"], 3);

    // Kill a sleeper: KILLED within its grace period.
    let out = run(
        &master,
        &[
            "--id",
            &sleep_id,
            "--kill-grace",
            "1s",
            "--",
            "sleep",
            "300",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the sleeper to run", Duration::from_secs(20), || {
        task(&master, &sleep_id).is_some_and(|t| t["state"] == "TASK_RUNNING")
    });
    let kill = master.cli(&["task", "kill", &sleep_id]);
    assert!(kill.status.success(), "{}", stderr(&kill));
    let took = wait_for("the sleeper to be killed", Duration::from_secs(15), || {
        task(&master, &sleep_id).is_some_and(|t| t["state"] == "TASK_KILLED")
    });
    assert!(took < Duration::from_secs(10), "kill took {took:?}");

    // Invalid specs are refused before anything reaches Docker, naming the field.
    for (args, field) in [
        (vec!["--cpus", "1000"], "resources.cpus_milli: 1000 CPUs"),
        (vec!["--mem", "99999999"], "resources.mem_mb"),
        (vec!["--port", "80:40000"], "port_mappings[0].host_port"),
    ] {
        let mut full = args.clone();
        full.extend(["--", "true"]);
        let out = run(&master, &full);
        assert_eq!(out.status.code(), Some(1), "{args:?} must be refused");
        assert!(stderr(&out).contains(field), "{args:?}: {}", stderr(&out));
    }
    for (cpus, said) in [
        ("-1", "CPUs must be zero or more"),
        ("0", "at least 0.01 CPUs"),
    ] {
        let out = master.cli(&[
            "task", "run", "--image", TEST_IMAGE, "--cpus", cpus, "--", "true",
        ]);
        assert_eq!(
            out.status.code(),
            Some(64),
            "--cpus {cpus} is a usage error"
        );
        assert!(stderr(&out).contains(said), "{}", stderr(&out));
    }

    // A missing image (no registry here): FAILED with a message naming the image.
    let out = master.cli(&[
        "task",
        "run",
        "--image",
        "127.0.0.1:1/corral/does-not-exist:1",
        "--id",
        &noimage_id,
        "--wait",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let t = task(&master, &noimage_id).expect("task listed");
    assert_eq!(t["state"], "TASK_FAILED");
    assert!(
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1/corral/does-not-exist:1")),
        "{t}"
    );
    // It has no logs, and is said to have never started.
    let logs = master.cli(&["task", "logs", &noimage_id]);
    assert!(!logs.status.success());
    assert!(
        stderr(&logs).contains("never started, so it has no logs: pulling image"),
        "{}",
        stderr(&logs)
    );

    // Four tasks have ended, and three are kept: the first launched is forgotten.
    wait_for(
        "the oldest ended task to be forgotten",
        Duration::from_secs(10),
        || task(&master, &env_id).is_none(),
    );
    for id in [&exit_id, &sleep_id, &noimage_id] {
        assert!(task(&master, id).is_some(), "{id} is kept");
    }
}

#[test]
fn status_updates_reach_a_master_that_was_down_when_the_task_ended() {
    crate::harness::require_docker();
    let mut master = Master::start(&["--heartbeat-interval", "200ms", "--agent-timeout", "5s"]);
    let agent_dir = TempDir::new("survive-agent");
    let agent = master.agent(&agent_dir.0, &["--ports", "31200-31299"]);
    let _cleanup = ContainerCleanup(agent_dir.0.clone());
    let id = unique("survive");
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });

    let out = run(
        &master,
        &["--id", &id, "--", "sh", "-c", "sleep 2; echo done"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the task to run", Duration::from_secs(20), || {
        task(&master, &id).is_some_and(|t| t["state"] == "TASK_RUNNING")
    });

    // A second task is launched and the master dies at once, before the agent's updates
    // for it (starting, running, finished) can be acknowledged.
    let quick = unique("quick");
    let out = run(&master, &["--id", &quick, "--", "sh", "-c", "echo quick"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The master dies; the tasks finish while it is gone.
    master.proc.kill9();
    wait_for(
        "the agent to checkpoint the finished task",
        Duration::from_secs(20),
        || {
            std::fs::read(agent_dir.0.join("checkpoint.pb"))
                .is_ok_and(|b| b.windows(b"exited 0".len()).any(|w| w == b"exited 0"))
        },
    );

    // Back on the same address and state folder: the agent re-registers and replays.
    master.restart();
    wait_for(
        "the update to reach the restarted master",
        Duration::from_secs(20),
        || task(&master, &id).is_some_and(|t| t["state"] == "TASK_FINISHED" && t["exit_code"] == 0),
    );
    wait_for(
        "the quick task's updates to reach the restarted master",
        Duration::from_secs(20),
        || {
            task(&master, &quick)
                .is_some_and(|t| t["state"] == "TASK_FINISHED" && t["exit_code"] == 0)
        },
    );
    drop(agent);
}

#[test]
fn a_kill_while_the_agent_is_away_is_taken_and_waits_for_it() {
    let master = Master::start(&["--agent-timeout", "60s"]);
    let agent_dir = TempDir::new("away-agent");
    let mut agent = master.agent(
        &agent_dir.0,
        &["--containerizer", "simulated", "--sim-run-time", "600s"],
    );
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });
    // (The tasks of a framework the master does not know: an error, not "no tasks".)
    let out = master.cli(&["task", "list", "--framework", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no framework nope"),
        "{}",
        stderr(&out)
    );
    let id = unique("away");
    let out = run(&master, &["--id", &id, "--", "sleep", "600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the task to run", Duration::from_secs(10), || {
        task(&master, &id).is_some_and(|t| t["state"] == "TASK_RUNNING")
    });
    // The agent stops (as an operator stops it); the master keeps its tasks until the
    // agent timeout, and a kill asked meanwhile is taken (exit status 0), the answer
    // saying that it waits for the agent.
    let pid = agent.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    wait_for("the agent to exit", Duration::from_secs(10), || {
        !agent.is_running()
    });
    // The stopped agent said so: the master knows well before QUIC's 10 s idle timeout.
    let mut said = String::new();
    let took = wait_for(
        "a kill answered as waiting for the agent",
        Duration::from_secs(5),
        || {
            let out = master.cli(&["task", "kill", &id]);
            assert!(out.status.success(), "{}", stderr(&out));
            said = stdout(&out);
            said.contains("is not connected: the kill is sent when it comes back")
        },
    );
    eprintln!("the master saw the agent gone after {took:?}: {said}");
    let t = task(&master, &id).expect("the task");
    assert_eq!(t["kill_requested"], true, "{t}");
    // Back, the agent reports the task (a simulated task does not outlive its agent: lost),
    // and the kill is done with.
    let _agent = master.agent(
        &agent_dir.0,
        &["--containerizer", "simulated", "--sim-run-time", "600s"],
    );
    wait_for("the task to end", Duration::from_secs(20), || {
        task(&master, &id).is_some_and(|t| t["kill_requested"] == false)
    });
    let t = task(&master, &id).expect("the task");
    assert_eq!(t["state"], "TASK_LOST", "{t}");
}
