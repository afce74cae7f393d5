//! The promised update cadence (docs/status.md, "The update cadence"): when each
//! unresolved incident's next public update is due, and the alarm the operators get while
//! it is overdue.
//!
//! An incident's next update is due one cadence (`[status] update_every`, by its impact)
//! after its last public update, or after it was opened. From the moment it is due until
//! an update is posted, each cadence period that passes is one overdue period; the first
//! notifier pass in a period enqueues one alarm for it, keyed by the incident, the last
//! update's time and the period, so that several notifiers (or passes) add it once. An
//! alarm still waiting to be sent when an update is posted, or the incident resolved, is
//! withdrawn.

use serde_json::json;

use lifeboat_core::time::format_us;
use lifeboat_core::{Error, Result};

use crate::db::Db;
use crate::incidents::{load_incidents, Impact, Incident};
use crate::outbox::{enqueue, Notice, NoticeEvent, Recipient};
use crate::store::{now, ControlStore};

fn stored_time(text: &str) -> Result<i64> {
    lifeboat_core::time::parse(text)
        .map_err(|e| Error::source(format!("control store: {}", e.message())))
}

impl Incident {
    /// When the public last heard of the incident: its latest update, else its opening
    /// (microseconds).
    pub fn last_public_update_us(&self) -> Result<i64> {
        let mut last = stored_time(&self.created_at)?;
        for update in &self.updates {
            last = last.max(stored_time(&update.created_at)?);
        }
        Ok(last)
    }

    /// When its next public update is due under a cadence of `every_us`: none once it is
    /// resolved.
    pub fn next_update_due_us(&self, every_us: i64) -> Result<Option<i64>> {
        if self.status.is_resolved() {
            return Ok(None);
        }
        Ok(Some(self.last_public_update_us()?.saturating_add(every_us)))
    }
}

/// How many promised updates a silence of `silent_us` missed under a cadence of
/// `every_us`: none up to one cadence, one up to two, and so on.
pub fn missed_periods(silent_us: i64, every_us: i64) -> i64 {
    if every_us <= 0 || silent_us <= 0 {
        return 0;
    }
    (silent_us - 1) / every_us
}

/// One incident past its due time without a public update, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub incident: String,
    /// Its last public update (or its opening).
    pub since_us: i64,
    /// When the update was due.
    pub due_us: i64,
    pub every_us: i64,
    /// 1 in the first cadence period after the due time, 2 in the next, …
    pub period: i64,
}

/// An unresolved incident and when the public last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub incident: String,
    pub impact: Impact,
    /// Its last public update, or its opening (µs).
    pub since_us: i64,
}

impl Silence {
    /// The silence of `incident`, unless it is resolved.
    pub fn of(incident: &Incident) -> Result<Option<Silence>> {
        if incident.status.is_resolved() {
            return Ok(None);
        }
        Ok(Some(Silence {
            incident: incident.id.clone(),
            impact: incident.impact,
            since_us: incident.last_public_update_us()?,
        }))
    }
}

/// Every unresolved incident's silence, read with one query (the notifier asks on every
/// pass: no update bodies are read).
fn silences(db: &mut Db) -> Result<Vec<Silence>> {
    // Stored times are RFC 3339 in one width and zone: their text order is their order.
    let rows = db.query(
        "SELECT i.id, i.impact, i.created_at, MAX(u.created_at) FROM incidents i
         LEFT JOIN incident_updates u ON u.incident = i.id
         WHERE i.status NOT IN ('resolved', 'postmortem')
         GROUP BY i.id, i.impact, i.created_at ORDER BY i.id",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            let opened = stored_time(&r.text(2)?)?;
            let updated = r.opt_text(3)?.map(|t| stored_time(&t)).transpose()?;
            Ok(Silence {
                incident: r.text(0)?,
                impact: r.word(1)?,
                since_us: updated.map_or(opened, |u| u.max(opened)),
            })
        })
        .collect()
}

/// The incidents overdue at `now_us`, each with its current overdue period. `every_us`:
/// an impact's promised cadence, if any.
pub fn overdue(
    silences: &[Silence],
    every_us: &dyn Fn(Impact) -> Option<i64>,
    now_us: i64,
) -> Vec<Overdue> {
    let mut out = Vec::new();
    for silence in silences {
        let Some(every) = every_us(silence.impact).filter(|e| *e > 0) else {
            continue;
        };
        let due = silence.since_us.saturating_add(every);
        // Due "by" its time: overdue only after it.
        if now_us <= due {
            continue;
        }
        out.push(Overdue {
            incident: silence.incident.clone(),
            since_us: silence.since_us,
            due_us: due,
            every_us: every,
            period: missed_periods(now_us - silence.since_us, every),
        });
    }
    out
}

/// Withdraw the alarms still waiting to be sent whose incident has had a public update
/// since (or was resolved): `state = 'withdrawn'`.
fn withdraw_stale(db: &mut Db, silences: &[Silence]) -> Result<usize> {
    let waiting = db.query(
        "SELECT id, body FROM outbox WHERE event = 'update_overdue' AND state = 'pending'",
        &[],
    )?;
    let mut withdrawn = 0;
    for row in waiting {
        let id = row.text(0)?;
        let body: serde_json::Value = serde_json::from_str(&row.text(1)?).map_err(|e| {
            Error::source(format!("control store: the body of notification {id}: {e}"))
        })?;
        let incident_id = body["update_overdue"]["incident_id"].as_str();
        let since = body["update_overdue"]["silent_since_us"].as_i64();
        // Resolved incidents have no silence.
        let stale = !silences
            .iter()
            .any(|s| Some(s.incident.as_str()) == incident_id && Some(s.since_us) == since);
        if stale {
            withdrawn += db.execute(
                "UPDATE outbox SET state = 'withdrawn', last_error = ?2
                 WHERE id = ?1 AND state = 'pending'",
                &[
                    id.as_str().into(),
                    "withdrawn: the incident got its public update".into(),
                ],
            )? as usize;
        }
    }
    Ok(withdrawn)
}

