//! Containerizers for Corral agents: tasks as Docker containers, or simulated ones.
//!
//! # The model
//!
//! An agent hands every task it is asked to launch to a [`Containerizer`]. The containerizer
//! owns the task from then on: it starts one *supervisor* (a tokio task) per task, and that
//! supervisor reports every state the task goes through as a [`TaskStatus`] on the
//! `mpsc` channel the containerizer was built with:
//!
//! ```text
//! TASK_STAGING (image pull progress in `message`) → TASK_STARTING → TASK_RUNNING
//!     → TASK_FINISHED | TASK_FAILED (exit code, reason) | TASK_KILLED
//! ```
//!
//! A running task with a health check also gets `TASK_RUNNING` updates whose `healthy`
//! field changes; a kill first reports `TASK_KILLING`. Every terminal status carries the
//! exit code when the command ran, and a [`TaskReason`](corral_wire::pb::TaskReason):
//! `REASON_OOM` when the kernel killed it for memory, `REASON_HEALTH_CHECK_FAILED` when its
//! health check failed its retries, `REASON_IMAGE_PULL_FAILED` when its image could not be
//! pulled, `REASON_KILLED_BY_REQUEST` after [`Containerizer::kill`], and
//! `REASON_COMMAND_EXITED` otherwise. Every status has a fresh `update_id`, so the agent's
//! status-update manager can retry it and the master can de-duplicate it.
//!
//! Two implementations:
//!
//! - [`DockerContainerizer`] runs each task as a Docker container through the engine's API
//!   (bollard), with the task's CPU quota, memory limit, ports, network mode, volumes,
//!   environment and labels. Containers are named after their task
//!   ([`container_name`]) and labelled with [`LABEL_TASK_ID`], [`LABEL_FRAMEWORK_ID`] and
//!   [`LABEL_AGENT_ID`], so that [`Containerizer::recover`] finds them again after the
//!   agent restarts and [`Containerizer::remove_finished`] cleans them up.
//! - [`SimulatedContainerizer`] runs no containers: each task "runs" for a configured time
//!   and exits with a configured code. It is cheap (one sleeping tokio task per task), for
//!   scale tests with thousands of tasks on many simulated agents in one process.
//!
//! # The calling protocol
//!
//! 1. Build the containerizer with the sending half of a channel and keep draining the
//!    receiving half (supervisors wait when it is full).
//! 2. On start-up, call [`Containerizer::recover`] with the agent's id before launching
//!    anything: running containers get a supervisor again (their later statuses arrive on the
//!    channel), and tasks that ended while the agent was down are returned with their real
//!    exit code, for the agent to report. Recovery does *not* send them on the channel.
//! 3. Check each spec with [`validate_spec`] against the agent's free resources, then call
//!    [`Containerizer::launch`]. `launch` returns as soon as the supervisor is started;
//!    everything after that arrives as statuses.
//! 4. [`Containerizer::kill`] asks for a task to stop: SIGTERM, then SIGKILL after the grace
//!    period. The supervisor reports `TASK_KILLING`, then `TASK_KILLED`.
//! 5. [`Containerizer::logs`] streams a task's stdout or stderr, also after it ended, until
//!    its container is removed; call [`Containerizer::remove_finished`] periodically with
//!    the retention period.
//!
//! Dropping a containerizer stops its supervisors but leaves containers running, like an
//! agent process that exits: a new containerizer recovers them.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use corral_containerizer::{Containerizer, SimulatedConfig, SimulatedContainerizer};
//! use corral_wire::pb::{self, TaskState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! let config = SimulatedConfig { run_time: Duration::from_millis(5), exit_code: 0, ..Default::default() };
//! let containerizer: Arc<dyn Containerizer> = Arc::new(SimulatedContainerizer::new(config, tx));
//!
//! let spec = pb::TaskSpec {
//!     task_id: "hello-1".into(),
//!     image: "corral/busybox:test".into(),
//!     resources: Some(pb::Resources { cpus_milli: 100, mem_mb: 32, ..Default::default() }),
//!     ..Default::default()
//! };
//! containerizer.launch(spec, "agent-1").await.expect("launch");
//! loop {
//!     let status = rx.recv().await.expect("a status");
//!     if status.state == TaskState::TaskFinished as i32 {
//!         assert_eq!(status.exit_code, Some(0));
//!         break;
//!     }
//! }
//! # }
//! ```

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use corral_wire::pb::{TaskSpec, TaskStatus};
use futures::Stream;

mod docker;
mod simulated;
mod spec;
mod status;
mod util;

