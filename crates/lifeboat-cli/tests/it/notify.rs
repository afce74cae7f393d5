//! Notifications from the outbox, delivered to a real SMTP server (aiosmtpd,
//! tests/it/smtp_sink.py) and a real HTTP receiver (tests/it/webhook_sink.py), each this
//! test's own on a free port: a campaign over deleted tenants tells each tenant's admins,
//! found in the vault, with their own private link; every stage change makes exactly its
//! messages; webhooks are signed and shaped like Statuspage's; a mail server that is down
//! for a while loses nothing and duplicates nothing; a notifier killed between send and
//! record sends that one message again, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::Value as Json;

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

/// One of the python receivers, on its port, saving what it receives in `dir`.
pub(crate) struct Sink {
    child: Option<Child>,
    script: &'static str,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Sink {
    pub(crate) fn new(script: &'static str, dir: PathBuf) -> Sink {
        Sink {
            child: None,
            script,
            port: free_port(),
            dir,
        }
    }

    pub(crate) fn start(&mut self) {
        let script = format!("{}/tests/it/{}", env!("CARGO_MANIFEST_DIR"), self.script);
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 (aiosmtpd from scripts/test-services.sh)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        assert_eq!(line.trim(), "ready", "{} did not start", self.script);
        self.child = Some(child);
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An email as the SMTP server received it, and as a reader sees it (decoded by the sink).
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub(crate) to: String,
    headers: BTreeMap<String, String>,
    raw: String,
    pub(crate) subject: String,
    pub(crate) text: String,
    html: String,
}

impl Mail {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }
}

pub(crate) fn mails(dir: &Path) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|path| {
            // Quoted-printable soft line breaks and `=` undone, so links read whole.
            let raw = std::fs::read_to_string(path)
                .expect("mail")
                .replace("=\r\n", "")
                .replace("=3D", "=");
            let head = raw
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .replace("\r\n", "\n");
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            let mut last = String::new();
            for line in head.lines() {
                if line.starts_with([' ', '\t']) {
                    if let Some(value) = headers.get_mut(&last) {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                } else if let Some((name, value)) = line.split_once(':') {
                    last = name.trim().to_ascii_lowercase();
                    headers.insert(last.clone(), value.trim().to_string());
                }
            }
            let decoded: Json = serde_json::from_str(
                &std::fs::read_to_string(path.with_extension("json")).expect("decoded mail"),
            )
            .expect("json");
            let part = |name: &str| decoded[name].as_str().unwrap_or("").replace("\r\n", "\n");
            Mail {
                to: headers.get("x-envelope-to").cloned().unwrap_or_default(),
                headers,
                raw,
                subject: part("subject"),
                text: part("plain"),
                html: part("html"),
            }
        })
        .collect()
}

/// A webhook request as the receiver saw it.
fn hooks(dir: &Path) -> Vec<Json> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json"))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const SECRET: &str = "a webhook secret of this test";

/// An identity source whose sites 1 and 2 are deleted after the restore point: site 1 has
/// two admins and a member, site 2 one admin, site 3 (not in the campaign) one admin. A
/// campaign over sites 1 and 2 is started. Returns the configuration and the campaign.
fn setup(work: &Workdir, smtp: u16, hook: u16, notify: &str) -> (PathBuf, String) {
    let db = work.path("identity.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             email TEXT, display_name TEXT, role TEXT);
         INSERT INTO users VALUES (1, 1, 'ann@one.example', 'Ann', 'admin'),
             (2, 1, 'ada@one.example', 'Ada', 'admin'),
             (3, 1, 'joe@one.example', 'Joe', 'member'),
             (4, 2, 'bea@two.example', 'Bea', 'admin'),
             (5, 3, 'cid@three.example', 'Cid', 'admin');",
    )
    .expect("schema");
    let secret = work.path("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.identity]
url = "sqlite://{db}"
tenant_column = "site_id"
[contacts]
source = "identity"
table = "users"
email_column = "email"
name_column = "display_name"
where = "role = 'admin'"
[server]
page_name = "Example Status"
public_url = "https://status.example.com"
[notify]
{notify}
[notify.smtp]
url = "smtp://127.0.0.1:{smtp}?tls=none"
from = "Example Status <status@example.com>"
[[notify.webhooks]]
url = "http://127.0.0.1:{hook}/hooks/lifeboat"
secret_file = "{secret}"
"#,
        vault = work.vault_url(),
        db = db.display(),
        secret = secret.display(),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let point: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(Duration::from_millis(20));
    conn.execute_batch("DELETE FROM users WHERE site_id IN (1, 2);")
        .expect("delete");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--message",
            "We are restoring the deleted sites.",
        ],
    )
    .trim()
    .to_string();
    let file = work.path("tenants.txt");
    std::fs::write(&file, "1\n2\n").expect("tenants");
    let campaign = lifeboat_ok(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &point,
        ],
    )
    .trim()
    .to_string();
    (config, campaign)
}

/// tenant -> private link.
fn links(config: &Path, campaign: &str) -> BTreeMap<String, String> {
    let listed: Json = serde_json::from_str(&lifeboat_ok(
        config,
        &["campaign", "links", campaign, "--json"],
    ))
    .expect("json");
    listed
        .as_array()
        .expect("array")
        .iter()
        .map(|l| {
            (
                l["tenant"].as_str().expect("tenant").to_string(),
                l["link"].as_str().expect("link").to_string(),
            )
        })
        .collect()
}

fn notifications(config: &Path) -> Vec<Json> {
    let listed: Json =
        serde_json::from_str(&lifeboat_ok(config, &["notifications", "--json"])).expect("json");
    listed.as_array().expect("array").clone()
}

