//! Order-independent table checksums: the row count and the wrapping sum of every row's
//! 128-bit hash. A row's hash covers its column names and values, columns taken in name
//! order, so two databases that list columns in different orders still agree.

use std::collections::BTreeMap;

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::model::Value;
use crate::state::TenantState;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableDigest {
    pub rows: u64,
    #[serde(serialize_with = "as_hex")]
    pub sum: u128,
}

fn as_hex<S: serde::Serializer>(sum: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{sum:032x}"))
}

impl TableDigest {
    /// The digest of `rows`, whose values follow `columns`.
    pub fn of<'a>(columns: &[String], rows: impl IntoIterator<Item = &'a Vec<Value>>) -> Self {
        let hasher = RowHasher::new(columns);
        let mut digest = TableDigest::default();
        for row in rows {
            digest.add(hasher.hash(row));
        }
        digest
    }

    /// The sum as 32 lowercase hex digits (as serialized).
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }

    pub fn add(&mut self, hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// Hashes rows of one table; the column order is fixed once.
pub struct RowHasher {
    order: Vec<usize>,
    names: Vec<String>,
}

impl RowHasher {
    pub fn new(columns: &[String]) -> Self {
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.sort_by(|&a, &b| columns[a].cmp(&columns[b]));
        RowHasher {
            order,
            names: columns.to_vec(),
        }
    }

    pub fn hash(&self, row: &[Value]) -> u128 {
        let mut hasher = Xxh3::new();
        for &i in &self.order {
            let name = &self.names[i];
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            match row.get(i) {
                Some(value) => value.feed(&mut |bytes| hasher.update(bytes)),
                None => Value::Null.feed(&mut |bytes| hasher.update(bytes)),
            }
        }
        hasher.digest128()
    }
}

/// Digests of every table of a tenant's state held in the vault.
pub fn state_digests(state: &TenantState) -> BTreeMap<String, TableDigest> {
    let mut out = BTreeMap::new();
    for (name, table) in &state.tables {
        let digest = match &table.schema {
            Some(schema) => TableDigest::of(&schema.columns, table.rows.values()),
            None => TableDigest::default(),
        };
        out.insert(name.clone(), digest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_order_does_not_matter_but_values_do() {
        let a = RowHasher::new(&["id".into(), "x".into()]);
        let b = RowHasher::new(&["x".into(), "id".into()]);
        let row_a = [Value::Int(1), Value::Text("v".into())];
        let row_b = [Value::Text("v".into()), Value::Int(1)];
        assert_eq!(a.hash(&row_a), b.hash(&row_b));
        assert_ne!(
            a.hash(&row_a),
            a.hash(&[Value::Int(1), Value::Text("w".into())])
        );
        assert_ne!(
            a.hash(&[Value::Null, Value::Null]),
            a.hash(&[Value::Text(String::new()), Value::Null])
        );
    }
}
