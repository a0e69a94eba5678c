//! The master's book of frameworks: what each was submitted with, its offers, its filters,
//! what it asked the allocator for, and the updates its scheduler has not seen yet.
//!
//! Plain data, owned by the registry actor; the framework actor only runs the scheduler.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::Addr;
use corral_core::{view, Resources};
use corral_policy::scheduler as wit;
use corral_policy::SchedulerSlot;
use corral_wire::pb;

use crate::framework_actor::FrameworkActor;

/// A framework's scheduler records of its tasks, in launch order, kept up to date as its
/// tasks change (a turn copies them instead of building 10,000 records afresh), and what
/// its unfinished tasks hold (summed again only after a change).
#[derive(Debug, Default)]
pub struct TaskRecords {
    list: Vec<wit::Task>,
    /// Task id → index in `list`.
    index: HashMap<String, usize>,
    /// The sum of `held`, until a record changes.
    held: Option<view::Resources>,
}

impl TaskRecords {
    /// The records, in launch order.
    pub fn list(&self) -> &[wit::Task] {
        &self.list
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The record of `task_id`.
    pub fn get(&self, task_id: &str) -> Option<&wit::Task> {
        self.index.get(task_id).map(|&i| &self.list[i])
    }

    /// Appends the record of the task launched last.
    pub fn push(&mut self, task: wit::Task) {
        self.index.insert(task.task_id.clone(), self.list.len());
        self.list.push(task);
        self.held = None;
    }

    /// Replaces the record of `task.task_id`, if there is one.
    pub fn replace(&mut self, task: wit::Task) {
        if let Some(&i) = self.index.get(&task.task_id) {
            self.list[i] = task;
            self.held = None;
        }
    }

    /// Forgets every record.
    pub fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
        self.held = None;
    }

    /// What the unfinished tasks hold.
    pub fn held(&mut self) -> view::Resources {
        let list = &self.list;
        *self.held.get_or_insert_with(|| {
            list.iter().filter(|t| !wit::is_terminal(t.state)).fold(
                view::Resources::ZERO,
                |acc, t| {
                    acc.saturating_add(&view::Resources::new(
                        t.resources.cpus_milli,
                        t.resources.mem_mb,
                        t.resources.disk_mb,
                    ))
                },
            )
        })
    }
}

/// The role of a framework submitted without one.
pub const DEFAULT_ROLE: &str = "*";

/// How long a framework is refused an agent after its scheduler's answer was invalid.
pub const ERROR_REFUSE_MS: u64 = 5_000;

/// The longest offer filter a scheduler can ask for (one day).
pub const MAX_REFUSE_SECONDS: u32 = 86_400;

/// Where a framework is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkState {
    Active,
    Completed,
    Failed,
    Killed,
}

impl FrameworkState {
    /// The wire form.
    pub fn to_pb(self) -> pb::FrameworkState {
        match self {
            FrameworkState::Active => pb::FrameworkState::FrameworkActive,
            FrameworkState::Completed => pb::FrameworkState::FrameworkCompleted,
            FrameworkState::Failed => pb::FrameworkState::FrameworkFailed,
            FrameworkState::Killed => pb::FrameworkState::FrameworkKilled,
        }
    }
}

/// Resources of one agent offered to one framework, until its scheduler answers.
#[derive(Debug, Clone)]
pub struct OfferEntry {
    pub agent_id: String,
    pub resources: Resources,
}

/// One of a framework's tasks, in its books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkTask {
    pub id: String,
    /// The workload generation it was launched under.
    pub generation: u32,
    /// How many tasks of its name the framework launched before it.
    pub attempt: u32,
}

/// One framework.
pub struct Framework {
    pub id: String,
    pub name: String,
    pub role: String,
    pub workload: String,
    pub generation: u32,
    pub state: FrameworkState,
    /// Why it ended.
    pub message: String,
    pub submitted_at_ms: u64,
    pub ended_at_ms: u64,
    pub suppressed: bool,
    /// The unit its scheduler asked to be offered in (zero: whole agents).
    pub demand: view::Resources,
    /// How many units it wants (1 until its scheduler says).
    pub wanted: u32,
    /// Agent id → until when (ms) the framework refuses it.
    pub filters: HashMap<String, u64>,
    /// Outstanding offers by id.
    pub offers: BTreeMap<u64, OfferEntry>,
    /// Offers arrived that its scheduler has not seen.
    pub fresh_offers: bool,
    /// Its scheduler must be called even with no offers (start, update, swap).
    pub needs_schedule: bool,
    /// Status updates its scheduler has not seen, in order.
    pub updates: Vec<pb::TaskStatus>,
    /// Its tasks, in launch order (ended ones beyond the newest
    /// `max_completed_tasks_per_framework` forgotten, but never the newest of a name).
    pub tasks: Vec<FrameworkTask>,
    /// Instance name → how many tasks of that name it launched: the next one's attempt.
    pub attempts: HashMap<String, u32>,
    /// A task of it ended since its ended tasks were last counted for forgetting.
    pub ended_since_forget: bool,
    /// Its scheduler's records of `tasks`, in the same order.
    pub records: TaskRecords,
    pub calls: u64,
    pub errors: u64,
    pub last_error: String,
    /// The active scheduler's digest.
    pub digest: String,
    pub slot: Arc<SchedulerSlot>,
    /// The slot's rollbacks already saved (see [`SchedulerSlot::rollbacks`]).
    pub rollbacks_seen: u64,
    pub actor: Option<Addr<FrameworkActor>>,
}

