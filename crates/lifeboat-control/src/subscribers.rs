//! Subscribers to incident messages (docs/status.md, "Subscribers"): email addresses that
//! subscribed on the public page with double opt-in, and webhooks (or addresses) that
//! operators added. Only confirmed subscribers hear of incidents; every message to one
//! carries its unsubscribe link.

use lifeboat_core::{Error, Result};

use crate::audit::{write_audited, Entry};
use crate::db::{Db, Row};
use crate::ids::{new_id, new_token};
use crate::outbox::{enqueue, Notice, NoticeEvent, Recipient};
use crate::store::{now, ControlStore};
use crate::words::vocabulary;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscribers (id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    address TEXT NOT NULL, components TEXT NOT NULL, state TEXT NOT NULL,
    confirm_token TEXT UNIQUE, unsubscribe_token TEXT NOT NULL UNIQUE, page_url TEXT NOT NULL,
    created_at TEXT NOT NULL, confirmed_at TEXT, unsubscribed_at TEXT, added_by TEXT,
    secret TEXT, lang TEXT, UNIQUE (kind, address));
";

/// Columns added after the table was first made, each created on the first open of a
/// store made before it (`lang`: the language of the page an address subscribed on).
pub(crate) fn add_columns(db: &mut Db) -> Result<()> {
    db.add_column("subscribers", "secret", "TEXT")?;
    db.add_column("subscribers", "lang", "TEXT")
}

vocabulary! {
    /// How a subscriber is reached.
    pub enum SubscriberKind("subscriber kind") {
        /// By email.
        Email = "email",
        /// By a webhook to its URL.
        Webhook = "webhook",
    }
}

vocabulary! {
    /// Where a subscription stands.
    pub enum SubscriberState("subscriber state") {
        /// Subscribed on the public page, the confirmation link not followed yet: hears
        /// nothing.
        Pending = "pending",
        /// Hears of every incident (of its components, if it chose some).
        Confirmed = "confirmed",
        /// Unsubscribed: hears nothing.
        Unsubscribed = "unsubscribed",
    }
}

/// One subscriber, as operators see it (never on a public page).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subscriber {
    pub id: String,
    pub kind: SubscriberKind,
    /// The email address or the webhook URL.
    pub address: String,
    /// The component ids it hears of; empty: every incident.
    pub components: Vec<String>,
    pub state: SubscriberState,
    pub created_at: String,
    pub confirmed_at: Option<String>,
    pub unsubscribed_at: Option<String>,
    /// The operator who added it; none when it subscribed on the public page.
    pub added_by: Option<String>,
    /// The language of the page it subscribed on (its emails are in it); none: English.
    pub lang: Option<String>,
}

const COLUMNS: &str = "id, kind, address, components, state, created_at, confirmed_at, \
     unsubscribed_at, added_by, lang";

fn subscriber(r: &Row) -> Result<Subscriber> {
    let components = serde_json::from_str(&r.text(3)?)
        .map_err(|e| Error::source(format!("control store: subscriber components: {e}")))?;
    Ok(Subscriber {
        id: r.text(0)?,
        kind: r.word(1)?,
        address: r.text(2)?,
        components,
        state: r.word(4)?,
        created_at: r.text(5)?,
        confirmed_at: r.opt_text(6)?,
        unsubscribed_at: r.opt_text(7)?,
        added_by: r.opt_text(8)?,
        lang: r.opt_text(9)?,
    })
}

/// A simple check of an address: at most 254 characters, one `@`, something before it, a
/// dotted domain after it, no spaces or control characters.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The unsubscribe link of a subscriber, in its language if it has one.
fn unsubscribe_url(page_url: &str, token: &str, lang: Option<&str>) -> String {
    format!(
        "{}/unsubscribe?token={token}{}",
        page_url.trim_end_matches('/'),
        lang_query(lang)
    )
}

/// `&lang=CODE` for a link, or nothing.
fn lang_query(lang: Option<&str>) -> String {
    lang.map(|l| format!("&lang={l}")).unwrap_or_default()
}

/// A language tag as a subscriber's language: letters, digits and `-` only, at most 35
/// characters (BCP 47's longest common form); anything else is no language.
fn language_tag(lang: Option<&str>) -> Option<String> {
    lang.map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && l.len() <= 35
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_string)
}

