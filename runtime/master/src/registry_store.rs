//! The registry's durability: what each change writes to the store, and how a restarted
//! master puts its books back together from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use corral_core::agents::AgentEntry;
use corral_core::{view, Resources};
use corral_policy::SchedulerSlot;
use corral_wire::pb;
use tokio::sync::mpsc;

use crate::framework_actor::{FrameworkActor, Poke};
use crate::frameworks::{Framework, FrameworkState, FrameworkTask};
use crate::now_ms;
use crate::registry_actor::RegistryActor;
use crate::store::{After, Loaded, Op};

/// The most records of one policy slot kept from earlier runs of the master (the newest).
pub const MAX_RECORDS_PER_SLOT: usize = 100;

/// The meta key of the active allocator's digest.
pub const ALLOCATOR_KEY: &str = "allocator";

impl RegistryActor {
    /// Remembers a new task's launch order, workload generation and attempt.
    pub(crate) fn note_task(&mut self, task_id: &str, generation: u32, attempt: u32) {
        self.next_seq += 1;
        self.task_meta
            .insert(task_id.to_owned(), (self.next_seq, generation, attempt));
    }

    /// Queues a task's record for the next commit.
    pub(crate) fn save_task(&mut self, task_id: &str) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        let (seq, generation, attempt) = self.task_meta.get(task_id).copied().unwrap_or((0, 0, 0));
        self.ops.push(Op::Task(pb::StoredTask {
            spec: Some(t.spec.clone()),
            status: Some(t.status.clone()),
            agent_id: t.agent_id.clone(),
            generation,
            seq,
            attempt: Some(attempt),
            launched_ms: t.launched_ms,
            kill_asked: self.kills.contains(task_id),
        }));
    }

    /// Forgets an ended task, and queues its removal from the registry's file.
    pub(crate) fn forget_task(&mut self, task_id: String) {
        self.tasks.remove(&task_id);
        self.task_meta.remove(&task_id);
        self.ops.push(Op::ForgetTask(task_id));
    }

    /// Queues a framework's record for the next commit.
    pub(crate) fn save_framework(&mut self, id: &str) {
        let Some(f) = self.frameworks.get(id) else {
            return;
        };
        self.ops.push(Op::Framework(pb::StoredFramework {
            framework_id: f.id.clone(),
            name: f.name.clone(),
            role: f.role.clone(),
            workload: f.workload.clone(),
            generation: f.generation,
            state: f.state.to_pb() as i32,
            message: f.message.clone(),
            submitted_at_ms: f.submitted_at_ms,
            ended_at_ms: f.ended_at_ms,
            suppressed: f.suppressed,
            demand: Some(pb::Resources {
                cpus_milli: f.demand.cpus_milli,
                mem_mb: f.demand.mem_mb,
                disk_mb: f.demand.disk_mb,
                ports: Vec::new(),
            }),
            wanted: f.wanted,
            scheduler_digest: f.digest.clone(),
        }));
    }

    /// Queues an agent's record for the next commit.
    pub(crate) fn save_agent(&mut self, id: &str) {
        let Some(a) = self.agents.get(id) else {
            return;
        };
        self.ops.push(Op::Agent(pb::StoredAgent {
            agent_id: a.id.clone(),
            hostname: a.hostname.clone(),
            address: a.address.clone(),
            total: Some((&a.total).into()),
            attributes: corral_core::agents::attributes_to_pb(&a.attributes),
            registered_at_ms: a.registered_at_ms,
            drain_deadline_ms: self.draining.get(id).copied().unwrap_or(0),
        }));
    }

    /// Queues a role's weight for the next commit.
    pub(crate) fn save_role(&mut self, role: &str) {
        if let Some(w) = self.roles.get(role) {
            self.ops.push(Op::Role(role.to_owned(), *w));
        }
    }

    /// Queues a policy component (by digest) for the next commit.
    pub(crate) fn save_component(&mut self, digest: &str, bytes: Vec<u8>) {
        self.ops.push(Op::Component(digest.to_owned(), bytes));
    }

    /// Sends `env` to an agent once everything queued so far is durable.
    pub(crate) fn send_when_saved(
        &mut self,
        out: &mpsc::UnboundedSender<pb::Envelope>,
        env: pb::Envelope,
    ) {
        if self.store.is_some() {
            self.after.push(After::Send(out.clone(), env));
        } else {
            let _ = out.send(env);
        }
    }

    /// Hands what is queued to the store.
    pub(crate) fn flush(&mut self, extra: Option<After>) {
        let ops = std::mem::take(&mut self.ops);
        let mut after = std::mem::take(&mut self.after);
        after.extend(extra);
        match &self.store {
            Some(store) => store.submit(ops, after),
            None => {
                for a in after {
                    match a {
                        After::Send(to, env) => {
                            let _ = to.send(env);
                        }
                        After::Durable(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            }
        }
    }

    /// Puts the books back as the store held them. Agents count as active until they
    /// register again or the agent timeout passes; running frameworks get `slots` (their
    /// schedulers, loaded by the caller) and are started when the actor starts.
    pub(crate) fn restore(
        &mut self,
        loaded: Loaded,
        mut slots: HashMap<String, Result<Arc<SchedulerSlot>, String>>,
        empty_slot: impl Fn(&str) -> Arc<SchedulerSlot>,
    ) {
        let now = now_ms();
        self.allocator_digest = loaded
            .meta
            .get(ALLOCATOR_KEY)
            .and_then(|d| String::from_utf8(d.clone()).ok());
        // The scheduler slots that run again: those of the running frameworks whose
        // scheduler loads.
        let running: HashSet<String> = loaded
            .frameworks
            .iter()
            .filter(|f| f.state == pb::FrameworkState::FrameworkActive as i32)
            .filter(|f| matches!(slots.get(&f.framework_id), Some(Ok(_))))
            .map(|f| format!("framework/{}", f.name))
            .collect();
        // The newest MAX_RECORDS_PER_SLOT records of each slot are kept; older ones are
        // forgotten (every restart adds a record per slot, and swaps add more).
        let mut per_slot: HashMap<String, usize> = HashMap::new();
        let mut kept = Vec::new();
        for (seq, r) in loaded.history.into_iter().rev() {
            self.next_history = self.next_history.max(seq);
            let n = per_slot.entry(r.slot.clone()).or_default();
            *n += 1;
            if *n > MAX_RECORDS_PER_SLOT {
                self.ops.push(Op::ForgetHistory(seq));
            } else {
                kept.push((seq, swap_record(r, &running)));
            }
        }
        kept.reverse();
        self.past_policies = kept;
        for (role, weight) in loaded.roles {
            self.roles.insert(role, weight);
        }
        for a in loaded.agents {
            let entry = AgentEntry {
                id: a.agent_id.clone(),
                hostname: a.hostname,
                address: a.address,
                total: a.total.as_ref().map(Resources::from).unwrap_or_default(),
                used: Resources::default(),
                attributes: a
                    .attributes
                    .into_iter()
                    .map(|kv| (kv.key, kv.value))
                    .collect::<BTreeMap<_, _>>(),
                state: corral_core::agents::AgentState::Active,
                last_seen_ms: now,
                registered_at_ms: a.registered_at_ms,
                session: 0,
                drain_deadline_ms: None,
            };
            if a.drain_deadline_ms != 0 {
                self.draining
                    .insert(a.agent_id.clone(), a.drain_deadline_ms);
            }
            self.agents.restore(now, entry);
        }
        let mut tasks = loaded.tasks;
        tasks.sort_by_key(|t| t.seq);
        let mut by_framework: HashMap<String, Vec<FrameworkTask>> = HashMap::new();
        // Per framework, instance name → tasks of that name launched: the next attempt.
        let mut attempts: HashMap<String, HashMap<String, u32>> = HashMap::new();
        for t in tasks {
            let (Some(spec), Some(status)) = (t.spec, t.status) else {
                continue;
            };
            let id = spec.task_id.clone();
            let mut attempt = 0;
            if spec.framework_id.is_empty() {
                self.standalone.push(id.clone());
            } else {
                // Records written before attempts were kept are numbered in launch order,
                // as schedulers counted them then (every task was kept).
                let next = attempts
                    .entry(spec.framework_id.clone())
                    .or_default()
                    .entry(spec.name.clone())
                    .or_default();
                attempt = t.attempt.unwrap_or(*next);
                *next = (*next).max(attempt.saturating_add(1));
                by_framework
                    .entry(spec.framework_id.clone())
                    .or_default()
                    .push(FrameworkTask {
                        id: id.clone(),
                        generation: t.generation,
                        attempt,
                    });
            }
            self.next_seq = self.next_seq.max(t.seq);
            if t.kill_asked && !status.is_terminal() {
                self.kills.insert(id.clone());
            }
            self.task_meta.insert(id, (t.seq, t.generation, attempt));
            self.tasks.restore(spec, status, &t.agent_id, t.launched_ms);
        }
        let agent_ids: Vec<String> = self.agents.iter().map(|a| a.id.clone()).collect();
        for id in agent_ids {
            self.recompute_used(&id);
        }
        for f in loaded.frameworks {
            let state = match pb::FrameworkState::try_from(f.state) {
                Ok(pb::FrameworkState::FrameworkActive) => FrameworkState::Active,
                Ok(pb::FrameworkState::FrameworkCompleted) => FrameworkState::Completed,
                Ok(pb::FrameworkState::FrameworkKilled) => FrameworkState::Killed,
                _ => FrameworkState::Failed,
            };
            let slot = slots.remove(&f.framework_id);
            // A framework failed here (its scheduler lost) ended now: the newest of the
            // ended frameworks, the last to be forgotten.
            let (state, message, slot, ended_at_ms) = match (state, slot) {
                (FrameworkState::Active, Some(Ok(slot))) => (state, f.message, slot, f.ended_at_ms),
                (FrameworkState::Active, why) => (
                    FrameworkState::Failed,
                    format!(
                        "its scheduler could not be loaded after the master restarted: {}",
                        why.and_then(Result::err)
                            .unwrap_or_else(|| "it was not loaded".to_owned())
                    ),
                    empty_slot(&f.name),
                    now,
                ),
                (state, _) => (state, f.message, empty_slot(&f.name), f.ended_at_ms),
            };
            let failed_now = ended_at_ms != f.ended_at_ms;
            let demand = f.demand.unwrap_or_default();
            let fw = Framework {
                generation: f.generation.max(1),
                state,
                message,
                submitted_at_ms: f.submitted_at_ms,
                ended_at_ms,
                suppressed: f.suppressed,
                demand: view::Resources::new(demand.cpus_milli, demand.mem_mb, demand.disk_mb),
                wanted: f.wanted,
                tasks: by_framework.remove(&f.framework_id).unwrap_or_default(),
                attempts: attempts.remove(&f.framework_id).unwrap_or_default(),
                // Counted at the first pass after the restart.
                ended_since_forget: true,
                digest: f.scheduler_digest,
                ..Framework::new(f.framework_id.clone(), f.name, f.role, f.workload, slot)
            };
            let id = f.framework_id;
            self.frameworks.insert(id.clone(), fw);
            if failed_now {
                self.save_framework(&id);
            }
        }
    }

    /// Starts the actors of the running frameworks (after a restart).
    pub(crate) fn start_framework_actors(&mut self, ctx: &mut Context<Self>) {
        for fw in self.frameworks.values_mut().filter(|f| f.is_active()) {
            if fw.actor.is_none() {
                let actor =
                    FrameworkActor::new(fw.id.clone(), fw.slot.clone(), ctx.address()).start();
                actor.do_send(Poke);
                fw.actor = Some(actor);
            }
        }
    }
}

/// The active allocator changed: keep its component, so a restart loads it again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveAllocator {
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Handler<SaveAllocator> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SaveAllocator, _: &mut Self::Context) {
        self.save_allocator(msg.digest, msg.bytes);
        self.flush(None);
    }
}