/// (recipient, event) of each mail, sorted.
fn sent_to(mails: &[Mail]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = mails
        .iter()
        .map(|m| (m.to.clone(), m.header("X-Lifeboat-Event").to_string()))
        .collect();
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

/// Every key of `fixture` is in `ours`, with a value of the same JSON type (arrays: their
/// first elements compared likewise). Returns the paths that differ.
fn shape_differences(fixture: &Json, ours: &Json, path: &str, out: &mut Vec<String>) {
    match (fixture, ours) {
        (Json::Object(f), Json::Object(o)) => {
            for (key, value) in f {
                match o.get(key) {
                    None => out.push(format!("{path}.{key}: missing")),
                    Some(v) => shape_differences(value, v, &format!("{path}.{key}"), out),
                }
            }
        }
        (Json::Array(f), Json::Array(o)) => {
            if let (Some(f), Some(o)) = (f.first(), o.first()) {
                shape_differences(f, o, &format!("{path}[0]"), out);
            }
        }
        (Json::Null, _) | (_, Json::Null) => {}
        (f, o) if std::mem::discriminant(f) != std::mem::discriminant(o) => {
            out.push(format!("{path}: {f} vs {o}"))
        }
        _ => {}
    }
}

#[test]
fn deleted_tenants_admins_hear_of_every_stage_with_their_own_link() {
    deleted_tenants_admins_hear_of_every_stage_with_their_own_link_in(Mode::Stopped);
}

#[test]
fn deleted_tenants_admins_hear_of_every_stage_with_their_own_link_while_capture_runs() {
    deleted_tenants_admins_hear_of_every_stage_with_their_own_link_in(Mode::Running);
}

fn deleted_tenants_admins_hear_of_every_stage_with_their_own_link_in(mode: Mode) {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    smtp.start();
    hook.start();
    let (config, campaign) = setup(&work, smtp.port, hook.port, "");
    let background = Background::start(mode, &config, &work, "identity");
    lifeboat_ok(&config, &["notifier", "--until-idle"]);

    // The queue: each admin of each deleted tenant, found in the vault, and nobody else.
    let queued = mails(&smtp.dir);
    assert_eq!(
        sent_to(&queued),
        pairs(&[
            ("ada@one.example", "stage_queued"),
            ("ann@one.example", "stage_queued"),
            ("bea@two.example", "stage_queued"),
        ])
    );
    let links = links(&config, &campaign);
    for mail in &queued {
        let (own, other) = if mail.to.ends_with("@one.example") {
            (&links["1"], &links["2"])
        } else {
            (&links["2"], &links["1"])
        };
        assert!(mail.raw.contains(own.as_str()), "{}", mail.raw);
        let other_token = other.rsplit('/').next().expect("token");
        assert!(!mail.raw.contains(other_token), "{}", mail.raw);
        assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
        assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
        assert!(
            mail.header("Subject").contains("queued"),
            "{:?}",
            mail.headers
        );
    }
    // Message-IDs come from the deliveries' ids.
    let listed = notifications(&config);
    let ids: BTreeSet<String> = listed
        .iter()
        .filter(|n| n["recipient"] == "contact")
        .map(|n| format!("<{}@lifeboat>", n["id"].as_str().expect("id")))
        .collect();
    let seen: BTreeSet<String> = queued
        .iter()
        .map(|m| m.header("Message-ID").to_string())
        .collect();
    assert_eq!(seen, ids);
    assert!(listed.iter().all(|n| n["state"] == "sent"), "{listed:?}");
    assert!(listed.iter().all(|n| n.get("body").is_none()));

    // The operator webhook: signed, Statuspage's shape.
    let received = hooks(&hook.dir);
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    let body = request["body"].as_str().expect("body");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    assert_eq!(
        request["headers"]["x-lifeboat-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert_eq!(request["headers"]["x-lifeboat-event"], "incident_created");
    assert_eq!(request["path"], "/hooks/lifeboat");
    let operator = listed
        .iter()
        .find(|n| n["recipient"] == "operator")
        .expect("operator delivery");
    assert_eq!(request["headers"]["x-lifeboat-delivery"], operator["id"]);
    let payload: Json = serde_json::from_str(body).expect("payload");
    let fixture: Json =
        serde_json::from_str(include_str!("statuspage_webhook.json")).expect("fixture");
    let mut differences = Vec::new();
    shape_differences(&fixture, &payload, "", &mut differences);
    assert!(differences.is_empty(), "{differences:?}\n{payload:#}");
    assert_eq!(payload["incident"]["name"], "Sites deleted");
    assert_eq!(payload["page"]["status_indicator"], "critical");
    assert!(!body.contains("@one.example") && !body.contains(&links["1"]));

    // Restoring, then awaiting acceptance: each tenant's admins, once per stage.
    lifeboat_ok(&config, &["worker", "--until-done"]);
    lifeboat_ok(&config, &["notifier", "--until-idle"]);
    let all = mails(&smtp.dir);
    let stages = sent_to(&all[queued.len()..]);
    assert_eq!(
        stages,
        pairs(&[
            ("ada@one.example", "stage_restoring"),
            ("ann@one.example", "stage_restoring"),
            ("bea@two.example", "stage_restoring"),
            ("ada@one.example", "stage_awaiting_acceptance"),
            ("ann@one.example", "stage_awaiting_acceptance"),
            ("bea@two.example", "stage_awaiting_acceptance"),
        ])
    );

    // Resolving the incident: the operators and every contact of its campaign.
    let incident = payload["incident"]["id"].as_str().expect("id").to_string();
    lifeboat_ok(
        &config,
        &[
            "incident",
            "resolve",
            &incident,
            "--message",
            "All sites are back.",
        ],
    );
    lifeboat_ok(&config, &["notifier", "--until-idle"]);
    let resolved = mails(&smtp.dir);
    assert_eq!(
        sent_to(&resolved[all.len()..]),
        pairs(&[
            ("ada@one.example", "incident_resolved"),
            ("ann@one.example", "incident_resolved"),
            ("bea@two.example", "incident_resolved"),
        ])
    );
    assert!(resolved[all.len()..]
        .iter()
        .all(|m| m.raw.contains("All sites are back.")));
    let received = hooks(&hook.dir);
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[1]["headers"]["x-lifeboat-event"],
        "incident_resolved"
    );
    // Nothing died; a retry needs a dead delivery, named by its id.
    let failed: Json = serde_json::from_str(&lifeboat_ok(
        &config,
        &["notifications", "--failed", "--json"],
    ))
    .expect("json");
    assert_eq!(failed, serde_json::json!([]));
    let out = lifeboat(&config, &["notifications", "retry", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown notification nope"),
        "{}",
        stderr(&out)
    );
    let sent_id = operator["id"].as_str().expect("id");
    let out = lifeboat(&config, &["notifications", "retry", sent_id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is sent, not dead"),
        "{}",
        stderr(&out)
    );
    // Nobody outside the campaign, and no member, ever got mail.
    assert!(resolved
        .iter()
        .all(|m| m.to != "cid@three.example" && m.to != "joe@one.example"));
    smtp.stop();
    hook.stop();
    background.finish();
}

#[test]
fn a_mail_server_down_for_a_while_loses_nothing_and_duplicates_nothing() {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    hook.start();
    // The mail server is not there yet; the webhook receiver answers 503 at first.
    std::fs::create_dir_all(&hook.dir).expect("dir");
    std::fs::write(hook.dir.join("status"), "503").expect("status");
    let (config, _) = setup(&work, smtp.port, hook.port, "max_delay_seconds = 10");
    let mut notifier = lifeboat_command(&config, &["notifier"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("notifier");
    wait_for("failed attempts", Duration::from_secs(30), || {
        let listed = notifications(&config);
        listed.len() == 4
            && listed
                .iter()
                .all(|n| n["attempts"].as_i64() >= Some(1) && !n["last_error"].is_null())
    });
    let listed = notifications(&config);
    assert!(listed.iter().all(|n| n["state"] == "pending"), "{listed:?}");
    assert!(mails(&smtp.dir).is_empty());
    // Back: everything arrives at its next attempt, once.
    smtp.start();
    std::fs::remove_file(hook.dir.join("status")).expect("status");
    wait_for("every message", Duration::from_secs(60), || {
        notifications(&config).iter().all(|n| n["state"] == "sent")
    });
    terminate(&mut notifier);
    let received = mails(&smtp.dir);
    assert_eq!(
        sent_to(&received),
        pairs(&[
            ("ada@one.example", "stage_queued"),
            ("ann@one.example", "stage_queued"),
            ("bea@two.example", "stage_queued"),
        ])
    );
    let accepted: Vec<Json> = hooks(&hook.dir)
        .into_iter()
        .filter(|h| h["status"] == 200)
        .collect();
    assert_eq!(accepted.len(), 1);
    smtp.stop();
    hook.stop();
}

#[test]
fn a_notifier_killed_between_send_and_record_resends_only_that_message() {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    smtp.start();
    hook.start();
    let (config, _) = setup(&work, smtp.port, hook.port, "claim_seconds = 10");
    // The second message goes out, then the notifier dies before recording it.
    let out = lifeboat_command(&config, &["notifier", "--until-idle"])
        .env("LIFEBOAT_FAILPOINT", "notifier.after-send@2")
        .output()
        .expect("notifier");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("failpoint notifier.after-send reached"));
    let first = mails(&smtp.dir);
    let webhooks_first = hooks(&hook.dir);
    assert_eq!(first.len() + webhooks_first.len(), 2);
    let listed = notifications(&config);
    let sending: Vec<&Json> = listed.iter().filter(|n| n["state"] == "sending").collect();
    assert_eq!(listed.iter().filter(|n| n["state"] == "sent").count(), 1);
    // Restarted once the dead notifier's claims ran out: the unrecorded one is sent again
    // with its Message-ID or delivery id, the others once.
    std::thread::sleep(Duration::from_secs(11));
    lifeboat_ok(&config, &["notifier", "--until-idle"]);
    assert!(notifications(&config).iter().all(|n| n["state"] == "sent"));
    let all_mail = mails(&smtp.dir);
    let all_hooks = hooks(&hook.dir);
    assert_eq!(all_mail.len() + all_hooks.len(), listed.len() + 1);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for m in &all_mail {
        *counts
            .entry(m.header("X-Lifeboat-Delivery").to_string())
            .or_default() += 1;
    }
    for h in &all_hooks {
        let id = h["headers"]["x-lifeboat-delivery"].as_str().expect("id");
        *counts.entry(id.to_string()).or_default() += 1;
    }
    let twice: Vec<&String> = counts
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(counts.len(), listed.len(), "{counts:?}");
    assert_eq!(twice.len(), 1, "{counts:?}");
    // The one sent twice is the second one sent before the crash, never recorded.
    let second = first
        .iter()
        .map(|m| m.header("X-Lifeboat-Delivery").to_string())
        .chain(webhooks_first.iter().map(|h| {
            h["headers"]["x-lifeboat-delivery"]
                .as_str()
                .unwrap_or("")
                .to_string()
        }))
        .find(|id| sending.iter().any(|n| n["id"] == id.as_str()))
        .expect("the unrecorded delivery");
    assert_eq!(twice[0], &second);
    let copies: Vec<&Mail> = all_mail
        .iter()
        .filter(|m| m.header("X-Lifeboat-Delivery") == second)
        .collect();
    if copies.len() == 2 {
        assert_eq!(
            copies[0].header("Message-ID"),
            copies[1].header("Message-ID")
        );
    }
    smtp.stop();
    hook.stop();
}

/// `serve` and the public address it printed.
fn spawn_serve(config: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = lifeboat_command(config, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut lines = std::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let base = first
        .strip_prefix("serving the status page on ")
        .expect(&first)
        .trim_end_matches('/')
        .to_string();
    (server, base)
}

#[test]
fn serve_delivers_the_outbox_unless_told_not_to_and_shows_none_of_it() {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    smtp.start();
    hook.start();
    let (config, campaign) = setup(&work, smtp.port, hook.port, "");

    // Without its notifier, serve sends nothing.
    let (mut quiet, base) = spawn_serve(&config, &["--no-notifier"]);
    assert_eq!(http_get(&base, "/").0, 200);
    std::thread::sleep(Duration::from_secs(2));
    terminate(&mut quiet);
    assert!(mails(&smtp.dir).is_empty() && hooks(&hook.dir).is_empty());
    assert!(notifications(&config)
        .iter()
        .all(|n| n["state"] == "pending"));

    // With it, everything goes out while the pages are served; none of it is on them.
    let (mut server, base) = spawn_serve(&config, &[]);
    wait_for("serve's notifier", Duration::from_secs(30), || {
        notifications(&config).iter().all(|n| n["state"] == "sent")
    });
    assert_eq!(mails(&smtp.dir).len(), 3);
    assert_eq!(hooks(&hook.dir).len(), 1);
    let links = links(&config, &campaign);
    let tokens: Vec<&str> = links
        .values()
        .map(|l| l.rsplit('/').next().expect("token"))
        .collect();
    for path in [
        "/",
        "/api/v2/summary.json",
        "/api/v2/incidents.json",
        "/api/v2/incidents/unresolved.json",
        "/api/lifeboat/campaigns.json",
        "/history.atom",
    ] {
        let (status, body) = http_get(&base, path);
        assert_eq!(status, 200, "{path}");
        for secret in [
            "ann@one.example",
            "ada@one.example",
            "bea@two.example",
            "Ann",
            "Bea",
        ]
        .iter()
        .chain(&tokens)
        {
            assert!(!body.contains(secret), "{path} shows {secret}");
        }
    }
    terminate(&mut server);
    smtp.stop();
    hook.stop();
}

/// What a subscriber and a customer writing to support receive, through the real mail
/// server: the confirmation with its link, incident mail with a working one-click
/// unsubscribe, and the reply that goes to the matched contact with that tenant's own link
/// while the request itself goes to the operators' signed webhook.
#[test]
fn subscribers_and_support_requests_are_answered_by_mail() {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    smtp.start();
    hook.start();
    let (config, campaign) = setup(&work, smtp.port, hook.port, "");
    let (mut server, base) = spawn_serve(&config, &[]);
    let to = |address: &str, event: &str| {
        mails(&smtp.dir)
            .into_iter()
            .filter(|m| m.to == address && m.header("X-Lifeboat-Event") == event)
            .collect::<Vec<_>>()
    };
    // A link of the status page in a mail, as a path the test server answers.
    let path_of = |mail: &Mail, prefix: &str| {
        let body = mail.raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let at = body
            .find(&format!("https://status.example.com{prefix}"))
            .unwrap_or_else(|| panic!("no {prefix} link in {}", mail.raw));
        body[at + "https://status.example.com".len()..]
            .split(|c: char| c.is_whitespace() || "\"<>".contains(c))
            .next()
            .expect("link")
            .to_string()
    };

    // Subscribing sends a confirmation, and only that, to the address.
    let (status, _, _) =
        crate::subscribers::post_form(&base, "/subscribe", &[("email", "sam@reader.example")]);
    assert_eq!(status, 200);
    wait_for("the confirmation", Duration::from_secs(30), || {
        !to("sam@reader.example", "subscription_confirmation").is_empty()
    });
    let confirmation = &to("sam@reader.example", "subscription_confirmation")[0];
    let confirm = path_of(confirmation, "/subscribe/confirm?token=");
    assert_eq!(http_get(&base, &confirm).0, 200);

    // An operator adds a webhook subscriber: its secret is shown once.
    let added = lifeboat_ok(
        &config,
        &[
            "subscribers",
            "add",
            "--webhook",
            &format!("http://127.0.0.1:{}/hooks/subscriber", hook.port),
        ],
    );
    let subscriber_secret = added
        .lines()
        .find_map(|l| l.strip_prefix("secret "))
        .unwrap_or_else(|| panic!("no secret in {added}"))
        .to_string();
    assert!(!lifeboat_ok(&config, &["subscribers", "list", "--json"]).contains(&subscriber_secret));

    // Confirmed, the next update reaches the subscriber with its unsubscribe link.
    let incident: Json =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let id = incident[0]["id"].as_str().expect("id").to_string();
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &id,
            "--status",
            "monitoring",
            "--message",
            "Half of the sites are back.",
        ],
    );
    wait_for("the subscriber's update", Duration::from_secs(30), || {
        !to("sam@reader.example", "incident_updated").is_empty()
    });
    let update = &to("sam@reader.example", "incident_updated")[0];
    assert!(
        update.raw.contains("Half of the sites are back."),
        "{}",
        update.raw
    );
    let unsubscribe = update.header("List-Unsubscribe");
    assert!(
        unsubscribe.contains("https://status.example.com/unsubscribe?token="),
        "{unsubscribe}"
    );
    assert_eq!(
        update.header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    // The webhook subscriber's copy is signed with its own secret.
    wait_for(
        "the webhook subscriber's update",
        Duration::from_secs(30),
        || {
            hooks(&hook.dir)
                .iter()
                .any(|h| h["path"] == "/hooks/subscriber")
        },
    );
    let delivered = hooks(&hook.dir)
        .into_iter()
        .find(|h| h["path"] == "/hooks/subscriber")
        .expect("subscriber webhook");
    let body = delivered["body"].as_str().expect("body");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(subscriber_secret.as_bytes())
            .expect("key");
    mac.update(body.as_bytes());
    assert_eq!(
        delivered["headers"]["x-lifeboat-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let payload: Json = serde_json::from_str(body).expect("json");
    assert!(
        payload["meta"]["unsubscribe"]
            .as_str()
            .is_some_and(|u| u.contains("/unsubscribe?token=")),
        "{payload}"
    );
    assert_eq!(payload["incident"]["id"], id.as_str());
    let leave = path_of(update, "/unsubscribe?token=");
    assert!(unsubscribe.contains(&leave), "{unsubscribe} vs {leave}");
    let (status, _, _) =
        crate::subscribers::post_form(&base, &leave, &[("List-Unsubscribe", "One-Click")]);
    assert_eq!(status, 200);
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &id,
            "--status",
            "monitoring",
            "--message",
            "Most sites are back.",
        ],
    );

    // Support: the contact of site 1 writes without a URL. The reply goes to that contact
    // with site 1's own link; the request goes to the operators' webhook, signed.
    let (status, _, _) = crate::subscribers::post_form(
        &base,
        "/support",
        &[
            ("email", "ann@one.example"),
            ("message", "Where is our wiki?"),
        ],
    );
    assert_eq!(status, 200);
    wait_for("the support reply", Duration::from_secs(30), || {
        !to("ann@one.example", "support_reply").is_empty()
    });
    let reply = &to("ann@one.example", "support_reply")[0];
    let links = links(&config, &campaign);
    let own = links["1"].rsplit('/').next().expect("token");
    let other = links["2"].rsplit('/').next().expect("token");
    assert!(reply.raw.contains(own), "{}", reply.raw);
    assert!(!reply.raw.contains(other), "{}", reply.raw);
    wait_for("the operators' webhook", Duration::from_secs(30), || {
        hooks(&hook.dir)
            .iter()
            .any(|h| h["headers"]["x-lifeboat-event"] == "support_request")
    });
    let request = hooks(&hook.dir)
        .into_iter()
        .find(|h| h["headers"]["x-lifeboat-event"] == "support_request")
        .expect("support request");
    let body = request["body"].as_str().expect("body");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    assert_eq!(
        request["headers"]["x-lifeboat-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let payload: Json = serde_json::from_str(body).expect("json");
    assert_eq!(payload["support_request"]["message"], "Where is our wiki?");

    // Nothing more went to the subscriber after it left.
    wait_for("every delivery", Duration::from_secs(30), || {
        notifications(&config).iter().all(|n| n["state"] == "sent")
    });
    assert_eq!(to("sam@reader.example", "incident_updated").len(), 1);
    terminate(&mut server);
    smtp.stop();
    hook.stop();
}

/// Sites 1 to 3, each with one admin whose locale is German (Austria), Japanese (Japan) and
/// French (no catalog), all deleted after the restore point; a campaign over the three.
fn setup_with_locales(work: &Workdir, smtp: u16) -> PathBuf {
    let db = work.path("identity.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             email TEXT, display_name TEXT, role TEXT, locale TEXT);
         INSERT INTO users VALUES (1, 1, 'ann@one.example', 'Ann', 'admin', 'de-AT'),
             (2, 2, 'kei@two.example', 'Kei', 'admin', 'ja-JP'),
             (3, 3, 'cid@three.example', 'Cid', 'admin', 'fr');",
    )
    .expect("schema");
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.identity]
url = "sqlite://{db}"
tenant_column = "site_id"
[contacts]
source = "identity"
table = "users"
email_column = "email"
name_column = "display_name"
locale_column = "locale"
where = "role = 'admin'"
[server]
page_name = "Example Status"
public_url = "https://status.example.com"
[notify.smtp]
url = "smtp://127.0.0.1:{smtp}?tls=none"
from = "Example Status <status@example.com>"
"#,
        vault = work.vault_url(),
        db = db.display(),
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let point: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(Duration::from_millis(20));
    conn.execute_batch("DELETE FROM users;").expect("delete");
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    let incident = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites deleted",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--message",
            "We are restoring the deleted sites.",
        ],
    )
    .trim()
    .to_string();
    let file = work.path("tenants.txt");
    std::fs::write(&file, "1\n2\n3\n").expect("tenants");
    lifeboat_ok(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            &incident,
            "--tenants-from",
            file.to_str().expect("path"),
            "--at",
            &point,
        ],
    );
    config
}

/// Each contact hears in its locale's language (German for `de-AT`, Japanese for `ja-JP`,
/// English for a locale no catalog has), a subscriber in the language of the page it
/// subscribed on, and an update with a German translation reaches the German contact in
/// German, the others in English (marked as such in Japanese).
#[test]
fn contacts_and_subscribers_are_written_to_in_their_language() {
    let work = Workdir::new();
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    smtp.start();
    let config = setup_with_locales(&work, smtp.port);
    let (mut server, base) = spawn_serve(&config, &[]);
    let to = |address: &str, event: &str| {
        let found: Vec<Mail> = mails(&smtp.dir)
            .into_iter()
            .filter(|m| m.to == address && m.header("X-Lifeboat-Event") == event)
            .collect();
        found
    };
    let one = |address: &str, event: &str| {
        wait_for(
            &format!("{event} to {address}"),
            Duration::from_secs(30),
            || !to(address, event).is_empty(),
        );
        to(address, event).remove(0)
    };

    // The queue, to each contact in its language: subject, both parts, the time.
    let ann = one("ann@one.example", "stage_queued");
    assert_eq!(
        ann.subject,
        "Example Status: Ihre Daten stehen zur Wiederherstellung an"
    );
    assert!(
        ann.text
            .contains("Ihre Daten stehen nach Sites deleted zur Wiederherstellung an."),
        "{}",
        ann.text
    );
    assert!(ann.text.contains(" von 3."), "{}", ann.text);
    assert!(ann
        .text
        .contains("Wiederherstellungspunkt: Ihre Daten mit dem Stand von "));
    assert!(ann.text.contains(" UTC."), "{}", ann.text);
    assert!(ann.text.contains("?lang=de"), "{}", ann.text);
    assert!(ann.html.contains("<html lang=\"de\">"), "{}", ann.html);
    assert!(
        ann.html.contains("Ihre private Statusseite"),
        "{}",
        ann.html
    );
    assert!(!ann.text.contains("Your data"), "{}", ann.text);
    let kei = one("kei@two.example", "stage_queued");
    assert_eq!(
        kei.subject,
        "Example Status: データの復元を順番待ちしています"
    );
    assert!(kei.text.contains("復旧の順番: 3 件中 "), "{}", kei.text);
    assert!(kei.text.contains("時点のデータ。"), "{}", kei.text);
    assert!(kei.text.contains("日 "), "{}", kei.text);
    assert!(kei.html.contains("<html lang=\"ja\">"), "{}", kei.html);
    assert!(kei.html.contains("お客様専用のステータスページ"));
    let cid = one("cid@three.example", "stage_queued");
    assert_eq!(
        cid.subject,
        "Example Status: your data is queued to be restored"
    );
    assert!(cid.text.contains("Place in the queue: "), "{}", cid.text);
    assert!(!cid.text.contains("?lang="), "{}", cid.text);
    assert!(cid.html.contains("<html lang=\"en\">"), "{}", cid.html);

    // A reader subscribes from the Japanese page: the form carries the language through
    // its POST, and the confirmation and what follows are in Japanese.
    let (status, page) = http_get(&base, "/subscribe?lang=ja");
    assert_eq!(status, 200);
    assert!(page.contains("name=\"lang\" value=\"ja\""), "{page}");
    let (status, _, answer) = crate::subscribers::post_form(
        &base,
        "/subscribe",
        &[("email", "sora@reader.example"), ("lang", "ja")],
    );
    assert_eq!(status, 200);
    assert!(answer.contains("メールをご確認ください"), "{answer}");
    let confirmation = one("sora@reader.example", "subscription_confirmation");
    assert_eq!(confirmation.subject, "Example Status: 購読の確認");
    assert!(
        confirmation
            .text
            .contains("確認するには、次のリンクを開いてください: "),
        "{}",
        confirmation.text
    );
    let link = confirmation
        .text
        .split_whitespace()
        .find(|w| w.contains("/subscribe/confirm?token="))
        .expect("confirmation link");
    assert!(link.ends_with("&lang=ja"), "{link}");
    let (status, confirmed) = http_get(&base, &link["https://status.example.com".len()..]);
    assert_eq!(status, 200);
    assert!(confirmed.contains("購読が確認されました"), "{confirmed}");
    assert!(confirmed.contains("<html lang=\"ja\">"), "{confirmed}");

    // An update with a German translation.
    let incident: Json =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let id = incident[0]["id"].as_str().expect("id").to_string();
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &id,
            "--status",
            "monitoring",
            "--message",
            "Half of the sites are back.",
            "--message-de",
            "Die Hälfte der Sites ist zurück.",
        ],
    );
    let ann = one("ann@one.example", "incident_updated");
    assert_eq!(
        ann.subject,
        "Example Status: Sites deleted (Wird beobachtet)"
    );
    assert!(
        ann.text.starts_with("Die Hälfte der Sites ist zurück."),
        "{}",
        ann.text
    );
    assert!(!ann.text.contains("Half of the sites"), "{}", ann.text);
    let kei = one("kei@two.example", "incident_updated");
    assert_eq!(kei.subject, "Example Status: Sites deleted（経過観察中）");
    assert!(
        kei.text
            .starts_with("Half of the sites are back. （英語で表示）"),
        "{}",
        kei.text
    );
    let sora = one("sora@reader.example", "incident_updated");
    assert_eq!(sora.subject, "Example Status: Sites deleted（経過観察中）");
    assert!(sora.text.contains("（英語で表示）"), "{}", sora.text);
    assert!(sora.text.contains("配信を停止するには: "), "{}", sora.text);
    assert!(
        sora.header("List-Unsubscribe").contains("&lang=ja"),
        "{:?}",
        sora.headers
    );
    let cid = one("cid@three.example", "incident_updated");
    assert_eq!(cid.subject, "Example Status: Sites deleted (Monitoring)");
    assert!(
        cid.text.starts_with("Half of the sites are back.\n"),
        "{}",
        cid.text
    );
    assert!(!cid.text.contains("shown in English"), "{}", cid.text);

    // The unsubscribe link opens the page in the subscriber's language.
    let leave = sora
        .text
        .split_whitespace()
        .find(|w| w.contains("/unsubscribe?token="))
        .expect("unsubscribe link");
    let (status, page) = http_get(&base, &leave["https://status.example.com".len()..]);
    assert_eq!(status, 200);
    assert!(page.contains("購読を解除する"), "{page}");

    // A contact who writes to support from the German form is answered in the language
    // of its own locale, Japanese.
    let (status, _, answer) = crate::subscribers::post_form(
        &base,
        "/support",
        &[
            ("email", "kei@two.example"),
            ("message", "Wo sind unsere Daten?"),
            ("lang", "de"),
        ],
    );
    assert_eq!(status, 200);
    assert!(answer.contains("Nachricht erhalten"), "{answer}");
    let reply = one("kei@two.example", "support_reply");
    assert_eq!(
        reply.subject,
        "Example Status: サポートへのお問い合わせについて"
    );
    assert!(reply.text.contains("復元の順番待ちです"), "{}", reply.text);
    terminate(&mut server);
    smtp.stop();
}

/// The control store's clock for the cadence tests: a fixed moment plus `minutes`.
fn cadence_clock(minutes: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339("2026-04-05T10:00:00Z").expect("start");
    (start + chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `lifeboat ARGS` with the control store's clock `minutes` after the cadence tests'
/// start; exit code 0 required.
fn at_minute(config: &Path, minutes: i64, args: &[&str]) -> String {
    let output = lifeboat_command(config, args)
        .env("LIFEBOAT_TEST_CLOCK", cadence_clock(minutes))
        .output()
        .expect("run lifeboat");
    assert!(
        output.status.success(),
        "lifeboat {args:?} at minute {minutes}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A configuration promising an update every 30 minutes for critical incidents and every
/// 2 hours for the others, with one operator webhook and one operator address.
fn cadence_config(work: &Workdir, hook: u16, smtp: u16) -> PathBuf {
    let db = work.path("identity.db");
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL);")
        .expect("schema");
    let secret = work.path("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.identity]
url = "sqlite://{db}"
tenant_column = "site_id"
[server]
page_name = "Example Status"
public_url = "https://status.example.com"
[status.update_every]
critical = "30m"
default = "2h"
[notify]
operator_emails = ["oncall@example.com"]
[notify.smtp]
url = "smtp://127.0.0.1:{smtp}?tls=none"
from = "Example Status <status@example.com>"
[[notify.webhooks]]
url = "http://127.0.0.1:{hook}/hooks/lifeboat"
secret_file = "{secret}"
"#,
        vault = work.vault_url(),
        db = db.display(),
        secret = secret.display(),
    ))
}

/// The overdue-update alarms the webhook receiver got: (period, silent since).
fn alarms(dir: &Path) -> Vec<(i64, String)> {
    hooks(dir)
        .iter()
        .filter(|h| h["headers"]["x-lifeboat-event"] == "update_overdue")
        .map(|h| {
            let body: Json = serde_json::from_str(h["body"].as_str().expect("body")).expect("json");
            let facts = &body["update_overdue"];
            (
                facts["period"].as_i64().expect("period"),
                facts["silent_since"].as_str().expect("since").to_string(),
            )
        })
        .collect()
}

/// A critical incident left without a public update past its promised 30 minutes rings
/// the operators' webhook once per overdue period, however often the notifier looks; an
/// update stops it, and an alarm still waiting for its webhook is withdrawn by it; the
/// post-incident report counts the missed updates, the alarms and the notifications.
#[test]
fn a_silent_incident_rings_the_operators_until_an_update_is_posted() {
    let work = Workdir::new();
    let mut hook = Sink::new("webhook_sink.py", work.path("hooks"));
    let mut smtp = Sink::new("smtp_sink.py", work.path("mail"));
    hook.start();
    smtp.start();
    let config = cadence_config(&work, hook.port, smtp.port);
    let notifier = |minute: i64| at_minute(&config, minute, &["notifier", "--until-idle"]);
    let alarm_mails = |dir: &Path| {
        mails(dir)
            .iter()
            .filter(|m| m.header("X-Lifeboat-Event") == "update_overdue")
            .map(|m| m.to.clone())
            .collect::<Vec<_>>()
    };
    let incident = at_minute(
        &config,
        0,
        &[
            "incident",
            "create",
            "--name",
            "Sign-in down",
            "--impact",
            "critical",
            "--message",
            "We are looking into failed sign-ins.",
        ],
    )
    .trim()
    .to_string();
    notifier(1);
    assert_eq!(hooks(&hook.dir).len(), 1, "the incident itself");
    // Due by minute 30: nothing at 30, the alarm just after, once per period.
    notifier(30);
    assert!(alarms(&hook.dir).is_empty());
    // Two notifiers looking at once send it once.
    let both: Vec<Child> = (0..2)
        .map(|_| {
            lifeboat_command(&config, &["notifier", "--until-idle"])
                .env("LIFEBOAT_TEST_CLOCK", cadence_clock(31))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("notifier")
        })
        .collect();
    for mut child in both {
        assert!(child.wait().expect("wait").success());
    }
    let since = cadence_clock(0);
    assert_eq!(alarms(&hook.dir), [(1, since.clone())]);
    assert_eq!(alarm_mails(&smtp.dir), ["oncall@example.com"]);
    let mail = mails(&smtp.dir).pop().expect("the alarm");
    assert!(
        mail.raw
            .contains("No public update of Sign-in down has been posted since"),
        "{}",
        mail.raw
    );
    notifier(45);
    notifier(59);
    assert_eq!(alarms(&hook.dir).len(), 1, "one alarm per period");
    notifier(61);
    assert_eq!(alarms(&hook.dir), [(1, since.clone()), (2, since.clone())]);
    let last = hooks(&hook.dir).pop().expect("a request");
    let body: Json = serde_json::from_str(last["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["incident"]["id"], incident.as_str());
    assert_eq!(
        body["incident"]["next_update_at"],
        cadence_clock(30).as_str()
    );
    assert_eq!(body["update_overdue"]["due_at"], cadence_clock(30).as_str());
    assert_eq!(body["update_overdue"]["update_every_minutes"], 30);
    let signature = last["headers"]["x-lifeboat-signature"]
        .as_str()
        .expect("signed")
        .to_string();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(last["body"].as_str().expect("body").as_bytes());
    assert_eq!(
        signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );

    // An update at minute 62 stops it: the next is due by 92.
    at_minute(
        &config,
        62,
        &[
            "incident",
            "update",
            &incident,
            "--message",
            "Sign-ins fail for some tenants.",
        ],
    );
    notifier(80);
    notifier(92);
    assert_eq!(alarms(&hook.dir).len(), 2, "no alarm after the update");
    assert_eq!(
        hooks(&hook.dir)
            .iter()
            .filter(|h| h["headers"]["x-lifeboat-event"] == "incident_updated")
            .count(),
        1
    );

    assert_eq!(alarm_mails(&smtp.dir).len(), 2);
    // Overdue again at 93 while the receiver is down: the webhook alarm waits for its
    // retry (the email goes); the update posted meanwhile withdraws it, never sent.
    hook.stop();
    notifier(93);
    at_minute(
        &config,
        95,
        &[
            "incident",
            "update",
            &incident,
            "--message",
            "A fix is being deployed.",
        ],
    );
    hook.start();
    notifier(96);
    let listed = notifications(&config);
    let mut states: Vec<(&str, &str)> = listed
        .iter()
        .filter(|n| n["event"] == "update_overdue")
        .map(|n| {
            (
                n["state"].as_str().expect("state"),
                n["recipient"].as_str().expect("kind"),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("sent", "address"),
            ("sent", "address"),
            ("sent", "address"),
            ("sent", "operator"),
            ("sent", "operator"),
            ("withdrawn", "operator"),
        ],
        "{listed:#?}"
    );
    assert_eq!(alarms(&hook.dir).len(), 2);
    assert_eq!(alarm_mails(&smtp.dir).len(), 3);

    // The report: the silences of 62 and 33 minutes each missed promised updates (2 and
    // 1), the longest 1 h 02 min; two alarms; the notifications by channel.
    let report = at_minute(&config, 100, &["report", "--incident", &incident]);
    assert!(
        report.contains(
            "- Promised update cadence (impact critical): every 30 min 00 s. Promised updates \
             missed: 3 (longest silence 1 h 02 min)."
        ),
        "{report}"
    );
    assert!(
        report.contains("- Overdue-update alarms to the operators: 3."),
        "{report}"
    );
    assert!(
        report.contains("| Operator webhooks | 5 | 0 | 0 | 1 |"),
        "{report}"
    );
    assert!(
        report.contains("| Email to subscribers and operators | 3 | 0 | 0 | 0 |"),
        "{report}"
    );
    assert!(
        report.contains("Alarm to the operators: no public update since 2026-04-05T10:00:00"),
        "{report}"
    );
    hook.stop();
    smtp.stop();
}

/// The page says by when the next update comes, in the reader's language, and the JSON
/// carries it as `next_update_at` beside every Statuspage field (null once resolved); a
/// malformed cadence is refused with a one-line error naming the key.
#[test]
fn the_page_and_its_json_show_when_the_next_update_is_due() {
    let work = Workdir::new();
    let config = cadence_config(&work, free_port(), free_port());
    let old = at_minute(
        &config,
        0,
        &[
            "incident",
            "create",
            "--name",
            "Old outage",
            "--impact",
            "critical",
            "--message",
            "Investigating.",
        ],
    )
    .trim()
    .to_string();
    at_minute(
        &config,
        10,
        &["incident", "resolve", &old, "--message", "Fixed."],
    );
    // Opened now (the real clock): a major incident's next update is due in two hours.
    let open = lifeboat_ok(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Slow search",
            "--impact",
            "major",
            "--message",
            "Search is slow.",
        ],
    )
    .trim()
    .to_string();
    let listed: Json =
        serde_json::from_str(&lifeboat_ok(&config, &["incident", "list", "--json"])).expect("json");
    let created = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["id"] == open.as_str())
        .expect("the open incident")["created_at"]
        .as_str()
        .expect("created_at")
        .to_string();
    let due =
        chrono::DateTime::parse_from_rfc3339(&created).expect("time") + chrono::Duration::hours(2);
    let due_text = due.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // `incident list` says it too, and nothing for the resolved one.
    for i in listed.as_array().expect("array") {
        let wanted = if i["id"] == open.as_str() {
            Json::from(due_text.as_str())
        } else {
            Json::Null
        };
        assert_eq!(i["next_update_at"], wanted, "{i}");
    }
    let text = lifeboat_ok(&config, &["incident", "list"]);
    assert!(
        text.contains(&format!("Slow search  (next update due by {due_text})")),
        "{text}"
    );
    assert_eq!(text.matches("next update due").count(), 1, "{text}");

    let (mut server, base) = spawn_serve(&config, &["--no-notifier"]);
    let summary: Json =
        serde_json::from_str(&http_get(&base, "/api/v2/summary.json").1).expect("json");
    let incidents = summary["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["next_update_at"], due_text.as_str());
    let fixture: Json =
        serde_json::from_str(include_str!("statuspage_webhook.json")).expect("fixture");
    let mut differences = Vec::new();
    shape_differences(
        &fixture["incident"],
        &incidents[0],
        "incident",
        &mut differences,
    );
    assert!(differences.is_empty(), "{differences:?}");
    let all: Json =
        serde_json::from_str(&http_get(&base, "/api/v2/incidents.json").1).expect("json");
    let by_id = |id: &str| {
        all["incidents"]
            .as_array()
            .expect("incidents")
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(by_id(&open)["next_update_at"], due_text.as_str());
    let resolved = by_id(&old);
    assert!(resolved["next_update_at"].is_null(), "{resolved}");
    assert_eq!(resolved["status"], "resolved");

    let machine = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (lang, words) in [
        ("en", "Next update by"),
        ("de", "Nächstes Update bis"),
        ("ja", "次回の更新予定"),
    ] {
        let (status, page) = http_get(&base, &format!("/?lang={lang}"));
        assert_eq!(status, 200);
        let line = page
            .split("<p class=\"next-update\">")
            .nth(1)
            .and_then(|rest| rest.split("</p>").next())
            .unwrap_or_else(|| panic!("{lang}: no next update on the page"));
        assert!(line.contains(words), "{lang}: {line}");
        assert!(
            line.contains(&format!("datetime=\"{machine}\"")),
            "{lang}: {line}"
        );
        if lang == "en" {
            assert!(line.contains("(in 1 hour)"), "{line}");
        }
        assert_eq!(page.matches("class=\"next-update\"").count(), 1, "{lang}");
    }
    terminate(&mut server);

    // An incident silent past its due time says so.
    at_minute(
        &config,
        0,
        &[
            "incident",
            "create",
            "--name",
            "Stale",
            "--impact",
            "minor",
            "--message",
            "Hm.",
        ],
    );
    let (mut server, base) = spawn_serve(&config, &["--no-notifier"]);
    let late = chrono::DateTime::parse_from_rfc3339(&cadence_clock(120))
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (lang, words) in [
        ("en", "The next update was due by"),
        ("de", "Das nächste Update war fällig bis"),
        ("ja", "更新予定時刻を過ぎています"),
    ] {
        let page = http_get(&base, &format!("/?lang={lang}")).1;
        let lines: Vec<&str> = page
            .split("<p class=\"next-update\">")
            .skip(1)
            .filter_map(|rest| rest.split("</p>").next())
            .collect();
        assert_eq!(lines.len(), 2, "{lang}: {lines:?}");
        assert!(
            lines[1].contains(words) && lines[1].contains(&format!("datetime=\"{late}\"")),
            "{lang}: {}",
            lines[1]
        );
    }
    terminate(&mut server);

    // A malformed cadence: refused, one line, naming the key; nothing else said.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("critical = \"30m\"", "critical = \"half an hour\""),
    )
    .expect("config");
    let output = lifeboat(&config, &["incident", "list"]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert_eq!(error.trim().lines().count(), 1, "{error}");
    assert!(
        error.contains("[status.update_every] critical = \"half an hour\""),
        "{error}"
    );
}
