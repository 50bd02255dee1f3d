"""deploy.sh and clean.sh behave as documented, without an AWS account.

clean.sh runs against a moto server (started here on a free port) holding a
small stand-in stack with the same outputs as template.yaml: a versioned
bucket with more than one DeleteObjects batch of versions and delete markers,
and a retained table.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_scripts.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

STAND_IN = """
Resources:
  SummaryBucket:
    Type: AWS::S3::Bucket
  RecordsTable:
    Type: AWS::DynamoDB::Table
    DeletionPolicy: Retain
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}, {AttributeName: sk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}, {AttributeName: sk, KeyType: RANGE}]
Outputs:
  SummaryBucketName: {Value: !Ref SummaryBucket}
  RecordsTableName: {Value: !Ref RecordsTable}
  RecordsTableRetained: {Value: "true"}
  WeeklyScheduleName: {Value: !Sub "${AWS::StackName}-weekly"}
"""

# SAM's managed artifact stack, as `sam deploy --resolve-s3` creates it.
SAM_MANAGED = """
Resources:
  SamCliSourceBucket:
    Type: AWS::S3::Bucket
Outputs:
  SourceBucket: {Value: !Ref SamCliSourceBucket}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_aws_env() -> dict[str, str]:
    """The caller's environment minus any AWS identity, plus the venv tools."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["SAM_CLI_TELEMETRY"] = "0"
    return env


@pytest.fixture(scope="module")
def moto_env():
    moto = VENV_BIN / "moto_server"
    if not moto.exists():
        pytest.fail(f"moto_server not found in {VENV_BIN}: run scripts/setup-python")
    port = _free_port()
    proc = subprocess.Popen([str(moto), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto_server did not start")
        env = _no_aws_env()
        env.update(
            AWS_ENDPOINT_URL=url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _boto(env: dict[str, str], service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _outputs(cfn, stack: str) -> dict[str, str]:
    outs = cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    return {o["OutputKey"]: o["OutputValue"] for o in outs}


def run(script: str, *args: str, env: dict[str, str], stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / script), *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300,
    )


def test_clean_empties_every_version_deletes_the_stack_and_keeps_the_table(moto_env):
    cfn, s3, ddb = _boto(moto_env, "cloudformation"), _boto(moto_env, "s3"), _boto(moto_env, "dynamodb")
    cfn.create_stack(StackName="tally-clean", TemplateBody=STAND_IN)
    out = _outputs(cfn, "tally-clean")
    bucket, table = out["SummaryBucketName"], out["RecordsTableName"]
    # GIVEN a versioned bucket holding more than one DeleteObjects batch (1000)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def seed(i: int) -> None:
        key = f"summaries/2026-W{i % 52 + 1:02d}/part-{i}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
        s3.put_object(Bucket=bucket, Key=key, Body=b"2")
        if i % 2 == 0:
            s3.delete_object(Bucket=bucket, Key=key)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(seed, range(450)))
    expected = 450 * 2 + 225

    # WHEN clean.sh runs as a dry run, THEN nothing is deleted
    dry = run("clean.sh", "--stack-name", "tally-clean", "--region", "us-east-1", "--dry-run", env=moto_env)
    assert dry.returncode == 0, dry.stderr
    assert f"holds {expected} object versions" in dry.stdout
    assert s3.list_object_versions(Bucket=bucket).get("Versions")

    # WHEN it runs for real
    res = run("clean.sh", "--stack-name", "tally-clean", "--region", "us-east-1", "--yes", env=moto_env)
    assert res.returncode == 0, res.stdout + res.stderr
    # THEN it reported progress per batch, emptied the bucket and deleted the stack
    assert "deleted 1000 versions so far" in res.stdout
    assert f"({expected} versions and delete markers deleted)" in res.stdout
    assert "Stack deleted successfully." in res.stdout
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # AND it says the table was kept, and it was
    assert f"Records table {table} (RetainTable=true)" in res.stdout
    assert ddb.describe_table(TableName=table)["Table"]["TableName"] == table


def test_clean_disables_the_schedule_before_emptying_the_bucket_and_names_artifact_buckets(moto_env):
    cfn, s3, scheduler = _boto(moto_env, "cloudformation"), _boto(moto_env, "s3"), _boto(moto_env, "scheduler")
    cfn.create_stack(StackName="aws-sam-cli-managed-default", TemplateBody=SAM_MANAGED)
    sam_bucket = _outputs(cfn, "aws-sam-cli-managed-default")["SourceBucket"]
    # GIVEN a stack deployed with deploy.sh --s3-bucket my-artifacts, its
    # enabled schedule and a summary in its bucket
    cfn.create_stack(StackName="tally-sched", TemplateBody=STAND_IN,
                     Tags=[{"Key": "tally:artifact-bucket", "Value": "my-artifacts"}])
    bucket = _outputs(cfn, "tally-sched")["SummaryBucketName"]
    s3.put_object(Bucket=bucket, Key="summaries/2026-W01/summary.json", Body=b"{}")
    target = {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:weekly",
              "RoleArn": "arn:aws:iam::123456789012:role/schedule", "Input": "{}"}
    scheduler.create_schedule(Name="tally-sched-weekly", ScheduleExpression="cron(0 3 ? * MON *)",
                              ScheduleExpressionTimezone="UTC", Description="tally weekly summary",
                              FlexibleTimeWindow={"Mode": "OFF"}, Target=target, State="ENABLED")
    # WHEN clean.sh runs
    res = run("clean.sh", "--stack-name", "tally-sched", "--region", "us-east-1", "--yes", env=moto_env)
    assert res.returncode == 0, res.stdout + res.stderr
    # THEN the schedule was disabled first, keeping its definition...
    out = res.stdout
    assert out.index("Disabled the weekly schedule tally-sched-weekly.") < out.index("Deleting S3 bucket contents")
    schedule = scheduler.get_schedule(Name="tally-sched-weekly")
    assert schedule["State"] == "DISABLED"
    assert schedule["ScheduleExpression"] == "cron(0 3 ? * MON *)" and schedule["Target"]["Arn"] == target["Arn"]
    assert schedule["Description"] == "tally weekly summary"
    # ...and both artifact buckets it did not create are named, not deleted.
    assert "Artifact bucket my-artifacts (given to deploy.sh --s3-bucket; not created by this stack)" in out
    assert "aws s3 rm s3://my-artifacts/tally-sched/ --recursive" in out
    assert f"SAM's managed artifact bucket {sam_bucket}" in out
    assert sam_bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_clean_refuses_without_a_terminal_unless_yes(moto_env):
    cfn = _boto(moto_env, "cloudformation")
    cfn.create_stack(StackName="tally-keep", TemplateBody=STAND_IN)
    res = run("clean.sh", "--stack-name", "tally-keep", "--region", "us-east-1", env=moto_env)
    assert res.returncode == 1
    assert "re-run with --yes" in res.stderr
    assert cfn.describe_stacks(StackName="tally-keep")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"


def test_clean_names_the_missing_stack_and_how_to_list_stacks(moto_env):
    res = run("clean.sh", "--stack-name", "no-such-stack", "--region", "us-east-1", "--yes", env=moto_env)
    assert res.returncode == 1
    assert "no stack named 'no-such-stack'" in res.stderr and "list-stacks" in res.stderr


@pytest.mark.parametrize("script", ["deploy.sh", "clean.sh"])
def test_unknown_options_and_missing_values_say_what_to_do(script):
    env = _no_aws_env()
    res = run(script, "--bogus", env=env)
    assert res.returncode == 1 and "--help" in res.stderr
    res = run(script, "--region", env=env)
    assert res.returncode == 1 and "needs a value" in res.stderr
    assert run(script, "--help", env=env).returncode == 0


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo for the tool check")
def test_deploy_without_credentials_points_to_aws_configure_and_dry_run():
    env = _no_aws_env()
    res = run("deploy.sh", "--stack-name", "tally", "--region", "eu-west-1", "--yes", env=env)
    if "not installed" in res.stderr or "target" in res.stderr:
        pytest.skip(f"build tools missing: {res.stderr.strip()}")
    assert res.returncode == 1
    assert "no valid AWS credentials" in res.stderr
    assert "aws configure" in res.stderr and "--dry-run" in res.stderr


def test_deploy_rejects_bad_names_before_calling_aws():
    env = _no_aws_env()
    res = run("deploy.sh", "--stack-name", "1bad_name", "--region", "eu-west-1", "--yes", env=env)
    assert res.returncode == 1 and "invalid stack name" in res.stderr
    res = run("deploy.sh", "--stack-name", "tally", "--region", "Europe", "--yes", env=env)
    assert res.returncode == 1 and "invalid region" in res.stderr


# ---------------------------------------------------------------- deploy.sh
# deploy.sh against stand-ins for the CLI tools, at the process boundary:
# `sam` and `aws` record their arguments and answer from a scenario (a
# change set, the stack states before and after executing it); `aws`
# evaluates the script's real --query with jmespath and prints it the way
# the AWS CLI's text output does. cargo, cargo-lambda and rustup only need
# to exist. The stack's parameters are the scenario's, updated by the
# overrides sam was given once the change set is executed (as CloudFormation
# would). For the first-deploy verification the stand-in plays EventBridge
# Scheduler and Step Functions: the one-time schedule "starts" an execution
# (with the schedule's Input) on the first list-executions after it was
# created, unless the scenario says it never starts; that execution then
# reports the scenario's statuses, one per describe-execution status query.
AWS_STUB = r'''#!@PYTHON@
import json, os, sys
import jmespath

state_dir = os.environ["STUB_DIR"]
scenario = json.load(open(os.path.join(state_dir, "scenario.json")))
args = sys.argv[1:]
with open(os.path.join(state_dir, "calls.log"), "a") as log:
    log.write("aws " + " ".join(args) + "\n")

def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default

def text(value):
    if value is None:
        return "None"
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "\n".join("\t".join(text(x) for x in row) for row in value)
        return "\t".join(text(x) for x in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)

def answer(doc):
    query = opt("--query")
    value = jmespath.search(query, doc) if query else doc
    print(json.dumps(value) if opt("--output") == "json" else text(value))
    sys.exit(0)

def path(name):
    return os.path.join(state_dir, name)

def load(name, default):
    return json.load(open(path(name))) if os.path.exists(path(name)) else default

def save(name, value):
    json.dump(value, open(path(name), "w"))

executed = os.path.exists(path("executed"))
verify = dict({"starts": True, "statuses": ["RUNNING", "SUCCEEDED"], "error": None, "cause": None,
               "history": [], "dlq_messages": "0", "create_fails": False}, **scenario.get("verify", {}))
cmd = " ".join(args[:2])
STACK = "arn:aws:states:us-east-1:123456789012:stateMachine:tally-weekly"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:tally-weekly:"
OLD_EXECUTION = EXECUTION + "0ld-verify-of-the-same-week"
if cmd == "lambda get-account-settings":
    if scenario.get("lambda") is None:
        sys.stderr.write("An error occurred (AccessDeniedException) when calling the GetAccountSettings operation\n")
        sys.exit(254)
    answer({"AccountLimit": scenario["lambda"]})
if cmd == "scheduler create-schedule":
    if verify["create_fails"]:
        sys.stderr.write("An error occurred (AccessDeniedException) when calling the CreateSchedule operation: "
                         "not authorized to perform: iam:PassRole\n")
        sys.exit(254)
    save("schedule.json", args)
    save("list_calls_after_schedule", 0)
    answer({"ScheduleArn": "arn:aws:scheduler:us-east-1:123456789012:schedule/default/" + opt("--name")})
if cmd in ("scheduler get-schedule", "scheduler delete-schedule"):
    if not os.path.exists(path("schedule.json")) or os.path.exists(path("schedule_gone")):
        sys.stderr.write("An error occurred (ResourceNotFoundException): Schedule not found\n")
        sys.exit(254)
    if cmd == "scheduler delete-schedule":
        open(path("schedule_gone"), "w").close()
    answer({"Name": opt("--name")})
def schedule_input():
    target = json.loads(opt_of(load("schedule.json", []), "--target"))
    return target["Input"]
def opt_of(argv, name):
    return argv[argv.index(name) + 1]
def started():
    return os.path.exists(path("started"))
if cmd == "stepfunctions list-executions":
    executions = [{"executionArn": OLD_EXECUTION, "status": "SUCCEEDED"}]
    if os.path.exists(path("schedule.json")) and not os.path.exists(path("schedule_gone")) and verify["starts"]:
        open(path("started"), "w").close()
        schedule = load("schedule.json", [])
        if opt_of(schedule, "--action-after-completion") == "DELETE":
            open(path("schedule_gone"), "w").close()
    if started():
        executions.insert(0, {"executionArn": EXECUTION + "f1r5t-run", "status": "RUNNING"})
    answer({"executions": executions})
if cmd == "stepfunctions describe-execution":
    arn = opt("--execution-arn")
    if arn == OLD_EXECUTION:
        answer({"executionArn": arn, "status": "SUCCEEDED", "input": schedule_input()})
    polls = load("status_polls", 0)
    if opt("--query") == "status":
        save("status_polls", polls + 1)
    status = verify["statuses"][min(polls, len(verify["statuses"]) - 1)]
    answer({"executionArn": arn, "status": status, "input": schedule_input(),
            "error": verify["error"], "cause": verify["cause"]})
if cmd == "stepfunctions get-execution-history":
    answer({"events": verify["history"]})
if cmd == "sqs get-queue-attributes":
    answer({"Attributes": {"ApproximateNumberOfMessages": verify["dlq_messages"]}})
if cmd == "sts get-caller-identity":
    answer({"Account": "123456789012"})
if cmd == "configure get":
    sys.exit(1)
if cmd in ("cloudformation describe-stack-resource", "apigateway get-account"):
    if cmd == "apigateway get-account":
        answer({"cloudwatchRoleArn": "arn:aws:iam::123456789012:role/existing"})
    sys.exit(254)
if cmd == "s3api head-bucket":
    sys.exit(0)
if cmd == "cloudformation describe-change-set":
    answer({"Changes": [{"Type": "Resource", "ResourceChange": c} for c in scenario["changes"]]})
if cmd == "cloudformation list-change-sets":
    answer({"Summaries": [{"ChangeSetId": scenario["changeset"], "ExecutionStatus": "AVAILABLE", "CreationTime": "2026-01-01"}]})
if cmd == "cloudformation execute-change-set":
    open(path("executed"), "w").close()
    sys.exit(0)
if cmd == "cloudformation describe-stacks":
    status = scenario["after"] if executed else scenario["before"]
    if status is None:
        sys.exit(254)
    outputs = [{"OutputKey": k, "OutputValue": v} for k, v in {
        "ApiUrl": "https://abc.execute-api.us-east-1.amazonaws.com/Prod/", "ApiKeyId": "key1",
        "GetApiKeyCommand": "aws apigateway get-api-key --api-key key1", "SummaryBucketName": "tally-summarybucket-1",
        "RecordsTableName": "tally-RecordsTable-1", "RecordsTableRetained": "true",
        "WeeklyStateMachineArn": STACK,
        "WeeklyScheduleRoleArn": "arn:aws:iam::123456789012:role/tally-WeeklyScheduleRole-ABC",
        "DeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/tally-WeeklyDeadLetterQueue-XYZ",
        "DeadLetterQueueArn": "arn:aws:sqs:us-east-1:123456789012:tally-WeeklyDeadLetterQueue-XYZ",
        "WeeklyFunctionLogGroupName": "tally-WeeklyFunctionLogGroup-LOG",
        "RerunWeekCommand": "aws stepfunctions start-execution --state-machine-arn " + STACK,
        "ReportLinkCommand": "tally report-link --week 2026-W47 --public-url https://abc.execute-api.us-east-1.amazonaws.com/Prod/ "
                             "--link-secret-arn arn:aws:secretsmanager:us-east-1:123456789012:secret:Link-AbC --region us-east-1",
    }.items()]
    params = dict(scenario["params"])
    if executed:
        params.update(load("overrides.json", {}))
    parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]
    answer({"Stacks": [{"StackStatus": status, "Outputs": outputs, "Parameters": parameters}]})
if cmd == "cloudformation describe-stack-events":
    answer({"StackEvents": [
        {"LogicalResourceId": "ApiFunction", "ResourceStatus": "UPDATE_FAILED", "ResourceStatusReason": "Resource handler returned message: boom"},
        {"LogicalResourceId": "tally", "ResourceStatus": "UPDATE_IN_PROGRESS", "ResourceStatusReason": "User Initiated"}]})
sys.stderr.write(f"aws stub: unexpected call {args}\n")
sys.exit(2)
'''

SAM_STUB = r'''#!@PYTHON@
import json, os, shlex, sys
state_dir = os.environ["STUB_DIR"]
scenario = json.load(open(os.path.join(state_dir, "scenario.json")))
with open(os.path.join(state_dir, "calls.log"), "a") as log:
    log.write("sam " + " ".join(sys.argv[1:]) + "\n")
if sys.argv[1] == "deploy":
    overrides = sys.argv[sys.argv.index("--parameter-overrides") + 1]
    json.dump(dict(kv.split("=", 1) for kv in shlex.split(overrides)),
              open(os.path.join(state_dir, "overrides.json"), "w"))
    if scenario["changeset"] is None:
        print("No changes to deploy. Stack tally is up to date")
    elif scenario.get("print_arn", True):
        print("Changeset created successfully. " + scenario["changeset"])
'''

CHANGESET = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/samcli-deploy1/0123abcd"
TABLE_REPLACED = {"Action": "Modify", "LogicalResourceId": "RecordsTable", "ResourceType": "AWS::DynamoDB::Table", "Replacement": "True"}
BUCKET_REMOVED = {"Action": "Remove", "LogicalResourceId": "SummaryBucket", "ResourceType": "AWS::S3::Bucket"}
TABLE_MAYBE_REPLACED = dict(TABLE_REPLACED, Replacement="Conditional")
FUNCTION_CHANGED = {"Action": "Modify", "LogicalResourceId": "ApiFunction", "ResourceType": "AWS::Lambda::Function", "Replacement": "False"}
TABLE_POLICY_ONLY = dict(TABLE_REPLACED, Replacement="False")
LAMBDA_LIMITS = {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 1000}


@pytest.fixture
def stubs(tmp_path):
    """A PATH of stand-ins and a scenario setter; returns (env, set, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("aws", AWS_STUB), ("sam", SAM_STUB)):
        (bin_dir / name).write_text(body.replace("@PYTHON@", sys.executable))
    (bin_dir / "cargo").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "cargo-lambda").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "rustup").write_text("#!/bin/sh\necho aarch64-unknown-linux-gnu\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = _no_aws_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["STUB_DIR"] = str(tmp_path)
    env["TALLY_DEPLOY_POLL_SECONDS"] = "0"
    env["TALLY_VERIFY_POLL_SECONDS"] = "0"
    env["TALLY_VERIFY_TIMEOUT_SECONDS"] = "5"

    def scenario(changes=(), before="UPDATE_COMPLETE", after="UPDATE_COMPLETE", changeset=CHANGESET, print_arn=True,
                 params=None, lambda_limits=LAMBDA_LIMITS, verify=None):
        """The stack's parameters default to an existing stack that has an
        alarm recipient; verify overrides the verification's defaults (the
        execution starts and succeeds)."""
        (tmp_path / "scenario.json").write_text(json.dumps(
            {"changes": list(changes), "before": before, "after": after, "changeset": changeset, "print_arn": print_arn,
             "params": {"AlarmEmail": "ops@example.com"} if params is None else params,
             "lambda": lambda_limits, "verify": verify or {}}))

    def calls() -> list[str]:
        log = tmp_path / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    return env, scenario, calls


DEPLOY_ARGS = ("--stack-name", "tally", "--region", "us-east-1", "--s3-bucket", "my-artifacts")


def run_in_terminal(script: str, *args: str, env: dict[str, str], answer: str) -> subprocess.CompletedProcess[str]:
    """Run with a terminal on stdin (deploy.sh asks only then), answer typed ahead."""
    import pty

    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        proc = subprocess.run([str(ROOT / script), *args], cwd=ROOT, env=env, stdin=slave,
                              capture_output=True, text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    return proc


def executed(calls: list[str]) -> bool:
    return any(c.startswith("aws cloudformation execute-change-set") for c in calls)


@pytest.mark.parametrize("change", [TABLE_REPLACED, BUCKET_REMOVED, TABLE_MAYBE_REPLACED],
                         ids=["table-replaced", "bucket-removed", "table-maybe-replaced"])
@pytest.mark.parametrize("how", ["yes", "no-terminal", "terminal-answering-yes"])
def test_deploy_never_executes_a_change_set_that_replaces_or_deletes_data(stubs, change, how):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED, change])
    if how == "terminal-answering-yes":
        res = run_in_terminal("deploy.sh", *DEPLOY_ARGS, env=env, answer="y\n")
    else:
        res = run("deploy.sh", *DEPLOY_ARGS, *(["--yes"] if how == "yes" else []), env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert not executed(calls())
    # It shows which resources and stops, and says how to go on.
    assert f"{change['Action']} {change['LogicalResourceId']} ({change['ResourceType']}" in res.stdout
    assert "ApiFunction" not in res.stdout.split("would replace or delete")[1]
    assert "--allow-replacement" in res.stderr and "not executed" in res.stderr
    assert "deployed" not in res.stdout.replace("nothing was deployed", "")
    # sam only ever created the change set.
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert "--no-execute-changeset" in deploy and "--confirm-changeset" not in deploy.replace("--no-confirm-changeset", "")


def test_deploy_executes_a_replacement_only_with_allow_replacement(stubs):
    env, scenario, calls = stubs
    scenario([BUCKET_REMOVED, TABLE_REPLACED])
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", "--allow-replacement", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Remove SummaryBucket" in res.stdout and "Modify RecordsTable" in res.stdout
    assert executed(calls())
    assert "tally is deployed" in res.stdout


def test_deploy_executes_harmless_changes_including_a_table_policy_change(stubs):
    """Flipping RetainTable modifies the table without replacing it: allowed."""
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED, TABLE_POLICY_ONLY])
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert executed(calls())
    assert "tally is deployed: stack tally in us-east-1" in res.stdout
    assert any(f"execute-change-set --change-set-name {CHANGESET}" in c for c in calls())