impl RegistryActor {
    /// Queues `bytes` as the allocator a restart loads.
    pub(crate) fn save_allocator(&mut self, digest: String, bytes: Vec<u8>) {
        self.save_component(&digest, bytes);
        self.set_allocator_digest(digest);
    }

    /// Queues `digest` as the allocator a restart loads (its component saved already, or
    /// the built-in DRF's).
    fn set_allocator_digest(&mut self, digest: String) {
        self.ops.push(Op::Meta(
            ALLOCATOR_KEY.to_owned(),
            digest.clone().into_bytes(),
        ));
        self.allocator_digest = Some(digest);
    }
}

/// A saved policy record, as the master shows its history. What was active when the
/// master stopped shows as superseded when the restarted master loaded a slot of that
/// name again (the allocator, and the schedulers of `running` slots), as retired when not
/// (the scheduler of a framework that had ended, or failed at the restart). Slots are
/// matched by name: the records of an ended framework whose name a running one took
/// show as superseded.
fn swap_record(r: pb::PolicyRecord, running: &HashSet<String>) -> corral_policy::SwapRecord {
    use corral_policy::PolicyState;
    let state = match r.state.as_str() {
        "rolled back" => PolicyState::RolledBack,
        "rejected" => PolicyState::Rejected,
        "retired" => PolicyState::Retired,
        "active" if r.slot.starts_with("framework/") && !running.contains(&r.slot) => {
            PolicyState::Retired
        }
        _ => PolicyState::Superseded,
    };
    corral_policy::SwapRecord {
        slot: r.slot,
        digest: r.digest,
        who: r.who,
        loaded_at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.loaded_at_ms),
        state,
        calls: r.calls,
        errors: r.errors,
        last_error: (!r.last_error.is_empty()).then_some(r.last_error),
        swap_time: std::time::Duration::from_micros(r.swap_time_us),
    }
}

