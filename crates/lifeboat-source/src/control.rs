//! The control store: what Lifeboat itself must remember between commands (docs/guard.md):
//! the hash-chained audit log, plan approvals, applies (state, restore point, the tenants of
//! each wave with the sources' positions just before it), halt requests, and softly deleted
//! tenants. A SQLite file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, details TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (plan TEXT NOT NULL, approver TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (plan, approver));
CREATE TABLE IF NOT EXISTS applies (plan TEXT PRIMARY KEY, state TEXT NOT NULL,
    restore_point TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (plan TEXT NOT NULL, tenant TEXT NOT NULL,
    wave INTEGER NOT NULL, point TEXT NOT NULL, PRIMARY KEY (plan, tenant));
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, state TEXT NOT NULL,
    plan TEXT NOT NULL, deleted_at TEXT NOT NULL, deleted_at_us INTEGER NOT NULL,
    point TEXT NOT NULL, purged_at TEXT);
CREATE TABLE IF NOT EXISTS halts (plan TEXT PRIMARY KEY, by TEXT NOT NULL, at TEXT NOT NULL);
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
    pub(crate) conn: Connection,
    path: PathBuf,
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

impl ControlStore {
    pub fn open(path: &Path) -> Result<ControlStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::config(format!(
                    "control store {}: cannot create its directory: {e}",
                    path.display()
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| {
            Error::config(format!(
                "control store {}: cannot open: {e}",
                path.display()
            ))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| conn.execute_batch(crate::status::SCHEMA))
            .map_err(|e| Error::config(format!("control store {}: {e}", path.display())))?;
        Ok(ControlStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> Error {
        Error::source(format!("control store {}: {e}", self.path.display()))
    }

    /// Append an entry to the audit log, chained to the previous one.
    pub fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<AuditEntry> {
        let path = self.path.clone();
        let err = |e| Error::source(format!("control store {}: {e}", path.display()));
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let head: Option<(i64, String)> = tx
            .query_row("SELECT seq, hash FROM audit_head", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(err)?;
        let (last, prev) = head.unwrap_or((0, GENESIS.to_string()));
        let seq = last as u64 + 1;
        let at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
        let details_text = details.to_string();
        let hash = entry_hash(seq, &at, actor, action, subject, &details_text, &prev);
        tx.execute(
            "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                seq as i64,
                at,
                actor,
                action,
                subject,
                details_text,
                prev,
                hash
            ],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO audit_head (one, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![seq as i64, hash],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
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

    /// Every audit entry as stored (details as the text that was hashed), in stored order.
    fn stored(&self) -> Result<Vec<AuditEntry<String>>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at, actor, action, subject, details, prev, hash FROM audit \
                 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    details: r.get(5)?,
                    prev: r.get(6)?,
                    hash: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Every audit entry, in stored order.
    pub fn entries(&self) -> Result<Vec<AuditEntry>> {
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
    pub fn verify(&self) -> Result<Vec<String>> {
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
        let head: Option<(i64, String)> = self
            .conn
            .query_row("SELECT seq, hash FROM audit_head", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let last = rows.last().map(|r| (r.seq as i64, r.hash.clone()));
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
    pub fn approve(&self, plan: &str, approver: &str) -> Result<bool> {
        let at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
        let n = self
            .conn
            .execute(
                "INSERT INTO approvals (plan, approver, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![plan, approver, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub fn approvals(&self, plan: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT approver FROM approvals WHERE plan = ?1 ORDER BY at")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([plan], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    pub fn apply_state(&self, plan: &str) -> Result<Option<ApplyState>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT state, restore_point FROM applies WHERE plan = ?1",
                [plan],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(state, point)| {
            Ok(ApplyState {
                state,
                restore_point: parse_point(plan, &point)?,
            })
        })
        .transpose()
    }

    pub fn set_apply(&self, plan: &str, state: &ApplyState) -> Result<()> {
        let at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
        let point = point_text(&state.restore_point)?;
        self.conn
            .execute(
                "INSERT INTO applies (plan, state, restore_point, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plan) DO UPDATE SET state = excluded.state,
                   restore_point = excluded.restore_point, at = excluded.at",
                params![plan, state.state, point, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Tenants already applied for `plan`, with their wave and the sources' positions just
    /// before it (what undo restores them to).
    pub fn applied(&self, plan: &str) -> Result<BTreeMap<String, Applied>> {
        let mut stmt = self
            .conn
            .prepare("SELECT tenant, wave, point FROM applied WHERE plan = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([plan], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (tenant, wave, point) = row.map_err(|e| self.err(e))?;
            out.insert(
                tenant,
                Applied {
                    wave,
                    point: parse_point(plan, &point)?,
                },
            );
        }
        Ok(out)
    }

    /// Record a committed wave: its tenants and the positions just before it.
    pub fn mark_applied(
        &mut self,
        plan: &str,
        tenants: &[String],
        wave: u32,
        point: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::source(format!("control store {}: {e}", path.display()));
        let point = point_text(point)?;
        let tx = self.conn.transaction().map_err(err)?;
        for tenant in tenants {
            tx.execute(
                "INSERT INTO applied (plan, tenant, wave, point) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![plan, tenant, wave, point],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Mark `tenants` softly deleted by `plan`, restorable to `point`.
    pub fn mark_deleted(
        &mut self,
        tenants: &[String],
        plan: &str,
        point: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::source(format!("control store {}: {e}", path.display()));
        let now = lifeboat_core::time::now_us();
        let at = lifeboat_core::time::format_us(now);
        let point = point_text(point)?;
        let tx = self.conn.transaction().map_err(err)?;
        for tenant in tenants {
            tx.execute(
                "INSERT INTO tenants (tenant, state, plan, deleted_at, deleted_at_us, point)
                 VALUES (?1, 'deleted', ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant) DO UPDATE SET state = 'deleted', plan = excluded.plan,
                   deleted_at = excluded.deleted_at, deleted_at_us = excluded.deleted_at_us,
                   point = excluded.point, purged_at = NULL",
                params![tenant, plan, at, now, point],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// A tenant's deletion record, if it was deleted (and not brought back since).
    pub fn deleted_tenant(&self, tenant: &str) -> Result<Option<DeletedTenant>> {
        let row: Option<(String, String, String, i64, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT state, plan, deleted_at, deleted_at_us, point, purged_at FROM tenants
                 WHERE tenant = ?1",
                [tenant],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(
            |(state, plan, deleted_at, deleted_at_us, point, purged_at)| {
                Ok(DeletedTenant {
                    tenant: tenant.to_string(),
                    purged: state == "purged",
                    point: parse_point(&plan, &point)?,
                    plan,
                    deleted_at,
                    deleted_at_us,
                    purged_at,
                })
            },
        )
        .transpose()
    }

    /// Every deleted (or purged) tenant, by key.
    pub fn deleted_tenants(&self) -> Result<Vec<DeletedTenant>> {
        let keys: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT tenant FROM tenants ORDER BY tenant")
                .map_err(|e| self.err(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err(e))?
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.extend(self.deleted_tenant(&key)?);
        }
        Ok(out)
    }

    /// The tenant is back: forget its deletion.
    pub fn mark_undeleted(&self, tenant: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM tenants WHERE tenant = ?1 AND state = 'deleted'",
                [tenant],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn mark_purged(&self, tenant: &str) -> Result<()> {
        let at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
        self.conn
            .execute(
                "UPDATE tenants SET state = 'purged', purged_at = ?2 WHERE tenant = ?1",
                params![tenant, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn halt(&self, plan: &str, by: &str) -> Result<()> {
        let at = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
        self.conn
            .execute(
                "INSERT INTO halts (plan, by, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plan) DO UPDATE SET by = excluded.by, at = excluded.at",
                params![plan, by, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Who asked `plan` to halt, if anyone.
    pub fn halted_by(&self, plan: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT by FROM halts WHERE plan = ?1", [plan], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn clear_halt(&self, plan: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM halts WHERE plan = ?1", [plan])
            .map_err(|e| self.err(e))?;
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
        let mut store = ControlStore::open(&path).expect("open");
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
            let c = Connection::open(&copy).expect("open copy");
            c.execute_batch(sql).expect("tamper");
            let problems = ControlStore::open(&copy)
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
