//! The control store: what Lifeboat itself must remember between commands (docs/guard.md,
//! docs/status.md). A SQLite file by default, or a PostgreSQL database shared by several
//! machines (`[control] url = "postgres://…"`), holding:
//!
//! - the hash-chained audit log (`audit`);
//! - plan signatures, applies with their restore point and waves, and halt requests
//!   (`applies`);
//! - softly deleted and purged tenants (`lifecycle`);
//! - components and the history of their statuses, incidents and their updates (with
//!   translations) in Statuspage's vocabulary (`incidents`);
//! - recovery campaigns, the stage of each of their tenants, claimed by workers under a
//!   lease, and tenant attributes (`campaigns`);
//! - each source's capture lease: which capture may write its history (`leases`).
//! - tenant contacts, read from the vault or imported, and each campaign's copy of its
//!   tenants' contacts (`contacts`).
//!
//! Every operation is a method of [`ControlStore`].

mod applies;
mod audit;
mod campaigns;
mod contacts;
mod db;
mod ids;
mod incidents;
mod leases;
mod lifecycle;
mod store;
mod words;

pub use applies::{Applied, ApplyState, ApplyStatus, PendingWave, StoredSignature};
pub use audit::{canonical_json, AuditEntry, Entry, StoredEntry, GENESIS};
pub use campaigns::{Acceptance, Campaign, CampaignTenant, Stage};
pub use contacts::{Contact, ContactOrigin};
pub use ids::{new_id, new_token};
pub use incidents::{
    AffectedComponent, Component, ComponentChange, ComponentStatus, Impact, Incident,
    IncidentChange, IncidentStatus, IncidentUpdate,
};
pub use leases::{CaptureLease, LeaseGrant};
pub use lifecycle::DeletedTenant;
pub use store::ControlStore;
