#!/bin/bash
# test_storage_seam: no SQL and no SQLite/libpq outside the storage layer (issue 17, storage.h).
#
# usage: tests/test_storage_seam.sh [REPO]   (REPO defaults to this script's repository)
#
# Every src/**/*.c and src/**/*.h is read except the storage layer itself: src/storage/,
# src/storage.h, src/store.c, src/store.h, src/pgstore.c, src/pgstore.h. Each violation is
# printed as FILE:LINE: WHAT: the line, and any violation fails the test. A violation is
#   - in code (comments and string literals left out):
#       SQLite: sqlite3, sqlite3_*, SQLITE_*, #include <sqlite3.h>;
#       libpq: PQ*, PGresult, PGconn, PGRES_*, #include <libpq-fe.h>, #include "pgstore.h";
#       the backends' internal headers: #include "storage/sqlite_int.h", "storage/pg_int.h";
#       the statement-level helpers of store.h/pgstore.h: PG_RUN*, STORE_RUN, STORE_RUN2,
#       STORE_ROWS, STORE_EXISTS, STORE_BIND, store_stmt, store_run, store_run2, store_rows,
#       store_bind, store_exec, store_done, store_err, pgstore_*; testing the backend:
#       store_is_pg, STORE_PG, STORE_SQLITE.
#     (store_open/close/errmsg/migrate/check_dir and STORE_INT & co stay usable: they name no SQL.)
#   - SQL text in a string literal: SELECT, INSERT INTO, DELETE FROM, UPDATE [table] SET, or a
#     literal that starts with BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE or PRAGMA. Keywords
#     count in capitals only (the project writes its SQL so), as words. Adjacent literals are read
#     as one, across lines and across the macros between them ("SELECT " ROOM_COLUMNS " FROM"),
#     as C joins them. A comment that names a table or a statement is not a violation.
#
# Before it reads the repository, the test checks its own scanner on fixtures (a clean file with
# the near misses above, a file with one planted violation of each kind, the excluded storage
# files): a scanner that stopped finding things fails here rather than passing everything.
set -u

SELF=$(readlink -f "$0")
REPO=${1:-$(dirname "$(dirname "$SELF")")}

# scan ROOT: prints the violations under ROOT/src, one a line, sorted; returns 0.
scan() {
    local root=$1
    (cd "$root" && find src \( -name '*.c' -o -name '*.h' \) -type f | LC_ALL=C sort |
        grep -Ev '^src/storage/|^src/(storage\.h|store\.c|store\.h|pgstore\.c|pgstore\.h)$' |
        while read -r f; do
            LC_ALL=C awk -v FILE="$f" "$AWK_SCAN" "$f"
        done)
}

