/*
 * gim-fanout: what a crowded room costs everyone else (issue 11, scenario 6).
 *
 * Signs in --subscribers devices, each on a gateway of its own
 * ("fan-<i>"), and subscribes them all to one room; then, for --duration
 * seconds, one device sends room messages back to back (each one a
 * fan-out to every subscriber) while another pair of users, unrelated to
 * the room, sends 1:1 messages back to back. It prints the latency of the
 * unrelated 1:1 sends (p50/p99/max): what a room send holds the writer for.
 *
 *   gim-fanout --url tcp://127.0.0.1:7400 --secret S [--subscribers 20000]
 *              [--room 777] [--duration 10] [--threads 4]
 *
 * Users and devices 2,000,000.. are the subscribers, 3,000,001/2 the 1:1
 * pair: use a fresh database. Exit status 0 when every request got EC_OK.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "gimclient.h"

#define SUB_BASE 2000000
#define ONE_A    3000001
#define ONE_B    3000002

struct opts {
    const char *url, *secret;
    int64_t subscribers, room, threads;
    double duration;
};

static struct opts o = {.subscribers = 20000, .room = 777, .threads = 4, .duration = 10};
static atomic_bool stop;
static atomic_int failures;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One request; false (and counted) unless it got EC_OK. */
static bool call(struct gim_client *c, const struct client_conn *conn, int type, int64_t rid,
                 const ProtobufCMessage *data)
{
    Pb__Output *out = NULL;
    gim_err e = client_request(c, conn, type, rid, data, &out);
    bool ok = e == GIM_OK && out && out->code == 0;
    if (!ok) {
        if (atomic_fetch_add(&failures, 1) < 5)
            fprintf(stderr, "gim-fanout: type %d device %" PRId64 ": %s\n", type, conn->device_id,
                    e != GIM_OK ? gim_err_name(e) : (out->message ? out->message : "error"));
    }
    if (out)
        pb__output__free_unpacked(out, NULL);
    return ok;
}

static bool sign_in(struct gim_client *c, struct client_conn *conn, int64_t id, const char *gw)
{
    char *token = NULL;
    if (auth_mint(o.secret, id, id, (int64_t)time(NULL) + 3600, &token) != GIM_OK)
        return false;
    *conn = (struct client_conn){.user_id = id, .device_id = id, .gateway_id = gw};
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = id;
    in.device_id = id;
    in.token = token;
    bool ok = call(c, conn, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &in.base);
    free(token);
    return ok;
}

static bool subscribe(struct gim_client *c, const struct client_conn *conn)
{
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = o.room;
    in.seq = 1LL << 60; /* from "now": the page of old entries is not what is measured */
    return call(c, conn, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 2, &in.base);
}

static bool send_text(struct gim_client *c, const struct client_conn *conn, int rtype, int64_t to,
                      int64_t rid)
{
    static const char text[] = "fan-out under test: one hundred bytes of text, more or less, "
                               "like the benchmarks send.";
    uint8_t buf[256];
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = rtype;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = buf;
    m.message_content.len = pb__text__pack(&t, buf);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return call(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base);
}

struct joiner {
    pthread_t th;
    int64_t from, to;
};

