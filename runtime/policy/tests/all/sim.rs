//! A harness for scheduler tests: a framework's view, kept the way the master keeps it.
//!
//! [`Sim`] holds a [`SchedulerView`] and a [`SchedulerSlot`]; each call hands the view to
//! the scheduler and applies its (validated) decisions as the master would: a launch adds
//! its tasks (staging, on the offer's agent, stamped with the generation and the time),
//! suppress and revive flip `suppressed`, and every offer of the call is used up; a kill
//! changes nothing until the test reports the agent's answer. Tests move tasks through
//! states with [`Sim::update`] and time on with `view.now_ms`.

use corral_policy::scheduler::{
    Decision, Demand, PortRange, ResourceOffer, Resources, SchedulerView, Task, TaskReason,
    TaskSpec, TaskState, TaskStatus,
};
use corral_policy::SchedulerSlot;

use crate::{host, policy};

pub fn res(cpus_milli: u64, mem_mb: u64) -> Resources {
    Resources {
        cpus_milli,
        mem_mb,
        disk_mb: 0,
    }
}

/// An offer of agent `agent` with host ports 31000-31009.
pub fn offer(agent: &str, r: Resources) -> ResourceOffer {
    ResourceOffer {
        agent_id: agent.into(),
        hostname: agent.into(),
        resources: r,
        ports: vec![PortRange {
            begin: 31000,
            end: 31009,
        }],
    }
}

/// A slot named `framework/test` with the component at `path` loaded.
pub fn scheduler(path: &str) -> SchedulerSlot {
    let slot = SchedulerSlot::new(host(), "framework/test");
    slot.swap(&policy(path), "test")
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
    slot
}

/// A fresh view of framework `fw` with this workload, generation 1 and nothing else.
pub fn view(workload: &str) -> SchedulerView {
    SchedulerView {
        now_ms: 1_000,
        framework_id: "fw".into(),
        name: "demo".into(),
        role: "default".into(),
        workload: workload.into(),
        generation: 1,
        offers: Vec::new(),
        tasks: Vec::new(),
        draining: Vec::new(),
        suppressed: false,
    }
}

pub struct Sim {
    pub slot: SchedulerSlot,
    pub view: SchedulerView,
}

impl Sim {
    pub fn new(path: &str, workload: &str) -> Sim {
        Sim {
            slot: scheduler(path),
            view: view(workload),
        }
    }

    /// `schedule` with these offers; the decisions, applied.
    pub fn schedule(&mut self, offers: Vec<ResourceOffer>) -> Vec<Decision> {
        self.view.offers = offers;
        let d = self
            .slot
            .schedule(&self.view)
            .unwrap_or_else(|e| panic!("schedule: {e}"));
        self.apply(&d);
        d
    }

    /// Moves `ids` to `state` (with `healthy`) and calls `status`; the decisions, applied.
    pub fn update(
        &mut self,
        ids: &[&str],
        state: TaskState,
        healthy: Option<bool>,
    ) -> Vec<Decision> {
        let mut updates = Vec::new();
        for id in ids {
            let t = self
                .view
                .tasks
                .iter_mut()
                .find(|t| t.task_id == *id)
                .unwrap_or_else(|| panic!("no task {id}"));
            t.state = state;
            t.healthy = healthy;
            t.updated_ms = self.view.now_ms;
            t.exit_code = match state {
                TaskState::Finished => Some(0),
                TaskState::Failed => Some(1),
                _ => None,
            };
            t.message = format!("test moved it to {state:?}");
            updates.push(TaskStatus {
                task_id: t.task_id.clone(),
                agent_id: t.agent_id.clone(),
                state,
                reason: TaskReason::Unspecified,
                message: t.message.clone(),
                exit_code: t.exit_code,
                healthy,
            });
        }
        self.view.offers.clear();
        let d = self
            .slot
            .status(&self.view, &updates)
            .unwrap_or_else(|e| panic!("status: {e}"));
        self.apply(&d);
        d
    }

    fn apply(&mut self, decisions: &[Decision]) {
        for d in decisions {
            match d {
                Decision::Launch(l) => {
                    let agent = self.view.offers[l.offer as usize].agent_id.clone();
                    for spec in &l.tasks {
                        // As the host numbers attempts: after the newest of the name,
                        // which the view always holds (older ones may be forgotten).
                        let attempt = self
                            .view
                            .tasks
                            .iter()
                            .filter(|t| t.name == spec.name)
                            .map(|t| t.attempt + 1)
                            .max()
                            .unwrap_or(0);
                        self.view.tasks.push(Task {
                            task_id: spec.task_id.clone(),
                            name: spec.name.clone(),
                            attempt,
                            agent_id: agent.clone(),
                            state: TaskState::Staging,
                            reason: TaskReason::Unspecified,
                            message: String::new(),
                            exit_code: None,
                            healthy: None,
                            generation: self.view.generation,
                            resources: spec.resources,
                            launched_ms: self.view.now_ms,
                            updated_ms: self.view.now_ms,
                        });
                    }
                }
                // As in the master, a kill changes nothing until the agent reports.
                Decision::Kill(_) => {}
                Decision::Suppress => self.view.suppressed = true,
                Decision::Revive => self.view.suppressed = false,
                _ => {}
            }
        }
        self.view.offers.clear();
    }

    /// The ids of the tasks in `state`.
    pub fn ids(&self, state: TaskState) -> Vec<String> {
        self.view
            .tasks
            .iter()
            .filter(|t| t.state == state)
            .map(|t| t.task_id.clone())
            .collect()
    }

    /// The agent task `id` runs on.
    pub fn agent_of(&self, id: &str) -> &str {
        &self
            .view
            .tasks
            .iter()
            .find(|t| t.task_id == id)
            .unwrap_or_else(|| panic!("no task {id}"))
            .agent_id
    }
}

/// Every launched spec, in order.
pub fn specs(decisions: &[Decision]) -> Vec<&TaskSpec> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Launch(l) => Some(l.tasks.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Launched task ids by offer: `[(offer, [ids])]`.
pub fn launches(decisions: &[Decision]) -> Vec<(u32, Vec<String>)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Launch(l) => {
                Some((l.offer, l.tasks.iter().map(|t| t.task_id.clone()).collect()))
            }
            _ => None,
        })
        .collect()
}

/// The call's demand, if any.
pub fn demand(decisions: &[Decision]) -> Option<Demand> {
    decisions.iter().find_map(|d| match d {
        Decision::Demand(x) => Some(*x),
        _ => None,
    })
}

/// The ids the call kills.
pub fn kills(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Kill(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The call's `fail` message, if any.
pub fn failure(decisions: &[Decision]) -> Option<&str> {
    decisions.iter().find_map(|d| match d {
        Decision::Fail(m) => Some(m.as_str()),
        _ => None,
    })
}
