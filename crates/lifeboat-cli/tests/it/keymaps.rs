//! The `tenant_via` key maps in vault format 6: checkpoints refer to a key-map listing
//! of bucket chunks, shared until a fold, and to deltas; capture
//! keeps the maps in its local index and rebuilds it from the vault when it is missing,
//! names another vault, is behind the vault's latest checkpoint, or belongs to a capture
//! that lost the source to another machine. Every case ends with the vault's tenants equal
//! to the live ones (`verify`) and a clean `check --read-data`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::fixtures::*;

const TENANTS: i64 = 4;

/// `capture --until-caught-up --json` for the identity source: its statistics.
fn capture(config: &Path) -> serde_json::Value {
    let out = lifeboat_ok(config, &["capture", "--until-caught-up", "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    report
        .as_array()
        .and_then(|r| r.iter().find(|s| s["source"] == "identity").cloned())
        .unwrap_or_else(|| panic!("no identity: {out}"))
}

fn assert_clean(config: &Path) {
    let out = lifeboat_ok(config, &as_strs(&verify_args(1..=TENANTS)));
    assert!(out.starts_with("ok: 4 tenants"), "{out}");
    lifeboat_ok(config, &["check", "--read-data"]);
}

/// One round of changes to the identity source: a user moves to another tenant (its old
/// sessions gone first, a new one after), a user is deleted with its sessions, and a new
/// user arrives with a session.
fn change_round(identity: &Path, round: i64) {
    let conn = rusqlite::Connection::open(identity).expect("open identity");
    let moved = 100 + round % TENANTS * 100; // a user of tenant 1 + round % 4
    let to = 1 + (round + 1) % TENANTS;
    let gone = 101 + (round + 2) % TENANTS * 100;
    let fresh = 1000 + round;
    conn.execute_batch(&format!(
        "BEGIN;
         DELETE FROM sessions WHERE user_id = {moved};
         UPDATE users SET site_id = {to} WHERE id = {moved};
         INSERT INTO sessions (user_id, token) VALUES ({moved}, 'after move {round}');
         COMMIT;
         BEGIN;
         DELETE FROM sessions WHERE user_id = {gone};
         DELETE FROM memberships WHERE user_id = {gone};
         DELETE FROM users WHERE id = {gone};
         COMMIT;
         INSERT INTO users VALUES ({fresh}, {to}, 'new{round}@example.net', NULL, 0.5, NULL);
         INSERT INTO sessions (user_id, token) VALUES ({fresh}, 'first');"
    ))
    .expect("round");
}

/// A session for every user there is: attributed through the key maps as capture holds
/// them now.
fn session_for_everyone(identity: &Path, token: &str) {
    let conn = rusqlite::Connection::open(identity).expect("open identity");
    conn.execute(
        "INSERT INTO sessions (user_id, token) SELECT id, ?1 FROM users",
        [token],
    )
    .expect("sessions");
}

fn users(identity: &Path) -> i64 {
    let conn = rusqlite::Connection::open(identity).expect("open identity");
    conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count users")
}

fn keymap_chunks(work: &Workdir) -> BTreeSet<PathBuf> {
    let dir = work.path("vault/sources/identity/keymaps");
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default()
}

/// The key-map objects written since `before`: (chunks, deltas, their bytes); listings
/// are counted by `listings_since`.
fn written_since(work: &Workdir, before: &BTreeSet<PathBuf>) -> (usize, usize, u64) {
    let mut out = (0, 0, 0);
    for path in keymap_chunks(work).difference(before) {
        match path.extension().and_then(|e| e.to_str()) {
            Some("kmap") => out.0 += 1,
            Some("kmd") => out.1 += 1,
            Some("kml") => continue,
            other => panic!("unexpected key-map object {other:?}: {}", path.display()),
        }
        out.2 += std::fs::metadata(path).expect("stat").len();
    }
    out
}

/// The key-map listings written since `before`.
fn listings_since(work: &Workdir, before: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    keymap_chunks(work)
        .difference(before)
        .filter(|p| p.extension().is_some_and(|e| e == "kml"))
        .cloned()
        .collect()
}

/// The checkpoint objects, each with its size.
fn checkpoint_files(work: &Workdir) -> BTreeSet<(PathBuf, u64)> {
    std::fs::read_dir(work.path("vault/sources/identity/checkpoints"))
        .expect("checkpoints")
        .map(|e| {
            let path = e.expect("entry").path();
            let size = std::fs::metadata(&path).expect("stat").len();
            (path, size)
        })
        .collect()
}

/// The size of the one checkpoint written since `before`.
fn new_checkpoint_size(work: &Workdir, before: &BTreeSet<(PathBuf, u64)>) -> u64 {
    let new: Vec<u64> = checkpoint_files(work)
        .difference(before)
        .map(|(_, size)| *size)
        .collect();
    assert_eq!(new.len(), 1, "one checkpoint written");
    new[0]
}

/// Users `ids`, spread over the tenants, each with a session.
fn add_users(identity: &Path, ids: std::ops::Range<i64>) {
    let mut conn = rusqlite::Connection::open(identity).expect("open identity");
    let tx = conn.transaction().expect("begin");
    for id in ids {
        tx.execute(
            "INSERT INTO users (id, site_id, email) VALUES (?1, ?2, 'many@example.net')",
            rusqlite::params![id, site_id(1 + id % TENANTS)],
        )
        .expect("user");
        tx.execute(
            "INSERT INTO sessions (user_id, token) VALUES (?1, 'many')",
            [id],
        )
        .expect("session");
    }
    tx.commit().expect("commit");
}

/// Users `ids` move to tenant `to`, each with a new session there.
fn move_users(identity: &Path, ids: std::ops::Range<i64>, to: i64) {
    let conn = rusqlite::Connection::open(identity).expect("open identity");
    conn.execute_batch(&format!(
        "BEGIN;
         DELETE FROM sessions WHERE user_id >= {start} AND user_id < {end};
         UPDATE users SET site_id = {to} WHERE id >= {start} AND id < {end};
         INSERT INTO sessions (user_id, token)
           SELECT id, 'moved' FROM users WHERE id >= {start} AND id < {end};
         COMMIT;",
        start = ids.start,
        end = ids.end,
        to = site_id(to)
    ))
    .expect("move");
}

fn checkpoints(work: &Workdir) -> usize {
    std::fs::read_dir(work.path("vault/sources/identity/checkpoints"))
        .expect("checkpoints")
        .count()
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "redb"))
                .collect()
        })
        .unwrap_or_default()
}

