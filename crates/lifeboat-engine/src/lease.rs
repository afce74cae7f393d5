//! One capture per source: the capture lease, taken in the control store, renewed while
//! capture runs, and the fence every vault write of the leader passes
//! (docs/vault-format.md, "One writer per source").
//!
//! A leader renews every third of the lease time. It starts no write later than two
//! thirds of the lease time after it sent its last successful renewal (its own monotonic
//! clock) and abandons a write still running at five sixths; the store cannot expire the
//! lease before a whole lease time after that renewal was sent, so a leader that stopped
//! renewing has stopped writing before anyone else is granted the lease. Right before each
//! write it also checks that the lease row still names it with its epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_control::{CaptureError, CaptureLease, CaptureStandby, ControlStore, LeaseGrant};
use lifeboat_core::config::Config;
use lifeboat_core::vault::{FenceCheck, Vault, WriteFence};
use lifeboat_core::{Error, Result};
use lifeboat_source::capture::CaptureStats;
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

/// This process, as a lease names its holder: `host:pid`.
pub fn holder_id() -> String {
    crate::guard::lock_holder()
}

/// The lease time configured (`[capture] lease_seconds`).
pub fn lease_time(config: &Config) -> Duration {
    Duration::from_secs(config.capture.lease_seconds)
}

/// Run blocking control store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::source(format!("control store: a task failed: {e}")))?
}

/// Who holds `source`'s capture lease (holder, epoch, expiry; `is_live` tells whether it
/// still runs), or `None` when no capture ever led it.
pub async fn leader(control_url: &str, source: &str) -> Result<Option<CaptureLease>> {
    let (url, source) = (control_url.to_string(), source.to_string());
    blocking(move || ControlStore::open(&url)?.capture_lease(&source)).await
}

/// How long a standby's heartbeat counts: a standby not heard of for twice the lease time
/// is not shown (it died without saying so).
pub fn standby_staleness(lease: Duration) -> Duration {
    lease * 2
}

/// Record this process as standing by for `source`, or refresh its heartbeat.
pub async fn stand_by(control_url: &str, source: &str, lease: Duration) -> Result<()> {
    let (url, source, holder) = (control_url.to_string(), source.to_string(), holder_id());
    let stale_us = standby_staleness(lease).as_micros() as i64;
    blocking(move || ControlStore::open(&url)?.stand_by(&source, &holder, stale_us)).await
}

/// This process stands by for `source` no longer.
pub async fn stop_standing_by(control_url: &str, source: &str) -> Result<()> {
    let (url, source, holder) = (control_url.to_string(), source.to_string(), holder_id());
    blocking(move || ControlStore::open(&url)?.stop_standing_by(&source, &holder)).await
}

/// The captures standing by for `source` (heartbeat not stale), longest waiting first.
pub async fn standbys(control_url: &str, source: &str) -> Result<Vec<CaptureStandby>> {
    let (url, source) = (control_url.to_string(), source.to_string());
    blocking(move || ControlStore::open(&url)?.capture_standbys(&source)).await
}

/// Record `error` as its source's last capture error.
pub async fn record_error(control_url: &str, error: CaptureError) -> Result<()> {
    let url = control_url.to_string();
    blocking(move || ControlStore::open(&url)?.record_capture_error(&error)).await
}

/// `source`'s last recorded capture error.
pub async fn last_error(control_url: &str, source: &str) -> Result<Option<CaptureError>> {
    let (url, source) = (control_url.to_string(), source.to_string());
    blocking(move || ControlStore::open(&url)?.capture_error(&source)).await
}

/// "held by host:pid (epoch N), whose lease expires at TIME".
pub fn describe(lease: &CaptureLease) -> String {
    format!(
        "{} (epoch {}), whose lease expires at {}",
        lease.holder,
        lease.epoch,
        lifeboat_core::time::format_us(lease.expires_at_us)
    )
}

/// What asking for a lease got.
pub enum Acquired {
    Leader(Leader),
    /// Another capture leads the source.
    Held(CaptureLease),
}

