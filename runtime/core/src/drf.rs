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
//! # Cost
//!
//! "The first agent from here with room" is a forward scan: free resources only shrink
//! within a cycle, so an agent without room for a demand never gets room again. Each
//! framework keeps a cursor (where it last found room), and so does each *demand class*
//! (the frameworks with equal demands): the run of full agents at the front of the list is
//! then scanned once per distinct demand rather than once per framework. A filtered agent
//! stops a class cursor (filters are per framework). A cycle costs about
//! `O(classes · agents + units · log frameworks)`; the answer is the linear scan's.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::view::{AllocatorView, Framework, Offer, Resources};

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

/// Frameworks with equal demands form a class: the first agent that may have room for a
/// class's demand is shared by its frameworks, so that a run of full agents is scanned once
/// per demand rather than once per framework. Returns each framework's class and a cursor
/// per class. Classes are numbered in order of demand (deterministic).
fn demand_classes(frameworks: &[Framework]) -> (Vec<usize>, Vec<usize>) {
    let key = |i: usize| {
        let d = &frameworks[i].demand;
        (d.cpus_milli, d.mem_mb, d.disk_mb)
    };
    let mut order: Vec<usize> = (0..frameworks.len()).collect();
    order.sort_unstable_by_key(|&i| key(i));
    let mut class = vec![0usize; frameworks.len()];
    let mut classes = 0usize;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && key(order[k - 1]) != key(i) {
            classes += 1;
        }
        class[i] = classes;
    }
    let n = if frameworks.is_empty() {
        0
    } else {
        classes + 1
    };
    (class, vec![0usize; n])
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
    let (class, mut class_cursor) = demand_classes(&view.frameworks);
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

        // First agent, from the cursor on, with room and no filter. Agents before the
        // class cursor have no room for this demand; the scan moves it on over a run of
        // agents without room (free resources only shrink within a cycle).
        let c = class[f];
        let mut a = cursor[f].max(class_cursor[c]);
        let mut advance = a == class_cursor[c];
        let mut placed = None;
        while a < n_agents {
            let room = if whole {
                !free[a].is_zero()
            } else {
                free[a].contains(&demand)
            };
            if !room {
                if advance {
                    class_cursor[c] = a + 1;
                }
            } else if filtered[f].binary_search(&(a as u32)).is_err() {
                placed = Some(a);
                break;
            } else {
                advance = false;
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