/// Policy records of this run changed (a load or swap, a rollback, the master stopping):
/// keep them for later runs of the master. Records saved before and unchanged since are
/// not written again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SavePolicyRecords {
    pub records: Vec<corral_policy::SwapRecord>,
}

impl Handler<SavePolicyRecords> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SavePolicyRecords, _: &mut Self::Context) {
        if self.save_policy_records(msg.records) {
            self.flush(None);
        }
    }
}

/// The allocator slot rolled a new policy back: a restart loads `digest`, the one restored
/// (whose component was saved when it became active, unless it is the built-in DRF, which
/// a restart falls back to).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AllocatorActive {
    pub digest: String,
    /// The slot's history, with the rollback.
    pub records: Vec<corral_policy::SwapRecord>,
}

impl Handler<AllocatorActive> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: AllocatorActive, _: &mut Self::Context) {
        if self.allocator_digest.as_deref() != Some(msg.digest.as_str()) {
            tracing::info!(digest = %msg.digest, "the allocator a restart loads is now the one rolled back to");
            self.set_allocator_digest(msg.digest);
        }
        self.save_policy_records(msg.records);
        self.flush(None);
    }
}

/// The master is stopping: save every policy record of this run, with its latest counts,
/// and say when they are durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveAllPolicies {
    /// The allocator slot's history (the registry holds the schedulers').
    pub allocator: Vec<corral_policy::SwapRecord>,
    pub durable: tokio::sync::oneshot::Sender<()>,
}