impl Framework {
    /// A framework just submitted: running, wanting one unit of its default demand,
    /// its scheduler not yet called; no tasks, offers or filters.
    pub fn new(
        id: String,
        name: String,
        role: String,
        workload: String,
        slot: Arc<SchedulerSlot>,
    ) -> Self {
        Framework {
            id,
            name,
            role,
            workload,
            generation: 1,
            state: FrameworkState::Active,
            message: String::new(),
            submitted_at_ms: 0,
            ended_at_ms: 0,
            suppressed: false,
            demand: view::Resources::ZERO,
            wanted: 1,
            filters: HashMap::new(),
            offers: BTreeMap::new(),
            fresh_offers: false,
            needs_schedule: true,
            updates: Vec::new(),
            tasks: Vec::new(),
            attempts: HashMap::new(),
            ended_since_forget: false,
            records: TaskRecords::default(),
            calls: 0,
            errors: 0,
            last_error: String::new(),
            digest: String::new(),
            rollbacks_seen: slot.rollbacks().count,
            slot,
            actor: None,
        }
    }

    /// Numbers a new task of instance `name`: the tasks of that name launched before it.
    pub fn next_attempt(&mut self, name: &str) -> u32 {
        let next = self.attempts.entry(name.to_owned()).or_default();
        let attempt = *next;
        *next = next.saturating_add(1);
        attempt
    }

    /// Whether the framework takes part in allocation.
    pub fn is_active(&self) -> bool {
        self.state == FrameworkState::Active
    }

    /// What it wants now, as the allocator is told: nothing before its scheduler's first
    /// turn. Otherwise a cycle that ran meanwhile would offer a new (or restored)
    /// framework one whole agent (the default demand), and a scheduler that spreads its
    /// tasks would stack them all there.
    pub fn wanted_now(&self) -> u32 {
        if self.calls + self.errors > 0 {
            self.wanted
        } else {
            0
        }
    }

    /// Whether its scheduler has something to look at.
    pub fn has_work(&self) -> bool {
        self.is_active() && (self.fresh_offers || self.needs_schedule || !self.updates.is_empty())
    }

    /// The resources of its outstanding offers.
    pub fn offered(&self) -> Resources {
        self.offers
            .values()
            .fold(Resources::default(), |acc, o| acc.add(&o.resources))
    }

    /// Whether `agent_id` is filtered at `now`.
    pub fn is_filtered(&self, agent_id: &str, now: u64) -> bool {
        self.filters.get(agent_id).is_some_and(|&until| now < until)
    }

    /// Drops filters that have run out.
    pub fn expire_filters(&mut self, now: u64) {
        self.filters.retain(|_, until| now < *until);
    }
}

/// Checks a framework's name: what the CLI and the API name it by.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "framework name {name:?}: use 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// Checks a role's name (`*` is the default role).
pub fn validate_role(role: &str) -> Result<(), String> {
    let ok = role == DEFAULT_ROLE
        || (!role.is_empty()
            && role.len() <= 64
            && !role.starts_with('.')
            && !role.starts_with('-')
            && role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "role {role:?}: use '*' or 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        ))
    }
}

/// Checks a workload file: the scheduler parses it, but a file that is not TOML is refused
/// at once, with the line and column of the mistake.
pub fn validate_workload(workload: &str) -> Result<(), String> {
    if workload.len() > 1 << 20 {
        return Err(format!(
            "workload: {} bytes is over the limit of 1 MiB",
            workload.len()
        ));
    }
    toml::from_str::<toml::Table>(workload)
        .map(|_| ())
        .map_err(|e| format!("workload is not valid TOML: {}", e.to_string().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_and_workloads() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("web_2-a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_role("*").is_ok());
        assert!(validate_role("prod.web").is_ok());
        assert!(validate_role(".x").is_err());
        assert!(validate_workload("count = 3\nimage = \"busybox\"\n").is_ok());
        let err = validate_workload("count = \n").expect_err("a missing value is refused");
        assert!(err.contains("line 1"), "{err}");
    }
}
