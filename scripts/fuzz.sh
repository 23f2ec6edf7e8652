#!/usr/bin/env bash
# Coverage-guided fuzzing of the CNI protocol layer and config parser for a fixed time budget.
#
#   scripts/fuzz.sh [--seconds N] [--keep DIR] [--keep-going] [-- extra libFuzzer flags]
#
# Starts from the committed seeds in tests/fuzz/corpus/ (read only) and writes
# new corpus entries to a temporary directory, so the repo keeps seeds only.
# With --keep DIR, new entries and crash reproducers stay in DIR. With
# --keep-going, a finding is recorded and fuzzing resumes for the rest of the
# budget (to measure throughput, or collect findings, past a known one).
# Exit status: 0 when the budget ran out with no finding, 1 on a finding
# (the reproducer's path is printed; replay it with
# `python tests/fuzz/fuzz_protocol.py CRASH_FILE`).
#
# Needs atheris (pip install atheris: 3.0.0 installs from a wheel on CPython 3.11). Without
# it, the same invariants run through hypothesis instead: the slow-marked
# property tests, with as many examples as fit in about --seconds (50 per property per second).
set -euo pipefail

cd "$(dirname "$0")/.."

seconds=60
keep=""
keep_going=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --keep) keep="$2"; shift 2 ;;
        --keep=*) keep="${1#*=}"; shift ;;
        --keep-going) keep_going=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds needs a whole number" >&2; exit 2 ;; esac

python=${PYTHON:-python3}

if ! "$python" -c 'import atheris' 2>/dev/null; then
    # About 50 examples per property per second on the development VM: keep to the budget.
    examples=$((seconds * 50 > 100 ? seconds * 50 : 100))
    echo "fuzz.sh: atheris is not installed (pip install atheris); running the hypothesis variant instead" \
        "($examples examples per property for ${seconds}s)" >&2
    ERT_HYPOTHESIS_EXAMPLES=$examples exec "$python" -m pytest -q -m slow tests/unit/test_properties.py -p no:cacheprovider \
        -o addopts="" --hypothesis-seed=0
fi

if [ -n "$keep" ]; then
    mkdir -p "$keep"
    work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/egress-router-fuzz.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/corpus" "$work/artifacts"
log="$work/fuzz.log"

seeds=$(find tests/fuzz/corpus -type f | wc -l)
echo "fuzz.sh: ${seconds}s budget; seeds tests/fuzz/corpus ($seeds files); work dir $work" >&2

started=$SECONDS
deadline=$((SECONDS + seconds))
runs=0
rounds=0
status=0
# One libFuzzer run normally; with --keep-going a finding ends the round, and the
# next round resumes from the grown corpus with the time left.
while :; do
    remaining=$((deadline - SECONDS))
    [ "$remaining" -gt 0 ] || break
    rounds=$((rounds + 1))
    round_status=0
    # The new-corpus directory comes first: libFuzzer writes new inputs to the first one only.
    "$python" tests/fuzz/fuzz_protocol.py \
        -max_total_time="$remaining" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
        ${extra[@]+"${extra[@]}"} \
        "$work/corpus" tests/fuzz/corpus >"$log.$rounds" 2>&1 || round_status=$?
    cat "$log.$rounds" >>"$log"
    done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log.$rounds" | tail -1 || true)
    runs=$((runs + ${done_runs:-0}))
    if [ "$round_status" -ne 0 ]; then
        status=$round_status
        [ "$keep_going" = 1 ] || break
    fi
done
elapsed=$((SECONDS - started))
rate=0
if [ "$elapsed" -gt 0 ]; then rate=$((runs / elapsed)); fi
cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
new=$(find "$work/corpus" -type f | wc -l)
findings=$(find "$work/artifacts" -type f | wc -l)
echo "fuzz.sh: $runs executions in ${elapsed}s (~$rate exec/s), $rounds round(s), coverage ${cov:-?} edges," \
    "$new new corpus entries, $findings finding(s)"

if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: FINDING (libFuzzer exit $status); last lines of the log:" >&2
    tail -n 40 "$log.$rounds" >&2
    echo "fuzz.sh: findings grouped by message, quoted values elided (count, message):" >&2
    (grep -h '^AssertionError' "$log" || true) | sed -e "s/'[^']*'/'…'/g" -e 's/"[^"]*"/"…"/g' | cut -c1-200 |
        sort | uniq -c | sort -rn | head -20 >&2
    trap - EXIT  # keep the work dir: it holds the reproducers
    echo "fuzz.sh: reproducers in $work/artifacts/ (replay one: $python tests/fuzz/fuzz_protocol.py FILE):" >&2
    find "$work/artifacts" -type f | head -5 >&2
    exit 1
fi
