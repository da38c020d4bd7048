#!/usr/bin/env bash
# Where one request's cost goes, thread by thread (docs/benchmarks.md, "Issue
# 15: where a send's time goes"): copies a bench database (bench-db.sh copy),
# starts gim-logic on the copy, runs one gim-bench workload, and prints per
# request, for each kind of thread (the writer, the checkpointer, the workers,
# nng's threads): CPU µs, voluntary and involuntary context switches, bytes
# and calls of read and write (/proc/PID/task/*/{stat,status,io}, before and
# after the run, warm-up included).
#
#   tools/bench-threads.sh GIM_LOGIC MASTER_DIR 'DB_KEYS' [gim-bench options]
#   e.g. tools/bench-threads.sh build/gim-logic /work/bench-data/1m-0007 '' -u 10000 -c 64 -w send
#        tools/bench-threads.sh build/gim-logic /work/bench-data/10m-0007 ', cache_mb: 128' -w send
#
# OFFCPU=1 also records the scheduler for 1 s in the middle of the run (perf
# sched record -g; root) and prints how the writer thread spent its wall time:
# running, waiting to run (preempted or just woken), and asleep, by the
# kernel path it slept in (fdatasync, futex, pread ...).
# GIM_BENCH (default build/tools/gim-bench), DIR (/tmp/gim-threads), PORT
# (17498), SECS (10) change the rest; YAML, if set, is appended to the
# service's config (e.g. YAML='scheduling: normal').
set -uo pipefail
bin=$1 master=$2 dbkeys=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
bench=${GIM_BENCH:-build/tools/gim-bench}
dir=${DIR:-/tmp/gim-threads} port=${PORT:-17498} secs=${SECS:-10}
"$here/bench-db.sh" copy "$master" "$dir" "$port" >/dev/null || exit 2
[ -z "$dbkeys" ] || sed -i "s|database: {path: \"$dir/gim.db\"}|database: {path: \"$dir/gim.db\"$dbkeys}|" "$dir/gim.yaml"
[ -z "${YAML:-}" ] || printf '%s\n' "$YAML" >>"$dir/gim.yaml"
"$bin" --config "$dir/gim.yaml" 2>>"$dir/server.log" & pid=$!
sleep 2

# One line per thread kind: name cpu_ticks vcsw ivcsw rchar wchar syscr syscw (sums).
snap() {
  for t in /proc/"$pid"/task/*; do
    c=$(cat "$t/comm" 2>/dev/null) || continue
    case $c in gim-writer | gim-checkpoint | gim-worker | nng:*) ;; *) continue ;; esac
    echo "$c" \
      "$(awk '{print $14 + $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "$t/status")" \
      "$(awk '/^(rchar|wchar|syscr|syscw)/ {printf "%s ", $2}' "$t/io")"
  done | awk '{for (i = 2; i <= 8; i++) s[$1, i] += $i; k[$1] = 1}
              END {for (n in k) {printf "%s", n; for (i = 2; i <= 8; i++) printf " %s", s[n, i]; print ""}}' | sort
}
snap >"$dir/threads0"
if [ -n "${OFFCPU:-}" ]; then
  (sleep $((secs / 2 + 1)); perf sched record -g -o "$dir/sched.data" -- sleep 1 >/dev/null 2>&1) & rec=$!
fi
"$bench" --url "tcp://127.0.0.1:$port" --db "$dir/gim.db" --secret bench-secret -t "$secs" --warmup 1 \
  --server-pid "$pid" "$@" 2>>"$dir/bench.log" | grep -E '^(RESULT|SERVER)' | tee "$dir/result"
snap >"$dir/threads1"
ops=$(grep -o ' ops=[0-9]*' "$dir/result" | head -1 | cut -d= -f2)
hz=$(getconf CLK_TCK)
echo "per request (${ops:-0} measured; the warm-up's requests are counted in the numerators too):"
join "$dir/threads0" "$dir/threads1" | awk -v ops="${ops:-1}" -v hz="$hz" '$9 != $2 {
  printf "  %-16s cpu_us %6.1f  vcsw %5.2f  ivcsw %5.2f  read_B %7.0f  written_B %7.0f  reads %5.2f  writes %5.2f\n",
    $1, ($9 - $2) * 1e6 / hz / ops, ($10 - $3) / ops, ($11 - $4) / ops, ($12 - $5) / ops,
    ($13 - $6) / ops, ($14 - $7) / ops, ($15 - $8) / ops}'
if [ -n "${OFFCPU:-}" ]; then
  wait "$rec"
  # perf sched timehist: one line per switch-out of a task, with the time it
  # then spent off the CPU ("wait time", on the next line of the same task)
  # and the kernel stack it left through; the wait belongs to that stack.
  perf sched timehist -i "$dir/sched.data" -g --max-stack 14 2>/dev/null | grep ' gim-writer\[' |
    awk '{
      wait = $4; delay = $5; run += $6
      line = $0
      for (i = 1; i <= 6; i++) sub(/^ *[^ ]+ +/, "", line) # the stack, innermost first
      n = split(line, f, " <- "); st = ""; kept = 0
      for (i = n; i >= 1 && kept < 4; i--) { # the outermost kernel frames name the path
        if (f[i] ~ /unknown|entry_SYSCALL|do_syscall_64|x64_sys_call/) continue
        st = (st == "" ? f[i] : f[i] " <- " st); kept++
      }
      if (have) { w[prev] += wait; total += wait; d += delay }
      prev = (st == "" ? "(user space)" : st); have = 1
    } END {
      printf "writer, 1 s mid-run: running %.0f ms, waiting for a CPU after a wake-up %.0f ms, off the CPU %.0f ms, of which:\n", run, d, total
      for (k in w) printf "  %7.1f ms  %s\n", w[k], k | "sort -rn | head -10"
    }'
fi
kill "$pid"
wait "$pid"
