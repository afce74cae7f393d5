//! Recovery campaigns on a real SQLite source (and PostgreSQL for the priority order):
//! tenants queued in priority order, two workers restoring them at once, a worker killed
//! mid-tenant whose tenants another worker finishes, and the refusals; each with capture
//! stopped and beside a continuous `lifeboat capture`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

const SITES: i64 = 12;

/// The tracker's tables, valid for SQLite and PostgreSQL.
const SCHEMA: &str =
    "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL, edition TEXT NOT NULL);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);
         CREATE TABLE comments (id INTEGER PRIMARY KEY,
             issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE, body TEXT);";

/// sites 1..=12; site s has s issues (its "users") and one comment per issue.
pub(crate) fn setup(work: &Workdir) -> PathBuf {
    let db = work.path("tracker.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(SCHEMA).expect("schema");
    for s in 1..=SITES {
        let edition = if s % 3 == 0 { "enterprise" } else { "standard" };
        conn.execute(
            "INSERT INTO sites VALUES (?1, ?2, ?3)",
            rusqlite::params![s, format!("https://site{s}.example.net"), edition],
        )
        .expect("site");
        for i in 0..s {
            let issue = s * 100 + i;
            conn.execute(
                "INSERT INTO issues VALUES (?1, ?2, ?3)",
                rusqlite::params![issue, s, format!("issue {i} of {s}")],
            )
            .expect("issue");
            conn.execute(
                "INSERT INTO comments VALUES (?1, ?2, 'a comment')",
                [issue, issue],
            )
            .expect("comment");
        }
    }
    configure(work, &format!("sqlite://{}", db.display()))
}

/// The same sites, issues and comments in a fresh PostgreSQL database; its URL.
async fn seed_postgres() -> String {
    let url = create_database("campaign").await;
    let mut sql = format!("{SCHEMA}\n");
    for s in 1..=SITES {
        let edition = if s % 3 == 0 { "enterprise" } else { "standard" };
        sql.push_str(&format!(
            "INSERT INTO sites VALUES ({s}, 'https://site{s}.example.net', '{edition}');\n"
        ));
        for i in 0..s {
            let issue = s * 100 + i;
            sql.push_str(&format!(
                "INSERT INTO issues VALUES ({issue}, {s}, 'issue {i} of {s}');
                 INSERT INTO comments VALUES ({issue}, {issue}, 'a comment');\n"
            ));
        }
    }
    pg_connect(&url)
        .await
        .batch_execute(&sql)
        .await
        .expect("seed");
    url
}

/// Write the configuration for a tracker at `url` and capture it.
fn configure(work: &Workdir, url: &str) -> PathBuf {
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.tracker]
url = "{url}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
[sources.tracker.tables.comments]
tenant_via = "issue_id -> issues.id"
[guard]
users = "tracker.issues"
[server.components]
tracker = "Issue tracker"
[campaigns]
lease_seconds = 1
[campaigns.attributes]
edition = "tracker.sites.edition"
"#,
        vault = work.vault_url(),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    config
}

/// A site's rows, sorted.
pub(crate) fn site_rows(db: &Path, site: i64) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut out = Vec::new();
    for sql in [
        "SELECT 'site|' || id || '|' || url || '|' || edition FROM sites WHERE id = ?1",
        "SELECT 'issue|' || id || '|' || title FROM issues WHERE site_id = ?1",
        "SELECT 'comment|' || c.id || '|' || c.body FROM comments c
         JOIN issues i ON i.id = c.issue_id WHERE i.site_id = ?1",
    ] {
        let mut stmt = conn.prepare(sql).expect("prepare");
        out.extend(
            stmt.query_map([site], |r| r.get::<_, String>(0))
                .expect("query")
                .map(|r| r.expect("row")),
        );
    }
    out.sort();
    out
}

/// The time now by SQLite's clock (the one capture's triggers use), then a short pause.
pub(crate) fn now(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open");
    let t: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(std::time::Duration::from_millis(20));
    t
}

pub(crate) fn delete_sites(db: &Path, sites: &[i64]) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
    for s in sites {
        conn.execute("DELETE FROM sites WHERE id = ?1", [s])
            .expect("delete");
    }
}

/// Where a campaign's tracker lives, and its rows, clock and deletions there.
enum Tracker {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Tracker {
    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    fn site_rows(&self, site: i64) -> Vec<String> {
        let url = match self {
            Tracker::Sqlite(db) => return site_rows(db, site),
            Tracker::Postgres(url) => url,
        };
        Tracker::block_on(async {
            let client = pg_connect(url).await;
            let mut out = Vec::new();
            for sql in [
                "SELECT 'site|' || id || '|' || url || '|' || edition FROM sites WHERE id = $1",
                "SELECT 'issue|' || id || '|' || title FROM issues WHERE site_id = $1",
                "SELECT 'comment|' || c.id || '|' || c.body FROM comments c
                 JOIN issues i ON i.id = c.issue_id WHERE i.site_id = $1",
            ] {
                let rows = client.query(sql, &[&(site as i32)]).await.expect("query");
                out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
            }
            out.sort();
            out
        })
    }

