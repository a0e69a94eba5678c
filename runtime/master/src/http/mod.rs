//! The master's HTTP surface: a read-only JSON API, Prometheus metrics and the web UI.
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the live web UI (one HTML file, compiled in) |
//! | `/health` | `{"status":"ok"}` while the registry answers |
//! | `/api/v1/state` | everything below in one document |
//! | `/api/v1/agents`, `/api/v1/tasks`, `/api/v1/frameworks`, `/api/v1/policies` | lists |
//! | `/metrics` | Prometheus text format |
//!
//! The shapes are documented in `docs/api.md`. The server is hyper (HTTP/1.1) on the
//! actix system's own tokio runtime: each connection is a local task, and every handler
//! reads the books by sending the [`RegistryActor`] a message, like the QUIC handlers do.

pub mod api;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use actix::Addr;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::allocator_actor::{AllocatorActor, AllocatorHistory};
use crate::registry_actor::{ListAgents, ListTasks, RegistryActor};
use crate::registry_frameworks::{ListFrameworks, PolicyHistories};

/// The web UI: one file, no build step.
const UI_HTML: &str = include_str!("ui.html");

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

/// What every request handler needs.
struct Ctx {
    registry: Addr<RegistryActor>,
    allocator: Addr<AllocatorActor>,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    started_ms: u64,
}

/// Binds `addr` for [`serve`] (first, so that a port in use stops the master before it
/// starts anything); with the bound address (useful with port 0).
///
/// # Errors
///
/// [`HttpError`] when the address cannot be bound.
pub fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), HttpError> {
    let bind = || -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        Ok((tokio::net::TcpListener::from_std(std_listener)?, local))
    };
    bind().map_err(|source| HttpError { addr, source })
}

/// Serves HTTP on `listener` (bound to `http_addr`) from the current actix system until
/// it stops.
pub fn serve(
    (listener, http_addr): (tokio::net::TcpListener, SocketAddr),
    registry: Addr<RegistryActor>,
    allocator: Addr<AllocatorActor>,
    quic_addr: SocketAddr,
) {
    let ctx = Rc::new(Ctx {
        registry,
        allocator,
        quic_addr,
        http_addr,
        started_ms: crate::now_ms(),
    });
    actix::spawn(accept_loop(listener, ctx).instrument(tracing::info_span!("http")));
    tracing::info!(addr = %http_addr, "http listening");
}

async fn accept_loop(listener: tokio::net::TcpListener, ctx: Rc<Ctx>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        actix::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
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

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    text.push('\n');
    respond(status, "application/json", text)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message.into()}}),
    )
}

fn unavailable() -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the master is shutting down",
    )
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed: this API is read-only", req.method()),
        );
    }
    let path = req.uri().path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let registry = &ctx.registry;
    match path {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", UI_HTML),
        "/health" => match registry.send(ListAgents).await {
            Ok(_) => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Err(_) => unavailable(),
        },
        "/metrics" => {
            let (Ok(agents), Ok(tasks)) = (
                registry.send(ListAgents).await,
                registry
                    .send(ListTasks {
                        framework_id: String::new(),
                    })
                    .await,
            ) else {
                return unavailable();
            };
            respond(
                StatusCode::OK,
                corral_metrics::CONTENT_TYPE,
                metrics::render(&metrics::METRICS, &agents, &tasks),
            )
        }
        "/api/v1/agents" => match registry.send(ListAgents).await {
            Ok(agents) => json_response(
                StatusCode::OK,
                &Value::Array(agents.iter().map(api::agent).collect()),
            ),
            Err(_) => unavailable(),
        },
        "/api/v1/tasks" => match registry
            .send(ListTasks {
                framework_id: String::new(),
            })
            .await
        {
            Ok(tasks) => json_response(
                StatusCode::OK,
                &Value::Array(tasks.iter().map(api::task).collect()),
            ),
            Err(_) => unavailable(),
        },
        "/api/v1/frameworks" => match registry
            .send(ListFrameworks {
                name: String::new(),
            })
            .await
        {
            Ok(Ok(list)) => json_response(StatusCode::OK, &api::frameworks(&list)),
            _ => unavailable(),
        },
        "/api/v1/policies" => match policy_history(ctx).await {
            Some(history) => json_response(StatusCode::OK, &api::policies(&history)),
            None => unavailable(),
        },
        "/api/v1/state" => {
            let (Ok(agents), Ok(tasks), Some(history), Ok(Ok(frameworks))) = (
                registry.send(ListAgents).await,
                registry
                    .send(ListTasks {
                        framework_id: String::new(),
                    })
                    .await,
                policy_history(ctx).await,
                registry
                    .send(ListFrameworks {
                        name: String::new(),
                    })
                    .await,
            ) else {
                return unavailable();
            };
            json_response(
                StatusCode::OK,
                &json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "now_ms": crate::now_ms(),
                    "started_ms": ctx.started_ms,
                    "quic_addr": ctx.quic_addr.to_string(),
                    "http_addr": ctx.http_addr.to_string(),
                    "agents": agents.iter().map(api::agent).collect::<Vec<_>>(),
                    "frameworks": api::frameworks(&frameworks),
                    "tasks": tasks.iter().map(api::task).collect::<Vec<_>>(),
                    "policies": api::policies(&history),
                }),
            )
        }
        other => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such path {other}; see docs/api.md"),
        ),
    }
}

/// Every policy record, in the order of [`PolicyHistories`].
async fn policy_history(ctx: &Ctx) -> Option<Vec<corral_policy::SwapRecord>> {
    let allocator = ctx.allocator.send(AllocatorHistory).await.ok()?;
    ctx.registry.send(PolicyHistories { allocator }).await.ok()
}
