//! The engines called as a library, on real SQLite files and a local vault: capture,
//! verify, restore (with its progress events), the comparison, the guard's plan → approve
//! → apply → undo, the typed plan file refusing a hand-edited plan, and a tenant's
//! history reading only its share of the vault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lifeboat_core::config::Config;
use lifeboat_core::metrics::Metrics;
use lifeboat_core::model::TenantKey;
use lifeboat_core::people::Role;
use lifeboat_core::target::Target;
use lifeboat_core::vault::{Store, Vault};
use lifeboat_engine::compare::{compare_tenant, Expected};
use lifeboat_engine::guard::{self, Applied};
use lifeboat_engine::progress::{Event, Recorded, Silent};
use lifeboat_engine::{capture, history, restore, verify};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

const SITES: i64 = 6;

struct Setup {
    _dir: tempfile::TempDir,
    db: PathBuf,
    config: Config,
    config_path: Option<PathBuf>,
}

impl Setup {
    /// The signer of `name`'s key in `role`.
    fn signer(&self, role: Role, name: &str) -> guard::Signer {
        let dir = self.db.parent().expect("dir");
        guard::Signer::open(&self.config, role, &dir.join(name)).expect("signer")
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tracker.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut sql = String::from(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL);
         CREATE TABLE apps (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, app_key TEXT);
         CREATE TABLE issues (id INTEGER PRIMARY KEY,
             site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE, title TEXT);
         CREATE TABLE comments (id INTEGER PRIMARY KEY,
             issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE, body TEXT);\n",
    );
    for s in 1..=SITES {
        sql.push_str(&format!(
            "INSERT INTO sites VALUES ({s}, 'https://site{s}.example.net');
             INSERT INTO apps VALUES ({}, {s}, 'legacy-chat');\n",
            100 + s
        ));
        for i in 0..3 {
            let issue = s * 10 + i;
            sql.push_str(&format!(
                "INSERT INTO issues VALUES ({issue}, {s}, 'issue {i}');
                 INSERT INTO comments VALUES ({issue}, {issue}, 'comment');\n"
            ));
        }
    }
    conn.execute_batch(&sql).expect("seed");
    // alice writes plans, bob approves them: keys made by ssh-keygen.
    let mut people = String::from("[authors]\nalice = \"{alice}\"\n[approvers]\n");
    for name in ["alice", "bob"] {
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(dir.path().join(name))
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
        let public =
            std::fs::read_to_string(dir.path().join(format!("{name}.pub"))).expect("public key");
        people = people.replace(&format!("{{{name}}}"), public.trim());
        people.push_str(&format!("{name} = \"{}\"\n", public.trim()));
    }
    let text = format!(
        r#"
{people}
[vault]
url = "file://{vault}"
[control]
url = "sqlite://{control}"
[sources.tracker]
url = "sqlite://{db}"
tenant_column = "site_id"
[sources.tracker.tables.sites]
tenant_column = "id"
[sources.tracker.tables.comments]
tenant_via = "issue_id -> issues.id"
[guard]
approvals_required = 1
[kinds.app]
source = "tracker"
table = "apps"
column = "id"
label = "app_key"
[operations.remove-app]
params = {{ ids = "app" }}
effect = {{ "tracker.apps" = {{ max_rows_per_id = 1 }} }}
[[operations.remove-app.steps]]
source = "tracker"
sql = "DELETE FROM apps WHERE id = ANY($ids)"
"#,
        vault = dir.path().join("vault").display(),
        control = dir.path().join("control.db").display(),
        db = db.display(),
    );
    let config_path = dir.path().join("lifeboat.toml");
    std::fs::write(&config_path, &text).expect("config");
    let config = Config::parse(&text).expect("config parses");
    // The vault, as `lifeboat init` creates it.
    lifeboat_engine::context::init_vault(&config)
        .await
        .expect("init");
    Setup {
        config,
        config_path: Some(config_path),
        db,
        _dir: dir,
    }
}

