//! The status page: one HTML file and one script, compiled in (no CDN, works offline;
//! the script renders only through `textContent`).

use axum::response::{IntoResponse, Response};

/// The status page: one HTML file and one script, compiled in (no CDN, works offline).
pub(super) async fn status_page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../web/status.html"),
    )
        .into_response()
}

/// The page's script.
pub(super) async fn status_script() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../web/status.js"),
    )
        .into_response()
}
