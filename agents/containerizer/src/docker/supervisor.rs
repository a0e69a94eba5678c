//! One supervisor per task: pulls the image if needed, creates and starts the container,
//! runs its health check, carries out kills, waits for it to exit and reports every state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, CreateImageInfo};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, RemoveContainerOptions,
};
use corral_wire::pb::{NetworkMode, PortMapping, TaskReason, TaskSpec, TaskState};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::health::{self, HealthEvent};
use super::{create, Inner};
use crate::status::StatusSink;
use crate::util::split_image;

/// How long after a SIGKILL the engine did not take it is sent again: first, and at most
/// (the wait doubles at each failure).
const SIGKILL_RETRY_FIRST: Duration = Duration::from_secs(1);
const SIGKILL_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why the supervisor is stopping the container.
#[derive(Debug, Clone)]
pub(super) enum Ending {
    Killed,
    Unhealthy(String),
}

/// How a task ended before its container ran.
struct Early {
    state: TaskState,
    reason: TaskReason,
    message: String,
}

impl Early {
    fn failed(reason: TaskReason, message: impl Into<String>) -> Self {
        Early {
            state: TaskState::TaskFailed,
            reason,
            message: message.into(),
        }
    }

    fn killed() -> Self {
        Early {
            state: TaskState::TaskKilled,
            reason: TaskReason::ReasonKilledByRequest,
            message: "killed before the container started".into(),
        }
    }
}

pub(super) struct Supervisor {
    pub(super) inner: Arc<Inner>,
    pub(super) spec: TaskSpec,
    pub(super) name: String,
    pub(super) sink: StatusSink,
    pub(super) kill_rx: watch::Receiver<Option<Duration>>,
}