async fn catch_up(config: &Config, config_path: &Option<PathBuf>) {
    let run = capture::run(
        config,
        config_path,
        &[],
        true,
        &Stop::new(),
        &Silent,
        &Metrics::new(),
    )
    .await
    .expect("capture");
    assert!(run.errors.is_empty(), "{:?}", run.errors.first());
    assert_eq!(run.reports.len(), 1);
}

fn execute(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch(sql).expect("sql");
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Now, as a restore target: SQLite's triggers stamp changes to the millisecond, so the
/// next change is made a few milliseconds later, never inside the same millisecond.
async fn moment() -> i64 {
    let now = lifeboat_core::time::now_us();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    now
}

fn tenants(keys: &[i64]) -> Vec<String> {
    keys.iter().map(i64::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_difference_and_restore_brings_the_tenant_back() {
    let s = setup().await;
    catch_up(&s.config, &s.config_path).await;
    let before = moment().await;
    let request = verify::Request {
        tenants: tenants(&[1, 2]),
        at_us: None,
        sources: Vec::new(),
    };
    let report = verify::verify(&s.config, &request).await.expect("verify");
    assert!(report.ok, "{:?}", report.differences);
    // sites, apps, issues, comments for each of two tenants.
    assert_eq!(report.tables_checked, 8);

    // Tenant 2 loses its comments and an issue; tenant 1 is untouched.
    execute(
        &s.db,
        "DELETE FROM comments WHERE issue_id IN (SELECT id FROM issues WHERE site_id = 2);
         DELETE FROM issues WHERE id = 20;",
    );
    catch_up(&s.config, &s.config_path).await;
    let at_before = verify::Request {
        at_us: Some(before),
        ..request
    };
    let report = verify::verify(&s.config, &at_before).await.expect("verify");
    assert!(!report.ok);
    let differing: BTreeMap<&str, (u64, u64)> = report
        .differences
        .iter()
        .map(|d| (d.table.as_str(), (d.live.rows, d.vault.rows)))
        .collect();
    assert_eq!(
        differing,
        BTreeMap::from([("comments", (0, 3)), ("issues", (2, 3))])
    );
    assert!(report.differences.iter().all(|d| d.tenant == "2"));
    let issues = report
        .differences
        .iter()
        .find(|d| d.table == "issues")
        .expect("issues differ");
    assert_eq!((issues.rows_only_live, issues.rows_only_vault), (0, 1));
    assert_eq!(issues.example_keys, vec![r#"["20"]"#.to_string()]);

    // Restore tenant 2 to before the deletion; the progress events tell the story.
    let recorded = Arc::new(Recorded::default());
    let summary = restore::execute(
        &s.config,
        &restore::Request {
            tenants: tenants(&[2]),
            target: Target::At(before),
            sources: Vec::new(),
            as_key: None,
            into_url: None,
            dry_run: false,
            jobs: 4,
        },
        recorded.clone(),
    )
    .await
    .expect("restore");
    assert_eq!(summary.failures(), 0);
    assert_eq!(summary.outcomes.len(), 1);
    assert_eq!(summary.outcomes[0].verified, Some(true));
    // One site, one app, three issues, three comments.
    assert_eq!(summary.rows_written(), 8);
    let events = recorded.0.lock().expect("events").clone();
    assert!(matches!(
        events.first(),
        Some(Event::RestoreStarted {
            tenants: 1,
            sources: 1,
            restores: 1,
            dry_run: false,
            ..
        })
    ));
    assert!(events.contains(&Event::TenantRestored { rows: 8 }));
    assert_eq!(events.last(), Some(&Event::RestoreFinished));
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) FROM comments WHERE issue_id BETWEEN 20 AND 29"
        ),
        3
    );
    let report = verify::verify(&s.config, &at_before).await.expect("verify");
    assert!(report.ok, "{:?}", report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_reports_each_table_either_side_has() {
    let s = setup().await;
    let source = LiveSource::open(
        "tracker",
        s.config.source("tracker").expect("source"),
        false,
    )
    .await
    .expect("open");
    let tenant = TenantKey::new("3".to_string());
    // Nothing expected: every live table of the tenant with rows differs.
    let check = compare_tenant(&source, &tenant, &Expected::new())
        .await
        .expect("compare");
    let differing: Vec<(&str, u64)> = check
        .differences()
        .map(|t| (t.table.as_str(), t.live.rows))
        .collect();
    assert_eq!(
        differing,
        vec![("apps", 1), ("comments", 3), ("issues", 3), ("sites", 1)]
    );
    // The live digests as expectation: everything matches, also over fewer columns.
    let mut expected = Expected::new();
    for t in &check.tables {
        let columns = source.live_columns()[&t.table].clone();
        expected.insert(t.table.clone(), (columns, t.live));
    }
    assert!(compare_tenant(&source, &tenant, &expected)
        .await
        .expect("compare")
        .matches());
    let (columns, _) = expected.get_mut("issues").expect("issues");
    columns.retain(|c| c != "title");
    let check = compare_tenant(&source, &tenant, &expected)
        .await
        .expect("compare");
    assert_eq!(
        check
            .differences()
            .map(|t| t.table.as_str())
            .collect::<Vec<_>>(),
        vec!["issues"],
        "the same rows over other columns give another digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_approved_applied_in_waves_and_undone() {
    let s = setup().await;
    catch_up(&s.config, &s.config_path).await;
    let dir = s.db.parent().expect("dir").to_path_buf();
    let plan_path = dir.join("plan.json");
    let planned = guard::plan(
        &s.config,
        &s.config_path,
        "remove-app",
        vec!["101".into(), " 102 ".into(), "101".into(), "103".into()],
        &s.signer(Role::Author, "alice"),
        &plan_path,
    )
    .await
    .expect("plan");
    assert_eq!((planned.ids, planned.tenants), (3, 3));
    assert_eq!(planned.totals, BTreeMap::from([("tracker.apps".into(), 3)]));
    assert_eq!(count(&s.db, "SELECT count(*) FROM apps"), SITES);

    // Not approved yet; and never by its author.
    let err = guard::apply(
        &s.config,
        &s.config_path,
        &plan_path,
        "1,100%",
        None,
        &Silent,
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("0 of the 1 approvals"), "{err}");
    let alice = s.signer(Role::Approver, "alice");
    let err = guard::approve(
        &s.config,
        &s.config_path,
        &plan_path,
        guard::Approval::Key(&alice),
    )
    .await
    .expect_err("refused");
    assert!(
        err.to_string().contains("its author cannot approve"),
        "{err}"
    );

    // A hand-edited plan with a matching hash but an extra field is refused before it runs.
    let edited = dir.join("edited.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).expect("plan")).expect("json");
    let object = json.as_object_mut().expect("object");
    object.remove("hash");
    let signatures = object.remove("signatures").expect("signatures");
    object.insert(
        "extra_steps".into(),
        serde_json::json!(["DELETE FROM sites"]),
    );
    let hash = lifeboat_core::vault::sha256_hex(json.to_string().as_bytes());
    json["hash"] = serde_json::Value::String(hash);
    json["signatures"] = signatures;
    std::fs::write(&edited, json.to_string()).expect("write");
    let bob = s.signer(Role::Approver, "bob");
    let err = guard::approve(
        &s.config,
        &s.config_path,
        &edited,
        guard::Approval::Key(&bob),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("does not parse"), "{err}");

    let approved = guard::approve(
        &s.config,
        &s.config_path,
        &plan_path,
        guard::Approval::Key(&bob),
    )
    .await
    .expect("approve");
    assert!(approved.new);
    assert_eq!((approved.approvals, approved.required), (1, 1));

    let recorded = Recorded::default();
    let applied = guard::apply(
        &s.config,
        &s.config_path,
        &plan_path,
        "1,100%",
        Some("carol".into()),
        &recorded,
    )
    .await
    .expect("apply");
    assert!(
        matches!(applied, Applied::Done { tenants: 3, .. }),
        "{applied:?}"
    );
    let waves: Vec<(u32, usize)> = recorded
        .0
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            Event::Wave {
                number, tenants, ..
            } => Some((*number, *tenants)),
            _ => None,
        })
        .collect();
    assert_eq!(waves, vec![(1, 1), (2, 2)]);
    assert_eq!(count(&s.db, "SELECT count(*) FROM apps"), SITES - 3);

    let undone = guard::undo(&s.config, &s.config_path, &plan_path, None, &Silent)
        .await
        .expect("undo");
    assert_eq!((undone.tenants, undone.failures), (3, 0));
    assert_eq!(count(&s.db, "SELECT count(*) FROM apps"), SITES);
    let actions: Vec<String> = guard::audit_entries(&s.config, &s.config_path)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "plan",
            "approve",
            "restore-point",
            "apply",
            "wave",
            "wave",
            "applied",
            "undo"
        ]
    );
    let (entries, verified) =
        guard::audit_verify(&s.config, &s.config_path, guard::ANCHOR_GRACE_US)
            .await
            .expect("audit verify");
    assert_eq!(
        (entries, verified.problems.len(), verified.pending.len()),
        (8, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_restores_its_tenants_through_two_workers() {
    let s = setup().await;
    catch_up(&s.config, &s.config_path).await;
    let before = moment().await;
    execute(&s.db, "DELETE FROM sites WHERE id IN (2, 4, 5);");
    catch_up(&s.config, &s.config_path).await;
    assert_eq!(count(&s.db, "SELECT count(*) FROM issues"), (SITES - 3) * 3);

    let mut config = s.config.clone();
    config.campaigns.acceptance = "skip".to_string();
    let mut control = lifeboat_engine::campaign::open_audited(&config, &s.config_path)
        .await
        .expect("control store");
    let incident = control
        .change_incident(
            None,
            &lifeboat_control::IncidentChange {
                name: Some("Sites deleted".into()),
                status: lifeboat_control::IncidentStatus::Identified,
                impact: Some(lifeboat_control::Impact::Major),
                message: "Restoring.".into(),
                translations: Default::default(),
                components: BTreeMap::new(),
            },
            "oncall",
        )
        .expect("incident");
    // Unknown tenants and an unknown incident are refused before anything is queued.
    let start = |tenants: Vec<String>, incident: &str| lifeboat_engine::campaign::StartRequest {
        incident: incident.to_string(),
        target: Target::At(before),
        target_json: serde_json::json!({"at": lifeboat_core::time::format_us(before)}),
        tenants,
        batch_size: 2,
        priority: "users desc".into(),
        by: "oncall".into(),
        auto_progress: None,
        phases: None,
    };
    let err = lifeboat_engine::campaign::start_campaign(
        &config,
        &mut control,
        start(tenants(&[2, 99]), &incident),
    )
    .await
    .expect_err("unknown tenant");
    assert!(err.to_string().contains("unknown tenant 99"), "{err}");
    let err = lifeboat_engine::campaign::start_campaign(
        &config,
        &mut control,
        start(tenants(&[2]), "no-such-incident"),
    )
    .await
    .expect_err("unknown incident");
    assert!(err.to_string().contains("unknown incident"), "{err}");
    assert!(control.campaigns().expect("campaigns").is_empty());

    let (campaign, queued) = lifeboat_engine::campaign::start_campaign(
        &config,
        &mut control,
        start(tenants(&[2, 4, 5]), &incident),
    )
    .await
    .expect("start");
    assert_eq!(queued, 3);
    let url = lifeboat_engine::context::control_url(&config, &s.config_path).expect("url");
    let (restored, failed) =
        lifeboat_engine::campaign::worker::run_workers(&config, &url, &campaign, 2, 2)
            .await
            .expect("workers");
    assert_eq!((restored, failed), (3, 0));
    let stages: Vec<(String, lifeboat_control::Stage, Option<i64>)> = control
        .campaign_tenants(Some(&campaign))
        .expect("tenants")
        .into_iter()
        .map(|t| (t.tenant, t.stage, t.rows))
        .collect();
    assert_eq!(
        stages
            .iter()
            .map(|(t, stage, rows)| (t.as_str(), *stage, *rows))
            .collect::<Vec<_>>(),
        [
            ("2", lifeboat_control::Stage::Restored, Some(8)),
            ("4", lifeboat_control::Stage::Restored, Some(8)),
            ("5", lifeboat_control::Stage::Restored, Some(8)),
        ]
    );
    assert_eq!(count(&s.db, "SELECT count(*) FROM issues"), SITES * 3);
    assert_eq!(count(&s.db, "SELECT count(*) FROM comments"), SITES * 3);
    let report = verify::verify(
        &config,
        &verify::Request {
            tenants: tenants(&[2, 4, 5]),
            at_us: Some(before),
            sources: Vec::new(),
        },
    )
    .await
    .expect("verify");
    assert!(report.ok, "{:?}", report.differences);
}

/// The capture lease as other commands see it (`lease::leader`), and the fence of the
/// leader's vault writes: allowed while its row names it, refused once another holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_lease_names_its_leader_and_fences_its_writes() {
    use lifeboat_core::model::Checkpoint;
    use lifeboat_core::vault::{LocalStore, Vault};
    use lifeboat_engine::lease::{self, Acquired};
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("control.db").display().to_string();
    assert_eq!(lease::leader(&url, "tracker").await.expect("read"), None);
    let Acquired::Leader(leader) = lease::acquire(&url, "tracker", Duration::from_secs(60))
        .await
        .expect("acquire")
    else {
        panic!("nobody held it");
    };
    let current = lease::leader(&url, "tracker")
        .await
        .expect("read")
        .expect("a lease");
    assert_eq!(
        (current.holder.as_str(), current.epoch, current.is_live()),
        (lease::holder_id().as_str(), 1, true)
    );
    match lease::acquire(&url, "tracker", Duration::from_secs(60))
        .await
        .expect("acquire")
    {
        Acquired::Held(held) => assert_eq!(
            (held.holder, held.epoch, held.expires_at_us),
            (current.holder.clone(), 1, current.expires_at_us)
        ),
        Acquired::Leader(_) => panic!("granted twice"),
    }

    let vault = Vault::init(Arc::new(LocalStore::new(dir.path().join("vault"))))
        .await
        .expect("vault");
    let fenced = leader.fence(&vault);
    let checkpoint = |position| Checkpoint {
        source: "tracker".into(),
        position,
        commit_time_us: 0,
        tables: Vec::new(),
        keymaps: Vec::new(),
    };
    fenced
        .put_checkpoint(&checkpoint(10))
        .await
        .expect("written under the lease");
    let control = rusqlite::Connection::open(dir.path().join("control.db")).expect("open");
    control
        .execute(
            "UPDATE capture_leases SET holder = 'elsewhere:1', epoch = 2",
            [],
        )
        .expect("take it");
    let refused = fenced
        .put_checkpoint(&checkpoint(20))
        .await
        .expect_err("refused");
    assert!(
        refused.message().contains("lost its lease (epoch 1)"),
        "{refused}"
    );
    assert!(leader.is_lost());
    // For good, even with the row given back.
    control
        .execute(
            "UPDATE capture_leases SET holder = ?1, epoch = 1",
            [lease::holder_id()],
        )
        .expect("give it back");
    assert!(fenced.put_checkpoint(&checkpoint(30)).await.is_err());
    let written: Vec<u64> = vault
        .list_checkpoints("tracker")
        .await
        .expect("list")
        .iter()
        .map(|c| c.position)
        .collect();
    assert_eq!(written, vec![10]);
    // The unfenced vault still writes (the drill, tests).
    vault
        .put_checkpoint(&checkpoint(40))
        .await
        .expect("unfenced");
    leader.release().await;
}

/// A vault store that counts the bytes read through it.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn Store>,
    read: AtomicU64,
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn put(&self, name: &str, bytes: Bytes) -> lifeboat_core::Result<()> {
        self.inner.put(name, bytes).await
    }

    async fn get(&self, name: &str) -> lifeboat_core::Result<Option<Bytes>> {
        let got = self.inner.get(name).await?;
        let n = got.as_ref().map_or(0, |b| b.len() as u64);
        self.read.fetch_add(n, Ordering::Relaxed);
        Ok(got)
    }

    async fn get_range(
        &self,
        name: &str,
        range: std::ops::Range<u64>,
    ) -> lifeboat_core::Result<Option<Bytes>> {
        let got = self.inner.get_range(name, range).await?;
        let n = got.as_ref().map_or(0, |b| b.len() as u64);
        self.read.fetch_add(n, Ordering::Relaxed);
        Ok(got)
    }

    async fn list_sized(&self, prefix: &str) -> lifeboat_core::Result<Vec<(String, u64)>> {
        self.inner.list_sized(prefix).await
    }

    async fn delete(&self, name: &str) -> lifeboat_core::Result<()> {
        self.inner.delete(name).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_history_reads_its_share_of_the_vault_not_the_others() {
    let s = setup().await;
    catch_up(&s.config, &s.config_path).await;
    // Tenant 2 writes a lot (random text, so that it does not compress away); tenant 1
    // changes one title, then one transaction changes the issues of tenants 1 and 3.
    execute(
        &s.db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
         INSERT INTO issues SELECT 1000 + i, 2, hex(randomblob(1000)) FROM n;",
    );
    catch_up(&s.config, &s.config_path).await;
    execute(&s.db, "UPDATE issues SET title = 'renamed' WHERE id = 10;");
    catch_up(&s.config, &s.config_path).await;
    execute(
        &s.db,
        "UPDATE issues SET title = title || '!' WHERE site_id IN (1, 3);",
    );
    catch_up(&s.config, &s.config_path).await;

    let store = Arc::new(CountingStore {
        inner: Vault::store_for(&s.config.vault).expect("store"),
        read: AtomicU64::new(0),
    });
    let vault = Vault::open(store.clone()).await.expect("vault");
    let mut read = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for tenant in ["1", "2"] {
        store.read.store(0, Ordering::Relaxed);
        let found = history::history_in(&vault, &s.config, tenant, &[], 50)
            .await
            .expect("history");
        read.insert(tenant, store.read.load(Ordering::Relaxed));
        entries.insert(tenant, found);
    }

    // Tenant 1: newest first, its own rows, and the scale of the shared transaction.
    type Rows = Vec<((String, &'static str), u64)>;
    let one: Vec<(Rows, u64)> = entries["1"]
        .iter()
        .map(|e| (e.rows.clone().into_iter().collect(), e.rows_all_tenants))
        .collect();
    let updates = |n| vec![(("issues".to_string(), "update"), n)];
    assert_eq!(one, vec![(updates(3), 6), (updates(1), 1)]);
    assert_eq!(entries["2"].len(), 1);
    assert_eq!(entries["2"][0].rows_all_tenants, 400);

    // Tenant 2's 400 KB of new rows are read for tenant 2 only.
    assert!(
        read["2"] > 400_000,
        "tenant 2's history read {} bytes",
        read["2"]
    );
    assert!(
        read["1"] < 40_000,
        "tenant 1's history read {} bytes, tenant 2's {}",
        read["1"],
        read["2"]
    );
}