def test_deploy_finds_the_change_set_when_sam_does_not_print_it(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], print_arn=False)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert any(c.startswith("aws cloudformation list-change-sets") for c in calls())
    assert executed(calls())


@pytest.mark.parametrize("answer", ["n\n", "\n", "\x04"], ids=["no", "enter", "ctrl-d"])
def test_a_declined_change_set_is_not_executed_and_not_called_deployed(stubs, answer):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED])
    res = run_in_terminal("deploy.sh", *DEPLOY_ARGS, env=env, answer=answer)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Deploy this changeset? [y/N]" in res.stdout
    assert not executed(calls())
    assert "nothing was deployed: the change set was declined" in res.stderr
    assert "is deployed" not in res.stdout


def test_an_accepted_change_set_in_a_terminal_is_executed(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], before="REVIEW_IN_PROGRESS", after="CREATE_COMPLETE")
    res = run_in_terminal("deploy.sh", *DEPLOY_ARGS, env=env, answer="y\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert executed(calls()) and "tally is deployed" in res.stdout


@pytest.mark.parametrize("final", ["UPDATE_ROLLBACK_COMPLETE", "ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED", "CREATE_FAILED", "UPDATE_FAILED"])
def test_a_rolled_back_or_failed_deploy_exits_non_zero_and_says_why(stubs, final):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], after=final)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert executed(calls())
    assert f"is in state {final}" in res.stderr
    assert "ApiFunction\tUPDATE_FAILED\tResource handler returned message: boom" in res.stdout
    assert "is deployed" not in res.stdout


