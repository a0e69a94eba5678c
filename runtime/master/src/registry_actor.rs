//! The registry actor: the one owner of the master's books.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use corral_core::agents::{AgentEntry, AgentError, AgentEvent, AgentState, Agents, Registration};
use corral_core::tasks::{spec_resources, Applied, Tasks};
use corral_core::Resources;
use corral_wire::pb::{self, envelope::Body};
use tokio::sync::mpsc;

use corral_containerizer::{validate_spec, AgentCapacity};

use crate::{now_ms, MasterConfig};

/// A connected agent's session: its number, its outgoing envelopes, its connection.
struct Link {
    session: u64,
    out: mpsc::UnboundedSender<pb::Envelope>,
    conn: Option<quinn::Connection>,
}

/// Owns the agents' and tasks' books and the channels to the agents' sessions.
pub struct RegistryActor {
    agents: Agents,
    tasks: Tasks,
    links: HashMap<String, Link>,
    tick: Duration,
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

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

impl RegistryActor {
    /// A registry using the configuration's agent timeout.
    pub fn new(config: &MasterConfig) -> Self {
        let timeout = config.agent_timeout;
        Self {
            agents: Agents::new(timeout.as_millis() as u64),
            tasks: Tasks::new(),
            links: HashMap::new(),
            tick: (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        }
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
                    for (status, _) in self.tasks.agent_lost(now_ms(), &id) {
                        tracing::info!(task_id = %status.task_id, agent_id = %id, "task lost");
                    }
                    self.recompute_used(&id);
                }
            }
        }
    }

    /// An agent's used resources: the sum of its unfinished tasks.
    fn recompute_used(&mut self, agent_id: &str) {
        let used = self
            .tasks
            .iter()
            .filter(|t| t.agent_id == agent_id && !t.state().is_terminal())
            .fold(Resources::default(), |acc, t| acc.add(&t.resources));
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used = used;
        }
    }

    /// Settles what an agent reports it runs against what the master knows.
    fn reconcile(&mut self, agent_id: &str, reported: Vec<pb::TaskInfo>) {
        let mut seen = std::collections::HashSet::new();
        for info in reported {
            let (Some(spec), Some(mut status)) = (info.spec, info.status) else {
                continue;
            };
            seen.insert(spec.task_id.clone());
            status.agent_id = agent_id.to_owned();
            let id = spec.task_id.clone();
            if self.tasks.adopt(spec, status) {
                tracing::info!(task_id = %id, agent_id, "adopted task reported by agent");
            }
        }
        let missing: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| {
                t.agent_id == agent_id
                    && !t.state().is_terminal()
                    && !seen.contains(&t.spec.task_id)
            })
            .map(|t| t.spec.task_id.clone())
            .collect();
        for id in missing {
            tracing::warn!(task_id = %id, agent_id, "task unknown to its agent: lost");
            self.tasks.apply(&pb::TaskStatus {
                task_id: id.clone(),
                agent_id: agent_id.to_owned(),
                state: pb::TaskState::TaskLost as i32,
                reason: pb::TaskReason::ReasonReconciliation as i32,
                message: "the agent does not know this task".into(),
                timestamp_ms: now_ms(),
                ..Default::default()
            });
        }
        self.recompute_used(agent_id);
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
            .filter(|a| a.state == AgentState::Active && self.links.contains_key(&a.id))
            .map(|a| (a.id.clone(), a.total.clone(), a.used.clone()))
            .collect();
        if candidates.is_empty() {
            return Err(refused("no_agents", "no active agent to run the task on"));
        }
        for (agent_id, total, used) in candidates {
            let free = total.checked_sub(&used).unwrap_or_default();
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

fn capacity(r: &Resources) -> AgentCapacity {
    AgentCapacity::from_resources(&r.into())
}

/// Gives every mapping that asks for any host port (0) the lowest free one. Returns false
/// when the agent has too few free ports.
fn assign_ports(spec: &mut pb::TaskSpec, free: &Resources) -> bool {
    if spec.network_mode == pb::NetworkMode::NetworkHost as i32 {
        return true;
    }
    let taken: std::collections::HashSet<u32> = spec
        .port_mappings
        .iter()
        .map(|p| p.host_port)
        .filter(|p| *p != 0)
        .collect();
    let mut available = free
        .ports
        .iter()
        .flat_map(|&(b, e)| b..=e)
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
        ctx.run_interval(self.tick, |act, _| {
            let events = act.agents.tick(now_ms());
            act.apply(events);
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
        self.reconcile(&id, msg.tasks);
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
        MessageResult(self.agents.iter().cloned().collect())
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
}

impl Handler<StatusFromAgent> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: StatusFromAgent, _: &mut Self::Context) {
        let mut status = msg.status;
        status.agent_id = msg.agent_id.clone();
        match self.tasks.apply(&status) {
            Applied::Updated { agent_id, released } => {
                crate::http::metrics::METRICS.status_update(status.state);
                tracing::info!(
                    task_id = %status.task_id,
                    state = pb::TaskState::try_from(status.state).map(|s| s.as_str_name()).unwrap_or("?"),
                    "task status"
                );
                if released.is_some() {
                    self.recompute_used(&agent_id);
                }
            }
            Applied::Duplicate => {
                tracing::debug!(update_id = %status.update_id, "duplicate status update")
            }
            Applied::UnknownTask => {
                tracing::info!(task_id = %status.task_id, "status update for an unknown task")
            }
            Applied::AlreadyTerminal => {}
        }
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
        let sent = self.links.get(&agent_id).is_some_and(|l| {
            l.out
                .send(corral_wire::envelope(Body::LaunchTask(pb::LaunchTask {
                    spec: Some(spec.clone()),
                })))
                .is_ok()
        });
        self.tasks.add(now_ms(), spec, &agent_id);
        crate::http::metrics::METRICS.launches.inc();
        if !sent {
            // The session ended between placement and launch: the agent will not know the
            // task when it registers again, and reconciliation reports it lost.
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
        MessageResult(
            self.tasks
                .iter()
                .filter(|t| msg.framework_id.is_empty() || t.spec.framework_id == msg.framework_id)
                .map(|t| pb::TaskInfo {
                    spec: Some(t.spec.clone()),
                    status: Some(t.status.clone()),
                })
                .collect(),
        )
    }
}

/// Asks a task's agent to kill it.
#[derive(Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct KillTask {
    /// The task.
    pub task_id: String,
}

impl Handler<KillTask> for RegistryActor {
    type Result = Result<(), Refused>;

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
        let link = self.links.get(&task.agent_id).ok_or_else(|| {
            refused(
                "agent_unavailable",
                format!("agent {} is not connected", task.agent_id),
            )
        })?;
        let _ = link
            .out
            .send(corral_wire::envelope(Body::KillTask(pb::KillTask {
                task_id: msg.task_id.clone(),
                framework_id: task.spec.framework_id.clone(),
                grace_period_ms: 0,
            })));
        Ok(())
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

/// The allocator's view of the cluster now: every active agent's free resources.
#[derive(Message)]
#[rtype(result = "corral_core::view::AllocatorView")]
pub struct AllocationView;

impl Handler<AllocationView> for RegistryActor {
    type Result = MessageResult<AllocationView>;

    fn handle(&mut self, _: AllocationView, _: &mut Self::Context) -> Self::Result {
        use corral_core::view;
        let scalar = |r: &Resources| view::Resources::new(r.cpus_milli, r.mem_mb, r.disk_mb);
        let mut total = view::Resources::ZERO;
        let mut agents = Vec::new();
        for a in self.agents.iter().filter(|a| a.state == AgentState::Active) {
            total = total.saturating_add(&scalar(&a.total));
            agents.push(scalar(&a.total).saturating_sub(&scalar(&a.used)));
        }
        MessageResult(view::AllocatorView {
            now_ms: now_ms(),
            total,
            agents,
            ..Default::default()
        })
    }
}
