/*
 * Rooms end to end: the real binary over real nng sockets (REQ/REP, and a
 * SUB socket on its PUB socket for pushes) on a real SQLite file, which the
 * tests read. The last test drives the real gimctl binary (room, watch).
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
/* Four users, one device each, each on a gateway of its own. */
static struct client_conn a, b, c, d;

static void sign_in_all(void)
{
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwB"), 0);
    cr_assert_eq(tl_signin(cli, &c, 3, 31, "gwC"), 0);
    cr_assert_eq(tl_signin(cli, &d, 4, 41, "gwD"), 0);
}

static void setup(void)
{
    tl_start(&srv, "sync: {page_size: 3}");
    sign_in_all();
}

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

TestSuite(room_it, .init = setup, .fini = teardown, .timeout = 90);

static int64_t qi(const char *fmt, long long arg)
{
    char buf[256];
    snprintf(buf, sizeof buf, fmt, arg);
    return tl_query_int(srv.db, buf);
}

/* PT_SUBSCRIBE_ROOM; returns the Output (caller frees). */
static Pb__Output *subscribe_call(struct gim_client *cl, const struct client_conn *conn,
                                  int64_t room, int64_t seq)
{
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = room;
    in.seq = seq;
    return tl_call(cl, conn, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 900, &in.base);
}

/* Subscribes and returns the page (caller frees), failing the test unless EC_OK. */
static Pb__SyncOutput *subscribe(const struct client_conn *conn, int64_t room, int64_t seq)
{
    Pb__Output *out = subscribe_call(cli, conn, room, seq);
    cr_assert_eq(out->code, 0, "subscribe: %d %s", out->code, out->message);
    cr_assert_eq(out->type, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM);
    Pb__SyncOutput *p = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(p, "the reply data is a SyncOutput");
    pb__output__free_unpacked(out, NULL);
    return p;
}

static void join(const struct client_conn *conn, int64_t room)
{
    pb__sync_output__free_unpacked(subscribe(conn, room, 0), NULL);
}

static Pb__Output *room_send_call(struct gim_client *cl, const struct client_conn *conn,
                                  int64_t room, int64_t request_id, const char *text)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
    m.receiver_id = room;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)text;
    m.message_content.len = strlen(text);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return tl_call(cl, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
}

/* A room send; returns the room seq of the reply, or -code. */
static int64_t room_send(const struct client_conn *conn, int64_t room, int64_t request_id,
                         const char *text)
{
    Pb__Output *out = room_send_call(cli, conn, room, request_id, text);
    int64_t seq = -(int64_t)out->code;
    if (out->code == 0) {
        Pb__MessageSend *ms = pb__message_send__unpack(NULL, out->data.len, out->data.data);
        cr_assert_not_null(ms);
        cr_assert_eq(ms->message->receiver_type, PB__RECEIVER_TYPE__RT_ROOM);
        cr_assert_eq(ms->message->receiver_id, room);
        seq = ms->message->seq;
        pb__message_send__free_unpacked(ms, NULL);
    } else {
        cr_assert(out->message && *out->message, "an error says why");
    }
    pb__output__free_unpacked(out, NULL);
    return seq;
}

static const char *seqs_of(const Pb__SyncOutput *p, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < p->n_messages; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? "," : "",
                               (long long)p->messages[i]->seq);
    return buf;
}

Test(room_it, subscribe_and_leave)
{
    Pb__SyncOutput *p = subscribe(&a, 5, 0);
    cr_assert_eq(p->n_messages, 0);
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 5);

    Pb__Output *out = subscribe_call(cli, &a, -5, 0);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_str_eq(out->message, "room: room_id must be >= 0, got -5");
    pb__output__free_unpacked(out, NULL);
    out = subscribe_call(cli, &a, 6, -1);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 5, "unchanged");

    out = subscribe_call(cli, &a, 0, 0);
    cr_assert_eq(out->code, 0);
    cr_assert_eq(out->data.len, 0, "leaving replies with no data");
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 0);
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 1);
    cr_assert_eq(room_send(&a, 5, 1, "x"), -PB__ERROR_CODE__EC_FORBIDDEN);
}

