//! The example frameworks' schedulers (examples/): hello (C), batch and service (Rust),
//! driven through a [`Sim`] the way the master drives them.

use std::time::{Duration, Instant};

use corral_policy::scheduler::{Check, Decision, TaskState};
use corral_policy::{fixtures, PolicyConfig, PolicyHost, SchedulerSlot};

use crate::sim::{demand, failure, kills, launches, offer, res, specs, view, Sim};

#[test]
fn hello_launches_count_tasks_across_offers_then_completes() {
    let mut sim = Sim::new(fixtures::HELLO, "count = 5\ncpus = 0.5\nmem_mb = 64\n");
    // Room for 2, for 2 (memory-bound), for none.
    let d = sim.schedule(vec![
        offer("a1", res(1000, 1024)),
        offer("a2", res(4000, 128)),
        offer("a3", res(100, 1024)),
    ]);
    assert_eq!(
        launches(&d),
        vec![
            (
                0,
                vec!["fw.hello-0.0".to_owned(), "fw.hello-1.0".to_owned()]
            ),
            (
                1,
                vec!["fw.hello-2.0".to_owned(), "fw.hello-3.0".to_owned()]
            ),
        ]
    );
    let spec = specs(&d)[0];
    assert_eq!(spec.name, "hello-0");
    assert_eq!(spec.image, "busybox:latest");
    assert_eq!(spec.command, ["sh", "-c", "echo \"$MESSAGE\""]);
    assert_eq!(
        (spec.env[0].key.as_str(), spec.env[0].value.as_str()),
        ("MESSAGE", "Hello from Corral!")
    );
    assert_eq!(spec.resources, res(500, 64));
    assert!(
        d.contains(&Decision::Decline(corral_policy::scheduler::Decline {
            offer: 2,
            refuse_seconds: 5
        }))
    );
    let want = demand(&d).expect("one more task wanted");
    assert_eq!((want.resources, want.count), (res(500, 64), 1));

    let d = sim.schedule(vec![offer("a3", res(4000, 4096))]);
    assert_eq!(launches(&d), vec![(0, vec!["fw.hello-4.0".to_owned()])]);
    assert_eq!(d.last(), Some(&Decision::Suppress), "all launched");

    let ids = sim.ids(TaskState::Staging);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(sim.update(&ids[..4], TaskState::Finished, None).is_empty());
    assert_eq!(
        sim.update(&ids[4..], TaskState::Finished, None),
        vec![Decision::Complete]
    );
}

#[test]
fn hello_fails_when_a_task_did_not_finish() {
    let mut sim = Sim::new(fixtures::HELLO, "");
    let d = sim.schedule(vec![offer("a1", res(4000, 4096))]);
    assert_eq!(specs(&d).len(), 3, "count defaults to 3");
    assert_eq!(specs(&d)[0].resources, res(100, 32));
    sim.update(&["fw.hello-0.0", "fw.hello-2.0"], TaskState::Finished, None);
    let d = sim.update(&["fw.hello-1.0"], TaskState::Failed, None);
    let msg = failure(&d).expect("hello fails");
    assert!(
        msg.starts_with("1 of 3 hello tasks did not finish; first: fw.hello-1.0 failed (exit 1)"),
        "{msg}"
    );
}

