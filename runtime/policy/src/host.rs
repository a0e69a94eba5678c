//! The shared engine, the epoch ticker and the per-call store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::allocator::corral::policy::log::{self, Level};
use crate::config::{ConfigError, PolicyConfig};

/// The policy host: one wasmtime engine shared by every slot, and the thread that ticks its
/// epoch. Cheap to clone; the ticker stops when the last clone is dropped.
#[derive(Clone)]
pub struct PolicyHost {
    pub(crate) inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) config: PolicyConfig,
    pub(crate) linker: Linker<StoreState>,
    /// Calls in flight, at most [`PolicyConfig::concurrent_calls`] (the size of the
    /// instance pool): a call waits here rather than fail on an exhausted pool.
    calls: Mutex<Calls>,
    call_done: Condvar,
    /// Instances kept warm between calls, at most [`PolicyConfig::warm_instances`] (the
    /// pool has that many places more than [`PolicyConfig::concurrent_calls`]).
    warm: AtomicU32,
    /// Compiled components by digest (see [`HostInner::compile`]).
    compiled: Mutex<Vec<(String, Component)>>,
    /// Dropping this ends the ticker thread.
    _ticker: mpsc::Sender<()>,
}

/// The host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("creating the wasm engine: {0}")]
    Engine(String),
    #[error("starting the epoch ticker: {0}")]
    Ticker(#[source] std::io::Error),
}

impl PolicyHost {
    /// Starts a host: validates `config`, creates the engine and its epoch ticker.
    ///
    /// # Errors
    ///
    /// [`HostError::Config`] when `config` cannot work; the others when wasmtime or the
    /// ticker thread cannot start.
    pub fn new(config: PolicyConfig) -> Result<Self, HostError> {
        config.validate()?;
        let mut wasm = Config::new();
        // Instances come from a pool: a fresh instance (fresh memory, globals and tables)
        // comes from a slot reused across instances, and the first `pool_keep_resident`
        // bytes of a slot's memory are reset in place when its instance is dropped
        // instead of being returned to the kernel, so that the next instance does not
        // page-fault its memory in again. With the PAGEMAP_SCAN ioctl (Linux 6.7+) only
        // the slot's resident pages are reset, rather than all `pool_keep_resident` bytes:
        // it halves the cost of a call on an empty view (27 µs to 13 µs on a 2-core
        // machine); older kernels reset everything, as before. Resident means touched by
        // any call since the slot was made, not only by this one (the kernel counts every
        // resident page as written): after one large call, every call on the slot resets
        // as much as that call touched, up to the size of its own memory.
        // Calls in flight, and instances kept warm between calls (see `slot::Warm`), which
        // keep their memory as it is and are not reset.
        let calls = config.concurrent_calls + config.warm_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(calls)
            .total_core_instances(calls.saturating_mul(16))
            .total_memories(calls.saturating_mul(4))
            .total_tables(calls.saturating_mul(16))
            .total_stacks(calls)
            .max_memory_size(config.memory_limit)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(config.pool_keep_resident)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::<StoreState>::new(&engine);
        log::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        // Deny-all WASI for policies that import it (Rust's wasm32-wasip2 std does).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        let tick = config.epoch_tick;
        std::thread::Builder::new()
            .name("corral-policy-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    ticking.increment_epoch();
                }
            })
            .map_err(HostError::Ticker)?;
        Ok(PolicyHost {
            inner: Arc::new(HostInner {
                engine,
                config,
                linker,
                calls: Mutex::new(Calls::default()),
                call_done: Condvar::new(),
                warm: AtomicU32::new(0),
                compiled: Mutex::new(Vec::new()),
                _ticker: stop,
            }),
        })
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &PolicyConfig {
        &self.inner.config
    }

    /// The shared wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// The most elements a policy's table may have (the pool reserves this many per table).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// How many compiled components the host keeps by digest.
const COMPILED_CACHE: usize = 8;

