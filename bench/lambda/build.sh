#!/usr/bin/env bash
# Builds both Lambda functions for section 3: the arm64 zips that ship
# (cargo-lambda, zig as the cross linker), for their sizes, then the x86_64
# (this machine's) release binaries that bench/lambda/run.sh starts. run-all
# runs this in the background once the CPU-bound measurements (ingest,
# summary) are done, so the builds overlap with the moto section, which
# mostly waits on moto. Output: $WORK/lambda-arm64/<function>/bootstrap.zip
# and $BIN/tally-api, $BIN/tally-weekly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${WORK:?}" "${BIN:?}"
arm="$WORK/lambda-arm64"
# The shipped profile (stripped), not run-all's profiling one. It shares the
# target dir of `sam build` (scripts/check-infra --with-build), whose arm64
# artifacts are the same crates and profile.
cd "$root"
env -u CARGO_PROFILE_RELEASE_STRIP -u CARGO_PROFILE_RELEASE_DEBUG \
    CARGO_TARGET_DIR="${BENCH_ARM_TARGET_DIR:-$PWD/target/lambda}" \
    cargo lambda build --release -p tally-lambda --arm64 --output-format zip --lambda-dir "$arm"
# x86_64: the host-triple release build of the same crate, in run-all's
# target dir, sharing the workspace's compiled dependencies (a cargo-lambda
# --x86-64 build would recompile all of them for an explicit target triple).
cargo build --release --locked -q -p tally-lambda