def test_no_changes_is_up_to_date_not_deployed(stubs):
    env, scenario, calls = stubs
    scenario(changeset=None)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not executed(calls())
    assert "tally is up to date (no changes)" in res.stdout and "is deployed" not in res.stdout


def test_deploy_tags_the_stack_with_the_artifact_bucket_it_was_given(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED])
    assert run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env).returncode == 0
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert "--tags tally:artifact-bucket=my-artifacts" in deploy


def test_stack_names_longer_than_the_schedule_name_allows_are_refused_up_front(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED])
    longest = "t" + "a" * 56
    res = run("deploy.sh", "--stack-name", longest, "--region", "us-east-1", "--s3-bucket", "my-artifacts", "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(f"{longest}-weekly") == 64
    before = len(calls())
    res = run("deploy.sh", "--stack-name", longest + "b", "--region", "us-east-1", "--yes", env=env)
    assert res.returncode == 1 and "at most 57 fit" in res.stderr and "64 characters" in res.stderr
    assert len(calls()) == before, "nothing is called for a name that cannot work"


@pytest.mark.parametrize("config_env, stack, retain", [("dev", "tally-dev", "false"), ("prod", "tally-prod", "true")])
def test_config_env_takes_stack_name_and_parameters_from_samconfig(stubs, config_env, stack, retain):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED])
    res = run("deploy.sh", "--config-env", config_env, "--region", "us-east-1", "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert f"--stack-name {stack} " in deploy and f"--config-env {config_env}" in deploy
    assert f'RetainTable="{retain}"' in deploy
    res = run("deploy.sh", "--config-env", "staging", "--region", "us-east-1", "--yes", env=env)
    assert res.returncode == 1 and "no [staging.deploy.parameters]" in res.stderr


# ------------------------------------------- first-deploy verification
# deploy.sh runs the weekly job once through the weekly schedule's own role
# and target (a one-time schedule) and waits for the execution.
STATE_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:tally-weekly"
SCHEDULE_ROLE = "arn:aws:iam::123456789012:role/tally-WeeklyScheduleRole-ABC"
DLQ_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/tally-WeeklyDeadLetterQueue-XYZ"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:tally-WeeklyDeadLetterQueue-XYZ"
API_URL = "https://abc.execute-api.us-east-1.amazonaws.com/Prod/"
NEW_EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:tally-weekly:f1r5t-run"


def _last_complete_weeks(before: float, after: float) -> set[str]:
    """The ISO week that ended last, as of any moment of the run."""
    from datetime import datetime, timedelta, timezone

    weeks = set()
    for t in (before, after):
        year, week, _ = (datetime.fromtimestamp(t, timezone.utc) - timedelta(days=7)).isocalendar()
        weeks.add(f"{year}-W{week:02d}")
    return weeks


def _schedule_args(stub_dir: Path) -> dict[str, str]:
    args = json.loads((stub_dir / "schedule.json").read_text())
    return {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i].startswith("--")}


