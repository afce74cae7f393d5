//! The vault: immutable, checksummed objects on a store (docs/vault-format.md). Nothing
//! but this module writes to a store.

pub mod faults;
mod fence;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use fence::{FenceCheck, WriteFence};
pub use store::{
    io_error_is_transient, s3_error_is_transient, write_atomically, LocalStore, S3Retries, S3Store,
    Store,
};

use crate::config::VaultConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    keymap_bucket, keymap_key_bytes, keymap_key_hash, Base, Checkpoint, KeymapChunk,
    KeymapChunkRef, KeymapDelta, KeymapDeltaRef, KeymapIndex, KeymapListing, KeymapListingRef, Row,
    Segment, TableSchema, TenantKey, KEYMAP_MAX_BITS,
};

pub const FORMAT_VERSION: u16 = 6;
/// How much of a segment a head read fetches at first: most heads fit.
const HEAD_PROBE: u64 = 16 * 1024;
/// More chunks than this wanted from one segment: read it whole instead.
const RANGE_READS_AT_MOST: usize = 8;
/// Magic, version, kind and the header's length.
const SEGMENT_PREAMBLE: usize = 15;
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
    Keymap = 4,
    KeymapDelta = 5,
    KeymapListing = 6,
}

/// A segment as listed: its source and position range, without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub name: String,
    pub first: u64,
    pub last: u64,
    /// The smallest and largest transaction id in the segment (PostgreSQL xids, SQLite
    /// commit group ids): where to look for a transaction without reading anything.
    pub xids: (u64, u64),
    /// Its size in bytes, as the store's listing tells it.
    pub size: u64,
}

/// A base or checkpoint as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRef {
    pub name: String,
    pub position: u64,
    /// Its size in bytes, as the store's listing tells it.
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    id: String,
    /// Asked before each put of a source's objects (capture under a lease).
    fence: Option<Arc<dyn WriteFence>>,
}

impl Vault {
    /// The store named by the config, without touching it. With `LIFEBOAT_VAULT_FAULTS`
    /// set (tests), wrapped in a `faults::FaultyStore`.
    pub fn store_for(config: &VaultConfig) -> Result<Arc<dyn Store>> {
        Self::store_with_retries(config, S3Retries::Client)
    }

    /// The store for a caller that retries transient errors itself (capture): an S3
    /// client retries a request only briefly before the error reaches the caller.
    pub fn store_for_retrying_caller(config: &VaultConfig) -> Result<Arc<dyn Store>> {
        Self::store_with_retries(config, S3Retries::Brief)
    }

    fn store_with_retries(config: &VaultConfig, retries: S3Retries) -> Result<Arc<dyn Store>> {
        let store: Arc<dyn Store> = match VaultUrl::parse(&config.url)? {
            VaultUrl::Local(path) => Arc::new(LocalStore::new(path)),
            VaultUrl::S3 { bucket, prefix } => {
                let endpoint = config
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                Arc::new(S3Store::with_retries(
                    &bucket,
                    &prefix,
                    endpoint.as_deref(),
                    config.region.as_deref(),
                    retries,
                )?)
            }
        };
        faults::FaultyStore::wrap_from_env(store)
    }

    /// Open an existing vault: its header must be there and of a known version.
    pub async fn open(store: Arc<dyn Store>) -> Result<Vault> {
        match read_header(&store).await? {
            Some(id) => Ok(Vault {
                store,
                id,
                fence: None,
            }),
            None => Err(Error::vault(format!(
                "no vault at {}: run `lifeboat init` to create one there (or fix [vault] url)",
                store.describe()
            ))),
        }
    }

