//! Weighted dominant resource fairness as a Corral allocator component.
//!
//! The algorithm is the one documented in `runtime/core/src/drf.rs` (the native reference);
//! the host's differential tests hold the two to identical offers, so change both together.
//! Differences of implementation, none of which changes an answer, keep the component
//! small and quick (the host compiles it at every swap, in about a millisecond per kilobyte
//! of code): a bump allocator (see [`bump`]), demand classes found with a hash table and
//! per-framework filter lists sorted with a heapsort, where the standard sort and allocator
//! were two thirds of the code; a scan for room that skips a run of full agents in one
//! tight loop. And some that make the compiled wasm quicker (Cranelift, which compiles it,
//! does less than LLVM, which compiles the native one, and checks the call's time budget at
//! every loop turn): shares divide by totals converted once per cycle and take the largest
//! with selects, not branches; the scan for room tries its first agent before it loops, and
//! then two agents a turn; the loser trees replay their matches two levels a turn; the
//! trees and the main loop index their vectors without bounds checks (the indices are in
//! range by construction, and each check reloaded the vector's length from memory: without
//! them the main loop's cycle of 1,000 agents × 100 frameworks takes about 2% less). The
//! view comes in columns (see `wit/policy.wit`), whose resource lists are taken as records
//! where they lie; the offers go out in columns.

mod bump;

#[global_allocator]
static ALLOCATOR: bump::Bump = bump::Bump::new();

wit_bindgen::generate!({
    path: "../../wit",
    world: "allocator",
});

use corral::policy::types::{Filters, Resources};

struct Drf;

/// The smallest of the keys of entries `0..n`, each present or absent, with ties to the
/// smaller index: a loser tree. As `Tourney` in `runtime/core/src/drf.rs`: keys are the
/// bits of shares (never negative or NaN, so ordered like their values), `ABSENT` above
/// every share. Only the winner's key is ever changed, so the matches replayed are those on
/// its path, where each node keeps the winner of the other side.
struct Tourney {
    /// Each entry's key, padded with absent entries to `leaves`, a power of two.
    keys: Vec<u64>,
    /// The entry that lost the match at each inner node (`1..leaves`; entry 0 unused).
    losers: Vec<u32>,
    winner: u32,
    leaves: usize,
}

const ABSENT: u64 = u64::MAX;

impl Tourney {
    /// Not inlined, like [`demand_classes`]: they run at the start of a cycle (a tree per
    /// role, and one of the roles), and out of `allocate` they leave it a third smaller.
    /// The host compiles the policy at every swap of a new version, its functions in
    /// parallel, and `allocate`, the largest, is the longest to compile: a swap's compile
    /// took a third less (49 ms to 33 ms on a 2-core machine), and the cycles no longer.
    #[inline(never)]
    fn new(keys: impl ExactSizeIterator<Item = Option<f64>>) -> Self {
        let leaves = keys.len().next_power_of_two();
        let mut k = vec![ABSENT; leaves];
        for (slot, key) in k.iter_mut().zip(keys) {
            *slot = key.map_or(ABSENT, f64::to_bits);
        }
        // The winner of every node, bottom up (the leaves are `winners[leaves..]`); the
        // losers stay in the tree.
        let mut winners = vec![0u32; 2 * leaves];
        for (i, w) in winners[leaves..].iter_mut().enumerate() {
            *w = i as u32;
        }
        let mut losers = vec![0u32; leaves];
        for n in (1..leaves).rev() {
            let (a, b) = (winners[2 * n], winners[2 * n + 1]);
            // `a`, from the left, has the smaller index: it wins a tie.
            let (w, l) = if k[b as usize] < k[a as usize] {
                (b, a)
            } else {
                (a, b)
            };
            winners[n] = w;
            losers[n] = l;
        }
        Tourney {
            winner: winners[1],
            keys: k,
            losers,
            leaves,
        }
    }

    fn winner(&self) -> Option<usize> {
        let w = self.winner as usize;
        (self.keys[w] != ABSENT).then_some(w)
    }

