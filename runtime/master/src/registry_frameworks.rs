//! The registry's frameworks: allocation views and offers, scheduler turns and their
//! decisions, and the framework lifecycle (submit, update, kill, complete, fail).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use corral_core::agents::AgentState;
use corral_core::tasks::{spec_resources, Tasks};
use corral_core::{view, Resources};
use corral_policy::scheduler::{self as wit, Decision, SchedulerView};
use corral_policy::{SchedulerSlot, SwapRecord};
use corral_wire::pb::{self, envelope::Body};

use crate::convert;
use crate::framework_actor::{Decide, FrameworkActor, Poke, SchedulerTurn, Stop, Turn};
use crate::frameworks::{
    validate_name, validate_role, validate_workload, Framework, FrameworkState, FrameworkTask,
    OfferEntry, ERROR_REFUSE_MS, MAX_REFUSE_SECONDS,
};
use crate::now_ms;
use crate::registry_actor::{
    assign_ports, capacity, kill_envelope, refused, take_beyond, Refused, RegistryActor,
};
use crate::store::Op;

/// The label every task a framework launches carries: the workload generation it was
/// launched under (visible in `docker ps` and the API).
pub use corral_containerizer::GENERATION_LABEL;

fn scalar(r: &Resources) -> view::Resources {
    view::Resources::new(r.cpus_milli, r.mem_mb, r.disk_mb)
}

/// A framework's starting view: its workload, no offers, no tasks. New schedulers are
/// dry-run on it before the framework starts.
pub fn initial_view(id: &str, name: &str, role: &str, workload: &str) -> SchedulerView {
    SchedulerView {
        now_ms: now_ms(),
        framework_id: id.to_owned(),
        name: name.to_owned(),
        role: role.to_owned(),
        workload: workload.to_owned(),
        generation: 1,
        offers: Vec::new(),
        tasks: Vec::new(),
        draining: Vec::new(),
        suppressed: false,
    }
}

impl RegistryActor {
    /// The resources of outstanding offers on `agent_id`.
    pub(crate) fn offered_on(&self, agent_id: &str) -> Resources {
        self.frameworks
            .values()
            .flat_map(|f| f.offers.values())
            .filter(|o| o.agent_id == agent_id)
            .fold(Resources::default(), |acc, o| acc.add(&o.resources))
    }

    /// What an agent has neither running nor offered.
    pub(crate) fn free_on(&self, agent_id: &str) -> Resources {
        self.free_given(agent_id, &self.offered_on(agent_id))
    }

    /// What an agent has neither running nor in `offered`.
    fn free_given(&self, agent_id: &str, offered: &Resources) -> Resources {
        let Some(a) = self.agents.get(agent_id) else {
            return Resources::default();
        };
        a.total.saturating_sub(&a.used.add(offered))
    }

    /// The resources of outstanding offers, by agent: one pass over every offer, for the
    /// allocation cycle's many lookups.
    fn offered_by_agent(&self) -> HashMap<String, Resources> {
        let mut by_agent: HashMap<String, Resources> = HashMap::new();
        for o in self.frameworks.values().flat_map(|f| f.offers.values()) {
            let r = by_agent.entry(o.agent_id.clone()).or_default();
            *r = r.add(&o.resources);
        }
        by_agent
    }

    /// Hands a task's new status to its framework's scheduler.
    pub(crate) fn task_changed(&mut self, status: &pb::TaskStatus) {
        let Some(fw_id) = self
            .tasks
            .get(&status.task_id)
            .map(|t| t.spec.framework_id.clone())
        else {
            return;
        };
        self.refresh_view_task(&fw_id, &status.task_id);
        if let Some(fw) = self.frameworks.get_mut(&fw_id) {
            if fw.is_active() {
                fw.ended_since_forget |= status.is_terminal();
                fw.updates.push(status.clone());
                poke(fw);
            }
        }
    }

    /// The scheduler's record of a task as the registry holds it now.
    fn view_task(tasks: &Tasks, task_id: &str, generation: u32, attempt: u32) -> Option<wit::Task> {
        let t = tasks.get(task_id)?;
        Some(wit::Task {
            task_id: task_id.to_owned(),
            name: t.spec.name.clone(),
            attempt,
            agent_id: t.agent_id.clone(),
            state: convert::state_to_wit(t.status.state),
            reason: convert::reason_to_wit(t.status.reason),
            message: t.status.message.clone(),
            exit_code: t.status.exit_code,
            healthy: t.status.healthy,
            generation,
            resources: convert::resources_to_wit(&t.resources),
            launched_ms: t.launched_ms,
            updated_ms: t.status.timestamp_ms,
        })
    }

    /// Brings the framework's record of `task_id` up to date (adding it after a launch).
    pub(crate) fn refresh_view_task(&mut self, fw_id: &str, task_id: &str) {
        let Some(fw) = self.frameworks.get_mut(fw_id) else {
            return;
        };
        match fw.records.get(task_id) {
            Some(record) => {
                if let Some(t) =
                    Self::view_task(&self.tasks, task_id, record.generation, record.attempt)
                {
                    fw.records.replace(t);
                }
            }
            None => {
                // New tasks are appended to `fw.tasks` before this is called, so records
                // keep launch order; anything else is caught by the rebuild in `turn`.
                let Some(last) = fw.tasks.last() else {
                    return;
                };
                if fw.records.len() + 1 != fw.tasks.len() || last.id != task_id {
                    return;
                }
                if let Some(t) =
                    Self::view_task(&self.tasks, task_id, last.generation, last.attempt)
                {
                    fw.records.push(t);
                }
            }
        }
    }

    /// Takes back every offer of `agent_id` (it is gone or draining).
    pub(crate) fn rescind_agent(&mut self, agent_id: &str) {
        for fw in self.frameworks.values_mut() {
            fw.offers.retain(|_, o| o.agent_id != agent_id);
        }
    }

    /// The framework `name` names: the active one of that name, else the latest one of
    /// that name, else the one whose id it is.
    pub(crate) fn find_framework(&self, name: &str) -> Option<&Framework> {
        self.frameworks
            .values()
            .filter(|f| f.name == name)
            .max_by_key(|f| (f.is_active(), f.submitted_at_ms, f.id.clone()))
            .or_else(|| self.frameworks.get(name))
    }

    fn find_framework_id(&self, name: &str) -> Result<String, Refused> {
        self.find_framework(name)
            .map(|f| f.id.clone())
            .ok_or_else(|| refused("not_found", format!("no framework {name}")))
    }

    /// The ids of every framework `name` may mean (all of that name, or the one with that id).
    pub(crate) fn framework_ids_named(&self, name: &str) -> HashSet<String> {
        let mut ids: HashSet<String> = self
            .frameworks
            .values()
            .filter(|f| f.name == name)
            .map(|f| f.id.clone())
            .collect();
        ids.insert(name.to_owned());
        ids
    }

    /// The allocator's view: active agents' free resources, active frameworks with their
    /// roles, holdings, demands and filters. Remembers which index is which agent and
    /// framework, for the offers that come back.
    pub(crate) fn allocation_view(&mut self) -> view::AllocatorView {
        let now = now_ms();
        let mut total = view::Resources::ZERO;
        let mut agents = Vec::new();
        let mut agent_ids = Vec::new();
        let mut agent_index = BTreeMap::new();
        let offered = self.offered_by_agent();
        let schedulable: Vec<String> = self
            .agents
            .iter()
            .filter(|a| a.state == AgentState::Active)
            .map(|a| a.id.clone())
            .collect();
        for id in schedulable {
            let Some(a) = self.agents.get(&id) else {
                continue;
            };
            total = total.saturating_add(&scalar(&a.total));
            if !self.links.contains_key(&id) || self.draining.contains_key(&id) {
                continue;
            }
            agent_index.insert(id.clone(), agent_ids.len() as u32);
            let none = Resources::default();
            agents.push(scalar(
                &self.free_given(&id, offered.get(&id).unwrap_or(&none)),
            ));
            agent_ids.push(id);
        }
        let mut roles = Vec::new();
        let mut role_index = BTreeMap::new();
        let mut frameworks = Vec::new();
        let mut framework_ids = Vec::new();
        let mut filters = Vec::new();
        // What each active framework's tasks hold, in the order of the loop below.
        let mut held = Vec::new();
        for fw in self.frameworks.values_mut().filter(|f| f.is_active()) {
            fw.expire_filters(now);
            ensure_view_tasks(&self.tasks, fw);
            held.push(fw.records.held());
        }
        for (fw, held) in self.frameworks.values().filter(|f| f.is_active()).zip(held) {
            let role = *role_index.entry(fw.role.clone()).or_insert_with(|| {
                roles.push(view::Role {
                    weight: self.roles.get(&fw.role).copied().unwrap_or(1.0),
                });
                roles.len() as u32 - 1
            });
            let allocated = scalar(&fw.offered()).saturating_add(&held);
            let index = frameworks.len() as u32;
            for (agent_id, until) in &fw.filters {
                if let Some(&agent) = agent_index.get(agent_id) {
                    filters.push(view::Filter {
                        framework: index,
                        agent,
                        until_ms: *until,
                    });
                }
            }
            frameworks.push(view::Framework {
                role,
                allocated,
                demand: fw.demand,
                wanted: fw.wanted_now(),
                suppressed: fw.suppressed,
            });
            framework_ids.push(fw.id.clone());
        }
        self.cycle = (agent_ids, framework_ids);
        view::AllocatorView {
            now_ms: now,
            total,
            agents,
            roles,
            frameworks,
            filters,
        }
    }