    /// The time now by the database's clock, then a short pause.
    fn now(&self) -> String {
        let url = match self {
            Tracker::Sqlite(db) => return now(db),
            Tracker::Postgres(url) => url,
        };
        let t = Tracker::block_on(async {
            pg_connect(url)
                .await
                .query_one(
                    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                    &[],
                )
                .await
                .expect("now")
                .get::<_, String>(0)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        t
    }

    fn delete_sites(&self, sites: &[i64]) {
        let url = match self {
            Tracker::Sqlite(db) => return delete_sites(db, sites),
            Tracker::Postgres(url) => url,
        };
        Tracker::block_on(async {
            let client = pg_connect(url).await;
            for s in sites {
                client
                    .execute("DELETE FROM sites WHERE id = $1", &[&(*s as i32)])
                    .await
                    .expect("delete");
            }
        })
    }
}

fn status(config: &Path, id: &str) -> serde_json::Value {
    let out = lifeboat_ok(config, &["campaign", "status", id, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out).expect("json")[0].clone()
}

pub(crate) fn start(
    config: &Path,
    work: &Workdir,
    sites: &[i64],
    at: &str,
    extra: &[&str],
) -> String {
    let incident = lifeboat_ok(
        config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--component",
            "tracker=partial_outage",
            "--message",
            "We are restoring the deleted sites.",
        ],
    )
    .trim()
    .to_string();
    let file = work.path("tenants.txt");
    let list: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    std::fs::write(&file, list.join("\n")).expect("tenants");
    let mut args = vec![
        "campaign",
        "start",
        "--incident",
        &incident,
        "--tenants-from",
        file.to_str().expect("path"),
        "--at",
        at,
    ];
    args.extend_from_slice(extra);
    lifeboat_ok(config, &args).trim().to_string()
}

#[test]
fn two_workers_restore_a_campaign_in_priority_order() {
    two_workers_restore_in_priority_order(false, Mode::Stopped);
}

#[test]
fn two_workers_restore_a_campaign_in_priority_order_while_capture_runs() {
    two_workers_restore_in_priority_order(false, Mode::Running);
}

#[test]
fn two_workers_restore_a_postgresql_campaign_in_priority_order() {
    two_workers_restore_in_priority_order(true, Mode::Stopped);
}

#[test]
fn two_workers_restore_a_postgresql_campaign_in_priority_order_while_capture_runs() {
    two_workers_restore_in_priority_order(true, Mode::Running);
}

/// A tracker on SQLite or PostgreSQL, with `lifeboat capture` leading it in the background
/// or stopped: the campaign restores the same rows either way.
fn two_workers_restore_in_priority_order(postgres: bool, mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = if postgres {
        let url = Tracker::block_on(seed_postgres());
        (configure(&work, &url), Tracker::Postgres(url))
    } else {
        (setup(&work), Tracker::Sqlite(work.path("tracker.db")))
    };
    let background = Background::start(mode, &config, &work, "tracker");
    let deleted: Vec<i64> = (1..=SITES).filter(|s| s % 2 == 0 || *s == 3).collect();
    let before: Vec<Vec<String>> = deleted.iter().map(|s| tracker.site_rows(*s)).collect();
    let untouched_before = tracker.site_rows(5);
    let t = tracker.now();
    tracker.delete_sites(&deleted);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    let id = start(
        &config,
        &work,
        &deleted,
        &t,
        &["--batch-size", "2", "--priority", "edition asc, users desc"],
    );
    // "enterprise" sorts before "standard"; in each edition, most users (issues) first.
    let links: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["campaign", "links", &id, "--json"]))
            .expect("links");
    let order: Vec<&str> = links
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["tenant"].as_str().expect("tenant"))
        .collect();
    assert_eq!(order, ["12", "6", "3", "10", "8", "4", "2"]);
    let s = status(&config, &id);
    assert_eq!(s["tenants"], 7);
    assert_eq!(s["users"], 45);
    assert_eq!(s["stages"]["queued"], 7);

    let spawn = |name: &str| {
        lifeboat_command(
            &config,
            &["worker", "--campaign", &id, "--until-done", "--name", name],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker")
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    for output in [&a, &b] {
        assert!(output.status.success(), "{}", stderr(output));
    }
    let restored = |o: &std::process::Output| -> u64 {
        let out = stdout(o);
        out.split(": ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert_eq!(restored(&a) + restored(&b), 7);

    let s = status(&config, &id);
    assert_eq!(s["stages"]["awaiting_acceptance"], 7, "{s}");
    assert_eq!(s["tenants_restored"], 7);
    assert_eq!(s["users_restored"], 45);
    for (site, rows) in deleted.iter().zip(&before) {
        assert_eq!(&tracker.site_rows(*site), rows, "site {site}");
    }
    assert_eq!(tracker.site_rows(5), untouched_before);
    let human = lifeboat_ok(&config, &["campaign", "status", &id]);
    assert!(human.contains("7 of 7 tenants restored"), "{human}");
    let audit = lifeboat_ok(&config, &["audit", "--json"]);
    assert!(audit.contains("\"campaign\""), "{audit}");
    background.finish();
    if let Tracker::Postgres(url) = &tracker {
        Tracker::block_on(drop_slots(url));
    }
}

#[test]
fn a_worker_killed_mid_tenant_leaves_it_to_another() {
    a_worker_killed_mid_tenant_leaves_it_to_another_in(Mode::Stopped);
}

#[test]
fn a_worker_killed_mid_tenant_leaves_it_to_another_while_capture_runs() {
    a_worker_killed_mid_tenant_leaves_it_to_another_in(Mode::Running);
}

fn a_worker_killed_mid_tenant_leaves_it_to_another_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let deleted = [2, 4, 7, 9];
    let before: Vec<Vec<String>> = deleted.iter().map(|s| site_rows(&db, *s)).collect();
    let t = now(&db);
    delete_sites(&db, &deleted);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &deleted, &t, &["--batch-size", "4"]);

    // The first worker dies before committing its second tenant: one tenant written,
    // one transaction lost with the process, the batch still claimed.
    let output = lifeboat_command(&config, &["worker", "--campaign", &id, "--name", "doomed"])
        .env("LIFEBOAT_FAILPOINT", "restore.before-commit@2")
        .output()
        .expect("worker");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("failpoint"), "{}", stderr(&output));
    let s = status(&config, &id);
    assert_eq!(s["stages"]["restoring"], 4, "{s}");
    let written = deleted
        .iter()
        .filter(|site| !site_rows(&db, **site).is_empty())
        .count();
    assert_eq!(written, 1, "one tenant committed before the kill");

    // The second worker takes the batch over once the lease ran out, and finishes it.
    let out = lifeboat_ok(
        &config,
        &[
            "worker",
            "--campaign",
            &id,
            "--until-done",
            "--name",
            "rescuer",
        ],
    );
    assert!(out.contains("4 tenants restored"), "{out}");
    for (site, rows) in deleted.iter().zip(&before) {
        assert_eq!(&site_rows(&db, *site), rows, "site {site}");
    }
    let tenants: serde_json::Value = {
        let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("c");
        let attempts: Vec<i64> = control
            .prepare("SELECT attempts FROM campaign_tenants ORDER BY rank")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        serde_json::json!(attempts)
    };
    assert_eq!(tenants, serde_json::json!([2, 2, 2, 2]));
    assert_eq!(status(&config, &id)["stages"]["awaiting_acceptance"], 4);
    background.finish();
}

#[test]
fn campaigns_refuse_bad_input() {
    campaigns_refuse_bad_input_in(Mode::Stopped);
}

#[test]
fn campaigns_refuse_bad_input_while_capture_runs() {
    campaigns_refuse_bad_input_in(Mode::Running);
}

fn campaigns_refuse_bad_input_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[2]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let file = work.path("t.txt");
    std::fs::write(&file, "2\n").expect("file");
    let file = file.to_str().expect("path");
    let refused = |args: &[&str], needle: &str| {
        let output = lifeboat(&config, args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(needle), "{}", stderr(&output));
    };
    refused(
        &[
            "campaign",
            "start",
            "--incident",
            "nope",
            "--tenants-from",
            file,
            "--at",
            &t,
        ],
        "unknown incident nope",
    );
    let incident = lifeboat_ok(
        &config,
        &["incident", "create", "--name", "x", "--message", "y"],
    )
    .trim()
    .to_string();
    let unknown = work.path("u.txt");
    std::fs::write(&unknown, "2\n999\n").expect("file");
    refused(
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            unknown.to_str().expect("path"),
            "--at",
            &t,
        ],
        "unknown tenant 999",
    );
    refused(
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file,
            "--at",
            "2001-01-01T00:00:00Z",
        ],
        "before the restorable window",
    );
    refused(
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file,
            "--at",
            &t,
            "--priority",
            "plan desc",
        ],
        "no tenant has an attribute \"plan\"",
    );
    refused(
        &[
            "incident",
            "update",
            &incident,
            "--status",
            "fixed",
            "--message",
            "m",
        ],
        "not one of",
    );
    refused(
        &[
            "incident",
            "update",
            &incident,
            "--status",
            "monitoring",
            "--message",
            "m",
            "--component",
            "mail=operational",
        ],
        "unknown component",
    );
    let campaigns = lifeboat_ok(&config, &["campaign", "status", "--json"]);
    assert_eq!(campaigns.trim(), "[]", "nothing was queued");
    background.finish();
}

