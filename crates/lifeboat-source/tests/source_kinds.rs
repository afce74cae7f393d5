//! The source contract (see `Source` in src/source.rs), written once and run against every
//! kind: a SQLite file in a temporary directory and a fresh database on the PostgreSQL test
//! cluster that scripts/test-services.sh starts. Without that cluster's environment the
//! PostgreSQL half fails (it never skips): run it through `scripts/test`, or source
//! `.lifeboat-test/env.sh` first.
//!
//! Every case works through `LiveSource` on the same schema and rows: tenants 1 and 2, a
//! tenant table (`sites`), tables with the tenant column (`projects`), a child reached
//! through `tenant_via` (`tasks`), and global tables (`plans`, `pins`). Each fixture is
//! captured once into a local vault first: SQLite measures operations and counts positions
//! through capture's changelog, and the write cases restore the captured state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use lifeboat_core::config::{CaptureConfig, SourceConfig, TableConfig};
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{Dialect, TenantKey, Value};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::tenancy::Tenancy;
use lifeboat_core::vault::{LocalStore, Vault};
use lifeboat_core::ErrorKind;
use lifeboat_source::live::LiveSource;
use lifeboat_source::restore::{TenantRestore, WriteMode, WriteReport};
use lifeboat_source::Stop;

/// The source's name in the configuration and the vault.
const NAME: &str = "kinds";

/// Valid for SQLite and PostgreSQL alike.
const SCHEMA: &str = "
CREATE TABLE sites (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE projects (id BIGINT PRIMARY KEY, site_id BIGINT NOT NULL REFERENCES sites(id),
    title TEXT NOT NULL);
CREATE TABLE tasks (id BIGINT PRIMARY KEY, project_id BIGINT NOT NULL REFERENCES projects(id),
    body TEXT);
CREATE TABLE plans (code TEXT PRIMARY KEY, price BIGINT NOT NULL);
CREATE TABLE pins (id BIGINT PRIMARY KEY, project_id BIGINT REFERENCES projects(id));
INSERT INTO sites VALUES (1, 'one'), (2, 'two');
INSERT INTO projects VALUES (10, 1, 'p10'), (11, 1, 'p11'), (20, 2, 'p20');
INSERT INTO tasks VALUES (100, 10, 'write'), (101, 11, NULL), (200, 20, 'read');
INSERT INTO plans VALUES ('free', 0), ('pro', 10);
";

/// The tenant tables, by name, with their columns.
const TENANT_TABLES: [(&str, &[&str]); 3] = [
    ("projects", &["id", "site_id", "title"]),
    ("sites", &["id", "name"]),
    ("tasks", &["id", "project_id", "body"]),
];

fn source_config(url: String) -> SourceConfig {
    let table = |column: Option<&str>, via: Option<&str>, global: bool| TableConfig {
        tenant_column: column.map(str::to_string),
        tenant_via: via.map(str::to_string),
        global,
    };
    SourceConfig {
        url,
        tenant_column: Some("site_id".to_string()),
        schema: None,
        password_file: None,
        tables: BTreeMap::from([
            ("sites".to_string(), table(Some("id"), None, false)),
            (
                "tasks".to_string(),
                table(None, Some("project_id -> projects.id"), false),
            ),
            ("plans".to_string(), table(None, None, true)),
            ("pins".to_string(), table(None, None, true)),
        ]),
    }
}

// --- the kinds under test -----------------------------------------------------------------

/// The database under test, reached directly (not through Lifeboat) to change and read it.
enum Direct {
    Sqlite(PathBuf),
    Postgres {
        client: tokio_postgres::Client,
        /// For cleaning up: the cluster's URL and the database's name.
        admin_url: String,
        database: String,
    },
}

/// One database of one kind, its configuration, and the vault it was captured into.
struct Fixture {
    dialect: Dialect,
    config: SourceConfig,
    vault: Vault,
    direct: Direct,
    _dir: tempfile::TempDir,
}

/// Rows as text (`Value`'s display form: SQLite's integers and PostgreSQL's text output
/// read alike), as a set per table.
type Rows = BTreeMap<String, BTreeSet<Vec<String>>>;

fn text(value: &Value) -> String {
    value.to_string()
}

impl Fixture {
    async fn new(dialect: Dialect, url: String, direct: Direct, dir: tempfile::TempDir) -> Fixture {
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path().join("vault"))))
            .await
            .expect("open the vault");
        let fixture = Fixture {
            dialect,
            config: source_config(url),
            vault,
            direct,
            _dir: dir,
        };
        fixture.exec(SCHEMA).await;
        let source = LiveSource::open(NAME, &fixture.config, true)
            .await
            .unwrap_or_else(|e| panic!("open for capture: {e}"));
        source
            .capture(
                &fixture.vault,
                CaptureConfig::default(),
                CaptureMetrics::detached(NAME),
                true,
                &Stop::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("capture: {e}"));
        fixture
    }

    async fn open(&self) -> LiveSource {
        LiveSource::open(NAME, &self.config, false)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// Run statements directly, each committed on its own.
    async fn exec(&self, sql: &str) {
        match &self.direct {
            Direct::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Direct::Postgres { client, .. } => client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Every row of every table, read directly.
    async fn all_rows(&self) -> Rows {
        let mut out = Rows::new();
        for table in ["sites", "projects", "tasks", "plans", "pins"] {
            let sql = format!("SELECT * FROM {table}");
            let rows: BTreeSet<Vec<String>> = match &self.direct {
                Direct::Sqlite(path) => {
                    let conn = rusqlite::Connection::open(path).expect("open sqlite");
                    let mut stmt = conn.prepare(&sql).expect("prepare");
                    let columns = stmt.column_count();
                    stmt.query_map([], |r| {
                        (0..columns)
                            .map(|i| {
                                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Null => "NULL".to_string(),
                                    rusqlite::types::Value::Integer(n) => n.to_string(),
                                    rusqlite::types::Value::Text(t) => t,
                                    other => format!("{other:?}"),
                                })
                            })
                            .collect()
                    })
                    .expect("query")
                    .collect::<rusqlite::Result<_>>()
                    .expect("rows")
                }
                Direct::Postgres { client, .. } => client
                    .simple_query(&sql)
                    .await
                    .expect("query")
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).unwrap_or("NULL").to_string())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect(),
            };
            out.insert(table.to_string(), rows);
        }
        out
    }
}

