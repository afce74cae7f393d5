//! `lifeboat`: one binary, one subcommand per job. The work lives in lifeboat-core and
//! lifeboat-source; this crate parses the command line, loads the configuration, and
//! prints results for people (default) or scripts (`--json`).

mod campaign;
mod capture;
mod context;
mod drill;
mod guard;
mod history;
mod lifecycle;
mod restore;
mod snapshot;
mod tenants;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes: 0 everything asked for succeeded; 1 it ran but found a problem (a verify
/// difference, a failed source); 2 the request or configuration was wrong.
pub const EXIT_PROBLEM: u8 = 1;

/// Print a line on standard output. A closed pipe (`lifeboat tenants | head`) ends the
/// program quietly, as it would a C tool killed by SIGPIPE.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Tenant-level backup and point-in-time restore for multi-tenant databases"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture every change of every configured source into the vault, continuously.
    Capture(capture::Args),
    /// List every protected tenant: its sources, row counts and restorable window.
    Tenants(tenants::Args),
    /// Show a tenant's transactions, newest first.
    History(history::Args),
    /// Compare tenants' live rows with the vault, table by table.
    Verify(verify::Args),
    /// Rehearse the disaster end to end and report recovery time and recovery point.
    Drill(drill::Args),
    /// Restore tenants to a point in time, in place, as a new tenant or elsewhere.
    Restore(restore::Args),
    /// Write new base snapshots (compaction), so restores read less history.
    Snapshot(snapshot::Args),
    /// Measure a declared operation and write a plan for approval.
    Plan(guard::PlanArgs),
    /// Approve a plan (not its author).
    Approve(guard::ApproveArgs),
    /// Apply an approved plan in waves, with a restore point first.
    Apply(guard::ApplyArgs),
    /// Stop a running apply before its next wave.
    Halt(guard::PlanRefArgs),
    /// Restore every tenant an applied plan touched to its restore point.
    Undo(guard::PlanRefArgs),
    /// Show the audit log, or `audit verify` its hash chain.
    Audit(guard::AuditArgs),
    /// Soft delete tenants (guarded), bring them back, purge them after retention.
    Tenant(lifecycle::Args),
    /// Open, update, resolve and list incidents on the status page.
    Incident(campaign::IncidentArgs),
    /// Recovery campaigns: start one, follow it, list its private links.
    Campaign(campaign::CampaignArgs),
    /// Restore campaign tenants, batch by batch, with other workers.
    Worker(campaign::WorkerArgs),
    /// Serve the status page, private tenant pages and the operator API.
    Serve(campaign::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_PROBLEM);
        }
    };
    let result = runtime.block_on(async move {
        let config_path = cli.config.clone();
        match cli.command {
            Command::Capture(args) => capture::run(config_path, args).await,
            Command::Tenants(args) => tenants::run(config_path, args).await,
            Command::History(args) => history::run(config_path, args).await,
            Command::Verify(args) => verify::run(config_path, args).await,
            Command::Snapshot(args) => snapshot::run(config_path, args).await,
            Command::Restore(args) => restore::run(config_path, args).await,
            Command::Drill(args) => drill::run(config_path, args).await,
            Command::Plan(args) => guard::plan(config_path, args).await,
            Command::Approve(args) => guard::approve(config_path, args).await,
            Command::Apply(args) => guard::apply(config_path, args).await,
            Command::Halt(args) => guard::halt(config_path, args).await,
            Command::Undo(args) => guard::undo(config_path, args).await,
            Command::Audit(args) => guard::audit(config_path, args).await,
            Command::Tenant(args) => lifecycle::run(config_path, args).await,
            Command::Incident(args) => campaign::incident(config_path, args).await,
            Command::Campaign(args) => campaign::campaign(config_path, args).await,
            Command::Worker(args) => campaign::worker(config_path, args).await,
            Command::Serve(args) => campaign::serve(config_path, args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            let code = match e.kind() {
                lifeboat_core::ErrorKind::Config
                | lifeboat_core::ErrorKind::Usage
                | lifeboat_core::ErrorKind::OutOfWindow => EXIT_USAGE,
                _ => EXIT_PROBLEM,
            };
            ExitCode::from(code)
        }
    }
}
