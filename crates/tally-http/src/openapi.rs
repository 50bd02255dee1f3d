//! The OpenAPI 3.1 description of the API, generated from the route table.
//!
//! Each handler carries a `#[utoipa::path]` attribute and is mounted with
//! `utoipa_axum::routes!`, so a route cannot exist without its operation nor
//! the other way round. What holds for whole groups of routes is added here,
//! from the same table: protected routes get the `api_key` security scheme
//! and a 401 answer, every answer gets its `x-request-id` header.
//!
//! `docs/openapi.json` is this document, written by `scripts/openapi`
//! (`cargo run -p tally-http --example openapi`); a test fails when the
//! committed file differs.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::PROBLEM_JSON;

/// Name of the security scheme for the `x-api-key` header.
pub const API_KEY_SCHEME: &str = "api_key";

/// `201` body when one object was sent (mirrors `tally_core::IngestResponse::Single`).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct RecordCreated {
    /// The new record's id.
    #[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
    pub id: String,
    /// When the server received it: RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime, example = "2026-11-25T15:32:06.123Z")]
    pub received_at: String,
}

/// `201` body when an array or NDJSON was sent (mirrors `tally_core::IngestResponse::Batch`).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct BatchCreated {
    /// How many records were stored.
    #[schema(minimum = 1)]
    pub count: usize,
    /// Their ids, in input order.
    #[schema(min_items = 1)]
    pub ids: Vec<RecordIdString>,
}

/// A record id (ULID).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
pub struct RecordIdString(pub String);

/// The `201` body of `POST /records`: one of the two shapes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Created {
    Single(RecordCreated),
    Batch(BatchCreated),
}

/// `GET /records/{id}`: a stored record, its data exactly as it was sent
/// (key order, number spelling and unicode intact).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct StoredRecord {
    #[schema(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", example = "01KB0Z6Y6N5D1H4S3X9Q2W8E7R")]
    pub id: String,
    #[schema(format = DateTime, example = "2026-11-25T15:32:06.123Z")]
    pub received_at: String,
    #[schema(schema_with = any_object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A JSON object with any members.
fn any_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// Request body of `POST /records` as `application/json`: one object, or a
/// non-empty array of objects (at most 1000 by default, `--max-batch-records`).
#[derive(Debug)]
pub struct RecordsJson;

impl PartialSchema for RecordsJson {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(any_object().description(Some("One record.")))
            .item(objects().description(Some("A batch, stored all or nothing.")))
            .description(Some(
                "One JSON object, or a non-empty array of objects. Limits (defaults): body ≤ 1 MiB, \
                 record ≤ 64 KiB, batch ≤ 1000 records, nesting depth ≤ 32, no duplicate keys.",
            ))
            .into()
    }
}

impl ToSchema for RecordsJson {}

/// Request body of `POST /records` as `application/x-ndjson`.
#[derive(Debug)]
pub struct RecordsNdjson;

impl PartialSchema for RecordsNdjson {
    fn schema() -> RefOr<Schema> {
        objects()
            .description(Some(
                "NDJSON: one JSON object per line (the items of this array, each on its own line); \
                 blank lines are ignored. Stored all or nothing; errors name the item's index and line.",
            ))
            .into()
    }
}

impl ToSchema for RecordsNdjson {}

fn objects() -> ArrayBuilder {
    ArrayBuilder::new().items(any_object()).min_items(Some(1)).max_items(Some(1000))
}

/// Any JSON object (a week's `summary.json`, the OpenAPI document).
#[derive(Debug)]
pub struct AnyObject;

impl PartialSchema for AnyObject {
    fn schema() -> RefOr<Schema> {
        any_object().into()
    }
}

impl ToSchema for AnyObject {}

/// Groups the protected operations and the document-wide parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tally",
        description = "JSON records in, weekly reports out.\n\n\
            Send records with `POST /records` (or the original `POST /post`); read one back with \
            `GET /records/{id}`; read weekly summaries with `GET /summaries/{week}`. Every route but \
            `/health` and `/openapi.json` needs the API key in the `x-api-key` header.\n\n\
            Errors are RFC 9457 `application/problem+json` documents. Besides the answers listed per \
            operation: an unknown path is 404, a method a path does not take is 405 with an `Allow` \
            header, a request slower than the timeout (30 s by default) is 408, request headers over \
            64 KiB are 431. Every answer carries `x-request-id` (the client's own, when it sent one).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "records", description = "Send and read records."),
        (name = "summaries", description = "Weekly summaries."),
        (name = "service", description = "Health and this description."),
    ),
    components(schemas(crate::problem::Problem))
)]
struct ApiDoc;

