//! Fault injection for tests: `FaultyStore` wraps a real store and makes its calls fail
//! by the rules of `LIFEBOAT_VAULT_FAULTS` (syntax in docs/faults.md). Never active unless
//! that variable is set.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::Store;
use crate::error::{Error, Result};

/// The environment variable that turns fault injection on.
pub const ENV: &str = "LIFEBOAT_VAULT_FAULTS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Put,
    Get,
    List,
    Delete,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Put => "put",
            Call::Get => "get",
            Call::List => "list",
            Call::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    FailAll,
    FailRate(f64),
}

/// One rule of `LIFEBOAT_VAULT_FAULTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    action: Action,
    after: Duration,
    length: Option<Duration>,
    while_file: Option<PathBuf>,
    calls: Vec<Call>,
    seed: u64,
    landed: bool,
    permanent: bool,
}

/// Parse a `LIFEBOAT_VAULT_FAULTS` value; `None` when it is unset or empty.
pub fn parse(spec: &str) -> Result<Option<Vec<Rule>>> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(parse_rule)
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn parse_rule(text: &str) -> Result<Rule> {
    let bad =
        |why: &str| Error::config(format!("{ENV}: rule {text:?}: {why} (see docs/faults.md)"));
    let (action, options) = text.split_once('@').unwrap_or((text, ""));
    let mut rule = Rule {
        action: Action::FailAll,
        after: Duration::ZERO,
        length: None,
        while_file: None,
        calls: Vec::new(),
        seed: 0,
        landed: false,
        permanent: false,
    };
    match action.split_once(':') {
        None if action == "fail-all" => {}
        Some(("fail-all", length)) => {
            rule.length = Some(parse_duration(length).ok_or_else(|| bad("bad duration"))?)
        }
        Some(("fail-rate", p)) => {
            let p: f64 = p.parse().map_err(|_| bad("bad probability"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad("the probability must be between 0 and 1"));
            }
            rule.action = Action::FailRate(p);
        }
        _ => return Err(bad("expected fail-all[:DURATION] or fail-rate:P")),
    }
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("after", d)) => {
                rule.after = parse_duration(d).ok_or_else(|| bad("bad duration"))?
            }
            Some(("for", d)) => {
                rule.length = Some(parse_duration(d).ok_or_else(|| bad("bad duration"))?)
            }
            Some(("while", path)) if !path.is_empty() => rule.while_file = Some(path.into()),
            Some(("seed", n)) => rule.seed = n.parse().map_err(|_| bad("bad seed"))?,
            Some(("ops", ops)) => {
                for op in ops.split('+') {
                    rule.calls.push(match op {
                        "put" => Call::Put,
                        "get" => Call::Get,
                        "list" => Call::List,
                        "delete" => Call::Delete,
                        _ => return Err(bad(&format!("unknown call {op:?}"))),
                    });
                }
            }
            None if option == "landed" => rule.landed = true,
            None if option == "permanent" => rule.permanent = true,
            _ => return Err(bad(&format!("unknown option {option:?}"))),
        }
    }
    Ok(rule)
}

/// `250ms`, `30s`, `2m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let value: u64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "ms" => Some(Duration::from_millis(value)),
        "s" => Some(Duration::from_secs(value)),
        "m" => Some(Duration::from_secs(value.checked_mul(60)?)),
        _ => None,
    }
}

/// A store whose calls fail by `rules`; the calls that do not fail reach `inner`.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    rules: Vec<Rule>,
    opened: Instant,
    random: Mutex<Vec<fastrand::Rng>>,
}

