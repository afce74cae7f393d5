//! `lifeboat export`: one tenant's rows at a point in time, from the vault only, into one
//! archive (docs/export.md): a zip of CSV files or an SQLite database, each with a manifest
//! whose digests are `verify`'s for the same point.
//!
//! The archive is written under a temporary name beside the output, table by table from
//! the tenant's stream, synced, and renamed into place only when complete.

mod archive;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::config::Config;
use lifeboat_core::model::{Position, TenantKey};
use lifeboat_core::target::{Resolved, Target};
use lifeboat_core::time::{format_us, now_us};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::context::{check_tenants, histories_for, open_vault, source_names};
use archive::Archive;

/// The manifest's `format` and `version` (docs/export.md).
pub const MANIFEST_FORMAT: &str = "lifeboat-export";
pub const MANIFEST_VERSION: u32 = 1;

/// The kind of archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A zip of one CSV file per table, plus `manifest.json`.
    Csv,
    /// One SQLite database, one table per exported table, plus `_lifeboat_manifest`.
    Sqlite,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Sqlite => "sqlite",
        }
    }

    /// The file name extension of the archive.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "zip",
            Format::Sqlite => "sqlite",
        }
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "csv" => Ok(Format::Csv),
            "sqlite" => Ok(Format::Sqlite),
            other => Err(Error::usage(format!(
                "--format {other:?}: expected csv or sqlite"
            ))),
        }
    }
}

/// One exported table: where it is in the archive and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableManifest {
    pub table: String,
    /// The zip entry (`SOURCE/TABLE.csv`) or the SQLite table (`SOURCE.TABLE`).
    pub file: String,
    pub columns: Vec<String>,
    pub rows: u64,
    /// The digest's sum, 32 hex digits (`verify`'s).
    pub checksum: String,
}

/// One exported source: its position and tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceManifest {
    pub source: String,
    pub position: String,
    pub tables: Vec<TableManifest>,
}

