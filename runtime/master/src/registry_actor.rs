//! The registry actor: the one owner of the master's books.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use corral_core::agents::{AgentEntry, AgentError, AgentEvent, AgentState, Agents, Registration};
use corral_core::tasks::{spec_resources, Applied, Tasks};
use corral_core::Resources;
use corral_wire::pb::{self, envelope::Body};
use tokio::sync::mpsc;

use corral_containerizer::{validate_spec, AgentCapacity};

use crate::frameworks::Framework;
use crate::{now_ms, MasterConfig};

/// A policy record's identity within one run of the master: its slot, digest and load time.
pub(crate) type PolicyKey = (String, String, std::time::SystemTime);

/// A connected agent's session: its number, its outgoing envelopes, its connection.
pub(crate) struct Link {
    session: u64,
    pub(crate) out: mpsc::UnboundedSender<pb::Envelope>,
    conn: Option<quinn::Connection>,
}

#[cfg(test)]
impl Link {
    /// A link whose envelopes go to `out`.
    pub(crate) fn new(out: mpsc::UnboundedSender<pb::Envelope>) -> Self {
        Link {
            session: 1,
            out,
            conn: None,
        }
    }
}

/// A task its agent never received: see [`RegistryActor::reconcile`].
enum Unsent {
    Launch,
    Killed,
}

/// Owns the agents', tasks' and frameworks' books and the channels to the agents' sessions.
pub struct RegistryActor {
    pub(crate) agents: Agents,
    pub(crate) tasks: Tasks,
    pub(crate) links: HashMap<String, Link>,
    tick: Duration,
    /// Frameworks by id, ended ones included.
    pub(crate) frameworks: BTreeMap<String, Framework>,
    /// Role weights.
    pub(crate) roles: BTreeMap<String, f64>,
    pub(crate) next_offer: u64,
    /// The agent and framework ids of the latest allocation view, by index.
    pub(crate) cycle: (Vec<String>, Vec<String>),
    /// Agents being drained, with the time (ms) their remaining tasks are killed.
    pub(crate) draining: HashMap<String, u64>,
    /// Tasks the master was asked to kill (by their scheduler, an operator, a drain or the
    /// end of their framework) that have not ended yet: the kill is asked again of an
    /// agent that comes back, and such a task is not launched again. Saved with the task
    /// (`kill_asked`), so a restarted master remembers them too.
    pub(crate) kills: HashSet<String>,
    /// Where the books are kept (none in tests of the books alone).
    pub(crate) store: Option<crate::store::Store>,
    /// Records to write with the next flush, and what to do once they are durable.
    pub(crate) ops: Vec<crate::store::Op>,
    pub(crate) after: Vec<crate::store::After>,
    /// Each task's launch order, workload generation and attempt.
    pub(crate) task_meta: HashMap<String, (u64, u32, u32)>,
    pub(crate) next_seq: u64,
    /// The allocator, told when new offers could be made at once.
    pub(crate) allocator: Option<Addr<crate::allocator_actor::AllocatorActor>>,
    /// Policy swaps saved by earlier runs of the master, oldest first.
    pub(crate) past_policies: Vec<(u64, corral_policy::SwapRecord)>,
    pub(crate) next_history: u64,
    /// This run's policy records as last saved, by slot, digest and load time, with the
    /// number each is saved under: a record whose state or counts changed since replaces
    /// its saved copy.
    pub(crate) saved_policies: HashMap<PolicyKey, (u64, pb::PolicyRecord)>,
    /// Ended frameworks kept; see [`RegistryActor::forget_old_frameworks`].
    pub(crate) max_completed_frameworks: usize,
    /// The tasks run without a framework, in launch order; see
    /// [`RegistryActor::forget_old_tasks`].
    pub(crate) standalone: Vec<String>,
    pub(crate) max_completed_tasks: usize,
    /// Ended tasks kept per running framework; see
    /// [`RegistryActor::forget_old_framework_tasks`].
    pub(crate) max_completed_tasks_per_framework: usize,
    /// The digest of the allocator a restart loads, whose component is kept.
    pub(crate) allocator_digest: Option<String>,
}

