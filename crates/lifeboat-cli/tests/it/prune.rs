//! `lifeboat prune`: retention. A prune while capture and writers run keeps every point of
//! the new window exact (a restore there equals the rows taken at that point) and refuses
//! points before it, naming the window; a prune killed after each of its steps leaves a
//! vault that `check` accepts and a second prune finishes; `--dry-run` deletes nothing; a
//! tenant softly deleted inside the guard's retention can still be undeleted; bad requests
//! are refused and change nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lifeboat_core::time::format_us;

use crate::common::*;
use crate::fixtures::*;

const TENANTS: i64 = 6;

fn sites() -> Vec<i64> {
    (1..=TENANTS).map(site_id).collect()
}

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
        .await
        .expect("join")
}

async fn run_ok(config: &Path, args: &[&str]) -> String {
    let output = run(config, args).await;
    assert!(
        output.status.success(),
        "lifeboat {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn now() -> String {
    format_us(lifeboat_core::time::now_us())
}

/// Every table's rows, sorted: PostgreSQL as count and md5 of the rows' text, SQLite row
/// by row with storage classes.
async fn checksums(tracker: Option<&str>, identity: Option<&Path>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(url) = tracker {
        let client = pg_connect(url).await;
        for table in ["sites", "issues", "comments", "watchers"] {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, \
                         E'\\n' ORDER BY t::text)), '') FROM {table} t"
                    ),
                    &[],
                )
                .await
                .expect("checksum");
            out.insert(format!("tracker.{table}"), row.get::<_, String>(0));
        }
    }
    if let Some(path) = identity {
        out.extend(identity_rows(path));
    }
    out
}

/// The identity database's tenant tables, row by row with storage classes, sorted.
fn identity_rows(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    {
        let conn = rusqlite::Connection::open(path).expect("open identity");
        conn.busy_timeout(Duration::from_secs(30)).expect("busy");
        for table in ["users", "memberships", "sessions"] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table}"))
                .expect("prepare");
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    let values: Vec<rusqlite::types::Value> = (0..columns)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(format!("{values:?}"))
                })
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            rows.sort();
            out.insert(format!("identity.{table}"), rows.join("\n"));
        }
    }
    out
}

/// Every vault file with its bytes.
fn vault_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// An SQLite identity source captured five times, with writes between: checkpoints at
/// five points of its history. Returns the config, the database and a time between the
/// fourth capture and the writes before the fifth (a keep-since with three checkpoints
/// before it).
fn identity_with_history(work: &Workdir, extra: &str) -> (PathBuf, PathBuf, String) {
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let text = config_text(&work.vault_url(), None, None, Some(&identity)) + extra;
    let config = work.init_config(&text);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let mut keep_since = String::new();
    for round in 0..4 {
        if round == 3 {
            std::thread::sleep(Duration::from_millis(20));
            keep_since = now();
            // SQLite stamps changes to the millisecond: the next one after this time.
            std::thread::sleep(Duration::from_millis(20));
        }
        write_identity(&identity, TENANTS, round, Duration::from_millis(200));
        lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    }
    (config, identity, keep_since)
}

/// One change to tenant `site`'s users, captured.
fn write_and_capture(config: &Path, identity: &Path, site: i64, text: &str) {
    let conn = rusqlite::Connection::open(identity).expect("open");
    conn.execute_batch(&format!(
        "UPDATE users SET email = '{text}' WHERE site_id = {site}"
    ))
    .expect("write");
    lifeboat_ok(config, &["capture", "--until-caught-up"]);
}

