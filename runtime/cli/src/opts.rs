//! Options of every subcommand, and their dispatch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use corral_core::Resources;

/// An error in what the user asked for: exits with status 64.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Corral: a small cluster manager with hot-swappable WebAssembly scheduling.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Log filter, as RUST_LOG (for example `info` or `corral_master=debug`).
    #[arg(long, global = true, env = "CORRAL_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master.
    Master(MasterOpts),
    /// Run an agent that joins a master; or drain or undrain one.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        #[command(subcommand)]
        cmd: Option<AgentCmd>,
        #[command(flatten)]
        opts: AgentOpts,
    },
    /// Run a master and one agent on this machine until Ctrl-C.
    Up(UpOpts),
    /// List the agents a master knows.
    Agents(ClientOpts),
    /// List and swap policies.
    Policy {
        #[command(subcommand)]
        cmd: crate::policy::PolicyCmd,
    },
    /// Submit, list, show, update and kill frameworks; try one offline.
    Framework {
        #[command(subcommand)]
        cmd: crate::framework::FrameworkCmd,
    },
    /// Run, list, kill and read the logs of tasks.
    Task {
        #[command(subcommand)]
        cmd: crate::task::TaskCmd,
    },
    /// Print benchmark figures.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Stop offering an agent's resources and ask its frameworks to move their tasks off
    /// it; what still runs there at the deadline is killed.
    Drain {
        #[command(flatten)]
        client: ClientOpts,
        /// The agent's id.
        id: String,
        /// How long frameworks have to move their tasks (default 5m).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
    },
    /// Offer a drained agent's resources again.
    Undrain {
        #[command(flatten)]
        client: ClientOpts,
        /// The agent's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Messages per second and round-trip latency over one QUIC connection to a real master
    /// process started for the benchmark.
    Wire(crate::bench::WireOpts),
    /// Placements per second end to end (submitted → RUNNING) with the `hello` framework
    /// on simulated agents over QUIC, against a real master process.
    Placements(crate::bench::PlacementsOpts),
    /// Master restart time (kill -9, then start) with a large registry of simulated
    /// agents and tasks, until every agent has re-registered.
    Restart(crate::bench::RestartOpts),
}

/// Where Corral keeps state when no folder is named: `$CORRAL_HOME`, else `~/.corral`.
fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("CORRAL_HOME") {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".corral"))
        .unwrap_or_else(|| PathBuf::from(".corral"))
}

fn default_master_state() -> PathBuf {
    home().join("master")
}

#[derive(Debug, Args)]
pub struct MasterOpts {
    /// UDP address to serve QUIC on.
    #[arg(long, default_value = DEFAULT_MASTER)]
    pub listen: SocketAddr,
    /// State folder (cluster CA, certificates, registry). Default: ~/.corral/master.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Silence after which an agent is marked unreachable (e.g. 15s, 500ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// How often agents heartbeat.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Largest frame a peer may send, in bytes.
    #[arg(long, default_value_t = corral_wire::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// TCP address for the HTTP API, /metrics and the web UI, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5051", value_parser = parse_http)]
    pub http: HttpListen,
    /// Time between allocation cycles.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub allocation_interval: Duration,
    /// The allocator component to start with (default: the allocator active when the
    /// master last stopped, or the built-in weighted DRF). It is kept like a swapped one:
    /// a restart without this flag loads it again.
    #[arg(long)]
    pub allocator: Option<PathBuf>,
    /// How long one call of a framework's scheduler may run (raise it for frameworks with
    /// very many tasks).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub scheduler_budget: Duration,
    /// Exit when standard input ends: a master started by another program (`corral
    /// framework try`, the benchmarks) then never outlives it, however it ends.
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
    /// How many ended frameworks to keep, with their tasks, for `framework list` and
    /// `framework show`; older ones are forgotten.
    #[arg(long, default_value_t = corral_master::DEFAULT_MAX_COMPLETED_FRAMEWORKS)]
    pub max_completed_frameworks: usize,
    /// How many ended tasks run without a framework (`corral task run`) to keep; older
    /// ones are forgotten.
    #[arg(long, default_value_t = corral_master::DEFAULT_MAX_COMPLETED_TASKS)]
    pub max_completed_tasks: usize,
    /// How many ended tasks of each running framework to keep (and show its scheduler);
    /// older ones are forgotten, but never the newest attempt of an instance name.
    #[arg(long, default_value_t = corral_master::DEFAULT_MAX_COMPLETED_TASKS)]
    pub max_completed_tasks_per_framework: usize,
}

