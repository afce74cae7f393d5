//! `lifeboat check`: a clean vault passes; a segment missing from the middle of a history
//! fails; a missing key-map chunk or a flipped byte in a checkpoint's key-map index fails;
//! with `--read-data`, a flipped byte in a base, a segment chunk or a key-map chunk fails,
//! each naming its object. Exit 0 only when clean.

use std::path::{Path, PathBuf};
use std::process::Output;

use lifeboat_core::state::SourceHistory;

use crate::common::*;
use crate::fixtures::*;
use crate::vault_checks;

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
        .await
        .expect("join")
}

fn json(output: &Output) -> serde_json::Value {
    let text = stdout(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Exit 1, and a problem line naming `object` that says `what`.
fn assert_problem(output: &Output, object: &str, what: &str) {
    let out = stdout(output);
    assert_eq!(output.status.code(), Some(1), "{out}\n{}", stderr(output));
    assert!(
        out.lines()
            .any(|l| l.starts_with("problem: ") && l.contains(object) && l.contains(what)),
        "no problem naming {object} ({what}):\n{out}"
    );
}

/// Flip the last byte of a vault object; the original bytes, to put back.
fn flip_last_byte(path: &Path) -> Vec<u8> {
    let good = std::fs::read(path).expect("read object");
    let mut bad = good.clone();
    *bad.last_mut().expect("bytes") ^= 0x20;
    std::fs::write(path, &bad).expect("write flipped");
    good
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_gaps_and_with_read_data_every_flipped_byte() {
    let work = Workdir::new();
    let tracker = create_database("check").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 4).await;
    setup_identity(&identity, 4);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    let client = pg_connect(&tracker).await;
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    for round in 0..3 {
        client
            .batch_execute(&format!(
                "UPDATE issues SET title = 'round {round}' WHERE site_id = {}",
                site_id(1 + round)
            ))
            .await
            .expect("update tracker");
        lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    }

    // Clean: exit 0, a summary line per source, no problem.
    let out = lifeboat_ok(&config, &["check"]);
    assert!(out.contains("no problems"), "{out}");
    for source in ["tracker", "identity"] {
        assert!(out.lines().any(|l| l.starts_with(source)), "{out}");
    }
    let report = json(&run(&config, &["check", "--read-data", "--json"]).await);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["bytes_read"].as_u64().unwrap_or(0) > 0, "{report}");
    let tracker_summary = report["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == "tracker"))
        .unwrap_or_else(|| panic!("no tracker: {report}"));
    assert_eq!(tracker_summary["tenants"], 4, "{report}");
    assert!(
        tracker_summary["segments"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    // Objects and bytes per kind and per source, as listed: they add up to the files.
    let on_disk = |dir: &str| -> (u64, u64) {
        let mut stack = vec![work.path("vault").join(dir)];
        let (mut files, mut bytes) = (0, 0);
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files += 1;
                    bytes += std::fs::metadata(&path).expect("stat").len();
                }
            }
        }
        (files, bytes)
    };
    let total = &report["kinds"]["total"];
    assert_eq!(
        (total["objects"].as_u64(), total["bytes"].as_u64()),
        {
            let (f, b) = on_disk("sources");
            (Some(f), Some(b))
        },
        "{report}"
    );
    for kind in ["segments", "checkpoints", "bases", "keymaps"] {
        let listed = &tracker_summary["kinds"][kind];
        let (files, bytes) = on_disk(&format!("sources/tracker/{kind}"));
        assert_eq!(listed["objects"].as_u64(), Some(files), "{kind}: {report}");
        assert_eq!(listed["bytes"].as_u64(), Some(bytes), "{kind}: {report}");
    }
    let plain = json(&run(&config, &["check", "--json"]).await);
    assert_eq!(plain["kinds"], report["kinds"], "without --read-data too");
    assert_eq!(plain["bytes_read"], 0, "{plain}");

    let vault = vault_checks::open(&config).await;
    let history = SourceHistory::load(&vault, "tracker")
        .await
        .expect("history");
    let path = |name: &str| -> PathBuf { work.path("vault").join(name) };

    // A flipped byte in a base, in a segment's last chunk (a tenant's changes, not read by a
    // check of heads) and in a key-map chunk: only `--read-data` sees them, and it names the
    // object.
    let base = history.bases.values().next().expect("bases")[0]
        .name
        .clone();
    let segment = history.segments[1].name.clone();
    let checkpoint = history.checkpoints[0].name.clone();
    let chunks = vault.list_keymap_chunks("tracker").await.expect("chunks");
    assert!(
        !chunks.is_empty(),
        "the tracker's comments go through issues"
    );
    let chunk = chunks
        .iter()
        .find(|c| c.name.ends_with(".kmap"))
        .expect("a chunk")
        .name
        .clone();
    for object in [&base, &segment, &chunk] {
        let good = flip_last_byte(&path(object));
        let output = run(&config, &["check"]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
        assert_problem(
            &run(&config, &["check", "--read-data"]).await,
            object,
            "checksum",
        );
        std::fs::write(path(object), good).expect("put back");
    }
    // A checkpoint's key-map index is read by every check.
    let good = flip_last_byte(&path(&checkpoint));
    assert_problem(&run(&config, &["check"]).await, &checkpoint, "checksum");
    std::fs::write(path(&checkpoint), good).expect("put back");
    // A key-map chunk a checkpoint refers to, gone: every check names it.
    let aside = work.path("aside.kmap");
    std::fs::rename(path(&chunk), &aside).expect("move aside");
    assert_problem(&run(&config, &["check"]).await, &chunk, "missing");
    std::fs::rename(&aside, path(&chunk)).expect("move back");

    // A segment missing from the middle: a gap naming the objects on either side, found
    // without reading data; `--source` leaves the other source out.
    let aside = work.path("aside.seg");
    std::fs::rename(path(&segment), &aside).expect("move aside");
    let output = run(&config, &["check"]).await;
    assert_problem(&output, &history.segments[2].name, "are missing");
    assert!(
        stdout(&output).contains(&history.segments[0].name),
        "{}",
        stdout(&output)
    );
    let output = run(&config, &["check", "--source", "identity"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    std::fs::rename(&aside, path(&segment)).expect("move back");
    lifeboat_ok(&config, &["check", "--read-data"]);
}

/// The audit log against its anchors: an entry whose anchor is gone and an anchor whose
/// entry is not in the log are both reported, naming the entries, with exit 1.
#[test]
fn check_reports_an_unanchored_entry_and_an_anchor_without_its_entry() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    write_identity(&identity, 3, 1, std::time::Duration::from_millis(200));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let keep_since = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_identity(&identity, 3, 2, std::time::Duration::from_millis(200));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // A prune is audited: entry 1, anchored in the vault.
    lifeboat_ok(&config, &["prune", "--keep-since", &keep_since]);
    let out = lifeboat_ok(&config, &["check"]);
    assert!(out.contains("audit log: 1 entries"), "{out}");

    let audit = work.path("vault").join("audit");
    let anchors: Vec<PathBuf> = std::fs::read_dir(&audit)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(anchors.len(), 1, "{anchors:?}");
    let kept = std::fs::read(&anchors[0]).expect("anchor");
    std::fs::remove_file(&anchors[0]).expect("remove anchor");
    let hash = "ab".repeat(32);
    std::fs::write(
        audit.join(format!("{:016x}-{hash}.anchor", 2)),
        hash.as_bytes(),
    )
    .expect("stray anchor");
    let output = lifeboat(&config, &["check"]);
    assert_problem(
        &output,
        "audit log",
        "entry 1: its anchor is missing from the vault",
    );
    assert_problem(
        &output,
        "audit log",
        "entry 2: anchored in the vault but missing",
    );
    let report = json(&lifeboat(&config, &["check", "--json"]));
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["audit_entries"], 1, "{report}");

    // Both put right: clean again.
    std::fs::write(&anchors[0], kept).expect("put back");
    std::fs::remove_file(audit.join(format!("{:016x}-{hash}.anchor", 2))).expect("remove");
    lifeboat_ok(&config, &["check"]);
}

/// After a prune, a tenant whose base at the window's start is gone while an older one
/// is still there is reported: its rows there are not in the vault.
#[test]
fn check_reports_a_tenant_without_a_base_at_the_window_start() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    write_identity(&identity, 3, 1, std::time::Duration::from_millis(200));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let keep_since = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_identity(&identity, 3, 2, std::time::Duration::from_millis(200));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let bases = work.path("vault/sources/identity/bases/1");
    let first: Vec<PathBuf> = std::fs::read_dir(&bases)
        .expect("bases")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    let old = std::fs::read(&first[0]).expect("base");
    lifeboat_ok(&config, &["prune", "--keep-since", &keep_since]);
    lifeboat_ok(&config, &["check"]);
    let now: Vec<PathBuf> = std::fs::read_dir(&bases)
        .expect("bases")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(now.len(), 1, "{now:?}");
    // The pruned base back, the one at the window's start gone.
    std::fs::write(&first[0], old).expect("put old base back");
    std::fs::remove_file(&now[0]).expect("remove base at the start");
    assert_problem(
        &lifeboat(&config, &["check"]),
        first[0].file_name().and_then(|n| n.to_str()).expect("name"),
        "tenant 1 has bases only before the window's start",
    );
}