/// Takes out of `list` (oldest first) its oldest entries that `count` beyond the newest
/// `limit` of those, passing over any that are not `removable`, and returns them: how the
/// registry forgets what ended long ago.
pub(crate) fn take_beyond<T>(
    list: &mut Vec<T>,
    limit: usize,
    count: impl Fn(&T) -> bool,
    removable: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut excess = list
        .iter()
        .filter(|t| count(t))
        .count()
        .saturating_sub(limit);
    if excess == 0 {
        return Vec::new();
    }
    let mut taken = Vec::new();
    let mut kept = Vec::with_capacity(list.len());
    for t in list.drain(..) {
        if excess > 0 && count(&t) && removable(&t) {
            excess -= 1;
            taken.push(t);
        } else {
            kept.push(t);
        }
    }
    *list = kept;
    taken
}

/// A request the registry refused, with a stable code and a message for a person.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// Stable code, for scripts.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

impl RegistryActor {
    /// A registry using the configuration's agent timeout.
    pub fn new(config: &MasterConfig, store: Option<crate::store::Store>) -> Self {
        let timeout = config.agent_timeout;
        Self {
            agents: Agents::new(timeout.as_millis() as u64),
            tasks: Tasks::new(),
            links: HashMap::new(),
            tick: (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            frameworks: BTreeMap::new(),
            roles: BTreeMap::new(),
            next_offer: 0,
            cycle: (Vec::new(), Vec::new()),
            draining: HashMap::new(),
            kills: HashSet::new(),
            store,
            ops: Vec::new(),
            after: Vec::new(),
            task_meta: HashMap::new(),
            next_seq: 0,
            past_policies: Vec::new(),
            next_history: 0,
            saved_policies: HashMap::new(),
            allocator: None,
            max_completed_frameworks: config.max_completed_frameworks,
            standalone: Vec::new(),
            max_completed_tasks: config.max_completed_tasks,
            max_completed_tasks_per_framework: config.max_completed_tasks_per_framework,
            allocator_digest: None,
        }
    }

    /// Forgets the ended tasks run without a framework that were launched longest ago,
    /// beyond the newest `max_completed_tasks` of them, in memory and in the registry's
    /// file (tasks run by hand, every minute for months, would otherwise all be kept).
    /// Tasks still running are kept, however old.
    pub(crate) fn forget_old_tasks(&mut self) {
        if self.standalone.len() <= self.max_completed_tasks {
            return;
        }
        let tasks = &self.tasks;
        let ended = |id: &String| tasks.get(id).is_none_or(|t| t.state().is_terminal());
        let forgotten = take_beyond(
            &mut self.standalone,
            self.max_completed_tasks,
            ended,
            |_| true,
        );
        if forgotten.is_empty() {
            return;
        }
        for id in forgotten {
            self.forget_task(id);
        }
        self.flush(None);
    }

    fn apply(&mut self, events: Vec<AgentEvent>) {
        for ev in events {
            match ev {
                AgentEvent::Registered(id) => tracing::info!(agent_id = %id, "agent registered"),
                AgentEvent::Reregistered(id) => {
                    tracing::info!(agent_id = %id, "agent re-registered")
                }
                AgentEvent::Unreachable(id) => {
                    tracing::warn!(agent_id = %id, "agent unreachable");
                    self.links.remove(&id);
                    self.rescind_agent(&id);
                    for (status, _) in self.tasks.agent_lost(now_ms(), &id) {
                        tracing::info!(task_id = %status.task_id, agent_id = %id, "task lost");
                        self.save_task(&status.task_id);
                        self.task_changed(&status);
                    }
                    self.recompute_used(&id);
                    self.flush(None);
                }
            }
        }
    }

    /// An agent's used resources: the sum of its unfinished tasks.
    pub(crate) fn recompute_used(&mut self, agent_id: &str) {
        let used = self
            .tasks
            .on_agent(agent_id)
            .filter(|t| !t.state().is_terminal())
            .fold(Resources::default(), |acc, t| acc.add(&t.resources));
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used = used;
        }
    }

