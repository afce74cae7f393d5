//! The guard engine (docs/guard.md): plan, approve, apply in waves, halt, undo, and the
//! audit log.
//!
//! - `plan` resolves typed IDs, measures the operation in transactions that are rolled
//!   back, checks the measured effect against the declared one and writes the plan file
//!   (`plan.rs`).
//! - `apply` checks approvals and staleness, records the restore point, then runs waves,
//!   each committed only when its measured effect equals the plan's for its tenants.
//! - `undo` restores every tenant an apply touched to the point just before its wave.

pub mod control;
pub mod operation;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use lifeboat_control::{ApplyStatus, AuditEntry};
use lifeboat_core::config::{split_table, Config};
use lifeboat_core::model::{Position, TenantKey, Value};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::Target;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::{id_value, IdRow};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use crate::context::open_vault;
use crate::progress::{silent, Event, Progress};
pub use control::{control_store, login, Control};
use operation::{effect_differences, effect_of, open_named, run_operation};
use plan::{IdValue, PlanId, PlanStep, PlanTenant, FORMAT, VERSION};
pub use plan::{Merged, Plan, PlanFile, Purpose};

/// A plan as written: what the binary tells the author.
#[derive(Debug, Clone)]
pub struct Planned {
    pub hash: String,
    pub operation: String,
    pub kind: String,
    pub ids: usize,
    pub tenants: usize,
    /// "source.table" -> rows.
    pub totals: BTreeMap<String, u64>,
    /// Users affected, when `[guard] users` is configured.
    pub users: Option<u64>,
    pub author: String,
    pub output: PathBuf,
    pub approvals_required: u32,
}