    /// Turns the allocator's offers into offers to frameworks. Whatever changed since the
    /// view was built (an agent lost, a framework ended, resources taken) drops the offer.
    pub(crate) fn apply_offers(&mut self, offers: Vec<view::Offer>) {
        let mut poked = HashSet::new();
        let mut offered = self.offered_by_agent();
        for o in offers {
            let (Some(agent_id), Some(fw_id)) = (
                self.cycle.0.get(o.agent as usize).cloned(),
                self.cycle.1.get(o.framework as usize).cloned(),
            ) else {
                continue;
            };
            let usable = self
                .agents
                .get(&agent_id)
                .is_some_and(|a| a.state == AgentState::Active)
                && self.links.contains_key(&agent_id)
                && !self.draining.contains_key(&agent_id);
            if !usable {
                continue;
            }
            let free = self.free_given(
                &agent_id,
                offered.get(&agent_id).unwrap_or(&Resources::default()),
            );
            let want = Resources {
                cpus_milli: o.resources.cpus_milli,
                mem_mb: o.resources.mem_mb,
                disk_mb: o.resources.disk_mb,
                ports: free.ports.clone(),
            };
            if !free.contains(&want) {
                tracing::debug!(agent_id = %agent_id, framework = %fw_id, "offer no longer free; dropped");
                continue;
            }
            let Some(fw) = self.frameworks.get_mut(&fw_id) else {
                continue;
            };
            if !fw.is_active() || fw.suppressed {
                continue;
            }
            self.next_offer += 1;
            let on_agent = offered.entry(agent_id.clone()).or_default();
            *on_agent = on_agent.add(&want);
            fw.offers.insert(
                self.next_offer,
                OfferEntry {
                    agent_id,
                    resources: want,
                },
            );
            fw.fresh_offers = true;
            crate::http::metrics::METRICS.offers_made.inc();
            poked.insert(fw_id);
        }
        for id in poked {
            if let Some(fw) = self.frameworks.get(&id) {
                poke(fw);
            }
        }
    }

    fn turn(&mut self, id: &str) -> Option<Turn> {
        let now = now_ms();
        let draining: Vec<String> = self.draining.keys().cloned().collect();
        let fw = self.frameworks.get_mut(id)?;
        if !fw.has_work() {
            return None;
        }
        fw.expire_filters(now);
        fw.fresh_offers = false;
        fw.needs_schedule = false;
        let updates: Vec<wit::TaskStatus> = std::mem::take(&mut fw.updates)
            .iter()
            .map(convert::status_to_wit)
            .collect();
        let mut offer_ids = Vec::with_capacity(fw.offers.len());
        let mut offers = Vec::with_capacity(fw.offers.len());
        for (oid, o) in &fw.offers {
            offer_ids.push(*oid);
            offers.push(wit::ResourceOffer {
                agent_id: o.agent_id.clone(),
                hostname: self
                    .agents
                    .get(&o.agent_id)
                    .map(|a| a.hostname.clone())
                    .unwrap_or_default(),
                resources: convert::resources_to_wit(&o.resources),
                ports: o
                    .resources
                    .ports
                    .iter()
                    .map(|&(begin, end)| wit::PortRange { begin, end })
                    .collect(),
            });
        }
        ensure_view_tasks(&self.tasks, fw);
        let tasks = fw.records.list().to_vec();
        let view = SchedulerView {
            now_ms: now,
            framework_id: fw.id.clone(),
            name: fw.name.clone(),
            role: fw.role.clone(),
            workload: fw.workload.clone(),
            generation: fw.generation,
            offers,
            tasks,
            draining,
            suppressed: fw.suppressed,
        };
        Some(Turn {
            view,
            updates,
            offer_ids,
        })
    }

    fn decide(&mut self, msg: Decide) {
        let now = now_ms();
        let Some(fw) = self.frameworks.get_mut(&msg.id) else {
            return;
        };
        // The turn's offers are answered now, whatever the answer: take them back from the
        // framework (an offer rescinded meanwhile is already gone).
        let mut offers: Vec<Option<OfferEntry>> = msg
            .offer_ids
            .iter()
            .map(|oid| fw.offers.remove(oid))
            .collect();
        if !fw.is_active() {
            return;
        }
        // Until its scheduler's first turn, a framework wants nothing (`wanted_now`).
        let first_turn = fw.calls + fw.errors == 0;
        let decisions = match msg.result {
            Ok(d) => {
                fw.calls += 1;
                d
            }
            Err(e) => {
                fw.errors += 1;
                tracing::warn!(framework = %fw.id, error = %e, "scheduler error; its offers are declined for a while");
                fw.last_error = e;
                for o in offers.iter().flatten() {
                    fw.filters
                        .insert(o.agent_id.clone(), now.saturating_add(ERROR_REFUSE_MS));
                }
                // A failing new scheduler may have been rolled back: a restart must load
                // the one restored (its component was saved when it was first active).
                let rollbacks = fw.slot.rollbacks();
                if rollbacks.count != fw.rollbacks_seen {
                    fw.rollbacks_seen = rollbacks.count;
                    if let Some(restored) = rollbacks.restored {
                        tracing::info!(framework = %fw.id, digest = %restored, "the scheduler a restart loads is now the one rolled back to");
                        fw.digest = restored;
                    }
                    let records = fw.slot.history();
                    self.save_framework(&msg.id);
                    self.save_policy_records(records);
                    self.flush(None);
                }
                return;
            }
        };
        let mut launches = Vec::new();
        let mut kills = Vec::new();
        let mut end = None;
        let wanted_before = (fw.suppressed, fw.wanted, fw.demand);
        for d in decisions {
            match d {
                Decision::Launch(l) => {
                    let offer = offers.get_mut(l.offer as usize).and_then(Option::take);
                    launches.push((offer, l.tasks));
                }
                Decision::Decline(d) => {
                    if let Some(o) = offers.get_mut(d.offer as usize).and_then(Option::take) {
                        crate::http::metrics::METRICS.offers_declined.inc();
                        let secs = u64::from(d.refuse_seconds.min(MAX_REFUSE_SECONDS));
                        fw.filters
                            .insert(o.agent_id, now.saturating_add(secs * 1000));
                    }
                }
                Decision::Suppress => fw.suppressed = true,
                Decision::Revive => {
                    fw.suppressed = false;
                    fw.filters.clear();
                }
                Decision::Demand(d) => {
                    fw.demand = view::Resources::new(
                        d.resources.cpus_milli,
                        d.resources.mem_mb,
                        d.resources.disk_mb,
                    );
                    fw.wanted = d.count;
                }
                Decision::Kill(task_id) => kills.push(task_id),
                Decision::Complete => {
                    end = Some((
                        FrameworkState::Completed,
                        "its scheduler completed it".to_owned(),
                    ))
                }
                Decision::Fail(message) => end = Some((FrameworkState::Failed, message)),
            }
        }
        if fw.suppressed {
            // A suppressed framework holds no offers.
            fw.offers.clear();
        }
        let wants_more = !fw.suppressed
            && fw.wanted > 0
            && (first_turn || (fw.suppressed, fw.wanted, fw.demand) != wanted_before);
        let id = msg.id;
        for (offer, specs) in launches {
            self.launch(&id, offer, specs, msg.generation, now);
            // One commit queue entry per offer: the store writes the first offers' tasks
            // (and sends them) while the registry goes on with the rest.
            self.flush(None);
        }
        for task_id in kills {
            self.send_kill(&task_id);
        }
        if let Some((state, message)) = end {
            self.end_framework(&id, state, message);
        } else if wants_more {
            self.allocate_soon();
        }
        self.save_framework(&id);
        self.flush(None);
    }

