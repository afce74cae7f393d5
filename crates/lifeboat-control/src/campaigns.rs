//! Recovery campaigns in the control store (docs/status.md): the tenants to restore for an
//! incident, the stage of each, claimed by workers under a lease; and tenant attributes,
//! the keys campaigns order their tenants by. A phased campaign restores its sources in
//! phases: a tenant's row is its stage in its current phase (`campaign_tenant_phases`,
//! none: the first), and a phase opens for claims once every tenant still to be worked
//! on has reached it (`campaign_phases`).

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, write_entries, Entry};
use crate::contacts::{record_campaign_contacts, Contact};
use crate::db::{Db, Row, Val};
use crate::ids::new_token;
use crate::outbox::{queue_place, tenant_notices, NoticeEvent};
use crate::store::{now, ControlStore};
use crate::words::vocabulary;

vocabulary! {
    /// A tenant's stage in a campaign, in order.
    pub enum Stage("stage") {
        /// Waiting for a worker.
        Queued = "queued",
        /// A worker writes its rows.
        Restoring = "restoring",
        /// A worker reads its rows back and compares them with the vault.
        Verifying = "verifying",
        /// Restored and verified; its admin is to accept it on the private page.
        AwaitingAcceptance = "awaiting_acceptance",
        /// Restored, verified and handed over.
        Restored = "restored",
        /// Its attempts are used up.
        Failed = "failed",
    }
}

impl Stage {
    /// A worker holds the tenant (under a lease).
    pub fn is_working(self) -> bool {
        matches!(self, Stage::Restoring | Stage::Verifying)
    }

    /// The tenant's restore ended, well or not.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Stage::AwaitingAcceptance | Stage::Restored | Stage::Failed
        )
    }
}

/// The phases of campaigns and where each tenant of a phased campaign is. A campaign
/// without rows in `campaign_phases` is one phase of every source; a tenant without a row
/// in `campaign_tenant_phases` is in its first phase. `sources` is a JSON array;
/// `opened_at_us` is when the phase opened for claims (none: not yet).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS campaign_phases (campaign TEXT NOT NULL, phase BIGINT NOT NULL,
    sources TEXT NOT NULL, opened_at_us BIGINT, PRIMARY KEY (campaign, phase));
CREATE TABLE IF NOT EXISTS campaign_tenant_phases (campaign TEXT NOT NULL,
    tenant TEXT NOT NULL, phase BIGINT NOT NULL, PRIMARY KEY (campaign, tenant));
";

/// A `campaign_tenants` row's phase (0-based), as SQL.
macro_rules! phase_of {
    () => {
        "COALESCE((SELECT ctp.phase FROM campaign_tenant_phases ctp \
         WHERE ctp.campaign = campaign_tenants.campaign \
         AND ctp.tenant = campaign_tenants.tenant), 0)"
    };
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
    /// Its phases, in order; empty: one phase of every source.
    pub phases: Vec<Phase>,
}

/// A phase of a campaign: the sources it restores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub sources: Vec<String>,
    /// When it opened for workers' claims (the first phase: when the campaign started;
    /// a later one: once every tenant still to be worked on had reached it).
    pub opened_at_us: Option<i64>,
}

impl Phase {
    /// A phase of `sources`, not opened yet.
    pub fn new(sources: Vec<String>) -> Phase {
        Phase {
            sources,
            opened_at_us: None,
        }
    }
}

impl Campaign {
    /// How many phases it has (at least one).
    pub fn phase_count(&self) -> usize {
        self.phases.len().max(1)
    }