    /// Sets the winner's key, or makes it absent (`None`), and finds the new winner: one
    /// match per level, against the loser stored there, with selects rather than branches
    /// (which way a match goes is unpredictable); two levels a loop turn, which took about
    /// 2% off a cycle of 1,000 agents × 100 frameworks (as in the scan for room below, a
    /// loop turn in the compiled wasm checks the time budget).
    #[inline(always)]
    fn set_winner(&mut self, key: Option<f64>) {
        let mut cand = self.winner;
        let mut cand_key = key.map_or(ABSENT, f64::to_bits);
        self.keys[cand as usize] = cand_key;
        let mut child = self.leaves + cand as usize;
        while child > 3 {
            self.play(child, &mut cand, &mut cand_key);
            self.play(child / 2, &mut cand, &mut cand_key);
            child /= 4;
        }
        if child > 1 {
            self.play(child, &mut cand, &mut cand_key);
        }
        self.winner = cand;
    }

    /// The match at `child`'s parent: the candidate `cand` (key `cand_key`), coming up
    /// from `child`, against the loser stored there; the winner goes on as the candidate.
    /// `child` is on the path up from a leaf and not the root: `2 <= child < 2 * leaves`.
    #[inline(always)]
    fn play(&mut self, child: usize, cand: &mut u32, cand_key: &mut u64) {
        let node = child / 2;
        // SAFETY: `1 <= node < leaves`; `losers` and `keys` have `leaves` entries, and
        // every entry stored in the tree is below `leaves`.
        unsafe {
            let l = *self.losers.get_unchecked(node);
            let l_key = *self.keys.get_unchecked(l as usize);
            // The loser stored at `node` won the other side: it has the smaller index
            // when that side is the left one (`child` is a right child), and then it
            // wins a tie.
            let l_wins = core::hint::select_unpredictable(
                child & 1 == 1,
                l_key <= *cand_key,
                l_key < *cand_key,
            );
            let (loser, winner, winner_key) =
                core::hint::select_unpredictable(l_wins, (*cand, l, l_key), (l, *cand, *cand_key));
            *self.losers.get_unchecked_mut(node) = loser;
            *cand = winner;
            *cand_key = winner_key;
        }
    }
}

/// `v[i]`, without the bounds check: the callers say why `i` is in range.
#[inline(always)]
fn at<T>(v: &[T], i: usize) -> &T {
    debug_assert!(i < v.len());
    // SAFETY: `i < v.len()`, shown at each call.
    unsafe { v.get_unchecked(i) }
}