/// `path`'s object name in the test's file vault.
fn vault_name(work: &Workdir, path: &Path) -> String {
    path.strip_prefix(work.path("vault"))
        .expect("in the vault")
        .display()
        .to_string()
}

/// Flip a bit of `path`'s last byte; returns its good bytes, to put back.
fn damage(path: &Path) -> Vec<u8> {
    let good = std::fs::read(path).expect("object");
    let mut bad = good.clone();
    *bad.last_mut().expect("bytes") ^= 0x20;
    std::fs::write(path, &bad).expect("damage");
    good
}

/// `lifeboat ARGS` (a `check`) exits 1 with a problem line naming `name` and `what`.
fn assert_check_names(config: &Path, args: &[&str], name: &str, what: &str) {
    let output = lifeboat(config, args);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output)
            .lines()
            .any(|l| l.starts_with("problem: ") && l.contains(name) && l.contains(what)),
        "{args:?}: {}",
        stdout(&output)
    );
}

/// Capture fails, naming `name`; its stderr is returned.
fn assert_capture_refuses(config: &Path, name: &str) -> String {
    let output = lifeboat(config, &["capture", "--until-caught-up"]);
    assert_ne!(output.status.code(), Some(0));
    let err = stderr(&output);
    assert!(err.contains(name), "{err}");
    err
}

