//! The vault: immutable, checksummed objects on a store (docs/vault-format.md). Nothing
//! but this module writes to a store.

mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use store::{write_atomically, LocalStore, S3Store, Store};

use crate::config::VaultConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Base, Checkpoint, Segment, TenantKey};

pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"LIFEBOAT";
const HEADER_NAME: &str = "lifeboat-vault.json";

/// A parsed `[vault] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultUrl {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl VaultUrl {
    pub fn parse(url: &str) -> Result<VaultUrl> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::config(format!(
                    "vault url {url:?}: the path must be absolute (file:///absolute/dir)"
                )));
            }
            Ok(VaultUrl::Local(path.into()))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::config(format!("vault url {url:?}: no bucket name")));
            }
            Ok(VaultUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else {
            Err(Error::config(format!(
                "vault url {url:?}: expected file:///absolute/dir or s3://bucket/prefix"
            )))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Segment = 1,
    Base = 2,
    Checkpoint = 3,
}

/// A segment as listed: its source and position range, without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub name: String,
    pub first: u64,
    pub last: u64,
}

/// A base or checkpoint as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRef {
    pub name: String,
    pub position: u64,
}

#[derive(Debug, Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
}

impl Vault {
    /// The store named by the config, without touching it.
    pub fn store_for(config: &VaultConfig) -> Result<Arc<dyn Store>> {
        Ok(match VaultUrl::parse(&config.url)? {
            VaultUrl::Local(path) => Arc::new(LocalStore::new(path)),
            VaultUrl::S3 { bucket, prefix } => {
                let endpoint = config
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                Arc::new(S3Store::new(
                    &bucket,
                    &prefix,
                    endpoint.as_deref(),
                    config.region.as_deref(),
                )?)
            }
        })
    }

    /// Open an existing vault: its header must be there and of a known version.
    pub async fn open(store: Arc<dyn Store>) -> Result<Vault> {
        let vault = Vault { store };
        match vault.read_header().await? {
            Some(()) => Ok(vault),
            None => Err(Error::vault(format!(
                "no vault at {}: run `lifeboat capture` first to create it",
                vault.store.describe()
            ))),
        }
    }

