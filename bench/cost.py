"""docs/COST.md from the measured Lambda durations and memory (bench/lambda)
and the weekly-run throughput (bench/summary), with the arithmetic shown.

    python cost.py LAMBDA_JSONL SUMMARY_TSV > docs/COST.md

Prices are list prices assumed for us-east-1 (see PRICES); the bench machine
has no network, so they are assumptions to check against the AWS pricing
pages before relying on the totals.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRICES_AS_OF = "2025-06 (list prices as last known to the author; not fetched: verify before use)"
PRICES = {
    "apigw_rest_per_m": 3.50,          # API Gateway REST API, per million requests (first 333M)
    "lambda_arm_gb_s": 0.0000133334,   # Lambda arm64, per GB-second
    "lambda_req_per_m": 0.20,          # Lambda, per million requests
    "ddb_wru_per_m": 0.625,            # DynamoDB on-demand, per million write request units
    "ddb_rru_per_m": 0.125,            # DynamoDB on-demand, per million read request units
    "ddb_gb_month": 0.25,              # DynamoDB Standard table storage, per GB-month
    "s3_gb_month": 0.023,              # S3 Standard storage, per GB-month (first 50 TB)
    "s3_put_per_k": 0.005,             # S3 PUT/POST/LIST, per 1,000 requests
    "firehose_gb": 0.029,              # Data Firehose Direct PUT ingestion, per GB (first 500 TB), 5 KB rounding
    "ddb_pitr_gb_month": 0.20,         # DynamoDB continuous backups (PITR), per GB-month of table size
    "cw_logs_ingest_gb": 0.50,         # CloudWatch Logs Standard ingestion, per GB
    "cw_logs_store_gb_month": 0.03,    # CloudWatch Logs storage, per GB-month (compressed; counted uncompressed here)
    "cw_alarm_month": 0.10,            # CloudWatch standard-resolution metric alarm, per alarm-month
}

N = 1_000_000            # records per month
RECORD_BYTES = 250       # the benchmark's record size
ITEM_BYTES = 340         # DynamoDB item: data + pk/sk/received_at and attribute names (< 1 KB: 1 WRU)
ITEM_OVERHEAD = 100      # DynamoDB bills storage (and PITR) per item as its bytes + 100 bytes of overhead
TRANSACTION_MAX = 100    # TransactWriteItems' item limit: batches of 2..100 records are one transaction
# WRU per record of a 1,000-record batch (BatchWriteItem today: 1). Issue 15
# item 1 makes every batch atomic within 2 WRU per record: set what it does.
BIG_BATCH_WRU = 1
FIREHOSE_BATCH_MAX = 500 # PutRecordBatch accepts at most 500 records (and 4 MiB) per call
WEEKS = 52 / 12          # weeks per month
API_MB, WEEKLY_MB = 256, 512   # MemorySize in template.yaml
GZ_RATIO = 0.28          # records.ndjson.gz / raw NDJSON at gzip level 1, the default (1M bench records: 91.6 MB of ~322 MB)
REQUEST_LINE_BYTES = 500      # the API request line at INFO, measured: crates/tally-lambda/tests/log_lines.rs (pins it within 10 %)

# CloudWatch Logs per API request. The request line is measured (see
# REQUEST_LINE_BYTES); the access log line is the template's own format
# filled with typical values; each log event also counts 26 bytes in
# PutLogEvents' accounting (CloudWatch's per-event overhead).
EVENT_OVERHEAD = 26
# Lambda's platform lines per invocation in JSON format (platform.start,
# platform.runtimeDone, platform.report): ESTIMATED at ~750 bytes together
# from their documented shape, not measurable without Lambda. They are INFO
# system logs, so the template's SystemLogLevel WARN keeps them out of
# CloudWatch; the table shows what they would add at INFO.
PLATFORM_BYTES_AT_INFO = 750
TYPICAL = {
    "$context.requestId": "8f507a7c-5d2a-4a6c-9f1e-2b3c4d5e6f70", "$context.extendedRequestId": "Ab1cD2eFgHiJkLm=",
    "$context.identity.sourceIp": "203.0.113.10", "$context.requestTime": "02/Dec/2026:05:10:00 +0000",
    "$context.httpMethod": "POST", "$context.resourcePath": "/records", "$context.path": "/Prod/records",
    "$context.status": "201", "$context.protocol": "HTTP/1.1", "$context.responseLength": "62",
    "$context.responseLatency": "45", "$context.integrationLatency": "41", "$context.integrationStatus": "201",
    "$context.identity.apiKeyId": "a1b2c3d4e5", "$context.error.message": "-", "$context.error.responseType": "-",
}


def access_log_bytes() -> int:
    """One API Gateway access log line: template.yaml's Format with TYPICAL values."""
    template = (ROOT / "template.yaml").read_text()
    fmt = re.search(r"Format: >-\n\s*(\{.*\})\n", template).group(1)
    line = re.sub(r"\$context\.[A-Za-z.]+", lambda m: TYPICAL[m.group(0)], fmt)
    return len(line.encode()) + 1


