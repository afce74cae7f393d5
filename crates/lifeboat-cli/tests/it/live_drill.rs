//! `lifeboat drill --live`: tenants sampled from the vault, restored into scratch databases
//! (PostgreSQL and SQLite), checked against the vault and the live rows, beside a running
//! capture and without one; a tampered scratch database and a corrupt vault object fail,
//! and the alert reaches the operators' webhook; a live database as the scratch one is
//! refused; `--every` serves the drill's metrics.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::campaign::audit_entries;
use crate::common::*;
use crate::fixtures::*;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

/// The tracker (PostgreSQL) and the identity service (SQLite) with `tenants` tenants, and
/// an empty scratch database of each schema.
struct Databases {
    tracker: String,
    identity: PathBuf,
    scratch_pg: String,
    scratch_sqlite: PathBuf,
}

fn databases(work: &Workdir, prefix: &str, tenants: i64) -> Databases {
    block_on(async {
        let tracker = create_database(prefix).await;
        setup_tracker(&tracker, tenants).await;
        let scratch_pg = create_database(&format!("{prefix}_scratch")).await;
        pg_connect(&scratch_pg)
            .await
            .batch_execute(TRACKER_SCHEMA)
            .await
            .expect("scratch schema");
        let identity = work.path("identity.db");
        setup_identity(&identity, tenants);
        let scratch_sqlite = work.path("scratch-identity.db");
        rusqlite::Connection::open(&scratch_sqlite)
            .expect("scratch")
            .execute_batch(IDENTITY_SCHEMA)
            .expect("scratch schema");
        Databases {
            tracker,
            identity,
            scratch_pg,
            scratch_sqlite,
        }
    })
}

fn into_args(db: &Databases) -> Vec<String> {
    vec![
        "--into-url".into(),
        format!("tracker={}", db.scratch_pg),
        "--into-url".into(),
        format!("identity=sqlite://{}", db.scratch_sqlite.display()),
    ]
}

/// Run `lifeboat drill --live … --json`: exit code, the report (one JSON line per run),
/// stderr.
fn drill(config: &Path, args: &[String]) -> (Option<i32>, Vec<Json>, String) {
    let mut all = vec!["drill".to_string(), "--live".into(), "--json".into()];
    all.extend(args.iter().cloned());
    let output = lifeboat(config, &as_strs(&all));
    let reports = stdout(&output)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (output.status.code(), reports, stderr(&output))
}

