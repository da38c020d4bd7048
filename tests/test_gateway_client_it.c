/*
 * gim-gateway in front of gim-logic, over real sockets: sign-in on every
 * framing, pipelined frames answered in order, what the gateway answers
 * itself, 1:1 and group sends with their pushes, and the web/ops HTTP.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gwtestlib.h"

static struct tl_server logic;
static struct gw_server gw;

static void setup(void)
{
    gwt_start_logic(&logic, NULL);
    gwt_start(&gw, &logic, "gwA", NULL, NULL);
}

static void teardown(void)
{
    gwt_cleanup(&gw);
    tl_cleanup(&logic);
}

TestSuite(gateway_client_it, .init = setup, .fini = teardown, .timeout = 90);

static void sql(const char *stmt)
{
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(logic.db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    cr_assert_eq(sqlite3_exec(h, stmt, NULL, NULL, NULL), SQLITE_OK, "%s: %s", stmt,
                 sqlite3_errmsg(h));
    sqlite3_close(h);
}

static int64_t device_int(const char *col, int64_t device)
{
    char q[128];
    snprintf(q, sizeof q, "SELECT %s FROM device WHERE device_id = %lld", col, (long long)device);
    return tl_query_int(logic.db, q);
}

Test(gateway_client_it, sign_in_on_every_framing)
{
    enum gwc_kind kinds[] = {GWC_BE16, GWC_UVARINT, GWC_WS};
    for (int i = 0; i < 3; i++) {
        struct gwc c;
        gwc_connect(&c, &gw, kinds[i], 0);
        cr_assert_eq(gwc_signin(&c, 1, 100 + i), PB__ERROR_CODE__EC_OK, "framing %d", i);
        cr_assert_eq(device_int("online", 100 + i), 1);
        /* The session is the gateway's: its id and the client's address are recorded. */
        char q[128];
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM device WHERE device_id = %d AND gateway_id = 'gwA' AND "
                 "client_addr LIKE '127.0.0.1:%%'",
                 100 + i);
        cr_assert_eq(tl_query_int(logic.db, q), 1);
        gwc_close(&c);
    }
}

Test(gateway_client_it, a_bad_token_is_refused_and_the_connection_stays_unauthenticated)
{
    struct gwc c;
    gwc_connect(&c, &gw, GWC_BE16, 0);
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = 1;
    in.device_id = 11;
    in.token = "not-a-jwt";
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SIGN_IN, 5, &in.base);
    Pb__Output *o = gwc_reply(&c, 5, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
    pb__output__free_unpacked(o, NULL);
    Pb__SyncInput s = PB__SYNC_INPUT__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 6, &s.base);
    o = gwc_reply(&c, 6, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
    pb__output__free_unpacked(o, NULL);
    gwc_close(&c);
}

/* gim's test clients write sign-in, sync and subscribe back to back without waiting. */
static void pipelined(enum gwc_kind kind, int64_t device)
{
    struct gwc c;
    static uint8_t buf[4096];
    size_t n = 0;
    gwc_connect(&c, &gw, kind, 0);
    char *tok = tl_token(2, device, 3600);
    Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
    si.user_id = 2;
    si.device_id = device;
    si.token = tok;
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    Pb__SubscribeRoomInput sr = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    sr.room_id = 1;
    if (kind == GWC_WS) {
        /* One message per frame, sent without waiting for any reply. */
        n = gwc_frame(&c, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &si.base, buf, sizeof buf);
        gwc_write(&c, buf, n);
        n = gwc_frame(&c, PB__PACKAGE_TYPE__PT_SYNC, 2, &sy.base, buf, sizeof buf);
        gwc_write(&c, buf, n);
        n = gwc_frame(&c, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 0, &sr.base, buf, sizeof buf);
        gwc_write(&c, buf, n);
    } else {
        /* All three frames in one write. */
        n += gwc_frame(&c, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &si.base, buf + n, sizeof buf - n);
        n += gwc_frame(&c, PB__PACKAGE_TYPE__PT_SYNC, 2, &sy.base, buf + n, sizeof buf - n);
        n += gwc_frame(&c, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 0, &sr.base, buf + n,
                       sizeof buf - n);
        gwc_write(&c, buf, n);
    }
    free(tok);
    int types[] = {PB__PACKAGE_TYPE__PT_SIGN_IN, PB__PACKAGE_TYPE__PT_SYNC,
                   PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM};
    for (int i = 0; i < 3; i++) {
        Pb__Output *o = gwc_recv(&c, 10000);
        cr_assert_not_null(o, "reply %d missing", i);
        cr_assert_eq(o->type, types[i], "reply %d has type %d", i, o->type);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "reply %d: code %d %s", i, o->code,
                     o->message);
        pb__output__free_unpacked(o, NULL);
    }
    cr_assert_eq(device_int("room_id", device), 1);
    gwc_close(&c);
}

