//! The properties the fuzz targets check, as plain functions, so that two
//! runners share them: `cargo fuzz` (fuzz/fuzz_targets, `scripts/fuzz`, in
//! `./scripts/test --full`) explores new inputs, and the corpus replay test
//! (`tests/fuzz_corpus.rs`, in every `cargo test`) runs every saved input —
//! the seeds in `fuzz/corpus/` and any reproducer in `fuzz/artifacts/` — on
//! the stable toolchain without libFuzzer. Each function panics when a
//! property fails.

use crate::idempotency::IdempotencyKey;
use crate::validate::{BodyFormat, Limits, parse_body};
use crate::{IsoWeek, RecordId};

/// The request-body path: `parse_body` (decode, depth scan, parse, per-record
/// checks) for both framings, under default and tiny limits. Beyond "no
/// panic", it checks what validation promises: every accepted record is a
/// JSON object within the limits, and a slice of the body (lossless).
///
/// The first byte selects the framing (bit 0) and the limits (bit 1; the
/// high nibble sets the tiny limits' depth); the rest is the body.
pub fn body(data: &[u8]) {
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
}

/// The path parsers: ISO weeks, record ids (ULIDs) and idempotency keys. An
/// accepted value must print back to a string that parses to the same value.
pub fn week_id(data: &[u8]) {
    if let Ok(key) = IdempotencyKey::parse(data) {
        assert!((1..=255).contains(&key.as_str().len()));
        assert_eq!(key.as_str().as_bytes(), data);
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(week) = IsoWeek::parse(s) {
        assert_eq!(IsoWeek::parse(&week.to_string()), Ok(week));
        assert!(week.start() < week.end());
        assert_eq!(IsoWeek::containing(week.start()), week);
    }
    if let Ok(id) = RecordId::parse(s) {
        assert_eq!(RecordId::parse(&id.to_string()), Ok(id));
        assert_eq!(RecordId::from_bytes(id.to_bytes()), id);
    }
}

/// A fuzz target's property check: panics when the input breaks it.
pub type Property = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` call them.
pub const TARGETS: &[(&str, Property)] = &[("body", body), ("week_id", week_id)];