#[derive(Debug, Args)]
pub struct AgentOpts {
    /// The master's QUIC address: IP:PORT, or HOST:PORT (resolved once, at start).
    #[arg(long, default_value = DEFAULT_MASTER, value_parser = parse_master_addr)]
    pub master: SocketAddr,
    /// The cluster CA to trust. Default: the local master's ~/.corral/master/ca.pem.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// State folder (agent id, checkpoints). Default: ~/.corral/agent.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// CPUs to offer (default: all of this host's).
    #[arg(long, value_parser = corral_core::parse_cpus)]
    pub cpus: Option<u64>,
    /// Memory to offer in MB (default: all of this host's).
    #[arg(long)]
    pub mem: Option<u64>,
    /// Disk to offer in MB (default: free space of the state folder's file system).
    #[arg(long)]
    pub disk: Option<u64>,
    /// Host ports tasks may use, as BEGIN-END.
    #[arg(long, default_value = "31000-32000", value_parser = parse_port_range)]
    pub ports: (u32, u32),
    /// An attribute KEY=VALUE (repeatable), for example rack=r1.
    #[arg(long = "attribute", value_parser = parse_key_value)]
    pub attributes: Vec<(String, String)>,
    /// The host name to report (default: this machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Longest delay between reconnect attempts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// What runs tasks: Docker containers, or simulated ones (for scale tests).
    #[arg(long, value_enum, default_value_t = ContainerizerOpt::Docker)]
    pub containerizer: ContainerizerOpt,
    /// How long a finished task's container and logs are kept.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub retention: Duration,
    /// With the simulated containerizer: how long each task runs.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub sim_run_time: Duration,
    /// TCP address for /metrics and /health, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5052", value_parser = parse_http)]
    pub http: HttpListen,
}

/// Where to serve HTTP: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy)]
pub struct HttpListen(pub Option<SocketAddr>);

fn parse_http(text: &str) -> Result<HttpListen, String> {
    if text == "off" {
        return Ok(HttpListen(None));
    }
    text.parse()
        .map(|a| HttpListen(Some(a)))
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:5051 (or off)"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ContainerizerOpt {
    Docker,
    Simulated,
}

#[derive(Debug, Args)]
pub struct UpOpts {
    /// Root folder for the master's and the agent's state. Default: ~/.corral.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// UDP address for the master.
    #[arg(long, default_value = DEFAULT_MASTER)]
    pub listen: SocketAddr,
    /// TCP address for the master's HTTP API and web UI, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5051", value_parser = parse_http)]
    pub http: HttpListen,
    /// TCP address for the agent's /metrics, or `off`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5052", value_parser = parse_http)]
    pub agent_http: HttpListen,
    /// The image the `hello` example runs once the cluster is up.
    #[arg(long, default_value = "busybox:latest")]
    pub hello_image: String,
    /// Do not run the `hello` example.
    #[arg(long)]
    pub no_hello: bool,
}

/// How a client command reaches the master.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The master's QUIC address: IP:PORT, or HOST:PORT.
    #[arg(
        long,
        env = "CORRAL_MASTER",
        default_value = DEFAULT_MASTER,
        value_parser = parse_master_addr
    )]
    pub master: SocketAddr,
    /// The cluster CA to trust. Default: ~/.corral/master/ca.pem.
    #[arg(long, env = "CORRAL_CA")]
    pub ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ClientOpts {
    pub fn ca_path(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| default_master_state().join(corral_transport::pki::CA_FILE))
    }
}

/// The master's QUIC address when none is given.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// Parses a master's address: `IP:PORT`, or `HOST:PORT` resolved now (its first address).
pub fn parse_master_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = "expected IP:PORT or HOST:PORT, like 10.0.0.1:5050 or master.example:5050";
    if text.rsplit_once(':').is_none_or(|(host, port)| {
        host.is_empty() || port.is_empty() || port.parse::<u16>().is_err()
    }) {
        return Err(format!("{text:?}: {expected}"));
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?}: the name has no address")),
        Err(e) => Err(format!("{text:?}: cannot resolve the name: {e}")),
    }
}

