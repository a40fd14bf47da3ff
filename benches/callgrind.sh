# Sourced by the *_instructions.sh scripts (from the workspace root).

# `bench_binary NAME`: builds the bench NAME and prints its binary's path.
bench_binary() {
  cargo bench --bench "$1" --no-run >/dev/null 2>&1
  ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -1
}

# `count BIN RUNG N`: the instructions callgrind counts (all threads) for the bench binary BIN
# run with TRACING_USR_BENCH=instructions:RUNG:N.
count() {
  local out; out=$(mktemp)
  TRACING_USR_BENCH="instructions:$2:$3" valgrind --tool=callgrind --callgrind-out-file="$out" "$1" >/dev/null 2>&1
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
  rm -f "$out"
}

# `per_request BIN RUNG N`: instructions per request, the set-up (a run of 0 requests) subtracted.
per_request() {
  local base full
  base=$(count "$1" "$2" 0); full=$(count "$1" "$2" "$3")
  echo $(( (full - base) / $3 ))
}
