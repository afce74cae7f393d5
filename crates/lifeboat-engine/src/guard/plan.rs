//! The plan file (docs/guard.md): typed and versioned. A plan is its hash: the SHA-256 of
//! its JSON without the `hash` and `signatures` fields, written into `hash`; `signatures`
//! holds the SSH signatures of that hash (`signature.rs`), added as people sign. Reading
//! checks, in order: that the file is JSON and a Lifeboat plan, its format version, its
//! hash, and then its shape — every field present and typed, no field this version does not
//! know. A plan that fails any check is refused with the reason; nothing is defaulted.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use lifeboat_core::model::Value;
use lifeboat_core::vault::sha256_hex;
use lifeboat_core::{Error, Result};

use super::signature::Signed;

/// The `format` field of every plan file.
pub const FORMAT: &str = "lifeboat-plan";
/// The plan format this version writes and reads.
pub const VERSION: u32 = 3;

/// What a plan is for: a declared operation, or the built-in soft delete of tenants
/// (`lifeboat tenant delete`), whose apply also marks the tenants deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    #[serde(rename = "operation")]
    Operation,
    #[serde(rename = "tenant-delete")]
    TenantDelete,
}

/// An ID as the plan records it: an integer, or text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdValue {
    Int(i64),
    Text(String),
}

impl IdValue {
    pub fn of(value: &Value) -> IdValue {
        match value {
            Value::Int(i) => IdValue::Int(*i),
            other => IdValue::Text(other.to_string()),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            IdValue::Int(i) => Value::Int(*i),
            IdValue::Text(s) => Value::Text(s.clone()),
        }
    }
}

/// One resolved ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanId {
    /// As the operator typed it.
    pub id: String,
    pub value: IdValue,
    pub label: Option<String>,
    /// The tenant the ID belongs to (none: a row of no tenant).
    pub tenant: Option<String>,
}

/// One step: SQL run on a source, with the IDs bound. Recorded for the people who read the
/// plan; `apply` runs the steps the configuration declares, and refuses a plan whose steps
/// are not those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    pub source: String,
    pub sql: String,
}

/// What the plan measured for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTenant {
    pub ids: Vec<IdValue>,
    /// "source.table" -> rows touched.
    pub tables: BTreeMap<String, u64>,
    /// Users of the tenant (`[guard] users`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
}

/// A plan file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub purpose: Purpose,
    pub operation: String,
    pub author: String,
    pub created: String,
    pub param: String,
    pub kind: String,
    /// SHA-256 of the operation's declaration in the configuration (for a soft delete: of
    /// the steps the tenant maps give): `apply` refuses the plan once it changed.
    pub declaration: String,
    pub ids: Vec<PlanId>,
    pub steps: Vec<PlanStep>,
    /// Each step's source position when measured.
    pub positions: BTreeMap<String, String>,
    pub tenants: BTreeMap<String, PlanTenant>,
    /// "source.table" -> rows touched, every tenant.
    pub totals: BTreeMap<String, u64>,
    pub users: u64,
}

/// tenant -> "source.table" -> rows.
pub type Merged = BTreeMap<String, BTreeMap<String, u64>>;

impl Plan {
    /// The plan's hash: SHA-256 of its JSON (without `hash`).
    pub fn hash(&self) -> Result<String> {
        let json = serde_json::to_value(self)
            .map_err(|e| Error::source(format!("cannot encode the plan: {e}")))?;
        Ok(sha256_hex(json.to_string().as_bytes()))
    }

    /// tenant -> "source.table" -> rows, the tables with rows only.
    pub fn effect(&self) -> Merged {
        self.tenants
            .iter()
            .map(|(tenant, entry)| {
                let tables = entry
                    .tables
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, n)| (t.clone(), *n))
                    .collect();
                (tenant.clone(), tables)
            })
            .collect()
    }
}

/// A plan file, read and checked: the plan, its hash, and the signatures it carries (not
/// yet verified: `signature::Verdict` does that).
pub struct PlanFile {
    pub plan: Plan,
    pub hash: String,
    pub signatures: Vec<Signed>,
}

