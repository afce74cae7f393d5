//! Every endpoint, in process, against a real control store (SQLite): the Statuspage v2
//! JSON checked against fixtures written from Statuspage's published API documentation
//! (same keys, same value kinds, same enums), HTTP caching and CORS, the Atom feed, the
//! private pages, and that public outputs never carry private data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use lifeboat_control::{
    Campaign, ComponentStatus, Contact, ContactOrigin, ControlStore, Impact, IncidentChange,
    IncidentStatus, Stage,
};
use lifeboat_web::{router, AppState, Limits, PageInfo};

const TOKEN: &str = "operator-secret";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

/// `actual` has exactly `expected`'s keys, recursively, with values of the same kind
/// (null in the fixture: null or a string); array elements are compared with the
/// fixture's first element.
fn same_shape(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<&String> = e.keys().collect();
            let ak: Vec<&String> = a.keys().collect();
            assert_eq!(ek, ak, "keys of {path}");
            for (k, v) in e {
                same_shape(v, &a[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, v) in a.iter().enumerate() {
                    same_shape(first, v, &format!("{path}[{i}]"));
                }
            }
        }
        (Value::Null, Value::Null | Value::String(_)) => {}
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_)) => {}
        (e, a) => panic!("{path}: expected a value like {e}, got {a}"),
    }
}

