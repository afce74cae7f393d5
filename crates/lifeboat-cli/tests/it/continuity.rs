//! Continuity on every read: a segment missing from the middle of a source's history, one
//! stored twice, or one cut short is refused by verify, history and restore, each naming
//! it, and a refused restore writes nothing.

use std::path::{Path, PathBuf};
use std::process::Output;

use lifeboat_core::state::SourceHistory;

use crate::common::*;
use crate::fixtures::*;
use crate::vault_checks;

async fn run(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
        .await
        .expect("join")
}

async fn run_ok(config: &Path, args: &[&str]) -> String {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || lifeboat_ok(&config, &as_strs(&args)))
        .await
        .expect("join")
}

/// Exit 1 with one error line that holds every needle.
fn assert_broken(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        stdout(output)
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err:?}");
    for needle in needles {
        assert!(errors[0].contains(needle), "{err:?} lacks {needle:?}");
    }
}

async fn issue_titles(url: &str, site: i64) -> Vec<String> {
    pg_connect(url)
        .await
        .query(
            &format!("SELECT title FROM issues WHERE site_id = {site} ORDER BY id"),
            &[],
        )
        .await
        .expect("titles")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The file name of a segment, for matching messages.
fn file_of(name: &str) -> &str {
    name.rsplit('/').next().expect("file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_history_is_refused_by_every_reader() {
    let work = Workdir::new();
    let tracker = create_database("continuity").await;
    let identity = work.path("identity.db");
    setup_tracker(&tracker, 4).await;
    setup_identity(&identity, 4);
    let config = work.init_config(&config_text(
        &work.vault_url(),
        Some(&tracker),
        None,
        Some(&identity),
    ));
    run_ok(&config, &["capture", "--until-caught-up"]).await;
    let site = site_id(2);
    let client = pg_connect(&tracker).await;
    // Four rounds of changes, each captured on its own: at least four segments a source.
    for round in 0..4 {
        client
            .batch_execute(&format!(
                "UPDATE issues SET title = 'round {round}' WHERE site_id = {site}"
            ))
            .await
            .expect("update tracker");
        rusqlite::Connection::open(&identity)
            .expect("open identity")
            .execute(
                "UPDATE users SET email = ?1 WHERE site_id = ?2",
                rusqlite::params![format!("round{round}@example.net"), site],
            )
            .expect("update identity");
        run_ok(&config, &["capture", "--until-caught-up"]).await;
    }
    let key = site.to_string();
    run_ok(&config, &["verify", "--tenant", &key]).await;
    let titles = issue_titles(&tracker, site).await;
    let now: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .expect("now")
        .get(0);

    for source in ["tracker", "identity"] {
        let vault = vault_checks::open(&config).await;
        let history = SourceHistory::load(&vault, source).await.expect("history");
        assert!(history.segments.len() >= 4, "{:?}", history.segments);
        let (before, middle, after) = (
            history.segments[0].clone(),
            history.segments[1].clone(),
            history.segments[2].clone(),
        );
        let path = |name: &str| -> PathBuf { work.path("vault").join(name) };
        let aside = work.path("aside.seg");
        let restore_args = [
            "restore", "--tenant", &key, "--source", source, "--at", &now,
        ];

        // A segment removed from the middle: a gap between its neighbours.
        std::fs::rename(path(&middle.name), &aside).expect("move aside");
        let gap = [
            &format!("source {source}") as &str,
            "missing",
            file_of(&before.name),
            file_of(&after.name),
        ];
        for args in [
            &["verify", "--tenant", &key, "--source", source][..],
            &["history", "--tenant", &key, "--source", source],
            &restore_args,
        ] {
            assert_broken(&run(&config, args).await, &gap);
        }
        assert_eq!(issue_titles(&tracker, site).await, titles, "written");

        // The same segment stored twice (another copy of its range, same generation).
        std::fs::rename(&aside, path(&middle.name)).expect("move back");
        let mut copy = vault.read_segment(&middle.name).await.expect("read");
        copy.transactions.last_mut().expect("tx").changes.clear();
        let copy_name = vault.put_segment(&copy).await.expect("put copy");
        let duplicate = [
            &format!("source {source}") as &str,
            "duplicate",
            file_of(&middle.name),
            file_of(&copy_name),
        ];
        for args in [
            &["verify", "--tenant", &key, "--source", source][..],
            &["history", "--tenant", &key, "--source", source],
            &restore_args,
        ] {
            assert_broken(&run(&config, args).await, &duplicate);
        }
        assert_eq!(issue_titles(&tracker, site).await, titles, "written");
        std::fs::remove_file(path(&copy_name)).expect("remove copy");

        // A segment cut short: its chunks run past the end.
        let bytes = std::fs::read(path(&middle.name)).expect("read segment");
        std::fs::write(path(&middle.name), &bytes[..bytes.len() - 7]).expect("truncate");
        for args in [
            &["verify", "--tenant", &key, "--source", source][..],
            &["history", "--tenant", &key, "--source", source],
            &restore_args,
        ] {
            assert_broken(&run(&config, args).await, &[file_of(&middle.name)]);
        }
        assert_eq!(issue_titles(&tracker, site).await, titles, "written");
        std::fs::write(path(&middle.name), &bytes).expect("mend");
    }
    // Whole again: every reader accepts it.
    run_ok(&config, &["verify", "--tenant", &key]).await;
    run_ok(&config, &["history", "--tenant", &key]).await;
}
