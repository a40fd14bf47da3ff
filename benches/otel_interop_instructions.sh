#!/usr/bin/env bash
# Instructions per request for each rung of benches/otel_interop.rs, with callgrind, and the
# ratios to `otel_alone` (tracing-opentelemetry without tracing-usr).
# Usage: bash benches/otel_interop_instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
source benches/callgrind.sh
bin=$(bench_binary otel_interop)
declare -A per
rungs=(otel_alone otel_floor otel_usr_first otel_usr_second)
for rung in "${rungs[@]}"; do
  per[$rung]=$(per_request "$bin" "$rung" "$n")
done
for rung in "${rungs[@]}"; do
  awk -v a="${per[$rung]}" -v b="${per[otel_alone]}" -v r="$rung" \
    'BEGIN { printf "%-18s %7d instructions/request  %.3fx otel_alone\n", r, a, a / b }'
done
