/*
 * gimctl pg-import | pg-verify: moving a gim-logic database from SQLite to
 * PostgreSQL (docs/scale-out.md).
 *
 * pg-import copies a stopped gim-logic's SQLite file (--db) into a
 * PostgreSQL database that holds the schema (migrations/postgres/) and no
 * data, in one transaction: every table SQLite has (schema_migrations aside:
 * each backend records its own), in creation order (a table referenced by a
 * foreign key was created before the tables that reference it), through
 * libpq's COPY protocol. It moves the message id identity past the highest
 * copied id, then runs the verification below inside the same transaction
 * and commits only when it passes: a failed or refused import leaves the
 * target as it was.
 *
 * pg-verify runs the same verification alone, on committed data, so that a
 * copy can be re-checked later (or a damaged one found):
 *   - every table: the same rows, compared whole, column by column, in
 *     primary-key order (so the counts are equal and every message's content
 *     is the same bytes: a full comparison, not a sample or a checksum);
 *   - per user, user_seq is at least the highest seq of the user's inbox
 *     and group copies (the next seq PostgreSQL hands out is new), and per
 *     room, room_seq at least the room log's highest seq;
 *   - the message id identity hands out ids above every copied one.
 *
 * Both refuse a SQLite database in use: they take the single-writer lock
 * (dblock.h) that a running gim-logic holds, and keep it, so the service
 * cannot start on the file while they read it. Values are compared and
 * copied in COPY's text format, written by copy_value() exactly as
 * PostgreSQL's COPY TO writes it, so one encoder serves both directions.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dblock.h"
#include "gimctl.h"

#define MAX_TABLES   64
#define MAX_COLS     32
#define NAME_MAX_LEN 63           /* PostgreSQL's identifier limit */
#define COPY_CHUNK   (256 * 1024) /* bytes of COPY data per PQputCopyData */
#define LOCK_TIMEOUT "lock_timeout = '10s'"

const char gimctl_usage_pg_import[] =
    "usage: gimctl [--db PATH] pg-import --pg URL\n"
    "  copies the SQLite database --db into the PostgreSQL database URL (a libpq URL or\n"
    "  conninfo, e.g. postgresql://gim@db.example:5432/gim; a password is better kept in\n"
    "  ~/.pgpass or PGPASSWORD than on the command line). The target must hold the\n"
    "  schema (gim-logic with database.backend: postgres applies migrations/postgres/ when\n"
    "  it starts) and no data; gim-logic must be stopped (the database's lock is taken).\n"
    "  One transaction: it copies every table, moves the message id past the copied ones,\n"
    "  verifies the copy as pg-verify does and commits only if it matches; otherwise\n"
    "  the target is left as it was. Exit 0 copied and verified, 1 refused or failed.\n";

const char gimctl_usage_pg_verify[] =
    "usage: gimctl [--db PATH] pg-verify --pg URL\n"
    "  compares the SQLite database --db with its copy in PostgreSQL (pg-import): every\n"
    "  table row by row, column by column (counts and contents), each user's seq against\n"
    "  the user's inbox, each room's against its log, and the next message id. Reads\n"
    "  only; gim-logic must be stopped. Exit 0 identical, 1 a difference (named on\n"
    "  stderr) or an error.\n";

struct table {
    char name[NAME_MAX_LEN + 1];
    int ncols;
    char cols[MAX_COLS][NAME_MAX_LEN + 1];
    bool blob[MAX_COLS]; /* declared BLOB: copied as bytea whatever SQLite stored */
    bool text[MAX_COLS]; /* declared TEXT: ordered COLLATE "C" (SQLite's BINARY) */
    int npk;
    int pk[MAX_COLS]; /* column indexes, in primary-key order */
};

struct buf {
    char *p;
    size_t len, cap;
};

struct job {
    const char *cmd; /* "pg-import" or "pg-verify", for messages */
    const char *url;
    sqlite3 *src;
    PGconn *pg;
    struct table t[MAX_TABLES];
    int nt;
    struct buf b;
    int64_t rows; /* rows copied or compared, all tables */
};

