//! The records Lifeboat captures and keeps: values, rows, changes, transactions, and the
//! vault's objects (segments, bases, checkpoints). Their encoding is fixed by
//! docs/vault-format.md.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// One column value. PostgreSQL values are kept as the server's text output (`Text`),
/// SQLite values keep their storage class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Int(a), Value::Int(b)) => a == b,
            // Bit equality: NaN equals NaN, and 0.0 differs from -0.0, as stored.
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Blob(a), Value::Blob(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.feed(&mut |bytes| state.write(bytes));
    }
}

impl Value {
    /// Feed a canonical, unambiguous byte encoding of the value to `sink`: a tag byte,
    /// then a length where the payload's size varies. Used for hashing and checksums.
    pub fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
        match self {
            Value::Null => sink(&[0]),
            Value::Int(v) => {
                sink(&[1]);
                sink(&v.to_le_bytes());
            }
            Value::Real(v) => {
                sink(&[2]);
                sink(&v.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                sink(&[3]);
                sink(&(s.len() as u64).to_le_bytes());
                sink(s.as_bytes());
            }
            Value::Blob(b) => {
                sink(&[4]);
                sink(&(b.len() as u64).to_le_bytes());
                sink(b);
            }
        }
    }

    /// Append the bytes `feed` gives to `out`, without a call per piece.
    #[inline]
    pub fn feed_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Real(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                out.push(3);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// The tenant key this value names, when it is used as a tenant column.
    pub fn tenant_key(&self) -> Option<TenantKey> {
        match self {
            Value::Null => None,
            Value::Int(v) => Some(TenantKey(v.to_string())),
            Value::Real(v) => Some(TenantKey(v.to_string())),
            Value::Text(s) => Some(TenantKey(s.clone())),
            Value::Blob(b) => Some(TenantKey(hex::encode(b))),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Real(v) => write!(f, "{v}"),
            Value::Text(s) => f.write_str(s),
            Value::Blob(b) => write!(f, "x'{}'", hex::encode(b)),
        }
    }
}

/// A row: one value per column of its table's schema, in schema order.
pub type Row = Vec<Value>;

/// A tenant key: the text form of the tenant column's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantKey(pub String);

impl TenantKey {
    pub fn new(key: impl Into<String>) -> Self {
        TenantKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The captured shape of a table: its stored columns (generated columns excluded) and
/// which of them form the primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<String>,
    /// Indexes into `columns` of the primary key; empty: the whole row is the key.
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The key of `row` under this schema.
    pub fn row_key(&self, row: &[Value]) -> Vec<Value> {
        if self.key.is_empty() {
            row.to_vec()
        } else {
            self.key
                .iter()
                .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
                .collect()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    /// The table's columns changed: every tenant's rows take the change's schema.
    Alter,
}

impl Op {
    /// Truncate and alter have no tenant: they apply to every tenant's rows.
    pub fn is_for_every_tenant(self) -> bool {
        matches!(self, Op::Truncate | Op::Alter)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Alter => "alter",
        }
    }
}

/// One row change, attributed to its tenant. `table` indexes the enclosing segment's
/// `tables`. A truncate has no tenant and no rows: it empties the table for every tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub tenant: Option<TenantKey>,
    pub table: u32,
    pub op: Op,
    pub old: Option<Row>,
    pub new: Option<Row>,
    pub position: u64,
    /// When the change was made, where the source tells (SQLite's changelog does; a
    /// PostgreSQL change has its transaction's commit time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_us: Option<i64>,
}

/// What a source committed atomically (PostgreSQL) or in one commit group (SQLite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub xid: u64,
    pub position: u64,
    pub commit_time_us: i64,
    pub changes: Vec<Change>,
}

/// A batch of consecutive transactions of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub source: String,
    pub first: u64,
    pub last: u64,
    /// The `last` of the segment before this one in the source's history (the first
    /// checkpoint's position for the first segment): the segment covers (prev, last].
    pub prev: u64,
    /// 0 as capture writes it; one more each time a purge writes the segment again.
    pub generation: u32,
    pub tables: Vec<TableSchema>,
    pub transactions: Vec<Transaction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRow {
    pub table: u32,
    pub values: Row,
}

/// Every row of one tenant in one source at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Base {
    pub source: String,
    pub tenant: TenantKey,
    pub position: u64,
    pub commit_time_us: i64,
    pub tables: Vec<TableSchema>,
    pub rows: Vec<BaseRow>,
}

/// Which tenant a referenced key belongs to, for one `parent_table.column` that a
/// `tenant_via` declaration points to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeymapRecord {
    pub table: String,
    pub column: String,
    pub entries: Vec<(Value, TenantKey)>,
}

/// What capture needs to resume a source without re-reading its whole history. Its key
/// maps are an index of key-map chunks (docs/vault-format.md, "Key maps").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub source: String,
    pub position: u64,
    pub commit_time_us: i64,
    pub tables: Vec<TableSchema>,
    pub keymaps: Vec<KeymapIndex>,
}

/// One key map of a checkpoint: its buckets' chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeymapIndex {
    pub table: String,
    pub column: String,
    /// Bucket bits: a key's bucket is the top `bits` bits of its hash (`keymap_bucket`).
    pub bits: u8,
    /// Keys in the map.
    pub keys: u64,
    /// One per non-empty bucket, in bucket order: what the map's listing holds. A
    /// checkpoint stores only `listing`; readers fill this in from it.
    pub chunks: Vec<KeymapChunkRef>,
    /// The key-map listing that holds `chunks` (`None` when there is none yet, or no
    /// chunk at all): shared by checkpoints until a fold writes a new one.
    #[serde(default)]
    pub listing: Option<KeymapListingRef>,
    /// The key-map deltas applied over the chunks, oldest first.
    #[serde(default)]
    pub deltas: Vec<KeymapDeltaRef>,
}

