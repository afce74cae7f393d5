//! `lifeboat restore` end to end: a mistaken cleanup undone in place across PostgreSQL and
//! SQLite while other tenants keep writing; `--as`, `--into-url`, `--source`, `--dry-run`;
//! a restore killed half way and resumed; bad requests refused with nothing changed.
//!
//! Row sets are compared in full: every row of every tenant table, as the database prints
//! it (PostgreSQL's row text, SQLite's typed values), so a restored tenant is checked row
//! for row against what it was before the deletion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::fixtures::*;

/// "source.table" -> the rows, each as text, sorted.
type Rows = BTreeMap<String, Vec<String>>;

// ---------------------------------------------------------------------------------------
// Reading rows.

async fn pg_texts(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    out.sort();
    out
}

/// A tracker tenant's rows in every tenant table. With `strip_tenant`, the tenant column
/// is left out (to compare a tenant restored `--as` another key with the original).
async fn tracker_rows(client: &tokio_postgres::Client, site: i64, strip_tenant: bool) -> Rows {
    let (sites, issues, watchers) = if strip_tenant {
        (
            "(to_jsonb(s) - 'id')::text",
            "(to_jsonb(i) - 'site_id')::text",
            "(to_jsonb(w) - 'site_id')::text",
        )
    } else {
        ("s::text", "i::text", "w::text")
    };
    let mut out = Rows::new();
    out.insert(
        "tracker.sites".into(),
        pg_texts(
            client,
            &format!("SELECT {sites} FROM sites s WHERE s.id = {site}"),
        )
        .await,
    );
    out.insert(
        "tracker.issues".into(),
        pg_texts(
            client,
            &format!("SELECT {issues} FROM issues i WHERE i.site_id = {site}"),
        )
        .await,
    );
    out.insert(
        "tracker.comments".into(),
        pg_texts(
            client,
            &format!(
                "SELECT c::text FROM comments c JOIN issues i ON i.id = c.issue_id \
                 WHERE i.site_id = {site}"
            ),
        )
        .await,
    );
    out.insert(
        "tracker.watchers".into(),
        pg_texts(
            client,
            &format!("SELECT {watchers} FROM watchers w WHERE w.site_id = {site}"),
        )
        .await,
    );
    out
}

async fn wiki_rows(client: &tokio_postgres::Client, site: i64) -> Rows {
    let mut out = Rows::new();
    out.insert(
        "wiki.spaces".into(),
        pg_texts(
            client,
            &format!("SELECT s::text FROM spaces s WHERE s.site_id = {site}"),
        )
        .await,
    );
    out.insert(
        "wiki.pages".into(),
        pg_texts(
            client,
            &format!(
                "SELECT p::text FROM pages p JOIN spaces s ON s.id = p.space_id \
                 WHERE s.site_id = {site}"
            ),
        )
        .await,
    );
    out.insert(
        "wiki.page_versions".into(),
        pg_texts(
            client,
            &format!(
                "SELECT v::text FROM page_versions v JOIN pages p ON p.id = v.page_id \
                 JOIN spaces s ON s.id = p.space_id WHERE s.site_id = {site}"
            ),
        )
        .await,
    );
    out
}

fn sqlite_texts(conn: &rusqlite::Connection, sql: &str, site: i64) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns = stmt.column_count();
    let mut out: Vec<String> = stmt
        .query_map([site], |r| {
            let values: Vec<rusqlite::types::Value> = (0..columns)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect::<rusqlite::Result<_>>()?;
            Ok(format!("{values:?}"))
        })
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    out.sort();
    out
}

/// `pg_texts` on a connection of its own.
async fn texts_at(url: &str, sql: &str) -> Vec<String> {
    pg_texts(&pg_connect(url).await, sql).await
}

/// An identity tenant's rows, with their SQLite storage classes.
fn identity_rows(path: &Path, site: i64) -> Rows {
    let conn = rusqlite::Connection::open(path).expect("open identity");
    conn.busy_timeout(Duration::from_secs(30)).expect("busy");
    let mut out = Rows::new();
    out.insert(
        "identity.users".into(),
        sqlite_texts(&conn, "SELECT * FROM users WHERE site_id = ?1", site),
    );
    out.insert(
        "identity.memberships".into(),
        sqlite_texts(&conn, "SELECT * FROM memberships WHERE site_id = ?1", site),
    );
    out.insert(
        "identity.sessions".into(),
        sqlite_texts(
            &conn,
            "SELECT s.* FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.site_id = ?1",
            site,
        ),
    );
    out
}

/// Every row of every table of a PostgreSQL database.
async fn pg_dump(url: &str) -> Rows {
    let client = pg_connect(url).await;
    let tables = pg_texts(
        &client,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .await;
    let mut out = Rows::new();
    for table in tables {
        let rows = pg_texts(&client, &format!("SELECT t::text FROM {table} t")).await;
        out.insert(table, rows);
    }
    out
}

/// Every row of every table of a SQLite database (Lifeboat's changelog included).
fn sqlite_dump(path: &Path) -> Rows {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(30)).expect("busy");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .expect("tables");
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("names");
    let mut out = Rows::new();
    for table in tables {
        // `?1` is unused by the query but keeps sqlite_texts' shape.
        let rows = sqlite_texts(
            &conn,
            &format!("SELECT * FROM \"{table}\" WHERE ?1 = ?1"),
            0,
        );
        out.insert(table, rows);
    }
    out
}

fn row_count(rows: &Rows) -> usize {
    rows.values().map(Vec::len).sum()
}

/// The rows of `after` not in `before`, or the rows of `before` that `after` lost.
fn multiset_extras(before: &[String], after: &[String]) -> Result<Vec<String>, Vec<String>> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for row in after {
        *counts.entry(row).or_default() += 1;
    }
    for row in before {
        *counts.entry(row).or_default() -= 1;
    }
    let lost: Vec<String> = counts
        .iter()
        .filter(|(_, &c)| c < 0)
        .map(|(r, _)| r.to_string())
        .collect();
    if !lost.is_empty() {
        return Err(lost);
    }
    Ok(counts
        .iter()
        .filter(|(_, &c)| c > 0)
        .flat_map(|(r, &c)| std::iter::repeat_n(r.to_string(), c as usize))
        .collect())
}

/// The writer's marker in a row (`wmark-N-end`), if any.
fn marker(row: &str) -> Option<String> {
    let start = row.find("wmark-")?;
    let end = row[start..].find("-end")? + start + 4;
    Some(row[start..end].to_string())
}

// ---------------------------------------------------------------------------------------
// Running the binary without blocking the runtime.

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
        .await
        .expect("join")
}

async fn run_ok(config: &Path, args: &[&str]) -> String {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat_ok(&config, &as_strs(&args)))
        .await
        .expect("join")
}

async fn capture(config: &Path) {
    run_ok(config, &["capture", "--until-caught-up"]).await;
}