/// A short form of an engine error: its message without the status-code preamble.
pub(super) fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Supervisor {
    fn task_id(&self) -> &str {
        &self.spec.task_id
    }

    fn kill_requested(&self) -> bool {
        self.kill_rx.borrow().is_some()
    }

    /// Supervises a new task from its first status to its last.
    pub(super) async fn run_new(mut self) {
        self.sink
            .send(
                TaskState::TaskStaging,
                TaskReason::ReasonUnspecified,
                "",
                None,
            )
            .await;
        match self.start().await {
            Ok(container_id) => self.watch(container_id).await,
            Err(early) => {
                tracing::info!(task_id = %self.task_id(), state = ?early.state, message = %early.message, "task ended before running");
                self.inner.ports.release(&self.sink.ports);
                self.inner.mark_done(self.task_id());
                self.sink
                    .send(early.state, early.reason, early.message, None)
                    .await;
            }
        }
    }

    /// Supervises a recovered running container until it ends.
    pub(super) async fn run_recovered(self, container_id: String) {
        self.watch(container_id).await;
    }

    /// Pulls if needed, creates and starts the container; returns its id.
    async fn start(&mut self) -> Result<String, Early> {
        let ports = self
            .inner
            .ports
            .allocate(&self.spec.port_mappings)
            .map_err(|m| Early::failed(TaskReason::ReasonContainerError, m))?;
        self.sink.ports = ports;
        let body = create::container_body(&self.spec, &self.agent_id(), &self.sink.ports);
        let options = CreateContainerOptions {
            name: Some(self.name.clone()),
            ..Default::default()
        };
        let docker = self.inner.docker.clone();
        let mut pulled = false;
        let container_id = loop {
            if self.kill_requested() {
                return Err(Early::killed());
            }
            match docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(created) => break created.id,
                Err(e) if status_code(&e) == Some(404) && !pulled => {
                    self.pull().await?;
                    pulled = true;
                }
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(Early::failed(
                        TaskReason::ReasonImagePullFailed,
                        format!(
                            "image {} is still missing after a pull: {}",
                            self.spec.image,
                            engine_message(&e)
                        ),
                    ));
                }
                Err(e) if status_code(&e) == Some(409) => {
                    return Err(Early::failed(
                        TaskReason::ReasonContainerError,
                        format!(
                            "a container named {} already exists; task ids must be unique",
                            self.name
                        ),
                    ));
                }
                Err(e) => {
                    return Err(Early::failed(
                        TaskReason::ReasonContainerError,
                        format!("creating the container failed: {}", engine_message(&e)),
                    ));
                }
            }
        };
        self.inner.set_container(self.task_id(), &container_id);
        self.sink
            .send(
                TaskState::TaskStarting,
                TaskReason::ReasonUnspecified,
                "",
                None,
            )
            .await;
        if self.kill_requested() {
            self.remove_quietly(&container_id).await;
            return Err(Early::killed());
        }
        if let Err(e) = docker.start_container(&container_id, None).await {
            return Err(Early::failed(
                TaskReason::ReasonContainerError,
                format!("starting the container failed: {}", engine_message(&e)),
            ));
        }
        tracing::info!(task_id = %self.task_id(), container_id = %container_id, "container started");
        self.sink
            .send(
                TaskState::TaskRunning,
                TaskReason::ReasonUnspecified,
                "",
                None,
            )
            .await;
        Ok(container_id)
    }

    fn agent_id(&self) -> String {
        self.sink.agent_id().to_string()
    }

    /// Pulls the task's image, reporting progress as `TASK_STAGING` messages.
    async fn pull(&mut self) -> Result<(), Early> {
        let image = self.spec.image.clone();
        let (repo, tag) = split_image(&image);
        tracing::info!(task_id = %self.task_id(), image = %image, "pulling image");
        crate::IMAGE_PULLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sink
            .send(
                TaskState::TaskStaging,
                TaskReason::ReasonUnspecified,
                format!("pulling image {image}"),
                None,
            )
            .await;
        let options = CreateImageOptions {
            from_image: Some(repo),
            tag: Some(tag),
            ..Default::default()
        };
        let mut stream = self.inner.docker.create_image(Some(options), None, None);
        let mut last_sent = Instant::now();
        let every = self.inner.config.pull_progress_interval;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = wait_for_kill(&mut self.kill_rx) => return Err(Early::killed()),
            };
            match item {
                None => break,
                Some(Ok(CreateImageInfo {
                    error_detail: Some(detail),
                    ..
                })) => {
                    let why = detail.message.unwrap_or_else(|| "unknown error".into());
                    return Err(pull_failed(&image, &why));
                }
                Some(Ok(info)) => {
                    if last_sent.elapsed() >= every {
                        last_sent = Instant::now();
                        self.sink
                            .send(
                                TaskState::TaskStaging,
                                TaskReason::ReasonUnspecified,
                                progress_message(&image, &info),
                                None,
                            )
                            .await;
                    }
                }
                Some(Err(e)) => return Err(pull_failed(&image, &engine_message(&e))),
            }
        }
        self.sink
            .send(
                TaskState::TaskStaging,
                TaskReason::ReasonUnspecified,
                format!("pulled image {image}"),
                None,
            )
            .await;
        Ok(())
    }

    /// Waits for the container to exit, carrying out kills and the health check meanwhile,
    /// then reports how it ended.
    async fn watch(mut self, container_id: String) {
        let docker = self.inner.docker.clone();
        let (health_tx, mut health_rx) = mpsc::channel(4);
        let mut health_task = None;
        if let Some(check) = self.spec.health_check.clone() {
            let ip = self.container_ip(&container_id).await;
            let target = health::Target {
                docker: docker.clone(),
                container_id: container_id.clone(),
                ip,
            };
            health_task = Some(AbortOnDrop(tokio::spawn(health::run(
                target, check, health_tx,
            ))));
        } else {
            drop(health_tx);
        }
        let mut health_open = health_task.is_some();
        let exited = wait_exit(&self.inner, &container_id);
        tokio::pin!(exited);
        let mut ending: Option<Ending> = None;
        let mut kill_at: Option<Instant> = None;
        let mut kill_open = true;
        // The wait before the latest SIGKILL sent again (none before a first failure).
        let mut sigkill_retry: Option<Duration> = None;

        loop {
            tokio::select! {
                () = &mut exited => break,
                changed = self.kill_rx.changed(), if kill_open && ending.is_none() => {
                    if changed.is_err() {
                        kill_open = false;
                        continue;
                    }
                    let Some(grace) = *self.kill_rx.borrow_and_update() else { continue };
                    ending = Some(Ending::Killed);
                    kill_at = Some(self.terminate(&container_id, grace, "killing").await);
                }
                event = health_rx.recv(), if health_open => match event {
                    None => health_open = false,
                    Some(HealthEvent::Healthy(healthy)) => {
                        self.sink.healthy = Some(healthy);
                        if ending.is_none() {
                            let message = if healthy { "healthy" } else { "unhealthy" };
                            self.sink.send(TaskState::TaskRunning, TaskReason::ReasonUnspecified, message, None).await;
                        }
                    }
                    Some(HealthEvent::Unhealthy(why)) => {
                        health_open = false;
                        self.sink.healthy = Some(false);
                        if ending.is_none() {
                            tracing::info!(task_id = %self.task_id(), %why, "task unhealthy");
                            ending = Some(Ending::Unhealthy(why));
                            let grace = self.inner.grace_for(&self.spec, None);
                            kill_at = Some(self.terminate(&container_id, grace, "unhealthy").await);
                        }
                    }
                },
                () = sleep_until(kill_at), if kill_at.is_some() => {
                    if sigkill_retry.is_none() {
                        tracing::info!(task_id = %self.task_id(), "grace period over; sending sigkill");
                    } else {
                        tracing::info!(task_id = %self.task_id(), "sending sigkill again");
                    }
                    // Until the engine takes it: a task asked to die is not left running
                    // because the engine failed once. Retries back off, to a limit.
                    kill_at = None;
                    if !signal(&self.inner, &container_id, "SIGKILL").await {
                        let wait = sigkill_retry.map_or(SIGKILL_RETRY_FIRST, |w| (w * 2).min(SIGKILL_RETRY_MAX));
                        sigkill_retry = Some(wait);
                        kill_at = Some(Instant::now() + wait);
                    }
                }
            }
        }
        drop(health_task);

        let inspect = self.inner.inspect(&container_id).await;
        let (state, reason, message, exit_code) = outcome(inspect.as_ref(), ending);
        self.inner.ports.release(&self.sink.ports);
        self.inner.mark_done(self.task_id());
        tracing::info!(task_id = %self.task_id(), state = ?state, exit_code = ?exit_code, "task ended");
        self.sink.send(state, reason, message, exit_code).await;
    }

    /// Sends SIGTERM and reports `TASK_KILLING`; returns when SIGKILL is due.
    async fn terminate(&self, container_id: &str, grace: Duration, why: &str) -> Instant {
        tracing::info!(task_id = %self.task_id(), grace_ms = grace.as_millis() as u64, why, "sending sigterm");
        self.sink
            .send(
                TaskState::TaskKilling,
                TaskReason::ReasonUnspecified,
                why,
                None,
            )
            .await;
        signal(&self.inner, container_id, "SIGTERM").await;
        Instant::now() + grace
    }

    async fn container_ip(&self, container_id: &str) -> Option<IpAddr> {
        if self.spec.network_mode == NetworkMode::NetworkHost as i32 {
            return Some(IpAddr::from([127, 0, 0, 1]));
        }
        let inspect = self.inner.inspect(container_id).await?;
        inspect
            .network_settings?
            .networks?
            .values()
            .filter_map(|n| n.ip_address.as_deref())
            .find_map(|ip| ip.parse().ok())
    }

    async fn remove_quietly(&self, container_id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self
            .inner
            .docker
            .remove_container(container_id, Some(options))
            .await
        {
            tracing::warn!(container_id, error = %e, "removing container failed");
        }
    }
}

