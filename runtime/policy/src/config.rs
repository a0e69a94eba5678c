//! Configuration of the policy host.

use std::time::Duration;

/// How the policy host runs policies. Validate with [`PolicyConfig::validate`] (done by
/// [`crate::PolicyHost::new`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// How often the epoch ticker advances the engine's epoch: the granularity of every
    /// time budget. 1 ms keeps a budget's overshoot small and costs one thread wake-up per
    /// millisecond.
    pub epoch_tick: Duration,
    /// Time budget of one allocator call. Mesos allocates once a second; the wasm DRF
    /// needs a few milliseconds for 10,000 agents and tens for 50,000, so 250 ms leaves
    /// ample room and still leaves three quarters of a one-second cycle when a policy hangs.
    pub allocator_budget: Duration,
    /// Time budget of one scheduler call: a scheduler places a framework's few offers, a
    /// sub-millisecond job; 50 ms is a hundred times that and keeps one stuck framework
    /// from delaying the others for long.
    pub scheduler_budget: Duration,
    /// The most linear memory one policy instance may have. The wasm DRF needs about
    /// 8 MiB for 50,000 agents × 6,000 frameworks; 256 MiB leaves room for larger views
    /// and slower languages while bounding what a hostile policy can take.
    pub memory_limit: usize,
    /// The most policy calls in flight at once over all slots of a host: the size of the
    /// instance pool. More calls wait for a place. A call is milliseconds of CPU work, so a
    /// few per core suffice; 64 leaves room for many schedulers waiting on one allocator.
    pub concurrent_calls: u32,
    /// How many policy instances the host keeps from one call to the next (see
    /// `Warm` in `slot.rs`: the allocator's, when it imports nothing from WASI), each in a
    /// place of the pool of its own. A warm instance spares its call the instantiation and
    /// the reset of its memory; one per master suffices, 4 leaves room for tools and
    /// tests that run several allocator slots.
    pub warm_instances: u32,
    /// How much of a pooled instance's memory stays resident between calls (reset in
    /// place, only the pages a call wrote where the kernel can say which, rather than
    /// returned to the kernel). The wasm DRF uses about 3 MiB at 10,000 agents and 7 MiB
    /// at 50,000; 16 MiB keeps that warm at a cost of at most 16 MiB × `concurrent_calls`
    /// of resident memory.
    pub pool_keep_resident: usize,
    /// A newly swapped policy that fails this many calls in a row, while on probation, is
    /// rolled back to the one it replaced.
    pub rollback_after: u32,
    /// How many successful calls end a new policy's probation (after which the policy it
    /// replaced is released).
    pub probation_calls: u32,
    /// The most log lines one call may write into tracing; more are counted and dropped.
    pub log_lines_per_call: u32,
    /// The most log lines one slot may write per second, over all its calls.
    pub log_lines_per_second: u32,
    /// Longer log lines are cut to this many bytes.
    pub log_line_bytes: usize,
    /// The seed of the randomness a WASI policy sees (the same seed, the same answers).
    pub random_seed: u64,
    /// The wall clock a WASI policy sees, milliseconds since the Unix epoch (fixed).
    pub wasi_wall_clock_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            epoch_tick: Duration::from_millis(1),
            allocator_budget: Duration::from_millis(250),
            scheduler_budget: Duration::from_millis(50),
            memory_limit: 256 << 20,
            concurrent_calls: 64,
            warm_instances: 4,
            pool_keep_resident: 16 << 20,
            rollback_after: 3,
            probation_calls: 10,
            log_lines_per_call: 32,
            log_lines_per_second: 100,
            log_line_bytes: 1024,
            random_seed: 0x636f_7272_616c,
            wasi_wall_clock_ms: 0,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("policy epoch tick must be between 100 µs and 1 s, got {0:?}")]
    EpochTick(Duration),
    #[error("policy {which} budget must be at least one epoch tick ({tick:?}), got {budget:?}")]
    Budget {
        which: &'static str,
        budget: Duration,
        tick: Duration,
    },
    #[error("policy memory limit must be at least 1 MiB, got {0} bytes")]
    MemoryLimit(usize),
    #[error("policy concurrent calls must be between 1 and 1024, got {0}")]
    ConcurrentCalls(u32),
    #[error("policy warm instances must be at most 1024, got {0}")]
    WarmInstances(u32),
    #[error("policy rollback-after and probation-calls must be at least 1")]
    Probation,
}

impl PolicyConfig {
    /// Checks that the configuration can work.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epoch_tick < Duration::from_micros(100) || self.epoch_tick > Duration::from_secs(1)
        {
            return Err(ConfigError::EpochTick(self.epoch_tick));
        }
        for (which, budget) in [
            ("allocator", self.allocator_budget),
            ("scheduler", self.scheduler_budget),
        ] {
            if budget < self.epoch_tick {
                return Err(ConfigError::Budget {
                    which,
                    budget,
                    tick: self.epoch_tick,
                });
            }
        }
        if self.memory_limit < 1 << 20 {
            return Err(ConfigError::MemoryLimit(self.memory_limit));
        }
        if self.concurrent_calls == 0 || self.concurrent_calls > 1024 {
            return Err(ConfigError::ConcurrentCalls(self.concurrent_calls));
        }
        if self.warm_instances > 1024 {
            return Err(ConfigError::WarmInstances(self.warm_instances));
        }
        if self.rollback_after == 0 || self.probation_calls == 0 {
            return Err(ConfigError::Probation);
        }
        Ok(())
    }

    /// A budget in epoch ticks, rounded up, plus one: the tick in progress when a call
    /// starts may end at once.
    pub(crate) fn ticks(&self, budget: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (budget.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_budgets_round_up() {
        let c = PolicyConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.ticks(Duration::from_millis(250)), 251);
        assert_eq!(c.ticks(Duration::from_micros(1500)), 3);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |f: fn(&mut PolicyConfig)| {
            let mut c = PolicyConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(matches!(
            bad(|c| c.epoch_tick = Duration::ZERO),
            Err(ConfigError::EpochTick(_))
        ));
        assert!(matches!(
            bad(|c| c.scheduler_budget = Duration::from_micros(10)),
            Err(ConfigError::Budget {
                which: "scheduler",
                ..
            })
        ));
        assert!(matches!(
            bad(|c| c.memory_limit = 1000),
            Err(ConfigError::MemoryLimit(1000))
        ));
        assert_eq!(bad(|c| c.rollback_after = 0), Err(ConfigError::Probation));
    }
}
