//! Garbage collection: drop the history that only serves points before a source's
//! horizon (docs/vault-format.md, "Retention and garbage collection"). `plan` computes
//! what goes, reading nothing but the listing, checkpoint heads and segment heads;
//! `execute` writes every missing base at the horizon, then deletes checkpoints (newest
//! first, so the window's start moves in one step), segments and bases, so that a crash
//! between any two steps leaves a vault every reader accepts. Running it again finishes.

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::compaction::base_from_state;
use crate::error::Result;
use crate::failpoint;
use crate::model::TenantKey;
use crate::state::{SourceHistory, TenantState};
use crate::vault::{
    keymap_chunk_name, keymap_delta_name, keymap_listing_name, PositionRef, SegmentRef, Vault,
};

/// Tenants opened from the vault at once while bases are written at the horizon.
const BASE_BATCH: usize = 64;

/// Bases written at once: each write waits for the store to make it durable.
const PUTS_IN_FLIGHT: usize = 8;

/// What a prune of one source does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: String,
    /// The new first checkpoint: the window will start here.
    pub horizon: PositionRef,
    pub horizon_time_us: i64,
    /// Tenants without a base at the horizon that need one.
    pub bases_to_write: Vec<TenantKey>,
    /// Checkpoints below the horizon, newest first (the order they are deleted in).
    pub checkpoints: Vec<PositionRef>,
    /// Segments whose `last` is at or below the horizon.
    pub segments: Vec<SegmentRef>,
    /// Bases below the horizon.
    pub bases: Vec<PositionRef>,
    /// Key-map chunks below the horizon that no checkpoint at or above it refers to
    /// (found when the plan is made; looked for again after the checkpoints are deleted).
    pub keymaps: Vec<PositionRef>,
}

impl Plan {
    pub fn bytes_freed(&self) -> u64 {
        self.checkpoints.iter().map(|c| c.size).sum::<u64>()
            + self.segments.iter().map(|s| s.size).sum::<u64>()
            + self.bases.iter().map(|b| b.size).sum::<u64>()
            + self.keymaps.iter().map(|k| k.size).sum::<u64>()
    }

    pub fn objects_deleted(&self) -> usize {
        self.checkpoints.len() + self.segments.len() + self.bases.len() + self.keymaps.len()
    }

    /// Nothing to write or delete.
    pub fn is_empty(&self) -> bool {
        self.bases_to_write.is_empty() && self.objects_deleted() == 0
    }
}

