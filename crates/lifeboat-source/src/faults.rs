//! How capture meets transient faults (docs/faults.md): each failed attempt waits a
//! jittered, capped, exponentially growing delay (`backon`'s policy) before the next; an
//! episode of failures of one kind is logged once when it starts and once when it ends;
//! every failure is counted in `FaultStats`, which is shared while capture runs, and in
//! the source's `lifeboat_capture_errors_total{kind}` under the fault's name.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use lifeboat_core::config::CaptureConfig;
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::{Error, Result};

use crate::Stop;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The vault's store (S3 or a directory).
    Vault,
    /// A source database connection (PostgreSQL queries, an SQLite file).
    Source,
    /// A PostgreSQL replication stream.
    Replication,
    /// The control store.
    Control,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Vault,
        FaultKind::Source,
        FaultKind::Replication,
        FaultKind::Control,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Vault => "vault",
            FaultKind::Source => "source",
            FaultKind::Replication => "replication",
            FaultKind::Control => "control",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one kind of fault.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Transient failures: every failed attempt.
    pub failures: AtomicU64,
    /// Episodes begun.
    pub episodes: AtomicU64,
    /// Whether an episode is going on now.
    pub failing: AtomicBool,
    /// The length of the episodes that ended, in milliseconds.
    pub failed_ms: AtomicU64,
}

/// Capture's fault counters, per kind: shared (`Arc`) so that they can be read while
/// capture runs; and the latest episode, which a caller may watch (`latest`).
#[derive(Debug, Default)]
pub struct FaultStats {
    counters: [FaultCounters; 4],
    latest: tokio::sync::watch::Sender<Option<FaultEpisode>>,
}

/// An episode of transient faults, as the last one to begin or end left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEpisode {
    pub kind: FaultKind,
    /// The error of its first failure.
    pub message: String,
    /// When its first failure happened, and (once over) the next success: microseconds
    /// since the epoch, this machine's clock.
    pub since_us: i64,
    pub recovered_us: Option<i64>,
}

/// One kind's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FaultCount {
    pub failures: u64,
    pub episodes: u64,
    pub failing: bool,
    pub failed_ms: u64,
}

impl FaultStats {
    pub fn of(&self, kind: FaultKind) -> &FaultCounters {
        &self.counters[kind.index()]
    }