/// Plan the declared operation `operation` for the IDs `given` (as typed; trimmed, blank
/// and repeated ones dropped): resolve them against their kind, measure, check the
/// effect against the declaration, write the plan to `output` and audit it.
pub async fn plan(
    config: &Config,
    config_path: &Option<PathBuf>,
    operation_name: &str,
    given: Vec<String>,
    by: Option<String>,
    output: &Path,
) -> Result<Planned> {
    let operation = config.operation(operation_name)?;
    let (param, kind_name) = operation
        .params
        .iter()
        .next()
        .ok_or_else(|| Error::config("the operation declares no parameter"))?;
    let kind = &config.kinds[kind_name];
    let given = dedup(given);
    if given.is_empty() {
        return Err(Error::usage(format!(
            "no IDs given: pass --ids ID,ID… or --ids-from FILE ({kind_name} IDs)"
        )));
    }
    // Every source the operation reaches: the kinds', the steps', the declared effect's.
    let mut names: BTreeSet<String> = config.kinds.values().map(|k| k.source.clone()).collect();
    names.extend(operation.steps.iter().map(|s| s.source.clone()));
    let mut sources = open_named(config, &names).await?;

    // Resolve the IDs against their kind; explain the ones that are not.
    let values: Vec<Value> = given.iter().map(|s| id_value(s)).collect();
    let kind_source = &sources[&kind.source];
    let found = kind_source
        .lookup_ids(&kind.table, &kind.column, kind.label.as_deref(), &values)
        .await?;
    let by_text: BTreeMap<String, &IdRow> = found.iter().map(|r| (r.id.to_string(), r)).collect();
    let missing: Vec<&String> = given.iter().filter(|g| !by_text.contains_key(*g)).collect();
    if !missing.is_empty() {
        let mut reasons = Vec::new();
        for id in missing {
            let mut reason = format!(
                "{id} is not {} {kind_name}: no row of {}.{} has {} = {id}",
                article(kind_name),
                kind.source,
                kind.table,
                kind.column
            );
            for (other_name, other) in &config.kinds {
                if other_name == kind_name {
                    continue;
                }
                let rows = sources[&other.source]
                    .lookup_ids(
                        &other.table,
                        &other.column,
                        other.label.as_deref(),
                        &[id_value(id)],
                    )
                    .await?;
                if let Some(row) = rows.first() {
                    let label = row
                        .label
                        .as_deref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default();
                    reason = format!(
                        "{id} is not {} {kind_name}: it is {} {other_name}{label}",
                        article(kind_name),
                        article(other_name)
                    );
                    break;
                }
            }
            reasons.push(reason);
        }
        return Err(Error::usage(reasons.join("\n")));
    }
    let ids: Vec<IdRow> = given.iter().map(|g| by_text[g].clone()).collect();
    let steps: Vec<(String, String)> = operation
        .steps
        .iter()
        .map(|s| (s.source.clone(), s.sql.clone()))
        .collect();
    let spec = PlanSpec {
        operation: operation_name.to_string(),
        purpose: Purpose::Operation,
        param: param.clone(),
        kind: kind_name.clone(),
        ids,
        steps,
    };
    let count = spec.ids.len() as u64;
    let check = |totals: &BTreeMap<String, u64>, _: &Merged| -> Result<()> {
        if let Some((table, n)) = totals
            .iter()
            .find(|(t, _)| !operation.effect.contains_key(*t))
        {
            return Err(Error::usage(format!(
                "refused: the operation touches {n} rows of {table}, which its declared \
                 effect does not include (it may touch only: {})",
                operation
                    .effect
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (table, n) in totals {
            let Some(limit) = operation.effect.get(table) else {
                continue;
            };
            if let Some(per_id) = limit.max_rows_per_id {
                let most = per_id * count;
                if *n > most {
                    return Err(Error::usage(format!(
                        "refused: the operation touches {n} rows of {table} for {count} IDs; \
                         its declared effect allows at most {per_id} per ID ({most})"
                    )));
                }
            }
            if let Some(most) = limit.max_rows {
                if *n > most {
                    return Err(Error::usage(format!(
                        "refused: the operation touches {n} rows of {table}; its declared \
                         effect allows at most {most}"
                    )));
                }
            }
        }
        Ok(())
    };
    make_plan(
        config,
        config_path,
        &mut sources,
        spec,
        check,
        login(by),
        output,
    )
    .await
}

/// Trimmed, without blanks and repeats, in the order given.
pub fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && seen.insert(t.clone()))
        .collect()
}

/// A plan's inputs once its IDs are resolved.
pub(crate) struct PlanSpec {
    pub operation: String,
    pub purpose: Purpose,
    pub param: String,
    pub kind: String,
    pub ids: Vec<IdRow>,
    pub steps: Vec<(String, String)>,
}

/// Measure `spec` (its steps run in transactions that are rolled back), let `check` refuse
/// the measured effect (given totals per table, and per tenant), then write the plan file
/// and append it to the audit log.
pub(crate) async fn make_plan(
    config: &Config,
    config_path: &Option<PathBuf>,
    sources: &mut BTreeMap<String, LiveSource>,
    spec: PlanSpec,
    check: impl FnOnce(&BTreeMap<String, u64>, &Merged) -> Result<()>,
    author: String,
    output: &Path,
) -> Result<Planned> {
    let bound: Vec<Value> = spec.ids.iter().map(|r| r.id.clone()).collect();
    let (effect, _) =
        run_operation(sources, &spec.steps, &spec.param, &bound, |_, _| false).await?;
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for tables in effect.values() {
        for (table, n) in tables {
            *totals.entry(table.clone()).or_default() += n;
        }
    }
    check(&totals, &effect)?;

    // Tenants: of the IDs and of every row touched.
    let ids = &spec.ids;
    let mut tenants: BTreeMap<String, PlanTenant> = BTreeMap::new();
    let mut tenant_keys: BTreeSet<String> =
        effect.keys().filter(|t| !t.is_empty()).cloned().collect();
    tenant_keys.extend(
        ids.iter()
            .filter_map(|r| r.tenant.as_ref().map(|t| t.to_string())),
    );
    let mut users_total = 0u64;
    for tenant in &tenant_keys {
        let tenant_ids: Vec<IdValue> = ids
            .iter()
            .filter(|r| r.tenant.as_ref().map(|t| t.as_str()) == Some(tenant.as_str()))
            .map(|r| IdValue::of(&r.id))
            .collect();
        let mut entry = PlanTenant {
            ids: tenant_ids,
            tables: effect.get(tenant).cloned().unwrap_or_default(),
            users: None,
        };
        if let Some(users) = &config.guard.users {
            let (source, table) = split_table(users)?;
            if !sources.contains_key(source) {
                let opened = LiveSource::open(source, config.source(source)?, false).await?;
                sources.insert(source.to_string(), opened);
            }
            let n = sources[source]
                .count_tenant_rows(&TenantKey::new(tenant.clone()), table)
                .await?;
            users_total += n;
            entry.users = Some(n);
        }
        tenants.insert(tenant.clone(), entry);
    }
    let mut positions = BTreeMap::new();
    for (name, source) in sources.iter() {
        if spec.steps.iter().any(|(s, _)| s == name) {
            positions.insert(name.clone(), source.position().await?.get().to_string());
        }
    }
    let plan = Plan {
        format: FORMAT.to_string(),
        version: VERSION,
        purpose: spec.purpose,
        operation: spec.operation.clone(),
        author: author.clone(),
        created: lifeboat_core::time::format_us(lifeboat_core::time::now_us()),
        param: spec.param.clone(),
        kind: spec.kind.clone(),
        ids: ids
            .iter()
            .map(|r| PlanId {
                id: r.id.to_string(),
                value: IdValue::of(&r.id),
                label: r.label.clone(),
                tenant: r.tenant.as_ref().map(|t| t.to_string()),
            })
            .collect(),
        steps: spec
            .steps
            .iter()
            .map(|(source, sql)| PlanStep {
                source: source.clone(),
                sql: sql.clone(),
            })
            .collect(),
        positions,
        tenants,
        totals: totals.clone(),
        users: users_total,
    };
    let (text, hash) = plan.to_text()?;
    std::fs::write(output, text)
        .map_err(|e| Error::usage(format!("cannot write {}: {e}", output.display())))?;
    let mut control = control_store(config, config_path).await?;
    control
        .append(
            &author,
            "plan",
            &hash,
            json!({"operation": spec.operation, "ids": ids.len(), "tenants": tenant_keys.len(),
               "totals": totals, "file": output.display().to_string()}),
        )
        .await?;
    Ok(Planned {
        hash,
        operation: spec.operation,
        kind: spec.kind,
        ids: ids.len(),
        tenants: tenant_keys.len(),
        totals,
        users: config.guard.users.as_ref().map(|_| users_total),
        author,
        output: output.to_path_buf(),
        approvals_required: config.guard.approvals_required,
    })
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// An approval as recorded.
#[derive(Debug, Clone)]
pub struct Approved {
    /// False: this approver had approved already.
    pub new: bool,
    pub short: String,
    pub operation: String,
    pub approvals: usize,
    pub required: u32,
}

/// Approve the plan at `path` as `by` (never its author).
pub async fn approve(
    config: &Config,
    config_path: &Option<PathBuf>,
    path: &Path,
    by: Option<String>,
) -> Result<Approved> {
    let file = PlanFile::read(path)?;
    let by = login(by);
    if by == file.plan.author {
        return Err(Error::usage(format!(
            "{by} wrote plan {}: its author cannot approve it",
            file.short()
        )));
    }
    let mut control = control_store(config, config_path).await?;
    let new = control.approve(&file.hash, &by)?;
    if new {
        control
            .append(
                &by,
                "approve",
                &file.hash,
                json!({"operation": file.plan.operation}),
            )
            .await?;
    }
    let approvals = control.approvals(&file.hash)?.len();
    Ok(Approved {
        new,
        short: file.short().to_string(),
        operation: file.plan.operation.clone(),
        approvals,
        required: config.guard.approvals_required,
    })
}

/// Cumulative wave sizes over `total` tenants: `1,5%,25%,100%`.
pub fn wave_targets(spec: &str, total: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let n = if let Some(p) = part.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| Error::usage(format!("--waves: {part:?} is not a percentage")))?;
            ((p / 100.0) * total as f64).ceil() as usize
        } else {
            part.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::usage(format!("--waves: {part:?} is not a count")))?
        };
        let n = n.min(total);
        if out.last().is_none_or(|&last| n > last) {
            out.push(n);
        }
    }
    if out.last() != Some(&total) {
        out.push(total);
    }
    Ok(out)
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every wave committed.
    Done { short: String, tenants: usize },
    /// A halt (from `lifeboat halt`, or the file `who` names) stopped it before `wave`.
    Halted { wave: u32, by: String },
    /// `wave` measured differently from the plan: rolled back, and the apply stopped.
    Diverged { wave: u32, differences: Vec<String> },
}