static bool buf_reserve(struct buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* A plain lower-case identifier: table and column names go into SQL text (quoted, too). */
static bool ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/*
 * Appends column i of the current row in COPY's text format, as PostgreSQL's
 * COPY TO writes it (CopyAttributeOutText): NULL is \N; a BLOB column is a
 * bytea in hex, \\x...; text escapes the backslash and the control bytes
 * that have a letter (\b \f \n \r \t \v) and passes other bytes through.
 */
static bool copy_value(struct buf *b, sqlite3_stmt *st, int i, bool blob)
{
    static const char hex[] = "0123456789abcdef";
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL) {
        if (!buf_reserve(b, 2))
            return false;
        memcpy(b->p + b->len, "\\N", 2);
        b->len += 2;
        return true;
    }
    if (blob) {
        const unsigned char *v = sqlite3_column_blob(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        if (!buf_reserve(b, 3 + 2 * n))
            return false;
        memcpy(b->p + b->len, "\\\\x", 3);
        b->len += 3;
        for (size_t k = 0; k < n; k++) {
            b->p[b->len++] = hex[v[k] >> 4];
            b->p[b->len++] = hex[v[k] & 15];
        }
        return true;
    }
    if (type == SQLITE_INTEGER) {
        if (!buf_reserve(b, 24))
            return false;
        b->len +=
            (size_t)snprintf(b->p + b->len, 24, "%lld", (long long)sqlite3_column_int64(st, i));
        return true;
    }
    /* TEXT, or a REAL (PostgreSQL refuses it in a bigint column: the import fails, named) */
    const unsigned char *v = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (!v || !buf_reserve(b, 2 * n))
        return false;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = v[k];
        char esc = 0;
        switch (c) {
        case '\b':
            esc = 'b';
            break;
        case '\f':
            esc = 'f';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        case '\v':
            esc = 'v';
            break;
        case '\\':
            esc = '\\';
            break;
        default:
            break;
        }
        if (esc) {
            b->p[b->len++] = '\\';
            b->p[b->len++] = esc;
        } else {
            b->p[b->len++] = (char)c;
        }
    }
    return true;
}

/* The current row as one COPY line (with its newline) appended to b. */
static bool copy_row(struct buf *b, sqlite3_stmt *st, const struct table *t)
{
    for (int i = 0; i < t->ncols; i++) {
        if (i > 0) {
            if (!buf_reserve(b, 1))
                return false;
            b->p[b->len++] = '\t';
        }
        if (!copy_value(b, st, i, t->blob[i]))
            return false;
    }
    if (!buf_reserve(b, 1))
        return false;
    b->p[b->len++] = '\n';
    return true;
}

/* "a", "b", ... (quoted identifiers) into out. */
static void col_list(const struct table *t, char *out, size_t len)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < t->ncols && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, "%s\"%s\"", i ? ", " : "", t->cols[i]);
}

/* The primary key as an ORDER BY list; pg: text columns COLLATE "C", SQLite's BINARY order. */
static void order_list(const struct table *t, bool pg, char *out, size_t len)
{
    size_t at = 0;
    out[0] = '\0';
    for (int k = 0; k < t->npk && at < len; k++) {
        int i = t->pk[k];
        at += (size_t)snprintf(out + at, len - at, "%s\"%s\"%s", k ? ", " : "", t->cols[i],
                               pg && t->text[i] ? " COLLATE \"C\"" : "");
    }
}

static int sqlite_fail(struct job *j, const char *what)
{
    fprintf(stderr, "gimctl %s: %s: %s\n", j->cmd, what, sqlite3_errmsg(j->src));
    return 1;
}

