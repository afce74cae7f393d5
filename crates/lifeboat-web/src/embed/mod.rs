//! `/embed/banner.js`: a script any other site includes with one tag to show the current
//! incident from the public summary JSON (CORS, no credentials), or nothing when all is
//! operational. It reads public data only and sets no cookie.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The script, as served.
pub const BANNER_JS: &str = include_str!("banner.js");

/// `GET /embed/banner.js`: loadable from any origin, cached for a minute.
pub async fn banner() -> Response {
    let mut response = BANNER_JS.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    response
}