/// Apply the approved plan at `path` in waves (`waves`: cumulative sizes); a file
/// `<path>.halt` halts it too. Wave events go to `progress`.
pub async fn apply(
    config: &Config,
    config_path: &Option<PathBuf>,
    path: &Path,
    waves: &str,
    by: Option<String>,
    progress: &dyn Progress,
) -> Result<Applied> {
    let file = PlanFile::read(path)?;
    let plan = &file.plan;
    let by = login(by);
    let mut control = control_store(config, config_path).await?;
    let approvals = control.approvals(&file.hash)?;
    let required = config.guard.approvals_required as usize;
    if approvals.len() < required {
        return Err(Error::usage(format!(
            "plan {} has {} of the {required} approvals it needs",
            file.short(),
            approvals.len()
        )));
    }
    let state = control.apply_state(&file.hash)?;
    if let Some(s) = &state {
        if matches!(s.state, ApplyStatus::Done | ApplyStatus::Undone) {
            return Err(Error::usage(format!(
                "plan {} was applied already ({})",
                file.short(),
                s.state
            )));
        }
    }
    let param = plan.param.clone();
    let steps: Vec<(String, String)> = plan
        .steps
        .iter()
        .map(|s| (s.source.clone(), s.sql.clone()))
        .collect();
    let names: BTreeSet<String> = steps.iter().map(|(s, _)| s.clone()).collect();
    let mut sources = open_named(config, &names).await?;
    let planned = plan.effect();
    let ids: Vec<(Value, String)> = plan
        .ids
        .iter()
        .map(|i| (i.value.to_value(), i.tenant.clone().unwrap_or_default()))
        .collect();
    let applied = control.applied(&file.hash)?;
    let tenants: Vec<String> = {
        let mut t: BTreeSet<String> = ids.iter().map(|(_, t)| t.clone()).collect();
        t.retain(|t| !t.is_empty());
        t.into_iter().collect()
    };
    let remaining: Vec<&String> = tenants
        .iter()
        .filter(|t| !applied.contains_key(*t))
        .collect();
    let ids_of = |wave: &[&String]| -> Vec<Value> {
        ids.iter()
            .filter(|(_, t)| wave.contains(&t))
            .map(|(v, _)| v.clone())
            .collect()
    };
    let planned_for = |wave: &[&String]| -> Merged {
        planned
            .iter()
            .filter(|(t, _)| wave.contains(t))
            .map(|(t, v)| (t.clone(), v.clone()))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    };

    // Stale? Measure what is left to do again.
    let (now, _) = run_operation(&mut sources, &steps, &param, &ids_of(&remaining), |_, _| {
        false
    })
    .await?;
    let now: Merged = now.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let differences = effect_differences(&planned_for(&remaining), &now);
    if !differences.is_empty() {
        return Err(Error::usage(format!(
            "plan {} is stale: the sources changed what it measured; make a new plan\n  {}",
            file.short(),
            differences.join("\n  ")
        )));
    }

    // The restore point: capture caught up, then the vault's position of each source.
    let restore_point = match &state {
        Some(s) => s.restore_point.clone(),
        None => {
            let point = catch_up(config, &names).await?;
            control
                .append(
                    &by,
                    "restore-point",
                    &file.hash,
                    json!({"positions": point}),
                )
                .await?;
            point
        }
    };
    control.clear_halt(&file.hash)?;
    control.set_apply(&file.hash, ApplyStatus::Running, &restore_point)?;
    control
        .append(
            &by,
            "apply",
            &file.hash,
            json!({"operation": plan.operation, "tenants": remaining.len(), "waves": waves}),
        )
        .await?;
    let targets = wave_targets(waves, tenants.len())?;
    let halt_file = PathBuf::from(format!("{}.halt", path.display()));
    let mut start = 0;
    for (number, &end) in targets.iter().enumerate() {
        let wave_number = number as u32 + 1;
        let wave: Vec<&String> = tenants[start..end]
            .iter()
            .filter(|t| !applied.contains_key(*t))
            .collect();
        start = end;
        if wave.is_empty() {
            continue;
        }
        let halted_by = control.halted_by(&file.hash)?.or_else(|| {
            halt_file
                .exists()
                .then(|| format!("the file {}", halt_file.display()))
        });
        if let Some(who) = halted_by {
            control.set_apply(&file.hash, ApplyStatus::Halted, &restore_point)?;
            control
                .append(
                    &by,
                    "halted",
                    &file.hash,
                    json!({"before_wave": wave_number, "by": who}),
                )
                .await?;
            return Ok(Applied::Halted {
                wave: wave_number,
                by: who,
            });
        }
        let expected = planned_for(&wave);
        // Where each source stands just before the wave: what undo restores its tenants
        // to, so that nothing they wrote before their wave is lost.
        let mut point = BTreeMap::new();
        for (name, source) in &sources {
            point.insert(name.clone(), source.position().await?.get());
        }
        let (got, committed) = run_operation(
            &mut sources,
            &steps,
            &param,
            &ids_of(&wave),
            |source, effect| effect_of(&expected, source) == *effect,
        )
        .await?;
        let got: Merged = got.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if !committed || got != expected {
            let differences = effect_differences(&expected, &got);
            control.set_apply(&file.hash, ApplyStatus::Diverged, &restore_point)?;
            control
                .append(
                    &by,
                    "diverged",
                    &file.hash,
                    json!({"wave": wave_number, "differences": differences}),
                )
                .await?;
            return Ok(Applied::Diverged {
                wave: wave_number,
                differences,
            });
        }
        let keys: Vec<String> = wave.iter().map(|t| t.to_string()).collect();
        let deletes = plan.purpose == Purpose::TenantDelete;
        control.mark_applied(&file.hash, &keys, wave_number, &point, deletes)?;
        let rows: u64 = got.values().flat_map(|t| t.values()).sum();
        control
            .append(
                &by,
                "wave",
                &file.hash,
                json!({"wave": wave_number, "tenants": keys, "rows": rows}),
            )
            .await?;
        if deletes {
            for key in &keys {
                control
                    .append(
                        &by,
                        "delete",
                        &format!("tenant:{key}"),
                        json!({"plan": file.hash, "restorable_to": point}),
                    )
                    .await?;
            }
        }
        progress.event(Event::Wave {
            number: wave_number,
            tenants: keys.len(),
            rows,
            done: end,
            total: tenants.len(),
        });
        lifeboat_core::failpoint::pause("apply.after-wave");
    }
    control.set_apply(&file.hash, ApplyStatus::Done, &restore_point)?;
    control
        .append(
            &by,
            "applied",
            &file.hash,
            json!({"tenants": tenants.len()}),
        )
        .await?;
    Ok(Applied::Done {
        short: file.short().to_string(),
        tenants: tenants.len(),
    })
}

