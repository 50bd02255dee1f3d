//! RFC 9457 problem details: every error tally answers is one of these.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_core::firehose::FirehoseError;
use tally_core::ports::{SecretError, SinkError};
use tally_core::{IngestError, StoreError, ValidationError};

use crate::encoding::DecodeError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Marks an error answer written in a format its caller requires instead of
/// problem+json (Firehose's `{"requestId","timestamp","errorMessage"}`), so
/// the router's middleware does not rewrite it into a problem document.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFormat;

/// A problem document. `type` is a relative URI naming the problem kind
/// (documented in the README); `title` is fixed per kind; `detail` says what
/// happened and what to do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(description = "An RFC 9457 problem document (`application/problem+json`).")]
pub struct Problem {
    /// The problem kind, a relative URI such as `/problems/malformed-json`.
    #[serde(rename = "type")]
    #[schema(pattern = "^/problems/[a-z0-9-]+$", example = "/problems/malformed-json")]
    pub kind: String,
    /// A short summary, fixed per kind.
    #[schema(example = "Malformed JSON")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599, example = 400)]
    pub status: u16,
    /// What happened and what to do about it.
    #[schema(example = "expected value at line 2 column 8; fix the JSON and send it again")]
    pub detail: String,
    /// The batch item at fault (0-based), for batch requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub index: Option<usize>,
    /// The line at fault (1-based): of the syntax error, or of the NDJSON item.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub line: Option<usize>,
    /// The column of a syntax error (1-based; 0 when the input ended at a line start).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub column: Option<usize>,
    /// The query parameter at fault, for `invalid-parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "limit")]
    pub parameter: Option<&'static str>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            index: None,
            line: None,
            column: None,
            parameter: None,
            retry_after: None,
        }
    }

    /// A generic problem for a status produced outside tally's handlers
    /// (an unknown route, a wrong method, a timeout).
    pub fn for_status(status: StatusCode) -> Self {
        let (slug, title, detail) = match status.as_u16() {
            400 => ("bad-request", "Bad request", "the request could not be read; check its syntax and headers"),
            404 => ("not-found", "Not found", "no such route; see GET /openapi.json for the API"),
            405 => (
                "method-not-allowed",
                "Method not allowed",
                "this route does not take that method; see the Allow header",
            ),
            408 => (
                "timeout",
                "Request timeout",
                "the request took too long to arrive or to process; send it again, faster",
            ),
            413 => (
                "body-too-large",
                "Body too large",
                "the request body is larger than the server accepts; split it into smaller batches",
            ),
            431 => (
                "headers-too-large",
                "Headers too large",
                "the request headers are too large; send fewer or shorter headers",
            ),
            503 => ("unavailable", "Service unavailable", "the server is busy; retry after the time in Retry-After"),
            s if s >= 500 => {
                ("internal", "Internal error", "the server failed; retry later, and report it if it persists")
            }
            _ => ("client-error", "Client error", "the request was refused"),
        };
        Self::new(status, slug, title, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        res
    }
}

/// Every way a request can fail, mapped to one status each.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{parameter}: {message}")]
    InvalidParameter { parameter: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("this Idempotency-Key was already used with a different request body; use a new key for a new request")]
    IdempotencyConflict,
    #[error("{0}")]
    BodyTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A Firehose delivery that is not one, or one of whose records is refused.
    #[error(transparent)]
    Firehose(FirehoseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The report links' secret could not be read (a server fault).
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(v) => Self::Invalid(v),
            IngestError::IdempotencyConflict => Self::IdempotencyConflict,
            IngestError::Store(s) => Self::Store(s),
        }
    }
}

impl From<FirehoseError> for ApiError {
    fn from(e: FirehoseError) -> Self {
        match e {
            FirehoseError::Invalid(v) => Self::Invalid(v),
            FirehoseError::Ingest(e) => e.into(),
            other => Self::Firehose(other),
        }
    }
}

/// Status, problem slug and title of a validation error.
fn validation_kind(v: &ValidationError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match v {
        ValidationError::EmptyBody => (S::BAD_REQUEST, "empty-body", "Empty body"),
        ValidationError::Encoding { .. } | ValidationError::InvalidUtf8 { .. } => {
            (S::BAD_REQUEST, "invalid-encoding", "Body is not UTF-8")
        }
        ValidationError::Syntax { .. } => (S::BAD_REQUEST, "malformed-json", "Malformed JSON"),
        ValidationError::NotAnObject { .. } => {
            (S::UNPROCESSABLE_ENTITY, "not-an-object", "Record is not a JSON object")
        }
        ValidationError::EmptyBatch => (S::UNPROCESSABLE_ENTITY, "empty-batch", "Empty batch"),
        ValidationError::TooManyRecords { .. } => (S::UNPROCESSABLE_ENTITY, "too-many-records", "Too many records"),
        ValidationError::RecordTooLarge { .. } => (S::UNPROCESSABLE_ENTITY, "record-too-large", "Record too large"),
        ValidationError::TooDeep { .. } => (S::UNPROCESSABLE_ENTITY, "too-deep", "Record nested too deeply"),
        ValidationError::DuplicateKey { .. } => (S::UNPROCESSABLE_ENTITY, "duplicate-key", "Duplicate key"),
    }
}

