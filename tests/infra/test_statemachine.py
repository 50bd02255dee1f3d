"""The weekly state machine (statemachine/weekly.asl.json, issue 16): its
states and transitions, the retries of every step, the concurrency caps,
the payloads of the event contract with the tally-weekly function, and
that no failure is swallowed. Then the definition, substituted as
CloudFormation would, runs on moto's Step Functions interpreter with
Lambda answered by moto's echoing stand-in: the function sees exactly the
contract's payloads, in order, and Finish gets every merge's output.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_statemachine.py
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import pytest
from conftest import ROOT, resolve

DEFINITION = ROOT / "statemachine" / "weekly.asl.json"
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                 "Lambda.TooManyRequestsException"}
# The Lambda timeout of WeeklyFunction: no step can take longer.
STEP_SECONDS = 900


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text())


def _states(scope: dict[str, Any]):
    """(name, state, its scope) for every state, nested maps included."""
    for name, state in scope["States"].items():
        yield name, state, scope
        if "ItemProcessor" in state:
            yield from _states(state["ItemProcessor"])


def _all(asl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, state, _ in _states(asl):
        assert name not in found, f"state name {name} used twice"
        found[name] = state
    return found


def _walk(node: Any):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _path(scope: dict[str, Any]) -> list[str]:
    """The states of a scope in execution order; it must be a chain from
    StartAt to the one End state, every state on it."""
    order, name = [], scope["StartAt"]
    while True:
        assert name in scope["States"], f"transition to unknown state {name}"
        assert name not in order, f"loop at {name}"
        order.append(name)
        state = scope["States"][name]
        assert ("Next" in state) != bool(state.get("End")), f"{name}: exactly one of Next / End"
        if state.get("End"):
            break
        name = state["Next"]
    assert order == list(scope["States"]), f"unreachable or out-of-order states: {set(scope['States']) - set(order)}"
    return order


def test_states_and_transitions(asl):
    states = asl["States"]
    # Plan -> Weeks -> Finish -> More; More continues a long catch-up or ends.
    assert asl["StartAt"] == "Plan"
    assert [states["Plan"]["Next"], states["Weeks"]["Next"], states["Finish"]["Next"]] == ["Weeks", "Finish", "More"]
    more = states["More"]
    assert more["Type"] == "Choice"
    assert more["Choices"] == [{"Variable": "$.more", "BooleanEquals": True, "Next": "Continue"}]
    assert more["Default"] == "Done"
    assert states["Continue"].get("End") is True and states["Done"] == {**states["Done"], "Type": "Pass", "End": True}
    assert set(states) == {"Plan", "Weeks", "Finish", "More", "Continue", "Done"}
    weeks = states["Weeks"]
    assert weeks["Type"] == "Map"
    assert _path(weeks["ItemProcessor"]) == ["Parts", "Merge"]
    parts = weeks["ItemProcessor"]["States"]["Parts"]
    assert parts["Type"] == "Map"
    assert _path(parts["ItemProcessor"]) == ["Part"]
    everything = _all(asl)
    assert {n for n, s in everything.items() if s["Type"] == "Task"} == {"Plan", "Part", "Merge", "Finish", "Continue"}
    assert {n for n, s in everything.items() if s["Type"] == "Map"} == {"Weeks", "Parts"}


def test_a_long_catch_up_continues_in_a_next_execution_of_this_machine_only(asl):
    """The plan's "more" reaches Finish, which passes it on; Continue starts
    this very state machine ($$.StateMachine.Id) with {"catch_up": true},
    without waiting (no .sync: the execution's own history stays bounded)."""
    states = asl["States"]
    assert states["Plan"]["ResultSelector"]["more.$"] == "$.Payload.more"
    assert states["Finish"]["Parameters"]["Payload"]["more.$"] == "$.more"
    cont = states["Continue"]
    assert cont["Resource"] == "arn:aws:states:::states:startExecution"
    assert cont["Parameters"] == {"StateMachineArn.$": "$$.StateMachine.Id",
                                  "Input": {"catch_up": True,
                                            "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$": "$$.Execution.Id"}}
    (retry,) = cont["Retry"]
    assert retry["ErrorEquals"] == ["States.TaskFailed"] and 1 <= retry["MaxAttempts"] <= 3


def test_weeks_run_one_at_a_time_in_order_and_parts_at_most_the_parameter_at_once(asl, sam_template):
    weeks = asl["States"]["Weeks"]
    assert weeks["ItemsPath"] == "$.weeks"
    assert weeks["MaxConcurrency"] == 1
    # Each week's iteration sees its week and the cap the plan carries...
    assert weeks["ItemSelector"] == {"week.$": "$$.Map.Item.Value", "concurrency.$": "$.concurrency"}
    parts = weeks["ItemProcessor"]["States"]["Parts"]
    assert "MaxConcurrency" not in parts
    assert parts["MaxConcurrencyPath"] == "$.concurrency"
    # ...which the Plan state takes from the template parameter: a
    # DefinitionSubstitution is text, StringToJson makes it the number
    # MaxConcurrencyPath needs.
    assert asl["States"]["Plan"]["ResultSelector"]["concurrency.$"] == "States.StringToJson('${WeeklyPartsConcurrency}')"
    machine = sam_template["Resources"]["WeeklyStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == "statemachine/weekly.asl.json"
    assert machine["DefinitionSubstitutions"]["WeeklyPartsConcurrency"] == {"Ref": "WeeklyPartsConcurrency"}
    param = sam_template["Parameters"]["WeeklyPartsConcurrency"]
    assert (param["Type"], param["Default"], param["MinValue"], param["MaxValue"]) == ("Number", 7, 1, 28)


def test_every_substitution_in_the_definition_is_provided_and_every_provided_one_used(sam_template):
    used = set(re.findall(r"\$\{([^}]+)\}", DEFINITION.read_text()))
    provided = set(sam_template["Resources"]["WeeklyStateMachine"]["Properties"]["DefinitionSubstitutions"])
    assert used == provided == {"WeeklyFunctionArn", "WeeklyPartsConcurrency"}
    assert sam_template["Resources"]["WeeklyStateMachine"]["Properties"]["DefinitionSubstitutions"][
        "WeeklyFunctionArn"] == {"Fn::GetAtt": ["WeeklyFunction", "Arn"]}


def test_every_task_invokes_the_weekly_function_and_retries(asl):
    for name, state in _all(asl).items():
        if state["Type"] != "Task" or name == "Continue":
            continue
        assert state["Resource"] == "arn:aws:states:::lambda:invoke", name
        assert state["Parameters"]["FunctionName"] == "${WeeklyFunctionArn}", name
        retries = state["Retry"]
        # Lambda's transient errors: with backoff, several times.
        (transient,) = [r for r in retries if set(r["ErrorEquals"]) == LAMBDA_ERRORS]
        assert transient["MaxAttempts"] >= 3 and transient["BackoffRate"] > 1 and transient["IntervalSeconds"] >= 1, name
        # The function's own failures (a lease held by a refresh, a timeout):
        # retried a bounded number of times, later - reruns converge (a part
        # rewrites its state object, a merge takes the lease and rewrites the
        # week, manifest last).
        (failed,) = [r for r in retries if r["ErrorEquals"] == ["States.TaskFailed"]]
        assert 1 <= failed["MaxAttempts"] <= 3 and failed["IntervalSeconds"] >= 10 and failed["BackoffRate"] > 1, name
        assert len(retries) == 2, name


def test_no_failure_is_swallowed(asl):
    """A part that still fails after its retries fails the Parts map, so no
    Merge runs (no manifest) and the execution fails: no Catch anywhere, no
    retry of everything, no tolerated failures in a map."""
    for node in _walk(asl):
        if isinstance(node, dict):
            assert "Catch" not in node
            assert "ToleratedFailurePercentage" not in node and "ToleratedFailureCount" not in node
            assert "ToleratedFailurePercentagePath" not in node and "ToleratedFailureCountPath" not in node
            assert "States.ALL" not in node.get("ErrorEquals", [])
            assert node.get("Type") not in ("Fail", "Succeed", "Parallel", "Wait"), node
    # The one Choice only decides whether to continue a catch-up, after Finish.
    assert [n for n, s in _all(asl).items() if s["Type"] == "Choice"] == ["More"]
    assert [n for n, s in _all(asl).items() if s["Type"] == "Pass"] == ["Done"]


def test_the_payloads_follow_the_event_contract(asl):
    states = _all(asl)
    # Plan: the execution input as is; its output is the plan's weeks.
    assert states["Plan"]["Parameters"]["Payload"] == {"tally": "plan", "input.$": "$"}
    assert states["Plan"]["ResultSelector"]["weeks.$"] == "$.Payload.weeks"
    # Part: one element of the week's parts, untouched; outputs are dropped
    # (the merge reads the part states from S3, and the execution's 256 KB
    # state limit stays far away).
    assert states["Parts"]["ItemsPath"] == "$.week.parts"
    assert states["Part"]["Parameters"]["Payload.$"] == "$"
    assert states["Parts"]["ResultPath"] is None
    # Merge: the week's merge object; its result is the iteration's output.
    assert states["Merge"]["Parameters"]["Payload.$"] == "$.week.merge"
    assert states["Merge"]["OutputPath"] == "$.Payload"
    # Finish: every merge output, in week order (Weeks keeps them under
    # $.done, beside the plan's "more").
    assert states["Weeks"]["ResultPath"] == "$.done"
    assert not {"ResultSelector", "OutputPath"} & set(states["Weeks"])
    assert states["Finish"]["Parameters"]["Payload"] == {"tally": "finish", "weeks.$": "$.done", "more.$": "$.more"}
    assert states["Finish"]["OutputPath"] == "$.Payload"


def test_the_execution_has_a_timeout_that_fits_a_week(asl):
    # Plan + every part of a week in one wave (each retried twice) + merge + finish.
    assert asl["TimeoutSeconds"] >= STEP_SECONDS * (1 + 3 + 3 + 1)
    assert asl["TimeoutSeconds"] <= 86400, "a stuck run should alarm the same day"


def _lint(definition: dict[str, Any]) -> list[str]:
    from cfnlint.api import lint

    template = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/weekly", "Definition": definition,
                       "DefinitionSubstitutions": {"WeeklyFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:w",
                                                   "WeeklyPartsConcurrency": "7"}}}}}
    return [str(m) for m in lint(json.dumps(template))]


