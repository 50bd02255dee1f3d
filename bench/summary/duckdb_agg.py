"""DuckDB side of the weekly-summary comparison.

Reads the same NDJSON file as tally's aggregator with read_json_auto and
computes, in one pass, the per-field aggregates tally's summary.json has:
for every leaf path of `data` (nested structs flattened, as tally's dotted
paths): present/null counts; numbers: min, max, mean, stddev, p50/p90/p99;
strings: distinct estimate, top 10 values, min/max length; booleans:
true/false counts; arrays: length min/max/mean. Plus records per day and per
hour of received_at. Prints wall time and result size; peak RSS is measured
from outside with /usr/bin/time.

With EXPORT (a path ending in .ndjson.gz) it also does the rest of tally's
weekly job, as a DuckDB user would write it: a second statement copies every
record to a gzipped NDJSON file (COPY ... (FORMAT json, COMPRESSION gzip)).

    python duckdb_agg.py FILE [THREADS [EXPORT]]
"""
import json
import sys
import time

import duckdb

path = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
export = sys.argv[3] if len(sys.argv) > 3 else None
t0 = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
src = f"read_json_auto('{path}', format='newline_delimited')"

# Schema discovery (read_json_auto samples the file), then one SELECT.
cols = con.execute(f"DESCRIBE SELECT data FROM {src}").fetchall()
dtype = cols[0][1]


def struct_leaves(expr, t, depth=1):
    typ = duckdb.sql(f"SELECT NULL::{t} AS x").types[0]
    if typ.id == "struct" and depth < 4:
        for name, child in typ.children:
            yield from struct_leaves(f'{expr}."{name}"', str(child), depth + 1)
    else:
        yield expr, typ.id


aggs = ["count(*) AS records"]
names = []
for i, (expr, kind) in enumerate(struct_leaves("data", dtype)):
    names.append((i, expr, kind))
    aggs.append(f"count({expr}) AS c{i}")
    aggs.append(f"count(*) - count({expr}) AS n{i}")
    if kind in ("bigint", "double", "integer", "hugeint", "ubigint", "float", "decimal"):
        x = f"{expr}::DOUBLE"
        aggs += [f"min({x}) AS min{i}", f"max({x}) AS max{i}", f"avg({x}) AS mean{i}",
                 f"stddev_pop({x}) AS sd{i}", f"approx_quantile({x}, [0.5, 0.9, 0.99]) AS q{i}"]
    elif kind == "varchar":
        aggs += [f"approx_count_distinct({expr}) AS d{i}", f"approx_top_k({expr}, 10) AS top{i}",
                 f"min(length({expr})) AS minlen{i}", f"max(length({expr})) AS maxlen{i}"]
    elif kind == "boolean":
        aggs += [f"count_if({expr}) AS t{i}", f"count_if(NOT {expr}) AS f{i}"]
    elif kind == "list":
        aggs += [f"min(len({expr})) AS al{i}", f"max(len({expr})) AS ah{i}", f"avg(len({expr})) AS am{i}"]
aggs.append("histogram(date_trunc('day', received_at::TIMESTAMP)) AS per_day")
aggs.append("histogram(date_trunc('hour', received_at::TIMESTAMP)) AS per_hour")
row = con.execute(f"SELECT {', '.join(aggs)} FROM {src}").fetchone()
columns = [d[0] for d in con.description]
if export:
    con.execute(f"COPY (SELECT * FROM {src}) TO '{export}' (FORMAT json, COMPRESSION gzip)")
secs = time.perf_counter() - t0


def plain(v):
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


out = json.dumps(plain(dict(zip(columns, row))), default=str)
print(f"records={row[0]} secs={secs:.3f} records_per_s={row[0] / secs:.0f} threads={threads} "
      f"fields={len(names)} result_bytes={len(out)} duckdb={duckdb.__version__}"
      + (f" export={export}" if export else ""))
