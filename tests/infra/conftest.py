"""Shared fixtures: template.yaml expanded to CloudFormation, offline.

Run with (from the repository root):
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from sam_transform import load_template, transform  # noqa: E402


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    """template.yaml as written (SAM)."""
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="session")
def cfn_template() -> dict[str, Any]:
    """template.yaml as SAM expands it (conditions still unresolved)."""
    return transform(ROOT / "template.yaml")


NO_VALUE = {"Ref": "AWS::NoValue"}


def _eval_condition(expr: Any, params: dict[str, str], conditions: dict[str, Any]) -> bool:
    if isinstance(expr, dict) and len(expr) == 1:
        (fn, arg), = expr.items()
        if fn == "Fn::Equals":
            left, right = (_value(a, params) for a in arg)
            return left == right
        if fn == "Fn::Not":
            return not _eval_condition(arg[0], params, conditions)
        if fn == "Fn::And":
            return all(_eval_condition(a, params, conditions) for a in arg)
        if fn == "Fn::Or":
            return any(_eval_condition(a, params, conditions) for a in arg)
        if fn == "Condition":
            return _eval_condition(conditions[arg], params, conditions)
    raise AssertionError(f"unsupported condition expression: {expr!r}")


def _value(expr: Any, params: dict[str, str]) -> Any:
    if isinstance(expr, dict) and set(expr) == {"Ref"}:
        return params[expr["Ref"]]
    return expr


def _resolve_ifs(node: Any, truth: dict[str, bool]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, when_true, when_false = node["Fn::If"]
            return _resolve_ifs(when_true if truth[name] else when_false, truth)
        resolved = {k: _resolve_ifs(v, truth) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v != NO_VALUE}
    if isinstance(node, list):
        return [v for v in (_resolve_ifs(v, truth) for v in node) if v != NO_VALUE]
    return node


def resolve(template: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources CloudFormation would create for these parameter values:
    conditions evaluated, Fn::If picked, conditional resources dropped."""
    params = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    params.update(overrides or {})
    conditions = template.get("Conditions", {})
    truth = {name: _eval_condition(expr, params, conditions) for name, expr in conditions.items()}
    out = copy.deepcopy(template)
    out["Resources"] = {
        name: _resolve_ifs(res, truth)
        for name, res in template["Resources"].items()
        if "Condition" not in res or truth[res["Condition"]]
    }
    out["Outputs"] = {
        name: _resolve_ifs(o, truth)
        for name, o in template.get("Outputs", {}).items()
        if "Condition" not in o or truth[o["Condition"]]
    }
    return out
