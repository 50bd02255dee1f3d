//! Prints the OpenAPI 3.1 document of tally's HTTP API.
//!
//! Run with `scripts/openapi` (which writes `docs/openapi.json`), or
//! `cargo run -p tally-http --example openapi > docs/openapi.json`.

fn main() {
    print!("{}", tally_http::openapi::openapi_json());
}
