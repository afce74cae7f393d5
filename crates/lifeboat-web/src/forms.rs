//! The forms people post to the status server (docs/status.md, "Subscribers" and
//! "Support"): subscribing with double opt-in, confirming, unsubscribing (a button, so a
//! mail scanner that follows links unsubscribes no one), and writing to support without a
//! site URL; and the operator API's subscriber endpoints. Each form is rate-limited per
//! address and per client IP, in this process's memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use lifeboat_control::{Component, SubscriberKind, SupportInput};
use lifeboat_core::Error;

use crate::html::escape;
use crate::snapshot::PageInfo;
use crate::{error_response, private_headers, public_response, unauthorised, AppState};

/// The client's address, as the connection gives it (never a forwarded header).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The largest body a form accepts; a longer one is refused with 413.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// A token bucket per key: `capacity` requests at once, refilled evenly over an hour.
struct Buckets {
    capacity: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Keys kept before full buckets are forgotten.
const MAX_KEYS: usize = 100_000;

impl Buckets {
    fn per_hour(capacity: u32) -> Buckets {
        Buckets {
            capacity: f64::from(capacity),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn per_second(&self) -> f64 {
        self.capacity / 3600.0
    }

    /// Take one request for `key`: None when allowed, else how long until one is.
    fn take(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_KEYS {
            let (capacity, rate) = (self.capacity, self.per_second());
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < capacity
            });
        }
        let (tokens, at) = buckets
            .entry(key.to_string())
            .or_insert((self.capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second())
            .min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - *tokens) / self.per_second()))
        }
    }
}

/// The rate limits of the forms (requests per hour).
pub(crate) struct RateLimits {
    subscribe_ip: Buckets,
    subscribe_address: Buckets,
    support_ip: Buckets,
    support_address: Buckets,
}

/// Subscription requests per client IP per hour.
pub const SUBSCRIBE_PER_IP: u32 = 10;
/// Subscription requests per email address per hour.
pub const SUBSCRIBE_PER_ADDRESS: u32 = 3;
/// Support requests per client IP per hour.
pub const SUPPORT_PER_IP: u32 = 10;
/// Support requests per email address per hour.
pub const SUPPORT_PER_ADDRESS: u32 = 5;

impl RateLimits {
    pub(crate) fn new() -> RateLimits {
        RateLimits {
            subscribe_ip: Buckets::per_hour(SUBSCRIBE_PER_IP),
            subscribe_address: Buckets::per_hour(SUBSCRIBE_PER_ADDRESS),
            support_ip: Buckets::per_hour(SUPPORT_PER_IP),
            support_address: Buckets::per_hour(SUPPORT_PER_ADDRESS),
        }
    }
}

/// The routes of this module, to merge into the server's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/subscribe",
            get(
                |State(state): State<AppState>, headers: HeaderMap| async move {
                    public_response(&state, "/subscribe", None, &headers)
                },
            )
            .post(subscribe),
        )
        .route("/subscribe/confirm", get(confirm).post(confirm))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .route(
            "/support",
            get(
                |State(state): State<AppState>, headers: HeaderMap| async move {
                    public_response(&state, "/support", None, &headers)
                },
            )
            .post(support),
        )
        .route(
            "/api/operator/subscribers",
            get(operator_subscribers).post(operator_add_subscriber),
        )
        .route(
            "/api/operator/subscribers/{id}",
            delete(operator_remove_subscriber),
        )
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{}</style></head><body>",
        escape(title),
        crate::html::STYLE
    )
}

/// A whole page: the page's name, `body` (HTML), a link back to the status page.
fn page(info: &PageInfo, title: &str, body: &str) -> String {
    format!(
        "{}<h1>{}</h1>{body}<p class=\"meta\"><a href=\"/\">Back to the status page</a></p>\
         </body></html>\n",
        head(&format!("{} — {title}", info.name)),
        escape(title)
    )
}

/// The subscribe form, on the public page and on `/subscribe`: an email address and, if
/// the page has components, a box for each (none ticked: every incident).
pub fn subscribe_form(components: &[Component]) -> String {
    let mut out = String::from(
        "<form method=\"post\" action=\"/subscribe\" id=\"subscribe\">\
         <p><label>Email <input type=\"email\" name=\"email\" required maxlength=\"254\">\
         </label> <button type=\"submit\">Subscribe</button></p>",
    );
    if !components.is_empty() {
        out.push_str("<p class=\"meta\">Only about (none: everything):");
        for c in components {
            out.push_str(&format!(
                " <label><input type=\"checkbox\" name=\"component\" value=\"{}\"> {}</label>",
                escape(&c.id),
                escape(&c.name)
            ));
        }
        out.push_str("</p>");
    }
    out.push_str("</form>");
    out
}

