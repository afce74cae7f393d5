//! Recovery campaigns (docs/status.md): starting one (tenants checked against the vault,
//! the target resolved once to positions, priority keys read from the vault at the target),
//! its progress, its private links, retries. The workers that restore a campaign's
//! tenants are in `worker.rs`.

pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use lifeboat_control::{new_id, Campaign, ComponentStatus, ControlStore, Phase, Stage};
use lifeboat_core::config::{split_table, Config, SourceKind};
use lifeboat_core::model::TenantKey;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::{resolve, Resolved, Target};
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::{Error, Result};

use crate::context::{check_tenants, control_url, histories, open_vault};
use crate::guard::{control_store, login, Control, PlanFile};

// ---------------------------------------------------------------------------------------
// The control store for these commands: components made to match the sources.

/// The control store, its components made to match the sources.
pub fn open_control(config: &Config, config_path: &Option<PathBuf>) -> Result<ControlStore> {
    let mut control = ControlStore::open(&control_url(config, config_path)?)?;
    control.ensure_components(&component_names(config), &login(None))?;
    Ok(control)
}

/// The control store with its audit log anchored in the vault, for commands that write to
/// the log.
pub async fn open_audited(config: &Config, config_path: &Option<PathBuf>) -> Result<Control> {
    let mut control = control_store(config, config_path).await?;
    control.ensure_components(&component_names(config), &login(None))?;
    control.anchor().await?;
    Ok(control)
}

/// Source -> its component's name on the status page.
fn component_names(config: &Config) -> BTreeMap<String, String> {
    config
        .sources
        .keys()
        .map(|s| {
            let name = config.server.components.get(s).unwrap_or(s);
            (s.clone(), name.clone())
        })
        .collect()
}

/// `SOURCE=STATUS` pairs, as `--component` gives them.
pub fn component_pairs(pairs: &[String]) -> Result<BTreeMap<String, ComponentStatus>> {
    pairs
        .iter()
        .map(|p| {
            let (source, status) = p.split_once('=').ok_or_else(|| {
                Error::usage(format!(
                    "--component {p:?}: expected SOURCE=STATUS, for example tracker=major_outage"
                ))
            })?;
            Ok((source.trim().to_string(), status.trim().parse()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// campaign

/// A campaign's tenants: one key per line of `file`, or the tenants of the plan file `plan`.
pub fn campaign_tenants(file: Option<&Path>, plan: Option<&Path>) -> Result<Vec<String>> {
    let mut tenants = Vec::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
        tenants.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    } else if let Some(plan) = plan {
        tenants.extend(PlanFile::read(plan)?.plan.tenants.into_keys());
    } else {
        return Err(Error::usage("give --tenants-from FILE or --plan FILE"));
    }
    let mut seen = BTreeSet::new();
    tenants.retain(|t| seen.insert(t.clone()));
    if tenants.is_empty() {
        return Err(Error::usage("the campaign has no tenants"));
    }
    Ok(tenants)
}

/// Tenant attributes from a CSV file: a header `tenant,NAME…`, then one row per tenant.
pub fn read_attributes(file: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::usage(format!("{} is empty", file.display())))?
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    if header.first().map(String::as_str) != Some("tenant") || header.len() < 2 {
        return Err(Error::usage(format!(
            "{}: the first line must be `tenant,NAME,…`",
            file.display()
        )));
    }
    let mut out = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != header.len() {
            return Err(Error::usage(format!(
                "{} line {}: {} fields, the header has {}",
                file.display(),
                n + 2,
                fields.len(),
                header.len()
            )));
        }
        let values: BTreeMap<String, String> = header[1..]
            .iter()
            .cloned()
            .zip(fields[1..].iter().map(|f| f.to_string()))
            .collect();
        out.insert(fields[0].to_string(), values);
    }
    Ok(out)
}

/// What `campaign start` (and the drill) asks for.
pub struct StartRequest {
    pub incident: String,
    pub target: Target,
    pub target_json: serde_json::Value,
    pub tenants: Vec<String>,
    pub batch_size: u32,
    pub priority: String,
    pub by: String,
    /// Post progress updates from this `[templates.NAME]` by itself, and every so many
    /// minutes besides the 25/50/75/100% milestones (none: the cadence `[status]
    /// update_every` promises for the incident's impact, if any).
    pub auto_progress: Option<(String, Option<u64>)>,
    /// `--phases`: the sources of each phase, `;` between phases and `,` between a
    /// phase's sources (none: one phase of every source).
    pub phases: Option<String>,
}

/// The phases of `--phases SPEC`: every one of `sources` exactly once, in phases separated
/// by `;`, a phase's sources by `,`.
pub fn parse_phases(spec: &str, sources: &[String]) -> Result<Vec<Vec<String>>> {
    let mut phases = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, part) in spec.split(';').enumerate() {
        let mut phase = Vec::new();
        for name in part.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(Error::usage(format!(
                    "--phases {spec:?}: phase {} names an empty source; write \
                     \"SOURCE, SOURCE; SOURCE\"",
                    n + 1
                )));
            }
            if !sources.iter().any(|s| s == name) {
                return Err(Error::usage(format!(
                    "--phases: unknown source {name:?}; the sources are {}",
                    sources.join(", ")
                )));
            }
            if !seen.insert(name.to_string()) {
                return Err(Error::usage(format!(
                    "--phases: source {name:?} is named twice; each source is in exactly \
                     one phase"
                )));
            }
            phase.push(name.to_string());
        }
        phases.push(phase);
    }
    let missing: Vec<&str> = sources
        .iter()
        .filter(|s| !seen.contains(*s))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Error::usage(format!(
            "--phases: no phase has {}; each source is in exactly one phase",
            missing.join(", ")
        )));
    }
    Ok(phases)
}