/// Where a key-map listing is: `{position:016x}-{hash}.kml`, with its bucket count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeymapListingRef {
    pub position: u64,
    pub hash: String,
    pub buckets: u64,
}

/// The bucket chunks of one key map (a `.kml` object), shared by the checkpoints between
/// two folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeymapListing {
    pub source: String,
    pub table: String,
    pub column: String,
    pub bits: u8,
    pub keys: u64,
    /// One per non-empty bucket, in bucket order.
    pub chunks: Vec<KeymapChunkRef>,
}

/// Where a key-map delta is: `{position:016x}-{hash}.kmd`, with its entry count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeymapDeltaRef {
    pub position: u64,
    pub hash: String,
    pub entries: u64,
}

/// The keys of one key map that changed between two checkpoints (a `.kmd` object): each
/// with its tenant, or `None` (a tombstone) when it has none any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeymapDelta {
    pub source: String,
    pub table: String,
    pub column: String,
    /// Each key once, sorted by the key's encoding (`keymap_key_bytes`).
    pub entries: Vec<(Value, Option<TenantKey>)>,
}

/// Where a bucket's entries are: the key-map chunk `{position:016x}-{hash}.kmap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeymapChunkRef {
    pub bucket: u32,
    pub position: u64,
    pub hash: String,
    pub keys: u64,
}

/// The entries of one bucket of one key map (a `.kmap` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeymapChunk {
    pub source: String,
    pub table: String,
    pub column: String,
    pub bits: u8,
    pub bucket: u32,
    /// Sorted by the key's encoding (`keymap_key_bytes`).
    pub entries: Vec<(Value, TenantKey)>,
}

/// Bucket bits never go above this (a million buckets a map).
pub const KEYMAP_MAX_BITS: u8 = 20;

/// A key's encoding in key maps: its MessagePack encoding as a tagged value.
pub fn keymap_key_bytes(key: &Value) -> Vec<u8> {
    rmp_serde::to_vec(key).expect("a value always encodes")
}

/// The 64-bit hash that places a key in its bucket: XXH3-64, seed 0, of its encoding.
pub fn keymap_key_hash(encoded: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(encoded)
}

/// The bucket of a key hash under `bits` bucket bits.
pub fn keymap_bucket(hash: u64, bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - u32::from(bits))) as u32
    }
}

/// The SQL dialect of a source database: what its queries are written in and how its
/// positions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
        }
    }
}

/// A place in a source's history of commits: on PostgreSQL a WAL position (LSN), on SQLite
/// a sequence number of capture's changelog. Within one source, positions only grow: a
/// change committed later has a greater position. Comparing positions of two sources
/// means nothing. Encoded as the bare number (`serde(transparent)`), as the vault stores
/// it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(u64);

impl Position {
    pub const ZERO: Position = Position(0);

    pub fn new(position: u64) -> Self {
        Position(position)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// Parse an LSN (`X/Y`) or a plain decimal number.
    pub fn parse(text: &str) -> Option<Position> {
        parse_position(text).map(Position)
    }

    /// For people: an LSN (`X/Y`) on PostgreSQL, the plain number on SQLite.
    pub fn describe(self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Postgres => format_lsn(self.0),
            Dialect::Sqlite => self.0.to_string(),
        }
    }
}

impl From<u64> for Position {
    fn from(position: u64) -> Self {
        Position(position)
    }
}

impl From<Position> for u64 {
    fn from(position: Position) -> Self {
        position.0
    }
}

/// Format a PostgreSQL LSN as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parse `X/Y` (an LSN) or a plain decimal number.
pub fn parse_position(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some((hi, lo)) = text.split_once('/') {
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return None;
        }
        Some((hi << 32) | lo)
    } else {
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        let lsn = (0x16u64 << 32) | 0xB374D848;
        assert_eq!(format_lsn(lsn), "16/B374D848");
        assert_eq!(parse_position("16/B374D848"), Some(lsn));
        assert_eq!(parse_position("1234"), Some(1234));
        assert_eq!(parse_position("x/1"), None);
    }

    #[test]
    fn positions_describe_themselves_per_dialect_and_encode_as_numbers() {
        let lsn = Position::new((0x16u64 << 32) | 0xB374D848);
        assert_eq!(lsn.describe(Dialect::Postgres), "16/B374D848");
        assert_eq!(lsn.describe(Dialect::Sqlite), lsn.get().to_string());
        assert_eq!(Position::parse("16/B374D848"), Some(lsn));
        assert_eq!(Position::parse("1234"), Some(Position(1234)));
        assert!(Position(1) < Position(2));
        assert_eq!(
            rmp_serde::to_vec(&lsn).expect("encode"),
            rmp_serde::to_vec(&lsn.get()).expect("encode")
        );
        assert_eq!(serde_json::to_string(&Position(42)).expect("json"), "42");
    }

    #[test]
    fn nan_equals_itself_and_hashes_alike() {
        use std::collections::HashSet;
        let mut set = HashSet::new();
        set.insert(Value::Real(f64::NAN));
        assert!(set.contains(&Value::Real(f64::NAN)));
        assert_ne!(Value::Int(1), Value::Text("1".into()));
    }
}