/// `/subscribe`: the form on a page of its own (the status page refreshes itself).
pub fn subscribe_page(info: &PageInfo, components: &[Component]) -> String {
    page(
        info,
        "Subscribe to updates",
        &format!(
            "<p>We email you when an incident opens, changes or is resolved. You confirm \
             your address first; every email has a link to unsubscribe.</p>{}",
            subscribe_form(components)
        ),
    )
}

/// `/support`: the support form. Only the address and the message are required.
pub fn support_page(info: &PageInfo) -> String {
    page(
        info,
        "Contact support",
        "<p>Write to us from any email address. You do not need your site's address or \
         your account details: we find your account from your email if we can.</p>\
         <form method=\"post\" action=\"/support\" id=\"support\">\
         <p><label>Email <input type=\"email\" name=\"email\" required maxlength=\"254\">\
         </label></p>\
         <p><label>Message<br><textarea name=\"message\" required rows=\"8\" cols=\"60\" \
         maxlength=\"8192\"></textarea></label></p>\
         <p><label>Site address (optional) <input type=\"text\" name=\"site_url\" \
         maxlength=\"512\"></label></p>\
         <p><label>Company (optional) <input type=\"text\" name=\"company\" \
         maxlength=\"512\"></label></p>\
         <p><label>Account or tenant (optional) <input type=\"text\" name=\"tenant\" \
         maxlength=\"512\"></label></p>\
         <p><button type=\"submit\">Send</button></p></form>",
    )
}

/// An HTML answer, never cached.
fn answer(state: &AppState, status: StatusCode, title: &str, body: &str) -> Response {
    private_headers(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page(&state.inner.page, title, body),
        )
            .into_response(),
    )
}

