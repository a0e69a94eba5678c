//! The allocator slot: the cluster view in, validated offers out.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::view::{AllocatorView, Offer, Resources};
use wasmtime::component::Component;

use crate::bindings::allocator::corral::policy::types as wit;
use crate::bindings::allocator::AllocatorPre;
use crate::error::{InvalidAnswer, PolicyError, SwapError};
use crate::host::{HostInner, PolicyHost};
use crate::slot::{Slot, SwapRecord, World};

pub(crate) struct AllocatorWorld;

impl World for AllocatorWorld {
    const NAME: &'static str = "allocator";
    type Pre = AllocatorPre<crate::host::StoreState>;

    fn pre(host: &HostInner, component: &Component) -> wasmtime::Result<Self::Pre> {
        AllocatorPre::new(host.linker.instantiate_pre(component)?)
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
}

impl AllocatorSlot {
    /// An empty slot named `name` (shown in its history).
    pub fn new(host: &PolicyHost, name: &str) -> Self {
        AllocatorSlot {
            slot: Slot::new(host, name),
            last_view: Mutex::new(None),
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
            let offers = slot.run(loaded, |pre, store| {
                pre.instantiate(&mut *store)?
                    .call_allocate(&mut *store, &view)
            })?;
            check_wit(&view, &offers).map_err(PolicyError::from)
        })
    }

    /// [`AllocatorSlot::swap`] with the component read from `path`.
    ///
    /// # Errors
    ///
    /// As [`AllocatorSlot::swap`], and [`SwapError::Read`] when the file cannot be read.
    pub fn swap_file(&self, path: &Path, who: &str) -> Result<SwapRecord, SwapError> {
        let bytes = std::fs::read(path).map_err(|source| SwapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.swap(&bytes, who)
    }

    /// One allocation cycle on the active policy; every offer is validated against the
    /// view before it is returned.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when there is no policy, it trapped, ran out of time or memory,
    /// or answered something invalid; the answer is discarded and the error counted.
    pub fn allocate(&self, view: &AllocatorView) -> Result<Allocation, PolicyError> {
        let wit_view = Arc::new(to_wit(view));
        let result = self.slot.call(
            |pre, store| {
                pre.instantiate(&mut *store)?
                    .call_allocate(&mut *store, &wit_view)
            },
            |offers| {
                check_wit(&wit_view, &offers)?;
                Ok(offers.iter().map(from_wit_offer).collect())
            },
        );
        if let Ok(mut last) = self.last_view.lock() {
            *last = Some(wit_view);
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

fn from_res(r: &wit::Resources) -> Resources {
    Resources::new(r.cpus_milli, r.mem_mb, r.disk_mb)
}

fn from_wit_offer(o: &wit::Offer) -> Offer {
    Offer {
        agent: o.agent,
        framework: o.framework,
        resources: from_res(&o.resources),
    }
}

/// The view as the guest sees it.
pub(crate) fn to_wit(view: &AllocatorView) -> wit::AllocatorView {
    wit::AllocatorView {
        now_ms: view.now_ms,
        total: res(&view.total),
        agents: view.agents.iter().map(res).collect(),
        roles: view
            .roles
            .iter()
            .map(|r| wit::Role { weight: r.weight })
            .collect(),
        frameworks: view
            .frameworks
            .iter()
            .map(|f| wit::Framework {
                role: f.role,
                allocated: res(&f.allocated),
                demand: res(&f.demand),
                wanted: f.wanted,
                suppressed: f.suppressed,
            })
            .collect(),
        filters: view
            .filters
            .iter()
            .map(|f| wit::Filter {
                framework: f.framework,
                agent: f.agent,
                until_ms: f.until_ms,
            })
            .collect(),
    }
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
            roles: Vec::new(),
            frameworks: Vec::new(),
            filters: Vec::new(),
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
    let w = to_wit(view);
    let o: Vec<wit::Offer> = offers
        .iter()
        .map(|o| wit::Offer {
            agent: o.agent,
            framework: o.framework,
            resources: res(&o.resources),
        })
        .collect();
    check_wit(&w, &o)
}

pub(crate) fn check_wit(
    view: &wit::AllocatorView,
    offers: &[wit::Offer],
) -> Result<(), InvalidAnswer> {
    let agents = view.agents.len();
    let frameworks = view.frameworks.len();
    if offers.len() > agents.saturating_mul(frameworks) {
        return Err(InvalidAnswer::TooManyOffers {
            count: offers.len(),
            agents,
            frameworks,
        });
    }
    // Per agent, what is offered in all; sorted (agent, framework) pairs for duplicates.
    let mut offered: Vec<Resources> = vec![Resources::ZERO; agents];
    let mut pairs: Vec<u64> = Vec::with_capacity(offers.len());
    for (index, o) in offers.iter().enumerate() {
        let Some(free) = view.agents.get(o.agent as usize) else {
            return Err(InvalidAnswer::UnknownAgent {
                index,
                agent: o.agent,
            });
        };
        let Some(fw) = view.frameworks.get(o.framework as usize) else {
            return Err(InvalidAnswer::UnknownFramework {
                index,
                framework: o.framework,
            });
        };
        let r = from_res(&o.resources);
        if r.is_zero() {
            return Err(InvalidAnswer::EmptyOffer { index });
        }
        if fw.suppressed {
            return Err(InvalidAnswer::Suppressed {
                framework: o.framework,
            });
        }
        let sum = &mut offered[o.agent as usize];
        *sum = sum.saturating_add(&r);
        if !from_res(free).contains(sum) {
            return Err(InvalidAnswer::NotFree { agent: o.agent });
        }
        pairs.push((u64::from(o.agent) << 32) | u64::from(o.framework));
    }
    pairs.sort_unstable();
    if let Some(w) = pairs.windows(2).find(|w| w[0] == w[1]) {
        return Err(InvalidAnswer::DuplicateOffer {
            agent: (w[0] >> 32) as u32,
            framework: w[0] as u32,
        });
    }
    for f in &view.filters {
        if view.now_ms < f.until_ms {
            let key = (u64::from(f.agent) << 32) | u64::from(f.framework);
            if pairs.binary_search(&key).is_ok() {
                return Err(InvalidAnswer::Filtered {
                    framework: f.framework,
                    agent: f.agent,
                });
            }
        }
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
    fn an_expired_filter_does_not_apply() {
        let mut v = view();
        v.now_ms = 11;
        assert_eq!(check_offers(&v, &[offer(1, 2, 1)]), Ok(()));
    }
}
