//! The vault store contract (see `Store` in src/vault/store.rs), written once and run
//! against every store: `LocalStore` on a temporary directory and `S3Store` on the moto S3
//! server that scripts/test-services.sh starts. Without that server's environment the S3
//! tests fail (they never skip): run them through `scripts/test`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lifeboat_core::config::VaultConfig;
use lifeboat_core::model::{
    Base, BaseRow, Change, Checkpoint, KeymapChunk, KeymapChunkRef, KeymapDelta, KeymapDeltaRef,
    KeymapIndex, Op, Segment, TableSchema, TenantKey, Transaction, Value,
};
use lifeboat_core::vault::{LocalStore, S3Retries, S3Store, SegmentRef, Store, Vault};
use lifeboat_core::ErrorKind;

// --- the stores under test ----------------------------------------------------------------

/// A store for one test, with whatever must live as long as it.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn local_store(_test: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture {
        store: Arc::new(LocalStore::new(dir.path())),
        _dir: Some(dir),
    }
}

/// An environment variable the S3 tests need; a missing one fails the test.
fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: the S3 store tests need the moto S3 server. Run `scripts/test`, \
             or `scripts/test-services.sh` and then `source .lifeboat-test/env.sh`"
        ),
    }
}

/// The moto bucket and endpoint. The credentials are required too: without them
/// object_store would ask a cloud metadata service instead of failing.
fn s3_env() -> (String, String) {
    let bucket = required_env("LIFEBOAT_TEST_S3_BUCKET");
    let endpoint = required_env("AWS_ENDPOINT_URL");
    required_env("AWS_ACCESS_KEY_ID");
    required_env("AWS_SECRET_ACCESS_KEY");
    (bucket, endpoint)
}

/// Unique to this test run, so runs never see each other's objects.
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        format!("{nanos}-{}", std::process::id())
    })
}

fn s3_at(prefix: &str) -> Arc<dyn Store> {
    let (bucket, endpoint) = s3_env();
    Arc::new(S3Store::new(&bucket, prefix, Some(&endpoint), None).expect("S3Store::new"))
}

fn s3_store(test: &str) -> Fixture {
    Fixture {
        store: s3_at(&format!("lifeboat-tests/{}/{test}", run_id())),
        _dir: None,
    }
}

/// One test per contract function and store.
macro_rules! contract {
    ($module:ident, $fixture:ident: $($test:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    let fixture = super::$fixture(stringify!($test));
                    super::contract::$test(fixture.store.clone()).await;
                }
            )*
        }
    };
}

contract!(local, local_store:
    put_get_round_trip,
    too_many_bucket_bits_are_refused,
    a_broken_history_is_refused,
    an_older_format_is_refused,
    get_missing_is_none,
    put_is_idempotent,
    list_is_sorted_and_under_the_prefix_only,
    names_with_equals_signs,
    delete_and_delete_missing,
    vault_round_trip,
    corrupted_object_is_refused,
    ranges_read_parts_of_an_object,
    a_purge_leaves_no_trace_of_keys_only_the_tenant_held,
);

contract!(s3, s3_store:
    put_get_round_trip,
    too_many_bucket_bits_are_refused,
    a_broken_history_is_refused,
    an_older_format_is_refused,
    get_missing_is_none,
    put_is_idempotent,
    list_is_sorted_and_under_the_prefix_only,
    names_with_equals_signs,
    delete_and_delete_missing,
    vault_round_trip,
    corrupted_object_is_refused,
    ranges_read_parts_of_an_object,
    a_purge_leaves_no_trace_of_keys_only_the_tenant_held,
);

// --- the contract -------------------------------------------------------------------------

mod contract {
    use super::*;

    async fn put(store: &Arc<dyn Store>, name: &str, bytes: &[u8]) {
        store
            .put(name, Bytes::copy_from_slice(bytes))
            .await
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
    }

    async fn get(store: &Arc<dyn Store>, name: &str) -> Option<Bytes> {
        store
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
    }

    async fn list(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
        store
            .list(prefix)
            .await
            .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
    }

