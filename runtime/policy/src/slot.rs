//! A slot holds one active policy, swaps it atomically between two calls, keeps its
//! history and rolls back a new policy that keeps failing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use crate::error::{PolicyError, SwapError};
use crate::host::{
    imports_wasi, other_wit_package, CallPermit, HostInner, LogSink, PolicyHost, StoreState,
};

/// What a policy version is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyState {
    /// Answers the slot's calls.
    Active,
    /// Replaced by a later swap.
    Superseded,
    /// Failed too often right after its swap; the policy before it is active again.
    RolledBack,
    /// Never became active: did not compile, did not fit the world, or failed its dry run.
    Rejected,
    /// Was active until its slot stopped: the framework it scheduled for has ended.
    Retired,
}

impl std::fmt::Display for PolicyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyState::Active => "active",
            PolicyState::Superseded => "superseded",
            PolicyState::RolledBack => "rolled back",
            PolicyState::Rejected => "rejected",
            PolicyState::Retired => "retired",
        })
    }
}

/// One entry of a slot's history: one attempt to load a policy, and how it went since.
#[derive(Clone, Debug, PartialEq)]
pub struct SwapRecord {
    /// The slot's name, for example `allocator` or `framework/web`.
    pub slot: String,
    /// sha256 of the component's bytes, in hex.
    pub digest: String,
    /// Who asked for the swap.
    pub who: String,
    /// When the swap was asked for.
    pub loaded_at: SystemTime,
    pub state: PolicyState,
    /// Calls answered validly.
    pub calls: u64,
    /// Calls whose result was discarded (traps, timeouts, memory cap, invalid answers).
    pub errors: u64,
    /// The latest error, or why the policy was rejected or rolled back.
    pub last_error: Option<String>,
    /// From the start of the swap to active (or rejected): compile, instantiate, dry run.
    pub swap_time: Duration,
}

/// The world-specific part of a slot.
pub(crate) trait World: Send + Sync + 'static {
    const NAME: &'static str;
    /// What a component of this world exports, and where one of the other world goes: said
    /// when a component lacks this world's exports.
    const EXPORTS: &'static str;
    /// Whether the slot keeps its policy's instance for the next call (see [`Warm`]).
    const KEEP_WARM: bool;
    type Pre: Send + Sync + 'static;
    /// An instance's exports, as the bindings name them.
    type Instance: Send + 'static;
    fn pre(host: &HostInner, component: &Component) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Self::Instance>;
    fn budget(host: &HostInner) -> Duration;
}

/// A policy instance with its store, kept from one call to the next.
///
/// Instantiating a policy for every call costs the instantiation, and then a reset of
/// every page of memory the call touched: on a 2-core machine, 19 µs of a 167 µs cycle of
/// 1,000 agents × 100 frameworks on an empty view alone, and 132 µs per call once large
/// cycles had made 4 MiB resident. A slot of a world that keeps its instance warm
/// ([`World::KEEP_WARM`]: the allocator, whose cycles run back to back on large views)
/// gives the next call the instance the last one answered from, when:
///
/// - the call succeeded and its answer was valid: an instance that trapped, ran out of
///   time or memory, or answered something invalid is dropped, and the next call gets a
///   fresh one;
/// - the policy imports nothing from WASI: its only inputs are then its view and its own
///   memory, where a WASI policy's clocks and randomness would move on from one call to
///   the next and its answers would depend on how many calls came before;
/// - the host has a warm place left ([`crate::PolicyConfig::warm_instances`]), each
///   warm instance holding one instance of the pool.
///
/// A policy must therefore answer from its view alone: state it keeps in memory may be
/// there at the next call, or not (after a failure or a swap, or on a host without a warm
/// place). The policies of this repository keep none.
pub(crate) struct Warm<W: World> {
    store: Store<StoreState>,
    instance: W::Instance,
    /// The host's count of warm instances, given back when this one is dropped.
    place: WarmPlace,
}