Test(room_it, a_send_needs_the_subscription_and_stores_one_copy)
{
    cr_assert_eq(room_send(&a, 7, 1, "hi"), -PB__ERROR_CODE__EC_FORBIDDEN);
    join(&a, 8);
    cr_assert_eq(room_send(&a, 7, 2, "hi"), -PB__ERROR_CODE__EC_FORBIDDEN, "another room");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM room_message"), 0);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM idempotency"), 0);
    join(&a, 7);
    join(&b, 7);
    cr_assert_eq(room_send(&a, 7, 3, "hi"), 1);
    cr_assert_eq(room_send(&b, 7, 3, "hello"), 2);
    cr_assert_eq(room_send(&a, 7, 3, "hi"), 1, "a retry: the same seq");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM room_message"), 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), 0);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox"), 0);
    cr_assert_eq(qi("SELECT seq FROM room_seq WHERE room_id = %lld", 7), 2);
}

Test(room_it, pages_follow_has_more)
{
    char buf[64];
    join(&a, 8);
    for (int i = 1; i <= 7; i++)
        cr_assert_eq(room_send(&a, 8, i, "m"), i);
    Pb__SyncOutput *p = subscribe(&b, 8, 0);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "1,2,3");
    cr_assert(p->has_more);
    cr_assert_eq(p->messages[0]->sender->sender_id, 1);
    cr_assert_eq(p->messages[0]->receiver_type, PB__RECEIVER_TYPE__RT_ROOM);
    cr_assert_eq(p->messages[0]->receiver_id, 8);
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&b, 8, 3);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "4,5,6");
    cr_assert(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&b, 8, 6);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "7");
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
}

Test(room_it, sign_out_drops_the_subscription)
{
    join(&a, 9);
    cr_assert_eq(room_send(&a, 9, 1, "x"), 1);
    cr_assert_eq(tl_code(cli, &a, PB__PACKAGE_TYPE__PT_SIGN_OUT, 2, NULL), 0);
    cr_assert_eq(qi("SELECT room_id FROM device WHERE device_id = %lld", 11), 0);
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 0);
    cr_assert_eq(room_send(&a, 9, 3, "x"), -PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    cr_assert_eq(room_send(&a, 9, 4, "x"), -PB__ERROR_CODE__EC_FORBIDDEN,
                 "a new session starts in no room");
    join(&a, 9);
    cr_assert_eq(room_send(&a, 9, 5, "x"), 2);
    /* Signing in at another gateway drops it as well. */
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA2"), 0);
    cr_assert_eq(room_send(&a, 9, 6, "x"), -PB__ERROR_CODE__EC_FORBIDDEN);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM room_message"), 2);
}

/* --- concurrent senders ------------------------------------------------- */

enum { SENDERS = 4, PER_SENDER = 50, CROWD_ROOM = 77 };

struct sender {
    int index;
    int64_t seqs[PER_SENDER];
    int failures;
    char why[160];
};

static void *send_many(void *arg)
{
    struct sender *s = arg;
    struct gim_client *own = NULL;
    char gw[16];
    snprintf(gw, sizeof gw, "gwT%d", s->index);
    struct client_conn conn = {.user_id = 100 + s->index,
                               .device_id = 1000 + s->index,
                               .gateway_id = gw,
                               .client_addr = "t"};
    if (client_open(&own, srv.url, 10000, 3) != GIM_OK) {
        s->failures = PER_SENDER;
        return NULL;
    }
    for (int i = 0; i < PER_SENDER; i++) {
        Pb__Message m = PB__MESSAGE__INIT;
        m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
        m.receiver_id = CROWD_ROOM;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = (uint8_t *)"crowd";
        m.message_content.len = 5;
        Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
        ms.message = &m;
        Pb__Output *out = NULL;
        Pb__MessageSend *reply = NULL;
        if (client_request(own, &conn, PB__PACKAGE_TYPE__PT_MESSAGE, 1 + i, &ms.base, &out) !=
                GIM_OK ||
            out->code != 0 ||
            !(reply = pb__message_send__unpack(NULL, out->data.len, out->data.data))) {
            s->failures++;
            snprintf(s->why, sizeof s->why, "send %d: %s", i,
                     out && out->message ? out->message : "no reply");
        } else {
            s->seqs[i] = reply->message->seq;
        }
        if (reply)
            pb__message_send__free_unpacked(reply, NULL);
        if (out)
            pb__output__free_unpacked(out, NULL);
    }
    client_close(own);
    return NULL;
}

