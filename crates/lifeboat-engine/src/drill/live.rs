//! `drill --live`: restores proven on production data. A run samples tenants at random
//! from the vault, brings the vault up to the sources' present (`catch_up`: beside a
//! running capture it waits for it, otherwise it captures under the lease), restores each
//! tenant into a scratch database, checks the restored rows against the vault's digests
//! and the vault against the live rows, empties the scratch database of the tenant again,
//! and reports each tenant's recovery time and result (docs/operations.md, "Live drills").
//!
//! The comparison with live rows, which keep changing while the drill runs: for each
//! round, position marks `p1` and `p2` (`Source::position_to_capture`) bracket the reading
//! of the tenants' live digests. Every change committed before the read started is at or
//! below `p2`, every change committed after `p1` was taken is above `p1`. When the vault,
//! brought up to `p2`, holds no change of the tenant in `(p1, p2]` (nor a truncate or an
//! alter of any table), the tenant's rows did not move while they were read, so they must
//! equal the vault's state at `p2`. Otherwise the tenant is read again in the next round;
//! after `LIVE_ROUNDS` rounds without a quiet one it is reported busy: restored and checked
//! against the vault, not compared with live rows (not a failure). A quiet round whose
//! digests differ is read again too (a transaction whose commit was recorded just before
//! `p1` can become visible to readers a moment later); the tenant fails when no round
//! matched and at least one quiet round differed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use lifeboat_control::{Entry, Notice, NoticeEvent, Recipient};
use lifeboat_core::checksum::TableDigest;
use lifeboat_core::config::{Config, SourceConfig, SourceKind};
use lifeboat_core::metrics::Metrics;
use lifeboat_core::model::{Dialect, Op, Position, TenantKey};
use lifeboat_core::state::{SourceHistory, TenantStream};
use lifeboat_core::target::Target;
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::live::LiveSource;
use lifeboat_source::restore::{TenantRestore, WriteMode};

use crate::catch_up::catch_up;
use crate::compare::{check, compare_tenant, expected_from_stream, live_digests, Expected};
use crate::context::{open_vault, source_names};
use crate::progress::{silent, Event, Progress};
use crate::restore::{execute, Request};

/// How many times the live rows of a tenant are read before it is reported busy.
pub const LIVE_ROUNDS: usize = 3;

/// What a live drill is asked for.
#[derive(Debug, Clone)]
pub struct Args {
    /// How many tenants to drill.
    pub sample: usize,
    /// `--source` (all configured, or those `--into-url SOURCE=URL` names, when empty).
    pub sources: Vec<String>,
    /// `--into-url`: `URL` (one source) or `SOURCE=URL`, repeated.
    pub into: Vec<String>,
}

/// The sources drilled and the scratch database of each, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Source -> its scratch database's URL.
    pub scratch: BTreeMap<String, String>,
    pub sample: usize,
}

/// How one tenant's drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Restored, equal to the vault, and the vault equal to the live rows.
    Passed,
    /// Restored and equal to the vault; its live rows kept changing (not a failure).
    Busy,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Busy => "busy",
            Verdict::Failed => "failed",
        }
    }
}

/// One tenant of a live drill.
#[derive(Debug, Clone, Serialize)]
pub struct TenantResult {
    pub tenant: String,
    pub result: Verdict,
    /// The restore into the scratch database and its checks against the vault.
    pub recovery_seconds: f64,
    /// Rows restored (every source).
    pub rows: u64,
    pub sources: Vec<String>,
    /// Why it failed, or why it was not compared with live rows.
    pub reason: Option<String>,
    /// How many times its live rows were read (0: not compared, its restore failed).
    pub live_rounds: usize,
}

/// One run of the live drill.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: String,
    pub seed: u64,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    /// The position each source was restored to, as the source shows it.
    pub positions: BTreeMap<String, String>,
    /// Tenants asked for; fewer are drilled when fewer have rows.
    pub sample: usize,
    pub tenants: Vec<TenantResult>,
    pub passed: usize,
    pub busy: usize,
    pub failed: usize,
    pub ok: bool,
}

