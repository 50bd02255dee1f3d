//! The request-body path: `parse_body` (decode, depth scan, parse, per-record
//! checks) for both framings, under default and tiny limits. Beyond "no
//! panic", it checks what validation promises: every accepted record is a
//! JSON object within the limits, and a slice of the body (lossless).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::validate::{BodyFormat, Limits, parse_body};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = if selector & 1 == 0 { BodyFormat::Json } else { BodyFormat::NdJson };
    let limits = if selector & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_body_bytes: 4096,
            max_record_bytes: 64,
            max_batch_records: 3,
            max_depth: 2 + usize::from(selector >> 4),
        }
    };
    let Ok(parsed) = parse_body(body, format, &limits) else { return };
    let records = parsed.records();
    assert!(!records.is_empty() && records.len() <= limits.max_batch_records);
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    for r in records {
        assert!(r.len() <= limits.max_record_bytes, "record over the limit accepted");
        assert!(range.contains(&(r.as_ptr() as usize)), "record is not a slice of the body");
        // `IgnoredAny`, not `Value`: records keep numbers like 1e400 that
        // `Value` cannot hold, and that is the point of storing them raw.
        serde_json::from_str::<serde::de::IgnoredAny>(r).expect("accepted record is valid JSON");
        assert!(r.starts_with('{') && r.ends_with('}'), "accepted record is not an object");
    }
});
