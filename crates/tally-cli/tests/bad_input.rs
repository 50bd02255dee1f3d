//! Bad input over real HTTP against `tally serve` (issue 6).
//!
//! Every case is sent as raw bytes on its own connection, so framing a real
//! client would refuse (chunked bodies over the limit, lying lengths, huge or
//! slow headers, control characters) reaches the server as written. Each case
//! checks the exact status, an RFC 9457 problem document whose `detail` says
//! what to fix, and that the number of stored records did not change (read
//! straight from the SQLite file). A handful of edge cases that *must* be
//! accepted (huge numbers, escaped NULs) check the opposite: exactly one
//! record more, and it reads back byte for byte.

mod common;
mod rawhttp;

use std::time::{Duration, Instant};

use common::{KEY, Server};
use rawhttp::{Body, authority, count_records, healthy, request, send};

const ULID: &str = "01JDQ7Z3V8M4W5X6Y7Z8A9B0C1";

#[derive(Debug, Clone)]
struct Case {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    status: u16,
    /// Expected problem `type` (`/problems/<slug>`).
    slug: &'static str,
    /// Each must appear in `detail` (case-insensitive): the advice.
    detail: Vec<&'static str>,
    /// Expected problem members, e.g. `("index", 1)`.
    members: Vec<(&'static str, u64)>,
    /// Records this case must add (1 for the must-accept cases).
    stored: u64,
    /// For 405: the exact `Allow` header.
    allow: Option<&'static str>,
}

impl Case {
    /// `POST /records` with the key and `Content-Type: application/json`.
    fn post(name: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            method: "POST",
            path: "/records".into(),
            headers: vec![("x-api-key".into(), KEY.into()), ("content-type".into(), b"application/json".to_vec())],
            body: Body::Sized(body.into()),
            status: 0,
            slug: "",
            detail: vec![],
            members: vec![],
            stored: 0,
            allow: None,
        }
    }

    /// `method path` with the key and no body.
    fn to(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: vec![("x-api-key".into(), KEY.into())],
            body: Body::None,
            ..Self::post(name, "")
        }
    }

    fn content_type(mut self, ct: Option<&str>) -> Self {
        self.headers.retain(|(n, _)| n != "content-type");
        if let Some(ct) = ct {
            self.headers.push(("content-type".into(), ct.as_bytes().to_vec()));
        }
        self
    }

    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn no_key(mut self) -> Self {
        self.headers.retain(|(n, _)| n != "x-api-key");
        self
    }

    fn path(mut self, p: impl Into<String>) -> Self {
        self.path = p.into();
        self
    }

    fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.body = Body::Chunked(chunks);
        self
    }

    fn expect(mut self, status: u16, slug: &'static str, detail: &[&'static str]) -> Self {
        self.status = status;
        self.slug = slug;
        self.detail = detail.to_vec();
        self
    }

    fn member(mut self, name: &'static str, value: u64) -> Self {
        self.members.push((name, value));
        self
    }

    fn accepted(mut self) -> Self {
        self.status = 201;
        self.stored = 1;
        self
    }
}

fn nest_objects(n: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
}

fn batch(n: usize) -> String {
    format!("[{}]", vec!["{\"i\":1}"; n].join(","))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, data).unwrap();
    e.finish().unwrap()
}

/// 512 MiB of zeros: 512 gzip members of 1 MiB each (a gzip body may hold
/// several members), 538 KB on the wire — under the 1 MiB body limit.
fn gzip_bomb() -> Vec<u8> {
    gzip(&vec![0; 1 << 20]).repeat(512)
}

/// 10 GiB of zeros: 80 zstd frames of 128 MiB each, 329 KB on the wire.
fn zstd_bomb() -> Vec<u8> {
    zstd::encode_all(std::io::Read::take(std::io::repeat(0), 128 << 20), 3).unwrap().repeat(80)
}

