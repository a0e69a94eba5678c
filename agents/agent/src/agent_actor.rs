//! The agent actor: owns the agent's id, its tasks and the status updates the master has
//! not acknowledged yet.
//!
//! Status updates are delivered at least once: each is checkpointed to the state folder
//! before it is sent, resent with exponential backoff until the master acknowledges it,
//! and resent in order whenever the agent registers again (after the master or the link
//! was away).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use corral_containerizer::Containerizer;
use corral_wire::pb::{self, envelope::Body, TaskState};
use prost::Message as _;
use tokio::sync::mpsc;

use crate::{AgentConfig, AgentError};

const ID_FILE: &str = "agent_id";
const CHECKPOINT_FILE: &str = "checkpoint.pb";
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long status updates gather before one checkpoint covers them.
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// How long acknowledgements may wait before the checkpoint drops their updates. Losing
/// them to a crash only means resending updates the master already has (it de-duplicates),
/// so they ride along with the next flush of updates, or are written after this delay.
const ACK_FLUSH_DELAY: Duration = Duration::from_millis(500);

struct Pending {
    status: pb::TaskStatus,
    next_retry: Instant,
    backoff: Duration,
}

/// The agent's state.
pub struct AgentActor {
    agent_id: Option<String>,
    state_dir: PathBuf,
    config: AgentConfig,
    containerizer: Arc<dyn Containerizer>,
    statuses: Option<mpsc::Receiver<pb::TaskStatus>>,
    tasks: HashMap<String, pb::TaskInfo>,
    pending: VecDeque<Pending>,
    link: Option<mpsc::UnboundedSender<pb::Envelope>>,
    /// Updates recorded but not yet written to the checkpoint and sent.
    unsent: Unsent,
    /// The checkpoint is behind the agent's state.
    dirty: bool,
    flush_scheduled: bool,
    /// The checkpoint still holds updates the master has acknowledged since.
    acked: bool,
    ack_flush_scheduled: bool,
    /// Kills to start once the checkpoint that records them is written (see
    /// [`AgentActor::start_kills`]), with their grace periods.
    kills_to_start: Vec<(String, Option<Duration>)>,
}

