//! The recipes of docs/INGEST.md, each as the tool sends it, against a real
//! `tally serve` over a socket (issue 24 item 3).
//!
//! Each client below writes the bytes its tool writes — request line,
//! headers (`Content-Type`, `Content-Encoding`, `User-Agent`, the key
//! header the recipe configures), body shape, compression, batch size —
//! taken from the tool's documentation or source, cited at each client.
//! The raw client (`rawhttp`) adds only `Host`, `Content-Length` and
//! `Connection: close`. Every accepted batch is read back from the SQLite
//! file: the records stored are the events sent, byte for byte. Where a
//! tool's default does not fit, the test proves the refusal is a clear 415
//! or 422 with nothing stored — never a silent drop.

mod common;
mod rawhttp;

use std::io::Write;
use std::time::Duration;

use common::{KEY, Server};
use rawhttp::{Body, authority, count_records, request, send};

/// What one request did.
struct Outcome {
    status: u16,
    json: serde_json::Value,
}

struct Tally {
    _server: Server,
    addr: String,
    dir: tempfile::TempDir,
}

impl Tally {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[]);
        let addr = authority(&server.base).to_owned();
        Self { _server: server, addr, dir }
    }

    /// Sends `POST /records` with exactly these headers and body.
    fn post(&self, headers: &[(&str, &str)], body: Vec<u8>) -> Outcome {
        let headers: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect();
        let res = send(&self.addr, request("POST", "/records", &headers, &Body::Sized(body)), Duration::from_secs(20))
            .expect("an answer");
        Outcome { status: res.status, json: res.json().unwrap_or_default() }
    }

    fn count(&self) -> u64 {
        count_records(self.dir.path())
    }

    /// The stored records' data, in the order they were stored.
    fn data(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.path().join("tally.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        let mut stmt = conn.prepare("SELECT data FROM records ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }
}

/// gzip at flate2's default level. Each tool picks its own level (Vector's
/// default is 6, the `gzip` command and Python's `gzip.compress` use 9); the
/// level does not change what tally reads.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn assert_stored(t: &Tally, out: &Outcome, before: u64, events: &[String], what: &str) {
    assert_eq!(out.status, 201, "{what}: {}", out.json);
    assert_eq!(out.json["count"], events.len(), "{what}: {}", out.json);
    assert_eq!(t.count(), before + events.len() as u64, "{what}");
    let stored = t.data();
    assert_eq!(&stored[before as usize..], events, "{what}: stored records differ from the events sent");
}

fn assert_refused(t: &Tally, out: &Outcome, before: u64, status: u16, kind: &str, advice: &str, what: &str) {
    assert_eq!(out.status, status, "{what}: {}", out.json);
    assert_eq!(out.json["type"], kind, "{what}: {}", out.json);
    assert!(out.json["detail"].as_str().unwrap_or_default().contains(advice), "{what}: {}", out.json);
    assert_eq!(t.count(), before, "{what}: a refused request stored something");
}

/// Vector's `http` sink, as docs/INGEST.md configures it:
///
/// ```toml
/// encoding.codec = "json"
/// framing.method = "newline_delimited"
/// compression = "gzip"
/// request.headers.x-api-key = "…"
/// batch.max_events = 1000
/// ```
///
/// From vectordotdev/vector `src/sinks/http/config.rs`: `Content-Type` is
/// `application/x-ndjson` for the json codec with newline-delimited framing
/// and `application/json` with the default framing (comma-delimited, which
/// `src/sinks/http/encoder.rs` wraps in `[` `]`); `Content-Encoding` is the
/// compression's (`gzip`); `request.headers` are added as given. From
/// `encoder.rs`: newline-delimited events are joined by `\n` with the last
/// newline removed. From `src/http.rs`: `User-Agent: Vector/<version>`. A log
/// event from the `file` source, legacy namespace, serializes as below.
fn vector_event(i: usize) -> String {
    format!(
        "{{\"file\":\"/var/log/app.log\",\"host\":\"web-1\",\"message\":\"GET /items/{i} 200 {i}ms\",\
         \"source_type\":\"file\",\"timestamp\":\"2026-11-25T15:30:{:02}.123456789Z\"}}",
        i % 60
    )
}

const VECTOR_UA: &str = "Vector/0.43.0 (x86_64-unknown-linux-gnu e9c1d4e 2024-12-09 14:30:00.000000000)";

