/*
 * gim-gateway under abuse and at the end of its life: a slow consumer that
 * stops reading, oversized and garbage frames, a WebSocket text frame, the
 * idle close, and the SIGTERM drain.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "gwtestlib.h"

static struct tl_server logic;
static struct gw_server gw;

static void start_with(const char *logic_yaml, const char *extra)
{
    gwt_start_logic(&logic, logic_yaml);
    gwt_start(&gw, &logic, "gwL", NULL, extra);
}

static void start(const char *extra)
{
    gwt_start_logic(&logic, NULL);
    gwt_start(&gw, &logic, "gwL", NULL, extra);
}

/* gim-logic, then gateway gwL with those logic keys, and c signed in through it over be16. */
static void start_signed_in(const char *logic_keys, struct gwc *c, int64_t user, int64_t device)
{
    gwt_start_logic(&logic, NULL);
    gwt_start(&gw, &logic, "gwL", logic_keys, NULL);
    gwc_connect(c, &gw, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(c, user, device), PB__ERROR_CODE__EC_OK);
}

static void teardown(void)
{
    gwt_cleanup(&gw);
    tl_cleanup(&logic);
}

TestSuite(gateway_limits_it, .fini = teardown, .timeout = 120);

static int64_t online(int64_t device)
{
    char q[128];
    snprintf(q, sizeof q, "SELECT online FROM device WHERE device_id = %lld", (long long)device);
    return tl_query_int(logic.db, q);
}

static bool goes_offline(int64_t device, int ms)
{
    for (int waited = 0; waited <= ms; waited += 50) {
        if (online(device) == 0)
            return true;
        nng_msleep(50);
    }
    return false;
}

/* The gateway and gim-logic still serve a fresh client. */
static void still_serving(int64_t user, int64_t device)
{
    struct gwc c;
    gwc_connect(&c, &gw, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&c, user, device), PB__ERROR_CODE__EC_OK);
    gwc_close(&c);
}

Test(gateway_limits_it, a_slow_consumer_is_closed_and_others_are_unaffected)
{
    start("conn: {queue_soft_frames: 8, queue_soft_bytes: 65536, queue_hard_frames: 64, "
          "queue_hard_bytes: 262144, write_timeout_ms: 1000}");
    struct gwc slow, fast, s;
    gwc_connect(&slow, &gw, GWC_BE16, 4096);
    gwc_connect(&fast, &gw, GWC_WS, 0);
    gwc_connect(&s, &gw, GWC_UVARINT, 0);
    cr_assert_eq(gwc_signin(&slow, 80, 8001), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&fast, 81, 8101), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&s, 82, 8201), PB__ERROR_CODE__EC_OK);
    /* slow stops reading. 16 KiB pushes fill the socket buffers (their size depends on the
     * kernel's autotuning), then the gateway's queue (pushes dropped past the soft limit),
     * and the stalled send outlives conn.write_timeout_ms. Meanwhile the fast client gets
     * every push addressed to it, promptly. */
    static char big[16000];
    memset(big, 'x', sizeof big - 1);
    bool closed = false;
    for (int i = 1; i <= 3000 && !closed; i++) {
        Pb__Output *o = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 80, big, 1000 + i);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
        pb__output__free_unpacked(o, NULL);
        if (i % 20)
            continue;
        o = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 81, "for the fast one", 10000 + i);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
        pb__output__free_unpacked(o, NULL);
        Pb__Output *p = gwc_recv(&fast, 5000);
        cr_assert_not_null(p, "the fast client was delayed by the slow one (message %d)", i);
        cr_assert_eq(p->type, PB__PACKAGE_TYPE__PT_MESSAGE);
        pb__output__free_unpacked(p, NULL);
        closed = gwt_metric(&gw, "gim_gateway_slow_consumer_closes_total") >= 1;
    }
    /* The close comes conn.write_timeout_ms after slow's send stalled, whatever the pushes do
     * meanwhile; on a fast run the loop can end before that (it ran 3,000 sends in 1.1 s once,
     * under ctest -j6): wait for the timer rather than for more sends. */
    for (int waited = 0; !closed && waited < 5000; waited += 50) {
        nng_msleep(50);
        closed = gwt_metric(&gw, "gim_gateway_slow_consumer_closes_total") >= 1;
    }
    cr_assert(closed, "the slow consumer was not closed");
    cr_assert(goes_offline(8001, 5000), "the slow consumer was not signed out");
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_slow_consumer_closes_total"), 1);
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_pushes_dropped_total"), 1);
    cr_assert(gwc_wait_closed(&slow, 10000));
    cr_assert_eq(online(8101), 1);
    still_serving(83, 8301);
    gwc_close(&slow);
    gwc_close(&fast);
    gwc_close(&s);
}