    /// Settles what an agent reports it runs against what the master knows: a task the
    /// master does not know, or knows as ended, is killed; a task the master knows on that
    /// agent but the agent does not is lost, unless the agent never said anything of it
    /// (its launch was lost with a connection, or with a master that died between saving
    /// the task and sending it): then it is sent again, or, if it was to be killed or its
    /// framework has ended, it is killed. A kill asked before is asked again.
    pub(crate) fn reconcile(&mut self, agent_id: &str, reported: Vec<pb::TaskInfo>) {
        let mut seen = HashSet::new();
        for info in reported {
            let Some(spec) = info.spec else {
                continue;
            };
            let id = spec.task_id.clone();
            seen.insert(id.clone());
            // No status yet: the agent is starting it.
            let state = info
                .status
                .map_or(pb::TaskState::TaskStaging as i32, |s| s.state);
            let agent_runs_it = pb::TaskState::try_from(state).is_ok_and(|s| !s.is_terminal());
            if !agent_runs_it {
                continue;
            }
            let why = match self.tasks.get(&id) {
                None => "the master does not know it",
                Some(t) if t.agent_id != agent_id => "the master knows it on another agent",
                Some(t) if t.state().is_terminal() => {
                    "it was reported lost while its agent was away"
                }
                // Its framework ended while the agent was away, so the kill sent then
                // never reached it.
                Some(t)
                    if self
                        .frameworks
                        .get(&t.spec.framework_id)
                        .is_some_and(|f| !f.is_active()) =>
                {
                    "its framework has ended"
                }
                // A kill that may have been lost with the agent's connection.
                Some(_)
                    if self.kills.contains(&id) && state != pb::TaskState::TaskKilling as i32 =>
                {
                    "its kill was asked before"
                }
                Some(_) => continue,
            };
            tracing::info!(task_id = %id, agent_id, why, "killing a task the agent still runs");
            if let Some(out) = self.links.get(agent_id).map(|l| l.out.clone()) {
                self.send_when_saved(&out, kill_envelope(&id, &spec.framework_id));
            }
        }
        let missing: Vec<String> = self
            .tasks
            .on_agent(agent_id)
            .filter(|t| !t.state().is_terminal() && !seen.contains(&t.spec.task_id))
            .map(|t| t.spec.task_id.clone())
            .collect();
        for id in missing {
            let (state, reason, message) = match self.unsent(&id) {
                Some(Unsent::Killed) => (
                    pb::TaskState::TaskKilled,
                    pb::TaskReason::ReasonKilledByRequest,
                    "killed before its agent received it",
                ),
                Some(Unsent::Launch) => {
                    let spec = self.tasks.get(&id).map(|t| t.spec.clone());
                    if let Some(out) = self.links.get(agent_id).map(|l| l.out.clone()) {
                        tracing::info!(task_id = %id, agent_id, "sending again a launch its agent never received");
                        let launch = Body::LaunchTask(pb::LaunchTask { spec });
                        self.send_when_saved(&out, corral_wire::envelope(launch));
                    }
                    continue;
                }
                None => {
                    tracing::warn!(task_id = %id, agent_id, "task unknown to its agent: lost");
                    (
                        pb::TaskState::TaskLost,
                        pb::TaskReason::ReasonReconciliation,
                        "the agent does not know this task",
                    )
                }
            };
            let status = pb::TaskStatus {
                task_id: id.clone(),
                agent_id: agent_id.to_owned(),
                state: state as i32,
                reason: reason as i32,
                message: message.into(),
                timestamp_ms: now_ms(),
                ..Default::default()
            };
            self.tasks.apply(&status);
            self.save_task(&id);
            self.task_changed(&status);
        }
        self.recompute_used(agent_id);
    }