Test(gateway_client_it, pipelined_frames_are_answered_in_order_be16)
{
    pipelined(GWC_BE16, 201);
}

Test(gateway_client_it, pipelined_frames_are_answered_in_order_uvarint)
{
    pipelined(GWC_UVARINT, 202);
}

Test(gateway_client_it, pipelined_frames_are_answered_in_order_ws)
{
    pipelined(GWC_WS, 203);
}

Test(gateway_client_it, before_sign_in_only_sign_in_and_heartbeat)
{
    struct gwc c;
    gwc_connect(&c, &gw, GWC_BE16, 0);
    gwc_send(&c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 7, NULL);
    Pb__Output *o = gwc_reply(&c, 7, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
    cr_assert_eq(o->type, PB__PACKAGE_TYPE__PT_HEARTBEAT);
    pb__output__free_unpacked(o, NULL);
    Pb__SyncInput s = PB__SYNC_INPUT__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 8, &s.base);
    o = gwc_reply(&c, 8, 5000);
    cr_assert_not_null(o);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_str_not_empty(o->message);
    pb__output__free_unpacked(o, NULL);
    /* Answered by the gateway: nothing went to gim-logic (only the lease did). */
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_refused_total"), 1);
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_upstream_requests_total"),
                 gwt_metric(&gw, "gim_gateway_leases_total"));
    gwc_close(&c);
}

Test(gateway_client_it, clients_may_not_send_gateway_or_operator_types)
{
    struct gwc c;
    gwc_connect(&c, &gw, GWC_BE16, 0);
    cr_assert_eq(gwc_signin(&c, 3, 31), PB__ERROR_CODE__EC_OK);
    int types[] = {PB__PACKAGE_TYPE__PT_SIGN_OUT,
                   PB__PACKAGE_TYPE__PT_ADMIN_RECALL,
                   PB__PACKAGE_TYPE__PT_GATEWAY_LEASE,
                   102,
                   103,
                   999};
    for (int i = 0; i < 6; i++) {
        gwc_send(&c, types[i], 50 + i, NULL);
        Pb__Output *o = gwc_reply(&c, 50 + i, 5000);
        cr_assert_not_null(o);
        cr_assert_eq(o->code, PB__ERROR_CODE__EC_FORBIDDEN, "type %d: code %d", types[i], o->code);
        pb__output__free_unpacked(o, NULL);
    }
    /* PT_SIGN_OUT from the client did not end the session. */
    cr_assert_eq(device_int("online", 31), 1);
    Pb__SyncInput s = PB__SYNC_INPUT__INIT;
    gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 60, &s.base);
    Pb__Output *o = gwc_reply(&c, 60, 5000);
    cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK);
    pb__output__free_unpacked(o, NULL);
    gwc_close(&c);
}

Test(gateway_client_it, one_to_one_send_reaches_the_other_device_as_a_push)
{
    struct gwc a, b;
    gwc_connect(&a, &gw, GWC_BE16, 0);
    gwc_connect(&b, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&a, 10, 1001), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwc_signin(&b, 11, 1101), PB__ERROR_CODE__EC_OK);
    Pb__Output *r = gwc_send_text(&a, PB__RECEIVER_TYPE__RT_USER, 11, "hello bob", 77);
    cr_assert_not_null(r);
    cr_assert_eq(r->code, PB__ERROR_CODE__EC_OK, "%s", r->message);
    pb__output__free_unpacked(r, NULL);
    Pb__Output *p = gwc_recv(&b, 10000);
    cr_assert_not_null(p, "no push");
    cr_assert_eq(p->type, PB__PACKAGE_TYPE__PT_MESSAGE);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, p->data.len, p->data.data);
    cr_assert_not_null(ms);
    cr_assert_not_null(ms->message->sender);
    cr_assert_eq(ms->message->sender->sender_id, 10);
    cr_assert_eq(ms->message->seq, 1);
    Pb__Text *t =
        pb__text__unpack(NULL, ms->message->message_content.len, ms->message->message_content.data);
    cr_assert_str_eq(t->text, "hello bob");
    pb__text__free_unpacked(t, NULL);
    pb__message_send__free_unpacked(ms, NULL);
    pb__output__free_unpacked(p, NULL);
    gwc_close(&a);
    gwc_close(&b);
}

