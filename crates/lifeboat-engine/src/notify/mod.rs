//! The notifier: delivers the control store's outbox (docs/status.md, "Notifications").
//! Each pass first moves scheduled maintenances whose start or end has come (those that
//! start and complete by themselves), writes the acceptance reminders that are due and the
//! alarms of incidents whose promised public update is overdue (`[status] update_every`),
//! copies operator notices to
//! each configured webhook, claims a batch of due deliveries under a lease, sends each
//! one and records the outcome: sent, or a failed attempt retried after a jittered,
//! capped, growing delay, or dead after `[notify] max_attempts`. A delivery is recorded
//! sent only after the mail server or the webhook accepted it; a notifier that dies in
//! between leaves it claimed, and it is sent again, with the same id, when the claim runs
//! out.

pub mod mail;
pub mod text;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;

use lifeboat_control::{ClaimPolicy, ControlStore, Delivery, RecipientKind};
use lifeboat_core::config::{Config, StatusConfig};
use lifeboat_core::{Error, Result};
use lifeboat_source::Stop;
use lifeboat_web::PageInfo;

use mail::Mailer;

/// Deliveries claimed at once.
const BATCH: u32 = 16;
/// The delay before a delivery's second attempt; it doubles with each one after.
const FIRST_DELAY: Duration = Duration::from_secs(10);
/// How long an idle notifier waits before it looks at the outbox again.
const IDLE: Duration = Duration::from_millis(500);

/// What a notifier did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub sent: usize,
    pub failed_attempts: usize,
    pub dead: usize,
}

/// Where and how the outbox is delivered, from the configuration.
pub struct Notifier {
    name: String,
    mailer: Option<Mailer>,
    webhooks: Vec<(String, Vec<u8>)>,
    client: reqwest::Client,
    page: PageInfo,
    max_attempts: u32,
    claim_us: i64,
    max_delay: Duration,
    remind_after_us: Option<i64>,
    /// `[status]`: the promised update cadence, watched for the overdue-update alarm.
    status: StatusConfig,
    operator_emails: Vec<String>,
    /// For anchoring the audit entries of automatic maintenance moves.
    config: Config,
}

/// A notifier's default name: host and process id (a restarted notifier is a new one).
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!("{host}:{}", std::process::id())
}

/// The page's public address for links: `[server] public_url`, else `http://` and
/// `[server] listen`.
pub fn page_url(config: &Config) -> String {
    config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen))
}

impl Notifier {
    /// A notifier as `[notify]` configures it (SMTP, or no email without it), with its
    /// webhook secrets read. `mail_dir`: write emails into this directory instead of
    /// sending them (the drill).
    pub fn from_config(config: &Config, name: &str, mail_dir: Option<&Path>) -> Result<Notifier> {
        lifeboat_core::pg::install_crypto_provider();
        let notify = &config.notify;
        let mailer = match (mail_dir, &notify.smtp) {
            (Some(dir), _) => Some(Mailer::directory(dir, notify.smtp.as_ref())?),
            (None, Some(smtp)) => Some(Mailer::smtp(smtp)?),
            (None, None) => None,
        };
        let mut webhooks = Vec::new();
        for hook in &notify.webhooks {
            let secret = std::fs::read_to_string(&hook.secret_file).map_err(|e| {
                Error::config(format!(
                    "[[notify.webhooks]] secret_file {}: {e}",
                    hook.secret_file.display()
                ))
            })?;
            let secret = secret.trim_end_matches(['\n', '\r']).to_string();
            if secret.is_empty() {
                return Err(Error::config(format!(
                    "[[notify.webhooks]] secret_file {} is empty",
                    hook.secret_file.display()
                )));
            }
            webhooks.push((hook.url.clone(), secret.into_bytes()));
        }
        Ok(Notifier {
            name: name.to_string(),
            mailer,
            webhooks,
            client: webhook::client()?,
            page: PageInfo::new(&config.server.page_name, &page_url(config))
                .with_update_every(config.status.clone()),
            max_attempts: notify.max_attempts,
            claim_us: (notify.claim_seconds as i64).saturating_mul(1_000_000),
            max_delay: Duration::from_secs(notify.max_delay_seconds),
            remind_after_us: notify
                .remind_after_minutes
                .map(|m| (m as i64).saturating_mul(60_000_000)),
            status: config.status.clone(),
            operator_emails: notify.operator_emails.clone(),
            config: config.clone(),
        })
    }