    /// Launches `specs` on `offer` (validated by the policy host against the view; checked
    /// again here against the agent as it is now).
    fn launch(
        &mut self,
        fw_id: &str,
        offer: Option<OfferEntry>,
        specs: Vec<wit::TaskSpec>,
        generation: u32,
        now: u64,
    ) {
        let Some(offer) = offer else {
            // The offer was rescinded (its agent was lost or drained) during the call.
            for spec in specs {
                let spec = convert::spec_to_pb(&spec);
                self.record_failed_launch(
                    fw_id,
                    spec,
                    "",
                    pb::TaskState::TaskDropped,
                    pb::TaskReason::ReasonAgentLost,
                    "the offer was rescinded before the launch".into(),
                    generation,
                    now,
                );
            }
            return;
        };
        let mut remaining = offer.resources.clone();
        let agent_id = offer.agent_id.clone();
        for spec in specs {
            let mut spec = convert::spec_to_pb(&spec);
            spec.labels.retain(|l| l.key != GENERATION_LABEL);
            spec.labels.push(pb::KeyValue {
                key: GENERATION_LABEL.into(),
                value: generation.to_string(),
            });
            // Ids are checked against the framework's tasks by the host; a clash with
            // another framework's task is caught here (and the refusal recorded under a
            // new id).
            let refusal = if self.tasks.contains(&spec.task_id) {
                Some(format!(
                    "task id {} is already used in the cluster",
                    spec.task_id
                ))
            } else if !assign_ports(&mut spec, &remaining) {
                Some("port_mappings: the offer has too few free ports".to_owned())
            } else {
                corral_containerizer::validate_spec(&spec, &capacity(&remaining))
                    .err()
                    .map(|e| e.to_string())
            };
            if let Some(message) = refusal {
                self.record_failed_launch(
                    fw_id,
                    spec,
                    &agent_id,
                    pb::TaskState::TaskError,
                    pb::TaskReason::ReasonInvalidSpec,
                    message,
                    generation,
                    now,
                );
                continue;
            }
            let need = spec_resources(&spec);
            remaining = remaining.saturating_sub(&need);
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.used = a.used.add(&need);
            }
            let launch = corral_wire::envelope(Body::LaunchTask(pb::LaunchTask {
                spec: Some(spec.clone()),
            }));
            let task_id = self.add_framework_task(fw_id, spec, &agent_id, generation, now);
            self.save_task(&task_id);
            match self.links.get(&agent_id).map(|l| l.out.clone()) {
                Some(out) => self.send_when_saved(&out, launch),
                None => {
                    tracing::warn!(task_id = %task_id, agent_id = %agent_id, "agent link gone during launch")
                }
            }
            self.refresh_view_task(fw_id, &task_id);
            crate::http::metrics::METRICS.launches.inc();
            tracing::debug!(task_id = %task_id, agent_id = %agent_id, framework = %fw_id, "task launched");
        }
    }

    /// Records a task that never reached an agent, in a terminal state its scheduler sees.
    #[allow(clippy::too_many_arguments)]
    fn record_failed_launch(
        &mut self,
        fw_id: &str,
        mut spec: pb::TaskSpec,
        agent_id: &str,
        state: pb::TaskState,
        reason: pb::TaskReason,
        message: String,
        generation: u32,
        now: u64,
    ) {
        // Never over another task's record: an id in use (another framework's) is renamed.
        if self.tasks.contains(&spec.task_id) {
            spec.task_id = format!("{}.dup-{:08x}", spec.task_id, rand::random::<u32>());
        }
        tracing::info!(task_id = %spec.task_id, framework = %fw_id, error = %message, "launch refused");
        let task_id = self.add_framework_task(fw_id, spec, agent_id, generation, now);
        let status = pb::TaskStatus {
            task_id: task_id.clone(),
            framework_id: fw_id.to_owned(),
            agent_id: agent_id.to_owned(),
            state: state as i32,
            reason: reason as i32,
            message,
            timestamp_ms: now,
            ..Default::default()
        };
        self.tasks.apply(&status);
        self.save_task(&task_id);
        // Adds the framework's record of it, and tells its scheduler.
        self.task_changed(&status);
    }

    /// Asks a task's agent to kill it, if the task still runs and its agent is connected;
    /// remembers the kill for when an agent that is away comes back (see
    /// [`RegistryActor::kills`]). The kill waits behind the messages queued for the next
    /// commit (flush after), so that it never reaches the agent before the task's launch.
    pub(crate) fn send_kill(&mut self, task_id: &str) -> bool {
        let Some(task) = self.tasks.get(task_id) else {
            return false;
        };
        if task.state().is_terminal() {
            return false;
        }
        let kill = kill_envelope(task_id, &task.spec.framework_id);
        let out = self.links.get(&task.agent_id).map(|l| l.out.clone());
        if self.kills.insert(task_id.to_owned()) {
            self.save_task(task_id);
        }
        match out {
            Some(out) => {
                self.send_when_saved(&out, kill);
                true
            }
            None => false,
        }
    }

    /// Ends a framework: its offers go back, its tasks are killed, its actor stops.
    fn end_framework(&mut self, id: &str, state: FrameworkState, message: String) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        if !fw.is_active() {
            return;
        }
        tracing::info!(framework = %id, state = ?state, message = %message, "framework ended");
        fw.state = state;
        fw.message = message;
        fw.ended_at_ms = now_ms();
        fw.offers.clear();
        fw.updates.clear();
        fw.suppressed = true;
        if let Some(actor) = fw.actor.take() {
            actor.do_send(Stop);
        }
        let live: Vec<String> = fw
            .tasks
            .iter()
            .filter(|t| {
                self.tasks
                    .get(&t.id)
                    .is_some_and(|t| !t.state().is_terminal())
            })
            .map(|t| t.id.clone())
            .collect();
        for task_id in live {
            self.send_kill(&task_id);
        }
        self.save_framework(id);
    }

    /// Enters a new task of framework `fw_id` on `agent_id` in the books: the task, its
    /// launch order, and the framework's list with its generation and attempt (numbered
    /// by [`Framework::next_attempt`]). Returns its id.
    pub(crate) fn add_framework_task(
        &mut self,
        fw_id: &str,
        spec: pb::TaskSpec,
        agent_id: &str,
        generation: u32,
        now: u64,
    ) -> String {
        let id = spec.task_id.clone();
        let fw = self.frameworks.get_mut(fw_id);
        let attempt = fw.map_or(0, |fw| {
            let attempt = fw.next_attempt(&spec.name);
            fw.tasks.push(FrameworkTask {
                id: id.clone(),
                generation,
                attempt,
            });
            attempt
        });
        self.tasks.add(now, spec, agent_id);
        self.note_task(&id, generation, attempt);
        id
    }

    /// Forgets, for each running framework, its ended tasks beyond the
    /// `max_completed_tasks_per_framework` launched last, oldest first (as Mesos's
    /// `--max_completed_tasks_per_framework`), in memory, in the registry's file and in the
    /// views its scheduler is given: a service whose tasks are restarted for months would
    /// otherwise keep every attempt. The newest attempt of every name stays, however old:
    /// it tells the scheduler how that instance ended and how many attempts it had. Nor
    /// does a task go whose update its scheduler has not seen yet.
    pub(crate) fn forget_old_framework_tasks(&mut self) {
        let limit = self.max_completed_tasks_per_framework;
        let mut forgotten = Vec::new();
        for fw in self.frameworks.values_mut() {
            // Counted again only once a task has ended: a framework of many names, each
            // its newest attempt, is not scanned at every tick.
            if !fw.is_active() || !fw.ended_since_forget || fw.tasks.len() <= limit {
                continue;
            }
            fw.ended_since_forget = !fw.updates.is_empty();
            let tasks = &self.tasks;
            let unseen: HashSet<&str> = fw.updates.iter().map(|u| u.task_id.as_str()).collect();
            let ended = |t: &FrameworkTask| {
                tasks.get(&t.id).is_none_or(|t| t.state().is_terminal())
                    && !unseen.contains(t.id.as_str())
            };
            let attempts = &fw.attempts;
            let newest = |t: &FrameworkTask| {
                tasks.get(&t.id).is_some_and(|task| {
                    attempts.get(&task.spec.name) == Some(&t.attempt.saturating_add(1))
                })
            };
            let taken = take_beyond(&mut fw.tasks, limit, ended, |t| !newest(t));
            if !taken.is_empty() {
                // Rebuilt from `tasks` at its next turn.
                fw.records.clear();
                tracing::debug!(framework = %fw.id, forgotten = taken.len(), "ended tasks forgotten");
                forgotten.extend(taken.into_iter().map(|t| t.id));
            }
        }
        if forgotten.is_empty() {
            return;
        }
        for task_id in forgotten {
            self.forget_task(task_id);
        }
        self.flush(None);
    }

    /// Forgets the frameworks that ended longest ago, beyond the newest
    /// `max_completed_frameworks`, with their tasks and their schedulers' policy records,
    /// in memory and in the registry's file:
    /// a cluster that runs jobs for months would otherwise keep every one it ever ran (and
    /// list them all). A framework whose tasks are still being killed is kept until they
    /// have ended. Tasks run without a framework: see [`RegistryActor::forget_old_tasks`].
    pub(crate) fn forget_old_frameworks(&mut self) {
        let ended = self.frameworks.values().filter(|f| !f.is_active()).count();
        let Some(excess) = ended.checked_sub(self.max_completed_frameworks) else {
            return;
        };
        if excess == 0 {
            return;
        }
        let mut oldest: Vec<(u64, String)> = self
            .frameworks
            .values()
            .filter(|f| !f.is_active())
            .map(|f| (f.ended_at_ms, f.id.clone()))
            .collect();
        oldest.sort_unstable();
        // The oldest `excess` only: one whose tasks are still ending waits, and no newer
        // one goes in its place.
        let mut forgotten = 0;
        let mut components = HashSet::new();
        for (_, id) in oldest.into_iter().take(excess) {
            let Some(fw) = self.frameworks.get(&id) else {
                continue;
            };
            let tasks = &self.tasks;
            if fw
                .tasks
                .iter()
                .any(|t| tasks.get(&t.id).is_some_and(|t| !t.state().is_terminal()))
            {
                continue;
            }
            let Some(fw) = self.frameworks.remove(&id) else {
                continue;
            };
            components.extend(scheduler_digests(&fw).filter(|d| !d.is_empty()));
            self.forget_policy_records(&fw);
            for task in fw.tasks {
                self.forget_task(task.id);
            }
            self.ops.push(Op::ForgetFramework(id.clone()));
            tracing::info!(framework = %id, name = %fw.name, "ended framework forgotten");
            forgotten += 1;
        }
        for digest in self.unused_components(components) {
            self.ops.push(Op::ForgetComponent(digest));
        }
        if forgotten > 0 {
            self.flush(None);
        }
    }

    /// Forgets the saved policy records of `fw`'s scheduler slot (it has been forgotten):
    /// this run's, and those of earlier runs, which name its slot and were loaded before
    /// it ended, and after the end of any kept framework of the same name that ended
    /// before it (a name is free again once its framework has ended).
    fn forget_policy_records(&mut self, fw: &Framework) {
        for r in fw.slot.history() {
            if let Some((seq, _)) = self.saved_policies.remove(&(r.slot, r.digest, r.loaded_at)) {
                self.ops.push(Op::ForgetHistory(seq));
            }
        }
        let slot = format!("framework/{}", fw.name);
        let at_ms = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let after = self
            .frameworks
            .values()
            .filter(|f| f.name == fw.name && !f.is_active() && f.ended_at_ms < fw.ended_at_ms)
            .map(|f| f.ended_at_ms)
            .max()
            .map_or(std::time::UNIX_EPOCH, at_ms);
        let ended = at_ms(fw.ended_at_ms);
        let ops = &mut self.ops;
        self.past_policies.retain(|(seq, r)| {
            let its = r.slot == slot && r.loaded_at > after && r.loaded_at <= ended;
            if its {
                ops.push(Op::ForgetHistory(*seq));
            }
            !its
        });
    }

    /// Of `digests` (the scheduler components of forgotten frameworks), those no kept
    /// framework has loaded and that are not the allocator's: their components, kept for
    /// restarts, are no longer needed.
    fn unused_components(&self, mut digests: HashSet<String>) -> Vec<String> {
        if let Some(d) = &self.allocator_digest {
            digests.remove(d);
        }
        for fw in self.frameworks.values() {
            if digests.is_empty() {
                break;
            }
            for d in scheduler_digests(fw) {
                digests.remove(&d);
            }
        }
        let mut unused: Vec<String> = digests.into_iter().collect();
        unused.sort();
        unused
    }

    /// The wire form of a framework.
    pub(crate) fn framework_info(&self, fw: &Framework) -> pb::FrameworkInfo {
        // Counted by the state's number (a pass over every task of the framework, so no
        // string compares in it), then named.
        let mut by_state: HashMap<pb::TaskState, u32> = HashMap::new();
        let mut allocated = fw.offered();
        for task in &fw.tasks {
            if let Some(t) = self.tasks.get(&task.id) {
                let state = t.state();
                *by_state.entry(state).or_default() += 1;
                if !state.is_terminal() {
                    allocated = allocated.add(&t.resources);
                }
            }
        }
        let counts: BTreeMap<&'static str, u32> = by_state
            .into_iter()
            .map(|(state, n)| (state.as_str_name(), n))
            .collect();
        let total = self
            .agents
            .iter()
            .filter(|a| a.state == AgentState::Active)
            .fold(view::Resources::ZERO, |acc, a| {
                acc.saturating_add(&scalar(&a.total))
            });
        pb::FrameworkInfo {
            framework_id: fw.id.clone(),
            name: fw.name.clone(),
            role: fw.role.clone(),
            weight: self.roles.get(&fw.role).copied().unwrap_or(1.0),
            state: fw.state.to_pb() as i32,
            message: fw.message.clone(),
            generation: fw.generation,
            workload: fw.workload.clone(),
            scheduler_digest: fw.slot.active().unwrap_or_else(|| fw.digest.clone()),
            submitted_at_ms: fw.submitted_at_ms,
            ended_at_ms: fw.ended_at_ms,
            suppressed: fw.suppressed,
            offers: fw.offers.len() as u32,
            dominant_share: corral_core::drf::dominant_share(&scalar(&allocated), &total),
            allocated: Some((&allocated).into()),
            tasks: counts
                .into_iter()
                .map(|(state, count)| pb::TaskCount {
                    state: state.to_owned(),
                    count,
                })
                .collect(),
            scheduler_calls: fw.calls,
            scheduler_errors: fw.errors,
            last_error: fw.last_error.clone(),
            demand: Some(pb::Resources {
                cpus_milli: fw.demand.cpus_milli,
                mem_mb: fw.demand.mem_mb,
                disk_mb: fw.demand.disk_mb,
                ports: Vec::new(),
            }),
            wanted: fw.wanted,
        }
    }

    fn check_submit(
        &self,
        name: &str,
        role: &str,
        weight: f64,
        workload: &str,
    ) -> Result<(), Refused> {
        let invalid = |m: String| refused("invalid_framework", m);
        validate_name(name).map_err(invalid)?;
        validate_role(role).map_err(invalid)?;
        if weight != 0.0 && !corral_core::drf::valid_weight(weight) {
            return Err(invalid(format!(
                "weight {weight}: use a finite number greater than 0"
            )));
        }
        validate_workload(workload).map_err(invalid)?;
        if self
            .frameworks
            .values()
            .any(|f| f.name == name && f.is_active())
        {
            return Err(refused(
                "framework_exists",
                format!("framework {name} is already running; update it or kill it first"),
            ));
        }
        Ok(())
    }

    /// A new framework id for `name`: the name and a random suffix, so that task ids
    /// (which start with it) and the container names made from them do not clash with
    /// another incarnation of the framework, or another cluster on the same Docker host.
    fn next_framework_id(&self, name: &str) -> String {
        // 48 random bits: ended frameworks are forgotten, so an id must not come back for
        // a framework submitted again under the same name (agents may still hold
        // containers and updates of the old one's tasks).
        loop {
            let id = format!("{name}-{:012x}", rand::random::<u64>() >> 16);
            if !self.frameworks.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Every scheduler component a framework has had: the one a restart loads, and each one
/// its slot has loaded in this run.
fn scheduler_digests(fw: &Framework) -> impl Iterator<Item = String> + '_ {
    std::iter::once(fw.digest.clone()).chain(fw.slot.history().into_iter().map(|r| r.digest))
}

/// Builds a framework's scheduler records in full when they are not in step with its
/// tasks (after a restart); otherwise they are kept up to date change by change.
fn ensure_view_tasks(tasks: &Tasks, fw: &mut Framework) {
    if fw.records.len() == fw.tasks.len() {
        return;
    }
    fw.records.clear();
    for task in &fw.tasks {
        if let Some(t) = RegistryActor::view_task(tasks, &task.id, task.generation, task.attempt) {
            fw.records.push(t);
        }
    }
}

fn poke(fw: &Framework) {
    if let Some(actor) = &fw.actor {
        actor.do_send(Poke);
    }
}

// ------------------------------------------------------------------------------------
// Messages

/// The allocator's view of the cluster now.
#[derive(Message)]
#[rtype(result = "view::AllocatorView")]
pub struct AllocationView;

impl Handler<AllocationView> for RegistryActor {
    type Result = MessageResult<AllocationView>;

    fn handle(&mut self, _: AllocationView, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.allocation_view())
    }
}

