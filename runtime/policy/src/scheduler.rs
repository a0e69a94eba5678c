//! The scheduler slot: one framework's offers and tasks in, validated decisions out.
//!
//! The view and decision types are the WIT records themselves (plain Rust structs,
//! re-exported here), since a scheduler's view is small and copied as it is.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::Store;

pub use crate::bindings::allocator::corral::policy::types::{
    Check, Decision, Decline, Demand, HealthCheck, HttpCheck, KeyValue, Launch, NetworkMode,
    PortMapping, PortRange, ResourceOffer, Resources, SchedulerView, Task, TaskReason, TaskSpec,
    TaskState, TaskStatus, Volume,
};

use crate::bindings::scheduler::SchedulerPre;
use crate::error::{InvalidAnswer, PolicyError, SwapError};
use crate::host::{HostInner, PolicyHost, StoreState};
use crate::slot::{Loaded, Rollbacks, Slot, SwapRecord, World};

pub(crate) struct SchedulerWorld;

impl World for SchedulerWorld {
    const NAME: &'static str = "scheduler";
    const EXPORTS: &'static str =
        "a scheduler exports `schedule` and `status`; an allocator goes in the `allocator` slot";
    /// A scheduler's calls are small and spread over many frameworks' slots: each gets a
    /// fresh instance.
    const KEEP_WARM: bool = false;
    type Pre = SchedulerPre<StoreState>;
    type Instance = crate::bindings::scheduler::Scheduler;

    fn pre(host: &HostInner, component: &Component) -> wasmtime::Result<Self::Pre> {
        SchedulerPre::new(host.linker.instantiate_pre(component)?)
    }

    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Self::Instance> {
        pre.instantiate(store)
    }

    fn budget(host: &HostInner) -> Duration {
        host.config.scheduler_budget
    }
}

/// One framework's scheduler slot (`framework/NAME`). `Send + Sync`, like the allocator's.
pub struct SchedulerSlot {
    slot: Slot<SchedulerWorld>,
    last_view: Mutex<Option<Arc<SchedulerView>>>,
}

impl SchedulerSlot {
    /// An empty slot named `name`, for example `framework/web`.
    pub fn new(host: &PolicyHost, name: &str) -> Self {
        SchedulerSlot {
            slot: Slot::new(host, name),
            last_view: Mutex::new(None),
        }
    }

    /// Loads a new scheduler and makes it active between two calls; dry-runs `schedule`
    /// on the latest view (the one given to [`SchedulerSlot::prime`] before the first
    /// call; an empty one when neither). As [`crate::AllocatorSlot::swap`]; on a
    /// framework's view, a scheduler whose dry run answers `fail` (one that cannot run
    /// the framework's workload, say) is rejected too, rather than made active to end
    /// the framework.
    ///
    /// # Errors
    ///
    /// A [`SwapError`] when the policy is rejected; the active policy stays.
    pub fn swap(&self, bytes: &[u8], who: &str) -> Result<SwapRecord, SwapError> {
        self.load(bytes, who, true)
    }

    /// Loads again a scheduler a framework ran before (at a master's restart): as
    /// [`SchedulerSlot::swap`], but a dry run that answers `fail` does not reject it. The
    /// primed view is a starting view, not the framework's own (its tasks are not in it),
    /// so its first real call decides.
    ///
    /// # Errors
    ///
    /// As [`SchedulerSlot::swap`].
    pub fn restore(&self, bytes: &[u8], who: &str) -> Result<SwapRecord, SwapError> {
        self.load(bytes, who, false)
    }

    fn load(&self, bytes: &[u8], who: &str, refuse_fail: bool) -> Result<SwapRecord, SwapError> {
        let framework_view = self.last_view.lock().ok().and_then(|v| v.clone());
        // With no framework's view (a slot never primed nor called), an empty one: the
        // component is checked, not a workload (it has none to run).
        let of_a_framework = framework_view.is_some() && refuse_fail;
        let view = framework_view.unwrap_or_else(|| Arc::new(empty_view()));
        self.slot.swap(bytes, who, |slot, loaded| {
            match dry_run(slot, loaded, &view)?.filter(|_| of_a_framework) {
                Some(message) => Err(PolicyError::FailsFramework { message }),
                None => Ok(()),
            }
        })
    }

    /// [`SchedulerSlot::swap`] with the component read from `path`.
    ///
    /// # Errors
    ///
    /// As [`SchedulerSlot::swap`], and [`SwapError::Read`].
    pub fn swap_file(&self, path: &Path, who: &str) -> Result<SwapRecord, SwapError> {
        self.swap(&crate::slot::read_component(path)?, who)
    }

    /// Offers arrived or the view changed: the policy's decisions, validated.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`]; the decisions are then discarded and the error counted.
    pub fn schedule(&self, view: &SchedulerView) -> Result<Vec<Decision>, PolicyError> {
        self.schedule_shared(Arc::new(view.clone()))
    }

