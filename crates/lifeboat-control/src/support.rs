//! Support requests (docs/status.md, "Support"): what people wrote to `/support`, with
//! no site URL required, matched to tenants by their contacts' addresses and domains.

use lifeboat_core::{Error, Result};

use crate::db::{Db, Row, Val};
use crate::ids::new_id;
use crate::outbox::{enqueue, Notice, NoticeEvent, Recipient};
use crate::store::{now, ControlStore};
use crate::subscribers::valid_email;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS support_requests (id TEXT PRIMARY KEY, email TEXT NOT NULL,
    message TEXT NOT NULL, site_url TEXT, company TEXT, tenant_given TEXT,
    matches TEXT NOT NULL, matched BIGINT NOT NULL, created_at TEXT NOT NULL,
    created_at_us BIGINT NOT NULL);
";

/// The longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8192;
/// The longest optional field (site URL, company, tenant), in bytes.
pub const MAX_FIELD_BYTES: usize = 512;

/// Domains anyone can have an address at: an address there says nothing about which
/// company wrote, so it is matched only by the whole address, never by its domain.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "163.com",
    "aol.com",
    "fastmail.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hey.com",
    "hotmail.com",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "me.com",
    "msn.com",
    "outlook.com",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "web.de",
    "yahoo.com",
    "yandex.com",
    "yandex.ru",
    "zoho.com",
];

/// What someone wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupportInput {
    pub email: String,
    pub message: String,
    pub site_url: Option<String>,
    pub company: Option<String>,
    pub tenant: Option<String>,
    /// The language the form was read in (`de`): a reply to the writer's own address is in
    /// it when the contact has no locale of its own.
    pub lang: Option<String>,
}

/// How a request matched a tenant: the contact it matched and whether by the whole
/// address (`email`) or by its domain (`domain`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SupportMatch {
    pub tenant: String,
    pub contact: String,
    pub by: String,
}

/// A filed support request, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SupportRequest {
    pub id: String,
    pub email: String,
    pub message: String,
    pub site_url: Option<String>,
    pub company: Option<String>,
    /// The tenant the writer named (as written; not used for matching).
    pub tenant: Option<String>,
    pub matches: Vec<SupportMatch>,
    pub created_at: String,
}

const COLUMNS: &str = "id, email, message, site_url, company, tenant_given, matches, created_at";

fn request(r: &Row) -> Result<SupportRequest> {
    let id = r.text(0)?;
    let matches = serde_json::from_str(&r.text(6)?)
        .map_err(|e| Error::source(format!("control store: support request {id}: {e}")))?;
    Ok(SupportRequest {
        email: r.text(1)?,
        message: r.text(2)?,
        site_url: r.opt_text(3)?,
        company: r.opt_text(4)?,
        tenant: r.opt_text(5)?,
        matches,
        created_at: r.text(7)?,
        id,
    })
}