    /// Create a vault: write its header, with a new random id. Refused where a vault (or
    /// anything else) already is: `lifeboat init` is the only way a vault comes to be.
    pub async fn init(store: Arc<dyn Store>) -> Result<Vault> {
        if let Some(id) = read_header(&store).await? {
            return Err(Error::usage(format!(
                "a vault already exists at {} (id {id}): nothing changed",
                store.describe()
            )));
        }
        if let Some(name) = store.list("").await?.into_iter().next() {
            return Err(Error::usage(format!(
                "{} is not empty ({name} is there): a vault is created only where nothing \
                 is; nothing changed",
                store.describe()
            )));
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::vault(format!("no randomness for the vault id: {e}")))?;
        let id = hex::encode(bytes);
        let header = serde_json::json!({
            "format": "lifeboat-vault",
            "version": FORMAT_VERSION,
            "id": id,
            "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        store
            .put(HEADER_NAME, Bytes::from(header.to_string()))
            .await
            .map_err(|e| e.context("cannot create the vault"))?;
        Ok(Vault {
            store,
            id,
            fence: None,
        })
    }

    /// The vault's id, from its header: what tells it from any other vault.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This vault, with every put of a segment, base or checkpoint asking `fence` first
    /// (docs/vault-format.md, "One writer per source").
    pub fn fenced(&self, fence: Arc<dyn WriteFence>) -> Vault {
        Vault {
            fence: Some(fence),
            ..self.clone()
        }
    }

    // --- writing -------------------------------------------------------------------

    /// Put a source's object, after the fence (if any) allowed it, within its time.
    async fn put_history(&self, name: &str, bytes: Bytes) -> Result<()> {
        let Some(fence) = &self.fence else {
            return self.store.put(name, bytes).await;
        };
        let within = fence.check().await?;
        match tokio::time::timeout(within, self.store.put(name, bytes)).await {
            Ok(result) => result,
            Err(_) => Err(Error::vault(format!(
                "{name}: the write did not finish within {} ms, before this capture's \
                 lease could run out; it stopped writing",
                within.as_millis()
            ))),
        }
    }

    pub async fn put_segment(&self, segment: &Segment) -> Result<String> {
        let (bytes, head_hash) = encode_segment(segment)?;
        let (xmin, xmax) = xid_range(segment);
        let name = format!(
            "sources/{}/segments/{:016x}-{:016x}-{xmin:016x}-{xmax:016x}-{}.seg",
            segment.source, segment.first, segment.last, head_hash
        );
        self.put_history(&name, bytes).await?;
        Ok(name)
    }

    pub async fn put_base(&self, base: &Base) -> Result<String> {
        Ok(self.put_base_listed(base).await?.name)
    }

    /// Write a base; it as a listing shows it (name, position, size).
    pub async fn put_base_listed(&self, base: &Base) -> Result<PositionRef> {
        let bytes = encode(Kind::Base, base)?;
        let size = bytes.len() as u64;
        let name = format!(
            "sources/{}/bases/{}/{:016x}-{}.base",
            base.source,
            escape_tenant(&base.tenant),
            base.position,
            content_hash(&bytes)
        );
        self.put_history(&name, bytes).await?;
        Ok(PositionRef {
            name,
            position: base.position,
            size,
        })
    }

    /// Write a checkpoint. Its index names each map's listing, not its chunks: a map with
    /// chunks and no listing gets one, written first (named by the checkpoint's position);
    /// a map's `listing`, when set, must be the listing of exactly its `chunks`
    /// (`put_keymap_listing`).
    pub async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String> {
        let mut records = Vec::with_capacity(checkpoint.keymaps.len());
        for map in &checkpoint.keymaps {
            let listing = match &map.listing {
                _ if map.chunks.is_empty() => None,
                Some(listing) if listing.buckets == map.chunks.len() as u64 => {
                    Some(listing.clone())
                }
                Some(listing) => {
                    return Err(Error::vault(format!(
                        "checkpoint of source {} at {}: key map {}.{} has {} chunks but its \
                         listing {} names {}",
                        checkpoint.source,
                        checkpoint.position,
                        map.table,
                        map.column,
                        map.chunks.len(),
                        keymap_listing_name(&checkpoint.source, listing.position, &listing.hash),
                        listing.buckets
                    )))
                }
                None => {
                    let mut map = map.clone();
                    self.put_keymap_listing(&checkpoint.source, &mut map, checkpoint.position)
                        .await?;
                    map.listing
                }
            };
            records.push(KeymapIndexRecord {
                table: map.table.clone(),
                column: map.column.clone(),
                bits: map.bits,
                keys: map.keys,
                listing,
                deltas: map.deltas.clone(),
            });
        }
        let keymaps = pack(&records)?;
        let header = pack(&CheckpointHeader {
            source: checkpoint.source.clone(),
            position: checkpoint.position,
            commit_time_us: checkpoint.commit_time_us,
            tables: checkpoint.tables.clone(),
            keymaps: ChunkRef {
                tenant: None,
                offset: 0,
                length: keymaps.len() as u64,
                hash: content_hash(&keymaps),
            },
        })?;
        let (bytes, head_hash) = with_head(Kind::Checkpoint, &header, &keymaps);
        let name = format!(
            "sources/{}/checkpoints/{:016x}-{}.ckpt",
            checkpoint.source, checkpoint.position, head_hash
        );
        self.put_history(&name, bytes).await?;
        Ok(name)
    }

    /// Write one bucket's key-map chunk, first written by the checkpoint at `position`;
    /// its reference in a checkpoint's index.
    pub async fn put_keymap_chunk(
        &self,
        chunk: &KeymapChunk,
        position: u64,
    ) -> Result<KeymapChunkRef> {
        let bytes = encode(Kind::Keymap, chunk)?;
        let hash = content_hash(&bytes);
        let name = keymap_chunk_name(&chunk.source, position, &hash);
        self.put_history(&name, bytes).await?;
        Ok(KeymapChunkRef {
            bucket: chunk.bucket,
            position,
            hash,
            keys: chunk.entries.len() as u64,
        })
    }

    /// Write the listing of `map`'s chunks, first written by the checkpoint at `position`,
    /// and set `map.listing` to it; its size in bytes. Nothing is written when
    /// `map.listing` already names a listing of exactly these chunks (0), nor for a map
    /// without chunks (its listing is then `None`).
    pub async fn put_keymap_listing(
        &self,
        source: &str,
        map: &mut KeymapIndex,
        position: u64,
    ) -> Result<u64> {
        if map.chunks.is_empty() {
            map.listing = None;
            return Ok(0);
        }
        let listing = KeymapListing {
            source: source.to_string(),
            table: map.table.clone(),
            column: map.column.clone(),
            bits: map.bits,
            keys: map.chunks.iter().map(|c| c.keys).sum(),
            chunks: map.chunks.clone(),
        };
        let bytes = encode(Kind::KeymapListing, &listing)?;
        let hash = content_hash(&bytes);
        let buckets = map.chunks.len() as u64;
        if map
            .listing
            .as_ref()
            .is_some_and(|l| l.hash == hash && l.buckets == buckets)
        {
            return Ok(0);
        }
        let size = bytes.len() as u64;
        let name = keymap_listing_name(source, position, &hash);
        self.put_history(&name, bytes).await?;
        map.listing = Some(KeymapListingRef {
            position,
            hash,
            buckets,
        });
        Ok(size)
    }

    /// Write one key map's delta, first written by the checkpoint at `position`; its
    /// reference in a checkpoint's index.
    pub async fn put_keymap_delta(
        &self,
        delta: &KeymapDelta,
        position: u64,
    ) -> Result<KeymapDeltaRef> {
        let bytes = encode(Kind::KeymapDelta, delta)?;
        let hash = content_hash(&bytes);
        let name = keymap_delta_name(&delta.source, position, &hash);
        self.put_history(&name, bytes).await?;
        Ok(KeymapDeltaRef {
            position,
            hash,
            entries: delta.entries.len() as u64,
        })
    }

    /// Anchor audit log entry `seq` (docs/vault-format.md, "Audit anchors").
    pub async fn put_audit_anchor(&self, seq: u64, hash: &str) -> Result<()> {
        self.store
            .put(
                &format!("audit/{seq:016x}-{hash}.anchor"),
                Bytes::from(hash.to_string()),
            )
            .await
    }

    /// Every audit anchor, as (sequence, entry hash), in sequence order.
    pub async fn list_audit_anchors(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for name in self.store.list("audit/").await? {
            let parsed = name
                .strip_prefix("audit/")
                .and_then(|f| f.strip_suffix(".anchor"))
                .and_then(|stem| stem.split_once('-'))
                .and_then(|(seq, hash)| Some((u64::from_str_radix(seq, 16).ok()?, hash)));
            match parsed {
                Some((seq, hash)) => out.push((seq, hash.to_string())),
                None => tracing::warn!("ignoring unexpected vault object {name}"),
            }
        }
        out.sort();
        Ok(out)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store.delete(name).await
    }

    // --- listing -------------------------------------------------------------------

    pub async fn list_segments(&self, source: &str) -> Result<Vec<SegmentRef>> {
        let prefix = format!("sources/{source}/segments/");
        let mut refs = Vec::new();
        for (name, size) in self.store.list_sized(&prefix).await? {
            let file = &name[prefix.len()..];
            let parsed = file.strip_suffix(".seg").and_then(|stem| {
                let mut parts = stem.splitn(5, '-');
                let mut number = || u64::from_str_radix(parts.next()?, 16).ok();
                let (first, last, xmin, xmax) = (number()?, number()?, number()?, number()?);
                parts.next()?;
                Some((first, last, (xmin, xmax)))
            });
            match parsed {
                Some((first, last, xids)) => refs.push(SegmentRef {
                    name,
                    first,
                    last,
                    xids,
                    size,
                }),
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

    /// The source's key-map chunks and deltas, in position order.
    pub async fn list_keymap_chunks(&self, source: &str) -> Result<Vec<PositionRef>> {
        let prefix = format!("sources/{source}/keymaps/");
        let mut refs = Vec::new();
        for (name, size) in self.store.list_sized(&prefix).await? {
            let file = &name[prefix.len()..];
            if file.contains('/') {
                continue;
            }
            let position = parse_position_name(file, ".kmap")
                .or_else(|| parse_position_name(file, ".kmd"))
                .or_else(|| parse_position_name(file, ".kml"));
            match position {
                Some(position) => refs.push(PositionRef {
                    name,
                    position,
                    size,
                }),
                None => tracing::warn!("ignoring unexpected vault object {name}"),
            }
        }
        refs.sort_by_key(|r| r.position);
        Ok(refs)
    }

    /// Every tenant with a base in `source`, with its bases.
    pub async fn list_all_bases(
        &self,
        source: &str,
    ) -> Result<BTreeMap<TenantKey, Vec<PositionRef>>> {
        let prefix = format!("sources/{source}/bases/");
        let mut out: BTreeMap<TenantKey, Vec<PositionRef>> = BTreeMap::new();
        for (name, size) in self.store.list_sized(&prefix).await? {
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
                size,
            });
        }
        for refs in out.values_mut() {
            refs.sort_by_key(|r| r.position);
        }
        Ok(out)
    }

    async fn list_positions(&self, prefix: &str, suffix: &str) -> Result<Vec<PositionRef>> {
        let mut refs = Vec::new();
        for (name, size) in self.store.list_sized(prefix).await? {
            let file = &name[prefix.len()..];
            if file.contains('/') {
                continue;
            }
            match parse_position_name(file, suffix) {
                Some(position) => refs.push(PositionRef {
                    name,
                    position,
                    size,
                }),
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

    /// A whole segment: every tenant's changes (one read of the whole object).
    pub async fn read_segment(&self, name: &str) -> Result<Segment> {
        let bytes = self.get_object(name).await?;
        let (header, chunks) = segment_parts(name, &bytes)?;
        let mut entries = Vec::new();
        for chunk in &header.chunks {
            entries.extend(chunk_entries(
                name,
                chunk,
                chunk_bytes(name, chunks, chunk)?,
            )?);
        }
        assemble(name, header, entries)
    }

    /// A segment's transactions without their tenants' changes (only truncates and alters
    /// are decoded), and the tenants it has changes of: its head and its nil chunk only,
    /// read by byte range.
    pub async fn read_segment_summary(&self, name: &str) -> Result<(Segment, Vec<TenantKey>)> {
        let (header, start) = self.read_segment_head(name).await?;
        let tenants = header
            .chunks
            .iter()
            .filter_map(|c| c.tenant.clone())
            .collect();
        let segment = self
            .read_chunks(name, header, start, &BTreeSet::new(), None)
            .await?;
        Ok((segment, tenants))
    }

    /// A segment with only the changes of `tenants` (and the changes that apply to every
    /// tenant); every transaction is there, possibly with no changes. Only the head and
    /// those tenants' chunks are read (by byte range) and decompressed.
    pub async fn read_segment_for(
        &self,
        name: &str,
        tenants: &BTreeSet<TenantKey>,
    ) -> Result<Segment> {
        let (header, start) = self.read_segment_head(name).await?;
        self.read_chunks(name, header, start, tenants, None).await
    }

    /// Like `read_segment_for`, without the changes whose position is past `upto` (the
    /// segment's transactions are all there; those past `upto` may have none): what a
    /// reader of the state at `upto` uses of a segment that goes on past it. Such changes'
    /// bytes are still checked against their chunk's hash, but they are not decoded.
    pub async fn read_segment_upto(
        &self,
        name: &str,
        tenants: &BTreeSet<TenantKey>,
        upto: u64,
    ) -> Result<Segment> {
        let (header, start) = self.read_segment_head(name).await?;
        self.read_chunks(name, header, start, tenants, Some(upto))
            .await
    }

    /// Like `read_segment_for`, with how many changes each transaction has in all (of
    /// every tenant), as the segment's head counts them: the scale of a transaction
    /// without reading the other tenants' chunks.
    pub async fn read_segment_for_counted(
        &self,
        name: &str,
        tenants: &BTreeSet<TenantKey>,
    ) -> Result<(Segment, Vec<u32>)> {
        let (header, start) = self.read_segment_head(name).await?;
        let counts = header.transactions.iter().map(|tx| tx.changes).collect();
        Ok((
            self.read_chunks(name, header, start, tenants, None).await?,
            counts,
        ))
    }

    /// The segment of `header` with the chunks of `tenants` and the nil chunk, each read by
    /// byte range from `start` and checked against its hash; with `upto`, without the
    /// changes past it.
    async fn read_chunks(
        &self,
        name: &str,
        header: SegmentHeader,
        start: u64,
        tenants: &BTreeSet<TenantKey>,
        upto: Option<u64>,
    ) -> Result<Segment> {
        // The transactions whose changes may be past `upto`: only theirs are looked at
        // before being decoded.
        let beyond: Vec<bool> = header
            .transactions
            .iter()
            .map(|tx| upto.is_some_and(|upto| tx.position > upto))
            .collect();
        let upto = upto.filter(|_| beyond.contains(&true));
        let entries_of = |chunk: &ChunkRef, bytes: &[u8]| match upto {
            Some(upto) => chunk_entries_upto(name, chunk, bytes, &beyond, upto),
            None => chunk_entries(name, chunk, bytes),
        };
        let wanted: Vec<&ChunkRef> = header
            .chunks
            .iter()
            .filter(|c| c.tenant.as_ref().is_none_or(|t| tenants.contains(t)))
            .collect();
        let mut entries = Vec::new();
        if wanted.len() > RANGE_READS_AT_MOST {
            // Many tenants of this segment: one read of the whole object beats a request
            // per chunk.
            let bytes = self.get_object(name).await?;
            let (_, area) = segment_parts(name, &bytes)?;
            for chunk in wanted {
                entries.extend(entries_of(chunk, chunk_bytes(name, area, chunk)?)?);
            }
            return assemble(name, header, entries);
        }
        for chunk in wanted {
            let range = start + chunk.offset..start + chunk.offset + chunk.length;
            let bytes = self.store.get_range(name, range).await?.ok_or_else(|| {
                Error::vault(format!(
                    "vault object {name} is missing from {}",
                    self.store.describe()
                ))
            })?;
            entries.extend(entries_of(chunk, &bytes)?);
        }
        assemble(name, header, entries)
    }

    /// A segment's header, checked against its name, and where its chunks start.
    async fn read_segment_head(&self, name: &str) -> Result<(SegmentHeader, u64)> {
        self.read_head(name, Kind::Segment).await
    }

    /// The header of a segment or checkpoint, read by byte range and checked against the
    /// object's name, and where the data after it starts.
    async fn read_head<T: DeserializeOwned>(&self, name: &str, kind: Kind) -> Result<(T, u64)> {
        let missing = || {
            Error::vault(format!(
                "vault object {name} is missing from {}",
                self.store.describe()
            ))
        };
        let mut head = self
            .store
            .get_range(name, 0..HEAD_PROBE)
            .await?
            .ok_or_else(missing)?
            .to_vec();
        let length = head_length(name, kind, &head)?;
        if head.len() < length {
            let rest = self
                .store
                .get_range(name, head.len() as u64..length as u64)
                .await?
                .ok_or_else(missing)?;
            head.extend_from_slice(&rest);
        }
        let header = open_head(name, kind, &head)?;
        Ok((header, length as u64))
    }

    pub async fn read_base(&self, name: &str) -> Result<Base> {
        self.read(name, Kind::Base).await
    }

    /// A key-map chunk that `map` of a checkpoint of `source` refers to by `chunk`, checked
    /// against its name and against the reference: its fields, its key count, and every
    /// key in its bucket.
    pub async fn read_keymap_chunk(
        &self,
        source: &str,
        map: &KeymapIndex,
        chunk: &KeymapChunkRef,
    ) -> Result<KeymapChunk> {
        let name = keymap_chunk_name(source, chunk.position, &chunk.hash);
        let read: KeymapChunk = self.read(&name, Kind::Keymap).await?;
        let wrong = |why: String| corrupt(&name, why);
        if read.source != source
            || read.table != map.table
            || read.column != map.column
            || read.bits != map.bits
            || read.bucket != chunk.bucket
        {
            return Err(wrong(format!(
                "it holds bucket {} ({} bits) of {}.{} of source {}, where the checkpoint \
                 refers to bucket {} ({} bits) of {}.{} of source {source}",
                read.bucket,
                read.bits,
                read.table,
                read.column,
                read.source,
                chunk.bucket,
                map.bits,
                map.table,
                map.column
            )));
        }
        if read.entries.len() as u64 != chunk.keys {
            return Err(wrong(format!(
                "it holds {} keys where the checkpoint counts {}",
                read.entries.len(),
                chunk.keys
            )));
        }
        for (key, _) in &read.entries {
            let bucket = keymap_bucket(keymap_key_hash(&keymap_key_bytes(key)), read.bits);
            if bucket != read.bucket {
                return Err(wrong(format!(
                    "key {key:?} belongs in bucket {bucket}, not {}",
                    read.bucket
                )));
            }
        }
        Ok(read)
    }

    /// A key-map delta that `map` of a checkpoint of `source` refers to by `delta`, checked
    /// against its name and against the reference: its fields, its entry count, and its
    /// keys in strict encoding order.
    pub async fn read_keymap_delta(
        &self,
        source: &str,
        map: &KeymapIndex,
        delta: &KeymapDeltaRef,
    ) -> Result<KeymapDelta> {
        let name = keymap_delta_name(source, delta.position, &delta.hash);
        let read: KeymapDelta = self.read(&name, Kind::KeymapDelta).await?;
        let wrong = |why: String| corrupt(&name, why);
        if read.source != source || read.table != map.table || read.column != map.column {
            return Err(wrong(format!(
                "it holds a delta of {}.{} of source {}, where the checkpoint refers to one \
                 of {}.{} of source {source}",
                read.table, read.column, read.source, map.table, map.column
            )));
        }
        if read.entries.len() as u64 != delta.entries {
            return Err(wrong(format!(
                "it holds {} entries where the checkpoint counts {}",
                read.entries.len(),
                delta.entries
            )));
        }
        let mut before: Option<Vec<u8>> = None;
        for (key, _) in &read.entries {
            let encoded = keymap_key_bytes(key);
            if before.as_ref().is_some_and(|b| *b >= encoded) {
                return Err(wrong(format!("key {key:?} is out of order or repeated")));
            }
            before = Some(encoded);
        }
        Ok(read)
    }

    /// A key-map listing that `map` of a checkpoint of `source` refers to, checked
    /// against its name and against the reference: its fields, its bucket count, its
    /// buckets in strictly increasing order below `2^bits` and their keys summed; its
    /// chunk references. A map without a listing has no chunks (and must count no keys).
    pub async fn read_keymap_listing(
        &self,
        source: &str,
        map: &KeymapIndex,
    ) -> Result<Vec<KeymapChunkRef>> {
        let Some(reference) = &map.listing else {
            if map.keys != 0 {
                return Err(Error::corrupt(format!(
                    "key map {}.{} of source {source} counts {} keys but names no key-map listing",
                    map.table, map.column, map.keys
                )));
            }
            return Ok(Vec::new());
        };
        let name = keymap_listing_name(source, reference.position, &reference.hash);
        let read: KeymapListing = self.read(&name, Kind::KeymapListing).await?;
        let wrong = |why: String| corrupt(&name, why);
        if read.source != source
            || read.table != map.table
            || read.column != map.column
            || read.bits != map.bits
            || read.keys != map.keys
        {
            return Err(wrong(format!(
                "it lists {}.{} of source {} ({} bits, {} keys), where the checkpoint refers \
                 to {}.{} of source {source} ({} bits, {} keys)",
                read.table,
                read.column,
                read.source,
                read.bits,
                read.keys,
                map.table,
                map.column,
                map.bits,
                map.keys
            )));
        }
        if read.chunks.len() as u64 != reference.buckets || read.chunks.is_empty() {
            return Err(wrong(format!(
                "it lists {} buckets where the checkpoint counts {}",
                read.chunks.len(),
                reference.buckets
            )));
        }
        let mut before: Option<u32> = None;
        for chunk in &read.chunks {
            if before.is_some_and(|b| b >= chunk.bucket)
                || u64::from(chunk.bucket) >= 1u64 << map.bits
            {
                return Err(wrong(format!(
                    "bucket {} is out of order, repeated or beyond {} bits",
                    chunk.bucket, map.bits
                )));
            }
            before = Some(chunk.bucket);
        }
        let keys: u64 = read.chunks.iter().map(|c| c.keys).sum();
        if keys != read.keys {
            return Err(wrong(format!(
                "its buckets hold {keys} keys where it counts {}",
                read.keys
            )));
        }
        Ok(read.chunks)
    }

    /// A whole checkpoint with its key-map index and each map's chunk references, read
    /// from its listing (what capture rebuilds from; the chunks themselves are read with
    /// `read_keymap_chunk`). A listing that cannot be read or fails its checks is refused,
    /// naming it.
    pub async fn read_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        let mut checkpoint = self.read_checkpoint_index(name).await?;
        for map in &mut checkpoint.keymaps {
            map.chunks = self
                .read_keymap_listing(&checkpoint.source, map)
                .await
                .map_err(|e| e.context(format!("checkpoint {name}")))?;
        }
        Ok(checkpoint)
    }

    /// A whole checkpoint with its key-map index as stored: each map names its listing,
    /// its `chunks` are left empty.
    pub async fn read_checkpoint_index(&self, name: &str) -> Result<Checkpoint> {
        let bytes = self.get_object(name).await?;
        let header: CheckpointHeader = open_head(name, Kind::Checkpoint, &bytes)?;
        let area = &bytes[head_length(name, Kind::Checkpoint, &bytes)?..];
        let keymaps = chunk_bytes(name, area, &header.keymaps)?;
        check_chunk(name, &header.keymaps, keymaps)?;
        let records: Vec<KeymapIndexRecord> = unpack(name, keymaps)?;
        if let Some(r) = records.iter().find(|r| r.bits > KEYMAP_MAX_BITS) {
            return Err(corrupt(
                name,
                format!(
                    "the key map of {}.{} has {} bucket bits, more than {KEYMAP_MAX_BITS}",
                    r.table, r.column, r.bits
                ),
            ));
        }
        Ok(Checkpoint {
            source: header.source,
            position: header.position,
            commit_time_us: header.commit_time_us,
            tables: header.tables,
            keymaps: records
                .into_iter()
                .map(|r| KeymapIndex {
                    table: r.table,
                    column: r.column,
                    bits: r.bits,
                    keys: r.keys,
                    chunks: Vec::new(),
                    listing: r.listing,
                    deltas: r.deltas,
                })
                .collect(),
        })
    }

    /// A checkpoint without its key maps: what readers of history need of it. Only its
    /// head is read, by byte range.
    pub async fn read_checkpoint_head(&self, name: &str) -> Result<CheckpointHead> {
        let (head, _) = self.read_head(name, Kind::Checkpoint).await?;
        Ok(head)
    }

    /// A base whose rows are decoded on demand, a table at a time, never all at once. Its
    /// bytes are checked against its name here.
    pub async fn open_base(&self, name: &str) -> Result<BaseReader> {
        let bytes = self.get_object(name).await?;
        BaseReader::open(name, bytes, BASE_KEPT_DECOMPRESSED)
    }

    /// Read a segment, base, checkpoint or key-map chunk whole and check every hash it carries (a
    /// segment's head and chunks, a base's bytes, a checkpoint's head and key maps), and
    /// that it decodes; its size in bytes.
    pub async fn verify_object(&self, name: &str) -> Result<u64> {
        let bytes = self.get_object(name).await?;
        if name.ends_with(".seg") {
            let (header, area) = segment_parts(name, &bytes)?;
            for chunk in &header.chunks {
                chunk_entries(name, chunk, chunk_bytes(name, area, chunk)?)?;
            }
        } else if name.ends_with(".base") {
            open_envelope(name, Kind::Base, &bytes)?;
            check_name_hash(name, &bytes)?;
        } else if name.ends_with(".ckpt") {
            let header: CheckpointHeader = open_head(name, Kind::Checkpoint, &bytes)?;
            let area = &bytes[head_length(name, Kind::Checkpoint, &bytes)?..];
            let keymaps = chunk_bytes(name, area, &header.keymaps)?;
            check_chunk(name, &header.keymaps, keymaps)?;
            unpack::<Vec<KeymapIndexRecord>>(name, keymaps)?;
        } else if name.ends_with(".kmap") {
            decode::<KeymapChunk>(name, Kind::Keymap, &bytes)?;
        } else if name.ends_with(".kml") {
            decode::<KeymapListing>(name, Kind::KeymapListing, &bytes)?;
        } else if name.ends_with(".kmd") {
            decode::<KeymapDelta>(name, Kind::KeymapDelta, &bytes)?;
        } else {
            return Err(corrupt(
                name,
                "not a segment, base, checkpoint, key-map chunk, delta or listing",
            ));
        }
        Ok(bytes.len() as u64)
    }

    async fn read<T: DeserializeOwned>(&self, name: &str, kind: Kind) -> Result<T> {
        let bytes = self.get_object(name).await?;
        decode(name, kind, &bytes)
    }

    async fn get_object(&self, name: &str) -> Result<Bytes> {
        self.store.get(name).await?.ok_or_else(|| {
            Error::vault(format!(
                "vault object {name} is missing from {}",
                self.store.describe()
            ))
        })
    }
}

/// The id in a store's vault header, or None without a header; a header of another format
/// or version is refused.
async fn read_header(store: &Arc<dyn Store>) -> Result<Option<String>> {
    let Some(bytes) = store.get(HEADER_NAME).await.map_err(|e| {
        let error = Error::vault(format!(
            "vault {} is unreachable: {}",
            store.describe(),
            e.message()
        ));
        if e.is_transient() {
            error.transient()
        } else {
            error
        }
    })?
    else {
        return Ok(None);
    };
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(format!(
            "{HEADER_NAME} in {} is not valid JSON: {e}",
            store.describe()
        ))
    })?;
    if header.get("format").and_then(|v| v.as_str()) != Some("lifeboat-vault") {
        return Err(Error::corrupt(format!(
            "{} is not a Lifeboat vault ({HEADER_NAME} has no format \"lifeboat-vault\")",
            store.describe()
        )));
    }
    let version = header.get("version").and_then(|v| v.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        return Err(Error::vault(format!(
            "vault {} has format version {}; this lifeboat reads version {FORMAT_VERSION}",
            store.describe(),
            version.map_or("(none)".to_string(), |v| v.to_string())
        )));
    }
    match header.get("id").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() => Ok(Some(id.to_string())),
        _ => Err(Error::corrupt(format!(
            "{HEADER_NAME} in {} has no vault id",
            store.describe()
        ))),
    }
}

/// The name of a source's key-map chunk.
pub fn keymap_chunk_name(source: &str, position: u64, hash: &str) -> String {
    format!("sources/{source}/keymaps/{position:016x}-{hash}.kmap")
}

/// The name of a source's key-map listing.
pub fn keymap_listing_name(source: &str, position: u64, hash: &str) -> String {
    format!("sources/{source}/keymaps/{position:016x}-{hash}.kml")
}

/// The name of a source's key-map delta.
pub fn keymap_delta_name(source: &str, position: u64, hash: &str) -> String {
    format!("sources/{source}/keymaps/{position:016x}-{hash}.kmd")
}

fn parse_position_name(file: &str, suffix: &str) -> Option<u64> {
    let stem = file.strip_suffix(suffix)?;
    let (position, _hash) = stem.split_once('-')?;
    u64::from_str_radix(position, 16).ok()
}

/// The first 32 hex digits of the SHA-256 of `bytes`.
/// The whole SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..16])
}

fn encode<T: Serialize>(kind: Kind, record: &T) -> Result<Bytes> {
    let packed = pack(record)?;
    let mut bytes = Vec::with_capacity(packed.len() + 11);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.push(kind as u8);
    bytes.extend_from_slice(&packed);
    Ok(Bytes::from(bytes))
}

fn corrupt(name: &str, why: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("vault object {name} is corrupt: {why}"))
}

