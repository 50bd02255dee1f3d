//! tally's HTTP interface — a driving adapter of the hexagon.
//!
//! [`router`] is the only route table: `tally serve` runs it with
//! `axum::serve`, the `tally-api` Lambda function with `lambda_http::run`.
//! It turns HTTP into calls on `tally-core` services and their errors into
//! RFC 9457 problem documents; it knows nothing of SQLite or AWS.
//!
//! # Layout
//! Modules depend only on those above them in this list, never back:
//! - [`schema`]: the documented shapes of bodies and parameters (a leaf).
//! - [`state`]: what handlers share ([`AppState`]) and the API-key check.
//! - [`encoding`]: compressed request bodies (`Content-Encoding`), decoded
//!   under the body limit.
//! - [`problem`]: [`ApiError`] and the problem+json responses.
//! - [`handlers`]: one function per route, each with its OpenAPI operation,
//!   `GET /openapi.json` included (it serves the document it is handed).
//! - [`data`]: the data lifecycle routes (range reads, erasure), like `handlers`.
//! - [`site`]: what people open in a browser: the landing page (`GET /`) and
//!   the report site (`GET /reports/…`, signed links), like `handlers`.
//! - [`firehose`]: `POST /firehose`, Amazon Data Firehose deliveries, like `handlers`.
//! - `router`: the route table (public, protected and Firehose parts) plus
//!   middleware (request ids, tracing, timeouts, API key, load shedding).
//! - [`openapi`](mod@openapi): the OpenAPI 3.1 document, built in this one place from
//!   the route table.
//!
//! [`router()`] ties the last two together: it builds the routes and hands
//! them the finished document to serve.

pub mod data;
pub mod encoding;
pub mod firehose;
pub mod handlers;
pub mod openapi;
pub mod problem;
mod router;
pub mod schema;
pub mod site;
pub mod state;

pub use openapi::openapi;
pub use problem::ApiError;
pub use router::HttpOptions;
pub use state::{Admin, AppState, Auth, Erasure};

/// The one route table, served by `tally serve` and by the Lambda function;
/// its `GET /openapi.json` answers [`openapi::openapi_json`].
pub fn router(state: AppState, options: HttpOptions) -> axum::Router {
    router::build(state, options, handlers::OpenApiJson(openapi::openapi_json()))
}
