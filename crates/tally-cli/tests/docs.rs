//! README and `--help` agree: every flag `tally serve` and `tally summarize`
//! offer is in README's configuration table, and every flag the table lists
//! exists.
//!
//! The table is the one under the `## Configuration` heading; its first
//! column holds the flags in backticks, e.g.
//! `` | `--listen` | `TALLY_LISTEN` | `127.0.0.1:8080` | ... | ``.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Flags every clap command has; README need not list them.
const IMPLICIT: [&str; 2] = ["--help", "--version"];

/// The long flags in `tally <args> --help`.
fn clap_flags(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tally")).args(args).arg("--help").output().expect("tally runs");
    assert!(out.status.success(), "tally {args:?} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        // Option lines start with `-x, --long` or `--long`, indented a little;
        // wrapped descriptions that mention a flag are indented much further.
        if !trimmed.starts_with('-') || line.len() - trimmed.len() > 8 {
            continue;
        }
        for token in trimmed.split([' ', ',']).filter(|t| !t.is_empty()) {
            if !token.starts_with('-') {
                break;
            }
            if let Some(flag) = long_flag(token) {
                flags.insert(flag);
            }
        }
    }
    flags.retain(|f| !IMPLICIT.contains(&f.as_str()));
    flags
}

/// `--max-depth=<N>` or `--listen` → `--max-depth` / `--listen`.
fn long_flag(token: &str) -> Option<String> {
    let rest = token.strip_prefix("--")?;
    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

/// The flags in the first column of the table under `## Configuration`.
fn readme_flags() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; README.md should document the flags", path.display()));
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim_end() != "## Configuration")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    assert!(
        !section.is_empty(),
        "README.md has no `## Configuration` section listing the flags of tally serve/summarize"
    );
    let mut flags = BTreeSet::new();
    for line in section.iter().filter(|l| l.trim_start().starts_with('|')) {
        let first_cell = line.trim_start().trim_start_matches('|').split('|').next().unwrap_or_default();
        // Code spans are the odd pieces between backticks.
        for code in first_cell.split('`').skip(1).step_by(2) {
            for token in code.split_whitespace() {
                if let Some(flag) = long_flag(token) {
                    flags.insert(flag);
                }
            }
        }
    }
    assert!(!flags.is_empty(), "README.md's `## Configuration` section has no table with flags in its first column");
    flags
}

#[test]
fn the_help_output_is_parsed() {
    let serve = clap_flags(&["serve"]);
    for flag in ["--listen", "--data-dir", "--log-format"] {
        assert!(serve.contains(flag), "{flag} not found in `tally serve --help`: {serve:?}");
    }
    assert_eq!(long_flag("--max-depth=<N>").as_deref(), Some("--max-depth"));
    assert_eq!(long_flag("-h"), None);
}

#[test]
fn readme_lists_exactly_the_flags_clap_offers() {
    let mut clap = clap_flags(&["serve"]);
    clap.extend(clap_flags(&["summarize"]));
    let readme = readme_flags();
    let undocumented: Vec<_> = clap.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&clap).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README.md's configuration table and `tally serve/summarize --help` disagree.\n\
         In --help but not in README: {undocumented:?}\n\
         In README but not in --help: {unknown:?}\n\
         Update the table under `## Configuration` (first column: the flags in backticks)."
    );
}
