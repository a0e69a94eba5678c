//! The operator surface against a running cluster: the HTTP API, `/metrics` of master and
//! agent (checked by `promtool`), and the web UI in headless Chromium.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    agent_id, free_tcp_addr, unique, wait_for, ContainerCleanup, Master, TempDir, TEST_IMAGE,
};

/// One answer: status, headers (lowercased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A plain HTTP/1.1 request over a fresh connection.
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

fn get_ok_json(addr: SocketAddr, path: &str) -> Value {
    let a = get(addr, path);
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    assert_eq!(
        a.header("content-type"),
        Some("application/json"),
        "GET {path}"
    );
    a.json()
}

/// The path of a tool the test needs; panics naming the Debian package when it is missing.
fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed: run scripts/test, or apt-get install -y {package}")
    })
}

/// Runs `promtool check metrics` on `text`; panics with its findings when it objects.
fn promtool_check(promtool: &Path, what: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refuses the {what}'s metrics:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample written exactly as `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn task_named<'a>(tasks: &'a Value, id: &str) -> Option<&'a Value> {
    tasks.as_array()?.iter().find(|t| t["id"] == id)
}

/// Headless Chromium, with its console messages on stderr.
fn chromium(bin: &Path, profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

/// Lines Chromium logged for the page's console (errors, warnings, logs).
fn console_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn http_api_metrics_and_web_ui_against_a_running_cluster() {
    crate::harness::require_docker();
    let promtool = require_tool("promtool", "prometheus");
    let chromium_bin = require_tool("chromium", "chromium");

    let master_http = free_tcp_addr();
    let agent_http = free_tcp_addr();
    let master = Master::start(&["--http", &master_http.to_string()]);
    let agent_dir = TempDir::new("http-agent");
    let _agent = master.agent(
        &agent_dir.0,
        &[
            "--ports",
            "31300-31399",
            "--http",
            &agent_http.to_string(),
            "--attribute",
            "rack=r1",
        ],
    );
    let _cleanup = ContainerCleanup(agent_dir.0.clone());

    wait_for("the master's /health", Duration::from_secs(10), || {
        request(master_http, "GET", "/health").is_ok_and(|a| a.status == 200)
    });
    assert_eq!(get_ok_json(master_http, "/health")["status"], "ok");
    wait_for("the agent to register", Duration::from_secs(15), || {
        get_ok_json(master_http, "/api/v1/agents")
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["state"] == "active")
    });
    // The agent writes its id once the master's answer reaches it, just after the master
    // lists it.
    wait_for("the agent's id file", Duration::from_secs(10), || {
        agent_id(&agent_dir.0).is_some()
    });
    let id = agent_id(&agent_dir.0).expect("the agent keeps its id");

    // A long task, running before anything is asserted.
    let task_id = unique("http-sleep");
    let out = master.cli(&[
        "task", "run", "--image", TEST_IMAGE, "--id", &task_id, "--cpus", "0.5", "--mem", "64",
        "--", "sleep", "300",
    ]);
    assert!(
        out.status.success(),
        "task run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the task to run", Duration::from_secs(30), || {
        task_named(&get_ok_json(master_http, "/api/v1/tasks"), &task_id)
            .is_some_and(|t| t["state"] == "TASK_RUNNING")
    });

    // Agents: the same entries as `corral agents --json`, bar the heartbeat time.
    let agents = get_ok_json(master_http, "/api/v1/agents");
    let agent = &agents[0];
    assert_eq!(agent["id"], id.as_str());
    assert_eq!(agent["total"]["cpus"], 2.0);
    assert_eq!(agent["total"]["mem_mb"], 2048);
    assert_eq!(
        agent["used"]["cpus"], 0.5,
        "the running task holds its cpus"
    );
    assert_eq!(agent["used"]["mem_mb"], 64);
    assert_eq!(agent["attributes"]["rack"], "r1");
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("last_seen_ms"));
        v
    };
    let cli_agents = master.agents();
    assert_eq!(
        strip(agent.clone()),
        strip(cli_agents[0].clone()),
        "HTTP and CLI agents differ"
    );

    // Tasks: the same as `corral task list --json`.
    let tasks = get_ok_json(master_http, "/api/v1/tasks");
    let task = task_named(&tasks, &task_id).expect("task listed").clone();
    assert_eq!(task["agent_id"], id.as_str());
    assert_eq!(task["image"], TEST_IMAGE);
    assert_eq!(task["cpus"], 0.5);
    let cli_tasks = master.cli_json(&["task", "list", "--json"]);
    assert_eq!(
        Some(&task),
        task_named(&cli_tasks, &task_id),
        "HTTP and CLI tasks differ"
    );

    // Frameworks: a list (empty until frameworks land). Policies: the allocator slot with
    // the built-in DRF active and answering allocation cycles.
    assert!(get_ok_json(master_http, "/api/v1/frameworks").is_array());
    let policies = get_ok_json(master_http, "/api/v1/policies");
    let slot = &policies[0];
    assert_eq!(slot["slot"], "allocator", "{policies}");
    assert_eq!(slot["active"]["who"], "built-in", "{policies}");
    assert_eq!(slot["history"][0]["state"], "active", "{policies}");
    assert!(
        slot["active"]["digest"]
            .as_str()
            .is_some_and(|d| d.len() == 64),
        "{policies}"
    );

    // State: everything together, with the addresses.
    let state = get_ok_json(master_http, "/api/v1/state");
    assert_eq!(state["quic_addr"], master.addr.to_string());
    assert_eq!(state["http_addr"], master_http.to_string());
    assert_eq!(state["agents"][0]["id"], id.as_str());
    assert!(task_named(&state["tasks"], &task_id).is_some_and(|t| t["state"] == "TASK_RUNNING"));
    for key in ["frameworks", "policies"] {
        assert!(state[key].is_array(), "state.{key}: {state}");
    }
    assert!(state["now_ms"].as_u64() >= state["started_ms"].as_u64());

    // Errors: one JSON object with a stable code.
    let missing = get(master_http, "/api/v1/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let post = request(master_http, "POST", "/api/v1/tasks").expect("POST");
    assert_eq!(post.status, 405);
    assert_eq!(post.json()["error"]["code"], "method_not_allowed");

    // Master metrics: promtool accepts them, and they count what happened.
    let m = get(master_http, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        m.header("content-type")
    );
    promtool_check(&promtool, "master", &m.body);
    let text = &m.body;
    assert_eq!(
        sample(text, "corral_agents{state=\"active\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "corral_agents{state=\"unreachable\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(text, "corral_tasks{state=\"TASK_RUNNING\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(text, "corral_task_launches_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(text, "corral_status_updates_total{state=\"TASK_RUNNING\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(sample(text, "corral_quic_connections_total").is_some_and(|n| n >= 2.0));
    assert!(sample(text, "corral_quic_connections_open").is_some_and(|n| n >= 1.0));
    for family in [
        "corral_allocation_cycle_duration_seconds histogram",
        "corral_offers_made_total counter",
        "corral_offers_declined_total counter",
        "corral_policy_calls_total counter",
        "corral_policy_errors_total counter",
        "corral_policy_call_duration_seconds histogram",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family} missing: {text}"
        );
    }

    // Agent metrics and health.
    assert_eq!(get_ok_json(agent_http, "/health")["status"], "ok");
    let a = get(agent_http, "/metrics");
    assert_eq!(a.status, 200);
    promtool_check(&promtool, "agent", &a.body);
    let text = &a.body;
    assert_eq!(sample(text, "corral_agent_containers"), Some(1.0), "{text}");
    assert_eq!(
        sample(text, "corral_agent_tasks{state=\"TASK_RUNNING\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(text, "corral_agent_launch_duration_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(text, "corral_agent_image_pulls_total").is_some(),
        "{text}"
    );

    // The web UI in headless Chromium: the agent and the running task, no console output.
    let url = format!("http://{master_http}/");
    let profile = TempDir::new("chromium");
    let dom = chromium(&chromium_bin, &profile.0, &["--dump-dom"], &url);
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success() && html.contains("data-loaded=\"true\""),
        "the UI did not load its state: status {:?}\n{}\n{html}",
        dom.status,
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains(&format!("data-agent-id=\"{id}\"")),
        "no agent {id} in the UI: {html}"
    );
    assert!(
        html.contains(&format!("data-task-id=\"{task_id}\"")),
        "no task {task_id} in the UI: {html}"
    );
    let row_start = html
        .find(&format!("data-task-id=\"{task_id}\""))
        .unwrap_or_default();
    let row = &html[row_start..];
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    assert!(
        row.contains("TASK_RUNNING"),
        "the task is not shown running: {row}"
    );
    let console = console_lines(&dom.stderr);
    assert!(
        console.is_empty(),
        "the UI wrote to the console:\n{}",
        console.join("\n")
    );

    let artifacts = Path::new(crate::harness::corral_bin())
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let png = artifacts.join("ui.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(
        &chromium_bin,
        &profile.0,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,1000",
            "--hide-scrollbars",
        ],
        &url,
    );
    let console = console_lines(&shot.stderr);
    assert!(
        console.is_empty(),
        "the UI wrote to the console:\n{}",
        console.join("\n")
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes): {}",
        png.display(),
        String::from_utf8_lossy(&shot.stderr)
    );
}