impl Drop for Fixture {
    /// Drop the PostgreSQL database and the replication slot capture made for it (a slot
    /// holds WAL on the shared cluster), also when a case fails.
    fn drop(&mut self) {
        let Direct::Postgres {
            admin_url,
            database,
            ..
        } = &self.direct
        else {
            return;
        };
        let (admin_url, database) = (admin_url.clone(), database.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = pg_connect(&admin_url).await;
                let _ = admin
                    .batch_execute(&format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE database = '{database}' AND NOT active"
                    ))
                    .await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{}.db", unique("kinds")));
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("PRAGMA journal_mode = WAL"))
        .expect("create the sqlite file");
    let url = format!("sqlite://{}", path.display());
    Fixture::new(Dialect::Sqlite, url, Direct::Sqlite(path), dir).await
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn postgres_fixture() -> Fixture {
    let admin_url = match std::env::var("LIFEBOAT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "LIFEBOAT_TEST_PG_URL is not set: the PostgreSQL half of the source suite needs the \
             test cluster. Run `scripts/test`, or `scripts/test-services.sh` and then \
             `source .lifeboat-test/env.sh`"
        ),
    };
    let database = unique("kinds");
    pg_connect(&admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .expect("create database");
    let (server, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    let url = format!("{server}/{database}");
    let client = pg_connect(&url).await;
    let direct = Direct::Postgres {
        client,
        admin_url: admin_url.clone(),
        database,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture::new(Dialect::Postgres, url, direct, dir).await
}

/// One test per case and kind.
macro_rules! suite {
    ($module:ident, $fixture:ident: $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::$fixture().await;
                    super::cases::$case(&fixture).await;
                }
            )*
        }
    };
}