impl Handler<SaveAllPolicies> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SaveAllPolicies, _: &mut Self::Context) {
        let schedulers = self.scheduler_records();
        self.save_policy_records(msg.allocator.into_iter().chain(schedulers));
        self.flush(Some(After::Durable(msg.durable)));
    }
}

impl RegistryActor {
    /// Queues the records of `records` that are new or changed since they were last saved;
    /// true if any was.
    pub(crate) fn save_policy_records(
        &mut self,
        records: impl IntoIterator<Item = corral_policy::SwapRecord>,
    ) -> bool {
        let mut queued = false;
        for r in records {
            let key = (r.slot.clone(), r.digest.clone(), r.loaded_at);
            let record = crate::server::policy_record(&r);
            let seq = match self.saved_policies.get(&key) {
                Some((_, saved)) if *saved == record => continue,
                Some((seq, _)) => *seq,
                None => {
                    self.next_history += 1;
                    self.next_history
                }
            };
            self.ops.push(Op::History(seq, record.clone()));
            self.saved_policies.insert(key, (seq, record));
            queued = true;
        }
        queued
    }

    /// Every scheduler slot's history of this run (to save when the master stops).
    pub(crate) fn scheduler_records(&self) -> Vec<corral_policy::SwapRecord> {
        self.frameworks
            .values()
            .flat_map(|fw| fw.slot.history())
            .collect()
    }
}
