# Sourced by the shell tests (tests/*/*.sh) after they cd to the repository: `check DESCRIPTION
# COMMAND...` counts a pass when the command succeeds, a failure otherwise; each test ends with
# the plain "N passed, N failed" line CI reads.
passed=0 failed=0
check() {
    local d=$1
    shift
    if "$@"; then echo "  ok   $d"; passed=$((passed + 1)); else echo "  FAIL $d"; failed=$((failed + 1)); fi
}
jqe() { jq -e "$@" >/dev/null; }