suite!(sqlite, sqlite_fixture:
    opens_and_resolves_the_tenant_map,
    reads_only_the_tenants_rows,
    position_grows_after_a_write,
    capture_passes_the_position_to_capture_also_when_idle,
    write_replaces_one_tenant_and_leaves_the_others,
    writing_the_same_state_twice_is_idempotent,
    a_write_that_breaks_a_foreign_key_changes_nothing,
    a_write_that_breaks_a_primary_key_changes_nothing,
    trial_and_dry_run_writes_change_nothing,
    steps_are_measured_and_rolled_back_or_committed_as_decided,
    a_failing_step_changes_nothing,
    lookup_finds_ids_with_their_tenant,
    counts_a_tenants_rows,
);

suite!(postgres, postgres_fixture:
    opens_and_resolves_the_tenant_map,
    reads_only_the_tenants_rows,
    position_grows_after_a_write,
    capture_passes_the_position_to_capture_also_when_idle,
    write_replaces_one_tenant_and_leaves_the_others,
    writing_the_same_state_twice_is_idempotent,
    a_write_that_breaks_a_foreign_key_changes_nothing,
    a_write_that_breaks_a_primary_key_changes_nothing,
    trial_and_dry_run_writes_change_nothing,
    steps_are_measured_and_rolled_back_or_committed_as_decided,
    a_failing_step_changes_nothing,
    lookup_finds_ids_with_their_tenant,
    counts_a_tenants_rows,
);

// --- the contract -------------------------------------------------------------------------

mod cases {
    use super::*;

