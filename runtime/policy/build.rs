//! Builds every policy in `policies/` and every example scheduler in `examples/` from
//! source and hands their paths to the crate.
//!
//! The pattern is wasmtime's `crates/test-programs`: nested `cargo build`s of the
//! `policies/` and `examples/` workspaces for wasm32 with their own target dir
//! (`<target>/wasm-policies`, so they never wait on the outer build's lock and are shared by
//! every profile), the C policies built with clang and `wit-bindgen c` output generated
//! here, and components made with the `wit-component` crate. Every component is copied to
//! `$OUT_DIR/components/` and its path lands in `$OUT_DIR/fixtures.rs` as a constant.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: building the wasm policies failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .ok_or("no workspace root above runtime/policy")?
        .to_path_buf();
    let policies = root.join("policies");
    let examples = root.join("examples");
    let wit = root.join("wit");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .ok_or("OUT_DIR is not inside a target dir")?
        .join("wasm-policies");

    for dir in [&policies, &examples, &wit] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let nested = |dir: &Path, args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(dir)
            .args(["build", "--release", "--target-dir"])
            .arg(&target_dir)
            .args(args);
        // The outer build's flags and wrappers are for the host, not for wasm32.
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_BUILD_RUSTFLAGS",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err(format!(
                "`cargo build {}` in {} failed ({status}); the targets wasm32-unknown-unknown and wasm32-wasip2 must be installed (`rustup target add wasm32-unknown-unknown wasm32-wasip2`)",
                args.join(" "),
                dir.display()
            )
            .into());
        }
        Ok(())
    };
    nested(
        &policies,
        &[
            "--target",
            "wasm32-unknown-unknown",
            "--workspace",
            "--lib",
            "--examples",
        ],
    )?;
    nested(
        &examples,
        &["--target", "wasm32-unknown-unknown", "--workspace", "--lib"],
    )?;
    nested(
        &policies,
        &[
            "--target",
            "wasm32-wasip2",
            "-p",
            "corral-policy-bin-pack",
            "-p",
            "corral-policy-fixtures",
            "--lib",
            "--example",
            "wasi-probe",
        ],
    )?;

    let core = target_dir.join("wasm32-unknown-unknown/release");
    let p2 = target_dir.join("wasm32-wasip2/release");
    let components = out.join("components");
    fs::create_dir_all(&components)?;

    let mut consts = String::new();
    // Writes a component to `components/<name>.wasm` and its path as constant `NAME`.
    let mut emit = |name: &str, doc: &str, component: &[u8]| -> Result<()> {
        let path = components.join(format!("{}.wasm", name.to_lowercase()));
        // Unchanged bytes keep their mtime, so `include_bytes!` users do not rebuild.
        if fs::read(&path).ok().as_deref() != Some(component) {
            fs::write(&path, component)?;
        }
        writeln!(consts, "/// {doc}")?;
        writeln!(
            consts,
            "pub const {name}: &str = {:?};",
            path.display().to_string()
        )?;
        Ok(())
    };

    // Rust policies for wasm32-unknown-unknown: core modules, made into components here.
    let rust: &[(&str, &str, PathBuf)] = &[
        (
            "DRF",
            "Weighted DRF allocator (Rust).",
            core.join("corral_policy_drf.wasm"),
        ),
        (
            "FIRST_FIT",
            "First-fit scheduler (Rust; run-to-completion `[[task]]` workload).",
            core.join("corral_policy_first_fit.wasm"),
        ),
        (
            "SPREAD",
            "Spread scheduler (Rust; run-to-completion `[[task]]` workload).",
            core.join("corral_policy_spread.wasm"),
        ),
        (
            "BATCH",
            "The `batch` example: commands with retries and a failure tolerance (Rust).",
            core.join("corral_example_batch.wasm"),
        ),
        (
            "SERVICE",
            "The `service` example: N instances spread across agents, rolling updates (Rust).",
            core.join("corral_example_service.wasm"),
        ),
        (
            "SERVICE_BIN_PACK",
            "The `service` example built with bin-pack placement (Rust).",
            core.join("corral_example_service_bin_pack.wasm"),
        ),
        (
            "BAD_SCHEDULER",
            "Hostile scheduler: invalid decisions (mode chosen by its workload).",
            core.join("examples/bad_scheduler.wasm"),
        ),
        (
            "ENDLESS_LOOP",
            "Hostile: never returns.",
            core.join("examples/endless_loop.wasm"),
        ),
        (
            "MEMORY_BOMB",
            "Hostile: allocates until stopped.",
            core.join("examples/memory_bomb.wasm"),
        ),
        (
            "TRAP",
            "Hostile: logs, then traps.",
            core.join("examples/trap.wasm"),
        ),
        (
            "OVERCOMMIT",
            "Hostile: offers resources that are not free.",
            core.join("examples/overcommit.wasm"),
        ),
        (
            "ENORMOUS",
            "Hostile: 200,000 offers and a flood of log lines.",
            core.join("examples/enormous.wasm"),
        ),
        (
            "INSTANCE_REUSE",
            "Counts its calls: its answers tell a kept instance from a fresh one (see its source).",
            core.join("examples/instance_reuse.wasm"),
        ),
        (
            "OLD_WIT",
            "Hostile: built against an earlier version of the WIT package.",
            core.join("examples/old_wit.wasm"),
        ),
        (
            "BAD_IMPORT",
            "Hostile: imports a function the host does not provide.",
            core.join("examples/bad_import.wasm"),
        ),
    ];
    for (name, doc, module) in rust {
        let bytes = fs::read(module).map_err(|e| format!("{}: {e}", module.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)?
            .validate(true)
            .encode()?;
        emit(name, doc, &component)?;
    }

    // wasm32-wasip2 builds are components already (and import WASI).
    let wasip2: &[(&str, &str, PathBuf)] = &[
        (
            "BIN_PACK",
            "Bin-pack scheduler (Rust, wasm32-wasip2: imports WASI; run-to-completion `[[task]]` workload).",
            p2.join("corral_policy_bin_pack.wasm"),
        ),
        (
            "WASI_PROBE",
            "Reads clock, randomness, environment and files through WASI and reports them.",
            p2.join("examples/wasi_probe.wasm"),
        ),
    ];
    for (name, doc, path) in wasip2 {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        emit(name, doc, &bytes)?;
    }

    // The WIT package, parsed once: for the C bindings, and for the name the host speaks.
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_path(&wit)?;

    // C policies: the twin of the DRF allocator and the `hello` example scheduler.
    let drf_c = build_c(
        &resolve,
        package,
        "allocator",
        &policies.join("c/drf.c"),
        &out,
    )?;
    emit(
        "DRF_C",
        "Weighted DRF allocator (C, same decisions as `DRF`).",
        &drf_c,
    )?;
    let hello = build_c(
        &resolve,
        package,
        "scheduler",
        &examples.join("hello/hello.c"),
        &out,
    )?;
    emit(
        "HELLO",
        "The `hello` example: COUNT containers that echo a message, then complete (C).",
        &hello,
    )?;

    fs::write(out.join("fixtures.rs"), consts)?;

    // The package the host speaks, as `wit/policy.wit` names it.
    fs::write(
        out.join("wit_package.rs"),
        format!(
            "/// The WIT package this host speaks (`package` in `wit/policy.wit`). A component\n\
             /// built against another version does not fit its worlds, and is told so.\n\
             pub const WIT_PACKAGE: &str = {:?};\n",
            resolve.packages[package].name.to_string()
        ),
    )?;
    Ok(())
}

