//! `lifeboat drill`: rehearse the disaster end to end and report recovery time and
//! recovery point (the engine is `lifeboat_engine::drill`).

use std::io::IsTerminal;
use std::path::PathBuf;

use lifeboat_core::Result;
use lifeboat_engine::drill;
use lifeboat_engine::progress::{thousands, Progress, Silent};

use crate::output::{print_json, Terminal};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct Args {
    /// How many tenants the product databases hold.
    #[arg(long, default_value_t = 300)]
    tenants: u64,
    /// Run against this PostgreSQL server (databases lifeboat_drill_*, recreated)
    /// instead of SQLite files.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Keep the vault, the config and the SQLite databases in this directory, and the
    /// PostgreSQL databases (default: a temporary directory, all removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Tenants restored at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Run the recovery as a campaign under an incident, with workers, and serve the status
    /// page while it runs (its address is printed).
    #[arg(long)]
    serve: bool,
    /// Where `--serve` listens.
    #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
    listen: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(_config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let request = drill::Args {
        tenants: args.tenants,
        postgres: args.postgres.clone(),
        dir: args.dir.clone(),
        jobs: args.jobs,
        serve: args.serve,
        listen: args.listen.clone(),
    };
    let progress: Box<dyn Progress> = if args.json {
        Box::new(Silent)
    } else {
        Box::new(Terminal::default())
    };
    let (r, server) = drill::run(&request, progress.as_ref()).await?;
    if args.json {
        print_json(&r);
    } else {
        crate::say!("== report");
        crate::say!(
            "   tenants restored     {} of {} deleted",
            r.tenants_restored,
            r.tenants_deleted
        );
        crate::say!("   rows restored        {}", thousands(r.rows_restored));
        crate::say!(
            "   restore time         {:.2} s ({} rows/s)",
            r.restore_seconds,
            thousands(r.rows_per_second as u64)
        );
        crate::say!(
            "   recovery time        {:.2} s from the deletion to every tenant verified",
            r.recovery_time_seconds
        );
        crate::say!(
            "   recovery point       {} rows lost (checked against checksums taken before the deletion)",
            r.recovery_point_rows_lost
        );
        crate::say!(
            "   other tenants        {} of {} unchanged by the restore, with their {} later transactions",
            r.tenants_spared - r.spared_tenants_changed.len(),
            r.tenants_spared,
            thousands(r.workload_transactions)
        );
        if let Some(dir) = &r.mail_dir {
            crate::say!(
                "   notifications        {} emails written to {dir}",
                r.notifications.len()
            );
            for n in &r.notifications {
                crate::say!("      {:<26} {:<28} {}", n.event, n.to, n.state);
            }
        }
        crate::say!("{}", if r.ok { "drill passed" } else { "DRILL FAILED" });
    }
    if let Some(server) = server {
        if std::io::stdin().is_terminal() && !args.json {
            crate::say!(
                "the status page stays up at http://{}/ until Ctrl-C",
                server.address
            );
            let _ = tokio::signal::ctrl_c().await;
        }
        server.stop().await;
    }
    Ok(if r.ok { 0 } else { EXIT_PROBLEM })
}