/// Ask for `source`'s capture lease once.
pub async fn acquire(control_url: &str, source: &str, lease: Duration) -> Result<Acquired> {
    let holder = holder_id();
    let sent = Instant::now();
    let (url, name, who) = (control_url.to_string(), source.to_string(), holder.clone());
    let lease_us = lease.as_micros() as i64;
    let (store, grant) = blocking(move || {
        let mut store = ControlStore::open(&url)?;
        let mut grant = store.acquire_capture_lease(&name, &who, lease_us)?;
        if let LeaseGrant::Held(current) = &grant {
            // A holder of this machine that no longer runs writes nothing more (killed
            // before it could release): no need to wait for its lease to run out.
            if crate::guard::holder_is_gone(&current.holder) {
                let from = (current.holder.as_str(), current.epoch);
                grant = store.take_over_capture_lease(&name, &who, lease_us, from)?;
            }
        }
        Ok((store, grant))
    })
    .await?;
    let granted = match grant {
        LeaseGrant::Held(current) => return Ok(Acquired::Held(current)),
        LeaseGrant::Granted(granted) => granted,
    };
    let shared = Arc::new(Shared {
        source: source.to_string(),
        holder,
        epoch: granted.epoch,
        lease,
        store: Mutex::new(store),
        renewed: Mutex::new(sent),
        lost: AtomicBool::new(false),
        stop: Stop::new(),
    });
    let renewal = tokio::spawn(renew(shared.clone()));
    tracing::info!(source, epoch = granted.epoch, "capture lease granted");
    Ok(Acquired::Leader(Leader {
        shared,
        renewal,
        lease: granted,
    }))
}

/// A held capture lease, renewed in the background until released or lost.
pub struct Leader {
    shared: Arc<Shared>,
    renewal: tokio::task::JoinHandle<()>,
    /// As granted.
    pub lease: CaptureLease,
}

struct Shared {
    source: String,
    holder: String,
    epoch: i64,
    lease: Duration,
    store: Mutex<ControlStore>,
    /// When the last successful renewal (or the grant) was sent.
    renewed: Mutex<Instant>,
    lost: AtomicBool,
    /// Set when the lease is lost: the capture running under it stops.
    stop: Stop,
}

impl Shared {
    fn renewed(&self) -> Instant {
        self.renewed
            .lock()
            .map(|r| *r)
            .unwrap_or_else(|e| *e.into_inner())
    }

    /// No write starts after this.
    fn write_deadline(&self) -> Instant {
        self.renewed() + self.lease * 2 / 3
    }

    /// A write still running at this is abandoned.
    fn abandon_at(&self) -> Instant {
        self.renewed() + self.lease * 5 / 6
    }

    fn mark_lost(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(source = %self.source, epoch = self.epoch, "capture lease lost: {why}");
        }
        self.stop.set();
    }

    fn lost_error(&self) -> Error {
        Error::source(format!(
            "source {}: this capture lost its lease (epoch {}); it stopped writing",
            self.source, self.epoch
        ))
    }

    /// Whether a write may start now, by the local clock.
    fn check_time(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error());
        }
        if Instant::now() >= self.write_deadline() {
            self.mark_lost("not renewed in time");
            return Err(self.lost_error());
        }
        Ok(())
    }
}

/// Renew every third of the lease time until the lease is lost or the task aborted.
async fn renew(shared: Arc<Shared>) {
    let lease_us = shared.lease.as_micros() as i64;
    loop {
        let next = shared.renewed() + shared.lease / 3;
        let deadline = shared.write_deadline();
        tokio::time::sleep_until(next.min(deadline).into()).await;
        if Instant::now() >= shared.write_deadline() {
            shared.mark_lost("not renewed in time");
            return;
        }
        let sent = Instant::now();
        let worker = shared.clone();
        let renewal = blocking(move || {
            lifeboat_core::failpoint::pause("capture.lease-renew");
            let mut store = worker.store.lock().unwrap_or_else(|e| e.into_inner());
            store.renew_capture_lease(&worker.source, &worker.holder, worker.epoch, lease_us)
        });
        let within = shared
            .write_deadline()
            .saturating_duration_since(Instant::now());
        match tokio::time::timeout(within, renewal).await {
            Ok(Ok(Some(_))) => {
                if let Ok(mut renewed) = shared.renewed.lock() {
                    *renewed = sent;
                }
            }
            Ok(Ok(None)) => {
                shared.mark_lost("another capture holds it now");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(source = %shared.source, "cannot renew the capture lease: {e}");
                // Try again soon; the deadline decides.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    }
}

/// The fence of a leader's vault writes.
#[derive(Clone)]
struct Fence(Arc<Shared>);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "capture lease of {} (epoch {})",
            self.0.source, self.0.epoch
        )
    }
}

