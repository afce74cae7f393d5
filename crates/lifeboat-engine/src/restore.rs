//! The restore engine: bring tenants back to a point in time, in place (the default), as a
//! new tenant (`--as`) or into another database (`--into-url`); verified after writing.
//!
//! `execute` checks the whole request first (tenants known, target inside every window,
//! schemas, `--as` tried and rolled back) and writes nothing unless every check passed.
//! Then, per source: tenants are opened from the vault 16 at a time and handed to a pool of
//! writers (`jobs` connections; one for SQLite), each tenant in one transaction, then read
//! back and compared with the rows written (`compare`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use lifeboat_core::config::Config;
use lifeboat_core::model::{Dialect, TenantKey};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::{self, Target};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::live::{LiveSource, RestoreCatalog};
use lifeboat_source::restore::{TenantRestore, WriteMode, WriteReport};

use crate::compare::{live_digests, TableCheck};
use crate::context::{check_tenants, histories_for, open_vault, source_names};
use crate::progress::{Event, Reporter};

/// One tenant in one source, done.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub tenant: String,
    pub written_as: String,
    pub source: String,
    pub report: WriteReport,
    /// `None` when nothing was read back (a dry run, or the write failed).
    pub verified: Option<bool>,
    pub differences: Vec<String>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.verified == Some(false)
    }
}

async fn open_target(config: &Config, name: &str, into_url: Option<&str>) -> Result<LiveSource> {
    let mut source = config.source(name)?.clone();
    if let Some(url) = into_url {
        let same_kind = matches!(
            (
                source.kind()?,
                lifeboat_core::config::SourceConfig {
                    url: url.to_string(),
                    ..source.clone()
                }
                .kind()?
            ),
            (
                lifeboat_core::config::SourceKind::Postgres { .. },
                lifeboat_core::config::SourceKind::Postgres { .. }
            ) | (
                lifeboat_core::config::SourceKind::Sqlite { .. },
                lifeboat_core::config::SourceKind::Sqlite { .. }
            )
        );
        if !same_kind {
            return Err(Error::usage(format!(
                "--into-url must be the same kind of database as source {name} (PostgreSQL or SQLite)"
            )));
        }
        source.url = url.to_string();
    }
    LiveSource::open(name, &source, false)
        .await
        .map_err(|e| match into_url {
            Some(url) => e.context(format!(
                "--into-url {}",
                lifeboat_source::postgres::redact(url)
            )),
            None => e,
        })
}

/// A restore, as the command line or the drill asks for it.
pub struct Request {
    pub tenants: Vec<String>,
    pub target: Target,
    pub sources: Vec<String>,
    pub as_key: Option<String>,
    pub into_url: Option<String>,
    pub dry_run: bool,
    pub jobs: usize,
}

/// What a restore did.
pub struct Summary {
    pub outcomes: Vec<Outcome>,
    pub resolved: lifeboat_core::target::Resolved,
    pub elapsed: std::time::Duration,
}

impl Summary {
    pub fn rows_written(&self) -> u64 {
        self.outcomes.iter().map(|o| o.report.rows_written()).sum()
    }

    /// Rows written per tenant (every source).
    pub fn tenant_rows(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for o in &self.outcomes {
            *out.entry(o.tenant.clone()).or_default() += o.report.rows_written();
        }
        out
    }

    /// Why each tenant that failed failed (an error, or a read-back that differs).
    pub fn tenant_failures(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for o in &self.outcomes {
            let reason = match (&o.error, o.verified) {
                (Some(e), _) => format!("{}: {e}", o.source),
                (None, Some(false)) => format!(
                    "{}: read back differs from the vault ({})",
                    o.source,
                    o.differences.join("; ")
                ),
                _ => continue,
            };
            out.entry(o.tenant.clone())
                .and_modify(|r| {
                    r.push_str("; ");
                    r.push_str(&reason)
                })
                .or_insert(reason);
        }
        out
    }

    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failed()).count()
    }
}