/// Run `args` with the restore dying just before its third commit.
async fn run_killed_at_third_commit(config: &Path, args: &[String]) {
    let (config, args) = (config.to_path_buf(), args.to_vec());
    let output = tokio::task::spawn_blocking(move || {
        lifeboat_command(&config, &as_strs(&args))
            .env("LIFEBOAT_FAILPOINT", "restore.before-commit@3")
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(!output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("failpoint restore.before-commit"),
        "{}",
        stderr(&output)
    );
}

/// After a restore died at its third commit: two tenants whole, the others without rows.
fn assert_two_whole_the_rest_empty(now: &BTreeMap<i64, Rows>, before: &BTreeMap<i64, Rows>) {
    let mut restored = 0;
    for (site, rows) in now {
        if rows == &before[site] {
            restored += 1;
        } else {
            assert_eq!(row_count(rows), 0, "tenant {site} half restored: {rows:?}");
        }
    }
    assert_eq!(
        restored, 2,
        "two tenants committed before the third commit died"
    );
}

/// `restore --tenant 2 --at T --json`, which must fail its one tenant (exit 1): that
/// tenant's part of the report.
async fn failed_restore(config: &Path, t: &str) -> serde_json::Value {
    let output = run(config, &["restore", "--tenant", "2", "--at", t, "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&stdout(&output));
    assert_eq!(report["failed"], 1, "{report}");
    report["restores"][0].clone()
}

/// Exit 2, one line starting with "error: " that contains `needle`.
fn assert_refused(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        stdout(output)
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
}

/// The database's current time, RFC 3339 in UTC (the clock commit times come from).
async fn pg_now(url: &str) -> String {
    pg_connect(url)
        .await
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .expect("now")
        .get(0)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn sites_list(sites: &[i64]) -> String {
    sites
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Delete `sites`' tracker rows in one transaction (children by cascade); its xid.
async fn delete_tracker_sites(url: &str, sites: &[i64]) -> i64 {
    let mut client = pg_connect(url).await;
    let tx = client.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()::bigint", &[])
        .await
        .expect("xid")
        .get(0);
    let deleted = tx
        .execute(
            &format!("DELETE FROM sites WHERE id IN ({})", sites_list(sites)),
            &[],
        )
        .await
        .expect("delete sites");
    assert_eq!(deleted as usize, sites.len());
    tx.commit().await.expect("commit");
    xid
}

async fn delete_wiki_sites(url: &str, sites: &[i64]) {
    pg_connect(url)
        .await
        .batch_execute(&format!(
            "DELETE FROM spaces WHERE site_id IN ({})",
            sites_list(sites)
        ))
        .await
        .expect("delete wiki");
}

/// Delete `sites`' identity rows in one write transaction; the first changelog sequence
/// number of that transaction.
fn delete_identity_sites(path: &Path, sites: &[i64]) -> i64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(30)).expect("busy");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin immediate");
    let seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM _lifeboat_changelog",
            [],
            |r| r.get(0),
        )
        .expect("seq");
    let list = sites_list(sites);
    tx.execute_batch(&format!(
        "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id IN ({list}));
         DELETE FROM memberships WHERE site_id IN ({list});
         DELETE FROM users WHERE site_id IN ({list});"
    ))
    .expect("delete identity");
    tx.commit().expect("commit");
    seq
}

// ---------------------------------------------------------------------------------------
// 1. A mistaken cleanup undone in place, across three sources, while others write.

const TENANTS: i64 = 20;

/// What a writer committed: (site, "source.table", marker).
type Inserted = Arc<Mutex<Vec<(i64, String, String)>>>;

/// Inserts rows with unique markers (tracker comments, wiki page versions) into the
/// tenants in `sites` until stopped, logging every committed insert.
async fn pg_writer(
    tracker: String,
    wiki: String,
    sites: Vec<i64>,
    stop: Arc<AtomicBool>,
    log: Inserted,
) {
    let tracker = pg_connect(&tracker).await;
    let wiki = pg_connect(&wiki).await;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let site = sites[(i as usize) % sites.len()];
        let mark = format!("wmark-pg{i}-end");
        let n = tracker
            .execute(
                "INSERT INTO comments (issue_id, body) \
                 SELECT id, $1 FROM issues WHERE site_id = $2 ORDER BY id LIMIT 1",
                &[&mark, &site],
            )
            .await
            .expect("writer comment");
        if n == 1 {
            log.lock()
                .expect("writer log")
                .push((site, "tracker.comments".into(), mark.clone()));
        }
        let mark = format!("wmark-wk{i}-end");
        let n = wiki
            .execute(
                "INSERT INTO page_versions (page_id, version, content) \
                 SELECT p.id, 9, $1 FROM pages p JOIN spaces s ON s.id = p.space_id \
                 WHERE s.site_id = $2 ORDER BY p.id LIMIT 1",
                &[&mark, &site],
            )
            .await
            .expect("writer page version");
        if n == 1 {
            log.lock()
                .expect("writer log")
                .push((site, "wiki.page_versions".into(), mark));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same for identity sessions.
fn sqlite_writer(path: PathBuf, sites: Vec<(i64, i64)>, stop: Arc<AtomicBool>, log: Inserted) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(30)).expect("busy");
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let (n, site) = sites[i % sites.len()];
        let mark = format!("wmark-sq{i}-end");
        conn.execute(
            "INSERT INTO sessions (user_id, token) VALUES (?1, ?2)",
            rusqlite::params![n * 100, mark],
        )
        .expect("writer session");
        log.lock()
            .expect("writer log")
            .push((site, "identity.sessions".into(), mark));
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mistaken_cleanup_is_undone_in_place_across_three_sources_while_others_write() {
    let work = Workdir::new();
    let tracker = create_database("rs_tracker").await;
    let wiki = create_database("rs_wiki").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, TENANTS).await;
    setup_wiki(&wiki, TENANTS).await;
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        Some(&wiki),
        Some(&identity),
    ));
    capture(&config).await;

    // 8 of 20 tenants (40%), two of them with keys beyond 32 bits.
    let doomed: Vec<i64> = (1..=TENANTS)
        .filter(|n| n % 5 == 0 || n % 5 == 2)
        .map(site_id)
        .collect();
    let kept: Vec<(i64, i64)> = (1..=TENANTS)
        .filter(|n| !(n % 5 == 0 || n % 5 == 2))
        .map(|n| (n, site_id(n)))
        .collect();
    assert_eq!(doomed.len(), 8);
    assert!(doomed.iter().any(|&s| s > u32::MAX as i64));

    let tracker_client = pg_connect(&tracker).await;
    let wiki_client = pg_connect(&wiki).await;
    let read_tenant = |site: i64| {
        let tracker_client = &tracker_client;
        let wiki_client = &wiki_client;
        let identity = identity.clone();
        async move {
            let mut rows = tracker_rows(tracker_client, site, false).await;
            rows.extend(wiki_rows(wiki_client, site).await);
            rows.extend(identity_rows(&identity, site));
            rows
        }
    };
    let mut before_deletion = BTreeMap::new();
    for &site in &doomed {
        let rows = read_tenant(site).await;
        assert_eq!(row_count(&rows), 13 + 3 + 9, "seeded rows of {site}");
        before_deletion.insert(site, rows);
    }
    let expected_written: usize = before_deletion.values().map(row_count).sum();

    // Other tenants keep writing from here to after the restore.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Inserted = Arc::default();
    let kept_sites: Vec<i64> = kept.iter().map(|&(_, s)| s).collect();
    let pg_task = tokio::spawn(pg_writer(
        tracker.clone(),
        wiki.clone(),
        kept_sites.clone(),
        stop.clone(),
        log.clone(),
    ));
    let sqlite_task = {
        let (path, kept, stop, log) = (identity.clone(), kept.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || sqlite_writer(path, kept, stop, log))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The mistaken cleanup: the tracker in one transaction, then the wiki and identity.
    let xid = delete_tracker_sites(&tracker, &doomed).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    delete_wiki_sites(&wiki, &doomed).await;
    delete_identity_sites(&identity, &doomed);
    for &site in &doomed {
        assert_eq!(row_count(&read_tenant(site).await), 0, "{site} deleted");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    capture(&config).await;

    let mut before_restore = BTreeMap::new();
    for &site in &kept_sites {
        before_restore.insert(site, read_tenant(site).await);
    }
    let file = work.path("tenants.txt");
    std::fs::write(
        &file,
        format!(
            "# the cleanup's victims\n{}\n",
            doomed
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
    .expect("tenants file");
    let file = file.display().to_string();
    let before_tx = format!("tracker:{xid}");
    let restore_args = [
        "restore",
        "--tenants-from",
        file.as_str(),
        "--before-tx",
        before_tx.as_str(),
        "--jobs",
        "3",
        "--json",
    ];
    let out = run_ok(&config, &restore_args).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    pg_task.await.expect("pg writer");
    sqlite_task.join().expect("sqlite writer");

    let report = json(&out);
    assert_eq!(report["failed"], 0, "{out}");
    assert_eq!(report["tenants"], 8, "{out}");
    assert_eq!(report["dry_run"], false, "{out}");
    assert!(report["rows_written"].as_u64().unwrap_or(0) > 0, "{out}");
    assert_eq!(report["rows_written"], expected_written as u64, "{out}");
    assert_eq!(
        report["rows_removed"], 0,
        "nothing of theirs was left: {out}"
    );
    let restores = report["restores"].as_array().expect("restores");
    assert_eq!(restores.len(), 8 * 3, "{out}");
    assert!(
        restores
            .iter()
            .all(|r| r["verified"] == true && r["error"].is_null()),
        "{out}"
    );
    let target_time = report["target_time"]
        .as_str()
        .expect("target_time")
        .to_string();

    // (a) The victims are back, row for row.
    for &site in &doomed {
        assert_eq!(
            read_tenant(site).await,
            before_deletion[&site],
            "tenant {site}"
        );
    }

    // (b) Everyone else: their rows before the restore plus what the writer inserted.
    let inserted = log.lock().expect("writer log").clone();
    assert!(
        inserted.len() > 30,
        "the writer inserted only {} rows",
        inserted.len()
    );
    for &site in &kept_sites {
        let after = read_tenant(site).await;
        let before = &before_restore[&site];
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
        for (table, rows) in &after {
            let extras = multiset_extras(&before[table], rows)
                .unwrap_or_else(|lost| panic!("tenant {site} {table} lost rows: {lost:?}"));
            let mut extra_marks: Vec<String> = extras
                .iter()
                .map(|r| {
                    marker(r).unwrap_or_else(|| {
                        panic!("tenant {site} {table}: a row nobody inserted: {r}")
                    })
                })
                .collect();
            extra_marks.sort();
            let already: Vec<String> = before[table].iter().filter_map(|r| marker(r)).collect();
            let mut expected: Vec<String> = inserted
                .iter()
                .filter(|(s, t, m)| *s == site && t == table && !already.contains(m))
                .map(|(_, _, m)| m.clone())
                .collect();
            expected.sort();
            assert_eq!(extra_marks, expected, "tenant {site} {table}");
        }
    }
    // The writer never touched a victim.
    assert!(inserted.iter().all(|(s, _, _)| !doomed.contains(s)));

    // Vault and live agree: the victims as of the target, everyone now.
    capture(&config).await;
    let mut args = verify_args(doomed.iter().copied());
    args.extend(["--at".into(), target_time.clone()]);
    let verified = run_ok(&config, &as_strs(&args)).await;
    assert!(verified.starts_with("ok: 8 tenants"), "{verified}");
    let all: Vec<i64> = (1..=TENANTS).map(site_id).collect();
    let verified = run_ok(&config, &as_strs(&verify_args(all))).await;
    assert!(verified.starts_with("ok: 20 tenants"), "{verified}");

    // (c) The same restore again changes no row anywhere.
    let dumps = (
        pg_dump(&tracker).await,
        pg_dump(&wiki).await,
        sqlite_dump(&identity),
    );
    let again = json(&run_ok(&config, &restore_args).await);
    assert_eq!(again["failed"], 0);
    assert_eq!(again["rows_written"], expected_written as u64);
    assert_eq!(again["rows_removed"], expected_written as u64);
    let mut dumps_after = (
        pg_dump(&tracker).await,
        pg_dump(&wiki).await,
        sqlite_dump(&identity),
    );
    // The second restore's own writes are in SQLite's changelog (capture has not run).
    dumps_after.2.remove("_lifeboat_changelog");
    let mut dumps = dumps;
    dumps.2.remove("_lifeboat_changelog");
    assert!(
        dumps.0 == dumps_after.0,
        "tracker changed by a repeated restore"
    );
    assert!(
        dumps.1 == dumps_after.1,
        "wiki changed by a repeated restore"
    );
    assert!(
        dumps.2 == dumps_after.2,
        "identity changed by a repeated restore"
    );

    // (d) Identity and serial columns go on from past the restored values.
    let victim = doomed[0];
    tracker_client
        .batch_execute(&format!(
            "WITH i AS (INSERT INTO issues (site_id, title) VALUES ({victim}, 'after restore') RETURNING id) \
             INSERT INTO comments (issue_id, body) SELECT id, 'after' FROM i"
        ))
        .await
        .expect("a new issue after the restore");
    wiki_client
        .batch_execute(&format!(
            "INSERT INTO spaces (site_id, name) VALUES ({victim}, 'after restore')"
        ))
        .await
        .expect("a new space after the restore");

    drop_slots(&tracker).await;
    drop_slots(&wiki).await;
}

// ---------------------------------------------------------------------------------------
// 2. --as NEWKEY.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_as_a_new_key_clones_a_deleted_tenant_and_refuses_collisions() {
    let work = Workdir::new();
    let tracker = create_database("rs_as").await;
    setup_tracker(&tracker, 5).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    capture(&config).await;
    let client = pg_connect(&tracker).await;
    let old = site_id(3);
    let original = tracker_rows(&client, old, true).await;
    let t = pg_now(&tracker).await;
    delete_tracker_sites(&tracker, &[old]).await;
    capture(&config).await;

    let new_key = 7_000_000_003i64;
    let new = new_key.to_string();
    let out = run_ok(
        &config,
        &[
            "restore", "--tenant", "3", "--at", &t, "--as", &new, "--json",
        ],
    )
    .await;
    let report = json(&out);
    assert_eq!(report["failed"], 0, "{out}");
    assert_eq!(report["rows_written"], 13, "{out}");
    assert_eq!(report["restores"][0]["written_as"], new.as_str(), "{out}");
    // The clone carries the new key in every tenant column, the rest unchanged.
    assert_eq!(tracker_rows(&client, new_key, true).await, original);
    let sites = pg_texts(
        &client,
        &format!("SELECT id::text FROM sites WHERE id = {new_key}"),
    )
    .await;
    assert_eq!(sites, vec![new.clone()]);
    let issues = pg_texts(
        &client,
        &format!("SELECT count(*)::text FROM issues WHERE site_id = {new_key}"),
    )
    .await;
    assert_eq!(issues, vec!["4"]);
    let watchers = pg_texts(
        &client,
        &format!("SELECT count(*)::text FROM watchers WHERE site_id = {new_key}"),
    )
    .await;
    assert_eq!(watchers, vec!["4"]);
    // The original key stays deleted.
    assert_eq!(row_count(&tracker_rows(&client, old, false).await), 0);

    // Again to the same key: refused, nothing changed.
    let dump = pg_dump(&tracker).await;
    let output = run(
        &config,
        &["restore", "--tenant", "3", "--at", &t, "--as", &new],
    )
    .await;
    assert_refused(&output, "already has rows");
    assert!(
        pg_dump(&tracker).await == dump,
        "a refused --as changed rows"
    );

    // Cloning a tenant that still has its rows collides on the issues' primary keys: the
    // restore is refused, naming the collision, and leaves nothing under the new key.
    let other = "7000000004";
    let output = run(
        &config,
        &["restore", "--tenant", "1", "--at", &t, "--as", other],
    )
    .await;
    assert_refused(
        &output,
        "the clone cannot be written as 7000000004 in tracker",
    );
    assert!(
        stderr(&output).contains("duplicate key"),
        "the message names the collision: {}",
        stderr(&output)
    );
    assert_eq!(
        row_count(&tracker_rows(&client, 7_000_000_004, false).await),
        0,
        "partial rows under the new key"
    );
    assert!(
        pg_dump(&tracker).await == dump,
        "a failed --as changed rows"
    );
    drop_slots(&tracker).await;
}

// ---------------------------------------------------------------------------------------
// 3. --into-url.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_another_database_with_the_same_schema_or_refuse_a_different_one() {
    let work = Workdir::new();
    let tracker = create_database("rs_into").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 12).await;
    setup_identity(&identity, 12);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    capture(&config).await;
    let client = pg_connect(&tracker).await;
    let site = site_id(10); // beyond 32 bits; issue ids 37..40
    let original = tracker_rows(&client, site, false).await;
    let original_identity = identity_rows(&identity, site);
    let t = pg_now(&tracker).await;
    // The source goes on changing: the restore takes the rows as of t.
    client
        .batch_execute(&format!(
            "UPDATE issues SET title = 'later' WHERE site_id = {site}"
        ))
        .await
        .expect("later change");
    delete_identity_sites(&identity, &[site]);
    capture(&config).await;

    // An empty database with the tracker's schema.
    let spare = create_database("rs_into_spare").await;
    setup_tracker(&spare, 0).await;
    let key = site.to_string();
    let out = run_ok(
        &config,
        &[
            "restore",
            "--tenant",
            &key,
            "--at",
            &t,
            "--source",
            "tracker",
            "--into-url",
            &spare,
            "--json",
        ],
    )
    .await;
    let report = json(&out);
    assert_eq!(report["failed"], 0, "{out}");
    assert_eq!(report["rows_written"], 13, "{out}");
    let spare_client = pg_connect(&spare).await;
    assert_eq!(tracker_rows(&spare_client, site, false).await, original);
    let spare_dump = pg_dump(&spare).await;
    assert_eq!(
        spare_dump.values().map(Vec::len).sum::<usize>(),
        13 + 2,
        "only the tenant's rows (and the global migrations): {spare_dump:?}"
    );
    // The source keeps its later change.
    assert!(tracker_rows(&client, site, false).await != original);
    // New rows in the spare database get ids past the restored ones.
    spare_client
        .batch_execute(&format!(
            "WITH i AS (INSERT INTO issues (site_id, title) VALUES ({site}, 'new') RETURNING id) \
             INSERT INTO comments (issue_id, body) SELECT id, 'new' FROM i"
        ))
        .await
        .expect("insert with default ids after --into-url");

    // A database whose issues lack a column the vault's rows carry: refused, nothing written.
    let different = create_database("rs_into_diff").await;
    pg_connect(&different)
        .await
        .batch_execute(&TRACKER_SCHEMA.replace("    mood mood,\n", ""))
        .await
        .expect("different schema");
    let before = pg_dump(&different).await;
    let output = run(
        &config,
        &[
            "restore",
            "--tenant",
            &key,
            "--at",
            &t,
            "--source",
            "tracker",
            "--into-url",
            &different,
        ],
    )
    .await;
    assert_refused(
        &output,
        "the target schema differs: table issues has no column mood",
    );
    assert!(
        pg_dump(&different).await == before,
        "written into a different schema"
    );

    // SQLite: into a copy of the identity database, which no longer has the tenant.
    let copy = work.path("identity-copy.db");
    rusqlite::Connection::open(&identity)
        .expect("open")
        .execute_batch(&format!("VACUUM INTO '{}'", copy.display()))
        .expect("copy");
    assert_eq!(row_count(&identity_rows(&copy, site)), 0);
    let copy_url = format!("sqlite://{}", copy.display());
    let out = run_ok(
        &config,
        &[
            "restore",
            "--tenant",
            &key,
            "--at",
            &t,
            "--source",
            "identity",
            "--into-url",
            &copy_url,
            "--json",
        ],
    )
    .await;
    assert_eq!(json(&out)["failed"], 0, "{out}");
    assert_eq!(identity_rows(&copy, site), original_identity);
    assert_eq!(
        row_count(&identity_rows(&identity, site)),
        0,
        "the source untouched"
    );

    drop_slots(&tracker).await;
}

/// Restoring into a fresh database whose sequences were never used: a restored id equal to
/// the sequence's start must still move the sequence past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_a_fresh_database_moves_sequences_past_a_restored_id_of_1() {
    let work = Workdir::new();
    let wiki = create_database("rs_seq").await;
    setup_wiki(&wiki, 2).await;
    let config = work.init_config(&config_text(&work.vault_url(), None, Some(&wiki), None));
    capture(&config).await;
    let t = pg_now(&wiki).await;
    let spare = create_database("rs_seq_spare").await;
    pg_connect(&spare)
        .await
        .batch_execute(WIKI_SCHEMA)
        .await
        .expect("schema");
    // Tenant 1's space, page and version all have id 1.
    run_ok(
        &config,
        &["restore", "--tenant", "1", "--at", &t, "--into-url", &spare],
    )
    .await;
    let client = pg_connect(&spare).await;
    assert_eq!(
        wiki_rows(&client, 1).await,
        wiki_rows(&pg_connect(&wiki).await, 1).await
    );
    client
        .batch_execute(
            "WITH s AS (INSERT INTO spaces (site_id, name) VALUES (1, 'new') RETURNING id), \
                  p AS (INSERT INTO pages (space_id, title) SELECT id, 'new' FROM s RETURNING id) \
             INSERT INTO page_versions (page_id, version, content) SELECT id, 1, 'new' FROM p",
        )
        .await
        .expect("insert with default ids after restoring ids 1 into a fresh database");
    drop_slots(&wiki).await;
}

// ---------------------------------------------------------------------------------------
// 4. --source.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_one_source_leaves_the_others_alone() {
    let work = Workdir::new();
    let tracker = create_database("rs_src_t").await;
    let wiki = create_database("rs_src_w").await;
    setup_tracker(&tracker, 4).await;
    setup_wiki(&wiki, 4).await;
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        Some(&wiki),
        None,
    ));
    capture(&config).await;
    let wiki_client = pg_connect(&wiki).await;
    let site = site_id(4);
    let original = wiki_rows(&wiki_client, site).await;
    let t = pg_now(&tracker).await;
    delete_tracker_sites(&tracker, &[site]).await;
    delete_wiki_sites(&wiki, &[site]).await;
    capture(&config).await;
    let tracker_dump = pg_dump(&tracker).await;

    let out = run_ok(
        &config,
        &[
            "restore", "--tenant", "4", "--at", &t, "--source", "wiki", "--json",
        ],
    )
    .await;
    let report = json(&out);
    assert_eq!(report["failed"], 0, "{out}");
    let restores = report["restores"].as_array().expect("restores");
    assert!(restores.iter().all(|r| r["source"] == "wiki"), "{out}");
    assert_eq!(wiki_rows(&wiki_client, site).await, original);
    assert!(
        pg_dump(&tracker).await == tracker_dump,
        "the tracker was changed"
    );
    let tracker_client = pg_connect(&tracker).await;
    assert_eq!(
        row_count(&tracker_rows(&tracker_client, site, false).await),
        0
    );
    drop_slots(&tracker).await;
    drop_slots(&wiki).await;
}

