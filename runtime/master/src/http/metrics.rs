//! The master's metrics: one process-wide set, fed with one line where a thing happens
//! (a launch, a status update, a connection) and written out on each scrape of `/metrics`.
//!
//! Counts that the registry already knows (agents and tasks by state) are not kept here:
//! the scrape asks the registry actor and writes them as gauges.

use std::sync::LazyLock;

use corral_core::agents::{AgentEntry, AgentState};
use corral_metrics::{Counter, CounterVec, Gauge, Histogram, HistogramVec, Text, LATENCY_BUCKETS};
use corral_wire::pb;

/// The master's metrics. One master runs per process, so one set per process.
pub static METRICS: LazyLock<MasterMetrics> = LazyLock::new(MasterMetrics::default);

/// Everything the master counts.
#[derive(Debug)]
pub struct MasterMetrics {
    /// Tasks sent to an agent to launch.
    pub launches: Counter,
    /// Status updates applied, by task state name (`TASK_RUNNING`, …).
    pub status_updates: CounterVec,
    /// QUIC connections accepted (handshake done).
    pub quic_connections: Counter,
    /// QUIC connections open now.
    pub quic_connections_open: Gauge,
    /// Time one allocation cycle takes, view to offers.
    pub allocation_cycle: Histogram,
    /// Offers made to frameworks.
    pub offers_made: Counter,
    /// Offers frameworks declined.
    pub offers_declined: Counter,
    /// Policy calls by slot (`allocator`, `framework/<id>`).
    pub policy_calls: CounterVec,
    /// Policy calls whose result was discarded, by slot.
    pub policy_errors: CounterVec,
    /// Policy call latency, by slot.
    pub policy_call_seconds: HistogramVec,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        Self {
            launches: Counter::default(),
            status_updates: CounterVec::new("state"),
            quic_connections: Counter::default(),
            quic_connections_open: Gauge::default(),
            allocation_cycle: Histogram::new(LATENCY_BUCKETS),
            offers_made: Counter::default(),
            offers_declined: Counter::default(),
            policy_calls: CounterVec::new("slot"),
            policy_errors: CounterVec::new("slot"),
            policy_call_seconds: HistogramVec::new("slot", LATENCY_BUCKETS),
        }
    }
}

/// Counts a QUIC connection as open until dropped.
#[must_use = "the connection counts as open until this is dropped"]
pub struct OpenConnection<'a>(&'a Gauge);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl MasterMetrics {
    /// Counts an accepted QUIC connection; it counts as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.quic_connections.inc();
        self.quic_connections_open.inc();
        OpenConnection(&self.quic_connections_open)
    }

    /// Counts a status update applied to a task.
    pub fn status_update(&self, state: i32) {
        let name = pb::TaskState::try_from(state)
            .map(|s| s.as_str_name())
            .unwrap_or("TASK_UNKNOWN");
        self.status_updates.inc(name);
    }
}

/// Every task state a task can be in, for gauges that show zeros too.
const TASK_STATES: &[pb::TaskState] = &[
    pb::TaskState::TaskStaging,
    pb::TaskState::TaskStarting,
    pb::TaskState::TaskRunning,
    pb::TaskState::TaskKilling,
    pb::TaskState::TaskFinished,
    pb::TaskState::TaskFailed,
    pb::TaskState::TaskKilled,
    pb::TaskState::TaskError,
    pb::TaskState::TaskLost,
    pb::TaskState::TaskUnreachable,
    pb::TaskState::TaskDropped,
    pb::TaskState::TaskGone,
    pb::TaskState::TaskUnknown,
];

/// The scrape: the counters above plus agents and tasks by state.
pub fn render(m: &MasterMetrics, agents: &[AgentEntry], tasks: &[pb::TaskInfo]) -> String {
    let mut t = Text::default();
    let count_agents = |s| agents.iter().filter(|a| a.state == s).count() as f64;
    t.gauge_vec(
        "corral_agents",
        "Agents the master knows, by state.",
        "state",
        &[
            ("active", count_agents(AgentState::Active)),
            ("unreachable", count_agents(AgentState::Unreachable)),
        ],
    );
    let by_state: Vec<(&str, f64)> = TASK_STATES
        .iter()
        .map(|s| {
            let n = tasks
                .iter()
                .filter(|t| t.status.as_ref().map(|st| st.state) == Some(*s as i32))
                .count();
            (s.as_str_name(), n as f64)
        })
        .collect();
    t.gauge_vec(
        "corral_tasks",
        "Tasks the master knows, by state.",
        "state",
        &by_state,
    );
    t.counter(
        "corral_task_launches_total",
        "Tasks sent to an agent to launch.",
        m.launches.get(),
    );
    t.counter_vec(
        "corral_status_updates_total",
        "Task status updates applied, by state.",
        &m.status_updates,
    );
    t.counter(
        "corral_quic_connections_total",
        "QUIC connections accepted.",
        m.quic_connections.get(),
    );
    t.gauge(
        "corral_quic_connections_open",
        "QUIC connections open now.",
        m.quic_connections_open.get() as f64,
    );
    t.histogram(
        "corral_allocation_cycle_duration_seconds",
        "Time one allocation cycle takes, from view to offers.",
        &m.allocation_cycle,
    );
    t.counter(
        "corral_offers_made_total",
        "Offers made to frameworks.",
        m.offers_made.get(),
    );
    t.counter(
        "corral_offers_declined_total",
        "Offers frameworks declined.",
        m.offers_declined.get(),
    );
    t.counter_vec(
        "corral_policy_calls_total",
        "Policy calls, by slot.",
        &m.policy_calls,
    );
    t.counter_vec(
        "corral_policy_errors_total",
        "Policy calls whose result was discarded (trap, timeout, invalid answer), by slot.",
        &m.policy_errors,
    );
    t.histogram_vec(
        "corral_policy_call_duration_seconds",
        "Policy call latency, by slot.",
        &m.policy_call_seconds,
    );
    t.finish()
}
