//! Capture of every configured source into the vault, one task per source
//! (`lifeboat_source` does the work; this runs and collects it). Each source is captured
//! only under its lease (`lease`): a source another capture leads is stood by for, and
//! taken over when that capture's lease runs out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_control::CaptureError;
use lifeboat_core::config::Config;
use lifeboat_core::metrics::{CaptureMetrics, Metrics};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::capture::CaptureStats;
use lifeboat_source::faults::{FaultEpisode, FaultStats};
use lifeboat_source::live::LiveSource;
use lifeboat_source::Stop;

use crate::context::{control_url, open_sources, source_names};
use crate::lease::{self, Acquired};
use crate::progress::{Event, Progress};

/// What a capture run did: each finished source's statistics (by name), and the errors of
/// those that failed. The first error is the run's; one source failing stops the others.
pub struct Run {
    pub reports: Vec<CaptureStats>,
    pub errors: Vec<Error>,
}

/// Capture `sources` (all when empty) until `stop` is set, or, with `until_caught_up`,
/// until everything committed before the call is durable in the vault. Each source is
/// captured while this run holds its lease; a source another capture leads is stood by
/// for (with `until_caught_up`: that capture is waited for until it has stored everything
/// committed before the call, `catch_up`). Standing by, leading and losing a lease are
/// reported to `progress`.
/// Each source's capture is counted in `metrics` (`lifeboat_capture_*`,
/// `lifeboat_vault_head_age_seconds`).
pub async fn run(
    config: &Config,
    config_path: &Option<PathBuf>,
    sources: &[String],
    until_caught_up: bool,
    stop: &Stop,
    progress: &dyn Progress,
    metrics: &Metrics,
) -> Result<Run> {
    let names = source_names(config, sources)?;
    if names.is_empty() {
        return Err(Error::config(
            "no sources configured: add a [sources.NAME] section",
        ));
    }
    // Check every source before the vault is touched: bad input changes nothing.
    let sources = open_sources(config, &names, true).await?;
    // The vault must exist: `lifeboat init` is the only command that creates one. Capture
    // retries the vault's transient faults itself (docs/faults.md), so the S3 client
    // gives up on a failing request soon and lets capture report the episode.
    let vault = Vault::open(Vault::store_for_retrying_caller(&config.vault)?).await?;
    let control = control_url(config, config_path)?;
    let config = &with_state_dir(config, config_path);

    let (events, mut reports) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let mut tasks = tokio::task::JoinSet::new();
    for source in sources {
        let term = Term {
            config: config.clone(),
            control: control.clone(),
            vault: vault.clone(),
            until_caught_up,
            stop: stop.clone(),
            events: events.clone(),
            metrics: metrics.capture(&source.name),
        };
        tasks.spawn(async move {
            let name = source.name.clone();
            let result = term.lead(source).await;
            if let Err(e) = &result {
                term.metrics.error_of(e);
                // One source failing stops the run: the operator must see it.
                term.stop.set();
            }
            (name, result)
        });
    }
    drop(events);
    let mut run = Run {
        reports: Vec::new(),
        errors: Vec::new(),
    };
    loop {
        tokio::select! {
            Some(event) = reports.recv() => progress.event(event),
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (name, result) =
                    joined.map_err(|e| Error::source(format!("a capture task failed: {e}")))?;
                match result {
                    Ok(stats) => run.reports.push(stats),
                    Err(e) => run
                        .errors
                        .push(if e.message().starts_with(&format!("source {name}")) {
                            e
                        } else {
                            e.context(format!("source {name}"))
                        }),
                }
            }
        }
    }
    while let Ok(event) = reports.try_recv() {
        progress.event(event);
    }
    run.reports.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(run)
}

/// `config` with `[capture] state_dir` defaulting to `lifeboat-state` beside the
/// configuration file (capture's local index of the key maps).
fn with_state_dir(config: &Config, config_path: &Option<PathBuf>) -> Config {
    let mut config = config.clone();
    if config.capture.state_dir.is_none() {
        config.capture.state_dir = config_path
            .as_ref()
            .and_then(|p| p.parent())
            .map(|d| d.join("lifeboat-state"));
    }
    config
}