/// A call that answered: its store and instance, and the warm place they hold if they
/// had one (see [`Slot::run`]). Holds the call's place in the pool until it is dropped
/// or kept warm.
pub(crate) struct Ran<'h, W: World> {
    store: Store<StoreState>,
    instance: W::Instance,
    place: Option<WarmPlace>,
    _permit: CallPermit<'h>,
}

/// One of the host's warm places, taken for as long as a [`Warm`] instance lives.
pub(crate) struct WarmPlace(PolicyHost);

impl Drop for WarmPlace {
    fn drop(&mut self) {
        self.0.inner.release_warm_place();
    }
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
}

/// A compiled, validated policy.
pub(crate) struct Loaded<W: World> {
    pub(crate) pre: W::Pre,
    /// The instance the latest successful call answered from, for the next call.
    warm: Mutex<Option<Warm<W>>>,
    /// Whether a call that failed in a kept instance was made again in a fresh one.
    retried_fresh: AtomicBool,
    pub(crate) digest: String,
    needs_wasi: bool,
    log: Arc<LogSink>,
    entry: usize,
    stats: Arc<Stats>,
    consecutive_errors: AtomicU32,
    on_probation: AtomicBool,
}

impl<W: World> Loaded<W> {
    /// Whether the latest call's instance is kept, and no call had to be made again in a
    /// fresh instance.
    #[cfg(test)]
    pub(crate) fn kept_throughout(&self) -> bool {
        lock(&self.warm).is_some() && !self.retried_fresh.load(Ordering::Relaxed)
    }
}

struct Entry {
    digest: String,
    who: String,
    loaded_at: SystemTime,
    state: PolicyState,
    stats: Arc<Stats>,
    last_error: Option<String>,
    swap_time: Duration,
}

struct State<W: World> {
    history: Vec<Entry>,
    /// The policy a new one replaced, kept while the new one is on probation.
    previous: Option<Arc<Loaded<W>>>,
    /// How many rollbacks there were, and the digest the latest one restored.
    rollbacks: Rollbacks,
}

/// A slot's rollbacks so far: how many, and the digest the latest one made active again.
/// An embedder that keeps the active policy for restarts compares `count` with the one it
/// saw last: a rollback changes the active policy without a swap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollbacks {
    pub count: u64,
    pub restored: Option<String>,
}

pub(crate) struct Slot<W: World> {
    pub(crate) host: PolicyHost,
    pub(crate) name: String,
    active: ArcSwapOption<Loaded<W>>,
    state: Mutex<State<W>>,
    swap_lock: Mutex<()>,
}

