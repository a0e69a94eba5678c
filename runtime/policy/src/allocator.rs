//! The allocator slot: the cluster view in, validated offers out.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::view::{AllocatorView, Offer, Resources};
use wasmtime::component::Component;
use wasmtime::Store;

use crate::bindings::allocator::corral::policy::types as wit;
use crate::bindings::allocator::AllocatorPre;
use crate::error::{InvalidAnswer, PolicyError, SwapError};
use crate::host::{HostInner, PolicyHost, StoreState};
use crate::slot::{Rollbacks, Slot, SwapRecord, World};

pub(crate) struct AllocatorWorld;

impl World for AllocatorWorld {
    const NAME: &'static str = "allocator";
    const EXPORTS: &'static str =
        "an allocator exports `allocate`; a scheduler goes in a framework's slot, framework/NAME";
    const KEEP_WARM: bool = true;
    type Pre = AllocatorPre<StoreState>;
    type Instance = crate::bindings::allocator::Allocator;

    fn pre(host: &HostInner, component: &Component) -> wasmtime::Result<Self::Pre> {
        AllocatorPre::new(host.linker.instantiate_pre(component)?)
    }

    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Self::Instance> {
        pre.instantiate(store)
    }

    fn budget(host: &HostInner) -> Duration {
        host.config.allocator_budget
    }
}

/// Anything that answers an allocation cycle: the wasm slot, or the native reference.
pub trait Allocator: Send + Sync {
    /// One allocation cycle over `view`.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when the policy failed; its offers are then discarded.
    fn allocate(&self, view: &AllocatorView) -> Result<Allocation, PolicyError>;
}

/// The native weighted DRF of `corral-core`, behind the same trait as the wasm slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeDrf;

impl Allocator for NativeDrf {
    fn allocate(&self, view: &AllocatorView) -> Result<Allocation, PolicyError> {
        Ok(Allocation {
            offers: corral_core::drf::allocate(view),
            policy: "native-drf".to_owned(),
        })
    }
}

/// The validated answer of one allocation cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub offers: Vec<Offer>,
    /// The digest of the policy that answered (for the swap record of the cycle).
    pub policy: String,
}

/// The allocator slot. `Send + Sync`: share it in an `Arc` and call it from any thread;
/// calls run concurrently with each other and with a swap.
pub struct AllocatorSlot {
    slot: Slot<AllocatorWorld>,
    /// The view of the latest cycle, for dry runs.
    last_view: Mutex<Option<Arc<wit::AllocatorView>>>,
    /// Buffers kept from one cycle to the next: the view before last (refilled for the
    /// next cycle) and the validation's scratch. Fresh large buffers cost page faults
    /// (the allocator hands big ones back to the kernel): at 50,000 agents, a sixth of
    /// the validation's time.
    spare_view: Mutex<Option<wit::AllocatorView>>,
    scratch: Mutex<CheckScratch>,
}

impl AllocatorSlot {
    /// An empty slot named `name` (shown in its history).
    pub fn new(host: &PolicyHost, name: &str) -> Self {
        AllocatorSlot {
            slot: Slot::new(host, name),
            last_view: Mutex::new(None),
            spare_view: Mutex::new(None),
            scratch: Mutex::new(CheckScratch::default()),
        }
    }

    /// Loads a new policy and makes it active, off the hot path: compiles the component,
    /// checks that it is an `allocator` and imports nothing the host lacks, dry-runs it on
    /// the latest cycle's view (an empty view before the first cycle) and validates its
    /// answer, then switches atomically: a cycle in progress ends on the old policy, the
    /// next one starts on the new. The old policy is kept until the new one has passed its
    /// probation, and comes back if the new one fails `rollback_after` calls in a row.
    ///
    /// # Errors
    ///
    /// A [`SwapError`] when the policy is rejected; it is recorded in the history and the
    /// active policy stays.
    pub fn swap(&self, bytes: &[u8], who: &str) -> Result<SwapRecord, SwapError> {
        let view = self
            .last_view
            .lock()
            .ok()
            .and_then(|v| v.clone())
            .unwrap_or_default();
        self.slot.swap(bytes, who, |slot, loaded| {
            let (offers, ran) = slot.run(loaded, |allocator, store| {
                allocator.call_allocate(store, &view)
            })?;
            check_wit(&view, &offers, &mut CheckScratch::default(), None)?;
            // The first cycle on the new policy starts from the dry run's instance.
            slot.keep_warm(loaded, ran);
            Ok(())
        })
    }

