# Shared by deploy.sh and clean.sh (sourced, not run): output, errors that
# say what to do next, option values, and the 2021 scripts' prompts.
# The sourcing script sets SCRIPT (its name) and ERROR_HINT (what to do after
# an unexpected failure) before sourcing.
# shellcheck shell=bash

readonly RULE="########################################"

say() { printf '%s\n' "$*"; }
banner() { say "$RULE"; say "$*"; say "$RULE"; }

# die "what went wrong" ["what to do next"]
die() {
  printf 'error: %s\n' "$1" >&2
  [[ $# -gt 1 ]] && printf '  next: %s\n' "$2" >&2
  exit 1
}

on_error() {
  printf 'error: %s stopped at line %s (exit %s); the output above says why.\n' "$SCRIPT" "$1" "$2" >&2
  printf '  next: %s\n' "$ERROR_HINT" >&2
}
trap 'on_error "$LINENO" "$?"' ERR

# need_value OPTION [VALUE...]: the option must be followed by a value.
need_value() {
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value" "run ./$SCRIPT --help for usage"
}

# ask VAR "question" "example" [default]: prints like the 2021 scripts did.
ask() {
  local var="$1" question="$2" example="$3" default="${4:-}" reply=""
  if [[ -n "$default" ]]; then
    printf '%s (Example: "%s") [%s]\n' "$question" "$example" "$default"
  else
    printf '%s (Example: "%s")\n' "$question" "$example"
  fi
  IFS= read -r reply || true
  printf -v "$var" '%s' "${reply:-$default}"
}
