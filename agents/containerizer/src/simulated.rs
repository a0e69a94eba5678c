//! A containerizer that runs no containers, for scale tests: each task "runs" for a
//! configured time and exits with a configured code, reporting the same statuses as a real
//! task. One sleeping tokio task per task, so 10,000 tasks cost little.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use corral_wire::pb::{TaskReason, TaskSpec, TaskState, TaskStatus};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::spec::{validate_spec, AgentCapacity};
use crate::status::StatusSink;
use crate::{
    ContainerError, Containerizer, LogOptions, LogStream, RecoveredTask, DEFAULT_KILL_GRACE,
};

/// Spec label that overrides [`SimulatedConfig::run_time`] for one task, in milliseconds.
pub const SIM_RUN_MS_LABEL: &str = "sim.run_ms";
/// Spec label that overrides [`SimulatedConfig::exit_code`] for one task.
pub const SIM_EXIT_CODE_LABEL: &str = "sim.exit_code";

/// How simulated tasks behave.
#[derive(Debug, Clone)]
pub struct SimulatedConfig {
    /// How long a task runs before it exits (unless its spec's [`SIM_RUN_MS_LABEL`] says).
    pub run_time: Duration,
    /// The code a task exits with (unless its spec's [`SIM_EXIT_CODE_LABEL`] says): 0 ends
    /// `TASK_FINISHED`, anything else `TASK_FAILED`.
    pub exit_code: i32,
    /// Time spent in `TASK_STAGING` (an image pull) before `TASK_STARTING`.
    pub staging_time: Duration,
    /// Time spent in `TASK_STARTING` before `TASK_RUNNING`.
    pub starting_time: Duration,
    /// Whether a kill's SIGTERM is ignored, so the task only stops at the grace period's
    /// end (exit code 137) rather than at once (exit code 143).
    pub ignore_sigterm: bool,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            run_time: Duration::from_secs(1),
            exit_code: 0,
            staging_time: Duration::ZERO,
            starting_time: Duration::ZERO,
            ignore_sigterm: false,
        }
    }
}

/// A [`Containerizer`] without containers. Tasks live in this process: dropping the
/// containerizer ends them, and [`Containerizer::recover`] returns the tasks this instance
/// knows for the agent (as a restarted agent would find them).
pub struct SimulatedContainerizer {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimulatedConfig,
    tx: mpsc::Sender<TaskStatus>,
    tasks: Mutex<HashMap<String, SimTask>>,
}

struct SimTask {
    agent_id: String,
    spec: TaskSpec,
    /// The latest status sent; `None` before the first.
    latest: watch::Sender<Option<TaskStatus>>,
    kill: Option<oneshot::Sender<Duration>>,
    ended_at: Option<Instant>,
    output: Bytes,
    supervisor: Option<tokio::task::AbortHandle>,
}

