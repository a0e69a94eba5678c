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
pub mod allocator_actor;
pub mod config;
mod convert;
pub mod framework_actor;
pub mod frameworks;
pub mod http;
pub mod registry_actor;
pub mod registry_frameworks;
pub mod registry_store;
pub mod server;
pub mod store;

use std::net::SocketAddr;

use actix::{Actor, Addr};

pub use config::{MasterConfig, DEFAULT_MAX_COMPLETED_FRAMEWORKS, DEFAULT_MAX_COMPLETED_TASKS};
use corral_transport::{pki::MasterIdentity, TransportError};
use registry_actor::RegistryActor;

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The policy host could not start, or the first allocator was refused.
    #[error("allocator policy: {0}")]
    Policy(String),
    /// The state folder, certificates or socket failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP address cannot be bound.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The thread that drives the QUIC endpoint could not start.
    #[error("cannot start the QUIC thread: {0}")]
    QuicThread(std::io::Error),
}

/// A running master.
pub struct Master {
    /// The QUIC address it serves.
    pub local_addr: SocketAddr,
    /// The address the HTTP API, metrics and web UI are served on, if any.
    pub http_addr: Option<SocketAddr>,
    /// The registry actor.
    pub registry: Addr<RegistryActor>,
    /// The allocator actor.
    pub allocator: Addr<allocator_actor::AllocatorActor>,
    endpoint: quinn::Endpoint,
    _quic: QuicRuntime,
}

/// The thread that drives the master's QUIC endpoint and connections: packets, handshakes,
/// acknowledgements and keep-alives go on while the registry is busy with a burst of
/// launches, so agents never take a busy master for a dead one. quinn runs a connection's
/// driver on the runtime that accepts it, so connections are accepted here
/// ([`server::handshakes`]) and only then handed to the actors.
struct QuicRuntime {
    /// Taken when dropped.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl QuicRuntime {
    fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-quic")
            .enable_all()
            .build()?;
        Ok(QuicRuntime {
            handle: rt.handle().clone(),
            rt: Some(rt),
        })
    }

    /// Runs `f` with this runtime as the current one (where quinn spawns its drivers).
    fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        let _on = self.handle.enter();
        f()
    }

    /// A handle to spawn on this runtime: connections accepted there have their drivers
    /// there too.
    fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for QuicRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Allowed inside an async context, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

impl Master {
    /// Starts the master's actors and its QUIC endpoint.
    ///
    /// # Errors
    /// [`MasterError`] when the configuration is invalid, the state folder cannot be
    /// written, the address cannot be bound, the QUIC thread cannot start or the first
    /// allocator does not load.
    pub fn start(config: MasterConfig) -> Result<Self, MasterError> {
        config.validate().map_err(MasterError::Config)?;
        let http = config.http.map(http::bind).transpose()?;
        let identity =
            MasterIdentity::load_or_create(&config.state_dir).map_err(TransportError::from)?;
        let quic = QuicRuntime::start().map_err(MasterError::QuicThread)?;
        let endpoint = quic.enter(|| corral_transport::server_endpoint(config.listen, identity))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        // Handshakes start now, on the QUIC thread, while the registry is read: agents
        // reconnecting to a restarted master are ready to re-register when it is.
        let (connections, handshaken) = tokio::sync::mpsc::unbounded_channel();
        quic.handle()
            .spawn(server::handshakes(endpoint.clone(), connections));
        let started = std::time::Instant::now();
        let (store, loaded) = store::Store::open(&config.state_dir)?;
        let host = corral_policy::PolicyHost::new(corral_policy::PolicyConfig {
            scheduler_budget: config.scheduler_budget,
            ..Default::default()
        })
        .map_err(|e| MasterError::Policy(e.to_string()))?;
        let slot = std::sync::Arc::new(corral_policy::AllocatorSlot::new(&host, "allocator"));
        let saved_digest = loaded
            .meta
            .get(registry_store::ALLOCATOR_KEY)
            .and_then(|d| std::str::from_utf8(d).ok());
        let saved_allocator = saved_digest.and_then(|d| loaded.components.get(d));
        // An allocator from a file is saved as the one a restart loads (with or without
        // `--allocator`), as a swap's is, unless it is the one saved already.
        let mut from_file = None;
        let first = match (&config.allocator, saved_allocator) {
            (Some(path), _) => corral_policy::read_component(path).and_then(|bytes| {
                let record = slot.swap(&bytes, "master start")?;
                if saved_allocator.is_none() || saved_digest != Some(record.digest.as_str()) {
                    from_file = Some(bytes);
                }
                Ok(record)
            }),
            (None, Some(bytes)) => slot.swap(bytes, "restored").or_else(|e| {
                tracing::warn!(error = %e, "the saved allocator does not load; using the built-in DRF");
                slot.swap(corral_policy::builtin::DRF, "built-in")
            }),
            (None, None) => {
                // The built-in DRF's component is not saved: a digest saved without one is
                // the built-in's, unless the registry lost it.
                if saved_digest
                    .is_some_and(|d| d != corral_policy::digest(corral_policy::builtin::DRF))
                {
                    tracing::warn!(digest = ?saved_digest, "the registry lacks the saved allocator's component; using the built-in DRF");
                }
                slot.swap(corral_policy::builtin::DRF, "built-in")
            }
        };
        let first = first.map_err(|e| MasterError::Policy(e.to_string()))?;
        tracing::info!(digest = %first.digest, "allocator loaded");
        let slots = restore_schedulers(&host, &loaded);
        let (n_agents, n_tasks, n_frameworks) = (
            loaded.agents.len(),
            loaded.tasks.len(),
            loaded.frameworks.len(),
        );
        let mut books = RegistryActor::new(&config, Some(store));
        let empty_host = host.clone();
        books.restore(loaded, slots, move |name| {
            std::sync::Arc::new(corral_policy::SchedulerSlot::new(
                &empty_host,
                &format!("framework/{name}"),
            ))
        });
        if let Some(bytes) = from_file {
            books.save_allocator(first.digest.clone(), bytes);
            books.flush(None);
        }
        if n_agents + n_tasks + n_frameworks > 0 {
            tracing::info!(
                agents = n_agents,
                tasks = n_tasks,
                frameworks = n_frameworks,
                took_ms = started.elapsed().as_millis() as u64,
                "registry restored"
            );
        }
        let registry = books.start();
        let allocator = allocator_actor::AllocatorActor::new(
            slot,
            registry.clone(),
            config.allocation_interval,
        )
        .start();
        registry.do_send(registry_actor::UseAllocator(allocator.clone()));
        actix::spawn(server::accept_loop(
            handshaken,
            server::Services {
                registry: registry.clone(),
                allocator: allocator.clone(),
                host,
                quic: quic.handle(),
            },
            config.clone(),
        ));
        let http_addr = http.map(|(listener, addr)| {
            http::serve(
                (listener, addr),
                registry.clone(),
                allocator.clone(),
                local_addr,
            );
            addr
        });
        tracing::info!(addr = %local_addr, state = %config.state_dir.display(), "master listening");
        Ok(Self {
            local_addr,
            http_addr,
            registry,
            allocator,
            endpoint,
            _quic: quic,
        })
    }

