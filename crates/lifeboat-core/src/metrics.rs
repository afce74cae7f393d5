//! The process's metrics, in the Prometheus/OpenMetrics text format (`prometheus-client`).
//! Every series Lifeboat exposes is registered here, so that `/metrics` always lists the
//! same families whichever command serves it; a family a process does not feed simply has
//! no samples (or stays 0). docs/operations.md lists them.
//!
//! `Metrics` is a cheap handle (clones share the registry). `Metrics::global()` is the
//! binary's one registry; engines feed it, and tests may make their own with
//! `Metrics::new()`. Capture of one source is fed through a `CaptureMetrics`, made once
//! per source by `Metrics::capture`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of `Metrics::encode`'s text (OpenMetrics 1.0, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CampaignLabels {
    campaign: String,
    stage: String,
}

type LagFamily = Family<SourceLabel, Histogram, fn() -> Histogram>;

/// Commit-to-durable delay buckets, in seconds: 5 ms to 10 minutes.
fn lag_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
    ])
}

/// The kinds of capture errors counted: `ErrorKind`'s, and `transient` for errors worth
/// retrying whatever their kind (a fatal error is counted once, by `error_kind`); each
/// failed attempt capture retries is counted under the fault it met: `vault`, `source`,
/// `replication` or `control`.
pub const ERROR_KINDS: [&str; 7] = [
    "config",
    "control",
    "corrupt",
    "replication",
    "source",
    "transient",
    "vault",
];

/// The word `error` is counted under.
pub fn error_kind(error: &crate::Error) -> &'static str {
    use crate::ErrorKind;
    if error.is_transient() {
        return "transient";
    }
    match error.kind() {
        ErrorKind::Config | ErrorKind::Usage | ErrorKind::OutOfWindow => "config",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::Source => "source",
        ErrorKind::Vault => "vault",
    }
}

