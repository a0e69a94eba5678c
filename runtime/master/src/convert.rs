//! Conversions between the wire's task types (protobuf) and the policies' (WIT).

use corral_policy::scheduler as wit;
use corral_wire::pb;

/// A scheduler's task spec, as the wire carries it.
pub fn spec_to_pb(s: &wit::TaskSpec) -> pb::TaskSpec {
    let kv = |l: &[wit::KeyValue]| {
        l.iter()
            .map(|k| pb::KeyValue {
                key: k.key.clone(),
                value: k.value.clone(),
            })
            .collect()
    };
    pb::TaskSpec {
        task_id: s.task_id.clone(),
        framework_id: s.framework_id.clone(),
        name: s.name.clone(),
        image: s.image.clone(),
        command: s.command.clone(),
        args: s.args.clone(),
        env: kv(&s.env),
        resources: Some(pb::Resources {
            cpus_milli: s.resources.cpus_milli,
            mem_mb: s.resources.mem_mb,
            disk_mb: s.resources.disk_mb,
            ports: s
                .ports
                .iter()
                .map(|p| pb::PortRange {
                    begin: p.begin,
                    end: p.end,
                })
                .collect(),
        }),
        port_mappings: s
            .port_mappings
            .iter()
            .map(|p| pb::PortMapping {
                container_port: p.container_port,
                host_port: p.host_port,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        network_mode: match s.network_mode {
            wit::NetworkMode::Bridge => pb::NetworkMode::NetworkBridge,
            wit::NetworkMode::Host => pb::NetworkMode::NetworkHost,
            wit::NetworkMode::None => pb::NetworkMode::NetworkNone,
        } as i32,
        volumes: s
            .volumes
            .iter()
            .map(|v| pb::Volume {
                source: v.source.clone(),
                container_path: v.container_path.clone(),
                read_only: v.read_only,
            })
            .collect(),
        labels: kv(&s.labels),
        kill_grace_period_ms: s.kill_grace_period_ms,
        health_check: s.health_check.as_ref().map(|h| pb::HealthCheck {
            check: Some(match &h.check {
                wit::Check::Command(argv) => {
                    pb::health_check::Check::Command(pb::CommandCheck { argv: argv.clone() })
                }
                wit::Check::Http(c) => pb::health_check::Check::Http(pb::HttpCheck {
                    port: c.port,
                    path: c.path.clone(),
                }),
                wit::Check::Tcp(port) => pb::health_check::Check::Tcp(pb::TcpCheck { port: *port }),
            }),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            grace_period_ms: h.grace_period_ms,
        }),
    }
}

/// A wire task state, as policies name it.
pub fn state_to_wit(state: i32) -> wit::TaskState {
    use pb::TaskState as S;
    match S::try_from(state).unwrap_or(S::TaskUnknown) {
        S::TaskStaging => wit::TaskState::Staging,
        S::TaskStarting => wit::TaskState::Starting,
        S::TaskRunning => wit::TaskState::Running,
        S::TaskFinished => wit::TaskState::Finished,
        S::TaskFailed => wit::TaskState::Failed,
        S::TaskKilled => wit::TaskState::Killed,
        S::TaskLost => wit::TaskState::Lost,
        S::TaskKilling => wit::TaskState::Killing,
        S::TaskError => wit::TaskState::Error,
        S::TaskUnreachable => wit::TaskState::Unreachable,
        S::TaskDropped => wit::TaskState::Dropped,
        S::TaskGone => wit::TaskState::Gone,
        S::TaskUnknown | S::Unspecified => wit::TaskState::Unknown,
    }
}

/// A wire task reason, as policies name it.
pub fn reason_to_wit(reason: i32) -> wit::TaskReason {
    use pb::TaskReason as R;
    match R::try_from(reason).unwrap_or(R::ReasonUnspecified) {
        R::ReasonUnspecified => wit::TaskReason::Unspecified,
        R::ReasonCommandExited => wit::TaskReason::CommandExited,
        R::ReasonOom => wit::TaskReason::Oom,
        R::ReasonHealthCheckFailed => wit::TaskReason::HealthCheckFailed,
        R::ReasonKilledByRequest => wit::TaskReason::KilledByRequest,
        R::ReasonImagePullFailed => wit::TaskReason::ImagePullFailed,
        R::ReasonInvalidSpec => wit::TaskReason::InvalidSpec,
        R::ReasonAgentLost => wit::TaskReason::AgentLost,
        R::ReasonContainerError => wit::TaskReason::ContainerError,
        R::ReasonReconciliation => wit::TaskReason::Reconciliation,
        R::ReasonAgentDrained => wit::TaskReason::AgentDrained,
    }
}

/// A wire status update, as policies see it.
pub fn status_to_wit(s: &pb::TaskStatus) -> wit::TaskStatus {
    wit::TaskStatus {
        task_id: s.task_id.clone(),
        agent_id: s.agent_id.clone(),
        state: state_to_wit(s.state),
        reason: reason_to_wit(s.reason),
        message: s.message.clone(),
        exit_code: s.exit_code,
        healthy: s.healthy,
    }
}

/// Scalar resources as policies see them.
pub fn resources_to_wit(r: &corral_core::Resources) -> wit::Resources {
    wit::Resources {
        cpus_milli: r.cpus_milli,
        mem_mb: r.mem_mb,
        disk_mb: r.disk_mb,
    }
}
