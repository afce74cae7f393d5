//! The vault's views, checks and upkeep: `tenants`, `history`, `verify`, `check`,
//! `snapshot` and `prune`.

use std::path::PathBuf;

use lifeboat_core::model::{format_lsn, Dialect, Position};
use lifeboat_core::time::format_us;
use lifeboat_core::Result;
use lifeboat_engine::context::load_config;
use lifeboat_engine::progress::thousands;

use crate::output::{bytes, print_json};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct TenantsArgs {
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub async fn tenants(config_path: Option<PathBuf>, args: TenantsArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let entries = lifeboat_engine::tenants::list(&config, &args.sources).await?;
    if args.json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|(tenant, e)| {
                serde_json::json!({
                    "tenant": tenant.as_str(),
                    "sources": e.rows.keys().collect::<Vec<_>>(),
                    "rows": e.rows,
                    "rows_total": e.rows.values().sum::<usize>(),
                    "earliest": format_us(e.earliest_us),
                    "latest": format_us(e.latest_us),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
        return Ok(0);
    }
    if entries.is_empty() {
        crate::say!("no protected tenants yet: run `lifeboat capture` first");
        return Ok(0);
    }
    crate::say!(
        "{:<20} {:>12}  {:<40} restorable window",
        "tenant",
        "rows",
        "rows by source"
    );
    for (tenant, e) in &entries {
        let by_source: Vec<String> = e
            .rows
            .iter()
            .map(|(s, n)| format!("{s} {}", thousands(*n as u64)))
            .collect();
        crate::say!(
            "{:<20} {:>12}  {:<40} {} .. {}",
            tenant.as_str(),
            thousands(e.rows.values().sum::<usize>() as u64),
            by_source.join(", "),
            format_us(e.earliest_us),
            format_us(e.latest_us)
        );
    }
    crate::say!("{} tenants", entries.len());
    Ok(0)
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    #[arg(long)]
    tenant: String,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// At most this many transactions.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

pub async fn history(config_path: Option<PathBuf>, args: HistoryArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let entries =
        lifeboat_engine::history::history(&config, &args.tenant, &args.sources, args.limit).await?;
    let tenant = &args.tenant;
    if args.json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "source": e.source,
                    "transaction": format!("{}:{}", e.source, e.xid),
                    "xid": e.xid,
                    "position": e.position,
                    "lsn": (e.dialect == Dialect::Postgres).then(|| format_lsn(e.position)),
                    "commit_time": format_us(e.commit_time_us),
                    "rows": e.rows.iter().map(|((table, op), n)| serde_json::json!({"table": table, "op": op, "rows": n})).collect::<Vec<_>>(),
                    "rows_total": e.rows.values().sum::<u64>(),
                    "rows_all_tenants": e.rows_all_tenants,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
        return Ok(0);
    }
    if entries.is_empty() {
        crate::say!("no transactions of tenant {tenant} in the vault (its rows may all come from the first snapshot)");
        return Ok(0);
    }
    for e in &entries {
        let total: u64 = e.rows.values().sum();
        let tables: std::collections::BTreeSet<&String> = e.rows.keys().map(|(t, _)| t).collect();
        let position = Position::new(e.position).describe(e.dialect);
        crate::say!(
            "{}  {}:{}  at {}  {} rows across {} tables{}",
            format_us(e.commit_time_us),
            e.source,
            e.xid,
            position,
            thousands(total),
            tables.len(),
            if e.rows_all_tenants > total {
                format!(
                    " (of {} rows the transaction changed in all)",
                    thousands(e.rows_all_tenants)
                )
            } else {
                String::new()
            }
        );
        for ((table, op), n) in &e.rows {
            crate::say!("    {op:<8} {table:<30} {:>10}", thousands(*n));
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Tenant to verify (repeatable).
    #[arg(long = "tenant", value_name = "KEY", required = true)]
    tenants: Vec<String>,
    /// Compare with the vault's state at this time (RFC 3339) instead of its latest.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub async fn verify(config_path: Option<PathBuf>, args: VerifyArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let request = lifeboat_engine::verify::Request {
        tenants: args.tenants.clone(),
        at_us: args
            .at
            .as_deref()
            .map(lifeboat_core::time::parse)
            .transpose()?,
        sources: args.sources.clone(),
    };
    let report = lifeboat_engine::verify::verify(&config, &request).await?;
    let (differences, tables_checked) = (&report.differences, report.tables_checked);
    let tenants = &report.tenants;
    if args.json {
        print_json(&serde_json::json!({
            "tenants": tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "tables_checked": tables_checked,
            "tables": report.tables,
            "differences": differences,
            "ok": differences.is_empty(),
        }));
    } else {
        for d in differences {
            crate::say!(
                "DIFFERENT tenant {} {}.{}: live {} rows, vault {} rows; {} rows only live, {} only in the vault{}",
                d.tenant,
                d.source,
                d.table,
                d.live.rows,
                d.vault.rows,
                d.rows_only_live,
                d.rows_only_vault,
                if d.example_keys.is_empty() {
                    String::new()
                } else {
                    format!(" (keys {})", d.example_keys.join(", "))
                }
            );
        }
        if differences.is_empty() {
            crate::say!(
                "ok: {} tenants, {} tables match the vault (row counts and checksums)",
                tenants.len(),
                tables_checked
            );
        } else {
            crate::say!("{} tables differ", differences.len());
        }
    }
    Ok(if differences.is_empty() {
        0
    } else {
        EXIT_PROBLEM
    })
}

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// Only these tenants (repeatable); all when omitted.
    #[arg(long = "tenant", value_name = "KEY")]
    tenants: Vec<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
}

pub async fn snapshot(config_path: Option<PathBuf>, args: SnapshotArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let written =
        lifeboat_engine::snapshot::snapshot(&config, &args.tenants, &args.sources).await?;
    for (source, n) in &written {
        crate::say!("{source}: {n} new base snapshots");
    }
    crate::say!(
        "{} base snapshots written",
        written.iter().map(|(_, n)| n).sum::<usize>()
    );
    Ok(0)
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Read every object whole and check every hash (segment chunks, bases, checkpoints).
    #[arg(long)]
    read_data: bool,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    #[arg(long)]
    json: bool,
}

/// `check`: a summary per source, then one line per problem; exit 1 when there is any.
pub async fn check(config_path: Option<PathBuf>, args: CheckArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let progress: lifeboat_engine::progress::Reporter = if args.json {
        lifeboat_engine::progress::silent()
    } else {
        std::sync::Arc::new(crate::output::Terminal::default())
    };
    let request = lifeboat_engine::check::Request {
        sources: args.sources.clone(),
        read_data: args.read_data,
    };
    let started = std::time::Instant::now();
    let report = lifeboat_engine::check::check(&config, &config_path, &request, &progress).await?;
    let code = if report.ok { 0 } else { EXIT_PROBLEM };
    if args.json {
        print_json(&report);
        return Ok(code);
    }
    let seconds = started.elapsed().as_secs_f64();
    for s in &report.sources {
        let window = match (s.window, s.window_us) {
            (Some(_), Some((from, to))) => {
                format!("window {} .. {}", format_us(from), format_us(to))
            }
            (Some((from, to)), None) => format!("window positions {from} .. {to}"),
            _ => "no history yet".to_string(),
        };
        let k = &s.kinds;
        crate::say!(
            "{:<16} {} segments ({}), {} checkpoints ({}), {} bases ({}), {} tenants, {window}",
            s.source,
            thousands(s.segments as u64),
            bytes(k.segments.bytes),
            thousands(s.checkpoints as u64),
            bytes(k.checkpoints.bytes),
            thousands(s.bases as u64),
            bytes(k.bases.bytes),
            thousands(s.tenants as u64),
        );
        if s.before_window.objects > 0 {
            crate::say!(
                "{:<16} {} objects ({}) before the window, left by a prune that did not finish: `lifeboat prune` deletes them",
                "",
                thousands(s.before_window.objects as u64),
                bytes(s.before_window.bytes)
            );
        }
    }
    if let Some(entries) = report.audit_entries {
        crate::say!(
            "audit log: {} entries checked against their anchors",
            thousands(entries as u64)
        );
    }
    for p in &report.problems {
        crate::say!("problem: {}: {}", p.object, p.problem);
    }
    let read = if report.read_data {
        format!(
            ", {:.1} MB read and every hash checked ({:.1} MB/s)",
            report.bytes_read as f64 / 1e6,
            report.bytes_read as f64 / 1e6 / seconds.max(1e-3)
        )
    } else {
        String::new()
    };
    let k = &report.kinds;
    crate::say!(
        "{}: {} objects ({}: segments {}, checkpoints {}, bases {}){read}; {}",
        report.vault,
        thousands(report.objects as u64),
        bytes(k.total.bytes),
        bytes(k.segments.bytes),
        bytes(k.checkpoints.bytes),
        bytes(k.bases.bytes),
        if report.ok {
            "no problems".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(code)
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Keep every point from this time (RFC 3339) to the head; default: `[vault]
    /// retention_days` ago.
    #[arg(long, value_name = "TIME")]
    keep_since: Option<String>,
    /// Show what would be deleted and the bytes it would free; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who prunes, for the audit log (default: the login name).
    #[arg(long)]
    by: Option<String>,
    #[arg(long)]
    json: bool,
}

/// `prune`: per source, the new window and what goes; then the total.
pub async fn prune(config_path: Option<PathBuf>, args: PruneArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let request = lifeboat_engine::prune::Request {
        keep_since_us: args
            .keep_since
            .as_deref()
            .map(lifeboat_core::time::parse)
            .transpose()?,
        dry_run: args.dry_run,
        by: args.by.clone(),
    };
    let started = std::time::Instant::now();
    let report = lifeboat_engine::prune::prune(&config, &config_path, &request).await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        value["keep_since"] = serde_json::json!(format_us(report.keep_since_us));
        value["seconds"] = serde_json::json!(seconds);
        print_json(&value);
        return Ok(0);
    }
    let window = |w: Option<(i64, i64)>| match w {
        Some((from, to)) => format!("{} .. {}", format_us(from), format_us(to)),
        None => "no history yet".to_string(),
    };
    let (verb, write) = if report.dry_run {
        ("would delete", "would write")
    } else {
        ("deleted", "wrote")
    };
    for s in &report.sources {
        crate::say!(
            "{:<16} window {} -> {}",
            s.source,
            window(s.window_before_us),
            window(s.window_after_us)
        );
        if let Some((tenant, at)) = &s.held_back_by {
            crate::say!(
                "{:<16} held back by tenant {tenant}, deleted at {at}, inside [guard] retention_days",
                ""
            );
        }
        crate::say!(
            "{:<16} {verb} {} segments, {} checkpoints, {} bases, {} key-map chunks and deltas ({}); {write} {} bases at the window's start",
            "",
            thousands(s.segments_deleted.objects as u64),
            thousands(s.checkpoints_deleted.objects as u64),
            thousands(s.bases_deleted.objects as u64),
            thousands(s.keymaps_deleted.objects as u64),
            bytes(s.bytes_freed),
            thousands(s.bases_written.objects as u64),
        );
    }
    crate::say!(
        "{}: {verb} {} objects, {} {}in {seconds:.1} s",
        report.vault,
        thousands(report.objects_deleted as u64),
        bytes(report.bytes_freed),
        if report.dry_run {
            "would be freed "
        } else {
            "freed "
        }
    );
    Ok(0)
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    json: bool,
}

/// `init`: create the vault, and say its id.
pub async fn init(config_path: Option<PathBuf>, args: InitArgs) -> Result<u8> {
    let config = load_config(config_path.as_deref())?;
    let vault = lifeboat_engine::context::init_vault(&config).await?;
    if args.json {
        print_json(&serde_json::json!({"vault": vault.describe(), "id": vault.id()}));
    } else {
        crate::say!("created vault {} at {}", vault.id(), vault.describe());
    }
    Ok(0)
}
