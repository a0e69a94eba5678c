//! The agent's HTTP surface: `/metrics` in the Prometheus text format and `/health`.
//!
//! Served by hyper on the actix system's tokio runtime. The counters are one process-wide
//! set ([`METRICS`]), fed with one line where a thing happens; the tasks by state are asked
//! of the [`AgentActor`] on each scrape.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use actix::Addr;
use bytes::Bytes;
use corral_metrics::{CounterVec, Histogram, Text, LATENCY_BUCKETS};
use corral_wire::pb::{self, TaskState};
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::agent_actor::{AgentActor, ListAgentTasks};

/// The agent's metrics. One agent runs per process, so one set per process.
pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::default);

/// Everything the agent counts.
#[derive(Debug)]
pub struct AgentMetrics {
    /// From the launch message to `TASK_RUNNING`.
    pub launch_seconds: Histogram,
    /// Status updates reported by the containerizer, by state.
    pub status_updates: CounterVec,
    started: Mutex<HashMap<String, Instant>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            launch_seconds: Histogram::new(LATENCY_BUCKETS),
            status_updates: CounterVec::new("state"),
            started: Mutex::new(HashMap::new()),
        }
    }
}

impl AgentMetrics {
    fn started(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A launch arrived for `task_id`: its latency runs until it reports running.
    pub fn launch_started(&self, task_id: &str) {
        self.started().insert(task_id.to_owned(), Instant::now());
    }

    /// A status from the containerizer: counted, and ends a launch's latency when running.
    pub fn status(&self, status: &pb::TaskStatus) {
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        self.status_updates.inc(state.as_str_name());
        if state == TaskState::TaskRunning || state.is_terminal() {
            let start = self.started().remove(&status.task_id);
            if let (TaskState::TaskRunning, Some(start)) = (state, start) {
                self.launch_seconds.observe(start.elapsed().as_secs_f64());
            }
        }
    }
}

/// The scrape: the counters above and the agent's tasks by state.
pub fn render(m: &AgentMetrics, tasks: &[pb::TaskInfo]) -> String {
    let state_of = |t: &pb::TaskInfo| {
        t.status
            .as_ref()
            .and_then(|s| TaskState::try_from(s.state).ok())
            .unwrap_or(TaskState::TaskStaging)
    };
    let mut t = Text::default();
    let live = tasks.iter().filter(|t| !state_of(t).is_terminal()).count();
    t.gauge(
        "corral_agent_containers",
        "Tasks on this agent that have or are getting a container (not ended).",
        live as f64,
    );
    let states = [
        TaskState::TaskStaging,
        TaskState::TaskStarting,
        TaskState::TaskRunning,
        TaskState::TaskKilling,
    ];
    let by_state: Vec<(&str, f64)> = states
        .iter()
        .map(|s| {
            let n = tasks.iter().filter(|t| state_of(t) == *s).count();
            (s.as_str_name(), n as f64)
        })
        .collect();
    t.gauge_vec(
        "corral_agent_tasks",
        "Tasks on this agent that have not ended, by state.",
        "state",
        &by_state,
    );
    t.histogram(
        "corral_agent_launch_duration_seconds",
        "Time from a launch message to the task running.",
        &m.launch_seconds,
    );
    t.counter(
        "corral_agent_image_pulls_total",
        "Image pulls started.",
        corral_containerizer::IMAGE_PULLS.load(std::sync::atomic::Ordering::Relaxed),
    );
    t.counter_vec(
        "corral_agent_status_updates_total",
        "Task status updates reported by the containerizer, by state.",
        &m.status_updates,
    );
    t.finish()
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve HTTP on {addr} (is the port taken? choose another with --http)")]
pub struct HttpError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` for [`serve`] (first, so that a port in use stops the agent before it
/// starts anything).
///
/// # Errors
/// [`HttpError`] when the address cannot be bound.
pub fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    };
    bind().map_err(|source| HttpError { addr, source })
}

/// Serves `/metrics` and `/health` on `listener` from the current actix system.
pub fn serve(listener: tokio::net::TcpListener, actor: Addr<AgentActor>) {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "http listening");
    }
    actix::spawn(accept_loop(listener, Rc::new(actor)).instrument(tracing::info_span!("http")));
}

async fn accept_loop(listener: tokio::net::TcpListener, actor: Rc<Addr<AgentActor>>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let actor = actor.clone();
        actix::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let actor = actor.clone();
                async move { Ok::<_, Infallible>(handle(req, &actor).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%remote, error = %e, "http connection ended");
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, code: &str, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    respond(status, "application/json", format!("{body}\n"))
}

async fn handle<B>(req: Request<B>, actor: &Addr<AgentActor>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed: this API is read-only", req.method()),
        );
    }
    let Ok(tasks) = actor.send(ListAgentTasks).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent is shutting down".into(),
        );
    };
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            corral_metrics::CONTENT_TYPE,
            render(&METRICS, &tasks),
        ),
        "/health" | "/health/" => respond(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}\n".into(),
        ),
        other => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such path {other}: the agent serves /metrics and /health"),
        ),
    }
}