    /// Open the vault, creating its header if the store is empty.
    pub async fn open_or_create(store: Arc<dyn Store>) -> Result<Vault> {
        let vault = Vault { store };
        if vault.read_header().await?.is_none() {
            let header = serde_json::json!({
                "format": "lifeboat-vault",
                "version": FORMAT_VERSION,
                "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            });
            vault
                .store
                .put(HEADER_NAME, Bytes::from(header.to_string()))
                .await
                .map_err(|e| e.context("cannot create the vault"))?;
        }
        Ok(vault)
    }

    async fn read_header(&self) -> Result<Option<()>> {
        let Some(bytes) = self.store.get(HEADER_NAME).await.map_err(|e| {
            Error::vault(format!(
                "vault {} is unreachable: {}",
                self.store.describe(),
                e.message()
            ))
        })?
        else {
            return Ok(None);
        };
        let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(format!(
                "{HEADER_NAME} in {} is not valid JSON: {e}",
                self.store.describe()
            ))
        })?;
        if header.get("format").and_then(|v| v.as_str()) != Some("lifeboat-vault") {
            return Err(Error::corrupt(format!(
                "{} is not a Lifeboat vault ({HEADER_NAME} has no format \"lifeboat-vault\")",
                self.store.describe()
            )));
        }
        let version = header.get("version").and_then(|v| v.as_u64());
        if version != Some(FORMAT_VERSION as u64) {
            return Err(Error::vault(format!(
                "vault {} has format version {}; this lifeboat reads version {FORMAT_VERSION}",
                self.store.describe(),
                version.map_or("(none)".to_string(), |v| v.to_string())
            )));
        }
        Ok(Some(()))
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // --- writing -------------------------------------------------------------------

    pub async fn put_segment(&self, segment: &Segment) -> Result<String> {
        let bytes = encode(Kind::Segment, segment)?;
        let name = format!(
            "sources/{}/segments/{:016x}-{:016x}-{}.seg",
            segment.source,
            segment.first,
            segment.last,
            content_hash(&bytes)
        );
        self.store.put(&name, bytes).await?;
        Ok(name)
    }

    pub async fn put_base(&self, base: &Base) -> Result<String> {
        let bytes = encode(Kind::Base, base)?;
        let name = format!(
            "sources/{}/bases/{}/{:016x}-{}.base",
            base.source,
            escape_tenant(&base.tenant),
            base.position,
            content_hash(&bytes)
        );
        self.store.put(&name, bytes).await?;
        Ok(name)
    }

    pub async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String> {
        let bytes = encode(Kind::Checkpoint, checkpoint)?;
        let name = format!(
            "sources/{}/checkpoints/{:016x}-{}.ckpt",
            checkpoint.source,
            checkpoint.position,
            content_hash(&bytes)
        );
        self.store.put(&name, bytes).await?;
        Ok(name)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store.delete(name).await
    }

    // --- listing -------------------------------------------------------------------

    pub async fn list_segments(&self, source: &str) -> Result<Vec<SegmentRef>> {
        let prefix = format!("sources/{source}/segments/");
        let mut refs = Vec::new();
        for name in self.store.list(&prefix).await? {
            let file = &name[prefix.len()..];
            let parsed = file.strip_suffix(".seg").and_then(|stem| {
                let mut parts = stem.splitn(3, '-');
                let first = u64::from_str_radix(parts.next()?, 16).ok()?;
                let last = u64::from_str_radix(parts.next()?, 16).ok()?;
                parts.next()?;
                Some((first, last))
            });
            match parsed {
                Some((first, last)) => refs.push(SegmentRef { name, first, last }),
                None => tracing::warn!("ignoring unexpected vault object {name}"),
            }
        }
        refs.sort_by_key(|r| (r.first, r.last));
        Ok(refs)
    }

    pub async fn list_checkpoints(&self, source: &str) -> Result<Vec<PositionRef>> {
        self.list_positions(&format!("sources/{source}/checkpoints/"), ".ckpt")
            .await
    }

    pub async fn list_bases(&self, source: &str, tenant: &TenantKey) -> Result<Vec<PositionRef>> {
        self.list_positions(
            &format!("sources/{source}/bases/{}/", escape_tenant(tenant)),
            ".base",
        )
        .await
    }

    /// Every tenant with a base in `source`, with its bases.
    pub async fn list_all_bases(
        &self,
        source: &str,
    ) -> Result<BTreeMap<TenantKey, Vec<PositionRef>>> {
        let prefix = format!("sources/{source}/bases/");
        let mut out: BTreeMap<TenantKey, Vec<PositionRef>> = BTreeMap::new();
        for name in self.store.list(&prefix).await? {
            let rest = &name[prefix.len()..];
            let Some((tenant, file)) = rest.split_once('/') else {
                continue;
            };
            let (Some(tenant), Some(position)) =
                (unescape_tenant(tenant), parse_position_name(file, ".base"))
            else {
                tracing::warn!("ignoring unexpected vault object {name}");
                continue;
            };
            out.entry(tenant).or_default().push(PositionRef {
                name: name.clone(),
                position,
            });
        }
        for refs in out.values_mut() {
            refs.sort_by_key(|r| r.position);
        }
        Ok(out)
    }

    async fn list_positions(&self, prefix: &str, suffix: &str) -> Result<Vec<PositionRef>> {
        let mut refs = Vec::new();
        for name in self.store.list(prefix).await? {
            let file = &name[prefix.len()..];
            if file.contains('/') {
                continue;
            }
            match parse_position_name(file, suffix) {
                Some(position) => refs.push(PositionRef { name, position }),
                None => tracing::warn!("ignoring unexpected vault object {name}"),
            }
        }
        refs.sort_by_key(|r| r.position);
        Ok(refs)
    }

    /// The sources that have a checkpoint: those capture has started.
    pub async fn list_sources(&self) -> Result<Vec<String>> {
        let mut sources: Vec<String> = self
            .store
            .list("sources/")
            .await?
            .into_iter()
            .filter_map(|n| {
                let mut parts = n.split('/');
                parts.next()?;
                let source = parts.next()?;
                (parts.next()? == "checkpoints").then(|| source.to_string())
            })
            .collect();
        sources.dedup();
        Ok(sources)
    }

    // --- reading -------------------------------------------------------------------

    pub async fn read_segment(&self, name: &str) -> Result<Segment> {
        self.read(name, Kind::Segment).await
    }

    pub async fn read_base(&self, name: &str) -> Result<Base> {
        self.read(name, Kind::Base).await
    }

    pub async fn read_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        self.read(name, Kind::Checkpoint).await
    }

    async fn read<T: DeserializeOwned>(&self, name: &str, kind: Kind) -> Result<T> {
        let bytes = self.store.get(name).await?.ok_or_else(|| {
            Error::vault(format!(
                "vault object {name} is missing from {}",
                self.store.describe()
            ))
        })?;
        decode(name, kind, &bytes)
    }
}

