//! `lifeboat serve`: the public status page (HTML, Statuspage v2 JSON, Atom), private
//! tenant pages, and the operator API (docs/status.md). Public and private pages are
//! served from a snapshot rebuilt when the control store changes.

pub mod embed;
mod export;
pub mod forms;
pub mod html;
pub mod i18n;
pub mod markdown;
pub mod observe;
mod server;
pub mod snapshot;
pub mod uptime;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use lifeboat_control::{ControlStore, IncidentChange, Stage};
use lifeboat_core::time::now_us;
use lifeboat_core::{Error, ErrorKind};

use crate::i18n::Lang;

pub use server::{serve, Limits};
pub use snapshot::{PageInfo, Snapshot};

/// A snapshot older than this is rebuilt even if nothing changed: ETAs move with time.
const MAX_AGE_US: i64 = 5_000_000;
/// How often the refresher asks the control store whether anything changed.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// Public responses: how many seconds ago the snapshot was last known to be current.
pub const SNAPSHOT_AGE: HeaderName = HeaderName::from_static("lifeboat-snapshot-age");

/// What the server shares between requests.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: RwLock<Arc<Snapshot>>,
    /// One connection, used from blocking tasks one at a time, opened again after an
    /// error (a PostgreSQL control store may restart or fail over under the server).
    /// Requests wait for it at most `limits.control_timeout`.
    control: Arc<tokio::sync::Mutex<ControlStore>>,
    control_url: String,
    page: PageInfo,
    token: Option<String>,
    /// Accept tenants that have awaited acceptance this long (microseconds).
    auto_accept_us: Option<i64>,
    limits: Limits,
    /// When the snapshot was last known to match the control store (microseconds).
    confirmed_at_us: AtomicI64,
    /// When the refresher's question to the control store started; 0 when none is out or
    /// the store has answered it.
    probe_started_us: AtomicI64,
    /// The refresher's last question failed.
    probe_failed: AtomicBool,
    /// The forms' rate limits (in memory: a restart forgets them).
    rate_limits: forms::RateLimits,
    /// Tenants' export archives: their directory and how long a download link works (µs).
    exports: Option<(std::path::PathBuf, i64)>,
}

/// Open the control store at `url` for the server: waits for other connections' locks
/// are cut short, so a locked store fails a request instead of holding it.
fn open_control(url: &str, limits: &Limits) -> lifeboat_core::Result<ControlStore> {
    let mut control = ControlStore::open(url)?;
    control.limit_lock_waits(limits.control_timeout)?;
    Ok(control)
}

impl AppState {
    /// Open the control store at `control_url` and build the first snapshot.
    pub fn new(
        control_url: &str,
        page: PageInfo,
        token: Option<String>,
        auto_accept_us: Option<i64>,
        limits: Limits,
    ) -> lifeboat_core::Result<AppState> {
        let mut control = open_control(control_url, &limits)?;
        let snapshot = Snapshot::build(&mut control, &page)?;
        Ok(AppState {
            inner: Arc::new(Inner {
                confirmed_at_us: AtomicI64::new(snapshot.built_at_us),
                snapshot: RwLock::new(Arc::new(snapshot)),
                control: Arc::new(tokio::sync::Mutex::new(control)),
                control_url: control_url.to_string(),
                auto_accept_us,
                page,
                token: token.filter(|t| !t.is_empty()),
                limits,
                probe_started_us: AtomicI64::new(0),
                probe_failed: AtomicBool::new(false),
                rate_limits: forms::RateLimits::new(),
                exports: None,
            }),
        })
    }

