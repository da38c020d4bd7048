#!/usr/bin/env bash
# The PostgreSQL schema (migrations/postgres/) is the SQLite schema's twin.
# The SQLite one is schema/schema.sql (what gim-logic's migrations leave:
# tests/test_store.c checks that, so a new SQLite migration changes it); it is
# loaded into a temp file, migrations/postgres/*.sql are applied in order on a
# throw-away PostgreSQL in a database of their own, and both are listed the
# same way and compared line by line:
#   - every table and view, and every column in order: name, type (SQLite
#     INTEGER = bigint, BLOB = bytea, TEXT = text), NOT NULL, default;
#   - every primary key, every index (name, columns, unique, partial
#     predicate), every foreign key;
#   - message.id hands out ids by itself (an identity on PostgreSQL);
#   - the v_* views show the same rows as text for the same data.
# A SQLite migration without its PostgreSQL twin fails here.
#
# Needs a PostgreSQL server whose user may CREATE DATABASE, found as
# pgtestlib finds it (tests/pgtestlib.h): $GIM_TEST_PG_URL, else the URL in
# $GIM_TEST_PG_DIR/url (the ctest fixture pg sets it); and psql, sqlite3.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GIM_PG_URL=${GIM_TEST_PG_URL:-}
if [[ -z $GIM_PG_URL && -n ${GIM_TEST_PG_DIR:-} && -s $GIM_TEST_PG_DIR/url ]]; then
    GIM_PG_URL=$(cat "$GIM_TEST_PG_DIR/url")
fi
if [[ -z $GIM_PG_URL ]]; then
    echo "FAIL: no test PostgreSQL: run under ctest's pg fixture (ctest -R test_pg_schema_it),"
    echo "  or set GIM_TEST_PG_URL, or GIM_TEST_PG_DIR after tools/pgtmp.sh start DIR" >&2
    exit 1
fi
for p in psql sqlite3; do
    command -v "$p" >/dev/null || {
        echo "FAIL: $p is missing (tools/setup.sh all)" >&2
        exit 1
    }
