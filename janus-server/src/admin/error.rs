//! The error every admin handler answers with: an HTTP status and a JSON
//! body `{"error": CODE, "reason": TEXT}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use janus_core::api::ApiErrorBody;
use janus_core::ProtocolError;

/// A refused admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable code (a protocol P7 code where one fits).
    pub code: &'static str,
    /// A human-readable explanation.
    pub reason: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(code: &'static str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, reason)
    }

    /// `404 Not Found` for a session token that names no live session.
    pub fn unknown_session(token: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            format!("no live session with token {token}"),
        )
    }
}

/// The broker cannot be reached (cluster mode): `503 unavailable`.
impl From<crate::broker::Unavailable> for ApiError {
    fn from(err: crate::broker::Unavailable) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        )
    }
}

/// A protocol error in a request body (bad topic, bad JSON) is a `400`.
impl From<ProtocolError> for ApiError {
    fn from(err: ProtocolError) -> Self {
        Self::bad_request(err.code.as_str(), err.reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: self.code.to_owned(),
            reason: self.reason,
        };
        (self.status, Json(body)).into_response()
    }
}