Test(gateway_limits_it, oversized_frames_close_the_connection_on_every_framing)
{
    start("conn: {max_frame_bytes: 4096}");
    struct gwc c;
    /* be16 header announcing 5000 bytes. */
    gwc_connect(&c, &gw, GWC_BE16, 0);
    uint8_t be[2] = {5000 >> 8, 5000 & 0xff};
    gwc_write(&c, be, 2);
    cr_assert(gwc_wait_closed(&c, 5000), "be16: not closed");
    gwc_close(&c);
    /* uvarint header announcing 2^40 bytes. */
    gwc_connect(&c, &gw, GWC_UVARINT, 0);
    uint8_t uv[6] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    gwc_write(&c, uv, 6);
    cr_assert(gwc_wait_closed(&c, 5000), "uvarint: not closed");
    gwc_close(&c);
    /* A uvarint length longer than 10 bytes is malformed. */
    gwc_connect(&c, &gw, GWC_UVARINT, 0);
    uint8_t bad[12];
    memset(bad, 0x80, sizeof bad);
    gwc_write(&c, bad, sizeof bad);
    cr_assert(gwc_wait_closed(&c, 5000), "uvarint: malformed length not closed");
    gwc_close(&c);
    /* A 5000-byte WebSocket message. */
    gwc_connect(&c, &gw, GWC_WS, 0);
    static uint8_t msg[5000];
    gwc_write(&c, msg, sizeof msg);
    cr_assert(gwc_wait_closed(&c, 5000), "ws: not closed");
    gwc_close(&c);
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_closes_total{reason=\"bad_frame\"}"), 3);
    still_serving(90, 9001);
}

Test(gateway_limits_it, garbage_frames_get_an_error_and_the_connection_goes_on)
{
    start(NULL);
    enum gwc_kind kinds[] = {GWC_BE16, GWC_UVARINT, GWC_WS};
    for (int k = 0; k < 3; k++) {
        struct gwc c;
        gwc_connect(&c, &gw, kinds[k], 0);
        /* Well framed, but not a pb.Input (0xff is an invalid tag). */
        uint8_t junk[12];
        memset(junk, 0xff, sizeof junk);
        uint8_t frame[16];
        size_t h = 0;
        if (kinds[k] == GWC_BE16) {
            frame[0] = 0;
            frame[1] = sizeof junk;
            h = 2;
        } else if (kinds[k] == GWC_UVARINT) {
            frame[0] = sizeof junk;
            h = 1;
        }
        memcpy(frame + h, junk, sizeof junk);
        gwc_write(&c, frame, h + sizeof junk);
        Pb__Output *o = gwc_recv(&c, 5000);
        cr_assert_not_null(o, "kind %d: no answer to garbage", k);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_BAD_REQUEST);
        pb__output__free_unpacked(o, NULL);
        /* A valid Input with an undecodable SignInInput. */
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SIGN_IN, 3, NULL);
        o = gwc_reply(&c, 3, 5000);
        cr_assert_not_null(o);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_BAD_REQUEST);
        pb__output__free_unpacked(o, NULL);
        cr_assert_eq(gwc_signin(&c, 91, 9100 + k), PB__ERROR_CODE__EC_OK);
        gwc_close(&c);
    }
}