#[test]
fn key_maps_follow_moves_and_deletes_across_checkpoints_and_a_prune() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    let first = capture(&config);
    assert_eq!(first["keymap_index"], "new", "{first}");
    let index = index_files(&work.path("lifeboat-state"));
    assert_eq!(index.len(), 1, "one index beside the configuration");

    let mut keep_since = String::new();
    for round in 0..6 {
        change_round(&identity, round);
        let stats = capture(&config);
        assert_eq!(stats["keymap_index"], "resumed", "{stats}");
        if round == 2 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            keep_since = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // The index holds one key per user there is.
    let stats = capture(&config);
    assert_eq!(stats["keymap_keys"], users(&identity), "{stats}");
    assert!(checkpoints(&work) >= 7);
    session_for_everyone(&identity, "late");
    capture(&config);
    assert_clean(&config);

    // A prune drops the checkpoints before keep-since and the chunks only they used; what
    // stays is exactly what the kept checkpoints refer to, and history still reads.
    let before = keymap_chunks(&work);
    let out = lifeboat_ok(&config, &["prune", "--keep-since", &keep_since, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("prune JSON");
    let source = report["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["source"] == "identity").cloned())
        .expect("identity pruned");
    let deleted = source["keymaps_deleted"]["objects"]
        .as_u64()
        .expect("count");
    assert!(deleted > 0, "{report}");
    let after = keymap_chunks(&work);
    assert_eq!(after.len() as u64 + deleted, before.len() as u64);
    assert!(after.is_subset(&before));
    assert_clean(&config);
    // Capture resumes after the prune from its index, and the moved users' new sessions
    // still find their tenants.
    change_round(&identity, 6);
    session_for_everyone(&identity, "after prune");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "resumed", "{stats}");
    assert_clean(&config);
}

/// A map of 20,000 parent keys in 8 buckets: a handful of new parents cost one delta of
/// a few hundred bytes, not their buckets' chunks; moves and removals go to deltas over
/// several checkpoints, until more than an eighth of the keys changed and the map folds;
/// restore (`verify`, row for row), resume and a rebuild from the chunks and deltas keep
/// every child with its tenant.
#[test]
fn new_parent_keys_cost_a_delta_and_deltas_fold_past_a_bound() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    add_users(&identity, 10_000..30_000);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    assert_eq!(capture(&config)["keymap_index"], "new");
    let first = keymap_chunks(&work);
    let chunk_sizes: Vec<u64> = first
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "kmap"))
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .collect();
    assert_eq!(chunk_sizes.len(), 8, "20,000 keys: 8 buckets, no delta");
    assert_eq!(first.len(), 9, "and one listing of them: {first:?}");
    let first_listing = listings_since(&work, &BTreeSet::new());
    assert_eq!(first_listing.len(), 1);
    let smallest = *chunk_sizes.iter().min().expect("chunks");

    // Six new parents, each with a child, at buckets of their own.
    let checkpoints_before = checkpoint_files(&work);
    add_users(&identity, 40_000..40_006);
    assert_eq!(capture(&config)["keymap_index"], "resumed");
    let (chunks, deltas, bytes) = written_since(&work, &first);
    assert_eq!((chunks, deltas), (0, 1), "one delta, no chunk");
    assert!(listings_since(&work, &first).is_empty(), "no new listing");
    let mut checkpoint_size = new_checkpoint_size(&work, &checkpoints_before);
    assert!(
        bytes < 300 && bytes * 20 < smallest,
        "six new keys wrote {bytes} B of key maps; a chunk is {smallest} B or more"
    );
    assert_clean(&config);

    // Moves and removals (tombstones) over several checkpoints: one delta each, the
    // listing shared; each checkpoint object grows by one delta's reference at most, not
    // by a listing of the buckets.
    for round in 0..3 {
        let before = keymap_chunks(&work);
        let checkpoints_before = checkpoint_files(&work);
        change_round(&identity, round);
        assert_eq!(capture(&config)["keymap_index"], "resumed");
        let (chunks, deltas, bytes) = written_since(&work, &before);
        assert_eq!((chunks, deltas), (0, 1), "round {round}");
        assert!(bytes < 300, "round {round}: {bytes} B");
        assert!(listings_since(&work, &before).is_empty(), "round {round}");
        let size = new_checkpoint_size(&work, &checkpoints_before);
        assert!(
            size <= checkpoint_size + 64,
            "round {round}: a checkpoint of {size} B after one of {checkpoint_size} B"
        );
        checkpoint_size = size;
    }
    assert_clean(&config);

    // 1,500 users move (1,125 change tenant): a delta still; 2,500 more: past an eighth
    // of the keys, a fold
    // writes the buckets again and no delta.
    let before = keymap_chunks(&work);
    move_users(&identity, 10_000..11_500, 2);
    capture(&config);
    assert_eq!(written_since(&work, &before).0, 0);
    assert_eq!(written_since(&work, &before).1, 1);
    let before = keymap_chunks(&work);
    move_users(&identity, 11_500..14_000, 3);
    capture(&config);
    let (chunks, deltas, _) = written_since(&work, &before);
    assert_eq!((chunks, deltas), (8, 0), "a fold");
    let fold_listing = listings_since(&work, &before);
    assert_eq!(fold_listing.len(), 1, "a fold's listing");
    assert_clean(&config);

    // A delta after the fold, then the index is rebuilt from chunks and deltas: it holds
    // every user (`keymap_keys` counts the index as capture resumes), and the children
    // written after attribute right.
    change_round(&identity, 3);
    capture(&config);
    std::fs::remove_dir_all(work.path("lifeboat-state")).expect("remove index");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_eq!(stats["keymap_keys"], users(&identity), "{stats}");
    change_round(&identity, 4);
    move_users(&identity, 20_000..20_010, 1);
    session_for_everyone(&identity, "after the rebuild");
    assert_eq!(capture(&config)["keymap_index"], "resumed");
    assert_clean(&config);
    let stats = capture(&config);
    assert_eq!(stats["keymap_keys"], users(&identity), "{stats}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let keep_since = lifeboat_core::time::format_us(lifeboat_core::time::now_us());
    std::thread::sleep(std::time::Duration::from_millis(20));
    change_round(&identity, 5);
    assert_eq!(capture(&config)["keymap_index"], "resumed");
    assert_clean(&config);

    // A prune keeps the chunks and the deltas (written before its horizon) that the kept
    // checkpoints refer to: an index rebuilt afterwards still holds every user.
    let before = keymap_chunks(&work);
    lifeboat_ok(&config, &["prune", "--keep-since", &keep_since]);
    let after = keymap_chunks(&work);
    assert!(
        after.len() < before.len(),
        "the prune deleted key-map objects"
    );
    assert!(after
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "kmd")));
    // The fold's listing, below the horizon but still what the kept checkpoints refer
    // to, stays; the first one, which only pruned checkpoints referred to, is gone.
    assert!(after.contains(&fold_listing[0]), "{after:?}");
    assert!(!after.contains(&first_listing[0]), "{after:?}");
    assert!(before.contains(&first_listing[0]));
    assert_clean(&config);
    std::fs::remove_dir_all(work.path("lifeboat-state")).expect("remove index");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_eq!(stats["keymap_keys"], users(&identity), "{stats}");

    // A damaged delta: `check --read-data` names it, capture rebuilding refuses and names
    // it, and once it is put back capture rebuilds and goes on.
    let delta = keymap_chunks(&work)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "kmd"))
        .max()
        .expect("a delta");
    let name = vault_name(&work, &delta);
    let good = damage(&delta);
    assert_check_names(&config, &["check", "--read-data"], &name, "checksum");
    std::fs::remove_dir_all(work.path("lifeboat-state")).expect("remove index");
    assert_capture_refuses(&config, &name);
    std::fs::write(&delta, good).expect("put back");
    assert_eq!(capture(&config)["keymap_index"], "rebuilt");
    assert_clean(&config);
}