/// Ask a running apply of the plan at `path` to stop before its next wave. Returns the
/// plan's short hash.
pub async fn halt(
    config: &Config,
    config_path: &Option<PathBuf>,
    path: &Path,
    by: Option<String>,
) -> Result<String> {
    let file = PlanFile::read(path)?;
    let by = login(by);
    let mut control = control_store(config, config_path).await?;
    control.halt(&file.hash, &by)?;
    control.append(&by, "halt", &file.hash, json!({})).await?;
    Ok(file.short().to_string())
}

/// What an undo did.
#[derive(Debug, Clone)]
pub struct Undone {
    pub short: String,
    pub tenants: usize,
    pub rows: u64,
    /// Tenant restores that failed or differ from the vault (then the undo is not done).
    pub failures: usize,
    /// A delete plan: its tenants were undeleted.
    pub undeleted: bool,
}

/// Restore every tenant the plan at `path` touched to just before its wave (a delete plan:
/// undelete its tenants).
pub async fn undo(
    config: &Config,
    config_path: &Option<PathBuf>,
    path: &Path,
    by: Option<String>,
) -> Result<Undone> {
    let file = PlanFile::read(path)?;
    let by = login(by);
    let mut control = control_store(config, config_path).await?;
    let Some(state) = control.apply_state(&file.hash)? else {
        return Err(Error::usage(format!(
            "plan {} was never applied: nothing to undo",
            file.short()
        )));
    };
    if state.state == ApplyStatus::Undone {
        return Err(Error::usage(format!(
            "plan {} was undone already",
            file.short()
        )));
    }
    let applied = control.applied(&file.hash)?;
    if applied.is_empty() {
        return Err(Error::usage(format!(
            "plan {} changed no tenant: nothing to undo",
            file.short()
        )));
    }
    if file.plan.purpose == Purpose::TenantDelete {
        // Undoing a delete is undeleting its tenants, with the same checks: not those
        // brought back already, never over rows written under the key since.
        let mut still = Vec::new();
        for tenant in applied.keys() {
            if control.deleted_tenant(tenant)?.is_some() {
                still.push(tenant.clone());
            }
        }
        if still.is_empty() {
            return Err(Error::usage(format!(
                "every tenant of plan {} was brought back already",
                file.short()
            )));
        }
        drop(control);
        let undeleted =
            crate::lifecycle::undelete(config, config_path, still, Some(by.clone())).await?;
        if undeleted.failures == 0 {
            let mut control = control_store(config, config_path).await?;
            control.set_apply(&file.hash, ApplyStatus::Undone, &state.restore_point)?;
            control
                .append(&by, "undo", &file.hash, json!({"undeleted": true}))
                .await?;
        }
        return Ok(Undone {
            short: file.short().to_string(),
            tenants: undeleted.tenants,
            rows: undeleted.rows,
            failures: undeleted.failures,
            undeleted: true,
        });
    }
    let mut by_point: BTreeMap<&BTreeMap<String, u64>, Vec<String>> = BTreeMap::new();
    for (tenant, a) in &applied {
        by_point.entry(&a.point).or_default().push(tenant.clone());
    }
    let (rows, failures) = restore_to_points(config, &by_point).await?;
    let tenants: Vec<&String> = applied.keys().collect();
    control
        .append(
            &by,
            "undo",
            &file.hash,
            json!({"tenants": tenants, "rows": rows, "failures": failures}),
        )
        .await?;
    if failures == 0 {
        control.set_apply(&file.hash, ApplyStatus::Undone, &state.restore_point)?;
    }
    Ok(Undone {
        short: file.short().to_string(),
        tenants: tenants.len(),
        rows,
        failures,
        undeleted: false,
    })
}

