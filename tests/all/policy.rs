//! Policies in a running master: swaps through the CLI, hostile components contained.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{wait_for, Master, TempDir};

fn policies(master: &Master) -> Vec<Value> {
    master.cli_list(&["policy", "list", "--json"])
}

fn active(master: &Master) -> String {
    let list = policies(master);
    let active: Vec<&Value> = list.iter().filter(|r| r["state"] == "active").collect();
    assert_eq!(active.len(), 1, "exactly one active allocator: {list:?}");
    active[0]["digest"].as_str().unwrap_or_default().to_owned()
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
