//! Guarded operations on a real SQLite source: April 2022 replayed (site IDs given to an
//! operation that takes app IDs), an operation whose SQL reaches further than it declares,
//! plan → approve → apply in waves → undo, and the refusals: self-approval, missing
//! approvals, altered and stale plans, a halt, a tampered audit log.

use std::path::Path;

use crate::common::*;

const SITES: i64 = 10;

/// The tracker: sites (the tenants), their app installations and issues, both removed
/// with their site (ON DELETE CASCADE). Valid SQL for SQLite and PostgreSQL.
fn seed_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL);
         CREATE TABLE app_installations (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
             app_key TEXT NOT NULL);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);\n",
    );
    for s in 1..=SITES {
        let site = 4400 + s;
        sql.push_str(&format!(
            "INSERT INTO sites VALUES ({site}, 'https://site{s}.example.net');
             INSERT INTO app_installations VALUES ({}, {site}, 'legacy-chat');
             INSERT INTO app_installations VALUES ({}, {site}, 'jira');\n",
            100 + s,
            200 + s
        ));
        for i in 0..3 {
            sql.push_str(&format!(
                "INSERT INTO issues VALUES ({}, {site}, 'issue');\n",
                s * 10 + i
            ));
        }
    }
    sql
}

/// The dump queries: every row of every table, as `table:a|b|c`.
const DUMP: [(&str, &str); 3] = [
    ("sites", "SELECT id || '|' || url FROM sites"),
    (
        "apps",
        "SELECT id || '|' || site_id || '|' || app_key FROM app_installations",
    ),
    (
        "issues",
        "SELECT id || '|' || site_id || '|' || title FROM issues",
    ),
];

fn setup(work: &Workdir) -> std::path::PathBuf {
    let db = work.path("tracker.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(&seed_sql()).expect("schema");
    configure(work, &format!("sqlite://{}", db.display()))
}

/// Write the configuration for a tracker at `url`, with the people of `People` and their
/// keys, and capture it.
fn configure(work: &Workdir, url: &str) -> std::path::PathBuf {
    let people = People::new(work);
    let config = work.init_config(&format!(
        r#"
{people}
[vault]
url = "{vault}"
[sources.tracker]
url = "{url}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
[guard]
approvals_required = 1
users = "tracker.issues"
[kinds.site]
source = "tracker"
table = "sites"
column = "id"
label = "url"
[kinds.app]
source = "tracker"
table = "app_installations"
column = "id"
label = "app_key"
[operations.remove-legacy-app]
params = {{ ids = "app" }}
effect = {{ "tracker.app_installations" = {{ max_rows_per_id = 1 }} }}
[[operations.remove-legacy-app.steps]]
source = "tracker"
sql = "DELETE FROM app_installations WHERE id = ANY($ids)"
[operations.remove-sites-of-apps]
params = {{ ids = "app" }}
effect = {{ "tracker.app_installations" = {{ max_rows_per_id = 1 }} }}
[[operations.remove-sites-of-apps.steps]]
source = "tracker"
sql = "DELETE FROM sites WHERE id IN (SELECT site_id FROM app_installations WHERE id IN $ids)"
[operations.remove-first-site-apps]
params = {{ ids = "app" }}
effect = {{ "tracker.app_installations" = {{ max_rows_per_id = 1 }} }}
[[operations.remove-first-site-apps.steps]]
source = "tracker"
sql = """DELETE FROM app_installations WHERE site_id = 4403
         AND site_id IN (SELECT site_id FROM app_installations WHERE id IN $ids)"""
[operations.forget-changes]
params = {{ ids = "app" }}
effect = {{ "tracker.app_installations" = {{ max_rows_per_id = 1 }} }}
[[operations.forget-changes.steps]]
source = "tracker"
sql = "DELETE FROM app_installations WHERE id = ANY($ids)"
[[operations.forget-changes.steps]]
source = "tracker"
sql = "DELETE FROM _lifeboat_changelog"
[operations.drop-trigger]
params = {{ ids = "app" }}
[[operations.drop-trigger.steps]]
source = "tracker"
sql = "DROP TRIGGER IF EXISTS audit_apps"
[operations.remove-users]
params = {{ ids = "app" }}
[[operations.remove-users.steps]]
source = "tracker"
sql = "DELETE FROM users WHERE id = ANY($ids)"
"#,
        vault = work.vault_url(),
        people = people.toml(),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    config
}

/// Every row of every table, sorted: the database's content.
fn dump(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut out = Vec::new();
    for (table, sql) in DUMP {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|r| format!("{table}:{}", r.expect("row")))
            .collect();
        out.extend(rows);
    }
    out.sort();
    out
}

/// `dump` for the tracker on PostgreSQL.
async fn pg_dump(url: &str) -> Vec<String> {
    let client = pg_connect(url).await;
    let mut out = Vec::new();
    for (table, sql) in DUMP {
        for row in client.query(sql, &[]).await.expect("query") {
            out.push(format!("{table}:{}", row.get::<_, String>(0)));
        }
    }
    out.sort();
    out
}

fn refused(output: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone() {
    april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone_in(Mode::Stopped);
}

#[test]
fn april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone_while_capture_runs() {
    april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone_in(Mode::Running);
}

fn april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");

    // Site IDs given where app IDs are expected: refused, naming what they are.
    let output = lifeboat(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "4401,4402",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    refused(
        &output,
        2,
        "4401 is not an app: it is a site (https://site1.example.net)",
    );
    let output = lifeboat(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "101,999",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    refused(&output, 2, "999 is not an app");
    let output = lifeboat(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    refused(&output, 2, "no IDs given");
    // SQL that removes whole sites: its measured effect exceeds the declared one.
    let output = lifeboat(
        &config,
        &[
            "plan",
            "remove-sites-of-apps",
            "--ids",
            "101,102",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    refused(&output, 2, "which its declared effect does not include");
    assert!(!plan.exists(), "no plan written for a refused operation");
    assert_eq!(dump(&db), before, "planning changed nothing");

    // App IDs: planned (measured, rolled back), approved, applied in waves.
    let ids: Vec<String> = (1..=SITES).map(|s| (100 + s).to_string()).collect();
    let out = lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            &ids.join(","),
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    assert!(out.contains("10 tenants, 10 rows"), "{out}");
    assert_eq!(dump(&db), before, "planning changed nothing");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).expect("plan")).expect("json");
    assert_eq!(
        json["tenants"]["4403"]["tables"]["tracker.app_installations"],
        1
    );
    assert_eq!(json["tenants"]["4403"]["users"], 3);
    assert_eq!(json["users"], 30);

    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "carol"]),
        2,
        "0 of the 1 approvals",
    );
    refused(
        &lifeboat(
            &config,
            &["approve", plan_arg, "--key", &key_of(&config, "alice")],
        ),
        2,
        "alice wrote plan",
    );
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    let out = lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    assert!(
        out.contains("1 of 1 approvals"),
        "the same approver counts once: {out}"
    );

    // A halt file stops the apply before its next wave; nothing is applied.
    let halt = work.path("plan.json.halt");
    std::fs::write(&halt, "").expect("halt file");
    let output = lifeboat(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("halted"), "{}", stderr(&output));
    assert_eq!(dump(&db), before);
    std::fs::remove_file(&halt).expect("rm halt");

    let out = lifeboat_ok(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert!(out.contains("wave 1: 1 tenants"), "{out}");
    assert!(out.contains("wave 2: 4 tenants"), "{out}");
    assert!(out.contains("wave 3: 5 tenants"), "{out}");
    // Only the legacy app rows went.
    let after = dump(&db);
    let gone: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    assert_eq!(gone.len(), SITES as usize, "{gone:?}");
    assert!(gone.iter().all(|r| r.ends_with("|legacy-chat")), "{gone:?}");
    assert_eq!(after.len(), before.len() - SITES as usize);
    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "carol"]),
        2,
        "applied already",
    );

    // Undo: row for row as before.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    lifeboat_ok(&config, &["undo", plan_arg, "--by", "carol"]);
    assert_eq!(dump(&db), before);

    // The audit log has every step, each by its actor about the plan, and finds
    // tampering.
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let entries = audit.as_array().expect("entries");
    for (action, actor) in [
        ("plan", "alice"),
        ("approve", "bob"),
        ("restore-point", "carol"),
        ("apply", "carol"),
        ("halted", "carol"),
        ("wave", "carol"),
        ("applied", "carol"),
        ("undo", "carol"),
    ] {
        let entry = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} missing from {audit:#}"));
        assert_eq!(entry["actor"], actor, "{entry}");
        assert_eq!(entry["subject"].as_str().map(str::len), Some(64), "{entry}");
    }
    assert_eq!(
        entries.iter().filter(|e| e["action"] == "approve").count(),
        1,
        "approving twice is one approval, one entry"
    );
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();
    let control = work.path("lifeboat-control.db");
    let conn = rusqlite::Connection::open(&control).expect("control");
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .expect("tamper");
    let output = lifeboat(&config, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("entry 2"), "{}", stdout(&output));
}

