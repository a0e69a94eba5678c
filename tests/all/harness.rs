//! Starting and stopping real `corral` processes, and waiting for conditions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The local image the tests run (made by `scripts/test`; no registry is used).
pub const TEST_IMAGE: &str = "corral/busybox:test";

/// Panics with a clear message unless the Docker engine answers and has the test image.
pub fn require_docker() {
    let ok = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Docker engine does not answer or has no {TEST_IMAGE} image: run scripts/test, which builds it"
    );
}

/// The `corral` binary under test.
pub fn corral_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

/// A fresh temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "corral-test-{tag}-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CORRAL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

/// A free UDP port on loopback.
pub fn free_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.local_addr().expect("local addr")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[String], log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(corral_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start corral");
        Self { child, log }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A master process with its own state folder on a free port.
pub struct Master {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: TempDir,
    args: Vec<String>,
}

impl Master {
    pub fn start(extra: &[&str]) -> Self {
        let dir = TempDir::new("master");
        let addr = free_udp_addr();
        let mut args: Vec<String> = vec![
            "--log".into(),
            "info".into(),
            "master".into(),
            "--listen".into(),
            addr.to_string(),
            "--state".into(),
            dir.0.join("state").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        no_default_http(&mut args);
        let proc = Proc::spawn(&args, dir.0.join("master.log"));
        let master = Self {
            proc,
            addr,
            dir,
            args,
        };
        let ca = master.ca();
        wait_for("the master's CA file", Duration::from_secs(10), || {
            ca.exists()
        });
        master
    }

    /// Starts the master process again on the same address and state folder.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.start_again();
    }

    /// Stops the master as an operator would (SIGTERM, waiting for it to exit), then
    /// starts it again on the same address and state folder.
    pub fn restart_gracefully(&mut self) {
        let pid = self.proc.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        wait_for("the master to exit", Duration::from_secs(10), || {
            !self.proc.is_running()
        });
        self.start_again();
    }

    /// Leaves `flag` and its value out of the arguments of the next restarts.
    pub fn drop_arg(&mut self, flag: &str) {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..(i + 2).min(self.args.len()));
        }
    }

    fn start_again(&mut self) {
        self.proc = Proc::spawn(&self.args, self.dir.0.join("master-restarted.log"));
        let addr = self.addr;
        let ca = self.ca();
        wait_for(
            "the restarted master to answer",
            Duration::from_secs(10),
            || {
                Command::new(corral_bin())
                    .args(["agents", "--master", &addr.to_string(), "--ca"])
                    .arg(&ca)
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.0.join("state").join("ca.pem")
    }

    /// Starts an agent process joined to this master, keeping state in `state`.
    pub fn agent(&self, state: &Path, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "--log".into(),
            "info".into(),
            "agent".into(),
            "--master".into(),
            self.addr.to_string(),
            "--ca".into(),
            self.ca().display().to_string(),
            "--state".into(),
            state.display().to_string(),
            "--backoff-max".into(),
            "500ms".into(),
        ];
        // 2 CPUs and 2 GB unless the test says otherwise.
        for (flag, default) in [("--cpus", "2"), ("--mem", "2048")] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        no_default_http(&mut args);
        std::fs::create_dir_all(state).expect("agent state dir");
        Proc::spawn(&args, state.join("agent.log"))
    }

    /// Runs a client command against this master and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // The connection flags go before a `--` that starts a task's command.
        let at = full.iter().position(|a| a == "--").unwrap_or(full.len());
        full.splice(
            at..at,
            [
                "--master".to_string(),
                self.addr.to_string(),
                "--ca".to_string(),
                self.ca().display().to_string(),
            ],
        );
        Command::new(corral_bin())
            .args(&full)
            .output()
            .expect("run corral")
    }

    /// Runs a client command that must succeed, and returns what it printed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command that must succeed and print JSON (give it `--json`), parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("corral {args:?} printed no JSON ({e}): {out}"))
    }

    /// [`Master::cli_json`] for a command that prints a list.
    pub fn cli_list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        match self.cli_json(args) {
            serde_json::Value::Array(a) => a,
            other => panic!("corral {args:?} printed no list: {other}"),
        }
    }

    /// `corral agents --json`, parsed.
    pub fn agents(&self) -> Vec<serde_json::Value> {
        self.cli_list(&["agents", "--json"])
    }

    /// The state of the agent with this id, if the master knows it.
    pub fn agent_state(&self, id: &str) -> Option<String> {
        self.agents()
            .into_iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }
}

/// Tests run side by side: unless a test names an HTTP address, the process serves HTTP
/// on a port of the system's choosing rather than the shared default.
fn no_default_http(args: &mut Vec<String>) {
    if !args.iter().any(|a| a == "--http") {
        args.extend(["--http".to_string(), "127.0.0.1:0".to_string()]);
    }
}

/// A free TCP port on loopback.
pub fn free_tcp_addr() -> SocketAddr {
    let s = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    s.local_addr().expect("local addr")
}

/// Polls `cond` until it holds, panicking with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The id an agent keeps in its state folder, once it has registered.
pub fn agent_id(state: &Path) -> Option<String> {
    std::fs::read_to_string(state.join("agent_id"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A tag unique to this test run, for task ids (container names derive from them).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:06x}",
        std::process::id(),
        rand_u32() & 0xff_ffff
    )
}

/// Removes, when dropped, every container started by the agent keeping state in `dir`.
pub struct ContainerCleanup(pub PathBuf);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let Some(id) = agent_id(&self.0) else { return };
        let filter = format!("label=corral.agent_id={id}");
        let Some(listed) = docker_within_a_minute(&["ps", "-aq", "--filter", &filter]) else {
            return;
        };
        let ids: Vec<&str> = listed.split_whitespace().collect();
        if ids.is_empty() {
            return;
        }
        let mut rm = vec!["rm", "-f"];
        rm.extend(&ids);
        if docker_within_a_minute(&rm).is_none() {
            eprintln!("containers left: {ids:?}");
        }
    }
}

/// Runs `docker ARGS` for at most a minute, and returns what it printed: an engine that no
/// longer answers must not hang the suite in a cleanup (the test itself is over). None,
/// said, when it was cut short.
fn docker_within_a_minute(args: &[&str]) -> Option<String> {
    let mut child = Command::new("docker")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("docker {} did not end within 60 s", args.join(" "));
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