/// A priority key: attribute name, descending?
fn priority_keys(spec: &str) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let desc = match words.next().map(|w| w.to_ascii_lowercase()) {
            None => false,
            Some(w) if w == "asc" => false,
            Some(w) if w == "desc" => true,
            Some(w) => {
                return Err(Error::usage(format!(
                    "--priority {part:?}: {w:?} is neither asc nor desc"
                )))
            }
        };
        out.push((name, desc));
    }
    Ok(out)
}

/// A total order on attribute values: numbers (by value) before text (by bytes), `desc`
/// reversing both; a tenant without the value goes last either way.
fn compare_attributes(x: Option<&str>, y: Option<&str>, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let number = |v: &str| v.parse::<f64>().ok().filter(|n| n.is_finite());
    let ordering = match (x, y) {
        (None, None) => return Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(x), Some(y)) => match (number(x), number(y)) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => x.cmp(y),
        },
    };
    if desc {
        ordering.reverse()
    } else {
        ordering
    }
}

/// Check and queue a campaign: the incident exists, the tenants are known to the vault,
/// the target is inside every source's window; tenants ordered by the priority keys.
pub async fn start_campaign(
    config: &Config,
    control: &mut Control,
    request: StartRequest,
) -> Result<(String, usize)> {
    let Some(incident) = control.incident(&request.incident)? else {
        return Err(Error::usage(format!(
            "unknown incident {}: `lifeboat incident list`",
            request.incident
        )));
    };
    if let Some((template, every)) = &request.auto_progress {
        if !config.templates.contains_key(template) {
            return Err(Error::usage(format!(
                "--auto-progress {template:?}: no [templates.{template}] in the configuration"
            )));
        }
        if *every == Some(0) {
            return Err(Error::usage("--progress-every must be at least 1 minute"));
        }
    }
    if request.batch_size == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
    let source_names: Vec<String> = config.sources.keys().cloned().collect();
    let phases = match &request.phases {
        Some(spec) => parse_phases(spec, &source_names)?
            .into_iter()
            .map(Phase::new)
            .collect(),
        None => Vec::new(),
    };
    let keys = priority_keys(&request.priority)?;
    let vault = open_vault(config).await?;
    let names: Vec<String> = config.sources.keys().cloned().collect();
    let histories = histories(&vault, &names).await?;
    let tenants = check_tenants(&vault, &histories, &request.tenants).await?;
    if let Target::At(time_us) = request.target {
        if time_us > now_us() {
            return Err(Error::usage(format!(
                "--at {} is in the future",
                format_us(time_us)
            )));
        }
    }
    let resolved = resolve_target(config, &vault, &histories, &request.target).await?;

    // Attributes: imported ones, then the configured columns and the user count read
    // from the vault at the target (the tenants may be gone from the databases).
    let mut attributes = control.attributes()?;
    let read = read_vault_attributes(config, &vault, &histories, &tenants, &resolved).await?;
    tracing::debug!("attributes read from the vault: {read:?}");
    for (tenant, values) in read {
        attributes.entry(tenant).or_default().extend(values);
    }
    for (name, _) in &keys {
        if name != "users" && !attributes.values().any(|a| a.contains_key(name)) {
            return Err(Error::usage(format!(
                "--priority: no tenant has an attribute {name:?} (configure \
                 [campaigns.attributes] or `lifeboat campaign import-attributes`)"
            )));
        }
    }
    let value = |tenant: &str, name: &str| -> Option<String> {
        attributes.get(tenant).and_then(|a| a.get(name)).cloned()
    };
    let mut order: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    order.sort_by(|a, b| {
        for (name, desc) in &keys {
            let ordering =
                compare_attributes(value(a, name).as_deref(), value(b, name).as_deref(), *desc);
            if ordering != std::cmp::Ordering::Equal {
                return ordering;
            }
        }
        a.cmp(b)
    });
    let with_users: Vec<(String, i64)> = order
        .iter()
        .map(|t| {
            let users = value(t, "users").and_then(|u| u.parse().ok()).unwrap_or(0);
            (t.clone(), users)
        })
        .collect();
    // Contacts as the vault had them at the target (the tenants may be gone from the
    // databases); read before anything is written, so a bad `[contacts]` changes nothing.
    let read =
        crate::contacts::read_contacts(config, &vault, &histories, &tenants, &resolved).await?;
    // The control store's clock, as every record of the campaign's.
    let now = lifeboat_core::time::clock_us();
    // Every batch restores to the same positions, resolved once here: capture moving on
    // must not move the target.
    let mut target = request.target_json.clone();
    if let Some(object) = target.as_object_mut() {
        object.insert("positions".into(), json!(resolved.positions));
    }
    let campaign = Campaign {
        id: new_id()?,
        incident: request.incident.clone(),
        target,
        target_time: format_us(resolved.time_us),
        batch_size: request.batch_size,
        priority: request.priority.clone(),
        created_at: format_us(now),
        created_at_us: now,
        created_by: request.by.clone(),
        phases,
    };
    // Contacts as the vault had them at the target, with the imported ones, kept with
    // the campaign, which tells each tenant's contacts it is queued.
    if config.contacts.is_some() {
        control.replace_vault_contacts(&order, &read)?;
    }
    let mut contacts = Vec::new();
    for tenant in &order {
        contacts.extend(control.contacts(Some(tenant))?);
    }
    control.create_campaign(&campaign, &with_users, &contacts)?;
    if let Some((template, every)) = &request.auto_progress {
        // Without --progress-every, the cadence promised for the incident's impact.
        let every_us = match every {
            Some(minutes) => Some((*minutes).min(525_600) as i64 * 60_000_000),
            None => config
                .status
                .update_every(incident.impact.as_str())
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        };
        control.set_auto_progress(&campaign.id, template, every_us, &request.by)?;
    }
    control.anchor().await?;
    Ok((campaign.id, with_users.len()))
}