    /// [`SchedulerSlot::schedule`] on a view the slot may keep without copying it (for the
    /// next swap's dry run).
    ///
    /// # Errors
    ///
    /// As [`SchedulerSlot::schedule`].
    pub fn schedule_shared(&self, view: Arc<SchedulerView>) -> Result<Vec<Decision>, PolicyError> {
        let result = self.slot.call(
            |scheduler, store| scheduler.call_schedule(store, &view),
            |decisions| {
                check_decisions(&view, &decisions)?;
                Ok(decisions)
            },
        );
        self.remember(view);
        result.map(|(d, _)| d)
    }

    /// Tasks changed state (`view` holds the new states): the policy's decisions.
    ///
    /// # Errors
    ///
    /// As [`SchedulerSlot::schedule`].
    pub fn status(
        &self,
        view: &SchedulerView,
        updates: &[TaskStatus],
    ) -> Result<Vec<Decision>, PolicyError> {
        self.status_shared(Arc::new(view.clone()), updates)
    }

    /// [`SchedulerSlot::status`] on a view the slot may keep without copying it.
    ///
    /// # Errors
    ///
    /// As [`SchedulerSlot::schedule`].
    pub fn status_shared(
        &self,
        view: Arc<SchedulerView>,
        updates: &[TaskStatus],
    ) -> Result<Vec<Decision>, PolicyError> {
        let result = self.slot.call(
            |scheduler, store| scheduler.call_status(store, &view, updates),
            |decisions| {
                check_decisions(&view, &decisions)?;
                Ok(decisions)
            },
        );
        self.remember(view);
        result.map(|(d, _)| d)
    }

    /// Asks the active scheduler what it makes of `workload` before the workload is
    /// accepted: a dry run of `schedule` on the latest view (a framework's starting view
    /// before its first call) with `workload` in place of its own and no offers. Nothing
    /// is counted against the policy and the decisions are discarded.
    ///
    /// # Errors
    ///
    /// What the scheduler said when it answered `fail` (a workload it cannot run: a
    /// misspelt key, a bad value), or how the call failed (a trap, the time budget, an
    /// invalid answer).
    pub fn check_workload(&self, workload: &str) -> Result<(), String> {
        let Some(loaded) = self.slot.active() else {
            return Err(format!("slot {} has no scheduler", self.slot.name));
        };
        let mut view = self
            .last_view
            .lock()
            .ok()
            .and_then(|v| v.as_deref().cloned())
            .unwrap_or_else(empty_view);
        view.workload = workload.to_owned();
        view.offers.clear();
        match dry_run(&self.slot, &loaded, &view) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(message),
            Err(e) => Err(format!("the scheduler failed on it: {e}")),
        }
    }

    /// The framework's workload changed (an update was taken): the next swap dry-runs on
    /// it, and at `generation`, rather than on the workload of the latest call.
    pub fn note_workload(&self, workload: &str, generation: u32) {
        if let Ok(mut last) = self.last_view.lock() {
            if let Some(view) = last.as_deref() {
                let mut view = view.clone();
                view.workload = workload.to_owned();
                view.generation = generation;
                *last = Some(Arc::new(view));
            }
        }
    }

    /// Sets the view the next swap dry-runs on (before the first call, a framework's
    /// starting view: its workload, no offers, no tasks).
    pub fn prime(&self, view: SchedulerView) {
        if let Ok(mut last) = self.last_view.lock() {
            *last = Some(Arc::new(view));
        }
    }

    fn remember(&self, view: Arc<SchedulerView>) {
        if let Ok(mut last) = self.last_view.lock() {
            *last = Some(view);
        }
    }

    /// Every load and swap, oldest first.
    pub fn history(&self) -> Vec<SwapRecord> {
        self.slot.history()
    }

    /// The digest of the active policy.
    pub fn active(&self) -> Option<String> {
        self.slot.active().map(|l| l.digest.clone())
    }

    /// The slot's automatic rollbacks so far.
    pub fn rollbacks(&self) -> Rollbacks {
        self.slot.rollbacks()
    }
}

/// One `schedule` call on `loaded` that changes nothing and is not counted: its answer
/// validated against `view`, and the message of its `fail` decision if it has one.
fn dry_run(
    slot: &Slot<SchedulerWorld>,
    loaded: &Loaded<SchedulerWorld>,
    view: &SchedulerView,
) -> Result<Option<String>, PolicyError> {
    let (decisions, _) = slot.run(loaded, |scheduler, store| {
        scheduler.call_schedule(store, view)
    })?;
    check_decisions(view, &decisions)?;
    Ok(decisions.into_iter().find_map(|d| match d {
        Decision::Fail(message) => Some(message),
        _ => None,
    }))
}

fn empty_view() -> SchedulerView {
    SchedulerView {
        now_ms: 0,
        framework_id: String::new(),
        name: String::new(),
        role: String::new(),
        workload: String::new(),
        generation: 1,
        offers: Vec::new(),
        tasks: Vec::new(),
        draining: Vec::new(),
        suppressed: false,
    }
}

/// Whether `p` overlaps one of `taken`'s ranges (disjoint, by begin → end). Only the one
/// that begins last at or before `p.end` can: those before it end before it begins.
fn overlaps_taken(taken: &BTreeMap<u32, u32>, p: &PortRange) -> bool {
    taken
        .range(..=p.end)
        .next_back()
        .is_some_and(|(_, &end)| end >= p.begin)
}