pub use docker::{DockerConfig, DockerContainerizer};
pub use simulated::{
    SimulatedConfig, SimulatedContainerizer, SIM_EXIT_CODE_LABEL, SIM_RUN_MS_LABEL,
};
pub use spec::{
    validate_spec, AgentCapacity, SpecError, GENERATION_LABEL, MIN_CPUS_MILLI, MIN_MEM_MB,
};
pub use util::container_name;

/// Label carrying the task id on every container Corral starts.
pub const LABEL_TASK_ID: &str = "corral.task_id";
/// Label carrying the framework id on every container Corral starts.
pub const LABEL_FRAMEWORK_ID: &str = "corral.framework_id";
/// Label carrying the id of the agent that started the container.
pub const LABEL_AGENT_ID: &str = "corral.agent_id";
/// Label carrying the task's encoded spec, so a recovered task keeps its health check and
/// kill grace period.
pub const LABEL_SPEC: &str = "corral.spec";

/// Kill grace period used when neither the kill nor the spec gives one.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// Image pulls started by this process's Docker containerizers (read by the agent's
/// `/metrics`).
pub static IMAGE_PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A stream of a task's output, chunk by chunk.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Bytes, ContainerError>> + Send>>;

/// Which output of a task to read, and whether to keep following it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new output until the task ends.
    pub follow: bool,
    /// Read stderr instead of stdout.
    pub stderr: bool,
}

/// A task found by [`Containerizer::recover`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredTask {
    /// Its latest state: `TASK_RUNNING` for a running task (its supervisor is attached
    /// again), or a terminal state with the real exit code for one that ended.
    pub status: TaskStatus,
    /// Its spec, when the container carried it.
    pub spec: Option<TaskSpec>,
    /// The container's id (empty for simulated tasks).
    pub container_id: String,
}

/// What can go wrong when asking a containerizer to do something.
///
/// Failures of a task itself (a bad image, a command that fails) are not errors: they are
/// reported as terminal statuses.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec was refused before anything reached the container runtime.
    #[error("invalid task spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// A task with this id is already known to this containerizer.
    #[error("task {0} already exists on this agent")]
    AlreadyExists(String),
    /// No task with this id is known.
    #[error("task {0} not found on this agent")]
    NotFound(String),
    /// The task has no container (for its logs): it never started, or its container was
    /// removed since.
    #[error(
        "task {0} has no container on this agent: it never started (its status says why), \
         or its container was removed since"
    )]
    NoContainer(String),
    /// The Docker engine could not be reached or refused a request.
    #[error("docker: {context}")]
    Docker {
        /// What was being done.
        context: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
}

impl ContainerError {
    pub(crate) fn docker(context: impl Into<String>, source: bollard::errors::Error) -> Self {
        ContainerError::Docker {
            context: context.into(),
            source,
        }
    }
}

/// Runs tasks for an agent. See the [crate documentation](crate) for the protocol.
///
/// Implementations are cheap to share behind `Arc<dyn Containerizer>`.
#[async_trait]
pub trait Containerizer: Send + Sync {
    /// Starts a supervisor for `spec` on the agent `agent_id`, which reports the task's
    /// statuses on the containerizer's channel. Returns once the supervisor is started.
    ///
    /// # Errors
    ///
    /// [`ContainerError::InvalidSpec`] when the spec is malformed (nothing is started),
    /// [`ContainerError::AlreadyExists`] when a task with this id is already supervised.
    async fn launch(&self, spec: TaskSpec, agent_id: &str) -> Result<(), ContainerError>;

    /// Asks the task to stop: SIGTERM, then SIGKILL after `grace` (or the spec's kill grace
    /// period, or [`DEFAULT_KILL_GRACE`]). The task then reports `TASK_KILLED`. Killing a task
    /// that already ended does nothing.
    ///
    /// # Errors
    ///
    /// [`ContainerError::NotFound`] when no task with this id is known.
    async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), ContainerError>;

    /// Streams the task's stdout (or stderr), from the start, following new output when
    /// asked. Works until the task's container is removed.
    ///
    /// # Errors
    ///
    /// [`ContainerError::NotFound`] when neither a task nor a container with this id exists.
    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<LogStream, ContainerError>;

    /// Finds the tasks agent `agent_id` left behind: running ones get a supervisor again,
    /// ended ones are returned with their terminal status. Call once, before any launch.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Docker`] when the engine cannot list containers.
    async fn recover(&self, agent_id: &str) -> Result<Vec<RecoveredTask>, ContainerError>;

    /// Removes agent `agent_id`'s tasks that ended more than `older_than` ago (their
    /// containers and logs). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Docker`] when the engine cannot list containers; failures to
    /// remove single containers are logged and skipped.
    async fn remove_finished(
        &self,
        agent_id: &str,
        older_than: Duration,
    ) -> Result<usize, ContainerError>;
}
