//! Bad input: a one-line error that names the problem, a non-zero exit, nothing written.

use crate::common::*;
use crate::fixtures::*;

fn assert_refused(output: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
}

fn sqlite_tables(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE name LIKE '_lifeboat%'")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn malformed_config_is_refused_with_its_line() {
    let work = Workdir::new();
    let config = work.write_config("[vault]\nurl = \"file:///tmp/x\"\n[sources.a]\nurl = 5\n");
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(&output, 2, "line 4");
    let missing = lifeboat(&work.path("nope.toml"), &["tenants"]);
    assert_refused(&missing, 2, "cannot read config file");
}

#[test]
fn undeclared_table_and_unresolved_tenant_via_are_named_and_nothing_is_written() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 2);
    // sessions has no site_id and no declaration.
    let text = config_text(&work.vault_url(), None, None, Some(&identity)).replace(
        "[sources.identity.tables.sessions]\ntenant_via = \"user_id -> users.id\"\n",
        "",
    );
    let config = work.write_config(&text);
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        "table identity.sessions has no column \"site_id\"",
    );
    assert!(!work.path("vault").exists(), "vault created");
    assert!(sqlite_tables(&identity).is_empty(), "triggers installed");

    let text = config_text(&work.vault_url(), None, None, Some(&identity))
        .replace("user_id -> users.id", "user_id -> accounts.id");
    let config = work.write_config(&text);
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(
        &output,
        2,
        "does not resolve: identity has no table accounts",
    );
    assert!(!work.path("vault").exists(), "vault created");
    assert!(sqlite_tables(&identity).is_empty(), "triggers installed");
}

#[tokio::test]
async fn postgres_without_logical_wal_is_refused_naming_the_setting() {
    let url = std::env::var("LIFEBOAT_TEST_PG_REPLICA_URL")
        .expect("LIFEBOAT_TEST_PG_REPLICA_URL is not set: run the tests with scripts/test");
    let name = unique("nowal");
    pg_connect(&url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create");
    let (server, _) = url.rsplit_once('/').expect("url");
    let db = format!("{server}/{name}");
    setup_tracker(&db, 2).await;
    let work = Workdir::new();
    let config = work.write_config(&config_text(&work.vault_url(), Some(&db), None, None));
    let output =
        tokio::task::spawn_blocking(move || lifeboat(&config, &["capture", "--until-caught-up"]))
            .await
            .expect("run");
    assert_refused(
        &output,
        1,
        "wal_level = replica; capture needs wal_level = logical",
    );
    assert!(!work.path("vault").exists(), "vault created");
    let publications: i64 = pg_connect(&db)
        .await
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(publications, 0, "capture changed the server");
}

#[test]
fn unreachable_vault_is_refused_and_the_source_is_untouched() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 2);
    // A vault directory below a regular file cannot exist.
    std::fs::write(work.path("file"), b"x").expect("file");
    let vault = format!("file://{}/vault", work.path("file").display());
    let config = work.write_config(&config_text(&vault, None, None, Some(&identity)));
    let output = lifeboat(&config, &["capture", "--until-caught-up"]);
    assert_refused(&output, 1, "is unreachable");
    assert!(sqlite_tables(&identity).is_empty(), "triggers installed");

    let config = work.write_config(
        &config_text("s3://lifeboat-test/nowhere", None, None, Some(&identity))
            .replace("[capture]", "[capture]\n")
            .replace(
                "url = \"s3://lifeboat-test/nowhere\"",
                "url = \"s3://lifeboat-test/nowhere\"\nendpoint = \"http://127.0.0.1:1\"",
            ),
    );
    let output = lifeboat(&config, &["tenants"]);
    assert_refused(&output, 1, "is unreachable");
}

#[test]
fn unknown_tenants_times_outside_the_window_and_corrupt_objects_are_refused() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 3);
    let config = work.write_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    // Before any capture there is no vault to read.
    assert_refused(&lifeboat(&config, &["tenants"]), 1, "no vault at");
    lifeboat_ok(&config, &["init"]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    assert_refused(
        &lifeboat(&config, &["verify", "--tenant", "999"]),
        2,
        "unknown tenant 999",
    );
    assert_refused(
        &lifeboat(&config, &["history", "--tenant", "999"]),
        2,
        "unknown tenant 999",
    );
    assert_refused(
        &lifeboat(
            &config,
            &["verify", "--tenant", "1", "--at", "2001-01-01T00:00:00Z"],
        ),
        2,
        "before the restorable window of source identity",
    );
    assert_refused(
        &lifeboat(&config, &["verify", "--tenant", "1", "--at", "yesterday"]),
        2,
        "not RFC 3339",
    );
    assert_refused(
        &lifeboat(&config, &["verify", "--tenant", "1", "--source", "nope"]),
        2,
        "unknown source \"nope\"",
    );

    // Flip one byte of a base: every read of it fails and names it.
    let bases = work.path("vault/sources/identity/bases/1");
    let entry = std::fs::read_dir(&bases)
        .expect("bases")
        .next()
        .expect("a base")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&entry).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, bytes).expect("write");
    let name = entry
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let output = lifeboat(&config, &["verify", "--tenant", "1"]);
    assert_refused(&output, 1, "is corrupt: checksum");
    assert!(stderr(&output).contains(&name), "{}", stderr(&output));
}