    pub async fn put_get_round_trip(store: Arc<dyn Store>) {
        // Every byte value, an empty object, and one large enough for several reads.
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        let large: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let objects: [(&str, &[u8]); 4] = [
            ("lifeboat-vault.json", br#"{"format":"lifeboat-vault"}"#),
            ("sources/a/segments/all-bytes.seg", &all_bytes),
            ("sources/a/segments/empty.seg", b""),
            ("sources/a/bases/t/large.base", &large),
        ];
        for (name, bytes) in objects {
            put(&store, name, bytes).await;
        }
        for (name, bytes) in objects {
            assert_eq!(get(&store, name).await.as_deref(), Some(bytes), "{name}");
        }
    }

    pub async fn get_missing_is_none(store: Arc<dyn Store>) {
        assert_eq!(get(&store, "lifeboat-vault.json").await, None);
        assert_eq!(get(&store, "sources/nowhere/segments/x.seg").await, None);
        put(&store, "sources/a/segments/x.seg", b"x").await;
        assert_eq!(get(&store, "sources/a/segments/y.seg").await, None);
        // A name that is a directory of other names is not an object.
        assert_eq!(get(&store, "sources/a/segments").await, None);
    }

    pub async fn ranges_read_parts_of_an_object(store: Arc<dyn Store>) {
        let name = "sources/a/segments/0000000000000001-0000000000000002-abc.seg";
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        put(&store, name, &bytes).await;
        let range = |r: std::ops::Range<u64>| {
            let store = store.clone();
            async move { store.get_range(name, r).await.expect("get_range") }
        };
        assert_eq!(range(0..16).await.as_deref(), Some(&bytes[..16]));
        assert_eq!(range(4000..4100).await.as_deref(), Some(&bytes[4000..4100]));
        // Past the end: what there is.
        assert_eq!(range(4990..9000).await.as_deref(), Some(&bytes[4990..]));
        assert_eq!(
            store
                .get_range("sources/a/segments/missing.seg", 0..10)
                .await
                .expect("missing"),
            None
        );
    }

    pub async fn put_is_idempotent(store: Arc<dyn Store>) {
        let name = "sources/a/checkpoints/0000000000000001-abc.ckpt";
        put(&store, name, b"same bytes").await;
        put(&store, name, b"same bytes").await;
        assert_eq!(get(&store, name).await.as_deref(), Some(&b"same bytes"[..]));
        assert_eq!(list(&store, "").await, [name]);
        // The listing tells each object's size without reading it.
        put(
            &store,
            "sources/a/checkpoints/0000000000000002-abc.ckpt",
            b"four",
        )
        .await;
        assert_eq!(
            store.list_sized("sources/a/").await.expect("list sized"),
            [
                (name.to_string(), 10),
                (
                    "sources/a/checkpoints/0000000000000002-abc.ckpt".to_string(),
                    4
                )
            ]
        );
    }

    pub async fn list_is_sorted_and_under_the_prefix_only(store: Arc<dyn Store>) {
        // Put out of order, with neighbours that share string prefixes.
        let names = [
            "sources/a/segments/0100-d.seg",
            "sources/a/segments/0001-a.seg",
            "sources/ab/segments/0001-a.seg",
            "sources/a/segments/0010-c.seg",
            "sources/a/segmentsX/0001-a.seg",
            "sources/a/bases/t=2Eio/0001-h.base",
            "sources/a/segments/0002-b.seg",
            "sources/a/bases/t/0001-h.base",
            "sources/a/bases/t/deeper/0001-h.base",
            "lifeboat-vault.json",
        ];
        for name in names {
            put(&store, name, name.as_bytes()).await;
        }
        let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        all.sort();
        assert_eq!(list(&store, "").await, all);

        let segments = [
            "sources/a/segments/0001-a.seg",
            "sources/a/segments/0002-b.seg",
            "sources/a/segments/0010-c.seg",
            "sources/a/segments/0100-d.seg",
        ];
        assert_eq!(list(&store, "sources/a/segments/").await, segments);
        // A prefix that ends inside a name.
        assert_eq!(list(&store, "sources/a/segments/00").await, segments[..3]);
        assert_eq!(
            list(&store, "sources/a/segments/0010").await,
            segments[2..3]
        );
        assert_eq!(
            list(&store, "sources/a/segments/0100-d.seg").await,
            segments[3..]
        );
        // A prefix is a string prefix, not a directory: `segments` also matches `segmentsX`.
        let mut with_x = segments.to_vec();
        with_x.push("sources/a/segmentsX/0001-a.seg");
        assert_eq!(list(&store, "sources/a/segments").await, with_x);
        assert_eq!(
            list(&store, "sources/a").await.len(),
            names.len() - 1,
            "everything but the header"
        );
        assert_eq!(list(&store, "sources/a/").await.len(), names.len() - 2);
        assert_eq!(
            list(&store, "sources/ab/").await,
            ["sources/ab/segments/0001-a.seg"]
        );
        // Nested names, sorted as strings: '/' (0x2F) before '=' (0x3D).
        assert_eq!(
            list(&store, "sources/a/bases/").await,
            [
                "sources/a/bases/t/0001-h.base",
                "sources/a/bases/t/deeper/0001-h.base",
                "sources/a/bases/t=2Eio/0001-h.base",
            ]
        );
        assert_eq!(
            list(&store, "sources/a/bases/t/").await,
            [
                "sources/a/bases/t/0001-h.base",
                "sources/a/bases/t/deeper/0001-h.base"
            ]
        );
        assert_eq!(list(&store, "lifeboat").await, ["lifeboat-vault.json"]);
        // Nothing there.
        assert!(list(&store, "sources/zz/").await.is_empty());
        assert!(list(&store, "sources/a/segments/1").await.is_empty());
        assert!(list(&store, "nowhere/at/all/").await.is_empty());
    }

    pub async fn names_with_equals_signs(store: Arc<dyn Store>) {
        // Escaped tenant keys: `acme.io` is `acme=2Eio`, `a=b` is `a=3Db`.
        let names = [
            "sources/s/bases/acme=2Eio/0000000000000005-h.base",
            "sources/s/bases/a=3Db/0000000000000005-h.base",
            "sources/s/bases/=C3=BCn=C3=AF/0000000000000005-h.base",
        ];
        for name in names {
            put(&store, name, name.as_bytes()).await;
        }
        for name in names {
            assert_eq!(get(&store, name).await.as_deref(), Some(name.as_bytes()));
            let dir = &name[..name.rfind('/').expect("slash") + 1];
            assert_eq!(list(&store, dir).await, [name]);
        }
        assert_eq!(
            list(&store, "sources/s/bases/acme=").await,
            ["sources/s/bases/acme=2Eio/0000000000000005-h.base"]
        );
        assert_eq!(list(&store, "sources/s/bases/").await.len(), 3);
        store.delete(names[0]).await.expect("delete");
        assert_eq!(get(&store, names[0]).await, None);
        assert_eq!(list(&store, "sources/s/bases/").await.len(), 2);
    }

    pub async fn delete_and_delete_missing(store: Arc<dyn Store>) {
        let keep = "sources/a/segments/1-keep.seg";
        let gone = "sources/a/segments/2-gone.seg";
        put(&store, keep, b"keep").await;
        put(&store, gone, b"gone").await;
        store.delete(gone).await.expect("delete");
        assert_eq!(get(&store, gone).await, None);
        assert_eq!(list(&store, "sources/").await, [keep]);
        store.delete(gone).await.expect("delete again");
        store
            .delete("sources/never/segments/there.seg")
            .await
            .expect("delete of an object that never existed");
        assert_eq!(get(&store, keep).await.as_deref(), Some(&b"keep"[..]));
    }

    /// A purge rewrites key-map objects on this store so that a key only the purged tenant
    /// held is in none of them (every object's body decompressed and searched), while a key
    /// it took from another tenant keeps a tombstone and reads as absent.
    pub async fn a_purge_leaves_no_trace_of_keys_only_the_tenant_held(store: Arc<dyn Store>) {
        let vault = Vault::init(store.clone()).await.expect("create");
        let text = |k: &str| Value::Text(k.to_string());
        let sorted = |mut entries: Vec<(Value, Option<TenantKey>)>| {
            entries.sort_by_key(|(k, _)| lifeboat_core::model::keymap_key_bytes(k));
            entries
        };
        let chunk = KeymapChunk {
            source: "s".into(),
            table: "users".into(),
            column: "email".into(),
            bits: 0,
            bucket: 0,
            entries: sorted(vec![
                (text("bob@example.org"), Some(TenantKey::new("b"))),
                (text("dave@example.org"), Some(TenantKey::new("b"))),
            ])
            .into_iter()
            .map(|(k, t)| (k, t.expect("tenant")))
            .collect(),
        };
        let chunk = vault.put_keymap_chunk(&chunk, 10).await.expect("chunk");
        let delta = KeymapDelta {
            source: "s".into(),
            table: "users".into(),
            column: "email".into(),
            entries: sorted(vec![
                (text("alice@example.org"), Some(TenantKey::new("gone"))),
                (text("dave@example.org"), Some(TenantKey::new("gone"))),
            ]),
        };
        let delta = vault.put_keymap_delta(&delta, 20).await.expect("delta");
        let mut map = KeymapIndex {
            table: "users".into(),
            column: "email".into(),
            bits: 0,
            keys: 2,
            chunks: vec![chunk],
            listing: None,
            deltas: vec![delta],
        };
        vault
            .put_keymap_listing("s", &mut map, 10)
            .await
            .expect("listing");
        let checkpoint = Checkpoint {
            source: "s".into(),
            position: 20,
            commit_time_us: 20,
            tables: Vec::new(),
            keymaps: vec![map],
        };
        vault.put_checkpoint(&checkpoint).await.expect("checkpoint");
        let bodies = || async {
            let mut out = Vec::new();
            for name in store.list("sources/s/keymaps/").await.expect("list") {
                let bytes = get(&store, &name).await.expect("object");
                out.push((name, zstd::decode_all(&bytes[11..]).expect("zstd body")));
            }
            out
        };
        let holds =
            |body: &[u8], text: &str| body.windows(text.len()).any(|w| w == text.as_bytes());
        assert!(
            bodies()
                .await
                .iter()
                .any(|(_, b)| holds(b, "alice@example.org")),
            "the search finds the key before the purge"
        );

        lifeboat_core::purge::purge_tenant(&vault, "s", &TenantKey::new("gone"))
            .await
            .expect("purge");
        let after = bodies().await;
        assert_eq!(after.len(), 3, "a chunk, a listing, a delta: {after:?}");
        for (name, body) in &after {
            assert!(!holds(body, "alice@example.org"), "{name} holds alice");
            assert!(!holds(body, "gone"), "{name} names the purged tenant");
        }
        let listed = vault.list_checkpoints("s").await.expect("list");
        let read = vault.read_checkpoint(&listed[0].name).await.expect("read");
        let map = &read.keymaps[0];
        let rewritten = vault
            .read_keymap_delta("s", map, &map.deltas[0])
            .await
            .expect("delta");
        assert_eq!(rewritten.entries, vec![(text("dave@example.org"), None)]);
    }

    pub async fn vault_round_trip(store: Arc<dyn Store>) {
        let err = Vault::open(store.clone()).await.expect_err("no vault yet");
        assert_eq!(err.kind(), ErrorKind::Vault);
        assert!(err.to_string().contains("no vault"), "{err}");

        let vault = Vault::init(store.clone()).await.expect("create");
        let header = get(&store, "lifeboat-vault.json")
            .await
            .expect("header written");
        let err = Vault::init(store.clone()).await.expect_err("init again");
        assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
        assert!(err.to_string().contains(vault.id()), "{err}");
        assert_eq!(vault.id().len(), 32);
        assert_eq!(
            get(&store, "lifeboat-vault.json").await,
            Some(header),
            "header kept"
        );
        Vault::open(store.clone()).await.expect("open");

        let later = segment("s", 0x1_0000_0020, 0x1_0000_0030);
        let earlier = segment("s", 5, 0x1_0000_0010);
        let later_name = vault.put_segment(&later).await.expect("put");
        let earlier_name = vault.put_segment(&earlier).await.expect("put");
        vault.put_segment(&segment("s2", 1, 2)).await.expect("put");
        assert_eq!(
            vault.put_segment(&earlier).await.expect("put again"),
            earlier_name,
            "content-addressed"
        );
        assert_eq!(
            vault.list_segments("s").await.expect("list"),
            [
                SegmentRef {
                    name: earlier_name.clone(),
                    first: 5,
                    last: 0x1_0000_0010,
                    xids: (100, 101),
                    size: vault
                        .store()
                        .get(&earlier_name)
                        .await
                        .expect("get")
                        .expect("there")
                        .len() as u64,
                },
                SegmentRef {
                    name: later_name.clone(),
                    first: 0x1_0000_0020,
                    last: 0x1_0000_0030,
                    xids: (100, 101),
                    size: vault
                        .store()
                        .get(&later_name)
                        .await
                        .expect("get")
                        .expect("there")
                        .len() as u64,
                },
            ]
        );
        assert!(vault
            .list_segments("nothing")
            .await
            .expect("list")
            .is_empty());
        assert_eq!(
            vault.read_segment(&earlier_name).await.expect("read"),
            earlier
        );
        assert_eq!(vault.read_segment(&later_name).await.expect("read"), later);

        // Bases under escaped tenant keys, and a checkpoint.
        let acme_io = TenantKey::new("acme.io");
        let acme = TenantKey::new("acme");
        let base_io = vault.put_base(&base("s", &acme_io, 7)).await.expect("put");
        let base_plain = vault.put_base(&base("s", &acme, 7)).await.expect("put");
        assert!(base_io.contains("/acme=2Eio/"), "{base_io}");
        let refs = vault.list_bases("s", &acme).await.expect("list");
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].name.as_str(), refs[0].position),
            (base_plain.as_str(), 7)
        );
        let all = vault.list_all_bases("s").await.expect("list");
        assert_eq!(
            all.keys().cloned().collect::<Vec<_>>(),
            [acme.clone(), acme_io.clone()]
        );
        assert_eq!(
            vault.read_base(&base_io).await.expect("read"),
            base("s", &acme_io, 7)
        );

        let ckpt = vault
            .put_checkpoint(&checkpoint("s", 9))
            .await
            .expect("put");
        let ckpts = vault.list_checkpoints("s").await.expect("list");
        assert_eq!(ckpts.len(), 1);
        assert_eq!(
            (ckpts[0].name.as_str(), ckpts[0].position),
            (ckpt.as_str(), 9)
        );
        // Its chunks went to a listing, written with it at its position; read back
        // through the listing.
        let read = vault.read_checkpoint(&ckpt).await.expect("read");
        let listing = read.keymaps[0].listing.clone().expect("a listing");
        assert_eq!((listing.position, listing.buckets), (9, 1));
        let mut expected = checkpoint("s", 9);
        expected.keymaps[0].listing = Some(listing.clone());
        assert_eq!(read, expected);
        let index = vault.read_checkpoint_index(&ckpt).await.expect("index");
        assert!(index.keymaps[0].chunks.is_empty());
        assert_eq!(index.keymaps[0].listing, Some(listing.clone()));
        // Written again with that listing, no new listing is written.
        let listings = |listed: Vec<lifeboat_core::vault::PositionRef>| {
            listed
                .into_iter()
                .filter(|c| c.name.ends_with(".kml"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            listings(vault.list_keymap_chunks("s").await.expect("list")).len(),
            1
        );
        let mut again = expected.clone();
        again.position = 10;
        vault.put_checkpoint(&again).await.expect("put again");
        let kml = listings(vault.list_keymap_chunks("s").await.expect("list"));
        assert_eq!(kml.len(), 1, "{kml:?}");
        assert_eq!(
            vault.verify_object(&kml[0].name).await.expect("verify"),
            kml[0].size
        );
        // A listing is refused for another map or another bucket count, naming it.
        let other = KeymapIndex {
            column: "code".into(),
            ..expected.keymaps[0].clone()
        };
        let err = vault
            .read_keymap_listing("s", &other)
            .await
            .expect_err("another map");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&kml[0].name), "{err}");
        let mut miscounted = expected.keymaps[0].clone();
        miscounted.listing.as_mut().expect("listing").buckets = 2;
        let err = vault
            .read_keymap_listing("s", &miscounted)
            .await
            .expect_err("miscounted");
        assert!(err.to_string().contains("2"), "{err}");
        vault
            .delete(&again_name(&vault, 10).await)
            .await
            .expect("delete");
        assert_eq!(vault.list_sources().await.expect("sources"), ["s"]);

        // A key-map chunk: read back through the reference a checkpoint keeps, and refused
        // through a reference to another bucket or another map.
        let chunk = KeymapChunk {
            source: "s".into(),
            table: "customers".into(),
            column: "id".into(),
            bits: 0,
            bucket: 0,
            entries: vec![
                (Value::Int(3), TenantKey::new("acme.io")),
                (Value::Int(4), TenantKey::new("acme")),
            ],
        };
        let reference = vault.put_keymap_chunk(&chunk, 9).await.expect("put chunk");
        assert_eq!((reference.position, reference.keys), (9, 2));
        let not_listings = |listed: Vec<lifeboat_core::vault::PositionRef>| {
            listed
                .into_iter()
                .filter(|c| !c.name.ends_with(".kml"))
                .collect::<Vec<_>>()
        };
        let listed = not_listings(vault.list_keymap_chunks("s").await.expect("list chunks"));
        assert_eq!(listed.len(), 1);
        assert!(listed[0]
            .name
            .ends_with(&format!("{}.kmap", reference.hash)));
        let mut map = checkpoint("s", 9).keymaps.remove(0);
        map.keys = 2;
        map.chunks = vec![reference.clone()];
        assert_eq!(
            vault
                .read_keymap_chunk("s", &map, &reference)
                .await
                .expect("read chunk"),
            chunk
        );
        let other_map = KeymapIndex {
            column: "code".into(),
            ..map.clone()
        };
        let err = vault
            .read_keymap_chunk("s", &other_map, &reference)
            .await
            .expect_err("another map");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&listed[0].name), "{err}");
        let miscounted = KeymapChunkRef {
            keys: 3,
            ..reference.clone()
        };
        let err = vault
            .read_keymap_chunk("s", &map, &miscounted)
            .await
            .expect_err("miscounted");
        assert!(err.to_string().contains("3"), "{err}");

        // A key-map delta: listed beside the chunks, read back through its reference,
        // refused for another map, another count, and keys out of order.
        let delta = KeymapDelta {
            source: "s".into(),
            table: "customers".into(),
            column: "id".into(),
            entries: vec![
                (Value::Int(3), None),
                (Value::Int(5), Some(TenantKey::new("acme"))),
            ],
        };
        let delta_ref = vault.put_keymap_delta(&delta, 11).await.expect("put delta");
        assert_eq!((delta_ref.position, delta_ref.entries), (11, 2));
        let listed = not_listings(vault.list_keymap_chunks("s").await.expect("list chunks"));
        assert_eq!(listed.len(), 2);
        assert!(listed[1]
            .name
            .ends_with(&format!("{:016x}-{}.kmd", 11, delta_ref.hash)));
        map.deltas = vec![delta_ref.clone()];
        assert_eq!(
            vault
                .read_keymap_delta("s", &map, &delta_ref)
                .await
                .expect("read delta"),
            delta
        );
        assert_eq!(
            vault.verify_object(&listed[1].name).await.expect("verify"),
            listed[1].size
        );
        let other_map = KeymapIndex {
            table: "orders".into(),
            ..map.clone()
        };
        let err = vault
            .read_keymap_delta("s", &other_map, &delta_ref)
            .await
            .expect_err("another map");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&listed[1].name), "{err}");
        let miscounted = KeymapDeltaRef {
            entries: 1,
            ..delta_ref.clone()
        };
        assert!(vault
            .read_keymap_delta("s", &map, &miscounted)
            .await
            .is_err());
        let unsorted = KeymapDelta {
            entries: delta.entries.iter().rev().cloned().collect(),
            ..delta.clone()
        };
        let unsorted_ref = vault.put_keymap_delta(&unsorted, 12).await.expect("put");
        let err = vault
            .read_keymap_delta("s", &map, &unsorted_ref)
            .await
            .expect_err("out of order");
        assert!(err.to_string().contains("out of order"), "{err}");

        // Reading an object as the wrong kind is refused.
        let err = vault
            .read_base(&ckpt)
            .await
            .expect_err("a checkpoint is no base");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");

        vault.delete(&earlier_name).await.expect("delete");
        assert_eq!(vault.list_segments("s").await.expect("list").len(), 1);
        let err = vault
            .read_segment(&earlier_name)
            .await
            .expect_err("deleted");
        assert!(err.to_string().contains(&earlier_name), "{err}");
    }

    /// A checkpoint whose key map claims more bucket bits than any writer uses (its hash
    /// matching: a writer's bug or a crafted object) is refused as corrupt, naming it,
    /// before a reader shifts by them.
    pub async fn too_many_bucket_bits_are_refused(store: Arc<dyn Store>) {
        let vault = Vault::init(store.clone()).await.expect("create");
        let mut wide = checkpoint("s", 10);
        wide.keymaps[0].bits = 64;
        let name = vault.put_checkpoint(&wide).await.expect("put");
        let err = vault.read_checkpoint(&name).await.expect_err("64 bits");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&name), "{err}");
        assert!(err.to_string().contains("64 bucket bits"), "{err}");
        let fine = vault
            .put_checkpoint(&checkpoint("s", 11))
            .await
            .expect("put");
        vault.read_checkpoint(&fine).await.expect("0 bits read");
    }

    /// A segment removed from the middle of a history, or stored twice, is refused by a
    /// reader replaying across it, naming the objects; a flipped byte in a chunk that a
    /// reader of heads never fetches is found by `verify_object`.
    pub async fn a_broken_history_is_refused(store: Arc<dyn Store>) {
        use lifeboat_core::state::SourceHistory;
        let vault = Vault::init(store.clone()).await.expect("create");
        vault
            .put_checkpoint(&checkpoint("s", 10))
            .await
            .expect("checkpoint");
        let a = vault.put_segment(&segment("s", 11, 20)).await.expect("a");
        let b = vault.put_segment(&segment("s", 21, 30)).await.expect("b");
        let c = vault.put_segment(&segment("s", 31, 40)).await.expect("c");
        let tenants = std::collections::BTreeSet::from([TenantKey::new("42")]);
        let read = |vault: Vault| {
            let tenants = tenants.clone();
            async move {
                let history = SourceHistory::load(&vault, "s").await?;
                history.states_at(&vault, &tenants, 40).await
            }
        };
        read(vault.clone()).await.expect("a whole history");

        let good = get(&store, &b).await.expect("b stored");
        let mut flipped = good.to_vec();
        *flipped.last_mut().expect("bytes") ^= 0x01;
        put(&store, &b, &flipped).await;
        let err = vault.verify_object(&b).await.expect_err("flipped");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&b), "{err}");
        put(&store, &b, &good).await;
        assert_eq!(
            vault.verify_object(&b).await.expect("whole"),
            good.len() as u64
        );

        vault.delete(&b).await.expect("delete b");
        let err = read(vault.clone()).await.expect_err("gap");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        let text = err.to_string();
        for needle in ["source s", "positions 21 to 30 are missing", &a, &c] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
        put(&store, &b, &good).await;

        let mut copy = segment("s", 21, 30);
        copy.transactions[0].changes.pop();
        let copy = vault.put_segment(&copy).await.expect("copy");
        let text = read(vault.clone())
            .await
            .expect_err("duplicate")
            .to_string();
        for needle in ["duplicate", &b, &copy] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
    }

    /// A vault written by an older build is refused, naming both versions, and nothing is
    /// written into it.
    pub async fn an_older_format_is_refused(store: Arc<dyn Store>) {
        let header =
            br#"{"format": "lifeboat-vault", "version": 5, "created": "2026-01-01T00:00:00Z"}"#;
        put(&store, "lifeboat-vault.json", header).await;
        for err in [
            Vault::open(store.clone()).await.expect_err("version 5"),
            Vault::init(store.clone()).await.expect_err("version 5"),
        ] {
            assert_eq!(err.kind(), ErrorKind::Vault, "{err}");
            let text = err.to_string();
            assert!(
                text.contains("format version 5") && text.contains("version 6"),
                "{text}"
            );
        }
        assert_eq!(
            get(&store, "lifeboat-vault.json").await.as_deref(),
            Some(&header[..])
        );
        assert_eq!(list(&store, "").await, ["lifeboat-vault.json"]);
    }

    pub async fn corrupted_object_is_refused(store: Arc<dyn Store>) {
        let vault = Vault::init(store.clone()).await.expect("create");
        let original = segment("s", 1, 3);
        let name = vault.put_segment(&original).await.expect("put");
        assert_eq!(vault.read_segment(&name).await.expect("read"), original);
        let good = get(&store, &name).await.expect("segment stored");

        // One flipped bit, then a truncated copy, each put over the object under its name.
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let truncated = good[..good.len() / 2].to_vec();
        for bad in [flipped, truncated] {
            put(&store, &name, &bad).await;
            let err = vault.read_segment(&name).await.expect_err("corrupt");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            assert!(err.to_string().contains(&name), "names the object: {err}");
        }

        // The right bytes under the name are accepted again.
        put(&store, &name, &good).await;
        assert_eq!(vault.read_segment(&name).await.expect("read"), original);
    }

    fn tables() -> Vec<TableSchema> {
        vec![TableSchema {
            name: "orders".into(),
            columns: vec!["id".into(), "tenant".into(), "total".into(), "note".into()],
            key: vec![0],
        }]
    }

    fn segment(source: &str, first: u64, last: u64) -> Segment {
        let change = |tenant: &str, op: Op, position: u64| Change {
            tenant: Some(TenantKey::new(tenant)),
            table: 0,
            op,
            old: (op != Op::Insert).then(|| {
                vec![
                    Value::Int(1),
                    Value::Text(tenant.into()),
                    Value::Null,
                    Value::Null,
                ]
            }),
            new: (op != Op::Delete).then(|| {
                vec![
                    Value::Int(1),
                    Value::Text(tenant.into()),
                    Value::Real(f64::NAN),
                    Value::Blob(vec![0, 255, 7]),
                ]
            }),
            position,
            time_us: Some(7),
        };
        Segment {
            source: source.into(),
            first,
            last,
            prev: first - 1,
            generation: 0,
            tables: tables(),
            transactions: vec![
                Transaction {
                    xid: 100,
                    position: first,
                    commit_time_us: 1_700_000_000_000_000,
                    changes: vec![
                        change("acme.io", Op::Insert, first),
                        change("42", Op::Insert, first),
                    ],
                },
                Transaction {
                    xid: 101,
                    position: last,
                    commit_time_us: 1_700_000_000_000_001,
                    changes: vec![
                        change("acme.io", Op::Update, last),
                        change("42", Op::Delete, last),
                        Change {
                            tenant: None,
                            table: 0,
                            op: Op::Truncate,
                            old: None,
                            new: None,
                            position: last,
                            time_us: None,
                        },
                    ],
                },
            ],
        }
    }

    fn base(source: &str, tenant: &TenantKey, position: u64) -> Base {
        Base {
            source: source.into(),
            tenant: tenant.clone(),
            position,
            commit_time_us: 1_700_000_000_000_000,
            tables: tables(),
            rows: vec![BaseRow {
                table: 0,
                values: vec![
                    Value::Int(1),
                    Value::Text(tenant.0.clone()),
                    Value::Real(-0.0),
                    Value::Text("ünï cödé".into()),
                ],
            }],
        }
    }

    fn checkpoint(source: &str, position: u64) -> Checkpoint {
        Checkpoint {
            source: source.into(),
            position,
            commit_time_us: 1_700_000_000_000_000,
            tables: tables(),
            keymaps: vec![KeymapIndex {
                table: "customers".into(),
                column: "id".into(),
                bits: 0,
                keys: 1,
                chunks: vec![KeymapChunkRef {
                    bucket: 0,
                    position: 9,
                    hash: "0123456789abcdef0123456789abcdef".into(),
                    keys: 1,
                }],
                listing: None,
                deltas: Vec::new(),
            }],
        }
    }

    /// The name of the checkpoint of source `s` at `position`.
    async fn again_name(vault: &Vault, position: u64) -> String {
        vault
            .list_checkpoints("s")
            .await
            .expect("list")
            .into_iter()
            .find(|c| c.position == position)
            .expect("checkpoint")
            .name
    }
}