static void *join_main(void *arg)
{
    struct joiner *j = arg;
    struct gim_client *c = NULL;
    if (client_open(&c, o.url, 30000, 3) != GIM_OK) {
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    for (int64_t i = j->from; i < j->to; i++) {
        char gw[32];
        struct client_conn conn;
        snprintf(gw, sizeof gw, "fan-%" PRId64, i);
        if (!sign_in(c, &conn, SUB_BASE + i, gw) || !subscribe(c, &conn))
            break;
    }
    client_close(c);
    return NULL;
}

struct room_sender {
    pthread_t th;
    int64_t sends;
    int64_t total_us, max_us;
};

static void *room_main(void *arg)
{
    struct room_sender *r = arg;
    struct gim_client *c = NULL;
    struct client_conn conn;
    if (client_open(&c, o.url, 30000, 1) != GIM_OK) {
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    /* The sender is subscriber 0 (on gateway fan-0): it gets no push of its own. */
    conn = (struct client_conn){.user_id = SUB_BASE, .device_id = SUB_BASE, .gateway_id = "fan-0"};
    while (!atomic_load(&stop)) {
        int64_t t0 = now_us();
        if (!send_text(c, &conn, PB__RECEIVER_TYPE__RT_ROOM, o.room, 0))
            break;
        int64_t dt = now_us() - t0;
        r->sends++;
        r->total_us += dt;
        r->max_us = dt > r->max_us ? dt : r->max_us;
    }
    client_close(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int usage(FILE *f, int rc)
{
    fprintf(f, "usage: gim-fanout --url URL [--secret S] [--subscribers N] [--room R]\n"
               "                  [--duration S] [--threads T]\n"
               "  N devices on N gateways join room R; then for S seconds one of them sends\n"
               "  room messages while an unrelated pair sends 1:1: prints the 1:1 latencies.\n");
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"url", required_argument, NULL, 'u'},
                                          {"secret", required_argument, NULL, 's'},
                                          {"subscribers", required_argument, NULL, 'n'},
                                          {"room", required_argument, NULL, 'r'},
                                          {"duration", required_argument, NULL, 't'},
                                          {"threads", required_argument, NULL, 'j'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int ch;
    o.secret = getenv("GIM_TOKEN_SECRET");
    while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (ch) {
        case 'u':
            o.url = optarg;
            break;
        case 's':
            o.secret = optarg;
            break;
        case 'n':
            o.subscribers = strtoll(optarg, NULL, 10);
            break;
        case 'r':
            o.room = strtoll(optarg, NULL, 10);
            break;
        case 't':
            o.duration = strtod(optarg, NULL);
            break;
        case 'j':
            o.threads = strtoll(optarg, NULL, 10);
            break;
        case 'h':
            return usage(stdout, 0);
        default:
            return usage(stderr, 2);
        }
    }
    if (!o.url || !o.secret || o.subscribers < 1 || o.room < 1 || o.threads < 1 || o.threads > 64 ||
        o.duration <= 0)
        return usage(stderr, 2);

    int64_t t0 = now_us();
    struct joiner js[64];
    for (int64_t k = 0; k < o.threads; k++) {
        js[k].from = o.subscribers * k / o.threads;
        js[k].to = o.subscribers * (k + 1) / o.threads;
        pthread_create(&js[k].th, NULL, join_main, &js[k]);
    }
    for (int64_t k = 0; k < o.threads; k++)
        pthread_join(js[k].th, NULL);
    if (atomic_load(&failures)) {
        fprintf(stderr, "gim-fanout: joining the room failed\n");
        return 1;
    }
    fprintf(stderr,
            "gim-fanout: %" PRId64 " devices on %" PRId64 " gateways in room %" PRId64
            " (%.1f s)\n",
            o.subscribers, o.subscribers, o.room, (double)(now_us() - t0) / 1e6);

    struct gim_client *c = NULL;
    struct client_conn a;
    if (client_open(&c, o.url, 30000, 1) != GIM_OK || !sign_in(c, &a, ONE_A, "one"))
        return 1;
    struct room_sender rs = {0};
    pthread_create(&rs.th, NULL, room_main, &rs);

    size_t cap = 1 << 16, n = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    int64_t end = now_us() + (int64_t)(o.duration * 1e6);
    while (lat && now_us() < end) {
        int64_t s0 = now_us();
        if (!send_text(c, &a, PB__RECEIVER_TYPE__RT_USER, ONE_B, 0))
            break;
        if (n == cap) {
            int64_t *grown = realloc(lat, 2 * cap * sizeof *lat);
            if (!grown)
                break;
            lat = grown;
            cap *= 2;
        }
        lat[n++] = now_us() - s0;
    }
    atomic_store(&stop, true);
    pthread_join(rs.th, NULL);
    client_close(c);
    if (!lat || n == 0) {
        fprintf(stderr, "gim-fanout: no 1:1 send measured\n");
        return 1;
    }
    qsort(lat, n, sizeof *lat, cmp_i64);
    printf("RESULT workload=fanout subscribers=%" PRId64 " gateways=%" PRId64 " room_sends=%" PRId64
           " room_send_mean_ms=%.3f room_send_max_ms=%.3f"
           " unrelated_sends=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
           o.subscribers, o.subscribers, rs.sends,
           rs.sends ? (double)rs.total_us / (double)rs.sends / 1e3 : 0.0, (double)rs.max_us / 1e3,
           n, (double)lat[n / 2] / 1e3, (double)lat[(size_t)((double)(n - 1) * 0.99)] / 1e3,
           (double)lat[n - 1] / 1e3, atomic_load(&failures));
    free(lat);
    return atomic_load(&failures) ? 1 : 0;
}
