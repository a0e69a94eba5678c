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
        "state": if a.drain_deadline_ms.is_some() && a.state == AgentState::Active { "draining" } else { agent_state(a.state) },
        "drain_deadline_ms": a.drain_deadline_ms,
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
        "labels": spec.labels.iter().map(|l| (l.key.clone(), Value::String(l.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "cpus": res.cpus_milli as f64 / 1000.0,
        "mem_mb": res.mem_mb,
        "ports": spec.port_mappings.iter().map(|p| json!({
            "container_port": p.container_port,
            "host_port": p.host_port,
            "protocol": p.protocol,
            "host_ip": p.host_ip,
        })).collect::<Vec<_>>(),
        "launched_ms": t.launched_ms,
        "updated_ms": status.timestamp_ms,
        "kill_requested": t.kill_requested,
    })
}

/// The name of a framework's state.
pub fn framework_state(state: i32) -> &'static str {
    match pb::FrameworkState::try_from(state) {
        Ok(pb::FrameworkState::FrameworkActive) => "active",
        Ok(pb::FrameworkState::FrameworkCompleted) => "completed",
        Ok(pb::FrameworkState::FrameworkFailed) => "failed",
        Ok(pb::FrameworkState::FrameworkKilled) => "killed",
        _ => "unknown",
    }
}

/// One framework, as documented in `docs/api.md` (the CLI's `--json` prints the same).
pub fn framework(f: &pb::FrameworkInfo) -> Value {
    let tasks: serde_json::Map<String, Value> = f
        .tasks
        .iter()
        .map(|c| (c.state.clone(), json!(c.count)))
        .collect();
    let active_tasks: u32 = f
        .tasks
        .iter()
        .filter(|c| pb::TaskState::from_str_name(&c.state).is_some_and(|s| !s.is_terminal()))
        .map(|c| c.count)
        .sum();
    let allocated = f
        .allocated
        .as_ref()
        .map(Resources::from)
        .unwrap_or_default();
    let demand = f.demand.as_ref().map(Resources::from).unwrap_or_default();
    json!({
        "id": f.framework_id,
        "name": f.name,
        "role": f.role,
        "weight": f.weight,
        "state": framework_state(f.state),
        "message": f.message,
        "generation": f.generation,
        "workload": f.workload,
        "scheduler_digest": f.scheduler_digest,
        "submitted_ms": f.submitted_at_ms,
        "ended_ms": (f.ended_at_ms != 0).then_some(f.ended_at_ms),
        "suppressed": f.suppressed,
        "allocated": resources(&allocated),
        "dominant_share": f.dominant_share,
        "offers": f.offers,
        "demand": resources(&demand),
        "wanted": f.wanted,
        "tasks": tasks,
        "active_tasks": active_tasks,
        "scheduler_calls": f.scheduler_calls,
        "scheduler_errors": f.scheduler_errors,
        "last_error": f.last_error,
    })
}

/// Every framework.
pub fn frameworks(list: &[pb::FrameworkInfo]) -> Value {
    Value::Array(list.iter().map(framework).collect())
}

/// The policy slots and their swap history, as documented in `docs/api.md`: the allocator,
/// then each framework's scheduler (`framework/NAME`).
pub fn policies(records: &[corral_policy::SwapRecord]) -> Value {
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
    let mut slots: Vec<&str> = Vec::new();
    for r in records {
        if !slots.contains(&r.slot.as_str()) {
            slots.push(&r.slot);
        }
    }
    let out: Vec<Value> = slots
        .into_iter()
        .map(|slot| {
            let history: Vec<&corral_policy::SwapRecord> =
                records.iter().filter(|r| r.slot == slot).collect();
            let active = history
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
            json!({
                "slot": slot,
                "kind": if slot == "allocator" { "allocator" } else { "scheduler" },
                "active": active,
                "history": history.iter().map(|r| record(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(out)
}