/// The terminal state of a container that exited, from its inspection.
pub(super) fn outcome(
    inspect: Option<&ContainerInspectResponse>,
    ending: Option<Ending>,
) -> (TaskState, TaskReason, String, Option<i32>) {
    let state = inspect.and_then(|i| i.state.clone()).unwrap_or_default();
    let exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    let oom = state.oom_killed.unwrap_or(false);
    let error = state.error.unwrap_or_default();
    let code_text = exit_code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
    match ending {
        Some(Ending::Killed) => (
            TaskState::TaskKilled,
            TaskReason::ReasonKilledByRequest,
            format!("killed; exit code {code_text}"),
            exit_code,
        ),
        Some(Ending::Unhealthy(why)) => (
            TaskState::TaskFailed,
            TaskReason::ReasonHealthCheckFailed,
            format!("killed as unhealthy: {why}"),
            exit_code,
        ),
        None if oom => (
            TaskState::TaskFailed,
            TaskReason::ReasonOom,
            format!("killed for exceeding its memory limit; exit code {code_text}"),
            exit_code,
        ),
        None if inspect.is_none() => (
            TaskState::TaskFailed,
            TaskReason::ReasonContainerError,
            "the container vanished; exit code unknown".to_string(),
            None,
        ),
        None if exit_code == Some(0) => (
            TaskState::TaskFinished,
            TaskReason::ReasonCommandExited,
            "exited 0".to_string(),
            exit_code,
        ),
        None if !error.is_empty() => (
            TaskState::TaskFailed,
            TaskReason::ReasonContainerError,
            format!("container error: {error}"),
            exit_code,
        ),
        None => (
            TaskState::TaskFailed,
            TaskReason::ReasonCommandExited,
            format!("exited {code_text}"),
            exit_code,
        ),
    }
}