/// Check the request before anything runs: the sources, a scratch database for each, of
/// the source's kind, and none of them a configured source's database.
pub async fn plan(config: &Config, args: &Args) -> Result<Plan> {
    if args.sample == 0 {
        return Err(Error::usage("--sample must be at least 1"));
    }
    let mut mapped: BTreeMap<String, String> = BTreeMap::new();
    let mut bare: Vec<String> = Vec::new();
    for value in &args.into {
        match value.split_once('=') {
            Some((name, url)) if config.sources.contains_key(name) => {
                if mapped.insert(name.to_string(), url.to_string()).is_some() {
                    return Err(Error::usage(format!(
                        "--into-url names source {name} twice"
                    )));
                }
            }
            _ => bare.push(value.clone()),
        }
    }
    if args.into.is_empty() {
        return Err(Error::usage(
            "--live needs --into-url: a scratch database to restore into",
        ));
    }
    if !bare.is_empty() && (bare.len() > 1 || !mapped.is_empty()) {
        return Err(Error::usage(
            "--into-url URL serves one source; for several give --into-url SOURCE=URL for each",
        ));
    }
    let names = if !args.sources.is_empty() {
        source_names(config, &args.sources)?
    } else if !mapped.is_empty() {
        mapped.keys().cloned().collect()
    } else {
        source_names(config, &[])?
    };
    if let Some(url) = bare.pop() {
        if names.len() != 1 {
            return Err(Error::usage(format!(
                "--into-url URL serves one source, and {} are drilled ({}): give \
                 --into-url SOURCE=URL for each, or --source NAME",
                names.len(),
                names.join(", ")
            )));
        }
        mapped.insert(names[0].clone(), url);
    }
    if let Some(extra) = mapped.keys().find(|n| !names.contains(n)) {
        return Err(Error::usage(format!(
            "--into-url names source {extra}, which is not drilled (add --source {extra})"
        )));
    }
    if let Some(missing) = names.iter().find(|n| !mapped.contains_key(*n)) {
        return Err(Error::usage(format!(
            "source {missing} has no scratch database: add --into-url {missing}=URL"
        )));
    }
    for (name, url) in &mapped {
        let source = config.source(name)?;
        let scratch = SourceConfig {
            url: url.clone(),
            ..source.clone()
        }
        .kind()
        .map_err(|e| Error::usage(format!("--into-url for source {name}: {e}")))?;
        if scratch.dialect() != source.kind()?.dialect() {
            return Err(Error::usage(format!(
                "--into-url for source {name} must be the same kind of database as the \
                 source (PostgreSQL or SQLite)"
            )));
        }
        for (other, other_config) in &config.sources {
            if same_database(&scratch, &other_config.kind()?).await {
                return Err(Error::usage(format!(
                    "--into-url {} is the database of source {other}: the drill restores \
                     into a scratch database, never a live one",
                    shown(url)
                )));
            }
        }
    }
    Ok(Plan {
        scratch: mapped,
        sample: args.sample,
    })
}

/// Connect to every scratch database and check that it has the tables and columns of its
/// source (what a restore into it checks first), so that a wrong one is refused before
/// the drill starts rather than failing every tenant.
pub async fn check_scratch(config: &Config, plan: &Plan) -> Result<()> {
    for (name, url) in &plan.scratch {
        let source = LiveSource::open(name, config.source(name)?, false).await?;
        let scratch_config = SourceConfig {
            url: url.clone(),
            ..config.source(name)?.clone()
        };
        let refused = |e: Error| {
            Error::usage(format!(
                "--into-url {} (scratch database of source {name}): {e}",
                shown(url)
            ))
        };
        let scratch = LiveSource::open(name, &scratch_config, false)
            .await
            .map_err(refused)?;
        crate::restore::check_same_schema(&source, &scratch).map_err(refused)?;
    }
    Ok(())
}