/// Where workers write tenants' export archives and `serve` reads them: `[campaigns]
/// export_dir`, or `exports` beside the configuration file. Made if missing.
pub fn export_dir(config: &Config, config_path: &Option<PathBuf>) -> Result<PathBuf> {
    let dir = match &config.campaigns.export_dir {
        Some(dir) => dir.clone(),
        None => config_path
            .as_ref()
            .and_then(|p| p.parent())
            .map(|d| d.join("exports"))
            .ok_or_else(|| Error::config("no [campaigns] export_dir and no configuration file"))?,
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::config(format!(
            "[campaigns] export_dir {}: cannot create it: {e}",
            dir.display()
        ))
    })?;
    Ok(dir)
}

pub(crate) async fn resolve_target(
    config: &Config,
    vault: &lifeboat_core::vault::Vault,
    histories: &[SourceHistory],
    target: &Target,
) -> Result<Resolved> {
    let mut postgres = BTreeSet::new();
    for (name, source) in &config.sources {
        if matches!(source.kind()?, SourceKind::Postgres { .. }) {
            postgres.insert(name.clone());
        }
    }
    resolve(vault, histories, &postgres, target).await
}

/// An attribute read from a (source, table): its name, and its column (`None`: the count
/// of the tenant's rows).
type Wanted = (String, Option<String>);

