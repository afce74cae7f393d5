//! Plans signed with SSH keys (docs/guard.md, "Signatures"): the author signs the plan they
//! write, approvers sign the plan they approve, each with an OpenSSH private key whose
//! public half the configuration declares for them (`[authors]`, `[approvers]`). A
//! signature is in the SSH signature format (`ssh-keygen -Y sign`, PROTOCOL.sshsig) over the
//! plan's hash, in the namespace `NAMESPACE`; one made by `ssh-keygen` is as good as one
//! made by Lifeboat. Nothing trusts a signature it has not verified against the key the
//! configuration declares for the name it carries.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

use lifeboat_core::config::Config;
use lifeboat_core::people::{fingerprint, Role};
use lifeboat_core::{Error, Result};

/// The SSH signature namespace of a plan signature: a signature made for anything else (a
/// git commit, a file) never counts for a plan.
pub const NAMESPACE: &str = "lifeboat-plan@lifeboat";

/// What is signed: the plan's hash, as its 64 lowercase hex characters (no newline).
pub fn message(hash: &str) -> &[u8] {
    hash.as_bytes()
}

/// One signature, as the plan file and the control store keep it: who it says signed, as
/// what, and the armored SSH signature (`-----BEGIN SSH SIGNATURE-----`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub role: Role,
    pub name: String,
    pub signature: String,
}

/// A private key, and who the configuration says it is.
pub struct Signer {
    pub name: String,
    pub role: Role,
    key: PrivateKey,
}

impl Signer {
    /// The key at `path`, which must be declared for someone in `role`'s table.
    pub fn open(config: &Config, role: Role, path: &Path) -> Result<Signer> {
        let key = read_private_key(path)?;
        let data = key.public_key().key_data();
        let print = fingerprint(data);
        let Some(name) = config.person_with_key(role, data) else {
            let other = match config.anyone_with_key(data) {
                Some(owner) => format!(" (it is {owner}'s, who is not in {})", role.table()),
                None => String::new(),
            };
            return Err(Error::usage(format!(
                "key {print} ({}) is declared for no one in {}{other}: only a declared {role} \
                 can sign as one",
                path.display(),
                role.table()
            )));
        };
        Ok(Signer {
            name: name.to_string(),
            role,
            key,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.key.public_key().key_data())
    }

    /// Sign the plan whose hash is `hash`.
    pub fn sign(&self, hash: &str) -> Result<Signed> {
        let signature = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, message(hash))
            .and_then(|s| s.to_pem(LineEnding::LF))
            .map_err(|e| Error::usage(format!("cannot sign with {}'s key: {e}", self.name)))?;
        Ok(Signed {
            role: self.role,
            name: self.name.clone(),
            signature,
        })
    }
}

/// An unencrypted OpenSSH private key; a clear refusal for anything else.
fn read_private_key(path: &Path) -> Result<PrivateKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read key {}: {e}", path.display())))?;
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| {
        Error::usage(format!(
            "{} is not an OpenSSH private key ({e}); --key takes the private key file that \
             ssh-keygen wrote (e.g. ~/.ssh/id_ed25519), not the .pub",
            path.display()
        ))
    })?;
    if key.is_encrypted() {
        return Err(Error::usage(format!(
            "key {} is protected by a passphrase, which lifeboat does not ask for: sign with \
             `ssh-keygen -Y sign -n {NAMESPACE} -f {}` (it asks, or uses ssh-agent) and pass \
             the signature with --signature FILE",
            path.display(),
            path.display()
        )));
    }
    if !key.public_key().key_data().is_ed25519() {
        return Err(Error::usage(format!(
            "key {} is a {} key; Lifeboat signs with ssh-ed25519 keys (ssh-keygen -t ed25519)",
            path.display(),
            key.algorithm()
        )));
    }
    Ok(key)
}

/// An armored SSH signature; the reason when it is not one.
pub fn parse(text: &str) -> std::result::Result<SshSig, String> {
    SshSig::from_pem(text.trim()).map_err(|e| format!("not an SSH signature ({e})"))
}

/// One signature, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub role: Role,
    pub name: String,
    /// The fingerprint of the key that made it, when it parses.
    pub key: Option<String>,
    /// Why it does not count; `None`: valid.
    pub problem: Option<String>,
}