/// Parses `15s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 15s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

fn parse_port_range(text: &str) -> Result<(u32, u32), String> {
    let (b, e) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range BEGIN-END"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    let e: u16 = e
        .trim()
        .parse()
        .map_err(|_| format!("{e:?} is not a port"))?;
    if b == 0 {
        return Err(format!("{text:?}: port 0 cannot be given to a container"));
    }
    if b > e {
        return Err(format!("{text:?} runs backwards: write it LOW-HIGH"));
    }
    Ok((b.into(), e.into()))
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{text:?}: the key is empty"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub fn init_tracing(global: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, not in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn master_config(o: &MasterOpts) -> corral_master::MasterConfig {
    corral_master::MasterConfig {
        listen: o.listen,
        state_dir: o.state.clone().unwrap_or_else(default_master_state),
        agent_timeout: o.agent_timeout,
        heartbeat_interval: o.heartbeat_interval,
        max_frame: o.max_frame,
        http: o.http.0,
        allocation_interval: o.allocation_interval,
        allocator: o.allocator.clone(),
        scheduler_budget: o.scheduler_budget,
        max_completed_frameworks: o.max_completed_frameworks,
        max_completed_tasks: o.max_completed_tasks,
        max_completed_tasks_per_framework: o.max_completed_tasks_per_framework,
    }
}

fn agent_config(o: &AgentOpts) -> corral_agent::AgentConfig {
    let state_dir = o.state.clone().unwrap_or_else(|| home().join("agent"));
    let disk_probe = if state_dir.exists() {
        state_dir.as_path()
    } else {
        Path::new("/")
    };
    corral_agent::AgentConfig {
        master: o.master,
        ca: o
            .ca
            .clone()
            .unwrap_or_else(|| default_master_state().join(corral_transport::pki::CA_FILE)),
        resources: Resources {
            cpus_milli: o.cpus.unwrap_or_else(corral_agent::host::cpus_milli),
            mem_mb: o.mem.or_else(corral_agent::host::mem_mb).unwrap_or(1024),
            disk_mb: o
                .disk
                .or_else(|| corral_agent::host::disk_mb(disk_probe))
                .unwrap_or(0),
            ports: vec![o.ports],
        },
        state_dir,
        attributes: o.attributes.iter().cloned().collect::<BTreeMap<_, _>>(),
        hostname: o
            .hostname
            .clone()
            .unwrap_or_else(corral_agent::host::hostname),
        backoff_initial: Duration::from_millis(100),
        backoff_max: o.backoff_max,
        max_frame: corral_wire::DEFAULT_MAX_FRAME,
        http: o.http.0,
        retention: o.retention,
        containerizer: match o.containerizer {
            ContainerizerOpt::Docker => corral_agent::ContainerizerKind::Docker,
            ContainerizerOpt::Simulated => {
                corral_agent::ContainerizerKind::Simulated(corral_containerizer::SimulatedConfig {
                    run_time: o.sim_run_time,
                    ..Default::default()
                })
            }
        },
    }
}

/// A port already in use, or a state folder another master holds, is bad configuration
/// (exit status 64), as the message says (`choose another with --http`).
fn master_error(e: corral_master::MasterError) -> anyhow::Error {
    match e {
        corral_master::MasterError::Http(h) => usage(format!("{h}: {}", h.source)),
        corral_master::MasterError::Transport(corral_transport::TransportError::Bind {
            addr,
            source,
        }) => usage(format!(
            "cannot listen on {addr} (is another master there? choose another with --listen): {source}"
        )),
        corral_master::MasterError::Store(e @ corral_master::store::StoreError::InUse { .. }) => {
            usage(e.to_string())
        }
        e => e.into(),
    }
}

/// As [`master_error`], for an agent whose HTTP address is set with `flag` (`--http`, or
/// `--agent-http` in `corral up`, where `--http` is the master's).
fn agent_error(flag: &'static str) -> impl Fn(corral_agent::AgentError) -> anyhow::Error {
    move |e| match e {
        corral_agent::AgentError::Http(h) => usage(format!(
            "cannot serve HTTP on {} (is the port taken? choose another with {flag}): {}",
            h.addr, h.source
        )),
        e => e.into(),
    }
}

