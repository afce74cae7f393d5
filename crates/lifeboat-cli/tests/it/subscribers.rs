//! Subscribers and support on a real `lifeboat serve`: forms posted over HTTP, links
//! followed in headless Chromium, and what each enqueues read from the control store's
//! outbox: double opt-in, unsubscribe by button only, rate limits, support requests
//! without a URL matched by email, by domain and not at all, and nothing private on any
//! public page.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde_json::Value;

use crate::common::*;

const TOKEN: &str = "subscribers-test-operator-token-0123456789";

/// Sites 7301..=7303, each with an admin (the contact) and a member; site 7303's admin
/// has a free-mail address.
fn setup(work: &Workdir) -> PathBuf {
    let db = work.path("shop.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL,
             email TEXT, display_name TEXT, role TEXT);
         INSERT INTO sites VALUES (7301, 'Acme'), (7302, 'Beta'), (7303, 'Solo');
         INSERT INTO users VALUES
             (1, 7301, 'ann@acme.example', 'Ann', 'admin'),
             (2, 7301, 'joe@acme.example', 'Joe', 'member'),
             (3, 7302, 'bob@beta.example', 'Bob', 'admin'),
             (4, 7303, 'carl@gmail.com', 'Carl', 'admin');",
    )
    .expect("schema");
    let config = work.init_config(&format!(
        r#"
[vault]
url = "{vault}"
[sources.shop]
url = "sqlite://{db}"
tenant_column = "site_id"
[sources.shop.tables.sites]
tenant_column = "id"
[contacts]
source = "shop"
table = "users"
email_column = "email"
name_column = "display_name"
where = "role = 'admin'"
[server]
token = "{TOKEN}"
[server.components]
shop = "Shop"
"#,
        vault = work.vault_url(),
        db = db.display()
    ));
    lifeboat_ok(&config, &["capture", "--until-caught-up"]);
    config
}