#[test]
fn altered_and_stale_plans_are_refused() {
    altered_and_stale_plans_are_refused_in(Mode::Stopped);
}

#[test]
fn altered_and_stale_plans_are_refused_while_capture_runs() {
    altered_and_stale_plans_are_refused_in(Mode::Running);
}

fn altered_and_stale_plans_are_refused_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "101,102",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );

    // Altered: one more ID slipped into the file.
    let text = std::fs::read_to_string(&plan).expect("plan");
    let altered = work.path("altered.json");
    std::fs::write(&altered, text.replace("\"102\"", "\"103\"")).expect("write");
    refused(
        &lifeboat(
            &config,
            &["apply", altered.to_str().expect("path"), "--by", "carol"],
        ),
        2,
        "altered",
    );

    // Stale: app 102 was removed since the plan measured it.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute("DELETE FROM app_installations WHERE id = 102", [])
        .expect("delete");
    let before = dump(&db);
    let output = lifeboat(&config, &["apply", plan_arg, "--by", "carol"]);
    refused(&output, 2, "stale");
    assert!(
        stderr(&output).contains("tenant 4402"),
        "{}",
        stderr(&output)
    );
    assert_eq!(dump(&db), before, "a refused apply changes nothing");
    background.finish();

    // A control store put back to an earlier copy is a consistent chain, head included;
    // the entries anchored in the vault since then show it.
    let control = work.path("lifeboat-control.db");
    let copy = work.path("control-copy.db");
    std::fs::copy(&control, &copy).expect("copy");
    lifeboat_ok(&config, &["halt", plan_arg, "--by", "dave"]);
    lifeboat_ok(&config, &["audit", "verify"]);
    std::fs::copy(&copy, &control).expect("put back");
    let output = lifeboat(&config, &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("anchored in the vault but missing from the log"),
        "{}",
        stdout(&output)
    );
}

/// Plan `remove-legacy-app` for every site's legacy app, by alice, approved by bob.
fn approved_plan(config: &Path, plan: &Path) {
    let ids: Vec<String> = (1..=SITES).map(|s| (100 + s).to_string()).collect();
    let plan_arg = plan.to_str().expect("path");
    lifeboat_ok(
        config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            &ids.join(","),
            "--key",
            &key_of(config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(
        config,
        &["approve", plan_arg, "--key", &key_of(config, "bob")],
    );
}

/// Start `apply` paused after each wave until `go` exists; wait until it reaches the pause.
fn apply_paused(config: &Path, plan: &Path, go: &Path) -> std::process::Child {
    let reached = std::path::PathBuf::from(format!("{}.reached", go.display()));
    let _ = std::fs::remove_file(go);
    let _ = std::fs::remove_file(&reached);
    let mut child = lifeboat_command(
        config,
        &[
            "apply",
            plan.to_str().expect("path"),
            "--by",
            "carol",
            "--waves",
            "1,50%",
        ],
    )
    .env(
        "LIFEBOAT_PAUSE",
        format!("apply.after-wave:{}", go.display()),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn apply");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !reached.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("apply ended before its first wave was done: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "apply never finished a wave"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

fn legacy_apps(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT id FROM app_installations WHERE app_key = 'legacy-chat' ORDER BY id")
        .expect("prepare");
    let ids = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<Vec<i64>, _>>()
        .expect("rows");
    ids
}

#[test]
fn a_halt_between_waves_and_a_divergence_stop_the_apply() {
    a_halt_between_waves_and_a_divergence_stop_the_apply_in(Mode::Stopped);
}

#[test]
fn a_halt_between_waves_and_a_divergence_stop_the_apply_while_capture_runs() {
    a_halt_between_waves_and_a_divergence_stop_the_apply_in(Mode::Running);
}

fn a_halt_between_waves_and_a_divergence_stop_the_apply_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    approved_plan(&config, &plan);
    let go = work.path("go");

    // Waves of 1, 4 and 5 tenants (1, 50%, 100% of 10). `lifeboat halt` while the apply
    // sits after wave 1: it stops before wave 2.
    let child = apply_paused(&config, &plan, &go);
    lifeboat_ok(&config, &["halt", plan_arg, "--by", "dave"]);
    std::fs::write(&go, "").expect("go");
    let output = child.wait_with_output().expect("apply");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("halted by dave before wave 2"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains("wave 1: 1 tenants"));
    assert_eq!(legacy_apps(&db), (102..=110).collect::<Vec<_>>());

    // Continued: wave 2 runs; while it sits after wave 2, a row the plan measured for a
    // wave-3 tenant goes away. Wave 3 then differs from the plan: rolled back, stopped.
    let child = apply_paused(&config, &plan, &go);
    assert_eq!(legacy_apps(&db), (106..=110).collect::<Vec<_>>());
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute("DELETE FROM app_installations WHERE id = 110", [])
        .expect("delete");
    drop(conn);
    std::fs::write(&go, "").expect("go");
    let output = child.wait_with_output().expect("apply");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("wave 3 diverged"), "{err}");
    assert!(
        err.contains("tenant 4410, tracker.app_installations: planned 1 rows, now 0"),
        "{err}"
    );
    assert_eq!(
        legacy_apps(&db),
        (106..=109).collect::<Vec<_>>(),
        "the diverging wave was rolled back"
    );
    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "carol"]),
        2,
        "stale",
    );

    // Undo brings back the five tenants applied, each as it was just before its wave.
    lifeboat_ok(&config, &["undo", plan_arg, "--by", "carol"]);
    let expected: Vec<String> = before
        .iter()
        .filter(|r| r.as_str() != "apps:110|4410|legacy-chat")
        .cloned()
        .collect();
    assert_eq!(dump(&db), expected);
    let actions = audit_actions(&config);
    for action in ["halt", "halted", "wave", "diverged", "undo"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing: {actions:?}"
        );
    }
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();
}

