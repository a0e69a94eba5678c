//! The generic schedulers (first-fit, bin-pack under WASI, spread), the built-in table, the
//! hostile scheduler and the host's validation of decisions.

use corral_policy::scheduler::{
    check_decisions, Decision, Decline, Launch, NetworkMode, PortMapping, PortRange, Resources,
    SchedulerView, Task, TaskReason, TaskSpec, TaskState,
};
use corral_policy::{builtin, fixtures, InvalidAnswer, PolicyError, SchedulerSlot, SwapError};

use crate::host;
use crate::sim::{demand, failure, launches, offer, res, scheduler, specs, view, Sim};

/// Two tasks; `t2` wants container port 8080 on any host port.
const TWO_TASKS: &str = r#"
retries = 1
image = "corral/busybox:test"

[[task]]
name = "t1"
command = ["sleep", "1"]
cpus = 1.0
mem_mb = 512

[[task]]
name = "t2"
cpus = 2.0
mem_mb = 1024
ports = [8080]
env = { MODE = "fast" }
"#;

/// A big offer first, then one that `t1` fills exactly, then a small one.
fn three_offers() -> Vec<corral_policy::scheduler::ResourceOffer> {
    vec![
        offer("a1", res(4000, 4096)),
        offer("a2", res(1000, 512)),
        offer("a3", res(100, 64)),
    ]
}

#[test]
fn first_fit_takes_the_first_offer_with_room() {
    let mut sim = Sim::new(fixtures::FIRST_FIT, TWO_TASKS);
    let d = sim.schedule(three_offers());
    assert_eq!(
        launches(&d),
        vec![(0, vec!["fw.t1.0".to_owned(), "fw.t2.0".to_owned()])]
    );
    let t2 = specs(&d)[1];
    assert_eq!((t2.name.as_str(), t2.framework_id.as_str()), ("t2", "fw"));
    assert_eq!(t2.image, "corral/busybox:test");
    assert_eq!(t2.env[0].value, "fast");
    assert_eq!(
        t2.port_mappings,
        vec![PortMapping {
            container_port: 8080,
            host_port: 31000,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }],
        "the host port comes from the offer"
    );
    assert_eq!(
        t2.ports,
        vec![PortRange {
            begin: 31000,
            end: 31000
        }]
    );
    // Everything is placed: unused offers go back unmentioned, and the framework suppresses.
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[1], Decision::Suppress);
}

#[test]
fn bin_pack_fills_the_tightest_offer_under_wasi() {
    let mut sim = Sim::new(fixtures::BIN_PACK, TWO_TASKS);
    let d = sim.schedule(three_offers());
    assert_eq!(
        launches(&d),
        vec![
            (0, vec!["fw.t2.0".to_owned()]),
            (1, vec!["fw.t1.0".to_owned()])
        ]
    );
    assert!(d.contains(&Decision::Suppress));
}

#[test]
fn spread_and_bin_pack_place_the_same_tasks_differently() {
    let workload = "cpus = 0.5\nmem_mb = 64\n[[task]]\nname = \"a\"\n[[task]]\nname = \"b\"\n[[task]]\nname = \"c\"\n";
    let offers = || {
        vec![
            offer("a1", res(4000, 4096)),
            offer("a2", res(2000, 2048)),
            offer("a3", res(2000, 2048)),
        ]
    };
    let mut spread = Sim::new(fixtures::SPREAD, workload);
    // A live task of this framework already runs on a2, so a2 comes last.
    spread.view.tasks.push(Task {
        task_id: "fw.old.0".into(),
        name: "old".into(),
        attempt: 0,
        agent_id: "a2".into(),
        state: TaskState::Running,
        reason: TaskReason::Unspecified,
        message: String::new(),
        exit_code: None,
        healthy: None,
        generation: 1,
        resources: res(500, 64),
        launched_ms: 0,
        updated_ms: 0,
    });
    let d = spread.schedule(offers());
    // `old` is not in the workload: it is killed. a and b go to the agents that run
    // nothing, then c to the first of three agents that run one task each.
    assert!(d.contains(&Decision::Kill("fw.old.0".into())));
    let agents: Vec<&str> = ["fw.a.0", "fw.b.0", "fw.c.0"]
        .iter()
        .map(|id| spread.agent_of(id))
        .collect();
    assert_eq!(agents, ["a1", "a3", "a1"]);

    let mut pack = Sim::new(fixtures::BIN_PACK, workload);
    let d = pack.schedule(offers());
    assert_eq!(
        launches(&d),
        vec![(
            1,
            vec![
                "fw.a.0".to_owned(),
                "fw.b.0".to_owned(),
                "fw.c.0".to_owned()
            ]
        )],
        "the fullest offer that has room takes them all"
    );
}

