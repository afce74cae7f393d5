//! Decode speed on one core: pgoutput messages recorded from a real server (one hex line
//! per message, as `scripts/bench-decode` writes them from
//! `pg_logical_slot_get_binary_changes`) go through the decoder alone, then through the
//! decoder and attribution to tenants (the tracker's tenancy: `site_id`, `sites.id`, and
//! `comments` via `issue_id -> issues.id`, with the key maps in memory). Ignored by default;
//! `LIFEBOAT_DECODE_RECORDING=FILE` names the recording.

use std::collections::HashMap;
use std::time::Instant;

use lifeboat_core::model::{Op, TableSchema};
use lifeboat_core::tenancy::{
    attribute, Keymaps, RawChange, ResolvedTable, SourceTenancy, Tenancy,
};

use super::pgoutput::{self, Message, Relation};
use super::row_from;

fn recording() -> Vec<Vec<u8>> {
    let path = std::env::var("LIFEBOAT_DECODE_RECORDING").expect("LIFEBOAT_DECODE_RECORDING");
    let text = std::fs::read_to_string(&path).expect("read the recording");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| hex::decode(l.trim().trim_start_matches("\\x")).expect("hex line"))
        .collect()
}

/// The tracker's tenancy over the tables the recording describes.
fn tenancy(relations: &[Relation]) -> SourceTenancy {
    let mut tables = Vec::new();
    for name in ["sites", "issues", "comments"] {
        let relation = relations
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no relation {name} in the recording"));
        let columns: Vec<String> = relation.columns.iter().map(|c| c.name.clone()).collect();
        let index = |c: &str| columns.iter().position(|n| n == c).expect("column");
        let tenancy = match name {
            "sites" => Tenancy::Column(index("id")),
            "issues" => Tenancy::Column(index("site_id")),
            _ => Tenancy::Via {
                column: index("issue_id"),
                parent: "issues".into(),
                parent_column: "id".into(),
            },
        };
        let key = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        tables.push(ResolvedTable {
            schema: TableSchema {
                name: name.to_string(),
                columns,
                key,
            },
            tenancy,
        });
    }
    SourceTenancy {
        source: "tracker".into(),
        tables,
        referenced: [("issues".to_string(), "id".to_string())].into(),
    }
}

#[test]
#[ignore = "a benchmark: scripts/bench-decode"]
fn decode_throughput() {
    let messages = recording();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let changes = |m: &Message| {
        matches!(
            m,
            Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
        )
    };

    // The decoder alone, a few passes; the best one counts (the machine is shared).
    let mut events = 0u64;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        for m in &messages {
            let message = pgoutput::decode(m).expect("decode");
            n += u64::from(changes(&message));
            std::hint::black_box(&message);
        }
        best = best.min(start.elapsed().as_secs_f64());
        events = n;
    }
    println!(
        "pgoutput decode: {} messages ({:.1} MB), {events} row changes, {:.0} changes/s on one core ({:.0} MB/s)",
        messages.len(),
        bytes as f64 / 1e6,
        events as f64 / best,
        bytes as f64 / 1e6 / best
    );

    // Decoder and attribution, as capture does per message.
    let relations: Vec<Relation> = messages
        .iter()
        .filter_map(|m| match pgoutput::decode(m) {
            Ok(Message::Relation(r)) => Some(r),
            _ => None,
        })
        .collect();
    let tenancy = tenancy(&relations);
    let mut best = f64::MAX;
    let mut attributed = 0u64;
    for _ in 0..5 {
        let mut keymaps = Keymaps::new(&tenancy);
        let mut names: HashMap<u32, usize> = HashMap::new();
        let mut out = Vec::with_capacity(2);
        let mut found = 0u64;
        let start = Instant::now();
        for m in &messages {
            let (slot, op, old, new) = match pgoutput::decode(m).expect("decode") {
                Message::Relation(r) => {
                    if let Some(slot) = tenancy.tables.iter().position(|t| t.schema.name == r.name)
                    {
                        names.insert(r.id, slot);
                    }
                    continue;
                }
                Message::Other(b'C') => {
                    keymaps.end_transaction();
                    continue;
                }
                Message::Insert { relation, new } => (
                    names[&relation],
                    Op::Insert,
                    None,
                    Some(row_from(new, None).expect("row")),
                ),
                Message::Update { relation, old, new } => {
                    let old = row_from(old.expect("old row").tuple, None).expect("row");
                    let new = row_from(new, Some(&old)).expect("row");
                    (names[&relation], Op::Update, Some(old), Some(new))
                }
                Message::Delete { relation, old } => (
                    names[&relation],
                    Op::Delete,
                    Some(row_from(old.tuple, None).expect("row")),
                    None,
                ),
                _ => continue,
            };
            out.clear();
            attribute(
                &mut keymaps,
                slot as u32,
                &tenancy.tables[slot],
                RawChange {
                    op,
                    old,
                    new,
                    position: 0,
                },
                &mut out,
            )
            .expect("attribute");
            found += out.iter().filter(|c| c.tenant.is_some()).count() as u64;
        }
        best = best.min(start.elapsed().as_secs_f64());
        attributed = found;
    }
    println!(
        "pgoutput decode + attribution: {events} row changes ({attributed} tenant changes), {:.0} changes/s on one core",
        events as f64 / best
    );
}
