/*
 * gimctl group: creates groups and edits their membership directly in the
 * service's SQLite database (--db).
 *
 * The service reads membership fresh on every request (src/group.h), so
 * writing the tables is all it takes, and it is safe while gim-logic runs:
 * WAL lets its readers go on, each command is one BEGIN IMMEDIATE
 * transaction that waits (busy_timeout) for the service's writer, and either
 * every change of a command lands or none does.
 *
 * The database must already exist: only the service creates and migrates it,
 * so a mistyped --db is reported instead of leaving an empty file behind.
 */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "gimctl.h"
#include "store.h"

#define MAX_MEMBERS_DEFAULT 10000 /* limits.max_group_members' default */
#define NAME_MAX_BYTES      256

static const char SQL_SCHEMA[] = "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name IN ('chat_group', 'group_member')";
static const char SQL_GROUP_GET[] = "SELECT owner_id FROM chat_group WHERE group_id = ?1";
static const char SQL_GROUP_INSERT[] =
    "INSERT INTO chat_group (name, owner_id, created_at) VALUES (?1, ?2, ?3)";
static const char SQL_MEMBER_ROLE[] =
    "SELECT role FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBER_INSERT[] =
    "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)";
static const char SQL_MEMBER_SET_ROLE[] =
    "UPDATE group_member SET role = ?3 WHERE group_id = ?1 AND user_id = ?2 AND role <> ?3";
static const char SQL_MEMBER_DELETE[] =
    "DELETE FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBER_COUNT[] = "SELECT count(*) FROM group_member WHERE group_id = ?1";
static const char SQL_GROUP_LIST[] =
    "SELECT g.group_id, g.name, g.owner_id, "
    "(SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) "
    "FROM chat_group g ORDER BY g.group_id";
static const char SQL_GROUP_SHOW[] =
    "SELECT g.name, g.owner_id, g.created_at, "
    "(SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) "
    "FROM chat_group g WHERE g.group_id = ?1";
static const char SQL_MEMBER_LIST[] =
    "SELECT user_id, role, joined_at FROM group_member WHERE group_id = ?1 "
    "ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, user_id";

/* A sorted list of distinct user ids. */
struct idlist {
    int64_t *ids;
    size_t n;
};

/* Options of every group subcommand; which ones a subcommand accepts is checked after parsing. */
struct gopts {
    const char *sub;
    const char *pos[2]; /* positional arguments after the subcommand */
    int npos;
    int64_t owner;
    const char *members; /* --members, raw */
    int64_t group_id;    /* pos[0] of add, remove, show */
    struct idlist users; /* --members of create, pos[1] of add and remove */
    const char *name;
    const char *role;
    int64_t max_members;
};

#define STR_(x) #x
#define STR(x)  STR_(x)

/* clang-format off */
const char gimctl_usage_group[] =
    "usage: gimctl [--db PATH] group COMMAND ...\n"
    "  group create --owner U [--members U1,U2,...] [--name NAME] [--max-members N]\n"
    "      creates a group owned by U (a member with role owner) and prints its id\n"
    "  group add GROUP U1[,U2...] [--role admin|member] [--max-members N]\n"
    "      adds members (default role member); --role also changes the role of\n"
    "      users who are members already (never the owner's)\n"
    "  group remove GROUP U1[,U2...]\n"
    "      removes members; the owner cannot be removed\n"
    "  group list\n"
    "      one line per group: id, name, owner, member count\n"
    "  group show GROUP\n"
    "      the group, then one line per member with its role\n"
    "Works on the database file directly (safe while gim-logic runs); the file must\n"
    "exist (gim-logic creates it). --max-members (default " STR(MAX_MEMBERS_DEFAULT) ") should match the\n"
    "service's limits.max_group_members; a change that would pass it is refused.\n"
    "Exit status: 0 done, 1 refused or failed (nothing changed), 2 bad usage.\n";
/* clang-format on */

static void group_usage(FILE *f)
{
    fputs(gimctl_usage_group, f);
}

