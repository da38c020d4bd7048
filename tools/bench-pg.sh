#!/bin/bash
# bench-pg.sh: SQLite against PostgreSQL, and PostgreSQL with 1, 2 and 3 gim-logic instances
# on one database, in the same run on the same machine (issue 17; docs/benchmarks.md,
# "Issue 17: SQLite against PostgreSQL, one to three instances").
#
#   tools/bench-pg.sh ROUNDS
#
# Once: a throw-away PostgreSQL 15 (tools/pgtmp.sh: fsync, synchronous_commit and
# full_page_writes on, so an acknowledged send is flushed as on SQLite with synchronous: full;
# the settings are logged) and a seed SQLite database (PRELOAD 1:1 messages among U users,
# sent through the protocol, so every user has a full newest page).
# Each round runs the configurations interleaved (sqlite, pg1, pg2, pg3), each on a fresh copy
# of the seed (SQLite: a file copy; PostgreSQL: a new database filled by gimctl pg-import):
# gim-bench -w sync (newest page) then -w send (1:1), C concurrent requests, U users, T
# seconds each. pgN starts N instances on the database, each with its own tcp port and /metrics,
# and gim-bench's --url lists them all (one REQ socket dialing each; nng spreads the requests).
#
# Logged per configuration and workload: the RESULT line, the CPU seconds the service used
# (every instance, plus the PostgreSQL server's processes for pgN) per 1,000 OK requests, and per
# instance from /metrics: write transactions (commits), mean requests per transaction
# (gim_write_batch_size) and whole-batch retries (gim_write_batch_retries_total). Every line
# starts with the time and the load average: the machine is shared, compare within a round.
#
#   env: BIN (build: gim-logic, tools/gimctl, tools/gim-bench), OUT (.: bench-pg.log there),
#        WORK (/tmp/gim-bench-pg), U (1000), C (64), T (10), PRELOAD (60000), PORT (17600),
#        CONFIGS ("sqlite pg1 pg2 pg3": which, in this order, each round; pgNf is pgN with the
#        server's deadlock_timeout at 50 ms instead of PGTMP_CONF's or the default 1 s), PGTMP_CONF (extra
#        postgresql.conf lines for the server, see pgtmp.sh; logged)
set -u
[ $# -eq 1 ] || {
    echo "usage: bench-pg.sh ROUNDS" >&2
    exit 2
}
ROUNDS=$1
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-build} OUT=${OUT:-.} WORK=${WORK:-/tmp/gim-bench-pg}
U=${U:-1000} C=${C:-64} T=${T:-10} PRELOAD=${PRELOAD:-60000} PORT=${PORT:-17600}
CONFIGS=${CONFIGS:-sqlite pg1 pg2 pg3}
LOG=$OUT/bench-pg.log
SEED=$WORK/seed
PIDS=()

say() { echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) | $*" | tee -a "$LOG"; }
die() {
    say "FAILED: $*"
    exit 1
}

cleanup() {
    stop_all
    bash "$HERE/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1
}
trap cleanup EXIT

# The CPU ticks (user + system) of pid, its reaped children's included.
ticks_of() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# CPU ticks of every instance and, on PostgreSQL, of the server and its backends.
cpu_ticks() {
    local sum=0 p
    for p in "${PIDS[@]}" $PG_PIDS; do sum=$((sum + $(ticks_of "$p"))); done
    echo "$sum"
}

pg_pids() {
    local pm
    pm=$(head -n 1 "$WORK/pg/data/postmaster.pid" 2>/dev/null) || return 0
    echo "$pm $(ps -o pid= --ppid "$pm" | tr '\n' ' ')"
}

# config DIR I DBKEYS: gim-logic's config for instance I (tcp port PORT+I, /metrics on PORT+50+I).
config() {
    cat >"$1/gim-$2.yaml" <<YAML
listen: ["tcp://127.0.0.1:$((PORT + $2))"]
publish: ["ipc://$1/pub-$2.ipc"]
http: "http://127.0.0.1:$((PORT + 50 + $2))"
database: {$3}
auth: {secret: "bench-secret"}
log: {level: warn}
YAML
}