    /// Saves every policy's latest counts and state (for the history a restart shows),
    /// then closes every connection and stops accepting new ones.
    pub async fn shutdown(&self) {
        let allocator = self
            .allocator
            .send(allocator_actor::AllocatorHistory)
            .await
            .unwrap_or_default();
        let (durable, saved) = tokio::sync::oneshot::channel();
        let asked = self
            .registry
            .send(registry_store::SaveAllPolicies { allocator, durable })
            .await;
        let done = match asked {
            Ok(()) => matches!(
                tokio::time::timeout(std::time::Duration::from_secs(5), saved).await,
                Ok(Ok(()))
            ),
            Err(_) => false,
        };
        if !done {
            tracing::warn!("the policy history was not saved (within 5 s) as the master stopped");
        }
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

/// The schedulers of the running frameworks in `loaded`, by framework id: loaded, or why
/// not (a component built against an older contract, say); a framework whose scheduler
/// no longer loads is restored as failed, with the reason.
fn restore_schedulers(
    host: &corral_policy::PolicyHost,
    loaded: &store::Loaded,
) -> std::collections::HashMap<String, Result<std::sync::Arc<corral_policy::SchedulerSlot>, String>>
{
    let mut slots = std::collections::HashMap::new();
    for f in &loaded.frameworks {
        if f.state != corral_wire::pb::FrameworkState::FrameworkActive as i32 {
            continue;
        }
        let Some(bytes) = loaded.components.get(&f.scheduler_digest) else {
            tracing::error!(framework = %f.framework_id, "the saved registry lacks this framework's scheduler");
            slots.insert(
                f.framework_id.clone(),
                Err("the registry lacks its component".to_owned()),
            );
            continue;
        };
        let slot = std::sync::Arc::new(corral_policy::SchedulerSlot::new(
            host,
            &format!("framework/{}", f.name),
        ));
        slot.prime(registry_frameworks::initial_view(
            &f.framework_id,
            &f.name,
            &f.role,
            &f.workload,
        ));
        match slot.restore(bytes, "restored") {
            Ok(_) => {
                slots.insert(f.framework_id.clone(), Ok(slot));
            }
            Err(e) => {
                tracing::error!(framework = %f.framework_id, error = %e, "the saved scheduler does not load");
                slots.insert(f.framework_id.clone(), Err(e.to_string()));
            }
        }
    }
    slots
}
