//! The JSON the HTTP API answers with. The shapes are documented in `docs/api.md`; agents
//! and tasks have the same fields as `corral agents --json` and `corral task list --json`.

use corral_core::agents::{AgentEntry, AgentState};
use corral_core::Resources;
use corral_wire::pb;
use serde_json::{json, Value};

/// Resources as the API shows them: CPUs as a decimal number, ports as `[begin, end]` pairs.
pub fn resources(r: &Resources) -> Value {
    json!({
        "cpus": r.cpus_milli as f64 / 1000.0,
        "mem_mb": r.mem_mb,
        "disk_mb": r.disk_mb,
        "ports": r.ports.iter().map(|(b, e)| json!([b, e])).collect::<Vec<_>>(),
    })
}

/// The name of an agent's state.
pub fn agent_state(s: AgentState) -> &'static str {
    match s {
        AgentState::Active => "active",
        AgentState::Unreachable => "unreachable",
    }
}

/// One agent.
pub fn agent(a: &AgentEntry) -> Value {
    json!({
        "id": a.id,
        "hostname": a.hostname,
        "address": a.address,
        "total": resources(&a.total),
        "used": resources(&a.used),
        "attributes": a.attributes,
        "state": agent_state(a.state),
        "last_seen_ms": a.last_seen_ms,
        "registered_at_ms": a.registered_at_ms,
    })
}

/// The name of a task's state, `TASK_UNKNOWN` when it has none.
pub fn task_state(status: Option<&pb::TaskStatus>) -> &'static str {
    status
        .and_then(|s| pb::TaskState::try_from(s.state).ok())
        .map(|s| s.as_str_name())
        .unwrap_or("TASK_UNKNOWN")
}

/// One task.
pub fn task(t: &pb::TaskInfo) -> Value {
    let spec = t.spec.clone().unwrap_or_default();
    let status = t.status.clone().unwrap_or_default();
    let res = spec.resources.clone().unwrap_or_default();
    let reason = pb::TaskReason::try_from(status.reason)
        .ok()
        .filter(|r| *r != pb::TaskReason::ReasonUnspecified)
        .map(|r| r.as_str_name())
        .unwrap_or("");
    json!({
        "id": spec.task_id,
        "name": spec.name,
        "framework_id": spec.framework_id,
        "agent_id": status.agent_id,
        "image": spec.image,
        "state": task_state(t.status.as_ref()),
        "reason": reason,
        "message": status.message,
        "exit_code": status.exit_code,
        "healthy": status.healthy,
        "cpus": res.cpus_milli as f64 / 1000.0,
        "mem_mb": res.mem_mb,
        "ports": spec.port_mappings.iter().map(|p| json!({
            "container_port": p.container_port,
            "host_port": p.host_port,
            "protocol": p.protocol,
            "host_ip": p.host_ip,
        })).collect::<Vec<_>>(),
        "updated_ms": status.timestamp_ms,
    })
}

/// The frameworks. None exist yet: frameworks arrive with the scheduler issue, and each
/// will be shown as documented in `docs/api.md`.
pub fn frameworks() -> Value {
    Value::Array(Vec::new())
}

/// The policy slots and their swap history, as documented in `docs/api.md`. Today the one
/// slot is the allocator.
pub fn policies(allocator: &[corral_policy::SwapRecord]) -> Value {
    let record = |r: &corral_policy::SwapRecord| {
        json!({
            "digest": r.digest,
            "who": r.who,
            "loaded_at_ms": r.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "state": r.state.to_string().replace(' ', "_"),
            "calls": r.calls,
            "errors": r.errors,
            "last_error": r.last_error,
            "swap_ms": r.swap_time.as_secs_f64() * 1000.0,
        })
    };
    let active = allocator
        .iter()
        .rev()
        .find(|r| r.state == corral_policy::PolicyState::Active)
        .map(|r| {
            json!({
                "digest": r.digest, "who": r.who,
                "loaded_at_ms": r.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                "calls": r.calls, "errors": r.errors,
            })
        });
    json!([{
        "slot": "allocator",
        "kind": "allocator",
        "active": active,
        "history": allocator.iter().map(record).collect::<Vec<_>>(),
    }])
}
