//! Accepting connections and dispatching their streams.
//!
//! Every stream starts with one message that says what it is for: `RegisterAgent` makes
//! it an agent's control stream (handed to an [`AgentSession`]); `Request` makes it a
//! client request answered with one `Response`; `Ping` makes it an echo stream (used by
//! `corral bench wire`). A stream whose first frame is garbage, oversized, truncated or of
//! another protocol version gets an error envelope and its connection is closed.

use std::collections::BTreeMap;

use actix::Addr;
use corral_core::agents::Registration;
use corral_transport::{FramedRecv, FramedSend, TransportError};
use corral_wire::pb::{self, envelope::Body};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::agent_session::{body_name, AgentSession};
use crate::allocator_actor::{AllocatorActor, AllocatorHistory, SwapAllocator};
use crate::registry_actor::{
    KillTask, ListAgents, ListTasks, RegisterAgent, RegistryActor, RunTask, TaskAgentConnection,
};
use crate::MasterConfig;

/// The actors a connection's streams talk to.
#[derive(Clone)]
pub struct Services {
    /// The registry.
    pub registry: Addr<RegistryActor>,
    /// The allocator.
    pub allocator: Addr<AllocatorActor>,
}

/// Accepts connections until the endpoint closes.
pub async fn accept_loop(endpoint: quinn::Endpoint, services: Services, config: MasterConfig) {
    while let Some(incoming) = endpoint.accept().await {
        let services = services.clone();
        let config = config.clone();
        let remote = incoming.remote_address();
        actix::spawn(
            async move {
                match incoming.await {
                    Ok(conn) => {
                        let _open = crate::http::metrics::METRICS.connection_opened();
                        serve_connection(conn, services, config).await
                    }
                    Err(e) => tracing::info!(error = %e, "handshake failed"),
                }
            }
            .instrument(tracing::info_span!("conn", %remote)),
        );
    }
}

async fn serve_connection(conn: quinn::Connection, services: Services, config: MasterConfig) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(reason = %e, "connection ended");
                return;
            }
        };
        let conn = conn.clone();
        let services = services.clone();
        let max_frame = config.max_frame;
        let hb = config.heartbeat_interval;
        actix::spawn(async move {
            let mut send = FramedSend::new(send);
            let mut recv = FramedRecv::new(recv, max_frame);
            let first = recv.recv().await;
            match serve_stream(&conn, &mut send, first, recv, services, hb).await {
                Ok(()) => {}
                // The peer went away: nothing to tell it.
                Err(
                    e @ (TransportError::Connection(_)
                    | TransportError::Write(_)
                    | TransportError::Read(_)),
                ) => tracing::debug!(error = %e, "stream ended"),
                Err(e) => reject(&conn, &mut send, &e).await,
            }
        });
    }
}

/// Sends the peer the error it caused and closes its connection.
async fn reject(conn: &quinn::Connection, send: &mut FramedSend, err: &TransportError) {
    tracing::warn!(error = %err, "refusing peer");
    let env = err
        .to_envelope()
        .unwrap_or_else(|| corral_wire::error_envelope("refused", err.to_string()));
    let _ = send.send(&env).await;
    send.finish();
    // Let the error reach the peer before the close discards unsent stream data.
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        send.get_mut().stopped(),
    )
    .await;
    conn.close(1u32.into(), err.to_string().as_bytes());
}