fn cases() -> Vec<Case> {
    let over_limit = vec![b' '; 1024 * 1024 + 1];
    let chunks: Vec<Vec<u8>> = (0..20).map(|_| vec![b' '; 64 * 1024]).collect();
    let big_record = format!(r#"[{{"a":1}},{{"big":"{}"}}]"#, "x".repeat(70 * 1024));
    let utf16: Vec<u8> = "{\"a\":1}".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16_bom: Vec<u8> = [0xFF, 0xFE].into_iter().chain(utf16.iter().copied()).collect();
    let long_number = format!("{{\"n\":{}}}", "9".repeat(60_000));
    let ndjson_1001 = "{\"i\":1}\n".repeat(1001);
    let ctl = |b: &[u8]| b.to_vec();
    let ndjson = gzip(&b"{\"i\":1}\n".repeat(5000));
    let truncated_gzip = ndjson[..ndjson.len() / 2].to_vec();
    let zstd_full = zstd::encode_all(&b"{\"i\":1}\n".repeat(5000)[..], 3).unwrap();
    let truncated_zstd = zstd_full[..zstd_full.len() - 4].to_vec();

    let mut cases = vec![
        // --- Body framing and encoding: 400 -------------------------------------------
        Case::post("empty body", "").expect(400, "empty-body", &["empty", "send one JSON object"]),
        Case::post("whitespace only", " \r\n\t ").expect(400, "empty-body", &["empty"]),
        Case::post("truncated JSON", "{\"a\":[1,2").expect(400, "malformed-json", &["line 1", "fix the JSON"]),
        Case::post("trailing garbage", "{\"a\":1} x").expect(400, "malformed-json", &["trailing", "fix the JSON"]),
        Case::post("two values", "{}{}").expect(400, "malformed-json", &["trailing"]),
        Case::post("syntax error on line 3", "{\n\"a\": 1,\n\"b\": }")
            .expect(400, "malformed-json", &["line 3"])
            .member("line", 3),
        Case::post("invalid UTF-8", b"{\"a\":\"\xFF\xFE\"}".to_vec()).expect(400, "invalid-encoding", &["UTF-8"]),
        Case::post("overlong UTF-8 encoding", b"{\"a\":\"\xC0\xAF\"}".to_vec()).expect(
            400,
            "invalid-encoding",
            &["UTF-8"],
        ),
        Case::post("UTF-8 byte order mark", b"\xEF\xBB\xBF{\"a\":1}".to_vec()).expect(
            400,
            "invalid-encoding",
            &["byte order mark", "UTF-8"],
        ),
        Case::post("UTF-16 with BOM", utf16_bom).expect(400, "invalid-encoding", &["UTF-16", "UTF-8"]),
        Case::post("UTF-16 without BOM", utf16).expect(400, "invalid-encoding", &["NUL", "UTF-8"]),
        Case::post("lone high surrogate escape", r#"{"a":"\ud800"}"#).expect(400, "malformed-json", &["escape"]),
        Case::post("lone low surrogate escape", r#"{"a":"x\udc00y"}"#).expect(400, "malformed-json", &["escape"]),
        Case::post("surrogate escape in a key", r#"{"\udbff":1}"#).expect(400, "malformed-json", &["escape"]),
        Case::post("raw NUL inside a string", ctl(b"{\"a\":\"x\x00y\"}")).expect(400, "malformed-json", &["control"]),
        Case::post("raw NUL after the value", ctl(b"{\"a\":1}\x00")).expect(400, "malformed-json", &["trailing"]),
        Case::post("NaN literal", "{\"a\":NaN}").expect(400, "malformed-json", &["fix the JSON"]),
        Case::post("Infinity literal", "{\"a\":Infinity}").expect(400, "malformed-json", &["fix the JSON"]),
        Case::post("-Infinity literal", "{\"a\":-Infinity}").expect(400, "malformed-json", &["fix the JSON"]),
        Case::post("single quotes", "{'a':1}").expect(400, "malformed-json", &["fix the JSON"]),
        Case::post("trailing comma", "{\"a\":1,}").expect(400, "malformed-json", &["fix the JSON"]),
        // --- Valid JSON that is not acceptable: 422 ------------------------------------
        Case::post("top-level number", "42").expect(422, "not-an-object", &["a number", "must be an object"]),
        Case::post("top-level string", "\"hello\"").expect(422, "not-an-object", &["a string"]),
        Case::post("top-level null", "null").expect(422, "not-an-object", &["null"]),
        Case::post("top-level boolean", "true").expect(422, "not-an-object", &["a boolean"]),
        Case::post("array of non-objects", "[1,2,3]")
            .expect(422, "not-an-object", &["record 0", "a number"])
            .member("index", 0),
        Case::post("mixed array", r#"[{"a":1},"b",{"c":3}]"#)
            .expect(422, "not-an-object", &["record 1", "a string"])
            .member("index", 1),
        Case::post("nested array as an item", r#"[{"a":1},[{"b":2}]]"#)
            .expect(422, "not-an-object", &["record 1", "an array"])
            .member("index", 1),
        Case::post("empty array", "[]").expect(422, "empty-batch", &["at least one"]),
        Case::post("1001-record batch", batch(1001)).expect(422, "too-many-records", &["1001", "1000", "split"]),
        Case::post("record over 64 KiB inside a small batch", big_record)
            .expect(422, "record-too-large", &["record 1", "65536", "shrink"])
            .member("index", 1),
        Case::post("number of 60,000 digits", long_number.clone()).accepted(),
        Case::post("nesting depth 33", nest_objects(33)).expect(422, "too-deep", &["32 levels", "flatten"]),
        Case::post("nesting depth 10,000 (arrays)", "[".repeat(10_000) + &"]".repeat(10_000)).expect(
            422,
            "too-deep",
            &["flatten"],
        ),
        Case::post("nesting depth 10,000 (objects, unclosed)", "{\"a\":".repeat(10_000)).expect(
            422,
            "too-deep",
            &["flatten"],
        ),
        Case::post("depth 33 in the second record of a batch", format!("[{{}},{}]", nest_objects(33)))
            .expect(422, "too-deep", &["record 1"])
            .member("index", 1),
        Case::post("duplicate keys", r#"{"a":1,"b":2,"a":3}"#).expect(422, "duplicate-key", &["\"a\"", "unique"]),
        Case::post("duplicate keys spelled differently", r#"{"é":1,"\u00e9":2}"#).expect(
            422,
            "duplicate-key",
            &["unique"],
        ),
        Case::post("duplicate keys deep in a batch", r#"[{},{"x":{"y":[{"k":1,"k":2}]}}]"#)
            .expect(422, "duplicate-key", &["record 1", "$.x.y[0]"])
            .member("index", 1),
        // --- Edge cases that must be accepted, losslessly ------------------------------
        Case::post("huge exponent", r#"{"n":1e999999999}"#).accepted(),
        Case::post("huge integer", r#"{"n":123456789012345678901234567890123456789012345678901234567890}"#).accepted(),
        Case::post("tiny negative exponent", r#"{"n":-0.000000000000000000001e-400}"#).accepted(),
        Case::post("escaped NUL", r#"{"a\u0000":"\u0000"}"#).accepted(),
        Case::post("nesting depth exactly 32", nest_objects(32)).accepted(),
        // --- Size limits: 413 ----------------------------------------------------------
        Case::post("body over 1 MiB with Content-Length", over_limit).expect(
            413,
            "body-too-large",
            &["1048576", "smaller batches"],
        ),
        Case::post("chunked body over 1 MiB without Content-Length", "").chunked(chunks).expect(
            413,
            "body-too-large",
            &["1048576", "smaller batches"],
        ),
        // --- Media types: 415 ----------------------------------------------------------
        Case::post("text/plain", "{}").content_type(Some("text/plain")).expect(
            415,
            "unsupported-media-type",
            &["application/json", "application/x-ndjson"],
        ),
        Case::post("missing Content-Type", "{}").content_type(None).expect(
            415,
            "unsupported-media-type",
            &["missing", "application/json"],
        ),
        Case::post("multipart form", "--x\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n{}\r\n--x--\r\n")
            .content_type(Some("multipart/form-data; boundary=x"))
            .expect(415, "unsupported-media-type", &["multipart/form-data", "application/json"]),
        Case::post("url-encoded form", "a=1").content_type(Some("application/x-www-form-urlencoded")).expect(
            415,
            "unsupported-media-type",
            &["application/json"],
        ),
        Case::post("charset utf-16", "{}").content_type(Some("application/json; charset=utf-16")).expect(
            415,
            "unsupported-media-type",
            &["utf-16", "UTF-8"],
        ),
        Case::post("unparsable Content-Type", "{}").content_type(Some(";;;")).expect(
            415,
            "unsupported-media-type",
            &["application/json"],
        ),
        // --- Compressed bodies (issue 24): the limit is on the decoded body -------------
        Case::post("gzip bomb (512 MiB of zeros in 538 KB)", gzip_bomb())
            .content_type(Some("application/x-ndjson"))
            .header("content-encoding", "gzip")
            .expect(413, "body-too-large", &["decompresses to more than 1048576", "smaller batches"]),
        Case::post("zstd bomb (10 GiB of zeros in 329 KB)", zstd_bomb())
            .content_type(Some("application/x-ndjson"))
            .header("content-encoding", "zstd")
            .expect(413, "body-too-large", &["decompresses to more than 1048576", "smaller batches"]),
        Case::post("truncated gzip stream", truncated_gzip)
            .content_type(Some("application/x-ndjson"))
            .header("content-encoding", "gzip")
            .expect(400, "undecodable-body", &["gzip", "truncated", "whole compressed body"]),
        Case::post("truncated zstd stream", truncated_zstd)
            .content_type(Some("application/x-ndjson"))
            .header("content-encoding", "zstd")
            .expect(400, "undecodable-body", &["zstd", "truncated"]),
        Case::post("unknown Content-Encoding", gzip(b"{}")).header("content-encoding", "br").expect(
            415,
            "unsupported-media-type",
            &["\"br\"", "gzip, zstd or deflate"],
        ),
        Case::post("gzip data labelled zstd", gzip(b"{}")).header("content-encoding", "zstd").expect(
            400,
            "undecodable-body",
            &["not a zstd frame", "28 b5 2f fd"],
        ),
        Case::post("Content-Encoding gzip on a plain body", "{\"a\":1}").header("content-encoding", "gzip").expect(
            400,
            "undecodable-body",
            &["not gzip data", "plain JSON", "without Content-Encoding"],
        ),
        Case::post("stacked encodings gzip, gzip", gzip(&gzip(b"{}"))).header("content-encoding", "gzip, gzip").expect(
            415,
            "unsupported-media-type",
            &["2 codings", "compress the body once"],
        ),
        Case::post("two Content-Encoding headers", gzip(&gzip(b"{}")))
            .header("content-encoding", "gzip")
            .header("content-encoding", "gzip")
            .expect(415, "unsupported-media-type", &["2 codings"]),
        // --- NDJSON: all-or-nothing, with index and line ------------------------------
        Case::post("NDJSON with one bad line", "{\"i\":0}\n\n{\"i\":1}\n{\"i\":\n{\"i\":3}\n")
            .content_type(Some("application/x-ndjson"))
            .expect(400, "malformed-json", &["record 2 (line 4)"])
            .member("index", 2)
            .member("line", 4),
        Case::post("NDJSON with a non-object line", "{\"i\":0}\n[1]\n")
            .content_type(Some("application/x-ndjson"))
            .expect(422, "not-an-object", &["record 1 (line 2)"])
            .member("index", 1)
            .member("line", 2),
        Case::post("NDJSON with 1001 lines", ndjson_1001).content_type(Some("application/x-ndjson")).expect(
            422,
            "too-many-records",
            &["1000", "split"],
        ),
        Case::post("NDJSON with only blank lines", "\n\n\n").content_type(Some("application/x-ndjson")).expect(
            400,
            "empty-body",
            &["empty"],
        ),
        // --- Idempotency-Key -----------------------------------------------------------
        Case::post("empty Idempotency-Key", "{}").header("idempotency-key", "").expect(
            400,
            "bad-request",
            &["Idempotency-Key", "empty", "1 to 255"],
        ),
        Case::post("Idempotency-Key of 256 characters", "{}").header("idempotency-key", "k".repeat(256)).expect(
            400,
            "bad-request",
            &["Idempotency-Key", "255"],
        ),
        Case::post("Idempotency-Key with a tab", "{}").header("idempotency-key", "a\tb").expect(
            400,
            "bad-request",
            &["Idempotency-Key", "printable ASCII"],
        ),
        Case::post("Idempotency-Key with non-ASCII bytes", "{}").header("idempotency-key", "clé".as_bytes()).expect(
            400,
            "bad-request",
            &["Idempotency-Key", "printable ASCII"],
        ),
        Case::post("Idempotency-Key sent twice", "{}")
            .header("idempotency-key", "a")
            .header("idempotency-key", "b")
            .expect(400, "bad-request", &["once"]),
        // --- Paths ---------------------------------------------------------------------
        Case::to("record id with encoded traversal", "GET", "/records/..%2F..%2Fetc%2Fpasswd").expect(
            400,
            "bad-request",
            &["not a record id", "ULID"],
        ),
        Case::to("record id with raw traversal", "GET", "/records/../../etc/passwd").expect(
            404,
            "not-found",
            &["no such route"],
        ),
        Case::to("unicode record id", "GET", "/records/%C3%A9t%C3%A9-%F0%9F%98%80").expect(
            400,
            "bad-request",
            &["not a record id", "ULID"],
        ),
        Case::to("10 KB record id", "GET", format!("/records/{}", "A".repeat(10 * 1024))).expect(
            400,
            "bad-request",
            &["not a record id", "ULID"],
        ),
        Case::to("record id that overflows 128 bits", "GET", "/records/ZZZZZZZZZZZZZZZZZZZZZZZZZZ").expect(
            400,
            "bad-request",
            &["ULID"],
        ),
        Case::to("unknown record id", "GET", format!("/records/{ULID}")).expect(
            404,
            "not-found",
            &["no record has id"],
        ),
        Case::to("week 54", "GET", "/summaries/2026-W54").expect(400, "bad-request", &["no such week", "2026-W47"]),
        Case::to("week 00", "GET", "/summaries/2026-W00").expect(400, "bad-request", &["W01"]),
        Case::to("week 53 of a 52-week year", "GET", "/summaries/2025-W53").expect(
            400,
            "bad-request",
            &["no such week"],
        ),
        Case::to("week ../ encoded", "GET", "/summaries/..%2F").expect(400, "bad-request", &["not an ISO week"]),
        Case::to("week ../ raw", "GET", "/summaries/../").expect(404, "not-found", &["no such route"]),
        Case::to("week in another shape", "GET", "/summaries/2026-47").expect(400, "bad-request", &["YYYY-Www"]),
        Case::to("unknown route", "GET", "/admin").expect(404, "not-found", &["no such route"]),
        // --- Authentication ------------------------------------------------------------
        Case::post("missing key", "{}").no_key().expect(401, "unauthorized", &["x-api-key"]),
        Case::post("wrong key", "{}").no_key().header("x-api-key", "not-the-key").expect(
            401,
            "unauthorized",
            &["does not match"],
        ),
        Case::post("key that is a prefix of the real key", "{}")
            .no_key()
            .header("x-api-key", &KEY[..KEY.len() - 1])
            .expect(401, "unauthorized", &["does not match"]),
        Case::post("key in the query string", "{}").no_key().path(format!("/records?x-api-key={KEY}")).expect(
            401,
            "unauthorized",
            &["not in the URL"],
        ),
        Case::post("key as a bearer token", "{}").no_key().header("authorization", format!("Bearer {KEY}")).expect(
            401,
            "unauthorized",
            &["x-api-key"],
        ),
        Case::to("read without a key", "GET", format!("/records/{ULID}")).no_key().expect(
            401,
            "unauthorized",
            &["x-api-key"],
        ),
    ];

    // --- Methods: every route, every method it does not take -----------------------
    let routes: [(&str, &str, &[&str]); 6] = [
        ("/records", "POST,GET,HEAD", &["PUT", "DELETE", "PATCH"]),
        ("/post", "POST", &["HEAD", "PUT", "DELETE", "PATCH"]),
        ("/records/01JDQ7Z3V8M4W5X6Y7Z8A9B0C1", "GET,HEAD,DELETE", &["PUT", "PATCH", "POST"]),
        ("/summaries", "GET,HEAD", &["PUT", "DELETE", "PATCH", "POST"]),
        ("/summaries/2026-W47", "GET,HEAD", &["PUT", "DELETE", "PATCH", "POST"]),
        ("/health", "GET,HEAD", &["PUT", "DELETE", "PATCH", "POST"]),
    ];
    for (path, allow, methods) in routes {
        for method in methods {
            let mut c =
                Case::to(format!("{method} {path}"), method, path).expect(405, "method-not-allowed", &["Allow header"]);
            c.allow = Some(allow);
            cases.push(c);
        }
    }
    // A range read without its range, and erasure on a server without an admin key.
    cases.push(Case::to("range read without a range", "GET", "/records").expect(
        400,
        "invalid-parameter",
        &["from", "to", "week"],
    ));
    cases.push(Case::to("erasure switched off", "DELETE", format!("/records/{ULID}")).expect(
        403,
        "forbidden",
        &["TALLY_ADMIN_KEY"],
    ));
    // HEAD on a GET route is GET without the body (RFC 9110); check the status.
    cases.push(Case::to("HEAD on an unknown record", "HEAD", format!("/records/{ULID}")).expect(404, "not-found", &[]));
    cases.push(Case::to("HEAD on a bad week", "HEAD", "/summaries/2026-W54").expect(400, "bad-request", &[]));
    cases.push(Case::to("HEAD without a key", "HEAD", "/summaries").no_key().expect(401, "unauthorized", &[]));
    cases
}

/// Checks one case against the response; returns what is wrong.
fn check(case: &Case, res: &rawhttp::Response) -> Vec<String> {
    let mut wrong = Vec::new();
    if res.status != case.status {
        wrong.push(format!("status {} (expected {}): {}", res.status, case.status, res.text()));
        return wrong;
    }
    if case.status == 201 {
        return wrong;
    }
    if res.header("content-type") != Some("application/problem+json") {
        wrong.push(format!("content-type {:?}", res.header("content-type")));
    }
    if case.status == 405 && res.header("allow").map(|a| a.replace(' ', "")).as_deref() != case.allow {
        wrong.push(format!("Allow header {:?} (expected {:?})", res.header("allow"), case.allow));
    }
    if case.method == "HEAD" {
        if !res.body.is_empty() {
            wrong.push("HEAD answered with a body".into());
        }
        return wrong;
    }
    let Some(p) = res.json() else {
        wrong.push(format!("body is not JSON: {:?}", res.text()));
        return wrong;
    };
    if p["type"] != format!("/problems/{}", case.slug) {
        wrong.push(format!("type {} (expected /problems/{})", p["type"], case.slug));
    }
    if p["status"] != case.status {
        wrong.push(format!("status member {}", p["status"]));
    }
    if p["title"].as_str().is_none_or(str::is_empty) {
        wrong.push("no title".into());
    }
    let detail = p["detail"].as_str().unwrap_or_default();
    if detail.len() < 20 {
        wrong.push(format!("detail too short to help: {detail:?}"));
    }
    if detail.len() > 600 {
        wrong.push(format!("detail of {} bytes echoes too much input", detail.len()));
    }
    for needle in &case.detail {
        if !detail.to_lowercase().contains(&needle.to_lowercase()) {
            wrong.push(format!("detail lacks {needle:?}: {detail:?}"));
        }
    }
    for (name, value) in &case.members {
        if p[*name] != *value {
            wrong.push(format!("member {name} = {} (expected {value})", p[*name]));
        }
    }
    wrong
}

#[test]
fn every_bad_request_gets_the_right_problem_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let names: std::collections::HashSet<_> = cases.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be distinct");

    let mut failures = Vec::new();
    let mut count = count_records(dir.path());
    for case in &cases {
        let raw = request(case.method, &case.path, &case.headers, &case.body);
        let res = match send(&addr, raw, Duration::from_secs(20)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: no response: {e}", case.name));
                continue;
            }
        };
        let mut wrong = check(case, &res);
        let now = count_records(dir.path());
        if now != count + case.stored {
            wrong.push(format!("record count went from {count} to {now} (expected +{})", case.stored));
        }
        if case.stored == 1 && res.status == 201 {
            // The accepted edge case reads back exactly as sent.
            let id = res.json().and_then(|v| v["id"].as_str().map(str::to_owned)).unwrap_or_default();
            let get = request("GET", &format!("/records/{id}"), &[("x-api-key".into(), KEY.into())], &Body::None);
            let sent = match &case.body {
                Body::Sized(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            match send(&addr, get, Duration::from_secs(10)) {
                Ok(r) if r.text().ends_with(&format!("\"data\":{sent}}}")) => {}
                Ok(r) => wrong.push(format!("read back differs: {}", r.text().chars().take(300).collect::<String>())),
                Err(e) => wrong.push(format!("read back failed: {e}")),
            }
        }
        count = now;
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}",
                case.name,
                case.method,
                case.path.chars().take(60).collect::<String>(),
                wrong.join("; ")
            ));
        }
    }
    assert!(healthy(&addr), "the server must stay healthy");
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn oversized_headers_are_431_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    let before = count_records(dir.path());
    let huge = vec![("x-padding".to_owned(), vec![b'a'; 80 * 1024]), ("x-api-key".to_owned(), KEY.into())];
    let many: Vec<(String, Vec<u8>)> = (0..200).map(|i| (format!("x-h{i}"), b"v".to_vec())).collect();
    for (what, headers) in [("one 80 KiB header", huge), ("200 headers", many)] {
        let raw = request("POST", "/records", &headers, &Body::Sized(b"{}".to_vec()));
        let res = send(&addr, raw, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(res.status, 431, "{what}: {}", res.text());
        assert!(healthy(&addr), "{what}: server unhealthy afterwards");
    }
    assert_eq!(count_records(dir.path()), before);
}

#[test]
fn a_slow_loris_body_times_out_with_408_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--request-timeout-secs", "2"]);
    let addr = authority(&server.base).to_owned();
    let before = count_records(dir.path());
    // GIVEN requests that promise 100 bytes (or a chunked body) and send a few, then stall
    let mut stalled = Vec::new();
    for chunked in [false, true] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let framing = if chunked {
            "transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":"
        } else {
            "content-length: 100\r\n\r\n{\"a\":"
        };
        let head = format!(
            "POST /records HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\n{framing}"
        );
        std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
        stalled.push(s);
    }
    // WHEN the server is used meanwhile, it answers promptly
    assert!(healthy(&addr));
    // THEN each stalled request gets a 408 problem after the request timeout
    let started = Instant::now();
    for s in stalled {
        let res = rawhttp::read_response(s, Duration::from_secs(15)).expect("a 408 response");
        assert_eq!(res.status, 408, "{}", res.text());
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        let p = res.json().expect("problem JSON");
        assert_eq!(p["type"], "/problems/timeout");
        assert!(p["detail"].as_str().unwrap_or_default().contains("send it again"), "{p}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "timeouts took {:?}", started.elapsed());
    assert!(healthy(&addr));
    assert_eq!(count_records(dir.path()), before);
}

#[test]
fn slow_headers_are_cut_off_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    // GIVEN connections that send a header line every second and never finish
    let started = Instant::now();
    let lorises: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let _ = std::io::Write::write_all(&mut s, b"GET /health HTTP/1.1\r\nhost: x\r\n");
                for i in 0..60 {
                    std::thread::sleep(Duration::from_millis(500));
                    if std::io::Write::write_all(&mut s, format!("x-slow-{i}: 1\r\n").as_bytes()).is_err() {
                        return started.elapsed();
                    }
                    let mut buf = [0u8; 256];
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) => return started.elapsed(),
                        Ok(_) => return started.elapsed(),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
                        Err(_) => {}
                    }
                }
                Duration::MAX
            })
        })
        .collect();
    // WHEN others use the server meanwhile, they are served
    std::thread::sleep(Duration::from_secs(1));
    assert!(healthy(&addr));
    // THEN the server drops each slow connection after its header read timeout (10 s)
    for l in lorises {
        let cut = l.join().unwrap();
        assert!(cut < Duration::from_secs(20), "a slow-header connection was kept for {cut:?}");
        assert!(cut >= Duration::from_secs(5), "cut after only {cut:?}");
    }
    assert!(healthy(&addr));
}

#[test]
fn keys_idempotency_keys_and_bodies_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    let wrong = "wrong-key-Zq8v1Lr0";
    let idem = "idem-key-Xk3Tb7Pp";
    let bearer = "bearer-token-Mm4Nn5";
    let body_marker = "body-marker-Yy6Ww2";
    let json = ("content-type".to_owned(), b"application/json".to_vec());
    let body = Body::Sized(format!(r#"{{"m":"{body_marker}"}}"#).into_bytes());
    let requests = [
        // 401: wrong key, key in the query string, bearer token
        (
            vec![("x-api-key".to_owned(), wrong.as_bytes().to_vec()), json.clone()],
            format!("/records?x-api-key={wrong}"),
            401,
        ),
        (
            vec![("authorization".to_owned(), format!("Bearer {bearer}").into_bytes()), json.clone()],
            "/records".into(),
            401,
        ),
        // 201 then replay, and 409 on reuse, all with an idempotency key
        (
            vec![("x-api-key".to_owned(), KEY.into()), ("idempotency-key".to_owned(), idem.into()), json.clone()],
            "/records".into(),
            201,
        ),
        (
            vec![("x-api-key".to_owned(), KEY.into()), ("idempotency-key".to_owned(), idem.into()), json.clone()],
            "/records".into(),
            201,
        ),
        // 400 for a bad body that carries the marker
        (vec![("x-api-key".to_owned(), KEY.into()), json], "/records".into(), 400),
    ];
    for (i, (headers, path, status)) in requests.into_iter().enumerate() {
        let body = if i == 4 { Body::Sized(format!(r#"{{"m":"{body_marker}""#).into_bytes()) } else { body.clone() };
        let res = send(&addr, request("POST", &path, &headers, &body), Duration::from_secs(10)).unwrap();
        assert_eq!(res.status, status, "request {i}: {}", res.text());
    }
    assert!(server.terminate().success());
    let logs = server.log_text();
    assert!(logs.matches("request done").count() >= 5, "requests were not logged:\n{logs}");
    for secret in [KEY, wrong, idem, bearer, body_marker] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs:\n{logs}");
    }
}
