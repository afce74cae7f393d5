//! `check`: the whole vault checked at once (docs/vault-format.md). The header and its
//! version; per source, every checkpoint and segment readable and its head matching its
//! name, the segments continuous from the first checkpoint to the head ("Continuity"),
//! no base beyond the head; the audit anchors against the control store's log. With
//! `read_data`, every object is read whole and every hash checked: segment heads and
//! chunks, bases, checkpoints and their key maps.
//!
//! Unlike the readers, which stop at the first problem, `check` goes on and reports every
//! problem it finds, each naming its object.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::vault::{SegmentRef, Vault};
use lifeboat_core::Result;

use crate::context::{open_vault, source_names};
use crate::progress::{Event, Reporter};

/// What to check.
pub struct Request {
    /// Only these sources (all configured ones when empty).
    pub sources: Vec<String>,
    /// Read every object whole and check every hash.
    pub read_data: bool,
}

/// One thing wrong, and the object it is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// What the vault holds for one source.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SourceSummary {
    pub source: String,
    pub segments: usize,
    pub checkpoints: usize,
    pub bases: usize,
    pub tenants: usize,
    /// The restorable window: first checkpoint to head, as positions.
    pub window: Option<(u64, u64)>,
    /// The same window as commit times (µs).
    pub window_us: Option<(i64, i64)>,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vault: String,
    pub objects: usize,
    /// Bytes read: every object's with `read_data`, heads only without.
    pub bytes_read: u64,
    pub read_data: bool,
    pub sources: Vec<SourceSummary>,
    /// Audit log entries checked against their anchors (None: no control store).
    pub audit_entries: Option<usize>,
    pub problems: Vec<Problem>,
    pub ok: bool,
}

pub async fn check(
    config: &Config,
    config_path: &Option<PathBuf>,
    request: &Request,
    progress: &Reporter,
) -> Result<Report> {
    let names = source_names(config, &request.sources)?;
    // The header and its version: a vault that cannot be opened is an error, not a list.
    let vault = open_vault(config).await?;
    let mut histories = Vec::with_capacity(names.len());
    for name in &names {
        histories.push(SourceHistory::load(&vault, name).await?);
    }
    let objects: usize = histories
        .iter()
        .map(|h| {
            h.segments.len() + h.checkpoints.len() + h.bases.values().map(Vec::len).sum::<usize>()
        })
        .sum();
    progress.event(Event::CheckStarted { objects });
    let mut report = Report {
        vault: vault.describe(),
        objects,
        bytes_read: 0,
        read_data: request.read_data,
        sources: Vec::new(),
        audit_entries: None,
        problems: Vec::new(),
        ok: true,
    };
    for history in &histories {
        let summary = check_source(&vault, history, request.read_data, progress, &mut report).await;
        report.sources.push(summary);
    }
    if config.control.is_some() {
        let (entries, verified) =
            crate::guard::audit_verify(config, config_path, crate::guard::ANCHOR_GRACE_US).await?;
        report.audit_entries = Some(entries);
        report
            .problems
            .extend(verified.problems.into_iter().map(|problem| Problem {
                object: "audit log".into(),
                problem,
            }));
    }
    progress.event(Event::CheckFinished);
    report.ok = report.problems.is_empty();
    Ok(report)
}

