//! Phased recovery campaigns: a wiki (SQLite) and an issue tracker (SQLite or PostgreSQL),
//! restored wiki first. Every tenant's wiki is back and verified before any tracker row
//! of any tenant is written (a trigger on the tracker logs each write with the database's
//! clock); the pages show both phases; bad `--phases` are refused with nothing created; a
//! worker killed mid-phase leaves its tenants to another. Each with capture stopped and
//! beside a continuous `lifeboat capture`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::campaign::{http_post, json_until, spawn_serve};
use crate::common::*;

const SITES: i64 = 6;

/// Where the tracker lives.
enum Tracker {
    Sqlite(PathBuf),
    Postgres(String),
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The wiki: site s has s + 1 pages.
fn seed_wiki(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch(
        "CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, title TEXT);
         CREATE TABLE editors (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             email TEXT NOT NULL);",
    )
    .expect("schema");
    for s in 1..=SITES {
        conn.execute(
            "INSERT INTO editors VALUES (?1, ?1, ?2)",
            rusqlite::params![s, format!("editor@site{s}.example")],
        )
        .expect("editor");
        for p in 0..=s {
            conn.execute(
                "INSERT INTO pages VALUES (?1, ?2, ?3)",
                rusqlite::params![s * 100 + p, s, format!("page {p} of site {s}")],
            )
            .expect("page");
        }
    }
}

/// The tracker's sites and issues (site s has s issues), and `tracker_writes`, which a
/// trigger fills with the database's clock at every insert into `sites` or `issues`.
fn tracker_sql(postgres: bool) -> String {
    let mut sql = String::from(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);\n",
    );
    for s in 1..=SITES {
        sql.push_str(&format!(
            "INSERT INTO sites VALUES ({s}, 'https://site{s}.example.net');\n"
        ));
        for i in 0..s {
            sql.push_str(&format!(
                "INSERT INTO issues VALUES ({}, {s}, 'issue {i} of {s}');\n",
                s * 100 + i
            ));
        }
    }
    if postgres {
        sql.push_str(
            "CREATE TABLE tracker_writes (id BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL,
                 at TEXT NOT NULL);
             CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO tracker_writes (tbl, at) VALUES (TG_TABLE_NAME,
                     to_char(clock_timestamp() AT TIME ZONE 'UTC',
                             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'));
                 RETURN NEW;
             END $$;
             CREATE TRIGGER sites_written AFTER INSERT ON sites
                 FOR EACH ROW EXECUTE FUNCTION log_write();
             CREATE TRIGGER issues_written AFTER INSERT ON issues
                 FOR EACH ROW EXECUTE FUNCTION log_write();",
        );
    } else {
        sql.push_str(
            "CREATE TABLE tracker_writes (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 tbl TEXT NOT NULL, at TEXT NOT NULL);
             CREATE TRIGGER sites_written AFTER INSERT ON sites BEGIN
                 INSERT INTO tracker_writes (tbl, at)
                 VALUES ('sites', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
             END;
             CREATE TRIGGER issues_written AFTER INSERT ON issues BEGIN
                 INSERT INTO tracker_writes (tbl, at)
                 VALUES ('issues', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
             END;",
        );
    }
    sql
}

impl Tracker {
    fn new(work: &Workdir, postgres: bool) -> Tracker {
        let sql = tracker_sql(postgres);
        if postgres {
            let url = block_on(async {
                let url = create_database("phases").await;
                pg_connect(&url)
                    .await
                    .batch_execute(&sql)
                    .await
                    .expect("seed");
                url
            });
            Tracker::Postgres(url)
        } else {
            let db = work.path("tracker.db");
            rusqlite::Connection::open(&db)
                .expect("open")
                .execute_batch(&sql)
                .expect("seed");
            Tracker::Sqlite(db)
        }
    }

    fn url(&self) -> String {
        match self {
            Tracker::Sqlite(db) => format!("sqlite://{}", db.display()),
            Tracker::Postgres(url) => url.clone(),
        }
    }

    /// Run statements that return nothing.
    fn execute(&self, sql: &str) {
        match self {
            Tracker::Sqlite(db) => rusqlite::Connection::open(db)
                .expect("open")
                .execute_batch(&format!("PRAGMA foreign_keys = ON; {sql}"))
                .expect("execute"),
            Tracker::Postgres(url) => block_on(async {
                pg_connect(url)
                    .await
                    .batch_execute(sql)
                    .await
                    .expect("execute")
            }),
        }
    }

    /// Text rows of a query whose single column is text.
    fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            Tracker::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db).expect("open");
                let mut stmt = conn.prepare(sql).expect("prepare");
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .expect("query")
                    .map(|r| r.expect("row"))
                    .collect();
                rows
            }
            Tracker::Postgres(url) => block_on(async {
                pg_connect(url)
                    .await
                    .query(sql, &[])
                    .await
                    .expect("query")
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect()
            }),
        }
    }

    /// A site's tracker rows, sorted.
    fn site_rows(&self, site: i64) -> Vec<String> {
        let mut rows = self.strings(&format!(
            "SELECT 'site|' || id || '|' || url FROM sites WHERE id = {site}
             UNION ALL SELECT 'issue|' || id || '|' || title FROM issues WHERE site_id = {site}"
        ));
        rows.sort();
        rows
    }

    /// The times of the tracker's writes since the log was last emptied, in microseconds.
    fn writes(&self) -> Vec<i64> {
        self.strings("SELECT at FROM tracker_writes ORDER BY id")
            .iter()
            .map(|t| lifeboat_core::time::parse(t).expect("a time"))
            .collect()
    }

    fn finish(&self) {
        if let Tracker::Postgres(url) = self {
            block_on(drop_slots(url));
        }
    }
}

