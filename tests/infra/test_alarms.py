"""The alarms tell a person what they have to act on, and nothing else.

- Every alarm notifies AlarmTopic (the AlarmEmail address) on ALARM and on OK.
- They watch what an operator acts on: function errors and throttles, the
  API's 5xx, the weekly run failing or not happening, refresh requests and
  starts that were given up on (dead-letter queue, dropped events).
- None pages for a step error that the state machine's retries then fix.
- The missing-run alarm's rule is replayed hour by hour against the way
  CloudWatch evaluates it: not ALARM for a new stack, OK after the deploy's
  verification run, ALARM at the end of the hour a scheduled run was due
  when it did not start, and never a false alarm at a weekly boundary.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_alarms.py
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import json
import re
from typing import Any

import pytest
from conftest import ROOT, resolve

ALARM = "AWS::CloudWatch::Alarm"


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


FUNCTION = {"api": {"Ref": "ApiFunction"}, "weekly": {"Ref": "WeeklyFunction"}}
MACHINE = {"Ref": "WeeklyStateMachine"}

# Each alarm and the metrics it reads: (namespace, metric, dimension, value).
EXPECTED = {
    "ApiFunctionErrorsAlarm": {("AWS/Lambda", "Errors", "FunctionName", _key(FUNCTION["api"]))},
    "ApiFunctionThrottlesAlarm": {("AWS/Lambda", "Throttles", "FunctionName", _key(FUNCTION["api"]))},
    "WeeklyFunctionThrottlesAlarm": {("AWS/Lambda", "Throttles", "FunctionName", _key(FUNCTION["weekly"]))},
    # The refresh path's invocations Lambda gave up on (see the template).
    "WeeklyFunctionErrorsAlarm": {("AWS/Lambda", "AsyncEventsDropped", "FunctionName", _key(FUNCTION["weekly"]))},
    "Api5xxAlarm": {("AWS/ApiGateway", "5XXError", "ApiName", _key({"Fn::Sub": "${AWS::StackName}-api"}))},
    "DeadLetterQueueDepthAlarm": {("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                                   _key({"Fn::GetAtt": ["WeeklyDeadLetterQueue", "QueueName"]}))},
    "WeeklyRunFailedAlarm": {("AWS/States", m, "StateMachineArn", _key(MACHINE))
                             for m in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted")},
    "WeeklyRunMissingAlarm": {("AWS/States", "ExecutionsStarted", "StateMachineArn", _key(MACHINE))},
}


def _alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: r["Properties"] for n, r in resources.items() if r["Type"] == ALARM}


def _metric_stats(props: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads, with Stat and Period: its one metric or
    every metric of its metric math."""
    if "Metrics" in props:
        return [{**m["MetricStat"]["Metric"], "Stat": m["MetricStat"]["Stat"], "Period": m["MetricStat"]["Period"]}
                for m in props["Metrics"] if "MetricStat" in m]
    return [{"Namespace": props["Namespace"], "MetricName": props["MetricName"],
             "Dimensions": props["Dimensions"], "Stat": props["Statistic"], "Period": props["Period"]}]


