//! `check`: the whole vault checked at once (docs/vault-format.md). The header and its
//! version; per source, every checkpoint and segment readable and its head matching its
//! name, the segments continuous from the first checkpoint to the head ("Continuity"),
//! no base beyond the head, every tenant known before the window's start with a base at
//! it; the audit anchors against the control store's log. Objects and bytes per kind come
//! from the listing, so the summary costs no reads. With
//! `read_data`, every object is read whole and every hash checked: segment heads and
//! chunks, bases, checkpoints and their key maps.
//!
//! Unlike the readers, which stop at the first problem, `check` goes on and reports every
//! problem it finds, each naming its object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::vault::{
    keymap_chunk_name, keymap_delta_name, keymap_listing_name, PositionRef, SegmentRef, Vault,
};
use lifeboat_core::Result;

use crate::context::{control_url, open_vault, source_names};
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

/// Objects of one kind: how many, how many bytes (as listed).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Objects {
    pub objects: usize,
    pub bytes: u64,
}

impl Objects {
    pub fn of(sizes: impl Iterator<Item = u64>) -> Objects {
        sizes.fold(Objects::default(), |o, size| {
            o.plus(Objects {
                objects: 1,
                bytes: size,
            })
        })
    }

    pub fn plus(self, other: Objects) -> Objects {
        Objects {
            objects: self.objects + other.objects,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// Objects and bytes by kind.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Kinds {
    pub segments: Objects,
    pub checkpoints: Objects,
    pub bases: Objects,
    /// Key-map chunks (docs/vault-format.md, "Key maps").
    pub keymaps: Objects,
    pub total: Objects,
}

impl Kinds {
    fn add(&mut self, other: &Kinds) {
        self.segments = self.segments.plus(other.segments);
        self.checkpoints = self.checkpoints.plus(other.checkpoints);
        self.bases = self.bases.plus(other.bases);
        self.keymaps = self.keymaps.plus(other.keymaps);
        self.total = self.total.plus(other.total);
    }
}

/// What the vault holds for one source.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SourceSummary {
    pub source: String,
    pub segments: usize,
    pub checkpoints: usize,
    pub bases: usize,
    /// Every object of the source by kind, with its bytes as listed.
    pub kinds: Kinds,
    /// Segments at or below the first checkpoint and bases below it: history before the
    /// window that an interrupted prune left (`lifeboat prune` deletes them).
    pub before_window: Objects,
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
    /// Every source's objects by kind, with their bytes as listed.
    pub kinds: Kinds,
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
        // The bases as listed: the history leaves out those below the window.
        let all_bases = vault.list_all_bases(name).await?;
        histories.push((SourceHistory::load(&vault, name).await?, all_bases));
    }
    let objects: usize = histories
        .iter()
        .map(|(h, bases)| {
            h.segments.len() + h.checkpoints.len() + bases.values().map(Vec::len).sum::<usize>()
        })
        .sum();
    progress.event(Event::CheckStarted { objects });
    let mut report = Report {
        vault: vault.describe(),
        objects,
        kinds: Kinds::default(),
        bytes_read: 0,
        read_data: request.read_data,
        sources: Vec::new(),
        audit_entries: None,
        problems: Vec::new(),
        ok: true,
    };
    for (history, all_bases) in &histories {
        let summary = check_source(
            &vault,
            history,
            all_bases,
            request.read_data,
            progress,
            &mut report,
        )
        .await;
        report.kinds.add(&summary.kinds);
        report.sources.push(summary);
    }
    // The audit log, where there is a control store: configured, or the default file
    // beside the configuration.
    let has_control = config.control.is_some()
        || control_url(config, config_path).is_ok_and(|url| std::path::Path::new(&url).exists());
    if has_control {
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
    all_bases: &BTreeMap<TenantKey, Vec<PositionRef>>,
    read_data: bool,
    progress: &Reporter,
    report: &mut Report,
) -> SourceSummary {
    let source = &history.source;
    let mut summary = SourceSummary {
        source: source.clone(),
        segments: history.segments.len(),
        checkpoints: history.checkpoints.len(),
        bases: all_bases.values().map(Vec::len).sum(),
        ..SourceSummary::default()
    };
    let kinds = &mut summary.kinds;
    kinds.segments = Objects::of(history.segments.iter().map(|s| s.size));
    kinds.checkpoints = Objects::of(history.checkpoints.iter().map(|c| c.size));
    kinds.bases = Objects::of(all_bases.values().flatten().map(|b| b.size));
    kinds.total = kinds.segments.plus(kinds.checkpoints).plus(kinds.bases);
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
    summary.before_window = Objects::of(
        history
            .segments
            .iter()
            .filter(|s| s.last <= start)
            .map(|s| s.size)
            .chain(
                all_bases
                    .values()
                    .flatten()
                    .filter(|b| b.position < start)
                    .map(|b| b.size),
            ),
    );
    let mut bytes = 0u64;

    // Every tenant the history before the window knew has its rows at the window's start
    // in a base there: readers ignore bases below the first checkpoint.
    for (tenant, bases) in all_bases {
        let before = bases.iter().find(|b| b.position < start);
        if let Some(before) = before {
            if !bases.iter().any(|b| b.position == start) {
                problem(
                    &before.name,
                    format!(
                        "source {source}: tenant {tenant} has bases only before the window's \
                         start ({start}) and none at it: its rows there are not in the vault"
                    ),
                );
            }
        }
    }

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

    // Key maps: every listing, chunk and delta a checkpoint refers to is there; each listing
    // is read once (checked against its name and the index) for the chunks it names; reading
    // data, each chunk and delta once, whole, against its name and the reference.
    let mut verified: BTreeSet<String> = BTreeSet::new();
    let mut listings_seen: BTreeSet<String> = BTreeSet::new();
    match vault.list_keymap_chunks(source).await {
        Err(e) => problem(
            &format!("sources/{source}/keymaps/"),
            e.message().to_string(),
        ),
        Ok(chunks) => {
            let listed: BTreeMap<String, u64> =
                chunks.iter().map(|c| (c.name.clone(), c.size)).collect();
            let listed_objects = Objects::of(chunks.iter().map(|c| c.size));
            summary.kinds.keymaps = listed_objects;
            summary.kinds.total = summary.kinds.total.plus(listed_objects);
            for checkpoint in &history.checkpoints {
                let index = match vault.read_checkpoint_index(&checkpoint.name).await {
                    Ok(read) => read.keymaps,
                    Err(e) => {
                        problem(&checkpoint.name, e.message().to_string());
                        continue;
                    }
                };
                for map in &index {
                    // The chunks of a listing are checked once, with its first checkpoint.
                    let chunks = match &map.listing {
                        None if map.keys == 0 => Vec::new(),
                        None => {
                            problem(
                                &checkpoint.name,
                                format!(
                                    "the key map of {}.{} counts {} keys but names no key-map \
                                     listing",
                                    map.table, map.column, map.keys
                                ),
                            );
                            Vec::new()
                        }
                        Some(listing) => {
                            let name = keymap_listing_name(source, listing.position, &listing.hash);
                            if !listings_seen.insert(name.clone()) {
                                Vec::new()
                            } else if !listed.contains_key(&name) {
                                problem(
                                    &name,
                                    format!(
                                        "missing: checkpoint {} refers to it as the listing of \
                                         the key map of {}.{}",
                                        checkpoint.name, map.table, map.column
                                    ),
                                );
                                Vec::new()
                            } else {
                                progress.event(Event::ObjectChecked);
                                match vault.read_keymap_listing(source, map).await {
                                    Ok(chunks) => {
                                        if read_data {
                                            bytes += listed[&name];
                                        }
                                        chunks
                                    }
                                    Err(e) => {
                                        problem(&name, e.message().to_string());
                                        Vec::new()
                                    }
                                }
                            }
                        }
                    };
                    for chunk in &chunks {
                        let name = keymap_chunk_name(source, chunk.position, &chunk.hash);
                        if !listed.contains_key(&name) {
                            problem(
                                &name,
                                format!(
                                    "missing: checkpoint {} refers to it for bucket {} of \
                                     the key map of {}.{}",
                                    checkpoint.name, chunk.bucket, map.table, map.column
                                ),
                            );
                            continue;
                        }
                        if !read_data || verified.contains(&name) {
                            continue;
                        }
                        match vault.read_keymap_chunk(source, map, chunk).await {
                            Ok(_) => bytes += listed[&name],
                            Err(e) => problem(&name, e.message().to_string()),
                        }
                        verified.insert(name);
                        progress.event(Event::ObjectChecked);
                    }
                    for delta in &map.deltas {
                        let name = keymap_delta_name(source, delta.position, &delta.hash);
                        if !listed.contains_key(&name) {
                            problem(
                                &name,
                                format!(
                                    "missing: checkpoint {} refers to it as a delta of the key \
                                     map of {}.{}",
                                    checkpoint.name, map.table, map.column
                                ),
                            );
                            continue;
                        }
                        if !read_data || verified.contains(&name) {
                            continue;
                        }
                        match vault.read_keymap_delta(source, map, delta).await {
                            Ok(_) => bytes += listed[&name],
                            Err(e) => problem(&name, e.message().to_string()),
                        }
                        verified.insert(name);
                        progress.event(Event::ObjectChecked);
                    }
                }
            }
        }
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
    for bases in all_bases.values() {
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