#[test]
fn a_missing_stale_or_foreign_index_is_rebuilt_from_the_vault() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    capture(&config);
    change_round(&identity, 0);
    capture(&config);
    let state = work.path("lifeboat-state");
    let index = index_files(&state).pop().expect("index");

    // Deleted between runs: rebuilt, and what it says is right.
    std::fs::remove_dir_all(&state).expect("remove index");
    change_round(&identity, 1);
    session_for_everyone(&identity, "after removal");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_eq!(stats["keymap_keys"], users(&identity), "{stats}");
    assert_clean(&config);

    // Behind the vault's latest checkpoint (an older copy put back): rebuilt.
    let older = std::fs::read(&index).expect("read index");
    change_round(&identity, 2);
    capture(&config);
    std::fs::write(&index, older).expect("put the older index back");
    change_round(&identity, 3);
    session_for_everyone(&identity, "after a stale index");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_clean(&config);

    // Another vault's index under this one's name: rebuilt.
    let other = Workdir::new();
    let other_identity = other.path("identity.db");
    setup_identity(&other_identity, 2);
    let other_config = other.init_config(&config_text(
        &other.vault_url(),
        None,
        None,
        Some(&other_identity),
    ));
    capture(&other_config);
    let foreign = index_files(&other.path("lifeboat-state"))
        .pop()
        .expect("index");
    std::fs::copy(&foreign, &index).expect("foreign index");
    session_for_everyone(&identity, "after a foreign index");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_clean(&config);
    // And it is used from then on.
    assert_eq!(capture(&config)["keymap_index"], "resumed");
}

