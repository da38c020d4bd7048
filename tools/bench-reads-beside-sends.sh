#!/usr/bin/env bash
# The reads' latency while sends saturate the writer, the reads arriving over
# connections of their own, as from other gateways (docs/benchmarks.md, "Issue
# 15: the reads' latency while sends saturate"). `gim-bench -w rw` runs both
# over one connection from one process, so a read there also waits behind the
# bench's own handling of each wave of send replies; this separates them.
#
#   tools/bench-reads-beside-sends.sh GIM_LOGIC MASTER_DIR READS_PER_S [SENDERS]
#   e.g. tools/bench-reads-beside-sends.sh build/gim-logic /work/bench-data/1m-0009 1000
#
# One service on a copy of MASTER_DIR (bench-db.sh copy; its users 1..10000
# hold the history). gim-bench A sends 1:1 in a closed loop with SENDERS
# contexts (192: C=256 less the 64 readers of -w rw) as users 10001..20000,
# so that its sign-ins do not take over B's sessions. Once A has signed in,
# gim-bench B syncs the newest page of users 1..10000 at READS_PER_S (an open
# loop, --rate, 32 contexts, 2 s of warm-up, SECS measured), and A runs on
# until after B is done. SENDERS=0: B alone, the same reads on an idle writer.
# Prints both RESULT lines. TOOL=loadgen runs both A and B with
# tools/gim-loadgen.mjs instead (the same shapes, its --rate open loop; its
# RESULT lines lose their tool= field). GIM_BENCH (default
# build/tools/gim-bench), DIR (/tmp/gim-rbs), PORT (17497), SECS (10); YAML is
# appended to the config.
set -uo pipefail
[ $# -ge 3 ] || {
  echo "usage: bench-reads-beside-sends.sh GIM_LOGIC MASTER_DIR READS_PER_S [SENDERS]" >&2
  exit 2
}
bin=$1 master=$2 rate=$3 senders=${4:-192}
here=$(cd "$(dirname "$0")" && pwd)
bench=${GIM_BENCH:-build/tools/gim-bench}
dir=${DIR:-/tmp/gim-rbs} port=${PORT:-17497} secs=${SECS:-10} tool=${TOOL:-bench}
case $tool in
bench) load() { "$bench" "$@"; } ;;
loadgen) load() { node "$here/gim-loadgen.mjs" "$@"; } ;;
*) echo "bench-reads-beside-sends.sh: TOOL must be bench or loadgen, not $tool" >&2; exit 2 ;;
esac
"$here/bench-db.sh" copy "$master" "$dir" "$port" >/dev/null || exit 2
[ -z "${YAML:-}" ] || printf '%s\n' "$YAML" >>"$dir/gim.yaml"
"$bin" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!
trap 'kill $pid 2>/dev/null' EXIT
sleep 2
common=(--url "tcp://127.0.0.1:$port" --db "$dir/gim.db" --secret bench-secret -u 10000)
apid=
if [ "$senders" -gt 0 ]; then
  # B's sign-ins (~5 s here), warm-up and window, with room to spare.
  load "${common[@]}" --user-base 10001 --gateway gw-sends -w send -c "$senders" \
    --warmup 1 -t $((secs + 20)) >"$dir/sends.out" 2>"$dir/sends.err" &
  apid=$!
  for _ in $(seq 600); do
    grep -q "signed in" "$dir/sends.err" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "signed in" "$dir/sends.err" || { echo "the senders did not sign in" >&2; exit 1; }
fi
load "${common[@]}" --user-base 1 --gateway gw-reads -w sync -c 32 --rate "$rate" \
  --warmup 2 -t "$secs" 2>"$dir/reads.err" | grep '^RESULT' | sed 's/^RESULT\( tool=gim-loadgen\)\?/READS/'
if [ -n "$apid" ]; then
  kill -0 "$apid" 2>/dev/null || echo "warning: the senders ended before the reads did" >&2
  wait "$apid"
  grep '^RESULT' "$dir/sends.out" | sed 's/^RESULT\( tool=gim-loadgen\)\?/SENDS/'
fi
