#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the end-to-end tests drive
# (haproxy, dig and delv, systemd's tools, iproute2, chromium + chromedriver, promtool, Knot
# DNS for the conformance test, Unbound as the validating resolver, python3 for the demo,
# and the Windows agent's cross tools and Wine) when run as root, then builds and runs
# every test.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A needs=(
  [haproxy]=haproxy
  [dig]=dnsutils
  [systemd-analyze]=systemd
  [systemd-socket-activate]=systemd
  [ss]=iproute2
  [ip]=iproute2
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [promtool]=prometheus
  [knotd]=knot
  [unbound]=unbound
  [unbound-control]=unbound
  [delv]=dnsutils
  [python3]=python3
)
missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) == 0 ]]; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The tests start their own Knot on a loopback port; the packaged service is not used.
    # Likewise Unbound: the DNSSEC tests start their own validating resolver.
    for service in knot unbound; do
      if [[ " ${missing[*]} " == *" $service "* ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
  else
    echo "scripts/test.sh: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# The package test builds .deb files with cargo-deb (the version whose options
# scripts/package.sh uses).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing cargo-deb" >&2
  cargo install --locked cargo-deb --version 3.8.0
fi

# The Windows agent (tests/tests/windows_agent.rs): cross-built with Debian's Rust and
# mingw-w64, run under Wine. Installed as root when missing; otherwise those tests say
# they are skipped (and fail under CI, where they must run).
if ! windows_missing=$(bash scripts/windows-agent.sh --check-tools); then
  if [[ $(id -u) == 0 ]]; then
    echo "scripts/test.sh: installing $windows_missing(the Windows agent's cross build and Wine)" >&2
    apt-get update -qq
    # With Wine's recommended libraries: the set the Windows tests were made with.
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $windows_missing >/dev/null
  fi
fi
if bash scripts/windows-agent.sh --check-tools >/dev/null; then
  # Builds the exe the end-to-end tests run, and runs the agent's and proto's unit tests
  # as Windows programs under Wine.
  bash scripts/windows-agent.sh --unit-tests
else
  echo "scripts/test.sh: the Windows agent's tests will be SKIPPED: missing $windows_missing; install them: sudo apt-get install $windows_missing" >&2
fi

# The end-to-end tests run the built binaries (tests/src/lib.rs refuses stale ones).
cargo build --workspace --bins --locked
profile=default
[[ "${CI:-}" == true ]] && profile=ci
cargo nextest run --workspace --locked --profile "$profile" "$@"
