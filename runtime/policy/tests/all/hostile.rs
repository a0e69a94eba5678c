//! Hostile policies are contained: the host goes on, the last good policy stays active,
//! and the error is in the slot's history.

use corral_core::view::Resources;
use corral_policy::{fixtures, AllocatorSlot, InvalidAnswer, PolicyError, PolicyState, SwapError};

use crate::{framework, host, policy, simple_view, slot_with};

fn busy_view() -> corral_core::view::AllocatorView {
    let unit = Resources::new(500, 512, 0);
    simple_view(
        4,
        Resources::new(4000, 4096, 100),
        vec![framework(0, unit, 3), framework(1, unit, 3)],
    )
}

/// The good DRF is active, answers like before, and `digest` is in the history as `state`.
fn assert_contained(slot: &AllocatorSlot, good: &str, hostile: &str, state: PolicyState) -> String {
    assert_eq!(
        slot.active().as_deref(),
        Some(good),
        "the last good policy stays active"
    );
    let view = busy_view();
    let answer = slot.allocate(&view).expect("the good policy still answers");
    assert_eq!(answer.offers, corral_core::drf::allocate(&view));
    assert_eq!(answer.policy, good);
    let history = slot.history();
    let record = history
        .iter()
        .rev()
        .find(|r| r.digest == hostile)
        .unwrap_or_else(|| panic!("{hostile} is in the history: {history:#?}"));
    assert_eq!(record.state, state, "{record:#?}");
    assert!(record.errors >= 1, "errors are counted: {record:#?}");
    record.last_error.clone().expect("the error is recorded")
}

/// Loads DRF and runs one cycle, so that swaps are dry-run on a real view.
fn good_slot(name: &str) -> (AllocatorSlot, String) {
    let slot = slot_with(name, fixtures::DRF);
    slot.allocate(&busy_view()).expect("drf answers");
    let good = slot.active().expect("drf active");
    (slot, good)
}

#[test]
fn hostile_policies_are_rejected_by_their_dry_run() {
    type Expect = fn(&SwapError) -> bool;
    let cases: [(&str, Expect); 7] = [
        (fixtures::ENDLESS_LOOP, |e| {
            matches!(
                e,
                SwapError::DryRun {
                    source: PolicyError::Timeout { .. },
                    ..
                }
            )
        }),
        (fixtures::MEMORY_BOMB, |e| {
            matches!(
                e,
                SwapError::DryRun {
                    source: PolicyError::MemoryCap { .. },
                    ..
                }
            )
        }),
        (fixtures::TRAP, |e| {
            matches!(
                e,
                SwapError::DryRun {
                    source: PolicyError::Trap { .. },
                    ..
                }
            )
        }),
        (fixtures::OVERCOMMIT, |e| {
            matches!(
                e,
                SwapError::DryRun {
                    source: PolicyError::Invalid(InvalidAnswer::NotFree { .. }),
                    ..
                }
            )
        }),
        (fixtures::ENORMOUS, |e| {
            matches!(
                e,
                SwapError::DryRun {
                    source: PolicyError::Invalid(InvalidAnswer::TooManyOffers {
                        count: 200_000,
                        ..
                    }),
                    ..
                }
            )
        }),
        (fixtures::BAD_IMPORT, |e| {
            matches!(e, SwapError::World { .. })
        }),
        (fixtures::OLD_WIT, |e| {
            matches!(e, SwapError::World { message, .. }
                if message.contains("corral:policy/log@0.1.0")
                    && message.contains("another version of the WIT package"))
        }),
    ];
    let (slot, good) = good_slot("allocator");
    for (path, expected) in cases {
        let bytes = policy(path);
        let err = slot
            .swap(&bytes, "mallory")
            .expect_err("a hostile policy is rejected");
        assert!(expected(&err), "{path}: unexpected error {err:?}");
        let digest = corral_policy::digest(&bytes);
        let recorded = assert_contained(&slot, &good, &digest, PolicyState::Rejected);
        assert_eq!(recorded, err.to_string());
    }
    let history = slot.history();
    assert_eq!(history.len(), 8);
    assert_eq!(
        history
            .iter()
            .filter(|r| r.state == PolicyState::Active)
            .count(),
        1
    );
}

