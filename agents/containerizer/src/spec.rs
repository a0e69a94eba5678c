//! Validation of a task spec against an agent's free resources, before anything reaches
//! the container runtime. Pure: the master calls it on a scheduler's decision, the agent
//! calls it again on a launch.

use std::collections::HashSet;
use std::net::IpAddr;

use corral_wire::pb::{self, health_check::Check, NetworkMode, PortRange, TaskSpec};

/// The smallest CPU share a task may ask for: 0.01 CPU, the engine's smallest quota.
pub const MIN_CPUS_MILLI: u64 = 10;
/// The smallest memory limit a task may ask for: the engine refuses less than 6 MB.
pub const MIN_MEM_MB: u64 = 6;

const MAX_ID_LEN: usize = 200;

/// The one `corral.` label a spec may carry: the workload generation the master stamps
/// on each task a framework launches.
pub const GENERATION_LABEL: &str = "corral.generation";

/// What an agent has free for one task: the resources a spec is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCapacity {
    /// Free CPUs in thousandths of a CPU.
    pub cpus_milli: u64,
    /// Free memory in MB.
    pub mem_mb: u64,
    /// Free disk in MB.
    pub disk_mb: u64,
    /// Free host ports, inclusive ranges.
    pub ports: Vec<PortRange>,
}

impl AgentCapacity {
    /// Capacity with no limit on CPUs, memory and disk, and the given port ranges: for
    /// checking a spec's shape where free resources are accounted elsewhere.
    pub fn unbounded(ports: Vec<PortRange>) -> Self {
        AgentCapacity {
            cpus_milli: u64::MAX,
            mem_mb: u64::MAX,
            disk_mb: u64::MAX,
            ports,
        }
    }

    /// Free resources as a wire [`pb::Resources`].
    pub fn from_resources(free: &pb::Resources) -> Self {
        AgentCapacity {
            cpus_milli: free.cpus_milli,
            mem_mb: free.mem_mb,
            disk_mb: free.disk_mb,
            ports: free.ports.clone(),
        }
    }

    fn has_port(&self, port: u32) -> bool {
        in_ranges(&self.ports, port)
    }
}

fn in_ranges(ranges: &[PortRange], port: u32) -> bool {
    ranges.iter().any(|r| r.begin <= port && port <= r.end)
}

fn describe_ranges(ranges: &[PortRange]) -> String {
    if ranges.is_empty() {
        return "none".to_string();
    }
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.begin, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A spec refused by [`validate_spec`]: which field is wrong and why.
///
/// Displays as `field: message`, for example `resources.cpus_milli: must be greater than 0`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field's path in the spec, as in `port_mappings[1].host_port`.
    pub field: String,
    /// What is wrong with it and what would be right.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError {
        field: field.into(),
        message: message.into(),
    })
}

/// Checks `spec` against the agent's free resources `free`.
///
/// Refuses: an empty task id or image; missing resources; CPUs or memory of zero, below the
/// engine's minimum ([`MIN_CPUS_MILLI`], [`MIN_MEM_MB`]) or above what is free; disk above
/// what is free; port ranges and host ports outside the agent's free ports; malformed port
/// mappings; port mappings with a network mode other than bridge; volume paths that are
/// not absolute or contain `..`; invalid volume names; empty or reserved (`corral.`, but
/// for [`GENERATION_LABEL`]) label keys; malformed environment variables; and health checks without a check, port or
/// command.
///
/// # Errors
///
/// The first problem found, naming its field.
pub fn validate_spec(spec: &TaskSpec, free: &AgentCapacity) -> Result<(), SpecError> {
    check_id("task_id", &spec.task_id, true)?;
    check_id("framework_id", &spec.framework_id, false)?;
    check_image(&spec.image)?;
    check_resources(spec, free)?;
    let network = NetworkMode::try_from(spec.network_mode).map_err(|_| SpecError {
        field: "network_mode".into(),
        message: format!(
            "unknown network mode {}; use bridge, host or none",
            spec.network_mode
        ),
    })?;
    check_ports(spec, free, network)?;
    check_volumes(spec)?;
    check_key_values("env", &spec.env, true)?;
    check_key_values("labels", &spec.labels, false)?;
    for (i, arg) in spec.command.iter().chain(spec.args.iter()).enumerate() {
        if arg.contains('\0') {
            let field = if i < spec.command.len() {
                format!("command[{i}]")
            } else {
                format!("args[{}]", i - spec.command.len())
            };
            return err(field, "must not contain a NUL byte");
        }
    }
    if let Some(health) = &spec.health_check {
        check_health(health, network)?;
    }
    Ok(())
}

