#!/bin/bash
# bench-baseline.sh: one round of the issue-15 table at one database size
# (docs/benchmarks.md, "Issue 15 baseline"): syncs (newest page, 1,000 and
# 10,000 users; random seq, 10,000 users), durable 1:1 sends (1,000 and
# 10,000 users), each at C=64 and C=256, then reads behind saturating sends
# (-w rw) at C=256 and C=64. Each block starts the service on a fresh copy of
# the database (tools/bench-db.sh copy), so sends do not grow the next block's.
#
#   tools/bench-baseline.sh SIZE ROUND
#     SIZE   the directory under $DATA holding gim.db (1m, 10m)
#     ROUND  a number, for the log's name: $OUT/baseline-SIZE-rROUND.log
#   env: BIN (build: gim-logic and tools/gim-bench), DATA (/work/bench-data),
#        OUT (.), WORK (/tmp/gim-bench-run: where the copy lives), PORT (17490), T (10 s)
#
# Every bench line in the log is preceded by the time and the load average.
set -u
[ $# -eq 2 ] || { echo "usage: bench-baseline.sh SIZE ROUND" >&2; exit 2; }
SIZE=$1 ROUND=$2
BIN=${BIN:-build} DATA=${DATA:-/work/bench-data} OUT=${OUT:-.} PORT=${PORT:-17490}
D=${WORK:-/tmp/gim-bench-run}/$SIZE
LOG=$OUT/baseline-$SIZE-r$ROUND.log
COPY=$(dirname "$0")/bench-db.sh
PID=
say() { echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) | $*" | tee -a "$LOG"; }
start() {
    "$COPY" copy "$DATA/$SIZE" "$D" "$PORT" >>"$LOG" 2>&1 || exit 1
    "$BIN/gim-logic" --config "$D/gim.yaml" 2>>"$D/server.log" &
    PID=$!
    sleep 2
}
stop() {
    kill "$PID"
    wait "$PID"
    say "service exit $?"
}
bench() {
    say "gim-bench $*"
    "$BIN/tools/gim-bench" --url "tcp://127.0.0.1:$PORT" --db "$D/gim.db" --secret bench-secret \
        --server-pid "$PID" -t "${T:-10}" --warmup 1 "$@" 2>>"$D/bench.err" | tee -a "$LOG"
}
say "round $ROUND size $SIZE bin $BIN"
start
for C in 64 256; do
    bench -u 1000 -c $C -w sync
    bench -u 10000 -c $C -w sync
    bench -u 10000 -c $C -w sync --sync-from random
done
stop
for C in 64 256; do
    start
    bench -u 1000 -c $C -w send
    bench -u 10000 -c $C -w send
    stop
done
start
bench -u 10000 -c 256 -w rw --readers 32
bench -u 10000 -c 64 -w rw --readers 16
stop
say "done"
