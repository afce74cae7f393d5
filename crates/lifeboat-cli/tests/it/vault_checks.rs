//! Assertions about what the vault holds, read through lifeboat-core.

use std::collections::BTreeSet;
use std::path::Path;

use lifeboat_core::config::Config;
use lifeboat_core::state::SourceHistory;
use lifeboat_core::vault::Vault;

pub async fn open(config: &Path) -> Vault {
    let config = Config::load(config).expect("config");
    Vault::open(Vault::store_for(&config.vault).expect("store"))
        .await
        .expect("vault")
}

/// Every transaction is stored once: positions strictly increase across all segments.
pub async fn assert_no_duplicates(config: &Path, source: &str) -> usize {
    let vault = open(config).await;
    let history = SourceHistory::load(&vault, source).await.expect("history");
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for segment in &history.segments {
        let segment = vault.read_segment(&segment.name).await.expect("segment");
        for tx in &segment.transactions {
            assert!(
                seen.insert(tx.position),
                "{source}: transaction at position {} stored twice",
                tx.position
            );
            count += 1;
        }
    }
    count
}

pub async fn base_count(config: &Path, source: &str) -> usize {
    let vault = open(config).await;
    let history = SourceHistory::load(&vault, source).await.expect("history");
    history.bases.values().map(Vec::len).sum()
}

/// Wait until capture has written the first checkpoint of every source in `sources` (its
/// initial snapshot is history from then on), however loaded the machine is.
pub async fn wait_for_first_checkpoints(config: &Path, sources: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let vault = loop {
        // The vault exists once capture has checked every source.
        if let Ok(config) = Config::load(config) {
            if let Ok(vault) = Vault::open(Vault::store_for(&config.vault).expect("store")).await {
                break vault;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "capture created no vault"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for source in sources {
        while vault
            .list_checkpoints(source)
            .await
            .expect("list checkpoints")
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "capture of {source} wrote no checkpoint within 180 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