/// Check the request against the vault and the databases, then restore. Nothing is
/// written unless every check passed.
pub async fn execute(config: &Config, request: &Request, progress: Reporter) -> Result<Summary> {
    let names = source_names(config, &request.sources)?;
    let target = &request.target;
    if request.into_url.is_some() && names.len() != 1 {
        return Err(Error::usage(
            "--into-url writes one source: add --source NAME",
        ));
    }
    if request
        .as_key
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        return Err(Error::usage(
            "--as is empty: give the tenant key to restore under",
        ));
    }
    if request.as_key.is_some() && request.tenants.len() != 1 {
        return Err(Error::usage(
            "--as restores one tenant: name exactly one --tenant",
        ));
    }
    let jobs = request.jobs.clamp(1, 64);

    let mut targets = Vec::new();
    for name in &names {
        let target = open_target(config, name, request.into_url.as_deref()).await?;
        if request.into_url.is_some() {
            check_same_schema(&open_target(config, name, None).await?, &target)?;
        }
        targets.push(target);
    }
    let vault = open_vault(config).await?;
    let histories = histories_for(&vault, &names, &request.tenants).await?;
    let tenant_keys = check_tenants(&vault, &histories, &request.tenants).await?;
    let postgres: BTreeSet<String> = targets
        .iter()
        .filter(|t| t.dialect() == Dialect::Postgres)
        .map(|t| t.name.clone())
        .collect();
    if let Target::BeforeTx { source, .. } = target {
        config.source(source)?;
    }
    let resolved = target::resolve(&vault, &histories, &postgres, target).await?;
    let as_key = request.as_key.as_ref().map(|k| TenantKey::new(k.clone()));
    if let Some(key) = &as_key {
        for source in &targets {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            source
                .for_each_tenant_row(key, |table, _, _| {
                    *counts.entry(table.to_string()).or_default() += 1;
                })
                .await?;
            let taken: Vec<String> = counts
                .iter()
                .map(|(t, n)| format!("{}.{t}: {n} rows", source.name))
                .collect();
            if !taken.is_empty() {
                return Err(Error::usage(format!(
                    "tenant {key} already has rows ({}); restore as a key that has none",
                    taken.join(", ")
                )));
            }
        }
    }
    // Every column the vault's rows carry must exist in the database written to, in
    // every source, before any source is written.
    for (source, history) in targets.iter().zip(&histories) {
        let position = resolved.positions[&source.name].get();
        let live = source.live_columns();
        for (table, schema) in history.schemas_at(&vault, position).await? {
            if source.tenancy.table(&table).is_none() {
                continue;
            }
            let Some(columns) = live.get(&table) else {
                return Err(Error::usage(format!(
                    "the target schema differs: {} has no table {table}",
                    source.name
                )));
            };
            if let Some(missing) = schema.columns.iter().find(|c| !columns.contains(c)) {
                return Err(Error::usage(format!(
                    "the target schema differs: table {}.{table} has no column {missing}, \
                     which the vault's rows carry",
                    source.name
                )));
            }
        }
    }
    let mut catalogs = Vec::new();
    for source in &targets {
        catalogs.push(source.restore_catalog().await?);
    }
    // `--as`: the clone's other keys (ids of its rows) may be taken. Try every source first
    // and roll back, so that a collision refuses the restore before any source is written.
    if let (Some(key), false) = (&as_key, request.dry_run) {
        for ((source, history), catalog) in targets.iter_mut().zip(&histories).zip(&catalogs) {
            let position = resolved.positions[&source.name].get();
            for (_, stream) in history.streams_at(&vault, &tenant_keys, position).await? {
                let restore = TenantRestore::prepare(
                    &source.tenancy,
                    catalog,
                    stream,
                    &source.live_columns(),
                    Some(key),
                )?;
                if let Err(e) = source
                    .write_tenant(catalog, key, restore, WriteMode::Trial)
                    .await
                {
                    return Err(Error::usage(format!(
                        "the clone cannot be written as {key} in {}: {e}",
                        source.name
                    )));
                }
            }
        }
    }

    progress.event(Event::RestoreStarted {
        tenants: tenant_keys.len(),
        sources: names.len(),
        restores: tenant_keys.len() * names.len(),
        target: resolved.description.clone(),
        dry_run: request.dry_run,
    });
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for ((source, history), catalog) in targets.into_iter().zip(&histories).zip(catalogs) {
        let position = resolved.positions[&source.name].get();
        let (done, failure) = restore_source(
            config,
            &vault,
            history,
            source,
            Arc::new(catalog),
            &tenant_keys,
            position,
            as_key.as_ref(),
            request.into_url.as_deref(),
            request.dry_run,
            jobs,
            progress.clone(),
        )
        .await;
        outcomes.extend(done);
        if let Some(e) = failure {
            // Say what was already written before the error that stops the restore.
            progress.event(Event::RestoreFinished);
            for o in outcomes
                .iter()
                .filter(|o| o.error.is_none() && !request.dry_run)
            {
                progress.event(Event::RestoredBeforeError {
                    tenant: o.tenant.clone(),
                    source: o.source.clone(),
                });
            }
            return Err(e);
        }
    }
    progress.event(Event::RestoreFinished);
    Ok(Summary {
        outcomes,
        resolved,
        elapsed: started.elapsed(),
    })
}