def _watched(props: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    out = set()
    for m in _metric_stats(props):
        (dim,) = m["Dimensions"]
        out.add((m["Namespace"], m["MetricName"], dim["Name"], _key(dim["Value"])))
    return out


@pytest.fixture(scope="module")
def resources(cfn_template: dict[str, Any]) -> dict[str, Any]:
    return resolve(cfn_template)["Resources"]


def test_the_alarms_are_these_and_each_reads_what_it_is_named_for(resources):
    alarms = _alarms(resources)
    assert {name: _watched(props) for name, props in alarms.items()} == EXPECTED
    # 5XXError is published per API name: the dimension must be the very
    # expression that names TallyApi, or the alarm watches nothing.
    (api,) = [d["Value"] for d in alarms["Api5xxAlarm"]["Dimensions"]]
    assert api == resources["TallyApi"]["Properties"]["Name"]
    for name, props in alarms.items():
        # Counts: Sum (Maximum for the queue depth, a gauge).
        stats = {m["Stat"] for m in _metric_stats(props)}
        assert stats == ({"Maximum"} if name == "DeadLetterQueueDepthAlarm" else {"Sum"}), name
        # No datapoint means nothing happened - except for the missing run.
        expected_missing = "breaching" if name == "WeeklyRunMissingAlarm" else "notBreaching"
        assert props["TreatMissingData"] == expected_missing, name


def test_throttles_of_either_function_alarm_at_the_first_one(resources):
    alarms = _alarms(resources)
    for name in ("ApiFunctionThrottlesAlarm", "WeeklyFunctionThrottlesAlarm"):
        props = alarms[name]
        assert (props["Threshold"], props["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), name
        assert props["Period"] * props["EvaluationPeriods"] <= 900, f"{name}: a throttle should page within minutes"
        # Says what to do about the shared concurrency.
        assert "WeeklyPartsConcurrency" in props["AlarmDescription"], name


@pytest.mark.parametrize("overrides, notified", [({}, False), ({"AlarmEmail": "ops@example.com"}, True)],
                         ids=["no-alarm-email", "alarm-email"])
def test_every_alarm_tells_the_alarm_topic_when_it_fires_and_when_it_is_over(cfn_template, overrides, notified):
    resources = resolve(cfn_template, overrides)["Resources"]
    alarms = _alarms(resources)
    assert set(alarms) == set(EXPECTED)
    topic = [{"Ref": "AlarmTopic"}]
    for name, props in alarms.items():
        assert props.get("AlarmActions") == (topic if notified else None), name
        assert props.get("OKActions") == props.get("AlarmActions"), name
        assert "InsufficientDataActions" not in props and props.get("ActionsEnabled", True) is True, name
    assert ("AlarmTopic" in resources) == notified
    if notified:
        subscription = resources["AlarmEmailSubscription"]["Properties"]
        assert subscription == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                "Endpoint": {"Ref": "AlarmEmail"}}
        (statement,) = resources["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        assert (statement["Action"], statement["Resource"]) == ("sns:Publish", {"Ref": "AlarmTopic"})
        assert "KmsMasterKeyId" not in resources["AlarmTopic"]["Properties"], (
            "CloudWatch alarms cannot publish to a topic encrypted with aws/sns")


def _asl() -> dict[str, Any]:
    return json.loads((ROOT / "statemachine" / "weekly.asl.json").read_text())


def _tasks(states: dict[str, Any]):
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        if state["Type"] == "Map":
            yield from _tasks(state["ItemProcessor"]["States"])


def test_no_alarm_pages_for_a_weekly_step_error_that_its_retry_fixes(resources):
    """The weekly function's Errors count every failed step, also those the
    state machine then retries successfully (a week's lease held by a
    refresh, a throttled invocation): no alarm may read them. What retries
    cannot fix is still seen, for each way the function is invoked."""
    alarms = _alarms(resources)
    for name, props in alarms.items():
        assert ("AWS/Lambda", "Errors", "FunctionName", _key(FUNCTION["weekly"])) not in _watched(props), (
            f"{name} reads the weekly function's Errors, which include step errors the state machine retries")
    # The state machine: every step retries its own failures and throttling...
    for name, task in _tasks(_asl()["States"]):
        if task["Resource"] != "arn:aws:states:::lambda:invoke":
            continue  # Continue starts the next execution: no function runs
        retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
        assert {"States.TaskFailed", "Lambda.TooManyRequestsException"} <= retried, name
    # ...and what still fails, fails the execution: WeeklyRunFailedAlarm.
    failed = {m for _, m, _, _ in _watched(alarms["WeeklyRunFailedAlarm"])}
    assert {"ExecutionsFailed", "ExecutionsTimedOut"} <= failed
    # The refresh path (asynchronous invocations): Lambda retries, then
    # dead-letters and drops the event; both are watched.
    weekly = resources["WeeklyFunction"]["Properties"]
    invoke = resources["WeeklyFunctionEventInvokeConfig"]["Properties"]
    assert invoke["FunctionName"] == FUNCTION["weekly"] and invoke["MaximumRetryAttempts"] >= 1
    assert weekly["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["WeeklyDeadLetterQueue", "Arn"]}}
    assert _watched(alarms["WeeklyFunctionErrorsAlarm"]) == EXPECTED["WeeklyFunctionErrorsAlarm"]
    assert _watched(alarms["DeadLetterQueueDepthAlarm"]) == EXPECTED["DeadLetterQueueDepthAlarm"]


def test_an_alarm_fires_when_a_weekly_run_fails_times_out_or_is_aborted(resources):
    props = resources["WeeklyRunFailedAlarm"]["Properties"]
    machine = [{"Name": "StateMachineArn", "Value": MACHINE}]
    stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
    assert {s["Metric"]["MetricName"] for s in stats.values()} == {
        "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    for stat in stats.values():
        assert stat["Metric"]["Namespace"] == "AWS/States" and stat["Metric"]["Dimensions"] == machine
        assert stat["Stat"] == "Sum"
    (expression,) = [m for m in props["Metrics"] if "Expression" in m]
    assert expression["ReturnData"] is True
    # Each metric counts even when the others have no datapoint.
    assert sorted(re.findall(r"FILL\((\w+), 0\)", expression["Expression"])) == sorted(stats)
    assert [m["ReturnData"] for m in props["Metrics"] if "MetricStat" in m] == [False] * 3
    assert props["Threshold"] == 1 and props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


# ----------------------------------------------------------- the missing run
# CloudWatch's documented limits and options, from the PutMetricAlarm API
# reference (Period: "Period multiplied by EvaluationPeriods can't be more
# than 604,800 seconds") and the AWS::CloudWatch::Alarm resource
# (WallClockWindow: "the alarm's period must be 1 minute (60 seconds), 5
# minutes (300 seconds), 1 hour (3,600 seconds), 1 day (86,400 seconds), or
# 1 week (604,800 seconds)"; WarmUpPeriodDurationInMinutes: 1 to 2880).
LONGEST_RANGE = 604_800
WALL_CLOCK_PERIODS = {60, 300, 3600, 86400, 604800}
MINUTE, HOUR, DAY = 60, 3600, 86400
# A start's ExecutionsStarted datapoint becomes visible to the alarm this
# long after the start (Step Functions' metrics arrive within minutes).
INGEST_LAG = 3 * MINUTE


def test_the_missing_run_alarm_counts_starts_per_whole_hour_over_seven_days(resources):
    props = resources["WeeklyRunMissingAlarm"]["Properties"]
    (stat,) = _metric_stats(props)
    assert (stat["Namespace"], stat["MetricName"], stat["Stat"]) == ("AWS/States", "ExecutionsStarted", "Sum")
    (expression,) = [m for m in props["Metrics"] if "Expression" in m]
    (metric,) = [m for m in props["Metrics"] if "MetricStat" in m]
    # Every period without a start is a real 0: no missing datapoints, so
    # CloudWatch evaluates exactly EvaluationPeriods of them.
    assert expression["Expression"] == f"FILL({metric['Id']}, 0)" and expression["ReturnData"] is True
    assert metric["ReturnData"] is False
    period, n = stat["Period"], props["EvaluationPeriods"]
    # All of the longest range CloudWatch allows (the run is weekly), all breaching.
    assert period * n == LONGEST_RANGE and props["DatapointsToAlarm"] == n
    assert (props["Threshold"], props["ComparisonOperator"]) == (1, "LessThanThreshold")
    # Whole clock periods in UTC, the schedule's time zone.
    assert props["EvaluationWindow"] == {"WallClockWindow": {"Timezone": "UTC"}}
    assert period in WALL_CLOCK_PERIODS
    warm = props["WarmUpConfiguration"]
    assert warm["OnlyStartEvaluatingAfterWarmUpPeriodEnds"] is True
    assert period // MINUTE < warm["WarmUpPeriodDurationInMinutes"] <= 2880


class AlarmModel:
    """One metric alarm over one metric (or FILL of it), evaluated the way
    the CloudWatch User Guide describes: the last EvaluationPeriods
    datapoints of the evaluation window - whole clock periods that have
    ended (WallClockWindow) or periods ending at the minute of evaluation
    (the default sliding window) - DatapointsToAlarm of them breaching for
    ALARM; missing datapoints treated per TreatMissingData ("How alarm state
    is evaluated when data is missing": real datapoints are all used,
    missing ones filled as few times as possible; all missing: breaching ->
    ALARM, notBreaching -> OK, missing -> INSUFFICIENT_DATA, ignore ->
    unchanged). The longer "evaluation range" CloudWatch retrieves when data
    is missing is not modelled: it only keeps an alarm without FILL OK for
    longer. During a warm-up after creation the alarm is INSUFFICIENT_DATA."""

    def __init__(self, props: dict[str, Any]):
        (stat,) = _metric_stats(props)
        self.period = stat["Period"]
        expressions = [m["Expression"] for m in props.get("Metrics", []) if "Expression" in m]
        assert expressions in ([], ["FILL(started, 0)"]), f"teach the model {expressions}"
        self.fill = bool(expressions)
        self.n = props["EvaluationPeriods"]
        self.m = props.get("DatapointsToAlarm", self.n)
        self.threshold = props["Threshold"]
        assert props["ComparisonOperator"] == "LessThanThreshold", "teach the model the operator"
        self.missing = props.get("TreatMissingData", "missing")
        self.wall_clock = "WallClockWindow" in props.get("EvaluationWindow", {})
        warm = props.get("WarmUpConfiguration", {})
        # Without OnlyStartEvaluatingAfterWarmUpPeriodEnds the warm-up may end
        # at once: the model assumes it does.
        self.warm_up = warm.get("WarmUpPeriodDurationInMinutes", 0) * MINUTE if warm.get(
            "OnlyStartEvaluatingAfterWarmUpPeriodEnds") else 0

    def state(self, now: int, created: int, starts: list[int], previous: str) -> str:
        if now < created + self.warm_up:
            return "INSUFFICIENT_DATA"
        end = now // self.period * self.period if self.wall_clock else now // MINUTE * MINUTE
        # Datapoints are per minute: a start counts in the minute it began,
        # once its datapoint has arrived.
        minutes = tuple(sorted(s // MINUTE * MINUTE for s in starts if s + INGEST_LAG <= now))
        return self._evaluate(end, minutes) or previous

    @functools.lru_cache(maxsize=None)
    def _evaluate(self, end: int, minutes: tuple[int, ...]) -> str | None:
        points: list[int | None] = []
        for i in range(self.n):
            lo, hi = end - (i + 1) * self.period, end - i * self.period
            count = bisect.bisect_left(minutes, hi) - bisect.bisect_left(minutes, lo)
            points.append(count if count or self.fill else None)
        real = [p for p in points if p is not None]
        if not real:
            return {"breaching": "ALARM", "notBreaching": "OK", "missing": "INSUFFICIENT_DATA"}.get(self.missing)
        breaching = sum(p < self.threshold for p in real)
        if self.missing == "breaching":
            breaching += self.n - len(real)
        return "ALARM" if breaching >= self.m else "OK"


def _t(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone.utc).timestamp())


def _iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


# A stack created on a Wednesday morning; the default schedule, Mondays 03:00
# UTC; the scheduler starts the execution within a minute.
CREATED = _t("2026-11-18T10:17:00")
VERIFY = CREATED + 9 * MINUTE  # deploy.sh's verification run
MONDAYS = [_t("2026-11-23T03:00:00") + w * 7 * DAY for w in range(8)]


def _scheduled(skip: tuple[int, ...] = (), jitter: int = 40) -> list[int]:
    return [monday + jitter for i, monday in enumerate(MONDAYS) if i not in skip]


def _replay(model: AlarmModel, starts: list[int], until: int, step: int = 5 * MINUTE) -> list[tuple[int, str]]:
    """(time, state) every `step` from the stack's creation until `until`."""
    out, state = [], "INSUFFICIENT_DATA"
    for now in range(CREATED, until, step):
        state = model.state(now, CREATED, starts, state)
        out.append((now, state))
    return out


def _first(states: list[tuple[int, str]], wanted: str, after: int = 0) -> int | None:
    return next((t for t, s in states if s == wanted and t >= after), None)


@pytest.fixture(scope="module")
def missing_run(resources) -> AlarmModel:
    return AlarmModel(resources["WeeklyRunMissingAlarm"]["Properties"])


def test_a_new_stack_is_not_in_alarm_and_is_ok_after_the_verification_run(missing_run):
    states = _replay(missing_run, [VERIFY] + _scheduled(), MONDAYS[-1])
    alarms = [_iso(t) for t, s in states if s == "ALARM"]
    assert alarms == [], f"ALARM with every run on time: {alarms[:3]}"
    assert states[0][1] == "INSUFFICIENT_DATA"
    ok = _first(states, "OK")
    assert ok is not None and ok - CREATED <= 4 * HOUR, f"first OK only at {ok and _iso(ok)}"


@pytest.mark.parametrize("late", [0, 20 * MINUTE, 50 * MINUTE], ids=["on-time", "20-min-late", "50-min-late"])
def test_no_false_alarm_when_runs_start_a_week_apart_or_a_little_late(missing_run, late):
    """The weekly boundary: last week's start leaves the 7-day window just
    when this week's is due, and its metric arrives minutes later."""
    starts = [VERIFY] + [s + (late if i % 2 else 0) for i, s in enumerate(_scheduled())]
    states = _replay(missing_run, starts, MONDAYS[-1], step=MINUTE)
    assert [_iso(t) for t, s in states if s == "ALARM"] == []


def test_a_missed_run_is_reported_at_the_end_of_the_hour_it_was_due_and_clears_after_a_rerun(missing_run):
    missed = 3
    rerun = MONDAYS[missed] + 7 * HOUR + 20 * MINUTE  # an operator re-runs at 10:20
    starts = [VERIFY] + _scheduled(skip=(missed,)) + [rerun]
    states = _replay(missing_run, starts, MONDAYS[-1], step=MINUTE)
    alarm = _first(states, "ALARM")
    assert alarm is not None, "a missed run never raised the alarm"
    assert _iso(alarm) == _iso(MONDAYS[missed] + HOUR), "fires at 04:00 UTC, the end of the hour the run was due"
    assert alarm - MONDAYS[missed] <= HOUR
    cleared = _first(states, "OK", after=alarm)
    assert cleared is not None and _iso(cleared) == _iso(rerun // HOUR * HOUR + HOUR), (
        "OK at the end of the hour in which the next execution started")
    assert [_iso(t) for t, s in states if s == "ALARM" and not alarm <= t < cleared] == []


def test_a_new_stack_without_the_verification_run_fires_when_its_warm_up_ends(missing_run):
    """Documented exception (deploy.sh --no-verify): no start in the last 7
    days is a missing run once the warm-up is over, until the first one."""
    states = _replay(missing_run, _scheduled(), MONDAYS[1])
    alarm = _first(states, "ALARM")
    assert alarm is not None and alarm - CREATED <= missing_run.warm_up + 5 * MINUTE
    assert _first(states, "OK", after=alarm) is not None, "the first scheduled run clears it"


def test_a_sliding_window_would_raise_a_false_alarm_every_week(resources):
    """Why the window is whole clock hours: the same alarm with the default
    sliding window sees neither last week's start nor this week's, each
    week, for the minutes this week's metric takes to arrive."""
    props = dict(resources["WeeklyRunMissingAlarm"]["Properties"])
    del props["EvaluationWindow"]
    states = _replay(AlarmModel(props), [VERIFY] + _scheduled(), MONDAYS[3], step=MINUTE)
    alarms = [t for t, s in states if s == "ALARM"]
    assert alarms and all(MONDAYS[0] <= t and (t - MONDAYS[0]) % (7 * DAY) < 10 * MINUTE for t in alarms)


# ------------------------------------------------------------ documentation
def test_docs_deploy_lists_every_alarm_with_the_missing_run_rule(resources):
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    section = re.search(r"^### Alarms\n.*?(?=^#{2,3} )", text, re.M | re.S)
    assert section, "docs/DEPLOY.md has no '### Alarms' section"
    body = section.group(0)
    missing = [name for name in _alarms(resources) if f"`{name}`" not in body]
    assert missing == [], f"alarms not described in docs/DEPLOY.md's Alarms section: {missing}"
    props = resources["WeeklyRunMissingAlarm"]["Properties"]
    assert f"{props['EvaluationPeriods']} whole" in body
    assert f"{props['WarmUpConfiguration']['WarmUpPeriodDurationInMinutes']} minutes" in body
