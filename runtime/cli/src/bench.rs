//! `corral bench …`: benchmarks that print figures.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::Args;
use corral_transport::open_stream;
use corral_wire::pb::{self, envelope::Body};

#[derive(Debug, Args)]
pub struct PlacementsOpts {
    /// Tasks the `hello` framework runs per run.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: u32,
    /// Simulated agents, each with its own QUIC connection to the master.
    #[arg(long, default_value_t = 100)]
    pub agents: u32,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The master's time between allocation cycles.
    #[arg(long, default_value = "250ms", value_parser = crate::opts::parse_duration)]
    pub allocation_interval: Duration,
}

#[derive(Debug, Args)]
pub struct WireOpts {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Throughput runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Sequential round trips for the latency figures.
    #[arg(long, default_value_t = 5_000)]
    pub round_trips: usize,
    /// Payload bytes per ping (with the envelope, about 100 bytes on the wire).
    #[arg(long, default_value_t = 76)]
    pub payload: usize,
}

/// A master process started for a benchmark (or `corral framework try`), on a free port
/// with a state folder of its own; killed, and its folder removed, when dropped.
pub(crate) struct MasterProcess {
    child: Child,
    state: PathBuf,
    addr: std::net::SocketAddr,
    args: Vec<String>,
}

impl MasterProcess {
    fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_named("corral-bench", extra)
    }

    /// A master with `extra` arguments, its state in the temporary folder `{prefix}-{pid}`.
    pub(crate) fn start_named(prefix: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .context("cannot find a free UDP port")?
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let state = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        // The master's own log filter, for looking into a benchmark (default: warnings).
        let log = std::env::var("CORRAL_BENCH_MASTER_LOG").unwrap_or_else(|_| "warn".into());
        let mut args: Vec<String> = [
            "--log",
            &log,
            "master",
            "--exit-on-stdin-eof",
            "--http",
            "off",
            "--listen",
            &addr.to_string(),
            "--state",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(state.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Self::spawn(&args)?;
        Ok(Self {
            child,
            state,
            addr,
            args,
        })
    }

    /// The master's standard input is a pipe this process holds open (in the `Child`):
    /// when this process ends, however, the master sees it end and exits too.
    fn spawn(args: &[String]) -> anyhow::Result<Child> {
        Command::new(std::env::current_exe().context("cannot find this binary")?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start a master process")
    }

    /// kill -9, then the same master again on the same address and state folder.
    fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.args)?;
        Ok(())
    }

    /// The temporary folder of the simulated agents started for this master.
    fn agents_dir(&self) -> PathBuf {
        self.state.with_extension("agents")
    }

    /// The temporary folders of this master and of the simulated agents started for it.
    pub(crate) fn folders(&self) -> [PathBuf; 2] {
        [self.state.clone(), self.agents_dir()]
    }

    /// An error if the master process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!("the master process exited ({status})")),
            Err(e) => Err(anyhow!("cannot see the master process: {e}")),
        }
    }

    /// Waits for the CA file, then returns client options for this master.
    pub(crate) fn client(&mut self) -> anyhow::Result<crate::opts::ClientOpts> {
        let ca = self.state.join(corral_transport::pki::CA_FILE);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ca.exists() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(anyhow!("the master did not start within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(crate::opts::ClientOpts {
            master: self.addr,
            ca: Some(ca),
            json: false,
        })
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn ping(sequence: u64, payload: &[u8]) -> pb::Envelope {
    corral_wire::envelope(Body::Ping(pb::Ping {
        sequence,
        payload: payload.to_vec(),
    }))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the wire benchmark against a fresh master process.
pub fn wire(o: &WireOpts) -> anyhow::Result<()> {
    if o.messages == 0 || o.runs == 0 || o.round_trips == 0 {
        return Err(crate::opts::usage(
            "--messages, --runs and --round-trips must be above 0",
        ));
    }
    let master = MasterProcess::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ca = master.state.join(corral_transport::pki::CA_FILE);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (endpoint, conn) = loop {
            if ca.exists() {
                let endpoint = corral_transport::client_endpoint(&ca)?;
                if let Ok(conn) =
                    corral_transport::connect(&endpoint, master.addr, Duration::from_secs(1)).await
                {
                    break (endpoint, conn);
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!("the benchmark's master did not come up within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let payload = vec![0x5au8; o.payload];
        let frame_len = corral_wire::encode_frame(&ping(u64::MAX / 2, &payload))?.len();
        println!(
            "wire benchmark: one QUIC connection to a master process on {}, {}-byte frames",
            master.addr, frame_len
        );

        // Round trips: one ping in flight at a time.
        let (mut send, mut recv) = open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await?;
        let mut rtts = Vec::with_capacity(o.round_trips);
        for i in 0..(o.round_trips + 200) as u64 {
            let t = Instant::now();
            send.send(&ping(i, &payload)).await?;
            match recv.recv().await? {
                Some(Body::Pong(p)) if p.sequence == i => {}
                other => return Err(anyhow!("expected pong {i}, got {other:?}")),
            }
            if i >= 200 {
                rtts.push(t.elapsed());
            }
        }
        send.finish();
        rtts.sort();

        // Throughput: pings pipelined on one stream while the pongs are read back.
        let mut rates = Vec::with_capacity(o.runs);
        for _ in 0..o.runs {
            let (mut send, mut recv) = open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await?;
            let n = o.messages;
            let frames: Vec<u8> = {
                let mut all = Vec::with_capacity(frame_len * 256);
                // Same-sized frames, so a batch is a slice of whole frames.
                let frame = corral_wire::encode_frame(&ping(u64::MAX / 2, &payload))?;
                for _ in 0..256 {
                    all.extend_from_slice(&frame);
                }
                all
            };
            let start = Instant::now();
            let writer = tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < n {
                    let batch = (n - sent).min(256);
                    send.send_raw(&frames[..batch as usize * frame_len]).await?;
                    sent += batch;
                }
                send.finish();
                Ok::<_, anyhow::Error>(())
            });
            let mut got = 0u64;
            while got < n {
                match recv.recv().await? {
                    Some(Body::Pong(_)) => got += 1,
                    other => return Err(anyhow!("expected a pong, got {other:?}")),
                }
            }
            let elapsed = start.elapsed();
            writer.await??;
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "throughput: {:.0} messages/s echoed (median of {} runs of {} messages; min {:.0}, max {:.0})",
            median,
            o.runs,
            o.messages,
            rates[0],
            rates[rates.len() - 1]
        );
        println!(
            "round trip: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} sequential pings)",
            percentile(&rtts, 0.50).as_secs_f64() * 1e6,
            percentile(&rtts, 0.99).as_secs_f64() * 1e6,
            rtts[rtts.len() - 1].as_secs_f64() * 1e6,
            rtts.len()
        );
        println!(
            "goals: 100000 messages/s ({}), p99 under 1 ms ({})",
            if median >= 100_000.0 { "met" } else { "missed" },
            if percentile(&rtts, 0.99) < Duration::from_millis(1) { "met" } else { "missed" }
        );
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(())
    })
}

/// HashiCorp Nomad's published "million container challenge": about 3,750 containers
/// placed per second (1,000,000 in about 4.5 minutes, on five servers).
const NOMAD_PLACEMENTS_PER_SEC: f64 = 3_750.0;

/// Placements per second, end to end: a master process, simulated agents over real QUIC
/// in this process, and the `hello` framework (its C scheduler) placing `--tasks` tasks.
/// A placement is counted when its agent reports it `TASK_RUNNING` to the master.
pub fn placements(o: &PlacementsOpts) -> anyhow::Result<()> {
    if o.tasks == 0 || o.agents == 0 || o.runs == 0 {
        return Err(crate::opts::usage(
            "--tasks, --agents and --runs must be above 0",
        ));
    }
    let interval = format!("{}ms", o.allocation_interval.as_millis());
    let mut master = MasterProcess::start_with(&["--allocation-interval", &interval])?;
    let client = master.client()?;
    let agents = SimAgents::start(&master, o.agents, o.tasks)?;
    agents.wait_registered(&mut master, &client, 0)?;
    // One connection for every request, as a framework's client would keep: the figure
    // is the cluster's, not a handshake's per poll.
    let session = crate::client::Session::connect(&client)?;
    println!(
        "placements: hello framework (C scheduler), {} tasks on {} simulated agents over QUIC, {} runs; allocation every {:?}",
        o.tasks, o.agents, o.runs, o.allocation_interval
    );
    let hello = corral_policy::builtin::scheduler("hello")
        .ok_or_else(|| anyhow!("this corral was built without the hello scheduler"))?;
    let mut rates = Vec::new();
    for run in 0..o.runs {
        use corral_wire::pb::{request::Kind, response::Kind as R};
        let name = format!("hello-bench-{run}");
        let workload = format!(
            "count = {}\nimage = \"bench/simulated:1\"\ncpus = 0.01\nmem_mb = 8\n",
            o.tasks
        );
        let header = Kind::FrameworkSubmit(pb::FrameworkSubmit {
            name: name.clone(),
            workload,
            who: "corral bench placements".into(),
            size: hello.len() as u64,
            ..Default::default()
        });
        let start = Instant::now();
        let id = match session.upload(header, hello)? {
            R::Framework(f) => f.framework_id,
            other => return Err(anyhow!("unexpected answer from the master: {other:?}")),
        };
        let mut next_report = 5;
        let running = loop {
            let f = match session.request(Kind::ListFrameworks(pb::ListFrameworks {
                name: id.clone(),
            }))? {
                R::Frameworks(l) => l.frameworks.into_iter().next(),
                other => return Err(anyhow!("unexpected answer from the master: {other:?}")),
            }
            .ok_or_else(|| anyhow!("framework {name} vanished"))?;
            let running: u32 = f
                .tasks
                .iter()
                .filter(|c| c.state == "TASK_RUNNING")
                .map(|c| c.count)
                .sum();
            if running >= o.tasks {
                break start.elapsed();
            }
            if start.elapsed().as_secs() >= next_report {
                next_report += 5;
                eprintln!(
                    "    {:>5.1} s: {running} running ({})",
                    start.elapsed().as_secs_f64(),
                    f.tasks
                        .iter()
                        .map(|c| format!("{} {}", c.count, c.state))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if f.state != pb::FrameworkState::FrameworkActive as i32 {
                return Err(anyhow!(
                    "framework {name} ended before all its tasks ran: {}",
                    f.message
                ));
            }
            if start.elapsed() > Duration::from_secs(600) {
                return Err(anyhow!(
                    "only {running} of {} tasks running after 10 minutes",
                    o.tasks
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let rate = f64::from(o.tasks) / running.as_secs_f64();
        println!(
            "  run {}: {} tasks RUNNING in {:.3} s: {:.0} placements/s",
            run + 1,
            o.tasks,
            running.as_secs_f64(),
            rate
        );
        rates.push(rate);
        // Free the cluster for the next run: kill the framework and wait for its tasks.
        let _ = session.request(Kind::FrameworkKill(pb::FrameworkKill { name: id.clone() }))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let used: u64 = session
                .list_agents()?
                .iter()
                .map(|a| a.used.as_ref().map(|u| u.cpus_milli).unwrap_or(0))
                .sum();
            if used == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "the killed framework's tasks did not end in 5 minutes"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "median: {:.0} placements/s ({:.2}x the goal of 20,000/s; {:.1}x Nomad's published ~3,750/s)",
        median,
        median / 20_000.0,
        median / NOMAD_PLACEMENTS_PER_SEC
    );
    drop(agents);
    Ok(())
}

/// Simulated agents in this process, each with its own QUIC connection to the master;
/// stopped when dropped.
pub(crate) struct SimAgents {
    n: u32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimAgents {
    /// `n` agents with room for `tasks` tasks of 0.01 CPU and 8 MB between them, twice
    /// over. Their tasks run for a day.
    fn start(master: &MasterProcess, n: u32, tasks: u32) -> anyhow::Result<Self> {
        let per_agent = u64::from(tasks.div_ceil(n));
        let resources = corral_core::Resources {
            cpus_milli: (per_agent * 10 * 2).max(1000),
            mem_mb: (per_agent * 8 * 2).max(1024),
            disk_mb: 0,
            ports: vec![(31000, 32000)],
        };
        let sim = corral_containerizer::SimulatedConfig {
            run_time: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        Self::start_with(master, n, resources, sim)
    }

    /// `n` agents of `resources` each, whose tasks behave as `sim` says.
    pub(crate) fn start_with(
        master: &MasterProcess,
        n: u32,
        resources: corral_core::Resources,
        sim: corral_containerizer::SimulatedConfig,
    ) -> anyhow::Result<Self> {
        let dir = master.agents_dir();
        let addr = master.addr;
        let ca = master.state.join(corral_transport::pki::CA_FILE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let agents_dir = dir.clone();
            actix::System::new().block_on(async move {
                let dir = agents_dir;
                let mut agents = Vec::new();
                for i in 0..n {
                    let config = corral_agent::AgentConfig {
                        master: addr,
                        ca: ca.clone(),
                        state_dir: dir.join(format!("agent-{i}")),
                        resources: resources.clone(),
                        attributes: Default::default(),
                        hostname: format!("sim-{i}"),
                        backoff_initial: Duration::from_millis(50),
                        backoff_max: Duration::from_millis(500),
                        max_frame: corral_wire::DEFAULT_MAX_FRAME,
                        containerizer: corral_agent::ContainerizerKind::Simulated(sim.clone()),
                        retention: Duration::from_secs(3600),
                        http: None,
                    };
                    match corral_agent::Agent::start(config).await {
                        Ok(a) => agents.push(a),
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!("simulated agent {i}: {e}")));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                drop(agents);
            });
            let _ = std::fs::remove_dir_all(&dir);
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the simulated agents' thread ended"))??;
        Ok(Self {
            n,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Waits until the master lists every agent as active, registered at or after
    /// `since_ms`; returns when that was seen.
    pub(crate) fn wait_registered(
        &self,
        master: &mut MasterProcess,
        client: &crate::opts::ClientOpts,
        since_ms: u64,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(120);
        // One connection while it works; a new one after the master restarted.
        let mut session: Option<crate::client::Session> = None;
        loop {
            if session.is_none() {
                session = crate::client::Session::connect(client).ok();
            }
            let fresh = match session.as_ref().map(crate::client::Session::list_agents) {
                Some(Ok(agents)) => agents
                    .iter()
                    .filter(|a| {
                        a.registered_at_ms >= since_ms
                            && a.state == pb::AgentState::AgentActive as i32
                    })
                    .count() as u32,
                Some(Err(_)) => {
                    session = None;
                    0
                }
                None => 0,
            };
            if fresh >= self.n {
                return Ok(Instant::now());
            }
            master.check_alive()?;
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "only {fresh} of {} simulated agents registered within 120 s",
                    self.n
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Args)]
pub struct RestartOpts {
    /// Simulated agents.
    #[arg(long, default_value_t = 1_000)]
    pub agents: u32,
    /// Tasks in the registry, run by `--frameworks` hello frameworks.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Frameworks sharing the tasks.
    #[arg(long, default_value_t = 10)]
    pub frameworks: u32,
    /// Restarts (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Apache Mesos 1.5's published master failover: about 19 s for 40,000 agents and
/// 400,000 tasks.
const MESOS_RESTART_SECS: f64 = 19.0;

/// Master restart time: a registry of `--agents` simulated agents and `--tasks` tasks,
/// the master killed with SIGKILL and started again; from process start to serving with
/// every agent re-registered.
pub fn restart(o: &RestartOpts) -> anyhow::Result<()> {
    use corral_wire::pb::{request::Kind, response::Kind as R};
    if o.agents == 0 || o.tasks == 0 || o.frameworks == 0 || o.runs == 0 {
        return Err(crate::opts::usage(
            "--agents, --tasks, --frameworks and --runs must be above 0",
        ));
    }
    if o.frameworks > o.tasks {
        return Err(crate::opts::usage(
            "--frameworks must not be above --tasks (each framework runs at least one)",
        ));
    }
    let mut master = MasterProcess::start_with(&["--agent-timeout", "60s"])?;
    let client = master.client()?;
    let agents = SimAgents::start(&master, o.agents, o.tasks)?;
    agents.wait_registered(&mut master, &client, 0)?;
    let hello = corral_policy::builtin::scheduler("hello")
        .ok_or_else(|| anyhow!("this corral was built without the hello scheduler"))?;
    let fill = Instant::now();
    for f in 0..o.frameworks {
        // The tasks shared out evenly: the first `tasks % frameworks` run one more.
        let count = o.tasks / o.frameworks + u32::from(f < o.tasks % o.frameworks);
        let header = Kind::FrameworkSubmit(pb::FrameworkSubmit {
            name: format!("restart-bench-{f}"),
            workload: format!(
                "count = {count}\nimage = \"bench/simulated:1\"\ncpus = 0.01\nmem_mb = 8\n"
            ),
            who: "corral bench restart".into(),
            size: hello.len() as u64,
            ..Default::default()
        });
        match crate::client::upload(&client, header, hello)? {
            R::Framework(_) => {}
            other => return Err(anyhow!("unexpected answer from the master: {other:?}")),
        }
    }
    // Tasks running, and tasks that ended (hello does not relaunch them, so a fill that
    // lost some can never finish).
    let count = |session: &crate::client::Session| -> anyhow::Result<(u32, u32)> {
        match session.request(Kind::ListFrameworks(pb::ListFrameworks::default()))? {
            R::Frameworks(l) => Ok(l.frameworks.iter().flat_map(|f| f.tasks.iter()).fold(
                (0, 0),
                |(running, ended), c| match pb::TaskState::from_str_name(&c.state) {
                    Some(pb::TaskState::TaskRunning) => (running + c.count, ended),
                    Some(s) if s.is_terminal() => (running, ended + c.count),
                    _ => (running, ended),
                },
            )),
            other => Err(anyhow!("unexpected answer from the master: {other:?}")),
        }
    };
    let running = |session: &crate::client::Session| count(session).map(|(running, _)| running);
    let filling = crate::client::Session::connect(&client)?;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (n, ended) = count(&filling)?;
        if n >= o.tasks {
            break;
        }
        if ended > 0 {
            return Err(anyhow!(
                "{ended} tasks ended while the registry was being filled ({n} of {} running): the machine is too loaded for this size",
                o.tasks
            ));
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "only {n} of {} tasks running after 15 minutes",
                o.tasks
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(filling);
    println!(
        "restart: {} simulated agents, {} tasks in {} frameworks (filled in {:.1} s); {} restarts (kill -9, then start)",
        o.agents,
        o.tasks,
        o.frameworks,
        fill.elapsed().as_secs_f64(),
        o.runs
    );
    let mut times = Vec::new();
    for run in 0..o.runs {
        let since_ms = corral_master::now_ms();
        let start = Instant::now();
        master.restart()?;
        let serving = agents.wait_registered(&mut master, &client, since_ms)?;
        let took = serving - start;
        let n = running(&crate::client::Session::connect(&client)?)?;
        println!(
            "  run {}: serving with all {} agents re-registered after {:.3} s ({} tasks running)",
            run + 1,
            o.agents,
            took.as_secs_f64(),
            n
        );
        times.push(took.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "median: {median:.3} s (goal: at most 5 s; Apache Mesos 1.5 published about {MESOS_RESTART_SECS} s for 40,000 agents and 400,000 tasks)"
    );
    drop(agents);
    Ok(())
}