impl WriteFence for Fence {
    fn check(&self) -> FenceCheck<'_> {
        let shared = self.0.clone();
        Box::pin(async move {
            shared.check_time()?;
            let worker = shared.clone();
            let holds = blocking(move || {
                let mut store = worker.store.lock().unwrap_or_else(|e| e.into_inner());
                store.holds_capture_lease(&worker.source, &worker.holder, worker.epoch)
            });
            // A store that does not answer in time cannot allow the write.
            let within = shared
                .write_deadline()
                .saturating_duration_since(Instant::now());
            let holds = tokio::time::timeout(within, holds)
                .await
                .unwrap_or_else(|_| Err(Error::source("control store: no answer in time")));
            match holds {
                Ok(true) => {}
                Ok(false) => {
                    shared.mark_lost("its row names another holder or epoch, or expired");
                    return Err(shared.lost_error());
                }
                // The store cannot say now: the local deadline still holds.
                Err(e) => {
                    tracing::warn!(source = %shared.source, "cannot check the capture lease: {e}")
                }
            }
            shared.check_time()?;
            Ok(shared
                .abandon_at()
                .saturating_duration_since(Instant::now()))
        })
    }
}

impl Leader {
    pub fn epoch(&self) -> i64 {
        self.shared.epoch
    }

    /// `vault`, with every write fenced by this lease.
    pub fn fence(&self, vault: &Vault) -> Vault {
        vault.fenced(Arc::new(Fence(self.shared.clone())))
    }

    /// Set when the lease is lost, and when `outer` is set: what the capture under this
    /// lease runs until.
    pub fn stop(&self, outer: &Stop) -> Stop {
        let (outer, inner) = (outer.clone(), self.shared.stop.clone());
        tokio::spawn(async move {
            while !inner.is_set() {
                if outer.is_set() {
                    inner.set();
                    break;
                }
                inner.sleep(Duration::from_millis(100)).await;
            }
        });
        self.shared.stop.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    pub fn lost_error(&self) -> Error {
        self.shared.lost_error()
    }

    /// Give the lease up now (a clean stop), so that a standby takes over at once.
    pub async fn release(self) {
        self.renewal.abort();
        let shared = self.shared.clone();
        shared.stop.set();
        if shared.lost.load(Ordering::SeqCst) {
            return;
        }
        let released = blocking(move || {
            let mut store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
            store.release_capture_lease(&shared.source, &shared.holder, shared.epoch)
        })
        .await;
        if let Err(e) = released {
            tracing::warn!(source = %self.shared.source, "cannot release the capture lease: {e}");
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.renewal.abort();
        self.shared.stop.set();
    }
}

/// Capture `source` until caught up under `leader`, its lease, and give the lease up:
/// what a command that needs the vault caught up runs when no capture leads the source
/// (`catch_up`). A capture started meanwhile stands by until the lease is released.
pub async fn capture_leading(
    config: &Config,
    vault: &Vault,
    source: &str,
    leader: Leader,
) -> Result<CaptureStats> {
    let result = async {
        let live = LiveSource::open(source, config.source(source)?, true).await?;
        let stop = leader.stop(&Stop::new());
        live.capture(
            &leader.fence(vault),
            config.capture.clone(),
            lifeboat_core::metrics::CaptureMetrics::detached(source),
            true,
            &stop,
        )
        .await
    }
    .await;
    if leader.is_lost() {
        return Err(leader.lost_error());
    }
    leader.release().await;
    result
}
