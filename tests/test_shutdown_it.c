/*
 * Stopping and signals, against the real binary (issue 11, scenarios 1 and 8).
 *
 * Scenario 1: SIGTERM while writes wait for a lock another process holds
 * (the sqlite3 CLI in BEGIN EXCLUSIVE with one write, writer.max_batch 1, 10
 * sends queued). Before the fix server_stop() waited at most ~30 s for its
 * contexts, then freed them while the writer still held their queued jobs:
 * heap-use-after-free in run_job / writer_run_batch under ASan, SIGSEGV in
 * the release build, once the lock went away 35 s after the SIGTERM. Now a
 * stop never waits for a lock: every queued request is answered (here
 * EC_UNAVAILABLE: the lock is held throughout), the service exits 0 while
 * the lock is still held, within the documented bound, whatever
 * busy_timeout_ms is (the default and the maximum are both tried), and the
 * refused sends changed nothing, so the same request_ids succeed after a
 * restart. Under the ASan build, exit 0 also means no sanitizer report and
 * no leak.
 *
 * Scenario 8: SIGHUP reloads log.level from the same file and logs what it
 * applied and what needs a restart; a file that no longer loads changes
 * nothing; SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO and SIGPIPE are logged
 * or ignored and the service keeps answering; SIGQUIT stops it cleanly.
 * Before the fix SIGHUP and SIGUSR1 killed it on the spot.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define EC_OK          PB__ERROR_CODE__EC_OK
#define EC_UNAVAILABLE PB__ERROR_CODE__EC_UNAVAILABLE

#define QUEUED 10
/* How long the CLI keeps the lock after SIGTERM unless the service is gone first (the issue's
 * recipe: 35 s, past the old 30 s drain limit). */
#define HOLD_AFTER_TERM_MS 35000
/* docs/reliability.md: with the database locked a stop answers everything within milliseconds;
 * this bound is generous for a loaded 2-core machine and an ASan build. */
#define STOP_BOUND_MS 10000

static struct tl_server srv;
static FILE *cli_lock;

static void teardown(void)
{
    if (cli_lock) {
        fprintf(cli_lock, "ROLLBACK;\n");
        pclose(cli_lock);
        cli_lock = NULL;
    }
    tl_cleanup(&srv);
}

