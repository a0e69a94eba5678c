//! The master's book of tasks: where each runs, its latest status, and de-duplication of
//! status updates (agents deliver them at least once).

use std::collections::{BTreeSet, HashMap, HashSet};

use corral_wire::pb::{self, TaskState};

use crate::resources::Resources;

/// One task the master knows.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    /// What was launched (host ports filled in).
    pub spec: pb::TaskSpec,
    /// The agent it runs on.
    pub agent_id: String,
    /// Its latest status.
    pub status: pb::TaskStatus,
    /// What it holds on its agent until it ends.
    pub resources: Resources,
    /// When the master launched it (ms since the Unix epoch; 0 when not known).
    pub launched_ms: u64,
    seen: HashSet<String>,
}

impl TaskEntry {
    /// The latest state.
    pub fn state(&self) -> TaskState {
        TaskState::try_from(self.status.state).unwrap_or(TaskState::TaskUnknown)
    }
}

/// What applying a status update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The update id was seen before: acknowledge again, change nothing.
    Duplicate,
    /// No such task: acknowledge, so the agent stops retrying, and change nothing.
    UnknownTask,
    /// The task moved to a new state; `released` holds resources freed by a terminal state.
    Updated {
        /// The agent the task ran on.
        agent_id: String,
        /// Resources to give back to the agent, when the task just ended.
        released: Option<Resources>,
    },
    /// The task had already ended: later updates are acknowledged but do not change it.
    AlreadyTerminal,
    /// The task runs on another agent (tasks never move): acknowledge, change nothing.
    OtherAgent {
        /// The agent the task runs on.
        runs_on: String,
    },
}

/// Every task the master knows, by id.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Hashed, not ordered: ids share long prefixes (`{framework}.{name}.`), which made
    /// every ordered lookup among 100,000 tasks a run of long compares. Hashed with
    /// foldhash (seeded per process), several times faster than SipHash on ids this long.
    tasks: HashMap<String, TaskEntry, foldhash::fast::RandomState>,
    /// Task ids by agent (a task never moves).
    by_agent: HashMap<String, BTreeSet<String>>,
}

/// The resources a spec asks for, with its host ports.
pub fn spec_resources(spec: &pb::TaskSpec) -> Resources {
    let mut r: Resources = spec
        .resources
        .as_ref()
        .map(Resources::from)
        .unwrap_or_default();
    r.ports = crate::resources::normalize(
        spec.port_mappings
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| (p.host_port, p.host_port))
            .collect(),
    );
    r
}

impl Tasks {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a task launched on `agent_id`, in `TASK_STAGING` until the agent reports.
    pub fn add(&mut self, now: u64, spec: pb::TaskSpec, agent_id: &str) -> &TaskEntry {
        let status = pb::TaskStatus {
            task_id: spec.task_id.clone(),
            framework_id: spec.framework_id.clone(),
            agent_id: agent_id.to_owned(),
            state: TaskState::TaskStaging as i32,
            message: "sent to the agent".into(),
            timestamp_ms: now,
            ..Default::default()
        };
        let id = spec.task_id.clone();
        let entry = TaskEntry {
            resources: spec_resources(&spec),
            spec,
            agent_id: agent_id.to_owned(),
            status,
            launched_ms: now,
            seen: HashSet::new(),
        };
        self.insert(entry);
        &self.tasks[&id]
    }

    fn insert(&mut self, entry: TaskEntry) {
        self.by_agent
            .entry(entry.agent_id.clone())
            .or_default()
            .insert(entry.spec.task_id.clone());
        if let Some(old) = self.tasks.insert(entry.spec.task_id.clone(), entry) {
            let id = &old.spec.task_id;
            if self
                .tasks
                .get(id)
                .is_some_and(|t| t.agent_id != old.agent_id)
            {
                if let Some(set) = self.by_agent.get_mut(&old.agent_id) {
                    set.remove(id);
                }
            }
        }
    }

    /// Forgets a task (one of an ended framework the master no longer keeps).
    pub fn remove(&mut self, id: &str) -> Option<TaskEntry> {
        let entry = self.tasks.remove(id)?;
        if let Some(set) = self.by_agent.get_mut(&entry.agent_id) {
            set.remove(id);
            if set.is_empty() {
                self.by_agent.remove(&entry.agent_id);
            }
        }
        Some(entry)
    }

    /// Puts back a task the master knew before it restarted, with its latest status and
    /// when it was launched.
    pub fn restore(
        &mut self,
        spec: pb::TaskSpec,
        status: pb::TaskStatus,
        agent_id: &str,
        launched_ms: u64,
    ) {
        self.insert(TaskEntry {
            resources: spec_resources(&spec),
            agent_id: agent_id.to_owned(),
            spec,
            status,
            launched_ms,
            seen: HashSet::new(),
        });
    }

