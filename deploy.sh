#!/usr/bin/env bash
# Deploy tally to AWS with SAM: build both Rust Lambdas, deploy the stack,
# then print the endpoint, how to read the API key and a ready curl command.
#
#   ./deploy.sh                         # asks for stack name, artifact bucket, region
#   ./deploy.sh --stack-name tally --region eu-west-1 --yes
#   ./deploy.sh --dry-run               # validate + build only, no AWS account needed
#   ./deploy.sh --config-env prod       # samconfig.toml's [prod] stack and parameters
#   ./deploy.sh --no-verify             # skip the weekly run that proves the deploy
#
# After deploying it runs the weekly job once through the schedule's own role
# (a one-time EventBridge Scheduler schedule) and waits for it: success prints
# the report's URL, a failure the failing step, its error and what to do.
# It never executes a change set that replaces or deletes the records table
# or the summary bucket unless --allow-replacement is given: it lists them
# and stops, with or without a terminal and with --yes.
#
# Run ./deploy.sh --help for every option. Guide: docs/DEPLOY.md
set -euo pipefail

SCRIPT="deploy.sh"
ERROR_HINT="fix that, then re-run ./deploy.sh (docs/DEPLOY.md#troubleshooting)."
# shellcheck source=scripts/lib/cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/cli.sh"

readonly DEFAULT_STACK="tally"
# The weekly schedule is named <stack>-weekly and schedule names have at most
# 64 characters (tests/infra pins the sum).
readonly MAX_STACK_NAME=57
# Resource types whose replacement or removal loses data.
readonly PROTECTED_TYPES="AWS::DynamoDB::Table AWS::S3::Bucket"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly ROOT

stack_name=""
region=""
artifact_bucket=""
alarm_email=""
extra_overrides=""
configure_apigw=""
assume_yes=false
guided=false
dry_run=false
allow_replacement=false
config_env=""
verify=true

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [options]

Builds the tally Lambdas (sam build --beta-features, cargo-lambda, arm64) and
deploys template.yaml with sam deploy. Values not given as options are asked
for when run in a terminal; with --yes (or no terminal) defaults are used.
Then it runs the weekly job once through the schedule's own role and waits
for it (at most 10 minutes), and warns when no alarm has a recipient.
Exit status: 0 deployed (and verified), 1 not deployed, 3 deployed but the
verification run failed or did not start.

Options:
  --stack-name NAME        CloudFormation stack name (default: tally)
  --region REGION          AWS region (default: AWS_REGION, AWS_DEFAULT_REGION
                           or `aws configure get region`)
  --s3-bucket BUCKET       existing or new bucket for deployment artifacts
                           (default: the SAM-managed bucket, created on demand)
  --alarm-email ADDRESS    e-mail alarm notifications to ADDRESS (confirm the
                           subscription e-mail AWS sends)
  --parameter-overrides S  extra template parameters, e.g. 'QuotaLimit="5000"'
  --config-env NAME        use samconfig.toml's [NAME.*] sections (dev, prod):
                           their stack_name and parameter_overrides
  --allow-replacement      execute a change set even if it replaces or deletes
                           the records table or the summary bucket (their data
                           is lost unless retained; export it first)
  --configure-apigw-account
                           let the stack set the region's API Gateway
                           CloudWatch role (detected automatically)
  --yes, -y                no questions; apply the change set without asking
                           (still never one that replaces the table or bucket)
  --guided                 run `sam deploy --guided` (asks for every parameter
                           and can save the answers to samconfig.toml)
  --no-verify              do not run the weekly job once after deploying
                           (by default a one-time schedule starts it with the
                           schedule's role and deploy.sh waits for the result)
  --dry-run                validate the template and build the Lambdas only;
                           needs no AWS account or credentials
  -h, --help               show this help
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stack-name) need_value "$@"; stack_name="$2"; shift 2 ;;
    --stack-name=*) stack_name="${1#*=}"; shift ;;
    --region) need_value "$@"; region="$2"; shift 2 ;;
    --region=*) region="${1#*=}"; shift ;;
    --s3-bucket) need_value "$@"; artifact_bucket="$2"; shift 2 ;;
    --s3-bucket=*) artifact_bucket="${1#*=}"; shift ;;
    --alarm-email) need_value "$@"; alarm_email="$2"; shift 2 ;;
    --alarm-email=*) alarm_email="${1#*=}"; shift ;;
    --parameter-overrides) need_value "$@"; extra_overrides="$2"; shift 2 ;;
    --parameter-overrides=*) extra_overrides="${1#*=}"; shift ;;
    --configure-apigw-account) configure_apigw=true; shift ;;
    --config-env) need_value "$@"; config_env="$2"; shift 2 ;;
    --config-env=*) config_env="${1#*=}"; shift ;;
    --allow-replacement) allow_replacement=true; shift ;;
    -y | --yes) assume_yes=true; shift ;;
    --guided) guided=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    --no-verify) verify=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1" "run ./deploy.sh --help for the list of options" ;;
  esac
done

interactive=false
if [[ -t 0 && "$assume_yes" == false ]]; then interactive=true; fi

require() {
  # require COMMAND "install hint"
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH" "$2"
}

