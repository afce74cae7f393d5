//! `lifeboat serve`: the public status page (HTML, Statuspage v2 JSON, Atom), private
//! tenant pages, and the operator API (docs/status.md). Public and private pages are
//! served from a snapshot rebuilt when the control store changes.

pub mod html;
pub mod observe;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use lifeboat_control::{ControlStore, IncidentChange};
use lifeboat_core::{Error, ErrorKind};

pub use snapshot::{PageInfo, Snapshot};

/// A snapshot older than this is rebuilt even if nothing changed: ETAs move with time.
const MAX_AGE_US: i64 = 5_000_000;

/// What the server shares between requests.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: RwLock<Arc<Snapshot>>,
    /// One connection (used from blocking tasks, one at a time), opened again after an
    /// error: a PostgreSQL control store may restart or fail over under the server.
    control: Mutex<ControlStore>,
    control_url: String,
    page: PageInfo,
    token: Option<String>,
    /// Accept tenants that have awaited acceptance this long (microseconds).
    auto_accept_us: Option<i64>,
}

impl AppState {
    /// Open the control store at `control_url` and build the first snapshot.
    pub fn new(
        control_url: &str,
        page: PageInfo,
        token: Option<String>,
        auto_accept_us: Option<i64>,
    ) -> lifeboat_core::Result<AppState> {
        let mut control = ControlStore::open(control_url)?;
        let snapshot = Snapshot::build(&mut control, &page)?;
        Ok(AppState {
            inner: Arc::new(Inner {
                snapshot: RwLock::new(Arc::new(snapshot)),
                control: Mutex::new(control),
                control_url: control_url.to_string(),
                auto_accept_us,
                page,
                token: token.filter(|t| !t.is_empty()),
            }),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rebuild the snapshot if the control store changed (or `force`, or it is old).
    pub async fn refresh(&self, force: bool) -> lifeboat_core::Result<()> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            state.on_control(|control| {
                if let Some(after) = state.inner.auto_accept_us {
                    control.auto_accept(after)?;
                }
                let current = state.snapshot();
                let stale = lifeboat_core::time::now_us() - current.built_at_us > MAX_AGE_US;
                if !force && !stale && control.status_version()? == current.version {
                    return Ok(());
                }
                let fresh = Arc::new(Snapshot::build(control, &state.inner.page)?);
                match state.inner.snapshot.write() {
                    Ok(mut s) => *s = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::source(format!("snapshot task: {e}")))?
    }

    /// Run `work` on the control store (blocking); after an error, open the store again
    /// and try once more.
    fn on_control<T>(
        &self,
        work: impl Fn(&mut ControlStore) -> lifeboat_core::Result<T>,
    ) -> lifeboat_core::Result<T> {
        let mut control = self.control();
        match work(&mut control) {
            Ok(out) => Ok(out),
            Err(first) => match ControlStore::open(&self.inner.control_url) {
                Ok(fresh) => {
                    *control = fresh;
                    work(&mut control)
                }
                Err(_) => Err(first),
            },
        }
    }

    /// Keep the snapshot fresh until `stop` resolves: checks the control store's version
    /// four times a second.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Err(e) = state.refresh(false).await {
                    tracing::warn!("status snapshot: {e}");
                }
            }
        })
    }

    fn control(&self) -> std::sync::MutexGuard<'_, ControlStore> {
        match self.inner.control.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Run `work` on the control store on a blocking thread, then refresh the snapshot.
    async fn with_control<T: Send + 'static>(
        &self,
        work: impl Fn(&mut ControlStore) -> lifeboat_core::Result<T> + Send + 'static,
    ) -> lifeboat_core::Result<T> {
        let state = self.clone();
        let out = tokio::task::spawn_blocking(move || state.on_control(work))
            .await
            .map_err(|e| Error::source(format!("control store task: {e}")))??;
        self.refresh(true).await?;
        Ok(out)
    }
}