/// The offers of the allocation cycle that used the latest view.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyOffers {
    pub offers: Vec<view::Offer>,
}

impl Handler<ApplyOffers> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyOffers, _: &mut Self::Context) {
        self.apply_offers(msg.offers);
    }
}

impl Handler<SchedulerTurn> for RegistryActor {
    type Result = MessageResult<SchedulerTurn>;

    fn handle(&mut self, msg: SchedulerTurn, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.turn(&msg.id))
    }
}

impl Handler<Decide> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Decide, _: &mut Self::Context) {
        self.decide(msg);
    }
}

/// Checks a submission before its scheduler is loaded.
#[derive(Message)]
#[rtype(result = "Result<String, Refused>")]
pub struct CheckSubmit {
    pub name: String,
    pub role: String,
    pub weight: f64,
    pub workload: String,
}

impl Handler<CheckSubmit> for RegistryActor {
    type Result = Result<String, Refused>;

    fn handle(&mut self, msg: CheckSubmit, _: &mut Self::Context) -> Self::Result {
        self.check_submit(&msg.name, &msg.role, msg.weight, &msg.workload)?;
        Ok(self.next_framework_id(&msg.name))
    }
}

/// Starts a framework whose scheduler is loaded.
#[derive(Message)]
#[rtype(result = "Result<pb::FrameworkInfo, Refused>")]
pub struct AddFramework {
    /// The id [`CheckSubmit`] gave.
    pub id: String,
    pub name: String,
    pub role: String,
    pub weight: f64,
    pub workload: String,
    pub slot: Arc<SchedulerSlot>,
    /// The scheduler's component, kept for restarts.
    pub component: Vec<u8>,
}