fn check_enums(body: &Value) {
    for c in body["components"].as_array().into_iter().flatten() {
        let status = c["status"].as_str().expect("status");
        assert!(status.parse::<ComponentStatus>().is_ok(), "{status}");
    }
    for i in body["incidents"].as_array().into_iter().flatten() {
        let status = i["status"].as_str().expect("status");
        assert!(status.parse::<IncidentStatus>().is_ok(), "{status}");
        let impact = i["impact"].as_str().expect("impact");
        assert!(impact.parse::<Impact>().is_ok(), "{impact}");
        for u in i["incident_updates"].as_array().expect("updates") {
            let status = u["status"].as_str().expect("status");
            assert!(status.parse::<IncidentStatus>().is_ok(), "{status}");
        }
    }
    if let Some(indicator) = body["status"]["indicator"].as_str() {
        assert!(["none", "minor", "major", "critical", "maintenance"].contains(&indicator));
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// The control store's file.
    path: std::path::PathBuf,
    state: AppState,
    control: ControlStore,
    /// tenant -> link token
    tokens: BTreeMap<String, String>,
    incident: String,
}

/// A control store with two components, an open incident with an update, a resolved one,
/// and a campaign whose tenants stand at different stages.
fn fixture_store() -> Fixture {
    fixture_with(Limits::default())
}

fn fixture_with(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.db");
    let url = path.to_str().expect("utf-8").to_string();
    let mut control = ControlStore::open(&url).expect("control");
    control
        .ensure_components(
            &BTreeMap::from([
                ("tracker".to_string(), "Issue tracker".to_string()),
                ("wiki".to_string(), "Wiki".to_string()),
            ]),
            "ops",
        )
        .expect("components");
    let old = control
        .change_incident(
            None,
            &IncidentChange {
                name: Some("Slow searches".into()),
                status: IncidentStatus::Investigating,
                impact: Some(Impact::Minor),
                message: "Searches are slow.".into(),
                translations: Default::default(),
                components: BTreeMap::from([("wiki".into(), ComponentStatus::DegradedPerformance)]),
            },
            "ops",
        )
        .expect("incident");
    control
        .change_incident(
            Some(&old),
            &IncidentChange {
                status: IncidentStatus::Resolved,
                message: "Fixed.".into(),
                ..Default::default()
            },
            "ops",
        )
        .expect("resolve");
    let incident = control
        .change_incident(
            None,
            &IncidentChange {
                name: Some("Sites deleted by a maintenance script".into()),
                status: IncidentStatus::Identified,
                impact: Some(Impact::Critical),
                message: "We are restoring the <affected> sites & their data.".into(),
                translations: BTreeMap::from([(
                    "de".into(),
                    "Wir stellen die <betroffenen> Sites & ihre Daten wieder her.".into(),
                )]),
                components: BTreeMap::from([("tracker".into(), ComponentStatus::PartialOutage)]),
            },
            "ops",
        )
        .expect("incident");
    let campaign = Campaign {
        id: "campaign0001".into(),
        incident: incident.clone(),
        target: serde_json::json!({"before_tx": "tracker:48213"}),
        target_time: "2026-04-05T07:38:12.000000Z".into(),
        batch_size: 2,
        priority: String::new(),
        created_at: "2026-04-05T07:45:00.000000Z".into(),
        created_at_us: 0,
        created_by: "ops".into(),
        phases: Vec::new(),
    };
    let tenants: Vec<(String, i64)> = (1..=5)
        .map(|i| (format!("secret-tenant-{i}"), 10 * i))
        .collect();
    control
        .create_campaign(&campaign, &tenants, &[])
        .expect("campaign");
    // Tenants 1 and 2 restored (awaiting acceptance), 3 and 4 restoring, 5 queued.
    control
        .claim("w1", None, 60_000_000)
        .expect("claim")
        .expect("batch");
    for t in ["secret-tenant-1", "secret-tenant-2"] {
        assert!(control
            .set_stage(
                "w1",
                "campaign0001",
                t,
                Stage::AwaitingAcceptance,
                None,
                Some(3)
            )
            .expect("stage"));
    }
    control
        .claim("w2", None, 60_000_000)
        .expect("claim")
        .expect("batch");
    // Contacts, private: imported, read from the vault, and the campaign's copy.
    let contact = |origin: ContactOrigin| Contact {
        tenant: "secret-tenant-1".into(),
        email: format!("secret-admin-{origin}@one.example"),
        name: Some("Secret Admin".into()),
        locale: Some("de".into()),
        origin,
        read_at: None,
    };
    let contacts = [
        contact(ContactOrigin::Import),
        contact(ContactOrigin::Vault),
    ];
    control.import_contacts(&contacts[..1]).expect("import");
    control
        .replace_vault_contacts(&["secret-tenant-1".into()], &contacts[1..])
        .expect("vault contacts");
    control
        .record_campaign_contacts("campaign0001", &contacts)
        .expect("campaign contacts");
    let tokens = control
        .campaign_tenants(Some("campaign0001"))
        .expect("tenants")
        .into_iter()
        .map(|t| (t.tenant, t.token))
        .collect();
    let state = AppState::new(
        &url,
        PageInfo::new("Example Status", "https://status.example.net"),
        Some(TOKEN.to_string()),
        None,
        limits,
    )
    .expect("state");
    let control = ControlStore::open(&url).expect("control");
    Fixture {
        _dir: dir,
        path,
        state,
        control,
        tokens,
        incident,
    }
}

async fn call(
    state: &AppState,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn get(state: &AppState, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    call(
        state,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

async fn get_json(state: &AppState, path: &str) -> Value {
    let (status, headers, body) = get(state, path).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
    assert!(headers.contains_key(header::ETAG), "{path}");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .expect("cc")
            .contains("max-age"),
        "{path}"
    );
    serde_json::from_slice(&body).expect("json")
}

#[tokio::test]
async fn statuspage_json_has_the_documented_shapes() {
    let f = fixture_store();
    let page = fixture("page.json");
    let component = fixture("component.json");
    let incident = fixture("incident.json");
    let status = fixture("status.json");
    let incidents_doc = serde_json::json!({"page": page, "incidents": [incident]});
    let maintenances = serde_json::json!({"page": page, "scheduled_maintenances": []});

    let summary = get_json(&f.state, "/api/v2/summary.json").await;
    same_shape(
        &serde_json::json!({"page": page, "components": [component], "incidents": [incident],
                            "scheduled_maintenances": [], "status": status}),
        &summary,
        "summary",
    );
    check_enums(&summary);
    // Only the open incident, with its update and its component.
    let open = summary["incidents"].as_array().expect("incidents");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["id"], f.incident.as_str());
    assert_eq!(open[0]["impact"], "critical");
    assert_eq!(open[0]["components"][0]["name"], "Issue tracker");
    assert_eq!(
        open[0]["incident_updates"][0]["affected_components"][0]["new_status"],
        "partial_outage"
    );
    assert_eq!(summary["status"]["indicator"], "critical");
    assert_eq!(summary["status"]["description"], "Major Service Outage");
    let names: Vec<&str> = summary["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Issue tracker", "Wiki"]);
    // The wiki went back to operational when its incident was resolved.
    assert_eq!(summary["components"][1]["status"], "operational");

    let s = get_json(&f.state, "/api/v2/status.json").await;
    same_shape(
        &serde_json::json!({"page": page, "status": status}),
        &s,
        "status",
    );
    let c = get_json(&f.state, "/api/v2/components.json").await;
    same_shape(
        &serde_json::json!({"page": page, "components": [component]}),
        &c,
        "components",
    );
    let all = get_json(&f.state, "/api/v2/incidents.json").await;
    same_shape(&incidents_doc, &all, "incidents");
    check_enums(&all);
    assert_eq!(all["incidents"].as_array().expect("all").len(), 2);
    let resolved = &all["incidents"][1];
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["resolved_at"].is_string());
    let unresolved = get_json(&f.state, "/api/v2/incidents/unresolved.json").await;
    same_shape(&incidents_doc, &unresolved, "unresolved");
    assert_eq!(unresolved["incidents"].as_array().expect("open").len(), 1);
    for path in [
        "/api/v2/scheduled-maintenances.json",
        "/api/v2/scheduled-maintenances/upcoming.json",
        "/api/v2/scheduled-maintenances/active.json",
    ] {
        same_shape(&maintenances, &get_json(&f.state, path).await, path);
    }
}

