//! The master's book of agents: registration, heartbeats, and the unreachable timeout.
//!
//! Sans-IO: time comes in as `now` (milliseconds since the Unix epoch) and every call
//! returns the [`AgentEvent`]s it caused; the caller does the IO.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::resources::Resources;

/// An agent's id: stable across the agent's restarts (it keeps it in its state folder).
pub type AgentId = String;

/// Where an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Registered and heartbeating.
    Active,
    /// Silent for longer than the timeout; its tasks are presumed lost.
    Unreachable,
}

/// What the master knows of one agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEntry {
    /// Stable id.
    pub id: AgentId,
    /// The host name the agent reported.
    pub hostname: String,
    /// The address its connection came from.
    pub address: String,
    /// Everything the agent offers.
    pub total: Resources,
    /// What tasks on it hold.
    pub used: Resources,
    /// Operator-given attributes such as `rack=r1`.
    pub attributes: BTreeMap<String, String>,
    /// Active or unreachable.
    pub state: AgentState,
    /// When the agent was last heard from.
    pub last_seen_ms: u64,
    /// When it (re-)registered last.
    pub registered_at_ms: u64,
    /// Increments on every (re-)registration: tells a stale session from the current one.
    pub session: u64,
    /// When the agent is being drained: when what still runs on it is killed (ms).
    pub drain_deadline_ms: Option<u64>,
}

/// A registration as the agent sent it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The agent's id, or `None` on its first registration.
    pub id: Option<AgentId>,
    /// Host name.
    pub hostname: String,
    /// Connection's address.
    pub address: String,
    /// Total resources.
    pub total: Resources,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Something that happened to an agent, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A new agent joined.
    Registered(AgentId),
    /// A known agent registered again (after a restart or a lost connection).
    Reregistered(AgentId),
    /// An agent went silent past the timeout.
    Unreachable(AgentId),
}

/// Why a call about an agent was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    /// The id is not one the master knows.
    #[error("unknown agent {0}: register first")]
    Unknown(AgentId),
    /// The id is malformed.
    #[error("invalid agent id {0:?}: ids are 1 to 64 characters of [A-Za-z0-9-_.]")]
    InvalidId(String),
}

