//! Capture of every configured source into the vault, one task per source
//! (`lifeboat_source` does the work; this runs and collects it).

use lifeboat_core::config::Config;
use lifeboat_core::metrics::Metrics;
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::capture::CaptureStats;
use lifeboat_source::Stop;

use crate::context::{open_sources, source_names};

/// What a capture run did: each finished source's statistics (by name), and the errors of
/// those that failed. The first error is the run's; one source failing stops the others.
pub struct Run {
    pub reports: Vec<CaptureStats>,
    pub errors: Vec<Error>,
}

/// Capture `sources` (all when empty) until `stop` is set, or, with `until_caught_up`,
/// until everything committed before the call is durable in the vault. Each source's
/// capture is counted in `metrics` (`lifeboat_capture_*`, `lifeboat_vault_head_age_seconds`).
pub async fn run(
    config: &Config,
    sources: &[String],
    until_caught_up: bool,
    stop: &Stop,
    metrics: &Metrics,
) -> Result<Run> {
    let names = source_names(config, sources)?;
    if names.is_empty() {
        return Err(Error::config(
            "no sources configured: add a [sources.NAME] section",
        ));
    }
    // Check every source before the vault is touched: bad input changes nothing.
    let sources = open_sources(config, &names, true).await?;
    // The vault must exist: `lifeboat init` is the only command that creates one.
    let vault = Vault::open(Vault::store_for(&config.vault)?).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        let vault = vault.clone();
        let capture = config.capture.clone();
        let stop = stop.clone();
        let metrics = metrics.capture(&source.name);
        tasks.spawn(async move {
            let name = source.name.clone();
            // For now this process is the source's only capture while it runs.
            metrics.leader(true);
            let result = source
                .capture(&vault, capture, metrics.clone(), until_caught_up, &stop)
                .await;
            metrics.leader(false);
            if let Err(e) = &result {
                metrics.error_of(e);
                // One source failing stops the run: the operator must see it.
                stop.set();
            }
            (name, result)
        });
    }
    let mut run = Run {
        reports: Vec::new(),
        errors: Vec::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (name, result) =
            joined.map_err(|e| Error::source(format!("a capture task failed: {e}")))?;
        match result {
            Ok(stats) => run.reports.push(stats),
            Err(e) => run
                .errors
                .push(if e.message().starts_with(&format!("source {name}")) {
                    e
                } else {
                    e.context(format!("source {name}"))
                }),
        }
    }
    run.reports.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(run)
}
