//! Named failpoints for crash tests. `LIFEBOAT_FAILPOINT=name` makes the process abort
//! (like a SIGKILL: no destructors, no flushing) the first time it reaches `name`;
//! `name@N` aborts the N-th time. Unset, a failpoint costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("LIFEBOAT_FAILPOINT").ok()?;
        match spec.split_once('@') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((spec, 1)),
        }
    })
}

/// Abort here if the failpoint `name` is armed and its count is reached.
pub fn hit(name: &str) {
    if let Some((armed, count)) = target() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *count {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// A pause for tests that act while a command is between two steps:
/// `LIFEBOAT_PAUSE=name:FILE` makes the process create `FILE.reached` when it reaches `name`
/// and wait there until `FILE` exists (at most ten minutes). Unset, it costs one lookup.
pub fn pause(name: &str) {
    static SPEC: OnceLock<Option<(String, std::path::PathBuf)>> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let spec = std::env::var("LIFEBOAT_PAUSE").ok()?;
        let (name, file) = spec.split_once(':')?;
        Some((name.to_string(), file.into()))
    });
    let Some((armed, file)) = spec else {
        return;
    };
    if armed != name {
        return;
    }
    let mut reached = file.clone().into_os_string();
    reached.push(".reached");
    // Best effort: the waiting below is what matters.
    let _ = std::fs::write(&reached, name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
