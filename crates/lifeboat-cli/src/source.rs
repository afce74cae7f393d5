//! `lifeboat source drop`: what capture installed in a source database, listed, and with
//! `--yes` removed.

use std::path::PathBuf;

use lifeboat_core::Result;
use lifeboat_engine::context::load_config;

use crate::output::print_json;
use crate::EXIT_USAGE;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SourceCommand,
}

#[derive(clap::Subcommand)]
enum SourceCommand {
    /// Remove everything capture installed in a source's database (PostgreSQL: its slot
    /// and publication; SQLite: its triggers, changelog and tables). Without --yes, list
    /// it and change nothing (exit 2).
    Drop {
        /// The configured source.
        name: String,
        /// Remove them. The vault keeps the source's history but cannot resume capturing it.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    match args.command {
        SourceCommand::Drop { name, yes, json } => {
            let report = lifeboat_engine::source::drop(&config, &name, yes).await?;
            let listed_only = !yes && !report.installed.is_empty();
            if json {
                print_json(&report);
            } else if report.installed.is_empty() {
                crate::say!("source {name}: capture installed nothing here; nothing to remove");
            } else {
                let feeds = match (&report.installed.vault_id, &report.config_vault_id) {
                    (Some(id), Some(ours)) if id == ours => {
                        format!("feeding vault {id}, this configuration's vault")
                    }
                    (Some(id), _) => format!("feeding vault {id}, not this configuration's vault"),
                    (None, _) => "recording no vault".to_string(),
                };
                if report.removed {
                    crate::say!("source {name} ({feeds}): removed");
                } else {
                    crate::say!("source {name} ({feeds}) has, from capture:");
                }
                for object in &report.installed.objects {
                    crate::say!("  {object}");
                }
                if let Some(in_use) = &report.installed.in_use {
                    crate::say!("in use: {in_use}");
                }
                if listed_only {
                    eprintln!(
                        "nothing changed: add --yes to remove them (a vault holding this \
                         source's history cannot resume capturing it afterwards)"
                    );
                }
            }
            Ok(if listed_only { EXIT_USAGE } else { 0 })
        }
    }
}