static int pg_fail(struct job *j, const char *what, const PGresult *r)
{
    const char *msg = r ? PQresultErrorMessage(r) : "";
    if (!*msg)
        msg = PQerrorMessage(j->pg);
    fprintf(stderr, "gimctl %s: %s: %s%s", j->cmd, what, msg,
            *msg && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
    return 1;
}

/* Runs sql (no parameters or params[0..n)); 0 when it returns want, else prints why (1). */
static int pg_run(struct job *j, const char *what, const char *sql, int n,
                  const char *const *params, ExecStatusType want, PGresult **keep)
{
    PGresult *r = n ? PQexecParams(j->pg, sql, n, NULL, params, NULL, NULL, 0) : PQexec(j->pg, sql);
    if (PQresultStatus(r) != want) {
        pg_fail(j, what, r);
        PQclear(r);
        return 1;
    }
    if (keep)
        *keep = r;
    else
        PQclear(r);
    return 0;
}

/* The first column of the first row of a one-row query as int64 (NULL: 0). */
static int pg_int(struct job *j, const char *what, const char *sql, int n,
                  const char *const *params, int64_t *out)
{
    PGresult *r = NULL;
    if (pg_run(j, what, sql, n, params, PGRES_TUPLES_OK, &r) != 0)
        return 1;
    *out = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return 0;
}

static const char SQL_VERSION[] = "SELECT max(version) FROM schema_migrations";
static const char SQL_TABLES[] = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                                 "LIKE 'sqlite\\_%' ESCAPE '\\' "
                                 "AND name <> 'schema_migrations' ORDER BY rowid";
static const char SQL_COLUMNS[] =
    "SELECT name, upper(type), pk FROM pragma_table_info(?1) ORDER BY cid";
static const char PG_COLUMNS[] =
    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = $1 ORDER BY ordinal_position";
static const char PG_VERSION[] = "SELECT coalesce(max(version), 0) FROM schema_migrations";

/* Reads the tables to copy from the SQLite file's own schema. */
static int load_tables(struct job *j)
{
    sqlite3_stmt *st = NULL, *cs = NULL;
    int rc = 1, step;
    if (sqlite3_prepare_v2(j->src, SQL_TABLES, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(j->src, SQL_COLUMNS, -1, &cs, NULL) != SQLITE_OK) {
        rc = sqlite_fail(j, "cannot read the schema");
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (j->nt == MAX_TABLES || !name || !ident_ok(name)) {
            fprintf(stderr, "gimctl %s: table '%s' (or too many tables): not a gim-logic schema\n",
                    j->cmd, name ? name : "");
            goto out;
        }
        struct table *t = &j->t[j->nt++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
        int pkpos[MAX_COLS] = {0};
        sqlite3_bind_text(cs, 1, t->name, -1, SQLITE_STATIC);
        while ((step = sqlite3_step(cs)) == SQLITE_ROW) {
            const char *col = (const char *)sqlite3_column_text(cs, 0);
            const char *type = (const char *)sqlite3_column_text(cs, 1);
            if (t->ncols == MAX_COLS || !col || !ident_ok(col)) {
                fprintf(stderr,
                        "gimctl %s: %s: column '%s' (or too many): not a gim-logic schema\n",
                        j->cmd, t->name, col ? col : "");
                goto out;
            }
            int i = t->ncols++;
            snprintf(t->cols[i], sizeof t->cols[i], "%s", col);
            t->blob[i] = type && strcmp(type, "BLOB") == 0;
            t->text[i] = type && strcmp(type, "TEXT") == 0;
            int pk = sqlite3_column_int(cs, 2);
            if (pk > 0 && pk <= MAX_COLS) {
                pkpos[pk - 1] = i + 1;
                t->npk = pk > t->npk ? pk : t->npk;
            }
        }
        sqlite3_reset(cs);
        if (step != SQLITE_DONE) {
            rc = sqlite_fail(j, "cannot read the schema");
            goto out;
        }
        for (int k = 0; k < t->npk; k++) {
            if (!pkpos[k]) {
                fprintf(stderr, "gimctl %s: %s: a primary key with a hole\n", j->cmd, t->name);
                goto out;
            }
            t->pk[k] = pkpos[k] - 1;
        }
        if (t->npk == 0) { /* rows are compared in key order: a table without one cannot be */
            fprintf(stderr, "gimctl %s: table %s has no primary key: not a gim-logic schema\n",
                    j->cmd, t->name);
            goto out;
        }
    }
    rc = step == SQLITE_DONE ? 0 : sqlite_fail(j, "cannot read the schema");
out:
    sqlite3_finalize(st);
    sqlite3_finalize(cs);
    return rc;
}

/* The target has the schema: a recorded migration, and every table with SQLite's columns in order.
 */
static int check_target(struct job *j)
{
    int64_t version = 0;
    PGresult *r = NULL;
    PGresult *has = PQexec(j->pg, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    bool ok = PQresultStatus(has) == PGRES_TUPLES_OK && strcmp(PQgetvalue(has, 0, 0), "t") == 0;
    PQclear(has);
    if (!ok || pg_int(j, "reading schema_migrations", PG_VERSION, 0, NULL, &version) != 0 ||
        version < 1) {
        fprintf(stderr,
                "gimctl %s: the PostgreSQL database has no gim-logic schema: start gim-logic once "
                "with database.backend: postgres and this database.url (it applies "
                "migrations/postgres/), stop it, and run %s again\n",
                j->cmd, j->cmd);
        return 1;
    }
    for (int k = 0; k < j->nt; k++) {
        const struct table *t = &j->t[k];
        const char *p[] = {t->name};
        if (pg_run(j, "reading the target's columns", PG_COLUMNS, 1, p, PGRES_TUPLES_OK, &r) != 0)
            return 1;
        int n = PQntuples(r);
        bool same = n == t->ncols;
        for (int i = 0; same && i < n; i++)
            same = strcmp(PQgetvalue(r, i, 0), t->cols[i]) == 0;
        PQclear(r);
        if (!same) {
            fprintf(stderr,
                    "gimctl %s: table %s: the PostgreSQL database %s (%d columns; SQLite has %d): "
                    "its schema is not this SQLite database's (migrations/postgres/ lags "
                    "migrations/, or one of them is newer than this gimctl)\n",
                    j->cmd, t->name, n ? "has other columns" : "lacks it", n, t->ncols);
            return 1;
        }
    }
    return 0;
}

/* Every table the import writes is empty (group_id_high: the migration's one row (1, 0)). */
static int check_empty(struct job *j)
{
    char sql[256];
    for (int k = 0; k < j->nt; k++) {
        const char *name = j->t[k].name;
        int64_t rows = 0;
        bool seed = strcmp(name, "group_id_high") == 0;
        snprintf(sql, sizeof sql, "SELECT count(*) FROM \"%s\"%s", name,
                 seed ? " WHERE NOT (one = 1 AND last_id = 0)" : "");
        if (pg_int(j, "counting the target's rows", sql, 0, NULL, &rows) != 0)
            return 1;
        if (rows > 0) {
            fprintf(stderr,
                    "gimctl %s: the PostgreSQL database is not empty: table %s has %lld row(s); "
                    "nothing was copied (import into a database that has only the schema)\n",
                    j->cmd, name, (long long)rows);
            return 1;
        }
    }
    return pg_run(j, "clearing group_id_high", "DELETE FROM group_id_high", 0, NULL,
                  PGRES_COMMAND_OK, NULL);
}

/*
 * Where a table's rows are read on the SQLite side: the table itself, except
 * user_seq. Since migration 0008 SQLite keeps there only a floor that
 * deletions raise, and a user's counter is the larger of it and the user's
 * last inbox seq (the view user_last_seq, same columns); PostgreSQL's
 * user_seq is the counter itself, so that is what it receives, and what
 * pg-verify compares it with.
 */
static const char *sqlite_source(const struct table *t)
{
    return strcmp(t->name, "user_seq") == 0 ? "user_last_seq" : t->name;
}

/* COPY one table's rows from SQLite into PostgreSQL. */
static int copy_table(struct job *j, const struct table *t)
{
    char cols[MAX_COLS * (NAME_MAX_LEN + 4)], order[MAX_COLS * (NAME_MAX_LEN + 16)];
    char sql[sizeof cols + sizeof order + 128];
    sqlite3_stmt *st = NULL;
    int64_t rows = 0;
    int rc = 1, step;
    col_list(t, cols, sizeof cols);
    order_list(t, false, order, sizeof order);
    snprintf(sql, sizeof sql, "SELECT %s FROM \"%s\" ORDER BY %s", cols, sqlite_source(t), order);
    if (sqlite3_prepare_v2(j->src, sql, -1, &st, NULL) != SQLITE_OK)
        return sqlite_fail(j, t->name);
    snprintf(sql, sizeof sql, "COPY \"%s\" (%s) FROM STDIN", t->name, cols);
    if (pg_run(j, t->name, sql, 0, NULL, PGRES_COPY_IN, NULL) != 0)
        goto out;
    const char *abort_why = NULL;
    j->b.len = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (!copy_row(&j->b, st, t)) {
            abort_why = "reading SQLite: out of memory";
            break;
        }
        rows++;
        if (j->b.len >= COPY_CHUNK) {
            if (PQputCopyData(j->pg, j->b.p, (int)j->b.len) != 1) {
                abort_why = "sending to PostgreSQL failed";
                break;
            }
            j->b.len = 0;
        }
    }
    if (!abort_why && step != SQLITE_DONE)
        abort_why = "reading SQLite failed";
    if (!abort_why && j->b.len && PQputCopyData(j->pg, j->b.p, (int)j->b.len) != 1)
        abort_why = "sending to PostgreSQL failed";
    /* With an error message the server fails the COPY: nothing of it stays. */
    PQputCopyEnd(j->pg, abort_why);
    PGresult *r = PQgetResult(j->pg);
    if (abort_why) {
        fprintf(stderr, "gimctl %s: %s: %s: %s\n", j->cmd, t->name, abort_why,
                strstr(abort_why, "SQLite") ? sqlite3_errmsg(j->src) : PQerrorMessage(j->pg));
    } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_fail(j, t->name, r);
    } else {
        rc = 0;
        j->rows += rows;
        printf("copied %-20s %lld rows\n", t->name, (long long)rows);
    }
    PQclear(r);
    while ((r = PQgetResult(j->pg)))
        PQclear(r);
out:
    sqlite3_finalize(st);
    return rc;
}

/* The next value of every identity column is above the table's highest. */
static const char PG_IDENTITIES[] =
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name";

static int set_identities(struct job *j)
{
    PGresult *r = NULL;
    char sql[512];
    if (pg_run(j, "reading identity columns", PG_IDENTITIES, 0, NULL, PGRES_TUPLES_OK, &r) != 0)
        return 1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        const char *tab = PQgetvalue(r, i, 0), *col = PQgetvalue(r, i, 1);
        if (!ident_ok(tab) || !ident_ok(col)) {
            fprintf(stderr, "gimctl %s: identity column %s.%s: unexpected name\n", j->cmd, tab,
                    col);
            rc = 1;
            break;
        }
        /* setval(.., max + 1, false): nextval returns max + 1 (1 on an empty table). */
        snprintf(sql, sizeof sql,
                 "SELECT setval(pg_get_serial_sequence('\"%s\"', '%s'), "
                 "coalesce(max(\"%s\"), 0) + 1, false) FROM \"%s\"",
                 tab, col, col, tab);
        rc = pg_run(j, "moving the identity", sql, 0, NULL, PGRES_TUPLES_OK, NULL);
    }
    PQclear(r);
    return rc;
}

/* Shows at most 200 bytes of a COPY line, without its newline. */
static void show_line(const char *side, const char *p, size_t n)
{
    if (n && p[n - 1] == '\n')
        n--;
    fprintf(stderr, "    %-8s %.*s%s\n", side, (int)(n > 200 ? 200 : n), p, n > 200 ? "..." : "");
}

/* Compares one table row by row (COPY lines from both sides, in key order); 0 same, 1 not. */
static int compare_table(struct job *j, const struct table *t)
{
    char cols[MAX_COLS * (NAME_MAX_LEN + 4)], order[MAX_COLS * (NAME_MAX_LEN + 16)];
    char sql[sizeof cols + sizeof order + 128];
    sqlite3_stmt *st = NULL;
    int64_t n_sqlite = 0, n_pg = 0, first_diff = -1, diffs = 0;
    int rc = 1, step = SQLITE_ROW, got = 1;
    char *line = NULL;
    col_list(t, cols, sizeof cols);
    order_list(t, false, order, sizeof order);
    snprintf(sql, sizeof sql, "SELECT %s FROM \"%s\" ORDER BY %s", cols, sqlite_source(t), order);
    if (sqlite3_prepare_v2(j->src, sql, -1, &st, NULL) != SQLITE_OK)
        return sqlite_fail(j, t->name);
    order_list(t, true, order, sizeof order);
    snprintf(sql, sizeof sql, "COPY (SELECT %s FROM \"%s\" ORDER BY %s) TO STDOUT", cols, t->name,
             order);
    if (pg_run(j, t->name, sql, 0, NULL, PGRES_COPY_OUT, NULL) != 0)
        goto out;
    /* Both sides to their end (a COPY OUT must be read out), counting, noting the first difference.
     */
    while (step == SQLITE_ROW || got > 0) {
        bool s_has = false, p_has = false;
        if (step == SQLITE_ROW && (step = sqlite3_step(st)) == SQLITE_ROW) {
            j->b.len = 0;
            if (!copy_row(&j->b, st, t)) {
                fprintf(stderr, "gimctl %s: out of memory\n", j->cmd);
                step = SQLITE_NOMEM;
            } else {
                s_has = true;
                n_sqlite++;
            }
        }
        if (got > 0) {
            PQfreemem(line);
            line = NULL;
            got = PQgetCopyData(j->pg, &line, 0);
            if (got > 0) {
                p_has = true;
                n_pg++;
            }
        }
        if (!s_has && !p_has)
            continue;
        if (s_has && p_has && (size_t)got == j->b.len && memcmp(line, j->b.p, j->b.len) == 0)
            continue;
        diffs++;
        if (first_diff < 0) {
            first_diff = s_has ? n_sqlite : n_pg;
            fprintf(stderr, "gimctl %s: table %s: row %lld (in primary-key order) differs:\n",
                    j->cmd, t->name, (long long)first_diff);
            if (s_has)
                show_line("sqlite", j->b.p, j->b.len);
            else
                fprintf(stderr, "    sqlite   (no more rows)\n");
            if (p_has)
                show_line("postgres", line, (size_t)got);
            else
                fprintf(stderr, "    postgres (no more rows)\n");
        }
    }
    PGresult *r;
    bool pg_ok = got == -1;
    while ((r = PQgetResult(j->pg))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && pg_ok) {
            pg_fail(j, t->name, r);
            pg_ok = false;
        }
        PQclear(r);
    }
    if (step != SQLITE_DONE) {
        if (step != SQLITE_NOMEM)
            sqlite_fail(j, t->name);
    } else if (!pg_ok) {
        if (got == -2)
            pg_fail(j, t->name, NULL);
    } else if (diffs) {
        fprintf(stderr,
                "gimctl %s: table %s differs: %lld rows in SQLite, %lld in PostgreSQL, the first "
                "difference at row %lld\n",
                j->cmd, t->name, (long long)n_sqlite, (long long)n_pg, (long long)first_diff);
    } else {
        rc = 0;
        j->rows += n_sqlite;
        printf("same   %-20s %lld rows\n", t->name, (long long)n_sqlite);
    }
out:
    PQfreemem(line);
    sqlite3_finalize(st);
    return rc;
}