    /// Offer tenants' export archives from `dir` on their private pages, each download
    /// link working `link_us` (right after `new`, before the state is shared).
    pub fn with_exports(mut self, dir: std::path::PathBuf, link_us: i64) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.exports = Some((dir, link_us));
        }
        self
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// How long ago the snapshot was last known to match the control store.
    pub fn snapshot_age(&self) -> Duration {
        let confirmed = self.inner.confirmed_at_us.load(Ordering::Relaxed);
        Duration::from_micros(u64::try_from(now_us() - confirmed).unwrap_or(0))
    }

    /// Whether the control store answers: the refresher's last question succeeded and
    /// none has been waiting longer than the control timeout.
    pub fn control_answering(&self) -> bool {
        if self.inner.probe_failed.load(Ordering::Relaxed) {
            return false;
        }
        let started = self.inner.probe_started_us.load(Ordering::Relaxed);
        let limit = i64::try_from(self.inner.limits.control_timeout.as_micros()).unwrap_or(0);
        started == 0 || now_us() - started <= limit
    }

    /// Rebuild the snapshot if the control store changed (or `force`, or it is old).
    pub async fn refresh(&self, force: bool) -> lifeboat_core::Result<()> {
        let started = now_us();
        self.inner
            .probe_started_us
            .store(started, Ordering::Relaxed);
        let state = self.clone();
        let result = self
            .on_control(None, move |control| {
                if let Some(after) = state.inner.auto_accept_us {
                    control.auto_accept(after)?;
                }
                let version = control.status_version()?;
                // The store answers: a long rebuild does not make it look unavailable.
                state.inner.probe_started_us.store(0, Ordering::Relaxed);
                let current = state.snapshot();
                let stale = now_us() - current.built_at_us > MAX_AGE_US;
                if !force && !stale && version == current.version {
                    return Ok(());
                }
                let fresh = Arc::new(Snapshot::build(control, &state.inner.page)?);
                match state.inner.snapshot.write() {
                    Ok(mut s) => *s = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                Ok(())
            })
            .await;
        self.inner.probe_started_us.store(0, Ordering::Relaxed);
        let failed = result.is_err();
        let was_failed = self.inner.probe_failed.swap(failed, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                self.inner
                    .confirmed_at_us
                    .fetch_max(started, Ordering::Relaxed);
                if was_failed {
                    tracing::warn!("status snapshot: the control store answers again");
                }
            }
            Err(e) if !was_failed => tracing::warn!(
                "status snapshot: {e}; public pages are served from the last snapshot, \
                 private pages and the operator API answer 503"
            ),
            Err(_) => {}
        }
        result
    }

    /// Refresh in a task of its own, waiting for it at most the control timeout (the
    /// refresher catches up later).
    async fn refresh_soon(&self) {
        let state = self.clone();
        let task = tokio::spawn(async move { state.refresh(true).await });
        let _ = tokio::time::timeout(self.inner.limits.control_timeout, task).await;
    }

    /// Run `work` on the control store on a blocking thread; after an error, open the
    /// store again and try once more. With `deadline`, give up after it (transient
    /// error): the connection stays busy until the store's own lock wait ends.
    async fn on_control<T: Send + 'static>(
        &self,
        deadline: Option<Duration>,
        work: impl Fn(&mut ControlStore) -> lifeboat_core::Result<T> + Send + 'static,
    ) -> lifeboat_core::Result<T> {
        let state = self.clone();
        let run = async move {
            let mut control = state.inner.control.clone().lock_owned().await;
            tokio::task::spawn_blocking(move || match work(&mut control) {
                Ok(out) => Ok(out),
                Err(first) => match open_control(&state.inner.control_url, &state.inner.limits) {
                    Ok(fresh) => {
                        *control = fresh;
                        work(&mut control)
                    }
                    Err(_) => Err(first),
                },
            })
            .await
            .map_err(|e| Error::source(format!("control store task: {e}")))?
        };
        match deadline {
            None => run.await,
            Some(deadline) => tokio::time::timeout(deadline, run).await.map_err(|_| {
                Error::source(format!(
                    "the control store did not answer within {} ms",
                    deadline.as_millis()
                ))
                .transient()
            })?,
        }
    }

    /// Keep the snapshot fresh: checks the control store's change counter four times a
    /// second.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                // Failures are logged by `refresh` when the store stops answering.
                let _ = state.refresh(false).await;
            }
        })
    }

    /// Read from the control store for a request, within the control timeout.
    async fn read_control<T: Send + 'static>(
        &self,
        work: impl Fn(&mut ControlStore) -> lifeboat_core::Result<T> + Send + 'static,
    ) -> lifeboat_core::Result<T> {
        self.on_control(Some(self.inner.limits.control_timeout), work)
            .await
    }

    /// Change the control store for a request, within the control timeout, then rebuild
    /// the snapshot.
    async fn write_control<T: Send + 'static>(
        &self,
        work: impl Fn(&mut ControlStore) -> lifeboat_core::Result<T> + Send + 'static,
    ) -> lifeboat_core::Result<T> {
        let out = self.read_control(work).await?;
        self.refresh_soon().await;
        Ok(out)
    }
}