fn serve(config: &Path) -> (Child, String) {
    let mut server = lifeboat_command(config, &["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

/// One request over a real socket: status, head (lower-case) and body.
fn request(base: &str, method: &str, path: &str, extra: &str, body: &str) -> (u16, String, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{response}"));
    (status, head.to_lowercase(), body.to_string())
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let mut out = format!("{k}=");
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn post_form(base: &str, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    request(
        base,
        "POST",
        path,
        "Content-Type: application/x-www-form-urlencoded\r\n",
        &encode(fields),
    )
}

/// The outbox as (event, recipient kind, address, tenant, body), oldest first.
fn outbox(config: &Path) -> Vec<(String, String, String, Option<String>, Value)> {
    let store = config.parent().expect("dir").join("lifeboat-control.db");
    let conn = rusqlite::Connection::open(store).expect("control store");
    let mut stmt = conn
        .prepare(
            "SELECT event, recipient, address, tenant, body FROM outbox
             ORDER BY created_at_us, position, id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            serde_json::from_str(&r.get::<_, String>(4)?).expect("body"),
        ))
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

/// The outbox rows of `event`, as (recipient kind, address, tenant, body).
fn sent(config: &Path, event: &str) -> Vec<(String, String, Option<String>, Value)> {
    outbox(config)
        .into_iter()
        .filter(|m| m.0 == event)
        .map(|(_, kind, address, tenant, body)| (kind, address, tenant, body))
        .collect()
}

fn incident(config: &Path, args: &[&str]) -> String {
    lifeboat_ok(config, args).trim().to_string()
}

/// The DOM of `url` in headless Chromium.
fn browse(url: &str, profile: &Path) -> String {
    let chromium = std::env::var("LIFEBOAT_TEST_CHROMIUM").expect(
        "LIFEBOAT_TEST_CHROMIUM is not set: run the tests with scripts/test, which installs \
         Chromium",
    );
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium: {}", stderr(&output));
    stdout(&output)
}

fn subscriber_state(config: &Path, address: &str) -> String {
    let list: Value =
        serde_json::from_str(&lifeboat_ok(config, &["subscribers", "list", "--json"]))
            .expect("json");
    list.as_array()
        .expect("array")
        .iter()
        .find(|s| s["address"] == address)
        .map(|s| s["state"].as_str().expect("state").to_string())
        .unwrap_or_else(|| panic!("no subscriber {address}: {list}"))
}

#[test]
fn subscribers_opt_in_unsubscribe_by_button_and_are_rate_limited() {
    let work = Workdir::new();
    let config = setup(&work);
    let (mut server, base) = serve(&config);
    let profile = work.path("chromium-profile");

    // The public page has the form; a browser renders it.
    let page = browse(&format!("{base}/"), &profile);
    assert!(page.contains("action=\"/subscribe\""), "{page}");
    assert!(page.contains("name=\"component\""), "{page}");

    // Subscribing: a pending subscriber and one confirmation, with its two links.
    let (status, _, ack) = post_form(&base, "/subscribe", &[("email", "Pat@Reader.example")]);
    assert_eq!(status, 200, "{ack}");
    assert!(ack.contains("confirmation link is on its way"), "{ack}");
    assert_eq!(subscriber_state(&config, "pat@reader.example"), "pending");
    let confirmations = sent(&config, "subscription_confirmation");
    assert_eq!(confirmations.len(), 1);
    let (kind, address, tenant, body) = &confirmations[0];
    assert_eq!(
        (kind.as_str(), address.as_str()),
        ("address", "pat@reader.example")
    );
    assert_eq!(tenant, &None);
    let confirm_url = body["confirm_url"]
        .as_str()
        .expect("confirm_url")
        .to_string();
    let unsubscribe_url = body["list_unsubscribe"]
        .as_str()
        .expect("unsubscribe")
        .to_string();
    assert!(confirm_url.starts_with(&format!("{base}/subscribe/confirm?token=")));
    assert!(unsubscribe_url.starts_with(&format!("{base}/unsubscribe?token=")));
    let confirm_token = confirm_url.rsplit('=').next().expect("token");
    assert_eq!(confirm_token.len(), 64, "256 random bits");

    // Pending hears nothing.
    let id = incident(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Checkout slow",
            "--status",
            "investigating",
            "--impact",
            "minor",
            "--message",
            "Looking into it.",
        ],
    );
    assert!(sent(&config, "incident_created")
        .iter()
        .all(|m| m.1 != "pat@reader.example"));

    // The link, followed in a browser, confirms.
    let dom = browse(&confirm_url, &profile);
    assert!(dom.contains("Your subscription is confirmed"), "{dom}");
    assert_eq!(subscriber_state(&config, "pat@reader.example"), "confirmed");
    let (status, _, _) = request(&base, "GET", &confirm_url[base.len()..], "", "");
    assert_eq!(status, 404, "a confirmation link works once");

    // Subscribing again: the same answer, nothing sent.
    let (status, _, again) = post_form(&base, "/subscribe", &[("email", "pat@reader.example")]);
    assert_eq!((status, again.as_str()), (200, ack.as_str()));
    assert_eq!(sent(&config, "subscription_confirmation").len(), 1);

    // Confirmed hears the next update, with the unsubscribe link in the message.
    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &id,
            "--status",
            "identified",
            "--message",
            "Found it.",
        ],
    );
    let updates = sent(&config, "incident_updated");
    let to_pat: Vec<_> = updates
        .iter()
        .filter(|m| m.1 == "pat@reader.example")
        .collect();
    assert_eq!(to_pat.len(), 1, "{updates:?}");
    assert_eq!(to_pat[0].0, "address");
    assert_eq!(to_pat[0].3["list_unsubscribe"], unsubscribe_url.as_str());
    assert_eq!(to_pat[0].3["update"]["body"], "Found it.");
    assert_eq!(to_pat[0].3["incident"]["name"], "Checkout slow");

    // Components: a subscriber of the shop hears only of incidents naming it.
    let components: Value =
        serde_json::from_str(&http_get(&base, "/api/v2/components.json").1).expect("json");
    let shop = components["components"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _, _) = post_form(
        &base,
        "/subscribe",
        &[("email", "quinn@reader.example"), ("component", &shop)],
    );
    assert_eq!(status, 200);
    let quinn = sent(&config, "subscription_confirmation")
        .into_iter()
        .find(|m| m.1 == "quinn@reader.example")
        .expect("quinn's confirmation");
    let (status, _, _) = request(
        &base,
        "POST",
        &quinn.3["confirm_url"].as_str().expect("url")[base.len()..],
        "",
        "",
    );
    assert_eq!(status, 200, "POST confirms too");

    // Operators add a webhook, by the CLI and by the API; both audited. The CLI prints the
    // id, then the webhook's signing secret.
    let added = incident(
        &config,
        &[
            "subscribers",
            "add",
            "--webhook",
            "http://127.0.0.1:9/hook",
            "--by",
            "ops",
        ],
    );
    let (hook, secret) = added.split_once('\n').expect("id and secret");
    let hook = hook.to_string();
    let secret = secret.strip_prefix("secret ").expect("secret");
    assert_eq!(secret.len(), 64, "{added}");
    let audit = lifeboat_ok(&config, &["audit", "--json"]);
    assert!(!audit.contains(secret), "the secret is never audited");
    // Bad input is refused with exit 2 and adds nothing.
    for bad in [
        &["subscribers", "add", "--email", "not-an-address"][..],
        &["subscribers", "add", "--webhook", "ftp://x.example/h"],
        &[
            "subscribers",
            "add",
            "--webhook",
            "http://x.example/h",
            "--component",
            "nosuch",
        ],
        &["subscribers", "add", "--webhook", "http://127.0.0.1:9/hook"],
        &["subscribers", "remove", "nosuchid"],
    ] {
        let out = lifeboat(&config, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let listed: Value =
        serde_json::from_str(&lifeboat_ok(&config, &["subscribers", "list", "--json"]))
            .expect("json");
    assert_eq!(listed.as_array().expect("array").len(), 3, "{listed}");
    let (status, _, created) = request(
        &base,
        "POST",
        "/api/operator/subscribers",
        &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
        r#"{"webhook": "http://127.0.0.1:9/other", "by": "api-oper"}"#,
    );
    assert_eq!(status, 201, "{created}");
    let (status, _, _) = request(
        &base,
        "POST",
        "/api/operator/subscribers",
        "Content-Type: application/json\r\n",
        r#"{"webhook": "http://127.0.0.1:9/third"}"#,
    );
    assert_eq!(status, 401, "the operator API wants its token");
    let audit: Value =
        serde_json::from_str(&lifeboat_ok(&config, &["audit", "--json"])).expect("json");
    let adds: Vec<(&str, &str)> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "subscriber-add")
        .map(|e| {
            (
                e["actor"].as_str().expect("actor"),
                e["details"]["address"].as_str().expect("address"),
            )
        })
        .collect();
    assert_eq!(
        adds,
        [
            ("ops", "http://127.0.0.1:9/hook"),
            ("api-oper", "http://127.0.0.1:9/other")
        ]
    );

    lifeboat_ok(
        &config,
        &[
            "incident",
            "update",
            &id,
            "--status",
            "monitoring",
            "--message",
            "Fixed.",
            "--component",
            "shop=degraded_performance",
        ],
    );
    let monitoring: Vec<(String, String)> = sent(&config, "incident_updated")
        .into_iter()
        // Emails carry the update; webhooks the incident with every update.
        .filter(|m| m.0 != "operators" && m.3.to_string().contains("Fixed."))
        .map(|m| (m.0, m.1))
        .collect();
    assert_eq!(
        monitoring,
        [
            ("address".to_string(), "pat@reader.example".to_string()),
            ("address".to_string(), "quinn@reader.example".to_string()),
            ("webhook".to_string(), "http://127.0.0.1:9/hook".to_string()),
            (
                "webhook".to_string(),
                "http://127.0.0.1:9/other".to_string()
            ),
        ]
    );
    // Quinn did not hear of the update that named no component.
    assert!(sent(&config, "incident_updated")
        .iter()
        .all(|m| !(m.1 == "quinn@reader.example" && m.3["update"]["body"] == "Found it.")));
    lifeboat_ok(&config, &["subscribers", "remove", &hook, "--by", "ops"]);

    // Unsubscribing: following the link (a browser, a mail scanner) only shows a button.
    let dom = browse(&unsubscribe_url, &profile);
    assert!(
        dom.contains("<button type=\"submit\">Unsubscribe</button>"),
        "{dom}"
    );
    assert_eq!(subscriber_state(&config, "pat@reader.example"), "confirmed");
    // One-click (RFC 8058): a POST to the same URL.
    let (status, _, done) = request(
        &base,
        "POST",
        &unsubscribe_url[base.len()..],
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("You are unsubscribed"));
    assert_eq!(
        subscriber_state(&config, "pat@reader.example"),
        "unsubscribed"
    );
    lifeboat_ok(
        &config,
        &["incident", "resolve", &id, "--message", "All good."],
    );
    let resolved: Vec<String> = sent(&config, "incident_resolved")
        .into_iter()
        .filter(|m| m.0 != "operators")
        .map(|m| m.1)
        .collect();
    assert_eq!(
        resolved,
        ["quinn@reader.example", "http://127.0.0.1:9/other"]
    );

    // Rate limits. Per address: three an hour; the fourth is refused, readably.
    for _ in 0..3 {
        let (status, _, _) = post_form(&base, "/subscribe", &[("email", "rae@reader.example")]);
        assert_eq!(status, 200);
    }
    let (status, head, body) = post_form(&base, "/subscribe", &[("email", "rae@reader.example")]);
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: "), "{head}");
    assert!(body.contains("Too many requests"), "{body}");
    assert_eq!(
        sent(&config, "subscription_confirmation")
            .iter()
            .filter(|m| m.1 == "rae@reader.example")
            .count(),
        3
    );
    // Per client IP: ten an hour from one address, whatever the email (seven so far).
    for n in 0..3 {
        let (status, _, _) = post_form(
            &base,
            "/subscribe",
            &[("email", &format!("s{n}@reader.example"))],
        );
        assert_eq!(status, 200);
    }
    let (status, _, _) = post_form(&base, "/subscribe", &[("email", "new@reader.example")]);
    assert_eq!(status, 429);
    assert!(sent(&config, "subscription_confirmation")
        .iter()
        .all(|m| m.1 != "new@reader.example"));

    // Nothing of any subscriber on the public outputs.
    for path in public_paths() {
        let (_, body) = http_get(&base, path);
        for secret in [
            "pat@reader.example",
            "quinn@reader.example",
            "127.0.0.1:9",
            confirm_token,
        ] {
            assert!(!body.contains(secret), "{path} shows {secret}");
        }
        assert!(!body.contains(&unsubscribe_url[unsubscribe_url.len() - 64..]));
    }
    terminate(&mut server);
}

fn public_paths() -> [&'static str; 13] {
    [
        "/",
        "/subscribe",
        "/support",
        "/history.atom",
        "/api/lifeboat/campaigns.json",
        "/api/v2/summary.json",
        "/api/v2/status.json",
        "/api/v2/components.json",
        "/api/v2/incidents.json",
        "/api/v2/incidents/unresolved.json",
        "/api/v2/scheduled-maintenances.json",
        "/api/v2/scheduled-maintenances/upcoming.json",
        "/api/v2/scheduled-maintenances/active.json",
    ]
}

#[test]
fn support_requests_without_a_url_reach_only_the_matched_tenants_contacts() {
    let work = Workdir::new();
    let config = setup(&work);
    let conn = rusqlite::Connection::open(work.path("shop.db")).expect("open");
    let at: String = conn
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })
        .expect("now");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let id = incident(
        &config,
        &[
            "incident",
            "create",
            "--name",
            "Sites lost",
            "--status",
            "identified",
            "--impact",
            "critical",
            "--message",
            "Restoring.",
        ],
    );
    let tenants = work.path("tenants.txt");
    std::fs::write(&tenants, "7301\n7302\n").expect("tenants");
    let campaign = incident(
        &config,
        &[
            "campaign",
            "start",
            "--incident",
            &id,
            "--tenants-from",
            tenants.to_str().expect("path"),
            "--at",
            &at,
        ],
    );
    // Site 7303's admin is a contact too, but its tenant is in no campaign.
    let csv = work.path("contacts.csv");
    std::fs::write(
        &csv,
        "tenant,email,name,locale\n7303,carl@gmail.com,Carl,\n",
    )
    .expect("csv");
    lifeboat_ok(
        &config,
        &["contacts", "import", csv.to_str().expect("path")],
    );
    let links: Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &[
            "campaign",
            "links",
            &campaign,
            "--base-url",
            "http://x",
            "--json",
        ],
    ))
    .expect("links");
    let token_of = |tenant: &str| -> String {
        links
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["tenant"] == tenant)
            .and_then(|l| l["link"].as_str())
            .and_then(|l| l.rsplit('/').next())
            .expect("link")
            .to_string()
    };
    let (acme, beta) = (token_of("7301"), token_of("7302"));
    let (mut server, base) = serve(&config);

    let page = http_get(&base, "/support").1;
    assert!(page.contains("name=\"site_url\""), "{page}");
    assert!(!page.contains("name=\"site_url\" required"));

    // By email: the contact itself wrote.
    let (status, _, ack) = post_form(
        &base,
        "/support",
        &[
            ("email", "ann@acme.example"),
            ("message", "Our site is gone!"),
        ],
    );
    assert_eq!(status, 200, "{ack}");
    // By domain: a colleague whose address is no contact; the answer goes to the contact.
    let (_, _, ack_domain) = post_form(
        &base,
        "/support",
        &[
            ("email", "dave@beta.example"),
            ("message", "Where is our data?"),
            ("company", "Beta Ltd"),
            ("site_url", ""),
        ],
    );
    // A free-mail address matches by the whole address only, never by its domain.
    let (_, _, ack_free) = post_form(
        &base,
        "/support",
        &[
            ("email", "eve@gmail.com"),
            ("message", "Is it me?"),
            ("tenant", "7303"),
        ],
    );
    let (_, _, ack_carl) = post_form(
        &base,
        "/support",
        &[("email", "carl@gmail.com"), ("message", "Anything wrong?")],
    );
    let (_, _, ack_none) = post_form(
        &base,
        "/support",
        &[("email", "nobody@unknown.example"), ("message", "Hello?")],
    );
    for other in [&ack_domain, &ack_free, &ack_carl, &ack_none] {
        assert_eq!(
            other, &ack,
            "the acknowledgement tells nothing of what matched"
        );
    }

    // Exactly what is enqueued: each request to the operators; a reply with the stage and
    // that tenant's own link to the matched contact only.
    let requests: Vec<String> = sent(&config, "support_request")
        .into_iter()
        .map(|(kind, _, _, body)| {
            assert_eq!(kind, "operators");
            body["support_request"]["email"]
                .as_str()
                .expect("email")
                .to_string()
        })
        .collect();
    assert_eq!(
        requests,
        [
            "ann@acme.example",
            "dave@beta.example",
            "eve@gmail.com",
            "carl@gmail.com",
            "nobody@unknown.example"
        ]
    );
    let replies: Vec<(String, String, Option<String>, String, String)> =
        sent(&config, "support_reply")
            .into_iter()
            .map(|(kind, address, tenant, body)| {
                (
                    kind,
                    address,
                    tenant,
                    body["token"].as_str().expect("token").to_string(),
                    body["stage"].as_str().expect("stage").to_string(),
                )
            })
            .collect();
    assert_eq!(
        replies,
        [
            (
                "contact".into(),
                "ann@acme.example".into(),
                Some("7301".into()),
                acme.clone(),
                "queued".into()
            ),
            (
                "contact".into(),
                "bob@beta.example".into(),
                Some("7302".into()),
                beta.clone(),
                "queued".into()
            ),
        ]
    );

    // Operators list and read them.
    let unmatched: Value = serde_json::from_str(&lifeboat_ok(
        &config,
        &["support", "list", "--unmatched", "--json"],
    ))
    .expect("json");
    let emails: Vec<&str> = unmatched
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["email"].as_str().expect("email"))
        .collect();
    assert_eq!(emails, ["nobody@unknown.example", "eve@gmail.com"]);
    let all: Value =
        serde_json::from_str(&lifeboat_ok(&config, &["support", "list", "--json"])).expect("json");
    let dave = all
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["email"] == "dave@beta.example")
        .expect("dave");
    assert_eq!(dave["company"], "Beta Ltd");
    assert_eq!(dave["site_url"], Value::Null);
    assert_eq!(
        dave["matches"],
        serde_json::json!([{"tenant": "7302", "contact": "bob@beta.example", "by": "domain"}])
    );
    let shown = lifeboat_ok(
        &config,
        &["support", "show", dave["id"].as_str().expect("id")],
    );
    assert!(
        shown.contains("Where is our data?") && shown.contains("by domain"),
        "{shown}"
    );
    let missing = lifeboat(&config, &["support", "show", "nosuchid"]);
    assert_eq!(missing.status.code(), Some(2));

    // Bad input: a clear answer, nothing filed (requests 6 to 9 from this address).
    let before = outbox(&config).len();
    let (status, _, body) = post_form(&base, "/support", &[("email", "x@y.example")]);
    assert_eq!(status, 400);
    assert!(body.contains("Please write a message."), "{body}");
    let (status, _, _) = post_form(
        &base,
        "/support",
        &[("email", "not an address"), ("message", "hi")],
    );
    assert_eq!(status, 400);
    let long = "x".repeat(9000);
    let (status, _, body) = post_form(
        &base,
        "/support",
        &[("email", "x@y.example"), ("message", &long)],
    );
    assert_eq!(status, 400);
    assert!(body.contains("longer than 8192 bytes"), "{body}");
    let huge = "x".repeat(20_000);
    let (status, _, _) = post_form(
        &base,
        "/support",
        &[("email", "x@y.example"), ("message", &huge)],
    );
    assert_eq!(status, 413);
    assert_eq!(outbox(&config).len(), before);
    assert_eq!(
        serde_json::from_str::<Value>(&lifeboat_ok(&config, &["support", "list", "--json"]))
            .expect("json")
            .as_array()
            .expect("array")
            .len(),
        5
    );
    // The tenth request in the hour is taken, the eleventh refused.
    let (status, _, _) = post_form(
        &base,
        "/support",
        &[("email", "ten@unknown.example"), ("message", "10")],
    );
    assert_eq!(status, 200);
    let (status, _, body) = post_form(
        &base,
        "/support",
        &[("email", "eleven@unknown.example"), ("message", "11")],
    );
    assert_eq!(status, 429);
    assert!(body.contains("Too many requests"));

    // Nothing private on any public page, JSON, feed or acknowledgement.
    let mut bodies: Vec<(String, String)> = public_paths()
        .iter()
        .map(|p| (p.to_string(), http_get(&base, p).1))
        .collect();
    bodies.push(("acknowledgement".into(), ack.clone()));
    for (path, body) in &bodies {
        for secret in [
            "ann@acme.example",
            "bob@beta.example",
            "carl@gmail.com",
            "acme.example",
            "7301",
            "7302",
            "7303",
            &acme,
            &beta,
        ] {
            assert!(!body.contains(secret), "{path} shows {secret}");
        }
    }
    terminate(&mut server);
}