fn shown(url: &str) -> String {
    lifeboat_source::postgres::redact(url)
}

/// Whether two configured databases are the same one: PostgreSQL by host, port and
/// database name (a host by its name or any address it resolves to), SQLite by file.
async fn same_database(a: &SourceKind, b: &SourceKind) -> bool {
    match (a, b) {
        (SourceKind::Postgres { url: a }, SourceKind::Postgres { url: b }) => {
            let (Ok(a), Ok(b)) = (
                lifeboat_core::pg::settings(a, None),
                lifeboat_core::pg::settings(b, None),
            ) else {
                return false;
            };
            a.port == b.port && a.dbname == b.dbname && same_host(&a.host, &b.host, a.port).await
        }
        (SourceKind::Sqlite { path: a }, SourceKind::Sqlite { path: b }) => {
            same_file(a) == same_file(b)
        }
        _ => false,
    }
}

/// The file `path` names, links and `..` resolved (a file not there yet: by its directory).
fn same_file(path: &Path) -> std::path::PathBuf {
    if let Ok(found) = std::fs::canonicalize(path) {
        return found;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

async fn same_host(a: &str, b: &str, port: u16) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    // A socket directory is only ever the same as itself.
    if a.starts_with('/') || b.starts_with('/') {
        return false;
    }
    let addresses = |host: &str| {
        let host = host.to_string();
        async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|found| found.map(|a| a.ip()).collect::<BTreeSet<_>>())
                .unwrap_or_default()
        }
    };
    let (a, b) = (addresses(a).await, addresses(b).await);
    a.intersection(&b).next().is_some()
}

/// One tenant's rows in one source at the drill's position.
struct Sampled {
    tenant: TenantKey,
    /// Source -> the vault's digests of its tables there; `Err`: the vault could not give
    /// them (a corrupt object).
    expected: std::result::Result<BTreeMap<String, Expected>, String>,
}

/// The result of comparing one tenant with its live rows in one round.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LiveCheck {
    Matched,
    Busy,
    Differs(String),
}

