//! The snapshot: every public body (Statuspage v2 JSON; the HTML page and the Atom feed in
//! every language) rendered once from the control store, with its ETag, and every private
//! tenant view by link token. Requests read the current snapshot; nothing queries or
//! renders per request except a tenant's own page.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{json, Value as Json};

use lifeboat_control::{
    Campaign, CampaignTenant, Component, ComponentStatus, ControlStore, Impact, Incident,
    Maintenance, MaintenanceStatus, Stage,
};
use lifeboat_core::config::{SlaConfig, StatusConfig};
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::vault::sha256_hex;
use lifeboat_core::Result;

use crate::html;
use crate::i18n::Lang;

/// What the page is called and where it lives.
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub id: String,
    pub name: String,
    pub url: String,
    /// `[sla]`: private pages show a restored tenant's downtime and credit.
    pub sla: Option<SlaConfig>,
    /// `[status]`: the promised update cadence; each unresolved incident shows when its
    /// next update is due.
    pub status: StatusConfig,
}

impl PageInfo {
    pub fn new(name: &str, url: &str) -> PageInfo {
        // A stable 12-character id derived from the name, in Statuspage's alphabet.
        let digest = sha256_hex(name.as_bytes());
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let id = digest
            .as_bytes()
            .chunks(2)
            .take(12)
            .map(|pair| {
                let n =
                    u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0);
                ALPHABET[usize::from(n) % ALPHABET.len()] as char
            })
            .collect();
        PageInfo {
            id,
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            sla: None,
            status: StatusConfig::default(),
        }
    }

    /// Show when each unresolved incident's next update is due under `status`.
    pub fn with_update_every(mut self, status: StatusConfig) -> PageInfo {
        self.status = status;
        self
    }

    /// When `incident`'s next public update is due (µs): none without a promised cadence
    /// for its impact, or once it is resolved (or its stored times do not read).
    pub fn next_update_due_us(&self, incident: &Incident) -> Option<i64> {
        let every = self.status.update_every(incident.impact.as_str())?;
        let every_us = i64::try_from(every.as_micros()).ok()?;
        incident.next_update_due_us(every_us).ok().flatten()
    }

    /// Show restored tenants their downtime and credit under these tiers.
    pub fn with_sla(mut self, sla: Option<SlaConfig>) -> PageInfo {
        self.sla = sla;
        self
    }
}

/// One rendered response body.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Bytes,
    pub etag: String,
    pub content_type: &'static str,
}

impl Rendered {
    fn new(bytes: Vec<u8>, content_type: &'static str) -> Rendered {
        let etag = format!("\"{}\"", &sha256_hex(&bytes)[..32]);
        Rendered {
            bytes: Bytes::from(bytes),
            etag,
            content_type,
        }
    }

    fn json(value: &Json) -> Rendered {
        Rendered::new(value.to_string().into_bytes(), "application/json")
    }
}

/// A campaign's public progress: counts only, never a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub campaign: String,
    pub incident: String,
    pub tenants: u64,
    pub tenants_restored: u64,
    pub tenants_failed: u64,
    pub users: u64,
    pub users_restored: u64,
    pub started_at: String,
    /// Estimated completion, from the measured throughput; `None` until measured.
    pub eta: Option<String>,
    pub target_time: String,
    /// Each phase's progress, in order (empty: a campaign of one phase).
    pub phases: Vec<PhaseProgress>,
}

/// One phase of a phased campaign: how many of its tenants it has restored.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseProgress {
    pub sources: Vec<String>,
    /// For people: its components' names (its sources' until named).
    pub label: String,
    pub tenants: u64,
    /// Tenants restored and verified in this phase.
    pub tenants_restored: u64,
    /// Open for workers' claims: every tenant still to be worked on has reached it.
    pub open: bool,
}

