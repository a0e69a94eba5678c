//! The harness: a containerizer on the real engine for one test, with its own agent id, a
//! record of every status, waits with deadlines, and cleanup of every container it made.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use corral_containerizer::{Containerizer, DockerConfig, DockerContainerizer, LogOptions};
use corral_wire::pb::{self, PortRange, TaskSpec, TaskState, TaskStatus};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The local test image; `scripts/test` builds it from Debian's busybox-static.
pub const IMAGE: &str = "corral/busybox:test";
/// The agent's host port range in these tests.
pub const PORT_RANGE: RangeInclusive<u32> = 31000..=31999;

pub struct Harness {
    pub c: DockerContainerizer,
    rx: mpsc::Receiver<TaskStatus>,
    history: Vec<TaskStatus>,
    run_id: String,
    agent_id: String,
    cleaned: bool,
}

pub fn state(s: &TaskStatus) -> TaskState {
    TaskState::try_from(s.state).unwrap_or(TaskState::Unspecified)
}

fn terminal(s: &TaskStatus) -> bool {
    matches!(
        state(s),
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
    )
}

/// A spec for the test image running `argv`, with small limits.
pub fn spec(task_id: &str, argv: &[&str]) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        framework_id: "fw-test".into(),
        name: task_id.into(),
        image: IMAGE.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        resources: Some(pb::Resources {
            cpus_milli: 250,
            mem_mb: 64,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn containerizer(tx: mpsc::Sender<TaskStatus>) -> DockerContainerizer {
    let config = DockerConfig {
        port_range: vec![PortRange {
            begin: *PORT_RANGE.start(),
            end: *PORT_RANGE.end(),
        }],
        ..Default::default()
    };
    match DockerContainerizer::connect(config, tx).await {
        Ok(c) => c,
        Err(e) => panic!(
            "the Docker engine does not answer ({e}); these tests run real containers: \
             start dockerd (or run scripts/test, which does) and try again"
        ),
    }
}

impl Harness {
    /// A containerizer for one test, with an agent id no other test or run shares.
    pub async fn new(name: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "corral_containerizer=debug".into()),
            )
            .with_test_writer()
            .try_init();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let run_id = format!("{name}-{}-{:x}", std::process::id(), nanos % (1 << 40));
        let (tx, rx) = mpsc::channel(256);
        let c = containerizer(tx).await;
        if let Err(e) = c.docker().inspect_image(IMAGE).await {
            panic!("the test image {IMAGE} is missing ({e}); run scripts/test to build it");
        }
        Harness {
            c,
            rx,
            history: Vec::new(),
            agent_id: format!("agent-{run_id}"),
            run_id,
            cleaned: false,
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent_id
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A task id unique to this run.
    pub fn task_id(&self, name: &str) -> String {
        format!("{name}-{}", self.run_id)
    }

    /// Drops the containerizer and makes a new one, as an agent restart does.
    pub async fn restart(&mut self) {
        let (tx, rx) = mpsc::channel(256);
        let fresh = containerizer(tx).await;
        drop(std::mem::replace(&mut self.c, fresh));
        self.rx = rx;
        self.history.clear();
    }

    /// The first status of `task_id` matching `pred`, waiting up to `within`.
    pub async fn until(
        &mut self,
        task_id: &str,
        within: Duration,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + within;
        let mut checked = 0;
        loop {
            if let Some(found) = self.history[checked..]
                .iter()
                .find(|s| s.task_id == task_id && pred(s))
            {
                return found.clone();
            }
            checked = self.history.len();
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(status)) => self.history.push(status),
                Ok(None) => panic!("status channel closed while waiting for {task_id}"),
                Err(_) => panic!(
                    "no matching status for {task_id} within {within:?}; seen: {:#?}",
                    self.of(task_id)
                ),
            }
        }
    }

    pub async fn until_state(
        &mut self,
        task_id: &str,
        wanted: TaskState,
        within: Duration,
    ) -> TaskStatus {
        self.until(task_id, within, |s| state(s) == wanted).await
    }

    /// The task's terminal status.
    pub async fn terminal(&mut self, task_id: &str, within: Duration) -> TaskStatus {
        self.until(task_id, within, terminal).await
    }

    /// Every status of the task, up to and including its terminal one.
    pub async fn until_terminal(&mut self, task_id: &str, within: Duration) -> Vec<TaskStatus> {
        self.terminal(task_id, within).await;
        self.of(task_id)
    }

    fn of(&self, task_id: &str) -> Vec<TaskStatus> {
        self.history
            .iter()
            .filter(|s| s.task_id == task_id)
            .cloned()
            .collect()
    }

    /// All of a task's output as text.
    pub async fn logs(&self, task_id: &str, options: LogOptions) -> String {
        let mut stream = self
            .c
            .logs(task_id, options)
            .await
            .unwrap_or_else(|e| panic!("logs of {task_id}: {e}"));
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("log chunk: {e}")));
            }
        })
        .await;
        assert!(read.is_ok(), "logs of {task_id} did not end");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Removes every container this test's agent made.
    pub async fn cleanup(mut self) {
        remove_all(self.c.docker(), &self.agent_id).await;
        self.cleaned = true;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test still cleans up: on a thread of its own, since this one may be
        // inside the test's runtime.
        let agent_id = self.agent_id.clone();
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(docker) = Docker::connect_with_local_defaults() {
                    if let Ok(docker) = docker.negotiate_version().await {
                        remove_all(&docker, &agent_id).await;
                    }
                }
            });
        });
        let _ = cleaner.join();
    }
}

async fn remove_all(docker: &Docker, agent_id: &str) {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("corral.agent_id={agent_id}")],
    );
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        eprintln!("cleanup: listing containers of {agent_id} failed");
        return;
    };
    for id in containers.into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = docker.remove_container(&id, Some(options)).await {
            eprintln!("cleanup: removing container {id} failed: {e}");
        }
    }
}

/// GETs `/` from 127.0.0.1:`port` until it answers 200, up to `within`; returns the
/// response.
pub async fn http_get_until(port: u32, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        match http_get(port).await {
            Ok(response) if response.starts_with("HTTP/1.") && response.contains(" 200 ") => {
                return response
            }
            Ok(response) => last_error = format!("answered {response:?}"),
            Err(e) => last_error = e.to_string(),
        }
        // The server may still be starting; try again shortly.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("127.0.0.1:{port} not reachable within {within:?}: {last_error}");
}

async fn http_get(port: u32) -> std::io::Result<String> {
    let port = u16::try_from(port).map_err(std::io::Error::other)?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