fn check_id(field: &str, id: &str, required: bool) -> Result<(), SpecError> {
    if id.is_empty() {
        if required {
            return err(field, "must not be empty");
        }
        return Ok(());
    }
    if id.len() > MAX_ID_LEN {
        return err(field, format!("must be at most {MAX_ID_LEN} bytes long"));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return err(field, "must not contain whitespace or control characters");
    }
    Ok(())
}

fn check_image(image: &str) -> Result<(), SpecError> {
    if image.trim().is_empty() {
        return err("image", "must not be empty; name a Docker image");
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err("image", "must not contain whitespace");
    }
    if image.starts_with(['-', ':', '@', '/']) || image.ends_with([':', '@', '/']) {
        return err("image", format!("{image:?} is not a valid image reference"));
    }
    Ok(())
}

fn check_resources(spec: &TaskSpec, free: &AgentCapacity) -> Result<(), SpecError> {
    let Some(res) = &spec.resources else {
        return err("resources", "must be set (cpus_milli and mem_mb at least)");
    };
    if res.cpus_milli == 0 {
        return err("resources.cpus_milli", "must be greater than 0");
    }
    if res.cpus_milli < MIN_CPUS_MILLI {
        return err(
            "resources.cpus_milli",
            format!("must be at least {MIN_CPUS_MILLI} (0.01 CPU)"),
        );
    }
    if res.cpus_milli > free.cpus_milli {
        return err(
            "resources.cpus_milli",
            format!(
                "{} CPUs is more than the agent has free ({} CPUs)",
                res.cpus_milli as f64 / 1000.0,
                free.cpus_milli as f64 / 1000.0
            ),
        );
    }
    if res.mem_mb == 0 {
        return err("resources.mem_mb", "must be greater than 0");
    }
    if res.mem_mb < MIN_MEM_MB {
        return err(
            "resources.mem_mb",
            format!("must be at least {MIN_MEM_MB} (the engine's minimum)"),
        );
    }
    if res.mem_mb > free.mem_mb {
        return err(
            "resources.mem_mb",
            format!(
                "{} MB is more than the agent has free ({} MB)",
                res.mem_mb, free.mem_mb
            ),
        );
    }
    if res.disk_mb > free.disk_mb {
        return err(
            "resources.disk_mb",
            format!(
                "{} MB is more than the agent has free ({} MB)",
                res.disk_mb, free.disk_mb
            ),
        );
    }
    for (i, range) in res.ports.iter().enumerate() {
        let field = format!("resources.ports[{i}]");
        if range.begin == 0 || range.begin > range.end || range.end > 65535 {
            return err(
                field,
                format!(
                    "{}-{} is not a port range (1-65535, begin <= end)",
                    range.begin, range.end
                ),
            );
        }
        let inside = free
            .ports
            .iter()
            .any(|r| r.begin <= range.begin && range.end <= r.end);
        if !inside {
            return err(
                field,
                format!(
                    "{}-{} is outside the agent's free ports ({})",
                    range.begin,
                    range.end,
                    describe_ranges(&free.ports)
                ),
            );
        }
    }
    Ok(())
}

