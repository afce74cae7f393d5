//! `lifeboat info`: where each source stands, from the vault (head, age, restorable
//! window) and from the database (what waits for capture, whether a capture reads it);
//! and the readiness check behind `/readyz` of `capture --metrics-listen` and `worker
//! --metrics-listen`. docs/operations.md describes the JSON.

use lifeboat_core::config::{Config, SourceKind};
use lifeboat_core::model::{Dialect, Position};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::Result;
use lifeboat_source::live::LiveSource;
use lifeboat_source::source::Backlog;
use serde::Serialize;

use crate::context::{open_vault, source_names};

/// A source's capture lease, as `info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseInfo {
    /// `host:pid` of the capture that holds (or last held) it.
    pub holder: String,
    pub epoch: i64,
    pub expires_at: String,
    /// Not expired by the control store's clock: a capture leads the source.
    pub live: bool,
}

/// A capture standing by for a source, as `info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyInfo {
    /// `host:pid` of the standing-by capture.
    pub holder: String,
    /// When it began standing by, and its latest heartbeat (the control store's clock).
    pub since: String,
    pub heartbeat_at: String,
}

/// One source, as `lifeboat info --json` prints it (one object per source).
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub source: String,
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    /// Whether the vault holds history of the source (a first capture finished).
    pub captured: bool,
    /// The last position the vault holds, shown as the source's kind shows it.
    pub head_position: Option<String>,
    /// Commit time of the newest transaction the vault holds, and its age now.
    pub head_time: Option<String>,
    pub head_age_seconds: Option<f64>,
    /// The restorable window: from the first checkpoint to the head.
    pub window_from: Option<String>,
    pub window_to: Option<String>,
    /// What the database says waits for capture (`None` fields: not this kind, or not
    /// readable; see `source_error`).
    #[serde(flatten)]
    pub backlog: Backlog,
    /// The capture lease in the control store; `None` when no capture ever led the source.
    pub lease: Option<LeaseInfo>,
    /// The captures standing by for the source, longest waiting first.
    pub standbys: Vec<StandbyInfo>,
    /// Why the database could not be read, when it could not.
    pub source_error: Option<String>,
    /// The last error capture recorded for the source (a fault it retried, or the error
    /// that stopped it), kept after capture recovers; the keys below say what and when.
    pub last_error: Option<String>,
    /// A retried fault's kind (`vault`, `source`, `replication`, `control`) or the kind of
    /// the error that stopped capture (`config`, `corrupt`, `source`, `vault`).
    pub last_error_kind: Option<String>,
    /// When it happened (a fault episode: its first failure), and its age now.
    pub last_error_at: Option<String>,
    pub last_error_age_seconds: Option<f64>,
    /// True when it stopped capture; false for a fault capture retried.
    pub last_error_stopped_capture: Option<bool>,
    /// When a retried fault ended; null while it lasts or when it stopped capture.
    pub last_error_recovered_at: Option<String>,
    /// `host:pid` of the capture that met it.
    pub last_error_holder: Option<String>,
}

/// Every source of `only` (all when empty): its vault head and window, its backlog, and
/// its capture lease in the control store at `control_url`. A source that cannot be
/// reached is reported (`source_error`); a vault or control store that cannot be read is
/// the command's error. For SQLite, whether capture runs is whether a lease is live.
pub async fn gather(
    config: &Config,
    control_url: &str,
    only: &[String],
) -> Result<Vec<SourceInfo>> {
    let names = source_names(config, only)?;
    let vault = open_vault(config).await?;
    let now = now_us();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let source_config = config.source(&name)?;
        let dialect = match source_config.kind()? {
            SourceKind::Sqlite { .. } => Dialect::Sqlite,
            SourceKind::Postgres { .. } => Dialect::Postgres,
        };
        let history = SourceHistory::load(&vault, &name).await?;
        let window = history.window_times(&vault).await?;
        let head = history.latest_position();
        // A control store that does not exist yet holds no lease, and is not created.
        let (lease, standbys, last_error) = if control_store_missing(control_url)? {
            (None, Vec::new(), None)
        } else {
            (
                crate::lease::leader(control_url, &name).await?,
                crate::lease::standbys(control_url, &name).await?,
                crate::lease::last_error(control_url, &name).await?,
            )
        };
        let standbys = standbys
            .into_iter()
            .map(|s| StandbyInfo {
                holder: s.holder,
                since: format_us(s.since_us),
                heartbeat_at: format_us(s.heartbeat_us),
            })
            .collect();
        let lease = lease.map(|l| LeaseInfo {
            live: l.is_live(),
            holder: l.holder,
            epoch: l.epoch,
            expires_at: format_us(l.expires_at_us),
        });
        let (mut backlog, source_error) = match LiveSource::open(&name, source_config, false).await
        {
            Ok(live) => match live.backlog(head.unwrap_or(0)).await {
                Ok(backlog) => (backlog, None),
                Err(e) => (Backlog::default(), Some(e.to_string())),
            },
            Err(e) => (Backlog::default(), Some(e.to_string())),
        };
        if dialect == Dialect::Sqlite && source_error.is_none() {
            backlog.capture_running = Some(lease.as_ref().is_some_and(|l| l.live));
        }
        out.push(SourceInfo {
            source: name,
            kind: match dialect {
                Dialect::Sqlite => "sqlite",
                Dialect::Postgres => "postgres",
            },
            captured: history.is_captured(),
            head_position: head.map(|p| Position::new(p).describe(dialect)),
            head_time: window.map(|(_, to)| format_us(to)),
            head_age_seconds: window.map(|(_, to)| (now - to).max(0) as f64 / 1e6),
            window_from: window.map(|(from, _)| format_us(from)),
            window_to: window.map(|(_, to)| format_us(to)),
            backlog,
            lease,
            standbys,
            source_error,
            last_error_kind: last_error.as_ref().map(|e| e.kind.clone()),
            last_error_at: last_error.as_ref().map(|e| format_us(e.at_us)),
            last_error_age_seconds: last_error
                .as_ref()
                .map(|e| (now - e.at_us).max(0) as f64 / 1e6),
            last_error_stopped_capture: last_error.as_ref().map(|e| e.stopped_capture),
            last_error_recovered_at: last_error
                .as_ref()
                .and_then(|e| e.recovered_at_us.map(format_us)),
            last_error_holder: last_error.as_ref().map(|e| e.holder.clone()),
            last_error: last_error.map(|e| e.message),
        });
    }
    Ok(out)
}

/// Whether `url` names an SQLite control store whose file does not exist.
fn control_store_missing(url: &str) -> Result<bool> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(false);
    }
    let path = if url.starts_with("sqlite:") {
        lifeboat_core::config::sqlite_path(url)?
    } else {
        std::path::PathBuf::from(url)
    };
    Ok(!path.exists())
}

/// Ready when every source of `names` answers and the vault can be read; otherwise the
/// first reason, in one line.
pub async fn ready(config: &Config, names: &[String]) -> std::result::Result<(), String> {
    for name in names {
        let source = config.source(name).map_err(|e| e.to_string())?;
        LiveSource::ping(name, source)
            .await
            .map_err(|e| e.to_string())?;
    }
    open_vault(config)
        .await
        .map_err(|e| format!("vault: {e}"))?;
    Ok(())
}
