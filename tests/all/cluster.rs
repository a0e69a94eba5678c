//! A live cluster: registration, the unreachable timeout, and a restarted agent's id.

use std::time::Duration;

use crate::harness::{agent_id, wait_for, Master, TempDir};

#[test]
fn three_agents_register_and_a_killed_one_comes_back_with_its_id() {
    let master = Master::start(&["--agent-timeout", "2s", "--heartbeat-interval", "200ms"]);
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("agent{i}"))).collect();
    let mut agents: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| master.agent(&d.0, &["--attribute", &format!("rack=r{i}")]))
        .collect();

    let took = wait_for("three active agents", Duration::from_secs(5), || {
        let list = master.agents();
        list.len() == 3 && list.iter().all(|a| a["state"] == "active")
    });
    eprintln!("three agents registered in {took:?}");
    let list = master.agents();
    for a in &list {
        assert_eq!(a["total"]["cpus"], 2.0);
        assert_eq!(a["total"]["mem_mb"], 2048);
        assert!(a["attributes"]["rack"]
            .as_str()
            .is_some_and(|r| r.starts_with('r')));
    }
    wait_for("the agents' id files", Duration::from_secs(10), || {
        dirs.iter().all(|d| agent_id(&d.0).is_some())
    });
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| agent_id(&d.0).expect("agent kept its id"))
        .collect();

    // kill -9 the first agent: unreachable after the (shortened) timeout, others stay active.
    agents[0].kill9();
    let took = wait_for(
        "the killed agent to become unreachable",
        Duration::from_secs(8),
        || master.agent_state(&ids[0]).as_deref() == Some("unreachable"),
    );
    eprintln!("killed agent unreachable after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "marked unreachable too early: {took:?}"
    );
    for id in &ids[1..] {
        assert_eq!(master.agent_state(id).as_deref(), Some("active"));
    }

    // Restart it on the same state folder: the same id comes back active.
    agents[0] = master.agent(&dirs[0].0, &[]);
    wait_for(
        "the restarted agent to be active again",
        Duration::from_secs(5),
        || master.agent_state(&ids[0]).as_deref() == Some("active"),
    );
    assert_eq!(agent_id(&dirs[0].0).as_deref(), Some(ids[0].as_str()));
    assert_eq!(master.agents().len(), 3, "no new agent was made");
    for a in agents.iter_mut() {
        assert!(a.is_running(), "agent died: {}", a.log_text());
    }
}

#[test]
fn cli_says_where_it_tried_when_no_master_answers() {
    let master = Master::start(&[]);
    let unused = crate::harness::free_udp_addr();
    let out = std::process::Command::new(crate::harness::corral_bin())
        .args(["agents", "--master", &unused.to_string(), "--ca"])
        .arg(master.ca())
        .output()
        .expect("run corral");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&unused.to_string()),
        "names the address: {err}"
    );
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    // An HTTP port in use (a second agent on the host, say) and a QUIC address in use
    // (another master there): said before anything starts.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp = udp.local_addr().expect("addr").to_string();
    let dir = TempDir::new("bad-config");
    let state = dir.0.display().to_string();
    let listen = crate::harness::free_udp_addr().to_string();
    let workload = dir.0.join("w.toml");
    std::fs::write(&workload, "count = 1\n").expect("workload");
    let workload = workload.display().to_string();
    let missing = dir.0.join("missing.toml").display().to_string();
    let http_taken = format!("cannot serve HTTP on {taken}");
    let udp_taken = format!("cannot listen on {udp}");
    // A master, whose state folder another one then asks for (once it answers: it holds
    // its registry by then).
    let running = crate::harness::Master::start(&[]);
    wait_for("the master to answer", Duration::from_secs(10), || {
        running.cli(&["agents"]).status.success()
    });
    let held = running.dir.0.join("state").display().to_string();
    let other = crate::harness::free_udp_addr().to_string();
    let cases: [(&[&str], &str); 11] = [
        (
            &[
                "master",
                "--agent-timeout",
                "100ms",
                "--heartbeat-interval",
                "1s",
            ],
            "agent timeout",
        ),
        (
            &[
                "master", "--listen", &listen, "--state", &state, "--http", &taken,
            ],
            &http_taken,
        ),
        (
            &[
                "agent", "--master", &listen, "--ca", &state, "--state", &state, "--http", &taken,
            ],
            &http_taken,
        ),
        (
            &[
                "master", "--listen", &udp, "--state", &state, "--http", "off",
            ],
            &udp_taken,
        ),
        (
            &[
                "master", "--listen", &other, "--state", &held, "--http", "off",
            ],
            "is in use by another master",
        ),
        (
            &["agent", "--ports", "32000-31000"],
            "runs backwards: write it LOW-HIGH",
        ),
        // Arguments a client gets wrong, said before it connects.
        (
            &["agents", "--master", "127.0.0.1"],
            "expected IP:PORT or HOST:PORT",
        ),
        (
            &["task", "run", "--image", "x", "--mem", "-5", "--", "true"],
            "\"-5\" is not a whole number of MB",
        ),
        (
            &[
                "framework",
                "submit",
                "x",
                "--scheduler",
                "drf",
                "--workload",
                &workload,
            ],
            "drf is the built-in allocator, not a scheduler",
        ),
        (
            &[
                "framework",
                "submit",
                "x",
                "--scheduler",
                "hello",
                "--workload",
                &missing,
            ],
            "cannot read the workload file",
        ),
        (
            &["policy", "swap", "allocator", "no-such-policy"],
            "not a built-in policy (schedulers: hello,",
        ),
    ];
    for (args, said) in cases {
        let out = std::process::Command::new(crate::harness::corral_bin())
            .args(args)
            .output()
            .expect("run corral");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains(said) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
