"""The SAM template keeps the promises of the AWS issue: routes and API key,
usage plan, storage settings, functions, schedule, alarms, outputs, and no
hard-coded physical names. Checked on the SAM-expanded template, offline.

Run with:
    ~/.cache/tally-venv/bin/python -m pytest -q tests/infra
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from typing import Any

import pytest
from conftest import ROOT, resolve
from sam_transform import transform

# Route -> how API Gateway authorizes it: the usage plan's API key, IAM
# (SigV4), nothing (then API Gateway answers it itself: MOCK), "link": no
# key, but the function answers only a valid signed link (the report site),
# or "firehose": POST /firehose, keyless at API Gateway, throttled on its own,
# and checked by the function against Firehose's access key.
ROUTES = {
    ("/records", "post"): "api_key",
    ("/post", "post"): "api_key",
    ("/records", "get"): "api_key",
    ("/records/{id}", "get"): "api_key",
    ("/records/{id}", "delete"): "iam",
    ("/summaries", "get"): "api_key",
    ("/summaries/{week}", "get"): "api_key",
    ("/", "get"): "none",
    ("/health", "get"): "none",
    ("/openapi.json", "get"): "none",
    ("/reports", "get"): "link",
    ("/reports/{week}", "get"): "link",
    ("/firehose", "post"): "firehose",
}

# The only keyless routes that reach the function.
LINK_ROUTES = {route for route, auth in ROUTES.items() if auth == "link"}


@pytest.fixture(scope="module")
def resources(cfn_template: dict[str, Any]) -> dict[str, Any]:
    return resolve(cfn_template)["Resources"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {n: r for n, r in resources.items() if r["Type"] == kind}


def _auth(op: dict[str, Any]) -> str:
    security = op.get("security", [])
    if security == [{"api_key": []}]:
        return "api_key"
    if security == [{"AWS_IAM": []}]:
        return "iam"
    assert security in ([], [{"NONE": []}]), f"unexpected security {security}"
    return "none"


def test_every_route_exists_with_its_authorization(resources):
    body = resources["TallyApi"]["Properties"]["Body"]
    found = {}
    for path, methods in body["paths"].items():
        for method, op in methods.items():
            integration = op["x-amazon-apigateway-integration"]
            found[(path, method)] = _auth(op)
            if (path, method) in LINK_ROUTES and found[(path, method)] == "none":
                # Keyless, but the function checks the link before reading anything.
                assert integration["type"] == "aws_proxy", (path, method)
                found[(path, method)] = "link"
            elif (path, method) == ("/firehose", "post") and found[(path, method)] == "none":
                found[(path, method)] = "firehose"
                assert integration["type"] == "aws_proxy"
            elif found[(path, method)] == "none":
                # No keyless request may invoke (and bill) a Lambda.
                assert integration["type"] == "mock", (path, method)
                assert "uri" not in integration and "credentials" not in integration
            else:
                assert integration["type"] == "aws_proxy"
                assert "${ApiFunction.Arn}" in integration["uri"]["Fn::Sub"]
    assert found == ROUTES


def test_the_landing_page_is_html_for_browsers_and_json_for_api_clients_without_a_lambda(resources):
    """GET / as `tally serve` answers it (crates/tally-http/src/site.rs):
    HTML when Accept names text/html, else JSON. The mock's request template
    picks a status by Accept and the integration response is selected by
    that status: "If the back end is an AWS Lambda function, the AWS Lambda
    function error header is matched. For all other HTTP and AWS back ends,
    the HTTP status code is matched." (API Gateway API reference,
    IntegrationResponse, selectionPattern:
    https://docs.aws.amazon.com/apigateway/latest/api/API_IntegrationResponse.html)."""
    op = resources["TallyApi"]["Properties"]["Body"]["paths"]["/"]["get"]
    integration = op["x-amazon-apigateway-integration"]
    assert integration["type"] == "mock"
    request = integration["requestTemplates"]["application/json"]
    assert "header.get('Accept')" in request and "header.get('accept')" in request
    assert re.search(r"#if\(\$accept\.contains\('text/html'\)\)\s*\{\"statusCode\": 201\}\s*#else\s*\{\"statusCode\": 200\}\s*#end", request), request
    responses = integration["responses"]
    assert set(responses) == {"default", "201"}
    assert {r["statusCode"] for r in responses.values()} == {"200"}
    as_json = responses["default"]
    assert as_json["responseParameters"]["method.response.header.Content-Type"] == "'application/json'"
    landing = json.loads(as_json["responseTemplates"]["application/json"])
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert landing == {"service": "tally", "status": "ok", "version": version, "health": "health",
                       "openapi": "openapi.json", "reports": "reports/"}
    as_html = responses["201"]
    params = as_html["responseParameters"]
    assert params["method.response.header.Content-Type"] == "'text/html; charset=utf-8'"
    assert params["method.response.header.X-Content-Type-Options"] == "'nosniff'"
    assert params["method.response.header.Referrer-Policy"] == "'no-referrer'"
    pages = set()
    for key in ("text/html", "application/json"):
        match = re.fullmatch(r'\$util\.base64Decode\("([A-Za-z0-9+/=]+)"\)', as_html["responseTemplates"][key])
        assert match, f"the landing page's {key} template must be base64: run scripts/openapi"
        pages.add(base64.b64decode(match.group(1)).decode())
    (page,) = pages
    assert "<title>tally</title>" in page and version in page and 'href="openapi.json"' in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    headers = set(op["responses"]["200"]["headers"])
    assert {h.removeprefix("method.response.header.") for r in responses.values() for h in r["responseParameters"]} <= headers


