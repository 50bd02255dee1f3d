#!/usr/bin/env bash
# Local ingest: tally serve (SQLite, WAL, synchronous=FULL, group commit) vs a
# bare axum handler answering 201, both loaded by wrk from this machine.
#   single: one ~250-byte record per POST /records, 64 connections
#   batch:  1000 records (JSON array) per POST, 8 connections
# Appends a markdown table to $RESULTS and prints the ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
: "${RESULTS:?}" "${WORK:?}" "${BIN:?}"
duration="${BENCH_INGEST_SECS:-10}"

python3 "$here/bodies.py" "$WORK/one.json" "$WORK/batch.json"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# load NAME PORT BODY CONNECTIONS RECORDS_PER_REQUEST -> one markdown row
load() {
    local name="$1" port="$2" body="$3" conns="$4" per="$5" log="$WORK/wrk-$1.log"
    # a short warm-up, then the measured run
    BODY_FILE="$body" wrk -t2 -c"$conns" -d2s -s "$here/post.lua" "http://127.0.0.1:$port/records" >/dev/null
    BODY_FILE="$body" wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$here/post.lua" \
        "http://127.0.0.1:$port/records" >"$log"
    python3 "$here/parse_wrk.py" "$log" "$name" "$conns" "$per" | tee -a "$WORK/ingest.tsv"
}

# The ceiling.
port="$(free_port)"
"$BIN/examples/bench_ceiling" "127.0.0.1:$port" 2>"$WORK/ceiling.log" &
pids+=($!)
wait_port "$port"
load ceiling-single "$port" "$WORK/one.json" 64 1 >/dev/null
load ceiling-batch "$port" "$WORK/batch.json" 8 1000 >/dev/null
kill "${pids[-1]}"

# tally serve, full durability, a fresh data dir.
port="$(free_port)"
rm -rf "$WORK/serve-data"
"$BIN/tally" serve --listen "127.0.0.1:$port" --data-dir "$WORK/serve-data" --no-schedule \
    2>"$WORK/serve.log" &
pids+=($!)
wait_port "$port"
load tally-single "$port" "$WORK/one.json" 64 1 >/dev/null
load tally-batch "$port" "$WORK/batch.json" 8 1000 >/dev/null
stored="$(sqlite3 "$WORK/serve-data/tally.db" 'SELECT count(*) FROM records')"
kill "${pids[-1]}"

python3 "$here/report.py" "$WORK/ingest.tsv" "$stored" | tee -a "$RESULTS"
