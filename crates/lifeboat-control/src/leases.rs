//! Capture leases: one row per source naming the capture that may write its history
//! (docs/vault-format.md, "One writer per source"). A lease is granted only when no other
//! holder's lease is live; every grant raises the source's epoch, which only grows. Expiry
//! is judged by the store's clock (PostgreSQL's, or this machine's for SQLite), so
//! machines whose clocks differ still agree on who leads.

use lifeboat_core::Result;

use crate::db::{Db, Row, Val};
use crate::store::ControlStore;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS capture_leases (source TEXT PRIMARY KEY, holder TEXT NOT NULL,
    epoch BIGINT NOT NULL, expires_at_us BIGINT NOT NULL, granted_at_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS capture_standbys (source TEXT NOT NULL, holder TEXT NOT NULL,
    since_us BIGINT NOT NULL, heartbeat_us BIGINT NOT NULL, stale_after_us BIGINT NOT NULL,
    PRIMARY KEY (source, holder));
CREATE TABLE IF NOT EXISTS capture_errors (source TEXT PRIMARY KEY, holder TEXT NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, at_us BIGINT NOT NULL,
    stopped_capture BIGINT NOT NULL, recovered_at_us BIGINT);
";

/// Who holds a source's capture lease, as the store saw it at `now_us`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaptureLease {
    pub source: String,
    /// `host:pid` of the capture that holds (or last held) it.
    pub holder: String,
    /// Raised by one at every grant.
    pub epoch: i64,
    /// When it expires unless renewed (store clock, µs since the epoch).
    pub expires_at_us: i64,
    pub granted_at_us: i64,
    /// The store's clock when this was read.
    pub now_us: i64,
}

impl CaptureLease {
    /// Whether a holder still has it: not expired by the store's clock.
    pub fn is_live(&self) -> bool {
        self.expires_at_us > self.now_us
    }
}

/// What asking for a lease got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// Granted to the caller, with a new epoch.
    Granted(CaptureLease),
    /// Another holder's lease is live.
    Held(CaptureLease),
}

const COLUMNS: &str = "source, holder, epoch, expires_at_us, granted_at_us";

fn lease_row(row: &Row, now_us: i64) -> Result<CaptureLease> {
    Ok(CaptureLease {
        source: row.text(0)?,
        holder: row.text(1)?,
        epoch: row.int(2)?,
        expires_at_us: row.int(3)?,
        granted_at_us: row.int(4)?,
        now_us,
    })
}

/// The store's clock, in microseconds since the epoch.
fn clock_us(db: &mut Db) -> Result<i64> {
    if !db.is_postgres() {
        return Ok(lifeboat_core::time::now_us());
    }
    db.query_one(
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        &[],
    )?
    .map(|r| r.int(0))
    .transpose()
    .map(|us| us.unwrap_or(0))
}

impl ControlStore {
    /// Ask for `source`'s capture lease for `holder`, for `lease_us`: granted (with the
    /// next epoch) when nobody holds it or the holder's lease expired, else who holds it.
    /// A live lease is never granted again, not even to its own holder.
    pub fn acquire_capture_lease(
        &mut self,
        source: &str,
        holder: &str,
        lease_us: i64,
    ) -> Result<LeaseGrant> {
        self.grant(source, holder, lease_us, None)
    }

    /// Like `acquire_capture_lease`, also granted while the lease is live when its row
    /// still names `from` (holder, epoch): for a holder known to have died (a process of
    /// this machine that no longer runs), which can write nothing more.
    pub fn take_over_capture_lease(
        &mut self,
        source: &str,
        holder: &str,
        lease_us: i64,
        from: (&str, i64),
    ) -> Result<LeaseGrant> {
        self.grant(source, holder, lease_us, Some(from))
    }

