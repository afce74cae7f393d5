//! The campaign worker: claims a batch under a lease, restores it, verifies each tenant
//! against the vault, then hands it over (awaiting acceptance, or restored). In a phased
//! campaign a batch is of one phase: only that phase's sources are restored and verified,
//! and a tenant with a phase after it moves on to it, queued. A worker whose
//! lease renewal fails abandons its batch; a failure goes back to the queue with its
//! reason, `failed` after `max_attempts`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_control::{new_id, Acceptance, Campaign};
use lifeboat_control::{ControlStore, Stage};
use lifeboat_core::config::Config;
use lifeboat_core::model::{Position, TenantKey};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::{Resolved, Target};
use lifeboat_core::{Error, Result};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use super::open_control;
use crate::compare::{compare_tenant, expected_from_stream};
use crate::context::{control_url, open_vault};
use crate::progress::silent;

/// A worker's default name: host, process id and a random part.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    // The pid alone repeats across containers: a random part keeps names apart.
    let suffix = new_id().unwrap_or_default();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[..4.min(suffix.len())]
    )
}

/// What a worker did: tenants restored and verified (in a phased campaign: in their last
/// phase), failed attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Worked {
    pub restored: usize,
    pub failed: usize,
}

/// Work as `name` on `campaign` (any, when `None`) until `stop` is set, or, with
/// `until_done`, until no tenant is left to restore; `jobs` tenants at once.
pub async fn run(
    config: &Config,
    config_path: &Option<PathBuf>,
    name: &str,
    campaign: Option<&str>,
    until_done: bool,
    jobs: usize,
    stop: &Stop,
) -> Result<Worked> {
    let url = control_url(config, config_path)?;
    open_control(config, config_path)?;
    let mut worked = Worked::default();
    while !stop.is_set() {
        remove_expired_exports(config, config_path, &url, name).await?;
        build_exports(config, config_path, &url, name).await?;
        match work_once(config, &url, name, campaign, jobs).await? {
            Some((ok, bad)) => {
                worked.restored += ok;
                worked.failed += bad;
                lifeboat_core::failpoint::pause("worker.after-batch");
            }
            None => {
                if until_done && !pending(&url, campaign)? {
                    break;
                }
                stop.sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(worked)
}

/// Run `workers` workers in this process until `campaign` has nothing left to restore.
/// Returns tenants restored and failed attempts.
pub async fn run_workers(
    config: &Config,
    url: &str,
    campaign: &str,
    workers: usize,
    jobs: usize,
) -> Result<(usize, usize)> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..workers.max(1) {
        let config = config.clone();
        let url = url.to_string();
        let campaign = campaign.to_string();
        let name = format!("drill-{}-{i}", std::process::id());
        set.spawn(async move {
            let (mut ok, mut bad) = (0, 0);
            loop {
                match work_once(&config, &url, &name, Some(&campaign), jobs).await? {
                    Some((o, b)) => {
                        ok += o;
                        bad += b;
                    }
                    None if pending(&url, Some(&campaign))? => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => return Ok::<_, Error>((ok, bad)),
                }
            }
        });
    }
    let (mut ok, mut bad) = (0, 0);
    while let Some(joined) = set.join_next().await {
        let (o, b) = joined.map_err(|e| Error::source(format!("worker task: {e}")))??;
        ok += o;
        bad += b;
    }
    Ok((ok, bad))
}

/// Delete the archives whose download link expired more than
/// [`lifeboat_control::ARCHIVE_GRACE_US`] ago (docs/status.md): each export is first marked
/// `removed` (audited `export-remove`, by the worker), then its file deleted and
/// forgotten. A file that cannot be deleted is logged and tried again next time; one
/// already gone counts as deleted. Returns how many archives were deleted.
pub async fn remove_expired_exports(
    config: &Config,
    config_path: &Option<PathBuf>,
    url: &str,
    worker: &str,
) -> Result<usize> {
    let mut control = ControlStore::open(url)?;
    let marked = control.expire_exports(lifeboat_control::ARCHIVE_GRACE_US, worker)?;
    let files = control.archives_to_delete()?;
    let dir = super::export_dir(config, config_path)?;
    let mut deleted = sweep_unreferenced(&mut control, &dir, worker)?;
    for (campaign, tenant, file) in files {
        // A name from the store, not a path: never leave the export directory.
        if file.contains(['/', '\\']) || file.starts_with('.') {
            tracing::warn!("worker {worker}: export of tenant {tenant}: odd file name {file:?}");
            continue;
        }
        match std::fs::remove_file(dir.join(&file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("worker {worker}: removing export {file}: {e}");
                continue;
            }
        }
        control.archive_deleted(&campaign, &tenant, &file)?;
        deleted += 1;
    }
    if marked > 0 {
        if let Err(e) = anchor(config, url).await {
            tracing::warn!("worker {worker}: anchoring audit entries: {e}");
        }
    }
    Ok(deleted)
}

/// Delete the archives in `dir` that no export refers to any more and that were last
/// written over [`lifeboat_control::ARCHIVE_GRACE_US`] ago: one whose export was asked for
/// again after it was marked removed but before its file was deleted, or one a worker
/// placed and was killed before recording. Archives being built have a temporary name
/// (starting with a dot) and are never touched. Returns how many were deleted.
fn sweep_unreferenced(control: &mut ControlStore, dir: &Path, worker: &str) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            tracing::warn!("worker {worker}: reading {}: {e}", dir.display());
            return Ok(0);
        }
    };
    let referenced: BTreeSet<String> = control
        .exports()?
        .into_iter()
        .filter_map(|e| e.file)
        .collect();
    let grace = Duration::from_micros(lifeboat_control::ARCHIVE_GRACE_US.max(0) as u64);
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let archive = name.ends_with(".zip") || name.ends_with(".sqlite");
        if !archive || name.starts_with('.') || referenced.contains(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > grace);
        if !old {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(
                    "worker {worker}: removed archive {name}, which no export refers to"
                );
                deleted += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("worker {worker}: removing archive {name}: {e}"),
        }
    }
    Ok(deleted)
}

