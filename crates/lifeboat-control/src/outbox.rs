//! The notification outbox (docs/status.md, "Notifications"): every message a change
//! should send is written here in the change's own transaction, then delivered at least
//! once by `lifeboat notifier`.
//!
//! A change enqueues [`Notice`]s with [`enqueue`] inside its write transaction, so the
//! change and its messages commit or roll back together; a change that is only a message
//! (a reply to someone) uses [`ControlStore::enqueue`]. Each notice is one delivery: one
//! email to one address, or one webhook to one URL. The notifier claims due deliveries
//! under a lease (`claim_deliveries`), sends them and records the outcome
//! (`delivered`, `delivery_failed`); a delivery whose claim ran out (its notifier died)
//! is claimable again and is sent again with the same id, so a receiver can tell.

use serde::{Deserialize, Serialize};

use lifeboat_core::{Error, Result};

use crate::db::{Db, Row, Val};
use crate::ids::new_id;
use crate::store::{now, ControlStore};
use crate::words::vocabulary;

/// The outbox table. `id` names the delivery (the email's `Message-ID`, the webhook's
/// `X-Lifeboat-Delivery`); `key` is unique, so enqueuing the same key again adds nothing.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL, recipient TEXT NOT NULL, address TEXT NOT NULL, name TEXT,
    tenant TEXT, campaign TEXT, body TEXT NOT NULL, state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, last_error TEXT, next_at_us BIGINT NOT NULL,
    claimed_by TEXT, claim_until_us BIGINT, created_at TEXT NOT NULL,
    created_at_us BIGINT NOT NULL, position BIGINT NOT NULL DEFAULT 0, sent_at TEXT,
    parent TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at_us);
";

vocabulary! {
    /// What a notice tells.
    pub enum NoticeEvent("notification event") {
        /// An incident was opened.
        IncidentCreated = "incident_created",
        /// An incident got an update that does not resolve it.
        IncidentUpdated = "incident_updated",
        /// An incident was resolved.
        IncidentResolved = "incident_resolved",
        /// A tenant joined a campaign's queue (again), with its place.
        StageQueued = "stage_queued",
        /// A worker started restoring a tenant.
        StageRestoring = "stage_restoring",
        /// A tenant's data is restored and verified; its admin is asked to accept it.
        StageAwaitingAcceptance = "stage_awaiting_acceptance",
        /// A tenant's restore is handed over.
        StageRestored = "stage_restored",
        /// A tenant's restore used up its attempts.
        StageFailed = "stage_failed",
        /// A tenant has awaited acceptance for `remind_after_minutes`.
        AcceptanceReminder = "acceptance_reminder",
        /// Someone subscribed on the public page: the link that confirms it.
        SubscriptionConfirmation = "subscription_confirmation",
        /// Someone wrote to `/support` (to the operator webhooks).
        SupportRequest = "support_request",
        /// A support request matched a campaign tenant's contact: its stage and link.
        SupportReply = "support_reply",
        /// A live drill failed (to the operator webhooks): which tenants and why.
        DrillFailed = "drill_failed",
        /// An unresolved incident's public update is overdue under `[status]
        /// update_every` (to the operators, once per overdue period).
        UpdateOverdue = "update_overdue",
    }
}

vocabulary! {
    /// Who a delivery goes to.
    pub enum RecipientKind("recipient kind") {
        /// Email to one contact of a campaign tenant, with the tenant's private link.
        Contact = "contact",
        /// Email to an address that is no tenant's contact (a subscriber, someone who
        /// wrote to support).
        Address = "address",
        /// Every operator webhook configured (`[[notify.webhooks]]`): the notifier copies
        /// the notice into one `operator` delivery per endpoint.
        Operators = "operators",
        /// A webhook to one operator endpoint.
        Operator = "operator",
        /// A webhook to a subscriber's URL.
        Webhook = "webhook",
    }
}

impl RecipientKind {
    /// Delivered as an email (else as a webhook).
    pub fn is_email(self) -> bool {
        matches!(self, RecipientKind::Contact | RecipientKind::Address)
    }
}

vocabulary! {
    /// Where a delivery stands.
    pub enum DeliveryState("delivery state") {
        /// Waiting to be sent, at `next_at` (a first try, or a retry after a failure).
        Pending = "pending",
        /// Claimed by a notifier until its claim runs out.
        Sending = "sending",
        /// Accepted by the mail server or the webhook's receiver.
        Sent = "sent",
        /// Failed `max_attempts` times; kept with its last error until retried by hand.
        Dead = "dead",
        /// An `operators` notice copied into one delivery per configured endpoint.
        Expanded = "expanded",
        /// An alarm that was no longer true before it was sent (its incident got the
        /// overdue update, or was resolved): never sent.
        Withdrawn = "withdrawn",
    }
}