Test(gateway_client_it, group_send_pushes_to_every_connected_member)
{
    sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (500, 'g', 20, 0)");
    sql("INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (500, 20, 'owner', "
        "0), (500, 21, 'member', 0), (500, 22, 'member', 0)");
    struct gwc c[3];
    enum gwc_kind kinds[] = {GWC_BE16, GWC_UVARINT, GWC_WS};
    for (int i = 0; i < 3; i++) {
        gwc_connect(&c[i], &gw, kinds[i], 0);
        cr_assert_eq(gwc_signin(&c[i], 20 + i, 2000 + i), PB__ERROR_CODE__EC_OK);
    }
    Pb__Output *r = gwc_send_text(&c[0], PB__RECEIVER_TYPE__RT_GROUP, 500, "hi team", 88);
    cr_assert_eq(r->code, PB__ERROR_CODE__EC_OK, "%s", r->message);
    pb__output__free_unpacked(r, NULL);
    for (int i = 1; i < 3; i++) {
        Pb__Output *p = gwc_recv(&c[i], 10000);
        cr_assert_not_null(p, "member %d got no push", i);
        Pb__MessageSend *ms = pb__message_send__unpack(NULL, p->data.len, p->data.data);
        cr_assert_eq(ms->message->receiver_type, PB__RECEIVER_TYPE__RT_GROUP);
        cr_assert_eq(ms->message->receiver_id, 500);
        pb__message_send__free_unpacked(ms, NULL);
        pb__output__free_unpacked(p, NULL);
    }
    for (int i = 0; i < 3; i++)
        gwc_close(&c[i]);
}

Test(gateway_client_it, healthz_and_metrics)
{
    int status = 0;
    char *body = gwt_http_get(gw.http_port, "/healthz", &status);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    struct gwc c;
    gwc_connect(&c, &gw, GWC_WS, 0);
    cr_assert_eq(gwc_signin(&c, 4, 41), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_connections{transport=\"ws\"}"), 1);
    cr_assert_eq(gwt_metric(&gw, "gim_gateway_signed_in"), 1);
    cr_assert_geq(gwt_metric(&gw, "gim_gateway_upstream_latency_seconds_count"), 1);
    gwc_close(&c);
}

/* Frames that arrive while the first one is still at gim-logic wait for its reply. */
Test(gateway_client_it, frames_arriving_while_one_is_in_flight_wait_their_turn)
{
    enum gwc_kind kinds[] = {GWC_BE16, GWC_WS};
    for (int k = 0; k < 2; k++) {
        struct gwc c;
        gwc_connect(&c, &gw, kinds[k], 0);
        long before = gwt_metric(&gw, "gim_gateway_upstream_requests_total");
        gwt_freeze(logic.pid);
        char *tok = tl_token(5, 51 + k, 3600);
        Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
        si.user_id = 5;
        si.device_id = 51 + k;
        si.token = tok;
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &si.base);
        free(tok);
        for (int i = 0; i < 100 && gwt_metric(&gw, "gim_gateway_upstream_requests_total") == before;
             i++)
            nng_msleep(20);
        Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
        gwc_send(&c, PB__PACKAGE_TYPE__PT_SYNC, 2, &sy.base);
        gwc_send(&c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 3, NULL);
        nng_msleep(200);
        kill(logic.pid, SIGCONT);
        for (int i = 1; i <= 3; i++) {
            Pb__Output *o = gwc_recv(&c, 10000);
            cr_assert_not_null(o);
            cr_assert_eq(o->request_id, i, "kind %d: reply %d is for request %lld", k, i,
                         (long long)o->request_id);
            cr_assert_eq(o->code, PB__ERROR_CODE__EC_OK, "kind %d reply %d: %s", k, i, o->message);
            pb__output__free_unpacked(o, NULL);
        }
        gwc_close(&c);
    }
}
