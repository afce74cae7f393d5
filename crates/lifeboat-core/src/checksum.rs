//! Order-independent table checksums: the row count and the wrapping sum of every row's
//! 128-bit hash. A row's hash covers its column names and values, columns taken in name
//! order, so two databases that list columns in different orders still agree.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

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

/// Hashes rows of one table; the column order is fixed once. A row's hash is the XXH3-128
/// of its bytes as `Value::feed` gives them, each preceded by its column's name (length,
/// then bytes), columns in name order: laid out in one buffer (kept between rows) and
/// hashed at once.
pub struct RowHasher {
    order: Vec<usize>,
    /// Each column's name as hashed (its length, then its bytes), in `order`.
    prefixes: Vec<Vec<u8>>,
    buffer: RefCell<Vec<u8>>,
}

impl RowHasher {
    pub fn new(columns: &[String]) -> Self {
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.sort_by(|&a, &b| columns[a].cmp(&columns[b]));
        let prefixes = order
            .iter()
            .map(|&i| {
                let name = columns[i].as_bytes();
                let mut prefix = (name.len() as u64).to_le_bytes().to_vec();
                prefix.extend_from_slice(name);
                prefix
            })
            .collect();
        RowHasher {
            order,
            prefixes,
            buffer: RefCell::new(Vec::new()),
        }
    }

    pub fn hash(&self, row: &[Value]) -> u128 {
        let mut buffer = self.buffer.borrow_mut();
        buffer.clear();
        for (&i, prefix) in self.order.iter().zip(&self.prefixes) {
            buffer.extend_from_slice(prefix);
            row.get(i).unwrap_or(&Value::Null).feed_into(&mut buffer);
        }
        xxh3_128(&buffer)
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

    #[test]
    fn a_row_hashes_as_its_names_and_values_fed_one_by_one() {
        // The digests are compared across versions and machines: a row's hash stays the
        // streamed XXH3-128 of each column's name (length, bytes) and value, in name order.
        let columns: Vec<String> = vec!["b".into(), "a".into(), "ccc".into(), "d".into()];
        let rows = [
            vec![
                Value::Text("x\ty".into()),
                Value::Int(-7),
                Value::Null,
                Value::Real(0.5),
            ],
            vec![
                Value::Blob(vec![0, 1, 255]),
                Value::Text(String::new()),
                Value::Text("é".repeat(300)),
            ],
        ];
        let hasher = RowHasher::new(&columns);
        for row in &rows {
            let mut streamed = xxhash_rust::xxh3::Xxh3::new();
            for name in ["a", "b", "ccc", "d"] {
                let i = columns.iter().position(|c| c == name).expect("column");
                streamed.update(&(name.len() as u64).to_le_bytes());
                streamed.update(name.as_bytes());
                row.get(i)
                    .unwrap_or(&Value::Null)
                    .feed(&mut |bytes| streamed.update(bytes));
            }
            assert_eq!(hasher.hash(row), streamed.digest128());
        }
    }
}