/// Check `components` against the store's component ids; sorted, without repeats.
fn known_components(db: &mut Db, components: &[String]) -> Result<Vec<String>> {
    let known: Vec<String> = db
        .query("SELECT id FROM components ORDER BY position, id", &[])?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    let mut chosen: Vec<String> = Vec::new();
    for c in components {
        if !known.contains(c) {
            return Err(Error::usage(format!(
                "unknown component {c:?}; components: {}",
                known.join(", ")
            )));
        }
        if !chosen.contains(c) {
            chosen.push(c.clone());
        }
    }
    chosen.sort();
    Ok(chosen)
}

fn components_json(components: &[String]) -> String {
    serde_json::Value::from(components.to_vec()).to_string()
}

/// What a subscription request on the public page did; the page answers the same
/// whichever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// A new or renewed pending subscription: a confirmation was enqueued.
    ConfirmationSent,
    /// Already confirmed: nothing changed, nothing sent.
    AlreadyConfirmed,
}

impl ControlStore {
    /// Subscribe `email` to incidents (of `components`, component ids, or all) from the
    /// public page at `page_url`, in English: `subscribe_in` without a language.
    pub fn subscribe(
        &mut self,
        email: &str,
        components: &[String],
        page_url: &str,
    ) -> Result<Subscribed> {
        self.subscribe_in(email, components, page_url, None)
    }