/// Check an object's bytes against the checksum in its name and its header; return the
/// body after the header.
fn open_envelope<'a>(name: &str, kind: Kind, bytes: &'a [u8]) -> Result<&'a [u8]> {
    check_name_hash(name, bytes)?;
    if bytes.len() < 11 || &bytes[..8] != MAGIC {
        return Err(corrupt(name, "no LIFEBOAT header"));
    }
    check_version_and_kind(name, kind, bytes)?;
    Ok(&bytes[ENVELOPE_LEN..])
}

/// The envelope before a whole object's compressed body: magic, version and kind.
const ENVELOPE_LEN: usize = 11;

/// The largest decompressed base `BaseReader` keeps in memory while its rows are read
/// (64 MiB).
const BASE_KEPT_DECOMPRESSED: usize = 64 << 20;

/// `packed` decompressed, if that is at most `limit` bytes, holding no more memory than
/// its length: allocated at its size once where the frame tells it, else shrunk to fit
/// once read (grown, it would hold up to twice its length while kept).
fn decompress_up_to(name: &str, packed: &[u8], limit: usize) -> Result<Option<Vec<u8>>> {
    let zstd_error = |e: std::io::Error| corrupt(name, format!("zstd: {e}"));
    let size = zstd::zstd_safe::get_frame_content_size(packed)
        .ok()
        .flatten();
    if size.is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(size.map_or(0, |n| n as usize));
    zstd::stream::read::Decoder::new(packed)
        .map_err(zstd_error)?
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(zstd_error)?;
    if body.len() > limit {
        return Ok(None);
    }
    body.shrink_to_fit();
    Ok(Some(body))
}