/// The subscribe, support and unsubscribe pages and their answers in German and Japanese,
/// by `?lang=` and by `Accept-Language`; a form keeps the language it was read in through
/// its POST; English without either.
#[test]
fn the_forms_and_their_answers_are_in_the_readers_language() {
    let work = Workdir::new();
    let config = setup(&work);
    let (mut server, base) = serve(&config);
    let get = |path: &str, accept: &str| {
        let extra = if accept.is_empty() {
            String::new()
        } else {
            format!("Accept-Language: {accept}\r\n")
        };
        request(&base, "GET", path, &extra, "")
    };

    // By the query.
    let (status, head, page) = get("/subscribe?lang=de", "");
    assert_eq!(status, 200);
    assert!(head.contains("vary: accept-language"), "{head}");
    assert!(page.contains("<html lang=\"de\">"), "{page}");
    assert!(page.contains("Benachrichtigungen abonnieren"), "{page}");
    assert!(page.contains("<button type=\"submit\">Abonnieren</button>"));
    assert!(page.contains("name=\"lang\" value=\"de\""), "{page}");
    assert!(
        page.contains("href=\"/?lang=de\">Zurück zur Statusseite"),
        "{page}"
    );
    let (_, _, page) = get("/support?lang=ja", "de");
    assert!(page.contains("<html lang=\"ja\">"), "{page}");
    assert!(page.contains("サポートに問い合わせる"), "{page}");
    assert!(page.contains("サイトのアドレス（任意）"), "{page}");
    assert!(page.contains("name=\"lang\" value=\"ja\""), "{page}");
    // By the browser's language.
    let (_, _, page) = get("/support", "ja-JP,ja;q=0.9,en;q=0.5");
    assert!(page.contains("サポートに問い合わせる"), "{page}");
    let (_, _, page) = get("/subscribe", "de-AT");
    assert!(page.contains("Benachrichtigungen abonnieren"), "{page}");
    // The public page's own form and its link to support.
    let (_, _, page) = get("/?lang=ja", "");
    assert!(
        page.contains("<button type=\"submit\">購読する</button>"),
        "{page}"
    );
    assert!(page.contains("href=\"/support?lang=ja\""), "{page}");
    // Neither: English.
    let (_, _, page) = get("/subscribe", "fr");
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(page.contains("Subscribe to updates"), "{page}");

    // The answers: the form's language, whatever the browser says.
    let (status, _, body) = request(
        &base,
        "POST",
        "/subscribe",
        "Content-Type: application/x-www-form-urlencoded\r\nAccept-Language: ja\r\n",
        &encode(&[("email", "uta@reader.example"), ("lang", "de")]),
    );
    assert_eq!(status, 200);
    assert!(body.contains("<html lang=\"de\">"), "{body}");
    assert!(body.contains("Bitte prüfen Sie Ihre E-Mails"), "{body}");
    // Without a `lang` field, the browser's.
    let (status, _, body) = request(
        &base,
        "POST",
        "/subscribe",
        "Content-Type: application/x-www-form-urlencoded\r\nAccept-Language: ja\r\n",
        &encode(&[("email", "not an address")]),
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("有効なメールアドレスを入力してください。"),
        "{body}"
    );
    // A refused support request says why in the form's language and files nothing.
    let before = outbox(&config).len();
    let (status, _, body) = post_form(
        &base,
        "/support",
        &[("email", "ann@acme.example"), ("lang", "ja")],
    );
    assert_eq!(status, 400);
    assert!(body.contains("メッセージを入力してください。"), "{body}");
    let long = "x".repeat(600);
    let (status, _, body) = post_form(
        &base,
        "/support",
        &[
            ("email", "ann@acme.example"),
            ("message", "Hilfe"),
            ("company", &long),
            ("lang", "de"),
        ],
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("Firma (optional): höchstens 512 Bytes, bitte."),
        "{body}"
    );
    assert_eq!(outbox(&config).len(), before);
    let (status, _, body) = post_form(
        &base,
        "/support",
        &[
            ("email", "ann@acme.example"),
            ("message", "Wo sind unsere Daten?"),
            ("lang", "de"),
        ],
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("Danke, wir haben Ihre Nachricht erhalten."),
        "{body}"
    );
    // A link that is no subscriber's, in the language it names.
    let (status, _, body) = get("/unsubscribe?token=nosuch&lang=ja", "de");
    assert_eq!(status, 404);
    assert!(
        body.contains("このリンクは無効か、すでに使用されています。"),
        "{body}"
    );
    let (status, _, body) = get("/subscribe/confirm?token=nosuch", "de");
    assert_eq!(status, 404);
    assert!(body.contains("Dieser Link ist ungültig"), "{body}");
    // The subscriber's language is kept: the confirmation waits in German.
    let confirmation = sent(&config, "subscription_confirmation");
    let uta = confirmation
        .iter()
        .find(|m| m.1 == "uta@reader.example")
        .expect("uta's confirmation");
    assert_eq!(uta.3["lang"], "de");
    terminate(&mut server);
}
