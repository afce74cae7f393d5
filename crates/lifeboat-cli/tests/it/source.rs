//! A source feeds one vault: capture refuses a slot or changelog another vault's record
//! claims, `lifeboat source drop` releases a source (leaving its database as it was before
//! capture), and a table whose replica identity is no longer FULL stops capture by name.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fixtures::*;

fn assert_refused(output: &std::process::Output, code: i32, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
    // Capture's notices (standing by, leading) are log lines, not part of the error.
    let lines: Vec<&str> = err
        .trim()
        .lines()
        .filter(|l| !l.contains("lifeboat::notice"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err}");
}

/// The vault id in a local vault's header.
fn vault_id(work: &Workdir) -> String {
    let text = std::fs::read_to_string(work.path("vault").join("lifeboat-vault.json"))
        .expect("vault header");
    let header: serde_json::Value = serde_json::from_str(&text).expect("header json");
    header["id"].as_str().expect("id").to_string()
}

/// Every object name under a local vault, sorted.
fn vault_objects(work: &Workdir) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read vault dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&work.path("vault"), &mut out);
    out.sort();
    out
}

/// The catalog facts capture may change in a PostgreSQL database: its replication slots
/// (with their confirmed positions), publications (with their comments), triggers and
/// tables.
async fn pg_catalog(url: &str) -> Vec<String> {
    let client = pg_connect(url).await;
    let mut out = Vec::new();
    for (what, sql) in [
        (
            "slot",
            "SELECT slot_name::text || ' ' || coalesce(confirmed_flush_lsn::text, '-') \
             FROM pg_replication_slots WHERE database = current_database() ORDER BY 1",
        ),
        (
            "publication",
            "SELECT pubname::text || ' ' || coalesce(obj_description(oid, 'pg_publication'), '-') \
             FROM pg_publication ORDER BY 1",
        ),
        (
            "trigger",
            "SELECT tgname::text || ' on ' || tgrelid::regclass::text FROM pg_trigger \
             WHERE NOT tgisinternal ORDER BY 1",
        ),
        (
            "table",
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
        ),
    ] {
        for row in client.query(sql, &[]).await.expect(what) {
            out.push(format!("{what} {}", row.get::<_, String>(0)));
        }
    }
    out
}

/// Every schema object of an SQLite file (`sqlite_sequence`, which SQLite keeps once made,
/// left out), with its SQL.
fn sqlite_catalog(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master \
             WHERE name <> 'sqlite_sequence' ORDER BY type, name",
        )
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn sqlite_rows(path: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

async fn slot_active(url: &str) -> bool {
    pg_connect(url)
        .await
        .query_one(
            "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots \
             WHERE database = current_database()",
            &[],
        )
        .await
        .expect("slots")
        .get(0)
}

async fn wait_until_streaming(url: &str, capture: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !slot_active(url).await {
        if let Ok(Some(status)) = capture.try_wait() {
            panic!("capture ended early: {status}");
        }
        assert!(Instant::now() < deadline, "capture never streamed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_slot_of_another_vault_is_refused_by_name_and_keeps_its_position() {
    let db = create_database("vaultid_pg").await;
    setup_tracker(&db, 3).await;
    let work_a = Workdir::new();
    let config_a = work_a.init_config(&config_text(&work_a.vault_url(), Some(&db), None, None));
    lifeboat_ok(&config_a, &["capture", "--until-caught-up"]);
    let client = pg_connect(&db).await;
    client
        .batch_execute(&format!(
            "UPDATE issues SET title = 'after' WHERE site_id = {}",
            site_id(1)
        ))
        .await
        .expect("write");
    lifeboat_ok(&config_a, &["capture", "--until-caught-up"]);
    let id_a = vault_id(&work_a);
    let before = pg_catalog(&db).await;
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("slot lifeboat_tracker_")),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("publication ") && l.contains(&id_a)),
        "the publication records vault A: {before:?}"
    );

    // Vault B, new: refused, naming the slot and vault A; nothing changes anywhere.
    let work_b = Workdir::new();
    let config_b = work_b.init_config(&config_text(&work_b.vault_url(), Some(&db), None, None));
    let objects_b = vault_objects(&work_b);
    let slot = before
        .iter()
        .find_map(|l| l.strip_prefix("slot "))
        .and_then(|l| l.split(' ').next())
        .expect("slot")
        .to_string();
    let output = lifeboat(&config_b, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        &[
            &format!("replication slot {slot}"),
            &format!("feeds vault {id_a}"),
            "lifeboat source drop tracker",
        ],
    );
    assert_eq!(pg_catalog(&db).await, before, "the source changed");
    assert_eq!(vault_objects(&work_b), objects_b, "vault B was written");

    // Vault A resumes where it was.
    client
        .batch_execute(&format!(
            "UPDATE issues SET title = 'later' WHERE site_id = {}",
            site_id(2)
        ))
        .await
        .expect("write");
    lifeboat_ok(&config_a, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config_a, &as_strs(&verify_args([1, 2, 3])));
    assert!(out.starts_with("ok: 3 tenants"), "{out}");
    drop_slots(&db).await;
}

