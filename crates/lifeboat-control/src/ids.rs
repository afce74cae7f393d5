//! Random identifiers: Statuspage-style ids for incidents, updates, components and
//! campaigns, and the unguessable tokens of tenants' private pages.

use lifeboat_core::{Error, Result};

/// A Statuspage-style identifier: 12 characters of `[a-z0-9]`, random.
pub fn new_id() -> Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| Error::source(format!("no randomness: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// An unguessable link token: 256 random bits, hex.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::source(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}