fn wiki_rows(db: &Path, site: i64) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT id || '|' || title FROM pages WHERE site_id = ?1 ORDER BY id")
        .expect("prepare");
    let rows = stmt
        .query_map([site], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    rows
}

/// A wiki and a tracker, captured; `extra` is added to `[campaigns]`.
fn setup(work: &Workdir, postgres: bool, extra: &str) -> (PathBuf, Tracker) {
    let wiki = work.path("wiki.db");
    seed_wiki(&wiki);
    let tracker = Tracker::new(work, postgres);
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.wiki]
url = "sqlite://{wiki}"
tenant_column = "site_id"
[sources.tracker]
url = "{tracker}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
[sources.tracker.tables.tracker_writes]
global = true
[server.components]
wiki = "Wiki"
tracker = "Issue tracker"
[campaigns]
lease_seconds = 1
{extra}
"#,
        vault = work.vault_url(),
        wiki = wiki.display(),
        tracker = tracker.url(),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    (config, tracker)
}

/// Delete `sites` from both products (the clock read before), capture, and empty the
/// tracker's write log. Returns the time before the deletion.
fn delete(work: &Workdir, tracker: &Tracker, config: &Path, sites: &[i64]) -> String {
    let t = crate::campaign::now(&work.path("wiki.db"));
    let list: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
    let list = list.join(", ");
    rusqlite::Connection::open(work.path("wiki.db"))
        .expect("open")
        .execute_batch(&format!(
            "DELETE FROM pages WHERE site_id IN ({list});
             DELETE FROM editors WHERE site_id IN ({list});"
        ))
        .expect("delete");
    tracker.execute(&format!(
        "DELETE FROM sites WHERE id IN ({list}); DELETE FROM tracker_writes;"
    ));
    lifeboat_ok(config, &["capture", "--until-caught-up"]);
    t
}

fn incident(config: &Path) -> String {
    lifeboat_ok(
        config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--component",
            "wiki=major_outage",
            "--component",
            "tracker=major_outage",
            "--message",
            "We are restoring the deleted sites.",
        ],
    )
    .trim()
    .to_string()
}

