/*
 * busy.c: a connection waits for a lock as busy_timeout would, and a stop
 * cuts the wait short (issue 11, scenario 1: before, SQLite's busy_timeout
 * held a stop for up to database.busy_timeout_ms, 10 minutes at most).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "busy.h"

static char dir[64], db[128];
static sqlite3 *holder; /* holds the write lock */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gimbusy-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/t.db", dir);
    cr_assert_eq(sqlite3_open(db, &holder), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(holder,
                              "PRAGMA journal_mode = WAL; CREATE TABLE t (x); BEGIN IMMEDIATE; "
                              "INSERT INTO t VALUES (1);",
                              NULL, NULL, NULL),
                 SQLITE_OK);
}

static void teardown(void)
{
    char cmd[128];
    sqlite3_close(holder);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(busy, .init = setup, .fini = teardown, .timeout = 30);

struct attempt {
    struct busy_wait *b;
    int rc;
    int64_t took_ms;
};

/* Another connection tries to write, waiting through b. */
static void *try_write(void *arg)
{
    struct attempt *a = arg;
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_busy_handler(h, busy_wait_handler, a->b); /* as storage's tx->wait_locks does */
    int64_t t = now_ms();
    a->rc = sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    a->took_ms = now_ms() - t;
    if (a->rc == SQLITE_OK)
        sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(h);
    return NULL;
}

Test(busy, waits_its_timeout_then_gives_up)
{
    struct busy_wait b;
    busy_wait_init(&b, 300);
    struct attempt a = {.b = &b};
    try_write(&a);
    cr_assert_eq(a.rc, SQLITE_BUSY);
    cr_assert_geq(a.took_ms, 290, "gave up after %lld ms", (long long)a.took_ms);
    busy_wait_destroy(&b);
}

Test(busy, gets_the_lock_when_it_is_released_in_time)
{
    struct busy_wait b;
    busy_wait_init(&b, 10000);
    struct attempt a = {.b = &b};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, try_write, &a), 0);
    usleep(200 * 1000);
    cr_assert_eq(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    pthread_join(t, NULL);
    cr_assert_eq(a.rc, SQLITE_OK);
    busy_wait_destroy(&b);
}

Test(busy, cancel_ends_a_long_wait_at_once_and_every_later_one)
{
    struct busy_wait b;
    busy_wait_init(&b, 600000); /* database.busy_timeout_ms at its maximum */
    struct attempt a = {.b = &b};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, try_write, &a), 0);
    usleep(300 * 1000);
    int64_t c = now_ms();
    busy_wait_cancel(&b);
    pthread_join(t, NULL);
    cr_assert_eq(a.rc, SQLITE_BUSY);
    /* The bound is generous for a loaded machine; SQLite's busy_timeout would take 600 s. */
    cr_assert_lt(now_ms() - c, 2000, "the wait went on %lld ms after the cancel",
                 (long long)(now_ms() - c));
    struct attempt later = {.b = &b};
    try_write(&later);
    cr_assert_eq(later.rc, SQLITE_BUSY);
    cr_assert_lt(later.took_ms, 2000, "a wait after the cancel took %lld ms",
                 (long long)later.took_ms);
    busy_wait_destroy(&b);
}