#[test]
fn a_standby_with_an_empty_index_takes_over_and_the_old_leader_rebuilds() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let text = config_text(&work.vault_url(), None, None, Some(&identity));
    let config = work.init_config(&text);
    capture(&config);
    change_round(&identity, 0);
    capture(&config);

    // Another machine: the same vault and control store, its own state directory.
    let machine_b = work.path("machine-b.toml");
    let state_b = work.path("state-b");
    std::fs::write(
        &machine_b,
        text.replacen(
            "[capture]\n",
            &format!("[capture]\nstate_dir = \"{}\"\n", state_b.display()),
            1,
        ),
    )
    .expect("config b");
    change_round(&identity, 1);
    session_for_everyone(&identity, "on b");
    let stats = capture(&machine_b);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_eq!(index_files(&state_b).len(), 1);
    change_round(&identity, 2);
    assert_eq!(capture(&machine_b)["keymap_index"], "resumed");
    assert_clean(&config);

    // The first machine again: its index names a checkpoint the vault has moved past.
    change_round(&identity, 3);
    session_for_everyone(&identity, "back on a");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_clean(&config);
}

#[test]
fn a_missing_or_damaged_key_map_chunk_is_named_by_check_and_refused_by_capture() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    capture(&config);
    change_round(&identity, 0);
    capture(&config);
    let chunk = keymap_chunks(&work)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "kml"))
        .max()
        .expect("a key-map chunk");
    let name = vault_name(&work, &chunk);

    // Damaged: `check --read-data` names it; capture, rebuilding its index, refuses to
    // go on and names it; readers of history do not need it.
    let good = damage(&chunk);
    assert_check_names(&config, &["check", "--read-data"], &name, "checksum");
    std::fs::remove_dir_all(work.path("lifeboat-state")).expect("remove index");
    assert_capture_refuses(&config, &name);
    let out = lifeboat_ok(&config, &as_strs(&verify_args(1..=TENANTS)));
    assert!(out.starts_with("ok: 4 tenants"), "{out}");

    // Missing: every `check` names it, and capture refuses again.
    std::fs::remove_file(&chunk).expect("remove chunk");
    let output = lifeboat(&config, &["check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains(&name), "{}", stdout(&output));
    let err = assert_capture_refuses(&config, &name);
    assert!(err.contains("missing"), "{err}");

    // Put back: capture rebuilds and goes on.
    std::fs::write(&chunk, good).expect("put back");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_clean(&config);
}

/// A damaged or missing key-map listing: every `check` names it (a listing is read to know
/// the chunks it names), capture rebuilding its index refuses and names it, readers of
/// history do not need it; put back, capture rebuilds and goes on.
#[test]
fn a_missing_or_damaged_key_map_listing_is_named_by_check_and_refused_by_capture() {
    let work = Workdir::new();
    let identity = work.path("identity.db");
    setup_identity(&identity, TENANTS);
    // Enough users that a round of changes goes to a delta, not a fold.
    add_users(&identity, 10_000..12_000);
    let config = work.init_config(&config_text(&work.vault_url(), None, None, Some(&identity)));
    capture(&config);
    change_round(&identity, 0);
    capture(&config);
    // The newest listing: the latest checkpoint refers to it.
    let listing = &listings_since(&work, &BTreeSet::new())
        .into_iter()
        .max()
        .expect("a listing");
    let name = vault_name(&work, listing);

    let good = damage(listing);
    for args in [&["check"][..], &["check", "--read-data"]] {
        assert_check_names(&config, args, &name, "checksum");
    }
    // Capture with its index resumes without reading the listing; without it, it refuses.
    change_round(&identity, 1);
    assert_eq!(capture(&config)["keymap_index"], "resumed");
    std::fs::remove_dir_all(work.path("lifeboat-state")).expect("remove index");
    let err = assert_capture_refuses(&config, &name);
    assert!(err.contains("rebuild"), "{err}");
    let out = lifeboat_ok(&config, &as_strs(&verify_args(1..=TENANTS)));
    assert!(out.starts_with("ok: 4 tenants"), "{out}");

    // Missing: `check` names it, capture refuses again.
    std::fs::remove_file(listing).expect("remove listing");
    assert_check_names(&config, &["check"], &name, "missing");
    assert_capture_refuses(&config, &name);

    std::fs::write(listing, good).expect("put back");
    let stats = capture(&config);
    assert_eq!(stats["keymap_index"], "rebuilt", "{stats}");
    assert_clean(&config);
}
