#!/usr/bin/env python3
"""Checks the declared MSRV against the dependencies.

The workspace's `rust-version` must be at least the highest `rust-version` of every package the
publishable crates build with (normal and build dependencies, all features, every target), as
locked in Cargo.lock. Exits 1 when a dependency needs a newer compiler than the one declared.
"""
import json
import subprocess
import sys

CRATES = ["tracing-usr-core", "tracing-usr-export", "tracing-usr", "tracing-usr-tower"]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def version(text):
    return tuple(int(part) for part in text.split("."))


metadata = json.loads(run("cargo", "metadata", "--format-version", "1", "--locked"))
by_name_version = {(p["name"], p["version"]): p for p in metadata["packages"]}
declared = {p["name"]: p.get("rust_version") for p in metadata["packages"] if p["name"] in CRATES}

used = set()
for crate in CRATES:
    tree = run("cargo", "tree", "--locked", "-p", crate, "--all-features", "-e", "normal,build",
               "--target", "all", "--prefix", "none", "-f", "{p}")
    for line in tree.splitlines():
        name, ver = line.split()[:2]
        used.add((name, ver.lstrip("v")))

needs = []
for key in used:
    package = by_name_version.get(key)
    if package and package["source"] and package.get("rust_version"):
        needs.append((version(package["rust_version"]), package["name"], package["version"]))
needs.sort(reverse=True)
highest = needs[0][0]
print("highest dependency rust-version: {} ({})".format(
    ".".join(map(str, highest)),
    ", ".join(f"{n} {v}" for r, n, v in needs if r == highest)))

failed = False
for crate, rust_version in sorted(declared.items()):
    if rust_version is None or version(rust_version) < highest:
        print(f"{crate}: rust-version {rust_version} is below what its dependencies need")
        failed = True
    else:
        print(f"{crate}: rust-version {rust_version} holds")
sys.exit(1 if failed else 0)