def _stub_dir(env: dict[str, str]) -> Path:
    return Path(env["STUB_DIR"])


@pytest.mark.parametrize("changeset", [CHANGESET, None], ids=["deployed", "up-to-date"])
def test_verification_runs_the_weekly_job_through_the_schedule_role_and_prints_the_report_url(stubs, changeset):
    from datetime import datetime, timezone

    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], changeset=changeset, verify={"statuses": ["RUNNING", "RUNNING", "SUCCEEDED"]})
    t0 = time.time()
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    t1 = time.time()
    assert res.returncode == 0, res.stdout + res.stderr
    # A one-time schedule in the default group (the one the role's trust
    # names), about a minute out, in UTC, deleted after it ran...
    sched = _schedule_args(_stub_dir(env))
    assert sched["--name"] == "tally-verify" and sched["--group-name"] == "default"
    expr = sched["--schedule-expression"]
    import re

    m = re.fullmatch(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)", expr)
    assert m, expr
    due = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    assert t0 + 30 <= due <= t1 + 120, (t0, due)
    assert sched["--schedule-expression-timezone"] == "UTC"
    assert sched["--flexible-time-window"] == "Mode=OFF"
    assert sched["--action-after-completion"] == "DELETE"
    # ...whose target is the weekly schedule's: the state machine, started
    # with the schedule role, dead-lettering to the same queue, for the
    # last complete ISO week.
    target = json.loads(sched["--target"])
    assert target["Arn"] == STATE_MACHINE and target["RoleArn"] == SCHEDULE_ROLE
    assert target["DeadLetterConfig"]["Arn"] == DLQ_ARN
    # The schedule's own input: the last complete week (and any catch-up);
    # the report printed is that week's.
    assert json.loads(target["Input"]) == {}
    (week,) = {w for w in _last_complete_weeks(t0, t1) if f"(week {w})" in res.stdout}
    # It waited for the new execution (not the earlier one with the same
    # input), showing progress, and printed success with the report's URL.
    assert f"execution started: {NEW_EXECUTION}" in res.stdout
    assert "0ld-verify" not in res.stdout
    assert res.stdout.count("  RUNNING (") == 2
    assert f"Verified: the schedule's role started the weekly run and it succeeded (week {week})" in res.stdout
    assert f"Report     {API_URL}summaries/{week}" in res.stdout
    # ...and how to open its page in a browser: the ReportLinkCommand output, for that week.
    assert f"  tally report-link --week {week} --public-url {API_URL} --link-secret-arn " in res.stdout
    # The schedule deleted itself after running; deploy.sh checked.
    assert (_stub_dir(env) / "schedule_gone").exists()
    log = calls()
    created = next(i for i, c in enumerate(log) if c.startswith("aws scheduler create-schedule"))
    assert any(c.startswith("aws scheduler get-schedule --name tally-verify") for c in log[created:])


