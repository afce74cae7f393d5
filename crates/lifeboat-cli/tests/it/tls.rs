//! PostgreSQL over TLS: a cluster that accepts only TLS connections with a client
//! certificate (scripts/test-services.sh makes its CA and certificates, for the name
//! localhost only). Capture (its replication stream too), restore, `--into-url` and the
//! control store work with `sslmode=verify-full`; a wrong CA, a wrong host name and a plain
//! connection are refused naming the cause; no password is ever printed.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

struct Tls {
    port: String,
    dir: PathBuf,
}

fn tls() -> Tls {
    Tls {
        port: std::env::var("LIFEBOAT_TEST_PG_TLS_PORT").expect(
            "LIFEBOAT_TEST_PG_TLS_PORT is not set: run the tests with scripts/test, which \
             starts the TLS-only PostgreSQL cluster",
        ),
        dir: PathBuf::from(
            std::env::var("LIFEBOAT_TEST_TLS_DIR").expect("LIFEBOAT_TEST_TLS_DIR is not set"),
        ),
    }
}

impl Tls {
    /// A URL of `database` on the TLS cluster, at `host`, with `sslmode` and the CA `ca`
    /// (a file of the test TLS directory); the client certificate always.
    fn url(&self, host: &str, database: &str, sslmode: &str, ca: &str) -> String {
        let d = self.dir.display();
        format!(
            "postgres://postgres:s3cret-word@{host}:{}/{database}?sslmode={sslmode}\
             &sslrootcert={d}/{ca}&sslcert={d}/client.pem&sslkey={d}/client.key",
            self.port
        )
    }

    fn psql(&self, database: &str, sql: &str) {
        let url = self.url("localhost", database, "verify-full", "ca.pem");
        let output = Command::new("psql")
            .arg(&url)
            .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn capture_restore_and_the_control_store_work_over_verified_tls() {
    let t = tls();
    let db = unique("tls");
    let scratch = unique("tls_into");
    let control = unique("tls_control");
    for name in [&db, &scratch, &control] {
        t.psql("postgres", &format!("CREATE DATABASE {name}"));
    }
    let schema = "CREATE TABLE sites (id bigint PRIMARY KEY, url text NOT NULL);
         CREATE TABLE issues (id bigint PRIMARY KEY,
             site_id bigint NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title text);";
    t.psql(&db, schema);
    t.psql(&scratch, schema);
    t.psql(
        &db,
        "INSERT INTO sites SELECT s, 'https://site' || s || '.example.net' FROM generate_series(1, 5) s;
         INSERT INTO issues SELECT s * 100 + i, s, 'issue ' || i
             FROM generate_series(1, 5) s, generate_series(1, 4) i;",
    );
    let work = Workdir::new();
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[control]
url = "{control}"
[sources.tracker]
url = "{source}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
"#,
        vault = work.vault_url(),
        control = t.url("localhost", &control, "verify-full", "ca.pem"),
        source = t.url("localhost", &db, "verify-full", "ca.pem"),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let before = lifeboat_core_now();
    t.psql(&db, "DELETE FROM sites WHERE id = 3");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);

    let out = lifeboat_ok(&config, &["restore", "--tenant", "3", "--at", &before]);
    assert!(out.contains("every tenant verified"), "{out}");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    lifeboat_ok(&config, &["verify", "--tenant", "3", "--tenant", "4"]);

    // Into another database over TLS too.
    let into = t.url("localhost", &scratch, "verify-full", "ca.pem");
    let out = lifeboat_ok(
        &config,
        &[
            "restore",
            "--tenant",
            "2",
            "--at",
            &before,
            "--into-url",
            &into,
            "--source",
            "tracker",
        ],
    );
    assert!(out.contains("every tenant verified"), "{out}");

    // The control store on the TLS cluster.
    let id = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Deleted sites",
            "--message",
            "Restoring.",
        ],
    );
    let listed = lifeboat_ok(&config, &["incident", "list"]);
    assert!(listed.contains(id.trim()), "{listed}");
    for output in [&out, &listed] {
        assert!(
            !output.contains("s3cret"),
            "a password was printed: {output}"
        );
    }
    drop_tls_slots(&t, &db);
}

/// Wrong CA, wrong host name, no TLS: each refused, naming why, and no password shown.
#[test]
fn a_wrong_ca_a_wrong_host_and_plain_text_are_refused_naming_the_cause() {
    let t = tls();
    let db = unique("tls_refused");
    t.psql("postgres", &format!("CREATE DATABASE {db}"));
    t.psql(&db, "CREATE TABLE sites (id bigint PRIMARY KEY)");
    let work = Workdir::new();
    let try_url = |url: &str| {
        let config = work.write_config(&format!(
            "[vault]\nurl = \"{}\"\n[sources.tracker]\nurl = \"{url}\"\n\
             [sources.tracker.tables.sites]\ntenant_column = \"id\"\n",
            work.vault_url()
        ));
        let output = lifeboat(&config, &["capture", "--until-caught-up"]);
        assert_ne!(output.status.code(), Some(0), "{url} was accepted");
        let err = stderr(&output);
        assert!(!err.contains("s3cret"), "a password was printed: {err}");
        assert!(
            !work.path("vault").exists(),
            "a refused source created the vault"
        );
        err
    };
    let err = try_url(&t.url("localhost", &db, "verify-full", "other-ca.pem"));
    assert!(
        err.contains("not signed by the CA in sslrootcert"),
        "wrong CA: {err}"
    );
    let err = try_url(&t.url("127.0.0.1", &db, "verify-full", "ca.pem"));
    assert!(
        err.contains("not valid for the host name 127.0.0.1"),
        "wrong host: {err}"
    );
    let err = try_url(&t.url("localhost", &db, "disable", "ca.pem"));
    assert!(err.contains("no encryption"), "plain text: {err}");
    let err = try_url(&t.url("localhost", &db, "verify-full", "missing.pem"));
    assert!(err.contains("sslrootcert"), "missing CA file: {err}");
    // verify-ca checks the chain against the CA.
    let config = work.init_config(&format!(
        "[vault]\nurl = \"{}\"\n[sources.tracker]\nurl = \"{}\"\n\
         [sources.tracker.tables.sites]\ntenant_column = \"id\"\n",
        work.vault_url(),
        t.url("localhost", &db, "verify-ca", "ca.pem")
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    drop_tls_slots(&t, &db);
}

/// The time now, as `--at` takes it, a few milliseconds before the next change.
fn lifeboat_core_now() -> String {
    let now = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
    std::thread::sleep(std::time::Duration::from_millis(20));
    now
}

fn drop_tls_slots(t: &Tls, db: &str) {
    t.psql(
        db,
        "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
         WHERE database = current_database() AND NOT active",
    );
}