    /// The sources of `phase` (0-based); empty: every source.
    pub fn phase_sources(&self, phase: i64) -> &[String] {
        usize::try_from(phase)
            .ok()
            .and_then(|p| self.phases.get(p))
            .map(|p| p.sources.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `phase` (0-based) is its last.
    pub fn is_last_phase(&self, phase: i64) -> bool {
        phase + 1 >= self.phase_count() as i64
    }
}

/// One tenant of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignTenant {
    pub campaign: String,
    pub tenant: String,
    pub rank: i64,
    pub token: String,
    pub users: i64,
    pub stage: Stage,
    pub attempts: i64,
    pub reason: Option<String>,
    pub worker: Option<String>,
    pub lease_until_us: Option<i64>,
    pub started_at_us: Option<i64>,
    pub done_at_us: Option<i64>,
    pub awaiting_since_us: Option<i64>,
    pub rows: Option<i64>,
    /// The phase its stage is of (0-based); the phases before it are restored and
    /// verified.
    pub phase: i64,
}

impl CampaignTenant {
    /// Restored (and verified) in every phase of `campaign`: awaiting acceptance or
    /// restored in its last phase.
    pub fn is_restored(&self, campaign: &Campaign) -> bool {
        matches!(self.stage, Stage::AwaitingAcceptance | Stage::Restored)
            && campaign.is_last_phase(self.phase)
    }

    /// Whether `phase` (0-based) is restored and verified for this tenant.
    pub fn phase_restored(&self, phase: i64) -> bool {
        phase < self.phase
            || (phase == self.phase
                && matches!(self.stage, Stage::AwaitingAcceptance | Stage::Restored))
    }