impl ApiError {
    pub fn to_problem(&self) -> Problem {
        use StatusCode as S;
        let detail = self.to_string();
        match self {
            Self::Invalid(v) => {
                let (status, slug, title) = validation_kind(v);
                let mut p = Problem::new(status, slug, title, detail);
                if let Some(pos) = v.position() {
                    p.index = pos.index;
                    p.line = pos.line;
                }
                if let ValidationError::Syntax { line, column, .. } = v {
                    p.line = Some(*line);
                    p.column = Some(*column);
                }
                if let ValidationError::InvalidUtf8 { line, .. } = v {
                    p.line = Some(*line);
                }
                p
            }
            Self::BadRequest(_) => Problem::new(S::BAD_REQUEST, "bad-request", "Bad request", detail),
            Self::Unauthorized(_) => Problem::new(S::UNAUTHORIZED, "unauthorized", "Missing or wrong API key", detail),
            Self::Forbidden(_) => Problem::new(S::FORBIDDEN, "forbidden", "Forbidden", detail),
            Self::InvalidParameter { parameter, .. } => {
                let mut p = Problem::new(S::BAD_REQUEST, "invalid-parameter", "Invalid parameter", detail);
                p.parameter = Some(parameter);
                p
            }
            Self::NotFound(_) => Problem::new(S::NOT_FOUND, "not-found", "Not found", detail),
            Self::IdempotencyConflict => {
                Problem::new(S::CONFLICT, "idempotency-conflict", "Idempotency-Key reused", detail)
            }
            Self::BodyTooLarge(_) => Problem::new(S::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large", detail),
            Self::UnsupportedMediaType(_) => {
                Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
            }
            Self::Firehose(FirehoseError::Record { source, .. }) => {
                let (status, slug, title) = validation_kind(source);
                Problem::new(status, slug, title, detail)
            }
            Self::Firehose(FirehoseError::TooLarge { .. } | FirehoseError::EnvelopeTooLarge { .. }) => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large", detail)
            }
            Self::Firehose(_) => {
                Problem::new(S::BAD_REQUEST, "bad-firehose-delivery", "Not a Firehose delivery", detail)
            }
            Self::Decode(DecodeError::Unsupported(..) | DecodeError::Stacked(..)) => {
                Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
            }
            Self::Decode(DecodeError::Corrupt { .. }) => {
                Problem::new(S::BAD_REQUEST, "undecodable-body", "Body cannot be decompressed", detail)
            }
            Self::Decode(DecodeError::TooLarge { .. }) => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large", detail)
            }
            Self::Store(StoreError::Unavailable { retry_after, .. }) => {
                let mut p = Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Storage unavailable",
                    "the record store could not commit your request, so nothing was stored; retry after the time in Retry-After",
                );
                p.retry_after = Some(*retry_after);
                p
            }
            Self::Sink(SinkError::Unavailable { .. }) => {
                let mut p = Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "bucket-unavailable",
                    "Summary bucket unavailable",
                    "the summary bucket could not be read; retry after the time in Retry-After",
                );
                p.retry_after = Some(Duration::from_secs(5));
                p
            }
            Self::Secret(SecretError::Unavailable { .. }) => {
                let mut p = Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "secret-unavailable",
                    "Link secret unavailable",
                    "the server could not read the secret that checks report links; retry after the time in Retry-After",
                );
                p.retry_after = Some(Duration::from_secs(5));
                p
            }
            Self::Store(StoreError::Internal { .. })
            | Self::Sink(SinkError::Internal { .. })
            | Self::Secret(SecretError::Invalid { .. }) => Problem::for_status(S::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            // Internals stay in the log, never in the response.
            Self::Store(e) => tracing::error!(error = %tally_core::error_chain(e), "store error"),
            Self::Sink(e) => tracing::error!(error = %tally_core::error_chain(e), "summary bucket error"),
            Self::Secret(e) => tracing::error!(error = %tally_core::error_chain(e), "report link secret error"),
            _ => {}
        }
        self.to_problem().into_response()
    }
}