def test_cfn_lint_validates_the_definition_against_the_states_language_schema(asl):
    """cfn-lint does not read a DefinitionUri file, so the definition is
    linted here inline (rule E3601, the Amazon States Language schema) -
    and a broken copy proves the rule is really applied."""
    assert _lint(asl) == []
    broken = copy.deepcopy(asl)
    broken["States"]["Weeks"]["ItemProcessor"]["States"]["Parts"]["MaxConcurrency"] = "all"
    assert any("E3601" in m for m in _lint(broken))


def test_the_state_machine_role_may_only_invoke_the_weekly_function_and_start_itself(cfn_template):
    from test_iam import grants

    resources = resolve(cfn_template)["Resources"]
    role = resources["WeeklyStateMachine"]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert role == "WeeklyStateMachineRole"
    machine = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-weekly"
    assert grants(resources, role) == {
        ("lambda:InvokeFunction", "WeeklyFunction.Arn", None),
        ("lambda:InvokeFunction", "${WeeklyFunction.Arn}:*", None),
        # The Continue state: a next execution of this machine, never another.
        ("states:StartExecution", machine, None),
    }
    (statement,) = resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement == {
        "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                      "ArnLike": {"aws:SourceArn": [{"Fn::Sub": machine}, {"Fn::Sub": machine + ":*"}]}},
    }
    # The name the trust policy names.
    assert resources["WeeklyStateMachine"]["Properties"]["StateMachineName"] == {"Fn::Sub": "${AWS::StackName}-weekly"}
    assert resources["WeeklyStateMachine"]["Properties"]["StateMachineType"] == "STANDARD"


