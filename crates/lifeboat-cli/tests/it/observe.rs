//! What an operator watches: `/metrics`, `/healthz` and `/readyz` of a running capture on
//! a real SQLite file and a real PostgreSQL database, and `lifeboat info` following what
//! waits for capture while it is stopped and after it catches up.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fixtures::*;

/// `lifeboat capture --metrics-listen 127.0.0.1:0`, and the base URL it listens on.
fn spawn_capture_with_metrics(config: &Path) -> (Child, String) {
    let mut child = lifeboat_command(config, &["capture", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn capture");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            if let Some(rest) = line.strip_prefix("metrics on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
                }
            } else {
                eprintln!("capture: {line}");
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("capture printed its metrics address");
    (child, base)
}

fn scrape(base: &str) -> String {
    let (status, body) = http_get(base, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Scrape until `done` holds of the text (capture flushes every 100 ms).
fn scrape_until(base: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(base);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every series an operator alerts on is there, for `source`, while capture runs; the
/// transaction counter and the lag histogram move when `write` commits; returns the last
/// scrape.
fn metrics_move_with_writes(base: &str, source: &str, write: impl FnOnce()) -> String {
    let s = format!("{{source=\"{source}\"}}");
    let first = scrape_until(base, "captured the source", |t| {
        metric(t, &format!("lifeboat_capture_leader{s}")) == Some(1.0)
            && t.contains(&format!("lifeboat_vault_head_age_seconds{s}"))
    });
    for kind in ["config", "corrupt", "source", "transient", "vault"] {
        assert_eq!(
            metric(
                &first,
                &format!("lifeboat_capture_errors_total{{kind=\"{kind}\",source=\"{source}\"}}")
            ),
            Some(0.0),
            "{first}"
        );
    }
    assert_eq!(metric(&first, "lifeboat_restore_rows_total"), Some(0.0));
    assert!(first.contains("# TYPE lifeboat_capture_lag_seconds histogram"));
    assert!(
        first.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let transactions = |t: &str| {
        metric(t, &format!("lifeboat_capture_transactions_total{s}")).expect("transactions")
    };
    let lags = |t: &str| metric(t, &format!("lifeboat_capture_lag_seconds_count{s}")).expect("lag");
    let age = |t: &str| metric(t, &format!("lifeboat_vault_head_age_seconds{s}")).expect("age");
    let (before, lags_before) = (transactions(&first), lags(&first));

    write();
    let after = scrape_until(base, "counted the writes", |t| {
        transactions(t) > before && lags(t) > lags_before
    });
    assert_eq!(
        lags(&after),
        transactions(&after),
        "one lag per transaction"
    );
    let inf = metric(
        &after,
        &format!("lifeboat_capture_lag_seconds_bucket{{le=\"+Inf\",source=\"{source}\"}}"),
    )
    .expect("+Inf bucket");
    assert_eq!(inf, lags(&after));
    let sum = metric(&after, &format!("lifeboat_capture_lag_seconds_sum{s}")).expect("sum");
    assert!(sum > 0.0, "lag sum {sum}");
    // The head just moved: its age is that of the last write, not of the first capture.
    assert!(age(&after) < 30.0, "head age {}", age(&after));
    after
}

fn health(base: &str) -> (u16, String) {
    let (status, body) = http_get(base, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    http_get(base, "/readyz")
}

#[test]
fn sqlite_capture_metrics_move_and_readiness_follows_the_file_and_the_vault() {
    let work = Workdir::new();
    let db = work.path("identity.db");
    setup_identity(&db, 4);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&db)));
    let (mut capture, base) = spawn_capture_with_metrics(&config);

    metrics_move_with_writes(&base, "identity", || {
        write_identity(&db, 4, 7, Duration::from_millis(500));
    });
    assert_eq!(health(&base), (200, "ready\n".to_string()));

    // The database file moved away: not ready, naming it; back: ready again.
    let moved = work.path("identity.db.moved");
    std::fs::rename(&db, &moved).expect("move the database");
    let (status, reason) = http_get(&base, "/readyz");
    assert_eq!(status, 503, "{reason}");
    assert!(reason.starts_with("source identity: "), "{reason}");
    assert!(reason.contains("identity.db"), "{reason}");
    assert!(!db.exists(), "readiness must not create the database");
    std::fs::rename(&moved, &db).expect("move it back");
    assert_eq!(http_get(&base, "/readyz"), (200, "ready\n".to_string()));

    // The vault's directory gone: not ready, saying it is the vault.
    let vault = work.path("vault");
    let hidden = work.path("vault.hidden");
    std::fs::rename(&vault, &hidden).expect("move the vault");
    let (status, reason) = http_get(&base, "/readyz");
    assert_eq!(status, 503, "{reason}");
    assert!(reason.starts_with("vault: "), "{reason}");
    assert_eq!(reason.lines().count(), 1, "{reason}");
    std::fs::rename(&hidden, &vault).expect("move it back");
    assert_eq!(http_get(&base, "/readyz"), (200, "ready\n".to_string()));

    terminate(&mut capture);
    let output = capture.wait_with_output().expect("capture");
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn postgres_capture_metrics_move_while_capturing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt.block_on(create_database("obs_metrics"));
    rt.block_on(setup_tracker(&url, 3));
    let work = Workdir::new();
    let config = work.init_config(&config_text(&work.vault_url(), Some(&url), None, None));
    let (mut capture, base) = spawn_capture_with_metrics(&config);

    let after = metrics_move_with_writes(&base, "tracker", || {
        let committed = rt.block_on(write_tracker(&url, 3, 11, Duration::from_millis(500)));
        assert!(committed > 0);
    });
    assert_eq!(health(&base), (200, "ready\n".to_string()));
    assert_eq!(
        metric(&after, "lifeboat_capture_leader{source=\"tracker\"}"),
        Some(1.0)
    );

    terminate(&mut capture);
    assert!(capture.wait().expect("capture").success());
    rt.block_on(drop_slots(&url));
}

#[test]
fn a_bad_metrics_address_is_refused_before_capture_starts() {
    let work = Workdir::new();
    let db = work.path("identity.db");
    setup_identity(&db, 2);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&db)));
    let output = lifeboat(
        &config,
        &[
            "capture",
            "--until-caught-up",
            "--metrics-listen",
            "not-an-address",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("cannot listen on not-an-address"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Nothing changed: the source was never captured.
    let info = info_json(&config);
    assert_eq!(info["captured"], false, "{info}");
}

/// `lifeboat info --json`'s entry for the only source.
fn info_json(config: &Path) -> serde_json::Value {
    let out = lifeboat_ok(config, &["info", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&out).expect("info json");
    let sources = all["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "{all}");
    sources[0].clone()
}

/// `info_json` once the source's replication slot is no longer held (the server notices a
/// replication connection's end a moment after the client is gone).
fn info_json_slot_released(config: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = info_json(config);
        if info["capture_running"] == false {
            return info;
        }
        assert!(Instant::now() < deadline, "the slot stayed active: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn info_counts_sqlite_changelog_rows_waiting_until_capture_catches_up() {
    let work = Workdir::new();
    let db = work.path("identity.db");
    setup_identity(&db, 4);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&db)));

    let fresh = info_json(&config);
    assert_eq!(fresh["captured"], false);
    assert_eq!(fresh["lease"], serde_json::Value::Null, "{fresh}");
    let control = config.parent().expect("dir").join("lifeboat-control.db");
    assert!(!control.exists(), "info must not create the control store");
    assert_eq!(fresh["head_position"], serde_json::Value::Null);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    assert!(control.exists(), "capture keeps its lease there");
    let caught = info_json(&config);
    assert_eq!(caught["kind"], "sqlite");
    assert_eq!(caught["captured"], true);
    assert_eq!(caught["changelog_rows"], 0, "{caught}");
    // The capture that ran has stopped: its lease is released.
    assert_eq!(caught["capture_running"], false, "{caught}");
    assert!(
        caught["lease"].is_null() || caught["lease"]["live"] == false,
        "{caught}"
    );
    assert_eq!(caught["slot_lag_bytes"], serde_json::Value::Null);
    assert!(caught["head_age_seconds"].as_f64().expect("age") >= 0.0);
    assert!(caught["window_from"].is_string() && caught["window_to"].is_string());

    // Capture stopped: what is written waits in the changelog, and more and more of it.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("UPDATE users SET score = score + 1 WHERE site_id = 1")
        .expect("update");
    let waiting = info_json(&config)["changelog_rows"].as_u64().expect("rows");
    assert_eq!(waiting, 3, "three users of site 1 changed");
    conn.execute_batch("UPDATE users SET score = score + 1")
        .expect("update all");
    let more = info_json(&config)["changelog_rows"].as_u64().expect("rows");
    assert_eq!(more, 15, "then the twelve users of every site");
    let head_before = info_json(&config)["head_position"].clone();

    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let after = info_json(&config);
    assert_eq!(after["changelog_rows"], 0, "{after}");
    assert_ne!(after["head_position"], head_before, "the head moved");

    // For people: the same facts, in lines.
    let text = lifeboat_ok(&config, &["info"]);
    assert!(text.starts_with("identity (sqlite)\n"), "{text}");
    assert!(text.contains("changelog        0 rows waiting"), "{text}");
    assert!(text.contains("capture running  no"), "{text}");
    assert!(text.contains("capture lease    none"), "{text}");

    // A capture running: its lease shows, naming its process, and it runs.
    let (mut capture, _base) = spawn_capture_with_metrics(&config);
    let holder_suffix = format!(":{}", capture.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let info = info_json(&config);
        if info["lease"]["live"] == true {
            break info;
        }
        assert!(Instant::now() < deadline, "no live lease: {info}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(running["capture_running"], true, "{running}");
    let lease = &running["lease"];
    assert!(
        lease["holder"]
            .as_str()
            .expect("holder")
            .ends_with(&holder_suffix),
        "{running}"
    );
    assert!(lease["epoch"].as_i64() > Some(0), "{running}");
    assert!(lease["expires_at"].is_string(), "{running}");
    let text = lifeboat_ok(&config, &["info"]);
    assert!(text.contains("capture running  yes"), "{text}");
    assert!(
        text.contains(&format!(
            "capture lease    {}",
            lease["holder"].as_str().expect("holder")
        )),
        "{text}"
    );

    // Stopped: the lease is gone, and so is the running capture.
    terminate(&mut capture);
    let output = capture.wait_with_output().expect("capture");
    assert!(output.status.success(), "{}", stdout(&output));
    let stopped = info_json(&config);
    assert_eq!(stopped["capture_running"], false, "{stopped}");
    assert_eq!(stopped["lease"]["live"], false, "{stopped}");
    let text = lifeboat_ok(&config, &["info"]);
    assert!(text.contains("capture running  no"), "{text}");
    assert!(text.contains("capture lease    none"), "{text}");
}

#[test]
fn info_follows_postgres_slot_lag_and_the_running_capture() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt.block_on(create_database("obs_info"));
    rt.block_on(setup_tracker(&url, 3));
    let work = Workdir::new();
    let config = work.init_config(&config_text(&work.vault_url(), Some(&url), None, None));
    assert_eq!(info_json(&config)["slot"], serde_json::Value::Null);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let caught = info_json_slot_released(&config);
    assert_eq!(caught["kind"], "postgres");
    assert!(caught["slot"]
        .as_str()
        .expect("slot")
        .starts_with("lifeboat_tracker"));
    assert_eq!(caught["capture_running"], false, "{caught}");
    assert_eq!(caught["capture_pid"], serde_json::Value::Null);
    assert_eq!(caught["changelog_rows"], serde_json::Value::Null);

    // Capture stopped: the slot holds back more and more WAL as the database is written.
    let client = rt.block_on(pg_connect(&url));
    let write_mib = |mib: i64| {
        rt.block_on(client.batch_execute(&format!(
            // 2 KiB of random hex a row: nothing for TOAST to compress away.
            "INSERT INTO issues (site_id, title, body)
             SELECT 1, 'bulk', array_to_string(ARRAY(
                 SELECT md5(random()::text || g) FROM generate_series(1, 64)), '')
             FROM generate_series(1, {}) g",
            mib * 512
        )))
        .expect("bulk insert");
    };
    write_mib(4);
    let lag1 = info_json(&config)["slot_lag_bytes"].as_u64().expect("lag");
    write_mib(4);
    let stopped = info_json(&config);
    let lag2 = stopped["slot_lag_bytes"].as_u64().expect("lag");
    assert!(lag1 >= 4 << 20, "lag {lag1} after 4 MiB written");
    assert!(lag2 >= lag1 + (4 << 20), "lag {lag1} then {lag2}");
    assert!(stopped["retained_wal_bytes"].as_u64().expect("retained") >= lag2);

    // A running capture is seen on the slot, and once it caught up the lag is gone.
    let mut capture = spawn_capture(&config, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let now = info_json(&config);
        if now["capture_running"] == true && now["slot_lag_bytes"].as_u64().expect("lag") < lag1 {
            break now;
        }
        assert!(Instant::now() < deadline, "capture never caught up: {now}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        running["capture_pid"].as_i64().expect("pid") > 0,
        "{running}"
    );
    let text = lifeboat_ok(&config, &["info"]);
    assert!(text.contains("capture running  yes (server pid "), "{text}");
    terminate(&mut capture);
    assert!(capture.wait().expect("capture").success());
    info_json_slot_released(&config);
    rt.block_on(drop_slots(&url));
}

#[test]
fn info_reports_an_unreachable_source_and_exits_1() {
    let work = Workdir::new();
    let db = work.path("identity.db");
    setup_identity(&db, 2);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&db)));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    std::fs::rename(&db, work.path("elsewhere.db")).expect("move");
    let output = lifeboat(&config, &["info", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let all: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    let entry = &all["sources"][0];
    assert!(
        entry["source_error"]
            .as_str()
            .expect("error")
            .contains("does not exist"),
        "{entry}"
    );
    // The vault's side is still there.
    assert_eq!(entry["captured"], true);
    assert!(entry["head_time"].is_string());
    assert!(!db.exists(), "info must not create the database");
}