    /// What becomes of task `id`, which its agent does not report, when the agent has sent
    /// no status of it (it is staging as the master recorded it): killed if its kill was
    /// asked or its framework has ended, else launched again. `None` when the agent did
    /// say something of it.
    fn unsent(&self, id: &str) -> Option<Unsent> {
        let t = self.tasks.get(id)?;
        if t.state() != pb::TaskState::TaskStaging || !t.status.update_id.is_empty() {
            return None;
        }
        let framework_runs = t.spec.framework_id.is_empty()
            || self
                .frameworks
                .get(&t.spec.framework_id)
                .is_some_and(|f| f.is_active());
        Some(if framework_runs && !self.kills.contains(id) {
            Unsent::Launch
        } else {
            Unsent::Killed
        })
    }

    /// Picks an agent for `spec`, fills in its host ports, and reserves its resources.
    fn place(&mut self, mut spec: pb::TaskSpec) -> Result<(String, pb::TaskSpec), Refused> {
        if spec.task_id.is_empty() {
            spec.task_id = format!("task-{:012x}", rand::random::<u64>() >> 16);
        }
        if self.tasks.contains(&spec.task_id) {
            return Err(refused(
                "duplicate_task",
                format!("task {} already exists", spec.task_id),
            ));
        }
        let mut shape_error = None;
        let mut fits_somewhere = false;
        let candidates: Vec<(String, Resources, Resources)> = self
            .agents
            .iter()
            .filter(|a| {
                a.state == AgentState::Active
                    && self.links.contains_key(&a.id)
                    && !self.draining.contains_key(&a.id)
            })
            .map(|a| (a.id.clone(), a.total.clone(), self.free_on(&a.id)))
            .collect();
        if candidates.is_empty() {
            return Err(refused("no_agents", "no active agent to run the task on"));
        }
        for (agent_id, total, free) in candidates {
            if let Err(e) = validate_spec(&spec, &capacity(&total)) {
                shape_error.get_or_insert(e);
                continue;
            }
            fits_somewhere = true;
            let mut candidate = spec.clone();
            if !assign_ports(&mut candidate, &free) {
                continue;
            }
            if validate_spec(&candidate, &capacity(&free)).is_ok() {
                let need = spec_resources(&candidate);
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.used = a.used.add(&need);
                }
                return Ok((agent_id, candidate));
            }
        }
        match (fits_somewhere, shape_error) {
            (false, Some(e)) => Err(refused("invalid_spec", e.to_string())),
            _ => Err(refused(
                "no_room",
                format!(
                    "no agent has room for the task now ({} asked)",
                    spec_resources(&spec)
                ),
            )),
        }
    }
}

/// The message that asks an agent to kill task `task_id` (of `framework_id`), with the
/// task's own grace period.
pub(crate) fn kill_envelope(task_id: &str, framework_id: &str) -> pb::Envelope {
    corral_wire::envelope(Body::KillTask(pb::KillTask {
        task_id: task_id.to_owned(),
        framework_id: framework_id.to_owned(),
        grace_period_ms: 0,
    }))
}

pub(crate) fn capacity(r: &Resources) -> AgentCapacity {
    AgentCapacity::from_resources(&r.into())
}

