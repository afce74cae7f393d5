//! Scheduled maintenance in the control store, in Statuspage's vocabulary (docs/status.md):
//! a maintenance window with its components, its status (scheduled, in progress,
//! verifying, completed) and an update for every change, each change audited. A
//! maintenance may also start and complete by itself at the times it announced
//! ([`ControlStore::run_scheduled_maintenances`]).

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::db::Val;
use crate::ids::new_id;
use crate::store::{now, status_changed, ControlStore};
use crate::words::vocabulary;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS maintenances (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    scheduled_for TEXT NOT NULL, scheduled_until TEXT NOT NULL, started_at TEXT,
    monitoring_at TEXT, resolved_at TEXT);
CREATE TABLE IF NOT EXISTS maintenance_updates (id TEXT PRIMARY KEY,
    maintenance TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance_components (maintenance TEXT NOT NULL,
    component TEXT NOT NULL, PRIMARY KEY (maintenance, component));
";

/// Columns added after the first version of the table, on the first open of a store made
/// before them. A maintenance scheduled before they existed moves only by hand (0).
pub(crate) fn add_columns(db: &mut crate::db::Db) -> Result<()> {
    db.add_column("maintenances", "auto_start", "BIGINT NOT NULL DEFAULT 0")?;
    db.add_column("maintenances", "auto_complete", "BIGINT NOT NULL DEFAULT 0")
}

/// Who the automatic transitions are by, in the audit log.
pub const AUTOMATIC_ACTOR: &str = "lifeboat";

vocabulary! {
    /// A scheduled maintenance's status (Statuspage's words), in the order it goes.
    pub enum MaintenanceStatus("maintenance status") {
        Scheduled = "scheduled",
        InProgress = "in_progress",
        Verifying = "verifying",
        Completed = "completed",
    }
}

impl MaintenanceStatus {
    /// Going on now: in progress or verifying.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            MaintenanceStatus::InProgress | MaintenanceStatus::Verifying
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceUpdate {
    pub id: String,
    pub maintenance_id: String,
    pub status: MaintenanceStatus,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Maintenance {
    pub id: String,
    pub name: String,
    pub status: MaintenanceStatus,
    pub created_at: String,
    pub updated_at: String,
    /// The announced window (RFC 3339).
    pub scheduled_for: String,
    pub scheduled_until: String,
    /// When it was started, moved to verifying, and completed.
    pub started_at: Option<String>,
    pub monitoring_at: Option<String>,
    pub resolved_at: Option<String>,
    /// Started by itself at `scheduled_for` (if still scheduled then), and completed by
    /// itself at `scheduled_until` (if not completed by then).
    pub auto_start: bool,
    pub auto_complete: bool,
    /// Newest first.
    pub updates: Vec<MaintenanceUpdate>,
    /// Component ids.
    pub components: Vec<String>,
}

/// A maintenance to schedule.
#[derive(Debug, Clone, Default)]
pub struct NewMaintenance {
    pub name: String,
    /// RFC 3339.
    pub scheduled_for: String,
    pub scheduled_until: String,
    /// Sources or component names.
    pub components: Vec<String>,
    pub message: String,
    /// Start it at `scheduled_for` and complete it at `scheduled_until` without a command.
    pub auto_start: bool,
    pub auto_complete: bool,
}

impl ControlStore {
    /// Schedule a maintenance, audited (`maintenance-schedule` of `maintenance:ID`, by
    /// `actor`). Refused, changing nothing, when the window ends before it starts or a
    /// component is unknown. Returns its id.
    pub fn schedule_maintenance(&mut self, new: &NewMaintenance, actor: &str) -> Result<String> {
        if new.name.trim().is_empty() {
            return Err(Error::usage("a maintenance needs a name (--name)"));
        }
        let starts = lifeboat_core::time::parse(&new.scheduled_for)
            .map_err(|e| Error::usage(format!("--starts: {}", e.message())))?;
        let ends = lifeboat_core::time::parse(&new.scheduled_until)
            .map_err(|e| Error::usage(format!("--ends: {}", e.message())))?;
        if ends <= starts {
            return Err(Error::usage(format!(
                "the maintenance ends ({}) before it starts ({}): --ends must be later than \
                 --starts",
                new.scheduled_until, new.scheduled_for
            )));
        }
        let known = self.components()?;
        let mut components = BTreeMap::new();
        for wanted in &new.components {
            let component = known
                .iter()
                .find(|c| &c.source == wanted || &c.name == wanted)
                .ok_or_else(|| {
                    let names: Vec<String> = known
                        .iter()
                        .map(|c| format!("{} ({})", c.source, c.name))
                        .collect();
                    Error::usage(format!(
                        "unknown component {wanted:?}; components: {}",
                        names.join(", ")
                    ))
                })?;
            components.insert(component.id.clone(), component.source.clone());
        }
        let id = new_id()?;
        let update = new_id()?;
        let (_, at) = now();
        let (for_text, until_text) = (
            lifeboat_core::time::format_us(starts),
            lifeboat_core::time::format_us(ends),
        );
        let message = if new.message.trim().is_empty() {
            format!("{} is scheduled from {for_text} to {until_text}.", new.name)
        } else {
            new.message.clone()
        };
        let entry = Entry::new(
            actor,
            "maintenance-schedule",
            &format!("maintenance:{id}"),
            serde_json::json!({
                "name": new.name,
                "scheduled_for": for_text,
                "scheduled_until": until_text,
                "components": components.values().collect::<Vec<_>>(),
                "message": message,
                "update": update,
                "auto_start": new.auto_start,
                "auto_complete": new.auto_complete,
            }),
        );
        self.write(|db| {
            db.execute(
                "INSERT INTO maintenances (id, name, status, created_at, updated_at,
                     scheduled_for, scheduled_until, auto_start, auto_complete)
                 VALUES (?1, ?2, 'scheduled', ?3, ?3, ?4, ?5, ?6, ?7)",
                &[
                    id.as_str().into(),
                    new.name.as_str().into(),
                    at.as_str().into(),
                    for_text.as_str().into(),
                    until_text.as_str().into(),
                    i64::from(new.auto_start).into(),
                    i64::from(new.auto_complete).into(),
                ],
            )?;
            db.execute(
                "INSERT INTO maintenance_updates (id, maintenance, status, body, created_at)
                 VALUES (?1, ?2, 'scheduled', ?3, ?4)",
                &[
                    update.as_str().into(),
                    id.as_str().into(),
                    message.as_str().into(),
                    at.as_str().into(),
                ],
            )?;
            for component in components.keys() {
                db.execute(
                    "INSERT INTO maintenance_components (maintenance, component)
                     VALUES (?1, ?2)",
                    &[id.as_str().into(), component.as_str().into()],
                )?;
            }
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Move maintenance `id` on to `status` (in progress, verifying or completed), with an
    /// update (`message`, or a default one), audited (`maintenance-start`,
    /// `maintenance-verify`, `maintenance-complete`). Refused, changing nothing, for an
    /// unknown id or a move that is not forward (completing twice, starting a completed
    /// one).
    pub fn advance_maintenance(
        &mut self,
        id: &str,
        status: MaintenanceStatus,
        message: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let current = self.maintenance(id)?.ok_or_else(|| {
            Error::usage(format!(
                "unknown maintenance {id}: `lifeboat maintenance list`"
            ))
        })?;
        let allowed = match status {
            MaintenanceStatus::Scheduled => false,
            MaintenanceStatus::InProgress => current.status == MaintenanceStatus::Scheduled,
            MaintenanceStatus::Verifying => current.status == MaintenanceStatus::InProgress,
            MaintenanceStatus::Completed => current.status != MaintenanceStatus::Completed,
        };
        if !allowed {
            return Err(Error::usage(format!(
                "maintenance {id} is {}: it cannot become {} (nothing changed)",
                current.status, status
            )));
        }
        let moved = self.transition(id, current.status, status, message, actor)?;
        if !moved {
            return Err(Error::usage(format!(
                "maintenance {id} changed meanwhile (nothing changed): try again"
            )));
        }
        Ok(())
    }

    /// Start every maintenance whose window has begun and that starts by itself, and
    /// complete every one whose window has ended and that completes by itself (a
    /// maintenance already completed, by hand or otherwise, is left alone). Each move is
    /// the same as the command's, with its default update, audited by `lifeboat`. Safe to
    /// run from several processes at once: each move is a conditional update, made once.
    /// Returns the moves made, in order.
    pub fn run_scheduled_maintenances(&mut self) -> Result<Vec<(String, MaintenanceStatus)>> {
        let (_, at) = now();
        let mut moved = Vec::new();
        let due = self.db.query(
            "SELECT id FROM maintenances WHERE status = 'scheduled' AND auto_start <> 0
             AND scheduled_for <= ?1 ORDER BY scheduled_for, id",
            &[at.as_str().into()],
        )?;
        for r in &due {
            let id = r.text(0)?;
            let status = MaintenanceStatus::InProgress;
            if self.transition(
                &id,
                MaintenanceStatus::Scheduled,
                status,
                None,
                AUTOMATIC_ACTOR,
            )? {
                moved.push((id, status));
            }
        }
        let over = self.db.query(
            "SELECT id, status FROM maintenances WHERE status <> 'completed'
             AND auto_complete <> 0 AND scheduled_until <= ?1 ORDER BY scheduled_until, id",
            &[at.as_str().into()],
        )?;
        for r in &over {
            let id = r.text(0)?;
            let from: MaintenanceStatus = r.word(1)?;
            let status = MaintenanceStatus::Completed;
            if self.transition(&id, from, status, None, AUTOMATIC_ACTOR)? {
                moved.push((id, status));
            }
        }
        Ok(moved)
    }

    /// Move maintenance `id` from `from` to `to` with an update, audited, in one
    /// transaction; `false` (nothing written) when it is no longer `from`.
    fn transition(
        &mut self,
        id: &str,
        from: MaintenanceStatus,
        to: MaintenanceStatus,
        message: Option<&str>,
        actor: &str,
    ) -> Result<bool> {
        let (action, default, column) = match to {
            MaintenanceStatus::InProgress => (
                "maintenance-start",
                "The scheduled maintenance is in progress.",
                "started_at",
            ),
            MaintenanceStatus::Verifying => (
                "maintenance-verify",
                "The maintenance is done; its results are being verified.",
                "monitoring_at",
            ),
            _ => (
                "maintenance-complete",
                "The scheduled maintenance has been completed.",
                "resolved_at",
            ),
        };
        let message = message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(default)
            .to_string();
        let update = new_id()?;
        let (_, at) = now();
        let entry = Entry::new(
            actor,
            action,
            &format!("maintenance:{id}"),
            serde_json::json!({
                "status": to.as_str(),
                "message": message,
                "update": update,
            }),
        );
        self.db.transaction(|db| {
            // The status is checked again under the write: a concurrent change wins once.
            let n = db.execute(
                &format!(
                    "UPDATE maintenances SET status = ?2, updated_at = ?3, {column} = ?3
                     WHERE id = ?1 AND status = ?4"
                ),
                &[
                    id.into(),
                    to.as_str().into(),
                    at.as_str().into(),
                    from.as_str().into(),
                ],
            )?;
            if n != 1 {
                return Ok(false);
            }
            db.execute(
                "INSERT INTO maintenance_updates (id, maintenance, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    update.as_str().into(),
                    id.into(),
                    to.as_str().into(),
                    message.as_str().into(),
                    at.as_str().into(),
                ],
            )?;
            write_audited(db, std::slice::from_ref(&entry))?;
            status_changed(db)?;
            Ok(true)
        })
    }

    pub fn maintenance(&mut self, id: &str) -> Result<Option<Maintenance>> {
        Ok(self.load_maintenances(Some(id))?.pop())
    }

    /// Every maintenance, by the start of its window (latest first), with its updates
    /// (newest first) and components.
    pub fn maintenances(&mut self) -> Result<Vec<Maintenance>> {
        self.load_maintenances(None)
    }

    fn load_maintenances(&mut self, only: Option<&str>) -> Result<Vec<Maintenance>> {
        let (filter, by_id, params): (&str, &str, Vec<Val>) = match only {
            Some(id) => ("WHERE maintenance = ?1", "WHERE id = ?1", vec![id.into()]),
            None => ("", "", Vec::new()),
        };
        let mut updates: BTreeMap<String, Vec<MaintenanceUpdate>> = BTreeMap::new();
        for r in self.db.query(
            &format!(
                "SELECT id, maintenance, status, body, created_at FROM maintenance_updates
                 {filter} ORDER BY created_at DESC, id"
            ),
            &params,
        )? {
            let maintenance = r.text(1)?;
            updates
                .entry(maintenance.clone())
                .or_default()
                .push(MaintenanceUpdate {
                    id: r.text(0)?,
                    maintenance_id: maintenance,
                    status: r.word(2)?,
                    body: r.text(3)?,
                    created_at: r.text(4)?,
                });
        }
        let mut components: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.db.query(
            &format!(
                "SELECT maintenance, component FROM maintenance_components {filter}
                 ORDER BY component"
            ),
            &params,
        )? {
            components.entry(r.text(0)?).or_default().push(r.text(1)?);
        }
        let mut out = Vec::new();
        for r in self.db.query(
            &format!(
                "SELECT id, name, status, created_at, updated_at, scheduled_for,
                     scheduled_until, started_at, monitoring_at, resolved_at, auto_start,
                     auto_complete
                 FROM maintenances {by_id} ORDER BY scheduled_for DESC, id"
            ),
            &params,
        )? {
            let id = r.text(0)?;
            out.push(Maintenance {
                updates: updates.remove(&id).unwrap_or_default(),
                components: components.remove(&id).unwrap_or_default(),
                id,
                name: r.text(1)?,
                status: r.word(2)?,
                created_at: r.text(3)?,
                updated_at: r.text(4)?,
                scheduled_for: r.text(5)?,
                scheduled_until: r.text(6)?,
                started_at: r.opt_text(7)?,
                monitoring_at: r.opt_text(8)?,
                resolved_at: r.opt_text(9)?,
                auto_start: r.int(10)? != 0,
                auto_complete: r.int(11)? != 0,
            });
        }
        Ok(out)
    }
}
