#!/bin/bash
# test_bench_targets_summary: tools/bench-targets.sh --summary reads a log's header and ROW
# lines and gives each row its verdict against issue 15's targets, each send row's p99 / mean
# latency and the rate its p99 bound needs, the growth 1M -> 10M of the rows with a limit (from
# their means), memory and storage; a log with no header or no row is refused with exit 2 and a
# message naming it.
#
# usage: tests/test_bench_targets_summary.sh [REPO]
set -u
SELF=$(readlink -f "$0")
REPO=${1:-$(dirname "$(dirname "$SELF")")}
script=$REPO/tools/bench-targets.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check WHAT EXPECTED_LINE FILE
    if ! grep -qxF -- "$2" "$3"; then
        echo "FAIL: $1: no line" >&2
        echo "  $2" >&2
        echo "in:" >&2
        sed 's/^/  /' "$3" >&2
        fail=1
    fi
}

# Rows as bench-targets.sh writes them: gim-bench's RESULT lines renamed ROW <row>, the
# reads-beside-sends script's READS/SENDS lines, bench-memory.sh's MEM line and
# bench-storage.sh's STORAGE_GROWTH line. The sizes are named in the header only.
r() { # r ROW RATE P99 CORES (the row's C from its name: c256 rows 256, the others 64)
    local c=64
    [[ $1 == *-c256-* ]] && c=256
    echo "ROW $1 workload=${1%%-*} c=$c ops=1000 ops_per_s=$2 p50_ms=1.000 p99_ms=$3 p999_ms=20.000 errors=0 cpus_busy=$4 cpus=2"
}
{
    echo "# 11:28:01 load 0.10 0.20 0.30 | bench-targets: bin build (abc1234), 1M small-a, 10M big-b"
    r send-c64-small-a 12000.4 9.500 1.80      # met
    r send-c64-small-a 9999.0 8.000 1.80       # rate missed
    r send-c64-small-a 11000.0 10.001 1.80     # p99 missed
    r send-c256-small-a 16000.0 19.000 1.90
    r sync-newest-small-a 20000.0 5.000 1.95   # met exactly at both bounds
    r sync-random-small-a 10000.0 12.000 1.95
    r send-c64-big-b 9000.0 11.000 1.80
    r send-c64-big-b 9400.0 11.000 1.80
    r sync-newest-big-b 17000.0 6.000 1.90     # mean 17,000 against 20,000: -15 %, met
    r sync-random-big-b 7000.0 16.000 1.90     # -30 %, missed
    # gim-loadgen's rows ("lg:"): its RESULT line without cpus_busy, the same targets
    echo "ROW lg:send-c64-small-a workload=send c=64 conns=1 ops=1000 ops_per_s=10500.0 p50_ms=1.000 p99_ms=9.900 p999_ms=20.000 errors=0 acked=1000 checked=125 check_failed=0 users=10000 secs=10 loadgen_cpu_us_per_op=16.0 server_cpu_us_per_op=86.0"
    echo "ROW lg:send-c64-big-b workload=send c=64 conns=1 ops=1000 ops_per_s=8400.0 p50_ms=1.000 p99_ms=12.000 p999_ms=20.000 errors=0 acked=1000 checked=125 check_failed=0 users=10000 secs=10 loadgen_cpu_us_per_op=16.0"
    echo "ROW reads-beside-sends READS workload=sync c=16 ops=1000 ops_per_s=1000.0 p50_ms=1.0 p99_ms=5.900 p999_ms=9.0 errors=0"
    echo "ROW reads-beside-sends SENDS workload=send c=192 ops=1000 ops_per_s=20255.0 p50_ms=1.0 p99_ms=16.500 p999_ms=30.0 errors=0"
    echo "ROW reads-beside-sends READS workload=sync c=16 ops=1000 ops_per_s=1000.0 p50_ms=1.0 p99_ms=10.500 p999_ms=19.0 errors=0"
    echo "ROW lg:reads-beside-sends READS workload=sync c=32 conns=1 ops=1000 ops_per_s=999.8 p50_ms=2.190 p99_ms=9.638 p999_ms=14.583 errors=0 acked=7000 checked=876 check_failed=0 sync_from=newest avg_page=50.0 rate=1000 backlog_max=10 p50_sent_ms=1.366 p99_sent_ms=8.238"
    echo "ROW lg:reads-beside-sends SENDS workload=send c=192 conns=1 ops=1000 ops_per_s=16278.4 p50_ms=11.161 p99_ms=25.017 p999_ms=39.416 errors=0"
    # C=256 syncs: in the issue's table, with no target of their own
    echo "ROW c256-sync-newest-small-a workload=sync c=256 ops=1000 ops_per_s=11954.0 p50_ms=1.0 p99_ms=50.000 p999_ms=60.0 errors=0"
    echo "ROW memory MEM end VmHWM:180000 VmRSS:172032 RssAnon:52224 RssFile:119808 RssShmem:0  rollup_Rss:172032"
    echo "ROW storage STORAGE_GROWTH messages=1000->101000 file_bytes=1->2 used_bytes=1->2 file_bytes_per_message=196.0 used_bytes_per_message=195.1"
} >"$tmp/log"

