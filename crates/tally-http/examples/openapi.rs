//! Prints the OpenAPI 3.1 document of tally's HTTP API; with `landing-json`
//! or `landing-html`, what `GET /` answers an API client or a browser (the
//! bodies API Gateway answers itself on AWS).
//!
//! Run with `scripts/openapi` (which writes `docs/openapi.json` and the
//! template's copies), or
//! `cargo run -p tally-http --example openapi > docs/openapi.json`.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("landing-json") => print!("{}", tally_http::site::landing_json()),
        Some("landing-html") => print!("{}", tally_http::site::landing_html()),
        _ => print!("{}", tally_http::openapi::openapi_json()),
    }
}