/// tenant -> attribute -> value, from the vault at the target: `users` (rows of
/// `[guard] users`) and every `[campaigns.attributes]` column (of the tenant's first row).
async fn read_vault_attributes(
    config: &Config,
    vault: &lifeboat_core::vault::Vault,
    histories: &[SourceHistory],
    tenants: &BTreeSet<TenantKey>,
    resolved: &Resolved,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut wanted: BTreeMap<(String, String), Vec<Wanted>> = BTreeMap::new();
    if let Some(users) = &config.guard.users {
        let (source, table) = split_table(users)?;
        wanted
            .entry((source.to_string(), table.to_string()))
            .or_default()
            .push(("users".to_string(), None));
    }
    for (name, spec) in &config.campaigns.attributes {
        let mut parts = spec.splitn(3, '.');
        let (Some(source), Some(table), Some(column)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        wanted
            .entry((source.to_string(), table.to_string()))
            .or_default()
            .push((name.clone(), Some(column.to_string())));
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for history in histories {
        let tables: Vec<(&String, &Vec<Wanted>)> = wanted
            .iter()
            .filter(|((s, _), _)| *s == history.source)
            .map(|((_, t), w)| (t, w))
            .collect();
        let Some(&position) = resolved.positions.get(&history.source) else {
            continue;
        };
        if tables.is_empty() {
            continue;
        }
        let streams = history.streams_at(vault, tenants, position.get()).await?;
        for (tenant, mut stream) in streams {
            let schemas = stream.schemas();
            for (table, attributes) in &tables {
                let Some(schema) = schemas.get(*table) else {
                    continue;
                };
                let columns: Vec<Option<usize>> = attributes
                    .iter()
                    .map(|(_, c)| {
                        c.as_ref()
                            .and_then(|c| schema.columns.iter().position(|x| x == c))
                    })
                    .collect();
                let mut count = 0u64;
                let mut first: Option<Vec<lifeboat_core::model::Value>> = None;
                stream.for_each_row(table, |row| {
                    count += 1;
                    if first.is_none() {
                        first = Some(row);
                    }
                })?;
                let entry = out.entry(tenant.to_string()).or_default();
                for ((name, column), index) in attributes.iter().zip(&columns) {
                    match (column, index, &first) {
                        (None, _, _) => {
                            entry.insert(name.clone(), count.to_string());
                        }
                        (Some(_), Some(i), Some(row)) => {
                            if let Some(v) = row.get(*i) {
                                entry.insert(name.clone(), v.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One campaign's progress, as `campaign status --json` shows it.
pub fn status(control: &mut ControlStore, id: Option<&str>) -> Result<Vec<serde_json::Value>> {
    let campaigns: Vec<Campaign> = control
        .campaigns()?
        .into_iter()
        .filter(|c| id.is_none_or(|id| c.id == id))
        .collect();
    if let (Some(id), true) = (id, campaigns.is_empty()) {
        return Err(Error::usage(format!("unknown campaign {id}")));
    }
    let tenants = control.campaign_tenants(id)?;
    let incidents = control.incidents()?;
    let (progress, _) =
        lifeboat_web::snapshot::campaign_views(&campaigns, &incidents, &tenants, now_us());
    let mut report = Vec::new();
    for (campaign, p) in campaigns.iter().zip(&progress) {
        let mut stages: BTreeMap<&str, u64> = Stage::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mine: Vec<_> = tenants
            .iter()
            .filter(|t| t.campaign == campaign.id)
            .collect();
        for t in &mine {
            *stages.entry(t.stage.as_str()).or_default() += 1;
        }
        let failed: Vec<serde_json::Value> = mine
            .iter()
            .filter(|t| t.stage == Stage::Failed)
            .map(|t| {
                let mut f = json!({"tenant": t.tenant, "reason": t.reason, "attempts": t.attempts});
                if !campaign.phases.is_empty() {
                    f["phase"] = (t.phase + 1).into();
                }
                f
            })
            .collect();
        report.push(json!({
            "id": campaign.id,
            "incident": campaign.incident,
            "target": campaign.target,
            "restored_to": campaign.target_time,
            "started_at": campaign.created_at,
            "tenants": p.tenants,
            "tenants_restored": p.tenants_restored,
            "users": p.users,
            "users_restored": p.users_restored,
            "stages": stages,
            "estimated_completion": p.eta,
            "failed": failed,
            "phases": p.phases.iter().enumerate().map(|(j, phase)| json!({
                "phase": j + 1,
                "sources": phase.sources,
                "tenants": phase.tenants,
                "tenants_restored": phase.tenants_restored,
                "open": phase.open,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(report)
}

/// The fields of an incident update template (`lifeboat_core::config::TEMPLATE_FIELDS`),
/// measured from campaign `campaign`, or the incident's latest campaign.
pub fn template_fields(
    control: &mut ControlStore,
    incident: &str,
    campaign: Option<&str>,
) -> Result<BTreeMap<&'static str, String>> {
    let found = control.incident(incident)?.ok_or_else(|| {
        Error::usage(format!(
            "unknown incident {incident}: `lifeboat incident list`"
        ))
    })?;
    // Newest first.
    let campaigns: Vec<Campaign> = control
        .campaigns()?
        .into_iter()
        .filter(|c| c.incident == incident)
        .collect();
    let chosen = match campaign {
        Some(id) => campaigns.iter().find(|c| c.id == id).ok_or_else(|| {
            Error::usage(format!(
                "campaign {id} is not a campaign of incident {incident}"
            ))
        })?,
        None => campaigns.first().ok_or_else(|| {
            Error::usage(format!(
                "incident {incident} has no campaign: a template's fields are measured from one"
            ))
        })?,
    };
    let report = status(control, Some(&chosen.id))?;
    let r = report
        .first()
        .ok_or_else(|| Error::usage(format!("unknown campaign {}", chosen.id)))?;
    let count = |key: &str| r[key].as_u64().unwrap_or(0);
    let stage = |name: &str| r["stages"][name].as_u64().unwrap_or(0);
    let percent = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0).to_string();
    let (tenants, restored, users, users_restored) = (
        count("tenants"),
        count("tenants_restored"),
        count("users"),
        count("users_restored"),
    );
    let failed = stage("failed");
    let working = stage("restoring") + stage("verifying");
    let queued = stage("queued");
    let now = if working > 0 {
        format!(
            "restoring and verifying the data of {working} customer{}, {queued} more queued",
            if working == 1 { "" } else { "s" }
        )
    } else if queued > 0 {
        format!("{queued} customers are queued for restoring")
    } else if failed > 0 {
        format!("{failed} customers need our team's attention; every other one is restored")
    } else {
        "every customer's data is restored and verified".to_string()
    };
    Ok(BTreeMap::from([
        ("incident", found.name),
        ("tenants", tenants.to_string()),
        ("tenants_restored", restored.to_string()),
        ("tenants_percent", percent(restored, tenants)),
        ("tenants_failed", failed.to_string()),
        (
            "tenants_remaining",
            (tenants - restored.min(tenants)).to_string(),
        ),
        ("users", users.to_string()),
        ("users_restored", users_restored.to_string()),
        ("users_percent", percent(users_restored, users)),
        (
            "eta",
            r["estimated_completion"]
                .as_str()
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "restored_to",
            r["restored_to"].as_str().unwrap_or("").to_string(),
        ),
        ("now", now),
    ]))
}

/// Post campaign `id`'s progress from its template when a milestone (25, 50, 75, 100% of
/// its tenants finished) or its cadence is due, as an incident update by `lifeboat`.
/// True when one was posted.
pub fn post_progress(config: &Config, control: &mut ControlStore, id: &str) -> Result<bool> {
    let Some(name) = control.auto_progress(id)? else {
        return Ok(false);
    };
    let report = status(control, Some(id))?;
    let Some(r) = report.first() else {
        return Ok(false);
    };
    let tenants = r["tenants"].as_u64().unwrap_or(0);
    let finished =
        r["tenants_restored"].as_u64().unwrap_or(0) + r["stages"]["failed"].as_u64().unwrap_or(0);
    let milestone = [25, 50, 75, 100]
        .into_iter()
        .filter(|m| tenants > 0 && finished * 100 >= m * tenants)
        .max()
        .unwrap_or(0);
    let template = config.templates.get(&name).ok_or_else(|| {
        Error::config(format!(
            "campaign {id} posts its progress from [templates.{name}], which the \
             configuration no longer has"
        ))
    })?;
    let incident = r["incident"].as_str().unwrap_or("").to_string();
    let fields = template_fields(control, &incident, Some(id))?;
    let message = template.render(&fields)?;
    if !control.progress_due(id, milestone as i64)? {
        return Ok(false);
    }
    let current = control
        .incident(&incident)?
        .map(|i| i.status)
        .unwrap_or_default();
    let status = match &template.status {
        Some(s) => s.parse()?,
        None => current,
    };
    control.change_incident(
        Some(&incident),
        &lifeboat_control::IncidentChange {
            status,
            message,
            ..Default::default()
        },
        "lifeboat",
    )?;
    Ok(true)
}

/// Each tenant of campaign `id` with its private link under `base`.
pub fn links(control: &mut ControlStore, id: &str, base: &str) -> Result<Vec<(String, String)>> {
    let tenants = control.campaign_tenants(Some(id))?;
    if tenants.is_empty() {
        return Err(Error::usage(format!("unknown campaign {id}")));
    }
    Ok(tenants
        .iter()
        .map(|t| {
            (
                t.tenant.clone(),
                format!("{}/t/{}", base.trim_end_matches('/'), t.token),
            )
        })
        .collect())
}

/// Queue campaign `id`'s failed tenants again (all, or those named); audited. Returns the
/// tenants queued.
pub async fn retry(
    config: &Config,
    config_path: &Option<PathBuf>,
    id: &str,
    tenants: &[String],
    by: Option<String>,
) -> Result<Vec<String>> {
    let mut control = open_audited(config, config_path).await?;
    if !control.campaigns()?.iter().any(|c| c.id == id) {
        return Err(Error::usage(format!("unknown campaign {id}")));
    }
    let requeued = control.retry_failed(id, tenants, &login(by))?;
    control.anchor().await?;
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use super::compare_attributes;

    #[test]
    fn attribute_order_is_total() {
        let mut values = vec![
            Some("9"),
            Some("10"),
            Some("1a"),
            Some("NaN"),
            None,
            Some("2.5"),
            Some("b"),
        ];
        values.sort_by(|a, b| compare_attributes(*a, *b, false));
        assert_eq!(
            values,
            [
                Some("2.5"),
                Some("9"),
                Some("10"),
                Some("1a"),
                Some("NaN"),
                Some("b"),
                None
            ]
        );
        values.sort_by(|a, b| compare_attributes(*a, *b, true));
        assert_eq!(
            values,
            [
                Some("b"),
                Some("NaN"),
                Some("1a"),
                Some("10"),
                Some("9"),
                Some("2.5"),
                None
            ]
        );
    }
}