/// Who a notice goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipient {
    /// A contact of a campaign tenant: the email carries the tenant's private link
    /// (`token`), and only that tenant's.
    /// `lang`: the contact's locale as kept (`de-AT`), the language its emails are in.
    Contact {
        campaign: String,
        tenant: String,
        email: String,
        name: Option<String>,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
    },
    /// An email address (`List-Unsubscribe` or a reply-to may be added by the message's
    /// body, see [`Notice::body`]); `lang`: the language its emails are in (a subscriber's,
    /// the page's when it subscribed).
    Address {
        email: String,
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
    },
    /// Every configured operator webhook.
    Operators,
    /// One subscriber webhook.
    Webhook { url: String },
}

impl Recipient {
    pub fn kind(&self) -> RecipientKind {
        match self {
            Recipient::Contact { .. } => RecipientKind::Contact,
            Recipient::Address { .. } => RecipientKind::Address,
            Recipient::Operators => RecipientKind::Operators,
            Recipient::Webhook { .. } => RecipientKind::Webhook,
        }
    }

    /// The email address or URL (empty for `Operators`).
    fn address(&self) -> &str {
        match self {
            Recipient::Contact { email, .. } | Recipient::Address { email, .. } => email,
            Recipient::Webhook { url } => url,
            Recipient::Operators => "",
        }
    }
}

/// One message to enqueue: what happened (`event` and its facts in `body`), to whom, and
/// the idempotency key that makes enqueuing it twice a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Unique per message: a second notice with the same key is not added. Keys name
    /// the change and the recipient, e.g. `incident:ID:UPDATE:contact:EMAIL`.
    pub key: String,
    pub event: NoticeEvent,
    pub to: Recipient,
    /// The facts the message is written from, as of the change (JSON object). Optional
    /// keys the notifier honours: `list_unsubscribe` (a URL, added as
    /// `List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
    /// The recipient's `token` and `lang` are added to it when enqueued.
    pub body: serde_json::Value,
}

impl Notice {
    /// `event` to each of the operators' email addresses (`[notify] operator_emails`), in
    /// English like every operator message; keys `KEY:email:ADDRESS`.
    pub fn to_operator_emails(
        key: &str,
        event: NoticeEvent,
        emails: &[String],
        body: &serde_json::Value,
    ) -> Vec<Notice> {
        emails
            .iter()
            .map(|email| Notice {
                key: format!("{key}:email:{email}"),
                event,
                to: Recipient::Address {
                    email: email.clone(),
                    name: None,
                    lang: None,
                },
                body: body.clone(),
            })
            .collect()
    }
}

/// One delivery in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub key: String,
    pub event: NoticeEvent,
    pub recipient: RecipientKind,
    /// The email address or the webhook URL.
    pub address: String,
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub campaign: Option<String>,
    pub body: serde_json::Value,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_at_us: i64,
    pub created_at: String,
    pub sent_at: Option<String>,
    /// For an `operator` delivery: the `operators` notice it was copied from.
    pub parent: Option<String>,
}

const COLUMNS: &str = "id, key, event, recipient, address, name, tenant, campaign, body, state, \
     attempts, last_error, next_at_us, created_at, sent_at, parent";

fn delivery(r: &Row) -> Result<Delivery> {
    let id = r.text(0)?;
    let body = serde_json::from_str(&r.text(8)?)
        .map_err(|e| Error::source(format!("control store: the body of notification {id}: {e}")))?;
    Ok(Delivery {
        key: r.text(1)?,
        event: r.word(2)?,
        recipient: r.word(3)?,
        address: r.text(4)?,
        name: r.opt_text(5)?,
        tenant: r.opt_text(6)?,
        campaign: r.opt_text(7)?,
        body,
        state: r.word(9)?,
        attempts: r.int(10)?,
        last_error: r.opt_text(11)?,
        next_at_us: r.int(12)?,
        created_at: r.text(13)?,
        sent_at: r.opt_text(14)?,
        parent: r.opt_text(15)?,
        id,
    })
}

