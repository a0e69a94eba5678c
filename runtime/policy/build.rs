//! Builds every policy in `policies/` from source and hands their paths to the crate.
//!
//! The pattern is wasmtime's `crates/test-programs`: a nested `cargo build` of the
//! `policies/` workspace for wasm32 with its own target dir (`<target>/wasm-policies`, so it
//! never waits on the outer build's lock and is shared by every profile), the C policy built
//! with clang and `wit-bindgen c` output generated here, and components made with the
//! `wit-component` crate. The paths land in `$OUT_DIR/fixtures.rs` as constants.

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
    let wit = root.join("wit");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .ok_or("OUT_DIR is not inside a target dir")?
        .join("wasm-policies");

    for dir in [&policies, &wit] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let nested = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&policies)
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
                "`cargo build {}` in policies/ failed ({status}); the targets wasm32-unknown-unknown and wasm32-wasip2 must be installed (`rustup target add wasm32-unknown-unknown wasm32-wasip2`)",
                args.join(" ")
            )
            .into());
        }
        Ok(())
    };
    nested(&[
        "--target",
        "wasm32-unknown-unknown",
        "--workspace",
        "--lib",
        "--examples",
    ])?;
    nested(&[
        "--target",
        "wasm32-wasip2",
        "-p",
        "corral-policy-bin-pack",
        "-p",
        "corral-policy-fixtures",
        "--lib",
        "--example",
        "wasi-probe",
    ])?;

    let core = target_dir.join("wasm32-unknown-unknown/release");
    let p2 = target_dir.join("wasm32-wasip2/release");
    let components = out.join("components");
    fs::create_dir_all(&components)?;

    let mut consts = String::new();
    let mut emit = |name: &str, doc: &str, path: &Path| -> Result<()> {
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
            "First-fit scheduler (Rust).",
            core.join("corral_policy_first_fit.wasm"),
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
        let path = components.join(format!("{}.wasm", name.to_lowercase()));
        fs::write(&path, component)?;
        emit(name, doc, &path)?;
    }

    // wasm32-wasip2 builds are components already (and import WASI).
    emit(
        "BIN_PACK",
        "Bin-pack scheduler (Rust, wasm32-wasip2: imports WASI).",
        &p2.join("corral_policy_bin_pack.wasm"),
    )?;
    emit(
        "WASI_PROBE",
        "Reads clock, randomness, environment and files through WASI and reports them.",
        &p2.join("examples/wasi_probe.wasm"),
    )?;

    // The C twin of the DRF allocator.
    let drf_c = build_c(&wit, &policies.join("c"), &out)?;
    let path = components.join("drf_c.wasm");
    fs::write(&path, drf_c)?;
    emit(
        "DRF_C",
        "Weighted DRF allocator (C, same decisions as `DRF`).",
        &path,
    )?;

    fs::write(out.join("fixtures.rs"), consts)?;
    Ok(())
}

/// Generates `wit-bindgen c` bindings for the allocator world, compiles `drf.c` with clang
/// and returns the component.
fn build_c(wit: &Path, src: &Path, out: &Path) -> Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_path(wit)?;
    let world = resolve.select_world(&[pkg], Some("allocator"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    let gen = out.join("c");
    fs::create_dir_all(&gen)?;
    let mut inputs = vec![src.join("drf.c")];
    for (name, contents) in files.iter() {
        let path = gen.join(name);
        fs::write(&path, contents)?;
        if name.ends_with(".c") || name.ends_with(".o") {
            inputs.push(path);
        }
    }
    let module = out.join("drf_c.core.wasm");
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
        return Err(format!("{clang} failed on policies/c/drf.c ({status})").into());
    }
    let bytes = fs::read(&module)?;
    Ok(wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()?)
}