impl AgentActor {
    /// Reads the agent's id and checkpoint (if it ran before) from its state folder, and
    /// recovers the tasks its containerizer still knows.
    ///
    /// # Errors
    /// [`AgentError::State`] when the state folder holds files that cannot be read.
    pub async fn load(
        config: &AgentConfig,
        containerizer: Arc<dyn Containerizer>,
        statuses: mpsc::Receiver<pb::TaskStatus>,
    ) -> Result<Self, AgentError> {
        let state_dir = config.state_dir.clone();
        let id_path = state_dir.join(ID_FILE);
        let agent_id = match std::fs::read_to_string(&id_path) {
            Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(AgentError::State {
                    path: id_path,
                    source,
                })
            }
        };
        let cp_path = state_dir.join(CHECKPOINT_FILE);
        let checkpoint = match std::fs::read(&cp_path) {
            Ok(bytes) => pb::AgentCheckpoint::decode(bytes.as_slice()).unwrap_or_else(|e| {
                tracing::error!(path = %cp_path.display(), error = %e, "damaged checkpoint ignored");
                pb::AgentCheckpoint::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => pb::AgentCheckpoint::default(),
            Err(source) => {
                return Err(AgentError::State {
                    path: cp_path,
                    source,
                })
            }
        };
        let now = Instant::now();
        let mut actor = Self {
            agent_id,
            state_dir,
            config: config.clone(),
            containerizer,
            statuses: Some(statuses),
            tasks: checkpoint
                .tasks
                .into_iter()
                .filter_map(|t| t.spec.as_ref().map(|s| s.task_id.clone()).map(|id| (id, t)))
                .collect(),
            pending: checkpoint
                .pending_updates
                .into_iter()
                .map(|status| Pending {
                    status,
                    next_retry: now,
                    backoff: RETRY_FIRST,
                })
                .collect(),
            link: None,
            unsent: Unsent::default(),
            dirty: false,
            flush_scheduled: false,
            acked: false,
            ack_flush_scheduled: false,
            kills_to_start: Vec::new(),
        };
        if let Some(id) = actor.agent_id.clone() {
            // Without the engine's list of containers the agent cannot tell its running
            // tasks from lost ones: it stops rather than guess.
            let found = actor
                .containerizer
                .recover(&id)
                .await
                .map_err(AgentError::Docker)?;
            actor.recovered(&id, found);
        }
        Ok(actor)
    }

    fn recovered(&mut self, agent_id: &str, found: Vec<corral_containerizer::RecoveredTask>) {
        let found_ids: HashSet<String> = found.iter().map(|r| r.status.task_id.clone()).collect();
        for r in found {
            let id = r.status.task_id.clone();
            let known_ended = self
                .tasks
                .get(&id)
                .and_then(|t| t.status.as_ref())
                .is_some_and(pb::TaskStatus::is_terminal);
            let entry = self
                .tasks
                .entry(id.clone())
                .or_insert_with(|| pb::TaskInfo {
                    spec: r.spec.clone(),
                    status: None,
                    launched_ms: 0,
                    kill_requested: false,
                });
            if entry.spec.is_none() {
                entry.spec = r.spec.clone();
            }
            let terminal = r.status.is_terminal();
            // A task that ended while the agent was down is reported with its exit code
            // (killed, when its kill had begun). One that had ended before keeps its
            // checkpointed status, whose update the master is yet to acknowledge (a new
            // status would have a new update id, and the acknowledgement would never match
            // it).
            if known_ended {
                tracing::info!(task_id = %id, "recovered task, whose end was recorded before");
                continue;
            }
            if terminal {
                let status = if entry.kill_requested {
                    killed_while_away(r.status)
                } else {
                    r.status
                };
                tracing::info!(task_id = %id, state = status.state_name(), "recovered task, which ended while the agent was down");
                self.record(status);
            } else {
                tracing::info!(task_id = %id, state = r.status.state_name(), "recovered task");
                // Its kill had begun: it goes on (a new grace period starts).
                if entry.kill_requested {
                    self.kills_to_start.push((id.clone(), None));
                }
                entry.status = Some(r.status);
            }
        }
        // A task the agent had launched and not seen end, with no container now (removed
        // while the agent was down, or its image still being pulled when it stopped), is
        // lost: nothing runs it, and nothing else would ever report it.
        let lost: Vec<pb::TaskStatus> = self
            .tasks
            .iter()
            .filter(|(id, _)| !found_ids.contains(*id))
            .filter(|(_, t)| !t.status.as_ref().is_some_and(pb::TaskStatus::is_terminal))
            .map(|(id, t)| {
                let lost = pb::TaskStatus {
                    task_id: id.clone(),
                    framework_id: t
                        .spec
                        .as_ref()
                        .map(|s| s.framework_id.clone())
                        .unwrap_or_default(),
                    agent_id: agent_id.to_owned(),
                    state: TaskState::TaskLost as i32,
                    reason: pb::TaskReason::ReasonContainerError as i32,
                    message: "no container found for it when the agent restarted".into(),
                    timestamp_ms: crate::now_ms(),
                    update_id: crate::new_update_id(),
                    ..Default::default()
                };
                // Killed before its container started, or while the agent was down: what
                // the framework asked for, not a loss to make good.
                if t.kill_requested {
                    killed_while_away(lost)
                } else {
                    lost
                }
            })
            .collect();
        for status in lost {
            tracing::warn!(task_id = %status.task_id, state = status.state_name(), "no container for the task after restart");
            self.record(status);
        }
        // Not connected yet: the recorded updates go out as pending ones on registration.
        self.unsent.take();
        self.checkpoint();
    }

    /// Records a status: the task's latest state, a pending update, the checkpoint; then
    /// sends it if the master is connected.
    ///
    /// Updates that arrive together are written with one checkpoint and then sent in
    /// order ([`AgentActor::flush`]): the checkpoint is always written before an update
    /// leaves, but it is not rewritten for every one of a burst.
    ///
    /// A state that has not left yet is replaced by a newer one of the same task when the
    /// older is not terminal (`TASK_STARTING` then `TASK_RUNNING` in one burst sends only
    /// `TASK_RUNNING`): the master never saw the older, and the newer says more.
    fn record(&mut self, status: pb::TaskStatus) {
        if let Some(task) = self.tasks.get_mut(&status.task_id) {
            task.status = Some(status.clone());
        }
        queue_update(&mut self.pending, &mut self.unsent, status);
        self.dirty = true;
    }

    /// Writes the checkpoint if it is behind, then sends the updates recorded since the
    /// last flush.
    fn flush(&mut self) {
        if self.dirty {
            self.checkpoint();
        }
        for status in self.unsent.take() {
            self.send(Body::StatusUpdate(pb::StatusUpdate {
                status: Some(status),
            }));
        }
    }

    /// Drops acknowledged updates from the checkpoint within [`ACK_FLUSH_DELAY`], unless a
    /// flush of updates does it first.
    fn flush_acks_later(&mut self, ctx: &mut Context<Self>) {
        if !self.ack_flush_scheduled {
            self.ack_flush_scheduled = true;
            ctx.run_later(ACK_FLUSH_DELAY, |act, _| {
                act.ack_flush_scheduled = false;
                if act.acked {
                    act.checkpoint();
                }
            });
        }
    }

    /// Flushes a few milliseconds from now, once for everything that happens until then.
    fn flush_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(FLUSH_DELAY, |act, ctx| {
                act.flush_scheduled = false;
                act.flush();
                act.start_kills(ctx);
            });
        }
    }

    /// Starts the kills asked for, once the checkpoint says so: a task whose kill had begun
    /// is then reported killed if the agent stops before it does (see [`killed_while_away`]).
    /// The kills of a burst (a framework's end, a drain) share one checkpoint.
    fn start_kills(&mut self, ctx: &mut Context<Self>) {
        if self.dirty {
            self.checkpoint();
        }
        for (task_id, grace) in std::mem::take(&mut self.kills_to_start) {
            let containerizer = self.containerizer.clone();
            ctx.spawn(
                async move {
                    if let Err(e) = containerizer.kill(&task_id, grace).await {
                        tracing::warn!(task_id = %task_id, error = %e, "kill failed");
                    }
                }
                .into_actor(self),
            );
        }
    }

    fn send(&self, body: Body) {
        if let Some(link) = &self.link {
            let _ = link.send(corral_wire::envelope(body));
        }
    }

    /// Writes `checkpoint.pb`: an `AgentCheckpoint` of every task and every pending update,
    /// encoded field by field from the agent's own records (no copy of them is made).
    fn checkpoint(&mut self) {
        self.dirty = false;
        self.acked = false;
        let mut buf = Vec::new();
        for task in self.tasks.values() {
            prost::encoding::message::encode(1, task, &mut buf);
        }
        for p in &self.pending {
            prost::encoding::message::encode(2, &p.status, &mut buf);
        }
        let path = self.state_dir.join(CHECKPOINT_FILE);
        // A simulated agent's tasks are not real: its checkpoint need not survive a crash
        // of the machine, and a hundred of them on one thread (the benchmarks) would
        // otherwise wait on each other's syncs.
        let sync = matches!(self.config.containerizer, crate::ContainerizerKind::Docker);
        if let Err(e) = write_durably(&path, &buf, sync) {
            tracing::error!(path = %path.display(), error = %e, "cannot write checkpoint");
        }
    }

    fn retry_due(&mut self) {
        if self.link.is_none() {
            return;
        }
        let now = Instant::now();
        let mut resend = Vec::new();
        for p in self.pending.iter_mut().filter(|p| p.next_retry <= now) {
            p.next_retry = now + p.backoff;
            p.backoff = (p.backoff * 2).min(RETRY_MAX);
            resend.push(p.status.clone());
        }
        for status in resend {
            tracing::debug!(task_id = %status.task_id, update_id = %status.update_id, "resending status update");
            self.send(Body::StatusUpdate(pb::StatusUpdate {
                status: Some(status),
            }));
        }
    }

    fn launch(&mut self, spec: pb::TaskSpec, ctx: &mut Context<Self>) {
        let Some(agent_id) = self.agent_id.clone() else {
            return;
        };
        let id = spec.task_id.clone();
        if self.tasks.contains_key(&id) {
            tracing::info!(task_id = %id, "launch of a known task ignored");
            return;
        }
        self.tasks.insert(
            id.clone(),
            pb::TaskInfo {
                spec: Some(spec.clone()),
                status: None,
                launched_ms: 0,
                kill_requested: false,
            },
        );
        // Written with the next flush; a container started before that is found again by
        // its labels if the agent dies in between.
        self.dirty = true;
        self.flush_soon(ctx);
        crate::http::METRICS.launch_started(&id);
        let containerizer = self.containerizer.clone();
        let framework_id = spec.framework_id.clone();
        async move {
            containerizer
                .launch(spec, &agent_id)
                .await
                .map_err(|e| (e, agent_id))
        }
        .into_actor(self)
        .map(move |res, act, ctx| {
            if let Err((e, agent_id)) = res {
                tracing::warn!(task_id = %id, error = %e, "launch refused");
                let (state, reason) = match e {
                    corral_containerizer::ContainerError::InvalidSpec(_) => {
                        (TaskState::TaskError, pb::TaskReason::ReasonInvalidSpec)
                    }
                    _ => (TaskState::TaskFailed, pb::TaskReason::ReasonContainerError),
                };
                let status = pb::TaskStatus {
                    task_id: id.clone(),
                    framework_id,
                    agent_id,
                    state: state as i32,
                    reason: reason as i32,
                    message: e.to_string(),
                    timestamp_ms: crate::now_ms(),
                    update_id: crate::new_update_id(),
                    ..Default::default()
                };
                // Ends the launch's entry in the metrics, as a status from the
                // containerizer would.
                crate::http::METRICS.status(&status);
                act.record(status);
                act.flush_soon(ctx);
            }
        })
        .spawn(ctx);
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.statuses.take() {
            ctx.add_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|s| (ContainerStatus(s), rx))
            }));
        }
        ctx.run_interval(Duration::from_millis(250), |act, _| act.retry_due());
        // Kills that had begun before a restart, on containers still running.
        self.start_kills(ctx);
        // Finished containers (and their logs) go once the retention period has passed.
        let retention = self.config.retention;
        let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, move |act, ctx| {
            let Some(agent_id) = act.agent_id.clone() else {
                return;
            };
            let containerizer = act.containerizer.clone();
            ctx.spawn(
                async move {
                    match containerizer.remove_finished(&agent_id, retention).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "finished containers removed"),
                        Err(e) => tracing::warn!(error = %e, "cannot remove finished containers"),
                    }
                }
                .into_actor(act),
            );
        });
    }
}