async fn check_source(
    vault: &Vault,
    history: &SourceHistory,
    read_data: bool,
    progress: &Reporter,
    report: &mut Report,
) -> SourceSummary {
    let source = &history.source;
    let mut summary = SourceSummary {
        source: source.clone(),
        segments: history.segments.len(),
        checkpoints: history.checkpoints.len(),
        bases: history.bases.values().map(Vec::len).sum(),
        ..SourceSummary::default()
    };
    let mut problem = |object: &str, text: String| {
        report.problems.push(Problem {
            object: object.to_string(),
            problem: text,
        })
    };
    let (Some(start), Some(head)) = (history.earliest_position(), history.latest_position()) else {
        if !history.segments.is_empty() {
            problem(
                &history.segments[0].name,
                format!("source {source} has segments but no checkpoint"),
            );
        }
        return summary;
    };
    summary.window = Some((start, head));
    let mut bytes = 0u64;

    // Checkpoints: the head (and, reading data, the key maps) against the name.
    for checkpoint in &history.checkpoints {
        if read_data {
            match vault.verify_object(&checkpoint.name).await {
                Ok(n) => bytes += n,
                Err(e) => problem(&checkpoint.name, e.message().to_string()),
            }
        }
        let read = history
            .checkpoint_head(vault, &checkpoint.name)
            .await
            .map(|h| h.position);
        match read {
            Ok(position) if position != checkpoint.position => problem(
                &checkpoint.name,
                format!("holds position {position}, not the one in its name"),
            ),
            Ok(_) => {}
            Err(e) => problem(&checkpoint.name, e.message().to_string()),
        }
        progress.event(Event::ObjectChecked);
    }

    // Segments, in name order: each read (its head, or whole), then linked to the one
    // before from the first checkpoint on.
    let mut tenants: BTreeSet<TenantKey> = history.bases.keys().cloned().collect();
    let mut covered = start;
    let mut before = history.checkpoints[0].name.clone();
    let mut walked = 0usize;
    let mut i = 0;
    while i < history.segments.len() {
        let range = (history.segments[i].first, history.segments[i].last);
        let same: Vec<&SegmentRef> = history.segments[i..]
            .iter()
            .take_while(|s| (s.first, s.last) == range)
            .collect();
        i += same.len();
        // Every copy is read; the newest generation is the one readers use.
        let mut chosen: Option<(&SegmentRef, u64, u32)> = None;
        for segment in &same {
            if read_data {
                match vault.verify_object(&segment.name).await {
                    Ok(n) => bytes += n,
                    Err(e) => problem(&segment.name, e.message().to_string()),
                }
            }
            let read = history.summary(vault, &segment.name).await.map(|s| {
                tenants.extend(s.1.iter().cloned());
                (s.0.first, s.0.last, s.0.prev, s.0.generation)
            });
            progress.event(Event::ObjectChecked);
            let (first, last, prev, generation) = match read {
                Ok(read) => read,
                Err(e) => {
                    problem(&segment.name, e.message().to_string());
                    continue;
                }
            };
            if (first, last) != (segment.first, segment.last) {
                problem(
                    &segment.name,
                    format!("holds positions {first} to {last}, not the ones in its name"),
                );
                continue;
            }
            match chosen {
                Some((other, _, g)) if g == generation => problem(
                    &segment.name,
                    format!(
                        "source {source}: holds positions {first} to {last}, as {} does \
                         (a duplicate)",
                        other.name
                    ),
                ),
                Some((other, _, g)) if g > generation => problem(
                    &segment.name,
                    format!(
                        "superseded by {} (a purge that did not finish: run it again)",
                        other.name
                    ),
                ),
                Some((other, _, _)) => {
                    problem(
                        &other.name,
                        format!(
                            "superseded by {} (a purge that did not finish: run it again)",
                            segment.name
                        ),
                    );
                    chosen = Some((segment, prev, generation));
                }
                None => chosen = Some((segment, prev, generation)),
            }
        }
        let Some((segment, prev, _)) = chosen else {
            // Unreadable: its successor's link is checked against what it would have held.
            covered = covered.max(range.1);
            before = same[0].name.clone();
            walked += 1;
            continue;
        };
        if segment.last <= start {
            // History before the window (left by a prune that stopped half way).
            continue;
        }
        if prev > covered {
            problem(
                &segment.name,
                format!(
                    "source {source}: positions {} to {prev} are missing, between {before} \
                     and {} (a gap)",
                    covered + 1,
                    segment.name
                ),
            );
        } else if walked > 0 && (prev < covered || segment.first <= covered) {
            problem(
                &segment.name,
                format!(
                    "source {source}: positions {} to {covered} are held twice, by {before} \
                     and {} (an overlap)",
                    (prev + 1).min(segment.first),
                    segment.name
                ),
            );
        } else if walked == 0 && prev < start {
            problem(
                &segment.name,
                format!(
                    "source {source}: links to position {prev}, before the first checkpoint \
                     {before} at {start}"
                ),
            );
        }
        covered = covered.max(segment.last);
        before = segment.name.clone();
        walked += 1;
    }
    if covered < head {
        let checkpoint = history
            .checkpoints
            .iter()
            .find(|c| c.position > covered)
            .map_or_else(|| format!("position {head}"), |c| c.name.clone());
        problem(
            &checkpoint,
            format!(
                "source {source}: positions {} to {head} are missing, between {before} and \
                 {checkpoint} (a gap)",
                covered + 1
            ),
        );
    }

    // Bases: none beyond the head; reading data, each whole against its name.
    for bases in history.bases.values() {
        for base in bases {
            if base.position > head {
                problem(
                    &base.name,
                    format!("source {source}: a base beyond the head of the history ({head})"),
                );
            }
            if read_data {
                match vault.verify_object(&base.name).await {
                    Ok(n) => bytes += n,
                    Err(e) => problem(&base.name, e.message().to_string()),
                }
            }
            progress.event(Event::ObjectChecked);
        }
    }
    summary.tenants = tenants.len();
    summary.window_us = history.window_times(vault).await.ok().flatten();
    report.bytes_read += bytes;
    summary
}
