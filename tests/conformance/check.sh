#!/bin/sh
# check.sh KILN SUITE_DIR all|PERCENT
# Runs `kiln conformance` on one suite of ONNX's test data and applies the acceptance rule:
#   all      every case passes, except those the runner excludes by name (printed "excluded")
#   PERCENT  no case fails, and at least PERCENT % of the suite's cases pass
set -u
kiln=$1 dir=$2 rule=$3
out=$("$kiln" conformance "$dir")
rc=$?
printf '%s\n' "$out"
summary=$(printf '%s\n' "$out" | tail -n 1)
set -- $(printf '%s\n' "$summary" | sed -n 's/^conformance: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p')
if [ $# -ne 3 ]; then
  echo "check.sh: no summary line from kiln conformance (exit $rc)" >&2
  exit 1
fi
passed=$1 failed=$2 skipped=$3 total=$(($1 + $2 + $3))
if [ "$failed" -ne 0 ] || [ "$rc" -ne 0 ]; then
  echo "check.sh: $failed failing case(s) in $dir" >&2
  exit 1
fi
if [ "$rule" = all ]; then
  unsupported=$(printf '%s\n' "$out" | grep '^SKIP ' | grep -vc ': excluded: ')
  if [ "$unsupported" -ne 0 ]; then
    echo "check.sh: $unsupported case(s) of $dir skipped for missing operators; every case must pass" >&2
    exit 1
  fi
elif [ $((passed * 100)) -lt $((rule * total)) ]; then
  echo "check.sh: $passed of $total cases pass in $dir, below the required $rule %" >&2
  exit 1
fi
echo "check.sh: $dir: $passed of $total pass ($((passed * 100 / total)) %), rule '$rule' met"
