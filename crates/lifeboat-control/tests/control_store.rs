//! The control store contract, written once and run against both of its databases: SQLite
//! (a file in a temporary directory) and PostgreSQL (a fresh database per test on the
//! cluster that scripts/test-services.sh starts). Without that cluster's environment the
//! PostgreSQL tests fail (they never skip): run them through `scripts/test`, or source
//! `.lifeboat-test/env.sh` first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use lifeboat_control::ControlStore;

// --- the databases under test -------------------------------------------------------------

/// One test's control store: where it is, and a way around the store to its tables (to
/// tamper with them as an attacker or a corrupted file would).
struct Fixture {
    url: String,
    db: Database,
}

enum Database {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin: String,
        name: String,
    },
}

impl Fixture {
    /// A new handle on the store.
    fn open(&self) -> ControlStore {
        ControlStore::open(&self.url).unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// Run `sql` on the store's database directly, not through the store.
    fn raw(&self, sql: &str) {
        match &self.db {
            Database::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .expect("open the SQLite file")
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Database::Postgres { .. } => postgres::Client::connect(&self.url, postgres::NoTls)
                .expect("connect")
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Database::Postgres { admin, name } = &self.db {
            // Best effort: a failed test may still hold connections (FORCE ends them).
            if let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

fn sqlite_store() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.db");
    Fixture {
        url: path.to_str().expect("utf-8 path").to_string(),
        db: Database::Sqlite { path, _dir: dir },
    }
}

/// The test cluster's superuser URL; a missing one fails the test.
fn pg_base_url() -> String {
    match std::env::var("LIFEBOAT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "LIFEBOAT_TEST_PG_URL is not set: the PostgreSQL control store tests need the test \
             cluster. Run `scripts/test`, or `scripts/test-services.sh` and then \
             `source .lifeboat-test/env.sh`"
        ),
    }
}

/// A fresh database on the test cluster, named uniquely for this process and call so that
/// tests running in parallel (and earlier runs) never meet.
fn postgres_store() -> Fixture {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin = pg_base_url();
    let name = format!(
        "lifeboat_control_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the test cluster at {admin}: {e}"))
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (server, _) = admin.rsplit_once('/').expect("a URL with a database");
    Fixture {
        url: format!("{server}/{name}"),
        db: Database::Postgres { admin, name },
    }
}

/// One test per contract function and database.
macro_rules! contract {
    ($module:ident, $fixture:ident: $($test:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::contract::$test(super::$fixture);
                }
            )*
        }
    };
}

contract!(on_sqlite, sqlite_store:
    open_and_describe,
    audit_log_appends_a_chain,
    audit_tampering_is_found,
    signatures_count_each_signer_once_per_role,
    every_state_change_writes_its_entry,
    a_change_and_its_entry_commit_together_or_not_at_all,
    format_1_entries_keep_their_rule_up_to_the_mark,
    anchoring_moves_forward_only,
    apply_state_and_waves,
    halts_are_set_and_cleared,
    one_apply_per_plan_and_the_pending_wave,
    deleted_undeleted_and_purged_tenants,
    components_follow_the_sources,
    incidents_in_statuspage_words,
    translations_and_component_changes_also_in_an_older_store,
    refused_incident_changes_change_nothing,
    maintenances_go_forward_only_and_refusals_change_nothing,
    maintenances_start_and_complete_by_themselves_once,
    maintenance_auto_columns_also_in_an_older_store,
    claims_take_batches_in_priority_order,
    claims_take_the_oldest_campaign_first,
    concurrent_claimers_never_share_a_tenant,
    leases_are_renewed_and_taken_over,
    capture_leases_elect_one_holder_per_source,
    concurrent_capture_lease_requests_grant_one,
    capture_standbys_until_stale_gone_or_leading,
    the_last_capture_error_replaces_the_one_before_without_passwords,
    phases_open_once_every_tenant_is_through_the_one_before,
    acceptance_per_phase_moves_on_to_the_next_phase,
    phases_also_in_an_older_store,
    retry_failed_queues_failed_tenants_again,
    acceptance_by_token_and_automatic,
    exports_are_requested_built_and_downloaded_through_a_current_link,
    expired_archives_are_removed_once_and_asked_for_again,
    attributes_are_stored_and_replaced,
    contacts_by_origin_and_campaign_copies,
    notices_commit_with_their_change,
    subscribers_hear_incidents_once_confirmed,
    subscribers_keep_their_language_also_in_an_older_store,
    concurrent_subscriptions_of_one_address_make_one_subscriber,
    support_requests_match_by_address_and_domain,
    deliveries_are_claimed_retried_and_dead,
    concurrent_notifiers_never_share_a_delivery,
    overdue_updates_ring_once_per_period_until_an_update,
    status_version_moves_on_every_status_write,
    unknown_words_in_the_database_are_errors,
);

contract!(on_postgres, postgres_store:
    open_and_describe,
    audit_log_appends_a_chain,
    audit_tampering_is_found,
    signatures_count_each_signer_once_per_role,
    every_state_change_writes_its_entry,
    a_change_and_its_entry_commit_together_or_not_at_all,
    format_1_entries_keep_their_rule_up_to_the_mark,
    anchoring_moves_forward_only,
    apply_state_and_waves,
    halts_are_set_and_cleared,
    one_apply_per_plan_and_the_pending_wave,
    deleted_undeleted_and_purged_tenants,
    components_follow_the_sources,
    incidents_in_statuspage_words,
    translations_and_component_changes_also_in_an_older_store,
    refused_incident_changes_change_nothing,
    maintenances_go_forward_only_and_refusals_change_nothing,
    maintenances_start_and_complete_by_themselves_once,
    maintenance_auto_columns_also_in_an_older_store,
    claims_take_batches_in_priority_order,
    claims_take_the_oldest_campaign_first,
    concurrent_claimers_never_share_a_tenant,
    leases_are_renewed_and_taken_over,
    capture_leases_elect_one_holder_per_source,
    concurrent_capture_lease_requests_grant_one,
    capture_standbys_until_stale_gone_or_leading,
    the_last_capture_error_replaces_the_one_before_without_passwords,
    phases_open_once_every_tenant_is_through_the_one_before,
    acceptance_per_phase_moves_on_to_the_next_phase,
    phases_also_in_an_older_store,
    retry_failed_queues_failed_tenants_again,
    acceptance_by_token_and_automatic,
    exports_are_requested_built_and_downloaded_through_a_current_link,
    expired_archives_are_removed_once_and_asked_for_again,
    attributes_are_stored_and_replaced,
    contacts_by_origin_and_campaign_copies,
    notices_commit_with_their_change,
    subscribers_hear_incidents_once_confirmed,
    subscribers_keep_their_language_also_in_an_older_store,
    concurrent_subscriptions_of_one_address_make_one_subscriber,
    support_requests_match_by_address_and_domain,
    deliveries_are_claimed_retried_and_dead,
    concurrent_notifiers_never_share_a_delivery,
    overdue_updates_ring_once_per_period_until_an_update,
    status_version_moves_on_every_status_write,
    unknown_words_in_the_database_are_errors,
);

// --- the contract -------------------------------------------------------------------------

mod contract {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use serde_json::{json, Value as Json};

    use lifeboat_control::{
        Applied, ApplyState, ApplyStatus, Campaign, CampaignTenant, CaptureError, ClaimPolicy,
        ComponentStatus, Contact, ContactOrigin, ControlStore, DeliveryState, Entry, Impact,
        IncidentChange, IncidentStatus, LeaseGrant, MaintenanceStatus, NewMaintenance, NoticeEvent,
        PendingWave, Phase, RecipientKind, Stage, StoredSignature,
    };
    use lifeboat_core::{ErrorKind, Result};

    use super::Fixture;

    /// How each test gets its store.
    type New = fn() -> Fixture;

    const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const MINUTE_US: i64 = 60_000_000;

    fn usage_error<T: std::fmt::Debug>(result: Result<T>) -> String {
        let e = result.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
        e.message().to_string()
    }

