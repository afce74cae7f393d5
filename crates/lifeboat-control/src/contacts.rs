//! Tenant contacts (docs/status.md, "Contacts"): who to reach about each tenant, kept here
//! rather than in the product databases so that deleting a tenant cannot delete them.
//! Each contact has an origin: read from the vault (`[contacts]`, replaced per tenant on
//! every read) or imported from a file (upserted by tenant and email). A campaign keeps a
//! copy of its tenants' contacts as they were when it started.

use lifeboat_core::Result;

use crate::words::vocabulary;

use crate::db::{Db, Val};
use crate::store::{now_text, ControlStore};

vocabulary! {
    /// Where a contact came from.
    pub enum ContactOrigin("contact origin") {
        /// Read from the vault's copy of `[contacts] table` at a point in time.
        Vault = "vault",
        /// Imported with `lifeboat contacts import`.
        Import = "import",
    }
}

/// One way to reach a tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub tenant: String,
    pub email: String,
    pub name: Option<String>,
    pub locale: Option<String>,
    pub origin: ContactOrigin,
    /// Vault contacts: the point in time they were read at (RFC 3339).
    pub read_at: Option<String>,
}

const COLUMNS: &str = "tenant, email, name, locale, origin, read_at";

fn contact(row: &crate::db::Row) -> Result<Contact> {
    Ok(Contact {
        tenant: row.text(0)?,
        email: row.text(1)?,
        name: row.opt_text(2)?,
        locale: row.opt_text(3)?,
        origin: row.word(4)?,
        read_at: row.opt_text(5)?,
    })
}

fn params(c: &Contact, now: &str) -> Vec<Val> {
    vec![
        Val::from(&c.tenant),
        Val::from(&c.email),
        Val::from(c.name.clone()),
        Val::from(c.locale.clone()),
        Val::from(c.origin.as_str()),
        Val::from(c.read_at.clone()),
        Val::from(now),
    ]
}

fn upsert(db: &mut Db, c: &Contact, now: &str) -> Result<()> {
    db.execute(
        &format!(
            "INSERT INTO contacts ({COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (tenant, origin, email) DO UPDATE SET name = excluded.name, \
             locale = excluded.locale, read_at = excluded.read_at, \
             updated_at = excluded.updated_at"
        ),
        &params(c, now),
    )?;
    Ok(())
}

impl ControlStore {
    /// Import contacts (origin `import`), all or none: a contact already imported for the
    /// same tenant and email is updated.
    pub fn import_contacts(&mut self, contacts: &[Contact]) -> Result<()> {
        let now = now_text();
        self.db.transaction(|db| {
            for c in contacts {
                let c = Contact {
                    origin: ContactOrigin::Import,
                    read_at: None,
                    ..c.clone()
                };
                upsert(db, &c, &now)?;
            }
            Ok(())
        })
    }

    /// Replace the vault contacts of `tenants` with `contacts` (read at one point): a
    /// tenant read with no contact keeps none from the vault.
    pub fn replace_vault_contacts(
        &mut self,
        tenants: &[String],
        contacts: &[Contact],
    ) -> Result<()> {
        let now = now_text();
        self.db.transaction(|db| {
            for tenant in tenants {
                db.execute(
                    "DELETE FROM contacts WHERE tenant = ?1 AND origin = ?2",
                    &[tenant.into(), ContactOrigin::Vault.as_str().into()],
                )?;
            }
            for c in contacts {
                let c = Contact {
                    origin: ContactOrigin::Vault,
                    ..c.clone()
                };
                upsert(db, &c, &now)?;
            }
            Ok(())
        })
    }

    /// Every contact (of `tenant` if given), by tenant, origin and email.
    pub fn contacts(&mut self, tenant: Option<&str>) -> Result<Vec<Contact>> {
        let rows = match tenant {
            Some(t) => self.db.query(
                &format!(
                    "SELECT {COLUMNS} FROM contacts WHERE tenant = ?1 \
                     ORDER BY tenant, origin, email"
                ),
                &[t.into()],
            )?,
            None => self.db.query(
                &format!("SELECT {COLUMNS} FROM contacts ORDER BY tenant, origin, email"),
                &[],
            )?,
        };
        rows.iter().map(contact).collect()
    }

    /// Keep `contacts` with campaign `campaign`, as they are now (more of them, after the
    /// campaign started: they hear of the changes from then on).
    pub fn record_campaign_contacts(&mut self, campaign: &str, contacts: &[Contact]) -> Result<()> {
        self.db
            .transaction(|db| record_campaign_contacts(db, campaign, contacts))
    }

    /// The contacts campaign `campaign` keeps, by tenant, origin and email.
    pub fn campaign_contacts(&mut self, campaign: &str) -> Result<Vec<Contact>> {
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM campaign_contacts WHERE campaign = ?1 \
                     ORDER BY tenant, origin, email"
                ),
                &[campaign.into()],
            )?
            .iter()
            .map(contact)
            .collect()
    }
}

/// Keep `contacts` with `campaign`, inside the caller's transaction.
pub(crate) fn record_campaign_contacts(
    db: &mut Db,
    campaign: &str,
    contacts: &[Contact],
) -> Result<()> {
    for c in contacts {
        db.execute(
            &format!(
                "INSERT INTO campaign_contacts (campaign, {COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING"
            ),
            &[
                campaign.into(),
                Val::from(&c.tenant),
                Val::from(&c.email),
                Val::from(c.name.clone()),
                Val::from(c.locale.clone()),
                Val::from(c.origin.as_str()),
                Val::from(c.read_at.clone()),
            ],
        )?;
    }
    Ok(())
}
