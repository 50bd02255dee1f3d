#!/usr/bin/env bash
# Remove a tally stack from AWS: disable the weekly schedule (so no run writes
# to the bucket meanwhile), empty the versioned summary bucket (every object
# version and delete marker), delete the stack, wait, and say what was kept
# (the records table when RetainTable=true, the artifact buckets it did not
# create - named).
#
#   ./clean.sh                                   # asks for stack name and region
#   ./clean.sh --stack-name tally --region eu-west-1 --yes
#   ./clean.sh --stack-name tally --dry-run      # show what would be deleted
#
# Guide: docs/DEPLOY.md
set -euo pipefail

SCRIPT="clean.sh"
ERROR_HINT="fix that and re-run ./clean.sh; it is safe to run again."
# shellcheck source=scripts/lib/cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/cli.sh"

readonly DEFAULT_STACK="tally"
# Versions removed per DeleteObjects call (the API maximum).
readonly BATCH=1000

stack_name=""
region=""
assume_yes=false
guided=false
dry_run=false

usage() {
  cat <<'EOF'
Usage: ./clean.sh [options]

Deletes a tally stack: disables its weekly schedule, empties its summary
bucket (all versions and delete markers), deletes the CloudFormation stack and
waits for it. The records table is kept when the stack was deployed with
RetainTable=true (the default). Deployment artifact buckets are not deleted
(clean.sh did not create them); it names them.

Options:
  --stack-name NAME   stack to delete (default: tally)
  --region REGION     its region (default: AWS_REGION, AWS_DEFAULT_REGION or
                      `aws configure get region`)
  --yes, -y           do not ask for confirmation
  --guided            ask for every value, even those given as options
  --dry-run           show what would be deleted and kept; delete nothing
  -h, --help          show this help
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stack-name) need_value "$@"; stack_name="$2"; shift 2 ;;
    --stack-name=*) stack_name="${1#*=}"; shift ;;
    --region) need_value "$@"; region="$2"; shift 2 ;;
    --region=*) region="${1#*=}"; shift ;;
    -y | --yes) assume_yes=true; shift ;;
    --guided) guided=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1" "run ./clean.sh --help for the list of options" ;;
  esac
done

interactive=false
if [[ -t 0 ]]; then interactive=true; fi

command -v aws >/dev/null 2>&1 ||
  die "'aws' is not installed or not on PATH" "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html (or: pip install awscli)"

region_default="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}"
if [[ "$interactive" == true && "$assume_yes" == false ]]; then
  if [[ -z "$stack_name" || "$guided" == true ]]; then
    ask stack_name "What is the name of your sam stack?" "$DEFAULT_STACK" "${stack_name:-$DEFAULT_STACK}"
  fi
  if [[ -z "$region" || "$guided" == true ]]; then
    ask region "What is the region of the stack?" "us-east-1" "${region:-$region_default}"
  fi
fi
stack_name="${stack_name:-$DEFAULT_STACK}"
region="${region:-$region_default}"
[[ -n "$region" ]] || die "no AWS region given or configured" "pass --region (the region you deployed to, e.g. --region us-east-1)"
[[ "$stack_name" =~ ^[A-Za-z][A-Za-z0-9-]{0,127}$ ]] ||
  die "invalid stack name '$stack_name'" "use the name you deployed with (letters, digits, hyphens)"
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] ||
  die "invalid region '$region'" "pass a region code such as us-east-1 with --region"

aws sts get-caller-identity --query Account --output text >/dev/null 2>&1 ||
  die "no valid AWS credentials" "run 'aws configure' or 'aws sso login' (and export AWS_PROFILE), check with 'aws sts get-caller-identity', then re-run"

status="$(aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
  --query 'Stacks[0].StackStatus' --output text 2>/dev/null)" ||
  die "there is no stack named '$stack_name' in $region" "check the name and region; list stacks with: aws cloudformation list-stacks --region $region --query 'StackSummaries[?StackStatus!=\`DELETE_COMPLETE\`].StackName'"

output() {
  local v
  v="$(aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text 2>/dev/null || true)"
  [[ "$v" == "None" ]] && v=""
  printf '%s' "$v"
}
# Physical id of a stack resource, empty if the stack does not have it.
resource() {
  aws cloudformation describe-stack-resource --stack-name "$stack_name" --region "$region" \
    --logical-resource-id "$1" --query 'StackResourceDetail.PhysicalResourceId' --output text 2>/dev/null || true
}

