//! Corral's WebAssembly policy host.
//!
//! Policies are WebAssembly components of the worlds in `wit/policy.wit`: an `allocator`
//! turns a view of the cluster into offers, a `scheduler` turns one framework's offers and
//! tasks into decisions. This crate runs them safely and lets an operator replace them
//! while the master runs.
//!
//! # Model
//!
//! - One [`PolicyHost`] per master: one wasmtime engine (components compiled once, shared
//!   by every slot, the latest few kept by digest so that a swap back skips compilation;
//!   at most [`PolicyConfig::concurrent_calls`] calls in flight) and a thread that ticks the engine's epoch every
//!   [`PolicyConfig::epoch_tick`].
//! - One slot per policy: an [`AllocatorSlot`] for the cluster and one [`SchedulerSlot`]
//!   per framework. A slot holds the active policy and its history ([`SwapRecord`]).
//! - A call runs in a store with a memory cap and a time budget. A scheduler's call
//!   instantiates the policy afresh (microseconds, from a pre-instantiated component, into
//!   a slot of the engine's instance pool whose memory is zeroed between calls). The
//!   allocator keeps the instance of its last valid answer for the next cycle, when the
//!   policy imports nothing from WASI: that spares a cycle the instantiation and the reset
//!   of the memory it touched (a failed call's instance is dropped, and a trap in a kept
//!   instance is retried in a fresh one; see `slot::Warm`). The host owns the state that
//!   matters, so a policy is a function of its view and a swap loses nothing; a policy
//!   must not count on memory it keeps from one call to the next. A policy that imports
//!   WASI gets a deny-all context (no files, sockets, environment; clocks that stand
//!   still; seeded randomness), so the same view always gives the same answer.
//! - Every answer is validated before it is returned ([`check_offers`],
//!   [`scheduler::check_decisions`]). A trap, a timeout, the memory cap or an invalid answer
//!   discards the call's result, is returned as a [`PolicyError`] and counted against the
//!   policy; a newly swapped policy that fails [`PolicyConfig::rollback_after`] calls in a
//!   row is rolled back to the one it replaced.
//!
//! # Calling protocol
//!
//! Calls are synchronous CPU work (milliseconds for large clusters): an actor runs them on
//! a blocking thread (`tokio::task::spawn_blocking`) with the slot in an `Arc`. Calls may
//! run concurrently with each other and with [`AllocatorSlot::swap`], which compiles and
//! dry-runs the new policy on the caller's thread and then switches atomically.
//!
//! ```no_run
//! use corral_core::view::{AllocatorView, Framework, Resources, Role};
//! use corral_policy::{AllocatorSlot, PolicyConfig, PolicyHost};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = PolicyHost::new(PolicyConfig::default())?;
//! let slot = AllocatorSlot::new(&host, "allocator");
//! slot.swap_file(std::path::Path::new(corral_policy::fixtures::DRF), "operator")?;
//! let view = AllocatorView {
//!     total: Resources::new(9000, 18432, 0),
//!     agents: vec![Resources::new(9000, 18432, 0)],
//!     roles: vec![Role { weight: 1.0 }],
//!     frameworks: vec![Framework {
//!         role: 0,
//!         allocated: Resources::ZERO,
//!         demand: Resources::new(1000, 4096, 0),
//!         wanted: 2,
//!         suppressed: false,
//!     }],
//!     ..AllocatorView::default()
//! };
//! let allocation = slot.allocate(&view)?;
//! assert_eq!(allocation.offers[0].resources, Resources::new(2000, 8192, 0));
//! for record in slot.history() {
//!     println!("{} {} errors={}", &record.digest[..12], record.state, record.errors);
//! }
//! # Ok(())
//! # }
//! ```

mod allocator;
mod bindings;
mod config;
mod error;
mod host;
pub mod scheduler;
mod slot;

pub use allocator::{check_offers, Allocation, Allocator, AllocatorSlot, NativeDrf};
pub use config::{ConfigError, PolicyConfig};
pub use error::{InvalidAnswer, PolicyError, SwapError};
pub use host::{HostError, PolicyHost};
pub use scheduler::SchedulerSlot;
pub use slot::{digest, read_component, PolicyState, Rollbacks, SwapRecord};

include!(concat!(env!("OUT_DIR"), "/wit_package.rs"));

/// Paths of the policies built from `policies/` and `examples/` by this crate's build script
/// (components, ready to load). For tests, benchmarks and a master's built-in defaults.
pub mod fixtures {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}

/// Policies compiled into the binary, so a master works with no policy files at hand.
pub mod builtin {
    macro_rules! component {
        ($name:literal) => {
            include_bytes!(concat!(env!("OUT_DIR"), "/components/", $name, ".wasm"))
        };
    }

    /// The weighted DRF allocator component (Rust), the master's default allocator.
    pub const DRF: &[u8] = component!("drf");

    /// The built-in schedulers: name and a one-line description, in the order a user
    /// would list them. [`scheduler`] returns each one's component.
    pub const SCHEDULERS: &[(&str, &str)] = &[
        (
            "hello",
            "runs `count` containers that echo a message, then completes (C; examples/hello)",
        ),
        (
            "batch",
            "runs a list of commands with per-task retries and a failure tolerance (examples/batch)",
        ),
        (
            "service",
            "keeps N instances running spread across agents, with rolling updates (examples/service)",
        ),
        (
            "service-bin-pack",
            "the service scheduler packing instances onto the fullest agents (examples/service)",
        ),
        (
            "first-fit",
            "runs [[task]] entries to completion, each on the first offer with room",
        ),
        (
            "bin-pack",
            "runs [[task]] entries to completion, packing the fullest offers first (WASI build)",
        ),
        (
            "spread",
            "runs [[task]] entries to completion, on the agents with the fewest tasks first",
        ),
    ];

    /// The component of the built-in scheduler `name` (one of [`SCHEDULERS`]).
    pub fn scheduler(name: &str) -> Option<&'static [u8]> {
        Some(match name {
            "hello" => component!("hello"),
            "batch" => component!("batch"),
            "service" => component!("service"),
            "service-bin-pack" => component!("service_bin_pack"),
            "first-fit" => component!("first_fit"),
            "bin-pack" => component!("bin_pack"),
            "spread" => component!("spread"),
            _ => return None,
        })
    }
}