/// The page at `url` as headless Chromium renders it (its DOM).
pub(crate) fn browse(url: &str, profile: &Path) -> String {
    let chromium = std::env::var("LIFEBOAT_TEST_CHROMIUM").expect(
        "LIFEBOAT_TEST_CHROMIUM is not set: run the tests with scripts/test, which installs \
         Chromium",
    );
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium: {}", stderr(&output));
    stdout(&output)
}

/// Load `url` until its page contains `needle` (the snapshot follows the control store
/// within a fraction of a second).
pub(crate) fn browse_until(url: &str, profile: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let dom = browse(url, profile);
        if dom.contains(needle) {
            return dom;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never showed {needle:?}; last page:\n{dom}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_status_pages_load_in_a_real_browser_during_a_campaign() {
    the_status_pages_load_in_a_real_browser_during_a_campaign_in(Mode::Stopped);
}

#[test]
fn the_status_pages_load_in_a_real_browser_during_a_campaign_while_capture_runs() {
    the_status_pages_load_in_a_real_browser_during_a_campaign_in(Mode::Running);
}

fn the_status_pages_load_in_a_real_browser_during_a_campaign_in(mode: Mode) {
    use std::io::BufRead;
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[2, 4, 6, 8]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[2, 4, 6, 8], &t, &["--batch-size", "2"]);

    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();

    // One worker restores the first batch, then waits.
    let go = work.path("go");
    let reached = work.path("go.reached");
    let worker = lifeboat_command(&config, &["worker", "--campaign", &id, "--until-done"])
        .env(
            "LIFEBOAT_PAUSE",
            format!("worker.after-batch:{}", go.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reached.exists() {
        assert!(std::time::Instant::now() < deadline, "no batch finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let profile = work.path("chromium-profile");
    let public = browse_until(
        &format!("{base}/"),
        &profile,
        "2 of 4 customers restored (50%)",
    );
    assert!(public.contains("Sites deleted"), "{public}");
    assert!(public.contains("Issue tracker"), "{public}");
    assert!(public.contains("Partial outage"), "{public}");
    assert!(public.contains("Estimated completion"), "{public}");
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["campaign", "links", &id, "--base-url", &base, "--json"],
    ))
    .expect("links");
    let links: Vec<(String, String)> = links
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            (
                l["tenant"].as_str().expect("tenant").to_string(),
                l["link"].as_str().expect("link").to_string(),
            )
        })
        .collect();
    assert_eq!(links.len(), 4);
    for (_, link) in &links {
        let token = link.rsplit('/').next().expect("token");
        assert!(
            !public.contains(token),
            "the public page shows a private link"
        );
    }
    let restored = browse(&links[0].1, &profile);
    assert!(
        restored.contains("Restored: awaiting your acceptance"),
        "{restored}"
    );
    assert!(restored.contains("Accept the restored data"), "{restored}");
    let queued = browse(&links[2].1, &profile);
    assert!(queued.contains("Queued for recovery"), "{queued}");
    assert!(
        queued.contains("Place in the recovery queue: 1"),
        "{queued}"
    );
    assert!(queued.contains("Estimated time of restoration"), "{queued}");
    for (_, other) in links.iter().filter(|(t, _)| *t != links[2].0) {
        let token = other.rsplit('/').next().expect("token");
        assert!(
            !queued.contains(token),
            "one tenant's page shows another's link"
        );
    }

    std::fs::write(&go, "").expect("go");
    let worker = worker.wait_with_output().expect("worker");
    assert!(worker.status.success(), "{}", stderr(&worker));
    browse_until(
        &format!("{base}/"),
        &profile,
        "4 of 4 customers restored (100%)",
    );
    let done = browse(&links[2].1, &profile);
    assert!(
        done.contains("Restored: awaiting your acceptance"),
        "{done}"
    );

    // SIGTERM: a graceful stop.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let status = server.wait().expect("server");
    assert!(status.success(), "serve exited with {status}");
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
    background.finish();
}

#[test]
fn acceptance_becomes_automatic_after_the_configured_time() {
    acceptance_becomes_automatic_after_the_configured_time_in(Mode::Stopped);
}

#[test]
fn acceptance_becomes_automatic_after_the_configured_time_while_capture_runs() {
    acceptance_becomes_automatic_after_the_configured_time_in(Mode::Running);
}

fn acceptance_becomes_automatic_after_the_configured_time_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "lease_seconds = 1",
            "lease_seconds = 1\nauto_accept_minutes = 0",
        ),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let before = site_rows(&db, 5);
    let t = now(&db);
    delete_sites(&db, &[5]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[5], &t, &[]);
    lifeboat_ok(&config, &["worker", "--until-done"]);
    let s = status(&config, &id);
    assert_eq!(s["stages"]["restored"], 1, "{s}");
    assert_eq!(s["stages"]["awaiting_acceptance"], 0, "{s}");
    assert_eq!(site_rows(&db, 5), before);
    // Accepted automatically, and audited so: by lifeboat, naming the campaign.
    let entries = audit_entries(&config);
    let accepted = entries
        .iter()
        .find(|(_, action, _, _)| action == "accept")
        .unwrap_or_else(|| panic!("no acceptance in {entries:#?}"));
    assert_eq!(
        (accepted.0.as_str(), accepted.2.as_str()),
        ("lifeboat", "tenant:5")
    );
    assert_eq!(accepted.3["automatic"], true);
    assert_eq!(accepted.3["campaign"], id.as_str());
    let out = lifeboat_ok(&config, &["audit", "verify", "--grace-seconds", "0"]);
    assert!(out.contains("every entry is anchored"), "{out}");
    background.finish();
}

#[test]
fn workers_share_a_postgresql_control_store() {
    workers_share_a_postgresql_control_store_in(Mode::Stopped);
}

#[test]
fn workers_share_a_postgresql_control_store_while_capture_runs() {
    workers_share_a_postgresql_control_store_in(Mode::Running);
}