    /// [`AllocatorSlot::swap`] with the component read from `path`.
    ///
    /// # Errors
    ///
    /// As [`AllocatorSlot::swap`], and [`SwapError::Read`] when the file cannot be read.
    pub fn swap_file(&self, path: &Path, who: &str) -> Result<SwapRecord, SwapError> {
        self.swap(&crate::slot::read_component(path)?, who)
    }

    /// One allocation cycle on the active policy; every offer is validated against the
    /// view before it is returned.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when there is no policy, it trapped, ran out of time or memory,
    /// or answered something invalid; the answer is discarded and the error counted.
    pub fn allocate(&self, view: &AllocatorView) -> Result<Allocation, PolicyError> {
        let mut wit_view = self
            .spare_view
            .lock()
            .ok()
            .and_then(|mut spare| spare.take())
            .unwrap_or_default();
        fill_wit(&mut wit_view, view);
        let wit_view = Arc::new(wit_view);
        let result = self.slot.call(
            |allocator, store| allocator.call_allocate(store, &wit_view),
            |offers| {
                // Concurrent cycles (rare) each get their own scratch, made only then (a
                // scratch draws its hash multiplier from the host's randomness).
                let mut fresh;
                let mut held = self.scratch.try_lock();
                let scratch = match held.as_deref_mut() {
                    Ok(kept) => kept,
                    Err(_) => {
                        fresh = CheckScratch::default();
                        &mut fresh
                    }
                };
                let mut rows = Vec::new();
                check_wit(&wit_view, &offers, scratch, Some(&mut rows))?;
                Ok(rows)
            },
        );
        let before = self
            .last_view
            .lock()
            .ok()
            .and_then(|mut last| last.replace(wit_view));
        // The view before last is the spare unless a swap is still dry-running on it.
        if let Some(before) = before.and_then(|v| Arc::try_unwrap(v).ok()) {
            if let Ok(mut spare) = self.spare_view.lock() {
                *spare = Some(before);
            }
        }
        result.map(|(offers, loaded)| Allocation {
            offers,
            policy: loaded.digest.clone(),
        })
    }

    /// Every load and swap, oldest first, with its state and error count.
    pub fn history(&self) -> Vec<SwapRecord> {
        self.slot.history()
    }

    /// The digest of the active policy.
    pub fn active(&self) -> Option<String> {
        self.slot.active().map(|l| l.digest.clone())
    }

    /// The slot's automatic rollbacks so far.
    pub fn rollbacks(&self) -> Rollbacks {
        self.slot.rollbacks()
    }
}

impl Allocator for AllocatorSlot {
    fn allocate(&self, view: &AllocatorView) -> Result<Allocation, PolicyError> {
        AllocatorSlot::allocate(self, view)
    }
}

fn res(r: &Resources) -> wit::Resources {
    wit::Resources {
        cpus_milli: r.cpus_milli,
        mem_mb: r.mem_mb,
        disk_mb: r.disk_mb,
    }
}

/// Makes `list` the resources of `items`, three numbers each (see `resource-list` in
/// `wit/policy.wit`), reusing its buffer.
fn fill_resources<T>(list: &mut Vec<u64>, items: &[T], r: impl Fn(&T) -> &Resources) {
    list.clear();
    list.reserve(items.len().saturating_mul(3));
    for item in items {
        let r = r(item);
        list.extend_from_slice(&[r.cpus_milli, r.mem_mb, r.disk_mb]);
    }
}