/// Write `notices` to the outbox inside the caller's transaction (the change's own), due
/// now. A notice whose key is already there is skipped. Returns how many were added.
pub(crate) fn enqueue(db: &mut Db, notices: &[Notice]) -> Result<usize> {
    let (now_us, at) = now();
    let mut added = 0;
    for (position, notice) in notices.iter().enumerate() {
        let (tenant, campaign, name) = match &notice.to {
            Recipient::Contact {
                campaign,
                tenant,
                name,
                ..
            } => (Some(tenant.as_str()), Some(campaign.as_str()), name.clone()),
            Recipient::Address { name, .. } => (None, None, name.clone()),
            _ => (None, None, None),
        };
        let mut body = notice.body.clone();
        if let Some(object) = body.as_object_mut() {
            if let Recipient::Contact { token, .. } = &notice.to {
                object.insert("token".into(), token.as_str().into());
            }
            // The language the email is written in, as the recipient's locale says.
            if let Recipient::Contact {
                lang: Some(lang), ..
            }
            | Recipient::Address {
                lang: Some(lang), ..
            } = &notice.to
            {
                object.insert("lang".into(), lang.as_str().into());
            }
        }
        added += db.execute(
            "INSERT INTO outbox (id, key, event, recipient, address, name, tenant, campaign,
                 body, state, attempts, next_at_us, created_at, created_at_us, position)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, ?10, ?11, ?10, ?12)
             ON CONFLICT (key) DO NOTHING",
            &[
                new_id()?.into(),
                notice.key.as_str().into(),
                notice.event.as_str().into(),
                notice.to.kind().as_str().into(),
                notice.to.address().into(),
                name.into(),
                tenant.into(),
                campaign.into(),
                body.to_string().into(),
                Val::Int(now_us),
                at.as_str().into(),
                Val::Int(position as i64),
            ],
        )? as usize;
    }
    Ok(added)
}

/// A contact of a campaign tenant, with the tenant's link token: who a tenant's notices
/// go to.
pub(crate) struct TenantContact {
    pub campaign: String,
    pub tenant: String,
    pub email: String,
    pub name: Option<String>,
    pub token: String,
    /// The contact's locale as kept (`de-AT`), if any.
    pub locale: Option<String>,
}

/// The contacts kept with `campaign` (all its tenants, or only `tenant`) and each tenant's
/// token, read inside the caller's transaction; one address per tenant once (with a locale
/// it was given, if any).
pub(crate) fn tenant_contacts(
    db: &mut Db,
    campaign: &str,
    tenant: Option<&str>,
) -> Result<Vec<TenantContact>> {
    let rows = db.query(
        "SELECT c.campaign, c.tenant, c.email, MIN(c.name), t.token, MIN(c.locale)
         FROM campaign_contacts c
         JOIN campaign_tenants t ON t.campaign = c.campaign AND t.tenant = c.tenant
         WHERE c.campaign = ?1 AND (CAST(?2 AS TEXT) IS NULL OR c.tenant = ?2)
         GROUP BY c.campaign, c.tenant, c.email, t.token
         ORDER BY c.tenant, c.email",
        &[campaign.into(), tenant.into()],
    )?;
    rows.iter()
        .map(|r| {
            Ok(TenantContact {
                campaign: r.text(0)?,
                tenant: r.text(1)?,
                email: r.text(2)?,
                name: r.opt_text(3)?,
                token: r.text(4)?,
                locale: r.opt_text(5)?.filter(|l| !l.trim().is_empty()),
            })
        })
        .collect()
}

impl TenantContact {
    pub(crate) fn recipient(&self) -> Recipient {
        Recipient::Contact {
            campaign: self.campaign.clone(),
            tenant: self.tenant.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            token: self.token.clone(),
            lang: self.locale.clone(),
        }
    }
}

/// How the notifier claims and retries (`[notify]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimPolicy {
    /// How long a claim holds: a delivery still `sending` after it is claimable again.
    pub lease_us: i64,
    /// At most this many deliveries per claim.
    pub batch: u32,
    /// Claim emails too (false: a notifier without a mail server leaves them waiting).
    pub email: bool,
}

impl ControlStore {
    /// Enqueue `notices` in a transaction of their own: for a message that is itself the
    /// change (a reply, a confirmation). Returns how many were added.
    pub fn enqueue(&mut self, notices: &[Notice]) -> Result<usize> {
        self.db.transaction(|db| enqueue(db, notices))
    }