# A weekly run whose Plan step failed once (retried, then fine) and whose
# Part step failed for good: the failing state is Part, not Plan.
PART_FAILED_HISTORY = [
    {"id": 1, "previousEventId": 0, "type": "ExecutionStarted"},
    {"id": 2, "previousEventId": 1, "type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Plan"}},
    {"id": 3, "previousEventId": 2, "type": "TaskScheduled"},
    {"id": 4, "previousEventId": 3, "type": "TaskStarted"},
    {"id": 5, "previousEventId": 4, "type": "TaskFailed", "taskFailedEventDetails": {"error": "Lambda.ServiceException"}},
    {"id": 6, "previousEventId": 5, "type": "TaskScheduled"},
    {"id": 7, "previousEventId": 6, "type": "TaskStarted"},
    {"id": 8, "previousEventId": 7, "type": "TaskSucceeded"},
    {"id": 9, "previousEventId": 8, "type": "TaskStateExited"},
    {"id": 10, "previousEventId": 9, "type": "MapStateEntered", "stateEnteredEventDetails": {"name": "Weeks"}},
    {"id": 11, "previousEventId": 10, "type": "MapStateStarted"},
    {"id": 12, "previousEventId": 11, "type": "MapIterationStarted"},
    {"id": 13, "previousEventId": 12, "type": "MapStateEntered", "stateEnteredEventDetails": {"name": "Parts"}},
    {"id": 14, "previousEventId": 13, "type": "MapStateStarted"},
    {"id": 15, "previousEventId": 14, "type": "MapIterationStarted"},
    {"id": 16, "previousEventId": 15, "type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Part"}},
    {"id": 17, "previousEventId": 16, "type": "TaskScheduled"},
    {"id": 18, "previousEventId": 17, "type": "TaskStarted"},
    {"id": 19, "previousEventId": 18, "type": "TaskFailed", "taskFailedEventDetails": {"error": "Summarize"}},
    {"id": 20, "previousEventId": 19, "type": "TaskScheduled"},
    {"id": 21, "previousEventId": 20, "type": "TaskStarted"},
    {"id": 22, "previousEventId": 21, "type": "TaskFailed", "taskFailedEventDetails": {"error": "Summarize"}},
    {"id": 23, "previousEventId": 22, "type": "MapIterationFailed"},
    {"id": 24, "previousEventId": 23, "type": "MapStateFailed"},
    {"id": 25, "previousEventId": 24, "type": "MapIterationFailed"},
    {"id": 26, "previousEventId": 25, "type": "MapStateFailed"},
    {"id": 27, "previousEventId": 26, "type": "ExecutionFailed",
     "executionFailedEventDetails": {"error": "Summarize", "cause": "..."}},
]
PART_FAILED_CAUSE = json.dumps({
    "errorType": "Summarize",
    "errorMessage": "reading part 3/7: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/"
                    "tally-WeeklyFunctionRole-1/tally-weekly is not authorized to perform: dynamodb:Query"})


