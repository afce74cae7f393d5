//! Incidents, recovery campaigns, workers and the status server (docs/status.md):
//! `incident`, `campaign`, `worker` and `serve`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use lifeboat_control::{
    new_id, Acceptance, Campaign, ComponentStatus, ControlStore, IncidentChange, IncidentStatus,
    Stage,
};
use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::config::{split_table, Config, SourceKind};
use lifeboat_core::model::TenantKey;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::{resolve, Resolved, Target};
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::{Error, Result};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use crate::context::{check_tenants, control_url, histories, load_config, open_vault, print_json};
use crate::EXIT_PROBLEM;

// ---------------------------------------------------------------------------------------
// The control store for these commands: components made to match the sources.

pub(crate) fn open_control(config: &Config, config_path: &Option<PathBuf>) -> Result<ControlStore> {
    let mut control = ControlStore::open(&control_url(config, config_path)?)?;
    control.ensure_components(&component_names(config))?;
    Ok(control)
}

/// The control store with its audit log anchored in the vault, for commands that write to
/// the log.
pub(crate) async fn open_audited(
    config: &Config,
    config_path: &Option<PathBuf>,
) -> Result<crate::guard::Control> {
    let mut control = crate::guard::control_store(config, config_path).await?;
    control.ensure_components(&component_names(config))?;
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

/// `SOURCE=STATUS` pairs.
fn component_pairs(pairs: &[String]) -> Result<BTreeMap<String, ComponentStatus>> {
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
// incident

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

#[derive(clap::Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    command: IncidentCommand,
}

#[derive(clap::Subcommand)]
enum IncidentCommand {
    /// Open an incident; prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "investigating")]
        status: String,
        #[arg(long, default_value = "major")]
        impact: String,
        /// `SOURCE=STATUS` (repeatable).
        #[arg(long = "component", value_name = "SOURCE=STATUS")]
        components: Vec<String>,
        #[arg(long)]
        message: String,
    },
    /// Post an update.
    Update {
        id: String,
        #[arg(long)]
        status: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        impact: Option<String>,
        #[arg(long = "component", value_name = "SOURCE=STATUS")]
        components: Vec<String>,
    },
    /// Resolve: its components go back to operational.
    Resolve {
        id: String,
        #[arg(long)]
        message: String,
    },
    /// Every incident, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn incident(config_path: Option<PathBuf>, args: IncidentArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let mut control = open_control(&config, &config_path)?;
    match args.command {
        IncidentCommand::Create {
            name,
            status,
            impact,
            components,
            message,
        } => {
            let id = control.change_incident(
                None,
                &IncidentChange {
                    name: Some(name),
                    status: status.parse()?,
                    impact: Some(impact.parse()?),
                    message,
                    components: component_pairs(&components)?,
                },
            )?;
            crate::say!("{id}");
        }
        IncidentCommand::Update {
            id,
            status,
            message,
            impact,
            components,
        } => {
            control.change_incident(
                Some(&id),
                &IncidentChange {
                    name: None,
                    status: status.parse()?,
                    impact: impact.as_deref().map(str::parse).transpose()?,
                    message,
                    components: component_pairs(&components)?,
                },
            )?;
            crate::say!("{id} updated");
        }
        IncidentCommand::Resolve { id, message } => {
            control.change_incident(
                Some(&id),
                &IncidentChange {
                    name: None,
                    status: IncidentStatus::Resolved,
                    impact: None,
                    message,
                    components: BTreeMap::new(),
                },
            )?;
            crate::say!("{id} resolved");
        }
        IncidentCommand::List { json } => {
            let incidents = control.incidents()?;
            if json {
                print_json(&json!(incidents));
            } else {
                for i in &incidents {
                    crate::say!(
                        "{}  {:<13} {:<8} {}  {}",
                        i.id,
                        i.status,
                        i.impact,
                        i.created_at,
                        i.name
                    );
                }
            }
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// campaign

#[derive(clap::Args)]
pub struct CampaignArgs {
    #[command(subcommand)]
    command: CampaignCommand,
}

#[derive(clap::Subcommand)]
enum CampaignCommand {
    /// Queue tenants for recovery under an incident; prints the campaign id.
    Start {
        #[arg(long)]
        incident: String,
        /// One tenant key per line.
        #[arg(long, value_name = "FILE", conflicts_with = "plan")]
        tenants_from: Option<PathBuf>,
        /// The tenants of a plan file.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        #[arg(long, value_name = "TIME", conflicts_with = "before_tx")]
        at: Option<String>,
        #[arg(long, value_name = "SOURCE:TXID")]
        before_tx: Option<String>,
        /// Tenants a worker claims and restores together.
        #[arg(long, default_value_t = 60)]
        batch_size: u32,
        /// Priority keys from tenant attributes, e.g. "edition desc, users desc".
        #[arg(long, default_value = "")]
        priority: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Progress of one campaign (or all).
    Status {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each tenant's private status link (for operators to send).
    Links {
        id: String,
        /// The page's public address (default: [server] public_url).
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import tenant attributes (priority keys) from a CSV file: a header `tenant,NAME…`,
    /// then one row per tenant.
    ImportAttributes { file: PathBuf },
    /// Queue a campaign's failed tenants again (all, or those named).
    Retry {
        id: String,
        #[arg(long = "tenant", value_name = "KEY")]
        tenants: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn campaign(config_path: Option<PathBuf>, args: CampaignArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    match args.command {
        CampaignCommand::Start {
            incident,
            tenants_from,
            plan,
            at,
            before_tx,
            batch_size,
            priority,
            by,
        } => {
            let target = Target::parse(at.as_deref(), before_tx.as_deref())?;
            let target_json = match (&at, &before_tx) {
                (Some(at), _) => json!({"at": at}),
                (_, Some(tx)) => json!({"before_tx": tx}),
                _ => json!(null),
            };
            let tenants = campaign_tenants(tenants_from.as_ref(), plan.as_ref())?;
            let mut control = open_audited(&config, &config_path).await?;
            let start = StartRequest {
                incident,
                target,
                target_json,
                tenants,
                batch_size,
                priority,
                by: crate::guard::login(by),
            };
            let (id, count) = start_campaign(&config, &mut control, start).await?;
            crate::say!("{id}");
            tracing::info!("campaign {id}: {count} tenants queued");
            Ok(0)
        }
        CampaignCommand::Status { id, json } => {
            let mut control = open_control(&config, &config_path)?;
            status(&mut control, id.as_deref(), json)
        }
        CampaignCommand::Links { id, base_url, json } => {
            let mut control = open_control(&config, &config_path)?;
            let base = base_url
                .or_else(|| config.server.public_url.clone())
                .unwrap_or_else(|| format!("http://{}", config.server.listen));
            let tenants = control.campaign_tenants(Some(&id))?;
            if tenants.is_empty() {
                return Err(Error::usage(format!("unknown campaign {id}")));
            }
            let links: Vec<(String, String)> = tenants
                .iter()
                .map(|t| {
                    (
                        t.tenant.clone(),
                        format!("{}/t/{}", base.trim_end_matches('/'), t.token),
                    )
                })
                .collect();
            if json {
                print_json(&json!(links
                    .iter()
                    .map(|(t, l)| json!({"tenant": t, "link": l}))
                    .collect::<Vec<_>>()));
            } else {
                for (tenant, link) in links {
                    crate::say!("{tenant}\t{link}");
                }
            }
            Ok(0)
        }
        CampaignCommand::Retry { id, tenants, by } => {
            let mut control = open_audited(&config, &config_path).await?;
            if !control.campaigns()?.iter().any(|c| c.id == id) {
                return Err(Error::usage(format!("unknown campaign {id}")));
            }
            let requeued = control.retry_failed(&id, &tenants)?;
            control
                .append(
                    &crate::guard::login(by),
                    "campaign-retry",
                    &id,
                    json!({"tenants": requeued}),
                )
                .await?;
            crate::say!("{} failed tenants queued again", requeued.len());
            Ok(0)
        }
        CampaignCommand::ImportAttributes { file } => {
            let mut control = open_control(&config, &config_path)?;
            let attributes = read_attributes(&file)?;
            control.set_attributes(&attributes)?;
            crate::say!("attributes of {} tenants imported", attributes.len());
            Ok(0)
        }
    }
}

fn campaign_tenants(file: Option<&PathBuf>, plan: Option<&PathBuf>) -> Result<Vec<String>> {
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
        let text = std::fs::read_to_string(plan)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", plan.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::usage(format!("{} is not JSON: {e}", plan.display())))?;
        if let Some(map) = json.get("tenants").and_then(|t| t.as_object()) {
            tenants.extend(map.keys().cloned());
        }
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

fn read_attributes(file: &PathBuf) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
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
    control: &mut crate::guard::Control,
    request: StartRequest,
) -> Result<(String, usize)> {
    if control.incident(&request.incident)?.is_none() {
        return Err(Error::usage(format!(
            "unknown incident {}: `lifeboat incident list`",
            request.incident
        )));
    }
    if request.batch_size == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
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
    let now = now_us();
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
    };
    control.create_campaign(&campaign, &with_users)?;
    control
        .append(
            &request.by,
            "campaign",
            &campaign.id,
            json!({"incident": request.incident, "tenants": with_users.len(),
                   "target": request.target_json, "priority": request.priority}),
        )
        .await?;
    Ok((campaign.id, with_users.len()))
}

async fn resolve_target(
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
        let streams = history.streams_at(vault, tenants, position).await?;
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

fn status(control: &mut ControlStore, id: Option<&str>, as_json: bool) -> Result<u8> {
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
            .map(|t| json!({"tenant": t.tenant, "reason": t.reason, "attempts": t.attempts}))
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
        }));
    }
    if as_json {
        print_json(&json!(report));
    } else {
        for r in &report {
            crate::say!(
                "campaign {} (incident {}): {} of {} tenants restored, {} of {} users; restored to {}",
                r["id"].as_str().unwrap_or(""),
                r["incident"].as_str().unwrap_or(""),
                r["tenants_restored"],
                r["tenants"],
                r["users_restored"],
                r["users"],
                r["restored_to"].as_str().unwrap_or("")
            );
            if let Some(stages) = r["stages"].as_object() {
                let line: Vec<String> = stages
                    .iter()
                    .filter(|(_, n)| n.as_u64() != Some(0))
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                crate::say!("  {}", line.join(", "));
            }
            if let Some(eta) = r["estimated_completion"].as_str() {
                crate::say!("  estimated completion {eta}");
            }
            for f in r["failed"].as_array().into_iter().flatten() {
                crate::say!(
                    "  FAILED {}: {}",
                    f["tenant"].as_str().unwrap_or(""),
                    f["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// worker

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Only this campaign's tenants.
    #[arg(long)]
    campaign: Option<String>,
    /// Exit when no tenant is left to restore (instead of waiting for new campaigns).
    #[arg(long)]
    until_done: bool,
    /// Tenants restored at once within a batch.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// This worker's name (default: host and process id).
    #[arg(long)]
    name: Option<String>,
}

pub async fn worker(config_path: Option<PathBuf>, args: WorkerArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    let url = control_url(&config, &config_path)?;
    open_control(&config, &config_path)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".to_string());
        // The pid alone repeats across containers: a random part keeps names apart.
        let suffix = lifeboat_control::new_id().unwrap_or_default();
        format!(
            "{host}-{}-{}",
            std::process::id(),
            &suffix[..4.min(suffix.len())]
        )
    });
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.set();
        });
    }
    let mut done = 0usize;
    let mut failed = 0usize;
    while !stop.is_set() {
        let outcome = work_once(&config, &url, &name, args.campaign.as_deref(), args.jobs).await?;
        match outcome {
            Some((ok, bad)) => {
                done += ok;
                failed += bad;
                lifeboat_core::failpoint::pause("worker.after-batch");
            }
            None => {
                if args.until_done && !pending(&url, args.campaign.as_deref())? {
                    break;
                }
                stop.sleep(Duration::from_millis(500)).await;
            }
        }
    }
    crate::say!("worker {name}: {done} tenants restored and verified, {failed} failed attempts");
    Ok(if failed > 0 { EXIT_PROBLEM } else { 0 })
}

/// Run `workers` workers in this process until `campaign` has nothing left to restore.
/// Returns tenants restored and failed attempts.
pub(crate) async fn run_workers(
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

/// Is any tenant still to be restored (queued or being restored by someone)?
fn pending(url: &str, campaign: Option<&str>) -> Result<bool> {
    let mut control = ControlStore::open(url)?;
    Ok(control
        .campaign_tenants(campaign)?
        .iter()
        .any(|t| matches!(t.stage, Stage::Queued | Stage::Restoring | Stage::Verifying)))
}

fn acceptance(config: &Config) -> Acceptance {
    Acceptance {
        customer: config.campaigns.acceptance == "customer",
        auto_after_us: config
            .campaigns
            .auto_accept_minutes
            .map(|m| (m as i64).saturating_mul(60_000_000)),
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
    tracing::info!(
        "worker {worker}: {} tenants of campaign {}",
        keys.len(),
        campaign.id
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
        let result = restore_batch(config, &campaign, &keys, jobs).await;
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
                            let stage = if policy.customer {
                                Stage::AwaitingAcceptance
                            } else {
                                Stage::Restored
                            };
                            let n = rows.get(tenant).map(|n| *n as i64);
                            if control.set_stage(worker, &campaign.id, tenant, stage, None, n)? {
                                ok += 1;
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
    Ok(Some(outcome?))
}

/// Restore `tenants` to the campaign's target. Returns rows per tenant, failures by
/// tenant, and the resolved target.
async fn restore_batch(
    config: &Config,
    campaign: &Campaign,
    tenants: &[String],
    jobs: usize,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, String>, Resolved)> {
    // The positions resolved when the campaign started.
    let positions: Option<BTreeMap<String, u64>> = campaign
        .target
        .get("positions")
        .and_then(|p| serde_json::from_value(p.clone()).ok());
    let target = match positions {
        Some(positions) => Target::Positions(positions),
        None => Target::parse(
            campaign.target.get("at").and_then(|v| v.as_str()),
            campaign.target.get("before_tx").and_then(|v| v.as_str()),
        )?,
    };
    let request = crate::restore::Request {
        tenants: tenants.to_vec(),
        target,
        sources: Vec::new(),
        as_key: None,
        into_url: None,
        dry_run: false,
        jobs: jobs.max(1),
        quiet: true,
    };
    let summary = crate::restore::execute(config, &request).await?;
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
        let streams = history.streams_at(&vault, &keys, *position).await?;
        for (tenant, mut stream) in streams {
            let schemas = stream.schemas();
            let mut want: BTreeMap<String, TableDigest> = BTreeMap::new();
            for (table, schema) in &schemas {
                let hasher = RowHasher::new(&schema.columns);
                let mut digest = TableDigest::default();
                stream.for_each_row(table, |row| digest.add(hasher.hash(&row)))?;
                want.insert(table.clone(), digest);
            }
            let mut got: BTreeMap<String, TableDigest> = BTreeMap::new();
            let mut projections: BTreeMap<String, (RowHasher, Vec<Option<usize>>)> =
                BTreeMap::new();
            source
                .for_each_tenant_row(&tenant, |table, columns, row| {
                    let Some(schema) = schemas.get(table) else {
                        got.entry(table.to_string()).or_default().add(0);
                        return;
                    };
                    let (hasher, map) = projections.entry(table.to_string()).or_insert_with(|| {
                        (
                            RowHasher::new(&schema.columns),
                            schema
                                .columns
                                .iter()
                                .map(|c| columns.iter().position(|x| x == c))
                                .collect(),
                        )
                    });
                    let projected: Vec<lifeboat_core::model::Value> = map
                        .iter()
                        .map(|i| {
                            i.and_then(|i| row.get(i).cloned())
                                .unwrap_or(lifeboat_core::model::Value::Null)
                        })
                        .collect();
                    got.entry(table.to_string())
                        .or_default()
                        .add(hasher.hash(&projected));
                })
                .await?;
            want.retain(|_, d| d.rows > 0);
            got.retain(|_, d| d.rows > 0);
            if want != got {
                let tables: Vec<String> = want
                    .keys()
                    .chain(got.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|t| want.get(*t) != got.get(*t))
                    .map(|t| {
                        format!(
                            "{name}.{t}: {} rows live, {} in the vault",
                            got.get(t).map_or(0, |d| d.rows),
                            want.get(t).map_or(0, |d| d.rows)
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

// ---------------------------------------------------------------------------------------
// serve

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default: [server] listen, 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
}

pub async fn serve(config_path: Option<PathBuf>, args: ServeArgs) -> Result<u8> {
    let config = load_config(config_path.clone())?;
    open_control(&config, &config_path)?;
    let listen = args.listen.unwrap_or_else(|| config.server.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::source(format!("listener: {e}")))?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let token = std::env::var("LIFEBOAT_TOKEN")
        .ok()
        .or_else(|| config.server.token.clone());
    let policy = acceptance(&config);
    let state = lifeboat_web::AppState::new(
        &control_url(&config, &config_path)?,
        lifeboat_web::PageInfo::new(&config.server.page_name, &public_url),
        token,
        policy.auto_after_us.filter(|_| policy.customer),
    )?;
    crate::say!("serving the status page on http://{address}/");
    lifeboat_web::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| Error::source(format!("server: {e}")))?;
    crate::say!("stopped");
    Ok(0)
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
