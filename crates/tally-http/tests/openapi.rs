//! The OpenAPI document: served without a key, and committed as
//! `docs/openapi.json` exactly as generated.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_core::testing::{MemoryRecordStore, MemorySummarySink};
use tally_core::{IngestService, Limits, SystemClock};
use tally_http::{AppState, Auth, HttpOptions, router};
use tower::ServiceExt;

fn app() -> axum::Router {
    let ingest = IngestService::new(Arc::new(MemoryRecordStore::default()), Arc::new(SystemClock), Limits::default());
    router(AppState::new(ingest, Arc::new(MemorySummarySink::default()), Auth::key("k")), HttpOptions::default())
}

#[test]
fn the_committed_openapi_json_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = tally_http::openapi::openapi_json();
    assert!(
        committed == generated,
        "{} is missing or out of date with the code: run scripts/openapi and commit the result",
        path.display()
    );
}

#[tokio::test]
async fn the_document_is_served_without_a_key() {
    let res = app().oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, tally_http::openapi::openapi_json().as_bytes());
}

#[test]
fn every_route_is_documented_with_its_errors_and_security() {
    let doc: Value = serde_json::from_str(tally_http::openapi::openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], tally_core::VERSION);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"],
        serde_json::json!({"type": "apiKey", "in": "header", "name": "x-api-key", "description": doc["components"]["securitySchemes"]["api_key"]["description"]})
    );
    let ops = [
        ("/", "get", &[200][..], false),
        ("/health", "get", &[200], false),
        ("/openapi.json", "get", &[200], false),
        ("/records", "post", &[201, 400, 401, 409, 413, 415, 422, 503], true),
        ("/post", "post", &[201, 400, 401, 409, 413, 415, 422, 503], true),
        ("/records/{id}", "get", &[200, 400, 401, 404, 503], true),
        ("/summaries", "get", &[200, 401, 503], true),
        ("/summaries/{week}", "get", &[200, 400, 401, 404, 503], true),
        // The report site: a signed link or the key (an empty requirement and api_key), pages for people.
        ("/reports/", "get", &[200, 403, 404, 503], true),
        ("/reports/{week}/", "get", &[200, 400, 403, 404, 503], true),
        ("/firehose", "post", &[200, 400, 401, 403, 409, 415, 422, 503], true),
    ];
    assert_eq!(doc["paths"].as_object().unwrap().len(), ops.len(), "a route is missing from this test");
    for (path, method, statuses, secured) in ops {
        let op = &doc["paths"][path][method];
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let got: Vec<u16> = responses.keys().map(|k| k.parse().unwrap()).collect();
        assert_eq!(got, statuses, "{method} {path}");
        for (status, response) in responses {
            assert!(response["headers"]["x-request-id"].is_object(), "{method} {path} {status}");
            let page = path.starts_with("/reports/") && (status == "403" || status == "404");
            // Firehose takes only application/json answers: its errors carry the problem members there.
            let errors = if path == "/firehose" { "application/json" } else { "application/problem+json" };
            if page {
                assert!(response["content"]["text/html"].is_object(), "{method} {path} {status}: an HTML page");
            } else if status.starts_with('4') || status.starts_with('5') {
                assert!(response["content"][errors].is_object(), "{method} {path} {status}");
            }
            if status == "503" {
                assert!(response["headers"]["Retry-After"].is_object(), "{method} {path}");
            }
        }
        assert_eq!(op["security"].is_array(), secured, "{method} {path}");
    }
    for path in ["/reports/", "/reports/{week}/"] {
        let security = doc["paths"][path]["get"]["security"].as_array().unwrap();
        assert!(security.iter().any(|s| s.as_object().is_some_and(|o| o.is_empty())), "{path}: open to a signed link");
        let params: Vec<&str> = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"exp") && params.contains(&"sig"), "{path}: {params:?}");
    }
    let post = &doc["paths"]["/records"]["post"];
    assert_eq!(post["parameters"][0]["name"], "Idempotency-Key");
    let content = post["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/json") && content.contains_key("application/x-ndjson"));
    let created = &post["responses"]["201"];
    assert!(created["headers"]["Location"].is_object() && created["headers"]["Idempotent-Replayed"].is_object());
    assert!(created["headers"]["First-Record-Id"].is_object());
    assert_eq!(created["links"]["GetRecord"]["operationId"], "get_record");
    // Both record routes document the codings they decode (in the body's
    // description: a Content-Encoding parameter would let a generator pair
    // `gzip` with an uncompressed body and call the refusal a bug).
    for path in ["/records", "/post"] {
        let description = doc["paths"][path]["post"]["requestBody"]["description"].as_str().unwrap();
        for coding in ["Content-Encoding", "gzip", "zstd", "deflate", "decompressed"] {
            assert!(description.contains(coding), "{path}: {description}");
        }
    }
    let firehose = &doc["paths"]["/firehose"]["post"];
    assert_eq!(firehose["security"], serde_json::json!([{"firehose_access_key": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["firehose_access_key"]["name"], "X-Amz-Firehose-Access-Key");
    assert!(firehose["requestBody"]["content"]["application/json"].is_object());
}

/// A link is followed after every response it is declared on, so what it
/// reads must be in every one of them: a documented header, or a body member
/// that every shape of the body requires. (`$response.body#/id` on the `201`
/// of `POST /records` was not: a batch answers `{count, ids}`.)
#[test]
fn every_link_reads_what_every_response_it_is_on_carries() {
    let doc: Value = serde_json::from_str(tally_http::openapi::openapi_json()).unwrap();
    let mut links = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    links += 1;
                    let at = format!("{method} {path} {status} link {name}");
                    let mut exprs: Vec<&str> =
                        link["parameters"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
                    exprs.extend(link["requestBody"].as_str());
                    assert!(!exprs.is_empty(), "{at}: no parameters");
                    for expr in exprs {
                        if let Some(header) = expr.strip_prefix("$response.header.") {
                            let headers = response["headers"].as_object().unwrap();
                            assert!(
                                headers.keys().any(|h| h.eq_ignore_ascii_case(header)),
                                "{at}: reads header {header}, which the response does not document"
                            );
                        } else if let Some(pointer) = expr.strip_prefix("$response.body#/") {
                            let member = pointer.split('/').next().unwrap();
                            let content = response["content"].as_object().unwrap();
                            for (media, body) in content {
                                for shape in shapes(&doc, &body["schema"]) {
                                    let required = shape["required"].as_array().cloned().unwrap_or_default();
                                    assert!(
                                        required.iter().any(|r| r == member),
                                        "{at}: reads {expr}, but a {media} body may lack `{member}`: {shape}"
                                    );
                                }
                            }
                        } else {
                            panic!("{at}: {expr} is not a response expression this test knows");
                        }
                    }
                }
            }
        }
    }
    assert!(links > 0, "no links: schemathesis's stateful phase would have nothing to follow");
}