/// A status from the containerizer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ContainerStatus(pub pb::TaskStatus);

impl StreamHandler<ContainerStatus> for AgentActor {
    fn handle(&mut self, msg: ContainerStatus, ctx: &mut Self::Context) {
        crate::http::METRICS.status(&msg.0);
        tracing::debug!(task_id = %msg.0.task_id, state = msg.0.state_name(), "task status");
        self.record(msg.0);
        self.flush_soon(ctx);
    }
}

/// The registration to send the master now.
#[derive(Message)]
#[rtype(result = "pb::RegisterAgent")]
pub struct GetRegistration;

impl Handler<GetRegistration> for AgentActor {
    type Result = MessageResult<GetRegistration>;

    fn handle(&mut self, _: GetRegistration, _: &mut Self::Context) -> Self::Result {
        MessageResult(pb::RegisterAgent {
            agent_id: self.agent_id.clone().unwrap_or_default(),
            hostname: self.config.hostname.clone(),
            total: Some((&self.config.resources).into()),
            attributes: corral_core::agents::attributes_to_pb(&self.config.attributes),
            tasks: self.tasks.values().cloned().collect(),
        })
    }
}

/// The master accepted the registration under this id; `link` carries envelopes to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Registered {
    /// The id the master confirmed or assigned.
    pub agent_id: String,
    /// Where to send the master envelopes for as long as this connection lives.
    pub link: mpsc::UnboundedSender<pb::Envelope>,
}