// ---------------------------------------------------------------------------------------
// 5. --dry-run.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_every_table_and_changes_nothing() {
    let work = Workdir::new();
    let tracker = create_database("rs_dry").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 3).await;
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    capture(&config).await;
    let t = pg_now(&tracker).await;
    // Tenant 2 loses two issues (with their comments and watchers) and gains a comment;
    // one of its users goes.
    pg_connect(&tracker)
        .await
        .batch_execute(
            "DELETE FROM issues WHERE site_id = 2 AND title IN ('issue 2', 'issue 3');
             INSERT INTO comments (issue_id, body) SELECT min(id), 'new' FROM issues WHERE site_id = 2;",
        )
        .await
        .expect("changes");
    rusqlite::Connection::open(&identity)
        .expect("open")
        .execute_batch(
            "DELETE FROM sessions WHERE user_id = 200; DELETE FROM memberships WHERE user_id = 200;
             DELETE FROM users WHERE id = 200;",
        )
        .expect("identity changes");
    capture(&config).await;
    let dumps = (pg_dump(&tracker).await, sqlite_dump(&identity));

    let out = run_ok(
        &config,
        &["restore", "--tenant", "2", "--at", &t, "--dry-run"],
    )
    .await;
    for line in [
        "tenant 2 tracker.sites: would write 1 rows, remove 1",
        "tenant 2 tracker.issues: would write 4 rows, remove 2",
        "tenant 2 tracker.comments: would write 4 rows, remove 3",
        "tenant 2 tracker.watchers: would write 4 rows, remove 2",
        "tenant 2 identity.users: would write 3 rows, remove 2",
        "tenant 2 identity.memberships: would write 3 rows, remove 2",
        "tenant 2 identity.sessions: would write 3 rows, remove 2",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }
    assert!(out.contains("would restore 1 tenants"), "{out}");
    assert!(
        pg_dump(&tracker).await == dumps.0,
        "a dry run changed the tracker"
    );
    assert!(
        sqlite_dump(&identity) == dumps.1,
        "a dry run changed identity"
    );

    let report = json(
        &run_ok(
            &config,
            &[
                "restore",
                "--tenant",
                "2",
                "--at",
                &t,
                "--dry-run",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["rows_written"], 13 + 9);
    assert_eq!(report["rows_removed"], 1 + 2 + 3 + 2 + 6);
    assert!(
        pg_dump(&tracker).await == dumps.0,
        "a dry run changed the tracker"
    );
    assert!(
        sqlite_dump(&identity) == dumps.1,
        "a dry run changed identity"
    );
    drop_slots(&tracker).await;
}

// ---------------------------------------------------------------------------------------
// 6. Killed half way, run again.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_killed_at_the_third_commit_is_finished_by_running_it_again() {
    let work = Workdir::new();
    let tracker = create_database("rs_resume").await;
    setup_tracker(&tracker, 6).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    capture(&config).await;
    let client = pg_connect(&tracker).await;
    let doomed: Vec<i64> = (1..=5).map(site_id).collect();
    let mut before = BTreeMap::new();
    for &site in &doomed {
        before.insert(site, tracker_rows(&client, site, false).await);
    }
    let xid = delete_tracker_sites(&tracker, &doomed).await;
    capture(&config).await;

    let before_tx = format!("tracker:{xid}");
    let mut args = vec![
        "restore".to_string(),
        "--before-tx".into(),
        before_tx,
        "--jobs".into(),
        "1".into(),
    ];
    args.extend(tenant_args(doomed.iter().copied()));
    run_killed_at_third_commit(&config, &args).await;
    let mut now = BTreeMap::new();
    for &site in &doomed {
        now.insert(site, tracker_rows(&client, site, false).await);
    }
    assert_two_whole_the_rest_empty(&now, &before);

    let out = run_ok(&config, &as_strs(&args)).await;
    assert!(out.contains("every tenant verified"), "{out}");
    for &site in &doomed {
        assert_eq!(
            tracker_rows(&client, site, false).await,
            before[&site],
            "tenant {site}"
        );
    }
    capture(&config).await;
    let mut verify = verify_args(doomed.iter().copied());
    verify.push("--json".into());
    let all = run_ok(&config, &as_strs(&verify)).await;
    assert_eq!(json(&all)["ok"], true, "{all}");
    drop_slots(&tracker).await;
}

