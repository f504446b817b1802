#!/usr/bin/env bash
# Long fuzz runs: each target given (default: all) for LONG_SECONDS (default 600) seconds, one after
# the other, on nightly with AddressSanitizer and debug assertions. Run two of these at once at
# most on a 2-core machine, e.g.
#   bash fuzz/long-run.sh op_sequence inner_request codecs &
#   bash fuzz/long-run.sh server_handle seed_parsing &
# Logs go to fuzz/artifacts/<target>/long.log; crashing inputs to fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "$0")"
LONG_SECONDS=${LONG_SECONDS:-600}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-2048}
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then mapfile -t targets < <(cargo fuzz list); fi
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus" "artifacts/$target"
  for seeds in "../spec/vectors/fuzz-seeds/$target" "regressions/$target"; do
    [ -d "$seeds" ] && find "$seeds" -maxdepth 1 -type f ! -name 'README.md' -exec cp -n {} "$corpus/" \;
  done
  dict=()
  [ -f "dict/$target.dict" ] && dict=("-dict=dict/$target.dict")
  log="artifacts/$target/long.log"
  cargo +nightly fuzz run --debug-assertions "$target" "$corpus" -- \
    -max_total_time="$LONG_SECONDS" -rss_limit_mb="$RSS_LIMIT_MB" -timeout=60 -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1
  status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  final=$(grep -E '^#[0-9]+' "$log" | tail -1)
  echo "$target: exit $status, execs ${execs:-?}, corpus $(find "$corpus" -type f | wc -l), last: $final"
done
