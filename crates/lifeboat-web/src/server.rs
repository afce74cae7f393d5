//! The listener: HTTP/1.1 connections served with a header-read timeout (a client that
//! sends half a request, or idles between requests, is disconnected), at most
//! `max_connections` at once, and a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use lifeboat_core::config::ServerConfig;

use crate::{router, AppState};

/// How the server holds up facing the internet (`[server]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this, counted from the connection's first
    /// read or the previous answer.
    pub header_timeout: Duration,
    /// A whole request, body included, is answered within this (408 otherwise).
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// How long a request waits for the control store (503 after).
    pub control_timeout: Duration,
}

impl Limits {
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(server.header_timeout_seconds),
            request_timeout: Duration::from_secs(server.request_timeout_seconds),
            max_connections: server.max_connections,
            max_body_bytes: server.max_body_bytes,
            control_timeout: Duration::from_millis(server.control_timeout_ms),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&ServerConfig::default())
    }
}

/// Serve the router on `listener` until `shutdown` resolves, then finish the requests in
/// flight (each within the request timeout) and close idle connections.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits().clone();
    let refresher = state.spawn_refresher();
    let service = TowerToHyperService::new(router(state));
    let mut http = http1::Builder::new();
    // The timer is what makes the header-read timeout apply at all.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a little rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        // Each request knows its connection's address (the forms' rate limits).
        let service = service.clone();
        let with_peer = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(crate::forms::ClientAddr(peer.ip()));
                hyper::service::Service::call(&service, request)
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), with_peer));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    let wait = limits.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(wait, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {} s: closed", wait.as_secs());
    }
    refresher.abort();
    Ok(())
}
