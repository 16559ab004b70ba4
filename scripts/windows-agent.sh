#!/usr/bin/env bash
# Cross-builds the Windows agent (x86_64-pc-windows-gnu) on Debian, and prepares Wine to
# run it for the tests (tests/tests/windows_agent.rs).
#
#   scripts/windows-agent.sh [--release] [--unit-tests] [--check-tools]
#
# The toolchain is Debian's, beside the machine's own: rustc-web and cargo-web (1.96) with
# rust-web-src build std for the target (-Zbuild-std, allowed by RUSTC_BOOTSTRAP=1, as
# rustup's Windows std cannot be fetched here), and mingw-w64 links. The exe is
# target/windows/x86_64-pc-windows-gnu/<profile>/opengslb-agent.exe.
#
# For Wine 8.0 only, a stand-in bcryptprimitives.dll (tests/windows/bcryptprimitives.c) is
# put beside the debug exe: Rust's std needs ProcessPrng, which Windows 10 and later have
# and Wine 8.0 lacks. It is never part of a release build. The Wine prefix is
# target/windows/wineprefix, made once here so tests do not race to make it.
#
# --unit-tests then also runs the agent's and proto's unit tests as Windows programs
# under Wine (cargo test with wine as the target's runner).
#
# --check-tools exits 0 when every tool is present, 1 (naming the missing) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package
declare -A needs=(
  [/usr/bin/rustc]=rustc-web
  [/usr/bin/cargo]=cargo-web
  [/usr/lib/rustlib/src/rust/library/Cargo.lock]=rust-web-src
  [x86_64-w64-mingw32-gcc]=gcc-mingw-w64-x86-64
  [wine]=wine
  [wineboot]=wine
  [/usr/lib/wine/wine64]=wine64
)
missing=()
for tool in "${!needs[@]}"; do
  if [[ $tool == /* ]]; then [[ -e $tool ]] || missing+=("${needs[$tool]}")
  else command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}"); fi
done
profile=debug
release=()
unit_tests=false
for arg in "$@"; do
  case $arg in
    --check-tools)
      if ((${#missing[@]})); then
        printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' '
        echo
        exit 1
      fi
      exit 0
      ;;
    --release) profile=release; release=(--release) ;;
    --unit-tests) unit_tests=true ;;
    *) echo "scripts/windows-agent.sh: unknown argument $arg (use --release, --unit-tests or --check-tools)" >&2; exit 2 ;;
  esac
done
if ((${#missing[@]})); then
  echo "scripts/windows-agent.sh: missing $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')(apt-get install them)" >&2
  exit 1
fi

export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$PWD/target/windows"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# Our crates' warnings fail the build, as clippy -D warnings does on Linux (Debian's
# toolchain has no clippy for the Windows-only code; cargo replays cached warnings).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
no_warnings() {
  if grep -q 'warning: `opengslb-' "$log"; then
    echo "scripts/windows-agent.sh: the Windows build of our crates has warnings (above)" >&2
    exit 1
  fi
}
/usr/bin/cargo build --locked -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu \
  -p opengslb-agent "${release[@]}" 2>&1 | tee "$log"
no_warnings
out=target/windows/x86_64-pc-windows-gnu/$profile
echo "scripts/windows-agent.sh: built $out/opengslb-agent.exe" >&2

# What running under Wine needs: the stand-in DLL in DIR, and the prefix.
for_wine() {
  x86_64-w64-mingw32-gcc -shared -O2 -o "$1/bcryptprimitives.dll" \
    tests/windows/bcryptprimitives.c -lbcrypt
  export WINEPREFIX="$PWD/target/windows/wineprefix" WINEDEBUG=-all
  if [[ ! -f $WINEPREFIX/system.reg ]]; then
    echo "scripts/windows-agent.sh: making the Wine prefix $WINEPREFIX" >&2
    wineboot --init >/dev/null 2>&1
    wineserver --wait
  fi
}

[[ $profile == debug ]] && for_wine "$out"

if [[ $unit_tests == true ]]; then
  # The test programs are in deps/.
  mkdir -p "$out/deps"
  for_wine "$out/deps"
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
  /usr/bin/cargo test --locked -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu \
    -p opengslb-agent -p opengslb-proto --lib --bins "${release[@]}" 2>&1 | tee "$log"
  no_warnings
fi
