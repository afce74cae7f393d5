//! What every engine starts from: the configuration, the vault, the connected sources,
//! the control store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};
use lifeboat_source::live::LiveSource;

/// The configuration file (`--config` or `LIFEBOAT_CONFIG`), parsed and checked.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let path = path.ok_or_else(|| {
        Error::usage("no configuration: pass --config PATH or set LIFEBOAT_CONFIG")
    })?;
    Config::load(path)
}

/// The configured source names to work on: `only` if given (each must exist), else all.
pub fn source_names(config: &Config, only: &[String]) -> Result<Vec<String>> {
    if only.is_empty() {
        return Ok(config.sources.keys().cloned().collect());
    }
    for name in only {
        config.source(name)?;
    }
    Ok(only.to_vec())
}

pub async fn open_sources(
    config: &Config,
    names: &[String],
    for_capture: bool,
) -> Result<Vec<LiveSource>> {
    let mut sources = Vec::with_capacity(names.len());
    for name in names {
        sources.push(LiveSource::open(name, config.source(name)?, for_capture).await?);
    }
    Ok(sources)
}

pub async fn open_vault(config: &Config) -> Result<Vault> {
    Vault::open(Vault::store_for(&config.vault)?).await
}

/// `init`: create the configured vault (refused where one, or anything, already is).
pub async fn init_vault(config: &Config) -> Result<Vault> {
    Vault::init(Vault::store_for(&config.vault)?).await
}

/// Every source's history in the vault, for the configured sources.
pub async fn histories(vault: &Vault, names: &[String]) -> Result<Vec<SourceHistory>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(SourceHistory::load(vault, name).await?);
    }
    Ok(out)
}

/// Every source's history in the vault, listing only `tenants`' bases: for engines about
/// a few tenants (see `SourceHistory::load_for`).
pub async fn histories_for(
    vault: &Vault,
    names: &[String],
    tenants: &[String],
) -> Result<Vec<SourceHistory>> {
    let requested: BTreeSet<TenantKey> =
        tenants.iter().map(|t| TenantKey::new(t.clone())).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(SourceHistory::load_for(vault, name, &requested).await?);
    }
    Ok(out)
}

/// Check that every requested tenant is known to the vault in some source.
pub async fn check_tenants(
    vault: &Vault,
    histories: &[SourceHistory],
    tenants: &[String],
) -> Result<BTreeSet<TenantKey>> {
    if tenants.is_empty() {
        return Err(Error::usage("name at least one tenant with --tenant"));
    }
    // A tenant with a base is known without reading any segment; only the others need
    // every segment's list of tenants.
    let mut known: BTreeSet<TenantKey> = histories
        .iter()
        .flat_map(|h| h.bases.keys().cloned())
        .collect();
    if tenants
        .iter()
        .any(|t| !known.contains(&TenantKey::new(t.clone())))
    {
        for history in histories {
            known.extend(history.tenants(vault).await?);
        }
    }
    let mut out = BTreeSet::new();
    for tenant in tenants {
        let key = TenantKey::new(tenant.clone());
        if !known.contains(&key) {
            return Err(Error::usage(format!(
                "unknown tenant {tenant}: the vault has no rows of it in any source \
                 (`lifeboat tenants` lists the protected tenants)"
            )));
        }
        out.insert(key);
    }
    Ok(out)
}

/// The control store: `[control] url` (SQLite or PostgreSQL), or `lifeboat-control.db`
/// beside the configuration file.
pub fn control_url(config: &Config, config_path: &Option<PathBuf>) -> Result<String> {
    match &config.control {
        Some(control) if control.url.starts_with("postgres") => {
            lifeboat_core::pg::with_password_file(&control.url, control.password_file.as_deref())
        }
        Some(control) => Ok(control.url.clone()),
        None => config_path
            .as_ref()
            .and_then(|p| p.parent())
            .map(|d| d.join("lifeboat-control.db").display().to_string())
            .ok_or_else(|| Error::config("no [control] url and no configuration file")),
    }
}
