//! Placement of tasks over a view's offers, resources and host ports.
//!
//! A [`Placer`] keeps what is left of each offer while a call places tasks one by one;
//! [`Placer::place`] picks an offer by the [`Strategy`] and reserves the task's resources
//! and host ports there, [`Placer::launch`] records the task's spec, and
//! [`Placer::decisions`] turns the result into one `launch` per offer used. Ties always go
//! to the earlier offer, so the same view places the same way.

use std::collections::BTreeMap;

use crate::{
    fits, is_live, Decision, Decline, Launch, PortRange, Resources, SchedulerView, TaskSpec,
    REFUSE_SECONDS,
};

/// How a task's offer is chosen among those with room for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The first offer in the view's order.
    FirstFit,
    /// The offer the task leaves the least room in (CPUs, then memory, then disk): fills
    /// agents before it starts on empty ones, so whole agents stay free for large tasks.
    BinPack,
    /// The offer whose agent runs the fewest live tasks of this framework (counting those
    /// placed in this call): instances end up on different agents.
    Spread,
}

/// Where [`Placer::place`] put a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The offer's index in the view.
    pub offer: u32,
    /// One host port per port the task asked for, in order.
    pub host_ports: Vec<u32>,
}

struct Room {
    free: Resources,
    /// Free host port ranges, sorted, disjoint.
    ports: Vec<PortRange>,
    agent: usize,
    tasks: Vec<TaskSpec>,
}

/// What is left of a view's offers during one call.
pub struct Placer {
    strategy: Strategy,
    rooms: Vec<Room>,
    /// Live tasks of this framework per agent (indexed like `Room::agent`).
    load: Vec<u32>,
    agents: Vec<String>,
}

impl Placer {
    /// The view's offers, untouched, and the framework's live tasks per agent.
    pub fn new(view: &SchedulerView, strategy: Strategy) -> Placer {
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut agents = Vec::new();
        let rooms = view
            .offers
            .iter()
            .map(|o| {
                let agent = *index.entry(o.agent_id.as_str()).or_insert_with(|| {
                    agents.push(o.agent_id.clone());
                    agents.len() - 1
                });
                let mut ports = o.ports.clone();
                ports.retain(|p| p.begin <= p.end);
                ports.sort_by_key(|p| p.begin);
                Room {
                    free: o.resources,
                    ports,
                    agent,
                    tasks: Vec::new(),
                }
            })
            .collect();
        let mut load = vec![0u32; agents.len()];
        if strategy == Strategy::Spread {
            for t in view.tasks.iter().filter(|t| is_live(t)) {
                if let Some(&a) = index.get(t.agent_id.as_str()) {
                    load[a] += 1;
                }
            }
        }
        Placer {
            strategy,
            rooms,
            load,
            agents,
        }
    }

    /// Whether there are offers at all.
    pub fn has_offers(&self) -> bool {
        !self.rooms.is_empty()
    }

    /// The agent of offer `offer`.
    pub fn agent(&self, offer: u32) -> &str {
        &self.agents[self.rooms[offer as usize].agent]
    }

    /// Picks an offer with room for `need` and `host_ports` (0: any free port of the
    /// offer) and reserves them there; `None` when no offer has room. Every placement
    /// must be followed by a [`Placer::launch`] of its task.
    pub fn place(&mut self, need: &Resources, host_ports: &[u32]) -> Option<Placement> {
        let mut best: Option<(usize, Vec<u32>)> = None;
        let mut best_key = (u64::MAX, u64::MAX, u64::MAX);
        for (i, room) in self.rooms.iter().enumerate() {
            if !fits(&room.free, need) {
                continue;
            }
            let key = match self.strategy {
                Strategy::FirstFit => (0, 0, 0),
                Strategy::BinPack => (
                    room.free.cpus_milli - need.cpus_milli,
                    room.free.mem_mb - need.mem_mb,
                    room.free.disk_mb - need.disk_mb,
                ),
                Strategy::Spread => (u64::from(self.load[room.agent]), 0, 0),
            };
            if best.is_some() && key >= best_key {
                continue;
            }
            let Some(ports) = take_ports(&room.ports, host_ports) else {
                continue;
            };
            best = Some((i, ports));
            best_key = key;
            if self.strategy == Strategy::FirstFit {
                break;
            }
        }
        let (i, host) = best?;
        let room = &mut self.rooms[i];
        room.free.cpus_milli -= need.cpus_milli;
        room.free.mem_mb -= need.mem_mb;
        room.free.disk_mb -= need.disk_mb;
        for p in &host {
            remove_port(&mut room.ports, *p);
        }
        self.load[room.agent] += 1;
        Some(Placement {
            offer: i as u32,
            host_ports: host,
        })
    }

    /// Records `spec` as launched where `placement` reserved room for it.
    pub fn launch(&mut self, placement: &Placement, spec: TaskSpec) {
        self.rooms[placement.offer as usize].tasks.push(spec);
    }

    /// How many tasks were launched in this call.
    pub fn launched(&self) -> usize {
        self.rooms.iter().map(|r| r.tasks.len()).sum()
    }

    /// One `launch` per offer used, in offer order; with `decline_unused`, a `decline`
    /// (for [`REFUSE_SECONDS`]) of every offer left unused, else those offers are not
    /// mentioned and go back to the cluster unfiltered.
    pub fn decisions(self, decline_unused: bool) -> Vec<Decision> {
        let mut out = Vec::new();
        for (i, room) in self.rooms.into_iter().enumerate() {
            if !room.tasks.is_empty() {
                out.push(Decision::Launch(Launch {
                    offer: i as u32,
                    tasks: room.tasks,
                }));
            } else if decline_unused {
                out.push(Decision::Decline(Decline {
                    offer: i as u32,
                    refuse_seconds: REFUSE_SECONDS,
                }));
            }
        }
        out
    }
}

/// The host ports for `want` (0: the lowest free one) out of `free`, or `None`.
fn take_ports(free: &[PortRange], want: &[u32]) -> Option<Vec<u32>> {
    if want.is_empty() {
        return Some(Vec::new());
    }
    let mut left = free.to_vec();
    let mut out = vec![0u32; want.len()];
    // Fixed ports first, so that an "any" port does not take one of them.
    for (i, &p) in want.iter().enumerate() {
        if p != 0 {
            if !left.iter().any(|r| r.begin <= p && p <= r.end) {
                return None;
            }
            remove_port(&mut left, p);
            out[i] = p;
        }
    }
    for (i, &p) in want.iter().enumerate() {
        if p == 0 {
            let first = left.first()?.begin;
            remove_port(&mut left, first);
            out[i] = first;
        }
    }
    Some(out)
}

/// Removes port `p` from sorted, disjoint ranges.
fn remove_port(ranges: &mut Vec<PortRange>, p: u32) {
    let Some(i) = ranges.iter().position(|r| r.begin <= p && p <= r.end) else {
        return;
    };
    let r = ranges[i];
    match (r.begin == p, r.end == p) {
        (true, true) => {
            ranges.remove(i);
        }
        (true, false) => ranges[i].begin = p + 1,
        (false, true) => ranges[i].end = p - 1,
        (false, false) => {
            ranges[i].end = p - 1;
            ranges.insert(
                i + 1,
                PortRange {
                    begin: p + 1,
                    end: r.end,
                },
            );
        }
    }
}
