//! Bringing the vault up to a source's present before a command acts on it: apply's
//! restore point, undo, undelete, `capture --until-caught-up`. While a capture leads the
//! source, the command waits for that leader to store everything committed before it
//! asked; only when no capture leads the source does it capture by itself, holding the
//! source's lease meanwhile, so that two captures of one source never run at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lifeboat_control::CaptureLease;
use lifeboat_core::config::Config;
use lifeboat_core::model::{Dialect, Position};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::live::LiveSource;

use crate::context::open_vault;
use crate::lease::{self, Acquired};
use crate::progress::{Event, Progress};

/// How often the vault's head is read while waiting for a leader.
const POLL: Duration = Duration::from_millis(200);
/// How often the lease is read again while waiting: whether the leader still runs.
const LEASE_POLL: Duration = Duration::from_secs(1);
/// How often the waiting line is repeated.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Bring the vault up to now in every source of `names` and return a position of each
/// that every tenant can be restored to: everything committed before the call is at or
/// below it. Waiting lines go to `progress` as notices.
pub async fn catch_up(
    config: &Config,
    control_url: &str,
    names: &BTreeSet<String>,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, u64>> {
    let vault = open_vault(config).await?;
    let say = |line: String| progress.event(Event::Notice(line));
    let mut point = BTreeMap::new();
    for name in names {
        let position = catch_up_source(config, control_url, &vault, name, &say).await?;
        point.insert(name.clone(), position);
    }
    Ok(point)
}

/// One source: wait for its leader, or capture it here when none leads it.
async fn catch_up_source(
    config: &Config,
    control_url: &str,
    vault: &Vault,
    name: &str,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(config.capture.wait_seconds);
    loop {
        match lease::acquire(control_url, name, lease::lease_time(config)).await? {
            Acquired::Leader(leader) => {
                lease::capture_leading(config, vault, name, leader).await?;
                return vault_head(vault, name).await?.ok_or_else(|| {
                    Error::usage(format!("source {name} has no history in the vault"))
                });
            }
            Acquired::Held(current) => {
                if let Some(position) =
                    wait_for_leader(config, control_url, vault, name, current, deadline, say)
                        .await?
                {
                    return Ok(position);
                }
                // The leader stopped without a successor: capture here.
            }
        }
    }
}

/// Wait until the vault's head of `name` passes the source's present position, which the
/// capture holding `lease` stores. Returns that position, or `None` when no capture leads
/// the source any more, its lease expired or its process gone (the caller captures it
/// itself). Fails at `deadline`, naming the
/// leader and how far behind it is.
pub async fn wait_for_leader(
    config: &Config,
    control_url: &str,
    vault: &Vault,
    name: &str,
    lease: CaptureLease,
    deadline: Instant,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<Option<u64>> {
    let (target, dialect) = {
        let live = LiveSource::open(name, config.source(name)?, false).await?;
        (live.position_to_capture().await?.get(), live.dialect())
    };
    let mut holder = lease.holder;
    let started = Instant::now();
    let mut lease_read = started;
    let mut next_line = started;
    loop {
        let head = vault_head(vault, name).await?;
        if head.is_some_and(|head| head >= target) {
            return Ok(Some(target));
        }
        let now = Instant::now();
        if now >= lease_read + LEASE_POLL {
            lease_read = now;
            // A leader of this machine whose process is gone writes nothing more: its
            // lease is taken over at once (`lease::acquire`).
            match lease::leader(control_url, name).await? {
                Some(current)
                    if current.is_live() && !crate::guard::holder_is_gone(&current.holder) =>
                {
                    holder = current.holder
                }
                _ => return Ok(None),
            }
        }
        let behind = Behind {
            name,
            holder: &holder,
            target,
            head,
            dialect,
        };
        if now >= deadline {
            return Err(behind.timed_out(config.capture.wait_seconds));
        }
        if now >= next_line {
            say(behind.waiting());
            next_line = now + LINE_EVERY;
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(now))).await;
    }
}

/// The last position the vault holds of `name` (`None`: nothing yet).
pub async fn vault_head(vault: &Vault, name: &str) -> Result<Option<u64>> {
    let segment = vault
        .list_segments(name)
        .await?
        .iter()
        .map(|s| s.last)
        .max();
    let checkpoint = vault
        .list_checkpoints(name)
        .await?
        .iter()
        .map(|c| c.position)
        .max();
    Ok(segment.max(checkpoint))
}

/// How far a leader is from a position, for people.
struct Behind<'a> {
    name: &'a str,
    holder: &'a str,
    target: u64,
    head: Option<u64>,
    dialect: Dialect,
}

impl Behind<'_> {
    fn at(&self, position: u64) -> String {
        Position::new(position).describe(self.dialect)
    }

    /// "1.2 MiB behind" (PostgreSQL: WAL bytes), "37 changes behind" (SQLite), or
    /// "nothing stored yet".
    fn distance(&self) -> String {
        let Some(head) = self.head else {
            return "it has stored nothing of the source yet".to_string();
        };
        let gap = self.target.saturating_sub(head);
        match self.dialect {
            Dialect::Postgres => format!("{} behind", bytes(gap)),
            Dialect::Sqlite => format!("{gap} change{} behind", if gap == 1 { "" } else { "s" }),
        }
    }

    fn waiting(&self) -> String {
        format!(
            "waiting for capture (leader {}) to store {} up to {}: {}",
            self.holder,
            self.name,
            self.at(self.target),
            self.distance()
        )
    }

    fn timed_out(&self, seconds: u64) -> Error {
        let holds = match self.head {
            Some(head) => format!(", the vault holds it up to {}", self.at(head)),
            None => String::new(),
        };
        Error::source(format!(
            "source {}: the running capture (leader {}) did not store it up to {} within \
             {seconds} s: {}{holds}; see `lifeboat info`, or raise [capture] wait_seconds",
            self.name,
            self.holder,
            self.at(self.target),
            self.distance()
        ))
    }
}

/// Bytes for people: "812 B", "1.2 MiB".
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind(dialect: Dialect, target: u64, head: Option<u64>) -> String {
        Behind {
            name: "tracker",
            holder: "db1:42",
            target,
            head,
            dialect,
        }
        .waiting()
    }

    #[test]
    fn the_waiting_line_names_the_leader_the_position_and_the_distance() {
        assert_eq!(
            behind(Dialect::Postgres, 0x1A2B3C4, Some(0x1A2B3C4 - 1_258_291)),
            "waiting for capture (leader db1:42) to store tracker up to 0/1A2B3C4: \
             1.2 MiB behind"
        );
        assert_eq!(
            behind(Dialect::Sqlite, 140, Some(103)),
            "waiting for capture (leader db1:42) to store tracker up to 140: 37 changes behind"
        );
        assert_eq!(
            behind(Dialect::Sqlite, 5, None),
            "waiting for capture (leader db1:42) to store tracker up to 5: it has stored \
             nothing of the source yet"
        );
        assert_eq!(bytes(812), "812 B");
    }
}
