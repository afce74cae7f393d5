//! What capture installs in a source database, and which vault it feeds
//! (docs/vault-format.md, "A source's vault"). Both kinds record the vault's id with what
//! they install; `claim` is the one decision, for both, of whether a capture may use it.

use lifeboat_core::{Error, Result};
use serde::Serialize;

/// What capture installed in one source database, as `lifeboat source drop` lists it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Installed {
    /// The vault the source feeds, as recorded in the database (`None`: no record).
    pub vault_id: Option<String>,
    /// Every object, described for people (`replication slot lifeboat_x_y (…)`), in the
    /// order they are removed.
    pub objects: Vec<String>,
    /// What uses the installation now (a capture streaming from the slot): a drop is
    /// refused while it does.
    pub in_use: Option<String>,
}

impl Installed {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// What capture found in the source when it started, before changing anything.
pub(crate) struct Found<'a> {
    /// The source's configured name.
    pub source: &'a str,
    /// What holds the source's changes: `replication slot X on URL`, `changelog of FILE`.
    pub holder: String,
    /// The vault id recorded in the source, if any.
    pub recorded: Option<String>,
    /// Whether the slot (PostgreSQL) or changelog (SQLite) exists.
    pub exists: bool,
    /// When it exists without a record: whether the source's own position agrees with the
    /// vault's history (every change after the vault's head still held), and what it says.
    pub agrees: Option<(bool, String)>,
}

/// What capture does with what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Recorded for this vault, or nothing installed yet: go on (and record).
    Own,
    /// Installed before records were kept, and it agrees with this vault's head: record
    /// this vault and go on.
    Adopt,
}

/// Decide whether a capture into the vault `vault_id` (holding history of the source up to
/// `head`, or none) may use what it `found`; the error says whose it is and what to do.
pub(crate) fn claim(found: &Found<'_>, vault_id: &str, head: Option<u64>) -> Result<Claim> {
    let source = found.source;
    let holder = &found.holder;
    match (&found.recorded, found.exists, head) {
        (Some(other), _, _) if other != vault_id => Err(Error::config(format!(
            "{holder} feeds vault {other}, not this vault ({vault_id}): capture changed \
             nothing. Point [vault] url at vault {other}, or run `lifeboat source drop \
             {source}` (with the configuration of vault {other}) to release the source and \
             capture it into this vault"
        ))),
        (Some(_), _, _) => Ok(Claim::Own),
        (None, false, _) => Ok(Claim::Own),
        (None, true, None) => Err(Error::config(format!(
            "{holder} exists but records no vault (it was installed by an earlier Lifeboat \
             or by hand), and this vault ({vault_id}) has no history of source {source}: \
             capture changed nothing. If no other vault uses it, run `lifeboat source drop \
             {source}` first"
        ))),
        (None, true, Some(_)) => match &found.agrees {
            Some((true, _)) => Ok(Claim::Adopt),
            other => {
                let why = other
                    .as_ref()
                    .map(|(_, why)| why.as_str())
                    .unwrap_or("its position is unknown");
                Err(Error::config(format!(
                    "{holder} records no vault and does not continue this vault's ({vault_id}) \
                     history of source {source} ({why}): it feeds another vault. Capture \
                     changed nothing. Point [vault] url at the vault it feeds, or run \
                     `lifeboat source drop {source}` and capture it into a new vault"
                )))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(recorded: Option<&str>, exists: bool, agrees: Option<bool>) -> Found<'static> {
        Found {
            source: "tracker",
            holder: "replication slot lifeboat_tracker_db".into(),
            recorded: recorded.map(str::to_string),
            exists,
            agrees: agrees.map(|a| (a, "why".to_string())),
        }
    }

    #[test]
    fn another_vaults_record_is_refused_whatever_the_history() {
        for head in [None, Some(10)] {
            let e = claim(&found(Some("aaaa"), true, None), "bbbb", head).expect_err("refused");
            assert!(e.message().contains("feeds vault aaaa"), "{e}");
            assert!(e.message().contains("lifeboat source drop tracker"), "{e}");
            assert!(claim(&found(Some("aaaa"), false, None), "bbbb", head).is_err());
        }
    }

    #[test]
    fn own_record_and_empty_sources_go_on() {
        assert_eq!(
            claim(&found(Some("bbbb"), true, None), "bbbb", None).ok(),
            Some(Claim::Own)
        );
        assert_eq!(
            claim(&found(None, false, None), "bbbb", None).ok(),
            Some(Claim::Own)
        );
    }

    #[test]
    fn unrecorded_installations_are_adopted_only_when_they_agree() {
        let e = claim(&found(None, true, None), "bbbb", None).expect_err("no history");
        assert!(e.message().contains("records no vault"), "{e}");
        assert_eq!(
            claim(&found(None, true, Some(true)), "bbbb", Some(5)).ok(),
            Some(Claim::Adopt)
        );
        let e = claim(&found(None, true, Some(false)), "bbbb", Some(5)).expect_err("disagrees");
        assert!(e.message().contains("(why)"), "{e}");
    }
}