/// Entry `i` of a resource list, which the caller has checked holds it.
fn resources_at(list: &[u64], i: usize) -> Resources {
    Resources::new(list[3 * i], list[3 * i + 1], list[3 * i + 2])
}

/// The view as the guest sees it.
pub(crate) fn to_wit(view: &AllocatorView) -> wit::AllocatorView {
    let mut w = wit::AllocatorView::default();
    fill_wit(&mut w, view);
    w
}

/// Makes `w` the guest's copy of `view` (its columns), reusing `w`'s buffers.
fn fill_wit(w: &mut wit::AllocatorView, view: &AllocatorView) {
    w.now_ms = view.now_ms;
    w.total = res(&view.total);
    fill_resources(&mut w.agents, &view.agents, |a| a);
    refill(&mut w.role_weights, view.roles.iter().map(|r| r.weight));
    let (fws, columns) = (&view.frameworks, &mut w.frameworks);
    refill(&mut columns.role, fws.iter().map(|f| f.role));
    fill_resources(&mut columns.allocated, fws, |f| &f.allocated);
    fill_resources(&mut columns.demand, fws, |f| &f.demand);
    refill(&mut columns.wanted, fws.iter().map(|f| f.wanted));
    refill(&mut columns.suppressed, fws.iter().map(|f| f.suppressed));
    let (filters, columns) = (&view.filters, &mut w.filters);
    refill(&mut columns.framework, filters.iter().map(|f| f.framework));
    refill(&mut columns.agent, filters.iter().map(|f| f.agent));
    refill(&mut columns.until_ms, filters.iter().map(|f| f.until_ms));
}

/// Makes `v` hold `items`, reusing its buffer.
fn refill<T>(v: &mut Vec<T>, items: impl Iterator<Item = T>) {
    v.clear();
    v.extend(items);
}

impl Default for wit::AllocatorView {
    fn default() -> Self {
        wit::AllocatorView {
            now_ms: 0,
            total: wit::Resources {
                cpus_milli: 0,
                mem_mb: 0,
                disk_mb: 0,
            },
            agents: Vec::new(),
            role_weights: Vec::new(),
            frameworks: wit::Frameworks {
                role: Vec::new(),
                allocated: Vec::new(),
                demand: Vec::new(),
                wanted: Vec::new(),
                suppressed: Vec::new(),
            },
            filters: wit::Filters {
                framework: Vec::new(),
                agent: Vec::new(),
                until_ms: Vec::new(),
            },
        }
    }
}

/// Validates offers against a view: known agents and frameworks, no empty offers, no
/// agent offered twice to one framework, no more than an agent has free, nothing to a
/// suppressed framework or on a filtered agent.
///
/// # Errors
///
/// The first [`InvalidAnswer`] found.
pub fn check_offers(view: &AllocatorView, offers: &[Offer]) -> Result<(), InvalidAnswer> {
    check_wit(
        &to_wit(view),
        &offers_to_wit(offers),
        &mut CheckScratch::default(),
        None,
    )
}

/// Offers as a guest answers them (in columns).
fn offers_to_wit(offers: &[Offer]) -> wit::Offers {
    let mut o = wit::Offers {
        agent: offers.iter().map(|o| o.agent).collect(),
        framework: offers.iter().map(|o| o.framework).collect(),
        resources: Vec::new(),
    };
    fill_resources(&mut o.resources, offers, |o| &o.resources);
    o
}

/// The validation's working memory, kept by a slot from one cycle to the next.
pub(crate) struct CheckScratch {
    /// Per agent, what the offers checked so far give away in all. All zero between
    /// checks: a check sets back to zero the entries it added to, rather than clear the
    /// whole list (a megabyte at 50,000 agents).
    offered: Vec<Resources>,
    /// Per framework, the agent of its latest offer so far ([`NO_AGENT`] for none).
    last_agent: Vec<u32>,
    /// The offered `(agent, framework)` pairs, made only for an answer that offers some
    /// framework agents out of their order (see [`check_wit`]): an open-addressing hash
    /// set of `agent << 32 | framework`, [`NO_PAIR`] for an empty slot.
    pairs: Vec<u64>,
    /// The active filters' pairs, a hash set as `pairs`, and the index in the view of the
    /// first filter of each (`filter_first[slot]` for `filter_pairs[slot]`).
    filter_pairs: Vec<u64>,
    filter_first: Vec<u32>,
    /// A bit per agent, set for those with an active filter: an offer elsewhere (most of
    /// them) is not looked up in the filters' set.
    filter_agents: Vec<u64>,
    /// The hash's multiplier: random and odd, so that a policy (which sees no randomness
    /// of the host's) cannot choose pairs that collide and make the check quadratic.
    multiplier: u64,
}

