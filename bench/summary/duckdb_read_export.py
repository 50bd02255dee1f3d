"""Checks that DuckDB reads tally's export (a multi-member .gz) whole.

    python duckdb_read_export.py RECORDS_NDJSON_GZ EXPECTED_RECORDS

Reads the file with `read_json(..., format='newline_delimited')` (gzip
detected from the extension) and exits non-zero unless it holds
EXPECTED_RECORDS lines with distinct ids.
"""
import sys

import duckdb

path, expected = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
count, ids = con.execute(
    f"SELECT count(*), count(DISTINCT id) FROM read_json('{path}', format='newline_delimited', "
    "columns={id: 'VARCHAR', received_at: 'VARCHAR', data: 'JSON'})"
).fetchone()
print(f"duckdb read {count} records ({ids} distinct ids) from {path}")
sys.exit(0 if count == ids == expected else 1)