check_build_tools() {
  require sam "install the AWS SAM CLI: https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html (or: pip install aws-sam-cli)"
  require cargo "install Rust with rustup: https://rustup.rs"
  require cargo-lambda "install cargo-lambda: pip install cargo-lambda (ships zig), or see https://www.cargo-lambda.info/guide/installation.html"
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    die "the Rust target aarch64-unknown-linux-gnu is missing (the Lambdas run on arm64)" \
      "run: rustup target add aarch64-unknown-linux-gnu"
  fi
}

default_region() {
  local r="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  if [[ -z "$r" ]] && command -v aws >/dev/null 2>&1; then
    r="$(aws configure get region 2>/dev/null || true)"
  fi
  printf '%s' "$r"
}

validate_names() {
  [[ "$stack_name" =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] ||
    die "invalid stack name '$stack_name'" "use letters, digits and hyphens, starting with a letter (e.g. tally)"
  ((${#stack_name} <= MAX_STACK_NAME)) ||
    die "stack name '$stack_name' is ${#stack_name} characters long; at most $MAX_STACK_NAME fit" \
      "pick a shorter --stack-name (the weekly schedule is named <stack>-weekly, and schedule names have at most 64 characters)"
  [[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] ||
    die "invalid region '$region'" "pass a region code such as us-east-1 or eu-west-1 with --region"
  if [[ -n "$artifact_bucket" && ! "$artifact_bucket" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
    die "invalid bucket name '$artifact_bucket'" "use 3-63 lower-case letters, digits, dots and hyphens, or leave it empty to let SAM manage one"
  fi
  if [[ -n "$alarm_email" && ! "$alarm_email" =~ $EMAIL_PATTERN ]]; then
    die "invalid --alarm-email '$alarm_email'" "give one e-mail address, e.g. --alarm-email ops@example.com"
  fi
}

# A value of samconfig.toml: samconfig_value SECTION KEY, e.g.
# samconfig_value "[default.deploy.parameters]" parameter_overrides. sam
# ignores the file's parameter_overrides when --parameter-overrides is
# given, so deploy.sh merges them itself.
samconfig_value() {
  local line
  line="$(awk -v want="$1" -v key="$2" '
    /^\[/ { section = $0; next }
    section == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { print; exit }
  ' "$ROOT/samconfig.toml" 2>/dev/null || true)"
  [[ -z "$line" ]] && return 0
  line="${line#*=}"
  line="${line#"${line%%[![:space:]]*}"}"
  line="${line#\"}"
  line="${line%\"}"
  printf '%s' "${line//\\\"/\"}"
}
samconfig_overrides() { samconfig_value "[${config_env:-default}.deploy.parameters]" parameter_overrides; }

stack_output() {
  aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text 2>/dev/null || true
}

# A parameter of the deployed stack ("" when there is no stack or no such
# parameter). sam deploy keeps the previous value of every parameter it is
# not given (UsePreviousValue), so this is what an update keeps.
stack_param() {
  local value
  value="$(aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
    --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue | [0]" --output text 2>/dev/null || true)"
  [[ "$value" != "None" ]] || value=""
  printf '%s' "$value"
}

# override_value NAME "K=\"v\" NAME=\"w\"": prints NAME's value in a
# parameter_overrides string (the last one given wins, as with sam) and
# succeeds, or fails when NAME is not there. NAME="" is there, and empty.
override_value() {
  local rest="$2" value="" found=false
  local re="(^|[[:space:]])$1=(\"([^\"]*)\"|([^[:space:]\"]*))"
  while [[ "$rest" =~ $re ]]; do
    value="${BASH_REMATCH[3]}${BASH_REMATCH[4]}"
    found=true
    rest="${rest#*"${BASH_REMATCH[0]}"}"
  done
  [[ "$found" == true ]] && printf '%s' "$value"
}

# The template's Default of parameter $1 (template.yaml is flat YAML here).
template_default() {
  awk -v want="  $1:" '
    /^Parameters:/ { in_params = 1; next }
    /^[^[:space:]#]/ { in_params = 0 }
    in_params && $0 == want { found = 1; next }
    in_params && found && /^  [^[:space:]]/ { exit }
    in_params && found && /^    Default:/ { sub(/^    Default:[[:space:]]*/, ""); gsub(/"/, ""); print; exit }
  ' "$ROOT/template.yaml"
}

# Logical ids of the template's CloudWatch alarms, one per line.
template_alarms() {
  awk '
    /^Resources:/ { in_res = 1; next }
    /^[^[:space:]#]/ { in_res = 0 }
    in_res && /^  [A-Za-z0-9]+:[[:space:]]*$/ { name = $1; sub(/:$/, "", name) }
    in_res && /^    Type:[[:space:]]*"?AWS::CloudWatch::Alarm"?[[:space:]]*$/ { print name }
  ' "$ROOT/template.yaml"
}

readonly EMAIL_PATTERN='^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'

cd "$ROOT"

# ------------------------------------------------------------------ dry run
if [[ "$dry_run" == true ]]; then
  banner "Dry run: validate and build only (no AWS account needed)"
  check_build_tools
  # sam/cfn-lint need a region name for their checks; nothing is called.
  export AWS_DEFAULT_REGION="${region:-$(default_region)}"
  AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
  say "Validating template.yaml (sam validate --lint)..."
  sam validate --lint --template-file template.yaml ||
    die "template.yaml is not valid" "fix the errors listed above, then re-run ./deploy.sh --dry-run"
  if command -v cfn-lint >/dev/null 2>&1; then
    say "Linting template.yaml (cfn-lint)..."
    cfn-lint template.yaml || die "cfn-lint found problems in template.yaml" "fix the findings listed above, then re-run ./deploy.sh --dry-run"
  else
    say "cfn-lint not installed: skipped (pip install cfn-lint to enable it)."
  fi
  say "Building (sam build --beta-features)..."
  sam build --beta-features --template-file template.yaml ||
    die "sam build failed" "read the cargo errors above; 'cargo lambda build --release --arm64' in crates/tally-lambda reproduces them"
  for fn in ApiFunction WeeklyFunction; do
    bootstrap=".aws-sam/build/$fn/bootstrap"
    [[ -f "$bootstrap" ]] || die "$bootstrap was not produced" "check the sam build output above"
    say "  $fn: $bootstrap ($(wc -c <"$bootstrap") bytes)"
  done
  banner "Dry run OK: template valid, both Lambdas built. Nothing was deployed."
  exit 0
fi

# ------------------------------------------------------------------- deploy
banner "tally: deploy to AWS with SAM"

if [[ -n "$config_env" ]]; then
  if ! [[ "$config_env" =~ ^[A-Za-z0-9_-]+$ ]] || ! grep -q "^\[$config_env\.deploy\.parameters\]" "$ROOT/samconfig.toml"; then
    die "samconfig.toml has no [$config_env.deploy.parameters] section" "use --config-env dev or --config-env prod, or add the section (docs/DEPLOY.md#environments)"
  fi
  if [[ -z "$stack_name" ]]; then
    stack_name="$(samconfig_value "[$config_env.deploy.parameters]" stack_name)"
    [[ -n "$stack_name" ]] || stack_name="$(samconfig_value "[$config_env.global.parameters]" stack_name)"
  fi
fi

[[ -n "$region" ]] || region_default="$(default_region)"
if [[ "$interactive" == true ]]; then
  [[ -n "$stack_name" ]] || ask stack_name "How do you want to name your AWS SAM stack?" "$DEFAULT_STACK" "$DEFAULT_STACK"
  if [[ -z "$artifact_bucket" && "$guided" == false ]]; then
    ask artifact_bucket "Which S3 bucket should hold the deployment artifacts? Leave empty to let SAM manage one." "tally-artifacts-123456789012" ""
  fi
  [[ -n "$region" ]] || ask region "Which region do you want to deploy the stack to?" "us-east-1" "${region_default:-}"
fi
stack_name="${stack_name:-$DEFAULT_STACK}"
region="${region:-${region_default:-}}"
[[ -n "$region" ]] || die "no AWS region given or configured" "pass --region (e.g. --region us-east-1) or run 'aws configure set region us-east-1'"
validate_names

require aws "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html (or: pip install awscli)"
check_build_tools

say "Checking AWS credentials..."
account="$(aws sts get-caller-identity --query Account --output text 2>/dev/null)" ||
  die "no valid AWS credentials" "run 'aws configure' (access keys) or 'aws sso login' (and export AWS_PROFILE), check with 'aws sts get-caller-identity', then re-run. To only build and validate: ./deploy.sh --dry-run"
say "Account $account, region $region, stack $stack_name"

# API Gateway access logging needs the region-wide CloudWatch role. Let the
# stack set it when the account has none, or when this stack already owns it.
if [[ -z "$configure_apigw" ]]; then
  configure_apigw=false
  if aws cloudformation describe-stack-resource --stack-name "$stack_name" --region "$region" \
    --logical-resource-id ApiGatewayAccount >/dev/null 2>&1; then
    configure_apigw=true
  elif apigw_role="$(aws apigateway get-account --region "$region" --query cloudwatchRoleArn --output text 2>/dev/null)"; then
    if [[ -z "$apigw_role" || "$apigw_role" == "None" ]]; then
      say "API Gateway has no CloudWatch role in $region yet: the stack will set one (kept on delete)."
      configure_apigw=true
    fi
  else
    say "warning: could not read API Gateway account settings; assuming a CloudWatch role is set."
    say "         If the deploy fails with 'CloudWatch Logs role ARN must be set', re-run with --configure-apigw-account."
  fi
fi

if [[ -n "$artifact_bucket" ]]; then
  # Like the 2021 script: create the artifact bucket when it does not exist.
  if aws s3api head-bucket --bucket "$artifact_bucket" --region "$region" >/dev/null 2>&1; then
    say "Artifact bucket $artifact_bucket exists."
  else
    say "Bucket doesn't exist, creating bucket $artifact_bucket..."
    aws s3 mb "s3://$artifact_bucket" --region "$region" ||
      die "could not create bucket $artifact_bucket" "bucket names are global: pick another name with --s3-bucket, or leave it empty to let SAM manage one"
    aws s3api put-public-access-block --bucket "$artifact_bucket" --region "$region" \
      --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
  fi
fi

# ------------------------------------------------------ alarm recipient
# Every alarm e-mails AlarmEmail (the AlarmTopic exists only with one). The
# recipient comes from --alarm-email, then --parameter-overrides, then
# samconfig.toml's section (--config-env prod: [prod.deploy.parameters]),
# then the stack's current value (an update keeps it); in a terminal,
# deploy.sh asks when none of them has one. The end of the deploy warns,
# naming the alarms, when the stack has no recipient.
alarm_source=""
if [[ -n "$alarm_email" ]]; then
  alarm_source="--alarm-email"
elif value="$(override_value AlarmEmail "$extra_overrides")"; then
  alarm_email="$value" alarm_source="--parameter-overrides"
elif value="$(override_value AlarmEmail "$(samconfig_overrides)")"; then
  alarm_email="$value" alarm_source="samconfig.toml [${config_env:-default}.deploy.parameters]"
else
  alarm_email="$(stack_param AlarmEmail)"
  [[ -z "$alarm_email" ]] || alarm_source="the stack's current AlarmEmail"
fi
# --guided: sam deploy --guided asks for AlarmEmail with the other parameters.
if [[ -z "$alarm_email" && -z "$alarm_source" && "$interactive" == true && "$guided" == false ]]; then
  while :; do
    ask alarm_email "Which e-mail address should receive the alarms? Leave empty for none (nobody is told when the weekly run fails)." "ops@example.com" ""
    [[ -z "$alarm_email" || "$alarm_email" =~ $EMAIL_PATTERN ]] && break
    say "'$alarm_email' is not an e-mail address."
  done
  [[ -z "$alarm_email" ]] || alarm_source="your answer"
fi
if [[ -n "$alarm_email" ]]; then
  say "Alarms notify $alarm_email (from $alarm_source)."
fi

overrides="$(samconfig_overrides)"
overrides="${overrides:+$overrides }ConfigureApiGatewayAccount=\"$configure_apigw\""
[[ -z "$alarm_email" ]] || overrides+=" AlarmEmail=\"$alarm_email\""
[[ -z "$extra_overrides" ]] || overrides+=" $extra_overrides"

# ---------------------------------------------------- Lambda concurrency
# The weekly run invokes WeeklyPartsConcurrency parts of a week at once, from
# the account's unreserved Lambda concurrency, which the API function shares
# (new accounts have 10). When the parts would take more than half of it,
# deploy.sh lowers WeeklyPartsConcurrency to half (at least 1), so the API
# keeps the other half; a value given with --parameter-overrides is kept,
# with a warning. Throttled parts are retried by the state machine.
check_concurrency() {
  local limits total unreserved parts parts_from cap
  if ! limits="$(aws lambda get-account-settings --region "$region" \
    --query 'AccountLimit.[ConcurrentExecutions, UnreservedConcurrentExecutions]' --output text 2>/dev/null)"; then
    say "note: could not read the account's Lambda concurrency (lambda:GetAccountSettings); WeeklyPartsConcurrency left as configured."
    return 0
  fi
  read -r total unreserved <<<"$limits"
  if ! [[ "$total" =~ ^[0-9]+$ && "$unreserved" =~ ^[0-9]+$ ]]; then
    say "note: unexpected Lambda account settings '$limits'; WeeklyPartsConcurrency left as configured."
    return 0
  fi
  if parts="$(override_value WeeklyPartsConcurrency "$extra_overrides")"; then
    parts_from="--parameter-overrides"
  elif parts="$(override_value WeeklyPartsConcurrency "$(samconfig_overrides)")"; then
    parts_from="samconfig.toml"
  else
    parts="$(stack_param WeeklyPartsConcurrency)"
    parts_from="the stack's current value"
    if [[ -z "$parts" ]]; then
      parts="$(template_default WeeklyPartsConcurrency)"
      parts_from="the template default"
    fi
  fi
  [[ "$parts" =~ ^[0-9]+$ ]] || return 0
  cap=$((unreserved / 2))
  ((cap >= 1)) || cap=1
  say "Lambda concurrency in $region: account limit $total, unreserved $unreserved; the weekly run invokes up to $parts parts at once (WeeklyPartsConcurrency, $parts_from)."
  ((parts > cap)) || return 0
  if [[ "$parts_from" == "--parameter-overrides" ]]; then
    say "warning: WeeklyPartsConcurrency=$parts leaves $((unreserved > parts ? unreserved - parts : 0)) of $unreserved concurrent executions to the API function while the weekly run's parts run:"
    say "         API requests may be throttled (429/5xx) during the weekly run. Kept as given; $cap would leave half to the API."
  else
    overrides+=" WeeklyPartsConcurrency=\"$cap\""
    say "Lowered WeeklyPartsConcurrency from $parts to $cap: half of the $unreserved unreserved concurrent executions stays free for the API function."
    say "  (The stack keeps $cap on later deploys; give --parameter-overrides 'WeeklyPartsConcurrency=\"N\"' to choose yourself.)"
  fi
  if ((total < 100)); then
    say "  This account's Lambda limit is $total (new accounts start at 10): ask for more in the Service Quotas console (AWS Lambda, Concurrent executions)."
  fi
}
check_concurrency

banner "Building (sam build --beta-features)"
sam build --beta-features --template-file template.yaml ||
  die "sam build failed" "read the cargo errors above; ./deploy.sh --dry-run reproduces the build without AWS"

banner "Creating the change set for stack $stack_name in $region"
# sam only creates the change set; deploy.sh looks at it before anything runs.
deploy_args=(--stack-name "$stack_name" --region "$region" --capabilities CAPABILITY_IAM
  --parameter-overrides "$overrides" --no-fail-on-empty-changeset
  --no-execute-changeset --no-confirm-changeset)
[[ -z "$config_env" ]] || deploy_args+=(--config-env "$config_env")
if [[ -n "$artifact_bucket" ]]; then
  deploy_args+=(--s3-bucket "$artifact_bucket" --s3-prefix "$stack_name" --no-resolve-s3)
  # clean.sh names this bucket (it did not create it and leaves it alone).
  deploy_args+=(--tags "tally:artifact-bucket=$artifact_bucket")
else
  deploy_args+=(--resolve-s3)
fi
[[ "$guided" == false ]] || deploy_args+=(--guided)
sam_log="$(mktemp)"
verify_schedule=""   # the verification schedule's name while it may exist
cleanup() {
  rm -f "$sam_log"
  if [[ -n "$verify_schedule" ]]; then
    aws scheduler delete-schedule --name "$verify_schedule" --group-name default --region "$region" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
# Ctrl-C or a kill still runs cleanup (the EXIT trap).
trap 'exit 130' INT
trap 'exit 143' TERM
sam deploy "${deploy_args[@]}" 2>&1 | tee "$sam_log" ||
  die "sam deploy could not create the change set" "the messages above say why; see docs/DEPLOY.md#troubleshooting. A stack left in ROLLBACK_COMPLETE must be removed with ./clean.sh --stack-name $stack_name --region $region before re-deploying"

changeset="$(grep -Eo 'arn:aws[a-z-]*:cloudformation:[^[:space:]]+:changeSet/[^[:space:]]+' "$sam_log" | tail -n1 || true)"
if [[ -z "$changeset" ]] && ! grep -q "No changes to deploy" "$sam_log"; then
  # shellcheck disable=SC2016 # backticks are JMESPath literals
  changeset="$(aws cloudformation list-change-sets --stack-name "$stack_name" --region "$region" \
    --query 'sort_by(Summaries[?ExecutionStatus==`AVAILABLE`], &CreationTime)[-1].ChangeSetId' --output text 2>/dev/null || true)"
  [[ "$changeset" != "None" ]] || changeset=""
  [[ -n "$changeset" ]] ||
    die "sam deploy created no change set that deploy.sh can find" "list them with: aws cloudformation list-change-sets --stack-name $stack_name --region $region"
fi

stack_status() {
  aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null || true
}

# Why a stack ended in a failed state: its FAILED events, newest first.
failed_events() {
  # shellcheck disable=SC2016 # backticks are JMESPath literals
  aws cloudformation describe-stack-events --stack-name "$stack_name" --region "$region" \
    --query 'StackEvents[?ends_with(ResourceStatus, `FAILED`)].[LogicalResourceId, ResourceStatus, ResourceStatusReason]' \
    --output text 2>/dev/null | head -n 20 || true
}

if [[ -z "$changeset" ]]; then
  deployed_what="is up to date (no changes)"
else
  # Replacing or removing the table or the bucket deletes their data (a
  # retained table is orphaned instead). "Conditional" may replace: it
  # stops too.
  # shellcheck disable=SC2016 # backticks are JMESPath literals
  risky="$(aws cloudformation describe-change-set --change-set-name "$changeset" --region "$region" \
    --query 'Changes[].ResourceChange | [?(ResourceType==`AWS::DynamoDB::Table` || ResourceType==`AWS::S3::Bucket`) && (Action==`Remove` || Replacement==`True` || Replacement==`Conditional`)].[Action, LogicalResourceId, ResourceType, Replacement]' \
    --output text)" ||
    die "could not read change set $changeset" "check your permissions (cloudformation:DescribeChangeSet), then re-run ./deploy.sh"
  [[ "$risky" != "None" ]] || risky=""
  if [[ -n "$risky" ]]; then
    say ""
    say "This change set would replace or delete stored data ($PROTECTED_TYPES):"
    while IFS=$'\t' read -r action logical type replacement; do
      [[ -n "$action" ]] || continue
      say "  $action $logical ($type, replacement: $replacement)"
    done <<<"$risky"
    if [[ "$allow_replacement" == false ]]; then
      die "change set not executed: it replaces or deletes the resources listed above" \
        "nothing changed. Find out why with: aws cloudformation describe-change-set --change-set-name $changeset --region $region. If losing that data is intended (export the records first: tally export), re-run with --allow-replacement"
    fi
    say "--allow-replacement given: executing it anyway."
  fi
  if [[ "$interactive" == true && "$assume_yes" == false ]]; then
    printf 'Deploy this changeset? [y/N]: '
    IFS= read -r answer || answer=""
    [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] ||
      die "nothing was deployed: the change set was declined" "re-run ./deploy.sh and answer y, or delete it: aws cloudformation delete-change-set --change-set-name $changeset --region $region"
  fi
  say "Executing change set $changeset..."
  aws cloudformation execute-change-set --change-set-name "$changeset" --region "$region" ||
    die "CloudFormation refused to execute the change set" "the message above says why; re-run ./deploy.sh"
  # Poll instead of `aws cloudformation wait` (silent, and it cannot tell a
  # rollback from a failure) to show progress.
  started=$SECONDS
  while :; do
    status="$(stack_status)"
    [[ "$status" == *_IN_PROGRESS ]] || break
    ((SECONDS - started < 3600)) ||
      die "stack $stack_name is still $status after an hour" "watch it with: aws cloudformation describe-stack-events --stack-name $stack_name --region $region"
    say "  $status ($((SECONDS - started)) s)..."
    sleep "${TALLY_DEPLOY_POLL_SECONDS:-10}"
  done
  deployed_what="is deployed"
fi

status="$(stack_status)"
case "$status" in
  CREATE_COMPLETE | UPDATE_COMPLETE) ;;
  REVIEW_IN_PROGRESS | "")
    die "nothing was deployed (the change set was not executed)" "re-run ./deploy.sh" ;;
  *)
    say "Failed resources (newest first):"
    failed_events | sed 's/^/  /'
    die "stack $stack_name is in state $status: the deploy did not complete" \
      "fix the reasons above and re-run ./deploy.sh (UPDATE_ROLLBACK_COMPLETE: the previous version is running again; ROLLBACK_COMPLETE: remove it with ./clean.sh --stack-name $stack_name --region $region first). Events: aws cloudformation describe-stack-events --stack-name $stack_name --region $region" ;;
esac

api_url="$(stack_output ApiUrl)"
key_id="$(stack_output ApiKeyId)"
key_cmd="$(stack_output GetApiKeyCommand)"
bucket="$(stack_output SummaryBucketName)"
table="$(stack_output RecordsTableName)"
retained="$(stack_output RecordsTableRetained)"
[[ -n "$api_url" && "$api_url" != "None" ]] ||
  die "the stack has no ApiUrl output" "run: aws cloudformation describe-stacks --stack-name $stack_name --region $region"

banner "tally $deployed_what: stack $stack_name in $region"
cat <<EOF

  Endpoint        ${api_url}
  API key id      ${key_id}
  Summary bucket  ${bucket}
  Records table   ${table}$([[ "$retained" == "true" ]] && printf ' (kept when the stack is deleted)')

Get the API key value (send it as the x-api-key header):
  ${key_cmd}

Try it (a new key can take a minute to become active):
  API_KEY="\$(${key_cmd})"
  curl -sS -X POST '${api_url}records' -H "x-api-key: \$API_KEY" \\
       -H 'Content-Type: application/json' -d '{"message": "hello world"}'
  curl -sS '${api_url}health'

Weekly summaries are written to s3://${bucket}/summaries/<week>/ every Monday 03:00 UTC.
Remove everything with: ./clean.sh --stack-name ${stack_name} --region ${region}
EOF

# ------------------------------------------------------- alarm recipient
alarm_ids="$(template_alarms)"
alarm_count="$(grep -c . <<<"$alarm_ids" || true)"
recipient="$(stack_param AlarmEmail)"
say ""
if [[ -n "$recipient" ]]; then
  say "Alarms: all $alarm_count e-mail $recipient (confirm the subscription e-mail AWS sent, once)."
else
  say "warning: no alarm recipient: the stack's AlarmEmail is empty, so nobody hears these $alarm_count alarms:"
  while IFS= read -r alarm; do
    [[ -z "$alarm" ]] || say "  $alarm"
  done <<<"$alarm_ids"
  say "  next: re-run with --alarm-email you@example.com, or add AlarmEmail=\"you@example.com\" to parameter_overrides"
  say "        in samconfig.toml's [${config_env:-default}.deploy.parameters] (docs/DEPLOY.md#alarms-and-who-hears-them)."
fi

# --------------------------------------------- first-deploy verification
# The weekly path runs once, the way the schedule runs it: a one-time
# EventBridge Scheduler schedule in the default group (the group the
# scheduler role's trust policy names) with the weekly schedule's target
# and role starts the state machine with the schedule's own input, {} (the
# last complete ISO week, plus any catch-up; an empty week is fine, and a
# week the retention already pruned is left as it is). deploy.sh waits for that
# execution, bounded, and reports. Exit status 3: the stack is deployed but
# the weekly run did not work.

# utc EPOCH FORMAT (GNU date, then BSD date).
utc() { date -u -d "@$1" "+$2" 2>/dev/null || date -u -r "$1" "+$2"; }

# verify_fail "what went wrong" "what to do next": like die, exit status 3.
verify_fail() {
  printf 'error: %s\n' "$1" >&2
  printf '  next: %s\n' "$2" >&2
  exit 3
}

# The state the execution failed in: walk back (previousEventId) from its
# last failed task, or from the execution's own failure, to the state
# entered; else the state entered last.
failing_state() {
  aws stepfunctions get-execution-history --execution-arn "$1" --region "$region" \
    --query 'events[].[id, previousEventId, type, stateEnteredEventDetails.name]' --output text 2>/dev/null |
    awk -F'\t' '
      { prev[$1] = $2; type[$1] = $3; name[$1] = ($4 == "None" ? "" : $4); ids[++n] = $1 }
      END {
        for (i = n; i >= 1 && start == ""; i--)
          if (type[ids[i]] ~ /^(Task|LambdaFunction|Activity)(Failed|TimedOut|StartFailed|ScheduleFailed|SubmitFailed)$/) start = ids[i]
        for (i = n; i >= 1 && start == ""; i--)
          if (type[ids[i]] ~ /^Execution(Failed|TimedOut|Aborted)$/) start = ids[i]
        for (id = start; id != "" && (id in type) && hops++ < 100000; id = prev[id])
          if (name[id] != "") { print name[id]; exit }
        for (i = n; i >= 1; i--)
          if (name[ids[i]] != "") { print name[ids[i]]; exit }
      }' || true
}

verify_weekly_run() {
  local sm role dlq_arn dlq_url log_group link_cmd partition now week at input target before output
  local timeout poll started elapsed exec_arn="" status="" arns arn exec_input
  sm="$(stack_output WeeklyStateMachineArn)"
  role="$(stack_output WeeklyScheduleRoleArn)"
  dlq_arn="$(stack_output DeadLetterQueueArn)"
  dlq_url="$(stack_output DeadLetterQueueUrl)"
  log_group="$(stack_output WeeklyFunctionLogGroupName)"
  link_cmd="$(stack_output ReportLinkCommand)"
  [[ "$link_cmd" != "None" ]] || link_cmd=""
  for output in sm role dlq_arn; do
    [[ -n "${!output}" && "${!output}" != "None" ]] ||
      verify_fail "the stack has no WeeklyStateMachineArn / WeeklyScheduleRoleArn / DeadLetterQueueArn output: cannot verify the weekly run" \
        "deploy this template.yaml (it has them), or skip the check with --no-verify"
  done
  partition="${sm#arn:}"
  partition="${partition%%:*}"
  timeout="${TALLY_VERIFY_TIMEOUT_SECONDS:-600}"
  poll="${TALLY_VERIFY_POLL_SECONDS:-15}"

  now="$(date -u +%s)"
  week="$(utc "$((now - 7 * 86400))" '%G-W%V')"
  at="$(utc "$((now + 60))" '%Y-%m-%dT%H:%M:%S')"
  input="{}"
  # The weekly schedule's target, but retried for at most 5 minutes (not 6
  # hours), so an undeliverable start reaches the dead-letter queue while
  # deploy.sh is still waiting.
  printf -v target '{"Arn":"%s","RoleArn":"%s","Input":"{}","RetryPolicy":{"MaximumRetryAttempts":2,"MaximumEventAgeInSeconds":300},"DeadLetterConfig":{"Arn":"%s"}}' \
    "$sm" "$role" "$dlq_arn"

  banner "Verifying the weekly run: week $week through the schedule's role"
  # Executions that exist already (newest first): the new one is not among them.
  before="$(aws stepfunctions list-executions --state-machine-arn "$sm" --region "$region" --max-items 50 \
    --query 'executions[].executionArn' --output text)" ||
    verify_fail "could not list the weekly state machine's executions" \
      "the deploying identity needs states:ListExecutions, states:DescribeExecution and states:GetExecutionHistory (docs/DEPLOY.md#first-deploy-verification); or skip the check with --no-verify"
  before=" ${before//[[:space:]]/ } "

  verify_schedule="${stack_name}-verify"
  # A left-over from an interrupted run would make the name taken.
  aws scheduler delete-schedule --name "$verify_schedule" --group-name default --region "$region" >/dev/null 2>&1 || true
  say "Creating the one-time schedule $verify_schedule: at($at) UTC, target $sm, role $role"
  if ! aws scheduler create-schedule --name "$verify_schedule" --group-name default --region "$region" \
    --schedule-expression "at($at)" --schedule-expression-timezone UTC \
    --flexible-time-window Mode=OFF --action-after-completion DELETE \
    --description "tally deploy.sh: run the weekly job once to verify the deploy (deleted after it ran)" \
    --target "$target" >/dev/null; then
    verify_schedule=""
    verify_fail "could not create the verification schedule (the message above says why)" \
      "the deploying identity needs scheduler:CreateSchedule and scheduler:DeleteSchedule on schedule/default/$stack_name-verify and iam:PassRole on $role (docs/DEPLOY.md#first-deploy-verification); or skip the check with --no-verify. The stack itself is deployed."
  fi

  started=$SECONDS
  while :; do
    elapsed=$((SECONDS - started))
    if [[ -z "$exec_arn" ]]; then
      arns="$(aws stepfunctions list-executions --state-machine-arn "$sm" --region "$region" --max-items 20 \
        --query 'executions[].executionArn' --output text 2>/dev/null || true)"
      for arn in $arns; do
        [[ "$arn" != "None" && "$before" != *" $arn "* ]] || continue
        exec_input="$(aws stepfunctions describe-execution --execution-arn "$arn" --region "$region" \
          --query input --output text 2>/dev/null || true)"
        if [[ "${exec_input//[[:space:]]/}" == "$input" ]]; then
          exec_arn="$arn"
          say "  execution started: $exec_arn"
          break
        fi
      done
    fi
    if [[ -n "$exec_arn" ]]; then
      status="$(aws stepfunctions describe-execution --execution-arn "$exec_arn" --region "$region" \
        --query status --output text 2>/dev/null || true)"
      case "$status" in SUCCEEDED | FAILED | TIMED_OUT | ABORTED) break ;; esac
    fi
    ((elapsed < timeout)) || break
    if [[ -z "$exec_arn" ]]; then
      say "  waiting for the schedule to start it (due at $at UTC; ${elapsed} s)..."
    else
      say "  ${status:-RUNNING} (${elapsed} s)..."
    fi
    sleep "$poll"
  done

  # ActionAfterCompletion DELETE removes the schedule once it has run; it is
  # still there when it has not (yet).
  if aws scheduler get-schedule --name "$verify_schedule" --group-name default --region "$region" >/dev/null 2>&1; then
    if aws scheduler delete-schedule --name "$verify_schedule" --group-name default --region "$region" >/dev/null; then
      say "Deleted the verification schedule $verify_schedule."
    else
      say "warning: could not delete the verification schedule: aws scheduler delete-schedule --name $verify_schedule --region $region"
    fi
  fi
  verify_schedule=""

  local console="https://${region}.console.aws.amazon.com/states/home?region=${region}#/v2/executions/details/${exec_arn}"
  local rerun="aws stepfunctions start-execution --state-machine-arn $sm --input '$input' --region $region"
  local logs="aws logs tail ${log_group:-<WeeklyFunctionLogGroupName>} --since 1h --region $region"
  case "$status" in
    SUCCEEDED)
      banner "Verified: the schedule's role started the weekly run and it succeeded (week $week)"
      cat <<EOF

  Execution  $exec_arn
  Report     ${api_url}summaries/$week

Read the report (with the API key as above):
  curl -sS '${api_url}summaries/$week' -H "x-api-key: \$API_KEY"
EOF
      if [[ -n "$link_cmd" ]]; then
        printf '\nOpen its page in a browser with a signed link (needs the tally binary and\nsecretsmanager:GetSecretValue on the link secret):\n  %s\n' "${link_cmd/--week 2026-W47/--week $week}"
      fi
      ;;
    FAILED | TIMED_OUT | ABORTED)
      local state error cause hint=""
      state="$(failing_state "$exec_arn")"
      error="$(aws stepfunctions describe-execution --execution-arn "$exec_arn" --region "$region" --query error --output text 2>/dev/null || true)"
      cause="$(aws stepfunctions describe-execution --execution-arn "$exec_arn" --region "$region" --query cause --output text 2>/dev/null || true)"
      [[ "$error" != "None" ]] || error=""
      [[ "$cause" != "None" ]] || cause=""
      ((${#cause} <= 800)) || cause="${cause:0:800}..."
      case "$error $cause" in
        *TooManyRequests* | *Throttl* | *"Rate exceeded"*)
          hint="Lambda throttled the step: lower WeeklyPartsConcurrency (--parameter-overrides) or raise the account's Lambda concurrency. " ;;
        *AccessDenied* | *"not authorized"*)
          hint="A role lacks a permission (the cause names the action and the role; template.yaml grants each role's actions). " ;;
        *States.Timeout* | *Sandbox.Timedout* | *"timed out"*)
          hint="A step ran out of time: the weekly function's log shows how far it got. " ;;
      esac
      say ""
      say "The weekly run (week $week) started through the schedule's role, but the execution ended $status."
      say "  Failed state  ${state:-unknown}"
      say "  Error         ${error:-(none recorded)}"
      say "  Cause         ${cause:-(none recorded)}"
      say "  Execution     $console"
      say "  Function log  $logs"
      verify_fail "the weekly run of week $week $status in state ${state:-unknown}: ${error:-no error recorded}" \
        "${hint}Read the function log and the execution (both above), fix the cause, then re-run ./deploy.sh (it verifies again) or re-run the week: $rerun. The stack itself is deployed."
      ;;
    *)
      if [[ -n "$exec_arn" ]]; then
        verify_fail "the weekly run of week $week is still ${status:-RUNNING} after $timeout s" \
          "follow it: aws stepfunctions describe-execution --execution-arn $exec_arn --region $region (or $console); its log: $logs. The stack itself is deployed."
      fi
      local queued
      queued="$(aws sqs get-queue-attributes --queue-url "$dlq_url" --region "$region" \
        --attribute-names ApproximateNumberOfMessages --query Attributes.ApproximateNumberOfMessages --output text 2>/dev/null || true)"
      say ""
      say "No execution of $sm started within $timeout s (the schedule was due at $at UTC)."
      if [[ "$queued" =~ ^[0-9]+$ ]] && ((queued > 0)); then
        say "The dead-letter queue $dlq_url holds $queued message(s): the scheduler assumed the role but could not start the execution."
        say "  Read why (ERROR_CODE, ERROR_MESSAGE): aws sqs receive-message --queue-url $dlq_url --attribute-names All --message-attribute-names All --region $region"
      else
        say "The dead-letter queue $dlq_url is empty (or unreadable). The scheduler writes it with the same role,"
        say "  so an empty queue means it could not even assume WeeklyScheduleRole."
      fi
      say "Check WeeklyScheduleRole's trust policy: aws iam get-role --role-name ${role##*/} --query Role.AssumeRolePolicyDocument"
      say "  it must let scheduler.amazonaws.com assume it with aws:SourceAccount $account and"
      say "  aws:SourceArn arn:$partition:scheduler:$region:$account:schedule-group/default (a schedule group: a schedule's own ARN is refused)."
      say "Also check this computer's clock: the schedule's time ($at UTC) was computed from it."
      verify_fail "no weekly run started within $timeout s: the schedule's role or target does not work" \
        "read the dead-letter queue $dlq_url and check WeeklyScheduleRole's trust policy (above), fix, then re-run ./deploy.sh. The stack itself is deployed."
      ;;
  esac
}

if [[ "$verify" == true ]]; then
  verify_weekly_run
else
  say ""
  say "Verification skipped (--no-verify). Run the weekly job once with: $(stack_output RerunWeekCommand)"
fi
