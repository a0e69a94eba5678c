//! Policies in a running master: swaps through the CLI, hostile components contained.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{unique, wait_for, Master, TempDir, TEST_IMAGE};

fn policies(master: &Master) -> Vec<Value> {
    master.cli_list(&["policy", "list", "--json"])
}

fn active(master: &Master) -> String {
    active_in(master, "allocator")
}

/// The digest of the policy active in `slot`.
fn active_in(master: &Master, slot: &str) -> String {
    let list = policies(master);
    let active: Vec<&Value> = list
        .iter()
        .filter(|r| r["slot"] == slot && r["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "exactly one active in {slot}: {list:?}");
    active[0]["digest"].as_str().unwrap_or_default().to_owned()
}

/// The record of `digest`'s latest load in `slot`.
fn record(master: &Master, slot: &str, digest: &str) -> Value {
    let list = policies(master);
    list.iter()
        .rev()
        .find(|r| r["slot"] == slot && r["digest"] == digest)
        .cloned()
        .unwrap_or_else(|| panic!("{digest} is in {slot}'s history: {list:?}"))
}

#[test]
fn allocator_swaps_while_running_and_hostile_policies_are_contained() {
    let mut master = Master::start(&["--allocation-interval", "50ms"]);
    let agent_dir = TempDir::new("policy-agent");
    let _agent = master.agent(&agent_dir.0, &["--containerizer", "simulated"]);
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });

    let builtin = active(&master);
    assert_eq!(policies(&master)[0]["who"], "built-in");

    // A good swap: the C twin of the DRF allocator.
    let out = master.cli(&[
        "policy",
        "swap",
        "allocator",
        corral_policy::fixtures::DRF_C,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c_digest = active(&master);
    assert_ne!(c_digest, builtin);
    assert_eq!(
        c_digest,
        corral_policy::digest(&std::fs::read(corral_policy::fixtures::DRF_C).expect("read"))
    );
    // Cycles run on it.
    wait_for(
        "cycles on the new allocator",
        Duration::from_secs(10),
        || {
            policies(&master)
                .iter()
                .any(|r| r["digest"] == c_digest.as_str() && r["calls"].as_u64().unwrap_or(0) >= 3)
        },
    );

    // Hostile components are refused; the master stays up and the C DRF stays active.
    for (fixture, what) in [
        (corral_policy::fixtures::ENDLESS_LOOP, "endless loop"),
        (corral_policy::fixtures::MEMORY_BOMB, "memory bomb"),
        (corral_policy::fixtures::TRAP, "trap"),
        (corral_policy::fixtures::BAD_IMPORT, "bad import"),
    ] {
        let out = master.cli(&["policy", "swap", "allocator", fixture]);
        assert_eq!(out.status.code(), Some(1), "{what} must be rejected");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("swap rejected"), "{what}: {err}");
        assert_eq!(
            active(&master),
            c_digest,
            "{what} left the active policy in place"
        );
        let digest = corral_policy::digest(&std::fs::read(fixture).expect("read"));
        let list = policies(&master);
        let rec = list
            .iter()
            .rev()
            .find(|r| r["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("{what} is in the history: {list:?}"));
        assert_eq!(rec["state"], "rejected", "{what}: {rec}");
        assert!(rec["errors"].as_u64().unwrap_or(0) >= 1, "{what}: {rec}");
        assert!(
            rec["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {rec}"
        );
    }

    // A file that is no component at all.
    let junk = TempDir::new("junk");
    let path = junk.0.join("junk.wasm");
    std::fs::write(&path, b"not wasm").expect("write");
    let out = master.cli(&["policy", "swap", "allocator", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not a WebAssembly component"), "{said}");
    assert!(master.proc.is_running(), "the master is still running");
    assert_eq!(master.agents().len(), 1);
}

#[test]
fn policies_rolled_back_stay_rolled_back_across_a_restart() {
    // Cycles a second apart: a new policy's probation (ten good calls) outlasts the steps
    // before the agent comes.
    let mut master = Master::start(&["--allocation-interval", "1s"]);
    let builtin = active(&master);
    // No agent yet: the allocator's dry run sees none, so the trap fixture (which traps once
    // there are agents) is taken (last, just before the agent comes); so is the bad
    // scheduler, which errs only on offers.
    let swap = |slot: &str, file: &str| {
        let out = master.cli(&["policy", "swap", slot, file]);
        assert!(
            out.status.success(),
            "swap {slot}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let calls = |master: &Master, digest: &str| {
        record(master, "allocator", digest)["calls"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for(
        "a cycle on the built-in DRF",
        Duration::from_secs(10),
        || calls(&master, &builtin) >= 1,
    );
    let dir = TempDir::new("rollback");
    let name = unique("rb");
    let workload = dir.0.join("workload.toml");
    std::fs::write(
        &workload,
        format!("[[task]]\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sleep\", \"600\"]\n"),
    )
    .expect("workload");
    master.cli_ok(&[
        "framework",
        "submit",
        &name,
        "--scheduler",
        "first-fit",
        "--workload",
        &workload.display().to_string(),
    ]);
    let slot = format!("framework/{name}");
    let first_fit = active_in(&master, &slot);
    swap(&slot, corral_policy::fixtures::BAD_SCHEDULER);
    let bad = corral_policy::digest(
        &std::fs::read(corral_policy::fixtures::BAD_SCHEDULER).expect("read"),
    );

    swap("allocator", corral_policy::fixtures::TRAP);
    let trap = corral_policy::digest(&std::fs::read(corral_policy::fixtures::TRAP).expect("read"));
    assert_eq!(active(&master), trap);

    // An agent, while the trap is still on probation: the cycles trap, and after three in
    // a row the DRF is back; its offers go to the bad scheduler, whose invalid answers roll
    // it back to first-fit, which launches the task (each invalid answer declines the
    // agent for 5 s).
    let agent_dir = TempDir::new("rollback-agent");
    let _agent = master.agent(
        &agent_dir.0,
        &["--containerizer", "simulated", "--sim-run-time", "600s"],
    );
    let running = |master: &Master| {
        master.cli_json(&["framework", "show", &name, "--json"])["task_list"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
    };
    wait_for("the agent", Duration::from_secs(10), || {
        master.agents().len() == 1
    });
    let r = record(&master, "allocator", &trap);
    assert!(
        r["calls"].as_u64().is_some_and(|c| c < 10),
        "the trap left its probation before the agent came, so cannot be rolled back: {r}"
    );
    wait_for("first-fit to run the task", Duration::from_secs(60), || {
        running(&master)
    });
    assert_eq!(active(&master), builtin);
    assert_eq!(active_in(&master, &slot), first_fit);
    // Cycles go on; the count the master has when it stops is what its history keeps.
    let by_now = calls(&master, &builtin);
    wait_for("more cycles", Duration::from_secs(10), || {
        calls(&master, &builtin) >= by_now + 3
    });
    let served = calls(&master, &builtin);

    // A restart loads the policies rolled back to, and the history keeps what happened.
    master.restart_gracefully();
    assert_eq!(
        active(&master),
        builtin,
        "the restart loads the built-in DRF"
    );
    assert_eq!(
        active_in(&master, &slot),
        first_fit,
        "the restart loads first-fit for {name}"
    );
    for (slot, digest, what) in [
        ("allocator", trap.as_str(), "the trap allocator"),
        (slot.as_str(), bad.as_str(), "the bad scheduler"),
    ] {
        let r = record(&master, slot, digest);
        assert_eq!(r["state"], "rolled back", "{what}: {r}");
        assert!(r["errors"].as_u64().unwrap_or(0) >= 3, "{what}: {r}");
        assert!(
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("rolled back")),
            "{what}: {r}"
        );
    }
    // The built-in DRF's record from before the restart has the calls it had answered
    // when the master stopped, not the zero of its load.
    let before = policies(&master)
        .into_iter()
        .find(|r| {
            r["slot"] == "allocator"
                && r["digest"] == builtin.as_str()
                && r["state"] == "superseded"
        })
        .unwrap_or_default();
    assert!(
        before["calls"].as_u64().is_some_and(|c| c >= served),
        "{before} (it had answered {served} calls)"
    );
    assert!(running(&master), "the task still runs");
}

#[test]
fn an_allocator_started_from_a_file_is_loaded_again_without_the_flag() {
    let file = corral_policy::fixtures::DRF_C;
    let mut master = Master::start(&["--allocator", file]);
    let c = corral_policy::digest(&std::fs::read(file).expect("read"));
    assert_eq!(active(&master), c);
    master.drop_arg("--allocator");
    master.restart_gracefully();
    assert_eq!(active(&master), c, "the restart loads the allocator it had");
    assert_eq!(record(&master, "allocator", &c)["who"], "restored");
}
