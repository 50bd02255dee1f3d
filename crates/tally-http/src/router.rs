//! The route table and its middleware.
//!
//! [`public_routes`] and [`protected_routes`] are the two halves of the one
//! route table: [`build`] serves them, `openapi` documents them.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::data;
use crate::firehose;
use crate::handlers::{self, API_KEY, OpenApiJson};
use crate::problem::{ApiError, ErrorFormat, PROBLEM_JSON, Problem};
use crate::site;
use crate::state::AppState;

/// Transport-level settings.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Longest time a request may take, body upload included (408 after it).
    pub request_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(30) }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes anyone may call: the report site's pages check their own link
/// (or key) before reading anything.
pub(crate) fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(site::landing))
        .routes(routes!(handlers::health))
        .routes(routes!(handlers::serve_openapi))
        .routes(routes!(site::report_index))
        .routes(routes!(site::report_week))
        // The pages' addresses without their final `/` redirect to them (not documented: not pages).
        .route("/reports", axum::routing::get(site::report_slash))
        .route("/reports/{week}", axum::routing::get(site::report_slash))
}

/// Routes that need the API key. Each handler's `#[utoipa::path]` documents
/// it, so this table is also the OpenAPI document's list of operations.
pub(crate) fn protected_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create_records))
        // The original app's path; documented as a copy of `POST /records` by `openapi::openapi`.
        .route("/post", axum::routing::post(handlers::create_records))
        .routes(routes!(data::list_records))
        // GET needs the API key; DELETE the admin key, which its handler checks.
        .routes(routes!(handlers::get_record, data::delete_record))
        .routes(routes!(handlers::list_summaries))
        .routes(routes!(handlers::get_summary))
}

/// The Firehose delivery route: keyed by `X-Amz-Firehose-Access-Key`, which
/// its handler checks (not the `x-api-key` check of the protected routes).
pub(crate) fn firehose_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(firehose::deliver_firehose))
}

/// The route table with its middleware; `openapi` is what `GET /openapi.json`
/// answers. The crate root passes it in, so this module does not depend on
/// the one that builds the document from its tables.
pub(crate) fn build(state: AppState, options: HttpOptions, openapi: OpenApiJson) -> Router {
    let (protected, _) = protected_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key))
        .split_for_parts();
    let (firehose, _) =
        firehose_routes().route_layer(middleware::from_fn_with_state(state.clone(), shed_load)).split_for_parts();
    let (public, _) = public_routes().split_for_parts();
    let public = public.layer(Extension(openapi));

    public
        .merge(protected)
        .merge(firehose)
        .fallback(|| async { Problem::for_status(StatusCode::NOT_FOUND) })
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_request(())
                        .on_response(on_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
                }))
                .layer(middleware::map_response(problemize))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, options.request_timeout)),
        )
}

/// One span per request: method, route and request id — never headers,
/// query strings or bodies, which may carry keys or personal data.
fn make_span(req: &Request) -> Span {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path: String = route.unwrap_or_else(|| req.uri().path().chars().take(120).collect());
    let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), path = %path, request_id = %id)
}

fn on_response<B>(res: &http::Response<B>, latency: Duration, _span: &Span) {
    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "request done");
}

/// Turns error responses made outside tally's handlers (405 from the router,
/// 408 from the timeout) into problem documents, keeping their headers. The
/// report site's HTML pages (403, 404) are meant for people and stay; an
/// answer in another protocol's error format ([`ErrorFormat`]) is kept.
async fn problemize(res: Response) -> Response {
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    let is_problem = content_type == Some(PROBLEM_JSON.as_bytes());
    let is_page = content_type == Some(site::HTML.as_bytes());
    let foreign = res.extensions().get::<ErrorFormat>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page || foreign {
        return res;
    }
    let (parts, _) = res.into_parts();
    let mut fresh = Problem::for_status(status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// Load shedding for uploads: a `POST` takes one of the state's ingest slots
/// for its whole life (body read, validation, commit) or, if none is free, is
/// answered 503 at once without reading its body.
async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let Ok(_slot) = state.ingest_slots.clone().try_acquire_owned() else {
        tracing::warn!("ingest slots exhausted; shedding a request");
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Server busy",
            "too many uploads are in progress, so this one was not read and nothing was stored; \
             retry after the time in Retry-After",
        );
        p.retry_after = Some(Duration::from_secs(1));
        return p.into_response();
    };
    next.run(req).await
}

/// The API key check of the protected routes. `DELETE` (erasure) answers to
/// the admin key instead, which its handler checks (`AppState::erasure`).
async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if req.method() == axum::http::Method::DELETE {
        return Ok(next.run(req).await);
    }
    let presented = req.headers().get(API_KEY).map(|v| v.as_bytes());
    if !state.auth.allows(presented) {
        return Err(ApiError::Unauthorized(if presented.is_some() {
            "the x-api-key header does not match; check the key you were given"
        } else {
            "send your API key in the x-api-key header (not in the URL)"
        }));
    }
    Ok(next.run(req).await)
}