// ---------------------------------------------------------------------------------------
// 7. Bad requests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_restore_requests_are_refused_and_change_nothing() {
    let work = Workdir::new();
    let tracker = create_database("rs_bad").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 3).await;
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    capture(&config).await;
    let t = pg_now(&tracker).await;
    delete_tracker_sites(&tracker, &[2]).await;
    delete_identity_sites(&identity, &[2]);
    capture(&config).await;
    let dumps = (pg_dump(&tracker).await, sqlite_dump(&identity));

    let spare = pg_url("postgres");
    // An SQLite database whose users lack a column the vault's rows carry.
    let different = work.path("identity-different.db");
    rusqlite::Connection::open(&different)
        .expect("open")
        .execute_batch(&IDENTITY_SCHEMA.replace(", misc)", ")"))
        .expect("different schema");
    let different_url = format!("sqlite://{}", different.display());
    let different_dump = sqlite_dump(&different);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "restore",
                "--tenant",
                "2",
                "--at",
                &t,
                "--source",
                "identity",
                "--into-url",
                &different_url,
            ],
            "the target schema differs: table users has no column misc",
        ),
        (
            vec!["restore", "--tenant", "999", "--at", &t],
            "unknown tenant 999",
        ),
        (
            vec!["restore", "--tenant", "2", "--at", "2001-01-01T00:00:00Z"],
            "before the restorable window",
        ),
        (
            vec!["restore", "--tenant", "2", "--at", "2999-01-01T00:00:00Z"],
            "2999-01-01T00:00:00.000000Z is in the future",
        ),
        (
            vec![
                "restore",
                "--tenant",
                "2",
                "--source",
                "identity",
                "--before-tx",
                "identity:99999999",
            ],
            "transaction 99999999 is not in the history of source identity",
        ),
        (
            vec![
                "restore", "--tenant", "2", "--at", &t, "--source", "identity", "--as", "1",
            ],
            "tenant 1 already has rows",
        ),
        (
            vec![
                "restore",
                "--tenant",
                "2",
                "--before-tx",
                "tracker:999999999",
            ],
            "transaction 999999999 is not in the history of source tracker",
        ),
        (
            vec!["restore", "--tenant", "2", "--before-tx", "12345"],
            "expected SOURCE:TXID",
        ),
        (
            vec![
                "restore", "--tenant", "1", "--tenant", "2", "--at", &t, "--as", "77",
            ],
            "--as restores one tenant",
        ),
        (
            vec!["restore", "--tenant", "2", "--at", &t, "--into-url", &spare],
            "--into-url writes one source",
        ),
    ];
    for (args, needle) in cases {
        let output = run(&config, &args).await;
        assert_refused(&output, needle);
        assert!(
            pg_dump(&tracker).await == dumps.0,
            "{args:?} changed the tracker"
        );
        assert!(
            sqlite_dump(&identity) == dumps.1,
            "{args:?} changed identity"
        );
        assert!(
            sqlite_dump(&different) == different_dump,
            "{args:?} wrote into the other database"
        );
    }
    drop_slots(&tracker).await;
}