Test(room_it, concurrent_senders_get_gap_free_room_seqs)
{
    static struct sender senders[SENDERS];
    pthread_t threads[SENDERS];
    struct client_conn conns[SENDERS];
    char gws[SENDERS][16];
    for (int i = 0; i < SENDERS; i++) {
        snprintf(gws[i], sizeof gws[i], "gwT%d", i);
        cr_assert_eq(tl_signin(cli, &conns[i], 100 + i, 1000 + i, gws[i]), 0);
        join(&conns[i], CROWD_ROOM);
        senders[i] = (struct sender){.index = i};
    }
    for (int i = 0; i < SENDERS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, send_many, &senders[i]), 0);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(threads[i], NULL);

    enum { N = SENDERS * PER_SENDER };
    static bool seen[N + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < SENDERS; i++) {
        cr_assert_eq(senders[i].failures, 0, "sender %d: %s", i, senders[i].why);
        int64_t prev = 0;
        for (int k = 0; k < PER_SENDER; k++) {
            int64_t seq = senders[i].seqs[k];
            cr_assert(seq >= 1 && seq <= N, "seq %lld out of 1..%d", (long long)seq, N);
            cr_assert_not(seen[seq], "seq %lld acknowledged twice", (long long)seq);
            cr_assert_gt(seq, prev, "one sender's seqs rise");
            seen[seq] = true;
            prev = seq;
        }
    }
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) = %d AND min(seq) = 1 AND max(seq) = %d AND "
             "count(DISTINCT seq) = %d FROM room_message WHERE room_id = %d",
             N, N, N, CROWD_ROOM);
    cr_assert_eq(tl_query_int(srv.db, sql), 1, "room seqs are exactly 1..%d", N);
    cr_assert_eq(qi("SELECT seq FROM room_seq WHERE room_id = %lld", CROWD_ROOM), N);
    /* Every acknowledged seq is stored, sent by the sender that got it. */
    for (int i = 0; i < SENDERS; i++)
        for (int k = 0; k < PER_SENDER; k++) {
            snprintf(sql, sizeof sql,
                     "SELECT sender_device_id FROM room_message WHERE room_id = %d AND seq = %lld",
                     CROWD_ROOM, (long long)senders[i].seqs[k]);
            cr_assert_eq(tl_query_int(srv.db, sql), 1000 + i);
        }
}

/* --- pushes ------------------------------------------------------------- */

struct delivery {
    char gateway[32];
    int64_t devices[64];
    size_t n_devices;
    int64_t seq, sender_id, receiver_id;
    int receiver_type;
};

static nng_socket sub_all(void)
{
    nng_socket s;
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 400), 0);
    cr_assert_eq(nng_dial(s, srv.pub_url, NULL, 0), 0);
    usleep(200 * 1000); /* PUB drops what it sends before the pipe is attached */
    return s;
}

/* Everything published until 400 ms pass in silence. */
static size_t collect(nng_socket s, struct delivery *out, size_t max)
{
    size_t n = 0;
    nng_msg *m;
    while (nng_recvmsg(s, &m, 0) == 0) {
        const uint8_t *body = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl);
        cr_assert_lt(n, max, "too many deliveries");
        struct delivery *dv = &out[n++];
        memset(dv, 0, sizeof *dv);
        snprintf(dv->gateway, sizeof dv->gateway, "%.*s", (int)(nl - body), (const char *)body);
        Pb__Delivery *pd = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        cr_assert_not_null(pd);
        cr_assert_eq(pd->output->type, PB__PACKAGE_TYPE__PT_MESSAGE);
        Pb__MessageSend *ms =
            pb__message_send__unpack(NULL, pd->output->data.len, pd->output->data.data);
        cr_assert_not_null(ms);
        dv->seq = ms->message->seq;
        dv->sender_id = ms->message->sender->sender_id;
        dv->receiver_type = ms->message->receiver_type;
        dv->receiver_id = ms->message->receiver_id;
        cr_assert_leq(pd->n_device_ids, 64);
        dv->n_devices = pd->n_device_ids;
        memcpy(dv->devices, pd->device_ids, dv->n_devices * sizeof *dv->devices);
        pb__message_send__free_unpacked(ms, NULL);
        pb__delivery__free_unpacked(pd, NULL);
        nng_msg_free(m);
    }
    return n;
}