def test_a_failed_verification_run_names_the_failing_state_its_error_and_what_to_do(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], verify={"statuses": ["RUNNING", "FAILED"], "history": PART_FAILED_HISTORY,
                                         "error": "Summarize", "cause": PART_FAILED_CAUSE})
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    # Exit 3: deployed, but the weekly run does not work.
    assert res.returncode == 3, res.stdout + res.stderr
    assert "tally is deployed" in res.stdout and "Verified" not in res.stdout
    assert "Failed state  Part" in res.stdout
    assert "Error         Summarize" in res.stdout
    assert "not authorized to perform: dynamodb:Query" in res.stdout
    # Where to look: the execution in the console, the function's log group.
    assert f"#/v2/executions/details/{NEW_EXECUTION}" in res.stdout
    assert "aws logs tail tally-WeeklyFunctionLogGroup-LOG" in res.stdout
    assert "FAILED in state Part: Summarize" in res.stderr
    assert "lacks a permission" in res.stderr and "re-run ./deploy.sh" in res.stderr
    assert "aws stepfunctions start-execution" in res.stderr


@pytest.mark.parametrize("queued", ["0", "2"])
def test_no_execution_within_the_bound_exits_non_zero_naming_the_dead_letter_queue_and_the_trust_policy(stubs, queued):
    env, scenario, calls = stubs
    env.update(TALLY_VERIFY_POLL_SECONDS="1", TALLY_VERIFY_TIMEOUT_SECONDS="2")
    scenario([FUNCTION_CHANGED], verify={"starts": False, "dlq_messages": queued})
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "waiting for the schedule to start it" in res.stdout
    assert "No execution of" in res.stdout and "within 2 s" in res.stdout
    assert DLQ_URL in res.stderr and "trust policy" in res.stderr
    assert "aws iam get-role --role-name tally-WeeklyScheduleRole-ABC" in res.stdout
    assert "schedule-group/default" in res.stdout
    if queued == "2":
        assert "holds 2 message(s)" in res.stdout and f"aws sqs receive-message --queue-url {DLQ_URL}" in res.stdout
    else:
        assert "could not even assume WeeklyScheduleRole" in res.stdout
    # The schedule that never ran was deleted, so it cannot start later.
    log = calls()
    created = next(i for i, c in enumerate(log) if c.startswith("aws scheduler create-schedule"))
    assert any(c.startswith("aws scheduler delete-schedule --name tally-verify") for c in log[created:])
    assert (_stub_dir(env) / "schedule_gone").exists()


