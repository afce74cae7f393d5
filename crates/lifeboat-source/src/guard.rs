//! Guarded operations against live sources (docs/guard.md): IDs looked up in their kind's
//! table, typed parameters bound into a step's SQL, and the row changes a transaction made,
//! attributed to tenants and counted.

use std::collections::BTreeMap;

use lifeboat_core::model::{Change, Dialect, Op, Row, TenantKey, Value};
use lifeboat_core::tenancy::{attribute, Keymaps, RawChange, SourceTenancy};
use lifeboat_core::{Error, Result};

use crate::{keyed_tenant_query, quote_ident, quote_literal};

/// One ID as found in its kind's table.
#[derive(Debug, Clone, PartialEq)]
pub struct IdRow {
    pub id: Value,
    pub label: Option<String>,
    /// `None` when the kind's table is global.
    pub tenant: Option<TenantKey>,
}

/// Rows touched by a transaction: tenant (empty for rows of no tenant) -> table -> rows.
pub type Effect = BTreeMap<String, BTreeMap<String, u64>>;

/// A row change a transaction made, as recorded, before attribution.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub table: String,
    pub op: Op,
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// An ID as given on the command line, in the value kind a database compares best: an
/// integer when it reads as one.
pub fn id_value(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(i) if i.to_string() == id => Value::Int(i),
        _ => Value::Text(id.to_string()),
    }
}

/// `sql` with the array parameter `$name` bound to `values`. PostgreSQL: an array
/// literal (written `= ANY($name)`; `IN $name` is accepted too). SQLite, which has no
/// arrays: `IN (SELECT value FROM json_each(…))`, for both spellings.
pub fn bind_array(sql: &str, name: &str, values: &[Value], dialect: Dialect) -> String {
    let placeholder = format!("${name}");
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = find_placeholder(rest, &placeholder) {
        let (before, after) = rest.split_at(at);
        let after = &after[placeholder.len()..];
        let trimmed = before.trim_end();
        // `= ANY(` just before, and `)` just after?
        let any_open = trimmed
            .strip_suffix('(')
            .map(str::trim_end)
            .and_then(|b| strip_suffix_word(b, "ANY"))
            .map(str::trim_end)
            .and_then(|b| b.strip_suffix('='));
        let close = after.trim_start().strip_prefix(')');
        let in_before = strip_suffix_word(trimmed, "IN");
        match (dialect, any_open, close, in_before) {
            (Dialect::Sqlite, Some(b), Some(a), _) => {
                out.push_str(b.trim_end());
                out.push_str(" IN ");
                out.push_str(&sqlite_list(values));
                rest = a;
            }
            (Dialect::Sqlite, _, _, _) => {
                out.push_str(before);
                out.push_str(&sqlite_list(values));
                rest = after;
            }
            (Dialect::Postgres, None, _, Some(b)) => {
                out.push_str(b);
                out.push_str("= ANY(");
                out.push_str(&postgres_array(values));
                out.push(')');
                rest = after;
            }
            (Dialect::Postgres, _, _, _) => {
                out.push_str(before);
                out.push_str(&postgres_array(values));
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn find_placeholder(text: &str, placeholder: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(placeholder) {
        let at = from + i;
        let next = text[at + placeholder.len()..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some(at);
        }
        from = at + placeholder.len();
    }
    None
}

/// `text` without a trailing keyword (any case, as a whole word).
fn strip_suffix_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(word.len())?;
    if !text.is_char_boundary(cut) || !text[cut..].eq_ignore_ascii_case(word) {
        return None;
    }
    let before = &text[..cut];
    match before.chars().last() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => None,
        _ => Some(before),
    }
}

fn postgres_array(values: &[Value]) -> String {
    let elements: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            other => format!(
                "\"{}\"",
                other.to_string().replace('\\', "\\\\").replace('"', "\\\"")
            ),
        })
        .collect();
    quote_literal(&format!("{{{}}}", elements.join(",")))
}

fn sqlite_list(values: &[Value]) -> String {
    let json: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Real(f) => serde_json::Value::from(*f),
            other => serde_json::Value::from(other.to_string()),
        })
        .collect();
    format!(
        "(SELECT value FROM json_each({}))",
        quote_literal(&serde_json::Value::Array(json).to_string())
    )
}

