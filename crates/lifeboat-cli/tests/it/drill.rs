//! `lifeboat drill`, the main job, on the embedded default and on PostgreSQL.

use crate::common::*;

fn run_drill(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["drill", "--tenants", "40", "--json"];
    args.extend_from_slice(extra);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(&args)
        .env_remove("LIFEBOAT_FAILPOINT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run drill");
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "drill failed ({:?}):\n{text}\n{}",
        output.status.code(),
        stderr(&output)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_recovered(report: &serde_json::Value) {
    assert_eq!(report["ok"], true, "{report}");
    let deleted = report["tenants_deleted"].as_u64().expect("deleted");
    assert!(
        (12..=20).contains(&deleted),
        "about 40% of 40 tenants: {report}"
    );
    assert_eq!(report["tenants_restored"], deleted);
    assert_eq!(report["recovery_point_rows_lost"], 0);
    assert_eq!(report["rows_restored"], report["rows_deleted"]);
    assert!(report["rows_restored"].as_u64().expect("rows") > 1000);
    assert!(report["workload_transactions"].as_u64().expect("writes") > 0);
    assert_eq!(report["spared_tenants_changed"], serde_json::json!([]));
}

#[test]
fn drill_on_the_embedded_default_restores_every_deleted_tenant_exactly() {
    let work = Workdir::new();
    let dir = work.path("drill");
    let report = run_drill(&["--dir", dir.to_str().expect("utf-8 path")]);
    assert_recovered(&report);
    assert_eq!(report["backend"], "SQLite");
    // The drill captured each source under its lease, as `lifeboat capture` does: the
    // continuous capture (epoch 1), then the catch-up after the incident (epoch 2).
    let control = rusqlite::Connection::open(dir.join("lifeboat-control.db")).expect("control");
    let epochs: Vec<i64> = control
        .prepare("SELECT epoch FROM capture_leases ORDER BY source")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert!(
        !epochs.is_empty() && epochs.iter().all(|&e| e == 2),
        "{epochs:?}"
    );
    // --dir keeps what the drill made: the vault verifies against the databases.
    let config = dir.join("lifeboat.toml");
    let deleted: Vec<String> = (1..=40u64)
        .filter(|s| (s * 7919) % 100 < 40)
        .map(|s| s.to_string())
        .collect();
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let mut args = vec!["verify".to_string()];
    for tenant in &deleted {
        args.push("--tenant".into());
        args.push(tenant.clone());
    }
    let out = lifeboat_ok(&config, &as_strs(&args));
    assert!(out.starts_with("ok:"), "{out}");
}

#[test]
fn drill_serve_runs_the_recovery_as_a_campaign_behind_a_status_page() {
    let work = Workdir::new();
    let dir = work.path("drill");
    let report = run_drill(&[
        "--dir",
        dir.to_str().expect("utf-8 path"),
        "--serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_recovered(&report);
    let page = report["status_page"].as_str().expect("status page");
    assert!(page.starts_with("http://127.0.0.1:"), "{page}");
    let config = dir.join("lifeboat.toml");
    let status: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["campaign", "status", "--json"]))
            .expect("json");
    let deleted = report["tenants_deleted"].clone();
    assert_eq!(status[0]["stages"]["restored"], deleted, "{status}");
    assert_eq!(status[0]["tenants_restored"], deleted, "{status}");
    // Its users are counted: the drill's site s has 5 + s % 11 users.
    let users: u64 = (1..=40u64)
        .filter(|s| (s * 7919) % 100 < 40)
        .map(|s| 5 + s % 11)
        .sum();
    assert_eq!(status[0]["users"], users, "{status}");
    assert_eq!(status[0]["users_restored"], users, "{status}");
    let incidents: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    assert_eq!(incidents[0]["status"], "resolved", "{incidents}");
    assert_eq!(
        incidents[0]["updates"].as_array().expect("updates").len(),
        2
    );
    // Each deleted tenant's contact heard of each stage and of the resolution, by mail
    // written into the drill's mail directory.
    let notifications = report["notifications"].as_array().expect("notifications");
    let deleted = deleted.as_u64().expect("count") as usize;
    for event in [
        "stage_queued",
        "stage_restoring",
        "stage_restored",
        "incident_resolved",
    ] {
        let sent: Vec<&serde_json::Value> = notifications
            .iter()
            .filter(|n| n["event"] == event && n["state"] == "sent")
            .collect();
        assert_eq!(sent.len(), deleted, "{event}: {notifications:?}");
        assert!(sent.iter().all(
            |n| n["to"] == format!("admin@site{}.example", n["tenant"].as_str().unwrap_or(""))
        ));
    }
    assert_eq!(notifications.len(), 4 * deleted, "{notifications:?}");
    let mail_dir = report["mail_dir"].as_str().expect("mail dir");
    let written = std::fs::read_dir(mail_dir)
        .expect("mail dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    assert_eq!(written, 4 * deleted);
}

#[test]
fn drill_on_postgres_restores_every_deleted_tenant_exactly() {
    let report = run_drill(&["--postgres", &pg_base_url()]);
    assert_recovered(&report);
    assert_eq!(report["backend"], "PostgreSQL");
}