/// The whole document: `public` and `protected` are the router's two halves.
pub(crate) fn document(public: OpenApi, mut protected: OpenApi) -> OpenApi {
    for (_, item) in protected.paths.paths.iter_mut() {
        for op in operations(item) {
            op.security = Some(vec![SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new())]);
            op.responses.responses.insert(
                "401".into(),
                problem_response("The `x-api-key` header is missing or wrong (a key in the URL is ignored)."),
            );
        }
    }
    let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
    doc.info.version = tally_core::VERSION.into();
    doc = doc.merge_from(public).merge_from(protected);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "The key the server was started with (TALLY_API_KEY or --api-key-file; on AWS, the API \
             Gateway key). Send it in this header, never in the URL.",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in operations(item) {
            for param in op.parameters.iter_mut().flatten() {
                if path == "/summaries/{week}" && param.name == "week" {
                    param.schema =
                        Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(week_pattern())).into());
                }
            }
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert(
                        "x-request-id".into(),
                        HeaderBuilder::new()
                            .schema(String::schema())
                            .description(Some("The request's id, as sent by the client or generated (UUID)."))
                            .build(),
                    );
                }
            }
        }
    }
    doc
}

/// The exact pattern of the weeks [`IsoWeek::parse`] accepts: `W01`–`W52`
/// of years 1000–9999 (but not `9999-W52`), and `W53` of the years that have one. The calendar
/// repeats every 400 years, so whether a year has a W53 depends only on its
/// century modulo 4 and its last two digits; the pattern lists, for each of
/// the four century classes, the centuries and the two-digit endings.
///
/// [`IsoWeek::parse`]: tally_core::IsoWeek::parse
pub fn week_pattern() -> String {
    let join = |v: Vec<String>| v.join("|");
    let long_years = (0..4u32)
        .map(|class| {
            let centuries: Vec<u32> = (10..100).filter(|c| c % 4 == class).collect();
            let endings: Vec<String> = (0..100u32)
                .filter(|yy| tally_core::IsoWeek::new((centuries[0] * 100 + yy) as i32, 53).is_some())
                .map(|yy| format!("{yy:02}"))
                .collect();
            format!("(?:{})(?:{})", join(centuries.iter().map(u32::to_string).collect()), join(endings))
        })
        .collect::<Vec<_>>();
    // 9999-W52 is the one exception to "W01-W52 of every year": it would end in
    // year 10000, past what tally's dates can represent, so the parser refuses it.
    format!(
        "^(?:(?:[1-8][0-9]{{3}}|9[0-8][0-9]{{2}}|99[0-8][0-9]|999[0-8])-[Ww](?:0[1-9]|[1-4][0-9]|5[0-2])\
         |9999-[Ww](?:0[1-9]|[1-4][0-9]|5[01])|(?:{})-[Ww]53)$",
        long_years.join("|")
    )
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch]
        .into_iter()
        .flatten()
}

fn problem_response(description: &str) -> RefOr<Response> {
    let problem = RefOr::Ref(Ref::from_schema_name(crate::problem::Problem::name()));
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(problem)).build())
        .into()
}

/// The document as served by `GET /openapi.json` and committed as
/// `docs/openapi.json` (pretty, with a final newline).
pub fn openapi_json() -> String {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let s = crate::router::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        // utoipa 5 writes a Link's `operationId` in snake case (fixed in 6,
        // which needs a newer Rust); no other key is spelled that way.
        s.replace("\"operation_id\": ", "\"operationId\": ") + "\n"
    });
    JSON.clone()
}

/// `GET /openapi.json` — this API's OpenAPI 3.1 description; no key needed.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "get_openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = AnyObject))
)]
pub async fn serve_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

#[cfg(test)]
mod tests {
    use tally_core::{IngestResponse, RecordId, Timestamp};

    use super::*;

    /// The documented shapes are the ones `tally-core` serializes.
    #[test]
    fn documented_bodies_match_the_core_types() {
        let id = RecordId::generate(Timestamp::now());
        let single = serde_json::to_string(&IngestResponse::Single { id, received_at: Timestamp::now() }).unwrap();
        let single: RecordCreated = serde_json::from_str(&single).unwrap();
        assert_eq!(single.id, id.to_string());
        let batch = serde_json::to_string(&IngestResponse::Batch { count: 1, ids: vec![id] }).unwrap();
        let batch: BatchCreated = serde_json::from_str(&batch).unwrap();
        assert_eq!(batch.ids[0].0, id.to_string());
    }

    #[test]
    fn the_patterns_accept_what_the_parsers_accept() {
        // No regex crate here: check the character classes by hand.
        let id = RecordId::generate(Timestamp::now()).to_string();
        assert!(RecordId::parse(&id.to_lowercase()).is_ok(), "lower case ids are documented as valid");
        assert!(tally_core::IdempotencyKey::parse(b"~ !").is_ok());
        assert!(tally_core::IsoWeek::parse("2026-w53").is_ok());
        assert!(tally_core::IsoWeek::parse("0999-W01").is_err(), "years start at 1000, as the pattern says");
    }
}
