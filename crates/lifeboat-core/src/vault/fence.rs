//! Fencing of vault writes (docs/vault-format.md, "One writer per source"). A capture
//! writes a source's history only while it holds the source's lease; its `Vault` handle
//! carries a `WriteFence` that every put of a segment, base or checkpoint asks first.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::Result;

/// What a writer must hold to put a source's objects. `check` is asked right before each
/// put of a segment, base or checkpoint: an error refuses the put (the writer lost its
/// lease and must stop writing); `Ok(within)` allows it, and the put is abandoned (with an
/// error) when it has not finished `within` from then. A fence that says no once says no
/// for good.
pub trait WriteFence: Send + Sync + std::fmt::Debug {
    fn check(&self) -> FenceCheck<'_>;
}

/// The answer of `WriteFence::check`.
pub type FenceCheck<'a> = BoxFuture<'a, Result<Duration>>;
