/*
 * Presence and push end to end: the real binary, real nng sockets (REQ/REP
 * for requests, SUB sockets on its PUB socket, one per gateway topic as real
 * gateways subscribe) and the real SQLite file.
 *
 * Pushes are best effort, so "nothing arrived" is judged by a receive
 * timeout; the sockets are dialed and given time to connect before anything
 * is published (PUB drops what it sends to a pipe that is not there yet).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define QUIET_MS 400 /* a SUB socket that got nothing for this long has nothing coming */

static struct tl_server srv;
static struct gim_client *cli;

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t qi(const char *fmt, long long arg)
{
    char buf[256];
    snprintf(buf, sizeof buf, fmt, arg);
    return tl_query_int(srv.db, buf);
}

/* A SUB socket on the service's PUB socket for one gateway's topic ("<gw>\n"). */
static nng_socket sub_open(const char *gateway)
{
    nng_socket s;
    char topic[80];
    int n = snprintf(topic, sizeof topic, "%s\n", gateway);
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, topic, (size_t)n), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, QUIET_MS), 0);
    cr_assert_eq(nng_dial(s, srv.pub_url, NULL, 0), 0);
    return s;
}

/* Lets freshly dialed SUB sockets attach on the PUB side before anything is sent. */
static void settle(void)
{
    usleep(200 * 1000);
}

struct delivery {
    char gateway[80];
    int64_t devices[8];
    size_t n_devices;
    Pb__Message *msg; /* inside ms */
    Pb__MessageSend *ms;
};

static void delivery_free(struct delivery *d)
{
    if (d->ms)
        pb__message_send__free_unpacked(d->ms, NULL);
    memset(d, 0, sizeof *d);
}

/* The next delivery on s: true and *d filled, or false after QUIET_MS of silence. */
static bool next_delivery(nng_socket s, struct delivery *d)
{
    nng_msg *m;
    memset(d, 0, sizeof *d);
    if (nng_recvmsg(s, &m, 0) != 0)
        return false;
    const uint8_t *body = nng_msg_body(m);
    size_t len = nng_msg_len(m);
    const uint8_t *nl = memchr(body, '\n', len);
    cr_assert_not_null(nl, "the topic ends with a newline");
    snprintf(d->gateway, sizeof d->gateway, "%.*s", (int)(nl - body), (const char *)body);
    Pb__Delivery *pd = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
    cr_assert_not_null(pd, "a pb.Delivery follows the topic");
    cr_assert_not_null(pd->output);
    cr_assert_eq(pd->output->type, PB__PACKAGE_TYPE__PT_MESSAGE);
    cr_assert_eq(pd->output->code, 0);
    cr_assert_leq(pd->n_device_ids, 8);
    d->n_devices = pd->n_device_ids;
    memcpy(d->devices, pd->device_ids, d->n_devices * sizeof *d->devices);
    d->ms = pb__message_send__unpack(NULL, pd->output->data.len, pd->output->data.data);
    cr_assert_not_null(d->ms);
    cr_assert_not_null(d->ms->message);
    d->msg = d->ms->message;
    pb__delivery__free_unpacked(pd, NULL);
    nng_msg_free(m);
    return true;
}

static void expect_nothing(nng_socket s, const char *why)
{
    struct delivery d;
    bool got = next_delivery(s, &d);
    cr_assert_not(got, "%s: got a delivery to %s for device %lld", why, d.gateway,
                  d.n_devices ? (long long)d.devices[0] : -1LL);
}