/// `campaign start … --phases PHASES`: the campaign's id.
fn start(config: &Path, work: &Workdir, sites: &[i64], at: &str, extra: &[&str]) -> String {
    let incident = incident(config);
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

fn status(config: &Path, id: &str) -> serde_json::Value {
    let out = lifeboat_ok(config, &["campaign", "status", id, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out).expect("json")[0].clone()
}

/// (tenants restored, open) of each phase in `campaign status --json`.
fn phases(s: &serde_json::Value) -> Vec<(u64, bool)> {
    s["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| {
            (
                p["tenants_restored"].as_u64().expect("count"),
                p["open"].as_bool().expect("open"),
            )
        })
        .collect()
}

/// The time of each audit entry of `action`, in microseconds.
fn audit_times(config: &Path, action: &str) -> Vec<i64> {
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(config, &["audit", "--json"])).expect("json");
    audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| lifeboat_core::time::parse(e["at"].as_str().expect("at")).expect("time"))
        .collect()
}

fn page_until(base: &str, path: &str, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(base, path);
        if code == 200 && needles.iter().all(|n| body.contains(n)) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} ({code}) lacks {needles:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_phased_campaign_restores_every_wiki_before_any_tracker() {
    every_wiki_before_any_tracker(false, Mode::Stopped);
}

#[test]
fn a_phased_campaign_restores_every_wiki_before_any_tracker_while_capture_runs() {
    every_wiki_before_any_tracker(false, Mode::Running);
}

#[test]
fn a_phased_campaign_restores_every_wiki_before_any_postgresql_tracker() {
    every_wiki_before_any_tracker(true, Mode::Stopped);
}

#[test]
fn a_phased_campaign_restores_every_wiki_before_any_postgresql_tracker_while_capture_runs() {
    every_wiki_before_any_tracker(true, Mode::Running);
}

/// Four sites deleted from both products; a campaign "wiki; tracker" with batches of
/// two. One worker restores a batch of wikis and pauses: the pages show the wiki half
/// restored and the tracker not begun. Then two workers finish: the tracker's first
/// write comes after the last wiki was verified, and every row is back.
fn every_wiki_before_any_tracker(postgres: bool, mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = setup(&work, postgres, "");
    let background = Background::start(mode, &config, &work, "tracker");
    let wiki = work.path("wiki.db");
    let deleted = [1, 3, 4, 6];
    let wiki_before: Vec<Vec<String>> = deleted.iter().map(|s| wiki_rows(&wiki, *s)).collect();
    let tracker_before: Vec<Vec<String>> = deleted.iter().map(|s| tracker.site_rows(*s)).collect();
    let untouched = (wiki_rows(&wiki, 2), tracker.site_rows(2));
    let t = delete(&work, &tracker, &config, &deleted);
    assert!(tracker.site_rows(3).is_empty());

    let id = start(
        &config,
        &work,
        &deleted,
        &t,
        &["--batch-size", "2", "--phases", " wiki ;tracker "],
    );
    let s = status(&config, &id);
    assert_eq!(phases(&s), [(0, true), (0, false)], "{s}");
    assert_eq!(s["phases"][0]["sources"], serde_json::json!(["wiki"]));
    assert_eq!(s["phases"][1]["sources"], serde_json::json!(["tracker"]));
    let (mut server, base) = spawn_serve(&config);

    // One worker restores two wikis, then waits.
    let go = work.path("go");
    let reached = work.path("go.reached");
    let spawn = |name: &str, pause: bool| {
        let mut command = lifeboat_command(
            &config,
            &["worker", "--campaign", &id, "--until-done", "--name", name],
        );
        if pause {
            command.env(
                "LIFEBOAT_PAUSE",
                format!("worker.after-batch:{}", go.display()),
            );
        }
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker")
    };
    let first = spawn("a", true);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !reached.exists() {
        assert!(std::time::Instant::now() < deadline, "no batch finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = status(&config, &id);
    assert_eq!(phases(&s), [(2, true), (0, false)], "{s}");
    assert_eq!(s["stages"]["queued"], 4, "{s}");
    assert!(tracker.writes().is_empty(), "no tracker row written yet");
    let human = lifeboat_ok(&config, &["campaign", "status", &id]);
    assert!(
        human.contains("phase 1 (wiki): 2 of 4 tenants restored"),
        "{human}"
    );
    assert!(
        human.contains("phase 2 (tracker): 0 of 4 tenants restored, waiting for the phase before"),
        "{human}"
    );

    // The public page and its JSON: each phase's share; no customer counted restored.
    let public = page_until(&base, "/", &["Wiki: 50%", "Issue tracker: 0%"]);
    assert!(public.contains("0 of 4 customers restored"), "{public}");
    let de = page_until(&base, "/?lang=de", &["Nach Produkt:", "Wiki: 50%"]);
    assert!(de.contains("Issue tracker: 0%"), "{de}");
    let ja = page_until(&base, "/?lang=ja", &["製品別:", "Wiki: 50%"]);
    assert!(ja.contains("Issue tracker: 0%"), "{ja}");
    let campaigns = json_until(&base, "/api/lifeboat/campaigns.json", |v| {
        v["campaigns"][0]["phases"][0]["tenants_restored"] == 2
    });
    assert_eq!(
        campaigns["campaigns"][0]["phases"],
        serde_json::json!([
            {"name": "Wiki", "tenants": 4, "tenants_restored": 2},
            {"name": "Issue tracker", "tenants": 4, "tenants_restored": 0},
        ])
    );
    // The private pages: a tenant whose wiki is back, and one still queued for it.
    let links: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["campaign", "links", &id, "--json"]))
            .expect("links");
    let path_of = |tenant: &str| -> String {
        let link = links
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["tenant"] == tenant)
            .expect("a link")["link"]
            .as_str()
            .expect("link")
            .to_string();
        format!("/t/{}", link.rsplit('/').next().expect("token"))
    };
    let ranks: Vec<String> = links
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["tenant"].as_str().expect("tenant").to_string())
        .collect();
    let private = page_until(
        &base,
        &path_of(&ranks[0]),
        &["Wiki: restored", "Issue tracker: queued"],
    );
    assert!(private.contains("Queued for recovery"), "{private}");
    page_until(
        &base,
        &path_of(&ranks[3]),
        &["Wiki: queued", "Issue tracker: queued"],
    );
    page_until(
        &base,
        &format!("{}?lang=de", path_of(&ranks[0])),
        &[
            "Wiki: wiederhergestellt",
            "Issue tracker: in der Warteschlange",
        ],
    );
    page_until(
        &base,
        &format!("{}?lang=ja", path_of(&ranks[0])),
        &["Wiki: 復元済み", "Issue tracker: 待機中"],
    );

    // Both workers to the end.
    std::fs::write(&go, "").expect("go");
    let second = spawn("b", false);
    for worker in [first, second] {
        let output = worker.wait_with_output().expect("worker");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    for (i, site) in deleted.iter().enumerate() {
        assert_eq!(
            wiki_rows(&wiki, *site),
            wiki_before[i],
            "wiki of site {site}"
        );
        assert_eq!(
            tracker.site_rows(*site),
            tracker_before[i],
            "tracker of site {site}"
        );
    }
    assert_eq!((wiki_rows(&wiki, 2), tracker.site_rows(2)), untouched);

    // Ordering: every wiki verified (its phase recorded as restored) before the tracker's
    // first write of any tenant.
    let verified = audit_times(&config, "tenant-phase-restored");
    assert_eq!(verified.len(), deleted.len(), "one wiki phase per tenant");
    let writes = tracker.writes();
    let expected: usize = tracker_before.iter().map(Vec::len).sum();
    assert_eq!(writes.len(), expected, "each tracker row written once");
    let last_wiki = *verified.iter().max().expect("verified");
    let first_tracker = *writes.iter().min().expect("writes");
    assert!(
        first_tracker > last_wiki,
        "the first tracker write ({first_tracker}) came before the last wiki was verified \
         ({last_wiki})"
    );

    let s = status(&config, &id);
    assert_eq!(phases(&s), [(4, true), (4, true)], "{s}");
    assert_eq!(s["stages"]["awaiting_acceptance"], 4, "{s}");
    assert_eq!(s["tenants_restored"], 4, "{s}");
    page_until(&base, "/", &["Wiki: 100%", "Issue tracker: 100%"]);
    page_until(
        &base,
        &path_of(&ranks[3]),
        &[
            "Wiki: restored",
            "Issue tracker: restored, awaiting your acceptance",
        ],
    );
    // The rows written, of both phases.
    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("c");
    let rows: i64 = control
        .query_row("SELECT sum(rows_written) FROM campaign_tenants", [], |r| {
            r.get(0)
        })
        .expect("rows");
    // Each site's pages and its one editor, then its tracker rows.
    let wiki_rows_deleted: usize = wiki_before.iter().map(Vec::len).sum::<usize>() + deleted.len();
    assert_eq!(rows as usize, wiki_rows_deleted + expected);
    let _ = server.kill();
    let _ = server.wait();
    background.finish();
    tracker.finish();
}