#[test]
fn hello_reads_its_workload_robustly() {
    let workload = "# greeting\n  count=2   # two\n\r\nmessage = \"say \\\"hi\\\"\\t\\u00e9 # not a comment\"\nimage = 'corral/busybox:test'\n\"cpus\" = 1.5e0\nmem_mb = 1_024\n";
    let mut sim = Sim::new(fixtures::HELLO, workload);
    let d = sim.schedule(vec![offer("a1", res(4000, 4096))]);
    let s = specs(&d);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].env[0].value, "say \"hi\"\t\u{e9} # not a comment");
    assert_eq!(s[0].image, "corral/busybox:test");
    assert_eq!(s[0].resources, res(1500, 1024));

    let slot = crate::sim::scheduler(fixtures::HELLO);
    let cases = [
        ("count = -1", "workload: line 1: expected a whole number"),
        ("count = 2.5", "workload: line 1: expected a whole number"),
        (
            "\ncolour = \"red\"",
            "workload: line 2: unknown key `colour`",
        ),
        (
            "message = \"open",
            "workload: line 1: a string without its closing quote",
        ),
        (
            "image = busybox",
            "workload: line 1: a value that is neither",
        ),
        (
            "count = 1\ncount = 2",
            "workload: line 2: a second value for `count`",
        ),
        (
            "[job]\ncount = 1",
            "workload: line 1: hello takes no tables",
        ),
        (
            "cpus = \"1\"",
            "workload: line 1: expected a number for `cpus`",
        ),
        ("count 3", "workload: line 1: expected `=` after `count`"),
        (
            "count = 3 4",
            "workload: line 1: unexpected text after the value of `count`",
        ),
        ("message = \"\\q\"", "workload: line 1: an unknown escape"),
    ];
    for (workload, expected) in cases {
        let d = slot.schedule(&view(workload)).expect("answers");
        let msg = failure(&d).unwrap_or_else(|| panic!("{workload:?}: {d:?}"));
        assert!(msg.starts_with(expected), "{workload:?}: {msg}");
    }
}

#[test]
fn misspelt_keys_are_named_with_every_key_allowed_and_the_one_meant() {
    let cases = [
        (
            fixtures::SERVICE,
            SERVICE.replace("instances", "instnaces"),
            "workload: unknown key `instnaces` (did you mean `instances`?); the keys here are ",
            ["`instances`", "`name`", "`image`", "`health`"],
        ),
        (
            fixtures::BATCH,
            BATCH.replace("max_failures", "max_failrues"),
            "workload: unknown key `max_failrues` (did you mean `max_failures`?); the keys here are ",
            ["`max_failures`", "`retries`", "`task`", "`image`"],
        ),
        (
            fixtures::FIRST_FIT,
            "retires = 1\n[[task]]\ncommand = [\"true\"]\n".to_owned(),
            "workload: unknown key `retires` (did you mean `retries`?)",
            ["`retries`", "`task`", "`backoff_ms`", "`cpus`"],
        ),
        (
            fixtures::BATCH,
            "[[task]]\nname = \"a\"\ncommand = [\"true\"]\nretrys = 1\n".to_owned(),
            "workload: task a: unknown key `retrys` (did you mean `retries`?)",
            ["`name`", "`retries`", "`command`", "`env`"],
        ),
    ];
    for (path, workload, start, listed) in cases {
        let slot = crate::sim::scheduler(path);
        let d = slot.schedule(&view(&workload)).expect("answers");
        let msg = failure(&d).unwrap_or_else(|| panic!("{workload:?}: {d:?}"));
        assert!(msg.starts_with(start), "{msg}");
        for key in listed {
            assert!(msg.contains(key), "{key} in {msg}");
        }
        // The check a master makes before it takes a workload says the same, and a good
        // workload passes it.
        assert_eq!(slot.check_workload(&workload), Err(msg.to_owned()));
    }
    // In a table within: that table's keys only.
    let d = crate::sim::scheduler(fixtures::SERVICE)
        .schedule(&view(&SERVICE.replace("interval_ms", "intervall_ms")))
        .expect("answers");
    let msg = failure(&d).expect("refused");
    assert!(
        msg.starts_with(
            "workload: unknown key `intervall_ms` (did you mean `interval_ms`?); the keys there are "
        ) && msg.contains("`http`")
            && !msg.contains("`instances`"),
        "{msg}"
    );
    let slot = crate::sim::scheduler(fixtures::SERVICE);
    assert_eq!(slot.check_workload(SERVICE), Ok(()));
    // A swap to a scheduler that cannot run the framework's workload is rejected, not
    // made active to fail the framework.
    slot.prime(view(SERVICE));
    let before = slot.active();
    let err = slot
        .swap(&crate::policy(fixtures::FIRST_FIT), "test")
        .expect_err("first-fit cannot run a service workload");
    assert!(
        matches!(
            &err,
            corral_policy::SwapError::DryRun {
                source: corral_policy::PolicyError::FailsFramework { message },
                ..
            } if message.starts_with("workload: unknown key `instances`")
        ),
        "{err}"
    );
    assert_eq!(slot.active(), before);
    // Loaded again at a restart, on a starting view: the first real call decides.
    let restored = slot
        .restore(&crate::policy(fixtures::FIRST_FIT), "restored")
        .expect("restored whatever its dry run answers");
    assert_eq!(slot.active(), Some(restored.digest));
    // Not a slip of a letter or two: no guess.
    let d = crate::sim::scheduler(fixtures::SERVICE)
        .schedule(&view(&format!(
            "replicas = 3\n{}",
            SERVICE.replacen("instances = 3\n", "", 1)
        )))
        .expect("answers");
    let msg = failure(&d).expect("refused");
    assert!(
        msg.starts_with("workload: unknown key `replicas`; the keys here are "),
        "{msg}"
    );
}