def alarm_count() -> int:
    """CloudWatch alarms in template.yaml (each is billed monthly)."""
    return len(re.findall(r"^    Type: AWS::CloudWatch::Alarm$", (ROOT / "template.yaml").read_text(), re.M))


ACCESS_LOG_BYTES = access_log_bytes()
ALARMS = alarm_count()

try:
    lam = [json.loads(line) for line in open(sys.argv[1])]
    api = next(x for x in lam if x["label"] == "tally-api")
    api["assumed"] = False
except (OSError, StopIteration, ValueError):
    # The Lambda section did not run: an assumed duration, said so below.
    api = {"warm_ms": 10.0, "init_ms": "n/a", "rss_mb": "n/a", "assumed": True}
summary_rows = [list(map(float, line.split())) for line in open(sys.argv[2])]
n1, wall1 = summary_rows[0][0], summary_rows[0][1]
rate = n1 / wall1        # records/s of a whole weekly run (store -> 4 objects), measured locally

P = PRICES
warm_ms = max(api["warm_ms"], 1.0)
lines = []
w = lines.append


def usd(x):
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


w("# Cost per million records per month")
w("")
w("Generated by `./bench/run-all` (bench/cost.py) from the measured figures in docs/BENCHMARKS.md. "
  f"Prices: AWS list prices for us-east-1 as of {PRICES_AS_OF}. The benchmark machine has no network "
  "access, so **every price below is an assumption to check** on the AWS pricing pages; the arithmetic is "
  "shown so the totals can be redone with current prices. Free tiers, data transfer out and taxes are left "
  "out.")
w("")
w("| price assumed | value |")
w("|---|---:|")
labels = {
    "apigw_rest_per_m": "API Gateway REST, per million requests",
    "lambda_arm_gb_s": "Lambda arm64, per GB-second",
    "lambda_req_per_m": "Lambda, per million requests",
    "ddb_wru_per_m": "DynamoDB on-demand, per million write request units",
    "ddb_rru_per_m": "DynamoDB on-demand, per million read request units",
    "ddb_gb_month": "DynamoDB storage, per GB-month",
    "s3_gb_month": "S3 Standard storage, per GB-month",
    "s3_put_per_k": "S3 PUT, per 1,000 requests",
    "firehose_gb": "Data Firehose Direct PUT, per GB ingested (each record rounded up to 5 KB)",
    "ddb_pitr_gb_month": "DynamoDB point-in-time recovery, per GB-month",
    "cw_logs_ingest_gb": "CloudWatch Logs ingestion, per GB",
    "cw_logs_store_gb_month": "CloudWatch Logs storage, per GB-month",
    "cw_alarm_month": "CloudWatch alarm (standard resolution), per month",
}
for k, label in labels.items():
    w(f"| {label} | ${P[k]} |")
w("")
w(f"Volume: **{N:,} records per month** of ~{RECORD_BYTES} bytes, arriving either one per request (worst case) "
  "or in batches of 1,000.")
w("")
w("## Measured inputs")
w("")
w(("- **ASSUMED, not measured** (the Lambda section of bench/run-all did not run for this file): "
   if api["assumed"] else "- ")
  + f"`tally-api` warm invocation (POST /records → one PutItem, against moto on the bench machine): "
  f"**{api['warm_ms']} ms** median; cold start init {api['init_ms']} ms; peak RSS {api['rss_mb']} MB. "
  f"Billed duration is assumed equal to the warm figure at {API_MB} MB (template.yaml). Against real DynamoDB a "
  "PutItem takes a few ms; the moto round trip on a loaded 2-core machine is of the same order, so this "
  "is a fair stand-in, not a measurement on AWS.")