/// Gives every mapping that asks for any host port (0) a free one, taken in order from a
/// random free port on. Returns false when the agent has too few free ports.
pub(crate) fn assign_ports(spec: &mut pb::TaskSpec, free: &Resources) -> bool {
    if spec.network_mode == pb::NetworkMode::NetworkHost as i32 {
        return true;
    }
    if spec.port_mappings.iter().all(|p| p.host_port != 0) {
        return true;
    }
    let taken: HashSet<u32> = spec
        .port_mappings
        .iter()
        .map(|p| p.host_port)
        .filter(|p| *p != 0)
        .collect();
    // The free ports from a random one on, wrapping around (as Mesos frameworks pick
    // them): a port in use on the host by something else fails one attempt, not every
    // attempt of a task relaunched on that agent.
    let ranges: Vec<(u32, u32)> = free.ports.iter().copied().filter(|(b, e)| b <= e).collect();
    let total: u64 = ranges.iter().map(|&(b, e)| u64::from(e - b) + 1).sum();
    let nth = |mut i: u64| {
        ranges.iter().find_map(|&(b, e)| {
            let n = u64::from(e - b) + 1;
            if i < n {
                Some(b + i as u32)
            } else {
                i -= n;
                None
            }
        })
    };
    let start = rand::random::<u64>() % total.max(1);
    let mut available = (0..total)
        .filter_map(|i| nth((start + i) % total))
        .filter(|p| !taken.contains(p));
    for mapping in spec.port_mappings.iter_mut().filter(|p| p.host_port == 0) {
        match available.next() {
            Some(port) => mapping.host_port = port,
            None => return false,
        }
    }
    true
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_framework_actors(ctx);
        ctx.run_interval(self.tick, |act, _| {
            let now = now_ms();
            let events = act.agents.tick(now);
            act.apply(events);
            act.enforce_drains(now);
            let tasks = &act.tasks;
            act.kills
                .retain(|id| tasks.get(id).is_some_and(|t| !t.state().is_terminal()));
            act.forget_old_frameworks();
            act.forget_old_framework_tasks();
            act.forget_old_tasks();
            // The drains' kills.
            act.flush(None);
        });
    }
}

/// An agent's registration, from its session.
#[derive(Message)]
#[rtype(result = "Result<(String, u64), AgentError>")]
pub struct RegisterAgent {
    /// What the agent sent.
    pub registration: Registration,
    /// Where to send the agent envelopes.
    pub link: mpsc::UnboundedSender<pb::Envelope>,
    /// The agent's connection, for streams the master opens (logs).
    pub conn: Option<quinn::Connection>,
    /// The tasks the agent reports it runs.
    pub tasks: Vec<pb::TaskInfo>,
}

impl Handler<RegisterAgent> for RegistryActor {
    type Result = Result<(String, u64), AgentError>;

    fn handle(&mut self, msg: RegisterAgent, _: &mut Self::Context) -> Self::Result {
        let (id, session, event) = self.agents.register(now_ms(), msg.registration, || {
            format!("agent-{:016x}", rand::random::<u64>())
        })?;
        self.links.insert(
            id.clone(),
            Link {
                session,
                out: msg.link,
                conn: msg.conn,
            },
        );
        self.apply(vec![event]);
        self.allocate_soon();
        self.reconcile(&id, msg.tasks);
        self.save_agent(&id);
        self.flush(None);
        Ok((id, session))
    }
}

/// A heartbeat from an agent's session.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Heartbeat {
    /// The agent.
    pub agent_id: String,
    /// Its session.
    pub session: u64,
}

impl Handler<Heartbeat> for RegistryActor {
    type Result = Result<(), AgentError>;

    fn handle(&mut self, msg: Heartbeat, _: &mut Self::Context) -> Self::Result {
        self.agents.heartbeat(now_ms(), &msg.agent_id, msg.session)
    }
}

/// A session ended (the connection closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    /// The agent.
    pub agent_id: String,
    /// The session that ended.
    pub session: u64,
}

impl Handler<SessionClosed> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _: &mut Self::Context) {
        // The agent stays active until the timeout: a connection blip is not a lost agent.
        if self
            .links
            .get(&msg.agent_id)
            .is_some_and(|l| l.session == msg.session)
        {
            self.links.remove(&msg.agent_id);
        }
        tracing::debug!(agent_id = %msg.agent_id, session = msg.session, "agent session closed");
    }
}

/// Every agent the master knows.
#[derive(Message)]
#[rtype(result = "Vec<AgentEntry>")]
pub struct ListAgents;

