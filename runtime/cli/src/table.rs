//! Human tables and JSON for client output.

use corral_core::{format_cpus, Resources};
use corral_wire::pb;
use serde_json::{json, Value};

fn resources(r: Option<&pb::Resources>) -> Resources {
    r.map(Resources::from).unwrap_or_default()
}

fn state_name(state: i32) -> &'static str {
    match pb::AgentState::try_from(state) {
        Ok(pb::AgentState::AgentActive) => "active",
        Ok(pb::AgentState::AgentUnreachable) => "unreachable",
        Ok(pb::AgentState::AgentDraining) => "draining",
        _ => "unknown",
    }
}

/// How long ago a time in milliseconds since the Unix epoch was, for people.
pub fn ago(ms: u64) -> String {
    let now = corral_master::now_ms();
    let secs = now.saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// Renders rows as aligned columns.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The agents as a table.
pub fn agents_table(agents: &[pb::AgentInfo]) -> String {
    if agents.is_empty() {
        return "no agents registered\n".to_owned();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let total = resources(a.total.as_ref());
            let used = resources(a.used.as_ref());
            let ports: Vec<String> = total
                .ports
                .iter()
                .map(|(b, e)| format!("{b}-{e}"))
                .collect();
            vec![
                a.agent_id.clone(),
                a.hostname.clone(),
                a.address.clone(),
                format!(
                    "{}/{}",
                    format_cpus(used.cpus_milli),
                    format_cpus(total.cpus_milli)
                ),
                format!("{}/{}", used.mem_mb, total.mem_mb),
                total.disk_mb.to_string(),
                ports.join(","),
                state_name(a.state).to_owned(),
                ago(a.last_seen_ms),
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "HOSTNAME",
            "ADDRESS",
            "CPUS",
            "MEM MB",
            "DISK MB",
            "PORTS",
            "STATE",
            "LAST SEEN",
        ],
        &rows,
    )
}

fn resources_json(r: &Resources) -> Value {
    json!({
        "cpus": r.cpus_milli as f64 / 1000.0,
        "mem_mb": r.mem_mb,
        "disk_mb": r.disk_mb,
        "ports": r.ports.iter().map(|(b, e)| json!([b, e])).collect::<Vec<_>>(),
    })
}

/// The agents as JSON.
pub fn agents_json(agents: &[pb::AgentInfo]) -> Value {
    Value::Array(
        agents
            .iter()
            .map(|a| {
                json!({
                    "id": a.agent_id,
                    "hostname": a.hostname,
                    "address": a.address,
                    "total": resources_json(&resources(a.total.as_ref())),
                    "used": resources_json(&resources(a.used.as_ref())),
                    "attributes": a.attributes.iter().map(|kv| (kv.key.clone(), Value::String(kv.value.clone()))).collect::<serde_json::Map<_, _>>(),
                    "state": state_name(a.state),
                    "last_seen_ms": a.last_seen_ms,
                    "registered_at_ms": a.registered_at_ms,
                    "drain_deadline_ms": (a.drain_deadline_ms != 0).then_some(a.drain_deadline_ms),
                })
            })
            .collect(),
    )
}
