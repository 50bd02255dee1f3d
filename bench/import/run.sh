#!/usr/bin/env bash
# Import (restore) speed into SQLite, on the same generated week of export
# lines ({"id","received_at","data"}, ~250-byte nested records, from
# examples/bench_fill), $BENCH_IMPORT_SIZE records (default 1M):
#   tally import      release binary, fresh data dir: every line parsed and
#                     validated as the API would, restored in transactions of
#                     5000 (WAL, synchronous=FULL), then the count checked
#   Python sqlite3    the same lines json-parsed and inserted with executemany
#                     into the same schema (WAL, synchronous=FULL, one
#                     transaction per 5000) — no validation: a floor, not a peer
#   DuckDB            read_json of the same file into a table (2 threads)
# Target (issue 13): tally ≥ 200,000 records/s. Appends markdown to $RESULTS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
: "${RESULTS:?}" "${WORK:?}" "${BIN:?}" "${PY:?}"
n="${BENCH_IMPORT_SIZE:-1000000}"
data="$WORK/import"
rm -rf "$data" && mkdir -p "$data"
"$BIN/examples/bench_fill" "$data/fill" "$n" 2026-W47 "$data/week.ndjson" 2>"$data/fill.log"
rm -rf "$data/fill"
echo "generated $n export lines, $(du -m "$data/week.ndjson" | cut -f1) MB" >&2
cat "$data/week.ndjson" >/dev/null

timed "$data/tally.log" "$BIN/tally" import "$data/week.ndjson" --data-dir "$data/tally"
t_wall=$WALL t_rss=$RSS_MB
grep -q "imported $n, already present 0" "$data/tally.log" || { cat "$data/tally.log" >&2; exit 1; }
stored="$(sqlite3 "$data/tally/tally.db" 'SELECT count(*) FROM records')"
[[ "$stored" == "$n" ]] || { echo "tally import stored $stored of $n" >&2; exit 1; }

timed "$data/py.log" "$PY" - "$data/week.ndjson" "$data/py.db" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, received_at TEXT NOT NULL, data TEXT NOT NULL)")
batch = []
def flush():
    db.execute("BEGIN"); db.executemany("INSERT INTO records (id, received_at, data) VALUES (?, ?, ?)", batch); db.execute("COMMIT"); batch.clear()
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    batch.append((r["id"], r["received_at"], json.dumps(r["data"], separators=(",", ":"))))
    if len(batch) == 5000: flush()
if batch: flush()
print("rows", db.execute("SELECT count(*) FROM records").fetchone()[0])
PY
p_wall=$WALL p_rss=$RSS_MB

timed "$data/duck.log" "$PY" -c "
import duckdb, sys
c = duckdb.connect('$data/duck.db'); c.execute('SET threads = 2')
c.execute(\"CREATE TABLE records AS SELECT * FROM read_json('$data/week.ndjson', format = 'newline_delimited', columns = {'id': 'VARCHAR', 'received_at': 'VARCHAR', 'data': 'JSON'})\")
print('rows', c.execute('SELECT count(*) FROM records').fetchone()[0])
"
d_wall=$WALL d_rss=$RSS_MB

rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):,.0f}')" "$n" "$1"; }
t_rate="$(rate "$t_wall")"
md "| records | tally import (validated, restored into SQLite) | Python sqlite3 executemany (no validation) | DuckDB read_json into a table | tally / Python | tally / DuckDB |"
md "|---:|---|---|---|---:|---:|"
md "| $(printf "%'d" "$n") | $t_wall s, **$t_rate rec/s**, $t_rss MB | $p_wall s, $(rate "$p_wall") rec/s, $p_rss MB | $d_wall s, $(rate "$d_wall") rec/s, $d_rss MB | **$(ratio "$t_wall" "$p_wall")×** | **$(ratio "$t_wall" "$d_wall")×** |"
md ""
md "- target ≥ 200,000 records/s: $(python3 -c "import sys; print('met' if int(sys.argv[1].replace(',', '')) >= 200000 else 'MISSED')" "$t_rate") (wall time including process start and the final count check; ratios are time ratios, below 1 means tally is faster)"
md ""
rm -rf "$data"