impl Handler<ListAgents> for RegistryActor {
    type Result = MessageResult<ListAgents>;

    fn handle(&mut self, _: ListAgents, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.agents
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    a.drain_deadline_ms = self.draining.get(&a.id).copied();
                    a
                })
                .collect(),
        )
    }
}

/// A status update from an agent's session; answered once it is applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StatusFromAgent {
    /// The agent that sent it.
    pub agent_id: String,
    /// The update.
    pub status: pb::TaskStatus,
    /// Fired once the update is durable.
    pub durable: tokio::sync::oneshot::Sender<()>,
}

impl Handler<StatusFromAgent> for RegistryActor {
    type Result = ();

    /// Fires `durable` once the update is saved, so the session acknowledges it only then;
    /// when it cannot be saved, `durable` is dropped and the agent sends it again.
    fn handle(&mut self, msg: StatusFromAgent, _: &mut Self::Context) {
        let mut status = msg.status;
        status.agent_id = msg.agent_id.clone();
        // Stamped with the master's clock, the one schedulers' views are in (`now-ms`,
        // `launched-ms`): an agent's clock may be off, and a wait after a failure is
        // measured from when the task ended.
        status.timestamp_ms = now_ms();
        match self.tasks.apply(&status) {
            Applied::Updated { agent_id, released } => {
                crate::http::metrics::METRICS.status_update(status.state);
                tracing::debug!(
                    task_id = %status.task_id,
                    state = status.state_name(),
                    "task status"
                );
                // A task's resources were added to its agent's use at launch (its ports
                // are its own), so an ended task's come off the same way: no pass over
                // the agent's other tasks.
                if let Some(released) = released {
                    if let Some(a) = self.agents.get_mut(&agent_id) {
                        a.used = a.used.saturating_sub(&released);
                    }
                }
                self.save_task(&status.task_id);
                self.task_changed(&status);
            }
            Applied::Duplicate => {
                tracing::debug!(update_id = %status.update_id, "duplicate status update")
            }
            Applied::UnknownTask => {
                tracing::info!(task_id = %status.task_id, "status update for an unknown task")
            }
            Applied::AlreadyTerminal => {}
            Applied::OtherAgent { runs_on } => tracing::warn!(
                task_id = %status.task_id,
                from = %msg.agent_id,
                %runs_on,
                "status update from an agent that does not run the task: ignored"
            ),
        }
        // Even a duplicate waits for the commit queue: the first copy may not be durable yet.
        self.flush(Some(crate::store::After::Durable(msg.durable)));
    }
}

/// Places and launches one task (`corral task run`).
#[derive(Message)]
#[rtype(result = "Result<(String, String), Refused>")]
pub struct RunTask {
    /// What to run.
    pub spec: pb::TaskSpec,
}

impl Handler<RunTask> for RegistryActor {
    type Result = Result<(String, String), Refused>;

    fn handle(&mut self, msg: RunTask, _: &mut Self::Context) -> Self::Result {
        let (agent_id, spec) = self.place(msg.spec)?;
        let task_id = spec.task_id.clone();
        let launch = corral_wire::envelope(Body::LaunchTask(pb::LaunchTask {
            spec: Some(spec.clone()),
        }));
        if spec.framework_id.is_empty() {
            self.standalone.push(task_id.clone());
        }
        self.tasks.add(now_ms(), spec, &agent_id);
        self.note_task(&task_id, 0, 0);
        self.save_task(&task_id);
        let out = self.links.get(&agent_id).map(|l| l.out.clone());
        let sent = out.is_some();
        if let Some(out) = out {
            // Sent once the task is durable: an agent never runs a task the master forgot.
            self.send_when_saved(&out, launch);
        }
        self.flush(None);
        crate::http::metrics::METRICS.launches.inc();
        if !sent {
            // The session ended between placement and launch: the agent will not know the
            // task when it registers again, and reconciliation sends it again.
            tracing::warn!(task_id = %task_id, agent_id = %agent_id, "agent link gone during launch");
        }
        tracing::info!(task_id = %task_id, agent_id = %agent_id, "task launched");
        Ok((task_id, agent_id))
    }
}

