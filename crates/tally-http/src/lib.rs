//! tally's HTTP interface — a driving adapter of the hexagon.
//!
//! [`router`] is the only route table: `tally serve` runs it with
//! `axum::serve`, the `tally-api` Lambda function with `lambda_http::run`.
//! It turns HTTP into calls on `tally-core` services and their errors into
//! RFC 9457 problem documents; it knows nothing of SQLite or AWS.
//!
//! # Layout
//! - [`state`]: what handlers share ([`AppState`]) and the API-key check.
//! - [`problem`]: [`ApiError`] and the problem+json responses.
//! - [`handlers`]: one function per route, each with its OpenAPI operation.
//! - [`openapi`]: the OpenAPI 3.1 document built from the route table.
//! - [`router`]: routes plus middleware (request ids, tracing, timeouts).

pub mod handlers;
pub mod openapi;
pub mod problem;
mod router;
pub mod state;

pub use problem::ApiError;
pub use router::{HttpOptions, openapi, router};
pub use state::{AppState, Auth};