impl SimulatedContainerizer {
    /// A simulated containerizer that sends every status on `tx`.
    pub fn new(config: SimulatedConfig, tx: mpsc::Sender<TaskStatus>) -> Self {
        SimulatedContainerizer {
            inner: Arc::new(Inner {
                config,
                tx,
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How many tasks are running (not yet ended).
    pub fn running(&self) -> usize {
        self.inner
            .lock()
            .values()
            .filter(|t| t.ended_at.is_none())
            .count()
    }
}

impl Drop for SimulatedContainerizer {
    fn drop(&mut self) {
        for task in self.inner.lock().values() {
            if let Some(handle) = &task.supervisor {
                handle.abort();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SimTask>> {
        // A poisoned map only means a panic elsewhere; the data is still consistent.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn label<T: std::str::FromStr>(spec: &TaskSpec, key: &str) -> Option<T> {
        spec.labels
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.parse().ok())
    }

    async fn supervise(
        self: Arc<Self>,
        spec: TaskSpec,
        agent_id: String,
        kill_rx: oneshot::Receiver<Duration>,
    ) {
        let mut sink = StatusSink::new(
            self.tx.clone(),
            &spec.task_id,
            &spec.framework_id,
            &agent_id,
        );
        sink.ports = spec.port_mappings.clone();
        let run_time = Self::label::<u64>(&spec, SIM_RUN_MS_LABEL)
            .map(Duration::from_millis)
            .unwrap_or(self.config.run_time);
        let exit_code =
            Self::label::<i32>(&spec, SIM_EXIT_CODE_LABEL).unwrap_or(self.config.exit_code);
        let task_id = spec.task_id.clone();
        let mut kill_rx = kill_rx;

        let phases = [
            (TaskState::TaskStaging, self.config.staging_time),
            (TaskState::TaskStarting, self.config.starting_time),
            (TaskState::TaskRunning, run_time),
        ];
        let mut killed: Option<Duration> = None;
        for (state, wait) in phases {
            self.report(
                &sink,
                &task_id,
                state,
                TaskReason::ReasonUnspecified,
                "",
                None,
            )
            .await;
            if wait.is_zero() {
                // No time in this state: the next report follows at once (an agent then
                // sends only the latest), unless a kill came first.
                match kill_rx.try_recv() {
                    Ok(grace) => {
                        killed = Some(grace);
                        break;
                    }
                    Err(oneshot::error::TryRecvError::Empty) => continue,
                    Err(oneshot::error::TryRecvError::Closed) => return,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                grace = &mut kill_rx => {
                    // A dropped sender only happens when the containerizer is gone.
                    let Ok(grace) = grace else { return };
                    killed = Some(grace);
                    break;
                }
            }
        }

        let (state, reason, code, message) = match killed {
            Some(grace) => {
                self.report(
                    &sink,
                    &task_id,
                    TaskState::TaskKilling,
                    TaskReason::ReasonKilledByRequest,
                    "",
                    None,
                )
                .await;
                let code = if self.config.ignore_sigterm {
                    tokio::time::sleep(grace).await;
                    137
                } else {
                    143
                };
                (
                    TaskState::TaskKilled,
                    TaskReason::ReasonKilledByRequest,
                    code,
                    "killed".to_string(),
                )
            }
            None if exit_code == 0 => (
                TaskState::TaskFinished,
                TaskReason::ReasonCommandExited,
                0,
                "exited 0".to_string(),
            ),
            None => (
                TaskState::TaskFailed,
                TaskReason::ReasonCommandExited,
                exit_code,
                format!("exited {exit_code}"),
            ),
        };
        if let Some(task) = self.lock().get_mut(&task_id) {
            task.ended_at = Some(Instant::now());
            task.output = Bytes::from(format!(
                "simulated task {task_id} ran for up to {} ms and exited {code}\n",
                run_time.as_millis()
            ));
        }
        self.report(&sink, &task_id, state, reason, message, Some(code))
            .await;
    }

    async fn report(
        &self,
        sink: &StatusSink,
        task_id: &str,
        state: TaskState,
        reason: TaskReason,
        message: impl Into<String>,
        exit_code: Option<i32>,
    ) {
        let status = sink.status(state, reason, message, exit_code);
        if let Some(task) = self.lock().get(task_id) {
            task.latest.send_replace(Some(status.clone()));
        }
        if self.tx.send(status).await.is_err() {
            tracing::warn!(task_id = %task_id, "status channel closed");
        }
    }
}

#[async_trait]
impl Containerizer for SimulatedContainerizer {
    async fn launch(&self, spec: TaskSpec, agent_id: &str) -> Result<(), ContainerError> {
        validate_spec(&spec, &AgentCapacity::unbounded(port_ranges(&spec)))?;
        let (kill_tx, kill_rx) = oneshot::channel();
        let task_id = spec.task_id.clone();
        let mut tasks = self.inner.lock();
        if tasks.contains_key(&task_id) {
            return Err(ContainerError::AlreadyExists(task_id));
        }
        tasks.insert(
            task_id.clone(),
            SimTask {
                agent_id: agent_id.to_string(),
                spec: spec.clone(),
                latest: watch::channel(None).0,
                kill: Some(kill_tx),
                ended_at: None,
                output: Bytes::new(),
                supervisor: None,
            },
        );
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(inner.supervise(spec, agent_id.to_string(), kill_rx));
        if let Some(task) = tasks.get_mut(&task_id) {
            task.supervisor = Some(handle.abort_handle());
        }
        Ok(())
    }

    async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), ContainerError> {
        let mut tasks = self.inner.lock();
        let task = tasks
            .get_mut(task_id)
            .ok_or_else(|| ContainerError::NotFound(task_id.to_string()))?;
        let grace = grace
            .or_else(|| {
                (task.spec.kill_grace_period_ms > 0)
                    .then(|| Duration::from_millis(task.spec.kill_grace_period_ms))
            })
            .unwrap_or(DEFAULT_KILL_GRACE);
        if let Some(kill) = task.kill.take() {
            // The supervisor may have ended already; then there is nothing to kill.
            let _ = kill.send(grace);
        }
        Ok(())
    }

    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<LogStream, ContainerError> {
        let mut latest = {
            let tasks = self.inner.lock();
            let task = tasks
                .get(task_id)
                .ok_or_else(|| ContainerError::NotFound(task_id.to_string()))?;
            task.latest.subscribe()
        };
        let inner = Arc::clone(&self.inner);
        let task_id = task_id.to_string();
        let stream = futures::stream::once(async move {
            if options.follow {
                // Output appears when the task ends; wait for that (or for the task to go).
                let _ = latest
                    .wait_for(|s| {
                        s.as_ref().is_some_and(|s| {
                            TaskState::try_from(s.state).is_ok_and(crate::status::is_terminal)
                        })
                    })
                    .await;
            }
            let tasks = inner.lock();
            let out = tasks
                .get(&task_id)
                .map(|t| t.output.clone())
                .unwrap_or_default();
            Ok(if options.stderr { Bytes::new() } else { out })
        })
        .filter(|chunk: &Result<Bytes, ContainerError>| {
            futures::future::ready(chunk.as_ref().map_or(true, |b| !b.is_empty()))
        });
        Ok(Box::pin(stream))
    }

    async fn recover(&self, agent_id: &str) -> Result<Vec<RecoveredTask>, ContainerError> {
        let tasks = self.inner.lock();
        Ok(tasks
            .values()
            .filter(|t| t.agent_id == agent_id)
            .filter_map(|t| {
                let status = t.latest.borrow().clone()?;
                Some(RecoveredTask {
                    status,
                    spec: Some(t.spec.clone()),
                    container_id: String::new(),
                })
            })
            .collect())
    }

    async fn remove_finished(
        &self,
        agent_id: &str,
        older_than: Duration,
    ) -> Result<usize, ContainerError> {
        let now = Instant::now();
        let mut tasks = self.inner.lock();
        let before = tasks.len();
        tasks.retain(|_, t| {
            t.agent_id != agent_id
                || t.ended_at
                    .is_none_or(|at| now.saturating_duration_since(at) < older_than)
        });
        Ok(before - tasks.len())
    }
}

/// The port ranges a spec's own host ports fall in, so that the shape check does not
/// refuse them: the agent's real range is checked by the caller of [`validate_spec`].
fn port_ranges(spec: &TaskSpec) -> Vec<corral_wire::pb::PortRange> {
    let mut ranges: Vec<_> = spec
        .port_mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| corral_wire::pb::PortRange {
            begin: m.host_port,
            end: m.host_port,
        })
        .collect();
    if let Some(res) = &spec.resources {
        ranges.extend(res.ports.iter().cloned());
    }
    ranges.push(corral_wire::pb::PortRange {
        begin: 1,
        end: 65535,
    });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::pb::{KeyValue, Resources};

    fn spec(task_id: &str) -> TaskSpec {
        TaskSpec {
            task_id: task_id.into(),
            framework_id: "fw".into(),
            image: "corral/busybox:test".into(),
            resources: Some(Resources {
                cpus_milli: 100,
                mem_mb: 32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn state(s: &TaskStatus) -> TaskState {
        TaskState::try_from(s.state).unwrap_or(TaskState::Unspecified)
    }

    async fn states_until_terminal(rx: &mut mpsc::Receiver<TaskStatus>) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        while let Some(s) = rx.recv().await {
            let done = crate::status::is_terminal(state(&s));
            out.push(s);
            if done {
                return out;
            }
        }
        panic!("channel closed before a terminal status: {out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_through_the_lifecycle_and_exits() {
        let (tx, mut rx) = mpsc::channel(16);
        let config = SimulatedConfig {
            run_time: Duration::from_secs(5),
            exit_code: 0,
            ..Default::default()
        };
        let c = SimulatedContainerizer::new(config, tx);
        let started = Instant::now();
        c.launch(spec("ok"), "a1").await.expect("launch");
        let seen = states_until_terminal(&mut rx).await;
        let states: Vec<_> = seen.iter().map(state).collect();
        assert_eq!(
            states,
            [
                TaskState::TaskStaging,
                TaskState::TaskStarting,
                TaskState::TaskRunning,
                TaskState::TaskFinished
            ]
        );
        assert!(started.elapsed() >= Duration::from_secs(5));
        let last = &seen[3];
        assert_eq!(last.exit_code, Some(0));
        assert_eq!(last.agent_id, "a1");
        assert_eq!(last.framework_id, "fw");
        let ids: std::collections::HashSet<_> = seen.iter().map(|s| &s.update_id).collect();
        assert_eq!(ids.len(), 4, "update ids must be unique");

        let mut failing = spec("bad");
        failing.labels.push(KeyValue {
            key: SIM_EXIT_CODE_LABEL.into(),
            value: "3".into(),
        });
        c.launch(failing, "a1").await.expect("launch");
        let seen = states_until_terminal(&mut rx).await;
        let last = seen.last().expect("a status");
        assert_eq!(state(last), TaskState::TaskFailed);
        assert_eq!(last.exit_code, Some(3));

        let mut logs = c.logs("bad", LogOptions::default()).await.expect("logs");
        let chunk = logs.next().await.expect("a chunk").expect("log bytes");
        assert!(String::from_utf8_lossy(&chunk).contains("exited 3"));

        assert!(matches!(
            c.launch(spec("ok"), "a1").await,
            Err(ContainerError::AlreadyExists(_))
        ));
        let mut invalid = spec("invalid");
        invalid.image.clear();
        assert!(matches!(
            c.launch(invalid, "a1").await,
            Err(ContainerError::InvalidSpec(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn kill_ends_killed_and_honours_the_grace_period() {
        let (tx, mut rx) = mpsc::channel(16);
        let config = SimulatedConfig {
            run_time: Duration::from_secs(3600),
            ignore_sigterm: true,
            ..Default::default()
        };
        let c = SimulatedContainerizer::new(config, tx);
        c.launch(spec("k"), "a1").await.expect("launch");
        while let Some(s) = rx.recv().await {
            if state(&s) == TaskState::TaskRunning {
                break;
            }
        }
        let asked = Instant::now();
        c.kill("k", Some(Duration::from_secs(2)))
            .await
            .expect("kill");
        let seen = states_until_terminal(&mut rx).await;
        let states: Vec<_> = seen.iter().map(state).collect();
        assert_eq!(states, [TaskState::TaskKilling, TaskState::TaskKilled]);
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(seen[1].exit_code, Some(137));
        assert!(matches!(
            c.kill("nope", None).await,
            Err(ContainerError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_tasks_on_a_hundred_agents() {
        let (tx, mut rx) = mpsc::channel(4096);
        let config = SimulatedConfig {
            run_time: Duration::from_secs(30),
            ..Default::default()
        };
        let c = Arc::new(SimulatedContainerizer::new(config, tx));
        let dyn_c: Arc<dyn Containerizer> = c.clone();
        let launcher = tokio::spawn(async move {
            for i in 0..10_000 {
                let agent = format!("agent-{}", i % 100);
                dyn_c
                    .launch(spec(&format!("t-{i}")), &agent)
                    .await
                    .expect("launch");
            }
        });
        let mut finished = 0;
        let mut running = 0;
        while finished < 10_000 {
            let s = rx.recv().await.expect("status");
            match state(&s) {
                TaskState::TaskRunning => running += 1,
                TaskState::TaskFinished => finished += 1,
                _ => {}
            }
        }
        launcher.await.expect("launcher");
        assert_eq!(running, 10_000);
        assert_eq!(c.running(), 0);
        let recovered = c.recover("agent-7").await.expect("recover");
        assert_eq!(recovered.len(), 100);
        assert!(recovered
            .iter()
            .all(|r| state(&r.status) == TaskState::TaskFinished));
        tokio::time::advance(Duration::from_secs(60)).await;
        let removed = c
            .remove_finished("agent-7", Duration::from_secs(10))
            .await
            .expect("remove");
        assert_eq!(removed, 100);
        assert!(c.recover("agent-7").await.expect("recover").is_empty());
    }
}
