"""docs/COST.md from the measured Lambda durations and memory (bench/lambda)
and the weekly-run throughput (bench/summary), with the arithmetic shown,
for what template.yaml deploys (its alarms, statemachine/weekly.asl.json).

    python cost.py LAMBDA_JSONL SUMMARY_TSV > docs/COST.md
    python cost.py > docs/COST.md      # the last full run's inputs, bench/cost-inputs/
    python cost.py --readme            # the cost sentence of README.md and docs/DEPLOY.md

./bench/run-all keeps the inputs of its last full run in bench/cost-inputs/,
so a change of the template (an alarm, a state) regenerates the file
without a benchmark run; tests/infra/test_cost.py checks that docs/COST.md,
README.md and docs/DEPLOY.md say what this script says.

Prices are list prices assumed for us-east-1 (see PRICES); the bench machine
has no network, so they are assumptions to check against the AWS pricing
pages before relying on the totals.
"""
import json
import math
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INPUTS = Path(__file__).resolve().parent / "cost-inputs"

PRICES_AS_OF = "2025-06 (list prices as last known to the author; not fetched: verify before use)"
PRICES = {
    "apigw_rest_per_m": 3.50,          # API Gateway REST API, per million requests (first 333M)
    "lambda_arm_gb_s": 0.0000133334,   # Lambda arm64, per GB-second
    "lambda_req_per_m": 0.20,          # Lambda, per million requests
    "ddb_wru_per_m": 0.625,            # DynamoDB on-demand, per million write request units
    "ddb_rru_per_m": 0.125,            # DynamoDB on-demand, per million read request units
    "ddb_gb_month": 0.25,              # DynamoDB Standard table storage, per GB-month
    "s3_gb_month": 0.023,              # S3 Standard storage, per GB-month (first 50 TB)
    "s3_put_per_k": 0.005,             # S3 PUT/COPY/POST/LIST, per 1,000 requests
    "s3_get_per_k": 0.0004,            # S3 GET and other requests, per 1,000
    "firehose_gb": 0.029,              # Data Firehose Direct PUT ingestion, per GB (first 500 TB), 5 KB rounding
    "ddb_pitr_gb_month": 0.20,         # DynamoDB continuous backups (PITR), per GB-month of table size
    "cw_logs_ingest_gb": 0.50,         # CloudWatch Logs Standard ingestion, per GB
    "cw_logs_store_gb_month": 0.03,    # CloudWatch Logs storage, per GB-month (compressed; counted uncompressed here)
    "cw_alarm_month": 0.10,            # CloudWatch standard-resolution alarm, per alarm metric-month
    "cw_composite_alarm_month": 0.50,  # CloudWatch composite alarm, per alarm-month
    "cw_metric_month": 0.30,           # CloudWatch custom metric, per metric-month (prorated by the hour it is sent)
    "sfn_transition_per_k": 0.025,     # Step Functions standard workflows, per 1,000 state transitions
    "secret_month": 0.40,              # Secrets Manager, per secret-month (API calls: $0.05 per 10,000, a few a day)
}

