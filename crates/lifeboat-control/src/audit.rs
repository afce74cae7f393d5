//! The hash-chained audit log: every entry holds the hash of the one before it, and a head
//! row holds the last entry's sequence and hash, so that altered, removed, inserted or
//! reordered entries, and entries cut from the end, are found by `verify`.

use serde::Serialize;

use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};

use crate::db::Val;
use crate::store::{now_text, ControlStore};

/// The `prev` of the first entry, and the head's hash of an empty log.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

    /// Whether the log holds an entry with this action and subject (`plan` of a plan's
    /// hash: the plan was made by `lifeboat plan`, not by hand).
    pub fn has_entry(&mut self, action: &str, subject: &str) -> Result<bool> {
        Ok(self
            .db
            .query_one(
                "SELECT seq FROM audit WHERE action = ?1 AND subject = ?2 LIMIT 1",
                &[action.into(), subject.into()],
            )?
            .is_some())
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
}
