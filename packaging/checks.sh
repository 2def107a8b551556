# Sourced by packaging/test.sh and packaging/host-lab.sh (after they set $work): one
# way to run and count a check. `check DESCRIPTION COMMAND...` runs COMMAND and prints
# "ok   DESCRIPTION", or "FAIL DESCRIPTION" with the last 20 lines of its output;
# $passed and $failed count them for the closing "N passed, N failed" line.
passed=0; failed=0
check() {
    local what=$1; shift
    if "$@" >"$work/check.out" 2>&1; then
        passed=$((passed+1)); echo "ok   $what"
    else
        failed=$((failed+1)); echo "FAIL $what"; sed 's/^/     /' "$work/check.out" | tail -20
    fi
}