/// Every route: public pages and JSON, private tenant pages, the operator API; every
/// response with the security headers, every request within the limits.
pub fn router(state: AppState) -> Router {
    let limits = state.inner.limits.clone();
    let mut public = Router::new();
    for path in snapshot::JSON_PATHS.into_iter().chain([
        "/",
        "/history.atom",
        "/api/lifeboat/campaigns.json",
    ]) {
        public = public.route(
            path,
            get(
                move |State(state): State<AppState>,
                      RawQuery(query): RawQuery,
                      headers: HeaderMap| async move {
                    public_response(&state, path, query.as_deref(), &headers)
                },
            ),
        );
    }
    // Anyone's page may read the public JSON; a preflight is answered for a day.
    let public = public.layer(
        CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers(Any)
            .expose_headers([header::ETAG, SNAPSHOT_AGE])
            .max_age(Duration::from_secs(86_400)),
    );
    let public = public.route("/embed/banner.js", get(embed::banner));
    let private = Router::new()
        .route("/t/{token}", get(tenant_page))
        .route("/t/{token}/status.json", get(tenant_json))
        .route("/t/{token}/accept", post(tenant_accept))
        .route("/t/{token}/export", post(export::request))
        .route("/t/{token}/export/{link}", get(export::download))
        .route(
            "/api/operator/incidents",
            get(operator_incidents).post(operator_create),
        )
        .route(
            "/api/operator/incidents/{id}/updates",
            post(operator_update),
        )
        .route(
            "/api/operator/incidents/{id}/resolve",
            post(operator_resolve),
        )
        .route("/api/operator/campaigns", get(operator_campaigns))
        .route("/metrics", get(metrics))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(readyz));
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&html::content_security_policy())
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Private pages carry their token in the path: no page sends it on.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    let mut router = public
        .merge(private)
        .merge(forms::routes())
        .with_state(state)
        // A body longer than the limit is refused by its Content-Length before a byte
        // of it is read, and a chunked one is cut off at the limit.
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
}

/// The process's metrics, with each campaign's tenants by stage from the snapshot.
async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = lifeboat_core::metrics::Metrics::global();
    metrics.set_campaign_tenants(&state.snapshot().stages);
    observe::metrics_response(metrics)
}

/// Ready when the control store answers.
async fn readyz(State(state): State<AppState>) -> Response {
    observe::ready_response(async move {
        state
            .read_control(|c| c.status_version())
            .await
            .map(|_| ())
            .map_err(|e| format!("control store: {e}"))
    })
    .await
}

/// The language of a request for a page: `?lang=`, then `Accept-Language`, then English.
pub fn request_lang(query: Option<&str>, headers: &HeaderMap) -> Lang {
    let asked = query.and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("lang=")));
    let accepted = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Lang::negotiate(asked, accepted)
}

fn public_response(
    state: &AppState,
    path: &'static str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let snapshot = state.snapshot();
    let localized = snapshot::PAGE_PATHS.contains(&path);
    let lang = if localized {
        request_lang(query, headers)
    } else {
        Lang::DEFAULT
    };
    let Some(body) = snapshot.body(path, lang) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let age = state.snapshot_age();
    // The control store does not answer: the page says since when it is not updated.
    let notice = (body.content_type.starts_with("text/html") && !state.control_answering())
        .then(|| html::stale_notice(lang, &body.bytes, age));
    let with_type = |bytes: Body| {
        let mut r = Response::new(bytes);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(body.content_type),
        );
        r
    };
    let mut response = if let Some(page) = notice {
        with_type(Body::from(page))
    } else {
        let mut r = if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|tag| tag.trim() == body.etag || tag.trim() == "*")
            }) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            with_type(Body::from(body.bytes.clone()))
        };
        if let Ok(etag) = HeaderValue::from_str(&body.etag) {
            r.headers_mut().insert(header::ETAG, etag);
        }
        r
    };
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=5"),
    );
    h.insert(SNAPSHOT_AGE, HeaderValue::from(age.as_secs()));
    if localized {
        h.insert(header::VARY, HeaderValue::from_static("accept-language"));
    }
    response
}