/// Validates decisions against a view: known offers, each used once, launches no larger
/// than their offer (resources and host ports), well-formed task specs with new, unique
/// ids of this framework, kills of this framework's live tasks, not both suppress and
/// revive, and not both complete and fail.
///
/// # Errors
///
/// The first [`InvalidAnswer`] found.
pub fn check_decisions(view: &SchedulerView, decisions: &[Decision]) -> Result<(), InvalidAnswer> {
    let mut used = vec![false; view.offers.len()];
    let mut ids: HashSet<&str> = view.tasks.iter().map(|t| t.task_id.as_str()).collect();
    // The live tasks, gathered at the first kill (each kill is then one lookup, however
    // many the answer holds).
    let mut live: Option<HashSet<&str>> = None;
    let (mut suppress, mut revive) = (false, false);
    let (mut complete, mut fail) = (false, false);
    let mut use_offer = |index: usize, offer: u32| -> Result<&ResourceOffer, InvalidAnswer> {
        let o = view
            .offers
            .get(offer as usize)
            .ok_or(InvalidAnswer::UnknownOffer { index, offer })?;
        if std::mem::replace(&mut used[offer as usize], true) {
            return Err(InvalidAnswer::OfferUsedTwice { offer });
        }
        Ok(o)
    };
    for (index, d) in decisions.iter().enumerate() {
        match d {
            Decision::Suppress => suppress = true,
            Decision::Revive => revive = true,
            Decision::Complete => complete = true,
            Decision::Fail(_) => fail = true,
            Decision::Demand(_) => {}
            Decision::Kill(task_id) => {
                let live = live.get_or_insert_with(|| {
                    view.tasks
                        .iter()
                        .filter(|t| !is_terminal(t.state))
                        .map(|t| t.task_id.as_str())
                        .collect()
                });
                if !live.contains(task_id.as_str()) {
                    return Err(InvalidAnswer::UnknownTask {
                        task_id: task_id.clone(),
                    });
                }
            }
            Decision::Decline(dec) => {
                use_offer(index, dec.offer)?;
            }
            Decision::Launch(launch) => {
                let offer = use_offer(index, launch.offer)?;
                if launch.tasks.is_empty() {
                    return Err(InvalidAnswer::EmptyLaunch {
                        offer: launch.offer,
                    });
                }
                let (mut cpus, mut mem, mut disk) = (0u64, 0u64, 0u64);
                // The launch's host ports so far (a tree: a launch may name thousands).
                let mut ports: BTreeMap<u32, u32> = BTreeMap::new();
                for t in &launch.tasks {
                    let bad = |what| InvalidAnswer::BadTask {
                        task_id: t.task_id.clone(),
                        what,
                    };
                    if t.task_id.is_empty() {
                        return Err(bad("empty task id"));
                    }
                    if !valid_task_id(&t.task_id) {
                        return Err(bad(
                            "task id must be at most 200 letters, digits, '.', '_' or '-'",
                        ));
                    }
                    if t.framework_id != view.framework_id {
                        return Err(bad("framework id is not this framework's"));
                    }
                    if t.image.is_empty() {
                        return Err(bad("no image"));
                    }
                    if t.resources.cpus_milli == 0 && t.resources.mem_mb == 0 {
                        return Err(bad("neither CPUs nor memory"));
                    }
                    if !ids.insert(t.task_id.as_str()) {
                        return Err(InvalidAnswer::DuplicateTask {
                            task_id: t.task_id.clone(),
                        });
                    }
                    cpus = cpus.saturating_add(t.resources.cpus_milli);
                    mem = mem.saturating_add(t.resources.mem_mb);
                    disk = disk.saturating_add(t.resources.disk_mb);
                    for p in &t.ports {
                        let inside = p.begin <= p.end
                            && offer
                                .ports
                                .iter()
                                .any(|o| o.begin <= p.begin && p.end <= o.end);
                        if !inside || overlaps_taken(&ports, p) {
                            return Err(InvalidAnswer::PortsNotOffered {
                                task_id: t.task_id.clone(),
                                offer: launch.offer,
                            });
                        }
                        ports.insert(p.begin, p.end);
                    }
                }
                let r = &offer.resources;
                if cpus > r.cpus_milli || mem > r.mem_mb || disk > r.disk_mb {
                    return Err(InvalidAnswer::LaunchTooLarge {
                        offer: launch.offer,
                    });
                }
            }
        }
    }
    if suppress && revive {
        return Err(InvalidAnswer::SuppressAndRevive);
    }
    if complete && fail {
        return Err(InvalidAnswer::CompleteAndFail);
    }
    Ok(())
}

/// Whether a task in `state` has ended for good.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished
            | TaskState::Failed
            | TaskState::Killed
            | TaskState::Lost
            | TaskState::Error
            | TaskState::Dropped
            | TaskState::Gone
    )
}

/// Task ids name containers and files: ASCII letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit, at most 200 bytes.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