fn workers_share_a_postgresql_control_store_in(mode: Mode) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let control_url = runtime.block_on(create_database("control"));
    let work = Workdir::new();
    let config = setup(&work);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("[control]\nurl = \"{control_url}\"\n{text}"),
    )
    .expect("config");
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let deleted: Vec<i64> = (1..=SITES).filter(|s| s % 3 != 0).collect();
    let before: Vec<Vec<String>> = deleted.iter().map(|s| site_rows(&db, *s)).collect();
    let t = now(&db);
    delete_sites(&db, &deleted);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &deleted, &t, &["--batch-size", "1"]);

    // Three workers, as on three machines: SKIP LOCKED hands each a different tenant.
    let workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            lifeboat_command(
                &config,
                &["worker", "--campaign", &id, "--until-done", "--name", name],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker")
        })
        .collect();
    for worker in workers {
        let output = worker.wait_with_output().expect("worker");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    for (site, rows) in deleted.iter().zip(&before) {
        assert_eq!(&site_rows(&db, *site), rows, "site {site}");
    }
    let s = status(&config, &id);
    assert_eq!(s["stages"]["awaiting_acceptance"], deleted.len(), "{s}");
    let attempts: Vec<i64> = runtime.block_on(async {
        pg_connect(&control_url)
            .await
            .query("SELECT attempts FROM campaign_tenants", &[])
            .await
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(attempts.len(), deleted.len());
    assert!(
        attempts.iter().all(|a| *a == 1),
        "no tenant was claimed twice: {attempts:?}"
    );
    // The audit log lives there too, chained and anchored.
    let out = lifeboat_ok(&config, &["audit", "verify"]);
    assert!(out.contains("audit log intact"), "{out}");
    background.finish();
}

#[test]
fn a_tenant_that_keeps_failing_is_marked_failed_with_its_reason_and_can_be_retried() {
    a_tenant_that_keeps_failing_is_marked_failed_with_its_reason_and_can_be_retried_in(
        Mode::Stopped,
    );
}

#[test]
fn a_tenant_that_keeps_failing_is_marked_failed_with_its_reason_and_can_be_retried_while_capture_runs(
) {
    a_tenant_that_keeps_failing_is_marked_failed_with_its_reason_and_can_be_retried_in(
        Mode::Running,
    );
}

fn a_tenant_that_keeps_failing_is_marked_failed_with_its_reason_and_can_be_retried_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("lease_seconds = 1", "lease_seconds = 1\nmax_attempts = 2"),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let before = site_rows(&db, 4);
    let t = now(&db);
    delete_sites(&db, &[4]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[4], &t, &[]);
    // The database refuses the restore's writes (a maintenance lock).
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TRIGGER maintenance_lock BEFORE INSERT ON issues
         BEGIN SELECT RAISE(ABORT, 'maintenance lock'); END;",
    )
    .expect("trigger");
    let output = lifeboat(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("2 failed attempts"),
        "{}",
        stdout(&output)
    );
    let s = status(&config, &id);
    assert_eq!(s["stages"]["failed"], 1, "{s}");
    assert_eq!(s["failed"][0]["attempts"], 2, "{s}");
    assert!(
        s["failed"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("maintenance lock"),
        "{s}"
    );
    assert!(site_rows(&db, 4).is_empty(), "nothing half written");

    // Lock lifted, the tenant queued again: restored.
    conn.execute_batch("DROP TRIGGER maintenance_lock")
        .expect("drop");
    let output = lifeboat(&config, &["campaign", "retry", &id, "--tenant", "7"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let out = lifeboat_ok(&config, &["campaign", "retry", &id]);
    assert!(out.contains("1 failed tenants queued again"), "{out}");
    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert_eq!(site_rows(&db, 4), before);
    assert_eq!(status(&config, &id)["stages"]["awaiting_acceptance"], 1);
    background.finish();
}

/// A minimal HTTP/1.1 POST over a real socket: the response's status code and body.
pub(crate) fn http_post(base: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `audit --json`, as (actor, action, subject, details).
pub(crate) fn audit_entries(config: &Path) -> Vec<(String, String, String, serde_json::Value)> {
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(config, &["audit", "--json"])).expect("json");
    audit
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().expect("actor").to_string(),
                e["action"].as_str().expect("action").to_string(),
                e["subject"].as_str().expect("subject").to_string(),
                e["details"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_campaign_change_is_audited_with_its_actor_and_anchored_also_from_serve() {
    every_campaign_change_is_audited_with_its_actor_and_anchored_also_from_serve_in(Mode::Stopped);
}

#[test]
fn every_campaign_change_is_audited_with_its_actor_and_anchored_also_from_serve_while_capture_runs()
{
    every_campaign_change_is_audited_with_its_actor_and_anchored_also_from_serve_in(Mode::Running);
}

fn every_campaign_change_is_audited_with_its_actor_and_anchored_also_from_serve_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("lease_seconds = 1", "lease_seconds = 1\nmax_attempts = 1"),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[4, 5]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[4, 5], &t, &["--by", "oncall"]);
    let incident = lifeboat_ok(&config, &["incident", "list", "--json"]);
    let incident: serde_json::Value = serde_json::from_str(&incident).expect("json");
    let incident = incident[0]["id"].as_str().expect("id").to_string();

    // Site 4's writes are refused once: it fails (one attempt), is retried, restored.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TRIGGER maintenance_lock BEFORE INSERT ON issues WHEN NEW.site_id = 4
         BEGIN SELECT RAISE(ABORT, 'maintenance lock'); END;",
    )
    .expect("trigger");
    let output = lifeboat(
        &config,
        &["worker", "--campaign", &id, "--until-done", "--name", "w1"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    conn.execute_batch("DROP TRIGGER maintenance_lock")
        .expect("drop");
    lifeboat_ok(&config, &["campaign", "retry", &id, "--by", "rita"]);
    lifeboat_ok(
        &config,
        &["worker", "--campaign", &id, "--until-done", "--name", "w2"],
    );

    // The status server: an operator's update and a customer's acceptance, both written
    // by a process that does not write to the vault itself.
    let token = "t".repeat(40);
    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .env("LIFEBOAT_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        server.stdout.take().expect("stdout"),
    ));
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    let (status, body) = http_post(
        &base,
        &format!("/api/operator/incidents/{incident}/updates"),
        Some(&token),
        r#"{"status": "monitoring", "message": "Most sites are back.", "by": "olga"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["campaign", "links", &id, "--base-url", &base, "--json"],
    ))
    .expect("links");
    let link = |site: &str| -> String {
        links
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["tenant"] == site)
            .and_then(|l| l["link"].as_str())
            .expect("link")
            .to_string()
    };
    let five = link("5");
    let five_token = five.rsplit('/').next().expect("token").to_string();
    let (status, body) = http_post(&base, &format!("/t/{five_token}/accept"), None, "");
    assert_eq!(status, 303, "{body}");
    // `serve` anchors what it wrote within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = lifeboat(
            &config,
            &["audit", "verify", "--json", "--grace-seconds", "0"],
        );
        let verified: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        assert_eq!(
            output.status.code(),
            Some(if verified["ok"] == true { 0 } else { 1 })
        );
        if verified["ok"] == true {
            assert_eq!(verified["pending"], serde_json::json!([]), "{verified}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not anchor its entries: {verified}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    terminate(&mut server);
    lifeboat_ok(
        &config,
        &[
            "incident",
            "resolve",
            &incident,
            "--message",
            "All back.",
            "--by",
            "ruth",
        ],
    );

    let entries = audit_entries(&config);
    let has = |actor: &str, action: &str, subject: &str| {
        entries
            .iter()
            .any(|(a, b, c, _)| a == actor && b == action && c == subject)
    };
    let incident_subject = format!("incident:{incident}");
    let campaign_subject = format!("campaign:{id}");
    for (actor, action, subject) in [
        ("oncall", "campaign", campaign_subject.as_str()),
        ("w1", "tenant-failed", "tenant:4"),
        ("w1", "tenant-awaiting-acceptance", "tenant:5"),
        ("rita", "campaign-retry", campaign_subject.as_str()),
        ("w2", "tenant-awaiting-acceptance", "tenant:4"),
        ("olga", "incident-update", incident_subject.as_str()),
        ("customer", "accept", "tenant:5"),
        ("ruth", "incident-resolve", incident_subject.as_str()),
    ] {
        assert!(
            has(actor, action, subject),
            "{actor} {action} {subject} missing from {entries:#?}"
        );
    }
    assert!(entries
        .iter()
        .any(|(_, b, c, _)| b == "incident-create" && *c == incident_subject));
    let accepted = entries
        .iter()
        .find(|(_, b, _, _)| b == "accept")
        .expect("accept");
    assert_eq!(accepted.3["campaign"], id.as_str());
    let failed = entries
        .iter()
        .find(|(_, b, _, _)| b == "tenant-failed")
        .expect("failed");
    assert!(
        failed.3["reason"]
            .as_str()
            .expect("reason")
            .contains("maintenance lock"),
        "{failed:?}"
    );
    let audit = lifeboat_ok(&config, &["audit", "--json"]);
    for l in links.as_array().expect("links") {
        let token = l["link"].as_str().expect("link").rsplit('/').next();
        assert!(!audit.contains(token.expect("token")), "a token in the log");
    }
    // Listed for people: subjects other than a plan's hash shown whole.
    let human = lifeboat_ok(&config, &["audit"]);
    assert!(
        human
            .lines()
            .any(|l| l.contains("incident-resolve") && l.contains(&incident_subject)),
        "{human}"
    );
    let out = lifeboat_ok(&config, &["audit", "verify", "--grace-seconds", "0"]);
    assert!(out.contains("every entry is anchored"), "{out}");
    background.finish();
}

/// Tenants of campaign `id` in `stage`, as `serve`'s `/metrics` counts them (0: no series).
fn stage_count(metrics: &str, id: &str, stage: &str) -> f64 {
    metric(
        metrics,
        &format!("lifeboat_campaign_tenants{{campaign=\"{id}\",stage=\"{stage}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Scrape `base`'s `/metrics` until `done` holds.
fn metrics_until(base: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, text) = http_get(base, "/metrics");
        assert_eq!(status, 200, "{text}");
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {what}; last scrape:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn serve_metrics_follow_the_campaign_tenants_between_stages() {
    serve_metrics_follow_the_campaign_tenants_between_stages_in(Mode::Stopped);
}

#[test]
fn serve_metrics_follow_the_campaign_tenants_between_stages_while_capture_runs() {
    serve_metrics_follow_the_campaign_tenants_between_stages_in(Mode::Running);
}

fn serve_metrics_follow_the_campaign_tenants_between_stages_in(mode: Mode) {
    use std::io::BufRead;
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[2, 4, 6, 8]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[2, 4, 6, 8], &t, &["--batch-size", "2"]);

    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    assert_eq!(http_get(&base, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&base, "/readyz"), (200, "ready\n".to_string()));
    let done =
        |m: &str| stage_count(m, &id, "awaiting_acceptance") + stage_count(m, &id, "restored");
    let queued = metrics_until(&base, "four tenants queued", |m| {
        stage_count(m, &id, "queued") == 4.0
    });
    assert_eq!(done(&queued), 0.0, "{queued}");
    assert!(queued.contains("# TYPE lifeboat_campaign_tenants gauge"));

    // One worker restores the first batch of two, then waits; its own /metrics counts the
    // rows it restored.
    let go = work.path("go");
    let reached = work.path("go.reached");
    let mut worker = lifeboat_command(
        &config,
        &[
            "worker",
            "--campaign",
            &id,
            "--until-done",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .env(
        "LIFEBOAT_PAUSE",
        format!("worker.after-batch:{}", go.display()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("worker");
    let worker_err = std::io::BufReader::new(worker.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in worker_err.lines().map_while(|l| l.ok()) {
            if let (Some(rest), Some(tx)) = (line.strip_prefix("metrics on "), tx.take()) {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
        }
    });
    let worker_base = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("worker printed its metrics address");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reached.exists() {
        assert!(std::time::Instant::now() < deadline, "no batch finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let half = metrics_until(&base, "two tenants restored", |m| {
        stage_count(m, &id, "queued") == 2.0 && done(m) == 2.0
    });
    assert_eq!(stage_count(&half, &id, "failed"), 0.0, "{half}");
    // Site s has 1 + 2s rows: whichever two of sites 2, 4, 6, 8 came first, at least 14.
    let (status, worker_metrics) = http_get(&worker_base, "/metrics");
    assert_eq!(status, 200);
    let rows = metric(&worker_metrics, "lifeboat_restore_rows_total").expect("rows");
    assert!(rows >= 14.0, "restored rows {rows}:\n{worker_metrics}");

    std::fs::write(&go, "").expect("go");
    let worker = worker.wait_with_output().expect("worker");
    assert!(worker.status.success(), "{}", stdout(&worker));
    let end = metrics_until(&base, "all four restored", |m| done(m) == 4.0);
    assert_eq!(stage_count(&end, &id, "queued"), 0.0, "{end}");

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    assert!(server.wait().expect("server").success());
    background.finish();
}

#[test]
fn serve_refuses_limits_out_of_range() {
    let work = Workdir::new();
    let config = setup(&work);
    let text = std::fs::read_to_string(&config).expect("config");
    for (setting, needle) in [
        (
            "header_timeout_seconds = 0",
            "[server] header_timeout_seconds = 0: use 1 to 300",
        ),
        (
            "request_timeout_seconds = 86400",
            "[server] request_timeout_seconds = 86400: use 1 to 3600",
        ),
        (
            "max_connections = 0",
            "[server] max_connections = 0: use 1 to 65536",
        ),
        (
            "max_body_bytes = 10",
            "[server] max_body_bytes = 10: use 1024 to 16777216",
        ),
        (
            "control_timeout_ms = 0",
            "[server] control_timeout_ms = 0: use 10 to 60000",
        ),
        ("max_connections = \"many\"", "invalid type"),
    ] {
        let bad = work.write_config(&text.replace(
            "[server.components]",
            &format!("[server]\n{setting}\n[server.components]"),
        ));
        let output = lifeboat(&bad, &["serve", "--listen", "127.0.0.1:0"]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{setting}: {err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(stdout(&output).is_empty(), "{setting}: it listened");
    }
}

/// A response read off a raw connection: status, head, body, and how long it took.
fn timed_get(base: &str, path: &str, token: Option<&str>) -> (u16, String, String, Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: status\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, head.to_string(), body.to_string(), took)
}

#[test]
fn a_locked_postgresql_control_store_leaves_the_public_page_answering() {
    use std::io::BufRead;
    const TOKEN: &str = "0123456789abcdef0123456789abcdef-operator";
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let control_url = runtime.block_on(create_database("control"));
    let work = Workdir::new();
    let config = setup(&work);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("[control]\nurl = \"{control_url}\"\n{text}").replace(
            "[server.components]",
            &format!(
                "[server]\ntoken = \"{TOKEN}\"\ncontrol_timeout_ms = 400\n[server.components]"
            ),
        ),
    )
    .expect("config");
    let db = work.path("tracker.db");
    let t = now(&db);
    delete_sites(&db, &[3]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let id = start(&config, &work, &[3], &t, &[]);
    let links: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["campaign", "links", &id, "--base-url", "http://x", "--json"],
    ))
    .expect("links");
    let link = links[0]["link"].as_str().expect("link");
    let private = format!("/t/{}", link.rsplit('/').next().expect("token"));

    let mut server = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    assert_eq!(timed_get(&base, &private, None).0, 200);
    assert_eq!(
        timed_get(&base, "/api/operator/incidents", Some(TOKEN)).0,
        200
    );

    // Another session locks the tables the server reads, for 30 s.
    let lock = runtime.block_on(async {
        let client = pg_connect(&control_url).await;
        client
            .batch_execute(
                "BEGIN; LOCK TABLE status_version, incidents, campaign_tenants \
                 IN ACCESS EXCLUSIVE MODE",
            )
            .await
            .expect("lock");
        client
    });
    let locked = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let mut rounds = 0;
    // A request that waited for the lock would take the rest of its 30 s: anything well
    // under that answered without it (how fast is bench-status's business, not a test's).
    let unblocked = Duration::from_secs(5);
    while locked.elapsed() < Duration::from_secs(30) {
        for path in ["/", "/api/v2/summary.json"] {
            let (status, head, body, took) = timed_get(&base, path, None);
            assert_eq!(status, 200, "{path}");
            assert!(took < unblocked, "{path}: {took:?}");
            assert!(
                head.to_ascii_lowercase().contains("lifeboat-snapshot-age:"),
                "{head}"
            );
            if path == "/" {
                assert!(body.contains("Sites deleted"), "{body}");
                assert!(body.contains("could not be updated"), "{body}");
            }
        }
        for (path, token) in [
            (private.as_str(), None),
            ("/api/operator/incidents", Some(TOKEN)),
        ] {
            let (status, _, body, took) = timed_get(&base, path, token);
            assert_eq!(status, 503, "{path}: {body}");
            assert!(took < unblocked, "{path}: {took:?}");
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(rounds >= 10, "{rounds}");
    runtime.block_on(async {
        lock.batch_execute("COMMIT").await.expect("unlock");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while timed_get(&base, &private, None).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the private page never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, body, _) = timed_get(&base, "/", None);
    assert_eq!(status, 200);
    assert!(!body.contains("could not be updated"), "{body}");

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let status = server.wait().expect("server");
    assert!(status.success(), "serve exited with {status}");
}

/// `serve` on a free port, and its base URL.
pub(crate) fn spawn_serve(config: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut server = lifeboat_command(config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    (server, base)
}

fn get_json(base: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(base, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `get_json` once `done` holds of it (the server rebuilds its snapshot when the control
/// store changes).
pub(crate) fn json_until(
    base: &str,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = get_json(base, path);
        if done(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: {value}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(value: &serde_json::Value) -> Vec<String> {
    value["scheduled_maintenances"]
        .as_array()
        .expect("scheduled_maintenances")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

fn is_rfc3339(value: &serde_json::Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| lifeboat_core::time::parse(t).is_ok())
}

/// A maintenance is scheduled, started and completed from the command line, audited; the
/// Statuspage endpoints list it in Statuspage's shape field by field, as upcoming, then
/// active (its component under maintenance, in summary.json and on the page), then in the
/// history only; bad input is refused with one line and changes nothing.
#[test]
fn scheduled_maintenance_from_the_command_line_to_the_statuspage_endpoints() {
    let work = Workdir::new();
    let config = setup(&work);
    let (mut server, base) = spawn_serve(&config);
    for path in [
        "/api/v2/scheduled-maintenances.json",
        "/api/v2/scheduled-maintenances/upcoming.json",
        "/api/v2/scheduled-maintenances/active.json",
    ] {
        assert_eq!(ids(&get_json(&base, path)), Vec::<String>::new(), "{path}");
    }

    // Bad input: one line each, nothing scheduled, nothing audited.
    let audited = audit_entries(&config).len();
    for (args, needle) in [
        (
            vec![
                "--starts",
                "2030-01-02T03:00:00Z",
                "--ends",
                "2030-01-02T02:00:00Z",
            ],
            "--ends must be later than --starts",
        ),
        (
            vec![
                "--starts",
                "2030-01-02T03:00:00Z",
                "--ends",
                "2030-01-02T03:00:00Z",
            ],
            "--ends must be later than --starts",
        ),
        (
            vec![
                "--starts",
                "2030-01-02T03:00:00Z",
                "--ends",
                "2030-01-02T04:00:00Z",
                "--component",
                "billing",
            ],
            "unknown component \"billing\"",
        ),
        (
            vec!["--starts", "tomorrow", "--ends", "2030-01-02T04:00:00Z"],
            "--starts: time \"tomorrow\" is not RFC 3339",
        ),
    ] {
        let mut full = vec!["maintenance", "schedule", "--name", "Upgrade"];
        full.extend(args);
        let output = lifeboat(&config, &full);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{full:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(err.contains(needle), "{full:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let output = lifeboat(&config, &["maintenance", "start", "nosuchid"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown maintenance nosuchid"),
        "{}",
        stderr(&output)
    );
    assert_eq!(lifeboat_ok(&config, &["maintenance", "list"]), "");
    assert_eq!(
        audit_entries(&config).len(),
        audited,
        "refusals are not audited"
    );

    let id = lifeboat_ok(
        &config,
        &[
            "maintenance",
            "schedule",
            "--name",
            "Database upgrade",
            "--starts",
            "2030-01-02T03:00:00Z",
            "--ends",
            "2030-01-02T05:30:00+01:00",
            "--component",
            "Issue tracker",
            "--message",
            "Tracker read-only for an hour.",
            "--by",
            "alice",
        ],
    )
    .trim()
    .to_string();
    let listed: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["maintenance", "list", "--json"]))
            .expect("json");
    assert_eq!(listed.as_array().expect("list").len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "scheduled");
    assert_eq!(listed[0]["scheduled_for"], "2030-01-02T03:00:00.000000Z");
    assert_eq!(listed[0]["scheduled_until"], "2030-01-02T04:30:00.000000Z");
    let text = lifeboat_ok(&config, &["maintenance", "list"]);
    assert!(text.starts_with(&format!("{id}  scheduled")), "{text}");
    assert!(text.trim_end().ends_with("Database upgrade"), "{text}");

    let upcoming = json_until(&base, "/api/v2/scheduled-maintenances/upcoming.json", |v| {
        ids(v) == [id.clone()]
    });
    let page_id = upcoming["page"]["id"]
        .as_str()
        .expect("page id")
        .to_string();
    let m = &upcoming["scheduled_maintenances"][0];
    let keys: std::collections::BTreeSet<&str> = m
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "status",
            "created_at",
            "updated_at",
            "monitoring_at",
            "resolved_at",
            "impact",
            "shortlink",
            "started_at",
            "page_id",
            "incident_updates",
            "components",
            "scheduled_for",
            "scheduled_until",
        ]
        .into_iter()
        .collect(),
        "{m}"
    );
    assert_eq!(m["name"], "Database upgrade");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["impact"], "maintenance");
    assert_eq!(m["page_id"], page_id.as_str());
    assert!(
        is_rfc3339(&m["created_at"]) && is_rfc3339(&m["updated_at"]),
        "{m}"
    );
    assert_eq!(m["started_at"], serde_json::Value::Null);
    assert_eq!(m["monitoring_at"], serde_json::Value::Null);
    assert_eq!(m["resolved_at"], serde_json::Value::Null);
    assert_eq!(m["scheduled_for"], "2030-01-02T03:00:00.000000Z");
    assert_eq!(m["scheduled_until"], "2030-01-02T04:30:00.000000Z");
    assert!(
        m["shortlink"]
            .as_str()
            .expect("shortlink")
            .ends_with(&format!("#maintenance-{id}")),
        "{m}"
    );
    let updates = m["incident_updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 1, "{m}");
    assert_eq!(updates[0]["status"], "scheduled");
    assert_eq!(updates[0]["body"], "Tracker read-only for an hour.");
    assert_eq!(updates[0]["incident_id"], id.as_str());
    assert!(is_rfc3339(&updates[0]["created_at"]));
    let components = m["components"].as_array().expect("components");
    assert_eq!(components.len(), 1, "{m}");
    assert_eq!(components[0]["name"], "Issue tracker");
    assert_eq!(
        components[0]["status"], "operational",
        "not under maintenance yet"
    );
    assert_eq!(components[0]["page_id"], page_id.as_str());
    assert_eq!(
        ids(&get_json(
            &base,
            "/api/v2/scheduled-maintenances/active.json"
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&get_json(&base, "/api/v2/scheduled-maintenances.json")),
        std::slice::from_ref(&id)
    );
    let summary = get_json(&base, "/api/v2/summary.json");
    assert_eq!(ids(&summary), std::slice::from_ref(&id), "{summary}");
    assert_eq!(summary["components"][0]["status"], "operational");
    let (_, page) = http_get(&base, "/");
    assert!(
        page.contains("Scheduled maintenance") && page.contains("Database upgrade"),
        "{page}"
    );

    // Started: active, its component under maintenance.
    let out = lifeboat_ok(&config, &["maintenance", "start", &id, "--by", "bob"]);
    assert_eq!(out.trim(), format!("{id} in_progress"));
    let active = json_until(&base, "/api/v2/scheduled-maintenances/active.json", |v| {
        ids(v) == [id.clone()]
    });
    let m = &active["scheduled_maintenances"][0];
    assert_eq!(m["status"], "in_progress");
    assert!(is_rfc3339(&m["started_at"]), "{m}");
    assert_eq!(m["components"][0]["status"], "under_maintenance", "{m}");
    let updates = m["incident_updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["status"], "in_progress", "newest first");
    assert_eq!(
        ids(&get_json(
            &base,
            "/api/v2/scheduled-maintenances/upcoming.json"
        )),
        Vec::<String>::new()
    );
    let summary = get_json(&base, "/api/v2/summary.json");
    assert_eq!(ids(&summary), std::slice::from_ref(&id));
    assert_eq!(
        summary["components"][0]["status"], "under_maintenance",
        "{summary}"
    );
    assert_eq!(summary["status"]["indicator"], "maintenance", "{summary}");
    let components = get_json(&base, "/api/v2/components.json");
    assert_eq!(components["components"][0]["status"], "under_maintenance");
    let (_, page) = http_get(&base, "/");
    assert!(page.contains("Maintenance in progress"), "{page}");
    assert!(
        page.contains("Under maintenance") || page.contains("under maintenance"),
        "{page}"
    );
    // Starting twice is refused.
    let output = lifeboat(&config, &["maintenance", "start", &id]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is in_progress: it cannot become in_progress"),
        "{}",
        stderr(&output)
    );

    // Completed: history only; the component is operational again.
    let out = lifeboat_ok(
        &config,
        &[
            "maintenance",
            "complete",
            &id,
            "--message",
            "All done.",
            "--by",
            "bob",
        ],
    );
    assert_eq!(out.trim(), format!("{id} completed"));
    let all = json_until(&base, "/api/v2/scheduled-maintenances.json", |v| {
        v["scheduled_maintenances"][0]["status"] == "completed"
    });
    let m = &all["scheduled_maintenances"][0];
    assert!(is_rfc3339(&m["resolved_at"]), "{m}");
    assert_eq!(m["incident_updates"][0]["body"], "All done.");
    assert_eq!(m["components"][0]["status"], "operational");
    assert_eq!(
        ids(&get_json(
            &base,
            "/api/v2/scheduled-maintenances/active.json"
        )),
        Vec::<String>::new()
    );
    let summary = get_json(&base, "/api/v2/summary.json");
    assert_eq!(ids(&summary), Vec::<String>::new());
    assert_eq!(summary["status"]["indicator"], "none");
    let before = lifeboat_ok(&config, &["maintenance", "list", "--json"]);
    let audited = audit_entries(&config);
    let output = lifeboat(&config, &["maintenance", "complete", &id]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is completed: it cannot become completed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        lifeboat_ok(&config, &["maintenance", "list", "--json"]),
        before
    );
    assert_eq!(audit_entries(&config), audited);

    // Each change is audited with its actor.
    let subject = format!("maintenance:{id}");
    let changes: Vec<(String, String)> = audited
        .iter()
        .filter(|(_, _, s, _)| s == &subject)
        .map(|(actor, action, _, _)| (actor.clone(), action.clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("alice".to_string(), "maintenance-schedule".to_string()),
            ("bob".to_string(), "maintenance-start".to_string()),
            ("bob".to_string(), "maintenance-complete".to_string()),
        ]
    );
    let out = lifeboat_ok(&config, &["audit", "verify", "--grace-seconds", "0"]);
    assert!(out.contains("every entry is anchored"), "{out}");
    terminate(&mut server);
}

/// Maintenances start and complete by themselves at their announced times, moved by the
/// notifier (here at times set by the test clock), unless scheduled with
/// `--no-auto-start` / `--no-auto-complete`; one completed by hand before its end is not
/// touched again; the notifier inside `serve` moves one whose times come while it runs.
/// The Statuspage endpoints show each move.
#[test]
fn scheduled_maintenance_starts_and_completes_by_itself_at_its_times() {
    let work = Workdir::new();
    let config = setup(&work);
    let (mut server, base) = spawn_serve(&config);
    let schedule = |name: &str, starts: &str, ends: &str, extra: &[&str]| -> String {
        let mut args = vec![
            "maintenance",
            "schedule",
            "--name",
            name,
            "--starts",
            starts,
            "--ends",
            ends,
            "--component",
            "tracker",
        ];
        args.extend(extra);
        lifeboat_ok(&config, &args).trim().to_string()
    };
    let (starts, ends) = ("2030-01-02T03:00:00Z", "2030-01-02T05:00:00Z");
    let auto = schedule("Database upgrade", starts, ends, &[]);
    let manual = schedule(
        "Manual",
        starts,
        ends,
        &["--no-auto-start", "--no-auto-complete"],
    );
    let early = schedule("Done early", starts, ends, &[]);
    let notifier_at = |clock: &str| {
        let output = lifeboat_command(&config, &["notifier", "--until-idle"])
            .env("LIFEBOAT_TEST_CLOCK", clock)
            .output()
            .expect("notifier");
        assert!(output.status.success(), "{}", stderr(&output));
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Before the window: nothing moves.
    notifier_at("2030-01-02T02:59:59Z");
    let upcoming = json_until(&base, "/api/v2/scheduled-maintenances/upcoming.json", |v| {
        ids(v).len() == 3
    });
    assert_eq!(
        sorted(ids(&upcoming)),
        sorted(vec![auto.clone(), manual.clone(), early.clone()])
    );

    // At its start: the automatic ones are in progress, their component under maintenance.
    notifier_at(starts);
    let active = json_until(&base, "/api/v2/scheduled-maintenances/active.json", |v| {
        ids(v).len() == 2
    });
    assert_eq!(
        sorted(ids(&active)),
        sorted(vec![auto.clone(), early.clone()])
    );
    for m in active["scheduled_maintenances"].as_array().expect("list") {
        assert_eq!(m["status"], "in_progress", "{m}");
        assert!(is_rfc3339(&m["started_at"]), "{m}");
        assert_eq!(m["components"][0]["status"], "under_maintenance", "{m}");
        assert_eq!(
            m["incident_updates"][0]["body"],
            "The scheduled maintenance is in progress."
        );
    }
    assert_eq!(
        ids(&get_json(
            &base,
            "/api/v2/scheduled-maintenances/upcoming.json"
        )),
        std::slice::from_ref(&manual)
    );
    let summary = get_json(&base, "/api/v2/summary.json");
    assert_eq!(summary["components"][0]["status"], "under_maintenance");
    assert_eq!(ids(&summary).len(), 3, "active then upcoming: {summary}");
    assert_eq!(ids(&summary)[2], manual);

    // One is completed by hand before its end.
    lifeboat_ok(&config, &["maintenance", "complete", &early, "--by", "bob"]);
    let listed = json_until(&base, "/api/v2/scheduled-maintenances.json", |v| {
        v["scheduled_maintenances"].as_array().is_some_and(|l| {
            l.iter()
                .any(|m| m["id"] == early.as_str() && m["status"] == "completed")
        })
    });
    let early_before = listed["scheduled_maintenances"]
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["id"] == early.as_str())
        .cloned();

    // At its end: the automatic one is completed; the manual one is still announced.
    notifier_at(ends);
    let active = json_until(&base, "/api/v2/scheduled-maintenances/active.json", |v| {
        ids(v).is_empty()
    });
    assert_eq!(ids(&active), Vec::<String>::new());
    let all = get_json(&base, "/api/v2/scheduled-maintenances.json");
    let of = |id: &str| {
        all["scheduled_maintenances"]
            .as_array()
            .expect("list")
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .expect("listed")
    };
    let m = of(&auto);
    assert_eq!(m["status"], "completed", "{m}");
    assert!(is_rfc3339(&m["resolved_at"]), "{m}");
    assert_eq!(m["components"][0]["status"], "operational");
    assert_eq!(
        m["incident_updates"][0]["body"],
        "The scheduled maintenance has been completed."
    );
    // Untouched (its component's status is the component's current one, so not compared).
    let mut early_after = of(&early);
    early_after["components"] = serde_json::Value::Null;
    let mut early_before = early_before.expect("listed");
    early_before["components"] = serde_json::Value::Null;
    assert_eq!(early_after, early_before, "completed by hand: untouched");
    assert_eq!(of(&manual)["status"], "scheduled");
    assert_eq!(
        ids(&get_json(
            &base,
            "/api/v2/scheduled-maintenances/upcoming.json"
        )),
        std::slice::from_ref(&manual)
    );
    let summary = get_json(&base, "/api/v2/summary.json");
    assert_eq!(summary["components"][0]["status"], "operational");
    assert_eq!(ids(&summary), std::slice::from_ref(&manual));

    // Long after: nothing more moves.
    let audited = audit_entries(&config);
    notifier_at("2031-01-01T00:00:00Z");
    assert_eq!(audit_entries(&config), audited);
    let moves: Vec<(String, String, String)> = audited
        .iter()
        .filter(|(_, action, _, _)| action != "maintenance-schedule")
        .filter(|(_, action, _, _)| action.starts_with("maintenance-"))
        .map(|(actor, action, subject, _)| (actor.clone(), action.clone(), subject.clone()))
        .collect();
    let by = |actor: &str, action: &str, id: &str| {
        (
            actor.to_string(),
            action.to_string(),
            format!("maintenance:{id}"),
        )
    };
    assert_eq!(
        sorted_moves(moves),
        sorted_moves(vec![
            by("lifeboat", "maintenance-start", &auto),
            by("lifeboat", "maintenance-start", &early),
            by("bob", "maintenance-complete", &early),
            by("lifeboat", "maintenance-complete", &auto),
        ])
    );

    // `serve`'s own notifier moves one whose times come while it runs (real time).
    let now = lifeboat_core::time::now_us();
    let quick = schedule(
        "Quick restart",
        &lifeboat_core::time::format_us(now + 2_000_000),
        &lifeboat_core::time::format_us(now + 4_000_000),
        &[],
    );
    json_until(&base, "/api/v2/scheduled-maintenances/active.json", |v| {
        ids(v) == [quick.clone()]
    });
    json_until(&base, "/api/v2/scheduled-maintenances.json", |v| {
        v["scheduled_maintenances"].as_array().is_some_and(|l| {
            l.iter()
                .any(|m| m["id"] == quick.as_str() && m["status"] == "completed")
        })
    });
    let out = lifeboat_ok(&config, &["audit", "verify", "--grace-seconds", "0"]);
    assert!(out.contains("every entry is anchored"), "{out}");
    terminate(&mut server);
}

fn sorted_moves(mut moves: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    moves.sort();
    moves
}