if ! bash "$script" --summary "$tmp/log" >"$tmp/out" 2>"$tmp/err"; then
    echo "FAIL: --summary of a good log exited non-zero:" >&2
    cat "$tmp/err" >&2
    fail=1
fi
check "C=64 rows: one met, rate and p99 each missed once" \
    "| send-c64-small-a | 12000 (9.5) [1.80]; 9999 (8.0) [1.80]; 11000 (10.0) [1.80] | met in 1 of 3 |" "$tmp/out"
check "C=256 against 15,000/s and 20 ms" \
    "| send-c256-small-a | 16000 (19.0) [1.90] | met in 1 of 1 |" "$tmp/out"
check "sync met at its bounds" \
    "| sync-newest-small-a | 20000 (5.0) [1.95] | met in 1 of 1 |" "$tmp/out"
check "sync missed" "| sync-random-big-b | 7000 (16.0) [1.90] | met in 0 of 1 |" "$tmp/out"
check "reads beside sends: p99 only" \
    "| reads-beside-sends READS | 1000 (5.9); 1000 (10.5) | met in 1 of 2 |" "$tmp/out"
check "the senders beside them have no target" \
    "| reads-beside-sends SENDS | 20255 (16.5) | no target |" "$tmp/out"
# p99 / mean latency, the mean being C / rate (Little's law): 9.5 x 12000.4 / 64000 = 1.78,
# 8 x 9999 / 64000 = 1.25 and 10.001 x 11000 / 64000 = 1.72; at 1.25-1.78 a p99 of 10 ms
# needs 64 x 1.25 / 10 ms = 7,999 to 64 x 1.78 / 10 ms = 11,400 sends/s. C=256: 19 x 16000 /
# 256000 = 1.1875, so 20 ms needs 256 x 1.1875 / 20 ms = 15,200/s. Syncs and reads get none.
check "C=64 sends: their p99 / mean and the rate the p99 bound needs" \
    "| send-c64-small-a p99 / mean latency | 1.25-1.78 | p99 <= 10 ms needs >= 7999-11400/s at these ratios |" "$tmp/out"
check "C=256 sends: the same with C=256 and 20 ms" \
    "| send-c256-small-a p99 / mean latency | 1.19-1.19 | p99 <= 20 ms needs >= 15200-15200/s at these ratios |" "$tmp/out"
if grep -q '^| sync-.* p99 / mean\|^| reads-.* p99 / mean' "$tmp/out"; then
    echo "FAIL: a sync or reads row got a p99 / mean line (closed-loop sends only)" >&2
    fail=1
fi
check "send growth from the means (11,000 -> 9,200)" \
    "| growth send-c64 1M -> 10M | means 11000 -> 9200: -16.4 % | missed (loss <= 15 %) |" "$tmp/out"
check "sync newest growth" \
    "| growth sync-newest 1M -> 10M | means 20000 -> 17000: -15.0 % | met (loss <= 20 %) |" "$tmp/out"
check "sync random growth" \
    "| growth sync-random 1M -> 10M | means 10000 -> 7000: -30.0 % | missed (loss <= 20 %) |" "$tmp/out"
check "gim-loadgen's row: the same targets, no cores column" \
    "| lg:send-c64-small-a | 10500 (9.9) | met in 1 of 1 |" "$tmp/out"
check "gim-loadgen's p99 / mean: 9.9 x 10500 / 64000 = 1.62, so 10 ms needs 64 x 1.62 / 10 ms" \
    "| lg:send-c64-small-a p99 / mean latency | 1.62-1.62 | p99 <= 10 ms needs >= 10395-10395/s at these ratios |" "$tmp/out"
check "gim-loadgen's growth, apart from gim-bench's" \
    "| growth lg:send-c64 1M -> 10M | means 10500 -> 8400: -20.0 % | missed (loss <= 15 %) |" "$tmp/out"
check "gim-loadgen's reads beside sends: the same p99 target" \
    "| lg:reads-beside-sends READS | 1000 (9.6) | met in 1 of 1 |" "$tmp/out"
check "gim-loadgen's senders beside them: no target" \
    "| lg:reads-beside-sends SENDS | 16278 (25.0) | no target |" "$tmp/out"
check "C=256 syncs are measured, not held to the C=64 sync target" \
    "| c256-sync-newest-small-a | 11954 (50.0) | no target |" "$tmp/out"
check "memory in MiB" "| memory at 10M | VmRSS 168.0 MiB, RssAnon 51.0 MiB | met (256 / 128 MiB) |" "$tmp/out"
check "storage" "| storage | 195.1 bytes per message | missed (<= 180) |" "$tmp/out"

# A log that is not one: no header, or a header and no row.
echo "RESULT workload=send ops_per_s=1" >"$tmp/bad"
head -1 "$tmp/log" >"$tmp/empty"
for f in "$tmp/bad" "$tmp/empty" "$tmp/missing"; do
    bash "$script" --summary "$f" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -ne 2 ] || ! grep -q "$(basename "$f")" "$tmp/err"; then
        echo "FAIL: --summary $(basename "$f"): exit $rc (want 2 and a message naming it):" >&2
        cat "$tmp/err" >&2
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
