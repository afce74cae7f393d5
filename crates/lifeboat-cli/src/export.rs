//! `lifeboat export`: one tenant's rows at a point in time, from the vault, into a zip of
//! CSV files or an SQLite database (docs/export.md).

use std::path::PathBuf;

use lifeboat_core::target::Target;
use lifeboat_core::Result;
use lifeboat_engine::context::load_config;
use lifeboat_engine::export::{export, Format, Request};
use lifeboat_engine::progress::thousands;

use crate::output::print_json;

#[derive(clap::Args)]
pub struct Args {
    /// The tenant to export.
    #[arg(long, value_name = "KEY")]
    tenant: String,
    /// Its rows as of this time (RFC 3339), in every source.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Its rows just before this transaction committed on this source; the other sources
    /// at the same instant.
    #[arg(long, value_name = "SOURCE:TXID")]
    before_tx: Option<String>,
    /// `csv` (a zip of one CSV file per table) or `sqlite` (one SQLite database).
    #[arg(long, value_name = "FORMAT", default_value = "csv")]
    format: String,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// The file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// Who exports, for the audit log (default: the login name).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let request = Request {
        tenant: args.tenant.clone(),
        target: Target::parse(args.at.as_deref(), args.before_tx.as_deref())?,
        format: args.format.parse::<Format>()?,
        sources: args.sources.clone(),
        output: args.output.clone(),
        force: args.force,
        by: args.by.clone(),
    };
    let exported = export(&config, &config_path, &request).await?;
    if args.json {
        print_json(&exported);
        return Ok(0);
    }
    let manifest = &exported.manifest;
    crate::say!(
        "exported tenant {} {} to {} ({}, {} rows, {} bytes)",
        manifest.tenant,
        manifest.target,
        exported.path.display(),
        exported.format.as_str(),
        thousands(manifest.rows()),
        thousands(exported.bytes)
    );
    for source in &manifest.sources {
        crate::say!("  {} at {}", source.source, source.position);
        for table in &source.tables {
            crate::say!(
                "    {:<30} {:>10} rows  {}",
                table.table,
                thousands(table.rows),
                table.checksum
            );
        }
    }
    Ok(0)
}