/// The tasks the master knows, optionally of one framework.
#[derive(Message)]
#[rtype(result = "Vec<pb::TaskInfo>")]
pub struct ListTasks {
    /// Only this framework's tasks, when not empty.
    pub framework_id: String,
}

impl Handler<ListTasks> for RegistryActor {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, msg: ListTasks, _: &mut Self::Context) -> Self::Result {
        let ids = self.framework_ids_named(&msg.framework_id);
        MessageResult(
            self.tasks
                .iter()
                .filter(|t| msg.framework_id.is_empty() || ids.contains(&t.spec.framework_id))
                .map(|t| pb::TaskInfo {
                    spec: Some(t.spec.clone()),
                    status: Some(t.status.clone()),
                    launched_ms: t.launched_ms,
                    kill_requested: self.kills.contains(&t.spec.task_id)
                        && !t.state().is_terminal(),
                })
                .collect(),
        )
    }
}

/// Asks a task's agent to kill it. The kill is kept until the task ends; the answer notes
/// when its agent is away (the kill is sent when it comes back).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, Refused>")]
pub struct KillTask {
    /// The task.
    pub task_id: String,
}

impl Handler<KillTask> for RegistryActor {
    type Result = Result<Option<String>, Refused>;

    fn handle(&mut self, msg: KillTask, _: &mut Self::Context) -> Self::Result {
        let task = self
            .tasks
            .get(&msg.task_id)
            .ok_or_else(|| refused("not_found", format!("no task {}", msg.task_id)))?;
        if task.state().is_terminal() {
            return Err(refused(
                "already_ended",
                format!(
                    "task {} already ended ({})",
                    msg.task_id,
                    task.state().as_str_name()
                ),
            ));
        }
        let agent_id = task.agent_id.clone();
        let sent = self.send_kill(&msg.task_id);
        self.flush(None);
        Ok((!sent).then(|| {
            format!("agent {agent_id} is not connected: the kill is sent when it comes back")
        }))
    }
}

/// The connection of the agent running a task, to open a log stream on.
#[derive(Message)]
#[rtype(result = "Result<quinn::Connection, Refused>")]
pub struct TaskAgentConnection {
    /// The task.
    pub task_id: String,
}

impl Handler<TaskAgentConnection> for RegistryActor {
    type Result = Result<quinn::Connection, Refused>;

    fn handle(&mut self, msg: TaskAgentConnection, _: &mut Self::Context) -> Self::Result {
        let task = self
            .tasks
            .get(&msg.task_id)
            .ok_or_else(|| refused("not_found", format!("no task {}", msg.task_id)))?;
        // A task whose container was never made has no logs; its status says why.
        let never_started = matches!(
            pb::TaskReason::try_from(task.status.reason),
            Ok(pb::TaskReason::ReasonImagePullFailed | pb::TaskReason::ReasonInvalidSpec)
        ) || task.state() == pb::TaskState::TaskDropped;
        if never_started {
            return Err(refused(
                "no_logs",
                format!(
                    "task {} never started, so it has no logs: {}",
                    msg.task_id, task.status.message
                ),
            ));
        }
        self.links
            .get(&task.agent_id)
            .and_then(|l| l.conn.clone())
            .ok_or_else(|| {
                refused(
                    "agent_unavailable",
                    format!("agent {} is not connected", task.agent_id),
                )
            })
    }
}

/// How long a drain gives frameworks to move their tasks when the operator names no
/// deadline.
pub const DEFAULT_DRAIN_DEADLINE_MS: u64 = 5 * 60 * 1000;

