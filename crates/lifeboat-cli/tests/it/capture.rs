//! Capture end to end: many tenants, concurrent writers, verify.

use std::time::Duration;

use crate::common::*;
use crate::fixtures::*;
use crate::vault_checks;

const TENANTS: i64 = 50;

fn all_sites() -> Vec<i64> {
    (1..=TENANTS).map(site_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tenants_over_three_sources_stay_exact_under_concurrent_writers() {
    let work = Workdir::new();
    let tracker = create_database("tracker").await;
    let wiki = create_database("wiki").await;
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

    // Capture runs while three writers change every source: they start once its first
    // snapshot of each is in the vault.
    let mut capture = spawn_capture(&config, None);
    vault_checks::wait_for_first_checkpoints(&config, &["tracker", "wiki", "identity"]).await;
    let duration = Duration::from_secs(4);
    let identity_path = identity.clone();
    let sqlite_writer =
        std::thread::spawn(move || write_identity(&identity_path, TENANTS, 7, duration));
    // Two tracker writers on their own connections: their commits interleave, and one
    // commit record often starts exactly where another ends.
    let (a, a2, b) = tokio::join!(
        write_tracker(&tracker, TENANTS, 11, duration),
        write_tracker(&tracker, TENANTS, 12, duration),
        write_wiki(&wiki, TENANTS, 13, duration)
    );
    let c = sqlite_writer.join().expect("sqlite writer");
    assert!(
        a > 50 && a2 > 50 && b > 50 && c > 50,
        "writers committed {a}, {a2}, {b}, {c}"
    );
    terminate(&mut capture);
    assert_eq!(capture.wait().expect("wait").code(), Some(0), "clean stop");

    // Whatever was still in flight is picked up by the next run.
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config, &as_strs(&verify_args(all_sites())));
    assert!(out.contains("ok: 50 tenants"), "{out}");
    for source in ["tracker", "wiki", "identity"] {
        assert!(vault_checks::assert_no_duplicates(&config, source).await > 0);
    }

    // Every tenant is listed with its three sources.
    let listing = lifeboat_ok(&config, &["tenants", "--json"]);
    let tenants: serde_json::Value = serde_json::from_str(&listing).expect("json");
    let tenants = tenants.as_array().expect("array");
    assert_eq!(tenants.len(), 50);
    assert!(tenants
        .iter()
        .all(|t| t["sources"].as_array().map(Vec::len) == Some(3)));

    // A change behind capture's back is found, in a child table reached through
    // tenant_via, and named.
    let client = pg_connect(&wiki).await;
    client
        .batch_execute(&format!(
            "UPDATE page_versions SET content = 'tampered' WHERE page_id IN \
             (SELECT p.id FROM pages p JOIN spaces s ON s.id = p.space_id WHERE s.site_id = {})",
            site_id(7)
        ))
        .await
        .expect("tamper");
    let conn = rusqlite::Connection::open(&identity).expect("identity");
    conn.execute_batch(&format!(
        "DROP TRIGGER _lifeboat_users_u; UPDATE users SET email = 'x' WHERE site_id = {}",
        site_id(20)
    ))
    .expect("tamper sqlite");
    let output = lifeboat(&config, &as_strs(&verify_args(all_sites())));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("tenant 7 wiki.page_versions"), "{text}");
    assert!(
        text.contains(&format!("tenant {} identity.users", site_id(20))),
        "{text}"
    );
    assert!(text.contains("2 tables differ"), "{text}");

    drop_slots(&tracker).await;
    drop_slots(&wiki).await;
}

#[tokio::test]
async fn history_names_the_transaction_that_deleted_a_tenant() {
    let work = Workdir::new();
    let tracker = create_database("history").await;
    setup_tracker(&tracker, 3).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let client = pg_connect(&tracker).await;
    let row = client
        .query_one(
            "WITH d AS (DELETE FROM sites WHERE id = 2 RETURNING id) \
             SELECT txid_current()::bigint, (SELECT count(*) FROM d)",
            &[],
        )
        .await
        .expect("delete");
    let xid: i64 = row.get(0);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config, &["history", "--tenant", "2", "--json"]);
    let history: serde_json::Value = serde_json::from_str(&out).expect("json");
    let newest = &history[0];
    assert_eq!(newest["transaction"], format!("tracker:{xid}"));
    // 1 site, 4 issues, 4 comments, 4 watchers, all through the cascade.
    assert_eq!(newest["rows_total"], 13, "{newest}");
    let rows = newest["rows"].as_array().expect("rows");
    let count = |table: &str| {
        rows.iter()
            .find(|r| r["table"] == table && r["op"] == "delete")
            .map(|r| r["rows"].as_u64().unwrap_or(0))
    };
    assert_eq!(
        count("comments"),
        Some(4),
        "comments attributed through tenant_via"
    );
    assert_eq!(count("issues"), Some(4));
    assert_eq!(count("sites"), Some(1));
    let human = lifeboat_ok(&config, &["history", "--tenant", "2"]);
    assert!(
        human.contains(&format!("tracker:{xid}")) && human.contains("13 rows across 4 tables"),
        "{human}"
    );
    // The deleted tenant's rows are gone live but the vault still lists it, with 0 rows.
    let listing = lifeboat_ok(&config, &["tenants"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains(" 0 ")),
        "{listing}"
    );
    drop_slots(&tracker).await;
}