/// "The target schema differs" must be found before anything is written, in every source:
/// a restore that refuses one source changes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_difference_in_one_source_is_refused_before_any_source_is_written() {
    let work = Workdir::new();
    let tracker = create_database("rs_diff_t").await;
    let wiki = create_database("rs_diff_w").await;
    setup_tracker(&tracker, 3).await;
    setup_wiki(&wiki, 3).await;
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        Some(&wiki),
        None,
    ));
    capture(&config).await;
    let t = pg_now(&tracker).await;
    delete_tracker_sites(&tracker, &[3]).await;
    delete_wiki_sites(&wiki, &[3]).await;
    // The wiki's pages lose a column the vault's rows carry.
    pg_connect(&wiki)
        .await
        .batch_execute("ALTER TABLE pages DROP COLUMN title")
        .await
        .expect("drop column");
    capture(&config).await;
    let dumps = (pg_dump(&tracker).await, pg_dump(&wiki).await);
    let output = run(&config, &["restore", "--tenant", "3", "--at", &t]).await;
    let err = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        stdout(&output)
    );
    assert!(err.contains("schema differs"), "{err}");
    assert!(
        pg_dump(&tracker).await == dumps.0,
        "the tracker was restored although the wiki was refused"
    );
    assert!(pg_dump(&wiki).await == dumps.1, "the wiki changed");
    drop_slots(&tracker).await;
    drop_slots(&wiki).await;
}

