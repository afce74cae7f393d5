//! The guard engine (docs/guard.md): plan, approve, apply in waves, halt, undo, and the
//! audit log.
//!
//! - `plan` resolves typed IDs, measures the operation in transactions that are rolled
//!   back, checks the measured effect against the declared one and writes the plan file
//!   (`plan.rs`).
//! - `approve` adds an approver's SSH signature of the plan's hash (`signature.rs`) to
//!   the plan file and the control store; `verify` checks a file's signatures offline.
//! - `apply` checks the signatures (the author's, and enough approvers') and staleness, records the restore point, then runs waves,
//!   each committed only when its measured effect equals the plan's for its tenants.
//! - `undo` restores every tenant an apply touched to the point just before its wave.

pub mod control;
pub mod operation;
pub mod plan;
pub mod signature;
pub mod sqlcheck;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use lifeboat_control::{ApplyStatus, AuditEntry, Entry, StoredSignature};
use lifeboat_core::config::{split_table, Config, OperationConfig};
use lifeboat_core::model::{Dialect, Position, TenantKey, Value};
use lifeboat_core::people::Role;
use lifeboat_core::target::Target;
use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::{id_value, IdRow};
use lifeboat_source::live::LiveSource;

use crate::catch_up::catch_up;
use crate::progress::{silent, Event, Progress};
pub use control::{
    anchor_loop, anchor_pending, control_store, login, Control, Verified, ANCHOR_GRACE_US,
};
use operation::{effect_differences, effect_of, open_named, run_operation};
use plan::{IdValue, PlanId, PlanStep, PlanTenant, FORMAT, VERSION};
pub use plan::{Merged, Plan, PlanFile, Purpose};
pub use signature::{Checked, Signed, Signer, Verdict};

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
    /// The fingerprint of the key the author signed with.
    pub key: String,
    pub output: PathBuf,
    pub approvals_required: u32,
}

/// Plan the declared operation `operation` for the IDs `given` (as typed; trimmed, blank
/// and repeated ones dropped): resolve them against their kind, measure, check the
/// effect against the declaration, write the plan to `output` signed by `author` (a key
/// declared in `[authors]`) and audit it.
pub async fn plan(
    config: &Config,
    config_path: &Option<PathBuf>,
    operation_name: &str,
    given: Vec<String>,
    author: &Signer,
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
    check_steps(config, &sources, operation_name, &steps, param)?;
    let spec = PlanSpec {
        operation: operation_name.to_string(),
        purpose: Purpose::Operation,
        param: param.clone(),
        kind: kind_name.clone(),
        ids,
        declaration: operation_declaration(operation),
        steps,
    };
    let count = spec.ids.len() as u64;
    let check = |totals: &BTreeMap<String, u64>, _: &Merged| -> Result<()> {
        declared_effect(operation, totals, count).map_err(Error::usage)
    };
    make_plan(
        config,
        config_path,
        &mut sources,
        spec,
        check,
        author,
        output,
    )
    .await
}

