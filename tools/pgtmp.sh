#!/usr/bin/env bash
# A throw-away PostgreSQL 15 for tests, CI and benchmarks: Debian's server binaries, a fresh
# cluster in a directory, a free TCP port on 127.0.0.1, trust authentication, gone after stop.
#
#   tools/pgtmp.sh start DIR   initdb + pg_ctl start; prints the URL on stdout (only that:
#                              url=$(tools/pgtmp.sh start DIR)) and writes it to DIR/url:
#                                postgresql://postgres@127.0.0.1:PORT/postgres
#                              When DIR already holds a running server, prints its URL and
#                              exits 0 (ctest --repeat runs a fixture's setup test again); a
#                              stale one (its server gone) is removed and started afresh.
#   tools/pgtmp.sh stop DIR    stops the server (fast, then immediate) and removes DIR.
#                              Idempotent: no DIR, nothing to do, exit 0. It refuses a DIR
#                              that pgtmp.sh did not make.
#   tools/pgtmp.sh status DIR  exit 0 and the URL if the server in DIR runs, else exit 1.
#   tools/pgtmp.sh crash DIR [SECONDS]
#                              a crash of the server in DIR: every server process killed
#                              (SIGKILL, no shutdown checkpoint, connections cut), down for
#                              SECONDS (default 1), then started again on the same cluster and
#                              port, recovering from its WAL as after a power loss. For tests
#                              of what a client of the database sees across a crash.
#   tools/pgtmp.sh bins        the server programs it runs, one a line (tools/setup.sh checks
#                              that they come from the packages it installs).
#
# Environment:
#   PGTMP_BINDIR   the server programs (default /usr/lib/postgresql/15/bin: Debian's
#                  postgresql-15 package)
#   PGTMP_PORT     a fixed port instead of a free one (an error if it is taken)
#   PGTMP_USER     whom the server runs as when pgtmp.sh runs as root (default nobody)
#   PGTMP_CONF     extra postgresql.conf lines, e.g. PGTMP_CONF='fsync = off' for a fast
#                  scratch server whose durability nobody measures
#
# Who runs it: initdb and postgres refuse to run as root. Run as root (CI, the fresh-machine
# check), it runs them as PGTMP_USER (nobody: base-passwd creates it on every Debian) with
# setpriv, which needs no PAM and no login shell. Run as anyone else, as that user.
#
# Where: the cluster is DIR/data, with the server's unix socket and its log (DIR/data/log) in
# it. When the server's user cannot reach DIR (CI builds under /root, mode 700, which nobody
# cannot enter) or DIR's path is too long for a unix socket, the cluster goes to a fresh
# /tmp/gim-pgtmp.XXXXXX and DIR/data is a symbolic link to it; stop removes both.
#
# Settings (DIR/data/pgtmp.conf), chosen for tests on a small shared machine:
#   fsync, synchronous_commit, full_page_writes: the defaults (on). "Acknowledged means
#     durable" is what the crash test and the SQLite/PostgreSQL benchmarks compare; a server
#     that does not flush would make both say more than is true. initdb alone runs with
#     --no-sync: a cluster that a machine crash destroys anyway need not be flushed at birth.
#   shared_buffers = 32MB: many small databases, two cores, up to eight builds at once.
#   max_connections = 300: three gim-logic instances x (writer + 4 workers + 2 spare) = 21
#     per multi-instance test, times ctest -j6, plus the tests' own connections, with room.
#   listen_addresses = 127.0.0.1 only; trust authentication (local and 127.0.0.1 only).
#   lc_messages = C, no locale, UTF8: error texts and sorting the same on every machine.
#   log_min_duration_statement, log_lock_waits: slow statements and lock waits go to the log
#     (deadlock hunting), which start prints the tail of when the server does not come up.
set -euo pipefail

BINDIR=${PGTMP_BINDIR:-/usr/lib/postgresql/15/bin}
SUPERUSER=postgres