#[test]
fn bad_phases_are_refused_and_nothing_is_created() {
    bad_phases_are_refused_in(Mode::Stopped);
}

#[test]
fn bad_phases_are_refused_and_nothing_is_created_while_capture_runs() {
    bad_phases_are_refused_in(Mode::Running);
}

fn bad_phases_are_refused_in(mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = setup(&work, false, "");
    let background = Background::start(mode, &config, &work, "tracker");
    let t = delete(&work, &tracker, &config, &[2]);
    let incident = incident(&config);
    let file = work.path("t.txt");
    std::fs::write(&file, "2\n").expect("file");
    let audit_before = lifeboat_ok(&config, &["audit", "--json"]);
    for (phases, needle) in [
        ("wiki", "--phases: no phase has tracker"),
        ("wiki; tracker, wiki", "source \"wiki\" is named twice"),
        ("wiki; tracker; forum", "unknown source \"forum\""),
        ("wiki;; tracker", "phase 2 names an empty source"),
        ("wiki, ; tracker", "phase 1 names an empty source"),
        ("", "phase 1 names an empty source"),
    ] {
        let output = lifeboat(
            &config,
            &[
                "campaign",
                "start",
                "--incident",
                &incident,
                "--tenants-from",
                file.to_str().expect("path"),
                "--at",
                &t,
                "--phases",
                phases,
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{phases:?}: {err}");
        assert!(err.contains(needle), "{phases:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{phases:?}: one line: {err}");
    }
    let out = lifeboat_ok(&config, &["campaign", "status", "--json"]);
    assert_eq!(out.trim(), "[]", "no campaign was created");
    assert_eq!(
        lifeboat_ok(&config, &["audit", "--json"]),
        audit_before,
        "nothing audited"
    );
    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("c");
    for table in ["campaigns", "campaign_tenants", "campaign_phases"] {
        let n: i64 = control
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "{table}");
    }
    // One phase of every source is the same as none.
    let id = lifeboat_ok(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &t,
            "--phases",
            "tracker, wiki",
        ],
    );
    let s = status(&config, id.trim());
    assert_eq!(phases(&s), [(0, true)], "{s}");
    background.finish();
}

