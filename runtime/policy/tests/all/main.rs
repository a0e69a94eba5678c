//! The policy host's integration tests: real wasm components built from `policies/`.

mod drf;
mod examples;
mod hostile;
mod scheduler;
mod sim;
mod swap;

use std::sync::OnceLock;

use corral_core::view::{AllocatorView, Framework, Resources, Role};
use corral_policy::{AllocatorSlot, PolicyConfig, PolicyHost};

/// One host for every test: one engine and one epoch ticker, as in a master.
pub fn host() -> &'static PolicyHost {
    static HOST: OnceLock<PolicyHost> = OnceLock::new();
    HOST.get_or_init(|| PolicyHost::new(PolicyConfig::default()).expect("policy host starts"))
}

/// The bytes of a built policy.
pub fn policy(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading built policy {path}: {e}"))
}

/// A slot with `path` loaded.
pub fn slot_with(name: &str, path: &str) -> AllocatorSlot {
    let slot = AllocatorSlot::new(host(), name);
    slot.swap(&policy(path), "test")
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
    slot
}

pub fn framework(role: u32, demand: Resources, wanted: u32) -> Framework {
    Framework {
        role,
        allocated: Resources::ZERO,
        demand,
        wanted,
        suppressed: false,
    }
}

/// A view of `agents` equal agents and one role of weight 1 per framework.
pub fn simple_view(agents: usize, agent: Resources, frameworks: Vec<Framework>) -> AllocatorView {
    let roles = frameworks.iter().map(|f| f.role).max().map_or(0, |r| r + 1);
    AllocatorView {
        now_ms: 1_000,
        total: Resources::new(
            agent.cpus_milli * agents as u64,
            agent.mem_mb * agents as u64,
            agent.disk_mb * agents as u64,
        ),
        agents: vec![agent; agents],
        roles: vec![Role { weight: 1.0 }; roles as usize],
        frameworks,
        filters: Vec::new(),
    }
}
