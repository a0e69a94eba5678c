//! `corral task …`: run, list, kill and read the logs of tasks.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use corral_core::format_cpus;
use corral_wire::pb::{self, envelope::Body, request::Kind, response::Kind as R};
use serde_json::json;

// One JSON shape for a task, shared with the master's HTTP API.
use corral_master::http::api::{task as task_json, task_state as state_name};

use crate::opts::{parse_duration, ClientOpts};

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Place one task on an agent with room and launch it.
    Run(RunOpts),
    /// List tasks and their latest states.
    List {
        #[command(flatten)]
        client: ClientOpts,
        /// Only this framework's tasks.
        #[arg(long)]
        framework: Option<String>,
    },
    /// Kill a task: SIGTERM, then SIGKILL after its grace period.
    Kill {
        #[command(flatten)]
        client: ClientOpts,
        /// The task's id.
        task: String,
    },
    /// Print a task's output (stdout, or stderr with --stderr).
    Logs {
        #[command(flatten)]
        client: ClientOpts,
        /// The task's id.
        task: String,
        /// Keep printing new output until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Read stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Network {
    Bridge,
    Host,
    None,
}

#[derive(Debug, Args)]
pub struct RunOpts {
    #[command(flatten)]
    pub client: ClientOpts,
    /// The container image.
    #[arg(long)]
    pub image: String,
    /// Task id (default: one is made).
    #[arg(long)]
    pub id: Option<String>,
    /// A name for people.
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs (a CPU quota for the container).
    #[arg(long, default_value = "0.1", value_parser = parse_cpus_field, allow_negative_numbers = true)]
    pub cpus: u64,
    /// Memory in MB (a hard limit).
    #[arg(long, default_value_t = 64, value_parser = parse_mem, allow_negative_numbers = true)]
    pub mem: u64,
    /// Disk in MB.
    #[arg(long, default_value_t = 0, value_parser = parse_mb, allow_negative_numbers = true)]
    pub disk: u64,
    /// Publish a container port: CONTAINER[:HOST][/udp]; HOST 0 or absent picks one from the
    /// agent's port range.
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// Address published ports bind to on the host (default: all).
    #[arg(long)]
    pub host_ip: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Volume SOURCE:CONTAINER_PATH[:ro]; SOURCE is a host path (/…) or a volume name.
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// Container label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Network mode.
    #[arg(long, value_enum, default_value_t = Network::Bridge)]
    pub network: Network,
    /// Time between SIGTERM and SIGKILL on a kill.
    #[arg(long, value_parser = parse_duration)]
    pub kill_grace: Option<Duration>,
    /// Health check: a shell command run in the container, healthy when it exits 0.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Health check: an HTTP GET of PORT/PATH, healthy on 2xx/3xx.
    #[arg(long)]
    pub health_http: Option<String>,
    /// Health check: a TCP connect to PORT.
    #[arg(long)]
    pub health_tcp: Option<u32>,
    /// Time between health checks.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Time a health check may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Consecutive failures that make the task unhealthy (and kill it).
    #[arg(long, default_value_t = 3)]
    pub health_retries: u32,
    /// Failures in this time after the start do not count.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub health_grace: Duration,
    /// Wait until the task ends; exit 0 only if it finished.
    #[arg(long)]
    pub wait: bool,
    /// The command to run (replaces the image's entrypoint), after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// CPUs for a task: at least the engine's minimum (0.01).
fn parse_cpus_field(text: &str) -> Result<u64, String> {
    let milli = corral_core::parse_cpus(text)?;
    if milli < corral_containerizer::MIN_CPUS_MILLI {
        return Err(format!(
            "{text:?}: a task needs at least {} CPUs",
            corral_core::format_cpus(corral_containerizer::MIN_CPUS_MILLI)
        ));
    }
    Ok(milli)
}

/// A whole number of megabytes, said so when it is not one (`-5`, `1.5`, `64M`).
fn parse_mb(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of MB"))
}

/// Memory for a task: at least the engine's minimum.
fn parse_mem(text: &str) -> Result<u64, String> {
    let mb = parse_mb(text)?;
    if mb < corral_containerizer::MIN_MEM_MB {
        return Err(format!(
            "{text:?}: a task needs at least {} MB",
            corral_containerizer::MIN_MEM_MB
        ));
    }
    Ok(mb)
}

fn key_value(field: &str, text: &str) -> anyhow::Result<pb::KeyValue> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| crate::opts::usage(format!("--{field} {text:?}: expected KEY=VALUE")))?;
    Ok(pb::KeyValue {
        key: k.to_owned(),
        value: v.to_owned(),
    })
}

