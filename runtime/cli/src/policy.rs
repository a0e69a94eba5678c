//! `corral policy …`: list the policy slots' histories and swap policies.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use corral_wire::pb::{self, request::Kind, response::Kind as R};
use serde_json::json;

use crate::opts::ClientOpts;

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Every slot's history: digest, loaded at, state, calls, errors.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Replace the policy in SLOT (`allocator` or `framework/NAME`) with a component, while
    /// the cluster runs. The master compiles and dry-runs it first; a policy that fails is
    /// rejected and the active one stays.
    Swap {
        #[command(flatten)]
        client: ClientOpts,
        /// The slot: `allocator` or `framework/NAME`.
        slot: String,
        /// The WebAssembly component: a file, or a built-in policy's name (`drf`, `spread`,
        /// `bin-pack`, `service`, …).
        file: PathBuf,
    },
}

fn record_json(r: &pb::PolicyRecord) -> serde_json::Value {
    json!({
        "slot": r.slot, "digest": r.digest, "who": r.who, "loaded_at_ms": r.loaded_at_ms,
        "state": r.state, "calls": r.calls, "errors": r.errors,
        "last_error": (!r.last_error.is_empty()).then_some(&r.last_error),
        "swap_time_us": r.swap_time_us,
    })
}

pub fn run(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::List { client } => {
            let records =
                match crate::client::request(&client, Kind::ListPolicies(pb::ListPolicies {}))? {
                    R::Policies(p) => p.records,
                    other => bail!("unexpected answer from the master: {other:?}"),
                };
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &records.iter().map(record_json).collect::<Vec<_>>()
                    )?
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    vec![
                        r.slot.clone(),
                        r.digest.chars().take(12).collect(),
                        r.state.clone(),
                        crate::table::ago(r.loaded_at_ms),
                        r.who.clone(),
                        r.calls.to_string(),
                        r.errors.to_string(),
                        r.last_error.chars().take(100).collect(),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "SLOT",
                        "DIGEST",
                        "STATE",
                        "LOADED",
                        "BY",
                        "CALLS",
                        "ERRORS",
                        "LAST ERROR"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        PolicyCmd::Swap { client, slot, file } => {
            let (bytes, label) = crate::client::component(&file)?;
            let who = format!(
                "{}@cli",
                std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
            );
            let header = Kind::PolicySwap(pb::PolicySwap {
                slot: slot.clone(),
                who,
                size: bytes.len() as u64,
            });
            match crate::client::upload(&client, header, &bytes).map_err(|e| {
                match e.downcast_ref::<crate::client::Refusal>() {
                    Some(refusal) => anyhow!("swap rejected: {refusal}"),
                    None => anyhow!("swap failed: {e:#}"),
                }
            })? {
                R::Swapped(r) => {
                    if client.json {
                        println!("{}", record_json(&r));
                    } else {
                        println!(
                            "{} is now {label} (digest {}, swapped in {:.1} ms)",
                            r.slot,
                            &r.digest.chars().take(12).collect::<String>(),
                            r.swap_time_us as f64 / 1000.0
                        );
                    }
                    Ok(())
                }
                other => Err(anyhow!("unexpected answer from the master: {other:?}")),
            }
        }
    }
}
