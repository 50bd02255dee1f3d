#!/usr/bin/env python3
"""Expand template.yaml (SAM) to plain CloudFormation, offline.

checkov and cfn-lint look at SAM resources only partly (for instance the
roles, usage plan and stage SAM generates are invisible to them), so
scripts/check-infra also scans the expanded template. No AWS call is made:
the template uses no SAM managed-policy names, so the managed policy loader
is a stub.

template.yaml declares `Transform: [AWS::LanguageExtensions,
AWS::Serverless-2016-10-31]`: CloudFormation runs the language extensions
first, with the stack's parameter values, then SAM. samtranslator does not
know the language extensions, so this script plays their part for the one
feature the template uses - `Fn::If` in DeletionPolicy / UpdateReplacePolicy
(RetainTable) - and refuses any other (Fn::ForEach, Fn::Length,
Fn::ToJsonString, FindInMap defaults), so the emulation can never silently
diverge. With parameter values (`-p RetainTable=false`) the policies are
resolved as CloudFormation would; without, they stay `Fn::If` and the output
keeps `Transform: AWS::LanguageExtensions` (cfn-lint and checkov read that).

Run with:
    python tests/infra/sam_transform.py template.yaml -o /tmp/tally-cfn.json
    python tests/infra/sam_transform.py template.yaml -p RetainTable=false
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform as sam_transform

REGION = "us-east-1"

# samtranslator logs feature-toggle noise at WARNING.
logging.getLogger("samtranslator").setLevel(logging.ERROR)


class _NoManagedPolicies:
    """The template names no AWS managed policy by short name."""

    def load(self) -> dict[str, str]:
        return {}


def load_template(path: Path) -> dict[str, Any]:
    return yaml_parse(path.read_text(encoding="utf-8"))


LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"
SERVERLESS = "AWS::Serverless-2016-10-31"
POLICIES = ("DeletionPolicy", "UpdateReplacePolicy")
UNSUPPORTED = ("Fn::ForEach", "Fn::Length", "Fn::ToJsonString")


def _walk(node: Any):
    yield node
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _condition(expr: Any, params: dict[str, str], conditions: dict[str, Any]) -> bool:
    (fn, arg), = expr.items()
    if fn == "Fn::Equals":
        left, right = (params[a["Ref"]] if isinstance(a, dict) else str(a) for a in arg)
        return left == right
    if fn == "Fn::Not":
        return not _condition(arg[0], params, conditions)
    if fn == "Fn::And":
        return all(_condition(a, params, conditions) for a in arg)
    if fn == "Fn::Or":
        return any(_condition(a, params, conditions) for a in arg)
    if fn == "Condition":
        return _condition(conditions[arg], params, conditions)
    raise ValueError(f"unsupported condition {expr!r}")


def language_extensions(template: dict[str, Any], parameters: dict[str, str] | None) -> dict[str, Any]:
    """What AWS::LanguageExtensions does to this template before SAM runs."""
    transforms = template.get("Transform")
    transforms = transforms if isinstance(transforms, list) else [transforms]
    if LANGUAGE_EXTENSIONS not in transforms:
        return template
    if transforms != [LANGUAGE_EXTENSIONS, SERVERLESS]:
        raise ValueError(f"Transform must be [{LANGUAGE_EXTENSIONS}, {SERVERLESS}] in that order, not {transforms}")
    for node in _walk(template):
        if node in UNSUPPORTED or (isinstance(node, dict) and "Fn::FindInMap" in node and len(node["Fn::FindInMap"]) > 3):
            raise ValueError(f"sam_transform.py only emulates Fn::If in {POLICIES}; teach it {node!r} first")
    template["Transform"] = SERVERLESS
    if parameters is None:
        return template
    params = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    unknown = set(parameters) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(parameters)
    conditions = template.get("Conditions", {})
    for resource in template.get("Resources", {}).values():
        for policy in POLICIES:
            value = resource.get(policy)
            if isinstance(value, dict):
                (fn, (name, when_true, when_false)), = value.items()
                if fn != "Fn::If":
                    raise ValueError(f"{policy}: only Fn::If is emulated, not {fn}")
                resource[policy] = when_true if _condition(conditions[name], params, conditions) else when_false
    return template


def transform(path: Path, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The CloudFormation template SAM would deploy (conditions kept). With
    parameter values, the language extensions' Fn::If are resolved for them;
    without, they are kept and the output names AWS::LanguageExtensions."""
    # samtranslator wants a region for its pseudo parameters; no call is made.
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    template = load_template(path)
    uses_extensions = LANGUAGE_EXTENSIONS in str(template.get("Transform"))
    template = language_extensions(template, parameters)
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        # Local code paths become S3 URIs at package time; any URI will do here.
        if resource.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "")).startswith("s3://"):
            props["CodeUri"] = "s3://placeholder-bucket/placeholder-key.zip"
        # So do local state machine definitions (statemachine/*.asl.json);
        # tests/infra/test_statemachine.py checks the file itself.
        if resource.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str) \
                and not props["DefinitionUri"].startswith("s3://"):
            props["DefinitionUri"] = "s3://placeholder-bucket/placeholder-definition.asl.json"
    out = sam_transform(template, {}, _NoManagedPolicies(), passthrough_metadata=True)
    if uses_extensions and parameters is None:
        out["Transform"] = LANGUAGE_EXTENSIONS
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument("-p", "--parameter", action="append", default=None, metavar="NAME=VALUE",
                        help="resolve the language extensions for this parameter value (repeatable)")
    args = parser.parse_args()
    params = None if args.parameter is None else dict(p.split("=", 1) for p in args.parameter)
    out = json.dumps(transform(args.template, params), indent=2, sort_keys=True)
    if args.output:
        args.output.write_text(out + "\n", encoding="utf-8")
    else:
        sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
