//! The hash-chained audit log: every entry holds the hash of the one before it, and a head
//! row holds the last entry's sequence and hash, so that altered, removed, inserted or
//! reordered entries, and entries cut from the end, are found by `verify`.
//!
//! Entries are written by the change they record, in the same transaction (`Entry`, passed
//! to the store's write methods), so that neither exists without the other. Each entry's
//! hash is the SHA-256 of its canonical JSON (docs/guard.md, "The audit log"); entries
//! written before that encoding (format 1) keep the older rule up to the point the store
//! marked when it was upgraded.

use serde::Serialize;
use serde_json::Value as Json;

use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};

use crate::db::{Db, Val};
use crate::store::{now_text, ControlStore};

/// The `prev` of the first entry, and the head's hash of an empty log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit log entry (`D`: its details, JSON; as stored, text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry<D = Json> {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: D,
    pub prev: String,
    pub hash: String,
}

/// An entry to write with a change, in the change's transaction: who did it, what, to
/// what (a plan's hash, `tenant:KEY`, `incident:ID`, `campaign:ID`, …) and the details.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: Json,
}

impl Entry {
    pub fn new(actor: &str, action: &str, subject: &str, details: Json) -> Entry {
        // Entries hold integers only: a fraction would not be read back to the same
        // digits by every JSON reader, and the entry's hash would no longer match.
        debug_assert!(
            integers_only(&details),
            "audit entry {action} {subject}: a number with a fraction in {details}"
        );
        Entry {
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            details,
        }
    }
}

/// Whether every number in `value` is an integer.
fn integers_only(value: &Json) -> bool {
    match value {
        Json::Number(n) => n.is_i64() || n.is_u64(),
        Json::Array(items) => items.iter().all(integers_only),
        Json::Object(map) => map.values().all(integers_only),
        _ => true,
    }
}

/// `value` as canonical JSON: object keys sorted (by their UTF-8 bytes), no whitespace,
/// strings escaped as `serde_json` writes them (`"`, `\` and control characters only;
/// everything else as UTF-8), numbers as written (entries hold integers only).
pub fn canonical_json(value: &Json) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Format 2 (this build's): the SHA-256 of the entry as canonical JSON, every field but
/// `hash`.
fn entry_hash(
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    details: &Json,
    prev: &str,
) -> String {
    let entry = serde_json::json!({
        "seq": seq, "at": at, "actor": actor, "action": action, "subject": subject,
        "details": details, "prev": prev,
    });
    sha256_hex(canonical_json(&entry).as_bytes())
}

/// Format 1 (entries written before the store was upgraded): the fields joined with
/// newlines. Ambiguous (a field holding a newline can move text into the next one), so it
/// is only used to check old entries.
fn entry_hash_v1(
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

/// Append `entries` to the log inside the caller's transaction, chained to the head.
pub(crate) fn write_entries(db: &mut Db, entries: &[Entry]) -> Result<Vec<AuditEntry>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let lock = db.lock();
    let head = db.query_one(&format!("SELECT seq, hash FROM audit_head{lock}"), &[])?;
    let (mut last, mut prev) = match head {
        Some(row) => (row.int(0)? as u64, row.text(1)?),
        None => (0, GENESIS.to_string()),
    };
    let at = now_text();
    let mut written = Vec::with_capacity(entries.len());
    for entry in entries {
        let seq = last + 1;
        let hash = entry_hash(
            seq,
            &at,
            &entry.actor,
            &entry.action,
            &entry.subject,
            &entry.details,
            &prev,
        );
        db.execute(
            "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                Val::Int(seq as i64),
                at.as_str().into(),
                entry.actor.as_str().into(),
                entry.action.as_str().into(),
                entry.subject.as_str().into(),
                canonical_json(&entry.details).into(),
                prev.as_str().into(),
                hash.as_str().into(),
            ],
        )?;
        written.push(AuditEntry {
            seq,
            at: at.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            subject: entry.subject.clone(),
            details: entry.details.clone(),
            prev: prev.clone(),
            hash: hash.clone(),
        });
        last = seq;
        prev = hash;
    }
    db.execute(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[Val::Int(last as i64), prev.as_str().into()],
    )?;
    Ok(written)
}

/// Like `write_entries`, for a change that must be audited: refuses to go on without an
/// entry (the transaction then rolls back).
pub(crate) fn write_audited(db: &mut Db, entries: &[Entry]) -> Result<Vec<AuditEntry>> {
    if entries.is_empty() {
        return Err(Error::source(
            "control store: a change was made without its audit entry",
        ));
    }
    write_entries(db, entries)
}

/// An entry as stored and what is needed to check it against its anchor.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub seq: u64,
    pub at: String,
    pub hash: String,
}