#[test]
fn vector_http_sink_ndjson_gzip_batches_are_stored_and_oversized_batches_refused() {
    let t = Tally::start();
    let events: Vec<String> = (0..500).map(vector_event).collect();
    let body = gzip(events.join("\n").as_bytes());
    let headers = [
        ("content-type", "application/x-ndjson"),
        ("content-encoding", "gzip"),
        ("x-api-key", KEY),
        ("user-agent", VECTOR_UA),
    ];
    let out = t.post(&headers, body);
    assert_stored(&t, &out, 0, &events, "Vector newline_delimited + gzip");

    // Without `framing`, the json codec sends a JSON array as application/json: stored too.
    let more: Vec<String> = (500..510).map(vector_event).collect();
    let array = format!("[{}]", more.join(","));
    let out = t.post(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("x-api-key", KEY),
            ("user-agent", VECTOR_UA),
        ],
        gzip(array.as_bytes()),
    );
    assert_stored(&t, &out, 500, &more, "Vector default framing (JSON array) + gzip");

    // Vector's default batch (`batch.max_bytes` 10 MB, no event limit) can
    // exceed tally's 1,000 records: a clear 422, not a silent drop.
    let big: Vec<String> = (0..1001).map(vector_event).collect();
    let out = t.post(&headers, gzip(big.join("\n").as_bytes()));
    assert_refused(&t, &out, 510, 422, "/problems/too-many-records", "split", "Vector batch of 1001");
}

/// Fluent Bit's `http` output, as docs/INGEST.md configures it:
///
/// ```text
/// [OUTPUT]
///     Name     http
///     Match    *
///     Host     tally.example
///     Port     8080
///     URI      /records
///     Format   json_lines
///     compress gzip
///     Header   x-api-key …
/// ```
///
/// From fluent/fluent-bit `plugins/out_http/http.c` and `http.h`:
/// `Content-Type: application/x-ndjson` for `json_lines`
/// (`FLB_HTTP_MIME_NDJSON`), `application/json` for `json`,
/// `application/msgpack` for the default `msgpack`; `compress gzip` gzips the
/// payload and sets `Content-Encoding: gzip`; `User-Agent: Fluent-Bit`; each
/// `Header` is added as given. `json_lines` writes one record per line, each
/// ending in `\n`, with the time under `json_date_key` (`date`) as a double
/// (`json_date_format` default).
fn fluent_bit_record(i: usize) -> String {
    format!("{{\"date\":1795620600.{:06},\"log\":\"worker {i} done\",\"stream\":\"stdout\"}}", i * 7)
}

#[test]
fn fluent_bit_http_output_json_lines_gzip_is_stored_and_its_msgpack_default_is_415() {
    let t = Tally::start();
    let records: Vec<String> = (0..300).map(fluent_bit_record).collect();
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    let out = t.post(
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
            ("user-agent", "Fluent-Bit"),
            ("x-api-key", KEY),
        ],
        gzip(lines.as_bytes()),
    );
    assert_stored(&t, &out, 0, &records, "Fluent Bit json_lines + gzip");

    // `Format json`: a JSON array, application/json — stored too.
    let more: Vec<String> = (300..305).map(fluent_bit_record).collect();
    let out = t.post(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("user-agent", "Fluent-Bit"),
            ("x-api-key", KEY),
        ],
        gzip(format!("[{}]", more.join(",")).as_bytes()),
    );
    assert_stored(&t, &out, 300, &more, "Fluent Bit json + gzip");

    // A Fluent Bit that labels json_lines application/json (older out_http
    // did): a multi-line body is not one JSON document — a clear 400.
    let out = t.post(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("user-agent", "Fluent-Bit"),
            ("x-api-key", KEY),
        ],
        gzip(lines.as_bytes()),
    );
    assert_refused(&t, &out, 305, 400, "/problems/malformed-json", "trailing", "json_lines labelled application/json");

    // The default `Format msgpack`: refused with 415 naming the types tally takes.
    let out = t.post(
        &[("content-type", "application/msgpack"), ("user-agent", "Fluent-Bit"), ("x-api-key", KEY)],
        vec![0x81, 0xa3, b'l', b'o', b'g', 0xa2, b'h', b'i'],
    );
    assert_refused(
        &t,
        &out,
        305,
        415,
        "/problems/unsupported-media-type",
        "application/x-ndjson",
        "Fluent Bit msgpack",
    );
}

/// Logstash's `http` output, as docs/INGEST.md configures it:
///
/// ```text
/// output { http { url => "…/records" http_method => "post" format => "json_batch"
///                 http_compression => true headers => { "x-api-key" => "…" } } }
/// ```
///
/// From logstash-plugins/logstash-output-http 6.0.1
/// `lib/logstash/outputs/http.rb`: `json_batch` sends each batch of events
/// as one JSON array (`LogStash::Json.dump(events.map …)`) with
/// `Content-Type: application/json`; `http_compression` gzips the body and
/// sets `Content-Encoding: gzip`; `format => "message"` sends
/// `text/plain`. A batch is Logstash's pipeline batch, 125 events by default
/// (`pipeline.batch.size`). The client is Manticore, whose default
/// `User-Agent` is `Manticore <version>`. An event serializes with
/// `@timestamp`, `@version` and its fields.
fn logstash_event(i: usize) -> String {
    format!(
        "{{\"@timestamp\":\"2026-11-25T15:30:00.{:03}Z\",\"@version\":\"1\",\"host\":{{\"name\":\"web-1\"}},\
         \"message\":\"order {i} paid\",\"event\":{{\"original\":\"order {i} paid\"}}}}",
        i % 1000
    )
}