bucket="$(output SummaryBucketName)"
[[ -n "$bucket" ]] || bucket="$(resource SummaryBucket)"
table="$(output RecordsTableName)"
retained="$(output RecordsTableRetained)"
apigw_role="$(resource ApiGatewayCloudWatchRole)"
schedule="$(output WeeklyScheduleName)"
[[ -n "$schedule" ]] || schedule="$(resource WeeklyFunctionWeekly)"
[[ "$schedule" != "None" ]] || schedule=""
# Artifact buckets: one given to deploy.sh --s3-bucket (it tags the stack),
# and SAM's managed one. Read now: the tags go with the stack.
artifact_bucket="$(aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
  --query "Stacks[0].Tags[?Key=='tally:artifact-bucket'].Value | [0]" --output text 2>/dev/null || true)"
[[ "$artifact_bucket" != "None" ]] || artifact_bucket=""
sam_bucket="$(aws cloudformation describe-stacks --stack-name aws-sam-cli-managed-default --region "$region" \
  --query "Stacks[0].Outputs[?OutputKey=='SourceBucket'].OutputValue | [0]" --output text 2>/dev/null || true)"
[[ "$sam_bucket" != "None" ]] || sam_bucket=""

banner "Starting cleaning process: stack $stack_name ($status) in $region"
if [[ -n "$schedule" ]]; then
  say "First:       disable the weekly schedule $schedule (no run may write to the bucket while it is emptied)."
fi
say "Will delete: the API, both functions, the schedule, the dead-letter queue, alarms, log groups"
if [[ -n "$bucket" ]]; then
  say "             and the summary bucket $bucket with every object version in it."
fi
if [[ -n "$table" && "$retained" == "true" ]]; then
  say "Will keep:   the records table $table (RetainTable=true)."
elif [[ -n "$table" ]]; then
  say "Will delete: the records table $table and all its records (RetainTable=false)."
fi

if [[ "$dry_run" == true ]]; then
  if [[ -n "$bucket" ]]; then
    # The CLI applies --query per page: one count per line, summed here.
    count="$(aws s3api list-object-versions --bucket "$bucket" --region "$region" \
      --query 'length([Versions[], DeleteMarkers[]][])' --output text 2>/dev/null |
      awk '{ n += $1 } END { print n + 0 }' || echo "unknown")"
    say "The bucket holds $count object versions and delete markers."
  fi
  banner "Dry run: nothing was deleted."
  exit 0
fi

if [[ "$assume_yes" == false ]]; then
  [[ "$interactive" == true ]] ||
    die "refusing to delete without confirmation (no terminal to ask)" "re-run with --yes to confirm: ./clean.sh --stack-name $stack_name --region $region --yes"
  printf 'Delete stack %s in %s? [y/N]: ' "$stack_name" "$region"
  IFS= read -r answer || answer=""
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || { say "Nothing deleted."; exit 0; }
fi

# update-schedule replaces the whole definition: send back what get-schedule
# returned (the fields tally's template sets) with State DISABLED.
disable_schedule() {
  local input
  input="$(aws scheduler get-schedule --name "$1" --region "$region" \
    --query '{Name: Name, GroupName: GroupName, ScheduleExpression: ScheduleExpression, ScheduleExpressionTimezone: ScheduleExpressionTimezone, Description: Description, FlexibleTimeWindow: FlexibleTimeWindow, Target: Target}' \
    --output json 2>/dev/null)" || {
    say "Weekly schedule $1 is already gone."
    return 0
  }
  aws scheduler update-schedule --region "$region" --cli-input-json "$input" --state DISABLED >/dev/null ||
    die "could not disable the weekly schedule $1" "check that your identity may scheduler:UpdateSchedule and iam:PassRole on its role, or disable it in the console, then re-run ./clean.sh"
  say "Disabled the weekly schedule $1."
}