/// Generates `wit-bindgen c` bindings for `world`, compiles `source` with them using clang
/// and returns the component.
fn build_c(
    resolve: &wit_parser::Resolve,
    package: wit_parser::PackageId,
    world: &str,
    source: &Path,
    out: &Path,
) -> Result<Vec<u8>> {
    // The generator may change the resolve it is given: each world gets a copy.
    let mut resolve = resolve.clone();
    let world_id = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)?;
    let gen = out.join(format!("c-{world}"));
    fs::create_dir_all(&gen)?;
    let mut inputs = vec![source.to_path_buf()];
    for (name, contents) in files.iter() {
        let path = gen.join(name);
        fs::write(&path, contents)?;
        if name.ends_with(".c") || name.ends_with(".o") {
            inputs.push(path);
        }
    }
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("C source without a name")?;
    let module = out.join(format!("{stem}.core.wasm"));
    let clang = env::var("CORRAL_CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "--target=wasm32-wasi",
            "-O2",
            "-mexec-model=reactor",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
        ])
        .arg("-I")
        .arg(&gen)
        .args(&inputs)
        .arg("-o")
        .arg(&module)
        .status()
        .map_err(|e| {
            format!(
                "running {clang}: {e}; install Debian's clang lld wasi-libc libclang-rt-dev-wasm32"
            )
        })?;
    if !status.success() {
        return Err(format!("{clang} failed on {} ({status})", source.display()).into());
    }
    let bytes = fs::read(&module)?;
    Ok(wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()?)
}