/// Run the drill once. `run` names it (audit, alert); `seed` picks the tenants.
pub async fn run(
    config: &Config,
    control_url: &str,
    plan: &Plan,
    run: &str,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Report> {
    let started = Instant::now();
    let started_at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
    let names: Vec<String> = plan.scratch.keys().cloned().collect();
    let name_set: BTreeSet<String> = names.iter().cloned().collect();
    let say = |line: String| progress.event(Event::Notice(line));

    let mut live = BTreeMap::new();
    for name in &names {
        live.insert(
            name.clone(),
            LiveSource::open(name, config.source(name)?, false).await?,
        );
    }
    let dialects: BTreeMap<String, Dialect> = live
        .iter()
        .map(|(n, s): (&String, &LiveSource)| (n.clone(), s.dialect()))
        .collect();
    let point = catch_up(config, control_url, &name_set, progress).await?;
    let vault = open_vault(config).await?;
    let mut histories = BTreeMap::new();
    let mut known: BTreeMap<String, BTreeSet<TenantKey>> = BTreeMap::new();
    for name in &names {
        let history = SourceHistory::load(&vault, name).await?;
        known.insert(name.clone(), history.tenants(&vault).await?);
        histories.insert(name.clone(), history);
    }
    let positions: BTreeMap<String, String> = point
        .iter()
        .map(|(n, p)| (n.clone(), Position::new(*p).describe(dialects[n])))
        .collect();

    // Uniform over the tenants with rows at the position: every tenant the vault knows,
    // in a random order, those without rows skipped.
    let mut candidates: Vec<TenantKey> = known
        .values()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    fastrand::Rng::with_seed(seed).shuffle(&mut candidates);
    let mut sampled: Vec<Sampled> = Vec::new();
    for tenant in candidates {
        if sampled.len() >= plan.sample {
            break;
        }
        let expected = expected_at(&vault, &histories, &known, &point, &tenant).await;
        let rows: u64 = match &expected {
            Ok(sources) => sources
                .values()
                .flat_map(|tables| tables.values())
                .map(|(_, d)| d.rows)
                .sum(),
            Err(_) => 1,
        };
        if rows > 0 {
            sampled.push(Sampled {
                tenant,
                expected: expected.map_err(|e| e.to_string()),
            });
        }
    }
    if sampled.is_empty() {
        return Err(Error::usage(
            "no tenant has rows in the vault at the sources' present: nothing to drill",
        ));
    }

    let mut scratch_sources: BTreeMap<String, LiveSource> = BTreeMap::new();
    let mut results: Vec<TenantResult> = Vec::new();
    for sample in &sampled {
        let tenant = &sample.tenant;
        say(format!("drilling tenant {tenant}"));
        let clock = Instant::now();
        let mut result = TenantResult {
            tenant: tenant.to_string(),
            result: Verdict::Passed,
            recovery_seconds: 0.0,
            rows: 0,
            sources: Vec::new(),
            reason: None,
            live_rounds: 0,
        };
        let mut reasons = Vec::new();
        match &sample.expected {
            Err(e) => reasons.push(format!("the vault cannot give its rows: {e}")),
            Ok(expected) => {
                for (name, tables) in expected {
                    result.sources.push(name.clone());
                    let scratch_url = &plan.scratch[name];
                    match restore_into(config, name, scratch_url, tenant, point[name]).await {
                        Ok((rows, None)) => result.rows += rows,
                        Ok((rows, Some(why))) => {
                            result.rows += rows;
                            reasons.push(why)
                        }
                        Err(e) => {
                            reasons.push(format!("{name}: the restore failed: {e}"));
                            continue;
                        }
                    }
                    // The rows now in the scratch database against the vault's digests,
                    // read again from the scratch database.
                    let scratch =
                        match scratch_for(config, &mut scratch_sources, name, scratch_url).await {
                            Ok(s) => s,
                            Err(e) => {
                                reasons.push(format!("{name}: {e}"));
                                continue;
                            }
                        };
                    match compare_tenant(scratch, tenant, tables).await {
                        Ok(found) if found.matches() => {}
                        Ok(found) => reasons.push(format!(
                            "{name}: the restored rows differ from the vault at {}: {}",
                            positions[name],
                            describe(found.differences(), "restored")
                        )),
                        Err(e) => reasons.push(format!("{name}: cannot read back: {e}")),
                    }
                }
            }
        }
        result.recovery_seconds = clock.elapsed().as_secs_f64();
        // The scratch database is scratch: the tenant's rows leave it again.
        for name in result.sources.clone() {
            if let Err(e) =
                empty_scratch(config, &mut scratch_sources, &plan.scratch, &name, tenant).await
            {
                reasons.push(format!(
                    "{name}: the scratch database still holds the tenant's rows: {e}"
                ));
            }
        }
        if !reasons.is_empty() {
            result.result = Verdict::Failed;
            result.reason = Some(reasons.join("; "));
        }
        results.push(result);
    }

    // The vault against the live rows, for the tenants whose restore passed.
    let mut pending: BTreeMap<TenantKey, BTreeMap<String, Expected>> = sampled
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.result == Verdict::Passed)
        .filter_map(|(s, _)| Some((s.tenant.clone(), s.expected.clone().ok()?)))
        .collect();
    let mut seen: BTreeMap<TenantKey, LiveCheck> = BTreeMap::new();
    for round in 0..LIVE_ROUNDS {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(250 * round as u64)).await;
        }
        for result in &mut results {
            if pending.contains_key(&TenantKey::new(result.tenant.clone())) {
                result.live_rounds += 1;
            }
        }
        let checks = compare_live(config, control_url, &live, &pending, progress).await?;
        for (tenant, found) in checks {
            let done = found == LiveCheck::Matched;
            // Keep the most telling outcome: a match, else a quiet difference, else busy.
            let keep = match (seen.get(&tenant), &found) {
                (Some(LiveCheck::Matched), _) => false,
                (_, LiveCheck::Matched) => true,
                (Some(LiveCheck::Differs(_)), LiveCheck::Busy) => false,
                _ => true,
            };
            if keep {
                seen.insert(tenant.clone(), found);
            }
            if done {
                pending.remove(&tenant);
            }
        }
    }
    for result in &mut results {
        if result.result != Verdict::Passed {
            continue;
        }
        match seen.get(&TenantKey::new(result.tenant.clone())) {
            Some(LiveCheck::Matched) => {}
            Some(LiveCheck::Differs(why)) => {
                result.result = Verdict::Failed;
                result.reason = Some(why.clone());
            }
            Some(LiveCheck::Busy) | None => {
                result.result = Verdict::Busy;
                result.reason = Some(format!(
                    "busy, not compared with live: its rows changed while they were read, \
                     {LIVE_ROUNDS} times"
                ));
            }
        }
    }

    let count = |v: Verdict| results.iter().filter(|r| r.result == v).count();
    let (passed, busy, failed) = (
        count(Verdict::Passed),
        count(Verdict::Busy),
        count(Verdict::Failed),
    );
    Ok(Report {
        run: run.to_string(),
        seed,
        started_at,
        finished_at: lifeboat_core::time::format_us(lifeboat_core::time::now_us()),
        seconds: started.elapsed().as_secs_f64(),
        positions,
        sample: plan.sample,
        tenants: results,
        passed,
        busy,
        failed,
        ok: failed == 0,
    })
}