/*
 * The seq invariants on the PostgreSQL side: the next seq of every user
 * (room) is above every seq its inbox and group copies (log) hold. Equal in
 * a database nothing was erased from; a user_seq above the inbox's last seq
 * is a trimmed or erased tail.
 */
static const char PG_USER_SEQS[] =
    "SELECT count(*) FILTER (WHERE s.seq IS NULL OR s.seq < m.top), "
    "       count(*) FILTER (WHERE s.seq = m.top), count(*) "
    "FROM (SELECT user_id, max(seq) AS top FROM "
    "      (SELECT user_id, seq FROM inbox UNION ALL SELECT user_id, seq FROM group_copy) x "
    "      GROUP BY user_id) m LEFT JOIN user_seq s USING (user_id)";
static const char PG_ROOM_SEQS[] =
    "SELECT count(*) FILTER (WHERE s.seq IS NULL OR s.seq < m.top), "
    "       count(*) FILTER (WHERE s.seq = m.top), count(*) "
    "FROM (SELECT room_id, max(seq) AS top FROM room_message GROUP BY room_id) m "
    "LEFT JOIN room_seq s USING (room_id)";
static const char PG_ID_SEQUENCE[] = "SELECT pg_get_serial_sequence('message', 'id')";

static int check_seqs(struct job *j, const char *what, const char *sql)
{
    PGresult *r = NULL;
    if (pg_run(j, what, sql, 0, NULL, PGRES_TUPLES_OK, &r) != 0)
        return 1;
    long long bad = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    long long equal = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    long long all = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    if (bad) {
        fprintf(stderr,
                "gimctl %s: %s: %lld of %lld have entries at or above their seq counter (or "
                "none): the next seq would repeat one\n",
                j->cmd, what, bad, all);
        return 1;
    }
    printf("seqs   %-20s %lld: counter = highest entry for %lld, above it (a trimmed or erased "
           "tail) for %lld\n",
           what, all, equal, all - equal);
    return 0;
}

