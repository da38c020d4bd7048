#!/usr/bin/env bash
# bench-targets.sh: every figure of issue 15's targets in one sitting, on one
# build (docs/benchmarks.md, "Where the targets stand"). Runs, in this order:
#   sends, 10,000 users, C=64 (RUNS times) and C=256 (2), on the 1M and 10M copies;
#   syncs of the newest page and from a random seq, C=64 (2 each), both copies;
#   reads at 1,000/s beside 192 saturating senders (bench-reads-beside-sends.sh, 2);
#   memory at 10M with 10,000 signed-in devices after MEM_SECS of mixed load
#   (bench-memory.sh, defaults);
#   bytes per 1:1 message written through the protocol (bench-storage.sh).
# Every run starts the service with its defaults on a fresh page-by-page copy
# (bench-db.sh copy), so no run inherits another's writes or page cache state.
# Each bench line is preceded by the time and load average; a summary of
# every row follows at the end (rate (p99 ms) per run, and the run's cores busy).
#
#   tools/bench-targets.sh OUT_LOG
#   env: BIN (build), DATA (/work/bench-data), M1 (1m-0009), M10 (10m-0009),
#        RUNS (3), MEM_SECS (300), PORT (17480), WORK (/tmp/gim-targets)
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: bench-targets.sh OUT_LOG" >&2; exit 2; }
log=$1
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-build} DATA=${DATA:-/work/bench-data} M1=${M1:-1m-0009} M10=${M10:-10m-0009}
RUNS=${RUNS:-3} MEM_SECS=${MEM_SECS:-300} PORT=${PORT:-17480} WORK=${WORK:-/tmp/gim-targets}
: >"$log"
say() { echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) | $*" | tee -a "$log"; }

# one ROW: a fresh copy of SIZE, the service on it, one gim-bench run
run() {
    local row=$1 size=$2
    shift 2
    local d=$WORK/run pid
    "$here/bench-db.sh" copy "$DATA/$size" "$d" "$PORT" >/dev/null || exit 1
    "$BIN/gim-logic" --config "$d/gim.yaml" 2>>"$d/server.log" &
    pid=$!
    sleep 1.5
    say "$row: gim-bench $*"
    "$BIN/tools/gim-bench" --url "tcp://127.0.0.1:$PORT" --db "$d/gim.db" --secret bench-secret \
        --server-pid "$pid" -t 10 --warmup 1 -u 10000 "$@" 2>>"$d/bench.err" |
        grep '^RESULT' | sed "s/^RESULT/ROW $row/" | tee -a "$log"
    kill "$pid"
    wait "$pid" || say "service exit $?"
}

say "bench-targets: bin $BIN ($(git -C "$here" rev-parse --short HEAD 2>/dev/null)), 1M $M1, 10M $M10"
for size in "$M1" "$M10"; do
    for _ in $(seq "$RUNS"); do run "send-c64-$size" "$size" -c 64 -w send; done
    for _ in 1 2; do run "send-c256-$size" "$size" -c 256 -w send; done
    for _ in 1 2; do run "sync-newest-$size" "$size" -c 64 -w sync; done
    for _ in 1 2; do run "sync-random-$size" "$size" -c 64 -w sync --sync-from random; done
done
for _ in 1 2; do
    say "reads-beside-sends: bench-reads-beside-sends.sh 1000"
    GIM_BENCH=$BIN/tools/gim-bench DIR=$WORK/rbs PORT=$PORT \
        "$here/bench-reads-beside-sends.sh" "$BIN/gim-logic" "$DATA/$M1" 1000 |
        sed 's/^\(READS\|SENDS\)/ROW reads-beside-sends \1/' | tee -a "$log"
done
say "memory: bench-memory.sh 10M $MEM_SECS s mixed"
GIM_BENCH=$BIN/tools/gim-bench "$here/bench-memory.sh" "$BIN/gim-logic" "$DATA/$M10/gim.db" \
    "$WORK/mem" "$PORT" '' "$MEM_SECS" mixed | grep -E '^(MEM|RESULT|DB_MAPPINGS)' |
    sed 's/^/ROW memory /' | tee -a "$log"
say "storage: bench-storage.sh"
"$here/bench-storage.sh" "$BIN" "$WORK/storage" "$PORT" | sed 's/^/ROW storage /' | tee -a "$log"
say "done"

# The summary: each row's runs as rate (p99 ms) [cores busy].
echo "## summary" | tee -a "$log"
awk '
    $1 == "ROW" && $3 ~ /^workload=/ {
        row = $2; r = ""; p = ""; c = ""
        for (i = 3; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "ops_per_s") r = int(kv[2] + 0.5)
            if (kv[1] == "p99_ms") p = kv[2]
            if (kv[1] == "cpus_busy") c = kv[2]
        }
        if (!(row in seen)) { seen[row] = 1; order[++n] = row }
        runs[row] = runs[row] (runs[row] == "" ? "" : "; ") r " (" p ") [" c "]"
    }
    $1 == "ROW" && $2 == "reads-beside-sends" {
        r = ""; p = ""
        for (i = 4; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "ops_per_s") r = int(kv[2] + 0.5)
            if (kv[1] == "p99_ms") p = kv[2]
        }
        row = "reads-beside-sends " $3
        if (!(row in seen)) { seen[row] = 1; order[++n] = row }
        runs[row] = runs[row] (runs[row] == "" ? "" : "; ") r " (" p ")"
    }
    $1 == "ROW" && $2 == "memory" && $3 == "MEM" && $4 == "end" { mem = $0 }
    $1 == "ROW" && $2 == "storage" && $3 == "STORAGE_GROWTH" { st = $0 }
    END {
        for (i = 1; i <= n; i++) print "| " order[i] " | " runs[order[i]] " |"
        print mem
        print st
    }' "$log" | tee -a "$log.summary"
cat "$log.summary" >>"$log"
rm -f "$log.summary"
