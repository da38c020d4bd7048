#include "pgtestlib.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* The prefix of every database pgt_create_db makes; pgt_drop_db drops no other. */
#define PGT_PREFIX "gimt_"

static pthread_once_t url_once = PTHREAD_ONCE_INIT;
static char url_buf[PGT_URL_MAX];
static char url_err[1024];

/* Reads the first line of dir/url into url_buf; 0, or -1 with url_err set. */
static int read_url_file(const char *dir, const char *from)
{
    char path[PGT_URL_MAX];
    snprintf(path, sizeof path, "%s/url", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(url_err, sizeof url_err,
                 "no PostgreSQL for the tests: %s (%s) does not exist. ctest starts one for the "
                 "tests marked gim_pg_tests() in tests/CMakeLists.txt (its pg_start fixture): run "
                 "this test through ctest (e.g. ctest -R NAME), or start one by hand with "
                 "tools/pgtmp.sh start %s, or set GIM_TEST_PG_URL",
                 path, from, dir);
        return -1;
    }
    int rc = -1;
    if (fgets(url_buf, sizeof url_buf, f)) {
        url_buf[strcspn(url_buf, "\r\n")] = '\0';
        rc = url_buf[0] ? 0 : -1;
    }
    fclose(f);
    if (rc != 0)
        snprintf(url_err, sizeof url_err, "no PostgreSQL for the tests: %s is empty", path);
    return rc;
}

static void load_url(void)
{
    const char *env = getenv("GIM_TEST_PG_URL");
    if (env && env[0]) {
        if (strlen(env) >= sizeof url_buf) {
            snprintf(url_err, sizeof url_err, "GIM_TEST_PG_URL is too long");
            return;
        }
        strcpy(url_buf, env);
        return;
    }
    const char *dir = getenv("GIM_TEST_PG_DIR");
    if (dir && dir[0]) {
        read_url_file(dir, "from GIM_TEST_PG_DIR");
        return;
    }
#ifdef GIM_TEST_PG_DIR
    read_url_file(GIM_TEST_PG_DIR, "the build's fixture directory");
#else
    snprintf(url_err, sizeof url_err,
             "no PostgreSQL for the tests: set GIM_TEST_PG_URL or GIM_TEST_PG_DIR");
#endif
}

/* The server's URL, or NULL with the reason in err. */
static const char *try_url(char *err, size_t errcap)
{
    pthread_once(&url_once, load_url);
    if (url_buf[0])
        return url_buf;
    snprintf(err, errcap, "%s", url_err);
    return NULL;
}

const char *pgt_url(void)
{
    char err[1024];
    const char *url = try_url(err, sizeof err);
    cr_assert_not_null(url, "%s", err);
    return url;
}

static PGconn *connect_to(const char *url, char *err, size_t errcap)
{
    /* dbname first: the URL is expanded there, and the keys after it win. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "10", "pgtestlib", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        snprintf(err, errcap, "cannot connect to %s: out of memory", url);
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errcap, "cannot connect to %s: %s", url, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs sql on c ("CREATE/DROP DATABASE <ident> ...": ident is quoted here); 0 or -1. */
static int exec_on_db(PGconn *c, const char *verb, const char *name, const char *tail, char *err,
                      size_t errcap)
{
    int rc = -1;
    char *ident = PQescapeIdentifier(c, name, strlen(name));
    if (!ident) {
        snprintf(err, errcap, "%s %s: %s", verb, name, PQerrorMessage(c));
        return -1;
    }
    char sql[PGT_URL_MAX];
    snprintf(sql, sizeof sql, "%s %s%s", verb, ident, tail);
    PQfreemem(ident);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        rc = 0;
    else
        snprintf(err, errcap, "%s failed: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return rc;
}

int pgt_url_with_db(const char *base, const char *name, char *out, size_t cap)
{
    int n;
    const char *scheme = strstr(base, "://");
    if (!scheme) {
        n = snprintf(out, cap, "%s dbname=%s", base, name);
    } else {
        const char *path = scheme + 3 + strcspn(scheme + 3, "/?");
        const char *rest = path;
        if (*path == '/')
            rest = path + 1 + strcspn(path + 1, "?");
        n = snprintf(out, cap, "%.*s/%s%s", (int)(path - base), base, name, rest);
    }
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int pgt_db_name(const char *url, char *out, size_t cap)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        PQfreemem(perr);
        return -1;
    }
    int rc = -1;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "dbname") == 0 && o->val && o->val[0] && strlen(o->val) < cap) {
            strcpy(out, o->val);
            rc = 0;
        }
    }
    PQconninfoFree(opts);
    return rc;
}

int pgt_try_create_db(char *url_out, size_t cap, char *err, size_t errcap)
{
    static atomic_uint counter;
    const char *base = try_url(err, errcap);
    if (!base)
        return -1;
    uint32_t rnd;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        snprintf(err, errcap, "getrandom failed");
        return -1;
    }
    /* pid and counter: distinct within this machine's running tests; the random part keeps
     * a reused pid (ctest --repeat) off a database an earlier crashed run left. */
    char name[64];
    snprintf(name, sizeof name, PGT_PREFIX "%ld_%u_%08x", (long)getpid(),
             atomic_fetch_add(&counter, 1), rnd);
    if (pgt_url_with_db(base, name, url_out, cap) != 0) {
        snprintf(err, errcap, "the URL of database %s does not fit in %zu bytes", name, cap);
        return -1;
    }
    PGconn *c = connect_to(base, err, errcap);
    if (!c)
        return -1;
    /* template0 takes no connections, so no other session can make the copy fail ("source
     * database is being accessed by other users"), as one on template1 could. */
    int rc = exec_on_db(c, "CREATE DATABASE", name, " TEMPLATE template0", err, errcap);
    PQfinish(c);
    return rc;
}

int pgt_try_drop_db(const char *url, char *err, size_t errcap)
{
    char name[128];
    if (pgt_db_name(url, name, sizeof name) != 0) {
        snprintf(err, errcap, "pgt_drop_db: %s names no database", url);
        return -1;
    }
    if (strncmp(name, PGT_PREFIX, strlen(PGT_PREFIX)) != 0 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name)) {
        snprintf(err, errcap, "pgt_drop_db: %s was not made by pgt_create_db; not dropping it",
                 name);
        return -1;
    }
    const char *base = try_url(err, errcap);
    if (!base)
        return -1;
    PGconn *c = connect_to(base, err, errcap);
    if (!c)
        return -1;
    int rc = exec_on_db(c, "DROP DATABASE IF EXISTS", name, " WITH (FORCE)", err, errcap);
    PQfinish(c);
    return rc;
}

void pgt_create_db(char *url_out, size_t cap)
{
    char err[1024];
    int rc = pgt_try_create_db(url_out, cap, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
}

void pgt_drop_db(const char *url)
{
    char err[1024];
    int rc = pgt_try_drop_db(url, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
}
