"""scripts/aws-smoke behaves as documented, without an AWS account.

As deploy.sh's tests do (tests/infra/test_scripts.py), the script runs with
stand-ins for `aws`, `curl`, deploy.sh and clean.sh first on PATH (the two
scripts through TALLY_SMOKE_DEPLOY / TALLY_SMOKE_CLEAN). Each stand-in
records its call and answers from a scenario; `aws` evaluates the script's
real --query with jmespath and prints it as the AWS CLI's text output does.
Unlike there, the stand-ins are a few lines of bash that hand the call over
/dev/tcp to one fake in this process (FakeAws): a run makes ~60 calls, and a
Python interpreter per call would take most of the time budget.

The fake answers like a deployed stack: API Gateway's API_KEY 403 without
the key, a 404 for an unsigned DELETE, the tally API behind it (ids,
Idempotency-Key replays, paged ranges, erasure), a state machine execution
that writes the week's summary and publishes the report to the subscribed
queue, the stack's alarms (template.yaml's, by logical id). A fault in the
scenario makes one of them answer wrong.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_aws_smoke.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

import jmespath
import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "aws-smoke"

REGION = "us-east-1"
ACCOUNT = "123456789012"
API = "https://abc123defg.execute-api.us-east-1.amazonaws.com/Prod/"
KEY_ID = "key1"
KEY = "smoke-key-value-0123456789"
ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = "AKIASMOKETEST", "s3cr3t/with+slash=", "session-token-xyz"
BUCKET = "tally-smoke-summarybucket-1"
# A notification's link: the week's page on the API, signed (issue 23).
REPORT_URL = API + "reports/{week}/?exp=1799999999&sig=" + "ab" * 32

# Every step, in order (the clean.sh step comes from the teardown).
STEPS = [
    "prerequisites", "deploy", "api key", "health", "single record", "no key refused", "array batch",
    "ndjson batch", "get record", "idempotency replay", "range read", "replay stored once", "erasure",
    "state machine", "summary", "summary list", "report link", "erasure refresh", "alarms", "clean.sh",
]

STUB = r"""#!/usr/bin/env bash
# Stand-in: hands this call to the fake of tests/infra/test_aws_smoke.py.
exec 3<>"/dev/tcp/127.0.0.1/$TALLY_SMOKE_STUB_PORT" || exit 97
{ printf '%s\0' "@NAME@" "$PWD" "$#"; [[ $# -eq 0 ]] || printf '%s\0' "$@"; } >&3
IFS= read -r -d '' code <&3 || exit 98
IFS= read -r -d '' err <&3 || true
[[ -z "$err" ]] || printf '%s' "$err" >&2
cat <&3
exit "$code"
"""

API_KEY_REFUSAL = {"type": "about:blank", "title": "Forbidden", "status": 403,
                   "detail": "Missing or invalid API key: send it in the x-api-key header (see the GetApiKeyCommand stack output)."}
NO_SIGNATURE = {"type": "about:blank", "title": "Not Found", "status": 404,
                "detail": "No such route, or a DELETE without a SigV4 signature."}


def _text(value) -> str:
    """The AWS CLI's --output text rendering of a query result."""
    if value is None:
        return "None"
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "\n".join("\t".join(_text(x) for x in row) for row in value)
        return "\t".join(_text(x) for x in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _week(received_at: str) -> str:
    year, week, _ = _parse_time(received_at).isocalendar()
    return f"{year}-W{week:02d}"


def _curlrc(path: Path) -> list[tuple[str, str]]:
    """`name = "value"` lines of a curl config file."""
    out = []
    for line in path.read_text().splitlines():
        m = re.fullmatch(r'\s*([\w-]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*', line)
        assert m, f"unexpected curl config line: {line!r}"
        out.append((m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))))
    return out


class FakeAws:
    """A deployed tally stack as aws, curl, deploy.sh and clean.sh see it."""

    def __init__(self, alarms: list[str], deploy_help: str, faults: dict):
        self.alarm_ids = alarms
        self.deploy_help = deploy_help
        self.faults = faults
        self.calls: list[dict] = []
        self.stack: dict | None = faults.get("existing_stack")
        self.parts = 0
        self.records: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[bytes, dict]] = {}
        self.summaries: dict[str, int] = {}
        self.executions: dict[str, dict] = {}
        self.queue: dict | None = None
        self.subscribed = False
        self.key_inactive = faults.get("key_inactive", 1)
        self.range_reads = 0
        self.next_id = 0
        self.lock = threading.Lock()

    # ------------------------------------------------------------ dispatch
    def call(self, tool: str, cwd: str, args: list[str]) -> tuple[int, str, str]:
        with self.lock:
            if tool == "curl":
                return self.curl(cwd, args)
            self.calls.append({"tool": tool, "args": args})
            if tool == "aws":
                return self.aws(args)
            if tool == "deploy":
                return self.deploy(args)
            if tool == "clean":
                return self.clean(args)
        return 2, "", f"fake: unknown tool {tool}\n"

    # --------------------------------------------------- deploy.sh/clean.sh
    def deploy(self, args):
        if "--help" in args:
            return 0, self.deploy_help, ""
        name = args[args.index("--stack-name") + 1]
        overrides = args[args.index("--parameter-overrides") + 1]
        self.parts = int(re.search(r'WeeklyParts="(\d+)"', overrides).group(1))
        if "deploy_fails" in self.faults:
            # The stack it leaves: None (never created), or a status, which
            # settles (an *_IN_PROGRESS becomes *_COMPLETE) after two reads.
            left = self.faults["deploy_fails"]
            self.stack = left and {"name": name, "status": left, "reads": 0}
            return 1, "", f"error: the deploy did not complete (stack: {left})\n"
        self.stack = {"name": name, "status": "CREATE_COMPLETE"}
        return 0, f"tally is deployed: stack {name} in {REGION}\n", ""

    def clean(self, args):
        name = args[args.index("--stack-name") + 1]
        if self.stack is None or self.stack["name"] != name:
            return 1, "", f"error: there is no stack named '{name}'\n"
        self.stack = None
        return 0, "Stack deleted successfully.\n", ""

    # ---------------------------------------------------------------- aws
    def aws(self, args):
        def opt(name, default=None):
            return args[args.index(name) + 1] if name in args else default

        def answer(doc):
            query = opt("--query")
            value = jmespath.search(query, doc) if query else doc
            return 0, (json.dumps(value) if opt("--output", "json") == "json" else _text(value)) + "\n", ""

        cmd = " ".join(args[:2])
        stack = self.stack
        arn_prefix = f"arn:aws:states:{REGION}:{ACCOUNT}"
        if cmd == "sts get-caller-identity":
            return answer({"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/smoke"})
        if cmd == "configure get":
            return 1, "", ""
        if cmd == "configure export-credentials":
            assert opt("--format") == "process"
            return 0, json.dumps({"Version": 1, "AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY,
                                  "SessionToken": SESSION_TOKEN}), ""
        if cmd.startswith("cloudformation "):
            name = opt("--stack-name")
            if stack is None or stack["name"] != name:
                return 254, "", f"An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id {name} does not exist\n"
            if cmd == "cloudformation describe-stacks":
                stack["reads"] = stack.get("reads", 0) + 1
                if stack["status"] in ("ROLLBACK_IN_PROGRESS", "CREATE_IN_PROGRESS") and stack["reads"] > 2:
                    stack["status"] = stack["status"].replace("IN_PROGRESS", "COMPLETE")
                outputs = {
                    "ApiUrl": API, "ApiId": "abc123defg", "ApiKeyId": KEY_ID,
                    "GetApiKeyCommand": f"aws apigateway get-api-key --api-key {KEY_ID} --include-value --query value --output text --region {REGION}",
                    "SummaryBucketName": BUCKET, "WeeklyStateMachineArn": f"{arn_prefix}:stateMachine:{name}-weekly",
                    "ReportTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}-ReportTopic-1",
                }
                for missing in self.faults.get("missing_outputs", ()):
                    outputs.pop(missing)
                return answer({"Stacks": [{"StackName": name, "StackStatus": stack["status"],
                                           "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]})
            if cmd == "cloudformation list-stack-resources":
                resources = [{"LogicalResourceId": a, "PhysicalResourceId": f"{name}-{a}-ABC123",
                              "ResourceType": "AWS::CloudWatch::Alarm"} for a in self.alarm_ids]
                resources.append({"LogicalResourceId": "ApiFunction", "PhysicalResourceId": f"{name}-ApiFunction-1",
                                  "ResourceType": "AWS::Lambda::Function"})
                return answer({"StackResourceSummaries": resources})
        if cmd == "apigateway get-api-key":
            assert opt("--api-key") == KEY_ID and "--include-value" in args
            return answer({"id": KEY_ID, "value": KEY, "enabled": True})
        if cmd == "stepfunctions start-execution":
            arn = f"{arn_prefix}:execution:{stack['name']}-weekly:{opt('--name')}"
            self.executions[arn] = {"input": json.loads(opt("--input")), "polls": 0, "status": "RUNNING"}
            return answer({"executionArn": arn, "startDate": 0})
        if cmd == "stepfunctions describe-execution":
            ex = self.executions[opt("--execution-arn")]
            ex["polls"] += 1
            if ex["status"] == "RUNNING" and ex["polls"] >= 2 and self.faults.get("execution") != "never":
                ex["status"] = self.faults.get("execution", "SUCCEEDED")
                if ex["status"] == "SUCCEEDED":
                    self.summarize(ex["input"]["week"])
            doc = {"status": ex["status"]}
            if ex["status"] == "FAILED":
                doc.update(error="States.TaskFailed", cause='{"errorMessage":"AccessDenied on s3:GetObject"}')
            return answer(doc)
        if cmd == "stepfunctions get-execution-history":
            parts = self.faults.get("parts_run", self.parts)
            events = [{"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Plan"}},
                      {"type": "MapStateEntered", "stateEnteredEventDetails": {"name": "Weeks"}}]
            for _ in range(parts):
                events += [{"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Part"}},
                           {"type": "TaskSucceeded"}]
            events.append({"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Merge"}})
            return answer({"events": events})
        if cmd == "cloudwatch describe-alarms":
            i = args.index("--alarm-names") + 1
            names = []
            while i < len(args) and not args[i].startswith("--"):
                names.append(args[i])
                i += 1
            # A stack minutes old: the missing-run alarm is in its warm-up.
            states = {"WeeklyRunMissingAlarm": "INSUFFICIENT_DATA", **self.faults.get("alarms", {})}
            alarms = [{"AlarmName": n, "StateValue": states.get(n.split("-")[-2], "OK")} for n in names]
            return answer({"MetricAlarms": alarms, "CompositeAlarms": []})
        if cmd == "sqs create-queue":
            self.queue = {"name": opt("--queue-name"), "policy": None, "messages": []}
            return answer({"QueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.queue['name']}"})
        if cmd == "sqs get-queue-attributes":
            return answer({"Attributes": {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.queue['name']}"}})
        if cmd == "sqs set-queue-attributes":
            attributes = json.loads(Path(opt("--attributes").removeprefix("file://")).read_text())
            self.queue["policy"] = json.loads(attributes["Policy"])
            return 0, "", ""
        if cmd == "sns subscribe":
            statement = self.queue["policy"]["Statement"][0]
            assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == opt("--topic-arn")
            assert opt("--protocol") == "sqs" and "RawMessageDelivery=true" in args
            self.subscribed = True
            return answer({"SubscriptionArn": opt("--topic-arn") + ":sub-1"})
        if cmd == "sns unsubscribe":
            self.subscribed = False
            return 0, "", ""
        if cmd == "sqs receive-message":
            messages = self.queue["messages"] if self.queue else []
            return answer({"Messages": [{"Body": messages.pop(0), "ReceiptHandle": "r1"}]} if messages else {})
        if cmd == "sqs delete-queue":
            self.queue = None
            return 0, "", ""
        return 2, "", f"fake aws: unexpected call {args}\n"

    def live_in(self, week: str) -> int:
        return sum(1 for r in self.records.values() if r["week"] == week)

    def summarize(self, week: str) -> None:
        self.summaries[week] = self.live_in(week) + self.faults.get("summary_off_by", 0)
        if self.subscribed and self.queue is not None and not self.faults.get("no_report"):
            self.queue["messages"].append(
                f"tally report for {week}: {self.summaries[week]} records. 0 warnings.\nReport: {REPORT_URL.format(week=week)}")

    # --------------------------------------------------------------- curl
    def curl(self, cwd: str, args: list[str]):
        call = {"tool": "curl", "args": args, "method": "GET", "headers": {}, "header_names": [], "url": None,
                "body": None, "sigv4": None, "user": None}
        out = dump = write = None
        i = 0
        if args == ["--version"]:
            self.calls.append(call)
            return 0, "curl 8.5.0 (x86_64-pc-linux-gnu) libcurl/8.5.0\nProtocols: https\n", ""

        def header(line):
            name, _, value = line.partition(":")
            call["headers"][name.strip().lower()] = value.strip()
            call["header_names"].append(name.strip().lower())

        while i < len(args):
            a = args[i]
            if a in ("-sS", "-s", "-S"):
                i += 1
                continue
            assert a.startswith("-") or call["url"] is None, f"two URLs: {args}"
            if not a.startswith("-"):
                call["url"] = a
                i += 1
                continue
            value = args[i + 1]
            i += 2
            if a == "-o":
                out = Path(cwd, value)
            elif a == "-D":
                dump = Path(cwd, value)
            elif a == "-w":
                write = value
            elif a == "-X":
                call["method"] = value
            elif a == "-H":
                header(value)
            elif a in ("-K", "--config"):
                for name, v in _curlrc(Path(cwd, value)):
                    if name == "header":
                        header(v)
                    elif name == "user":
                        call["user"] = v
                    else:
                        raise AssertionError(f"unexpected curl config {name}")
            elif a == "--data-binary":
                assert value.startswith("@")
                call["body"] = Path(cwd, value[1:]).read_bytes()
            elif a == "--aws-sigv4":
                call["sigv4"] = value
            elif a == "--max-time":
                pass
            else:
                raise AssertionError(f"unexpected curl option {a}")
        self.calls.append(call)
        status, headers, body = self.http(call)
        if out:
            out.write_text(body)
        if dump:
            dump.write_text(f"HTTP/2 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        return 0, (str(status) if write == "%{http_code}" else ""), ""

    def http(self, call):
        url, method, h = call["url"], call["method"], call["headers"]
        assert url.startswith(API), url
        if url.startswith(API + "reports/"):
            # The report site: a page for the signed link, without the API key.
            assert "x-api-key" not in h, "a browser opens the link: no key"
            week = re.search(r"reports/([^/]+)/\?exp=\d+&sig=[0-9a-f]{64}$", url).group(1)
            return 200, {"content-type": "text/html; charset=utf-8"}, f"<!doctype html><html><title>tally · week {week}</title></html>"
        path, _, query = url[len(API):].partition("?")

        def js(status, doc, **headers):
            return status, {"content-type": "application/json", **headers}, json.dumps(doc)

        if path == "health":
            return js(200, {"status": "ok", "version": "0.3.0"})
        if method == "DELETE":
            signed = call["sigv4"] is not None
            if not signed:
                if self.faults.get("unsigned_delete_allowed") and h.get("x-api-key") == KEY:
                    return js(200, {"id": path.split("/")[1], "week": "", "summary": "none"})
                return js(404, NO_SIGNATURE)
            if not (call["sigv4"] == f"aws:amz:{REGION}:execute-api" and call["user"] == f"{ACCESS_KEY}:{SECRET_KEY}"
                    and h.get("x-amz-security-token") == SESSION_TOKEN):
                return js(403, {"title": "Forbidden", "detail": "The SigV4 signature does not match"})
            rid = path.split("/")[1]
            record = self.records.pop(rid, None)
            if record is None:
                return js(404, {"title": "Not Found"})
            week = record["week"]
            regenerating = week in self.summaries
            if regenerating and not self.faults.get("refresh_never"):
                self.summaries[week] = self.live_in(week)
            return js(200, {"id": rid, "week": week, "summary": "regenerating" if regenerating else "none"})
        if h.get("x-api-key") != KEY:
            status = self.faults.get("no_key_status", 403) if "x-api-key" not in h else 403
            return js(status, API_KEY_REFUSAL if status >= 400 else {})
        if self.key_inactive > 0:
            self.key_inactive -= 1
            return js(403, API_KEY_REFUSAL)
        if path == "records" and method == "POST":
            return self.post(call)
        if path.startswith("records/") and method == "GET":
            r = self.records.get(path.split("/")[1])
            if r is None:
                return js(404, {"title": "Not Found"})
            data = dict(r["data"], altered=True) if self.faults.get("get_record_altered") else r["data"]
            return js(200, {"id": r["id"], "received_at": r["received_at"], "data": data})
        if path == "records" and method == "GET":
            return self.range(parse_qs(query))
        if path == "summaries":
            return js(200, {"weeks": [{"week": w, "href": f"/summaries/{w}"} for w in sorted(self.summaries)]})
        if path.startswith("summaries/"):
            week = path.split("/")[1]
            if week not in self.summaries:
                return js(404, {"title": "Not Found", "detail": f"no summary for {week} yet"})
            return js(200, {"schema": 2, "week": week, "records": self.summaries[week]})
        return js(404, {"title": "Not Found"})

    def store(self, data: dict) -> dict:
        self.next_id += 1
        rid = f"01SMOKE{self.next_id:019d}"
        received_at = _now()
        self.records[rid] = {"id": rid, "received_at": received_at, "data": data, "week": _week(received_at)}
        return self.records[rid]

    def post(self, call):
        body, ctype = call["body"], call["headers"].get("content-type")
        key = call["headers"].get("idempotency-key")
        if key is not None and key in self.idempotency and not self.faults.get("replay_new_id"):
            first_body, doc = self.idempotency[key]
            assert first_body == body
            return 201, {"content-type": "application/json", "idempotent-replayed": "true"}, json.dumps(doc)
        if ctype == "application/x-ndjson":
            items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        else:
            assert ctype == "application/json", ctype
            items = json.loads(body)
        if isinstance(items, dict):
            r = self.store(items)
            doc = {"id": r["id"], "received_at": r["received_at"]}
        else:
            ids = [self.store(item)["id"] for item in items]
            doc = {"count": len(ids), "ids": ids}
        if key is not None:
            self.idempotency[key] = (body, doc)
        return 201, {"content-type": "application/json", "location": f"/records/{doc.get('id', '')}"}, json.dumps(doc)

    def range(self, q):
        start, end = _parse_time(q["from"][0]), _parse_time(q["to"][0])
        page_size = min(int(q.get("limit", ["100"])[0]), 4)  # small pages: the script must follow `next`
        rows = [r for r in self.records.values() if start <= _parse_time(r["received_at"]) < end]
        if "cursor" not in q:
            self.range_reads += 1
        if self.range_reads == 1 and rows and not self.faults.get("range_complete"):
            rows = rows[:-1]  # the newest record is younger than 10 s: not in the range yet
        offset = int(q["cursor"][0], 16) if "cursor" in q else 0
        page = rows[offset:offset + page_size]
        nxt = format(offset + page_size, "x") if offset + page_size < len(rows) else None
        records = [{"id": r["id"], "received_at": r["received_at"], "data": r["data"]} for r in page]
        return 200, {"content-type": "application/json"}, json.dumps({"records": records, "next": nxt})


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        while True:
            fields = data.split(b"\0")
            if len(fields) > 3 and len(fields) - 1 >= 3 + int(fields[2]):
                break
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        fields = [f.decode() for f in data.split(b"\0")]
        tool, cwd, n = fields[0], fields[1], int(fields[2])
        try:
            code, out, err = self.server.fake.call(tool, cwd, fields[3:3 + n])
        except Exception as e:  # noqa: BLE001 - the script should see it fail, the test the reason
            self.server.errors.append(f"{tool} {fields[3:3 + n]}: {e!r}")
            code, out, err = 99, "", f"fake raised {e!r}\n"
        self.request.sendall(f"{code}\0{err.replace(chr(0), '')}\0".encode() + out.encode())


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def alarm_ids(sam_template) -> list[str]:
    return [k for k, v in sam_template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"]


@pytest.fixture(scope="module")
def deploy_help() -> str:
    return subprocess.run([str(ROOT / "deploy.sh"), "--help"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def clean_help() -> str:
    return subprocess.run([str(ROOT / "clean.sh"), "--help"], capture_output=True, text=True, check=True).stdout


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str] | None, fake: FakeAws, errors: list[str]):
        self.proc, self.fake, self.errors = proc, fake, errors

    @property
    def lines(self) -> list[str]:
        return [l for l in self.proc.stdout.splitlines() if re.match(r"(PASS|FAIL|SKIP) ", l)]

    def line(self, step: str) -> str:
        (found,) = [l for l in self.lines if re.match(rf"(PASS|FAIL|SKIP) {re.escape(step)}( \(|:|$)", l)]
        return found

    def calls(self, tool: str) -> list[dict]:
        return [c for c in self.fake.calls if c["tool"] == tool]

    def aws(self, prefix: str) -> list[list[str]]:
        return [c["args"] for c in self.calls("aws") if " ".join(c["args"]).startswith(prefix)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, alarm_ids, deploy_help):
    """smoke(*args, **faults) runs scripts/aws-smoke against a fresh fake."""
    if shutil.which("jq") is None:
        pytest.fail("jq is not installed (scripts/aws-smoke needs it): run scripts/setup-tools --only apt")
    servers = []
    tmp_path = tmp_path_factory.mktemp("aws-smoke")

    def start(*args: str, env_extra: dict | None = None, help_text: str | None = None, popen: bool = False, **faults):
        fake = FakeAws(alarm_ids, deploy_help if help_text is None else help_text, faults)
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake, server.errors = fake, []
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        bin_dir = tmp_path / f"bin{len(servers)}"
        bin_dir.mkdir()
        for name in ("aws", "curl", "deploy", "clean"):
            (bin_dir / name).write_text(STUB.replace("@NAME@", name))
            (bin_dir / name).chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TALLY_"))}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", TMPDIR=str(tmp_path),
            TALLY_SMOKE_STUB_PORT=str(server.server_address[1]),
            TALLY_SMOKE_DEPLOY=str(bin_dir / "deploy"), TALLY_SMOKE_CLEAN=str(bin_dir / "clean"),
            TALLY_SMOKE_POLL_SECONDS="0", TALLY_SMOKE_KEY_TIMEOUT="30", TALLY_SMOKE_RANGE_LAG="0", TALLY_SMOKE_SETTLE_TIMEOUT="30",
            TALLY_SMOKE_RUN_TIMEOUT="30", TALLY_SMOKE_REPORT_TIMEOUT="5", TALLY_SMOKE_REFRESH_TIMEOUT="30",
            TALLY_SMOKE_ALARM_SETTLE="0", TALLY_SMOKE_STACK_TIMEOUT="30",
        )
        env.update(env_extra or {})
        cmd = [str(SMOKE), "--region", REGION, *args]
        if popen:
            # SIGINT at its default, whatever this process inherited: a shell
            # started with it ignored (pytest run as a background job) cannot
            # trap it, and the interrupt tests would see the trap never run.
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            return proc, Run(None, fake, server.errors)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        return Run(proc, fake, server.errors)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def assert_torn_down(run: Run) -> None:
    (clean,) = run.calls("clean")
    (deploy,) = [c for c in run.calls("deploy") if "--help" not in c["args"]]
    stack = deploy["args"][deploy["args"].index("--stack-name") + 1]
    assert clean["args"] == ["--stack-name", stack, "--region", REGION, "--yes"]
    assert run.fake.stack is None, "the stack is gone"
    assert run.fake.queue is None, "the report queue is gone"
    assert run.line("clean.sh").startswith("PASS clean.sh")


# ------------------------------------------------------------------ the good run
@pytest.fixture(scope="module")
def good_run(smoke):
    return smoke()


def test_every_step_passes_against_answers_like_aws(good_run, deploy_help):
    run = good_run
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    assert not run.errors
    # One PASS line per step, in order, and the summary.
    assert [re.match(r"PASS (.+?)( \(|$)", l).group(1) for l in run.lines] == STEPS, run.proc.stdout
    assert "aws-smoke PASS: stack tally-smoke-" in run.proc.stdout and "20 passed, 0 failed, 0 skipped" in run.proc.stdout
    assert "none other in ALARM" in run.line("alarms") and "as expected" not in run.line("alarms")

    # deploy.sh: a new tally-smoke-<random> stack, no questions, its table
    # deleted with it, each week cut into 3 parts.
    (deploy,) = [c["args"] for c in run.calls("deploy") if "--help" not in c["args"]]
    stack = deploy[deploy.index("--stack-name") + 1]
    assert re.fullmatch(r"tally-smoke-[0-9a-f]{8}", stack)
    assert deploy[deploy.index("--region") + 1] == REGION and "--yes" in deploy
    overrides = deploy[deploy.index("--parameter-overrides") + 1]
    assert 'WeeklyParts="3"' in overrides and 'RetainTable="false"' in overrides
    assert ("--no-verify" in deploy) == ("--no-verify" in deploy_help)
    # The stack did not exist before (checked first), and is gone after.
    order = [c["tool"] + " " + " ".join(c["args"][:2]) for c in run.fake.calls if c["tool"] != "curl"]
    assert order.index("aws cloudformation describe-stacks") < order.index(f"deploy --stack-name {stack}")
    assert_torn_down(run)

    # The key: fetched with the GetApiKeyCommand output...
    (get_key,) = run.aws("apigateway get-api-key")
    assert get_key == ["apigateway", "get-api-key", "--api-key", KEY_ID, "--include-value", "--query", "value",
                       "--output", "text", "--region", REGION]
    http = [c for c in run.calls("curl") if c["url"]]
    assert all(KEY not in " ".join(c["args"]) and SECRET_KEY not in " ".join(c["args"]) for c in run.calls("curl")), \
        "secrets only in curl config files, never on a command line"
    api = [c for c in http if c["url"].startswith(API) and c["url"] != API + "health"]
    keyless = [c for c in api if "x-api-key" not in c["headers"]]
    # ...and sent as x-api-key on every API call but the 401/403 probe, the
    # signed DELETEs and the report link (a browser's GET of the signed page).
    probe = [c for c in keyless if c["method"] == "POST"]
    assert len(probe) == 1 and probe[0]["url"] == API + "records"
    signed = [c for c in keyless if c["method"] == "DELETE"]
    report = [c for c in keyless if c["url"].startswith(API + "reports/")]
    assert len(signed) == 2 and len(report) == 1 and len(keyless) == 4
    for c in signed:
        assert c["sigv4"] == f"aws:amz:{REGION}:execute-api"
        assert c["user"] == f"{ACCESS_KEY}:{SECRET_KEY}" and c["headers"]["x-amz-security-token"] == SESSION_TOKEN
    assert all(c["headers"]["x-api-key"] == KEY for c in api if c not in keyless)
    # The unsigned DELETE (API key only) came first and did not erase.
    deletes = [c for c in api if c["method"] == "DELETE"]
    assert deletes[0]["sigv4"] is None and deletes[0]["headers"]["x-api-key"] == KEY
    assert deletes[1]["sigv4"] is not None and deletes[1]["url"] == deletes[0]["url"]

    # The first POST met an inactive key (403) and was retried.
    posts = [c for c in api if c["method"] == "POST" and "x-api-key" in c["headers"]]
    assert posts[0]["body"] == posts[1]["body"] and json.loads(posts[0]["body"])["kind"] == "single"
    # Single, array, NDJSON: their content types.
    kinds = {}
    for c in posts:
        body = c["body"].decode()
        kinds.setdefault(body.split('"kind":"')[1].split('"')[0], set()).add(c["headers"]["content-type"])
    assert kinds == {"single": {"application/json"}, "array": {"application/json"},
                     "ndjson": {"application/x-ndjson"}, "idempotent": {"application/json"}}
    # Idempotency-Key: sent twice, same key, same body.
    replays = [c for c in posts if "idempotency-key" in c["headers"]]
    assert len(replays) == 2
    assert replays[0]["headers"]["idempotency-key"] == replays[1]["headers"]["idempotency-key"]
    assert replays[0]["body"] == replays[1]["body"]
    assert sum(1 for r in run.fake.records.values() if r["data"]["kind"] == "idempotent") == 1

    # The range read: from/to, every page (the fake pages by 4), read again
    # when the newest record was not in the range yet.
    ranges = [c for c in api if c["url"].startswith(API + "records?")]
    assert all(re.search(r"from=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ&to=\d{4}-.+Z&limit=1000", c["url"]) for c in ranges)
    assert any("cursor=" in c["url"] for c in ranges) and len(ranges) >= 4

    # The state machine: the week of the records, as the rerun command's input.
    (start,) = run.aws("stepfunctions start-execution")
    week = next(iter(run.fake.summaries))
    assert json.loads(start[start.index("--input") + 1]) == {"week": week}
    assert start[start.index("--state-machine-arn") + 1].endswith(f":stateMachine:{stack}-weekly")
    assert f"week {week}, 3 parts, SUCCEEDED" in run.line("state machine")
    # The report: a queue subscribed to the report topic, removed again.
    (subscribe,) = run.aws("sns subscribe")
    assert subscribe[subscribe.index("--topic-arn") + 1].startswith(f"arn:aws:sns:{REGION}:{ACCOUNT}:{stack}-ReportTopic")
    assert run.aws("sns unsubscribe") and run.aws("sqs delete-queue")
    assert any(c["url"].startswith(API + "reports/") and "x-api-key" not in c["headers"] for c in http)
    # The erasure refresh: the summary lost the second erased record.
    assert run.fake.summaries[week] == 5
    assert "rewritten: 5 records" in run.line("erasure refresh")
    # The alarms: the stack's, by name.
    (describe,) = run.aws("cloudwatch describe-alarms")
    for alarm in run.fake.alarm_ids:
        assert f"{stack}-{alarm}-ABC123" in describe


def test_the_options_it_passes_exist_in_deploy_and_clean(good_run, deploy_help, clean_help):
    """Stand-ins accept anything: hold the calls against the real scripts' --help."""
    run = good_run
    (deploy,) = [c["args"] for c in run.calls("deploy") if "--help" not in c["args"]]
    for option in (a for a in deploy if a.startswith("--") and a != "--no-verify"):
        assert re.search(rf"^\s+{re.escape(option)}\b", deploy_help, re.M), option
    for option in (a for a in run.calls("clean")[0]["args"] if a.startswith("--")):
        assert re.search(rf"^\s+{re.escape(option)}\b", clean_help, re.M), option
    params = re.findall(r'(\w+)="', deploy[deploy.index("--parameter-overrides") + 1])
    template = (ROOT / "template.yaml").read_text()
    for p in params:
        assert re.search(rf"^  {p}:\n    Type:", template, re.M), f"{p} is a template parameter"


# ------------------------------------------------------------ wrong answers
AFTER_RUN = ["summary", "summary list", "report link", "erasure refresh"]
# Faults that do not hide one another share a run: (faults, extra env,
# {step: (FAIL or SKIP, words of its line)}); every other step must PASS.
WRONG = {
    "api-answers": (
        {"no_key_status": 200, "get_record_altered": True, "replay_new_id": True, "range_complete": True,
         "unsigned_delete_allowed": True, "no_report": True, "refresh_never": True,
         "alarms": {"Api5xxAlarm": "ALARM", "DeadLetterQueueDepthAlarm": "INSUFFICIENT_DATA"}},
        {"TALLY_SMOKE_REPORT_TIMEOUT": "0", "TALLY_SMOKE_REFRESH_TIMEOUT": "0"},
        {"no key refused": ("FAIL", "expected 403 (API Gateway's API_KEY answer; tally serve says 401), got HTTP 200"),
         "get record": ("FAIL", "expected {\"id\":"),
         "idempotency replay": ("FAIL", "the replay answered id '01SMOKE"),
         "replay stored once": ("FAIL", "the range holds 2 records of the replayed POST, expected 1"),
         "erasure": ("FAIL", "a DELETE with only the API key answered HTTP 200"),
         "report link": ("FAIL", "no report on the report topic within 0s"),
         "erasure refresh": ("FAIL", "after 0s the summary of "),
         "alarms": ("FAIL", "in ALARM (or not found): Api5xxAlarm (")}),
    "execution-failed": (
        {"execution": "FAILED"}, {},
        {"state machine": ("FAIL", "the execution ended FAILED: States.TaskFailed: {\"errorMessage\":\"AccessDenied"),
         **{s: ("SKIP", "no successful run (step state machine)") for s in AFTER_RUN[:3]},
         "erasure refresh": ("SKIP", "no summary to rewrite (step summary)")}),
    "one-part": (
        {"parts_run": 1}, {},
        {"state machine": ("FAIL", "SUCCEEDED, but 1 part(s) ran; the stack has WeeklyParts=3"),
         **{s: ("SKIP", "no successful run") for s in AFTER_RUN[:3]}, "erasure refresh": ("SKIP", "no summary")}),
    "missing-output": (
        {"missing_outputs": ["ReportTopicArn"]}, {},
        {"deploy": ("FAIL", "the stack has no ReportTopicArn output"),
         **{s: ("SKIP", "the deploy failed") for s in STEPS[2:-1]}}),
}


@pytest.mark.parametrize("case", WRONG)
def test_a_wrong_answer_fails_its_step_exits_non_zero_and_still_tears_down(smoke, case):
    faults, env, expected = WRONG[case]
    run = smoke(env_extra=env, **faults)
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    assert not run.errors
    for step in STEPS:
        status, words = expected.get(step, ("PASS", ""))
        line = run.line(step)
        assert line.startswith(f"{status} {step}") and words in line, line
    for step, (status, _) in expected.items():
        assert (f"  - {step}: " in run.proc.stdout) == (status == "FAIL"), "the summary lists each failure"
    assert "aws-smoke FAIL" in run.proc.stdout
    assert_torn_down(run)


@pytest.mark.parametrize("left", ["ROLLBACK_IN_PROGRESS", "REVIEW_IN_PROGRESS", None])
def test_a_failed_deploy_skips_the_rest_and_removes_what_it_left(smoke, deploy_help, left):
    """A rollback is waited for; a change set never executed (REVIEW_IN_PROGRESS) is not."""
    run = smoke("--deploy-verify", deploy_fails=left, help_text=deploy_help + "  --no-verify     skip it\n")
    assert run.proc.returncode == 1
    (deploy,) = [c["args"] for c in run.calls("deploy") if "--help" not in c["args"]]
    assert "--no-verify" not in deploy, "--deploy-verify lets deploy.sh verify"
    assert run.line("deploy").startswith("FAIL deploy: deploy.sh exited with status 1")
    for step in STEPS[2:-1]:
        assert run.line(step) == f"SKIP {step}: the deploy failed"
    assert f"the deploy did not complete (stack: {left})" in run.proc.stderr, "deploy.sh's output is shown"
    assert not run.calls("curl") or all(c["url"] is None for c in run.calls("curl"))
    if left is None:
        assert not run.calls("clean")
        assert run.line("clean.sh") == "PASS clean.sh (nothing to remove: the stack was never created)"
        return
    assert_torn_down(run)
    if left == "ROLLBACK_IN_PROGRESS":
        assert "stack tally-smoke-" in run.proc.stderr and "is ROLLBACK_IN_PROGRESS; waiting before clean.sh" in run.proc.stderr
    else:
        assert "waiting before clean.sh" not in run.proc.stderr


def test_keep_skips_the_teardown_even_after_a_failure_and_says_how_to_remove_the_stack(smoke, deploy_help):
    run = smoke("--keep", "--stack-name", "tally-smoke-mine", summary_off_by=1,
                help_text=deploy_help + "  --no-verify     skip the first-run verification\n")
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    # The wrong answer (a summary that does not count what was stored) fails its step.
    assert run.line("summary").startswith("FAIL summary: the summary of ")
    assert "counts 7 records; this run stored 6 there" in run.line("summary")
    assert run.line("erasure refresh") == "SKIP erasure refresh: no summary to rewrite (step summary)"
    (deploy,) = [c["args"] for c in run.calls("deploy") if "--help" not in c["args"]]
    assert "--no-verify" in deploy, "passed when deploy.sh has it"
    assert not run.calls("clean") and run.fake.stack is not None
    assert ("KEPT stack tally-smoke-mine in us-east-1 (--keep): remove it with "
            "./clean.sh --stack-name tally-smoke-mine --region us-east-1 --yes") in run.proc.stdout
    assert run.fake.queue is None, "its own report queue is removed all the same"
    assert "17 passed, 1 failed, 1 skipped" in run.proc.stdout


def test_an_existing_stack_is_refused_and_left_alone(smoke):
    run = smoke("--stack-name", "tally", existing_stack={"name": "tally", "status": "UPDATE_COMPLETE"})
    assert run.proc.returncode == 1
    assert run.line("prerequisites").startswith("FAIL prerequisites: stack tally already exists in us-east-1 (UPDATE_COMPLETE)")
    assert not [c for c in run.calls("deploy") if "--help" not in c["args"]] and not run.calls("clean")
    assert run.fake.stack["status"] == "UPDATE_COMPLETE"
    assert [l.split(" ")[0] for l in run.lines] == ["FAIL"]


def test_an_interrupted_run_still_removes_the_stack(smoke):
    """Ctrl-C: SIGINT to the whole process group (TERM and HUP take the same trap)."""
    sig, code = signal.SIGINT, 130
    proc, run = smoke(popen=True, execution="never", env_extra={"TALLY_SMOKE_POLL_SECONDS": "0.05"})
    deadline = time.monotonic() + 30
    while not run.aws("stepfunctions describe-execution"):
        assert proc.poll() is None and time.monotonic() < deadline, "never reached the state machine"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    run.proc = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == code, out + err
    assert run.line("state machine") == f"FAIL state machine: interrupted (SIG{sig.name[3:]})"
    assert_torn_down(run)


def test_help_and_usage_errors():
    res = subprocess.run([str(SMOKE), "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for step in STEPS[1:]:
        assert f"\n  {step} " in res.stdout, step
    for option in ("--region", "--stack-name", "--keep", "--parts", "--deploy-verify"):
        assert option in res.stdout
    for args, message in [(["--bogus"], "unknown option: --bogus"), (["--region"], "--region needs a value"),
                          (["--parts", "1"], "--parts must be a whole number from 2 to 28")]:
        res = subprocess.run([str(SMOKE), *args], capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr and "--help" in res.stderr


def test_deploy_md_documents_every_step():
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    section = text[text.index("## Smoke test on AWS: `scripts/aws-smoke`"):text.index("## 7. Troubleshooting")]
    for step in STEPS:
        assert f"`{step}`" in section, step
    for option in ("--region", "--stack-name", "--s3-bucket", "--parts", "--deploy-verify", "--keep"):
        assert f"`{option}" in section, option


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_passes_and_check_infra_lints_it():
    res = subprocess.run(["shellcheck", str(SMOKE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    # scripts/check-infra's shellcheck step takes scripts/* with a sh/bash shebang.
    check_infra = (ROOT / "scripts" / "check-infra").read_text()
    assert "for f in scripts/*; do" in check_infra
    pattern = re.search(r"grep -Eq '(\^#!\.\*\\b\(ba\)\?sh\\b)'", check_infra).group(1)
    assert re.match(pattern, SMOKE.read_text().splitlines()[0])
