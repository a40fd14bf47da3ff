#!/usr/bin/env bash
# Instructions per request for each rung of benches/request.rs, with callgrind (the count does not
# depend on the machine's load), and the ratios to `baseline`.
# Usage: bash benches/request_instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
source benches/callgrind.sh
bin=$(bench_binary request)
declare -A per
rungs=(baseline baseline_identity registry_floor layer_plain layer_identity layer_identity_anon layer_identity_export)
for rung in "${rungs[@]}"; do
  per[$rung]=$(per_request "$bin" "$rung" "$n")
done
for rung in "${rungs[@]}"; do
  # Each rung against the no-op-layer baseline running the same request code.
  case $rung in baseline|layer_plain) ref=baseline ;; *) ref=baseline_identity ;; esac
  awk -v a="${per[$rung]}" -v b="${per[$ref]}" -v r="$rung" -v ref="$ref" \
    'BEGIN { printf "%-24s %7d instructions/request  %.2fx %s\n", r, a, a / b, ref }'
done
