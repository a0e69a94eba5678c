// Placement shared by the Rust schedulers (included with `include!` so that each component
// keeps its own generated bindings).

use super::corral::policy::types::{
    Decision, Decline, Launch, PortRange, Resources, SchedulerView, TaskState, TaskStatus,
};

/// How long an unused offer's agent is refused.
pub const REFUSE_SECONDS: u32 = 5;

#[derive(Clone, Copy)]
#[allow(dead_code)] // each scheduler uses one
pub enum Choice {
    FirstFit,
    BestFit,
}

struct Room {
    free: Resources,
    ports: Vec<PortRange>,
    used_ports: Vec<PortRange>,
}

fn contains(a: &Resources, b: &Resources) -> bool {
    a.cpus_milli >= b.cpus_milli && a.mem_mb >= b.mem_mb && a.disk_mb >= b.disk_mb
}

fn ports_fit(room: &Room, want: &[PortRange]) -> bool {
    want.iter().enumerate().all(|(i, w)| {
        w.begin <= w.end
            && room.ports.iter().any(|p| p.begin <= w.begin && w.end <= p.end)
            && !room.used_ports.iter().any(|u| u.begin <= w.end && w.begin <= u.end)
            && !want[..i].iter().any(|u| u.begin <= w.end && w.begin <= u.end)
    })
}

fn fits(room: &Room, res: &Resources, ports: &[PortRange]) -> bool {
    contains(&room.free, res) && ports_fit(room, ports)
}

/// Place the view's pending tasks on its offers.
pub fn schedule(view: SchedulerView, choice: Choice) -> Vec<Decision> {
    let mut rooms: Vec<Room> = view
        .offers
        .iter()
        .map(|o| Room { free: o.resources, ports: o.ports.clone(), used_ports: Vec::new() })
        .collect();
    let mut placed: Vec<Vec<usize>> = vec![Vec::new(); rooms.len()];
    let pending_count = view.pending.len();
    let mut launched = 0usize;
    for (t, task) in view.pending.iter().enumerate() {
        let candidates = rooms
            .iter()
            .enumerate()
            .filter(|(_, room)| fits(room, &task.resources, &task.ports));
        let pick = match choice {
            Choice::FirstFit => candidates.map(|(i, _)| i).next(),
            Choice::BestFit => candidates
                .min_by_key(|(i, room)| {
                    (
                        room.free.cpus_milli - task.resources.cpus_milli,
                        room.free.mem_mb - task.resources.mem_mb,
                        room.free.disk_mb - task.resources.disk_mb,
                        *i,
                    )
                })
                .map(|(i, _)| i),
        };
        if let Some(i) = pick {
            let room = &mut rooms[i];
            room.free.cpus_milli -= task.resources.cpus_milli;
            room.free.mem_mb -= task.resources.mem_mb;
            room.free.disk_mb -= task.resources.disk_mb;
            room.used_ports.extend(task.ports.iter().copied());
            placed[i].push(t);
            launched += 1;
        }
    }
    let mut pending: Vec<Option<_>> = view.pending.into_iter().map(Some).collect();
    let mut decisions = Vec::new();
    for (offer, tasks) in placed.iter().enumerate() {
        if tasks.is_empty() {
            decisions.push(Decision::Decline(Decline {
                offer: offer as u32,
                refuse_seconds: REFUSE_SECONDS,
            }));
        } else {
            decisions.push(Decision::Launch(Launch {
                offer: offer as u32,
                tasks: tasks.iter().filter_map(|&t| pending[t].take()).collect(),
            }));
        }
    }
    if launched == pending_count {
        decisions.push(Decision::Suppress);
    }
    decisions
}

/// A task that failed or was lost wants resources again.
pub fn on_status(update: &TaskStatus) -> Vec<Decision> {
    match update.state {
        TaskState::Failed | TaskState::Lost | TaskState::Error | TaskState::Dropped => {
            vec![Decision::Revive]
        }
        _ => Vec::new(),
    }
}
