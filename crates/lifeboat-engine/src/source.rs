//! `lifeboat source drop`: release a source from capture, removing everything capture
//! installed in its database (docs/vault-format.md, "A source's vault").

use serde::Serialize;

use lifeboat_core::config::Config;
use lifeboat_core::vault::Vault;
use lifeboat_core::Result;
use lifeboat_source::installed::Installed;
use lifeboat_source::live;

/// What `drop` found, and whether it removed it.
#[derive(Debug, Clone, Serialize)]
pub struct DropReport {
    pub source: String,
    #[serde(flatten)]
    pub installed: Installed,
    /// This configuration's vault id, when its vault can be opened.
    pub config_vault_id: Option<String>,
    /// Whether the objects were removed (`yes`), or only listed.
    pub removed: bool,
}

/// List what capture installed in source `name` and, with `yes`, remove it. Without `yes`
/// nothing changes. Removing is refused while a capture uses the source.
pub async fn drop(config: &Config, name: &str, yes: bool) -> Result<DropReport> {
    let source = config.source(name)?;
    // Which vault this configuration names, to tell the operator whose source this is;
    // the vault need not exist (dropping the source of a vault that is gone is the point).
    let config_vault_id = match Vault::store_for(&config.vault) {
        Ok(store) => Vault::open(store).await.ok().map(|v| v.id().to_string()),
        Err(_) => None,
    };
    let installed = if yes {
        live::uninstall(name, source).await?
    } else {
        live::installed(name, source).await?
    };
    Ok(DropReport {
        source: name.to_string(),
        removed: yes && !installed.is_empty(),
        installed,
        config_vault_id,
    })
}
