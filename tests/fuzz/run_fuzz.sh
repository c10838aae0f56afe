#!/usr/bin/env bash
# Runs one libFuzzer target for a while on its checked-in corpus without writing into it: new inputs
# go to WORK/corpus, a crash to WORK/crash-*, libFuzzer's log to WORK/log.txt (its last lines are
# printed). Exit status: libFuzzer's (0: no finding).
# Usage: run_fuzz.sh BINARY CORPUS_DIR WORK_DIR SECONDS [extra libFuzzer flags...]
# STATETUNE_FUZZ_FLAGS adds libFuzzer flags too (scripts/fuzz.sh).
set -euo pipefail
bin=$1 corpus=$2 work=$3 seconds=$4
shift 4
mkdir -p "$work/corpus"
status=0
# One process, one worker: the machines this runs on are shared. -rss_limit_mb: a parser that needs
# more than 2 GB for an input of at most -max_len bytes is itself a finding.
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" ${STATETUNE_FUZZ_FLAGS:-} "$@" "$work/corpus" "$corpus" >"$work/log.txt" 2>&1 || status=$?
tail -n 25 "$work/log.txt"
exit $status
