//! Scheduled maintenance in the control store, in Statuspage's vocabulary (docs/status.md):
//! a maintenance window with its components, its status (scheduled, in progress,
//! verifying, completed) and an update for every change, each change audited.

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::db::Val;
use crate::ids::new_id;
use crate::store::{now, ControlStore};
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
            }),
        );
        self.write(|db| {
            db.execute(
                "INSERT INTO maintenances (id, name, status, created_at, updated_at,
                     scheduled_for, scheduled_until)
                 VALUES (?1, ?2, 'scheduled', ?3, ?3, ?4, ?5)",
                &[
                    id.as_str().into(),
                    new.name.as_str().into(),
                    at.as_str().into(),
                    for_text.as_str().into(),
                    until_text.as_str().into(),
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
        let (action, default, column) = match status {
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
                "status": status.as_str(),
                "message": message,
                "update": update,
            }),
        );
        self.write(|db| {
            // The status is checked again under the write: a concurrent change wins once.
            let n = db.execute(
                &format!(
                    "UPDATE maintenances SET status = ?2, updated_at = ?3, {column} = ?3
                     WHERE id = ?1 AND status = ?4"
                ),
                &[
                    id.into(),
                    status.as_str().into(),
                    at.as_str().into(),
                    current.status.as_str().into(),
                ],
            )?;
            if n != 1 {
                return Err(Error::usage(format!(
                    "maintenance {id} changed meanwhile (nothing changed): try again"
                )));
            }
            db.execute(
                "INSERT INTO maintenance_updates (id, maintenance, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    update.as_str().into(),
                    id.into(),
                    status.as_str().into(),
                    message.as_str().into(),
                    at.as_str().into(),
                ],
            )?;
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
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
                     scheduled_until, started_at, monitoring_at, resolved_at
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
            });
        }
        Ok(out)
    }
}
