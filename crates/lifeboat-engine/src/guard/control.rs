//! The control store as the guard uses it: every audit entry anchored in the vault.
//!
//! Entries are written by the control store, in the transaction of the change they record;
//! anchors are written afterwards by whichever process holds the vault: the command that
//! wrote the entry (`Control::anchor`), any later command that opens a `Control` (it
//! anchors what is pending first), a worker after each batch, and `lifeboat serve`, which
//! anchors what its own requests (acceptances, the operator API) wrote every few seconds
//! (`anchor_pending`). `audit verify` checks both ways and tells pending entries (younger
//! than a grace period) from missing anchors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value as Json;

use lifeboat_control::ControlStore;
use lifeboat_core::config::Config;
use lifeboat_core::vault::Vault;
use lifeboat_core::Result;

use crate::context::{control_url, open_vault};

/// Who acts: `by` if given, else the login name.
pub fn login(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The control store: `[control] url`, or `lifeboat-control.db` beside the configuration;
/// its audit log anchored in the vault (entries still waiting for their anchor are
/// anchored now).
pub async fn control_store(config: &Config, config_path: &Option<PathBuf>) -> Result<Control> {
    let url = control_url(config, config_path)?;
    let mut control = Control {
        store: ControlStore::open(&url)?,
        vault: open_vault(config).await?,
        url,
    };
    control.anchor().await?;
    Ok(control)
}

/// Anchor every entry of `store` written since the last one known to be anchored, in
/// order, then record how far the anchors go. Anchors are idempotent: two processes
/// anchoring the same entries write the same objects. Returns how many were written.
pub async fn anchor_pending(store: &mut ControlStore, vault: &Vault) -> Result<usize> {
    let pending = store.unanchored()?;
    for entry in &pending {
        vault.put_audit_anchor(entry.seq, &entry.hash).await?;
    }
    if let Some(last) = pending.last() {
        store.mark_anchored(last.seq)?;
    }
    Ok(pending.len())
}

/// Anchor pending entries every `every` until the task is dropped: what `lifeboat serve`
/// runs beside the server, whose requests write entries without the vault. A failure is
/// logged and tried again next time.
pub async fn anchor_loop(config: Config, control_url: String, every: std::time::Duration) {
    loop {
        let result: Result<()> = async {
            let vault = open_vault(&config).await?;
            let mut store = ControlStore::open(&control_url)?;
            loop {
                anchor_pending(&mut store, &vault).await?;
                tokio::time::sleep(every).await;
            }
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("anchoring audit entries: {e}");
        }
        tokio::time::sleep(every).await;
    }
}

/// How long an entry may wait for its anchor before `audit verify` (and `check`) count it
/// as a problem, unless told otherwise: ten minutes.
pub const ANCHOR_GRACE_US: i64 = 600_000_000;

/// What `audit verify` found: problems (the log is not intact) and entries still waiting
/// for their anchor within the grace period (not a problem yet).
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub problems: Vec<String>,
    pub pending: Vec<String>,
}

/// The control store, with every audit entry also anchored in the vault (its sequence and
/// hash as an object name), so that a control store rewritten wholesale, chain and all,
/// no longer matches the anchors.
pub struct Control {
    store: ControlStore,
    vault: Vault,
    url: String,
}

impl std::ops::Deref for Control {
    type Target = ControlStore;
    fn deref(&self) -> &ControlStore {
        &self.store
    }
}

impl std::ops::DerefMut for Control {
    fn deref_mut(&mut self) -> &mut ControlStore {
        &mut self.store
    }
}

impl Control {
    /// The control store and the vault, pending entries left as they are (what `audit
    /// verify` looks at).
    pub async fn open_unanchored(
        config: &Config,
        config_path: &Option<PathBuf>,
    ) -> Result<Control> {
        let url = control_url(config, config_path)?;
        Ok(Control {
            store: ControlStore::open(&url)?,
            vault: open_vault(config).await?,
            url,
        })
    }

    /// The store's URL, for commands that open it again from other tasks (capture leases).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Append an entry that records no other change, then anchor it in the vault.
    pub async fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: Json,
    ) -> Result<()> {
        self.store.append(actor, action, subject, details)?;
        self.anchor().await
    }

    /// Anchor every entry still waiting for its anchor (after a change made through the
    /// store, whose entry it wrote in the change's transaction).
    pub async fn anchor(&mut self) -> Result<()> {
        anchor_pending(&mut self.store, &self.vault)
            .await
            .map(|_| ())
    }

    /// Check the log both ways against the vault: the chain's own problems; every anchor
    /// is an entry with that hash (an anchor beyond the log: a store put back to an earlier
    /// copy, or an entry removed); every entry is anchored (an entry the store recorded as
    /// anchored whose anchor is gone, or one left unanchored for longer than `grace_us`).
    pub async fn verify(&mut self, grace_us: i64) -> Result<Verified> {
        let mut problems = self.store.verify()?;
        let mut pending = Vec::new();
        let entries = self.store.entry_hashes()?;
        let hashes: BTreeMap<u64, &str> =
            entries.iter().map(|e| (e.seq, e.hash.as_str())).collect();
        let anchors: BTreeMap<u64, Vec<String>> =
            self.vault.list_audit_anchors().await?.into_iter().fold(
                BTreeMap::new(),
                |mut m, (seq, hash)| {
                    m.entry(seq).or_insert_with(Vec::new).push(hash);
                    m
                },
            );
        for (seq, anchored) in &anchors {
            for hash in anchored {
                match hashes.get(seq) {
                    Some(h) if h == hash => {}
                    Some(_) => problems.push(format!(
                        "entry {seq}: differs from its anchor in the vault (the log was \
                         rewritten)"
                    )),
                    None => problems.push(format!(
                        "entry {seq}: anchored in the vault but missing from the log (removed, \
                         or the control store put back to an earlier copy)"
                    )),
                }
            }
        }
        let anchored_through = self.store.anchored_through()?;
        let now = lifeboat_core::time::now_us();
        for e in &entries {
            if anchors.contains_key(&e.seq) {
                continue;
            }
            let age_us = lifeboat_core::time::parse(&e.at)
                .map(|at| now - at)
                .unwrap_or(i64::MAX);
            if e.seq <= anchored_through {
                problems.push(format!(
                    "entry {}: its anchor is missing from the vault (removed)",
                    e.seq
                ));
            } else if age_us > grace_us {
                problems.push(format!(
                    "entry {}: not anchored in the vault since it was written at {} (no \
                     process holding the vault anchored it, or its anchor was removed)",
                    e.seq, e.at
                ));
            } else {
                pending.push(format!(
                    "entry {}: written at {}, not anchored yet",
                    e.seq, e.at
                ));
            }
        }
        Ok(Verified { problems, pending })
    }
}
