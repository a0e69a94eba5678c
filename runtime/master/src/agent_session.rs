//! One actor per connected agent: reads the agent's stream after its registration.

use actix::prelude::*;
use corral_transport::{FramedRecv, TransportError};
use corral_wire::pb::{self, envelope::Body};
use tokio::sync::mpsc;

use crate::registry_actor::{Heartbeat, RegistryActor, SessionClosed, StatusFromAgent};

/// A registered agent's control stream.
pub struct AgentSession {
    agent_id: String,
    session: u64,
    registry: Addr<RegistryActor>,
    out: mpsc::UnboundedSender<pb::Envelope>,
    conn: quinn::Connection,
}

impl AgentSession {
    /// Starts the session actor reading `recv`; envelopes for the agent go to `out`.
    pub fn start(
        agent_id: String,
        session: u64,
        registry: Addr<RegistryActor>,
        out: mpsc::UnboundedSender<pb::Envelope>,
        conn: quinn::Connection,
        recv: FramedRecv,
    ) -> Addr<Self> {
        AgentSession::create(move |ctx| {
            // The stream ends after its first error: a broken stream keeps failing, and
            // must not be read again in a loop while the session closes.
            ctx.add_stream(futures::stream::unfold(Some(recv), |recv| async move {
                let mut recv = recv?;
                match recv.recv().await {
                    Ok(Some(body)) => Some((Ok(body), Some(recv))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), None)),
                }
            }));
            AgentSession {
                agent_id,
                session,
                registry,
                out,
                conn,
            }
        })
    }

    fn refuse(&mut self, ctx: &mut Context<Self>, err: &TransportError) {
        tracing::warn!(agent_id = %self.agent_id, error = %err, "closing agent connection");
        if let Some(env) = err.to_envelope() {
            let _ = self.out.send(env);
        }
        let conn = self.conn.clone();
        let reason = err.to_string();
        // Give the writer a moment to flush the error before the close.
        ctx.run_later(std::time::Duration::from_millis(50), move |_, ctx| {
            conn.close(1u32.into(), reason.as_bytes());
            ctx.stop();
        });
    }
}

impl Actor for AgentSession {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.registry.do_send(SessionClosed {
            agent_id: self.agent_id.clone(),
            session: self.session,
        });
    }
}

impl StreamHandler<Result<Body, TransportError>> for AgentSession {
    fn handle(&mut self, item: Result<Body, TransportError>, ctx: &mut Self::Context) {
        let body = match item {
            Ok(body) => body,
            Err(e) => return self.refuse(ctx, &e),
        };
        match body {
            Body::Heartbeat(hb) => {
                let out = self.out.clone();
                let sequence = hb.sequence;
                self.registry
                    .send(Heartbeat {
                        agent_id: self.agent_id.clone(),
                        session: self.session,
                    })
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(Ok(())) => {
                            let _ = out.send(corral_wire::envelope(Body::HeartbeatAck(
                                pb::HeartbeatAck { sequence },
                            )));
                        }
                        Ok(Err(e)) => {
                            // The agent was marked unreachable or registered again elsewhere:
                            // it must register anew, which a closed connection makes it do.
                            let _ =
                                out.send(corral_wire::error_envelope("reregister", e.to_string()));
                            act.conn.close(2u32.into(), b"register again");
                            ctx.stop();
                        }
                        Err(_) => ctx.stop(),
                    })
                    .wait(ctx);
            }
            Body::StatusUpdate(u) => {
                let Some(status) = u.status else {
                    let _ = self.out.send(corral_wire::error_envelope(
                        "malformed",
                        "status update without a status",
                    ));
                    return;
                };
                let out = self.out.clone();
                let ack = pb::StatusUpdateAck {
                    task_id: status.task_id.clone(),
                    update_id: status.update_id.clone(),
                };
                // Acknowledged only once the registry has applied it and it is durable.
                // `do_send` queues in order whatever the mailbox holds (a `send` to a
                // full mailbox is queued when polled, which could reorder updates); the
                // store makes them durable in that order, so the session reads on
                // without waiting for one before the next.
                let (durable, saved) = tokio::sync::oneshot::channel();
                self.registry.do_send(StatusFromAgent {
                    agent_id: self.agent_id.clone(),
                    status,
                    durable,
                });
                async move {
                    if saved.await.is_ok() {
                        let _ = out.send(corral_wire::envelope(Body::StatusUpdateAck(ack)));
                    }
                }
                .into_actor(self)
                .spawn(ctx);
            }
            Body::Ping(p) => {
                let _ = self.out.send(corral_wire::envelope(Body::Pong(pb::Pong {
                    sequence: p.sequence,
                    payload: p.payload,
                })));
            }
            other => {
                let err = TransportError::Remote {
                    code: "unexpected".into(),
                    message: format!(
                        "unexpected message on an agent stream: {}",
                        body_name(&other)
                    ),
                };
                let _ = self
                    .out
                    .send(corral_wire::error_envelope("unexpected", err.to_string()));
                tracing::warn!(agent_id = %self.agent_id, message = body_name(&other), "unexpected message from agent");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A short name of a message body, for errors and logs.
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Error(_) => "error",
        Body::RegisterAgent(_) => "register_agent",
        Body::AgentRegistered(_) => "agent_registered",
        Body::Heartbeat(_) => "heartbeat",
        Body::HeartbeatAck(_) => "heartbeat_ack",
        Body::LaunchTask(_) => "launch_task",
        Body::KillTask(_) => "kill_task",
        Body::StatusUpdate(_) => "status_update",
        Body::StatusUpdateAck(_) => "status_update_ack",
        Body::Request(_) => "request",
        Body::Response(_) => "response",
        Body::Ping(_) => "ping",
        Body::Pong(_) => "pong",
    }
}