fn port_mapping(text: &str, host_ip: &Option<String>) -> anyhow::Result<pb::PortMapping> {
    let bad = || crate::opts::usage(format!("--port {text:?}: expected CONTAINER[:HOST][/udp]"));
    let (ports, protocol) = match text.split_once('/') {
        Some((p, proto)) if proto == "tcp" || proto == "udp" => (p, proto.to_owned()),
        Some(_) => return Err(bad()),
        None => (text, "tcp".to_owned()),
    };
    let (c, h) = match ports.split_once(':') {
        Some((c, h)) => (c, h),
        None => (ports, "0"),
    };
    Ok(pb::PortMapping {
        container_port: c.parse().map_err(|_| bad())?,
        host_port: h.parse().map_err(|_| bad())?,
        protocol,
        host_ip: host_ip.clone().unwrap_or_default(),
    })
}

fn volume(text: &str) -> anyhow::Result<pb::Volume> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, path, ro) = match parts.as_slice() {
        [s, p] => (s, p, false),
        [s, p, "ro"] => (s, p, true),
        [s, p, "rw"] => (s, p, false),
        _ => {
            return Err(crate::opts::usage(format!(
                "--volume {text:?}: expected SOURCE:CONTAINER_PATH[:ro]"
            )))
        }
    };
    Ok(pb::Volume {
        source: source.to_string(),
        container_path: path.to_string(),
        read_only: ro,
    })
}

fn spec(o: &RunOpts) -> anyhow::Result<pb::TaskSpec> {
    let check = |kind| pb::HealthCheck {
        check: Some(kind),
        interval_ms: o.health_interval.as_millis() as u64,
        timeout_ms: o.health_timeout.as_millis() as u64,
        retries: o.health_retries,
        grace_period_ms: o.health_grace.as_millis() as u64,
    };
    let health_check = match (&o.health_cmd, &o.health_http, o.health_tcp) {
        (Some(cmd), None, None) => {
            Some(check(pb::health_check::Check::Command(pb::CommandCheck {
                argv: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            })))
        }
        (None, Some(http), None) => {
            let (port, path) = http.split_once('/').unwrap_or((http.as_str(), ""));
            let port = port.parse().map_err(|_| {
                crate::opts::usage(format!("--health-http {http:?}: expected PORT/PATH"))
            })?;
            Some(check(pb::health_check::Check::Http(pb::HttpCheck {
                port,
                path: format!("/{path}"),
            })))
        }
        (None, None, Some(port)) => {
            Some(check(pb::health_check::Check::Tcp(pb::TcpCheck { port })))
        }
        (None, None, None) => None,
        _ => bail!(crate::opts::usage(
            "give at most one of --health-cmd, --health-http, --health-tcp"
        )),
    };
    Ok(pb::TaskSpec {
        task_id: o.id.clone().unwrap_or_default(),
        framework_id: String::new(),
        name: o.name.clone().unwrap_or_default(),
        image: o.image.clone(),
        command: o.command.clone(),
        args: Vec::new(),
        env: o
            .env
            .iter()
            .map(|e| key_value("env", e))
            .collect::<Result<_, _>>()?,
        resources: Some(pb::Resources {
            cpus_milli: o.cpus,
            mem_mb: o.mem,
            disk_mb: o.disk,
            ports: Vec::new(),
        }),
        port_mappings: o
            .ports
            .iter()
            .map(|p| port_mapping(p, &o.host_ip))
            .collect::<Result<_, _>>()?,
        network_mode: match o.network {
            Network::Bridge => pb::NetworkMode::NetworkBridge,
            Network::Host => pb::NetworkMode::NetworkHost,
            Network::None => pb::NetworkMode::NetworkNone,
        } as i32,
        volumes: o
            .volumes
            .iter()
            .map(|v| volume(v))
            .collect::<Result<_, _>>()?,
        labels: o
            .labels
            .iter()
            .map(|l| key_value("label", l))
            .collect::<Result<_, _>>()?,
        kill_grace_period_ms: o.kill_grace.map(|d| d.as_millis() as u64).unwrap_or(0),
        health_check,
    })
}

/// The task table `corral task list` prints.
pub fn tasks_table(tasks: &[pb::TaskInfo]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let spec = t.spec.clone().unwrap_or_default();
            let status = t.status.clone().unwrap_or_default();
            let res = spec.resources.clone().unwrap_or_default();
            vec![
                spec.task_id.clone(),
                spec.name.clone(),
                if t.kill_requested {
                    format!("{} (kill asked)", state_name(t.status.as_ref()))
                } else {
                    state_name(t.status.as_ref()).to_owned()
                },
                status.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                status.agent_id.clone(),
                spec.image.clone(),
                format_cpus(res.cpus_milli),
                res.mem_mb.to_string(),
                spec.port_mappings
                    .iter()
                    .map(|p| format!("{}->{}", p.host_port, p.container_port))
                    .collect::<Vec<_>>()
                    .join(","),
                status.message.clone(),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "ID", "NAME", "STATE", "EXIT", "AGENT", "IMAGE", "CPUS", "MEM MB", "PORTS", "MESSAGE",
        ],
        &rows,
    )
}

