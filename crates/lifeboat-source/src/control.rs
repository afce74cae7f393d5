//! The control store: what Lifeboat itself must remember between commands (docs/guard.md):
//! the hash-chained audit log, plan approvals, applies (state, restore point, the tenants of
//! each wave with the sources' positions just before it), halt requests, and softly deleted
//! tenants; and (status.rs) incidents and campaigns. A SQLite file by default, or a
//! PostgreSQL database shared by several machines (`[control] url = "postgres://…"`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::db::{Db, Val};

use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Valid for SQLite and PostgreSQL: integers are BIGINT (64-bit in both).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, details TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (one BIGINT PRIMARY KEY CHECK (one = 1),
    seq BIGINT NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (one, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS approvals (plan TEXT NOT NULL, approver TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (plan, approver));
CREATE TABLE IF NOT EXISTS applies (plan TEXT PRIMARY KEY, state TEXT NOT NULL,
    restore_point TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (plan TEXT NOT NULL, tenant TEXT NOT NULL,
    wave BIGINT NOT NULL, point TEXT NOT NULL, PRIMARY KEY (plan, tenant));
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, state TEXT NOT NULL,
    plan TEXT NOT NULL, deleted_at TEXT NOT NULL, deleted_at_us BIGINT NOT NULL,
    point TEXT NOT NULL, purged_at TEXT);
CREATE TABLE IF NOT EXISTS halts (plan TEXT PRIMARY KEY, by_whom TEXT NOT NULL,
    at TEXT NOT NULL);
";

/// One audit log entry (`D`: its details, JSON; as stored, text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry<D = serde_json::Value> {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: D,
    pub prev: String,
    pub hash: String,
}

/// An apply's state: `running`, `halted`, `diverged` or `done`, and its restore point
/// (source -> vault position).
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyState {
    pub state: String,
    pub restore_point: BTreeMap<String, u64>,
}

/// A tenant applied by a plan: its wave and the sources' positions just before that wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub wave: u32,
    pub point: BTreeMap<String, u64>,
}

/// A softly deleted tenant: the plan that deleted it, when, and the positions its rows can
/// be restored from (just before its deletion). `purged`: its vault data is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedTenant {
    pub tenant: String,
    pub plan: String,
    pub deleted_at: String,
    pub deleted_at_us: i64,
    pub point: BTreeMap<String, u64>,
    pub purged: bool,
    pub purged_at: Option<String>,
}

fn point_text(point: &BTreeMap<String, u64>) -> Result<String> {
    serde_json::to_string(point).map_err(|e| Error::source(format!("restore point: {e}")))
}

fn parse_point(plan: &str, text: &str) -> Result<BTreeMap<String, u64>> {
    serde_json::from_str(text)
        .map_err(|e| Error::source(format!("control store: restore point of plan {plan}: {e}")))
}

pub struct ControlStore {
    pub(crate) db: Db,
}

fn entry_hash(
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    details: &str,
    prev: &str,
) -> String {
    sha256_hex(format!("{seq}\n{at}\n{actor}\n{action}\n{subject}\n{details}\n{prev}").as_bytes())
}

fn now_text() -> String {
    lifeboat_core::time::format_us(lifeboat_core::time::now_us())
}

impl ControlStore {
    /// Open (and create) the control store at `url`: `sqlite:///abs/file`, a file path,
    /// or `postgres://…`.
    pub fn open(url: &str) -> Result<ControlStore> {
        // The schema is made once per store and process: workers open the store often, and
        // the DDL takes locks (PostgreSQL) or writes (SQLite) even when there is nothing
        // to create.
        static MADE: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
        let mut db = Db::open(url)?;
        let done = MADE.lock().map(|m| m.contains(url)).unwrap_or(false);
        if !done {
            db.batch(SCHEMA)?;
            db.batch(crate::status::SCHEMA)?;
            if let Ok(mut made) = MADE.lock() {
                made.insert(url.to_string());
            }
        }
        Ok(ControlStore { db })
    }

    /// Where it is, for messages (a PostgreSQL URL without its password).
    pub fn describe(&self) -> String {
        self.db.describe()
    }

