//! Guarded operations on a real SQLite source: April 2022 replayed (site IDs given to an
//! operation that takes app IDs), an operation whose SQL reaches further than it declares,
//! plan → approve → apply in waves → undo, and the refusals: self-approval, missing
//! approvals, altered and stale plans, a halt, a tampered audit log.

use std::path::Path;

use crate::common::*;

const SITES: i64 = 10;

fn setup(work: &Workdir) -> std::path::PathBuf {
    let db = work.path("tracker.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL);
         CREATE TABLE app_installations (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, app_key TEXT NOT NULL);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);",
    )
    .expect("schema");
    for s in 1..=SITES {
        let site = 4400 + s;
        conn.execute(
            "INSERT INTO sites VALUES (?1, ?2)",
            rusqlite::params![site, format!("https://site{s}.example.net")],
        )
        .expect("site");
        conn.execute(
            "INSERT INTO app_installations VALUES (?1, ?2, 'legacy-chat')",
            [100 + s, site],
        )
        .expect("app");
        conn.execute(
            "INSERT INTO app_installations VALUES (?1, ?2, 'jira')",
            [200 + s, site],
        )
        .expect("app");
        for i in 0..3 {
            conn.execute(
                "INSERT INTO issues VALUES (?1, ?2, 'issue')",
                [s * 10 + i, site],
            )
            .expect("issue");
        }
    }
    let config = work.write_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.tracker]
url = "sqlite://{db}"
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
"#,
        vault = work.vault_url(),
        db = db.display()
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    config
}

/// Every row of every table, sorted: the database's content.
fn dump(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut out = Vec::new();
    for (table, sql) in [
        ("sites", "SELECT id || '|' || url FROM sites"),
        (
            "apps",
            "SELECT id || '|' || site_id || '|' || app_key FROM app_installations",
        ),
        (
            "issues",
            "SELECT id || '|' || site_id || '|' || title FROM issues",
        ),
    ] {
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

fn refused(output: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn april_2022_replayed_site_ids_refused_app_ids_applied_in_waves_and_undone() {
    let work = Workdir::new();
    let config = setup(&work);
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
            "-o",
            plan_arg,
        ],
    );
    refused(&output, 2, "999 is not an app");
    let output = lifeboat(
        &config,
        &["plan", "remove-legacy-app", "--ids", "", "-o", plan_arg],
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
            "--by",
            "alice",
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
        &lifeboat(&config, &["approve", plan_arg, "--by", "alice"]),
        2,
        "cannot approve",
    );
    lifeboat_ok(&config, &["approve", plan_arg, "--by", "bob"]);
    let out = lifeboat_ok(&config, &["approve", plan_arg, "--by", "bob"]);
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

    // The audit log has every step, and finds tampering.
    let audit = lifeboat_ok(&config, &["audit", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&audit).expect("audit json");
    let actions: Vec<&str> = entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    for action in [
        "plan",
        "approve",
        "restore-point",
        "apply",
        "halted",
        "wave",
        "applied",
        "undo",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    lifeboat_ok(&config, &["audit", "verify"]);
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
    let work = Workdir::new();
    let config = setup(&work);
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
            "--by",
            "alice",
            "-o",
            plan_arg,
        ],
    );
    lifeboat_ok(&config, &["approve", plan_arg, "--by", "bob"]);

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
}