fn pull_failed(image: &str, why: &str) -> Early {
    Early::failed(
        TaskReason::ReasonImagePullFailed,
        format!("pulling image {image} failed: {why}"),
    )
}

fn progress_message(image: &str, info: &CreateImageInfo) -> String {
    let mut message = format!("pulling image {image}");
    if let Some(status) = &info.status {
        message.push_str(": ");
        message.push_str(status);
    }
    if let Some(id) = &info.id {
        message.push(' ');
        message.push_str(id);
    }
    if let Some(detail) = &info.progress_detail {
        if let (Some(current), Some(total)) = (detail.current, detail.total) {
            message.push_str(&format!(" ({current}/{total} bytes)"));
        }
    }
    message
}

async fn wait_for_kill(rx: &mut watch::Receiver<Option<Duration>>) {
    if rx.wait_for(Option::is_some).await.is_err() {
        // No one can ask for a kill any more.
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `signal` to the container; false if the engine did not take it (the container
/// not running any more, or gone, counts as taken: that is what a kill wants).
async fn signal(inner: &Inner, container_id: &str, signal: &str) -> bool {
    let options = KillContainerOptions {
        signal: signal.to_string(),
    };
    match inner
        .docker
        .kill_container(container_id, Some(options))
        .await
    {
        Ok(()) => true,
        Err(e) if matches!(status_code(&e), Some(404 | 409)) => true,
        Err(e) => {
            tracing::warn!(container_id, signal, error = %e, "signalling container failed");
            false
        }
    }
}

/// Resolves when the container is not running any more. Survives dropped connections and
/// engine restarts by asking again.
async fn wait_exit(inner: &Inner, container_id: &str) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut stream = inner.docker.wait_container(container_id, None);
        match stream.next().await {
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => return,
            Some(Err(e)) if status_code(&e) == Some(404) => return,
            Some(Err(e)) => {
                tracing::warn!(container_id, error = %e, "waiting for container failed")
            }
            None => tracing::warn!(container_id, "wait for container ended without an answer"),
        }
        match inner.inspect(container_id).await {
            Some(i) if i.state.as_ref().and_then(|s| s.running) == Some(false) => return,
            _ => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Mapped ports of a container, from its inspection (for recovered tasks).
pub(super) fn ports_of(inspect: &ContainerInspectResponse) -> Vec<PortMapping> {
    let Some(bindings) = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, list) in bindings {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u32>() else {
            continue;
        };
        for b in list.iter().flatten() {
            let host_port = b
                .host_port
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            out.push(PortMapping {
                container_port,
                host_port,
                protocol: protocol.to_string(),
                host_ip: b.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out
}
