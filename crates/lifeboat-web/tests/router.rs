//! Every endpoint, in process, against a real control store (SQLite): the Statuspage v2
//! JSON checked against fixtures written from Statuspage's published API documentation
//! (same keys, same value kinds, same enums), HTTP caching and CORS, the Atom feed, the
//! private pages, and that public outputs never carry private data.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use lifeboat_control::{
    Campaign, ComponentStatus, Contact, ContactOrigin, ControlStore, Impact, IncidentChange,
    IncidentStatus, Stage,
};
use lifeboat_web::{router, AppState, PageInfo};

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
    state: AppState,
    control: ControlStore,
    /// tenant -> link token
    tokens: BTreeMap<String, String>,
    incident: String,
}

/// A control store with two components, an open incident with an update, a resolved one,
/// and a campaign whose tenants stand at different stages.
fn fixture_store() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.db");
    let url = path.to_str().expect("utf-8").to_string();
    let mut control = ControlStore::open(&url).expect("control");
    control
        .ensure_components(&BTreeMap::from([
            ("tracker".to_string(), "Issue tracker".to_string()),
            ("wiki".to_string(), "Wiki".to_string()),
        ]))
        .expect("components");
    let old = control
        .change_incident(
            None,
            &IncidentChange {
                name: Some("Slow searches".into()),
                status: IncidentStatus::Investigating,
                impact: Some(Impact::Minor),
                message: "Searches are slow.".into(),
                components: BTreeMap::from([("wiki".into(), ComponentStatus::DegradedPerformance)]),
            },
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
                components: BTreeMap::from([("tracker".into(), ComponentStatus::PartialOutage)]),
            },
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
    };
    let tenants: Vec<(String, i64)> = (1..=5)
        .map(|i| (format!("secret-tenant-{i}"), 10 * i))
        .collect();
    control
        .create_campaign(&campaign, &tenants)
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
    )
    .expect("state");
    let control = ControlStore::open(&url).expect("control");
    Fixture {
        _dir: dir,
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
        public.push((path, String::from_utf8(body).expect("utf8")));
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
            serde_json::json!({"message": "Back."}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let summary = get_json(&f.state, "/api/v2/summary.json").await;
    assert_eq!(summary["components"][1]["status"], "operational");
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