#[test]
fn a_worker_killed_mid_phase_leaves_it_to_another() {
    a_worker_killed_mid_phase_leaves_it_to_another_in(Mode::Stopped);
}

#[test]
fn a_worker_killed_mid_phase_leaves_it_to_another_while_capture_runs() {
    a_worker_killed_mid_phase_leaves_it_to_another_in(Mode::Running);
}

/// A worker restores every wiki, then dies before committing its second tracker tenant;
/// another worker takes the tracker batch over once the lease ran out, and finishes it.
fn a_worker_killed_mid_phase_leaves_it_to_another_in(mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = setup(&work, false, "");
    let background = Background::start(mode, &config, &work, "tracker");
    let wiki = work.path("wiki.db");
    let deleted = [2, 4, 5, 6];
    let wiki_before: Vec<Vec<String>> = deleted.iter().map(|s| wiki_rows(&wiki, *s)).collect();
    let tracker_before: Vec<Vec<String>> = deleted.iter().map(|s| tracker.site_rows(*s)).collect();
    let t = delete(&work, &tracker, &config, &deleted);
    let id = start(
        &config,
        &work,
        &deleted,
        &t,
        &["--batch-size", "4", "--phases", "wiki; tracker"],
    );

    // Four wiki commits, then one tracker commit, then the kill.
    let output = lifeboat_command(&config, &["worker", "--campaign", &id, "--name", "doomed"])
        .env("LIFEBOAT_FAILPOINT", "restore.before-commit@6")
        .output()
        .expect("worker");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("failpoint"), "{}", stderr(&output));
    let s = status(&config, &id);
    assert_eq!(phases(&s), [(4, true), (0, true)], "{s}");
    assert_eq!(s["stages"]["restoring"], 4, "{s}");
    let written = deleted
        .iter()
        .filter(|site| !tracker.site_rows(**site).is_empty())
        .count();
    assert_eq!(written, 1, "one tracker tenant committed before the kill");

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
    for (i, site) in deleted.iter().enumerate() {
        assert_eq!(
            wiki_rows(&wiki, *site),
            wiki_before[i],
            "wiki of site {site}"
        );
        assert_eq!(
            tracker.site_rows(*site),
            tracker_before[i],
            "tracker of site {site}"
        );
    }
    // The tracker phase took two attempts per tenant (the killed one and the rescue).
    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("c");
    let attempts: Vec<i64> = control
        .prepare("SELECT attempts FROM campaign_tenants ORDER BY rank")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(attempts, [2, 2, 2, 2]);
    let s = status(&config, &id);
    assert_eq!(phases(&s), [(4, true), (4, true)], "{s}");
    assert_eq!(s["stages"]["awaiting_acceptance"], 4, "{s}");
    // Every tracker row once: the rescue rewrote the killed worker's tenant.
    let expected: usize = tracker_before.iter().map(Vec::len).sum();
    assert!(tracker.writes().len() >= expected);
    background.finish();
    tracker.finish();
}

