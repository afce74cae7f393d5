//! Integration tests of the `lifeboat` binary against real PostgreSQL servers, real SQLite
//! files and real S3 (moto). Run them with scripts/test.

mod bad_input;
mod campaign;
mod capture;
mod check;
mod common;
mod contacts;
mod continuity;
mod crash;
mod drill;
mod embed;
mod export;
mod faults;
mod first_snapshot;
mod fixtures;
mod guard;
mod keymaps;
mod languages;
mod leader;
mod live_drill;
mod notify;
mod observe;
mod operations;
mod phases;
mod prune;
mod restore;
mod restore_tail;
mod sla;
mod source;
mod subscribers;
mod tls;
mod vault_checks;