die() {
    echo "pgtmp.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DIR | stop DIR | status DIR | crash DIR [SECONDS] | bins" >&2
    exit 2
}

bins() {
    local b
    for b in initdb pg_ctl postgres; do echo "$BINDIR/$b"; done
}

need_bins() {
    local b
    for b in $(bins); do
        [[ -x $b ]] || die "$b not found: install PostgreSQL 15's server, Debian package" \
            "postgresql-15 (apt-get install postgresql-15, or tools/setup.sh all)," \
            "or set PGTMP_BINDIR to the directory holding initdb, pg_ctl and postgres"
    done
}

# as_server CMD...: runs CMD as the server's user (see the header), in a clean environment.
as_server() {
    local env=(env -i PATH=/usr/bin:/bin LC_ALL=C TZ=UTC)
    if [[ $(id -u) -eq 0 ]]; then
        setpriv --reuid="$RUN_USER" --regid="$RUN_GROUP" --clear-groups "${env[@]}" \
            HOME=/ USER="$RUN_USER" "$@"
    else
        "${env[@]}" HOME="${HOME:-/}" USER="$(id -un)" "$@"
    fi
}

server_user() {
    if [[ $(id -u) -eq 0 ]]; then
        RUN_USER=${PGTMP_USER:-nobody}
        id -u "$RUN_USER" >/dev/null 2>&1 ||
            die "user $RUN_USER does not exist (postgres refuses to run as root; set PGTMP_USER to an unprivileged user)"
        [[ $(id -u "$RUN_USER") -ne 0 ]] || die "PGTMP_USER=$RUN_USER is root; postgres refuses to run as root"
        RUN_GROUP=$(id -g "$RUN_USER")
        command -v setpriv >/dev/null 2>&1 || die "setpriv not found (Debian package util-linux)"
    else
        RUN_USER=$(id -un)
        RUN_GROUP=$(id -g)
    fi
}

# Is TCP port $1 bound on this machine (any address, IPv4 or IPv6, state LISTEN)?
port_listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" 'NR > 1 && substr($2, length($2) - 4) == p && $4 == "0A" { f = 1 }
        END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# A port below the kernel's ephemeral range (32768-60999 on Linux), where outgoing
# connections do not take it from under us, and not listening now.
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM % 12000)))
        port_listening "$p" || {
            echo "$p"
            return 0
        }
    done
    die "no free TCP port found in 20000-31999"
}

# The state file DIR/pgtmp.env: CLUSTER (the real cluster directory), PORT, RUN_USER.
load_state() {
    local dir=$1
    [[ -f $dir/pgtmp.env ]] || return 1
    CLUSTER=$(sed -n 's/^CLUSTER=//p' "$dir/pgtmp.env")
    PORT=$(sed -n 's/^PORT=//p' "$dir/pgtmp.env")
    [[ -n $CLUSTER && -n $PORT ]]
}

