#!/usr/bin/env bash
# Instructions per request of all threads, for each rung of benches/export.rs, with callgrind
# (the count does not depend on the machine's load). Usage: bash benches/export_instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
source benches/callgrind.sh
bin=$(bench_binary export)
# Completeness first (not measured): the sink decodes and counts what each pipeline sent.
for rung in usr_datadog usr_otlp otel_otlp; do
  TRACING_USR_BENCH="check:$rung:$n" "$bin" 2>/dev/null | grep "the sink received"
done
declare -A per
for rung in usr_datadog usr_otlp otel_otlp; do
  per[$rung]=$(per_request "$bin" "$rung" "$n")
  echo "$rung: $(( per[$rung] )) instructions per request (all threads; $n requests, set-up subtracted)"
done
for rung in usr_datadog usr_otlp; do
  awk -v a="${per[$rung]}" -v b="${per[otel_otlp]}" -v r="$rung" 'BEGIN { printf "%s / otel_otlp = %.3f\n", r, a / b }'
done
# The OTLP/protobuf writer alone, on a fixed batch of 700 records (500 spans, 200 log records).
wire=$(per_request "$bin" otlp_wire 200)
awk -v w="$wire" 'BEGIN { printf "otlp_wire: %d instructions per batch of 700 records, %.0f per record\n", w, w / 700 }'
