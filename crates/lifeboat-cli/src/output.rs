//! Output for people and scripts: lines on standard output, JSON, and the rendering of
//! engines' progress events (a progress bar and lines on standard error).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lifeboat_engine::progress::{thousands, Event, Progress};

/// Print a line on standard output. A closed pipe (`lifeboat tenants | head`) ends the
/// program quietly, as it would a C tool killed by SIGPIPE.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub fn print_json(value: &impl serde::Serialize) {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    crate::say!("{text}");
}

/// The log target of engines' notices: shown by default (see `main.rs`).
pub const NOTICE_TARGET: &str = "lifeboat::notice";

/// A byte count for people: `512 B`, `3.4 kB`, `1.2 MB`, `5.0 GB` (powers of 1000).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.1} GB", n / 1e9)
    }
}

/// Renders a restore's events: the start line and a progress bar on a terminal (tenant
/// restores done of all, rows written, throughput, time left); notes on standard error.
#[derive(Default)]
pub struct Terminal {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    rows: AtomicU64,
}

impl Terminal {
    fn bar(&self) -> Option<indicatif::ProgressBar> {
        self.bar.lock().ok().and_then(|b| b.clone())
    }
}

impl Progress for Terminal {
    fn event(&self, event: Event) {
        match event {
            Event::RestoreStarted {
                tenants,
                sources,
                restores,
                target,
                dry_run,
            } => {
                eprintln!(
                    "restoring {tenants} tenants from {sources} sources {target}{}",
                    if dry_run {
                        " (dry run: nothing is changed)"
                    } else {
                        ""
                    }
                );
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    let bar = indicatif::ProgressBar::new(restores as u64);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} tenant restores, {msg} [{elapsed_precise}, ETA {eta}]",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar.set_message("0 rows");
                    if let Ok(mut slot) = self.bar.lock() {
                        *slot = Some(bar);
                    }
                }
            }
            Event::TenantRestored { rows } => {
                let total = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
                if let Some(bar) = self.bar() {
                    let rate = total as f64 / bar.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!(
                        "{} rows, {} rows/s",
                        thousands(total),
                        thousands(rate as u64)
                    ));
                    bar.inc(1);
                }
            }
            // The summary that follows says the same, for good.
            Event::RestoreFinished => {
                if let Some(bar) = self.bar() {
                    bar.finish_and_clear();
                }
            }
            Event::RestoredBeforeError { tenant, source } => {
                eprintln!("note: tenant {tenant} was restored in {source} before the error below");
            }
            Event::Wave {
                number,
                tenants,
                rows,
                done,
                total,
            } => crate::say!(
                "wave {number}: {tenants} tenants, {} rows ({done} of {total} tenants done)",
                thousands(rows)
            ),
            Event::CheckStarted { objects } => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    let bar = indicatif::ProgressBar::new(objects as u64);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} objects [{elapsed_precise}, ETA {eta}]",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    if let Ok(mut slot) = self.bar.lock() {
                        *slot = Some(bar);
                    }
                }
            }
            Event::ObjectChecked => {
                if let Some(bar) = self.bar() {
                    bar.inc(1);
                }
            }
            Event::CheckFinished => {
                if let Some(bar) = self.bar() {
                    bar.finish_and_clear();
                }
            }
            Event::Step(text) => crate::say!("== {text}"),
            Event::Detail(text) => crate::say!("   {text}"),
            // A long-running command's lines go to the log, with their time (and as JSON
            // with LIFEBOAT_LOG_FORMAT=json): `capture` runs for months.
            Event::Notice(text) => tracing::info!(target: NOTICE_TARGET, "{text}"),
        }
    }
}
