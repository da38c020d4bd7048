#!/usr/bin/env bash
# Builds fuzz_request with clang (libFuzzer + ASan + UBSan) and fuzzes the
# request path for SECONDS, starting from a copy of tests/fuzz/corpus (the
# committed seeds are never modified). Exits non-zero when the fuzzer finds a
# crash, a leak, a sanitizer report or a broken invariant; the input that
# triggered it is saved under fuzz-out/ (reproduce: BUILD/fuzz_request FILE).
#
#   tests/fuzz/run.sh SECONDS [extra libFuzzer flags...]
#
# Environment: GIM_FUZZ_BUILD  build directory (default build-fuzz)
#              GIM_FUZZ_KEEP   if set, the grown corpus is kept in fuzz-out/corpus
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

if (($# < 1)) || ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1)); then
    echo "usage: tests/fuzz/run.sh SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
seconds=$1
shift

build=${GIM_FUZZ_BUILD:-build-fuzz}
if ! command -v clang >/dev/null 2>&1; then
    tools/setup.sh all
fi
# Configure every time: the source list is a glob, and a stale one breaks the build.
CC=clang cmake -S . -B "$build" -DGIM_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target fuzz_request

work=$(mktemp -d /tmp/gim-fuzz-run-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" fuzz-out
cp tests/fuzz/corpus/* "$work/corpus/"

# One process: the machine is shared. -timeout catches hangs (a request must
# never take seconds); leaks are reported by LeakSanitizer at each input.
# TMPDIR: the target's database goes in $work too, so even a crash leaves nothing behind.
rc=0
TMPDIR=$work ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$build/fuzz_request" "$work/corpus" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$ROOT/fuzz-out/" "$@" || rc=$?

echo "run.sh: corpus grew from $(find tests/fuzz/corpus -type f | wc -l) seeds to" \
    "$(find "$work/corpus" -type f | wc -l) inputs"
if [[ -n "${GIM_FUZZ_KEEP:-}" ]]; then
    rm -rf fuzz-out/corpus
    cp -r "$work/corpus" fuzz-out/corpus
    echo "run.sh: corpus kept in fuzz-out/corpus"
fi
if ((rc != 0)); then
    echo "run.sh: FAILED (exit $rc): see the report above and fuzz-out/" >&2
    exit "$rc"
fi
echo "run.sh: no crash in $seconds s"
