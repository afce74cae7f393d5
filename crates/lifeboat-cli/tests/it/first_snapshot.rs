//! The first capture with a small snapshot buffer (`[capture] snapshot_buffer_bytes`): the
//! rows spilled to temporary files and merged back give exactly the vault content of a
//! capture that held them in memory (every base's tables and rows, every key-map chunk),
//! on PostgreSQL and SQLite. A capture killed while spilling leaves its files behind; the
//! next run removes them, takes the snapshot again and leaves none.

use std::path::{Path, PathBuf};

use lifeboat_core::model::{BaseRow, TableSchema, TenantKey, Value};
use lifeboat_core::state::SourceHistory;

use crate::common::*;
use crate::fixtures::*;

/// A few rows per run file: dozens of runs, merged in levels.
const SMALL_BUFFER: &str = "snapshot_buffer_bytes = 4096\n";

fn with_line(config: String, line: &str) -> String {
    config.replacen("[capture]\n", &format!("[capture]\n{line}"), 1)
}

type Bases = Vec<(TenantKey, Vec<TableSchema>, Vec<BaseRow>)>;
type Chunk = (u32, u64, Vec<(Value, TenantKey)>);
type Maps = Vec<(String, String, u8, u64, Vec<Chunk>)>;

/// What the first capture wrote for `source`: each tenant's one base (tables and rows), and
/// the checkpoint's key maps with every chunk's entries.
async fn first_capture(config: &Path, source: &str) -> (Bases, Maps) {
    let vault = crate::vault_checks::open(config).await;
    let history = SourceHistory::load(&vault, source).await.expect("history");
    let mut bases = Vec::new();
    for (tenant, refs) in &history.bases {
        assert_eq!(
            refs.len(),
            1,
            "{tenant:?}: one base after the first capture"
        );
        let base = vault.read_base(&refs[0].name).await.expect("base");
        assert_eq!(&base.tenant, tenant);
        bases.push((base.tenant, base.tables, base.rows));
    }
    assert_eq!(history.checkpoints.len(), 1, "one checkpoint");
    let checkpoint = vault
        .read_checkpoint(&history.checkpoints[0].name)
        .await
        .expect("checkpoint");
    let mut maps = Vec::new();
    for map in &checkpoint.keymaps {
        let mut chunks = Vec::new();
        for chunk in &map.chunks {
            let read = vault
                .read_keymap_chunk(source, map, chunk)
                .await
                .expect("chunk");
            chunks.push((chunk.bucket, chunk.keys, read.entries));
        }
        maps.push((
            map.table.clone(),
            map.column.clone(),
            map.bits,
            map.keys,
            chunks,
        ));
    }
    (bases, maps)
}

/// The snapshot directories in capture's state directory, with their files.
fn spill_files(work: &Workdir) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(work.path("lifeboat-state")) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            files.push(path.clone());
            if let Ok(inner) = std::fs::read_dir(&path) {
                files.extend(inner.map(|e| e.expect("entry").path()));
            }
        }
    }
    files
}

/// Kill the first capture of `spilled` at its third run file, check it left files, then
/// capture again: the snapshot is taken anew, and no temporary file is left.
fn kill_while_spilling_then_capture(spilled: &Workdir, config: &Path) {
    let output = lifeboat_command(config, &["capture", "--until-caught-up"])
        .env("LIFEBOAT_FAILPOINT", "capture.snapshot-spilled@3")
        .output()
        .expect("run capture");
    assert!(!output.status.success(), "capture was not killed");
    assert!(
        stderr(&output).contains("failpoint capture.snapshot-spilled reached"),
        "{}",
        stderr(&output)
    );
    let left = spill_files(spilled);
    assert!(
        left.iter()
            .any(|p| p.extension().is_some_and(|e| e == "zst")),
        "the killed capture left run files: {left:?}"
    );
    lifeboat_ok(config, &["capture", "--until-caught-up"]);
    assert_eq!(spill_files(spilled), Vec::<PathBuf>::new());
}

#[test]
fn sqlite_spilled_first_capture_equals_one_held_in_memory_and_a_killed_one_leaves_no_files() {
    let (held, spilled) = (Workdir::new(), Workdir::new());
    let identity = held.path("identity.db");
    setup_identity(&identity, 40);
    let copy = spilled.path("identity.db");
    std::fs::copy(&identity, &copy).expect("copy identity");
    let held_config =
        held.init_config(&config_text(&held.vault_url(), None, None, Some(&identity)));
    let spilled_config = spilled.init_config(&with_line(
        config_text(&spilled.vault_url(), None, None, Some(&copy)),
        SMALL_BUFFER,
    ));
    lifeboat_ok(&held_config, &["capture", "--until-caught-up"]);
    assert_eq!(spill_files(&held), Vec::<PathBuf>::new());
    kill_while_spilling_then_capture(&spilled, &spilled_config);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let expected = rt.block_on(first_capture(&held_config, "identity"));
    let got = rt.block_on(first_capture(&spilled_config, "identity"));
    assert_eq!(expected.0.len(), 40, "a base per tenant");
    assert!(
        !expected.1.is_empty() && expected.1[0].3 == 120,
        "120 user keys"
    );
    assert!(
        got == expected,
        "the spilled capture's vault content differs"
    );
    let out = lifeboat_ok(
        &spilled_config,
        &as_strs(&verify_args((1..=40).map(site_id))),
    );
    assert!(out.starts_with("ok: 40 tenants"), "{out}");
}

#[tokio::test]
async fn postgres_spilled_first_capture_equals_one_held_in_memory_and_a_killed_one_leaves_no_files()
{
    let (held, spilled) = (Workdir::new(), Workdir::new());
    let tracker = create_database("spillheld").await;
    setup_tracker(&tracker, 20).await;
    // The same rows, byte for byte (generated ids and times included): a copy.
    let copy_name = unique("spillcopy");
    let source_name = tracker.rsplit('/').next().expect("name").to_string();
    let admin = pg_connect(&pg_base_url()).await;
    let mut copied = false;
    for _ in 0..50 {
        // The template must have no other session; the seeding one may still be closing.
        if admin
            .batch_execute(&format!(
                "CREATE DATABASE {copy_name} TEMPLATE {source_name}"
            ))
            .await
            .is_ok()
        {
            copied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(copied, "cannot copy the tracker database");
    let copy = pg_url(&copy_name);
    let held_config = held.init_config(&config_text(&held.vault_url(), Some(&tracker), None, None));
    let spilled_config = spilled.init_config(&with_line(
        config_text(&spilled.vault_url(), Some(&copy), None, None),
        SMALL_BUFFER,
    ));
    lifeboat_ok(&held_config, &["capture", "--until-caught-up"]);
    assert_eq!(spill_files(&held), Vec::<PathBuf>::new());
    kill_while_spilling_then_capture(&spilled, &spilled_config);

    let expected = first_capture(&held_config, "tracker").await;
    let got = first_capture(&spilled_config, "tracker").await;
    assert_eq!(expected.0.len(), 20, "a base per tenant");
    assert!(!expected.1.is_empty(), "the comments' key map");
    assert!(
        got == expected,
        "the spilled capture's vault content differs"
    );
    let out = lifeboat_ok(
        &spilled_config,
        &as_strs(&verify_args((1..=20).map(site_id))),
    );
    assert!(out.starts_with("ok: 20 tenants"), "{out}");
    drop_slots(&tracker).await;
    drop_slots(&copy).await;
}
