#!/usr/bin/env bash
# The original app's weekly job (full Scan into memory + one JSON dump to S3,
# bench/summary/scan_dump.py) vs tally's weekly run on DynamoDB (queries of
# the week's 7 × 16 partitions, streamed aggregation and export to S3), on
# the same table in moto. Run under scripts/with-moto. Appends to $RESULTS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
: "${RESULTS:?}" "${WORK:?}" "${BIN:?}" "${PY:?}" "${TALLY_MOTO_ENDPOINT:?run under scripts/with-moto}"
n="${BENCH_MOTO_RECORDS:-100000}"
week=2026-W47
read -r table bucket < <("$BIN/examples/bench_fill_dynamodb" "$n" "$week" 2>"$WORK/moto-fill.log")
cat "$WORK/moto-fill.log" >&2

timed "$WORK/scan.log" env AWS_ENDPOINT_URL="$TALLY_MOTO_ENDPOINT" "$PY" "$here/scan_dump.py" "$table" "$bucket"
p_wall=$WALL p_rss=$RSS_MB
timed "$WORK/tally-ddb.log" "$BIN/tally" summarize --store dynamodb --table "$table" --bucket "s3://$bucket" \
    --endpoint-url "$TALLY_MOTO_ENDPOINT" --region us-east-1 --week "$week" \
    --aws-attempt-timeout-secs 300
t_wall=$WALL t_rss=$RSS_MB
grep -h "items=" "$WORK/scan.log" >&2
md "| $(printf "%'d" "$n") records in moto | wall | peak RSS |"
md "|---|---:|---:|"
md "| original app: full Scan + one JSON dump to S3 (Python, boto3) | ${p_wall} s | ${p_rss} MB |"
md "| tally summarize --store dynamodb (week queries, streamed, 4 objects to S3) | ${t_wall} s | ${t_rss} MB |"
md ""
md "- tally / original: wall **$(ratio "$t_wall" "$p_wall")×**, peak RSS **$(ratio "$t_rss" "$p_rss")×**. Both are bound by moto's per-request cost (one Python process emulating AWS on this machine), so the wall times say more about request counts than about real DynamoDB; the memory figures carry over: the Scan approach holds the whole table, tally holds one page per partition."