struct Inner {
    registry: Registry,
    lag: LagFamily,
    transactions: Family<SourceLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    leader: Family<SourceLabel, Gauge>,
    head_age: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    /// Commit time (µs) of each source's newest transaction durable in the vault; the age
    /// is computed when the metrics are read, so it keeps growing while nothing arrives.
    head_times: Mutex<BTreeMap<String, i64>>,
    restore_rows: Counter,
    campaign_tenants: Family<CampaignLabels, Gauge>,
    drill_runs: Counter,
    drill_failures: Counter,
    drill_tenants: Family<ResultLabel, Counter>,
    drill_tenant_seconds: Histogram,
    drill_last_success: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// What a live drill's tenant came to: `passed`, `failed`, or `busy` (restored and
/// checked against the vault, not compared with live rows that kept changing).
pub const DRILL_RESULTS: [&str; 3] = ["passed", "failed", "busy"];

/// Recovery time of one tenant in a live drill, in seconds: 50 ms to an hour.
fn drill_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

/// A handle on one registry of Lifeboat's metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A new registry holding every family, with no samples yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lifeboat");
        let lag = LagFamily::new_with_constructor(lag_histogram);
        let transactions = Family::<SourceLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let leader = Family::<SourceLabel, Gauge>::default();
        let head_age = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        let restore_rows = Counter::default();
        let campaign_tenants = Family::<CampaignLabels, Gauge>::default();
        let drill_runs = Counter::default();
        let drill_failures = Counter::default();
        let drill_tenants = Family::<ResultLabel, Counter>::default();
        let drill_tenant_seconds = drill_histogram();
        let drill_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "capture_lag_seconds",
            "Delay from a transaction's commit in its source to its segment being durable \
             in the vault",
            lag.clone(),
        );
        registry.register(
            "capture_transactions",
            "Transactions captured and durable in the vault",
            transactions.clone(),
        );
        registry.register(
            "capture_errors",
            "Errors met by capture, by kind (config, source, vault, corrupt, ...)",
            errors.clone(),
        );
        registry.register(
            "capture_leader",
            "1 while this process captures the source",
            leader.clone(),
        );
        registry.register(
            "vault_head_age_seconds",
            "Time since the commit of the source's newest transaction durable in the vault",
            head_age.clone(),
        );
        registry.register(
            "restore_rows",
            "Rows written by restores that committed",
            restore_rows.clone(),
        );
        registry.register(
            "campaign_tenants",
            "Tenants of each recovery campaign, by stage",
            campaign_tenants.clone(),
        );
        registry.register(
            "drill_runs",
            "Live drills run (`drill --live`), passed or not",
            drill_runs.clone(),
        );
        registry.register(
            "drill_failures",
            "Live drills that failed: a tenant failed, or the drill could not finish",
            drill_failures.clone(),
        );
        registry.register(
            "drill_tenants",
            "Tenants drilled live, by result (passed, failed, busy)",
            drill_tenants.clone(),
        );
        registry.register(
            "drill_tenant_seconds",
            "Recovery time of one tenant in a live drill: its restore into the scratch \
             database and the read-back",
            drill_tenant_seconds.clone(),
        );
        registry.register(
            "drill_last_success_timestamp_seconds",
            "When the last live drill that passed finished (Unix time)",
            drill_last_success.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                lag,
                transactions,
                errors,
                leader,
                head_age,
                head_times: Mutex::new(BTreeMap::new()),
                restore_rows,
                campaign_tenants,
                drill_runs,
                drill_failures,
                drill_tenants,
                drill_tenant_seconds,
                drill_last_success,
            }),
        }
    }

    /// The binary's registry.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::new)
    }

    /// The handle capture of `source` feeds. Its series appear at once (at 0).
    pub fn capture(&self, source: &str) -> CaptureMetrics {
        let label = SourceLabel {
            source: source.to_string(),
        };
        // Every kind at 0, so that a rate can be taken before the first error.
        for kind in ERROR_KINDS {
            let _ = self.inner.errors.get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                source: source.to_string(),
            });
        }
        CaptureMetrics {
            metrics: self.clone(),
            source: source.to_string(),
            lag: self.inner.lag.get_or_create_owned(&label),
            transactions: self.inner.transactions.get_or_create_owned(&label),
            leader: self.inner.leader.get_or_create_owned(&label),
        }
    }

    /// Count one error of `kind` (a short word: one of `ERROR_KINDS`, see `error_kind`) in
    /// capture of `source`.
    pub fn capture_error(&self, source: &str, kind: &str) {
        self.inner
            .errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                source: source.to_string(),
            })
            .inc();
    }

    /// Count rows a committed restore wrote.
    pub fn restore_rows(&self, rows: u64) {
        self.inner.restore_rows.inc_by(rows);
    }

    /// Replace the campaign counts with `counts`: (campaign, stage) → tenants.
    pub fn set_campaign_tenants(&self, counts: &BTreeMap<(String, String), u64>) {
        let family = &self.inner.campaign_tenants;
        family.clear();
        for ((campaign, stage), n) in counts {
            family
                .get_or_create(&CampaignLabels {
                    campaign: campaign.clone(),
                    stage: stage.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Show the live drill's series at 0 before its first run ends, so that an alert on
    /// their rate works from the start.
    pub fn drill_started(&self) {
        for result in DRILL_RESULTS {
            let _ = self.inner.drill_tenants.get_or_create(&ResultLabel {
                result: result.to_string(),
            });
        }
    }

    /// One tenant of a live drill came to `result` (one of `DRILL_RESULTS`) after
    /// `seconds` of recovery.
    pub fn drill_tenant(&self, result: &str, seconds: f64) {
        self.inner
            .drill_tenants
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.inner.drill_tenant_seconds.observe(seconds.max(0.0));
    }

    /// A live drill ended: passed (at `finished_us`) or failed.
    pub fn drill_run(&self, passed: bool, finished_us: i64) {
        self.inner.drill_runs.inc();
        if passed {
            self.inner.drill_last_success.set(finished_us as f64 / 1e6);
        } else {
            self.inner.drill_failures.inc();
        }
    }

    /// Every family in the OpenMetrics text format (`CONTENT_TYPE`), ages computed now.
    pub fn encode(&self) -> String {
        let now = crate::time::now_us();
        let heads = match self.inner.head_times.lock() {
            Ok(heads) => heads.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for (source, at) in heads {
            self.inner
                .head_age
                .get_or_create(&SourceLabel { source })
                .set((now - at).max(0) as f64 / 1e6);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// What capture of one source feeds.
#[derive(Clone, Debug)]
pub struct CaptureMetrics {
    metrics: Metrics,
    source: String,
    lag: Histogram,
    transactions: Counter,
    leader: Gauge,
}

impl CaptureMetrics {
    /// A handle fed by nobody's scrape: for captures run inside another command.
    pub fn detached(source: &str) -> CaptureMetrics {
        Metrics::new().capture(source)
    }

    /// A transaction became durable `lag_us` after its commit.
    pub fn durable(&self, lag_us: i64) {
        self.transactions.inc();
        self.lag.observe(lag_us.max(0) as f64 / 1e6);
    }

    /// The vault's head for this source now has this commit time.
    pub fn head(&self, commit_time_us: i64) {
        let mut heads = match self.metrics.inner.head_times.lock() {
            Ok(heads) => heads,
            Err(poisoned) => poisoned.into_inner(),
        };
        heads.insert(self.source.clone(), commit_time_us);
    }

    /// Count `error` under its kind (`error_kind`).
    pub fn error_of(&self, error: &crate::Error) {
        self.error(error_kind(error));
    }

    /// Whether this process is capturing the source.
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Count one error of `kind` (see `Metrics::capture_error`).
    pub fn error(&self, kind: &str) {
        self.metrics.capture_error(&self.source, kind);
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_and_capture_feeds_its_series() {
        let metrics = Metrics::new();
        let app = metrics.capture("app");
        let text = metrics.encode();
        for family in [
            "# TYPE lifeboat_capture_lag_seconds histogram",
            "# TYPE lifeboat_capture_transactions counter",
            "# TYPE lifeboat_capture_errors counter",
            "# TYPE lifeboat_capture_leader gauge",
            "# TYPE lifeboat_restore_rows counter",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        assert!(text.contains("lifeboat_capture_transactions_total{source=\"app\"} 0"));
        assert!(text.contains("lifeboat_capture_errors_total{kind=\"transient\",source=\"app\"} 0"));
        assert!(
            text.contains("lifeboat_capture_errors_total{kind=\"replication\",source=\"app\"} 0")
        );
        assert!(text.contains("lifeboat_capture_errors_total{kind=\"control\",source=\"app\"} 0"));
        // Families without samples yet (no head known, no campaign) are left out.
        assert!(!text.contains("lifeboat_vault_head_age_seconds"));
        assert!(text.ends_with("# EOF\n"));

        app.leader(true);
        app.durable(20_000);
        app.durable(2_000_000);
        app.error("vault");
        app.head(crate::time::now_us() - 3_000_000);
        metrics.restore_rows(12);
        let mut counts = BTreeMap::new();
        counts.insert(("c1".to_string(), "queued".to_string()), 4);
        metrics.set_campaign_tenants(&counts);
        let text = metrics.encode();
        assert!(text.contains("lifeboat_capture_transactions_total{source=\"app\"} 2"));
        assert!(text.contains("lifeboat_capture_lag_seconds_count{source=\"app\"} 2"));
        assert!(text.contains("lifeboat_capture_lag_seconds_bucket{le=\"0.025\",source=\"app\"} 1"));
        assert!(text.contains("lifeboat_capture_leader{source=\"app\"} 1"));
        assert!(text.contains("lifeboat_capture_errors_total{kind=\"vault\",source=\"app\"} 1"));
        assert!(text.contains("lifeboat_restore_rows_total 12"));
        assert!(text.contains("lifeboat_campaign_tenants{campaign=\"c1\",stage=\"queued\"} 4"));
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("lifeboat_vault_head_age_seconds{source=\"app\"} "))
            .expect("head age")
            .parse()
            .expect("a number");
        assert!((3.0..60.0).contains(&age), "age {age}");

        // A campaign gone from the store is gone from the counts.
        metrics.set_campaign_tenants(&BTreeMap::new());
        assert!(!metrics.encode().contains("campaign=\"c1\""));
    }

    #[test]
    fn a_live_drill_feeds_runs_failures_tenants_and_the_last_success() {
        let metrics = Metrics::new();
        metrics.drill_started();
        let text = metrics.encode();
        assert!(text.contains("lifeboat_drill_runs_total 0"), "{text}");
        assert!(text.contains("lifeboat_drill_failures_total 0"), "{text}");
        assert!(text.contains("lifeboat_drill_tenants_total{result=\"busy\"} 0"));
        assert!(text.contains("lifeboat_drill_last_success_timestamp_seconds 0"));
        metrics.drill_tenant("passed", 0.3);
        metrics.drill_tenant("failed", 2.0);
        metrics.drill_run(false, 1_000_000);
        metrics.drill_run(true, 1_700_000_000_500_000);
        let text = metrics.encode();
        assert!(text.contains("lifeboat_drill_runs_total 2"), "{text}");
        assert!(text.contains("lifeboat_drill_failures_total 1"), "{text}");
        assert!(text.contains("lifeboat_drill_tenants_total{result=\"passed\"} 1"));
        assert!(
            text.contains("lifeboat_drill_tenant_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_drill_last_success_timestamp_seconds 1700000000.5"),
            "{text}"
        );
    }
}
