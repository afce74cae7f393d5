//! Downtime and credits from what the control store recorded (docs/status.md, "SLA and
//! credits"): for each tenant of an incident's campaigns, when its data went missing, when
//! it was restored and accepted, and what that costs in the month under the `[sla]` tiers.

use serde::Serialize;

use lifeboat_core::config::SlaConfig;
use lifeboat_core::sla::{share_in, uptime_percent, Month};
use lifeboat_core::time::{format_us, parse};
use lifeboat_core::{Error, Result};

use crate::campaigns::Stage;
use crate::incidents::Incident;
use crate::store::{now, ControlStore};

/// What marks the start of a tenant's downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DowntimeStart {
    /// The audited wave of a guarded plan that deleted the tenant (`lifeboat tenant
    /// delete`), recorded when the wave committed.
    TenantDeleted,
    /// The audited wave of another guarded plan that touched the tenant.
    Wave,
    /// The campaign restores to just before a transaction (`--before-tx`): that
    /// transaction's commit time.
    DeletingTransaction,
    /// Nothing recorded when the data went missing: the incident's start (never before
    /// the campaign's restore point).
    IncidentStart,
}

impl DowntimeStart {
    pub fn describe(self) -> &'static str {
        match self {
            DowntimeStart::TenantDeleted => "tenant deleted (guarded wave)",
            DowntimeStart::Wave => "guarded wave",
            DowntimeStart::DeletingTransaction => "deleting transaction",
            DowntimeStart::IncidentStart => "incident start",
        }
    }
}

/// One tenant's downtime in an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Downtime {
    pub campaign: String,
    pub tenant: String,
    pub users: i64,
    pub stage: Stage,
    pub start_us: i64,
    pub start_from: DowntimeStart,
    /// Restored and verified.
    pub restored_us: Option<i64>,
    /// Accepted by its admin (or automatically).
    pub accepted_us: Option<i64>,
    /// When the downtime ended under the policy (`accept_ends_downtime`); `None`: not yet.
    pub end_us: Option<i64>,
}

/// One tenant's line of the SLA report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaLine {
    pub tenant: String,
    pub campaign: String,
    pub tier: Option<String>,
    pub down_from: String,
    pub down_from_source: DowntimeStart,
    /// `None`: still down (counted up to now).
    pub down_until: Option<String>,
    /// The whole downtime, and its share in the month.
    pub downtime_minutes: f64,
    pub downtime_minutes_in_month: f64,
    pub uptime_percent: f64,
    pub target_percent: Option<f64>,
    pub target_missed: bool,
    pub credit_percent: f64,
    /// The share in the month in microseconds, for exact arithmetic.
    #[serde(skip)]
    pub downtime_us_in_month: i64,
}

/// The SLA report of an incident for a month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaReport {
    pub incident: String,
    pub month: String,
    pub month_minutes: f64,
    pub accept_ends_downtime: bool,
    pub tenants: Vec<SlaLine>,
}

fn minutes(us: i64) -> f64 {
    us as f64 / 60_000_000.0
}

/// A stored time, for the report.
fn time_us(text: &str, what: &str) -> Result<i64> {
    parse(text).map_err(|e| Error::source(format!("control store: {what}: {}", e.message())))
}

impl ControlStore {
    /// Every audit entry with one of `actions`, oldest first: (time, action, subject,
    /// details).
    pub(crate) fn entries_of(
        &mut self,
        actions: &[&str],
    ) -> Result<Vec<(i64, String, String, serde_json::Value)>> {
        let marks: Vec<String> = (1..=actions.len()).map(|i| format!("?{i}")).collect();
        let params: Vec<crate::db::Val> = actions.iter().map(|a| (*a).into()).collect();
        let mut out = Vec::new();
        for r in self.db.query(
            &format!(
                "SELECT at, action, subject, details FROM audit WHERE action IN ({})
                 ORDER BY seq",
                marks.join(", ")
            ),
            &params,
        )? {
            let at = time_us(&r.text(0)?, "an audit entry's time")?;
            let details = serde_json::from_str(&r.text(3)?).unwrap_or(serde_json::Value::Null);
            out.push((at, r.text(1)?, r.text(2)?, details));
        }
        Ok(out)
    }