fn results(report: &Json) -> Vec<(String, String, String)> {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().expect("tenant").to_string(),
                t["result"].as_str().expect("result").to_string(),
                t["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Rows of `site` in the scratch databases (every tenant table).
fn scratch_rows(db: &Databases, site: i64) -> i64 {
    let pg: i64 = block_on(async {
        let client = pg_connect(&db.scratch_pg).await;
        let mut n = 0;
        for sql in [
            "SELECT count(*) FROM sites WHERE id = $1",
            "SELECT count(*) FROM issues WHERE site_id = $1",
            "SELECT count(*) FROM watchers WHERE site_id = $1",
            "SELECT count(*) FROM comments c JOIN issues i ON i.id = c.issue_id WHERE i.site_id = $1",
        ] {
            let row = client.query_one(sql, &[&site]).await.expect("count");
            n += row.get::<_, i64>(0);
        }
        n
    });
    let conn = rusqlite::Connection::open(&db.scratch_sqlite).expect("scratch");
    let sqlite: i64 = ["users", "memberships"]
        .iter()
        .map(|t| {
            conn.query_row(
                &format!("SELECT count(*) FROM {t} WHERE site_id = ?1"),
                [site],
                |r| r.get::<_, i64>(0),
            )
            .expect("count")
        })
        .sum();
    pg + sqlite
}

/// Keep writing to tenants `sites` of both sources until `stop`.
fn writer(
    db: &Databases,
    sites: &'static [i64],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (tracker, identity) = (db.tracker.clone(), db.identity.clone());
    std::thread::spawn(move || {
        block_on(async move {
            let client = pg_connect(&tracker).await;
            let conn = rusqlite::Connection::open(&identity).expect("identity");
            conn.busy_timeout(Duration::from_secs(30)).expect("busy");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let site = sites[n as usize % sites.len()];
                client
                    .batch_execute(&format!(
                        "UPDATE issues SET title = 'w{n}' WHERE site_id = {site};
                         INSERT INTO comments (issue_id, body)
                             SELECT min(id), 'w{n}' FROM issues WHERE site_id = {site};"
                    ))
                    .await
                    .expect("tracker write");
                conn.execute(
                    "UPDATE users SET email = ?1 WHERE site_id = ?2",
                    rusqlite::params![format!("w{n}@example.net"), site],
                )
                .expect("identity write");
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    })
}

fn drill_passes_beside_writes_to_other_tenants_in(mode: Mode) {
    let work = Workdir::new();
    let db = databases(&work, "ld_pass", 6);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&db.tracker),
        None,
        Some(&db.identity),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let background = Background::start(mode, &config, &work, "tracker");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, &[5, 6], stop.clone());

    let mut args = vec![
        "--sample".to_string(),
        "6".into(),
        "--seed".into(),
        "7".into(),
    ];
    args.extend(into_args(&db));
    let (code, reports, err) = drill(&config, &args);
    stop.store(true, Ordering::SeqCst);
    assert!(writes.join().expect("writer") > 0);
    assert_eq!(code, Some(0), "{reports:?}\n{err}");
    let report = &reports[0];
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["seed"], 7);
    let found = results(report);
    // Every tenant has rows: all six drilled, each once.
    let mut drilled: Vec<&str> = found.iter().map(|(t, _, _)| t.as_str()).collect();
    drilled.sort();
    assert_eq!(drilled, ["1", "2", "3", "4", "5", "6"], "{report}");
    for (tenant, result, reason) in &found {
        if ["5", "6"].contains(&tenant.as_str()) {
            // Written to all along: compared with live rows in a quiet moment, or busy.
            assert!(
                result == "passed" || result == "busy",
                "{tenant}: {result} {reason}"
            );
        } else {
            assert_eq!(result, "passed", "{tenant}: {reason}");
        }
    }
    for t in report["tenants"].as_array().expect("tenants") {
        assert!(t["rows"].as_u64().expect("rows") > 10, "{t}");
        assert!(t["recovery_seconds"].as_f64().expect("seconds") > 0.0);
        assert_eq!(t["sources"], serde_json::json!(["identity", "tracker"]));
    }
    // The scratch databases are empty again.
    for site in 1..=6 {
        assert_eq!(scratch_rows(&db, site_id(site)), 0, "tenant {site}");
    }
    // The same seed picks the same tenants in the same order.
    let (code, again, err) = drill(&config, &args);
    assert_eq!(code, Some(0), "{err}");
    let order = |r: &Json| -> Vec<String> { results(r).into_iter().map(|(t, _, _)| t).collect() };
    assert_eq!(order(&again[0]), order(report));
    // Each run is audited, under its run id.
    let audited: Vec<_> = audit_entries(&config)
        .into_iter()
        .filter(|(_, action, _, _)| action == "drill")
        .collect();
    assert_eq!(audited.len(), 2);
    assert_eq!(
        audited[0].2,
        format!("drill:{}", report["run"].as_str().expect("run"))
    );
    assert_eq!(audited[0].3["ok"], true);
    background.finish();
    block_on(drop_slots(&db.tracker));
}

#[test]
fn a_live_drill_passes_beside_a_running_capture_with_a_writer_on_other_tenants() {
    drill_passes_beside_writes_to_other_tenants_in(Mode::Running);
}

#[test]
fn a_live_drill_without_a_capture_captures_under_the_lease_and_passes() {
    drill_passes_beside_writes_to_other_tenants_in(Mode::Stopped);
}

/// The webhook receiver (tests/it/webhook_sink.py), on its own port.
struct Hooks {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Hooks {
    fn start(dir: PathBuf) -> Hooks {
        let port = free_port();
        let script = format!("{}/tests/it/webhook_sink.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        assert_eq!(line.trim(), "ready");
        Hooks { child, port, dir }
    }

    fn received(&self) -> Vec<Json> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .map(|p| {
                let saved: Json =
                    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json");
                serde_json::from_str(saved["body"].as_str().expect("body")).expect("body json")
            })
            .collect()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn notify_section(work: &Workdir, port: u16) -> String {
    let secret = work.path("hook-secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    format!(
        "\n[server]\npage_name = \"Example Status\"\npublic_url = \"https://status.example.com\"\n\
         [[notify.webhooks]]\nurl = \"http://127.0.0.1:{port}/hooks/lifeboat\"\n\
         secret_file = \"{}\"\n",
        secret.display()
    )
}

#[test]
fn a_row_tampered_in_the_scratch_database_fails_and_the_alert_reaches_the_webhook() {
    let work = Workdir::new();
    let db = databases(&work, "ld_tamper", 4);
    let hooks = Hooks::start(work.path("hooks"));
    let mut smtp = crate::notify::Sink::new("smtp_sink.py", work.path("mail"));
    smtp.start();
    let mut text = config_text(&work.vault_url(), Some(&db.tracker), None, None);
    text.push_str(&format!(
        "\n[notify]\noperator_emails = [\"oncall@example.com\"]\n[notify.smtp]\n\
         url = \"smtp://127.0.0.1:{}?tls=none\"\nfrom = \"Example Status <status@example.com>\"\n",
        smtp.port
    ));
    text.push_str(&notify_section(&work, hooks.port));
    let config = work.init_config(&text);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // The scratch database alters tenant 3's issue titles as they are written.
    block_on(async {
        pg_connect(&db.scratch_pg)
            .await
            .batch_execute(
                "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN NEW.title := NEW.title || ' (altered)'; RETURN NEW; END $$;
                 CREATE TRIGGER tamper BEFORE INSERT ON issues FOR EACH ROW
                     WHEN (NEW.site_id = 3) EXECUTE FUNCTION tamper();",
            )
            .await
            .expect("trigger")
    });
    let args: Vec<String> = ["--sample", "4", "--into-url", &db.scratch_pg]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (code, reports, err) = drill(&config, &args);
    assert_eq!(code, Some(1), "{reports:?}\n{err}");
    let report = &reports[0];
    assert_eq!(report["ok"], false);
    assert_eq!(report["failed"], 1, "{report}");
    for (tenant, result, reason) in results(report) {
        if tenant == "3" {
            assert_eq!(result, "failed");
            assert!(
                reason.contains("tracker: the restored rows differ from the vault")
                    && reason.contains(
                        "table issues: 4 rows restored and in the vault, their values differ"
                    ),
                "{reason}"
            );
        } else {
            assert_eq!(result, "passed", "{tenant}: {reason}");
        }
    }
    assert_eq!(scratch_rows(&db, 3), 0, "emptied after the failure too");
    let run = report["run"].as_str().expect("run").to_string();

    // The alert, once, delivered by the notifier to the operators' webhook.
    lifeboat_ok(&config, &["notifier", "--until-idle"]);
    lifeboat_ok(&config, &["notifier", "--until-idle"]);
    let received = hooks.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let alert = &received[0]["drill"];
    assert_eq!(alert["run"], run.as_str());
    assert_eq!(alert["failed"][0]["tenant"], "3");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("tenant 3: ") && s.contains("the restored rows differ")),
        "{alert}"
    );
    // And once to the operators' address.
    let mails = crate::notify::mails(&smtp.dir);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].to.contains("oncall@example.com"), "{:?}", mails[0]);
    assert_eq!(
        mails[0].subject,
        "Example Status: a live restore drill failed"
    );
    assert!(
        mails[0]
            .text
            .contains(&format!("The live restore drill {run} failed."))
            && mails[0].text.contains("tenant 3: "),
        "{}",
        mails[0].text
    );
    smtp.stop();
    let audited: Vec<_> = audit_entries(&config)
        .into_iter()
        .filter(|(_, action, _, _)| action == "drill")
        .collect();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].3["failed"], 1);
    // Times are whole milliseconds: audit entries hold integers only.
    assert!(audited[0].3["ms"].is_u64(), "{}", audited[0].3);
    block_on(drop_slots(&db.tracker));
}