#[test]
fn hello_launches_ten_thousand_tasks_on_a_hundred_agents_in_one_call() {
    // A host of its own with a generous budget: this test is about the answer, and this
    // crate's own code (the bindings that copy the view) is unoptimised in test builds.
    let host = PolicyHost::new(PolicyConfig {
        scheduler_budget: Duration::from_secs(5),
        concurrent_calls: 1,
        ..PolicyConfig::default()
    })
    .expect("policy host starts");
    let slot = SchedulerSlot::new(&host, "framework/hello");
    slot.swap(&crate::policy(fixtures::HELLO), "test")
        .expect("hello loads");
    let mut sim = Sim {
        slot,
        view: view("count = 10000\n"),
    };
    let offers = (0..100)
        .map(|i| offer(&format!("agent-{i}"), res(16_000, 65_536)))
        .collect();
    let start = Instant::now();
    let d = sim.schedule(offers);
    let first = start.elapsed();
    assert_eq!(launches(&d).len(), 63, "160 tasks fit in each of 63 offers");
    assert_eq!(specs(&d).len(), 10_000);
    assert_eq!(d.last(), Some(&Decision::Suppress));
    // A status call over 10,000 tasks.
    let start = Instant::now();
    assert!(sim
        .update(&["fw.hello-9999.0"], TaskState::Running, None)
        .is_empty());
    println!(
        "hello, 10,000 tasks: schedule {first:?}, status {:?}",
        start.elapsed()
    );
}

const BATCH: &str = r#"
retries = 2
max_failures = 1
image = "corral/busybox:test"

[[task]]
name = "flaky"
command = ["sh", "-c", "exit 1"]

[[task]]
name = "fine"
command = ["true"]
retries = 0
"#;

#[test]
fn batch_retries_a_failing_task_then_counts_it_failed_and_completes() {
    let mut sim = Sim::new(fixtures::BATCH, BATCH);
    let d = sim.schedule(vec![offer("a1", res(1000, 1024))]);
    assert_eq!(
        launches(&d),
        vec![(0, vec!["fw.flaky.0".to_owned(), "fw.fine.0".to_owned()])]
    );
    sim.update(&["fw.fine.0"], TaskState::Finished, None);
    for attempt in 0..2 {
        let d = sim.update(
            &[format!("fw.flaky.{attempt}").as_str()],
            TaskState::Failed,
            None,
        );
        assert_eq!(demand(&d).map(|x| x.count), Some(1), "retry {attempt}");
        // The relaunch waits 1 s after the first attempt, 2 s after the second.
        let wait = 1000 << attempt;
        sim.view.now_ms += wait - 1;
        let d = sim.schedule(vec![offer("a1", res(1000, 1024))]);
        assert!(launches(&d).is_empty(), "still waiting: {d:?}");
        assert_eq!(demand(&d).map(|x| x.count), Some(1), "still wanted: {d:?}");
        sim.view.now_ms += 1;
        let d = sim.schedule(vec![offer("a1", res(1000, 1024))]);
        assert_eq!(
            launches(&d),
            vec![(0, vec![format!("fw.flaky.{}", attempt + 1)])]
        );
    }
    // The third failure uses up retries = 2; one failed task is within max_failures = 1.
    assert_eq!(
        sim.update(&["fw.flaky.2"], TaskState::Failed, None),
        vec![Decision::Complete]
    );
}

