//! Incidents and recovery campaigns in the control store (docs/status.md): components (one
//! per source), incidents and their updates in Statuspage's vocabulary, campaigns and the
//! stage of each of their tenants, claimed by workers under a lease.

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::control::ControlStore;
use crate::db::{Db, Row, Val};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS components (id TEXT PRIMARY KEY, source TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL, status TEXT NOT NULL, position BIGINT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    status TEXT NOT NULL, impact TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, started_at TEXT NOT NULL, monitoring_at TEXT,
    resolved_at TEXT);
CREATE TABLE IF NOT EXISTS incident_updates (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
    affected TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incident_components (incident TEXT NOT NULL,
    component TEXT NOT NULL, PRIMARY KEY (incident, component));
CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
    target TEXT NOT NULL, target_time TEXT NOT NULL, batch_size BIGINT NOT NULL,
    priority TEXT NOT NULL, created_at TEXT NOT NULL, created_at_us BIGINT NOT NULL,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_tenants (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
    rank BIGINT NOT NULL, token TEXT NOT NULL UNIQUE, users BIGINT NOT NULL,
    stage TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, reason TEXT,
    worker TEXT, lease_until_us BIGINT, started_at_us BIGINT, done_at_us BIGINT,
    awaiting_since_us BIGINT, rows_written BIGINT, PRIMARY KEY (campaign, tenant));
CREATE INDEX IF NOT EXISTS campaign_tenants_stage ON campaign_tenants (stage, campaign, rank);
CREATE TABLE IF NOT EXISTS tenant_attributes (tenant TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS status_version (one BIGINT PRIMARY KEY CHECK (one = 1),
    version BIGINT NOT NULL);
INSERT INTO status_version (one, version) VALUES (1, 0) ON CONFLICT DO NOTHING;
";

pub const INCIDENT_STATUSES: [&str; 5] = [
    "investigating",
    "identified",
    "monitoring",
    "resolved",
    "postmortem",
];
pub const IMPACTS: [&str; 4] = ["none", "minor", "major", "critical"];
pub const COMPONENT_STATUSES: [&str; 5] = [
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
];

/// A tenant's stages in a campaign, in order.
pub const STAGES: [&str; 6] = [
    "queued",
    "restoring",
    "verifying",
    "awaiting_acceptance",
    "restored",
    "failed",
];

/// Check `value` against Statuspage's vocabulary `allowed`.
pub fn check_word(what: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{what} {value:?} is not one of: {}",
            allowed.join(", ")
        )))
    }
}

/// A Statuspage-style identifier: 12 characters of `[a-z0-9]`, random.
pub fn new_id() -> Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| Error::source(format!("no randomness: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// An unguessable link token: 256 random bits, hex.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::source(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

fn now() -> (i64, String) {
    let us = lifeboat_core::time::now_us();
    (us, lifeboat_core::time::format_us(us))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub id: String,
    pub source: String,
    pub name: String,
    pub status: String,
    pub position: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A component's status change in an incident update.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AffectedComponent {
    pub code: String,
    pub name: String,
    pub old_status: String,
    pub new_status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentUpdate {
    pub id: String,
    pub incident_id: String,
    pub status: String,
    pub body: String,
    pub created_at: String,
    pub affected_components: Vec<AffectedComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: String,
    pub name: String,
    pub status: String,
    pub impact: String,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: String,
    pub monitoring_at: Option<String>,
    pub resolved_at: Option<String>,
    /// Newest first.
    pub updates: Vec<IncidentUpdate>,
    /// Component ids.
    pub components: Vec<String>,
}

/// A new incident or an update to one.
#[derive(Debug, Clone, Default)]
pub struct IncidentChange {
    pub name: Option<String>,
    pub status: String,
    pub impact: Option<String>,
    pub message: String,
    /// Source (component) -> new status.
    pub components: BTreeMap<String, String>,
}

/// A campaign: restore these tenants to `target` for `incident`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub id: String,
    pub incident: String,
    /// The restore target as the command line gave it (`{"at": …}` or
    /// `{"before_tx": …}`).
    pub target: serde_json::Value,
    /// The instant the tenants' data is restored to, RFC 3339.
    pub target_time: String,
    pub batch_size: u32,
    pub priority: String,
    pub created_at: String,
    pub created_at_us: i64,
    pub created_by: String,
}

/// One tenant of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignTenant {
    pub campaign: String,
    pub tenant: String,
    pub rank: i64,
    pub token: String,
    pub users: i64,
    pub stage: String,
    pub attempts: i64,
    pub reason: Option<String>,
    pub worker: Option<String>,
    pub lease_until_us: Option<i64>,
    pub started_at_us: Option<i64>,
    pub done_at_us: Option<i64>,
    pub awaiting_since_us: Option<i64>,
    pub rows: Option<i64>,
}

const TENANT_COLUMNS: &str = "campaign, tenant, rank, token, users, stage, attempts, reason, \
     worker, lease_until_us, started_at_us, done_at_us, awaiting_since_us, rows_written";

fn tenant_row(r: &Row) -> Result<CampaignTenant> {
    Ok(CampaignTenant {
        campaign: r.text(0)?,
        tenant: r.text(1)?,
        rank: r.int(2)?,
        token: r.text(3)?,
        users: r.int(4)?,
        stage: r.text(5)?,
        attempts: r.int(6)?,
        reason: r.opt_text(7)?,
        worker: r.opt_text(8)?,
        lease_until_us: r.opt_int(9)?,
        started_at_us: r.opt_int(10)?,
        done_at_us: r.opt_int(11)?,
        awaiting_since_us: r.opt_int(12)?,
        rows: r.opt_int(13)?,
    })
}

/// How a campaign hands a restored tenant over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    /// Wait for the tenant's admin to accept on the private page.
    pub customer: bool,
    /// Accept automatically after this long (microseconds); `None`: wait.
    pub auto_after_us: Option<i64>,
}

