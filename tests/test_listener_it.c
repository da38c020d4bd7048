/*
 * The listener survives clients that hang up during the SP handshake
 * (issue 11, scenario 9), against the real binary.
 *
 * Debian 12's nng 1.5.2 stops accepting on a listener for good once a client
 * hangs up before the service has written its SP header (the write fails
 * with EPIPE, which nng reports to the listener as its own close: nng issue
 * #1518, fixed in 1.6.0). That is what failed the integration tests'
 * start-up probe on a busy machine ("gim-logic did not answer within 20 s"
 * although the service logged "ready" 21 ms after start): the probe closed
 * its socket every 200 ms, and from then on every new connection was
 * negotiated but never read. Here 300 raw connections to the ipc:// URL are
 * closed at once, which kills the listener of the unfixed service every
 * time on this machine; then a new client must be answered. The service's
 * watchdog (src/listener.c) finds the listener that no longer accepts and opens it
 * again within about 2 s.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(listener, .fini = teardown, .timeout = 90);

/* Connects to the service's ipc:// socket and hangs up at once, n times. */
static void hang_up_during_handshakes(int n)
{
    const char *path = srv.url + strlen("ipc://");
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        cr_assert(fd >= 0);
        cr_assert_lt(strlen(path), sizeof a.sun_path);
        memcpy(a.sun_path, path, strlen(path) + 1);
        cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect %s", path);
        close(fd);
    }
}

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

Test(listener, clients_hanging_up_during_the_handshake_do_not_stop_the_service)
{
    /* Under the sanitizer build: nng 1.5.2 leaks the listener the watchdog replaces (see the
     * file); the service's own allocations stay checked. */
    setenv("LSAN_OPTIONS", "suppressions=" GIM_SOURCE_DIR "/tests/lsan-nng-listener.supp", 1);
    tl_start(&srv, NULL);
    for (int round = 0; round < 2; round++) {
        hang_up_during_handshakes(300);
        /* A new gateway connection is answered (1 s per attempt, 10 attempts, each on a new
         * connection: the gimclient way). */
        struct gim_client *c = NULL;
        cr_assert_eq(client_open(&c, srv.url, 1000, 10), GIM_OK);
        struct client_conn conn = {.gateway_id = "gw"};
        Pb__Output *out = NULL;
        cr_assert_eq(client_request(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, &out),
                     GIM_OK, "round %d: no answer after clients hung up; see %s", round, srv.log);
        cr_assert_eq(out->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
        pb__output__free_unpacked(out, NULL);
        client_close(c);
    }
    cr_log_info("listener restarts logged: %d", log_count("msg=\"listener restarted\""));
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}
