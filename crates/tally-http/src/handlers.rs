//! One function per route. Handlers parse HTTP, call `tally-core`, and map
//! the result back; no business rule lives here.

use axum::body::{Body, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tally_core::idempotency::IdempotencyKey;
use tally_core::ports::SinkError;
use tally_core::summary::read_summary;
use tally_core::{BodyFormat, IngestResponse, IsoWeek, RecordId};

use crate::encoding::{self, Coding};
use crate::problem::{ApiError, Problem};
use crate::schema::{
    AnyObject, Created, Health, IdempotencyKeyHeader, RecordIdString, RecordsJson, RecordsNdjson, StoredRecord,
    WeekLink, WeekList, WeekSummary,
};
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const FIRST_RECORD_ID: &str = "first-record-id";
pub const API_KEY: &str = "x-api-key";

/// `GET /health` — liveness, no key needed.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    operation_id = "get_health",
    responses((status = 200, description = "The server is up.", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok", version: tally_core::VERSION })
}

/// The OpenAPI document as `GET /openapi.json` serves it. The router hands
/// it to [`serve_openapi`] as a request extension, so this module needs
/// nothing from the module that builds the document (which depends on the
/// route table, which depends on this module).
#[derive(Debug, Clone, Copy)]
pub struct OpenApiJson(pub &'static str);

/// `GET /openapi.json` — this API's OpenAPI 3.1 description; no key needed.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "get_openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = AnyObject))
)]
pub async fn serve_openapi(Extension(OpenApiJson(doc)): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc)
}

/// Which framing the `Content-Type` header asks for.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    const ADVICE: &str = "send Content-Type: application/json (one object or an array of objects) \
                          or application/x-ndjson (one object per line)";
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

