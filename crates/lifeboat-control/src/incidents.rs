//! Incidents in the control store, in Statuspage's vocabulary (docs/status.md): components
//! (one per source), incidents, their updates and the components each one affects.

use std::collections::BTreeMap;

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::db::{Db, Val};
use crate::ids::new_id;
use crate::outbox::{enqueue, tenant_contacts, Notice, NoticeEvent, Recipient};
use crate::store::{now, ControlStore};
use crate::words::vocabulary;

/// The largest postmortem body (bytes).
pub const MAX_POSTMORTEM_BYTES: usize = 256 * 1024;

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

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// The post-incident report, published with `lifeboat incident postmortem`
    /// (Markdown).
    pub postmortem_body: Option<String>,
    pub postmortem_published_at: Option<String>,
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
            let event = match (&existing, resolving) {
                (None, _) => NoticeEvent::IncidentCreated,
                (Some(_), true) => NoticeEvent::IncidentResolved,
                (Some(_), false) => NoticeEvent::IncidentUpdated,
            };
            incident_notices(db, &incident_id, &update_id, event)?;
            Ok(())
        })?;
        Ok(incident_id)
    }

    /// Publish the post-incident report of a resolved incident (Markdown, at most
    /// `MAX_POSTMORTEM_BYTES`): the incident moves to `postmortem`, audited
    /// (`incident-postmortem` of `incident:ID` by `actor`, with the body's SHA-256). A
    /// report published again replaces the earlier one.
    pub fn publish_postmortem(&mut self, id: &str, body: &str, actor: &str) -> Result<()> {
        if body.trim().is_empty() {
            return Err(Error::usage("the postmortem is empty"));
        }
        if body.len() > MAX_POSTMORTEM_BYTES {
            return Err(Error::usage(format!(
                "the postmortem has {} bytes: at most {MAX_POSTMORTEM_BYTES}",
                body.len()
            )));
        }
        let incident = self.incident(id)?.ok_or_else(|| {
            Error::usage(format!("unknown incident {id}: `lifeboat incident list`"))
        })?;
        if !incident.status.is_resolved() {
            return Err(Error::usage(format!(
                "incident {id} is {}: resolve it (`lifeboat incident resolve`) before \
                 publishing its postmortem",
                incident.status
            )));
        }
        let (_, at) = now();
        let entry = Entry::new(
            actor,
            "incident-postmortem",
            &format!("incident:{id}"),
            serde_json::json!({
                "sha256": lifeboat_core::vault::sha256_hex(body.as_bytes()),
                "bytes": body.len(),
                "replaced": incident.postmortem_body.is_some(),
            }),
        );
        self.write(|db| {
            db.execute(
                "INSERT INTO incident_postmortems (incident, body, published_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (incident) DO UPDATE SET body = excluded.body,
                     published_at = excluded.published_at",
                &[id.into(), body.into(), at.as_str().into()],
            )?;
            db.execute(
                "UPDATE incidents SET status = 'postmortem', updated_at = ?2 WHERE id = ?1",
                &[id.into(), at.as_str().into()],
            )?;
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })
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
        Ok(load_incidents(&mut self.db, Some(id))?.pop())
    }

    /// Every incident, newest first, with its updates (newest first) and components.
    pub fn incidents(&mut self) -> Result<Vec<Incident>> {
        load_incidents(&mut self.db, None)
    }
}

/// Enqueue what an incident change tells, inside its transaction: the incident as it now
/// is (with every update) to the operator webhooks, the update to each contact of each
/// tenant of the incident's campaigns, with that tenant's private link, and to each
/// confirmed subscriber of the incident's components.
fn incident_notices(db: &mut Db, id: &str, update: &str, event: NoticeEvent) -> Result<()> {
    let incident = load_incidents(db, Some(id))?
        .pop()
        .ok_or_else(|| Error::source(format!("control store: incident {id} vanished")))?;
    let latest = incident.updates.iter().find(|u| u.id == update).cloned();
    let mut notices = vec![Notice {
        key: format!("incident:{id}:{update}:operators"),
        event,
        to: Recipient::Operators,
        body: serde_json::json!({"incident": incident, "update": update}),
    }];
    let summary = serde_json::json!({
        "incident": {"id": incident.id, "name": incident.name, "status": incident.status,
            "impact": incident.impact},
        "update": latest,
    });
    let campaigns: Vec<String> = db
        .query(
            "SELECT id FROM campaigns WHERE incident = ?1 ORDER BY created_at_us, id",
            &[id.into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    for campaign in &campaigns {
        for contact in tenant_contacts(db, campaign, None)? {
            notices.push(Notice {
                key: format!(
                    "incident:{id}:{update}:contact:{campaign}:{}:{}",
                    contact.tenant, contact.email
                ),
                event,
                to: contact.recipient(),
                body: summary.clone(),
            });
        }
    }
    let whole = serde_json::to_value(&incident)
        .map_err(|e| Error::source(format!("incident {id}: {e}")))?;
    notices.extend(crate::subscribers::subscriber_notices(
        db, &whole, id, update, event, &summary,
    )?);
    enqueue(db, &notices)?;
    Ok(())
}

/// The incidents (all, or the one with id `only`), as `incidents` describes them.
pub(crate) fn load_incidents(db: &mut Db, only: Option<&str>) -> Result<Vec<Incident>> {
    let (filter, by_id, params): (&str, &str, Vec<Val>) = match only {
        Some(id) => ("WHERE incident = ?1", "WHERE id = ?1", vec![id.into()]),
        None => ("", "", Vec::new()),
    };
    let mut translations: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in db.query(
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
    for r in db.query(
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
    for r in db.query(
        &format!("SELECT incident, component FROM incident_components {filter}"),
        &params,
    )? {
        components.entry(r.text(0)?).or_default().push(r.text(1)?);
    }
    let mut postmortems: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in db.query(
        &format!("SELECT incident, body, published_at FROM incident_postmortems {filter}"),
        &params,
    )? {
        postmortems.insert(r.text(0)?, (r.text(1)?, r.text(2)?));
    }
    let mut out = Vec::new();
    for r in db.query(
        &format!(
            "SELECT id, name, status, impact, created_at, updated_at, started_at,
                     monitoring_at, resolved_at
                 FROM incidents {by_id} ORDER BY created_at DESC, id"
        ),
        &params,
    )? {
        let id = r.text(0)?;
        let postmortem = postmortems.remove(&id);
        out.push(Incident {
            postmortem_published_at: postmortem.as_ref().map(|p| p.1.clone()),
            postmortem_body: postmortem.map(|p| p.0),
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