fn check_ports(
    spec: &TaskSpec,
    free: &AgentCapacity,
    network: NetworkMode,
) -> Result<(), SpecError> {
    if !spec.port_mappings.is_empty() && network != NetworkMode::NetworkBridge {
        return err(
            "port_mappings",
            "port mappings need network_mode bridge; with host networking the task binds host ports itself",
        );
    }
    let mut host_ports = HashSet::new();
    let mut container_ports = HashSet::new();
    let requested = spec
        .resources
        .as_ref()
        .map(|r| r.ports.as_slice())
        .unwrap_or_default();
    for (i, mapping) in spec.port_mappings.iter().enumerate() {
        let field = |name: &str| format!("port_mappings[{i}].{name}");
        if mapping.container_port == 0 || mapping.container_port > 65535 {
            return err(field("container_port"), "must be between 1 and 65535");
        }
        let protocol = match mapping.protocol.as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return err(
                    field("protocol"),
                    format!("{other:?} is not a protocol; use tcp or udp"),
                )
            }
        };
        if !container_ports.insert((mapping.container_port, protocol)) {
            return err(
                field("container_port"),
                format!("{}/{protocol} is mapped twice", mapping.container_port),
            );
        }
        if mapping.host_port != 0 {
            if !free.has_port(mapping.host_port) {
                return err(
                    field("host_port"),
                    format!(
                        "{} is outside the agent's free ports ({})",
                        mapping.host_port,
                        describe_ranges(&free.ports)
                    ),
                );
            }
            if !requested.is_empty() && !in_ranges(requested, mapping.host_port) {
                return err(
                    field("host_port"),
                    format!(
                        "{} is not among the task's resources.ports ({})",
                        mapping.host_port,
                        describe_ranges(requested)
                    ),
                );
            }
            if !host_ports.insert((mapping.host_port, protocol)) {
                return err(
                    field("host_port"),
                    format!("{}/{protocol} is used twice", mapping.host_port),
                );
            }
        } else if free.ports.is_empty() {
            return err(
                field("host_port"),
                "0 asks for a port from the agent's range, but the agent has no free ports",
            );
        }
        if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<IpAddr>().is_err() {
            return err(
                field("host_ip"),
                format!("{:?} is not an IP address", mapping.host_ip),
            );
        }
    }
    Ok(())
}

