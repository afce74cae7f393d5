//! `prune`: retention (docs/vault-format.md, "Retention and garbage collection"). Per
//! source, the horizon is the newest checkpoint at or before the keep-since time (`[vault]
//! retention_days` ago by default), held back to the deletion point of every softly
//! deleted tenant still inside `[guard] retention_days`, so that undelete keeps working;
//! `lifeboat_core::prune` writes the bases the horizon needs and deletes what only served
//! earlier points. With `dry_run`, the plan alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::prune;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::{Error, Result};

use crate::check::Objects;
use crate::context::{open_vault, source_names};
use crate::guard::{control_store, login};

/// A day in microseconds.
const DAY_US: i64 = 86_400_000_000;

pub struct Request {
    /// Keep every point from this time on; `[vault] retention_days` ago when None.
    pub keep_since_us: Option<i64>,
    pub dry_run: bool,
    pub by: Option<String>,
}

/// What a prune did (or, dry, would do) to one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourcePrune {
    pub source: String,
    /// The window before, as commit times (µs).
    pub window_before_us: Option<(i64, i64)>,
    /// The window after: from the horizon to the head.
    pub window_after_us: Option<(i64, i64)>,
    /// The horizon checkpoint's position (the window's new start).
    pub horizon: Option<u64>,
    /// A softly deleted tenant that held the horizon back, and its deletion time.
    pub held_back_by: Option<(String, String)>,
    /// Bases written at the horizon (dry: to write; bytes unknown until written).
    pub bases_written: Objects,
    pub segments_deleted: Objects,
    pub checkpoints_deleted: Objects,
    pub bases_deleted: Objects,
    /// Key-map chunks no checkpoint kept refers to any more.
    pub keymaps_deleted: Objects,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vault: String,
    pub keep_since_us: i64,
    pub dry_run: bool,
    pub sources: Vec<SourcePrune>,
    pub objects_deleted: usize,
    pub bytes_freed: u64,
}

pub async fn prune(
    config: &Config,
    config_path: &Option<PathBuf>,
    request: &Request,
) -> Result<Report> {
    let now = now_us();
    let keep_since_us = match request.keep_since_us {
        Some(t) if t > now => {
            return Err(Error::usage(format!(
                "--keep-since {} is in the future: nothing after now can be kept",
                format_us(t)
            )))
        }
        Some(t) => t,
        None => now - i64::from(config.vault.retention_days) * DAY_US,
    };
    let vault = open_vault(config).await?;
    // Softly deleted tenants inside the guard's retention: undelete restores them to the
    // point before their deletion, which must stay inside every window.
    let mut control = control_store(config, config_path).await?;
    let guard_window = i64::from(config.guard.retention_days) * DAY_US;
    let deleted = control.deleted_tenants()?;
    // A purged tenant gets no base, even if a purge is still removing its history.
    let purged: BTreeSet<TenantKey> = deleted
        .iter()
        .filter(|t| t.purged)
        .map(|t| TenantKey::new(t.tenant.clone()))
        .collect();
    let protected: Vec<_> = deleted
        .into_iter()
        .filter(|t| !t.purged && t.deleted_at_us + guard_window > now)
        .collect();

    let names = source_names(config, &[])?;
    let mut plans = Vec::new();
    for name in &names {
        let history = SourceHistory::load(&vault, name).await?;
        let window = history.window_times(&vault).await?;
        if let (Some(t), Some((_, head_us))) = (request.keep_since_us, window) {
            if t > head_us {
                return Err(Error::usage(format!(
                    "--keep-since {} is after the head of source {name} ({}): a prune there \
                     would leave no restorable window",
                    format_us(t),
                    format_us(head_us)
                )));
            }
        }
        let held = protected
            .iter()
            .filter_map(|t| t.point.get(name).map(|p| (*p, t)))
            .min_by_key(|(p, _)| *p);
        let limit = held.map_or(u64::MAX, |(p, _)| p);
        let horizon = prune::horizon(&vault, &history, keep_since_us, limit).await?;
        let Some((horizon, horizon_time_us)) = horizon else {
            plans.push((history, None, window, None));
            continue;
        };
        // Held back: the horizon by time alone would have been later.
        let held_back_by = match held {
            Some((_, tenant)) => {
                let free = prune::horizon(&vault, &history, keep_since_us, u64::MAX).await?;
                free.filter(|(f, _)| f.position > horizon.position)
                    .map(|_| (tenant.tenant.clone(), tenant.deleted_at.clone()))
            }
            None => None,
        };
        let all_bases = vault.list_all_bases(name).await?;
        let plan = prune::plan(
            &vault,
            &history,
            &all_bases,
            horizon,
            horizon_time_us,
            &purged,
        )
        .await?;
        plans.push((history, Some(plan), window, held_back_by));
    }

    let mut report = Report {
        vault: vault.describe(),
        keep_since_us,
        dry_run: request.dry_run,
        sources: Vec::new(),
        objects_deleted: 0,
        bytes_freed: 0,
    };
    for (history, plan, window, held_back_by) in plans {
        let Some(plan) = plan else {
            report.sources.push(SourcePrune {
                source: history.source.clone(),
                window_before_us: window,
                window_after_us: window,
                horizon: None,
                held_back_by,
                bases_written: Objects::default(),
                segments_deleted: Objects::default(),
                checkpoints_deleted: Objects::default(),
                bases_deleted: Objects::default(),
                keymaps_deleted: Objects::default(),
                bytes_freed: 0,
            });
            continue;
        };
        let bases_written = if request.dry_run || plan.is_empty() {
            Objects {
                objects: plan.bases_to_write.len(),
                bytes: 0,
            }
        } else {
            let done = prune::execute(&vault, &history, &plan).await?;
            Objects {
                objects: done.bases_written,
                bytes: done.bytes_written,
            }
        };
        let summary = SourcePrune {
            source: history.source.clone(),
            window_before_us: window,
            window_after_us: window.map(|(from, to)| (from.max(plan.horizon_time_us), to)),
            horizon: Some(plan.horizon.position),
            held_back_by,
            bases_written,
            segments_deleted: Objects::of(plan.segments.iter().map(|s| s.size)),
            checkpoints_deleted: Objects::of(plan.checkpoints.iter().map(|c| c.size)),
            bases_deleted: Objects::of(plan.bases.iter().map(|b| b.size)),
            keymaps_deleted: Objects::of(plan.keymaps.iter().map(|k| k.size)),
            bytes_freed: plan.bytes_freed(),
        };
        report.objects_deleted += plan.objects_deleted();
        report.bytes_freed += summary.bytes_freed;
        report.sources.push(summary);
    }
    if !request.dry_run && report.objects_deleted > 0 {
        let sources: BTreeMap<&str, serde_json::Value> = report
            .sources
            .iter()
            .map(|s| {
                (
                    s.source.as_str(),
                    json!({"horizon": s.horizon, "objects_deleted": s.segments_deleted.objects
                        + s.checkpoints_deleted.objects + s.bases_deleted.objects
                        + s.keymaps_deleted.objects,
                        "bytes_freed": s.bytes_freed}),
                )
            })
            .collect();
        control
            .append(
                &login(request.by.clone()),
                "prune",
                "vault",
                json!({"keep_since": format_us(keep_since_us), "sources": sources}),
            )
            .await?;
    }
    Ok(report)
}