static gim_err gfail(gim_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static gim_err gfail(gim_err e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gimctl group: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return e;
}

static int exit_status(gim_err e)
{
    return e == GIM_OK ? 0 : e == GIM_EBADREQ ? 2 : 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static gim_err sql_fail(sqlite3 *db, int rc, const char *what)
{
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return gfail(GIM_EUNAVAILABLE, "the database stayed locked for 5 s (%s); try again", what);
    return gfail(store_err(rc), "%s: %s", what, sqlite3_errmsg(db));
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Parses "U1,U2,..." into a sorted list without duplicates. */
static gim_err parse_ids(const char *s, struct idlist *out)
{
    gim_err e = GIM_OK;
    size_t cap = 1;
    char *copy = NULL;
    *out = (struct idlist){0};
    if (!s || !*s)
        return gfail(GIM_EBADREQ, "empty user list");
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    copy = strdup(s);
    out->ids = calloc(cap, sizeof *out->ids);
    if (!copy || !out->ids) {
        e = gfail(GIM_ENOMEM, "out of memory");
        goto out;
    }
    /* strtok_r would skip empty fields; "1,,2" is a typo worth reporting. */
    char *field = copy;
    for (size_t i = 0; i < cap; i++) {
        char *comma = strchr(field, ',');
        if (comma)
            *comma = '\0';
        if (gimctl_parse_id(field, &out->ids[out->n]) != 0) {
            e = gfail(GIM_EBADREQ, "bad user id \"%s\" in \"%s\" (ids are positive integers)",
                      field, s);
            goto out;
        }
        out->n++;
        field = comma ? comma + 1 : NULL;
        if (!field)
            break;
    }
    qsort(out->ids, out->n, sizeof *out->ids, cmp_id);
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++)
        if (k == 0 || out->ids[k - 1] != out->ids[i])
            out->ids[k++] = out->ids[i];
    out->n = k;
out:
    free(copy);
    if (e != GIM_OK) {
        free(out->ids);
        *out = (struct idlist){0};
    }
    return e;
}

static gim_err db_open(const char *path, sqlite3 **out)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    gim_err e = GIM_OK;
    *out = NULL;
    if (access(path, F_OK) != 0)
        return gfail(GIM_EIO,
                     "database %s does not exist: start gim-logic once to create it, or pass "
                     "--db with the path of its database.path",
                     path);
    /* No SQLITE_OPEN_CREATE: the file must be the service's, not a new empty one. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        e = gfail(GIM_EIO, "cannot open database %s: %s", path,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(db, 5000);
    if ((rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL)) != SQLITE_OK) {
        e = sql_fail(db, rc, path);
        goto out;
    }
    if ((rc = sqlite3_prepare_v2(db, SQL_SCHEMA, -1, &st, NULL)) != SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_ROW) {
        e = rc == SQLITE_NOTADB ? gfail(GIM_EIO, "%s is not an SQLite database", path)
                                : sql_fail(db, rc, path);
        goto out;
    }
    if (sqlite3_column_int(st, 0) != 2) {
        e = gfail(GIM_EIO, "%s is not a gim-logic database (no chat_group/group_member tables)",
                  path);
        goto out;
    }
    /* The service made it WAL already; saying so again is free and never turns a stranger's file.
     */
    if ((rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL)) != SQLITE_OK)
        e = sql_fail(db, rc, path);
out:
    sqlite3_finalize(st);
    if (e != GIM_OK)
        sqlite3_close(db);
    else
        *out = db;
    return e;
}

static gim_err prep(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? GIM_OK : sql_fail(db, rc, "prepare");
}

static gim_err exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? GIM_OK : sql_fail(db, rc, sql);
}

/* Runs a statement expected to return one integer row (count, owner...). */
static gim_err step_int(sqlite3 *db, sqlite3_stmt *st, int64_t *v, int *found)
{
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GIM_OK : sql_fail(db, rc, "query");
}