/// What one tenant's private page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantView {
    pub tenant: String,
    pub campaign: String,
    pub incident_name: String,
    pub stage: Stage,
    /// Unfinished tenants ahead of this one, plus one; `None` once its restore ended.
    pub position: Option<u64>,
    pub eta: Option<String>,
    pub target_time: String,
    pub reason: Option<String>,
    /// The tenant's export of its data as of the restore point, once asked for.
    pub export: Option<lifeboat_control::Export>,
    /// Its downtime and credit, once it ended (with `[sla]`).
    pub sla: Option<TenantSla>,
    /// In a phased campaign: each phase's label (as `PhaseProgress::label`) and the
    /// tenant's stage in it.
    pub phases: Vec<(String, Stage)>,
}

/// A restored tenant's downtime in the incident, and what it earns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantSla {
    pub month: String,
    pub downtime_minutes: f64,
    pub uptime_percent: f64,
    pub tier: Option<String>,
    pub credit_percent: f64,
}

pub struct Snapshot {
    pub version: i64,
    pub built_at_us: i64,
    pub page: PageInfo,
    /// The JSON bodies, by path.
    pub bodies: HashMap<&'static str, Rendered>,
    /// The pages for people, by path and language.
    pub pages: HashMap<(&'static str, Lang), Rendered>,
    pub tenants: HashMap<String, TenantView>,
    /// Tenants of each campaign by stage: (campaign, stage) → count (for `/metrics`).
    pub stages: BTreeMap<(String, String), u64>,
}

/// The public paths rendered in every language.
pub const PAGE_PATHS: [&str; 4] = ["/", "/history.atom", "/subscribe", "/support"];

/// The public paths and what they serve.
pub const JSON_PATHS: [&str; 8] = [
    "/api/v2/summary.json",
    "/api/v2/status.json",
    "/api/v2/components.json",
    "/api/v2/incidents.json",
    "/api/v2/incidents/unresolved.json",
    "/api/v2/scheduled-maintenances.json",
    "/api/v2/scheduled-maintenances/upcoming.json",
    "/api/v2/scheduled-maintenances/active.json",
];

fn unresolved(incident: &Incident) -> bool {
    !incident.status.is_resolved()
}

fn component_json(page: &PageInfo, c: &Component) -> Json {
    json!({
        "id": c.id,
        "name": c.name,
        "status": c.status,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "position": c.position,
        "description": null,
        "showcase": false,
        "start_date": null,
        "group_id": null,
        "page_id": page.id,
        "group": false,
        "only_show_if_degraded": false,
    })
}

/// An incident as Statuspage's API shows it (also the `incident` of a webhook's payload).
pub fn incident_json(page: &PageInfo, components: &[Component], i: &Incident) -> Json {
    let mut json = json!({
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
        "monitoring_at": i.monitoring_at,
        "resolved_at": i.resolved_at,
        "impact": i.impact,
        "shortlink": format!("{}/#incident-{}", page.url, i.id),
        "started_at": i.started_at,
        "page_id": page.id,
        "incident_updates": i.updates.iter().map(|u| json!({
            "id": u.id,
            "status": u.status,
            "body": u.body,
            "incident_id": u.incident_id,
            "created_at": u.created_at,
            "updated_at": u.created_at,
            "display_at": u.created_at,
            "affected_components": u.affected_components,
            "deliver_notifications": true,
            "custom_tweet": null,
            "tweet_id": null,
        })).collect::<Vec<_>>(),
        "components": components
            .iter()
            .filter(|c| i.components.contains(&c.id))
            .map(|c| component_json(page, c))
            .collect::<Vec<_>>(),
    });
    // With a promised cadence (`[status] update_every`), when the next update is due: an
    // extra field, null once resolved. Without one, Statuspage's exact shape.
    if let (Some(_), Some(object)) = (&page.status.update_every, json.as_object_mut()) {
        let due = page.next_update_due_us(i).map(format_us);
        object.insert("next_update_at".into(), due.into());
    }
    // A published postmortem only: other incidents keep Statuspage's exact shape.
    if let (Some(body), Some(object)) = (&i.postmortem_body, json.as_object_mut()) {
        object.insert("postmortem_body".into(), body.clone().into());
        object.insert(
            "postmortem_published_at".into(),
            i.postmortem_published_at.clone().into(),
        );
    }
    json
}

fn maintenance_json(page: &PageInfo, components: &[Component], m: &Maintenance) -> Json {
    json!({
        "id": m.id,
        "name": m.name,
        "status": m.status,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "monitoring_at": m.monitoring_at,
        "resolved_at": m.resolved_at,
        "impact": "maintenance",
        "shortlink": format!("{}/#maintenance-{}", page.url, m.id),
        "started_at": m.started_at,
        "page_id": page.id,
        "incident_updates": m.updates.iter().map(|u| json!({
            "id": u.id,
            "status": u.status,
            "body": u.body,
            "incident_id": u.maintenance_id,
            "created_at": u.created_at,
            "updated_at": u.created_at,
            "display_at": u.created_at,
            "affected_components": null,
            "deliver_notifications": true,
            "custom_tweet": null,
            "tweet_id": null,
        })).collect::<Vec<_>>(),
        "components": components
            .iter()
            .filter(|c| m.components.contains(&c.id))
            .map(|c| component_json(page, c))
            .collect::<Vec<_>>(),
        "scheduled_for": m.scheduled_for,
        "scheduled_until": m.scheduled_until,
    })
}

/// The components as the page shows them: one that an active maintenance concerns is
/// `under_maintenance` while its own status is `operational` (an incident's status says
/// more, and stays).
pub fn with_maintenance(components: &[Component], maintenances: &[Maintenance]) -> Vec<Component> {
    components
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let maintained = maintenances
                .iter()
                .any(|m| m.status.is_active() && m.components.contains(&c.id));
            if maintained && c.status == ComponentStatus::Operational {
                c.status = ComponentStatus::UnderMaintenance;
            }
            c
        })
        .collect()
}

