//! Restoring a tenant with a long tail of changes since its base under a memory budget of a
//! few kilobytes (`LIFEBOAT_RESTORE_MEMORY_BYTES`), so that its changes are spilled to
//! temporary files and merged with the base's rows: the rows restored are the rows the
//! tenant had, on PostgreSQL and on SQLite, `verify` agrees under the same budget, and the
//! temporary directory is left empty. A budget that is not a number is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::*;
use crate::fixtures::*;

/// Small enough that a few dozen changes fill it.
const TINY_BUDGET: &str = "4096";

/// "table" -> the rows, each as text, sorted.
type Rows = BTreeMap<String, Vec<String>>;

/// Run lifeboat with the memory budget `budget` and temporary files under `tmp`, logging
/// the core's reading at debug level.
async fn run_with_budget(config: &Path, tmp: &Path, budget: &str, args: &[&str]) -> Output {
    let mut command = lifeboat_command(config, args);
    command
        .env("LIFEBOAT_RESTORE_MEMORY_BYTES", budget)
        .env("TMPDIR", tmp)
        .env("LIFEBOAT_LOG", "warn,lifeboat_core::state=debug");
    tokio::task::spawn_blocking(move || command.output().expect("run lifeboat"))
        .await
        .expect("join")
}

fn assert_ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn assert_spilled(output: &Output) {
    assert!(
        stderr(output).contains("spilling to a temporary file"),
        "the changes were not spilled: {}",
        stderr(output)
    );
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

async fn capture(config: &Path) {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || lifeboat_ok(&config, &["capture", "--until-caught-up"]))
        .await
        .expect("join");
}

async fn tracker_tenant_rows(url: &str, site: i64) -> Rows {
    let client = pg_connect(url).await;
    let queries = [
        (
            "sites",
            format!("SELECT t::text FROM sites t WHERE id = {site}"),
        ),
        (
            "issues",
            format!("SELECT t::text FROM issues t WHERE site_id = {site}"),
        ),
        (
            "comments",
            format!(
                "SELECT c::text FROM comments c JOIN issues i ON i.id = c.issue_id \
                 WHERE i.site_id = {site}"
            ),
        ),
        (
            "watchers",
            format!("SELECT t::text FROM watchers t WHERE site_id = {site}"),
        ),
    ];
    let mut out = Rows::new();
    for (table, sql) in queries {
        let mut rows: Vec<String> = client
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        out.insert(table.to_string(), rows);
    }
    out
}

fn identity_tenant_rows(path: &Path, site: i64) -> Rows {
    let conn = rusqlite::Connection::open(path).expect("open identity");
    conn.busy_timeout(Duration::from_secs(30)).expect("busy");
    let queries = [
        ("users", "SELECT * FROM users WHERE site_id = ?1"),
        (
            "memberships",
            "SELECT * FROM memberships WHERE site_id = ?1",
        ),
        (
            "sessions",
            "SELECT s.* FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.site_id = ?1",
        ),
    ];
    let mut out = Rows::new();
    for (table, sql) in queries {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([site], |r| {
                let values: Vec<rusqlite::types::Value> = (0..columns)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<_>>()?;
                Ok(format!("{values:?}"))
            })
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        rows.sort();
        out.insert(table.to_string(), rows);
    }
    out
}

fn total(rows: &Rows) -> usize {
    rows.values().map(Vec::len).sum()
}

