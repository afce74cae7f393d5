//! The control store as the guard uses it: every audit entry anchored in the vault.

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
/// its audit log anchored in the vault.
pub async fn control_store(config: &Config, config_path: &Option<PathBuf>) -> Result<Control> {
    Ok(Control {
        store: ControlStore::open(&control_url(config, config_path)?)?,
        vault: open_vault(config).await?,
    })
}

/// The control store, with every audit entry also anchored in the vault (its sequence and
/// hash as an object name), so that a control store rewritten wholesale, chain and all,
/// no longer matches the anchors.
pub struct Control {
    store: ControlStore,
    vault: Vault,
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
    /// Append to the audit log, then anchor the entry in the vault.
    pub async fn append(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        details: Json,
    ) -> Result<()> {
        let entry = self.store.append(actor, action, subject, details)?;
        self.vault.put_audit_anchor(entry.seq, &entry.hash).await
    }

    /// The chain's own problems, and every anchor the log no longer matches.
    pub async fn verify(&mut self) -> Result<Vec<String>> {
        let mut problems = self.store.verify()?;
        let hashes: BTreeMap<u64, String> = self
            .store
            .entries()?
            .into_iter()
            .map(|e| (e.seq, e.hash))
            .collect();
        let anchors = self.vault.list_audit_anchors().await?;
        let anchored: std::collections::BTreeSet<u64> = anchors.iter().map(|(s, _)| *s).collect();
        for seq in hashes.keys().filter(|s| !anchored.contains(s)) {
            problems.push(format!(
                "entry {seq}: in the log but not anchored in the vault (added to the log \
                 alone, or its anchor removed)"
            ));
        }
        for (seq, hash) in anchors {
            match hashes.get(&seq) {
                Some(h) if *h == hash => {}
                Some(_) => problems.push(format!(
                    "entry {seq}: differs from its anchor in the vault (the log was rewritten)"
                )),
                None => problems.push(format!(
                    "entry {seq}: anchored in the vault but missing from the log (removed)"
                )),
            }
        }
        Ok(problems)
    }
}