#[test]
fn batch_counts_attempts_the_view_no_longer_holds() {
    let mut sim = Sim::new(fixtures::BATCH, BATCH);
    sim.schedule(vec![offer("a1", res(1000, 1024))]);
    sim.update(&["fw.fine.0"], TaskState::Finished, None);
    // The master forgets old ended attempts, but never the newest of a name.
    let forget = |sim: &mut Sim, id: &str| sim.view.tasks.retain(|t| t.task_id != id);
    sim.update(&["fw.flaky.0"], TaskState::Failed, None);
    sim.view.now_ms += 1000;
    let d = sim.schedule(vec![offer("a1", res(1000, 1024))]);
    assert_eq!(launches(&d), vec![(0, vec!["fw.flaky.1".to_owned()])]);
    forget(&mut sim, "fw.flaky.0");
    sim.update(&["fw.flaky.1"], TaskState::Failed, None);
    sim.view.now_ms += 2000;
    let d = sim.schedule(vec![offer("a1", res(1000, 1024))]);
    // Attempt 2, not a second attempt 1: the id is new.
    assert_eq!(launches(&d), vec![(0, vec!["fw.flaky.2".to_owned()])]);
    forget(&mut sim, "fw.flaky.1");
    // The third failure uses up retries = 2, though the view holds one attempt.
    assert_eq!(
        sim.update(&["fw.flaky.2"], TaskState::Failed, None),
        vec![Decision::Complete]
    );
}

#[test]
fn batch_fails_past_max_failures() {
    let workload = BATCH.replace("max_failures = 1", "max_failures = 0");
    let mut sim = Sim::new(fixtures::BATCH, &workload);
    sim.schedule(vec![offer("a1", res(1000, 1024))]);
    // `fine` has no retries: its one failure is over max_failures = 0 at once.
    let d = sim.update(&["fw.fine.0"], TaskState::Lost, None);
    let msg = failure(&d).expect("batch fails");
    assert!(
        msg.starts_with("1 of 2 tasks failed (max_failures = 0): fine (1 attempts, last lost"),
        "{msg}"
    );
}

const SERVICE: &str = r#"
name = "web"
instances = 3
image = "corral/busybox:test"
command = ["httpd", "-f"]
cpus = 0.5
mem_mb = 128
ports = [80]

[health]
http = { port = 80, path = "/healthz" }
interval_ms = 1000
"#;

fn agents() -> Vec<corral_policy::scheduler::ResourceOffer> {
    vec![
        offer("a1", res(4000, 4096)),
        offer("a2", res(4000, 4096)),
        offer("a3", res(4000, 4096)),
    ]
}

/// A service with its three instances running and healthy.
fn running_service(path: &str) -> Sim {
    let mut sim = Sim::new(path, SERVICE);
    sim.schedule(agents());
    let ids = sim.ids(TaskState::Staging);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sim.update(&ids, TaskState::Running, Some(true));
    sim
}

/// The service asks for whole agents (a zero demand, as many as there are), so that its
/// placement strategy, not the allocator, picks among them.
fn wants_whole_agents(d: &[Decision]) -> bool {
    demand(d).is_some_and(|x| {
        x.count == u32::MAX
            && x.resources.cpus_milli == 0
            && x.resources.mem_mb == 0
            && x.resources.disk_mb == 0
    })
}