def test_a_run_still_going_at_the_bound_exits_non_zero_and_says_how_to_follow_it(stubs):
    env, scenario, calls = stubs
    env.update(TALLY_VERIFY_POLL_SECONDS="1", TALLY_VERIFY_TIMEOUT_SECONDS="1")
    scenario([FUNCTION_CHANGED], verify={"statuses": ["RUNNING"]})
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "is still RUNNING after 1 s" in res.stderr
    assert f"describe-execution --execution-arn {NEW_EXECUTION}" in res.stderr


def test_a_verification_schedule_that_cannot_be_created_names_the_permissions(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], verify={"create_fails": True})
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "scheduler:CreateSchedule" in res.stderr and f"iam:PassRole on {SCHEDULE_ROLE}" in res.stderr
    assert "--no-verify" in res.stderr


def test_no_verify_creates_no_schedule(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED])
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", "--no-verify", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert executed(calls()) and "tally is deployed" in res.stdout
    assert not [c for c in calls() if c.startswith(("aws scheduler", "aws stepfunctions"))]
    assert "Verification skipped (--no-verify)" in res.stdout


# ------------------------------------------------------ alarm recipients
def _alarm_ids(sam_template) -> list[str]:
    return [name for name, r in sam_template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]


def test_a_deploy_without_an_alarm_recipient_warns_naming_every_alarm(stubs, sam_template):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], params={"AlarmEmail": ""})
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    alarms = _alarm_ids(sam_template)
    assert len(alarms) >= 6
    warning = res.stdout.split("warning: no alarm recipient")[1].split("next:")[0]
    assert f"nobody hears these {len(alarms)} alarms" in warning
    for alarm in alarms:
        assert f"\n  {alarm}\n" in warning, alarm
    assert "--alarm-email" in res.stdout.split("warning: no alarm recipient")[1]


