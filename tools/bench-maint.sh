#!/usr/bin/env bash
# What the writer's maintenance costs an idle service (docs/benchmarks.md,
# "Idempotency pruning in slices"): copies a bench database (bench-db.sh copy),
# starts gim-logic on it and prints the writer thread's CPU time in each of
# the first SECS seconds (/proc/PID/task/TID/stat). The first maintenance pass
# runs about a second after start, and every pass prunes idempotency records
# while a sweep is under way: a pass that stalls the writer shows here as a
# second of CPU, during which every send waits.
#
#   tools/bench-maint.sh GIM_LOGIC MASTER_DIR
#   e.g. tools/bench-maint.sh build/gim-logic /work/bench-data/10m-0007
#
# DIR (default /tmp/gim-maint), PORT (17496), SECS (8) change the rest.
set -uo pipefail
bin=$1 master=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=${DIR:-/tmp/gim-maint} port=${PORT:-17496} secs=${SECS:-8}
"$here/bench-db.sh" copy "$master" "$dir" "$port" >/dev/null || exit 2
"$bin" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
writer=
for _ in $(seq 100); do
    for t in "/proc/$pid/task/"*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = gim-writer ] && writer=$t
    done
    [ -n "$writer" ] && break
    sleep 0.05
done
[ -n "$writer" ] || { echo "bench-maint: no gim-writer thread in $pid" >&2; exit 2; }
tick=$(getconf CLK_TCK)
prev=$(awk '{print $14 + $15}' "$writer/stat")
printf 'writer CPU ms in each second:'
for _ in $(seq "$secs"); do
    sleep 1
    cur=$(awk '{print $14 + $15}' "$writer/stat")
    printf ' %d' $(((cur - prev) * 1000 / tick))
    prev=$cur
done
echo