// --- S3 only --------------------------------------------------------------------------------

/// Stores whose prefixes share a string prefix (`x/p`, `x/p2`) do not see each other's
/// objects, and a store at their parent sees both, under the right names.
#[tokio::test]
async fn s3_sibling_prefixes_are_separate() {
    let root = format!("lifeboat-tests/{}/siblings", run_id());
    let p = s3_at(&format!("{root}/p"));
    let p2 = s3_at(&format!("{root}/p2"));
    p.put("a/x", Bytes::from_static(b"p")).await.expect("put");
    p2.put("a/x", Bytes::from_static(b"p2")).await.expect("put");
    assert_eq!(p.list("").await.expect("list"), ["a/x"]);
    assert_eq!(p.list("a/").await.expect("list"), ["a/x"]);
    assert_eq!(p2.list("").await.expect("list"), ["a/x"]);
    assert_eq!(p.get("a/x").await.expect("get").as_deref(), Some(&b"p"[..]));
    assert_eq!(
        p2.get("a/x").await.expect("get").as_deref(),
        Some(&b"p2"[..])
    );
    let parent = s3_at(&root);
    assert_eq!(parent.list("").await.expect("list"), ["p/a/x", "p2/a/x"]);
    assert_eq!(parent.list("p/").await.expect("list"), ["p/a/x"]);
    assert_eq!(parent.list("p").await.expect("list"), ["p/a/x", "p2/a/x"]);
    // A prefix given with slashes around it is the same prefix.
    let slashed = s3_at(&format!("/{root}/p/"));
    assert_eq!(slashed.list("").await.expect("list"), ["a/x"]);
}