/// One source's capture within a run: standing by, leading, standing by again.
struct Term {
    config: Config,
    control: String,
    vault: Vault,
    until_caught_up: bool,
    stop: Stop,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// The source's series; its leader gauge is 1 while this run leads it.
    metrics: CaptureMetrics,
}

impl Term {
    fn say(&self, text: String) {
        let _ = self.events.send(Event::Notice(text));
    }

    /// Capture `source` whenever this run holds its lease, until stopped (or caught up),
    /// recording in the control store while it stands by, each fault episode, and the
    /// error that stopped capture. Standing by ends with the run.
    async fn lead(&self, source: LiveSource) -> Result<CaptureStats> {
        let name = source.name.clone();
        // One count of transient faults across every lease term of this run.
        let faults = Arc::<FaultStats>::default();
        let (done, finished) = tokio::sync::oneshot::channel();
        let recorder = tokio::spawn(record_episodes(
            self.control.clone(),
            name.clone(),
            faults.latest(),
            finished,
        ));
        let mut state = TermState::default();
        let result = self.terms(source, faults, &mut state).await;
        let _ = done.send(());
        let _ = recorder.await;
        if let (Err(e), true) = (&result, state.capture_failed) {
            let error = CaptureError {
                source: name.clone(),
                holder: lease::holder_id(),
                kind: lifeboat_core::metrics::error_kind(e).to_string(),
                message: e.message().to_string(),
                at_us: lifeboat_core::time::now_us(),
                stopped_capture: true,
                recovered_at_us: None,
            };
            if let Err(why) = lease::record_error(&self.control, error).await {
                tracing::warn!(source = %name, "cannot record capture's error: {why}");
            }
        }
        if state.standing {
            if let Err(why) = lease::stop_standing_by(&self.control, &name).await {
                tracing::warn!(source = %name, "cannot record that capture stopped standing by: {why}");
            }
        }
        result
    }

