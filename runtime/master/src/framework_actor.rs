//! One actor per framework: it runs the framework's scheduler policy.
//!
//! The registry owns everything the scheduler sees and everything its decisions change.
//! When something changes for a framework (offers arrived, tasks changed state, the
//! workload or the scheduler was replaced), the registry pokes its actor; the actor asks the
//! registry for a turn (a view and the updates not seen yet), calls the policy on a blocking
//! thread (wasm is CPU work), and hands the decisions back. Turns of one framework never
//! overlap; changes that arrive during a call are folded into the next turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest pause between a status-only turn and the next.
const MAX_PAUSE: Duration = Duration::from_millis(200);

use actix::prelude::*;
use corral_policy::scheduler::{Decision, SchedulerView, TaskStatus};
use corral_policy::SchedulerSlot;

use crate::registry_actor::RegistryActor;

/// Runs one framework's scheduler.
pub struct FrameworkActor {
    id: String,
    slot: Arc<SchedulerSlot>,
    registry: Addr<RegistryActor>,
    busy: bool,
    poked: bool,
}

impl FrameworkActor {
    /// The actor of framework `id`.
    pub fn new(id: String, slot: Arc<SchedulerSlot>, registry: Addr<RegistryActor>) -> Self {
        Self {
            id,
            slot,
            registry,
            busy: false,
            poked: false,
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.poked = false;
        let registry = self.registry.clone();
        let slot = self.slot.clone();
        let id = self.id.clone();
        async move {
            // After a turn that only reported status updates, the next one waits twice as
            // long as that turn took (up to 200 ms): a burst of updates then costs a few
            // calls over large views rather than one call per handful of updates.
            let mut pause = Duration::ZERO;
            loop {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let asked = Instant::now();
                let Ok(Some(turn)) = registry.send(SchedulerTurn { id: id.clone() }).await else {
                    break;
                };
                tracing::debug!(
                    framework = %id,
                    tasks = turn.view.tasks.len(),
                    updates = turn.updates.len(),
                    offers = turn.view.offers.len(),
                    view_ms = asked.elapsed().as_secs_f64() * 1000.0,
                    "scheduler view"
                );
                let slot = slot.clone();
                let Turn {
                    view,
                    updates,
                    offer_ids,
                } = turn;
                let generation = view.generation;
                let view = Arc::new(view);
                let status_only = !updates.is_empty() && offer_ids.is_empty();
                let start = Instant::now();
                let result = tokio::task::spawn_blocking(move || {
                    if updates.is_empty() {
                        slot.schedule_shared(view)
                    } else {
                        slot.status_shared(view, &updates)
                    }
                    .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("the scheduler call did not complete: {e}")));
                let took = start.elapsed();
                // The turn's cost (its view, then the call) decides the pause: twice
                // that, so status-only turns take at most a third of the time.
                pause = if status_only {
                    (asked.elapsed() * 2).min(MAX_PAUSE)
                } else {
                    Duration::ZERO
                };
                tracing::debug!(
                    framework = %id,
                    call_ms = took.as_secs_f64() * 1000.0,
                    "scheduler turn"
                );
                let m = &crate::http::metrics::METRICS;
                m.policy_calls.inc("scheduler");
                m.policy_call_seconds
                    .observe("scheduler", took.as_secs_f64());
                if result.is_err() {
                    m.policy_errors.inc("scheduler");
                }
                if registry
                    .send(Decide {
                        id: id.clone(),
                        offer_ids,
                        generation,
                        result,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        .into_actor(self)
        .map(|(), act, ctx| {
            act.busy = false;
            if act.poked {
                act.run(ctx);
            }
        })
        .spawn(ctx);
    }
}

impl Actor for FrameworkActor {
    type Context = Context<Self>;
}

/// Something changed for the framework: its scheduler should have a turn.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poke;

impl Handler<Poke> for FrameworkActor {
    type Result = ();

    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        if self.busy {
            self.poked = true;
        } else {
            self.run(ctx);
        }
    }
}

/// The framework ended: stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for FrameworkActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One scheduler call's input.
pub struct Turn {
    /// What the scheduler sees.
    pub view: SchedulerView,
    /// Updates it has not seen; empty means a `schedule` call, else a `status` call.
    pub updates: Vec<TaskStatus>,
    /// The registry's ids of the view's offers, in the view's order.
    pub offer_ids: Vec<u64>,
}

/// Asks the registry for the framework's next turn; `None` when there is nothing to do.
#[derive(Message)]
#[rtype(result = "Option<Turn>")]
pub struct SchedulerTurn {
    /// The framework.
    pub id: String,
}

/// A scheduler's answer (or its error), for the registry to carry out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Decide {
    /// The framework.
    pub id: String,
    /// The offers of the turn, in the view's order.
    pub offer_ids: Vec<u64>,
    /// The workload generation the view held.
    pub generation: u32,
    /// The validated decisions, or why there are none.
    pub result: Result<Vec<Decision>, String>,
}