/// Build every export tenants asked for on their private pages, one at a time, from the
/// vault as of each campaign's restore point (docs/status.md). A failed build is recorded
/// on the tenant's page; it may ask again.
pub async fn build_exports(
    config: &Config,
    config_path: &Option<PathBuf>,
    url: &str,
    worker: &str,
) -> Result<usize> {
    let lease_us = (config.campaigns.lease_seconds as i64).saturating_mul(1_000_000);
    let link_us = (config.campaigns.export_link_seconds as i64).saturating_mul(1_000_000);
    let mut built = 0;
    loop {
        let mut control = ControlStore::open(url)?;
        let Some((campaign_id, tenant)) = control.claim_export(worker, lease_us)? else {
            break;
        };
        let result = build_export(config, config_path, &mut control, &campaign_id, &tenant).await;
        match result {
            Ok((file, bytes, details)) => {
                if control.finish_export(
                    worker,
                    &campaign_id,
                    &tenant,
                    &file,
                    bytes as i64,
                    link_us,
                    details,
                )? {
                    built += 1;
                } else {
                    // Another worker took it over meanwhile: its archive is the one offered.
                    let dir = super::export_dir(config, config_path)?;
                    let _ = std::fs::remove_file(dir.join(&file));
                }
            }
            Err(e) => {
                tracing::warn!("worker {worker}: export of tenant {tenant}: {e}");
                control.fail_export(worker, &campaign_id, &tenant, &e.to_string())?;
            }
        }
        if let Err(e) = anchor(config, url).await {
            tracing::warn!("worker {worker}: anchoring audit entries: {e}");
        }
    }
    Ok(built)
}

/// One tenant's archive as of its campaign's restore point, in the export directory.
/// Returns its file name, size and what the audit log records of it.
async fn build_export(
    config: &Config,
    config_path: &Option<PathBuf>,
    control: &mut ControlStore,
    campaign_id: &str,
    tenant: &str,
) -> Result<(String, u64, serde_json::Value)> {
    let campaign = control
        .campaigns()?
        .into_iter()
        .find(|c| c.id == campaign_id)
        .ok_or_else(|| Error::usage(format!("no campaign {campaign_id}")))?;
    let target = campaign_target(&campaign)?;
    let dir = super::export_dir(config, config_path)?;
    let vault = open_vault(config).await?;
    let names: Vec<String> = config.sources.keys().cloned().collect();
    let histories = crate::context::histories_for(&vault, &names, &[tenant.to_string()]).await?;
    let resolved = super::resolve_target(config, &vault, &histories, &target).await?;
    // The format the customer asked for (csv for a request made before there was a choice).
    let format: crate::export::Format = control
        .exports()?
        .into_iter()
        .find(|e| e.campaign == campaign_id && e.tenant == tenant)
        .map_or_else(|| "csv".to_string(), |e| e.format)
        .parse()?;
    let (file, manifest) =
        crate::export::build(config, &vault, tenant, &resolved, &names, format, &dir).await?;
    let bytes = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    let name = format!("{campaign_id}-{}.{}", new_id()?, format.extension());
    crate::export::place(file, &dir.join(&name), false)?;
    Ok((name, bytes, manifest.audit_details(format)))
}