    /// The lease terms of `lead`: standing by, leading, standing by again.
    async fn terms(
        &self,
        source: LiveSource,
        faults: Arc<FaultStats>,
        state: &mut TermState,
    ) -> Result<CaptureStats> {
        let name = source.name.clone();
        let lease_time = lease::lease_time(&self.config);
        // How often a standby asks again: it takes over at most this long after expiry.
        let poll = (lease_time / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut opened = Some(source);
        // When this run last told the control store it stands by.
        let mut heartbeat: Option<std::time::Instant> = None;
        // A catch-up waits at most this long for another capture leading the source.
        let deadline =
            std::time::Instant::now() + Duration::from_secs(self.config.capture.wait_seconds);
        let mut total = CaptureStats {
            source: name.clone(),
            faults: faults.clone(),
            ..CaptureStats::default()
        };
        let mut announced = None;
        // Whether the control store has answered this run, and since when it has not.
        let mut answered = false;
        let mut outage: Option<std::time::Instant> = None;
        loop {
            if self.stop.is_set() {
                return Ok(total);
            }
            let acquired = match lease::acquire(&self.control, &name, lease_time).await {
                Ok(acquired) => acquired,
                // Once the control store has answered, an outage of it is waited out
                // standing by (writing nothing: no lease), not fatal; at start, and for a
                // one-shot catch-up, it is reported.
                Err(e) if answered && !self.until_caught_up => {
                    if outage.is_none() {
                        self.say(format!(
                            "source {name}: the control store does not answer ({}); standing \
                             by, writing nothing, until it does",
                            e.message()
                        ));
                        outage = Some(std::time::Instant::now());
                    }
                    self.stop.sleep(poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            answered = true;
            if let Some(since) = outage.take() {
                self.say(format!(
                    "source {name}: the control store answers again, after {:.1} s",
                    since.elapsed().as_secs_f64()
                ));
            }
            let leader = match acquired {
                Acquired::Held(current) => {
                    if self.until_caught_up {
                        // The leader stores what is committed now: wait for it, never
                        // capture the source a second time alongside it.
                        let say = |line: String| self.say(line);
                        let holder = current.holder.clone();
                        let waited = crate::catch_up::wait_for_leader(
                            &self.config,
                            &self.control,
                            &self.vault,
                            &name,
                            current,
                            deadline,
                            &say,
                        )
                        .await?;
                        if waited.is_some() {
                            self.say(format!(
                                "source {name}: caught up: the capture leading it ({holder}) \
                                 has stored everything committed before this run"
                            ));
                            return Ok(total);
                        }
                        // That capture stopped without a successor: capture here.
                        continue;
                    }
                    if heartbeat.is_none_or(|at| at.elapsed() >= lease_time / 3) {
                        match lease::stand_by(&self.control, &name, lease_time).await {
                            Ok(()) => state.standing = true,
                            Err(e) => tracing::warn!(
                                source = %name,
                                "cannot record standing by in the control store: {e}"
                            ),
                        }
                        heartbeat = Some(std::time::Instant::now());
                    }
                    if announced != Some((current.holder.clone(), current.epoch)) {
                        self.say(format!(
                            "source {name}: standing by: capture is led by {}",
                            lease::describe(&current)
                        ));
                        announced = Some((current.holder.clone(), current.epoch));
                    }
                    self.stop.sleep(poll).await;
                    continue;
                }
                Acquired::Leader(leader) => leader,
            };
            // The grant removed this run's standby row.
            (heartbeat, state.standing) = (None, false);
            announced = None;
            self.say(format!(
                "source {name}: leading capture (epoch {}, holder {})",
                leader.epoch(),
                leader.lease.holder
            ));
            self.metrics.leader(true);
            let result = async {
                let live = match opened.take() {
                    Some(live) => live,
                    None => LiveSource::open(&name, self.config.source(&name)?, true).await?,
                };
                let stop = leader.stop(&self.stop);
                live.capture_counted(
                    &leader.fence(&self.vault),
                    self.config.capture.clone(),
                    self.metrics.clone(),
                    self.until_caught_up,
                    &stop,
                    faults.clone(),
                )
                .await
            }
            .await;
            self.metrics.leader(false);
            if leader.is_lost() {
                self.say(format!(
                    "source {name}: lost the capture lease (epoch {}); stopped writing",
                    leader.epoch()
                ));
                if self.until_caught_up {
                    return Err(leader.lost_error());
                }
                drop(leader);
                if let Ok(stats) = result {
                    add(&mut total, stats);
                }
                continue;
            }
            leader.release().await;
            state.capture_failed = result.is_err();
            add(&mut total, result?);
            return Ok(total);
        }
    }
}

/// What `Term::terms` leaves for `Term::lead` to record when it ends.
#[derive(Default)]
struct TermState {
    /// The control store lists this run as standing by for the source.
    standing: bool,
    /// Capture itself failed (not: refused, or stopped when its lease was lost).
    capture_failed: bool,
}

/// Record each fault episode of `source` as its last capture error when it begins and
/// when it ends, until `finished` (then the latest change, if not recorded yet).
async fn record_episodes(
    control: String,
    source: String,
    mut latest: tokio::sync::watch::Receiver<Option<FaultEpisode>>,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let last = tokio::select! {
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = &mut finished => true,
        };
        if last && !latest.has_changed().unwrap_or(false) {
            return;
        }
        let Some(episode) = latest.borrow_and_update().clone() else {
            continue;
        };
        let error = CaptureError {
            source: source.clone(),
            holder: lease::holder_id(),
            kind: episode.kind.name().to_string(),
            message: episode.message,
            at_us: episode.since_us,
            stopped_capture: false,
            recovered_at_us: episode.recovered_us,
        };
        if let Err(e) = lease::record_error(&control, error).await {
            tracing::warn!(source = %source, "cannot record a fault episode: {e}");
        }
        if last {
            return;
        }
    }
}

/// Sum one lease term's statistics into the run's.
fn add(total: &mut CaptureStats, term: CaptureStats) {
    total.transactions += term.transactions;
    total.changes += term.changes;
    total.segments += term.segments;
    total.skipped_duplicates += term.skipped_duplicates;
    total.unattributed += term.unattributed;
    // The key-map index as the latest term found it.
    total.keymap_index = term.keymap_index;
    total.keymap_keys = term.keymap_keys;
    if total.lags.count() == 0 {
        total.lags = term.lags;
    }
}
