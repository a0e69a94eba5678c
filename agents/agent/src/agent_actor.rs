//! The agent actor: owns the agent's id and what it registers.

use std::path::PathBuf;

use actix::prelude::*;
use corral_wire::pb;

use crate::{AgentConfig, AgentError};

const ID_FILE: &str = "agent_id";

/// The agent's state.
pub struct AgentActor {
    agent_id: Option<String>,
    id_path: PathBuf,
    config: AgentConfig,
}

impl AgentActor {
    /// Reads the agent's id (if it has registered before) from its state folder.
    ///
    /// # Errors
    /// [`AgentError::State`] when the id file exists but cannot be read.
    pub fn load(config: &AgentConfig) -> Result<Self, AgentError> {
        let id_path = config.state_dir.join(ID_FILE);
        let agent_id = match std::fs::read_to_string(&id_path) {
            Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(AgentError::State {
                    path: id_path,
                    source,
                })
            }
        };
        Ok(Self {
            agent_id,
            id_path,
            config: config.clone(),
        })
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;
}

/// The registration to send the master now.
#[derive(Message)]
#[rtype(result = "pb::RegisterAgent")]
pub struct GetRegistration;

impl Handler<GetRegistration> for AgentActor {
    type Result = MessageResult<GetRegistration>;

    fn handle(&mut self, _: GetRegistration, _: &mut Self::Context) -> Self::Result {
        MessageResult(pb::RegisterAgent {
            agent_id: self.agent_id.clone().unwrap_or_default(),
            hostname: self.config.hostname.clone(),
            total: Some((&self.config.resources).into()),
            attributes: self
                .config
                .attributes
                .iter()
                .map(|(k, v)| pb::Attribute {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            running_tasks: Vec::new(),
        })
    }
}

/// The master accepted the registration under this id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Registered {
    /// The id the master confirmed or assigned.
    pub agent_id: String,
}

impl Handler<Registered> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Registered, _: &mut Self::Context) {
        if self.agent_id.as_deref() != Some(&msg.agent_id) {
            // Written to a temporary file and renamed, so a crash leaves the old id or the new.
            let tmp = self.id_path.with_extension("tmp");
            let written = std::fs::write(&tmp, &msg.agent_id)
                .and_then(|()| std::fs::rename(&tmp, &self.id_path));
            if let Err(e) = written {
                tracing::error!(path = %self.id_path.display(), error = %e, "cannot keep the agent id");
            }
        }
        tracing::info!(agent_id = %msg.agent_id, "registered with the master");
        self.agent_id = Some(msg.agent_id);
    }
}

/// The agent's id, once it has one.
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct GetAgentId;

impl Handler<GetAgentId> for AgentActor {
    type Result = Option<String>;

    fn handle(&mut self, _: GetAgentId, _: &mut Self::Context) -> Self::Result {
        self.agent_id.clone()
    }
}

/// A message from the master for the agent to act on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromMaster(pub pb::envelope::Body);

impl Handler<FromMaster> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: FromMaster, _: &mut Self::Context) {
        tracing::debug!(message = ?msg.0, "message from master");
    }
}
