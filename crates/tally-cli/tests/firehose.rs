//! Amazon Data Firehose deliveries to a real `tally serve` (SQLite), over a
//! socket, byte for byte as Firehose sends them: "Understand HTTP endpoint
//! delivery request and response specifications", Amazon Data Firehose
//! developer guide — `X-Amz-Firehose-Protocol-Version: 1.0`,
//! `X-Amz-Firehose-Request-Id` (kept across retries), `X-Amz-Firehose-Source-Arn`,
//! `X-Amz-Firehose-Access-Key` (here tally's API key), `Content-Type:
//! application/json`, `Content-Encoding: gzip` when the stream compresses,
//! body `{"requestId","timestamp","records":[{"data":<base64>}]}`. Each case
//! checks the status, Firehose's answer format, and the records in the
//! database file.

mod common;
mod rawhttp;

use std::io::Write;

use base64::Engine;
use std::time::Duration;

use common::{KEY, Server};
use rawhttp::{Body, authority, count_records, request, send};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn envelope(id: &str, records: &[&[u8]]) -> Vec<u8> {
    let records: Vec<String> = records.iter().map(|r| format!("{{\"data\":\"{}\"}}", b64(r))).collect();
    format!("{{\"requestId\":\"{id}\",\"timestamp\":1795620600000,\"records\":[{}]}}", records.join(",")).into_bytes()
}

fn headers(id: &str, gzip: bool) -> Vec<(String, Vec<u8>)> {
    let mut h: Vec<(String, Vec<u8>)> = [
        ("content-type", "application/json"),
        ("x-amz-firehose-protocol-version", "1.0"),
        ("x-amz-firehose-request-id", id),
        ("x-amz-firehose-source-arn", "arn:aws:firehose:us-east-1:123456789012:deliverystream/tally"),
        ("x-amz-firehose-access-key", KEY),
        ("user-agent", "Amazon Kinesis Data Firehose Agent/1.0"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
    .collect();
    if gzip {
        h.push(("content-encoding".into(), b"gzip".to_vec()));
    }
    h
}

#[test]
fn firehose_deliveries_are_stored_once_and_refusals_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    let post = |id: &str, body: Vec<u8>, gzip: bool| {
        let body = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        } else {
            body
        };
        let res =
            send(&addr, request("POST", "/firehose", &headers(id, gzip), &Body::Sized(body)), Duration::from_secs(20))
                .expect("an answer");
        assert_eq!(res.header("content-type"), Some("application/json"), "{}", res.text());
        assert!(res.header("content-length").is_some(), "Firehose needs Content-Length");
        let json = res.json().expect("a JSON answer");
        assert_eq!(json["requestId"], id, "{json}");
        assert!(json["timestamp"].is_i64(), "{json}");
        (res.status, json)
    };

    // A gzip delivery: an object and an aggregated NDJSON record.
    let first = envelope("req-1", &[b"{\"a\":1}", b"{\"b\":2}\n{\"c\":3}\n"]);
    let (status, json) = post("req-1", first.clone(), true);
    assert_eq!(status, 200, "{json}");
    assert_eq!(count_records(dir.path()), 3);
    // Firehose retries it, uncompressed this time and with a new timestamp: 200, nothing new.
    let retry = String::from_utf8(first).unwrap().replace("1795620600000", "1795620700000");
    let (status, json) = post("req-1", retry.into_bytes(), false);
    assert_eq!(status, 200, "{json}");
    assert_eq!(count_records(dir.path()), 3, "a retried delivery stored records twice");

    for (name, id, body, status, message) in [
        (
            "bad base64",
            "req-2",
            br#"{"requestId":"req-2","timestamp":1,"records":[{"data":"e30="},{"data":"@@@"}]}"#.to_vec(),
            400,
            "records[1].data is not valid base64",
        ),
        ("a record that is not an object", "req-3", envelope("req-3", &[b"{}", b"\"text\""]), 422, "records[1].data"),
    ] {
        let (got, json) = post(id, body, false);
        assert_eq!(got, status, "{name}: {json}");
        assert!(json["errorMessage"].as_str().unwrap_or_default().contains(message), "{name}: {json}");
        assert_eq!(count_records(dir.path()), 3, "{name}: a refused delivery stored something");
    }
}