    /// Subscribe `email` to incidents (of `components`, component ids, or all) from the
    /// public page at `page_url` read in `lang` (a language code, kept: the subscriber's
    /// emails and links are in it): a pending subscriber and, in the same transaction, a
    /// confirmation email with its confirmation and unsubscribe links. A pending or
    /// unsubscribed address gets a fresh confirmation (new tokens, the new language); a
    /// confirmed one is left as it is.
    pub fn subscribe_in(
        &mut self,
        email: &str,
        components: &[String],
        page_url: &str,
        lang: Option<&str>,
    ) -> Result<Subscribed> {
        let lang = language_tag(lang);
        let email = email.trim().to_lowercase();
        if !valid_email(&email) {
            return Err(Error::usage(format!("{email:?} is not an email address")));
        }
        let (_, at) = now();
        self.db.transaction(|db| {
            let components = known_components(db, components)?;
            let confirm = new_token()?;
            let unsubscribe = new_token()?;
            // A new address is inserted; one already there (perhaps by a request a moment
            // ago, on another connection) is read under a row lock and renewed.
            let fresh = new_id()?;
            let inserted = db.execute(
                "INSERT INTO subscribers (id, kind, address, components, state,
                     confirm_token, unsubscribe_token, page_url, created_at, lang)
                 VALUES (?1, 'email', ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, address) DO NOTHING",
                &[
                    fresh.as_str().into(),
                    email.as_str().into(),
                    components_json(&components).into(),
                    confirm.as_str().into(),
                    unsubscribe.as_str().into(),
                    page_url.into(),
                    at.as_str().into(),
                    lang.clone().into(),
                ],
            )?;
            let id = if inserted == 1 {
                fresh
            } else {
                let lock = db.lock();
                let existing = db
                    .query_one(
                        &format!(
                            "SELECT id, state FROM subscribers
                             WHERE kind = 'email' AND address = ?1{lock}"
                        ),
                        &[email.as_str().into()],
                    )?
                    .ok_or_else(|| Error::source("control store: a subscriber vanished"))?;
                if existing.word::<SubscriberState>(1)? == SubscriberState::Confirmed {
                    return Ok(Subscribed::AlreadyConfirmed);
                }
                let id = existing.text(0)?;
                db.execute(
                    "UPDATE subscribers SET state = 'pending', components = ?2,
                         confirm_token = ?3, unsubscribe_token = ?4, page_url = ?5,
                         unsubscribed_at = NULL, lang = ?6
                     WHERE id = ?1",
                    &[
                        id.as_str().into(),
                        components_json(&components).into(),
                        confirm.as_str().into(),
                        unsubscribe.as_str().into(),
                        page_url.into(),
                        lang.clone().into(),
                    ],
                )?;
                id
            };
            let page = page_url.trim_end_matches('/');
            enqueue(
                db,
                &[Notice {
                    key: format!("subscribe:{id}:{confirm}"),
                    event: NoticeEvent::SubscriptionConfirmation,
                    to: Recipient::Address {
                        email: email.clone(),
                        name: None,
                        lang: lang.clone(),
                    },
                    body: serde_json::json!({
                        "confirm_url": format!(
                            "{page}/subscribe/confirm?token={confirm}{}",
                            lang_query(lang.as_deref())
                        ),
                        "list_unsubscribe": unsubscribe_url(page, &unsubscribe, lang.as_deref()),
                        "components": components,
                    }),
                }],
            )?;
            Ok(Subscribed::ConfirmationSent)
        })
    }

    /// Confirm the pending subscription whose confirmation token is `token`. False for an
    /// unknown token (or one already used).
    pub fn confirm_subscription(&mut self, token: &str) -> Result<bool> {
        let (_, at) = now();
        let n = self.db.execute(
            "UPDATE subscribers SET state = 'confirmed', confirmed_at = ?2, confirm_token = NULL
             WHERE confirm_token = ?1 AND state = 'pending'",
            &[token.into(), at.as_str().into()],
        )?;
        Ok(n == 1)
    }

    /// Whether `token` is a subscriber's unsubscribe token (still subscribed or not).
    pub fn unsubscribe_token_known(&mut self, token: &str) -> Result<bool> {
        Ok(self
            .db
            .query_one(
                "SELECT 1 FROM subscribers WHERE unsubscribe_token = ?1",
                &[token.into()],
            )?
            .is_some())
    }

    /// Unsubscribe the subscriber whose unsubscribe token is `token`: it hears nothing
    /// more. False for an unknown token; unsubscribing twice is no error.
    pub fn unsubscribe(&mut self, token: &str) -> Result<bool> {
        if !self.unsubscribe_token_known(token)? {
            return Ok(false);
        }
        let (_, at) = now();
        self.db.execute(
            "UPDATE subscribers SET state = 'unsubscribed', unsubscribed_at = ?2,
                 confirm_token = NULL
             WHERE unsubscribe_token = ?1 AND state <> 'unsubscribed'",
            &[token.into(), at.as_str().into()],
        )?;
        Ok(true)
    }

    /// Add a confirmed subscriber as an operator (`actor`): a webhook URL or an email
    /// address, hearing of `components` (component ids; empty: all), its unsubscribe link
    /// under `page_url`. A webhook gets a random secret its deliveries are signed with
    /// (`subscriber_secret`). Audited (`subscriber-add` of `subscriber:ID`, never the
    /// secret). An address or URL already subscribed is a usage error naming its id.
    pub fn add_subscriber(
        &mut self,
        kind: SubscriberKind,
        address: &str,
        components: &[String],
        page_url: &str,
        actor: &str,
    ) -> Result<String> {
        let address = match kind {
            SubscriberKind::Email => {
                let email = address.trim().to_lowercase();
                if !valid_email(&email) {
                    return Err(Error::usage(format!("{email:?} is not an email address")));
                }
                email
            }
            SubscriberKind::Webhook => {
                let url = address.trim().to_string();
                if !(url.starts_with("https://") || url.starts_with("http://"))
                    || url.len() > 2048
                    || url.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Error::usage(format!(
                        "{url:?} is not a webhook URL: use http:// or https://"
                    )));
                }
                url
            }
        };
        let (_, at) = now();
        let id = new_id()?;
        let secret = match kind {
            SubscriberKind::Webhook => Some(new_token()?),
            SubscriberKind::Email => None,
        };
        self.db.transaction(|db| {
            let components = known_components(db, components)?;
            if let Some(r) = db.query_one(
                "SELECT id, state FROM subscribers WHERE kind = ?1 AND address = ?2",
                &[kind.as_str().into(), address.as_str().into()],
            )? {
                if r.word::<SubscriberState>(1)? != SubscriberState::Unsubscribed {
                    return Err(Error::usage(format!(
                        "{address} is already subscriber {}",
                        r.text(0)?
                    )));
                }
                db.execute(
                    "DELETE FROM subscribers WHERE id = ?1",
                    &[r.text(0)?.into()],
                )?;
            }
            db.execute(
                "INSERT INTO subscribers (id, kind, address, components, state,
                     unsubscribe_token, page_url, created_at, confirmed_at, added_by, secret)
                 VALUES (?1, ?2, ?3, ?4, 'confirmed', ?5, ?6, ?7, ?7, ?8, ?9)",
                &[
                    id.as_str().into(),
                    kind.as_str().into(),
                    address.as_str().into(),
                    components_json(&components).into(),
                    new_token()?.into(),
                    page_url.into(),
                    at.as_str().into(),
                    actor.into(),
                    secret.clone().into(),
                ],
            )?;
            let entry = Entry::new(
                actor,
                "subscriber-add",
                &format!("subscriber:{id}"),
                serde_json::json!({"kind": kind, "address": address, "components": components}),
            );
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The secret a webhook subscriber's deliveries are signed with (an operator is shown
    /// it once, when adding it); none for an email subscriber or an unknown id.
    pub fn subscriber_secret(&mut self, id: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .query_one("SELECT secret FROM subscribers WHERE id = ?1", &[id.into()])?
            .map(|r| r.opt_text(0))
            .transpose()?
            .flatten())
    }

    /// The secret of the confirmed webhook subscriber at `url`, if there is one.
    pub fn webhook_subscriber_secret(&mut self, url: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .query_one(
                "SELECT secret FROM subscribers
                 WHERE kind = 'webhook' AND address = ?1 AND state = 'confirmed'",
                &[url.into()],
            )?
            .map(|r| r.opt_text(0))
            .transpose()?
            .flatten())
    }

    /// Remove subscriber `id` as `actor`, audited (`subscriber-remove`). An unknown id is a
    /// usage error.
    pub fn remove_subscriber(&mut self, id: &str, actor: &str) -> Result<()> {
        self.db.transaction(|db| {
            let Some(found) = db.query_one(
                &format!("SELECT {COLUMNS} FROM subscribers WHERE id = ?1"),
                &[id.into()],
            )?
            else {
                return Err(Error::usage(format!(
                    "unknown subscriber {id}: `lifeboat subscribers list`"
                )));
            };
            let s = subscriber(&found)?;
            db.execute("DELETE FROM subscribers WHERE id = ?1", &[id.into()])?;
            let entry = Entry::new(
                actor,
                "subscriber-remove",
                &format!("subscriber:{id}"),
                serde_json::json!({"kind": s.kind, "address": s.address, "state": s.state}),
            );
            write_audited(db, std::slice::from_ref(&entry))?;
            Ok(())
        })
    }

    /// Every subscriber, oldest first.
    pub fn subscribers(&mut self) -> Result<Vec<Subscriber>> {
        self.db
            .query(
                &format!("SELECT {COLUMNS} FROM subscribers ORDER BY created_at, id"),
                &[],
            )?
            .iter()
            .map(subscriber)
            .collect()
    }
}