    /// Append an audit entry and enqueue `notices` in one transaction: a change that is
    /// only recorded (a live drill's run) and the messages it sends commit together.
    pub fn append_with_notices(
        &mut self,
        entry: crate::Entry,
        notices: &[Notice],
    ) -> Result<usize> {
        self.db.transaction(|db| {
            crate::audit::write_audited(db, std::slice::from_ref(&entry))?;
            enqueue(db, notices)
        })
    }

    /// Copy every pending `operators` notice into one `operator` delivery per URL in
    /// `endpoints` (keys `KEY>URL`), and mark it `expanded`. With no endpoint the notice
    /// is expanded into nothing. Returns the deliveries added.
    pub fn expand_operator_notices(&mut self, endpoints: &[String]) -> Result<usize> {
        let waiting = self.db.query_one(
            "SELECT 1 FROM outbox WHERE recipient = 'operators' AND state = 'pending' LIMIT 1",
            &[],
        )?;
        if waiting.is_none() {
            return Ok(0);
        }
        self.db.transaction(|db| {
            let skip = db.skip_locked();
            let parents: Vec<Delivery> = db
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM outbox
                         WHERE recipient = 'operators' AND state = 'pending'
                         ORDER BY created_at_us, position, id{skip}"
                    ),
                    &[],
                )?
                .iter()
                .map(delivery)
                .collect::<Result<_>>()?;
            let (now_us, at) = now();
            let mut added = 0;
            let mut position = 0i64;
            for parent in &parents {
                for url in endpoints {
                    position += 1;
                    added += db.execute(
                        "INSERT INTO outbox (id, key, event, recipient, address, body, state,
                             attempts, next_at_us, created_at, created_at_us, position, parent)
                         VALUES (?1, ?2, ?3, 'operator', ?4, ?5, 'pending', 0, ?6, ?7, ?6, ?9,
                             ?8)
                         ON CONFLICT (key) DO NOTHING",
                        &[
                            new_id()?.into(),
                            format!("{}>{url}", parent.key).into(),
                            parent.event.as_str().into(),
                            url.into(),
                            parent.body.to_string().into(),
                            Val::Int(now_us),
                            at.as_str().into(),
                            parent.id.as_str().into(),
                            Val::Int(position),
                        ],
                    )? as usize;
                }
                db.execute(
                    "UPDATE outbox SET state = 'expanded', sent_at = ?2 WHERE id = ?1",
                    &[parent.id.as_str().into(), at.as_str().into()],
                )?;
            }
            Ok(added)
        })
    }

    /// Claim up to `policy.batch` due deliveries for `notifier`: pending ones whose time
    /// has come, and ones still `sending` whose claim ran out (their notifier stopped
    /// mid-send). On PostgreSQL the rows are taken `FOR UPDATE SKIP LOCKED`, so several
    /// notifiers claim different deliveries; on SQLite the claim is one write
    /// transaction. Each claimed delivery counts one more attempt.
    pub fn claim_deliveries(
        &mut self,
        notifier: &str,
        policy: ClaimPolicy,
    ) -> Result<Vec<Delivery>> {
        let (now_us, _) = now();
        let due = if policy.email {
            "((state = 'pending' AND next_at_us <= ?1) \
             OR (state = 'sending' AND claim_until_us < ?1)) \
             AND recipient <> 'operators'"
        } else {
            "((state = 'pending' AND next_at_us <= ?1) \
             OR (state = 'sending' AND claim_until_us < ?1)) \
             AND recipient IN ('operator', 'webhook')"
        };
        let any = self.db.query_one(
            &format!("SELECT 1 FROM outbox WHERE {due} LIMIT 1"),
            &[Val::Int(now_us)],
        )?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        self.db.transaction(|db| {
            let skip = db.skip_locked();
            let mut claimed: Vec<Delivery> = db
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM outbox WHERE {due}
                         ORDER BY next_at_us, created_at_us, position, id LIMIT ?2{skip}"
                    ),
                    &[Val::Int(now_us), Val::Int(i64::from(policy.batch.max(1)))],
                )?
                .iter()
                .map(delivery)
                .collect::<Result<_>>()?;
            for d in &mut claimed {
                db.execute(
                    "UPDATE outbox SET state = 'sending', claimed_by = ?2, claim_until_us = ?3,
                         attempts = attempts + 1
                     WHERE id = ?1",
                    &[
                        d.id.as_str().into(),
                        notifier.into(),
                        Val::Int(now_us + policy.lease_us),
                    ],
                )?;
                d.state = DeliveryState::Sending;
                d.attempts += 1;
            }
            Ok(claimed)
        })
    }

    /// Record that `notifier` delivered `id`. False when the delivery is no longer its
    /// claim (it ran out and another notifier took it).
    pub fn delivered(&mut self, notifier: &str, id: &str) -> Result<bool> {
        let (_, at) = now();
        let n = self.db.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?3, last_error = NULL,
                 claimed_by = NULL, claim_until_us = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND state = 'sending'",
            &[id.into(), notifier.into(), at.as_str().into()],
        )?;
        Ok(n == 1)
    }

    /// Give back a claimed delivery that `notifier` did not try (it is stopping): pending
    /// now, its claim's attempt not counted. False when it is no longer its claim.
    pub fn release_delivery(&mut self, notifier: &str, id: &str) -> Result<bool> {
        let n = self.db.execute(
            "UPDATE outbox SET state = 'pending', attempts = attempts - 1,
                 claimed_by = NULL, claim_until_us = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND state = 'sending'",
            &[id.into(), notifier.into()],
        )?;
        Ok(n == 1)
    }

    /// Record a failed attempt of `id` with its error: pending again at `retry_at_us`,
    /// or `dead` when `dead` (its attempts are used up). False when the delivery is no
    /// longer `notifier`'s claim.
    pub fn delivery_failed(
        &mut self,
        notifier: &str,
        id: &str,
        error: &str,
        retry_at_us: i64,
        dead: bool,
    ) -> Result<bool> {
        let state = if dead {
            DeliveryState::Dead
        } else {
            DeliveryState::Pending
        };
        let n = self.db.execute(
            "UPDATE outbox SET state = ?3, last_error = ?4, next_at_us = ?5,
                 claimed_by = NULL, claim_until_us = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND state = 'sending'",
            &[
                id.into(),
                notifier.into(),
                state.as_str().into(),
                error.into(),
                Val::Int(retry_at_us),
            ],
        )?;
        Ok(n == 1)
    }

    /// Every delivery (only `dead` ones with `failed_only`), oldest first, `operators`
    /// notices left out once expanded.
    pub fn deliveries(&mut self, failed_only: bool) -> Result<Vec<Delivery>> {
        let filter = if failed_only {
            "WHERE state = 'dead'"
        } else {
            "WHERE state <> 'expanded'"
        };
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM outbox {filter} ORDER BY created_at_us, position, id"
                ),
                &[],
            )?
            .iter()
            .map(delivery)
            .collect()
    }

    /// Every delivery about incident `id`, oldest first, `operators` notices included:
    /// its updates (to operators, contacts and subscribers), its overdue-update alarms, and
    /// the stage messages of its campaigns' tenants.
    pub fn incident_deliveries(&mut self, id: &str) -> Result<Vec<Delivery>> {
        let campaigns: Vec<String> = self
            .db
            .query("SELECT id FROM campaigns WHERE incident = ?1", &[id.into()])?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_>>()?;
        let all: Vec<Delivery> = self
            .db
            .query(
                &format!("SELECT {COLUMNS} FROM outbox ORDER BY created_at_us, position, id"),
                &[],
            )?
            .iter()
            .map(delivery)
            .collect::<Result<_>>()?;
        Ok(all
            .into_iter()
            .filter(|d| {
                let b = &d.body;
                b["incident"]["id"].as_str() == Some(id)
                    || b["incident"].as_str() == Some(id)
                    || b["update_overdue"]["incident_id"].as_str() == Some(id)
                    || d.campaign.as_ref().is_some_and(|c| campaigns.contains(c))
            })
            .collect())
    }

    /// One delivery by id.
    pub fn delivery(&mut self, id: &str) -> Result<Option<Delivery>> {
        self.db
            .query_one(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                &[id.into()],
            )?
            .as_ref()
            .map(delivery)
            .transpose()
    }

    /// Send a dead delivery again: pending now, its attempts counted afresh, audited
    /// (`notification-retry` of `notification:ID`, by `actor`). An unknown id, or one
    /// that is not dead, is a usage error.
    pub fn retry_delivery(&mut self, id: &str, actor: &str) -> Result<()> {
        let Some(d) = self.delivery(id)? else {
            return Err(Error::usage(format!(
                "unknown notification {id}: `lifeboat notifications --failed`"
            )));
        };
        if d.state != DeliveryState::Dead {
            return Err(Error::usage(format!(
                "notification {id} is {}, not dead: only a dead one is retried",
                d.state
            )));
        }
        let (now_us, _) = now();
        let entry = crate::audit::Entry::new(
            actor,
            "notification-retry",
            &format!("notification:{id}"),
            serde_json::json!({"event": d.event, "attempts": d.attempts,
                "last_error": d.last_error}),
        );
        self.db.transaction(|db| {
            db.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_at_us = ?2
                 WHERE id = ?1 AND state = 'dead'",
                &[id.into(), Val::Int(now_us)],
            )?;
            crate::audit::write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })
    }
}

