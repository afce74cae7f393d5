//! Webhooks: the body in Statuspage's webhook shape, signed with HMAC-SHA256, POSTed with
//! the delivery's id; a 2xx answer within 30 seconds is success.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value as Json};
use sha2::Sha256;

use lifeboat_control::{Component, Delivery, Incident, NoticeEvent};
use lifeboat_core::{Error, Result};
use lifeboat_web::snapshot::{incident_json, indicator};
use lifeboat_web::PageInfo;

/// How long a webhook's receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Where Statuspage documents the payload's shape (the `meta.documentation` link).
const DOCUMENTATION: &str =
    "https://support.atlassian.com/statuspage/docs/enable-webhook-notifications/";

/// The payload of an incident delivery: `meta`, `page` (its status now, from `incidents`
/// and `components`) and `incident` as the change left it, with its updates.
pub fn payload(
    delivery: &Delivery,
    page: &PageInfo,
    incidents: &[Incident],
    components: &[Component],
) -> Result<Json> {
    let (status_indicator, status_description) = indicator(incidents, components);
    // A subscriber's own unsubscribe link; the page for operators' endpoints.
    let unsubscribe = delivery.body["unsubscribe"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/", page.url));
    let meta = json!({"unsubscribe": unsubscribe, "documentation": DOCUMENTATION});
    let page_json = json!({
        "id": page.id,
        "status_indicator": status_indicator,
        "status_description": status_description,
    });
    if delivery.event == NoticeEvent::SupportRequest {
        // Not a Statuspage event: the request as filed, beside the same `meta` and `page`.
        return Ok(json!({
            "meta": meta,
            "page": page_json,
            "support_request": delivery.body["support_request"].clone(),
        }));
    }
    if delivery.event == NoticeEvent::DrillFailed {
        // Not a Statuspage event either: the drill's run, its failed tenants and why.
        return Ok(json!({
            "meta": meta,
            "page": page_json,
            "drill": delivery.body["drill"].clone(),
        }));
    }
    let incident: Incident =
        serde_json::from_value(delivery.body["incident"].clone()).map_err(|e| {
            Error::source(format!(
                "notification {}: its body holds no incident: {e}",
                delivery.id
            ))
        })?;
    let mut body = json!({
        "meta": meta,
        "page": page_json,
        "incident": incident_json(page, components, &incident),
    });
    if delivery.event == NoticeEvent::UpdateOverdue {
        // Not a Statuspage event: the incident as it stands, and why the alarm rings.
        body["update_overdue"] = delivery.body["update_overdue"].clone();
    }
    Ok(body)
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The HTTP client: no redirects followed (a 3xx is a failure), 30 seconds per request.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::config(format!("webhook client: {e}")))
}

/// POST `body` to `url`; `secret` signs it when given. Err: why it was not a 2xx.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    delivery: &Delivery,
    body: Vec<u8>,
    secret: Option<&[u8]>,
) -> std::result::Result<(), String> {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Lifeboat-Delivery", &delivery.id)
        .header("X-Lifeboat-Event", delivery.event.as_str());
    if let Some(secret) = secret {
        request = request.header("X-Lifeboat-Signature", signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|e| {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}