/// A campaign's target: the positions resolved when it started.
fn campaign_target(campaign: &Campaign) -> Result<Target> {
    let positions: Option<BTreeMap<String, Position>> = campaign
        .target
        .get("positions")
        .and_then(|p| serde_json::from_value(p.clone()).ok());
    match positions {
        Some(positions) => Ok(Target::Positions(positions)),
        None => Target::parse(
            campaign.target.get("at").and_then(|v| v.as_str()),
            campaign.target.get("before_tx").and_then(|v| v.as_str()),
        ),
    }
}

/// Is any tenant still to be restored (queued or being restored by someone)?
fn pending(url: &str, campaign: Option<&str>) -> Result<bool> {
    let mut control = ControlStore::open(url)?;
    Ok(control
        .campaign_tenants(campaign)?
        .iter()
        .any(|t| matches!(t.stage, Stage::Queued | Stage::Restoring | Stage::Verifying)))
}

/// The acceptance policy of `[campaigns]`.
pub fn acceptance(config: &Config) -> Acceptance {
    Acceptance {
        customer: config.campaigns.acceptance == "customer",
        auto_after_us: config
            .campaigns
            .auto_accept_minutes
            .map(|m| (m as i64).saturating_mul(60_000_000)),
        per_phase: config.campaigns.accept_per_phase,
    }
}