impl PlanFile {
    pub fn read(path: &Path) -> Result<PlanFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read plan {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// `name` is how errors call the plan (its file).
    pub fn parse(text: &str, name: &str) -> Result<PlanFile> {
        let mut json: Json = serde_json::from_str(text)
            .map_err(|e| Error::usage(format!("plan {name} is not JSON: {e}")))?;
        if json.get("format").and_then(Json::as_str) != Some(FORMAT) {
            return Err(Error::usage(format!("{name} is not a Lifeboat plan")));
        }
        match json.get("version").and_then(Json::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(Error::usage(format!(
                    "plan {name} has format version {v}; this lifeboat reads version {VERSION}: \
                     make the plan again with this version"
                )))
            }
            None => return Err(Error::usage(format!("plan {name} has no format version"))),
        }
        let signatures = json
            .as_object_mut()
            .and_then(|o| o.remove("signatures"))
            .ok_or_else(|| Error::usage(format!("plan {name} has no `signatures` field")))?;
        let stated = json
            .as_object_mut()
            .and_then(|o| o.remove("hash"))
            .and_then(|h| h.as_str().map(str::to_string))
            .unwrap_or_default();
        let hash = sha256_hex(json.to_string().as_bytes());
        if hash != stated {
            return Err(Error::usage(format!(
                "plan {name} was altered after it was made (its content does not match its hash); \
                 make a new plan"
            )));
        }
        let plan: Plan = serde_json::from_value(json)
            .map_err(|e| Error::usage(format!("plan {name} does not parse: {e}")))?;
        let signatures: Vec<Signed> = serde_json::from_value(signatures)
            .map_err(|e| Error::usage(format!("plan {name}: its signatures do not parse: {e}")))?;
        Ok(PlanFile {
            plan,
            hash,
            signatures,
        })
    }

    /// A new plan, with no signature yet.
    pub fn new(plan: Plan) -> Result<PlanFile> {
        let hash = plan.hash()?;
        Ok(PlanFile {
            plan,
            hash,
            signatures: Vec::new(),
        })
    }

    /// Add a signature; one replaces another by the same person in the same role.
    pub fn add_signature(&mut self, signed: Signed) {
        self.signatures
            .retain(|s| !(s.role == signed.role && s.name == signed.name));
        self.signatures.push(signed);
    }