/// The overall indicator: the worst of the unresolved incidents' impacts and the
/// components' statuses.
pub fn indicator(incidents: &[Incident], components: &[Component]) -> (&'static str, &'static str) {
    let impact_rank = |impact: Impact| match impact {
        Impact::None => 0,
        Impact::Minor => 1,
        Impact::Major => 2,
        Impact::Critical => 3,
    };
    let status_rank = |status: ComponentStatus| match status {
        ComponentStatus::Operational | ComponentStatus::UnderMaintenance => 0,
        ComponentStatus::DegradedPerformance => 1,
        ComponentStatus::PartialOutage => 2,
        ComponentStatus::MajorOutage => 3,
    };
    let worst = incidents
        .iter()
        .filter(|i| unresolved(i))
        .map(|i| impact_rank(i.impact))
        .chain(components.iter().map(|c| status_rank(c.status)))
        .max()
        .unwrap_or(0);
    match worst {
        1 => ("minor", "Minor Service Outage"),
        2 => ("major", "Partial System Outage"),
        3 => ("critical", "Major Service Outage"),
        _ if components
            .iter()
            .any(|c| c.status == ComponentStatus::UnderMaintenance) =>
        {
            ("maintenance", "Service Under Maintenance")
        }
        _ => ("none", "All Systems Operational"),
    }
}

/// Tenants finished per microsecond since the campaign's first start, if measurable.
fn throughput(tenants: &[&CampaignTenant]) -> Option<f64> {
    let start = tenants.iter().filter_map(|t| t.started_at_us).min()?;
    let done: Vec<i64> = tenants
        .iter()
        .filter(|t| t.stage.is_finished())
        .filter_map(|t| t.done_at_us)
        .collect();
    let last = *done.iter().max()?;
    let elapsed = (last - start).max(1) as f64;
    Some(done.len() as f64 / elapsed)
}