/// The query finding `ids` in `table.column` (with `label`), with each row's tenant.
pub fn id_query(
    tenancy: &SourceTenancy,
    table: &str,
    column: &str,
    label: Option<&str>,
    ids: &[Value],
    dialect: Dialect,
) -> Result<String> {
    let filter = bind_array(
        &format!("WHERE t0.{} = ANY($ids)", quote_ident(column)),
        "ids",
        ids,
        dialect,
    );
    if let Some(sql) = keyed_tenant_query(tenancy, table, column, label, &filter)? {
        return Ok(sql);
    }
    // A global table: no tenant.
    let label = label
        .map(|l| format!(", t0.{}", quote_ident(l)))
        .unwrap_or_default();
    Ok(format!(
        "SELECT t0.{}{label}, NULL FROM {} t0 {filter}",
        quote_ident(column),
        quote_ident(table)
    ))
}

/// Queries for the `tenant_via` key maps: `(table, column, sql)` for every referenced key,
/// each row `(key, tenant)`.
pub fn keymap_queries(tenancy: &SourceTenancy) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for (table, column) in &tenancy.referenced {
        if let Some(sql) = keyed_tenant_query(tenancy, table, column, None, "")? {
            out.push((table.clone(), column.clone(), sql));
        }
    }
    Ok(out)
}

/// Attribute recorded changes (in the order they were made) to tenants and count them.
/// A table outside the tenant map counts under no tenant.
pub fn count_effect(
    tenancy: &SourceTenancy,
    keymaps: &mut Keymaps,
    log: Vec<Recorded>,
) -> Result<Effect> {
    let mut effect = Effect::new();
    let mut out: Vec<Change> = Vec::new();
    for (position, recorded) in log.into_iter().enumerate() {
        let Some(table) = tenancy.table(&recorded.table) else {
            *effect
                .entry(String::new())
                .or_default()
                .entry(recorded.table)
                .or_default() += 1;
            continue;
        };
        if matches!(table.tenancy, lifeboat_core::tenancy::Tenancy::Global) {
            *effect
                .entry(String::new())
                .or_default()
                .entry(recorded.table)
                .or_default() += 1;
            continue;
        }
        out.clear();
        attribute(
            keymaps,
            0,
            table,
            RawChange {
                op: recorded.op,
                old: recorded.old,
                new: recorded.new,
                position: position as u64,
            },
            &mut out,
        )?;
        for change in &out {
            let tenant = change
                .tenant
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            *effect
                .entry(tenant)
                .or_default()
                .entry(recorded.table.clone())
                .or_default() += 1;
        }
    }
    keymaps.end_transaction();
    Ok(effect)
}

/// A JSON object of a row (PostgreSQL's `to_jsonb`) as a row of `columns`, values in their
/// text form (what capture stores).
pub fn row_from_json(columns: &[String], json: &serde_json::Value) -> Result<Row> {
    let object = json
        .as_object()
        .ok_or_else(|| Error::source("a recorded row is not a JSON object"))?;
    Ok(columns
        .iter()
        .map(|c| match object.get(c) {
            None | Some(serde_json::Value::Null) => Value::Null,
            Some(serde_json::Value::String(s)) => Value::Text(s.clone()),
            Some(serde_json::Value::Bool(b)) => Value::Text(if *b { "t" } else { "f" }.into()),
            Some(other) => Value::Text(other.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_bind_for_each_database() {
        let ids = [Value::Int(4), Value::Text("a\"b'c".into())];
        assert_eq!(
            bind_array(
                "DELETE FROM t WHERE id = ANY($ids)",
                "ids",
                &ids,
                Dialect::Postgres
            ),
            r#"DELETE FROM t WHERE id = ANY('{"4","a\"b''c"}')"#
        );
        assert_eq!(
            bind_array(
                "DELETE FROM t WHERE id in $ids",
                "ids",
                &ids,
                Dialect::Postgres
            ),
            r#"DELETE FROM t WHERE id = ANY('{"4","a\"b''c"}')"#
        );
        assert_eq!(
            bind_array(
                "DELETE FROM t WHERE id = any ( $ids )",
                "ids",
                &ids,
                Dialect::Sqlite
            ),
            r#"DELETE FROM t WHERE id IN (SELECT value FROM json_each('[4,"a\"b''c"]'))"#
        );
        assert_eq!(
            bind_array(
                "DELETE FROM t WHERE id IN $ids OR x = $idsx",
                "ids",
                &ids,
                Dialect::Sqlite
            ),
            r#"DELETE FROM t WHERE id IN (SELECT value FROM json_each('[4,"a\"b''c"]')) OR x = $idsx"#
        );
    }
}