#[test]
fn a_corrupt_base_in_the_vault_fails_its_tenant_with_the_reason() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 4);
    let scratch = work.path("scratch.db");
    rusqlite::Connection::open(&scratch)
        .expect("scratch")
        .execute_batch(IDENTITY_SCHEMA)
        .expect("schema");
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    // Flip one byte in the middle of tenant 2's base.
    let dir = work.path("vault/sources/identity/bases/2");
    let base = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .next()
        .expect("a base of tenant 2");
    let mut bytes = std::fs::read(&base).expect("base");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&base, bytes).expect("write");

    let into = format!("sqlite://{}", scratch.display());
    let (code, reports, err) = drill(
        &config,
        &["--sample".into(), "4".into(), "--into-url".into(), into],
    );
    assert_eq!(code, Some(1), "{reports:?}\n{err}");
    let report = &reports[0];
    for (tenant, result, reason) in results(report) {
        if tenant == "2" {
            assert_eq!(result, "failed");
            assert!(
                reason.starts_with("the vault cannot give its rows: ")
                    && reason.contains("corrupt"),
                "{reason}"
            );
        } else {
            assert_eq!(result, "passed", "{tenant}: {reason}");
        }
    }
    assert_eq!(report["failed"], 1, "{report}");
}

#[test]
fn a_live_database_as_the_scratch_one_is_refused_and_nothing_changes() {
    let work = Workdir::new();
    let db = databases(&work, "ld_refuse", 2);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&db.tracker),
        None,
        Some(&db.identity),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let vault_files = || -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![work.path("vault")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p)
                } else {
                    files.push(p)
                }
            }
        }
        files.sort();
        files
    };
    let before = vault_files();
    let tracker_rows = || {
        block_on(async {
            pg_connect(&db.tracker)
                .await
                .query_one("SELECT count(*), sum(length(title)) FROM issues", &[])
                .await
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .expect("count")
        })
    };
    let rows_before = tracker_rows();
    // The same server by another name, the same database.
    let other_name = if db.tracker.contains("127.0.0.1") {
        db.tracker.replace("127.0.0.1", "localhost")
    } else {
        db.tracker.replace("localhost", "127.0.0.1")
    };
    let refused = [
        vec![
            format!("tracker={other_name}"),
            format!("identity=sqlite://{}", db.scratch_sqlite.display()),
        ],
        vec![
            format!("tracker={}", db.scratch_pg),
            format!("identity=sqlite://{}", db.identity.display()),
        ],
        vec![format!(
            "identity=sqlite://{}/../identity.db",
            work.path("vault").display()
        )],
    ];
    for into in refused {
        let mut args = vec!["--sample".to_string(), "2".into()];
        for url in into {
            args.push("--into-url".into());
            args.push(url);
        }
        let (code, reports, err) = drill(&config, &args);
        assert_eq!(code, Some(2), "{args:?}: {reports:?} {err}");
        assert!(reports.is_empty());
        assert!(
            err.contains("the drill restores into a scratch database, never a live one"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A scratch database without the source's tables: refused before anything happens.
    let empty = work.path("empty.db");
    rusqlite::Connection::open(&empty)
        .expect("empty")
        .execute_batch("CREATE TABLE other (x)")
        .expect("other");
    let (code, reports, err) = drill(
        &config,
        &[
            "--sample".into(),
            "2".into(),
            "--into-url".into(),
            format!("identity=sqlite://{}", empty.display()),
        ],
    );
    assert_eq!(code, Some(2), "{reports:?} {err}");
    assert!(
        err.contains("(scratch database of source identity): ")
            && err.contains("names a table that identity does not have"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(vault_files(), before, "the vault unchanged");
    assert_eq!(tracker_rows(), rows_before);
    assert!(audit_entries(&config)
        .iter()
        .all(|(_, a, _, _)| a != "drill"));
    for site in 1..=2 {
        assert_eq!(scratch_rows(&db, site_id(site)), 0);
    }
    block_on(drop_slots(&db.tracker));
}

#[test]
fn drilling_every_two_seconds_serves_the_drill_metrics() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let scratch = work.path("scratch.db");
    rusqlite::Connection::open(&scratch)
        .expect("scratch")
        .execute_batch(IDENTITY_SCHEMA)
        .expect("schema");
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let into = format!("sqlite://{}", scratch.display());
    let child = lifeboat_command(
        &config,
        &[
            "drill",
            "--live",
            "--json",
            "--sample",
            "2",
            "--into-url",
            &into,
            "--every",
            "2s",
            "--runs",
            "3",
            "--metrics-listen",
            &address,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("drill");
    let base = format!("http://{address}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    while Instant::now() < deadline {
        if let Ok(stream) = std::net::TcpStream::connect(&address) {
            drop(stream);
            let (status, body) = http_get(&base, "/metrics");
            assert_eq!(status, 200);
            if metric(&body, "lifeboat_drill_runs_total").is_some_and(|n| n >= 1.0) {
                first = Some(body);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = first.expect("a run counted within 60 s");
    assert_eq!(
        metric(&body, "lifeboat_drill_failures_total"),
        Some(0.0),
        "{body}"
    );
    let last = metric(&body, "lifeboat_drill_last_success_timestamp_seconds").expect("gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - 120.0..=now + 5.0).contains(&last), "{last} vs {now}");
    assert!(
        metric(&body, "lifeboat_drill_tenants_total{result=\"passed\"}").is_some_and(|n| n >= 2.0),
        "{body}"
    );
    assert!(
        body.contains("lifeboat_drill_tenant_seconds_count"),
        "{body}"
    );
    let output = child.wait_with_output().expect("drill ends after 3 runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let reports: Vec<Json> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(reports.len(), 3);
    // Run K uses the first seed plus K: not the same tenants every time.
    let seeds: Vec<u64> = reports
        .iter()
        .map(|r| r["seed"].as_u64().expect("seed"))
        .collect();
    assert_eq!(seeds[1], seeds[0].wrapping_add(1));
    assert_eq!(seeds[2], seeds[0].wrapping_add(2));
    assert!(reports
        .iter()
        .all(|r| r["ok"] == true && r["tenants"].as_array().map(Vec::len) == Some(2)));
    let audited = audit_entries(&config)
        .into_iter()
        .filter(|(_, action, _, _)| action == "drill")
        .count();
    assert_eq!(audited, 3);
}

/// The identity service alone, with `tenants` tenants, captured, and an empty scratch copy.
fn identity_only(work: &Workdir, tenants: i64) -> (PathBuf, PathBuf, String) {
    let identity = work.path("identity.db");
    setup_identity(&identity, tenants);
    let scratch = work.path("scratch.db");
    rusqlite::Connection::open(&scratch)
        .expect("scratch")
        .execute_batch(IDENTITY_SCHEMA)
        .expect("schema");
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    (config, identity, format!("sqlite://{}", scratch.display()))
}

#[test]
fn tenants_written_while_their_rows_are_read_are_read_again_and_pass() {
    let work = Workdir::new();
    let (config, identity, into) = identity_only(&work, 3);
    let go = work.path("go");
    let mut reached = go.clone().into_os_string();
    reached.push(".reached");
    let child = lifeboat_command(
        &config,
        &[
            "drill",
            "--live",
            "--json",
            "--sample",
            "3",
            "--into-url",
            &into,
        ],
    )
    .env(
        "LIFEBOAT_PAUSE",
        format!("drill.live-read:{}", go.display()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("drill");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Path::new(&reached).exists() {
        assert!(Instant::now() < deadline, "the drill never read live rows");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Between the first mark and the read: every tenant changes.
    let conn = rusqlite::Connection::open(&identity).expect("identity");
    conn.execute("UPDATE users SET email = 'moved-' || email", [])
        .expect("write");
    std::fs::write(&go, "").expect("go");
    let output = child.wait_with_output().expect("drill");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Json = serde_json::from_str(stdout(&output).trim()).expect("report");
    for t in report["tenants"].as_array().expect("tenants") {
        assert_eq!(t["result"], "passed", "{t}");
        assert_eq!(
            t["live_rounds"], 2,
            "busy in the first round, quiet in the second: {t}"
        );
    }
}

#[test]
fn a_change_the_vault_never_got_fails_its_tenant_against_the_live_rows() {
    let work = Workdir::new();
    let (config, identity, into) = identity_only(&work, 3);
    // Tenant 2's emails change with capture's triggers dropped: the vault never hears of it.
    let conn = rusqlite::Connection::open(&identity).expect("identity");
    let triggers: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'users'",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert!(!triggers.is_empty(), "capture's triggers on users");
    for (name, _) in &triggers {
        conn.execute_batch(&format!("DROP TRIGGER \"{name}\""))
            .expect("drop");
    }
    conn.execute(
        "UPDATE users SET email = 'lost@example.net' WHERE site_id = 2",
        [],
    )
    .expect("write");
    for (_, sql) in &triggers {
        conn.execute_batch(sql).expect("recreate");
    }
    let (code, reports, err) = drill(
        &config,
        &["--sample".into(), "3".into(), "--into-url".into(), into],
    );
    assert_eq!(code, Some(1), "{reports:?}\n{err}");
    let report = &reports[0];
    for t in report["tenants"].as_array().expect("tenants") {
        if t["tenant"] == "2" {
            assert_eq!(t["result"], "failed");
            assert_eq!(t["live_rounds"], 3, "{t}");
            let reason = t["reason"].as_str().expect("reason");
            assert!(
                reason.starts_with("identity: the live rows differ from the vault at ")
                    && reason.contains(
                        "table users: 3 rows live and in the vault, their values differ (checksum)"
                    ),
                "{reason}"
            );
        } else {
            assert_eq!(t["result"], "passed", "{t}");
        }
    }
}

#[test]
fn a_scheduled_drill_stops_cleanly_on_sigterm_after_its_run() {
    let work = Workdir::new();
    let (config, _, into) = identity_only(&work, 2);
    let mut child = lifeboat_command(
        &config,
        &[
            "drill",
            "--live",
            "--json",
            "--sample",
            "1",
            "--into-url",
            &into,
            "--every",
            "1h",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("drill");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the first run's report");
    let report: Json = serde_json::from_str(&line).expect("json");
    assert_eq!(report["ok"], true, "{report}");
    // Waiting for the next run: SIGTERM ends it at once, exit 0.
    let asked = Instant::now();
    terminate(&mut child);
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(child.wait().expect("status").code(), Some(0));
}

#[test]
fn only_tenants_with_rows_are_sampled() {
    let work = Workdir::new();
    let (config, identity, into) = identity_only(&work, 4);
    // Tenant 3 leaves: the vault knows it, without rows now.
    let conn = rusqlite::Connection::open(&identity).expect("identity");
    conn.execute_batch(
        "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = 3);
         DELETE FROM memberships WHERE site_id = 3; DELETE FROM users WHERE site_id = 3;",
    )
    .expect("delete");
    for seed in ["1", "2", "3"] {
        let (code, reports, err) = drill(
            &config,
            &[
                "--sample".into(),
                "10".into(),
                "--seed".into(),
                seed.into(),
                "--into-url".into(),
                into.clone(),
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let mut drilled: Vec<String> = results(&reports[0])
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        drilled.sort();
        assert_eq!(drilled, ["1", "2", "4"]);
    }
}
