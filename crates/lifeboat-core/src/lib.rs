//! Lifeboat's core: configuration, the tenant map, the captured model, the vault and
//! reading tenant state back out of it, checksums, and PostgreSQL connection settings (TLS
//! and passwords). No database driver lives here.

pub mod checksum;
pub mod compaction;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod metrics;
pub mod model;
pub mod people;
pub mod pg;
pub mod prune;
pub mod purge;
pub mod sla;
pub mod state;
pub mod target;
pub mod tenancy;
pub mod time;
pub mod vault;

pub use error::{Error, ErrorKind, Result};