# ---------------------------------------------------------------- on moto
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:tally-weekly"


@pytest.fixture(scope="module")
def moto_sfn():
    """A moto server of its own (its Step Functions interpreter and the
    Lambda stand-in are server-wide settings), started like test_scripts'."""
    from test_scripts import _free_port

    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "moto_server")):
        pytest.fail(f"moto_server not found next to {sys.executable}: run scripts/setup-python")
    port = _free_port()
    # MOTO_PORT: the interpreter's service integrations (the Continue
    # state's StartExecution) call this server back; moto_sfn_server.py
    # says why it wraps moto_server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_")} | {"MOTO_PORT": str(port)}
    server = os.path.join(os.path.dirname(__file__), "moto_sfn_server.py")
    proc = subprocess.Popen([sys.executable, server, "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        # Run executions for real (moto's ASL interpreter); Lambda without
        # Docker: it answers a queued result, else echoes its payload.
        _post(url, "/moto-api/config", {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}})
        import boto3

        sfn = boto3.client("stepfunctions", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        definition = (DEFINITION.read_text().replace("${WeeklyFunctionArn}", FUNCTION_ARN)
                      .replace("${WeeklyPartsConcurrency}", "2"))
        # create_state_machine parses the definition (moto rejects an invalid one).
        arn = sfn.create_state_machine(name="tally-weekly", definition=definition,
                                       roleArn="arn:aws:iam::123456789012:role/weekly")["stateMachineArn"]
        yield url, sfn, arn
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _post(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def _plan_week(week: str, n: int) -> dict[str, Any]:
    return {"week": week,
            "parts": [{"tally": "part", "week": week, "part": f"{k}/{n}"} for k in range(1, n + 1)],
            "merge": {"tally": "merge", "week": week, "announce": True, "refresh": False}}


def _history(sfn, execution: str) -> list[dict[str, Any]]:
    events, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=execution, maxResults=1000, **({"nextToken": token} if token else {}))
        events += page["events"]
        if not (token := page.get("nextToken")):
            return events


def _run(moto_sfn, execution_input: dict[str, Any], plan: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Start an execution whose Plan step answers `plan` (every later step
    echoes its payload); wait for it to end; its description and the
    payloads the function was invoked with, in order."""
    url, sfn, arn = moto_sfn
    _post(url, "/moto-api/static/lambda-simple/response", {"results": [json.dumps(plan)]})
    # A name of its own: moto names every unnamed execution "None".
    execution = sfn.start_execution(stateMachineArn=arn, name=f"run-{uuid.uuid4()}",
                                    input=json.dumps(execution_input))["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not end within 60 s"
        time.sleep(0.05)
    events = _history(sfn, execution)
    invoked = []
    for event in events:
        if event["type"] == "TaskScheduled" and event["taskScheduledEventDetails"]["resourceType"] == "lambda":
            parameters = json.loads(event["taskScheduledEventDetails"]["parameters"])
            assert parameters["FunctionName"] == FUNCTION_ARN
            invoked.append(parameters["Payload"])
    return described, invoked


def test_a_catch_up_run_invokes_the_function_with_the_contracts_payloads_in_order(moto_sfn):
    weeks = [_plan_week("2026-W46", 3), _plan_week("2026-W47", 3)]
    described, invoked = _run(moto_sfn, {"from": "2026-W46", "to": "2026-W47"}, {"weeks": weeks, "more": False})
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    assert invoked[0] == {"tally": "plan", "input": {"from": "2026-W46", "to": "2026-W47"}}
    # Week after week: all its parts (any order), then its merge.
    rest = invoked[1:]
    for week in weeks:
        parts, rest = rest[: len(week["parts"])], rest[len(week["parts"]):]
        assert sorted(parts, key=json.dumps) == sorted(week["parts"], key=json.dumps)
        assert rest[0] == week["merge"]
        rest = rest[1:]
    # Finish last, with each merge's output (the echo here) in week order.
    finish = {"tally": "finish", "weeks": [w["merge"] for w in weeks], "more": False}
    assert rest == [finish]
    assert json.loads(described["output"]) == finish


def test_a_run_with_nothing_to_summarise_still_finishes(moto_sfn):
    """Every week already summarised: the plan has no weeks, Finish still
    prunes and reports."""
    described, invoked = _run(moto_sfn, {}, {"weeks": [], "more": False})
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    assert invoked == [{"tally": "plan", "input": {}}, {"tally": "finish", "weeks": [], "more": False}]


# Step Functions service quotas (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html):
# "Maximum input or output size for a task, state, or execution: 256 KiB" and
# "Maximum execution history size: 25,000 events".
PAYLOAD_LIMIT = 256 * 1024
HISTORY_LIMIT = 25_000
# tally_core::summary::plan::MAX_WEEKS_PER_RUN, and the most shares a week has.
MAX_WEEKS_PER_RUN = 26
MAX_SHARES = 28


def test_the_bound_matches_the_rust_constant():
    plan_rs = (ROOT / "crates" / "tally-core" / "src" / "summary" / "plan.rs").read_text()
    assert f"pub const MAX_WEEKS_PER_RUN: usize = {MAX_WEEKS_PER_RUN};" in plan_rs


def _wait_for_new_execution(sfn, arn: str, known: set[str]) -> dict[str, Any]:
    """The one execution of `arn` not in `known`, once it has ended."""
    deadline = time.monotonic() + 60
    while not (new := [e for e in sfn.list_executions(stateMachineArn=arn)["executions"]
                       if e["executionArn"] not in known]):
        assert time.monotonic() < deadline, "no next execution was started"
        time.sleep(0.05)
    (execution,) = new
    while (described := sfn.describe_execution(executionArn=execution["executionArn"]))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the next execution did not end"
        time.sleep(0.05)
    return described


def _history_of_weeks(moto_sfn, n_weeks: int, more: bool) -> tuple[dict[str, Any], list[Any], int]:
    url, sfn, arn = moto_sfn
    weeks = [_plan_week(f"2014-W{n:02d}", MAX_SHARES) for n in range(1, n_weeks + 1)]
    described, invoked = _run(moto_sfn, {}, {"weeks": weeks, "more": more, "deferred": 600 if more else 0})
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    assert len(invoked) == 1 + n_weeks * (MAX_SHARES + 1) + 1
    return described, invoked, len(_history(sfn, described["executionArn"]))


def test_600_weeks_to_catch_up_run_26_an_execution_within_the_limits_and_continue(moto_sfn):
    """600 weeks to catch up: an execution builds the bound's 26 (the Rust
    plan's test, tally_core::summary::plan, shows the choice and that 24
    executions cover them), and this runs the state machine's side on moto.
    A week in 28 shares costs a fixed number of history events, measured
    here from executions of 1 and 2 such weeks; the worst execution (26
    weeks, every task retried twice: 3 events a retry) must stay below
    25,000 events and its plan below 256 KiB. An execution whose plan says
    "more" ends by starting the next execution of the same machine with
    {"catch_up": true}, linked to it."""
    url, sfn, arn = moto_sfn
    known = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]}
    _, _, one = _history_of_weeks(moto_sfn, 1, more=False)
    described, invoked, two = _history_of_weeks(moto_sfn, 2, more=True)
    per_week, fixed = two - one, 2 * one - two
    tasks = 2 + MAX_WEEKS_PER_RUN * (MAX_SHARES + 1)
    worst = fixed + MAX_WEEKS_PER_RUN * per_week + 3 * 2 * tasks
    print(f"history: {fixed} + {per_week} events a week of {MAX_SHARES} shares; "
          f"26 weeks with two retries of each of {tasks} tasks: {worst} of {HISTORY_LIMIT}")
    assert worst < HISTORY_LIMIT, worst
    weeks = [_plan_week(f"2014-W{n:02d}", MAX_SHARES) for n in range(1, MAX_WEEKS_PER_RUN + 1)]
    for week in weeks:
        week["merge"]["started_ms"] = 1_790_000_000_000
    assert len(json.dumps({"weeks": weeks, "more": True, "deferred": 574})) < PAYLOAD_LIMIT // 4
    # Finish passed "more" on, and the machine started its next execution.
    assert invoked[-1]["more"] is True
    known |= {e["executionArn"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]
              if json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"]).get("catch_up") is None}
    nxt = _wait_for_new_execution(sfn, arn, known)
    assert json.loads(nxt["input"]) == {"catch_up": True,
                                        "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": described["executionArn"]}


def test_a_run_with_nothing_more_starts_no_next_execution(moto_sfn):
    url, sfn, arn = moto_sfn
    known = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]}
    described, invoked = _run(moto_sfn, {}, {"weeks": [], "more": False})
    assert described["status"] == "SUCCEEDED"
    # The run has ended, so anything it started is listed already.
    assert {e["executionArn"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]} == known | {
        described["executionArn"]}