/// `bytes` hash to the checksum in the object's name.
fn check_name_hash(name: &str, bytes: &[u8]) -> Result<()> {
    let expected = name
        .rsplit('/')
        .next()
        .and_then(|file| file.rsplit_once('-'))
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(hash, _)| hash)
        .ok_or_else(|| corrupt(name, "its name carries no checksum"))?;
    let actual = content_hash(bytes);
    if actual != expected {
        return Err(corrupt(
            name,
            format!("checksum {actual} does not match the {expected} in its name"),
        ));
    }
    Ok(())
}

/// The envelope's version is this build's and its kind the one expected (`bytes` holds at
/// least the magic, version and kind).
fn check_version_and_kind(name: &str, kind: Kind, bytes: &[u8]) -> Result<()> {
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Vault,
            format!("vault object {name} has format version {version}; this lifeboat reads {FORMAT_VERSION}"),
        ));
    }
    if bytes[10] != kind as u8 {
        return Err(corrupt(
            name,
            format!("kind {} where {} was expected", bytes[10], kind as u8),
        ));
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(name: &str, kind: Kind, bytes: &[u8]) -> Result<T> {
    let body = open_envelope(name, kind, bytes)?;
    unpack(name, body)
}

/// zstd's level for whole objects and segment heads.
const LEVEL: i32 = 3;
/// zstd's level for a segment's per-tenant chunks: capture writes them all the time
/// beside the source's own work, mostly a few hundred bytes to a few kilobytes each. A
/// negative level skips the entropy coding of literals: measured on captured chunks, 2.5×
/// less compression time for about 5% more bytes than level 3 (docs/scale.md).
const CHUNK_LEVEL: i32 = -1;

fn pack<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    pack_at(record, LEVEL)
}

fn pack_at<T: Serialize>(record: &T, level: i32) -> Result<Vec<u8>> {
    let body = rmp_serde::to_vec_named(record)
        .map_err(|e| Error::vault(format!("cannot encode a vault object: {e}")))?;
    compress(&body, level)
}

/// `body` as one zstd frame that records its size. Each thread keeps one compression
/// context: a segment packs every tenant's changes on their own, and a fresh context per
/// call (its tables sized for a stream of unknown length) costs far more than compressing
/// a few hundred bytes.
fn compress(body: &[u8], level: i32) -> Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let failed = |e: std::io::Error| Error::vault(format!("cannot compress a vault object: {e}"));
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (current, compressor) = match cell.as_mut() {
            Some(kept) => kept,
            None => cell.insert((level, zstd::bulk::Compressor::new(level).map_err(failed)?)),
        };
        if *current != level {
            compressor.set_compression_level(level).map_err(failed)?;
            *current = level;
        }
        compressor.compress(body).map_err(failed)
    })
}

fn unpack<T: DeserializeOwned>(name: &str, packed: &[u8]) -> Result<T> {
    let body = zstd::decode_all(packed).map_err(|e| corrupt(name, format!("zstd: {e}")))?;
    rmp_serde::from_slice(&body).map_err(|e| corrupt(name, format!("cannot decode: {e}")))
}

/// A checkpoint's header: everything but its key maps, and where they are.
#[derive(Serialize, serde::Deserialize)]
struct CheckpointHeader {
    source: String,
    position: u64,
    commit_time_us: i64,
    tables: Vec<TableSchema>,
    keymaps: ChunkRef,
}

/// One key map of a checkpoint's index as stored: its listing, not its chunks.
#[derive(Serialize, serde::Deserialize)]
struct KeymapIndexRecord {
    table: String,
    column: String,
    bits: u8,
    keys: u64,
    listing: Option<KeymapListingRef>,
    #[serde(default)]
    deltas: Vec<KeymapDeltaRef>,
}

/// A checkpoint's position, time and table shapes, without its key maps.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CheckpointHead {
    pub position: u64,
    pub commit_time_us: i64,
    pub tables: Vec<TableSchema>,
}

/// A base's fields other than its rows.
struct BaseHead {
    position: u64,
    commit_time_us: i64,
    tables: Vec<TableSchema>,
}

/// A base's head from the start of its decompressed body: its map's fields are read in
/// order until `position`, `commit_time_us` and `tables` are all known, so the rows that
/// follow them (where the writer puts them) are neither decompressed nor decoded.
fn read_base_head(name: &str, mut body: impl std::io::Read) -> Result<BaseHead> {
    let bad = |why: String| corrupt(name, format!("cannot decode: {why}"));
    let fields = rmp::decode::read_map_len(&mut body).map_err(|e| bad(e.to_string()))?;
    let (mut position, mut commit_time_us, mut tables) = (None, None, None);
    let mut key = Vec::new();
    for _ in 0..fields {
        if position.is_some() && commit_time_us.is_some() && tables.is_some() {
            break;
        }
        let length = rmp::decode::read_str_len(&mut body).map_err(|e| bad(e.to_string()))?;
        key.resize(length as usize, 0);
        body.read_exact(&mut key).map_err(|e| bad(e.to_string()))?;
        let mut de = rmp_serde::Deserializer::new(&mut body);
        let field = |e: rmp_serde::decode::Error| bad(e.to_string());
        match key.as_slice() {
            b"position" => position = Some(u64::deserialize(&mut de).map_err(field)?),
            b"commit_time_us" => commit_time_us = Some(i64::deserialize(&mut de).map_err(field)?),
            b"tables" => tables = Some(Vec::<TableSchema>::deserialize(&mut de).map_err(field)?),
            _ => {
                serde::de::IgnoredAny::deserialize(&mut de).map_err(field)?;
            }
        }
    }
    let missing = |field: &str| bad(format!("missing field `{field}`"));
    Ok(BaseHead {
        position: position.ok_or_else(|| missing("position"))?,
        commit_time_us: commit_time_us.ok_or_else(|| missing("commit_time_us"))?,
        tables: tables.ok_or_else(|| missing("tables"))?,
    })
}