    /// The wait after the `attempt`-th failed attempt: 10 s, doubling, plus a random part
    /// up to as much again, never more than `max_delay_seconds`.
    pub fn delay(&self, attempt: i64) -> Duration {
        let mut delays = ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(self.max_delay)
            .without_max_times()
            .build();
        let n = usize::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(64);
        delays.nth(n).unwrap_or(self.max_delay).min(self.max_delay)
    }

    /// One pass over the outbox: due maintenance moves, reminders, overdue-update alarms,
    /// operator copies, then
    /// one claimed batch sent. Returns what it did and whether it found work.
    pub async fn pass(&self, control: &mut ControlStore, stop: &Stop) -> Result<(Delivered, bool)> {
        self.move_maintenances(control).await?;
        if let Some(after) = self.remind_after_us {
            control.enqueue_reminders(after)?;
        }
        if self.status.update_every.is_some() {
            let every_us = |impact: lifeboat_control::Impact| {
                self.status
                    .update_every(impact.as_str())
                    .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            };
            control.enqueue_silence_alarms(&every_us, &self.operator_emails)?;
        }
        let urls: Vec<String> = self.webhooks.iter().map(|(u, _)| u.clone()).collect();
        control.expand_operator_notices(&urls)?;
        let policy = ClaimPolicy {
            lease_us: self.claim_us,
            batch: BATCH,
            email: self.mailer.is_some(),
        };
        let batch = control.claim_deliveries(&self.name, policy)?;
        let mut done = Delivered::default();
        if batch.is_empty() {
            return Ok((done, false));
        }
        let mut context = None;
        for delivery in &batch {
            if stop.is_set() {
                // Stopping: what was claimed and not tried goes back, due now.
                control.release_delivery(&self.name, &delivery.id)?;
                continue;
            }
            match self.send(control, delivery, &mut context).await {
                Ok(()) => {
                    // The message is out; a crash here sends it again after the claim.
                    lifeboat_core::failpoint::hit("notifier.after-send");
                    if control.delivered(&self.name, &delivery.id)? {
                        done.sent += 1;
                    }
                }
                Err(error) => {
                    let dead = delivery.attempts >= i64::from(self.max_attempts);
                    let retry_at = lifeboat_core::time::now_us()
                        + self.delay(delivery.attempts).as_micros() as i64;
                    tracing::warn!(
                        "notification {} ({} to {}), attempt {}: {error}{}",
                        delivery.id,
                        delivery.event,
                        delivery.address,
                        delivery.attempts,
                        if dead { "; marked dead" } else { "" }
                    );
                    if control.delivery_failed(&self.name, &delivery.id, &error, retry_at, dead)? {
                        done.failed_attempts += 1;
                        done.dead += usize::from(dead);
                    }
                }
            }
        }
        Ok((done, true))
    }

    /// Start and complete the scheduled maintenances whose times have come (docs/status.md,
    /// "Scheduled maintenance"), then anchor their audit entries in the vault (a failure
    /// to anchor is logged: the next anchoring takes them).
    async fn move_maintenances(&self, control: &mut ControlStore) -> Result<()> {
        let moved = control.run_scheduled_maintenances()?;
        if moved.is_empty() {
            return Ok(());
        }
        for (id, status) in &moved {
            tracing::info!("maintenance {id}: {status} at its scheduled time");
        }
        let anchored = async {
            let vault = crate::context::open_vault(&self.config).await?;
            crate::guard::anchor_pending(control, &vault).await
        };
        if let Err(e) = anchored.await {
            tracing::warn!("notifier: anchoring audit entries: {e}");
        }
        Ok(())
    }