    fn grant(
        &mut self,
        source: &str,
        holder: &str,
        lease_us: i64,
        from: Option<(&str, i64)>,
    ) -> Result<LeaseGrant> {
        self.db.transaction(|db| {
            db.execute(
                "INSERT INTO capture_leases (source, holder, epoch, expires_at_us, granted_at_us)
                 VALUES (?1, '', 0, 0, 0) ON CONFLICT DO NOTHING",
                &[source.into()],
            )?;
            let lock = db.lock();
            let row = db
                .query_one(
                    &format!("SELECT {COLUMNS} FROM capture_leases WHERE source = ?1{lock}"),
                    &[source.into()],
                )?
                .ok_or_else(|| {
                    lifeboat_core::Error::source(format!(
                        "control store: the capture lease of {source} vanished"
                    ))
                })?;
            let now_us = clock_us(db)?;
            let current = lease_row(&row, now_us)?;
            let taken_over = from.is_some_and(|(h, e)| current.holder == h && current.epoch == e);
            if current.is_live() && !taken_over {
                return Ok(LeaseGrant::Held(current));
            }
            let granted = CaptureLease {
                source: source.to_string(),
                holder: holder.to_string(),
                epoch: current.epoch + 1,
                expires_at_us: now_us + lease_us,
                granted_at_us: now_us,
                now_us,
            };
            // The new leader stands by no longer.
            db.execute(
                "DELETE FROM capture_standbys WHERE source = ?1 AND holder = ?2",
                &[source.into(), holder.into()],
            )?;
            db.execute(
                "UPDATE capture_leases SET holder = ?2, epoch = ?3, expires_at_us = ?4,
                     granted_at_us = ?5
                 WHERE source = ?1",
                &[
                    source.into(),
                    holder.into(),
                    Val::Int(granted.epoch),
                    Val::Int(granted.expires_at_us),
                    Val::Int(now_us),
                ],
            )?;
            Ok(LeaseGrant::Granted(granted))
        })
    }

    /// Extend `holder`'s lease of `epoch` to `lease_us` from now. `None` when it is no
    /// longer theirs (expired, or granted to another since): the holder must stop writing.
    pub fn renew_capture_lease(
        &mut self,
        source: &str,
        holder: &str,
        epoch: i64,
        lease_us: i64,
    ) -> Result<Option<i64>> {
        let now_us = clock_us(&mut self.db)?;
        let expires = now_us + lease_us;
        let n = self.db.execute(
            "UPDATE capture_leases SET expires_at_us = ?4
             WHERE source = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at_us > ?5",
            &[
                source.into(),
                holder.into(),
                Val::Int(epoch),
                Val::Int(expires),
                Val::Int(now_us),
            ],
        )?;
        Ok((n == 1).then_some(expires))
    }

    /// Whether `holder` still holds `source`'s lease of `epoch`, live: the check a writer
    /// makes right before each vault write.
    pub fn holds_capture_lease(&mut self, source: &str, holder: &str, epoch: i64) -> Result<bool> {
        Ok(self
            .capture_lease(source)?
            .is_some_and(|l| l.holder == holder && l.epoch == epoch && l.is_live()))
    }

    /// End `holder`'s lease of `epoch` now (a clean stop), so that a standby takes over at
    /// once. The epoch stays. False when it was no longer theirs.
    pub fn release_capture_lease(
        &mut self,
        source: &str,
        holder: &str,
        epoch: i64,
    ) -> Result<bool> {
        let now_us = clock_us(&mut self.db)?;
        let n = self.db.execute(
            "UPDATE capture_leases SET expires_at_us = ?4
             WHERE source = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at_us > ?4",
            &[
                source.into(),
                holder.into(),
                Val::Int(epoch),
                Val::Int(now_us),
            ],
        )?;
        Ok(n == 1)
    }

    /// `source`'s capture lease, live or not; `None` when it was never granted.
    pub fn capture_lease(&mut self, source: &str) -> Result<Option<CaptureLease>> {
        let now_us = clock_us(&mut self.db)?;
        self.db
            .query_one(
                &format!("SELECT {COLUMNS} FROM capture_leases WHERE source = ?1 AND epoch > 0"),
                &[source.into()],
            )?
            .map(|r| lease_row(&r, now_us))
            .transpose()
    }

    /// Every source's capture lease, by source name.
    pub fn capture_leases(&mut self) -> Result<Vec<CaptureLease>> {
        let now_us = clock_us(&mut self.db)?;
        self.db
            .query(
                &format!("SELECT {COLUMNS} FROM capture_leases WHERE epoch > 0 ORDER BY source"),
                &[],
            )?
            .iter()
            .map(|r| lease_row(r, now_us))
            .collect()
    }
}

/// A capture standing by for a source another capture leads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStandby {
    pub source: String,
    /// `host:pid` of the standing-by capture.
    pub holder: String,
    /// When it began standing by, and its latest heartbeat (store clock, µs).
    pub since_us: i64,
    pub heartbeat_us: i64,
}

