//! Tenant data exports asked for from private pages (docs/status.md): requested by the
//! customer, built by a worker from the vault as of the campaign's restore point, offered
//! behind a short-lived download link. Every request, build and download is audited, and
//! so is the removal of an archive whose link expired long enough ago.

use serde::Serialize;

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::store::{now, ControlStore};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS exports (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
    state TEXT NOT NULL, requested_at_us BIGINT NOT NULL, builder TEXT,
    claimed_until_us BIGINT, file TEXT, bytes BIGINT, error TEXT, link TEXT,
    link_until_us BIGINT, PRIMARY KEY (campaign, tenant));
";

/// Add the columns later versions keep, on the first open of an older store.
pub(crate) fn add_columns(db: &mut crate::db::Db) -> Result<()> {
    db.add_column("exports", "format", "TEXT NOT NULL DEFAULT 'csv'")
}

/// The archive formats a private page offers (docs/export.md): `csv`, a zip of CSV files,
/// and `sqlite`, one SQLite database.
pub const EXPORT_FORMATS: [&str; 2] = ["csv", "sqlite"];

/// How long after its link expired an archive is kept (a download begun just before the
/// expiry finishes; the customer can still ask for a new link to the same archive).
pub const ARCHIVE_GRACE_US: i64 = 3_600_000_000;

/// One tenant's export of one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Export {
    pub campaign: String,
    pub tenant: String,
    /// `requested`, `building`, `ready`, `failed`, or `removed` (its archive deleted after
    /// its link expired; the customer may ask again).
    pub state: String,
    /// The archive's file name in the export directory, once built; for a `removed`
    /// export, until the file is deleted.
    pub file: Option<String>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    /// The current download link's token and when it stops working (µs).
    pub link: Option<String>,
    pub link_until_us: Option<i64>,
    /// `csv` or `sqlite` (`EXPORT_FORMATS`), as the customer asked.
    pub format: String,
}

const COLUMNS: &str =
    "campaign, tenant, state, file, bytes, error, link, link_until_us, format FROM exports";

fn export_of(r: &crate::db::Row) -> Result<Export> {
    Ok(Export {
        campaign: r.text(0)?,
        tenant: r.text(1)?,
        state: r.text(2)?,
        file: r.opt_text(3)?,
        bytes: r.opt_int(4)?,
        error: r.opt_text(5)?,
        link: r.opt_text(6)?,
        link_until_us: r.opt_int(7)?,
        format: r.text(8)?,
    })
}

impl ControlStore {
    /// Every export, for the status snapshot's private views.
    pub fn exports(&mut self) -> Result<Vec<Export>> {
        self.db
            .query(&format!("SELECT {COLUMNS} ORDER BY campaign, tenant"), &[])?
            .iter()
            .map(export_of)
            .collect()
    }

    /// The customer behind page `token` asks for its data: a new request (also after a
    /// failure), or a new download link (valid `link_us`) for an archive already built.
    /// `false`: no such page.
    pub fn request_export(&mut self, token: &str, link_us: i64) -> Result<bool> {
        self.request_export_as(token, link_us, "csv")
    }

