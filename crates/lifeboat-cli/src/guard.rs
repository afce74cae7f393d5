//! Guarded operations (docs/guard.md): `plan`, `approve`, `apply`, `halt`, `undo` and
//! `audit`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use lifeboat_control::{ApplyStatus, ControlStore};
use lifeboat_core::config::{split_table, Config};
use lifeboat_core::model::{TenantKey, Value};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::Target;
use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::{bind_array, id_value, Effect, IdRow};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use crate::context::{load_config, open_vault, print_json, thousands};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The operation, as declared in `[operations.NAME]`.
    operation: String,
    /// The IDs, comma separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "ids_from")]
    ids: Vec<String>,
    /// A file of IDs, one per line.
    #[arg(long, value_name = "FILE")]
    ids_from: Option<PathBuf>,
    /// The plan's author (default: the login name).
    #[arg(long)]
    by: Option<String>,
    /// Where to write the plan.
    #[arg(short = 'o', long = "output", default_value = "plan.json")]
    output: PathBuf,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    plan: PathBuf,
    /// Who approves (default: the login name).
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    plan: PathBuf,
    /// Wave sizes, cumulative: counts or percentages of the plan's tenants.
    #[arg(long, default_value = "1,5%,25%,100%")]
    waves: String,
    /// Who applies (default: the login name).
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct PlanRefArgs {
    plan: PathBuf,
    #[arg(long)]
    by: Option<String>,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// `verify`: check the chain instead of listing it.
    #[arg(value_parser = ["verify"])]
    action: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(crate) fn login(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The control store: `[control] url`, or `lifeboat-control.db` beside the configuration;
/// its audit log anchored in the vault.
pub(crate) async fn control_store(
    config: &Config,
    config_path: &Option<PathBuf>,
) -> Result<Control> {
    Ok(Control {
        store: ControlStore::open(&crate::context::control_url(config, config_path)?)?,
        vault: open_vault(config).await?,
    })
}

/// The control store, with every audit entry also anchored in the vault (its sequence and
/// hash as an object name), so that a control store rewritten wholesale, chain and all,
/// no longer matches the anchors.
pub(crate) struct Control {
    store: ControlStore,
    vault: lifeboat_core::vault::Vault,
}

impl std::ops::Deref for Control {
    type Target = ControlStore;
    fn deref(&self) -> &ControlStore {
        &self.store
    }
}

impl std::ops::DerefMut for Control {
    fn deref_mut(&mut self) -> &mut ControlStore {
        &mut self.store
    }
}

impl Control {
    /// Append to the audit log, then anchor the entry in the vault.
    pub(crate) async fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: Json,
    ) -> Result<()> {
        let entry = self.store.append(actor, action, subject, details)?;
        self.vault.put_audit_anchor(entry.seq, &entry.hash).await
    }

    /// The chain's own problems, and every anchor the log no longer matches.
    pub(crate) async fn verify(&mut self) -> Result<Vec<String>> {
        let mut problems = self.store.verify()?;
        let hashes: BTreeMap<u64, String> = self
            .store
            .entries()?
            .into_iter()
            .map(|e| (e.seq, e.hash))
            .collect();
        for (seq, hash) in self.vault.list_audit_anchors().await? {
            match hashes.get(&seq) {
                Some(h) if *h == hash => {}
                Some(_) => problems.push(format!(
                    "entry {seq}: differs from its anchor in the vault (the log was rewritten)"
                )),
                None => problems.push(format!(
                    "entry {seq}: anchored in the vault but missing from the log (removed)"
                )),
            }
        }
        Ok(problems)
    }
}

/// A plan file, read and checked against its hash.
struct Plan {
    json: Json,
    hash: String,
}

impl Plan {
    fn read(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read plan {}: {e}", path.display())))?;
        let mut json: Json = serde_json::from_str(&text)
            .map_err(|e| Error::usage(format!("plan {} is not JSON: {e}", path.display())))?;
        if json.get("format").and_then(Json::as_str) != Some("lifeboat-plan") {
            return Err(Error::usage(format!(
                "{} is not a Lifeboat plan",
                path.display()
            )));
        }
        let stated = json
            .as_object_mut()
            .and_then(|o| o.remove("hash"))
            .and_then(|h| h.as_str().map(str::to_string))
            .unwrap_or_default();
        let hash = sha256_hex(json.to_string().as_bytes());
        if hash != stated {
            return Err(Error::usage(format!(
                "plan {} was altered after it was made (its content does not match its hash); \
                 make a new plan",
                path.display()
            )));
        }
        Ok(Plan { json, hash })
    }

    fn str(&self, key: &str) -> &str {
        self.json.get(key).and_then(Json::as_str).unwrap_or("")
    }

    fn short(&self) -> &str {
        &self.hash[..12]
    }

    fn purpose(&self) -> Purpose {
        match self.str("purpose") {
            "tenant-delete" => Purpose::TenantDelete,
            _ => Purpose::Operation,
        }
    }

    /// tenant -> "source.table" -> rows.
    fn effect(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        if let Some(tenants) = self.json.get("tenants").and_then(Json::as_object) {
            for (tenant, entry) in tenants {
                let tables = entry
                    .get("tables")
                    .and_then(Json::as_object)
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                            .filter(|(_, v)| *v > 0)
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(tenant.clone(), tables);
            }
        }
        out
    }

    /// The plan's IDs with their tenants, as (id, tenant).
    fn ids(&self) -> Vec<(Json, String)> {
        self.json
            .get("ids")
            .and_then(Json::as_array)
            .map(|ids| {
                ids.iter()
                    .map(|i| {
                        (
                            i.get("value").cloned().unwrap_or(Json::Null),
                            i.get("tenant")
                                .and_then(Json::as_str)
                                .unwrap_or("")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Int(i) => json!(i),
        other => json!(other.to_string()),
    }
}

fn json_to_value(json: &Json) -> Value {
    match json {
        Json::Number(n) => n.as_i64().map(Value::Int).unwrap_or(Value::Null),
        Json::String(s) => Value::Text(s.clone()),
        _ => Value::Null,
    }
}

/// Open each named source once.
pub(crate) async fn open_named(
    config: &Config,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, LiveSource>> {
    let mut out = BTreeMap::new();
    for name in names {
        out.insert(
            name.clone(),
            LiveSource::open(name, config.source(name)?, false).await?,
        );
    }
    Ok(out)
}

/// Run `steps` (source, SQL) with the IDs bound, one transaction per source, and merge the
/// effects as tenant -> "source.table" -> rows. `decide` gets each source's effect.
async fn run_operation(
    sources: &mut BTreeMap<String, LiveSource>,
    steps: &[(String, String)],
    param: &str,
    ids: &[Value],
    mut decide: impl FnMut(&str, &Effect) -> bool,
) -> Result<(BTreeMap<String, BTreeMap<String, u64>>, bool)> {
    let mut order: Vec<String> = Vec::new();
    for (source, _) in steps {
        if !order.contains(source) {
            order.push(source.clone());
        }
    }
    let mut merged: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut all_committed = true;
    for name in order {
        let source = sources
            .get_mut(&name)
            .ok_or_else(|| Error::config(format!("unknown source {name}")))?;
        let postgres = source.is_postgres();
        let sql: Vec<String> = steps
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, sql)| bind_array(sql, param, ids, postgres))
            .collect();
        let (effect, committed) = source.run_steps(&sql, |e| decide(&name, e)).await?;
        all_committed &= committed;
        for (tenant, tables) in effect {
            let entry = merged.entry(tenant).or_default();
            for (table, n) in tables {
                *entry.entry(format!("{name}.{table}")).or_default() += n;
            }
        }
    }
    Ok((merged, all_committed))
}

fn effect_of(merged: &BTreeMap<String, BTreeMap<String, u64>>, source: &str) -> Effect {
    let prefix = format!("{source}.");
    let mut out = Effect::new();
    for (tenant, tables) in merged {
        for (table, n) in tables {
            if let Some(t) = table.strip_prefix(&prefix) {
                out.entry(tenant.clone())
                    .or_default()
                    .insert(t.to_string(), *n);
            }
        }
    }
    out.retain(|_, t| !t.is_empty());
    out
}

/// The first differences between two effects, for people.
fn effect_differences(
    want: &BTreeMap<String, BTreeMap<String, u64>>,
    got: &BTreeMap<String, BTreeMap<String, u64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let tenants: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for tenant in tenants {
        let empty = BTreeMap::new();
        let w = want.get(tenant).unwrap_or(&empty);
        let g = got.get(tenant).unwrap_or(&empty);
        let tables: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
        for table in tables {
            let (a, b) = (
                w.get(table).copied().unwrap_or(0),
                g.get(table).copied().unwrap_or(0),
            );
            if a != b {
                let who = if tenant.is_empty() {
                    "rows of no tenant".to_string()
                } else {
                    format!("tenant {tenant}")
                };
                out.push(format!("{who}, {table}: planned {a} rows, now {b}"));
            }
        }
    }
    out
}

pub async fn plan(config_path: Option<PathBuf>, args: PlanArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let operation = config.operation(&args.operation)?;
    let (param, kind_name) = operation
        .params
        .iter()
        .next()
        .ok_or_else(|| Error::config("the operation declares no parameter"))?;
    let kind = &config.kinds[kind_name];
    let mut given: Vec<String> = args.ids.iter().map(|s| s.trim().to_string()).collect();
    if let Some(file) = &args.ids_from {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
        given.extend(text.lines().map(str::trim).map(str::to_string));
    }
    given.retain(|s| !s.is_empty());
    let mut seen = BTreeSet::new();
    given.retain(|s| seen.insert(s.clone()));
    if given.is_empty() {
        return Err(Error::usage(format!(
            "no IDs given: pass --ids ID,ID… or --ids-from FILE ({kind_name} IDs)"
        )));
    }
    // Every source the operation reaches: the kinds', the steps', the declared effect's.
    let mut names: BTreeSet<String> = config.kinds.values().map(|k| k.source.clone()).collect();
    names.extend(operation.steps.iter().map(|s| s.source.clone()));
    let mut sources = open_named(&config, &names).await?;

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
        operation: args.operation.clone(),
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
        &config,
        &config_path,
        &mut sources,
        spec,
        check,
        login(args.by),
        &args.output,
    )
    .await
}

/// tenant -> "source.table" -> rows.
pub(crate) type Merged = BTreeMap<String, BTreeMap<String, u64>>;

/// What a plan is for: a declared operation, or the built-in soft delete of tenants
/// (`lifeboat tenant delete`), whose apply also marks the tenants deleted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Operation,
    TenantDelete,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Operation => "operation",
            Purpose::TenantDelete => "tenant-delete",
        }
    }
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
/// the measured effect (given totals per table, and per tenant), then write the plan file,
/// append it to the audit log and print a summary.
pub(crate) async fn make_plan(
    config: &Config,
    config_path: &Option<PathBuf>,
    sources: &mut BTreeMap<String, LiveSource>,
    spec: PlanSpec,
    check: impl FnOnce(&BTreeMap<String, u64>, &Merged) -> Result<()>,
    author: String,
    output: &Path,
) -> Result<u8> {
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
    let mut tenants: BTreeMap<String, Json> = BTreeMap::new();
    let mut tenant_keys: BTreeSet<String> =
        effect.keys().filter(|t| !t.is_empty()).cloned().collect();
    tenant_keys.extend(
        ids.iter()
            .filter_map(|r| r.tenant.as_ref().map(|t| t.to_string())),
    );
    let mut users_total = 0u64;
    for tenant in &tenant_keys {
        let tenant_ids: Vec<Json> = ids
            .iter()
            .filter(|r| r.tenant.as_ref().map(|t| t.as_str()) == Some(tenant.as_str()))
            .map(|r| value_to_json(&r.id))
            .collect();
        let tables = effect.get(tenant).cloned().unwrap_or_default();
        let mut entry = json!({"ids": tenant_ids, "tables": tables});
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
            entry["users"] = json!(n);
        }
        tenants.insert(tenant.clone(), entry);
    }
    let mut positions = BTreeMap::new();
    for (name, source) in sources.iter() {
        if spec.steps.iter().any(|(s, _)| s == name) {
            positions.insert(name.clone(), source.position().await?.to_string());
        }
    }
    let mut plan = json!({
        "format": "lifeboat-plan",
        "version": 1,
        "purpose": spec.purpose.as_str(),
        "operation": spec.operation,
        "author": author,
        "created": lifeboat_core::time::format_us(lifeboat_core::time::now_us()),
        "param": spec.param,
        "kind": spec.kind,
        "ids": ids.iter().map(|r| json!({
            "id": r.id.to_string(),
            "value": value_to_json(&r.id),
            "label": r.label,
            "tenant": r.tenant.as_ref().map(|t| t.to_string()),
        })).collect::<Vec<_>>(),
        "steps": spec.steps.iter().map(|(s, q)| json!({"source": s, "sql": q})).collect::<Vec<_>>(),
        "positions": positions,
        "tenants": tenants,
        "totals": totals,
        "users": users_total,
    });
    let hash = sha256_hex(plan.to_string().as_bytes());
    plan["hash"] = json!(hash);
    let text = serde_json::to_string_pretty(&plan)
        .map_err(|e| Error::source(format!("cannot write the plan: {e}")))?;
    std::fs::write(output, text + "\n")
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
    crate::say!(
        "plan {} for {} ({} {} IDs) by {author}: {} tenants, {} rows",
        &hash[..12],
        spec.operation,
        ids.len(),
        spec.kind,
        tenant_keys.len(),
        thousands(totals.values().sum())
    );
    for (table, n) in &totals {
        crate::say!("  {table:<40} {:>10} rows", thousands(*n));
    }
    if config.guard.users.is_some() {
        crate::say!("  users affected: {}", thousands(users_total));
    }
    crate::say!(
        "written to {}; it needs {} approval(s): lifeboat approve {}",
        output.display(),
        config.guard.approvals_required,
        output.display()
    );
    Ok(0)
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

pub async fn approve(config_path: Option<PathBuf>, args: ApproveArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let plan = Plan::read(&args.plan)?;
    let by = login(args.by);
    if by == plan.str("author") {
        return Err(Error::usage(format!(
            "{by} wrote plan {}: its author cannot approve it",
            plan.short()
        )));
    }
    let mut control = control_store(&config, &config_path).await?;
    let new = control.approve(&plan.hash, &by)?;
    if new {
        control
            .append(
                &by,
                "approve",
                &plan.hash,
                json!({"operation": plan.str("operation")}),
            )
            .await?;
    }
    let count = control.approvals(&plan.hash)?.len();
    crate::say!(
        "{} plan {} ({}): {count} of {} approvals",
        if new {
            "approved"
        } else {
            "already approved by you:"
        },
        plan.short(),
        plan.str("operation"),
        config.guard.approvals_required
    );
    Ok(0)
}

/// Cumulative wave sizes over `total` tenants: `1,5%,25%,100%`.
fn wave_targets(spec: &str, total: usize) -> Result<Vec<usize>> {
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

pub async fn apply(config_path: Option<PathBuf>, args: ApplyArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let plan = Plan::read(&args.plan)?;
    let by = login(args.by);
    let mut control = control_store(&config, &config_path).await?;
    let approvals = control.approvals(&plan.hash)?;
    let required = config.guard.approvals_required as usize;
    if approvals.len() < required {
        return Err(Error::usage(format!(
            "plan {} has {} of the {required} approvals it needs",
            plan.short(),
            approvals.len()
        )));
    }
    let state = control.apply_state(&plan.hash)?;
    if let Some(s) = &state {
        if matches!(s.state, ApplyStatus::Done | ApplyStatus::Undone) {
            return Err(Error::usage(format!(
                "plan {} was applied already ({})",
                plan.short(),
                s.state
            )));
        }
    }
    let param = plan.str("param").to_string();
    let steps: Vec<(String, String)> = plan
        .json
        .get("steps")
        .and_then(Json::as_array)
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["source"].as_str().unwrap_or("").to_string(),
                        s["sql"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let names: BTreeSet<String> = steps.iter().map(|(s, _)| s.clone()).collect();
    let mut sources = open_named(&config, &names).await?;
    let planned = plan.effect();
    let ids = plan.ids();
    let applied = control.applied(&plan.hash)?;
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
            .map(|(v, _)| json_to_value(v))
            .collect()
    };
    let planned_for = |wave: &[&String]| -> BTreeMap<String, BTreeMap<String, u64>> {
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
    let now: BTreeMap<_, _> = now.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let differences = effect_differences(&planned_for(&remaining), &now);
    if !differences.is_empty() {
        return Err(Error::usage(format!(
            "plan {} is stale: the sources changed what it measured; make a new plan\n  {}",
            plan.short(),
            differences.join("\n  ")
        )));
    }

    // The restore point: capture caught up, then the vault's position of each source.
    let restore_point = match &state {
        Some(s) => s.restore_point.clone(),
        None => {
            let point = catch_up(&config, &names).await?;
            control
                .append(
                    &by,
                    "restore-point",
                    &plan.hash,
                    json!({"positions": point}),
                )
                .await?;
            point
        }
    };
    control.clear_halt(&plan.hash)?;
    control.set_apply(&plan.hash, ApplyStatus::Running, &restore_point)?;
    control.append(
        &by,
        "apply",
        &plan.hash,
        json!({"operation": plan.str("operation"), "tenants": remaining.len(), "waves": args.waves}),
    ).await?;
    let targets = wave_targets(&args.waves, tenants.len())?;
    let halt_file = PathBuf::from(format!("{}.halt", args.plan.display()));
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
        let halted_by = control.halted_by(&plan.hash)?.or_else(|| {
            halt_file
                .exists()
                .then(|| format!("the file {}", halt_file.display()))
        });
        if let Some(who) = halted_by {
            control.set_apply(&plan.hash, ApplyStatus::Halted, &restore_point)?;
            control
                .append(
                    &by,
                    "halted",
                    &plan.hash,
                    json!({"before_wave": wave_number, "by": who}),
                )
                .await?;
            eprintln!(
                "halted by {who} before wave {wave_number}; `lifeboat apply {}` continues, \
                 `lifeboat undo {}` reverts",
                args.plan.display(),
                args.plan.display()
            );
            return Ok(EXIT_PROBLEM);
        }
        let expected = planned_for(&wave);
        // Where each source stands just before the wave: what undo restores its tenants
        // to, so that nothing they wrote before their wave is lost.
        let mut point = BTreeMap::new();
        for (name, source) in &sources {
            point.insert(name.clone(), source.position().await?);
        }
        let (got, committed) = run_operation(
            &mut sources,
            &steps,
            &param,
            &ids_of(&wave),
            |source, effect| effect_of(&expected, source) == *effect,
        )
        .await?;
        let got: BTreeMap<_, _> = got.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if !committed || got != expected {
            let differences = effect_differences(&expected, &got);
            control.set_apply(&plan.hash, ApplyStatus::Diverged, &restore_point)?;
            control
                .append(
                    &by,
                    "diverged",
                    &plan.hash,
                    json!({"wave": wave_number, "differences": differences}),
                )
                .await?;
            eprintln!(
                "wave {wave_number} diverged from the plan; it was rolled back and the apply \
                 stopped:\n  {}",
                differences.join("\n  ")
            );
            return Ok(EXIT_PROBLEM);
        }
        let keys: Vec<String> = wave.iter().map(|t| t.to_string()).collect();
        let deletes = plan.purpose() == Purpose::TenantDelete;
        control.mark_applied(&plan.hash, &keys, wave_number, &point, deletes)?;
        let rows: u64 = got.values().flat_map(|t| t.values()).sum();
        control
            .append(
                &by,
                "wave",
                &plan.hash,
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
                        json!({"plan": plan.hash, "restorable_to": point}),
                    )
                    .await?;
            }
        }
        crate::say!(
            "wave {wave_number}: {} tenants, {} rows ({end} of {} tenants done)",
            keys.len(),
            thousands(rows),
            tenants.len()
        );
        lifeboat_core::failpoint::pause("apply.after-wave");
    }
    control.set_apply(&plan.hash, ApplyStatus::Done, &restore_point)?;
    control
        .append(
            &by,
            "applied",
            &plan.hash,
            json!({"tenants": tenants.len()}),
        )
        .await?;
    crate::say!(
        "applied plan {} to {} tenants; `lifeboat undo {}` reverts it",
        plan.short(),
        tenants.len(),
        args.plan.display()
    );
    Ok(0)
}

pub async fn halt(config_path: Option<PathBuf>, args: PlanRefArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let plan = Plan::read(&args.plan)?;
    let by = login(args.by);
    let mut control = control_store(&config, &config_path).await?;
    control.halt(&plan.hash, &by)?;
    control.append(&by, "halt", &plan.hash, json!({})).await?;
    crate::say!("plan {} will stop before its next wave", plan.short());
    Ok(0)
}

pub async fn undo(config_path: Option<PathBuf>, args: PlanRefArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let plan = Plan::read(&args.plan)?;
    let by = login(args.by);
    let mut control = control_store(&config, &config_path).await?;
    let Some(state) = control.apply_state(&plan.hash)? else {
        return Err(Error::usage(format!(
            "plan {} was never applied: nothing to undo",
            plan.short()
        )));
    };
    if state.state == ApplyStatus::Undone {
        return Err(Error::usage(format!(
            "plan {} was undone already",
            plan.short()
        )));
    }
    let applied = control.applied(&plan.hash)?;
    if applied.is_empty() {
        return Err(Error::usage(format!(
            "plan {} changed no tenant: nothing to undo",
            plan.short()
        )));
    }
    if plan.purpose() == Purpose::TenantDelete {
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
                plan.short()
            )));
        }
        drop(control);
        let code = crate::lifecycle::undelete(config_path.clone(), still, Some(by.clone())).await?;
        if code == 0 {
            let mut control = control_store(&config, &config_path).await?;
            control.set_apply(&plan.hash, ApplyStatus::Undone, &state.restore_point)?;
            control
                .append(&by, "undo", &plan.hash, json!({"undeleted": true}))
                .await?;
        }
        return Ok(code);
    }
    let mut by_point: BTreeMap<&BTreeMap<String, u64>, Vec<String>> = BTreeMap::new();
    for (tenant, a) in &applied {
        by_point.entry(&a.point).or_default().push(tenant.clone());
    }
    let (rows, failures) = restore_to_points(&config, &by_point).await?;
    let tenants: Vec<&String> = applied.keys().collect();
    control
        .append(
            &by,
            "undo",
            &plan.hash,
            json!({"tenants": tenants, "rows": rows, "failures": failures}),
        )
        .await?;
    if failures > 0 {
        eprintln!("undo: {failures} tenant restores failed or differ from the vault");
        return Ok(EXIT_PROBLEM);
    }
    control.set_apply(&plan.hash, ApplyStatus::Undone, &state.restore_point)?;
    crate::say!(
        "undid plan {}: {} tenants restored to just before their wave ({} rows), every one \
         verified",
        plan.short(),
        tenants.len(),
        thousands(rows)
    );
    Ok(0)
}

