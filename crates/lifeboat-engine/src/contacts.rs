//! Tenant contacts (docs/status.md, "Contacts"): read from the vault at a point in time
//! (`[contacts]`: the rows of one table that pass a simple filter), so the admins of a
//! tenant deleted from the databases are still found; or imported from a CSV file. Both
//! are kept in the control store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lifeboat_control::{Contact, ContactOrigin, ControlStore};
use lifeboat_core::config::Config;
use lifeboat_core::model::{TenantKey, Value};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::target::{Resolved, Target};
use lifeboat_core::time::format_us;
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::campaign::resolve_target;
use crate::context::{check_tenants, control_url, histories, open_vault};

/// A value as the filter and the control store see it: text, numbers in decimal, NULL as
/// nothing.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The `[contacts]` rows of `tenants` in the vault at `resolved`; nothing when no
/// `[contacts]` is configured.
pub async fn read_contacts(
    config: &Config,
    vault: &Vault,
    histories: &[SourceHistory],
    tenants: &BTreeSet<TenantKey>,
    resolved: &Resolved,
) -> Result<Vec<Contact>> {
    let Some(spec) = &config.contacts else {
        return Ok(Vec::new());
    };
    let conditions = spec.conditions()?;
    let Some(history) = histories.iter().find(|h| h.source == spec.source) else {
        return Ok(Vec::new());
    };
    let Some(position) = resolved.positions.get(&spec.source) else {
        return Ok(Vec::new());
    };
    let read_at = format_us(resolved.time_us);
    let mut out = Vec::new();
    for (tenant, mut stream) in history.streams_at(vault, tenants, position.get()).await? {
        let Some(schema) = stream.schemas().remove(&spec.table) else {
            continue;
        };
        let column = |name: &str, what: &str| -> Result<usize> {
            schema
                .columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| {
                    Error::config(format!(
                        "[contacts] {what} = {name:?}: {}.{} has no such column",
                        spec.source, spec.table
                    ))
                })
        };
        let email = column(&spec.email_column, "email_column")?;
        let name = spec
            .name_column
            .as_deref()
            .map(|c| column(c, "name_column"))
            .transpose()?;
        let locale = spec
            .locale_column
            .as_deref()
            .map(|c| column(c, "locale_column"))
            .transpose()?;
        let filter = conditions
            .iter()
            .map(|c| Ok((column(&c.column, "where")?, &c.values)))
            .collect::<Result<Vec<_>>>()?;
        let mut found = Vec::new();
        stream.for_each_row(&spec.table, |row| {
            let get = |i: usize| row.get(i).and_then(text);
            let passes = filter
                .iter()
                .all(|(i, values)| get(*i).is_some_and(|v| values.contains(&v)));
            let Some(address) = get(email).map(|e| e.trim().to_string()) else {
                return;
            };
            if passes && !address.is_empty() {
                found.push(Contact {
                    tenant: tenant.to_string(),
                    email: address,
                    name: name.and_then(get),
                    locale: locale.and_then(get),
                    origin: ContactOrigin::Vault,
                    read_at: Some(read_at.clone()),
                });
            }
        })?;
        out.extend(found);
    }
    out.sort_by(|a, b| (&a.tenant, &a.email).cmp(&(&b.tenant, &b.email)));
    out.dedup_by(|a, b| a.tenant == b.tenant && a.email == b.email);
    Ok(out)
}

/// `contacts refresh`: read the contacts of `tenants` (all the vault knows when empty)
/// at `target` into the control store, replacing the vault contacts read before. Returns
/// the contacts read.
pub async fn refresh(
    config: &Config,
    config_path: &Option<PathBuf>,
    target: &Target,
    tenants: &[String],
) -> Result<Vec<Contact>> {
    let spec = config.contacts.as_ref().ok_or_else(|| {
        Error::usage("no [contacts] in the configuration: nothing to read from the vault")
    })?;
    let vault = open_vault(config).await?;
    let names: Vec<String> = config.sources.keys().cloned().collect();
    let histories = histories(&vault, &names).await?;
    let tenants = if tenants.is_empty() {
        let history = histories
            .iter()
            .find(|h| h.source == spec.source)
            .ok_or_else(|| Error::usage(format!("source {} is not in the vault", spec.source)))?;
        history.tenants(&vault).await?
    } else {
        check_tenants(&vault, &histories, tenants).await?
    };
    let resolved = resolve_target(config, &vault, &histories, target).await?;
    let contacts = read_contacts(config, &vault, &histories, &tenants, &resolved).await?;
    let mut control = ControlStore::open(&control_url(config, config_path)?)?;
    let keys: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    control.replace_vault_contacts(&keys, &contacts)?;
    Ok(contacts)
}

/// The contacts of a CSV file with the header `tenant,email,name,locale`. Every bad row
/// is named by its line.
pub fn parse_csv(file: &Path) -> Result<Vec<(u64, Contact)>> {
    let shown = file.display();
    let bytes =
        std::fs::read(file).map_err(|e| Error::usage(format!("cannot read {shown}: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let header = reader
        .headers()
        .map_err(|e| Error::usage(format!("{shown}: {e}")))?
        .clone();
    if header.iter().collect::<Vec<_>>() != ["tenant", "email", "name", "locale"] {
        return Err(Error::usage(format!(
            "{shown} line 1: the header must be `tenant,email,name,locale`"
        )));
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != 4 {
            problems.push(format!("line {line}: {} fields, expected 4", record.len()));
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or_default().to_string();
        let optional = |i: usize| Some(field(i)).filter(|v| !v.is_empty());
        let (tenant, email) = (field(0), field(1));
        if tenant.is_empty() {
            problems.push(format!("line {line}: no tenant"));
        } else if !lifeboat_control::valid_email(&email) {
            problems.push(format!("line {line}: {email:?} is not an email address"));
        } else if !seen.insert((tenant.clone(), email.to_lowercase())) {
            problems.push(format!("line {line}: {tenant} {email} appears twice"));
        } else {
            out.push((
                line,
                Contact {
                    tenant,
                    email,
                    name: optional(2),
                    locale: optional(3),
                    origin: ContactOrigin::Import,
                    read_at: None,
                },
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::usage(format!(
            "{shown}: nothing imported: {}",
            problems.join("; ")
        )));
    }
    Ok(out)
}

/// `contacts import`: every row of `file`, or none. Each tenant must be known to the
/// vault. Returns how many contacts were imported.
pub async fn import(config: &Config, config_path: &Option<PathBuf>, file: &Path) -> Result<usize> {
    let rows = parse_csv(file)?;
    let vault = open_vault(config).await?;
    let names: Vec<String> = config.sources.keys().cloned().collect();
    let histories = histories(&vault, &names).await?;
    let mut known: BTreeSet<TenantKey> = BTreeSet::new();
    for history in &histories {
        known.extend(history.tenants(&vault).await?);
    }
    let unknown: Vec<String> = rows
        .iter()
        .filter(|(_, c)| !known.contains(&TenantKey::new(c.tenant.clone())))
        .map(|(line, c)| format!("line {line}: unknown tenant {}", c.tenant))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::usage(format!(
            "{}: nothing imported: {} (`lifeboat tenants` lists the protected tenants)",
            file.display(),
            unknown.join("; ")
        )));
    }
    let contacts: Vec<Contact> = rows.into_iter().map(|(_, c)| c).collect();
    let mut control = ControlStore::open(&control_url(config, config_path)?)?;
    control.import_contacts(&contacts)?;
    Ok(contacts.len())
}
