"""docs/COST.md, README.md's cost sentence and docs/DEPLOY.md's costs say
what bench/cost.py computes for what template.yaml deploys: every alarm as
billed (a metric-math alarm per metric it reads), the weekly run's Step
Functions state transitions, its two reads of the week, the write cost of
an Idempotency-Key on single records - and "most of it X" holds for every
case the sentence names.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra/test_cost.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, resolve

COST = ROOT / "bench" / "cost.py"


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, str(COST), *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def cost_md() -> str:
    return (ROOT / "docs" / "COST.md").read_text()


@pytest.fixture(scope="module")
def sentence() -> str:
    return _run("--readme").strip()


def test_docs_cost_is_what_bench_cost_py_prints_for_this_template(cost_md):
    assert _run() == cost_md, "docs/COST.md is stale: run `python bench/cost.py > docs/COST.md`"


def test_every_alarm_is_priced_as_billed(cfn_template, cost_md):
    """Counted here from the expanded template, independently of cost.py:
    one alarm metric per metric an alarm reads."""
    resources = resolve(cfn_template, {"AlarmEmail": "ops@example.com"})["Resources"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert not [n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"]
    metrics = sum(len([m for m in a.get("Metrics", []) if "MetricStat" in m]) or 1 for a in alarms)
    assert f"{len(alarms)} alarms in template.yaml reading {metrics} metrics" in cost_md
    assert f"{metrics} × $0.1 = ${metrics * 0.1:.2f} a month" in cost_md
    deploy = _flat((ROOT / "docs" / "DEPLOY.md").read_text())
    assert f"{len(alarms)} alarms reading {metrics} metrics, ${metrics * 0.1:.2f} a month" in deploy


def test_the_weekly_runs_state_transitions_are_counted(sam_template, cost_md):
    """Plan, Weeks, Finish, More (the choice to continue a catch-up) and
    Done once per run; Parts, each Part, Merge per week (an Inline Map's
    iterations are not billed, the states in them are)."""
    parts = int(sam_template["Parameters"]["WeeklyParts"]["Default"])
    transitions = 5 + (1 + parts + 1)
    assert f"× {transitions} state transitions" in cost_md
    assert f"{transitions} with the default {parts} parts" in _flat((ROOT / "docs" / "DEPLOY.md").read_text())
    # The week is read twice (the parts, the merge's sweep), and it says so.
    assert "DynamoDB reads (weekly Query, twice)" in cost_md


def test_the_idempotency_keys_write_cost_is_stated(cost_md, sentence):
    assert "1 record/request with `Idempotency-Key`" in cost_md
    assert "**4 WRU and 1 RRU** per record instead of 1 WRU" in cost_md
    assert "`Idempotency-Key`" in sentence and "4 write units and 1 read unit" in sentence


def test_readme_and_deploy_say_the_generated_cost_sentence(sentence):
    assert f"In short, {sentence} — see [docs/COST.md](docs/COST.md)" in _flat((ROOT / "README.md").read_text())
    assert f"At ~250 bytes a record, {sentence}." in _flat((ROOT / "docs" / "DEPLOY.md").read_text())


# The sentence's short names of docs/COST.md's rows.
ROWS = {
    "API Gateway requests": "API Gateway REST",
    "the API's Lambda": "Lambda tally-api (compute + requests)",
    "DynamoDB writes": "DynamoDB writes (and the key look-up)",
    "DynamoDB storage": "DynamoDB storage (one month's records, kept)",
    "DynamoDB point-in-time recovery": "DynamoDB point-in-time recovery",
    "the weekly run's Lambda": "Lambda tally-weekly",
    "DynamoDB reads": "DynamoDB reads (weekly Query, twice)",
    "S3": "S3 (summaries + gzip export)",
    "Step Functions": "Step Functions",
    "CloudWatch Logs": "CloudWatch Logs",
    "metrics": "CloudWatch metrics (the weekly run's EMF line)",
    "the alarms": "CloudWatch alarms",
}
CASES = {"sent one per request": "1 record/request", "in batches of 100": "100 records/request",
         "in batches of 1,000": "1,000 records/request"}


def _table(cost_md: str) -> tuple[list[str], dict[str, list[float]]]:
    """The tally table of docs/COST.md: its column titles, and each row's dollars."""
    section = cost_md.split("## tally on AWS", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")][2:]
    values = {}
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        money = [float(c.strip("*$").replace(",", "")) for c in cells[2:]]
        values[cells[0].strip("*")] = money
    return header, values


def test_most_of_it_holds_for_every_case_the_sentence_names(cost_md, sentence):
    header, values = _table(cost_md)
    cases = re.findall(r"\$([\d,.]+) (sent one per request|in batches of 100|in batches of 1,000) "
                       r"\(most of it ([^)]+)\)", sentence)
    assert {case for _, case, _ in cases} == set(CASES), f"the sentence names these cases: {cases}"
    for total, case, most in cases:
        column = header.index(CASES[case])
        table_total = values["total per million records per month"][column]
        assert float(total.replace(",", "")) == table_total, case
        named = sum(values[ROWS[name]][column] for name in most.split(" and "))
        assert named > table_total / 2, f"{case}: {most} is ${named:.2f} of ${table_total:.2f}"