/// Catch capture up on `names` and return the vault's latest position of each: a point
/// every tenant can be restored to.
pub(crate) async fn catch_up(
    config: &Config,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, u64>> {
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
pub(crate) async fn restore_to_points(
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
        let point: BTreeMap<String, u64> = point
            .iter()
            .map(|(source, p)| {
                let p = latest.get(source).map_or(*p, |l| (*p).min(*l));
                (source.clone(), p)
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
            quiet: true,
        };
        let summary = crate::restore::execute(config, &request).await?;
        rows += summary.rows_written();
        failures += summary.failures();
    }
    Ok((rows, failures))
}

pub async fn audit(config_path: Option<PathBuf>, args: AuditArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let mut control = control_store(&config, &config_path).await?;
    if args.action.as_deref() == Some("verify") {
        let problems = control.verify().await?;
        let entries = control.entries()?.len();
        if args.json {
            print_json(
                &json!({"entries": entries, "ok": problems.is_empty(), "problems": problems}),
            );
        } else if problems.is_empty() {
            crate::say!("audit log intact: {entries} entries, every hash and link checks");
        } else {
            for p in &problems {
                crate::say!("TAMPERED {p}");
            }
        }
        return Ok(if problems.is_empty() { 0 } else { EXIT_PROBLEM });
    }
    let entries = control.entries()?;
    if args.json {
        print_json(&json!(entries));
        return Ok(0);
    }
    for e in &entries {
        let subject = if e.subject.len() > 12 {
            &e.subject[..12]
        } else {
            &e.subject
        };
        crate::say!(
            "{:>5}  {}  {:<12} {:<14} {}  {}",
            e.seq,
            e.at,
            e.actor,
            e.action,
            subject,
            e.details
        );
    }
    Ok(0)
}