/// A vault URL whose S3 endpoint does not answer: `Vault::open` says the vault is
/// unreachable, naming it.
#[tokio::test]
async fn s3_unreachable_endpoint_is_reported() {
    s3_env(); // the credentials must come from the environment, not a metadata service
    let config: VaultConfig = toml::from_str(
        r#"
        url = "s3://lifeboat-test/unreachable"
        endpoint = "http://127.0.0.1:1"
        "#,
    )
    .expect("vault config");
    let store = Vault::store_for(&config).expect("store_for");
    let started = Instant::now();
    let err = Vault::open(store)
        .await
        .expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Vault, "{message}");
    assert!(message.contains("unreachable"), "{message}");
    assert!(
        message.contains("s3://lifeboat-test/unreachable"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?} to give up",
        started.elapsed()
    );
}

/// A real S3 server's answers, classified: a refused connection is transient (and, with
/// brief client retries, reported within seconds); a bucket that does not exist is
/// permanent, as is a store without a vault.
#[tokio::test]
async fn s3_errors_are_transient_only_when_retrying_can_help() {
    let (_, endpoint) = s3_env();
    let refused = S3Store::with_retries(
        "lifeboat-test",
        "refused",
        Some("http://127.0.0.1:1"),
        None,
        S3Retries::Brief,
    )
    .expect("store");
    let started = Instant::now();
    let err = refused
        .put("a", Bytes::from_static(b"x"))
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "brief retries took {:?}",
        started.elapsed()
    );
    let config: VaultConfig = toml::from_str(
        r#"
        url = "s3://lifeboat-test/refused"
        endpoint = "http://127.0.0.1:1"
        "#,
    )
    .expect("vault config");
    let err = Vault::open(Vault::store_for_retrying_caller(&config).expect("store"))
        .await
        .expect_err("unreachable");
    assert!(
        err.is_transient(),
        "the header read keeps the classification: {err}"
    );

    let missing_bucket = S3Store::with_retries(
        &format!("no-such-bucket-{}", std::process::id()),
        "x",
        Some(&endpoint),
        None,
        S3Retries::Brief,
    )
    .expect("store");
    let err = missing_bucket
        .put("a", Bytes::from_static(b"x"))
        .await
        .expect_err("no bucket");
    assert_eq!(err.kind(), ErrorKind::Vault, "{err}");
    assert!(!err.is_transient(), "a missing bucket stays missing: {err}");

    let empty = s3_at(&format!("lifeboat-tests/{}/no-vault", run_id()));
    let err = Vault::open(empty).await.expect_err("no vault there");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("lifeboat init"), "{err}");
}
