//! Turning a task spec into the engine's container configuration.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use corral_wire::pb::{NetworkMode, PortMapping, TaskSpec};
use prost::Message;

use crate::{LABEL_AGENT_ID, LABEL_FRAMEWORK_ID, LABEL_SPEC, LABEL_TASK_ID};

/// The CFS period the CPU quota is expressed against, in microseconds (the kernel default).
const CPU_PERIOD_US: i64 = 100_000;

/// `"80/tcp"` for a mapping.
pub(super) fn port_key(mapping: &PortMapping) -> String {
    let protocol = if mapping.protocol.is_empty() {
        "tcp"
    } else {
        mapping.protocol.as_str()
    };
    format!("{}/{protocol}", mapping.container_port)
}

/// The engine's configuration for `spec` on agent `agent_id`, with the host ports already
/// chosen (`ports`: the spec's mappings with every `host_port` set).
pub(super) fn container_body(
    spec: &TaskSpec,
    agent_id: &str,
    ports: &[PortMapping],
) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    labels.insert(LABEL_TASK_ID.into(), spec.task_id.clone());
    labels.insert(LABEL_FRAMEWORK_ID.into(), spec.framework_id.clone());
    labels.insert(LABEL_AGENT_ID.into(), agent_id.to_string());
    labels.insert(LABEL_SPEC.into(), hex::encode(spec.encode_to_vec()));

    let env = spec
        .env
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();

    // A non-empty command replaces the image's entrypoint; args follow it (or, without a
    // command, are handed to the image's entrypoint).
    let (entrypoint, cmd) = if spec.command.is_empty() {
        (None, (!spec.args.is_empty()).then(|| spec.args.clone()))
    } else {
        (Some(spec.command.clone()), Some(spec.args.clone()))
    };

    let resources = spec.resources.clone().unwrap_or_default();
    let memory = i64::try_from(resources.mem_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let cpu_quota = i64::try_from(resources.cpus_milli.saturating_mul(100)).unwrap_or(i64::MAX);

    let network_mode = match NetworkMode::try_from(spec.network_mode) {
        Ok(NetworkMode::NetworkHost) => "host",
        Ok(NetworkMode::NetworkNone) => "none",
        Ok(NetworkMode::NetworkBridge) | Err(_) => "bridge",
    };

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for mapping in ports {
        let key = port_key(mapping);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: (!mapping.host_ip.is_empty()).then(|| mapping.host_ip.clone()),
                host_port: Some(mapping.host_port.to_string()),
            });
    }

    let mounts = spec
        .volumes
        .iter()
        .map(|v| Mount {
            target: Some(v.container_path.clone()),
            source: Some(v.source.clone()),
            typ: Some(if v.source.starts_with('/') {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(v.read_only),
            ..Default::default()
        })
        .collect::<Vec<_>>();

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            cpu_period: Some(CPU_PERIOD_US),
            cpu_quota: Some(cpu_quota),
            memory: Some(memory),
            // Equal to the memory limit: no swap, so going over the limit is an OOM kill.
            memory_swap: Some(memory),
            network_mode: Some(network_mode.to_string()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::pb::{KeyValue, Resources, Volume};

    #[test]
    fn maps_limits_ports_volumes_and_labels() {
        let spec = TaskSpec {
            task_id: "t1".into(),
            framework_id: "fw".into(),
            image: "img:1".into(),
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), "true".into()],
            env: vec![KeyValue {
                key: "A".into(),
                value: "b=c".into(),
            }],
            labels: vec![KeyValue {
                key: "team".into(),
                value: "x".into(),
            }],
            resources: Some(Resources {
                cpus_milli: 1500,
                mem_mb: 64,
                ..Default::default()
            }),
            volumes: vec![
                Volume {
                    source: "/srv".into(),
                    container_path: "/data".into(),
                    read_only: true,
                },
                Volume {
                    source: "named".into(),
                    container_path: "/n".into(),
                    read_only: false,
                },
            ],
            ..Default::default()
        };
        let ports = [PortMapping {
            container_port: 80,
            host_port: 31000,
            protocol: String::new(),
            host_ip: "127.0.0.1".into(),
        }];
        let body = container_body(&spec, "agent-9", &ports);
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(host.cpu_quota, Some(150_000));
        assert_eq!(host.cpu_period, Some(100_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        let binding = host
            .port_bindings
            .and_then(|b| b.get("80/tcp").cloned().flatten())
            .unwrap_or_default();
        assert_eq!(binding[0].host_port.as_deref(), Some("31000"));
        assert_eq!(binding[0].host_ip.as_deref(), Some("127.0.0.1"));
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        let labels = body.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_AGENT_ID).map(String::as_str),
            Some("agent-9")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("x"));
        let decoded = labels
            .get(LABEL_SPEC)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| TaskSpec::decode(b.as_slice()).ok());
        assert_eq!(decoded.as_ref(), Some(&spec));
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(body.env, Some(vec!["A=b=c".to_string()]));
    }
}
