//! Building and sending task statuses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use corral_wire::pb::{PortMapping, TaskReason, TaskState, TaskStatus};
use tokio::sync::mpsc;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch, by this host's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh update id: unique across tasks, updates and agent restarts.
pub(crate) fn update_id() -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}-{seq:x}", rand::random::<u64>())
}

/// Whether a state ends a task.
pub(crate) fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
    )
}

/// One task's sending end: stamps each status with the task's ids, a timestamp and an
/// update id.
#[derive(Debug, Clone)]
pub(crate) struct StatusSink {
    tx: mpsc::Sender<TaskStatus>,
    task_id: String,
    framework_id: String,
    agent_id: String,
    /// Host ports given to the task, repeated on every status once known.
    pub(crate) ports: Vec<PortMapping>,
    /// The latest health, repeated on every status once known.
    pub(crate) healthy: Option<bool>,
}

impl StatusSink {
    pub(crate) fn new(
        tx: mpsc::Sender<TaskStatus>,
        task_id: &str,
        framework_id: &str,
        agent_id: &str,
    ) -> Self {
        StatusSink {
            tx,
            task_id: task_id.to_string(),
            framework_id: framework_id.to_string(),
            agent_id: agent_id.to_string(),
            ports: Vec::new(),
            healthy: None,
        }
    }

    /// The agent the task runs on.
    pub(crate) fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// A status of this task, not sent.
    pub(crate) fn status(
        &self,
        state: TaskState,
        reason: TaskReason,
        message: impl Into<String>,
        exit_code: Option<i32>,
    ) -> TaskStatus {
        TaskStatus {
            task_id: self.task_id.clone(),
            framework_id: self.framework_id.clone(),
            agent_id: self.agent_id.clone(),
            state: state as i32,
            reason: reason as i32,
            message: message.into(),
            exit_code,
            timestamp_ms: now_ms(),
            update_id: update_id(),
            healthy: self.healthy,
            port_mappings: self.ports.clone(),
        }
    }

    /// Sends a status; a closed channel (the agent is shutting down) is logged, not fatal.
    pub(crate) async fn send(
        &self,
        state: TaskState,
        reason: TaskReason,
        message: impl Into<String>,
        exit_code: Option<i32>,
    ) {
        let status = self.status(state, reason, message, exit_code);
        tracing::debug!(task_id = %self.task_id, state = ?state, reason = ?reason, "task status");
        if self.tx.send(status).await.is_err() {
            tracing::warn!(task_id = %self.task_id, state = ?state, "status channel closed");
        }
    }
}