/// Check `signed` against the plan whose hash is `hash` and author `author`: it parses, is
/// in the plan namespace, was made with the key the configuration declares for its name in
/// its role's table, verifies over the hash, and (an approval) is not the author's.
pub fn check(config: &Config, hash: &str, author: &str, signed: &Signed) -> Checked {
    let mut checked = Checked {
        role: signed.role,
        name: signed.name.clone(),
        key: None,
        problem: None,
    };
    checked.problem = problem(config, hash, author, signed, &mut checked.key).err();
    checked
}

fn problem(
    config: &Config,
    hash: &str,
    author: &str,
    signed: &Signed,
    key: &mut Option<String>,
) -> std::result::Result<(), String> {
    let sig = parse(&signed.signature)?;
    let made_with = sig.public_key();
    *key = Some(fingerprint(made_with));
    let name = &signed.name;
    if sig.namespace() != NAMESPACE {
        return Err(format!(
            "made for namespace {:?}, not {NAMESPACE:?}: it is not a plan signature",
            sig.namespace()
        ));
    }
    let role = signed.role;
    if role == Role::Author && name != author {
        return Err(format!(
            "signed as the author, but the plan's author is {author}"
        ));
    }
    let Some(declared) = config.person_key(role, name) else {
        return Err(format!("{name} is not declared in {}", role.table()));
    };
    if *made_with != declared {
        let owner = match config.anyone_with_key(made_with) {
            Some(owner) => format!("it is {owner}'s"),
            None => "it is declared for no one".to_string(),
        };
        return Err(format!(
            "made with key {}, which is not {name}'s ({owner})",
            fingerprint(made_with)
        ));
    }
    ssh_key::PublicKey::from(declared.clone())
        .verify(NAMESPACE, message(hash), &sig)
        .map_err(|_| {
            "does not verify over this plan's hash: it was made for another plan, or the plan \
             was altered after it was signed"
                .to_string()
        })?;
    if role == Role::Approver {
        let author_key = config.person_key(Role::Author, author);
        if name == author || author_key.as_ref() == Some(&declared) {
            return Err(format!(
                "{name} wrote the plan: its author cannot approve it"
            ));
        }
    }
    Ok(())
}

/// Every signature of a plan, checked: the author's, the approvals that count and those
/// that do not.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub checked: Vec<Checked>,
    /// Why the author's signature is missing or invalid; `None`: valid.
    pub author_problem: Option<String>,
    /// The distinct approvers with a valid signature.
    pub approvers: BTreeSet<String>,
}

impl Verdict {
    /// Check `signatures` (repeats counted once) for the plan `hash` written by `author`.
    pub fn of(config: &Config, hash: &str, author: &str, signatures: &[Signed]) -> Verdict {
        let mut seen = BTreeSet::new();
        let checked: Vec<Checked> = signatures
            .iter()
            .filter(|s| seen.insert((*s).clone()))
            .map(|s| check(config, hash, author, s))
            .collect();
        let approvers: BTreeSet<String> = checked
            .iter()
            .filter(|c| c.role == Role::Approver && c.problem.is_none())
            .map(|c| c.name.clone())
            .collect();
        let authors: Vec<&Checked> = checked.iter().filter(|c| c.role == Role::Author).collect();
        let author_problem = if authors.iter().any(|c| c.problem.is_none()) {
            None
        } else if let Some(c) = authors.first() {
            c.problem.clone()
        } else {
            Some(format!("it carries no signature by its author {author}"))
        };
        // Approvers with at least one valid signature: their invalid ones are not news.
        let checked = checked
            .into_iter()
            .filter(|c| {
                c.problem.is_none() || !(c.role == Role::Approver && approvers.contains(&c.name))
            })
            .collect();
        Verdict {
            checked,
            author_problem,
            approvers,
        }
    }

