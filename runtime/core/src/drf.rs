//! Weighted dominant resource fairness (DRF), natively: the reference allocator.
//!
//! This is the same algorithm as the wasm allocator in `policies/drf` (and its C twin in
//! `policies/c/drf.c`); the differential tests in `corral-policy` hold them to identical
//! offers on random views, so any change here must be made there too.
//!
//! # The algorithm
//!
//! Progressive filling with Mesos semantics for one level of roles:
//!
//! - A framework's *dominant share* is the largest, over CPUs, memory and disk (each with a
//!   non-zero cluster total), of what it holds divided by the cluster's total. A role's
//!   share is the dominant share of what all its frameworks hold, divided by its weight.
//! - Frameworks that are suppressed, want nothing, or name a role that does not exist or
//!   has a weight that is not a finite positive number are offered nothing.
//! - Repeatedly take the role with the smallest weighted share, and in it the framework
//!   with the smallest dominant share (ties go to the smaller index), and give that
//!   framework one unit of its demand on the first agent, in view order, that has room for
//!   it and that the framework has not filtered (`now_ms < until_ms`). A framework with an
//!   all-zero demand is given the whole of that agent's free resources instead. A framework
//!   leaves the cycle when it has all it wanted or no agent has room for it.
//! - Units given to one framework on one agent are merged into one offer; offers come out
//!   in the order in which they were first made.
//!
//! The cost is `O((agents + units) · log frameworks)` when most agents have room: each
//! framework keeps a cursor into the agent list that only moves forward in a cycle, since
//! free resources only shrink within one.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::view::{AllocatorView, Offer, Resources};

/// A share with a total order, so that it can key a heap (shares are never NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The dominant share of `allocated` in a cluster of `total`.
pub fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
    let mut share = 0.0_f64;
    for (a, t) in [
        (allocated.cpus_milli, total.cpus_milli),
        (allocated.mem_mb, total.mem_mb),
        (allocated.disk_mb, total.disk_mb),
    ] {
        if t > 0 {
            let s = a as f64 / t as f64;
            if s > share {
                share = s;
            }
        }
    }
    share
}

/// Whether a role's weight can be used: finite and greater than zero.
pub fn valid_weight(weight: f64) -> bool {
    weight.is_finite() && weight > 0.0
}