/* The owner of group_id; GIM_ENOTFOUND (reported) when there is no such group. */
static gim_err group_owner(sqlite3 *db, int64_t group_id, int64_t *owner)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    gim_err e = prep(db, SQL_GROUP_GET, &st);
    if (e != GIM_OK)
        return e;
    sqlite3_bind_int64(st, 1, group_id);
    e = step_int(db, st, owner, &found);
    sqlite3_finalize(st);
    if (e == GIM_OK && !found)
        e = gfail(GIM_ENOTFOUND, "no group %lld", (long long)group_id);
    return e;
}

static gim_err member_count(sqlite3 *db, int64_t group_id, int64_t *n)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    gim_err e = prep(db, SQL_MEMBER_COUNT, &st);
    if (e != GIM_OK)
        return e;
    sqlite3_bind_int64(st, 1, group_id);
    e = step_int(db, st, n, &found);
    sqlite3_finalize(st);
    return e;
}

static gim_err check_limit(int64_t group_id, int64_t total, int64_t max)
{
    if (total <= max)
        return GIM_OK;
    if (group_id)
        return gfail(GIM_ETOOLARGE,
                     "group %lld would have %lld members, over the limit of %lld "
                     "(--max-members, limits.max_group_members); nothing changed",
                     (long long)group_id, (long long)total, (long long)max);
    return gfail(GIM_ETOOLARGE,
                 "the group would have %lld members, over the limit of %lld "
                 "(--max-members, limits.max_group_members); nothing created",
                 (long long)total, (long long)max);
}

/*
 * A write command's one-line result: printed only once COMMIT succeeded, so
 * stdout never reports a change that did not land.
 */
struct gresult {
    char line[160];
};

typedef gim_err (*group_fn)(sqlite3 *db, const struct gopts *o, struct gresult *res);

