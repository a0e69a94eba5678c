//! Allocation cycle time, wasm DRF against native DRF, and swap time (file to active).
//!
//! `cargo bench -p corral-policy` (no criterion: median of repeated runs, printed).

use std::time::{Duration, Instant};

use corral_core::view::{AllocatorView, Filter, Framework, Resources, Role};
use corral_policy::{check_offers, fixtures, AllocatorSlot, PolicyConfig, PolicyHost};

const RUNS: usize = 21;

/// How long the cycles of one size are timed, at least (and `RUNS` runs at least): a
/// small cycle (0.1 ms at 1,000 agents × 100 frameworks) is timed a thousand times or more,
/// since the speed of a shared machine changes within milliseconds: 21 runs of it, 4 ms in
/// all, gave ratios from 1.32× to 1.56× in two runs of the same build, a minute apart.
const TIME_PER_SIZE: Duration = Duration::from_millis(500);

/// A deterministic pseudo-random cluster: `agents` agents of mixed sizes, partly used;
/// `frameworks` frameworks in `frameworks / 100 + 1` roles of weights 1 to 3, each wanting
/// ten tasks of a small size; one filter per ten frameworks.
fn view(agents: usize, frameworks: usize) -> AllocatorView {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let agent_list: Vec<Resources> = (0..agents)
        .map(|_| {
            let size = 1 + next() % 4;
            let used = next() % 50;
            Resources::new(
                size * 8000 * (100 - used) / 100,
                size * 32_768 * (100 - used) / 100,
                size * 100_000,
            )
        })
        .collect();
    let total = Resources::new(
        agent_list.iter().map(|a| a.cpus_milli).sum::<u64>() * 3 / 2,
        agent_list.iter().map(|a| a.mem_mb).sum::<u64>() * 3 / 2,
        agent_list.iter().map(|a| a.disk_mb).sum::<u64>(),
    );
    let roles = frameworks / 100 + 1;
    AllocatorView {
        now_ms: 1_000_000,
        total,
        agents: agent_list,
        roles: (0..roles)
            .map(|r| Role {
                weight: 1.0 + (r % 3) as f64,
            })
            .collect(),
        frameworks: (0..frameworks)
            .map(|i| Framework {
                role: (i % roles) as u32,
                allocated: Resources::new(next() % 50_000, next() % 100_000, 0),
                demand: Resources::new(250 * (1 + next() % 8), 256 * (1 + next() % 16), 0),
                wanted: 10,
                suppressed: i % 50 == 49,
            })
            .collect(),
        filters: (0..frameworks / 10)
            .map(|i| Filter {
                framework: (i * 10) as u32,
                agent: (next() % agents as u64) as u32,
                until_ms: 2_000_000,
            })
            .collect(),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

/// The medians of `f` and `g`, timed in turns (one run of each, `runs` times), so that
/// both see the machine in the same state: on a shared machine, whose speed drifts by a
/// tenth or more over a few seconds, timing all of one and then all of the other skewed
/// their ratio.
fn time_both<T, U>(
    runs: usize,
    mut f: impl FnMut() -> T,
    mut g: impl FnMut() -> U,
) -> (Duration, Duration) {
    std::hint::black_box(f());
    std::hint::black_box(g());
    let (mut a, mut b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f());
        a.push(start.elapsed());
        let start = Instant::now();
        std::hint::black_box(g());
        b.push(start.elapsed());
    }
    (median(a), median(b))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 1 } else { RUNS };
    let host = PolicyHost::new(PolicyConfig::default())?;
    let slot = AllocatorSlot::new(&host, "allocator");
    let drf = std::fs::read(fixtures::DRF)?;
    slot.swap(&drf, "bench")?;
    // What every wasm cycle pays besides the policy's own work (the slot keeps the
    // instance from one cycle to the next), measured before any large cycle has run and
    // after.
    let empty = AllocatorView::default();
    let fixed_fresh = time(runs, || slot.allocate(&empty));

    let sizes: &[(usize, usize)] = if quick {
        &[(1_000, 100)]
    } else {
        &[(1_000, 100), (10_000, 1_000), (50_000, 6_000)]
    };
    println!(
        "allocation cycle: the median of `runs` runs (at least {RUNS}, and {} ms in all), native and wasm in turns (wasm: view copy + call + validation)",
        TIME_PER_SIZE.as_millis()
    );
    println!(
        "{:>16} {:>8} {:>6} {:>12} {:>12} {:>7} {:>14}",
        "agents×fws", "offers", "runs", "native", "wasm", "ratio", "validate only"
    );
    for &(agents, frameworks) in sizes {
        let view = view(agents, frameworks);
        let native_offers = corral_core::drf::allocate(&view);
        let wasm_offers = slot.allocate(&view)?.offers;
        if native_offers != wasm_offers {
            return Err(format!("wasm and native DRF disagree at {agents}×{frameworks}").into());
        }
        // As many runs as fit in `TIME_PER_SIZE`, judged from one run of each.
        let start = Instant::now();
        std::hint::black_box(corral_core::drf::allocate(&view));
        std::hint::black_box(slot.allocate(&view)?);
        let pair = start.elapsed().max(Duration::from_micros(1));
        let cycle_runs = if quick {
            1
        } else {
            let fit = TIME_PER_SIZE.as_nanos() / pair.as_nanos();
            usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(RUNS, 20_001)
        };
        let (native, wasm) = time_both(
            cycle_runs,
            || corral_core::drf::allocate(&view),
            || slot.allocate(&view),
        );
        let validate = time(runs, || check_offers(&view, &native_offers));
        println!(
            "{:>16} {:>8} {:>6} {:>12} {:>12} {:>6.2}× {:>14}",
            format!("{agents}×{frameworks}"),
            native_offers.len(),
            cycle_runs,
            ms(native),
            ms(wasm),
            wasm.as_secs_f64() / native.as_secs_f64(),
            ms(validate),
        );
    }

    // The same after the large cycles, and the cost of copying the agents into the guest
    // (one list of 30,000 integers, one block copy). A kept instance is not reset between
    // cycles, so the large cycles leave nothing to pay for later.
    let mut agents_only = view(10_000, 1_000);
    agents_only.frameworks.clear();
    agents_only.filters.clear();
    let fixed = time(runs, || slot.allocate(&empty));
    let agents = time(runs, || slot.allocate(&agents_only));
    println!(
        "wasm fixed cost (empty view): median {} before the large cycles, {} after; a view of 10,000 agents and no frameworks: median {}",
        ms(fixed_fresh),
        ms(fixed),
        ms(agents)
    );

    // Swap: read the file, compile, instantiate, dry-run on the latest view (10k × 1k).
    slot.allocate(&view(10_000, 1_000))?;
    let path = std::path::Path::new(fixtures::DRF);
    let swap = time(runs, || {
        slot.swap_file(path, "bench")
            .unwrap_or_else(|e| panic!("swap failed: {e}"))
    });
    println!(
        "swap, file to active, version compiled before (Rust DRF, dry run on 10k×1k): median {}",
        ms(swap)
    );
    // A version never seen before: the same component with a custom section that makes its
    // digest new, so the swap compiles it (what an operator's new policy costs).
    let mut version = 0u64;
    let cold = time(runs, || {
        version += 1;
        let mut bytes = std::fs::read(path).unwrap_or_default();
        let name = b"corral-bench";
        bytes.push(0); // custom section
        bytes.push((1 + name.len() + 8) as u8);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&version.to_le_bytes());
        slot.swap(&bytes, "bench")
            .unwrap_or_else(|e| panic!("swap of a new version failed: {e}"))
    });
    println!(
        "swap, file to active, new version (compile included, dry run on 10k×1k): median {}",
        ms(cold)
    );
    Ok(())
}