    /// Every kind's counters now.
    pub fn snapshot(&self) -> Vec<(FaultKind, FaultCount)> {
        FaultKind::ALL
            .iter()
            .map(|&kind| {
                let c = self.of(kind);
                (
                    kind,
                    FaultCount {
                        failures: c.failures.load(Ordering::Relaxed),
                        episodes: c.episodes.load(Ordering::Relaxed),
                        failing: c.failing.load(Ordering::Relaxed),
                        failed_ms: c.failed_ms.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// The latest episode to begin or end: changes when one does (not at every failure).
    pub fn latest(&self) -> tokio::sync::watch::Receiver<Option<FaultEpisode>> {
        self.latest.subscribe()
    }

    /// The transient failures of every kind, added up.
    pub fn failures_total(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.failures.load(Ordering::Relaxed))
            .sum()
    }
}

/// An episode going on: since when, how many attempts failed, the delays still to come.
#[derive(Debug)]
struct Episode {
    since: Instant,
    failures: u64,
    delays: backon::ExponentialBackoff,
}

/// The retry state of one source's capture: one episode per kind at most.
#[derive(Debug)]
pub struct Retry {
    source: String,
    policy: ExponentialBuilder,
    max: Duration,
    stats: Arc<FaultStats>,
    metrics: CaptureMetrics,
    episodes: [Option<Episode>; 4],
}

impl Retry {
    pub fn new(
        source: &str,
        config: &CaptureConfig,
        stats: Arc<FaultStats>,
        metrics: CaptureMetrics,
    ) -> Retry {
        let initial = Duration::from_millis(config.retry_initial_delay_ms.max(1));
        let max = Duration::from_millis(config.retry_max_delay_ms).max(initial);
        Retry {
            source: source.to_string(),
            policy: ExponentialBuilder::new()
                .with_jitter()
                .with_factor(2.0)
                .with_min_delay(initial)
                .with_max_delay(max)
                .without_max_times(),
            max,
            stats,
            metrics,
            episodes: Default::default(),
        }
    }

    pub fn stats(&self) -> &Arc<FaultStats> {
        &self.stats
    }

    /// A transient failure of `kind`: counted (in `FaultStats` and the source's error
    /// metric), and logged when it begins an episode. Returns how long to wait before the
    /// next attempt.
    pub fn failed(&mut self, kind: FaultKind, error: &Error) -> Duration {
        let counters = self.stats.of(kind);
        counters.failures.fetch_add(1, Ordering::Relaxed);
        self.metrics.error(kind.name());
        let episode = self.episodes[kind.index()].get_or_insert_with(|| {
            counters.episodes.fetch_add(1, Ordering::Relaxed);
            counters.failing.store(true, Ordering::Relaxed);
            self.stats.latest.send_replace(Some(FaultEpisode {
                kind,
                message: error.message().to_string(),
                since_us: lifeboat_core::time::now_us(),
                recovered_us: None,
            }));
            tracing::warn!(
                source = %self.source,
                fault = kind.name(),
                "{} fault: {error}; capture retries until it recovers, acknowledging \
                 nothing that is not in the vault",
                kind.name()
            );
            Episode {
                since: Instant::now(),
                failures: 0,
                delays: self.policy.build(),
            }
        });
        episode.failures += 1;
        episode.delays.next().unwrap_or(self.max)
    }

    /// An attempt of `kind` succeeded: the episode of that kind, if any, ends (one line).
    pub fn succeeded(&mut self, kind: FaultKind) {
        let Some(episode) = self.episodes[kind.index()].take() else {
            return;
        };
        let elapsed = episode.since.elapsed();
        self.stats.latest.send_if_modified(|latest| match latest {
            Some(latest) if latest.kind == kind && latest.recovered_us.is_none() => {
                latest.recovered_us = Some(lifeboat_core::time::now_us());
                true
            }
            _ => false,
        });
        let counters = self.stats.of(kind);
        counters.failing.store(false, Ordering::Relaxed);
        counters
            .failed_ms
            .fetch_add(elapsed.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(
            source = %self.source,
            fault = kind.name(),
            failures = episode.failures,
            duration_ms = elapsed.as_millis() as u64,
            "{} recovered after {} failed attempts in {:.1} s",
            kind.name(),
            episode.failures,
            elapsed.as_secs_f64()
        );
    }

    /// Run `attempt` until it succeeds or fails permanently. A transient failure waits
    /// and tries again; a stop requested meanwhile ends the wait and returns the error.
    pub async fn run<T, F, Fut>(
        &mut self,
        kind: FaultKind,
        stop: &Stop,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        loop {
            match attempt().await {
                Ok(value) => {
                    self.succeeded(kind);
                    return Ok(value);
                }
                Err(e) if e.is_transient() && !stop.is_set() => {
                    let delay = self.failed(kind, &e);
                    stop.sleep(delay).await;
                    if stop.is_set() {
                        return Err(stopped(e));
                    }
                }
                Err(e) if e.is_transient() => return Err(stopped(e)),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The error of a capture stopped while a fault lasted: no longer worth retrying.
pub fn stopped(e: Error) -> Error {
    Error::new(
        e.kind(),
        format!(
            "stopped while retrying (nothing that is not in the vault was acknowledged): {}",
            e.message()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial: u64, max: u64) -> CaptureConfig {
        CaptureConfig {
            retry_initial_delay_ms: initial,
            retry_max_delay_ms: max,
            ..CaptureConfig::default()
        }
    }

    #[test]
    fn delays_grow_with_jitter_up_to_their_cap_and_restart_with_each_episode() {
        let stats = Arc::new(FaultStats::default());
        let metrics = lifeboat_core::metrics::Metrics::new();
        let mut retry = Retry::new(
            "s",
            &config(100, 1_000),
            stats.clone(),
            metrics.capture("s"),
        );
        let error = Error::vault("down").transient();
        let delays: Vec<Duration> = (0..8)
            .map(|_| retry.failed(FaultKind::Vault, &error))
            .collect();
        // Each delay is the policy's (100, 200, 400, 800, 1000, …) plus up to as much again.
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let ms = delay.as_millis() as u64;
            assert!((base..=2 * base).contains(&ms), "{delays:?}");
        }
        assert_ne!(delays[5], delays[6], "jittered: {delays:?}");
        let latest = stats.latest();
        let begun = latest.borrow().clone().expect("an episode");
        assert_eq!(
            (begun.kind, begun.message.as_str()),
            (FaultKind::Vault, "down")
        );
        assert_eq!(begun.recovered_us, None);
        let vault = stats.of(FaultKind::Vault);
        assert_eq!(vault.failures.load(Ordering::Relaxed), 8);
        assert_eq!(vault.episodes.load(Ordering::Relaxed), 1);
        assert!(vault.failing.load(Ordering::Relaxed));
        retry.succeeded(FaultKind::Vault);
        assert!(!vault.failing.load(Ordering::Relaxed));
        let ended = latest.borrow().clone().expect("an episode");
        assert_eq!(ended.since_us, begun.since_us);
        assert!(ended.recovered_us.is_some_and(|at| at >= begun.since_us));
        // A success without an episode changes nothing; a new episode starts small again.
        retry.succeeded(FaultKind::Vault);
        let first = retry.failed(FaultKind::Vault, &error).as_millis();
        assert!((100..=200).contains(&first), "{first}");
        assert_eq!(vault.episodes.load(Ordering::Relaxed), 2);
        // Kinds are counted apart.
        retry.failed(FaultKind::Replication, &error);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot[2].0, FaultKind::Replication);
        assert_eq!(snapshot[2].1.failures, 1);
        assert_eq!(stats.failures_total(), 10);
        // Every failed attempt is in the error metric too, under its fault's name.
        let text = metrics.encode();
        assert!(
            text.contains("lifeboat_capture_errors_total{kind=\"vault\",source=\"s\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_capture_errors_total{kind=\"replication\",source=\"s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_capture_errors_total{kind=\"control\",source=\"s\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn run_retries_transient_errors_only_and_stops_when_asked() {
        let stats = Arc::new(FaultStats::default());
        let mut retry = Retry::new(
            "s",
            &config(1, 5),
            stats.clone(),
            CaptureMetrics::detached("s"),
        );
        let stop = Stop::new();
        let mut calls = 0;
        let value = retry
            .run(FaultKind::Vault, &stop, || {
                calls += 1;
                let result = if calls < 4 {
                    Err(Error::vault("503").transient())
                } else {
                    Ok(calls)
                };
                async move { result }
            })
            .await
            .expect("recovers");
        assert_eq!(value, 4);
        assert_eq!(
            stats.of(FaultKind::Vault).failures.load(Ordering::Relaxed),
            3
        );

        // A permanent error is returned at once.
        let mut calls = 0;
        let e = retry
            .run(FaultKind::Vault, &stop, || {
                calls += 1;
                async { Err::<(), _>(Error::corrupt("bad object")) }
            })
            .await
            .expect_err("permanent");
        assert_eq!((calls, e.message()), (1, "bad object"));

        // A stop ends a fault that lasts.
        stop.set();
        let e = retry
            .run(FaultKind::Source, &stop, || async {
                Err::<(), _>(Error::source("refused").transient())
            })
            .await
            .expect_err("stopped");
        assert!(e.message().starts_with("stopped while retrying"), "{e}");
        assert!(
            !e.is_transient(),
            "a stopped capture is not retried further"
        );
    }
}