/// Reads the whole body as sent, refusing more than `limit` bytes — up front
/// when `Content-Length` says so, or as soon as a chunked body passes it —
/// then decodes its `Content-Encoding`, refusing a body that decodes to more
/// than `limit` bytes ([`encoding`]).
pub(crate) async fn read_decoded_body(
    headers: &HeaderMap,
    coding: Option<Coding>,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let sent = read_body(headers, body, limit).await?;
    match coding {
        None => Ok(sent),
        Some(coding) => Ok(encoding::decode(coding, &sent, limit)?.into()),
    }
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

/// `POST /records` — store one record or a batch.
///
/// One JSON object answers `{id, received_at}` with `Location`; an array of
/// objects or NDJSON answers `{count, ids}` (ids in input order). A batch is
/// all or nothing. `201` comes only after the records are committed to disk.
/// Every `201` also carries `First-Record-Id`, the id of the first record
/// stored (the only one for a single object, `ids[0]` for a batch). The
/// `GetRecord` link reads that header, because a link must hold for every
/// `201` and no body field is in both shapes: `id` is only in the
/// single-object body, `ids` only in the batch one.
//
// Why a header rather than a body field: a link parameter is one runtime
// expression, with no "if", and `Location` is a path, not an id. The 0.1
// bodies are fixed (extend, never break), written by `tally-core`, and
// replayed byte for byte for a retried `Idempotency-Key`, so giving the batch
// body an `id` (or the single body `ids`) would change both shapes' meaning
// and be missing from replays of answers stored before. A new response header
// is additive, and it is derived from the receipt, so replays carry it too.
#[utoipa::path(
    post,
    path = "/records",
    tag = "records",
    operation_id = "create_records",
    params(IdempotencyKeyHeader),
    request_body(
        description = "One JSON object, an array of objects, or NDJSON; optionally compressed, said in \
            `Content-Encoding`: `gzip` (or `x-gzip`), `zstd` (windows up to 8 MiB, RFC 9659) or `deflate` (the \
            zlib format), any case; `identity` or no header for none. One coding only. The body limit applies \
            to the decompressed body (413 past it, decided while decompressing). Through API Gateway (AWS), \
            gzip and deflate.",
        content((RecordsJson = "application/json"), (RecordsNdjson = "application/x-ndjson")),
    ),
    responses(
        (status = 201, description = "Stored (or, with `Idempotent-Replayed: true`, stored before).",
            body = Created,
            headers(
                ("Location" = String,
                    description = "`/records/<id>` of the new record; only when one object was sent."),
                ("First-Record-Id" = RecordIdString,
                    description = "The id of the first record stored: the only one when one object was sent, \
                                   `ids[0]` for a batch. The `GetRecord` link reads it."),
                ("Idempotent-Replayed" = String,
                    description = "`true` when this answers a retry with the same `Idempotency-Key` and body; \
                                   nothing new was stored."),
            ),
            links(
                ("GetRecord" = (operation_id = "get_record", parameters(("id" = "$response.header.First-Record-Id")),
                    description = "Read the record just created (for a batch, the first one).")),
            )),
        (status = 400, description = "Malformed JSON (with `line` and `column`), invalid UTF-8, an empty body, \
            a bad `Idempotency-Key`, or a compressed body that cannot be decompressed (not what its \
            `Content-Encoding` says, corrupt or cut short: `/problems/undecodable-body`). For a batch, `index` \
            (and `line` for NDJSON) names the item.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used before with a different body.",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body, or the body once decompressed, is larger than the limit \
            (1 MiB by default).",
            body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The `Content-Type` is neither `application/json` nor `application/x-ndjson`, \
            the charset is not UTF-8, or the `Content-Encoding` is not one tally decodes (gzip, zstd, deflate, \
            identity) or lists more than one coding; `detail` names the supported ones.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Valid JSON that cannot be stored: not an object or array of objects, an empty \
            batch, too many records, a record too large or too deep, or a duplicate key. `index` names the item.",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store could not commit, or too many uploads are in progress; \
            nothing was stored. Retry after `Retry-After`.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn create_records(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let coding = encoding::content_coding(&parts.headers)?;
    let format = body_format(&parts.headers)?;
    let key = idempotency_key(&parts.headers)?;
    let body = read_decoded_body(&parts.headers, coding, body, state.ingest.limits().max_body_bytes).await?;
    // The store timeout, kept so that a 503 never hides stored records: past
    // it, a write still queued is withdrawn (503), one being committed is
    // waited for (its real answer).
    let give_up = Box::pin(tokio::time::sleep(state.store_timeout));
    let receipt = state.ingest.ingest_until(&body, format, key, give_up).await?;

    let status = StatusCode::from_u16(receipt.status).unwrap_or(StatusCode::CREATED);
    let mut res = (status, receipt.body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = receipt.response.location_id() {
        if let Ok(v) = HeaderValue::from_str(&format!("/records/{id}")) {
            h.insert(header::LOCATION, v);
        }
    }
    let first = match &receipt.response {
        IngestResponse::Single { id, .. } => Some(*id),
        IngestResponse::Batch { ids, .. } => ids.first().copied(),
    };
    if let Some(Ok(v)) = first.map(|id| HeaderValue::from_str(&id.to_string())) {
        h.insert(FIRST_RECORD_ID, v);
    }
    if receipt.replayed {
        h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// `GET /records/{id}` — one record, exactly as sent.
#[utoipa::path(
    get,
    path = "/records/{id}",
    tag = "records",
    operation_id = "get_record",
    params(("id" = String, Path, description = "The record's id (a ULID), as returned when it was created.",
        pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The record; `data` is exactly what was sent.", body = StoredRecord),
        (status = 400, description = "The id is not a ULID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn get_record(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("the record id in the path is unreadable: {e}")))?;
    let id = RecordId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let record = within(&state, state.reader.get(id)).await??.ok_or_else(|| {
        ApiError::NotFound(format!("no record has id {id}; check the id returned when it was created"))
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], record.to_json()).into_response())
}

/// `GET /summaries` — weeks whose summary is complete, oldest first.
#[utoipa::path(
    get,
    path = "/summaries",
    tag = "summaries",
    operation_id = "list_summaries",
    responses(
        (status = 200, description = "Weeks whose summary is complete, oldest first.", body = WeekList),
        (status = 503, description = "The summary bucket cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn list_summaries(State(state): State<AppState>) -> Result<Json<WeekList>, ApiError> {
    let weeks = within_bucket(&state, state.sink.list_weeks()).await?;
    Ok(Json(WeekList {
        weeks: weeks.into_iter().map(|week| WeekLink { week, href: format!("/summaries/{week}") }).collect(),
    }))
}

/// `GET /summaries/{week}` — that week's `summary.json`.
#[utoipa::path(
    get,
    path = "/summaries/{week}",
    tag = "summaries",
    operation_id = "get_summary",
    params(("week" = String, Path,
        description = "An ISO week, `YYYY-Www` with a year from 1000 to 9999, such as `2026-W47`. \
                       `W53` exists only in years with 53 ISO weeks (2026 has one, 2025 does not); \
                       the pattern lists those years.")),
    responses(
        (status = 200, description = "The week's `summary.json` (schema 4; weeks summarized by older versions carry their own schema: 1 for tally 0.1, without `comparison` and `segments`; 2 for 0.2 and 0.3).", body = WeekSummary),
        (status = 400, description = "Not an ISO week.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No complete summary for this week (yet).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The summary bucket cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
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
    // Only a complete week (with a manifest) is served: the rule is core's.
    let summary = within_bucket(&state, read_summary(state.sink.as_ref(), week)).await?.ok_or_else(not_yet)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], summary).into_response())
}

/// Runs one store call under the state's store timeout. A store that hangs
/// (a stuck disk, a lost connection) is the server's problem: 503 with
/// `Retry-After`, never the 408 that would blame the client. The call is
/// dropped at the timeout, which is right for reads; ingest instead uses
/// `IngestService::ingest_until`, which never drops a write that is being
/// committed.
pub(crate) async fn within<T>(state: &AppState, call: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(state.store_timeout, call).await.map_err(|_| {
        ApiError::Store(tally_core::StoreError::Unavailable {
            message: format!("no answer within {:?}", state.store_timeout),
            retry_after: std::time::Duration::from_secs(1),
            source: None,
        })
    })
}

/// [`within`] for the summary bucket: a bucket that hangs is a 503 too.
async fn within_bucket<T>(
    state: &AppState,
    call: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.store_timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ApiError::Sink(SinkError::Unavailable {
            message: format!("no answer within {:?}", state.store_timeout),
            source: None,
        })),
    }
}