/// What an archive holds (docs/export.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub tenant: String,
    pub created_at: String,
    pub target: String,
    pub time: String,
    pub sources: Vec<SourceManifest>,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.sources
            .iter()
            .flat_map(|s| &s.tables)
            .map(|t| t.rows)
            .sum()
    }

    /// What the audit log records of an export.
    pub fn audit_details(&self, format: Format) -> serde_json::Value {
        json!({
            "format": format.as_str(),
            "target": self.target,
            "time": self.time,
            "sources": self.sources.iter().map(|s| json!({
                "source": s.source,
                "position": s.position,
                "rows": s.tables.iter().map(|t| (t.table.clone(), t.rows))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// What `lifeboat export` asks for.
pub struct Request {
    pub tenant: String,
    pub target: Target,
    pub format: Format,
    /// Only these sources (all when empty).
    pub sources: Vec<String>,
    pub output: PathBuf,
    /// Replace an existing output file.
    pub force: bool,
    /// Who exports, for the audit log (default: the login name).
    pub by: Option<String>,
}

/// A finished export.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub path: PathBuf,
    pub format: Format,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// `lifeboat export`: check the request, write the archive, record it in the audit log,
/// then put it in place. Nothing is left at the output path unless everything succeeded.
pub async fn export(
    config: &Config,
    config_path: &Option<PathBuf>,
    request: &Request,
) -> Result<Exported> {
    check_output(&request.output, request.force)?;
    let names = source_names(config, &request.sources)?;
    let vault = open_vault(config).await?;
    let histories = histories_for(&vault, &names, std::slice::from_ref(&request.tenant)).await?;
    check_tenants(&vault, &histories, std::slice::from_ref(&request.tenant)).await?;
    if let Target::BeforeTx { source, .. } = &request.target {
        config.source(source)?;
    }
    let resolved =
        crate::campaign::resolve_target(config, &vault, &histories, &request.target).await?;
    // The audit log must be reachable before any work is done.
    let mut control = crate::guard::control_store(config, config_path).await?;
    let dir = output_dir(&request.output)?;
    let (file, manifest) = build(
        config,
        &vault,
        &request.tenant,
        &resolved,
        &names,
        request.format,
        &dir,
    )
    .await?;
    control
        .append(
            &crate::guard::login(request.by.clone()),
            "export",
            &format!("tenant:{}", request.tenant),
            manifest.audit_details(request.format),
        )
        .await?;
    let bytes = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    place(file, &request.output, request.force)?;
    Ok(Exported {
        path: request.output.clone(),
        format: request.format,
        bytes,
        manifest,
    })
}

/// Refuse an output that exists (unless `force`) or whose directory does not.
fn check_output(output: &Path, force: bool) -> Result<()> {
    if output.as_os_str().is_empty() {
        return Err(Error::usage("-o is empty: name the file to write"));
    }
    if output.is_dir() {
        return Err(Error::usage(format!(
            "{} is a directory: name the file to write",
            output.display()
        )));
    }
    if output.exists() && !force {
        return Err(Error::usage(format!(
            "{} already exists: choose another name, or add --force to replace it",
            output.display()
        )));
    }
    output_dir(output).map(|_| ())
}

fn output_dir(output: &Path) -> Result<PathBuf> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "cannot write {}: the directory {} does not exist",
            output.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// Rename the finished archive into place and sync its directory. Without `force`, an
/// output that appeared meanwhile is not replaced.
pub fn place(file: tempfile::NamedTempFile, output: &Path, force: bool) -> Result<()> {
    let failed =
        |e: std::io::Error| Error::usage(format!("cannot write {}: {e}", output.display()));
    if force {
        file.persist(output).map_err(|e| failed(e.error))?;
    } else {
        file.persist_noclobber(output)
            .map_err(|e| failed(e.error))?;
    }
    if let Ok(dir) = std::fs::File::open(output_dir(output)?) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Write `tenant`'s archive at `resolved` for `sources` into a temporary file in `dir`,
/// synced. The file is removed when dropped: the caller renames it into place (`place`).
pub async fn build(
    config: &Config,
    vault: &Vault,
    tenant: &str,
    resolved: &Resolved,
    sources: &[String],
    format: Format,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, Manifest)> {
    let file = tempfile::Builder::new()
        .prefix(".lifeboat-export-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::usage(format!("cannot create a file in {}: {e}", dir.display())))?;
    let path = file.path().to_path_buf();
    let handle = file
        .as_file()
        .try_clone()
        .map_err(|e| Error::source(format!("{}: {e}", path.display())))?;
    let mut archive = Archive::create(format, handle, &path)?;
    let key = TenantKey::new(tenant);
    let keys: BTreeSet<TenantKey> = [key.clone()].into();
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        version: MANIFEST_VERSION,
        tenant: tenant.to_string(),
        created_at: format_us(now_us()),
        target: resolved.description.clone(),
        time: format_us(resolved.time_us),
        sources: Vec::new(),
    };
    for name in sources {
        let Some(position) = resolved.positions.get(name).copied() else {
            continue; // a source without history has nothing to export
        };
        let dialect = config.source(name)?.kind()?.dialect();
        let history = lifeboat_core::state::SourceHistory::load_for(vault, name, &keys).await?;
        let mut streams = history.streams_at(vault, &keys, position.get()).await?;
        let Some(stream) = streams.remove(&key) else {
            continue;
        };
        let source = name.clone();
        let file_path = path.clone();
        // Decoding and writing are blocking work: off the async runtime's threads.
        let (back, tables) = tokio::task::spawn_blocking(move || {
            let mut archive = archive;
            let tables = write_source(&mut archive, format, &source, stream, &file_path);
            (archive, tables)
        })
        .await
        .map_err(|e| Error::source(format!("export task: {e}")))?;
        archive = back;
        manifest.sources.push(SourceManifest {
            source: name.clone(),
            position: Position::describe(position, dialect),
            tables: tables?,
        });
    }
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::source(format!("export manifest: {e}")))?;
    let file_path = path.clone();
    tokio::task::spawn_blocking(move || archive.finish(&text, &file_path))
        .await
        .map_err(|e| Error::source(format!("export task: {e}")))??;
    file.as_file()
        .sync_all()
        .map_err(|e| Error::source(format!("syncing {}: {e}", path.display())))?;
    Ok((file, manifest))
}

/// Every table of one source's stream into the archive, with its digest.
fn write_source(
    archive: &mut Archive,
    format: Format,
    source: &str,
    mut stream: lifeboat_core::state::TenantStream,
    path: &Path,
) -> Result<Vec<TableManifest>> {
    let mut tables = Vec::new();
    for (table, schema) in stream.schemas() {
        let entry = Archive::entry_name(format, source, &table);
        let hasher = RowHasher::new(&schema.columns);
        let mut digest = TableDigest::default();
        let mut writer = archive.table(&entry, &schema.columns, path)?;
        let mut failed = None;
        stream.for_each_row(&table, |row| {
            if failed.is_some() {
                return;
            }
            digest.add(hasher.hash(&row));
            if let Err(e) = writer.row(&row, path) {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        tables.push(TableManifest {
            table,
            file: entry,
            columns: schema.columns.clone(),
            rows: digest.rows,
            checksum: digest.hex(),
        });
    }
    Ok(tables)
}