    /// Its stage in `phase` (0-based): restored before its current phase, queued after.
    pub fn phase_stage(&self, phase: i64) -> Stage {
        match phase.cmp(&self.phase) {
            std::cmp::Ordering::Less => Stage::Restored,
            std::cmp::Ordering::Equal => self.stage,
            std::cmp::Ordering::Greater => Stage::Queued,
        }
    }
}

const TENANT_COLUMNS: &str = concat!(
    "campaign, tenant, rank, token, users, stage, attempts, reason, \
     worker, lease_until_us, started_at_us, done_at_us, awaiting_since_us, rows_written, ",
    phase_of!()
);

fn tenant_row(r: &Row) -> Result<CampaignTenant> {
    Ok(CampaignTenant {
        campaign: r.text(0)?,
        tenant: r.text(1)?,
        rank: r.int(2)?,
        token: r.text(3)?,
        users: r.int(4)?,
        stage: r.word(5)?,
        attempts: r.int(6)?,
        reason: r.opt_text(7)?,
        worker: r.opt_text(8)?,
        lease_until_us: r.opt_int(9)?,
        started_at_us: r.opt_int(10)?,
        done_at_us: r.opt_int(11)?,
        awaiting_since_us: r.opt_int(12)?,
        rows: r.opt_int(13)?,
        phase: r.int(14)?,
    })
}

/// Open the phases of `campaign` that every tenant still to be worked on (queued or held by
/// a worker) has reached: a phase stays open once opened, so a tenant queued again later
/// (a retry) does not hold the others back. Returns the last open phase (0 for a campaign
/// of one phase).
fn open_phases(db: &mut Db, campaign: &str, now_us: i64) -> Result<i64> {
    let opened = db
        .query_one(
            "SELECT MAX(phase) FROM campaign_phases
             WHERE campaign = ?1 AND opened_at_us IS NOT NULL",
            &[campaign.into()],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten();
    let Some(opened) = opened else {
        return Ok(0);
    };
    let lowest = db
        .query_one(
            concat!(
                "SELECT MIN(",
                phase_of!(),
                ") FROM campaign_tenants WHERE campaign = ?1
                 AND stage IN ('queued', 'restoring', 'verifying')"
            ),
            &[campaign.into()],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten();
    match lowest {
        Some(lowest) if lowest > opened => {
            db.execute(
                "UPDATE campaign_phases SET opened_at_us = ?3
                 WHERE campaign = ?1 AND phase <= ?2 AND opened_at_us IS NULL",
                &[campaign.into(), Val::Int(lowest), Val::Int(now_us)],
            )?;
            Ok(lowest)
        }
        _ => Ok(opened),
    }
}

/// Move `tenant` of `campaign` to its next phase.
fn next_phase(db: &mut Db, campaign: &str, tenant: &str, phase: i64) -> Result<()> {
    db.execute(
        "INSERT INTO campaign_tenant_phases (campaign, tenant, phase) VALUES (?1, ?2, ?3)
         ON CONFLICT (campaign, tenant) DO UPDATE SET phase = excluded.phase",
        &[campaign.into(), tenant.into(), Val::Int(phase + 1)],
    )?;
    Ok(())
}

/// Campaign `campaign`'s phase count, and the phase of `tenant`.
fn phase_facts(db: &mut Db, campaign: &str, tenant: &str) -> Result<(i64, i64)> {
    let count = db
        .query_one(
            "SELECT count(*) FROM campaign_phases WHERE campaign = ?1",
            &[campaign.into()],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0)
        .max(1);
    let phase = db
        .query_one(
            "SELECT phase FROM campaign_tenant_phases WHERE campaign = ?1 AND tenant = ?2",
            &[campaign.into(), tenant.into()],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    Ok((count, phase))
}

/// A phased campaign's tenant's phase, as notices carry it: `{"number": N, "of": M}`
/// (1-based); `None` for a campaign of one phase.
pub(crate) fn phase_notice(
    db: &mut Db,
    campaign: &str,
    tenant: &str,
) -> Result<Option<serde_json::Value>> {
    let (count, phase) = phase_facts(db, campaign, tenant)?;
    Ok((count > 1).then(|| serde_json::json!({"number": phase + 1, "of": count})))
}

/// Hand an accepted tenant over: restored after its last phase; otherwise on to its next
/// phase, queued. Returns the next phase (0-based) when there is one.
fn accept_phase(db: &mut Db, campaign: &str, tenant: &str) -> Result<Option<i64>> {
    let (count, phase) = phase_facts(db, campaign, tenant)?;
    if phase + 1 >= count {
        db.execute(
            "UPDATE campaign_tenants SET stage = 'restored'
             WHERE campaign = ?1 AND tenant = ?2 AND stage = 'awaiting_acceptance'",
            &[campaign.into(), tenant.into()],
        )?;
        return Ok(None);
    }
    let n = db.execute(
        "UPDATE campaign_tenants SET stage = 'queued', attempts = 0, worker = NULL,
             lease_until_us = NULL, reason = NULL, awaiting_since_us = NULL
         WHERE campaign = ?1 AND tenant = ?2 AND stage = 'awaiting_acceptance'",
        &[campaign.into(), tenant.into()],
    )?;
    if n == 1 {
        next_phase(db, campaign, tenant, phase)?;
    }
    Ok(Some(phase + 1))
}

/// How a campaign hands a restored tenant over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    /// Wait for the tenant's admin to accept on the private page.
    pub customer: bool,
    /// Accept automatically after this long (microseconds); `None`: wait.
    pub auto_after_us: Option<i64>,
    /// With `customer`: accept after each phase of a phased campaign, not only after
    /// the last.
    pub per_phase: bool,
}

impl ControlStore {
    /// Start a campaign over `tenants` (in priority order, with their user counts), with
    /// the copy it keeps of their `contacts`, audited (`campaign` of `campaign:ID`, by its
    /// creator); each tenant's contacts are told it is queued, with its place.
    pub fn create_campaign(
        &mut self,
        campaign: &Campaign,
        tenants: &[(String, i64)],
        contacts: &[Contact],
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
            for (number, phase) in campaign.phases.iter().enumerate() {
                db.execute(
                    "INSERT INTO campaign_phases (campaign, phase, sources, opened_at_us)
                     VALUES (?1, ?2, ?3, ?4)",
                    &[
                        campaign.id.as_str().into(),
                        Val::Int(number as i64),
                        serde_json::json!(phase.sources).to_string().into(),
                        (number == 0).then_some(campaign.created_at_us).into(),
                    ],
                )?;
            }
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
            write_audited(
                db,
                &[Entry::new(
                    &campaign.created_by,
                    "campaign",
                    &format!("campaign:{}", campaign.id),
                    serde_json::json!({"incident": campaign.incident, "tenants": tenants.len(),
                        "target": campaign.target, "target_time": campaign.target_time,
                        "priority": campaign.priority, "batch_size": campaign.batch_size,
                        "phases": campaign.phases.iter().map(|p| &p.sources)
                            .collect::<Vec<_>>()}),
                )],
            )?;
            record_campaign_contacts(db, &campaign.id, contacts)?;
            for (rank, (tenant, _)) in tenants.iter().enumerate() {
                tenant_notices(
                    db,
                    &campaign.id,
                    tenant,
                    NoticeEvent::StageQueued,
                    serde_json::json!({"stage": "queued", "place": rank + 1,
                        "tenants": tenants.len()}),
                    "start",
                )?;
            }
            Ok(())
        })
    }

    /// Every campaign, newest first.
    pub fn campaigns(&mut self) -> Result<Vec<Campaign>> {
        let mut phases: BTreeMap<String, Vec<Phase>> = BTreeMap::new();
        for r in self.db.query(
            "SELECT campaign, sources, opened_at_us FROM campaign_phases
             ORDER BY campaign, phase",
            &[],
        )? {
            let sources: Vec<String> = serde_json::from_str(&r.text(1)?).map_err(|e| {
                Error::source(format!("control store: a campaign phase's sources: {e}"))
            })?;
            phases.entry(r.text(0)?).or_default().push(Phase {
                sources,
                opened_at_us: r.opt_int(2)?,
            });
        }
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
                    phases: phases.remove(&r.text(0)?).unwrap_or_default(),
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
    /// lease ran out (it stopped or was killed mid-tenant). A batch is of one phase, and
    /// only of an open phase: a phase opens once every tenant still to be worked on has
    /// reached it (`open_phases`); a tenant behind the others (retried) goes first. On
    /// PostgreSQL the rows are locked with `SKIP LOCKED`, so workers on other machines
    /// claim other tenants meanwhile. Returns the campaign and its claimed tenants.
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
            // The campaigns with a tenant to claim, oldest first.
            let candidates: Vec<String> = match campaign {
                Some(id) => vec![id.to_string()],
                None => db
                    .query(
                        &format!(
                            "SELECT id FROM campaigns WHERE EXISTS (SELECT 1 FROM campaign_tenants
                                 WHERE campaign_tenants.campaign = campaigns.id AND {})
                             ORDER BY created_at_us, id",
                            claimable("?1")
                        ),
                        &[Val::Int(now_us)],
                    )?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<_>>()?,
            };
            for id in candidates {
                let open = open_phases(db, &id, now_us)?;
                let phase = db
                    .query_one(
                        &format!(
                            "SELECT MIN({phase}) FROM campaign_tenants
                             WHERE campaign = ?1 AND {} AND {phase} <= ?3",
                            claimable("?2"),
                            phase = phase_of!()
                        ),
                        &[id.as_str().into(), Val::Int(now_us), Val::Int(open)],
                    )?
                    .map(|r| r.opt_int(0))
                    .transpose()?
                    .flatten();
                let Some(phase) = phase else {
                    continue;
                };
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
                             WHERE campaign = ?1 AND {} AND {} = ?4
                             ORDER BY rank LIMIT ?3{skip}",
                            claimable("?2"),
                            phase_of!()
                        ),
                        &[
                            id.as_str().into(),
                            Val::Int(now_us),
                            Val::Int(batch),
                            Val::Int(phase),
                        ],
                    )?
                    .iter()
                    .map(tenant_row)
                    .collect::<Result<_>>()?;
                if tenants.is_empty() {
                    // Other workers hold them (locked meanwhile).
                    continue;
                }
                for t in &tenants {
                    // The first attempt of a round tells the tenant's contacts; a claim
                    // after a failed attempt or a takeover does not, nor a later phase.
                    if t.stage == Stage::Queued && t.attempts == 0 && t.phase == 0 {
                        tenant_notices(
                            db,
                            &t.campaign,
                            &t.tenant,
                            NoticeEvent::StageRestoring,
                            serde_json::json!({"stage": "restoring"}),
                            &format!("{now_us}"),
                        )?;
                    }
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
                return Ok(Some((id, tenants)));
            }
            Ok(None)
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
    /// tenant is no longer this worker's. An outcome (awaiting acceptance, restored,
    /// failed) is audited (`tenant-awaiting-acceptance`, `tenant-restored`,
    /// `tenant-failed` of `tenant:KEY`, by the worker); the working stages and a failed
    /// attempt sent back to the queue are not.
    pub fn set_stage(
        &mut self,
        worker: &str,
        campaign: &str,
        tenant: &str,
        stage: Stage,
        reason: Option<&str>,
        rows: Option<i64>,
    ) -> Result<bool> {
        let (now_us, _) = now();
        let working = stage.is_working();
        let done = stage.is_finished();
        let awaiting = stage == Stage::AwaitingAcceptance;
        self.write(|db| {
            let n = db.execute(
                "UPDATE campaign_tenants SET stage = ?4, reason = ?5,
                     rows_written = CASE WHEN CAST(?6 AS BIGINT) IS NULL THEN rows_written
                         ELSE COALESCE(rows_written, 0) + CAST(?6 AS BIGINT) END,
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
                    stage.as_str().into(),
                    reason.into(),
                    rows.into(),
                    done.then_some(now_us).into(),
                    awaiting.then_some(now_us).into(),
                    working.then_some(worker).into(),
                ],
            )?;
            if n == 1 && done {
                let mut details = serde_json::json!({"campaign": campaign});
                if let Some(reason) = reason {
                    details["reason"] = reason.into();
                }
                if let Some(rows) = rows {
                    details["rows"] = rows.into();
                }
                let (count, phase) = phase_facts(db, campaign, tenant)?;
                let mut body = serde_json::json!({"stage": stage});
                if count > 1 {
                    details["phase"] = (phase + 1).into();
                    body["phase"] = serde_json::json!({"number": phase + 1, "of": count});
                }
                let action = match stage {
                    Stage::AwaitingAcceptance => "tenant-awaiting-acceptance",
                    Stage::Restored => "tenant-restored",
                    _ => "tenant-failed",
                };
                write_audited(
                    db,
                    &[Entry::new(
                        worker,
                        action,
                        &format!("tenant:{tenant}"),
                        details,
                    )],
                )?;
                let event = match stage {
                    Stage::AwaitingAcceptance => NoticeEvent::StageAwaitingAcceptance,
                    Stage::Restored => NoticeEvent::StageRestored,
                    _ => NoticeEvent::StageFailed,
                };
                tenant_notices(db, campaign, tenant, event, body, &format!("{now_us}"))?;
            }
            Ok(n == 1)
        })
    }

    /// A phase of a tenant claimed by `worker` is restored and verified, and it has
    /// another: the tenant moves on to it, queued (its attempts counted afresh), audited
    /// (`tenant-phase-restored` of `tenant:KEY`, by the worker, with the phase and rows).
    /// No notice: its contacts hear when it is restored in every phase. False (nothing
    /// changed) when the tenant is no longer this worker's.
    pub fn finish_phase(
        &mut self,
        worker: &str,
        campaign: &str,
        tenant: &str,
        rows: Option<i64>,
    ) -> Result<bool> {
        self.write(|db| {
            let (_, phase) = phase_facts(db, campaign, tenant)?;
            let n = db.execute(
                "UPDATE campaign_tenants SET stage = 'queued', reason = NULL, attempts = 0,
                     worker = NULL, lease_until_us = NULL,
                     rows_written = COALESCE(rows_written, 0) + ?4
                 WHERE campaign = ?1 AND tenant = ?2 AND worker = ?3
                     AND stage IN ('restoring', 'verifying')",
                &[
                    campaign.into(),
                    tenant.into(),
                    worker.into(),
                    Val::Int(rows.unwrap_or(0)),
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            next_phase(db, campaign, tenant, phase)?;
            write_audited(
                db,
                &[Entry::new(
                    worker,
                    "tenant-phase-restored",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"campaign": campaign, "phase": phase + 1,
                        "rows": rows}),
                )],
            )?;
            Ok(true)
        })
    }

    /// Queue a campaign's failed tenants again (only `tenants`, when given), with their
    /// attempts counted afresh, audited (`campaign-retry` of `campaign:ID`, by `actor`).
    /// Returns the tenants queued.
    pub fn retry_failed(
        &mut self,
        campaign: &str,
        tenants: &[String],
        actor: &str,
    ) -> Result<Vec<String>> {
        let failed: Vec<String> = self
            .campaign_tenants(Some(campaign))?
            .into_iter()
            .filter(|t| t.stage == Stage::Failed)
            .filter(|t| tenants.is_empty() || tenants.contains(&t.tenant))
            .map(|t| t.tenant)
            .collect();
        if let Some(missing) = tenants.iter().find(|t| !failed.contains(t)) {
            return Err(Error::usage(format!(
                "tenant {missing} has not failed in campaign {campaign}"
            )));
        }
        self.write(|db| {
            let mut queued = Vec::new();
            for tenant in &failed {
                let n = db.execute(
                    "UPDATE campaign_tenants SET stage = 'queued', attempts = 0, worker = NULL,
                         lease_until_us = NULL, done_at_us = NULL
                     WHERE campaign = ?1 AND tenant = ?2 AND stage = 'failed'",
                    &[campaign.into(), tenant.into()],
                )?;
                if n == 1 {
                    queued.push(tenant.clone());
                }
            }
            let (now_us, _) = now();
            for tenant in &queued {
                let place = queue_place(db, campaign, tenant)?;
                tenant_notices(
                    db,
                    campaign,
                    tenant,
                    NoticeEvent::StageQueued,
                    serde_json::json!({"stage": "queued", "place": place}),
                    &format!("retry-{now_us}"),
                )?;
            }
            if !queued.is_empty() {
                write_audited(
                    db,
                    &[Entry::new(
                        actor,
                        "campaign-retry",
                        &format!("campaign:{campaign}"),
                        serde_json::json!({"tenants": queued}),
                    )],
                )?;
            }
            Ok(queued)
        })
    }

    /// The tenant's admin accepted on the private page, audited (`accept` of
    /// `tenant:KEY` by `customer`, naming the campaign, never the token). False when the
    /// tenant was not awaiting acceptance: then nothing is written and the change counter
    /// stays.
    pub fn accept(&mut self, token: &str) -> Result<bool> {
        let awaiting = self
            .db
            .query_one(
                "SELECT 1 FROM campaign_tenants WHERE token = ?1 AND stage = 'awaiting_acceptance'",
                &[token.into()],
            )?
            .is_some();
        if !awaiting {
            return Ok(false);
        }
        self.write(|db| {
            let lock = db.lock();
            let Some(row) = db.query_one(
                &format!(
                    "SELECT campaign, tenant FROM campaign_tenants
                     WHERE token = ?1 AND stage = 'awaiting_acceptance'{lock}"
                ),
                &[token.into()],
            )?
            else {
                return Ok(false);
            };
            let (campaign, tenant) = (row.text(0)?, row.text(1)?);
            let next = accept_phase(db, &campaign, &tenant)?;
            let mut details = serde_json::json!({"campaign": campaign, "automatic": false});
            if let Some(next) = next {
                details["phase"] = next.into();
            }
            write_audited(
                db,
                &[Entry::new(
                    "customer",
                    "accept",
                    &format!("tenant:{tenant}"),
                    details,
                )],
            )?;
            if next.is_some() {
                // Accepted a phase: the next one is queued; nothing is restored yet.
                return Ok(true);
            }
            tenant_notices(
                db,
                &campaign,
                &tenant,
                NoticeEvent::StageRestored,
                serde_json::json!({"stage": "restored", "accepted": "customer"}),
                "accepted",
            )?;
            Ok(true)
        })
    }

    /// Accept every tenant that has awaited acceptance for `after_us` or longer, each
    /// audited (`accept` of `tenant:KEY` by `lifeboat`, automatic).
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
            let lock = db.lock();
            let due: Vec<(String, String)> = db
                .query(
                    &format!(
                        "SELECT campaign, tenant FROM campaign_tenants
                         WHERE stage = 'awaiting_acceptance' AND awaiting_since_us <= ?1
                         ORDER BY campaign, rank{lock}"
                    ),
                    &[Val::Int(now_us - after_us)],
                )?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?)))
                .collect::<Result<_>>()?;
            let mut entries = Vec::with_capacity(due.len());
            let mut restored = Vec::with_capacity(due.len());
            for (campaign, tenant) in &due {
                let next = accept_phase(db, campaign, tenant)?;
                let mut details = serde_json::json!({"campaign": campaign, "automatic": true,
                    "after_minutes": after_us / 60_000_000});
                match next {
                    Some(next) => details["phase"] = next.into(),
                    None => restored.push((campaign, tenant)),
                }
                entries.push(Entry::new(
                    "lifeboat",
                    "accept",
                    &format!("tenant:{tenant}"),
                    details,
                ));
            }
            write_entries(db, &entries)?;
            for (campaign, tenant) in restored {
                tenant_notices(
                    db,
                    campaign,
                    tenant,
                    NoticeEvent::StageRestored,
                    serde_json::json!({"stage": "restored", "accepted": "automatic"}),
                    "accepted",
                )?;
            }
            Ok(due.len() as u64)
        })
    }

    /// Post progress updates of `campaign` from `template` by itself: at 25, 50, 75 and
    /// 100% of its tenants finished, and every `every_us` if given; audited
    /// (`campaign-auto-progress` of `campaign:ID`, by `actor`).
    pub fn set_auto_progress(
        &mut self,
        campaign: &str,
        template: &str,
        every_us: Option<i64>,
        actor: &str,
    ) -> Result<()> {
        let (now_us, _) = now();
        self.write(|db| {
            db.execute(
                "INSERT INTO campaign_progress (campaign, template, every_us, last_posted_us,
                     milestone)
                 VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT (campaign) DO UPDATE SET template = excluded.template,
                     every_us = excluded.every_us",
                &[
                    campaign.into(),
                    template.into(),
                    every_us.into(),
                    Val::Int(now_us),
                ],
            )?;
            write_audited(
                db,
                &[Entry::new(
                    actor,
                    "campaign-auto-progress",
                    &format!("campaign:{campaign}"),
                    serde_json::json!({"template": template,
                        "every_minutes": every_us.map(|us| us / 60_000_000)}),
                )],
            )?;
            Ok(())
        })
    }

    /// The template a campaign posts its progress from, if it does.
    pub fn auto_progress(&mut self, campaign: &str) -> Result<Option<String>> {
        self.db
            .query_one(
                "SELECT template FROM campaign_progress WHERE campaign = ?1",
                &[campaign.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    /// Whether it is time to post `campaign`'s progress, having reached `milestone`
    /// percent: a milestone not posted yet, or its cadence due. True records the post as
    /// made (once, whichever worker asks first).
    pub fn progress_due(&mut self, campaign: &str, milestone: i64) -> Result<bool> {
        let (now_us, _) = now();
        self.write(|db| {
            let n = db.execute(
                "UPDATE campaign_progress SET last_posted_us = ?3,
                     milestone = CASE WHEN milestone < ?2 THEN ?2 ELSE milestone END
                 WHERE campaign = ?1 AND (milestone < ?2
                     OR (every_us IS NOT NULL AND last_posted_us + every_us <= ?3))",
                &[campaign.into(), Val::Int(milestone), Val::Int(now_us)],
            )?;
            Ok(n == 1)
        })
    }

    /// Store tenant attributes (priority keys): tenant -> name -> value; audited
    /// (`attributes`, by `actor`: how many tenants, which names).
    pub fn set_attributes(
        &mut self,
        attributes: &BTreeMap<String, BTreeMap<String, String>>,
        actor: &str,
    ) -> Result<()> {
        let names: std::collections::BTreeSet<&String> =
            attributes.values().flat_map(|v| v.keys()).collect();
        let entry = Entry::new(
            actor,
            "attributes",
            "tenant-attributes",
            serde_json::json!({"tenants": attributes.len(), "names": names}),
        );
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
            write_audited(db, std::slice::from_ref(&entry))?;
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
