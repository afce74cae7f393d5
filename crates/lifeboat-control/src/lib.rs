//! The control store: what Lifeboat itself must remember between commands (docs/guard.md,
//! docs/status.md). A SQLite file by default, or a PostgreSQL database shared by several
//! machines (`[control] url = "postgres://…"`), holding:
//!
//! - the hash-chained audit log (`audit`);
//! - plan signatures, applies with their restore point and waves, and halt requests
//!   (`applies`);
//! - softly deleted and purged tenants (`lifecycle`);
//! - components and the history of their statuses, incidents, their updates (with
//!   translations) and postmortems in Statuspage's vocabulary (`incidents`);
//! - downtime and SLA credits of an incident's tenants, from the records above (`sla`);
//! - scheduled maintenances, their updates and components (`maintenances`);
//! - recovery campaigns, the stage of each of their tenants, claimed by workers under a
//!   lease, and tenant attributes (`campaigns`);
//! - each source's capture lease: which capture may write its history, the captures
//!   standing by for it, and the last error capture met (`leases`).
//! - tenant contacts, read from the vault or imported, and each campaign's copy of its
//!   tenants' contacts (`contacts`);
//! - the notification outbox: every message a change sends, written in the change's
//!   transaction, with each delivery's state (`outbox`);
//! - the promised update cadence: when each incident's next public update is due, and
//!   the alarm to the operators while it is overdue (`cadence`);
//! - subscribers to incident messages, with double opt-in (`subscribers`), and support
//!   requests matched to tenants by their contacts (`support`).
//!
//! Every operation is a method of [`ControlStore`].

mod applies;
mod audit;
mod cadence;
mod campaigns;
mod contacts;
mod db;
mod exports;
mod ids;
mod incidents;
mod leases;
mod lifecycle;
mod maintenances;
pub mod outbox;
mod sla;
mod store;
mod subscribers;
mod support;
mod words;

pub use applies::{Applied, ApplyState, ApplyStatus, PendingWave, StoredSignature};
pub use audit::{canonical_json, AuditEntry, Entry, StoredEntry, GENESIS};
pub use cadence::{missed_periods, overdue, Overdue, Silence};
pub use campaigns::{Acceptance, Campaign, CampaignTenant, Phase, Stage};
pub use contacts::{Contact, ContactOrigin};
pub use exports::{Export, ARCHIVE_GRACE_US, EXPORT_FORMATS};
pub use ids::{new_id, new_token};
pub use incidents::{
    AffectedComponent, Component, ComponentChange, ComponentStatus, Impact, Incident,
    IncidentChange, IncidentStatus, IncidentUpdate, MAX_POSTMORTEM_BYTES,
};
pub use leases::{CaptureError, CaptureLease, CaptureStandby, LeaseGrant};
pub use lifecycle::DeletedTenant;
pub use maintenances::{Maintenance, MaintenanceStatus, MaintenanceUpdate, NewMaintenance};
pub use outbox::{
    ClaimPolicy, Delivery, DeliveryState, Notice, NoticeEvent, Recipient, RecipientKind,
};
pub use sla::{Downtime, DowntimeStart, SlaLine, SlaReport};
pub use store::ControlStore;
pub use subscribers::{valid_email, Subscribed, Subscriber, SubscriberKind, SubscriberState};
pub use support::{
    SupportInput, SupportMatch, SupportRequest, FREE_MAIL_DOMAINS, MAX_FIELD_BYTES,
    MAX_MESSAGE_BYTES,
};
