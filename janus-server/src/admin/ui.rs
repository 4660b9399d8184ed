//! `GET /ui`: a live page for operators — status and rates, top topics,
//! sessions with a kick button, a publish form, and a subscriber pane that
//! connects to a topic over WebSocket (X2) and shows what arrives.
//!
//! One self-contained HTML file, embedded in the binary: no build step, no
//! CDN, it works offline. It polls the JSON API once a second with the
//! bearer token the operator types in (kept in the tab's session storage),
//! so it needs no endpoint of its own and no more access than `curl`.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("ui.html");

/// `GET /ui`.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Scripts and styles are inline; connections go to this server
            // (the API) and to WebSocket endpoints.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
}