/// `&mut v[i]`, without the bounds check: the callers say why `i` is in range.
#[inline(always)]
fn at_mut<T>(v: &mut [T], i: usize) -> &mut T {
    debug_assert!(i < v.len());
    // SAFETY: `i < v.len()`, shown at each call.
    unsafe { v.get_unchecked_mut(i) }
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

/// Sorts a (short) list of agents. A heapsort rather than `sort_unstable`, whose
/// pattern-defeating quicksort and sorting networks were half of this component's code,
/// and so half of the host's compile time when the policy is swapped in.
fn sort_agents(v: &mut [u32]) {
    let sift = |v: &mut [u32], mut node: usize, end: usize| loop {
        let mut child = 2 * node + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && v[child] < v[child + 1] {
            child += 1;
        }
        if v[node] >= v[child] {
            break;
        }
        v.swap(node, child);
        node = child;
    };
    let n = v.len();
    for node in (0..n / 2).rev() {
        sift(v, node, n);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift(v, 0, end);
    }
}

/// Frameworks with equal demands form a class; the first agent that may have room for a
/// class's demand is shared by its frameworks. Returns each framework's class and a cursor
/// per class. As `demand_classes` in `runtime/core/src/drf.rs`, which numbers the classes
/// in order of demand; here they are numbered in order of first appearance, through an
/// open-addressing hash table (linear, and no sort to compile). Only which frameworks
/// share a class matters to the answer, not the numbers.
#[inline(never)]
fn demand_classes(demands: &[Resources]) -> (Vec<usize>, Vec<usize>) {
    let key = |i: usize| {
        let d = &demands[i];
        (d.cpus_milli, d.mem_mb, d.disk_mb)
    };
    let bits = (2 * demands.len())
        .max(2)
        .next_power_of_two()
        .trailing_zeros();
    let mask = (1usize << bits) - 1;
    // Slot -> 1 + the first framework with that demand (0: empty).
    let mut table = vec![0u32; mask + 1];
    let mut class = vec![0usize; demands.len()];
    let mut classes = 0usize;
    for i in 0..demands.len() {
        let (c, m, d) = key(i);
        let h = (c ^ m.rotate_left(21) ^ d.rotate_left(42)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut slot = (h >> (64 - bits)) as usize;
        loop {
            match table[slot] {
                0 => {
                    table[slot] = i as u32 + 1;
                    class[i] = classes;
                    classes += 1;
                    break;
                }
                first if key(first as usize - 1) == (c, m, d) => {
                    class[i] = class[first as usize - 1];
                    break;
                }
                _ => slot = (slot + 1) & mask,
            }
        }
    }
    (class, vec![0usize; classes])
}

/// The divisors of shares: the cluster's total of each resource as an `f64`, converted
/// once per cycle, and infinite for a resource the cluster has none of (its share is then
/// zero, as if it were not counted).
#[derive(Clone, Copy)]
struct Totals([f64; 3]);

impl Totals {
    fn new(total: &Resources) -> Self {
        let divisor = |t: u64| if t > 0 { t as f64 } else { f64::INFINITY };
        Totals([
            divisor(total.cpus_milli),
            divisor(total.mem_mb),
            divisor(total.disk_mb),
        ])
    }

    /// The dominant share of `allocated`, as `dominant_share` in `runtime/core/src/drf.rs`:
    /// the same quotients, and the largest of them (no share is negative or NaN, so the
    /// largest is the same whatever the order). Written as selects rather than a loop with
    /// a branch, so that the share stays in a register in the compiled wasm.
    #[inline(always)]
    fn dominant_share(&self, allocated: &Resources) -> f64 {
        let cpus = allocated.cpus_milli as f64 / self.0[0];
        let mem = allocated.mem_mb as f64 / self.0[1];
        let disk = allocated.disk_mb as f64 / self.0[2];
        let share = if mem > cpus { mem } else { cpus };
        if disk > share {
            disk
        } else {
            share
        }
    }
}

// A `resources` record is three `u64`s in a row (wit-bindgen makes it `#[repr(C)]`), as a
// resource list holds them (see `resource-list` in `wit/policy.wit`).
const _: () =
    assert!(core::mem::size_of::<Resources>() == 24 && core::mem::align_of::<Resources>() == 8);

/// A resource list as the records it holds, without a copy (the list's memory becomes the
/// records' vector). The host makes the view, so the list holds whole records; a list that
/// did not would be copied, its last partial record left out.
fn records(list: Vec<u64>) -> Vec<Resources> {
    if !list.len().is_multiple_of(3) || !list.capacity().is_multiple_of(3) {
        return records_of(&list).to_vec();
    }
    let mut list = core::mem::ManuallyDrop::new(list);
    // SAFETY: the memory holds `capacity / 3` records of `Resources`' layout (the
    // assertion above), `len / 3` of them written; its allocation had the layout of
    // `capacity` `u64`s, which is that of `capacity / 3` records, so the vector frees it
    // as it was made.
    unsafe {
        Vec::from_raw_parts(
            list.as_mut_ptr().cast::<Resources>(),
            list.len() / 3,
            list.capacity() / 3,
        )
    }
}

/// A resource list as a slice of the records it holds (whole records only).
fn records_of(list: &[u64]) -> &[Resources] {
    // SAFETY: as in `records`: `len / 3` records of `Resources`' layout, aligned as `u64`.
    unsafe { core::slice::from_raw_parts(list.as_ptr().cast::<Resources>(), list.len() / 3) }
}

impl Guest for Drf {
    fn allocate(mut view: AllocatorView) -> Offers {
        let mut free = records(core::mem::take(&mut view.agents));
        let mut fw_alloc = records(core::mem::take(&mut view.frameworks.allocated));
        let fws = &view.frameworks;
        let n_roles = view.role_weights.len();
        let n_fws = fws.role.len();
        let demands = records_of(&fws.demand);
        let (class, mut class_cursor) = demand_classes(demands);
        let mut role_alloc = vec![ZERO; n_roles];
        for (&role, allocated) in fws.role.iter().zip(&fw_alloc) {
            if let Some(r) = role_alloc.get_mut(role as usize) {
                *r = add(r, allocated);
            }
        }
        let filtered = active_filters(&view.filters, view.now_ms, n_fws);

        let totals = Totals::new(&view.total);
        let weights = &view.role_weights;
        // The frameworks that take part, by role, in index order (entry `k` of a role's
        // tree is its framework `members[role][k]`).
        let mut wanted = vec![0u32; n_fws];
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); n_roles];
        let asks = fws.role.iter().zip(&fws.suppressed).zip(&fws.wanted);
        for (i, ((&role, &suppressed), &want)) in asks.enumerate() {
            let role = role as usize;
            if suppressed || want == 0 || role >= n_roles {
                continue;
            }
            let w = weights[role];
            if !(w.is_finite() && w > 0.0) {
                continue;
            }
            wanted[i] = want;
            members[role].push(i as u32);
        }
        let mut fw_trees: Vec<Tourney> = members
            .iter()
            .map(|m| {
                Tourney::new(
                    m.iter()
                        .map(|&i| Some(totals.dominant_share(&fw_alloc[i as usize]))),
                )
            })
            .collect();
        // `role < n_roles`, the length of `weights` (see the loop below).
        let role_key =
            |alloc: &Resources, role: usize| totals.dominant_share(alloc) / *at(weights, role);
        let mut roles = Tourney::new(
            members
                .iter()
                .enumerate()
                .map(|(r, m)| (!m.is_empty()).then(|| role_key(&role_alloc[r], r))),
        );

        let mut cursor = vec![0usize; n_fws];
        let mut last_offer: Vec<Option<usize>> = vec![None; n_fws];
        let mut offers: Vec<(u32, u32, Resources)> = Vec::new();

        // The loop below indexes without bounds checks (each reloaded a length from
        // memory): every index is in range by construction. Roles and frameworks come
        // from the trees, whose winners are never padding, so `role < n_roles` and
        // `local < members[role].len()`; `f < n_fws`, the length of every per-framework
        // vector (checked here once); classes are below `class_cursor.len()`; agents are
        // below `n_agents`, and cursors at most `n_agents`.
        let n_agents = free.len();
        assert!(
            [demands.len(), class.len(), fw_alloc.len(), filtered.len()]
                .iter()
                .all(|&n| n == n_fws)
                && weights.len() == n_roles
        );
        while let Some(role) = roles.winner() {
            let tree = at_mut(&mut fw_trees, role);
            let Some(local) = tree.winner() else {
                roles.set_winner(None);
                continue;
            };
            let fw = *at(at(&members, role).as_slice(), local);
            let f = fw as usize;
            let demand = *at(demands, f);
            let whole = is_zero(&demand);
            // Agents before the class cursor have no room for this demand (free resources
            // only shrink); the scan moves it on over a run of agents without room.
            let c = *at(&class, f);
            let mut a = (*at(&cursor, f)).max(*at(&class_cursor, c));
            let mut advance = a == *at(&class_cursor, c);
            let mut placed = None;
            while a < n_agents {
                // The run of agents without room, skipped in one tight loop: moving the
                // class cursor once per run rather than once per agent took a tenth off a
                // cycle of 10,000 agents × 1,000 frameworks (Cranelift keeps little in
                // registers across this function's big loop).
                // With room: anything free for a whole agent, or the demand (which, when
                // not zero, implies something free): one loop for both. The agent at `a`
                // is tried before the loop, since it often has room (a framework's cursor
                // stays on the agent it was last given), and the loop tries two agents a
                // turn: in the compiled wasm every turn of a loop, the first too, checks
                // the call's time budget. Each took 3 to 4% off the cycle of 1,000 agents
                // × 100 frameworks, and 5 to 6% off 10,000 × 1,000 (four agents a turn
                // was slower than two).
                let room = |r: &Resources| contains(r, &demand) && !is_zero(r);
                if !room(at(&free, a)) {
                    a += 1;
                    while a + 1 < n_agents {
                        if room(at(&free, a)) {
                            break;
                        }
                        if room(at(&free, a + 1)) {
                            a += 1;
                            break;
                        }
                        a += 2;
                    }
                    // The last agent, when the pairs left it out.
                    if a + 1 == n_agents && !room(at(&free, a)) {
                        a = n_agents;
                    }
                }
                if advance {
                    *at_mut(&mut class_cursor, c) = a;
                }
                if a == n_agents {
                    break;
                }
                if at(&filtered, f).binary_search(&(a as u32)).is_err() {
                    placed = Some(a);
                    break;
                }
                advance = false;
                a += 1;
            }
            *at_mut(&mut cursor, f) = a;
            let tree = at_mut(&mut fw_trees, role);
            let Some(a) = placed else {
                tree.set_winner(None);
                continue;
            };
            let agent = at_mut(&mut free, a);
            let unit = if whole { *agent } else { demand };
            *agent = sub(agent, &unit);
            let allocated = at_mut(&mut fw_alloc, f);
            *allocated = add(allocated, &unit);
            let share_of_role = at_mut(&mut role_alloc, role);
            *share_of_role = add(share_of_role, &unit);
            let last = at_mut(&mut last_offer, f);
            match *last {
                Some(o) if at(&offers, o).0 == a as u32 => {
                    let offer = at_mut(&mut offers, o);
                    offer.2 = add(&offer.2, &unit);
                }
                _ => {
                    *last = Some(offers.len());
                    offers.push((a as u32, fw, unit));
                }
            }
            let left = at_mut(&mut wanted, f);
            *left -= 1;
            let share = (*left > 0).then(|| totals.dominant_share(at(&fw_alloc, f)));
            at_mut(&mut fw_trees, role).set_winner(share);
            roles.set_winner(Some(role_key(at(&role_alloc, role), role)));
        }
        columns(&offers)
    }
}