impl ControlStore {
    /// Append an entry that records no other change in the store (a plan made, a restore
    /// point found, an undo that did not finish).
    pub fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: Json,
    ) -> Result<AuditEntry> {
        let entry = Entry::new(actor, action, subject, details);
        let mut written = self.db.transaction(|db| write_audited(db, &[entry]))?;
        written
            .pop()
            .ok_or_else(|| Error::source("control store: the audit entry was not written"))
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
                details: serde_json::from_str(&e.details).unwrap_or(Json::String(e.details)),
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

    /// The last entry written in format 1 (0: none): entries up to it are checked with the
    /// format-1 rule.
    pub fn audit_v1_through(&mut self) -> Result<u64> {
        Ok(self
            .db
            .query_one(
                "SELECT value FROM control_meta WHERE name = 'audit_v1_through'",
                &[],
            )?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    /// Check the chain: every entry's hash, its link to the one before, the sequence, and
    /// the head. Returns the problems found (none: intact).
    pub fn verify(&mut self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let v1_through = self.audit_v1_through()?;
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
            let matches = if e.seq <= v1_through {
                e.hash
                    == entry_hash_v1(
                        e.seq, &e.at, &e.actor, &e.action, &e.subject, &e.details, &e.prev,
                    )
            } else {
                match serde_json::from_str::<Json>(&e.details) {
                    Ok(details) => {
                        canonical_json(&details) == e.details
                            && e.hash
                                == entry_hash(
                                    e.seq, &e.at, &e.actor, &e.action, &e.subject, &details,
                                    &e.prev,
                                )
                    }
                    Err(_) => false,
                }
            };
            if !matches {
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

    // --- anchors ------------------------------------------------------------------------

    /// Every entry's sequence, time and hash, by sequence (what anchors are checked
    /// against).
    pub fn entry_hashes(&mut self) -> Result<Vec<StoredEntry>> {
        self.db
            .query("SELECT seq, at, hash FROM audit ORDER BY seq", &[])?
            .into_iter()
            .map(|r| {
                Ok(StoredEntry {
                    seq: r.int(0)? as u64,
                    at: r.text(1)?,
                    hash: r.text(2)?,
                })
            })
            .collect()
    }

    /// Every entry up to this one has its anchor in the vault.
    pub fn anchored_through(&mut self) -> Result<u64> {
        Ok(self
            .db
            .query_one("SELECT seq FROM audit_anchored", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    /// The entries written since the last one known to be anchored: what a process that
    /// holds the vault anchors (`mark_anchored` afterwards).
    pub fn unanchored(&mut self) -> Result<Vec<StoredEntry>> {
        let through = self.anchored_through()?;
        self.db
            .query(
                "SELECT seq, at, hash FROM audit WHERE seq > ?1 ORDER BY seq",
                &[Val::Int(through as i64)],
            )?
            .into_iter()
            .map(|r| {
                Ok(StoredEntry {
                    seq: r.int(0)? as u64,
                    at: r.text(1)?,
                    hash: r.text(2)?,
                })
            })
            .collect()
    }

    /// Record that every entry up to `seq` is anchored (never moves back).
    pub fn mark_anchored(&mut self, seq: u64) -> Result<()> {
        self.db.execute(
            "UPDATE audit_anchored SET seq = ?1 WHERE one = 1 AND seq < ?1",
            &[Val::Int(seq as i64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{canonical_json, entry_hash, entry_hash_v1, GENESIS};

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let value = json!({"b": [2, {"z": null, "a": "x\ny"}], "a": "é\"", "c": {"d": true}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":"é\"","b":[2,{"a":"x\ny","z":null}],"c":{"d":true}}"#
        );
    }

    /// The format's test vector (docs/guard.md): an entry, its canonical JSON and its hash,
    /// the hash computed independently of this code (`printf '%s' … | sha256sum`).
    #[test]
    fn entry_hash_test_vector() {
        let details = json!({"operation": "remove-legacy-app", "tenants": ["4411", "é"]});
        let canonical = canonical_json(&json!({
            "seq": 1, "at": "2026-11-22T06:00:00.000000Z", "actor": "alice",
            "action": "approve", "subject": "tenant:4411", "details": details,
            "prev": GENESIS,
        }));
        assert_eq!(
            canonical,
            "{\"action\":\"approve\",\"actor\":\"alice\",\"at\":\"2026-11-22T06:00:00.000000Z\",\
             \"details\":{\"operation\":\"remove-legacy-app\",\"tenants\":[\"4411\",\"é\"]},\
             \"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\",\
             \"seq\":1,\"subject\":\"tenant:4411\"}"
        );
        assert_eq!(
            entry_hash(
                1,
                "2026-11-22T06:00:00.000000Z",
                "alice",
                "approve",
                "tenant:4411",
                &details,
                GENESIS
            ),
            "7cd92a53bd23b84506f7cdfdcda1e36c4907ba426573fd0c0323c86fd69e77e7"
        );
    }

    /// The ambiguity the format removes: text moved from one field into the next across a
    /// newline kept its format-1 hash; its format-2 hash differs.
    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let at = "2026-11-22T06:00:00.000000Z";
        let v1 =
            |actor: &str, action: &str| entry_hash_v1(1, at, actor, action, "s", "{}", GENESIS);
        assert_eq!(v1("alice\napprove", "x"), v1("alice", "approve\nx"));
        let v2 =
            |actor: &str, action: &str| entry_hash(1, at, actor, action, "s", &json!({}), GENESIS);
        assert_ne!(v2("alice\napprove", "x"), v2("alice", "approve\nx"));
    }
}