// ---------------------------------------------------------------------------------------
// 8. SQLite only, just before a transaction.

#[test]
fn sqlite_tenants_deleted_in_one_transaction_are_restored_to_just_before_it() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 8);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Changes before the cleanup belong to the state restored.
    write_identity(&identity, 8, 21, Duration::from_millis(300));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let doomed: Vec<i64> = [2, 5, 8].into_iter().map(site_id).collect();
    let kept: Vec<i64> = [1, 3, 4, 6, 7].into_iter().map(site_id).collect();
    let before: BTreeMap<i64, Rows> = doomed
        .iter()
        .map(|&s| (s, identity_rows(&identity, s)))
        .collect();
    let seq = delete_identity_sites(&identity, &doomed);
    // Changes after it do not.
    let conn = rusqlite::Connection::open(&identity).expect("open");
    conn.execute_batch(&format!(
        "UPDATE users SET email = 'later' WHERE site_id = {}",
        kept[0]
    ))
    .expect("later");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let kept_before: BTreeMap<i64, Rows> = kept
        .iter()
        .map(|&s| (s, identity_rows(&identity, s)))
        .collect();

    let before_tx = format!("identity:{seq}");
    let mut args = vec![
        "restore".to_string(),
        "--before-tx".into(),
        before_tx,
        "--json".into(),
    ];
    args.extend(tenant_args(doomed.iter().copied()));
    let out = lifeboat_ok(&config, &as_strs(&args));
    let report = json(&out);
    assert_eq!(report["failed"], 0, "{out}");
    assert_eq!(report["tenants"], 3, "{out}");
    let target_time = report["target_time"].as_str().expect("time").to_string();
    for &site in &doomed {
        assert_eq!(
            identity_rows(&identity, site),
            before[&site],
            "tenant {site}"
        );
    }
    for &site in &kept {
        assert_eq!(
            identity_rows(&identity, site),
            kept_before[&site],
            "tenant {site} touched"
        );
    }
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let mut verify = verify_args(doomed.iter().copied());
    verify.extend(["--at".into(), target_time]);
    let ok = lifeboat_ok(&config, &as_strs(&verify));
    assert!(ok.starts_with("ok: 3 tenants"), "{ok}");
    let all: Vec<i64> = (1..=8).map(site_id).collect();
    let ok = lifeboat_ok(&config, &as_strs(&verify_args(all)));
    assert!(ok.starts_with("ok: 8 tenants"), "{ok}");
}

/// `--before-tx identity:SEQ` inside a commit group: a transaction that committed before
/// the bad one, read by capture in the same step (same group, first of its segment), is
/// part of the state restored.
#[test]
fn sqlite_before_tx_keeps_an_earlier_transaction_of_the_same_commit_group() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 6);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let doomed: Vec<i64> = [2, 5].into_iter().map(site_id).collect();
    // A legitimate change of tenant 2, then the cleanup, with no capture in between.
    rusqlite::Connection::open(&identity)
        .expect("open")
        .execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE users SET email = 'legit@site2.example.net' WHERE id = 201;
             INSERT INTO users VALUES (299, 2, 'new@site2.example.net', NULL, 0.5, NULL);
             INSERT INTO memberships VALUES (2, 299, 'owner');
             COMMIT;",
        )
        .expect("legit change");
    let before: BTreeMap<i64, Rows> = doomed
        .iter()
        .map(|&s| (s, identity_rows(&identity, s)))
        .collect();
    let seq = delete_identity_sites(&identity, &doomed);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    let before_tx = format!("identity:{seq}");
    let mut args = vec![
        "restore".to_string(),
        "--before-tx".into(),
        before_tx,
        "--json".into(),
    ];
    args.extend(tenant_args(doomed.iter().copied()));
    let out = lifeboat_ok(&config, &as_strs(&args));
    assert_eq!(json(&out)["failed"], 0, "{out}");
    for &site in &doomed {
        assert_eq!(
            identity_rows(&identity, site),
            before[&site],
            "tenant {site}: restored just before {seq}"
        );
    }
}

/// "As of T" means the transactions committed by T. An SQLite writer transaction whose
/// first statement ran before T and which committed after T is not part of the state at
/// T, not even in part (its changes carry their statements' times, not the commit's).
#[tokio::test]
async fn sqlite_changes_committed_before_the_target_time_are_kept_inside_a_large_group() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Capture is not running: what follows is read as one backlog, one commit group.
    let site = site_id(2);
    let conn = rusqlite::Connection::open(&identity).expect("open");
    conn.execute(
        "UPDATE users SET email = 'committed before the target' WHERE site_id = ?1",
        [site],
    )
    .expect("an earlier transaction");
    let kept = identity_rows(&identity, site);
    std::thread::sleep(Duration::from_millis(50));
    let t: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(Duration::from_millis(50));
    conn.execute_batch(&format!(
        "BEGIN; DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = {site}); \
         DELETE FROM memberships WHERE site_id = {site}; DELETE FROM users WHERE site_id = {site}; COMMIT;"
    ))
    .expect("the deletion after the target");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    // The premise: both transactions landed in one commit group.
    let vault = crate::vault_checks::open(&config).await;
    let history = lifeboat_core::state::SourceHistory::load(&vault, "identity")
        .await
        .expect("history");
    let mut grouped = false;
    for segment in &history.segments {
        let segment = vault.read_segment(&segment.name).await.expect("segment");
        grouped |= segment.transactions.iter().any(|tx| {
            tx.changes
                .iter()
                .any(|c| c.op == lifeboat_core::model::Op::Update)
                && tx
                    .changes
                    .iter()
                    .any(|c| c.op == lifeboat_core::model::Op::Delete)
        });
    }
    assert!(grouped, "the two transactions are not one commit group");

    let key = site.to_string();
    let out = run_ok(
        &config,
        &["restore", "--tenant", &key, "--at", &t, "--json"],
    )
    .await;
    assert_eq!(json(&out)["failed"], 0, "{out}");
    assert_eq!(
        identity_rows(&identity, site),
        kept,
        "restored as of {t}: the update committed before it is kept"
    );
}