/// An opened base (checked against its name); `for_each_row` decodes its rows as a
/// stream, so a large tenant is never held decoded in memory.
pub struct BaseReader {
    name: String,
    /// The whole object, its checksum already checked.
    bytes: Bytes,
    /// The decompressed body once read (`None` inside: larger than `keep`, decompressed
    /// again for every read).
    body: std::sync::OnceLock<Option<Vec<u8>>>,
    /// Where each table's rows are in the kept body, found by its first read: so the
    /// reads of the other tables go straight to their rows.
    runs: std::sync::OnceLock<Vec<RowRun>>,
    keep: usize,
    pub position: u64,
    pub commit_time_us: i64,
    pub tables: Vec<TableSchema>,
}

impl BaseReader {
    /// Check `bytes` against `name` and read the base's head, decompressing no more of
    /// the body than the head takes. A base whose body is at most `keep` bytes
    /// decompressed is decompressed once when its rows are first read and kept while the
    /// reader lives, so that reading it a table at a time does not decompress it again
    /// for every table; a larger one is decompressed as it is read, every time. Bases
    /// waiting to be read keep only their compressed bytes.
    fn open(name: &str, bytes: Bytes, keep: usize) -> Result<BaseReader> {
        let packed = open_envelope(name, Kind::Base, &bytes)?;
        let head = read_base_head(
            name,
            std::io::BufReader::with_capacity(
                8 * 1024,
                zstd::stream::read::Decoder::new(packed)
                    .map_err(|e| corrupt(name, format!("zstd: {e}")))?,
            ),
        )?;
        Ok(BaseReader {
            name: name.to_string(),
            bytes,
            body: std::sync::OnceLock::new(),
            runs: std::sync::OnceLock::new(),
            keep,
            position: head.position,
            commit_time_us: head.commit_time_us,
            tables: head.tables,
        })
    }

    /// Call `visit` with every row of table `table` (an index into `tables`), in stored
    /// order. Rows of other tables are skipped without being decoded.
    pub fn for_each_row(&self, table: u32, mut visit: impl FnMut(Row)) -> Result<()> {
        self.for_each_row_mut(table, |row| visit(std::mem::take(row)))
    }

    /// Like `for_each_row`, each row decoded into the same buffer, lent to `visit`: the
    /// values' memory is reused from row to row (a text value is decoded into the string
    /// of the row before where there is one), so reading the rows allocates next to
    /// nothing. `visit` may change the row or take its values.
    pub fn for_each_row_mut(&self, table: u32, mut visit: impl FnMut(&mut Row)) -> Result<()> {
        let body = self.body.get_or_init(|| {
            // A body that cannot be decompressed is read as a stream below, which tells.
            decompress_up_to(&self.name, &self.bytes[ENVELOPE_LEN..], self.keep)
                .ok()
                .flatten()
        });
        let mut row = Vec::new();
        if let Some(body) = body {
            if let Some(runs) = self.runs.get() {
                for run in runs.iter().filter(|r| r.table == table) {
                    let mut rd = body.get(run.start..run.end).unwrap_or_default();
                    while !rd.is_empty() {
                        base_row(&self.name, &mut rd, table, &mut row, &mut visit)?;
                    }
                }
                return Ok(());
            }
            match base_rows(&self.name, body, table, &mut row, &mut visit)? {
                Walked::Rows(Some(runs)) => {
                    let _ = self.runs.set(runs);
                    return Ok(());
                }
                Walked::Rows(None) => return Ok(()),
                Walked::NotRows => {}
            }
        }
        let seed = rows_stream::BaseSeed {
            table,
            visit: std::cell::RefCell::new(visit),
            row: std::cell::RefCell::new(row),
        };
        let decoded = match body {
            // Rows of other tables are skipped in place.
            Some(body) => {
                let mut de = rmp_serde::Deserializer::from_read_ref(body);
                serde::de::DeserializeSeed::deserialize(seed, &mut de)
            }
            None => {
                let decoder = zstd::stream::read::Decoder::new(&self.bytes[ENVELOPE_LEN..])
                    .map_err(|e| corrupt(&self.name, format!("zstd: {e}")))?;
                // MessagePack is read a few bytes at a time: buffer the decompressed side.
                let reader = std::io::BufReader::with_capacity(64 * 1024, decoder);
                let mut de = rmp_serde::Deserializer::new(reader);
                serde::de::DeserializeSeed::deserialize(seed, &mut de)
            }
        };
        decoded.map_err(|e| corrupt(&self.name, format!("cannot decode: {e}")))
    }
}

/// Consecutive rows of one table in a base's body: their bytes are `start..end`.
#[derive(Debug)]
struct RowRun {
    table: u32,
    start: usize,
    end: usize,
}

/// The rows of table `table` in a base's decompressed `body`, decoded into `row` and lent
/// to `visit`, read straight from the MessagePack (`Value`'s serde encoding: a text is
/// `{"Text": string}`, a null the string `"Null"`): no serde visitors, map keys and
/// variant names compared as bytes, only texts checked as UTF-8. A row in any other shape
/// (a blob, or not as this build writes it) is decoded by serde, as the stream path does.
fn base_rows(
    name: &str,
    body: &[u8],
    table: u32,
    row: &mut Row,
    visit: &mut impl FnMut(&mut Row),
) -> Result<Walked> {
    let mut rd = body;
    let Some(fields) = msgpack::map_len(&mut rd) else {
        return Ok(Walked::NotRows);
    };
    for _ in 0..fields {
        let Some(key) = msgpack::str_bytes(&mut rd) else {
            return Ok(Walked::NotRows);
        };
        if key != b"rows" {
            if msgpack::skip(&mut rd).is_none() {
                return Ok(Walked::NotRows);
            }
            continue;
        }
        let Some(count) = msgpack::array_len(&mut rd) else {
            return Ok(Walked::NotRows);
        };
        let mut runs: Option<Vec<RowRun>> = Some(Vec::new());
        for _ in 0..count {
            let start = body.len() - rd.len();
            let of = base_row(name, &mut rd, table, row, visit)?;
            let end = body.len() - rd.len();
            match (of, runs.as_mut()) {
                (Some(of), Some(runs)) => match runs.last_mut() {
                    Some(run) if run.table == of && run.end == start => run.end = end,
                    _ => runs.push(RowRun {
                        table: of,
                        start,
                        end,
                    }),
                },
                _ => runs = None,
            }
        }
        // The rows are the last field as written; any after them are not read.
        return Ok(Walked::Rows(runs));
    }
    Ok(Walked::Rows(Some(Vec::new())))
}

/// What `base_rows` did.
enum Walked {
    /// The body is not a map with a list of rows: nothing was visited.
    NotRows,
    /// The rows were visited; where each table's rows are, when every row's table was
    /// read.
    Rows(Option<Vec<RowRun>>),
}

/// One row of a base at the start of `rd`, lent to `visit` when it is of table `table`;
/// the table it is of, when read (a row serde decodes does not tell).
fn base_row(
    name: &str,
    rd: &mut &[u8],
    table: u32,
    row: &mut Row,
    visit: &mut impl FnMut(&mut Row),
) -> Result<Option<u32>> {
    let start = *rd;
    let (of, wanted) = match msgpack::base_row(rd, table, row) {
        Some((of, wanted)) => (of, wanted),
        None => {
            *rd = start;
            msgpack::skip(rd).ok_or_else(|| corrupt(name, "cannot decode: a row is cut short"))?;
            let bytes = &start[..start.len() - rd.len()];
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            let wanted = serde::de::DeserializeSeed::deserialize(
                rows_stream::RowSeed(table, &mut *row),
                &mut de,
            )
            .map_err(|e| corrupt(name, format!("cannot decode: {e}")))?;
            (None, wanted)
        }
    };
    if wanted {
        visit(row);
    }
    Ok(of)
}

/// Streaming decoding of a base's `rows`: a seed per level of the MessagePack map. A row's
/// values are decoded into one buffer, reused from row to row.
mod rows_stream {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{
        DeserializeSeed, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
    };
    use serde::Deserializer;

    use crate::model::{Row, Value};

    pub struct BaseSeed<F> {
        pub table: u32,
        pub visit: RefCell<F>,
        pub row: RefCell<Row>,
    }

    /// A map key among those these seeds look for, read without allocating.
    enum Key {
        Rows,
        Table,
        Values,
        Other,
    }

