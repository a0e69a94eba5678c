//! Hot swap under load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use corral_core::view::{AllocatorView, Resources, Role};
use corral_policy::{fixtures, AllocatorSlot, PolicyState};

use crate::{framework, host, policy};

#[test]
fn swap_under_load_loses_no_cycle() {
    const SWAPS: usize = 100;
    let slot = Arc::new(AllocatorSlot::new(host(), "allocator"));
    let versions = [policy(fixtures::DRF), policy(fixtures::DRF_C)];
    slot.swap(&versions[0], "test").expect("loads");

    let done = Arc::new(AtomicBool::new(false));
    let cycles_run = Arc::new(AtomicU64::new(0));

    let cycler = {
        let (slot, done, cycles_run) = (slot.clone(), done.clone(), cycles_run.clone());
        std::thread::spawn(move || {
            // A cluster where tasks finish: each cycle applies its offers as allocations
            // and frees the oldest ones, so that every cycle has something to offer.
            let agent = Resources::new(8000, 16_384, 1000);
            let unit = Resources::new(500, 1024, 10);
            let mut view = AllocatorView {
                now_ms: 0,
                total: Resources::new(8000 * 50, 16_384 * 50, 1000 * 50),
                agents: vec![agent; 50],
                roles: vec![Role { weight: 1.0 }, Role { weight: 2.0 }],
                frameworks: (0..10).map(|i| framework(i % 2, unit, 4)).collect(),
                filters: Vec::new(),
            };
            let mut running: std::collections::VecDeque<corral_core::view::Offer> =
                Default::default();
            let mut seen = Vec::new();
            let mut cycles = 0u64;
            while !done.load(Ordering::Acquire) {
                let allocation = slot.allocate(&view).expect("every cycle answers");
                for o in &allocation.offers {
                    let free = &mut view.agents[o.agent as usize];
                    assert!(free.contains(&o.resources), "offered only free resources");
                    *free = free.saturating_sub(&o.resources);
                    let f = &mut view.frameworks[o.framework as usize];
                    f.allocated = f.allocated.saturating_add(&o.resources);
                    running.push_back(*o);
                }
                while running.len() > 60 {
                    let Some(o) = running.pop_front() else { break };
                    view.agents[o.agent as usize] =
                        view.agents[o.agent as usize].saturating_add(&o.resources);
                    let f = &mut view.frameworks[o.framework as usize];
                    f.allocated = f.allocated.saturating_sub(&o.resources);
                }
                view.now_ms += 1;
                cycles += 1;
                seen.push(allocation.policy);
                cycles_run.store(cycles, Ordering::Release);
            }
            (cycles, seen)
        })
    };

    for i in 0..SWAPS {
        slot.swap(&versions[(i + 1) % 2], "test")
            .expect("a good policy swaps in");
        // Let the cycler run on the new version before the next swap (no fixed sleeps):
        // counted from the end of the swap, since cycles during the swap may be on the old
        // version (and a swap of a cached component is short enough for two of them).
        let before = cycles_run.load(Ordering::Acquire);
        while cycles_run.load(Ordering::Acquire) < before + 2 {
            std::thread::yield_now();
        }
    }
    done.store(true, Ordering::Release);
    let (cycles, seen) = cycler.join().expect("the cycle thread does not panic");

    // Every cycle ran exactly once: the slot counted as many calls as the cycler made.
    let history = slot.history();
    assert_eq!(history.len(), SWAPS + 1);
    let calls: u64 = history.iter().map(|r| r.calls).sum();
    let errors: u64 = history.iter().map(|r| r.errors).sum();
    assert_eq!(calls, cycles, "no cycle lost or run twice");
    assert_eq!(errors, 0);
    assert_eq!(seen.len() as u64, cycles);
    // Both versions answered, and the answering version changed at least once per swap.
    let digests: HashSet<&String> = seen.iter().collect();
    assert_eq!(digests.len(), 2);
    let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes >= SWAPS - 1,
        "{changes} changes of version for {SWAPS} swaps"
    );
    assert_eq!(
        history
            .iter()
            .filter(|r| r.state == PolicyState::Active)
            .count(),
        1
    );
    assert_eq!(history.last().map(|r| r.state), Some(PolicyState::Active));
}