#[test]
fn generic_relaunches_failed_tasks_then_fails_or_completes() {
    let mut sim = Sim::new(fixtures::FIRST_FIT, TWO_TASKS);
    // No offers yet: the framework states what it wants.
    let d = sim.schedule(Vec::new());
    assert_eq!(demand(&d).map(|x| x.count), Some(2));
    assert_eq!(demand(&d).map(|x| x.resources), Some(res(1000, 512)));
    sim.schedule(three_offers());
    assert!(sim.view.suppressed);
    // t1 fails: a new attempt is wanted, so the framework revives with a demand of one.
    let d = sim.update(&["fw.t1.0"], TaskState::Failed, None);
    assert_eq!(d[0], Decision::Revive, "{d:?}");
    assert_eq!(demand(&d).map(|x| x.count), Some(1));
    // It failed at once: its relaunch waits a second (the default backoff).
    let d = sim.schedule(three_offers());
    assert!(launches(&d).is_empty(), "{d:?}");
    sim.view.now_ms += 1000;
    let d = sim.schedule(three_offers());
    assert_eq!(launches(&d), vec![(0, vec!["fw.t1.1".to_owned()])]);
    sim.update(&["fw.t2.0"], TaskState::Finished, None);
    // t1 fails again: retries = 1 is used up.
    let d = sim.update(&["fw.t1.1"], TaskState::Lost, None);
    let msg = failure(&d).expect("the framework fails");
    assert!(msg.starts_with("task t1 failed 2 times"), "{msg}");

    let mut ok = Sim::new(fixtures::FIRST_FIT, TWO_TASKS);
    ok.schedule(three_offers());
    ok.update(&["fw.t1.0"], TaskState::Running, None);
    assert!(ok
        .update(&["fw.t1.0"], TaskState::Finished, None)
        .is_empty());
    assert_eq!(
        ok.update(&["fw.t2.0"], TaskState::Finished, None),
        vec![Decision::Complete]
    );
}

#[test]
fn generic_workload_errors_fail_the_framework() {
    let cases = [
        ("", "workload: no [[task]] entries"),
        (
            "[[task]]\nname = \"a\"\ncpu = 1\n",
            "workload: task a: unknown key `cpu` (did you mean `cpus`?)",
        ),
        ("[[task]\n", "workload: line 1:"),
        ("[[task]]\nname = \"a b\"\n", "workload: task name \"a b\""),
        (
            "[[task]]\n[[task]]\nname = \"task-0\"\n",
            "workload: two tasks are named",
        ),
        ("[[task]]\ncpus = -1\n", "workload: cpus must be"),
    ];
    let slot = scheduler(fixtures::SPREAD);
    for (workload, expected) in cases {
        let d = slot.schedule(&view(workload)).expect("answers");
        let msg = failure(&d).unwrap_or_else(|| panic!("{workload:?}: {d:?}"));
        assert!(msg.starts_with(expected), "{workload:?}: {msg}");
    }
}

#[test]
fn every_builtin_scheduler_loads() {
    assert_eq!(builtin::SCHEDULERS.len(), 7);
    for (name, description) in builtin::SCHEDULERS {
        assert!(!description.is_empty());
        let bytes = builtin::scheduler(name).unwrap_or_else(|| panic!("no builtin {name}"));
        let slot = SchedulerSlot::new(host(), name);
        slot.swap(bytes, "test")
            .unwrap_or_else(|e| panic!("builtin {name}: {e}"));
    }
    assert!(builtin::scheduler("nope").is_none());
}

#[test]
fn the_bad_scheduler_is_rejected() {
    let with_offer = |mode: &str| {
        let mut v = view(&format!("mode = \"{mode}\"\n"));
        v.offers = vec![offer("a1", res(1000, 1024))];
        v
    };
    let slot = scheduler(fixtures::BAD_SCHEDULER);
    let cases = [
        ("too-large", InvalidAnswer::LaunchTooLarge { offer: 0 }),
        (
            "unknown-offer",
            InvalidAnswer::UnknownOffer { index: 0, offer: 1 },
        ),
        (
            "duplicate-id",
            InvalidAnswer::DuplicateTask {
                task_id: "fw.bad.0".into(),
            },
        ),
    ];
    for (mode, expected) in cases {
        assert_eq!(
            slot.schedule(&with_offer(mode)),
            Err(PolicyError::Invalid(expected)),
            "{mode}"
        );
    }
    assert!(matches!(
        slot.schedule(&with_offer("wrong-framework")),
        Err(PolicyError::Invalid(InvalidAnswer::BadTask { .. }))
    ));
    assert!(matches!(
        slot.schedule(&with_offer("trap")),
        Err(PolicyError::Trap { .. })
    ));
    assert_eq!(
        slot.status(&view(""), &[]),
        Err(PolicyError::Invalid(InvalidAnswer::UnknownTask {
            task_id: "no-such-task".into()
        }))
    );
    // In mode `always` it fails even the dry run on an empty view, so a swap refuses it.
    let always = SchedulerSlot::new(host(), "framework/always");
    always.schedule(&view("mode = \"always\"")).ok();
    assert!(matches!(
        always.swap(&crate::policy(fixtures::BAD_SCHEDULER), "test"),
        Err(SwapError::DryRun { .. })
    ));
}