/// Public progress and private views of every campaign.
pub fn campaign_views(
    campaigns: &[Campaign],
    incidents: &[Incident],
    tenants: &[CampaignTenant],
    now: i64,
) -> (Vec<Progress>, HashMap<String, TenantView>) {
    let mut progress = Vec::new();
    let mut views = HashMap::new();
    for campaign in campaigns {
        let mine: Vec<&CampaignTenant> = tenants
            .iter()
            .filter(|t| t.campaign == campaign.id)
            .collect();
        let rate = throughput(&mine);
        let unfinished = mine.iter().filter(|t| !t.stage.is_finished()).count() as u64;
        let eta_after = |count: u64| {
            rate.filter(|r| *r > 0.0)
                .map(|r| format_us(now + (count as f64 / r) as i64))
        };
        // A phased campaign counts its work in phases: each tenant's phases restored (all
        // of them once it is restored or failed), at the rate measured since its first
        // claim; a tenant's time is every tenant's earlier phases still to do, plus the
        // last phases of the tenants up to its place.
        let phased = !campaign.phases.is_empty();
        let count = campaign.phase_count() as i64;
        let done_phases = |t: &CampaignTenant| -> i64 {
            if t.stage == Stage::Failed || t.is_restored(campaign) {
                count
            } else {
                (0..count).filter(|j| t.phase_restored(*j)).count() as i64
            }
        };
        let phase_rate = {
            let start = mine.iter().filter_map(|t| t.started_at_us).min();
            let done: i64 = mine.iter().map(|t| done_phases(t)).sum();
            start
                .filter(|_| phased && done > 0)
                .map(|s| done as f64 / (now - s).max(1) as f64)
        };
        let eta_phases = |phases: i64| {
            phase_rate
                .filter(|r| *r > 0.0)
                .map(|r| format_us(now + (phases as f64 / r) as i64))
        };
        let earlier_left: i64 = mine
            .iter()
            .filter(|t| t.stage != Stage::Failed && !t.is_restored(campaign))
            .map(|t| (0..count - 1).filter(|j| !t.phase_restored(*j)).count() as i64)
            .sum();
        let phases_left: i64 = mine.iter().map(|t| count - done_phases(t)).sum();
        let incident_name = incidents
            .iter()
            .find(|i| i.id == campaign.incident)
            .map(|i| i.name.clone())
            .unwrap_or_default();
        progress.push(Progress {
            campaign: campaign.id.clone(),
            incident: campaign.incident.clone(),
            tenants: mine.len() as u64,
            tenants_restored: mine.iter().filter(|t| t.is_restored(campaign)).count() as u64,
            tenants_failed: mine.iter().filter(|t| t.stage == Stage::Failed).count() as u64,
            users: mine.iter().map(|t| t.users.max(0) as u64).sum(),
            users_restored: mine
                .iter()
                .filter(|t| t.is_restored(campaign))
                .map(|t| t.users.max(0) as u64)
                .sum(),
            started_at: campaign.created_at.clone(),
            eta: if unfinished == 0 {
                None
            } else if phased {
                eta_phases(phases_left)
            } else {
                eta_after(unfinished)
            },
            target_time: campaign.target_time.clone(),
            phases: campaign
                .phases
                .iter()
                .enumerate()
                .map(|(j, phase)| PhaseProgress {
                    sources: phase.sources.clone(),
                    label: phase.sources.join(", "),
                    tenants: mine.len() as u64,
                    tenants_restored: mine.iter().filter(|t| t.phase_restored(j as i64)).count()
                        as u64,
                    // Opened by a claim, or as good as: no tenant still to be worked on
                    // is in an earlier phase.
                    open: phase.opened_at_us.is_some()
                        || !mine.iter().any(|t| {
                            matches!(t.stage, Stage::Queued | Stage::Restoring | Stage::Verifying)
                                && t.phase < j as i64
                        }),
                })
                .collect(),
        });
        let mut ahead = 0u64;
        for t in &mine {
            let finished = t.stage.is_finished();
            let position = (!finished).then(|| {
                ahead += 1;
                ahead
            });
            views.insert(
                t.token.clone(),
                TenantView {
                    tenant: t.tenant.clone(),
                    campaign: campaign.id.clone(),
                    incident_name: incident_name.clone(),
                    stage: t.stage,
                    position,
                    eta: if phased {
                        position.and_then(|p| eta_phases(earlier_left + p as i64))
                    } else {
                        position.and_then(eta_after)
                    },
                    target_time: campaign.target_time.clone(),
                    reason: t.reason.clone(),
                    export: None,
                    sla: None,
                    phases: campaign
                        .phases
                        .iter()
                        .enumerate()
                        .map(|(j, phase)| (phase.sources.join(", "), t.phase_stage(j as i64)))
                        .collect(),
                },
            );
        }
    }
    (progress, views)
}