#[test]
fn acceptance_per_phase_and_notices_follow_the_phases() {
    acceptance_per_phase_and_notices_follow_the_phases_in(Mode::Stopped);
}

#[test]
fn acceptance_per_phase_and_notices_follow_the_phases_while_capture_runs() {
    acceptance_per_phase_and_notices_follow_the_phases_in(Mode::Running);
}

/// The stage notices queued for tenants' contacts: (tenant, event, the body's phase).
fn notices(work: &Workdir) -> Vec<(String, String, serde_json::Value)> {
    let control = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("c");
    let mut stmt = control
        .prepare(
            "SELECT tenant, event, body FROM outbox WHERE recipient = 'contact'
             AND event LIKE 'stage_%' ORDER BY created_at_us, position, tenant",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("query")
        .map(|r| {
            let (tenant, event, body) = r.expect("row");
            let body: serde_json::Value = serde_json::from_str(&body).expect("body");
            (tenant, event, body["phase"].clone())
        })
        .collect();
    rows
}

/// With `accept_per_phase`, each tenant awaits acceptance after its wiki, and its tracker
/// is restored only once accepted; its contacts hear "restored" only after the last
/// acceptance, and the awaiting notices name the phase.
fn acceptance_per_phase_and_notices_follow_the_phases_in(mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = setup(
        &work,
        false,
        "accept_per_phase = true\n[contacts]\nsource = \"wiki\"\ntable = \"editors\"\n\
         email_column = \"email\"",
    );
    let background = Background::start(mode, &config, &work, "tracker");
    let deleted = [2, 5];
    let tracker_before: Vec<Vec<String>> = deleted.iter().map(|s| tracker.site_rows(*s)).collect();
    let t = delete(&work, &tracker, &config, &deleted);
    let id = start(
        &config,
        &work,
        &deleted,
        &t,
        &["--batch-size", "2", "--phases", "wiki; tracker"],
    );
    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    let s = status(&config, &id);
    assert_eq!(s["stages"]["awaiting_acceptance"], 2, "{s}");
    assert_eq!(s["tenants_restored"], 0, "{s}");
    // Open (no tenant is still in the wiki phase), but each tracker waits for its wiki's
    // acceptance.
    assert_eq!(phases(&s), [(2, true), (0, true)], "{s}");
    assert!(deleted.iter().all(|s| tracker.site_rows(*s).is_empty()));
    let first = serde_json::json!({"number": 1, "of": 2});
    let events = |from: usize| -> Vec<(String, String, serde_json::Value)> {
        notices(&work)[from..].to_vec()
    };
    let pair = |tenant: &str, event: &str, phase: &serde_json::Value| {
        (tenant.to_string(), event.to_string(), phase.clone())
    };
    let null = serde_json::Value::Null;
    assert_eq!(
        events(0),
        [
            pair("2", "stage_queued", &null),
            pair("5", "stage_queued", &null),
            pair("2", "stage_restoring", &null),
            pair("5", "stage_restoring", &null),
            pair("2", "stage_awaiting_acceptance", &first),
            pair("5", "stage_awaiting_acceptance", &first),
        ]
    );

    // Accepting the wiki on the private page moves the tenant on to its tracker, queued.
    let (mut server, base) = spawn_serve(&config);
    let links: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["campaign", "links", &id, "--json"]))
            .expect("links");
    let paths: Vec<String> = links
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let link = l["link"].as_str().expect("link");
            format!("/t/{}", link.rsplit('/').next().expect("token"))
        })
        .collect();
    for path in &paths {
        let page = page_until(
            &base,
            path,
            &[
                "Wiki: restored, awaiting your acceptance",
                "Issue tracker: queued",
            ],
        );
        assert!(page.contains("id=\"accept\""), "{page}");
        let (code, body) = http_post(&base, &format!("{path}/accept"), None, "");
        assert_eq!(code, 303, "{body}");
        page_until(&base, path, &["Wiki: restored", "Issue tracker: queued"]);
    }
    let s = status(&config, &id);
    assert_eq!(s["stages"]["queued"], 2, "{s}");
    let seen = notices(&work).len();
    assert_eq!(seen, 6, "accepting a phase sends nothing");

    lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    for (i, site) in deleted.iter().enumerate() {
        assert_eq!(tracker.site_rows(*site), tracker_before[i], "site {site}");
    }
    let last = serde_json::json!({"number": 2, "of": 2});
    assert_eq!(
        events(seen),
        [
            pair("2", "stage_awaiting_acceptance", &last),
            pair("5", "stage_awaiting_acceptance", &last),
        ],
        "no second restoring notice, no restored yet"
    );
    for path in &paths {
        page_until(
            &base,
            path,
            &[
                "Wiki: restored",
                "Issue tracker: restored, awaiting your acceptance",
            ],
        );
        let (code, _) = http_post(&base, &format!("{path}/accept"), None, "");
        assert_eq!(code, 303);
    }
    let s = status(&config, &id);
    assert_eq!(s["stages"]["restored"], 2, "{s}");
    assert_eq!(s["tenants_restored"], 2, "{s}");
    assert_eq!(
        events(seen + 2),
        [
            pair("2", "stage_restored", &null),
            pair("5", "stage_restored", &null),
        ]
    );
    let _ = server.kill();
    let _ = server.wait();
    background.finish();
    tracker.finish();
}

