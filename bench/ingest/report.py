"""Ingest TSV -> markdown table plus the ratios against the ceiling and the targets."""
import sys

rows = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    rows[f[0]] = dict(conns=f[1], per=int(f[2]), rps=float(f[3]), recs=float(f[4]), p50=float(f[5]),
                      p99=float(f[6]), non2xx=f[7], errors=f[8])
stored = sys.argv[2]
print("| server | load | requests/s | records/s | p50 ms | p99 ms | non-2xx | socket errors |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for name, r in rows.items():
    load = f"{r['conns']} conns, {r['per']} record{'s' if r['per'] > 1 else ''}/request"
    print(f"| {name} | {load} | {r['rps']:,.0f} | {r['recs']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
          f"| {r['non2xx']} | {r['errors']} |")
s, c = rows["tally-single"], rows["ceiling-single"]
b = rows["tally-batch"]
ok = lambda cond: "met" if cond else "MISSED"
print()
print(f"- single-record throughput: tally / ceiling = **{s['rps'] / c['rps']:.2f}×** (target ≥ 0.4×, issue 25: {ok(s["rps"] / c["rps"] >= 0.4)})")
print(f"- batch ingest: **{b['recs']:,.0f} records/s** (target ≥ 100,000: {ok(b['recs'] >= 100_000)}); "
      f"ceiling moves {rows['ceiling-batch']['recs']:,.0f} records/s of request bodies")
print(f"- p99 at 64 connections: **{s['p99']:.2f} ms** (target ≤ 10 ms: {ok(s['p99'] <= 10)})")
print(f"- records durably stored by tally during the runs (incl. warm-ups): {int(stored):,}")
