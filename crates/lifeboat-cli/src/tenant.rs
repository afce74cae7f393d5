//! `lifeboat tenant delete|undelete|purge|list`: a tenant's life after deletion
//! (docs/guard.md, "Soft delete").

use std::path::PathBuf;

use serde_json::json;

use lifeboat_core::people::Role;
use lifeboat_core::time::format_us;
use lifeboat_core::Result;
use lifeboat_engine::context::load_config;
use lifeboat_engine::lifecycle;
use lifeboat_engine::progress::thousands;

use crate::output::print_json;
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(clap::Subcommand)]
enum TenantCommand {
    /// Plan the soft delete of tenants: their rows leave every source once the plan is
    /// approved and applied; their data stays restorable.
    Delete {
        #[arg(required = true)]
        tenants: Vec<String>,
        /// The author's OpenSSH private key (declared in `[authors]`): the plan is signed
        /// with it.
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        /// No longer accepted: the key says who the author is.
        #[arg(long, hide = true)]
        by: Option<String>,
        #[arg(short = 'o', long = "output", default_value = "plan.json")]
        output: PathBuf,
    },
    /// Bring deleted tenants back as they were just before their deletion.
    Undelete {
        #[arg(required = true)]
        tenants: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Remove deleted tenants' data from the vault, once the retention window has passed.
    Purge {
        #[arg(required = true)]
        tenants: Vec<String>,
        #[arg(long)]
        by: Option<String>,
    },
    /// Deleted and purged tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    match args.command {
        TenantCommand::Delete {
            tenants,
            key,
            by,
            output,
        } => {
            crate::guard::refuse_by(&by, Role::Author)?;
            let author = crate::guard::signer(&config, &key, Role::Author)?;
            let planned =
                lifecycle::delete(&config, &config_path, tenants, &author, &output).await?;
            crate::guard::print_planned(&planned);
            Ok(0)
        }
        TenantCommand::Undelete { tenants, by } => {
            let done = lifecycle::undelete(
                &config,
                &config_path,
                tenants,
                by,
                &crate::output::Terminal::default(),
            )
            .await?;
            Ok(print_undeleted(done.tenants, done.rows, done.failures))
        }
        TenantCommand::Purge { tenants, by } => {
            for purged in lifecycle::purge(&config, &config_path, tenants, by).await? {
                let r = &purged.report;
                crate::say!(
                    "purged tenant {}: {} changes removed from {} segments, {} checkpoints \
                     rewritten, {} bases deleted",
                    purged.tenant,
                    thousands(r.changes as u64),
                    r.segments,
                    r.checkpoints,
                    r.bases
                );
            }
            Ok(0)
        }
        TenantCommand::List { json } => {
            let records = lifecycle::list(&config, &config_path).await?;
            if json {
                print_json(&json!(records
                    .iter()
                    .map(|(r, from)| json!({
                        "tenant": r.tenant,
                        "state": if r.purged { "purged" } else { "deleted" },
                        "plan": r.plan,
                        "deleted_at": r.deleted_at,
                        "purgeable_from": format_us(*from),
                        "purged_at": r.purged_at,
                    }))
                    .collect::<Vec<_>>()));
                return Ok(0);
            }
            if records.is_empty() {
                crate::say!("no deleted tenants");
            }
            for (r, from) in &records {
                let state = match &r.purged_at {
                    Some(at) => format!("purged at {at}"),
                    None => format!("purgeable from {}", format_us(*from)),
                };
                crate::say!(
                    "{:<20} deleted at {}  plan {}  {state}",
                    r.tenant,
                    r.deleted_at,
                    &r.plan[..12.min(r.plan.len())]
                );
            }
            Ok(0)
        }
    }
}

/// An undelete's outcome, for people; its exit code.
pub fn print_undeleted(tenants: usize, rows: u64, failures: usize) -> u8 {
    if failures > 0 {
        eprintln!("undelete: {failures} tenant restores failed or differ from the vault");
        return EXIT_PROBLEM;
    }
    crate::say!(
        "undeleted {tenants} tenant(s): {} rows restored as they were just before the \
         deletion, every one verified",
        thousands(rows)
    );
    0
}
