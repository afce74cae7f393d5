//! A tenant's export of its data from its private page: `POST /t/{token}/export` asks for
//! it (`format=csv`, the default, or `format=sqlite`; a worker builds it), `GET /t/{token}/export/{link}` streams it while the link is
//! valid. A link is good only on its own tenant's page; each download is audited.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use lifeboat_core::time::now_us;

use crate::i18n::Lang;
use crate::{error_response, not_found, private_headers, private_unavailable, AppState};

/// The longest form the export button sends.
const MAX_FORM_BYTES: usize = 1024;

/// Ask for the export (or a new link to it), then back to the page.
pub(crate) async fn request(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> Response {
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "The form is too long.");
    };
    let format = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "format")
        .map_or_else(|| "csv".to_string(), |(_, value)| value.into_owned());
    if !lifeboat_control::EXPORT_FORMATS.contains(&format.as_str()) {
        return refused(
            StatusCode::BAD_REQUEST,
            "Unknown download format: choose csv or sqlite.",
        );
    }
    let Some((_, link_us)) = state.inner.exports.clone() else {
        return not_found(Lang::DEFAULT);
    };
    if !state.snapshot().tenants.contains_key(&token) {
        return not_found(Lang::DEFAULT);
    }
    if !state.control_answering() {
        return private_unavailable(Lang::DEFAULT, false);
    }
    let asked = {
        let token = token.clone();
        state
            .write_control(move |c| c.request_export_as(&token, link_us, &format))
            .await
    };
    match asked {
        Ok(true) => private_headers(
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("/t/{token}"))],
            )
                .into_response(),
        ),
        Ok(false) => not_found(Lang::DEFAULT),
        Err(e) => private_headers(error_response(&e)),
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    private_headers((status, format!("{message}\n")).into_response())
}

/// Stream the archive behind `link`, if it is this page's current, unexpired link.
pub(crate) async fn download(
    State(state): State<AppState>,
    Path((token, link)): Path<(String, String)>,
) -> Response {
    let Some((dir, _)) = state.inner.exports.clone() else {
        return not_found(Lang::DEFAULT);
    };
    let snapshot = state.snapshot();
    let Some(view) = snapshot.tenants.get(&token) else {
        return not_found(Lang::DEFAULT);
    };
    // A removed export's link answers like an expired one (its archive is gone).
    let Some(export) = view
        .export
        .as_ref()
        .filter(|e| e.state == "ready" || e.state == "removed")
    else {
        return refused(StatusCode::NOT_FOUND, "There is no download for this page.");
    };
    let current = export.link.as_deref().is_some_and(|l| {
        l.len() == link.len()
            && l.bytes()
                .zip(link.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !current {
        return refused(
            StatusCode::NOT_FOUND,
            "This download link is not valid. Please ask for a new one on your recovery page.",
        );
    }
    if export.state == "removed" || export.link_until_us.is_none_or(|until| until <= now_us()) {
        return refused(
            StatusCode::GONE,
            "This download link has expired. Please ask for a new one on your recovery page.",
        );
    }
    let Some(file_name) = export.file.clone() else {
        return refused(StatusCode::NOT_FOUND, "There is no download for this page.");
    };
    if !state.control_answering() {
        return private_unavailable(Lang::DEFAULT, false);
    }
    // The store has the last word on the link (the snapshot may be a moment old), and
    // records the download.
    let recorded = {
        let (campaign, tenant, link) = (export.campaign.clone(), export.tenant.clone(), link);
        state
            .read_control(move |c| c.record_download(&campaign, &tenant, &link))
            .await
    };
    if let Err(e) = recorded {
        return match e.kind() {
            lifeboat_core::ErrorKind::Usage => refused(
                StatusCode::GONE,
                "This download link has expired. Please ask for a new one on your recovery page.",
            ),
            _ => private_headers(error_response(&e)),
        };
    }
    let file = match tokio::fs::File::open(dir.join(&file_name)).await {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!("export {file_name}: {e}");
            return refused(
                StatusCode::NOT_FOUND,
                "Your download is no longer here. Please ask for it again on your recovery page.",
            );
        }
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let h = response.headers_mut();
    let sqlite = file_name.ends_with(".sqlite");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if sqlite {
            "application/vnd.sqlite3"
        } else {
            "application/zip"
        }),
    );
    if let Some(length) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let name = format!(
        "attachment; filename=\"data-{}.{}\"",
        view.tenant.replace(['"', '\\', '\r', '\n'], "_"),
        if sqlite { "sqlite" } else { "zip" }
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    private_headers(response)
}