# start DIR N: starts instances 0..N-1 of DIR's configs and waits until each answers.
start() {
    local i
    PIDS=()
    for ((i = 0; i < $2; i++)); do
        "$BIN/gim-logic" --config "$1/gim-$i.yaml" 2>>"$1/server-$i.log" &
        PIDS+=($!)
    done
    for ((i = 0; i < $2; i++)); do
        local k
        for ((k = 0; k < 100; k++)); do
            curl -sf "http://127.0.0.1:$((PORT + 50 + i))/healthz" >/dev/null && break
            sleep 0.2
        done
        ((k < 100)) || die "instance $i did not answer /healthz (see $1/server-$i.log)"
    done
}

stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}

urls() {
    local i list=
    for ((i = 0; i < $1; i++)); do list+="${list:+,}tcp://127.0.0.1:$((PORT + i))"; done
    echo "$list"
}

# metric I NAME: instance I's sample NAME from /metrics (0 when absent).
metric() {
    curl -s "http://127.0.0.1:$((PORT + 50 + $1))/metrics" |
        awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print 0}'
}

# bench NAME N DIR WORKLOAD: one gim-bench run against N instances, with CPU and /metrics.
bench() {
    local name=$1 n=$2 dir=$3 wl=$4 i before after line ops
    local -a bsum bcnt bret
    for ((i = 0; i < n; i++)); do
        bsum[i]=$(metric "$i" gim_write_batch_size_sum)
        bcnt[i]=$(metric "$i" gim_write_batch_size_count)
        bret[i]=$(metric "$i" gim_write_batch_retries_total)
    done
    before=$(cpu_ticks)
    line=$("$BIN/tools/gim-bench" --url "$(urls "$n")" --db "$dir/seed.db" --secret bench-secret \
        -u "$U" -c "$C" -t "$T" --warmup 1 -w "$wl" 2>>"$dir/bench.err" | grep '^RESULT')
    after=$(cpu_ticks)
    ops=$(echo "$line" | sed -n 's/.* ops=\([0-9]*\).*/\1/p')
    say "$name $wl"
    echo "$line config=$name instances=$n" | tee -a "$LOG"
    # CPU per 1,000 OK requests, warm-up included in both (ticks are 1/100 s).
    echo "CPU config=$name workload=$wl cpu_s=$(awk -v t=$((after - before)) 'BEGIN{printf "%.2f", t/100}')" \
        "cpu_ms_per_op=$(awk -v t=$((after - before)) -v o="${ops:-0}" -v s="$T" \
            'BEGIN{ if (o > 0) printf "%.3f", t * 10 / (o * (s + 1) / s); else print "n/a" }')" |
        tee -a "$LOG"
    for ((i = 0; i < n; i++)); do
        local s c r
        s=$(($(metric "$i" gim_write_batch_size_sum) - bsum[i]))
        c=$(($(metric "$i" gim_write_batch_size_count) - bcnt[i]))
        r=$(($(metric "$i" gim_write_batch_retries_total) - bret[i]))
        echo "BATCH config=$name workload=$wl instance=$i commits=$c requests=$s" \
            "mean_batch=$(awk -v s="$s" -v c="$c" 'BEGIN{ if (c > 0) printf "%.1f", s/c; else print 0 }')" \
            "retries=$r" | tee -a "$LOG"
    done
}

