//! The ingest benchmark's ceiling: a bare axum server whose `POST /records`
//! reads the body and answers 201, nothing else — no validation, no store.
//! Same axum, hyper and tokio as `tally serve`, so the gap between the two is
//! what tally's own work costs. Bench-only.
//!
//! Run with `cargo run --release -p tally-http --example bench_ceiling -- 127.0.0.1:8099`.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".into());
    let app = Router::new()
        .route("/records", post(|body: Bytes| async move { (StatusCode::CREATED, body.len().to_string()) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ceiling listening on {addr}");
    axum::serve(listener, app).await
}
