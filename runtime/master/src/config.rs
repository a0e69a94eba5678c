//! The master's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the master needs to start; validated once by [`MasterConfig::validate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterConfig {
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// Folder for the cluster CA, certificates and the registry.
    pub state_dir: PathBuf,
    /// Silence after which an agent is marked unreachable.
    pub agent_timeout: Duration,
    /// How often agents should heartbeat.
    pub heartbeat_interval: Duration,
    /// The largest frame a peer may send, in bytes.
    pub max_frame: usize,
    /// TCP address for the HTTP API, metrics and web UI; `None` serves no HTTP.
    pub http: Option<SocketAddr>,
    /// Time between allocation cycles.
    pub allocation_interval: Duration,
    /// The allocator component to start with; `None` uses the built-in weighted DRF.
    pub allocator: Option<PathBuf>,
    /// How long one call of a framework's scheduler may run before it is stopped.
    pub scheduler_budget: Duration,
    /// How many ended frameworks the master keeps, with their tasks, for `framework list`
    /// and `framework show`; older ones are forgotten (Mesos's `--max_completed_frameworks`).
    #[serde(default = "default_max_completed_frameworks")]
    pub max_completed_frameworks: usize,
    /// How many ended tasks run without a framework (`corral task run`) the master keeps;
    /// older ones are forgotten.
    #[serde(default = "default_max_completed_tasks")]
    pub max_completed_tasks: usize,
    /// How many ended tasks of each running framework the master keeps (and shows its
    /// scheduler); older ones are forgotten, except the newest attempt of every instance
    /// name (Mesos's `--max_completed_tasks_per_framework`).
    #[serde(default = "default_max_completed_tasks")]
    pub max_completed_tasks_per_framework: usize,
}

/// Ended frameworks kept by default, as in Mesos.
pub const DEFAULT_MAX_COMPLETED_FRAMEWORKS: usize = 50;

fn default_max_completed_frameworks() -> usize {
    DEFAULT_MAX_COMPLETED_FRAMEWORKS
}

/// Ended tasks kept by default, without a framework and per running framework (as Mesos
/// keeps per framework).
pub const DEFAULT_MAX_COMPLETED_TASKS: usize = 1000;

fn default_max_completed_tasks() -> usize {
    DEFAULT_MAX_COMPLETED_TASKS
}

/// How long one scheduler call may run by default: enough for a view of tens of thousands
/// of tasks, short enough to stop a runaway policy soon.
pub const DEFAULT_SCHEDULER_BUDGET: Duration = Duration::from_millis(250);

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 5050).into(),
            state_dir: PathBuf::from(".corral/master"),
            agent_timeout: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(1),
            max_frame: corral_wire::DEFAULT_MAX_FRAME,
            http: Some(([127, 0, 0, 1], 5051).into()),
            allocation_interval: Duration::from_millis(250),
            allocator: None,
            scheduler_budget: DEFAULT_SCHEDULER_BUDGET,
            max_completed_frameworks: DEFAULT_MAX_COMPLETED_FRAMEWORKS,
            max_completed_tasks: DEFAULT_MAX_COMPLETED_TASKS,
            max_completed_tasks_per_framework: DEFAULT_MAX_COMPLETED_TASKS,
        }
    }
}

impl MasterConfig {
    /// Checks that the values make sense together.
    ///
    /// # Errors
    /// A message naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat interval must be more than zero".into());
        }
        if self.agent_timeout <= self.heartbeat_interval {
            return Err(format!(
                "agent timeout ({} ms) must be longer than the heartbeat interval ({} ms)",
                self.agent_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        if self.allocation_interval.is_zero() {
            return Err("allocation interval must be more than zero".into());
        }
        if let Some(path) = &self.allocator {
            if !path.is_file() {
                return Err(format!(
                    "allocator component {} is not a file",
                    path.display()
                ));
            }
        }
        let policy = corral_policy::PolicyConfig {
            scheduler_budget: self.scheduler_budget,
            ..Default::default()
        };
        policy.validate().map_err(|e| e.to_string())?;
        if self.max_frame < 1024 {
            return Err("max frame must be at least 1024 bytes".into());
        }
        Ok(())
    }
}