#[tokio::test]
async fn postgres_column_added_during_capture_is_handled_or_refused_by_name() {
    let work = Workdir::new();
    let tracker = create_database("schema").await;
    setup_tracker(&tracker, 3).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let client = pg_connect(&tracker).await;
    client
        .batch_execute(
            "ALTER TABLE issues ADD COLUMN note text; \
             UPDATE issues SET note = 'noted' WHERE site_id = 1; \
             ALTER TABLE comments DROP COLUMN body;
             INSERT INTO comments (issue_id) SELECT id FROM issues WHERE site_id = 2;",
        )
        .await
        .expect("alter");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(
        &config,
        &["verify", "--tenant", "1", "--tenant", "2", "--tenant", "3"],
    );
    assert!(out.starts_with("ok:"), "{out}");

    client
        .batch_execute("ALTER TABLE issues ADD COLUMN flag integer DEFAULT 7; UPDATE issues SET title = 't' WHERE site_id = 3")
        .await
        .expect("alter with default");
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_ne!(output.status.code(), Some(0));
    let err = stderr(&output);
    assert!(
        err.contains("table issues: column flag was added with a default"),
        "{err}"
    );
    drop_slots(&tracker).await;
}

#[tokio::test]
async fn compaction_writes_bases_that_make_old_segments_unnecessary() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 5);
    let config = work.init_config(
        &config_text(&work.vault_url(), None, None, Some(&identity)).replace(
            "flush_interval_ms = 100",
            "flush_interval_ms = 100\ncompact_after_changes = 5",
        ),
    );
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    assert_eq!(vault_checks::base_count(&config, "identity").await, 5);
    write_identity(&identity, 5, 3, Duration::from_millis(500));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Busy tenants were compacted by capture itself.
    let automatic = vault_checks::base_count(&config, "identity").await;
    assert!(
        automatic > 5,
        "capture compacted nothing ({automatic} bases)"
    );

    write_identity(&identity, 5, 4, Duration::from_millis(300));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config, &["snapshot"]);
    assert!(out.contains("base snapshots written"), "{out}");
    // With every tenant compacted at the head, the segments are no longer needed to read
    // the latest state: remove them and verify still passes.
    let vault = vault_checks::open(&config).await;
    for segment in vault.list_segments("identity").await.expect("segments") {
        vault.delete(&segment.name).await.expect("delete");
    }
    let tenants: Vec<i64> = (1..=5).map(site_id).collect();
    let out = lifeboat_ok(&config, &as_strs(&verify_args(tenants)));
    assert!(out.starts_with("ok: 5 tenants"), "{out}");
}

#[tokio::test]
async fn s3_vault_holds_a_verified_history() {
    let bucket = std::env::var("LIFEBOAT_TEST_S3_BUCKET")
        .expect("LIFEBOAT_TEST_S3_BUCKET is not set: run the tests with scripts/test");
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 4);
    let vault_url = format!("s3://{bucket}/{}", unique("capture"));
    let config = work.init_config(&config_text(&vault_url, None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    write_identity(&identity, 4, 5, Duration::from_millis(300));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let tenants: Vec<i64> = (1..=4).map(site_id).collect();
    let out = lifeboat_ok(&config, &as_strs(&verify_args(tenants)));
    assert!(out.starts_with("ok: 4 tenants"), "{out}");
    assert!(vault_checks::assert_no_duplicates(&config, "identity").await > 0);
}

#[tokio::test]
async fn partitioned_tables_are_captured_under_their_own_name() {
    let work = Workdir::new();
    let tracker = create_database("partitions").await;
    setup_tracker(&tracker, 4).await;
    let client = pg_connect(&tracker).await;
    client
        .batch_execute(
            "CREATE TABLE events (site_id bigint NOT NULL, id bigint NOT NULL, kind text, \
             PRIMARY KEY (site_id, id)) PARTITION BY RANGE (site_id); \
             CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (3); \
             CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (3) TO (100); \
             INSERT INTO events SELECT s, g, 'seed' FROM generate_series(1, 4) s, generate_series(1, 3) g;",
        )
        .await
        .expect("partitions");
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    client
        .batch_execute(
            "INSERT INTO events VALUES (1, 10, 'new'), (4, 10, 'new'); \
             UPDATE events SET kind = 'moved' WHERE id = 1; DELETE FROM events WHERE id = 2 AND site_id = 3;",
        )
        .await
        .expect("writes");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let out = lifeboat_ok(&config, &as_strs(&verify_args([1, 2, 3, 4])));
    assert!(out.starts_with("ok: 4 tenants"), "{out}");
    drop_slots(&tracker).await;
}

#[test]
fn a_table_added_after_the_first_snapshot_stops_capture_by_name() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 2);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let conn = rusqlite::Connection::open(&identity).expect("open");
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, site_id INTEGER, body TEXT); \
         INSERT INTO notes VALUES (1, 1, 'kept'), (2, 2, 'kept');",
    )
    .expect("new table");
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("table notes holds tenant rows but is not in the vault's history"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "printed once: {err}");
}

