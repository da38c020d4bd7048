#!/usr/bin/env bash
# Bytes per stored 1:1 message written through the protocol (docs/benchmarks.md,
# "Storage per message"). Starts gim-logic on a fresh database in DIR, sends
# WARMUP messages with gim-bench (the tables get past their first pages), stops
# the service and checkpoints the WAL into the file (TRUNCATE), then sends N
# more and does the same. The figure is the growth of the database file over
# those N messages, divided by N; the used pages ((page_count - freelist) x
# page_size) give the same figure, and dbstat shows where the bytes are.
#
#   tools/bench-storage.sh [BUILD_DIR] [DIR] [PORT] [WARMUP] [N] [USERS]
#   defaults:              build       /tmp/gim-storage 17431 100000 200000 1000
set -euo pipefail
bld=${1:-build} dir=${2:-/tmp/gim-storage} port=${3:-17431}
warmup=${4:-100000} n=${5:-200000} users=${6:-1000}
rm -rf "$dir" && mkdir -p "$dir"
cat > "$dir/gim.yaml" <<YAML
listen: ["tcp://127.0.0.1:$port"]
publish: ["ipc://$dir/pub.ipc"]
http: ""
database: {path: "$dir/gim.db"}
auth: {secret: "bench-secret"}
log: {level: warn}
YAML
pid=
start() { "$bld/gim-logic" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!; sleep 1; }
stop() { kill "$pid"; wait "$pid" || true; }
q() { sqlite3 "$dir/gim.db" "$1"; }
measure() {
  q 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null
  echo "$(q 'SELECT count(*) FROM message') $(stat -c %s "$dir/gim.db") $(q "SELECT (p.page_count - f.freelist_count) * s.page_size FROM pragma_page_count p, pragma_freelist_count f, pragma_page_size s")"
}
bench() { "$bld/tools/gim-bench" --url "tcp://127.0.0.1:$port" --db "$dir/gim.db" --secret bench-secret \
  -u "$users" -c 64 --preload "$1" -w none >/dev/null 2>>"$dir/bench.log"; }
start; bench "$warmup"; stop
read -r m1 f1 u1 < <(measure)
start; bench "$n"; stop
read -r m2 f2 u2 < <(measure)
echo "STORAGE_GROWTH messages=$m1->$m2 file_bytes=$f1->$f2 used_bytes=$u1->$u2" \
  "file_bytes_per_message=$(echo "scale=1; ($f2 - $f1) / ($m2 - $m1)" | bc)" \
  "used_bytes_per_message=$(echo "scale=1; ($u2 - $u1) / ($m2 - $m1)" | bc)"
echo "table pages cells payload_bytes unused_bytes bytes_per_message"
q "SELECT name, count(*), sum(ncell), sum(payload), sum(unused), round(sum(pgsize) * 1.0 / $m2, 1)
   FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC LIMIT 6" | tr '|' ' '
