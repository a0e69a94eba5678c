//! The Docker containerizer: every task a container, through the engine's API (bollard).

mod create;
mod health;
mod ports;
mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{ListContainersOptions, LogsOptions, RemoveContainerOptions};
use bollard::Docker;
use corral_wire::pb::{PortRange, TaskReason, TaskSpec, TaskState, TaskStatus};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, watch};

use self::ports::PortPool;
use self::supervisor::{engine_message, outcome, ports_of, Supervisor};
use crate::spec::{validate_spec, AgentCapacity};
use crate::status::StatusSink;
use crate::util::{container_name, parse_engine_time};
use crate::{
    ContainerError, Containerizer, LogOptions, LogStream, RecoveredTask, DEFAULT_KILL_GRACE,
    LABEL_AGENT_ID, LABEL_FRAMEWORK_ID, LABEL_SPEC, LABEL_TASK_ID,
};

/// How the Docker containerizer runs tasks.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The agent's host port range: mappings with `host_port` 0 get a free port from it,
    /// and mappings naming a port must fall inside it.
    pub port_range: Vec<PortRange>,
    /// Kill grace period for tasks whose spec and kill give none.
    pub default_kill_grace: Duration,
    /// At most one `TASK_STAGING` progress message per this interval during a pull.
    pub pull_progress_interval: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            port_range: vec![PortRange {
                begin: 31000,
                end: 32000,
            }],
            default_kill_grace: DEFAULT_KILL_GRACE,
            pull_progress_interval: Duration::from_secs(1),
        }
    }
}

/// A [`Containerizer`] that runs each task as a Docker container.
///
/// Dropping it stops its supervisors; containers keep running, for a new containerizer's
/// [`Containerizer::recover`] to find.
pub struct DockerContainerizer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    docker: Docker,
    config: DockerConfig,
    tx: mpsc::Sender<TaskStatus>,
    ports: PortPool,
    tasks: Mutex<HashMap<String, Entry>>,
}

/// What the containerizer knows of one task.
struct Entry {
    grace: Option<Duration>,
    kill_tx: watch::Sender<Option<Duration>>,
    container_id: Option<String>,
    supervisor: Option<tokio::task::AbortHandle>,
    done: bool,
}