/// Whether `totals` ("source.table" -> rows, for `count` IDs) stays inside the operation's
/// declared effect; the reason when not.
pub(crate) fn declared_effect(
    operation: &OperationConfig,
    totals: &BTreeMap<String, u64>,
    count: u64,
) -> std::result::Result<(), String> {
    if let Some((table, n)) = totals
        .iter()
        .find(|(t, n)| **n > 0 && !operation.effect.contains_key(*t))
    {
        return Err(format!(
            "refused: the operation touches {n} rows of {table}, which its declared \
             effect does not include (it may touch only: {})",
            operation
                .effect
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (table, n) in totals {
        let Some(limit) = operation.effect.get(table) else {
            continue;
        };
        if let Some(per_id) = limit.max_rows_per_id {
            let most = per_id.saturating_mul(count);
            if *n > most {
                return Err(format!(
                    "refused: the operation touches {n} rows of {table} for {count} IDs; \
                     its declared effect allows at most {per_id} per ID ({most})"
                ));
            }
        }
        if let Some(most) = limit.max_rows {
            if *n > most {
                return Err(format!(
                    "refused: the operation touches {n} rows of {table}; its declared \
                     effect allows at most {most}"
                ));
            }
        }
    }
    Ok(())
}

/// The SHA-256 of an operation's declaration (its parameter, declared effect and steps),
/// as canonical JSON: what a plan is bound to.
pub(crate) fn operation_declaration(operation: &OperationConfig) -> String {
    let effect: BTreeMap<&String, Json> = operation
        .effect
        .iter()
        .map(|(t, l)| {
            (
                t,
                json!({"max_rows_per_id": l.max_rows_per_id, "max_rows": l.max_rows}),
            )
        })
        .collect();
    let steps: Vec<Json> = operation
        .steps
        .iter()
        .map(|s| json!({"source": s.source, "sql": s.sql}))
        .collect();
    let declaration = json!({"params": operation.params, "effect": effect, "steps": steps});
    sha256_hex(declaration.to_string().as_bytes())
}

/// The SHA-256 of a soft delete's steps: what its plan is bound to.
pub(crate) fn delete_declaration(steps: &[(String, String)]) -> String {
    let steps: Vec<Json> = steps
        .iter()
        .map(|(source, sql)| json!({"source": source, "sql": sql}))
        .collect();
    sha256_hex(json!({"tenant-delete": steps}).to_string().as_bytes())
}

/// Check every step's SQL against its source's tenant map (`sqlcheck`).
pub(crate) fn check_steps(
    config: &Config,
    sources: &BTreeMap<String, LiveSource>,
    operation: &str,
    steps: &[(String, String)],
    param: &str,
) -> Result<()> {
    for (number, (name, sql)) in steps.iter().enumerate() {
        let source = sources
            .get(name)
            .ok_or_else(|| Error::config(format!("unknown source {name}")))?;
        let dialect = source.dialect();
        let schema = match dialect {
            Dialect::Sqlite => "main".to_string(),
            Dialect::Postgres => config
                .source(name)?
                .schema
                .clone()
                .unwrap_or_else(|| "public".to_string()),
        };
        sqlcheck::check_step(&sqlcheck::StepSql {
            name: format!("operation {operation}, step {} ({name})", number + 1),
            sql,
            param,
            dialect,
            schema: &schema,
            tenancy: &source.tenancy,
        })?;
    }
    Ok(())
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
    /// The hash of what the steps were declared by (`operation_declaration`).
    pub declaration: String,
}

/// Measure `spec` (its steps run in transactions that are rolled back), let `check` refuse
/// the measured effect (given totals per table, and per tenant), then write the plan file
/// signed by `author` and append it to the audit log, with the signature.
pub(crate) async fn make_plan(
    config: &Config,
    config_path: &Option<PathBuf>,
    sources: &mut BTreeMap<String, LiveSource>,
    spec: PlanSpec,
    check: impl FnOnce(&BTreeMap<String, u64>, &Merged) -> Result<()>,
    author: &Signer,
    output: &Path,
) -> Result<Planned> {
    if author.role != Role::Author {
        return Err(Error::usage("a plan is signed by its author's key"));
    }
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
        author: author.name.clone(),
        created: lifeboat_core::time::format_us(lifeboat_core::time::now_us()),
        param: spec.param.clone(),
        kind: spec.kind.clone(),
        declaration: spec.declaration.clone(),
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
    let mut file = PlanFile::new(plan)?;
    let hash = file.hash.clone();
    let signed = author.sign(&hash)?;
    file.add_signature(signed.clone());
    file.write(output)?;
    let mut control = control_store(config, config_path).await?;
    let entry = Entry::new(
        &author.name,
        "plan",
        &hash,
        json!({"operation": spec.operation, "declaration": spec.declaration,
           "ids": ids.len(), "tenants": tenant_keys.len(), "totals": totals,
           "file": output.display().to_string(), "key": author.fingerprint(),
           "signature": signed.signature}),
    );
    control.add_signature(&hash, &stored(&signed, &author.fingerprint()), entry)?;
    control.anchor().await?;
    Ok(Planned {
        hash,
        operation: spec.operation,
        kind: spec.kind,
        ids: ids.len(),
        tenants: tenant_keys.len(),
        totals,
        users: config.guard.users.as_ref().map(|_| users_total),
        author: author.name.clone(),
        key: author.fingerprint(),
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

/// A signature as the control store keeps it.
fn stored(signed: &Signed, key: &str) -> StoredSignature {
    StoredSignature {
        role: signed.role.to_string(),
        name: signed.name.clone(),
        key: key.to_string(),
        signature: signed.signature.clone(),
    }
}

/// The signatures the control store recorded for `hash`, as the plan file keeps them.
fn recorded_signatures(control: &mut Control, hash: &str) -> Result<Vec<Signed>> {
    control
        .signatures(hash)?
        .into_iter()
        .map(|s| {
            let role = match s.role.as_str() {
                "author" => Role::Author,
                "approver" => Role::Approver,
                other => {
                    return Err(Error::source(format!(
                        "control store: a signature of plan {hash} has the unknown role {other:?}"
                    )))
                }
            };
            Ok(Signed {
                role,
                name: s.name,
                signature: s.signature,
            })
        })
        .collect()
}

/// How an approval is made: signed here with a private key, or made elsewhere
/// (`ssh-keygen -Y sign`) and handed over as an armored signature.
pub enum Approval<'a> {
    Key(&'a Signer),
    Signature(String),
}

/// An approval as recorded.
#[derive(Debug, Clone)]
pub struct Approved {
    /// False: this approver had approved already.
    pub new: bool,
    pub short: String,
    pub operation: String,
    /// Who approved, and the fingerprint of their key.
    pub approver: String,
    pub key: String,
    /// Distinct approvers with a valid signature, in the file and the control store.
    pub approvals: usize,
    pub required: u32,
}

/// Approve the plan at `path`: check the approval's signature (an approver declared in
/// `[approvers]`, never the plan's author, over this plan's hash), add it to the plan file
/// and record it in the control store and the audit log.
pub async fn approve(
    config: &Config,
    config_path: &Option<PathBuf>,
    path: &Path,
    approval: Approval<'_>,
) -> Result<Approved> {
    let mut file = PlanFile::read(path)?;
    let author = file.plan.author.clone();
    let signed = match approval {
        Approval::Key(signer) => {
            if signer.role != Role::Approver {
                return Err(Error::usage("an approval is signed with an approver's key"));
            }
            if signer.name == author {
                return Err(Error::usage(format!(
                    "{} wrote plan {}: its author cannot approve it",
                    signer.name,
                    file.short()
                )));
            }
            signer.sign(&file.hash)?
        }
        Approval::Signature(text) => {
            let sig = signature::parse(&text)
                .map_err(|why| Error::usage(format!("--signature: {why}")))?;
            let key = sig.public_key();
            let name = config.person_with_key(Role::Approver, key).ok_or_else(|| {
                let other = match config.anyone_with_key(key) {
                    Some(owner) => format!(" (it is {owner}'s, who is not in [approvers])"),
                    None => String::new(),
                };
                Error::usage(format!(
                    "--signature: made with key {}, which is declared for no one in \
                         [approvers]{other}",
                    lifeboat_core::people::fingerprint(key)
                ))
            })?;
            Signed {
                role: Role::Approver,
                name: name.to_string(),
                signature: text.trim().to_string() + "\n",
            }
        }
    };
    let checked = signature::check(config, &file.hash, &author, &signed);
    if let Some(problem) = &checked.problem {
        return Err(Error::usage(format!(
            "refused: {}'s signature of plan {}: {problem}",
            signed.name,
            file.short()
        )));
    }
    let key = checked.key.clone().unwrap_or_default();
    file.add_signature(signed.clone());
    let mut control = control_store(config, config_path).await?;
    let entry = Entry::new(
        &signed.name,
        "approve",
        &file.hash,
        json!({"operation": file.plan.operation, "key": key, "signature": signed.signature}),
    );
    let new = control.add_signature(&file.hash, &stored(&signed, &key), entry)?;
    control.anchor().await?;
    file.write(path)?;
    let mut all = file.signatures.clone();
    all.extend(recorded_signatures(&mut control, &file.hash)?);
    let verdict = Verdict::of(config, &file.hash, &author, &all);
    Ok(Approved {
        new,
        short: file.short().to_string(),
        operation: file.plan.operation.clone(),
        approver: signed.name,
        key,
        approvals: verdict.approvers.len(),
        required: config.guard.approvals_required,
    })
}

/// The signatures the plan file at `path` carries, checked against the configuration's
/// keys: no control store is opened (`lifeboat approve --verify`).
pub fn verify(config: &Config, path: &Path) -> Result<(PlanFile, Verdict)> {
    let file = PlanFile::read(path)?;
    let verdict = Verdict::of(config, &file.hash, &file.plan.author, &file.signatures);
    Ok((file, verdict))
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

/// What a wave of a plan may do beyond matching the plan: the operation's declared effect,
/// or, for a soft delete, only the wave's tenants' rows.
enum Declared<'a> {
    Operation(&'a OperationConfig),
    TenantDelete,
}

impl Declared<'_> {
    /// Whether a source's measured part of a wave (`effect`, tables as that source names
    /// them) stays inside the declaration, for a wave of `tenants` and `ids` IDs.
    fn allows(
        &self,
        source: &str,
        effect: &lifeboat_source::guard::Effect,
        tenants: &[&String],
        ids: u64,
    ) -> std::result::Result<(), String> {
        match self {
            Declared::Operation(operation) => {
                let mut totals: BTreeMap<String, u64> = BTreeMap::new();
                for tables in effect.values() {
                    for (table, n) in tables {
                        *totals.entry(format!("{source}.{table}")).or_default() += n;
                    }
                }
                declared_effect(operation, &totals, ids)
            }
            Declared::TenantDelete => match effect
                .iter()
                .find(|(t, v)| !tenants.contains(t) && v.values().any(|n| *n > 0))
            {
                Some((t, _)) if t.is_empty() => {
                    Err("refused: the wave also removes rows of no tenant".to_string())
                }
                Some((t, _)) => Err(format!(
                    "refused: the wave also removes rows of tenant {t}, which it does not delete"
                )),
                None => Ok(()),
            },
        }
    }
}

/// Who holds an apply lock: this machine and process.
pub(crate) fn lock_holder() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Whether the apply lock's holder is a process of this machine that no longer runs.
pub(crate) fn holder_is_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == host_name()
        && Path::new("/proc/self").exists()
        && pid.parse::<u32>().is_ok()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Apply the approved plan at `path` in waves (`waves`: cumulative sizes); a file
/// `<path>.halt` halts it too. Wave events go to `progress`.
///
/// The steps run are the configuration's: the plan must have been made by `lifeboat plan`
/// (its `plan` entry in the audit log), for the operation as it is declared now (its
/// declaration's hash), with the steps declared. One apply of a plan runs at a time (a
/// lock in the control store).
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
    // Signatures: the file's and the control store's, each verified against the keys the
    // configuration declares now.
    let mut signatures = file.signatures.clone();
    signatures.extend(recorded_signatures(&mut control, &file.hash)?);
    let verdict = Verdict::of(config, &file.hash, &plan.author, &signatures);
    if let Some(problem) = &verdict.author_problem {
        return Err(Error::usage(format!(
            "plan {} is not signed by its author {}: {problem}",
            file.short(),
            plan.author
        )));
    }
    let required = config.guard.approvals_required as usize;
    if verdict.approvers.len() < required {
        let refused = verdict.refused();
        return Err(Error::usage(format!(
            "plan {} has {} of the {required} approvals it needs (valid signatures by \
             distinct approvers other than its author){}",
            file.short(),
            verdict.approvers.len(),
            if refused.is_empty() {
                String::new()
            } else {
                format!("; not counted: {refused}")
            }
        )));
    }
    if !control.has_entry("plan", &file.hash)? {
        return Err(Error::usage(format!(
            "plan {} has no `plan` entry in the audit log: it was not made by `lifeboat plan` \
             with this control store; make the plan with `lifeboat plan`",
            file.short()
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

    // The steps: the configuration's, never the file's.
    let changed = || {
        Error::usage(format!(
            "plan {} was made for {} as it was declared then; its declaration changed since \
             (steps, parameter or effect): make a new plan",
            file.short(),
            plan.operation
        ))
    };
    let (steps, declaration, declared, mut sources) = match plan.purpose {
        Purpose::Operation => {
            let operation = config.operations.get(&plan.operation).ok_or_else(|| {
                Error::usage(format!(
                    "plan {} is for operation {:?}, which the configuration no longer declares",
                    file.short(),
                    plan.operation
                ))
            })?;
            if operation.params.get(&plan.param) != Some(&plan.kind) {
                return Err(changed());
            }
            let steps: Vec<(String, String)> = operation
                .steps
                .iter()
                .map(|s| (s.source.clone(), s.sql.clone()))
                .collect();
            let names: BTreeSet<String> = steps.iter().map(|(s, _)| s.clone()).collect();
            let sources = open_named(config, &names).await?;
            (
                steps,
                operation_declaration(operation),
                Declared::Operation(operation),
                sources,
            )
        }
        Purpose::TenantDelete => {
            let names: BTreeSet<String> = config.sources.keys().cloned().collect();
            let sources = open_named(config, &names).await?;
            let steps = crate::lifecycle::delete_steps(&sources).await?;
            let declaration = delete_declaration(&steps);
            (steps, declaration, Declared::TenantDelete, sources)
        }
    };
    if declaration != plan.declaration {
        return Err(changed());
    }
    let written: Vec<(String, String)> = plan
        .steps
        .iter()
        .map(|s| (s.source.clone(), s.sql.clone()))
        .collect();
    if written != steps {
        return Err(Error::usage(format!(
            "plan {} lists other steps than its operation {} declares: it was edited; make \
             a new plan",
            file.short(),
            plan.operation
        )));
    }
    check_steps(config, &sources, &plan.operation, &steps, &plan.param)?;
    if let Declared::Operation(operation) = &declared {
        declared_effect(operation, &plan.totals, plan.ids.len() as u64).map_err(|why| {
            Error::usage(format!(
                "plan {}: {why} (its totals were written by hand)",
                file.short()
            ))
        })?;
    }

    // One apply of a plan at a time.
    let holder = lock_holder();
    if let Some((other, since)) = control.lock_apply(&file.hash, &holder)? {
        let taken = holder_is_gone(&other)
            && control.take_over_apply(
                &file.hash,
                &other,
                &holder,
                &Entry::new(
                    &by,
                    "apply-lock-taken-over",
                    &file.hash,
                    json!({"from": other, "reason": "its process no longer runs"}),
                ),
            )?;
        if !taken {
            return Err(Error::usage(format!(
                "plan {} is being applied already (by {other}, since {since}): one apply of \
                 a plan runs at a time",
                file.short()
            )));
        }
        control.anchor().await?;
    }
    let run = Run {
        config,
        file: &file,
        by: &by,
        path,
        waves,
        steps: &steps,
        declared: &declared,
        state: state.as_ref(),
        progress,
    };
    let outcome = run.waves(&mut control, &mut sources).await;
    let released = control.unlock_apply(&file.hash, &holder);
    let outcome = outcome?;
    released?;
    Ok(outcome)
}

/// Whether a wave commits in a source: only if that source's part is the plan's
/// (`expected`) and inside the declaration; `why` keeps the first reason a part was
/// refused by the declaration.
fn commit_if<'a>(
    declared: &'a Declared<'a>,
    expected: Merged,
    wave: Vec<String>,
    ids: u64,
    why: &'a mut Option<String>,
) -> impl FnMut(&str, &lifeboat_source::guard::Effect) -> bool + Send + 'a {
    move |source, effect| {
        let refs: Vec<&String> = wave.iter().collect();
        if let Err(reason) = declared.allows(source, effect, &refs, ids) {
            why.get_or_insert(format!("{source}: {reason}"));
            return false;
        }
        if effect_of(&expected, source) != *effect {
            return false;
        }
        lifeboat_core::failpoint::hit("apply.before-wave-commit");
        true
    }
}

/// An apply past its checks, holding the plan's lock.
struct Run<'a> {
    config: &'a Config,
    file: &'a PlanFile,
    by: &'a str,
    path: &'a Path,
    waves: &'a str,
    steps: &'a [(String, String)],
    declared: &'a Declared<'a>,
    state: Option<&'a lifeboat_control::ApplyState>,
    progress: &'a dyn Progress,
}

impl Run<'_> {
    /// Run `steps` with the IDs `ids` of `wave`'s tenants, each source committing only
    /// when its part is `expected`'s and inside the declaration (`commit_if`). Returns the
    /// measured effect (tables with rows), whether every source committed, and the first
    /// reason the declaration refused a part.
    async fn run_wave(
        &self,
        sources: &mut BTreeMap<String, LiveSource>,
        steps: &[(String, String)],
        ids: Vec<Value>,
        wave: &[&String],
        expected: &Merged,
    ) -> Result<(Merged, bool, Option<String>)> {
        let mut why = None;
        let count = ids.len() as u64;
        let (got, committed) = run_operation(
            sources,
            steps,
            &self.file.plan.param,
            &ids,
            commit_if(
                self.declared,
                expected.clone(),
                wave.iter().map(|t| t.to_string()).collect(),
                count,
                &mut why,
            ),
        )
        .await?;
        let got: Merged = got.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        Ok((got, committed, why))
    }

    async fn waves(
        &self,
        control: &mut Control,
        sources: &mut BTreeMap<String, LiveSource>,
    ) -> Result<Applied> {
        let file = self.file;
        let plan = &file.plan;
        let by = self.by;
        let steps = self.steps;
        let param = plan.param.clone();
        let planned = plan.effect();
        let ids: Vec<(Value, String)> = plan
            .ids
            .iter()
            .map(|i| (i.value.to_value(), i.tenant.clone().unwrap_or_default()))
            .collect();
        let tenants: Vec<String> = {
            let mut t: BTreeSet<String> = ids.iter().map(|(_, t)| t.clone()).collect();
            t.retain(|t| !t.is_empty());
            t.into_iter().collect()
        };
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

        // A wave that was about to commit when an apply stopped: find in which sources it
        // did, finish it in the others, and record it, instead of applying it twice.
        if let Some(pending) = control.pending_wave(&file.hash)? {
            let wave: Vec<&String> = pending.tenants.iter().collect();
            let expected = planned_for(&wave);
            let (now, _) =
                run_operation(sources, steps, &param, &ids_of(&wave), |_, _| false).await?;
            let mut order: Vec<&String> = Vec::new();
            for (source, _) in steps {
                if !order.contains(&source) {
                    order.push(source);
                }
            }
            let (committed, open): (Vec<&String>, Vec<&String>) = order
                .into_iter()
                .partition(|s| effect_of(&expected, s) != effect_of(&now, s));
            if committed.is_empty() {
                // Rolled back: the wave runs again below like any other.
                control.clear_pending_wave(
                    &file.hash,
                    &[Entry::new(
                        by,
                        "wave-rolled-back",
                        &file.hash,
                        json!({"wave": pending.wave, "tenants": pending.tenants,
                               "found": "its effect is absent from every source"}),
                    )],
                )?;
                control.anchor().await?;
            } else {
                let rest: Vec<(String, String)> = steps
                    .iter()
                    .filter(|(s, _)| open.contains(&s))
                    .cloned()
                    .collect();
                let (got, all, why) = self
                    .run_wave(sources, &rest, ids_of(&wave), &wave, &expected)
                    .await?;
                let want: Merged = open
                    .iter()
                    .flat_map(|s| {
                        effect_of(&expected, s).into_iter().map(move |(t, tables)| {
                            let tables: BTreeMap<String, u64> = tables
                                .into_iter()
                                .map(|(table, n)| (format!("{s}.{table}"), n))
                                .collect();
                            (t, tables)
                        })
                    })
                    .fold(Merged::new(), |mut m, (t, tables)| {
                        m.entry(t).or_default().extend(tables);
                        m
                    });
                if !all || got != want {
                    let mut differences = effect_differences(&want, &got);
                    differences.extend(why);
                    return self
                        .diverged(control, pending.wave, differences, "finishing")
                        .await;
                }
                let keys = pending.tenants.clone();
                let deletes = plan.purpose == Purpose::TenantDelete;
                let mut entries = vec![Entry::new(
                    by,
                    "wave-recovered",
                    &file.hash,
                    json!({"wave": pending.wave, "tenants": keys,
                           "committed_before": committed, "finished_now": open}),
                )];
                if deletes {
                    entries.extend(self.delete_entries(&keys, &pending.point));
                }
                control.mark_applied(
                    &file.hash,
                    &keys,
                    pending.wave,
                    &pending.point,
                    deletes,
                    &entries,
                )?;
                control.anchor().await?;
                self.progress.event(Event::Step(format!(
                    "wave {} had committed in {} before the apply stopped: recorded, not \
                     applied again{}",
                    pending.wave,
                    committed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if open.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (finished in {})",
                            open.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )));
            }
        }

        let applied = control.applied(&file.hash)?;
        let remaining: Vec<&String> = tenants
            .iter()
            .filter(|t| !applied.contains_key(*t))
            .collect();

        // Stale? Measure what is left to do again.
        let (now, _) =
            run_operation(sources, steps, &param, &ids_of(&remaining), |_, _| false).await?;
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
        let names: BTreeSet<String> = steps.iter().map(|(s, _)| s.clone()).collect();
        let mut entries = Vec::new();
        let restore_point = match self.state {
            Some(s) => s.restore_point.clone(),
            None => {
                let point = catch_up(self.config, control.url(), &names, self.progress).await?;
                entries.push(Entry::new(
                    by,
                    "restore-point",
                    &file.hash,
                    json!({"positions": point}),
                ));
                point
            }
        };
        entries.push(Entry::new(
            by,
            "apply",
            &file.hash,
            json!({"operation": plan.operation, "tenants": remaining.len(),
                   "waves": self.waves}),
        ));
        control.set_apply(&file.hash, ApplyStatus::Running, &restore_point, &entries)?;
        control.anchor().await?;
        let targets = wave_targets(self.waves, tenants.len())?;
        let halt_file = PathBuf::from(format!("{}.halt", self.path.display()));
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
                control.set_apply(
                    &file.hash,
                    ApplyStatus::Halted,
                    &restore_point,
                    &[Entry::new(
                        by,
                        "halted",
                        &file.hash,
                        json!({"before_wave": wave_number, "by": who}),
                    )],
                )?;
                control.anchor().await?;
                return Ok(Applied::Halted {
                    wave: wave_number,
                    by: who,
                });
            }
            let expected = planned_for(&wave);
            // Where each source stands just before the wave: what undo restores its
            // tenants to, so that nothing they wrote before their wave is lost.
            let mut point = BTreeMap::new();
            for (name, source) in sources.iter() {
                point.insert(name.clone(), source.position().await?.get());
            }
            let keys: Vec<String> = wave.iter().map(|t| t.to_string()).collect();
            control.set_pending_wave(
                &file.hash,
                &lifeboat_control::PendingWave {
                    wave: wave_number,
                    tenants: keys.clone(),
                    point: point.clone(),
                },
            )?;
            let (got, committed, why) = self
                .run_wave(sources, steps, ids_of(&wave), &wave, &expected)
                .await?;
            if !committed || got != expected {
                let mut differences = effect_differences(&expected, &got);
                differences.extend(why);
                control.clear_pending_wave(&file.hash, &[])?;
                return self
                    .diverged(control, wave_number, differences, "wave")
                    .await;
            }
            lifeboat_core::failpoint::hit("apply.after-wave-commit");
            let deletes = plan.purpose == Purpose::TenantDelete;
            let rows: u64 = got.values().flat_map(|t| t.values()).sum();
            let mut entries = vec![Entry::new(
                by,
                "wave",
                &file.hash,
                json!({"wave": wave_number, "tenants": keys, "rows": rows}),
            )];
            if deletes {
                entries.extend(self.delete_entries(&keys, &point));
            }
            control.mark_applied(&file.hash, &keys, wave_number, &point, deletes, &entries)?;
            control.anchor().await?;
            self.progress.event(Event::Wave {
                number: wave_number,
                tenants: keys.len(),
                rows,
                done: end,
                total: tenants.len(),
            });
            lifeboat_core::failpoint::pause("apply.after-wave");
        }
        control.set_apply(
            &file.hash,
            ApplyStatus::Done,
            &restore_point,
            &[Entry::new(
                by,
                "applied",
                &file.hash,
                json!({"tenants": tenants.len()}),
            )],
        )?;
        control.anchor().await?;
        Ok(Applied::Done {
            short: file.short().to_string(),
            tenants: tenants.len(),
        })
    }

    /// A wave measured otherwise than planned, or beyond its declaration: rolled back, the
    /// apply stopped and audited.
    async fn diverged(
        &self,
        control: &mut Control,
        wave: u32,
        differences: Vec<String>,
        during: &str,
    ) -> Result<Applied> {
        let restore_point = self.state.map(|s| s.restore_point.clone());
        let restore_point = match restore_point {
            Some(p) => p,
            None => control
                .apply_state(&self.file.hash)?
                .map(|s| s.restore_point)
                .unwrap_or_default(),
        };
        control.set_apply(
            &self.file.hash,
            ApplyStatus::Diverged,
            &restore_point,
            &[Entry::new(
                self.by,
                "diverged",
                &self.file.hash,
                json!({"wave": wave, "differences": differences, "during": during}),
            )],
        )?;
        control.anchor().await?;
        Ok(Applied::Diverged { wave, differences })
    }

    /// A soft delete's wave: one `delete` entry per tenant.
    fn delete_entries(&self, keys: &[String], point: &BTreeMap<String, u64>) -> Vec<Entry> {
        keys.iter()
            .map(|key| {
                Entry::new(
                    self.by,
                    "delete",
                    &format!("tenant:{key}"),
                    json!({"plan": self.file.hash, "restorable_to": point}),
                )
            })
            .collect()
    }
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
    control.anchor().await?;
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
    progress: &dyn Progress,
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
            crate::lifecycle::undelete(config, config_path, still, Some(by.clone()), progress)
                .await?;
        if undeleted.failures == 0 {
            let mut control = control_store(config, config_path).await?;
            control.set_apply(
                &file.hash,
                ApplyStatus::Undone,
                &state.restore_point,
                &[Entry::new(
                    &by,
                    "undo",
                    &file.hash,
                    json!({"undeleted": true}),
                )],
            )?;
            control.anchor().await?;
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
    let (rows, failures) = restore_to_points(config, control.url(), &by_point, progress).await?;
    let tenants: Vec<&String> = applied.keys().collect();
    let entry = Entry::new(
        &by,
        "undo",
        &file.hash,
        json!({"tenants": tenants, "rows": rows, "failures": failures}),
    );
    if failures == 0 {
        control.set_apply(
            &file.hash,
            ApplyStatus::Undone,
            &state.restore_point,
            &[entry],
        )?;
    } else {
        // Not undone: the attempt is recorded, the apply's state stays.
        control
            .append(&entry.actor, &entry.action, &entry.subject, entry.details)
            .await?;
    }
    control.anchor().await?;
    Ok(Undone {
        short: file.short().to_string(),
        tenants: tenants.len(),
        rows,
        failures,
        undeleted: false,
    })
}

/// Restore groups of tenants, each to its point (source -> position), after catching
/// capture up so that the vault holds every point. Returns rows written and failures.
pub async fn restore_to_points(
    config: &Config,
    control_url: &str,
    groups: &BTreeMap<&BTreeMap<String, u64>, Vec<String>>,
    progress: &dyn Progress,
) -> Result<(u64, usize)> {
    let names: BTreeSet<String> = groups.keys().flat_map(|p| p.keys().cloned()).collect();
    let latest = catch_up(config, control_url, &names, progress).await?;
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

/// `audit verify`: the number of entries, every problem found (chain and anchors, both
/// ways) and the entries still waiting for their anchor (younger than `grace_us`).
pub async fn audit_verify(
    config: &Config,
    config_path: &Option<PathBuf>,
    grace_us: i64,
) -> Result<(usize, Verified)> {
    let mut control = Control::open_unanchored(config, config_path).await?;
    let verified = control.verify(grace_us).await?;
    Ok((control.entries()?.len(), verified))
}