    /// The signatures that do not count, each with its reason, on one line.
    pub fn refused(&self) -> String {
        self.checked
            .iter()
            .filter_map(|c| {
                c.problem
                    .as_ref()
                    .map(|p| format!("{} {}: {p}", c.role, c.name))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// alice (author and approver) and bob (approver), keys made by ssh-keygen; carol's
    /// key is declared for no one.
    struct Keys {
        dir: tempfile::TempDir,
        config: Config,
    }

    impl Keys {
        fn new() -> Keys {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut public = BTreeMap::new();
            for name in ["alice", "bob", "carol"] {
                let status = std::process::Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                    .arg(dir.path().join(name))
                    .status()
                    .expect("ssh-keygen");
                assert!(status.success());
                let key = std::fs::read_to_string(dir.path().join(format!("{name}.pub")))
                    .expect("public key");
                public.insert(name, key.trim().to_string());
            }
            let config = Config::parse(&format!(
                "[vault]\nurl = \"file:///v\"\n[authors]\nalice = \"{a}\"\n\
                 [approvers]\nalice = \"{a}\"\nbob = \"{b}\"\n",
                a = public["alice"],
                b = public["bob"]
            ))
            .expect("config");
            Keys { dir, config }
        }

        fn signer(&self, role: Role, name: &str) -> Result<Signer> {
            Signer::open(&self.config, role, &self.dir.path().join(name))
        }

        fn problem(&self, signed: &Signed, hash: &str) -> Option<String> {
            check(&self.config, hash, "alice", signed).problem
        }
    }

    const HASH: &str = "3f1c0ffee3f1c0ffee3f1c0ffee3f1c0ffee3f1c0ffee3f1c0ffee3f1c0ffee0";
    const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn an_approval_counts_only_when_it_verifies_for_its_declared_signer() {
        let keys = Keys::new();
        let author = keys.signer(Role::Author, "alice").expect("alice");
        let bob = keys.signer(Role::Approver, "bob").expect("bob");
        assert_eq!(bob.name, "bob");
        let authored = author.sign(HASH).expect("sign");
        let approval = bob.sign(HASH).expect("sign");
        assert_eq!(keys.problem(&authored, HASH), None);
        assert_eq!(keys.problem(&approval, HASH), None);

        let over_other = bob.sign(OTHER).expect("sign");
        assert!(keys
            .problem(&over_other, HASH)
            .is_some_and(|p| p.contains("does not verify over this plan's hash")));
        let relabelled = Signed {
            name: "alice".into(),
            ..approval.clone()
        };
        assert!(keys
            .problem(&relabelled, HASH)
            .is_some_and(|p| p.contains("which is not alice's (it is bob's)")));
        let by_author = keys
            .signer(Role::Approver, "alice")
            .expect("alice approves")
            .sign(HASH)
            .expect("sign");
        assert!(keys
            .problem(&by_author, HASH)
            .is_some_and(|p| p.contains("alice wrote the plan")));
        let elsewhere = Signed {
            signature: bob
                .key
                .sign("git", HashAlg::Sha512, message(HASH))
                .and_then(|s| s.to_pem(LineEnding::LF))
                .expect("sign"),
            ..approval.clone()
        };
        assert!(keys
            .problem(&elsewhere, HASH)
            .is_some_and(|p| p.contains("namespace \"git\"")));

        let verdict = Verdict::of(
            &keys.config,
            HASH,
            "alice",
            &[authored, approval.clone(), approval, relabelled, by_author],
        );
        assert_eq!(verdict.author_problem, None);
        assert_eq!(
            verdict.approvers.iter().collect::<Vec<_>>(),
            ["bob"],
            "bob counts once; alice's relabelled and own approvals not at all"
        );
        assert!(
            verdict.refused().contains("approver alice"),
            "{}",
            verdict.refused()
        );
    }

    #[test]
    fn keys_declared_for_no_one_in_the_role_are_refused() {
        let keys = Keys::new();
        let err = keys.signer(Role::Approver, "carol").err().expect("refused");
        assert!(err
            .to_string()
            .contains("is declared for no one in [approvers]"));
        let err = keys.signer(Role::Author, "bob").err().expect("refused");
        assert!(
            err.to_string()
                .contains("(it is bob's, who is not in [authors])"),
            "{err}"
        );
        let verdict = Verdict::of(&keys.config, HASH, "alice", &[]);
        assert!(verdict
            .author_problem
            .is_some_and(|p| p.contains("no signature by its author alice")));
    }
}