impl Handler<Registered> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Registered, _: &mut Self::Context) {
        if self.agent_id.as_deref() != Some(&msg.agent_id) {
            let path = self.state_dir.join(ID_FILE);
            // Written to a temporary file and renamed, so a crash leaves the old id or the new.
            let tmp = path.with_extension("tmp");
            let written =
                std::fs::write(&tmp, &msg.agent_id).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "cannot keep the agent id");
            }
        }
        tracing::info!(agent_id = %msg.agent_id, pending = self.pending.len(), "registered with the master");
        self.agent_id = Some(msg.agent_id);
        self.link = Some(msg.link);
        // Everything not yet acknowledged goes again, in order, once it is checkpointed.
        if self.dirty || self.acked {
            self.checkpoint();
        }
        self.unsent.take();
        let now = Instant::now();
        for p in self.pending.iter_mut() {
            p.next_retry = now;
            p.backoff = RETRY_FIRST;
        }
        self.retry_due();
    }
}

/// The connection to the master is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkDown;

impl Handler<LinkDown> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: LinkDown, _: &mut Self::Context) {
        self.link = None;
    }
}

/// The agent's id, once it has one.
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct GetAgentId;

impl Handler<GetAgentId> for AgentActor {
    type Result = Option<String>;

    fn handle(&mut self, _: GetAgentId, _: &mut Self::Context) -> Self::Result {
        self.agent_id.clone()
    }
}