/// Every route: public pages and JSON, private tenant pages, the operator API.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for path in snapshot::JSON_PATHS.into_iter().chain([
        "/",
        "/history.atom",
        "/api/lifeboat/campaigns.json",
    ]) {
        router = router.route(
            path,
            get(
                move |State(state): State<AppState>, headers: HeaderMap| async move {
                    public(&state, path, &headers)
                },
            ),
        );
    }
    router
        .route("/t/{token}", get(tenant_page))
        .route("/t/{token}/status.json", get(tenant_json))
        .route("/t/{token}/accept", post(tenant_accept))
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
        .route("/readyz", get(readyz))
        .with_state(state)
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
        tokio::task::spawn_blocking(move || state.on_control(|c| c.status_version()))
            .await
            .map_err(|e| format!("control store task: {e}"))?
            .map(|_| ())
            .map_err(|e| format!("control store: {e}"))
    })
    .await
}

fn public(state: &AppState, path: &'static str, headers: &HeaderMap) -> Response {
    let snapshot = state.snapshot();
    let Some(body) = snapshot.bodies.get(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let json = body.content_type == "application/json";
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == body.etag || tag.trim() == "*")
        }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body.bytes.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(body.content_type),
        );
        r
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&body.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=5"),
    );
    if json {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    response
}

fn private_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

fn not_found() -> Response {
    private_headers(
        (
            StatusCode::NOT_FOUND,
            "This recovery link is not valid. Please check the link in your message.\n",
        )
            .into_response(),
    )
}

async fn tenant_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let snapshot = state.snapshot();
    match snapshot.tenants.get(&token) {
        Some(view) => private_headers(
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html::tenant_page(&snapshot.page, &token, view),
            )
                .into_response(),
        ),
        None => not_found(),
    }
}

async fn tenant_json(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let snapshot = state.snapshot();
    match snapshot.tenants.get(&token) {
        Some(view) => private_headers(
            Json(json!({
                "tenant": view.tenant,
                "stage": view.stage,
                "position": view.position,
                "estimated_restoration": view.eta,
                "restored_to": view.target_time,
                "incident": view.incident_name,
            }))
            .into_response(),
        ),
        None => not_found(),
    }
}

async fn tenant_accept(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if !state.snapshot().tenants.contains_key(&token) {
        return not_found();
    }
    let accepted = {
        let token = token.clone();
        state.with_control(move |c| c.accept(&token)).await
    };
    match accepted {
        Ok(_) => private_headers(
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("/t/{token}"))],
            )
                .into_response(),
        ),
        Err(e) => private_headers(error_response(&e)),
    }
}

fn error_response(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::Usage | ErrorKind::Config => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
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
    match state.with_control(|c| c.incidents()).await {
        Ok(incidents) => Json(json!({"incidents": incidents})).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The request's JSON body, read only once the caller is known.
fn authorised_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<IncidentBody, Box<Response>> {
    if let Some(refusal) = unauthorised(state, headers) {
        return Err(Box::new(refusal));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(&Error::usage(format!(
            "the body is not a valid request: {e}"
        ))))
    })
}

async fn operator_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match authorised_body(&state, &headers, &body) {
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
    components: &BTreeMap<String, String>,
) -> lifeboat_core::Result<IncidentChange> {
    Ok(IncidentChange {
        name,
        status: status.parse()?,
        impact: impact.map(str::parse).transpose()?,
        message,
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
        .with_control(move |c| c.change_incident(id.as_deref(), &change, &actor))
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
    body: axum::body::Bytes,
) -> Response {
    post_update(&state, &headers, id, &body, None).await
}

async fn operator_resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    post_update(&state, &headers, id, &body, Some("resolved")).await
}

/// An update to incident `id`; `status` (resolving) overrides the body's status and
/// impact.
async fn post_update(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    body: &[u8],
    status: Option<&str>,
) -> Response {
    let body = match authorised_body(state, headers, body) {
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
        .with_control(|c| Ok((c.campaigns()?, c.campaign_tenants(None)?)))
        .await
    {
        Ok((campaigns, tenants)) => {
            Json(json!({"campaigns": campaigns, "tenants": tenants})).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then finish the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refresher = state.spawn_refresher();
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    result
}
