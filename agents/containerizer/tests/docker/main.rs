//! Tests of the Docker containerizer against the real engine, on the local image
//! `corral/busybox:test` (built by `scripts/test`; no registry is needed or used).
//!
//! An engine that does not answer fails these tests with a message; they never skip.

mod harness;

use std::time::Duration;

use corral_containerizer::{ContainerError, Containerizer, LogOptions};
use corral_wire::pb::{
    self, health_check::Check, PortMapping, TaskReason, TaskState, TcpCheck, Volume,
};
use harness::{spec, state, Harness, IMAGE};

#[tokio::test]
async fn env_echo_finishes_and_its_logs_are_kept() {
    let mut h = Harness::new("echo").await;
    let mut s = spec(
        &h.task_id("env"),
        &["/bin/sh", "-c", "echo greeting=$GREETING; echo oops >&2"],
    );
    s.env.push(pb::KeyValue {
        key: "GREETING".into(),
        value: "hello-from-corral".into(),
    });
    s.labels.push(pb::KeyValue {
        key: "team".into(),
        value: "infra".into(),
    });
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let seen = h.until_terminal(&id, Duration::from_secs(30)).await;
    let states: Vec<_> = seen.iter().map(state).collect();
    assert_eq!(
        states,
        [
            TaskState::TaskStaging,
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ],
        "{seen:?}"
    );
    let last = seen.last().expect("a terminal status");
    assert_eq!(last.exit_code, Some(0));
    assert_eq!(last.agent_id, h.agent());

    let stdout = h.logs(&id, LogOptions::default()).await;
    assert!(
        stdout.contains("greeting=hello-from-corral"),
        "stdout: {stdout:?}"
    );
    assert!(
        !stdout.contains("oops"),
        "stderr leaked into stdout: {stdout:?}"
    );
    let stderr = h
        .logs(
            &id,
            LogOptions {
                follow: false,
                stderr: true,
            },
        )
        .await;
    assert_eq!(stderr.trim(), "oops");

    // The container carries the labels recovery and cleanup rely on, and the spec's own.
    let inspect =
        h.c.docker()
            .inspect_container(&corral_containerizer::container_name(&id), None)
            .await
            .expect("inspect the task's container");
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("corral.task_id"), Some(&id));
    assert_eq!(
        labels.get("corral.framework_id").map(String::as_str),
        Some("fw-test")
    );
    assert_eq!(
        labels.get("corral.agent_id").map(String::as_str),
        Some(h.agent())
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));

    // Retention: once removed, the logs are gone.
    let removed =
        h.c.remove_finished(h.agent(), Duration::ZERO)
            .await
            .expect("remove finished");
    assert_eq!(removed, 1);
    assert!(matches!(
        h.c.logs(&id, LogOptions::default()).await,
        Err(ContainerError::NoContainer(_))
    ));
    h.cleanup().await;
}

#[tokio::test]
async fn exit_code_three_fails_with_it() {
    let mut h = Harness::new("exit").await;
    let s = spec(&h.task_id("exit3"), &["/bin/sh", "-c", "exit 3"]);
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let last = h.terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(state(&last), TaskState::TaskFailed, "{last:?}");
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.reason, TaskReason::ReasonCommandExited as i32);
    h.cleanup().await;
}

