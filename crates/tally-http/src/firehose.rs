//! `POST /firehose`: Amazon Data Firehose HTTP endpoint deliveries.
//!
//! The wire format is Firehose's request/response format version 1.0
//! ("Understand HTTP endpoint delivery request and response specifications",
//! Amazon Data Firehose developer guide): the `X-Amz-Firehose-*` headers and
//! a JSON body of base64 records in; `200` with `{"requestId", "timestamp"}`
//! out, or an error status with `{"requestId", "timestamp", "errorMessage"}`.
//! Firehose accepts only `application/json` answers, so this route's errors
//! are that body — carrying tally's problem members (`type`, `title`,
//! `status`, `detail`) beside Firehose's, rather than `application/problem+json`.
//!
//! The caller's key comes in `X-Amz-Firehose-Access-Key` (Firehose cannot
//! send `x-api-key`), checked here against [`AppState`]'s Firehose key: the
//! API key locally, a key of its own on AWS (docs/INGEST.md says why).
//!
//! Statuses are tally's, with one exception: a delivery too large is `400`,
//! not `413`, because Firehose treats `413` as a permanent failure and does
//! not back the records up to S3, while any other error status is retried
//! for the stream's retry duration and then backed up — nothing is lost.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tally_core::firehose::{FirehoseDelivery, FirehoseError, FirehoseOutcome, envelope_limit};

use crate::encoding::{self, DecodeError};
use crate::handlers::read_decoded_body;
use crate::problem::{ApiError, ErrorFormat};
use crate::schema::{FirehoseAck, FirehoseHeaders, FirehoseRequest};
use crate::state::AppState;

pub const PROTOCOL_VERSION: &str = "x-amz-firehose-protocol-version";
pub const REQUEST_ID: &str = "x-amz-firehose-request-id";
pub const ACCESS_KEY: &str = "x-amz-firehose-access-key";

