//! `lifeboat restore`: bring tenants back to a point in time, in place (the default), as a
//! new tenant (`--as`) or into another database (`--into-url`); verified after writing.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_core::target::Target;
use lifeboat_core::{Error, Result};
use lifeboat_engine::context::load_config;
use lifeboat_engine::progress::{silent, thousands, Reporter};
use lifeboat_engine::restore::{execute, Outcome, Request, Summary};

use crate::output::{print_json, Terminal};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct Args {
    /// Tenant to restore (repeatable).
    #[arg(long = "tenant", value_name = "KEY")]
    tenants: Vec<String>,
    /// A file with one tenant key per line.
    #[arg(long, value_name = "FILE")]
    tenants_from: Option<PathBuf>,
    /// Restore every source as of this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Restore to just before this transaction committed on this source; the other
    /// sources go to the same instant.
    #[arg(long, value_name = "SOURCE:TXID")]
    before_tx: Option<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Restore as this new tenant key (one tenant only).
    #[arg(long = "as", value_name = "NEWKEY")]
    as_key: Option<String>,
    /// Write into this database instead (same schema; one source only).
    #[arg(long, value_name = "URL")]
    into_url: Option<String>,
    /// Show what would be written and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Tenants restored at once (PostgreSQL; SQLite has one writer).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    #[arg(long)]
    json: bool,
}

fn read_tenants(args: &Args) -> Result<Vec<String>> {
    let mut tenants = args.tenants.clone();
    if let Some(path) = &args.tenants_from {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!(
                "cannot read --tenants-from {}: {e}",
                path.display()
            ))
        })?;
        tenants.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    let mut seen = BTreeSet::new();
    tenants.retain(|t| seen.insert(t.clone()));
    if tenants.is_empty() {
        return Err(Error::usage(
            "name the tenants to restore with --tenant or --tenants-from",
        ));
    }
    Ok(tenants)
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let request = Request {
        tenants: read_tenants(&args)?,
        target: Target::parse(args.at.as_deref(), args.before_tx.as_deref())?,
        sources: args.sources.clone(),
        as_key: args.as_key.clone(),
        into_url: args.into_url.clone(),
        dry_run: args.dry_run,
        jobs: args.jobs,
    };
    let progress: Reporter = if args.json {
        silent()
    } else {
        Arc::new(Terminal::default())
    };
    let summary = execute(&config, &request, progress).await?;
    report(&summary, args.dry_run, args.json);
    Ok(if summary.failures() > 0 {
        EXIT_PROBLEM
    } else {
        0
    })
}

fn report(summary: &Summary, dry_run: bool, json: bool) {
    let (outcomes, resolved, elapsed) = (&summary.outcomes, &summary.resolved, summary.elapsed);
    let written: u64 = outcomes.iter().map(|o| o.report.rows_written()).sum();
    let removed: u64 = outcomes.iter().map(|o| o.report.rows_removed()).sum();
    let tenants: BTreeSet<&str> = outcomes.iter().map(|o| o.tenant.as_str()).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    if json {
        print_json(&serde_json::json!({
            "target": resolved.description,
            "target_time": lifeboat_core::time::format_us(resolved.time_us),
            "positions": resolved.positions,
            "dry_run": dry_run,
            "tenants": tenants.len(),
            "rows_written": written,
            "rows_removed": removed,
            "seconds": seconds,
            "rows_per_second": written as f64 / seconds,
            "failed": failed.len(),
            "restores": outcomes,
        }));
        return;
    }
    if dry_run {
        for o in outcomes {
            for (table, (write, remove)) in &o.report.tables {
                crate::say!(
                    "tenant {} {}.{table}: would write {} rows, remove {}",
                    o.tenant,
                    o.source,
                    thousands(*write),
                    thousands(*remove)
                );
            }
        }
    }
    for o in &failed {
        let why = o.error.clone().unwrap_or_else(|| o.differences.join("; "));
        crate::say!("FAILED tenant {} in {}: {why}", o.tenant, o.source);
    }
    crate::say!(
        "{} {} tenants {}: {} rows written, {} removed in {:.1} s ({} rows/s){}",
        if dry_run { "would restore" } else { "restored" },
        tenants.len(),
        resolved.description,
        thousands(written),
        thousands(removed),
        seconds,
        thousands((written as f64 / seconds) as u64),
        if dry_run {
            String::new()
        } else if failed.is_empty() {
            ", every tenant verified against the vault".to_string()
        } else {
            format!(", {} failed", failed.len())
        }
    );
}
