//! Guarded operations in the control store: a plan's signatures, its apply (state and
//! restore point), the tenants of each committed wave with the sources' positions just
//! before it, and halt requests.

use std::collections::BTreeMap;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, write_entries, Entry};
use crate::db::Val;
use crate::store::{now_text, ControlStore};
use crate::words::vocabulary;

vocabulary! {
    /// Where an apply stands.
    pub enum ApplyStatus("apply state") {
        /// Its waves are being applied.
        Running = "running",
        /// Stopped before a wave by a halt request; `apply` continues it.
        Halted = "halted",
        /// A wave changed other rows than the plan measured: rolled back and stopped.
        Diverged = "diverged",
        /// Every wave applied.
        Done = "done",
        /// Reverted by `undo`.
        Undone = "undone",
    }
}

/// An apply's state and its restore point (source -> vault position).
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyState {
    pub state: ApplyStatus,
    pub restore_point: BTreeMap<String, u64>,
}

/// A wave an apply was about to commit: recorded before its sources commit, cleared in the
/// transaction that records the wave, so that a crash between the two is found.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWave {
    pub wave: u32,
    pub tenants: Vec<String>,
    pub point: BTreeMap<String, u64>,
}

/// A signature of a plan as the store keeps it: `role` is `author` or `approver`, `key`
/// the fingerprint of the key that made it. Whoever reads it verifies it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSignature {
    pub role: String,
    pub name: String,
    pub key: String,
    pub signature: String,
}

/// A tenant applied by a plan: its wave and the sources' positions just before that wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub wave: u32,
    pub point: BTreeMap<String, u64>,
}

pub(crate) fn point_text(point: &BTreeMap<String, u64>) -> Result<String> {
    serde_json::to_string(point).map_err(|e| Error::source(format!("restore point: {e}")))
}

pub(crate) fn parse_point(plan: &str, text: &str) -> Result<BTreeMap<String, u64>> {
    serde_json::from_str(text)
        .map_err(|e| Error::source(format!("control store: restore point of plan {plan}: {e}")))
}