#[test]
fn service_spreads_instances_and_restarts_failed_and_lost_ones() {
    let mut sim = Sim::new(fixtures::SERVICE, SERVICE);
    let d = sim.schedule(agents());
    assert_eq!(
        launches(&d),
        vec![
            (0, vec!["fw.web-0.0".to_owned()]),
            (1, vec!["fw.web-1.0".to_owned()]),
            (2, vec!["fw.web-2.0".to_owned()]),
        ],
        "one instance per agent"
    );
    let s = specs(&d)[0];
    assert_eq!(s.port_mappings[0].host_port, 31000);
    let check = &s.health_check.as_ref().expect("health check").check;
    assert!(matches!(check, Check::Http(h) if h.port == 80 && h.path == "/healthz"));
    sim.update(
        &["fw.web-0.0", "fw.web-1.0", "fw.web-2.0"],
        TaskState::Running,
        Some(true),
    );

    let d = sim.update(&["fw.web-1.0"], TaskState::Failed, None);
    assert_eq!(d[0], Decision::Revive, "{d:?}");
    assert!(wants_whole_agents(&d), "{d:?}");
    let d = sim.update(&["fw.web-2.0"], TaskState::Lost, None);
    assert!(wants_whole_agents(&d), "{d:?}");
    // Offers from every agent: the lost instance is replaced at once, where fewest
    // instances run (a2); the failed one waits a second (its backoff), wanted meanwhile.
    let d = sim.schedule(agents());
    assert_eq!(launches(&d), vec![(1, vec!["fw.web-2.1".to_owned()])]);
    assert!(wants_whole_agents(&d), "{d:?}");
    sim.view.now_ms += 999;
    let d = sim.schedule(agents());
    assert!(launches(&d).is_empty(), "{d:?}");
    sim.view.now_ms += 1;
    let d = sim.schedule(agents());
    let ids: Vec<&str> = specs(&d).iter().map(|s| s.task_id.as_str()).collect();
    assert_eq!(ids, ["fw.web-1.1"]);
}

#[test]
fn service_waits_longer_after_each_failure_in_a_row_up_to_its_cap() {
    let workload = "instances = 1\nmax_backoff_ms = 3000\nimage = \"corral/busybox:test\"\ncpus = 0.1\nmem_mb = 32\n";
    let mut sim = Sim::new(fixtures::SERVICE, workload);
    // The nth quick failure in a row: the next attempt waits min(1 s · 2ⁿ⁻¹, 3 s).
    for (attempt, wait) in [(0u32, 1000u64), (1, 2000), (2, 3000), (3, 3000)] {
        let d = sim.schedule(agents());
        let launched: Vec<String> = specs(&d).iter().map(|s| s.task_id.clone()).collect();
        let id = format!("fw.demo-0.{attempt}");
        assert_eq!(launched, std::slice::from_ref(&id), "{d:?}");
        sim.update(&[id.as_str()], TaskState::Failed, None);
        sim.view.now_ms += wait - 1;
        let d = sim.schedule(agents());
        assert!(
            launches(&d).is_empty(),
            "attempt {attempt} + {wait} ms - 1: {d:?}"
        );
        assert!(wants_whole_agents(&d), "still wanted: {d:?}");
        sim.view.now_ms += 1;
    }
    // Attempt 4 runs for ten minutes, then fails: no crash loop, relaunched at once; and
    // the failures start counting again, so attempt 5's quick failure waits 1 s.
    let d = sim.schedule(agents());
    assert_eq!(specs(&d)[0].task_id, "fw.demo-0.4");
    sim.update(&["fw.demo-0.4"], TaskState::Running, None);
    sim.view.now_ms += 10 * 60 * 1000;
    sim.update(&["fw.demo-0.4"], TaskState::Failed, None);
    let d = sim.schedule(agents());
    assert_eq!(specs(&d)[0].task_id, "fw.demo-0.5", "{d:?}");
    sim.update(&["fw.demo-0.5"], TaskState::Failed, None);
    sim.view.now_ms += 999;
    assert!(launches(&sim.schedule(agents())).is_empty());
    sim.view.now_ms += 1;
    let d = sim.schedule(agents());
    assert_eq!(specs(&d)[0].task_id, "fw.demo-0.6", "{d:?}");
}

