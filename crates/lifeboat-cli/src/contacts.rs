//! `lifeboat contacts`: tenant contacts kept in the control store, read from the vault
//! (`refresh`), imported (`import`) and listed (`list`).

use std::path::PathBuf;

use lifeboat_control::{Contact, ControlStore};
use lifeboat_core::target::Target;
use lifeboat_core::Result;
use lifeboat_engine::contacts;
use lifeboat_engine::context::{control_url, load_config};

use crate::output::print_json;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Read `[contacts]` from the vault at a point in time into the control store.
    Refresh {
        #[arg(long, value_name = "TIME", conflicts_with = "before_tx")]
        at: Option<String>,
        #[arg(long, value_name = "SOURCE:TXID")]
        before_tx: Option<String>,
        /// Only these tenants (default: every tenant of the `[contacts]` source).
        #[arg(long = "tenant", value_name = "KEY")]
        tenants: Vec<String>,
    },
    /// Import contacts from a CSV file with the header `tenant,email,name,locale`: every
    /// row or none.
    Import { file: PathBuf },
    /// List the contacts (of one tenant, or those a campaign keeps).
    List {
        #[arg(long, value_name = "KEY")]
        tenant: Option<String>,
        /// The contacts campaign ID recorded when it started.
        #[arg(long, value_name = "ID")]
        campaign: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    match args.command {
        Command::Refresh {
            at,
            before_tx,
            tenants,
        } => {
            let target = Target::parse(at.as_deref(), before_tx.as_deref())?;
            let read = contacts::refresh(&config, &config_path, &target, &tenants).await?;
            crate::say!("{} contacts read from the vault", read.len());
            Ok(0)
        }
        Command::Import { file } => {
            let n = contacts::import(&config, &config_path, &file).await?;
            crate::say!("{n} contacts imported");
            Ok(0)
        }
        Command::List {
            tenant,
            campaign,
            json,
        } => {
            let mut control = ControlStore::open(&control_url(&config, &config_path)?)?;
            let mut list: Vec<Contact> = match &campaign {
                Some(id) => control.campaign_contacts(id)?,
                None => control.contacts(tenant.as_deref())?,
            };
            if let Some(t) = &tenant {
                list.retain(|c| &c.tenant == t);
            }
            if json {
                print_json(&list);
            } else {
                for c in &list {
                    crate::say!(
                        "{}\t{}\t{}\t{}\t{}{}",
                        c.tenant,
                        c.email,
                        c.name.as_deref().unwrap_or(""),
                        c.locale.as_deref().unwrap_or(""),
                        c.origin,
                        c.read_at
                            .as_deref()
                            .map(|at| format!(" at {at}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
    }
}
