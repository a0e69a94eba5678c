//! Health checks of a running task: a command run inside its container, an HTTP GET or a
//! TCP connect to its address, with Mesos's semantics for interval, timeout, consecutive
//! failures and grace period.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::Docker;
use corral_wire::pb::{health_check::Check, HealthCheck};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Mesos's defaults for a check's fields left at 0.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_RETRIES: u32 = 3;

/// What the checker tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HealthEvent {
    /// The task's health changed.
    Healthy(bool),
    /// The check failed its retries: the task must be killed.
    Unhealthy(String),
}

/// Where the task can be reached.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) docker: Docker,
    pub(super) container_id: String,
    /// The container's address for HTTP and TCP checks.
    pub(super) ip: Option<IpAddr>,
}

/// Runs `check` until it fails its retries (or the receiver goes away).
pub(super) async fn run(target: Target, check: HealthCheck, tx: mpsc::Sender<HealthEvent>) {
    let interval = ms_or(check.interval_ms, DEFAULT_INTERVAL);
    let timeout = ms_or(check.timeout_ms, DEFAULT_TIMEOUT);
    let retries = if check.retries == 0 {
        DEFAULT_RETRIES
    } else {
        check.retries
    };
    let grace_ends = Instant::now() + Duration::from_millis(check.grace_period_ms);
    let mut in_grace = check.grace_period_ms > 0;
    let mut failures = 0u32;
    let mut reported: Option<bool> = None;
    loop {
        tokio::time::sleep(interval).await;
        let result = match tokio::time::timeout(timeout, probe(&target, &check)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        };
        match result {
            Ok(()) => {
                // A success ends the grace period early, as in Mesos.
                in_grace = false;
                failures = 0;
                if reported != Some(true) {
                    reported = Some(true);
                    if tx.send(HealthEvent::Healthy(true)).await.is_err() {
                        return;
                    }
                }
            }
            Err(why) => {
                if in_grace && Instant::now() < grace_ends {
                    tracing::debug!(container_id = %target.container_id, %why, "health check failed in grace period");
                    continue;
                }
                in_grace = false;
                failures += 1;
                tracing::debug!(container_id = %target.container_id, %why, failures, "health check failed");
                if reported != Some(false) {
                    reported = Some(false);
                    if tx.send(HealthEvent::Healthy(false)).await.is_err() {
                        return;
                    }
                }
                if failures >= retries {
                    let message = format!("health check failed {failures} times in a row: {why}");
                    let _ = tx.send(HealthEvent::Unhealthy(message)).await;
                    return;
                }
            }
        }
    }
}

fn ms_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

async fn probe(target: &Target, check: &HealthCheck) -> Result<(), String> {
    match &check.check {
        Some(Check::Command(cmd)) => exec(target, cmd.argv.clone()).await,
        Some(Check::Tcp(tcp)) => {
            let addr = address(target, tcp.port)?;
            TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("tcp connect to {addr}: {e}"))
        }
        Some(Check::Http(http)) => {
            let addr = address(target, http.port)?;
            let path = if http.path.is_empty() {
                "/"
            } else {
                &http.path
            };
            http_get(addr, path).await
        }
        None => Err("no check given".to_string()),
    }
}

fn address(target: &Target, port: u32) -> Result<SocketAddr, String> {
    let ip = target
        .ip
        .ok_or_else(|| "the container has no address to check".to_string())?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} out of range"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A GET; healthy on a status from 200 to 399, as Mesos defines it.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("http connect to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: corral-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http write to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("http read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("http {addr}{path}: no status line"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("http {addr}{path} answered {code}"))
    }
}

/// Runs `argv` inside the container; healthy when it exits 0.
async fn exec(target: &Target, argv: Vec<String>) -> Result<(), String> {
    let docker = &target.docker;
    let created = docker
        .create_exec(
            &target.container_id,
            ExecConfig {
                cmd: Some(argv),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("creating check command: {e}"))?;
    let mut last_output = String::new();
    match docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| format!("starting check command: {e}"))?
    {
        StartExecResults::Attached { mut output, .. } => {
            while let Some(chunk) = output.next().await {
                if let Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) = chunk {
                    last_output = String::from_utf8_lossy(&message).trim().to_string();
                }
            }
        }
        StartExecResults::Detached => {}
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| format!("inspecting check command: {e}"))?;
    match inspect.exit_code {
        Some(0) => Ok(()),
        Some(code) if last_output.is_empty() => Err(format!("check command exited {code}")),
        Some(code) => Err(format!("check command exited {code}: {last_output}")),
        None => Err("check command did not finish".to_string()),
    }
}