    impl<'de> serde::Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Key, D::Error> {
            de.deserialize_identifier(KeyVisitor)
        }
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = Key;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
            self.visit_bytes(v.as_bytes())
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key, E> {
            Ok(match v {
                b"rows" => Key::Rows,
                b"table" => Key::Table,
                b"values" => Key::Values,
                _ => Key::Other,
            })
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Key, E> {
            Ok(Key::Other)
        }
    }

    impl<'de, F: FnMut(&mut Row)> DeserializeSeed<'de> for BaseSeed<F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_map(self)
        }
    }

    impl<'de, F: FnMut(&mut Row)> Visitor<'de> for BaseSeed<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a base record")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Key>()? {
                if let Key::Rows = key {
                    map.next_value_seed(RowsSeed(&self))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    struct RowsSeed<'a, F>(&'a BaseSeed<F>);

    impl<'de, F: FnMut(&mut Row)> DeserializeSeed<'de> for RowsSeed<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_seq(self)
        }
    }

    impl<'de, F: FnMut(&mut Row)> Visitor<'de> for RowsSeed<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of rows")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut row = self.0.row.borrow_mut();
            while let Some(wanted) = seq.next_element_seed(RowSeed(self.0.table, &mut row))? {
                if wanted {
                    (self.0.visit.borrow_mut())(&mut row);
                }
            }
            Ok(())
        }
    }

    /// One `{table, values}` row, its values decoded into the buffer when it is of the
    /// table wanted (whether it is); the values of another table are skipped undecoded.
    pub struct RowSeed<'r>(pub u32, pub &'r mut Row);

    impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
            de.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for RowSeed<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a base row")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut table = None;
            let mut values = false;
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Table => table = Some(map.next_value::<u32>()?),
                    // The writer puts `table` first; were it not, the values are kept.
                    Key::Values if table.is_none_or(|t| t == self.0) => {
                        map.next_value_seed(ValuesInto(&mut *self.1))?;
                        values = true;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(values && table == Some(self.0))
        }
    }

    /// A row's values, decoded into `Row` in place: its length is set to theirs.
    struct ValuesInto<'r>(&'r mut Row);

    impl<'de> DeserializeSeed<'de> for ValuesInto<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for ValuesInto<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of values")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let row = self.0;
            let mut at = 0;
            loop {
                if at == row.len() {
                    row.push(Value::Null);
                }
                if seq.next_element_seed(ValueInto(&mut row[at]))?.is_none() {
                    break;
                }
                at += 1;
            }
            row.truncate(at);
            Ok(())
        }
    }

    /// One value decoded over `Value`: a text into the string already there, if any.
    struct ValueInto<'v>(&'v mut Value);

    const VARIANTS: &[&str] = &["Null", "Int", "Real", "Text", "Blob"];

    impl<'de> DeserializeSeed<'de> for ValueInto<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_enum("Value", VARIANTS, self)
        }
    }

    /// Which variant of `Value`, by name or index (as serde's derived code reads it).
    struct Variant(usize);

    impl<'de> serde::Deserialize<'de> for Variant {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Variant, D::Error> {
            de.deserialize_identifier(VariantVisitor)
        }
    }

    struct VariantVisitor;

    impl Visitor<'_> for VariantVisitor {
        type Value = Variant;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a variant of Value")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Variant, E> {
            match usize::try_from(v) {
                Ok(i) if i < VARIANTS.len() => Ok(Variant(i)),
                _ => Err(E::invalid_value(
                    serde::de::Unexpected::Unsigned(v),
                    &"a variant index 0 <= i < 5",
                )),
            }
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Variant, E> {
            VARIANTS
                .iter()
                .position(|name| *name == v)
                .map(Variant)
                .ok_or_else(|| E::unknown_variant(v, VARIANTS))
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Variant, E> {
            match std::str::from_utf8(v) {
                Ok(v) => self.visit_str(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
            }
        }
    }

    impl<'de> Visitor<'de> for ValueInto<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("enum Value")
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
            let (Variant(variant), access) = data.variant::<Variant>()?;
            match variant {
                0 => {
                    access.unit_variant()?;
                    *self.0 = Value::Null;
                }
                1 => *self.0 = Value::Int(access.newtype_variant()?),
                2 => *self.0 = Value::Real(access.newtype_variant()?),
                3 => match self.0 {
                    Value::Text(text) => {
                        text.clear();
                        access.newtype_variant_seed(TextInto(text))?;
                    }
                    other => *other = Value::Text(access.newtype_variant()?),
                },
                _ => *self.0 = Value::Blob(access.newtype_variant()?),
            }
            Ok(())
        }
    }

    /// A string decoded into an existing (emptied) `String`.
    struct TextInto<'s>(&'s mut String);

    impl<'de> DeserializeSeed<'de> for TextInto<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_string(self)
        }
    }

    impl Visitor<'_> for TextInto<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            self.0.push_str(v);
            Ok(())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
            *self.0 = v;
            Ok(())
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
            match std::str::from_utf8(v) {
                Ok(v) => self.visit_str(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
            }
        }
    }
}

/// A segment's header: everything but the changes, and where each tenant's changes are.
#[derive(Serialize, serde::Deserialize)]
struct SegmentHeader {
    source: String,
    first: u64,
    last: u64,
    prev: u64,
    generation: u32,
    tables: Vec<crate::model::TableSchema>,
    transactions: Vec<TransactionHeader>,
    chunks: Vec<ChunkRef>,
}

#[derive(Serialize, serde::Deserialize)]
struct TransactionHeader {
    xid: u64,
    position: u64,
    commit_time_us: i64,
    changes: u32,
}

/// One tenant's changes (or, with no tenant, the changes for every tenant), compressed on
/// their own at `offset` after the header, with the hash of their bytes.
#[derive(Serialize, serde::Deserialize)]
struct ChunkRef {
    tenant: Option<TenantKey>,
    offset: u64,
    length: u64,
    hash: String,
}

/// A change in a chunk: its transaction's index in the segment and its own index in the
/// transaction, so that chunks merge back into the original order.
type ChunkEntry = (u32, u32, crate::model::Change);
/// A `ChunkEntry` as written: the change borrowed from its segment.
type ChunkEntryRef<'a> = (u32, u32, &'a crate::model::Change);

/// The smallest and largest transaction id of a segment ((0, 0) without transactions).
fn xid_range(segment: &Segment) -> (u64, u64) {
    let xids = segment.transactions.iter().map(|tx| tx.xid);
    (xids.clone().min().unwrap_or(0), xids.max().unwrap_or(0))
}

/// A segment's bytes and the hash of its head (its name's hash).
fn encode_segment(segment: &Segment) -> Result<(Bytes, String)> {
    let mut chunks: BTreeMap<Option<&TenantKey>, Vec<ChunkEntryRef>> = BTreeMap::new();
    for (t, tx) in segment.transactions.iter().enumerate() {
        for (c, change) in tx.changes.iter().enumerate() {
            chunks
                .entry(change.tenant.as_ref())
                .or_default()
                .push((t as u32, c as u32, change));
        }
    }
    let mut body = Vec::new();
    let mut refs = Vec::with_capacity(chunks.len());
    for (tenant, entries) in &chunks {
        let packed = pack_at(entries, CHUNK_LEVEL)?;
        refs.push(ChunkRef {
            tenant: tenant.cloned(),
            offset: body.len() as u64,
            length: packed.len() as u64,
            hash: content_hash(&packed),
        });
        body.extend_from_slice(&packed);
    }
    let header = pack(&SegmentHeader {
        source: segment.source.clone(),
        first: segment.first,
        last: segment.last,
        prev: segment.prev,
        generation: segment.generation,
        tables: segment.tables.clone(),
        transactions: segment
            .transactions
            .iter()
            .map(|tx| TransactionHeader {
                xid: tx.xid,
                position: tx.position,
                commit_time_us: tx.commit_time_us,
                changes: tx.changes.len() as u32,
            })
            .collect(),
        chunks: refs,
    })?;
    Ok(with_head(Kind::Segment, &header, &body))
}

/// An object of `kind` made of a head (preamble and packed `header`) and `body`, and the
/// hash of its head (its name's hash).
fn with_head(kind: Kind, header: &[u8], body: &[u8]) -> (Bytes, String) {
    let mut bytes = Vec::with_capacity(SEGMENT_PREAMBLE + header.len() + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.push(kind as u8);
    bytes.extend_from_slice(&(header.len() as u32).to_be_bytes());
    bytes.extend_from_slice(header);
    let head_hash = content_hash(&bytes);
    bytes.extend_from_slice(body);
    (Bytes::from(bytes), head_hash)
}

/// The length of a segment's or checkpoint's head, from its first bytes (magic, version and
/// kind checked).
fn head_length(name: &str, kind: Kind, bytes: &[u8]) -> Result<usize> {
    if bytes.len() < SEGMENT_PREAMBLE || &bytes[..8] != MAGIC {
        return Err(corrupt(name, "no LIFEBOAT header"));
    }
    check_version_and_kind(name, kind, bytes)?;
    let length = u32::from_be_bytes([bytes[11], bytes[12], bytes[13], bytes[14]]) as usize;
    Ok(SEGMENT_PREAMBLE + length)
}

/// The header in a head's bytes, checked against the hash in the object's name.
fn open_head<T: DeserializeOwned>(name: &str, kind: Kind, bytes: &[u8]) -> Result<T> {
    let length = head_length(name, kind, bytes)?;
    let head = bytes
        .get(..length)
        .ok_or_else(|| corrupt(name, "segment header runs past the end"))?;
    check_name_hash(name, head)?;
    unpack(name, &head[SEGMENT_PREAMBLE..])
}

/// A segment's header and the bytes of its chunks, from the whole object.
fn segment_parts<'a>(name: &str, bytes: &'a [u8]) -> Result<(SegmentHeader, &'a [u8])> {
    let header = open_head(name, Kind::Segment, bytes)?;
    Ok((header, &bytes[head_length(name, Kind::Segment, bytes)?..]))
}

/// A chunk's bytes in the chunk area of a whole segment.
fn chunk_bytes<'a>(name: &str, area: &'a [u8], chunk: &ChunkRef) -> Result<&'a [u8]> {
    usize::try_from(chunk.offset)
        .ok()
        .zip(usize::try_from(chunk.length).ok())
        .and_then(|(offset, length)| area.get(offset..offset.checked_add(length)?))
        .ok_or_else(|| corrupt(name, "a chunk runs past the end"))
}

/// A chunk's changes, its bytes checked against its hash.
fn chunk_entries(name: &str, chunk: &ChunkRef, bytes: &[u8]) -> Result<Vec<ChunkEntry>> {
    check_chunk(name, chunk, bytes)?;
    unpack(name, bytes)
}

/// A chunk's changes whose position is at most `upto`, its bytes checked against its
/// hash. The changes of a transaction not `beyond` `upto` (by index in the segment) are
/// decoded as `chunk_entries` decodes them; any other change is first walked for its
/// `position`: at most `upto`, it is decoded; past it, the reading stops, since the
/// changes after it in the chunk come after it in the history (docs/vault-format.md).
fn chunk_entries_upto(
    name: &str,
    chunk: &ChunkRef,
    bytes: &[u8],
    beyond: &[bool],
    upto: u64,
) -> Result<Vec<ChunkEntry>> {
    check_chunk(name, chunk, bytes)?;
    let bad = |why: &str| corrupt(name, format!("cannot decode: {why}"));
    let zstd_error = |e: std::io::Error| corrupt(name, format!("zstd: {e}"));
    // Decompressed as far as the entries read need: a chunk whose first changes are past
    // `upto` is not decompressed further.
    let mut decoder = zstd::stream::read::Decoder::with_buffer(bytes).map_err(zstd_error)?;
    let mut body: Vec<u8> = Vec::new();
    let mut ended = false;
    let mut more = |body: &mut Vec<u8>| -> Result<bool> {
        if ended {
            return Ok(false);
        }
        let held = body.len();
        body.resize(held + held.max(64 * 1024), 0);
        let read = decoder.read(&mut body[held..]).map_err(zstd_error)?;
        body.truncate(held + read);
        ended = read == 0;
        Ok(!ended)
    };
    let mut at = 0;
    let count = loop {
        let mut rd = &body[at..];
        if let Some(count) = msgpack::array_len(&mut rd) {
            at = body.len() - rd.len();
            break count;
        }
        if !more(&mut body)? {
            return Err(bad("a chunk is not a list of changes"));
        }
    };
    let mut entries = Vec::new();
    for _ in 0..count {
        let (t, c, change) = loop {
            let mut rd = &body[at..];
            if let Some((t, c)) = msgpack::chunk_entry_head(&mut rd) {
                let change = body.len() - rd.len();
                if msgpack::skip(&mut rd).is_some() {
                    at = body.len() - rd.len();
                    break (t, c, change..at);
                }
            }
            if !more(&mut body)? {
                return Err(bad(
                    "a chunk entry is cut short or not (transaction, change index, change)",
                ));
            }
        };
        let change = &body[change];
        if beyond.get(t as usize).copied().unwrap_or(false)
            && msgpack::field_u64(change, "position").is_some_and(|p| p > upto)
        {
            break;
        }
        let change = rmp_serde::from_slice(change)
            .map_err(|e| corrupt(name, format!("cannot decode: {e}")))?;
        entries.push((t, c, change));
    }
    Ok(entries)
}