/* A text message from conn to user `to`; returns the seq of the sender's copy. */
static int64_t send_text(const struct client_conn *conn, int64_t to, int64_t request_id,
                         const char *text)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)text;
    m.message_content.len = strlen(text);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    cr_assert_eq(out->code, 0, "send: %d %s", out->code, out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(reply);
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

/* --- pushes with the default presence timeout --------------------------- */

/* User 1 on two devices (sending on gwS, another on gw2), user 2 on gw1, user 3 on gw10. */
static struct client_conn a1, a2, b, c;

static void setup(void)
{
    tl_start(&srv, "");
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &a1, 1, 11, "gwS"), 0);
    cr_assert_eq(tl_signin(cli, &a2, 1, 12, "gw2"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw1"), 0);
    cr_assert_eq(tl_signin(cli, &c, 3, 31, "gw10"), 0);
}

TestSuite(push_it, .init = setup, .fini = teardown, .timeout = 90);

Test(push_it, a_push_goes_to_the_receivers_gateway_and_only_there)
{
    nng_socket s1 = sub_open("gw1"), s2 = sub_open("gw2"), sS = sub_open("gwS"),
               s10 = sub_open("gw10"), sX = sub_open("gwX");
    settle();
    cr_assert_eq(send_text(&c, 1, 1, "warm-up"), 1, "gives user 1 a seq of its own");
    struct delivery d;
    cr_assert(next_delivery(sS, &d), "user 1's devices get user 3's message");
    delivery_free(&d);
    cr_assert(next_delivery(s2, &d));
    delivery_free(&d);

    int64_t seq = send_text(&a1, 2, 2, "hello bob");
    cr_assert_eq(seq, 2, "the sender's copy");

    cr_assert(next_delivery(s1, &d), "the receiver's gateway gets it");
    cr_assert_str_eq(d.gateway, "gw1");
    cr_assert_eq(d.n_devices, 1);
    cr_assert_eq(d.devices[0], 21);
    cr_assert_eq(d.msg->seq, 1, "the receiver's own copy");
    cr_assert_eq(d.msg->sender->sender_id, 1);
    cr_assert_eq(d.msg->sender->device_id, 11);
    cr_assert_eq(d.msg->receiver_type, PB__RECEIVER_TYPE__RT_USER);
    cr_assert_eq(d.msg->receiver_id, 2);
    cr_assert_eq(d.msg->message_content.len, 9);
    cr_assert_eq(memcmp(d.msg->message_content.data, "hello bob", 9), 0);
    delivery_free(&d);
    expect_nothing(s1, "one delivery per gateway");

    cr_assert(next_delivery(s2, &d), "the sender's other device gets its copy");
    cr_assert_eq(d.n_devices, 1);
    cr_assert_eq(d.devices[0], 12);
    cr_assert_eq(d.msg->seq, 2, "the sender's copy");
    delivery_free(&d);

    expect_nothing(sS, "the sending device");
    expect_nothing(s10, "an uninvolved gateway whose name starts like gw1");
    expect_nothing(sX, "a gateway with no device");

    /* The other way round: gw1's subscriber must not get gw10's pushes. */
    send_text(&b, 3, 3, "to carol");
    cr_assert(next_delivery(s10, &d));
    cr_assert_eq(d.devices[0], 31);
    delivery_free(&d);
    expect_nothing(s1, "gw1 does not get gw10's topic");
    nng_socket all[] = {s1, s2, sS, s10, sX};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        nng_close(all[i]);
}

Test(push_it, offline_devices_get_nothing_but_sync_finds_the_message)
{
    nng_socket s1 = sub_open("gw1"), s2 = sub_open("gw2");
    settle();
    cr_assert_eq(tl_code(cli, &b, PB__PACKAGE_TYPE__PT_SIGN_OUT, 5, NULL), 0);
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 21), 0);
    send_text(&a1, 2, 6, "while you were out");
    expect_nothing(s1, "a signed-out device");
    struct delivery d;
    cr_assert(next_delivery(s2, &d), "the sender's other device is online");
    delivery_free(&d);

    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw1"), 0);
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    Pb__Output *out = tl_call(cli, &b, PB__PACKAGE_TYPE__PT_SYNC, 7, &in.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(so);
    cr_assert_eq(so->n_messages, 1);
    cr_assert_eq(so->messages[0]->seq, 1);
    cr_assert_eq(so->messages[0]->message_content.len, strlen("while you were out"));
    pb__sync_output__free_unpacked(so, NULL);
    pb__output__free_unpacked(out, NULL);
    nng_close(s1);
    nng_close(s2);
}

/* N sequential sends from a1 to b; returns the milliseconds they took. */
static int64_t timed_sends(int n, int64_t first_request_id)
{
    int64_t t0 = now_ms();
    for (int i = 0; i < n; i++)
        send_text(&a1, 2, first_request_id + i, "x");
    return now_ms() - t0;
}