/// The containerizer, for work that streams (logs) outside the actor.
#[derive(Message)]
#[rtype(result = "Arc<dyn Containerizer>")]
pub struct GetContainerizer;

impl Handler<GetContainerizer> for AgentActor {
    type Result = MessageResult<GetContainerizer>;

    fn handle(&mut self, _: GetContainerizer, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.containerizer.clone())
    }
}

/// A message from the master for the agent to act on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromMaster(pub Body);

impl Handler<FromMaster> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: FromMaster, ctx: &mut Self::Context) {
        match msg.0 {
            Body::LaunchTask(l) => match l.spec {
                Some(spec) => self.launch(spec, ctx),
                None => tracing::warn!("launch without a spec ignored"),
            },
            Body::KillTask(k) => {
                // Saved before the kill starts (with the next flush, a few milliseconds
                // away): if the agent stops before it reports the task killed, what it
                // finds at restart is reported so.
                if let Some(t) = self.tasks.get_mut(&k.task_id) {
                    let ended = t.status.as_ref().is_some_and(pb::TaskStatus::is_terminal);
                    if !ended && !t.kill_requested {
                        t.kill_requested = true;
                        self.dirty = true;
                    }
                }
                let grace =
                    (k.grace_period_ms > 0).then(|| Duration::from_millis(k.grace_period_ms));
                self.kills_to_start.push((k.task_id, grace));
                self.flush_soon(ctx);
            }
            Body::StatusUpdateAck(ack) => {
                // Acknowledgements come in the order updates were sent: the oldest first.
                let found = match self.pending.front() {
                    Some(p) if p.status.update_id == ack.update_id => self.pending.pop_front(),
                    _ => self
                        .pending
                        .iter()
                        .position(|p| p.status.update_id == ack.update_id)
                        .and_then(|i| self.pending.remove(i)),
                };
                if found.is_some() {
                    // A task whose terminal update is acknowledged is done with.
                    let done = self.tasks.get(&ack.task_id).is_some_and(|t| {
                        t.status
                            .as_ref()
                            .is_some_and(|s| s.update_id == ack.update_id && s.is_terminal())
                    });
                    if done {
                        self.tasks.remove(&ack.task_id);
                    }
                    self.acked = true;
                    self.flush_acks_later(ctx);
                }
            }
            other => tracing::debug!(message = ?other, "message from master ignored"),
        }
    }
}

