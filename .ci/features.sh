#!/usr/bin/env bash
# The feature matrix: every publishable crate with no default features, with each feature alone,
# and with all of them passes clippy (-D warnings, library and its tests), and a feature that is
# off compiles none of its dependencies (checked on the resolved tree).
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages that only a given feature brings in.
declare -A brings=(
  [datadog]="rmp"
  [otlp]="prost opentelemetry-proto"
  [http]="reqwest flate2"
  [tokio]="tokio"
  [opentelemetry]="tracing-opentelemetry"
  [redis]="redis"
  [cluster]="hmac"
)
# Which of those each feature of a crate turns on.
declare -A turns_on=(
  [datadog]="datadog http tokio"
  [otlp]="otlp http tokio"
  [opentelemetry]="opentelemetry"
  [redis]="redis cluster tokio"
  [cluster]="cluster"
)

check() { # crate, features (comma-separated, may be empty)
  local crate=$1 features=$2 on="" key
  for f in ${features//,/ }; do on+=" ${turns_on[$f]:-}"; done
  printf '%-20s %-28s ' "$crate" "${features:-(none)}"
  cargo clippy --quiet --locked -p "$crate" --no-default-features ${features:+--features "$features"} \
    --lib --tests -- -D warnings
  local tree
  tree=$(cargo tree --locked -p "$crate" --no-default-features ${features:+--features "$features"} \
    -e normal --prefix none --target all | awk '{print $1}' | sort -u)
  for key in "${!brings[@]}"; do
    [[ " $on " == *" $key "* ]] && continue
    for package in ${brings[$key]}; do
      if grep -qx "$package" <<<"$tree"; then
        echo "FAILED: $package is compiled in though '$key' is off" >&2
        exit 1
      fi
    done
  done
  echo "ok"
}

features_of() { # the crate's features, from its manifest, without "default"
  cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
name = sys.argv[1]
package = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == name)
print(" ".join(f for f in package["features"] if f != "default"))' "$1"
}

for crate in tracing-usr-core tracing-usr-export tracing-usr tracing-usr-tower; do
  all=$(features_of "$crate")
  check "$crate" ""
  for f in $all; do check "$crate" "$f"; done
  if [ -n "$all" ]; then check "$crate" "$(tr ' ' ',' <<<"$all")"; fi
done