#[test]
fn a_tenant_that_fails_a_phase_holds_no_one_back_and_catches_up_when_retried() {
    a_tenant_that_fails_a_phase_holds_no_one_back_in(Mode::Stopped);
}

#[test]
fn a_tenant_that_fails_a_phase_holds_no_one_back_and_catches_up_when_retried_while_capture_runs() {
    a_tenant_that_fails_a_phase_holds_no_one_back_in(Mode::Running);
}

/// The wiki refuses one site's pages: that tenant fails its wiki phase, the others go on
/// to their trackers; its tracker is not touched. Lock lifted and retried, it restores its
/// wiki and then its tracker alone.
fn a_tenant_that_fails_a_phase_holds_no_one_back_in(mode: Mode) {
    let work = Workdir::new();
    let (config, tracker) = setup(&work, false, "max_attempts = 1");
    let background = Background::start(mode, &config, &work, "tracker");
    let wiki = work.path("wiki.db");
    let deleted = [1, 3, 4];
    let wiki_before: Vec<Vec<String>> = deleted.iter().map(|s| wiki_rows(&wiki, *s)).collect();
    let tracker_before: Vec<Vec<String>> = deleted.iter().map(|s| tracker.site_rows(*s)).collect();
    let t = delete(&work, &tracker, &config, &deleted);
    let id = start(
        &config,
        &work,
        &deleted,
        &t,
        &["--batch-size", "3", "--phases", "wiki; tracker"],
    );
    let conn = rusqlite::Connection::open(&wiki).expect("open");
    conn.execute_batch(
        "CREATE TRIGGER wiki_lock BEFORE INSERT ON pages WHEN NEW.site_id = 3
         BEGIN SELECT RAISE(ABORT, 'wiki locked for site 3'); END;",
    )
    .expect("trigger");
    let output = lifeboat(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s = status(&config, &id);
    assert_eq!(s["stages"]["failed"], 1, "{s}");
    assert_eq!(s["stages"]["awaiting_acceptance"], 2, "{s}");
    assert_eq!(s["failed"][0]["tenant"], "3", "{s}");
    assert_eq!(s["failed"][0]["phase"], 1, "{s}");
    assert!(
        s["failed"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("wiki locked for site 3"),
        "{s}"
    );
    assert_eq!(phases(&s), [(2, true), (2, true)], "{s}");
    let human = lifeboat_ok(&config, &["campaign", "status", &id]);
    assert!(human.contains("FAILED 3: "), "{human}");
    for (i, site) in deleted.iter().enumerate() {
        if *site == 3 {
            assert!(wiki_rows(&wiki, 3).is_empty(), "nothing half written");
            assert!(tracker.site_rows(3).is_empty(), "its tracker waits");
        } else {
            assert_eq!(tracker.site_rows(*site), tracker_before[i], "site {site}");
        }
    }

    conn.execute_batch("DROP TRIGGER wiki_lock").expect("drop");
    let out = lifeboat_ok(&config, &["campaign", "retry", &id]);
    assert!(out.contains("1 failed tenants queued again"), "{out}");
    let out = lifeboat_ok(&config, &["worker", "--campaign", &id, "--until-done"]);
    assert!(out.contains("1 tenants restored"), "{out}");
    for (i, site) in deleted.iter().enumerate() {
        assert_eq!(
            wiki_rows(&wiki, *site),
            wiki_before[i],
            "wiki of site {site}"
        );
        assert_eq!(tracker.site_rows(*site), tracker_before[i], "site {site}");
    }
    let s = status(&config, &id);
    assert_eq!(s["stages"]["awaiting_acceptance"], 3, "{s}");
    assert_eq!(phases(&s), [(3, true), (3, true)], "{s}");
    background.finish();
    tracker.finish();
}