impl ControlStore {
    /// Run `work` in a write transaction that also moves the change counter.
    fn write<T>(&mut self, work: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        self.db.transaction(|db| {
            let out = work(db)?;
            db.execute(
                "UPDATE status_version SET version = version + 1 WHERE one = 1",
                &[],
            )?;
            Ok(out)
        })
    }

    /// A number that grows with every change to incidents, components or campaigns: the
    /// status page rebuilds its snapshot when it moves.
    pub fn status_version(&mut self) -> Result<i64> {
        Ok(self
            .db
            .query_one("SELECT version FROM status_version", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Make sure every source has a component (named `names[source]` or the source).
    pub fn ensure_components(&mut self, names: &BTreeMap<String, String>) -> Result<()> {
        let existing = self.components()?;
        let missing: Vec<(&String, &String)> = names
            .iter()
            .filter(|(source, name)| {
                !existing
                    .iter()
                    .any(|c| &c.source == *source && &c.name == *name)
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::new();
        for _ in &missing {
            ids.push(new_id()?);
        }
        let (_, at) = now();
        let start = existing.len() as i64;
        self.write(|db| {
            for (i, ((source, name), id)) in missing.iter().zip(&ids).enumerate() {
                db.execute(
                    "INSERT INTO components (id, source, name, status, position, created_at,
                         updated_at)
                     VALUES (?1, ?2, ?3, 'operational', ?4, ?5, ?5)
                     ON CONFLICT (source) DO UPDATE SET name = excluded.name",
                    &[
                        id.into(),
                        (*source).into(),
                        (*name).into(),
                        Val::Int(start + i as i64 + 1),
                        at.as_str().into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    pub fn components(&mut self) -> Result<Vec<Component>> {
        self.db
            .query(
                "SELECT id, source, name, status, position, created_at, updated_at
                 FROM components ORDER BY position",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Component {
                    id: r.text(0)?,
                    source: r.text(1)?,
                    name: r.text(2)?,
                    status: r.text(3)?,
                    position: r.int(4)?,
                    created_at: r.text(5)?,
                    updated_at: r.text(6)?,
                })
            })
            .collect()
    }

    /// Create an incident (`id` None) or add an update to one. Returns the incident id.
    pub fn change_incident(&mut self, id: Option<&str>, change: &IncidentChange) -> Result<String> {
        check_word("incident status", &change.status, &INCIDENT_STATUSES)?;
        if let Some(impact) = &change.impact {
            check_word("impact", impact, &IMPACTS)?;
        }
        if change.message.trim().is_empty() {
            return Err(Error::usage("an incident update needs a message"));
        }
        let components = self.components()?;
        let mut affected = Vec::new();
        for (source, status) in &change.components {
            check_word("component status", status, &COMPONENT_STATUSES)?;
            let component = components
                .iter()
                .find(|c| &c.source == source)
                .ok_or_else(|| {
                    let known: Vec<&str> = components.iter().map(|c| c.source.as_str()).collect();
                    Error::usage(format!(
                        "unknown component {source:?}; components: {}",
                        known.join(", ")
                    ))
                })?;
            affected.push((component.clone(), status.clone()));
        }
        let existing = match id {
            Some(id) => Some(self.incident(id)?.ok_or_else(|| {
                Error::usage(format!("unknown incident {id}: `lifeboat incident list`"))
            })?),
            None => None,
        };
        let incident_id = match &existing {
            Some(i) => i.id.clone(),
            None => new_id()?,
        };
        let update_id = new_id()?;
        let (_, at) = now();
        let affected_json: Vec<AffectedComponent> = affected
            .iter()
            .map(|(c, status)| AffectedComponent {
                code: c.id.clone(),
                name: c.name.clone(),
                old_status: c.status.clone(),
                new_status: status.clone(),
            })
            .collect();
        let affected_text = serde_json::to_string(&affected_json)
            .map_err(|e| Error::source(format!("incident update: {e}")))?;
        let status = change.status.as_str();
        let resolving = matches!(status, "resolved" | "postmortem");
        self.write(|db| {
            match &existing {
                None => {
                    db.execute(
                        "INSERT INTO incidents (id, name, status, impact, created_at, updated_at,
                             started_at, monitoring_at, resolved_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7)",
                        &[
                            incident_id.as_str().into(),
                            change.name.as_deref().unwrap_or("Incident").into(),
                            status.into(),
                            change.impact.as_deref().unwrap_or("none").into(),
                            at.as_str().into(),
                            (status == "monitoring").then_some(at.as_str()).into(),
                            resolving.then_some(at.as_str()).into(),
                        ],
                    )?;
                }
                Some(_) => {
                    db.execute(
                        "UPDATE incidents SET status = ?2, updated_at = ?3,
                             impact = COALESCE(?4, impact),
                             monitoring_at = CASE WHEN ?2 = 'monitoring'
                                 THEN COALESCE(monitoring_at, ?3) ELSE monitoring_at END,
                             resolved_at = CASE WHEN ?2 IN ('resolved', 'postmortem')
                                 THEN COALESCE(resolved_at, ?3) ELSE NULL END
                         WHERE id = ?1",
                        &[
                            incident_id.as_str().into(),
                            status.into(),
                            at.as_str().into(),
                            change.impact.as_deref().into(),
                        ],
                    )?;
                }
            }
            db.execute(
                "INSERT INTO incident_updates (id, incident, status, body, created_at, affected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    update_id.as_str().into(),
                    incident_id.as_str().into(),
                    status.into(),
                    change.message.as_str().into(),
                    at.as_str().into(),
                    affected_text.as_str().into(),
                ],
            )?;
            for (component, new_status) in &affected {
                db.execute(
                    "UPDATE components SET status = ?2, updated_at = ?3 WHERE id = ?1",
                    &[
                        component.id.as_str().into(),
                        new_status.as_str().into(),
                        at.as_str().into(),
                    ],
                )?;
                db.execute(
                    "INSERT INTO incident_components (incident, component) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    &[incident_id.as_str().into(), component.id.as_str().into()],
                )?;
            }
            // Resolving puts the incident's components back to operational, unless another
            // unresolved incident still names them.
            if resolving {
                db.execute(
                    "UPDATE components SET status = 'operational', updated_at = ?2
                     WHERE status <> 'operational'
                       AND id IN (SELECT component FROM incident_components WHERE incident = ?1)
                       AND id NOT IN (
                         SELECT ic.component FROM incident_components ic
                         JOIN incidents i ON i.id = ic.incident
                         WHERE i.id <> ?1 AND i.status NOT IN ('resolved', 'postmortem'))",
                    &[incident_id.as_str().into(), at.as_str().into()],
                )?;
            }
            Ok(())
        })?;
        Ok(incident_id)
    }

    pub fn incident(&mut self, id: &str) -> Result<Option<Incident>> {
        Ok(self.load_incidents(Some(id))?.pop())
    }

    /// Every incident, newest first, with its updates (newest first) and components.
    pub fn incidents(&mut self) -> Result<Vec<Incident>> {
        self.load_incidents(None)
    }

    /// The incidents (all, or the one with id `only`), as `incidents` describes them.
    fn load_incidents(&mut self, only: Option<&str>) -> Result<Vec<Incident>> {
        let (filter, by_id, params): (&str, &str, Vec<Val>) = match only {
            Some(id) => ("WHERE incident = ?1", "WHERE id = ?1", vec![id.into()]),
            None => ("", "", Vec::new()),
        };
        let mut updates: BTreeMap<String, Vec<IncidentUpdate>> = BTreeMap::new();
        for r in self.db.query(
            &format!(
                "SELECT id, incident, status, body, created_at, affected
                 FROM incident_updates {filter} ORDER BY created_at DESC, id"
            ),
            &params,
        )? {
            let incident = r.text(1)?;
            updates
                .entry(incident.clone())
                .or_default()
                .push(IncidentUpdate {
                    id: r.text(0)?,
                    incident_id: incident,
                    status: r.text(2)?,
                    body: r.text(3)?,
                    created_at: r.text(4)?,
                    affected_components: serde_json::from_str(&r.text(5)?).unwrap_or_default(),
                });
        }
        let mut components: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.db.query(
            &format!("SELECT incident, component FROM incident_components {filter}"),
            &params,
        )? {
            components.entry(r.text(0)?).or_default().push(r.text(1)?);
        }
        let mut out = Vec::new();
        for r in self.db.query(
            &format!(
                "SELECT id, name, status, impact, created_at, updated_at, started_at,
                     monitoring_at, resolved_at
                 FROM incidents {by_id} ORDER BY created_at DESC, id"
            ),
            &params,
        )? {
            let id = r.text(0)?;
            out.push(Incident {
                updates: updates.remove(&id).unwrap_or_default(),
                components: components.remove(&id).unwrap_or_default(),
                id,
                name: r.text(1)?,
                status: r.text(2)?,
                impact: r.text(3)?,
                created_at: r.text(4)?,
                updated_at: r.text(5)?,
                started_at: r.text(6)?,
                monitoring_at: r.opt_text(7)?,
                resolved_at: r.opt_text(8)?,
            });
        }
        Ok(out)
    }

    /// Start a campaign over `tenants` (in priority order, with their user counts).
    pub fn create_campaign(
        &mut self,
        campaign: &Campaign,
        tenants: &[(String, i64)],
    ) -> Result<()> {
        let mut tokens = Vec::with_capacity(tenants.len());
        for _ in tenants {
            tokens.push(new_token()?);
        }
        self.write(|db| {
            db.execute(
                "INSERT INTO campaigns (id, incident, target, target_time, batch_size, priority,
                     created_at, created_at_us, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                &[
                    campaign.id.as_str().into(),
                    campaign.incident.as_str().into(),
                    campaign.target.to_string().into(),
                    campaign.target_time.as_str().into(),
                    campaign.batch_size.into(),
                    campaign.priority.as_str().into(),
                    campaign.created_at.as_str().into(),
                    Val::Int(campaign.created_at_us),
                    campaign.created_by.as_str().into(),
                ],
            )?;
            for (rank, ((tenant, users), token)) in tenants.iter().zip(&tokens).enumerate() {
                db.execute(
                    "INSERT INTO campaign_tenants (campaign, tenant, rank, token, users, stage)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
                    &[
                        campaign.id.as_str().into(),
                        tenant.into(),
                        Val::Int(rank as i64),
                        token.into(),
                        Val::Int(*users),
                    ],
                )?;
            }
            Ok(())
        })
    }

    pub fn campaigns(&mut self) -> Result<Vec<Campaign>> {
        self.db
            .query(
                "SELECT id, incident, target, target_time, batch_size, priority, created_at,
                     created_at_us, created_by
                 FROM campaigns ORDER BY created_at_us DESC, id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Campaign {
                    id: r.text(0)?,
                    incident: r.text(1)?,
                    target: serde_json::from_str(&r.text(2)?).unwrap_or(serde_json::Value::Null),
                    target_time: r.text(3)?,
                    batch_size: r.int(4)? as u32,
                    priority: r.text(5)?,
                    created_at: r.text(6)?,
                    created_at_us: r.int(7)?,
                    created_by: r.text(8)?,
                })
            })
            .collect()
    }

    /// A campaign's tenants in priority order (all campaigns' with `None`).
    pub fn campaign_tenants(&mut self, campaign: Option<&str>) -> Result<Vec<CampaignTenant>> {
        let rows = match campaign {
            Some(id) => self.db.query(
                &format!(
                    "SELECT {TENANT_COLUMNS} FROM campaign_tenants WHERE campaign = ?1
                     ORDER BY rank"
                ),
                &[id.into()],
            )?,
            None => self.db.query(
                &format!("SELECT {TENANT_COLUMNS} FROM campaign_tenants ORDER BY campaign, rank"),
                &[],
            )?,
        };
        rows.iter().map(tenant_row).collect()
    }

    /// Claim up to the campaign's batch size of tenants for `worker`, leased for
    /// `lease_us`: queued ones in campaign and priority order, and ones whose worker's
    /// lease ran out (it stopped or was killed mid-tenant). On PostgreSQL the rows are
    /// locked with `SKIP LOCKED`, so workers on other machines claim other tenants
    /// meanwhile. Returns the campaign and its claimed tenants.
    pub fn claim(
        &mut self,
        worker: &str,
        campaign: Option<&str>,
        lease_us: i64,
    ) -> Result<Option<(Campaign, Vec<CampaignTenant>)>> {
        let (now_us, _) = now();
        // Queued, or held by a worker whose lease ran out; `now` is the placeholder of the
        // current time.
        let claimable = |now: &str| {
            format!(
                "(stage = 'queued' OR (stage IN ('restoring', 'verifying') \
                 AND lease_until_us < {now}))"
            )
        };
        let claimed = self.write(|db| {
            let skip = db.skip_locked();
            let first = match campaign {
                Some(id) => db.query_one(
                    &format!(
                        "SELECT campaign FROM campaign_tenants WHERE campaign = ?1 AND {}
                         ORDER BY rank LIMIT 1{skip}",
                        claimable("?2")
                    ),
                    &[id.into(), Val::Int(now_us)],
                )?,
                None => db.query_one(
                    &format!(
                        "SELECT campaign FROM campaign_tenants WHERE {}
                         ORDER BY (SELECT created_at_us FROM campaigns
                                   WHERE campaigns.id = campaign_tenants.campaign),
                                  campaign, rank
                         LIMIT 1{skip}",
                        claimable("?1")
                    ),
                    &[Val::Int(now_us)],
                )?,
            };
            let Some(first) = first else {
                return Ok(None);
            };
            let id = first.text(0)?;
            let batch = db
                .query_one(
                    "SELECT batch_size FROM campaigns WHERE id = ?1",
                    &[id.as_str().into()],
                )?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(1)
                .max(1);
            let tenants: Vec<CampaignTenant> = db
                .query(
                    &format!(
                        "SELECT {TENANT_COLUMNS} FROM campaign_tenants
                         WHERE campaign = ?1 AND {} ORDER BY rank LIMIT ?3{skip}",
                        claimable("?2")
                    ),
                    &[id.as_str().into(), Val::Int(now_us), Val::Int(batch)],
                )?
                .iter()
                .map(tenant_row)
                .collect::<Result<_>>()?;
            for t in &tenants {
                db.execute(
                    "UPDATE campaign_tenants SET stage = 'restoring', worker = ?3,
                         lease_until_us = ?4, attempts = attempts + 1,
                         started_at_us = COALESCE(started_at_us, ?5), reason = NULL
                     WHERE campaign = ?1 AND tenant = ?2",
                    &[
                        t.campaign.as_str().into(),
                        t.tenant.as_str().into(),
                        worker.into(),
                        Val::Int(now_us + lease_us),
                        Val::Int(now_us),
                    ],
                )?;
            }
            Ok(Some((id, tenants)))
        })?;
        let Some((id, tenants)) = claimed else {
            return Ok(None);
        };
        let campaign = self
            .campaigns()?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::source(format!("campaign {id} vanished")))?;
        let tenants = self
            .campaign_tenants(Some(&id))?
            .into_iter()
            .filter(|t| tenants.iter().any(|c| c.tenant == t.tenant))
            .collect();
        Ok(Some((campaign, tenants)))
    }

    /// Extend `worker`'s lease on its claimed tenants. False when it lost them (another
    /// worker took over after the lease ran out).
    pub fn renew_lease(&mut self, worker: &str, campaign: &str, lease_us: i64) -> Result<bool> {
        let (now_us, _) = now();
        let n = self.db.execute(
            "UPDATE campaign_tenants SET lease_until_us = ?3
             WHERE campaign = ?1 AND worker = ?2 AND stage IN ('restoring', 'verifying')",
            &[campaign.into(), worker.into(), Val::Int(now_us + lease_us)],
        )?;
        Ok(n > 0)
    }

    /// Move a tenant claimed by `worker` to `stage`. False (nothing changed) when the
    /// tenant is no longer this worker's.
    pub fn set_stage(
        &mut self,
        worker: &str,
        campaign: &str,
        tenant: &str,
        stage: &str,
        reason: Option<&str>,
        rows: Option<i64>,
    ) -> Result<bool> {
        check_word("stage", stage, &STAGES)?;
        let (now_us, _) = now();
        let working = matches!(stage, "restoring" | "verifying");
        let done = matches!(stage, "awaiting_acceptance" | "restored" | "failed");
        let awaiting = stage == "awaiting_acceptance";
        self.write(|db| {
            let n = db.execute(
                "UPDATE campaign_tenants SET stage = ?4, reason = ?5,
                     rows_written = COALESCE(?6, rows_written),
                     done_at_us = COALESCE(?7, done_at_us),
                     awaiting_since_us = COALESCE(?8, awaiting_since_us),
                     worker = CAST(?9 AS TEXT),
                     lease_until_us = CASE WHEN CAST(?9 AS TEXT) IS NULL THEN NULL
                         ELSE lease_until_us END
                 WHERE campaign = ?1 AND tenant = ?2 AND worker = ?3",
                &[
                    campaign.into(),
                    tenant.into(),
                    worker.into(),
                    stage.into(),
                    reason.into(),
                    rows.into(),
                    done.then_some(now_us).into(),
                    awaiting.then_some(now_us).into(),
                    working.then_some(worker).into(),
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Queue a campaign's failed tenants again (only `tenants`, when given), with their
    /// attempts counted afresh. Returns the tenants queued.
    pub fn retry_failed(&mut self, campaign: &str, tenants: &[String]) -> Result<Vec<String>> {
        let failed: Vec<String> = self
            .campaign_tenants(Some(campaign))?
            .into_iter()
            .filter(|t| t.stage == "failed")
            .filter(|t| tenants.is_empty() || tenants.contains(&t.tenant))
            .map(|t| t.tenant)
            .collect();
        if let Some(missing) = tenants.iter().find(|t| !failed.contains(t)) {
            return Err(Error::usage(format!(
                "tenant {missing} has not failed in campaign {campaign}"
            )));
        }
        self.write(|db| {
            for tenant in &failed {
                db.execute(
                    "UPDATE campaign_tenants SET stage = 'queued', attempts = 0, worker = NULL,
                         lease_until_us = NULL, done_at_us = NULL
                     WHERE campaign = ?1 AND tenant = ?2 AND stage = 'failed'",
                    &[campaign.into(), tenant.into()],
                )?;
            }
            Ok(())
        })?;
        Ok(failed)
    }

    /// The tenant's admin accepted on the private page. False when the tenant was not
    /// awaiting acceptance.
    pub fn accept(&mut self, token: &str) -> Result<bool> {
        self.write(|db| {
            let n = db.execute(
                "UPDATE campaign_tenants SET stage = 'restored'
                 WHERE token = ?1 AND stage = 'awaiting_acceptance'",
                &[token.into()],
            )?;
            Ok(n == 1)
        })
    }

    /// Accept every tenant that has awaited acceptance for `after_us` or longer.
    pub fn auto_accept(&mut self, after_us: i64) -> Result<u64> {
        let (now_us, _) = now();
        let due = self
            .db
            .query_one(
                "SELECT count(*) FROM campaign_tenants
                 WHERE stage = 'awaiting_acceptance' AND awaiting_since_us <= ?1",
                &[Val::Int(now_us - after_us)],
            )?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        if due == 0 {
            return Ok(0);
        }
        self.write(|db| {
            db.execute(
                "UPDATE campaign_tenants SET stage = 'restored'
                 WHERE stage = 'awaiting_acceptance' AND awaiting_since_us <= ?1",
                &[Val::Int(now_us - after_us)],
            )
        })
    }

    /// Store tenant attributes (priority keys): tenant -> name -> value.
    pub fn set_attributes(
        &mut self,
        attributes: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<()> {
        self.write(|db| {
            for (tenant, values) in attributes {
                for (name, value) in values {
                    db.execute(
                        "INSERT INTO tenant_attributes (tenant, name, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                        &[tenant.into(), name.into(), value.into()],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Every stored attribute: tenant -> name -> value.
    pub fn attributes(&mut self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in self
            .db
            .query("SELECT tenant, name, value FROM tenant_attributes", &[])?
        {
            out.entry(r.text(0)?)
                .or_default()
                .insert(r.text(1)?, r.text(2)?);
        }
        Ok(out)
    }
}
