/*
 * One gim-logic per database file (issue 11, scenario 5), with the real
 * binary: a second process on the same file, even with sockets of its own,
 * must refuse to start (exit 2, one line naming the file and the holder)
 * instead of handing out the same seqs as the first; gimctl and SQLite
 * itself must keep working beside the holder; the lock must go with the
 * process, however it ends.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;

static void teardown(void)
{
    tl_cleanup(&srv);
}

/* A second config: the same database, its own sockets (so only the database is shared). */
static void write_second_config(char *path, size_t len)
{
    snprintf(path, len, "%s/second.yaml", srv.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listen: [\"ipc://%s/second.ipc\"]\n"
            "publish: [\"ipc://%s/second-pub.ipc\"]\n"
            "http: \"\"\n"
            "database: {path: \"%s\"}\n"
            "auth: {secret: \"" TL_SECRET "\"}\n"
            "log: {level: error}\n",
            srv.dir, srv.dir, srv.db);
    fclose(f);
}

/*
 * Runs gim-logic --config config; waits up to 10 s for it to exit. Returns
 * its exit status, or -1 (it was still running: killed). stderr goes to err.
 */
static int run_second(const char *config, const char *err)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen(err, "w", stderr))
            _exit(126);
        execl(GIM_LOGIC_BIN, GIM_LOGIC_BIN, "--config", config, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *buf = calloc(1, 8192);
    size_t n = fread(buf, 1, 8191, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/*
 * Scenario 5: two processes on one database file broke the seq guarantee.
 * The second gim-logic started; sends through both produced EC_INTERNAL
 * "UNIQUE constraint failed: inbox.user_id, inbox.seq" and overwritten
 * user_seq rows.
 */
Test(dblock_it, a_second_process_on_the_same_file_refuses_to_start, .fini = teardown, .timeout = 90)
{
    char config[256], err[256], pid[32];
    tl_start(&srv, NULL);
    write_second_config(config, sizeof config);
    snprintf(err, sizeof err, "%s/second.err", srv.dir);

    int status = run_second(config, err);
    char *text = slurp(err);
    cr_assert_eq(status, 2, "the second gim-logic: exit %d (-1: it ran), stderr:\n%s", status,
                 text);
    /* One line on stderr (log lines go there too, but at level error there are none). */
    cr_assert_eq(lines(text), 1, "stderr:\n%s", text);
    cr_assert(strstr(text, srv.db), "names the database: %s", text);
    snprintf(pid, sizeof pid, "pid %ld ", (long)srv.pid);
    cr_assert(strstr(text, pid), "names the holder (%s): %s", pid, text);
    cr_assert(strstr(text, "host "), "and its host: %s", text);
    free(text);

    /* The first one is untouched and still serves. */
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 11, "gw"), 0);
    cr_assert_eq(tl_code(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL), 0);
    client_close(c);

    /* gimctl (--db) and SQLite itself ignore the lock. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --db '%s' stats >/dev/null 2>&1", GIMCTL_BIN, srv.db);
    cr_assert_eq(system(cmd), 0, "gimctl --db stats beside the service");
    snprintf(cmd, sizeof cmd, "%s --db '%s' backup '%s/copy.db' >/dev/null 2>&1", GIMCTL_BIN,
             srv.db, srv.dir);
    cr_assert_eq(system(cmd), 0, "gimctl --db backup beside the service");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE device_id = 11"), 1);
    cr_assert_eq(tl_stop(&srv), 0);
}

Test(dblock_it, the_lock_goes_with_the_process_however_it_ends, .fini = teardown, .timeout = 90)
{
    char config[256], err[256];
    tl_start(&srv, NULL);
    write_second_config(config, sizeof config);
    snprintf(err, sizeof err, "%s/second.err", srv.dir);

    /* kill -9: the kernel drops the lock; a restart on the same file takes it. */
    tl_kill9(&srv);
    tl_restart(&srv);
    cr_assert_eq(run_second(config, err), 2, "the restarted one holds it again");

    /* A clean stop drops it too: the second config now starts (and is stopped by us). */
    cr_assert_eq(tl_stop(&srv), 0);
    cr_assert_eq(run_second(config, err), -1, "the lock outlived a clean stop; see %s", err);
}