mkdir -p "$WORK" "$OUT"
rm -rf "${WORK:?}"/*
say "bench-pg: $ROUNDS rounds, U=$U C=$C T=$T s, seed $PRELOAD messages, configs $CONFIGS, bin $BIN"

# The PostgreSQL server and what it promises about a commit.
PG_URL=$(bash "$HERE/pgtmp.sh" start "$WORK/pg" 2>>"$LOG") || die "pgtmp.sh start"
say "PostgreSQL at $PG_URL: $(psql -X -At "$PG_URL" -c "SELECT string_agg(name || '=' || \
current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('server_version', 'fsync', \
'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers', 'commit_delay', \
'max_connections', 'deadlock_timeout')")${PGTMP_CONF:+ (PGTMP_CONF: $PGTMP_CONF)}"

# The seed: PRELOAD sends through the protocol on SQLite.
mkdir -p "$SEED"
config "$SEED" 0 "path: \"$SEED/gim.db\""
start "$SEED" 1
"$BIN/tools/gim-bench" --url "$(urls 1)" --db "$SEED/gim.db" --secret bench-secret -u "$U" \
    -c "$C" --preload "$PRELOAD" -w none 2>>"$SEED/bench.err" | tee -a "$LOG"
stop_all
say "seed: $(sqlite3 "$SEED/gim.db" 'SELECT count(*) FROM message') messages," \
    "$(sqlite3 "$SEED/gim.db" 'SELECT min(seq) || ".." || max(seq) FROM user_last_seq') seqs per user"

PG_PIDS=
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r"
    for cfg in $CONFIGS; do
        d=$WORK/r$r-$cfg
        mkdir -p "$d"
        cp "$SEED/gim.db" "$d/seed.db" # gim-bench reads the users' seqs from it (sync)
        if [ "$cfg" = sqlite ]; then
            # page-sized writes, as SQLite writes it (bench-db.sh copy: the page cache's folios)
            sh "$HERE/bench-db.sh" copy "$SEED" "$d" >/dev/null
            config "$d" 0 "path: \"$d/gim.db\""
            n=1
            PG_PIDS=
        else
            n=${cfg#pg}
            n=${n%f}
            db=bench_r${r}_$cfg
            # pgNf: the same with deadlock_timeout = 50ms (the server's default is 1 s)
            if [ "$cfg" != "${cfg%f}" ]; then
                psql -X -q "$PG_URL" -c "ALTER SYSTEM SET deadlock_timeout = '50ms'" \
                    -c "SELECT pg_reload_conf()" >/dev/null || die "deadlock_timeout"
            else
                psql -X -q "$PG_URL" -c "ALTER SYSTEM RESET deadlock_timeout" \
                    -c "SELECT pg_reload_conf()" >/dev/null || die "deadlock_timeout"
            fi
            sleep 0.5
            say "$cfg: deadlock_timeout $(psql -X -At "$PG_URL" -c "SHOW deadlock_timeout")"
            url=${PG_URL%/postgres}/$db
            psql -X -q "$PG_URL" -c "CREATE DATABASE $db" || die "createdb $db"
            for ((i = 0; i < n; i++)); do config "$d" "$i" "backend: postgres, url: \"$url\""; done
            start "$d" 1 # applies the schema
            stop_all
            "$BIN/tools/gimctl" --db "$d/seed.db" pg-import --pg "$url" >>"$d/import.log" 2>&1 ||
                die "pg-import (see $d/import.log)"
            psql -X -q "$url" -c "VACUUM ANALYZE" || die "vacuum"
            PG_PIDS=$(pg_pids)
        fi
        start "$d" "$n"
        [ -z "$PG_PIDS" ] || PG_PIDS=$(pg_pids)
        bench "$cfg" "$n" "$d" sync
        bench "$cfg" "$n" "$d" send
        stop_all
        if [ "$cfg" != sqlite ]; then
            say "$cfg: $(psql -X -At "$url" -c "SELECT count(*) || ' messages, ' || (SELECT count(*) FROM \
user_seq u WHERE u.seq <> (SELECT count(*) FROM inbox i WHERE i.user_id = u.user_id)) || \
' users whose inbox is not 1..user_seq' FROM message")"
            psql -X -q "$PG_URL" -c "DROP DATABASE $db WITH (FORCE)"
        fi
    done
done
say "done"