def test_the_report_site_is_throttled_tightly_and_reaches_the_function_only_with_its_secret(sam_template, resources):
    """The report routes are keyless: a method throttle of their own (API
    Gateway answers 429 above it, without invoking the function). A method's
    ResourcePath has its slashes encoded as ~1 ("the path value
    /resource/subresource must be encoded as /~1resource~1subresource",
    AWS::ApiGateway::Stage MethodSetting, ResourcePath:
    https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-apigateway-stage-methodsetting.html)."""
    settings = resources["TallyApiProdStage"]["Properties"]["MethodSettings"]
    by_path = {(s["ResourcePath"], s["HttpMethod"]): s for s in settings}
    for path, _ in LINK_ROUTES:
        s = by_path[("/" + path.replace("/", "~1"), "GET")]
        assert s["ThrottlingRateLimit"] == {"Ref": "ReportThrottleRateLimit"}
        assert s["ThrottlingBurstLimit"] == {"Ref": "ReportThrottleBurstLimit"}
    params = sam_template["Parameters"]
    assert params["ReportThrottleRateLimit"]["Default"] < params["StageThrottleRateLimit"]["Default"]
    # The function checks links with the template's generated secret.
    secret = resources["ReportLinkSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and "SecretString" not in secret["Properties"]
    env = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TALLY_LINK_SECRET_ARN"] == {"Ref": "ReportLinkSecret"}
    weekly = resources["WeeklyFunction"]["Properties"]["Environment"]["Variables"]
    assert weekly["TALLY_LINK_SECRET_ARN"] == {"Ref": "ReportLinkSecret"}
    assert weekly["TALLY_REPORT_LINK_DAYS"] == {"Ref": "ReportLinkDays"}
    # The links start with the API's stage URL, the ApiUrl output.
    assert weekly["TALLY_PUBLIC_URL"] == {"Fn::Sub": "https://${TallyApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/Prod/"}
    assert weekly["TALLY_PUBLIC_URL"] == resolve(sam_template)["Outputs"]["ApiUrl"]["Value"]


def _mock_body(resources: dict[str, Any], path: str) -> str:
    op = resources["TallyApi"]["Properties"]["Body"]["paths"][path]["get"]
    response = op["x-amazon-apigateway-integration"]["responses"]["default"]
    assert response["statusCode"] == "200"
    assert response["responseParameters"]["method.response.header.Content-Type"] == "'application/json'"
    assert set(op["responses"]["200"]["headers"]) == {"Content-Type", "x-request-id"}
    return response["responseTemplates"]["application/json"]


def test_the_keyless_routes_answer_what_tally_serve_answers(resources):
    """API Gateway's own answers match the Rust router's: docs/openapi.json
    (what `GET /openapi.json` serves) and the health body with the crate's
    version. scripts/openapi rewrites both."""
    doc = (ROOT / "docs/openapi.json").read_bytes()
    template = _mock_body(resources, "/openapi.json")
    # A mapping template is Velocity: the document travels base64-encoded,
    # so its "$ref"s and "#"s are never evaluated.
    match = re.fullmatch(r'\$util\.base64Decode\("([A-Za-z0-9+/=]+)"\)', template)
    assert match, "the /openapi.json body must be $util.base64Decode(\"<base64>\"): run scripts/openapi"
    assert base64.b64decode(match.group(1)) == doc, "template.yaml's /openapi.json is stale: run scripts/openapi"
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert json.loads(doc)["info"]["version"] == version
    assert json.loads(_mock_body(resources, "/health")) == {"status": "ok", "version": version}
    assert not re.search(r"[$#]", _mock_body(resources, "/health"))


def test_erasure_is_signed_with_iam_and_every_other_record_route_still_needs_the_key(sam_template, resources):
    body = resources["TallyApi"]["Properties"]["Body"]
    delete = body["paths"]["/records/{id}"]["delete"]
    # API Gateway imports this as AuthorizationType AWS_IAM, ApiKeyRequired false.
    assert delete["security"] == [{"AWS_IAM": []}]
    schemes = body["components"]["securitySchemes"]
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert schemes["api_key"] == {"in": "header", "name": "x-api-key", "type": "apiKey"}
    # The function is invoked through its resource policy, not with the
    # caller's credentials (SAM's AWS_IAM default, arn:aws:iam::*:user/*).
    assert "credentials" not in delete["x-amazon-apigateway-integration"]
    for (path, method), auth in ROUTES.items():
        if (path, method) != ("/records/{id}", "delete") and path.startswith(("/records", "/post", "/summaries")):
            assert body["paths"][path][method]["security"] == [{"api_key": []}], (path, method)
    # The key stays the API's default: a new route needs it unless it says otherwise.
    assert sam_template["Resources"]["TallyApi"]["Properties"]["Auth"]["ApiKeyRequired"] is True


def test_the_api_has_one_stage_named_prod_with_access_logs_and_throttling(resources):
    stages = of_type(resources, "AWS::ApiGateway::Stage")
    assert list(stages) == ["TallyApiProdStage"], "SAM's stray 'Stage' stage must not exist"
    props = stages["TallyApiProdStage"]["Properties"]
    assert props["StageName"] == "Prod"
    assert props["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert '"requestId":"$context.requestId"' in props["AccessLogSetting"]["Format"]
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in props["MethodSettings"]}
    setting = settings[("/*", "*")]
    firehose = settings[("/~1firehose", "POST")]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    assert setting["ThrottlingRateLimit"] == {"Ref": "StageThrottleRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "StageThrottleBurstLimit"}
    assert (firehose["ResourcePath"], firehose["HttpMethod"]) == ("/~1firehose", "POST")


def test_the_firehose_route_is_keyless_at_api_gateway_throttled_and_keyed_in_the_function(sam_template, resources):
    """Firehose sends its key in X-Amz-Firehose-Access-Key, never x-api-key
    ("Understand HTTP endpoint delivery request and response specifications",
    Amazon Data Firehose developer guide), so API Gateway's key check cannot
    pass it. Like the report site's routes it reaches the function without the API key: it gets
    a method throttle of its own (no usage plan covers a keyless method), and
    the function gets only the SHA-256 of the access key to check."""
    op = resources["TallyApi"]["Properties"]["Body"]["paths"]["/firehose"]["post"]
    assert _auth(op) == "none"
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in stage["Properties"]["MethodSettings"]}
    throttle = settings[("/~1firehose", "POST")]
    assert throttle["ThrottlingRateLimit"] == {"Ref": "FirehoseThrottleRateLimit"}
    assert throttle["ThrottlingBurstLimit"] == {"Ref": "FirehoseThrottleBurstLimit"}
    params = sam_template["Parameters"]
    assert params["FirehoseThrottleRateLimit"]["Default"] < params["StageThrottleRateLimit"]["Default"]
    key = params["FirehoseAccessKeySha256"]
    assert key["Default"] == "" and key["NoEcho"] is True
    assert re.fullmatch(key["AllowedPattern"], "a" * 64) and re.fullmatch(key["AllowedPattern"], "")
    assert not re.fullmatch(key["AllowedPattern"], "my-plain-key")
    env = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TALLY_FIREHOSE_ACCESS_KEY_SHA256"] == {"Ref": "FirehoseAccessKeySha256"}


def test_the_usage_plan_binds_the_api_key_to_the_prod_stage_with_limits(cfn_template, sam_template):
    resources = resolve(cfn_template)["Resources"]
    plan = of_type(resources, "AWS::ApiGateway::UsagePlan")["TallyApiUsagePlan"]["Properties"]
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "TallyApi"}, "Stage": {"Ref": "TallyApiProdStage"}}]
    # SAM substitutes parameter values into the usage plan at transform time
    # (the CloudFormation transform does the same with the deployed values).
    params = sam_template["Parameters"]
    assert plan["Throttle"] == {
        "RateLimit": params["ThrottleRateLimit"]["Default"],
        "BurstLimit": params["ThrottleBurstLimit"]["Default"],
    }
    assert plan["Quota"] == {"Limit": params["QuotaLimit"]["Default"], "Period": params["QuotaPeriod"]["Default"]}
    key = resources["TallyApiUsagePlanKey"]["Properties"]
    assert key == {"KeyId": {"Ref": "TallyApiApiKey"}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": "TallyApiUsagePlan"}}
    sam_plan = sam_template["Resources"]["TallyApi"]["Properties"]["Auth"]["UsagePlan"]
    assert sam_plan["Throttle"] == {"RateLimit": {"Ref": "ThrottleRateLimit"}, "BurstLimit": {"Ref": "ThrottleBurstLimit"}}
    assert sam_plan["Quota"] == {"Limit": {"Ref": "QuotaLimit"}, "Period": {"Ref": "QuotaPeriod"}}


def _parameter_combinations(sam_template: dict[str, Any]):
    """Every value of every parameter with AllowedValues, one at a time,
    plus non-empty values for the optional ones."""
    params = sam_template["Parameters"]
    yield {}
    for name, p in params.items():
        for value in p.get("AllowedValues", []):
            yield {name: str(value)}
    for name in ("AlarmEmail", "ReportEmail"):
        yield {name: "ops@example.com"}
    yield {"RetentionWeeks": "52", "NotifyUrl": "https://example.com/hook", "SegmentBy": "kind"}


def test_the_table_logical_id_depends_on_no_parameter(sam_template, cfn_template):
    """Flipping RetainTable (or any parameter) must never swap, replace or
    delete the table: one resource, no Condition, the id 0.1 gave it."""
    assert sam_template["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    raw = sam_template["Resources"]
    assert [n for n, r in raw.items() if r["Type"] == "AWS::DynamoDB::Table"] == ["RecordsTable"]
    assert "Condition" not in raw["RecordsTable"]
    policy = {"Fn::If": ["RetainTableEnabled", "Retain", "Delete"]}
    assert raw["RecordsTable"]["DeletionPolicy"] == policy
    assert raw["RecordsTable"]["UpdateReplacePolicy"] == policy
    assert sam_template["Conditions"]["RetainTableEnabled"] == {"Fn::Equals": [{"Ref": "RetainTable"}, "true"]}
    for overrides in _parameter_combinations(sam_template):
        tables = of_type(resolve(cfn_template, overrides)["Resources"], "AWS::DynamoDB::Table")
        assert list(tables) == ["RecordsTable"], overrides


def test_the_expanded_template_for_linters_still_names_the_language_extensions(cfn_template):
    """scripts/check-infra lints and scans the expansion without parameter
    values: the policies stay Fn::If, so the output must keep saying which
    transform resolves them."""
    assert cfn_template["Transform"] == "AWS::LanguageExtensions"
    assert cfn_template["Resources"]["RecordsTable"]["DeletionPolicy"] == {"Fn::If": ["RetainTableEnabled", "Retain", "Delete"]}


@pytest.mark.parametrize("retain, policy", [("true", "Retain"), ("false", "Delete")])
def test_the_language_extensions_resolve_the_table_policies_before_sam(retain, policy):
    """What CloudFormation deploys: AWS::LanguageExtensions picks the policy
    from RetainTable, then SAM expands the rest (sam_transform.py plays the
    first part offline and must agree)."""
    deployed = transform(ROOT / "template.yaml", {"RetainTable": retain})
    assert "Transform" not in deployed
    table = deployed["Resources"]["RecordsTable"]
    assert table["DeletionPolicy"] == policy and table["UpdateReplacePolicy"] == policy
    # Nothing else is left to the language extensions.
    assert "Fn::If" not in json.dumps({k: v for k, v in table.items() if k != "Properties"})
    for name, res in deployed["Resources"].items():
        for key in ("DeletionPolicy", "UpdateReplacePolicy"):
            assert isinstance(res.get(key, ""), str), f"{name}.{key} still needs the language extensions"


@pytest.mark.parametrize("retain, policy", [("true", "Retain"), ("false", "Delete")])
def test_one_records_table_with_the_adapter_key_schema(cfn_template, retain, policy):
    resources = resolve(cfn_template, {"RetainTable": retain})["Resources"]
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert list(tables) == ["RecordsTable"]
    res = tables["RecordsTable"]
    assert res["DeletionPolicy"] == policy and res["UpdateReplacePolicy"] == policy
    props = res["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    for function in ("ApiFunction", "WeeklyFunction"):
        env = resources[function]["Properties"]["Environment"]["Variables"]
        assert env["TABLE_NAME"] == {"Ref": "RecordsTable"}


def test_the_summary_bucket_is_private_encrypted_versioned_tls_only_and_expires_old_versions(resources):
    props = resources["SummaryBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("NoncurrentVersionExpiration") == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}} for r in rules)
    assert any(r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1} for r in rules)
    assert all(r["Status"] == "Enabled" for r in rules)
    (statement,) = resources["SummaryBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["SummaryBucket", "Arn"]} in statement["Resource"]
    assert {"Fn::Sub": "${SummaryBucket.Arn}/*"} in statement["Resource"]


@pytest.mark.parametrize("function, binary", [("ApiFunction", "tally-api"), ("WeeklyFunction", "tally-weekly")])
def test_functions_are_rust_on_arm64_al2023_with_json_logs(sam_template, resources, function, binary):
    meta = sam_template["Resources"][function]["Metadata"]
    assert meta["BuildMethod"] == "rust-cargolambda"
    assert meta["BuildProperties"] == {"Binary": binary}
    assert sam_template["Resources"][function]["Properties"]["CodeUri"] == "crates/tally-lambda"
    props = resources[function]["Properties"]
    assert props["Runtime"] == "provided.al2023"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "bootstrap"
    assert props["LoggingConfig"] == {
        "LogFormat": "JSON",
        "LogGroup": {"Ref": f"{function}LogGroup"},
        "ApplicationLogLevel": {"Fn::FindInMap": ["LogLevels", {"Ref": "LogLevel"}, "Lambda"]},
        "SystemLogLevel": "WARN",
    }
    env = props["Environment"]["Variables"]
    assert env["BUCKET_NAME"] == {"Ref": "SummaryBucket"}
    assert env["RUST_LOG"] == {"Ref": "LogLevel"}
    assert ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH" in env) == (function == "ApiFunction")
    if function == "ApiFunction":
        assert env["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"] == "true"


def test_log_level_sets_lambdas_application_log_level_for_every_value(sam_template, cfn_template):
    """LogLevel really filters: each allowed value maps to the Lambda level
    of the same name (Lambda drops lower JSON lines and passes the level to
    the runtime as AWS_LAMBDA_LOG_LEVEL, which tracing's filter reads)."""
    allowed = sam_template["Parameters"]["LogLevel"]["AllowedValues"]
    assert sam_template["Parameters"]["LogLevel"]["Default"] == "info"
    mapping = cfn_template["Mappings"]["LogLevels"]
    assert {level: mapping[level]["Lambda"] for level in allowed} == {level: level.upper() for level in allowed}
    assert set(mapping) == set(allowed)


def test_the_weekly_schedule_starts_the_state_machine_in_utc_retries_and_dead_letters(sam_template, resources):
    assert sam_template["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 3 ? * MON *)"
    (schedule,) = of_type(resources, "AWS::Scheduler::Schedule").items()
    # 0.2's logical id (SAM's name for the function's ScheduleV2 event): the
    # upgrade retargets the schedule in place instead of creating a second
    # one with the same name, which CloudFormation would refuse.
    assert schedule[0] == "WeeklyFunctionWeekly"
    props = schedule[1]["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert props["ScheduleExpressionTimezone"] == "UTC"
    assert props["State"] == {"Ref": "ScheduleState"}
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = props["Target"]
    assert target["Arn"] == {"Ref": "WeeklyStateMachine"}
    assert target["Input"] == "{}"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["WeeklyDeadLetterQueue", "Arn"]}}
    # Nothing else starts the state machine on a timer, and the function has
    # no schedule of its own any more.
    assert not of_type(resources, "AWS::Events::Rule").keys() - {"WeeklyFunctionRefreshRequest"}
    assert "Weekly" not in sam_template["Resources"]["WeeklyFunction"]["Properties"]["Events"]
    # Function errors of the refresh path (after async retries) reach the same queue.
    weekly = resources["WeeklyFunction"]["Properties"]
    assert weekly["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["WeeklyDeadLetterQueue", "Arn"]}}
    assert resources["WeeklyDeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True


def test_the_schedule_name_fits_64_characters_for_the_longest_stack_name_deploy_accepts(resources):
    (schedule,) = of_type(resources, "AWS::Scheduler::Schedule").values()
    name = schedule["Properties"]["Name"]["Fn::Sub"]
    assert name.startswith("${AWS::StackName}") and "${" not in name.removeprefix("${AWS::StackName}")
    deploy = (ROOT / "deploy.sh").read_text()
    (longest,) = re.findall(r"readonly MAX_STACK_NAME=(\d+)", deploy)
    assert int(longest) + len(name.removeprefix("${AWS::StackName}")) == 64
    # tests/infra/test_scripts.py runs deploy.sh at and beyond that length.


def test_the_report_topic_is_encrypted_and_e_mail_is_optional(sam_template, cfn_template):
    for overrides, subscribed in (({}, False), ({"ReportEmail": "me@example.com"}, True)):
        resources = resolve(cfn_template, overrides)["Resources"]
        topic = resources["ReportTopic"]["Properties"]
        assert topic["KmsMasterKeyId"] == {
            "Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:alias/aws/sns"
        }
        subs = {n: r["Properties"] for n, r in of_type(resources, "AWS::SNS::Subscription").items()}
        reports = [s for s in subs.values() if s["TopicArn"] == {"Ref": "ReportTopic"}]
        assert reports == ([{"TopicArn": {"Ref": "ReportTopic"}, "Protocol": "email", "Endpoint": {"Ref": "ReportEmail"}}] if subscribed else [])
    params = sam_template["Parameters"]
    for name in ("ReportEmail", "NotifyUrl", "NotifySecret", "SegmentBy"):
        assert params[name]["Default"] == "", name
    assert params["NotifySecret"]["NoEcho"] is True
    env = resolve(cfn_template)["Resources"]["WeeklyFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TALLY_REPORT_TOPIC_ARN"] == {"Ref": "ReportTopic"}
    assert env["TALLY_NOTIFY_URL"] == {"Ref": "NotifyUrl"}
    assert env["TALLY_NOTIFY_SECRET"] == {"Ref": "NotifySecret"}
    assert env["TALLY_SEGMENT_BY"] == {"Ref": "SegmentBy"}
    api_env = resolve(cfn_template)["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert not any(k.startswith(("TALLY_NOTIFY", "TALLY_REPORT")) for k in api_env)


def test_outputs_describe_the_deployment(cfn_template):
    outputs = resolve(cfn_template)["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${TallyApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/Prod/"
    }
    assert outputs["ApiKeyId"]["Value"] == {"Ref": "TallyApiApiKey"}
    assert outputs["GetApiKeyCommand"]["Value"]["Fn::Sub"].startswith(
        "aws apigateway get-api-key --api-key ${TallyApiApiKey} --include-value --query value --output text"
    )
    for name in ("SummaryBucketName", "RecordsTableName", "ApiFunctionName", "WeeklyFunctionName", "DeadLetterQueueUrl",
                 "WeeklyScheduleName", "ReportTopicArn", "WeeklyStateMachineArn", "RerunWeekCommand"):
        assert outputs[name]["Description"], name
    assert outputs["RecordsTableName"]["Value"] == {"Ref": "RecordsTable"}
    # clean.sh disables the schedule by this output.
    assert outputs["WeeklyScheduleName"]["Value"] == {"Ref": "WeeklyFunctionWeekly"}
    assert outputs["WeeklyStateMachineArn"]["Value"] == {"Ref": "WeeklyStateMachine"}
    assert outputs["RerunWeekCommand"]["Value"] == {"Fn::Sub": (
        "aws stepfunctions start-execution --state-machine-arn ${WeeklyStateMachine} "
        "--input '{\"week\":\"2026-W47\"}' --region ${AWS::Region}")}


def test_outputs_give_deploy_sh_verification_the_schedule_role_queue_and_log_group(cfn_template):
    """deploy.sh's first-deploy verification builds a one-time schedule with
    the weekly schedule's role and dead-letter queue, and points at the log."""
    outputs = resolve(cfn_template)["Outputs"]
    assert outputs["WeeklyScheduleRoleArn"]["Value"] == {"Fn::GetAtt": ["WeeklyScheduleRole", "Arn"]}
    assert outputs["DeadLetterQueueArn"]["Value"] == {"Fn::GetAtt": ["WeeklyDeadLetterQueue", "Arn"]}
    assert outputs["WeeklyFunctionLogGroupName"]["Value"] == {"Ref": "WeeklyFunctionLogGroup"}
    # The schedule it creates uses this very role and target.
    schedule = resolve(cfn_template)["Resources"]["WeeklyFunctionWeekly"]["Properties"]["Target"]
    assert schedule["RoleArn"] == outputs["WeeklyScheduleRoleArn"]["Value"]
    assert schedule["DeadLetterConfig"]["Arn"] == outputs["DeadLetterQueueArn"]["Value"]


def test_weekly_parts_reach_the_weekly_function_only(sam_template, resources):
    param = sam_template["Parameters"]["WeeklyParts"]
    # tally-weekly accepts TALLY_WEEKLY_PARTS 1..=28 (default 7).
    assert (param["Type"], param["Default"], param["MinValue"], param["MaxValue"]) == ("Number", 7, 1, 28)
    assert resources["WeeklyFunction"]["Properties"]["Environment"]["Variables"]["TALLY_WEEKLY_PARTS"] == {
        "Ref": "WeeklyParts"}
    assert "TALLY_WEEKLY_PARTS" not in resources["ApiFunction"]["Properties"]["Environment"]["Variables"]


NAME_PROPERTIES = {
    "TableName", "BucketName", "QueueName", "FunctionName", "RoleName", "LogGroupName", "TopicName",
    "UsagePlanName", "AlarmName", "Name",
}


def test_no_physical_name_is_hard_coded(cfn_template):
    for name, res in cfn_template["Resources"].items():
        for prop, value in res.get("Properties", {}).items():
            if prop in NAME_PROPERTIES:
                assert not isinstance(value, str), f"{name}.{prop} is hard-coded as {value!r}"


def test_every_checkov_skip_is_justified_next_to_its_resource(sam_template):
    skips = []
    for name, res in sam_template["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert set(skip) == {"id", "comment"}, f"{name}: {skip}"
            assert skip["id"].startswith("CKV"), f"{name}: {skip}"
            assert len(skip["comment"].split()) >= 8, f"{name}: skip {skip['id']} needs a real reason"
            skips.append(skip["id"])
    assert skips, "expected the documented skips"


def test_retention_is_off_by_default_validated_and_reaches_only_the_weekly_function(sam_template, resources):
    param = sam_template["Parameters"]["RetentionWeeks"]
    assert param["Type"] == "String" and param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    # The values tally-weekly accepts (TALLY_RETENTION_WEEKS, as --retention-weeks: 0..=10000).
    for ok in ["", "0", "1", "52", "9999", "10000"]:
        assert pattern.search(ok), ok
    for bad in ["10001", "-1", "1.5", " 5", "05", "52w", "forever"]:
        assert not pattern.search(bad), bad
    weekly = resources["WeeklyFunction"]["Properties"]["Environment"]["Variables"]
    assert weekly["TALLY_RETENTION_WEEKS"] == {"Ref": "RetentionWeeks"}
    assert "TALLY_RETENTION_WEEKS" not in resources["ApiFunction"]["Properties"]["Environment"]["Variables"]


def _rust_str_consts(path: str) -> dict[str, str]:
    """`pub const NAME: &str = "value";` in a Rust source file."""
    text = (ROOT / path).read_text()
    return dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', text))


def _eventbridge_wildcard(pattern: str) -> re.Pattern[str]:
    """EventBridge's wildcard filter: `*` is any run of characters, `/` included."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _refresh_rule(resources: dict[str, Any]) -> dict[str, Any]:
    (rule,) = [
        r
        for r in of_type(resources, "AWS::Events::Rule").values()
        if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["WeeklyFunction", "Arn"]}
    ]
    return rule["Properties"]


def test_a_refresh_request_starts_the_weekly_function_and_nothing_it_writes_does(resources):
    props = _refresh_rule(resources)
    pattern = props["EventPattern"]
    # Only creations: the function's own deletes (the handled request, the
    # old manifest) are "Object Deleted" events.
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"] == {"name": [{"Ref": "SummaryBucket"}]}
    (key_filter,) = pattern["detail"]["object"]["key"]
    assert set(key_filter) == {"wildcard"}, "one filter: several in the list would be OR-ed"
    matches = _eventbridge_wildcard(key_filter["wildcard"]).fullmatch
    # The key S3WeekRefresh writes (tally-aws) starts it...
    request = _rust_str_consts("crates/tally-aws/src/s3.rs")["REFRESH_REQUEST"]
    assert matches(f"summaries/2026-W47/{request}")
    # ...and none of the objects summarize_week writes (tally-core) does.
    written = _rust_str_consts("crates/tally-core/src/summary/service.rs")
    names = {written[c] for c in ("SUMMARY_JSON", "SUMMARY_HTML", "RECORDS_NDJSON_GZ", "MANIFEST_JSON")}
    assert names == {"summary.json", "summary.html", "records.ndjson.gz", "manifest.json"}
    for name in names:
        assert not matches(f"summaries/2026-W47/{name}"), name
    for other in ["refresh.request", "other/2026-W47/refresh.request", "summaries/2026-W47/refresh.request.tmp"]:
        assert not matches(other), other
    # Undeliverable events are retried, then dead-lettered where the alarm watches.
    (target,) = props["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["WeeklyDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_the_bucket_notifies_eventbridge_only_and_the_queue_accepts_only_that_rule(resources):
    notification = resources["SummaryBucket"]["Properties"]["NotificationConfiguration"]
    # No direct Lambda/SQS/SNS notification: it would need the function (and
    # its permission) before the bucket, while the function needs the bucket.
    assert notification == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    rule_id = next(
        n
        for n, r in of_type(resources, "AWS::Events::Rule").items()
        if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["WeeklyFunction", "Arn"]}
    )
    (policy,) = of_type(resources, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": "WeeklyDeadLetterQueue"}]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}
    permission = next(
        r["Properties"]
        for r in of_type(resources, "AWS::Lambda::Permission").values()
        if r["Properties"]["Principal"] == "events.amazonaws.com"
    )
    assert permission["FunctionName"] == {"Ref": "WeeklyFunction"}
    assert permission["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