/// The rows of `site` in a dump.
/// The actions of the audit log, oldest first.
fn audit_actions(config: &Path) -> Vec<String> {
    let audit = lifeboat_ok(config, &["audit", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&audit).expect("audit json");
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_string())
        .collect()
}

fn rows_of(dump: &[String], site: i64) -> Vec<String> {
    dump.iter()
        .filter(|r| {
            let fields: Vec<&str> = r.split(['|', ':']).collect();
            match fields[0] {
                "sites" => fields[1] == site.to_string(),
                _ => fields[2] == site.to_string(),
            }
        })
        .cloned()
        .collect()
}

#[test]
fn tenants_are_deleted_softly_brought_back_and_purged_only_after_retention() {
    tenants_are_deleted_softly_brought_back_and_purged_only_after_retention_in(Mode::Stopped);
}

#[test]
fn tenants_are_deleted_softly_brought_back_and_purged_only_after_retention_while_capture_runs() {
    tenants_are_deleted_softly_brought_back_and_purged_only_after_retention_in(Mode::Running);
}

fn tenants_are_deleted_softly_brought_back_and_purged_only_after_retention_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("delete.json");
    let plan_arg = plan.to_str().expect("path");

    refused(
        &lifeboat(
            &config,
            &[
                "tenant",
                "delete",
                "9999",
                "--key",
                &key_of(&config, "alice"),
                "-o",
                plan_arg,
            ],
        ),
        2,
        "unknown tenant(s) 9999",
    );
    let out = lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            "4403",
            "4404",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    // Each site: itself, two apps, three issues.
    assert!(out.contains("2 tenants, 12 rows"), "{out}");
    assert_eq!(dump(&db), before, "planning changed nothing");
    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "carol"]),
        2,
        "approvals",
    );
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    lifeboat_ok(&config, &["apply", plan_arg, "--by", "carol"]);
    let after = dump(&db);
    assert!(rows_of(&after, 4403).is_empty() && rows_of(&after, 4404).is_empty());
    assert_eq!(after.len(), before.len() - 12);
    for site in [4401, 4402, 4405, 4410] {
        assert_eq!(rows_of(&after, site), rows_of(&before, site));
    }
    let list: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["tenant", "list", "--json"])).expect("json");
    let listed: Vec<(&str, &str)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().expect("tenant"),
                r["state"].as_str().expect("state"),
            )
        })
        .collect();
    assert_eq!(listed, [("4403", "deleted"), ("4404", "deleted")]);
    refused(
        &lifeboat(
            &config,
            &[
                "tenant",
                "delete",
                "4403",
                "--key",
                &key_of(&config, "alice"),
                "-o",
                plan_arg,
            ],
        ),
        2,
        "deleted already",
    );
    refused(
        &lifeboat(&config, &["tenant", "purge", "4404"]),
        2,
        "inside the 30-day retention window",
    );
    refused(
        &lifeboat(&config, &["tenant", "purge", "4405"]),
        2,
        "tenant 4405 is not deleted",
    );

    // Undelete: every row back as it was.
    lifeboat_ok(&config, &["tenant", "undelete", "4403", "--by", "carol"]);
    assert_eq!(rows_of(&dump(&db), 4403), rows_of(&before, 4403));
    refused(
        &lifeboat(&config, &["tenant", "undelete", "4403"]),
        2,
        "not deleted",
    );

    // With no retention left, purge removes the tenant from the vault.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[guard]\n", "[guard]\nretention_days = 0\n"),
    )
    .expect("config");
    // A key in use again is not purged: its history would be the new tenant's.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "INSERT INTO sites VALUES (4404, 'https://reused.example.net')",
        [],
    )
    .expect("reuse");
    refused(
        &lifeboat(&config, &["tenant", "purge", "4404"]),
        2,
        "rows in source tracker again",
    );
    conn.execute("DELETE FROM sites WHERE id = 4404", [])
        .expect("un-reuse");
    drop(conn);
    let out = lifeboat_ok(&config, &["tenant", "purge", "4404", "--by", "carol"]);
    assert!(out.contains("purged tenant 4404"), "{out}");
    assert!(out.contains("1 bases deleted"), "{out}");
    refused(
        &lifeboat(
            &config,
            &[
                "restore",
                "--tenant",
                "4404",
                "--at",
                "2099-01-01T00:00:00Z",
            ],
        ),
        2,
        "unknown tenant 4404",
    );
    let tenants = lifeboat_ok(&config, &["tenants", "--json"]);
    assert!(!tenants.contains("\"4404\""), "{tenants}");
    assert!(tenants.contains("\"4403\""), "{tenants}");
    refused(
        &lifeboat(&config, &["tenant", "undelete", "4404"]),
        2,
        "was purged",
    );
    // Undoing the delete plan would undelete its tenants: 4403 is back, 4404 is purged.
    refused(
        &lifeboat(&config, &["undo", plan_arg, "--by", "carol"]),
        2,
        "was purged",
    );
    // The other tenants are still restorable, and their rows check against the vault.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    lifeboat_ok(&config, &["verify", "--tenant", "4401", "--tenant", "4403"]);

    // Each change with its actor and subject.
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let entries: Vec<(String, String, String)> = audit
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().expect(name).to_string();
            (field("actor"), field("action"), field("subject"))
        })
        .collect();
    let hash =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&plan).expect("plan"))
            .expect("plan json")["hash"]
            .as_str()
            .expect("hash")
            .to_string();
    for (actor, action, subject) in [
        ("alice", "plan", hash.as_str()),
        ("bob", "approve", hash.as_str()),
        ("carol", "wave", hash.as_str()),
        ("carol", "delete", "tenant:4403"),
        ("carol", "delete", "tenant:4404"),
        ("carol", "undelete", "tenant:4403"),
        ("carol", "purge", "tenant:4404"),
        ("carol", "purged", "tenant:4404"),
    ] {
        assert!(
            entries
                .iter()
                .any(|(a, b, c)| a == actor && b == action && c == subject),
            "{actor} {action} {subject} missing from {entries:#?}"
        );
    }
    let out = lifeboat_ok(&config, &["audit", "verify", "--grace-seconds", "0"]);
    assert!(out.contains("every entry is anchored"), "{out}");
    background.finish();
}

