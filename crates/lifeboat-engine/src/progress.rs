//! How engines report long work. An engine calls [`Progress::event`]; the binary decides
//! what people see (a progress bar, lines on standard error, nothing under `--json`).
//! Events are information only: an engine's result never depends on how they are shown.

/// Something a long-running engine has to say while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A restore is about to write: `restores` tenant restores (tenants × sources).
    RestoreStarted {
        tenants: usize,
        sources: usize,
        restores: usize,
        target: String,
        dry_run: bool,
    },
    /// One tenant restore in one source is done, with the rows it wrote.
    TenantRestored { rows: u64 },
    /// The restore stopped writing (done, or stopped by an error).
    RestoreFinished,
    /// A tenant that was restored before an error stopped the restore.
    RestoredBeforeError { tenant: String, source: String },
    /// A wave of an apply committed.
    Wave {
        number: u32,
        tenants: usize,
        rows: u64,
        done: usize,
        total: usize,
    },
    /// `check` is about to read `objects` vault objects.
    CheckStarted { objects: usize },
    /// `check` is done with one object.
    ObjectChecked,
    /// `check` read its last object.
    CheckFinished,
    /// A step of a longer job (the drill), in words.
    Step(String),
    /// A detail line under the current step.
    Detail(String),
    /// A line for the operator of a long-running command (capture standing by, leading,
    /// losing its lease); logged with its time, also under `--json`.
    Notice(String),
}

/// Receives an engine's events. Implementations must be cheap: events come from the
/// restore's writer tasks as they finish tenants.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event);
}

/// How engines hold a receiver: shared with the tasks they spawn.
pub type Reporter = std::sync::Arc<dyn Progress>;

/// A receiver that discards every event.
pub fn silent() -> Reporter {
    std::sync::Arc::new(Silent)
}

/// Discards every event (scripts, tests, and engines nested in another engine's work).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

/// Collects events in memory, for tests.
#[derive(Debug, Default)]
pub struct Recorded(pub std::sync::Mutex<Vec<Event>>);

impl Progress for Recorded {
    fn event(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}

/// 52310 -> "52,310": counts in event text and in the binary's lines.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
