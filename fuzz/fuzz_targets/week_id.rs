//! The path parsers: ISO weeks, record ids (ULIDs) and idempotency keys. An
//! accepted value must print back to a string that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::idempotency::IdempotencyKey;
use tally_core::{IsoWeek, RecordId};

fuzz_target!(|data: &[u8]| {
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
});
