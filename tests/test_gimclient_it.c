/*
 * gimclient against a server that answers late: calls time out while their
 * replies are on the way, and the client must neither hang nor lose its way.
 *
 * Why (docs/reliability.md, "A reply on its way when a pipe closes"): nng
 * 1.5.2 reads a message in two reads (header, then body) and issues the
 * second from the first's callback without looking whether the pipe was
 * closed in between. When it was, the read is refused without a callback,
 * the REQ pipe's receive never completes, and nng's one reaper thread waits
 * for it for good while tearing the pipe down: from then on every nng_close
 * in the process waits too, and no dialer whose pipe drops redials (a
 * dialer redials only after its pipe is reaped). gimclient closed its
 * socket on every timeout, live pipe or not, so replies arriving late were
 * exactly what closed it under them: test_crash_it hung that way in about 2
 * of 100 runs under load (gdb: every worker in nng_close, the reaper in
 * req0's pipe stop waiting on the pipe's receive).
 *
 * The server here is an nng REP socket in this process: each request is
 * answered after a random delay of up to twice the client's timeout, so about
 * half the tries time out and are resent while their reply is still coming.
 * Eight client threads call for a few seconds; every call must end (answered,
 * or GIM_EIO after its attempts) with its own reply, and the threads must
 * keep making progress: a watchdog fails the test when no call has ended for
 * 10 s. Before the fix it failed so in 6 runs of 6, after 17 calls or so.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gimclient.h"

#define CLIENT_TIMEOUT_MS 10
#define SERVER_CTXS       16
#define CLIENTS           8
#define RUN_SECONDS       6
#define STALL_SECONDS     10

struct server_ctx {
    nng_ctx ctx;
    nng_aio *aio;
    nng_msg *msg; /* the request, echoed as the reply */
    int state;    /* 0: receiving, 1: delaying, 2: sending */
    unsigned seed;
};

static nng_socket rep;
static struct server_ctx sctx[SERVER_CTXS];
static atomic_bool stop_clients;
static atomic_int clients_done;
static atomic_long requests_received, calls_ended, calls_answered, calls_failed, wrong_replies;
static char url[128], dir[64];

static void server_cb(void *arg)
{
    struct server_ctx *s = arg;
    int rv = nng_aio_result(s->aio);
    if (rv != 0) {
        if (s->state != 0)
            nng_msg_free(s->msg);
        if (rv == NNG_ECLOSED)
            return;
        s->state = 0;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    switch (s->state) {
    case 0: /* a request: answer it late, often after the client gave up on it */
        atomic_fetch_add(&requests_received, 1);
        s->state = 1;
        s->msg = nng_aio_get_msg(s->aio);
        nng_sleep_aio((nng_duration)(rand_r(&s->seed) % (2 * CLIENT_TIMEOUT_MS + 1)), s->aio);
        break;
    case 1: /* the delay is over: the request goes back as the reply */
        s->state = 2;
        nng_aio_set_msg(s->aio, s->msg);
        nng_ctx_send(s->ctx, s->aio);
        break;
    default:
        s->state = 0;
        nng_ctx_recv(s->ctx, s->aio);
    }
}

static void *client_main(void *arg)
{
    long id = (long)arg;
    struct gim_client *c = NULL;
    cr_assert_eq(client_open(&c, url, CLIENT_TIMEOUT_MS, 50), GIM_OK);
    for (long n = 0; !atomic_load(&stop_clients); n++) {
        char req[64];
        int len = snprintf(req, sizeof req, "client %ld call %ld", id, n);
        uint8_t *reply = NULL;
        size_t rlen = 0;
        gim_err e = client_call_raw(c, req, (size_t)len, &reply, &rlen);
        if (e == GIM_OK) {
            /* A resend carries the same bytes, so a late reply to it is still this call's. */
            if (rlen != (size_t)len || memcmp(reply, req, rlen) != 0)
                atomic_fetch_add(&wrong_replies, 1);
            atomic_fetch_add(&calls_answered, 1);
        } else {
            atomic_fetch_add(&calls_failed, 1);
        }
        free(reply);
        atomic_fetch_add(&calls_ended, 1);
    }
    client_close(c);
    atomic_fetch_add(&clients_done, 1);
    return NULL;
}

Test(gimclient, late_replies_neither_hang_the_client_nor_cross_calls, .timeout = 60)
{
    snprintf(dir, sizeof dir, "/tmp/gimclient-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(url, sizeof url, "ipc://%s/rep.ipc", dir);
    cr_assert_eq(nng_rep0_open(&rep), 0);
    cr_assert_eq(nng_listen(rep, url, NULL, 0), 0);
    for (int i = 0; i < SERVER_CTXS; i++) {
        sctx[i].seed = (unsigned)i * 7919u + (unsigned)time(NULL);
        cr_assert_eq(nng_ctx_open(&sctx[i].ctx, rep), 0);
        cr_assert_eq(nng_aio_alloc(&sctx[i].aio, server_cb, &sctx[i]), 0);
        nng_ctx_recv(sctx[i].ctx, sctx[i].aio);
    }

    pthread_t th[CLIENTS];
    for (long i = 0; i < CLIENTS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, client_main, (void *)i), 0);

    /* Watch the calls end: for RUN_SECONDS, then until every thread has left its loop. */
    long last = -1;
    int still = 0;
    for (int sec = 0; atomic_load(&clients_done) < CLIENTS; sec++) {
        sleep(1);
        if (sec + 1 == RUN_SECONDS)
            atomic_store(&stop_clients, true);
        long now = atomic_load(&calls_ended) + atomic_load(&clients_done);
        still = now == last ? still + 1 : 0;
        last = now;
        /* Stuck threads cannot be joined: fail and leave (Criterion ends the process). */
        cr_assert_lt(still, STALL_SECONDS,
                     "nothing ended for %d s after %ld calls (%ld answered, %ld failed): the "
                     "client is stuck (in nng_close, behind nng's reaper?)",
                     still, atomic_load(&calls_ended), atomic_load(&calls_answered),
                     atomic_load(&calls_failed));
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);
    long calls = atomic_load(&calls_ended), resent = atomic_load(&requests_received) - calls;
    fprintf(stderr, "gimclient: %ld calls, %ld answered, %ld failed; %ld tries timed out\n", calls,
            atomic_load(&calls_answered), atomic_load(&calls_failed), resent);
    cr_expect_eq(atomic_load(&wrong_replies), 0, "a call got another call's reply");
    /* A call may fail when all its tries were too slow (a busy machine): that is its answer.
     * What must not happen is a stall (above) or a reply crossing calls. */
    cr_expect_gt(atomic_load(&calls_answered), 0, "no call was answered");
    /* The case under test happened: tries timed out and their replies came late. Before the
     * fix, the client hung after 17-19 calls. */
    cr_expect_geq(resent, 50, "only %ld tries timed out", resent);

    /* The server stays open: the clients' sockets are parked on it (they timed out with a
     * pipe up), and closing it would close their pipes under nng as the fix avoids. */
    char path[160];
    snprintf(path, sizeof path, "%s/rep.ipc", dir);
    unlink(path);
    rmdir(dir);
}