/// A component file's bytes, or [`SwapError::Read`] naming the file.
///
/// # Errors
///
/// [`SwapError::Read`] when the file cannot be read.
pub fn read_component(path: &std::path::Path) -> Result<Vec<u8>, SwapError> {
    std::fs::read(path).map_err(|source| SwapError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// sha256 of `bytes` in hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain bookkeeping behind; go on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<W: World> Slot<W> {
    pub(crate) fn new(host: &PolicyHost, name: &str) -> Self {
        Slot {
            host: host.clone(),
            name: name.to_owned(),
            active: ArcSwapOption::empty(),
            state: Mutex::new(State {
                history: Vec::new(),
                previous: None,
                rollbacks: Rollbacks::default(),
            }),
            swap_lock: Mutex::new(()),
        }
    }

    /// The active policy, if any.
    pub(crate) fn active(&self) -> Option<Arc<Loaded<W>>> {
        self.active.load_full()
    }

    /// Compiles `bytes`, dry-runs it with `dry_run` and makes it active; see
    /// [`crate::AllocatorSlot::swap`].
    pub(crate) fn swap(
        &self,
        bytes: &[u8],
        who: &str,
        dry_run: impl FnOnce(&Self, &Loaded<W>) -> Result<(), PolicyError>,
    ) -> Result<SwapRecord, SwapError> {
        let _one_at_a_time = lock(&self.swap_lock);
        let started = Instant::now();
        let loaded_at = SystemTime::now();
        let digest = digest(bytes);
        let host = &self.host.inner;
        let entry = lock(&self.state).history.len();
        let stats = Arc::new(Stats::default());

        // A file that is not WebAssembly at all is said so plainly (the compiler's own
        // message prints the bytes it expected).
        let compiled = if bytes.starts_with(b"\0asm") {
            host.compile(bytes, &digest).map_err(|e| format!("{e:#}"))
        } else {
            Err(
                "not a WebAssembly component (it does not begin with `\\0asm`; build one \
                 with `cargo build --target wasm32-wasip2` or `wasm-tools component new`)"
                    .to_owned(),
            )
        };
        let prepared = compiled
            .map_err(|message| SwapError::Compile {
                digest: digest.clone(),
                message,
            })
            .and_then(|component| {
                let needs_wasi = imports_wasi(&host.engine, &component);
                W::pre(host, &component)
                    .map(|pre| (pre, needs_wasi))
                    .map_err(|e| {
                        let mut message = format!("{e:#}");
                        if message.contains("no export") {
                            message = format!("{message} ({})", W::EXPORTS);
                        }
                        if let Some(other) = other_wit_package(&host.engine, &component) {
                            message = format!(
                                "{message} (the component was built against another version \
                                 of the WIT package, {other}; this host speaks {}: build it \
                                 again against `wit/policy.wit`)",
                                crate::WIT_PACKAGE
                            );
                        }
                        SwapError::World {
                            digest: digest.clone(),
                            world: W::NAME,
                            message,
                        }
                    })
            })
            .and_then(|(pre, needs_wasi)| {
                let loaded = Loaded {
                    pre,
                    warm: Mutex::new(None),
                    retried_fresh: AtomicBool::new(false),
                    digest: digest.clone(),
                    needs_wasi,
                    log: Arc::new(LogSink::new(&self.name, &digest, &host.config)),
                    entry,
                    stats: stats.clone(),
                    consecutive_errors: AtomicU32::new(0),
                    on_probation: AtomicBool::new(false),
                };
                match dry_run(self, &loaded) {
                    Ok(()) => Ok(loaded),
                    Err(source) => Err(SwapError::DryRun {
                        digest: digest.clone(),
                        source,
                    }),
                }
            });

        let mut state = lock(&self.state);
        let mut record = Entry {
            digest: digest.clone(),
            who: who.to_owned(),
            loaded_at,
            state: PolicyState::Rejected,
            stats,
            last_error: None,
            swap_time: started.elapsed(),
        };
        match prepared {
            Err(e) => {
                // A rejection counts as the policy's error, whatever its cause.
                record.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(slot = %self.name, policy = %short(&digest), %who, error = %e, "policy rejected");
                record.last_error = Some(e.to_string());
                state.history.push(record);
                Err(e)
            }
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                let old = self.active.swap(Some(loaded.clone()));
                if let Some(old) = &old {
                    state.history[old.entry].state = PolicyState::Superseded;
                }
                loaded.on_probation.store(old.is_some(), Ordering::Release);
                state.previous = old;
                record.state = PolicyState::Active;
                record.swap_time = started.elapsed();
                tracing::info!(slot = %self.name, policy = %short(&digest), %who, swap_ms = record.swap_time.as_secs_f64() * 1e3, "policy active");
                state.history.push(record);
                Ok(snapshot(&self.name, &state.history[entry]))
            }
        }
    }

    /// The history of every load and swap, oldest first.
    pub(crate) fn history(&self) -> Vec<SwapRecord> {
        lock(&self.state)
            .history
            .iter()
            .map(|e| snapshot(&self.name, e))
            .collect()
    }

    /// The slot's rollbacks so far.
    pub(crate) fn rollbacks(&self) -> Rollbacks {
        lock(&self.state).rollbacks.clone()
    }

    /// Runs one call on `loaded`, in its warm instance if it has one and in a fresh one
    /// otherwise; classifies failures. Does not count, and does not keep the instance:
    /// give it to [`Slot::keep_warm`] once the answer has proved valid.
    ///
    /// A call that traps or reaches the memory cap in a warm instance is made again in a
    /// fresh one, and only the fresh one's outcome counts: a policy written for a fresh
    /// instance per call (an arena it never frees, say, that a warm instance fills up)
    /// works as it did. A timeout is not made again: its budget is spent.
    pub(crate) fn run<R>(
        &self,
        loaded: &Loaded<W>,
        call: impl Fn(&W::Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<(R, Ran<'_, W>), PolicyError> {
        let host = &self.host.inner;
        let budget = W::budget(host);
        let permit = host.permit();
        let mut place = None;
        let mut answered = None;
        if let Some(Warm {
            mut store,
            instance,
            place: kept,
        }) = lock(&loaded.warm).take()
        {
            host.begin_call(&mut store, budget);
            let result = call(&instance, &mut store);
            store.data().finish_log();
            place = Some(kept);
            match result {
                Ok(answer) => answered = Some((answer, store, instance)),
                Err(e) => match self.classify(&store, &e) {
                    timeout @ PolicyError::Timeout { .. } => return Err(timeout),
                    error => {
                        // Said once per version: a policy that leans on a fresh instance
                        // costs two calls whenever this happens, and its author should know.
                        if loaded.retried_fresh.swap(true, Ordering::Relaxed) {
                            tracing::debug!(slot = %self.name, policy = %short(&loaded.digest), %error, "policy failed in a kept instance; calling a fresh one");
                        } else {
                            tracing::warn!(slot = %self.name, policy = %short(&loaded.digest), %error, "policy failed in a kept instance; calling a fresh one (it may keep memory or state from one call to the next; said once per policy)");
                        }
                    }
                },
            }
        }
        let (answer, store, instance) = match answered {
            Some(answered) => answered,
            None => {
                let mut store = host.store(budget, loaded.log.clone(), loaded.needs_wasi);
                let result = W::instantiate(&loaded.pre, &mut store)
                    .and_then(|instance| call(&instance, &mut store).map(|r| (r, instance)));
                store.data().finish_log();
                match result {
                    Ok((answer, instance)) => (answer, store, instance),
                    Err(e) => return Err(self.classify(&store, &e)),
                }
            }
        };
        Ok((
            answer,
            Ran {
                store,
                instance,
                place,
                _permit: permit,
            },
        ))
    }

    /// What a failed call's error means: the memory cap, the time budget, or a trap.
    fn classify(&self, store: &Store<StoreState>, e: &wasmtime::Error) -> PolicyError {
        if store.data().limiter.hit {
            PolicyError::MemoryCap {
                limit: self.host.inner.config.memory_limit,
            }
        } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            PolicyError::Timeout {
                budget: W::budget(&self.host.inner),
            }
        } else {
            PolicyError::Trap {
                message: trap_message(e),
            }
        }
    }

    /// Keeps the instance of a call whose answer was valid for the next call on `loaded`,
    /// where [`Warm`] says it may be kept.
    pub(crate) fn keep_warm(&self, loaded: &Loaded<W>, ran: Ran<'_, W>) {
        if !W::KEEP_WARM || loaded.needs_wasi {
            return;
        }
        let Ran {
            store,
            instance,
            place,
            _permit,
        } = ran;
        let Some(place) = place.or_else(|| {
            self.host
                .inner
                .take_warm_place()
                .then(|| WarmPlace(self.host.clone()))
        }) else {
            return;
        };
        // Of two concurrent calls, the later to finish keeps its instance; the other is
        // dropped here, out of the lock.
        let replaced = lock(&loaded.warm).replace(Warm {
            store,
            instance,
            place,
        });
        drop(replaced);
    }

    /// Runs one call on the active policy and validates its answer with `check`; counts
    /// the outcome against the policy, and rolls a failing new policy back.
    pub(crate) fn call<R, T>(
        &self,
        call: impl Fn(&W::Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
        check: impl FnOnce(R) -> Result<T, PolicyError>,
    ) -> Result<(T, Arc<Loaded<W>>), PolicyError> {
        let loaded = self.active.load_full().ok_or_else(|| PolicyError::Empty {
            slot: self.name.clone(),
        })?;
        let checked = self
            .run(&loaded, call)
            .and_then(|(answer, ran)| check(answer).map(|checked| (checked, ran)));
        match checked {
            Ok((answer, ran)) => {
                self.keep_warm(&loaded, ran);
                self.succeeded(&loaded);
                Ok((answer, loaded))
            }
            Err(e) => {
                self.failed(&loaded, &e);
                Err(e)
            }
        }
    }

    fn succeeded(&self, loaded: &Arc<Loaded<W>>) {
        let calls = loaded.stats.calls.fetch_add(1, Ordering::Relaxed) + 1;
        loaded.consecutive_errors.store(0, Ordering::Relaxed);
        if calls >= u64::from(self.host.inner.config.probation_calls)
            && loaded
                .on_probation
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let mut state = lock(&self.state);
            if self.is_active(loaded) {
                state.previous = None;
            }
        }
    }

    fn is_active(&self, loaded: &Arc<Loaded<W>>) -> bool {
        self.active
            .load()
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, loaded))
    }

    fn failed(&self, loaded: &Arc<Loaded<W>>, error: &PolicyError) {
        loaded.stats.errors.fetch_add(1, Ordering::Relaxed);
        let in_a_row = loaded.consecutive_errors.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::warn!(slot = %self.name, policy = %short(&loaded.digest), %error, in_a_row, "policy call failed");
        let mut state = lock(&self.state);
        if let Some(e) = state.history.get_mut(loaded.entry) {
            e.last_error = Some(error.to_string());
        }
        let rollback = in_a_row >= self.host.inner.config.rollback_after
            && loaded.on_probation.load(Ordering::Acquire)
            && self.is_active(loaded);
        if !rollback {
            return;
        }
        let Some(previous) = state.previous.take() else {
            return;
        };
        loaded.on_probation.store(false, Ordering::Release);
        previous.consecutive_errors.store(0, Ordering::Relaxed);
        self.active.store(Some(previous.clone()));
        if let Some(e) = state.history.get_mut(loaded.entry) {
            e.state = PolicyState::RolledBack;
            e.last_error = Some(format!(
                "rolled back after {in_a_row} failed calls in a row: {error}"
            ));
        }
        if let Some(e) = state.history.get_mut(previous.entry) {
            e.state = PolicyState::Active;
        }
        state.rollbacks.count += 1;
        state.rollbacks.restored = Some(previous.digest.clone());
        tracing::warn!(slot = %self.name, policy = %short(&loaded.digest), restored = %short(&previous.digest), "policy rolled back");
    }
}

/// What a trap was, then where in the policy (its wasm backtrace, with demangled names):
/// the reason first, where the error's own form puts it after the backtrace.
fn trap_message(e: &wasmtime::Error) -> String {
    let reason = e.root_cause().to_string();
    match e.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(trace) => format!("{reason}; {trace}"),
        None => format!("{e:#}"),
    }
}

fn snapshot(slot: &str, e: &Entry) -> SwapRecord {
    SwapRecord {
        slot: slot.to_owned(),
        digest: e.digest.clone(),
        who: e.who.clone(),
        loaded_at: e.loaded_at,
        state: e.state,
        calls: e.stats.calls.load(Ordering::Relaxed),
        errors: e.stats.errors.load(Ordering::Relaxed),
        last_error: e.last_error.clone(),
        swap_time: e.swap_time,
    }
}

/// The first 12 hex digits of a digest, as `corral policy list` shows it.
pub(crate) fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