/// Enqueue `event` about one campaign tenant to each of its contacts, inside the change's
/// transaction, with `body` (the stage's facts) and the campaign's restore point.
pub(crate) fn tenant_notices(
    db: &mut Db,
    campaign: &str,
    tenant: &str,
    event: NoticeEvent,
    mut body: serde_json::Value,
    change: &str,
) -> Result<usize> {
    let contacts = tenant_contacts(db, campaign, Some(tenant))?;
    if contacts.is_empty() {
        return Ok(0);
    }
    let facts = db.query_one(
        "SELECT c.incident, c.target_time, i.name FROM campaigns c
         LEFT JOIN incidents i ON i.id = c.incident WHERE c.id = ?1",
        &[campaign.into()],
    )?;
    if let (Some(facts), Some(object)) = (facts, body.as_object_mut()) {
        object.insert("incident".into(), facts.text(0)?.into());
        object.insert("restored_to".into(), facts.text(1)?.into());
        object.insert("incident_name".into(), facts.opt_text(2)?.into());
    }
    let notices: Vec<Notice> = contacts
        .iter()
        .map(|c| Notice {
            key: format!(
                "stage:{campaign}:{tenant}:{}:{change}:{}",
                event.as_str(),
                c.email
            ),
            event,
            to: c.recipient(),
            body: body.clone(),
        })
        .collect();
    enqueue(db, &notices)
}

