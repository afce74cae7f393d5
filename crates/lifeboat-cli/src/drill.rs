//! `lifeboat drill`: rehearse the disaster end to end and report recovery time and
//! recovery point (the engine is `lifeboat_engine::drill`); with `--live`, restore
//! tenants sampled from the vault into a scratch database and prove them against the vault
//! and the live rows (`lifeboat_engine::drill::live`), once or on a schedule.

use std::io::IsTerminal;
use std::path::PathBuf;

use lifeboat_core::metrics::Metrics;
use lifeboat_core::{Error, Result};
use lifeboat_engine::context::{control_url, load_config};
use lifeboat_engine::drill::{self, live};
use lifeboat_engine::guard::control::login;
use lifeboat_engine::progress::{thousands, Progress, Silent};
use lifeboat_source::Stop;

use crate::output::{print_json, Terminal};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct Args {
    /// Drill on production data: restore tenants sampled from the vault into a scratch
    /// database and compare them with the vault and the live rows.
    #[arg(long, conflicts_with_all = ["postgres", "dir", "serve"])]
    live: bool,
    /// `--live`: how many tenants to drill, picked at random among those with rows.
    #[arg(long, value_name = "N", requires = "live")]
    sample: Option<usize>,
    /// `--live`: the scratch database to restore into (same schema as the source; never a
    /// source's database). `URL` with one source; `SOURCE=URL` for each of several.
    #[arg(long = "into-url", value_name = "[SOURCE=]URL", requires = "live")]
    into_url: Vec<String>,
    /// `--live`: only these sources (repeatable; default: those --into-url names, or all).
    #[arg(long = "source", value_name = "NAME", requires = "live")]
    sources: Vec<String>,
    /// `--live`: run again after this long (e.g. 24h, 30m), until stopped.
    #[arg(long, value_name = "DURATION", requires = "live")]
    every: Option<String>,
    /// `--every`: stop after this many runs.
    #[arg(long, value_name = "K", requires = "every")]
    runs: Option<u64>,
    /// `--live`: serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR", requires = "live")]
    metrics_listen: Option<String>,
    /// `--live`: pick the tenants with this seed (the report shows each run's seed; the
    /// runs that follow under --every use SEED+1, SEED+2, ...).
    #[arg(long, value_name = "S", requires = "live")]
    seed: Option<u64>,
    /// `--live`: who runs it, for the audit log (default: the login name).
    #[arg(long, value_name = "NAME", requires = "live")]
    by: Option<String>,
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

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    if args.live {
        return run_live(config_path, args).await;
    }
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

async fn run_live(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let sample = args
        .sample
        .ok_or_else(|| Error::usage("--live needs --sample N: how many tenants to drill"))?;
    let plan = live::plan(
        &config,
        &live::Args {
            sample,
            sources: args.sources.clone(),
            into: args.into_url.clone(),
        },
    )
    .await?;
    live::check_scratch(&config, &plan).await?;
    let every = args.every.as_deref().map(live::parse_every).transpose()?;
    let control = control_url(&config, &config_path)?;
    let names: Vec<String> = plan.scratch.keys().cloned().collect();
    Metrics::global().drill_started();
    if let Some(address) = &args.metrics_listen {
        crate::observe::listen_for_metrics(address, &config, &names).await?;
    }
    let stop = Stop::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::signal::shutdown().await;
            stop.set();
        });
    }
    let by = login(args.by.clone());
    let first_seed = args.seed.unwrap_or_else(live::random_seed);
    let mut failed = false;
    let mut runs = 0u64;
    loop {
        let run = lifeboat_control::new_id()?;
        let seed = first_seed.wrapping_add(runs);
        let progress: Box<dyn Progress> = if args.json {
            Box::new(Silent)
        } else {
            Box::new(Terminal::default())
        };
        let outcome = live::run(&config, &control, &plan, &run, seed, progress.as_ref()).await;
        runs += 1;
        match &outcome {
            Ok(report) => render(report, args.json),
            Err(e) if every.is_some() => {
                crate::say!("LIVE DRILL FAILED: run {run} (seed {seed}) could not finish: {e}")
            }
            Err(_) => {}
        }
        failed |= !outcome.as_ref().is_ok_and(|r| r.ok);
        let recorded = live::record(&config, &config_path, &by, &run, seed, outcome.as_ref()).await;
        match (every, outcome, recorded) {
            (None, Err(e), _) => return Err(e),
            (None, Ok(_), Err(e)) => return Err(e),
            (Some(_), _, Err(e)) => {
                tracing::error!("the live drill {run} was not recorded: {e}");
            }
            _ => {}
        }
        let Some(every) = every else { break };
        if args.runs.is_some_and(|k| runs >= k) || stop.is_set() {
            break;
        }
        stop.sleep(live::next_wait(every)).await;
        if stop.is_set() {
            break;
        }
    }
    // Stopped by a signal, a scheduled drill ends cleanly: its failures were alerted.
    let stopped = every.is_some() && stop.is_set();
    Ok(if failed && !stopped { EXIT_PROBLEM } else { 0 })
}

fn render(r: &live::Report, json: bool) {
    if json {
        crate::say!(
            "{}",
            serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        );
        return;
    }
    let at: Vec<String> = r
        .positions
        .iter()
        .map(|(s, p)| format!("{s} {p}"))
        .collect();
    crate::say!(
        "== live drill {} (seed {}) at {}",
        r.run,
        r.seed,
        at.join(", ")
    );
    for t in &r.tenants {
        let result = match t.result {
            live::Verdict::Failed => "FAILED",
            other => other.as_str(),
        };
        crate::say!(
            "   tenant {:<14} {:<7} {:>7.2} s {:>10} rows{}",
            t.tenant,
            result,
            t.recovery_seconds,
            thousands(t.rows),
            t.reason
                .as_deref()
                .map(|why| format!("   {why}"))
                .unwrap_or_default()
        );
    }
    crate::say!(
        "   {} tenants: {} passed, {} busy, {} failed in {:.1} s",
        r.tenants.len(),
        r.passed,
        r.busy,
        r.failed,
        r.seconds
    );
    crate::say!(
        "{}",
        if r.ok {
            "live drill passed"
        } else {
            "LIVE DRILL FAILED"
        }
    );
}
