//! The data lifecycle routes: `GET /records` (a time range, paged JSON or
//! streamed NDJSON) and `DELETE /records/{id}` (erasure, admin key). Like
//! [`crate::handlers`], they parse HTTP, call `tally-core`'s use cases
//! (`tally_core::lifecycle`) and map the result back.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tally_core::RecordId;
use tally_core::lifecycle::{RangeParams, ReadError, ReadMode, erase, ndjson};

use crate::handlers::{API_KEY, within};
use crate::problem::{ApiError, Problem};
use crate::schema::{Erased, RecordPage};
use crate::state::AppState;

pub const NDJSON: &str = "application/x-ndjson";

/// The query of `GET /records`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start of the range, RFC 3339, inclusive (with `to`; or give `week`).
    #[param(format = DateTime, example = "2026-11-23T00:00:00Z")]
    pub from: Option<String>,
    /// End of the range, RFC 3339, exclusive. At most 31 days after `from`
    /// (372 when streaming NDJSON).
    #[param(format = DateTime, example = "2026-11-24T00:00:00Z")]
    pub to: Option<String>,
    /// An ISO week instead of `from`/`to`, e.g. `2026-W47`.
    #[param(pattern = "^[0-9]{4}-[Ww][0-9]{2}$", example = "2026-W47")]
    pub week: Option<String>,
    /// Records per page, 1–1000 (default 100); not with NDJSON.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` value of the previous page, as it was.
    pub cursor: Option<String>,
}

impl From<RangeQuery> for RangeParams {
    fn from(q: RangeQuery) -> Self {
        Self { from: q.from, to: q.to, week: q.week, limit: q.limit, cursor: q.cursor }
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(NDJSON)))
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Invalid { parameter, message } => ApiError::InvalidParameter { parameter, message },
        ReadError::Store(s) => ApiError::Store(s),
    }
}

/// `GET /records` — the records of a time range, in id (arrival) order.
///
/// JSON answers one page and the cursor of the next; with
/// `Accept: application/x-ndjson` the whole range streams as export lines
/// (the format of `records.ndjson.gz`), in bounded memory. A range covers
/// records older than the store timeout (10 s), so a cursor never skips a
/// record that was still being committed when the page was read.
#[utoipa::path(
    get,
    path = "/records",
    tag = "records",
    operation_id = "list_records",
    params(RangeQuery),
    responses(
        (status = 200, description = "One page (JSON), or the whole range (NDJSON export lines).",
            content((RecordPage = "application/json"), (String = "application/x-ndjson"))),
        (status = 400, description = "A bad parameter (named in `parameter`): a missing or malformed time or \
            week, `from` after `to`, a range over 31 days (372 streamed), a `limit` outside 1–1000, or a cursor \
            tally did not issue for this range.",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be read right now.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn list_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("the query string is unreadable: {e}")))?;
    let params = RangeParams::from(query);
    if wants_ndjson(&headers) {
        return stream_range(state, &params).await;
    }
    let query = state.reader.parse(&params, ReadMode::Paged).map_err(read_error)?;
    let page = within(&state, state.reader.page(&query)).await?.map_err(read_error)?;
    let mut body = String::with_capacity(page.records.iter().map(|r| r.data.len() + 80).sum::<usize>() + 40);
    body.push_str("{\"records\":[");
    for (i, r) in page.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        r.write_json(&mut body);
    }
    body.push_str("],\"next\":");
    match &page.next {
        Some(cursor) => {
            body.push('"');
            body.push_str(cursor); // hex: nothing to escape
            body.push('"');
        }
        None => body.push_str("null"),
    }
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Streams the range as NDJSON. The first page is read before the answer
/// starts, so a store that is down is a 503, not an empty 200; a failure
/// later cuts the stream short (the client sees a truncated body).
async fn stream_range(state: AppState, params: &RangeParams) -> Result<Response, ApiError> {
    let query = state.reader.parse(params, ReadMode::Streamed).map_err(read_error)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, tally_core::StoreError>>(2);
    let reader = state.reader.clone();
    tokio::spawn(async move {
        let mut pages = reader.stream(query.range);
        while let Some(page) = pages.next().await {
            let chunk = page.map(|records: Vec<tally_core::Record>| ndjson(&records));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let first = match within(&state, rx.recv()).await? {
        Some(Err(e)) => return Err(ApiError::Store(e)),
        first => first,
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let body = futures::stream::iter(first).chain(rest).map(|chunk| {
        chunk.map(bytes::Bytes::from).map_err(|e| {
            tracing::error!(error = %tally_core::error_chain(&e), "a streamed range read failed part-way; the response is cut short");
            std::io::Error::other(e)
        })
    });
    let mut res = Body::from_stream(body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(res)
}

/// `DELETE /records/{id}` — erase one record (admin key).
///
/// The record is deleted at once; if its week has ended, that week is
/// summarized again within a minute, so the export stops holding it
/// (`"summary": "regenerating"`) — also when a run of the week is under way.
/// `"none"`: the week has not ended (no summary holds the record);
/// `"stale"`: the rewrite could not be queued (see the server log; the next
/// `tally summarize --week W` rewrites it).
#[utoipa::path(
    delete,
    path = "/records/{id}",
    tag = "records",
    operation_id = "delete_record",
    params(("id" = String, Path, description = "The record's id (a ULID).",
        pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "Erased.", body = Erased),
        (status = 400, description = "The id is not a ULID.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not the admin key, or erasure is off (no admin key configured; \
            the detail says how to enable it).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record has this id (or it was erased already).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be written right now; nothing was erased.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("admin_key" = []))
)]
pub async fn delete_record(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let erasure = state.erasure.as_ref().ok_or_else(|| {
        ApiError::Forbidden(
            "erasure is off on this server: start it with an admin key (TALLY_ADMIN_KEY or --admin-key-file) \
             and send that key in x-api-key"
                .into(),
        )
    })?;
    erasure.admit(headers.get(API_KEY).map(|v| v.as_bytes()))?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("the record id in the path is unreadable: {e}")))?;
    let id = RecordId::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = state.ingest.clock().now();
    let erased = within(&state, erase(erasure.store.as_ref(), state.sink.as_ref(), erasure.refresh.as_ref(), now, id))
        .await?
        .map_err(|e| match e {
            tally_core::lifecycle::EraseError::Store(s) => ApiError::Store(s),
            tally_core::lifecycle::EraseError::Sink(s) => ApiError::Sink(s),
        })?
        .ok_or_else(|| ApiError::NotFound(format!("no record has id {id} (or it was erased already)")))?;
    let body = serde_json::to_string(&erased).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
