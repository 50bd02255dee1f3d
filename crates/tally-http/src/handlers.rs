//! One function per route. Handlers parse HTTP, call `tally-core`, and map
//! the result back; no business rule lives here.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_core::idempotency::IdempotencyKey;
use tally_core::{BodyFormat, IsoWeek, RecordId};

use crate::problem::ApiError;
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const API_KEY: &str = "x-api-key";

/// Body of `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// `GET /health` — liveness, no key needed.
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok", version: tally_core::VERSION })
}

/// Which framing the `Content-Type` header asks for.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    const ADVICE: &str = "send Content-Type: application/json (one object or an array of objects) \
                          or application/x-ndjson (one object per line)";
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {:?} is not supported; send the body uncompressed",
                String::from_utf8_lossy(enc.as_bytes())
            )));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(format!("the Content-Type header is missing; {ADVICE}")));
    };
    let unsupported = || {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported; {ADVICE}",
            String::from_utf8_lossy(ct.as_bytes()).chars().take(100).collect::<String>()
        ))
    };
    let mime: mime::Mime = ct.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(unsupported)?;
    if let Some(charset) = mime.get_param(mime::CHARSET) {
        if !charset.as_str().eq_ignore_ascii_case("utf-8") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "charset {charset} is not supported; send UTF-8 and say charset=utf-8 or nothing"
            )));
        }
    }
    match (mime.type_().as_str(), mime.subtype().as_str(), mime.suffix().map(|s| s.as_str())) {
        ("application", "json", _) | ("application", _, Some("json")) => Ok(BodyFormat::Json),
        ("application", "x-ndjson" | "ndjson" | "jsonl" | "x-jsonlines", _) => Ok(BodyFormat::NdJson),
        _ => Err(unsupported()),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("send the Idempotency-Key header once".into()));
    }
    IdempotencyKey::parse(first.as_bytes()).map(Some).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Reads the whole body, refusing more than `limit` bytes — up front when
/// `Content-Length` says so, or as soon as a chunked body passes it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::BodyTooLarge(format!(
            "the request body exceeds {limit} bytes; split the records into smaller batches"
        ))
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("the request body could not be read ({e}); send it again"))
    })
}

/// `POST /records` and `POST /post` — store one record or a batch.
pub async fn create_records(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let format = body_format(&parts.headers)?;
    let key = idempotency_key(&parts.headers)?;
    let body = read_body(&parts.headers, body, state.ingest.limits().max_body_bytes).await?;
    let receipt = state.ingest.ingest(&body, format, key).await?;

    let status = StatusCode::from_u16(receipt.status).unwrap_or(StatusCode::CREATED);
    let mut res = (status, receipt.body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = receipt.response.location_id() {
        if let Ok(v) = HeaderValue::from_str(&format!("/records/{id}")) {
            h.insert(header::LOCATION, v);
        }
    }
    if receipt.replayed {
        h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// `GET /records/{id}` — one record, exactly as sent.
pub async fn get_record(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("the record id in the path is unreadable: {e}")))?;
    let id = RecordId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let record = state.ingest.store().get(id).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no record has id {id}; check the id returned when it was created"))
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], record.to_json()).into_response())
}

/// One entry of `GET /summaries`.
#[derive(Debug, Serialize)]
pub struct WeekLink {
    pub week: IsoWeek,
    pub href: String,
}

/// Body of `GET /summaries`.
#[derive(Debug, Serialize)]
pub struct WeekList {
    pub weeks: Vec<WeekLink>,
}

/// `GET /summaries` — weeks whose summary is complete, oldest first.
pub async fn list_summaries(State(state): State<AppState>) -> Result<Json<WeekList>, ApiError> {
    let weeks = state.sink.list_weeks().await?;
    Ok(Json(WeekList {
        weeks: weeks.into_iter().map(|week| WeekLink { week, href: format!("/summaries/{week}") }).collect(),
    }))
}

/// `GET /summaries/{week}` — that week's `summary.json`.
pub async fn get_summary(
    State(state): State<AppState>,
    week: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(week) = week.map_err(|e| ApiError::BadRequest(format!("the week in the path is unreadable: {e}")))?;
    let week = IsoWeek::parse(&week).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let not_yet = || {
        ApiError::NotFound(format!(
            "no summary for {week} yet; summaries are written after the week ends (or run `tally summarize --week {week}`)"
        ))
    };
    // Only a week with a manifest is complete; a run in progress has none.
    state.sink.read_object(week, "manifest.json").await?.ok_or_else(not_yet)?;
    let summary = state.sink.read_object(week, "summary.json").await?.ok_or_else(not_yet)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], summary).into_response())
}