    fn point(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(s, p)| (s.to_string(), *p)).collect()
    }

    /// An audit entry of `alice` about `plan-1`.
    fn entry(action: &str) -> Entry {
        Entry::new("alice", action, "plan-1", json!({}))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Sources `tracker` and `wiki`, and an open incident.
    fn incident(store: &mut ControlStore) -> String {
        store
            .ensure_components(
                &BTreeMap::from([
                    ("tracker".to_string(), "Issue tracker".to_string()),
                    ("wiki".to_string(), "Wiki".to_string()),
                ]),
                "ops",
            )
            .expect("components");
        store
            .change_incident(
                None,
                &IncidentChange {
                    name: Some("Sites deleted".into()),
                    status: IncidentStatus::Identified,
                    impact: Some(Impact::Major),
                    message: "A script deleted sites.".into(),
                    translations: Default::default(),
                    components: BTreeMap::new(),
                },
                "ops",
            )
            .expect("incident")
    }

    fn campaign(id: &str, incident: &str, batch_size: u32, created_at_us: i64) -> Campaign {
        Campaign {
            id: id.to_string(),
            incident: incident.to_string(),
            target: json!({"before_tx": "tracker:48213"}),
            target_time: "2026-04-05T07:38:12.000000Z".into(),
            batch_size,
            priority: "plan:desc".into(),
            created_at: lifeboat_core::time::format_us(created_at_us),
            created_at_us,
            created_by: "ops".into(),
            phases: Vec::new(),
        }
    }

    /// A campaign over `tenants` (in priority order; tenant i has 10 * (i + 1) users).
    fn start(
        store: &mut ControlStore,
        id: &str,
        batch_size: u32,
        created_at_us: i64,
        tenants: &[&str],
    ) -> Campaign {
        let incident = incident(store);
        let campaign = campaign(id, &incident, batch_size, created_at_us);
        let tenants: Vec<(String, i64)> = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), 10 * (i as i64 + 1)))
            .collect();
        store
            .create_campaign(&campaign, &tenants, &[])
            .expect("create campaign");
        campaign
    }

    fn tenants_of(store: &mut ControlStore, campaign: &str) -> BTreeMap<String, CampaignTenant> {
        store
            .campaign_tenants(Some(campaign))
            .expect("campaign tenants")
            .into_iter()
            .map(|t| (t.tenant.clone(), t))
            .collect()
    }

    fn tenant(store: &mut ControlStore, campaign: &str, tenant: &str) -> CampaignTenant {
        tenants_of(store, campaign)
            .remove(tenant)
            .unwrap_or_else(|| panic!("no tenant {tenant} in campaign {campaign}"))
    }

    fn claimed_keys(claim: Option<(Campaign, Vec<CampaignTenant>)>) -> (String, Vec<String>) {
        let (campaign, tenants) = claim.expect("a batch");
        (campaign.id, tenants.into_iter().map(|t| t.tenant).collect())
    }

    // --- the store ------------------------------------------------------------------------

    pub fn open_and_describe(new: New) {
        let f = new();
        let mut store = f.open();
        match &f.db {
            super::Database::Sqlite { path, .. } => {
                assert_eq!(store.describe(), path.display().to_string())
            }
            super::Database::Postgres { name, .. } => {
                assert!(
                    store.describe().ends_with(&format!("/{name}")),
                    "{}",
                    store.describe()
                )
            }
        }
        // A store opened again (a later command, another machine) finds what was written.
        store
            .add_signature(
                "plan-1",
                &signed("approver", "alice"),
                entry_for("approver", "alice", "plan-1"),
            )
            .expect("sign");
        drop(store);
        assert_eq!(
            f.open().signatures("plan-1").expect("signatures"),
            [signed("approver", "alice")]
        );
    }

    // --- the audit log ----------------------------------------------------------------------

    pub fn audit_log_appends_a_chain(new: New) {
        let f = new();
        let mut store = f.open();
        assert!(store.entries().expect("entries").is_empty());
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
        let mut appended = Vec::new();
        for i in 0..3 {
            appended.push(
                store
                    .append(
                        "alice",
                        "approve",
                        &format!("plan-{i}"),
                        json!({"i": i, "note": "ok"}),
                    )
                    .expect("append"),
            );
        }
        // Another handle (another process) continues the same chain.
        appended.push(
            f.open()
                .append("bob", "apply", "plan-9", json!({"tenants": ["a", "b"]}))
                .expect("append"),
        );
        let entries = store.entries().expect("entries");
        assert_eq!(entries, appended, "entries read back as they were appended");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            let prev = if i == 0 {
                GENESIS
            } else {
                &entries[i - 1].hash
            };
            assert_eq!(e.prev, prev, "entry {} links to the one before", e.seq);
            assert_eq!(e.hash.len(), 64);
            assert_ne!(e.hash, e.prev);
        }
        assert_eq!(entries[3].actor, "bob");
        assert_eq!(entries[3].details, json!({"tenants": ["a", "b"]}));
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
    }

    /// Four entries, then `sql` applied behind the store's back: the problems found.
    fn tampered(new: New, sql: &str) -> Vec<String> {
        let f = new();
        let mut store = f.open();
        for i in 1..=4 {
            store
                .append("alice", "wave", &format!("plan-{i}"), json!({"wave": i}))
                .expect("append");
        }
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
        f.raw(sql);
        let problems = store.verify().expect("verify");
        assert!(!problems.is_empty(), "{sql}: not found");
        problems
    }

    pub fn audit_tampering_is_found(new: New) {
        let altered = tampered(new, "UPDATE audit SET actor = 'mallory' WHERE seq = 2");
        assert!(
            altered
                .iter()
                .any(|p| p.contains("entry 2") && p.contains("altered")),
            "{altered:?}"
        );
        let details = tampered(
            new,
            "UPDATE audit SET details = '{\"wave\":7}' WHERE seq = 3",
        );
        assert!(
            details
                .iter()
                .any(|p| p.contains("entry 3") && p.contains("altered")),
            "{details:?}"
        );
        let removed = tampered(new, "DELETE FROM audit WHERE seq = 2");
        assert!(
            removed
                .iter()
                .any(|p| p.contains("entry 3") && p.contains("expected entry 2")),
            "{removed:?}"
        );
        let cut = tampered(new, "DELETE FROM audit WHERE seq = 4");
        assert!(cut.iter().any(|p| p.contains("head")), "{cut:?}");
        let reordered = tampered(
            new,
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; \
             UPDATE audit SET seq = 3 WHERE seq = 100;",
        );
        assert!(
            reordered.iter().any(|p| p.contains("does not follow")),
            "{reordered:?}"
        );
        let head = tampered(new, "UPDATE audit_head SET seq = 3");
        assert!(head.iter().any(|p| p.contains("head")), "{head:?}");
    }

    /// (actor, action, subject) of every entry after `from`, in order.
    fn entries_after(store: &mut ControlStore, from: usize) -> Vec<(String, String, String)> {
        store.entries().expect("entries")[from..]
            .iter()
            .map(|e| (e.actor.clone(), e.action.clone(), e.subject.clone()))
            .collect()
    }

    fn triples(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        items
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    }

    pub fn every_state_change_writes_its_entry(new: New) {
        let f = new();
        let mut store = f.open();
        let at = point(&[("tracker", 1)]);
        // The guard: approvals, applies and waves, halts, deletes, undeletes, purges.
        assert!(approve(&mut store, "plan-1", "bob", json!({"operation": "x"})).expect("approve"));
        assert!(!approve(&mut store, "plan-1", "bob", json!({})).expect("again"));
        store.halt("plan-1", "carol").expect("halt");
        store.lock_apply("plan-1", "host:1").expect("lock");
        assert!(store
            .take_over_apply(
                "plan-1",
                "host:1",
                "host:2",
                &Entry::new("dave", "apply-lock-taken-over", "plan-1", json!({}))
            )
            .expect("take over"));
        store
            .set_apply(
                "plan-1",
                ApplyStatus::Running,
                &at,
                &[
                    Entry::new("dave", "restore-point", "plan-1", json!({})),
                    Entry::new("dave", "apply", "plan-1", json!({})),
                ],
            )
            .expect("running");
        store
            .mark_applied(
                "plan-1",
                &strings(&["a", "b"]),
                1,
                &at,
                true,
                &[
                    Entry::new("dave", "wave", "plan-1", json!({"wave": 1})),
                    Entry::new("dave", "delete", "tenant:a", json!({})),
                    Entry::new("dave", "delete", "tenant:b", json!({})),
                ],
            )
            .expect("wave");
        store
            .mark_undeleted("a", &Entry::new("erin", "undelete", "tenant:a", json!({})))
            .expect("undelete");
        store
            .mark_purged("b", &Entry::new("erin", "purge", "tenant:b", json!({})))
            .expect("purge");
        // Not deleted (any more): nothing changes, nothing is written.
        store
            .mark_undeleted("a", &Entry::new("erin", "undelete", "tenant:a", json!({})))
            .expect("undelete again");
        assert_eq!(
            entries_after(&mut store, 0),
            triples(&[
                ("bob", "approve", "plan-1"),
                ("carol", "halt", "plan-1"),
                ("dave", "apply-lock-taken-over", "plan-1"),
                ("dave", "restore-point", "plan-1"),
                ("dave", "apply", "plan-1"),
                ("dave", "wave", "plan-1"),
                ("dave", "delete", "tenant:a"),
                ("dave", "delete", "tenant:b"),
                ("erin", "undelete", "tenant:a"),
                ("erin", "purge", "tenant:b"),
            ])
        );

        // Incidents, campaigns, workers' outcomes, retries, acceptances, attributes.
        let seen = store.entries().expect("entries").len();
        let incident = incident(&mut store);
        let update = IncidentChange {
            translations: Default::default(),
            status: IncidentStatus::Monitoring,
            message: "Watching.".into(),
            ..Default::default()
        };
        store
            .change_incident(Some(&incident), &update, "olga")
            .expect("update");
        let c1 = campaign("c1", &incident, 4, lifeboat_core::time::now_us());
        store
            .create_campaign(
                &c1,
                &[("t1".into(), 1), ("t2".into(), 2), ("t3".into(), 3)],
                &[],
            )
            .expect("campaign");
        store.claim("w1", None, MINUTE_US).expect("claim");
        for (t, stage, reason) in [
            ("t1", Stage::Verifying, None),
            ("t1", Stage::AwaitingAcceptance, None),
            ("t2", Stage::Failed, Some("maintenance lock")),
            ("t3", Stage::AwaitingAcceptance, None),
        ] {
            assert!(store
                .set_stage("w1", "c1", t, stage, reason, Some(5))
                .expect("stage"));
        }
        assert_eq!(
            store.retry_failed("c1", &[], "oncall").expect("retry"),
            ["t2"]
        );
        let token = tenant(&mut store, "c1", "t1").token;
        assert!(store.accept(&token).expect("accept"));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.auto_accept(1).expect("auto accept"), 1);
        store
            .set_attributes(
                &BTreeMap::from([(
                    "t1".to_string(),
                    BTreeMap::from([("plan".to_string(), "gold".to_string())]),
                )]),
                "ops",
            )
            .expect("attributes");
        let incident_subject = format!("incident:{incident}");
        assert_eq!(
            entries_after(&mut store, seen),
            triples(&[
                ("ops", "component", "component:tracker"),
                ("ops", "component", "component:wiki"),
                ("ops", "incident-create", &incident_subject),
                ("olga", "incident-update", &incident_subject),
                ("ops", "campaign", "campaign:c1"),
                ("w1", "tenant-awaiting-acceptance", "tenant:t1"),
                ("w1", "tenant-failed", "tenant:t2"),
                ("w1", "tenant-awaiting-acceptance", "tenant:t3"),
                ("oncall", "campaign-retry", "campaign:c1"),
                ("customer", "accept", "tenant:t1"),
                ("lifeboat", "accept", "tenant:t3"),
                ("ops", "attributes", "tenant-attributes"),
            ])
        );
        let entries = store.entries().expect("entries");
        let accepts: Vec<_> = entries.iter().filter(|e| e.action == "accept").collect();
        assert_eq!(
            accepts[0].details,
            json!({"campaign": "c1", "automatic": false})
        );
        assert_eq!(accepts[1].details["automatic"], true);
        let text = serde_json::to_string(&entries).expect("json");
        for t in store.campaign_tenants(Some("c1")).expect("tenants") {
            assert!(
                !text.contains(&t.token),
                "a link's token is in the audit log"
            );
        }
        let failed = entries
            .iter()
            .find(|e| e.action == "tenant-failed")
            .expect("failed");
        assert_eq!(
            failed.details,
            json!({"campaign": "c1", "reason": "maintenance lock", "rows": 5})
        );
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
    }

    pub fn a_change_and_its_entry_commit_together_or_not_at_all(new: New) {
        let f = new();
        let mut store = f.open();
        approve(&mut store, "plan-1", "bob", json!({})).expect("approve");
        // An entry that cannot be written (its sequence number taken behind the store's
        // back): the change it records is rolled back with it.
        f.raw(
            "INSERT INTO audit (seq, at, actor, action, subject, details, prev, hash)
             VALUES (2, 'x', 'x', 'x', 'x', '{}', 'x', 'x')",
        );
        assert!(store.halt("plan-1", "carol").is_err());
        assert_eq!(store.halted_by("plan-1").expect("halted"), None);
        assert!(approve(&mut store, "plan-1", "dave", json!({})).is_err());
        assert_eq!(approvers(&mut store, "plan-1").expect("approvals"), ["bob"]);
        let version = store.status_version().expect("version");
        assert!(store
            .ensure_components(
                &BTreeMap::from([("tracker".to_string(), "Tracker".to_string())]),
                "ops"
            )
            .is_err());
        assert!(store.components().expect("components").is_empty());
        assert_eq!(store.status_version().expect("version"), version);
        f.raw("DELETE FROM audit WHERE seq = 2");

        // A refused change writes no entry.
        let before = store.entries().expect("entries").len();
        usage_error(store.change_incident(
            Some("nope"),
            &IncidentChange {
                translations: Default::default(),
                status: IncidentStatus::Resolved,
                message: "Done.".into(),
                ..Default::default()
            },
            "ops",
        ));
        assert_eq!(store.entries().expect("entries").len(), before);
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
    }

    pub fn format_1_entries_keep_their_rule_up_to_the_mark(new: New) {
        let f = new();
        // A store written by a build before format 2: two entries hashed the old way.
        f.raw(
            "CREATE TABLE audit (seq BIGINT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,
                 action TEXT NOT NULL, subject TEXT NOT NULL, details TEXT NOT NULL,
                 prev TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE TABLE audit_head (one BIGINT PRIMARY KEY CHECK (one = 1),
                 seq BIGINT NOT NULL, hash TEXT NOT NULL);",
        );
        let at = "2026-11-01T00:00:00.000000Z";
        let first = lifeboat_core::vault::sha256_hex(
            format!("1\n{at}\nalice\nplan\nplan-1\n{{\"n\": 1}}\n{GENESIS}").as_bytes(),
        );
        let second = lifeboat_core::vault::sha256_hex(
            format!("2\n{at}\nbob\napprove\nplan-1\n{{}}\n{first}").as_bytes(),
        );
        f.raw(&format!(
            "INSERT INTO audit VALUES (1, '{at}', 'alice', 'plan', 'plan-1', '{{\"n\": 1}}',
                 '{GENESIS}', '{first}');
             INSERT INTO audit VALUES (2, '{at}', 'bob', 'approve', 'plan-1', '{{}}',
                 '{first}', '{second}');
             INSERT INTO audit_head VALUES (1, 2, '{second}');"
        ));
        let mut store = f.open();
        assert_eq!(store.audit_v1_through().expect("mark"), 2);
        // The entries before the upgrade count as anchored by the build that wrote them.
        assert_eq!(store.anchored_through().expect("anchored"), 2);
        store
            .append("carol", "halt", "plan-1", json!({"by": "carol"}))
            .expect("append");
        assert_eq!(store.verify().expect("verify"), Vec::<String>::new());
        let entries = store.entries().expect("entries");
        assert_eq!(entries[2].prev, second, "the chain goes on across formats");
        // Opened again, the mark stays where it was.
        assert_eq!(f.open().audit_v1_through().expect("mark"), 2);
        // A format-1 entry altered is found by its own rule, a format-2 one by the new.
        f.raw("UPDATE audit SET actor = 'mallory' WHERE seq IN (1, 3)");
        let problems = store.verify().expect("verify");
        for seq in [1, 3] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(&format!("entry {seq}:")) && p.contains("altered")),
                "{problems:?}"
            );
        }
        // A fresh store marks nothing as format 1.
        assert_eq!(new().open().audit_v1_through().expect("mark"), 0);
        // A store in a format this build does not know is refused, naming it.
        f.raw("UPDATE control_meta SET value = '3' WHERE name = 'audit_format'");
        let e = ControlStore::open(&f.url).err().expect("refused");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.message().contains("format 3"), "{e}");
    }

    pub fn anchoring_moves_forward_only(new: New) {
        let f = new();
        let mut store = f.open();
        assert_eq!(store.anchored_through().expect("anchored"), 0);
        for i in 1..=3 {
            store
                .append("alice", "plan", &format!("plan-{i}"), json!({}))
                .expect("append");
        }
        let pending: Vec<u64> = store
            .unanchored()
            .expect("unanchored")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(pending, [1, 2, 3]);
        store.mark_anchored(2).expect("mark");
        assert_eq!(
            f.open()
                .unanchored()
                .expect("unanchored")
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [3]
        );
        store.mark_anchored(1).expect("mark");
        assert_eq!(store.anchored_through().expect("anchored"), 2, "never back");
        let hashes = store.entry_hashes().expect("hashes");
        assert_eq!(hashes[2].hash, store.entries().expect("entries")[2].hash);
    }

    // --- approvals, applies, halts --------------------------------------------------------

    /// The audit entry that goes with `name`'s signature of `plan` as `role`.
    fn entry_for(role: &str, name: &str, plan: &str) -> Entry {
        let action = if role == "author" { "plan" } else { "approve" };
        Entry::new(name, action, plan, json!({}))
    }

    /// `name`'s approval of `plan`, with `details` in its audit entry.
    fn approve(store: &mut ControlStore, plan: &str, name: &str, details: Json) -> Result<bool> {
        store.add_signature(
            plan,
            &signed("approver", name),
            Entry::new(name, "approve", plan, details),
        )
    }

    /// The names of the approvers of `plan`, as recorded.
    fn approvers(store: &mut ControlStore, plan: &str) -> Result<Vec<String>> {
        Ok(store
            .signatures(plan)?
            .into_iter()
            .filter(|s| s.role == "approver")
            .map(|s| s.name)
            .collect())
    }

    fn signed(role: &str, name: &str) -> StoredSignature {
        StoredSignature {
            role: role.into(),
            name: name.into(),
            key: format!("SHA256:{name}"),
            signature: format!("-----BEGIN SSH SIGNATURE----- {role} {name}"),
        }
    }

    pub fn signatures_count_each_signer_once_per_role(new: New) {
        let f = new();
        let mut store = f.open();
        assert!(store.signatures("plan-1").expect("signatures").is_empty());
        assert!(store
            .add_signature(
                "plan-1",
                &signed("author", "alice"),
                entry_for("author", "alice", "plan-1")
            )
            .expect("sign"));
        assert!(store
            .add_signature(
                "plan-1",
                &signed("approver", "alice"),
                entry_for("approver", "alice", "plan-1")
            )
            .expect("sign"));
        assert!(
            !store
                .add_signature(
                    "plan-1",
                    &signed("approver", "alice"),
                    entry_for("approver", "alice", "plan-1")
                )
                .expect("sign"),
            "the same signer again"
        );
        assert!(!f
            .open()
            .add_signature(
                "plan-1",
                &signed("approver", "alice"),
                entry_for("approver", "alice", "plan-1")
            )
            .expect("sign"));
        assert!(store
            .add_signature(
                "plan-1",
                &signed("approver", "bob"),
                entry_for("approver", "bob", "plan-1")
            )
            .expect("sign"));
        assert!(store
            .add_signature(
                "plan-2",
                &signed("approver", "carol"),
                entry_for("approver", "carol", "plan-2")
            )
            .expect("sign"));
        let mut signers: Vec<(String, String)> = store
            .signatures("plan-1")
            .expect("signatures")
            .into_iter()
            .map(|s| (s.role, s.name))
            .collect();
        signers.sort();
        assert_eq!(
            signers,
            [
                ("approver".to_string(), "alice".to_string()),
                ("approver".to_string(), "bob".to_string()),
                ("author".to_string(), "alice".to_string())
            ]
        );
        assert_eq!(
            store.signatures("plan-2").expect("signatures"),
            [signed("approver", "carol")]
        );
    }

    pub fn apply_state_and_waves(new: New) {
        let f = new();
        let mut store = f.open();
        let before = point(&[("tracker", 100), ("wiki", 7)]);
        assert_eq!(store.apply_state("plan-1").expect("state"), None);
        for status in [
            ApplyStatus::Running,
            ApplyStatus::Halted,
            ApplyStatus::Running,
            ApplyStatus::Diverged,
            ApplyStatus::Done,
            ApplyStatus::Undone,
        ] {
            store
                .set_apply("plan-1", status, &before, &[entry("apply")])
                .expect("set apply");
            assert_eq!(
                f.open().apply_state("plan-1").expect("state"),
                Some(ApplyState {
                    state: status,
                    restore_point: before.clone(),
                })
            );
        }
        assert_eq!(store.apply_state("plan-2").expect("state"), None);

        // Waves: each tenant with its wave and the positions just before that wave.
        assert!(store.applied("plan-1").expect("applied").is_empty());
        let wave1 = point(&[("tracker", 110), ("wiki", 7)]);
        let wave2 = point(&[("tracker", 150), ("wiki", 9)]);
        store
            .mark_applied(
                "plan-1",
                &strings(&["t1", "t2"]),
                1,
                &wave1,
                false,
                &[entry("wave")],
            )
            .expect("wave 1");
        store
            .mark_applied(
                "plan-1",
                &strings(&["t3"]),
                2,
                &wave2,
                false,
                &[entry("wave")],
            )
            .expect("wave 2");
        // A tenant is applied once: recorded again, it keeps its first wave.
        store
            .mark_applied(
                "plan-1",
                &strings(&["t1"]),
                3,
                &wave2,
                false,
                &[entry("wave")],
            )
            .expect("wave 3");
        let applied = store.applied("plan-1").expect("applied");
        let expected: BTreeMap<String, Applied> =
            [("t1", 1, &wave1), ("t2", 1, &wave1), ("t3", 2, &wave2)]
                .into_iter()
                .map(|(t, wave, point)| {
                    (
                        t.to_string(),
                        Applied {
                            wave,
                            point: point.clone(),
                        },
                    )
                })
                .collect();
        assert_eq!(applied, expected);
        assert!(store.applied("plan-2").expect("applied").is_empty());
        // Not a delete plan: no tenant is recorded as deleted.
        assert!(store.deleted_tenants().expect("deleted").is_empty());
    }

    pub fn halts_are_set_and_cleared(new: New) {
        let f = new();
        let mut store = f.open();
        assert_eq!(store.halted_by("plan-1").expect("halted"), None);
        store.halt("plan-1", "alice").expect("halt");
        assert_eq!(
            f.open().halted_by("plan-1").expect("halted").as_deref(),
            Some("alice")
        );
        store.halt("plan-1", "bob").expect("halt");
        assert_eq!(
            store.halted_by("plan-1").expect("halted").as_deref(),
            Some("bob")
        );
        assert_eq!(store.halted_by("plan-2").expect("halted"), None);
        // An apply starting (running again) clears the request, with its entry.
        store
            .set_apply(
                "plan-1",
                ApplyStatus::Running,
                &point(&[]),
                &[entry("apply")],
            )
            .expect("running");
        assert_eq!(store.halted_by("plan-1").expect("halted"), None);
        let actions: Vec<String> = store
            .entries()
            .expect("entries")
            .into_iter()
            .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
            .collect();
        assert_eq!(
            actions,
            ["alice halt plan-1", "bob halt plan-1", "alice apply plan-1"]
        );
    }

    pub fn one_apply_per_plan_and_the_pending_wave(new: New) {
        let f = new();
        let mut store = f.open();
        let mut other = f.open();
        // The lock: one holder per plan; another plan's lock is independent.
        assert_eq!(store.lock_apply("plan-1", "host:1").expect("lock"), None);
        let (holder, _since) = other
            .lock_apply("plan-1", "host:2")
            .expect("lock")
            .expect("held");
        assert_eq!(holder, "host:1");
        assert_eq!(other.lock_apply("plan-2", "host:2").expect("lock"), None);
        // Taken over only from the holder named; released only by its holder.
        assert!(!other
            .take_over_apply(
                "plan-1",
                "host:9",
                "host:2",
                &entry("apply-lock-taken-over")
            )
            .expect("take over"));
        assert!(other
            .take_over_apply(
                "plan-1",
                "host:1",
                "host:2",
                &entry("apply-lock-taken-over")
            )
            .expect("take over"));
        store.unlock_apply("plan-1", "host:1").expect("unlock");
        assert_eq!(
            store
                .lock_apply("plan-1", "host:3")
                .expect("lock")
                .map(|h| h.0)
                .as_deref(),
            Some("host:2")
        );
        other.unlock_apply("plan-1", "host:2").expect("unlock");
        assert_eq!(store.lock_apply("plan-1", "host:3").expect("lock"), None);

        // The pending wave: recorded, read back by another handle, replaced, cleared by
        // the transaction that records the wave.
        assert_eq!(store.pending_wave("plan-1").expect("pending"), None);
        let pending = PendingWave {
            wave: 2,
            tenants: strings(&["t1", "t2"]),
            point: point(&[("tracker", 41)]),
        };
        store.set_pending_wave("plan-1", &pending).expect("pending");
        assert_eq!(
            other.pending_wave("plan-1").expect("pending"),
            Some(pending.clone())
        );
        assert_eq!(other.pending_wave("plan-2").expect("pending"), None);
        store
            .mark_applied(
                "plan-1",
                &pending.tenants,
                2,
                &pending.point,
                false,
                &[entry("wave")],
            )
            .expect("applied");
        assert_eq!(store.pending_wave("plan-1").expect("pending"), None);
        store.set_pending_wave("plan-1", &pending).expect("pending");
        store.clear_pending_wave("plan-1", &[]).expect("clear");
        assert_eq!(store.pending_wave("plan-1").expect("pending"), None);

        // The audit log answers whether a plan was made.
        assert!(!store.has_entry("plan", "plan-1").expect("has"));
        store
            .append("alice", "plan", "plan-1", json!({}))
            .expect("append");
        assert!(store.has_entry("plan", "plan-1").expect("has"));
        assert!(!store.has_entry("approve", "plan-1").expect("has"));
    }

    // --- tenant lifecycle -----------------------------------------------------------------

    pub fn deleted_undeleted_and_purged_tenants(new: New) {
        let f = new();
        let mut store = f.open();
        let at = point(&[("tracker", 42)]);
        let start_us = lifeboat_core::time::now_us();
        store
            .mark_applied(
                "delete-1",
                &strings(&["a", "b", "c"]),
                1,
                &at,
                true,
                &[entry("wave")],
            )
            .expect("delete wave");
        let a = store.deleted_tenant("a").expect("read").expect("deleted");
        assert_eq!(a.tenant, "a");
        assert_eq!(a.plan, "delete-1");
        assert_eq!(a.point, at);
        assert!(!a.purged);
        assert_eq!(a.purged_at, None);
        assert!(a.deleted_at_us >= start_us, "{a:?}");
        assert_eq!(
            lifeboat_core::time::parse(&a.deleted_at).expect("RFC 3339"),
            a.deleted_at_us
        );
        let keys = |store: &mut ControlStore| -> Vec<String> {
            store
                .deleted_tenants()
                .expect("deleted")
                .into_iter()
                .map(|t| t.tenant)
                .collect()
        };
        assert_eq!(keys(&mut store), ["a", "b", "c"]);
        assert_eq!(store.deleted_tenant("z").expect("read"), None);

        store
            .mark_undeleted("b", &entry("undelete"))
            .expect("undelete");
        assert_eq!(store.deleted_tenant("b").expect("read"), None);
        store.mark_purged("c", &entry("purge")).expect("purge");
        let c = store.deleted_tenant("c").expect("read").expect("purged");
        assert!(c.purged);
        assert!(c.purged_at.is_some());
        // A purged tenant cannot be brought back: its record stays.
        store
            .mark_undeleted("c", &entry("undelete"))
            .expect("undelete");
        assert!(
            store
                .deleted_tenant("c")
                .expect("read")
                .expect("kept")
                .purged
        );
        assert_eq!(keys(&mut f.open()), ["a", "c"]);

        // Deleted again by another plan: a fresh deletion, no longer purged.
        let later = point(&[("tracker", 99)]);
        store
            .mark_applied(
                "delete-2",
                &strings(&["c"]),
                1,
                &later,
                true,
                &[entry("wave")],
            )
            .expect("delete again");
        let c = store.deleted_tenant("c").expect("read").expect("deleted");
        assert_eq!((c.plan.as_str(), &c.point), ("delete-2", &later));
        assert!(!c.purged);
        assert_eq!(c.purged_at, None);
    }

    // --- components and incidents ---------------------------------------------------------

    pub fn components_follow_the_sources(new: New) {
        let f = new();
        let mut store = f.open();
        assert!(store.components().expect("components").is_empty());
        let names = BTreeMap::from([
            ("tracker".to_string(), "Issue tracker".to_string()),
            ("wiki".to_string(), "Wiki".to_string()),
        ]);
        store.ensure_components(&names, "ops").expect("ensure");
        let components = store.components().expect("components");
        let listed: Vec<(&str, &str, ComponentStatus, i64)> = components
            .iter()
            .map(|c| (c.source.as_str(), c.name.as_str(), c.status, c.position))
            .collect();
        assert_eq!(
            listed,
            [
                ("tracker", "Issue tracker", ComponentStatus::Operational, 1),
                ("wiki", "Wiki", ComponentStatus::Operational, 2),
            ]
        );
        for c in &components {
            assert_eq!(c.id.len(), 12);
            assert!(c
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        assert_ne!(components[0].id, components[1].id);
        // Nothing missing: nothing written.
        let version = store.status_version().expect("version");
        store
            .ensure_components(&names, "ops")
            .expect("ensure again");
        assert_eq!(store.status_version().expect("version"), version);
        assert_eq!(store.components().expect("components"), components);
        // A renamed source keeps its component (id, position); a new one comes last.
        store
            .ensure_components(
                &BTreeMap::from([
                    ("wiki".to_string(), "Documentation".to_string()),
                    ("billing".to_string(), "Billing".to_string()),
                ]),
                "ops",
            )
            .expect("rename and add");
        let after = f.open().components().expect("components");
        let wiki = after.iter().find(|c| c.source == "wiki").expect("wiki");
        assert_eq!(
            (wiki.id.as_str(), wiki.name.as_str(), wiki.position),
            (components[1].id.as_str(), "Documentation", 2)
        );
        let billing = after
            .iter()
            .find(|c| c.source == "billing")
            .expect("billing");
        assert_eq!(billing.position, 3);
        assert_eq!(after.len(), 3);
    }

    pub fn translations_and_component_changes_also_in_an_older_store(new: New) {
        let f = new();
        // A store made before translations and component changes were kept: its status
        // tables as they were, with an incident and its update.
        f.raw(
            "CREATE TABLE components (id TEXT PRIMARY KEY, source TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL, status TEXT NOT NULL, position BIGINT NOT NULL,
                 created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE incidents (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                 status TEXT NOT NULL, impact TEXT NOT NULL, created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL, started_at TEXT NOT NULL, monitoring_at TEXT,
                 resolved_at TEXT);
             CREATE TABLE incident_updates (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
                 status TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
                 affected TEXT NOT NULL);
             INSERT INTO components VALUES ('c1', 'tracker', 'Issue tracker', 'operational',
                 1, '2026-04-01T00:00:00.000000Z', '2026-04-01T00:00:00.000000Z');
             INSERT INTO incidents VALUES ('old000000001', 'Old', 'resolved', 'minor',
                 '2026-04-01T00:00:00.000000Z', '2026-04-01T01:00:00.000000Z',
                 '2026-04-01T00:00:00.000000Z', NULL, '2026-04-01T01:00:00.000000Z');
             INSERT INTO incident_updates VALUES ('upd000000001', 'old000000001', 'resolved',
                 'Fixed.', '2026-04-01T01:00:00.000000Z', '[]');",
        );
        let mut store = f.open();
        let old = store.incident("old000000001").expect("read").expect("old");
        assert_eq!(old.updates.len(), 1);
        assert!(old.updates[0].translations.is_empty());
        assert!(store.component_changes().expect("changes").is_empty());

        // Translations are stored with their update, and read back with it only.
        let id = store
            .change_incident(
                None,
                &IncidentChange {
                    name: Some("Sites deleted".into()),
                    status: IncidentStatus::Identified,
                    impact: Some(Impact::Major),
                    message: "Restoring.".into(),
                    translations: BTreeMap::from([
                        ("de".to_string(), "Wird wiederhergestellt.".to_string()),
                        ("ja".to_string(), "復元しています。".to_string()),
                    ]),
                    components: BTreeMap::from([(
                        "tracker".to_string(),
                        ComponentStatus::PartialOutage,
                    )]),
                },
                "ops",
            )
            .expect("create");
        std::thread::sleep(Duration::from_millis(2));
        store
            .change_incident(
                Some(&id),
                &IncidentChange {
                    status: IncidentStatus::Resolved,
                    message: "Done.".into(),
                    translations: BTreeMap::from([("de".to_string(), "Fertig.".to_string())]),
                    ..Default::default()
                },
                "ops",
            )
            .expect("resolve");
        let incident = store.incident(&id).expect("read").expect("incident");
        let translations: Vec<Vec<(&str, &str)>> = incident
            .updates
            .iter()
            .map(|u| {
                u.translations
                    .iter()
                    .map(|(l, t)| (l.as_str(), t.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            translations,
            [
                vec![("de", "Fertig.")],
                vec![
                    ("de", "Wird wiederhergestellt."),
                    ("ja", "復元しています。")
                ]
            ]
        );
        let all = store.incidents().expect("incidents");
        let old = all.iter().find(|i| i.id == "old000000001").expect("old");
        assert!(old.updates[0].translations.is_empty());
        // The translations are in the audit entry.
        let entries = store.entries().expect("audit");
        let created = entries
            .iter()
            .find(|e| e.action == "incident-create")
            .expect("entry");
        assert_eq!(created.details["translations"]["ja"], "復元しています。");

        // Each status the tracker took, with its time: the update's, then operational
        // when the incident was resolved.
        let changes = store.component_changes().expect("changes");
        let taken: Vec<(&str, ComponentStatus)> = changes
            .iter()
            .map(|c| (c.component.as_str(), c.status))
            .collect();
        assert_eq!(
            taken,
            [
                ("c1", ComponentStatus::PartialOutage),
                ("c1", ComponentStatus::Operational)
            ]
        );
        let resolved =
            lifeboat_core::time::parse(incident.resolved_at.as_deref().expect("resolved"))
                .expect("time");
        assert_eq!(changes[1].at_us, resolved);

        // An empty translation is refused, and nothing is written.
        let version = store.status_version().expect("version");
        let refused = store
            .change_incident(
                Some(&id),
                &IncidentChange {
                    status: IncidentStatus::Resolved,
                    message: "Again.".into(),
                    translations: BTreeMap::from([("de".to_string(), " ".to_string())]),
                    ..Default::default()
                },
                "ops",
            )
            .expect_err("refused");
        assert_eq!(refused.kind(), ErrorKind::Usage);
        assert_eq!(store.status_version().expect("version"), version);
    }

    pub fn incidents_in_statuspage_words(new: New) {
        let f = new();
        let mut store = f.open();
        store
            .ensure_components(
                &BTreeMap::from([
                    ("tracker".to_string(), "Issue tracker".to_string()),
                    ("wiki".to_string(), "Wiki".to_string()),
                ]),
                "ops",
            )
            .expect("components");
        let status_of = |store: &mut ControlStore, source: &str| {
            store
                .components()
                .expect("components")
                .into_iter()
                .find(|c| c.source == source)
                .expect("component")
                .status
        };
        let tracker = store
            .components()
            .expect("components")
            .into_iter()
            .find(|c| c.source == "tracker")
            .expect("tracker");

        // A new incident: its first update, and its components' new statuses.
        let first = store
            .change_incident(
                None,
                &IncidentChange {
                    name: Some("Sites deleted".into()),
                    status: IncidentStatus::Identified,
                    impact: Some(Impact::Major),
                    message: "A script deleted sites.".into(),
                    translations: Default::default(),
                    components: BTreeMap::from([(
                        "tracker".to_string(),
                        ComponentStatus::MajorOutage,
                    )]),
                },
                "ops",
            )
            .expect("create");
        assert_eq!(first.len(), 12);
        let incident = store.incident(&first).expect("read").expect("incident");
        assert_eq!(incident.name, "Sites deleted");
        assert_eq!(incident.status, IncidentStatus::Identified);
        assert_eq!(incident.impact, Impact::Major);
        assert_eq!(incident.started_at, incident.created_at);
        assert_eq!(
            (&incident.monitoring_at, &incident.resolved_at),
            (&None, &None)
        );
        assert_eq!(incident.components, std::slice::from_ref(&tracker.id));
        assert_eq!(incident.updates.len(), 1);
        let update = &incident.updates[0];
        assert_eq!(
            (
                update.status,
                update.body.as_str(),
                update.incident_id.as_str()
            ),
            (
                IncidentStatus::Identified,
                "A script deleted sites.",
                first.as_str()
            )
        );
        assert_eq!(update.affected_components.len(), 1);
        let affected = &update.affected_components[0];
        assert_eq!(
            (
                affected.code.as_str(),
                affected.name.as_str(),
                affected.old_status,
                affected.new_status
            ),
            (
                tracker.id.as_str(),
                "Issue tracker",
                ComponentStatus::Operational,
                ComponentStatus::MajorOutage
            )
        );
        assert_eq!(
            status_of(&mut store, "tracker"),
            ComponentStatus::MajorOutage
        );
        assert_eq!(status_of(&mut store, "wiki"), ComponentStatus::Operational);
        // Statuspage's words in JSON.
        let json = serde_json::to_value(&incident).expect("json");
        assert_eq!(json["status"], "identified");
        assert_eq!(json["impact"], "major");
        assert_eq!(
            json["updates"][0]["affected_components"][0]["new_status"],
            "major_outage"
        );

        // An update: monitoring, impact unchanged when not given.
        std::thread::sleep(Duration::from_millis(2));
        store
            .change_incident(
                Some(&first),
                &IncidentChange {
                    translations: Default::default(),
                    status: IncidentStatus::Monitoring,
                    message: "Restoring.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("update");
        let incident = store.incident(&first).expect("read").expect("incident");
        assert_eq!(incident.status, IncidentStatus::Monitoring);
        assert_eq!(incident.impact, Impact::Major);
        assert!(incident.monitoring_at.is_some());
        assert_eq!(incident.resolved_at, None);
        let statuses: Vec<IncidentStatus> = incident.updates.iter().map(|u| u.status).collect();
        assert_eq!(
            statuses,
            [IncidentStatus::Monitoring, IncidentStatus::Identified],
            "newest first"
        );

        // A second incident names the tracker too.
        std::thread::sleep(Duration::from_millis(2));
        let second = store
            .change_incident(
                None,
                &IncidentChange {
                    name: Some("Slow tracker".into()),
                    status: IncidentStatus::Investigating,
                    impact: None,
                    message: "Slow.".into(),
                    translations: Default::default(),
                    components: BTreeMap::from([(
                        "tracker".to_string(),
                        ComponentStatus::PartialOutage,
                    )]),
                },
                "ops",
            )
            .expect("second");
        let incident2 = store.incident(&second).expect("read").expect("incident");
        assert_eq!(incident2.impact, Impact::None, "a new incident's default");
        let ids: Vec<String> = store
            .incidents()
            .expect("incidents")
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, [second.clone(), first.clone()], "newest first");

        // Resolving the first leaves the tracker to the second, still open.
        store
            .change_incident(
                Some(&first),
                &IncidentChange {
                    translations: Default::default(),
                    status: IncidentStatus::Resolved,
                    impact: Some(Impact::Minor),
                    message: "Restored.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("resolve");
        let incident = store.incident(&first).expect("read").expect("incident");
        assert_eq!(incident.status, IncidentStatus::Resolved);
        assert_eq!(incident.impact, Impact::Minor);
        assert!(incident.resolved_at.is_some());
        assert_eq!(
            status_of(&mut store, "tracker"),
            ComponentStatus::PartialOutage
        );

        // The postmortem of the second: every component operational again.
        store
            .change_incident(
                Some(&second),
                &IncidentChange {
                    translations: Default::default(),
                    status: IncidentStatus::Postmortem,
                    message: "What happened.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("postmortem");
        assert_eq!(
            status_of(&mut store, "tracker"),
            ComponentStatus::Operational
        );
        let incident2 = f.open().incident(&second).expect("read").expect("incident");
        assert_eq!(incident2.status, IncidentStatus::Postmortem);
        assert!(incident2.resolved_at.is_some());
        assert_eq!(store.incident("nosuchincident").expect("read"), None);
    }

    pub fn refused_incident_changes_change_nothing(new: New) {
        let f = new();
        let mut store = f.open();
        let id = incident(&mut store);
        let incidents = store.incidents().expect("incidents");
        let components = store.components().expect("components");
        let version = store.status_version().expect("version");
        let unchanged = |store: &mut ControlStore| {
            assert_eq!(store.incidents().expect("incidents"), incidents);
            assert_eq!(store.components().expect("components"), components);
            assert_eq!(store.status_version().expect("version"), version);
        };

        // Words outside Statuspage's vocabulary never become a change.
        assert_eq!(
            usage_error("exploded".parse::<IncidentStatus>()),
            "incident status \"exploded\" is not one of: investigating, identified, \
             monitoring, resolved, postmortem"
        );
        assert_eq!(
            usage_error("huge".parse::<Impact>()),
            "impact \"huge\" is not one of: none, minor, major, critical"
        );
        assert_eq!(
            usage_error("down".parse::<ComponentStatus>()),
            "component status \"down\" is not one of: operational, degraded_performance, \
             partial_outage, major_outage, under_maintenance"
        );

        let message = usage_error(store.change_incident(
            Some(&id),
            &IncidentChange {
                translations: Default::default(),
                status: IncidentStatus::Monitoring,
                message: "Mostly.".into(),
                components: BTreeMap::from([
                    ("tracker".to_string(), ComponentStatus::MajorOutage),
                    ("billing".to_string(), ComponentStatus::MajorOutage),
                ]),
                ..Default::default()
            },
            "ops",
        ));
        assert!(
            message.contains("unknown component \"billing\""),
            "{message}"
        );
        assert!(message.contains("tracker, wiki"), "{message}");
        unchanged(&mut store);

        let message = usage_error(store.change_incident(
            Some(&id),
            &IncidentChange {
                translations: Default::default(),
                status: IncidentStatus::Resolved,
                message: "  ".into(),
                ..Default::default()
            },
            "ops",
        ));
        assert!(message.contains("needs a message"), "{message}");
        unchanged(&mut store);

        let message = usage_error(store.change_incident(
            Some("nosuchincident"),
            &IncidentChange {
                translations: Default::default(),
                status: IncidentStatus::Resolved,
                message: "Done.".into(),
                components: BTreeMap::from([("tracker".to_string(), ComponentStatus::Operational)]),
                ..Default::default()
            },
            "ops",
        ));
        assert!(
            message.contains("unknown incident nosuchincident"),
            "{message}"
        );
        unchanged(&mut store);
    }

    // --- campaigns --------------------------------------------------------------------------

    pub fn claims_take_batches_in_priority_order(new: New) {
        let f = new();
        let mut store = f.open();
        let created = lifeboat_core::time::now_us();
        let started = start(&mut store, "c1", 2, created, &["e", "d", "c", "b", "a"]);
        assert_eq!(
            store.campaigns().expect("campaigns"),
            std::slice::from_ref(&started)
        );
        let tenants = store.campaign_tenants(Some("c1")).expect("tenants");
        let order: Vec<(&str, i64, i64, Stage)> = tenants
            .iter()
            .map(|t| (t.tenant.as_str(), t.rank, t.users, t.stage))
            .collect();
        assert_eq!(
            order,
            [
                ("e", 0, 10, Stage::Queued),
                ("d", 1, 20, Stage::Queued),
                ("c", 2, 30, Stage::Queued),
                ("b", 3, 40, Stage::Queued),
                ("a", 4, 50, Stage::Queued),
            ],
            "the given order, not the keys' order"
        );
        let tokens: BTreeSet<&str> = tenants.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(tokens.len(), 5, "one token per tenant");
        assert!(tokens
            .iter()
            .all(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())));
        for t in &tenants {
            assert_eq!((t.attempts, &t.worker, t.lease_until_us), (0, &None, None));
        }

        let before = lifeboat_core::time::now_us();
        let (campaign, batch) = store
            .claim("w1", None, MINUTE_US)
            .expect("claim")
            .expect("a batch");
        assert_eq!(campaign, started);
        let keys: Vec<&str> = batch.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(keys, ["e", "d"], "the batch size, in priority order");
        for t in &batch {
            assert_eq!(t.stage, Stage::Restoring);
            assert_eq!(t.worker.as_deref(), Some("w1"));
            assert_eq!(t.attempts, 1);
            assert!(t.lease_until_us.expect("leased") >= before + MINUTE_US);
            assert!(t.started_at_us.expect("started") >= before);
        }
        assert_eq!(
            claimed_keys(store.claim("w2", None, MINUTE_US).expect("claim")),
            ("c1".to_string(), strings(&["c", "b"]))
        );
        assert_eq!(
            claimed_keys(f.open().claim("w3", Some("c1"), MINUTE_US).expect("claim")),
            ("c1".to_string(), strings(&["a"]))
        );
        assert_eq!(store.claim("w4", None, MINUTE_US).expect("claim"), None);
        assert_eq!(
            store.claim("w4", Some("c1"), MINUTE_US).expect("claim"),
            None
        );
        let workers: Vec<(String, Option<String>)> = store
            .campaign_tenants(None)
            .expect("tenants")
            .into_iter()
            .map(|t| (t.tenant, t.worker))
            .collect();
        let expect = |t: &str, w: &str| (t.to_string(), Some(w.to_string()));
        assert_eq!(
            workers,
            [
                expect("e", "w1"),
                expect("d", "w1"),
                expect("c", "w2"),
                expect("b", "w2"),
                expect("a", "w3"),
            ]
        );
    }

    pub fn claims_take_the_oldest_campaign_first(new: New) {
        let f = new();
        let mut store = f.open();
        let now = lifeboat_core::time::now_us();
        start(&mut store, "newer", 5, now, &["n1", "n2"]);
        start(&mut store, "older", 5, now - MINUTE_US, &["o1", "o2"]);
        let ids: Vec<String> = store
            .campaigns()
            .expect("campaigns")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["newer", "older"], "newest first");
        // Named: only that campaign's tenants.
        assert_eq!(
            claimed_keys(store.claim("w1", Some("newer"), MINUTE_US).expect("claim")),
            ("newer".to_string(), strings(&["n1", "n2"]))
        );
        start(&mut store, "newest", 5, now + MINUTE_US, &["x1"]);
        // Not named: the oldest campaign with tenants to claim.
        assert_eq!(
            claimed_keys(store.claim("w2", None, MINUTE_US).expect("claim")),
            ("older".to_string(), strings(&["o1", "o2"]))
        );
        assert_eq!(
            claimed_keys(store.claim("w3", None, MINUTE_US).expect("claim")),
            ("newest".to_string(), strings(&["x1"]))
        );
        assert_eq!(store.claim("w4", None, MINUTE_US).expect("claim"), None);
        assert_eq!(
            store.claim("w4", Some("nosuch"), MINUTE_US).expect("claim"),
            None
        );
    }

    pub fn concurrent_claimers_never_share_a_tenant(new: New) {
        const TENANTS: usize = 60;
        const WORKERS: usize = 4;
        let f = new();
        let names: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        start(&mut f.open(), "c1", 3, lifeboat_core::time::now_us(), &refs);
        // Every worker has its own connection, as workers on several machines do.
        let barrier = std::sync::Barrier::new(WORKERS);
        let claimed: Vec<(String, Vec<String>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let (url, barrier) = (f.url.clone(), &barrier);
                    scope.spawn(move || {
                        let worker = format!("w{w}");
                        let mut store = ControlStore::open(&url).expect("open");
                        barrier.wait();
                        let mut mine = Vec::new();
                        while let Some((_, batch)) =
                            store.claim(&worker, None, MINUTE_US).expect("claim")
                        {
                            assert!(!batch.is_empty() && batch.len() <= 3, "{batch:?}");
                            mine.extend(batch.into_iter().map(|t| t.tenant));
                        }
                        (worker, mine)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker thread"))
                .collect()
        });
        let mut seen = BTreeMap::new();
        for (worker, tenants) in &claimed {
            for tenant in tenants {
                if let Some(other) = seen.insert(tenant.clone(), worker.clone()) {
                    panic!("{tenant} claimed by both {other} and {worker}");
                }
            }
        }
        let all: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), all);
        // The store agrees on who holds each tenant, and each was claimed once.
        for t in f.open().campaign_tenants(Some("c1")).expect("tenants") {
            assert_eq!(t.worker.as_ref(), seen.get(&t.tenant), "{}", t.tenant);
            assert_eq!((t.stage, t.attempts), (Stage::Restoring, 1), "{}", t.tenant);
        }
    }

    pub fn leases_are_renewed_and_taken_over(new: New) {
        let f = new();
        let mut store = f.open();
        start(
            &mut store,
            "c1",
            2,
            lifeboat_core::time::now_us(),
            &["t1", "t2"],
        );
        store
            .claim("w1", None, MINUTE_US)
            .expect("claim")
            .expect("a batch");
        let leased = tenant(&mut store, "c1", "t1")
            .lease_until_us
            .expect("lease");
        // Held: nobody else gets them.
        assert_eq!(store.claim("w2", None, MINUTE_US).expect("claim"), None);
        assert!(store.renew_lease("w1", "c1", 2 * MINUTE_US).expect("renew"));
        let renewed = tenant(&mut store, "c1", "t1")
            .lease_until_us
            .expect("lease");
        assert!(renewed > leased, "{renewed} > {leased}");
        assert!(
            !store.renew_lease("w2", "c1", MINUTE_US).expect("renew"),
            "w2 holds nothing"
        );

        // w1 stops renewing: its lease runs out and w2 takes the tenants over.
        assert!(store.renew_lease("w1", "c1", 1).expect("renew"));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            claimed_keys(f.open().claim("w2", None, MINUTE_US).expect("claim")),
            ("c1".to_string(), strings(&["t1", "t2"]))
        );
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (t1.worker.as_deref(), t1.attempts, t1.stage),
            (Some("w2"), 2, Stage::Restoring)
        );
        assert!(
            !store.renew_lease("w1", "c1", MINUTE_US).expect("renew"),
            "lost"
        );

        // w1, late, reports a stage: nothing changes.
        let held = tenants_of(&mut store, "c1");
        for stage in [
            Stage::Verifying,
            Stage::Restored,
            Stage::Failed,
            Stage::Queued,
        ] {
            assert!(!store
                .set_stage("w1", "c1", "t1", stage, Some("late"), Some(5))
                .expect("set stage"));
        }
        assert_eq!(tenants_of(&mut store, "c1"), held);

        // w2 takes t1 through its stages.
        assert!(store
            .set_stage("w2", "c1", "t1", Stage::Verifying, None, None)
            .expect("verifying"));
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (t1.stage, t1.worker.as_deref(), t1.lease_until_us),
            (Stage::Verifying, Some("w2"), held["t1"].lease_until_us)
        );
        assert_eq!(t1.done_at_us, None);
        assert!(store
            .set_stage("w2", "c1", "t1", Stage::Restored, None, Some(1234))
            .expect("restored"));
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (t1.stage, t1.worker, t1.lease_until_us, t1.rows),
            (Stage::Restored, None, None, Some(1234))
        );
        assert!(t1.done_at_us.is_some());
        assert_eq!(t1.awaiting_since_us, None);
        // Done: no longer w2's.
        assert!(!store
            .set_stage("w2", "c1", "t1", Stage::Queued, None, None)
            .expect("set stage"));
        assert!(store.renew_lease("w2", "c1", MINUTE_US).expect("renew t2"));
        assert!(store
            .set_stage("w2", "c1", "t2", Stage::Failed, Some("no space left"), None)
            .expect("failed"));
        let t2 = tenant(&mut store, "c1", "t2");
        assert_eq!(
            (t2.stage, t2.reason.as_deref(), t2.worker),
            (Stage::Failed, Some("no space left"), None)
        );
        assert!(
            !store.renew_lease("w2", "c1", MINUTE_US).expect("renew"),
            "holds nothing"
        );
    }

    pub fn capture_leases_elect_one_holder_per_source(new: New) {
        let f = new();
        let mut store = f.open();
        assert_eq!(store.capture_lease("tracker").expect("read"), None);
        let granted = |grant: LeaseGrant| match grant {
            LeaseGrant::Granted(lease) => lease,
            LeaseGrant::Held(lease) => panic!("held by {lease:?}"),
        };
        let held = |grant: LeaseGrant| match grant {
            LeaseGrant::Held(lease) => lease,
            LeaseGrant::Granted(lease) => panic!("granted {lease:?}"),
        };
        let first = granted(
            store
                .acquire_capture_lease("tracker", "a:1", MINUTE_US)
                .expect("acquire"),
        );
        assert_eq!((first.holder.as_str(), first.epoch), ("a:1", 1));
        assert!(first.is_live());
        // Live: refused to anyone, its own holder too; other sources are separate.
        let other = held(
            f.open()
                .acquire_capture_lease("tracker", "b:2", MINUTE_US)
                .expect("acquire"),
        );
        assert_eq!((other.holder.as_str(), other.epoch), ("a:1", 1));
        assert_eq!(other.expires_at_us, first.expires_at_us);
        held(
            store
                .acquire_capture_lease("tracker", "a:1", MINUTE_US)
                .expect("acquire"),
        );
        let wiki = granted(
            store
                .acquire_capture_lease("wiki", "b:2", MINUTE_US)
                .expect("acquire"),
        );
        assert_eq!(wiki.epoch, 1);
        assert!(store
            .holds_capture_lease("tracker", "a:1", 1)
            .expect("holds"));
        assert!(!store
            .holds_capture_lease("tracker", "b:2", 1)
            .expect("holds"));
        assert!(!store
            .holds_capture_lease("tracker", "a:1", 2)
            .expect("holds"));

        // Taking over from a holder known to be dead: only while the row still names it.
        held(
            store
                .take_over_capture_lease("wiki", "c:3", MINUTE_US, ("b:2", 7))
                .expect("take over"),
        );
        let wiki = granted(
            store
                .take_over_capture_lease("wiki", "c:3", MINUTE_US, ("b:2", 1))
                .expect("take over"),
        );
        assert_eq!((wiki.holder.as_str(), wiki.epoch), ("c:3", 2));
        assert!(!store.holds_capture_lease("wiki", "b:2", 1).expect("holds"));

        // Renewal moves the expiry; only the holder of that epoch renews.
        let expires = store
            .renew_capture_lease("tracker", "a:1", 1, 2 * MINUTE_US)
            .expect("renew")
            .expect("still held");
        assert!(expires > first.expires_at_us);
        assert_eq!(
            store
                .renew_capture_lease("tracker", "b:2", 1, MINUTE_US)
                .expect("renew"),
            None
        );

        // The holder stops renewing: once expired, the next grant raises the epoch, and
        // the old holder can neither renew nor release it.
        store
            .renew_capture_lease("tracker", "a:1", 1, 1)
            .expect("renew")
            .expect("held");
        std::thread::sleep(Duration::from_millis(5));
        let lapsed = store.capture_lease("tracker").expect("read").expect("row");
        assert!(!lapsed.is_live());
        assert!(!store
            .holds_capture_lease("tracker", "a:1", 1)
            .expect("holds"));
        let second = granted(
            f.open()
                .acquire_capture_lease("tracker", "b:2", MINUTE_US)
                .expect("acquire"),
        );
        assert_eq!((second.holder.as_str(), second.epoch), ("b:2", 2));
        assert_eq!(
            store
                .renew_capture_lease("tracker", "a:1", 1, MINUTE_US)
                .expect("renew"),
            None
        );
        assert!(!store
            .release_capture_lease("tracker", "a:1", 1)
            .expect("release"));
        assert!(store
            .holds_capture_lease("tracker", "b:2", 2)
            .expect("holds"));

        // A release ends it at once and keeps the epoch: the next grant is epoch 3.
        assert!(store
            .release_capture_lease("tracker", "b:2", 2)
            .expect("release"));
        let released = store.capture_lease("tracker").expect("read").expect("row");
        assert_eq!((released.holder.as_str(), released.epoch), ("b:2", 2));
        assert!(!released.is_live());
        let third = granted(
            store
                .acquire_capture_lease("tracker", "a:3", MINUTE_US)
                .expect("acquire"),
        );
        assert_eq!(third.epoch, 3);
        let all: Vec<(String, i64)> = store
            .capture_leases()
            .expect("list")
            .into_iter()
            .map(|l| (l.source, l.epoch))
            .collect();
        assert_eq!(
            all,
            vec![("tracker".to_string(), 3), ("wiki".to_string(), 2)]
        );
    }

    pub fn concurrent_capture_lease_requests_grant_one(new: New) {
        let f = new();
        f.open();
        let url = f.url.clone();
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut store = ControlStore::open(&url).expect("open");
                    matches!(
                        store
                            .acquire_capture_lease("tracker", &format!("h:{i}"), MINUTE_US)
                            .expect("acquire"),
                        LeaseGrant::Granted(_)
                    )
                })
            })
            .collect();
        let granted = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .filter(|g| *g)
            .count();
        assert_eq!(granted, 1);
        let lease = f
            .open()
            .capture_lease("tracker")
            .expect("read")
            .expect("row");
        assert_eq!(lease.epoch, 1);
    }

    pub fn retry_failed_queues_failed_tenants_again(new: New) {
        let f = new();
        let mut store = f.open();
        start(
            &mut store,
            "c1",
            3,
            lifeboat_core::time::now_us(),
            &["t1", "t2", "t3"],
        );
        store.claim("w1", None, MINUTE_US).expect("claim");
        for (t, stage) in [
            ("t1", Stage::Failed),
            ("t2", Stage::Failed),
            ("t3", Stage::Restored),
        ] {
            assert!(store
                .set_stage("w1", "c1", t, stage, Some("boom"), None)
                .expect("stage"));
        }
        let before = tenants_of(&mut store, "c1");
        let message = usage_error(store.retry_failed("c1", &strings(&["t1", "t3"]), "ops"));
        assert!(message.contains("tenant t3 has not failed"), "{message}");
        assert_eq!(tenants_of(&mut store, "c1"), before, "nothing changed");

        assert_eq!(
            store
                .retry_failed("c1", &strings(&["t1"]), "ops")
                .expect("retry"),
            ["t1"]
        );
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (
                t1.stage,
                t1.attempts,
                t1.worker,
                t1.lease_until_us,
                t1.done_at_us
            ),
            (Stage::Queued, 0, None, None, None)
        );
        assert_eq!(tenant(&mut store, "c1", "t2").stage, Stage::Failed);
        assert_eq!(store.retry_failed("c1", &[], "ops").expect("retry"), ["t2"]);
        assert!(store
            .retry_failed("c1", &[], "ops")
            .expect("retry")
            .is_empty());
        assert_eq!(tenant(&mut store, "c1", "t3").stage, Stage::Restored);

        // Queued again, they are claimed again, afresh.
        let (_, batch) = store
            .claim("w2", None, MINUTE_US)
            .expect("claim")
            .expect("a batch");
        let again: Vec<(&str, i64, Option<&str>)> = batch
            .iter()
            .map(|t| (t.tenant.as_str(), t.attempts, t.reason.as_deref()))
            .collect();
        assert_eq!(again, [("t1", 1, None), ("t2", 1, None)]);
    }

    /// A campaign "wiki; tracker" over `tenants`, batches of `batch_size`.
    fn start_phased(store: &mut ControlStore, id: &str, batch_size: u32, tenants: &[&str]) {
        let incident = incident(store);
        let mut campaign = campaign(id, &incident, batch_size, lifeboat_core::time::now_us());
        campaign.phases = vec![
            Phase::new(strings(&["wiki"])),
            Phase::new(strings(&["tracker"])),
        ];
        let tenants: Vec<(String, i64)> = tenants.iter().map(|t| (t.to_string(), 1)).collect();
        store
            .create_campaign(&campaign, &tenants, &[])
            .expect("create campaign");
    }

    /// The claimed batch's phase and tenants.
    fn claimed_phase(claim: Option<(Campaign, Vec<CampaignTenant>)>) -> (i64, Vec<String>) {
        let (_, tenants) = claim.expect("a batch");
        let phase = tenants[0].phase;
        assert!(
            tenants.iter().all(|t| t.phase == phase),
            "one phase a batch"
        );
        (phase, tenants.into_iter().map(|t| t.tenant).collect())
    }

    pub fn phases_open_once_every_tenant_is_through_the_one_before(new: New) {
        let f = new();
        let mut store = f.open();
        start_phased(&mut store, "c1", 2, &["t1", "t2", "t3"]);
        let c1 = store.campaigns().expect("campaigns").remove(0);
        assert_eq!(c1.phase_count(), 2);
        assert_eq!(c1.phase_sources(1), strings(&["tracker"]));
        assert!(c1.phases[0].opened_at_us.is_some());
        assert!(c1.phases[1].opened_at_us.is_none());

        let claim = |store: &mut ControlStore, worker: &str| {
            store.claim(worker, Some("c1"), MINUTE_US).expect("claim")
        };
        assert_eq!(
            claimed_phase(claim(&mut store, "w1")),
            (0, strings(&["t1", "t2"]))
        );
        assert_eq!(
            claimed_phase(claim(&mut store, "w2")),
            (0, strings(&["t3"]))
        );
        assert!(claim(&mut store, "w3").is_none());

        // Through its first phase, t1 waits, queued, until t2 and t3 are through theirs.
        assert!(!store
            .finish_phase("w2", "c1", "t1", Some(5))
            .expect("not w2's"));
        assert!(store
            .finish_phase("w1", "c1", "t1", Some(5))
            .expect("phase"));
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (t1.stage, t1.phase, t1.attempts, t1.worker.clone(), t1.rows),
            (Stage::Queued, 1, 0, None, Some(5))
        );
        assert_eq!(t1.phase_stage(0), Stage::Restored);
        assert_eq!(t1.phase_stage(1), Stage::Queued);
        assert!(t1.phase_restored(0) && !t1.phase_restored(1));
        assert!(!t1.is_restored(&c1));
        assert!(claim(&mut store, "w3").is_none(), "t2 and t3 hold phase 2");
        assert!(store
            .finish_phase("w1", "c1", "t2", Some(3))
            .expect("phase"));
        assert!(claim(&mut store, "w3").is_none(), "t3 holds phase 2");

        // A failed tenant does not hold the others back.
        assert!(store
            .set_stage("w2", "c1", "t3", Stage::Failed, Some("boom"), None)
            .expect("failed"));
        assert_eq!(
            claimed_phase(claim(&mut store, "w3")),
            (1, strings(&["t1", "t2"]))
        );
        let opened = store.campaigns().expect("campaigns").remove(0).phases[1].opened_at_us;
        assert!(opened.is_some());

        // Retried, it goes first, alone (a batch is of one phase), and the open phase stays
        // open for the others.
        assert!(store
            .set_stage("w3", "c1", "t1", Stage::Queued, Some("again"), None)
            .expect("back to the queue"));
        assert_eq!(store.retry_failed("c1", &[], "ops").expect("retry"), ["t3"]);
        assert_eq!(tenant(&mut store, "c1", "t3").phase, 0);
        assert_eq!(
            claimed_phase(claim(&mut store, "w4")),
            (0, strings(&["t3"]))
        );
        assert_eq!(
            claimed_phase(claim(&mut store, "w5")),
            (1, strings(&["t1"]))
        );
        assert!(store.finish_phase("w4", "c1", "t3", None).expect("phase"));
        assert_eq!(
            claimed_phase(claim(&mut store, "w6")),
            (1, strings(&["t3"]))
        );
        assert_eq!(
            store.campaigns().expect("campaigns").remove(0).phases[1].opened_at_us,
            opened,
            "opened once"
        );

        // The last phase ends as a campaign of one phase does; rows add up over phases.
        assert!(store
            .set_stage("w3", "c1", "t2", Stage::AwaitingAcceptance, None, Some(7))
            .expect("awaiting"));
        let t2 = tenant(&mut store, "c1", "t2");
        assert_eq!(
            (t2.stage, t2.phase, t2.rows),
            (Stage::AwaitingAcceptance, 1, Some(10))
        );
        assert!(t2.is_restored(&c1));
        assert!(store.accept(&t2.token).expect("accept"));
        assert_eq!(tenant(&mut store, "c1", "t2").stage, Stage::Restored);

        let phases: Vec<Json> = store
            .entries()
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "tenant-phase-restored")
            .map(|e| json!([e.actor, e.subject, e.details["phase"], e.details["rows"]]))
            .collect();
        assert_eq!(
            phases,
            [
                json!(["w1", "tenant:t1", 1, 5]),
                json!(["w1", "tenant:t2", 1, 3]),
                json!(["w4", "tenant:t3", 1, null]),
            ]
        );
    }

    pub fn acceptance_per_phase_moves_on_to_the_next_phase(new: New) {
        let f = new();
        let mut store = f.open();
        start_phased(&mut store, "c1", 2, &["t1", "t2"]);
        let claim = |store: &mut ControlStore, worker: &str| {
            store.claim(worker, Some("c1"), MINUTE_US).expect("claim")
        };
        assert_eq!(
            claimed_phase(claim(&mut store, "w1")),
            (0, strings(&["t1", "t2"]))
        );
        for t in ["t1", "t2"] {
            assert!(store
                .set_stage("w1", "c1", t, Stage::AwaitingAcceptance, None, Some(2))
                .expect("awaiting"));
        }
        // Awaiting acceptance of its first phase, a tenant does not hold the second phase
        // of the others, and it is not restored.
        let c1 = store.campaigns().expect("campaigns").remove(0);
        let t1 = tenant(&mut store, "c1", "t1");
        assert!(!t1.is_restored(&c1));
        assert!(store.accept(&t1.token).expect("accept"));
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!(
            (t1.stage, t1.phase, t1.awaiting_since_us),
            (Stage::Queued, 1, None)
        );
        assert!(!store.accept(&t1.token).expect("accept"), "once");
        assert_eq!(
            claimed_phase(claim(&mut store, "w2")),
            (1, strings(&["t1"]))
        );
        // The automatic acceptance moves t2 on likewise.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.auto_accept(1).expect("auto accept"), 1);
        let t2 = tenant(&mut store, "c1", "t2");
        assert_eq!((t2.stage, t2.phase), (Stage::Queued, 1));
        // Only the last phase's acceptance restores.
        assert!(store
            .set_stage("w2", "c1", "t1", Stage::AwaitingAcceptance, None, Some(4))
            .expect("awaiting"));
        assert!(store.accept(&t1.token).expect("accept"));
        let t1 = tenant(&mut store, "c1", "t1");
        assert_eq!((t1.stage, t1.phase, t1.rows), (Stage::Restored, 1, Some(6)));
        let accepts: Vec<Json> = store
            .entries()
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "accept")
            .map(|e| json!([e.subject, e.details["phase"], e.details["automatic"]]))
            .collect();
        assert_eq!(
            accepts,
            [
                json!(["tenant:t1", 1, false]),
                json!(["tenant:t2", 1, true]),
                json!(["tenant:t1", null, false]),
            ]
        );
    }

    pub fn phases_also_in_an_older_store(new: New) {
        let f = new();
        // A store made before phases: its campaign tables as they were, with a campaign.
        f.raw(
            "CREATE TABLE campaigns (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
                 target TEXT NOT NULL, target_time TEXT NOT NULL, batch_size BIGINT NOT NULL,
                 priority TEXT NOT NULL, created_at TEXT NOT NULL, created_at_us BIGINT NOT NULL,
                 created_by TEXT NOT NULL);
             CREATE TABLE campaign_tenants (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
                 rank BIGINT NOT NULL, token TEXT NOT NULL UNIQUE, users BIGINT NOT NULL,
                 stage TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, reason TEXT,
                 worker TEXT, lease_until_us BIGINT, started_at_us BIGINT, done_at_us BIGINT,
                 awaiting_since_us BIGINT, rows_written BIGINT, PRIMARY KEY (campaign, tenant));
             INSERT INTO campaigns VALUES ('old', 'i1', '{}', '2026-04-01T00:00:00.000000Z', 5,
                 '', '2026-04-01T00:00:00.000000Z', 1775001600000000, 'ops');
             INSERT INTO campaign_tenants (campaign, tenant, rank, token, users, stage)
                 VALUES ('old', 't1', 0, 'tok1', 3, 'queued');",
        );
        let mut store = f.open();
        let old = store.campaigns().expect("campaigns").remove(0);
        assert!(old.phases.is_empty());
        assert_eq!((old.phase_count(), old.phase_sources(0)), (1, &[][..]));
        let (phase, keys) = claimed_phase(store.claim("w1", None, MINUTE_US).expect("claim"));
        assert_eq!((phase, keys), (0, strings(&["t1"])));
        assert!(store
            .set_stage("w1", "old", "t1", Stage::Restored, None, Some(4))
            .expect("restored"));
        let t1 = tenant(&mut store, "old", "t1");
        assert!(t1.is_restored(&old));
        assert_eq!(t1.rows, Some(4));
    }

    pub fn exports_are_requested_built_and_downloaded_through_a_current_link(new: New) {
        let f = new();
        let mut store = f.open();
        start(
            &mut store,
            "c1",
            2,
            lifeboat_core::time::now_us(),
            &["t1", "t2"],
        );
        let tenants = tenants_of(&mut store, "c1");
        let (one, two) = (tenants["t1"].token.clone(), tenants["t2"].token.clone());
        let before = store.entries().expect("entries").len();
        let version = store.status_version().expect("version");

        assert!(!store
            .request_export("no-such-token", MINUTE_US)
            .expect("request"));
        assert!(store
            .claim_export("w1", MINUTE_US)
            .expect("claim")
            .is_none());
        assert!(store.request_export(&one, MINUTE_US).expect("request"));
        assert!(
            store.request_export(&one, MINUTE_US).expect("again"),
            "asked twice"
        );
        assert!(store.status_version().expect("version") > version);
        let exports = store.exports().expect("exports");
        assert_eq!(exports.len(), 1, "one request per tenant");
        assert_eq!(exports[0].state, "requested");

        // One builder at a time; a claim that runs out goes to the next.
        assert_eq!(
            store.claim_export("w1", 1).expect("claim"),
            Some(("c1".to_string(), "t1".to_string()))
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store
                .claim_export("w2", MINUTE_US)
                .expect("claim")
                .map(|c| c.1),
            Some("t1".to_string())
        );
        assert!(store
            .claim_export("w3", MINUTE_US)
            .expect("claim")
            .is_none());
        let details = json!({"rows": 3});
        assert!(
            !store
                .finish_export("w1", "c1", "t1", "old.zip", 10, MINUTE_US, details.clone())
                .expect("finish"),
            "w1 lost its claim"
        );
        assert!(store
            .finish_export("w2", "c1", "t1", "c1-x.zip", 1234, MINUTE_US, details)
            .expect("finish"));
        let ready = store.exports().expect("exports").remove(0);
        assert_eq!(ready.state, "ready");
        assert_eq!(ready.file.as_deref(), Some("c1-x.zip"));
        assert_eq!(ready.bytes, Some(1234));
        let link = ready.link.clone().expect("link");
        assert_eq!(link.len(), 64);
        assert!(ready.link_until_us.expect("until") > lifeboat_core::time::now_us());

        // Downloads: only the current link of that tenant's export.
        store.record_download("c1", "t1", &link).expect("download");
        let refused = store.record_download("c1", "t2", &link).expect_err("t2");
        assert_eq!(refused.kind(), ErrorKind::Usage);
        store.record_download("c1", "t1", "x").expect_err("made up");

        // A new link replaces the old one, which stops working.
        assert!(store.request_export(&one, 1).expect("new link"));
        let renewed = store.exports().expect("exports").remove(0);
        assert_ne!(renewed.link.as_deref(), Some(link.as_str()));
        store
            .record_download("c1", "t1", &link)
            .expect_err("old link");
        std::thread::sleep(Duration::from_millis(5));
        let expired = renewed.link.expect("link");
        store
            .record_download("c1", "t1", &expired)
            .expect_err("expired");

        // A failed build can be asked for again.
        assert!(store.request_export(&two, MINUTE_US).expect("request"));
        assert_eq!(
            store
                .claim_export("w1", MINUTE_US)
                .expect("claim")
                .map(|c| c.1),
            Some("t2".to_string())
        );
        store
            .fail_export("w1", "c1", "t2", "vault unreachable")
            .expect("fail");
        let failed = store.exports().expect("exports").remove(1);
        assert_eq!(failed.state, "failed");
        assert_eq!(failed.error.as_deref(), Some("vault unreachable"));
        assert!(store.request_export(&two, MINUTE_US).expect("again"));
        assert_eq!(store.exports().expect("exports")[1].state, "requested");

        let actions: Vec<(String, String, String)> = entries_after(&mut store, before);
        let count = |action: &str, subject: &str| {
            actions
                .iter()
                .filter(|(_, a, s)| a == action && s == subject)
                .count()
        };
        assert_eq!(count("export-request", "tenant:t1"), 1);
        assert_eq!(count("export-build", "tenant:t1"), 1);
        assert_eq!(count("export-download", "tenant:t1"), 1);
        assert_eq!(count("export-link", "tenant:t1"), 1);
        assert_eq!(count("export-request", "tenant:t2"), 2);
        assert_eq!(count("export-build", "tenant:t2"), 1);
        assert!(
            store.verify().expect("verify").is_empty(),
            "the chain holds"
        );
    }

    pub fn acceptance_by_token_and_automatic(new: New) {
        let f = new();
        let mut store = f.open();
        start(
            &mut store,
            "c1",
            3,
            lifeboat_core::time::now_us(),
            &["t1", "t2", "t3"],
        );
        store.claim("w1", None, MINUTE_US).expect("claim");
        let awaiting_from = lifeboat_core::time::now_us();
        for (t, stage) in [
            ("t1", Stage::AwaitingAcceptance),
            ("t2", Stage::AwaitingAcceptance),
            ("t3", Stage::Restored),
        ] {
            assert!(store
                .set_stage("w1", "c1", t, stage, None, Some(1))
                .expect("stage"));
        }
        let tenants = tenants_of(&mut store, "c1");
        let t1 = &tenants["t1"];
        assert_eq!(t1.stage, Stage::AwaitingAcceptance);
        assert!(t1.awaiting_since_us.expect("awaiting") >= awaiting_from);
        assert!(t1.done_at_us.is_some());

        assert!(
            !store.accept(&tenants["t3"].token).expect("accept"),
            "not awaited"
        );
        assert!(!store.accept("no-such-token").expect("accept"));
        assert!(store.accept(&tenants["t1"].token).expect("accept"));
        assert_eq!(tenant(&mut store, "c1", "t1").stage, Stage::Restored);
        assert!(!store.accept(&tenants["t1"].token).expect("accept"), "once");
        assert_eq!(
            tenant(&mut store, "c1", "t2").stage,
            Stage::AwaitingAcceptance
        );

        // Automatic acceptance: only once the tenant has waited long enough.
        assert_eq!(store.auto_accept(MINUTE_US).expect("auto accept"), 0);
        assert_eq!(
            tenant(&mut store, "c1", "t2").stage,
            Stage::AwaitingAcceptance
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.auto_accept(1).expect("auto accept"), 1);
        assert_eq!(tenant(&mut store, "c1", "t2").stage, Stage::Restored);
        assert_eq!(store.auto_accept(0).expect("auto accept"), 0);
    }

    pub fn attributes_are_stored_and_replaced(new: New) {
        let f = new();
        let mut store = f.open();
        assert!(store.attributes().expect("attributes").is_empty());
        let attributes =
            |pairs: &[(&str, &[(&str, &str)])]| -> BTreeMap<String, BTreeMap<String, String>> {
                pairs
                    .iter()
                    .map(|(t, values)| {
                        (
                            t.to_string(),
                            values
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_string()))
                                .collect(),
                        )
                    })
                    .collect()
            };
        store
            .set_attributes(
                &attributes(&[
                    ("a", &[("plan", "gold"), ("region", "eu")]),
                    ("b", &[("plan", "free")]),
                ]),
                "ops",
            )
            .expect("set");
        store
            .set_attributes(&attributes(&[("a", &[("plan", "silver")])]), "ops")
            .expect("replace");
        assert_eq!(
            f.open().attributes().expect("attributes"),
            attributes(&[
                ("a", &[("plan", "silver"), ("region", "eu")]),
                ("b", &[("plan", "free")]),
            ])
        );
    }

    fn contact(tenant: &str, email: &str, name: &str, origin: ContactOrigin) -> Contact {
        Contact {
            tenant: tenant.into(),
            email: email.into(),
            name: Some(name.into()),
            locale: None,
            origin,
            read_at: (origin == ContactOrigin::Vault).then(|| "2026-01-01T00:00:00Z".into()),
        }
    }

    pub fn contacts_by_origin_and_campaign_copies(new: New) {
        let f = new();
        let mut store = f.open();
        assert!(store.contacts(None).expect("contacts").is_empty());
        let imported = [
            contact("a", "ann@a.example", "Ann", ContactOrigin::Import),
            contact("b", "bob@b.example", "Bob", ContactOrigin::Import),
        ];
        store.import_contacts(&imported).expect("import");
        // Again, with a new name: an upsert, not a second row.
        let renamed = contact("a", "ann@a.example", "Ann A.", ContactOrigin::Import);
        store
            .import_contacts(std::slice::from_ref(&renamed))
            .expect("re-import");
        let vault = contact("a", "ann@a.example", "Ann (vault)", ContactOrigin::Vault);
        store
            .replace_vault_contacts(&strings(&["a"]), std::slice::from_ref(&vault))
            .expect("vault");
        assert_eq!(
            f.open().contacts(Some("a")).expect("contacts"),
            [renamed.clone(), vault.clone()]
        );
        // A new read replaces the tenant's vault contacts, never the imported ones.
        let other = contact("a", "root@a.example", "Root", ContactOrigin::Vault);
        store
            .replace_vault_contacts(&strings(&["a", "b"]), std::slice::from_ref(&other))
            .expect("vault again");
        assert_eq!(
            store.contacts(None).expect("contacts"),
            [renamed.clone(), other.clone(), imported[1].clone()]
        );
        store
            .record_campaign_contacts("c1", &[renamed.clone(), other.clone()])
            .expect("record");
        store
            .replace_vault_contacts(&strings(&["a"]), &[])
            .expect("cleared");
        assert_eq!(
            store.campaign_contacts("c1").expect("kept"),
            [renamed.clone(), other]
        );
        assert!(store.campaign_contacts("c2").expect("none").is_empty());
    }

    /// (event, recipient kind, address, tenant) of every delivery, in the order written.
    fn outbox(store: &mut ControlStore) -> Vec<(NoticeEvent, RecipientKind, String, String)> {
        store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .map(|d| {
                (
                    d.event,
                    d.recipient,
                    d.address,
                    d.tenant.unwrap_or_default(),
                )
            })
            .collect()
    }

    fn sent(
        items: &[(NoticeEvent, RecipientKind, &str, &str)],
    ) -> Vec<(NoticeEvent, RecipientKind, String, String)> {
        items
            .iter()
            .map(|(e, r, a, t)| (*e, *r, a.to_string(), t.to_string()))
            .collect()
    }

    pub fn subscribers_hear_incidents_once_confirmed(new: New) {
        use lifeboat_control::{Subscribed, SubscriberKind, SubscriberState};
        let f = new();
        let mut store = f.open();
        let first = incident(&mut store);
        let components = store.components().expect("components");
        let wiki = components
            .iter()
            .find(|c| c.source == "wiki")
            .expect("wiki")
            .id
            .clone();
        let page = "https://status.example";
        assert_eq!(
            store
                .subscribe("Pat@X.example", &[], page)
                .expect("subscribe"),
            Subscribed::ConfirmationSent
        );
        assert_eq!(
            store
                .subscribe("quinn@x.example", std::slice::from_ref(&wiki), page)
                .expect("subscribe"),
            Subscribed::ConfirmationSent
        );
        let bad = store
            .subscribe("nobody", &[], page)
            .expect_err("not an address");
        assert_eq!(bad.kind(), ErrorKind::Usage);
        let unknown = store
            .subscribe("r@x.example", &strings(&["nosuch"]), page)
            .expect_err("unknown component");
        assert_eq!(unknown.kind(), ErrorKind::Usage);
        let confirmations: Vec<Json> = store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .filter(|d| d.event == NoticeEvent::SubscriptionConfirmation)
            .map(|d| d.body)
            .collect();
        assert_eq!(confirmations.len(), 2);
        let token = |body: &Json, key: &str| -> String {
            body[key]
                .as_str()
                .expect("url")
                .rsplit('=')
                .next()
                .expect("token")
                .to_string()
        };
        assert!(!store.confirm_subscription("0000").expect("unknown"));
        for body in &confirmations {
            assert!(store
                .confirm_subscription(&token(body, "confirm_url"))
                .expect("confirm"));
        }
        assert_eq!(
            store.subscribe("pat@x.example", &[], page).expect("again"),
            Subscribed::AlreadyConfirmed
        );
        let hook = store
            .add_subscriber(
                SubscriberKind::Webhook,
                "https://hooks.example/h",
                &[],
                page,
                "ops",
            )
            .expect("webhook");
        let twice = store
            .add_subscriber(
                SubscriberKind::Webhook,
                "https://hooks.example/h",
                &[],
                page,
                "ops",
            )
            .expect_err("twice");
        assert!(twice.to_string().contains(&hook), "{twice}");
        store
            .change_incident(
                Some(&first),
                &IncidentChange {
                    translations: Default::default(),
                    name: None,
                    status: IncidentStatus::Monitoring,
                    impact: None,
                    message: "Watching.".into(),
                    components: BTreeMap::from([(
                        "wiki".to_string(),
                        ComponentStatus::DegradedPerformance,
                    )]),
                },
                "ops",
            )
            .expect("update");
        let to_subscribers =
            |store: &mut ControlStore| -> Vec<(NoticeEvent, RecipientKind, String)> {
                store
                    .deliveries(false)
                    .expect("deliveries")
                    .into_iter()
                    .filter(|d| {
                        matches!(d.recipient, RecipientKind::Address | RecipientKind::Webhook)
                            && d.event != NoticeEvent::SubscriptionConfirmation
                    })
                    .map(|d| (d.event, d.recipient, d.address))
                    .collect()
            };
        assert_eq!(
            to_subscribers(&mut store),
            [
                (
                    NoticeEvent::IncidentUpdated,
                    RecipientKind::Address,
                    "pat@x.example".into()
                ),
                (
                    NoticeEvent::IncidentUpdated,
                    RecipientKind::Address,
                    "quinn@x.example".into()
                ),
                (
                    NoticeEvent::IncidentUpdated,
                    RecipientKind::Webhook,
                    "https://hooks.example/h".into()
                ),
            ]
        );
        // Unsubscribed, removed, or of another component: nothing more.
        assert!(store
            .unsubscribe(&token(&confirmations[0], "list_unsubscribe"))
            .expect("unsubscribe"));
        store.remove_subscriber(&hook, "ops").expect("remove");
        let second = incident(&mut store);
        assert_eq!(to_subscribers(&mut store).len(), 3, "{second}");
        let states: Vec<(String, SubscriberState)> = store
            .subscribers()
            .expect("subscribers")
            .into_iter()
            .map(|s| (s.address, s.state))
            .collect();
        assert_eq!(
            states,
            [
                ("pat@x.example".to_string(), SubscriberState::Unsubscribed),
                ("quinn@x.example".to_string(), SubscriberState::Confirmed),
            ]
        );
        assert!(store
            .has_entry("subscriber-add", &format!("subscriber:{hook}"))
            .expect("audit"));
        assert!(store
            .has_entry("subscriber-remove", &format!("subscriber:{hook}"))
            .expect("audit"));
    }

    pub fn subscribers_keep_their_language_also_in_an_older_store(new: New) {
        let f = new();
        // A store made before subscribers kept a secret or a language, with one confirmed
        // subscriber.
        f.raw(
            "CREATE TABLE subscribers (id TEXT PRIMARY KEY, kind TEXT NOT NULL,
                 address TEXT NOT NULL, components TEXT NOT NULL, state TEXT NOT NULL,
                 confirm_token TEXT UNIQUE, unsubscribe_token TEXT NOT NULL UNIQUE,
                 page_url TEXT NOT NULL, created_at TEXT NOT NULL, confirmed_at TEXT,
                 unsubscribed_at TEXT, added_by TEXT, UNIQUE (kind, address));
             INSERT INTO subscribers VALUES ('old000000001', 'email', 'old@x.example', '[]',
                 'confirmed', NULL, 'oldtoken', 'https://status.example',
                 '2026-04-01T00:00:00.000000Z', '2026-04-01T00:00:00.000000Z', NULL, NULL);",
        );
        let mut store = f.open();
        let page = "https://status.example";
        store
            .subscribe_in("kei@x.example", &[], page, Some("ja"))
            .expect("subscribe");
        // A language that is no tag is not kept (it would end up in a link).
        store
            .subscribe_in("eve@x.example", &[], page, Some("ja\"><script>"))
            .expect("subscribe");
        let confirmations: Vec<(String, Json)> = store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .filter(|d| d.event == NoticeEvent::SubscriptionConfirmation)
            .map(|d| (d.address, d.body))
            .collect();
        let kei = &confirmations
            .iter()
            .find(|(a, _)| a == "kei@x.example")
            .expect("kei's confirmation")
            .1;
        assert_eq!(kei["lang"], "ja");
        let confirm = kei["confirm_url"].as_str().expect("url");
        assert!(confirm.ends_with("&lang=ja"), "{confirm}");
        assert!(kei["list_unsubscribe"]
            .as_str()
            .is_some_and(|u| u.ends_with("&lang=ja")));
        let eve = &confirmations
            .iter()
            .find(|(a, _)| a == "eve@x.example")
            .expect("eve's confirmation")
            .1;
        assert!(eve.get("lang").is_none(), "{eve}");
        assert!(!eve.to_string().contains("script"), "{eve}");
        let token = confirm
            .split_once("token=")
            .and_then(|(_, t)| t.split('&').next())
            .expect("token");
        assert!(store.confirm_subscription(token).expect("confirm"));

        // An incident reaches the old subscriber in English, the new one in Japanese.
        incident(&mut store);
        let updates: BTreeMap<String, Json> = store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .filter(|d| d.event == NoticeEvent::IncidentCreated && d.recipient.is_email())
            .map(|d| (d.address, d.body))
            .collect();
        assert_eq!(
            updates.keys().collect::<Vec<_>>(),
            ["kei@x.example", "old@x.example"]
        );
        assert_eq!(updates["kei@x.example"]["lang"], "ja");
        assert!(updates["old@x.example"].get("lang").is_none());
        assert!(updates["old@x.example"]["list_unsubscribe"]
            .as_str()
            .is_some_and(|u| u.ends_with("token=oldtoken")));
        let listed: BTreeMap<String, Option<String>> = store
            .subscribers()
            .expect("list")
            .into_iter()
            .map(|s| (s.address, s.lang))
            .collect();
        assert_eq!(listed["kei@x.example"].as_deref(), Some("ja"));
        assert_eq!(listed["old@x.example"], None);
    }

    pub fn concurrent_subscriptions_of_one_address_make_one_subscriber(new: New) {
        let f = new();
        f.open();
        let url = f.url.clone();
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    ControlStore::open(&url)
                        .expect("open")
                        .subscribe("same@x.example", &[], "https://status.example")
                        .map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join()
                .expect("thread")
                .expect("every request is answered");
        }
        let mut store = f.open();
        let subscribers = store.subscribers().expect("subscribers");
        assert_eq!(subscribers.len(), 1);
        assert_eq!(
            subscribers[0].state,
            lifeboat_control::SubscriberState::Pending
        );
    }

    pub fn support_requests_match_by_address_and_domain(new: New) {
        use lifeboat_control::SupportInput;
        let f = new();
        let mut store = f.open();
        let c = start(&mut store, "c1", 2, 1_000, &["a", "b"]);
        store
            .import_contacts(&[
                contact("a", "ann@a.example", "Ann", ContactOrigin::Import),
                contact("b", "bob@b.example", "Bob", ContactOrigin::Import),
                contact("z", "zed@gmail.com", "Zed", ContactOrigin::Import),
            ])
            .expect("contacts");
        let ask = |store: &mut ControlStore, email: &str| {
            store
                .file_support_request(&SupportInput {
                    email: email.into(),
                    message: "Help".into(),
                    ..SupportInput::default()
                })
                .expect("filed")
        };
        let by_email = ask(&mut store, "ANN@a.example");
        let by_domain = ask(&mut store, "carol@b.example");
        let free = ask(&mut store, "someone@gmail.com");
        let none = ask(&mut store, "x@elsewhere.example");
        let matches = |store: &mut ControlStore, id: &str| -> Vec<(String, String, String)> {
            store
                .support_request(id)
                .expect("read")
                .expect("there")
                .matches
                .into_iter()
                .map(|m| (m.tenant, m.contact, m.by))
                .collect()
        };
        assert_eq!(
            matches(&mut store, &by_email),
            [("a".into(), "ann@a.example".into(), "email".into())]
        );
        assert_eq!(
            matches(&mut store, &by_domain),
            [("b".into(), "bob@b.example".into(), "domain".into())]
        );
        assert!(matches(&mut store, &free).is_empty());
        let unmatched: Vec<String> = store
            .support_requests(true)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(unmatched, [none, free]);
        let tokens = tenants_of(&mut store, &c.id);
        let replies: Vec<(String, String, String)> = store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .filter(|d| d.event == NoticeEvent::SupportReply)
            .map(|d| {
                (
                    d.address,
                    d.tenant.unwrap_or_default(),
                    d.body["token"].as_str().expect("token").to_string(),
                )
            })
            .collect();
        assert_eq!(
            replies,
            [
                (
                    "ann@a.example".into(),
                    "a".into(),
                    tokens["a"].token.clone()
                ),
                (
                    "bob@b.example".into(),
                    "b".into(),
                    tokens["b"].token.clone()
                ),
            ]
        );
        let empty = store
            .file_support_request(&SupportInput {
                email: "ann@a.example".into(),
                message: "  ".into(),
                ..SupportInput::default()
            })
            .expect_err("no message");
        assert_eq!(empty.kind(), ErrorKind::Usage);
        assert_eq!(store.support_requests(false).expect("list").len(), 4);
    }

    pub fn notices_commit_with_their_change(new: New) {
        use NoticeEvent::*;
        use RecipientKind::{Contact as To, Operators};
        let f = new();
        let mut store = f.open();
        let incident = incident(&mut store);
        assert_eq!(
            outbox(&mut store),
            sent(&[(IncidentCreated, Operators, "", "")])
        );
        let contacts = [
            contact("a", "ann@a.example", "Ann", ContactOrigin::Import),
            contact("a", "ann@a.example", "Ann", ContactOrigin::Vault),
            contact("a", "root@a.example", "Root", ContactOrigin::Vault),
            contact("b", "bob@b.example", "Bob", ContactOrigin::Import),
        ];
        let c1 = campaign("c1", &incident, 1, lifeboat_core::time::now_us());
        store
            .create_campaign(&c1, &[("a".into(), 1), ("b".into(), 2)], &contacts)
            .expect("campaign");
        let queued: Vec<_> = store.deliveries(false).expect("deliveries")[1..].to_vec();
        assert_eq!(
            queued
                .iter()
                .map(|d| (d.address.as_str(), d.body["place"].as_i64()))
                .collect::<Vec<_>>(),
            [
                ("ann@a.example", Some(1)),
                ("root@a.example", Some(1)),
                ("bob@b.example", Some(2))
            ]
        );
        let token_a = tenant(&mut store, "c1", "a").token;
        assert_eq!(queued[0].body["token"], json!(token_a));
        assert_eq!(
            queued[2].body["token"],
            json!(tenant(&mut store, "c1", "b").token)
        );
        // A refused change enqueues nothing.
        let before = outbox(&mut store).len();
        usage_error(store.change_incident(
            Some(&incident),
            &IncidentChange {
                translations: Default::default(),
                message: "x".into(),
                components: BTreeMap::from([("nope".into(), ComponentStatus::MajorOutage)]),
                ..Default::default()
            },
            "ops",
        ));
        assert_eq!(outbox(&mut store).len(), before);
        store
            .change_incident(
                Some(&incident),
                &IncidentChange {
                    translations: Default::default(),
                    status: IncidentStatus::Monitoring,
                    message: "Restoring.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("update");
        // A claim tells the first tenant's contacts; its end tells them again.
        store.claim("w1", None, MINUTE_US).expect("claim");
        assert!(store
            .set_stage("w1", "c1", "a", Stage::AwaitingAcceptance, None, Some(3))
            .expect("stage"));
        assert!(store.accept(&token_a).expect("accept"));
        assert_eq!(
            outbox(&mut store)[before..],
            sent(&[
                (IncidentUpdated, Operators, "", ""),
                (IncidentUpdated, To, "ann@a.example", "a"),
                (IncidentUpdated, To, "root@a.example", "a"),
                (IncidentUpdated, To, "bob@b.example", "b"),
                (StageRestoring, To, "ann@a.example", "a"),
                (StageRestoring, To, "root@a.example", "a"),
                (StageAwaitingAcceptance, To, "ann@a.example", "a"),
                (StageAwaitingAcceptance, To, "root@a.example", "a"),
                (StageRestored, To, "ann@a.example", "a"),
                (StageRestored, To, "root@a.example", "a"),
            ])[..]
        );
        // A reminder once per tenant and wait.
        store.claim("w1", None, MINUTE_US).expect("claim b");
        assert!(store
            .set_stage("w1", "c1", "b", Stage::AwaitingAcceptance, None, Some(3))
            .expect("stage"));
        let before = outbox(&mut store).len();
        assert_eq!(store.enqueue_reminders(MINUTE_US).expect("not yet"), 0);
        assert_eq!(store.enqueue_reminders(0).expect("due"), 1);
        assert_eq!(store.enqueue_reminders(0).expect("once"), 0);
        assert_eq!(
            outbox(&mut store)[before..],
            sent(&[(AcceptanceReminder, To, "bob@b.example", "b")])[..]
        );
        // A failure, then the operator's retry: the tenant hears of both, with its place.
        let c2 = campaign("c2", &incident, 1, lifeboat_core::time::now_us());
        store
            .create_campaign(&c2, &[("a".into(), 1)], &contacts[..1])
            .expect("campaign 2");
        store.claim("w1", Some("c2"), MINUTE_US).expect("claim c2");
        assert!(store
            .set_stage("w1", "c2", "a", Stage::Failed, Some("disk full"), None)
            .expect("failed"));
        let before = outbox(&mut store).len();
        store.retry_failed("c2", &[], "ops").expect("retry");
        let all = store.deliveries(false).expect("deliveries");
        assert_eq!(
            outbox(&mut store)[before - 3..],
            sent(&[
                (StageQueued, To, "ann@a.example", "a"),
                (StageRestoring, To, "ann@a.example", "a"),
                (StageFailed, To, "ann@a.example", "a"),
                (StageQueued, To, "ann@a.example", "a"),
            ])[..]
        );
        assert_eq!(all[before].body["place"], json!(1));
        // Customers never see the operator's reason.
        assert!(all
            .iter()
            .all(|d| !d.body.to_string().contains("disk full")));
        // Operator notices are copied once per endpoint.
        let endpoints = strings(&["http://one.example/hook", "http://two.example/hook"]);
        assert_eq!(
            store.expand_operator_notices(&endpoints).expect("expand"),
            4
        );
        assert_eq!(store.expand_operator_notices(&endpoints).expect("again"), 0);
        let operator: Vec<_> = store
            .deliveries(false)
            .expect("deliveries")
            .into_iter()
            .filter(|d| d.recipient == RecipientKind::Operator)
            .map(|d| {
                (
                    d.event,
                    d.address,
                    d.body["incident"]["updates"].as_array().map(Vec::len),
                )
            })
            .collect();
        assert_eq!(
            operator,
            [
                (
                    IncidentCreated,
                    "http://one.example/hook".to_string(),
                    Some(1)
                ),
                (
                    IncidentCreated,
                    "http://two.example/hook".to_string(),
                    Some(1)
                ),
                (
                    IncidentUpdated,
                    "http://one.example/hook".to_string(),
                    Some(2)
                ),
                (
                    IncidentUpdated,
                    "http://two.example/hook".to_string(),
                    Some(2)
                ),
            ]
        );
    }

    pub fn deliveries_are_claimed_retried_and_dead(new: New) {
        let f = new();
        let mut store = f.open();
        incident(&mut store);
        store
            .expand_operator_notices(&strings(&["http://one.example/hook"]))
            .expect("expand");
        let policy = ClaimPolicy {
            lease_us: MINUTE_US,
            batch: 16,
            email: true,
        };
        let claimed = store.claim_deliveries("n1", policy).expect("claim");
        assert_eq!(claimed.len(), 1);
        let id = claimed[0].id.clone();
        assert_eq!(claimed[0].attempts, 1);
        // Claimed: nobody else gets it while the claim holds.
        assert!(store
            .claim_deliveries("n2", policy)
            .expect("none")
            .is_empty());
        assert!(!store.delivered("n2", &id).expect("not n2's"));
        // Given back untried: due again, the attempt not counted.
        assert!(!store.release_delivery("n2", &id).expect("not n2's"));
        assert!(store.release_delivery("n1", &id).expect("released"));
        let again = store.claim_deliveries("n1", policy).expect("claim again");
        assert_eq!((again[0].id.as_str(), again[0].attempts), (id.as_str(), 1));
        let later = lifeboat_core::time::now_us() + MINUTE_US;
        assert!(store
            .delivery_failed("n1", &id, "connection refused", later, false)
            .expect("failed"));
        assert!(store
            .claim_deliveries("n1", policy)
            .expect("not due")
            .is_empty());
        let d = store.delivery(&id).expect("read").expect("there");
        assert_eq!(
            (d.state, d.attempts, d.last_error.as_deref()),
            (DeliveryState::Pending, 1, Some("connection refused"))
        );
        usage_error(store.retry_delivery(&id, "ops"));
        // Due again now; a claim that runs out is claimed again, same id.
        f.raw("UPDATE outbox SET next_at_us = 0");
        let lapsed = ClaimPolicy {
            lease_us: -1,
            batch: 16,
            email: true,
        };
        assert_eq!(
            store.claim_deliveries("n1", lapsed).expect("claim")[0].id,
            id
        );
        let again = store.claim_deliveries("n2", policy).expect("lapsed");
        assert_eq!((again[0].id.as_str(), again[0].attempts), (id.as_str(), 3));
        assert!(!store.delivered("n1", &id).expect("lost its claim"));
        assert!(store
            .delivery_failed("n2", &id, "HTTP 500", 0, true)
            .expect("dead"));
        let dead = store.deliveries(true).expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
        usage_error(store.retry_delivery("nope", "ops"));
        store.retry_delivery(&id, "ops").expect("retry");
        assert!(store.deliveries(true).expect("none dead").is_empty());
        assert!(store
            .has_entry("notification-retry", &format!("notification:{id}"))
            .expect("audited"));
        let claimed = store.claim_deliveries("n1", policy).expect("claim");
        assert_eq!(
            (claimed[0].id.as_str(), claimed[0].attempts),
            (id.as_str(), 1)
        );
        assert!(store.delivered("n1", &id).expect("sent"));
        let d = store.delivery(&id).expect("read").expect("there");
        assert_eq!(d.state, DeliveryState::Sent);
        assert!(d.sent_at.is_some());
        assert!(store
            .claim_deliveries("n1", policy)
            .expect("nothing")
            .is_empty());
    }

    /// Several notifiers checking the cadence at once add one alarm per incident and
    /// period; an update withdraws the alarm still waiting and ends the silence.
    pub fn overdue_updates_ring_once_per_period_until_an_update(new: New) {
        let f = new();
        let mut store = f.open();
        let id = incident(&mut store);
        std::thread::sleep(Duration::from_millis(600));
        let opened = lifeboat_core::time::parse(
            &store
                .incident(&id)
                .expect("read")
                .expect("there")
                .created_at,
        )
        .expect("time");
        // Half a cadence into the first overdue period: stable while the test runs.
        let every = (lifeboat_core::time::now_us() - opened) * 2 / 3;
        let every_us = move |impact: Impact| (impact == Impact::Major).then_some(every);
        let added: usize = std::thread::scope(|scope| {
            let notifiers: Vec<_> = (0..3)
                .map(|_| {
                    let f = &f;
                    scope.spawn(move || {
                        f.open()
                            .enqueue_silence_alarms(&every_us, &strings(&["ops@example.com"]))
                            .expect("check")
                    })
                })
                .collect();
            notifiers
                .into_iter()
                .map(|n| n.join().expect("thread"))
                .sum()
        });
        assert_eq!(added, 1);
        let alarms = |store: &mut ControlStore| -> Vec<(String, RecipientKind, DeliveryState)> {
            store
                .incident_deliveries(&id)
                .expect("deliveries")
                .into_iter()
                .filter(|d| d.event == NoticeEvent::UpdateOverdue)
                .map(|d| (d.key, d.recipient, d.state))
                .collect()
        };
        let key = format!("silence:{id}:{opened}:1");
        assert_eq!(
            alarms(&mut store),
            [
                (
                    format!("{key}:operators"),
                    RecipientKind::Operators,
                    DeliveryState::Pending
                ),
                (
                    format!("{key}:email:ops@example.com"),
                    RecipientKind::Address,
                    DeliveryState::Pending
                ),
            ]
        );
        let none = |_: Impact| None;
        assert_eq!(
            store
                .enqueue_silence_alarms(&none, &[])
                .expect("no promise"),
            0
        );
        store
            .change_incident(
                Some(&id),
                &IncidentChange {
                    message: "Still on it.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("update");
        assert_eq!(
            store
                .enqueue_silence_alarms(&every_us, &[])
                .expect("after the update"),
            0
        );
        let states: Vec<DeliveryState> = alarms(&mut store).into_iter().map(|a| a.2).collect();
        assert_eq!(states, [DeliveryState::Withdrawn, DeliveryState::Withdrawn]);
    }

    pub fn concurrent_notifiers_never_share_a_delivery(new: New) {
        let f = new();
        let mut store = f.open();
        let incident = incident(&mut store);
        for i in 0..15 {
            store
                .change_incident(
                    Some(&incident),
                    &IncidentChange {
                        translations: Default::default(),
                        message: format!("Update {i}."),
                        ..Default::default()
                    },
                    "ops",
                )
                .expect("update");
        }
        store
            .expand_operator_notices(&strings(&["http://a.example/", "http://b.example/"]))
            .expect("expand");
        let policy = ClaimPolicy {
            lease_us: MINUTE_US,
            batch: 3,
            email: false,
        };
        let claimed: Vec<Vec<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|n| {
                    let f = &f;
                    scope.spawn(move || {
                        let mut store = f.open();
                        let mut mine = Vec::new();
                        loop {
                            let batch = store
                                .claim_deliveries(&format!("n{n}"), policy)
                                .expect("claim");
                            if batch.is_empty() {
                                return mine;
                            }
                            for d in batch {
                                assert!(store.delivered(&format!("n{n}"), &d.id).expect("sent"));
                                mine.push(d.id);
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let all: Vec<&String> = claimed.iter().flatten().collect();
        let distinct: BTreeSet<&String> = all.iter().copied().collect();
        assert_eq!((all.len(), distinct.len()), (32, 32));
    }

    pub fn status_version_moves_on_every_status_write(new: New) {
        let f = new();
        let mut store = f.open();
        let mut last = store.status_version().expect("version");
        let mut moved = |store: &mut ControlStore, what: &str| {
            let now = store.status_version().expect("version");
            assert!(now > last, "{what}: the version stayed at {last}");
            last = now;
        };
        store
            .ensure_components(
                &BTreeMap::from([("tracker".to_string(), "Tracker".to_string())]),
                "ops",
            )
            .expect("components");
        moved(&mut store, "ensure_components");
        let id = store
            .change_incident(
                None,
                &IncidentChange {
                    translations: Default::default(),
                    name: Some("Outage".into()),
                    message: "Looking.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("incident");
        moved(&mut store, "a new incident");
        store
            .change_incident(
                Some(&id),
                &IncidentChange {
                    translations: Default::default(),
                    status: IncidentStatus::Identified,
                    message: "Found.".into(),
                    ..Default::default()
                },
                "ops",
            )
            .expect("update");
        moved(&mut store, "an incident update");
        store
            .create_campaign(
                &campaign("c1", &id, 2, lifeboat_core::time::now_us()),
                &[("t1".to_string(), 1), ("t2".to_string(), 1)],
                &[],
            )
            .expect("campaign");
        moved(&mut store, "create_campaign");
        store.claim("w1", None, MINUTE_US).expect("claim");
        moved(&mut store, "claim");
        store
            .set_stage("w1", "c1", "t1", Stage::Failed, Some("x"), None)
            .expect("stage");
        moved(&mut store, "set_stage");
        store.retry_failed("c1", &[], "ops").expect("retry");
        moved(&mut store, "retry_failed");
        store
            .set_stage("w1", "c1", "t2", Stage::AwaitingAcceptance, None, None)
            .expect("stage");
        moved(&mut store, "set_stage to awaiting acceptance");
        let token = tenant(&mut store, "c1", "t2").token;
        assert!(store.accept(&token).expect("accept"));
        moved(&mut store, "accept");
        store
            .set_attributes(
                &BTreeMap::from([(
                    "t1".to_string(),
                    BTreeMap::from([("plan".to_string(), "gold".to_string())]),
                )]),
                "ops",
            )
            .expect("attributes");
        moved(&mut f.open(), "set_attributes, seen from another handle");

        // The guard's records are not the status page's: they leave the version alone.
        store
            .append("alice", "approve", "plan-1", json!({}))
            .expect("append");
        approve(&mut store, "plan-1", "alice", json!({})).expect("approve");
        store
            .set_apply(
                "plan-1",
                ApplyStatus::Running,
                &BTreeMap::new(),
                &[entry("apply")],
            )
            .expect("apply");
        store.halt("plan-1", "alice").expect("halt");
        assert_eq!(store.status_version().expect("version"), last);
    }

    pub fn unknown_words_in_the_database_are_errors(new: New) {
        let f = new();
        let mut store = f.open();
        start(&mut store, "c1", 1, lifeboat_core::time::now_us(), &["t1"]);
        store
            .set_apply(
                "plan-1",
                ApplyStatus::Running,
                &BTreeMap::new(),
                &[entry("apply")],
            )
            .expect("apply");
        let refused = |result: Result<()>, word: &str| {
            let e = result.expect_err("an unknown word");
            assert_eq!(e.kind(), ErrorKind::Source, "{e}");
            assert!(e.message().contains(word), "{e}");
            assert!(e.message().contains("is not one of"), "{e}");
        };
        f.raw("UPDATE applies SET state = 'paused'");
        refused(
            store.apply_state("plan-1").map(drop),
            "apply state \"paused\"",
        );
        f.raw("UPDATE campaign_tenants SET stage = 'lost'");
        refused(store.campaign_tenants(None).map(drop), "stage \"lost\"");
        f.raw("UPDATE components SET status = 'down'");
        refused(store.components().map(drop), "component status \"down\"");
        f.raw("UPDATE incidents SET impact = 'huge'");
        refused(store.incidents().map(drop), "impact \"huge\"");
        f.raw("UPDATE incidents SET impact = 'major', status = 'exploded'");
        refused(store.incidents().map(drop), "incident status \"exploded\"");
        f.raw("UPDATE incidents SET status = 'identified'; UPDATE incident_updates SET status = 'meh'");
        refused(store.incidents().map(drop), "incident status \"meh\"");
        f.raw("UPDATE incident_updates SET status = 'identified'");
        assert_eq!(store.incidents().expect("incidents").len(), 1, "repaired");
    }

    pub fn capture_standbys_until_stale_gone_or_leading(new: New) {
        let fixture = new();
        let mut store = fixture.open();
        store.stand_by("s", "h:1", 60_000_000).expect("stand by");
        store.stand_by("s", "h:2", 60_000_000).expect("stand by");
        store
            .stand_by("other", "h:3", 60_000_000)
            .expect("stand by");
        let first = store.capture_standbys("s").expect("standbys");
        let holders: Vec<&str> = first.iter().map(|s| s.holder.as_str()).collect();
        assert_eq!(holders, ["h:1", "h:2"]);
        // A heartbeat keeps `since`.
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.stand_by("s", "h:1", 60_000_000).expect("heartbeat");
        let again = store.capture_standbys("s").expect("standbys");
        assert_eq!(again[0].since_us, first[0].since_us);
        assert!(again[0].heartbeat_us > first[0].heartbeat_us);
        // Granted the lease: no longer a standby.
        let grant = store.acquire_capture_lease("s", "h:2", 10_000_000);
        assert!(matches!(grant, Ok(LeaseGrant::Granted(_))));
        let holders: Vec<String> = store
            .capture_standbys("s")
            .expect("standbys")
            .into_iter()
            .map(|s| s.holder)
            .collect();
        assert_eq!(holders, ["h:1"]);
        // A stale heartbeat is not shown; a clean exit removes the row.
        store.stand_by("s", "h:4", 1).expect("stand by");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.capture_standbys("s").expect("standbys").len(), 1);
        store.stop_standing_by("s", "h:1").expect("stop");
        assert!(store.capture_standbys("s").expect("standbys").is_empty());
        assert_eq!(store.capture_standbys("other").expect("standbys").len(), 1);
    }

    pub fn the_last_capture_error_replaces_the_one_before_without_passwords(new: New) {
        let fixture = new();
        let mut store = fixture.open();
        assert_eq!(store.capture_error("s").expect("read"), None);
        let mut error = CaptureError {
            source: "s".into(),
            holder: "h:1".into(),
            kind: "vault".into(),
            message: "put x: 503".into(),
            at_us: 10,
            stopped_capture: false,
            recovered_at_us: None,
        };
        store.record_capture_error(&error).expect("record");
        assert_eq!(store.capture_error("s").expect("read"), Some(error.clone()));
        error.recovered_at_us = Some(20);
        store.record_capture_error(&error).expect("record");
        assert_eq!(store.capture_error("s").expect("read"), Some(error.clone()));
        let stopped = CaptureError {
            kind: "source".into(),
            message: "cannot connect to postgres://app:hunter2@db/x: refused".into(),
            at_us: 30,
            stopped_capture: true,
            recovered_at_us: None,
            ..error
        };
        store.record_capture_error(&stopped).expect("record");
        let read = store.capture_error("s").expect("read").expect("an error");
        assert_eq!(
            read.message,
            "cannot connect to postgres://app:***@db/x: refused"
        );
        assert_eq!((read.at_us, read.stopped_capture), (30, true));
    }

    pub fn maintenances_go_forward_only_and_refusals_change_nothing(new: New) {
        let f = new();
        let mut store = f.open();
        incident(&mut store);
        let tracker = store.components().expect("components")[0].id.clone();
        let schedule = |store: &mut ControlStore, starts: &str, ends: &str, component: &str| {
            store.schedule_maintenance(
                &NewMaintenance {
                    name: "Upgrade".into(),
                    scheduled_for: starts.into(),
                    scheduled_until: ends.into(),
                    components: vec![component.into()],
                    message: String::new(),
                    auto_start: false,
                    auto_complete: false,
                },
                "ops",
            )
        };
        let version = store.status_version().expect("version");
        let audited = store.entries().expect("log").len();
        assert!(usage_error(schedule(
            &mut store,
            "2030-01-01T02:00:00Z",
            "2030-01-01T01:00:00Z",
            "tracker"
        ))
        .contains("--ends must be later than --starts"));
        assert!(usage_error(schedule(
            &mut store,
            "2030-01-01T01:00:00Z",
            "2030-01-01T02:00:00Z",
            "billing"
        ))
        .starts_with("unknown component \"billing\""));
        assert!(usage_error(store.advance_maintenance(
            "nope",
            MaintenanceStatus::InProgress,
            None,
            "ops"
        ))
        .starts_with("unknown maintenance nope"));
        assert_eq!(store.maintenances().expect("list"), vec![]);
        assert_eq!(store.status_version().expect("version"), version);
        assert_eq!(store.entries().expect("log").len(), audited);

        // By source or by component name.
        let id = schedule(
            &mut store,
            "2030-01-01T01:00:00Z",
            "2030-01-01T02:00:00Z",
            "Issue tracker",
        )
        .expect("scheduled");
        let m = store.maintenance(&id).expect("read").expect("there");
        assert_eq!(m.status, MaintenanceStatus::Scheduled);
        assert_eq!(m.components, [tracker]);
        assert_eq!(m.scheduled_for, "2030-01-01T01:00:00.000000Z");
        assert_eq!(m.updates.len(), 1);
        assert!(
            m.updates[0].body.contains("Upgrade is scheduled from"),
            "{m:?}"
        );
        assert!(usage_error(store.advance_maintenance(
            &id,
            MaintenanceStatus::Verifying,
            None,
            "ops"
        ))
        .contains("is scheduled: it cannot become verifying"));
        for status in [
            MaintenanceStatus::InProgress,
            MaintenanceStatus::Verifying,
            MaintenanceStatus::Completed,
        ] {
            store
                .advance_maintenance(&id, status, Some("step"), "ops")
                .expect("advance");
        }
        let done = store.maintenance(&id).expect("read").expect("there");
        assert_eq!(done.status, MaintenanceStatus::Completed);
        assert!(done.started_at.is_some() && done.monitoring_at.is_some());
        assert!(done.resolved_at.is_some());
        assert_eq!(done.updates.len(), 4);
        assert_eq!(done.updates[0].status, MaintenanceStatus::Completed);
        let version = store.status_version().expect("version");
        assert!(usage_error(store.advance_maintenance(
            &id,
            MaintenanceStatus::Completed,
            None,
            "ops"
        ))
        .contains("is completed: it cannot become completed"));
        assert_eq!(store.maintenance(&id).expect("read"), Some(done));
        assert_eq!(store.status_version().expect("version"), version);
        let actions: Vec<String> = store
            .entries()
            .expect("log")
            .iter()
            .filter(|e| e.subject == format!("maintenance:{id}"))
            .map(|e| e.action.clone())
            .collect();
        assert_eq!(
            actions,
            [
                "maintenance-schedule",
                "maintenance-start",
                "maintenance-verify",
                "maintenance-complete"
            ]
        );
    }

    /// `schedule` with these times (relative to now, hours) and automatic moves.
    fn scheduled(store: &mut ControlStore, name: &str, hours: (i64, i64), auto: bool) -> String {
        let at = |h: i64| {
            lifeboat_core::time::format_us(lifeboat_core::time::now_us() + h * 3_600_000_000)
        };
        store
            .schedule_maintenance(
                &NewMaintenance {
                    name: name.into(),
                    scheduled_for: at(hours.0),
                    scheduled_until: at(hours.1),
                    components: vec!["tracker".into()],
                    message: String::new(),
                    auto_start: auto,
                    auto_complete: auto,
                },
                "ops",
            )
            .expect("schedule")
    }

    pub fn maintenances_start_and_complete_by_themselves_once(new: New) {
        let f = new();
        let mut store = f.open();
        incident(&mut store);
        let going = scheduled(&mut store, "Going on", (-2, 1), true);
        let over = scheduled(&mut store, "Over", (-2, -1), true);
        let later = scheduled(&mut store, "Later", (1, 2), true);
        let by_hand = scheduled(&mut store, "By hand only", (-2, -1), false);
        let done_early = scheduled(&mut store, "Completed early", (-2, 1), true);
        store
            .advance_maintenance(&done_early, MaintenanceStatus::Completed, None, "ops")
            .expect("complete by hand");
        let stored = store.maintenance(&going).expect("read").expect("there");
        assert!(stored.auto_start && stored.auto_complete);
        let stored = store.maintenance(&by_hand).expect("read").expect("there");
        assert!(!stored.auto_start && !stored.auto_complete);
        let audited = store.entries().expect("log").len();
        let before = |store: &mut ControlStore, id: &str| store.maintenance(id).expect("read");
        let untouched: Vec<_> = [&later, &by_hand, &done_early]
            .iter()
            .map(|id| before(&mut store, id))
            .collect();

        // Several notifiers at once: each move is made once.
        let moves: Vec<(String, MaintenanceStatus)> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    let f = &f;
                    scope.spawn(move || f.open().run_scheduled_maintenances().expect("run"))
                })
                .collect();
            runs.into_iter()
                .flat_map(|r| r.join().expect("thread"))
                .collect()
        });
        let mut moves = moves;
        moves.sort();
        let mut expected = vec![
            (going.clone(), MaintenanceStatus::InProgress),
            (over.clone(), MaintenanceStatus::InProgress),
            (over.clone(), MaintenanceStatus::Completed),
        ];
        expected.sort();
        assert_eq!(moves, expected);
        let m = store.maintenance(&going).expect("read").expect("there");
        assert_eq!(m.status, MaintenanceStatus::InProgress);
        assert!(m.started_at.is_some() && m.resolved_at.is_none());
        assert_eq!(
            m.updates[0].body,
            "The scheduled maintenance is in progress."
        );
        let m = store.maintenance(&over).expect("read").expect("there");
        assert_eq!(m.status, MaintenanceStatus::Completed);
        assert!(m.started_at.is_some() && m.resolved_at.is_some());
        assert_eq!(
            m.updates.iter().map(|u| u.status).collect::<Vec<_>>(),
            [
                MaintenanceStatus::Completed,
                MaintenanceStatus::InProgress,
                MaintenanceStatus::Scheduled
            ]
        );
        for (id, was) in [&later, &by_hand, &done_early].iter().zip(&untouched) {
            assert_eq!(&before(&mut store, id), was, "{id} is left alone");
        }
        let entries = store.entries().expect("log");
        let automatic: Vec<(String, String)> = entries[audited..]
            .iter()
            .map(|e| {
                assert_eq!(e.actor, "lifeboat");
                (e.action.clone(), e.subject.clone())
            })
            .collect();
        assert_eq!(automatic.len(), 3, "{automatic:?}");
        assert!(automatic.contains(&("maintenance-start".into(), format!("maintenance:{going}"))));
        assert!(automatic.contains(&("maintenance-complete".into(), format!("maintenance:{over}"))));

        // Nothing more to do; a move by hand still works after an automatic one.
        let version = store.status_version().expect("version");
        assert_eq!(store.run_scheduled_maintenances().expect("run"), vec![]);
        assert_eq!(store.status_version().expect("version"), version);
        store
            .advance_maintenance(&going, MaintenanceStatus::Verifying, None, "ops")
            .expect("verify by hand");
        assert_eq!(store.run_scheduled_maintenances().expect("run"), vec![]);
    }

    pub fn maintenance_auto_columns_also_in_an_older_store(new: New) {
        let f = new();
        // A store made before maintenances could move by themselves, with one whose
        // window has passed: it is not moved after the upgrade.
        f.raw(
            "CREATE TABLE maintenances (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                 status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                 scheduled_for TEXT NOT NULL, scheduled_until TEXT NOT NULL, started_at TEXT,
                 monitoring_at TEXT, resolved_at TEXT);
             INSERT INTO maintenances VALUES ('old000000001', 'Old', 'scheduled',
                 '2026-04-01T00:00:00.000000Z', '2026-04-01T00:00:00.000000Z',
                 '2026-04-02T00:00:00.000000Z', '2026-04-02T01:00:00.000000Z', NULL, NULL,
                 NULL);",
        );
        let mut store = f.open();
        let old = store
            .maintenance("old000000001")
            .expect("read")
            .expect("old");
        assert_eq!(old.status, MaintenanceStatus::Scheduled);
        assert!(!old.auto_start && !old.auto_complete);
        assert_eq!(store.run_scheduled_maintenances().expect("run"), vec![]);
        // Opened again (another process): the columns are there once.
        let mut again = f.open();
        incident(&mut again);
        let id = scheduled(&mut again, "New", (-1, 1), true);
        assert_eq!(
            again.run_scheduled_maintenances().expect("run"),
            vec![(id, MaintenanceStatus::InProgress)]
        );
        assert_eq!(
            store
                .maintenance("old000000001")
                .expect("read")
                .expect("old"),
            old
        );
    }

    pub fn expired_archives_are_removed_once_and_asked_for_again(new: New) {
        let f = new();
        let mut store = f.open();
        start(
            &mut store,
            "c1",
            2,
            lifeboat_core::time::now_us(),
            &["t1", "t2"],
        );
        let tenants = tenants_of(&mut store, "c1");
        let (one, two) = (tenants["t1"].token.clone(), tenants["t2"].token.clone());
        // t1's link lasts 1 µs, t2's a minute.
        for (token, tenant, link_us) in [(&one, "t1", 1), (&two, "t2", MINUTE_US)] {
            assert!(store.request_export(token, link_us).expect("request"));
            assert_eq!(
                store
                    .claim_export("w1", MINUTE_US)
                    .expect("claim")
                    .map(|c| c.1),
                Some(tenant.to_string())
            );
            assert!(store
                .finish_export(
                    "w1",
                    "c1",
                    tenant,
                    &format!("c1-{tenant}.zip"),
                    10,
                    link_us,
                    json!({})
                )
                .expect("finish"));
        }
        std::thread::sleep(Duration::from_millis(5));
        let before = store.entries().expect("entries").len();

        // Within the grace nothing is removed.
        assert_eq!(store.expire_exports(MINUTE_US, "w1").expect("expire"), 0);
        assert_eq!(store.archives_to_delete().expect("list"), vec![]);

        // Several removers at once: t1's archive is marked once; t2's link is current.
        let marked: usize = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..3)
                .map(|n| {
                    let f = &f;
                    scope.spawn(move || {
                        f.open()
                            .expire_exports(0, &format!("w{n}"))
                            .expect("expire")
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().expect("thread")).sum()
        });
        assert_eq!(marked, 1);
        let entries = store.entries().expect("entries");
        let removals: Vec<_> = entries[before..]
            .iter()
            .map(|e| (e.action.as_str(), e.subject.as_str(), e.details.clone()))
            .collect();
        assert_eq!(
            removals,
            [(
                "export-remove",
                "tenant:t1",
                json!({"campaign": "c1", "file": "c1-t1.zip"})
            )]
        );
        let exports = store.exports().expect("exports");
        assert_eq!(exports[0].state, "removed");
        assert_eq!(exports[1].state, "ready");
        let link = exports[0].link.clone().expect("link kept");
        store
            .record_download("c1", "t1", &link)
            .expect_err("a removed archive is not downloaded");

        // The file is deleted, then forgotten.
        assert_eq!(
            store.archives_to_delete().expect("list"),
            vec![("c1".to_string(), "t1".to_string(), "c1-t1.zip".to_string())]
        );
        store
            .archive_deleted("c1", "t1", "c1-t1.zip")
            .expect("deleted");
        assert_eq!(store.archives_to_delete().expect("list"), vec![]);
        assert_eq!(store.exports().expect("exports")[0].file, None);

        // Asked for again: a new request, built again.
        assert!(store.request_export(&one, MINUTE_US).expect("request"));
        assert_eq!(store.exports().expect("exports")[0].state, "requested");
        assert_eq!(
            store
                .claim_export("w1", MINUTE_US)
                .expect("claim")
                .map(|c| c.1),
            Some("t1".to_string())
        );
    }
}