/// Walking MessagePack without decoding it, and decoding a base's rows straight from it.
mod msgpack {
    use crate::model::{Row, Value};

    fn peek(rd: &[u8]) -> Option<u8> {
        rd.first().copied()
    }

    /// A map's length.
    pub fn map_len(rd: &mut &[u8]) -> Option<usize> {
        container_len(rd, 0x80, 0xde)
    }

    /// An array's length.
    pub fn array_len(rd: &mut &[u8]) -> Option<usize> {
        container_len(rd, 0x90, 0xdc)
    }

    /// The length of a map or an array: its fix form (`fix` | length, below 16) or its
    /// 16- and 32-bit forms (markers `wide` and `wide` + 1).
    fn container_len(rd: &mut &[u8], fix: u8, wide: u8) -> Option<usize> {
        let marker = peek(rd)?;
        let width = match marker {
            m if m & 0xf0 == fix => {
                take(rd, 1)?;
                return Some((m & 0x0f) as usize);
            }
            m if m == wide => 2,
            m if m == wide + 1 => 4,
            _ => return None,
        };
        take(rd, 1)?;
        length(rd, width)
    }

    /// The head of a chunk entry `[transaction index, index in it, change]`: the two
    /// indexes, `rd` left at the change.
    pub fn chunk_entry_head(rd: &mut &[u8]) -> Option<(u32, u32)> {
        if array_len(rd)? != 3 {
            return None;
        }
        let t = u32::try_from(int(rd)?).ok()?;
        let c = u32::try_from(int(rd)?).ok()?;
        Some((t, c))
    }

    /// A string's bytes (not checked as UTF-8).
    pub fn str_bytes<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = match peek(rd)? {
            m @ 0xa0..=0xbf => {
                take(rd, 1)?;
                (m & 0x1f) as usize
            }
            0xd9 => {
                take(rd, 1)?;
                length(rd, 1)?
            }
            0xda => {
                take(rd, 1)?;
                length(rd, 2)?
            }
            0xdb => {
                take(rd, 1)?;
                length(rd, 4)?
            }
            _ => return None,
        };
        take(rd, n)
    }

    /// An integer of any width that fits an `i64`.
    pub fn int(rd: &mut &[u8]) -> Option<i64> {
        let marker = take(rd, 1)?[0];
        let be = |bytes: &[u8]| bytes.iter().fold(0u64, |n, &b| (n << 8) | b as u64);
        Some(match marker {
            0x00..=0x7f => marker as i64,
            0xe0..=0xff => marker as i8 as i64,
            0xcc => take(rd, 1)?[0] as i64,
            0xcd => be(take(rd, 2)?) as i64,
            0xce => be(take(rd, 4)?) as i64,
            0xcf => i64::try_from(be(take(rd, 8)?)).ok()?,
            0xd0 => take(rd, 1)?[0] as i8 as i64,
            0xd1 => be(take(rd, 2)?) as u16 as i16 as i64,
            0xd2 => be(take(rd, 4)?) as u32 as i32 as i64,
            0xd3 => be(take(rd, 8)?) as i64,
            _ => return None,
        })
    }

    /// One base row `{table, values}`: the table it is of, and whether it is `table`, its
    /// values then decoded into `row` (the values of other tables skipped). None for a row
    /// in another shape than the writer's usual one (for serde to decode).
    pub fn base_row(rd: &mut &[u8], table: u32, row: &mut Row) -> Option<(Option<u32>, bool)> {
        let fields = map_len(rd)?;
        let mut of = None;
        let mut values = false;
        for _ in 0..fields {
            match str_bytes(rd)? {
                b"table" => of = Some(u32::try_from(int(rd)?).ok()?),
                // The writer puts `table` first; were it not, the values are kept.
                b"values" if of.is_none_or(|t| t == table) => {
                    values_into(rd, row)?;
                    values = true;
                }
                _ => skip(rd)?,
            }
        }
        Some((of, values && of == Some(table)))
    }

    fn values_into(rd: &mut &[u8], row: &mut Row) -> Option<()> {
        let count = array_len(rd)?;
        for at in 0..count {
            if at == row.len() {
                row.push(Value::Null);
            }
            value_into(rd, &mut row[at])?;
        }
        row.truncate(count);
        Some(())
    }

    /// One `Value` over `slot`: a text into the string already there, if any.
    fn value_into(rd: &mut &[u8], slot: &mut Value) -> Option<()> {
        if peek(rd)? != 0x81 {
            // A unit variant is its name alone.
            return (str_bytes(rd)? == b"Null").then(|| *slot = Value::Null);
        }
        take(rd, 1)?;
        match str_bytes(rd)? {
            b"Text" => {
                let text = std::str::from_utf8(str_bytes(rd)?).ok()?;
                match slot {
                    Value::Text(held) => {
                        held.clear();
                        held.push_str(text);
                    }
                    other => *other = Value::Text(text.to_string()),
                }
            }
            b"Int" => *slot = Value::Int(int(rd)?),
            b"Real" if peek(rd)? == 0xcb => {
                take(rd, 1)?;
                let bits = take(rd, 8)?.try_into().ok()?;
                *slot = Value::Real(f64::from_be_bytes(bits));
            }
            b"Null" if peek(rd)? == 0xc0 => {
                take(rd, 1)?;
                *slot = Value::Null;
            }
            _ => return None,
        }
        Some(())
    }

    /// Step `rd` past one value; None when the bytes do not hold one.
    pub fn skip(rd: &mut &[u8]) -> Option<()> {
        // Values still to step past: the one asked for, then the items of every map and
        // array met on the way.
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let marker = take(rd, 1)?[0];
            let (items, bytes) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (2 * (marker & 0x0f) as usize, 0),
                0x90..=0x9f => ((marker & 0x0f) as usize, 0),
                0xa0..=0xbf => (0, (marker & 0x1f) as usize),
                0xc4 | 0xd9 => (0, length(rd, 1)?),
                0xc5 | 0xda => (0, length(rd, 2)?),
                0xc6 | 0xdb => (0, length(rd, 4)?),
                0xc7 => (0, 1 + length(rd, 1)?),
                0xc8 => (0, 1 + length(rd, 2)?),
                0xc9 => (0, 1 + length(rd, 4)?),
                0xcc | 0xd0 => (0, 1),
                0xcd | 0xd1 => (0, 2),
                0xca | 0xce | 0xd2 => (0, 4),
                0xcb | 0xcf | 0xd3 => (0, 8),
                0xd4 => (0, 2),
                0xd5 => (0, 3),
                0xd6 => (0, 5),
                0xd7 => (0, 9),
                0xd8 => (0, 17),
                0xdc => (length(rd, 2)?, 0),
                0xdd => (length(rd, 4)?, 0),
                0xde => (2 * length(rd, 2)?, 0),
                0xdf => (2 * length(rd, 4)?, 0),
                _ => return None,
            };
            take(rd, bytes)?;
            // Every item takes at least a byte: more than are left cannot be there.
            pending = pending.checked_add(items).filter(|&n| n <= rd.len())?;
        }
        Some(())
    }

    fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rd.len() < n {
            return None;
        }
        let (head, rest) = rd.split_at(n);
        *rd = rest;
        Some(head)
    }

    fn length(rd: &mut &[u8], bytes: usize) -> Option<usize> {
        Some(
            take(rd, bytes)?
                .iter()
                .fold(0usize, |n, &b| (n << 8) | b as usize),
        )
    }

    /// The unsigned integer under string key `key` of the map `value`; None when `value`
    /// is not a map or has no such integer.
    pub fn field_u64(value: &[u8], key: &str) -> Option<u64> {
        let mut rd = value;
        let fields = rmp::decode::read_map_len(&mut rd).ok()?;
        for _ in 0..fields {
            let mut probe = rd;
            let is_key = rmp::decode::read_str_len(&mut probe)
                .ok()
                .and_then(|n| take(&mut probe, n as usize))
                .is_some_and(|name| name == key.as_bytes());
            skip(&mut rd)?;
            if is_key {
                return rmp::decode::read_int(&mut rd).ok();
            }
            skip(&mut rd)?;
        }
        None
    }
}

/// A chunk's bytes are whole and match its hash.
fn check_chunk(name: &str, chunk: &ChunkRef, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != chunk.length {
        return Err(corrupt(name, "a chunk runs past the end"));
    }
    if content_hash(bytes) != chunk.hash {
        return Err(corrupt(
            name,
            format!(
                "the chunk of {} does not match its checksum",
                chunk
                    .tenant
                    .as_ref()
                    .map_or("every tenant".to_string(), |t| format!("tenant {t}"))
            ),
        ));
    }
    Ok(())
}