/// `POST /firehose` — store one Amazon Data Firehose delivery.
///
/// Each record's `data` (base64) is one JSON object or NDJSON lines; the
/// delivery is stored all or nothing, once per request id: Firehose's retry
/// of a delivery already stored is answered 200 again and stores nothing.
#[utoipa::path(
    post,
    path = "/firehose",
    tag = "records",
    operation_id = "deliver_firehose",
    params(FirehoseHeaders),
    request_body(
        description = "A Firehose HTTP endpoint delivery (format 1.0), optionally compressed \
            (`Content-Encoding: gzip`, as Firehose sends it when the stream's content encoding is GZIP).",
        content((FirehoseRequest = "application/json")),
    ),
    security(("firehose_access_key" = [])),
    responses(
        (status = 200, description = "Stored, or stored before under this request id (nothing new stored), \
            or every record was empty.", body = FirehoseAck),
        (status = 400, description = "Not a Firehose delivery, an unknown protocol version, a request id \
            that is missing or differs between header and body, data that is not base64, a record that is \
            not a JSON object or NDJSON of objects (`errorMessage` names `records[i]` and the line), a body \
            that cannot be decompressed, or a delivery over the limits (400, not 413: Firehose backs up \
            what it gave up on only for other statuses). Nothing was stored.", body = FirehoseAck),
        (status = 401, description = "`X-Amz-Firehose-Access-Key` is missing or wrong.", body = FirehoseAck),
        (status = 403, description = "Firehose delivery is not configured on this deployment.", body = FirehoseAck),
        (status = 409, description = "This request id was stored before with other records.", body = FirehoseAck),
        (status = 415, description = "A `Content-Type` other than JSON, or a `Content-Encoding` other than gzip, \
            zstd or deflate.", body = FirehoseAck),
        (status = 422, description = "A record tally refuses (too large, too deep, duplicate keys) or too many \
            records (more than 10,000).", body = FirehoseAck),
        (status = 503, description = "The store could not commit, or too many uploads are in progress; nothing \
            was stored. Firehose retries.", body = FirehoseAck,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn deliver_firehose(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header_id = parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let result = deliver(&state, &parts.headers, body, header_id.as_deref()).await;
    let timestamp = state.ingest.clock().now().as_millis();
    match result {
        Ok((request_id, outcome)) => {
            let (records, replayed) = match outcome {
                FirehoseOutcome::Stored { records, replayed } => (records, replayed),
                FirehoseOutcome::Empty => (0, false),
            };
            // Firehose asks endpoints to log its request id, for debugging.
            tracing::info!(firehose_request_id = %request_id, records, replayed, "firehose delivery stored");
            answer(StatusCode::OK, FirehoseAck::ok(request_id, timestamp))
        }
        Err(e) => {
            let mut problem = e.to_problem();
            if problem.status == StatusCode::PAYLOAD_TOO_LARGE.as_u16() {
                problem.status = StatusCode::BAD_REQUEST.as_u16();
            }
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let request_id = header_id.unwrap_or_default();
            tracing::info!(firehose_request_id = %request_id, status = status.as_u16(), "firehose delivery refused");
            if let ApiError::Store(err) = &e {
                tracing::error!(error = %err, "store error");
            }
            let retry_after = problem.retry_after;
            let ack = FirehoseAck {
                error_message: Some(problem.detail.clone()),
                kind: Some(problem.kind),
                title: Some(problem.title.to_owned()),
                status: Some(problem.status),
                detail: Some(problem.detail),
                ..FirehoseAck::ok(request_id, timestamp)
            };
            let mut res = answer(status, ack);
            if let Some(after) = retry_after {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
            }
            res
        }
    }
}

async fn deliver(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    header_id: Option<&str>,
) -> Result<(String, FirehoseOutcome), ApiError> {
    let Some(auth) = &state.firehose_auth else {
        return Err(ApiError::Forbidden(
            "Firehose delivery is not configured here; on AWS set the stack's FirehoseAccessKeySha256 \
             parameter (docs/INGEST.md)"
                .into(),
        ));
    };
    let presented = headers.get(ACCESS_KEY).map(|v| v.as_bytes());
    if !auth.allows(presented) {
        return Err(ApiError::Unauthorized(if presented.is_some() {
            "the X-Amz-Firehose-Access-Key header does not match; set the stream's access key to tally's key"
        } else {
            "send tally's key as the stream's access key (the X-Amz-Firehose-Access-Key header)"
        }));
    }
    match headers.get(PROTOCOL_VERSION).map(|v| v.as_bytes()) {
        Some(b"1.0") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "X-Amz-Firehose-Protocol-Version {:?} is not supported; tally speaks version 1.0",
                String::from_utf8_lossy(other).chars().take(20).collect::<String>()
            )));
        }
        None => {
            return Err(ApiError::BadRequest(
                "the X-Amz-Firehose-Protocol-Version header is missing; this route takes Amazon Data Firehose \
                 HTTP endpoint deliveries (send records elsewhere to POST /records)"
                    .into(),
            ));
        }
    }
    let coding = encoding::content_coding(headers)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::JSON);
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "a Firehose delivery is Content-Type: application/json; send it as Firehose does".into(),
        ));
    }
    let limits = state.ingest.limits();
    let max = envelope_limit(limits);
    let body = read_decoded_body(headers, coding, body, max).await.map_err(|e| match e {
        ApiError::BodyTooLarge(_) | ApiError::Decode(DecodeError::TooLarge { .. }) => {
            ApiError::Firehose(FirehoseError::EnvelopeTooLarge { max })
        }
        other => other,
    })?;
    let delivery = FirehoseDelivery::parse(&body, header_id, limits)?;
    let give_up = Box::pin(tokio::time::sleep(state.store_timeout));
    let outcome = state.ingest.ingest_firehose(&delivery, give_up).await?;
    Ok((delivery.request_id().to_owned(), outcome))
}

fn answer(status: StatusCode, ack: FirehoseAck) -> Response {
    let body = serde_json::to_vec(&ack).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.extensions_mut().insert(ErrorFormat);
    res
}