#[test]
fn service_spread_and_bin_pack_builds_place_differently() {
    let spread = running_service(fixtures::SERVICE);
    let pack = running_service(fixtures::SERVICE_BIN_PACK);
    let on = |sim: &Sim| -> Vec<String> {
        ["fw.web-0.0", "fw.web-1.0", "fw.web-2.0"]
            .iter()
            .map(|id| sim.agent_of(id).to_owned())
            .collect()
    };
    assert_eq!(on(&spread), ["a1", "a2", "a3"]);
    assert_eq!(on(&pack), ["a1", "a1", "a1"]);
}

#[test]
fn service_rolls_an_update_one_instance_at_a_time_waiting_for_health() {
    let mut sim = running_service(fixtures::SERVICE);
    assert!(sim.view.suppressed);
    sim.view.generation = 2;
    sim.view.workload = SERVICE.replace("httpd -f", "httpd -f -v");
    // The update: offers wanted for a replacement.
    let d = sim.schedule(Vec::new());
    assert!(wants_whole_agents(&d), "{d:?}");
    for (i, old) in ["fw.web-0.0", "fw.web-1.0", "fw.web-2.0"]
        .iter()
        .enumerate()
    {
        let new = format!("fw.web-{i}.1");
        let d = sim.schedule(agents());
        assert_eq!(specs(&d).len(), 1, "{d:?}");
        assert_eq!(specs(&d)[0].task_id, new);
        // Running but not yet healthy: nothing is killed and nothing else starts.
        let d = sim.update(&[new.as_str()], TaskState::Running, None);
        assert!(kills(&d).is_empty() && demand(&d).is_none(), "{d:?}");
        let d = sim.schedule(agents());
        assert!(launches(&d).is_empty(), "{d:?}");
        // Healthy: the old instance is killed, and nothing else starts until its agent
        // says it is being killed (offers stay wanted meanwhile, so that the kill is
        // asked for again if it was lost); then the next replacement is launched.
        let d = sim.update(&[new.as_str()], TaskState::Running, Some(true));
        assert_eq!(kills(&d), [old.to_string()]);
        let d = sim.schedule(agents());
        assert!(launches(&d).is_empty(), "{d:?}");
        assert_eq!(kills(&d), [old.to_string()], "asked for again");
        let d = sim.update(&[*old], TaskState::Killing, None);
        assert!(kills(&d).is_empty(), "{d:?}");
        assert_eq!(wants_whole_agents(&d), i < 2, "{d:?}");
        sim.update(&[*old], TaskState::Killed, None);
    }
    assert_eq!(sim.ids(TaskState::Running).len(), 3);
    assert!(sim
        .view
        .tasks
        .iter()
        .all(|t| t.generation == 2 || t.state == TaskState::Killed));
}

#[test]
fn service_moves_instances_off_draining_agents() {
    let mut sim = running_service(fixtures::SERVICE);
    sim.view.draining = vec!["a2".into()];
    // Told of the drain while suppressed, it asks for room for one replacement.
    let d = sim.schedule(Vec::new());
    assert_eq!(d[0], Decision::Revive, "{d:?}");
    assert!(wants_whole_agents(&d), "{d:?}");
    let d = sim.schedule(vec![
        offer("a1", res(4000, 4096)),
        offer("a3", res(4000, 4096)),
    ]);
    assert_eq!(launches(&d), vec![(0, vec!["fw.web-1.1".to_owned()])]);
    assert!(kills(&d).is_empty(), "replacement first");
    let d = sim.update(&["fw.web-1.1"], TaskState::Running, Some(true));
    assert_eq!(kills(&d), ["fw.web-1.0"]);
    assert_eq!(sim.agent_of("fw.web-1.1"), "a1");
}

#[test]
fn the_shipped_workloads_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for (path, example) in [
        (fixtures::HELLO, "hello"),
        (fixtures::BATCH, "batch"),
        (fixtures::SERVICE, "service"),
        (fixtures::SERVICE_BIN_PACK, "service"),
    ] {
        let file = examples.join(example).join("workload.toml");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let d = crate::sim::scheduler(path)
            .schedule(&view(&text))
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(failure(&d), None, "{example}");
        assert!(demand(&d).is_some_and(|x| x.count > 0), "{example}: {d:?}");
    }
}
