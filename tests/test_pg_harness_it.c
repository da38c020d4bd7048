/*
 * The tests' PostgreSQL harness (tools/pgtmp.sh via ctest's pg fixture, tests/pgtestlib.c),
 * against the real server the fixture started: it is PostgreSQL 15 with the settings
 * pgtmp.sh promises; databases created at the same moment by several threads are distinct,
 * a table in one is invisible in another, and a dropped database is gone, even while a
 * connection (a killed service's) still holds it; the drop refuses databases it did not make.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtestlib.h"

#define THREADS 4

static PGconn *connect_ok(const char *url)
{
    PGconn *c = PQconnectdb(url);
    cr_assert_not_null(c);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect %s: %s", url, PQerrorMessage(c));
    return c;
}

/* The single value sql returns, into out. */
static void query1(PGconn *c, const char *sql, char *out, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    cr_assert_eq(PQntuples(r), 1, "%s: %d rows", sql, PQntuples(r));
    snprintf(out, cap, "%s", PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
    PQclear(r);
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* How many databases the server has named name (0 or 1). */
static int db_count(const char *name)
{
    PGconn *c = connect_ok(pgt_url());
    const char *params[] = {name};
    PGresult *r = PQexecParams(c, "SELECT count(*) FROM pg_database WHERE datname = $1", 1, NULL,
                               params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

Test(pg_harness, server_is_postgresql_15_as_configured)
{
    PGconn *c = connect_ok(pgt_url());
    int v = PQserverVersion(c);
    cr_expect(v >= 150000 && v < 160000, "server version %d, want 15", v);
    char val[64];
    /* pgtmp.sh's header promises these; the crash test and the benchmarks rely on fsync. */
    query1(c, "SHOW fsync", val, sizeof val);
    cr_expect_str_eq(val, "on");
    query1(c, "SHOW synchronous_commit", val, sizeof val);
    cr_expect_str_eq(val, "on");
    query1(c, "SHOW max_connections", val, sizeof val);
    cr_expect_geq(atoi(val), 200, "max_connections %s", val);
    query1(c, "SHOW listen_addresses", val, sizeof val);
    cr_expect_str_eq(val, "127.0.0.1");
    query1(c, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user", val, sizeof val);
    cr_expect_str_eq(val, "true", "the URL's user must be able to create databases");
    PQfinish(c);
}

struct maker {
    pthread_t thread;
    pthread_barrier_t *start;
    char url[PGT_URL_MAX];
    char err[1024];
    int rc;
};

static void *make_db(void *arg)
{
    struct maker *m = arg;
    pthread_barrier_wait(m->start);
    m->rc = pgt_try_create_db(m->url, sizeof m->url, m->err, sizeof m->err);
    return NULL;
}

Test(pg_harness, concurrent_databases_are_distinct_isolated_and_dropped)
{
    struct maker makers[THREADS];
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        makers[i].start = &start;
        cr_assert_eq(pthread_create(&makers[i].thread, NULL, make_db, &makers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(makers[i].thread, NULL);
    pthread_barrier_destroy(&start);

    char names[THREADS][128];
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(makers[i].rc, 0, "create %d: %s", i, makers[i].err);
        cr_assert_eq(pgt_db_name(makers[i].url, names[i], sizeof names[i]), 0, "%s", makers[i].url);
        cr_assert_eq(db_count(names[i]), 1, "%s was not created", names[i]);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(names[i], names[j], "two creates made the same database");
    }

    /* Each URL leads to its own database. */
    PGconn *c[THREADS];
    char val[256];
    for (int i = 0; i < THREADS; i++) {
        c[i] = connect_ok(makers[i].url);
        query1(c[i], "SELECT current_database()", val, sizeof val);
        cr_assert_str_eq(val, names[i]);
    }

    /* A table in one is invisible in the others; the same name elsewhere is another table. */
    exec_ok(c[0], "CREATE TABLE t (x int)");
    exec_ok(c[0], "INSERT INTO t VALUES (1)");
    for (int i = 1; i < THREADS; i++) {
        query1(c[i], "SELECT to_regclass('public.t')::text", val, sizeof val);
        cr_assert_str_eq(val, "NULL", "database %d sees database 0's table", i);
    }
    exec_ok(c[1], "CREATE TABLE t (x int)");
    exec_ok(c[1], "INSERT INTO t VALUES (2), (3)");
    query1(c[0], "SELECT string_agg(x::text, ',') FROM t", val, sizeof val);
    cr_assert_str_eq(val, "1");
    query1(c[1], "SELECT string_agg(x::text, ',') FROM t", val, sizeof val);
    cr_assert_str_eq(val, "2,3");

    /* Dropped, even with c[0] still connected to its database (FORCE). */
    for (int i = 1; i < THREADS; i++)
        PQfinish(c[i]);
    for (int i = 0; i < THREADS; i++) {
        pgt_drop_db(makers[i].url);
        cr_assert_eq(db_count(names[i]), 0, "%s is still there", names[i]);
    }
    PGresult *r = PQexec(c[0], "SELECT 1");
    cr_assert_neq(PQresultStatus(r), PGRES_TUPLES_OK, "a connection outlived its database");
    PQclear(r);
    PQfinish(c[0]);

    PGconn *gone = PQconnectdb(makers[0].url);
    cr_assert_neq(PQstatus(gone), CONNECTION_OK);
    cr_assert(strstr(PQerrorMessage(gone), "does not exist"), "%s", PQerrorMessage(gone));
    PQfinish(gone);

    /* Dropping twice is not an error (a cleanup after a failed drop). */
    pgt_drop_db(makers[0].url);
}

Test(pg_harness, drop_refuses_databases_it_did_not_make)
{
    char err[1024] = "";
    cr_assert_eq(pgt_try_drop_db(pgt_url(), err, sizeof err), -1);
    cr_assert(strstr(err, "not made by pgt_create_db"), "%s", err);
    cr_assert_eq(db_count("postgres"), 1);
}

Test(pg_harness, database_names_from_urls)
{
    char url[128];
    cr_assert_eq(pgt_url_with_db("postgresql://u@127.0.0.1:5/postgres?connect_timeout=3", "gimt_a",
                                 url, sizeof url),
                 0);
    cr_assert_str_eq(url, "postgresql://u@127.0.0.1:5/gimt_a?connect_timeout=3");
    cr_assert_eq(pgt_url_with_db("postgresql://u@[::1]:5", "gimt_a", url, sizeof url), 0);
    cr_assert_str_eq(url, "postgresql://u@[::1]:5/gimt_a");
    cr_assert_eq(pgt_url_with_db("postgres://u@h:5?sslmode=disable", "gimt_a", url, sizeof url), 0);
    cr_assert_str_eq(url, "postgres://u@h:5/gimt_a?sslmode=disable");
    cr_assert_eq(pgt_url_with_db("host=/tmp dbname=postgres", "gimt_a", url, sizeof url), 0);
    cr_assert_str_eq(url, "host=/tmp dbname=postgres dbname=gimt_a");
    cr_assert_eq(pgt_url_with_db("postgresql://u@h:5/postgres", "gimt_a", url, 20), -1);

    char name[64];
    cr_assert_eq(
        pgt_db_name("postgresql://u@127.0.0.1:5/gimt_1_2_ab?connect_timeout=3", name, sizeof name),
        0);
    cr_assert_str_eq(name, "gimt_1_2_ab");
    cr_assert_eq(pgt_db_name("host=/tmp port=5 dbname=a dbname=gimt_x", name, sizeof name), 0);
    cr_assert_str_eq(name, "gimt_x");
    cr_assert_eq(pgt_db_name("postgresql://u@h:5/averyveryverylongname", name, 8), -1);
    cr_assert_eq(pgt_db_name("postgresql://u@h:5", name, sizeof name), -1);
}
