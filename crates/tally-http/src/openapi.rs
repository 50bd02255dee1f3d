//! The OpenAPI 3.1 description of the API, generated from the route table.
//!
//! Each handler carries a `#[utoipa::path]` attribute and is mounted with
//! `utoipa_axum::routes!`, so a route cannot exist without its operation nor
//! the other way round. What holds for whole groups of routes is added here,
//! from the same table: protected routes get the `api_key` security scheme
//! and a 401 answer, every answer gets its `x-request-id` header.
//!
//! This module is the only place the document is built, and nothing in the
//! crate depends on it: it reads the route tables from `router`, and the
//! crate root hands the finished JSON to the router, which gives it to
//! `handlers::serve_openapi` as a request extension.
//!
//! `docs/openapi.json` is this document, written by `scripts/openapi`
//! (`cargo run -p tally-http --example openapi`); a test fails when the
//! committed file differs.

use std::sync::LazyLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{PROBLEM_JSON, Problem};
use crate::router::{firehose_routes, protected_routes, public_routes};

/// Name of the security scheme for the `x-api-key` header.
pub const API_KEY_SCHEME: &str = "api_key";
/// Name of the security scheme of erasure: the admin key, in the same header.
pub const ADMIN_KEY_SCHEME: &str = "admin_key";
/// Name of the security scheme of `POST /firehose`: the key in Firehose's header.
pub const FIREHOSE_KEY_SCHEME: &str = "firehose_access_key";

/// Groups the protected operations and the document-wide parts.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tally",
        description = "JSON records in, weekly reports out.\n\n\
            Send records with `POST /records` (or the original `POST /post`), compressed or not \
            (`Content-Encoding` gzip, zstd or deflate), or from Amazon Data Firehose with `POST /firehose`; read \
            one back with `GET /records/{id}`, or a time range with `GET /records`; erase one with \
            `DELETE /records/{id}` (admin key); read weekly summaries with `GET /summaries/{week}`. Every route but \
            `/`, `/health`, `/openapi.json`, the report site and `/firehose` (Firehose's own access key header) \
            needs the API key in the `x-api-key` header.\n\n\
            The report site (`GET /reports/`, `GET /reports/{week}/`) is for people: HTML pages that open with a \
            signed, expiring link (`?exp=…&sig=…`, in each weekly notification, or printed by \
            `tally report-link`) or with the API key.\n\n\
            Errors are RFC 9457 `application/problem+json` documents (on `/firehose`, the same members inside \
            Firehose's `application/json` answer). Besides the answers listed per \
            operation: an unknown path is 404, a method a path does not take is 405 with an `Allow` \
            header, a request slower than the timeout (30 s by default) is 408, request headers over \
            64 KiB are 431. Every answer carries `x-request-id` (the client's own, when it sent one).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "records", description = "Send and read records."),
        (name = "summaries", description = "Weekly summaries."),
        (name = "reports", description = "The report site, for people: HTML pages opened with a signed link."),
        (name = "service", description = "Health and this description."),
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// `public`, `protected` and `firehose` (the router's parts) with the security
/// scheme, the 401 answers, the `x-request-id` headers and the week pattern.
fn document(public: OpenApi, mut protected: OpenApi, firehose: OpenApi) -> OpenApi {
    for (_, item) in protected.paths.paths.iter_mut() {
        for op in operations(item) {
            // An operation that names its own scheme (erasure: the admin key) keeps it and its answers.
            if op.security.is_some() {
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new())]);
            op.responses.responses.insert(
                "401".into(),
                problem_response("The `x-api-key` header is missing or wrong (a key in the URL is ignored)."),
            );
        }
    }
    let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
    doc.info.version = tally_core::VERSION.into();
    doc = doc.merge_from(public).merge_from(protected).merge_from(firehose);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "The key the server was started with (TALLY_API_KEY or --api-key-file; on AWS, the API \
             Gateway key). Send it in this header, never in the URL.",
        ))),
    );
    components.add_security_scheme(
        ADMIN_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "The admin key (TALLY_ADMIN_KEY or --admin-key-file), distinct from the API key: only erasure \
             takes it. On AWS, erasure uses IAM (SigV4) authorization instead.",
        ))),
    );
    components.add_security_scheme(
        FIREHOSE_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Amz-Firehose-Access-Key",
            "For Amazon Data Firehose deliveries (POST /firehose): the stream's access key. Locally the API key; \
             on AWS the key whose SHA-256 the stack's FirehoseAccessKeySha256 parameter holds (docs/INGEST.md).",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in operations(item) {
            for param in op.parameters.iter_mut().flatten() {
                if (path == "/summaries/{week}" || path == "/reports/{week}/") && param.name == "week" {
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
    let problem = RefOr::Ref(Ref::from_schema_name(Problem::name()));
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(problem)).build())
        .into()
}

/// The whole document: the router's two halves, then what holds for groups
/// of routes, then `POST /post` as a copy of `POST /records`.
pub fn openapi() -> OpenApi {
    let mut doc =
        document(public_routes().into_openapi(), protected_routes().into_openapi(), firehose_routes().into_openapi());
    // `POST /post` is `POST /records` under the 2021 app's path: its operation
    // is a copy, so the two can never be documented differently.
    // Only the POST: `/records` also takes GET (range reads), `/post` does not.
    if let Some(mut op) = doc.paths.paths.get("/records").and_then(|item| item.post.clone()) {
        op.operation_id = Some("create_records_post".into());
        op.summary = Some("`POST /post` — the original app's path: exactly `POST /records`.".into());
        doc.paths.paths.insert("/post".into(), utoipa::openapi::PathItem::new(utoipa::openapi::HttpMethod::Post, op));
    }
    doc
}

/// The document as served by `GET /openapi.json` and committed as
/// `docs/openapi.json` (pretty, with a final newline). Built once.
pub fn openapi_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let s = openapi().to_pretty_json().expect("the OpenAPI document serializes");
        // utoipa 5 writes a Link's `operationId` in snake case (fixed in 6,
        // which needs a newer Rust); no other key is spelled that way.
        s.replace("\"operation_id\": ", "\"operationId\": ") + "\n"
    });
    &JSON
}