/// What an injected fault does to a call.
enum Verdict {
    Pass,
    Fail { landed: bool, permanent: bool },
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, rules: Vec<Rule>) -> FaultyStore {
        let random = Mutex::new(
            rules
                .iter()
                .map(|r| fastrand::Rng::with_seed(r.seed))
                .collect(),
        );
        FaultyStore {
            inner,
            rules,
            opened: Instant::now(),
            random,
        }
    }

    /// `inner`, wrapped when `LIFEBOAT_VAULT_FAULTS` is set.
    pub fn wrap_from_env(inner: Arc<dyn Store>) -> Result<Arc<dyn Store>> {
        let spec = std::env::var(ENV).unwrap_or_default();
        match parse(&spec)? {
            None => Ok(inner),
            Some(rules) => {
                tracing::warn!("{ENV} is set: vault faults are injected ({spec})");
                Ok(Arc::new(FaultyStore::new(inner, rules)))
            }
        }
    }

    fn verdict(&self, call: Call) -> Verdict {
        let elapsed = self.opened.elapsed();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.calls.is_empty() && !rule.calls.contains(&call) {
                continue;
            }
            if elapsed < rule.after || rule.length.is_some_and(|l| elapsed >= rule.after + l) {
                continue;
            }
            if rule.while_file.as_ref().is_some_and(|f| !f.exists()) {
                continue;
            }
            let fails = match rule.action {
                Action::FailAll => true,
                Action::FailRate(p) => {
                    let mut random = self.random.lock().unwrap_or_else(|e| e.into_inner());
                    random[i].f64() < p
                }
            };
            if fails {
                return Verdict::Fail {
                    landed: rule.landed && call == Call::Put,
                    permanent: rule.permanent,
                };
            }
        }
        Verdict::Pass
    }

    fn error(&self, call: Call, name: &str, permanent: bool) -> Error {
        let error = Error::vault(format!(
            "injected fault: {} {name} in {} failed ({ENV})",
            call.name(),
            self.inner.describe()
        ));
        if permanent {
            error
        } else {
            error.transient()
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        match self.verdict(Call::Put) {
            Verdict::Pass => self.inner.put(name, bytes).await,
            Verdict::Fail { landed, permanent } => {
                if landed {
                    self.inner.put(name, bytes).await?;
                }
                Err(self.error(Call::Put, name, permanent))
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        match self.verdict(Call::Get) {
            Verdict::Pass => self.inner.get(name).await,
            Verdict::Fail { permanent, .. } => Err(self.error(Call::Get, name, permanent)),
        }
    }

    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        match self.verdict(Call::Get) {
            Verdict::Pass => self.inner.get_range(name, range).await,
            Verdict::Fail { permanent, .. } => Err(self.error(Call::Get, name, permanent)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self.verdict(Call::List) {
            Verdict::Pass => self.inner.list(prefix).await,
            Verdict::Fail { permanent, .. } => Err(self.error(Call::List, prefix, permanent)),
        }
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        match self.verdict(Call::List) {
            Verdict::Pass => self.inner.list_sized(prefix).await,
            Verdict::Fail { permanent, .. } => Err(self.error(Call::List, prefix, permanent)),
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.verdict(Call::Delete) {
            Verdict::Pass => self.inner.delete(name).await,
            Verdict::Fail { permanent, .. } => Err(self.error(Call::Delete, name, permanent)),
        }
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::LocalStore;

    #[test]
    fn rules_parse_and_malformed_ones_are_refused_by_name() {
        assert_eq!(parse("").expect("empty"), None);
        let rules =
            parse("fail-all:30s@after=5s; fail-rate:0.25@ops=put+list,seed=7,landed,permanent")
                .expect("parse")
                .expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].action, Action::FailAll);
        assert_eq!(rules[0].after, Duration::from_secs(5));
        assert_eq!(rules[0].length, Some(Duration::from_secs(30)));
        assert!(rules[0].calls.is_empty() && !rules[0].permanent);
        assert_eq!(rules[1].action, Action::FailRate(0.25));
        assert_eq!(rules[1].calls, vec![Call::Put, Call::List]);
        assert_eq!(rules[1].seed, 7);
        assert!(rules[1].landed && rules[1].permanent);
        let file = parse("fail-all@while=/tmp/x,for=2m")
            .expect("parse")
            .expect("rules");
        assert_eq!(file[0].while_file, Some(PathBuf::from("/tmp/x")));
        assert_eq!(file[0].length, Some(Duration::from_secs(120)));
        for bad in [
            "fail-some",
            "fail-all:30",
            "fail-rate:2",
            "fail-rate:x",
            "fail-all@ops=write",
            "fail-all@soon",
            "fail-all@after=-1s",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.message().contains(&format!("rule {bad:?}")) && e.message().contains(ENV),
                "{e}"
            );
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn faults_follow_their_window_calls_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("store")));
        let rules = parse(&format!(
            "fail-all@ops=put,while={}",
            dir.path().join("outage").display()
        ))
        .expect("parse")
        .expect("rules");
        let store = FaultyStore::new(real.clone(), rules);
        runtime().block_on(async {
            store
                .put("a", Bytes::from("1"))
                .await
                .expect("no outage yet");
            std::fs::write(dir.path().join("outage"), "").expect("outage");
            let e = store.put("b", Bytes::from("2")).await.expect_err("outage");
            assert!(
                e.is_transient() && e.message().starts_with("injected fault: put b"),
                "{e}"
            );
            assert_eq!(real.get("b").await.expect("get"), None, "nothing written");
            // Other calls pass.
            assert_eq!(
                store.get("a").await.expect("get").as_deref(),
                Some(&b"1"[..])
            );
            std::fs::remove_file(dir.path().join("outage")).expect("end outage");
            store
                .put("b", Bytes::from("2"))
                .await
                .expect("after the outage");
        });

        // A window in time, a landed put, a permanent error.
        let rules = parse("fail-all:300ms@after=100ms,landed,permanent")
            .expect("parse")
            .expect("rules");
        let store = FaultyStore::new(real.clone(), rules);
        runtime().block_on(async {
            store
                .put("c", Bytes::from("3"))
                .await
                .expect("before the window");
            tokio::time::sleep(Duration::from_millis(150)).await;
            let e = store
                .put("d", Bytes::from("4"))
                .await
                .expect_err("in the window");
            assert!(!e.is_transient(), "{e}");
            assert_eq!(
                real.get("d").await.expect("get").as_deref(),
                Some(&b"4"[..]),
                "a landed put reached the store"
            );
            assert!(store.list("").await.is_err());
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(store.list("").await.expect("after the window").len(), 4);
        });
    }

    #[test]
    fn a_fail_rate_fails_about_that_share_of_calls_and_replays_by_seed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let outcomes = |seed: u64| -> Vec<bool> {
            let rules = parse(&format!("fail-rate:0.3@seed={seed}"))
                .expect("parse")
                .expect("rules");
            let store = FaultyStore::new(real.clone(), rules);
            runtime().block_on(async {
                let mut out = Vec::new();
                for _ in 0..1000 {
                    out.push(store.get("x").await.is_err());
                }
                out
            })
        };
        let first = outcomes(3);
        let failed = first.iter().filter(|f| **f).count();
        assert!((220..=380).contains(&failed), "{failed} of 1000 failed");
        assert_eq!(first, outcomes(3), "the same seed fails the same calls");
        assert_ne!(first, outcomes(4));
    }
}