    fn set(rows: &[&[&str]]) -> BTreeSet<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .collect()
    }

    /// The tenant's rows through `LiveSource`, as text.
    async fn tenant_rows(source: &LiveSource, tenant: &str) -> Rows {
        let rows = source
            .tenant_rows(&TenantKey::new(tenant))
            .await
            .unwrap_or_else(|e| panic!("tenant rows of {tenant}: {e}"));
        rows.into_iter()
            .map(|(table, (_, rows))| {
                let rows = rows.iter().map(|r| r.iter().map(text).collect()).collect();
                (table, rows)
            })
            .collect()
    }

    /// Tenant 1 as captured, read directly.
    fn tenant_one_as_captured() -> Rows {
        Rows::from([
            (
                "projects".to_string(),
                set(&[&["10", "1", "p10"], &["11", "1", "p11"]]),
            ),
            ("sites".to_string(), set(&[&["1", "one"]])),
            (
                "tasks".to_string(),
                set(&[&["100", "10", "write"], &["101", "11", "NULL"]]),
            ),
        ])
    }

    /// Write `tenant`'s state as the vault holds it (the captured one) into `source`.
    async fn write_captured(
        fixture: &Fixture,
        source: &mut LiveSource,
        tenant: &str,
        mode: WriteMode,
    ) -> lifeboat_core::Result<WriteReport> {
        let key = TenantKey::new(tenant);
        let keys = BTreeSet::from([key.clone()]);
        let history = SourceHistory::load_for(&fixture.vault, NAME, &keys)
            .await
            .expect("history");
        let position = history.latest_position().expect("a captured history");
        let stream = history
            .streams_at(&fixture.vault, &keys, position)
            .await
            .expect("streams")
            .remove(&key)
            .expect("the tenant's stream");
        let catalog = source.restore_catalog().await.expect("catalog");
        let restore = TenantRestore::prepare(
            &source.tenancy,
            &catalog,
            stream,
            &source.live_columns(),
            None,
        )
        .expect("prepare");
        source
            .write_tenant(&catalog, &key, restore, mode)
            .await
            .map(|(report, _)| report)
    }

    pub async fn opens_and_resolves_the_tenant_map(fixture: &Fixture) {
        let source = fixture.open().await;
        assert_eq!(source.name, NAME);
        assert_eq!(source.dialect(), fixture.dialect);
        let tenant_tables: Vec<&str> = source
            .tenancy
            .tenant_tables()
            .map(|t| t.schema.name.as_str())
            .collect();
        assert_eq!(tenant_tables, ["projects", "sites", "tasks"]);
        let tenancy = |table: &str| {
            source
                .tenancy
                .table(table)
                .unwrap_or_else(|| panic!("{table} in the tenant map"))
                .tenancy
                .clone()
        };
        assert_eq!(tenancy("sites"), Tenancy::Column(0));
        assert_eq!(tenancy("projects"), Tenancy::Column(1));
        assert_eq!(
            tenancy("tasks"),
            Tenancy::Via {
                column: 1,
                parent: "projects".to_string(),
                parent_column: "id".to_string(),
            }
        );
        assert_eq!(tenancy("plans"), Tenancy::Global);
        assert_eq!(tenancy("pins"), Tenancy::Global);
        let columns: BTreeMap<String, Vec<String>> = TENANT_TABLES
            .iter()
            .map(|(t, c)| (t.to_string(), c.iter().map(|c| c.to_string()).collect()))
            .collect();
        assert_eq!(source.live_columns(), columns);
        assert_eq!(
            source
                .tenancy
                .table("projects")
                .map(|t| t.schema.key.clone()),
            Some(vec![0])
        );
    }

    pub async fn reads_only_the_tenants_rows(fixture: &Fixture) {
        let source = fixture.open().await;
        assert_eq!(tenant_rows(&source, "1").await, tenant_one_as_captured());
        assert_eq!(
            tenant_rows(&source, "2").await,
            Rows::from([
                ("projects".to_string(), set(&[&["20", "2", "p20"]])),
                ("sites".to_string(), set(&[&["2", "two"]])),
                ("tasks".to_string(), set(&[&["200", "20", "read"]])),
            ])
        );
        // A tenant without rows has every tenant table, empty.
        let none = tenant_rows(&source, "3").await;
        assert_eq!(
            none.keys().collect::<Vec<_>>(),
            ["projects", "sites", "tasks"]
        );
        assert!(none.values().all(BTreeSet::is_empty), "{none:?}");
        // Streaming: table by table, each row with its table's columns.
        let mut seen: Vec<(String, usize)> = Vec::new();
        source
            .for_each_tenant_row(&TenantKey::new("1"), |table, columns, row| {
                assert_eq!(columns.len(), row.len(), "{table}");
                match seen.last_mut() {
                    Some((last, n)) if last == table => *n += 1,
                    _ => seen.push((table.to_string(), 1)),
                }
            })
            .await
            .expect("stream the rows");
        assert_eq!(
            seen,
            [
                ("projects".to_string(), 2),
                ("sites".to_string(), 1),
                ("tasks".to_string(), 2)
            ]
        );
    }

    pub async fn position_grows_after_a_write(fixture: &Fixture) {
        let source = fixture.open().await;
        let before = source.position().await.expect("position");
        let again = source.position().await.expect("position");
        assert!(again >= before, "{again:?} < {before:?}");
        fixture
            .exec("INSERT INTO tasks VALUES (201, 20, 'new')")
            .await;
        let after = source.position().await.expect("position");
        assert!(after > before, "{after:?} is not past {before:?}");
        fixture.exec("DELETE FROM tasks WHERE id = 201").await;
        let later = source.position().await.expect("position");
        assert!(later > after, "{later:?} is not past {after:?}");
    }

    /// The vault's head after a capture that caught up.
    async fn capture_head(fixture: &Fixture) -> u64 {
        LiveSource::open(NAME, &fixture.config, true)
            .await
            .unwrap_or_else(|e| panic!("open for capture: {e}"))
            .capture(
                &fixture.vault,
                CaptureConfig::default(),
                CaptureMetrics::detached(NAME),
                true,
                &Stop::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("capture: {e}"));
        SourceHistory::load(&fixture.vault, NAME)
            .await
            .expect("history")
            .latest_position()
            .expect("a head")
    }

    pub async fn capture_passes_the_position_to_capture_also_when_idle(fixture: &Fixture) {
        let source = fixture.open().await;
        let before = source.position().await.expect("position");
        fixture
            .exec("INSERT INTO tasks VALUES (201, 20, 'new')")
            .await;
        let mark = source.position_to_capture().await.expect("mark");
        assert!(mark > before, "{mark:?} is not past {before:?}");
        let head = capture_head(fixture).await;
        assert!(head >= mark.get(), "head {head} below {mark:?}");
        // Nothing committed since: the head still reaches a new mark.
        let idle = source.position_to_capture().await.expect("mark");
        assert!(idle.get() >= head, "{idle:?} below the head {head}");
        let head = capture_head(fixture).await;
        assert!(head >= idle.get(), "idle: head {head} below {idle:?}");
    }

    pub async fn write_replaces_one_tenant_and_leaves_the_others(fixture: &Fixture) {
        let mut source = fixture.open().await;
        fixture
            .exec(
                "DELETE FROM tasks WHERE id = 100;
                 UPDATE projects SET title = 'renamed' WHERE id = 11;
                 INSERT INTO projects VALUES (12, 1, 'p12');
                 INSERT INTO tasks VALUES (102, 12, 'later');
                 UPDATE tasks SET body = 'changed' WHERE id = 200;
                 UPDATE plans SET price = 11 WHERE code = 'pro';",
            )
            .await;
        let before = fixture.all_rows().await;
        let report = write_captured(fixture, &mut source, "1", WriteMode::Commit)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        // Written: the captured site, two projects and two tasks; removed: the live site,
        // three projects and two tasks.
        assert_eq!(report.rows_written(), 5, "{report:?}");
        assert_eq!(report.rows_removed(), 6, "{report:?}");
        assert_eq!(tenant_rows(&source, "1").await, tenant_one_as_captured());
        let after = fixture.all_rows().await;
        for (table, rows) in &after {
            let others = |rows: &BTreeSet<Vec<String>>| -> BTreeSet<Vec<String>> {
                rows.iter()
                    .filter(|r| match table.as_str() {
                        "sites" => r[0] != "1",
                        "projects" => r[1] != "1",
                        "tasks" => !["100", "101", "102"].contains(&r[0].as_str()),
                        _ => true,
                    })
                    .cloned()
                    .collect()
            };
            assert_eq!(others(rows), others(&before[table]), "{table}");
        }
        assert!(after["tasks"].contains(&vec![
            "200".to_string(),
            "20".to_string(),
            "changed".to_string()
        ]));
        assert!(after["plans"].contains(&vec!["pro".to_string(), "11".to_string()]));
    }

    pub async fn writing_the_same_state_twice_is_idempotent(fixture: &Fixture) {
        let mut source = fixture.open().await;
        fixture
            .exec("UPDATE projects SET title = 'renamed' WHERE id = 10")
            .await;
        let first = write_captured(fixture, &mut source, "1", WriteMode::Commit)
            .await
            .unwrap_or_else(|e| panic!("first write: {e}"));
        let once = fixture.all_rows().await;
        let second = write_captured(fixture, &mut source, "1", WriteMode::Commit)
            .await
            .unwrap_or_else(|e| panic!("second write: {e}"));
        assert_eq!(fixture.all_rows().await, once);
        assert_eq!(first.rows_written(), second.rows_written());
        assert_eq!(second.rows_removed(), second.rows_written());
        assert_eq!(tenant_rows(&source, "1").await, tenant_one_as_captured());
    }

    /// The write itself must fail and leave every row as it was.
    async fn assert_write_fails_and_changes_nothing(fixture: &Fixture, source: &mut LiveSource) {
        let before = fixture.all_rows().await;
        let result = write_captured(fixture, source, "1", WriteMode::Commit).await;
        let error = result.expect_err("the write must fail");
        assert_eq!(error.kind(), ErrorKind::Source, "{error}");
        assert!(
            !error.is_transient(),
            "a violated key is permanent: {error}"
        );
        assert_eq!(fixture.all_rows().await, before);
        // The connection is still usable, and the tenant's rows still read.
        let rows = tenant_rows(source, "1").await;
        assert_eq!(
            rows["sites"],
            before["sites"]
                .iter()
                .filter(|r| r[0] == "1")
                .cloned()
                .collect()
        );
    }

    pub async fn a_write_that_breaks_a_foreign_key_changes_nothing(fixture: &Fixture) {
        let mut source = fixture.open().await;
        // A project added since capture, referenced from a global table: removing it with
        // the tenant's other rows breaks the reference.
        fixture
            .exec(
                "INSERT INTO projects VALUES (12, 1, 'p12');
                 INSERT INTO pins VALUES (1, 12);
                 UPDATE projects SET title = 'renamed' WHERE id = 10;",
            )
            .await;
        assert_write_fails_and_changes_nothing(fixture, &mut source).await;
        // Without the reference, the same write goes through.
        fixture.exec("DELETE FROM pins").await;
        write_captured(fixture, &mut source, "1", WriteMode::Commit)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(tenant_rows(&source, "1").await, tenant_one_as_captured());
    }

    pub async fn a_write_that_breaks_a_primary_key_changes_nothing(fixture: &Fixture) {
        let mut source = fixture.open().await;
        // Tenant 2 took project 10's id since capture: writing tenant 1's project 10 back
        // collides, after tenant 1's rows were already removed in the transaction.
        fixture
            .exec(
                "DELETE FROM tasks WHERE project_id = 10;
                 DELETE FROM projects WHERE id = 10;
                 INSERT INTO projects VALUES (10, 2, 'taken');",
            )
            .await;
        assert_write_fails_and_changes_nothing(fixture, &mut source).await;
    }

    pub async fn trial_and_dry_run_writes_change_nothing(fixture: &Fixture) {
        let mut source = fixture.open().await;
        fixture
            .exec("UPDATE projects SET title = 'renamed' WHERE id = 10")
            .await;
        let before = fixture.all_rows().await;
        for mode in [WriteMode::Trial, WriteMode::DryRun] {
            let report = write_captured(fixture, &mut source, "1", mode)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(report.rows_written(), 5, "{mode:?}: {report:?}");
            assert_eq!(report.rows_removed(), 5, "{mode:?}: {report:?}");
            assert_eq!(fixture.all_rows().await, before, "{mode:?}");
        }
    }

    pub async fn steps_are_measured_and_rolled_back_or_committed_as_decided(fixture: &Fixture) {
        let mut source = fixture.open().await;
        let steps = vec![
            "DELETE FROM tasks WHERE id IN (100, 200)".to_string(),
            "UPDATE projects SET title = 'x' WHERE id = 10".to_string(),
            "INSERT INTO tasks VALUES (103, 11, 'new')".to_string(),
        ];
        let expected: lifeboat_source::guard::Effect = BTreeMap::from([
            (
                "1".to_string(),
                BTreeMap::from([("projects".to_string(), 1), ("tasks".to_string(), 2)]),
            ),
            ("2".to_string(), BTreeMap::from([("tasks".to_string(), 1)])),
        ]);
        let before = fixture.all_rows().await;
        let mut calls = 0;
        let (effect, committed) = source
            .run_steps(&steps, |effect| {
                calls += 1;
                assert_eq!(*effect, expected);
                false
            })
            .await
            .unwrap_or_else(|e| panic!("run steps: {e}"));
        assert_eq!(calls, 1);
        assert!(!committed);
        assert_eq!(effect, expected);
        assert_eq!(fixture.all_rows().await, before, "rolled back");

        let (effect, committed) = source
            .run_steps(&steps, |effect| effect == &expected)
            .await
            .unwrap_or_else(|e| panic!("run steps: {e}"));
        assert!(committed);
        assert_eq!(effect, expected);
        let after = fixture.all_rows().await;
        assert_eq!(
            after["tasks"],
            set(&[&["101", "11", "NULL"], &["103", "11", "new"]])
        );
        assert!(after["projects"].contains(&vec!["10".into(), "1".into(), "x".into()]));
        assert_eq!(after["plans"], before["plans"]);
    }

    pub async fn a_failing_step_changes_nothing(fixture: &Fixture) {
        let mut source = fixture.open().await;
        let steps = vec![
            "DELETE FROM tasks WHERE id = 100".to_string(),
            "UPDATE plans SET price = 12 WHERE code = 'pro'".to_string(),
            // Site 1 exists: its key is taken.
            "INSERT INTO sites VALUES (1, 'again')".to_string(),
        ];
        let before = fixture.all_rows().await;
        let mut called = false;
        let error = source
            .run_steps(&steps, |_| {
                called = true;
                true
            })
            .await
            .expect_err("a step fails");
        assert!(!called, "decide is not asked when a step fails");
        assert_eq!(error.kind(), ErrorKind::Source, "{error}");
        assert!(!error.is_transient(), "{error}");
        assert_eq!(fixture.all_rows().await, before);
        // The connection goes on: the next operation runs and commits.
        let (_, committed) = source
            .run_steps(&steps[..1], |_| true)
            .await
            .unwrap_or_else(|e| panic!("run steps: {e}"));
        assert!(committed);
        assert_eq!(
            fixture.all_rows().await["tasks"],
            set(&[&["101", "11", "NULL"], &["200", "20", "read"]])
        );
    }

    pub async fn lookup_finds_ids_with_their_tenant(fixture: &Fixture) {
        let source = fixture.open().await;
        let found = |rows: Vec<lifeboat_source::guard::IdRow>| -> BTreeSet<(String, Option<String>, Option<String>)> {
            rows.into_iter()
                .map(|r| (text(&r.id), r.label, r.tenant.map(|t| t.to_string())))
                .collect()
        };
        let rows = source
            .lookup_ids(
                "projects",
                "id",
                Some("title"),
                &[Value::Int(10), Value::Int(20), Value::Int(999)],
            )
            .await
            .expect("lookup projects");
        assert_eq!(
            found(rows),
            BTreeSet::from([
                (
                    "10".to_string(),
                    Some("p10".to_string()),
                    Some("1".to_string())
                ),
                (
                    "20".to_string(),
                    Some("p20".to_string()),
                    Some("2".to_string())
                ),
            ])
        );
        // Through tenant_via: the task's tenant is its project's.
        let rows = source
            .lookup_ids("tasks", "id", None, &[Value::Int(101), Value::Int(200)])
            .await
            .expect("lookup tasks");
        assert_eq!(
            found(rows),
            BTreeSet::from([
                ("101".to_string(), None, Some("1".to_string())),
                ("200".to_string(), None, Some("2".to_string())),
            ])
        );
        // A global table: found, with no tenant.
        let rows = source
            .lookup_ids("plans", "code", None, &[Value::Text("pro".into())])
            .await
            .expect("lookup plans");
        assert_eq!(
            found(rows),
            BTreeSet::from([("pro".to_string(), None, None)])
        );
        // Nothing known: nothing found.
        let rows = source
            .lookup_ids("sites", "id", None, &[Value::Int(3)])
            .await
            .expect("lookup sites");
        assert!(rows.is_empty(), "{rows:?}");
    }

    pub async fn counts_a_tenants_rows(fixture: &Fixture) {
        let source = fixture.open().await;
        let count = |tenant: &'static str, table: &'static str| {
            let source = &source;
            async move {
                source
                    .count_tenant_rows(&TenantKey::new(tenant), table)
                    .await
                    .unwrap_or_else(|e| panic!("count {tenant} {table}: {e}"))
            }
        };
        assert_eq!(count("1", "tasks").await, 2);
        assert_eq!(count("2", "tasks").await, 1);
        assert_eq!(count("1", "projects").await, 2);
        assert_eq!(count("1", "sites").await, 1);
        assert_eq!(count("3", "projects").await, 0);
        fixture
            .exec("INSERT INTO tasks VALUES (102, 11, NULL)")
            .await;
        assert_eq!(count("1", "tasks").await, 3);
        let error = source
            .count_tenant_rows(&TenantKey::new("1"), "nope")
            .await
            .expect_err("an unknown table");
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    }
}