fn spec(id: &str, r: Resources, ports: Vec<PortRange>) -> TaskSpec {
    TaskSpec {
        task_id: id.into(),
        framework_id: "fw".into(),
        name: id.into(),
        image: "corral/busybox:test".into(),
        command: vec!["/bin/sleep".into()],
        args: vec!["1".into()],
        env: Vec::new(),
        resources: r,
        ports,
        port_mappings: Vec::new(),
        network_mode: NetworkMode::Bridge,
        volumes: Vec::new(),
        labels: Vec::new(),
        kill_grace_period_ms: 0,
        health_check: None,
    }
}

fn validation_view() -> SchedulerView {
    let mut v = view("");
    v.offers = three_offers();
    v.tasks.push(Task {
        task_id: "done".into(),
        name: "done".into(),
        attempt: 0,
        agent_id: "a1".into(),
        state: TaskState::Finished,
        reason: TaskReason::CommandExited,
        message: String::new(),
        exit_code: Some(0),
        healthy: None,
        generation: 1,
        resources: res(1, 1),
        launched_ms: 0,
        updated_ms: 0,
    });
    v
}

#[test]
fn invalid_decisions_are_rejected() {
    let v = validation_view();
    let launch = |offer, tasks| Decision::Launch(Launch { offer, tasks });
    let cases = [
        (
            vec![launch(7, vec![spec("x", res(1, 1), vec![])])],
            InvalidAnswer::UnknownOffer { index: 0, offer: 7 },
        ),
        (
            vec![launch(2, vec![spec("x", res(1000, 1), vec![])])],
            InvalidAnswer::LaunchTooLarge { offer: 2 },
        ),
        (
            vec![
                launch(0, vec![spec("x", res(1, 1), vec![])]),
                Decision::Decline(Decline {
                    offer: 0,
                    refuse_seconds: 1,
                }),
            ],
            InvalidAnswer::OfferUsedTwice { offer: 0 },
        ),
        (
            vec![launch(
                0,
                vec![spec("x", res(1, 1), vec![]), spec("x", res(1, 1), vec![])],
            )],
            InvalidAnswer::DuplicateTask {
                task_id: "x".into(),
            },
        ),
        (
            vec![launch(0, vec![spec("done", res(1, 1), vec![])])],
            InvalidAnswer::DuplicateTask {
                task_id: "done".into(),
            },
        ),
        (
            vec![launch(
                0,
                vec![spec("x", res(1, 1), vec![PortRange { begin: 80, end: 80 }])],
            )],
            InvalidAnswer::PortsNotOffered {
                task_id: "x".into(),
                offer: 0,
            },
        ),
        (
            // The offer's ports are 31000-31009: `y` overlaps what `x` took (from either
            // side of its begin), whichever order the ranges come in.
            vec![launch(
                0,
                vec![
                    spec(
                        "x",
                        res(1, 1),
                        vec![
                            PortRange {
                                begin: 31006,
                                end: 31007,
                            },
                            PortRange {
                                begin: 31002,
                                end: 31004,
                            },
                        ],
                    ),
                    spec(
                        "y",
                        res(1, 1),
                        vec![PortRange {
                            begin: 31005,
                            end: 31006,
                        }],
                    ),
                ],
            )],
            InvalidAnswer::PortsNotOffered {
                task_id: "y".into(),
                offer: 0,
            },
        ),
        (
            vec![launch(0, vec![])],
            InvalidAnswer::EmptyLaunch { offer: 0 },
        ),
        (
            vec![Decision::Suppress, Decision::Revive],
            InvalidAnswer::SuppressAndRevive,
        ),
        (
            vec![Decision::Complete, Decision::Fail("no".into())],
            InvalidAnswer::CompleteAndFail,
        ),
        (
            vec![Decision::Kill("done".into())],
            InvalidAnswer::UnknownTask {
                task_id: "done".into(),
            },
        ),
    ];
    for (decisions, expected) in cases {
        assert_eq!(check_decisions(&v, &decisions), Err(expected));
    }
    // Ranges that touch but do not overlap are fine.
    let spec_ports = |name: &str, ranges: &[(u32, u32)]| {
        spec(
            name,
            res(1, 1),
            ranges
                .iter()
                .map(|&(begin, end)| PortRange { begin, end })
                .collect(),
        )
    };
    assert_eq!(
        check_decisions(
            &v,
            &[launch(
                0,
                vec![
                    spec_ports("x", &[(31005, 31009), (31000, 31001)]),
                    spec_ports("y", &[(31002, 31004)]),
                ]
            )]
        ),
        Ok(())
    );
    let bad = |f: fn(&mut TaskSpec)| {
        let mut t = spec("x", res(1, 1), vec![]);
        f(&mut t);
        check_decisions(&v, &[launch(0, vec![t])])
    };
    for f in [
        (|t: &mut TaskSpec| t.framework_id = "other".into()) as fn(&mut TaskSpec),
        |t| t.image.clear(),
        |t| t.task_id = "has space".into(),
        |t| t.resources = res(0, 0),
    ] {
        assert!(matches!(bad(f), Err(InvalidAnswer::BadTask { .. })));
    }
}
