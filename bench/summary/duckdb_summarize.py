"""DuckDB's SUMMARIZE on the bench's NDJSON file: the yardstick of issue 16.

    python duckdb_summarize.py FILE [THREADS]

Runs `SUMMARIZE SELECT * FROM read_json_auto(FILE)` (schema inference from
a sample, then per column: min, max, approx_unique, avg, std, q25/q50/q75,
count, null_percentage) with THREADS threads (default 2) and prints one
`records=… secs=…` line. Less than tally's run computes (DuckDB summarizes
the three top-level columns, the nested `data` struct as one column), but it
is the command a DuckDB user types to profile a file. Peak RSS is measured
from outside with /usr/bin/time.
"""
import sys
import time

import duckdb

path = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
t0 = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
rows = con.execute(f"SUMMARIZE SELECT * FROM read_json_auto('{path}')").fetchall()
secs = time.perf_counter() - t0
columns = [d[0] for d in con.description]
count = rows[0][columns.index("count")]
print(f"records={count} secs={secs:.3f} records_per_s={count / secs:.0f} threads={threads} "
      f"columns={len(rows)} duckdb={duckdb.__version__}")
