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
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use lifeboat_control::{Component, SubscriberKind, SupportInput};
use lifeboat_core::Error;

use crate::html::escape;
use crate::i18n::{Arg, Lang};
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
                |State(state): State<AppState>,
                 RawQuery(query): RawQuery,
                 headers: HeaderMap| async move {
                    public_response(&state, "/subscribe", query.as_deref(), &headers)
                },
            )
            .post(subscribe),
        )
        .route("/subscribe/confirm", get(confirm).post(confirm))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .route(
            "/support",
            get(
                |State(state): State<AppState>,
                 RawQuery(query): RawQuery,
                 headers: HeaderMap| async move {
                    public_response(&state, "/support", query.as_deref(), &headers)
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

/// Message `id` in `lang`, escaped for HTML.
fn t(lang: Lang, id: &str, args: &[(&str, Arg)]) -> String {
    escape(&lang.text(id, args))
}

fn head(lang: Lang, title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{}</style></head><body>",
        lang.code(),
        escape(title),
        crate::html::STYLE
    )
}

/// A whole page in `lang`: the page's name, `body` (HTML), a link back to the status page
/// in the same language.
fn page(lang: Lang, info: &PageInfo, title: &str, body: &str) -> String {
    format!(
        "{}<h1>{}</h1>{body}<p class=\"meta\"><a href=\"/?lang={}\">{}</a></p>\
         </body></html>\n",
        head(lang, &format!("{} — {title}", info.name)),
        escape(title),
        lang.code(),
        t(lang, "form-back", &[])
    )
}

/// The hidden field that carries the reader's language through a form's POST.
fn lang_field(lang: Lang) -> String {
    format!(
        "<input type=\"hidden\" name=\"lang\" value=\"{}\">",
        lang.code()
    )
}

/// The subscribe form in `lang`, on the public page and on `/subscribe`: an email address
/// and, if the page has components, a box for each (none ticked: every incident).
pub fn subscribe_form(lang: Lang, components: &[Component]) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"/subscribe\" id=\"subscribe\">{}\
         <p><label>{} <input type=\"email\" name=\"email\" required maxlength=\"254\">\
         </label> <button type=\"submit\">{}</button></p>",
        lang_field(lang),
        t(lang, "form-email", &[]),
        t(lang, "subscribe-button", &[])
    );
    if !components.is_empty() {
        out.push_str(&format!(
            "<p class=\"meta\">{}",
            t(lang, "subscribe-only-about", &[])
        ));
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

/// `/subscribe` in `lang`: the form on a page of its own (the status page refreshes
/// itself).
pub fn subscribe_page(lang: Lang, info: &PageInfo, components: &[Component]) -> String {
    page(
        lang,
        info,
        &lang.text("subscribe-title", &[]),
        &format!(
            "<p>{}</p>{}",
            t(lang, "subscribe-intro", &[]),
            subscribe_form(lang, components)
        ),
    )
}

/// `/support` in `lang`: the support form. Only the address and the message are required.
pub fn support_page(lang: Lang, info: &PageInfo) -> String {
    page(
        lang,
        info,
        &lang.text("support-title", &[]),
        &format!(
            "<p>{intro}</p>\
             <form method=\"post\" action=\"/support\" id=\"support\">{hidden}\
             <p><label>{email} <input type=\"email\" name=\"email\" required \
             maxlength=\"254\"></label></p>\
             <p><label>{message}<br><textarea name=\"message\" required rows=\"8\" \
             cols=\"60\" maxlength=\"{max}\"></textarea></label></p>\
             <p><label>{site} <input type=\"text\" name=\"site_url\" \
             maxlength=\"{field}\"></label></p>\
             <p><label>{company} <input type=\"text\" name=\"company\" \
             maxlength=\"{field}\"></label></p>\
             <p><label>{tenant} <input type=\"text\" name=\"tenant\" \
             maxlength=\"{field}\"></label></p>\
             <p><button type=\"submit\">{send}</button></p></form>",
            intro = t(lang, "support-intro", &[]),
            hidden = lang_field(lang),
            email = t(lang, "form-email", &[]),
            message = t(lang, "support-message", &[]),
            site = t(lang, "support-site", &[]),
            company = t(lang, "support-company", &[]),
            tenant = t(lang, "support-tenant", &[]),
            send = t(lang, "support-send", &[]),
            max = lifeboat_control::MAX_MESSAGE_BYTES,
            field = lifeboat_control::MAX_FIELD_BYTES,
        ),
    )
}

/// An HTML answer in `lang` with message `title` and `body` (HTML), never cached.
fn answer(state: &AppState, lang: Lang, status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = private_headers(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page(lang, &state.inner.page, &lang.text(title, &[]), body),
        )
            .into_response(),
    );
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-language"));
    response
}

/// An answer whose body is one paragraph, message `id` (with `html_id` as its id).
fn said(lang: Lang, id: &str, html_id: Option<&str>) -> String {
    match html_id {
        Some(html_id) => format!("<p id=\"{html_id}\">{}</p>", t(lang, id, &[])),
        None => format!("<p>{}</p>", t(lang, id, &[])),
    }
}

fn too_many(state: &AppState, lang: Lang, wait: Duration) -> Response {
    let mut r = answer(
        state,
        lang,
        StatusCode::TOO_MANY_REQUESTS,
        "answer-too-many-title",
        &said(lang, "answer-too-many", None),
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The form refused: `why` (a message in `lang`, already written).
fn bad_input(state: &AppState, lang: Lang, why: &str) -> Response {
    answer(
        state,
        lang,
        StatusCode::BAD_REQUEST,
        "answer-check-title",
        &format!(
            "<p>{}</p><p>{}</p>",
            escape(why),
            t(lang, "answer-try-again", &[])
        ),
    )
}

fn unavailable(state: &AppState, lang: Lang) -> Response {
    let mut r = answer(
        state,
        lang,
        StatusCode::SERVICE_UNAVAILABLE,
        "answer-unavailable-title",
        &said(lang, "answer-unavailable", None),
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

/// The form's fields, or the answer that refuses it (413 for a body too long, in the
/// language of the request without its form).
async fn form_fields(
    state: &AppState,
    lang: Lang,
    body: Body,
) -> Result<Vec<(String, String)>, Box<Response>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            Box::new(answer(
                state,
                lang,
                StatusCode::PAYLOAD_TOO_LARGE,
                "answer-too-long-title",
                &format!(
                    "<p>{}</p>",
                    t(
                        lang,
                        "answer-too-long",
                        &[("bytes", (MAX_FORM_BYTES as u64).into())]
                    )
                ),
            ))
        })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A posted form under the per-address limit `per_ip`: its language (`form_lang`) and its
/// fields, or the answer that refuses it (429, or 413), in the request's language.
async fn posted_form(
    state: &AppState,
    per_ip: &Buckets,
    client: Option<Extension<ClientAddr>>,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Lang, Vec<(String, String)>), Box<Response>> {
    let lang = crate::request_lang(query.as_deref(), headers);
    if let Some(wait) = per_ip.take(&client_key(client)) {
        return Err(Box::new(too_many(state, lang, wait)));
    }
    let fields = form_fields(state, lang, body).await?;
    Ok((form_lang(&fields, lang), fields))
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// The language of a form's answer: the form's own `lang` field (the page it was read
/// on), else the request's (`?lang=`, then `Accept-Language`).
fn form_lang(fields: &[(String, String)], request: Lang) -> Lang {
    field(fields, "lang")
        .as_deref()
        .and_then(Lang::from_tag)
        .unwrap_or(request)
}

/// A field that is longer than it may be, named in `lang`.
fn too_long(lang: Lang, label: &str, bytes: usize) -> String {
    lang.text(
        "form-field-too-long",
        &[
            ("field", lang.text(label, &[]).into()),
            ("bytes", (bytes as u64).into()),
        ],
    )
}

async fn subscribe(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limits = &state.inner.rate_limits;
    let per_ip = &limits.subscribe_ip;
    let (lang, fields) = match posted_form(&state, per_ip, client, query, &headers, body).await {
        Ok(form) => form,
        Err(r) => return *r,
    };
    let email = field(&fields, "email")
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    if !lifeboat_control::valid_email(&email) {
        return bad_input(&state, lang, &lang.text("form-invalid-email", &[]));
    }
    if let Some(wait) = limits.subscribe_address.take(&email) {
        return too_many(&state, lang, wait);
    }
    let components: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "component")
        .map(|(_, v)| v.clone())
        .collect();
    let page_url = state.inner.page.url.clone();
    // Kept for other languages than the default only: an English subscriber's links stay
    // as they were.
    let kept = (lang != Lang::DEFAULT).then_some(lang.code());
    let done = state
        .read_control(move |c| c.subscribe_in(&email, &components, &page_url, kept))
        .await;
    match done {
        // Whether the address was new, pending or confirmed is not told.
        Ok(_) => answer(
            &state,
            lang,
            StatusCode::OK,
            "answer-subscribed-title",
            &said(lang, "answer-subscribed", Some("acknowledged")),
        ),
        // The address is checked above: what is left to refuse is a component.
        Err(e) if e.kind() == lifeboat_core::ErrorKind::Usage => {
            bad_input(&state, lang, &lang.text("form-unknown-component", &[]))
        }
        Err(_) => unavailable(&state, lang),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn invalid_link(state: &AppState, lang: Lang) -> Response {
    answer(
        state,
        lang,
        StatusCode::NOT_FOUND,
        "answer-invalid-title",
        &said(lang, "answer-invalid", None),
    )
}

async fn confirm(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = crate::request_lang(query.as_deref(), &headers);
    let token = q.token;
    match state
        .read_control(move |c| c.confirm_subscription(&token))
        .await
    {
        Ok(true) => answer(
            &state,
            lang,
            StatusCode::OK,
            "answer-confirmed-title",
            &said(lang, "answer-confirmed", Some("confirmed")),
        ),
        Ok(false) => invalid_link(&state, lang),
        Err(_) => unavailable(&state, lang),
    }
}

/// GET: a button that unsubscribes; following the link changes nothing.
async fn unsubscribe_page(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = crate::request_lang(query.as_deref(), &headers);
    let token = q.token.clone();
    match state
        .read_control(move |c| c.unsubscribe_token_known(&token))
        .await
    {
        Ok(true) => answer(
            &state,
            lang,
            StatusCode::OK,
            "unsubscribe-title",
            &format!(
                "<form method=\"post\" action=\"/unsubscribe?token={}&amp;lang={}\" \
                 id=\"unsubscribe\"><p>{}</p>\
                 <p><button type=\"submit\">{}</button></p></form>",
                escape(&form_urlencoded::byte_serialize(q.token.as_bytes()).collect::<String>()),
                lang.code(),
                t(lang, "unsubscribe-ask", &[]),
                t(lang, "unsubscribe-button", &[])
            ),
        ),
        Ok(false) => invalid_link(&state, lang),
        Err(_) => unavailable(&state, lang),
    }
}

/// POST (the button, or a mail client's one-click `List-Unsubscribe-Post`).
async fn unsubscribe(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = crate::request_lang(query.as_deref(), &headers);
    let token = q.token;
    match state.read_control(move |c| c.unsubscribe(&token)).await {
        Ok(true) => answer(
            &state,
            lang,
            StatusCode::OK,
            "answer-unsubscribed-title",
            &said(lang, "answer-unsubscribed", Some("unsubscribed")),
        ),
        Ok(false) => invalid_link(&state, lang),
        Err(_) => unavailable(&state, lang),
    }
}

async fn support(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limits = &state.inner.rate_limits;
    let per_ip = &limits.support_ip;
    let (lang, fields) = match posted_form(&state, per_ip, client, query, &headers, body).await {
        Ok(form) => form,
        Err(r) => return *r,
    };
    let input = SupportInput {
        email: field(&fields, "email").unwrap_or_default(),
        message: field(&fields, "message").unwrap_or_default(),
        site_url: field(&fields, "site_url"),
        company: field(&fields, "company"),
        tenant: field(&fields, "tenant"),
        lang: (lang != Lang::DEFAULT).then(|| lang.code().to_string()),
    };
    let email = input.email.trim().to_lowercase();
    if !lifeboat_control::valid_email(&email) {
        return bad_input(&state, lang, &lang.text("form-invalid-email", &[]));
    }
    if let Some(wait) = limits.support_address.take(&email) {
        return too_many(&state, lang, wait);
    }
    // What the control store would refuse, said in the reader's language.
    let message = input.message.trim();
    if message.is_empty() {
        return bad_input(&state, lang, &lang.text("form-no-message", &[]));
    }
    if message.len() > lifeboat_control::MAX_MESSAGE_BYTES {
        let why = lang.text(
            "form-message-too-long",
            &[("bytes", (lifeboat_control::MAX_MESSAGE_BYTES as u64).into())],
        );
        return bad_input(&state, lang, &why);
    }
    for (value, label) in [
        (&input.site_url, "support-site"),
        (&input.company, "support-company"),
        (&input.tenant, "support-tenant"),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| v.trim().len() > lifeboat_control::MAX_FIELD_BYTES)
        {
            let why = too_long(lang, label, lifeboat_control::MAX_FIELD_BYTES);
            return bad_input(&state, lang, &why);
        }
    }
    match state
        .read_control(move |c| c.file_support_request(&input))
        .await
    {
        // The same words whether it matched a tenant or not.
        Ok(_) => answer(
            &state,
            lang,
            StatusCode::OK,
            "answer-support-title",
            &said(lang, "answer-support", Some("acknowledged")),
        ),
        Err(e) if e.kind() == lifeboat_core::ErrorKind::Usage => {
            bad_input(&state, lang, &format!("{}.", e.message()))
        }
        Err(_) => unavailable(&state, lang),
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