static const struct delivery *find(const struct delivery *ds, size_t n, const char *gw)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ds[i].gateway, gw) == 0)
            return &ds[i];
    return NULL;
}

Test(room_it, pushes_reach_subscribed_devices_but_not_the_sender)
{
    struct client_conn b2;
    cr_assert_eq(tl_signin(cli, &b2, 2, 22, "gwB"), 0); /* user 2's second device, not in a room */
    join(&a, 12);
    join(&b, 12);
    join(&c, 12);
    join(&d, 13);
    nng_socket sub = sub_all();
    struct delivery ds[8];
    cr_assert_eq(room_send(&a, 12, 1, "to the room"), 1);
    size_t n = collect(sub, ds, 8);
    cr_assert_eq(n, 2, "gwB and gwC");
    const struct delivery *dv = find(ds, n, "gwB");
    cr_assert_not_null(dv);
    cr_assert_eq(dv->n_devices, 1, "only the subscribed device of user 2");
    cr_assert_eq(dv->devices[0], 21);
    cr_assert_eq(dv->seq, 1, "the room seq");
    cr_assert_eq(dv->sender_id, 1);
    cr_assert_eq(dv->receiver_type, PB__RECEIVER_TYPE__RT_ROOM);
    cr_assert_eq(dv->receiver_id, 12);
    dv = find(ds, n, "gwC");
    cr_assert_not_null(dv);
    cr_assert_eq(dv->devices[0], 31);
    cr_assert_null(find(ds, n, "gwA"), "the sending device gets none");
    cr_assert_null(find(ds, n, "gwD"), "another room's device gets none");

    /* c leaves; a retry publishes nothing; the next send reaches b only. */
    pb__output__free_unpacked(subscribe_call(cli, &c, 0, 0), NULL);
    cr_assert_eq(room_send(&a, 12, 1, "to the room"), 1);
    cr_assert_eq(collect(sub, ds, 8), 0, "a retry is not pushed again");
    cr_assert_eq(room_send(&b, 12, 2, "back"), 2);
    n = collect(sub, ds, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ds[0].gateway, "gwA", "to a, not to b who sent it, nor c who left");
    cr_assert_eq(ds[0].seq, 2);
    nng_close(sub);
}

Test(room_it, a_crowded_room_gets_one_delivery_per_gateway)
{
    /* More subscribers than the push path keeps on its stack (32). */
    enum { CROWD = 40 };
    static struct client_conn crowd[CROWD];
    static bool got[CROWD];
    for (int i = 0; i < CROWD; i++) {
        cr_assert_eq(tl_signin(cli, &crowd[i], 200 + i, 2000 + i, i % 2 ? "gwM1" : "gwM2"), 0);
        join(&crowd[i], 14);
        got[i] = false;
    }
    nng_socket sub = sub_all();
    static struct delivery ds[8];
    cr_assert_eq(room_send(&crowd[0], 14, 1, "to everyone"), 1);
    size_t n = collect(sub, ds, 8);
    cr_assert_eq(n, 2, "one delivery per gateway");
    size_t total = 0;
    for (size_t k = 0; k < n; k++) {
        cr_assert_eq(ds[k].seq, 1);
        for (size_t j = 0; j < ds[k].n_devices; j++) {
            int64_t i = ds[k].devices[j] - 2000;
            cr_assert(i > 0 && i < CROWD, "device %lld", (long long)ds[k].devices[j]);
            cr_assert_not(got[i], "device %lld twice", (long long)ds[k].devices[j]);
            cr_assert_str_eq(ds[k].gateway, i % 2 ? "gwM1" : "gwM2");
            got[i] = true;
            total++;
        }
    }
    cr_assert_eq(total, CROWD - 1, "everyone but the sender");
    nng_close(sub);
}

/* --- gimctl room and watch ---------------------------------------------- */

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = 0;
}