# The scanner: a small C lexer (block and line comments, string and char literals with
# escapes, preprocessor includes) that checks each line's code and each group of adjacent
# literals.
# shellcheck disable=SC2016 # the $ are awk's own, not the shell's
AWK_SCAN='
function report(line, what) {
    printf "%s:%d: %s: %s\n", FILE, line, what, trim(src[line])
}
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function flush_group(   i, at, t) {
    if (g_n > 0) {
        t = g_text
        at = 0
        if (match(t, SQL_ANY))
            at = RSTART + (substr(t, RSTART, 1) ~ /[A-Z]/ ? 0 : 1) # past the boundary character
        else if (match(t, SQL_START))
            at = 1
        if (at) {
            # the literal the statement starts in
            for (i = g_n - 1; i > 0 && g_off[i] > at; i--)
                ;
            report(g_line[i], "SQL text")
        }
    }
    g_n = 0
    g_text = ""
    between = ""
}
function check_code(line, code) {
    if (code ~ (B "sqlite3(_[A-Za-z0-9_]*)?" E) || code ~ (B "SQLITE_[A-Z0-9_]+" E))
        report(line, "SQLite call")
    else if (code ~ (B "(PQ[a-z][A-Za-z0-9_]*|PGresult|PGconn|PGRES_[A-Z_]+)" E))
        report(line, "libpq call")
    else if (code ~ (B "(PG_RUN[0-9]*|STORE_RUN2?|STORE_ROWS|STORE_EXISTS|STORE_BIND|store_stmt|store_run2?|store_rows|store_bind|store_exec|store_done|store_err|pgstore_[A-Za-z0-9_]*)" E))
        report(line, "statement-level storage call")
    else if (code ~ (B "(store_is_pg|STORE_PG|STORE_SQLITE)" E))
        report(line, "backend test")
}
BEGIN {
    B = "(^|[^A-Za-z0-9_])"
    E = "([^A-Za-z0-9_]|$)"
    SQL_ANY = B "(SELECT[ \t]|INSERT[ \t]+(OR[ \t]+[A-Z]+[ \t]+)?INTO[ \t]|DELETE[ \t]+FROM[ \t]|UPDATE[ \t]+([A-Za-z_][A-Za-z0-9_.]*[ \t]+)?SET[ \t])"
    SQL_START = "^[ \t]*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)([ \t;]|$)"
    in_block = 0; in_str = 0; g_n = 0; g_text = ""; between = ""
}
{
    src[FNR] = $0
    line = $0
    code = ""
    if (!in_block && !in_str && line ~ /^[ \t]*#[ \t]*include/) {
        flush_group()
        if (line ~ /<sqlite3\.h>/)
            report(FNR, "SQLite header")
        else if (line ~ /<libpq-fe\.h>|"pgstore\.h"/)
            report(FNR, "libpq header")
        else if (line ~ /(sqlite|pg)_int\.h"/)
            report(FNR, "storage-internal header")
        next
    }
    n = length(line)
    for (i = 1; i <= n; i++) {
        c = substr(line, i, 1)
        if (in_block) {
            if (c == "*" && substr(line, i + 1, 1) == "/") { in_block = 0; i++ }
            continue
        }
        if (in_str) {
            if (c == "\\") { s = s c substr(line, i + 1, 1); i++; continue }
            if (c == "\"") {
                in_str = 0
                if (g_n > 0 && between !~ /^[A-Za-z0-9_ \t]*$/)
                    flush_group()
                g_off[g_n] = length(g_text) + 1
                g_line[g_n] = s_line
                g_text = g_text (g_n > 0 ? " " : "") s
                g_n++
                between = ""
                code = code "\"\""
                continue
            }
            s = s c
            continue
        }
        if (c == "/" && substr(line, i + 1, 1) == "*") { in_block = 1; i++; code = code " "; continue }
        if (c == "/" && substr(line, i + 1, 1) == "/") break
        if (c == "\"") { in_str = 1; s = ""; s_line = FNR; continue }
        if (c == "\047") {
            # a char literal: skip to its closing quote
            for (i++; i <= n; i++) {
                c = substr(line, i, 1)
                if (c == "\\") { i++; continue }
                if (c == "\047") break
            }
            code = code "\047\047"
            if (g_n > 0) flush_group()
            continue
        }
        code = code c
        if (g_n > 0) {
            if (c ~ /[A-Za-z0-9_ \t\\]/)
                between = between c
            else
                flush_group()
        }
    }
    if (in_str)
        s = s "\n"
    check_code(FNR, code)
}
END { flush_group() }
'

fail=0

# --- the scanner against fixtures --------------------------------------------------------------
T=$(mktemp -d /tmp/test_storage_seam-XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/src/storage" "$T/src/gateway"
cat >"$T/src/clean.c" <<'EOF'
/* Reads room_message rows: SELECT seq FROM room_message WHERE room_id = ?1 (a comment). */
#include "storage.h"
#include "store.h"
// UPDATE device SET online = 0 -- a line comment, not code
static const char *what = "select a room, then insert a message"; /* lower case: prose */
static const char MSG[] = "cannot SELECTED rows"; /* not the keyword */
static const char Q = '"'; /* a quote in a char literal does not open a string */
int room_sqlite3ish(struct store_conn *c)
{
    log_warn("room page failed", "room=%" PRId64 " error=\"%s\"", 1, store_errmsg(c));
    return storage(c)->room->page(c, STORE_INT(1)) + 'S';
}
/* multi-line comment
   INSERT INTO room_message VALUES (1) and sqlite3_step(st), PQclear(res)
*/
static const char ESC[] = "a \"quoted\" UPDATE word, no SET after the table";
EOF
cat >"$T/src/gateway/clean.h" <<'EOF'
#define NAME "room" /* DELETE FROM x in a comment */
EOF
cat >"$T/src/dirty.c" <<'EOF'
#include <sqlite3.h>
#include <libpq-fe.h>
#include "pgstore.h"
static const char SQL_A[] = "SELECT " COLUMNS " FROM room_message r WHERE r.seq = ?1";
static const char SQL_B[] = "DELETE FROM room_message "
                            "WHERE room_id = ?1";
static const char SQL_C[] =
    "INSERT INTO device (device_id) "
    "VALUES (?1) ON CONFLICT (device_id) DO NOTHING";
static const char SQL_D[] = "WITH t AS (VALUES (1)) "
                            "UPDATE device SET room_id = 0"; static int x = 'a';
static const char PG_E[] = "INSERT INTO room_seq (room_id, seq) VALUES ($1, 0) "
                           "ON CONFLICT (room_id) DO UPDATE SET seq = room_seq.seq";
static const char TX[] = "BEGIN IMMEDIATE";
int f(struct store_conn *c)
{
    sqlite3_stmt *st = store_stmt(c, SQL_A);
    int rc = sqlite3_step(st);
    PGresult *res = NULL;
    e = PG_RUN(c, PG_E, NULL, NULL, STORE_INT(1));
    e = STORE_RUN(c, SQL_B, NULL, STORE_INT(1));
    int v = pgstore_int(res, 0, 0);
    if (store_is_pg(c) || c->backend == STORE_PG) return v;
    return rc == SQLITE_DONE ? PQntuples(res) : store_exec(c, "COMMIT");
}
#include "storage/sqlite_int.h"
EOF
cat >"$T/src/storage/sqlite_room.c" <<'EOF'
static const char SQL_X[] = "DELETE FROM room_message WHERE room_id = ?1";
int g(sqlite3_stmt *st) { return sqlite3_step(st) == SQLITE_DONE; }
EOF
for f in storage.h store.c store.h pgstore.c pgstore.h; do
    cp "$T/src/storage/sqlite_room.c" "$T/src/$f"
done
want=$(LC_ALL=C sort <<'EOF'
src/dirty.c:1: SQLite header
src/dirty.c:2: libpq header
src/dirty.c:3: libpq header
src/dirty.c:4: SQL text
src/dirty.c:5: SQL text
src/dirty.c:8: SQL text
src/dirty.c:11: SQL text
src/dirty.c:12: SQL text
src/dirty.c:14: SQL text
src/dirty.c:17: SQLite call
src/dirty.c:18: SQLite call
src/dirty.c:19: libpq call
src/dirty.c:20: statement-level storage call
src/dirty.c:21: statement-level storage call
src/dirty.c:22: statement-level storage call
src/dirty.c:23: backend test
src/dirty.c:24: SQLite call
src/dirty.c:24: SQL text
src/dirty.c:26: storage-internal header
EOF
)
got=$(scan "$T" | cut -d: -f1-3 | LC_ALL=C sort)
if [ "$got" != "$want" ]; then
    echo "test_storage_seam: the scanner is wrong on its fixtures" >&2
    diff <(echo "$want") <(echo "$got") | sed 's/^/  /' >&2
    echo "  (< expected, > found; full output:)" >&2
    scan "$T" | sed 's/^/    /' >&2
    fail=1
fi

# --- the repository ----------------------------------------------------------------------------
if [ ! -d "$REPO/src" ]; then
    echo "test_storage_seam: no src/ in $REPO" >&2
    exit 1
fi
out=$(scan "$REPO")
if [ -n "$out" ]; then
    echo "$out"
    echo "test_storage_seam: $(echo "$out" | wc -l) line(s) outside the storage layer" \
        "(src/storage/, storage.h, store.[ch], pgstore.[ch]) with SQL or SQLite/libpq calls" >&2
    fail=1
fi
[ $fail = 0 ] && echo "test_storage_seam: no SQL or SQLite/libpq outside the storage layer"
exit $fail