    /// The file's text: the plan with its hash and signatures, pretty-printed.
    pub fn to_text(&self) -> Result<String> {
        let mut json = serde_json::to_value(&self.plan)
            .map_err(|e| Error::source(format!("cannot encode the plan: {e}")))?;
        let signatures = serde_json::to_value(&self.signatures)
            .map_err(|e| Error::source(format!("cannot encode the signatures: {e}")))?;
        if let Some(object) = json.as_object_mut() {
            object.insert("hash".into(), Json::String(self.hash.clone()));
            object.insert("signatures".into(), signatures);
        }
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::source(format!("cannot write the plan: {e}")))?;
        Ok(text + "\n")
    }

    /// Write the file at `path` atomically: a temporary file beside it, synced, renamed.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.to_text()?;
        let fail =
            |e: std::io::Error| Error::usage(format!("cannot write {}: {e}", path.display()));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plan.json".to_string());
        let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(fail)
    }

    /// The first 12 characters of the hash, for people.
    pub fn short(&self) -> &str {
        &self.hash[..12]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        Plan {
            format: FORMAT.into(),
            version: VERSION,
            purpose: Purpose::Operation,
            operation: "remove-app".into(),
            author: "alice".into(),
            created: "2026-12-01T00:00:00Z".into(),
            param: "ids".into(),
            kind: "app".into(),
            declaration: "d".repeat(64),
            ids: vec![PlanId {
                id: "7".into(),
                value: IdValue::Int(7),
                label: Some("Legacy".into()),
                tenant: Some("3".into()),
            }],
            steps: vec![PlanStep {
                source: "tracker".into(),
                sql: "DELETE FROM apps WHERE id = ANY($ids)".into(),
            }],
            positions: BTreeMap::from([("tracker".into(), "12".into())]),
            tenants: BTreeMap::from([(
                "3".into(),
                PlanTenant {
                    ids: vec![IdValue::Int(7)],
                    tables: BTreeMap::from([("tracker.apps".into(), 1)]),
                    users: None,
                },
            )]),
            totals: BTreeMap::from([("tracker.apps".into(), 1)]),
            users: 0,
        }
    }

    #[test]
    fn a_written_plan_reads_back_with_its_hash() {
        let plan = sample();
        let mut file = PlanFile::new(plan.clone()).expect("hash");
        file.add_signature(Signed {
            role: lifeboat_core::people::Role::Author,
            name: "alice".into(),
            signature: "-----BEGIN SSH SIGNATURE-----".into(),
        });
        let read =
            PlanFile::parse(&file.to_text().expect("encodes"), "p.json").expect("reads back");
        assert_eq!(read.plan, plan);
        assert_eq!(read.hash, file.hash);
        assert_eq!(read.signatures, file.signatures);
    }

    fn rewritten(edit: impl FnOnce(&mut Json)) -> String {
        let text = PlanFile::new(sample())
            .and_then(|f| f.to_text())
            .expect("encodes");
        let mut json: Json = serde_json::from_str(&text).expect("json");
        edit(&mut json);
        // Recompute the hash, as a hand-edited plan would.
        let object = json.as_object_mut().expect("object");
        object.remove("hash");
        let signatures = object.remove("signatures").expect("signatures");
        let hash = sha256_hex(Json::Object(object.clone()).to_string().as_bytes());
        object.insert("hash".into(), Json::String(hash));
        object.insert("signatures".into(), signatures);
        json.to_string()
    }

    #[test]
    fn an_unknown_field_is_refused_even_with_a_matching_hash() {
        let text = rewritten(|j| {
            j["steps"][0]["extra"] = Json::String("DELETE FROM users".into());
        });
        let err = PlanFile::parse(&text, "p.json").err().expect("refused");
        assert!(err.to_string().contains("does not parse"), "{err}");
    }

    #[test]
    fn a_missing_or_mistyped_field_is_refused_not_defaulted() {
        let text = rewritten(|j| {
            j.as_object_mut().expect("object").remove("tenants");
        });
        let err = PlanFile::parse(&text, "p.json").err().expect("refused");
        assert!(err.to_string().contains("missing field `tenants`"), "{err}");
        let text = rewritten(|j| j["totals"]["tracker.apps"] = Json::String("many".into()));
        assert!(PlanFile::parse(&text, "p.json").is_err());
        let text = rewritten(|j| j["purpose"] = Json::String("drop-everything".into()));
        assert!(PlanFile::parse(&text, "p.json").is_err());
    }

    #[test]
    fn signatures_are_outside_the_hash_and_typed() {
        let mut file = PlanFile::new(sample()).expect("hash");
        let unsigned = file.to_text().expect("encodes");
        file.add_signature(Signed {
            role: lifeboat_core::people::Role::Approver,
            name: "bob".into(),
            signature: "one".into(),
        });
        file.add_signature(Signed {
            role: lifeboat_core::people::Role::Approver,
            name: "bob".into(),
            signature: "two".into(),
        });
        assert_eq!(
            file.signatures.len(),
            1,
            "bob's later signature replaces his first"
        );
        let read = PlanFile::parse(&file.to_text().expect("encodes"), "p.json").expect("reads");
        assert_eq!(
            read.hash,
            PlanFile::parse(&unsigned, "p.json").expect("reads").hash
        );

        let mut json: Json = serde_json::from_str(&unsigned).expect("json");
        json["signatures"] =
            serde_json::json!([{"role": "owner", "name": "bob", "signature": "x"}]);
        let err = PlanFile::parse(&json.to_string(), "p.json")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("signatures do not parse"), "{err}");
        json.as_object_mut().expect("object").remove("signatures");
        let err = PlanFile::parse(&json.to_string(), "p.json")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no `signatures` field"), "{err}");
    }

    #[test]
    fn another_version_or_an_altered_plan_is_refused() {
        let text = rewritten(|j| j["version"] = Json::from(2));
        let err = PlanFile::parse(&text, "p.json").err().expect("refused");
        assert!(err.to_string().contains("format version 2"), "{err}");
        let text = PlanFile::new(sample())
            .and_then(|f| f.to_text())
            .expect("encodes");
        let altered = text.replace("remove-app", "remove-all");
        let err = PlanFile::parse(&altered, "p.json").err().expect("refused");
        assert!(err.to_string().contains("altered"), "{err}");
        let err = PlanFile::parse("{}", "p.json").err().expect("refused");
        assert!(err.to_string().contains("not a Lifeboat plan"), "{err}");
    }
}
