//! `lifeboat info`, and the `--metrics-listen` listener of `capture` and `worker`
//! (`/metrics`, `/healthz`, `/readyz`; docs/operations.md).

use std::path::PathBuf;
use std::sync::Arc;

use lifeboat_core::config::Config;
use lifeboat_core::metrics::Metrics;
use lifeboat_core::{Error, Result};
use lifeboat_engine::context::{load_config, source_names};
use lifeboat_engine::info::SourceInfo;
use lifeboat_engine::progress::thousands;

use crate::output::print_json;

/// Bind `address` and serve the process's metrics and health there until the process
/// ends; `/readyz` checks `sources` (all when empty) and the vault. A bad address is a
/// usage error, before anything else happens.
pub async fn listen_for_metrics(address: &str, config: &Config, sources: &[String]) -> Result<()> {
    let names = source_names(config, sources)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::source(format!("listener: {e}")))?;
    let config = Arc::new(config.clone());
    let names = Arc::new(names);
    let ready: lifeboat_web::observe::ReadyCheck = Arc::new(move || {
        let config = config.clone();
        let names = names.clone();
        Box::pin(async move { lifeboat_engine::info::ready(&config, &names).await })
    });
    eprintln!("metrics on http://{bound}/metrics");
    tokio::spawn(async move {
        let served = lifeboat_web::observe::serve(
            listener,
            Metrics::global().clone(),
            ready,
            std::future::pending(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!("metrics listener: {e}");
        }
    });
    Ok(())
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Print JSON (docs/operations.md).
    #[arg(long)]
    json: bool,
}

pub async fn info(config_path: Option<PathBuf>, args: InfoArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let control = lifeboat_engine::context::control_url(&config, &config_path)?;
    let sources = lifeboat_engine::info::gather(&config, &control, &args.sources).await?;
    if args.json {
        print_json(&serde_json::json!({ "sources": sources }));
    } else {
        for (i, source) in sources.iter().enumerate() {
            if i > 0 {
                crate::say!();
            }
            render(source);
        }
    }
    let unreachable = sources.iter().any(|s| s.source_error.is_some());
    Ok(if unreachable { crate::EXIT_PROBLEM } else { 0 })
}

fn render(s: &SourceInfo) {
    crate::say!("{} ({})", s.source, s.kind);
    match (&s.head_position, &s.head_time, s.head_age_seconds) {
        (Some(position), Some(time), Some(age)) if s.captured => {
            crate::say!("  vault head       {position} at {time} ({} ago)", ago(age));
        }
        _ => crate::say!("  vault head       none: not captured yet"),
    }
    if let (Some(from), Some(to)) = (&s.window_from, &s.window_to) {
        crate::say!("  restorable       {from} .. {to}");
    }
    if let Some(e) = &s.source_error {
        crate::say!("  database         unreachable: {e}");
    } else {
        let b = &s.backlog;
        if let Some(slot) = &b.slot {
            crate::say!("  slot             {slot}");
        } else if s.kind == "postgres" {
            crate::say!("  slot             none yet");
        }
        if let Some(lag) = b.slot_lag_bytes {
            crate::say!("  slot lag         {}", bytes(lag));
        }
        if let Some(retained) = b.retained_wal_bytes {
            crate::say!("  retained WAL     {}", bytes(retained));
        }
        if let Some(rows) = b.changelog_rows {
            crate::say!("  changelog        {} rows waiting", thousands(rows));
        }
        let running = match (b.capture_running, b.capture_pid) {
            (Some(true), Some(pid)) => format!("yes (server pid {pid})"),
            (Some(true), None) => "yes".to_string(),
            (Some(false), _) => "no".to_string(),
            (None, _) => "unknown".to_string(),
        };
        crate::say!("  capture running  {running}");
    }
    match &s.lease {
        Some(l) if l.live => crate::say!(
            "  capture lease    {} (epoch {}), expires at {}",
            l.holder,
            l.epoch,
            l.expires_at
        ),
        Some(l) => crate::say!(
            "  capture lease    none (last {} (epoch {}), expired at {})",
            l.holder,
            l.epoch,
            l.expires_at
        ),
        None => crate::say!("  capture lease    none"),
    }
    if s.standbys.is_empty() {
        crate::say!("  standbys         none");
    }
    for standby in &s.standbys {
        crate::say!(
            "  standby          {} (since {}, last heard at {})",
            standby.holder,
            standby.since,
            standby.heartbeat_at
        );
    }
    if let (Some(e), Some(at), Some(age)) =
        (&s.last_error, &s.last_error_at, s.last_error_age_seconds)
    {
        let kind = s.last_error_kind.as_deref().unwrap_or("unknown");
        let outcome = match (s.last_error_stopped_capture, &s.last_error_recovered_at) {
            (Some(true), _) => "stopped capture".to_string(),
            (_, Some(recovered)) => format!("retried, recovered at {recovered}"),
            _ => "retried, still failing when last recorded".to_string(),
        };
        crate::say!(
            "  last error       {kind}, at {at} ({} ago), {outcome}: {e}",
            ago(age)
        );
    }
}

fn ago(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=119 => format!("{seconds:.1} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit} ({} bytes)", thousands(n))
}
