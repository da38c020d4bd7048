#!/usr/bin/env bash
# What a commit writes, table by table (docs/benchmarks.md, "Issue 15: where
# a send's time goes"): copies a bench database (bench-db.sh copy), starts
# gim-logic on it, runs one gim-bench workload, copies the WAL in the middle
# of the run, and counts the frames of its committed transactions by the
# table (or index) their page belongs to (dbstat of the copy afterwards).
# Every frame is one whole page rewritten, so these are the bytes every
# commit writes and fsyncs, and that the checkpoints copy back.
#
#   tools/bench-walframes.sh GIM_LOGIC MASTER_DIR [gim-bench options]
#   e.g. tools/bench-walframes.sh build/gim-logic /work/bench-data/1m-0007 -u 10000 -c 64 -w send
#
# GIM_BENCH (default build/tools/gim-bench), DIR (/tmp/gim-walframes), PORT
# (17499) change the rest.
set -uo pipefail
bin=$1 master=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
bench=${GIM_BENCH:-build/tools/gim-bench}
dir=${DIR:-/tmp/gim-walframes} port=${PORT:-17499}
"$here/bench-db.sh" copy "$master" "$dir" "$port" >/dev/null || exit 2
"$bin" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!
sleep 2
(sleep 4; cp "$dir/gim.db-wal" "$dir/wal.copy") & cp_pid=$!
"$bench" --url "tcp://127.0.0.1:$port" --db "$dir/gim.db" --secret bench-secret -t 6 --warmup 1 \
  --server-pid "$pid" "$@" 2>>"$dir/bench.log" | grep -E '^RESULT'
wait "$cp_pid"
kill "$pid"
wait "$pid"
psize=$(sqlite3 "$dir/gim.db" 'PRAGMA page_size')
sqlite3 -separator ' ' "$dir/gim.db" 'SELECT pageno, name FROM dbstat' >"$dir/pages"
# The WAL: a 32-byte header (its salts at bytes 16-23), then frames of a
# 24-byte header (page number, database size after a commit or 0, the
# salts) and one page. Frames stop counting at the first whose salts differ
# (left over from before the WAL was last restarted), and after the last
# commit frame (a transaction still being written).
salts=$(od -A n -t u4 --endian=big -j 16 -N 8 "$dir/wal.copy" | tr -s ' ' | sed 's/^ //')
od -A n -t u4 --endian=big -v -j 32 -w$((24 + psize)) "$dir/wal.copy" | awk '{print $1, $2, $3, $4}' |
  awk -v s="$salts" -v psize="$psize" '
    BEGIN { split(s, salt, " ") }
    NR == FNR { name[$1] = $2; next }
    $3 != salt[1] || $4 != salt[2] { exit }
    { t = ($1 in name) ? name[$1] : "(new page)"; pend[t]++; np++
      if ($2 != 0) { for (k in pend) { n[k] += pend[k]; delete pend[k] } frames += np; np = 0; commits++ } }
    END {
      if (!commits) { print "no committed frame in the copied WAL"; exit 1 }
      printf "%d frames of %d bytes in %d commits: %.1f frames a commit\n", frames, psize, commits, frames / commits
      for (k in n) printf "%8d  %5.1f%%  %6.1f a commit  %s\n", n[k], 100 * n[k] / frames, n[k] / commits, k | "sort -rn"
    }' "$dir/pages" -