#[test]
fn logstash_http_output_json_batch_gzip_is_stored_and_its_message_format_is_415() {
    let t = Tally::start();
    let events: Vec<String> = (0..125).map(logstash_event).collect();
    let headers = [
        ("x-api-key", KEY),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
        ("user-agent", "Manticore 0.9.1"),
    ];
    let out = t.post(&headers, gzip(format!("[{}]", events.join(",")).as_bytes()));
    assert_stored(&t, &out, 0, &events, "Logstash json_batch + gzip");

    // `pipeline.batch.size` above 1000: a clear 422.
    let big: Vec<String> = (0..1200).map(logstash_event).collect();
    let out = t.post(&headers, gzip(format!("[{}]", big.join(",")).as_bytes()));
    assert_refused(&t, &out, 125, 422, "/problems/too-many-records", "split", "Logstash batch of 1200");

    // `format => "message"`: text/plain, refused with 415.
    let out = t.post(
        &[("x-api-key", KEY), ("content-type", "text/plain"), ("user-agent", "Manticore 0.9.1")],
        b"order 1 paid".to_vec(),
    );
    assert_refused(&t, &out, 125, 415, "/problems/unsupported-media-type", "application/json", "Logstash message");
}

/// curl with a gzip file, as docs/INGEST.md shows it:
///
/// ```sh
/// gzip -c records.ndjson | curl -sS http://…/records -H "x-api-key: $KEY" \
///   -H 'Content-Type: application/x-ndjson' -H 'Content-Encoding: gzip' --data-binary @-
/// ```
///
/// curl (its manual, `--data-binary`; `-v` of curl 7.88.1 shows the same)
/// sends `User-Agent: curl/<version>`, `Accept: */*`, the `-H` headers in
/// order, and the bytes unchanged; without `-H 'Content-Type: …'`,
/// `--data-binary` sends `Content-Type: application/x-www-form-urlencoded`.
#[test]
fn curl_with_a_gzip_body_is_stored_and_its_form_default_is_415() {
    let t = Tally::start();
    let records: Vec<String> = (0..3).map(|i| format!("{{\"sensor\":\"t-{i}\",\"celsius\":21.{i}}}")).collect();
    let file: String = records.iter().map(|r| format!("{r}\n")).collect();
    let out = t.post(
        &[
            ("user-agent", "curl/7.88.1"),
            ("accept", "*/*"),
            ("x-api-key", KEY),
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
        gzip(file.as_bytes()),
    );
    assert_stored(&t, &out, 0, &records, "curl --data-binary gzip");

    let out = t.post(
        &[
            ("user-agent", "curl/7.88.1"),
            ("accept", "*/*"),
            ("x-api-key", KEY),
            ("content-encoding", "gzip"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        gzip(file.as_bytes()),
    );
    assert_refused(&t, &out, 3, 415, "/problems/unsupported-media-type", "application/x-ndjson", "curl without -H");
}

/// Python `requests` with a gzip body, as docs/INGEST.md shows it:
///
/// ```python
/// requests.post(url, data=gzip.compress(body), headers={"x-api-key": KEY,
///     "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
/// ```
///
/// `requests.utils.default_headers()` (requests 2.34): `User-Agent:
/// python-requests/<version>`, `Accept-Encoding: gzip, deflate`, `Accept:
/// */*`, `Connection: keep-alive`, then the given headers; `data=` bytes are
/// sent as they are, and with no `Content-Type` given none is sent.
#[test]
fn python_requests_with_a_gzip_body_is_stored_and_a_missing_content_type_is_415() {
    let t = Tally::start();
    let records: Vec<String> = (0..4).map(|i| format!("{{\"job\":{i},\"ok\":true}}")).collect();
    let body: String = records.iter().map(|r| format!("{r}\n")).collect();
    let defaults = [("user-agent", "python-requests/2.34.2"), ("accept-encoding", "gzip, deflate"), ("accept", "*/*")];
    let mut headers = defaults.to_vec();
    headers.extend([("x-api-key", KEY), ("content-type", "application/x-ndjson"), ("content-encoding", "gzip")]);
    let out = t.post(&headers, gzip(body.as_bytes()));
    assert_stored(&t, &out, 0, &records, "requests data=gzip");

    let mut headers = defaults.to_vec();
    headers.extend([("x-api-key", KEY), ("content-encoding", "gzip")]);
    let out = t.post(&headers, gzip(body.as_bytes()));
    assert_refused(&t, &out, 4, 415, "/problems/unsupported-media-type", "missing", "requests without Content-Type");
}