Test(gateway_limits_it, a_websocket_text_frame_closes_only_that_connection)
{
    start(NULL);
    struct gwc other;
    gwc_connect(&other, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&other, 92, 9201), PB__ERROR_CODE__EC_OK);
    /* A client sending text frames (nng's dialer with ws:send-text). */
    char url[64];
    nng_stream_dialer *d = NULL;
    nng_aio *aio = NULL;
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", gw.ws_port);
    cr_assert_eq(nng_stream_dialer_alloc(&d, url), 0);
    cr_assert_eq(nng_stream_dialer_set_bool(d, "ws:msgmode", true), 0);
    cr_assert_eq(nng_stream_dialer_set_bool(d, NNG_OPT_WS_SEND_TEXT, true), 0);
    cr_assert_eq(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, 5000);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    cr_assert_eq(nng_aio_result(aio), 0);
    nng_stream *s = nng_aio_get_output(aio, 0);
    nng_msg *m = NULL;
    nng_msg_alloc(&m, 0);
    nng_msg_append(m, "hello", 5);
    nng_aio_set_msg(aio, m);
    nng_stream_send(s, aio);
    nng_aio_wait(aio);
    if (nng_aio_result(aio) != 0)
        nng_msg_free(nng_aio_get_msg(aio));
    /* The gateway closes it (1003, unsupported data): the next receive fails. */
    nng_stream_recv(s, aio);
    nng_aio_wait(aio);
    cr_assert_neq(nng_aio_result(aio), 0);
    cr_assert_neq(nng_aio_result(aio), NNG_ETIMEDOUT, "text frame: connection not closed");
    nng_stream_free(s);
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    /* Everyone else carries on. */
    gwc_send(&other, PB__PACKAGE_TYPE__PT_HEARTBEAT, 5, NULL);
    Pb__Output *o = gwc_reply(&other, 5, 5000);
    cr_assert_not_null(o);
    pb__output__free_unpacked(o, NULL);
    gwc_close(&other);
    still_serving(93, 9301);
}

Test(gateway_limits_it, an_idle_connection_is_closed_and_signed_out)
{
    start("conn: {idle_seconds: 1}");
    struct gwc c, busy;
    gwc_connect(&c, &gw, GWC_UVARINT, 0);
    gwc_connect(&busy, &gw, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&c, 94, 9401), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&busy, 95, 9501), PB__ERROR_CODE__EC_OK);
    /* busy sends a frame every 300 ms and stays; c sends nothing and is closed. */
    for (int i = 0; i < 8; i++) {
        nng_msleep(300);
        gwc_send(&busy, PB__PACKAGE_TYPE__PT_HEARTBEAT, 10 + i, NULL);
        Pb__Output *o = gwc_reply(&busy, 10 + i, 5000);
        cr_assert_not_null(o, "the active connection was closed");
        pb__output__free_unpacked(o, NULL);
    }
    cr_assert(gwc_wait_closed(&c, 3000), "the idle connection is still open");
    cr_assert(goes_offline(9401, 5000));
    cr_assert_eq(online(9501), 1);
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_closes_total{reason=\"idle\"}"), 1);
    gwc_close(&c);
    gwc_close(&busy);
}

Test(gateway_limits_it, sigterm_drains_in_flight_requests_and_signs_devices_out)
{
    start(NULL);
    struct gwc a, b;
    gwc_connect(&a, &gw, GWC_BE16, 0);
    gwc_connect(&b, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&a, 96, 9601), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&b, 97, 9701), PB__ERROR_CODE__EC_OK);
    long before = gwt_metric(&gw, "gim_gateway_upstream_requests_total");
    /* gim-logic stops answering: a's sync is in flight in the gateway when SIGTERM comes. */
    gwt_freeze(logic.pid);
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwc_send(&a, PB__PACKAGE_TYPE__PT_SYNC, 42, &sy.base);
    for (int i = 0; i < 100 && gwt_metric(&gw, "gim_gateway_upstream_requests_total") == before;
         i++)
        nng_msleep(20);
    cr_assert_gt(gwt_metric(&gw, "gim_gateway_upstream_requests_total"), before);
    kill(gw.pid, SIGTERM);
    nng_msleep(300);
    /* The listeners are closed at once. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gw.be16_port)};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    cr_assert_neq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "still accepting");
    close(fd);
    kill(logic.pid, SIGCONT);
    /* The in-flight request is answered before the connection closes. */
    Pb__Output *o = gwc_reply(&a, 42, 5000);
    cr_assert_not_null(o, "the in-flight sync was not answered");
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
    pb__output__free_unpacked(o, NULL);
    cr_assert(gwc_wait_closed(&a, 5000));
    cr_assert(gwc_wait_closed(&b, 5000));
    cr_assert_eq(gwt_stop(&gw), 0, "gim-gateway did not exit 0");
    cr_assert_eq(online(9601), 0);
    cr_assert_eq(online(9701), 0);
    gwc_close(&a);
    gwc_close(&b);
}