    /// Send one delivery. `context`: the page's incidents and components, read once per
    /// batch for webhook payloads. Err: why it did not go out.
    async fn send(
        &self,
        control: &mut ControlStore,
        delivery: &Delivery,
        context: &mut Option<(
            Vec<lifeboat_control::Incident>,
            Vec<lifeboat_control::Component>,
        )>,
    ) -> std::result::Result<(), String> {
        match delivery.recipient {
            RecipientKind::Contact | RecipientKind::Address => {
                let mailer = self
                    .mailer
                    .as_ref()
                    .ok_or("no [notify.smtp] is configured")?;
                let written = text::email(delivery, &self.page.name, &self.page.url);
                let message = mailer.message(delivery, &written)?;
                mailer.send(message).await
            }
            RecipientKind::Operator | RecipientKind::Webhook => {
                if context.is_none() {
                    *context = Some((
                        control.incidents().map_err(|e| e.to_string())?,
                        control.components().map_err(|e| e.to_string())?,
                    ));
                }
                let (incidents, components) = context.as_ref().expect("just read");
                let body = webhook::payload(delivery, &self.page, incidents, components)
                    .map_err(|e| e.to_string())?;
                let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                let secret: Option<Vec<u8>> = if delivery.recipient == RecipientKind::Operator {
                    let configured = self
                        .webhooks
                        .iter()
                        .find(|(url, _)| url == &delivery.address)
                        .map(|(_, secret)| secret.clone());
                    Some(configured.ok_or_else(|| {
                        format!(
                            "{} is no longer a configured [[notify.webhooks]] url",
                            delivery.address
                        )
                    })?)
                } else {
                    // A subscriber's deliveries are signed with its own secret.
                    let secret = control
                        .webhook_subscriber_secret(&delivery.address)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| {
                            format!("{} is no longer a webhook subscriber", delivery.address)
                        })?;
                    Some(secret.into_bytes())
                };
                webhook::post(
                    &self.client,
                    &delivery.address,
                    delivery,
                    bytes,
                    secret.as_deref(),
                )
                .await
            }
            RecipientKind::Operators => Err("an operators notice is copied, not sent".into()),
        }
    }
}

/// Deliver the outbox as `name` until `stop` is set (the delivery in flight finishes; the
/// rest of its batch is given back); with `until_idle`, until a pass finds nothing due
/// (deliveries waiting for a retry later do not count).
pub async fn run(
    config: &Config,
    control_url: &str,
    name: &str,
    until_idle: bool,
    stop: &Stop,
) -> Result<Delivered> {
    let notifier = Notifier::from_config(config, name, None)?;
    run_with(&notifier, control_url, until_idle, stop).await
}

/// `run` with a notifier already made (the drill's writes into a directory).
pub async fn run_with(
    notifier: &Notifier,
    control_url: &str,
    until_idle: bool,
    stop: &Stop,
) -> Result<Delivered> {
    let mut total = Delivered::default();
    let mut control: Option<ControlStore> = None;
    while !stop.is_set() {
        let store = match control.as_mut() {
            Some(store) => store,
            None => match ControlStore::open(control_url) {
                Ok(store) => control.insert(store),
                Err(e) if until_idle => return Err(e),
                Err(e) => {
                    tracing::warn!("notifier: {e}; trying again");
                    stop.sleep(Duration::from_secs(5)).await;
                    continue;
                }
            },
        };
        match notifier.pass(store, stop).await {
            Ok((done, busy)) => {
                total.sent += done.sent;
                total.failed_attempts += done.failed_attempts;
                total.dead += done.dead;
                if !busy {
                    if until_idle {
                        break;
                    }
                    stop.sleep(IDLE).await;
                }
            }
            Err(e) if until_idle => return Err(e),
            Err(e) => {
                // The control store failed: open it again (a restart, a failover).
                tracing::warn!("notifier: {e}; trying again");
                control = None;
                stop.sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Ok(total)
}

/// The directory a drill's emails go to, beside its report.
pub fn mail_dir(work: &Path) -> PathBuf {
    work.join("mail")
}