    /// Append an entry to the audit log, chained to the previous one.
    pub fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<AuditEntry> {
        let details_text = details.to_string();
        let at = now_text();
        let (seq, prev, hash) = self.db.transaction(|db| {
            let lock = db.lock();
            let head = db.query_one(&format!("SELECT seq, hash FROM audit_head{lock}"), &[])?;
            let (last, prev) = match head {
                Some(row) => (row.int(0)?, row.text(1)?),
                None => (0, GENESIS.to_string()),
            };
            let seq = last as u64 + 1;
            let hash = entry_hash(seq, &at, actor, action, subject, &details_text, &prev);
            db.execute(
                "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    Val::Int(seq as i64),
                    at.as_str().into(),
                    actor.into(),
                    action.into(),
                    subject.into(),
                    details_text.as_str().into(),
                    prev.as_str().into(),
                    hash.as_str().into(),
                ],
            )?;
            db.execute(
                "INSERT INTO audit_head (one, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                &[Val::Int(seq as i64), hash.as_str().into()],
            )?;
            Ok((seq, prev, hash))
        })?;
        Ok(AuditEntry {
            seq,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            details,
            prev,
            hash,
        })
    }

    /// Every audit entry as stored (details as the text that was hashed), by sequence.
    fn stored(&mut self) -> Result<Vec<AuditEntry<String>>> {
        self.db
            .query(
                "SELECT seq, at, actor, action, subject, details, prev, hash FROM audit \
                 ORDER BY seq",
                &[],
            )?
            .into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: r.int(0)? as u64,
                    at: r.text(1)?,
                    actor: r.text(2)?,
                    action: r.text(3)?,
                    subject: r.text(4)?,
                    details: r.text(5)?,
                    prev: r.text(6)?,
                    hash: r.text(7)?,
                })
            })
            .collect()
    }

    /// Every audit entry, by sequence.
    pub fn entries(&mut self) -> Result<Vec<AuditEntry>> {
        Ok(self
            .stored()?
            .into_iter()
            .map(|e| AuditEntry {
                details: serde_json::from_str(&e.details)
                    .unwrap_or(serde_json::Value::String(e.details)),
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                subject: e.subject,
                prev: e.prev,
                hash: e.hash,
            })
            .collect())
    }

    /// Check the chain: every entry's hash, its link to the one before, the sequence, and
    /// the head. Returns the problems found (none: intact).
    pub fn verify(&mut self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let rows = self.stored()?;
        let mut prev_hash = GENESIS.to_string();
        let mut expected_seq = 1i64;
        for e in &rows {
            let seq = e.seq as i64;
            if seq != expected_seq {
                problems.push(format!(
                    "entry {seq}: expected entry {expected_seq} here (an entry was removed or \
                     moved)"
                ));
            }
            if e.prev != prev_hash {
                problems.push(format!(
                    "entry {seq}: does not follow the entry before it (removed, inserted or \
                     reordered entries)"
                ));
            }
            let want = entry_hash(
                e.seq, &e.at, &e.actor, &e.action, &e.subject, &e.details, &e.prev,
            );
            if e.hash != want {
                problems.push(format!(
                    "entry {seq}: its content does not match its hash (altered)"
                ));
            }
            prev_hash = e.hash.clone();
            expected_seq = seq + 1;
        }
        let head = self
            .db
            .query_one("SELECT seq, hash FROM audit_head", &[])?
            .map(|r| Ok::<_, Error>((r.int(0)?, r.text(1)?)))
            .transpose()?;
        // An empty log's head is entry 0 with the genesis hash.
        let last = Some(
            rows.last()
                .map_or((0, GENESIS.to_string()), |r| (r.seq as i64, r.hash.clone())),
        );
        if head != last {
            problems.push(match head {
                Some((seq, _)) => format!(
                    "the log's head is entry {seq}, but the last entry is {} (entries removed \
                     from the end, or the head altered)",
                    last.map_or("none".to_string(), |l| l.0.to_string())
                ),
                None => "the log has entries but no head".to_string(),
            });
        }
        Ok(problems)
    }

    /// Record an approval; false when this approver had approved already.
    pub fn approve(&mut self, plan: &str, approver: &str) -> Result<bool> {
        let n = self.db.execute(
            "INSERT INTO approvals (plan, approver, at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            &[plan.into(), approver.into(), now_text().into()],
        )?;
        Ok(n == 1)
    }

    pub fn approvals(&mut self, plan: &str) -> Result<Vec<String>> {
        self.db
            .query(
                "SELECT approver FROM approvals WHERE plan = ?1 ORDER BY at",
                &[plan.into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    pub fn apply_state(&mut self, plan: &str) -> Result<Option<ApplyState>> {
        let row = self.db.query_one(
            "SELECT state, restore_point FROM applies WHERE plan = ?1",
            &[plan.into()],
        )?;
        row.map(|r| {
            Ok(ApplyState {
                state: r.text(0)?,
                restore_point: parse_point(plan, &r.text(1)?)?,
            })
        })
        .transpose()
    }

    /// Record an apply's state (`running`, `halted`, …) and its restore point.
    pub fn set_apply(
        &mut self,
        plan: &str,
        state: &str,
        restore_point: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let point = point_text(restore_point)?;
        self.db.execute(
            "INSERT INTO applies (plan, state, restore_point, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plan) DO UPDATE SET state = excluded.state,
               restore_point = excluded.restore_point, at = excluded.at",
            &[plan.into(), state.into(), point.into(), now_text().into()],
        )?;
        Ok(())
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
    /// `deleted` (a tenant-delete plan), the tenants as softly deleted, in one transaction.
    pub fn mark_applied(
        &mut self,
        plan: &str,
        tenants: &[String],
        wave: u32,
        point: &BTreeMap<String, u64>,
        deleted: bool,
    ) -> Result<()> {
        let now = lifeboat_core::time::now_us();
        let at = lifeboat_core::time::format_us(now);
        let point = point_text(point)?;
        self.db.transaction(|db| {
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
            Ok(())
        })
    }

    /// A tenant's deletion record, if it was deleted (and not brought back since).
    pub fn deleted_tenant(&mut self, tenant: &str) -> Result<Option<DeletedTenant>> {
        let row = self.db.query_one(
            "SELECT state, plan, deleted_at, deleted_at_us, point, purged_at FROM tenants
             WHERE tenant = ?1",
            &[tenant.into()],
        )?;
        row.map(|r| {
            let plan = r.text(1)?;
            Ok(DeletedTenant {
                tenant: tenant.to_string(),
                purged: r.text(0)? == "purged",
                point: parse_point(&plan, &r.text(4)?)?,
                plan,
                deleted_at: r.text(2)?,
                deleted_at_us: r.int(3)?,
                purged_at: r.opt_text(5)?,
            })
        })
        .transpose()
    }

    /// Every deleted (or purged) tenant, by key.
    pub fn deleted_tenants(&mut self) -> Result<Vec<DeletedTenant>> {
        let keys: Vec<String> = self
            .db
            .query("SELECT tenant FROM tenants ORDER BY tenant", &[])?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.extend(self.deleted_tenant(&key)?);
        }
        Ok(out)
    }

    /// The tenant is back: forget its deletion.
    pub fn mark_undeleted(&mut self, tenant: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM tenants WHERE tenant = ?1 AND state = 'deleted'",
            &[tenant.into()],
        )?;
        Ok(())
    }

    pub fn mark_purged(&mut self, tenant: &str) -> Result<()> {
        self.db.execute(
            "UPDATE tenants SET state = 'purged', purged_at = ?2 WHERE tenant = ?1",
            &[tenant.into(), now_text().into()],
        )?;
        Ok(())
    }

    pub fn halt(&mut self, plan: &str, by: &str) -> Result<()> {
        self.db.execute(
            "INSERT INTO halts (plan, by_whom, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (plan) DO UPDATE SET by_whom = excluded.by_whom, at = excluded.at",
            &[plan.into(), by.into(), now_text().into()],
        )?;
        Ok(())
    }

    /// Who asked `plan` to halt, if anyone.
    pub fn halted_by(&mut self, plan: &str) -> Result<Option<String>> {
        self.db
            .query_one("SELECT by_whom FROM halts WHERE plan = ?1", &[plan.into()])?
            .map(|r| r.text(0))
            .transpose()
    }

    pub fn clear_halt(&mut self, plan: &str) -> Result<()> {
        self.db
            .execute("DELETE FROM halts WHERE plan = ?1", &[plan.into()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_chain_finds_altered_removed_and_reordered_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.db");
        let mut store = ControlStore::open(path.to_str().expect("utf-8")).expect("open");
        for i in 0..4 {
            store
                .append(
                    "alice",
                    "plan",
                    &format!("p{i}"),
                    serde_json::json!({"i": i}),
                )
                .expect("append");
        }
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
        let tamper = |sql: &str| {
            let copy = dir.path().join("copy.db");
            std::fs::copy(&path, &copy).expect("copy");
            let c = rusqlite::Connection::open(&copy).expect("open copy");
            c.execute_batch(sql).expect("tamper");
            let problems = ControlStore::open(copy.to_str().expect("utf-8"))
                .expect("open")
                .verify()
                .expect("verify");
            std::fs::remove_file(&copy).expect("rm");
            problems
        };
        let altered = tamper("UPDATE audit SET actor = 'mallory' WHERE seq = 2");
        assert!(
            altered
                .iter()
                .any(|p| p.contains("entry 2") && p.contains("altered")),
            "{altered:?}"
        );
        let removed = tamper("DELETE FROM audit WHERE seq = 2");
        assert!(removed.iter().any(|p| p.contains("entry 3")), "{removed:?}");
        let last = tamper("DELETE FROM audit WHERE seq = 4");
        assert!(last.iter().any(|p| p.contains("head")), "{last:?}");
        let reordered = tamper(
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3;
             UPDATE audit SET seq = 3 WHERE seq = 100;",
        );
        assert!(!reordered.is_empty());
    }
}
