//! Restoring a tenant with a long tail of changes since its base under a memory budget of a
//! few kilobytes (`LIFEBOAT_RESTORE_MEMORY_BYTES`), so that its changes are spilled to
//! temporary files and merged with the base's rows: the rows restored are the rows the
//! tenant had, on PostgreSQL and on SQLite, `verify` agrees under the same budget, and the
//! temporary directory is left empty. A budget that is not a number is refused. A table
//! that references itself, its rows given children first, restores the same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
        .env(
            "LIFEBOAT_LOG",
            "warn,lifeboat_core::state=debug,lifeboat_source::restore=debug",
        );
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

/// A table with two foreign keys to itself (a parent, and a template in the same site),
/// its rows inserted children first (a chain, a tree, a cycle, a row referencing itself)
/// before the base and again after it, restored under a tiny budget: the rows that come
/// before the rows they reference are set aside, the database takes them all, and the
/// rows restored and `verify` match the tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_referencing_table_given_children_first_restores_under_a_tiny_budget() {
    let work = Workdir::new();
    let tmp = work.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let url = create_database("rs_selfref").await;
    let client = pg_connect(&url).await;
    // Foreign keys are checked at the end of each statement, so one INSERT writes children
    // before their parents: a chain and a tree whose parents have higher ids than their
    // children, in id order (which is also the order of their keys in the vault), and
    // templates that reference the tree from the chain.
    let folders = |from: i64, chain: i64, tree: i64| {
        let top = chain + tree + 1;
        format!(
            "INSERT INTO folders (id, site_id, parent_id, template_id, name)
             SELECT id, site, parent, template, 'folder ' || id FROM (
                 SELECT s * 100000 + {from} + i AS id, s AS site,
                        CASE WHEN i < {chain} THEN s * 100000 + {from} + i + 1 END AS parent,
                        CASE WHEN i % 3 = 0 THEN s * 100000 + {from} + {chain} + 1 + i % {tree} END
                            AS template
                 FROM generate_series(1, 3) s, generate_series(1, {chain}) i
                 UNION ALL
                 SELECT s * 100000 + {from} + {top} - k, s,
                        CASE WHEN k > 1 THEN s * 100000 + {from} + {top} - k / 2 END, NULL
                 FROM generate_series(1, 3) s, generate_series(1, {tree}) k
             ) f ORDER BY id"
        )
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE sites (id bigint PRIMARY KEY, name text);
             CREATE TABLE folders (id bigint PRIMARY KEY,
                 site_id bigint NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
                 parent_id bigint REFERENCES folders(id) ON DELETE CASCADE,
                 template_id bigint, name text, UNIQUE (site_id, id),
                 FOREIGN KEY (site_id, template_id) REFERENCES folders (site_id, id)
                     ON DELETE CASCADE);
             INSERT INTO sites SELECT s, 'site ' || s FROM generate_series(1, 3) s;
             {};
             INSERT INTO folders SELECT s * 100000 + 90000 + i, s, s * 100000 + 90000 + 3 - i,
                 NULL, 'cycle' FROM generate_series(1, 3) s, generate_series(1, 2) i;
             INSERT INTO folders SELECT s * 100000 + 90003, s, s * 100000 + 90003, NULL, 'itself'
                 FROM generate_series(1, 3) s;",
            folders(0, 1500, 700)
        ))
        .await
        .expect("schema and rows");
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n\n[sources.app]\nurl = \"{url}\"\ntenant_column = \"site_id\"\n\
         [sources.app.tables.sites]\ntenant_column = \"id\"\n",
        work.vault_url()
    ));
    capture(&config).await;
    // After the base: more rows children first, rows moved under the new ones, a cycle
    // closed, a leaf removed.
    client
        .batch_execute(&format!(
            "{};
             UPDATE folders SET parent_id = id + 10000, name = 'moved'
                 WHERE id % 100000 BETWEEN 1 AND 200;
             UPDATE folders SET parent_id = id - 1 WHERE id % 100000 = 10400;
             DELETE FROM folders WHERE id % 100000 = 1;",
            folders(10000, 400, 300)
        ))
        .await
        .expect("changes");
    capture(&config).await;
    let rows_sql = "SELECT f::text FROM folders f WHERE site_id = 2 ORDER BY id";
    let before = texts_at(&url, rows_sql).await;
    assert_eq!(
        before.len(),
        1500 + 700 + 3 + 400 + 300 - 1,
        "{}",
        before.len()
    );
    let t = pg_now(&url).await;
    client
        .batch_execute("DELETE FROM sites WHERE id = 2")
        .await
        .expect("the mistake");
    capture(&config).await;
    assert!(texts_at(&url, rows_sql).await.is_empty());

    // As in production: capture runs, and a writer keeps changing another tenant.
    let mut running = spawn_capture(&config, None);
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let client = pg_connect(&url).await;
            let mut n = 0u64;
            while writing.load(Ordering::SeqCst) {
                n += 1;
                client
                    .execute(
                        "UPDATE folders SET name = 'busy ' || $1::text WHERE id = 100002",
                        &[&n.to_string()],
                    )
                    .await
                    .expect("write another tenant");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    let output = run_with_budget(
        &config,
        &tmp,
        TINY_BUDGET,
        &["restore", "--tenant", "2", "--at", &t, "--json"],
    )
    .await;
    writing.store(false, Ordering::SeqCst);
    let written = writer.await.expect("writer");
    terminate(&mut running);
    assert!(written > 0, "the writer wrote nothing");
    assert_eq!(
        texts_at(&url, "SELECT name FROM folders WHERE id = 100002").await,
        vec![format!("busy {written}")],
        "the other tenant's last write stands"
    );
    let report: serde_json::Value =
        serde_json::from_str(&assert_ok(&output, "restore")).expect("json");
    assert_eq!(report["failed"], 0, "{report}");
    assert_spilled(&output);
    // The log line's fields, without the terminal's colours.
    let log: String = stderr(&output)
        .split('\x1b')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('m').map_or(part, |p| p.1)
            }
        })
        .collect();
    let set_aside: u64 = log
        .lines()
        .find(|l| l.contains("rows set aside until the rows they reference are written"))
        .and_then(|l| l.split("rows=").nth(1))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rows were set aside: {log}"));
    assert!(set_aside > 2000, "{set_aside} rows set aside");
    assert_empty(&tmp);
    assert_eq!(texts_at(&url, rows_sql).await, before);

    capture(&config).await;
    let verify = run_with_budget(
        &config,
        &tmp,
        TINY_BUDGET,
        &["verify", "--tenant", "2", "--at", &t],
    )
    .await;
    assert!(assert_ok(&verify, "verify").starts_with("ok: 1 tenant"));
    let verify = run_with_budget(&config, &tmp, TINY_BUDGET, &["verify", "--tenant", "2"]).await;
    assert!(assert_ok(&verify, "verify").starts_with("ok: 1 tenant"));
    assert_empty(&tmp);
    drop_slots(&url).await;
}

async fn texts_at(url: &str, sql: &str) -> Vec<String> {
    pg_connect(url)
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The database's current time, RFC 3339 in UTC.
async fn pg_now(url: &str) -> String {
    texts_at(
        url,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await
    .remove(0)
}
