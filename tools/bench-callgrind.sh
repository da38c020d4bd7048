#!/bin/bash
# Instructions per request of gim-logic (user space), the method of docs/benchmarks.md
# ("Issue 16", "Issue 17"): a fresh SQLite database, the service under callgrind, a warm-up
# bench, counters zeroed, a 10 s bench, a dump, divided by gim_requests_total's change.
# usage: tools/bench-callgrind.sh GIM_LOGIC_BIN GIM_BENCH_BIN WORKLOAD(send|sync|...) [BENCH_ARG...]
# (BENCH_ARGs go to both gim-bench runs, e.g. --group-size 50 for -w group with its 100 users)
# Prints one line: requests, instructions, per request, the load average and the run's
# directory (kept: callgrind_annotate its cg.out.PID.1 for a per-function view).
set -e
if [ $# -lt 3 ]; then
    sed -n 2,8p "$0" >&2
    exit 2
fi
BIN=$1; BENCH=$2; W=$3
shift 3
D=$(mktemp -d /tmp/gim-callgrind-XXXXXX)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > $D/gim.yaml <<EOT
listen: ["ipc://$D/rep.ipc"]
publish: ["ipc://$D/pub.ipc"]
http: "http://127.0.0.1:$PORT"
database: {path: "$D/gim.db"}
auth: {secret: "cg-secret"}
log: {level: warn}
EOT
cd $D
valgrind --tool=callgrind --callgrind-out-file=$D/cg.out.%p $BIN --config $D/gim.yaml 2>$D/vg.log &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT # a failed bench must not leave the service running
for i in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/metrics >/dev/null 2>&1 && break; sleep 0.5; done
$BENCH --url ipc://$D/rep.ipc --db $D/gim.db --secret cg-secret -w $W -u 100 -c 16 -t 3 "$@" >$D/warm.txt 2>&1
req() { curl -s http://127.0.0.1:$PORT/metrics | awk '/^gim_requests_total/ {s+=$NF} END {printf "%d", s}'; }
callgrind_control -z $VPID >/dev/null
R0=$(req)
$BENCH --url ipc://$D/rep.ipc --db $D/gim.db --secret cg-secret -w $W -u 100 -c 16 -t 10 --warmup 0 "$@" >$D/run.txt 2>&1
R1=$(req)
callgrind_control -d $VPID >/dev/null
sleep 1
F=$(ls -t $D/cg.out.* | head -1)
IR=$(grep -E '^(summary|totals):' $F | head -1 | awk '{print $2}')
kill $VPID; wait $VPID 2>/dev/null || true
N=$((R1-R0))
echo "$W requests=$N instructions=$IR per_request=$((IR/N)) load=$(cut -d' ' -f1-3 /proc/loadavg) dir=$D"