    /// Each tenant of the incident's campaigns: when its data went missing and when it
    /// came back. `accept_ends`: the downtime ends at acceptance.
    pub fn downtimes(&mut self, incident: &Incident, accept_ends: bool) -> Result<Vec<Downtime>> {
        let campaigns: Vec<_> = self
            .campaigns()?
            .into_iter()
            .filter(|c| c.incident == incident.id)
            .collect();
        if campaigns.is_empty() {
            return Ok(Vec::new());
        }
        let incident_start = time_us(&incident.started_at, "the incident's start")?;
        let entries = self.entries_of(&["delete", "wave", "wave-recovered", "accept"])?;
        let mut out = Vec::new();
        // Oldest campaign first.
        for campaign in campaigns.iter().rev() {
            let restore_point = time_us(&campaign.target_time, "a campaign's restore point")?;
            let before_tx = campaign.target.get("before_tx").is_some();
            for t in self.campaign_tenants(Some(&campaign.id))? {
                let subject = format!("tenant:{}", t.tenant);
                // The first guarded wave that removed the tenant's data after the restore
                // point and before the campaign started.
                let wave = entries
                    .iter()
                    .filter(|(at, _, _, _)| *at > restore_point && *at <= campaign.created_at_us)
                    .find_map(|(at, action, entry_subject, details)| {
                        let named = details["tenants"]
                            .as_array()
                            .is_some_and(|ts| ts.iter().any(|k| k.as_str() == Some(&t.tenant)));
                        match action.as_str() {
                            "delete" if *entry_subject == subject => {
                                Some((*at, DowntimeStart::TenantDeleted))
                            }
                            "wave" | "wave-recovered" if named => Some((*at, DowntimeStart::Wave)),
                            _ => None,
                        }
                    });
                let (start_us, start_from) = match wave {
                    // A tenant-delete wave writes its `wave` entry and the tenants' `delete`
                    // entries together: say which it was.
                    Some((at, DowntimeStart::Wave))
                        if entries.iter().any(|(a, action, s, _)| {
                            *a == at && action == "delete" && *s == subject
                        }) =>
                    {
                        (at, DowntimeStart::TenantDeleted)
                    }
                    Some(found) => found,
                    None if before_tx => (restore_point + 1, DowntimeStart::DeletingTransaction),
                    None => (
                        incident_start.max(restore_point),
                        DowntimeStart::IncidentStart,
                    ),
                };
                // Restored in its last phase (a phased campaign's earlier phases do not
                // end the downtime).
                let restored_us = t.is_restored(campaign).then_some(t.done_at_us).flatten();
                let accepted_us = entries
                    .iter()
                    .filter(|(at, action, s, details)| {
                        action == "accept"
                            && *s == subject
                            && details["campaign"].as_str() == Some(&campaign.id)
                            && restored_us.is_some_and(|r| *at >= r)
                    })
                    .map(|(at, _, _, _)| *at)
                    .next_back();
                let end_us = match (t.stage, accept_ends) {
                    (Stage::Restored, true) => accepted_us.or(restored_us),
                    (Stage::AwaitingAcceptance, true) => None,
                    (_, _) => restored_us,
                };
                out.push(Downtime {
                    campaign: campaign.id.clone(),
                    tenant: t.tenant,
                    users: t.users,
                    stage: t.stage,
                    start_us,
                    start_from,
                    restored_us,
                    accepted_us,
                    end_us,
                });
            }
        }
        Ok(out)
    }

    /// The SLA report of incident `id` for `month` (default: the month the incident
    /// started): each tenant's downtime, its share in the month, the month's uptime, its
    /// tier and the credit owed. A tenant still down counts up to now.
    pub fn sla_report(
        &mut self,
        id: &str,
        sla: &SlaConfig,
        month: Option<Month>,
    ) -> Result<SlaReport> {
        let incident = self.incident(id)?.ok_or_else(|| {
            Error::usage(format!("unknown incident {id}: `lifeboat incident list`"))
        })?;
        let month = match month {
            Some(m) => m,
            None => Month::of(time_us(&incident.started_at, "the incident's start")?),
        };
        let length = month.length_us();
        let (now_us, _) = now();
        let attributes = self.attributes()?;
        let mut tenants = Vec::new();
        for d in self.downtimes(&incident, sla.accept_ends_downtime)? {
            let value = attributes
                .get(&d.tenant)
                .and_then(|a| a.get(&sla.tier_attribute))
                .map(String::as_str);
            let tier = sla.tier_of(value);
            let end = d.end_us.unwrap_or(now_us.max(d.start_us));
            let in_month = share_in(d.start_us, end, month);
            tenants.push(SlaLine {
                tenant: d.tenant,
                campaign: d.campaign,
                tier: tier.map(|(name, _)| name.to_string()),
                down_from: format_us(d.start_us),
                down_from_source: d.start_from,
                down_until: d.end_us.map(format_us),
                downtime_minutes: minutes(end - d.start_us),
                downtime_minutes_in_month: minutes(in_month),
                uptime_percent: uptime_percent(in_month, length),
                target_percent: tier.map(|(_, t)| t.target),
                target_missed: tier.is_some_and(|(_, t)| t.missed(in_month, length)),
                credit_percent: tier.map(|(_, t)| t.credit(in_month, length)).unwrap_or(0.0),
                downtime_us_in_month: in_month,
            });
        }
        Ok(SlaReport {
            incident: incident.id,
            month: month.to_string(),
            month_minutes: minutes(length),
            accept_ends_downtime: sla.accept_ends_downtime,
            tenants,
        })
    }
}
