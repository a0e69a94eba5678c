//! The `corral` command line: every subcommand of the one binary.
//!
//! `corral master` and `corral agent` run the two processes; `corral up` runs both on this
//! machine; `corral agents` and the other client commands speak the same QUIC protocol as
//! the agents; `corral bench` prints benchmark figures.

mod bench;
mod client;
mod framework;
mod opts;
mod policy;
mod table;
mod task;

pub use opts::Cli;

/// Exit status for bad configuration or usage (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Runs the command line and returns the process exit status.
pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // `framework try` runs agents in this process: their routine lines would bury its
    // answer, so it logs warnings and errors only, unless --log or CORRAL_LOG says.
    if matches!(
        cli.command,
        opts::Command::Framework {
            cmd: framework::FrameworkCmd::Try { .. }
        }
    ) && matches.value_source("log") == Some(clap::parser::ValueSource::DefaultValue)
    {
        cli.global.log = "warn".into();
    }
    opts::init_tracing(&cli.global);
    match opts::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.downcast_ref::<opts::UsageError>()
                .map_or(1, |_| EXIT_USAGE)
        }
    }
}