impl DockerContainerizer {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket), agrees on an API
    /// version with it, and builds a containerizer that sends statuses on `tx`.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Docker`] when no engine answers.
    pub async fn connect(
        config: DockerConfig,
        tx: mpsc::Sender<TaskStatus>,
    ) -> Result<Self, ContainerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| ContainerError::docker("connecting to the engine", e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| ContainerError::docker("asking the engine for its version", e))?;
        Ok(Self::new(docker, config, tx))
    }

    /// A containerizer on an engine client the caller set up (its API version already
    /// agreed with [`Docker::negotiate_version`]).
    pub fn new(docker: Docker, config: DockerConfig, tx: mpsc::Sender<TaskStatus>) -> Self {
        let ports = PortPool::new(config.port_range.clone());
        DockerContainerizer {
            inner: Arc::new(Inner {
                docker,
                config,
                tx,
                ports,
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The engine client, for callers that need more than tasks (health of the engine,
    /// tests).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }
}

impl Drop for DockerContainerizer {
    fn drop(&mut self) {
        for entry in self.inner.lock().values() {
            if let Some(handle) = &entry.supervisor {
                handle.abort();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map only means a panic elsewhere; its entries are still consistent.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_done(&self, task_id: &str) {
        if let Some(entry) = self.lock().get_mut(task_id) {
            entry.done = true;
        }
    }

    fn set_container(&self, task_id: &str, container_id: &str) {
        if let Some(entry) = self.lock().get_mut(task_id) {
            entry.container_id = Some(container_id.to_string());
        }
    }

    /// The grace period of a kill: the kill's own, the spec's, or the configured default.
    fn grace_for(&self, spec: &TaskSpec, asked: Option<Duration>) -> Duration {
        asked
            .filter(|d| !d.is_zero())
            .or_else(|| {
                (spec.kill_grace_period_ms > 0)
                    .then(|| Duration::from_millis(spec.kill_grace_period_ms))
            })
            .unwrap_or(self.config.default_kill_grace)
    }

    async fn inspect(&self, container: &str) -> Option<ContainerInspectResponse> {
        match self.docker.inspect_container(container, None).await {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(container, error = %e, "inspecting container failed");
                None
            }
        }
    }

    /// Registers a task and spawns its supervisor.
    fn spawn(
        self: &Arc<Self>,
        spec: TaskSpec,
        agent_id: &str,
        recovered: Option<(String, StatusSink)>,
    ) -> Result<(), ContainerError> {
        let task_id = spec.task_id.clone();
        let mut tasks = self.lock();
        if tasks.contains_key(&task_id) {
            return Err(ContainerError::AlreadyExists(task_id));
        }
        let (kill_tx, kill_rx) = watch::channel(None);
        let grace = (spec.kill_grace_period_ms > 0)
            .then(|| Duration::from_millis(spec.kill_grace_period_ms));
        let container_id = recovered.as_ref().map(|(id, _)| id.clone());
        let sink = match &recovered {
            Some((_, sink)) => sink.clone(),
            None => StatusSink::new(self.tx.clone(), &task_id, &spec.framework_id, agent_id),
        };
        let supervisor = Supervisor {
            inner: Arc::clone(self),
            name: container_name(&task_id),
            spec,
            sink,
            kill_rx,
        };
        let handle = match recovered {
            None => tokio::spawn(supervisor.run_new()),
            Some((id, _)) => tokio::spawn(supervisor.run_recovered(id)),
        };
        tasks.insert(
            task_id,
            Entry {
                grace,
                kill_tx,
                container_id,
                supervisor: Some(handle.abort_handle()),
                done: false,
            },
        );
        Ok(())
    }

    async fn list(
        &self,
        agent_id: &str,
        statuses: &[&str],
    ) -> Result<Vec<bollard::models::ContainerSummary>, ContainerError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                format!("{LABEL_AGENT_ID}={agent_id}"),
                LABEL_TASK_ID.to_string(),
            ],
        );
        if !statuses.is_empty() {
            filters.insert(
                "status".to_string(),
                statuses.iter().map(|s| s.to_string()).collect(),
            );
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| ContainerError::docker("listing containers", e))
    }
}

#[async_trait]
impl Containerizer for DockerContainerizer {
    async fn launch(&self, spec: TaskSpec, agent_id: &str) -> Result<(), ContainerError> {
        // Free CPUs and memory are the agent's bookkeeping; the shape and the port range
        // are checked here too, so nothing malformed reaches the engine.
        validate_spec(
            &spec,
            &AgentCapacity::unbounded(self.inner.config.port_range.clone()),
        )?;
        tracing::debug!(task_id = %spec.task_id, agent_id, image = %spec.image, "launching task");
        self.inner.spawn(spec, agent_id, None)
    }

    async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), ContainerError> {
        let tasks = self.inner.lock();
        let entry = tasks
            .get(task_id)
            .ok_or_else(|| ContainerError::NotFound(task_id.to_string()))?;
        if entry.done {
            return Ok(());
        }
        let grace = grace
            .filter(|d| !d.is_zero())
            .or(entry.grace)
            .unwrap_or(self.inner.config.default_kill_grace);
        tracing::info!(
            task_id,
            grace_ms = grace.as_millis() as u64,
            "kill requested"
        );
        // Only the first kill counts; a second one must not restart the grace period.
        entry.kill_tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(grace);
                true
            } else {
                false
            }
        });
        Ok(())
    }

    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<LogStream, ContainerError> {
        let container = {
            let tasks = self.inner.lock();
            tasks
                .get(task_id)
                .and_then(|e| e.container_id.clone())
                .unwrap_or_else(|| container_name(task_id))
        };
        match self.inner.docker.inspect_container(&container, None).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(ContainerError::NoContainer(task_id.to_string())),
            Err(e) => return Err(ContainerError::docker("inspecting container for logs", e)),
        }
        let docker_options = LogsOptions {
            follow: options.follow,
            stdout: !options.stderr,
            stderr: options.stderr,
            ..Default::default()
        };
        let task_id = task_id.to_string();
        let stream = self
            .inner
            .docker
            .logs(&container, Some(docker_options))
            .map(move |item| match item {
                Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::StdErr { message })
                | Ok(LogOutput::Console { message })
                | Ok(LogOutput::StdIn { message }) => Ok(message),
                Err(e) => Err(ContainerError::docker(
                    format!("reading logs of task {task_id}"),
                    e,
                )),
            });
        Ok(Box::pin(stream))
    }

    async fn recover(&self, agent_id: &str) -> Result<Vec<RecoveredTask>, ContainerError> {
        let containers = self.inner.list(agent_id, &[]).await?;
        let mut recovered = Vec::new();
        for summary in containers {
            let Some(container_id) = summary.id.clone() else {
                continue;
            };
            let labels = summary.labels.clone().unwrap_or_default();
            let Some(task_id) = labels.get(LABEL_TASK_ID).cloned() else {
                continue;
            };
            if self.inner.lock().contains_key(&task_id) {
                continue;
            }
            let framework_id = labels.get(LABEL_FRAMEWORK_ID).cloned().unwrap_or_default();
            let spec = labels
                .get(LABEL_SPEC)
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| TaskSpec::decode(b.as_slice()).ok());
            let Some(inspect) = self.inner.inspect(&container_id).await else {
                continue;
            };
            let mut sink =
                StatusSink::new(self.inner.tx.clone(), &task_id, &framework_id, agent_id);
            sink.ports = ports_of(&inspect);
            let running = inspect
                .state
                .as_ref()
                .and_then(|s| s.status)
                .is_some_and(|s| {
                    matches!(
                        s,
                        ContainerStateStatusEnum::RUNNING
                            | ContainerStateStatusEnum::PAUSED
                            | ContainerStateStatusEnum::RESTARTING
                    )
                });
            let status = if running {
                self.inner.ports.hold(&sink.ports);
                let spec_for_supervisor = spec.clone().unwrap_or_else(|| TaskSpec {
                    task_id: task_id.clone(),
                    framework_id: framework_id.clone(),
                    ..Default::default()
                });
                let status = sink.status(
                    TaskState::TaskRunning,
                    TaskReason::ReasonReconciliation,
                    "recovered after an agent restart",
                    None,
                );
                self.inner.spawn(
                    spec_for_supervisor,
                    agent_id,
                    Some((container_id.clone(), sink)),
                )?;
                status
            } else {
                let (state, reason, message, exit_code) = outcome(Some(&inspect), None);
                let started = inspect
                    .state
                    .as_ref()
                    .and_then(|s| s.started_at.as_deref())
                    .and_then(parse_engine_time)
                    .is_some();
                let (state, reason, message) = if started {
                    (state, reason, format!("{message} while the agent was down"))
                } else {
                    (
                        TaskState::TaskFailed,
                        TaskReason::ReasonContainerError,
                        "the container was created but never started".to_string(),
                    )
                };
                self.inner.lock().insert(
                    task_id.clone(),
                    Entry {
                        grace: None,
                        kill_tx: watch::channel(None).0,
                        container_id: Some(container_id.clone()),
                        supervisor: None,
                        done: true,
                    },
                );
                sink.status(state, reason, message, exit_code)
            };
            tracing::info!(task_id = %task_id, container_id = %container_id, running, "recovered task");
            recovered.push(RecoveredTask {
                status,
                spec,
                container_id,
            });
        }
        Ok(recovered)
    }

    async fn remove_finished(
        &self,
        agent_id: &str,
        older_than: Duration,
    ) -> Result<usize, ContainerError> {
        let containers = self
            .inner
            .list(agent_id, &["exited", "dead", "created"])
            .await?;
        let now = crate::status::now_ms() / 1000;
        let mut removed = 0;
        for summary in containers {
            let Some(container_id) = summary.id.clone() else {
                continue;
            };
            let task_id = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TASK_ID).cloned())
                .unwrap_or_default();
            // A task still starting has a created container: not finished.
            if self.inner.lock().get(&task_id).is_some_and(|e| !e.done) {
                continue;
            }
            let Some(inspect) = self.inner.inspect(&container_id).await else {
                continue;
            };
            let finished = inspect
                .state
                .as_ref()
                .and_then(|s| s.finished_at.as_deref())
                .and_then(parse_engine_time);
            let age = finished.map_or(u64::MAX, |f| now.saturating_sub(f.max(0) as u64));
            if age < older_than.as_secs() {
                continue;
            }
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            match self
                .inner
                .docker
                .remove_container(&container_id, Some(options))
                .await
            {
                Ok(()) => {
                    removed += 1;
                    self.inner.lock().remove(&task_id);
                    tracing::info!(task_id = %task_id, container_id = %container_id, "removed finished container");
                }
                Err(e) => {
                    tracing::warn!(container_id = %container_id, error = %engine_message(&e), "removing finished container failed")
                }
            }
        }
        Ok(removed)
    }
}