/// The agents each framework has filtered at `now_ms`, sorted. This and
/// [`columns`] are not inlined: the host compiles a few small functions faster than one
/// big one (it compiles the policy at every swap).
#[inline(never)]
fn active_filters(filters: &Filters, now_ms: u64, n_fws: usize) -> Vec<Vec<u32>> {
    let mut filtered: Vec<Vec<u32>> = vec![Vec::new(); n_fws];
    for ((&framework, &agent), &until_ms) in filters
        .framework
        .iter()
        .zip(&filters.agent)
        .zip(&filters.until_ms)
    {
        if now_ms < until_ms {
            if let Some(list) = filtered.get_mut(framework as usize) {
                list.push(agent);
            }
        }
    }
    for list in &mut filtered {
        sort_agents(list);
    }
    filtered
}

/// The answer's lists, from `(agent, framework, resources)` rows, in one loop that writes
/// all three.
#[inline(never)]
fn columns(offers: &[(u32, u32, Resources)]) -> Offers {
    let n = offers.len();
    let mut agent: Vec<u32> = Vec::with_capacity(n);
    let mut framework: Vec<u32> = Vec::with_capacity(n);
    let mut resources: Vec<u64> = Vec::with_capacity(3 * n);
    for (i, o) in offers.iter().enumerate() {
        // SAFETY: `i < n`, and `3 * i + 2 < 3 * n`, within each list's capacity.
        unsafe {
            agent.as_mut_ptr().add(i).write(o.0);
            framework.as_mut_ptr().add(i).write(o.1);
            let r = resources.as_mut_ptr().add(3 * i);
            r.write(o.2.cpus_milli);
            r.add(1).write(o.2.mem_mb);
            r.add(2).write(o.2.disk_mb);
        }
    }
    // SAFETY: the first `n` entries of `agent` and `framework`, and `3 * n` of
    // `resources`, are written.
    unsafe {
        agent.set_len(n);
        framework.set_len(n);
        resources.set_len(3 * n);
    }
    Offers {
        agent,
        framework,
        resources,
    }
}

export!(Drf);