#[tokio::test]
async fn source_drop_leaves_postgres_as_before_capture_and_a_new_vault_starts_fresh() {
    let db = create_database("vaultid_drop").await;
    setup_tracker(&db, 3).await;
    let pristine = pg_catalog(&db).await;
    let work_a = Workdir::new();
    let config_a = work_a.init_config(&config_text(&work_a.vault_url(), Some(&db), None, None));
    lifeboat_ok(&config_a, &["capture", "--until-caught-up"]);
    let captured = pg_catalog(&db).await;
    assert_ne!(captured, pristine);

    // Without --yes: listed, exit 2, nothing changed.
    let output = lifeboat(&config_a, &["source", "drop", "tracker"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let listed = stdout(&output);
    assert!(
        listed.contains("replication slot lifeboat_tracker_"),
        "{listed}"
    );
    assert!(listed.contains("publication lifeboat_tracker_"), "{listed}");
    assert!(
        listed.contains(&format!(
            "feeding vault {}, this configuration's vault",
            vault_id(&work_a)
        )),
        "{listed}"
    );
    assert!(stderr(&output).contains("add --yes"), "{}", stderr(&output));
    assert_eq!(
        pg_catalog(&db).await,
        captured,
        "listing changed the source"
    );

    // While a capture streams from the slot: refused, nothing removed.
    let mut capture = spawn_capture(&config_a, None);
    wait_until_streaming(&db, &mut capture).await;
    let output = lifeboat(&config_a, &["source", "drop", "tracker", "--yes"]);
    assert_refused(&output, 1, &["is streaming", "stop that capture first"]);
    terminate(&mut capture);
    let captured = pg_catalog(&db).await;
    assert!(
        captured.iter().any(|l| l.starts_with("slot ")),
        "{captured:?}"
    );

    // With --yes: the source as it was before capture.
    let output = lifeboat_ok(&config_a, &["source", "drop", "tracker", "--yes"]);
    assert!(output.contains("removed"), "{output}");
    assert_eq!(pg_catalog(&db).await, pristine);
    let output = lifeboat_ok(&config_a, &["source", "drop", "tracker"]);
    assert!(output.contains("nothing to remove"), "{output}");

    // Vault A cannot resume without its slot; a new vault starts fresh and protects.
    let output = lifeboat(&config_a, &["capture", "--until-caught-up"]);
    assert_refused(&output, 1, &["is missing"]);
    assert_eq!(
        pg_catalog(&db).await,
        pristine,
        "a refused capture changed the source"
    );
    let work_b = Workdir::new();
    let config_b = work_b.init_config(&config_text(&work_b.vault_url(), Some(&db), None, None));
    lifeboat_ok(&config_b, &["capture", "--until-caught-up"]);
    pg_connect(&db)
        .await
        .batch_execute(&format!(
            "DELETE FROM comments WHERE issue_id IN (SELECT id FROM issues WHERE site_id = {})",
            site_id(3)
        ))
        .await
        .expect("write");
    lifeboat_ok(&config_b, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config_b, &as_strs(&verify_args([1, 2, 3])));
    assert!(out.starts_with("ok: 3 tenants"), "{out}");
    drop_slots(&db).await;
}

#[test]
fn an_sqlite_changelog_of_another_vault_is_refused_and_source_drop_removes_it() {
    let work_a = Workdir::new();
    let identity = work_a.path("identity.db");
    setup_identity(&identity, 3);
    let pristine = sqlite_catalog(&identity);
    let config_a = work_a.init_config(&config_text(
        &work_a.vault_url(),
        None,
        None,
        Some(&identity),
    ));
    lifeboat_ok(&config_a, &["capture", "--until-caught-up"]);
    let id_a = vault_id(&work_a);
    assert_eq!(
        sqlite_rows(&identity, "SELECT vault_id FROM _lifeboat_vault"),
        vec![id_a.clone()]
    );
    // A change the vault does not hold yet: vault B must not take it.
    rusqlite::Connection::open(&identity)
        .expect("open")
        .execute(
            "UPDATE users SET email = 'new@example.net' WHERE id = 100",
            [],
        )
        .expect("write");
    let changelog = "SELECT seq || ' ' || tbl || ' ' || op FROM _lifeboat_changelog \
                     WHERE op <> 'A' ORDER BY seq";
    let pending = sqlite_rows(&identity, changelog);
    assert_eq!(pending.len(), 1, "{pending:?}");
    let captured = sqlite_catalog(&identity);

    let work_b = Workdir::new();
    let config_b = work_b.init_config(&config_text(
        &work_b.vault_url(),
        None,
        None,
        Some(&identity),
    ));
    let objects_b = vault_objects(&work_b);
    let output = lifeboat(&config_b, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        &[
            &format!("the changelog of {}", identity.display()),
            &format!("feeds vault {id_a}"),
            "lifeboat source drop identity",
        ],
    );
    assert_eq!(
        sqlite_rows(&identity, changelog),
        pending,
        "the changelog changed"
    );
    assert_eq!(sqlite_catalog(&identity), captured);
    assert_eq!(vault_objects(&work_b), objects_b, "vault B was written");

    // `source drop` lists, then removes everything capture installed.
    let output = lifeboat(&config_b, &["source", "drop", "identity"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let listed = stdout(&output);
    for object in [
        "trigger _lifeboat_users_i on users",
        "table _lifeboat_changelog (1 changes",
        "table _lifeboat_meta",
        "table _lifeboat_vault",
    ] {
        assert!(listed.contains(object), "{listed} lacks {object}");
    }
    assert!(
        listed.contains(&format!(
            "feeding vault {id_a}, not this configuration's vault"
        )),
        "{listed}"
    );
    assert_eq!(
        sqlite_catalog(&identity),
        captured,
        "listing changed the source"
    );
    let output = lifeboat(&config_b, &["source", "drop", "nosuch", "--yes"]);
    assert_refused(&output, 2, &["nosuch"]);
    assert_eq!(
        sqlite_catalog(&identity),
        captured,
        "a refused drop changed the source"
    );
    let report: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config_b,
        &["source", "drop", "identity", "--yes", "--json"],
    ))
    .expect("json");
    assert_eq!(report["removed"], true, "{report}");
    assert_eq!(report["vault_id"], id_a.as_str(), "{report}");
    assert_eq!(
        report["config_vault_id"],
        vault_id(&work_b).as_str(),
        "{report}"
    );
    assert!(
        report["objects"].as_array().is_some_and(|o| o.len() > 4),
        "{report}"
    );
    assert_eq!(sqlite_catalog(&identity), pristine);

    // Vault A cannot resume; vault B starts fresh and holds the change.
    let output = lifeboat(&config_a, &["capture", "--until-caught-up"]);
    assert_refused(&output, 1, &["changelog is missing"]);
    assert_eq!(
        sqlite_catalog(&identity),
        pristine,
        "a refused capture changed the source"
    );
    lifeboat_ok(&config_b, &["capture", "--until-caught-up"]);
    rusqlite::Connection::open(&identity)
        .expect("open")
        .execute("DELETE FROM sessions WHERE user_id = 201", [])
        .expect("write");
    lifeboat_ok(&config_b, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config_b, &as_strs(&verify_args([1, 2, 3])));
    assert!(out.starts_with("ok: 3 tenants"), "{out}");
}

#[tokio::test]
async fn replica_identity_no_longer_full_stops_capture_by_table_and_stores_nothing_of_it() {
    let db = create_database("vaultid_identity").await;
    setup_tracker(&db, 2).await;
    let work = Workdir::new();
    let config = work.init_config(&config_text(&work.vault_url(), Some(&db), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let client = pg_connect(&db).await;

    // At the start: the table is named with the fix, and nothing is changed.
    client
        .batch_execute("ALTER TABLE comments REPLICA IDENTITY DEFAULT")
        .await
        .expect("alter");
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        1,
        &[
            "table comments has REPLICA IDENTITY DEFAULT",
            "ALTER TABLE comments REPLICA IDENTITY FULL",
        ],
    );
    client
        .batch_execute("ALTER TABLE comments REPLICA IDENTITY FULL")
        .await
        .expect("alter");

    // In the stream: a delete made while the identity was DEFAULT stops capture.
    let mut capture = spawn_capture(&config, None);
    wait_until_streaming(&db, &mut capture).await;
    let objects = vault_objects(&work);
    let victim = site_id(1);
    let deleted: Vec<(i64, i64, String)> = client
        .query(
            &format!(
                "SELECT c.id, c.issue_id, c.body FROM comments c JOIN issues i ON i.id = c.issue_id \
                 WHERE i.site_id = {victim} ORDER BY c.id LIMIT 1"
            ),
            &[],
        )
        .await
        .expect("comment")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let (comment, issue, body) = deleted[0].clone();
    client
        .batch_execute(&format!(
            "ALTER TABLE comments REPLICA IDENTITY DEFAULT; \
             DELETE FROM comments WHERE id = {comment}; \
             ALTER TABLE comments REPLICA IDENTITY FULL;"
        ))
        .await
        .expect("drift");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = capture.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "capture did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = capture.wait_with_output().expect("output");
    let err = stderr(&output);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("table comments: a delete arrived without its whole old row"),
        "{err}"
    );
    assert!(
        err.contains("ALTER TABLE comments REPLICA IDENTITY FULL"),
        "{err}"
    );

    // Nothing of it is in the vault: with the row back, the vault still equals the source.
    let written: Vec<String> = vault_objects(&work)
        .into_iter()
        .filter(|o| !objects.contains(o))
        .collect();
    assert!(
        written.iter().all(|o| !o.contains("/segments/")),
        "segments written after the drift: {written:?}"
    );
    client
        .execute(
            "INSERT INTO comments (id, issue_id, body) VALUES ($1, $2, $3)",
            &[&comment, &issue, &body],
        )
        .await
        .expect("put back");
    let out = lifeboat_ok(&config, &as_strs(&verify_args([1, 2])));
    assert!(out.starts_with("ok: 2 tenants"), "{out}");
    lifeboat_ok(&config, &["check"]);

    // The change stays in the slot: capture stops at it again.
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(&output, 1, &["a delete arrived without its whole old row"]);
    drop_slots(&db).await;
}

/// Copy a directory tree (a vault, as a backup of it would be).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_slot_without_a_record_is_adopted_only_by_the_vault_it_continues() {
    let db = create_database("vaultid_adopt").await;
    setup_tracker(&db, 2).await;
    let work = Workdir::new();
    let config = work.init_config(&config_text(&work.vault_url(), Some(&db), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // A copy of the vault as it is now: later it is behind the slot.
    let stale = Workdir::new();
    copy_dir(&work.path("vault"), &stale.path("vault"));
    let stale_config = stale.write_config(&config_text(&stale.vault_url(), Some(&db), None, None));
    let client = pg_connect(&db).await;
    client
        .batch_execute(&format!(
            "UPDATE issues SET title = 'moved on' WHERE site_id = {}",
            site_id(1)
        ))
        .await
        .expect("write");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // An installation made before records were kept: the publication has no comment.
    let publication: String = client
        .query_one("SELECT pubname::text FROM pg_publication", &[])
        .await
        .expect("publication")
        .get(0);
    client
        .batch_execute(&format!("COMMENT ON PUBLICATION {publication} IS NULL"))
        .await
        .expect("forget the record");
    let unrecorded = pg_catalog(&db).await;

    // A new vault cannot tell whose it is; the stale copy does not continue it.
    let other = Workdir::new();
    let other_config = other.init_config(&config_text(&other.vault_url(), Some(&db), None, None));
    let output = lifeboat(&other_config, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        &["records no vault", "lifeboat source drop tracker"],
    );
    let output = lifeboat(&stale_config, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        &["does not continue this vault's", "confirmed changes up to"],
    );
    assert_eq!(
        pg_catalog(&db).await,
        unrecorded,
        "a refused capture changed the source"
    );

    // The vault it continues adopts it, and records itself.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let adopted = pg_catalog(&db).await;
    assert!(
        adopted
            .iter()
            .any(|l| l.starts_with("publication ") && l.contains(&vault_id(&work))),
        "{adopted:?}"
    );
    let out = lifeboat_ok(&config, &as_strs(&verify_args([1, 2])));
    assert!(out.starts_with("ok: 2 tenants"), "{out}");
    drop_slots(&db).await;
}

/// The vault's head position of its one source, as `info --json` reports it.
fn head_position(config: &Path) -> u64 {
    let out = lifeboat_ok(config, &["info", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&out).expect("info json");
    let head = &info["sources"][0]["head_position"];
    head.as_str()
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("head position in {info}"))
}

fn sqlite_exec(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .expect("open")
        .execute_batch(sql)
        .expect("sql");
}

/// SQLite hands out a changelog sequence once. Trimming leaves a mark at the vault's head
/// (the changelog has no `AUTOINCREMENT`, which costs writers a `sqlite_sequence` update
/// per entry); a changelog an earlier Lifeboat made `AUTOINCREMENT` goes on from
/// `sqlite_sequence`; its newest entry cannot be deleted by hand; a changelog made again by
/// hand stops capture at its start and while it runs, instead of handing the vault's
/// sequences out again.
#[test]
fn sqlite_changelog_sequences_are_never_handed_out_twice() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    let entries = "SELECT seq || ' ' || op || ' [' || tbl || '] ' || COALESCE(old, '-') || ' ' \
                   || COALESCE(new, '-') FROM _lifeboat_changelog ORDER BY seq";
    let changes = "SELECT CAST(seq AS TEXT) FROM _lifeboat_changelog WHERE op <> 'A' ORDER BY seq";
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    sqlite_exec(
        &identity,
        "UPDATE users SET email = 'a@example.net' WHERE id = 100",
    );
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let head = head_position(&config);
    assert!(head >= 1, "{head}");
    assert_eq!(
        sqlite_rows(&identity, entries),
        vec![format!("{head} A [] - -")],
        "only a mark at the head is left"
    );
    assert!(
        stdout(&lifeboat(&config, &["source", "drop", "identity"]))
            .contains("table _lifeboat_changelog (0 changes"),
        "a mark is not a change waiting"
    );
    // One change takes the next sequence and is captured.
    let next_change = |sql: &str, seq: u64| {
        sqlite_exec(&identity, sql);
        assert_eq!(sqlite_rows(&identity, changes), vec![seq.to_string()]);
        lifeboat_ok(&config, &["capture", "--until-caught-up"]);
        assert_eq!(head_position(&config), seq);
    };
    next_change(
        "UPDATE users SET email = 'b@example.net' WHERE id = 100",
        head + 1,
    );

    // A changelog as an earlier Lifeboat left it: AUTOINCREMENT, emptied by its trimming,
    // its last sequence only in `sqlite_sequence`.
    let head = head + 1;
    let earlier_layout = |head: u64| {
        format!(
            "BEGIN;
             DROP TABLE _lifeboat_changelog;
             CREATE TABLE _lifeboat_changelog (seq INTEGER PRIMARY KEY AUTOINCREMENT,
               tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT, at INTEGER NOT NULL);
             INSERT INTO sqlite_sequence (name, seq) VALUES ('_lifeboat_changelog', {head});
             COMMIT;"
        )
    };
    sqlite_exec(&identity, &earlier_layout(head));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    assert_eq!(head_position(&config), head);
    next_change(
        "UPDATE users SET email = 'c@example.net' WHERE id = 200",
        head + 1,
    );
    let out = lifeboat_ok(&config, &as_strs(&verify_args([1, 2, 3])));
    assert!(out.starts_with("ok: 3 tenants"), "{out}");
    let history: serde_json::Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["history", "--tenant", "2", "--json"],
    ))
    .expect("history json");
    assert_eq!(
        history[0]["transaction"],
        format!("identity:{}", head + 1),
        "{history}"
    );

    // Its newest entry cannot be deleted by hand: the statement is refused whole.
    let head = head + 1;
    let before = sqlite_rows(&identity, entries);
    assert_eq!(before, vec![format!("{head} A [] - -")]);
    let refused = rusqlite::Connection::open(&identity)
        .expect("open")
        .execute("DELETE FROM _lifeboat_changelog", [])
        .expect_err("the newest entry was deleted");
    assert!(
        refused.to_string().contains("cannot be deleted"),
        "{refused}"
    );
    assert_eq!(sqlite_rows(&identity, entries), before);

    // Made again by hand without it: refused at the start, nothing stored, nothing
    // changed in the source, whether its sequences are below the vault's head...
    let made_again = "BEGIN;
         DROP TABLE _lifeboat_changelog;
         DELETE FROM sqlite_sequence WHERE name = '_lifeboat_changelog';
         CREATE TABLE _lifeboat_changelog (seq INTEGER PRIMARY KEY,
           tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT, at INTEGER NOT NULL);
         COMMIT;";
    sqlite_exec(&identity, made_again);
    sqlite_exec(
        &identity,
        "UPDATE users SET email = 'd@example.net' WHERE id = 300",
    );
    let refused_start = |needle: &str| {
        let catalog = sqlite_catalog(&identity);
        let before = sqlite_rows(&identity, entries);
        let objects = vault_objects(&work);
        let output = lifeboat(&config, &["capture", "--until-caught-up"]);
        assert_refused(&output, 1, &[needle, "lifeboat source drop identity"]);
        assert_eq!(sqlite_catalog(&identity), catalog);
        assert_eq!(sqlite_rows(&identity, entries), before);
        assert_eq!(vault_objects(&work), objects, "the vault was written");
    };
    refused_start(&format!(
        "the changelog's last sequence is 1, below the {head} the vault holds"
    ));
    // ... or already past it, where the sequences alone cannot tell.
    for n in 0..head + 5 {
        sqlite_exec(
            &identity,
            &format!("UPDATE users SET email = 'd{n}@example.net' WHERE id = 300"),
        );
    }
    refused_start(
        "capture's changelog was made again, or its trigger _lifeboat_changelog_keep removed",
    );

    // The same while capture runs: it stops at its next read.
    sqlite_exec(&identity, &earlier_layout(head));
    let mut capture = spawn_capture(&config, None);
    sqlite_exec(
        &identity,
        "UPDATE users SET email = 'e@example.net' WHERE id = 300",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while head_position(&config) == head {
        assert!(Instant::now() < deadline, "capture stored nothing for 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(head_position(&config), head + 1, "capture went on");
    sqlite_exec(&identity, made_again);
    for n in 0..head + 5 {
        sqlite_exec(
            &identity,
            &format!("UPDATE users SET email = 'f{n}@example.net' WHERE id = 300"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = capture.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            terminate(&mut capture);
            panic!("capture went on for 60 s beside a changelog made again");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(capture.stderr.as_mut().expect("stderr"), &mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("capture's changelog was made again"), "{err}");
    assert_eq!(
        head_position(&config),
        head + 1,
        "nothing of the new sequences stored"
    );
}