running() {
    [[ -f $CLUSTER/postmaster.pid ]] || return 1
    local pid
    pid=$(head -n 1 "$CLUSTER/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

url_for() { echo "postgresql://$SUPERUSER@127.0.0.1:$1/postgres"; }

# stop_dir DIR: stops the server in DIR (if any) and removes DIR and the cluster.
stop_dir() {
    local dir=$1
    [[ -e $dir || -L $dir ]] || return 0
    if ! load_state "$dir"; then
        # A DIR that start left half-made (killed between mkdir and the state file) holds
        # nothing but these; anything else is not ours to delete.
        local extra
        extra=$(find "$dir" -mindepth 1 -maxdepth 1 ! -name data ! -name url ! -name pgtmp.env ! -name initdb.log | head -n 1)
        [[ -z $extra && ! -e $dir/data/PG_VERSION ]] ||
            die "$dir was not made by pgtmp.sh (no pgtmp.env); not removing it"
        rm -rf "$dir"
        return 0
    fi
    if running; then
        server_user
        as_server "$BINDIR/pg_ctl" stop -D "$CLUSTER" -m fast -w -t 30 >/dev/null 2>&1 ||
            as_server "$BINDIR/pg_ctl" stop -D "$CLUSTER" -m immediate -w -t 30 >/dev/null 2>&1 || true
        if running; then
            kill -KILL "$(head -n 1 "$CLUSTER/postmaster.pid")" 2>/dev/null || true
            sleep 1
        fi
    fi
    if [[ $CLUSTER != "$dir/data" && $CLUSTER == /tmp/gim-pgtmp.* ]]; then
        rm -rf "$CLUSTER"
    fi
    rm -rf "$dir"
}

cmd_stop() {
    local dir=$1
    if [[ ! -e $dir && ! -L $dir ]]; then
        echo "pgtmp.sh: $dir does not exist: nothing to stop" >&2
        return 0
    fi
    stop_dir "$dir"
    echo "pgtmp.sh: stopped and removed $dir" >&2
}

cmd_status() {
    local dir=$1
    if ! load_state "$dir" || ! running; then
        echo "pgtmp.sh: no server running in $dir" >&2
        return 1
    fi
    url_for "$PORT"
}

cmd_crash() {
    local dir=$1 down=${2:-1} pid
    { load_state "$dir" && running; } || die "no server running in $dir"
    need_bins
    server_user
    # The postmaster and every backend at once, as a machine that loses power: SIGKILL to the
    # postmaster alone would leave its backends serving until they notice. Its processes are
    # the ones whose parent it is (read from /proc: a bare Debian has no procps).
    pid=$(head -n 1 "$CLUSTER/postmaster.pid")
    local victims=("$pid") p rest ppid
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        rest=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        read -r _ ppid _ <<<"$rest"
        if [[ $ppid == "$pid" ]]; then victims+=("$p"); fi
    done
    kill -KILL "${victims[@]}" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null || die "the server (pid $pid) survived SIGKILL"
    sleep "$down"
    local slog=$CLUSTER/server.log
    # pg_ctl removes the stale postmaster.pid itself once no process holds it.
    as_server "$BINDIR/pg_ctl" start -D "$CLUSTER" -l "$slog" -w -t 60 -o "-p $PORT" \
        >/dev/null 2>&1 || {
        tail -n 20 "$slog" >&2 || true
        die "the server did not come back after the crash"
    }
    echo "pgtmp.sh: crashed and restarted the server in $dir (port $PORT)" >&2
}

cmd_start() {
    local dir=$1
    need_bins
    server_user
    if [[ -e $dir ]]; then
        if load_state "$dir" && running; then
            echo "pgtmp.sh: already running in $dir" >&2
            url_for "$PORT"
            return 0
        fi
        if [[ -f $dir/pgtmp.env ]]; then
            echo "pgtmp.sh: $dir holds a stopped server: removing it, starting afresh" >&2
            stop_dir "$dir"
        elif [[ -n $(ls -A "$dir") ]]; then
            die "$dir exists and is not empty (nor made by pgtmp.sh): give a new or empty directory"
        fi
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    # The cluster: DIR/data if the server's user can write there and the socket path fits
    # (sun_path holds 107 bytes), else a directory of its own in /tmp.
    CLUSTER=$dir/data
    mkdir -p "$CLUSTER"
    [[ $(id -u) -ne 0 ]] || chown "$RUN_USER:$RUN_GROUP" "$CLUSTER"
    chmod 700 "$CLUSTER"
    if ((${#CLUSTER} + 20 > 107)) || ! as_server test -w "$CLUSTER"; then
        rmdir "$CLUSTER"
        CLUSTER=$(mktemp -d /tmp/gim-pgtmp.XXXXXX)
        [[ $(id -u) -ne 0 ]] || chown "$RUN_USER:$RUN_GROUP" "$CLUSTER"
        ln -s "$CLUSTER" "$dir/data"
    fi
    PORT=0
    printf 'CLUSTER=%s\nPORT=%s\nRUN_USER=%s\n' "$CLUSTER" "$PORT" "$RUN_USER" >"$dir/pgtmp.env"
    # From here on a failure leaves nothing behind.
    trap 'stop_dir "$dir"' EXIT

    # initdb wants an empty directory: its output goes to DIR (written by this shell).
    if ! as_server "$BINDIR/initdb" -D "$CLUSTER" -U "$SUPERUSER" --auth=trust --no-locale \
        -E UTF8 --no-sync --no-instructions >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2 || true
        die "initdb failed (as user $RUN_USER, in $CLUSTER)"
    fi
    cat >"$CLUSTER/pgtmp.conf" <<EOF
# written by tools/pgtmp.sh (see its header for why)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$CLUSTER'
max_connections = 300
shared_buffers = 32MB
fsync = on
synchronous_commit = on
full_page_writes = on
lc_messages = 'C'
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
log_lock_waits = on
${PGTMP_CONF:-}
EOF
    echo "include = 'pgtmp.conf'" >>"$CLUSTER/postgresql.conf"
    [[ $(id -u) -ne 0 ]] || chown "$RUN_USER:$RUN_GROUP" "$CLUSTER/pgtmp.conf"

    # A free port: another process may take it between the look and postgres' bind, so a
    # failed bind tries another (unless PGTMP_PORT fixed it).
    local attempt slog=$CLUSTER/server.log
    for attempt in 1 2 3 4 5 6 7 8; do
        if [[ -n ${PGTMP_PORT:-} ]]; then
            PORT=$PGTMP_PORT
            ! port_listening "$PORT" || die "port $PORT (PGTMP_PORT) is taken: something listens on it"
        else
            PORT=$(pick_port)
        fi
        sed -i "s/^PORT=.*/PORT=$PORT/" "$dir/pgtmp.env"
        : >"$slog"
        [[ $(id -u) -ne 0 ]] || chown "$RUN_USER:$RUN_GROUP" "$slog"
        if as_server "$BINDIR/pg_ctl" start -D "$CLUSTER" -l "$slog" -w -t 60 -o "-p $PORT" \
            >/dev/null 2>&1; then
            break
        fi
        if grep -q 'could not bind\|Address already in use\|could not create any TCP/IP sockets' "$slog" &&
            [[ -z ${PGTMP_PORT:-} ]] && ((attempt < 8)); then
            echo "pgtmp.sh: port $PORT was taken; trying another" >&2
            continue
        fi
        echo "---- last lines of the server's log ($slog):" >&2
        tail -n 20 "$slog" >&2 || true
        if grep -q 'could not bind\|Address already in use' "$slog"; then
            die "port $PORT is taken: postgres could not bind 127.0.0.1:$PORT"
        fi
        die "the server did not start (as user $RUN_USER, cluster $CLUSTER)"
    done
    ln -sf "$CLUSTER/server.log" "$dir/log" 2>/dev/null || true
    local url
    url=$(url_for "$PORT")
    echo "$url" >"$dir/url.tmp"
    mv "$dir/url.tmp" "$dir/url"
    trap - EXIT
    echo "pgtmp.sh: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') running as $RUN_USER" \
        "in $CLUSTER, port $PORT" >&2
    echo "$url"
}

(($# >= 1)) || usage
case "$1" in
bins)
    (($# == 1)) || usage
    bins
    ;;
start | stop | status)
    (($# == 2)) || usage
    [[ -n $2 ]] || usage
    "cmd_$1" "$2"
    ;;
crash)
    (($# == 2 || $# == 3)) || usage
    [[ -n $2 ]] || usage
    cmd_crash "$2" "${3:-1}"
    ;;
*) usage ;;
esac