fn assert_clean(config: &Path, when: &str) {
    let output = lifeboat(config, &["check", "--read-data"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check {when}:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    let out = lifeboat_ok(config, &as_strs(&verify_args(sites())));
    assert!(out.starts_with("ok:"), "verify {when}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_while_capture_and_writers_run_keeps_the_window_exact() {
    let bucket = std::env::var("LIFEBOAT_TEST_S3_BUCKET")
        .expect("LIFEBOAT_TEST_S3_BUCKET is not set: run the tests with scripts/test");
    let work = Workdir::new();
    let tracker = create_database("prune").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, TENANTS).await;
    setup_identity(&identity, TENANTS);
    let vault_url = format!("s3://{bucket}/{}", unique("prune"));
    let config = work.init_config(&config_text(
        &vault_url,
        Some(&tracker),
        None,
        Some(&identity),
    ));

    // Three captures with writes between: checkpoints at three points.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let early = now();
    for seed in 0..2 {
        write_tracker(&tracker, TENANTS, seed, Duration::from_millis(400)).await;
        write_identity(&identity, TENANTS, seed, Duration::from_millis(400));
        lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let keep_since = now();

    // Capture runs from here on, with writers; T is a quiet moment inside the new window.
    let mut capture = spawn_capture(&config, None);
    let writers = |seed: u64, millis: u64| {
        let (tracker, identity) = (tracker.clone(), identity.clone());
        tokio::spawn(async move {
            let pg = write_tracker(&tracker, TENANTS, seed, Duration::from_millis(millis));
            let sqlite = tokio::task::spawn_blocking(move || {
                write_identity(&identity, TENANTS, seed, Duration::from_millis(millis))
            });
            let (pg, sqlite) = tokio::join!(pg, sqlite);
            pg + sqlite.expect("sqlite writer")
        })
    };
    assert!(writers(10, 1000).await.expect("writers") > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = now();
    let at_t = checksums(Some(&tracker), Some(&identity)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let busy = writers(20, 3000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = json(&run_ok(&config, &["prune", "--keep-since", &keep_since, "--json"]).await);
    assert!(busy.await.expect("writers") > 0);
    terminate(&mut capture);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    assert_eq!(report["dry_run"], false, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap_or(0) > 0, "{report}");
    let mut window_starts = Vec::new();
    for source in report["sources"].as_array().expect("sources") {
        assert!(
            source["segments_deleted"]["objects"].as_u64().unwrap_or(0) >= 1,
            "{report}"
        );
        assert!(
            source["checkpoints_deleted"]["objects"]
                .as_u64()
                .unwrap_or(0)
                >= 1,
            "{report}"
        );
        assert_eq!(
            source["bases_written"]["objects"].as_u64(),
            Some(TENANTS as u64),
            "{report}"
        );
        window_starts.push(format_us(
            source["window_after_us"][0].as_i64().expect("window"),
        ));
    }
    assert_clean(&config, "after the prune");

    // Before the window: refused, naming where the window starts now.
    for args in [
        vec!["restore", "--tenant", "1", "--at", &early],
        vec!["verify", "--tenant", "1", "--at", &early],
    ] {
        let output = run(&config, &args).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("before the restorable window")
                && window_starts.iter().any(|w| err.contains(w.as_str())),
            "{args:?}: {err}"
        );
    }

    // Inside it: every tenant back to T equals the rows taken at T.
    let mut restore = vec!["restore".to_string(), "--at".to_string(), t.clone()];
    restore.extend(tenant_args(sites()));
    run_ok(&config, &as_strs(&restore)).await;
    assert_eq!(checksums(Some(&tracker), Some(&identity)).await, at_t);
    drop_slots(&tracker).await;
}

#[test]
fn a_prune_killed_after_each_step_leaves_a_checked_vault_and_a_second_run_finishes() {
    for failpoint in [
        "prune.after-base-written@2",
        "prune.after-checkpoint-deleted@1",
        "prune.after-checkpoint-deleted@3",
        "prune.after-segment-deleted@2",
        "prune.after-base-deleted@2",
    ] {
        let work = Workdir::new();
        let (config, _, keep_since) = identity_with_history(&work, "");
        let output = lifeboat_command(&config, &["prune", "--keep-since", &keep_since])
            .env("LIFEBOAT_FAILPOINT", failpoint)
            .output()
            .expect("run prune");
        let name = failpoint.split('@').next().unwrap_or(failpoint);
        assert!(
            !output.status.success() && stderr(&output).contains(&format!("failpoint {name}")),
            "prune should have died at {failpoint}: {}",
            stderr(&output)
        );
        assert_clean(&config, &format!("after a crash at {failpoint}"));
        let report = json(&lifeboat_ok(
            &config,
            &["prune", "--keep-since", &keep_since, "--json"],
        ));
        assert!(
            report["objects_deleted"].as_u64().unwrap_or(0) > 0,
            "{report}"
        );
        assert_clean(&config, &format!("after finishing {failpoint}"));
        let again = json(&lifeboat_ok(
            &config,
            &["prune", "--keep-since", &keep_since, "--json"],
        ));
        assert_eq!(again["objects_deleted"], 0, "{failpoint}: {again}");
        let check = json(&lifeboat_ok(&config, &["check", "--json"]));
        let source = &check["sources"][0];
        assert_eq!(source["checkpoints"], 2, "{failpoint}: {check}");
        assert_eq!(
            source["before_window"]["objects"], 0,
            "{failpoint}: {check}"
        );
    }
}

#[test]
fn dry_run_lists_what_would_go_and_deletes_nothing() {
    let work = Workdir::new();
    let (config, _, keep_since) = identity_with_history(&work, "");
    let before = vault_files(&work.path("vault"));
    let dry = json(&lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--dry-run", "--json"],
    ));
    assert_eq!(
        vault_files(&work.path("vault")),
        before,
        "dry run changed the vault"
    );
    let out = lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--dry-run"],
    );
    assert!(
        out.contains("would delete") && out.contains("would be freed"),
        "{out}"
    );
    assert_eq!(
        vault_files(&work.path("vault")),
        before,
        "dry run changed the vault"
    );

    assert_eq!(dry["dry_run"], true);
    let freed = dry["bytes_freed"].as_u64().unwrap_or(0);
    assert!(freed > 0, "{dry}");
    let done = json(&lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--json"],
    ));
    assert_eq!(done["bytes_freed"], dry["bytes_freed"], "{dry}\n{done}");
    assert_eq!(
        done["objects_deleted"], dry["objects_deleted"],
        "{dry}\n{done}"
    );
    // What the report says went is what left the directory.
    let after = vault_files(&work.path("vault"));
    let gone: u64 = before
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(gone, freed);
    assert_clean(&config, "after the prune");
}

#[test]
fn a_tenant_deleted_inside_guard_retention_can_be_undeleted_after_a_prune() {
    let work = Workdir::new();
    let people = People::new(&work);
    let extra = format!("\n[guard]\napprovals_required = 1\n{}", people.toml());
    let (config, identity, _) = identity_with_history(&work, &extra);
    let gone = site_id(2);
    let before = identity_rows(&identity);
    let plan = work.path("delete.json");
    let plan_arg = plan.to_str().expect("path");
    let tenant = gone.to_string();
    lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            &tenant,
            "--key",
            &people.key("alice"),
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(&config, &["approve", plan_arg, "--key", &people.key("bob")]);
    lifeboat_ok(&config, &["apply", plan_arg, "--by", "carol"]);
    // History goes on after the deletion: two more checkpoints, then a keep-since after
    // them, then more history.
    let others: Vec<i64> = (1..=TENANTS).map(site_id).filter(|s| *s != gone).collect();
    write_and_capture(&config, &identity, others[0], "later0");
    write_and_capture(&config, &identity, others[1], "later1");
    std::thread::sleep(Duration::from_millis(20));
    let keep_since = now();
    std::thread::sleep(Duration::from_millis(20));
    write_and_capture(&config, &identity, others[2], "later2");

    let report = json(&lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--json"],
    ));
    let source = &report["sources"][0];
    assert_eq!(source["held_back_by"][0], tenant.as_str(), "{report}");
    lifeboat_ok(&config, &["check"]);
    lifeboat_ok(&config, &["tenant", "undelete", &tenant, "--by", "carol"]);
    let after = identity_rows(&identity);
    // The undeleted tenant's rows are back as they were; the others moved on.
    let users_of = |rows: &str| -> Vec<String> {
        rows.lines()
            .filter(|l| l.contains(&format!("Integer({gone})")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        users_of(&after["identity.memberships"]),
        users_of(&before["identity.memberships"])
    );
    assert!(!users_of(&before["identity.memberships"]).is_empty());

    // Undeleted, it holds nothing back any more: the window moves on.
    let report = json(&lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--json"],
    ));
    let source = &report["sources"][0];
    assert!(source["held_back_by"].is_null(), "{report}");
    assert!(
        source["checkpoints_deleted"]["objects"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{report}"
    );
    lifeboat_ok(&config, &["check"]);
}

/// Compaction that listed the history before a prune moved the window's start, and reads
/// it after: it starts over from the new listing and writes its base.
#[test]
fn compaction_overtaken_by_a_prune_starts_over() {
    let work = Workdir::new();
    let (config, _, keep_since) = identity_with_history(&work, "");
    let gate = work.path("gate");
    let snapshot = lifeboat_command(&config, &["snapshot", "--tenant", "1"])
        .env("LIFEBOAT_LOG", "info")
        .env(
            "LIFEBOAT_PAUSE",
            format!("compaction.before-read:{}", gate.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn snapshot");
    let reached = work.path("gate.reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !reached.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot never paused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = json(&lifeboat_ok(
        &config,
        &["prune", "--keep-since", &keep_since, "--json"],
    ));
    assert!(
        report["objects_deleted"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    std::fs::write(&gate, "go").expect("open the gate");
    let output = snapshot.wait_with_output().expect("snapshot");
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("1 base snapshots written"),
        "{}",
        stdout(&output)
    );
    assert_clean(&config, "after compaction and prune");
}

#[test]
fn bad_prune_requests_are_refused_and_change_nothing() {
    let work = Workdir::new();
    let (config, _, _) = identity_with_history(&work, "");
    let before = vault_files(&work.path("vault"));
    let refused = |args: &[&str], code: i32, needle: &str| {
        let output = lifeboat(&config, args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    refused(
        &["prune", "--keep-since", "yesterday"],
        2,
        "is not RFC 3339",
    );
    refused(
        &["prune", "--keep-since", "2999-01-01T00:00:00Z"],
        2,
        "is in the future",
    );
    // After the head (the last change), though not in the future.
    std::thread::sleep(Duration::from_millis(50));
    refused(
        &["prune", "--keep-since", &now()],
        2,
        "is after the head of source identity",
    );
    assert_eq!(vault_files(&work.path("vault")), before);

    let elsewhere = work.path("elsewhere.toml");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &work.vault_url(),
        &format!("file://{}", work.path("none").display()),
    );
    std::fs::write(&elsewhere, text).expect("write");
    let output = lifeboat(&elsewhere, &["prune"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no vault at") && err.contains("lifeboat init"),
        "{err}"
    );
    assert!(!work.path("none").exists());
}