async fn serve_stream(
    conn: &quinn::Connection,
    send: &mut FramedSend,
    first: Result<Option<Body>, TransportError>,
    mut recv: FramedRecv,
    services: Services,
    heartbeat_interval: std::time::Duration,
) -> Result<(), TransportError> {
    let registry = services.registry.clone();
    let Some(first) = first? else {
        return Ok(());
    };
    match first {
        Body::RegisterAgent(reg) => {
            let (tx, mut rx) = mpsc::unbounded_channel::<pb::Envelope>();
            let registration = registration(&reg, conn.remote_address().to_string())?;
            let (agent_id, session) = match registry
                .send(RegisterAgent {
                    registration,
                    link: tx.clone(),
                    conn: Some(conn.clone()),
                    tasks: reg.tasks.clone(),
                })
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return Err(TransportError::Remote {
                        code: "invalid_registration".into(),
                        message: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(TransportError::Remote {
                        code: "unavailable".into(),
                        message: "the master is shutting down".into(),
                    })
                }
            };
            send.send_body(Body::AgentRegistered(pb::AgentRegistered {
                agent_id: agent_id.clone(),
                heartbeat_interval_ms: heartbeat_interval.as_millis() as u64,
            }))
            .await?;
            AgentSession::start(agent_id, session, registry, tx, conn.clone(), recv);
            // This task now writes everything the master sends the agent.
            while let Some(env) = rx.recv().await {
                send.send(&env).await?;
            }
            Ok(())
        }
        Body::Request(pb::Request {
            kind: Some(pb::request::Kind::TaskLogs(req)),
        }) => relay_logs(req, &registry, send).await,
        Body::Request(pb::Request {
            kind: Some(pb::request::Kind::PolicySwap(req)),
        }) => receive_swap(req, &services, send, recv).await,
        Body::Request(req) => {
            let response = handle_request(req, &services).await;
            send.send_body(Body::Response(response)).await?;
            send.finish();
            Ok(())
        }
        Body::Ping(p) => {
            let mut next = Some(Body::Ping(p));
            while let Some(body) = next {
                match body {
                    Body::Ping(p) => {
                        send.send_body(Body::Pong(pb::Pong {
                            sequence: p.sequence,
                            payload: p.payload,
                        }))
                        .await?
                    }
                    other => return Err(unexpected(&other)),
                }
                next = recv.recv().await?;
            }
            send.finish();
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn unexpected(body: &Body) -> TransportError {
    TransportError::Remote {
        code: "unexpected".into(),
        message: format!("a stream cannot start with {}", body_name(body)),
    }
}

fn registration(reg: &pb::RegisterAgent, address: String) -> Result<Registration, TransportError> {
    let total = reg.total.as_ref().ok_or_else(|| TransportError::Remote {
        code: "invalid_registration".into(),
        message: "registration carries no resources".into(),
    })?;
    Ok(Registration {
        id: (!reg.agent_id.is_empty()).then(|| reg.agent_id.clone()),
        hostname: reg.hostname.clone(),
        address,
        total: total.into(),
        attributes: reg
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

async fn handle_request(req: pb::Request, services: &Services) -> pb::Response {
    let registry = &services.registry;
    use pb::request::Kind;
    use pb::response::Kind as R;
    let kind = match req.kind {
        Some(Kind::ListAgents(_)) => match registry.send(ListAgents).await {
            Ok(agents) => R::Agents(pb::AgentList {
                agents: agents.iter().map(agent_info).collect(),
            }),
            Err(_) => R::Error(unavailable()),
        },
        Some(Kind::RunTask(r)) => match r.spec {
            None => R::Error(pb::Error {
                code: "invalid_spec".into(),
                message: "run request without a task spec".into(),
            }),
            Some(spec) => match registry.send(RunTask { spec }).await {
                Ok(Ok((task_id, agent_id))) => {
                    R::TaskLaunched(pb::TaskLaunched { task_id, agent_id })
                }
                Ok(Err(e)) => R::Error(pb::Error {
                    code: e.code.into(),
                    message: e.message,
                }),
                Err(_) => R::Error(unavailable()),
            },
        },
        Some(Kind::ListTasks(l)) => match registry
            .send(ListTasks {
                framework_id: l.framework_id,
            })
            .await
        {
            Ok(tasks) => R::Tasks(pb::TaskList { tasks }),
            Err(_) => R::Error(unavailable()),
        },
        Some(Kind::KillTask(k)) => match registry.send(KillTask { task_id: k.task_id }).await {
            Ok(Ok(())) => R::Ok(pb::Ok {}),
            Ok(Err(e)) => R::Error(pb::Error {
                code: e.code.into(),
                message: e.message,
            }),
            Err(_) => R::Error(unavailable()),
        },
        Some(Kind::ListPolicies(_)) => match services.allocator.send(AllocatorHistory).await {
            Ok(history) => R::Policies(pb::PolicyList {
                records: history.iter().map(policy_record).collect(),
            }),
            Err(_) => R::Error(unavailable()),
        },
        Some(Kind::PolicySwap(_)) | Some(Kind::PolicyChunk(_)) => R::Error(pb::Error {
            code: "unexpected".into(),
            message: "a policy swap starts a stream and sends its chunks on it".into(),
        }),
        Some(Kind::TaskLogs(_)) => R::Error(pb::Error {
            code: "unexpected".into(),
            message: "log requests are streamed".into(),
        }),
        None => R::Error(pb::Error {
            code: "unknown_request".into(),
            message: "request of a kind this master does not know".into(),
        }),
    };
    pb::Response { kind: Some(kind) }
}

fn unavailable() -> pb::Error {
    pb::Error {
        code: "unavailable".into(),
        message: "the master is shutting down".into(),
    }
}

/// The wire form of an agent's entry.
pub fn agent_info(a: &corral_core::agents::AgentEntry) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: a.id.clone(),
        hostname: a.hostname.clone(),
        address: a.address.clone(),
        total: Some((&a.total).into()),
        used: Some((&a.used).into()),
        attributes: corral_core::agents::attributes_to_pb(&a.attributes),
        state: match a.state {
            corral_core::agents::AgentState::Active => pb::AgentState::AgentActive,
            corral_core::agents::AgentState::Unreachable => pb::AgentState::AgentUnreachable,
        } as i32,
        last_seen_ms: a.last_seen_ms,
        registered_at_ms: a.registered_at_ms,
    }
}

/// Streams a task's logs from its agent to the client, chunk by chunk.
async fn relay_logs(
    req: pb::TaskLogs,
    registry: &Addr<RegistryActor>,
    send: &mut FramedSend,
) -> Result<(), TransportError> {
    use pb::response::Kind as R;
    let error = |code: &str, message: String| {
        Body::Response(pb::Response {
            kind: Some(R::Error(pb::Error {
                code: code.into(),
                message,
            })),
        })
    };
    let conn = match registry
        .send(TaskAgentConnection {
            task_id: req.task_id.clone(),
        })
        .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            send.send_body(error(e.code, e.message)).await?;
            send.finish();
            return Ok(());
        }
        Err(_) => {
            send.send_body(error("unavailable", "the master is shutting down".into()))
                .await?;
            send.finish();
            return Ok(());
        }
    };
    let (mut agent_send, mut agent_recv) =
        match corral_transport::open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await {
            Ok(s) => s,
            Err(e) => {
                send.send_body(error(
                    "agent_unavailable",
                    format!("cannot reach the task's agent: {e}"),
                ))
                .await?;
                send.finish();
                return Ok(());
            }
        };
    agent_send
        .send_body(Body::Request(pb::Request {
            kind: Some(pb::request::Kind::TaskLogs(req)),
        }))
        .await?;
    agent_send.finish();
    loop {
        match agent_recv.recv().await {
            Ok(Some(Body::Response(r))) => {
                let end = matches!(&r.kind, Some(R::LogChunk(c)) if c.eof)
                    || matches!(&r.kind, Some(R::Error(_)));
                send.send_body(Body::Response(r)).await?;
                if end {
                    break;
                }
            }
            Ok(_) => break,
            Err(e) => {
                send.send_body(error(
                    "agent_unavailable",
                    format!("the agent's log stream failed: {e}"),
                ))
                .await?;
                break;
            }
        }
    }
    send.finish();
    Ok(())
}

/// The wire form of a policy's history entry.
pub fn policy_record(r: &corral_policy::SwapRecord) -> pb::PolicyRecord {
    pb::PolicyRecord {
        slot: r.slot.clone(),
        digest: r.digest.clone(),
        who: r.who.clone(),
        loaded_at_ms: r
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        state: r.state.to_string(),
        calls: r.calls,
        errors: r.errors,
        last_error: r.last_error.clone().unwrap_or_default(),
        swap_time_us: r.swap_time.as_micros() as u64,
    }
}

/// The largest policy component a swap accepts.
const MAX_COMPONENT: u64 = 256 << 20;

/// Receives a component in chunks and swaps it in.
async fn receive_swap(
    req: pb::PolicySwap,
    services: &Services,
    send: &mut FramedSend,
    mut recv: FramedRecv,
) -> Result<(), TransportError> {
    use pb::response::Kind as R;
    let answer = |kind| Body::Response(pb::Response { kind: Some(kind) });
    let refuse = |code: &str, message: String| {
        answer(R::Error(pb::Error {
            code: code.into(),
            message,
        }))
    };
    if req.slot != "allocator" {
        send.send_body(refuse(
            "unknown_slot",
            format!("no policy slot {:?}; the slots are: allocator", req.slot),
        ))
        .await?;
        send.finish();
        return Ok(());
    }
    if req.size > MAX_COMPONENT {
        send.send_body(refuse(
            "too_large",
            format!(
                "component of {} bytes is over the limit of {MAX_COMPONENT}",
                req.size
            ),
        ))
        .await?;
        send.finish();
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(req.size as usize);
    loop {
        match recv.recv().await? {
            Some(Body::Request(pb::Request {
                kind: Some(pb::request::Kind::PolicyChunk(c)),
            })) => {
                bytes.extend_from_slice(&c.data);
                if bytes.len() as u64 > req.size {
                    send.send_body(refuse("size_mismatch", "more bytes than announced".into()))
                        .await?;
                    send.finish();
                    return Ok(());
                }
                if c.last {
                    break;
                }
            }
            _ => {
                send.send_body(refuse(
                    "truncated",
                    "the component's chunks ended early".into(),
                ))
                .await?;
                send.finish();
                return Ok(());
            }
        }
    }
    let who = if req.who.is_empty() {
        "unknown".to_owned()
    } else {
        req.who
    };
    let body = match services.allocator.send(SwapAllocator { bytes, who }).await {
        Ok(Ok(record)) => {
            tracing::info!(slot = %record.slot, digest = %record.digest, "policy swapped");
            answer(R::Swapped(policy_record(&record)))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "policy swap rejected");
            refuse("rejected", e)
        }
        Err(_) => refuse("unavailable", "the master is shutting down".into()),
    };
    send.send_body(body).await?;
    send.finish();
    Ok(())
}