/// The replication slot's name and its walsender's PID (`None`: no one streams from it).
async fn slot_of(url: &str) -> (String, Option<i32>) {
    let row = pg_connect(url)
        .await
        .query_one(
            "SELECT slot_name::text, active_pid FROM pg_replication_slots \
             WHERE database = current_database()",
            &[],
        )
        .await
        .expect("slot");
    (row.get(0), row.get(1))
}

/// The error line of a failed command: exactly one, and no raw replication error.
fn one_error_line(output: &std::process::Output) -> String {
    let err = stderr(output);
    assert!(!output.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        !err.contains("server error:"),
        "a raw replication error: {err}"
    );
    lines[0].to_string()
}

/// The replication faults a PostgreSQL capture meets each get a line that says what is
/// happening and what to do, never the replication client's raw error: its slot held by a
/// process outside the control store, its walsender terminated while a one-shot capture
/// streams (it reconnects and finishes), its slot dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replication_faults_are_said_in_one_line_each() {
    let work = Workdir::new();
    let tracker = create_database("replfaults").await;
    setup_tracker(&tracker, 3).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let (slot, _) = slot_of(&tracker).await;

    // A raw replication connection holds the slot.
    let mut holder = std::process::Command::new("pg_recvlogical")
        .args([
            "-d",
            &tracker,
            "--slot",
            &slot,
            "--start",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={slot}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pg_recvlogical");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let (_, Some(pid)) = slot_of(&tracker).await {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never got active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let line = one_error_line(&lifeboat(&config, &["capture", "--until-caught-up"]));
    assert!(
        line.contains(&format!("replication slot {slot} on postgres://"))
            && line.contains(&format!("is in use by another process (PID {pid})"))
            && line.contains("outside this control store"),
        "{line}"
    );
    holder.kill().expect("kill pg_recvlogical");
    holder.wait().expect("reap");

    // The walsender of a one-shot capture is terminated while it streams.
    write_tracker(&tracker, 3, 5, Duration::from_millis(200)).await;
    let go = work.path("go");
    let mut command = lifeboat_command(&config, &["capture", "--until-caught-up"]);
    command.env(
        "LIFEBOAT_PAUSE",
        format!("capture.one-shot-streaming:{}", go.display()),
    );
    let one_shot = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let reached = work.path("go.reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !reached.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the pause"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, walsender) = slot_of(&tracker).await;
    let walsender = walsender.expect("the one-shot streams");
    pg_connect(&tracker)
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&walsender])
        .await
        .expect("terminate");
    std::fs::write(&go, "").expect("go");
    let output = tokio::task::spawn_blocking(move || one_shot.wait_with_output())
        .await
        .expect("join")
        .expect("one-shot");
    let err = stderr(&output);
    assert!(output.status.success(), "it reconnects and finishes: {err}");
    // The server's notice of the termination, or (when it did not arrive first) the
    // connection found closed; or nothing, when the client had already received the
    // stream up to the catch-up marker before the walsender ended, so that the run ends
    // without reading from it again. Whatever is said is said in one line.
    let said = err.contains("the server postgres://")
        && err.contains(&format!("ended the replication connection of slot {slot}"))
        || err.contains("the replication connection to postgres://");
    let clean = err.lines().all(|l| !l.contains("error"));
    assert!(said || clean, "{err}");
    assert!(
        !err.contains("server error:"),
        "a raw replication error: {err}"
    );
    let out = lifeboat_ok(&config, &as_strs(&verify_args((1..=3).map(site_id))));
    assert!(out.starts_with("ok:"), "{out}");

    // The slot dropped: capture cannot go on from it, and says what to do.
    pg_connect(&tracker)
        .await
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .expect("drop slot");
    let line = one_error_line(&lifeboat(&config, &["capture", "--until-caught-up"]));
    assert!(
        line.contains(&format!("replication slot {slot} is missing on"))
            && line.contains("Capture this source into a new vault"),
        "{line}"
    );
    vault_checks::assert_no_duplicates(&config, "tracker").await;
    drop_slots(&tracker).await;
}
