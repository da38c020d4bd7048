/*
 * PostgreSQL itself crashes under load (issue 17): every server process is
 * killed at once, as by a power loss, and the server comes back on the same
 * port after recovering from its WAL (tools/pgtmp.sh crash). gim-logic keeps
 * running through it. Checked: requests in the outage are answered
 * EC_UNAVAILABLE (or not at all, and resent), never with another error and
 * never by signing anyone out; the service reconnects by itself and serves
 * again; and nothing it acknowledged is lost or stored twice: every
 * acknowledged send is in the database at the seq its reply named, every
 * inbox is 1..N = user_seq.
 *
 * The crash is of a server of this test's own (a throw-away PostgreSQL 15 in
 * a temp directory, made with tools/pgtmp.sh), not of the ctest fixture's
 * that other tests share: pgtestlib finds it through GIM_TEST_PG_URL, which
 * the suite sets before anything reads it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define SENDERS 3

static char pgdir[128];
static struct tl_server a;
static struct gim_client *ca;

/* tools/pgtmp.sh CMD pgdir [ARG], its stdout (the URL for start) into out; exit status. */
static int pgtmp(const char *cmd, const char *arg, char *out, size_t cap)
{
    char line[512];
    snprintf(line, sizeof line, "bash %s/tools/pgtmp.sh %s %s %s", GIM_SOURCE_DIR, cmd, pgdir,
             arg ? arg : "");
    FILE *p = popen(line, "r");
    cr_assert_not_null(p);
    if (!out || !fgets(out, (int)cap, p)) {
        char sink[256];
        while (fgets(sink, sizeof sink, p))
            ;
    } else {
        out[strcspn(out, "\n")] = '\0';
    }
    return pclose(p);
}

static void setup(void)
{
    char url[PGT_URL_MAX] = "";
    if (!tl_pg())
        cr_skip_test("runs on PostgreSQL only (GIM_TEST_BACKEND=postgres)");
    snprintf(pgdir, sizeof pgdir, "/tmp/gimtest-pgcrash-%d", (int)getpid());
    cr_assert_eq(pgtmp("start", NULL, url, sizeof url), 0, "tools/pgtmp.sh start failed");
    cr_assert(strncmp(url, "postgresql://", 13) == 0, "no URL from pgtmp.sh: %s", url);
    setenv("GIM_TEST_PG_URL", url, 1);
    tl_start(&a, NULL);
    ca = tl_client(&a);
}

static void teardown(void)
{
    if (ca)
        client_close(ca);
    ca = NULL;
    if (a.dir[0])
        tl_cleanup(&a);
    memset(&a, 0, sizeof a);
    if (pgdir[0])
        pgtmp("stop", NULL, NULL, 0);
}

TestSuite(pg_server_crash, .init = setup, .fini = teardown, .timeout = 180);

/* Sends acknowledged so far, over all senders (read while they run: a lower bound). */
static int acknowledged(const struct tl_sender *ws)
{
    int n = 0;
    for (int i = 0; i < SENDERS; i++)
        n += __atomic_load_n(&ws[i].n, __ATOMIC_RELAXED);
    return n;
}

Test(pg_server_crash, the_database_crashing_under_load_loses_nothing_acknowledged)
{
    static struct tl_sender ws[SENDERS];
    tl_senders_start(&a, ca, ws, SENDERS);
    for (int i = 0; i < 100 && acknowledged(ws) < 50; i++)
        usleep(50 * 1000);
    cr_assert_geq(acknowledged(ws), 50, "the senders did not get going");
    /* Down for one second: the writer's and the workers' connections are cut mid-request. */
    cr_assert_eq(pgtmp("crash", "1", NULL, 0), 0, "tools/pgtmp.sh crash failed");
    int before = acknowledged(ws);
    /* The service serves again, by itself: more sends are acknowledged after the restart. */
    for (int i = 0; i < 300 && acknowledged(ws) < before + 50; i++)
        usleep(50 * 1000);
    tl_senders_stop(ws, SENDERS);
    cr_assert_geq(acknowledged(ws), before + 50,
                  "no sends acknowledged after the database came back (%d before, %d after); "
                  "see %s",
                  before, acknowledged(ws), a.log);
    cr_assert(tl_file_has(a.log, "postgres connection re-established"), "see %s", a.log);
    int st;
    cr_assert_eq(waitpid(a.pid, &st, WNOHANG), 0, "gim-logic died with its database; see %s",
                 a.log);
    int total = tl_senders_check(&a, ws, SENDERS);
    cr_log_info("acknowledged sends: %d (%d before the crash)", total, before);
}
