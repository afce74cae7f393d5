//! Incidents in the control store, in Statuspage's vocabulary (docs/status.md): components
//! (one per source), incidents, their updates and the components each one affects.

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::db::Val;
use crate::ids::new_id;
use crate::store::{now, ControlStore};
use crate::words::vocabulary;

vocabulary! {
    /// An incident's status (Statuspage's words), in the order incidents usually go.
    #[derive(Default)]
    pub enum IncidentStatus("incident status") {
        #[default]
        Investigating = "investigating",
        Identified = "identified",
        Monitoring = "monitoring",
        Resolved = "resolved",
        Postmortem = "postmortem",
    }
}

impl IncidentStatus {
    /// Over: resolved, or resolved with a postmortem.
    pub fn is_resolved(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Postmortem)
    }
}

vocabulary! {
    /// How badly an incident hurts (Statuspage's words), least first.
    pub enum Impact("impact") {
        None = "none",
        Minor = "minor",
        Major = "major",
        Critical = "critical",
    }
}

vocabulary! {
    /// A component's status (Statuspage's words).
    pub enum ComponentStatus("component status") {
        Operational = "operational",
        DegradedPerformance = "degraded_performance",
        PartialOutage = "partial_outage",
        MajorOutage = "major_outage",
        UnderMaintenance = "under_maintenance",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub id: String,
    pub source: String,
    pub name: String,
    pub status: ComponentStatus,
    pub position: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A component's status change in an incident update.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AffectedComponent {
    pub code: String,
    pub name: String,
    pub old_status: ComponentStatus,
    pub new_status: ComponentStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentUpdate {
    pub id: String,
    pub incident_id: String,
    pub status: IncidentStatus,
    pub body: String,
    pub created_at: String,
    pub affected_components: Vec<AffectedComponent>,
    /// The body in other languages: language code (`de`, `ja`) -> text.
    pub translations: BTreeMap<String, String>,
}

/// A component's status from a moment on, as recorded when it changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentChange {
    /// The component's id.
    pub component: String,
    pub status: ComponentStatus,
    pub at_us: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: String,
    pub name: String,
    pub status: IncidentStatus,
    pub impact: Impact,
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
    pub status: IncidentStatus,
    /// `None`: unchanged (for a new incident, `none`).
    pub impact: Option<Impact>,
    pub message: String,
    /// The message in other languages: language code -> text (the caller checks the codes).
    pub translations: BTreeMap<String, String>,
    /// Source (component) -> new status.
    pub components: BTreeMap<String, ComponentStatus>,
}

impl ControlStore {
    /// Make sure every source has a component (named `names[source]` or the source); each
    /// one added or renamed is audited (`component`, by `actor`).
    pub fn ensure_components(
        &mut self,
        names: &BTreeMap<String, String>,
        actor: &str,
    ) -> Result<()> {
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
            let entries: Vec<Entry> = missing
                .iter()
                .map(|(source, name)| {
                    Entry::new(
                        actor,
                        "component",
                        &format!("component:{source}"),
                        serde_json::json!({"name": name}),
                    )
                })
                .collect();
            write_audited(db, &entries)?;
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
                    status: r.word(3)?,
                    position: r.int(4)?,
                    created_at: r.text(5)?,
                    updated_at: r.text(6)?,
                })
            })
            .collect()
    }

    /// Create an incident (`id` None) or add an update to one, audited
    /// (`incident-create`, `incident-update` or `incident-resolve` of `incident:ID`, by
    /// `actor`). Returns the incident id.
    pub fn change_incident(
        &mut self,
        id: Option<&str>,
        change: &IncidentChange,
        actor: &str,
    ) -> Result<String> {
        if change.message.trim().is_empty() {
            return Err(Error::usage("an incident update needs a message"));
        }
        if let Some((lang, _)) = change
            .translations
            .iter()
            .find(|(_, t)| t.trim().is_empty())
        {
            return Err(Error::usage(format!(
                "the {lang} translation of the message is empty"
            )));
        }
        let components = self.components()?;
        let mut affected = Vec::new();
        for (source, status) in &change.components {
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
            affected.push((component.clone(), *status));
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
        let (at_us, at) = now();
        let affected_json: Vec<AffectedComponent> = affected
            .iter()
            .map(|(c, status)| AffectedComponent {
                code: c.id.clone(),
                name: c.name.clone(),
                old_status: c.status,
                new_status: *status,
            })
            .collect();
        let affected_text = serde_json::to_string(&affected_json)
            .map_err(|e| Error::source(format!("incident update: {e}")))?;
        let status = change.status.as_str();
        let resolving = change.status.is_resolved();
        let action = match (&existing, resolving) {
            (None, _) => "incident-create",
            (Some(_), true) => "incident-resolve",
            (Some(_), false) => "incident-update",
        };
        let mut details = serde_json::json!({
            "status": status,
            "message": change.message,
            "components": change
                .components
                .iter()
                .map(|(source, status)| (source.clone(), status.as_str()))
                .collect::<BTreeMap<String, &str>>(),
            "update": update_id,
        });
        if !change.translations.is_empty() {
            details["translations"] = serde_json::json!(change.translations);
        }
        if let Some(name) = existing.is_none().then_some(change.name.as_deref()) {
            details["name"] = name.unwrap_or("Incident").into();
        }
        if let Some(impact) = change.impact {
            details["impact"] = impact.as_str().into();
        }
        let entry = Entry::new(actor, action, &format!("incident:{incident_id}"), details);
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
                            change.impact.unwrap_or(Impact::None).as_str().into(),
                            at.as_str().into(),
                            (change.status == IncidentStatus::Monitoring)
                                .then_some(at.as_str())
                                .into(),
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
                            change.impact.map(Impact::as_str).into(),
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
            for (lang, body) in &change.translations {
                db.execute(
                    "INSERT INTO incident_update_translations (update_id, lang, body)
                     VALUES (?1, ?2, ?3)",
                    &[
                        update_id.as_str().into(),
                        lang.as_str().into(),
                        body.as_str().into(),
                    ],
                )?;
            }
            for (component, new_status) in &affected {
                record_component_change(db, &component.id, *new_status, &at, at_us)?;
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
                let back = db.query(
                    "SELECT id FROM components
                     WHERE status <> 'operational'
                       AND id IN (SELECT component FROM incident_components WHERE incident = ?1)
                       AND id NOT IN (
                         SELECT ic.component FROM incident_components ic
                         JOIN incidents i ON i.id = ic.incident
                         WHERE i.id <> ?1 AND i.status NOT IN ('resolved', 'postmortem'))",
                    &[incident_id.as_str().into()],
                )?;
                for row in back {
                    let component = row.text(0)?;
                    record_component_change(
                        db,
                        &component,
                        ComponentStatus::Operational,
                        &at,
                        at_us,
                    )?;
                    db.execute(
                        "UPDATE components SET status = 'operational', updated_at = ?2
                         WHERE id = ?1",
                        &[component.as_str().into(), at.as_str().into()],
                    )?;
                }
            }
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })?;
        Ok(incident_id)
    }

    /// Every recorded component status change, oldest first (changes made before this
    /// build kept them are not there: the page counts those from incidents).
    pub fn component_changes(&mut self) -> Result<Vec<ComponentChange>> {
        self.db
            .query(
                "SELECT component, status, at_us FROM component_changes ORDER BY at_us",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ComponentChange {
                    component: r.text(0)?,
                    status: r.word(1)?,
                    at_us: r.int(2)?,
                })
            })
            .collect()
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
        let mut translations: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in self.db.query(
            &format!(
                "SELECT t.update_id, t.lang, t.body FROM incident_update_translations t
                 JOIN incident_updates u ON u.id = t.update_id {}",
                filter.replace("incident", "u.incident")
            ),
            &params,
        )? {
            translations
                .entry(r.text(0)?)
                .or_default()
                .insert(r.text(1)?, r.text(2)?);
        }
        let mut updates: BTreeMap<String, Vec<IncidentUpdate>> = BTreeMap::new();
        for r in self.db.query(
            &format!(
                "SELECT id, incident, status, body, created_at, affected
                 FROM incident_updates {filter} ORDER BY created_at DESC, id"
            ),
            &params,
        )? {
            let id = r.text(0)?;
            let incident = r.text(1)?;
            let affected_components = serde_json::from_str(&r.text(5)?).map_err(|e| {
                Error::source(format!(
                    "control store: the components affected by incident update {id}: {e}"
                ))
            })?;
            updates
                .entry(incident.clone())
                .or_default()
                .push(IncidentUpdate {
                    translations: translations.remove(&id).unwrap_or_default(),
                    id,
                    incident_id: incident,
                    status: r.word(2)?,
                    body: r.text(3)?,
                    created_at: r.text(4)?,
                    affected_components,
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
                status: r.word(2)?,
                impact: r.word(3)?,
                created_at: r.text(4)?,
                updated_at: r.text(5)?,
                started_at: r.text(6)?,
                monitoring_at: r.opt_text(7)?,
                resolved_at: r.opt_text(8)?,
            });
        }
        Ok(out)
    }
}

/// Record that `component` has `status` from `at` on.
fn record_component_change(
    db: &mut crate::db::Db,
    component: &str,
    status: ComponentStatus,
    at: &str,
    at_us: i64,
) -> Result<()> {
    db.execute(
        "INSERT INTO component_changes (component, status, at, at_us) VALUES (?1, ?2, ?3, ?4)",
        &[
            component.into(),
            status.as_str().into(),
            at.into(),
            Val::Int(at_us),
        ],
    )?;
    Ok(())
}
