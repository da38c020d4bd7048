/*
 * Sessions through gim-gateway: pushes to devices on two gateways, both
 * ack forms, a re-sign-in replacing the old connection (on the same gateway
 * and on another) without signing the new session out, sign-out on close,
 * and the lease keeping silent devices online.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "gwtestlib.h"

static struct tl_server logic;
static struct gw_server gwa, gwb;

static void setup(void)
{
    /* A short presence timeout: only the lease keeps a silent device online. */
    gwt_start_logic(&logic, "presence: {timeout_seconds: 5}");
    gwt_start(&gwa, &logic, "gwA", "lease_seconds: 1", NULL);
    gwt_start(&gwb, &logic, "gwB", "lease_seconds: 1", NULL);
}

static void teardown(void)
{
    gwt_cleanup(&gwa);
    gwt_cleanup(&gwb);
    tl_cleanup(&logic);
}

TestSuite(gateway_session_it, .init = setup, .fini = teardown, .timeout = 90);

static int64_t device_q(const char *col, int64_t device)
{
    char q[160];
    snprintf(q, sizeof q, "SELECT %s FROM device WHERE device_id = %lld", col, (long long)device);
    return tl_query_int(logic.db, q);
}

/* Polls the device row until col == want (sign-outs are asynchronous to the close). */
static bool device_becomes(const char *col, int64_t device, int64_t want, int ms)
{
    for (int waited = 0; waited <= ms; waited += 50) {
        if (device_q(col, device) == want)
            return true;
        nng_msleep(50);
    }
    return false;
}

static int64_t push_seq(Pb__Output *p)
{
    cr_assert_not_null(p, "no push");
    cr_assert_eq(p->type, PB__PACKAGE_TYPE__PT_MESSAGE);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, p->data.len, p->data.data);
    cr_assert_not_null(ms);
    int64_t seq = ms->message->seq;
    pb__message_send__free_unpacked(ms, NULL);
    pb__output__free_unpacked(p, NULL);
    return seq;
}

Test(gateway_session_it, pushes_reach_two_devices_on_two_gateways)
{
    struct gwc a1, a2, s;
    gwc_connect(&a1, &gwa, GWC_BE16, 0);
    gwc_connect(&a2, &gwb, GWC_WS, 0);
    gwc_connect(&s, &gwa, GWC_UVARINT, 0);
    cr_assert_eq(gwc_signin(&a1, 30, 3001), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&a2, 30, 3002), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&s, 31, 3101), PB__ERROR_CODE__EC_OK);
    for (int i = 1; i <= 3; i++) {
        Pb__Output *r = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 30, "to both", 100 + i);
        cr_assert_eq(r->code, PB__ERROR_CODE__EC_OK, "%s", r->message);
        pb__output__free_unpacked(r, NULL);
    }
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(push_seq(gwc_recv(&a1, 10000)), i);
        cr_assert_eq(push_seq(gwc_recv(&a2, 10000)), i);
    }
    gwc_close(&a1);
    gwc_close(&a2);
    gwc_close(&s);
}

Test(gateway_session_it, ack_in_both_forms)
{
    struct gwc r, s;
    gwc_connect(&r, &gwa, GWC_BE16, 0);
    gwc_connect(&s, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&r, 40, 4001), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&s, 41, 4101), PB__ERROR_CODE__EC_OK);
    for (int i = 1; i <= 2; i++) {
        Pb__Output *o = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 40, "m", 10 + i);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
        pb__output__free_unpacked(o, NULL);
        cr_assert_eq(push_seq(gwc_recv(&r, 10000)), i);
    }
    /* gim-logic's own form: PT_MESSAGE_ACK, answered. */
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 1;
    ack.receive_time = 1700000000000;
    gwc_send(&r, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 21, &ack.base);
    Pb__Output *o = gwc_reply(&r, 21, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
    pb__output__free_unpacked(o, NULL);
    cr_assert_eq(device_q("ack_seq", 4001), 1);
    /* gim's seed-era form: PT_MESSAGE carrying a MessageACK, reusing the push's request_id;
     * no reply. The heartbeat after it is the next thing the client reads. */
    ack.device_ack = 2;
    gwc_send(&r, PB__PACKAGE_TYPE__PT_MESSAGE, 12, &ack.base);
    gwc_send(&r, PB__PACKAGE_TYPE__PT_HEARTBEAT, 22, NULL);
    o = gwc_recv(&r, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->request_id, 22, "the seed-form ack was answered (request_id %lld code %d)",
                 (long long)o->request_id, o->code);
    pb__output__free_unpacked(o, NULL);
    cr_assert_eq(device_q("ack_seq", 4001), 2);
    cr_assert_eq(gwt_metric(&gwa, "gim_gateway_replies_suppressed_total"), 1);
    gwc_close(&r);
    gwc_close(&s);
}

Test(gateway_session_it, sign_in_again_on_the_same_gateway_replaces_the_old_connection)
{
    struct gwc old, fresh;
    gwc_connect(&old, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&old, 50, 5001), PB__ERROR_CODE__EC_OK);
    gwc_connect(&fresh, &gwa, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&fresh, 50, 5001), PB__ERROR_CODE__EC_OK);
    cr_assert(gwc_wait_closed(&old, 5000), "the old connection was not closed");
    /* The old connection's close signed nobody out: the new session works and stays. */
    nng_msleep(300);
    cr_assert_eq(device_q("online", 5001), 1);
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwc_send(&fresh, PB__PACKAGE_TYPE__PT_SYNC, 3, &sy.base);
    Pb__Output *o = gwc_reply(&fresh, 3, 5000);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
    pb__output__free_unpacked(o, NULL);
    cr_assert_eq(gwt_metric(&gwa, "gim_gateway_closes_total{reason=\"replaced\"}"), 1);
    /* And pushes go to the new connection. */
    struct gwc s;
    gwc_connect(&s, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&s, 51, 5101), PB__ERROR_CODE__EC_OK);
    o = gwc_send_text(&s, PB__RECEIVER_TYPE__RT_USER, 50, "still here?", 9);
    pb__output__free_unpacked(o, NULL);
    cr_assert_eq(push_seq(gwc_recv(&fresh, 10000)), 1);
    gwc_close(&old);
    gwc_close(&fresh);
    gwc_close(&s);
}