fn private_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

fn not_found(lang: Lang) -> Response {
    private_headers(
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", lang.text("link-invalid", &[])),
        )
            .into_response(),
    )
}

/// A private page while the control store does not answer: its stage may be out of date.
fn private_unavailable(lang: Lang, json: bool) -> Response {
    let message = lang.text("private-unavailable", &[]);
    let mut response = if json {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": message})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    private_headers(response)
}

async fn tenant_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = request_lang(query.as_deref(), &headers);
    let snapshot = state.snapshot();
    match snapshot.tenants.get(&token) {
        Some(_) if !state.control_answering() => private_unavailable(lang, false),
        Some(view) => private_headers(
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::VARY, "accept-language"),
                ],
                html::tenant_page(
                    lang,
                    &snapshot.page,
                    &token,
                    view,
                    now_us(),
                    state.inner.exports.is_some(),
                ),
            )
                .into_response(),
        ),
        None => not_found(lang),
    }
}

async fn tenant_json(
    State(state): State<AppState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = request_lang(query.as_deref(), &headers);
    let snapshot = state.snapshot();
    match snapshot.tenants.get(&token) {
        Some(_) if !state.control_answering() => private_unavailable(lang, true),
        Some(view) => private_headers(
            Json(json!({
                "tenant": view.tenant,
                "stage": view.stage,
                "position": view.position,
                "estimated_restoration": view.eta,
                "restored_to": view.target_time,
                "incident": view.incident_name,
                "sla": view.sla,
                "phases": view.phases.iter().map(|(name, stage)| json!({
                    "name": name, "stage": stage,
                })).collect::<Vec<_>>(),
            }))
            .into_response(),
        ),
        None => not_found(lang),
    }
}

/// Accept the restored data. Only a tenant awaiting acceptance reaches the control store;
/// nothing is written or rebuilt for any other.
async fn tenant_accept(
    State(state): State<AppState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let lang = request_lang(query.as_deref(), &headers);
    // Back to the page, in the language the form asked for.
    let asked = query.as_deref().is_some_and(|q| q.contains("lang="));
    let back = |token: &str| {
        let location = if asked {
            format!("/t/{token}?lang={lang}")
        } else {
            format!("/t/{token}")
        };
        private_headers((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
    };
    let awaiting = match state.snapshot().tenants.get(&token) {
        None => return not_found(lang),
        Some(view) => view.stage == Stage::AwaitingAcceptance,
    };
    if !state.control_answering() {
        return private_unavailable(lang, false);
    }
    if !awaiting {
        return back(&token);
    }
    let accepted = {
        let token = token.clone();
        state.read_control(move |c| c.accept(&token)).await
    };
    match accepted {
        Ok(true) => {
            state.refresh_soon().await;
            back(&token)
        }
        Ok(false) => back(&token),
        Err(e) => private_headers(error_response(&e)),
    }
}

/// An error as JSON: bad input 400, a control store that fails or does not answer 503.
fn error_response(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::Usage | ErrorKind::Config => StatusCode::BAD_REQUEST,
        ErrorKind::Source => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = (status, Json(json!({"error": e.to_string()}))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// The operator API wants `Authorization: Bearer <token>`: the refusal otherwise.
fn unauthorised(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.inner.token, given) {
        (Some(want), Some(given)) if constant_time_eq(want.as_bytes(), given.as_bytes()) => None,
        (None, _) => Some((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "the operator API is off: set [server] token or LIFEBOAT_TOKEN"})),
        )
            .into_response()),
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "a valid bearer token is required"})),
            )
                .into_response(),
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    impact: Option<String>,
    message: String,
    /// The message in other languages: language code -> text.
    #[serde(default)]
    messages: BTreeMap<String, String>,
    /// Who is making the change, for the audit log (default `operator-api`).
    #[serde(default)]
    by: Option<String>,
    /// Source -> component status.
    #[serde(default)]
    components: BTreeMap<String, String>,
}