/// Calls in flight, and calls waiting for a place.
#[derive(Default)]
struct Calls {
    running: u32,
    waiting: u32,
}

/// A call's place in the instance pool; see [`HostInner::permit`].
pub(crate) struct CallPermit<'a>(&'a HostInner);

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        let mut calls = self.0.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.running -= 1;
        // A notification is a system call even when nobody waits: about 6% of an empty
        // call's cost.
        if calls.waiting > 0 {
            self.0.call_done.notify_one();
        }
    }
}

impl HostInner {
    /// Compiles a component, or takes it from the cache of the last
    /// [`COMPILED_CACHE`] components compiled (keyed by the sha256 `digest` of `bytes`:
    /// the same bytes compile to the same code, so a swap back to a recent version skips
    /// compilation; everything after it, instantiation and dry run, is done again).
    pub(crate) fn compile(&self, bytes: &[u8], digest: &str) -> wasmtime::Result<Component> {
        let cached = |c: &mut Vec<(String, Component)>| {
            let i = c.iter().position(|(d, _)| d == digest)?;
            let hit = c.remove(i);
            let component = hit.1.clone();
            c.push(hit);
            Some(component)
        };
        if let Some(c) = cached(&mut self.compiled.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(c);
        }
        let component = Component::new(&self.engine, bytes)?;
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if cached(&mut compiled).is_none() {
            if compiled.len() >= COMPILED_CACHE {
                compiled.remove(0);
            }
            compiled.push((digest.to_owned(), component.clone()));
        }
        Ok(component)
    }