Test(gateway_session_it, sign_in_at_another_gateway_closes_the_old_connection_there)
{
    struct gwc old, fresh;
    gwc_connect(&old, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&old, 52, 5201), PB__ERROR_CODE__EC_OK);
    gwc_connect(&fresh, &gwb, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&fresh, 52, 5201), PB__ERROR_CODE__EC_OK);
    /* gim-logic tells gwA (a PT_SIGN_OUT delivery); gwA forwards it and closes. */
    Pb__Output *o = gwc_recv(&old, 5000);
    cr_assert_not_null(o, "no PT_SIGN_OUT notice");
    cr_assert_eq(o->type, PB__PACKAGE_TYPE__PT_SIGN_OUT);
    pb__output__free_unpacked(o, NULL);
    cr_assert(gwc_wait_closed(&old, 5000));
    nng_msleep(300);
    cr_assert_eq(device_q("online", 5201), 1);
    char q[128];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM device WHERE device_id = 5201 AND gateway_id='gwB'");
    cr_assert_eq(tl_query_int(logic.db, q), 1);
    cr_assert_eq(gwt_metric(&gwa, "gim_gateway_closes_total{reason=\"kicked\"}"), 1);
    gwc_close(&old);
    gwc_close(&fresh);
}

Test(gateway_session_it, closing_the_connection_signs_the_device_out)
{
    struct gwc c;
    gwc_connect(&c, &gwb, GWC_UVARINT, 0);
    cr_assert_eq(gwc_signin(&c, 60, 6001), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(device_q("online", 6001), 1);
    gwc_close(&c);
    cr_assert(device_becomes("online", 6001, 0, 5000), "not signed out after close");
}

Test(gateway_session_it, the_lease_keeps_a_silent_device_online)
{
    struct gwc c;
    gwc_connect(&c, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&c, 70, 7001), PB__ERROR_CODE__EC_OK);
    /* Twice the presence timeout without a single frame from the client. */
    nng_msleep(10500);
    cr_assert_eq(device_q("online", 7001), 1);
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 4, &sy.base);
    Pb__Output *o = gwc_reply(&c, 4, 5000);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
    pb__output__free_unpacked(o, NULL);
    cr_assert_eq(gwt_metric(&gwa, "gim_gateway_lease_ok"), 1);
    gwc_close(&c);
}

/*
 * The old connection closes by itself while the device's new sign-in is in flight:
 * its sign-out waits for the sign-in (one device, one operation at a time) and is then
 * skipped, because the old connection is no longer the device's current one.
 */
Test(gateway_session_it, an_old_connection_closing_during_a_new_sign_in_signs_nobody_out)
{
    struct gwc old, fresh;
    gwc_connect(&old, &gwa, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&old, 53, 5301), PB__ERROR_CODE__EC_OK);
    gwc_connect(&fresh, &gwa, GWC_UVARINT, 0);
    long before = gwt_metric(&gwa, "gim_gateway_upstream_requests_total");
    gwt_freeze(logic.pid);
    char *tok = tl_token(53, 5301, 3600);
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = 53;
    in.device_id = 5301;
    in.token = tok;
    gwc_send(&fresh, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &in.base);
    free(tok);
    for (int i = 0; i < 100 && gwt_metric(&gwa, "gim_gateway_upstream_requests_total") == before;
         i++)
        nng_msleep(20);
    gwc_close(&old); /* the gateway sees the old connection close now */
    long closed = 0;
    for (int i = 0; i < 100 && closed < 1; i++) {
        closed = gwt_metric(&gwa, "gim_gateway_closes_total{reason=\"peer\"}");
        nng_msleep(20);
    }
    cr_assert_geq(closed, 1);
    kill(logic.pid, SIGCONT);
    Pb__Output *o = gwc_reply(&fresh, 1, 10000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
    pb__output__free_unpacked(o, NULL);
    nng_msleep(500);
    cr_assert_eq(device_q("online", 5301), 1, "the new session was signed out");
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    gwc_send(&fresh, PB__PACKAGE_TYPE__PT_SYNC, 2, &sy.base);
    o = gwc_reply(&fresh, 2, 5000);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "%s", o->message);
    pb__output__free_unpacked(o, NULL);
    gwc_close(&fresh);
}

/* A WebSocket client that closes while its frame (here a seed-form ack, which gets no
 * reply) is at gim-logic: the gateway notices the close at once and signs it out. */
Test(gateway_session_it, a_websocket_closed_during_a_request_is_signed_out_promptly)
{
    struct gwc c;
    gwc_connect(&c, &gwa, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&c, 54, 5401), PB__ERROR_CODE__EC_OK);
    gwt_freeze(logic.pid);
    long before = gwt_metric(&gwa, "gim_gateway_upstream_requests_total");
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_MESSAGE, 7, &ack.base);
    for (int i = 0; i < 100 && gwt_metric(&gwa, "gim_gateway_upstream_requests_total") == before;
         i++)
        nng_msleep(20);
    gwc_close(&c);
    nng_msleep(300);
    kill(logic.pid, SIGCONT);
    cr_assert(device_becomes("online", 5401, 0, 5000), "the closed connection was not signed out");
}