w(f"- Weekly run: **{rate:,.0f} records/s** for the whole run (read, aggregate, gzip export, JSON, HTML, manifest) "
  f"measured from the local store at {int(n1):,} records; the Lambda runs it at {WEEKLY_MB} MB. On AWS the "
  "DynamoDB queries add I/O wait; the figure below doubles the local duration for that.")
w("")

# ---- tally: what does not depend on how records arrive
wru = N  # one item < 1 KB = 1 WRU; the week marker is cached per warm process
ddb_w = wru / 1e6 * P["ddb_wru_per_m"]
ddb_store_gb = N * (ITEM_BYTES + ITEM_OVERHEAD) / 1e9
ddb_store = ddb_store_gb * P["ddb_gb_month"]
pitr = ddb_store_gb * P["ddb_pitr_gb_month"]
per_week = N / WEEKS
weekly_s = per_week / rate * 2
weekly_gb_s = WEEKS * weekly_s * WEEKLY_MB / 1024
weekly = weekly_gb_s * P["lambda_arm_gb_s"] + WEEKS / 1e6 * P["lambda_req_per_m"]
rru = WEEKS * per_week * ITEM_BYTES / 4096       # strongly consistent Query (the code's): 1 RRU per 4 KB
ddb_r = rru / 1e6 * P["ddb_rru_per_m"]
s3_gb = N * RECORD_BYTES * 1.3 * GZ_RATIO / 1e9   # NDJSON lines carry id + received_at too
s3_puts = WEEKS * 6                               # 4 objects + a multipart create/complete per week
s3 = s3_gb * P["s3_gb_month"] + s3_puts / 1000 * P["s3_put_per_k"]
alarms = ALARMS * P["cw_alarm_month"]
log_line = REQUEST_LINE_BYTES + ACCESS_LOG_BYTES + 2 * EVENT_OVERHEAD


def logs_cost(requests: float, per_request: float) -> float:
    gb = requests * per_request / 1e9
    return gb * (P["cw_logs_ingest_gb"] + P["cw_logs_store_gb_month"])


# ---- per arrival pattern: 1 record per request, one transaction of 100, 1,000 per request
class Col:
    def __init__(self, per_request: int, ms: float, wru_per_record: float, how: str):
        self.per_request = per_request
        self.req = N / per_request
        self.how = how
        self.apigw = self.req / 1e6 * P["apigw_rest_per_m"]
        self.gb_s = self.req * ms / 1000 * API_MB / 1024
        self.lam = self.gb_s * P["lambda_arm_gb_s"] + self.req / 1e6 * P["lambda_req_per_m"]
        self.ms = ms
        self.wru = N * wru_per_record
        self.ddb_w = self.wru / 1e6 * P["ddb_wru_per_m"]
        self.logs = logs_cost(self.req, log_line)
        self.total = (self.apigw + self.lam + self.ddb_w + ddb_store + pitr + weekly + ddb_r + s3
                      + alarms + self.logs)


single = Col(1, warm_ms, 1, "one PutItem")
# A transaction of 100 Puts: one round trip, a little longer than a PutItem (estimated, not measured).
tx = Col(TRANSACTION_MAX, 2 * warm_ms + 2, 2, "one TransactWriteItems")
b_ms = 40 / 8 * warm_ms + 5                       # 40 BatchWriteItem calls, 8 in flight, + validation
batch = Col(1000, b_ms, BIG_BATCH_WRU, "40 BatchWriteItem calls, 8 in flight")
cols = [single, tx, batch]
total_single, total_batch = single.total, batch.total
apigw, lam_compute, lam_req = single.apigw, single.gb_s * P["lambda_arm_gb_s"], single.req / 1e6 * P["lambda_req_per_m"]
breq = batch.req
b_apigw = batch.apigw

# ---- Firehose: PutRecordBatch takes at most 500 records, and an API Gateway
# service integration makes one call per request, so 1,000 records need two
# requests of 500.
fh_gb = N * 5 / 1024 / 1024                       # every record rounded up to 5 KB
fh = fh_gb * P["firehose_gb"]
fh_objects = 30 * 24 * 12                         # at most one object per 300 s buffer interval
fh_s3 = N * RECORD_BYTES / 1e9 * P["s3_gb_month"] + fh_objects / 1000 * P["s3_put_per_k"]
fh_breq = N / FIREHOSE_BATCH_MAX
fh_single = single.apigw + fh + fh_s3 + logs_cost(single.req, ACCESS_LOG_BYTES + EVENT_OVERHEAD)
fh_tx = tx.apigw + fh + fh_s3 + logs_cost(tx.req, ACCESS_LOG_BYTES + EVENT_OVERHEAD)
fh_batch = fh_breq / 1e6 * P["apigw_rest_per_m"] + fh + fh_s3 + logs_cost(fh_breq, ACCESS_LOG_BYTES + EVENT_OVERHEAD)

