//! The Rust schedulers (first-fit; bin-pack under WASI) and the validation of decisions.

use corral_policy::scheduler::{
    check_decisions, Decision, Decline, Launch, NetworkMode, PortRange, ResourceOffer, Resources,
    SchedulerView, TaskReason, TaskSpec, TaskState, TaskStatus,
};
use corral_policy::{fixtures, InvalidAnswer, SchedulerSlot};

use crate::{host, policy};

fn res(cpus_milli: u64, mem_mb: u64) -> Resources {
    Resources {
        cpus_milli,
        mem_mb,
        disk_mb: 0,
    }
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

fn offer(agent: &str, r: Resources) -> ResourceOffer {
    ResourceOffer {
        agent_id: agent.into(),
        hostname: agent.into(),
        resources: r,
        ports: vec![PortRange {
            begin: 31000,
            end: 31009,
        }],
    }
}

fn view() -> SchedulerView {
    SchedulerView {
        now_ms: 0,
        framework_id: "fw".into(),
        role: "web".into(),
        // A big offer first, then a small one that the small task fills exactly.
        offers: vec![
            offer("a1", res(4000, 4096)),
            offer("a2", res(1000, 512)),
            offer("a3", res(100, 64)),
        ],
        pending: vec![
            spec("t1", res(1000, 512), vec![]),
            spec(
                "t2",
                res(2000, 1024),
                vec![PortRange {
                    begin: 31000,
                    end: 31000,
                }],
            ),
        ],
        tasks: Vec::new(),
    }
}

fn slot(path: &str) -> SchedulerSlot {
    let slot = SchedulerSlot::new(host(), "framework/web");
    slot.swap(&policy(path), "test")
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    slot
}

fn launched(decisions: &[Decision]) -> Vec<(u32, Vec<String>)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Launch(l) => {
                Some((l.offer, l.tasks.iter().map(|t| t.task_id.clone()).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn first_fit_takes_the_first_offer_with_room() {
    let d = slot(fixtures::FIRST_FIT)
        .schedule(&view())
        .expect("first-fit answers");
    assert_eq!(
        launched(&d),
        vec![(0, vec!["t1".to_owned(), "t2".to_owned()])]
    );
    assert!(d.contains(&Decision::Decline(Decline {
        offer: 1,
        refuse_seconds: 5
    })));
    assert!(d.contains(&Decision::Decline(Decline {
        offer: 2,
        refuse_seconds: 5
    })));
    assert!(d.contains(&Decision::Suppress), "nothing left pending");
}

#[test]
fn bin_pack_fills_the_tightest_offer_under_wasi() {
    let d = slot(fixtures::BIN_PACK)
        .schedule(&view())
        .expect("bin-pack answers");
    assert_eq!(
        launched(&d),
        vec![(0, vec!["t2".to_owned()]), (1, vec!["t1".to_owned()])]
    );
    assert!(d.contains(&Decision::Decline(Decline {
        offer: 2,
        refuse_seconds: 5
    })));
    assert!(d.contains(&Decision::Suppress));
}

#[test]
fn schedulers_revive_on_failure() {
    let s = slot(fixtures::FIRST_FIT);
    let mut update = TaskStatus {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        state: TaskState::Running,
        reason: TaskReason::Unspecified,
        message: String::new(),
        exit_code: None,
        healthy: None,
    };
    assert_eq!(s.status(&view(), &update).expect("answers"), vec![]);
    update.state = TaskState::Failed;
    assert_eq!(
        s.status(&view(), &update).expect("answers"),
        vec![Decision::Revive]
    );
}

#[test]
fn invalid_decisions_are_rejected() {
    let v = view();
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
            vec![launch(0, vec![])],
            InvalidAnswer::EmptyLaunch { offer: 0 },
        ),
        (
            vec![Decision::Suppress, Decision::Revive],
            InvalidAnswer::SuppressAndRevive,
        ),
    ];
    for (decisions, expected) in cases {
        assert_eq!(check_decisions(&v, &decisions), Err(expected));
    }
    let mut wrong = spec("x", res(1, 1), vec![]);
    wrong.framework_id = "other".into();
    assert!(matches!(
        check_decisions(&v, &[launch(0, vec![wrong])]),
        Err(InvalidAnswer::BadTask { .. })
    ));
    let mut no_image = spec("x", res(1, 1), vec![]);
    no_image.image.clear();
    assert!(matches!(
        check_decisions(&v, &[launch(0, vec![no_image])]),
        Err(InvalidAnswer::BadTask { .. })
    ));
}
