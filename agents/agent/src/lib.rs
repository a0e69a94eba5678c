//! The Corral agent: joins a master over QUIC, registers its resources, heartbeats, and
//! reconnects with exponential backoff and jitter while the master is away.
//!
//! [`Agent::start`] must be called inside an actix `System`. It starts the
//! [`AgentActor`](agent_actor::AgentActor), which owns the agent's state (its id, kept in
//! the state folder across restarts), and the [link](link) task that holds the
//! connection to the master and feeds the actor what arrives.

pub mod agent_actor;
pub mod config;
pub mod host;
pub mod link;

use actix::{Actor, Addr};

pub use config::AgentConfig;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The state folder could not be read or written.
    #[error("state folder {}", path.display())]
    State {
        /// The file or folder.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is unusable.
    #[error(transparent)]
    Transport(#[from] corral_transport::TransportError),
}

/// A running agent.
pub struct Agent {
    /// The actor that owns the agent's state.
    pub actor: Addr<agent_actor::AgentActor>,
}

impl Agent {
    /// Starts the agent actor and its link to the master.
    ///
    /// # Errors
    /// [`AgentError`] when the configuration or state folder is unusable.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        config.validate().map_err(AgentError::Config)?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::State {
            path: config.state_dir.clone(),
            source,
        })?;
        let endpoint = corral_transport::client_endpoint(&config.ca)?;
        let state = agent_actor::AgentActor::load(&config)?;
        let actor = state.start();
        actix::spawn(link::run(endpoint, actor.clone(), config));
        Ok(Self { actor })
    }
}
