#!/usr/bin/env bash
# Bounded fuzz run for CI: builds every target (stable, no sanitizer, debug assertions on) and runs
# each for FUZZ_SECONDS seconds (default 60), seeded from spec/vectors/fuzz-seeds and the saved
# regressions. Fails on any crash, panic, timeout or out-of-memory; prints executions, coverage
# and corpus size per target. See fuzz/README.md for the long runs.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-2048}
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not found: installing it"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "=== building fuzz targets: $(echo $targets)"
cargo fuzz build -s none --debug-assertions

failed=()
summary=()
for target in $targets; do
  corpus="corpus/$target"
  mkdir -p "$corpus" "artifacts/$target"
  for seeds in "../spec/vectors/fuzz-seeds/$target" "regressions/$target"; do
    if [ -d "$seeds" ]; then
      find "$seeds" -maxdepth 1 -type f ! -name 'README.md' -exec cp -n {} "$corpus/" \;
    fi
  done
  dict=()
  if [ -f "dict/$target.dict" ]; then dict=("-dict=dict/$target.dict"); fi
  log="artifacts/$target/ci.log"
  echo "=== $target: ${FUZZ_SECONDS}s, corpus $(find "$corpus" -type f | wc -l) files"
  status=0
  cargo fuzz run -s none --debug-assertions "$target" "$corpus" -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$RSS_LIMIT_MB" -timeout="$TIMEOUT_SECONDS" \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  final=$(grep -E '^#[0-9]+\s+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
  cov=$(echo "$final" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
  ft=$(echo "$final" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
  size=$(find "$corpus" -type f | wc -l)
  line=$(printf '%-14s execs %-10s cov %-6s ft %-6s corpus %s' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$size")
  if [ "$status" -ne 0 ]; then
    echo "$line  FAILED (exit $status)"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|Running:' "$log" | head -20 || true
    tail -30 "$log"
    failed+=("$target")
    line="$line  FAILED"
  else
    echo "$line"
  fi
  summary+=("$line")
done

echo
echo "=== fuzz summary (${FUZZ_SECONDS}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/; save them in fuzz/regressions/<target>/)"
  exit 1
fi
echo "no crashes"