/* Runs gimctl with the server's URLs and secret; returns its exit status, stdout in out. */
static int gimctl(char *out, size_t cap, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --url '%s' --pub '%s' --secret '%s' %s 2>/dev/null", GIMCTL_BIN,
             srv.url, srv.pub_url, TL_SECRET, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "gimctl died: %s", args);
    return WEXITSTATUS(st);
}

Test(room_it, gimctl_room_and_watch_show_a_live_room)
{
    char out[4096], path_out[256], path_err[256], watched[4096], err[1024] = "";
    snprintf(path_out, sizeof path_out, "%s/watch.out", srv.dir);
    snprintf(path_err, sizeof path_err, "%s/watch.err", srv.dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (!freopen(path_out, "w", stdout) || !freopen(path_err, "w", stderr))
            _exit(127);
        execl(GIMCTL_BIN, GIMCTL_BIN, "--pub", srv.pub_url, "--gateway", "gwW", "watch", "--count",
              "2", (char *)NULL);
        _exit(127);
    }
    /* watch says so on stderr once its SUB socket is dialed. */
    for (int i = 0; i < 100 && !strstr(err, "gateway=gwW"); i++) {
        usleep(50 * 1000);
        slurp(path_err, err, sizeof err);
    }
    cr_assert(strstr(err, "gateway=gwW"), "watch did not start: %s", err);
    usleep(200 * 1000);

    /* Device 51 joins room 30 at gwW (the watched gateway); device 61 talks there. */
    cr_assert_eq(gimctl(out, sizeof out, "--user 5 --device 51 --gateway gwW room subscribe 30"),
                 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(gimctl(out, sizeof out, "--user 6 --device 61 room send 30 'hello room'"), 0);
    cr_assert(strncmp(out, "seq=1 send_time=", 16) == 0, "%s", out);
    cr_assert_eq(gimctl(out, sizeof out, "--user 6 --device 61 room send 30 'two'"), 0);
    cr_assert(strncmp(out, "seq=2 ", 6) == 0, "%s", out);

    int st = 0;
    for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++)
        usleep(50 * 1000);
    if (waitpid(pid, &st, WNOHANG) == 0) {
        kill(pid, SIGTERM);
        waitpid(pid, &st, 0);
    }
    slurp(path_out, watched, sizeof watched);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "watch did not stop after 2: %s", watched);
    cr_assert_str_eq(watched,
                     "devices=51 output=PT_MESSAGE seq=1 from=6 type=MT_TEXT status=MS_NORMAL "
                     "to=RT_ROOM:30 text=\"hello room\"\n"
                     "devices=51 output=PT_MESSAGE seq=2 from=6 type=MT_TEXT status=MS_NORMAL "
                     "to=RT_ROOM:30 text=\"two\"\n");

    /* The room's log, as subscribe prints it; then a non-member cannot send without joining. */
    cr_assert_eq(gimctl(out, sizeof out, "--user 5 --device 51 room subscribe 30 --seq 1"), 0);
    cr_assert_str_eq(out,
                     "seq=2 from=6 type=MT_TEXT status=MS_NORMAL to=RT_ROOM:30 text=\"two\"\n");
    cr_assert_eq(gimctl(out, sizeof out, "--user 5 --device 51 room subscribe x"), 2);
}

/* --- retention ---------------------------------------------------------- */

static void setup_retain(void)
{
    tl_start(&srv, "rooms: {retain_messages: 5}");
    sign_in_all();
}

TestSuite(room_retain_it, .init = setup_retain, .fini = teardown, .timeout = 60);

Test(room_retain_it, only_the_last_messages_are_kept)
{
    char buf[64];
    join(&a, 3);
    for (int i = 1; i <= 8; i++)
        cr_assert_eq(room_send(&a, 3, i, "m"), i);
    Pb__SyncOutput *p = subscribe(&b, 3, 0);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "4,5,6,7,8");
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM room_message WHERE room_id = %lld", 3), 5);
    cr_assert_eq(qi("SELECT min(seq) FROM room_message WHERE room_id = %lld", 3), 4);
    cr_assert_eq(room_send(&a, 3, 9, "m"), 9, "seqs go on after pruning");
    cr_assert_eq(room_send(&a, 3, 1, "m"), -PB__ERROR_CODE__EC_NOT_FOUND,
                 "a retry of a pruned send cannot be rebuilt");
}