empty_bucket() {
  local bucket="$1" payload total=0 n errors
  payload="$(mktemp)"
  # shellcheck disable=SC2064 # expand now: the file name is local.
  trap "rm -f '$payload'" RETURN
  say "Deleting S3 bucket contents (all versions and delete markers) of $bucket"
  while :; do
    # Always list the first page: what was listed is deleted before the next call.
    # MaxKeys bounds versions + delete markers together, as DeleteObjects needs.
    # shellcheck disable=SC2016 # backticks are JMESPath literals
    aws s3api list-object-versions --bucket "$bucket" --region "$region" --no-paginate --max-keys "$BATCH" \
      --query '{Objects: [Versions[].{Key: Key, VersionId: VersionId}, DeleteMarkers[].{Key: Key, VersionId: VersionId}][], Quiet: `true`}' \
      --output json >"$payload"
    n="$(grep -c '"VersionId"' "$payload" || true)"
    [[ "$n" -gt 0 ]] || break
    # shellcheck disable=SC2016 # backticks are JMESPath literals
    errors="$(aws s3api delete-objects --bucket "$bucket" --region "$region" --delete "file://$payload" \
      --query 'length(Errors || `[]`)' --output text)"
    [[ "$errors" == "0" ]] ||
      die "S3 refused to delete $errors of $n versions in $bucket" "check that your identity may s3:DeleteObjectVersion on it, then re-run ./clean.sh"
    total=$((total + n))
    say "  deleted $total versions so far..."
  done
  say "Bucket $bucket is empty ($total versions and delete markers deleted)."
}

if [[ -n "$schedule" ]]; then
  disable_schedule "$schedule"
fi

if [[ -n "$bucket" ]]; then
  if aws s3api head-bucket --bucket "$bucket" --region "$region" >/dev/null 2>&1; then
    empty_bucket "$bucket"
  else
    say "Summary bucket $bucket is already gone."
  fi
fi

say "Deleting CloudFormation stack $stack_name..."
aws cloudformation delete-stack --stack-name "$stack_name" --region "$region"
# Poll instead of `aws cloudformation wait` (30 s steps, silent) to show progress.
wait_deleted() {
  local started=$SECONDS state
  while ((SECONDS - started < 3600)); do
    state="$(aws cloudformation describe-stacks --stack-name "$stack_name" --region "$region" \
      --query 'Stacks[0].StackStatus' --output text 2>/dev/null)" || return 0
    case "$state" in
      DELETE_COMPLETE) return 0 ;;
      DELETE_FAILED) return 1 ;;
    esac
    say "  $state ($((SECONDS - started)) s)..."
    sleep 5
  done
  return 1
}
if ! wait_deleted; then
  say "Resources that could not be deleted:"
  # shellcheck disable=SC2016 # backticks are JMESPath literals
  aws cloudformation describe-stack-events --stack-name "$stack_name" --region "$region" \
    --query 'StackEvents[?ResourceStatus==`DELETE_FAILED`].[LogicalResourceId, ResourceStatusReason]' \
    --output text 2>/dev/null | sort -u || true
  die "stack $stack_name did not delete cleanly" "fix the reasons above (e.g. objects written to the bucket meanwhile), then re-run ./clean.sh --stack-name $stack_name --region $region"
fi
say "Stack deleted successfully."

banner "Kept"
kept=false
if [[ -n "$table" && "$retained" == "true" ]]; then
  kept=true
  say "Records table $table (RetainTable=true): your records are still there."
  say "  Delete it when no longer needed: aws dynamodb delete-table --table-name $table --region $region"
fi
if [[ -n "$apigw_role" && "$apigw_role" != "None" ]]; then
  kept=true
  say "IAM role $apigw_role: the region's API Gateway CloudWatch logging role (other APIs may use it)."
fi
# Deployment artifacts: clean.sh created neither bucket, so it only names them.
if [[ -n "$artifact_bucket" ]]; then
  kept=true
  say "Artifact bucket $artifact_bucket (given to deploy.sh --s3-bucket; not created by this stack): this stack's uploads are under s3://$artifact_bucket/$stack_name/."
  say "  Remove them when no longer needed: aws s3 rm s3://$artifact_bucket/$stack_name/ --recursive --region $region"
fi
if [[ -n "$sam_bucket" ]]; then
  kept=true
  say "SAM's managed artifact bucket $sam_bucket (stack aws-sam-cli-managed-default), shared by every SAM stack in $region: not created by this stack."
  say "  Its objects for this stack are under the s3_prefix of samconfig.toml (tally by default)."
elif [[ -z "$artifact_bucket" ]]; then
  say "No artifact bucket found (SAM's managed stack aws-sam-cli-managed-default does not exist in $region)."
fi
[[ "$kept" == true ]] || say "Nothing else: every tally resource was deleted."