done
tmp=$(mktemp -d)
db=gimt_schema_$$_$RANDOM
sqlite=$tmp/s.db
cleanup() {
    psql "$GIM_PG_URL" -qAt -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# pg SQL...: runs the SQL read from stdin in the test's database.
pg() {
    { echo "\\connect $db"; cat; } | psql "$GIM_PG_URL" -X -q -At -F '|' -v ON_ERROR_STOP=1
}

# --- both schemas: PostgreSQL's migrations one transaction each, as a runner applies them
psql "$GIM_PG_URL" -X -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db ENCODING 'UTF8' TEMPLATE template0" ||
    exit 1
sqlite3 -bail "$sqlite" <"$ROOT/schema/schema.sql" || fail "sqlite: schema/schema.sql does not load"
n_pg=0
for f in "$ROOT"/migrations/postgres/[0-9][0-9][0-9][0-9]_*.sql; do
    { echo "BEGIN;"; cat "$f"; echo "COMMIT;"; } | pg || fail "postgres: $f does not apply"
    n_pg=$((n_pg + 1))
done
[[ $n_pg -gt 0 ]] || fail "no migrations/postgres/NNNN_*.sql"

# --- the structure, listed the same way on both sides
sqlite3 -bail -separator '|' "$sqlite" >"$tmp/sqlite.txt" <<'EOS' || fail "sqlite listing"
SELECT 'column', m.name, p.cid, p.name,
    CASE upper(p.type) WHEN 'INTEGER' THEN 'bigint' WHEN 'BLOB' THEN 'bytea' WHEN 'TEXT' THEN 'text'
        ELSE 'unmapped ' || p.type END,
    CASE WHEN p."notnull" OR p.pk > 0 THEN 'not null' ELSE 'null' END,
    coalesce(p.dflt_value, '')
FROM sqlite_master m, pragma_table_info(m.name) p
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\';
SELECT 'view column', m.name, p.cid, p.name
FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'view';
SELECT 'primary key', m.name, p.pk, p.name
FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table' AND p.pk > 0;
SELECT 'index', m.name, il.name, CASE WHEN il."unique" THEN 'unique' ELSE '' END,
    (SELECT group_concat(name, ',') FROM (SELECT ii.name FROM pragma_index_info(il.name) ii ORDER BY ii.seqno)),
    CASE WHEN il.partial THEN lower(replace(replace(substr(ix.sql, instr(upper(ix.sql), ' WHERE ') + 7), '(', ''), ')', ''))
        ELSE '' END
FROM sqlite_master m, pragma_index_list(m.name) il JOIN sqlite_master ix ON ix.name = il.name
WHERE m.type = 'table' AND il.origin <> 'pk';
SELECT 'foreign key', m.name, f."from", f."table", f."to", lower(f.on_delete)
FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table';
EOS
pg >"$tmp/pg.txt" <<'EOS' || fail "postgres listing"
SELECT 'column', c.table_name, c.ordinal_position - 1, c.column_name, c.data_type,
    CASE c.is_nullable WHEN 'NO' THEN 'not null' ELSE 'null' END,
    coalesce(regexp_replace(c.column_default, '::[a-z ]+$', ''), '')
FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE';
SELECT 'view column', c.table_name, c.ordinal_position - 1, c.column_name
FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'VIEW';
SELECT 'primary key', k.table_name, k.ordinal_position, k.column_name
FROM information_schema.key_column_usage k JOIN information_schema.table_constraints tc
    USING (constraint_schema, constraint_name)
WHERE tc.constraint_type = 'PRIMARY KEY' AND k.table_schema = 'public';
SELECT 'index', t.relname, ic.relname, CASE WHEN i.indisunique THEN 'unique' ELSE '' END,
    (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
     FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
    coalesce(lower(replace(replace(pg_get_expr(i.indpred, i.indrelid), '(', ''), ')', '')), '')
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relnamespace = 'public'::regnamespace AND NOT i.indisprimary;
SELECT 'foreign key', c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, af.attname,
    CASE c.confdeltype WHEN 'a' THEN 'no action' WHEN 'r' THEN 'restrict' WHEN 'c' THEN 'cascade'
        WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default' END
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace;
EOS
# PostgreSQL's own indexes, which SQLite does not need (each migration says why), exactly
# as listed: device_room (0003): room send push targets are read from device on postgres.
pg_only=('index|device|device_room||room_id|room_id <> 0')
for line in "${pg_only[@]}"; do
    grep -qxF "$line" "$tmp/pg.txt" || fail "postgres: no '$line' (PostgreSQL's own index)"
    grep -vxF "$line" "$tmp/pg.txt" >"$tmp/pg.own" && mv "$tmp/pg.own" "$tmp/pg.txt"
done
sort "$tmp/sqlite.txt" >"$tmp/sqlite.sorted"
sort "$tmp/pg.txt" >"$tmp/pg.sorted"
if ! diff -u --label sqlite --label postgres "$tmp/sqlite.sorted" "$tmp/pg.sorted"; then
    fail "the schemas differ (lines above: - only on SQLite, + only on PostgreSQL)"
else
    echo "ok: $(wc -l <"$tmp/sqlite.sorted") columns, keys and indexes agree"
fi
for kind in column 'view column' 'primary key' index 'foreign key'; do
    grep -q "^$kind|" "$tmp/sqlite.sorted" || fail "the SQLite listing has no '$kind' line: the listing is broken"
done

# message.id is the one key the service leaves to the database.
ident=$(pg <<<"SELECT is_identity || ' ' || identity_generation FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = 'message' AND column_name = 'id'")
[[ $ident == "YES BY DEFAULT" ]] || fail "message.id is not GENERATED BY DEFAULT AS IDENTITY: '$ident'"

# --- the views: same data in, same text out. Blobs are written X'hex' and
# turned into bytea literals for PostgreSQL. (Content that is not UTF-8 is the
# one known difference: SQLite shows its bytes, PostgreSQL NULL.)
long=$(printf '61%.0s' $(seq 130))
cat >"$tmp/data.sql" <<EOS
INSERT INTO message (id, sender_type, sender_id, sender_device_id, receiver_type, receiver_id, to_user_ids,
    message_type, content, send_time, status, sender_seq, receiver_seq) VALUES
 (1, 2, 10, 100, 1, 11, NULL, 1, X'0a0568656c6c6f', 1700000000123, 1, 1, 1),
 (2, 2, 10, 100, 1, 11, NULL, 1, NULL, 1700000000999, 2, 2, 2),
 (3, 3, 7, 0, 2, 5, X'0b00000000000000', 4, X'0a03616263', 0, 1, 3, 0),
 (4, 1, 0, 0, 1, 11, NULL, 1, X'0a8201$long', 1700000001000, 1, 4, 3),
 (5, 2, 11, 110, 1, 10, NULL, 1, X'', 1700000001001, 1, 4, 5),
 (6, 2, 11, 110, 1, 10, NULL, 1, X'1203616263', 1700000001002, 1, 5, 6),
 (7, 2, 11, 110, 3, 9, NULL, 9, X'0a0668c3a96c6c6f', 1700000001003, 3, 6, 0),
 (8, 2, 11, 110, 1, 10, NULL, 1, X'0a0668c3a96c6c6f', 1700000001004, 1, 7, 8);
INSERT INTO inbox (user_id, seq, message_id) VALUES (10, 1, 1), (11, 1, 1), (10, 2, 2), (11, 2, 2),
 (10, 3, 3), (11, 3, 4), (11, 4, 5), (10, 5, 5), (10, 8, 8), (10, 9, 99);
INSERT INTO device (device_id, user_id, gateway_id, client_addr, online, room_id, ack_seq, ack_time,
    created_at, signed_in_at, updated_at) VALUES
 (100, 10, 'gw1', '10.0.0.1:5000', 1, 0, 2, 1700000000500, 1600000000000, 1700000000001, 1700000000002),
 (110, 11, '', '', 0, 9, 0, 0, 1600000000000, 0, 1600000000000);
INSERT INTO chat_group (group_id, name, owner_id, created_at, avatar_url, extra, updated_at) VALUES
 (5, 'five', 7, 1650000000000, 'https://a/b.png', '{}', 1650000000001), (6, '', 8, 1650000000002, '', '', 0);
INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES
 (5, 7, 'owner', 1), (5, 10, 'admin', 2), (5, 11, 'member', 3), (6, 8, 'owner', 4);
EOS
sqlite3 -bail "$sqlite" <"$tmp/data.sql" || fail "sqlite: the view data does not load"
sed "s/X'\([0-9a-f]*\)'/'\\\\x\1'::bytea/g" "$tmp/data.sql" | pg || fail "postgres: the view data does not load"
for v in "v_message ORDER BY id" "v_inbox ORDER BY user_id, seq" "v_device ORDER BY device_id" \
    "v_group ORDER BY group_id"; do
    s=$(sqlite3 -bail -separator '|' "$sqlite" "SELECT * FROM $v")
    p=$(pg <<<"SELECT * FROM $v")
    if [[ -z $s ]]; then
        fail "SELECT * FROM $v: no rows on SQLite"
    elif [[ $s != "$p" ]]; then
        fail "SELECT * FROM $v differs:"
        diff -u --label sqlite --label postgres <(echo "$s") <(echo "$p")
    else
        echo "ok: SELECT * FROM $v: $(wc -l <<<"$s") rows agree"
    fi
done

[[ $fails -eq 0 ]] || {
    echo "$fails failure(s)"
    exit 1
}
echo "all ok"
