#!/usr/bin/env bash
# Lambda cold start: tally-api and tally-weekly (arm64 zips from cargo-lambda,
# the sizes that ship; x86_64 builds to run here), then bench/lambda/emulator.py
# starts each bootstrap against a local Runtime API and measures init, first
# invocation and RSS, next to a Python 3 boto3 handler doing the same put.
# The functions talk to moto. Run under scripts/with-moto. Appends to $RESULTS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
: "${RESULTS:?}" "${WORK:?}" "${PY:?}" "${BIN:?}" "${TALLY_MOTO_ENDPOINT:?run under scripts/with-moto}"
runs="${BENCH_LAMBDA_RUNS:-7}"

# Both architectures' builds, from bench/lambda/build.sh: run-all has run it
# in the background (BENCH_LAMBDA_BUILT=1); alone, build here.
if [[ "${BENCH_LAMBDA_BUILT:-}" != 1 ]]; then
    "$here/build.sh" >"$WORK/lambda-build.log" 2>&1 || { tail -30 "$WORK/lambda-build.log" >&2; exit 1; }
fi
# x86_64 (this machine): stripped and zipped the way cargo-lambda packages a bootstrap.
x86="$WORK/lambda-x86_64"
for f in tally-api tally-weekly; do
    mkdir -p "$x86/$f"
    strip -o "$x86/$f/bootstrap" "$BIN/$f"
    (cd "$x86/$f" && python3 -c 'import sys, zipfile; z = zipfile.ZipFile("bootstrap.zip", "w", zipfile.ZIP_DEFLATED); z.write("bootstrap"); z.close()')
done
size() { python3 -c "import os, sys; print(f'{os.path.getsize(sys.argv[1]) / 1048576:.2f}')" "$1"; }

# A table and bucket for the functions (tally's key schema).
export AWS_ENDPOINT_URL="$TALLY_MOTO_ENDPOINT"
names="$("$PY" - <<'PY'
import uuid, boto3
t = f"tally-bench-{uuid.uuid4().hex[:8]}"
boto3.client("dynamodb").create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
boto3.client("s3").create_bucket(Bucket=t)
print(t)
PY
)"
export TABLE_NAME="$names" BUCKET_NAME="$names"
export AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true RUST_LOG=warn AWS_LAMBDA_LOG_LEVEL=WARN
emu() { "$PY" "$here/emulator.py" --runs "$runs" "$@"; }
api="$(emu --label tally-api --event "$root/events/apigw-post-records.json" -- "$x86/tally-api/bootstrap")"
weekly="$(emu --label tally-weekly --event "$root/events/schedule-week.json" -- "$x86/tally-weekly/bootstrap")"
python="$(cd "$here/python" && emu --label python-boto3 --event "$root/events/apigw-post-records.json" -- "$PY" bootstrap.py)"
echo "$api" >&2; echo "$weekly" >&2; echo "$python" >&2

"$PY" - "$api" "$weekly" "$python" \
    "$(size "$WORK/lambda-arm64/tally-api/bootstrap.zip")" "$(size "$WORK/lambda-arm64/tally-weekly/bootstrap.zip")" \
    "$(size "$WORK/lambda-x86_64/tally-api/bootstrap.zip")" "$(size "$WORK/lambda-x86_64/tally-weekly/bootstrap.zip")" \
    "$runs" <<'PY' | tee -a "$RESULTS"
import json, sys
api, weekly, py = (json.loads(a) for a in sys.argv[1:4])
za, zw, xa, xw = map(float, sys.argv[4:8])
runs = sys.argv[8]
ok = lambda c: "met" if c else "MISSED"
print(f"| function (x86_64 here, {runs} cold starts, medians) | init: spawn → first `next` | first invocation | warm invocation | peak RSS | response | zip arm64 | zip x86_64 |")
print("|---|---:|---:|---:|---:|---|---:|---:|")
print(f"| tally-api (POST /records → PutItem) | {api['init_ms']} ms | {api['first_ms']} ms | {api['warm_ms']} ms | {api['rss_mb']} MB | {api['status']} | {za:.2f} MB | {xa:.2f} MB |")
print(f"| tally-weekly (empty week → 4 objects) | {weekly['init_ms']} ms | {weekly['first_ms']} ms | {weekly['warm_ms']} ms | {weekly['rss_mb']} MB | {weekly['status']} | {zw:.2f} MB | {xw:.2f} MB |")
print(f"| Python 3 + boto3 (same PutItem) | {py['init_ms']} ms | {py['first_ms']} ms | {py['warm_ms']} ms | {py['rss_mb']} MB | {py['status']} | – | – |")
print()
worst_init = max(api["init_ms"], weekly["init_ms"])
worst_rss = max(api["rss_mb"], weekly["rss_mb"])
print(f"- init: tally-api {api['init_ms']} ms, tally-weekly {weekly['init_ms']} ms (target ≤ 20 ms: {ok(worst_init <= 20)})")
print(f"- Python init / tally-api init = **{py['init_ms'] / api['init_ms']:.1f}×** (target ≥ 5×: {ok(py['init_ms'] / api['init_ms'] >= 5)}); "
      f"first invocation {py['first_ms'] / api['first_ms']:.1f}×")
print(f"- RSS: max {worst_rss} MB (target ≤ 30 MB: {ok(worst_rss <= 30)}); Python {py['rss_mb']} MB")
print(f"- arm64 zips: tally-api {za:.2f} MB, tally-weekly {zw:.2f} MB (target ≤ 8 MB: {ok(max(za, zw) <= 8)})")
print(f"- all init samples (ms): tally-api {api['init_all_ms']}, tally-weekly {weekly['init_all_ms']}, python {py['init_all_ms']}")
PY
# For docs/COST.md: the measured figures, machine-readable.
printf '%s\n%s\n%s\n' "$api" "$weekly" "$python" >"$WORK/lambda.jsonl"
