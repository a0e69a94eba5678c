//! The agent's connection to the master: connect, register, heartbeat; on any failure,
//! back off exponentially with jitter and start again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use corral_transport::{open_stream, FramedRecv, FramedSend, TransportError};
use corral_wire::pb::{self, envelope::Body};
use rand::Rng;

use tokio::sync::mpsc;

use crate::agent_actor::{
    AgentActor, FromMaster, GetContainerizer, GetRegistration, LinkDown, Registered,
};
use crate::AgentConfig;

/// Exponential backoff with jitter: each delay is drawn from the upper half of the
/// current step, and the step doubles up to the maximum.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + step.mul_f64(rng.random::<f64>() * 0.5)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// Heartbeats without a packet from the master after which the link is given up.
const SILENT_HEARTBEATS: u64 = 5;

/// Runs the link until the actor stops.
pub async fn run(
    endpoint: quinn::Endpoint,
    actor: Addr<AgentActor>,
    config: AgentConfig,
    stopping: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    loop {
        let ended = session(&endpoint, &actor, &config, &mut backoff).await;
        // The agent closed the link itself (Agent::shutdown): nothing went wrong.
        if stopping.load(Ordering::Acquire) {
            tracing::info!("link to the master closed: the agent is stopping");
            return;
        }
        match ended {
            Ok(()) => tracing::info!("master closed the connection"),
            Err(e) => tracing::warn!(master = %config.master, error = %e, "link to master down"),
        }
        if !actor.connected() {
            return;
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tracing::debug!(delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

async fn session(
    endpoint: &quinn::Endpoint,
    actor: &Addr<AgentActor>,
    config: &AgentConfig,
    backoff: &mut Backoff,
) -> Result<(), TransportError> {
    let conn = corral_transport::connect(endpoint, config.master, Duration::from_secs(5)).await?;
    let (mut send, mut recv) = open_stream(&conn, config.max_frame).await?;
    let registration = actor.send(GetRegistration).await.map_err(gone)?;
    send.send_body(Body::RegisterAgent(registration)).await?;
    let (agent_id, interval) = match recv.recv().await? {
        Some(Body::AgentRegistered(r)) => (r.agent_id, r.heartbeat_interval_ms.max(50)),
        Some(other) => {
            return Err(TransportError::Remote {
                code: "unexpected".into(),
                message: format!("master answered the registration with {other:?}"),
            })
        }
        None => return Ok(()),
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    actor
        .send(Registered {
            agent_id: agent_id.clone(),
            link: out_tx,
        })
        .await
        .map_err(gone)?;
    backoff.reset();

    // The first heartbeat comes at a random point of the first interval, so that agents
    // that (re)connected together do not beat together.
    let first = Duration::from_millis(rand::rng().random_range(0..interval));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + first,
        Duration::from_millis(interval),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0u64;
    // Every heartbeat makes the master's QUIC stack answer within milliseconds (an
    // acknowledgement), however busy its registry is. A master that answers nothing for
    // SILENT_HEARTBEATS heartbeats is gone: a master killed and restarted on the same
    // address would otherwise be noticed only when a packet of this connection reaches the
    // new one, which can take the whole idle timeout after packets were lost while it was
    // down.
    let silent_limit = Duration::from_millis(interval * SILENT_HEARTBEATS);
    let mut heard = (conn.stats().udp_rx.datagrams, tokio::time::Instant::now());
    let result = loop {
        tokio::select! {
            tick = ticker.tick() => {
                let received = conn.stats().udp_rx.datagrams;
                let late = tick.elapsed() > Duration::from_millis(interval);
                if received != heard.0 || late {
                    // Something came, or this agent itself was too busy to look (its
                    // packets may wait unread): the master is not to blame.
                    heard = (received, tokio::time::Instant::now());
                } else if heard.1.elapsed() >= silent_limit {
                    break Err(TransportError::Silent {
                        addr: config.master,
                        silent_ms: heard.1.elapsed().as_millis() as u64,
                    });
                }
                sequence += 1;
                if let Err(e) = send.send_body(Body::Heartbeat(pb::Heartbeat { agent_id: agent_id.clone(), sequence })).await {
                    break Err(e);
                }
            }
            Some(env) = out_rx.recv() => {
                if let Err(e) = send.send(&env).await {
                    break Err(e);
                }
            }
            msg = recv.recv() => match msg {
                Err(e) => break Err(e),
                Ok(None) => break Ok(()),
                Ok(Some(Body::HeartbeatAck(_))) => {}
                Ok(Some(body)) => actor.do_send(FromMaster(body)),
            },
            stream = conn.accept_bi() => match stream {
                Ok((s, r)) => {
                    let actor = actor.clone();
                    let max_frame = config.max_frame;
                    actix::spawn(async move {
                        let mut s = FramedSend::new(s);
                        let r = FramedRecv::new(r, max_frame);
                        if let Err(e) = serve_master_request(&actor, &mut s, r).await {
                            tracing::debug!(error = %e, "master request failed");
                        }
                    });
                }
                Err(e) => break Err(e.into()),
            },
        }
    };
    actor.do_send(LinkDown);
    result
}

/// Answers a request the master opened a stream for: today, a task's logs.
async fn serve_master_request(
    actor: &Addr<AgentActor>,
    send: &mut FramedSend,
    mut recv: FramedRecv,
) -> Result<(), TransportError> {
    use futures::StreamExt;
    use pb::response::Kind as R;
    let reply = |kind| Body::Response(pb::Response { kind: Some(kind) });
    let Some(Body::Request(pb::Request {
        kind: Some(pb::request::Kind::TaskLogs(req)),
    })) = recv.recv().await?
    else {
        send.send_body(reply(R::Error(pb::Error {
            code: "unsupported".into(),
            message: "agents answer only log requests".into(),
        })))
        .await?;
        send.finish();
        return Ok(());
    };
    let containerizer = actor.send(GetContainerizer).await.map_err(gone)?;
    let options = corral_containerizer::LogOptions {
        follow: req.follow,
        stderr: req.stderr,
    };
    match containerizer.logs(&req.task_id, options).await {
        Err(e) => {
            send.send_body(reply(R::Error(pb::Error {
                code: "not_found".into(),
                message: e.to_string(),
            })))
            .await?;
        }
        Ok(mut stream) => {
            // The reader going away (the master's relay ends when its client does) ends
            // this too, even while the task prints nothing: otherwise a followed log of a
            // quiet task kept its stream and its engine connection until the task printed.
            loop {
                let Some(next) = send.unless_stopped(stream.next()).await else {
                    return Ok(());
                };
                let Some(chunk) = next else {
                    break;
                };
                match chunk {
                    Ok(data) => {
                        send.send_body(reply(R::LogChunk(pb::LogChunk {
                            data: data.to_vec(),
                            eof: false,
                        })))
                        .await?
                    }
                    Err(e) => {
                        send.send_body(reply(R::Error(pb::Error {
                            code: "logs".into(),
                            message: e.to_string(),
                        })))
                        .await?;
                        send.finish();
                        return Ok(());
                    }
                }
            }
            send.send_body(reply(R::LogChunk(pb::LogChunk {
                data: Vec::new(),
                eof: true,
            })))
            .await?;
        }
    }
    send.finish();
    Ok(())
}

fn gone(_: actix::MailboxError) -> TransportError {
    TransportError::Remote {
        code: "stopped".into(),
        message: "the agent is shutting down".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut rng = rand::rng();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let expected_steps = [100u64, 200, 400, 800, 1000, 1000];
        for step in expected_steps {
            let d = b.next_delay(&mut rng).as_millis() as u64;
            assert!(
                d >= step / 2 && d <= step,
                "delay {d} outside [{}, {step}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