pub(crate) async fn ctrl_c() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Master(o) => {
            let config = master_config(&o);
            config.validate().map_err(usage)?;
            if o.exit_on_stdin_eof {
                std::thread::spawn(|| {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                    std::process::exit(0);
                });
            }
            actix::System::new().block_on(async move {
                let master = corral_master::Master::start(config).map_err(master_error)?;
                println!("master listening on {}", master.local_addr);
                if let Some(http) = master.http_addr {
                    println!("web ui and api on http://{http}/");
                }
                ctrl_c().await?;
                tracing::info!("stopping: saving the policy history, closing every connection");
                master.shutdown().await;
                Ok(())
            })
        }
        Command::Agent { cmd: Some(cmd), .. } => agent_cmd(cmd),
        Command::Agent { cmd: None, opts: o } => {
            let config = agent_config(&o);
            config.validate().map_err(usage)?;
            actix::System::new().block_on(async move {
                let agent = corral_agent::Agent::start(config)
                    .await
                    .map_err(agent_error("--http"))?;
                ctrl_c().await?;
                tracing::info!("stopping: closing the connection to the master");
                agent.shutdown().await;
                Ok(())
            })
        }
        Command::Up(o) => {
            let root = o.state.clone().unwrap_or_else(home);
            let master = corral_master::MasterConfig {
                listen: o.listen,
                state_dir: root.join("master"),
                http: o.http.0,
                ..Default::default()
            };
            actix::System::new().block_on(async move {
                let m = corral_master::Master::start(master.clone()).map_err(master_error)?;
                // The master's actors start now, inside the runtime: if the agent cannot
                // start, they are dropped started (an actor dropped before its first turn
                // starts in its destructor, outside the runtime, and panics).
                tokio::task::yield_now().await;
                let agent_opts = AgentOpts {
                    master: m.local_addr,
                    ca: Some(master.state_dir.join(corral_transport::pki::CA_FILE)),
                    state: Some(root.join("agent")),
                    cpus: None,
                    mem: None,
                    disk: None,
                    ports: (31000, 32000),
                    attributes: Vec::new(),
                    hostname: None,
                    backoff_max: Duration::from_secs(5),
                    containerizer: ContainerizerOpt::Docker,
                    retention: Duration::from_secs(3600),
                    sim_run_time: Duration::from_secs(1),
                    http: o.agent_http,
                };
                let config = agent_config(&agent_opts);
                config.validate().map_err(usage)?;
                let agent = corral_agent::Agent::start(config)
                    .await
                    .map_err(agent_error("--agent-http"))?;
                println!(
                    "corral is up: master on {}, one agent; state in {}",
                    m.local_addr,
                    root.display()
                );
                if let Some(http) = m.http_addr {
                    println!("web ui and api on http://{http}/");
                }
                if !o.no_hello {
                    let client = ClientOpts {
                        master: m.local_addr,
                        ca: Some(master.state_dir.join(corral_transport::pki::CA_FILE)),
                        json: false,
                    };
                    let image = o.hello_image.clone();
                    tokio::select! {
                        r = run_hello(m.registry.clone(), client, image) => {
                            if let Err(e) = r {
                                println!("the hello example did not run: {e:#}");
                            }
                        }
                        r = ctrl_c() => {
                            r?;
                            agent.shutdown().await;
                            m.shutdown().await;
                            return Ok(());
                        }
                    }
                }
                // The commands find a master on the default address with its CA in
                // ~/.corral; anything else they are told.
                let mut env = Vec::new();
                if m.local_addr.to_string() != DEFAULT_MASTER {
                    // A wildcard address is reached on this machine's loopback.
                    let mut addr = m.local_addr;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    env.push(format!("CORRAL_MASTER={addr}"));
                }
                if o.state.is_some() {
                    let ca = master.state_dir.join(corral_transport::pki::CA_FILE);
                    let ca = std::path::absolute(&ca).unwrap_or(ca);
                    env.push(format!("CORRAL_CA={}", ca.display()));
                }
                if !env.is_empty() {
                    println!("in another shell: export {}", env.join(" "));
                }
                println!("try: corral agents, corral framework list, corral task list");
                println!("press Ctrl-C to stop");
                ctrl_c().await?;
                agent.shutdown().await;
                m.shutdown().await;
                Ok(())
            })
        }
        Command::Agents(o) => {
            let agents = crate::client::list_agents(&o)?;
            if o.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::table::agents_json(&agents))?
                );
            } else {
                print!("{}", crate::table::agents_table(&agents));
            }
            Ok(())
        }
        Command::Task { cmd } => crate::task::run(cmd),
        Command::Framework { cmd } => crate::framework::run(cmd),
        Command::Policy { cmd } => crate::policy::run(cmd),
        Command::Bench { which } => match which {
            BenchCmd::Wire(o) => crate::bench::wire(&o),
            BenchCmd::Placements(o) => crate::bench::placements(&o),
            BenchCmd::Restart(o) => crate::bench::restart(&o),
        },
    }
}

