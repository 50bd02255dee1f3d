#!/usr/bin/env bash
# Weekly summary at each size in $BENCH_SIZES (default 1M and 4M varied,
# nested records of ~250 bytes, from examples/bench_fill), all on the same
# generated data, in one invocation:
#   tally summarize   the full weekly run from the SQLite store (read the week,
#                     aggregate, gzip the NDJSON export, JSON + HTML +
#                     manifest), with --threads 1 and --threads 2
#   DuckDB SUMMARIZE  `SUMMARIZE SELECT * FROM read_json_auto(FILE)` on the
#                     NDJSON file, 2 threads: issue 16's yardstick
#   tally aggregator  examples/aggregate_ndjson on the NDJSON file, 1 and 2
#                     threads (with the workers' CPU time: records/s per core)
#   DuckDB            read_json_auto + the same per-field aggregates as tally's
#                     summary.json (2 threads)
#   DuckDB, same job  the aggregates plus a gzipped NDJSON export of every
#                     record, like tally's run (which also writes HTML)
# Wall time, CPU time and peak RSS from /usr/bin/time -v. Appends markdown to
# $RESULTS and one line per size to $WORK/summary.tsv (bench/cost.py reads
# its first two columns).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
: "${RESULTS:?}" "${WORK:?}" "${BIN:?}" "${PY:?}"
week=2026-W47
sizes="${BENCH_SIZES:-1000000 4000000}"
# th N: N with thousands separators (printf's %'d has none in the C locale)
th() { python3 -c "import sys; print(f'{int(sys.argv[1]):,}')" "$1"; }
rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):,.0f}')" "$1" "$2"; }
cell() { echo "$1 s, $(rate "$n" "$1") rec/s, $2 CPU-s, **$3 MB**"; }
# kv LOG KEY: the value of KEY=… in LOG's records= line
kv() { grep -ho "$2=[^ ]*" "$1" | head -1 | cut -d= -f2; }

