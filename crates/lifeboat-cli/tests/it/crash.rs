//! Capture killed at named failpoints and at seeded random moments, restarted: nothing
//! lost (verify passes) and nothing stored twice.

use std::time::Duration;

use crate::common::*;
use crate::fixtures::*;
use crate::vault_checks;

const TENANTS: i64 = 6;

fn sites() -> Vec<i64> {
    (1..=TENANTS).map(site_id).collect()
}

/// Run capture armed with `failpoint`, expect it to die there, then recover.
fn crash_at(config: &std::path::Path, failpoint: &str) {
    let output = lifeboat_command(config, &["capture", "--until-caught-up"])
        .env("LIFEBOAT_FAILPOINT", failpoint)
        .output()
        .expect("run capture");
    assert!(
        !output.status.success(),
        "capture should have died at {failpoint}: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(&format!(
            "failpoint {}",
            failpoint.split('@').next().unwrap_or(failpoint)
        )),
        "{}",
        stderr(&output)
    );
}

const FAILPOINTS: &[&str] = &[
    "capture.after-base@2",
    "capture.after-checkpoint",
    "capture.before-segment",
    "capture.after-segment",
    "capture.before-ack",
    "capture.after-ack",
];

#[test]
fn sqlite_capture_killed_at_every_failpoint_loses_and_duplicates_nothing() {
    for (round, failpoint) in FAILPOINTS.iter().enumerate() {
        let work = Workdir::new();
        let identity = work.path("identity.db");
        setup_identity(&identity, TENANTS);
        let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
        if !failpoint.starts_with("capture.after-base") && *failpoint != "capture.after-checkpoint"
        {
            lifeboat_ok(&config, &["capture", "--until-caught-up"]);
        }
        write_identity(&identity, TENANTS, round as u64, Duration::from_millis(300));
        crash_at(&config, failpoint);
        write_identity(
            &identity,
            TENANTS,
            100 + round as u64,
            Duration::from_millis(200),
        );
        lifeboat_ok(&config, &["capture", "--until-caught-up"]);
        let out = lifeboat_ok(&config, &as_strs(&verify_args(sites())));
        assert!(out.starts_with("ok:"), "after {failpoint}: {out}");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(vault_checks::assert_no_duplicates(&config, "identity"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_capture_killed_at_every_failpoint_loses_and_duplicates_nothing() {
    for (round, failpoint) in FAILPOINTS.iter().enumerate() {
        let work = Workdir::new();
        let tracker = create_database("crash").await;
        setup_tracker(&tracker, TENANTS).await;
        let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
        if !failpoint.starts_with("capture.after-base") && *failpoint != "capture.after-checkpoint"
        {
            lifeboat_ok(&config, &["capture", "--until-caught-up"]);
        }
        write_tracker(&tracker, TENANTS, round as u64, Duration::from_millis(300)).await;
        let config_for_crash = config.clone();
        let failpoint_owned = failpoint.to_string();
        tokio::task::spawn_blocking(move || crash_at(&config_for_crash, &failpoint_owned))
            .await
            .expect("crash run");
        write_tracker(
            &tracker,
            TENANTS,
            100 + round as u64,
            Duration::from_millis(200),
        )
        .await;
        let config_for_run = config.clone();
        let out = tokio::task::spawn_blocking(move || {
            lifeboat_ok(&config_for_run, &["capture", "--until-caught-up"]);
            lifeboat_ok(&config_for_run, &as_strs(&verify_args(sites())))
        })
        .await
        .expect("recovery");
        assert!(out.starts_with("ok:"), "after {failpoint}: {out}");
        vault_checks::assert_no_duplicates(&config, "tracker").await;
        drop_slots(&tracker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn capture_survives_seeded_random_kills_while_writers_run() {
    let seed: u64 = std::env::var("LIFEBOAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    eprintln!("seeded kills: LIFEBOAT_TEST_SEED={seed}");
    let work = Workdir::new();
    let tracker = create_database("kills").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, TENANTS).await;
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    let mut rng = Rng::new(seed);
    let writes = Duration::from_secs(6);
    let identity_path = identity.clone();
    let sqlite_writer =
        std::thread::spawn(move || write_identity(&identity_path, TENANTS, seed, writes));
    let tracker_url = tracker.clone();
    let pg_writer =
        tokio::spawn(async move { write_tracker(&tracker_url, TENANTS, seed, writes).await });
    for _ in 0..5 {
        let mut capture = spawn_capture(&config, None);
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        capture.kill().expect("SIGKILL");
        capture.wait().expect("reap");
    }
    sqlite_writer.join().expect("sqlite writer");
    pg_writer.await.expect("pg writer");
    let config_for_run = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        lifeboat_ok(&config_for_run, &["capture", "--until-caught-up"]);
        let mut args = verify_args(sites());
        args.push("--json".into());
        lifeboat_ok(&config_for_run, &as_strs(&args))
    })
    .await
    .expect("recovery");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["ok"], true, "seed {seed}: {out}");
    vault_checks::assert_no_duplicates(&config, "tracker").await;
    vault_checks::assert_no_duplicates(&config, "identity").await;
    drop_slots(&tracker).await;
}

/// A throwaway PostgreSQL cluster of the test's own, so that restarting it disturbs no
/// other test.
struct Cluster {
    data: std::path::PathBuf,
    port: u16,
}

impl Cluster {
    fn start(port: u16) -> Cluster {
        let bin = "/usr/lib/postgresql/15/bin";
        let data = std::path::PathBuf::from(format!(
            "/tmp/lifeboat-restart-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("mkdir");
        let run = |cmd: String| {
            let status = std::process::Command::new("su")
                .args(["postgres", "-c", &cmd])
                .status()
                .expect("su postgres");
            assert!(status.success(), "{cmd}");
        };
        std::process::Command::new("chown")
            .args(["-R", "postgres", &data.display().to_string()])
            .status()
            .expect("chown");
        run(format!(
            "{bin}/initdb -D {}/data -A trust -U postgres >/dev/null",
            data.display()
        ));
        std::fs::write(
            data.join("data/postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nwal_level = logical\n\
                 unix_socket_directories = '{}'\n",
                data.display()
            ),
        )
        .expect("conf");
        let cluster = Cluster { data, port };
        cluster.ctl("start");
        cluster
    }

    fn ctl(&self, action: &str) {
        let cmd = format!(
            "/usr/lib/postgresql/15/bin/pg_ctl -D {0}/data -l {0}/log -w -m fast {action}",
            self.data.display()
        );
        let status = std::process::Command::new("su")
            .args(["postgres", "-c", &cmd])
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {action}");
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("su")
            .args([
                "postgres",
                "-c",
                &format!(
                    "/usr/lib/postgresql/15/bin/pg_ctl -D {}/data -m immediate stop",
                    self.data.display()
                ),
            ])
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_during_capture_loses_nothing() {
    let cluster = Cluster::start(54391);
    pg_connect(&cluster.url("postgres"))
        .await
        .batch_execute("CREATE DATABASE tracker")
        .await
        .expect("create");
    let tracker = cluster.url("tracker");
    setup_tracker(&tracker, TENANTS).await;
    let work = Workdir::new();
    let config = work.init_config(&config_text(&work.vault_url(), Some(&tracker), None, None));
    let mut capture = spawn_capture(&config, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_tracker(&tracker, TENANTS, 1, Duration::from_secs(1)).await;
    cluster.ctl("restart");
    write_tracker(&tracker, TENANTS, 2, Duration::from_secs(2)).await;
    // The same capture process resumes after the restart and catches up by itself.
    let args = verify_args(sites());
    let mut last = String::new();
    for _ in 0..60 {
        assert!(
            capture.try_wait().expect("poll").is_none(),
            "capture exited after the restart"
        );
        let output = lifeboat(&config, &as_strs(&args));
        last = stdout(&output);
        if output.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.starts_with("ok:"), "{last}");
    terminate(&mut capture);
    vault_checks::assert_no_duplicates(&config, "tracker").await;
}

#[test]
fn bases_of_a_first_snapshot_that_never_finished_are_not_history() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    crash_at(&config, "capture.after-base@3");
    // Tenant 1 disappears before the first snapshot is taken again.
    let conn = rusqlite::Connection::open(&identity).expect("open");
    conn.execute_batch("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE site_id = 1); DELETE FROM memberships WHERE site_id = 1; DELETE FROM users WHERE site_id = 1;")
        .expect("delete tenant 1");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let listing: serde_json::Value =
        serde_json::from_str(&lifeboat_ok(&config, &["tenants", "--json"])).expect("json");
    let tenants: Vec<&str> = listing
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["tenant"].as_str())
        .collect();
    assert_eq!(tenants, vec!["2", "3"]);
    let out = lifeboat_ok(&config, &["verify", "--tenant", "2", "--tenant", "3"]);
    assert!(out.starts_with("ok:"), "{out}");
}