#[tokio::test]
async fn caching_head_and_the_feed() {
    let f = fixture_store();
    let (_, headers, body) = get(&f.state, "/api/v2/summary.json").await;
    let etag = headers[header::ETAG].clone();
    let (status, again, empty) = call(
        &f.state,
        Request::get("/api/v2/summary.json")
            .header(header::IF_NONE_MATCH, etag.clone())
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(again[header::ETAG], etag);
    assert!(empty.is_empty());
    let (status, headers, head_body) = call(
        &f.state,
        Request::builder()
            .method(Method::HEAD)
            .uri("/api/v2/summary.json")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(head_body.is_empty());
    assert_eq!(headers[header::ETAG], etag);
    assert!(!body.is_empty());

    let (status, headers, html) = get(&f.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ct")
        .starts_with("text/html"));
    let html = String::from_utf8(html).expect("utf8");
    assert!(
        html.contains("Sites deleted by a maintenance script"),
        "{html}"
    );
    assert!(
        html.contains("&lt;affected&gt; sites &amp; their data"),
        "escaped: {html}"
    );
    assert!(html.contains("2 of 5 customers restored (40%)"), "{html}");
    assert!(html.contains("30 of 150 users (20%)"), "{html}");
    assert!(html.contains("Partial outage"), "{html}");

    let (status, headers, feed) = get(&f.state, "/history.atom").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/atom+xml");
    let feed = String::from_utf8(feed).expect("utf8");
    assert!(feed.starts_with("<?xml"));
    assert_eq!(feed.matches("<entry>").count(), 3, "{feed}");
    assert!(feed.contains("Fixed."));
    assert_eq!(
        get(&f.state, "/nothing-here").await.0,
        StatusCode::NOT_FOUND
    );
}

async fn get_with(
    state: &AppState,
    path: &str,
    accept_language: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let (status, headers, body) = call(
        state,
        Request::get(path)
            .header(header::ACCEPT_LANGUAGE, accept_language)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    (status, headers, String::from_utf8(body).expect("utf8"))
}

/// RFC 3339 with microseconds, as stored: never on a page for people.
fn has_raw_time(text: &str) -> bool {
    text.as_bytes()
        .windows(8)
        .any(|w| w[0] == b'.' && w[1..7].iter().all(u8::is_ascii_digit) && w[7] == b'Z')
}

#[tokio::test]
async fn the_public_page_speaks_the_readers_language_by_query_then_header() {
    let f = fixture_store();
    let (_, en_headers, en) = get_with(&f.state, "/", "").await;
    let (_, de_headers, de) = get_with(&f.state, "/?lang=de", "ja").await;
    let (_, _, de_by_header) = get_with(&f.state, "/", "fr, de-DE;q=0.8, en;q=0.5").await;
    let (_, ja_headers, ja) = get_with(&f.state, "/", "en;q=0.3, ja;q=0.9").await;
    let (_, _, ja_by_query) = get_with(&f.state, "/?lang=ja", "de").await;
    assert_eq!(de, de_by_header);
    assert_eq!(ja, ja_by_query);
    for (headers, page) in [(&en_headers, &en), (&de_headers, &de), (&ja_headers, &ja)] {
        assert_eq!(headers[header::VARY], "accept-language");
        assert!(!has_raw_time(page), "a raw time on the page: {page}");
        assert!(page.contains(" UTC</time>"), "{page}");
    }
    assert_ne!(en_headers[header::ETAG], de_headers[header::ETAG]);

    assert!(en.contains("<html lang=\"en\">"), "{en}");
    assert!(en.contains("Major Service Outage"), "{en}");
    assert!(en.contains("We are restoring the &lt;affected&gt; sites &amp; their data."));
    assert!(!en.contains("shown in English"), "{en}");

    assert!(de.contains("<html lang=\"de\">"), "{de}");
    assert!(de.contains("Schwerer Dienstausfall"), "{de}");
    assert!(de.contains("Teilausfall"), "{de}");
    assert!(
        de.contains("2 von 5 Kunden wiederhergestellt (40%)"),
        "{de}"
    );
    assert!(de.contains("30 von 150 Benutzern (20%)"), "{de}");
    // The translated update in German; the untranslated ones in English, marked.
    assert!(
        de.contains("Wir stellen die &lt;betroffenen&gt; Sites &amp; ihre Daten wieder her."),
        "{de}"
    );
    assert!(!de.contains("We are restoring"), "{de}");
    assert!(
        de.contains(
            "<span lang=\"en\">Fixed.</span> <span class=\"fallback\">(auf Englisch angezeigt)</span>"
        ),
        "{de}"
    );
    assert!(de.contains("Frühere Vorfälle"), "{de}");

    assert!(ja.contains("<html lang=\"ja\">"), "{ja}");
    assert!(ja.contains("重大なサービス障害"), "{ja}");
    assert!(ja.contains("一部停止"), "{ja}");
    assert!(ja.contains("5 件中 2 件のお客様を復元済み (40%)"), "{ja}");
    assert!(
        ja.contains(
            "<span lang=\"en\">We are restoring the &lt;affected&gt; sites &amp; their data.</span> \
             <span class=\"fallback\">（英語で表示）</span>"
        ),
        "{ja}"
    );

    // The JSON keeps the default text and RFC 3339 times, whatever the language.
    let (_, _, json) = get_with(&f.state, "/api/v2/incidents.json?lang=de", "de").await;
    let json: Value = serde_json::from_str(&json).expect("json");
    let update = &json["incidents"][0]["incident_updates"][0];
    assert_eq!(
        update["body"],
        "We are restoring the <affected> sites & their data."
    );
    assert!(update.get("translations").is_none());
    assert!(has_raw_time(update["created_at"].as_str().expect("time")));

    // The feed follows ?lang= too.
    let (_, _, feed) = get_with(&f.state, "/history.atom?lang=de", "").await;
    assert!(feed.contains("xml:lang=\"de\""), "{feed}");
    assert!(
        feed.contains("Ursache gefunden — Wir stellen die"),
        "{feed}"
    );
}

#[tokio::test]
async fn past_incidents_show_their_updates_and_components_their_uptime_bars() {
    let f = fixture_store();
    let (_, _, page) = get_with(&f.state, "/", "").await;
    let past = &page[page.find("Past incidents").expect("past incidents")..];
    assert!(past.contains("Slow searches"), "{past}");
    assert!(past.contains("Resolved</strong> — Fixed."), "{past}");
    assert!(
        past.contains("Investigating</strong> — Searches are slow."),
        "{past}"
    );
    assert!(past.contains("Resolved <time"), "{past}");
    // Two components, 90 days each; today is the last bar of each.
    assert_eq!(page.matches("<span class=\"bar ").count(), 180, "{page}");
    let tracker = &page[page.find("Issue tracker").expect("tracker")..];
    let bars: Vec<&str> = tracker
        .split("<span class=\"bar ")
        .skip(1)
        .take(90)
        .map(|b| b.split('"').next().expect("class"))
        .collect();
    assert_eq!(bars[89], "partial_outage", "{tracker}");
    assert!(bars[..89].iter().all(|b| *b == "operational"), "{bars:?}");
    assert!(tracker.contains("% uptime"), "{tracker}");
    // The wiki was degraded (not an outage): its uptime stays whole.
    let wiki = &page[page.find("<td>Wiki</td>").expect("wiki")..];
    assert!(wiki.contains("100.00 % uptime"), "{wiki}");
    assert!(
        wiki.contains("<span class=\"bar degraded_performance\""),
        "{wiki}"
    );
}

#[tokio::test]
async fn private_pages_show_one_tenant_and_public_outputs_nothing_private() {
    let mut f = fixture_store();
    let one = f.tokens["secret-tenant-1"].clone();
    let five = f.tokens["secret-tenant-5"].clone();
    let (status, headers, page) = get(&f.state, &format!("/t/{one}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let page = String::from_utf8(page).expect("utf8");
    assert!(
        page.contains("Restored: awaiting your acceptance"),
        "{page}"
    );
    assert!(page.contains("id=\"accept\""), "{page}");
    assert!(page.contains("2026-04-05T07:38:12"), "{page}");
    for (tenant, token) in &f.tokens {
        if tenant != "secret-tenant-1" {
            assert!(!page.contains(tenant.as_str()) && !page.contains(token.as_str()));
        }
    }
    let (_, _, queued) = get(&f.state, &format!("/t/{five}")).await;
    let queued = String::from_utf8(queued).expect("utf8");
    assert!(queued.contains("Queued for recovery"), "{queued}");
    // Tenants 3 and 4 are being restored ahead of it.
    assert!(
        queued.contains("Place in the recovery queue: 3"),
        "{queued}"
    );
    assert!(!queued.contains("id=\"accept\""));
    let json: Value =
        serde_json::from_slice(&get(&f.state, &format!("/t/{five}/status.json")).await.2)
            .expect("json");
    assert_eq!(json["stage"], "queued");
    assert_eq!(json["position"], 3);
    assert_eq!(json["tenant"], "secret-tenant-5");

    // A guessed or altered link shows nothing.
    let mut altered = one.clone();
    altered.replace_range(0..1, if one.starts_with('0') { "1" } else { "0" });
    for bad in [altered.as_str(), "secret-tenant-1", "1"] {
        let (status, _, body) = get(&f.state, &format!("/t/{bad}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!String::from_utf8_lossy(&body).contains("secret-tenant"));
    }

    // Nothing private in any public output.
    let mut public = Vec::new();
    for path in lifeboat_web::snapshot::JSON_PATHS.into_iter().chain([
        "/",
        "/history.atom",
        "/api/lifeboat/campaigns.json",
    ]) {
        let (status, _, body) = get(&f.state, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        public.push((path.to_string(), String::from_utf8(body).expect("utf8")));
    }
    // The pages in every language.
    for lang in lifeboat_web::i18n::Lang::ALL {
        for path in lifeboat_web::snapshot::PAGE_PATHS {
            let path = format!("{path}?lang={lang}");
            let (status, _, body) = get(&f.state, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            public.push((path, String::from_utf8(body).expect("utf8")));
        }
    }
    for (path, body) in &public {
        for (tenant, token) in &f.tokens {
            assert!(!body.contains(tenant.as_str()), "{path} shows {tenant}");
            assert!(!body.contains(token.as_str()), "{path} shows a link token");
        }
        assert!(!body.contains("secret-admin"), "{path} shows a contact");
        assert!(
            !body.contains("Secret Admin"),
            "{path} shows a contact's name"
        );
    }

    // Accepting: only when awaited; the stage moves on.
    let (status, headers, _) = call(
        &f.state,
        Request::post(format!("/t/{one}/accept"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], format!("/t/{one}"));
    let (_, _, page) = get(&f.state, &format!("/t/{one}")).await;
    assert!(String::from_utf8(page)
        .expect("utf8")
        .contains(">Restored<"));
    let stage = |c: &mut ControlStore, t: &str| {
        c.campaign_tenants(Some("campaign0001"))
            .expect("tenants")
            .into_iter()
            .find(|x| x.tenant == t)
            .expect("tenant")
            .stage
    };
    assert_eq!(stage(&mut f.control, "secret-tenant-1"), Stage::Restored);
    // Audited as the customer's, naming the tenant and campaign, never the token.
    let entries = f.control.entries().expect("entries");
    let accepted = entries
        .iter()
        .find(|e| e.action == "accept")
        .expect("an accept entry");
    assert_eq!(
        (accepted.actor.as_str(), accepted.subject.as_str()),
        ("customer", "tenant:secret-tenant-1")
    );
    assert_eq!(accepted.details["campaign"], "campaign0001");
    let text = serde_json::to_string(&entries).expect("json");
    for token in f.tokens.values() {
        assert!(!text.contains(token.as_str()), "a token in the audit log");
    }
    call(
        &f.state,
        Request::post(format!("/t/{five}/accept"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(
        stage(&mut f.control, "secret-tenant-5"),
        Stage::Queued,
        "not awaited: unchanged"
    );
    let (status, _, _) = call(
        &f.state,
        Request::post("/t/0000/accept")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The snapshot follows changes made elsewhere (a worker) once refreshed.
    f.control.claim("w3", None, 60_000_000).expect("claim");
    f.state.refresh(false).await.expect("refresh");
    let (_, _, page) = get(&f.state, &format!("/t/{five}")).await;
    assert!(String::from_utf8(page)
        .expect("utf8")
        .contains("Restoring your data"));
}

#[tokio::test]
async fn the_operator_api_needs_its_token_and_drives_the_page() {
    let f = fixture_store();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_string())).expect("request")
    };
    let create = serde_json::json!({"name": "Wiki down", "status": "investigating",
        "impact": "major", "message": "Looking into it.", "components": {"wiki": "major_outage"}});
    let (status, _, _) = call(
        &f.state,
        post("/api/operator/incidents", None, create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(
        &f.state,
        post("/api/operator/incidents", Some("wrong"), create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(
        &f.state,
        post("/api/operator/incidents", Some(TOKEN), create),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = serde_json::from_slice::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let summary = get_json(&f.state, "/api/v2/summary.json").await;
    assert!(summary["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .any(|i| i["id"] == id.as_str()));
    assert_eq!(summary["components"][1]["status"], "major_outage");

    // Bad input: a word outside Statuspage's vocabulary, an unknown component.
    let (status, _, body) = call(
        &f.state,
        post(
            &format!("/api/operator/incidents/{id}/updates"),
            Some(TOKEN),
            serde_json::json!({"status": "fixed", "message": "x"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not one of"));
    let version = f.state.snapshot().version;
    let (status, _, body) = call(
        &f.state,
        post(
            &format!("/api/operator/incidents/{id}/updates"),
            Some(TOKEN),
            serde_json::json!({"status": "identified", "message": "x",
                "messages": {"fr": "Trouvé."}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("translations may be in de, ja"));
    // Translations through the API: on the page in its language.
    let (status, _, _) = call(
        &f.state,
        post(
            &format!("/api/operator/incidents/{id}/updates"),
            Some(TOKEN),
            serde_json::json!({"status": "identified", "message": "Found the cause.",
                "messages": {"ja": "原因を特定しました。"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(f.state.snapshot().version > version);
    let (_, _, ja) = get_with(&f.state, "/?lang=ja", "").await;
    assert!(ja.contains("原因を特定しました。"), "{ja}");
    let listed = ControlStore::open(f.path.to_str().expect("path"))
        .expect("control")
        .incidents()
        .expect("incidents");
    let updates = &listed
        .iter()
        .find(|i| i.id == id)
        .expect("incident")
        .updates;
    assert_eq!(updates[0].body, "Found the cause.");
    assert!(
        updates.iter().all(|u| u.body != "x"),
        "a refused update was written"
    );
    let (status, _, _) = call(
        &f.state,
        post(&format!("/api/operator/incidents/{id}/updates"), Some(TOKEN),
             serde_json::json!({"status": "monitoring", "message": "x", "components": {"mail": "operational"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        &f.state,
        post(
            &format!("/api/operator/incidents/{id}/resolve"),
            Some(TOKEN),
            serde_json::json!({"message": "Back.", "by": "olga"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let summary = get_json(&f.state, "/api/v2/summary.json").await;
    assert_eq!(summary["components"][1]["status"], "operational");
    // Audited: by the body's `by`, else `operator-api`; refused changes wrote nothing.
    let mut f = f;
    let audited: Vec<(String, String)> = f
        .control
        .entries()
        .expect("entries")
        .into_iter()
        .filter(|e| e.subject == format!("incident:{id}"))
        .map(|e| (e.actor, e.action))
        .collect();
    assert_eq!(
        audited,
        [
            ("operator-api".to_string(), "incident-create".to_string()),
            ("operator-api".to_string(), "incident-update".to_string()),
            ("olga".to_string(), "incident-resolve".to_string()),
        ]
    );
    let (status, _, body) = call(
        &f.state,
        Request::get("/api/operator/campaigns")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let campaigns: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(campaigns["tenants"].as_array().expect("tenants").len(), 5);
    let (status, _, body) = call(
        &f.state,
        Request::get("/api/operator/incidents")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let incidents: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        incidents["incidents"].as_array().expect("incidents").len(),
        3
    );
    assert_eq!(incidents["incidents"][0]["id"], id.as_str());
    assert_eq!(incidents["incidents"][0]["status"], "resolved");

    // The public progress: counts only.
    let progress = get_json(&f.state, "/api/lifeboat/campaigns.json").await;
    let c = &progress["campaigns"][0];
    assert_eq!(c["tenants"], 5);
    assert_eq!(c["tenants_restored"], 2);
    assert_eq!(c["users"], 150);
    assert_eq!(c["users_restored"], 30);
    assert_eq!(c["restored_to"], "2026-04-05T07:38:12.000000Z");
}

#[tokio::test]
async fn metrics_count_campaign_tenants_by_stage_and_health_answers() {
    let f = fixture_store();
    let (status, headers, body) = get(&f.state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("type")
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(body).expect("utf-8");
    for (stage, n) in [("awaiting_acceptance", 2), ("restoring", 2), ("queued", 1)] {
        let series = format!(
            "lifeboat_campaign_tenants{{campaign=\"campaign0001\",stage=\"{stage}\"}} {n}\n"
        );
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
    assert!(!text.contains("secret-tenant"), "metrics name a tenant");
    assert!(text.ends_with("# EOF\n"));

    let (status, _, body) = get(&f.state, "/healthz").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ok\n".as_slice())
    );
    let (status, _, body) = get(&f.state, "/readyz").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ready\n".as_slice())
    );
}

#[tokio::test]
async fn the_metrics_listener_reports_what_is_not_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let broken = Arc::new(AtomicBool::new(false));
    let ready: lifeboat_web::observe::ReadyCheck = {
        let broken = broken.clone();
        Arc::new(move || {
            let broken = broken.load(Ordering::SeqCst);
            Box::pin(async move {
                if broken {
                    Err("vault: file:///gone has no vault\nsecond line".to_string())
                } else {
                    Ok(())
                }
            })
        })
    };
    let metrics = lifeboat_core::metrics::Metrics::new();
    metrics.capture("app").durable(1_000);
    let get = |path: &'static str| {
        let app = lifeboat_web::observe::router(metrics.clone(), ready.clone());
        async move {
            let response = app
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("response");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8(body.to_vec()).expect("utf-8"))
        }
    };
    assert_eq!(get("/readyz").await, (StatusCode::OK, "ready\n".into()));
    broken.store(true, Ordering::SeqCst);
    assert_eq!(
        get("/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "vault: file:///gone has no vault second line\n".into()
        )
    );
    assert_eq!(get("/healthz").await, (StatusCode::OK, "ok\n".into()));
    let (status, text) = get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("lifeboat_capture_transactions_total{source=\"app\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn pages_carry_security_headers_and_the_public_json_answers_cors_preflight() {
    let f = fixture_store();
    let one = f.tokens["secret-tenant-1"].clone();
    for path in [
        "/".to_string(),
        format!("/t/{one}"),
        "/api/v2/summary.json".into(),
    ] {
        let (status, headers, body) = get(&f.state, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp");
        for part in [
            "default-src 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe"),
            "{csp}"
        );
        // The pages' one stylesheet is allowed by its hash, and nothing else is.
        let body = String::from_utf8(body).expect("utf8");
        if let Some(start) = body.find("<style>") {
            let style = &body[start + 7..body.find("</style>").expect("end of style")];
            let hash = {
                use base64::Engine;
                use sha2::Digest;
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style))
            };
            assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
            assert!(!body.contains("<script"), "{path}");
        }
    }
    let (status, headers, body) = call(
        &f.state,
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v2/summary.json")
            .header(header::ORIGIN, "https://example.org")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "if-none-match")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert!(status.is_success(), "{status}");
    assert!(body.is_empty());
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("methods")
        .contains("GET"));
    assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "86400");
    // Private pages and the operator API are not for other sites' scripts.
    let (_, headers, _) = call(
        &f.state,
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("/t/{one}/status.json"))
            .header(header::ORIGIN, "https://example.org")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn an_accept_for_a_tenant_not_awaiting_acceptance_writes_and_rebuilds_nothing() {
    let mut f = fixture_store();
    let accept = |token: &str| {
        Request::post(format!("/t/{token}/accept"))
            .body(Body::empty())
            .expect("request")
    };
    // Queued (the snapshot knows) and restored (the snapshot still shows it awaiting).
    let queued = f.tokens["secret-tenant-5"].clone();
    let two = f.tokens["secret-tenant-2"].clone();
    assert!(f.control.accept(&two).expect("accept"));
    let version = f.control.status_version().expect("version");
    let snapshot = f.state.snapshot();
    for token in [&queued, &two, &queued] {
        let (status, headers, _) = call(&f.state, accept(token)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], format!("/t/{token}"));
    }
    assert_eq!(
        f.control.status_version().expect("version"),
        version,
        "the control store's change counter moved"
    );
    assert!(
        std::sync::Arc::ptr_eq(&snapshot, &f.state.snapshot()),
        "the snapshot was rebuilt"
    );
    // An accept that is awaited writes once and rebuilds.
    let one = f.tokens["secret-tenant-1"].clone();
    let (status, _, _) = call(&f.state, accept(&one)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(f.control.status_version().expect("version"), version + 1);
    assert!(!std::sync::Arc::ptr_eq(&snapshot, &f.state.snapshot()));
}

/// Serve `state` on a loopback port; the sender stops it.
async fn listen(state: &AppState) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lifeboat_web::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// One response read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: String,
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send `request` (raw bytes) and read the answer until the server closes.
async fn raw(address: SocketAddr, request: &[u8]) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream, started).await
}

async fn read_answer(stream: &mut TcpStream, started: Instant) -> Answer {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
        took,
    }
}

async fn http_get(address: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: status\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_off_at_the_header_timeout_while_others_are_answered() {
    let header_timeout = Duration::from_secs(2);
    let f = fixture_with(Limits {
        header_timeout,
        ..Limits::default()
    });
    let (address, _stop) = listen(&f.state).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(b"GET /api/v2/summary.json HTTP/1.1\r\nHost: status\r\nX-Slow: 1")
            .await
            .expect("write");
        let sent = Instant::now();
        slow.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
            (read.is_ok(), sent.elapsed(), rest)
        }));
    }
    // While they hang, others are answered.
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < header_timeout {
        let answer = http_get(address, "/api/v2/summary.json", None).await;
        assert_eq!(answer.status, 200);
        assert!(answer.took < Duration::from_secs(1), "{:?}", answer.took);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered > 10, "{answered}");
    for task in slow {
        let (closed, after, rest) = task.await.expect("task");
        assert!(closed, "a half-sent request was held 30 s");
        assert!(
            after >= header_timeout - Duration::from_millis(100)
                && after < header_timeout + Duration::from_secs(2),
            "closed after {after:?}"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains(" 200 "),
            "a half-sent request was answered"
        );
    }
    assert_eq!(
        http_get(address, "/api/v2/summary.json", None).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let header_timeout = Duration::from_secs(2);
    let f = fixture_with(Limits {
        header_timeout,
        max_connections: 2,
        ..Limits::default()
    });
    let (address, _stop) = listen(&f.state).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third waits until the header timeout frees a connection, then is answered.
    let answer = http_get(address, "/", None).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.took >= header_timeout - Duration::from_millis(400),
        "answered after {:?} with both connections taken",
        answer.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_refused_before_they_are_read() {
    let mut f = fixture_with(Limits {
        max_body_bytes: 4096,
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    });
    let (address, _stop) = listen(&f.state).await;
    let version = f.control.status_version().expect("version");
    let post = |auth: bool, length: &str| {
        let auth = if auth {
            format!("Authorization: Bearer {TOKEN}\r\n")
        } else {
            String::new()
        };
        format!(
            "POST /api/operator/incidents HTTP/1.1\r\nHost: status\r\n{auth}\
             Content-Type: application/json\r\n{length}\r\n"
        )
    };
    // 100 MB announced, none sent: refused at once, with or without a token.
    for auth in [false, true] {
        let answer = raw(
            address,
            post(auth, "Content-Length: 104857600\r\n").as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 413, "{}", answer.head);
        assert!(answer.took < Duration::from_secs(1), "{:?}", answer.took);
    }
    // Without a token a body is never read: the refusal comes before it is sent.
    let answer = raw(address, post(false, "Content-Length: 1000\r\n").as_bytes()).await;
    assert_eq!(answer.status, 401, "{}", answer.head);
    assert!(answer.took < Duration::from_secs(1), "{:?}", answer.took);
    let answer = raw(
        address,
        post(false, "Transfer-Encoding: chunked\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.head);
    // A chunked body is cut off at the limit, its end never sent.
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut request = post(true, "Transfer-Encoding: chunked\r\n").into_bytes();
    for size in [4000usize, 200] {
        request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b' ', size));
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).await.expect("write");
    let answer = read_answer(&mut stream, started).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert!(
        answer.body.contains("longer than 4096 bytes"),
        "{}",
        answer.body
    );
    // A body that stops coming: 408 at the request timeout.
    let answer = raw(
        address,
        format!("{}{{\"name\":", post(true, "Content-Length: 500\r\n")).as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert!(answer.took < Duration::from_secs(4), "{:?}", answer.took);
    assert_eq!(
        f.control.status_version().expect("version"),
        version,
        "nothing changed"
    );
    // A body within the limit is read.
    let body = r#"{"name": "Wiki down", "status": "investigating", "message": "Looking."}"#;
    let answer = raw(
        address,
        format!(
            "{}{body}",
            post(
                true,
                &format!("Content-Length: {}\r\nConnection: close\r\n", body.len())
            )
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_control_store_leaves_public_pages_answering_and_private_ones_503() {
    let f = fixture_store();
    let (address, _stop) = listen(&f.state).await;
    let one = f.tokens["secret-tenant-1"].clone();
    assert_eq!(
        http_get(address, &format!("/t/{one}"), None).await.status,
        200
    );
    let public = http_get(address, "/", None).await;
    assert!(!public.body.contains("id=\"stale\""));

    // Another process's exclusive lock on the control store's file, for 30 s.
    let lock = rusqlite::Connection::open(&f.path).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let locked = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rounds = 0;
    while locked.elapsed() < Duration::from_secs(30) {
        for path in ["/", "/api/v2/summary.json", "/history.atom"] {
            let answer = http_get(address, path, None).await;
            assert_eq!(answer.status, 200, "{path}");
            assert!(
                answer.took < Duration::from_millis(100),
                "{path}: {:?}",
                answer.took
            );
            let age: u64 = answer
                .header("lifeboat-snapshot-age")
                .expect("age")
                .parse()
                .expect("seconds");
            assert!(age >= locked.elapsed().as_secs().saturating_sub(2), "{age}");
            if path == "/" {
                assert!(answer.body.contains("id=\"stale\""), "{}", answer.body);
            }
        }
        for (path, token) in [
            (format!("/t/{one}"), None),
            (format!("/t/{one}/status.json"), None),
            ("/api/operator/incidents".to_string(), Some(TOKEN)),
            ("/api/operator/campaigns".to_string(), Some(TOKEN)),
        ] {
            let answer = http_get(address, &path, token).await;
            assert_eq!(answer.status, 503, "{path}: {}", answer.body);
            assert!(
                answer.took < Duration::from_secs(1),
                "{path}: {:?}",
                answer.took
            );
        }
        let answer = raw(
            address,
            format!("POST /t/{one}/accept HTTP/1.1\r\nHost: status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 503);
        assert!(answer.took < Duration::from_secs(1), "{:?}", answer.took);
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(rounds >= 10, "{rounds}");
    lock.execute_batch("ROLLBACK").expect("unlock");
    drop(lock);

    // Back: private pages answer again and the public page drops its notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http_get(address, &format!("/t/{one}"), None).await;
        if answer.status == 200 {
            assert!(answer.body.contains("awaiting your acceptance"));
            break;
        }
        assert!(Instant::now() < deadline, "still {}", answer.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let public = http_get(address, "/", None).await;
    assert!(!public.body.contains("id=\"stale\""), "{}", public.body);
    let answer = http_get(address, "/api/operator/incidents", Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn the_banner_script_is_served_to_any_site_and_reads_only_the_public_summary() {
    let f = fixture_store();
    let (status, headers, body) = get(&f.state, "/embed/banner.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    let script = String::from_utf8(body).expect("utf8");
    assert!(script.contains("../api/v2/summary.json"), "{script}");
    assert!(script.contains("credentials: \"omit\""), "{script}");
    for private in ["document.cookie", "/t/", "/api/operator", "localStorage"] {
        assert!(!script.contains(private), "the banner touches {private}");
    }
    // The summary it reads answers any origin.
    let (status, headers, _) = call(
        &f.state,
        Request::builder()
            .uri("/api/v2/summary.json")
            .header(header::ORIGIN, "https://forum.example.org")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}