/// Updates recorded but not yet sent: the last entries of the agent's `pending` queue, in
/// the same order.
#[derive(Default)]
struct Unsent {
    updates: Vec<pb::TaskStatus>,
    /// Where in `updates` each task's latest non-terminal update is (the one a newer state
    /// of the task replaces).
    at: HashMap<String, usize>,
}

impl Unsent {
    /// All of them, to send (or to leave to the pending queue); none are left.
    fn take(&mut self) -> Vec<pb::TaskStatus> {
        self.at.clear();
        std::mem::take(&mut self.updates)
    }
}

/// Queues an update to send (`unsent`) and to keep until acknowledged (`pending`).
///
/// A newer state of a task whose last unsent update is not terminal takes that update's
/// place in both queues: the master never saw the older one, and the newer says more. A
/// burst of a hundred tasks' three states each then costs a hundred lookups, not a scan
/// and a shift per state.
fn queue_update(pending: &mut VecDeque<Pending>, unsent: &mut Unsent, status: pb::TaskStatus) {
    let terminal = status.is_terminal();
    let entry = Pending {
        status: status.clone(),
        next_retry: Instant::now() + RETRY_FIRST,
        backoff: RETRY_FIRST,
    };
    let superseded = if terminal {
        unsent.at.remove(&status.task_id)
    } else {
        unsent.at.get(&status.task_id).copied()
    };
    let Some(pos) = superseded else {
        if !terminal {
            unsent
                .at
                .insert(status.task_id.clone(), unsent.updates.len());
        }
        pending.push_back(entry);
        unsent.updates.push(status);
        return;
    };
    let old = std::mem::replace(&mut unsent.updates[pos], status);
    // The unsent updates are the tail of `pending`; if an acknowledgement of a resent copy
    // broke that, the entry is found by its update id.
    let at = pending.len().checked_sub(unsent.updates.len() - pos);
    let i = at
        .filter(|&i| pending[i].status.update_id == old.update_id)
        .or_else(|| {
            pending
                .iter()
                .rposition(|p| p.status.update_id == old.update_id)
        });
    match i {
        Some(i) => pending[i] = entry,
        None => pending.push_back(entry),
    }
}

/// The tasks the agent holds now (for `/metrics`).
#[derive(Message)]
#[rtype(result = "Vec<pb::TaskInfo>")]
pub struct ListAgentTasks;

impl Handler<ListAgentTasks> for AgentActor {
    type Result = MessageResult<ListAgentTasks>;

    fn handle(&mut self, _: ListAgentTasks, _: &mut Self::Context) -> Self::Result {
        let mut tasks: Vec<pb::TaskInfo> = self.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| task_id(a).cmp(task_id(b)));
        MessageResult(tasks)
    }
}

fn task_id(t: &pb::TaskInfo) -> &str {
    t.spec.as_ref().map_or("", |s| s.task_id.as_str())
}

/// The status of a task whose kill the agent had started, found ended (or gone) when the
/// agent restarted: killed, whatever its exit code, as a kill carried out while the agent
/// runs is reported.
fn killed_while_away(status: pb::TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        state: TaskState::TaskKilled as i32,
        reason: pb::TaskReason::ReasonKilledByRequest as i32,
        message: format!("killed as asked: {}", status.message),
        ..status
    }
}