fn too_many(state: &AppState, wait: Duration) -> Response {
    let mut r = answer(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "<p>We received too many requests from this address or network. Please try again \
         later.</p>",
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn bad_input(state: &AppState, e: &Error) -> Response {
    answer(
        state,
        StatusCode::BAD_REQUEST,
        "Please check the form",
        &format!(
            "<p>{}.</p><p>Please go back and try again.</p>",
            escape(e.message())
        ),
    )
}

fn unavailable(state: &AppState) -> Response {
    let mut r = answer(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not take your request just now. Please try again in a minute.</p>",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

fn client_key(client: Option<Extension<ClientAddr>>) -> String {
    client
        .map(|Extension(ClientAddr(ip))| ip.to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The form's fields, or the answer that refuses it (413 for a body too long).
async fn form_fields(state: &AppState, body: Body) -> Result<Vec<(String, String)>, Box<Response>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            Box::new(answer(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too long",
                &format!("<p>The form is longer than {MAX_FORM_BYTES} bytes.</p>"),
            ))
        })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

async fn subscribe(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    body: Body,
) -> Response {
    let limits = &state.inner.rate_limits;
    if let Some(wait) = limits.subscribe_ip.take(&client_key(client)) {
        return too_many(&state, wait);
    }
    let fields = match form_fields(&state, body).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let email = field(&fields, "email")
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    if !lifeboat_control::valid_email(&email) {
        return bad_input(&state, &Error::usage("please give a valid email address"));
    }
    if let Some(wait) = limits.subscribe_address.take(&email) {
        return too_many(&state, wait);
    }
    let components: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "component")
        .map(|(_, v)| v.clone())
        .collect();
    let page_url = state.inner.page.url.clone();
    let done = state
        .read_control(move |c| c.subscribe(&email, &components, &page_url))
        .await;
    match done {
        // Whether the address was new, pending or confirmed is not told.
        Ok(_) => answer(
            &state,
            StatusCode::OK,
            "Check your email",
            "<p id=\"acknowledged\">Thank you. If this address can receive email, a message \
             with a confirmation link is on its way: follow it to start receiving updates.</p>",
        ),
        Err(e) if e.kind() == lifeboat_core::ErrorKind::Usage => bad_input(&state, &e),
        Err(_) => unavailable(&state),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn invalid_link(state: &AppState) -> Response {
    answer(
        state,
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This link is not valid, or it was already used.</p>",
    )
}

async fn confirm(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token;
    match state
        .read_control(move |c| c.confirm_subscription(&token))
        .await
    {
        Ok(true) => answer(
            &state,
            StatusCode::OK,
            "Subscribed",
            "<p id=\"confirmed\">Your subscription is confirmed: we will email you about \
             incidents. Every email has a link to unsubscribe.</p>",
        ),
        Ok(false) => invalid_link(&state),
        Err(_) => unavailable(&state),
    }
}

/// GET: a button that unsubscribes; following the link changes nothing.
async fn unsubscribe_page(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.clone();
    match state
        .read_control(move |c| c.unsubscribe_token_known(&token))
        .await
    {
        Ok(true) => answer(
            &state,
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<form method=\"post\" action=\"/unsubscribe?token={}\" id=\"unsubscribe\">\
                 <p>Stop receiving incident emails?</p>\
                 <p><button type=\"submit\">Unsubscribe</button></p></form>",
                escape(&q.token)
            ),
        ),
        Ok(false) => invalid_link(&state),
        Err(_) => unavailable(&state),
    }
}

/// POST (the button, or a mail client's one-click `List-Unsubscribe-Post`).
async fn unsubscribe(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token;
    match state.read_control(move |c| c.unsubscribe(&token)).await {
        Ok(true) => answer(
            &state,
            StatusCode::OK,
            "Unsubscribed",
            "<p id=\"unsubscribed\">You are unsubscribed: we will not email you about \
             incidents any more.</p>",
        ),
        Ok(false) => invalid_link(&state),
        Err(_) => unavailable(&state),
    }
}

async fn support(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    body: Body,
) -> Response {
    let limits = &state.inner.rate_limits;
    if let Some(wait) = limits.support_ip.take(&client_key(client)) {
        return too_many(&state, wait);
    }
    let fields = match form_fields(&state, body).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let input = SupportInput {
        email: field(&fields, "email").unwrap_or_default(),
        message: field(&fields, "message").unwrap_or_default(),
        site_url: field(&fields, "site_url"),
        company: field(&fields, "company"),
        tenant: field(&fields, "tenant"),
    };
    let email = input.email.trim().to_lowercase();
    if !lifeboat_control::valid_email(&email) {
        return bad_input(&state, &Error::usage("please give a valid email address"));
    }
    if let Some(wait) = limits.support_address.take(&email) {
        return too_many(&state, wait);
    }
    match state
        .read_control(move |c| c.file_support_request(&input))
        .await
    {
        // The same words whether it matched a tenant or not.
        Ok(_) => answer(
            &state,
            StatusCode::OK,
            "Message received",
            "<p id=\"acknowledged\">Thank you, we received your message. We will answer by \
             email.</p>",
        ),
        Err(e) if e.kind() == lifeboat_core::ErrorKind::Usage => bad_input(&state, &e),
        Err(_) => unavailable(&state),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberBody {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    by: Option<String>,
}

async fn operator_subscribers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorised(&state, &headers) {
        return r;
    }
    match state.read_control(|c| c.subscribers()).await {
        Ok(list) => Json(json!({"subscribers": list})).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn operator_add_subscriber(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body: SubscriberBody = match crate::authorised_json(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (kind, address) = match (body.webhook, body.email) {
        (Some(url), None) => (SubscriberKind::Webhook, url),
        (None, Some(email)) => (SubscriberKind::Email, email),
        _ => {
            return error_response(&Error::usage(
                "give either \"webhook\" (a URL) or \"email\" (an address)",
            ))
        }
    };
    let actor = crate::actor(body.by);
    let page_url = state.inner.page.url.clone();
    let components = body.components;
    match state
        .read_control(move |c| {
            let id = c.add_subscriber(kind, &address, &components, &page_url, &actor)?;
            let secret = c.subscriber_secret(&id)?;
            Ok((id, secret))
        })
        .await
    {
        Ok((id, secret)) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "secret": secret})),
        )
            .into_response(),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize, Default)]
struct ByQuery {
    #[serde(default)]
    by: Option<String>,
}

async fn operator_remove_subscriber(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ByQuery>,
) -> Response {
    if let Some(r) = unauthorised(&state, &headers) {
        return r;
    }
    let actor = crate::actor(q.by);
    let removed = id.clone();
    match state
        .read_control(move |c| c.remove_subscriber(&id, &actor))
        .await
    {
        Ok(()) => Json(json!({"id": removed})).into_response(),
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_capacity_then_refuses_until_refilled() {
        let b = Buckets::per_hour(3);
        assert!(b.take("a").is_none());
        assert!(b.take("a").is_none());
        assert!(b.take("a").is_none());
        let wait = b.take("a").expect("a fourth request is refused");
        // One request comes back every 20 minutes.
        assert!(wait > Duration::from_secs(1100) && wait <= Duration::from_secs(1200));
        assert!(b.take("b").is_none(), "another key has its own bucket");
    }
}
