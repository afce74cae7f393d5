//! `lifeboat snapshot`: compaction on demand — a new base for each tenant at the latest
//! position, so restores start there.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lifeboat_core::compaction::compact;
use lifeboat_core::model::TenantKey;
use lifeboat_core::Result;

use crate::context::{check_tenants, histories, load_config, open_vault, source_names};

#[derive(clap::Args)]
pub struct Args {
    /// Only these tenants (repeatable); all when omitted.
    #[arg(long = "tenant", value_name = "KEY")]
    tenants: Vec<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path)?;
    let names = source_names(&config, &args.sources)?;
    let vault = open_vault(&config).await?;
    let histories = histories(&vault, &names).await?;
    let only: Option<BTreeSet<TenantKey>> = if args.tenants.is_empty() {
        None
    } else {
        Some(check_tenants(&vault, &histories, &args.tenants).await?)
    };
    let mut total = 0;
    for history in &histories {
        if !history.is_captured() {
            continue;
        }
        let written = compact(&vault, &history.source, only.as_ref()).await?;
        crate::say!("{}: {written} new base snapshots", history.source);
        total += written;
    }
    crate::say!("{total} base snapshots written");
    Ok(0)
}
