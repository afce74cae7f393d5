//! Capture of every configured source into the vault, one task per source
//! (`lifeboat_source` does the work; this runs and collects it).

use std::sync::Arc;

use lifeboat_core::config::Config;
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
/// until everything committed before the call is durable in the vault.
pub async fn run(
    config: &Config,
    sources: &[String],
    until_caught_up: bool,
    stop: &Stop,
) -> Result<Run> {
    let names = source_names(config, sources)?;
    if names.is_empty() {
        return Err(Error::config(
            "no sources configured: add a [sources.NAME] section",
        ));
    }
    // Check every source before the vault is touched: bad input changes nothing.
    let sources = open_sources(config, &names, true).await?;
    // The vault must exist: `lifeboat init` is the only command that creates one. Capture
    // retries the vault's transient faults itself (docs/faults.md), so the S3 client
    // gives up on a failing request soon and lets capture report the episode.
    let vault = Vault::open(Vault::store_for_retrying_caller(&config.vault)?).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        let vault = vault.clone();
        let capture = config.capture.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let name = source.name.clone();
            let result = source
                .capture_counted(&vault, capture, until_caught_up, &stop, Arc::default())
                .await;
            if result.is_err() {
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
