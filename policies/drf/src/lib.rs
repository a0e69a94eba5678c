//! Weighted dominant resource fairness as a Corral allocator component.
//!
//! The algorithm is the one documented in `runtime/core/src/drf.rs` (the native reference);
//! the host's differential tests hold the two to identical offers, so change both together.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

wit_bindgen::generate!({
    path: "../../wit",
    world: "allocator",
});

use corral::policy::types::{Framework, Resources};

struct Drf;

#[derive(Clone, Copy, PartialEq)]
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

const ZERO: Resources = Resources {
    cpus_milli: 0,
    mem_mb: 0,
    disk_mb: 0,
};

fn is_zero(r: &Resources) -> bool {
    r.cpus_milli == 0 && r.mem_mb == 0 && r.disk_mb == 0
}

fn contains(a: &Resources, b: &Resources) -> bool {
    a.cpus_milli >= b.cpus_milli && a.mem_mb >= b.mem_mb && a.disk_mb >= b.disk_mb
}

fn add(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpus_milli: a.cpus_milli.saturating_add(b.cpus_milli),
        mem_mb: a.mem_mb.saturating_add(b.mem_mb),
        disk_mb: a.disk_mb.saturating_add(b.disk_mb),
    }
}

fn sub(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpus_milli: a.cpus_milli.saturating_sub(b.cpus_milli),
        mem_mb: a.mem_mb.saturating_sub(b.mem_mb),
        disk_mb: a.disk_mb.saturating_sub(b.disk_mb),
    }
}

/// Frameworks with equal demands form a class; the first agent that may have room for a
/// class's demand is shared by its frameworks. Classes are numbered in order of demand, so
/// that the numbering is the same on every run. As `demand_classes` in
/// `runtime/core/src/drf.rs`.
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

fn dominant_share(allocated: &Resources, total: &Resources) -> f64 {
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

impl Guest for Drf {
    fn allocate(view: AllocatorView) -> Vec<Offer> {
        let n_agents = view.agents.len();
        let n_roles = view.roles.len();
        let n_fws = view.frameworks.len();
        let mut free = view.agents;
        let (class, mut class_cursor) = demand_classes(&view.frameworks);
        let mut fw_alloc: Vec<Resources> = view.frameworks.iter().map(|f| f.allocated).collect();
        let mut role_alloc = vec![ZERO; n_roles];
        for f in &view.frameworks {
            if let Some(r) = role_alloc.get_mut(f.role as usize) {
                *r = add(r, &f.allocated);
            }
        }
        let mut filtered: Vec<Vec<u32>> = vec![Vec::new(); n_fws];
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

        let total = view.total;
        let weights: Vec<f64> = view.roles.iter().map(|r| r.weight).collect();
        let mut fw_heaps: Vec<BinaryHeap<Reverse<(Share, u32)>>> = vec![BinaryHeap::new(); n_roles];
        let mut wanted = vec![0u32; n_fws];
        for (i, f) in view.frameworks.iter().enumerate() {
            let role = f.role as usize;
            if f.suppressed || f.wanted == 0 || role >= n_roles {
                continue;
            }
            let w = weights[role];
            if !(w.is_finite() && w > 0.0) {
                continue;
            }
            wanted[i] = f.wanted;
            fw_heaps[role].push(Reverse((
                Share(dominant_share(&fw_alloc[i], &total)),
                i as u32,
            )));
        }
        let role_key =
            |alloc: &Resources, role: usize| Share(dominant_share(alloc, &total) / weights[role]);
        let mut role_heap: BinaryHeap<Reverse<(Share, u32)>> = BinaryHeap::new();
        for (r, heap) in fw_heaps.iter().enumerate() {
            if !heap.is_empty() {
                role_heap.push(Reverse((role_key(&role_alloc[r], r), r as u32)));
            }
        }

        let mut cursor = vec![0usize; n_fws];
        let mut last_offer: Vec<Option<usize>> = vec![None; n_fws];
        let mut offers: Vec<Offer> = Vec::new();

        while let Some(Reverse((key, r))) = role_heap.pop() {
            let role = r as usize;
            let Some(Reverse((_, fw))) = fw_heaps[role].pop() else {
                continue;
            };
            let f = fw as usize;
            let demand = view.frameworks[f].demand;
            let whole = is_zero(&demand);
            // Agents before the class cursor have no room for this demand (free resources
            // only shrink); the scan moves it on over a run of agents without room.
            let mut a = cursor[f].max(class_cursor[class[f]]);
            let mut advance = a == class_cursor[class[f]];
            let mut placed = None;
            while a < n_agents {
                let room = if whole {
                    !is_zero(&free[a])
                } else {
                    contains(&free[a], &demand)
                };
                if !room {
                    if advance {
                        class_cursor[class[f]] = a + 1;
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
                    free[a] = sub(&free[a], &unit);
                    fw_alloc[f] = add(&fw_alloc[f], &unit);
                    role_alloc[role] = add(&role_alloc[role], &unit);
                    match last_offer[f] {
                        Some(o) if offers[o].agent == a as u32 => {
                            offers[o].resources = add(&offers[o].resources, &unit);
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
                        fw_heaps[role]
                            .push(Reverse((Share(dominant_share(&fw_alloc[f], &total)), fw)));
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
}

export!(Drf);