/// Claim one batch and take it through its stages. `None`: nothing to claim.
async fn work_once(
    config: &Config,
    url: &str,
    worker: &str,
    campaign: Option<&str>,
    jobs: usize,
) -> Result<Option<(usize, usize)>> {
    let lease_us = (config.campaigns.lease_seconds as i64).saturating_mul(1_000_000);
    let policy = acceptance(config);
    let mut control = ControlStore::open(url)?;
    if let Some(after) = policy.auto_after_us {
        control.auto_accept(after)?;
    }
    let Some((campaign, tenants)) = control.claim(worker, campaign, lease_us)? else {
        return Ok(None);
    };
    let keys: Vec<String> = tenants.iter().map(|t| t.tenant.clone()).collect();
    // A batch is of one phase.
    let phase = tenants.first().map(|t| t.phase).unwrap_or(0);
    let sources = campaign.phase_sources(phase).to_vec();
    let last_phase = campaign.is_last_phase(phase);
    // A tenant through this phase asks its admin now (the last phase, or acceptance per
    // phase), or moves on to its next phase.
    let hand_over = last_phase || (policy.customer && policy.per_phase);
    tracing::info!(
        "worker {worker}: {} tenants of campaign {}{}",
        keys.len(),
        campaign.id,
        if sources.is_empty() {
            String::new()
        } else {
            format!(", phase {} ({})", phase + 1, sources.join(", "))
        }
    );

    // Renew the lease while the batch runs (a killed worker stops renewing). When a
    // renewal fails, the batch is abandoned at once: its tenants may soon be another
    // worker's, and a restore still running here must not write over theirs.
    let lost = std::sync::Arc::new(tokio::sync::Notify::new());
    let renewer = {
        let url = url.to_string();
        let worker = worker.to_string();
        let id = campaign.id.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            let interval = Duration::from_micros((lease_us / 3).max(100_000) as u64);
            let mut failures = 0;
            loop {
                tokio::time::sleep(if failures == 0 {
                    interval
                } else {
                    interval / 4
                })
                .await;
                let (u, w, i) = (url.clone(), worker.clone(), id.clone());
                let renewed = tokio::task::spawn_blocking(move || {
                    ControlStore::open(&u)?.renew_lease(&w, &i, lease_us)
                })
                .await;
                match renewed {
                    Ok(Ok(true)) => failures = 0,
                    Ok(Ok(false)) => {
                        tracing::warn!("worker {worker}: another worker holds this batch now");
                        lost.notify_one();
                        return;
                    }
                    other => {
                        failures += 1;
                        tracing::warn!("worker {worker}: lease renewal failed: {other:?}");
                        if failures >= 3 {
                            lost.notify_one();
                            return;
                        }
                    }
                }
            }
        })
    };
    let work = async {
        let result = restore_batch(config, &campaign, &keys, &sources, jobs).await;
        let mut control = ControlStore::open(url)?;
        let (mut ok, mut bad) = (0, 0);
        // Back to the queue with the reason, or failed once its attempts are used up
        // (`attempts` counts the claim that made this one).
        let mut give_back =
            |control: &mut ControlStore, tenant: &str, attempts: i64, reason: &str| -> Result<()> {
                let stage = if attempts < i64::from(config.campaigns.max_attempts) {
                    Stage::Queued
                } else {
                    Stage::Failed
                };
                if control.set_stage(worker, &campaign.id, tenant, stage, Some(reason), None)? {
                    bad += 1;
                } else {
                    tracing::warn!("worker {worker}: tenant {tenant} is another worker's now");
                }
                Ok(())
            };
        match result {
            Err(e) => {
                // The whole batch failed before any tenant was written.
                for t in &tenants {
                    give_back(&mut control, &t.tenant, t.attempts, &e.to_string())?;
                }
            }
            Ok((rows, failures, resolved)) => {
                let restored: Vec<String> = keys
                    .iter()
                    .filter(|k| !failures.contains_key(*k))
                    .cloned()
                    .collect();
                for t in &tenants {
                    match failures.get(&t.tenant) {
                        Some(reason) => give_back(&mut control, &t.tenant, t.attempts, reason)?,
                        None => {
                            control.set_stage(
                                worker,
                                &campaign.id,
                                &t.tenant,
                                Stage::Verifying,
                                None,
                                None,
                            )?;
                        }
                    }
                }
                drop(control);
                let problems = verify_batch(config, &restored, &resolved).await?;
                let mut control = ControlStore::open(url)?;
                for tenant in &restored {
                    let t = tenants.iter().find(|t| &t.tenant == tenant);
                    let attempts = t.map(|t| t.attempts).unwrap_or(1);
                    match problems.get(tenant) {
                        Some(reason) => give_back(&mut control, tenant, attempts, reason)?,
                        None => {
                            let n = rows.get(tenant).map(|n| *n as i64);
                            let handed = if !hand_over {
                                // On to its next phase, which opens once every tenant
                                // is through this one.
                                control.finish_phase(worker, &campaign.id, tenant, n)?
                            } else {
                                // Without the customer's acceptance this is the last
                                // phase.
                                let stage = if policy.customer {
                                    Stage::AwaitingAcceptance
                                } else {
                                    Stage::Restored
                                };
                                control.set_stage(worker, &campaign.id, tenant, stage, None, n)?
                            };
                            if handed {
                                // Restored counts a tenant once, in its last phase.
                                if last_phase {
                                    ok += 1;
                                }
                            } else {
                                tracing::warn!(
                                    "worker {worker}: tenant {tenant} is another worker's now"
                                );
                            }
                        }
                    }
                }
                if let Some(after) = policy.auto_after_us {
                    control.auto_accept(after)?;
                }
            }
        }
        Ok::<_, Error>((ok, bad))
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = lost.notified() => {
            tracing::warn!("worker {worker}: batch of campaign {} abandoned", campaign.id);
            Ok((0, 0))
        }
    };
    renewer.abort();
    let outcome = outcome?;
    // Progress updates, when the campaign posts them by itself.
    if let Err(e) = ControlStore::open(url)
        .and_then(|mut control| super::post_progress(config, &mut control, &campaign.id))
    {
        tracing::warn!(
            "worker {worker}: progress update of campaign {}: {e}",
            campaign.id
        );
    }
    // The stage changes' audit entries, and any the status server wrote meanwhile.
    if let Err(e) = anchor(config, url).await {
        tracing::warn!("worker {worker}: anchoring audit entries: {e}");
    }
    Ok(Some(outcome))
}

/// Anchor the audit entries waiting for their anchor.
async fn anchor(config: &Config, url: &str) -> Result<usize> {
    let vault = open_vault(config).await?;
    crate::guard::anchor_pending(&mut ControlStore::open(url)?, &vault).await
}

