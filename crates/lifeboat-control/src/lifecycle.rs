//! Tenants' lifecycle in the control store: softly deleted tenants (recorded by the wave
//! of a tenant-delete plan that removed them, see `mark_applied`), brought back, or purged
//! from the vault.

use std::collections::BTreeMap;

use lifeboat_core::Result;

use crate::applies::parse_point;
use crate::audit::{write_audited, Entry};
use crate::store::{now_text, ControlStore};

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

impl ControlStore {
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

    /// The tenant is back: forget its deletion, audited with `entry` (nothing happens to a
    /// tenant that is not deleted, or purged).
    pub fn mark_undeleted(&mut self, tenant: &str, entry: &Entry) -> Result<()> {
        self.db.transaction(|db| {
            let n = db.execute(
                "DELETE FROM tenants WHERE tenant = ?1 AND state = 'deleted'",
                &[tenant.into()],
            )?;
            if n == 1 {
                write_audited(db, std::slice::from_ref(entry))?;
            }
            Ok(())
        })
    }

    /// The tenant's vault data is to be removed: from now on undelete refuses it. Audited
    /// with `entry`.
    pub fn mark_purged(&mut self, tenant: &str, entry: &Entry) -> Result<()> {
        self.db.transaction(|db| {
            let n = db.execute(
                "UPDATE tenants SET state = 'purged', purged_at = ?2 WHERE tenant = ?1",
                &[tenant.into(), now_text().into()],
            )?;
            if n == 1 {
                write_audited(db, std::slice::from_ref(entry))?;
            }
            Ok(())
        })
    }
}