t1_rows=() t2_rows=()
for n in $sizes; do
    data="$WORK/sum-$n"
    rm -rf "$data" && mkdir -p "$data"
    "$BIN/examples/bench_fill" "$data" "$n" "$week" "$data/week.ndjson" 2>"$data/fill.log"
    echo "filled: $(cat "$data/fill.log"); NDJSON $(du -m "$data/week.ndjson" | cut -f1) MB" >&2
    sync
    # Page cache warm for every side alike: read the store and the file once.
    cat "$data/tally.db" "$data/week.ndjson" >/dev/null

    timed "$data/summarize1.log" "$BIN/tally" summarize --data-dir "$data" --out "$data/bucket1" --week "$week" --threads 1
    s1_wall=$WALL s1_rss=$RSS_MB s1_cpu=$CPU_S
    timed "$data/summarize.log" "$BIN/tally" summarize --data-dir "$data" --out "$data/bucket" --week "$week" --threads 2
    s_wall=$WALL s_rss=$RSS_MB s_cpu=$CPU_S
    # Same records, same outputs whatever the thread count (the export and
    # summary.json; the manifest and HTML carry the generation time).
    for f in records.ndjson.gz summary.json; do
        cmp -s "$data/bucket1/summaries/$week/$f" "$data/bucket/summaries/$week/$f" ||
            { echo "$f differs between --threads 1 and --threads 2" >&2; exit 1; }
    done
    # The export is a multi-member .gz: DuckDB must read every record of it.
    "$PY" "$here/duckdb_read_export.py" "$data/bucket/summaries/$week/records.ndjson.gz" "$n" >&2
    timed "$data/duck-summarize.log" "$PY" "$here/duckdb_summarize.py" "$data/week.ndjson" 2
    ds_wall=$WALL ds_rss=$RSS_MB ds_cpu=$CPU_S
    timed "$data/agg1.log" "$BIN/examples/aggregate_ndjson" "$data/week.ndjson" "$week" 1
    a1_wall=$WALL a1_rss=$RSS_MB a1_cpu=$CPU_S a1_per_core=$(kv "$data/agg1.log" records_per_cpu_s)
    timed "$data/agg.log" "$BIN/examples/aggregate_ndjson" "$data/week.ndjson" "$week" 2 "$data/agg-summary.json"
    a_wall=$WALL a_rss=$RSS_MB a_cpu=$CPU_S a_per_core=$(kv "$data/agg.log" records_per_cpu_s)
    timed "$data/duck.log" "$PY" "$here/duckdb_agg.py" "$data/week.ndjson" 2
    d_wall=$WALL d_rss=$RSS_MB d_cpu=$CPU_S
    timed "$data/duck-full.log" "$PY" "$here/duckdb_agg.py" "$data/week.ndjson" 2 "$data/duck-export.ndjson.gz"
    f_wall=$WALL f_rss=$RSS_MB f_cpu=$CPU_S
    echo "gzip exports: tally $(du -m "$data/bucket/summaries/$week/records.ndjson.gz" | cut -f1) MB, DuckDB $(du -m "$data/duck-export.ndjson.gz" | cut -f1) MB" >&2
    grep -h "records=" "$data/agg1.log" "$data/agg.log" "$data/duck-summarize.log" "$data/duck.log" >&2
    echo "load average after $n: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    t1_rows+=("| $(th "$n") | $(cell "$s1_wall" "$s1_cpu" "$s1_rss") | $(cell "$s_wall" "$s_cpu" "$s_rss") | $(cell "$ds_wall" "$ds_cpu" "$ds_rss") | **$(ratio "$s_wall" "$ds_wall")×** | $(ratio "$s1_wall" "$ds_wall")× | $(ratio "$s1_wall" "$s_wall")× |")
    t2_rows+=("| $(th "$n") | $(cell "$a1_wall" "$a1_cpu" "$a1_rss") | $(cell "$a_wall" "$a_cpu" "$a_rss") | $(th "$a1_per_core") / $(th "$a_per_core") | $(cell "$d_wall" "$d_cpu" "$d_rss") | $(cell "$f_wall" "$f_cpu" "$f_rss") | **$(ratio "$a_wall" "$d_wall")×** | **$(ratio "$s_wall" "$f_wall")×** | **$(ratio "$s_wall" "$d_wall")×** |")
    # Columns 1-9 keep their meaning from before (tally summarize = the
    # 2-thread run, this machine's default); the rest were added for issue 16.
    echo "$n $s_wall $s_rss $a_wall $a_rss $d_wall $d_rss $f_wall $f_rss $s1_wall $s1_rss $ds_wall $ds_rss $a1_wall $a1_rss $a1_per_core $a_per_core $s1_cpu $s_cpu $ds_cpu" >>"$WORK/summary.tsv"
    # Keep the disk footprint down: 4M records are ~2.5 GB across store and file.
    rm -rf "$data"
done

md "Issue 16's targets: tally's whole weekly run (store → 4 objects) against DuckDB's \`SUMMARIZE\` of the same records as an NDJSON file, both on 2 cores."
md ""
md "| records | tally summarize --threads 1 | tally summarize --threads 2 | DuckDB SUMMARIZE (2 threads) | tally 2 threads / SUMMARIZE | tally 1 thread / SUMMARIZE | speed-up 1 → 2 threads |"
md "|---:|---|---|---|---:|---:|---:|"
for r in "${t1_rows[@]}"; do md "$r"; done
md ""
md "The aggregator alone on the NDJSON file, and the earlier comparisons with DuckDB computing the same per-field statistics:"
md ""
md "| records | tally aggregator, 1 thread | tally aggregator, 2 threads | aggregator records per CPU-second (1 / 2 threads) | DuckDB aggregates on NDJSON | DuckDB aggregates + gzip NDJSON export | tally agg (2 threads) / DuckDB aggregates | tally summarize / DuckDB same job | tally summarize / DuckDB aggregates |"
md "|---:|---|---|---|---|---|---:|---:|---:|"
for r in "${t2_rows[@]}"; do md "$r"; done
md ""
md "(wall time / records per second / user + system CPU-seconds of all threads / peak RSS; every run of a row reads the same generated records; \"tally summarize\" in the last two columns is the 2-thread run.)"
md ""