fn check_path(field: &str, path: &str) -> Result<(), SpecError> {
    if !path.starts_with('/') {
        return err(field, format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|part| part == "..") {
        return err(field, format!("{path:?} must not contain '..'"));
    }
    if path.contains(['\0', ':', ',']) {
        return err(field, format!("{path:?} must not contain NUL, ':' or ','"));
    }
    Ok(())
}

fn check_volumes(spec: &TaskSpec) -> Result<(), SpecError> {
    let mut targets = HashSet::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let target_field = format!("volumes[{i}].container_path");
        check_path(&target_field, &volume.container_path)?;
        if volume.container_path.trim_end_matches('/').is_empty() {
            return err(target_field, "must not be the container's root");
        }
        if !targets.insert(volume.container_path.trim_end_matches('/')) {
            return err(
                target_field,
                format!("{:?} is mounted twice", volume.container_path),
            );
        }
        let source_field = format!("volumes[{i}].source");
        if volume.source.is_empty() {
            return err(
                source_field,
                "must not be empty: a host path or a volume name",
            );
        }
        if volume.source.starts_with('/') {
            check_path(&source_field, &volume.source)?;
        } else {
            let mut chars = volume.source.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
            let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !first_ok || !rest_ok {
                return err(
                    source_field,
                    format!(
                        "{:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
                        volume.source
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_key_values(field: &str, items: &[pb::KeyValue], env: bool) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for (i, kv) in items.iter().enumerate() {
        let key_field = format!("{field}[{i}].key");
        if kv.key.is_empty() {
            return err(key_field, "must not be empty");
        }
        if env && kv.key.contains('=') {
            return err(key_field, format!("{:?} must not contain '='", kv.key));
        }
        if kv.key.contains('\0') || kv.value.contains('\0') {
            return err(key_field, "must not contain a NUL byte");
        }
        if !env && kv.key.starts_with("corral.") && kv.key != GENERATION_LABEL {
            return err(
                key_field,
                format!("{:?}: keys starting with \"corral.\" are reserved", kv.key),
            );
        }
        if !seen.insert(kv.key.as_str()) {
            return err(key_field, format!("{:?} is given twice", kv.key));
        }
    }
    Ok(())
}

fn check_health(health: &pb::HealthCheck, network: NetworkMode) -> Result<(), SpecError> {
    match &health.check {
        None => err(
            "health_check.check",
            "must be set: a command, http or tcp check",
        ),
        Some(Check::Command(cmd)) => {
            if cmd.argv.is_empty() || cmd.argv[0].is_empty() {
                return err("health_check.command.argv", "must not be empty");
            }
            Ok(())
        }
        Some(Check::Http(http)) => {
            if http.port == 0 || http.port > 65535 {
                return err("health_check.http.port", "must be between 1 and 65535");
            }
            if !http.path.is_empty() && !http.path.starts_with('/') {
                return err(
                    "health_check.http.path",
                    format!("{:?} must start with '/'", http.path),
                );
            }
            if http
                .path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return err("health_check.http.path", "must not contain whitespace");
            }
            if network == NetworkMode::NetworkNone {
                return err(
                    "health_check.http",
                    "an http check needs a network; network_mode is none",
                );
            }
            Ok(())
        }
        Some(Check::Tcp(tcp)) => {
            if tcp.port == 0 || tcp.port > 65535 {
                return err("health_check.tcp.port", "must be between 1 and 65535");
            }
            if network == NetworkMode::NetworkNone {
                return err(
                    "health_check.tcp",
                    "a tcp check needs a network; network_mode is none",
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::pb::{HttpCheck, KeyValue, PortMapping, Resources, TcpCheck, Volume};

    fn capacity() -> AgentCapacity {
        AgentCapacity {
            cpus_milli: 2000,
            mem_mb: 1024,
            disk_mb: 10_000,
            ports: vec![PortRange {
                begin: 31000,
                end: 31999,
            }],
        }
    }

    fn good() -> TaskSpec {
        TaskSpec {
            task_id: "t-1".into(),
            framework_id: "fw".into(),
            image: "corral/busybox:test".into(),
            command: vec!["/bin/sh".into(), "-c".into(), "env".into()],
            resources: Some(Resources {
                cpus_milli: 500,
                mem_mb: 64,
                disk_mb: 10,
                ports: vec![],
            }),
            port_mappings: vec![PortMapping {
                container_port: 80,
                host_port: 31005,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
            }],
            volumes: vec![
                Volume {
                    source: "/srv/data".into(),
                    container_path: "/data".into(),
                    read_only: true,
                },
                Volume {
                    source: "cache-1".into(),
                    container_path: "/cache".into(),
                    read_only: false,
                },
            ],
            env: vec![KeyValue {
                key: "GREETING".into(),
                value: "hi".into(),
            }],
            ..Default::default()
        }
    }

    fn field_of(spec: &TaskSpec) -> String {
        match validate_spec(spec, &capacity()) {
            Ok(()) => panic!("spec was accepted: {spec:?}"),
            Err(e) => e.field,
        }
    }

    #[test]
    fn accepts_a_good_spec() {
        assert_eq!(validate_spec(&good(), &capacity()), Ok(()));
    }

    #[test]
    fn names_the_wrong_resource() {
        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.cpus_milli = 0;
        }
        let e = validate_spec(&spec, &capacity()).expect_err("zero cpus accepted");
        assert_eq!(
            e.to_string(),
            "resources.cpus_milli: must be greater than 0"
        );

        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.cpus_milli = 4000;
        }
        assert_eq!(field_of(&spec), "resources.cpus_milli");

        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.mem_mb = 4096;
        }
        let e = validate_spec(&spec, &capacity()).expect_err("too much memory accepted");
        assert_eq!(e.field, "resources.mem_mb");
        assert!(e.message.contains("more than the agent has free"), "{e}");

        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.mem_mb = 0;
        }
        assert_eq!(field_of(&spec), "resources.mem_mb");

        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.disk_mb = 20_000;
        }
        assert_eq!(field_of(&spec), "resources.disk_mb");

        let mut spec = good();
        spec.resources = None;
        assert_eq!(field_of(&spec), "resources");

        let mut spec = good();
        if let Some(r) = spec.resources.as_mut() {
            r.ports = vec![PortRange {
                begin: 30000,
                end: 30010,
            }];
        }
        assert_eq!(field_of(&spec), "resources.ports[0]");
    }

    #[test]
    fn names_the_wrong_port() {
        let mut spec = good();
        spec.port_mappings[0].host_port = 8080;
        let e = validate_spec(&spec, &capacity()).expect_err("port outside range accepted");
        assert_eq!(e.field, "port_mappings[0].host_port");
        assert!(e.message.contains("31000-31999"), "{e}");

        let mut spec = good();
        spec.port_mappings[0].container_port = 0;
        assert_eq!(field_of(&spec), "port_mappings[0].container_port");

        let mut spec = good();
        spec.port_mappings[0].protocol = "sctp".into();
        assert_eq!(field_of(&spec), "port_mappings[0].protocol");

        let mut spec = good();
        spec.port_mappings[0].host_ip = "localhost".into();
        assert_eq!(field_of(&spec), "port_mappings[0].host_ip");

        let mut spec = good();
        spec.port_mappings.push(spec.port_mappings[0].clone());
        assert_eq!(field_of(&spec), "port_mappings[1].container_port");

        let mut spec = good();
        spec.network_mode = NetworkMode::NetworkHost as i32;
        assert_eq!(field_of(&spec), "port_mappings");

        let mut spec = good();
        spec.network_mode = 42;
        assert_eq!(field_of(&spec), "network_mode");

        // Port 0 picks one from the range: fine while the agent has ports.
        let mut spec = good();
        spec.port_mappings[0].host_port = 0;
        assert_eq!(validate_spec(&spec, &capacity()), Ok(()));
        let no_ports = AgentCapacity {
            ports: vec![],
            ..capacity()
        };
        assert!(validate_spec(&spec, &no_ports).is_err());
    }

    #[test]
    fn names_the_wrong_image_and_ids() {
        let mut spec = good();
        spec.image = String::new();
        let e = validate_spec(&spec, &capacity()).expect_err("empty image accepted");
        assert_eq!(e.field, "image");
        let mut spec = good();
        spec.image = "bad image".into();
        assert_eq!(field_of(&spec), "image");
        let mut spec = good();
        spec.task_id = String::new();
        assert_eq!(field_of(&spec), "task_id");
        let mut spec = good();
        spec.task_id = "a b".into();
        assert_eq!(field_of(&spec), "task_id");
    }

    #[test]
    fn names_the_wrong_volume() {
        let mut spec = good();
        spec.volumes[0].container_path = "data".into();
        assert_eq!(field_of(&spec), "volumes[0].container_path");
        let mut spec = good();
        spec.volumes[0].source = "/srv/../etc".into();
        assert_eq!(field_of(&spec), "volumes[0].source");
        let mut spec = good();
        spec.volumes[1].source = "bad name!".into();
        assert_eq!(field_of(&spec), "volumes[1].source");
        let mut spec = good();
        spec.volumes[1].source = String::new();
        assert_eq!(field_of(&spec), "volumes[1].source");
        let mut spec = good();
        spec.volumes[1].container_path = "/data/".into();
        assert_eq!(field_of(&spec), "volumes[1].container_path");
        let mut spec = good();
        spec.volumes[0].container_path = "/".into();
        assert_eq!(field_of(&spec), "volumes[0].container_path");
    }

    #[test]
    fn names_the_wrong_env_label_and_health_check() {
        let mut spec = good();
        spec.env[0].key = "A=B".into();
        assert_eq!(field_of(&spec), "env[0].key");
        let mut spec = good();
        spec.labels = vec![KeyValue {
            key: "corral.task_id".into(),
            value: "x".into(),
        }];
        assert_eq!(field_of(&spec), "labels[0].key");

        let mut spec = good();
        spec.health_check = Some(pb::HealthCheck::default());
        assert_eq!(field_of(&spec), "health_check.check");
        let mut spec = good();
        spec.health_check = Some(pb::HealthCheck {
            check: Some(Check::Tcp(TcpCheck { port: 0 })),
            ..Default::default()
        });
        assert_eq!(field_of(&spec), "health_check.tcp.port");
        let mut spec = good();
        spec.health_check = Some(pb::HealthCheck {
            check: Some(Check::Http(HttpCheck {
                port: 80,
                path: "health".into(),
            })),
            ..Default::default()
        });
        assert_eq!(field_of(&spec), "health_check.http.path");
        let mut spec = good();
        spec.port_mappings.clear();
        spec.network_mode = NetworkMode::NetworkNone as i32;
        spec.health_check = Some(pb::HealthCheck {
            check: Some(Check::Tcp(TcpCheck { port: 80 })),
            ..Default::default()
        });
        assert_eq!(field_of(&spec), "health_check.tcp");
    }
}