/// A PostgreSQL tenant whose history since its base holds hundreds of inserts, updates,
/// key changes (a comment's id, a watcher's composite key), deletes (cascading), a
/// truncate of a table, and a column added, restored under a tiny budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tail_since_the_base_restores_under_a_tiny_budget_on_postgresql() {
    let work = Workdir::new();
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let url = create_database("rs_tail").await;
    setup_tracker(&url, 3).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&url), None, None));
    capture(&config).await;

    let site = site_id(2);
    let client = pg_connect(&url).await;
    for sql in [
        format!(
            "INSERT INTO issues (site_id, title, body, priority) \
             SELECT {site}, 'tail ' || g, repeat('b', 40), g FROM generate_series(1, 300) g"
        ),
        format!(
            "UPDATE issues SET title = title || ' edited', priority = priority + 1 \
             WHERE site_id = {site} AND id % 2 = 0"
        ),
        format!(
            "INSERT INTO comments (issue_id, body) SELECT id, 'tail comment' FROM issues \
             WHERE site_id = {site}"
        ),
        format!(
            "UPDATE comments SET id = id + 1000000 WHERE id % 3 = 0 AND issue_id IN \
             (SELECT id FROM issues WHERE site_id = {site})"
        ),
        format!("DELETE FROM issues WHERE site_id = {site} AND id % 5 = 0"),
        format!(
            "INSERT INTO watchers SELECT {site}, id, 'tail' FROM issues \
             WHERE site_id = {site} AND id % 7 = 0"
        ),
        format!("UPDATE watchers SET user_name = user_name || '-renamed' WHERE site_id = {site}"),
        "TRUNCATE watchers".to_string(),
        format!(
            "INSERT INTO watchers SELECT {site}, id, 'again' FROM issues \
             WHERE site_id = {site} AND id % 3 = 0"
        ),
        "ALTER TABLE comments ADD COLUMN note text".to_string(),
        format!(
            "UPDATE comments SET note = 'n', body = 'edited after the column' WHERE id % 4 = 0 \
             AND issue_id IN (SELECT id FROM issues WHERE site_id = {site})"
        ),
        format!(
            "INSERT INTO comments (issue_id, body, note) SELECT id, 'after the column', 'x' \
             FROM issues WHERE site_id = {site} AND id % 3 = 1"
        ),
    ] {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    capture(&config).await;
    let before = tracker_tenant_rows(&url, site).await;
    assert!(total(&before) > 600, "{}", total(&before));

    // Deleted in one transaction, then restored to just before it.
    let mut conn = pg_connect(&url).await;
    let tx = conn.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()::bigint", &[])
        .await
        .expect("xid")
        .get(0);
    tx.execute(&format!("DELETE FROM sites WHERE id = {site}"), &[])
        .await
        .expect("delete");
    tx.commit().await.expect("commit");
    capture(&config).await;
    let before_tx = format!("tracker:{xid}");
    let tenant = site.to_string();
    let restore = [
        "restore",
        "--tenant",
        &tenant,
        "--before-tx",
        &before_tx,
        "--json",
    ];

    // A budget that is not a number: refused in one line, nothing written.
    let refused = run_with_budget(&config, &tmp, "lots", &restore).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("LIFEBOAT_RESTORE_MEMORY_BYTES must be a number of bytes"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(total(&tracker_tenant_rows(&url, site).await), 0);

    let output = run_with_budget(&config, &tmp, TINY_BUDGET, &restore).await;
    let report: serde_json::Value =
        serde_json::from_str(&assert_ok(&output, "restore")).expect("json");
    assert_eq!(report["failed"], 0, "{report}");
    assert_spilled(&output);
    assert_empty(&tmp);
    assert_eq!(tracker_tenant_rows(&url, site).await, before);

    // The vault's rows at the latest position, read under the same budget, match.
    capture(&config).await;
    let verify =
        run_with_budget(&config, &tmp, TINY_BUDGET, &["verify", "--tenant", &tenant]).await;
    assert!(assert_ok(&verify, "verify").starts_with("ok: 1 tenant"));
    assert_spilled(&verify);
    assert_empty(&tmp);
    drop_slots(&url).await;
}

/// An SQLite tenant with hundreds of inserts, updates, key changes (a membership's
/// composite key) and deletes since its base, restored under a tiny budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tail_since_the_base_restores_under_a_tiny_budget_on_sqlite() {
    let work = Workdir::new();
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    capture(&config).await;

    let site = site_id(2);
    let conn = rusqlite::Connection::open(&identity).expect("open");
    conn.execute_batch(&format!(
        "INSERT INTO users (id, site_id, email, avatar, score, misc)
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 300)
             SELECT 10000 + n, {site}, 'tail' || n || '@example.net', x'00ff', n / 7.0, n FROM g;
         UPDATE users SET email = email || '.edited', misc = 'text now' WHERE site_id = {site} AND id % 2 = 0;
         INSERT INTO memberships SELECT {site}, id, 'tail' FROM users WHERE site_id = {site} AND id >= 10000;
         UPDATE memberships SET user_id = user_id + 50000 WHERE site_id = {site} AND user_id % 3 = 0;
         INSERT INTO sessions (user_id, token) SELECT id, 'tail' FROM users WHERE site_id = {site};
         DELETE FROM sessions WHERE id % 5 = 0 AND user_id IN (SELECT id FROM users WHERE site_id = {site});
         DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = {site} AND id % 7 = 0);
         DELETE FROM users WHERE site_id = {site} AND id % 7 = 0;
         UPDATE memberships SET role = 'owner' WHERE site_id = {site} AND user_id % 4 = 0;"
    ))
    .expect("tail");
    capture(&config).await;
    let before = identity_tenant_rows(&identity, site);
    assert!(total(&before) > 600, "{}", total(&before));

    // Deleted in one write transaction, then restored to just before it.
    let seq: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM _lifeboat_changelog",
            [],
            |r| r.get(0),
        )
        .expect("seq");
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = {site});
         DELETE FROM memberships WHERE site_id = {site};
         DELETE FROM users WHERE site_id = {site};
         COMMIT;"
    ))
    .expect("delete");
    drop(conn);
    capture(&config).await;
    assert_eq!(total(&identity_tenant_rows(&identity, site)), 0);

    let before_tx = format!("identity:{seq}");
    let tenant = site.to_string();
    let output = run_with_budget(
        &config,
        &tmp,
        TINY_BUDGET,
        &[
            "restore",
            "--tenant",
            &tenant,
            "--before-tx",
            &before_tx,
            "--json",
        ],
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_str(&assert_ok(&output, "restore")).expect("json");
    assert_eq!(report["failed"], 0, "{report}");
    assert_spilled(&output);
    assert_empty(&tmp);
    assert_eq!(identity_tenant_rows(&identity, site), before);

    capture(&config).await;
    let verify =
        run_with_budget(&config, &tmp, TINY_BUDGET, &["verify", "--tenant", &tenant]).await;
    assert!(assert_ok(&verify, "verify").starts_with("ok: 1 tenant"));
    assert_spilled(&verify);
    assert_empty(&tmp);
}
