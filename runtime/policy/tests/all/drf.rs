//! Weighted DRF through the wasm allocators (Rust and C) against the native reference.

use corral_core::drf::{allocate as native, dominant_share};
use corral_core::view::{AllocatorView, Filter, Framework, Offer, Resources, Role};
use corral_policy::fixtures;
use proptest::prelude::*;

use crate::{framework, simple_view, slot_with};

const GB: u64 = 1024;

fn units(offers: &[Offer], framework: u32, unit: Resources) -> u64 {
    offers
        .iter()
        .filter(|o| o.framework == framework)
        .map(|o| {
            assert_eq!(o.resources.cpus_milli % unit.cpus_milli, 0, "whole units");
            o.resources.cpus_milli / unit.cpus_milli
        })
        .sum()
}

fn held(offers: &[Offer], framework: u32) -> Resources {
    offers
        .iter()
        .filter(|o| o.framework == framework)
        .fold(Resources::ZERO, |acc, o| acc.saturating_add(&o.resources))
}

fn paper_view(wanted: u32) -> AllocatorView {
    let mut view = simple_view(
        1,
        Resources::new(9000, 18 * GB, 0),
        vec![
            framework(0, Resources::new(1000, 4 * GB, 0), wanted),
            framework(1, Resources::new(3000, GB, 0), wanted),
        ],
    );
    view.roles = vec![Role { weight: 1.0 }; 2];
    view
}

#[test]
fn drf_paper_example_in_one_cycle() {
    for path in [fixtures::DRF, fixtures::DRF_C] {
        let slot = slot_with("allocator", path);
        let view = paper_view(100);
        let offers = slot.allocate(&view).expect("drf answers").offers;
        let a = Resources::new(1000, 4 * GB, 0);
        let b = Resources::new(3000, GB, 0);
        assert_eq!(units(&offers, 0, a), 3, "{path}: A gets 3 tasks");
        assert_eq!(units(&offers, 1, b), 2, "{path}: B gets 2 tasks");
        for f in 0..2 {
            let share = dominant_share(&held(&offers, f), &view.total);
            assert!((share - 2.0 / 3.0).abs() < 1e-12, "{path}: share {share}");
        }
        assert_eq!(offers, native(&view), "{path}: same as native");
    }
}