w("## tally on AWS")
w("")
w(f"Three ways the same million records arrive: one per request; 100 per request, which tally writes as one "
  f"DynamoDB transaction (batches of 2–{TRANSACTION_MAX} records are atomic TransactWriteItems, and a "
  "transactional write costs **2 WRU** per item); 1,000 per request.")
w("")
w("| item | arithmetic | 1 record/request | 100 records/request | 1,000 records/request |")
w("|---|---|---:|---:|---:|")


def row(item, arithmetic, values):
    w(f"| {item} | {arithmetic} | " + " | ".join(usd(v) for v in values) + " |")


row("API Gateway REST", f"{N:,.0f} / {tx.req:,.0f} / {batch.req:,.0f} requests × ${P['apigw_rest_per_m']}/M",
    [c.apigw for c in cols])
row("Lambda tally-api (compute + requests)",
    f"{N:,.0f} × {warm_ms} ms × {API_MB}/1024 GB = {single.gb_s:,.0f} GB-s × ${P['lambda_arm_gb_s']} + ${P['lambda_req_per_m']}/M requests; "
    f"100: ~{tx.ms:.0f} ms (one transaction; estimated); 1,000: ~{batch.ms:.0f} ms ({batch.how}; estimated, not measured)",
    [c.lam for c in cols])
row("DynamoDB writes", f"items < 1 KB: 1 WRU each; in a transaction 2 WRU each; 1,000-record batches {BIG_BATCH_WRU} WRU each "
    f"(= {single.wru:,.0f} / {tx.wru:,.0f} / {batch.wru:,.0f} WRU) × ${P['ddb_wru_per_m']}/M", [c.ddb_w for c in cols])
row("DynamoDB storage (one month's records, kept)",
    f"{N:,} × ({ITEM_BYTES} B + {ITEM_OVERHEAD} B per-item overhead) = {ddb_store_gb:.2f} GB × ${P['ddb_gb_month']}", [ddb_store] * 3)
row("DynamoDB point-in-time recovery", f"{ddb_store_gb:.2f} GB table size × ${P['ddb_pitr_gb_month']}/GB-month", [pitr] * 3)
row("Lambda tally-weekly", f"{WEEKS:.2f} runs × {per_week:,.0f} records / {rate:,.0f} rec/s × 2 (I/O) = {weekly_s:.1f} s each at {WEEKLY_MB} MB = {weekly_gb_s:.1f} GB-s", [weekly] * 3)
row("DynamoDB reads (weekly Query)", f"{N:,} × {ITEM_BYTES} B / 4 KB, strongly consistent (1 RRU per 4 KB, as the code reads) = {rru:,.0f} RRU × ${P['ddb_rru_per_m']}/M", [ddb_r] * 3)
row("S3 (summaries + gzip export)", f"{s3_gb * 1000:.0f} MB × ${P['s3_gb_month']} + {s3_puts:.0f} PUTs", [s3] * 3)
row("CloudWatch Logs", f"per request {REQUEST_LINE_BYTES} B request line (measured) + {ACCESS_LOG_BYTES} B access log line "
    f"(template format, typical values) + 2 × {EVENT_OVERHEAD} B per-event overhead = {log_line} B; platform lines 0 B "
    f"(SystemLogLevel WARN); × (${P['cw_logs_ingest_gb']}/GB ingested + ${P['cw_logs_store_gb_month']}/GB-month kept)",
    [c.logs for c in cols])