N = 1_000_000            # records per month
RECORD_BYTES = 250       # the benchmark's record size
ITEM_BYTES = 340         # DynamoDB item: data + pk/sk/received_at and attribute names (< 1 KB: 1 WRU)
ITEM_OVERHEAD = 100      # DynamoDB bills storage (and PITR) per item as its bytes + 100 bytes of overhead
TRANSACTION_MAX = 100    # TransactWriteItems' item limit: batches of 2..100 records are one transaction
# WRU per record of a 1,000-record batch: staged records (BatchWriteItem, 1
# WRU each) and one commit marker per batch (tally_aws::batch).
BIG_BATCH_WRU = 1
# A single record with an Idempotency-Key: one TransactWriteItems of the
# record and its idempotency entry (2 items x 2 WRU, transactional), after a
# strongly consistent GetItem of the entry (1 RRU).
KEYED_WRU, KEYED_RRU = 4, 1
FIREHOSE_BATCH_MAX = 500 # PutRecordBatch accepts at most 500 records (and 4 MiB) per call
WEEKS = 52 / 12          # weeks per month
API_MB, WEEKLY_MB = 256, 512   # MemorySize in template.yaml
GZ_RATIO = 0.28          # records.ndjson.gz / raw NDJSON at gzip level 1, the default (1M bench records: 91.6 MB of ~322 MB)
PART_BYTES = 8 * 1024 * 1024   # tally_aws::s3::DEFAULT_PART_SIZE: the export's multipart part size
REQUEST_LINE_BYTES = 500      # the API request line at INFO, measured: crates/tally-lambda/tests/log_lines.rs (pins it within 10 %)
# The weekly run's metric line (crates/tally-lambda weekly::emf_line): one EMF
# line per run, in namespace tally, four metrics (RecordsSummarized,
# WeeksSummarized, DurationMs, Failed) with the dimension FunctionName.
EMF_METRICS = 4

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


class _CfnLoader(yaml.SafeLoader):
    """template.yaml with its short-form intrinsics (!Ref, !Sub, ...) read as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node)))


def template() -> dict:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)


def access_log_bytes(tpl: dict) -> int:
    """One API Gateway access log line: template.yaml's Format with TYPICAL values."""
    fmt = tpl["Resources"]["TallyApi"]["Properties"]["AccessLogSetting"]["Format"]
    line = re.sub(r"\$context\.[A-Za-z.]+", lambda m: TYPICAL[m.group(0)], fmt)
    return len(line.encode()) + 1


