#!/bin/sh
# run.sh FUZZER SEED_CORPUS SECONDS WORK_DIR
# Runs a libFuzzer target for a bounded time: first every committed input (the seeds and the
# regression cases of crashes found before), then new inputs mutated from them. New corpus
# entries go to WORK_DIR, never into the committed corpus; a crash leaves its input in WORK_DIR.
set -eu
fuzzer=$1 seeds=$2 seconds=$3 work=$4
rm -rf "$work" && mkdir -p "$work/corpus"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" "$seeds"