impl Default for CheckScratch {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        CheckScratch {
            offered: Vec::new(),
            last_agent: Vec::new(),
            pairs: Vec::new(),
            filter_pairs: Vec::new(),
            filter_first: Vec::new(),
            filter_agents: Vec::new(),
            multiplier: RandomState::new().hash_one(0x636f_7272_616c_u64) | 1,
        }
    }
}

/// An empty slot of [`CheckScratch::pairs`]: no pair, as agents are fewer than `u32::MAX`.
const NO_PAIR: u64 = u64::MAX;

/// No agent yet, in [`CheckScratch::last_agent`].
const NO_AGENT: u32 = u32::MAX;

/// Clears `v` and fills it with `n` copies of `value`, keeping its allocation.
fn reset<T: Clone>(v: &mut Vec<T>, n: usize, value: T) {
    v.clear();
    v.resize(n, value);
}

/// The mask of a hash table for `n` keys: at most half full, for short probes.
fn table_mask(n: usize) -> usize {
    (2 * n).max(2).next_power_of_two() - 1
}

/// The slot of `pair` in a table of `mask + 1` slots (a power of two): where it is, or
/// the empty slot where it belongs; and whether it is there.
#[inline]
fn find_pair(table: &[u64], mask: usize, multiplier: u64, pair: u64) -> (usize, bool) {
    let bits = (mask + 1).trailing_zeros();
    // Multiply-shift: the top bits of the product with a random odd multiplier.
    let mut slot = (pair.wrapping_mul(multiplier) >> (64 - bits.max(1))) as usize & mask;
    loop {
        match table[slot] {
            NO_PAIR => return (slot, false),
            p if p == pair => return (slot, true),
            _ => slot = (slot + 1) & mask,
        }
    }
}

fn pair(agent: u32, framework: u32) -> u64 {
    (u64::from(agent) << 32) | u64::from(framework)
}