# The aggregator alone (records already in memory, one core, no JSON line
# parsing), from the whole-run example.
"$BIN/examples/summarize_generated" "$WORK/sg-out" 300000 >"$WORK/sg.log" 2>&1
agg_alone="$(awk '/aggregator alone/ {print $3}' "$WORK/sg.log")"
agg_cpu="$(awk '/aggregator alone/ {print $6}' "$WORK/sg.log")"
md "- aggregator alone, one core, 300k records in memory (examples/summarize_generated): **$(th "$agg_cpu") records per CPU-second** ($(th "$agg_alone") records/s wall)"
sed -n 's/^/    /; /alone\|whole run/p' "$WORK/sg.log" | tee -a "$RESULTS" >/dev/null
python3 - "$WORK/summary.tsv" "$agg_cpu" <<'PY' | tee -a "$RESULTS"
import os, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
# tally's default --threads: half the cores, at least 1 (summary::available_threads).
default_threads = max(1, -(-len(os.sched_getaffinity(0)) // 2))
in_memory = float(sys.argv[2])
ok = lambda c: "met" if c else "MISSED"
vs_summarize = max(r[1] / r[11] for r in rows)
vs_summarize1 = max(r[9] / r[11] for r in rows)
vs_default = vs_summarize1 if default_threads == 1 else vs_summarize
print(f"- tally's whole weekly run at its default thread count here ({default_threads}) vs DuckDB `SUMMARIZE`: "
      f"worst **{vs_default:.2f}×** (target ≤ 0.6×: {ok(vs_default <= 0.6)}); "
      f"1 thread: worst {vs_summarize1:.2f}×, 2 threads: worst {vs_summarize:.2f}×")
per_core = min(r[15] for r in rows)
print(f"- aggregator per core: **{per_core:,.0f} records per CPU-second** on NDJSON lines (1 thread, JSON line "
      f"parsing included; worst size), {in_memory:,.0f} in memory (target ≥ 1,500,000: "
      f"{ok(min(per_core, in_memory) >= 1.5e6)} on NDJSON, {ok(in_memory >= 1.5e6)} in memory)")
scale_run = [r[9] / r[1] for r in rows]
scale_agg = [r[13] / r[3] for r in rows]
print(f"- scaling 1 → 2 threads (wall time ratio; 2.0 would be perfect): whole run "
      f"{', '.join(f'{x:.2f}×' for x in scale_run)}; aggregator {', '.join(f'{x:.2f}×' for x in scale_agg)} "
      f"(per size, smallest first)")
peak = max(max(r[2], r[10]) for r in rows)
flat = max(rows[-1][2] / rows[0][2], rows[-1][10] / rows[0][10]) if len(rows) > 1 else 1.0
print(f"- tally summarize peak RSS (1 and 2 threads): max **{peak:.1f} MB** (target ≤ 64 MB: {ok(peak <= 64)}); "
      f"largest/smallest size = {flat:.2f}× (flat: {ok(flat <= 1.15)})")
aggw = max(r[3] / r[5] for r in rows)
same = max(r[1] / r[7] for r in rows)
worst = max(r[1] / r[5] for r in rows)
print(f"- tally aggregator vs DuckDB computing the same statistics: worst **{aggw:.2f}×** (≤ 1.0×: {ok(aggw <= 1.0)})")
print(f"- tally's whole run vs DuckDB doing the same job (aggregates + gzip NDJSON export): worst **{same:.2f}×** "
      f"(≤ 1.0×: {ok(same <= 1.0)}); vs DuckDB's aggregates alone (no export): worst **{worst:.2f}×** "
      f"(≤ 1.0×: {ok(worst <= 1.0)})")
PY