@pytest.mark.parametrize("how", ["option", "stack"])
def test_a_deploy_with_an_alarm_recipient_names_it_and_does_not_warn(stubs, how, sam_template):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], params={"AlarmEmail": "" if how == "option" else "ops@example.com"})
    extra = ["--alarm-email", "ops@example.com"] if how == "option" else []
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", *extra, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no alarm recipient" not in res.stdout
    assert f"Alarms: all {len(_alarm_ids(sam_template))} e-mail ops@example.com" in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert 'AlarmEmail="ops@example.com"' in deploy


@pytest.mark.parametrize("answer, email", [("oncall@example.com\ny\n", "oncall@example.com"),
                                           ("not-an-address\noncall@example.com\ny\n", "oncall@example.com"),
                                           ("\ny\n", None)], ids=["given", "retyped", "none"])
def test_a_terminal_deploy_asks_for_the_alarm_recipient_when_there_is_none(stubs, answer, email):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], params={"AlarmEmail": ""})
    res = run_in_terminal("deploy.sh", *DEPLOY_ARGS, env=env, answer=answer)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Which e-mail address should receive the alarms?" in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    if email:
        assert f'AlarmEmail="{email}"' in deploy
        assert "no alarm recipient" not in res.stdout
    else:
        assert "AlarmEmail" not in deploy
        assert "warning: no alarm recipient" in res.stdout


def test_the_prod_alarm_recipient_comes_from_samconfig_without_a_question(stubs, tmp_path, sam_template):
    """--config-env prod takes AlarmEmail from [prod.deploy.parameters]."""
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], params={"AlarmEmail": ""})
    tree = tmp_path / "repo"
    (tree / "scripts" / "lib").mkdir(parents=True)
    for rel in ("deploy.sh", "template.yaml", "scripts/lib/cli.sh"):
        shutil.copy2(ROOT / rel, tree / rel)
    lines, section = [], ""
    for line in (ROOT / "samconfig.toml").read_text().splitlines():
        if line.startswith("["):
            section = line
        if section == "[prod.deploy.parameters]" and line.startswith("parameter_overrides = "):
            line = line[:-1] + ' AlarmEmail=\\"oncall@example.com\\""'
        lines.append(line)
    (tree / "samconfig.toml").write_text("\n".join(lines) + "\n")
    import pty

    master, slave = pty.openpty()
    try:
        os.write(master, b"y\n")
        res = subprocess.run([str(tree / "deploy.sh"), "--config-env", "prod", "--region", "us-east-1",
                              "--s3-bucket", "my-artifacts"],
                             cwd=tree, env=env, stdin=slave, capture_output=True, text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Which e-mail address" not in res.stdout
    assert "Alarms notify oncall@example.com (from samconfig.toml [prod.deploy.parameters])" in res.stdout
    assert f"Alarms: all {len(_alarm_ids(sam_template))} e-mail oncall@example.com" in res.stdout and "no alarm recipient" not in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert 'AlarmEmail="oncall@example.com"' in deploy and "--stack-name tally-prod" in deploy


# ---------------------------------------------------- Lambda concurrency
NEW_ACCOUNT = {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}


def test_a_low_lambda_concurrency_limit_lowers_the_weekly_parts_concurrency(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], lambda_limits=NEW_ACCOUNT)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "account limit 10, unreserved 10" in res.stdout
    assert "Lowered WeeklyPartsConcurrency from 7 to 5" in res.stdout
    assert "Service Quotas" in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert 'WeeklyPartsConcurrency="5"' in deploy


def test_an_explicit_weekly_parts_concurrency_is_kept_with_a_warning(stubs):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], lambda_limits=NEW_ACCOUNT)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", "--parameter-overrides", 'WeeklyPartsConcurrency="7"', env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning: WeeklyPartsConcurrency=7 leaves 3 of 10 concurrent executions to the API function" in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert 'WeeklyPartsConcurrency="7"' in deploy and 'WeeklyPartsConcurrency="5"' not in deploy


@pytest.mark.parametrize("limits, params, expect", [
    (LAMBDA_LIMITS, None, "account limit 1000, unreserved 1000; the weekly run invokes up to 7 parts at once (WeeklyPartsConcurrency, the template default)"),
    (NEW_ACCOUNT, {"AlarmEmail": "ops@example.com", "WeeklyPartsConcurrency": "3"},
     "up to 3 parts at once (WeeklyPartsConcurrency, the stack's current value)"),
    (None, None, "note: could not read the account's Lambda concurrency (lambda:GetAccountSettings)"),
], ids=["large-account", "already-low", "unreadable"])
def test_enough_lambda_concurrency_leaves_the_weekly_parts_concurrency_alone(stubs, limits, params, expect):
    env, scenario, calls = stubs
    scenario([FUNCTION_CHANGED], lambda_limits=limits, params=params)
    res = run("deploy.sh", *DEPLOY_ARGS, "--yes", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert expect in res.stdout
    (deploy,) = [c for c in calls() if c.startswith("sam deploy")]
    assert "WeeklyPartsConcurrency" not in deploy
