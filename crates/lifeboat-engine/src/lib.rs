//! Lifeboat's engines: everything a command does beyond parsing its arguments and printing
//! its results. Restore and verify, the guard (plans, waves, undo, soft delete), recovery
//! campaigns and their workers, the drill, and the views of the vault (`tenants`,
//! `history`).
//!
//! Engines never print: long work reports through [`progress::Progress`], results come back
//! as values (serializable, for `--json`), and errors as `lifeboat_core::Error`.

pub mod campaign;
pub mod capture;
pub mod catch_up;
pub mod check;
pub mod compare;
pub mod contacts;
pub mod context;
pub mod drill;
pub mod export;
pub mod guard;
pub mod history;
pub mod info;
pub mod lease;
pub mod lifecycle;
pub mod notify;
pub mod progress;
pub mod prune;
pub mod report;
pub mod restore;
pub mod snapshot;
pub mod source;
pub mod tenants;
pub mod verify;

pub use progress::{Event, Progress, Silent};