impl Handler<AddFramework> for RegistryActor {
    type Result = Result<pb::FrameworkInfo, Refused>;

    fn handle(&mut self, msg: AddFramework, ctx: &mut Self::Context) -> Self::Result {
        self.check_submit(&msg.name, &msg.role, msg.weight, &msg.workload)?;
        let id = if self.frameworks.contains_key(&msg.id) {
            self.next_framework_id(&msg.name)
        } else {
            msg.id
        };
        if msg.weight != 0.0 {
            self.roles.insert(msg.role.clone(), msg.weight);
        } else {
            self.roles.entry(msg.role.clone()).or_insert(1.0);
        }
        let actor = FrameworkActor::new(id.clone(), msg.slot.clone(), ctx.address()).start();
        let fw = Framework {
            submitted_at_ms: now_ms(),
            digest: corral_policy::digest(&msg.component),
            actor: Some(actor),
            ..Framework::new(id.clone(), msg.name, msg.role, msg.workload, msg.slot)
        };
        tracing::info!(framework = %id, role = %fw.role, "framework submitted");
        poke(&fw);
        let info = self.framework_info(&fw);
        let (role, digest) = (fw.role.clone(), fw.digest.clone());
        self.frameworks.insert(id.clone(), fw);
        self.save_component(&digest, msg.component);
        self.save_role(&role);
        self.save_framework(&id);
        self.flush(None);
        Ok(info)
    }
}

/// Frameworks, all or those `name` names.
#[derive(Message)]
#[rtype(result = "Result<Vec<pb::FrameworkInfo>, Refused>")]
pub struct ListFrameworks {
    pub name: String,
}

impl Handler<ListFrameworks> for RegistryActor {
    type Result = Result<Vec<pb::FrameworkInfo>, Refused>;

    fn handle(&mut self, msg: ListFrameworks, _: &mut Self::Context) -> Self::Result {
        if msg.name.is_empty() {
            return Ok(self
                .frameworks
                .values()
                .map(|f| self.framework_info(f))
                .collect());
        }
        let fw = self
            .find_framework(&msg.name)
            .ok_or_else(|| refused("not_found", format!("no framework {}", msg.name)))?;
        Ok(vec![self.framework_info(fw)])
    }
}

/// Replaces a running framework's workload.
#[derive(Message)]
#[rtype(result = "Result<pb::FrameworkInfo, Refused>")]
pub struct UpdateFramework {
    pub name: String,
    pub workload: String,
}

impl Handler<UpdateFramework> for RegistryActor {
    type Result = Result<pb::FrameworkInfo, Refused>;

    fn handle(&mut self, msg: UpdateFramework, _: &mut Self::Context) -> Self::Result {
        validate_workload(&msg.workload).map_err(|m| refused("invalid_framework", m))?;
        let id = self.find_framework_id(&msg.name)?;
        let Some(fw) = self.frameworks.get_mut(&id) else {
            return Err(refused("not_found", format!("no framework {}", msg.name)));
        };
        if !fw.is_active() {
            return Err(refused(
                "framework_ended",
                format!("framework {} has ended; submit it again", msg.name),
            ));
        }
        fw.workload = msg.workload;
        fw.generation += 1;
        fw.needs_schedule = true;
        // A swap before the scheduler's next call dry-runs on the new workload.
        fw.slot.note_workload(&fw.workload, fw.generation);
        tracing::info!(framework = %id, generation = fw.generation, "workload updated");
        poke(fw);
        self.save_framework(&id);
        self.flush(None);
        Ok(self.framework_info(&self.frameworks[&id]))
    }
}

/// Tears a framework down and kills its tasks.
#[derive(Message)]
#[rtype(result = "Result<pb::FrameworkInfo, Refused>")]
pub struct KillFramework {
    pub name: String,
}

impl Handler<KillFramework> for RegistryActor {
    type Result = Result<pb::FrameworkInfo, Refused>;

    fn handle(&mut self, msg: KillFramework, _: &mut Self::Context) -> Self::Result {
        let id = self.find_framework_id(&msg.name)?;
        if !self.frameworks[&id].is_active() {
            return Err(refused(
                "framework_ended",
                format!("framework {} has already ended", msg.name),
            ));
        }
        self.end_framework(&id, FrameworkState::Killed, "killed by request".into());
        self.flush(None);
        Ok(self.framework_info(&self.frameworks[&id]))
    }
}

/// The scheduler slot of a running framework, to swap its policy.
#[derive(Message)]
#[rtype(result = "Result<(String, Arc<SchedulerSlot>), Refused>")]
pub struct FrameworkSlot {
    pub name: String,
}

impl Handler<FrameworkSlot> for RegistryActor {
    type Result = Result<(String, Arc<SchedulerSlot>), Refused>;

    fn handle(&mut self, msg: FrameworkSlot, _: &mut Self::Context) -> Self::Result {
        let fw = self
            .frameworks
            .values()
            .find(|f| f.name == msg.name && f.is_active())
            .ok_or_else(|| refused("unknown_slot", format!("no running framework {}", msg.name)))?;
        Ok((fw.id.clone(), fw.slot.clone()))
    }
}

/// A framework's scheduler was swapped: give the new one a turn.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SchedulerSwapped {
    pub id: String,
    /// The new scheduler's component, kept for restarts.
    pub component: Vec<u8>,
}

impl Handler<SchedulerSwapped> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SchedulerSwapped, _: &mut Self::Context) {
        let digest = corral_policy::digest(&msg.component);
        if let Some(fw) = self.frameworks.get_mut(&msg.id) {
            fw.needs_schedule = true;
            fw.digest = digest.clone();
            poke(fw);
        }
        self.save_component(&digest, msg.component);
        self.save_framework(&msg.id);
        self.flush(None);
    }
}

/// Every policy record, as `corral policy list` and the HTTP API show them: slot by slot,
/// the allocator first and then the others in the order of their first load, and each
/// slot's records oldest first (those of earlier runs of the master included).
#[derive(Message)]
#[rtype(result = "Vec<SwapRecord>")]
pub struct PolicyHistories {
    /// The allocator slot's history (the allocator actor holds it).
    pub allocator: Vec<SwapRecord>,
}

impl Handler<PolicyHistories> for RegistryActor {
    type Result = MessageResult<PolicyHistories>;

    fn handle(&mut self, msg: PolicyHistories, _: &mut Self::Context) -> Self::Result {
        let mut out = msg.allocator;
        out.extend(self.past_policies.iter().map(|(_, r)| r.clone()));
        // An ended framework's scheduler is retired.
        for fw in self.frameworks.values() {
            out.extend(fw.slot.history().into_iter().map(|mut r| {
                if !fw.is_active() && r.state == corral_policy::PolicyState::Active {
                    r.state = corral_policy::PolicyState::Retired;
                }
                r
            }));
        }
        in_history_order(&mut out);
        MessageResult(out)
    }
}

