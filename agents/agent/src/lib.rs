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
pub mod http;
pub mod link;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr};
use corral_containerizer::{
    Containerizer, DockerConfig, DockerContainerizer, SimulatedContainerizer,
};

pub use config::{AgentConfig, ContainerizerKind};

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
    /// The Docker engine does not answer.
    #[error("cannot use the Docker engine (is it running? is DOCKER_HOST right?)")]
    Docker(#[source] corral_containerizer::ContainerError),
    /// The CA file is unusable.
    #[error(transparent)]
    Transport(#[from] corral_transport::TransportError),
    /// The HTTP address cannot be bound.
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// A running agent.
pub struct Agent {
    /// The actor that owns the agent's state.
    pub actor: Addr<agent_actor::AgentActor>,
    endpoint: quinn::Endpoint,
    /// Set by [`Agent::shutdown`], for the link to end quietly.
    stopping: Arc<AtomicBool>,
}

impl Agent {
    /// Connects the containerizer, recovers the agent's tasks, and starts the agent actor
    /// and its link to the master.
    ///
    /// # Errors
    /// [`AgentError`] when the configuration or state folder is unusable, or the Docker
    /// engine does not answer.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        config.validate().map_err(AgentError::Config)?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::State {
            path: config.state_dir.clone(),
            source,
        })?;
        let http = config.http.map(http::bind).transpose()?;
        let endpoint = corral_transport::client_endpoint(&config.ca)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let containerizer: Arc<dyn Containerizer> = match &config.containerizer {
            ContainerizerKind::Docker => {
                let docker_config = DockerConfig {
                    port_range: config
                        .resources
                        .ports
                        .iter()
                        .map(|&(begin, end)| corral_wire::pb::PortRange { begin, end })
                        .collect(),
                    ..Default::default()
                };
                Arc::new(
                    DockerContainerizer::connect(docker_config, tx)
                        .await
                        .map_err(AgentError::Docker)?,
                )
            }
            ContainerizerKind::Simulated(sim) => {
                Arc::new(SimulatedContainerizer::new(sim.clone(), tx))
            }
        };
        let state = agent_actor::AgentActor::load(&config, containerizer, rx).await?;
        let actor = state.start();
        if let Some(listener) = http {
            http::serve(listener, actor.clone());
        }
        let stopping = Arc::new(AtomicBool::new(false));
        actix::spawn(link::run(
            endpoint.clone(),
            actor.clone(),
            config,
            stopping.clone(),
        ));
        Ok(Self {
            actor,
            endpoint,
            stopping,
        })
    }

    /// Closes the connection to the master, saying so, and waits (a second at most) for
    /// the master to hear it: the master then knows at once that the agent is gone, and
    /// keeps its tasks until the agent timeout, for it to come back.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.endpoint.close(0u32.into(), b"agent stopping");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh id for a status update.
pub fn new_update_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