impl ControlStore {
    /// Enqueue an alarm for every unresolved incident whose public update is overdue
    /// under `every_us` (an impact's promised cadence): to every operator webhook and to
    /// each of `emails`, once per incident and overdue period (key
    /// `silence:INCIDENT:SINCE:PERIOD:…`); and withdraw the waiting alarms that an update
    /// made untrue. Returns the alarms added (one per incident and period).
    pub fn enqueue_silence_alarms(
        &mut self,
        every_us: &dyn Fn(Impact) -> Option<i64>,
        emails: &[String],
    ) -> Result<usize> {
        let (now_us, _) = now();
        let due = overdue(&silences(&mut self.db)?, every_us, now_us);
        let waiting = self.db.query_one(
            "SELECT 1 FROM outbox WHERE event = 'update_overdue' AND state = 'pending' LIMIT 1",
            &[],
        )?;
        if due.is_empty() && waiting.is_none() {
            return Ok(0);
        }
        self.db.transaction(|db| {
            // Read again inside the transaction: an update posted meanwhile is seen.
            let open = silences(db)?;
            withdraw_stale(db, &open)?;
            let mut added = 0;
            for o in overdue(&open, every_us, now_us) {
                let Some(incident) = load_incidents(db, Some(&o.incident))?.pop() else {
                    continue;
                };
                let facts = json!({
                    "incident_id": o.incident,
                    "silent_since": format_us(o.since_us),
                    "silent_since_us": o.since_us,
                    "due_at": format_us(o.due_us),
                    "update_every_minutes": o.every_us / 60_000_000,
                    "period": o.period,
                    "silent_minutes": (now_us - o.since_us) / 60_000_000,
                });
                let key = format!("silence:{}:{}:{}", o.incident, o.since_us, o.period);
                let mut notices = vec![Notice {
                    key: format!("{key}:operators"),
                    event: NoticeEvent::UpdateOverdue,
                    to: Recipient::Operators,
                    body: json!({"incident": incident, "update_overdue": facts}),
                }];
                let summary = json!({
                    "incident": {"id": incident.id, "name": incident.name,
                        "status": incident.status, "impact": incident.impact},
                    "update_overdue": facts,
                });
                notices.extend(Notice::to_operator_emails(
                    &key,
                    NoticeEvent::UpdateOverdue,
                    emails,
                    &summary,
                ));
                // The operators' notice is the alarm: added once, whoever asks first.
                added += enqueue(db, &notices[..1])?;
                enqueue(db, &notices[1..])?;
            }
            Ok(added)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{IncidentStatus, IncidentUpdate};

    fn incident(impact: Impact, created: &str, updates: &[&str]) -> Incident {
        Incident {
            id: "i1".into(),
            name: "Outage".into(),
            status: IncidentStatus::Identified,
            impact,
            created_at: created.into(),
            updated_at: created.into(),
            started_at: created.into(),
            monitoring_at: None,
            resolved_at: None,
            updates: updates
                .iter()
                .map(|at| IncidentUpdate {
                    id: format!("u{at}"),
                    incident_id: "i1".into(),
                    status: IncidentStatus::Identified,
                    body: "x".into(),
                    created_at: (*at).into(),
                    affected_components: Vec::new(),
                    translations: Default::default(),
                })
                .collect(),
            components: Vec::new(),
            postmortem_body: None,
            postmortem_published_at: None,
        }
    }

    fn at(text: &str) -> i64 {
        lifeboat_core::time::parse(text).expect("time")
    }

    #[test]
    fn an_incident_is_overdue_one_period_at_a_time_from_its_last_update() {
        let hour = 3_600_000_000;
        let every = |impact: Impact| (impact == Impact::Major).then_some(hour);
        let i = incident(
            Impact::Major,
            "2026-04-05T10:00:00Z",
            &["2026-04-05T10:20:00Z", "2026-04-05T10:05:00Z"],
        );
        assert_eq!(
            i.next_update_due_us(hour).expect("due"),
            Some(at("2026-04-05T11:20:00Z"))
        );
        let list = [Silence::of(&i).expect("times").expect("unresolved")];
        assert!(overdue(&list, &every, at("2026-04-05T11:20:00Z")).is_empty());
        let first = overdue(&list, &every, at("2026-04-05T11:20:01Z"));
        assert_eq!(first[0].period, 1);
        assert_eq!(first[0].since_us, at("2026-04-05T10:20:00Z"));
        let third = overdue(&list, &every, at("2026-04-05T13:30:00Z"));
        assert_eq!(third[0].period, 3);
        assert_eq!(missed_periods(hour, hour), 0);
        assert_eq!(missed_periods(hour + 1, hour), 1);
        assert_eq!(missed_periods(2 * hour, hour), 1);
        // No promise for this impact, and none once resolved.
        let minor = incident(Impact::Minor, "2026-04-05T10:00:00Z", &[]);
        let minor = [Silence::of(&minor).expect("times").expect("unresolved")];
        assert!(overdue(&minor, &every, at("2026-04-06T10:00:00Z")).is_empty());
        let mut resolved = i.clone();
        resolved.status = IncidentStatus::Resolved;
        assert_eq!(resolved.next_update_due_us(hour).expect("due"), None);
        assert_eq!(Silence::of(&resolved).expect("times"), None);
    }
}