/// Orders `records` as [`PolicyHistories`] says (a stable sort: records of one slot loaded
/// at the same time keep their order).
fn in_history_order(records: &mut [SwapRecord]) {
    let mut first: HashMap<String, std::time::SystemTime> = HashMap::new();
    for r in records.iter() {
        first
            .entry(r.slot.clone())
            .and_modify(|t| *t = (*t).min(r.loaded_at))
            .or_insert(r.loaded_at);
    }
    records.sort_by_cached_key(|r| {
        (
            r.slot != "allocator",
            first.get(&r.slot).copied(),
            r.slot.clone(),
            r.loaded_at,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_free_distinct_and_start_anywhere_in_the_offer() {
        let free = Resources {
            ports: vec![(31000, 31001), (32000, 32009)],
            ..Resources::default()
        };
        let spec = |host_ports: &[u32]| pb::TaskSpec {
            port_mappings: host_ports
                .iter()
                .map(|&host_port| pb::PortMapping {
                    container_port: 80,
                    host_port,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut firsts = HashSet::new();
        for _ in 0..50 {
            // A port the task names itself, and two to pick.
            let mut s = spec(&[32005, 0, 0]);
            assert!(assign_ports(&mut s, &free));
            let ports: Vec<u32> = s.port_mappings.iter().map(|p| p.host_port).collect();
            assert_eq!(ports[0], 32005);
            for p in &ports[1..] {
                assert!(
                    (31000..=31001).contains(p) || (32000..=32009).contains(p),
                    "{ports:?}"
                );
                assert_ne!(*p, 32005);
            }
            assert_ne!(ports[1], ports[2]);
            firsts.insert(ports[1]);
        }
        assert!(firsts.len() > 1, "always {firsts:?}");
        // More ports wanted than the offer has.
        let mut s = spec(&[0; 13]);
        assert!(!assign_ports(&mut s, &free));
        let mut s = spec(&[0; 12]);
        assert!(assign_ports(&mut s, &free));
    }

    #[test]
    fn default_role_is_valid() {
        assert!(validate_role(crate::frameworks::DEFAULT_ROLE).is_ok());
    }

    /// An ended framework `id`, ended at `ended_at_ms`, with one task in `state`.
    fn ended(
        books: &mut RegistryActor,
        slot: &Arc<SchedulerSlot>,
        id: &str,
        ended_at_ms: u64,
        state: pb::TaskState,
    ) {
        let mut fw = framework(id, slot, FrameworkState::Completed);
        fw.ended_at_ms = ended_at_ms;
        books.frameworks.insert(id.to_owned(), fw);
        let spec = pb::TaskSpec {
            task_id: format!("{id}.t.1"),
            framework_id: id.to_owned(),
            image: "busybox".into(),
            ..Default::default()
        };
        let task_id = books.add_framework_task(id, spec, "agent-1", 1, 1);
        books.tasks.apply(&pb::TaskStatus {
            task_id,
            agent_id: "agent-1".into(),
            state: state as i32,
            update_id: "u1".into(),
            ..Default::default()
        });
    }

    /// Books configured by `config`, writing to `store` if given, and a scheduler slot for
    /// their frameworks.
    fn books(
        config: crate::MasterConfig,
        store: Option<crate::store::Store>,
    ) -> (RegistryActor, Arc<SchedulerSlot>) {
        let host = corral_policy::PolicyHost::new(corral_policy::PolicyConfig::default())
            .expect("policy host");
        let slot = Arc::new(SchedulerSlot::new(&host, "test"));
        (RegistryActor::new(&config, store), slot)
    }

    /// A framework `id` in `state` with no tasks.
    fn framework(id: &str, slot: &Arc<SchedulerSlot>, state: FrameworkState) -> Framework {
        let role = crate::frameworks::DEFAULT_ROLE.to_owned();
        Framework {
            state,
            suppressed: true,
            wanted: 0,
            needs_schedule: false,
            ..Framework::new(
                id.to_owned(),
                id.to_owned(),
                role,
                String::new(),
                slot.clone(),
            )
        }
    }

    /// Launches task `{fw}.{name}.{attempt}` of running framework `fw` and leaves it in
    /// `state`.
    fn launched(books: &mut RegistryActor, fw: &str, name: &str, state: pb::TaskState) {
        let (task_id, attempt) = sent(books, fw, name);
        let status = pb::TaskStatus {
            task_id,
            agent_id: "agent-1".into(),
            state: state as i32,
            update_id: format!("u-{name}-{attempt}"),
            ..Default::default()
        };
        books.tasks.apply(&status);
        books.save_task(&status.task_id);
        books.flush(None);
        if let Some(f) = books.frameworks.get_mut(fw) {
            f.ended_since_forget |= status.is_terminal();
        }
    }

    /// Launches task `{fw}.{name}.{attempt}` of framework `fw` on `agent-1`, which has not
    /// answered yet; returns its id and attempt.
    fn sent(books: &mut RegistryActor, fw: &str, name: &str) -> (String, u32) {
        let Some(f) = books.frameworks.get(fw) else {
            panic!("no framework {fw}");
        };
        let attempt = f.attempts.get(name).copied().unwrap_or(0);
        let spec = pb::TaskSpec {
            task_id: format!("{fw}.{name}.{attempt}"),
            framework_id: fw.to_owned(),
            name: name.to_owned(),
            image: "busybox".into(),
            ..Default::default()
        };
        (books.add_framework_task(fw, spec, "agent-1", 1, 1), attempt)
    }

    #[test]
    fn an_agent_back_is_sent_again_the_launches_and_kills_it_never_received() {
        use pb::TaskState::{TaskKilled, TaskLost, TaskRunning, TaskStaging};
        let (mut books, slot) = books(crate::MasterConfig::default(), None);
        for (id, state) in [("f", FrameworkState::Active), ("g", FrameworkState::Killed)] {
            books
                .frameworks
                .insert(id.to_owned(), framework(id, &slot, state));
        }
        // Saved, sent, never answered (the agent reports none of them): launched again,
        // but for the one of a framework that has ended, which is killed.
        let (unsent, _) = sent(&mut books, "f", "a");
        let (of_ended, _) = sent(&mut books, "g", "a");
        // The agent said it had them, and no longer does: lost.
        launched(&mut books, "f", "staged", TaskStaging);
        launched(&mut books, "f", "ran", TaskRunning);
        // Killed by its scheduler while its agent was away: never launched.
        let (unsent_killed, _) = sent(&mut books, "f", "k");
        books.send_kill(&unsent_killed);
        // Killed while its agent was away, and still running there: killed again.
        launched(&mut books, "f", "runs", TaskRunning);
        books.send_kill("f.runs.0");
        // Killed while its agent was away, which was starting it (no status yet).
        let (starting, _) = sent(&mut books, "f", "starting");
        books.send_kill(&starting);
        let reported = |books: &RegistryActor, id: &str| {
            books.tasks.get(id).map(|t| pb::TaskInfo {
                spec: Some(t.spec.clone()),
                status: Some(t.status.clone()),
                ..Default::default()
            })
        };
        let runs = reported(&books, "f.runs.0");
        let without_status =
            reported(&books, &starting).map(|t| pb::TaskInfo { status: None, ..t });
        let (out, mut agent) = tokio::sync::mpsc::unbounded_channel();
        books
            .links
            .insert("agent-1".to_owned(), crate::registry_actor::Link::new(out));
        books.reconcile("agent-1", runs.into_iter().chain(without_status).collect());
        books.flush(None);

        let (mut relaunched, mut killed) = (Vec::new(), Vec::new());
        while let Ok(env) = agent.try_recv() {
            match env.body {
                Some(Body::LaunchTask(l)) => relaunched.extend(l.spec.map(|s| s.task_id)),
                Some(Body::KillTask(k)) => killed.push(k.task_id),
                _ => {}
            }
        }
        assert_eq!(relaunched, std::slice::from_ref(&unsent));
        assert_eq!(killed, ["f.runs.0", starting.as_str()]);
        let state = |books: &RegistryActor, id: &str| books.tasks.get(id).map(|t| t.state());
        assert_eq!(state(&books, &unsent), Some(TaskStaging));
        assert_eq!(state(&books, &of_ended), Some(TaskKilled));
        assert_eq!(state(&books, "f.staged.0"), Some(TaskLost));
        assert_eq!(state(&books, "f.ran.0"), Some(TaskLost));
        assert_eq!(state(&books, &unsent_killed), Some(TaskKilled));
        assert_eq!(state(&books, "f.runs.0"), Some(TaskRunning));
        assert_eq!(state(&books, &starting), Some(TaskStaging));

        // Reported by the agent the next time (it got the launch): left as it is.
        let report = books.tasks.get(&unsent).map(|t| pb::TaskInfo {
            spec: Some(t.spec.clone()),
            status: Some(pb::TaskStatus {
                state: TaskStaging as i32,
                update_id: "agent-says".into(),
                ..t.status.clone()
            }),
            ..Default::default()
        });
        books.reconcile("agent-1", report.into_iter().collect());
        books.flush(None);
        assert!(agent.try_recv().is_err(), "nothing sent again");
        assert_eq!(state(&books, &unsent), Some(TaskStaging));
    }

    #[test]
    fn a_restart_keeps_attempts_and_times_and_says_why_a_scheduler_did_not_load() {
        use crate::store::Loaded;
        let (mut books, slot) = books(crate::MasterConfig::default(), None);
        let stored = |fw: &str, name: &str, seq: u64, attempt: Option<u32>| pb::StoredTask {
            spec: Some(pb::TaskSpec {
                task_id: format!("{fw}.{name}.{seq}"),
                framework_id: fw.into(),
                name: name.into(),
                image: "busybox".into(),
                ..Default::default()
            }),
            status: Some(pb::TaskStatus {
                task_id: format!("{fw}.{name}.{seq}"),
                state: pb::TaskState::TaskFailed as i32,
                ..Default::default()
            }),
            agent_id: "agent-1".into(),
            generation: 1,
            seq,
            attempt,
            launched_ms: 0,
            kill_asked: false,
        };
        let framework = |id: &str| pb::StoredFramework {
            framework_id: id.into(),
            name: id.into(),
            role: crate::frameworks::DEFAULT_ROLE.into(),
            generation: 1,
            state: pb::FrameworkState::FrameworkActive as i32,
            ..Default::default()
        };
        // The newest attempt failed at 5,000 ms, 4,000 ms after its launch: the times a
        // scheduler's crash-loop backoff counts from, kept across the restart.
        let mut newest = stored("f", "web", 4, Some(7));
        newest.launched_ms = 1_000;
        if let Some(s) = newest.status.as_mut() {
            s.timestamp_ms = 5_000;
        }
        let loaded = Loaded {
            // `f`'s records come from before attempts were kept (numbered in launch
            // order), but for the newest; `g`'s scheduler does not load.
            tasks: vec![
                stored("f", "web", 1, None),
                stored("f", "db", 2, None),
                stored("f", "web", 3, None),
                newest,
                stored("g", "x", 5, Some(0)),
            ],
            frameworks: vec![framework("f"), framework("g")],
            // Active when the master stopped.
            history: ["allocator", "framework/f", "framework/g"]
                .iter()
                .enumerate()
                .map(|(i, slot)| {
                    let record = pb::PolicyRecord {
                        slot: (*slot).into(),
                        state: "active".into(),
                        ..Default::default()
                    };
                    (i as u64, record)
                })
                .collect(),
            ..Default::default()
        };
        let slots = HashMap::from([
            ("f".to_owned(), Ok(slot.clone())),
            ("g".to_owned(), Err("type mismatch in `task`".to_owned())),
        ]);
        let empty = slot.clone();
        books.restore(loaded, slots, move |_| empty.clone());
        let f = &books.frameworks["f"];
        let attempts: Vec<(&str, u32)> =
            f.tasks.iter().map(|t| (t.id.as_str(), t.attempt)).collect();
        assert_eq!(
            attempts,
            [
                ("f.web.1", 0),
                ("f.db.2", 0),
                ("f.web.3", 1),
                ("f.web.4", 7)
            ]
        );
        assert_eq!(f.attempts.get("web"), Some(&8));
        assert_eq!(f.attempts.get("db"), Some(&1));
        let seen = RegistryActor::view_task(&books.tasks, "f.web.4", 1, 7).expect("restored");
        assert_eq!((seen.launched_ms, seen.updated_ms), (1_000, 5_000));
        assert_eq!(seen.attempt, 7);
        // Loaded again, the allocator and `f`'s scheduler: superseded; `g`'s: retired.
        let past: Vec<(&str, String)> = books
            .past_policies
            .iter()
            .map(|(_, r)| (r.slot.as_str(), r.state.to_string()))
            .collect();
        assert_eq!(
            past,
            [
                ("allocator", "superseded".to_owned()),
                ("framework/f", "superseded".to_owned()),
                ("framework/g", "retired".to_owned())
            ]
        );
        let g = &books.frameworks["g"];
        assert_eq!(g.state, FrameworkState::Failed);
        assert!(
            g.message.ends_with("restarted: type mismatch in `task`"),
            "{}",
            g.message
        );
    }

    #[test]
    fn a_running_framework_forgets_its_oldest_ended_tasks_but_not_the_newest_of_a_name() {
        use pb::TaskState::{TaskFailed, TaskFinished, TaskRunning};
        let dir = std::env::temp_dir().join(format!("corral-forget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = crate::store::Store::open(&dir).expect("store");
        let config = crate::MasterConfig {
            max_completed_tasks_per_framework: 2,
            ..Default::default()
        };
        let (mut books, slot) = books(config, Some(store));
        books
            .frameworks
            .insert("f".into(), framework("f", &slot, FrameworkState::Active));
        for (name, state) in [
            ("web", TaskFailed),
            ("web", TaskFailed),
            ("job", TaskFinished),
            ("web", TaskFailed),
            ("db", TaskFailed),
            ("db", TaskFailed),
            ("web", TaskRunning),
        ] {
            launched(&mut books, "f", name, state);
        }
        let ids = |books: &RegistryActor| {
            books.frameworks["f"]
                .tasks
                .iter()
                .map(|t| t.id.clone())
                .collect::<Vec<_>>()
        };
        // Six ended, two may stay: the four oldest that are not the newest of their name
        // go (`job.0` and `db.1` are; `web.3` runs), except one whose update its scheduler
        // has not seen yet: it stays until it has.
        fn fw(books: &mut RegistryActor) -> &mut Framework {
            books.frameworks.get_mut("f").expect("f")
        }
        fw(&mut books).updates.push(pb::TaskStatus {
            task_id: "f.web.0".into(),
            ..Default::default()
        });
        books.forget_old_framework_tasks();
        assert_eq!(ids(&books), ["f.web.0", "f.job.0", "f.db.1", "f.web.3"]);
        fw(&mut books).updates.clear();
        books.forget_old_framework_tasks();
        assert_eq!(ids(&books), ["f.job.0", "f.db.1", "f.web.3"]);
        for gone in ["f.web.0", "f.web.1", "f.web.2", "f.db.0"] {
            assert!(books.tasks.get(gone).is_none(), "{gone} forgotten");
            assert!(
                !books.task_meta.contains_key(gone),
                "{gone}'s meta forgotten"
            );
        }
        // Attempts go on from where they were, and the records are rebuilt from the rest.
        assert_eq!(fw(&mut books).next_attempt("web"), 4);
        let f = books.frameworks.get_mut("f").expect("f");
        ensure_view_tasks(&books.tasks, f);
        let records: Vec<(String, u32)> = f
            .records
            .list()
            .iter()
            .map(|t| (t.task_id.clone(), t.attempt))
            .collect();
        assert_eq!(
            records,
            [
                ("f.job.0".into(), 0),
                ("f.db.1".into(), 1),
                ("f.web.3".into(), 3)
            ]
        );
        books.forget_old_framework_tasks();
        assert_eq!(ids(&books).len(), 3, "nothing more to forget");
        assert!(
            !books.frameworks["f"].ended_since_forget,
            "counted again only once another task ends"
        );
        // The registry's file forgot them too (dropping the books writes what is queued).
        drop(books);
        let (_store, loaded) = crate::store::Store::open(&dir).expect("reopen");
        let mut kept: Vec<String> = loaded
            .tasks
            .iter()
            .filter_map(|t| t.spec.as_ref().map(|s| s.task_id.clone()))
            .collect();
        kept.sort();
        assert_eq!(kept, ["f.db.1", "f.job.0", "f.web.3"]);
        drop(_store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_restarted_master_remembers_the_kills_it_asked_for() {
        use pb::TaskState::{TaskKilled, TaskRunning};
        let dir = std::env::temp_dir().join(format!("corral-kills-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = crate::store::Store::open(&dir).expect("store");
        let (mut books, slot) = books(crate::MasterConfig::default(), Some(store));
        books.frameworks.insert(
            "f".to_owned(),
            framework("f", &slot, FrameworkState::Active),
        );
        // Killed while its agent was away: one never received, one running there, and
        // one that ended since (nothing more to kill).
        let (unsent, _) = sent(&mut books, "f", "a");
        books.save_task(&unsent);
        launched(&mut books, "f", "runs", TaskRunning);
        launched(&mut books, "f", "ended", TaskRunning);
        for id in [unsent.as_str(), "f.runs.0", "f.ended.0"] {
            books.send_kill(id);
        }
        books.tasks.apply(&pb::TaskStatus {
            task_id: "f.ended.0".into(),
            agent_id: "agent-1".into(),
            state: TaskKilled as i32,
            update_id: "u-ended-killed".into(),
            ..Default::default()
        });
        books.save_task("f.ended.0");
        books.save_framework("f");
        books.flush(None);
        // Dropping the books writes what is queued.
        drop(books);

        let (store, loaded) = crate::store::Store::open(&dir).expect("reopen");
        let (mut books, slot) = self::books(crate::MasterConfig::default(), Some(store));
        let mut stored_fw = loaded.frameworks.clone();
        stored_fw.retain(|f| f.framework_id == "f");
        assert_eq!(stored_fw.len(), 1, "the framework was saved");
        let restored = slot.clone();
        books.restore(
            loaded,
            HashMap::from([("f".to_owned(), Ok(slot.clone()))]),
            move |_| restored.clone(),
        );
        let mut kills: Vec<&str> = books.kills.iter().map(String::as_str).collect();
        kills.sort();
        assert_eq!(kills, ["f.a.0", "f.runs.0"]);

        // The agent comes back reporting only the running one.
        let runs = books.tasks.get("f.runs.0").map(|t| pb::TaskInfo {
            spec: Some(t.spec.clone()),
            status: Some(t.status.clone()),
            ..Default::default()
        });
        let (out, mut agent) = tokio::sync::mpsc::unbounded_channel();
        books
            .links
            .insert("agent-1".to_owned(), crate::registry_actor::Link::new(out));
        books.reconcile("agent-1", runs.into_iter().collect());
        books.flush(None);
        drop(books);
        let mut sent_now = Vec::new();
        while let Ok(env) = agent.try_recv() {
            match env.body {
                Some(Body::KillTask(k)) => sent_now.push(format!("kill {}", k.task_id)),
                Some(Body::LaunchTask(l)) => {
                    sent_now.extend(l.spec.map(|s| format!("launch {}", s.task_id)))
                }
                _ => {}
            }
        }
        assert_eq!(sent_now, ["kill f.runs.0"]);
        let (_store, loaded) = crate::store::Store::open(&dir).expect("reopen");
        assert_eq!(loaded.task_state("f.a.0"), Some(TaskKilled as i32));
        drop(_store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_oldest_ended_frameworks_are_forgotten_and_one_still_ending_waits() {
        let config = crate::MasterConfig {
            max_completed_frameworks: 2,
            ..Default::default()
        };
        let (mut books, slot) = books(config, None);
        // The oldest still has a task being killed; three more ended after it.
        ended(&mut books, &slot, "a", 10, pb::TaskState::TaskKilling);
        ended(&mut books, &slot, "b", 20, pb::TaskState::TaskFinished);
        ended(&mut books, &slot, "c", 30, pb::TaskState::TaskFinished);
        ended(&mut books, &slot, "d", 40, pb::TaskState::TaskFailed);
        books.forget_old_frameworks();
        let ids = |books: &RegistryActor| books.frameworks.keys().cloned().collect::<Vec<_>>();
        // Two too many: `a` waits for its task, `b` goes, and none of the newest two
        // goes in `a`'s place.
        assert_eq!(ids(&books), ["a", "c", "d"]);
        assert!(books.tasks.get("b.t.1").is_none(), "b's task is forgotten");
        assert!(!books.task_meta.contains_key("b.t.1"));
        assert!(books.tasks.get("a.t.1").is_some());
        // Once `a`'s task has ended, `a` goes.
        books.tasks.apply(&pb::TaskStatus {
            task_id: "a.t.1".into(),
            agent_id: "agent-1".into(),
            state: pb::TaskState::TaskKilled as i32,
            update_id: "u2".into(),
            ..Default::default()
        });
        books.forget_old_frameworks();
        assert_eq!(ids(&books), ["c", "d"]);
        assert!(books.tasks.get("a.t.1").is_none());
        books.forget_old_frameworks();
        assert_eq!(ids(&books), ["c", "d"], "nothing more to forget");

        // The components of forgotten frameworks go, unless a kept framework or the
        // allocator still needs them.
        for (id, digest) in [("c", "x"), ("d", "y")] {
            if let Some(fw) = books.frameworks.get_mut(id) {
                fw.digest = digest.into();
            }
        }
        books.allocator_digest = Some("alloc".into());
        let forgotten = ["x", "y", "z", "alloc"].map(String::from).into();
        assert_eq!(books.unused_components(forgotten), ["z"]);
    }

    /// A policy record of `slot` and `digest`, superseded, loaded `ms` after the epoch.
    fn policy_record(slot: &str, digest: &str, ms: u64) -> SwapRecord {
        SwapRecord {
            slot: slot.into(),
            digest: digest.into(),
            who: "test".into(),
            loaded_at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            state: corral_policy::PolicyState::Superseded,
            calls: 0,
            errors: 0,
            last_error: None,
            swap_time: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_policy_record_is_saved_again_only_when_it_changed_and_in_its_place() {
        let (mut books, _) = books(crate::MasterConfig::default(), None);
        books.next_history = 7; // as after a restart
        let record = |digest: &str, calls: u64| SwapRecord {
            state: corral_policy::PolicyState::Active,
            calls,
            ..policy_record("allocator", digest, 1_000)
        };
        let saved = |books: &mut RegistryActor| -> Vec<(u64, String, u64)> {
            books
                .ops
                .drain(..)
                .filter_map(|op| match op {
                    crate::store::Op::History(seq, r) => Some((seq, r.digest, r.calls)),
                    _ => None,
                })
                .collect()
        };
        assert!(books.save_policy_records([record("a", 0)]));
        assert_eq!(saved(&mut books), [(8, "a".to_owned(), 0)]);
        // Unchanged: nothing written.
        assert!(!books.save_policy_records([record("a", 0)]));
        assert!(saved(&mut books).is_empty());
        // Its counts changed: written again under its number; a new one gets the next.
        let mut rolled_back = record("b", 0);
        rolled_back.state = corral_policy::PolicyState::RolledBack;
        assert!(books.save_policy_records([record("a", 5), rolled_back]));
        assert_eq!(
            saved(&mut books),
            [(8, "a".to_owned(), 5), (9, "b".to_owned(), 0)]
        );
        // The same digest loaded again later is a record of its own.
        let mut again = record("a", 0);
        again.loaded_at += std::time::Duration::from_secs(1);
        assert!(books.save_policy_records([record("a", 5), again]));
        assert_eq!(saved(&mut books), [(10, "a".to_owned(), 0)]);
    }

    #[test]
    fn the_policy_history_is_slot_by_slot_and_oldest_first() {
        let record =
            |slot: &str, digest: &str, secs: u64| policy_record(slot, digest, secs * 1_000);
        // As a restarted master gathers them: this run's allocator, the earlier runs', then
        // this run's schedulers.
        let mut records = vec![
            record("allocator", "a3", 30),
            record("framework/web", "w1", 5),
            record("allocator", "a1", 1),
            record("framework/db", "d1", 2),
            record("allocator", "a2", 10),
            record("framework/db", "d2", 31),
            record("framework/web", "w2", 32),
            record("framework/web", "w3", 32),
        ];
        in_history_order(&mut records);
        let order: Vec<&str> = records.iter().map(|r| r.digest.as_str()).collect();
        assert_eq!(order, ["a1", "a2", "a3", "d1", "d2", "w1", "w2", "w3"]);
    }

    #[test]
    fn a_forgotten_framework_takes_its_policy_records_with_it() {
        let dir = std::env::temp_dir().join(format!("corral-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = crate::store::Store::open(&dir).expect("store");
        let config = crate::MasterConfig {
            max_completed_frameworks: 2,
            ..Default::default()
        };
        let (mut books, slot) = books(config, Some(store));
        // Two frameworks named `x`, one after the other, and one named `keep`.
        ended(&mut books, &slot, "x1", 10_000, pb::TaskState::TaskFinished);
        ended(&mut books, &slot, "x2", 30_000, pb::TaskState::TaskFinished);
        ended(
            &mut books,
            &slot,
            "keep",
            40_000,
            pb::TaskState::TaskFinished,
        );
        for id in ["x1", "x2"] {
            if let Some(fw) = books.frameworks.get_mut(id) {
                fw.name = "x".into();
            }
        }
        // Saved by earlier runs: a record of each framework, and the allocator's.
        let record = |slot: &str, ms: u64| policy_record(slot, &format!("d{ms}"), ms);
        books.past_policies = vec![
            (1, record("allocator", 1_000)),
            (2, record("framework/x", 5_000)),
            (3, record("framework/x", 20_000)),
            (4, record("framework/keep", 35_000)),
        ];
        for (seq, r) in &books.past_policies {
            books
                .ops
                .push(Op::History(*seq, crate::server::policy_record(r)));
        }
        // And this run's record of the slot (shared by the test frameworks).
        assert!(slot.swap(b"not wasm", "test").is_err());
        books.next_history = 4;
        assert!(books.save_policy_records(slot.history()));
        books.flush(None);

        books.forget_old_frameworks();
        assert!(!books.frameworks.contains_key("x1"));
        // x1's records go: of an earlier run (not x2's, loaded after x1 ended) and this run's.
        let kept: Vec<u64> = books.past_policies.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(kept, [1, 3, 4]);
        assert!(books.saved_policies.is_empty());
        drop(books);
        let (_store, loaded) = crate::store::Store::open(&dir).expect("reopen");
        let saved: Vec<u64> = loaded.history.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(saved, [1, 3, 4]);
        drop(_store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_newest_records_of_each_slot_are_kept_from_earlier_runs() {
        use crate::registry_store::MAX_RECORDS_PER_SLOT;
        let (mut books, slot) = books(crate::MasterConfig::default(), None);
        let record = |slot: &str| pb::PolicyRecord {
            slot: slot.into(),
            state: "superseded".into(),
            ..Default::default()
        };
        // Five too many of the allocator's, interleaved with two of a framework's.
        let mut history: Vec<(u64, pb::PolicyRecord)> = (1..=MAX_RECORDS_PER_SLOT as u64 + 5)
            .map(|seq| (seq, record("allocator")))
            .collect();
        history.insert(3, (1_000, record("framework/x")));
        history.push((1_001, record("framework/x")));
        let loaded = crate::store::Loaded {
            history,
            ..Default::default()
        };
        books.restore(loaded, HashMap::new(), move |_| slot.clone());
        let forgotten: Vec<u64> = books
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::ForgetHistory(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(forgotten, [5, 4, 3, 2, 1], "the allocator's oldest five");
        let kept: Vec<u64> = books.past_policies.iter().map(|(seq, _)| *seq).collect();
        let mut expected: Vec<u64> = (6..=MAX_RECORDS_PER_SLOT as u64 + 5).collect();
        expected.insert(0, 1_000);
        expected.push(1_001);
        assert_eq!(kept, expected, "the rest, in their order");
        assert_eq!(books.next_history, 1_001);
    }
}