fn agent_cmd(cmd: AgentCmd) -> anyhow::Result<()> {
    use corral_wire::pb::{self, request::Kind, response::Kind as R};
    let (client, kind, done) = match cmd {
        AgentCmd::Drain {
            client,
            id,
            deadline,
        } => {
            let deadline_ms = deadline.map(|d| d.as_millis() as u64).unwrap_or(0);
            let done = format!(
                "agent {id} is draining: no new offers; what still runs there {} is killed",
                deadline
                    .map(|d| format!("after {d:?}"))
                    .unwrap_or_else(|| "after 5m".into())
            );
            (
                client,
                Kind::AgentDrain(pb::AgentDrain {
                    agent_id: id,
                    deadline_ms,
                }),
                done,
            )
        }
        AgentCmd::Undrain { client, id } => {
            let done = format!("agent {id} is no longer draining");
            (
                client,
                Kind::AgentUndrain(pb::AgentUndrain { agent_id: id }),
                done,
            )
        }
    };
    match crate::client::request(&client, kind)? {
        R::Ok(_) => {
            println!("{done}");
            Ok(())
        }
        other => Err(anyhow::anyhow!(
            "unexpected answer from the master: {other:?}"
        )),
    }
}

/// The workload `corral up` gives the `hello` example.
fn hello_workload(image: &str) -> String {
    format!("# the hello example, as `corral up` runs it\ncount = 3\nimage = {image:?}\nmessage = \"Hello from Corral!\"\n")
}

/// Waits for the agent, submits the `hello` example and waits for it to end.
async fn run_hello(
    registry: actix::Addr<corral_master::registry_actor::RegistryActor>,
    client: ClientOpts,
    image: String,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let agents = registry
            .send(corral_master::registry_actor::ListAgents)
            .await
            .context("the master stopped")?;
        if !agents.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the agent did not register within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("running the hello example: 3 containers of {image} (corral framework show hello)");
    let f = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        use corral_wire::pb::{self, request::Kind, response::Kind as R};
        let bytes = corral_policy::builtin::scheduler("hello")
            .ok_or_else(|| anyhow::anyhow!("this corral was built without the hello scheduler"))?;
        let header = Kind::FrameworkSubmit(pb::FrameworkSubmit {
            name: "hello".into(),
            workload: hello_workload(&image),
            who: "corral up".into(),
            size: bytes.len() as u64,
            ..Default::default()
        });
        let id = match crate::client::upload(&client, header, bytes)? {
            R::Framework(f) => f.framework_id,
            other => anyhow::bail!("unexpected answer from the master: {other:?}"),
        };
        crate::framework::wait_ended(&client, &id, Duration::from_secs(600))
    })
    .await
    .context("the hello example's thread failed")??;
    println!(
        "hello {}{}",
        corral_master::http::api::framework_state(f.state),
        if f.message.is_empty() {
            String::new()
        } else {
            format!(": {}", f.message)
        }
    );
    println!("see its output: corral task list --framework hello, then corral task logs ID");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_address_is_an_ip_or_a_name_with_a_port() {
        assert_eq!(
            parse_master_addr("10.0.0.1:5050"),
            Ok("10.0.0.1:5050".parse().expect("addr"))
        );
        let local = parse_master_addr("localhost:5050").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 5050, "{local}");
        for bad in ["10.0.0.1", "localhost", ":5050", "localhost:", "host:99999"] {
            let e = parse_master_addr(bad).expect_err(bad);
            assert!(e.contains("expected IP:PORT or HOST:PORT"), "{bad}: {e}");
        }
    }
}
