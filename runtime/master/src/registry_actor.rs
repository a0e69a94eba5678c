//! The registry actor: the one owner of the master's books.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use corral_core::agents::{AgentEntry, AgentError, AgentEvent, Agents, Registration};
use corral_wire::pb;
use tokio::sync::mpsc;

use crate::{now_ms, MasterConfig};

/// Owns the agents' book and the channels to their sessions.
pub struct RegistryActor {
    agents: Agents,
    /// Outgoing envelopes to each connected agent, with the session they belong to.
    links: HashMap<String, (u64, mpsc::UnboundedSender<pb::Envelope>)>,
    tick: Duration,
}

impl RegistryActor {
    /// A registry using the configuration's agent timeout.
    pub fn new(config: &MasterConfig) -> Self {
        let timeout = config.agent_timeout;
        Self {
            agents: Agents::new(timeout.as_millis() as u64),
            links: HashMap::new(),
            tick: (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    fn apply(&mut self, events: Vec<AgentEvent>) {
        for ev in events {
            match ev {
                AgentEvent::Registered(id) => tracing::info!(agent_id = %id, "agent registered"),
                AgentEvent::Reregistered(id) => {
                    tracing::info!(agent_id = %id, "agent re-registered")
                }
                AgentEvent::Unreachable(id) => {
                    tracing::warn!(agent_id = %id, "agent unreachable");
                    self.links.remove(&id);
                }
            }
        }
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |act, _| {
            let events = act.agents.tick(now_ms());
            act.apply(events);
        });
    }
}

/// An agent's registration, from its session.
#[derive(Message)]
#[rtype(result = "Result<(String, u64), AgentError>")]
pub struct RegisterAgent {
    /// What the agent sent.
    pub registration: Registration,
    /// Where to send the agent envelopes.
    pub link: mpsc::UnboundedSender<pb::Envelope>,
}

impl Handler<RegisterAgent> for RegistryActor {
    type Result = Result<(String, u64), AgentError>;

    fn handle(&mut self, msg: RegisterAgent, _: &mut Self::Context) -> Self::Result {
        let (id, session, event) = self.agents.register(now_ms(), msg.registration, || {
            format!("agent-{:016x}", rand::random::<u64>())
        })?;
        self.links.insert(id.clone(), (session, msg.link));
        self.apply(vec![event]);
        Ok((id, session))
    }
}

/// A heartbeat from an agent's session.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Heartbeat {
    /// The agent.
    pub agent_id: String,
    /// Its session.
    pub session: u64,
}

impl Handler<Heartbeat> for RegistryActor {
    type Result = Result<(), AgentError>;

    fn handle(&mut self, msg: Heartbeat, _: &mut Self::Context) -> Self::Result {
        self.agents.heartbeat(now_ms(), &msg.agent_id, msg.session)
    }
}

/// A session ended (the connection closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    /// The agent.
    pub agent_id: String,
    /// The session that ended.
    pub session: u64,
}

impl Handler<SessionClosed> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _: &mut Self::Context) {
        // The agent stays active until the timeout: a connection blip is not a lost agent.
        if self
            .links
            .get(&msg.agent_id)
            .is_some_and(|(s, _)| *s == msg.session)
        {
            self.links.remove(&msg.agent_id);
        }
        tracing::debug!(agent_id = %msg.agent_id, session = msg.session, "agent session closed");
    }
}

/// Every agent the master knows.
#[derive(Message)]
#[rtype(result = "Vec<AgentEntry>")]
pub struct ListAgents;

impl Handler<ListAgents> for RegistryActor {
    type Result = MessageResult<ListAgents>;

    fn handle(&mut self, _: ListAgents, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.agents.iter().cloned().collect())
    }
}
