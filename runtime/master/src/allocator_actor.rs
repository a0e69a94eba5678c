//! The allocator actor: owns the allocator policy slot and runs allocation cycles.
//!
//! A cycle asks the registry for a view of the cluster, calls the policy on a blocking
//! thread (wasm is CPU work and must not stall the event loop), and hands the offers back
//! to the registry. Cycles never overlap. A swap compiles and dry-runs the new component
//! on a blocking thread too, and switches between two cycles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use corral_policy::{AllocatorSlot, SwapRecord};

use crate::registry_actor::RegistryActor;
use crate::registry_frameworks::{AllocationView, ApplyOffers};
use crate::registry_store::AllocatorActive;

/// Runs allocation cycles on the active allocator policy.
pub struct AllocatorActor {
    slot: Arc<AllocatorSlot>,
    registry: Addr<RegistryActor>,
    interval: Duration,
    in_cycle: bool,
    /// A cycle was asked for while one ran: run another when it ends.
    again: bool,
    cycles: u64,
    /// The slot's rollbacks as of the latest cycle: a failed cycle after which there are
    /// more has rolled a new policy back, and the registry must keep the one restored.
    rollbacks: u64,
}

impl AllocatorActor {
    /// An actor driving `slot` every `interval`.
    pub fn new(
        slot: Arc<AllocatorSlot>,
        registry: Addr<RegistryActor>,
        interval: Duration,
    ) -> Self {
        Self {
            rollbacks: slot.rollbacks().count,
            slot,
            registry,
            interval,
            in_cycle: false,
            again: false,
            cycles: 0,
        }
    }

    fn cycle(&mut self, ctx: &mut Context<Self>) {
        if self.in_cycle {
            return;
        }
        self.in_cycle = true;
        let slot = self.slot.clone();
        let registry = self.registry.clone();
        async move {
            let view = registry.send(AllocationView).await.ok()?;
            let start = Instant::now();
            let result = tokio::task::spawn_blocking(move || slot.allocate(&view))
                .await
                .ok()?;
            let took = start.elapsed();
            if let Ok(allocation) = &result {
                if !allocation.offers.is_empty() {
                    // The registry checks each offer against the cluster as it is now.
                    let _ = registry
                        .send(ApplyOffers {
                            offers: allocation.offers.clone(),
                        })
                        .await;
                }
            }
            Some((result, took))
        }
        .into_actor(self)
        .map(|res, act, ctx| {
            act.in_cycle = false;
            act.cycles += 1;
            if std::mem::take(&mut act.again) {
                act.cycle(ctx);
            }
            if let Some((result, took)) = &res {
                let m = &crate::http::metrics::METRICS;
                m.allocation_cycle.observe(took.as_secs_f64());
                m.policy_calls.inc("allocator");
                m.policy_call_seconds
                    .observe("allocator", took.as_secs_f64());
                if result.is_err() {
                    m.policy_errors.inc("allocator");
                }
            }
            match &res {
                Some((Ok(allocation), took)) => {
                    tracing::trace!(
                        offers = allocation.offers.len(),
                        took_us = took.as_micros() as u64,
                        "allocation cycle"
                    );
                }
                Some((Err(e), _)) => {
                    tracing::warn!(error = %e, "allocation cycle failed; offers discarded")
                }
                None => {}
            }
            if let Some((Err(_), _)) = &res {
                let rollbacks = act.slot.rollbacks();
                if rollbacks.count != act.rollbacks {
                    act.rollbacks = rollbacks.count;
                    if let Some(digest) = rollbacks.restored {
                        act.registry.do_send(AllocatorActive {
                            digest,
                            records: act.slot.history(),
                        });
                    }
                }
            }
        })
        .spawn(ctx);
    }
}

impl Actor for AllocatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.cycle(ctx));
    }
}

/// Something changed that new offers could answer (a framework asked for resources, an
/// agent joined): run a cycle now rather than at the next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AllocateSoon;

impl Handler<AllocateSoon> for AllocatorActor {
    type Result = ();

    fn handle(&mut self, _: AllocateSoon, ctx: &mut Self::Context) {
        if self.in_cycle {
            self.again = true;
        } else {
            self.cycle(ctx);
        }
    }
}

/// Swaps the allocator policy.
#[derive(Message)]
#[rtype(result = "Result<SwapRecord, String>")]
pub struct SwapAllocator {
    /// The component.
    pub bytes: Vec<u8>,
    /// Who asked.
    pub who: String,
}

impl Handler<SwapAllocator> for AllocatorActor {
    type Result = ResponseFuture<Result<SwapRecord, String>>;

    fn handle(&mut self, msg: SwapAllocator, _: &mut Self::Context) -> Self::Result {
        let slot = self.slot.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || slot.swap(&msg.bytes, &msg.who)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the swap did not complete: {e}")),
            }
        })
    }
}

/// The allocator slot's history.
#[derive(Message)]
#[rtype(result = "Vec<SwapRecord>")]
pub struct AllocatorHistory;

impl Handler<AllocatorHistory> for AllocatorActor {
    type Result = MessageResult<AllocatorHistory>;

    fn handle(&mut self, _: AllocatorHistory, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.slot.history())
    }
}
