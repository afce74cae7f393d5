//! `/metrics`, `/healthz` and `/readyz` (docs/operations.md): on `lifeboat serve`'s own
//! listener, and on the listener of `--metrics-listen` for commands that otherwise do not
//! listen (`capture`, `worker`). What "ready" means is the command's: it hands a check in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use lifeboat_core::metrics::{Metrics, CONTENT_TYPE};

/// A readiness check: `Ok` when everything the process needs answers, else the reason.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A readiness check that has not answered by then fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Observed {
    metrics: Metrics,
    ready: ReadyCheck,
}

/// `/metrics`, `/healthz` and `/readyz` for `metrics` and the check `ready`.
pub fn router(metrics: Metrics, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Observed { metrics, ready })
}

async fn metrics_text(State(observed): State<Observed>) -> Response {
    metrics_response(&observed.metrics)
}

pub(crate) fn metrics_response(metrics: &Metrics) -> Response {
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics.encode(),
    )
        .into_response()
}

/// The process is up and answering.
pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(observed): State<Observed>) -> Response {
    ready_response((observed.ready)()).await
}

/// 200 `ready` or 503 with the reason, one line.
pub(crate) async fn ready_response(check: impl Future<Output = Result<(), String>>) -> Response {
    let outcome = match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "not ready: no answer within {} s",
            READY_TIMEOUT.as_secs()
        )),
    };
    match outcome {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", reason.replace('\n', " ")),
        )
            .into_response(),
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}