/// The segment of `header` with the changes in `entries`, in their original order.
fn assemble(name: &str, header: SegmentHeader, mut entries: Vec<ChunkEntry>) -> Result<Segment> {
    let mut transactions: Vec<crate::model::Transaction> = header
        .transactions
        .iter()
        .map(|tx| crate::model::Transaction {
            xid: tx.xid,
            position: tx.position,
            commit_time_us: tx.commit_time_us,
            changes: Vec::new(),
        })
        .collect();
    entries.sort_by_key(|(t, c, _)| (*t, *c));
    for (t, _, change) in entries {
        let tx = transactions
            .get_mut(t as usize)
            .ok_or_else(|| corrupt(name, "a change names a transaction that is not there"))?;
        tx.changes.push(change);
    }
    Ok(Segment {
        source: header.source,
        first: header.first,
        last: header.last,
        prev: header.prev,
        generation: header.generation,
        tables: header.tables,
        transactions,
    })
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
    use crate::model::{Base, BaseRow, Change, Op, TableSchema, Transaction, Value};

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
            prev: 0,
            generation: 0,
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
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
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
    async fn a_tenants_changes_read_alone_keep_their_order_with_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let change = |tenant: Option<&str>, op: Op, id: i64| Change {
            tenant: tenant.map(TenantKey::new),
            table: 0,
            op,
            old: None,
            new: (op == Op::Insert).then(|| vec![Value::Int(id), Value::Null]),
            position: 9,
            time_us: None,
        };
        let mut segment = segment();
        segment.transactions[0].changes = vec![
            change(Some("a"), Op::Insert, 1),
            change(Some("b"), Op::Insert, 2),
            change(None, Op::Truncate, 0),
            change(Some("a"), Op::Insert, 3),
        ];
        let name = vault.put_segment(&segment).await.expect("put");
        assert_eq!(vault.read_segment(&name).await.expect("read"), segment);
        let only_a: BTreeSet<TenantKey> = [TenantKey::new("a")].into();
        let read = vault
            .read_segment_for(&name, &only_a)
            .await
            .expect("read a");
        let ops: Vec<(Option<String>, Op)> = read.transactions[0]
            .changes
            .iter()
            .map(|c| (c.tenant.as_ref().map(|t| t.to_string()), c.op))
            .collect();
        assert_eq!(
            ops,
            vec![
                (Some("a".into()), Op::Insert),
                (None, Op::Truncate),
                (Some("a".into()), Op::Insert)
            ]
        );
    }

    #[tokio::test]
    async fn a_segment_read_up_to_a_position_has_exactly_the_changes_up_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        // Three transactions at 10, 20 and 30; the one at 30 is a commit group whose
        // changes have their own positions (26 to 30), as on SQLite. Rows carry every
        // kind of value, so the walk past them meets every kind of MessagePack.
        let change = |tenant: &str, position: u64, id: i64| Change {
            tenant: Some(TenantKey::new(tenant)),
            table: 0,
            op: Op::Update,
            old: Some(vec![Value::Int(id), Value::Blob(vec![7; 300])]),
            new: Some(vec![
                Value::Int(-id * 100_000),
                Value::Text(format!("{} {}", "é".repeat(40), id)),
                Value::Real(0.25),
                Value::Null,
            ]),
            position,
            time_us: Some(1),
        };
        let mut segment = segment();
        segment.first = 10;
        segment.last = 30;
        segment.transactions = [(10, 7), (20, 8), (30, 26)]
            .into_iter()
            .map(|(position, xid)| Transaction {
                xid,
                position,
                commit_time_us: position as i64,
                changes: Vec::new(),
            })
            .collect();
        segment.transactions[0].changes = vec![change("a", 10, 1), change("b", 10, 2)];
        // Enough changes at 20 that the chunk is decompressed in several steps.
        segment.transactions[1].changes = (3..2003).map(|id| change("a", 20, id)).collect();
        segment.transactions[2].changes = vec![
            change("a", 26, 4),
            change("b", 27, 5),
            Change {
                tenant: None,
                table: 0,
                op: Op::Truncate,
                old: None,
                new: None,
                position: 28,
                time_us: None,
            },
            change("a", 29, 6),
            change("a", 30, 7),
        ];
        let name = vault.put_segment(&segment).await.expect("put");
        let tenants: BTreeSet<TenantKey> = [TenantKey::new("a")].into();
        let all = vault.read_segment_for(&name, &tenants).await.expect("read");
        for upto in [0, 9, 10, 15, 20, 25, 26, 28, 29, 30, 31, u64::MAX] {
            let mut want = all.clone();
            for tx in &mut want.transactions {
                tx.changes.retain(|c| c.position <= upto);
            }
            let got = vault
                .read_segment_upto(&name, &tenants, upto)
                .await
                .expect("read up to");
            assert_eq!(got, want, "up to {upto}");
        }
    }

    #[tokio::test]
    async fn a_segment_head_and_chunks_are_checked_on_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let mut segment = segment();
        let mut second = segment.transactions[0].changes[0].clone();
        second.tenant = Some(TenantKey::new("2"));
        segment.transactions[0].changes.push(second);
        let name = vault.put_segment(&segment).await.expect("put");
        let path = dir.path().join(&name);
        let good = std::fs::read(&path).expect("read");
        let one: BTreeSet<TenantKey> = [TenantKey::new("1")].into();
        let two: BTreeSet<TenantKey> = [TenantKey::new("2")].into();

        // The last chunk (tenant 2's) damaged: reading tenant 1 never touches it; reading
        // tenant 2, or the whole segment, is refused.
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        let read = vault.read_segment_for(&name, &one).await.expect("tenant 1");
        assert_eq!(read.transactions[0].changes.len(), 1);
        for err in [
            vault
                .read_segment_for(&name, &two)
                .await
                .expect_err("tenant 2"),
            vault.read_segment(&name).await.expect_err("whole"),
        ] {
            assert_eq!(err.kind(), ErrorKind::Corrupt);
            assert!(err.to_string().contains("tenant 2"), "{err}");
        }
        let (summary, tenants) = vault.read_segment_summary(&name).await.expect("summary");
        assert_eq!(summary.transactions.len(), 1);
        assert_eq!(tenants, [TenantKey::new("1"), TenantKey::new("2")]);

        // The head damaged: nothing is read.
        let mut bytes = good;
        bytes[SEGMENT_PREAMBLE + 2] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        let err = vault.read_segment_summary(&name).await.expect_err("head");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn many_tenants_of_a_segment_read_at_once_are_all_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let mut segment = segment();
        let template = segment.transactions[0].changes[0].clone();
        segment.transactions[0].changes = (0..20)
            .map(|i| {
                let mut change = template.clone();
                change.tenant = Some(TenantKey::new(i.to_string()));
                change
            })
            .collect();
        let name = vault.put_segment(&segment).await.expect("put");
        let wanted: BTreeSet<TenantKey> = (0..15).map(|i| TenantKey::new(i.to_string())).collect();
        assert!(wanted.len() > RANGE_READS_AT_MOST);
        let read = vault.read_segment_for(&name, &wanted).await.expect("read");
        let got: BTreeSet<TenantKey> = read.transactions[0]
            .changes
            .iter()
            .filter_map(|c| c.tenant.clone())
            .collect();
        assert_eq!(got, wanted);
    }

    #[test]
    fn a_base_reads_the_same_kept_in_memory_or_decompressed_per_table() {
        let table = |name: &str| TableSchema {
            name: name.into(),
            columns: vec!["id".into(), "x".into()],
            key: vec![0],
        };
        // Two bases: neither is decompressed at open; both are kept from their first
        // read by a reader that may keep them, neither by one that may keep 100 bytes.
        for (count, width) in [(500i64, 40), (12_000, 120)] {
            // Values of every kind, changing kind and count from row to row (rows are
            // decoded into one reused buffer).
            let rows = (0..count)
                .map(|i| BaseRow {
                    table: (i % 3) as u32,
                    values: match i % 7 {
                        0 => vec![Value::Int(i), Value::Null],
                        1 => vec![Value::Int(-i * 1_000_003), Value::Real(i as f64 / 3.0)],
                        // Blobs in the first base only: the second is read through
                        // where its tables' rows are, once found.
                        2 if width < 100 => vec![Value::Int(i), Value::Blob(vec![i as u8; 3])],
                        3 => vec![Value::Int(i)],
                        4 => vec![
                            Value::Text(format!("{i}")),
                            Value::Text(String::new()),
                            Value::Text("é".into()),
                        ],
                        _ => vec![
                            Value::Int(i),
                            Value::Text(format!("row {i} {}", "x".repeat(width))),
                        ],
                    },
                })
                .collect::<Vec<_>>();
            let base = Base {
                source: "s".into(),
                tenant: TenantKey::new("7"),
                position: 12,
                commit_time_us: 34,
                tables: vec![table("a"), table("b"), table("c")],
                rows: rows.clone(),
            };
            let bytes = encode(Kind::Base, &base).expect("encode");
            let name = format!(
                "sources/s/bases/7/{:016x}-{}.base",
                12,
                content_hash(&bytes)
            );
            let kept =
                BaseReader::open(&name, bytes.clone(), BASE_KEPT_DECOMPRESSED).expect("kept");
            let streamed = BaseReader::open(&name, bytes.clone(), 100).expect("streamed");
            assert!(kept.body.get().is_none(), "nothing decompressed at open");
            assert!(streamed.body.get().is_none());
            for reader in [&kept, &streamed] {
                assert_eq!((reader.position, reader.commit_time_us), (12, 34));
                assert_eq!(reader.tables, base.tables);
                for t in 0..3u32 {
                    let mut got = Vec::new();
                    reader.for_each_row(t, |r| got.push(r)).expect("rows");
                    let want: Vec<_> = rows
                        .iter()
                        .filter(|r| r.table == t)
                        .map(|r| r.values.clone())
                        .collect();
                    assert_eq!(got, want);
                    let mut lent = Vec::new();
                    reader
                        .for_each_row_mut(t, |r| lent.push(r.clone()))
                        .expect("rows lent");
                    assert_eq!(lent, want);
                }
            }
            assert!(
                kept.body.get().is_some_and(Option::is_some),
                "kept once read"
            );
            assert_eq!(
                kept.runs.get().is_some(),
                width >= 100,
                "where the rows are is known once every row was read straight"
            );
            assert!(
                streamed.body.get().is_some_and(Option::is_none),
                "too large"
            );
            let mut altered = bytes.to_vec();
            let last = altered.len() - 1;
            altered[last] ^= 1;
            let err = BaseReader::open(&name, Bytes::from(altered), BASE_KEPT_DECOMPRESSED)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("checksum"), "{err}");
        }
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
