//! Scratch: per-phase timing of the wasm allocator path.
#![allow(clippy::all, unsafe_code)]
use std::time::{Duration, Instant};

use corral_core::view::{AllocatorView as View, Filter, Framework, Resources, Role};
use corral_policy::fixtures;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

wasmtime::component::bindgen!({ path: "../../wit", world: "allocator" });
use corral::policy::types as wit;

struct S;
impl corral::policy::log::Host for S {
    fn log(&mut self, _: corral::policy::log::Level, _: String) {}
}

fn view(agents: usize, frameworks: usize) -> View {
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
    View {
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

fn res(r: &Resources) -> wit::Resources {
    wit::Resources {
        cpus_milli: r.cpus_milli,
        mem_mb: r.mem_mb,
        disk_mb: r.disk_mb,
    }
}
fn to_wit(view: &View) -> wit::AllocatorView {
    wit::AllocatorView {
        now_ms: view.now_ms,
        total: res(&view.total),
        agents: view.agents.iter().map(res).collect(),
        roles: view
            .roles
            .iter()
            .map(|r| wit::Role { weight: r.weight })
            .collect(),
        frameworks: view
            .frameworks
            .iter()
            .map(|f| wit::Framework {
                role: f.role,
                allocated: res(&f.allocated),
                demand: res(&f.demand),
                wanted: f.wanted,
                suppressed: f.suppressed,
            })
            .collect(),
        filters: view
            .filters
            .iter()
            .map(|f| wit::Filter {
                framework: f.framework,
                agent: f.agent,
                until_ms: f.until_ms,
            })
            .collect(),
    }
}

fn med(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[0].as_secs_f64() * 1e3
}

fn run(label: &str, engine: &Engine, epoch: bool) {
    let mut linker = Linker::<S>::new(engine);
    corral::policy::log::add_to_linker::<S, HasSelf<S>>(&mut linker, |s| s).unwrap();
    let drf = AllocatorPre::new(
        linker
            .instantiate_pre(&Component::from_file(engine, fixtures::DRF).unwrap())
            .unwrap(),
    )
    .unwrap();
    let oc = AllocatorPre::new(
        linker
            .instantiate_pre(&Component::from_file(engine, fixtures::OVERCOMMIT).unwrap())
            .unwrap(),
    )
    .unwrap();
    for &(a, f) in &[(10_000usize, 1_000usize), (50_000, 6_000)] {
        let v = view(a, f);
        let n = 21;
        let (mut conv, mut inst, mut call, mut drop_, mut lower, mut warm, mut native) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut warm_store = Store::new(engine, S);
        warm_store.set_epoch_deadline(u64::MAX / 2);
        let warm_inst = drf.instantiate(&mut warm_store).unwrap();
        for _ in 0..n {
            let t = Instant::now();
            let w = to_wit(&v);
            conv.push(t.elapsed());
            let t = Instant::now();
            let mut store = Store::new(engine, S);
            if epoch {
                store.set_epoch_deadline(1_000_000);
            }
            let i = drf.instantiate(&mut store).unwrap();
            inst.push(t.elapsed());
            let t = Instant::now();
            let o = i.call_allocate(&mut store, &w).unwrap();
            call.push(t.elapsed());
            std::hint::black_box(&o);
            let t = Instant::now();
            drop(store);
            drop_.push(t.elapsed());
            let mut store = Store::new(engine, S);
            if epoch {
                store.set_epoch_deadline(1_000_000);
            }
            let i = oc.instantiate(&mut store).unwrap();
            let t = Instant::now();
            let o = i.call_allocate(&mut store, &w).unwrap();
            lower.push(t.elapsed());
            std::hint::black_box(&o);
            let t = Instant::now();
            let o = warm_inst.call_allocate(&mut warm_store, &w).unwrap();
            warm.push(t.elapsed());
            std::hint::black_box(&o);
            let t = Instant::now();
            let o = corral_core::drf::allocate(&v);
            native.push(t.elapsed());
            std::hint::black_box(&o);
        }
        println!("{label} {a}x{f}: to_wit {:.3} inst {:.3} call {:.3} drop {:.3} | overcommit call (lower+lift small) {:.3} | warm call {:.3} | native {:.3}",
            med(conv), med(inst), med(call), med(drop_), med(lower), med(warm), med(native));
    }
}

fn main() {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    run("epoch  ", &Engine::new(&c).unwrap(), true);
    let mut c = Config::new();
    c.wasm_component_model(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    run("noepoch", &Engine::new(&c).unwrap(), false);
    let mut c = Config::new();
    let mut p = wasmtime::PoolingAllocationConfig::default();
    p.total_component_instances(8)
        .total_core_instances(16)
        .total_memories(16)
        .total_tables(16)
        .max_memory_size(256 << 20)
        .linear_memory_keep_resident(16 << 20)
        .table_keep_resident(1 << 16);
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
    run("pool16M", &Engine::new(&c).unwrap(), true);
}