/// Replaces the file at `path` with `bytes`, through a temporary file and a rename, so that
/// a crash of the agent leaves the old file or the new one. With `sync`, so does a crash
/// of the machine: the bytes are synced before the rename, and the folder after it (a
/// sync took about 0.2 ms on a virtual disk), once per flush (a few milliseconds of
/// updates), before the updates it records are sent.
fn write_durably(path: &std::path::Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(&tmp, path)?;
    if !sync {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str, state: TaskState, id: &str) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            update_id: id.into(),
            ..Default::default()
        }
    }

    fn queue(updates: Vec<pb::TaskStatus>) -> (VecDeque<Pending>, Vec<pb::TaskStatus>) {
        let (mut pending, mut unsent) = (VecDeque::new(), Unsent::default());
        for u in updates {
            queue_update(&mut pending, &mut unsent, u);
        }
        (pending, unsent.take())
    }

    fn ids<'a>(updates: impl IntoIterator<Item = &'a pb::TaskStatus>) -> Vec<&'a str> {
        updates.into_iter().map(|u| u.update_id.as_str()).collect()
    }

    #[test]
    fn a_burst_of_states_sends_only_the_latest_of_each_task() {
        use TaskState::*;
        let (pending, unsent) = queue(vec![
            update("a", TaskStaging, "a1"),
            update("b", TaskStaging, "b1"),
            update("a", TaskStarting, "a2"),
            update("b", TaskStarting, "b2"),
            update("a", TaskRunning, "a3"),
            update("b", TaskRunning, "b3"),
        ]);
        assert_eq!(ids(&unsent), ["a3", "b3"]);
        assert_eq!(ids(pending.iter().map(|p| &p.status)), ["a3", "b3"]);
    }

    #[test]
    fn a_terminal_update_replaces_an_unsent_one_but_is_never_replaced() {
        use TaskState::*;
        let (pending, unsent) = queue(vec![
            update("a", TaskRunning, "a1"),
            update("b", TaskRunning, "b1"),
            update("a", TaskFinished, "a2"),
            // Nothing follows a terminal state; if something did, it would not hide it.
            update("a", TaskRunning, "a3"),
        ]);
        assert_eq!(ids(&unsent), ["a2", "b1", "a3"]);
        assert_eq!(ids(pending.iter().map(|p| &p.status)), ["a2", "b1", "a3"]);
    }

    #[test]
    fn sent_updates_stay_pending_and_are_not_replaced() {
        use TaskState::*;
        let (mut pending, mut unsent) = (VecDeque::new(), Unsent::default());
        queue_update(&mut pending, &mut unsent, update("a", TaskStarting, "a1"));
        // A flush sends it.
        unsent.take();
        for u in [
            update("a", TaskRunning, "a2"),
            update("b", TaskRunning, "b1"),
            update("a", TaskKilled, "a3"),
        ] {
            queue_update(&mut pending, &mut unsent, u);
        }
        assert_eq!(ids(&unsent.take()), ["a3", "b1"]);
        assert_eq!(ids(pending.iter().map(|p| &p.status)), ["a1", "a3", "b1"]);
    }

    #[test]
    fn a_task_whose_kill_had_begun_is_reported_killed_however_it_ended() {
        let ended = |state: TaskState| pb::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            reason: pb::TaskReason::ReasonCommandExited as i32,
            message: "exited 143 while the agent was down".into(),
            exit_code: Some(143),
            ..Default::default()
        };
        let killed = killed_while_away(ended(TaskState::TaskFailed));
        assert_eq!(killed.state, TaskState::TaskKilled as i32);
        assert_eq!(killed.reason, pb::TaskReason::ReasonKilledByRequest as i32);
        assert_eq!(killed.exit_code, Some(143));
        assert_eq!(
            killed.message,
            "killed as asked: exited 143 while the agent was down"
        );
        // Whatever it ended with: a clean exit on its SIGTERM, or no container left.
        for state in [TaskState::TaskFinished, TaskState::TaskLost] {
            assert_eq!(
                killed_while_away(ended(state)).state,
                TaskState::TaskKilled as i32
            );
        }
    }

    #[test]
    fn a_durable_write_replaces_the_file_and_leaves_no_temporary() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("corral-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(CHECKPOINT_FILE);
        write_durably(&path, b"old", true)?;
        write_durably(&path, b"new", true)?;
        assert_eq!(std::fs::read(&path)?, b"new");
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(&dir)
    }
}