#[test]
fn operations_and_tenant_deletes_on_postgresql_are_measured_applied_and_undone() {
    operations_and_tenant_deletes_on_postgresql_are_measured_applied_and_undone_in(Mode::Stopped);
}

#[test]
fn operations_and_tenant_deletes_on_postgresql_are_measured_applied_and_undone_while_capture_runs()
{
    operations_and_tenant_deletes_on_postgresql_are_measured_applied_and_undone_in(Mode::Running);
}

fn operations_and_tenant_deletes_on_postgresql_are_measured_applied_and_undone_in(mode: Mode) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = runtime.block_on(async {
        let url = create_database("guard").await;
        pg_connect(&url)
            .await
            .batch_execute(&seed_sql())
            .await
            .expect("schema");
        url
    });
    let work = Workdir::new();
    let config = configure(&work, &url);
    let background = Background::start(mode, &config, &work, "tracker");
    let dump = || runtime.block_on(pg_dump(&url));
    let before = dump();
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");

    // The cascade is measured (row triggers inside the rolled-back transaction): removing
    // the sites also removes their issues, which the declared effect does not allow.
    let output = lifeboat(
        &config,
        &[
            "plan",
            "remove-sites-of-apps",
            "--ids",
            "101",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    refused(&output, 2, "which its declared effect does not include");
    refused(
        &lifeboat(
            &config,
            &[
                "plan",
                "remove-legacy-app",
                "--ids",
                "4405",
                "--key",
                &key_of(&config, "alice"),
                "-o",
                plan_arg,
            ],
        ),
        2,
        "4405 is not an app: it is a site (https://site5.example.net)",
    );
    assert_eq!(dump(), before);

    approved_plan(&config, &plan);
    let out = lifeboat_ok(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert!(out.contains("wave 3: 5 tenants"), "{out}");
    let after = dump();
    let gone: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    assert_eq!(gone.len(), SITES as usize, "{gone:?}");
    assert!(gone.iter().all(|r| r.ends_with("|legacy-chat")), "{gone:?}");
    lifeboat_ok(&config, &["undo", plan_arg, "--by", "carol"]);
    assert_eq!(dump(), before, "undo restores row for row");

    // A tenant deleted softly and brought back.
    let delete = work.path("delete.json");
    let delete_arg = delete.to_str().expect("path");
    let out = lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            "4407",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            delete_arg,
        ],
    );
    assert!(out.contains("1 tenants, 6 rows"), "{out}");
    lifeboat_ok(
        &config,
        &["approve", delete_arg, "--key", &key_of(&config, "bob")],
    );
    lifeboat_ok(&config, &["apply", delete_arg, "--by", "carol"]);
    let after = dump();
    assert_eq!(after.len(), before.len() - 6);
    assert!(!after
        .iter()
        .any(|r| r.contains("|4407|") || r.contains(":4407|")));
    lifeboat_ok(&config, &["tenant", "undelete", "4407", "--by", "carol"]);
    assert_eq!(dump(), before, "undelete restores row for row");
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();
    runtime.block_on(drop_slots(&url));
}

/// The plan file with `edit` applied and its hash recomputed, as a hand-made plan would be.
fn hand_made(plan: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan).expect("plan")).expect("json");
    edit(&mut json);
    let object = json.as_object_mut().expect("object");
    object.remove("hash");
    let signatures = object.remove("signatures").expect("signatures");
    let body = serde_json::Value::Object(object.clone()).to_string();
    let hash = lifeboat_core::vault::sha256_hex(body.as_bytes());
    object.insert("hash".into(), serde_json::Value::String(hash));
    object.insert("signatures".into(), signatures);
    json.to_string()
}

#[test]
fn plans_are_the_configurations_operations_and_their_steps_are_checked() {
    plans_are_the_configurations_operations_and_their_steps_are_checked_in(Mode::Stopped);
}

#[test]
fn plans_are_the_configurations_operations_and_their_steps_are_checked_while_capture_runs() {
    plans_are_the_configurations_operations_and_their_steps_are_checked_in(Mode::Running);
}

fn plans_are_the_configurations_operations_and_their_steps_are_checked_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");

    // Steps that are not DML on the tenant map's tables: refused at plan time, naming the
    // step and the statement; nothing written.
    for (operation, needle) in [
        (
            "forget-changes",
            "operation forget-changes, step 2 (tracker): refused `DELETE FROM \
             _lifeboat_changelog`: Lifeboat's own tables",
        ),
        (
            "drop-trigger",
            "refused `DROP TRIGGER IF EXISTS audit_apps`: it changes triggers",
        ),
        (
            "remove-users",
            "refused `DELETE FROM users WHERE id = ANY($ids)`: table users is not in the \
             source's tenant map",
        ),
    ] {
        let output = lifeboat(
            &config,
            &[
                "plan",
                operation,
                "--ids",
                "101",
                "--key",
                &key_of(&config, "alice"),
                "-o",
                plan_arg,
            ],
        );
        refused(&output, 2, needle);
        assert!(!plan.exists(), "no plan written for {operation}");
    }
    assert_eq!(dump(&db), before);

    // The April 2022 attempt: a real plan, then a copy with one more step and its hash
    // recomputed, approved. Its author's signature is of the real plan: refused.
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "101,102",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    let forged = work.path("forged.json");
    let forged_arg = forged.to_str().expect("path");
    std::fs::write(
        &forged,
        hand_made(&plan, |j| {
            j["steps"]
                .as_array_mut()
                .expect("steps")
                .push(serde_json::json!(
                    {"source": "tracker", "sql": "DELETE FROM issues WHERE site_id = 4407"}
                ));
        }),
    )
    .expect("write");
    lifeboat_ok(
        &config,
        &["approve", forged_arg, "--key", &key_of(&config, "bob")],
    );
    refused(
        &lifeboat(&config, &["apply", forged_arg, "--by", "carol"]),
        2,
        "is not signed by its author alice: does not verify over this plan's hash",
    );
    assert_eq!(dump(&db), before, "the forged plan deleted nothing");

    // The operation's declaration changes after planning: the plan is refused until the
    // declaration is back as it was.
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    let original = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        original.replacen(
            "sql = \"DELETE FROM app_installations WHERE id = ANY($ids)\"",
            "sql = \"DELETE FROM app_installations WHERE id = ANY($ids) OR site_id = 4407\"",
            1,
        ),
    )
    .expect("config");
    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "carol"]),
        2,
        "its declaration changed since",
    );
    assert_eq!(dump(&db), before);
    std::fs::write(&config, &original).expect("config");

    // One apply of a plan at a time: a second one while the first sits after its wave.
    let go = work.path("go");
    let child = apply_paused(&config, &plan, &go);
    refused(
        &lifeboat(&config, &["apply", plan_arg, "--by", "dave"]),
        2,
        "is being applied already",
    );
    std::fs::write(&go, "").expect("go");
    let output = child.wait_with_output().expect("apply");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(legacy_apps(&db), (103..=110).collect::<Vec<_>>());

    // The declared effect holds for every wave: this operation touches 2 rows for 3 IDs
    // (within 1 per ID), but its first wave touches 2 rows for its 1 ID.
    let plan2 = work.path("plan2.json");
    let plan2_arg = plan2.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-first-site-apps",
            "--ids",
            "103,104,105",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan2_arg,
        ],
    );
    let before = dump(&db);
    lifeboat_ok(
        &config,
        &["approve", plan2_arg, "--key", &key_of(&config, "bob")],
    );
    let output = lifeboat(
        &config,
        &["apply", plan2_arg, "--by", "carol", "--waves", "1"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("wave 1 diverged"), "{err}");
    assert!(
        err.contains("touches 2 rows of tracker.app_installations for 1 IDs"),
        "{err}"
    );
    assert_eq!(
        dump(&db),
        before,
        "the wave beyond its declaration was rolled back"
    );
    assert!(audit_actions(&config).iter().any(|a| a == "diverged"));
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();
}