def alarms_as_billed(tpl: dict) -> list[tuple[str, int]]:
    """(alarm, alarm metrics billed) for every alarm in template.yaml: a
    metric alarm is billed per metric it reads - its one metric, or every
    metric of its metric math (an expression itself is free); standard
    resolution only (a Period under 60 s would be a high-resolution alarm)."""
    out = []
    for name, res in tpl["Resources"].items():
        if res["Type"] == "AWS::CloudWatch::CompositeAlarm":
            raise SystemExit(f"{name}: a composite alarm; add its price (cw_composite_alarm_month) to the table")
        if res["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = res["Properties"]
        stats = [m["MetricStat"] for m in props.get("Metrics", []) if "MetricStat" in m] or [props]
        assert all(s["Period"] >= 60 for s in stats), f"{name}: high-resolution alarms cost more"
        out.append((name, len(stats)))
    return out


def state_transitions(tpl: dict, weeks: int = 1) -> tuple[int, int, int]:
    """(state transitions, Lambda invocations, parts per week) of one
    execution of statemachine/weekly.asl.json that summarises `weeks` weeks
    in WeeklyParts parts (its default) and retries nothing. Step Functions
    bills a STANDARD workflow per state transition - each state entered,
    also inside an Inline Map's iterations; an Inline Map's iterations
    themselves are not billed (Step Functions Developer Guide,
    "Transitions"); every retry is one more."""
    parts = int(tpl["Parameters"]["WeeklyParts"]["Default"])
    items = {"$.weeks": weeks, "$.week.parts": parts}
    asl = json.loads((ROOT / "statemachine" / "weekly.asl.json").read_text())

    def walk(machine: dict) -> tuple[int, int]:
        transitions = invocations = 0
        name = machine["StartAt"]
        while name:
            state = machine["States"][name]
            transitions += 1
            if state["Type"] == "Task":
                assert state["Resource"] == "arn:aws:states:::lambda:invoke", f"{name}: teach cost.py {state['Resource']}"
                invocations += 1
            elif state["Type"] == "Map":
                assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "INLINE", f"{name}: a Distributed Map"
                t, i = walk(state["ItemProcessor"])
                transitions, invocations = transitions + items[state["ItemsPath"]] * t, invocations + items[state["ItemsPath"]] * i
            elif state["Type"] == "Choice":
                # The weekly run's only choice: continue a catch-up longer
                # than one execution's bound (rare), else its Default.
                name = state["Default"]
                continue
            elif state["Type"] != "Pass":
                raise SystemExit(f"{name}: teach cost.py the state type {state['Type']}")
            name = None if state.get("End") else state["Next"]
        return transitions, invocations

    return (*walk(asl), parts)


def _data_lines(path: str) -> list[str]:
    return [line for line in open(path) if line.strip() and not line.startswith("#")]


TPL = template()
ACCESS_LOG_BYTES = access_log_bytes(TPL)
ALARMS = alarms_as_billed(TPL)
ALARM_METRICS = sum(n for _, n in ALARMS)
TRANSITIONS, INVOCATIONS, PARTS = state_transitions(TPL)

args = [a for a in sys.argv[1:] if not a.startswith("--")]
readme_only = "--readme" in sys.argv[1:]
lambda_jsonl, summary_tsv = args if args else (INPUTS / "lambda.jsonl", INPUTS / "summary.tsv")
try:
    lam = [json.loads(line) for line in _data_lines(lambda_jsonl)]
    api = next(x for x in lam if x["label"] == "tally-api")
    api["assumed"] = False
except (OSError, StopIteration, ValueError):
    # The Lambda section did not run: an assumed duration, said so below.
    api = {"warm_ms": 10.0, "init_ms": "n/a", "rss_mb": "n/a", "assumed": True}
summary_rows = [list(map(float, line.split())) for line in _data_lines(summary_tsv)]
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
w("Generated by `./bench/run-all` (bench/cost.py) from the measured figures in docs/BENCHMARKS.md, for the "
  "resources template.yaml deploys. "
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
    "s3_put_per_k": "S3 PUT, COPY, POST, LIST, per 1,000 requests",
    "s3_get_per_k": "S3 GET, per 1,000 requests",
    "firehose_gb": "Data Firehose Direct PUT, per GB ingested (each record rounded up to 5 KB)",
    "ddb_pitr_gb_month": "DynamoDB point-in-time recovery, per GB-month",
    "cw_logs_ingest_gb": "CloudWatch Logs ingestion, per GB",
    "cw_logs_store_gb_month": "CloudWatch Logs storage, per GB-month",
    "cw_alarm_month": "CloudWatch alarm (standard resolution), per alarm metric per month",
    "cw_metric_month": "CloudWatch custom metric, per metric per month (prorated by the hour)",
    "sfn_transition_per_k": "Step Functions standard workflow, per 1,000 state transitions",
    "secret_month": "Secrets Manager, per secret per month",
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
ddb_store_gb = N * (ITEM_BYTES + ITEM_OVERHEAD) / 1e9
ddb_store = ddb_store_gb * P["ddb_gb_month"]
pitr = ddb_store_gb * P["ddb_pitr_gb_month"]
per_week = N / WEEKS
weekly_s = per_week / rate * 2
weekly_gb_s = WEEKS * weekly_s * WEEKLY_MB / 1024
weekly = weekly_gb_s * P["lambda_arm_gb_s"] + WEEKS * INVOCATIONS / 1e6 * P["lambda_req_per_m"]
# The week is read twice per run, strongly consistent (1 RRU per 4 KB of
# items read): by its parts, and again by the merge's sweep of abandoned
# batches (sweep_week queries every day-shard partition of the week). A
# Query is billed for the items it reads, whatever its projection or filter
# returns (DynamoDB Developer Guide, "Filter expressions for Query").
WEEK_READS = 2
rru = WEEK_READS * WEEKS * per_week * ITEM_BYTES / 4096
ddb_r = rru / 1e6 * P["ddb_rru_per_m"]
s3_gb = N * RECORD_BYTES * 1.3 * GZ_RATIO / 1e9   # NDJSON lines carry id + received_at too
# Per week: PUT class - the four objects, the export's multipart create,
# parts and complete, one state object per part, the plan's LIST of
# summaries/; GET - the part states (merge), the week's manifest and last
# week's summary.json (the comparison).
export_parts = max(1, math.ceil(s3_gb * 1e9 / WEEKS / PART_BYTES))
s3_puts_week = 4 + 2 + export_parts + PARTS + 1
s3_gets_week = PARTS + 2
s3 = (s3_gb * P["s3_gb_month"] + WEEKS * s3_puts_week / 1000 * P["s3_put_per_k"]
      + WEEKS * s3_gets_week / 1000 * P["s3_get_per_k"])
sfn = WEEKS * TRANSITIONS / 1000 * P["sfn_transition_per_k"]
# Prorated by the hour: each metric is billed for the hours it is sent in,
# one per weekly run (refresh requests after erasures add a few).
emf = EMF_METRICS * WEEKS * P["cw_metric_month"] / 730
alarms = ALARM_METRICS * P["cw_alarm_month"]
# The report links' key (ReportLinkSecret): read once per function cold start.
SECRETS = sum(1 for r in TPL["Resources"].values() if r["Type"] == "AWS::SecretsManager::Secret")
secrets = SECRETS * P["secret_month"]
log_line = REQUEST_LINE_BYTES + ACCESS_LOG_BYTES + 2 * EVENT_OVERHEAD


def logs_cost(requests: float, per_request: float) -> float:
    gb = requests * per_request / 1e9
    return gb * (P["cw_logs_ingest_gb"] + P["cw_logs_store_gb_month"])


FIXED = {"DynamoDB storage": ddb_store, "DynamoDB point-in-time recovery": pitr, "the weekly run's Lambda": weekly,
         "DynamoDB reads": ddb_r, "S3": s3, "Step Functions": sfn, "metrics": emf, "the alarms": alarms,
         "the report-link secret": secrets}


# ---- per arrival pattern
class Col:
    def __init__(self, title: str, per_request: int, ms: float, wru_per_record: float, how: str,
                 rru_per_request: float = 0):
        self.title = title
        self.per_request = per_request
        self.req = N / per_request
        self.how = how
        self.apigw = self.req / 1e6 * P["apigw_rest_per_m"]
        self.gb_s = self.req * ms / 1000 * API_MB / 1024
        self.lam = self.gb_s * P["lambda_arm_gb_s"] + self.req / 1e6 * P["lambda_req_per_m"]
        self.ms = ms
        self.wru = N * wru_per_record
        self.ddb_w = self.wru / 1e6 * P["ddb_wru_per_m"]
        self.rru = self.req * rru_per_request
        self.ddb_api_r = self.rru / 1e6 * P["ddb_rru_per_m"]
        self.logs = logs_cost(self.req, log_line)
        self.items = {"API Gateway requests": self.apigw, "the API's Lambda": self.lam,
                      "DynamoDB writes": self.ddb_w + self.ddb_api_r, "CloudWatch Logs": self.logs, **FIXED}
        self.total = sum(self.items.values())

    def most(self) -> str:
        """The largest items that together make more than half the total."""
        names, acc = [], 0.0
        for name, value in sorted(self.items.items(), key=lambda kv: -kv[1]):
            names.append(name)
            acc += value
            if acc > self.total / 2:
                break
        return "most of it " + " and ".join(names)


single = Col("1 record/request", 1, warm_ms, 1, "one PutItem")
# One GetItem of the entry and one TransactWriteItems of 2 items: about two
# round trips (estimated, not measured).
keyed = Col("1 record/request with `Idempotency-Key`", 1, 2 * warm_ms + 2, KEYED_WRU,
            "a GetItem of the key's entry, then one TransactWriteItems of the record and the entry",
            rru_per_request=KEYED_RRU)
# A transaction of 100 Puts: one round trip, a little longer than a PutItem (estimated, not measured).
tx = Col("100 records/request", TRANSACTION_MAX, 2 * warm_ms + 2, 2, "one TransactWriteItems")
b_ms = 40 / 8 * warm_ms + 5                       # 40 BatchWriteItem calls, 8 in flight, + validation
batch = Col("1,000 records/request", 1000, b_ms, BIG_BATCH_WRU, "40 BatchWriteItem calls, 8 in flight")
cols = [single, keyed, tx, batch]


def readme_sentence() -> str:
    """The cost sentence of README.md and docs/DEPLOY.md (generated, so that
    its 'most of it' holds for every case it names)."""
    return (f"a million records a month cost about {usd(single.total)} sent one per request ({single.most()}), "
            f"{usd(tx.total)} in batches of 100 ({tx.most()}), or {usd(batch.total)} in batches of 1,000 "
            f"({batch.most()}); with an `Idempotency-Key` on every single record ({KEYED_WRU} write units and "
            f"{KEYED_RRU} read unit each instead of 1 write unit) the first costs {usd(keyed.total)}")


if readme_only:
    print(readme_sentence())
    sys.exit(0)

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
w("Four ways the same million records arrive: one per request; one per request, each with an "
  f"`Idempotency-Key` (the record and its idempotency entry are one DynamoDB transaction, after a look-up of "
  f"the key: **{KEYED_WRU} WRU and {KEYED_RRU} RRU** per record instead of 1 WRU); 100 per request, which tally "
  f"writes as one DynamoDB transaction (batches of 2–{TRANSACTION_MAX} records are atomic TransactWriteItems, "
  "and a transactional write costs **2 WRU** per item); 1,000 per request.")
w("")
w("| item | arithmetic | " + " | ".join(c.title for c in cols) + " |")
w("|---|---|" + "---:|" * len(cols))


def row(item, arithmetic, values):
    w(f"| {item} | {arithmetic} | " + " | ".join(usd(v) for v in values) + " |")


row("API Gateway REST", " / ".join(f"{c.req:,.0f}" for c in cols) + f" requests × ${P['apigw_rest_per_m']}/M",
    [c.apigw for c in cols])
row("Lambda tally-api (compute + requests)",
    f"{N:,.0f} × {warm_ms} ms × {API_MB}/1024 GB = {single.gb_s:,.0f} GB-s × ${P['lambda_arm_gb_s']} + ${P['lambda_req_per_m']}/M requests; "
    f"with a key ~{keyed.ms:.0f} ms ({keyed.how}; estimated); "
    f"100: ~{tx.ms:.0f} ms (one transaction; estimated); 1,000: ~{batch.ms:.0f} ms ({batch.how}; estimated, not measured)",
    [c.lam for c in cols])
row("DynamoDB writes (and the key look-up)",
    f"items < 1 KB: 1 WRU each; with a key {KEYED_WRU} WRU per record + {KEYED_RRU} RRU per request; in a "
    f"transaction 2 WRU each; 1,000-record batches {BIG_BATCH_WRU} WRU each "
    f"(= {' / '.join(f'{c.wru:,.0f}' for c in cols)} WRU) × ${P['ddb_wru_per_m']}/M + RRU × ${P['ddb_rru_per_m']}/M",
    [c.ddb_w + c.ddb_api_r for c in cols])
row("DynamoDB storage (one month's records, kept)",
    f"{N:,} × ({ITEM_BYTES} B + {ITEM_OVERHEAD} B per-item overhead) = {ddb_store_gb:.2f} GB × ${P['ddb_gb_month']}",
    [ddb_store] * len(cols))
row("DynamoDB point-in-time recovery", f"{ddb_store_gb:.2f} GB table size × ${P['ddb_pitr_gb_month']}/GB-month",
    [pitr] * len(cols))
row("Lambda tally-weekly", f"{WEEKS:.2f} runs × {per_week:,.0f} records / {rate:,.0f} rec/s × 2 (I/O) = "
    f"{weekly_s:.1f} s each at {WEEKLY_MB} MB = {weekly_gb_s:.1f} GB-s, split over {INVOCATIONS} invocations per "
    f"run (plan, {PARTS} parts, merge, finish)", [weekly] * len(cols))
row("DynamoDB reads (weekly Query, twice)",
    f"{WEEK_READS} × {N:,} × {ITEM_BYTES} B / 4 KB, strongly consistent (1 RRU per 4 KB, as the code reads): the "
    f"parts read the week, and the merge's sweep of abandoned batches queries the same partitions again "
    f"(billed for the items read, whatever the projection and filter return) = {rru:,.0f} RRU × "
    f"${P['ddb_rru_per_m']}/M", [ddb_r] * len(cols))
row("S3 (summaries + gzip export)",
    f"{s3_gb * 1000:.0f} MB × ${P['s3_gb_month']} + {WEEKS:.2f} × ({s3_puts_week} PUT/LIST: 4 objects, "
    f"multipart create + {export_parts} part + complete, {PARTS} part states, 1 LIST; {s3_gets_week} GET)",
    [s3] * len(cols))
row("Step Functions", f"{WEEKS:.2f} runs × {TRANSITIONS} state transitions (Plan, Weeks, Parts, {PARTS} × Part, "
    f"Merge, Finish, More, Done: statemachine/weekly.asl.json for one week, no retries) × ${P['sfn_transition_per_k']}/1,000",
    [sfn] * len(cols))
row("CloudWatch Logs", f"per request {REQUEST_LINE_BYTES} B request line (measured) + {ACCESS_LOG_BYTES} B access log line "
    f"(template format, typical values) + 2 × {EVENT_OVERHEAD} B per-event overhead = {log_line} B; platform lines 0 B "
    f"(SystemLogLevel WARN); × (${P['cw_logs_ingest_gb']}/GB ingested + ${P['cw_logs_store_gb_month']}/GB-month kept)",
    [c.logs for c in cols])
row("CloudWatch metrics (the weekly run's EMF line)",
    f"{EMF_METRICS} custom metrics × {WEEKS:.2f} hours sent × ${P['cw_metric_month']}/730 h", [emf] * len(cols))
row("CloudWatch alarms",
    f"{len(ALARMS)} alarms in template.yaml reading {ALARM_METRICS} metrics (a metric-math alarm is billed per "
    f"metric it reads) × ${P['cw_alarm_month']}/month", [alarms] * len(cols))
row("Secrets Manager", f"{SECRETS} secret in template.yaml (ReportLinkSecret, the key of the report site's signed "
    f"links; read once per function cold start) × ${P['secret_month']}/month", [secrets] * len(cols))
w("| **total per million records per month** | | " + " | ".join(f"**{usd(c.total)}**" for c in cols) + " |")
w("")
w("- **Alarms, as billed**: " + ", ".join(f"`{name}` {n}" for name, n in ALARMS)
  + f" alarm metric{'s' if ALARM_METRICS != 1 else ''} = {ALARM_METRICS} × ${P['cw_alarm_month']} = {usd(alarms)} a month, "
  "whatever the volume (docs/DEPLOY.md, \"Alarms\", says what each one watches).")
w(f"- **Logs per request, measured**: the API's one INFO line per request is {REQUEST_LINE_BYTES} bytes "
  "(crates/tally-lambda/tests/log_lines.rs runs the handler in-process with events/apigw-post-records.json "
  "and the Lambda runtime's span; it fails if this figure drifts by more than 10 %). The access log line "
  f"({ACCESS_LOG_BYTES} B) is the template's format filled with typical values. Lambda's START/END/REPORT "
  f"platform lines (JSON: platform.start, platform.runtimeDone, platform.report; **estimated** at "
  f"~{PLATFORM_BYTES_AT_INFO} B together, not measurable here) are INFO system logs that SystemLogLevel WARN "
  f"keeps out; at INFO they would add {usd(logs_cost(N, PLATFORM_BYTES_AT_INFO + 3 * EVENT_OVERHEAD))} per million "
  "requests. `LogLevel=debug` or `trace` multiplies the function lines.")
w(f"- **`Idempotency-Key` on single records**: {KEYED_WRU} WRU per record (the record and its idempotency entry, "
  f"2 WRU each in a transaction) plus {KEYED_RRU} RRU for the look-up of the key, instead of 1 WRU: "
  f"{usd(keyed.ddb_w + keyed.ddb_api_r - single.ddb_w)} more per million records. In a batch the entry is one "
  "more item of the batch's transaction (2 WRU per batch).")
w(f"- **The weekly run** reads the week twice (its parts, then the merge's sweep of abandoned batches); "
  f"both reads together are {usd(ddb_r)} a month here. Each retried step adds one state transition and one "
  "invocation.")
w("- Not in the table, each well under $0.001 a month at this volume: EventBridge Scheduler (one invocation a "
  "week), SNS (one report a week, e-mail delivery if subscribed), the weekly function's few log lines per run, "
  "SQS and the dead-letter queue (empty unless something failed).")
w("")
w("## Amazon Data Firehose → S3, same volume")
w("")
w("Firehose needs a front door for HTTP clients too; the like-for-like setup is API Gateway REST with a "
  "Firehose service integration (PutRecord / PutRecordBatch), delivering to S3 with the default 5 MB / 300 s "
  "buffer. It stores the raw records only: no weekly summary (that would take an Athena or Glue job on top, "
  "priced per TB scanned — cents at this volume — plus its own code), no idempotency keys. **PutRecordBatch takes "
  f"at most {FIREHOSE_BATCH_MAX} records per call** and a service integration makes one call per request, so the "
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
w(f"- One record per request: API Gateway's $3.50/M dominates both designs. tally costs {usd(single.total)} vs "
  f"Firehose's {usd(fh_single)} ({single.total / fh_single:.2f}×); the difference is the alarms ({usd(alarms)}), "
  f"DynamoDB's write units ({usd(single.ddb_w)}), the API function ({usd(single.lam)}) and its logs "
  f"({usd(single.logs)}), which buy per-record durability with an id, idempotency keys, `GET /records/{{id}}`, "
  "the weekly summary and someone being told when it fails.")
w(f"- With an `Idempotency-Key` on each single record: {usd(keyed.total)}; the key's transaction and look-up are "
  f"{usd(keyed.ddb_w + keyed.ddb_api_r)} of it.")
w(f"- 100 records per request: tally {usd(tx.total)} vs Firehose {usd(fh_tx)}. The transaction's 2 WRU per record "
  f"({usd(tx.ddb_w)}) is the price of all-or-nothing batches.")
w(f"- Batches of 1,000: tally {usd(batch.total)} vs Firehose {usd(fh_batch)}. The fixed alarms and DynamoDB's "
  "per-item write units are now tally's largest lines; Firehose's 5 KB rounding makes small records relatively "
  "expensive for it, but it is still cheaper per record here.")
w(f"- Fixed per month whatever the volume: {ALARM_METRICS} alarm metrics ({usd(alarms)}), the report-link secret "
  f"({usd(secrets)}), the weekly run's state "
  f"transitions ({usd(sfn)}) and metrics ({usd(emf)}); PITR and storage grow with the table.")
w("- At higher volumes everything above scales linearly except the weekly Lambda (linear in records, small), "
  "the fixed items, and storage, which accumulates month after month for DynamoDB unless records expire.")
w("")
w("In README.md and docs/DEPLOY.md (`python bench/cost.py --readme`): " + readme_sentence() + ".")
print("\n".join(lines))
