/*
 * dispatch in-process: the PackageType table, decoding the envelope (a bad
 * one is EC_BAD_REQUEST before anything else), authentication before the
 * handler is even looked at, and the routing: a request that needs no
 * database is answered at once, a write goes to the writer, and a seed-era
 * ack sent as PT_MESSAGE goes to the ack handler.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dispatch.h"
#include "handlers.h"
#include "presence.h"

#define NOW_MS 1700000000000LL

static struct gim_config cfg;
static struct presence *pres;
static struct dispatch disp;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return NOW_MS;
}

static void write_done(struct request *r)
{
    (void)r;
}

static void setup(void)
{
    char err[256] = "";
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(presence_open(&pres), GIM_OK);
    /* Device 11 of user 1 is signed in at gateway gw-a, last seen long ago. */
    struct session s = {.device_id = 11, .user_id = 1, .last_seen_ms = 1000};
    strcpy(s.gateway_id, "gw-a");
    cr_assert_eq(presence_put(pres, &s), GIM_OK);
    disp = (struct dispatch){
        .cfg = &cfg, .presence = pres, .clock = {.now_ms = test_clock}, .write_done = write_done};
}

static void teardown(void)
{
    presence_close(pres);
    config_free(&cfg);
}

TestSuite(dispatch, .init = setup, .fini = teardown);

struct env {
    int64_t user, device;
    const char *gateway;
    int type;
    const ProtobufCMessage *data; /* Input.data, NULL = empty */
};

/* Runs one request through dispatch_begin into *r (the caller calls request_reset). */
static enum dispatch_next run(struct request *r, const struct env *e)
{
    uint8_t *data = NULL;
    Pb__Input in = PB__INPUT__INIT;
    in.type = e->type;
    in.request_id = 77;
    if (e->data) {
        in.data.len = protobuf_c_message_get_packed_size(e->data);
        data = malloc(in.data.len + 1);
        protobuf_c_message_pack(e->data, data);
        in.data.data = data;
    }
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = e->user;
    env.device_id = e->device;
    env.gateway_id = (char *)e->gateway;
    env.input = &in;
    size_t len = pb__gateway_request__get_packed_size(&env);
    uint8_t *buf = malloc(len + 1);
    pb__gateway_request__pack(&env, buf);
    memset(r, 0, sizeof *r);
    enum dispatch_next next = dispatch_begin(&disp, r, buf, len, NULL);
    free(buf);
    free(data);
    return next;
}

Test(dispatch, every_handler_sits_at_its_own_package_type)
{
    int served = 0;
    for (int t = 0; t < 256; t++) {
        const struct handler *h = dispatch_handler(t);
        if (!h)
            continue;
        served++;
        cr_expect_eq(h->type, t, "the handler at %d is %s (type %d)", t, h->name, h->type);
        cr_expect(!(h->read && h->write), "%s: read() or write(), not both", h->name);
    }
    /* A device's own requests need its session; sign-in makes one. (Operator and gateway
     * requests, PT_ADMIN_* and PT_GATEWAY_LEASE, authenticate in their prepare().) */
    static const int device_types[] = {
        PB__PACKAGE_TYPE__PT_SYNC,        PB__PACKAGE_TYPE__PT_HEARTBEAT,
        PB__PACKAGE_TYPE__PT_MESSAGE,     PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM,
        PB__PACKAGE_TYPE__PT_MESSAGE_ACK, PB__PACKAGE_TYPE__PT_RECALL,
        PB__PACKAGE_TYPE__PT_SIGN_OUT,
    };
    for (size_t i = 0; i < sizeof device_types / sizeof device_types[0]; i++) {
        const struct handler *h = dispatch_handler(device_types[i]);
        cr_assert_not_null(h, "type %d", device_types[i]);
        cr_expect(h->needs_session, "%s is served without a session", h->name);
    }
    cr_expect(!dispatch_handler(PB__PACKAGE_TYPE__PT_SIGN_IN)->needs_session);
    cr_assert_geq(served, 12);
    cr_assert_eq(dispatch_handler(PB__PACKAGE_TYPE__PT_MESSAGE), &handle_message);
    cr_assert_eq(dispatch_handler(PB__PACKAGE_TYPE__PT_SYNC), &handle_sync);
    cr_assert_null(dispatch_handler(-1));
    cr_assert_null(dispatch_handler(PB__PACKAGE_TYPE__PT_UNKNOWN));
    cr_assert_null(dispatch_handler(1 << 20));
}