/// The vault's digests of `tenant` in every source that knows it, at `point`.
async fn expected_at(
    vault: &Vault,
    histories: &BTreeMap<String, SourceHistory>,
    known: &BTreeMap<String, BTreeSet<TenantKey>>,
    point: &BTreeMap<String, u64>,
    tenant: &TenantKey,
) -> Result<BTreeMap<String, Expected>> {
    let mut out = BTreeMap::new();
    let one: BTreeSet<TenantKey> = [tenant.clone()].into();
    for (name, history) in histories {
        if !known[name].contains(tenant) {
            continue;
        }
        let mut streams = history.streams_at(vault, &one, point[name]).await?;
        let mut stream = streams.remove(tenant).unwrap_or_else(TenantStream::empty);
        out.insert(name.clone(), expected_from_stream(&mut stream)?);
    }
    Ok(out)
}

/// Restore `tenant` of source `name` at `position` into the scratch database: the rows
/// written, and why the restore's own read-back failed, if it did.
async fn restore_into(
    config: &Config,
    name: &str,
    scratch_url: &str,
    tenant: &TenantKey,
    position: u64,
) -> Result<(u64, Option<String>)> {
    let request = Request {
        tenants: vec![tenant.to_string()],
        target: Target::Positions([(name.to_string(), Position::new(position))].into()),
        sources: vec![name.to_string()],
        as_key: None,
        into_url: Some(scratch_url.to_string()),
        dry_run: false,
        jobs: 1,
    };
    let summary = execute(config, &request, silent()).await?;
    let why = summary.tenant_failures().remove(&tenant.to_string());
    Ok((summary.rows_written(), why))
}

async fn scratch_for<'a>(
    config: &Config,
    open: &'a mut BTreeMap<String, LiveSource>,
    name: &str,
    url: &str,
) -> Result<&'a mut LiveSource> {
    if !open.contains_key(name) {
        let source = SourceConfig {
            url: url.to_string(),
            ..config.source(name)?.clone()
        };
        let scratch = LiveSource::open(name, &source, false)
            .await
            .map_err(|e| e.context(format!("scratch database {}", shown(url))))?;
        open.insert(name.to_string(), scratch);
    }
    open.get_mut(name)
        .ok_or_else(|| Error::source("the scratch database was not opened"))
}