/// The notices an incident change sends its confirmed subscribers, inside its
/// transaction: one per subscriber that hears of every incident or of one of the
/// incident's components. Emails carry `list_unsubscribe`; webhooks carry `unsubscribe`.
pub(crate) fn subscriber_notices(
    db: &mut Db,
    incident: &serde_json::Value,
    incident_id: &str,
    update: &str,
    event: NoticeEvent,
    summary: &serde_json::Value,
) -> Result<Vec<Notice>> {
    let components: Vec<String> = db
        .query(
            "SELECT component FROM incident_components WHERE incident = ?1",
            &[incident_id.into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    let rows = db.query(
        "SELECT id, kind, address, components, unsubscribe_token, page_url, lang FROM subscribers
         WHERE state = 'confirmed' ORDER BY created_at, id",
        &[],
    )?;
    let mut notices = Vec::new();
    for r in &rows {
        let id = r.text(0)?;
        let chosen: Vec<String> = serde_json::from_str(&r.text(3)?)
            .map_err(|e| Error::source(format!("control store: subscriber {id}: {e}")))?;
        if !chosen.is_empty() && !chosen.iter().any(|c| components.contains(c)) {
            continue;
        }
        let lang = language_tag(r.opt_text(6)?.as_deref());
        let unsubscribe = unsubscribe_url(&r.text(5)?, &r.text(4)?, lang.as_deref());
        let (to, body) = match r.word::<SubscriberKind>(1)? {
            SubscriberKind::Email => {
                let mut body = summary.clone();
                body["list_unsubscribe"] = unsubscribe.into();
                (
                    Recipient::Address {
                        email: r.text(2)?,
                        name: None,
                        lang,
                    },
                    body,
                )
            }
            SubscriberKind::Webhook => (
                Recipient::Webhook { url: r.text(2)? },
                serde_json::json!({"incident": incident, "update": update,
                    "unsubscribe": unsubscribe}),
            ),
        };
        notices.push(Notice {
            key: format!("incident:{incident_id}:{update}:subscriber:{id}"),
            event,
            to,
            body,
        });
    }
    Ok(notices)
}
