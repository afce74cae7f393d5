//! Restore targets: a time (consistent across sources by commit time), "just before
//! transaction X on source S", or a restore point. Resolving a target gives one `Position`
//! per source.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Dialect, Position};
use crate::state::SourceHistory;
use crate::time::format_us;
use crate::vault::Vault;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every source as of this time (microseconds since the epoch).
    At(i64),
    /// Just before this transaction of this source committed. On SQLite the id is a
    /// changelog sequence number (a commit group's id is its first one).
    BeforeTx { source: String, txid: u64 },
    /// A restore point: a position per source (sources not named: the same instant).
    Positions(BTreeMap<String, Position>),
}

impl Target {
    /// Parse `--at TIME` or `--before-tx SOURCE:TXID`.
    pub fn parse(at: Option<&str>, before_tx: Option<&str>) -> Result<Target> {
        match (at, before_tx) {
            (Some(at), None) => Ok(Target::At(crate::time::parse(at)?)),
            (None, Some(spec)) => {
                let bad = || {
                    Error::usage(format!(
                        "--before-tx {spec:?}: expected SOURCE:TXID, for example tracker:48213"
                    ))
                };
                let (source, txid) = spec.rsplit_once(':').ok_or_else(bad)?;
                let txid = txid.trim().parse().map_err(|_| bad())?;
                if source.is_empty() {
                    return Err(bad());
                }
                Ok(Target::BeforeTx {
                    source: source.to_string(),
                    txid,
                })
            }
            _ => Err(Error::usage(
                "give exactly one of --at TIME or --before-tx SOURCE:TXID",
            )),
        }
    }
}

/// How far past this machine's clock `--at` may go (clocks of machines differ a little).
const FUTURE_SLACK_US: i64 = 5_000_000;

/// A target resolved against the vault: the position to restore each source to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub positions: BTreeMap<String, Position>,
    /// The instant every source is restored to.
    pub time_us: i64,
    /// For people: what the target is.
    pub description: String,
}

/// Resolve `target` for the sources in `histories`; `postgres` names the PostgreSQL ones
/// (their transactions are found by xid, SQLite's by changelog sequence).
pub async fn resolve(
    vault: &Vault,
    histories: &[SourceHistory],
    postgres: &BTreeSet<String>,
    target: &Target,
) -> Result<Resolved> {
    let (time_us, fixed, description) = match target {
        Target::At(time_us) => {
            // The window ends now: a later time would silently mean "the latest captured".
            let now = crate::time::now_us();
            if *time_us > now + FUTURE_SLACK_US {
                return Err(Error::usage(format!(
                    "{} is in the future: the restorable window ends now ({})",
                    format_us(*time_us),
                    format_us(now)
                )));
            }
            (*time_us, None, format!("as of {}", format_us(*time_us)))
        }
        Target::Positions(points) => {
            // The instant of the latest restore-point position, for sources not named.
            let mut time_us = i64::MIN;
            for history in histories {
                if let Some(&position) = points.get(&history.source) {
                    history.check_position(position.get())?;
                    time_us = time_us.max(history.commit_time_at(vault, position.get()).await?);
                }
            }
            (time_us, None, "to the restore point".to_string())
        }
        Target::BeforeTx { source, txid } => {
            let history = histories.iter().find(|h| &h.source == source).ok_or_else(|| {
                Error::usage(format!(
                    "--before-tx names source {source:?}, which is not among the sources being restored"
                ))
            })?;
            let dialect = if postgres.contains(source) {
                Dialect::Postgres
            } else {
                Dialect::Sqlite
            };
            let (position, commit_time_us) =
                find_transaction(vault, history, dialect, *txid).await?;
            let before = position.saturating_sub(1);
            history.check_position(before)?;
            (
                commit_time_us - 1,
                Some((source.clone(), Position::new(before))),
                format!(
                    "just before transaction {source}:{txid} (committed {})",
                    format_us(commit_time_us)
                ),
            )
        }
    };
    let mut positions = BTreeMap::new();
    for history in histories {
        let point = match target {
            Target::Positions(points) => points.get(&history.source).copied(),
            _ => None,
        };
        let position = match (&fixed, point) {
            (_, Some(position)) => position,
            (Some((source, position)), None) if *source == history.source => *position,
            _ => Position::new(history.position_at_time(vault, time_us).await?),
        };
        history.check_position(position.get())?;
        positions.insert(history.source.clone(), position);
    }
    Ok(Resolved {
        positions,
        time_us,
        description,
    })
}

/// Where transaction `txid` starts in `history`, and when it committed. PostgreSQL: the
/// transaction's own position (the newest one with that xid, as xids wrap). SQLite: the
/// change with that sequence number.
async fn find_transaction(
    vault: &Vault,
    history: &SourceHistory,
    dialect: Dialect,
    txid: u64,
) -> Result<(u64, i64)> {
    let mut found = None;
    // pgoutput gives 32-bit xids; `txid_current()` adds the epoch above them.
    let xid = match dialect {
        Dialect::Postgres => txid & 0xffff_ffff,
        Dialect::Sqlite => txid,
    };
    for segment in &history.segments {
        if dialect == Dialect::Postgres {
            // Only segments whose names say their xids span it (a span wider than half the
            // xid space has wrapped around: look inside).
            let (low, high) = segment.xids;
            if (xid < low || xid > high) && high.saturating_sub(low) < 1 << 31 {
                continue;
            }
            // The transaction list is in the segment's header.
            let summary = history.summary(vault, &segment.name).await?;
            if let Some(tx) = summary.0.transactions.iter().rev().find(|tx| tx.xid == xid) {
                found = Some((tx.position, tx.commit_time_us));
            }
        } else if segment.first <= txid && txid <= segment.last {
            let segment = vault.read_segment(&segment.name).await?;
            for tx in &segment.transactions {
                if let Some(change) = tx.changes.iter().find(|c| c.position == txid) {
                    found = Some((txid, change.time_us.unwrap_or(tx.commit_time_us)));
                }
            }
        }
    }
    found.ok_or_else(|| {
        Error::new(
            ErrorKind::Usage,
            format!(
                "transaction {txid} is not in the history of source {} (`lifeboat history \
                 --tenant K` lists a tenant's transactions)",
                history.source
            ),
        )
    })
}

/// A position for people: an LSN for PostgreSQL, a number for SQLite.
pub fn describe_position(dialect: Dialect, position: Position) -> String {
    position.describe(dialect)
}
