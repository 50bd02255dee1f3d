//! CHANGELOG.md names the version `/health` reports.

#[test]
fn the_changelog_s_latest_entry_is_the_served_version() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../CHANGELOG.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let latest = text.lines().find(|l| l.starts_with("## [")).expect("CHANGELOG.md has a `## [version]` entry");
    assert!(
        latest.contains(tally_core::VERSION),
        "CHANGELOG.md's latest entry {latest:?} does not name version {} (the workspace version served by /health); \
         add an entry for it",
        tally_core::VERSION
    );
}