/// Phases labelled with their sources' component names, as the page calls them.
fn name_phases(
    components: &[Component],
    progress: &mut [Progress],
    views: &mut HashMap<String, TenantView>,
) {
    let label = |sources: &[String]| -> String {
        sources
            .iter()
            .map(|s| {
                components
                    .iter()
                    .find(|c| &c.source == s)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| s.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in progress.iter_mut() {
        for phase in &mut p.phases {
            phase.label = label(&phase.sources);
        }
    }
    for view in views.values_mut() {
        let Some(p) = progress.iter().find(|p| p.campaign == view.campaign) else {
            continue;
        };
        for ((name, _), phase) in view.phases.iter_mut().zip(&p.phases) {
            name.clone_from(&phase.label);
        }
    }
}

/// Each tenant whose downtime ended: its downtime in the month its incident started, and
/// the credit it earns there.
fn add_sla(
    control: &mut ControlStore,
    sla: &SlaConfig,
    campaigns: &[Campaign],
    views: &mut HashMap<String, TenantView>,
) -> Result<()> {
    let incidents: std::collections::BTreeSet<&str> =
        campaigns.iter().map(|c| c.incident.as_str()).collect();
    let mut lines = HashMap::new();
    for incident in incidents {
        let report = control.sla_report(incident, sla, None)?;
        for line in report.tenants {
            if line.down_until.is_some() {
                lines.insert(
                    (line.campaign.clone(), line.tenant.clone()),
                    TenantSla {
                        month: report.month.clone(),
                        downtime_minutes: line.downtime_minutes,
                        uptime_percent: line.uptime_percent,
                        tier: line.tier,
                        credit_percent: line.credit_percent,
                    },
                );
            }
        }
    }
    for view in views.values_mut() {
        view.sla = lines.remove(&(view.campaign.clone(), view.tenant.clone()));
    }
    Ok(())
}

impl Snapshot {
    /// The body of public `path` for a reader of `lang` (the JSON is the same for all).
    pub fn body(&self, path: &str, lang: Lang) -> Option<&Rendered> {
        PAGE_PATHS
            .iter()
            .find(|p| **p == path)
            .and_then(|p| self.pages.get(&(*p, lang)))
            .or_else(|| self.bodies.get(path))
    }

    /// Read everything the pages show from the control store and render it.
    pub fn build(control: &mut ControlStore, page: &PageInfo) -> Result<Snapshot> {
        let version = control.status_version()?;
        let now = now_us();
        let maintenances = control.maintenances()?;
        let components = with_maintenance(&control.components()?, &maintenances);
        let incidents = control.incidents()?;
        let campaigns = control.campaigns()?;
        let tenants = control.campaign_tenants(None)?;
        let (mut progress, mut views) = campaign_views(&campaigns, &incidents, &tenants, now);
        name_phases(&components, &mut progress, &mut views);
        let mut exports: HashMap<(String, String), lifeboat_control::Export> = control
            .exports()?
            .into_iter()
            .map(|e| ((e.campaign.clone(), e.tenant.clone()), e))
            .collect();
        for view in views.values_mut() {
            view.export = exports.remove(&(view.campaign.clone(), view.tenant.clone()));
        }
        if let Some(sla) = &page.sla {
            add_sla(control, sla, &campaigns, &mut views)?;
        }
        let changes = control.component_changes()?;
        let component_ids: Vec<String> = components.iter().map(|c| c.id.clone()).collect();
        let uptime = crate::uptime::uptime(&component_ids, &changes, &incidents, now);
        let mut stages = BTreeMap::new();
        for t in &tenants {
            *stages
                .entry((t.campaign.clone(), t.stage.as_str().to_string()))
                .or_default() += 1;
        }

        let updated_at = incidents
            .iter()
            .map(|i| i.updated_at.clone())
            .chain(components.iter().map(|c| c.updated_at.clone()))
            .chain(maintenances.iter().map(|m| m.updated_at.clone()))
            .max()
            .unwrap_or_else(|| format_us(now));
        let page_json = json!({
            "id": page.id,
            "name": page.name,
            "url": page.url,
            "time_zone": "Etc/UTC",
            "updated_at": updated_at,
        });
        let (indicator, description) = indicator(&incidents, &components);
        let status = json!({"indicator": indicator, "description": description});
        let components_json: Vec<Json> =
            components.iter().map(|c| component_json(page, c)).collect();
        let all: Vec<Json> = incidents
            .iter()
            .take(50)
            .map(|i| incident_json(page, &components, i))
            .collect();
        let open: Vec<Json> = incidents
            .iter()
            .filter(|i| unresolved(i))
            .map(|i| incident_json(page, &components, i))
            .collect();
        // Upcoming: scheduled, soonest first; active: in progress or verifying.
        let mut upcoming: Vec<&Maintenance> = maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Scheduled)
            .collect();
        upcoming.sort_by(|a, b| a.scheduled_for.cmp(&b.scheduled_for));
        let active: Vec<&Maintenance> = maintenances
            .iter()
            .filter(|m| m.status.is_active())
            .collect();
        let render = |list: &[&Maintenance]| -> Vec<Json> {
            list.iter()
                .map(|m| maintenance_json(page, &components, m))
                .collect()
        };
        let all_maintenances: Vec<Json> = maintenances
            .iter()
            .take(50)
            .map(|m| maintenance_json(page, &components, m))
            .collect();
        let upcoming_json = render(&upcoming);
        let active_json = render(&active);
        let current: Vec<Json> = active_json
            .iter()
            .chain(upcoming_json.iter())
            .cloned()
            .collect();

        let mut bodies = HashMap::new();
        bodies.insert(
            "/api/v2/summary.json",
            Rendered::json(&json!({
                "page": page_json,
                "components": components_json,
                "incidents": open,
                "scheduled_maintenances": current,
                "status": status,
            })),
        );
        bodies.insert(
            "/api/v2/status.json",
            Rendered::json(&json!({"page": page_json, "status": status})),
        );
        bodies.insert(
            "/api/v2/components.json",
            Rendered::json(&json!({"page": page_json, "components": components_json})),
        );
        bodies.insert(
            "/api/v2/incidents.json",
            Rendered::json(&json!({"page": page_json, "incidents": all})),
        );
        bodies.insert(
            "/api/v2/incidents/unresolved.json",
            Rendered::json(&json!({"page": page_json, "incidents": open})),
        );
        for (path, list) in [
            ("/api/v2/scheduled-maintenances.json", all_maintenances),
            (
                "/api/v2/scheduled-maintenances/upcoming.json",
                upcoming_json,
            ),
            ("/api/v2/scheduled-maintenances/active.json", active_json),
        ] {
            bodies.insert(
                path,
                Rendered::json(&json!({"page": page_json, "scheduled_maintenances": list})),
            );
        }
        bodies.insert(
            "/api/lifeboat/campaigns.json",
            Rendered::json(&json!({
                "page": page_json,
                "campaigns": progress.iter().map(|p| json!({
                    "id": p.campaign,
                    "incident_id": p.incident,
                    "tenants": p.tenants,
                    "tenants_restored": p.tenants_restored,
                    "tenants_failed": p.tenants_failed,
                    "users": p.users,
                    "users_restored": p.users_restored,
                    "started_at": p.started_at,
                    "estimated_completion": p.eta,
                    "restored_to": p.target_time,
                    "phases": p.phases.iter().map(|ph| json!({
                        "name": ph.label,
                        "tenants": ph.tenants,
                        "tenants_restored": ph.tenants_restored,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })),
        );
        let view = html::PublicView {
            page,
            components: &components,
            incidents: &incidents,
            progress: &progress,
            uptime: &uptime,
            maintenance: (&active, &upcoming),
            indicator,
            now_us: now,
        };
        let mut pages = HashMap::new();
        for lang in Lang::ALL {
            pages.insert(
                ("/", lang),
                Rendered::new(
                    html::public_page(lang, &view).into_bytes(),
                    "text/html; charset=utf-8",
                ),
            );
            pages.insert(
                ("/subscribe", lang),
                Rendered::new(
                    crate::forms::subscribe_page(lang, page, &components).into_bytes(),
                    "text/html; charset=utf-8",
                ),
            );
            pages.insert(
                ("/support", lang),
                Rendered::new(
                    crate::forms::support_page(lang, page).into_bytes(),
                    "text/html; charset=utf-8",
                ),
            );
            pages.insert(
                ("/history.atom", lang),
                Rendered::new(
                    html::atom_feed(lang, page, &incidents, &updated_at).into_bytes(),
                    "application/atom+xml",
                ),
            );
        }
        Ok(Snapshot {
            version,
            built_at_us: now,
            page: page.clone(),
            bodies,
            pages,
            tenants: views,
            stages,
        })
    }
}

#[cfg(test)]
mod tests {
    use lifeboat_control::{Campaign, CampaignTenant, Phase, Stage};
    use lifeboat_core::time::{format_us, parse};

    const SECOND: i64 = 1_000_000;

    fn tenant(key: &str, rank: i64, phase: i64, stage: Stage, started: i64) -> CampaignTenant {
        CampaignTenant {
            campaign: "c1".into(),
            tenant: key.into(),
            rank,
            token: format!("tok-{key}"),
            users: 1,
            stage,
            attempts: 0,
            reason: None,
            worker: None,
            lease_until_us: None,
            started_at_us: Some(started),
            done_at_us: None,
            awaiting_since_us: None,
            rows: None,
            phase,
        }
    }

    /// "wiki; tracker": t1's wiki is back, t2's not yet; one phase in ten seconds.
    #[test]
    fn a_phased_campaign_shows_each_phase_and_counts_its_time_in_phases() {
        let now = 1_800_000_000 * SECOND;
        let start = now - 10 * SECOND;
        let campaign = Campaign {
            id: "c1".into(),
            incident: "i1".into(),
            target: serde_json::Value::Null,
            target_time: format_us(start),
            batch_size: 1,
            priority: String::new(),
            created_at: format_us(start),
            created_at_us: start,
            created_by: "ops".into(),
            phases: vec![
                Phase::new(vec!["wiki".into()]),
                Phase::new(vec!["tracker".into()]),
            ],
        };
        let tenants = [
            tenant("t1", 0, 1, Stage::Queued, start),
            tenant("t2", 1, 0, Stage::Restoring, start),
        ];
        let (progress, views) = super::campaign_views(&[campaign], &[], &tenants, now);
        let p = &progress[0];
        assert_eq!(p.tenants_restored, 0);
        let phases: Vec<(&str, u64, u64)> = p
            .phases
            .iter()
            .map(|ph| (ph.label.as_str(), ph.tenants_restored, ph.tenants))
            .collect();
        assert_eq!(phases, [("wiki", 1, 2), ("tracker", 0, 2)]);
        // Three phases left at one per ten seconds.
        let eta = |e: &Option<String>| parse(e.as_deref().expect("an estimate")).expect("time");
        assert_eq!(eta(&p.eta), now + 30 * SECOND);
        let t1 = &views["tok-t1"];
        assert_eq!(
            t1.phases,
            [
                ("wiki".to_string(), Stage::Restored),
                ("tracker".to_string(), Stage::Queued)
            ]
        );
        // t1 waits for t2's wiki, then its own tracker; t2 for its wiki and both trackers.
        assert_eq!(eta(&t1.eta), now + 20 * SECOND);
        let t2 = &views["tok-t2"];
        assert_eq!(t2.phases[0].1, Stage::Restoring);
        assert_eq!(eta(&t2.eta), now + 30 * SECOND);
    }
}
