#!/usr/bin/env bash
# Instructions per login event with detection shared on Redis vs in process (benches/cluster.rs),
# with callgrind (the whole process: the Redis thread's work included; redis-server itself is a
# child process callgrind does not count), and the ratios to the local rungs.
# Usage: bash benches/cluster_instructions.sh [N]   (needs redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
source benches/callgrind.sh
bin=$(bench_binary cluster)
declare -A per
rungs=(failure_local failure_redis success_local success_redis)
for rung in "${rungs[@]}"; do
  per[$rung]=$(per_request "$bin" "$rung" "$n")
done
for rung in "${rungs[@]}"; do
  ref=${rung%_*}_local
  awk -v a="${per[$rung]}" -v b="${per[$ref]}" -v r="$rung" -v ref="$ref" \
    'BEGIN { printf "%-16s %7d instructions/login  %.2fx %s\n", r, a, a / b, ref }'
done
