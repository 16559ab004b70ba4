#!/usr/bin/env bash
# Debian packages: opengslb-overwatch (with opengslb-cli) and opengslb-agent, built with
# cargo-deb from the metadata in overwatch/Cargo.toml and agent/Cargo.toml.
#   scripts/package.sh                      # release build, target/debian/*.deb
#   scripts/package.sh --profile dev        # what the package test uses (no release build)
#   scripts/package.sh --deb-version 0.1.0-2 --out DIR
#   scripts/package.sh --profile dev --no-build   # package what `cargo build --workspace` made
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
version=()
out=target/debian
build=1
while (($#)); do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --deb-version) version=(--deb-version "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "scripts/package.sh: unknown argument $1 (--profile P, --deb-version V, --out DIR, --no-build)" >&2; exit 2 ;;
  esac
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "scripts/package.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 2
fi
((build)) && cargo build --locked --profile "$profile" -p opengslb-overwatch -p opengslb-agent --bins
bin=target/$([[ $profile == dev ]] && echo debug || echo "$profile")
for b in opengslb-overwatch opengslb-cli opengslb-agent; do
  [[ -x $bin/$b ]] || { echo "scripts/package.sh: $bin/$b is not built" >&2; exit 2; }
done
# Each binary's --help, installed beside its README (they have no man pages).
mkdir -p target/packaging "$out"
for b in opengslb-overwatch opengslb-cli opengslb-agent; do
  "$bin/$b" --help > "target/packaging/$b.help.txt"
done
# Debug builds are large and only tested, never shipped: compress them fast.
fast=()
[[ $profile == dev ]] && fast=(--fast)
for package in opengslb-overwatch opengslb-agent; do
  cargo deb --no-build --profile "$profile" -p "$package" "${version[@]}" "${fast[@]}" -o "$out" >&2
done
ls "$out"/*.deb