    /// `request_export` in `format` (`EXPORT_FORMATS`; another word is refused, changing
    /// nothing). The format counts for a new request; a new link is to the archive built.
    pub fn request_export_as(&mut self, token: &str, link_us: i64, format: &str) -> Result<bool> {
        if !EXPORT_FORMATS.contains(&format) {
            return Err(Error::usage(format!(
                "unknown export format {format:?}: use csv or sqlite"
            )));
        }
        self.write(|db| {
            let Some(row) = db.query_one(
                "SELECT campaign, tenant FROM campaign_tenants WHERE token = ?1",
                &[token.into()],
            )?
            else {
                return Ok(false);
            };
            let (campaign, tenant) = (row.text(0)?, row.text(1)?);
            let (now_us, _) = now();
            let lock = db.lock();
            let state = db
                .query_one(
                    &format!("SELECT state FROM exports WHERE campaign = ?1 AND tenant = ?2{lock}"),
                    &[campaign.as_str().into(), tenant.as_str().into()],
                )?
                .map(|r| r.text(0))
                .transpose()?;
            let subject = format!("tenant:{tenant}");
            match state.as_deref() {
                None | Some("failed") | Some("removed") => {
                    db.execute(
                        "DELETE FROM exports WHERE campaign = ?1 AND tenant = ?2",
                        &[campaign.as_str().into(), tenant.as_str().into()],
                    )?;
                    db.execute(
                        "INSERT INTO exports (campaign, tenant, state, requested_at_us, format)
                         VALUES (?1, ?2, 'requested', ?3, ?4)",
                        &[
                            campaign.as_str().into(),
                            tenant.as_str().into(),
                            now_us.into(),
                            format.into(),
                        ],
                    )?;
                    write_audited(
                        db,
                        &[Entry::new(
                            "customer",
                            "export-request",
                            &subject,
                            serde_json::json!({"campaign": campaign, "format": format}),
                        )],
                    )?;
                }
                Some("ready") => {
                    let link = crate::new_token()?;
                    db.execute(
                        "UPDATE exports SET link = ?3, link_until_us = ?4
                         WHERE campaign = ?1 AND tenant = ?2",
                        &[
                            campaign.as_str().into(),
                            tenant.as_str().into(),
                            link.as_str().into(),
                            now_us.saturating_add(link_us).into(),
                        ],
                    )?;
                    write_audited(
                        db,
                        &[Entry::new(
                            "customer",
                            "export-link",
                            &subject,
                            serde_json::json!({"campaign": campaign}),
                        )],
                    )?;
                }
                Some(_) => {} // requested or being built: nothing to add
            }
            Ok(true)
        })
    }

    /// Claim one requested export for `builder` for `lease_us` (also one whose builder's
    /// claim ran out). Returns (campaign, tenant).
    pub fn claim_export(
        &mut self,
        builder: &str,
        lease_us: i64,
    ) -> Result<Option<(String, String)>> {
        let (now_us, _) = now();
        self.db.transaction(|db| {
            let skip = db.skip_locked();
            let Some(row) = db.query_one(
                &format!(
                    "SELECT campaign, tenant FROM exports WHERE state = 'requested'
                     OR (state = 'building' AND claimed_until_us < ?1)
                     ORDER BY requested_at_us LIMIT 1{skip}"
                ),
                &[now_us.into()],
            )?
            else {
                return Ok(None);
            };
            let (campaign, tenant) = (row.text(0)?, row.text(1)?);
            db.execute(
                "UPDATE exports SET state = 'building', builder = ?3, claimed_until_us = ?4
                 WHERE campaign = ?1 AND tenant = ?2",
                &[
                    campaign.as_str().into(),
                    tenant.as_str().into(),
                    builder.into(),
                    now_us.saturating_add(lease_us).into(),
                ],
            )?;
            Ok(Some((campaign, tenant)))
        })
    }