TestSuite(shutdown, .fini = teardown, .timeout = 150);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Number of lines of the service's log containing needle. */
static int log_count(const char *needle)
{
    FILE *f = fopen(srv.log, "r");
    char line[4096];
    int n = 0;
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* One queued send, on its own connection, as one gateway request. */
struct sender {
    pthread_t thread;
    int64_t rid;
    int code; /* -1: no reply */
};

static void *send_one(void *arg)
{
    struct sender *s = arg;
    struct gim_client *c = NULL;
    struct client_conn from = {
        .user_id = 1, .device_id = 11, .gateway_id = "gw", .client_addr = "127.0.0.1"};
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)"queued";
    m.message_content.len = 6;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = NULL;
    s->code = -1;
    /* One attempt, a timeout past the whole scenario: a missing reply is what we look for. */
    if (client_open(&c, srv.url, HOLD_AFTER_TERM_MS + 10000, 1) != GIM_OK)
        return NULL;
    if (client_request(c, &from, PB__PACKAGE_TYPE__PT_MESSAGE, s->rid, &ms.base, &out) == GIM_OK) {
        s->code = out->code;
        pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

/* Waits up to ms for the service to exit; returns its exit status (128+signal), or -1. */
static int wait_exit(int ms)
{
    int64_t until = now_ms() + ms;
    do {
        int st;
        if (waitpid(srv.pid, &st, WNOHANG) == srv.pid) {
            srv.pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(20);
    } while (now_ms() < until);
    return -1;
}

static int send_again(struct gim_client *c, const struct client_conn *from, int64_t rid)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)"queued";
    m.message_content.len = 6;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return tl_code(c, from, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base);
}

/* Scenario 1 with this busy_timeout_ms. */
static void sigterm_with_writes_queued_behind_a_lock(const char *busy_key)
{
    tl_start(&srv, "writer: {max_batch: 1}\nlog: {level: debug}\n");
    cr_assert_eq(tl_stop(&srv), 0);
    tl_reconfigure(&srv, busy_key, "writer: {max_batch: 1}\nlog: {level: debug}\n");
    tl_restart(&srv);
    struct gim_client *c = tl_client(&srv);
    struct client_conn a, b;
    cr_assert_eq(tl_signin(c, &a, 1, 11, "gw"), EC_OK);
    cr_assert_eq(tl_signin(c, &b, 2, 21, "gw"), EC_OK);
    client_close(c);
    int64_t messages = tl_query_int(srv.db, "SELECT count(*) FROM message");

    cli_lock = tl_hold_write_lock(srv.db, "EXCLUSIVE");
    struct sender s[QUEUED];
    for (int i = 0; i < QUEUED; i++) {
        s[i] = (struct sender){.rid = 100 + i};
        cr_assert_eq(pthread_create(&s[i].thread, NULL, send_one, &s[i]), 0);
    }
    /* Let every send reach the writer: one batch waits for the lock, nine are queued. The
     * service logs each admitted write at debug (up to 20 s on a loaded machine); a build
     * without that line (the code before the fix) gets 3 s. */
    int64_t t0 = now_ms();
    for (int n; (n = log_count("msg=\"write admitted\"")) < QUEUED;) {
        if (now_ms() - t0 > 20000 || (n == 0 && now_ms() - t0 > 3000))
            break;
        sleep_ms(20);
    }
    sleep_ms(200);
    for (int i = 0; i < QUEUED; i++)
        cr_assert_eq(s[i].code, -1, "send %d was answered before the stop (code %d)", i, s[i].code);

    int64_t term = now_ms();
    kill(srv.pid, SIGTERM);
    int status = wait_exit(HOLD_AFTER_TERM_MS);
    int64_t stopped = now_ms() - term;
    bool exited_under_lock = status != -1;
    fprintf(cli_lock, "COMMIT;\n");
    cr_assert_eq(pclose(cli_lock), 0, "the sqlite3 CLI failed");
    cli_lock = NULL;
    if (status == -1)
        status = wait_exit(30000);
    for (int i = 0; i < QUEUED; i++)
        pthread_join(s[i].thread, NULL);

    cr_log_info("%s: exit status %d %lld ms after SIGTERM, the lock still held", busy_key, status,
                (long long)stopped);
    cr_assert(exited_under_lock, "the stop waited for the lock (still running %d ms after SIGTERM)",
              HOLD_AFTER_TERM_MS);
    cr_assert_eq(status, 0, "exit status %d after SIGTERM; see %s", status, srv.log);
    cr_assert_lt(stopped, STOP_BOUND_MS, "the stop took %lld ms", (long long)stopped);
    for (int i = 0; i < QUEUED; i++) {
        cr_assert_neq(s[i].code, -1, "queued send %d got no reply", i);
        cr_assert_eq(s[i].code, EC_UNAVAILABLE, "queued send %d: code %d", i, s[i].code);
    }
    /* Refused means nothing written: after a restart the same request_ids succeed, once. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), messages);
    tl_restart(&srv);
    c = tl_client(&srv);
    for (int i = 0; i < QUEUED; i++)
        cr_assert_eq(send_again(c, &a, s[i].rid), EC_OK);
    for (int i = 0; i < QUEUED; i++)
        cr_assert_eq(send_again(c, &a, s[i].rid), EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), messages + QUEUED);
    client_close(c);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}

Test(shutdown, sigterm_with_writes_queued_behind_a_lock_default_busy_timeout)
{
    sigterm_with_writes_queued_behind_a_lock("busy_timeout_ms: 5000");
}

Test(shutdown, sigterm_with_writes_queued_behind_a_lock_maximum_busy_timeout)
{
    sigterm_with_writes_queued_behind_a_lock("busy_timeout_ms: 600000");
}

/* ---- scenario 8: signals --------------------------------------------------------- */

/* Waits up to 5 s for the log to hold more than `before` lines containing needle. */
static bool log_grows(const char *needle, int before)
{
    for (int i = 0; i < 250; i++) {
        if (log_count(needle) > before)
            return true;
        sleep_ms(20);
    }
    return false;
}

static void expect_alive(struct gim_client *c, const struct client_conn *conn, const char *after)
{
    int st;
    cr_assert_neq(waitpid(srv.pid, &st, WNOHANG), srv.pid, "gim-logic died after %s; see %s", after,
                  srv.log);
    cr_assert_eq(tl_code(c, conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 0, NULL), EC_OK,
                 "no heartbeat after %s", after);
}

Test(shutdown, signals_reload_or_are_ignored)
{
    tl_start(&srv, "log: {level: info}\n");
    struct gim_client *c = tl_client(&srv);
    struct client_conn a;
    cr_assert_eq(tl_signin(c, &a, 1, 11, "gw"), EC_OK);

    /* Signals whose default would kill the process. */
    static const int ignored[] = {SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO, SIGPIPE};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        kill(srv.pid, ignored[i]);
        sleep_ms(100);
        expect_alive(c, &a, strsignal(ignored[i]));
    }
    cr_assert_geq(log_count("msg=\"signal ignored\""), 5, "ignored signals are logged");

    /* SIGHUP: log.level debug from the same file; heartbeats are then logged at debug. */
    int debug_before = log_count("level=debug msg=\"request\"");
    cr_assert_eq(debug_before, 0);
    tl_reconfigure(&srv, NULL, "log: {level: debug}\nsync: {page_size: 7}\n");
    int reloads = log_count("msg=\"reloaded\"");
    kill(srv.pid, SIGHUP);
    cr_assert(log_grows("msg=\"reloaded\"", reloads), "no reload logged; see %s", srv.log);
    cr_assert_eq(log_count("applied=\"log.level=debug\" needs_restart=\"sync.page_size\""), 1,
                 "the reload names what it applied and what needs a restart; see %s", srv.log);
    expect_alive(c, &a, "SIGHUP");
    cr_assert_gt(log_count("level=debug msg=\"request\""), debug_before,
                 "log.level debug was not applied");

    /* A file that no longer loads changes nothing. */
    tl_reconfigure(&srv, NULL, "log: {level: loud}\n");
    int failed = log_count("msg=\"reload failed, configuration unchanged\"");
    kill(srv.pid, SIGHUP);
    cr_assert(log_grows("msg=\"reload failed, configuration unchanged\"", failed));
    cr_assert_eq(log_count("log.level: must be one of"), 1, "see %s", srv.log);
    int debug_now = log_count("level=debug msg=\"request\"");
    expect_alive(c, &a, "a bad reload");
    cr_assert_gt(log_count("level=debug msg=\"request\""), debug_now, "still at debug");

    /* Back to warn: heartbeats are no longer logged, the reload line still is. */
    tl_reconfigure(&srv, NULL, "log: {level: warn}\n");
    reloads = log_count("msg=\"reloaded\"");
    kill(srv.pid, SIGHUP);
    cr_assert(log_grows("msg=\"reloaded\"", reloads));
    cr_assert_eq(log_count("level=warn msg=\"reloaded\" config="), 1, "see %s", srv.log);
    debug_now = log_count("level=debug msg=\"request\"");
    expect_alive(c, &a, "SIGHUP to warn");
    cr_assert_eq(log_count("level=debug msg=\"request\""), debug_now);
    client_close(c);

    /* SIGQUIT stops as SIGTERM does: drained, exit 0. */
    kill(srv.pid, SIGQUIT);
    cr_assert_eq(wait_exit(STOP_BOUND_MS), 0, "see %s", srv.log);
}
