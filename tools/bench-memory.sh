#!/usr/bin/env bash
# Memory of gim-logic under load (docs/benchmarks.md, "Issue 15: memory with
# the defaults"): copies a database, starts the service on the copy with its
# defaults plus the database keys given, runs one gim-bench workload for 10,000
# signed-in users, and prints /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile,
# RssShmem, KiB) and smaps_rollup at the start, every 30 s and at the end.
#
#   tools/bench-memory.sh GIM_LOGIC SOURCE_DB DIR PORT 'DB_KEYS' SECONDS WORKLOAD [gim-bench options]
#   e.g. tools/bench-memory.sh build/gim-logic /work/bench-data/10m/gim.db /tmp/mem 17747 '' 300 mixed
#        tools/bench-memory.sh build/gim-logic ... ', mmap_mb: 256, cache_mb: 64, reader_cache_mb: 8' 300 mixed
# GIM_BENCH (default build/tools/gim-bench) picks the load generator.
set -uo pipefail
bin=$1 src=$2 dir=$3 port=$4 dbkeys=$5 secs=$6 wl=$7
shift 7
bench=${GIM_BENCH:-build/tools/gim-bench}
[ "$(basename "$src")" = gim.db ] || { echo "bench-memory.sh: SOURCE_DB must be a gim.db" >&2; exit 2; }
# bench-db.sh's copy (page-sized writes: the page cache holds it as it holds a file SQLite wrote)
rm -rf "$dir" && sh "$(dirname "$0")/bench-db.sh" copy "$(dirname "$src")" "$dir" "$port" >/dev/null || exit 2
cat > "$dir/gim.yaml" <<YAML
listen: ["tcp://127.0.0.1:$port"]
publish: ["ipc://$dir/pub.ipc"]
http: ""
database: {path: "$dir/gim.db"$dbkeys}
auth: {secret: "bench-secret"}
log: {level: warn}
YAML
"$bin" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!
sleep 3
mem() {
  echo "MEM $1 $(grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem)' /proc/$pid/status | awk '{printf "%s%s ", $1, $2}')" \
    "$(grep -E '^(Rss|Anonymous|Shared_Clean|Private_Clean)' /proc/$pid/smaps_rollup | awk '{printf "rollup_%s%s ", $1, $2}')"
}
mem start
(while kill -0 "$pid" 2>/dev/null; do sleep 30; mem "+30s"; done) & sampler=$!
echo "LOAD $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" --url "tcp://127.0.0.1:$port" --db "$dir/gim.db" --secret bench-secret -u 10000 -c 64 \
  -t "$secs" -w "$wl" --server-pid "$pid" "$@" 2>>"$dir/bench.log"
echo "LOAD $(cut -d' ' -f1-3 /proc/loadavg)"
mem end
echo "DB_MAPPINGS $(grep -c "$dir/gim.db\$" /proc/$pid/maps)"
kill "$sampler" 2>/dev/null
kill "$pid"; wait "$pid"