    /// The archive of (`campaign`, `tenant`) is in place as `file`: ready, with a download
    /// link valid `link_us`, audited with `details`. `false`: another builder holds it now.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_export(
        &mut self,
        builder: &str,
        campaign: &str,
        tenant: &str,
        file: &str,
        bytes: i64,
        link_us: i64,
        details: serde_json::Value,
    ) -> Result<bool> {
        let link = crate::new_token()?;
        let (now_us, _) = now();
        self.write(|db| {
            let changed = db.execute(
                "UPDATE exports SET state = 'ready', file = ?4, bytes = ?5, link = ?6,
                     link_until_us = ?7, error = NULL, claimed_until_us = NULL
                 WHERE campaign = ?1 AND tenant = ?2 AND state = 'building' AND builder = ?3",
                &[
                    campaign.into(),
                    tenant.into(),
                    builder.into(),
                    file.into(),
                    bytes.into(),
                    link.as_str().into(),
                    now_us.saturating_add(link_us).into(),
                ],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            write_audited(
                db,
                &[Entry::new(
                    builder,
                    "export-build",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"campaign": campaign, "file": file, "bytes": bytes,
                        "archive": details}),
                )],
            )?;
            Ok(true)
        })
    }

    /// Building the archive failed: the page says so and the customer may ask again.
    pub fn fail_export(
        &mut self,
        builder: &str,
        campaign: &str,
        tenant: &str,
        error: &str,
    ) -> Result<()> {
        self.write(|db| {
            let changed = db.execute(
                "UPDATE exports SET state = 'failed', error = ?4, claimed_until_us = NULL
                 WHERE campaign = ?1 AND tenant = ?2 AND state = 'building' AND builder = ?3",
                &[campaign.into(), tenant.into(), builder.into(), error.into()],
            )?;
            if changed > 0 {
                write_audited(
                    db,
                    &[Entry::new(
                        builder,
                        "export-build",
                        &format!("tenant:{tenant}"),
                        serde_json::json!({"campaign": campaign, "error": error}),
                    )],
                )?;
            }
            Ok(())
        })
    }

    /// Mark `removed` every ready export whose link expired more than `grace_us` ago,
    /// each with its audit entry (`export-remove` of `tenant:KEY`, by `actor`), in one
    /// conditional update per export: an export whose link was renewed meanwhile is kept,
    /// and several removers mark each once. Returns how many were marked; their files are
    /// then listed by `archives_to_delete`.
    pub fn expire_exports(&mut self, grace_us: i64, actor: &str) -> Result<usize> {
        let (now_us, _) = now();
        let cutoff = now_us.saturating_sub(grace_us);
        let due = self.db.query(
            "SELECT campaign, tenant, file FROM exports WHERE state = 'ready'
             AND link_until_us < ?1 ORDER BY link_until_us",
            &[cutoff.into()],
        )?;
        let mut marked = 0;
        for r in &due {
            let (campaign, tenant, file) = (r.text(0)?, r.text(1)?, r.opt_text(2)?);
            let removed = self.write(|db| {
                let n = db.execute(
                    "UPDATE exports SET state = 'removed'
                     WHERE campaign = ?1 AND tenant = ?2 AND state = 'ready'
                     AND link_until_us < ?3",
                    &[
                        campaign.as_str().into(),
                        tenant.as_str().into(),
                        cutoff.into(),
                    ],
                )?;
                if n == 1 {
                    write_audited(
                        db,
                        &[Entry::new(
                            actor,
                            "export-remove",
                            &format!("tenant:{tenant}"),
                            serde_json::json!({"campaign": campaign, "file": file}),
                        )],
                    )?;
                }
                Ok(n == 1)
            })?;
            marked += usize::from(removed);
        }
        Ok(marked)
    }

    /// Removed exports whose archive file is still to be deleted: (campaign, tenant, file).
    pub fn archives_to_delete(&mut self) -> Result<Vec<(String, String, String)>> {
        self.db
            .query(
                "SELECT campaign, tenant, file FROM exports
                 WHERE state = 'removed' AND file IS NOT NULL ORDER BY campaign, tenant",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
            .collect()
    }

    /// The archive `file` of a removed export is deleted: forget its name.
    pub fn archive_deleted(&mut self, campaign: &str, tenant: &str, file: &str) -> Result<()> {
        self.db.execute(
            "UPDATE exports SET file = NULL
             WHERE campaign = ?1 AND tenant = ?2 AND state = 'removed' AND file = ?3",
            &[campaign.into(), tenant.into(), file.into()],
        )?;
        Ok(())
    }

    /// A download through `link` started: audited. Refused unless the link is the
    /// export's current one and still valid.
    pub fn record_download(&mut self, campaign: &str, tenant: &str, link: &str) -> Result<()> {
        let (now_us, _) = now();
        self.db.transaction(|db| {
            let valid = db
                .query_one(
                    "SELECT 1 FROM exports WHERE campaign = ?1 AND tenant = ?2 AND state = 'ready'
                     AND link = ?3 AND link_until_us >= ?4",
                    &[campaign.into(), tenant.into(), link.into(), now_us.into()],
                )?
                .is_some();
            if !valid {
                return Err(Error::usage("this download link is no longer valid"));
            }
            write_audited(
                db,
                &[Entry::new(
                    "customer",
                    "export-download",
                    &format!("tenant:{tenant}"),
                    serde_json::json!({"campaign": campaign}),
                )],
            )?;
            Ok(())
        })
    }
}
