#!/usr/bin/env bash
# Instructions per request for each rung of benches/otel_interop.rs, with callgrind, and the
# ratios to `otel_alone` (tracing-opentelemetry without tracing-usr; `otlp_alone` for the
# rungs that also encode what they export).
# Usage: bash benches/otel_interop_instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
source benches/callgrind.sh
bin=$(bench_binary otel_interop)
declare -A per
rungs=(otel_alone otel_attrs otel_floor otel_usr_first otel_usr_second otel_usr_guarded otlp_alone otlp_floor otlp_usr_first)
for rung in "${rungs[@]}"; do
  per[$rung]=$(per_request "$bin" "$rung" "$n")
done
for rung in "${rungs[@]}"; do
  base=${rung%%_*}_alone
  awk -v a="${per[$rung]}" -v b="${per[$base]}" -v r="$rung" -v base="$base" \
    'BEGIN { printf "%-18s %7d instructions/request  %.3fx %s\n", r, a, a / b, base }'
done
