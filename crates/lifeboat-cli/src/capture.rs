//! `lifeboat capture`: every configured source into the vault, one task per source, each
//! under its lease (standing by while another capture leads it).

use std::path::PathBuf;

use lifeboat_core::Result;
use lifeboat_engine::context::load_config;
use lifeboat_engine::progress::thousands;
use lifeboat_source::Stop;

use crate::output::print_json;

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
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    if let Some(address) = &args.metrics_listen {
        crate::observe::listen_for_metrics(address, &config, &args.sources).await?;
    }
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::signal::shutdown().await;
            stop.set();
        });
    }
    let run = lifeboat_engine::capture::run(
        &config,
        &config_path,
        &args.sources,
        args.until_caught_up,
        &stop,
        &crate::output::Terminal::default(),
        lifeboat_core::metrics::Metrics::global(),
    )
    .await?;
    let reports = run.reports;
    // The first failure is the run's error (printed by main); others here.
    let mut errors = run.errors.into_iter();
    let failed = errors.next();
    for e in errors {
        eprintln!("error: {e}");
    }
    if args.json {
        let value: Vec<serde_json::Value> = reports
            .iter()
            .map(|s| {
                let lag = s.lags.percentiles_ms();
                serde_json::json!({
                    "source": s.source,
                    "transactions": s.transactions,
                    "changes": s.changes,
                    "segments": s.segments,
                    "skipped_duplicates": s.skipped_duplicates,
                    "unattributed": s.unattributed,
                    "keymap_index": s.keymap_index,
                    "keymap_keys": s.keymap_keys,
                    "lag_ms_p50": lag.map(|l| l.0),
                    "lag_ms_p99": lag.map(|l| l.1),
                    "faults": s
                        .faults
                        .snapshot()
                        .into_iter()
                        .map(|(kind, count)| (kind.name().to_string(), serde_json::json!(count)))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
    } else {
        for s in &reports {
            let lag = s
                .lags
                .percentiles_ms()
                .map(|(p50, p99)| format!(", lag p50 {p50:.1} ms, p99 {p99:.1} ms"))
                .unwrap_or_default();
            let failures = s.faults.failures_total();
            let faults = if failures > 0 {
                format!(", {} transient faults retried", thousands(failures))
            } else {
                String::new()
            };
            crate::say!(
                "{}: {} transactions, {} changes in {} segments{lag}{faults}",
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
