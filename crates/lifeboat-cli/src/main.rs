//! `lifeboat`: one binary, one subcommand per job. The work lives in the library crates
//! (lifeboat-engine above all); this crate parses the command line, calls them, prints
//! results for people (default) or scripts (`--json`), and maps errors to exit codes.

mod campaign;
mod capture;
mod contacts;
mod drill;
mod export;
mod guard;
mod notify;
mod observe;
mod output;
mod report;
mod restore;
mod signal;
mod source;
mod subscribers;
mod tenant;
mod vault;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes: 0 everything asked for succeeded; 1 it ran but found a problem (a verify
/// difference, a failed source); 2 the request or configuration was wrong.
pub const EXIT_PROBLEM: u8 = 1;

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
    /// Create the vault at `[vault] url` (the only command that does).
    Init(vault::InitArgs),
    /// Capture every change of every configured source into the vault, continuously.
    Capture(capture::Args),
    /// Where each source stands: vault head and age, restorable window, what waits for
    /// capture, whether a capture reads it.
    Info(observe::InfoArgs),
    /// List every protected tenant: its sources, row counts and restorable window.
    Tenants(vault::TenantsArgs),
    /// Show a tenant's transactions, newest first.
    History(vault::HistoryArgs),
    /// Compare tenants' live rows with the vault, table by table.
    Verify(vault::VerifyArgs),
    /// Rehearse the disaster end to end and report recovery time and recovery point; with
    /// --live, prove restores of sampled tenants on production data.
    Drill(drill::Args),
    /// Restore tenants to a point in time, in place, as a new tenant or elsewhere.
    Restore(restore::Args),
    /// Write one tenant's rows at a point in time, from the vault, into a zip of CSV files
    /// or an SQLite database.
    Export(export::Args),
    /// Check the whole vault: every object listed and readable, every source's history
    /// continuous, the audit anchors; `--read-data` checks every hash.
    Check(vault::CheckArgs),
    /// Write new base snapshots (compaction), so restores read less history.
    Snapshot(vault::SnapshotArgs),
    /// Delete the history older than the retention window (`[vault] retention_days`).
    Prune(vault::PruneArgs),
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
    /// What capture installed in a source's database: list it, or remove it (`drop`).
    Source(source::Args),
    /// Soft delete tenants (guarded), bring them back, purge them after retention.
    Tenant(tenant::Args),
    /// Open, update, resolve and list incidents on the status page; publish postmortems.
    Incident(campaign::IncidentArgs),
    /// Schedule, start, complete and list maintenance windows on the status page.
    Maintenance(campaign::MaintenanceArgs),
    /// Service levels: each tenant's downtime and credit in an incident.
    Sla(report::SlaArgs),
    /// Draft the post-incident report from what Lifeboat recorded.
    Report(report::ReportArgs),
    /// Recovery campaigns: start one, follow it, list its private links.
    Campaign(campaign::CampaignArgs),
    /// Tenant contacts: read from the vault, imported, listed.
    Contacts(contacts::Args),
    /// Restore campaign tenants, batch by batch, with other workers.
    Worker(campaign::WorkerArgs),
    /// Serve the status page, private tenant pages and the operator API.
    Serve(campaign::ServeArgs),
    /// Subscribers to incident messages: add (webhooks, addresses), list, remove.
    Subscribers(subscribers::Args),
    /// Support requests written to the status server's `/support`: list, show.
    Support(subscribers::SupportArgs),
    /// Deliver the notification outbox (email and webhooks) until stopped.
    Notifier(notify::NotifierArgs),
    /// List notification deliveries, or send a dead one again (`retry ID`).
    Notifications(notify::NotificationsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The replication client returns its errors to capture, which reports them (once per
    // episode of a transient fault): its own log lines would only repeat them.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warn,{}=info,pgwire_replication=off",
            output::NOTICE_TARGET
        ))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("LIFEBOAT_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            eprintln!("error: LIFEBOAT_LOG_FORMAT={other:?}: use json or text");
            return ExitCode::from(EXIT_USAGE);
        }
    }
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
            Command::Info(args) => observe::info(config_path, args).await,
            Command::Tenants(args) => vault::tenants(config_path, args).await,
            Command::History(args) => vault::history(config_path, args).await,
            Command::Verify(args) => vault::verify(config_path, args).await,
            Command::Snapshot(args) => vault::snapshot(config_path, args).await,
            Command::Init(args) => vault::init(config_path, args).await,
            Command::Check(args) => vault::check(config_path, args).await,
            Command::Prune(args) => vault::prune(config_path, args).await,
            Command::Restore(args) => restore::run(config_path, args).await,
            Command::Export(args) => export::run(config_path, args).await,
            Command::Drill(args) => drill::run(config_path, args).await,
            Command::Plan(args) => guard::plan(config_path, args).await,
            Command::Approve(args) => guard::approve(config_path, args).await,
            Command::Apply(args) => guard::apply(config_path, args).await,
            Command::Halt(args) => guard::halt(config_path, args).await,
            Command::Undo(args) => guard::undo(config_path, args).await,
            Command::Audit(args) => guard::audit(config_path, args).await,
            Command::Source(args) => source::run(config_path, args).await,
            Command::Tenant(args) => tenant::run(config_path, args).await,
            Command::Incident(args) => campaign::incident(config_path, args).await,
            Command::Maintenance(args) => campaign::maintenance(config_path, args).await,
            Command::Campaign(args) => campaign::campaign(config_path, args).await,
            Command::Sla(args) => report::sla(config_path, args).await,
            Command::Report(args) => report::report(config_path, args).await,
            Command::Contacts(args) => contacts::run(config_path, args).await,
            Command::Worker(args) => campaign::worker(config_path, args).await,
            Command::Serve(args) => campaign::serve(config_path, args).await,
            Command::Subscribers(args) => subscribers::subscribers(config_path, args).await,
            Command::Support(args) => subscribers::support(config_path, args).await,
            Command::Notifier(args) => notify::notifier(config_path, args).await,
            Command::Notifications(args) => notify::notifications(config_path, args).await,
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
