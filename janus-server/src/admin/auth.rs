//! Who may use the admin API.
//!
//! With an admin token configured, every request except `GET /health`
//! and the page `GET /ui` (which asks for the token itself) needs `Authorization: Bearer TOKEN`; anything else gets a bare `401`
//! (no body, nothing about why). Without a token the API serves loopback
//! clients only and refuses the rest with `403`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::server::AdminState;

/// Middleware applying the rules above to every route.
pub async fn authorize(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    // The page holds no data: it asks for the token and sends it with
    // every API call it makes (a browser cannot add it to a navigation).
    let open = ["/health", "/ui"];
    if request.method() == Method::GET && open.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match state.shared.config.admin_token.as_deref() {
        Some(token) => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                )
                    .into_response();
            }
        }
        None if !is_loopback(peer.ip()) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no admin token is configured, so only loopback clients are served",
            )
            .into_response();
        }
        None => {}
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer …` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Loopback, including IPv4 loopback mapped into IPv6.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn comparisons_and_addresses() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(is_loopback("127.0.0.2".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
    }
}
