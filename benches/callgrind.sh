# Sourced by the *_instructions.sh scripts: `count BIN RUNG N` prints the instructions callgrind
# counts (all threads) for a bench binary run with TRACING_USR_BENCH=instructions:RUNG:N.
count() {
  local out; out=$(mktemp)
  TRACING_USR_BENCH="instructions:$2:$3" valgrind --tool=callgrind --callgrind-out-file="$out" "$1" >/dev/null 2>&1
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
  rm -f "$out"
}