impl RegistryActor {
    /// Asks every running framework with a task on `agent_id` to look again (its view
    /// lists the draining agents).
    fn poke_frameworks_on(&mut self, agent_id: &str) {
        let fws: std::collections::HashSet<String> = self
            .tasks
            .on_agent(agent_id)
            .filter(|t| !t.state().is_terminal())
            .map(|t| t.spec.framework_id.clone())
            .collect();
        for fw in self.frameworks.values_mut().filter(|f| f.is_active()) {
            let has_task = fws.contains(&fw.id);
            if has_task {
                fw.needs_schedule = true;
                if let Some(actor) = &fw.actor {
                    actor.do_send(crate::framework_actor::Poke);
                }
            }
        }
    }

    /// Kills what still runs on drained agents whose deadline has passed.
    fn enforce_drains(&mut self, now: u64) {
        let due: Vec<String> = self
            .draining
            .iter()
            .filter(|(_, &deadline)| deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for agent_id in due {
            let live: Vec<String> = self
                .tasks
                .on_agent(&agent_id)
                .filter(|t| !t.state().is_terminal())
                .filter(|t| t.state() != pb::TaskState::TaskKilling)
                .map(|t| t.spec.task_id.clone())
                .collect();
            for task_id in live {
                tracing::info!(task_id = %task_id, agent_id = %agent_id, "drain deadline passed: killing task");
                self.send_kill(&task_id);
            }
        }
    }
}

/// Stops offers of an agent's resources and asks frameworks to move their tasks off it.
#[derive(Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct DrainAgent {
    pub agent_id: String,
    /// From now; 0 means [`DEFAULT_DRAIN_DEADLINE_MS`].
    pub deadline_ms: u64,
}

impl Handler<DrainAgent> for RegistryActor {
    type Result = Result<(), Refused>;

    fn handle(&mut self, msg: DrainAgent, _: &mut Self::Context) -> Self::Result {
        if self.agents.get(&msg.agent_id).is_none() {
            return Err(refused("not_found", format!("no agent {}", msg.agent_id)));
        }
        let deadline = if msg.deadline_ms == 0 {
            DEFAULT_DRAIN_DEADLINE_MS
        } else {
            msg.deadline_ms
        };
        self.draining
            .insert(msg.agent_id.clone(), now_ms().saturating_add(deadline));
        self.rescind_agent(&msg.agent_id);
        self.poke_frameworks_on(&msg.agent_id);
        self.save_agent(&msg.agent_id);
        self.flush(None);
        tracing::info!(agent_id = %msg.agent_id, deadline_ms = deadline, "agent draining");
        Ok(())
    }
}

/// Ends an agent's drain: its resources are offered again.
#[derive(Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct UndrainAgent {
    pub agent_id: String,
}

impl Handler<UndrainAgent> for RegistryActor {
    type Result = Result<(), Refused>;

    fn handle(&mut self, msg: UndrainAgent, _: &mut Self::Context) -> Self::Result {
        if self.agents.get(&msg.agent_id).is_none() {
            return Err(refused("not_found", format!("no agent {}", msg.agent_id)));
        }
        if self.draining.remove(&msg.agent_id).is_none() {
            return Err(refused(
                "not_draining",
                format!("agent {} is not draining", msg.agent_id),
            ));
        }
        self.poke_frameworks_on(&msg.agent_id);
        self.save_agent(&msg.agent_id);
        self.flush(None);
        tracing::info!(agent_id = %msg.agent_id, "agent no longer draining");
        Ok(())
    }
}

impl RegistryActor {
    /// Asks the allocator for a cycle now.
    pub(crate) fn allocate_soon(&self) {
        if let Some(a) = &self.allocator {
            a.do_send(crate::allocator_actor::AllocateSoon);
        }
    }
}

/// Tells the registry its allocator.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UseAllocator(pub Addr<crate::allocator_actor::AllocatorActor>);

impl Handler<UseAllocator> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: UseAllocator, _: &mut Self::Context) {
        self.allocator = Some(msg.0);
    }
}
