//! `lifeboat subscribers` (incident messages to webhooks and addresses, added by
//! operators or subscribed on the public page) and `lifeboat support` (requests written to
//! `/support`).

use std::path::PathBuf;

use lifeboat_control::SubscriberKind;
use lifeboat_core::{Error, Result};
use lifeboat_engine::campaign::{open_audited, open_control};
use lifeboat_engine::context::load_config;
use lifeboat_engine::guard::login;

use crate::output::print_json;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add a confirmed subscriber: a webhook URL or an email address (audited).
    Add {
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "email",
            required_unless_present = "email"
        )]
        webhook: Option<String>,
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// Only incidents naming this source's component (repeatable; default: all).
        #[arg(long = "component", value_name = "SOURCE")]
        components: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Every subscriber: id, kind, state, address, components.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a subscriber (audited).
    Remove {
        id: String,
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn subscribers(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let page_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    match args.command {
        Command::List { json } => {
            let list = open_control(&config, &config_path)?.subscribers()?;
            if json {
                print_json(&list);
            } else {
                for s in &list {
                    crate::say!(
                        "{}  {:<7} {:<12} {}  {}",
                        s.id,
                        s.kind,
                        s.state,
                        s.address,
                        if s.components.is_empty() {
                            "all".to_string()
                        } else {
                            s.components.join(",")
                        }
                    );
                }
            }
        }
        Command::Add {
            webhook,
            email,
            components,
            by,
        } => {
            let mut control = open_audited(&config, &config_path).await?;
            let known = control.components()?;
            let ids = components
                .iter()
                .map(|source| {
                    known
                        .iter()
                        .find(|c| &c.source == source)
                        .map(|c| c.id.clone())
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                known.iter().map(|c| c.source.as_str()).collect();
                            Error::usage(format!(
                                "unknown component {source:?}; components: {}",
                                names.join(", ")
                            ))
                        })
                })
                .collect::<Result<Vec<String>>>()?;
            let (kind, address) = match (webhook, email) {
                (Some(url), None) => (SubscriberKind::Webhook, url),
                (None, Some(email)) => (SubscriberKind::Email, email),
                _ => return Err(Error::usage("give --webhook URL or --email ADDRESS")),
            };
            let id = control.add_subscriber(kind, &address, &ids, &page_url, &login(by))?;
            control.anchor().await?;
            crate::say!("{id}");
            if let Some(secret) = control.subscriber_secret(&id)? {
                // Shown this once: the receiver checks X-Lifeboat-Signature with it.
                crate::say!("secret {secret}");
            }
        }
        Command::Remove { id, by } => {
            let mut control = open_audited(&config, &config_path).await?;
            control.remove_subscriber(&id, &login(by))?;
            control.anchor().await?;
            crate::say!("removed {id}");
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct SupportArgs {
    #[command(subcommand)]
    command: SupportCommand,
}

#[derive(clap::Subcommand)]
enum SupportCommand {
    /// Support requests, newest first: id, time, address, the tenants matched.
    List {
        /// Only those that matched no tenant.
        #[arg(long)]
        unmatched: bool,
        #[arg(long)]
        json: bool,
    },
    /// One request with its message and matches.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn support(config_path: Option<PathBuf>, args: SupportArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let mut control = open_control(&config, &config_path)?;
    match args.command {
        SupportCommand::List { unmatched, json } => {
            let list = control.support_requests(unmatched)?;
            if json {
                print_json(&list);
            } else {
                for r in &list {
                    let tenants: Vec<String> = r
                        .matches
                        .iter()
                        .map(|m| format!("{} (by {})", m.tenant, m.by))
                        .collect();
                    crate::say!(
                        "{}  {}  {}  {}",
                        r.id,
                        r.created_at,
                        r.email,
                        if tenants.is_empty() {
                            "unmatched".to_string()
                        } else {
                            tenants.join(", ")
                        }
                    );
                }
            }
        }
        SupportCommand::Show { id, json } => {
            let Some(r) = control.support_request(&id)? else {
                return Err(Error::usage(format!(
                    "unknown support request {id}: `lifeboat support list`"
                )));
            };
            if json {
                print_json(&r);
            } else {
                crate::say!("id:       {}", r.id);
                crate::say!("received: {}", r.created_at);
                crate::say!("from:     {}", r.email);
                for (name, value) in [
                    ("site:    ", &r.site_url),
                    ("company: ", &r.company),
                    ("tenant:  ", &r.tenant),
                ] {
                    if let Some(v) = value {
                        crate::say!("{name} {v}");
                    }
                }
                if r.matches.is_empty() {
                    crate::say!("matched:  none");
                }
                for m in &r.matches {
                    crate::say!(
                        "matched:  tenant {} (contact {}, by {})",
                        m.tenant,
                        m.contact,
                        m.by
                    );
                }
                crate::say!("\n{}", r.message);
            }
        }
    }
    Ok(0)
}