/// The tasks the master knows, of one framework (by name or id) when not empty.
pub fn list(client: &ClientOpts, framework: &str) -> anyhow::Result<Vec<pb::TaskInfo>> {
    match crate::client::request(
        client,
        Kind::ListTasks(pb::ListTasks {
            framework_id: framework.to_owned(),
        }),
    )? {
        R::Tasks(t) => Ok(t.tasks),
        other => Err(anyhow!("unexpected answer from the master: {other:?}")),
    }
}

fn wait_terminal(client: &ClientOpts, task_id: &str) -> anyhow::Result<pb::TaskInfo> {
    let mut delay = Duration::from_millis(50);
    let start = Instant::now();
    loop {
        let tasks = list(client, "")?;
        if let Some(t) = tasks
            .into_iter()
            .find(|t| t.spec.as_ref().is_some_and(|s| s.task_id == task_id))
        {
            let done = t
                .status
                .as_ref()
                .and_then(|s| pb::TaskState::try_from(s.state).ok())
                .is_some_and(pb::TaskState::is_terminal);
            if done {
                return Ok(t);
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
        if start.elapsed() > Duration::from_secs(24 * 3600) {
            bail!("gave up waiting for task {task_id}");
        }
    }
}

pub fn run(cmd: TaskCmd) -> anyhow::Result<()> {
    match cmd {
        TaskCmd::Run(o) => {
            let spec = spec(&o)?;
            let launched = match crate::client::request(
                &o.client,
                Kind::RunTask(pb::RunTask { spec: Some(spec) }),
            )? {
                R::TaskLaunched(l) => l,
                other => bail!("unexpected answer from the master: {other:?}"),
            };
            if !o.wait {
                if o.client.json {
                    println!(
                        "{}",
                        json!({"id": launched.task_id, "agent_id": launched.agent_id})
                    );
                } else {
                    println!(
                        "task {} launched on agent {}",
                        launched.task_id, launched.agent_id
                    );
                }
                return Ok(());
            }
            let t = wait_terminal(&o.client, &launched.task_id)?;
            let status = t.status.clone().unwrap_or_default();
            if o.client.json {
                println!("{}", task_json(&t));
            } else {
                println!(
                    "task {} {}{}{}",
                    launched.task_id,
                    state_name(Some(&status)),
                    status
                        .exit_code
                        .map(|c| format!(" (exit code {c})"))
                        .unwrap_or_default(),
                    if status.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", status.message)
                    }
                );
            }
            if status.state != pb::TaskState::TaskFinished as i32 {
                std::process::exit(1);
            }
            Ok(())
        }
        TaskCmd::List { client, framework } => {
            let tasks = list(&client, framework.as_deref().unwrap_or(""))?;
            // No tasks of a framework the master does not know: said (the master's
            // `no framework NAME`), not "no tasks".
            if let Some(name) = framework.as_deref().filter(|_| tasks.is_empty()) {
                crate::framework::ensure_known(&client, name)?;
            }
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&tasks.iter().map(task_json).collect::<Vec<_>>())?
                );
                return Ok(());
            }
            print!("{}", tasks_table(&tasks));
            Ok(())
        }
        TaskCmd::Kill { client, task } => {
            match crate::client::request(
                &client,
                Kind::KillTask(pb::KillTaskRequest {
                    task_id: task.clone(),
                }),
            )? {
                R::Ok(ok) if ok.note.is_empty() => {
                    println!("kill sent to task {task}");
                    Ok(())
                }
                R::Ok(ok) => {
                    println!("kill of task {task} asked; {}", ok.note);
                    Ok(())
                }
                other => bail!("unexpected answer from the master: {other:?}"),
            }
        }
        TaskCmd::Logs {
            client,
            task,
            follow,
            stderr,
        } => {
            let mut out = std::io::stdout().lock();
            crate::client::stream(
                &client,
                Kind::TaskLogs(pb::TaskLogs {
                    task_id: task,
                    follow,
                    stderr,
                }),
                |body| match body {
                    Body::Response(pb::Response {
                        kind: Some(R::LogChunk(c)),
                    }) => {
                        out.write_all(&c.data).context("cannot write to stdout")?;
                        out.flush().ok();
                        Ok(!c.eof)
                    }
                    Body::Response(pb::Response {
                        kind: Some(R::Error(e)),
                    }) => Err(anyhow!("{} ({})", e.message, e.code)),
                    other => Err(anyhow!("unexpected answer from the master: {other:?}")),
                },
            )
        }
    }
}