#[test]
fn settings_that_would_switch_the_guard_off_are_refused_and_change_nothing() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, 2);
    let good = config_text(&work.vault_url(), None, None, Some(&identity));
    let control = work.path("lifeboat-control.db");
    for (extra, needle) in [
        (
            "[guard]\napprovals_required = 0\n",
            "[guard] approvals_required = 0 would let a plan be applied",
        ),
        (
            "[server]\ntoken = \"letmein\"\n",
            "[server] token is 7 characters: use at least 32",
        ),
        (
            "[campaigns]\nlease_seconds = 9223372036854775807\n",
            "lease_seconds = 9223372036854775807: at most 86400",
        ),
        (
            "[campaigns]\nauto_accept_minutes = 18446744073709551615\n",
            "auto_accept_minutes = 18446744073709551615: at most 525600",
        ),
        (
            "[notify.smtp]\nurl = \"imap://mail.example.com\"\nfrom = \"a@example.com\"\n",
            "[notify.smtp] url = \"imap://mail.example.com\": unknown scheme \"imap\"",
        ),
        (
            "[notify.smtp]\nurl = \"smtps://mail.example.com?tls=none\"\nfrom = \"a@example.com\"\n",
            "smtps:// is always TLS",
        ),
        (
            "[notify.smtp]\nurl = \"smtp://u:p@mail.example.com\"\nfrom = \"a@example.com\"\n",
            "credentials go in username and password_file",
        ),
        (
            "[[notify.webhooks]]\nurl = \"ftp://hooks.example.com\"\nsecret_file = \"/s\"\n",
            "[[notify.webhooks]] url = \"ftp://hooks.example.com\": use an http:// or https:// URL",
        ),
        (
            "[notify]\nmax_attempts = 0\n",
            "[notify] max_attempts = 0: use 1 to 100",
        ),
        (
            "[notify]\nclaim_seconds = 1\n",
            "[notify] claim_seconds = 1: use 10 to 86400",
        ),
    ] {
        let config = work.write_config(&format!("{good}\n{extra}"));
        assert_refused(&lifeboat(&config, &["audit"]), 2, needle);
        assert_refused(
            &lifeboat(&config, &["capture", "--until-caught-up"]),
            2,
            needle,
        );
        assert!(!control.exists(), "{extra}: control store made");
        assert!(!work.path("vault").exists(), "{extra}: vault made");
    }

    // A short token from the environment: refused before anything listens.
    let config = work.write_config(&good);
    let output = lifeboat_command(&config, &["serve", "--listen", "127.0.0.1:0"])
        .env("LIFEBOAT_TOKEN", "0123456789")
        .output()
        .expect("serve");
    assert_refused(
        &output,
        2,
        "LIFEBOAT_TOKEN is 10 characters: use at least 32",
    );
    assert!(!control.exists(), "control store made");

    // An empty --as key.
    lifeboat_ok(&config, &["init"]);
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let before = std::fs::read(&identity).expect("db");
    assert_refused(
        &lifeboat(
            &config,
            &[
                "restore",
                "--tenant",
                "1",
                "--at",
                "2001-01-01T00:00:00Z",
                "--as",
                " ",
            ],
        ),
        2,
        "--as is empty",
    );
    assert_eq!(
        std::fs::read(&identity).expect("db"),
        before,
        "nothing written"
    );
}

/// `capture` against a URL where no vault is (a mistyped `[vault] url`) refuses, says to run
/// `lifeboat init`, creates nothing there and leaves the source's replication slot alone:
/// the real vault resumes. `init` is refused where a vault already is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_without_a_vault_refuses_and_the_slot_survives() {
    let work = Workdir::new();
    let db = create_database("novault").await;
    setup_tracker(&db, 2).await;
    let config = work.init_config(&config_text(&work.vault_url(), Some(&db), None, None));
    let run = |config: &std::path::Path, args: &[&str]| {
        let (config, args) = (
            config.to_path_buf(),
            args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || lifeboat(&config, &as_strs(&args)))
    };
    let output = run(&config, &["capture", "--until-caught-up"])
        .await
        .expect("join");
    assert!(output.status.success(), "{}", stderr(&output));
    let slots = || async {
        let rows = pg_connect(&db)
            .await
            .query(
                "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()",
                &[],
            )
            .await
            .expect("slots");
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let before = slots().await;
    assert_eq!(before.len(), 1, "{before:?}");

    // A mistyped vault URL: refused, nothing created, the slot kept.
    let typo = format!("file://{}", work.path("vualt").display());
    let mistyped = work.write_config(&config_text(&typo, Some(&db), None, None));
    let output = run(&mistyped, &["capture", "--until-caught-up"])
        .await
        .expect("join");
    assert_refused(&output, 1, "run `lifeboat init`");
    assert!(!work.path("vualt").exists(), "a vault was created");
    assert_eq!(slots().await, before, "the slot changed");

    // The real vault resumes where it was; a second `init` there is refused.
    let config = work.write_config(&config_text(&work.vault_url(), Some(&db), None, None));
    let output = run(&config, &["init"]).await.expect("join");
    assert_refused(&output, 2, "a vault already exists");
    pg_connect(&db)
        .await
        .batch_execute(&format!(
            "UPDATE issues SET title = 'later' WHERE site_id = {}",
            site_id(1)
        ))
        .await
        .expect("write");
    let output = run(&config, &["capture", "--until-caught-up"])
        .await
        .expect("join");
    assert!(output.status.success(), "{}", stderr(&output));
    let key = site_id(1).to_string();
    let output = run(&config, &["verify", "--tenant", &key])
        .await
        .expect("join");
    assert!(output.status.success(), "{}", stdout(&output));
    drop_slots(&db).await;
}