/* Runs fn in one transaction: committed when it succeeds, rolled back otherwise. */
static gim_err in_tx(sqlite3 *db, bool write, group_fn fn, const struct gopts *o)
{
    struct gresult res = {{0}};
    gim_err e = exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN");
    if (e != GIM_OK)
        return e;
    e = fn(db, o, &res);
    if (e == GIM_OK)
        e = exec(db, "COMMIT");
    if (e != GIM_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    else if (res.line[0])
        fputs(res.line, stdout);
    return e;
}

static gim_err do_create(sqlite3 *db, const struct gopts *o, struct gresult *res)
{
    const struct idlist m = o->users;
    sqlite3_stmt *ins = NULL, *mem = NULL;
    int64_t now = now_ms(), group_id = 0, total = 1;
    gim_err e = GIM_OK;
    int rc;
    for (size_t i = 0; i < m.n; i++)
        total += m.ids[i] != o->owner;
    if ((e = check_limit(0, total, o->max_members)) != GIM_OK)
        goto out;
    if ((e = prep(db, SQL_GROUP_INSERT, &ins)) != GIM_OK ||
        (e = prep(db, SQL_MEMBER_INSERT, &mem)) != GIM_OK)
        goto out;
    sqlite3_bind_text(ins, 1, o->name ? o->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 2, o->owner);
    sqlite3_bind_int64(ins, 3, now);
    if ((rc = sqlite3_step(ins)) != SQLITE_DONE) {
        e = sql_fail(db, rc, "insert group");
        goto out;
    }
    group_id = sqlite3_last_insert_rowid(db);
    for (size_t i = 0; i <= m.n; i++) {
        int64_t user = i == m.n ? o->owner : m.ids[i];
        if (i < m.n && user == o->owner)
            continue;
        sqlite3_reset(mem);
        sqlite3_bind_int64(mem, 1, group_id);
        sqlite3_bind_int64(mem, 2, user);
        sqlite3_bind_text(mem, 3, i == m.n ? "owner" : "member", -1, SQLITE_STATIC);
        sqlite3_bind_int64(mem, 4, now);
        if ((rc = sqlite3_step(mem)) != SQLITE_DONE) {
            e = sql_fail(db, rc, "insert member");
            goto out;
        }
    }
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(mem);
    if (e == GIM_OK)
        snprintf(res->line, sizeof res->line, "%lld\n", (long long)group_id);
    return e;
}

static gim_err do_add(sqlite3 *db, const struct gopts *o, struct gresult *res)
{
    const struct idlist m = o->users;
    const int64_t group_id = o->group_id, now = now_ms();
    sqlite3_stmt *role = NULL, *ins = NULL, *upd = NULL;
    int64_t owner = 0, count = 0;
    size_t added = 0, changed = 0, unchanged = 0;
    char *is_new = NULL;
    gim_err e = GIM_OK;
    int rc;
    if ((e = group_owner(db, group_id, &owner)) != GIM_OK ||
        (e = member_count(db, group_id, &count)) != GIM_OK)
        goto out;
    if ((e = prep(db, SQL_MEMBER_ROLE, &role)) != GIM_OK ||
        (e = prep(db, SQL_MEMBER_INSERT, &ins)) != GIM_OK ||
        (e = prep(db, SQL_MEMBER_SET_ROLE, &upd)) != GIM_OK)
        goto out;
    /* First pass: classify, so the limit and the owner are checked before any write. */
    is_new = calloc(m.n ? m.n : 1, 1);
    if (!is_new) {
        e = gfail(GIM_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m.n && e == GIM_OK; i++) {
        sqlite3_reset(role);
        sqlite3_bind_int64(role, 1, group_id);
        sqlite3_bind_int64(role, 2, m.ids[i]);
        rc = sqlite3_step(role);
        if (rc == SQLITE_DONE)
            is_new[i] = 1;
        else if (rc != SQLITE_ROW)
            e = sql_fail(db, rc, "read member");
        else if (o->role && strcmp((const char *)sqlite3_column_text(role, 0), "owner") == 0)
            e = gfail(GIM_EFORBIDDEN,
                      "user %lld owns group %lld; the owner's role cannot change; nothing changed",
                      (long long)m.ids[i], (long long)group_id);
        added += is_new[i];
    }
    sqlite3_reset(role);
    if (e == GIM_OK)
        e = check_limit(group_id, count + (int64_t)added, o->max_members);
    for (size_t i = 0; i < m.n && e == GIM_OK; i++) {
        sqlite3_stmt *st = is_new[i] ? ins : o->role ? upd : NULL;
        if (!st) {
            unchanged++;
            continue;
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, group_id);
        sqlite3_bind_int64(st, 2, m.ids[i]);
        sqlite3_bind_text(st, 3, o->role ? o->role : "member", -1, SQLITE_STATIC);
        if (st == ins)
            sqlite3_bind_int64(st, 4, now);
        if ((rc = sqlite3_step(st)) != SQLITE_DONE)
            e = sql_fail(db, rc, is_new[i] ? "insert member" : "update role");
        else if (st == upd && sqlite3_changes(db) > 0)
            changed++;
        else if (st == upd)
            unchanged++;
    }
    if (e == GIM_OK)
        snprintf(res->line, sizeof res->line,
                 "group=%lld added=%zu updated=%zu unchanged=%zu members=%lld\n",
                 (long long)group_id, added, changed, unchanged, (long long)(count + added));
out:
    sqlite3_finalize(role);
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    free(is_new);
    return e;
}

static gim_err do_remove(sqlite3 *db, const struct gopts *o, struct gresult *res)
{
    const struct idlist m = o->users;
    const int64_t group_id = o->group_id;
    sqlite3_stmt *del = NULL;
    int64_t owner = 0, count = 0;
    size_t removed = 0;
    gim_err e = GIM_OK;
    int rc;
    if ((e = group_owner(db, group_id, &owner)) != GIM_OK)
        goto out;
    for (size_t i = 0; i < m.n; i++)
        if (m.ids[i] == owner) {
            e = gfail(GIM_EFORBIDDEN,
                      "user %lld owns group %lld and cannot be removed; nothing changed",
                      (long long)owner, (long long)group_id);
            goto out;
        }
    if ((e = prep(db, SQL_MEMBER_DELETE, &del)) != GIM_OK)
        goto out;
    for (size_t i = 0; i < m.n; i++) {
        sqlite3_reset(del);
        sqlite3_bind_int64(del, 1, group_id);
        sqlite3_bind_int64(del, 2, m.ids[i]);
        if ((rc = sqlite3_step(del)) != SQLITE_DONE) {
            e = sql_fail(db, rc, "delete member");
            goto out;
        }
        removed += sqlite3_changes(db) > 0;
    }
    if ((e = member_count(db, group_id, &count)) != GIM_OK)
        goto out;
    snprintf(res->line, sizeof res->line, "group=%lld removed=%zu not_members=%zu members=%lld\n",
             (long long)group_id, removed, m.n - removed, (long long)count);
out:
    sqlite3_finalize(del);
    return e;
}

/* Prints s as a double-quoted string with ", \ and control bytes escaped. */
static void print_quoted(const unsigned char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if (*s < 0x20 || *s == 0x7f)
            printf("\\x%02x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static gim_err do_list(sqlite3 *db, const struct gopts *o, struct gresult *res)
{
    sqlite3_stmt *st = NULL;
    gim_err e = prep(db, SQL_GROUP_LIST, &st);
    int rc;
    (void)o;
    (void)res; /* reads print as they go */
    if (e != GIM_OK)
        return e;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        printf("id=%lld name=", (long long)sqlite3_column_int64(st, 0));
        print_quoted(sqlite3_column_text(st, 1));
        printf(" owner=%lld members=%lld\n", (long long)sqlite3_column_int64(st, 2),
               (long long)sqlite3_column_int64(st, 3));
    }
    if (rc != SQLITE_DONE)
        e = sql_fail(db, rc, "list groups");
    sqlite3_finalize(st);
    return e;
}

static gim_err do_show(sqlite3 *db, const struct gopts *o, struct gresult *res)
{
    const int64_t group_id = o->group_id;
    sqlite3_stmt *g = NULL, *m = NULL;
    gim_err e = GIM_OK;
    int rc;
    (void)res; /* reads print as they go */
    if ((e = prep(db, SQL_GROUP_SHOW, &g)) != GIM_OK ||
        (e = prep(db, SQL_MEMBER_LIST, &m)) != GIM_OK)
        goto out;
    sqlite3_bind_int64(g, 1, group_id);
    if ((rc = sqlite3_step(g)) != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? gfail(GIM_ENOTFOUND, "no group %lld", (long long)group_id)
                              : sql_fail(db, rc, "read group");
        goto out;
    }
    printf("id=%lld name=", (long long)group_id);
    print_quoted(sqlite3_column_text(g, 0));
    printf(" owner=%lld created_at=%lld members=%lld\n", (long long)sqlite3_column_int64(g, 1),
           (long long)sqlite3_column_int64(g, 2), (long long)sqlite3_column_int64(g, 3));
    sqlite3_bind_int64(m, 1, group_id);
    while ((rc = sqlite3_step(m)) == SQLITE_ROW)
        printf("user=%lld role=%s joined_at=%lld\n", (long long)sqlite3_column_int64(m, 0),
               (const char *)sqlite3_column_text(m, 1), (long long)sqlite3_column_int64(m, 2));
    if (rc != SQLITE_DONE)
        e = sql_fail(db, rc, "list members");
out:
    sqlite3_finalize(g);
    sqlite3_finalize(m);
    return e;
}

static gim_err parse_opts(int argc, char **argv, struct gopts *o)
{
    *o = (struct gopts){.sub = argv[1], .max_members = MAX_MEMBERS_DEFAULT};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (strcmp(a, "--") == 0 && ++i >= argc)
                break;
            if (o->npos == 2)
                return gfail(GIM_EBADREQ, "unexpected argument \"%s\"", argv[i]);
            o->pos[o->npos++] = argv[i];
            continue;
        }
        if (i + 1 >= argc)
            return gfail(GIM_EBADREQ, "%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--owner") == 0) {
            if (gimctl_parse_id(v, &o->owner) != 0)
                return gfail(GIM_EBADREQ, "bad owner id \"%s\" (ids are positive integers)", v);
        } else if (strcmp(a, "--members") == 0) {
            o->members = v;
        } else if (strcmp(a, "--name") == 0) {
            if (strlen(v) > NAME_MAX_BYTES)
                return gfail(GIM_EBADREQ, "--name is longer than %d bytes", NAME_MAX_BYTES);
            o->name = v;
        } else if (strcmp(a, "--role") == 0) {
            if (strcmp(v, "admin") != 0 && strcmp(v, "member") != 0)
                return gfail(GIM_EBADREQ,
                             "--role must be admin or member (a group has one owner, set at "
                             "creation)");
            o->role = v;
        } else if (strcmp(a, "--max-members") == 0) {
            if (gimctl_parse_id(v, &o->max_members) != 0)
                return gfail(GIM_EBADREQ, "--max-members needs a positive number, not \"%s\"", v);
        } else {
            return gfail(GIM_EBADREQ, "unknown option %s", a);
        }
    }
    return GIM_OK;
}