    /// The tasks on `agent_id`, ended ones included.
    pub fn on_agent<'a>(&'a self, agent_id: &str) -> impl Iterator<Item = &'a TaskEntry> + 'a {
        self.by_agent
            .get(agent_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.tasks.get(id))
    }

    /// Adopts a task an agent reports as its own (after the master lost track of it).
    /// Returns whether the task was new to the master.
    pub fn adopt(&mut self, spec: pb::TaskSpec, status: pb::TaskStatus) -> bool {
        if self.tasks.contains_key(&spec.task_id) {
            return false;
        }
        self.insert(TaskEntry {
            resources: spec_resources(&spec),
            agent_id: status.agent_id.clone(),
            spec,
            status,
            launched_ms: 0,
            seen: HashSet::new(),
        });
        true
    }

    /// Applies a status update from an agent.
    pub fn apply(&mut self, status: &pb::TaskStatus) -> Applied {
        let Some(task) = self.tasks.get_mut(&status.task_id) else {
            return Applied::UnknownTask;
        };
        if task.agent_id != status.agent_id {
            return Applied::OtherAgent {
                runs_on: task.agent_id.clone(),
            };
        }
        if !status.update_id.is_empty() && !task.seen.insert(status.update_id.clone()) {
            return Applied::Duplicate;
        }
        if task.state().is_terminal() {
            return Applied::AlreadyTerminal;
        }
        let next = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        task.status = status.clone();
        if !status.port_mappings.is_empty() {
            task.spec.port_mappings = status.port_mappings.clone();
        }
        Applied::Updated {
            agent_id: task.agent_id.clone(),
            released: next.is_terminal().then(|| task.resources.clone()),
        }
    }

    /// Marks every unfinished task on `agent_id` lost, returning their new statuses and
    /// the resources they held.
    pub fn agent_lost(&mut self, now: u64, agent_id: &str) -> Vec<(pb::TaskStatus, Resources)> {
        let mut out = Vec::new();
        let ids: Vec<String> = self
            .by_agent
            .get(agent_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in &ids {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            if task.agent_id == agent_id && !task.state().is_terminal() {
                task.status = pb::TaskStatus {
                    task_id: task.spec.task_id.clone(),
                    framework_id: task.spec.framework_id.clone(),
                    agent_id: agent_id.to_owned(),
                    state: TaskState::TaskLost as i32,
                    reason: pb::TaskReason::ReasonAgentLost as i32,
                    message: "the agent became unreachable".into(),
                    timestamp_ms: now,
                    ..Default::default()
                };
                out.push((task.status.clone(), task.resources.clone()));
            }
        }
        out
    }

    /// The task with this id.
    pub fn get(&self, id: &str) -> Option<&TaskEntry> {
        self.tasks.get(id)
    }

    /// Every task, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &TaskEntry> {
        let mut all: Vec<&TaskEntry> = self.tasks.values().collect();
        all.sort_unstable_by(|a, b| a.spec.task_id.cmp(&b.spec.task_id));
        all.into_iter()
    }

    /// Whether a task with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> pb::TaskSpec {
        pb::TaskSpec {
            task_id: id.into(),
            image: "img".into(),
            resources: Some(pb::Resources {
                cpus_milli: 500,
                mem_mb: 64,
                ..Default::default()
            }),
            port_mappings: vec![pb::PortMapping {
                container_port: 80,
                host_port: 31005,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn update(id: &str, uid: &str, state: TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: id.into(),
            agent_id: "a1".into(),
            state: state as i32,
            update_id: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn duplicates_are_acknowledged_without_effect_and_terminal_releases_once() {
        let mut tasks = Tasks::new();
        tasks.add(0, spec("t1"), "a1");
        assert!(matches!(
            tasks.apply(&update("t1", "u1", TaskState::TaskRunning)),
            Applied::Updated { released: None, .. }
        ));
        assert_eq!(
            tasks.apply(&update("t1", "u1", TaskState::TaskRunning)),
            Applied::Duplicate
        );
        match tasks.apply(&update("t1", "u2", TaskState::TaskFinished)) {
            Applied::Updated {
                released: Some(r), ..
            } => {
                assert_eq!(
                    (r.cpus_milli, r.mem_mb, r.ports),
                    (500, 64, vec![(31005, 31005)])
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tasks.apply(&update("t1", "u2", TaskState::TaskFinished)),
            Applied::Duplicate
        );
        assert_eq!(
            tasks.apply(&update("t1", "u3", TaskState::TaskRunning)),
            Applied::AlreadyTerminal
        );
        assert_eq!(tasks.get("t1").unwrap().state(), TaskState::TaskFinished);
        assert_eq!(
            tasks.apply(&update("nope", "u4", TaskState::TaskRunning)),
            Applied::UnknownTask
        );
    }

    #[test]
    fn an_update_from_another_agent_changes_nothing() {
        let mut tasks = Tasks::new();
        tasks.add(0, spec("t1"), "a1");
        let mut from_a2 = update("t1", "u1", TaskState::TaskFinished);
        from_a2.agent_id = "a2".into();
        assert_eq!(
            tasks.apply(&from_a2),
            Applied::OtherAgent {
                runs_on: "a1".into()
            }
        );
        assert_eq!(tasks.get("t1").unwrap().state(), TaskState::TaskStaging);
        // Its update id was not taken: the real agent's update with it still applies.
        assert!(matches!(
            tasks.apply(&update("t1", "u1", TaskState::TaskRunning)),
            Applied::Updated { .. }
        ));
    }

    #[test]
    fn a_lost_agent_loses_its_unfinished_tasks() {
        let mut tasks = Tasks::new();
        tasks.add(0, spec("t1"), "a1");
        tasks.add(0, spec("t2"), "a1");
        tasks.add(0, spec("t3"), "a2");
        tasks.apply(&update("t2", "u", TaskState::TaskFinished));
        let lost = tasks.agent_lost(10, "a1");
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0.task_id, "t1");
        assert_eq!(tasks.get("t1").unwrap().state(), TaskState::TaskLost);
        assert_eq!(tasks.get("t3").unwrap().state(), TaskState::TaskStaging);
    }
}