/// A tenant's place in its campaign's queue: the unfinished tenants ranked before it,
/// itself included.
pub(crate) fn queue_place(db: &mut Db, campaign: &str, tenant: &str) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM campaign_tenants
             WHERE campaign = ?1 AND stage IN ('queued', 'restoring', 'verifying')
               AND rank <= (SELECT rank FROM campaign_tenants WHERE campaign = ?1 AND tenant = ?2)",
            &[campaign.into(), tenant.into()],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0))
}

impl ControlStore {
    /// Enqueue an acceptance reminder for every tenant that has awaited acceptance for
    /// `after_us` or longer and got no reminder since it began to wait: one per contact
    /// (key `stage:CAMPAIGN:TENANT:acceptance_reminder:since-SINCE:EMAIL`, SINCE when
    /// it began to wait). Returns the messages added.
    pub fn enqueue_reminders(&mut self, after_us: i64) -> Result<usize> {
        let (now_us, _) = now();
        let due_sql = "SELECT t.campaign, t.tenant, t.awaiting_since_us FROM campaign_tenants t
             WHERE t.stage = 'awaiting_acceptance' AND t.awaiting_since_us <= ?1
               AND EXISTS (SELECT 1 FROM campaign_contacts c
                           WHERE c.campaign = t.campaign AND c.tenant = t.tenant)
               AND NOT EXISTS (SELECT 1 FROM outbox o
                   WHERE o.event = 'acceptance_reminder' AND o.campaign = t.campaign
                     AND o.tenant = t.tenant AND o.created_at_us >= t.awaiting_since_us)
             ORDER BY t.campaign, t.rank";
        let cutoff = [Val::Int(now_us - after_us)];
        if self.db.query_one(due_sql, &cutoff)?.is_none() {
            return Ok(0);
        }
        self.db.transaction(|db| {
            let due: Vec<(String, String, i64)> = db
                .query(due_sql, &cutoff)?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)))
                .collect::<Result<_>>()?;
            let mut added = 0;
            for (campaign, tenant, since) in &due {
                let mut body = serde_json::json!({
                    "stage": "awaiting_acceptance",
                    "awaiting_since": lifeboat_core::time::format_us(*since),
                });
                if let Some(phase) = crate::campaigns::phase_notice(db, campaign, tenant)? {
                    body["phase"] = phase;
                }
                added += tenant_notices(
                    db,
                    campaign,
                    tenant,
                    NoticeEvent::AcceptanceReminder,
                    body,
                    &format!("since-{since}"),
                )?;
            }
            Ok(added)
        })
    }
}