/// Foreign keys of restored rows hold whichever way they are written: with the triggers
/// off (a superuser) each key is checked in one statement, and a row whose parent is gone
/// fails the restore with nothing written; a table with a trigger of its own is written
/// with triggers on, and the trigger runs; a role that may not turn triggers off restores
/// the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_rows_keep_their_foreign_keys_and_their_triggers() {
    let work = Workdir::new();
    let url = create_database("rs_keys").await;
    let client = pg_connect(&url).await;
    client
        .batch_execute(
            "CREATE TABLE plans (id int PRIMARY KEY, name text);
             CREATE TABLE sites (id bigint PRIMARY KEY, plan_id int REFERENCES plans(id));
             CREATE TABLE issues (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id)
                 ON DELETE CASCADE, parent_id bigint REFERENCES issues(id), plan_id int REFERENCES plans(id));
             CREATE TABLE issue_log (issue_id bigint, at timestamptz DEFAULT now());
             INSERT INTO plans VALUES (1, 'free'), (2, 'pro');
             INSERT INTO sites VALUES (1, 1), (2, 2), (3, 2);
             INSERT INTO issues SELECT s * 100 + i, s, CASE WHEN i > 1 THEN s * 100 + i - 1 END,
                 CASE WHEN i % 2 = 0 THEN 2 END
                 FROM generate_series(1, 3) s, generate_series(1, 5) i;",
        )
        .await
        .expect("schema");
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n\n[sources.app]\nurl = \"{url}\"\ntenant_column = \"site_id\"\n\
         [sources.app.tables.sites]\ntenant_column = \"id\"\n\
         [sources.app.tables.plans]\nglobal = true\n\
         [sources.app.tables.issue_log]\nglobal = true\n",
        work.vault_url()
    ));
    capture(&config).await;
    let rows_sql = |site: i64| {
        format!(
            "SELECT s::text FROM sites s WHERE id = {site} UNION ALL \
             SELECT i::text FROM issues i WHERE site_id = {site}"
        )
    };
    let before = texts_at(&url, &rows_sql(2)).await;
    assert_eq!(before.len(), 6);
    let t = pg_now(&url).await;
    // Site 2 is deleted, then its plan (once nothing else uses it): restored rows of site 2
    // would reference plan 2, which is gone.
    client
        .batch_execute("DELETE FROM sites WHERE id = 2; UPDATE sites SET plan_id = 1 WHERE id = 3; UPDATE issues SET plan_id = NULL; DELETE FROM plans WHERE id = 2")
        .await
        .expect("the mistake");
    capture(&config).await;
    let everything = pg_dump(&url).await;
    let failed = failed_restore(&config, &t).await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("reference rows of plans") && error.contains("plan_id_fkey"),
        "{error}"
    );
    assert!(
        pg_dump(&url).await == everything,
        "a failed restore changed the database"
    );

    // With the plan back, the same restore writes the rows as they were.
    client
        .batch_execute("INSERT INTO plans VALUES (2, 'pro')")
        .await
        .expect("plan back");
    run_ok(&config, &["restore", "--tenant", "2", "--at", &t]).await;
    assert_eq!(texts_at(&url, &rows_sql(2)).await, before);

    // A trigger of its own on issues: written with triggers on, and the trigger runs.
    client
        .batch_execute(
            "CREATE FUNCTION log_issue() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN INSERT INTO issue_log (issue_id) VALUES (NEW.id); RETURN NEW; END $$;
             CREATE TRIGGER issues_logged AFTER INSERT ON issues FOR EACH ROW EXECUTE FUNCTION log_issue();
             DELETE FROM sites WHERE id = 2",
        )
        .await
        .expect("trigger");
    run_ok(&config, &["restore", "--tenant", "2", "--at", &t]).await;
    assert_eq!(texts_at(&url, &rows_sql(2)).await, before);
    let logged = pg_texts(&client, "SELECT issue_id::text FROM issue_log").await;
    assert_eq!(logged, ["201", "202", "203", "204", "205"]);

    // A deferrable unique constraint is rechecked by a trigger: the triggers stay on, and
    // PostgreSQL's own foreign-key check is the one that refuses.
    client
        .batch_execute(
            "DROP TRIGGER issues_logged ON issues;
             ALTER TABLE issues ADD CONSTRAINT issues_pair UNIQUE (id, site_id) DEFERRABLE;
             DELETE FROM sites WHERE id = 2; DELETE FROM plans WHERE id = 2",
        )
        .await
        .expect("deferrable");
    let failed = failed_restore(&config, &t).await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("violates foreign key constraint"), "{error}");
    assert_eq!(texts_at(&url, &rows_sql(2)).await, Vec::<String>::new());

    // A trigger that changes the rows as they go in: the read-back differs from the vault,
    // and the restore says so and fails.
    client
        .batch_execute(
            "ALTER TABLE issues DROP CONSTRAINT issues_pair; INSERT INTO plans VALUES (2, 'pro');
             CREATE FUNCTION blank_plan() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN NEW.plan_id := NULL; RETURN NEW; END $$;
             CREATE TRIGGER issues_blank_plan BEFORE INSERT ON issues FOR EACH ROW EXECUTE FUNCTION blank_plan();",
        )
        .await
        .expect("altering trigger");
    let failed = failed_restore(&config, &t).await;
    assert_eq!(failed["verified"], false, "{failed}");
    let differences = failed["differences"].to_string();
    assert!(differences.contains("issues"), "{differences}");
    assert!(!differences.contains("sites"), "{differences}");

    // A role that may not set session_replication_role: the triggers check the keys.
    let role = unique("rs_keys_role");
    client
        .batch_execute(&format!(
            "DROP TRIGGER issues_blank_plan ON issues; DELETE FROM sites WHERE id = 2;
             CREATE ROLE {role} LOGIN;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        ))
        .await
        .expect("role");
    let as_role = url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(as_role, url, "the test URL names its user");
    let out = run_ok(
        &config,
        &[
            "restore",
            "--tenant",
            "2",
            "--at",
            &t,
            "--into-url",
            &as_role,
            "--json",
        ],
    )
    .await;
    assert_eq!(json(&out)["failed"], 0, "{out}");
    assert_eq!(texts_at(&url, &rows_sql(2)).await, before);
    drop_slots(&url).await;
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .ok();
}

/// SQLite: `--as` clones a deleted tenant under a new key (tenant columns rewritten, rows
/// reached through `tenant_via` following their parents); a restore killed at its third
/// commit leaves whole tenants only, and running it again finishes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_clones_with_as_and_finishes_a_restore_killed_half_way() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 6);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    capture(&config).await;
    let doomed: Vec<i64> = (1..=5).map(site_id).collect();
    let before: BTreeMap<i64, Rows> = doomed
        .iter()
        .map(|&site| (site, identity_rows(&identity, site)))
        .collect();
    let seq = delete_identity_sites(&identity, &doomed);
    capture(&config).await;
    let before_tx = format!("identity:{seq}");

    // --as: tenant 1 again, as 9000, while its own rows are gone.
    let out = run_ok(
        &config,
        &[
            "restore",
            "--tenant",
            "1",
            "--before-tx",
            &before_tx,
            "--as",
            "9000",
            "--json",
        ],
    )
    .await;
    assert_eq!(json(&out)["failed"], 0, "{out}");
    let mut expected = before[&1].clone();
    for row in expected.get_mut("identity.users").expect("users") {
        *row = row.replacen(", Integer(1), ", ", Integer(9000), ", 1);
    }
    for row in expected
        .get_mut("identity.memberships")
        .expect("memberships")
    {
        *row = row.replacen("[Integer(1), ", "[Integer(9000), ", 1);
    }
    for rows in expected.values_mut() {
        rows.sort();
    }
    assert_eq!(identity_rows(&identity, 9000), expected);
    assert_eq!(
        row_count(&identity_rows(&identity, 1)),
        0,
        "the original stays deleted"
    );
    // The clone goes, so that the originals' user ids are free again.
    delete_identity_sites(&identity, &[9000]);

    let mut args = vec!["restore".to_string(), "--before-tx".into(), before_tx];
    args.extend(tenant_args(doomed.iter().copied()));
    run_killed_at_third_commit(&config, &args).await;
    let now = doomed
        .iter()
        .map(|&site| (site, identity_rows(&identity, site)))
        .collect();
    assert_two_whole_the_rest_empty(&now, &before);

    // Run again on a terminal (`script` gives it one): the progress bar shows tenant
    // restores, rows, throughput and the time left.
    let mut line = format!(
        "'{}' --config '{}'",
        env!("CARGO_BIN_EXE_lifeboat"),
        config.display()
    );
    for arg in &args {
        line.push_str(&format!(" '{arg}'"));
    }
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("LIFEBOAT_FAILPOINT")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script")
    })
    .await
    .expect("join");
    let terminal = stdout(&output);
    assert!(output.status.success(), "{terminal}");
    assert!(terminal.contains("every tenant verified"), "{terminal}");
    for needle in ["5/5 tenant restores", " rows, ", " rows/s", "ETA"] {
        assert!(terminal.contains(needle), "no {needle:?} in {terminal:?}");
    }
    for &site in &doomed {
        assert_eq!(
            identity_rows(&identity, site),
            before[&site],
            "tenant {site}"
        );
    }
}