/// Attributes in their wire form.
pub fn attributes_to_pb(attributes: &BTreeMap<String, String>) -> Vec<corral_wire::pb::Attribute> {
    attributes
        .iter()
        .map(|(k, v)| corral_wire::pb::Attribute {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Whether `id` is a well-formed agent id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// All agents the master knows, keyed by id.
#[derive(Debug)]
pub struct Agents {
    agents: BTreeMap<AgentId, AgentEntry>,
    timeout_ms: u64,
    sessions: u64,
}

impl Agents {
    /// An empty book; agents silent for `timeout_ms` become unreachable.
    pub fn new(timeout_ms: u64) -> Self {
        Self {
            agents: BTreeMap::new(),
            timeout_ms,
            sessions: 0,
        }
    }

    /// Registers an agent; `mint` makes an id for an agent that has none.
    ///
    /// Returns the id and the session number of this registration.
    ///
    /// # Errors
    /// [`AgentError::InvalidId`] when the agent sent a malformed id.
    pub fn register(
        &mut self,
        now: u64,
        reg: Registration,
        mint: impl FnOnce() -> AgentId,
    ) -> Result<(AgentId, u64, AgentEvent), AgentError> {
        let id = match reg.id {
            Some(id) if !valid_id(&id) => return Err(AgentError::InvalidId(id)),
            Some(id) => id,
            None => mint(),
        };
        self.sessions += 1;
        let session = self.sessions;
        let event = if self.agents.contains_key(&id) {
            AgentEvent::Reregistered(id.clone())
        } else {
            AgentEvent::Registered(id.clone())
        };
        let used = self
            .agents
            .get(&id)
            .map(|a| a.used.clone())
            .unwrap_or_default();
        self.agents.insert(
            id.clone(),
            AgentEntry {
                id: id.clone(),
                hostname: reg.hostname,
                address: reg.address,
                total: reg.total,
                used,
                attributes: reg.attributes,
                state: AgentState::Active,
                last_seen_ms: now,
                registered_at_ms: now,
                session,
                drain_deadline_ms: None,
            },
        );
        Ok((id, session, event))
    }

    /// Puts back an agent the master knew before it restarted. It counts as active until
    /// it registers again, or until twice the timeout has passed: the agent has first to
    /// notice that the master went away.
    pub fn restore(&mut self, now: u64, mut entry: AgentEntry) {
        entry.state = AgentState::Active;
        entry.last_seen_ms = now.saturating_add(self.timeout_ms);
        entry.session = 0;
        self.agents.insert(entry.id.clone(), entry);
    }

    /// Records a sign of life from an agent's current session.
    ///
    /// # Errors
    /// [`AgentError::Unknown`] when the agent is not registered, or the session is stale
    /// (the agent registered again since) or the agent was marked unreachable: it must
    /// register again.
    pub fn heartbeat(&mut self, now: u64, id: &str, session: u64) -> Result<(), AgentError> {
        match self.agents.get_mut(id) {
            Some(a) if a.session == session && a.state == AgentState::Active => {
                a.last_seen_ms = a.last_seen_ms.max(now);
                Ok(())
            }
            _ => Err(AgentError::Unknown(id.to_owned())),
        }
    }

    /// Marks agents silent for longer than the timeout unreachable.
    pub fn tick(&mut self, now: u64) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        for a in self.agents.values_mut() {
            if a.state == AgentState::Active && now.saturating_sub(a.last_seen_ms) > self.timeout_ms
            {
                a.state = AgentState::Unreachable;
                events.push(AgentEvent::Unreachable(a.id.clone()));
            }
        }
        events
    }

    /// The agent with this id.
    pub fn get(&self, id: &str) -> Option<&AgentEntry> {
        self.agents.get(id)
    }

    /// The agent with this id, to change its resource use.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut AgentEntry> {
        self.agents.get_mut(id)
    }

    /// Every agent, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &AgentEntry> {
        self.agents.values()
    }

    /// How many agents are known.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: Option<&str>) -> Registration {
        Registration {
            id: id.map(str::to_owned),
            hostname: "h".into(),
            address: "127.0.0.1:1".into(),
            total: Resources {
                cpus_milli: 2000,
                mem_mb: 1024,
                disk_mb: 0,
                ports: vec![],
            },
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn silent_agent_becomes_unreachable_and_comes_back_on_reregistration() {
        let mut agents = Agents::new(1000);
        let (id, s1, ev) = agents.register(0, reg(None), || "a1".into()).unwrap();
        assert_eq!(ev, AgentEvent::Registered("a1".into()));
        agents.heartbeat(900, &id, s1).unwrap();
        assert!(
            agents.tick(1900).is_empty(),
            "1000 ms since the heartbeat is not over"
        );
        assert_eq!(
            agents.tick(1901),
            vec![AgentEvent::Unreachable("a1".into())]
        );
        assert!(agents.tick(5000).is_empty(), "reported once");
        assert_eq!(agents.get("a1").unwrap().state, AgentState::Unreachable);
        // A heartbeat does not revive it: the agent must register again.
        assert!(agents.heartbeat(5001, &id, s1).is_err());
        let (id2, s2, ev) = agents
            .register(5002, reg(Some("a1")), || unreachable!())
            .unwrap();
        assert_eq!(
            (id2.as_str(), ev),
            ("a1", AgentEvent::Reregistered("a1".into()))
        );
        assert_eq!(agents.get("a1").unwrap().state, AgentState::Active);
        assert!(
            agents.heartbeat(5003, "a1", s1).is_err(),
            "old session is stale"
        );
        agents.heartbeat(5003, "a1", s2).unwrap();
    }

    #[test]
    fn malformed_ids_are_refused() {
        let mut agents = Agents::new(1000);
        let err = agents
            .register(0, reg(Some("../etc")), || "x".into())
            .unwrap_err();
        assert_eq!(err, AgentError::InvalidId("../etc".into()));
        assert!(agents.is_empty());
    }
}