    /// Waits for a place in the instance pool; hold it for as long as the call's store
    /// lives (declare it before the store, so that it is dropped after it).
    pub(crate) fn permit(&self) -> CallPermit<'_> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        while calls.running >= self.config.concurrent_calls {
            calls.waiting += 1;
            calls = self
                .call_done
                .wait(calls)
                .unwrap_or_else(|p| p.into_inner());
            calls.waiting -= 1;
        }
        calls.running += 1;
        CallPermit(self)
    }

    /// Takes one of the warm places, if one is left; see [`crate::slot::Warm`].
    pub(crate) fn take_warm_place(&self) -> bool {
        let most = self.config.warm_instances;
        self.warm
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a warm place (taken by [`HostInner::take_warm_place`]).
    pub(crate) fn release_warm_place(&self) {
        self.warm.fetch_sub(1, Ordering::AcqRel);
    }

    /// A fresh store for one call: memory cap, time budget, deny-all WASI, log budget.
    pub(crate) fn store(
        &self,
        budget: Duration,
        log: Arc<LogSink>,
        needs_wasi: bool,
    ) -> Store<StoreState> {
        let wasi = needs_wasi.then(|| deny_all_wasi(&self.config));
        let mut store = Store::new(
            &self.engine,
            StoreState {
                limiter: Limiter {
                    memory_limit: self.config.memory_limit,
                    hit: false,
                },
                table: ResourceTable::new(),
                wasi,
                empty_wasi: None,
                log,
                lines: 0,
                dropped: 0,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        self.begin_call(&mut store, budget);
        store
    }

    /// Makes a store ready for a call: its time budget, and its log budget and memory-cap
    /// flag, start now (a kept store's again).
    pub(crate) fn begin_call(&self, store: &mut Store<StoreState>, budget: Duration) {
        let state = store.data_mut();
        state.lines = 0;
        state.dropped = 0;
        state.limiter.hit = false;
        store.set_epoch_deadline(self.config.ticks(budget));
    }
}

/// A WASI context that gives nothing away: no arguments, environment, files, sockets or
/// standard input; output goes nowhere; clocks stand still; randomness is seeded.
fn deny_all_wasi(config: &PolicyConfig) -> WasiCtx {
    let mut seed = config.random_seed;
    let mut bytes = Vec::with_capacity(256);
    for _ in 0..32 {
        bytes.extend_from_slice(&splitmix64(&mut seed).to_le_bytes());
    }
    let mut b = WasiCtxBuilder::new();
    b.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FixedWallClock(Duration::from_millis(
            config.wasi_wall_clock_ms,
        )))
        .monotonic_clock(FixedMonotonicClock)
        .secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
        .insecure_random_seed(u128::from(config.random_seed));
    b.build()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct FixedWallClock(Duration);

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

struct FixedMonotonicClock;

impl wasmtime_wasi::HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The memory cap, remembering whether it was hit so that the error can say so.
pub(crate) struct Limiter {
    memory_limit: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached",
                self.memory_limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Where a slot's policy log lines go, with the slot's per-second budget.
pub(crate) struct LogSink {
    pub(crate) slot: String,
    pub(crate) digest: String,
    per_call: u32,
    per_second: u32,
    line_bytes: usize,
    window: Mutex<(Instant, u32)>,
}

impl LogSink {
    pub(crate) fn new(slot: &str, digest: &str, config: &PolicyConfig) -> Self {
        LogSink {
            slot: slot.to_owned(),
            digest: digest.get(..12).unwrap_or(digest).to_owned(),
            per_call: config.log_lines_per_call,
            per_second: config.log_lines_per_second,
            line_bytes: config.log_line_bytes,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Takes one line from the per-second budget.
    fn take(&self) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 < self.per_second {
            w.1 += 1;
            true
        } else {
            false
        }
    }
}

/// What one call's store holds.
pub(crate) struct StoreState {
    pub(crate) limiter: Limiter,
    table: ResourceTable,
    wasi: Option<WasiCtx>,
    /// Stands in when a policy without WASI imports is asked for a context (never, as
    /// the linker only calls WASI functions that a component imports).
    empty_wasi: Option<WasiCtx>,
    log: Arc<LogSink>,
    lines: u32,
    pub(crate) dropped: u32,
}

impl StoreState {
    /// Log lines this call wrote past its budgets.
    pub(crate) fn finish_log(&self) {
        if self.dropped > 0 {
            tracing::warn!(
                slot = %self.log.slot,
                policy = %self.log.digest,
                dropped = self.dropped,
                "policy log lines dropped"
            );
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = match &mut self.wasi {
            Some(ctx) => ctx,
            None => self.empty_wasi.get_or_insert_with(|| {
                let mut b = WasiCtxBuilder::new();
                b.allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false);
                b.build()
            }),
        };
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        if self.lines >= self.log.per_call || !self.log.take() {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.lines += 1;
        let mut cut = message.len().min(self.log.line_bytes);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let line = &message[..cut];
        let (slot, policy) = (&self.log.slot, &self.log.digest);
        // A policy's own "error" is not the host being broken: at most a warning here.
        match level {
            Level::Trace => tracing::trace!(%slot, %policy, "policy: {line}"),
            Level::Debug => tracing::debug!(%slot, %policy, "policy: {line}"),
            Level::Info => tracing::info!(%slot, %policy, "policy: {line}"),
            Level::Warn | Level::Error => tracing::warn!(%slot, %policy, "policy: {line}"),
        }
    }
}

/// Whether a component imports any WASI interface.
pub(crate) fn imports_wasi(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:"))
}

/// The version of Corral's WIT package that a component imports an interface of
/// (`corral:policy/log@0.1.0` is of `corral:policy@0.1.0`), when it is not the one this
/// host speaks ([`crate::WIT_PACKAGE`]).
pub(crate) fn other_wit_package(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .find_map(|(name, _)| {
            let (package, interface) = name.split_once('/')?;
            let imported = match interface.split_once('@') {
                Some((_, version)) => format!("{package}@{version}"),
                None => package.to_owned(),
            };
            (package == "corral:policy" && imported != crate::WIT_PACKAGE).then_some(imported)
        })
}