Test(gateway_limits_it, a_reply_too_large_for_be16_is_never_sent_truncated)
{
    /* gim-logic configured for sync pages far over 64 KiB. */
    start_with("sync: {max_bytes: 400000}", NULL);
    struct gwc s, b, u, w;
    gwc_connect(&s, &gw, GWC_UVARINT, 0);
    cr_assert_eq(gwc_signin(&s, 98, 9801), PB__ERROR_CODE__EC_OK);
    static char big[16000];
    memset(big, 'y', sizeof big - 1);
    for (int i = 1; i <= 6; i++) {
        Pb__Output *o = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 99, big, i);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
        pb__output__free_unpacked(o, NULL);
    }
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    /* be16: an error for that request, and the connection goes on. */
    gwc_connect(&b, &gw, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&b, 99, 9901), PB__ERROR_CODE__EC_OK);
    gwc_send(&b, PB__PACKAGE_TYPE__PT_SYNC, 7, &sy.base);
    Pb__Output *o = gwc_reply(&b, 7, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_TOO_LARGE);
    pb__output__free_unpacked(o, NULL);
    gwc_send(&b, PB__PACKAGE_TYPE__PT_HEARTBEAT, 8, NULL);
    o = gwc_reply(&b, 8, 5000);
    cr_assert_not_null(o);
    pb__output__free_unpacked(o, NULL);
    /* uvarint and ws carry it whole. */
    gwc_connect(&u, &gw, GWC_UVARINT, 0);
    gwc_connect(&w, &gw, GWC_WS, 0);
    struct gwc *whole[] = {&u, &w};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(gwc_signin(whole[k], 99, 9902 + k), PB__ERROR_CODE__EC_OK);
        gwc_send(whole[k], PB__PACKAGE_TYPE__PT_SYNC, 9, &sy.base);
        o = gwc_reply(whole[k], 9, 5000);
        cr_assert_not_null(o);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
        cr_assert_gt(o->data.len, 65535);
        pb__output__free_unpacked(o, NULL);
    }
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_frames_too_large_total"), 1);
    gwc_close(&s);
    gwc_close(&b);
    gwc_close(&u);
    gwc_close(&w);
}

Test(gateway_limits_it, when_gim_logic_stops_answering_clients_get_unavailable_then_recover)
{
    struct gwc c;
    start_signed_in("timeout_ms: 300, attempts: 2, lease_seconds: 1", &c, 110, 11001);
    int status = 0;
    char *body = gwt_http_get(gw.http_port, "/healthz", &status);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    gwt_freeze(logic.pid);
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 5, &sy.base);
    Pb__Output *o = gwc_reply(&c, 5, 10000);
    cr_assert_not_null(o, "no answer while gim-logic is stopped");
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_UNAVAILABLE, "code %d type %d %s", o->code, o->type,
                 o->message);
    pb__output__free_unpacked(o, NULL);
    /* No answer for three lease intervals: unhealthy. */
    for (int i = 0; i < 100 && status != 503; i++) {
        nng_msleep(100);
        free(gwt_http_get(gw.http_port, "/healthz", &status));
    }
    cr_assert_eq(status, 503);
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_upstream_timeouts_total"), 2);
    kill(logic.pid, SIGCONT);
    /* The links were re-dialed while it was stopped; requests work again. */
    int code = -1;
    for (int i = 0; i < 50 && code != PB__ERROR_CODE__EC_OK; i++) {
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 100 + i, &sy.base);
        o = gwc_reply(&c, 100 + i, 5000);
        cr_assert_not_null(o);
        code = o->code;
        pb__output__free_unpacked(o, NULL);
        if (code != PB__ERROR_CODE__EC_OK)
            nng_msleep(100);
    }
    cr_assert_eq(code, PB__ERROR_CODE__EC_OK);
    for (int i = 0; i < 100 && status != 200; i++) {
        nng_msleep(100);
        free(gwt_http_get(gw.http_port, "/healthz", &status));
    }
    cr_assert_eq(status, 200);
    gwc_close(&c);
}