impl ControlStore {
    /// Record a verified signature of `plan` (its author's or an approver's): `role`,
    /// the signer's `name`, the fingerprint of the `key` and the armored `signature`,
    /// with its audit `entry` in the same transaction. False (and nothing written) when
    /// this person had signed the plan in this role already.
    pub fn add_signature(
        &mut self,
        plan: &str,
        signed: &StoredSignature,
        entry: Entry,
    ) -> Result<bool> {
        self.db.transaction(|db| {
            let n = db.execute(
                "INSERT INTO plan_signatures (plan, role, name, key, signature, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                &[
                    plan.into(),
                    (&signed.role).into(),
                    (&signed.name).into(),
                    (&signed.key).into(),
                    (&signed.signature).into(),
                    now_text().into(),
                ],
            )?;
            if n == 1 {
                write_audited(db, &[entry])?;
            }
            Ok(n == 1)
        })
    }

    /// Every signature recorded for `plan`, oldest first.
    pub fn signatures(&mut self, plan: &str) -> Result<Vec<StoredSignature>> {
        self.db
            .query(
                "SELECT role, name, key, signature FROM plan_signatures WHERE plan = ?1
                 ORDER BY at, role, name",
                &[plan.into()],
            )?
            .iter()
            .map(|r| {
                Ok(StoredSignature {
                    role: r.text(0)?,
                    name: r.text(1)?,
                    key: r.text(2)?,
                    signature: r.text(3)?,
                })
            })
            .collect()
    }

    pub fn apply_state(&mut self, plan: &str) -> Result<Option<ApplyState>> {
        let row = self.db.query_one(
            "SELECT state, restore_point FROM applies WHERE plan = ?1",
            &[plan.into()],
        )?;
        row.map(|r| {
            Ok(ApplyState {
                state: r.word(0)?,
                restore_point: parse_point(plan, &r.text(1)?)?,
            })
        })
        .transpose()
    }

    /// Record an apply's state and its restore point, with its audit `entries`. Running
    /// (an apply starting or continuing) also clears the plan's halt request.
    pub fn set_apply(
        &mut self,
        plan: &str,
        state: ApplyStatus,
        restore_point: &BTreeMap<String, u64>,
        entries: &[Entry],
    ) -> Result<()> {
        let point = point_text(restore_point)?;
        self.db.transaction(|db| {
            db.execute(
                "INSERT INTO applies (plan, state, restore_point, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plan) DO UPDATE SET state = excluded.state,
                   restore_point = excluded.restore_point, at = excluded.at",
                &[
                    plan.into(),
                    state.as_str().into(),
                    point.into(),
                    now_text().into(),
                ],
            )?;
            if state == ApplyStatus::Running {
                db.execute("DELETE FROM halts WHERE plan = ?1", &[plan.into()])?;
            }
            write_audited(db, entries)?;
            Ok(())
        })
    }

    /// Tenants already applied for `plan`, with their wave and the sources' positions just
    /// before it (what undo restores them to).
    pub fn applied(&mut self, plan: &str) -> Result<BTreeMap<String, Applied>> {
        let mut out = BTreeMap::new();
        for r in self.db.query(
            "SELECT tenant, wave, point FROM applied WHERE plan = ?1",
            &[plan.into()],
        )? {
            out.insert(
                r.text(0)?,
                Applied {
                    wave: r.int(1)? as u32,
                    point: parse_point(plan, &r.text(2)?)?,
                },
            );
        }
        Ok(out)
    }

    /// Record a committed wave: its tenants and the positions just before it, and with
    /// `deleted` (a tenant-delete plan), the tenants as softly deleted, with its audit
    /// `entries`, in one transaction.
    pub fn mark_applied(
        &mut self,
        plan: &str,
        tenants: &[String],
        wave: u32,
        point: &BTreeMap<String, u64>,
        deleted: bool,
        entries: &[Entry],
    ) -> Result<()> {
        let now = lifeboat_core::time::now_us();
        let at = lifeboat_core::time::format_us(now);
        let point = point_text(point)?;
        self.db.transaction(|db| {
            db.execute("DELETE FROM pending_waves WHERE plan = ?1", &[plan.into()])?;
            for tenant in tenants {
                db.execute(
                    "INSERT INTO applied (plan, tenant, wave, point) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    &[
                        plan.into(),
                        tenant.into(),
                        wave.into(),
                        point.as_str().into(),
                    ],
                )?;
                if deleted {
                    db.execute(
                        "INSERT INTO tenants (tenant, state, plan, deleted_at, deleted_at_us,
                             point)
                         VALUES (?1, 'deleted', ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant) DO UPDATE SET state = 'deleted',
                           plan = excluded.plan, deleted_at = excluded.deleted_at,
                           deleted_at_us = excluded.deleted_at_us, point = excluded.point,
                           purged_at = NULL",
                        &[
                            tenant.into(),
                            plan.into(),
                            at.as_str().into(),
                            Val::Int(now),
                            point.as_str().into(),
                        ],
                    )?;
                }
            }
            write_audited(db, entries)?;
            Ok(())
        })
    }

    /// Take the plan's apply lock for `holder`. Returns the current holder and since when
    /// if another holds it.
    pub fn lock_apply(&mut self, plan: &str, holder: &str) -> Result<Option<(String, String)>> {
        let n = self.db.execute(
            "INSERT INTO apply_locks (plan, holder, at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            &[plan.into(), holder.into(), now_text().into()],
        )?;
        if n == 1 {
            return Ok(None);
        }
        let row = self.db.query_one(
            "SELECT holder, at FROM apply_locks WHERE plan = ?1",
            &[plan.into()],
        )?;
        match row {
            Some(r) => Ok(Some((r.text(0)?, r.text(1)?))),
            // Released between the two statements: try once more.
            None => self.lock_apply(plan, holder),
        }
    }

    /// Take the plan's apply lock over from `old` (a holder known to be gone), audited
    /// with `entry`; false (nothing written) when it is no longer `old`'s.
    pub fn take_over_apply(
        &mut self,
        plan: &str,
        old: &str,
        holder: &str,
        entry: &Entry,
    ) -> Result<bool> {
        self.db.transaction(|db| {
            let n = db.execute(
                "UPDATE apply_locks SET holder = ?3, at = ?4 WHERE plan = ?1 AND holder = ?2",
                &[plan.into(), old.into(), holder.into(), now_text().into()],
            )?;
            if n == 1 {
                write_audited(db, std::slice::from_ref(entry))?;
            }
            Ok(n == 1)
        })
    }

    /// Release the plan's apply lock if `holder` holds it.
    pub fn unlock_apply(&mut self, plan: &str, holder: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM apply_locks WHERE plan = ?1 AND holder = ?2",
            &[plan.into(), holder.into()],
        )?;
        Ok(())
    }

    /// Record the wave about to commit (its tenants, the positions just before it).
    pub fn set_pending_wave(&mut self, plan: &str, pending: &PendingWave) -> Result<()> {
        let tenants = serde_json::to_string(&pending.tenants)
            .map_err(|e| Error::source(format!("pending wave: {e}")))?;
        self.db.execute(
            "INSERT INTO pending_waves (plan, wave, tenants, point, at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (plan) DO UPDATE SET wave = excluded.wave,
               tenants = excluded.tenants, point = excluded.point, at = excluded.at",
            &[
                plan.into(),
                pending.wave.into(),
                tenants.into(),
                point_text(&pending.point)?.into(),
                now_text().into(),
            ],
        )?;
        Ok(())
    }

    /// The wave an apply of `plan` was about to commit when it stopped, if any.
    pub fn pending_wave(&mut self, plan: &str) -> Result<Option<PendingWave>> {
        let row = self.db.query_one(
            "SELECT wave, tenants, point FROM pending_waves WHERE plan = ?1",
            &[plan.into()],
        )?;
        row.map(|r| {
            Ok(PendingWave {
                wave: r.int(0)? as u32,
                tenants: serde_json::from_str(&r.text(1)?).map_err(|e| {
                    Error::source(format!("control store: pending wave of plan {plan}: {e}"))
                })?,
                point: parse_point(plan, &r.text(2)?)?,
            })
        })
        .transpose()
    }

    /// Forget the pending wave (it was rolled back, or is being run again), with the
    /// audit `entries` that say why (none: bookkeeping of a change audited otherwise).
    pub fn clear_pending_wave(&mut self, plan: &str, entries: &[Entry]) -> Result<()> {
        self.db.transaction(|db| {
            db.execute("DELETE FROM pending_waves WHERE plan = ?1", &[plan.into()])?;
            write_entries(db, entries)?;
            Ok(())
        })
    }

    /// Ask the plan's apply to stop before its next wave, audited (`halt` by `by`).
    pub fn halt(&mut self, plan: &str, by: &str) -> Result<()> {
        self.db.transaction(|db| {
            db.execute(
                "INSERT INTO halts (plan, by_whom, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plan) DO UPDATE SET by_whom = excluded.by_whom, at = excluded.at",
                &[plan.into(), by.into(), now_text().into()],
            )?;
            write_audited(db, &[Entry::new(by, "halt", plan, serde_json::json!({}))])?;
            Ok(())
        })
    }

    /// Who asked `plan` to halt, if anyone.
    pub fn halted_by(&mut self, plan: &str) -> Result<Option<String>> {
        self.db
            .query_one("SELECT by_whom FROM halts WHERE plan = ?1", &[plan.into()])?
            .map(|r| r.text(0))
            .transpose()
    }
}
