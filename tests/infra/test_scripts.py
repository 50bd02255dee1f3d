"""deploy.sh and clean.sh behave as documented, without an AWS account.

clean.sh runs against a moto server (started here on a free port) holding a
small stand-in stack with the same outputs as template.yaml: a versioned
bucket with more than one DeleteObjects batch of versions and delete markers,
and a retained table.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_scripts.py
"""

from __future__ import annotations

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