/* The message id sequence's next value is above the highest id (nextval is not called: reads only).
 */
static int check_next_id(struct job *j)
{
    PGresult *r = NULL;
    char sql[256];
    int64_t ok = 0;
    if (pg_run(j, "finding the message id sequence", PG_ID_SEQUENCE, 0, NULL, PGRES_TUPLES_OK,
               &r) != 0)
        return 1;
    const char *seq = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
    /* A name from the catalog (schema.name, quoted where needed), checked before it goes into SQL.
     */
    if (!*seq || strlen(seq) > 2 * NAME_MAX_LEN + 8 ||
        strspn(seq, "abcdefghijklmnopqrstuvwxyz0123456789_.\"") != strlen(seq)) {
        fprintf(stderr, "gimctl %s: message.id has no sequence ('%s'): not a gim-logic schema\n",
                j->cmd, seq);
        PQclear(r);
        return 1;
    }
    snprintf(sql, sizeof sql,
             "SELECT (CASE WHEN is_called THEN last_value + 1 ELSE last_value END) > "
             "(SELECT coalesce(max(id), 0) FROM message) FROM %s",
             seq);
    PQclear(r);
    if (pg_run(j, "reading the message id sequence", sql, 0, NULL, PGRES_TUPLES_OK, &r) != 0)
        return 1;
    ok = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "gimctl %s: the next message id is not above every copied id\n", j->cmd);
        return 1;
    }
    printf("ids    %-20s the next id is above every copied one\n", "message");
    return 0;
}