/// Restore `tenants` to the campaign's target, in `sources` (empty: every source).
/// Returns rows per tenant, failures by tenant, and the resolved target (of those sources).
async fn restore_batch(
    config: &Config,
    campaign: &Campaign,
    tenants: &[String],
    sources: &[String],
    jobs: usize,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, String>, Resolved)> {
    // The positions resolved when the campaign started.
    let target = campaign_target(campaign)?;
    // In a phase, a tenant the vault has no rows of in the phase's sources has nothing to
    // restore there: it is through the phase with no rows written.
    let mut tenants = tenants.to_vec();
    if !sources.is_empty() {
        let vault = open_vault(config).await?;
        let histories = crate::context::histories_for(&vault, sources, &tenants).await?;
        let mut known: BTreeSet<TenantKey> = BTreeSet::new();
        for history in &histories {
            known.extend(history.bases.keys().cloned());
            if tenants
                .iter()
                .any(|t| !known.contains(&TenantKey::new(t.clone())))
            {
                known.extend(history.tenants(&vault).await?);
            }
        }
        tenants.retain(|t| known.contains(&TenantKey::new(t.clone())));
        if tenants.is_empty() {
            let nothing = Resolved {
                positions: BTreeMap::new(),
                time_us: 0,
                description: String::new(),
            };
            return Ok((BTreeMap::new(), BTreeMap::new(), nothing));
        }
    }
    let request = crate::restore::Request {
        tenants,
        target,
        sources: sources.to_vec(),
        as_key: None,
        into_url: None,
        dry_run: false,
        jobs: jobs.max(1),
    };
    let summary = crate::restore::execute(config, &request, silent()).await?;
    Ok((
        summary.tenant_rows(),
        summary.tenant_failures(),
        summary.resolved.clone(),
    ))
}

/// Check each tenant's live rows against the vault at `resolved`, table by table, by
/// row count and checksum (on the vault's columns). Returns the tenants that differ.
async fn verify_batch(
    config: &Config,
    tenants: &[String],
    resolved: &Resolved,
) -> Result<BTreeMap<String, String>> {
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    if tenants.is_empty() {
        return Ok(problems);
    }
    let vault = open_vault(config).await?;
    let keys: BTreeSet<TenantKey> = tenants.iter().map(|t| TenantKey::new(t.clone())).collect();
    for (name, position) in &resolved.positions {
        let history = SourceHistory::load_for(&vault, name, &keys).await?;
        let source = LiveSource::open(name, config.source(name)?, false).await?;
        let streams = history.streams_at(&vault, &keys, position.get()).await?;
        for (tenant, mut stream) in streams {
            let expected = expected_from_stream(&mut stream)?;
            let check = compare_tenant(&source, &tenant, &expected).await?;
            if !check.matches() {
                let tables: Vec<String> = check
                    .differences()
                    .map(|t| {
                        format!(
                            "{name}.{}: {} rows live, {} in the vault",
                            t.table, t.live.rows, t.vault.rows
                        )
                    })
                    .collect();
                problems.insert(
                    tenant.to_string(),
                    format!("verification failed: {}", tables.join("; ")),
                );
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_no_export_refers_to_are_swept_once_old() {
        let store = tempfile::tempdir().expect("dir");
        let url = store.path().join("control.db");
        let mut control = ControlStore::open(url.to_str().expect("utf8")).expect("open");
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, age: Duration| {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).expect("create");
            file.set_modified(std::time::SystemTime::now() - age)
                .expect("mtime");
            path
        };
        let two_hours = Duration::from_secs(7200);
        let orphan = write("c1-old.zip", two_hours);
        let orphan_sqlite = write("c1-old.sqlite", two_hours);
        let fresh = write("c1-new.zip", Duration::ZERO);
        let building = write(".tmpXYZ.zip", two_hours);
        let other = write("notes.txt", two_hours);
        assert_eq!(
            sweep_unreferenced(&mut control, dir.path(), "w").expect("sweep"),
            2
        );
        assert!(!orphan.exists() && !orphan_sqlite.exists());
        assert!(fresh.exists() && building.exists() && other.exists());
        // A directory that is not there yet is nothing to sweep.
        assert_eq!(
            sweep_unreferenced(&mut control, &dir.path().join("none"), "w").expect("sweep"),
            0
        );
    }
}