/// Apply `plan` in waves `1,50%` with the failpoint `name` armed: the process aborts.
fn apply_crashing(config: &Path, plan: &Path, name: &str) {
    let output = lifeboat_command(
        config,
        &[
            "apply",
            plan.to_str().expect("path"),
            "--by",
            "carol",
            "--waves",
            "1,50%",
        ],
    )
    .env("LIFEBOAT_FAILPOINT", name)
    .output()
    .expect("apply");
    assert!(!output.status.success(), "the failpoint {name} aborts");
    assert!(
        stderr(&output).contains(&format!("failpoint {name} reached")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_crash_on_either_side_of_a_wave_commit_is_found_and_never_applied_twice() {
    a_crash_on_either_side_of_a_wave_commit_is_found_and_never_applied_twice_in(Mode::Stopped);
}

#[test]
fn a_crash_on_either_side_of_a_wave_commit_is_found_and_never_applied_twice_while_capture_runs() {
    a_crash_on_either_side_of_a_wave_commit_is_found_and_never_applied_twice_in(Mode::Running);
}

fn a_crash_on_either_side_of_a_wave_commit_is_found_and_never_applied_twice_in(mode: Mode) {
    // After the commit, before its record: the next apply finds the wave's effect present,
    // records the wave and goes on; the rows are what one apply leaves, undo restores all.
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    approved_plan(&config, &plan);
    apply_crashing(&config, &plan, "apply.after-wave-commit");
    assert_eq!(
        legacy_apps(&db),
        (102..=110).collect::<Vec<_>>(),
        "wave 1 committed"
    );
    let out = lifeboat_ok(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert!(
        out.contains("wave 1 had committed in tracker before the apply stopped"),
        "{out}"
    );
    assert!(out.contains("wave 2: 4 tenants"), "{out}");
    assert!(legacy_apps(&db).is_empty());
    let after = dump(&db);
    assert_eq!(after.len(), before.len() - SITES as usize);
    let actions = audit_actions(&config);
    for action in ["apply-lock-taken-over", "wave-recovered", "applied"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    lifeboat_ok(&config, &["undo", plan_arg, "--by", "carol"]);
    assert_eq!(
        dump(&db),
        before,
        "the recovered wave's tenant is undone too"
    );
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();

    // Before the commit: nothing of the wave is there; the next apply forgets the pending
    // wave and runs it.
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    approved_plan(&config, &plan);
    apply_crashing(&config, &plan, "apply.before-wave-commit");
    assert_eq!(dump(&db), before, "the wave was rolled back");
    let out = lifeboat_ok(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert!(out.contains("wave 1: 1 tenants"), "{out}");
    assert!(legacy_apps(&db).is_empty());
    assert_eq!(dump(&db).len(), before.len() - SITES as usize);
    let actions = audit_actions(&config);
    assert!(
        actions.iter().any(|a| a == "wave-rolled-back"),
        "{actions:?}"
    );
    lifeboat_ok(&config, &["audit", "verify"]);
    background.finish();
}

/// The plan's hash, as written in its file.
fn plan_hash(plan: &Path) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan).expect("plan")).expect("json");
    json["hash"].as_str().expect("hash").to_string()
}

/// The plan file with `signature` added as `name`'s approval, by hand.
fn with_signature(plan: &Path, name: &str, signature: &str) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan).expect("plan")).expect("json");
    json["signatures"]
        .as_array_mut()
        .expect("signatures")
        .push(serde_json::json!({"role": "approver", "name": name, "signature": signature}));
    std::fs::write(plan, json.to_string()).expect("write");
}

const NAMESPACE: &str = "lifeboat-plan@lifeboat";

#[test]
fn approvals_are_ssh_signatures_by_declared_approvers_other_than_the_author() {
    approvals_are_ssh_signatures_by_declared_approvers_other_than_the_author_in(Mode::Stopped);
}

#[test]
fn approvals_are_ssh_signatures_by_declared_approvers_other_than_the_author_while_capture_runs() {
    approvals_are_ssh_signatures_by_declared_approvers_other_than_the_author_in(Mode::Running);
}