/// [`check_offers`] on the guest's columns; an answer whose columns differ in length is
/// rejected first. With `rows`, the offers are pushed onto it as rows in the same pass.
///
/// One pass over the offers, in order, checks each (so that the first offer past an
/// agent's free resources is the one named) and adds it to its agent's sum. Duplicates
/// need no set of every pair when each framework's offers come in increasing agent order,
/// as the DRF's do (a framework's scan only moves forward), since such a list cannot
/// repeat an agent; only an answer out of that order is checked with a hash set of its
/// pairs. At 50,000 agents × 6,000 frameworks, the set (a megabyte, probed at random) and
/// the clearing of the agents' sums were half the check's time. Active filters are a
/// small hash set that an offer is looked up in when its agent has one.
pub(crate) fn check_wit(
    view: &wit::AllocatorView,
    offers: &wit::Offers,
    scratch: &mut CheckScratch,
    mut rows: Option<&mut Vec<Offer>>,
) -> Result<(), InvalidAnswer> {
    let CheckScratch {
        offered,
        last_agent,
        pairs,
        filter_pairs,
        filter_first,
        filter_agents,
        multiplier,
    } = scratch;
    let multiplier = *multiplier;
    let count = offers.agent.len();
    let resources = &offers.resources;
    let lengths = [count, offers.framework.len(), resources.len()];
    if lengths != [count, count, count.saturating_mul(3)] {
        return Err(InvalidAnswer::RaggedOffers { lengths });
    }
    let agents = view.agents.len() / 3;
    let frameworks = view.frameworks.role.len();
    if count > agents.saturating_mul(frameworks) {
        return Err(InvalidAnswer::TooManyOffers {
            count,
            agents,
            frameworks,
        });
    }
    if offered.len() != agents {
        reset(offered, agents, Resources::ZERO);
    }
    reset(last_agent, view.frameworks.suppressed.len(), NO_AGENT);
    // The active filters, the first of each pair kept.
    let f = &view.filters;
    let filters = f.framework.iter().zip(&f.agent).zip(&f.until_ms);
    let active = filters
        .clone()
        .filter(|&(_, &until_ms)| view.now_ms < until_ms)
        .count();
    let filter_mask = table_mask(active);
    if active > 0 {
        reset(filter_pairs, filter_mask + 1, NO_PAIR);
        reset(filter_first, filter_mask + 1, 0);
        reset(filter_agents, agents.div_ceil(64), 0);
        for (k, ((&framework, &agent), &until_ms)) in filters.enumerate() {
            if view.now_ms < until_ms {
                if let Some(bits) = filter_agents.get_mut(agent as usize / 64) {
                    *bits |= 1 << (agent % 64);
                }
                let p = pair(agent, framework);
                if let (slot, false) = find_pair(filter_pairs, filter_mask, multiplier, p) {
                    filter_pairs[slot] = p;
                    filter_first[slot] = k as u32;
                }
            }
        }
    }
    // The index of the first active filter on an offered pair.
    let mut filtered: Option<u32> = None;
    let mut in_order = true;
    // The answer's lengths are checked: reserve its rows at once.
    if let Some(rows) = rows.as_deref_mut() {
        rows.reserve(count);
    }
    // Per offer, in order: known agent and framework, not empty, not suppressed, within
    // what the agent has free. `summed` offers have been added to their agents' sums.
    let mut summed = 0;
    let outcome = 'offers: {
        for (index, (&agent, &framework)) in offers.agent.iter().zip(&offers.framework).enumerate()
        {
            let a = agent as usize;
            if a >= agents {
                break 'offers Err(InvalidAnswer::UnknownAgent { index, agent });
            }
            let Some(&suppressed) = view.frameworks.suppressed.get(framework as usize) else {
                break 'offers Err(InvalidAnswer::UnknownFramework { index, framework });
            };
            let r = resources_at(resources, index);
            if r.is_zero() {
                break 'offers Err(InvalidAnswer::EmptyOffer { index });
            }
            if suppressed {
                break 'offers Err(InvalidAnswer::Suppressed { framework });
            }
            let sum = &mut offered[a];
            *sum = sum.saturating_add(&r);
            summed = index + 1;
            if !resources_at(&view.agents, a).contains(sum) {
                break 'offers Err(InvalidAnswer::NotFree { agent });
            }
            let last = &mut last_agent[framework as usize];
            in_order &= *last == NO_AGENT || *last < agent;
            *last = agent;
            if active > 0 && filter_agents[a / 64] & (1 << (a % 64)) != 0 {
                if let (slot, true) = find_pair(
                    filter_pairs,
                    filter_mask,
                    multiplier,
                    pair(agent, framework),
                ) {
                    let k = filter_first[slot];
                    filtered = Some(filtered.map_or(k, |first| first.min(k)));
                }
            }
            if let Some(rows) = rows.as_deref_mut() {
                rows.push(Offer {
                    agent,
                    framework,
                    resources: r,
                });
            }
        }
        Ok(())
    };
    // The sums back to zero for the next check (their agents are known).
    for &agent in &offers.agent[..summed] {
        offered[agent as usize] = Resources::ZERO;
    }
    outcome?;
    // Duplicates: the smallest pair offered twice.
    if !in_order {
        let mask = table_mask(count);
        reset(pairs, mask + 1, NO_PAIR);
        let mut duplicate: Option<u64> = None;
        for (&agent, &framework) in offers.agent.iter().zip(&offers.framework) {
            let p = pair(agent, framework);
            match find_pair(pairs, mask, multiplier, p) {
                (_, true) => duplicate = Some(duplicate.map_or(p, |d| d.min(p))),
                (slot, false) => pairs[slot] = p,
            }
        }
        if let Some(p) = duplicate {
            return Err(InvalidAnswer::DuplicateOffer {
                agent: (p >> 32) as u32,
                framework: p as u32,
            });
        }
    }
    if let Some(k) = filtered {
        let k = k as usize;
        return Err(InvalidAnswer::Filtered {
            framework: f.framework[k],
            agent: f.agent[k],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::view::{Filter, Framework, Role};

    fn view() -> AllocatorView {
        let fw = Framework {
            role: 0,
            allocated: Resources::ZERO,
            demand: Resources::new(1, 1, 0),
            wanted: 1,
            suppressed: false,
        };
        AllocatorView {
            now_ms: 10,
            total: Resources::new(20, 20, 0),
            agents: vec![Resources::new(10, 10, 0); 2],
            roles: vec![Role { weight: 1.0 }],
            frameworks: vec![
                fw,
                Framework {
                    suppressed: true,
                    ..fw
                },
                fw,
            ],
            filters: vec![Filter {
                framework: 2,
                agent: 1,
                until_ms: 11,
            }],
        }
    }

    fn offer(agent: u32, framework: u32, cpus: u64) -> Offer {
        Offer {
            agent,
            framework,
            resources: Resources::new(cpus, 1, 0),
        }
    }

    #[test]
    fn valid_offers_pass() {
        let offers = [offer(0, 0, 5), offer(0, 2, 5), offer(1, 0, 10)];
        assert_eq!(check_offers(&view(), &offers), Ok(()));
    }

    #[test]
    fn duplicates_and_filters_are_caught_on_agents_offered_to_several_frameworks() {
        let v = view();
        let dup = |agent, framework| Err(InvalidAnswer::DuplicateOffer { agent, framework });
        let cases = [
            (
                vec![offer(0, 0, 1), offer(0, 2, 1), offer(0, 0, 1)],
                dup(0, 0),
            ),
            (
                vec![offer(0, 0, 1), offer(0, 2, 1), offer(0, 2, 1)],
                dup(0, 2),
            ),
            (
                vec![
                    offer(1, 0, 1),
                    offer(1, 0, 1),
                    offer(0, 2, 1),
                    offer(0, 2, 1),
                ],
                dup(0, 2),
            ),
            (
                vec![offer(1, 2, 1)],
                Err(InvalidAnswer::Filtered {
                    framework: 2,
                    agent: 1,
                }),
            ),
            (
                vec![offer(1, 0, 1), offer(1, 2, 1)],
                Err(InvalidAnswer::Filtered {
                    framework: 2,
                    agent: 1,
                }),
            ),
            (vec![offer(0, 2, 1), offer(0, 0, 1), offer(1, 0, 1)], Ok(())),
        ];
        // One scratch for all, as a slot keeps it from cycle to cycle.
        let mut scratch = CheckScratch::default();
        let w = to_wit(&v);
        for (offers, expected) in cases {
            assert_eq!(
                check_wit(&w, &offers_to_wit(&offers), &mut scratch, None),
                expected,
                "{offers:?}"
            );
        }
    }

    #[test]
    fn every_kind_of_invalid_offer_is_caught() {
        let v = view();
        let cases = [
            (
                vec![offer(2, 0, 1)],
                InvalidAnswer::UnknownAgent { index: 0, agent: 2 },
            ),
            (
                vec![offer(0, 3, 1)],
                InvalidAnswer::UnknownFramework {
                    index: 0,
                    framework: 3,
                },
            ),
            (
                vec![Offer {
                    agent: 0,
                    framework: 0,
                    resources: Resources::ZERO,
                }],
                InvalidAnswer::EmptyOffer { index: 0 },
            ),
            (
                vec![offer(0, 0, 6), offer(0, 2, 5)],
                InvalidAnswer::NotFree { agent: 0 },
            ),
            (
                vec![offer(0, 0, 1), offer(0, 0, 1)],
                InvalidAnswer::DuplicateOffer {
                    agent: 0,
                    framework: 0,
                },
            ),
            (
                vec![offer(0, 1, 1)],
                InvalidAnswer::Suppressed { framework: 1 },
            ),
            (
                vec![offer(1, 2, 1)],
                InvalidAnswer::Filtered {
                    framework: 2,
                    agent: 1,
                },
            ),
            (
                vec![offer(0, 0, 1); 7],
                InvalidAnswer::TooManyOffers {
                    count: 7,
                    agents: 2,
                    frameworks: 3,
                },
            ),
        ];
        for (offers, expected) in cases {
            assert_eq!(check_offers(&v, &offers), Err(expected));
        }
    }

    #[test]
    fn the_first_duplicate_and_the_first_filter_are_named() {
        let mut v = view();
        v.agents = vec![Resources::new(10, 10, 0); 3];
        v.frameworks[1].suppressed = false;
        // Duplicates on agents 2 and 1 (twice): the smallest pair is named.
        let offers = [
            offer(2, 0, 1),
            offer(1, 2, 1),
            offer(2, 0, 1),
            offer(1, 1, 1),
            offer(1, 2, 1),
            offer(1, 1, 1),
        ];
        assert_eq!(
            check_offers(&v, &offers),
            Err(InvalidAnswer::DuplicateOffer {
                agent: 1,
                framework: 1
            })
        );
        // Two filters broken: the first in the view's order is named, whatever its agent.
        v.filters = vec![
            Filter {
                framework: 0,
                agent: 2,
                until_ms: 11,
            },
            Filter {
                framework: 1,
                agent: 0,
                until_ms: 11,
            },
            Filter {
                framework: 1,
                agent: 2,
                until_ms: 11,
            },
            Filter {
                framework: 2,
                agent: 0,
                until_ms: 11,
            },
        ];
        let offers = [offer(0, 2, 1), offer(2, 1, 1), offer(1, 1, 1)];
        assert_eq!(
            check_offers(&v, &offers),
            Err(InvalidAnswer::Filtered {
                framework: 1,
                agent: 2
            })
        );
        assert_eq!(check_offers(&v, &[offer(1, 1, 1), offer(2, 2, 1)]), Ok(()));
    }

    #[test]
    fn a_check_leaves_its_scratch_clean_whatever_it_finds() {
        // Sums of agents are kept between checks and set back to zero by each: an answer
        // after one refused halfway, or one offering to an unknown agent, is checked as if
        // it came first.
        let v = view();
        let mut scratch = CheckScratch::default();
        let w = to_wit(&v);
        let mut check =
            |offers: &[Offer]| check_wit(&w, &offers_to_wit(offers), &mut scratch, None);
        let full = [offer(0, 0, 10), offer(1, 0, 10)];
        assert_eq!(check(&full), Ok(()));
        assert_eq!(
            check(&[offer(0, 0, 6), offer(0, 2, 5), offer(1, 2, 1)]),
            Err(InvalidAnswer::NotFree { agent: 0 })
        );
        assert_eq!(check(&full), Ok(()));
        // Refused on the first offer to its agent.
        assert_eq!(
            check(&[offer(0, 0, 1), offer(1, 0, 11)]),
            Err(InvalidAnswer::NotFree { agent: 1 })
        );
        assert_eq!(check(&full), Ok(()));
        assert_eq!(
            check(&[offer(1, 0, 4), offer(2, 0, 1)]),
            Err(InvalidAnswer::UnknownAgent { index: 1, agent: 2 })
        );
        assert_eq!(check(&full), Ok(()));
        // Out of agent order for a framework: its duplicates are still found.
        assert_eq!(
            check(&[offer(1, 0, 1), offer(0, 0, 1), offer(1, 0, 1)]),
            Err(InvalidAnswer::DuplicateOffer {
                agent: 1,
                framework: 0
            })
        );
        assert_eq!(check(&[offer(1, 0, 1), offer(0, 0, 1)]), Ok(()));

        // The same scratch for a view with another number of agents, and a filter on an
        // agent the view does not have.
        let mut v = view();
        v.agents.push(Resources::new(10, 10, 0));
        v.filters.push(Filter {
            framework: 0,
            agent: 70,
            until_ms: 11,
        });
        let w = to_wit(&v);
        let mut check =
            |offers: &[Offer]| check_wit(&w, &offers_to_wit(offers), &mut scratch, None);
        assert_eq!(check(&[offer(2, 0, 10), offer(0, 0, 10)]), Ok(()));
        assert_eq!(
            check(&[offer(2, 0, 10), offer(2, 2, 1)]),
            Err(InvalidAnswer::NotFree { agent: 2 })
        );
        assert_eq!(check(&[offer(2, 2, 10)]), Ok(()));
    }

    #[test]
    fn offer_lists_of_different_lengths_are_rejected() {
        let v = to_wit(&view());
        let offers = wit::Offers {
            agent: vec![0, 1],
            framework: vec![0, 0],
            resources: vec![1, 1, 0, 1, 0],
        };
        assert_eq!(
            check_wit(&v, &offers, &mut CheckScratch::default(), None),
            Err(InvalidAnswer::RaggedOffers { lengths: [2, 2, 5] })
        );
        // The same offers with three resources each are valid.
        let offers = wit::Offers {
            resources: vec![1, 1, 0, 1, 1, 0],
            ..offers
        };
        let mut rows = Vec::new();
        assert_eq!(
            check_wit(&v, &offers, &mut CheckScratch::default(), Some(&mut rows)),
            Ok(())
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn an_expired_filter_does_not_apply() {
        let mut v = view();
        v.now_ms = 11;
        assert_eq!(check_offers(&v, &[offer(1, 2, 1)]), Ok(()));
    }

    /// A kept instance gives its memory back at the end of each cycle: with a cap of
    /// 16 MiB, thirty cycles of 10,000 agents × 1,000 frameworks (about 3 MiB each) run in
    /// one instance, none made again in a fresh one (as one that filled its memory would
    /// be), and all answer as the native DRF does.
    #[test]
    fn a_kept_drf_instance_uses_the_same_memory_cycle_after_cycle() {
        let host = PolicyHost::new(crate::PolicyConfig {
            memory_limit: 16 << 20,
            warm_instances: 2,
            ..crate::PolicyConfig::default()
        })
        .expect("host");
        let slots = [
            ("rust", crate::fixtures::DRF),
            ("c", crate::fixtures::DRF_C),
        ]
        .map(|(name, path)| {
            let slot = AllocatorSlot::new(&host, name);
            let bytes = std::fs::read(path).expect("built policy");
            slot.swap(&bytes, "test").expect("loads");
            (name, slot)
        });
        let agent = Resources::new(8_000, 16 << 10, 100);
        let mut view = AllocatorView {
            now_ms: 0,
            total: Resources::new(8_000 * 10_000, (16 << 10) * 10_000, 100 * 10_000),
            agents: vec![agent; 10_000],
            roles: vec![Role { weight: 1.0 }; 10],
            frameworks: (0..1_000u32)
                .map(|i| Framework {
                    role: i % 10,
                    allocated: Resources::ZERO,
                    demand: Resources::new(100 * (1 + u64::from(i) % 7), 256, 0),
                    wanted: 10,
                    suppressed: false,
                })
                .collect(),
            filters: Vec::new(),
        };
        for cycle in 0..30u64 {
            view.now_ms = cycle;
            view.frameworks[cycle as usize].suppressed = true;
            let expected = corral_core::drf::allocate(&view);
            for (name, slot) in &slots {
                let offers = slot
                    .allocate(&view)
                    .unwrap_or_else(|e| panic!("{name} DRF, cycle {cycle}: {e}"))
                    .offers;
                assert_eq!(offers, expected, "{name} DRF, cycle {cycle}");
                let loaded = slot.slot.active().expect("active");
                assert!(loaded.kept_throughout(), "{name} DRF, cycle {cycle}");
            }
        }
    }
}