/// The newest checkpoint whose commit time is at or before `keep_since_us` and whose
/// position is at or below `limit`; the first checkpoint when none is. None: the source
/// has no history.
pub async fn horizon(
    vault: &Vault,
    history: &SourceHistory,
    keep_since_us: i64,
    limit: u64,
) -> Result<Option<(PositionRef, i64)>> {
    let Some(first) = history.checkpoints.first() else {
        return Ok(None);
    };
    // Checkpoints' times grow with their positions: find the last one at or before the
    // time by halving, reading O(log n) heads.
    let eligible = history.checkpoints.partition_point(|c| c.position <= limit);
    let (mut low, mut high) = (0usize, eligible);
    while low < high {
        let middle = low + (high - low) / 2;
        let head = history
            .checkpoint_head(vault, &history.checkpoints[middle].name)
            .await?;
        if head.commit_time_us <= keep_since_us {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let chosen = history.checkpoints[..low].last().unwrap_or(first).clone();
    let time_us = history
        .checkpoint_head(vault, &chosen.name)
        .await?
        .commit_time_us;
    Ok(Some((chosen, time_us)))
}

/// What pruning `history` up to `horizon` (one of its checkpoints) writes and deletes.
/// `all_bases` are the source's bases as listed, those below the first checkpoint too.
/// No base is written for a tenant in `purged` (a purge running meanwhile removes it).
pub async fn plan(
    vault: &Vault,
    history: &SourceHistory,
    all_bases: &std::collections::BTreeMap<TenantKey, Vec<PositionRef>>,
    horizon: PositionRef,
    horizon_time_us: i64,
    purged: &BTreeSet<TenantKey>,
) -> Result<Plan> {
    let h = horizon.position;
    // Every tenant the history before the horizon knows: a base, or changes in a segment
    // up to the horizon (walked through the chain, so a broken history is refused here).
    let mut known: BTreeSet<TenantKey> = history
        .bases
        .iter()
        .filter(|(_, bases)| bases.iter().any(|b| b.position < h))
        .map(|(t, _)| t.clone())
        .collect();
    let earliest = history.earliest_position().unwrap_or(h);
    let mut chain = history.chain(earliest, h);
    while let Some((_, summary)) = chain.next(vault).await? {
        known.extend(summary.1.iter().cloned());
    }
    let bases_to_write = known
        .into_iter()
        .filter(|t| !purged.contains(t))
        .filter(|t| {
            !history
                .bases
                .get(t)
                .is_some_and(|bases| bases.iter().any(|b| b.position == h))
        })
        .collect();
    let mut checkpoints: Vec<PositionRef> = history
        .checkpoints
        .iter()
        .filter(|c| c.position < h)
        .cloned()
        .collect();
    checkpoints.reverse();
    let segments = history
        .segments
        .iter()
        .filter(|s| s.last <= h)
        .cloned()
        .collect();
    let bases = all_bases
        .values()
        .flatten()
        .filter(|b| b.position < h)
        .cloned()
        .collect();
    let keymaps = unreferenced_keymap_chunks(vault, &history.source, h, h).await?;
    Ok(Plan {
        source: history.source.clone(),
        horizon,
        horizon_time_us,
        bases_to_write,
        checkpoints,
        segments,
        bases,
        keymaps,
    })
}

/// The source's key-map listings, chunks and deltas below `below` that no checkpoint at or
/// above `kept_from` refers to, directly or through its listings (a prune: both the
/// horizon). Chunks are listed before checkpoints: a chunk
/// written after the listing is not looked at, and a checkpoint written after it refers
/// only to new chunks or to those of a checkpoint listed here (docs/vault-format.md,
/// "Retention and garbage collection").
pub async fn unreferenced_keymap_chunks(
    vault: &Vault,
    source: &str,
    below: u64,
    kept_from: u64,
) -> Result<Vec<PositionRef>> {
    let chunks: Vec<PositionRef> = vault
        .list_keymap_chunks(source)
        .await?
        .into_iter()
        .filter(|c| c.position < below)
        .collect();
    if chunks.is_empty() {
        return Ok(chunks);
    }
    let mut referenced = BTreeSet::new();
    for checkpoint in vault.list_checkpoints(source).await? {
        if checkpoint.position < kept_from {
            continue;
        }
        for map in vault.read_checkpoint_index(&checkpoint.name).await?.keymaps {
            // A listing shared by many checkpoints is read once; one that cannot be read
            // stops the prune before anything of the key maps is deleted.
            if let Some(listing) = &map.listing {
                let name = keymap_listing_name(source, listing.position, &listing.hash);
                if referenced.insert(name) {
                    let chunks = vault
                        .read_keymap_listing(source, &map)
                        .await
                        .map_err(|e| e.context(format!("checkpoint {}", checkpoint.name)))?;
                    for chunk in chunks {
                        referenced.insert(keymap_chunk_name(source, chunk.position, &chunk.hash));
                    }
                }
            }
            for delta in map.deltas {
                referenced.insert(keymap_delta_name(source, delta.position, &delta.hash));
            }
        }
    }
    Ok(chunks
        .into_iter()
        .filter(|c| !referenced.contains(&c.name))
        .collect())
}

/// What `execute` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    pub bases_written: usize,
    pub bytes_written: u64,
    pub objects_deleted: usize,
    pub bytes_freed: u64,
}

/// Carry out `plan` on `history` (the listing it was made from), in the order of
/// docs/vault-format.md: bases at the horizon, checkpoints below it newest first, segments
/// at or below it, bases below it.
pub async fn execute(vault: &Vault, history: &SourceHistory, plan: &Plan) -> Result<Done> {
    let mut done = Done::default();
    let h = plan.horizon.position;
    for batch in plan.bases_to_write.chunks(BASE_BATCH) {
        let tenants: BTreeSet<TenantKey> = batch.iter().cloned().collect();
        let streams = history.streams_at(vault, &tenants, h).await?;
        // Each base is built when its write starts: at most PUTS_IN_FLIGHT bases in memory.
        let mut puts = stream::iter(streams.into_iter().map(|(tenant, stream)| {
            let base = TenantState::collect(stream).map(|state| {
                base_from_state(&plan.source, &tenant, h, plan.horizon_time_us, &state)
            });
            async move { vault.put_base_listed(&base?).await }
        }))
        .buffer_unordered(PUTS_IN_FLIGHT);
        while let Some(written) = puts.try_next().await? {
            done.bases_written += 1;
            done.bytes_written += written.size;
            failpoint::hit("prune.after-base-written");
        }
    }
    for checkpoint in &plan.checkpoints {
        vault.delete(&checkpoint.name).await?;
        done.objects_deleted += 1;
        done.bytes_freed += checkpoint.size;
        failpoint::hit("prune.after-checkpoint-deleted");
    }
    for segment in &plan.segments {
        vault.delete(&segment.name).await?;
        done.objects_deleted += 1;
        done.bytes_freed += segment.size;
        failpoint::hit("prune.after-segment-deleted");
    }
    for base in &plan.bases {
        vault.delete(&base.name).await?;
        done.objects_deleted += 1;
        done.bytes_freed += base.size;
        failpoint::hit("prune.after-base-deleted");
    }
    // Last: the chunks that only checkpoints below the horizon referred to.
    for chunk in &plan.keymaps {
        vault.delete(&chunk.name).await?;
        done.objects_deleted += 1;
        done.bytes_freed += chunk.size;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::error::ErrorKind;
    use crate::model::Value;
    use crate::model::{Base, BaseRow, Change, Checkpoint, Op, Segment, TableSchema, Transaction};
    use crate::vault::LocalStore;

    fn table() -> TableSchema {
        TableSchema {
            name: "t".into(),
            columns: vec!["id".into()],
            key: vec![0],
        }
    }

    /// A segment covering (prev, last] where tenant `tenant` inserts row `last` and, from
    /// the third segment on, tenant 1 deletes row `last - 20`.
    fn segment(prev: u64, last: u64, tenant: &str) -> Segment {
        let mut changes = vec![Change {
            tenant: Some(TenantKey::new(tenant)),
            table: 0,
            op: Op::Insert,
            old: None,
            new: Some(vec![Value::Int(last as i64)]),
            position: last,
            time_us: None,
        }];
        if last >= 40 {
            changes.push(Change {
                tenant: Some(TenantKey::new("1")),
                table: 0,
                op: Op::Delete,
                old: Some(vec![Value::Int(last as i64 - 20)]),
                new: None,
                position: last,
                time_us: None,
            });
        }
        Segment {
            source: "s".into(),
            first: last,
            last,
            prev,
            generation: 0,
            tables: vec![table()],
            transactions: vec![Transaction {
                xid: last,
                position: last,
                commit_time_us: last as i64,
                changes,
            }],
        }
    }

    fn checkpoint(position: u64) -> Checkpoint {
        Checkpoint {
            source: "s".into(),
            position,
            commit_time_us: position as i64,
            tables: vec![table()],
            keymaps: Vec::new(),
        }
    }

    /// Checkpoints at 10, 30 and 50; tenants 1 and 2 with bases at 10; tenant 3 first seen
    /// at 20 (no base); segments every 10 positions up to 70.
    async fn history(dir: &std::path::Path) -> Vault {
        let vault = Vault::init(Arc::new(LocalStore::new(dir)))
            .await
            .expect("vault");
        for tenant in ["1", "2"] {
            vault
                .put_base(&Base {
                    source: "s".into(),
                    tenant: TenantKey::new(tenant),
                    position: 10,
                    commit_time_us: 10,
                    tables: vec![table()],
                    rows: vec![BaseRow {
                        table: 0,
                        values: vec![Value::Int(1)],
                    }],
                })
                .await
                .expect("base");
        }
        for position in [10, 30, 50] {
            vault
                .put_checkpoint(&checkpoint(position))
                .await
                .expect("checkpoint");
        }
        for (last, tenant) in [
            (20, "3"),
            (30, "1"),
            (40, "2"),
            (50, "1"),
            (60, "3"),
            (70, "1"),
        ] {
            vault
                .put_segment(&segment(last - 10, last, tenant))
                .await
                .expect("segment");
        }
        vault
    }

    /// Every tenant's rows at every position from 10 to 70 (None: refused).
    async fn all_states(vault: &Vault) -> BTreeMap<u64, Option<BTreeMap<TenantKey, usize>>> {
        let history = SourceHistory::load(vault, "s").await.expect("history");
        let tenants: BTreeSet<TenantKey> = ["1", "2", "3"].map(TenantKey::new).into();
        let mut out = BTreeMap::new();
        for position in (10..=70).step_by(5) {
            let states = match history.states_at(vault, &tenants, position).await {
                Ok(states) => Some(
                    states
                        .into_iter()
                        .map(|(t, s)| (t, s.row_count()))
                        .collect(),
                ),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::OutOfWindow, "{e}");
                    None
                }
            };
            out.insert(position, states);
        }
        out
    }

    async fn prune_plan(vault: &Vault, keep_since_us: i64) -> (SourceHistory, Plan) {
        let history = SourceHistory::load(vault, "s").await.expect("history");
        let (horizon, time_us) = super::horizon(vault, &history, keep_since_us, u64::MAX)
            .await
            .expect("horizon")
            .expect("a checkpoint");
        let all = vault.list_all_bases("s").await.expect("bases");
        let plan = plan(vault, &history, &all, horizon, time_us, &BTreeSet::new())
            .await
            .expect("plan");
        (history, plan)
    }

    /// A prune stopped after any number of its steps leaves every point of the new window
    /// readable with the rows it had, and every point of the old one either so or refused
    /// as outside the window; running it again finishes the job.
    #[tokio::test]
    async fn a_prune_stopped_after_any_step_keeps_the_window_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = history(dir.path()).await;
        let before = all_states(&vault).await;
        let (_, full) = prune_plan(&vault, 45).await;
        assert_eq!(full.horizon.position, 30);
        let tenants: Vec<&str> = full.bases_to_write.iter().map(|t| t.as_str()).collect();
        assert_eq!(tenants, ["1", "2", "3"]);
        assert_eq!(full.checkpoints.len(), 1);
        assert_eq!(full.segments.len(), 2);
        assert_eq!(full.bases.len(), 2);
        let steps = full.objects_deleted();

        for stop in 0..=steps {
            let dir = tempfile::tempdir().expect("tempdir");
            let vault = history(dir.path()).await;
            let (history, mut partial) = prune_plan(&vault, 45).await;
            // The first `stop` deletions, in execute's order.
            let mut left = stop;
            let mut take = |n: usize| {
                let t = n.min(left);
                left -= t;
                t
            };
            let c = take(partial.checkpoints.len());
            let s = take(partial.segments.len());
            let b = take(partial.bases.len());
            partial.checkpoints.truncate(c);
            partial.segments.truncate(s);
            partial.bases.truncate(b);
            execute(&vault, &history, &partial).await.expect("partial");
            let now = all_states(&vault).await;
            for (position, state) in &now {
                match state {
                    Some(state) => assert_eq!(Some(state), before[position].as_ref()),
                    None => assert!(*position < 30, "{position} refused after {stop} steps"),
                }
            }
            // Again, from the start: finished.
            let (history, again) = prune_plan(&vault, 45).await;
            execute(&vault, &history, &again).await.expect("again");
            let done = all_states(&vault).await;
            for (position, state) in &done {
                if *position >= 30 {
                    assert_eq!(state, &before[position], "at {position}");
                } else {
                    assert_eq!(state, &None, "at {position}");
                }
            }
            let (_, nothing) = prune_plan(&vault, 45).await;
            assert!(nothing.is_empty(), "{nothing:?}");
        }

        // The chain starts at the new first checkpoint, and still refuses a gap after it.
        let (history, plan) = prune_plan(&vault, 45).await;
        execute(&vault, &history, &plan).await.expect("prune");
        let history = SourceHistory::load(&vault, "s").await.expect("history");
        let middle = history.segments[1].name.clone();
        vault.delete(&middle).await.expect("delete");
        let history = SourceHistory::load(&vault, "s").await.expect("history");
        let tenants: BTreeSet<TenantKey> = [TenantKey::new("1")].into();
        let err = history
            .states_at(&vault, &tenants, 70)
            .await
            .expect_err("a gap");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(
            err.to_string().contains("positions 41 to 50 are missing"),
            "{err}"
        );
        assert!(history.states_at(&vault, &tenants, 40).await.is_ok());
    }
}
