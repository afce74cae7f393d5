//! Incidents and recovery campaigns in the control store (docs/status.md): components (one
//! per source), incidents and their updates in Statuspage's vocabulary, campaigns and the
//! stage of each of their tenants, claimed by workers under a lease.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::control::ControlStore;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS components (id TEXT PRIMARY KEY, source TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL, status TEXT NOT NULL, position INTEGER NOT NULL,
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
    target TEXT NOT NULL, target_time TEXT NOT NULL, batch_size INTEGER NOT NULL,
    priority TEXT NOT NULL, created_at TEXT NOT NULL, created_at_us INTEGER NOT NULL,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_tenants (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
    rank INTEGER NOT NULL, token TEXT NOT NULL UNIQUE, users INTEGER NOT NULL,
    stage TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, reason TEXT,
    worker TEXT, lease_until_us INTEGER, started_at_us INTEGER, done_at_us INTEGER,
    awaiting_since_us INTEGER, rows INTEGER, PRIMARY KEY (campaign, tenant));
CREATE INDEX IF NOT EXISTS campaign_tenants_stage ON campaign_tenants (stage, campaign, rank);
CREATE TABLE IF NOT EXISTS tenant_attributes (tenant TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS status_version (one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL);
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
     worker, lease_until_us, started_at_us, done_at_us, awaiting_since_us, rows";

fn tenant_row(r: &rusqlite::Row) -> rusqlite::Result<CampaignTenant> {
    Ok(CampaignTenant {
        campaign: r.get(0)?,
        tenant: r.get(1)?,
        rank: r.get(2)?,
        token: r.get(3)?,
        users: r.get(4)?,
        stage: r.get(5)?,
        attempts: r.get(6)?,
        reason: r.get(7)?,
        worker: r.get(8)?,
        lease_until_us: r.get(9)?,
        started_at_us: r.get(10)?,
        done_at_us: r.get(11)?,
        awaiting_since_us: r.get(12)?,
        rows: r.get(13)?,
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

fn bump(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO status_version (one, version) VALUES (1, 1)
         ON CONFLICT (one) DO UPDATE SET version = version + 1",
        [],
    )?;
    Ok(())
}

impl ControlStore {
    fn write<T>(&mut self, work: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> Result<T> {
        let path = self.path().to_path_buf();
        let err = |e| Error::source(format!("control store {}: {e}", path.display()));
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = work(&tx).map_err(err)?;
        bump(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// A number that grows with every change to incidents, components or campaigns: the
    /// status page rebuilds its snapshot when it moves.
    pub fn status_version(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT version FROM status_version", [], |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
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
        self.write(|tx| {
            for (i, ((source, name), id)) in missing.iter().zip(&ids).enumerate() {
                tx.execute(
                    "INSERT INTO components (id, source, name, status, position, created_at,
                         updated_at)
                     VALUES (?1, ?2, ?3, 'operational', ?4, ?5, ?5)
                     ON CONFLICT (source) DO UPDATE SET name = excluded.name",
                    params![id, source, name, start + i as i64 + 1, at],
                )?;
            }
            Ok(())
        })
    }

    pub fn components(&self) -> Result<Vec<Component>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, source, name, status, position, created_at, updated_at
                 FROM components ORDER BY position",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Component {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    name: r.get(2)?,
                    status: r.get(3)?,
                    position: r.get(4)?,
                    created_at: r.get(5)?,
                    updated_at: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
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
        let name = change.name.clone();
        let status = change.status.clone();
        let impact = change.impact.clone();
        let message = change.message.clone();
        let resolving = status == "resolved";
        let all_components: Vec<Component> = components.clone();
        self.write(|tx| {
            match &existing {
                None => {
                    tx.execute(
                        "INSERT INTO incidents (id, name, status, impact, created_at, updated_at,
                             started_at, monitoring_at, resolved_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7)",
                        params![
                            incident_id,
                            name.as_deref().unwrap_or("Incident"),
                            status,
                            impact.as_deref().unwrap_or("none"),
                            at,
                            (status == "monitoring").then_some(&at),
                            resolving.then_some(&at),
                        ],
                    )?;
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE incidents SET status = ?2, updated_at = ?3,
                             impact = COALESCE(?4, impact),
                             monitoring_at = CASE WHEN ?2 = 'monitoring'
                                 THEN COALESCE(monitoring_at, ?3) ELSE monitoring_at END,
                             resolved_at = CASE WHEN ?2 IN ('resolved', 'postmortem')
                                 THEN COALESCE(resolved_at, ?3) ELSE NULL END
                         WHERE id = ?1",
                        params![incident_id, status, at, impact],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO incident_updates (id, incident, status, body, created_at, affected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![update_id, incident_id, status, message, at, affected_text],
            )?;
            for (component, new_status) in &affected {
                tx.execute(
                    "UPDATE components SET status = ?2, updated_at = ?3 WHERE id = ?1",
                    params![component.id, new_status, at],
                )?;
                tx.execute(
                    "INSERT INTO incident_components (incident, component) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    params![incident_id, component.id],
                )?;
            }
            // Resolving puts the incident's components back to operational, unless another
            // unresolved incident still names them.
            if resolving {
                for component in &all_components {
                    tx.execute(
                        "UPDATE components SET status = 'operational', updated_at = ?3
                         WHERE id = ?1 AND status <> 'operational'
                           AND EXISTS (SELECT 1 FROM incident_components
                                       WHERE incident = ?2 AND component = ?1)
                           AND NOT EXISTS (
                             SELECT 1 FROM incident_components ic
                             JOIN incidents i ON i.id = ic.incident
                             WHERE ic.component = ?1 AND i.id <> ?2
                               AND i.status NOT IN ('resolved', 'postmortem'))",
                        params![component.id, incident_id, at],
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(incident_id)
    }

    pub fn incident(&self, id: &str) -> Result<Option<Incident>> {
        Ok(self.incidents()?.into_iter().find(|i| i.id == id))
    }

    /// Every incident, newest first, with its updates (newest first) and components.
    pub fn incidents(&self) -> Result<Vec<Incident>> {
        let err = |e| self.err(e);
        let mut updates: BTreeMap<String, Vec<IncidentUpdate>> = BTreeMap::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, incident, status, body, created_at, affected
                     FROM incident_updates ORDER BY created_at DESC, rowid DESC",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(err)?;
            for row in rows {
                let (id, incident, status, body, created_at, affected) = row.map_err(err)?;
                let affected_components = serde_json::from_str(&affected).unwrap_or_default();
                updates
                    .entry(incident.clone())
                    .or_default()
                    .push(IncidentUpdate {
                        id,
                        incident_id: incident,
                        status,
                        body,
                        created_at,
                        affected_components,
                    });
            }
        }
        let mut components: BTreeMap<String, Vec<String>> = BTreeMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT incident, component FROM incident_components")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            for row in rows {
                let (incident, component) = row.map_err(err)?;
                components.entry(incident).or_default().push(component);
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, status, impact, created_at, updated_at, started_at,
                     monitoring_at, resolved_at
                 FROM incidents ORDER BY created_at DESC, rowid DESC",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Incident {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    impact: r.get(3)?,
                    created_at: r.get(4)?,
                    updated_at: r.get(5)?,
                    started_at: r.get(6)?,
                    monitoring_at: r.get(7)?,
                    resolved_at: r.get(8)?,
                    updates: Vec::new(),
                    components: Vec::new(),
                })
            })
            .map_err(err)?;
        let mut out: Vec<Incident> = rows.collect::<rusqlite::Result<_>>().map_err(err)?;
        for incident in &mut out {
            incident.updates = updates.remove(&incident.id).unwrap_or_default();
            incident.components = components.remove(&incident.id).unwrap_or_default();
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
        let campaign = campaign.clone();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO campaigns (id, incident, target, target_time, batch_size, priority,
                     created_at, created_at_us, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    campaign.id,
                    campaign.incident,
                    campaign.target.to_string(),
                    campaign.target_time,
                    campaign.batch_size,
                    campaign.priority,
                    campaign.created_at,
                    campaign.created_at_us,
                    campaign.created_by
                ],
            )?;
            for (rank, ((tenant, users), token)) in tenants.iter().zip(&tokens).enumerate() {
                tx.execute(
                    "INSERT INTO campaign_tenants (campaign, tenant, rank, token, users, stage)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
                    params![campaign.id, tenant, rank as i64, token, users],
                )?;
            }
            Ok(())
        })
    }

    pub fn campaigns(&self) -> Result<Vec<Campaign>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, incident, target, target_time, batch_size, priority, created_at,
                     created_at_us, created_by
                 FROM campaigns ORDER BY created_at_us DESC, rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Campaign {
                    id: r.get(0)?,
                    incident: r.get(1)?,
                    target: serde_json::from_str(&r.get::<_, String>(2)?)
                        .unwrap_or(serde_json::Value::Null),
                    target_time: r.get(3)?,
                    batch_size: r.get(4)?,
                    priority: r.get(5)?,
                    created_at: r.get(6)?,
                    created_at_us: r.get(7)?,
                    created_by: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// A campaign's tenants in priority order (all campaigns' with `None`).
    pub fn campaign_tenants(&self, campaign: Option<&str>) -> Result<Vec<CampaignTenant>> {
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM campaign_tenants
             WHERE ?1 IS NULL OR campaign = ?1 ORDER BY campaign, rank"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([campaign], tenant_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Claim up to `batch` tenants for `worker` until `lease_until_us`: queued ones in
    /// campaign and priority order, and ones whose worker's lease ran out (it stopped or
    /// was killed mid-tenant). Returns the campaign and its claimed tenants.
    pub fn claim(
        &mut self,
        worker: &str,
        campaign: Option<&str>,
        lease_us: i64,
    ) -> Result<Option<(Campaign, Vec<CampaignTenant>)>> {
        let (now_us, _) = now();
        let campaigns = self.campaigns()?;
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM campaign_tenants
             WHERE (?1 IS NULL OR campaign = ?1)
               AND (stage = 'queued'
                    OR (stage IN ('restoring', 'verifying') AND lease_until_us < ?2))
             ORDER BY campaign, rank LIMIT 1"
        );
        let claimed = self.write(|tx| {
            let first: Option<CampaignTenant> = tx
                .query_row(&sql, params![campaign, now_us], tenant_row)
                .optional()?;
            let Some(first) = first else {
                return Ok(None);
            };
            let batch = campaigns
                .iter()
                .find(|c| c.id == first.campaign)
                .map(|c| c.batch_size.max(1))
                .unwrap_or(1);
            let mut stmt = tx.prepare(&format!(
                "SELECT {TENANT_COLUMNS} FROM campaign_tenants
                 WHERE campaign = ?1
                   AND (stage = 'queued'
                        OR (stage IN ('restoring', 'verifying') AND lease_until_us < ?2))
                 ORDER BY rank LIMIT ?3"
            ))?;
            let tenants: Vec<CampaignTenant> = stmt
                .query_map(params![first.campaign, now_us, batch], tenant_row)?
                .collect::<rusqlite::Result<_>>()?;
            for t in &tenants {
                tx.execute(
                    "UPDATE campaign_tenants SET stage = 'restoring', worker = ?3,
                         lease_until_us = ?4, attempts = attempts + 1,
                         started_at_us = COALESCE(started_at_us, ?5), reason = NULL
                     WHERE campaign = ?1 AND tenant = ?2",
                    params![t.campaign, t.tenant, worker, now_us + lease_us, now_us],
                )?;
            }
            Ok(Some((first.campaign, tenants)))
        })?;
        let Some((id, tenants)) = claimed else {
            return Ok(None);
        };
        let campaign = campaigns
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
        let n = self
            .conn
            .execute(
                "UPDATE campaign_tenants SET lease_until_us = ?3
                 WHERE campaign = ?1 AND worker = ?2 AND stage IN ('restoring', 'verifying')",
                params![campaign, worker, now_us + lease_us],
            )
            .map_err(|e| self.err(e))?;
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
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE campaign_tenants SET stage = ?4, reason = ?5,
                     rows = COALESCE(?6, rows),
                     done_at_us = CASE WHEN ?4 IN ('awaiting_acceptance', 'restored', 'failed')
                         THEN ?7 ELSE done_at_us END,
                     awaiting_since_us = CASE WHEN ?4 = 'awaiting_acceptance'
                         THEN ?7 ELSE awaiting_since_us END,
                     worker = CASE WHEN ?4 IN ('restoring', 'verifying')
                         THEN worker ELSE NULL END,
                     lease_until_us = CASE WHEN ?4 IN ('restoring', 'verifying')
                         THEN lease_until_us ELSE NULL END
                 WHERE campaign = ?1 AND tenant = ?2 AND worker = ?3",
                params![campaign, tenant, worker, stage, reason, rows, now_us],
            )?;
            Ok(n == 1)
        })
    }

    /// The tenant's admin accepted on the private page. False when the tenant was not
    /// awaiting acceptance.
    pub fn accept(&mut self, token: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE campaign_tenants SET stage = 'restored'
                 WHERE token = ?1 AND stage = 'awaiting_acceptance'",
                [token],
            )?;
            Ok(n == 1)
        })
    }

    /// Accept every tenant that has awaited acceptance for `after_us` or longer.
    pub fn auto_accept(&mut self, after_us: i64) -> Result<usize> {
        let (now_us, _) = now();
        let due: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM campaign_tenants
                 WHERE stage = 'awaiting_acceptance' AND awaiting_since_us <= ?1",
                [now_us - after_us],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if due == 0 {
            return Ok(0);
        }
        self.write(|tx| {
            tx.execute(
                "UPDATE campaign_tenants SET stage = 'restored'
                 WHERE stage = 'awaiting_acceptance' AND awaiting_since_us <= ?1",
                [now_us - after_us],
            )
        })
    }

    /// Store tenant attributes (priority keys): tenant -> name -> value.
    pub fn set_attributes(
        &mut self,
        attributes: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<()> {
        let attributes = attributes.clone();
        self.write(|tx| {
            for (tenant, values) in &attributes {
                for (name, value) in values {
                    tx.execute(
                        "INSERT INTO tenant_attributes (tenant, name, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                        params![tenant, name, value],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Every stored attribute: tenant -> name -> value.
    pub fn attributes(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let mut stmt = self
            .conn
            .prepare("SELECT tenant, name, value FROM tenant_attributes")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for row in rows {
            let (tenant, name, value) = row.map_err(|e| self.err(e))?;
            out.entry(tenant).or_default().insert(name, value);
        }
        Ok(out)
    }
}
