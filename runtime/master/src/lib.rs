//! The Corral master: the actors that keep the cluster's books and serve agents and
//! clients over QUIC.
//!
//! [`Master::start`] must be called inside an actix `System`. It makes (or reads) the
//! cluster CA in the state folder, binds the QUIC endpoint and starts:
//!
//! - the [registry actor](registry_actor::RegistryActor), which owns the sans-IO
//!   [`Agents`](corral_core::agents::Agents) book and marks silent agents unreachable;
//! - one [agent session actor](agent_session::AgentSession) per connected agent;
//! - a request handler per client stream (the CLI and tools), see [`server`].

pub mod agent_session;
pub mod config;
pub mod registry_actor;
pub mod server;

use std::net::SocketAddr;

use actix::{Actor, Addr};

pub use config::MasterConfig;
use corral_transport::{pki::MasterIdentity, TransportError};
use registry_actor::RegistryActor;

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The state folder, certificates or socket failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A running master.
pub struct Master {
    /// The QUIC address it serves.
    pub local_addr: SocketAddr,
    /// The registry actor.
    pub registry: Addr<RegistryActor>,
    endpoint: quinn::Endpoint,
}

impl Master {
    /// Starts the master's actors and its QUIC endpoint.
    ///
    /// # Errors
    /// [`MasterError`] when the configuration is invalid, the state folder cannot be
    /// written or the address cannot be bound.
    pub fn start(config: MasterConfig) -> Result<Self, MasterError> {
        config.validate().map_err(MasterError::Config)?;
        let identity =
            MasterIdentity::load_or_create(&config.state_dir).map_err(TransportError::from)?;
        let endpoint = corral_transport::server_endpoint(config.listen, identity)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let registry = RegistryActor::new(&config).start();
        actix::spawn(server::accept_loop(
            endpoint.clone(),
            registry.clone(),
            config.clone(),
        ));
        tracing::info!(addr = %local_addr, state = %config.state_dir.display(), "master listening");
        Ok(Self {
            local_addr,
            registry,
            endpoint,
        })
    }

    /// Closes every connection and stops accepting new ones.
    pub fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"master shutting down");
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
