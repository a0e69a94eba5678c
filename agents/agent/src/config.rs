//! The agent's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use corral_core::Resources;

/// Everything the agent needs to start; validated once by [`AgentConfig::validate`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The master's QUIC address.
    pub master: SocketAddr,
    /// The cluster CA to trust.
    pub ca: PathBuf,
    /// Folder for the agent's id and checkpoints.
    pub state_dir: PathBuf,
    /// The resources to register.
    pub resources: Resources,
    /// Attributes such as `rack=r1`.
    pub attributes: BTreeMap<String, String>,
    /// The host name to report.
    pub hostname: String,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// The largest frame the master may send.
    pub max_frame: usize,
    /// What runs the tasks.
    pub containerizer: ContainerizerKind,
    /// How long a finished task's container (and its logs) is kept before removal.
    pub retention: Duration,
    /// TCP address for `/metrics` and `/health`; `None` serves no HTTP.
    pub http: Option<SocketAddr>,
}

/// What runs an agent's tasks.
#[derive(Debug, Clone)]
pub enum ContainerizerKind {
    /// Docker containers, through the engine's API.
    Docker,
    /// No containers: each task "runs" as configured, for scale tests. Its checkpoint is
    /// not synced to disk (nothing real runs).
    Simulated(corral_containerizer::SimulatedConfig),
}

impl AgentConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.resources.cpus_milli == 0 {
            return Err("cpus must be more than zero".into());
        }
        if self.resources.mem_mb == 0 {
            return Err("memory must be more than zero".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err("backoff must be positive and its maximum no less than its start".into());
        }
        if !self.ca.exists() {
            return Err(format!(
                "CA file {} does not exist: start the master first, or pass --ca with the \
                 master's ca.pem",
                self.ca.display()
            ));
        }
        Ok(())
    }
}