/// `--into-url`: the target must have every tenant table and column of the source.
pub(crate) fn check_same_schema(source: &LiveSource, target: &LiveSource) -> Result<()> {
    let wanted = source.live_columns();
    let have = target.live_columns();
    for (table, columns) in &wanted {
        let Some(target_columns) = have.get(table) else {
            return Err(Error::usage(format!(
                "the target schema differs: it has no table {table}"
            )));
        };
        if let Some(missing) = columns.iter().find(|c| !target_columns.contains(c)) {
            return Err(Error::usage(format!(
                "the target schema differs: table {table} has no column {missing}"
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn restore_source(
    config: &Config,
    vault: &Vault,
    history: &SourceHistory,
    first: LiveSource,
    catalog: Arc<RestoreCatalog>,
    tenants: &BTreeSet<TenantKey>,
    position: u64,
    as_key: Option<&TenantKey>,
    into_url: Option<&str>,
    dry_run: bool,
    jobs: usize,
    progress: Reporter,
) -> (Vec<Outcome>, Option<Error>) {
    let jobs = match first.dialect() {
        Dialect::Postgres => jobs,
        Dialect::Sqlite => 1,
    };
    let live_columns = first.live_columns();
    let tenancy = first.tenancy.clone();
    let mut writers = vec![first];
    while writers.len() < jobs.min(tenants.len().max(1)) {
        match open_target(config, &writers[0].name, into_url).await {
            Ok(writer) => writers.push(writer),
            Err(e) => return (Vec::new(), Some(e)),
        }
    }
    let (work_tx, work_rx) = tokio::sync::mpsc::channel::<(TenantKey, TenantRestore)>(jobs * 2);
    let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
    let mut tasks = tokio::task::JoinSet::new();
    for mut writer in writers {
        let work_rx = work_rx.clone();
        let catalog = catalog.clone();
        let as_key = as_key.cloned();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let next = work_rx.lock().await.recv().await;
                let Some((tenant, restore)) = next else {
                    break;
                };
                let key = as_key.clone().unwrap_or_else(|| tenant.clone());
                let outcome =
                    restore_one(&mut writer, &catalog, &tenant, &key, restore, dry_run).await;
                progress.event(Event::TenantRestored {
                    rows: outcome.report.rows_written(),
                });
                if !dry_run && outcome.error.is_none() {
                    lifeboat_core::metrics::Metrics::global()
                        .restore_rows(outcome.report.rows_written());
                }
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    // Open tenants a few at a time, reading the segments once per batch; their rows are
    // read from the vault while they are written.
    let list: Vec<TenantKey> = tenants.iter().cloned().collect();
    let mut feed_error = None;
    for batch in list.chunks(16) {
        let batch: BTreeSet<TenantKey> = batch.iter().cloned().collect();
        let streams = match history.streams_at(vault, &batch, position).await {
            Ok(streams) => streams,
            Err(e) => {
                feed_error = Some(e);
                break;
            }
        };
        for (tenant, stream) in streams {
            let restore =
                match TenantRestore::prepare(&tenancy, &catalog, stream, &live_columns, as_key) {
                    Ok(restore) => restore,
                    Err(e) => {
                        feed_error = Some(e);
                        break;
                    }
                };
            if work_tx.send((tenant, restore)).await.is_err() {
                break;
            }
        }
        if feed_error.is_some() {
            break;
        }
    }
    drop(work_tx);
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => outcomes.extend(done),
            Err(e) => {
                feed_error.get_or_insert(Error::source(format!("a restore task failed: {e}")));
            }
        }
    }
    (outcomes, feed_error)
}

async fn restore_one(
    writer: &mut LiveSource,
    catalog: &RestoreCatalog,
    tenant: &TenantKey,
    key: &TenantKey,
    restore: TenantRestore,
    dry_run: bool,
) -> Outcome {
    let mut outcome = Outcome {
        tenant: tenant.to_string(),
        written_as: key.to_string(),
        source: writer.name.clone(),
        report: WriteReport::default(),
        verified: None,
        differences: Vec::new(),
        error: None,
    };
    let mode = if dry_run {
        WriteMode::DryRun
    } else {
        WriteMode::Commit
    };
    let restore = match writer.write_tenant(catalog, key, restore, mode).await {
        Ok((report, restore)) => {
            outcome.report = report;
            restore
        }
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    if dry_run {
        return outcome;
    }
    // Verified: the rows now in the database are the rows the vault holds, compared by
    // digest over the columns restored, read back as a stream.
    let columns: BTreeMap<String, Vec<String>> = restore
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.columns.clone()))
        .collect();
    let read = live_digests(writer, key, &columns).await;
    match read {
        Ok(live) => {
            for table in &restore.tables {
                let check = TableCheck {
                    table: table.name.clone(),
                    live: live.get(&table.name).copied().unwrap_or_default(),
                    vault: restore
                        .digests
                        .get(&table.name)
                        .copied()
                        .unwrap_or_default(),
                };
                if !check.matches() {
                    outcome.differences.push(format!(
                        "{}: {} rows in the database, {} restored from the vault",
                        check.table, check.live.rows, check.vault.rows
                    ));
                }
            }
            outcome.verified = Some(outcome.differences.is_empty());
        }
        Err(e) => {
            outcome.error = Some(format!("written, but cannot be verified: {e}"));
            outcome.verified = Some(false);
        }
    }
    outcome
}
