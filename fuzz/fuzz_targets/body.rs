//! The request-body path; the properties are in `tally_core::testing::fuzz::body`,
//! shared with the corpus replay test that every `cargo test` runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_core::testing::fuzz::body(data));