/// An optional field: trimmed, empty as none, at most `MAX_FIELD_BYTES`.
fn optional(name: &str, value: &Option<String>) -> Result<Option<String>> {
    let value = value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    if value.as_ref().is_some_and(|v| v.len() > MAX_FIELD_BYTES) {
        return Err(Error::usage(format!(
            "the {name} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(value)
}

/// The contacts `email` matches: those with the same address, then (unless the domain is
/// a free-mail one) those at the same domain. One match per tenant and contact.
fn matches(db: &mut Db, email: &str) -> Result<Vec<SupportMatch>> {
    let mut found: Vec<SupportMatch> = Vec::new();
    let rows = db.query(
        "SELECT DISTINCT tenant, lower(email) FROM contacts WHERE lower(email) = ?1
         ORDER BY tenant",
        &[email.into()],
    )?;
    for r in &rows {
        found.push(SupportMatch {
            tenant: r.text(0)?,
            contact: r.text(1)?,
            by: "email".into(),
        });
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !FREE_MAIL_DOMAINS.contains(&domain) {
        let rows = db.query(
            "SELECT DISTINCT tenant, lower(email) FROM contacts
             WHERE substr(lower(email), length(email) - length(CAST(?1 AS TEXT)) + 1) = ?1
             ORDER BY tenant, lower(email)",
            &[format!("@{domain}").into()],
        )?;
        for r in &rows {
            let (tenant, contact) = (r.text(0)?, r.text(1)?);
            if !found
                .iter()
                .any(|m| m.tenant == tenant && m.contact == contact)
            {
                found.push(SupportMatch {
                    tenant,
                    contact,
                    by: "domain".into(),
                });
            }
        }
    }
    Ok(found)
}

impl ControlStore {
    /// File a support request and, in the same transaction, enqueue what it sends: the
    /// request to the operator webhooks, and to each matched contact whose tenant is in a
    /// campaign, that tenant's stage and private link (the tenant's latest campaign).
    /// Bad input (an address that is not one, no message, a field too long) is a usage
    /// error and files nothing. Returns the request's id.
    pub fn file_support_request(&mut self, input: &SupportInput) -> Result<String> {
        let email = input.email.trim().to_lowercase();
        if !valid_email(&email) {
            return Err(Error::usage("please give a valid email address"));
        }
        let message = input.message.trim().to_string();
        if message.is_empty() {
            return Err(Error::usage("please write a message"));
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::usage(format!(
                "the message is longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let site_url = optional("site URL", &input.site_url)?;
        let company = optional("company", &input.company)?;
        let tenant = optional("tenant", &input.tenant)?;
        let id = new_id()?;
        let (now_us, at) = now();
        self.db.transaction(|db| {
            let found = matches(db, &email)?;
            let matches_text = serde_json::to_string(&found)
                .map_err(|e| Error::source(format!("support request: {e}")))?;
            db.execute(
                "INSERT INTO support_requests (id, email, message, site_url, company,
                     tenant_given, matches, matched, created_at, created_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &[
                    id.as_str().into(),
                    email.as_str().into(),
                    message.as_str().into(),
                    site_url.clone().into(),
                    company.clone().into(),
                    tenant.clone().into(),
                    matches_text.into(),
                    Val::Int(i64::from(!found.is_empty())),
                    at.as_str().into(),
                    Val::Int(now_us),
                ],
            )?;
            let mut notices = vec![Notice {
                key: format!("support:{id}:operators"),
                event: NoticeEvent::SupportRequest,
                to: Recipient::Operators,
                body: serde_json::json!({
                    "support_request": {"id": id, "email": email, "message": message,
                        "site_url": site_url, "company": company, "tenant": tenant,
                        "matches": found, "created_at": at},
                }),
            }];
            for m in &found {
                let Some(stage) = db.query_one(
                    "SELECT t.campaign, t.token, t.stage, t.reason, c.target_time
                     FROM campaign_tenants t JOIN campaigns c ON c.id = t.campaign
                     WHERE t.tenant = ?1 ORDER BY c.created_at_us DESC, c.id LIMIT 1",
                    &[m.tenant.as_str().into()],
                )?
                else {
                    continue;
                };
                let campaign = stage.text(0)?;
                let queued = stage.text(2)? == crate::Stage::Queued.as_str();
                let place = if queued {
                    Some(crate::outbox::queue_place(db, &campaign, &m.tenant)?)
                } else {
                    None
                };
                let known = db.query_one(
                    "SELECT MIN(name), MIN(NULLIF(trim(locale), '')) FROM contacts
                     WHERE tenant = ?1 AND lower(email) = ?2",
                    &[m.tenant.as_str().into(), m.contact.as_str().into()],
                )?;
                let (name, locale) = match known {
                    Some(r) => (r.opt_text(0)?, r.opt_text(1)?),
                    None => (None, None),
                };
                // The contact's own locale; else, when the contact is the writer, the
                // language the writer read the form in.
                let lang =
                    locale.or_else(|| (m.by == "email").then(|| input.lang.clone()).flatten());
                notices.push(Notice {
                    key: format!("support:{id}:contact:{}:{}", m.tenant, m.contact),
                    event: NoticeEvent::SupportReply,
                    to: Recipient::Contact {
                        campaign: campaign.clone(),
                        tenant: m.tenant.clone(),
                        email: m.contact.clone(),
                        name,
                        token: stage.text(1)?,
                        lang,
                    },
                    body: {
                        let mut body = serde_json::json!({
                            "support_request": id,
                            "stage": stage.text(2)?,
                            "reason": stage.opt_text(3)?,
                            "restored_to": stage.text(4)?,
                            "place": place,
                        });
                        if let Some(phase) =
                            crate::campaigns::phase_notice(db, &campaign, &m.tenant)?
                        {
                            body["phase"] = phase;
                        }
                        body
                    },
                });
            }
            enqueue(db, &notices)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Every support request (only those that matched no tenant with `unmatched_only`),
    /// newest first.
    pub fn support_requests(&mut self, unmatched_only: bool) -> Result<Vec<SupportRequest>> {
        let filter = if unmatched_only {
            "WHERE matched = 0"
        } else {
            ""
        };
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM support_requests {filter}
                     ORDER BY created_at_us DESC, id"
                ),
                &[],
            )?
            .iter()
            .map(request)
            .collect()
    }

    /// One support request by id.
    pub fn support_request(&mut self, id: &str) -> Result<Option<SupportRequest>> {
        self.db
            .query_one(
                &format!("SELECT {COLUMNS} FROM support_requests WHERE id = ?1"),
                &[id.into()],
            )?
            .as_ref()
            .map(request)
            .transpose()
    }
}
