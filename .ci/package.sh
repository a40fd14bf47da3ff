#!/usr/bin/env bash
# Packages every publishable crate in dependency order (cargo builds each from its package alone,
# against the packages of the crates before it), prints what each package holds, refuses a file
# over 100 KiB, then runs each crate's own tests (unit and doc tests) from its unpacked package,
# outside the workspace: a fixture a test needs and the package lacks fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
crates=(tracing-usr-core tracing-usr-export tracing-usr tracing-usr-tower)
select=()
for c in "${crates[@]}"; do select+=(-p "$c"); done

cargo package --locked "${select[@]}" ${ALLOW_DIRTY:+--allow-dirty} --quiet
cargo publish --dry-run --locked "${select[@]}" ${ALLOW_DIRTY:+--allow-dirty} --quiet 2>&1 \
  | grep -v "aborting upload due to dry run" || true

read -r version target_dir < <(cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
print({p["name"]: p["version"] for p in m["packages"]}["tracing-usr"], m["target_directory"])')
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
patches=()
for c in "${crates[@]}"; do
  crate_file="$target_dir/package/$c-$version.crate"
  files=$(tar tzf "$crate_file" | grep -vc '/$')
  printf '%-20s %3d files, %4d KiB compressed\n' "$c" "$files" $(( $(stat -c %s "$crate_file") / 1024 ))
  tar xzf "$crate_file" -C "$unpacked"
  large=$(find "$unpacked/$c-$version" -type f -size +100k)
  if [ -n "$large" ]; then echo "a file over 100 KiB in the package of $c: $large" >&2; exit 1; fi
  patches+=(--config "patch.crates-io.$c.path=\"$unpacked/$c-$version\"")
done
for c in "${crates[@]}"; do
  echo "== the tests of $c, from its package"
  (cd "$unpacked/$c-$version" && CARGO_TARGET_DIR="$PWD/../target" \
    cargo test --quiet "${patches[@]}" 2>&1 | grep -E "^test result|error|FAILED|panicked" )
done