fn parse_position_name(file: &str, suffix: &str) -> Option<u64> {
    let stem = file.strip_suffix(suffix)?;
    let (position, _hash) = stem.split_once('-')?;
    u64::from_str_radix(position, 16).ok()
}

/// The first 32 hex digits of the SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..16])
}

fn encode<T: Serialize>(kind: Kind, record: &T) -> Result<Bytes> {
    let body = rmp_serde::to_vec_named(record)
        .map_err(|e| Error::vault(format!("cannot encode a vault object: {e}")))?;
    let mut bytes = Vec::with_capacity(body.len() / 3 + 16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.push(kind as u8);
    let mut encoder = zstd::Encoder::new(&mut bytes, 3)
        .map_err(|e| Error::vault(format!("cannot compress a vault object: {e}")))?;
    std::io::Write::write_all(&mut encoder, &body)
        .and_then(|_| encoder.finish().map(|_| ()))
        .map_err(|e| Error::vault(format!("cannot compress a vault object: {e}")))?;
    Ok(Bytes::from(bytes))
}

fn decode<T: DeserializeOwned>(name: &str, kind: Kind, bytes: &[u8]) -> Result<T> {
    let corrupt = |why: String| Error::corrupt(format!("vault object {name} is corrupt: {why}"));
    let expected = name
        .rsplit('/')
        .next()
        .and_then(|file| file.rsplit_once('-'))
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(hash, _)| hash)
        .ok_or_else(|| corrupt("its name carries no checksum".into()))?;
    let actual = content_hash(bytes);
    if actual != expected {
        return Err(corrupt(format!(
            "checksum {actual} does not match the {expected} in its name"
        )));
    }
    if bytes.len() < 11 || &bytes[..8] != MAGIC {
        return Err(corrupt("no LIFEBOAT header".into()));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Vault,
            format!("vault object {name} has format version {version}; this lifeboat reads {FORMAT_VERSION}"),
        ));
    }
    if bytes[10] != kind as u8 {
        return Err(corrupt(format!(
            "kind {} where {} was expected",
            bytes[10], kind as u8
        )));
    }
    let body = zstd::decode_all(&bytes[11..]).map_err(|e| corrupt(format!("zstd: {e}")))?;
    rmp_serde::from_slice(&body).map_err(|e| corrupt(format!("cannot decode: {e}")))
}

/// Escape a tenant key for an object name: bytes outside `A-Z a-z 0-9 - _` become `=XX`.
pub fn escape_tenant(tenant: &TenantKey) -> String {
    let mut out = String::with_capacity(tenant.0.len());
    for byte in tenant.0.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    out
}

pub fn unescape_tenant(escaped: &str) -> Option<TenantKey> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(TenantKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Op, TableSchema, Transaction, Value};

    #[test]
    fn tenant_names_round_trip() {
        for key in ["42", "acme.io", "a=b", "ünï cödé", "x/y"] {
            let tenant = TenantKey::new(key);
            let escaped = escape_tenant(&tenant);
            assert!(escaped
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='));
            assert_eq!(unescape_tenant(&escaped), Some(tenant));
        }
    }

    fn segment() -> Segment {
        Segment {
            source: "s".into(),
            first: 5,
            last: 5,
            tables: vec![TableSchema {
                name: "t".into(),
                columns: vec!["id".into(), "x".into()],
                key: vec![0],
            }],
            transactions: vec![Transaction {
                xid: 9,
                position: 5,
                commit_time_us: 1,
                changes: vec![Change {
                    tenant: Some(TenantKey::new("1")),
                    table: 0,
                    op: Op::Insert,
                    old: None,
                    new: Some(vec![Value::Int(1), Value::Real(f64::NEG_INFINITY)]),
                    position: 5,
                    time_us: None,
                }],
            }],
        }
    }

    #[tokio::test]
    async fn corrupted_object_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open_or_create(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let name = vault.put_segment(&segment()).await.expect("put");
        assert_eq!(vault.read_segment(&name).await.expect("read"), segment());
        let path = dir.path().join(&name);
        let mut bytes = std::fs::read(&path).expect("read file");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).expect("write");
        let err = vault.read_segment(&name).await.expect_err("corrupt");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains(&name), "{err}");
    }

    #[tokio::test]
    async fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(HEADER_NAME),
            r#"{"format":"lifeboat-vault","version":7}"#,
        )
        .expect("write");
        let err = Vault::open(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect_err("version 7");
        assert!(err.to_string().contains("version 7"), "{err}");
    }
}
