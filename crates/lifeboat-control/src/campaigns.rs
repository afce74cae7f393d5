//! Recovery campaigns in the control store (docs/status.md): the tenants to restore for an
//! incident, the stage of each, claimed by workers under a lease; and tenant attributes,
//! the keys campaigns order their tenants by.

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, write_entries, Entry};
use crate::contacts::{record_campaign_contacts, Contact};
use crate::db::{Row, Val};
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
    pub stage: Stage,
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
        stage: r.word(5)?,
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
                        "priority": campaign.priority, "batch_size": campaign.batch_size}),
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
                // The first attempt of a round tells the tenant's contacts; a claim after
                // a failed attempt or a takeover does not.
                if t.stage == Stage::Queued && t.attempts == 0 {
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
                tenant_notices(
                    db,
                    campaign,
                    tenant,
                    event,
                    serde_json::json!({"stage": stage}),
                    &format!("{now_us}"),
                )?;
            }
            Ok(n == 1)
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
            db.execute(
                "UPDATE campaign_tenants SET stage = 'restored'
                 WHERE campaign = ?1 AND tenant = ?2 AND stage = 'awaiting_acceptance'",
                &[campaign.as_str().into(), tenant.as_str().into()],
            )?;
            write_audited(
                db,
                &[Entry::new(
                    "customer",
                    "accept",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"campaign": campaign, "automatic": false}),
                )],
            )?;
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
            for (campaign, tenant) in &due {
                db.execute(
                    "UPDATE campaign_tenants SET stage = 'restored'
                     WHERE campaign = ?1 AND tenant = ?2 AND stage = 'awaiting_acceptance'",
                    &[campaign.into(), tenant.into()],
                )?;
                entries.push(Entry::new(
                    "lifeboat",
                    "accept",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"campaign": campaign, "automatic": true,
                        "after_minutes": after_us / 60_000_000}),
                ));
            }
            write_entries(db, &entries)?;
            for (campaign, tenant) in &due {
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
