//! The `corral` binary: parses its options and hands them to `corral_cli`.

fn main() {
    std::process::exit(corral_cli::main());
}