Test(push_it, a_subscriber_that_never_reads_does_not_slow_sends)
{
    enum { N = 300 };
    int64_t base = timed_sends(N, 1000);
    /* Subscribed to the receiver's gateway, so every send publishes to it; never read. */
    nng_socket stuck = sub_open("gw1");
    cr_assert_eq(nng_socket_set_int(stuck, NNG_OPT_RECVBUF, 1), 0);
    settle();
    int64_t slow = timed_sends(N, 2000);
    cr_log_info("%d sends: %lld ms without a subscriber, %lld ms with one that never reads", N,
                (long long)base, (long long)slow);
    fprintf(stderr, "push_it: %d sends: %lld ms without a subscriber, %lld ms with a stuck one\n",
            N, (long long)base, (long long)slow);
    cr_assert_lt(slow, 3 * base + 1000, "stuck subscriber: %lld ms vs %lld ms", (long long)slow,
                 (long long)base);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 2), 2 * N);
    /* It was attached all along: what it holds is a push of these sends. */
    struct delivery d;
    cr_assert(next_delivery(stuck, &d), "the stuck subscriber was connected");
    cr_assert_eq(d.devices[0], 21);
    delivery_free(&d);
    /* The service first: its PUB may still be flushing this pipe's backlog, and nng 1.5.2's
     * nng_close() can hang for good on a message half read (see sub_close in
     * test_admin_ops_it.c). */
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    nng_close(stuck);
}

/* --- the presence sweeper, with a one-second timeout -------------------- */

static void setup_timeout(void)
{
    tl_start(&srv, "presence: {timeout_seconds: 1}");
    cli = tl_client(&srv);
}

TestSuite(push_timeout_it, .init = setup_timeout, .fini = teardown, .timeout = 60);

Test(push_timeout_it, a_device_that_stops_heartbeating_goes_offline)
{
    struct client_conn quiet, busy;
    cr_assert_eq(tl_signin(cli, &busy, 2, 21, "gw2"), 0);
    cr_assert_eq(tl_signin(cli, &quiet, 1, 11, "gw1"), 0);
    Pb__SubscribeRoomInput room = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    room.room_id = 3;
    /* Taken before the request: the server saw it (its last_seen) no earlier than this. */
    int64_t last_request = now_ms();
    cr_assert_eq(tl_code(cli, &quiet, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &room.base), 0);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 3);

    /* busy heartbeats every 200 ms; quiet sends nothing until the sweeper takes it. */
    int64_t offline_at = 0;
    while (now_ms() - last_request < 5000) {
        cr_assert_eq(tl_code(cli, &busy, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL), 0,
                     "a heartbeating device stays signed in");
        if (qi("SELECT online FROM device WHERE device_id = %lld", 11) == 0) {
            offline_at = now_ms();
            break;
        }
        usleep(200 * 1000);
    }
    cr_assert_neq(offline_at, 0, "the silent device was never signed out");
    cr_assert_geq(offline_at - last_request, 1000, "signed out before the timeout");
    cr_log_info("signed out %lld ms after its last request",
                (long long)(offline_at - last_request));

    cr_assert_eq(tl_code(cli, &quiet, PB__PACKAGE_TYPE__PT_HEARTBEAT, 3, NULL),
                 PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 0,
                 "its room subscription is gone too");
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 21), 1);
    cr_assert_eq(tl_code(cli, &busy, PB__PACKAGE_TYPE__PT_HEARTBEAT, 4, NULL), 0);

    /* Gone means no pushes: a message for it is only in its inbox. */
    nng_socket s1 = sub_open("gw1");
    settle();
    send_text(&busy, 1, 5, "are you there?");
    expect_nothing(s1, "a timed-out device");
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 1);
    nng_close(s1);

    /* It comes back by signing in again. */
    cr_assert_eq(tl_signin(cli, &quiet, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_code(cli, &quiet, PB__PACKAGE_TYPE__PT_HEARTBEAT, 6, NULL), 0);
}
