#!/bin/sh
# bench-db.sh: the benchmark databases of docs/benchmarks.md, built once and
# copied for every run, so that A/B runs start from the same bytes.
#
#   tools/bench-db.sh build DIR MESSAGES [USERS]
#       A fresh DIR/gim.db holding MESSAGES 1:1 messages among USERS users
#       (default 10000, ids 1..USERS), written by gim-bench --preload-direct
#       (seed 1): the rows a send through the protocol stores (message, two
#       inbox rows, user_seq, the idempotency record), WAL checkpointed into
#       the file. DIR/manifest.txt records the command, the counts and the
#       file's sha256. The file is then made read-only: copy it to run on it.
#   tools/bench-db.sh copy SRC DST [PORT]
#       Copies SRC/gim.db to DST/gim.db in page-sized writes, as SQLite writes
#       it (so the page cache holds it as it holds a file SQLite wrote: see
#       "copy)" below), DST emptied first, and writes
#       DST/gim.yaml: the service's defaults, listening on
#       tcp://127.0.0.1:PORT (default 17400), secret "bench-secret", log warn.
#
# BUILD (default build) is the build directory holding tools/gim-bench.
set -eu

BUILD=${BUILD:-build}
die() {
    echo "bench-db.sh: $*" >&2
    exit 2
}

[ $# -ge 1 ] || die "usage: bench-db.sh build DIR MESSAGES [USERS] | copy SRC DST [PORT]"
cmd=$1
shift
case $cmd in
build)
    [ $# -ge 2 ] || die "usage: bench-db.sh build DIR MESSAGES [USERS]"
    dir=$1 msgs=$2 users=${3:-10000}
    bench=$BUILD/tools/gim-bench
    [ -x "$bench" ] || die "$bench is not built"
    [ ! -e "$dir/gim.db" ] || die "$dir/gim.db exists: build into a new directory"
    mkdir -p "$dir"
    # Nothing listens there: gim-bench refuses to write under a live service.
    url="ipc://$dir/none.ipc"
    start=$(date +%s)
    rev=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
    "$bench" --url "$url" --db "$dir/gim.db" -u "$users" --preload "$msgs" --preload-direct \
        --seed 1 --report-storage | tee "$dir/preload.out"
    end=$(date +%s)
    rm -f "$dir/gim.db-wal" "$dir/gim.db-shm" "$dir/gim.db.lock"
    {
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((end - start)) s by: bench-db.sh build $dir $msgs $users"
        echo "binary: $bench (source tree at commit $rev when the build started)"
        cat "$dir/preload.out"
        for t in message inbox idempotency user_seq device; do
            echo "rows $t: $(sqlite3 "$dir/gim.db" "SELECT count(*) FROM $t")"
        done
        echo "max user_seq: $(sqlite3 "$dir/gim.db" 'SELECT max(seq) FROM user_last_seq')"
        echo "min user_seq: $(sqlite3 "$dir/gim.db" 'SELECT min(seq) FROM user_last_seq')"
        sha256sum "$dir/gim.db"
    } >"$dir/manifest.txt"
    rm -f "$dir/preload.out"
    chmod a-w "$dir/gim.db"
    cat "$dir/manifest.txt"
    ;;
copy)
    [ $# -ge 2 ] || die "usage: bench-db.sh copy SRC DST [PORT]"
    src=$1 dst=$2 port=${3:-17400}
    [ -f "$src/gim.db" ] || die "no $src/gim.db"
    [ ! -s "$src/gim.db-wal" ] || die "$src/gim.db-wal is not empty: the copy would miss it"
    mkdir -p "$dst"
    rm -f "$dst/gim.db" "$dst/gim.db-wal" "$dst/gim.db-shm" "$dst/gim.db.lock"
    # Page by page, as SQLite writes the file: on Linux 6.16+ ext4 caches a file in
    # folios as large as the writes that made it, and cp's big writes left the copy
    # in 64 KiB folios (a file SQLite grew is in 4 KiB ones: tools/gim-folios), where
    # each 4 KiB page a checkpoint writes back costs ext4 a walk of the folio's 16
    # block buffers: sends were 7-19 % slower at C=64 (docs/benchmarks.md, "Issue 15:
    # the bench's copies and the page cache's folios").
    psz=$(od -An -tu1 -j16 -N2 "$src/gim.db" | awk '{ p = $1 * 256 + $2; print p == 1 ? 65536 : p }')
    dd if="$src/gim.db" of="$dst/gim.db" bs="$psz" status=none
    chmod u+w "$dst/gim.db"
    cat >"$dst/gim.yaml" <<YAML
listen: ["tcp://127.0.0.1:$port"]
publish: ["ipc://$dst/pub.ipc"]
http: ""
database: {path: "$dst/gim.db"}
auth: {secret: "bench-secret"}
log: {level: warn}
YAML
    echo "bench-db.sh: $dst/gim.db ($(du -h "$dst/gim.db" | cut -f1)), $dst/gim.yaml on tcp://127.0.0.1:$port"
    ;;
*)
    die "unknown command $cmd (build or copy)"
    ;;
esac