/// SQLite enforces foreign keys only on connections that ask; restore asks, so restored
/// rows whose parent is gone fail their tenant's restore and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restored_rows_must_keep_their_foreign_keys() {
    let work = Workdir::new();
    let path = work.path("app.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE plans (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             plan_id INTEGER REFERENCES plans(id));
         INSERT INTO plans VALUES (1, 'free'), (2, 'pro');
         INSERT INTO users VALUES (10, 1, 1), (20, 2, 2), (21, 2, NULL), (30, 3, 1);",
    )
    .expect("schema");
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n\n[sources.app]\nurl = \"sqlite://{}\"\ntenant_column = \"site_id\"\n\
         [sources.app.tables.plans]\nglobal = true\n",
        work.vault_url(),
        path.display()
    ));
    capture(&config).await;
    let users = |site: i64| sqlite_texts(&conn, "SELECT * FROM users WHERE site_id = ?1", site);
    let before = users(2);
    assert_eq!(before.len(), 2);
    // The database's clock, as SQLite changes carry it, a moment after the last write.
    std::thread::sleep(Duration::from_millis(20));
    let t: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(Duration::from_millis(20));
    conn.execute_batch("DELETE FROM users WHERE site_id = 2; DELETE FROM plans WHERE id = 2")
        .expect("the mistake");
    capture(&config).await;
    let everything = sqlite_dump(&path);
    let failed = failed_restore(&config, &t).await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("FOREIGN KEY constraint failed"), "{failed}");
    assert!(
        sqlite_dump(&path) == everything,
        "a failed restore changed the database"
    );

    conn.execute_batch("INSERT INTO plans VALUES (2, 'pro')")
        .expect("plan back");
    run_ok(&config, &["restore", "--tenant", "2", "--at", &t]).await;
    assert_eq!(users(2), before);
}

/// A source in a schema of its own, with composite foreign keys between tenant tables (one
/// into a partitioned table, from an `int` column to a `bigint` one, which the database
/// checks) and a key into a table of another schema: restored rows come back row for
/// row, and a row whose parent in the other schema is gone fails the restore with nothing
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_in_a_schema_of_its_own_with_composite_and_cross_schema_keys() {
    let work = Workdir::new();
    let url = create_database("rs_schema").await;
    let client = pg_connect(&url).await;
    client
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE public.plans (id int PRIMARY KEY);
             INSERT INTO public.plans VALUES (1), (2);
             CREATE TABLE app.sites (id bigint PRIMARY KEY, plan_id int REFERENCES public.plans(id));
             CREATE TABLE app.issues (id bigint PRIMARY KEY,
                 site_id bigint NOT NULL REFERENCES app.sites(id) ON DELETE CASCADE,
                 UNIQUE (site_id, id));
             CREATE TABLE app.notes (site_id bigint NOT NULL, issue_id bigint NOT NULL, n int,
                 body text, PRIMARY KEY (site_id, issue_id, n),
                 FOREIGN KEY (site_id, issue_id) REFERENCES app.issues(site_id, id) ON DELETE CASCADE);
             INSERT INTO app.sites VALUES (1, 1), (2, 2), (3, 2);
             INSERT INTO app.issues SELECT s * 10 + i, s FROM generate_series(1, 3) s, generate_series(1, 3) i;
             INSERT INTO app.notes SELECT site_id, id, n, 'note ' || n FROM app.issues, generate_series(1, 2) n;
             CREATE TABLE app.events (site_id bigint NOT NULL REFERENCES app.sites(id) ON DELETE CASCADE,
                 id bigint NOT NULL, PRIMARY KEY (site_id, id)) PARTITION BY RANGE (id);
             CREATE TABLE app.events_low PARTITION OF app.events FOR VALUES FROM (0) TO (22);
             CREATE TABLE app.events_high PARTITION OF app.events FOR VALUES FROM (22) TO (1000);
             CREATE TABLE app.marks (site_id bigint NOT NULL, event_id int NOT NULL,
                 PRIMARY KEY (site_id, event_id),
                 FOREIGN KEY (site_id, event_id) REFERENCES app.events(site_id, id) ON DELETE CASCADE);
             INSERT INTO app.events SELECT s, s * 10 + i FROM generate_series(1, 3) s, generate_series(1, 3) i;
             INSERT INTO app.marks SELECT site_id, id FROM app.events;
             CREATE TABLE public.event_log (id bigint);",
        )
        .await
        .expect("schema");
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n\n[sources.app]\nurl = \"{url}\"\nschema = \"app\"\n\
         tenant_column = \"site_id\"\n[sources.app.tables.sites]\ntenant_column = \"id\"\n",
        work.vault_url()
    ));
    capture(&config).await;
    let rows_sql = |site: i64| {
        format!(
            "SELECT s::text FROM app.sites s WHERE id = {site} UNION ALL \
             SELECT i::text FROM app.issues i WHERE site_id = {site} UNION ALL \
             SELECT n::text FROM app.notes n WHERE site_id = {site} UNION ALL \
             SELECT e::text FROM app.events e WHERE site_id = {site} UNION ALL \
             SELECT m::text FROM app.marks m WHERE site_id = {site}"
        )
    };
    let before = texts_at(&url, &rows_sql(2)).await;
    // Site 2's events are 21 (in events_low), 22 and 23 (in events_high).
    assert_eq!(before.len(), 1 + 3 + 6 + 3 + 3);
    let t = pg_now(&url).await;
    client
        .batch_execute("DELETE FROM app.sites WHERE id = 2")
        .await
        .expect("delete");
    capture(&config).await;
    let out = run_ok(&config, &["restore", "--tenant", "2", "--at", &t, "--json"]).await;
    assert_eq!(json(&out)["rows_written"], 16, "{out}");
    assert_eq!(texts_at(&url, &rows_sql(2)).await, before);

    // A trigger on one partition only: the triggers stay on for the partitioned table,
    // and it runs for the rows that land in that partition.
    client
        .batch_execute(
            "CREATE FUNCTION app.log_event() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN INSERT INTO public.event_log VALUES (NEW.id); RETURN NEW; END $$;
             CREATE TRIGGER logged AFTER INSERT ON app.events_high
                 FOR EACH ROW EXECUTE FUNCTION app.log_event();
             DELETE FROM app.sites WHERE id = 2",
        )
        .await
        .expect("partition trigger");
    run_ok(&config, &["restore", "--tenant", "2", "--at", &t]).await;
    assert_eq!(texts_at(&url, &rows_sql(2)).await, before);
    let logged = pg_texts(&client, "SELECT id::text FROM public.event_log").await;
    assert_eq!(logged, ["22", "23"]);

    // The plan in the other schema goes: the restore is refused by the key check.
    client
        .batch_execute(
            "DROP TRIGGER logged ON app.events_high;
             DELETE FROM app.sites WHERE id = 2; UPDATE app.sites SET plan_id = 1;
             DELETE FROM public.plans WHERE id = 2",
        )
        .await
        .expect("the plan goes");
    capture(&config).await;
    let everything = pg_dump(&url).await;
    let failed = failed_restore(&config, &t).await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("restored rows of sites reference rows of plans"),
        "{failed}"
    );
    assert!(
        pg_dump(&url).await == everything,
        "a failed restore changed the database"
    );
    drop_slots(&url).await;
}