/// Catch capture up on `names` and return the vault's latest position of each: a point
/// every tenant can be restored to.
pub async fn catch_up(config: &Config, names: &BTreeSet<String>) -> Result<BTreeMap<String, u64>> {
    let vault = open_vault(config).await?;
    let mut point = BTreeMap::new();
    for name in names {
        let source = LiveSource::open(name, config.source(name)?, true).await?;
        source
            .capture(&vault, config.capture.clone(), true, &Stop::new())
            .await?;
        let history = SourceHistory::load(&vault, name).await?;
        let position = history
            .latest_position()
            .ok_or_else(|| Error::usage(format!("source {name} has no history in the vault")))?;
        point.insert(name.clone(), position);
    }
    Ok(point)
}

/// Restore groups of tenants, each to its point (source -> position), after catching
/// capture up so that the vault holds every point. Returns rows written and failures.
pub async fn restore_to_points(
    config: &Config,
    groups: &BTreeMap<&BTreeMap<String, u64>, Vec<String>>,
) -> Result<(u64, usize)> {
    let names: BTreeSet<String> = groups.keys().flat_map(|p| p.keys().cloned()).collect();
    let latest = catch_up(config, &names).await?;
    let (mut rows, mut failures) = (0, 0);
    for (point, tenants) in groups {
        // A point is a live position taken before a wave; with capture caught up, a point
        // past the vault's latest position (nothing committed since in that source) is
        // the same state as that latest position.
        let point: BTreeMap<String, Position> = point
            .iter()
            .map(|(source, p)| {
                let p = latest.get(source).map_or(*p, |l| (*p).min(*l));
                (source.clone(), p.into())
            })
            .collect();
        let request = crate::restore::Request {
            tenants: tenants.clone(),
            target: Target::Positions(point.clone()),
            sources: point.keys().cloned().collect(),
            as_key: None,
            into_url: None,
            dry_run: false,
            jobs: 4,
        };
        let summary = crate::restore::execute(config, &request, silent()).await?;
        rows += summary.rows_written();
        failures += summary.failures();
    }
    Ok((rows, failures))
}

/// The audit log, oldest first.
pub async fn audit_entries(
    config: &Config,
    config_path: &Option<PathBuf>,
) -> Result<Vec<AuditEntry>> {
    control_store(config, config_path).await?.entries()
}

/// `audit verify`: the number of entries and every problem found (chain and anchors).
pub async fn audit_verify(
    config: &Config,
    config_path: &Option<PathBuf>,
) -> Result<(usize, Vec<String>)> {
    let mut control = control_store(config, config_path).await?;
    let problems = control.verify().await?;
    Ok((control.entries()?.len(), problems))
}