fn approvals_are_ssh_signatures_by_declared_approvers_other_than_the_author_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let people = People::new(&work);
    // Two approvals needed.
    let text = std::fs::read_to_string(&config).expect("config");
    work.write_config(&text.replace("approvals_required = 1", "approvals_required = 2"));
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    let plan_with = |key: &str, output: &str| {
        lifeboat(
            &config,
            &[
                "plan",
                "remove-legacy-app",
                "--ids",
                "101,102",
                "--key",
                key,
                "-o",
                output,
            ],
        )
    };

    // Who writes a plan is who its key is: a name given, no key, an undeclared key, an
    // approver's key, a public key are all refused, and nothing is written.
    refused(
        &lifeboat(
            &config,
            &["plan", "remove-legacy-app", "--ids", "101", "--by", "alice"],
        ),
        2,
        "--by no longer says who signs: pass --key PATH",
    );
    refused(
        &lifeboat(&config, &["plan", "remove-legacy-app", "--ids", "101"]),
        2,
        "--key PATH is required",
    );
    refused(
        &plan_with(&people.key("mallory"), plan_arg),
        2,
        "is declared for no one in [authors]",
    );
    refused(
        &plan_with(&people.key("bob"), plan_arg),
        2,
        "(it is bob's, who is not in [authors])",
    );
    refused(
        &plan_with(&format!("{}.pub", people.key("alice")), plan_arg),
        2,
        "is not an OpenSSH private key",
    );
    let encrypted = work.path("keys/encrypted");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&encrypted)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    refused(
        &plan_with(encrypted.to_str().expect("path"), plan_arg),
        2,
        "is protected by a passphrase, which lifeboat does not ask for",
    );
    assert!(!plan.exists());

    let out = stdout(&plan_with(&people.key("alice"), plan_arg));
    assert!(out.contains("by alice (key SHA256:"), "{out}");
    let hash = plan_hash(&plan);
    let other = work.path("other.json");
    let other_arg = other.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "103",
            "--key",
            &people.key("alice"),
            "-o",
            other_arg,
        ],
    );

    // Approvals refused: by name, by an undeclared key, by the author's own key.
    refused(
        &lifeboat(&config, &["approve", plan_arg, "--by", "bob"]),
        2,
        "--by no longer says who signs",
    );
    refused(
        &lifeboat(
            &config,
            &["approve", plan_arg, "--key", &people.key("mallory")],
        ),
        2,
        "is declared for no one in [approvers]",
    );
    refused(
        &lifeboat(
            &config,
            &["approve", plan_arg, "--key", &people.key("alice")],
        ),
        2,
        "alice wrote plan",
    );
    // Signatures made elsewhere: over another plan's hash, in another namespace, by a key
    // declared for no approver.
    let signature = work.path("approval.sig");
    let signature_arg = signature.to_str().expect("path");
    let import = |sig: &str| {
        std::fs::write(&signature, sig).expect("signature");
        lifeboat(
            &config,
            &["approve", plan_arg, "--signature", signature_arg],
        )
    };
    refused(
        &import(&people.ssh_keygen_sign("carol", NAMESPACE, &plan_hash(&other))),
        2,
        "refused: carol's signature of plan",
    );
    refused(
        &import(&people.ssh_keygen_sign("carol", NAMESPACE, &plan_hash(&other))),
        2,
        "does not verify over this plan's hash: it was made for another plan",
    );
    refused(
        &import(&people.ssh_keygen_sign("carol", "git", &hash)),
        2,
        "made for namespace \"git\"",
    );
    refused(
        &import(&people.ssh_keygen_sign("mallory", NAMESPACE, &hash)),
        2,
        "which is declared for no one in [approvers]",
    );
    refused(&import("hello"), 2, "not an SSH signature");

    // One approval of the two needed.
    let out = lifeboat_ok(&config, &["approve", plan_arg, "--key", &people.key("bob")]);
    assert!(out.contains("as bob (key SHA256:"), "{out}");
    assert!(out.contains("1 of 2 approvals"), "{out}");
    let out = lifeboat_ok(&config, &["approve", plan_arg, "--key", &people.key("bob")]);
    assert!(
        out.contains("already approved") && out.contains("1 of 2"),
        "{out}"
    );
    refused(
        &lifeboat(&config, &["apply", plan_arg]),
        2,
        "has 1 of the 2 approvals it needs",
    );

    // By hand: bob's signature relabelled as carol's, and mallory's. Neither counts, and
    // each is named with its reason, by `approve --verify` (offline) and by apply.
    let bob_signature = people.ssh_keygen_sign("bob", NAMESPACE, &hash);
    with_signature(&plan, "carol", &bob_signature);
    with_signature(
        &plan,
        "mallory",
        &people.ssh_keygen_sign("mallory", NAMESPACE, &hash),
    );
    let output = lifeboat(&config, &["approve", "--verify", plan_arg]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let listed = stdout(&output);
    for needle in [
        "author    alice",
        "approver  bob",
        "which is not carol's (it is bob's)",
        "mallory is not declared in [approvers]",
        "1 of 2 approvals: it may not be applied",
    ] {
        assert!(listed.contains(needle), "{listed:?} lacks {needle:?}");
    }
    let output = lifeboat(&config, &["apply", plan_arg]);
    refused(&output, 2, "has 1 of the 2 approvals it needs");
    refused(&output, 2, "approver carol: made with key SHA256:");
    refused(&output, 2, "approver mallory: mallory is not declared");
    assert_eq!(dump(&db), before);

    // A plan edited after it was signed, its hash recomputed: no signature verifies.
    let tampered = work.path("tampered.json");
    std::fs::write(
        &tampered,
        hand_made(&plan, |j| j["created"] = "2026-01-01T00:00:00Z".into()),
    )
    .expect("write");
    let tampered_arg = tampered.to_str().expect("path");
    let output = lifeboat(&config, &["approve", "--verify", tampered_arg, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(verdict["author_signed"], false);
    assert_eq!(verdict["approvals"], 0);
    refused(
        &lifeboat(&config, &["apply", tampered_arg]),
        2,
        "is not signed by its author alice: does not verify over this plan's hash: it was \
         made for another plan, or the plan was altered after it was signed",
    );

    // carol signs with ssh-keygen: accepted, the second approval. Lifeboat's own
    // signatures verify with ssh-keygen.
    let out = stdout(&import(&people.ssh_keygen_sign("carol", NAMESPACE, &hash)));
    assert!(
        out.contains("approved plan") && out.contains("2 of 2 approvals"),
        "{out}"
    );
    let output = lifeboat(&config, &["approve", "--verify", plan_arg, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(verdict["approvals"], 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).expect("plan")).expect("json");
    let bob_made = json["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .find(|s| s["name"] == "bob")
        .expect("bob's signature")["signature"]
        .as_str()
        .expect("text")
        .to_string();
    let signers = work.path("allowed_signers");
    std::fs::write(&signers, format!("bob {}\n", people.public("bob"))).expect("signers");
    let sig_file = work.path("bob.sig");
    std::fs::write(&sig_file, &bob_made).expect("sig");
    let mut verify = std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-I", "bob", "-n", NAMESPACE, "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&sig_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh-keygen -Y verify");
    {
        use std::io::Write;
        let mut stdin = verify.stdin.take().expect("stdin");
        stdin.write_all(hash.as_bytes()).expect("message");
    }
    let verified = verify.wait_with_output().expect("verify");
    assert!(
        verified.status.success(),
        "ssh-keygen rejects Lifeboat's signature: {}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // Applied; the control store and the audit log carry the signatures.
    let out = lifeboat_ok(&config, &["apply", plan_arg, "--by", "carol"]);
    assert!(out.contains("applied plan"), "{out}");
    assert_eq!(dump(&db).len(), before.len() - 2);
    let audit: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let approvals: Vec<(String, String)> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "approve" && e["subject"] == hash.as_str())
        .map(|e| {
            let details: serde_json::Value = match &e["details"] {
                serde_json::Value::String(text) => serde_json::from_str(text).expect("details"),
                other => other.clone(),
            };
            (
                e["actor"].as_str().expect("actor").to_string(),
                details["signature"]
                    .as_str()
                    .expect("signature")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert_eq!(approvals[0].0, "bob");
    assert_eq!(approvals[1].0, "carol");
    assert!(approvals
        .iter()
        .all(|(_, s)| s.starts_with("-----BEGIN SSH SIGNATURE-----")));
    let conn = rusqlite::Connection::open(work.path("lifeboat-control.db")).expect("control");
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM plan_signatures WHERE plan = ?1",
            [&hash],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(stored, 3, "alice's, bob's and carol's");
    background.finish();
}

#[test]
fn an_approver_key_that_does_not_parse_is_a_config_error_naming_the_person() {
    let work = Workdir::new();
    let config = work.write_config(&format!(
        "[vault]\nurl = \"{}\"\n[approvers]\nbob = \"ssh-ed25519 AAAA-not-a-key bob@example\"\n",
        work.vault_url()
    ));
    let output = lifeboat(&config, &["approve", "--verify", "plan.json"]);
    refused(
        &output,
        2,
        "[approvers] bob: key is not an OpenSSH public key",
    );
    assert_eq!(
        stderr(&output).trim().lines().count(),
        1,
        "{}",
        stderr(&output)
    );
}

/// An approval signed on another copy of the plan file is found in the control store, and
/// counts only while the configuration still declares the key that made it.
#[test]
fn recorded_signatures_are_verified_again_against_the_configuration_at_apply() {
    recorded_signatures_are_verified_again_against_the_configuration_at_apply_in(Mode::Stopped);
}

#[test]
fn recorded_signatures_are_verified_again_against_the_configuration_at_apply_while_capture_runs() {
    recorded_signatures_are_verified_again_against_the_configuration_at_apply_in(Mode::Running);
}

fn recorded_signatures_are_verified_again_against_the_configuration_at_apply_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let db = work.path("tracker.db");
    let before = dump(&db);
    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            "101",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    let copy = work.path("bobs-copy.json");
    std::fs::copy(&plan, &copy).expect("copy");
    lifeboat_ok(
        &config,
        &[
            "approve",
            copy.to_str().expect("path"),
            "--key",
            &key_of(&config, "bob"),
        ],
    );
    let output = lifeboat(&config, &["approve", "--verify", plan_arg]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the file itself has no approval"
    );

    // bob leaves the approvers: his recorded signature no longer counts.
    let original = std::fs::read_to_string(&config).expect("config");
    let without_bob: String = original
        .lines()
        .filter(|l| !l.starts_with("bob = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without_bob).expect("config");
    refused(
        &lifeboat(&config, &["apply", plan_arg]),
        2,
        "has 0 of the 1 approvals it needs (valid signatures by distinct approvers other than \
         its author); not counted: approver bob: bob is not declared in [approvers]",
    );
    assert_eq!(dump(&db), before);

    std::fs::write(&config, original).expect("config");
    lifeboat_ok(&config, &["apply", plan_arg]);
    assert_eq!(dump(&db).len(), before.len() - 1);
    background.finish();
}

/// `audit verify` on the current state: its exit code and what it said.
fn verify_audit(config: &Path, grace: &str) -> (Option<i32>, String) {
    let output = lifeboat(config, &["audit", "verify", "--grace-seconds", grace]);
    (output.status.code(), stdout(&output))
}

#[test]
fn audit_verify_checks_entries_against_anchors_both_ways() {
    audit_verify_checks_entries_against_anchors_both_ways_in(Mode::Stopped);
}

#[test]
fn audit_verify_checks_entries_against_anchors_both_ways_while_capture_runs() {
    audit_verify_checks_entries_against_anchors_both_ways_in(Mode::Running);
}

/// The entries are written with capture stopped or running; the log is then tampered
/// with capture stopped, so that no command anchors entries meanwhile.
fn audit_verify_checks_entries_against_anchors_both_ways_in(mode: Mode) {
    let work = Workdir::new();
    let config = setup(&work);
    let background = Background::start(mode, &config, &work, "tracker");
    let plan = work.path("plan.json");
    approved_plan(&config, &plan);
    let plan_arg = plan.to_str().expect("path");
    lifeboat_ok(&config, &["halt", plan_arg, "--by", "carol"]);
    lifeboat_ok(&config, &["halt", plan_arg, "--by", "dave"]);
    // plan, approve, halt, halt.
    let (code, out) = verify_audit(&config, "0");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("4 entries"), "{out}");
    assert!(out.contains("every entry is anchored"), "{out}");
    background.finish();

    let control = work.path("lifeboat-control.db");
    let saved = work.path("control-saved.db");
    std::fs::copy(&control, &saved).expect("save");
    let anchors = work.path("vault").join("audit");
    let anchor_of = |seq: u64| -> std::path::PathBuf {
        let prefix = format!("{seq:016x}-");
        std::fs::read_dir(&anchors)
            .expect("anchors")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .unwrap_or_else(|| panic!("no anchor of entry {seq}"))
    };
    let sql = |statements: &str| {
        rusqlite::Connection::open(&control)
            .expect("control")
            .execute_batch(statements)
            .expect("tamper");
    };
    let put_back = || std::fs::copy(&saved, &control).expect("put back");
    let expect_problem = |needle: &str| {
        let (code, out) = verify_audit(&config, "600");
        assert_eq!(code, Some(1), "{needle}: {out}");
        assert!(out.contains(needle), "{needle} not in {out}");
    };

    // A missing anchor.
    let second = anchor_of(2);
    let kept = std::fs::read(&second).expect("anchor");
    std::fs::remove_file(&second).expect("remove");
    expect_problem("entry 2: its anchor is missing from the vault");
    std::fs::write(&second, &kept).expect("restore");

    // An anchor without an entry: one beyond the log, as if entries were cut off.
    let extra = anchors.join(format!("{:016x}-{}.anchor", 5, "ab".repeat(32)));
    std::fs::write(&extra, "ab".repeat(32)).expect("extra anchor");
    expect_problem("entry 5: anchored in the vault but missing from the log");
    std::fs::remove_file(&extra).expect("remove");

    // An entry removed from the middle, chain relinked by hand: its anchor remains.
    sql("DELETE FROM audit WHERE seq = 2");
    expect_problem("entry 2: anchored in the vault but missing from the log");
    expect_problem("entry 3: expected entry 2 here");
    put_back();

    // Entries reordered.
    sql(
        "UPDATE audit SET seq = 100 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; \
         UPDATE audit SET seq = 4 WHERE seq = 100;",
    );
    expect_problem("entry 3: differs from its anchor");
    expect_problem("entry 4: does not follow the entry before it");
    put_back();

    // An entry altered.
    sql("UPDATE audit SET actor = 'mallory' WHERE seq = 3");
    expect_problem("entry 3: its content does not match its hash (altered)");
    put_back();

    // An entry never anchored (written by a process without the vault, which nobody
    // anchored since): pending within the grace period, a problem after it.
    std::fs::remove_file(anchor_of(4)).expect("remove");
    sql("UPDATE audit_anchored SET seq = 3");
    let (code, out) = verify_audit(&config, "600");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PENDING entry 4"), "{out}");
    let (code, out) = verify_audit(&config, "0");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("entry 4: not anchored in the vault since"),
        "{out}"
    );
    // The next command that holds the vault anchors it.
    lifeboat_ok(&config, &["tenant", "list"]);
    let (code, out) = verify_audit(&config, "0");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("every entry is anchored"), "{out}");
}

/// Where a flow's tracker lives.
enum Kind {
    Sqlite,
    Postgres,
}

/// Sites outside every plan of `flows_with_capture_running`: a writer adds issues to them
/// all along.
const BYSTANDERS: [i64; 2] = [4409, 4410];

/// Add issues to the bystander sites until `stop` is set; returns how many.
fn write_bystanders(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    use std::sync::atomic::Ordering;
    let mut written = 0u64;
    let statement = |n: u64| {
        format!(
            "INSERT INTO issues VALUES ({}, {}, 'written meanwhile')",
            100_000 + n,
            BYSTANDERS[n as usize % BYSTANDERS.len()]
        )
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("busy timeout");
        while !stop.load(Ordering::SeqCst) {
            conn.execute_batch(&statement(written)).expect("write");
            written += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    } else {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let client = pg_connect(&url).await;
            while !stop.load(Ordering::SeqCst) {
                client
                    .batch_execute(&statement(written))
                    .await
                    .expect("write");
                written += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
    }
    written
}

/// The guard flow (plan, approve, a halt, apply in waves, undo) and the soft-delete flow
/// (delete, undelete, delete and purge) while a writer commits to other tenants, with `lifeboat capture`
/// leading the source in the background (`running`) or stopped. While it runs, apply,
/// undo and undelete wait for it to store the source up to now instead of capturing it a
/// second time, and it leads alone all along; stopped, they capture by themselves.
/// Afterwards every tenant verifies and the vault holds no position twice.
fn flows(kind: Kind, running: bool) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let work = Workdir::new();
    let url = match kind {
        Kind::Sqlite => {
            let db = work.path("tracker.db");
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.execute_batch(&seed_sql()).expect("schema");
            format!("sqlite://{}", db.display())
        }
        Kind::Postgres => runtime.block_on(async {
            let url = create_database("guardlive").await;
            pg_connect(&url)
                .await
                .batch_execute(&seed_sql())
                .await
                .expect("schema");
            url
        }),
    };
    let config = configure(&work, &url);
    let dump = || match kind {
        Kind::Sqlite => dump(&work.path("tracker.db")),
        Kind::Postgres => runtime.block_on(pg_dump(&url)),
    };
    let planned: Vec<i64> = (4401..=4408).collect();
    let rows = |dump: &[String]| -> Vec<String> {
        planned.iter().flat_map(|&s| rows_of(dump, s)).collect()
    };
    let before = dump();

    let mut capture = running.then(|| {
        let capture = crate::leader::Capture::spawn(&config, work.path("capture.log"), None);
        runtime.block_on(capture.wait_for("source tracker: leading capture (epoch 2"));
        capture
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || write_bystanders(url, stop))
    };

    let plan = work.path("plan.json");
    let plan_arg = plan.to_str().expect("path");
    let ids: Vec<String> = (101..=108).map(|id: i64| id.to_string()).collect();
    lifeboat_ok(
        &config,
        &[
            "plan",
            "remove-legacy-app",
            "--ids",
            &ids.join(","),
            "--key",
            &key_of(&config, "alice"),
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(
        &config,
        &["approve", plan_arg, "--key", &key_of(&config, "bob")],
    );
    // The restore point is taken (waiting for capture), then the halt stops the apply.
    let halt = work.path("plan.json.halt");
    std::fs::write(&halt, "").expect("halt file");
    let output = lifeboat(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("halted"), "{}", stderr(&output));
    // Waited for capture: always on PostgreSQL (the position mark is committed after the
    // position); on SQLite only when the leader had not stored the last write yet.
    let waited = stderr(&output).contains("waiting for capture (leader ");
    assert!(
        waited == running || (running && matches!(kind, Kind::Sqlite)),
        "{}",
        stderr(&output)
    );
    assert_eq!(rows(&dump()), rows(&before), "nothing applied");
    std::fs::remove_file(&halt).expect("rm halt");
    let out = lifeboat_ok(
        &config,
        &["apply", plan_arg, "--by", "carol", "--waves", "1,50%"],
    );
    assert!(out.contains("wave 3: 4 tenants"), "{out}");
    let (planned_before, after) = (rows(&before), rows(&dump()));
    let gone: Vec<&String> = planned_before
        .iter()
        .filter(|r| !after.contains(r))
        .collect();
    assert_eq!(gone.len(), planned.len(), "{gone:?}");
    assert!(gone.iter().all(|r| r.ends_with("|legacy-chat")), "{gone:?}");
    lifeboat_ok(&config, &["undo", plan_arg, "--by", "carol"]);
    assert_eq!(rows(&dump()), rows(&before), "undo restores row for row");

    // A tenant deleted softly and brought back.
    let delete = work.path("delete.json");
    let delete_arg = delete.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            "4407",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            delete_arg,
        ],
    );
    lifeboat_ok(
        &config,
        &["approve", delete_arg, "--key", &key_of(&config, "bob")],
    );
    lifeboat_ok(&config, &["apply", delete_arg, "--by", "carol"]);
    assert!(rows_of(&dump(), 4407).is_empty());
    lifeboat_ok(&config, &["tenant", "undelete", "4407", "--by", "carol"]);
    assert_eq!(
        rows(&dump()),
        rows(&before),
        "undelete restores row for row"
    );

    // Another tenant deleted and, with no retention left, purged from the vault while
    // capture goes on writing it.
    let purge = work.path("purge.json");
    let purge_arg = purge.to_str().expect("path");
    lifeboat_ok(
        &config,
        &[
            "tenant",
            "delete",
            "4406",
            "--key",
            &key_of(&config, "alice"),
            "-o",
            purge_arg,
        ],
    );
    lifeboat_ok(
        &config,
        &["approve", purge_arg, "--key", &key_of(&config, "bob")],
    );
    lifeboat_ok(&config, &["apply", purge_arg, "--by", "carol"]);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[guard]\n", "[guard]\nretention_days = 0\n"),
    )
    .expect("config");
    let out = lifeboat_ok(&config, &["tenant", "purge", "4406", "--by", "carol"]);
    assert!(out.contains("purged tenant 4406"), "{out}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().expect("writer");
    assert!(written > 0, "the writer wrote");
    // A one-shot capture waits for the leader too (stopped: captures), then every tenant
    // verifies.
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let sites: Vec<i64> = (4401..=4410).filter(|&s| s != 4406).collect();
    let out = lifeboat_ok(&config, &as_strs(&verify_args(sites)));
    assert!(out.starts_with("ok:"), "{out}");
    if let Some(capture) = &mut capture {
        terminate(&mut capture.child);
        let log = capture.log();
        assert_eq!(
            log.matches("leading capture").count(),
            1,
            "one capture led the source all along:\n{log}"
        );
        assert!(!log.contains("lost the capture lease"), "{log}");
    }
    lifeboat_ok(&config, &["check"]);
    let stored = runtime.block_on(crate::vault_checks::assert_no_duplicates(
        &config, "tracker",
    ));
    assert!(stored > 0, "nothing captured");
    if let Kind::Postgres = kind {
        runtime.block_on(drop_slots(&url));
    }
}

#[test]
fn sqlite_flows_with_capture_running() {
    flows(Kind::Sqlite, true);
}

#[test]
fn sqlite_flows_with_capture_stopped() {
    flows(Kind::Sqlite, false);
}

#[test]
fn postgres_flows_with_capture_running() {
    flows(Kind::Postgres, true);
}

#[test]
fn postgres_flows_with_capture_stopped() {
    flows(Kind::Postgres, false);
}