/// One allocation cycle of weighted DRF over `view`; see the module docs.
pub fn allocate(view: &AllocatorView) -> Vec<Offer> {
    let n_agents = view.agents.len();
    let n_roles = view.roles.len();
    let mut free = view.agents.clone();
    let mut fw_alloc: Vec<Resources> = view.frameworks.iter().map(|f| f.allocated).collect();
    let mut role_alloc = vec![Resources::ZERO; n_roles];
    for f in &view.frameworks {
        if let Some(r) = role_alloc.get_mut(f.role as usize) {
            *r = r.saturating_add(&f.allocated);
        }
    }

    // Active filters, per framework, sorted by agent.
    let mut filtered: Vec<Vec<u32>> = vec![Vec::new(); view.frameworks.len()];
    for f in &view.filters {
        if view.now_ms < f.until_ms {
            if let Some(list) = filtered.get_mut(f.framework as usize) {
                list.push(f.agent);
            }
        }
    }
    for list in &mut filtered {
        list.sort_unstable();
    }

    let mut fw_heaps: Vec<BinaryHeap<Reverse<(Share, u32)>>> = vec![BinaryHeap::new(); n_roles];
    let mut wanted: Vec<u32> = vec![0; view.frameworks.len()];
    for (i, f) in view.frameworks.iter().enumerate() {
        let role = f.role as usize;
        if f.suppressed || f.wanted == 0 || role >= n_roles {
            continue;
        }
        if !valid_weight(view.roles[role].weight) {
            continue;
        }
        wanted[i] = f.wanted;
        fw_heaps[role].push(Reverse((
            Share(dominant_share(&fw_alloc[i], &view.total)),
            i as u32,
        )));
    }
    let role_key = |alloc: &Resources, role: usize| {
        Share(dominant_share(alloc, &view.total) / view.roles[role].weight)
    };
    let mut role_heap: BinaryHeap<Reverse<(Share, u32)>> = BinaryHeap::new();
    for (r, heap) in fw_heaps.iter().enumerate() {
        if !heap.is_empty() {
            role_heap.push(Reverse((role_key(&role_alloc[r], r), r as u32)));
        }
    }

    let mut cursor = vec![0usize; view.frameworks.len()];
    let mut last_offer: Vec<Option<usize>> = vec![None; view.frameworks.len()];
    let mut offers: Vec<Offer> = Vec::new();

    while let Some(Reverse((key, r))) = role_heap.pop() {
        let role = r as usize;
        let Some(Reverse((_, fw))) = fw_heaps[role].pop() else {
            continue;
        };
        let f = fw as usize;
        let demand = view.frameworks[f].demand;
        let whole = demand.is_zero();

        // First agent, from the cursor on, with room and no filter.
        let mut placed = None;
        let mut a = cursor[f];
        while a < n_agents {
            let room = if whole {
                !free[a].is_zero()
            } else {
                free[a].contains(&demand)
            };
            if room && filtered[f].binary_search(&(a as u32)).is_err() {
                placed = Some(a);
                break;
            }
            a += 1;
        }
        cursor[f] = a;

        match placed {
            Some(a) => {
                let unit = if whole { free[a] } else { demand };
                free[a] = free[a].saturating_sub(&unit);
                fw_alloc[f] = fw_alloc[f].saturating_add(&unit);
                role_alloc[role] = role_alloc[role].saturating_add(&unit);
                match last_offer[f] {
                    Some(o) if offers[o].agent == a as u32 => {
                        offers[o].resources = offers[o].resources.saturating_add(&unit);
                    }
                    _ => {
                        last_offer[f] = Some(offers.len());
                        offers.push(Offer {
                            agent: a as u32,
                            framework: fw,
                            resources: unit,
                        });
                    }
                }
                wanted[f] -= 1;
                if wanted[f] > 0 {
                    fw_heaps[role].push(Reverse((
                        Share(dominant_share(&fw_alloc[f], &view.total)),
                        fw,
                    )));
                }
                if !fw_heaps[role].is_empty() {
                    role_heap.push(Reverse((role_key(&role_alloc[role], role), r)));
                }
            }
            None => {
                if !fw_heaps[role].is_empty() {
                    role_heap.push(Reverse((key, r)));
                }
            }
        }
    }
    offers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Filter, Framework, Role};

    fn fw(role: u32, demand: Resources, wanted: u32) -> Framework {
        Framework {
            role,
            allocated: Resources::ZERO,
            demand,
            wanted,
            suppressed: false,
        }
    }

    fn tasks_of(offers: &[Offer], framework: u32, unit: Resources) -> u64 {
        offers
            .iter()
            .filter(|o| o.framework == framework)
            .map(|o| o.resources.cpus_milli / unit.cpus_milli)
            .sum()
    }

    #[test]
    fn drf_paper_example() {
        let a = Resources::new(1000, 4096, 0);
        let b = Resources::new(3000, 1024, 0);
        let view = AllocatorView {
            now_ms: 0,
            total: Resources::new(9000, 18 * 1024, 0),
            agents: vec![Resources::new(9000, 18 * 1024, 0)],
            roles: vec![Role { weight: 1.0 }, Role { weight: 1.0 }],
            frameworks: vec![fw(0, a, 100), fw(1, b, 100)],
            filters: vec![],
        };
        let offers = allocate(&view);
        assert_eq!(tasks_of(&offers, 0, a), 3);
        assert_eq!(tasks_of(&offers, 1, b), 2);
        let share_a = dominant_share(&offers[0].resources, &view.total);
        let share_b = dominant_share(&offers[1].resources, &view.total);
        assert!((share_a - 2.0 / 3.0).abs() < 1e-12, "{share_a}");
        assert!((share_b - 2.0 / 3.0).abs() < 1e-12, "{share_b}");
    }

    #[test]
    fn weights_divide_shares() {
        let unit = Resources::new(1000, 1024, 0);
        let view = AllocatorView {
            now_ms: 0,
            total: Resources::new(12_000, 12 * 1024, 0),
            agents: vec![Resources::new(6000, 6 * 1024, 0); 2],
            roles: vec![Role { weight: 2.0 }, Role { weight: 1.0 }],
            frameworks: vec![fw(0, unit, 100), fw(1, unit, 100)],
            filters: vec![],
        };
        let offers = allocate(&view);
        assert_eq!(tasks_of(&offers, 0, unit), 8);
        assert_eq!(tasks_of(&offers, 1, unit), 4);
    }

    #[test]
    fn suppressed_filtered_and_whole_agents() {
        let view = AllocatorView {
            now_ms: 10,
            total: Resources::new(4000, 4096, 0),
            agents: vec![Resources::new(2000, 2048, 0); 2],
            roles: vec![Role { weight: 1.0 }],
            frameworks: vec![
                Framework {
                    suppressed: true,
                    ..fw(0, Resources::ZERO, 5)
                },
                fw(0, Resources::ZERO, 5),
            ],
            filters: vec![
                Filter {
                    framework: 1,
                    agent: 0,
                    until_ms: 11,
                },
                Filter {
                    framework: 1,
                    agent: 1,
                    until_ms: 10,
                },
            ],
        };
        let offers = allocate(&view);
        assert_eq!(
            offers,
            vec![Offer {
                agent: 1,
                framework: 1,
                resources: Resources::new(2000, 2048, 0)
            }]
        );
    }
}