#[test]
fn drf_paper_example_cycle_by_cycle() {
    // One task per framework and cycle; the test applies offers as allocations.
    let slot = slot_with("allocator", fixtures::DRF);
    let mut view = paper_view(1);
    let mut cycles = 0;
    loop {
        let offers = slot.allocate(&view).expect("drf answers").offers;
        if offers.is_empty() {
            break;
        }
        // Each framework wants one task per cycle, and gets at most that.
        assert!(offers.len() <= 2, "{offers:?}");
        for f in 0..2 {
            assert!(offers.iter().filter(|o| o.framework == f).count() <= 1);
        }
        for o in &offers {
            view.agents[o.agent as usize] =
                view.agents[o.agent as usize].saturating_sub(&o.resources);
            let f = &mut view.frameworks[o.framework as usize];
            f.allocated = f.allocated.saturating_add(&o.resources);
        }
        cycles += 1;
        assert!(cycles <= 10, "allocation converges");
    }
    let a = view.frameworks[0].allocated;
    let b = view.frameworks[1].allocated;
    assert_eq!(a, Resources::new(3000, 12 * GB, 0));
    assert_eq!(b, Resources::new(6000, 2 * GB, 0));
    assert!((dominant_share(&a, &view.total) - 2.0 / 3.0).abs() < 1e-12);
    assert!((dominant_share(&b, &view.total) - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn weights_as_mesos_documents_them() {
    let slot = slot_with("allocator", fixtures::DRF);
    let unit = Resources::new(1000, GB, 0);
    // A role of weight 2 gets twice the share of a role of weight 1; weight 3, three times.
    for (weights, expect) in [
        ([2.0, 1.0], [8, 4]),
        ([3.0, 1.0], [9, 3]),
        ([1.0, 1.0], [6, 6]),
    ] {
        let mut view = simple_view(
            4,
            Resources::new(3000, 3 * GB, 0),
            vec![framework(0, unit, 100), framework(1, unit, 100)],
        );
        view.roles = weights.iter().map(|&weight| Role { weight }).collect();
        let offers = slot.allocate(&view).expect("drf answers").offers;
        assert_eq!(
            [units(&offers, 0, unit), units(&offers, 1, unit)],
            expect,
            "weights {weights:?}"
        );
        assert_eq!(offers, native(&view));
    }
    // Frameworks of one role share its weight: role 0 (two frameworks) and role 1 split
    // the cluster evenly, and role 0's frameworks split its half.
    let mut view = simple_view(
        4,
        Resources::new(3000, 3 * GB, 0),
        vec![
            framework(0, unit, 100),
            framework(0, unit, 100),
            framework(1, unit, 100),
        ],
    );
    view.roles = vec![Role { weight: 1.0 }; 2];
    let offers = slot.allocate(&view).expect("drf answers").offers;
    assert_eq!(
        [
            units(&offers, 0, unit),
            units(&offers, 1, unit),
            units(&offers, 2, unit)
        ],
        [3, 3, 6]
    );
}

#[test]
fn suppressed_and_filtered_frameworks_get_nothing() {
    let slot = slot_with("allocator", fixtures::DRF);
    let unit = Resources::new(1000, GB, 0);
    let mut view = simple_view(
        2,
        Resources::new(2000, 2 * GB, 0),
        vec![framework(0, unit, 10), framework(1, unit, 10)],
    );
    view.frameworks[0].suppressed = true;
    view.filters = vec![Filter {
        framework: 1,
        agent: 0,
        until_ms: view.now_ms + 5_000,
    }];
    let offers = slot.allocate(&view).expect("drf answers").offers;
    assert_eq!(
        offers,
        vec![Offer {
            agent: 1,
            framework: 1,
            resources: Resources::new(2000, 2 * GB, 0)
        }]
    );
    // An expired filter no longer applies.
    view.filters[0].until_ms = view.now_ms;
    let offers = slot.allocate(&view).expect("drf answers").offers;
    assert_eq!(units(&offers, 1, unit), 4);
}

fn resources(max: u64) -> impl Strategy<Value = Resources> {
    (0..=max, 0..=max, 0..=max / 2).prop_map(|(c, m, d)| Resources::new(c, m, d))
}

prop_compose! {
    fn views()(
        agents in prop::collection::vec(resources(8000), 0..24),
        weights in prop::collection::vec(prop::sample::select(vec![0.5, 1.0, 1.5, 2.0, 3.0, 0.0]), 0..4),
        frameworks in prop::collection::vec(
            (0u32..5, resources(3000), resources(2000), 0u32..12, prop::bool::weighted(0.15)),
            0..10,
        ),
        filters in prop::collection::vec((0u32..10, 0u32..24, 0u64..2000), 0..12),
        now_ms in 0u64..2000,
        extra in resources(20_000),
    ) -> AllocatorView {
        let total = agents.iter().fold(extra, |acc, a| acc.saturating_add(a));
        AllocatorView {
            now_ms,
            total,
            agents,
            roles: weights.into_iter().map(|weight| Role { weight }).collect(),
            frameworks: frameworks
                .into_iter()
                .map(|(role, allocated, demand, wanted, suppressed)| Framework { role, allocated, demand, wanted, suppressed })
                .collect(),
            filters: filters
                .into_iter()
                .map(|(framework, agent, until_ms)| Filter { framework, agent, until_ms })
                .collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn wasm_drf_and_native_drf_agree(view in views()) {
        static SLOTS: std::sync::OnceLock<(corral_policy::AllocatorSlot, corral_policy::AllocatorSlot)> = std::sync::OnceLock::new();
        let (rust, c) = SLOTS.get_or_init(|| (slot_with("rust", fixtures::DRF), slot_with("c", fixtures::DRF_C)));
        let expected = native(&view);
        corral_policy::check_offers(&view, &expected).map_err(|e| TestCaseError::fail(format!("native DRF made invalid offers: {e}")))?;
        let from_rust = rust.allocate(&view).map_err(|e| TestCaseError::fail(format!("rust drf: {e}")))?.offers;
        prop_assert_eq!(&from_rust, &expected, "rust wasm DRF vs native");
        let from_c = c.allocate(&view).map_err(|e| TestCaseError::fail(format!("c drf: {e}")))?.offers;
        prop_assert_eq!(&from_c, &expected, "C wasm DRF vs native");
    }
}