Test(dispatch, undecodable_bytes_are_a_bad_request)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    struct request r = {0};
    cr_assert_eq(dispatch_begin(&disp, &r, junk, sizeof junk, NULL), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert_not_null(strstr(r.errmsg, "not a valid pb.GatewayRequest"), "%s", r.errmsg);
    cr_assert_null(r.h);
    request_reset(&r);

    /* An envelope without an Input. */
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = 1;
    env.device_id = 11;
    env.gateway_id = "gw-a";
    uint8_t buf[64];
    size_t len = pb__gateway_request__pack(&env, buf);
    cr_assert_eq(dispatch_begin(&disp, &r, buf, len, NULL), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert_not_null(strstr(r.errmsg, "no input"), "%s", r.errmsg);
    request_reset(&r);
}

/* Strings are checked before authentication: they reach logs, replies and the device table. */
Test(dispatch, a_gateway_id_that_is_not_utf8_is_a_bad_request)
{
    struct request r;
    struct env e = {1, 11, "gw-\xff", PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL};
    cr_assert_eq(run(&r, &e), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ, "code %d: %s", r.code, r.errmsg);
    request_reset(&r);
}

Test(dispatch, no_session_no_handler)
{
    static const struct env strangers[] = {
        {1, 12, "gw-a", PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL}, /* device without a session */
        {2, 11, "gw-a", PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL}, /* someone else's device */
        {1, 11, "gw-b", PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL}, /* through another gateway */
        {1, 12, "gw-a", 999, NULL}, /* an unknown type from a stranger: unauthenticated too */
    };
    for (size_t i = 0; i < sizeof strangers / sizeof strangers[0]; i++) {
        struct request r;
        cr_assert_eq(run(&r, &strangers[i]), DISPATCH_REPLY, "case %zu", i);
        cr_expect_eq(r.code, GIM_EUNAUTH, "case %zu: code %d: %s", i, r.code, r.errmsg);
        cr_expect_null(r.h, "case %zu: a handler was chosen", i);
        cr_expect_eq(r.request_id, 77, "case %zu: the request_id is echoed", i);
        request_reset(&r);
    }
    struct session s;
    cr_assert_eq(presence_user_sessions(pres, 1, &s, 1), 1);
    cr_assert_eq(s.last_seen_ms, 1000, "a stranger refreshed device 11's session");
}

Test(dispatch, an_unknown_type_from_a_session_is_a_bad_request)
{
    struct request r;
    struct env e = {1, 11, "gw-a", 999, NULL};
    cr_assert_eq(run(&r, &e), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert_not_null(strstr(r.errmsg, "unknown package type 999"), "%s", r.errmsg);
    request_reset(&r);
}

/* A heartbeat has no prepare, read or write: dispatch answers it, and authenticating it
 * refreshed the session (what keeps a device online). */
Test(dispatch, a_heartbeat_is_answered_at_once_and_refreshes_the_session)
{
    struct request r;
    struct env e = {1, 11, "gw-a", PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL};
    cr_assert_eq(run(&r, &e), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    cr_assert_eq(r.h, &handle_heartbeat);
    cr_assert_eq(r.sess.device_id, 11);
    cr_assert_eq(r.sess.last_seen_ms, NOW_MS);
    request_reset(&r);
}

Test(dispatch, an_ack_goes_to_the_writer)
{
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 5;
    struct request r;
    struct env e = {1, 11, "gw-a", PB__PACKAGE_TYPE__PT_MESSAGE_ACK, &ack.base};
    cr_assert_eq(run(&r, &e), DISPATCH_WRITE, "code %d: %s", r.code, r.errmsg);
    cr_assert_eq(r.code, GIM_OK);
    cr_assert_eq(r.h, &handle_message_ack);
    cr_assert_not_null(r.job.exec);
    cr_assert_not_null(r.job.done);
    cr_assert_eq(r.disp, &disp);
    request_reset(&r);
}

/* gim's seed-era clients ack with PT_MESSAGE and a MessageACK; a MessageSend stays a send. */
Test(dispatch, a_seed_era_ack_sent_as_a_message_is_an_ack)
{
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 5;
    Pb__MessageACK zero_ack = PB__MESSAGE_ACK__INIT; /* proto3 omits device_ack 0 */
    zero_ack.receive_time = NOW_MS;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    Pb__MessageSend send = PB__MESSAGE_SEND__INIT;
    send.message = &m;
    const struct {
        const ProtobufCMessage *data;
        const struct handler *want;
    } cases[] = {
        {&ack.base, &handle_message_ack},
        {&zero_ack.base, &handle_message_ack},
        {&send.base, &handle_message},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct request r;
        struct env e = {1, 11, "gw-a", PB__PACKAGE_TYPE__PT_MESSAGE, cases[i].data};
        run(&r, &e);
        cr_expect_eq(r.h, cases[i].want, "case %zu: served by %s", i, r.h ? r.h->name : "none");
        request_reset(&r);
    }
}
