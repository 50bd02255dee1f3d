//! The `tally-api` function: the shared router behind API Gateway (REST, stage `Prod`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tally_core::ports::WeekRefresh;
use tally_core::report_link::LinkSigner;
use tally_core::{Clock, IngestService, Limits, RecordLifecycle, RecordStore, SummarySink};
use tally_http::{Admin, ApiError, AppState, Auth, Erasure, HttpOptions};
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
/// value, so the router runs with [`Auth::Open`]. Erasure
/// (`DELETE /records/{id}`) is signed with IAM (SigV4) instead, which API
/// Gateway checks too: the router trusts it ([`Admin::Upstream`]), and
/// [`require_iam_identity`] refuses a `DELETE` whose event lacks the IAM
/// caller API Gateway adds. An erasure asks `refresh` (on AWS
/// [`tally_aws::S3WeekRefresh`]) to rewrite the week's summary.
///
/// The report site (`GET /reports/…`) is the one keyless route that reaches
/// the function: `links` checks its signed links (with the template's
/// Secrets Manager secret) before anything is read from the bucket.
///
/// The REST stage (`/Prod`) is removed from paths here as well as by
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`, so routing does not hinge on one
/// environment variable.
///
/// `POST /firehose` is the one route API Gateway lets through without the
/// API key (Firehose cannot send `x-api-key`): the function checks the
/// stream's `X-Amz-Firehose-Access-Key` against `firehose` (the SHA-256 from
/// the stack's `FirehoseAccessKeySha256` parameter); with `None` the route
/// answers 403.
pub fn api_service(
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    refresh: Arc<dyn WeekRefresh>,
    links: LinkSigner,
    clock: Arc<dyn Clock>,
    firehose: Option<Auth>,
) -> ApiService {
    let records: Arc<dyn RecordStore> = store.clone();
    let ingest = IngestService::new(records, clock, Limits::default());
    let state = AppState::new(ingest, sink, Auth::Open)
        .with_erasure(Erasure::new(store, refresh, Admin::Upstream))
        .with_report_links(links)
        .with_firehose_auth(firehose);
    let router = tally_http::router(state, HttpOptions { request_timeout: API_REQUEST_TIMEOUT })
        .layer(axum::middleware::from_fn(require_iam_identity));
    MapRequest::new(router, from_gateway as fn(lambda_http::Request) -> lambda_http::Request)
}

/// The event as the router expects it: stage prefix removed, and a body API
/// Gateway already decompressed no longer labelled compressed.
fn from_gateway(req: lambda_http::Request) -> lambda_http::Request {
    drop_gateway_decoding(strip_stage(req))
}

/// API Gateway (REST) decompresses gzip and deflate request bodies before it
/// invokes the integration, and refuses other codings and bodies that are not
/// what their `Content-Encoding` says with its own 415 ("Call an API method
/// with a compressed payload", API Gateway developer guide), yet the event
/// keeps the `Content-Encoding` header. A body that does not start like its
/// coding was therefore decoded upstream: the header is removed so the router
/// reads it as plain. A body that still starts like its coding (passed
/// through: the binary media types in `template.yaml` make API Gateway hand
/// such bytes over base64-encoded, and `lambda_http` decodes them) keeps the
/// header and is decoded by the router, under the same limit as locally.
fn drop_gateway_decoding(mut req: lambda_http::Request) -> lambda_http::Request {
    if !matches!(req.request_context_ref(), Some(RequestContext::ApiGatewayV1(_))) {
        return req;
    }
    let Ok(Some(coding)) = tally_http::encoding::content_coding(req.headers()) else { return req };
    let body: &[u8] = req.body().as_ref();
    if !body.is_empty() && !tally_http::encoding::looks_coded(coding, body) {
        tracing::debug!(coding = coding.name(), "body already decompressed by API Gateway");
        req.headers_mut().remove(http::header::CONTENT_ENCODING);
    }
    req
}

/// The erasure route (with `DELETE`), as the router names it.
const ERASURE_ROUTE: &str = "/records/{id}";

/// A `DELETE` must come through the IAM-authorized method: API Gateway then
/// puts the verified caller's ARN in the event. Without one (a method
/// misconfigured to skip IAM, an event from elsewhere) the answer is 403,
/// so trusting the upstream check never means trusting no check. The
/// caller is logged: who erased which record.
async fn require_iam_identity(req: Request, next: Next) -> Response {
    let erasure = req.method() == Method::DELETE
        && req.extensions().get::<MatchedPath>().is_some_and(|p| p.as_str() == ERASURE_ROUTE);
    if !erasure {
        return next.run(req).await;
    }
    let caller = match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.user_arn.clone().filter(|arn| !arn.is_empty()),
        _ => None,
    };
    match caller {
        Some(caller) => {
            tracing::info!(%caller, path = %req.uri().path(), "erasure requested by an IAM caller");
            next.run(req).await
        }
        None => ApiError::Forbidden(
            "erasing records needs a request signed with AWS SigV4 (IAM), sent through the API's DELETE method; \
             see docs/DEPLOY.md"
                .into(),
        )
        .into_response(),
    }
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