/// Remove `tenant`'s rows from source `name`'s scratch database, in one transaction.
async fn empty_scratch(
    config: &Config,
    open: &mut BTreeMap<String, LiveSource>,
    urls: &BTreeMap<String, String>,
    name: &str,
    tenant: &TenantKey,
) -> Result<()> {
    let scratch = scratch_for(config, open, name, &urls[name]).await?;
    let catalog = scratch.restore_catalog().await?;
    let nothing = TenantRestore::prepare(
        &scratch.tenancy,
        &catalog,
        TenantStream::empty(),
        &scratch.live_columns(),
        None,
    )?;
    scratch
        .write_tenant(&catalog, tenant, nothing, WriteMode::Commit)
        .await?;
    Ok(())
}

/// Tables that differ, for people.
fn describe<'a>(
    differences: impl Iterator<Item = &'a crate::compare::TableCheck>,
    side: &str,
) -> String {
    differences
        .map(|t| {
            if t.live.rows == t.vault.rows {
                format!(
                    "table {}: {} rows {side} and in the vault, their values differ (checksum)",
                    t.table, t.live.rows
                )
            } else {
                format!(
                    "table {}: {} rows {side}, {} in the vault",
                    t.table, t.live.rows, t.vault.rows
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One round of the live comparison (see the module's documentation) for `pending`.
async fn compare_live(
    config: &Config,
    control_url: &str,
    live: &BTreeMap<String, LiveSource>,
    pending: &BTreeMap<TenantKey, BTreeMap<String, Expected>>,
    progress: &dyn Progress,
) -> Result<BTreeMap<TenantKey, LiveCheck>> {
    let mut before = BTreeMap::new();
    for (name, source) in live {
        before.insert(name.clone(), source.position_to_capture().await?.get());
    }
    // Tests write here, between the first mark and the read.
    lifeboat_core::failpoint::pause("drill.live-read");
    // Each tenant's live digests over the columns the vault's rows carry.
    let mut read: BTreeMap<(TenantKey, String), BTreeMap<String, TableDigest>> = BTreeMap::new();
    for (tenant, sources) in pending {
        for (name, expected) in sources {
            let columns = expected
                .iter()
                .map(|(t, (c, _))| (t.clone(), c.clone()))
                .collect();
            let digests = live_digests(&live[name], tenant, &columns).await?;
            read.insert((tenant.clone(), name.clone()), digests);
        }
    }
    let mut after = BTreeMap::new();
    for (name, source) in live {
        after.insert(name.clone(), source.position_to_capture().await?.get());
    }
    let names: BTreeSet<String> = live.keys().cloned().collect();
    catch_up(config, control_url, &names, progress).await?;
    let vault = open_vault(config).await?;
    let mut histories = BTreeMap::new();
    for name in &names {
        let wanted: BTreeSet<TenantKey> = pending.keys().cloned().collect();
        histories.insert(
            name.clone(),
            SourceHistory::load_for(&vault, name, &wanted).await?,
        );
    }
    let mut out = BTreeMap::new();
    for (tenant, sources) in pending {
        let one: BTreeSet<TenantKey> = [tenant.clone()].into();
        let mut verdict = LiveCheck::Matched;
        for (name, expected_before) in sources {
            let history = &histories[name];
            let (p1, p2) = (before[name], after[name]);
            let mut moved = false;
            history
                .for_each_transaction_of(&vault, p1, p2, &one, |_, tx| {
                    moved |= tx.changes.iter().any(|c| {
                        c.tenant.as_ref() == Some(tenant)
                            || matches!(c.op, Op::Truncate | Op::Alter)
                    });
                })
                .await?;
            let found = if moved {
                LiveCheck::Busy
            } else {
                let mut streams = history.streams_at(&vault, &one, p2).await?;
                let mut stream = streams.remove(tenant).unwrap_or_else(TenantStream::empty);
                let expected = expected_from_stream(&mut stream)?;
                let same_shape = expected.len() == expected_before.len()
                    && expected
                        .iter()
                        .zip(expected_before)
                        .all(|((a, (ca, _)), (b, (cb, _)))| a == b && ca == cb);
                let found = check(&expected, &read[&(tenant.clone(), name.clone())]);
                if !same_shape {
                    // The tables' columns changed since the read's columns were chosen.
                    LiveCheck::Busy
                } else if found.matches() {
                    LiveCheck::Matched
                } else {
                    LiveCheck::Differs(format!(
                        "{name}: the live rows differ from the vault at {}: {}",
                        Position::new(p2).describe(live[name].dialect()),
                        describe(found.differences(), "live")
                    ))
                }
            };
            verdict = verdict.max(found);
        }
        out.insert(tenant.clone(), verdict);
    }
    Ok(out)
}

/// `--every`: `90s`, `30m`, `24h`, `7d` (at least one second).
pub fn parse_every(text: &str) -> Result<Duration> {
    let bad = || {
        Error::usage(format!(
            "--every {text:?}: expected a number and s, m, h or d, for example 24h"
        ))
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let value: u64 = text[..split].parse().map_err(|_| bad())?;
    let unit = match &text[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = value.checked_mul(unit).ok_or_else(bad)?;
    if seconds == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(seconds))
}

/// The wait before the next run: `every` and up to a twentieth more, so that drills of
/// several machines started together spread out.
pub fn next_wait(every: Duration) -> Duration {
    let extra = every.as_millis() as u64 / 20;
    every + Duration::from_millis(fastrand::u64(0..=extra))
}

/// A seed for a run not given `--seed`.
/// Below 2^53, so that every JSON reader (JavaScript's numbers, the audit entry read back)
/// keeps its digits.
pub fn random_seed() -> u64 {
    fastrand::u64(..1 << 53)
}

/// A run's audit details: the report with its times in whole milliseconds, since audit
/// entries hold integers only (docs/guard.md).
fn audit_details(report: &Report) -> serde_json::Value {
    let ms = |seconds: f64| (seconds * 1000.0).round() as u64;
    let tenants: Vec<serde_json::Value> = report
        .tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": t.tenant,
                "result": t.result.as_str(),
                "recovery_ms": ms(t.recovery_seconds),
                "rows": t.rows,
                "sources": t.sources,
                "reason": t.reason,
                "live_rounds": t.live_rounds,
            })
        })
        .collect();
    json!({
        "run": report.run,
        "seed": report.seed,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "ms": ms(report.seconds),
        "positions": report.positions,
        "sample": report.sample,
        "tenants": tenants,
        "passed": report.passed,
        "busy": report.busy,
        "failed": report.failed,
        "ok": report.ok,
    })
}

/// A run that failed outright (no report): why, for the audit log and the alert.
pub fn failed_run(run: &str, seed: u64, error: &Error) -> serde_json::Value {
    json!({"run": run, "seed": seed, "ok": false, "error": error.to_string()})
}

/// Record a run: its audit entry and, when it failed, an alert to the operator webhooks
/// (idempotency key `drill:RUN`), in one transaction of the control store; the drill's
/// metrics. `outcome`: the report, or the error that ended the run.
pub async fn record(
    config: &Config,
    config_path: &Option<std::path::PathBuf>,
    by: &str,
    run: &str,
    seed: u64,
    outcome: std::result::Result<&Report, &Error>,
) -> Result<()> {
    let metrics = Metrics::global();
    let (ok, details) = match outcome {
        Ok(report) => {
            for t in &report.tenants {
                metrics.drill_tenant(t.result.as_str(), t.recovery_seconds);
            }
            (report.ok, audit_details(report))
        }
        Err(e) => (false, failed_run(run, seed, e)),
    };
    metrics.drill_run(ok, lifeboat_core::time::now_us());
    let mut notices = Vec::new();
    if !ok {
        let summary = match outcome {
            Ok(report) => report
                .tenants
                .iter()
                .filter(|t| t.result == Verdict::Failed)
                .map(|t| {
                    format!(
                        "tenant {}: {}",
                        t.tenant,
                        t.reason.as_deref().unwrap_or("failed")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("the drill could not finish: {e}"),
        };
        let failed: Vec<serde_json::Value> = match outcome {
            Ok(report) => report
                .tenants
                .iter()
                .filter(|t| t.result == Verdict::Failed)
                .map(|t| json!({"tenant": t.tenant, "reason": t.reason}))
                .collect(),
            Err(_) => Vec::new(),
        };
        let body = json!({"drill": {
            "run": run,
            "seed": seed,
            "summary": summary,
            "failed": failed,
            "positions": outcome.ok().map(|r| json!(r.positions)),
            "finished_at": lifeboat_core::time::format_us(lifeboat_core::time::now_us()),
        }});
        notices.push(Notice {
            key: format!("drill:{run}"),
            event: NoticeEvent::DrillFailed,
            to: Recipient::Operators,
            body: body.clone(),
        });
        notices.extend(Notice::to_operator_emails(
            &format!("drill:{run}"),
            NoticeEvent::DrillFailed,
            &config.notify.operator_emails,
            &body,
        ));
    }
    let mut control = crate::guard::control::control_store(config, config_path).await?;
    control.append_with_notices(
        Entry::new(by, "drill", &format!("drill:{run}"), details),
        &notices,
    )?;
    control.anchor().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).expect("config")
    }

    #[test]
    fn every_takes_seconds_to_days() {
        assert_eq!(parse_every("2s").expect("2s"), Duration::from_secs(2));
        assert_eq!(
            parse_every("24h").expect("24h"),
            Duration::from_secs(86_400)
        );
        assert_eq!(parse_every("7d").expect("7d"), Duration::from_secs(604_800));
        for bad in ["", "0s", "24", "h", "1.5h", "3w", "-1s"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
        let wait = next_wait(Duration::from_secs(20));
        assert!(wait >= Duration::from_secs(20) && wait <= Duration::from_secs(21));
    }

    #[tokio::test]
    async fn a_scratch_url_is_refused_when_it_is_a_source_database() {
        let c = config(
            r#"
[vault]
url = "file:///tmp/v"
[sources.app]
url = "postgres://u@db.example:5432/app"
tenant_column = "t"
[sources.ids]
url = "sqlite:///tmp/ids.db"
tenant_column = "t"
"#,
        );
        let args = |into: &[&str], sources: &[&str]| Args {
            sample: 2,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            into: into.iter().map(|s| s.to_string()).collect(),
        };
        async fn refused_by(c: &Config, a: Args) -> String {
            plan(c, &a).await.expect_err("refused").to_string()
        }
        let refused = |a: Args| refused_by(&c, a);
        let e = refused(args(
            &["app=postgres://other@DB.example/app?sslmode=disable"],
            &[],
        ))
        .await;
        assert!(e.contains("is the database of source app"), "{e}");
        let e = refused(args(&["postgres://u@db.example:5432/scratch"], &[])).await;
        assert!(e.contains("serves one source"), "{e}");
        let e = refused(args(&["ids=sqlite:///tmp/../tmp/ids.db"], &[])).await;
        assert!(e.contains("is the database of source ids"), "{e}");
        let e = refused(args(&["ids=postgres://u@db.example/scratch"], &[])).await;
        assert!(e.contains("same kind"), "{e}");
        let e = refused(args(
            &["app=postgres://u@db.example/scratch"],
            &["app", "ids"],
        ))
        .await;
        assert!(e.contains("source ids has no scratch database"), "{e}");
        let ok = plan(&c, &args(&["postgres://u@db.example:5433/app"], &["app"]))
            .await
            .expect("another port is another database");
        assert_eq!(ok.scratch["app"], "postgres://u@db.example:5433/app");
        let ok = plan(
            &c,
            &args(
                &[
                    "app=postgres://u@db.example/scratch",
                    "ids=sqlite:///tmp/scratch.db",
                ],
                &[],
            ),
        )
        .await
        .expect("one scratch database per source");
        assert_eq!(ok.scratch.len(), 2);
    }
}
