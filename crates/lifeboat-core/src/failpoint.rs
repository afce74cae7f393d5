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
