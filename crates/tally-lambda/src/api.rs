//! The `tally-api` function: the shared router behind API Gateway (REST, stage `Prod`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tally_core::{Clock, IngestService, Limits, RecordStore, SummarySink};
use tally_http::{AppState, Auth, HttpOptions};
use tower::util::MapRequest;

/// The request timeout inside the function: below its 25 s Lambda timeout,
/// so a slow store yields a problem document rather than a killed function.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The service `tally-api` hands to `lambda_http::run`.
pub type ApiService = MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// The shared router as the API function serves it.
///
/// API Gateway checks `x-api-key` (`ApiKeyRequired` in `template.yaml`)
/// before the function is invoked, and the function never sees the key's
/// value, so the router runs with [`Auth::Open`]. The REST stage (`/Prod`)
/// is removed from paths here as well as by `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`,
/// so routing does not hinge on one environment variable.
pub fn api_service(store: Arc<dyn RecordStore>, sink: Arc<dyn SummarySink>, clock: Arc<dyn Clock>) -> ApiService {
    let ingest = IngestService::new(store, clock, Limits::default());
    let router = tally_http::router(
        AppState::new(ingest, sink, Auth::Open),
        HttpOptions { request_timeout: API_REQUEST_TIMEOUT },
    );
    MapRequest::new(router, strip_stage as fn(lambda_http::Request) -> lambda_http::Request)
}

/// `/Prod/records` → `/records` for API Gateway REST events.
fn strip_stage(mut req: lambda_http::Request) -> lambda_http::Request {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else { return req };
    let prefix = format!("/{stage}");
    let uri = req.uri();
    let Some(rest) = uri.path().strip_prefix(&prefix).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return req;
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{}?{q}", if rest.is_empty() { "/" } else { rest }),
        None => (if rest.is_empty() { "/" } else { rest }).to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = http::Uri::from_parts(parts) {
            *req.uri_mut() = new;
        }
    }
    req
}