async fn operator_incidents(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorised(&state, &headers) {
        return r;
    }
    match state.read_control(|c| c.incidents()).await {
        Ok(incidents) => Json(json!({"incidents": incidents})).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The request's JSON body, read only once the caller is known, and at most
/// `max_body_bytes` of it.
async fn authorised_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<IncidentBody, Box<Response>> {
    authorised_json(state, headers, body).await
}

/// The request's JSON body as `T`, read only once the caller is known, and at most
/// `max_body_bytes` of it.
async fn authorised_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Box<Response>> {
    if let Some(refusal) = unauthorised(state, headers) {
        return Err(Box::new(refusal));
    }
    let limit = state.inner.limits.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": format!("the body is longer than {limit} bytes")})),
            )
                .into_response(),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error_response(&Error::usage(format!(
            "the body is not a valid request: {e}"
        ))))
    })
}

async fn operator_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match authorised_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(r) => return *r,
    };
    let Some(name) = body.name.filter(|n| !n.trim().is_empty()) else {
        return error_response(&Error::usage("a new incident needs a name"));
    };
    let change = incident_change(
        Some(name),
        body.status.as_deref().unwrap_or("investigating"),
        body.impact.as_deref(),
        body.message,
        body.messages,
        &body.components,
    );
    match change {
        Ok(change) => apply_change(&state, None, change, actor(body.by), StatusCode::CREATED).await,
        Err(e) => error_response(&e),
    }
}

/// A change to an incident from a request's words: an unknown status, impact or component
/// status is a usage error that lists the allowed words.
fn incident_change(
    name: Option<String>,
    status: &str,
    impact: Option<&str>,
    message: String,
    messages: BTreeMap<String, String>,
    components: &BTreeMap<String, String>,
) -> lifeboat_core::Result<IncidentChange> {
    Ok(IncidentChange {
        name,
        status: status.parse()?,
        impact: impact.map(str::parse).transpose()?,
        message,
        translations: i18n::check_translations(messages)?,
        components: components
            .iter()
            .map(|(source, status)| Ok((source.clone(), status.parse()?)))
            .collect::<lifeboat_core::Result<_>>()?,
    })
}

/// Who the audit log names for a change made through the operator API: the body's `by`,
/// else `operator-api`.
fn actor(by: Option<String>) -> String {
    by.map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "operator-api".to_string())
}

/// Create an incident (`id` None) or update one, audited as `actor`; answer with its id.
async fn apply_change(
    state: &AppState,
    id: Option<String>,
    change: IncidentChange,
    actor: String,
    success: StatusCode,
) -> Response {
    match state
        .write_control(move |c| c.change_incident(id.as_deref(), &change, &actor))
        .await
    {
        Ok(id) => (success, Json(json!({"id": id}))).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn operator_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    post_update(&state, &headers, id, body, None).await
}

async fn operator_resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    post_update(&state, &headers, id, body, Some("resolved")).await
}

/// An update to incident `id`; `status` (resolving) overrides the body's status and
/// impact.
async fn post_update(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    body: Body,
    status: Option<&str>,
) -> Response {
    let body = match authorised_body(state, headers, body).await {
        Ok(body) => body,
        Err(r) => return *r,
    };
    let resolving = status.is_some();
    let Some(status) = status.map(str::to_string).or(body.status) else {
        return error_response(&Error::usage("an update needs a status"));
    };
    let change = incident_change(
        None,
        &status,
        if resolving {
            None
        } else {
            body.impact.as_deref()
        },
        body.message,
        body.messages,
        &body.components,
    );
    match change {
        Ok(change) => apply_change(state, Some(id), change, actor(body.by), StatusCode::OK).await,
        Err(e) => error_response(&e),
    }
}

async fn operator_campaigns(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorised(&state, &headers) {
        return r;
    }
    match state
        .read_control(|c| Ok((c.campaigns()?, c.campaign_tenants(None)?)))
        .await
    {
        Ok((campaigns, tenants)) => {
            Json(json!({"campaigns": campaigns, "tenants": tenants})).into_response()
        }
        Err(e) => error_response(&e),
    }
}