row("CloudWatch alarms", f"{ALARMS} alarms in template.yaml × ${P['cw_alarm_month']}/month", [alarms] * 3)
w(f"| **total per million records per month** | | **{usd(single.total)}** | **{usd(tx.total)}** | **{usd(batch.total)}** |")
w("")
w(f"- **Logs per request, measured**: the API's one INFO line per request is {REQUEST_LINE_BYTES} bytes "
  "(crates/tally-lambda/tests/log_lines.rs runs the handler in-process with events/apigw-post-records.json "
  "and the Lambda runtime's span; it fails if this figure drifts by more than 10 %). The access log line "
  f"({ACCESS_LOG_BYTES} B) is the template's format filled with typical values. Lambda's START/END/REPORT "
  f"platform lines (JSON: platform.start, platform.runtimeDone, platform.report; **estimated** at "
  f"~{PLATFORM_BYTES_AT_INFO} B together, not measurable here) are INFO system logs that SystemLogLevel WARN "
  f"keeps out; at INFO they would add {usd(logs_cost(N, PLATFORM_BYTES_AT_INFO + 3 * EVENT_OVERHEAD))} per million "
  "requests. `LogLevel=debug` or `trace` multiplies the function lines.")
w(f"- **Batches of 1,000** use {BIG_BATCH_WRU} WRU per record here; if they become atomic at 2 WRU per record "
  f"(issue 15), the DynamoDB writes line doubles to {usd(2 * N / 1e6 * P['ddb_wru_per_m'])}.")
w("")
w("## Amazon Data Firehose → S3, same volume")
w("")
w("Firehose needs a front door for HTTP clients too; the like-for-like setup is API Gateway REST with a "
  "Firehose service integration (PutRecord / PutRecordBatch), delivering to S3 with the default 5 MB / 300 s "
  "buffer. It stores the raw records only: no weekly summary (that would take an Athena or Glue job on top, "
  "priced per TB scanned — cents at this volume — plus its own code). **PutRecordBatch takes at most "
  f"{FIREHOSE_BATCH_MAX} records per call** and a service integration makes one call per request, so the "
  f"1,000-record column sends two requests of {FIREHOSE_BATCH_MAX} ({fh_breq:,.0f} requests).")
w("")
w("| item | arithmetic | 1 record/request | 100 records/request | 1,000 records/request |")
w("|---|---|---:|---:|---:|")
row("API Gateway REST", f"{N:,.0f} / {tx.req:,.0f} / {fh_breq:,.0f} requests (≤ {FIREHOSE_BATCH_MAX} records each) × ${P['apigw_rest_per_m']}/M",
    [single.apigw, tx.apigw, fh_breq / 1e6 * P["apigw_rest_per_m"]])
row("Firehose ingestion", f"{N:,} records × 5 KB (rounded up from {RECORD_BYTES} B) = {fh_gb:.2f} GB × ${P['firehose_gb']}", [fh] * 3)
row("S3", f"{N * RECORD_BYTES / 1e9:.2f} GB × ${P['s3_gb_month']} + ≤ {fh_objects:,} PUTs (one per 300 s buffer)", [fh_s3] * 3)
row("CloudWatch Logs", f"the access log line only ({ACCESS_LOG_BYTES} B + {EVENT_OVERHEAD} B)",
    [logs_cost(r, ACCESS_LOG_BYTES + EVENT_OVERHEAD) for r in (single.req, tx.req, fh_breq)])
w(f"| **total per million records per month** | | **{usd(fh_single)}** | **{usd(fh_tx)}** | **{usd(fh_batch)}** |")
w("")
w("## Reading it")
w("")
w(f"- One record per request: API Gateway's $3.50/M dominates both designs. tally costs {usd(total_single)} vs "
  f"Firehose's {usd(fh_single)} ({total_single / fh_single:.2f}×); the difference is DynamoDB's write units "
  f"({usd(ddb_w)}), the API function ({usd(single.lam)}) and its logs ({usd(single.logs)}), which buy per-record "
  "durability with an id, idempotency keys, `GET /records/{id}` and the weekly summary.")
w(f"- 100 records per request: tally {usd(tx.total)} vs Firehose {usd(fh_tx)}. The transaction's 2 WRU per record "
  f"({usd(tx.ddb_w)}) is the price of all-or-nothing batches.")
w(f"- Batches of 1,000: tally {usd(total_batch)} vs Firehose {usd(fh_batch)}. DynamoDB's per-item write units are "
  "now tally's largest line; Firehose's 5 KB rounding makes small records relatively expensive for it, "
  "but it is still cheaper per record here.")
w(f"- Fixed per month whatever the volume: {ALARMS} alarms ({usd(alarms)}); PITR and storage grow with the table.")
w("- At higher volumes everything above scales linearly except the weekly Lambda (linear in records, small) "
  "and storage, which accumulates month after month for DynamoDB unless records expire.")
print("\n".join(lines))