#[tokio::test]
async fn killed_sleep_ends_killed_within_its_grace_period() {
    let mut h = Harness::new("kill").await;
    // PID 1 ignores SIGTERM unless it handles it, so `sleep` only stops at the SIGKILL.
    let mut s = spec(&h.task_id("sleep"), &["sleep", "300"]);
    s.kill_grace_period_ms = 1000;
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    h.until_state(&id, TaskState::TaskRunning, Duration::from_secs(30))
        .await;
    let asked = std::time::Instant::now();
    h.c.kill(&id, None).await.expect("kill");
    let seen = h.until_terminal(&id, Duration::from_secs(30)).await;
    let took = asked.elapsed();
    let last = seen.last().expect("a terminal status");
    assert_eq!(state(last), TaskState::TaskKilled, "{seen:?}");
    assert_eq!(last.exit_code, Some(137), "SIGKILL after the grace period");
    assert!(seen.iter().any(|s| state(s) == TaskState::TaskKilling));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "kill took {took:?} with a 1 s grace period"
    );

    // A task that handles SIGTERM stops at once, well inside a long grace period.
    let mut s = spec(
        &h.task_id("graceful"),
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    s.kill_grace_period_ms = 20_000;
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    h.until_state(&id, TaskState::TaskRunning, Duration::from_secs(30))
        .await;
    // Running is not yet trapping: a SIGTERM before the shell has run `trap` is ignored
    // (the shell is PID 1), and the task then waits for the SIGKILL at the end of its
    // grace period. On a loaded machine that happened.
    let trapping = std::time::Instant::now();
    while !h.logs(&id, LogOptions::default()).await.contains("ready") {
        assert!(
            trapping.elapsed() < Duration::from_secs(30),
            "the task never said it was ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = std::time::Instant::now();
    h.c.kill(&id, None).await.expect("kill");
    let last = h.terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(state(&last), TaskState::TaskKilled);
    assert_eq!(last.exit_code, Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    h.cleanup().await;
}

#[tokio::test]
async fn memory_hog_fails_with_reason_oom() {
    let mut h = Harness::new("oom").await;
    // `tail` keeps an endless line of zeros in memory.
    let mut s = spec(&h.task_id("hog"), &["tail", "/dev/zero"]);
    if let Some(r) = s.resources.as_mut() {
        r.mem_mb = 16;
    }
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let last = h.terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(state(&last), TaskState::TaskFailed, "{last:?}");
    assert_eq!(last.reason, TaskReason::ReasonOom as i32, "{last:?}");
    assert_eq!(last.exit_code, Some(137));
    h.cleanup().await;
}

#[tokio::test]
async fn failing_health_check_fails_the_task() {
    let mut h = Harness::new("health").await;
    let mut s = spec(&h.task_id("unhealthy"), &["sleep", "300"]);
    s.kill_grace_period_ms = 500;
    s.health_check = Some(pb::HealthCheck {
        check: Some(Check::Tcp(TcpCheck { port: 8081 })),
        interval_ms: 200,
        timeout_ms: 1000,
        retries: 3,
        grace_period_ms: 0,
    });
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let seen = h.until_terminal(&id, Duration::from_secs(30)).await;
    let last = seen.last().expect("a terminal status");
    assert_eq!(state(last), TaskState::TaskFailed, "{seen:?}");
    assert_eq!(last.reason, TaskReason::ReasonHealthCheckFailed as i32);
    assert_eq!(last.healthy, Some(false));
    assert!(last.message.contains("3 times"), "{}", last.message);

    // A passing command check reports healthy and leaves the task alone.
    let mut s = spec(&h.task_id("healthy"), &["sleep", "300"]);
    s.health_check = Some(pb::HealthCheck {
        check: Some(Check::Command(pb::CommandCheck {
            argv: vec!["/bin/true".into()],
        })),
        interval_ms: 200,
        timeout_ms: 5000,
        retries: 1,
        grace_period_ms: 0,
    });
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let update = h
        .until(&id, Duration::from_secs(30), |s| s.healthy == Some(true))
        .await;
    assert_eq!(state(&update), TaskState::TaskRunning);
    h.cleanup().await;
}

#[tokio::test]
async fn mapped_port_is_reachable_on_loopback() {
    let mut h = Harness::new("port").await;
    let mut s = spec(
        &h.task_id("httpd"),
        &[
            "/bin/sh",
            "-c",
            "mkdir -p /www && echo corral-port-ok > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    );
    s.port_mappings.push(PortMapping {
        container_port: 8080,
        host_port: 0,
        protocol: "tcp".into(),
        host_ip: "127.0.0.1".into(),
    });
    s.health_check = Some(pb::HealthCheck {
        check: Some(Check::Http(pb::HttpCheck {
            port: 8080,
            path: "/index.html".into(),
        })),
        interval_ms: 200,
        timeout_ms: 2000,
        retries: 5,
        grace_period_ms: 5000,
    });
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let running = h
        .until_state(&id, TaskState::TaskRunning, Duration::from_secs(30))
        .await;
    let host_port = running
        .port_mappings
        .first()
        .map(|m| m.host_port)
        .expect("RUNNING names the host port");
    assert!(
        harness::PORT_RANGE.contains(&host_port),
        "{host_port} outside the agent's range"
    );
    let body = harness::http_get_until(host_port, Duration::from_secs(20)).await;
    assert!(body.contains("corral-port-ok"), "{body:?}");
    // The HTTP health check reaches it too.
    h.until(&id, Duration::from_secs(20), |s| s.healthy == Some(true))
        .await;
    h.cleanup().await;
}

#[tokio::test]
async fn volume_file_is_visible_and_read_only() {
    let mut h = Harness::new("volume").await;
    let dir = std::env::temp_dir().join(format!("corral-vol-{}", h.run_id()));
    std::fs::create_dir_all(&dir).expect("make a host dir");
    std::fs::write(dir.join("hello.txt"), "volume-content-42\n").expect("write a host file");
    let mut s = spec(
        &h.task_id("vol"),
        &[
            "/bin/sh",
            "-c",
            "cat /data/hello.txt && ! touch /data/new 2>/dev/null",
        ],
    );
    s.volumes.push(Volume {
        source: dir.to_string_lossy().into_owned(),
        container_path: "/data".into(),
        read_only: true,
    });
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let last = h.terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(state(&last), TaskState::TaskFinished, "{last:?}");
    let out = h.logs(&id, LogOptions::default()).await;
    assert!(out.contains("volume-content-42"), "{out:?}");
    assert!(!dir.join("new").exists());
    let _ = std::fs::remove_dir_all(&dir);
    h.cleanup().await;
}

#[tokio::test]
async fn missing_image_fails_naming_it() {
    let mut h = Harness::new("pull").await;
    // A registry on a closed loopback port: the pull fails at once, sending nothing
    // beyond this host.
    let image = "127.0.0.1:1/corral/does-not-exist:1";
    let mut s = spec(&h.task_id("missing"), &["true"]);
    s.image = image.into();
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let seen = h.until_terminal(&id, Duration::from_secs(60)).await;
    let last = seen.last().expect("a terminal status");
    assert_eq!(state(last), TaskState::TaskFailed, "{seen:?}");
    assert_eq!(last.reason, TaskReason::ReasonImagePullFailed as i32);
    assert!(last.message.contains(image), "{}", last.message);
    assert_eq!(last.exit_code, None);
    assert!(
        seen.iter()
            .any(|s| state(s) == TaskState::TaskStaging && s.message.contains("pulling image")),
        "no pull progress reported: {seen:?}"
    );
    h.cleanup().await;
}

#[tokio::test]
async fn invalid_spec_never_reaches_the_engine() {
    let h = Harness::new("invalid").await;
    let mut s = spec(&h.task_id("bad"), &["true"]);
    s.port_mappings.push(PortMapping {
        container_port: 80,
        host_port: 80,
        protocol: "tcp".into(),
        host_ip: "127.0.0.1".into(),
    });
    let id = s.task_id.clone();
    match h.c.launch(s, h.agent()).await {
        Err(ContainerError::InvalidSpec(e)) => assert_eq!(e.field, "port_mappings[0].host_port"),
        other => panic!("expected an invalid spec, got {other:?}"),
    }
    let exists =
        h.c.docker()
            .inspect_container(&corral_containerizer::container_name(&id), None)
            .await;
    assert!(
        exists.is_err(),
        "a container was created for an invalid spec"
    );
}

#[tokio::test]
async fn recovery_finds_running_and_exited_containers() {
    let mut h = Harness::new("recover").await;
    let mut running = spec(&h.task_id("long"), &["sleep", "300"]);
    running.kill_grace_period_ms = 500;
    let running_id = running.task_id.clone();
    let exited = spec(&h.task_id("short"), &["/bin/sh", "-c", "exit 7"]);
    let exited_id = exited.task_id.clone();
    h.c.launch(running, h.agent()).await.expect("launch");
    h.c.launch(exited, h.agent()).await.expect("launch");
    h.until_state(&running_id, TaskState::TaskRunning, Duration::from_secs(30))
        .await;
    h.terminal(&exited_id, Duration::from_secs(30)).await;

    // The agent restarts: a new containerizer finds both by their labels.
    h.restart().await;
    let found = h.c.recover(h.agent()).await.expect("recover");
    let by_id = |id: &str| {
        found
            .iter()
            .find(|r| r.status.task_id == id)
            .unwrap_or_else(|| panic!("{id} not recovered: {found:?}"))
    };
    let r = by_id(&running_id);
    assert_eq!(state(&r.status), TaskState::TaskRunning);
    assert_eq!(r.status.framework_id, "fw-test");
    assert_eq!(r.spec.as_ref().map(|s| s.kill_grace_period_ms), Some(500));
    let e = by_id(&exited_id);
    assert_eq!(state(&e.status), TaskState::TaskFailed);
    assert_eq!(e.status.exit_code, Some(7));
    assert_eq!(found.len(), 2, "{found:?}");

    // The running one is supervised again: a kill reaches it and reports KILLED.
    h.c.kill(&running_id, None)
        .await
        .expect("kill recovered task");
    let last = h.terminal(&running_id, Duration::from_secs(30)).await;
    assert_eq!(state(&last), TaskState::TaskKilled);
    // Its logs are still there.
    assert!(h.c.logs(&exited_id, LogOptions::default()).await.is_ok());
    h.cleanup().await;
}

#[tokio::test]
async fn local_image_is_used_without_a_pull() {
    let mut h = Harness::new("local").await;
    let s = spec(&h.task_id("local"), &["true"]);
    let id = s.task_id.clone();
    h.c.launch(s, h.agent()).await.expect("launch");
    let seen = h.until_terminal(&id, Duration::from_secs(30)).await;
    assert!(
        seen.iter().all(|s| !s.message.contains("pulling")),
        "{IMAGE} is local but was pulled: {seen:?}"
    );
    assert_eq!(
        state(seen.last().expect("terminal")),
        TaskState::TaskFinished
    );
    h.cleanup().await;
}