static int verify(struct job *j)
{
    int bad = 0;
    j->rows = 0;
    for (int k = 0; k < j->nt; k++)
        bad += compare_table(j, &j->t[k]);
    bad += check_seqs(j, "users", PG_USER_SEQS);
    bad += check_seqs(j, "rooms", PG_ROOM_SEQS);
    bad += check_next_id(j);
    return bad ? 1 : 0;
}

/* Options, the SQLite side (lock, read snapshot, tables) and the connection. */
static int open_job(struct job *j, struct gimctl *g, int argc, char **argv, struct dblock **lock)
{
    char err[512];
    int64_t version = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pg") == 0 && i + 1 < argc && *argv[i + 1])
            j->url = argv[++i];
        else
            return gimctl_usage_error(j->cmd, "unexpected or bad argument '%s'", argv[i]);
    }
    if (!j->url)
        return gimctl_usage_error(j->cmd, "needs --pg URL");
    if (!(j->src = gimctl_open_ro(g->db)))
        return 1;
    gim_err e = dblock_acquire(g->db, lock, err, sizeof err);
    if (e != GIM_OK) {
        fprintf(stderr, "gimctl %s: %s%s\n", j->cmd, err,
                e == GIM_ELOCKED ? ": stop gim-logic first (the copy must be of a stopped database)"
                                 : "");
        return 1;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(j->src, SQL_VERSION, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return sqlite_fail(j, "cannot read schema_migrations");
    }
    version = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (version != store_schema_version()) {
        fprintf(stderr, "gimctl %s: %s has schema version %lld, this gimctl knows %d: %s\n", j->cmd,
                g->db, (long long)version, store_schema_version(),
                version < store_schema_version()
                    ? "start this version of gim-logic on it once (it migrates), stop it, retry"
                    : "use the gimctl of the gim-logic that wrote it");
        return 1;
    }
    /* One read transaction: every table from the same snapshot. */
    if (sqlite3_exec(j->src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return sqlite_fail(j, "cannot begin a read transaction");
    if (load_tables(j) != 0)
        return 1;
    j->pg = PQconnectdb(j->url);
    if (PQstatus(j->pg) != CONNECTION_OK) {
        fprintf(stderr, "gimctl %s: cannot connect to PostgreSQL: %s", j->cmd,
                PQerrorMessage(j->pg));
        return 1;
    }
    /* COPY's text: UTF-8, bytea in hex, whatever the server's or role's defaults. */
    return pg_run(j, "setting up the session",
                  "SET client_encoding = 'UTF8'; SET bytea_output = 'hex'; SET " LOCK_TIMEOUT, 0,
                  NULL, PGRES_COMMAND_OK, NULL);
}

static void close_job(struct job *j, struct dblock *lock)
{
    if (j->pg)
        PQfinish(j->pg); /* an open transaction rolls back */
    if (j->src)
        sqlite3_close(j->src); /* ends the read transaction */
    free(j->b.p);
    dblock_release(lock);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int gimctl_pg_import(struct gimctl *g, int argc, char **argv)
{
    struct job *j = calloc(1, sizeof *j);
    struct dblock *lock = NULL;
    if (!j) {
        fprintf(stderr, "gimctl pg-import: out of memory\n");
        return 1;
    }
    j->cmd = "pg-import";
    double t0 = now_s();
    int rc = open_job(j, g, argc, argv, &lock);
    if (rc != 0)
        goto out;
    rc = 1;
    if (pg_run(j, "BEGIN", "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL) != 0)
        goto out;
    if (check_target(j) != 0)
        goto out;
    /* No one else writes these tables until the copy commits (a gim-logic started on it waits),
     * so the emptiness check below stays true and READ COMMITTED is enough. */
    for (int k = 0; k < j->nt; k++) {
        char sql[128];
        snprintf(sql, sizeof sql, "LOCK TABLE \"%s\" IN EXCLUSIVE MODE", j->t[k].name);
        if (pg_run(j, "locking the target's tables", sql, 0, NULL, PGRES_COMMAND_OK, NULL) != 0)
            goto out;
    }
    if (check_empty(j) != 0)
        goto out;
    for (int k = 0; k < j->nt; k++)
        if (copy_table(j, &j->t[k]) != 0)
            goto out;
    int64_t copied = j->rows;
    if (set_identities(j) != 0)
        goto out;
    if (verify(j) != 0) {
        fprintf(stderr, "gimctl pg-import: the copy does not match: rolled back, nothing copied\n");
        goto out;
    }
    if (pg_run(j, "COMMIT", "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL) != 0) {
        fprintf(stderr, "gimctl pg-import: nothing was copied\n");
        goto out;
    }
    printf("pg-import: %d tables, %lld rows copied from %s and verified in %.1f s\n", j->nt,
           (long long)copied, g->db, now_s() - t0);
    rc = 0;
out:
    close_job(j, lock);
    free(j);
    return rc;
}

int gimctl_pg_verify(struct gimctl *g, int argc, char **argv)
{
    struct job *j = calloc(1, sizeof *j);
    struct dblock *lock = NULL;
    if (!j) {
        fprintf(stderr, "gimctl pg-verify: out of memory\n");
        return 1;
    }
    j->cmd = "pg-verify";
    int rc = open_job(j, g, argc, argv, &lock);
    if (rc != 0)
        goto out;
    rc = 1;
    /* One snapshot on this side too. */
    if (pg_run(j, "BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
               PGRES_COMMAND_OK, NULL) != 0 ||
        check_target(j) != 0)
        goto out;
    if (verify(j) != 0) {
        fprintf(stderr, "gimctl pg-verify: the PostgreSQL database differs from %s\n", g->db);
        goto out;
    }
    printf("pg-verify: %d tables, %lld rows identical to %s\n", j->nt, (long long)j->rows, g->db);
    rc = 0;
out:
    close_job(j, lock);
    free(j);
    return rc;
}
