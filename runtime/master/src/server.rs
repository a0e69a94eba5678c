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
    KillTask, ListAgents, ListTasks, RegisterAgent, RegistryActor, RunTask, SessionClosed,
    TaskAgentConnection,
};
use crate::registry_frameworks::{
    initial_view, AddFramework, CheckSubmit, FrameworkSlot, KillFramework, ListFrameworks,
    PolicyHistories, SchedulerSwapped, UpdateFramework,
};
use crate::registry_store::{SaveAllocator, SavePolicyRecords};
use crate::MasterConfig;

/// The actors a connection's streams talk to.
#[derive(Clone)]
pub struct Services {
    /// The registry.
    pub registry: Addr<RegistryActor>,
    /// The allocator.
    pub allocator: Addr<AllocatorActor>,
    /// The policy host, for frameworks' schedulers.
    pub host: corral_policy::PolicyHost,
    /// The QUIC thread's runtime, where each agent's writer runs.
    pub quic: tokio::runtime::Handle,
}

/// Accepts connections until the endpoint closes and completes their handshakes; runs on
/// the QUIC thread, so that the connections' drivers run there too. Each connection is
/// handed to [`accept_loop`] once it is up.
pub async fn handshakes(
    endpoint: quinn::Endpoint,
    ready: tokio::sync::mpsc::UnboundedSender<quinn::Connection>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let ready = ready.clone();
        let remote = incoming.remote_address();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => {
                    if ready.send(conn).is_err() {
                        tracing::debug!(%remote, "master stopping; connection dropped");
                    }
                }
                Err(e) => tracing::info!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

/// Serves every connection [`handshakes`] completes, until the endpoint closes.
pub async fn accept_loop(
    mut handshaken: tokio::sync::mpsc::UnboundedReceiver<quinn::Connection>,
    services: Services,
    config: MasterConfig,
) {
    while let Some(conn) = handshaken.recv().await {
        let services = services.clone();
        let config = config.clone();
        let remote = conn.remote_address();
        actix::spawn(
            async move {
                let _open = crate::http::metrics::METRICS.connection_opened();
                serve_connection(conn, services, config).await
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
            if let Ok(Some(Body::RegisterAgent(reg))) = first {
                return serve_agent(&conn, send, reg, recv, services, hb).await;
            }
            match serve_stream(&mut send, first, recv, services).await {
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
    send: &mut FramedSend,
    first: Result<Option<Body>, TransportError>,
    mut recv: FramedRecv,
    services: Services,
) -> Result<(), TransportError> {
    let registry = services.registry.clone();
    let Some(first) = first? else {
        return Ok(());
    };
    match first {
        Body::Request(pb::Request {
            kind: Some(pb::request::Kind::TaskLogs(req)),
        }) => relay_logs(req, &registry, send).await,
        Body::Request(pb::Request {
            kind: Some(pb::request::Kind::PolicySwap(req)),
        }) => receive_swap(req, &services, send, recv).await,
        Body::Request(pb::Request {
            kind: Some(pb::request::Kind::FrameworkSubmit(req)),
        }) => receive_submit(req, &services, send, recv).await,
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

/// Serves an agent's stream: registers it, starts its session actor (which reads what the
/// agent sends) and writes everything the master sends it. The writer runs on the QUIC
/// thread: a launch committed by the store goes out at once, without waiting for the
/// registry's thread, which may be busy with the rest of the burst.
async fn serve_agent(
    conn: &quinn::Connection,
    mut send: FramedSend,
    reg: pb::RegisterAgent,
    recv: FramedRecv,
    services: Services,
    heartbeat_interval: std::time::Duration,
) {
    let registry = services.registry.clone();
    let (tx, rx) = mpsc::unbounded_channel::<pb::Envelope>();
    let registered = async {
        let registration = registration(&reg, conn.remote_address().to_string())?;
        let (agent_id, session) = match registry
            .send(RegisterAgent {
                registration,
                link: tx.clone(),
                conn: Some(conn.clone()),
                tasks: reg.tasks,
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
        let answer = send
            .send_body(Body::AgentRegistered(pb::AgentRegistered {
                agent_id: agent_id.clone(),
                heartbeat_interval_ms: heartbeat_interval.as_millis() as u64,
            }))
            .await;
        if let Err(e) = answer {
            // Registered, but the agent cannot be told: the registry must not keep a link
            // that goes nowhere (it would place tasks there).
            registry.do_send(SessionClosed {
                agent_id: agent_id.clone(),
                session,
            });
            return Err(e);
        }
        Ok((agent_id, session))
    }
    .await;
    let (agent_id, session) = match registered {
        Ok(r) => r,
        Err(e @ (TransportError::Connection(_) | TransportError::Write(_))) => {
            tracing::debug!(error = %e, "agent stream ended");
            return;
        }
        Err(e) => return reject(conn, &mut send, &e).await,
    };
    AgentSession::start(agent_id, session, registry, tx, conn.clone(), recv);
    match services.quic.spawn(write_to_agent(send, rx)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "agent stream ended"),
        Err(e) => tracing::warn!(error = %e, "an agent's writer stopped"),
    }
}

/// The most envelopes written to an agent in one write.
const WRITE_BATCH: usize = 256;

/// Writes what the master sends an agent, every envelope that is waiting in one write.
async fn write_to_agent(
    mut send: FramedSend,
    mut rx: mpsc::UnboundedReceiver<pb::Envelope>,
) -> Result<(), TransportError> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        send.send_many(&batch).await?;
        batch.clear();
    }
    Ok(())
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
            Ok(Ok(note)) => R::Ok(pb::Ok {
                note: note.unwrap_or_default(),
            }),
            Ok(Err(e)) => R::Error(pb::Error {
                code: e.code.into(),
                message: e.message,
            }),
            Err(_) => R::Error(unavailable()),
        },
        Some(Kind::ListPolicies(_)) => {
            let records = match services.allocator.send(AllocatorHistory).await {
                Ok(allocator) => registry.send(PolicyHistories { allocator }).await.ok(),
                Err(_) => None,
            };
            match records {
                Some(records) => R::Policies(pb::PolicyList {
                    records: records.iter().map(policy_record).collect(),
                }),
                None => R::Error(unavailable()),
            }
        }
        Some(Kind::PolicySwap(_)) | Some(Kind::PolicyChunk(_)) | Some(Kind::FrameworkSubmit(_)) => {
            R::Error(pb::Error {
                code: "unexpected".into(),
                message: "a policy swap or a framework submission starts a stream and sends its component's chunks on it".into(),
            })
        }
        Some(Kind::ListFrameworks(l)) => {
            refusable(registry.send(ListFrameworks { name: l.name }).await, |frameworks| {
                R::Frameworks(pb::FrameworkList { frameworks })
            })
        }
        Some(Kind::FrameworkUpdate(u)) => match check_update(services, &u).await {
            Err(refusal) => refusal,
            Ok(()) => refusable(
                registry
                    .send(UpdateFramework {
                        name: u.name,
                        workload: u.workload,
                    })
                    .await,
                R::Framework,
            ),
        },
        Some(Kind::FrameworkKill(k)) => refusable(
            registry.send(KillFramework { name: k.name }).await,
            R::Framework,
        ),
        Some(Kind::AgentDrain(d)) => refusable(
            registry
                .send(crate::registry_actor::DrainAgent {
                    agent_id: d.agent_id,
                    deadline_ms: d.deadline_ms,
                })
                .await,
            |()| R::Ok(pb::Ok::default()),
        ),
        Some(Kind::AgentUndrain(d)) => refusable(
            registry
                .send(crate::registry_actor::UndrainAgent {
                    agent_id: d.agent_id,
                })
                .await,
            |()| R::Ok(pb::Ok::default()),
        ),
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

/// The response to a registry request that may be refused.
fn refusable<T>(
    result: Result<Result<T, crate::registry_actor::Refused>, actix::MailboxError>,
    ok: impl FnOnce(T) -> pb::response::Kind,
) -> pb::response::Kind {
    match result {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => pb::response::Kind::Error(pb::Error {
            code: e.code.into(),
            message: e.message,
        }),
        Err(_) => pb::response::Kind::Error(unavailable()),
    }
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
            corral_core::agents::AgentState::Active if a.drain_deadline_ms.is_some() => {
                pb::AgentState::AgentDraining
            }
            corral_core::agents::AgentState::Active => pb::AgentState::AgentActive,
            corral_core::agents::AgentState::Unreachable => pb::AgentState::AgentUnreachable,
        } as i32,
        last_seen_ms: a.last_seen_ms,
        registered_at_ms: a.registered_at_ms,
        drain_deadline_ms: a.drain_deadline_ms.unwrap_or(0),
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
    // A client that goes away (Ctrl-C on `corral task logs -f`) ends the relay at once,
    // and dropping the agent's stream tells the agent to stop reading the logs.
    loop {
        let Some(received) = send.unless_stopped(agent_recv.recv()).await else {
            return Ok(());
        };
        match received {
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

/// Sends one response and ends the stream.
async fn answer(send: &mut FramedSend, kind: pb::response::Kind) -> Result<(), TransportError> {
    send.send_body(Body::Response(pb::Response { kind: Some(kind) }))
        .await?;
    send.finish();
    Ok(())
}

fn error(code: &str, message: impl Into<String>) -> pb::response::Kind {
    pb::response::Kind::Error(pb::Error {
        code: code.into(),
        message: message.into(),
    })
}

/// Receives a component of `size` bytes in `PolicyChunk`s. `None` when the peer was
/// already answered with an error.
async fn receive_component(
    size: u64,
    send: &mut FramedSend,
    recv: &mut FramedRecv,
) -> Result<Option<Vec<u8>>, TransportError> {
    if size > MAX_COMPONENT {
        answer(
            send,
            error(
                "too_large",
                format!("component of {size} bytes is over the limit of {MAX_COMPONENT}"),
            ),
        )
        .await?;
        return Ok(None);
    }
    // Grown as chunks arrive: the announced size is only the client's word, and reserving
    // it up front made the master reserve that much for clients that send nothing.
    let mut bytes = Vec::new();
    loop {
        match recv.recv().await? {
            Some(Body::Request(pb::Request {
                kind: Some(pb::request::Kind::PolicyChunk(c)),
            })) => {
                bytes.extend_from_slice(&c.data);
                if bytes.len() as u64 > size {
                    answer(send, error("size_mismatch", "more bytes than announced")).await?;
                    return Ok(None);
                }
                if c.last {
                    return Ok(Some(bytes));
                }
            }
            _ => {
                answer(
                    send,
                    error("truncated", "the component's chunks ended early"),
                )
                .await?;
                return Ok(None);
            }
        }
    }
}

fn who(who: String) -> String {
    if who.is_empty() {
        "unknown".to_owned()
    } else {
        who
    }
}

/// Receives a component in chunks and swaps it into its slot.
async fn receive_swap(
    req: pb::PolicySwap,
    services: &Services,
    send: &mut FramedSend,
    mut recv: FramedRecv,
) -> Result<(), TransportError> {
    use pb::response::Kind as R;
    let framework = req.slot.strip_prefix("framework/").map(str::to_owned);
    let slot = match framework {
        None if req.slot == "allocator" => None,
        Some(name) => match services.registry.send(FrameworkSlot { name }).await {
            Ok(Ok(slot)) => Some(slot),
            Ok(Err(e)) => return answer(send, error(e.code, e.message)).await,
            Err(_) => return answer(send, R::Error(unavailable())).await,
        },
        None => {
            return answer(
                send,
                error(
                    "unknown_slot",
                    format!(
                        "no policy slot {:?}; the slots are: allocator, framework/NAME",
                        req.slot
                    ),
                ),
            )
            .await
        }
    };
    let Some(bytes) = receive_component(req.size, send, &mut recv).await? else {
        return Ok(());
    };
    let who = who(req.who);
    let slot_for_history = slot.as_ref().map(|(_, s)| s.clone());
    let result = match slot {
        None => {
            let kept = bytes.clone();
            match services.allocator.send(SwapAllocator { bytes, who }).await {
                Ok(Ok(record)) => {
                    services.registry.do_send(SaveAllocator {
                        digest: record.digest.clone(),
                        bytes: kept,
                    });
                    Ok(record)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => return answer(send, R::Error(unavailable())).await,
            }
        }
        Some((id, slot)) => {
            let swapped = tokio::task::spawn_blocking(move || {
                let record = slot.swap(&bytes, &who);
                (record, bytes)
            })
            .await
            .map_err(|e| format!("the swap did not complete: {e}"))
            .and_then(|(r, bytes)| r.map(|r| (r, bytes)).map_err(|e| e.to_string()));
            match swapped {
                Ok((record, component)) => {
                    services
                        .registry
                        .do_send(SchedulerSwapped { id, component });
                    Ok(record)
                }
                Err(e) => Err(e),
            }
        }
    };
    // Keep the attempt, whatever its outcome, in the saved history, and the policy it
    // replaced with its final counts.
    let records = match &slot_for_history {
        None => services
            .allocator
            .send(AllocatorHistory)
            .await
            .unwrap_or_default(),
        Some(slot) => slot.history(),
    };
    services.registry.do_send(SavePolicyRecords { records });
    let kind = match result {
        Ok(record) => {
            tracing::info!(slot = %record.slot, digest = %record.digest, "policy swapped");
            R::Swapped(policy_record(&record))
        }
        Err(e) => {
            tracing::warn!(slot = %req.slot, error = %e, "policy swap rejected");
            error("rejected", e)
        }
    };
    answer(send, kind).await
}

/// Asks a running framework's scheduler whether it can run the workload of `update`,
/// before the update is accepted: a workload it cannot run is refused, and the framework
/// goes on with the one it has (a misspelt key would otherwise fail the framework and
/// kill its tasks).
async fn check_update(
    services: &Services,
    update: &pb::FrameworkUpdate,
) -> Result<(), pb::response::Kind> {
    use pb::response::Kind as R;
    // Its size and syntax first, as the update itself checks them.
    if let Err(message) = crate::frameworks::validate_workload(&update.workload) {
        return Err(error("invalid_framework", message));
    }
    let slot = match services
        .registry
        .send(FrameworkSlot {
            name: update.name.clone(),
        })
        .await
    {
        Ok(Ok((_, slot))) => slot,
        // Said again, with the right code, by the update itself.
        Ok(Err(_)) => return Ok(()),
        Err(_) => return Err(R::Error(unavailable())),
    };
    let workload = update.workload.clone();
    match tokio::task::spawn_blocking(move || slot.check_workload(&workload)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error(
            "invalid_framework",
            format!("workload refused, framework {} unchanged: {e}", update.name),
        )),
        Err(e) => Err(error(
            "unavailable",
            format!("checking the workload did not complete: {e}"),
        )),
    }
}

/// Receives a framework's scheduler in chunks, loads it (compiled and dry-run on the
/// framework's starting view) and starts the framework.
async fn receive_submit(
    req: pb::FrameworkSubmit,
    services: &Services,
    send: &mut FramedSend,
    mut recv: FramedRecv,
) -> Result<(), TransportError> {
    use pb::response::Kind as R;
    let role = if req.role.is_empty() {
        crate::frameworks::DEFAULT_ROLE.to_owned()
    } else {
        req.role.clone()
    };
    let check = CheckSubmit {
        name: req.name.clone(),
        role: role.clone(),
        weight: req.weight,
        workload: req.workload.clone(),
    };
    let id = match services.registry.send(check).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return answer(send, error(e.code, e.message)).await,
        Err(_) => return answer(send, R::Error(unavailable())).await,
    };
    let Some(bytes) = receive_component(req.size, send, &mut recv).await? else {
        return Ok(());
    };
    let slot = std::sync::Arc::new(corral_policy::SchedulerSlot::new(
        &services.host,
        &format!("framework/{}", req.name),
    ));
    slot.prime(initial_view(&id, &req.name, &role, &req.workload));
    let who = who(req.who);
    let loading = slot.clone();
    // Its dry run is on the framework's starting view, workload included: a workload the
    // scheduler cannot run (a misspelt key) is refused here, not found once the framework
    // has started and failed.
    let loaded = tokio::task::spawn_blocking(move || {
        let record = loading.swap(&bytes, &who);
        (record, bytes)
    })
    .await
    .map_err(|e| {
        (
            "rejected",
            format!("loading the scheduler did not complete: {e}"),
        )
    })
    .and_then(|(record, bytes)| match record {
        Err(corral_policy::SwapError::DryRun {
            source: corral_policy::PolicyError::FailsFramework { message },
            ..
        }) => Err(("invalid_framework", format!("workload refused: {message}"))),
        Err(e) => Err(("rejected", format!("scheduler rejected: {e}"))),
        Ok(_) => Ok(bytes),
    });
    // The scheduler's load is kept in the history, taken or rejected; a workload refused
    // is the submission's mistake, not the scheduler's.
    if !matches!(loaded, Err(("invalid_framework", _))) {
        let records = slot.history();
        services.registry.do_send(SavePolicyRecords { records });
    }
    let component = match loaded {
        Ok(bytes) => bytes,
        Err((code, message)) => {
            tracing::warn!(framework = %req.name, error = %message, "framework not submitted");
            return answer(send, error(code, message)).await;
        }
    };
    let add = AddFramework {
        id,
        name: req.name,
        role,
        weight: req.weight,
        workload: req.workload,
        slot,
        component,
    };
    let kind = refusable(services.registry.send(add).await, R::Framework);
    answer(send, kind).await
}
