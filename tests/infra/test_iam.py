"""Least privilege, pinned: every IAM role in the deployed (SAM-expanded)
template grants exactly the intended actions on exactly the intended
resources. Any new permission must be added here on purpose.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import resolve

# (action, resource, condition) triples. Resources are written the way
# _render() prints intrinsics: "X.Arn" for GetAtt, "Ref:X", Sub strings as-is.
SUMMARIES_PREFIX = {"StringLike": {"s3:prefix": ["summaries/", "summaries/*"]}}
# The week leases (tally_aws::lease, partition keys L#<week>) and nothing else.
LEASE_KEYS = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["L#*"]}}
REFRESH_REQUESTS = "${SummaryBucket.Arn}/summaries/*/refresh.request"
# The batch markers of staged batches (tally_aws::batch, partition keys B#<batch id>).
BATCH_MARKER_KEYS = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["B#*"]}}

API_GRANTS = {
    ("logs:CreateLogStream", "ApiFunctionLogGroup.Arn", None),
    ("logs:PutLogEvents", "ApiFunctionLogGroup.Arn", None),
    # PutItem also covers the Put actions inside TransactWriteItems.
    ("dynamodb:PutItem", "{table}.Arn", None),
    ("dynamodb:GetItem", "{table}.Arn", None),
    ("dynamodb:BatchWriteItem", "{table}.Arn", None),
    # GET /records: RecordStore::scan_range queries the range's day-shard partitions (never Scan).
    ("dynamodb:Query", "{table}.Arn", None),
    # DELETE /records/{id}: RecordLifecycle::delete is one DeleteItem (ReturnValues ALL_OLD).
    ("dynamodb:DeleteItem", "{table}.Arn", None),
    # GET /summaries/{week}: read the week's objects; GET /summaries: list weeks.
    ("s3:GetObject", "${SummaryBucket.Arn}/summaries/*", None),
    ("s3:ListBucket", "SummaryBucket.Arn", json.dumps(SUMMARIES_PREFIX, sort_keys=True)),
    # DELETE /records/{id}: S3WeekRefresh::request puts summaries/<week>/refresh.request.
    ("s3:PutObject", REFRESH_REQUESTS, None),
}

WEEKLY_GRANTS = {
    ("logs:CreateLogStream", "WeeklyFunctionLogGroup.Arn", None),
    ("logs:PutLogEvents", "WeeklyFunctionLogGroup.Arn", None),
    # summarize_week / pending_weeks: a week's day-shard partitions and the
    # week markers; retention (DynamoDbRecordStore::delete_week) too, for the keys.
    ("dynamodb:Query", "{table}.Arn", None),
    # Retention: delete_week deletes the keys it queried, 25 per BatchWriteItem...
    ("dynamodb:BatchWriteItem", "{table}.Arn", None),
    # ...and then the week's marker (pk "W") with one DeleteItem.
    ("dynamodb:DeleteItem", "{table}.Arn", None),
    # DynamoDbWeekLease::try_acquire / release: one run per week at a time.
    ("dynamodb:UpdateItem", "{table}.Arn", json.dumps(LEASE_KEYS, sort_keys=True)),
    # Scans and delete_week read the markers of staged batches; sweep_week
    # aborts abandoned ones (a conditional PutItem of the marker).
    ("dynamodb:GetItem", "{table}.Arn", json.dumps(BATCH_MARKER_KEYS, sort_keys=True)),
    ("dynamodb:PutItem", "{table}.Arn", json.dumps(BATCH_MARKER_KEYS, sort_keys=True)),
    # PutObject also authorises Create/UploadPart/CompleteMultipartUpload.
    ("s3:PutObject", "${SummaryBucket.Arn}/summaries/*", None),
    ("s3:AbortMultipartUpload", "${SummaryBucket.Arn}/summaries/*", None),
    ("s3:ListMultipartUploadParts", "${SummaryBucket.Arn}/summaries/*", None),
    # begin_week removes the old manifest before a re-run; S3WeekRefresh::done
    # removes a handled refresh request.
    ("s3:DeleteObject", "${SummaryBucket.Arn}/summaries/*", None),
    # catch-up: which weeks already have a manifest.
    ("s3:GetObject", "${SummaryBucket.Arn}/summaries/*", None),
    # list_weeks, and S3WeekRefresh::pending (left-over requests).
    ("s3:ListBucket", "SummaryBucket.Arn", json.dumps(SUMMARIES_PREFIX, sort_keys=True)),
    ("sqs:SendMessage", "WeeklyDeadLetterQueue.Arn", None),
}

# Explicit denies. The weekly function must never start itself: creating a
# refresh request is what starts it.
WEEKLY_DENIES = {
    ("s3:PutObject", REFRESH_REQUESTS, None),
}

# The role SAM generates for the ScheduleV2 event.
SCHEDULER_GRANTS = {
    ("lambda:InvokeFunction", "WeeklyFunction.Arn", None),
    ("sqs:SendMessage", "WeeklyDeadLetterQueue.Arn", None),
}

TABLES = {"true": "RecordsTable", "false": "RecordsTableDeletable"}


def _render(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Fn::GetAtt":
            return ".".join(arg) if isinstance(arg, list) else arg
        if fn == "Ref":
            return f"Ref:{arg}"
        if fn == "Fn::Sub":
            return arg if isinstance(arg, str) else arg[0]
    raise AssertionError(f"unexpected IAM resource expression {node!r}")


def _as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def grants(resources: dict[str, Any], role: str, effect: str = "Allow") -> set[tuple[str, str, str | None]]:
    """Every (action, resource, condition) the role allows (or, with
    effect="Deny", denies) in its inline policies. Fails on oddities:
    NotAction, NotResource, managed or attached policies."""
    props = resources[role]["Properties"]
    assert not props.get("ManagedPolicyArns"), f"{role} must not use managed policies: {props['ManagedPolicyArns']}"
    documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
    for name, res in resources.items():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            attached = [_render(r) for r in res["Properties"].get("Roles", [])]
            assert f"Ref:{role}" not in attached, f"{name} attaches extra permissions to {role}"
    out = set()
    for doc in documents:
        for st in _as_list(doc["Statement"]):
            assert st["Effect"] in ("Allow", "Deny"), f"{role}: unexpected {st['Effect']} statement"
            assert "NotAction" not in st and "NotResource" not in st, f"{role}: NotAction/NotResource: {st}"
            if st["Effect"] != effect:
                continue
            cond = json.dumps(st["Condition"], sort_keys=True) if "Condition" in st else None
            for action in _as_list(st["Action"]):
                for resource in _as_list(st["Resource"]):
                    out.add((action, _render(resource), cond))
    return out


def function_role(resources: dict[str, Any], function: str) -> str:
    role = resources[function]["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} must use a role from this template"
    return role["Fn::GetAtt"][0]


@pytest.fixture(params=["true", "false"], ids=["retained-table", "deletable-table"])
def deployed(request: pytest.FixtureRequest, cfn_template: dict[str, Any]) -> tuple[dict[str, Any], str]:
    return resolve(cfn_template, {"RetainTable": request.param})["Resources"], TABLES[request.param]


def _expect(grants_: set[tuple[str, str, str | None]], table: str) -> set[tuple[str, str, str | None]]:
    return {(a, r.replace("{table}", table), c) for a, r, c in grants_}


def test_api_function_role_grants_exactly_the_intended_actions(deployed):
    resources, table = deployed
    assert grants(resources, function_role(resources, "ApiFunction")) == _expect(API_GRANTS, table)


def test_weekly_function_role_grants_exactly_the_intended_actions(deployed):
    resources, table = deployed
    assert grants(resources, function_role(resources, "WeeklyFunction")) == _expect(WEEKLY_GRANTS, table)


def test_only_the_weekly_role_has_denies_and_exactly_the_intended_ones(deployed):
    resources, _ = deployed
    for name, res in resources.items():
        if res["Type"] == "AWS::IAM::Role" and not res["Properties"].get("ManagedPolicyArns"):
            expected = WEEKLY_DENIES if name == function_role(resources, "WeeklyFunction") else set()
            assert grants(resources, name, "Deny") == expected, name


def test_scheduler_role_may_only_invoke_the_weekly_function_and_dead_letter(deployed):
    resources, _ = deployed
    schedule = next(r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule")
    role = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    assert grants(resources, role) == SCHEDULER_GRANTS


def test_no_role_allows_wildcard_actions_or_resources(deployed):
    resources, _ = deployed
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        for action, resource, _ in grants(resources, name):
            assert "*" not in action, f"{name}: wildcard action {action}"
            assert resource != "*", f"{name}: {action} on every resource"


def test_no_role_can_scan_or_drop_the_table_and_updates_touch_only_leases(deployed):
    resources, _ = deployed
    forbidden_prefixes = ("dynamodb:Scan", "dynamodb:PartiQL", "dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:*")
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        for action, _, cond in grants(resources, name):
            assert not action.startswith(forbidden_prefixes), f"{name} may {action}"
            if action == "dynamodb:UpdateItem":
                assert cond == json.dumps(LEASE_KEYS, sort_keys=True), f"{name} may update records: {cond}"


# Which function may delete items from the table, and the code path that needs it.
TABLE_DELETERS = {
    # Erasure: DELETE /records/{id} (IAM-signed), one record.
    "ApiFunction",
    # Retention: DynamoDbRecordStore::delete_week (the week marker).
    "WeeklyFunction",
}


def test_only_the_intended_functions_may_delete_items(deployed):
    resources, _ = deployed
    deleters = {
        function
        for function in ("ApiFunction", "WeeklyFunction")
        if any(a == "dynamodb:DeleteItem" for a, _, _ in grants(resources, function_role(resources, function)))
    }
    assert deleters == TABLE_DELETERS


def test_bucket_writes_are_confined_to_the_summaries_prefix(deployed):
    resources, _ = deployed
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        for action, resource, cond in grants(resources, name):
            if not action.startswith("s3:"):
                continue
            if action == "s3:ListBucket":
                assert resource == "SummaryBucket.Arn" and cond is not None, f"{name}: unscoped ListBucket"
            else:
                assert resource.startswith("${SummaryBucket.Arn}/summaries/"), f"{name}: {action} on {resource}"


def test_only_the_api_function_may_create_refresh_requests(deployed):
    """Creating summaries/<week>/refresh.request starts the weekly function:
    the API function may create nothing else, and the weekly function may
    not create it (so it can never start itself)."""
    resources, _ = deployed
    api = function_role(resources, "ApiFunction")
    weekly = function_role(resources, "WeeklyFunction")
    api_puts = {r for a, r, _ in grants(resources, api) if a == "s3:PutObject"}
    assert api_puts == {REFRESH_REQUESTS}
    assert ("s3:PutObject", REFRESH_REQUESTS, None) in grants(resources, weekly, "Deny")
    for name, res in resources.items():
        if res["Type"] == "AWS::IAM::Role" and name not in (api, weekly) and not res["Properties"].get("ManagedPolicyArns"):
            assert not any(a.startswith("s3:") for a, _, _ in grants(resources, name)), name


def test_every_role_is_accounted_for(cfn_template):
    for overrides in ({}, {"ConfigureApiGatewayAccount": "true"}):
        resources = resolve(cfn_template, overrides)["Resources"]
        roles = {n for n, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
        expected = {"ApiFunctionRole", "WeeklyFunctionRole", "WeeklyFunctionWeeklyRole"}
        if overrides:
            expected.add("ApiGatewayCloudWatchRole")
        assert roles == expected
        others = [n for n, r in resources.items() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User")]
        assert others == []


def test_api_gateway_logging_role_is_optional_and_only_pushes_logs(cfn_template):
    assert "ApiGatewayCloudWatchRole" not in resolve(cfn_template)["Resources"]
    resources = resolve(cfn_template, {"ConfigureApiGatewayAccount": "true"})["Resources"]
    role = resources["ApiGatewayCloudWatchRole"]
    assert role["DeletionPolicy"] == "Retain"
    assert role["Properties"]["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}
    ]
    assert "Policies" not in role["Properties"]
    principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "apigateway.amazonaws.com"}


def test_function_roles_trust_only_lambda(deployed):
    resources, _ = deployed
    for function in ("ApiFunction", "WeeklyFunction"):
        doc = resources[function_role(resources, function)]["Properties"]["AssumeRolePolicyDocument"]
        assert doc["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
