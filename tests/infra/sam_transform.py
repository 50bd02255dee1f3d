#!/usr/bin/env python3
"""Expand template.yaml (SAM) to plain CloudFormation, offline.

checkov and cfn-lint look at SAM resources only partly (for instance the
roles, usage plan and stage SAM generates are invisible to them), so
scripts/check-infra also scans the expanded template. No AWS call is made:
the template uses no SAM managed-policy names, so the managed policy loader
is a stub.

Run with:
    python tests/infra/sam_transform.py template.yaml -o /tmp/tally-cfn.json
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


def transform(path: Path) -> dict[str, Any]:
    """The CloudFormation template SAM would deploy (conditions kept)."""
    # samtranslator wants a region for its pseudo parameters; no call is made.
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    template = load_template(path)
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        # Local code paths become S3 URIs at package time; any URI will do here.
        if resource.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "")).startswith("s3://"):
            props["CodeUri"] = "s3://placeholder-bucket/placeholder-key.zip"
    return sam_transform(template, {}, _NoManagedPolicies(), passthrough_metadata=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args()
    out = json.dumps(transform(args.template), indent=2, sort_keys=True)
    if args.output:
        args.output.write_text(out + "\n", encoding="utf-8")
    else:
        sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
