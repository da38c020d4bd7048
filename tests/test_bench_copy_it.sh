#!/bin/bash
# test_bench_copy_it: tools/bench-db.sh copy leaves its copy in the page cache the way SQLite's
# own page-sized writes leave a database, in 4 KiB folios, not in the large folios of a file
# written in big chunks (docs/benchmarks.md, "Issue 15: the bench's copies and the page cache's
# folios": on a copy made with cp, sends were 7-19 % slower at C=64).
#
# usage: tests/test_bench_copy_it.sh GIM_FOLIOS [REPO]
#
# The control comes first: the same file copied with cp must show large folios, or this kernel
# and file system do not make them (ext4 before Linux 6.16, tmpfs without huge pages) and the
# test is skipped (77), saying so; so is a run without root, which cannot read frame numbers.
# Then every cached page of bench-db.sh's copy must be in a 4 KiB folio and the copy must be
# byte for byte its source; and gim-diskbound's database file, which stands for a database in its
# runs, must be cached the same way after a run. The files live under the build directory's file system (the one a
# database and its copies would be on), in a directory of their own, removed at the end.
set -u

SELF=$(readlink -f "$0")
FOLIOS=${1:?usage: test_bench_copy_it.sh GIM_FOLIOS [REPO]}
REPO=${2:-$(dirname "$(dirname "$SELF")")}
WORK=$(mktemp -d "$(dirname "$FOLIOS")/bench-copy-XXXXXX") || { echo "FAIL: cannot make a directory beside $FOLIOS"; exit 1; }
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}
# field NAME LINE: the value of NAME=... in a FOLIOS line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# A source database of 4 KiB pages, 16 MiB, written by SQLite and made read-only as
# bench-db.sh build leaves its masters.
mkdir -p "$WORK/src"
sqlite3 "$WORK/src/gim.db" "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;
    CREATE TABLE t (x BLOB);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
    INSERT INTO t SELECT randomblob(4000) FROM n;
    PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null || fail "could not write the source database"
chmod a-w "$WORK/src/gim.db"

# The control: cp's copy, which the kernel may cache in large folios.
cp "$WORK/src/gim.db" "$WORK/control.db"
out=$("$FOLIOS" "$WORK/control.db" 2>&1)
rc=$?
if [ $rc -eq 2 ]; then
    echo "skipped: gim-folios cannot read frame numbers here ($out)"
    exit 77
fi
[ $rc -eq 0 ] || fail "gim-folios on the control: exit $rc: $out"
echo "control (cp): $out"
[ "$(field cached "$out")" -gt 0 ] || fail "the control copy is not in the page cache: $out"
if [ "$(field large "$out")" -eq 0 ]; then
    echo "skipped: this kernel ($(uname -r)) caches cp's copy in 4 KiB folios too:" \
        "nothing to tell bench-db.sh's copy from"
    exit 77
fi

# The copy under test.
BUILD=$(dirname "$(dirname "$FOLIOS")") sh "$REPO/tools/bench-db.sh" copy "$WORK/src" "$WORK/dst" \
    17999 >/dev/null || fail "bench-db.sh copy failed"
cmp -s "$WORK/src/gim.db" "$WORK/dst/gim.db" || fail "the copy differs from its source"
out=$("$FOLIOS" "$WORK/dst/gim.db") || fail "gim-folios on the copy failed"
echo "bench-db.sh copy: $out"
[ "$(field cached "$out")" -gt 0 ] || fail "the copy is not in the page cache: $out"
[ "$(field large "$out")" -eq 0 ] ||
    fail "bench-db.sh copy left $(field large "$out") of $(field cached "$out") cached pages in large folios"

# gim-diskbound's database file, written anew by each run, the same way (an earlier run's file,
# written in 1 MiB chunks, was left in the cache in folios of up to 256 pages). The file is
# first made the old way, so a run that only overwrote it would leave those folios.
DISKBOUND=$(dirname "$FOLIOS")/gim-diskbound
mkdir -p "$WORK/disk"
dd if=/dev/zero of="$WORK/disk/db" bs=1M count=4 status=none
out=$("$FOLIOS" "$WORK/disk/db") || fail "gim-folios on the chunk-written file failed"
[ "$(field large "$out")" -gt 0 ] || fail "the chunk-written control shows no large folios: $out"
"$DISKBOUND" --dir "$WORK/disk" --db-mb 4 --secs 0.2 --batch 4 --wal-bytes 8192 --pages 1 \
    >/dev/null || fail "gim-diskbound failed"
out=$("$FOLIOS" "$WORK/disk/db") || fail "gim-folios on gim-diskbound's file failed"
echo "gim-diskbound's file: $out"
[ "$(field cached "$out")" -gt 0 ] || fail "gim-diskbound's file is not in the page cache: $out"
[ "$(field large "$out")" -eq 0 ] ||
    fail "gim-diskbound left $(field large "$out") of $(field cached "$out") cached pages in large folios"
echo "PASS"
