"""Least privilege, pinned: every IAM role in the deployed (SAM-expanded)
template grants exactly the intended actions on exactly the intended
resources. Any new permission must be added here on purpose.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import ROOT, resolve

# (action, resource, condition) triples. Resources are written the way
# _render() prints intrinsics: "X.Arn" for GetAtt, "Ref:X", Sub strings as-is.
#
# Writes to the table are limited to tally's key shapes with
# dynamodb:LeadingKeys. Each condition below was checked against the AWS
# documentation that defines it:
# - dynamodb:LeadingKeys: DynamoDB Developer Guide, "Using IAM policy
#   conditions for fine-grained access control"
#   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/specifying-conditions.html):
#   "Represents the first key attribute of a table—in other words, the
#   partition key. The key name LeadingKeys is plural, even if the key is used
#   with single-item actions. In addition, you must use the ForAllValues
#   modifier when using LeadingKeys in a condition." Its example policy
#   limits dynamodb:BatchWriteItem (with PutItem, DeleteItem, ...) with
#   ForAllValues on LeadingKeys: a BatchWriteItem's request carries the
#   partition key of every item in it, and ForAllValues requires each of
#   them to match - one item outside tally's shapes refuses the whole batch.
# - ForAllValues: IAM User Guide, "Creating a condition with multiple context
#   keys or values"
#   (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_multi-value-conditions.html):
#   "The condition returns true if every key value in the request matches at
#   least one value in the policy. It also returns true if there are no keys
#   in the request, or if the key values resolve to a null data set, such as
#   an empty string." - hence the Null guard next to each of them.
# - Null: IAM User Guide, "IAM JSON policy elements: Condition operators",
#   Condition operator to check existence of condition keys
#   (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_Null):
#   "false (the key exists and its value is not null)".
# - TransactWriteItems: DynamoDB Developer Guide, "Using IAM with DynamoDB
#   transactions"
#   (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html):
#   "Permissions for Put, Update, Delete, and Get actions are governed by
#   the permissions used for the underlying PutItem, UpdateItem, DeleteItem,
#   and GetItem operations" - each Put of a transaction needs PutItem on its
#   own partition key.
#
# The report-link secret (issue 23) is granted without a condition, on its
# ARN alone:
# - secretsmanager:GetSecretValue takes the secret as its resource (Service
#   Authorization Reference, "Actions, resources, and condition keys for AWS
#   Secrets Manager",
#   https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html:
#   GetSecretValue, resource type "Secret*", ARN
#   arn:${Partition}:secretsmanager:${Region}:${Account}:secret:${SecretId}),
#   and Ref of an AWS::SecretsManager::Secret is that full ARN, random suffix
#   included (CloudFormation Template Reference, AWS::SecretsManager::Secret,
#   "Return values":
#   https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-secretsmanager-secret.html)
#   - so the grant names exactly the one secret and no other secret whose
#   name starts the same.
# - No kms:Decrypt: the secret is encrypted with the AWS managed key
#   aws/secretsmanager (no KmsKeyId), whose key policy lets Secrets Manager
#   decrypt for principals of the account (Secrets Manager User Guide,
#   "Secret encryption and decryption",
#   https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html).


def leading_keys(*patterns: str) -> str:
    """The condition of a grant limited to these partition-key patterns."""
    return json.dumps({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(patterns)},
                       "Null": {"dynamodb:LeadingKeys": "false"}}, sort_keys=True)


# tally_aws's key shapes (partition keys): records D#<day>#<shard>, the week
# markers' partition W, idempotency entries I#<key>, leases L#<week>, staged
# batches' markers B#<batch id>.
RECORDS = leading_keys("D#*")
# The week leases (tally_aws::lease) and nothing else.
LEASE_KEYS = leading_keys("L#*")
# The batch markers of staged batches (tally_aws::batch).
BATCH_MARKER_KEYS = leading_keys("B#*")
REFRESH_REQUESTS = "${SummaryBucket.Arn}/summaries/*/refresh.request"

API_GRANTS = {
    ("logs:CreateLogStream", "ApiFunctionLogGroup.Arn", None),
    ("logs:PutLogEvents", "ApiFunctionLogGroup.Arn", None),
    # Records, week markers (W), idempotency entries (claim, take_over) and
    # staged batches' markers (commit, abort); PutItem also covers the Put
    # items of TransactWriteItems (records, the entry, the commit marker).
    ("dynamodb:PutItem", "{table}.Arn", leading_keys("D#*", "W", "I#*", "B#*")),
    # GET /records/{id}, idempotency entries, and the marker of a staged record's batch.
    ("dynamodb:GetItem", "{table}.Arn", None),
    # The staged items of a batch too large for one transaction, 25 at a time.
    ("dynamodb:BatchWriteItem", "{table}.Arn", RECORDS),
    # GET /records: RecordStore::scan_range queries the range's day-shard partitions (never Scan).
    ("dynamodb:Query", "{table}.Arn", None),
    # DELETE /records/{id}: RecordLifecycle::delete is one DeleteItem (ReturnValues ALL_OLD).
    ("dynamodb:DeleteItem", "{table}.Arn", RECORDS),
    # GET /summaries/{week}: read the week's objects; GET /summaries: list weeks.
    ("s3:GetObject", "${SummaryBucket.Arn}/summaries/*", None),
    # Unconditioned: see MISSING_KEY_404 below.
    ("s3:ListBucket", "SummaryBucket.Arn", None),
    # DELETE /records/{id}: S3WeekRefresh::request puts summaries/<week>/refresh.request.
    ("s3:PutObject", REFRESH_REQUESTS, None),
    # GET /reports/...: checking a report link's signature (SecretsManagerLinkSecret::load).
    ("secretsmanager:GetSecretValue", "Ref:ReportLinkSecret", None),
}

WEEKLY_GRANTS = {
    ("logs:CreateLogStream", "WeeklyFunctionLogGroup.Arn", None),
    ("logs:PutLogEvents", "WeeklyFunctionLogGroup.Arn", None),
    # summarize_week / pending_weeks: a week's day-shard partitions and the
    # week markers; sweep_week and retention (delete_week) too, for the keys.
    ("dynamodb:Query", "{table}.Arn", None),
    # Retention: delete_week deletes the records it queried, 25 per BatchWriteItem...
    ("dynamodb:BatchWriteItem", "{table}.Arn", RECORDS),
    # ...then the markers of the batches within the week and the week's
    # marker (pk "W"); sweep_week deletes the staged items of aborted batches.
    ("dynamodb:DeleteItem", "{table}.Arn", leading_keys("D#*", "W", "B#*")),
    # DynamoDbWeekLease::try_acquire / extend (renew, check) / release: one run per week at a time.
    ("dynamodb:UpdateItem", "{table}.Arn", LEASE_KEYS),
    # Scans and delete_week read the markers of staged batches; sweep_week
    # aborts abandoned ones (a conditional PutItem of the marker).
    ("dynamodb:GetItem", "{table}.Arn", BATCH_MARKER_KEYS),
    ("dynamodb:PutItem", "{table}.Arn", BATCH_MARKER_KEYS),
    # PutObject also authorises Create/UploadPart/CompleteMultipartUpload.
    ("s3:PutObject", "${SummaryBucket.Arn}/summaries/*", None),
    ("s3:AbortMultipartUpload", "${SummaryBucket.Arn}/summaries/*", None),
    # (No s3:ListMultipartUploadParts: the upload keeps its own part list.)
    # begin_week removes the old manifest before a re-run; S3WeekRefresh::done
    # removes a handled refresh request.
    ("s3:DeleteObject", "${SummaryBucket.Arn}/summaries/*", None),
    # A run reads the week's manifest, last week's summary.json, the part states.
    ("s3:GetObject", "${SummaryBucket.Arn}/summaries/*", None),
    # list_weeks, and S3WeekRefresh::pending (left-over requests); and a 404
    # (not 403) for a missing object: see MISSING_KEY_404 below.
    ("s3:ListBucket", "SummaryBucket.Arn", None),
    ("sqs:SendMessage", "WeeklyDeadLetterQueue.Arn", None),
    # SnsNotifier::deliver: the weekly report digest, to this stack's topic only.
    ("sns:Publish", "Ref:ReportTopic", None),
    # Signing each notification's link to its week's page.
    ("secretsmanager:GetSecretValue", "Ref:ReportLinkSecret", None),
}

# Explicit denies. The weekly function must never start itself: creating a
# refresh request is what starts it.
WEEKLY_DENIES = {
    ("s3:PutObject", REFRESH_REQUESTS, None),
}

# The schedule's own role (WeeklyScheduleRole): start the weekly state
# machine (Ref of a state machine is its ARN), dead-letter failed starts.
SCHEDULER_GRANTS = {
    ("states:StartExecution", "Ref:WeeklyStateMachine", None),
    ("sqs:SendMessage", "WeeklyDeadLetterQueue.Arn", None),
}

# The state machine's role (WeeklyStateMachineRole): every step is an
# invocation of the weekly function (unqualified, or a version / alias).
STATE_MACHINE_GRANTS = {
    ("lambda:InvokeFunction", "WeeklyFunction.Arn", None),
    ("lambda:InvokeFunction", "${WeeklyFunction.Arn}:*", None),
    # The Continue state: a catch-up longer than one execution's bound goes
    # on in a next execution of this same machine (its fixed name).
    ("states:StartExecution",
     "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-weekly", None),
}

# One table whatever RetainTable says (test_template pins that).
TABLES = {"true": "RecordsTable", "false": "RecordsTable"}


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


def test_scheduler_role_may_only_start_the_weekly_state_machine_and_dead_letter(deployed):
    resources, _ = deployed
    schedule = next(r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule")
    role = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    assert role == "WeeklyScheduleRole"
    assert schedule["Properties"]["Target"]["Arn"] == {"Ref": "WeeklyStateMachine"}
    assert grants(resources, role) == SCHEDULER_GRANTS


def test_state_machine_role_may_only_invoke_the_weekly_function(deployed):
    resources, _ = deployed
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert role == "WeeklyStateMachineRole"
    assert grants(resources, role) == STATE_MACHINE_GRANTS


def test_only_the_schedule_and_state_machine_roles_may_start_or_invoke_the_weekly_run(deployed):
    """No function role may start executions or invoke functions (the weekly
    function can never start itself, nor the API function a run)."""
    resources, _ = deployed
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        runs = {(a, r) for a, r, _ in grants(resources, name) if a.startswith(("states:", "lambda:"))}
        expected = {"WeeklyScheduleRole": {("states:StartExecution", "Ref:WeeklyStateMachine")},
                    "WeeklyStateMachineRole": {(a, r) for a, r, _ in STATE_MACHINE_GRANTS}}.get(name, set())
        # The state machine may start itself (a catch-up continued), by name.
        assert runs == expected, name


# EventBridge Scheduler, "Confused deputy prevention"
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/cross-service-confused-deputy-prevention.html):
#   "The value of aws:SourceArn must be your EventBridge Scheduler schedule
#    group ARN to which you want to scope this condition."
#   "Do not scope the aws:SourceArn statement to a specific schedule or a
#    schedule name prefix. The ARN you specify must be a schedule group."
# Scheduler presents the group's ARN when it assumes the role, so a condition
# on one schedule's ARN (what 0.3 shipped) denies sts:AssumeRole: no run ever
# starts, and the dead-letter queue (written with the same role) stays empty.
SCHEDULE_GROUP_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:scheduler:\$\{AWS::Region\}:\$\{AWS::AccountId\}:schedule-group/[A-Za-z0-9_.-]+$")


def _scheduler_trust_statements(resources):
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for statement in res["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            services = statement.get("Principal", {}).get("Service", [])
            if "scheduler.amazonaws.com" in ([services] if isinstance(services, str) else services):
                yield name, statement


def test_scheduler_trust_source_arn_is_a_schedule_group_never_a_schedule_or_prefix(deployed):
    """Every role EventBridge Scheduler may assume conditions aws:SourceArn on
    a schedule GROUP ARN (ArnEquals, no wildcard), per the Scheduler guide's
    confused-deputy page quoted above. Fails on 0.3's template, whose
    condition named the schedule (schedule/default/<stack>-weekly)."""
    resources, _ = deployed
    found = list(_scheduler_trust_statements(resources))
    assert [name for name, _ in found] == ["WeeklyScheduleRole"]
    for name, statement in found:
        source_arns = [arn for op, cond in statement["Condition"].items()
                       for key, arn in cond.items() if key == "aws:SourceArn"]
        assert source_arns, f"{name}: no aws:SourceArn condition (confused-deputy guard missing)"
        for arn in source_arns:
            text = _render(arn)
            assert ":schedule/" not in text, f"{name}: aws:SourceArn names a schedule, not a schedule group: {text}"
            assert "*" not in text, f"{name}: aws:SourceArn is a prefix/wildcard: {text}"
            assert SCHEDULE_GROUP_ARN.match(text), f"{name}: aws:SourceArn is not a schedule group ARN: {text}"


def test_only_this_accounts_default_schedule_group_may_assume_the_scheduler_role(deployed):
    """Confused-deputy guard: EventBridge Scheduler acting for another
    account, or for a schedule outside the group the weekly schedule is in
    (the default group), cannot assume the role. aws:SourceAccount stays."""
    resources, _ = deployed
    schedule = next(r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule")
    assert schedule["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-weekly"}
    assert "GroupName" not in schedule["Properties"], "the SourceArn below names the default group"
    (statement,) = resources["WeeklyScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "scheduler.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnEquals": {
                "aws:SourceArn": {
                    "Fn::Sub": "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule-group/default"
                }
            },
        },
    }


def test_only_the_weekly_role_may_publish_and_only_to_the_report_topic(deployed):
    resources, _ = deployed
    weekly = function_role(resources, "WeeklyFunction")
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        publishes = {(a, r) for a, r, _ in grants(resources, name) if a.startswith("sns:")}
        assert publishes == ({("sns:Publish", "Ref:ReportTopic")} if name == weekly else set()), name


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
                assert cond == LEASE_KEYS, f"{name} may update records: {cond}"


# Which function may delete items from the table, and the code path that needs it.
TABLE_DELETERS = {
    # Erasure: DELETE /records/{id} (IAM-signed), one record.
    "ApiFunction",
    # Retention: DynamoDbRecordStore::delete_week (week and batch markers);
    # sweep_week (staged items of aborted batches).
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


# ------------------------------------------------------- the table's key shapes
# One partition key of each shape tally_aws writes, and one it never writes.
SHAPES = {
    "record": "D#2026-11-23#07",
    "week marker": "W",
    "idempotency entry": "I#order-4711",
    "lease": "L#2026-W47",
    "batch marker": "B#01KAQ6ZP3B5Y2N0V4H8Q1C7R9S",
    "anything else": "X#2026",
}
# What each function may write, by action: these shapes and nothing else.
TABLE_WRITES = {
    ("ApiFunction", "dynamodb:PutItem"): {"record", "week marker", "idempotency entry", "batch marker"},
    ("ApiFunction", "dynamodb:BatchWriteItem"): {"record"},
    ("ApiFunction", "dynamodb:DeleteItem"): {"record"},
    ("WeeklyFunction", "dynamodb:BatchWriteItem"): {"record"},
    ("WeeklyFunction", "dynamodb:DeleteItem"): {"record", "week marker", "batch marker"},
    ("WeeklyFunction", "dynamodb:PutItem"): {"batch marker"},
    ("WeeklyFunction", "dynamodb:UpdateItem"): {"lease"},
}
# Where the key design allows no narrower grant than the one above (or none
# at all), and why.
NO_NARROWER = {
    ("ApiFunction", "dynamodb:PutItem"):
        "D#* is every day-shard partition (a record's key is its receipt day and a shard, not its sender) "
        "and I#* every idempotency key (the client's own string): nothing in the key narrows them further",
    ("ApiFunction", "dynamodb:BatchWriteItem"):
        "a staged batch's records land in whichever day-shard partitions their ids fall in: any D# partition",
    ("ApiFunction", "dynamodb:DeleteItem"):
        "erasure deletes any record by its id (the IAM-signed route decides who may): any D# partition",
    ("WeeklyFunction", "dynamodb:BatchWriteItem"):
        "retention deletes only weeks older than RetentionWeeks, but LeadingKeys patterns are string "
        "wildcards and cannot compare a partition's day with a date: any D# partition",
    ("WeeklyFunction", "dynamodb:DeleteItem"):
        "the sweep deletes only the staged records of aborted batches, but staged and committed records share "
        "the D# partitions (the batch is an attribute, not part of the key): IAM cannot tell them apart, the "
        "DeleteItem's condition expression (#batch = :batch) does",
    ("ApiFunction", "dynamodb:GetItem"):
        "not conditioned: reads change nothing, and GET /records/{id}, the idempotency look-up and the marker "
        "check read D#, I# and B# items - every shape but the leases and the week markers",
    ("ApiFunction", "dynamodb:Query"):
        "not conditioned: GET /records queries any D# partition, the only shape it could be limited to",
    ("WeeklyFunction", "dynamodb:Query"):
        "not conditioned: a week's D# partitions and the W partition, i.e. all of the records' shapes",
}


def _table_grants(resources: dict[str, Any], function: str) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for action, resource, cond in grants(resources, function_role(resources, function)):
        if action.startswith("dynamodb:"):
            out.setdefault(action, set()).add(cond)
    return out


def test_table_writes_are_limited_to_tallys_key_shapes(deployed):
    resources, table = deployed
    resource = f"{table}.Arn"
    problems = []
    for (function, action), shapes in TABLE_WRITES.items():
        role = function_role(resources, function)
        for shape, key in SHAPES.items():
            allowed = _allowed(resources, role, action, resource, {"dynamodb:LeadingKeys": key})
            if allowed != (shape in shapes):
                problems.append(f"{function} {action} on a {shape} ({key}): {'allowed' if allowed else 'denied'}")
        # A request without a partition key (ForAllValues alone would hold).
        if _allowed(resources, role, action, resource, {}):
            problems.append(f"{function} {action} without dynamodb:LeadingKeys: allowed")
        # BatchWriteItem names every item's key: one foreign item refuses the batch.
        if action == "dynamodb:BatchWriteItem":
            mixed = {"dynamodb:LeadingKeys": [SHAPES["record"], "D#2026-11-24#01", SHAPES["lease"]]}
            if _allowed(resources, role, action, resource, mixed):
                problems.append(f"{function} BatchWriteItem of records and a lease: allowed")
            if not _allowed(resources, role, action, resource,
                            {"dynamodb:LeadingKeys": [SHAPES["record"], "D#2026-11-24#01"]}):
                problems.append(f"{function} BatchWriteItem of two records' partitions: denied")
    assert problems == []


def test_every_table_grant_is_limited_by_key_shape_or_says_why_not(deployed):
    resources, _ = deployed
    writes = {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"}
    granted = set()
    for function in ("ApiFunction", "WeeklyFunction"):
        for action, conditions in _table_grants(resources, function).items():
            granted.add((function, action))
            limited = all(c and "dynamodb:LeadingKeys" in c for c in conditions)
            if action in writes:
                assert limited and (function, action) in TABLE_WRITES, (
                    f"{function} {action} is not limited to tally's key shapes: {conditions}")
            # Unconditioned, or open to any record or idempotency key: say why.
            if not limited or any("D#*" in c or "I#*" in c for c in conditions if c):
                assert NO_NARROWER.get((function, action)), (
                    f"{function} {action}: say in NO_NARROWER why the key design allows nothing narrower")
    assert set(TABLE_WRITES) <= granted
    assert set(NO_NARROWER) <= granted, "NO_NARROWER explains grants that no longer exist"


def test_bucket_writes_are_confined_to_the_summaries_prefix(deployed):
    resources, _ = deployed
    for name, res in resources.items():
        if res["Type"] != "AWS::IAM::Role" or res["Properties"].get("ManagedPolicyArns"):
            continue
        for action, resource, cond in grants(resources, name):
            if not action.startswith("s3:"):
                continue
            if action == "s3:ListBucket":
                # The bucket holds only tally's objects: listing it reveals nothing else.
                assert resource == "SummaryBucket.Arn", f"{name}: ListBucket on {resource}"
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
        expected = {"ApiFunctionRole", "WeeklyFunctionRole", "WeeklyScheduleRole", "WeeklyStateMachineRole"}
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


# ------------------------------------------------------------ deploy rehearsal
# What CloudFormation would refuse, or what would fail on the first request,
# checked offline on the expanded template: every Ref / GetAtt / Sub
# resolves, and every AWS SDK call in the Rust code is allowed to the
# function that makes it, on the resource it touches.

PSEUDO = {"AWS::AccountId", "AWS::Region", "AWS::Partition", "AWS::StackName", "AWS::StackId", "AWS::URLSuffix",
          "AWS::NoValue", "AWS::NotificationARNs"}
# GetAtt attributes used by the template, per resource type (a new one must be looked up).
ATTRIBUTES = {
    "AWS::DynamoDB::Table": {"Arn"},
    "AWS::S3::Bucket": {"Arn"},
    "AWS::Logs::LogGroup": {"Arn"},
    "AWS::IAM::Role": {"Arn"},
    "AWS::Lambda::Function": {"Arn"},
    "AWS::SQS::Queue": {"Arn", "QueueName"},
    "AWS::Events::Rule": {"Arn"},
    "AWS::ApiGateway::RestApi": {"RootResourceId"},
}
PARAMETER_SETS = [
    {},
    {"RetainTable": "false"},
    {"AlarmEmail": "ops@example.com", "ReportEmail": "me@example.com"},
    {"ConfigureApiGatewayAccount": "true"},
    {"LogLevel": "trace", "ScheduleState": "DISABLED"},
]


def _intrinsics(node: Any):
    if isinstance(node, dict):
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn in ("Ref", "Fn::GetAtt", "Fn::Sub", "Fn::FindInMap"):
                yield fn, arg
        for v in node.values():
            yield from _intrinsics(v)
    elif isinstance(node, list):
        for v in node:
            yield from _intrinsics(v)


@pytest.mark.parametrize("overrides", PARAMETER_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_every_ref_getatt_sub_and_findinmap_resolves(cfn_template, overrides):
    deployed = resolve(cfn_template, overrides)
    resources = deployed["Resources"]
    params = deployed["Parameters"]
    names = set(resources) | set(params) | PSEUDO
    problems = []

    def check_name(name: str, where: str) -> None:
        base, _, attr = name.partition(".")
        if attr:
            if base not in resources:
                problems.append(f"{where}: {name} names no resource")
            elif attr not in ATTRIBUTES.get(resources[base]["Type"], set()):
                problems.append(f"{where}: {resources[base]['Type']} has no (known) attribute {attr}")
        elif name not in names:
            problems.append(f"{where}: {name} resolves to nothing")

    for section in ("Resources", "Outputs"):
        for owner, body in deployed[section].items():
            where = f"{section}.{owner}"
            for dep in _as_list(body.get("DependsOn", [])):
                if dep not in resources:
                    problems.append(f"{where}: DependsOn {dep} does not exist")
            for fn, arg in _intrinsics(body):
                if fn == "Ref":
                    check_name(arg, where)
                elif fn == "Fn::GetAtt":
                    check_name(".".join(arg) if isinstance(arg, list) else arg, where)
                elif fn == "Fn::Sub":
                    text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                    for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        if name not in variables:
                            check_name(name, where)
                elif fn == "Fn::FindInMap":
                    table, key, attr = arg
                    values = params[key["Ref"]]["AllowedValues"] if isinstance(key, dict) else [key]
                    for value in values:
                        if attr not in deployed["Mappings"][table].get(value, {}):
                            problems.append(f"{where}: FindInMap {table}/{value}/{attr} is missing")
    assert problems == []


# The identifiers each function gets, and the resources they must name.
FUNCTION_ENV = {
    "ApiFunction": {"TABLE_NAME": {"Ref": "RecordsTable"}, "BUCKET_NAME": {"Ref": "SummaryBucket"},
                    "TALLY_LINK_SECRET_ARN": {"Ref": "ReportLinkSecret"}},
    "WeeklyFunction": {"TABLE_NAME": {"Ref": "RecordsTable"}, "BUCKET_NAME": {"Ref": "SummaryBucket"},
                       "TALLY_REPORT_TOPIC_ARN": {"Ref": "ReportTopic"},
                       "TALLY_LINK_SECRET_ARN": {"Ref": "ReportLinkSecret"}},
}

# IAM action(s) of each SDK operation the code may call. DynamoDB's
# TransactWriteItems has no action of its own: each item needs the action of
# its kind (see TRANSACT_KINDS). S3's multipart calls are PutObject.
SDK_ACTIONS = {
    "put_item": ["dynamodb:PutItem"], "get_item": ["dynamodb:GetItem"], "query": ["dynamodb:Query"],
    "batch_write_item": ["dynamodb:BatchWriteItem"], "batch_get_item": ["dynamodb:BatchGetItem"],
    "update_item": ["dynamodb:UpdateItem"], "delete_item": ["dynamodb:DeleteItem"], "scan": ["dynamodb:Scan"],
    "transact_get_items": ["dynamodb:GetItem"], "transact_write_items": None,
    "put_object": ["s3:PutObject"], "create_multipart_upload": ["s3:PutObject"], "upload_part": ["s3:PutObject"],
    "complete_multipart_upload": ["s3:PutObject"], "abort_multipart_upload": ["s3:AbortMultipartUpload"],
    "list_parts": ["s3:ListMultipartUploadParts"], "get_object": ["s3:GetObject"], "head_object": ["s3:GetObject"],
    "delete_object": ["s3:DeleteObject"], "delete_objects": ["s3:DeleteObject"], "list_objects_v2": ["s3:ListBucket"],
    "copy_object": ["s3:GetObject", "s3:PutObject"], "publish": ["sns:Publish"],
    "get_secret_value": ["secretsmanager:GetSecretValue"],
}
TRANSACT_KINDS = {"put": "dynamodb:PutItem", "update": "dynamodb:UpdateItem", "delete": "dynamodb:DeleteItem",
                  "condition_check": "dynamodb:ConditionCheckItem"}

TABLE = "RecordsTable.Arn"
BUCKET = "SummaryBucket.Arn"


def obj(key: str) -> str:
    return "${SummaryBucket.Arn}/" + key


# The partition key each kind of item has (tally_aws::dynamo's layout), as
# the request context of the rehearsal: a grant conditioned on
# dynamodb:LeadingKeys must cover the keys the call really touches.
RECORD = {"dynamodb:LeadingKeys": "D#2026-11-23#07"}
WEEKS = {"dynamodb:LeadingKeys": "W"}
ENTRY = {"dynamodb:LeadingKeys": "I#order-4711"}
LEASE = {"dynamodb:LeadingKeys": "L#2026-W47"}
MARKER = {"dynamodb:LeadingKeys": "B#01KAQ6ZP3B5Y2N0V4H8Q1C7R9S"}

# Every SDK call in the Rust sources, by (file, enclosing fn, operation):
# which Lambda reaches it (the API function runs tally-lambda's tally-api
# binary, the weekly function tally-weekly; "cli" = only `tally` on an
# operator's machine, with the operator's credentials - `tally serve
# --store aws` reaches every API path) and on what. A call found in the
# code but missing here fails the test: say who reaches it and grant it. An
# entry whose call is gone fails too.
# Each use: (function, resource, request context for conditions).
SDK_CALLS = {
    # Every insert first puts its weeks' markers.
    ("insert.rs", "mark_weeks", "put_item"): [("api", TABLE, WEEKS), ("cli", TABLE, WEEKS)],
    # A single record without an idempotency key.
    ("insert.rs", "write_records", "put_item"): [("api", TABLE, RECORD), ("cli", TABLE, RECORD)],
    # All transactions: records (write_records, insert_transacted), the
    # idempotency entry (insert_transacted, batch::commit) and a staged
    # batch's commit marker (batch::commit).
    ("write.rs", "transact", "transact_write_items"): [
        (who, TABLE, key) for who in ("api", "cli") for key in (RECORD, ENTRY, MARKER)],
    # A staged batch's records (api), the retention's deletes (weekly), restore and prune (cli).
    ("write.rs", "send_batch", "batch_write_item"): [("api", TABLE, RECORD), ("weekly", TABLE, RECORD),
                                                      ("cli", TABLE, RECORD)],
    # A staged batch with a key claims it first, and a retry of an abandoned attempt takes it over.
    ("insert.rs", "claim", "put_item"): [("api", TABLE, ENTRY), ("cli", TABLE, ENTRY)],
    ("insert.rs", "take_over", "put_item"): [("api", TABLE, ENTRY), ("cli", TABLE, ENTRY)],
    ("insert.rs", "get_entry_item", "get_item"): [("api", TABLE, ENTRY), ("cli", TABLE, ENTRY)],
    # Every Query is built by partition_query, for three callers:
    # - query_pages, the range reads: GET /records (api) and a week's records (weekly);
    # - sort_keys, weeks(): the W partition, for catch-up and retention (weekly, cli);
    # - partition_keys, a week's record keys: sweep_week and delete_week (weekly), prune (cli).
    ("read.rs", "partition_query", "query"): [("api", TABLE, RECORD), ("weekly", TABLE, RECORD),
                                               ("weekly", TABLE, WEEKS), ("cli", TABLE, RECORD),
                                               ("cli", TABLE, WEEKS)],
    # GET /records/{id} and the erasure's check that the record is visible.
    ("mod.rs", "get", "get_item"): [("api", TABLE, RECORD), ("cli", TABLE, RECORD)],
    # restore (tally import): the CLI only, so no Lambda role has BatchGetItem.
    ("read.rs", "stored", "batch_get_item"): [("cli", TABLE, RECORD)],
    ("lifecycle.rs", "delete", "delete_item"): [("api", TABLE, RECORD), ("cli", TABLE, RECORD)],
    # delete_week's last step: the week's marker.
    ("lifecycle.rs", "delete_week", "delete_item"): [("weekly", TABLE, WEEKS), ("cli", TABLE, WEEKS)],
    # Staged batches (tally_aws::batch). Commit without a key: the marker alone.
    ("batch.rs", "commit", "put_item"): [("api", TABLE, MARKER), ("cli", TABLE, MARKER)],
    # Abort: a writer that failed or ran out of time, a retry taking over an
    # abandoned attempt (api); the sweep of abandoned batches (weekly).
    ("batch.rs", "abort", "put_item"): [("api", TABLE, MARKER), ("weekly", TABLE, MARKER), ("cli", TABLE, MARKER)],
    # Readers check a staged item's batch: get and scan_range (api), a week's
    # scan, the sweep and delete_week (weekly); an abort whose emulator
    # returned no old item (both).
    ("batch.rs", "marker", "get_item"): [("api", TABLE, MARKER), ("weekly", TABLE, MARKER), ("cli", TABLE, MARKER)],
    # delete_week: whether a batch lies within the week, then its marker goes.
    ("batch.rs", "marker_range", "get_item"): [("weekly", TABLE, MARKER), ("cli", TABLE, MARKER)],
    ("batch.rs", "delete_marker", "delete_item"): [("weekly", TABLE, MARKER), ("cli", TABLE, MARKER)],
    # sweep_week: the staged records of aborted batches (conditional on their batch).
    ("batch.rs", "delete_staged", "delete_item"): [("weekly", TABLE, RECORD)],
    # The week lock (tally_core::summary::locked): every run of a week, the
    # weekly function's and `tally summarize/import --store dynamodb`'s, takes,
    # checks (before each write) and releases the week's lease.
    ("lease.rs", "try_acquire", "update_item"): [("weekly", TABLE, LEASE), ("cli", TABLE, LEASE)],
    ("lease.rs", "extend", "update_item"): [("weekly", TABLE, LEASE), ("cli", TABLE, LEASE)],
    ("lease.rs", "release", "update_item"): [("weekly", TABLE, LEASE), ("cli", TABLE, LEASE)],
    # GET /summaries (api); catch-up, retention and left-over refresh requests (weekly).
    ("s3.rs", "weeks_of_objects", "list_objects_v2"): [("api", BUCKET, {"s3:prefix": "summaries/"}),
                                                      ("weekly", BUCKET, {"s3:prefix": "summaries/"})],
    ("s3.rs", "done", "delete_object"): [("weekly", obj("summaries/2026-W47/refresh.request"), {})],
    # begin_week's removal of the manifest, and the fan-out's merge deleting
    # the part states it merged.
    ("s3.rs", "delete_object", "delete_object"): [("weekly", obj("summaries/2026-W47/manifest.json"), {}),
                                                  ("weekly", obj("summaries/2026-W47/part-03.state"), {})],
    # Every object read (read_object, read_index): GET /summaries/{week} and
    # the erasure's manifest check; the report site's pages (GET /reports/...).
    ("s3.rs", "get", "get_object"): [("api", obj("summaries/2026-W47/manifest.json"), {}),
                                             ("api", obj("summaries/2026-W47/summary.json"), {}),
                                             ("api", obj("summaries/2026-W47/summary.html"), {}),
                                             ("api", obj("summaries/index.html"), {}),
                                             # The fan-out's merge reads the part states; a run reads
                                             # the week's manifest (announce, erasure refresh) and
                                             # last week's summary.json (the comparison).
                                             ("weekly", obj("summaries/2026-W47/part-03.state"), {}),
                                             ("weekly", obj("summaries/2026-W46/summary.json"), {}),
                                             ("weekly", obj("summaries/2026-W47/manifest.json"), {})],
    # The report-link secret: checking links (api), signing each
    # notification's (weekly), `tally report-link --link-secret-arn` (cli).
    ("secret.rs", "load", "get_secret_value"): [("api", "Ref:ReportLinkSecret", {}),
                                                ("weekly", "Ref:ReportLinkSecret", {}),
                                                ("cli", "Ref:ReportLinkSecret", {})],
    ("s3.rs", "put_whole", "put_object"): [("api", obj("summaries/2026-W47/refresh.request"), {})]
    + [("weekly", obj(f"summaries/2026-W47/{name}"), {})
       for name in ("summary.json", "summary.html", "manifest.json", "part-03.state")],
    ("s3.rs", "upload_part", "create_multipart_upload"): [("weekly", obj("summaries/2026-W47/records.ndjson.gz"), {})],
    ("s3.rs", "upload_part", "upload_part"): [("weekly", obj("summaries/2026-W47/records.ndjson.gz"), {})],
    ("s3.rs", "finish_inner", "complete_multipart_upload"): [("weekly", obj("summaries/2026-W47/records.ndjson.gz"), {})],
    ("s3.rs", "abort_inner", "abort_multipart_upload"): [("weekly", obj("summaries/2026-W47/records.ndjson.gz"), {})],
    ("s3.rs", "drop", "abort_multipart_upload"): [("weekly", obj("summaries/2026-W47/records.ndjson.gz"), {})],
    # The weekly report digest (TALLY_REPORT_TOPIC_ARN); the CLI only sends webhooks.
    ("sns.rs", "deliver", "publish"): [("weekly", "Ref:ReportTopic", {})],
}
ROLE_OF = {"api": "ApiFunction", "weekly": "WeeklyFunction"}


def _sdk_source_files() -> list[Any]:
    return sorted(p for p in (ROOT / "crates").glob("*/src/**/*.rs")
                  if p.name != "testing.rs" and "aws_sdk_" in p.read_text())


def _code(path: Any) -> str:
    """A source file up to its tests."""
    src = path.read_text()
    cut = src.find("#[cfg(test)]")
    return src if cut < 0 else src[:cut]


def scan_sdk_calls() -> dict[tuple[str, str, str], str]:
    """(file, enclosing fn, operation) -> the code around it, for every SDK
    call outside tests: a fluent call on a client (`client.<op>()`, any
    name) or a known operation name. A `.presigned(` request is signed with
    the function's role, so it needs the grant of the operation it signs:
    it counts as that operation (the fluent call earlier in its chain), or
    as "presigned" (which fails the test) if none can be seen."""
    found = {}
    ops = "|".join(sorted(SDK_ACTIONS, key=len, reverse=True))
    pattern = rf"client(?:\(\))?\s*\.\s*(\w+)\(\)|\.\s*({ops})\(\)|\.(presigned)\("
    for path in _sdk_source_files():
        body = _code(path)
        for m in re.finditer(pattern, body):
            op = next(g for g in m.groups() if g)
            if op == "clone":
                continue
            fns = list(re.finditer(r"\bfn\s+(\w+)", body[: m.start()]))
            start = fns[-1].start() if fns else 0
            if op == "presigned":
                statement = body[max(body.rfind(";", 0, m.start()), body.rfind("{", 0, m.start()), start): m.start()]
                signed = re.findall(rf"\.\s*({ops})\(\)", statement)
                if signed:
                    continue  # found as that operation already, in this very fn
            # The enclosing fn up to the call (and a little after): enough to
            # see a transaction's item kinds when it builds them itself.
            found[(path.name, fns[-1].group(1) if fns else "", op)] = body[start: m.end() + 400]
    return found


# How a transaction item is made: the builder, then its one kind.
TRANSACT_ITEM = r"TransactWriteItem::builder\(\)\s*\.\s*(?:set_)?(\w+)\("


def transact_item_kinds(code: str) -> set[str]:
    """The kinds of item a transact_write_items call writes: those its fn
    builds, or - when it sends items built elsewhere (a shared `transact`
    helper taking a Vec<TransactWriteItem>) - every kind any fn of the Rust
    sources builds, since the builder is the only way to make one."""
    kinds = set(re.findall(TRANSACT_ITEM, code))
    if kinds:
        return kinds
    signature = re.match(r"fn\s+\w+[^{]*", code)
    assert signature and "TransactWriteItem" in signature.group(0), (
        "transact_write_items: its fn neither builds its items nor takes them as Vec<TransactWriteItem>; "
        "teach transact_item_kinds where they come from"
    )
    return {k for path in _sdk_source_files() for k in re.findall(TRANSACT_ITEM, _code(path))}


def _iam_match(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p).replace(r"\?", ".") for p in pattern.split("*")), value) is not None


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, Any]) -> bool:
    """One condition of a grant against a request context, as IAM evaluates
    it (see the documentation cited at the top): a multivalued key's value is
    a list (a BatchWriteItem names every item's partition key)."""
    value = context.get(key)
    values = [v for v in _as_list(value) if v not in ("", None)] if value is not None else []
    if operator == "Null":
        return (not values) == (expected == "true")
    if operator == "ForAllValues:StringLike":
        # Every value matches some pattern - vacuously true without values.
        return all(any(_iam_match(p, v) for p in _as_list(expected)) for v in values)
    if operator == "StringLike":
        return len(values) == 1 and any(_iam_match(p, values[0]) for p in _as_list(expected))
    raise AssertionError(f"teach the rehearsal {operator}")


def _allowed(resources: dict[str, Any], role: str, action: str, resource: str, context: dict[str, Any]) -> bool:
    def applies(grant_resource: str, cond: str | None) -> bool:
        if not _iam_match(grant_resource, resource):
            return False
        return all(_condition_holds(operator, key, expected, context)
                   for operator, tests in (json.loads(cond) if cond else {}).items()
                   for key, expected in tests.items())

    allowed = any(a == action and applies(r, c) for a, r, c in grants(resources, role))
    denied = any(a == action and _iam_match(r, resource) for a, r, _ in grants(resources, role, "Deny"))
    return allowed and not denied


def _actions(op: str, code: str) -> list[str]:
    if op == "presigned":
        raise AssertionError("a .presigned( call: list it under the operation it signs (get_object)")
    if op not in SDK_ACTIONS:
        raise AssertionError(f"SDK operation {op}: add its IAM action(s) to SDK_ACTIONS")
    if SDK_ACTIONS[op] is not None:
        return SDK_ACTIONS[op]
    kinds = transact_item_kinds(code)
    assert kinds, "transact_write_items: could not see which item kinds it writes"
    unknown = kinds - set(TRANSACT_KINDS)
    assert not unknown, f"transact_write_items: add the IAM action of item kind(s) {unknown} to TRANSACT_KINDS"
    return sorted({TRANSACT_KINDS[k] for k in kinds})


def test_the_sdk_call_list_matches_the_rust_code():
    scanned = scan_sdk_calls()
    unlisted = sorted(set(scanned) - set(SDK_CALLS))
    assert not unlisted, (
        f"SDK calls with no entry in SDK_CALLS: {unlisted}. Add each with the function(s) that reach it "
        "(api / weekly / cli) and the resource it touches; the rehearsal then checks the grant."
    )
    gone = sorted(set(SDK_CALLS) - set(scanned))
    assert not gone, f"SDK_CALLS lists calls no longer in the code: {gone}; remove them (and unneeded grants)"


def _uses():
    scanned = scan_sdk_calls()
    for key, uses in SDK_CALLS.items():
        actions = _actions(key[2], scanned.get(key, ""))
        for use in uses:
            yield f"{key[0]}::{key[1]} {key[2]}", actions, use


@pytest.mark.parametrize("overrides", [{}, {"RetainTable": "false"}], ids=["retained-table", "deletable-table"])
def test_every_sdk_call_of_each_function_is_granted_on_the_resource_it_touches(cfn_template, overrides):
    resources = resolve(cfn_template, overrides)["Resources"]
    missing = []
    for call, actions, (who, resource, context) in _uses():
        if who == "cli":
            continue
        function = ROLE_OF[who]
        role = function_role(resources, function)
        for action in actions:
            if not _allowed(resources, role, action, resource, context):
                missing.append(f"{function} calls {call}: {action} on {resource} {context or ''}".rstrip())
    assert missing == []


def test_the_functions_are_told_the_resources_their_grants_name(cfn_template):
    resources = resolve(cfn_template)["Resources"]
    for function, expected in FUNCTION_ENV.items():
        env = resources[function]["Properties"]["Environment"]["Variables"]
        for name, value in expected.items():
            assert env[name] == value, (function, name)


def test_every_grant_of_a_function_role_has_a_caller():
    """The other direction: a function role holds nothing the code (or its
    logs and dead-letter queue) does not need."""
    needed: dict[str, set[str]] = {"api": set(), "weekly": set()}
    for _, actions, (who, _, _) in _uses():
        if who in needed:
            needed[who].update(actions)
    platform = {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert {a for a, _, _ in API_GRANTS} == needed["api"] | platform
    assert {a for a, _, _ in WEEKLY_GRANTS} == needed["weekly"] | platform | {"sqs:SendMessage"}


# Reads of objects that may be missing, and what must come back: a 404 that
# the code maps to "absent" (S3SummarySink::read_object -> Ok(None)), never a
# 403 that it reports as an outage. S3's GetObject API reference, section
# "Permissions" (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html),
# and HeadObject's likewise (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html):
#   "If the object you request doesn't exist, the error that Amazon S3 returns
#    depends on whether you also have the s3:ListBucket permission. If you have
#    the s3:ListBucket permission on the bucket, Amazon S3 returns an HTTP
#    status code 404 Not Found error. If you don't have the s3:ListBucket
#    permission, Amazon S3 returns an HTTP status code 403 Access Denied error."
# The condition key s3:prefix is defined for ListBucket (ListObjects) requests
# only (Service Authorization Reference, Amazon S3, "Condition keys":
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html);
# a GetObject request carries no prefix, so the permission S3 checks for the
# 404 is s3:ListBucket on the bucket with an EMPTY request context: a grant
# conditioned on s3:prefix (0.3's) does not count, and 0.3's roles got 403.
# moto does not enforce IAM, so no moto test can show this: the rehearsal is
# the check.
MISSING_KEY_404 = {
    # GET /summaries/{week} of a week not summarized; the erasure's manifest
    # check; GET /reports/ before any week is summarized.
    ("s3.rs", "get", "get_object"): ["api", "weekly"],
}


def test_every_read_of_a_possibly_missing_object_gets_404_not_403(cfn_template):
    resources = resolve(cfn_template)["Resources"]
    scanned = scan_sdk_calls()
    reads = {key for key in scanned if key[2] in ("get_object", "head_object")}
    assert reads == set(MISSING_KEY_404), (
        f"reads of objects that may be missing changed: {sorted(reads)}; list each in MISSING_KEY_404")
    problems = []
    for key, whos in MISSING_KEY_404.items():
        callers = {who for who, _, _ in SDK_CALLS[key] if who != "cli"}
        assert callers == set(whos), f"{key}: reached by {callers}"
        for who in whos:
            role = function_role(resources, ROLE_OF[who])
            for _, resource, _ in (u for u in SDK_CALLS[key] if u[0] == who):
                assert _allowed(resources, role, "s3:GetObject", resource, {})
            if not _allowed(resources, role, "s3:ListBucket", BUCKET, {}):
                problems.append(f"{ROLE_OF[who]} ({key[1]}): a missing object answers 403, not 404 - "
                                "grant s3:ListBucket on the bucket without an s3:prefix condition")
    assert problems == []
