//! The people the guard knows (docs/guard.md, "People"): `[authors]` may write plans,
//! `[approvers]` may approve them, each declared with an OpenSSH public key. A name is who
//! a key is; nothing a person types names them.

use std::fmt;

use serde::{Deserialize, Serialize};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use crate::config::Config;
use crate::error::{Error, Result};

/// What a person signs a plan as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Author,
    Approver,
}

impl Role {
    /// The configuration table that declares this role.
    pub fn table(self) -> &'static str {
        match self {
            Role::Author => "[authors]",
            Role::Approver => "[approvers]",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Author => "author",
            Role::Approver => "approver",
        })
    }
}

/// A key's SHA-256 fingerprint, as `ssh-keygen -l` shows it (`SHA256:…`).
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// An OpenSSH public key line (`ssh-ed25519 AAAA… comment`); the reason when it is not
/// one Lifeboat verifies.
pub fn parse_key(text: &str) -> std::result::Result<PublicKey, String> {
    let key = PublicKey::from_openssh(text.trim())
        .map_err(|e| format!("not an OpenSSH public key ({e})"))?;
    if !key.key_data().is_ed25519() {
        return Err(format!(
            "a {} key; Lifeboat verifies ssh-ed25519 keys (ssh-keygen -t ed25519)",
            key.algorithm()
        ));
    }
    Ok(key)
}

impl Config {
    fn people(&self, role: Role) -> &std::collections::BTreeMap<String, String> {
        match role {
            Role::Author => &self.authors,
            Role::Approver => &self.approvers,
        }
    }

    /// The key declared for `name` in `role`'s table.
    pub fn person_key(&self, role: Role, name: &str) -> Option<KeyData> {
        let text = self.people(role).get(name)?;
        parse_key(text).ok().map(|k| k.key_data().clone())
    }

    /// Who `key` is declared for in `role`'s table.
    pub fn person_with_key(&self, role: Role, key: &KeyData) -> Option<&str> {
        self.people(role)
            .iter()
            .find(|(_, text)| parse_key(text).is_ok_and(|k| k.key_data() == key))
            .map(|(name, _)| name.as_str())
    }

    /// Who `key` is declared for, in either table.
    pub fn anyone_with_key(&self, key: &KeyData) -> Option<&str> {
        self.person_with_key(Role::Approver, key)
            .or_else(|| self.person_with_key(Role::Author, key))
    }
}

/// Every key parses and is one Lifeboat verifies; names are plain words; one key belongs to
/// one person (a person may be both an author and an approver, with one key).
pub(crate) fn validate(config: &Config) -> Result<()> {
    let mut owners: Vec<(KeyData, &str)> = Vec::new();
    for role in [Role::Author, Role::Approver] {
        for (name, text) in config.people(role) {
            let at = format!("{} {name}", role.table());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(Error::config(format!(
                    "{at}: use letters, digits, '_', '-' and '.' in names"
                )));
            }
            let key =
                parse_key(text).map_err(|why| Error::config(format!("{at}: key is {why}")))?;
            let data = key.key_data().clone();
            match owners.iter().find(|(k, _)| *k == data) {
                Some((_, owner)) if *owner != name => {
                    return Err(Error::config(format!(
                        "{at}: key {} is also declared for {owner}: every person needs a key \
                         of their own",
                        fingerprint(&data)
                    )))
                }
                Some(_) => {}
                None => owners.push((data, name)),
            }
        }
    }
    for name in config.people(Role::Approver).keys() {
        if let (Some(a), Some(b)) = (
            config.person_key(Role::Author, name),
            config.person_key(Role::Approver, name),
        ) {
            if a != b {
                return Err(Error::config(format!(
                    "[approvers] {name}: {name} is declared in [authors] with another key: \
                     declare one key per person"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICmpHuYgGXmrm5TdacA5dWayUg5KZAeb/GYcsGQ48CFN alice";
    const BOB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILOxe8jxEyDikS/N6OzfJhu8Jecw4vpEMmrOyW3ZcCKK bob";

    fn config(people: &str) -> Result<Config> {
        Config::parse(&format!("[vault]\nurl = \"file:///v\"\n{people}"))
    }

    #[test]
    fn people_are_found_by_name_and_by_key() {
        let c = config(&format!(
            "[authors]\nalice = \"{ALICE}\"\n[approvers]\nalice = \"{ALICE}\"\nbob = \"{BOB}\"\n"
        ))
        .expect("valid");
        let bob = parse_key(BOB).expect("key").key_data().clone();
        assert_eq!(c.person_with_key(Role::Approver, &bob), Some("bob"));
        assert_eq!(c.person_with_key(Role::Author, &bob), None);
        assert_eq!(c.person_key(Role::Approver, "bob"), Some(bob));
        assert!(c.person_key(Role::Author, "bob").is_none());
        assert!(
            fingerprint(c.person_key(Role::Author, "alice").as_ref().expect("alice"))
                .starts_with("SHA256:")
        );
    }

    #[test]
    fn a_bad_key_a_shared_key_or_a_bad_name_is_a_config_error_naming_the_person() {
        let cases = [
            (
                "[approvers]\nbob = \"ssh-ed25519 AAAAnotbase64!\"\n".to_string(),
                "[approvers] bob: key is not an OpenSSH public key",
            ),
            (
                "[authors]\ncarol = \"hello\"\n".to_string(),
                "[authors] carol: key is not an OpenSSH public key",
            ),
            (
                format!("[approvers]\nbob = \"{BOB}\"\ncarol = \"{BOB}\"\n"),
                "is also declared for bob",
            ),
            (
                format!("[authors]\nbob = \"{ALICE}\"\n[approvers]\nbob = \"{BOB}\"\n"),
                "declared in [authors] with another key",
            ),
            (
                format!("[approvers]\n\"bob smith\" = \"{BOB}\"\n"),
                "[approvers] bob smith: use letters",
            ),
        ];
        for (text, needle) in cases {
            let err = config(&text).expect_err(&text).to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }
}