/* Which options and how many positionals each subcommand takes. */
static gim_err check_opts(const struct gopts *o, int npos, bool create, bool add)
{
    if (o->npos != npos)
        return gfail(GIM_EBADREQ, "group %s takes %d argument%s (see gimctl group --help)", o->sub,
                     npos, npos == 1 ? "" : "s");
    if (!create && (o->owner || o->members || o->name))
        return gfail(GIM_EBADREQ, "--owner, --members and --name are for group create");
    if (!add && o->role)
        return gfail(GIM_EBADREQ, "--role is for group add");
    if (create && !o->owner)
        return gfail(GIM_EBADREQ, "group create needs --owner U");
    return GIM_OK;
}

/* Parses the ids before the database is opened, so bad usage never touches it. */
static gim_err parse_targets(struct gopts *o, bool create)
{
    if (create)
        return o->members ? parse_ids(o->members, &o->users) : GIM_OK;
    if (o->npos >= 1 && gimctl_parse_id(o->pos[0], &o->group_id) != 0)
        return gfail(GIM_EBADREQ, "bad group id \"%s\" (ids are positive integers)", o->pos[0]);
    if (o->npos == 2)
        return parse_ids(o->pos[1], &o->users);
    return GIM_OK;
}

int gimctl_group(struct gimctl *g, int argc, char **argv)
{
    struct gopts o = {0};
    sqlite3 *db = NULL;
    group_fn fn = NULL;
    bool write = true;
    gim_err e;
    if (argc < 2)
        return gimctl_usage_error("group", "needs a command (create, add, remove, list, show)");
    if (strcmp(argv[1], "help") == 0) {
        group_usage(stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            group_usage(stdout);
            return 0;
        }
    if ((e = parse_opts(argc, argv, &o)) != GIM_OK)
        goto out;
    const char *sub = argv[1];
    if (strcmp(sub, "create") == 0) {
        e = check_opts(&o, 0, true, false);
        fn = do_create;
    } else if (strcmp(sub, "add") == 0) {
        e = check_opts(&o, 2, false, true);
        fn = do_add;
    } else if (strcmp(sub, "remove") == 0) {
        e = check_opts(&o, 2, false, false);
        fn = do_remove;
    } else if (strcmp(sub, "list") == 0) {
        e = check_opts(&o, 0, false, false);
        fn = do_list;
        write = false;
    } else if (strcmp(sub, "show") == 0) {
        e = check_opts(&o, 1, false, false);
        fn = do_show;
        write = false;
    } else {
        e = gfail(GIM_EBADREQ, "unknown command \"%s\" (create, add, remove, list, show)", sub);
    }
    if (e != GIM_OK || (e = parse_targets(&o, fn == do_create)) != GIM_OK)
        goto out;
    if ((e = db_open(g->db, &db)) != GIM_OK)
        goto out;
    e = in_tx(db, write, fn, &o);
out:
    sqlite3_close(db);
    free(o.users.ids);
    if (e == GIM_EBADREQ)
        fputs("see: gimctl group --help\n", stderr);
    return exit_status(e);
}