#[test]
fn hostile_policies_that_pass_a_dry_run_are_rolled_back() {
    // Before any cycle the dry run uses an empty view, on which these behave; in real
    // cycles they fail, and after `rollback_after` failures in a row the DRF is back.
    let rollback_after = host().config().rollback_after;
    for path in [
        fixtures::ENDLESS_LOOP,
        fixtures::MEMORY_BOMB,
        fixtures::TRAP,
        fixtures::OVERCOMMIT,
    ] {
        let slot = slot_with("allocator", fixtures::DRF);
        let good = slot.active().expect("drf active");
        let bytes = policy(path);
        let hostile = slot
            .swap(&bytes, "mallory")
            .expect("passes its dry run on an empty view")
            .digest;
        assert_eq!(slot.rollbacks().count, 0, "a swap is not a rollback");
        assert_eq!(slot.active().as_deref(), Some(hostile.as_str()));
        let view = busy_view();
        for _ in 0..rollback_after {
            let err = slot.allocate(&view).expect_err("the hostile policy fails");
            let expected = match path {
                p if p == fixtures::ENDLESS_LOOP => matches!(err, PolicyError::Timeout { .. }),
                p if p == fixtures::MEMORY_BOMB => matches!(err, PolicyError::MemoryCap { .. }),
                p if p == fixtures::TRAP => matches!(err, PolicyError::Trap { .. }),
                _ => matches!(err, PolicyError::Invalid(InvalidAnswer::NotFree { .. })),
            };
            assert!(expected, "{path}: unexpected error {err:?}");
            // A trap says what it was first, then where, in the policy's own names.
            if let PolicyError::Trap { message } = &err {
                assert!(message.starts_with("wasm trap:"), "{message}");
                assert!(message.contains("panicking::panic_fmt"), "{message}");
            }
        }
        let recorded = assert_contained(&slot, &good, &hostile, PolicyState::RolledBack);
        assert!(recorded.contains("rolled back"), "{recorded}");
        assert_eq!(
            slot.rollbacks(),
            corral_policy::Rollbacks {
                count: 1,
                restored: Some(good.clone()),
            }
        );
        let record = slot
            .history()
            .into_iter()
            .find(|r| r.digest == hostile)
            .expect("recorded");
        assert_eq!(record.errors, u64::from(rollback_after));
    }
}

#[test]
fn a_policy_without_a_predecessor_stays_and_counts_errors() {
    let empty = AllocatorSlot::new(host(), "allocator");
    assert!(matches!(
        empty.allocate(&busy_view()),
        Err(PolicyError::Empty { .. })
    ));
    let slot = AllocatorSlot::new(host(), "allocator");
    slot.swap(&policy(fixtures::TRAP), "test")
        .expect("passes a dry run on an empty view");
    for _ in 0..5 {
        assert!(matches!(
            slot.allocate(&busy_view()),
            Err(PolicyError::Trap { .. })
        ));
    }
    let history = slot.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, PolicyState::Active);
    assert_eq!(history[0].errors, 5);
}

#[test]
fn garbage_is_rejected() {
    let (slot, good) = good_slot("allocator");
    let garbage = b"\0asm this is not a component".to_vec();
    let err = slot.swap(&garbage, "mallory").expect_err("not a component");
    assert!(matches!(err, SwapError::Compile { .. }), "{err:?}");
    let record = slot.history().pop().expect("recorded");
    assert_eq!(record.state, PolicyState::Rejected);
    assert_eq!(slot.active().as_deref(), Some(good.as_str()));
    // A scheduler is not an allocator.
    let err = slot
        .swap(&policy(fixtures::FIRST_FIT), "mallory")
        .expect_err("wrong world");
    assert!(matches!(err, SwapError::World { .. }), "{err:?}");
}