/// The last error a capture recorded for a source: a transient fault it retried (one row
/// per episode, updated when the episode ends) or the error that stopped it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaptureError {
    pub source: String,
    /// `host:pid` of the capture that met it.
    pub holder: String,
    /// A retried fault's kind (`vault`, `source`, `replication`, `control`), or the kind
    /// of the error that stopped capture (`config`, `corrupt`, `source`, `vault`).
    pub kind: String,
    /// Its message; URLs in it are shown without their password.
    pub message: String,
    /// When it happened: the episode's first failure, or the stop (µs since the epoch).
    pub at_us: i64,
    /// True: it stopped capture; false: a transient fault capture retried.
    pub stopped_capture: bool,
    /// When a retried fault ended (the next success); `None` while it lasts, and for an
    /// error that stopped capture.
    pub recovered_at_us: Option<i64>,
}

impl ControlStore {
    /// Record (or refresh) `holder` as standing by for `source` now; it is shown until
    /// its heartbeat is `stale_after_us` old. Rows of standbys gone stale are removed.
    pub fn stand_by(&mut self, source: &str, holder: &str, stale_after_us: i64) -> Result<()> {
        self.db.transaction(|db| {
            let now_us = clock_us(db)?;
            db.execute(
                "DELETE FROM capture_standbys WHERE source = ?1 AND heartbeat_us + stale_after_us < ?2",
                &[source.into(), Val::Int(now_us)],
            )?;
            db.execute(
                "INSERT INTO capture_standbys (source, holder, since_us, heartbeat_us,
                     stale_after_us)
                 VALUES (?1, ?2, ?3, ?3, ?4)
                 ON CONFLICT (source, holder) DO UPDATE SET heartbeat_us = excluded.heartbeat_us,
                     stale_after_us = excluded.stale_after_us",
                &[
                    source.into(),
                    holder.into(),
                    Val::Int(now_us),
                    Val::Int(stale_after_us),
                ],
            )?;
            Ok(())
        })
    }

    /// `holder` stands by for `source` no longer (a clean exit).
    pub fn stop_standing_by(&mut self, source: &str, holder: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM capture_standbys WHERE source = ?1 AND holder = ?2",
            &[source.into(), holder.into()],
        )?;
        Ok(())
    }

    /// The captures standing by for `source` whose heartbeat is not stale, longest
    /// waiting first.
    pub fn capture_standbys(&mut self, source: &str) -> Result<Vec<CaptureStandby>> {
        let now_us = clock_us(&mut self.db)?;
        self.db
            .query(
                "SELECT source, holder, since_us, heartbeat_us FROM capture_standbys
                 WHERE source = ?1 AND heartbeat_us + stale_after_us >= ?2
                 ORDER BY since_us, holder",
                &[source.into(), Val::Int(now_us)],
            )?
            .iter()
            .map(|r| {
                Ok(CaptureStandby {
                    source: r.text(0)?,
                    holder: r.text(1)?,
                    since_us: r.int(2)?,
                    heartbeat_us: r.int(3)?,
                })
            })
            .collect()
    }

    /// Record `error` as its source's last error, replacing the one before.
    pub fn record_capture_error(&mut self, error: &CaptureError) -> Result<()> {
        let message = lifeboat_core::config::redact_urls_in(&error.message);
        self.db.execute(
            "INSERT INTO capture_errors (source, holder, kind, message, at_us, stopped_capture,
                 recovered_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (source) DO UPDATE SET holder = excluded.holder,
                 kind = excluded.kind, message = excluded.message, at_us = excluded.at_us,
                 stopped_capture = excluded.stopped_capture,
                 recovered_at_us = excluded.recovered_at_us",
            &[
                error.source.as_str().into(),
                error.holder.as_str().into(),
                error.kind.as_str().into(),
                message.into(),
                Val::Int(error.at_us),
                Val::Int(i64::from(error.stopped_capture)),
                error.recovered_at_us.map_or(Val::Null, Val::Int),
            ],
        )?;
        Ok(())
    }

    /// `source`'s last recorded capture error, if any.
    pub fn capture_error(&mut self, source: &str) -> Result<Option<CaptureError>> {
        self.db
            .query_one(
                "SELECT source, holder, kind, message, at_us, stopped_capture, recovered_at_us
                 FROM capture_errors WHERE source = ?1",
                &[source.into()],
            )?
            .map(|r| {
                Ok(CaptureError {
                    source: r.text(0)?,
                    holder: r.text(1)?,
                    kind: r.text(2)?,
                    message: r.text(3)?,
                    at_us: r.int(4)?,
                    stopped_capture: r.int(5)? != 0,
                    recovered_at_us: r.opt_int(6)?,
                })
            })
            .transpose()
    }
}
