//! Replays every saved fuzz input — the seeds in `fuzz/corpus/<target>/` and
//! any crash reproducer left in `fuzz/artifacts/<target>/` — through the same
//! property functions the cargo-fuzz targets run (`tally_core::testing::fuzz`).
//! This is the fast form of the fuzzing check, on the stable toolchain with
//! no libFuzzer build; `./scripts/test --full` also explores new inputs.

use std::path::{Path, PathBuf};

use tally_core::testing::fuzz::TARGETS;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("readable fuzz directory").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_saved_fuzz_input_keeps_its_properties() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (name, property) in TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(name));
        // The seeds are the point of this test: an empty or moved corpus must fail it.
        assert!(corpus.len() >= 10, "fuzz/corpus/{name} has {} inputs; expected the checked-in seeds", corpus.len());
        for path in corpus.iter().chain(&inputs(&fuzz.join("artifacts").join(name))) {
            let data = std::fs::read(path).expect("readable fuzz input");
            if std::panic::catch_unwind(|| property(&data)).is_err() {
                panic!("fuzz target {name} fails on {}: reproduce with `scripts/fuzz` or this test", path.display());
            }
        }
    }
}