#[test]
fn wasi_is_deny_all_and_deterministic() {
    let slot = slot_with("allocator", fixtures::WASI_PROBE);
    let mut view = busy_view();
    view.agents = vec![Resources::new(100_000, 100_000, 100_000); 2];
    let first = slot.allocate(&view).expect("probe answers").offers;
    let second = slot.allocate(&view).expect("probe answers").offers;
    assert_eq!(first, second, "same view, same answer");
    let seen = first[0].resources;
    // cpus: 1 + the wall clock (fixed at the configured 0 ms); disk: env vars × 100 + files.
    assert_eq!(
        seen.cpus_milli,
        1 + host().config().wasi_wall_clock_ms % 1000
    );
    assert_eq!(seen.disk_mb, 0, "no environment, no files");
    // Randomness is seeded: another host with another seed sees something else.
    let other = corral_policy::PolicyHost::new(corral_policy::PolicyConfig {
        random_seed: 7,
        ..corral_policy::PolicyConfig::default()
    })
    .expect("host");
    let slot2 = AllocatorSlot::new(&other, "allocator");
    slot2
        .swap(&policy(fixtures::WASI_PROBE), "test")
        .expect("loads");
    let third = slot2.allocate(&view).expect("probe answers").offers;
    assert_ne!(
        third[0].resources.mem_mb, seen.mem_mb,
        "the seed decides the randomness"
    );
}

/// A slot of a host of its own (so that no other test holds its warm places), with the
/// `instance-reuse` fixture loaded. The swap's dry run is the fixture's first call.
fn instance_reuse_slot(config: corral_policy::PolicyConfig) -> AllocatorSlot {
    let own = corral_policy::PolicyHost::new(config).expect("host");
    let slot = AllocatorSlot::new(&own, "allocator");
    slot.swap(&policy(fixtures::INSTANCE_REUSE), "test")
        .expect("loads");
    slot
}

/// What the fixture answers in an instance that answered before (`now-ms` even).
fn offers_an_unknown_agent<T: std::fmt::Debug>(r: &Result<T, PolicyError>) -> bool {
    matches!(
        r,
        Err(PolicyError::Invalid(InvalidAnswer::UnknownAgent { .. }))
    )
}

#[test]
fn an_allocator_keeps_its_instance_between_calls_until_one_fails() {
    let slot = instance_reuse_slot(corral_policy::PolicyConfig {
        warm_instances: 1,
        ..corral_policy::PolicyConfig::default()
    });
    let mut view = busy_view();
    view.now_ms = 2_000;
    let reused = slot.allocate(&view);
    assert!(
        offers_an_unknown_agent(&reused),
        "the cycle after the dry run runs in the dry run's instance: {reused:?}"
    );
    // The instance that answered wrong is gone: the next cycle gets a fresh one, which
    // is kept for the cycle after.
    slot.allocate(&view).expect("a fresh instance answers");
    assert!(
        offers_an_unknown_agent(&slot.allocate(&view)),
        "the fresh instance is kept"
    );

    // Without a warm place, every call gets a fresh instance.
    let slot = instance_reuse_slot(corral_policy::PolicyConfig {
        warm_instances: 0,
        ..corral_policy::PolicyConfig::default()
    });
    for _ in 0..3 {
        slot.allocate(&view).expect("a fresh instance every call");
    }
}

#[test]
fn a_policy_that_fills_its_kept_instance_is_called_again_in_a_fresh_one() {
    let slot = instance_reuse_slot(corral_policy::PolicyConfig {
        warm_instances: 1,
        memory_limit: 8 << 20,
        ..corral_policy::PolicyConfig::default()
    });
    // A megabyte kept per call: a kept instance reaches the 8 MiB cap every few calls.
    let mut view = busy_view();
    view.now_ms = 2_001;
    for call in 0..40 {
        slot.allocate(&view)
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
    }
    let record = slot.history().pop().expect("a record");
    assert_eq!((record.calls, record.errors), (40, 0), "{record:?}");
    // Even `now-ms` again: the instance the last call left is kept and answers wrong.
    view.now_ms = 2_000;
    assert!(offers_an_unknown_agent(&slot.allocate(&view)));
}
