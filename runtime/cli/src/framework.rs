//! `corral framework …`: submit, list, show, update and kill frameworks, and try one on a
//! simulated cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Subcommand;
use corral_master::http::api;
use corral_wire::pb::{self, request::Kind, response::Kind as R};

use crate::opts::{parse_duration, usage, ClientOpts};

#[derive(Debug, Subcommand)]
pub enum FrameworkCmd {
    /// Start a framework: a scheduler policy and the workload it is given.
    Submit {
        #[command(flatten)]
        client: ClientOpts,
        /// The framework's name (letters, digits, '-', '_').
        name: String,
        /// The scheduler component: a file, or a built-in scheduler's name (hello, batch,
        /// service, service-bin-pack, first-fit, bin-pack, spread).
        #[arg(long)]
        scheduler: PathBuf,
        /// The workload file (TOML), handed to the scheduler verbatim.
        #[arg(long)]
        workload: PathBuf,
        /// The role it is offered resources as (default `*`).
        #[arg(long)]
        role: Option<String>,
        /// The role's weight (a role of weight 2 gets twice the share of one of weight 1).
        #[arg(long, allow_negative_numbers = true)]
        weight: Option<f64>,
        /// Wait until the framework ends; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run a framework to its end on a simulated cluster, offline: a master of its own and
    /// simulated agents (no Docker; each task "runs" for --run-time and exits with
    /// --exit-code, or its labels `sim.run_ms` and `sim.exit_code`). For trying a
    /// scheduler or a workload before a real cluster sees it.
    Try {
        /// The framework's name.
        name: String,
        /// The scheduler component: a file, or a built-in scheduler's name.
        #[arg(long)]
        scheduler: PathBuf,
        /// The workload file (TOML), handed to the scheduler verbatim.
        #[arg(long)]
        workload: PathBuf,
        /// Simulated agents.
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// Each agent's CPUs.
        #[arg(long, default_value = "4", value_parser = corral_core::parse_cpus)]
        cpus: u64,
        /// Each agent's memory in MB.
        #[arg(long, default_value_t = 8192)]
        mem: u64,
        /// How long each task runs.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        run_time: Duration,
        /// The code each task exits with: 0 finishes it, anything else fails it.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        exit_code: i32,
        /// Stop after this long if the framework has not ended (a service never ends), and
        /// show it as it is then.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every framework the master knows, running and ended.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// One framework: its state, scheduler, share and tasks.
    Show {
        #[command(flatten)]
        client: ClientOpts,
        name: String,
    },
    /// Hand a running framework a new workload (its scheduler sees the next generation).
    Update {
        #[command(flatten)]
        client: ClientOpts,
        name: String,
        #[arg(long)]
        workload: PathBuf,
    },
    /// Tear a framework down and kill its tasks.
    Kill {
        #[command(flatten)]
        client: ClientOpts,
        name: String,
    },
}

fn read_workload(path: &Path) -> anyhow::Result<String> {
    // A file that cannot be read is a bad argument (exit status 64), as a bad scheduler.
    let bytes = std::fs::read(path).map_err(|e| {
        usage(format!(
            "cannot read the workload file {}: {e}",
            path.display()
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "{}: the workload is not UTF-8 text",
            path.display()
        ))
    })
}

/// Removes the temporary folders of `framework try` runs whose process is gone (killed
/// outright: a run that ends otherwise removes its own).
fn remove_stale_try_folders() {
    // Which processes live is read from /proc; without it, nothing is taken for stale.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("corral-try-")) else {
            continue;
        };
        let pid = rest.trim_end_matches(".agents");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// An error (the master's `no framework NAME`) unless the master knows a framework named
/// `name` (or with that id).
pub(crate) fn ensure_known(client: &ClientOpts, name: &str) -> anyhow::Result<()> {
    list(client, name).map(|_| ())
}

fn list(client: &ClientOpts, name: &str) -> anyhow::Result<Vec<pb::FrameworkInfo>> {
    match crate::client::request(
        client,
        Kind::ListFrameworks(pb::ListFrameworks {
            name: name.to_owned(),
        }),
    )? {
        R::Frameworks(l) => Ok(l.frameworks),
        other => Err(anyhow!("unexpected answer from the master: {other:?}")),
    }
}

fn one(kind: R) -> anyhow::Result<pb::FrameworkInfo> {
    match kind {
        R::Framework(f) => Ok(f),
        other => Err(anyhow!("unexpected answer from the master: {other:?}")),
    }
}

fn tasks_summary(f: &pb::FrameworkInfo) -> String {
    if f.tasks.is_empty() {
        return "none".to_owned();
    }
    f.tasks
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.count,
                c.state.trim_start_matches("TASK_").to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(f: &pb::FrameworkInfo) {
    println!(
        "framework {} ({}) is {}{}",
        f.name,
        f.framework_id,
        api::framework_state(f.state),
        if f.message.is_empty() {
            String::new()
        } else {
            format!(": {}", f.message)
        }
    );
}

fn show(f: &pb::FrameworkInfo, tasks: &[pb::TaskInfo]) -> String {
    let alloc = f.allocated.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line("name", f.name.clone());
    line("id", f.framework_id.clone());
    line("state", api::framework_state(f.state).to_owned());
    if !f.message.is_empty() {
        line("message", f.message.clone());
    }
    line("role", format!("{} (weight {})", f.role, f.weight));
    line("submitted", crate::table::ago(f.submitted_at_ms));
    if f.ended_at_ms != 0 {
        line("ended", crate::table::ago(f.ended_at_ms));
    }
    line("generation", f.generation.to_string());
    line(
        "scheduler",
        format!(
            "{} ({} calls, {} errors)",
            f.scheduler_digest.chars().take(12).collect::<String>(),
            f.scheduler_calls,
            f.scheduler_errors
        ),
    );
    if !f.last_error.is_empty() {
        line("last error", f.last_error.clone());
    }
    line(
        "allocated",
        format!(
            "{} CPUs, {} MB memory; dominant share {:.1}%",
            corral_core::format_cpus(alloc.cpus_milli),
            alloc.mem_mb,
            f.dominant_share * 100.0
        ),
    );
    line(
        "offers",
        format!(
            "{} outstanding{}",
            f.offers,
            if f.suppressed { ", suppressed" } else { "" }
        ),
    );
    line("tasks", tasks_summary(f));
    out.push('\n');
    out.push_str(&crate::task::tasks_table(tasks));
    out
}

/// Waits until the framework `name` (or id) has ended; an error after `timeout`.
pub(crate) fn wait_ended(
    client: &ClientOpts,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<pb::FrameworkInfo> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let f = list(client, name)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("framework {name} is gone"))?;
        if f.state != pb::FrameworkState::FrameworkActive as i32 {
            return Ok(f);
        }
        if start.elapsed() > timeout {
            bail!(
                "framework {name} is still running after {:?} ({})",
                timeout,
                tasks_summary(&f)
            );
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

pub fn run(cmd: FrameworkCmd) -> anyhow::Result<()> {
    match cmd {
        FrameworkCmd::Submit {
            client,
            name,
            scheduler,
            workload,
            role,
            weight,
            wait,
            timeout,
        } => {
            let workload = read_workload(&workload)?;
            if scheduler.as_os_str() == "drf" && !scheduler.exists() {
                return Err(usage(
                    "drf is the built-in allocator, not a scheduler (see corral framework submit --help)",
                ));
            }
            let (bytes, label) = crate::client::component(&scheduler)?;
            if let Some(w) = weight {
                if !(w.is_finite() && w > 0.0) {
                    return Err(usage(format!(
                        "--weight {w}: use a finite number greater than 0"
                    )));
                }
            }
            let who = format!(
                "{}@cli",
                std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
            );
            let header = Kind::FrameworkSubmit(pb::FrameworkSubmit {
                name: name.clone(),
                role: role.unwrap_or_default(),
                weight: weight.unwrap_or(0.0),
                workload,
                who,
                size: bytes.len() as u64,
            });
            let f = one(crate::client::upload(&client, header, &bytes)?)?;
            if !wait {
                if client.json {
                    println!("{}", api::framework(&f));
                } else {
                    println!(
                        "framework {} submitted as {} with scheduler {label}",
                        f.name, f.framework_id
                    );
                }
                return Ok(());
            }
            let f = wait_ended(&client, &f.framework_id, timeout)?;
            if client.json {
                println!("{}", api::framework(&f));
            } else {
                print_summary(&f);
                println!("tasks: {}", tasks_summary(&f));
            }
            if f.state != pb::FrameworkState::FrameworkCompleted as i32 {
                std::process::exit(1);
            }
            Ok(())
        }
        FrameworkCmd::Try {
            name,
            scheduler,
            workload,
            agents,
            cpus,
            mem,
            run_time,
            exit_code,
            timeout,
            json,
        } => {
            let workload = read_workload(&workload)?;
            let (bytes, label) = crate::client::component(&scheduler)?;
            if agents == 0 || cpus == 0 || mem == 0 {
                return Err(usage("--agents, --cpus and --mem must be above 0"));
            }
            remove_stale_try_folders();
            let mut master = crate::bench::MasterProcess::start_named(
                "corral-try",
                &["--allocation-interval", "100ms"],
            )?;
            // Interrupted (Ctrl-C, SIGTERM), it removes the cluster's temporary folders
            // (its master exits with it: see MasterProcess).
            let folders = master.folders();
            std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                if rt.block_on(crate::opts::ctrl_c()).is_ok() {
                    for folder in &folders {
                        let _ = std::fs::remove_dir_all(folder);
                    }
                    std::process::exit(130);
                }
            });
            let mut client = master.client()?;
            client.json = json;
            let resources = corral_core::Resources {
                cpus_milli: cpus,
                mem_mb: mem,
                disk_mb: 0,
                ports: vec![(31000, 32000)],
            };
            let sim = corral_containerizer::SimulatedConfig {
                run_time,
                exit_code,
                ..Default::default()
            };
            let cluster = crate::bench::SimAgents::start_with(&master, agents, resources, sim)?;
            cluster.wait_registered(&mut master, &client, 0)?;
            if !json {
                println!(
                    "a simulated cluster of {agents} agents ({} CPUs, {mem} MB each); running {name} with scheduler {label}",
                    cpus as f64 / 1000.0
                );
            }
            let header = Kind::FrameworkSubmit(pb::FrameworkSubmit {
                name: name.clone(),
                workload,
                who: "corral framework try".into(),
                size: bytes.len() as u64,
                ..Default::default()
            });
            let f = one(crate::client::upload(&client, header, &bytes)?)?;
            // A framework still running at the timeout (a service never ends) is shown as
            // it is then.
            let f = match wait_ended(&client, &f.framework_id, timeout) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("{e:#}");
                    list(&client, &f.framework_id)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| anyhow!("framework {name} is gone"))?
                }
            };
            let tasks = crate::task::list(&client, &f.framework_id)?;
            if json {
                let mut v = api::framework(&f);
                v["task_list"] = serde_json::Value::Array(tasks.iter().map(api::task).collect());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", show(&f, &tasks));
            }
            drop(cluster);
            drop(master);
            if f.state != pb::FrameworkState::FrameworkCompleted as i32 {
                std::process::exit(1);
            }
            Ok(())
        }
        FrameworkCmd::List { client } => {
            let list = list(&client, "")?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&api::frameworks(&list))?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no frameworks");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.framework_id.clone(),
                        api::framework_state(f.state).to_owned(),
                        f.role.clone(),
                        format!("{}", f.weight),
                        format!("{:.1}%", f.dominant_share * 100.0),
                        tasks_summary(f),
                        crate::table::ago(f.submitted_at_ms),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "NAME",
                        "ID",
                        "STATE",
                        "ROLE",
                        "WEIGHT",
                        "SHARE",
                        "TASKS",
                        "SUBMITTED"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        FrameworkCmd::Show { client, name } => {
            let f = list(&client, &name)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no framework {name}"))?;
            let tasks = crate::task::list(&client, &f.framework_id)?;
            if client.json {
                let mut v = api::framework(&f);
                v["task_list"] = serde_json::Value::Array(
                    tasks.iter().map(corral_master::http::api::task).collect(),
                );
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", show(&f, &tasks));
            }
            Ok(())
        }
        FrameworkCmd::Update {
            client,
            name,
            workload,
        } => {
            let workload = read_workload(&workload)?;
            let f = one(crate::client::request(
                &client,
                Kind::FrameworkUpdate(pb::FrameworkUpdate { name, workload }),
            )?)?;
            if client.json {
                println!("{}", api::framework(&f));
            } else {
                println!(
                    "framework {} has a new workload (generation {})",
                    f.name, f.generation
                );
            }
            Ok(())
        }
        FrameworkCmd::Kill { client, name } => {
            let f = one(crate::client::request(
                &client,
                Kind::FrameworkKill(pb::FrameworkKill { name }),
            )?)?;
            if client.json {
                println!("{}", api::framework(&f));
            } else {
                println!("framework {} killed; its tasks are being killed", f.name);
            }
            Ok(())
        }
    }
}
