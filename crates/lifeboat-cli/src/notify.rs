//! `lifeboat notifier` (deliver the outbox until stopped) and `lifeboat notifications`
//! (list deliveries, send a dead one again).

use std::path::PathBuf;

use lifeboat_control::{ControlStore, Delivery};
use lifeboat_core::Result;
use lifeboat_engine::campaign::{open_audited, open_control};
use lifeboat_engine::context::{control_url, load_config};
use lifeboat_engine::guard::login;
use lifeboat_engine::notify;
use lifeboat_source::Stop;

use crate::output::print_json;
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct NotifierArgs {
    /// This notifier's name in its claims (default: host and process id).
    #[arg(long)]
    name: Option<String>,
    /// Exit when nothing is due (deliveries waiting for a later retry stay).
    #[arg(long)]
    until_idle: bool,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub async fn notifier(config_path: Option<PathBuf>, args: NotifierArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let name = args.name.clone().unwrap_or_else(notify::default_name);
    if let Some(address) = &args.metrics_listen {
        crate::observe::listen_for_metrics(address, &config, &[]).await?;
    }
    open_control(&config, &config_path)?;
    let url = control_url(&config, &config_path)?;
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::signal::shutdown().await;
            stop.set();
        });
    }
    let done = notify::run(&config, &url, &name, args.until_idle, &stop).await?;
    crate::say!(
        "notifier {name}: {} sent, {} failed attempts, {} dead",
        done.sent,
        done.failed_attempts,
        done.dead
    );
    Ok(if done.dead > 0 { EXIT_PROBLEM } else { 0 })
}

#[derive(clap::Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    command: Option<NotificationsCommand>,
    /// Only the dead deliveries (failed `[notify] max_attempts` times).
    #[arg(long)]
    failed: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum NotificationsCommand {
    /// Send a dead delivery again, its attempts counted afresh.
    Retry {
        id: String,
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn notifications(config_path: Option<PathBuf>, args: NotificationsArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    match args.command {
        Some(NotificationsCommand::Retry { id, by }) => {
            let mut control = open_audited(&config, &config_path).await?;
            control.retry_delivery(&id, &login(by))?;
            control.anchor().await?;
            crate::say!("notification {id} queued again");
            Ok(0)
        }
        None => {
            let mut control = ControlStore::open(&control_url(&config, &config_path)?)?;
            let list = control.deliveries(args.failed)?;
            if args.json {
                print_json(&list.iter().map(listed).collect::<Vec<_>>());
            } else if list.is_empty() {
                crate::say!("no notifications");
            } else {
                crate::say!(
                    "{:<12}  {:<25}  {:<8}  {:<7}  {:>8}  {:<30}  LAST ERROR",
                    "ID",
                    "EVENT",
                    "TO",
                    "STATE",
                    "ATTEMPTS",
                    "ADDRESS"
                );
                for d in &list {
                    crate::say!(
                        "{:<12}  {:<25}  {:<8}  {:<7}  {:>8}  {:<30}  {}",
                        d.id,
                        d.event,
                        d.recipient,
                        d.state,
                        d.attempts,
                        d.address,
                        d.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
    }
}

/// A delivery as listed: everything but its body (which holds the tenant's link token).
fn listed(d: &Delivery) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "key": d.key,
        "event": d.event,
        "recipient": d.recipient,
        "address": d.address,
        "tenant": d.tenant,
        "campaign": d.campaign,
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "sent_at": d.sent_at,
    })
}
