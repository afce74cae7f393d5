//! `lifeboat capture`: every configured source into the vault, one task per source.

use std::path::PathBuf;

use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::capture::percentiles_ms;
use lifeboat_source::Stop;

use crate::context::{load_config, open_sources, print_json, source_names, thousands};

#[derive(clap::Args)]
pub struct Args {
    /// Capture everything committed before this command started, make it durable, exit.
    #[arg(long)]
    until_caught_up: bool,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Print the run's statistics as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path)?;
    let names = source_names(&config, &args.sources)?;
    if names.is_empty() {
        return Err(Error::config(
            "no sources configured: add a [sources.NAME] section",
        ));
    }
    // Check every source before the vault is touched: bad input changes nothing.
    let sources = open_sources(&config, &names, true).await?;
    let vault = Vault::open_or_create(Vault::store_for(&config.vault)?).await?;

    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.set();
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        let vault = vault.clone();
        let capture = config.capture.clone();
        let stop = stop.clone();
        let until = args.until_caught_up;
        tasks.spawn(async move {
            let name = source.name.clone();
            let result = source.capture(&vault, capture, until, &stop).await;
            if result.is_err() {
                // One source failing stops the run: the operator must see it.
                stop.set();
            }
            (name, result)
        });
    }
    let mut failed: Option<lifeboat_core::Error> = None;
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, result) =
            joined.map_err(|e| Error::source(format!("a capture task failed: {e}")))?;
        match result {
            Ok(stats) => reports.push(stats),
            Err(e) => {
                let e = if e.message().starts_with(&format!("source {name}")) {
                    e
                } else {
                    e.context(format!("source {name}"))
                };
                // The first failure is the run's error (printed by main); others here.
                if failed.is_some() {
                    eprintln!("error: {e}");
                } else {
                    failed = Some(e);
                }
            }
        }
    }
    reports.sort_by(|a, b| a.source.cmp(&b.source));
    if args.json {
        let value: Vec<serde_json::Value> = reports
            .iter()
            .map(|s| {
                let lag = percentiles_ms(&s.lags_us);
                serde_json::json!({
                    "source": s.source,
                    "transactions": s.transactions,
                    "changes": s.changes,
                    "segments": s.segments,
                    "skipped_duplicates": s.skipped_duplicates,
                    "unattributed": s.unattributed,
                    "lag_ms_p50": lag.map(|l| l.0),
                    "lag_ms_p99": lag.map(|l| l.1),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
    } else {
        for s in &reports {
            let lag = percentiles_ms(&s.lags_us)
                .map(|(p50, p99)| format!(", lag p50 {p50:.1} ms, p99 {p99:.1} ms"))
                .unwrap_or_default();
            crate::say!(
                "{}: {} transactions, {} changes in {} segments{lag}",
                s.source,
                thousands(s.transactions),
                thousands(s.changes),
                s.segments
            );
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