/// The alternatives a body schema allows, `$ref`s resolved.
fn shapes<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").expect("a local schema reference");
        return shapes(doc, &doc["components"]["schemas"][name]);
    }
    match schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        Some(alternatives) => alternatives.iter().flat_map(|s| shapes(doc, s)).collect(),
        None => vec![schema],
    }
}

/// Following the `GetRecord` link as the document spells it reaches the
/// record just created, whichever way the records were sent.
#[tokio::test]
async fn the_get_record_link_reaches_a_record_for_single_objects_and_batches() {
    let doc: Value = serde_json::from_str(tally_http::openapi::openapi_json()).unwrap();
    let app = app();
    let bodies = [
        ("application/json", r#"{"n": 1}"#),
        ("application/json", r#"[{"n": 1}, {"n": 2}]"#),
        ("application/x-ndjson", "{\"n\": 1}\n{\"n\": 2}\n"),
    ];
    for path in ["/records", "/post"] {
        let link = &doc["paths"][path]["post"]["responses"]["201"]["links"]["GetRecord"];
        assert_eq!(link["operationId"], "get_record");
        let expr = link["parameters"]["id"].as_str().unwrap();
        for (content_type, body) in bodies {
            let req = Request::post(path)
                .header("content-type", content_type)
                .header("x-api-key", "k")
                .body(Body::from(body))
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::CREATED, "{path} {body}");
            let first = res.headers()["first-record-id"].to_str().unwrap().to_owned();
            let headers = res.headers().clone();
            let created: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
            let expected = created.get("id").unwrap_or_else(|| &created["ids"][0]);
            assert_eq!(first, expected.as_str().unwrap(), "First-Record-Id is the first id, {path} {body}");

            let id = if let Some(header) = expr.strip_prefix("$response.header.") {
                headers.get(header).map(|v| v.to_str().unwrap().to_owned())
            } else if let Some(pointer) = expr.strip_prefix("$response.body#") {
                created.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
            } else {
                panic!("{expr}: not a response expression this test knows")
            };
            let id = id.unwrap_or_else(|| panic!("{expr} is not in the answer to {path} {body}: {created}"));
            let req = Request::get(format!("/records/{id}")).header("x-api-key", "k").body(Body::empty()).unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "GetRecord after {path} {body}");
            let got: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(got["id"], id.as_str());
        }
    }
}

#[test]
fn the_week_pattern_accepts_exactly_the_weeks_the_server_accepts() {
    let pattern = regex::Regex::new(&tally_http::openapi::week_pattern()).unwrap();
    for year in [0, 999, 1000, 1004, 1999, 2015, 2020, 2025, 2026, 2027, 2032, 2400, 9998, 9999, 10000] {
        for week in 0..=54 {
            for w in ["W", "w"] {
                let s = format!("{year:04}-{w}{week:02}");
                let ok = tally_core::IsoWeek::parse(&s).is_ok();
                assert_eq!(pattern.is_match(&s), ok, "{s}: server says {ok}");
            }
        }
    }
    for year in 1000..=9999 {
        let s = format!("{year}-W53");
        assert_eq!(pattern.is_match(&s), tally_core::IsoWeek::parse(&s).is_ok(), "{s}");
    }
}
