//! The allocator's view of the cluster and the offers it answers with.
//!
//! These are the Rust twins of the `allocator-view` and `offers` records in
//! `wit/policy.wit`, as rows: the WIT lays them out in columns (a list per field), which
//! the policy host makes from these. They are flat and made of integers only: agents,
//! roles and frameworks are named by their index in the view's lists, so the master can
//! build a view from its registry without strings and the policy host can copy it into a
//! wasm guest cheaply.

use serde::{Deserialize, Serialize};

/// Scalar resources: CPUs in thousandths of a CPU, memory and disk in megabytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_milli: u64,
    pub mem_mb: u64,
    pub disk_mb: u64,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources::new(0, 0, 0);

    pub const fn new(cpus_milli: u64, mem_mb: u64, disk_mb: u64) -> Self {
        Resources {
            cpus_milli,
            mem_mb,
            disk_mb,
        }
    }

    /// Whether every quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.cpus_milli == 0 && self.mem_mb == 0 && self.disk_mb == 0
    }

    /// Whether `other` fits inside `self`, quantity by quantity.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_mb >= other.mem_mb
            && self.disk_mb >= other.disk_mb
    }

    /// The sum, saturating at `u64::MAX`.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_add(other.cpus_milli),
            mem_mb: self.mem_mb.saturating_add(other.mem_mb),
            disk_mb: self.disk_mb.saturating_add(other.disk_mb),
        }
    }

    /// The difference, saturating at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mb: self.mem_mb.saturating_sub(other.mem_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
        }
    }
}

/// A role: one level, as in Mesos. Its frameworks share its weight.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Greater than zero and finite; a role of weight 2 is entitled to twice the share of
    /// a role of weight 1.
    pub weight: f64,
}

/// A framework as the allocator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Framework {
    /// Index into [`AllocatorView::roles`].
    pub role: u32,
    /// What the framework holds now: its tasks and its outstanding offers.
    pub allocated: Resources,
    /// The size of the framework's next task, the unit in which it is offered resources.
    /// All zero means no stated size: the framework is offered whole agents.
    pub demand: Resources,
    /// How many more units the framework wants this cycle; 0 wants nothing.
    pub wanted: u32,
    /// A suppressed framework is offered nothing.
    pub suppressed: bool,
}

/// An offer filter: `framework` declined `agent` until `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub framework: u32,
    pub agent: u32,
    pub until_ms: u64,
}

/// Everything an allocator is given for one allocation cycle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocatorView {
    /// The master's clock, milliseconds since the Unix epoch (filters are compared to it).
    pub now_ms: u64,
    /// The cluster's total resources: the denominator of every share.
    pub total: Resources,
    /// The free resources of each agent (not allocated, not offered); agent `i` is index `i`.
    pub agents: Vec<Resources>,
    pub roles: Vec<Role>,
    pub frameworks: Vec<Framework>,
    pub filters: Vec<Filter>,
}

impl AllocatorView {
    /// Whether `framework` has an active filter on `agent` at `now_ms`.
    pub fn is_filtered(&self, framework: u32, agent: u32) -> bool {
        self.filters
            .iter()
            .any(|f| f.framework == framework && f.agent == agent && self.now_ms < f.until_ms)
    }
}

/// An offer: these resources of this agent, to this framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    pub agent: u32,
    pub framework: u32,
    pub resources: Resources,
}