/*
 * A gim-logic that is slow but answers: its requests time out and are resent,
 * but its links are not re-dialed. Closing a link that answers cuts replies
 * on their way, and nng 1.5.2 can then wedge its reaper thread for good (no
 * dialer redials again, SIGTERM never ends the gateway; upstream.c's redial,
 * tests/test_gimclient_it.c). Five times: a request answered, then gim-logic
 * frozen for longer than the gateway's timeout (the request times out while
 * the link answered 0.3 s ago), then running again and the request answered
 * by its resend. Before the fix every timeout re-dialed: redials >= 1.
 */
Test(gateway_limits_it, a_slow_gim_logic_s_answering_links_are_not_re_dialed)
{
    struct gwc c;
    start_signed_in("timeout_ms: 200, attempts: 10", &c, 130, 13001);
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    for (int round = 0; round < 5; round++) {
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 10 + 2 * round, &sy.base);
        Pb__Output *o = gwc_reply(&c, 10 + 2 * round, 5000);
        cr_assert_not_null(o, "round %d: no answer", round);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "round %d: code %d", round, o->code);
        pb__output__free_unpacked(o, NULL);
        long timeouts = gwt_metric(&gw, "gim_gateway_upstream_timeouts_total");
        gwt_freeze(logic.pid);
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 11 + 2 * round, &sy.base);
        /* Until this request timed out at least once (the metric counts each try). */
        for (int i = 0;
             i < 100 && gwt_metric(&gw, "gim_gateway_upstream_timeouts_total") <= timeouts; i++)
            nng_msleep(20);
        cr_assert_gt(gwt_metric(&gw, "gim_gateway_upstream_timeouts_total"), timeouts,
                     "round %d: the request did not time out", round);
        nng_msleep(20); /* the redialer's turn (it redials at once, or after the thaw) */
        kill(logic.pid, SIGCONT);
        o = gwc_reply(&c, 11 + 2 * round, 5000);
        cr_assert_not_null(o, "round %d: no answer after gim-logic ran again", round);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "round %d: code %d", round, o->code);
        pb__output__free_unpacked(o, NULL);
    }
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_upstream_redials_total"), 0,
                 "links that answered were re-dialed");
    gwc_close(&c);
    cr_assert_eq(gwt_stop(&gw), 0);
}

/*
 * Many requests time out together, again and again, on an ipc link to a
 * stopped gim-logic, so each redial closes a dialer with thousands of
 * requests on its link or with its handshake under way. When the timeouts'
 * callbacks redialed themselves, on nng's task threads, the one closing the
 * dialer waited inside nng_dialer_close for a task thread while the others
 * waited for it on the redial lock: no task thread was left, no client got
 * an answer again, and SIGTERM never ended the gateway (upstream.c, the
 * redialer; without it, this test failed in 4 of 6 runs). Recovery once
 * gim-logic runs again is not asserted here: these aborted ipc handshakes
 * are what can leave nng 1.5.2's ipc listener dead (docs/gateway.md); the
 * tcp test above covers it.
 */
#define TOGETHER 2000
Test(gateway_limits_it, timeouts_again_and_again_on_an_ipc_link_leave_the_gateway_working)
{
    gwt_start_logic(&logic, NULL);
    /* The gateway dials gim-logic's ipc:// URL, not gwtestlib's tcp:// one. */
    struct tl_server ipc = logic;
    ipc.listen_extra[0] = '\0';
    gwt_start(&gw, &ipc, "gwI", "timeout_ms: 300, attempts: 10", NULL);
    static struct gwc c[TOGETHER];
    for (int i = 0; i < TOGETHER; i++) {
        gwc_connect(&c[i], &gw, GWC_BE16, 0);
        cr_assert_eq(gwc_signin(&c[i], 1200 + i, 120000 + i), PB__ERROR_CODE__EC_OK);
    }
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwt_freeze(logic.pid);
    for (int i = 0; i < TOGETHER; i++)
        gwc_send(&c[i], PB__PACKAGE_TYPE__PT_SYNC, 7, &sy.base);
    for (int i = 0; i < TOGETHER; i++) {
        Pb__Output *o = gwc_reply(&c[i], 7, 10000);
        cr_assert_not_null(o, "client %d got no answer: the gateway hangs", i);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_UNAVAILABLE, "client %d: code %d", i, o->code);
        pb__output__free_unpacked(o, NULL);
    }
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_upstream_redials_total"), 2);
    for (int i = 0; i < TOGETHER; i++)
        gwc_close(&c[i]);
    cr_assert_eq(gwt_stop(&gw), 0);
}
