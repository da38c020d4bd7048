/*
 * gim-bench: a load generator that plays the gateways of gim-logic.
 *
 * It signs in U users (one device each, device id = user id) with tokens it
 * mints itself (auth_mint, --secret or $GIM_TOKEN_SECRET), then drives one
 * workload at a time for T seconds through ONE nng REQ socket with C
 * contexts. Each context is a small state machine on its own aio (SEND ->
 * RECV -> build the next request), as in nng's async demo: a request's
 * latency runs from the moment it is handed to nng to the moment its reply's
 * callback runs, with no thread hand-off in between to blur it.
 *
 * Only EC_OK replies count as operations, and a sample of them is decoded and
 * checked (check_send/check_sync): a server that answers fast but wrongly
 * fails the run instead of winning it.
 *
 * --limits measures, in the same run, what the service cannot beat: a raw
 * nng REQ/REP echo with the same C and request bytes, and a raw SQLite group
 * commit of the rows a send stores, on a copy of the database.
 *
 * stdout carries only machine-readable lines (PRELOAD, RESULT, LIMIT,
 * STORAGE, SERVER); progress and errors go to stderr. Exit status: 0 when
 * every workload got EC_OK replies and no check failed, 1 otherwise, 2 for
 * bad usage. docs/benchmarks.md has the commands and the measured numbers.
 *
 * Ownership: main() owns every allocation through struct bench and struct
 * run; nng callbacks only touch their own context's state plus atomics.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "err.h"
#include "gimclient.h"
#include "message.h"
#include "proto.h"
#include "seq.h"
#include "store.h"

#define MAX_WORKLOADS   8
#define CODE_SLOTS      10 /* wire codes 0..8, then "any other" */
#define TOKEN_TTL_S     86400
#define RESIGN_AFTER_NS (45LL * 1000000000) /* well inside presence's default 90 s timeout */
#define DIRECT_BATCH    10000               /* messages per transaction of --preload-direct */
#define MAX_REPORTED    5                   /* check failures described on stderr */

enum op { OP_SIGNIN, OP_SEND, OP_GROUP, OP_SYNC, OP_ACK, OP_ECHO, OP_HEARTBEAT, OP_COUNT };
static const char *const op_names[] = {"signin", "send", "group",    "sync",
                                       "ack",    "echo", "heartbeat"};

enum workload { WL_SIGNIN, WL_SEND, WL_GROUP, WL_SYNC, WL_MIXED, WL_RW, WL_ECHO };
static const char *const wl_names[] = {"signin", "send", "group", "sync", "mixed", "rw", "echo"};

struct opts {
    const char *url, *db, *secret, *gateway, *echo_url;
    enum workload wl[MAX_WORKLOADS];
    int nwl;
    int conc;
    int64_t users, user_base;
    double duration, warmup;
    int payload;
    int64_t group_size, groups, group_base;
    int mix_sync, mix_send, mix_ack;
    int readers;            /* rw: contexts that read; 0 = C / 4 */
    int read_sync, read_hb; /* rw: --read-mix, syncs : heartbeats */
    bool sync_random;       /* --sync-from random: a random seq inside the history */
    int page_size;
    int64_t preload;
    bool preload_direct;
    double preload_max;
    bool limits, report_storage;
    long server_pid;
    int timeout_ms;
    int check_every;
    uint64_t seed;
};

/* Latencies in ns of EC_OK replies completed inside the window. */
struct lats {
    uint64_t *v;
    size_t n, cap;
};

struct stats {
    struct lats lat[OP_COUNT]; /* by operation */
    uint64_t ok, ok_op[OP_COUNT];
    uint64_t code[CODE_SLOTS]; /* non-OK replies inside the window, by wire code */
    uint64_t timeouts, nng_err;
    uint64_t checked, check_failed;
    uint64_t page_msgs, pages; /* checked sync replies: messages returned */
    uint64_t from_sum;         /* checked sync replies: sum of the seqs they started from */
};

/* One REQ socket and its (re-creatable) dialer. */
struct link {
    nng_socket sock;
    bool open;
    nng_dialer dialer;
    bool has_dialer;
    char url[256];
};

struct bench {
    struct opts o;
    const char *secret;
    char **tokens;        /* per user index */
    int64_t *last_seq;    /* per user index: user_seq when the phase started */
    int64_t *sender_seq;  /* per user index: last seq in a checked own-send reply */
    bool partition;       /* senders split among contexts, so each sender is serialized */
    int64_t content_text; /* text length so an encoded Text is about --payload bytes */
    atomic_llong next_rid;
    int64_t signed_in_ns; /* 0 = not signed in */
    atomic_int reported;
};

struct run;

struct bctx {
    struct run *run;
    int id;
    nng_ctx ctx;
    nng_aio *aio;
    bool ctx_open;
    bool sending;
    uint64_t rng;
    uint64_t nreq;
    /* the request in flight */
    enum op op;
    int64_t t0, uidx, peer, arg, todo_i;
    uint8_t *buf; /* the packed GatewayRequest (kept: the echo reply must equal it) */
    size_t buf_cap, req_len;
    uint8_t *inner; /* packed Input.data */
    size_t inner_cap;
    uint8_t *content; /* the in-flight message's content */
    size_t content_cap, content_len;
    struct stats st;
};

struct run {
    struct bench *b;
    struct link *link;
    enum workload wl;
    int n;
    struct bctx *ctx;
    int64_t t_begin, t_measure, t_end; /* ns; the window is [t_measure, t_end] */
    int64_t ok_target;                 /* stop after this many EC_OK replies; 0 = run to t_end */
    const int64_t *todo;               /* sign-in: user indexes */
    int64_t ntodo;
    uint8_t *todo_ok;
    atomic_llong next_todo;
    atomic_llong ok_total;
    atomic_llong last_reply_ns;
    atomic_llong timeouts;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;
    char first_error[256];
    bool have_error;
};

struct result {
    enum workload wl;
    double secs;
    struct stats st; /* merged, lat[] sorted */
    struct lats all; /* every operation's latencies, sorted */
    double p50, p99, p999;
    uint64_t errors;
};

/* ---------------------------------------------------------------- helpers */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64*: cheap, per context, good enough to pick users. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int64_t rnd_below(uint64_t *s, int64_t n)
{
    return n > 0 ? (int64_t)(rnd(s) % (uint64_t)n) : 0;
}

static int64_t uid_of(const struct bench *b, int64_t idx)
{
    return b->o.user_base + idx;
}

/* A 1:1 text between two different random users (their indexes in *si, *ri). */
static struct message_new random_pair(const struct bench *b, uint64_t *rng, int64_t now,
                                      int64_t *si, int64_t *ri)
{
    *si = rnd_below(rng, b->o.users);
    *ri = rnd_below(rng, b->o.users - 1);
    if (*ri >= *si)
        (*ri)++;
    return (struct message_new){
        .sender_type = PB__SENDER_TYPE__ST_USER,
        .sender_id = uid_of(b, *si),
        .sender_device_id = uid_of(b, *si),
        .receiver_type = PB__RECEIVER_TYPE__RT_USER,
        .receiver_id = uid_of(b, *ri),
        .message_type = PB__MESSAGE_TYPE__MT_TEXT,
        .send_time = now,
    };
}

/* The rows a 1:1 send stores: the message and its two inbox entries. */
static gim_err store_pair(struct store_conn *db, const struct message_new *m, int64_t *out_id)
{
    int64_t id = 0;
    gim_err e = message_insert(db, m, &id);
    *out_id = id;
    if (e == GIM_OK)
        e = message_inbox_add(db, m->sender_id, m->sender_seq, id);
    if (e == GIM_OK)
        e = message_inbox_add(db, m->receiver_id, m->receiver_seq, id);
    return e;
}

static bool grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = need + need / 2 + 64;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* The first SQL value of a one-row query on db, or -1. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/*
 * The content of one text message: an encoded pb.Text whose text starts with
 * the request id in hex, so a reply's content proves it is this message's.
 */
static gim_err make_content(const struct bench *b, int64_t rid, uint8_t **buf, size_t *cap,
                            size_t *len)
{
    size_t tl = (size_t)b->content_text;
    char *text = malloc(tl + 1);
    if (!text)
        return GIM_ENOMEM;
    char head[24];
    int hl = snprintf(head, sizeof head, "%016" PRIx64, (uint64_t)rid);
    memset(text, 'a', tl);
    memcpy(text, head, (size_t)hl < tl ? (size_t)hl : tl);
    text[tl] = '\0';
    Pb__Text t = PB__TEXT__INIT;
    t.text = text;
    size_t n = pb__text__get_packed_size(&t);
    gim_err e = GIM_ENOMEM;
    if (grow(buf, cap, n)) {
        *len = pb__text__pack(&t, *buf);
        e = GIM_OK;
    }
    free(text);
    return e;
}

/* Largest text length whose encoded Text (tag, varint length, bytes) fits in payload bytes. */
static int64_t text_len_for(int payload)
{
    for (int64_t l = payload - 2; l > 0; l--) {
        int64_t vl = l < 128 ? 1 : l < 16384 ? 2 : l < 2097152 ? 3 : 4;
        if (1 + vl + l <= payload)
            return l;
    }
    return 1;
}

/* ------------------------------------------------------------------- link */

static gim_err link_open(struct link *l, const char *url)
{
    int rv;
    memset(l, 0, sizeof *l);
    snprintf(l->url, sizeof l->url, "%s", url);
    if ((rv = nng_req0_open(&l->sock)) != 0) {
        fprintf(stderr, "gim-bench: cannot open a REQ socket: %s\n", nng_strerror(rv));
        return GIM_EIO;
    }
    l->open = true;
    nng_socket_set_ms(l->sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(l->sock, NNG_OPT_RECONNMAXT, 500);
    nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, 16 << 20);
    /* Non-blocking: the server may still be starting, nng keeps trying. */
    if ((rv = nng_dial(l->sock, l->url, &l->dialer, NNG_FLAG_NONBLOCK)) != 0) {
        fprintf(stderr, "gim-bench: cannot dial %s: %s\n", l->url, nng_strerror(rv));
        return GIM_EIO;
    }
    l->has_dialer = true;
    return GIM_OK;
}

/*
 * Debian's nng 1.5.2 may give up redialing when a connection drops during its
 * handshake; a fresh dialer on the same socket starts over, and the contexts
 * (whose requests timed out) carry on with the next request.
 */
static void link_redial(struct link *l)
{
    if (l->has_dialer)
        nng_dialer_close(l->dialer);
    l->has_dialer = nng_dial(l->sock, l->url, &l->dialer, NNG_FLAG_NONBLOCK) == 0;
}

static void link_close(struct link *l)
{
    if (l->open)
        nng_close(l->sock);
    l->open = false;
    l->has_dialer = false;
}

/* --------------------------------------------------------- requests/checks */

static void report_failure(struct bench *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void report_failure(struct bench *b, const char *fmt, ...)
{
    if (atomic_fetch_add(&b->reported, 1) >= MAX_REPORTED)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gim-bench: CHECK FAILED: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* rw: the first readers contexts read, the others send. */
static int readers_of(const struct run *r)
{
    return r->wl == WL_RW ? r->b->o.readers : 0;
}

/*
 * Sender of the next 1:1 send of context c: its own slice of users when
 * partitioned (among the sending contexts only, in rw).
 */
static int64_t pick_sender(struct bctx *c)
{
    struct bench *b = c->run->b;
    if (!b->partition)
        return rnd_below(&c->rng, b->o.users);
    int64_t first = readers_of(c->run);
    int64_t n = c->run->n - first, id = c->id - first;
    int64_t slots = (b->o.users - id + n - 1) / n;
    return id + n * rnd_below(&c->rng, slots);
}

static int64_t member_of(const struct bench *b, int64_t g, int64_t j)
{
    return (g * b->o.group_size + j) % b->o.users;
}

static enum op pick_op(struct bctx *c)
{
    const struct opts *o = &c->run->b->o;
    switch (c->run->wl) {
    case WL_SIGNIN:
        return OP_SIGNIN;
    case WL_SEND:
        return OP_SEND;
    case WL_GROUP:
        return OP_GROUP;
    case WL_SYNC:
        return OP_SYNC;
    case WL_ECHO:
        return OP_ECHO;
    case WL_MIXED: {
        int64_t x = rnd_below(&c->rng, o->mix_sync + o->mix_send + o->mix_ack);
        return x < o->mix_sync ? OP_SYNC : x < o->mix_sync + o->mix_send ? OP_SEND : OP_ACK;
    }
    case WL_RW:
        if (c->id >= o->readers)
            return OP_SEND;
        return rnd_below(&c->rng, o->read_sync + o->read_hb) < o->read_sync ? OP_SYNC
                                                                            : OP_HEARTBEAT;
    }
    return OP_SEND;
}

/* The seq a sync (or ack) of user idx starts from: a little more than one page back. */
static int64_t sync_from(const struct bench *b, int64_t idx)
{
    int64_t s = b->last_seq[idx] - (b->o.page_size + 10);
    return s > 0 ? s : 0;
}

/*
 * The seq a sync of user idx starts from. --sync-from random: uniform in
 * 1..last - page, so the page (the seqs after it) is full and lies anywhere
 * in the history, not only in its newest, cached end. Never 0, which would
 * mean "after the device's ack". A history shorter than two pages falls back
 * to the newest page.
 */
static int64_t sync_start(struct bctx *c, int64_t idx)
{
    const struct bench *b = c->run->b;
    int64_t span = b->last_seq[idx] - b->o.page_size;
    if (!b->o.sync_random || span < 1)
        return sync_from(b, idx);
    return 1 + rnd_below(&c->rng, span);
}

/* Builds the next request of c into c->buf. 1 = built, 0 = nothing left to do, -1 = error. */
static int build(struct bctx *c)
{
    struct run *r = c->run;
    struct bench *b = r->b;
    Pb__Input in = PB__INPUT__INIT;
    Pb__GatewayRequest req = PB__GATEWAY_REQUEST__INIT;
    Pb__Message msg = PB__MESSAGE__INIT;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    Pb__SyncInput si = PB__SYNC_INPUT__INIT;
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    Pb__SignInInput sgn = PB__SIGN_IN_INPUT__INIT;
    const ProtobufCMessage *data = NULL;
    int64_t rid = atomic_fetch_add_explicit(&b->next_rid, 1, memory_order_relaxed);

    c->op = pick_op(c);
    c->peer = 0;
    c->arg = 0;
    switch (c->op) {
    case OP_SIGNIN:
        c->todo_i = atomic_fetch_add(&r->next_todo, 1);
        if (c->todo_i >= r->ntodo)
            return 0;
        c->uidx = r->todo[c->todo_i];
        sgn.user_id = sgn.device_id = uid_of(b, c->uidx);
        sgn.token = b->tokens[c->uidx];
        in.type = PB__PACKAGE_TYPE__PT_SIGN_IN;
        data = &sgn.base;
        break;
    case OP_SEND:
    case OP_ECHO:
    case OP_GROUP:
        if (c->op == OP_GROUP) {
            int64_t g = rnd_below(&c->rng, b->o.groups);
            c->peer = b->o.group_base + g;
            c->uidx = member_of(b, g, rnd_below(&c->rng, b->o.group_size));
            msg.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
            msg.receiver_id = c->peer;
        } else {
            c->uidx = pick_sender(c);
            int64_t to = rnd_below(&c->rng, b->o.users - 1);
            c->peer = to >= c->uidx ? to + 1 : to; /* never oneself */
            msg.receiver_type = PB__RECEIVER_TYPE__RT_USER;
            msg.receiver_id = uid_of(b, c->peer);
        }
        if (make_content(b, rid, &c->content, &c->content_cap, &c->content_len) != GIM_OK)
            return -1;
        msg.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        msg.message_content.data = c->content;
        msg.message_content.len = c->content_len;
        ms.message = &msg;
        in.type = PB__PACKAGE_TYPE__PT_MESSAGE;
        data = &ms.base;
        break;
    case OP_SYNC:
        c->uidx = rnd_below(&c->rng, b->o.users);
        c->arg = si.seq = sync_start(c, c->uidx);
        in.type = PB__PACKAGE_TYPE__PT_SYNC;
        data = &si.base;
        break;
    case OP_ACK:
        c->uidx = rnd_below(&c->rng, b->o.users);
        ack.device_ack = sync_from(b, c->uidx);
        ack.receive_time = wall_ms();
        in.type = PB__PACKAGE_TYPE__PT_MESSAGE_ACK;
        data = &ack.base;
        break;
    case OP_HEARTBEAT:
        c->uidx = rnd_below(&c->rng, b->o.users);
        in.type = PB__PACKAGE_TYPE__PT_HEARTBEAT;
        break;
    case OP_COUNT:
        return -1;
    }
    in.request_id = rid;
    if (data) { /* a heartbeat has no data */
        size_t dl = protobuf_c_message_get_packed_size(data);
        if (!grow(&c->inner, &c->inner_cap, dl + 1))
            return -1;
        in.data.len = protobuf_c_message_pack(data, c->inner);
        in.data.data = c->inner;
    }
    req.user_id = uid_of(b, c->uidx);
    req.device_id = uid_of(b, c->uidx);
    req.gateway_id = (char *)b->o.gateway;
    req.client_addr = "gim-bench";
    req.input = &in;
    size_t len = pb__gateway_request__get_packed_size(&req);
    if (!grow(&c->buf, &c->buf_cap, len + 1))
        return -1;
    c->req_len = pb__gateway_request__pack(&req, c->buf);
    return 1;
}

/* A 1:1 or group send reply: the sender's stored copy of exactly this message. */
static bool check_send(struct bctx *c, const Pb__Output *out)
{
    struct bench *b = c->run->b;
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    const Pb__Message *m = ms ? ms->message : NULL;
    int64_t uid = uid_of(b, c->uidx);
    bool group = c->op == OP_GROUP;
    /* Only a partitioned 1:1 sender's slot is this context's to read and write. */
    bool serial = !group && b->partition;
    int64_t prev = serial ? b->sender_seq[c->uidx] : 0;
    const char *why = NULL;
    if (!m)
        why = "reply data is not a MessageSend with a message";
    else if (m->seq <= 0)
        why = "seq is not > 0";
    else if (m->message_content.len != c->content_len ||
             memcmp(m->message_content.data, c->content, c->content_len) != 0)
        why = "content did not round-trip";
    else if (m->receiver_type !=
                 (group ? PB__RECEIVER_TYPE__RT_GROUP : PB__RECEIVER_TYPE__RT_USER) ||
             m->receiver_id != (group ? c->peer : uid_of(b, c->peer)))
        why = "receiver differs from the request";
    else if (!m->sender || m->sender->sender_id != uid || m->sender->device_id != uid)
        why = "sender is not the signed-in device";
    else if (serial && m->seq <= prev)
        why = "seq did not increase for a serialized sender";
    if (!why && serial)
        b->sender_seq[c->uidx] = m->seq;
    if (why)
        report_failure(b, "%s (user %" PRId64 ", seq %" PRId64 ", previous %" PRId64 ")", why, uid,
                       m ? m->seq : 0, prev);
    if (ms)
        pb__message_send__free_unpacked(ms, NULL);
    return !why;
}

/* A sync page: ascending seqs after the asked one, at most a page, has_more when cut short. */
static bool check_sync(struct bctx *c, const Pb__Output *out)
{
    struct bench *b = c->run->b;
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    const char *why = NULL;
    if (!so) {
        why = "reply data is not a SyncOutput";
        goto out;
    }
    int64_t prev = c->arg;
    for (size_t i = 0; i < so->n_messages && !why; i++) {
        if (so->messages[i]->seq <= prev)
            why = "seqs are not ascending after the asked seq";
        prev = so->messages[i]->seq;
    }
    if (!why && so->n_messages > (size_t)b->o.page_size)
        why = "more messages than a page";
    /* With seq 0 the server starts after the device's ack instead: only order is checked. */
    if (!why && c->arg > 0) {
        int64_t avail = b->last_seq[c->uidx] - c->arg;
        int64_t want = avail < b->o.page_size ? avail : b->o.page_size;
        if (avail > 0 && so->n_messages == 0)
            why = "empty page although messages exist";
        else if ((int64_t)so->n_messages < want && !so->has_more)
            why = "short page without has_more";
    }
    c->st.page_msgs += so->n_messages;
    c->st.pages++;
    c->st.from_sum += (uint64_t)c->arg;
out:
    if (why)
        report_failure(b, "sync of user %" PRId64 " from seq %" PRId64 ": %s", uid_of(b, c->uidx),
                       c->arg, why);
    if (so)
        pb__sync_output__free_unpacked(so, NULL);
    return !why;
}

static bool in_window(const struct run *r, int64_t t)
{
    return r->ok_target > 0 || (t >= r->t_measure && t <= r->t_end);
}

static void note_error(struct run *r, int code, const char *text)
{
    pthread_mutex_lock(&r->mu);
    if (!r->have_error) {
        snprintf(r->first_error, sizeof r->first_error, "%s: %s",
                 code >= 0 ? gim_err_name((gim_err)code) : "nng", text ? text : "");
        r->have_error = true;
    }
    pthread_mutex_unlock(&r->mu);
}

static void push_latency(struct lats *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t n = s->cap ? s->cap * 2 : 4096;
        uint64_t *p = realloc(s->v, n * sizeof *p);
        if (!p)
            return; /* keep running; this sample is lost, the count is not */
        s->v = p;
        s->cap = n;
    }
    s->v[s->n++] = ns;
}

static void on_reply(struct bctx *c, const uint8_t *body, size_t len, int64_t t1)
{
    struct run *r = c->run;
    bool win = in_window(r, t1);
    bool sample = r->b->o.check_every > 0 && c->nreq++ % (uint64_t)r->b->o.check_every == 0;
    int code;
    Pb__Output *out = NULL;

    atomic_store_explicit(&r->last_reply_ns, t1, memory_order_relaxed);
    if (c->op == OP_ECHO) {
        code = 0;
        if (sample) {
            c->st.checked++;
            if (len != c->req_len || memcmp(body, c->buf, len) != 0) {
                c->st.check_failed++;
                report_failure(r->b, "echo reply differs from the request");
                code = -1;
            }
        }
    } else if (!(out = pb__output__unpack(NULL, len, body))) {
        code = -1;
        c->st.check_failed++;
        report_failure(r->b, "reply is not a pb.Output");
    } else {
        code = out->code;
    }
    if (code == 0) {
        if (c->op == OP_SIGNIN)
            r->todo_ok[c->todo_i] = 1;
        if (sample && (c->op == OP_SEND || c->op == OP_GROUP || c->op == OP_SYNC)) {
            c->st.checked++;
            bool ok = c->op == OP_SYNC ? check_sync(c, out) : check_send(c, out);
            if (!ok)
                c->st.check_failed++;
        }
        long long total = atomic_fetch_add(&r->ok_total, 1) + 1;
        if (r->ok_target > 0 && total >= r->ok_target)
            atomic_store(&r->stop, true);
        if (win) {
            c->st.ok++;
            c->st.ok_op[c->op]++;
            push_latency(&c->st.lat[c->op], (uint64_t)(t1 - c->t0));
        }
    } else if (code > 0) {
        if (win)
            c->st.code[code < CODE_SLOTS - 1 ? code : CODE_SLOTS - 1]++;
        note_error(r, code, out->message);
    }
    if (out)
        pb__output__free_unpacked(out, NULL);
}

static void on_failure(struct bctx *c, int rv, int64_t t1)
{
    struct run *r = c->run;
    if (atomic_load(&r->stop) && (rv == NNG_ECANCELED || rv == NNG_ECLOSED))
        return; /* our own shutdown, not the server's doing */
    if (rv == NNG_ETIMEDOUT)
        atomic_fetch_add(&r->timeouts, 1);
    if (in_window(r, t1)) {
        if (rv == NNG_ETIMEDOUT)
            c->st.timeouts++;
        else
            c->st.nng_err++;
    }
    note_error(r, -1, nng_strerror(rv));
}

static void ctx_finish(struct bctx *c)
{
    struct run *r = c->run;
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Starts c's next request, or retires c when the run is over. */
static void ctx_next(struct bctx *c)
{
    struct run *r = c->run;
    if (atomic_load(&r->stop) || now_ns() >= r->t_end) {
        ctx_finish(c);
        return;
    }
    int rc = build(c);
    nng_msg *m = NULL;
    if (rc > 0 && nng_msg_alloc(&m, 0) == 0 && nng_msg_append(m, c->buf, c->req_len) == 0) {
        c->sending = true;
        c->t0 = now_ns();
        nng_aio_set_msg(c->aio, m);
        nng_ctx_send(c->ctx, c->aio);
        return;
    }
    if (m)
        nng_msg_free(m);
    if (rc < 0)
        fprintf(stderr, "gim-bench: out of memory building a request\n");
    ctx_finish(c);
}

static void ctx_cb(void *arg)
{
    struct bctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->sending) {
        c->sending = false;
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            on_failure(c, rv, now_ns());
            ctx_next(c);
            return;
        }
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    int64_t t1 = now_ns();
    if (rv != 0) {
        on_failure(c, rv, t1);
    } else {
        nng_msg *m = nng_aio_get_msg(c->aio);
        on_reply(c, nng_msg_body(m), nng_msg_len(m), t1);
        nng_msg_free(m);
    }
    ctx_next(c);
}

/* ------------------------------------------------------------------- runs */

static void run_free(struct run *r)
{
    for (int i = 0; r->ctx && i < r->n; i++) {
        struct bctx *c = &r->ctx[i];
        if (c->aio)
            nng_aio_free(c->aio); /* stops it: no callback runs after this */
        if (c->ctx_open)
            nng_ctx_close(c->ctx);
        free(c->buf);
        free(c->inner);
        free(c->content);
        for (int k = 0; k < OP_COUNT; k++)
            free(c->st.lat[k].v);
    }
    free(r->ctx);
    r->ctx = NULL;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

/* Appends the n samples of from to *to. A failed allocation loses them (and says so). */
static void lats_append(struct lats *to, const uint64_t *from, size_t n)
{
    if (!n)
        return;
    if (to->n + n > to->cap) {
        uint64_t *p = realloc(to->v, (to->n + n) * sizeof *p);
        if (!p) {
            fprintf(stderr, "gim-bench: out of memory: %zu latencies left out\n", n);
            return;
        }
        to->v = p;
        to->cap = to->n + n;
    }
    memcpy(to->v + to->n, from, n * sizeof *from);
    to->n += n;
}

static void result_free(struct result *res)
{
    free(res->all.v);
    for (int k = 0; k < OP_COUNT; k++)
        free(res->st.lat[k].v);
    memset(res, 0, sizeof *res);
}

static void merge(struct result *res, struct run *r)
{
    struct stats *t = &res->st;
    for (int i = 0; i < r->n; i++) {
        const struct stats *s = &r->ctx[i].st;
        for (int k = 0; k < OP_COUNT; k++)
            lats_append(&t->lat[k], s->lat[k].v, s->lat[k].n);
        t->ok += s->ok;
        for (int k = 0; k < OP_COUNT; k++)
            t->ok_op[k] += s->ok_op[k];
        for (int k = 0; k < CODE_SLOTS; k++)
            t->code[k] += s->code[k];
        t->timeouts += s->timeouts;
        t->nng_err += s->nng_err;
        t->checked += s->checked;
        t->check_failed += s->check_failed;
        t->page_msgs += s->page_msgs;
        t->pages += s->pages;
        t->from_sum += s->from_sum;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const struct lats *s, double q)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(q * (double)s->n + 0.999999);
    i = i ? i - 1 : 0;
    if (i >= s->n)
        i = s->n - 1;
    return (double)s->v[i] / 1e6;
}

/* Sorts the latencies of each operation and of all together; the percentiles, the errors. */
static void finish_result(struct result *res)
{
    struct stats *s = &res->st;
    for (int k = 0; k < OP_COUNT; k++) {
        if (s->lat[k].n)
            qsort(s->lat[k].v, s->lat[k].n, sizeof *s->lat[k].v, cmp_u64);
        lats_append(&res->all, s->lat[k].v, s->lat[k].n);
    }
    if (res->all.n)
        qsort(res->all.v, res->all.n, sizeof *res->all.v, cmp_u64);
    res->p50 = pct_ms(&res->all, 0.50);
    res->p99 = pct_ms(&res->all, 0.99);
    res->p999 = pct_ms(&res->all, 0.999);
    res->errors = s->timeouts + s->nng_err;
    for (int k = 1; k < CODE_SLOTS; k++)
        res->errors += s->code[k];
}

/*
 * Runs workload wl on link with C contexts. Time-bound runs measure from
 * warmup to duration; ok_target > 0 runs until that many EC_OK replies (or
 * max_s). todo/ntodo: users to sign in (WL_SIGNIN). Fills res if not NULL.
 */
static gim_err run_workload(struct bench *b, struct link *l, enum workload wl, double warmup,
                            double duration, int64_t ok_target, const int64_t *todo, int64_t ntodo,
                            uint8_t *todo_ok, struct result *res)
{
    struct run r;
    gim_err e = GIM_OK;
    pthread_condattr_t ca;
    memset(&r, 0, sizeof r);
    r.b = b;
    r.link = l;
    r.wl = wl;
    r.n = b->o.conc;
    r.ok_target = ok_target;
    r.todo = todo;
    r.ntodo = ntodo;
    r.todo_ok = todo_ok;
    pthread_mutex_init(&r.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(r.ctx = calloc((size_t)r.n, sizeof *r.ctx))) {
        e = GIM_ENOMEM;
        goto out;
    }
    for (int i = 0; i < r.n; i++) {
        struct bctx *c = &r.ctx[i];
        int rv;
        c->run = &r;
        c->id = i;
        c->rng = b->o.seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xBF58476D1CE4E5B9ULL + 1;
        if ((rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, l->sock)) != 0) {
            fprintf(stderr, "gim-bench: cannot open context: %s\n", nng_strerror(rv));
            e = GIM_EIO;
            goto out;
        }
        c->ctx_open = true;
        nng_aio_set_timeout(c->aio, b->o.timeout_ms);
    }
    r.t_begin = now_ns();
    r.t_measure = r.t_begin + (int64_t)(warmup * 1e9);
    r.t_end = r.t_measure + (int64_t)(duration * 1e9);
    atomic_store(&r.last_reply_ns, r.t_begin);
    r.active = r.n;
    for (int i = 0; i < r.n; i++)
        ctx_next(&r.ctx[i]);

    int64_t timeout_ns = (int64_t)b->o.timeout_ms * 1000000;
    int64_t hard = r.t_end + timeout_ns + 2000000000LL;
    int64_t next_progress = r.t_begin + 5000000000LL;
    long long seen_timeouts = 0;
    pthread_mutex_lock(&r.mu);
    while (r.active > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
        if (r.active == 0)
            break;
        pthread_mutex_unlock(&r.mu);
        int64_t now = now_ns();
        long long t = atomic_load(&r.timeouts);
        if (t != seen_timeouts && now - atomic_load(&r.last_reply_ns) > timeout_ns / 2) {
            fprintf(stderr, "gim-bench: no reply for %lld ms: re-dialing %s\n",
                    (long long)((now - atomic_load(&r.last_reply_ns)) / 1000000), l->url);
            link_redial(l);
            seen_timeouts = t;
        }
        if (ok_target > 0 && now >= next_progress) {
            fprintf(stderr, "gim-bench: %s: %lld of %lld ok\n", wl_names[wl],
                    (long long)atomic_load(&r.ok_total), (long long)ok_target);
            next_progress = now + 5000000000LL;
        }
        if (now > hard) {
            atomic_store(&r.stop, true);
            for (int i = 0; i < r.n; i++)
                nng_aio_cancel(r.ctx[i].aio);
        }
        pthread_mutex_lock(&r.mu);
    }
    pthread_mutex_unlock(&r.mu);
    atomic_store(&r.stop, true);

    if (res) {
        memset(res, 0, sizeof *res);
        res->wl = wl;
        int64_t end = ok_target > 0 ? atomic_load(&r.last_reply_ns) : r.t_end;
        res->secs = (double)(end - (ok_target > 0 ? r.t_begin : r.t_measure)) / 1e9;
        merge(res, &r);
        finish_result(res);
    }
    if (r.have_error)
        fprintf(stderr, "gim-bench: %s: first error: %s\n", wl_names[wl], r.first_error);
out:
    run_free(&r);
    return e;
}

/* Signs in every user (once more for those that failed); GIM_EUNAUTH if any stay out. */
static gim_err sign_in_all(struct bench *b, struct link *l)
{
    int64_t n = b->o.users, left = n;
    int64_t *todo = malloc((size_t)n * sizeof *todo);
    uint8_t *ok = calloc((size_t)n, 1);
    gim_err e = GIM_OK;
    if (!todo || !ok) {
        e = GIM_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        todo[i] = i;
    int64_t t0 = now_ns();
    for (int attempt = 0; attempt < 2 && left > 0; attempt++) {
        memset(ok, 0, (size_t)left);
        if ((e = run_workload(b, l, WL_SIGNIN, 0, 10.0 + (double)left / 200, 0, todo, left, ok,
                              NULL)) != GIM_OK)
            goto out;
        int64_t k = 0;
        for (int64_t i = 0; i < left; i++)
            if (!ok[i])
                todo[k++] = todo[i];
        left = k;
    }
    if (left > 0) {
        fprintf(stderr, "gim-bench: %lld of %lld users could not sign in (wrong --secret?)\n",
                (long long)left, (long long)n);
        e = GIM_EUNAUTH;
        goto out;
    }
    b->signed_in_ns = now_ns();
    fprintf(stderr, "gim-bench: signed in %lld users in %.2f s\n", (long long)n,
            (double)(b->signed_in_ns - t0) / 1e9);
out:
    free(todo);
    free(ok);
    return e;
}

/* ------------------------------------------------------------- database */

static const char SQL_USER_SEQS[] =
    "SELECT user_id, seq FROM user_seq WHERE user_id BETWEEN ?1 AND ?2";
static const char SQL_GROUP_CLEAR[] = "DELETE FROM group_member WHERE group_id = ?1";
static const char SQL_GROUP_UPSERT[] =
    "INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (group_id) DO UPDATE SET owner_id = excluded.owner_id";
static const char SQL_MEMBER_ADD[] =
    "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)";
static const char SQL_SEQ_SET[] = "INSERT INTO user_seq (user_id, seq) VALUES (?1, ?2) "
                                  "ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq";
/* What a 1:1 send with a request id records (handle_message.c, SQL_IDEM_PUT). */
static const char SQL_IDEM_ADD[] = "INSERT INTO idempotency (device_id, request_id, created_at, "
                                   "message_id) VALUES (?1, ?2, ?3, ?4)";
static const char SQL_PAGE_SIZE[] = "PRAGMA page_size";
static const char SQL_PAGE_COUNT[] = "PRAGMA page_count";
static const char SQL_FREELIST[] = "PRAGMA freelist_count";
static const char SQL_MESSAGES[] = "SELECT count(*) FROM message";
static const char SQL_INBOX[] = "SELECT count(*) FROM inbox";

static gim_err open_db(const char *path, bool rw, sqlite3 **out)
{
    int flags = rw ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path, out, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: cannot open %s: %s\n", path, sqlite3_errmsg(*out));
        sqlite3_close(*out);
        *out = NULL;
        return GIM_EIO;
    }
    sqlite3_busy_timeout(*out, 10000);
    return GIM_OK;
}

/* Reads user_seq of every bench user into last (zero where the user has none). */
static gim_err load_seqs(const struct bench *b, const char *path, int64_t *last)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    gim_err e;
    memset(last, 0, (size_t)b->o.users * sizeof *last);
    if ((e = open_db(path, false, &db)) != GIM_OK)
        return e;
    if (sqlite3_prepare_v2(db, SQL_USER_SEQS, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: %s: %s (is it a gim-logic database?)\n", path,
                sqlite3_errmsg(db));
        e = GIM_ESCHEMA;
        goto out;
    }
    sqlite3_bind_int64(st, 1, b->o.user_base);
    sqlite3_bind_int64(st, 2, b->o.user_base + b->o.users - 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        last[sqlite3_column_int64(st, 0) - b->o.user_base] = sqlite3_column_int64(st, 1);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "gim-bench: reading user_seq: %s\n", sqlite3_errmsg(db));
        e = GIM_EIO;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return e;
}

/* (Re)creates the bench's groups on the live database: member j of group g is user (g*G+j) % U. */
static gim_err setup_groups(const struct bench *b)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *clear = NULL, *grp = NULL, *mem = NULL;
    gim_err e;
    int rc = SQLITE_OK;
    int64_t now = wall_ms();
    if ((e = open_db(b->o.db, true, &db)) != GIM_OK)
        return e;
    if (sqlite3_prepare_v2(db, SQL_GROUP_CLEAR, -1, &clear, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, SQL_GROUP_UPSERT, -1, &grp, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, SQL_MEMBER_ADD, -1, &mem, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    for (int64_t g = 0; g < b->o.groups; g++) {
        int64_t gid = b->o.group_base + g;
        sqlite3_bind_int64(clear, 1, gid);
        rc = sqlite3_step(clear);
        sqlite3_reset(clear);
        if (rc != SQLITE_DONE)
            goto rollback;
        sqlite3_bind_int64(grp, 1, gid);
        sqlite3_bind_text(grp, 2, "gim-bench", -1, SQLITE_STATIC);
        sqlite3_bind_int64(grp, 3, uid_of(b, member_of(b, g, 0)));
        sqlite3_bind_int64(grp, 4, now);
        rc = sqlite3_step(grp);
        sqlite3_reset(grp);
        if (rc != SQLITE_DONE)
            goto rollback;
        for (int64_t j = 0; j < b->o.group_size; j++) {
            sqlite3_bind_int64(mem, 1, gid);
            sqlite3_bind_int64(mem, 2, uid_of(b, member_of(b, g, j)));
            sqlite3_bind_text(mem, 3, j == 0 ? "owner" : "member", -1, SQLITE_STATIC);
            sqlite3_bind_int64(mem, 4, now);
            rc = sqlite3_step(mem);
            sqlite3_reset(mem);
            if (rc != SQLITE_DONE)
                goto rollback;
        }
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto rollback;
    fprintf(stderr, "gim-bench: %lld groups of %lld members ready (ids %lld..%lld)\n",
            (long long)b->o.groups, (long long)b->o.group_size, (long long)b->o.group_base,
            (long long)(b->o.group_base + b->o.groups - 1));
    goto out;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
fail:
    fprintf(stderr, "gim-bench: cannot create groups in %s: %s\n", b->o.db, sqlite3_errmsg(db));
    e = GIM_EIO;
out:
    sqlite3_finalize(clear);
    sqlite3_finalize(grp);
    sqlite3_finalize(mem);
    sqlite3_close(db);
    return e;
}

/* A writer connection through the service's own store code (same pragmas, same migrations). */
static gim_err open_store(const char *path, struct store_conn **out)
{
    struct gim_config cfg;
    char err[256] = "";
    gim_err e = config_load(NULL, &cfg, err, sizeof err);
    if (e == GIM_OK) {
        free(cfg.database.path);
        if (!(cfg.database.path = strdup(path)))
            e = GIM_ENOMEM;
    }
    if (e == GIM_OK)
        e = store_open(&cfg, STORE_WRITER, out, err, sizeof err);
    if (e != GIM_OK)
        fprintf(stderr, "gim-bench: cannot open %s: %s\n", path, err);
    config_free(&cfg);
    return e;
}

/* True when something answers a heartbeat at url: the service is running. */
static bool service_answers(const char *url, int timeout_ms, int attempts)
{
    struct gim_client *c = NULL;
    Pb__Output *out = NULL;
    struct client_conn conn = {.gateway_id = "gim-bench-probe"};
    if (client_open(&c, url, timeout_ms, attempts) != GIM_OK)
        return false;
    bool up = client_request(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, &out) == GIM_OK;
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    return up;
}

/* The idempotency record of a send by device (= user) sender with request id rid. */
static gim_err remember_request(struct store_conn *db, int64_t sender, int64_t rid, int64_t now,
                                int64_t message_id)
{
    sqlite3_stmt *st = store_stmt(db, SQL_IDEM_ADD);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, sender);
    sqlite3_bind_int64(st, 2, rid);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, message_id);
    int rc = sqlite3_step(st);
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

/*
 * --preload N --preload-direct: stores N 1:1 messages straight into the
 * SQLite file with the service's own code (message_insert, message_inbox_add,
 * seq counters flushed to user_seq in the same transaction) plus the
 * idempotency record a send with a request id leaves: exactly the rows the
 * protocol preload writes, with the same content (an encoded Text starting
 * with the request id) and request ids from the same clock. The pairs come
 * from --seed alone, so the same command builds the same rows (times and
 * request ids aside). At the end the WAL is checkpointed and truncated, so
 * the database is the one file and can be copied as it is. The service must
 * be stopped: it caches seq counters in memory.
 */
static gim_err preload_direct(struct bench *b)
{
    struct store_conn *db = NULL;
    struct seq *seq = NULL;
    uint8_t *content = NULL;
    size_t cap = 0, clen = 0;
    uint64_t rng = b->o.seed + 7;
    gim_err e;
    bool in_tx = false;
    int64_t t0 = now_ns(), now = wall_ms(), done = 0;

    if (service_answers(b->o.url, 500, 1)) {
        fprintf(stderr,
                "gim-bench: gim-logic answers at %s: stop it before --preload-direct "
                "(it keeps seq counters in memory), then restart it afterwards\n",
                b->o.url);
        return GIM_EUNAVAILABLE;
    }
    if ((e = open_store(b->o.db, &db)) != GIM_OK)
        goto out;
    if ((e = seq_open(&seq)) != GIM_OK)
        goto out;
    while (done < b->o.preload) {
        if ((e = store_exec(db, "BEGIN IMMEDIATE")) != GIM_OK)
            goto out;
        in_tx = true;
        now = wall_ms(); /* the writer's clock: one time per transaction */
        int64_t end = done + DIRECT_BATCH < b->o.preload ? done + DIRECT_BATCH : b->o.preload;
        for (; done < end; done++) {
            int64_t si, ri;
            struct message_new m = random_pair(b, &rng, now, &si, &ri);
            int64_t rid = atomic_fetch_add(&b->next_rid, 1), id = 0;
            if ((e = make_content(b, rid, &content, &cap, &clen)) != GIM_OK ||
                (e = seq_next(seq, db, SEQ_USER, m.sender_id, &m.sender_seq)) != GIM_OK ||
                (e = seq_next(seq, db, SEQ_USER, m.receiver_id, &m.receiver_seq)) != GIM_OK)
                goto out;
            m.content = content;
            m.content_len = clen;
            if ((e = store_pair(db, &m, &id)) != GIM_OK ||
                (e = remember_request(db, m.sender_id, rid, now, id)) != GIM_OK)
                goto out;
        }
        if ((e = seq_flush(seq, db)) != GIM_OK || (e = store_exec(db, "COMMIT")) != GIM_OK)
            goto out;
        in_tx = false;
        seq_committed(seq);
        if (done % (DIRECT_BATCH * 20) == 0)
            fprintf(stderr, "gim-bench: preload: %lld of %lld\n", (long long)done,
                    (long long)b->o.preload);
    }
    if ((e = store_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)")) != GIM_OK)
        goto out;
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("PRELOAD mode=direct messages=%lld seconds=%.2f messages_per_s=%.0f\n", (long long)done,
           secs, (double)done / (secs > 0 ? secs : 1));
    fflush(stdout);
out:
    if (in_tx) {
        store_exec(db, "ROLLBACK");
        seq_reset(seq);
        fprintf(stderr, "gim-bench: preload failed (%s); the last batch was rolled back\n",
                gim_err_name(e));
    }
    seq_close(seq);
    store_close(db);
    free(content);
    return e;
}

static int64_t file_size(const char *path, const char *suffix)
{
    char p[1024];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* Bytes the database uses (pages in use, WAL frames included) per stored message. */
static gim_err report_storage(const char *path)
{
    sqlite3 *db = NULL;
    gim_err e = open_db(path, false, &db);
    if (e != GIM_OK)
        return e;
    int64_t psize = query_int(db, SQL_PAGE_SIZE), pages = query_int(db, SQL_PAGE_COUNT);
    int64_t freel = query_int(db, SQL_FREELIST), msgs = query_int(db, SQL_MESSAGES);
    int64_t inbox = query_int(db, SQL_INBOX);
    sqlite3_close(db);
    if (psize <= 0 || pages < 0 || msgs < 0) {
        fprintf(stderr, "gim-bench: cannot read the size of %s\n", path);
        return GIM_EIO;
    }
    int64_t used = (pages - (freel > 0 ? freel : 0)) * psize;
    printf("STORAGE messages=%lld inbox_rows=%lld used_bytes=%lld file_bytes=%lld wal_bytes=%lld "
           "bytes_per_message=%.1f\n",
           (long long)msgs, (long long)inbox, (long long)used, (long long)file_size(path, ""),
           (long long)file_size(path, "-wal"), msgs ? (double)used / (double)msgs : 0.0);
    return GIM_OK;
}

/* ----------------------------------------------------------------- limits */

struct echo_ctx {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
};

struct echo {
    nng_socket sock;
    bool open;
    int n;
    struct echo_ctx *c;
    char dial_url[256];
};

static void echo_cb(void *arg)
{
    struct echo_ctx *e = arg;
    int rv = nng_aio_result(e->aio);
    if (e->sending) {
        e->sending = false;
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(e->aio));
    } else if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(e->aio);
        nng_aio_set_msg(e->aio, m);
        e->sending = true;
        nng_ctx_send(e->ctx, e->aio);
        return;
    }
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    nng_ctx_recv(e->ctx, e->aio);
}

static void echo_stop(struct echo *s)
{
    if (s->open)
        nng_close(s->sock);
    for (int i = 0; s->c && i < s->n; i++)
        if (s->c[i].aio)
            nng_aio_free(s->c[i].aio);
    free(s->c);
    s->c = NULL;
    s->open = false;
}

/* An in-process REP echo server with n contexts listening on url (tcp port 0 = any free port). */
static gim_err echo_start(struct echo *s, const char *url, int n)
{
    nng_listener l;
    int rv;
    memset(s, 0, sizeof *s);
    if ((rv = nng_rep0_open(&s->sock)) != 0)
        goto fail;
    s->open = true;
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, 16 << 20);
    if ((rv = nng_listener_create(&l, s->sock, url)) != 0 || (rv = nng_listener_start(l, 0)) != 0)
        goto fail;
    snprintf(s->dial_url, sizeof s->dial_url, "%s", url);
    size_t ul = strlen(url);
    if (strncmp(url, "tcp://", 6) == 0 && ul >= 2 && strcmp(url + ul - 2, ":0") == 0) {
        nng_sockaddr sa;
        if ((rv = nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa)) != 0)
            goto fail;
        snprintf(s->dial_url, sizeof s->dial_url, "%.*s:%u", (int)(ul - 2), url,
                 (unsigned)ntohs(sa.s_in.sa_port));
    }
    if (!(s->c = calloc((size_t)n, sizeof *s->c))) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    s->n = n;
    for (int i = 0; i < n; i++) {
        if ((rv = nng_aio_alloc(&s->c[i].aio, echo_cb, &s->c[i])) != 0 ||
            (rv = nng_ctx_open(&s->c[i].ctx, s->sock)) != 0)
            goto fail;
        nng_ctx_recv(s->c[i].ctx, s->c[i].aio);
    }
    return GIM_OK;
fail:
    fprintf(stderr, "gim-bench: echo server on %s: %s\n", url, nng_strerror(rv));
    echo_stop(s);
    return GIM_EIO;
}

static gim_err nng_limit(struct bench *b, struct result *res)
{
    struct echo srv;
    struct link l;
    char url[256];
    gim_err e;
    if (b->o.echo_url)
        snprintf(url, sizeof url, "%s", b->o.echo_url);
    else if (strncmp(b->o.url, "ipc://", 6) == 0)
        snprintf(url, sizeof url, "ipc:///tmp/gim-bench-echo-%ld.ipc", (long)getpid());
    else
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    if ((e = echo_start(&srv, url, b->o.conc)) != GIM_OK)
        return e;
    if ((e = link_open(&l, srv.dial_url)) == GIM_OK)
        e = run_workload(b, &l, WL_ECHO, b->o.warmup, b->o.duration, 0, NULL, 0, NULL, res);
    link_close(&l);
    echo_stop(&srv);
    if (strncmp(url, "ipc://", 6) == 0)
        unlink(url + 6);
    return e;
}

static void remove_db(const char *path)
{
    char p[1024];
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

static gim_err copy_db(const char *from, const char *to)
{
    sqlite3 *src = NULL, *dst = NULL;
    gim_err e = open_db(from, false, &src);
    if (e != GIM_OK)
        return e;
    remove_db(to);
    if (sqlite3_open(to, &dst) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: cannot create %s: %s\n", to, sqlite3_errmsg(dst));
        e = GIM_EIO;
        goto out;
    }
    sqlite3_backup *bk = sqlite3_backup_init(dst, "main", src, "main");
    int rc = bk ? sqlite3_backup_step(bk, -1) : SQLITE_ERROR;
    if (bk)
        sqlite3_backup_finish(bk);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "gim-bench: cannot copy %s: %s\n", from, sqlite3_errmsg(dst));
        e = GIM_EIO;
    }
out:
    sqlite3_close(dst);
    sqlite3_close(src);
    return e;
}

static gim_err set_seq(struct store_conn *db, int64_t user, int64_t seq)
{
    sqlite3_stmt *st = store_stmt(db, SQL_SEQ_SET);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, user);
    sqlite3_bind_int64(st, 2, seq);
    int rc = sqlite3_step(st);
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

/*
 * The SQLite ceiling of 1:1 sends: on a backup copy of --db opened with the
 * service's pragmas (WAL, synchronous=FULL), transactions of C sends, each a
 * message row + two inbox rows + two user_seq updates, for the same warmup
 * and duration. Latency is the time of a whole batch (BEGIN..COMMIT).
 */
static gim_err sqlite_limit(struct bench *b, struct result *res)
{
    char path[1024];
    struct store_conn *db = NULL;
    int64_t *last = NULL;
    uint8_t *content = NULL;
    size_t cap = 0, clen = 0;
    uint64_t rng = b->o.seed + 11;
    int64_t rid = 1;
    bool in_tx = false;
    gim_err e;

    memset(res, 0, sizeof *res);
    res->wl = WL_SEND;
    snprintf(path, sizeof path, "%s.bench-copy", b->o.db);
    int64_t t_copy = now_ns();
    if ((e = copy_db(b->o.db, path)) != GIM_OK)
        goto out;
    fprintf(stderr, "gim-bench: copied %s to %s in %.2f s\n", b->o.db, path,
            (double)(now_ns() - t_copy) / 1e9);
    if (!(last = malloc((size_t)b->o.users * sizeof *last))) {
        e = GIM_ENOMEM;
        goto out;
    }
    if ((e = load_seqs(b, path, last)) != GIM_OK || (e = open_store(path, &db)) != GIM_OK)
        goto out;
    int64_t t_begin = now_ns();
    int64_t t_measure = t_begin + (int64_t)(b->o.warmup * 1e9);
    int64_t t_end = t_measure + (int64_t)(b->o.duration * 1e9);
    int64_t now = wall_ms();
    for (int64_t t0 = now_ns(); t0 < t_end; t0 = now_ns()) {
        if ((e = store_exec(db, "BEGIN IMMEDIATE")) != GIM_OK)
            goto out;
        in_tx = true;
        for (int i = 0; i < b->o.conc; i++) {
            int64_t si, ri;
            struct message_new m = random_pair(b, &rng, now, &si, &ri);
            m.sender_seq = ++last[si];
            m.receiver_seq = ++last[ri];
            if ((e = make_content(b, rid++, &content, &cap, &clen)) != GIM_OK)
                goto out;
            m.content = content;
            m.content_len = clen;
            int64_t id;
            if ((e = store_pair(db, &m, &id)) != GIM_OK ||
                (e = set_seq(db, m.sender_id, m.sender_seq)) != GIM_OK ||
                (e = set_seq(db, m.receiver_id, m.receiver_seq)) != GIM_OK)
                goto out;
        }
        if ((e = store_exec(db, "COMMIT")) != GIM_OK)
            goto out;
        in_tx = false;
        int64_t t1 = now_ns();
        if (t1 >= t_measure && t1 <= t_end) {
            res->st.ok += (uint64_t)b->o.conc;
            res->st.ok_op[OP_SEND] += (uint64_t)b->o.conc;
            push_latency(&res->st.lat[OP_SEND], (uint64_t)(t1 - t0));
        }
    }
    res->secs = (double)(t_end - t_measure) / 1e9;
    finish_result(res);
out:
    if (in_tx) {
        store_exec(db, "ROLLBACK");
        fprintf(stderr, "gim-bench: SQLite limit failed: %s\n", gim_err_name(e));
    }
    store_close(db);
    remove_db(path);
    free(last);
    free(content);
    return e;
}

/* ----------------------------------------------------------------- output */

static double per_s(const struct result *r)
{
    return r->secs > 0 ? (double)r->st.ok / r->secs : 0;
}

static void print_result(const struct bench *b, const struct result *r, const struct result *nng,
                         const struct result *sql)
{
    const struct stats *s = &r->st;
    printf("RESULT workload=%s c=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f errors=%" PRIu64,
           wl_names[r->wl], b->o.conc, s->ok, per_s(r), r->p50, r->p99, r->p999, r->errors);
    for (int k = 1; k < CODE_SLOTS; k++)
        if (s->code[k])
            printf(" err_%s=%" PRIu64, k < CODE_SLOTS - 1 ? gim_err_name((gim_err)k) : "other",
                   s->code[k]);
    if (s->timeouts)
        printf(" err_timeout=%" PRIu64, s->timeouts);
    if (s->nng_err)
        printf(" err_nng=%" PRIu64, s->nng_err);
    printf(" checked=%" PRIu64 " check_failed=%" PRIu64, s->checked, s->check_failed);
    /* Mixed loads: each operation's own rate and latency (reads behind saturating sends). */
    static const enum op mixed_ops[] = {OP_SYNC, OP_SEND, OP_ACK};
    static const enum op rw_ops[] = {OP_SEND, OP_SYNC, OP_HEARTBEAT};
    const enum op *ops = r->wl == WL_MIXED ? mixed_ops : r->wl == WL_RW ? rw_ops : NULL;
    for (int i = 0; ops && i < 3; i++) {
        const struct lats *l = &s->lat[ops[i]];
        const char *n = op_names[ops[i]];
        printf(" %s_ops=%" PRIu64 " %s_ops_per_s=%.1f %s_p50_ms=%.3f %s_p99_ms=%.3f "
               "%s_p999_ms=%.3f",
               n, s->ok_op[ops[i]], n, r->secs > 0 ? (double)s->ok_op[ops[i]] / r->secs : 0, n,
               pct_ms(l, 0.50), n, pct_ms(l, 0.99), n, pct_ms(l, 0.999));
    }
    if (r->wl == WL_RW)
        printf(" readers=%d", b->o.readers);
    if (r->wl == WL_SYNC || r->wl == WL_MIXED || r->wl == WL_RW)
        printf(" sync_from=%s", b->o.sync_random ? "random" : "newest");
    if (s->pages)
        printf(" avg_page=%.1f avg_from=%.1f", (double)s->page_msgs / (double)s->pages,
               (double)s->from_sum / (double)s->pages);
    if (r->wl == WL_GROUP)
        printf(" group_size=%lld", (long long)b->o.group_size);
    printf(" users=%lld payload=%d secs=%.1f", (long long)b->o.users, b->o.payload, r->secs);
    if (nng && per_s(nng) > 0)
        printf(" ratio_vs_nng=%.2f", per_s(r) / per_s(nng));
    if (sql && per_s(sql) > 0 && r->wl == WL_SEND)
        printf(" ratio_vs_sqlite=%.2f", per_s(r) / per_s(sql));
    printf("\n");
}

static void print_limit(const char *kind, const struct bench *b, const struct result *r)
{
    printf("LIMIT kind=%s c=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f errors=%" PRIu64 " checked=%" PRIu64 " check_failed=%" PRIu64 "%s\n",
           kind, b->o.conc, r->st.ok, per_s(r), r->p50, r->p99, r->p999, r->errors, r->st.checked,
           r->st.check_failed, strcmp(kind, "sqlite") == 0 ? " latency=per_batch" : "");
}

/* The service's memory: VmRSS counts the mmap'ed database pages too (RssFile), so both show. */
static void print_server(long pid)
{
    static const char *const keys[] = {"VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"};
    char path[64], line[256];
    long v[4] = {-1, -1, -1, -1};
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gim-bench: cannot read %s: %s\n", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f))
        for (int i = 0; i < 4; i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0)
                v[i] = strtol(line + strlen(keys[i]), NULL, 10);
    fclose(f);
    printf("SERVER pid=%ld rss_kib=%ld peak_rss_kib=%ld rss_anon_kib=%ld rss_file_kib=%ld\n", pid,
           v[0], v[1], v[2], v[3]);
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(
        f, "usage: gim-bench [options]\n"
           "  --url URL            gim-logic REP address, tcp:// or ipc:// (tcp://127.0.0.1:7400)\n"
           "  --db PATH            the service's SQLite file: groups, sync seqs, preload, limits\n"
           "  --secret S           token secret (else $GIM_TOKEN_SECRET)\n"
           "  --gateway ID         gateway id the bench signs in at (gim-bench)\n"
           "  -w, --workload LIST  comma list of send,group,sync,mixed,rw, or none (send)\n"
           "  -c, --concurrency C  nng contexts = requests in flight (64)\n"
           "  -u, --users U        users, one device each, ids BASE..BASE+U-1 (1000)\n"
           "  --user-base ID       first user id (1)\n"
           "  -t, --duration S     measured seconds per workload (10)\n"
           "  --warmup S           unmeasured seconds before each workload (1)\n"
           "  --payload BYTES      size of a message's content, an encoded Text (100)\n"
           "  --group-size G       members per group for -w group (500)\n"
           "  --groups N           groups for -w group (max(1, U/G))\n"
           "  --group-base ID      first group id (1000000000)\n"
           "  --mix S,M,A          percent sync,send,ack of -w mixed (70,25,5)\n"
           "  --readers R          contexts of -w rw that read; the other C-R send (C/4)\n"
           "  --read-mix S,H       percent sync,heartbeat of the readers of -w rw (50,50)\n"
           "  --sync-from WHERE    newest: the newest page; random: a page at a random seq\n"
           "                       inside each user's history (newest)\n"
           "  --page-size N        the service's sync.page_size, for seqs and checks (50)\n"
           "  --preload N          first store N 1:1 messages through the protocol\n"
           "  --preload-direct     ... or write them into --db instead (service stopped;\n"
           "                       restart it afterwards and run the workloads separately)\n"
           "  --preload-max S      time bound of a protocol preload (3600)\n"
           "  --limits             also measure a raw nng echo and a raw SQLite group commit\n"
           "  --echo-url URL       where the echo server listens (ipc temp file or tcp port 0)\n"
           "  --report-storage     print bytes per stored message of --db\n"
           "  --server-pid PID     print the service's RSS at the end\n"
           "  --timeout-ms MS      reply timeout; then re-dial (5000)\n"
           "  --check-every N      decode and check one EC_OK reply in N (10; 0 = none)\n"
           "  --seed N             random seed (1)\n");
}

static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_secs(const char *s, double min, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= min) || v > 86400)
        return false;
    *out = v;
    return true;
}

static bool parse_workloads(struct opts *o, const char *list)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    o->nwl = 0;
    if (strcmp(buf, "none") == 0)
        return true;
    for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        int k = -1;
        for (int i = WL_SEND; i <= WL_RW; i++)
            if (strcmp(w, wl_names[i]) == 0)
                k = i;
        if (k < 0 || o->nwl == MAX_WORKLOADS)
            return false;
        o->wl[o->nwl++] = (enum workload)k;
    }
    return o->nwl > 0;
}

enum {
    O_URL = 256,
    O_DB,
    O_SECRET,
    O_GATEWAY,
    O_USER_BASE,
    O_WARMUP,
    O_PAYLOAD,
    O_GROUP_SIZE,
    O_GROUPS,
    O_GROUP_BASE,
    O_MIX,
    O_READERS,
    O_READ_MIX,
    O_SYNC_FROM,
    O_PAGE_SIZE,
    O_PRELOAD,
    O_PRELOAD_DIRECT,
    O_PRELOAD_MAX,
    O_LIMITS,
    O_ECHO_URL,
    O_STORAGE,
    O_SERVER_PID,
    O_TIMEOUT,
    O_CHECK_EVERY,
    O_SEED,
};

/* Returns 0 to run, 1 after --help, 2 on bad usage. */
static int parse_args(struct opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"db", required_argument, NULL, O_DB},
        {"secret", required_argument, NULL, O_SECRET},
        {"gateway", required_argument, NULL, O_GATEWAY},
        {"workload", required_argument, NULL, 'w'},
        {"concurrency", required_argument, NULL, 'c'},
        {"users", required_argument, NULL, 'u'},
        {"user-base", required_argument, NULL, O_USER_BASE},
        {"duration", required_argument, NULL, 't'},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"payload", required_argument, NULL, O_PAYLOAD},
        {"group-size", required_argument, NULL, O_GROUP_SIZE},
        {"groups", required_argument, NULL, O_GROUPS},
        {"group-base", required_argument, NULL, O_GROUP_BASE},
        {"mix", required_argument, NULL, O_MIX},
        {"readers", required_argument, NULL, O_READERS},
        {"read-mix", required_argument, NULL, O_READ_MIX},
        {"sync-from", required_argument, NULL, O_SYNC_FROM},
        {"page-size", required_argument, NULL, O_PAGE_SIZE},
        {"preload", required_argument, NULL, O_PRELOAD},
        {"preload-direct", no_argument, NULL, O_PRELOAD_DIRECT},
        {"preload-max", required_argument, NULL, O_PRELOAD_MAX},
        {"limits", no_argument, NULL, O_LIMITS},
        {"echo-url", required_argument, NULL, O_ECHO_URL},
        {"report-storage", no_argument, NULL, O_STORAGE},
        {"server-pid", required_argument, NULL, O_SERVER_PID},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"check-every", required_argument, NULL, O_CHECK_EVERY},
        {"seed", required_argument, NULL, O_SEED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool wl_given = false;
    int opt;
    int64_t v;
    *o = (struct opts){
        .url = "tcp://127.0.0.1:7400",
        .gateway = "gim-bench",
        .nwl = 1,
        .wl = {WL_SEND},
        .conc = 64,
        .users = 1000,
        .user_base = 1,
        .duration = 10,
        .warmup = 1,
        .payload = 100,
        .group_size = 500,
        .group_base = 1000000000,
        .mix_sync = 70,
        .mix_send = 25,
        .mix_ack = 5,
        .read_sync = 50,
        .read_hb = 50,
        .page_size = 50,
        .preload_max = 3600,
        .timeout_ms = 5000,
        .check_every = 10,
        .seed = 1,
    };
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "w:c:u:t:h", longopts, NULL)) != -1) {
        const char *a = optarg;
        bool ok = true;
        switch (opt) {
        case O_URL:
            o->url = a;
            break;
        case O_DB:
            o->db = a;
            break;
        case O_SECRET:
            o->secret = a;
            break;
        case O_GATEWAY:
            o->gateway = a;
            ok = *a && strlen(a) <= 64 && !strchr(a, '\n');
            break;
        case 'w':
            ok = parse_workloads(o, a);
            wl_given = true;
            break;
        case 'c':
            ok = parse_i64(a, 1, 4096, &v);
            o->conc = (int)v;
            break;
        case 'u':
            ok = parse_i64(a, 2, 10000000, &o->users);
            break;
        case O_USER_BASE:
            ok = parse_i64(a, 1, INT64_MAX / 2, &o->user_base);
            break;
        case 't':
            ok = parse_secs(a, 0.1, &o->duration);
            break;
        case O_WARMUP:
            ok = parse_secs(a, 0, &o->warmup);
            break;
        case O_PAYLOAD:
            ok = parse_i64(a, 20, 1 << 20, &v);
            o->payload = (int)v;
            break;
        case O_GROUP_SIZE:
            ok = parse_i64(a, 2, 1000000, &o->group_size);
            break;
        case O_GROUPS:
            ok = parse_i64(a, 1, 1000000, &o->groups);
            break;
        case O_GROUP_BASE:
            ok = parse_i64(a, 1, INT64_MAX / 2, &o->group_base);
            break;
        case O_MIX:
            ok = sscanf(a, "%d,%d,%d", &o->mix_sync, &o->mix_send, &o->mix_ack) == 3 &&
                 o->mix_sync >= 0 && o->mix_send >= 0 && o->mix_ack >= 0 &&
                 o->mix_sync + o->mix_send + o->mix_ack > 0;
            break;
        case O_READERS:
            ok = parse_i64(a, 1, 4095, &v);
            o->readers = (int)v;
            break;
        case O_READ_MIX:
            ok = sscanf(a, "%d,%d", &o->read_sync, &o->read_hb) == 2 && o->read_sync >= 0 &&
                 o->read_hb >= 0 && o->read_sync + o->read_hb > 0;
            break;
        case O_SYNC_FROM:
            ok = strcmp(a, "newest") == 0 || strcmp(a, "random") == 0;
            o->sync_random = strcmp(a, "random") == 0;
            break;
        case O_PAGE_SIZE:
            ok = parse_i64(a, 1, 10000, &v);
            o->page_size = (int)v;
            break;
        case O_PRELOAD:
            ok = parse_i64(a, 1, INT64_MAX / 4, &o->preload);
            break;
        case O_PRELOAD_DIRECT:
            o->preload_direct = true;
            break;
        case O_PRELOAD_MAX:
            ok = parse_secs(a, 1, &o->preload_max);
            break;
        case O_LIMITS:
            o->limits = true;
            break;
        case O_ECHO_URL:
            o->echo_url = a;
            break;
        case O_STORAGE:
            o->report_storage = true;
            break;
        case O_SERVER_PID:
            ok = parse_i64(a, 1, INT32_MAX, &v);
            o->server_pid = (long)v;
            break;
        case O_TIMEOUT:
            ok = parse_i64(a, 10, 600000, &v);
            o->timeout_ms = (int)v;
            break;
        case O_CHECK_EVERY:
            ok = parse_i64(a, 0, INT32_MAX, &v);
            o->check_every = (int)v;
            break;
        case O_SEED:
            ok = parse_i64(a, 0, INT64_MAX, &v);
            o->seed = (uint64_t)v;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "gim-bench: unknown option or missing value: %s\n", argv[optind - 1]);
            return 2;
        }
        if (!ok) {
            const char *name = NULL;
            for (const struct option *lo = longopts; lo->name && !name; lo++)
                if (lo->val == opt)
                    name = lo->name;
            fprintf(stderr, "gim-bench: bad value \"%s\" for --%s (see --help)\n", a,
                    name ? name : "?");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gim-bench: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (o->preload_direct && !wl_given)
        o->nwl = 0;
    if (!o->groups)
        o->groups = o->users / o->group_size > 0 ? o->users / o->group_size : 1;
    const char *need_db = NULL;
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_GROUP)
            need_db = "-w group";
    if (o->preload_direct)
        need_db = "--preload-direct";
    if (o->report_storage)
        need_db = "--report-storage";
    if (need_db && !o->db) {
        fprintf(stderr, "gim-bench: %s needs --db PATH (the service's SQLite file)\n", need_db);
        return 2;
    }
    if (o->preload_direct && (!o->preload || o->nwl || o->limits)) {
        fprintf(stderr, "gim-bench: --preload-direct needs --preload N and runs alone: restart "
                        "gim-logic afterwards, then run the workloads in a second invocation\n");
        return 2;
    }
    if (!o->readers)
        o->readers = o->conc / 4 > 0 ? o->conc / 4 : 1;
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_RW && o->readers >= o->conc) {
            fprintf(stderr,
                    "gim-bench: -w rw needs --readers R below -c C (%d), so that some "
                    "contexts send\n",
                    o->conc);
            return 2;
        }
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_GROUP && o->group_size > o->users) {
            fprintf(stderr, "gim-bench: --group-size %lld is larger than --users %lld\n",
                    (long long)o->group_size, (long long)o->users);
            return 2;
        }
    return 0;
}

static gim_err mint_tokens(struct bench *b)
{
    int64_t exp = (int64_t)time(NULL) + TOKEN_TTL_S;
    if (!(b->tokens = calloc((size_t)b->o.users, sizeof *b->tokens)))
        return GIM_ENOMEM;
    for (int64_t i = 0; i < b->o.users; i++) {
        gim_err e = auth_mint(b->secret, uid_of(b, i), uid_of(b, i), exp, &b->tokens[i]);
        if (e != GIM_OK) {
            fprintf(stderr, "gim-bench: cannot mint a token: %s\n", gim_err_name(e));
            return e;
        }
    }
    return GIM_OK;
}

static gim_err bench_phase(struct bench *b, struct link *l, enum workload wl, struct result *res)
{
    gim_err e;
    if (wl == WL_GROUP && (e = setup_groups(b)) != GIM_OK)
        return e;
    if (wl == WL_SYNC || wl == WL_MIXED || wl == WL_RW) {
        if (b->o.db) {
            if ((e = load_seqs(b, b->o.db, b->last_seq)) != GIM_OK)
                return e;
        } else {
            fprintf(stderr, "gim-bench: no --db: syncs start at seq 0 (only order is checked)\n");
        }
    }
    if (!b->signed_in_ns || now_ns() - b->signed_in_ns > RESIGN_AFTER_NS)
        if ((e = sign_in_all(b, l)) != GIM_OK)
            return e;
    e = run_workload(b, l, wl, b->o.warmup, b->o.duration, 0, NULL, 0, NULL, res);
    if (e == GIM_OK)
        fprintf(stderr, "gim-bench: %s: %.1f ok/s p50 %.3f ms p99 %.3f ms, %" PRIu64 " errors\n",
                wl_names[wl], per_s(res), res->p50, res->p99, res->errors);
    return e;
}

static gim_err preload_protocol(struct bench *b, struct link *l)
{
    struct result res;
    gim_err e = sign_in_all(b, l);
    if (e != GIM_OK)
        return e;
    e = run_workload(b, l, WL_SEND, 0, b->o.preload_max, b->o.preload, NULL, 0, NULL, &res);
    if (e != GIM_OK)
        return e;
    printf("PRELOAD mode=protocol messages=%" PRIu64 " seconds=%.2f messages_per_s=%.0f "
           "errors=%" PRIu64 " check_failed=%" PRIu64 "\n",
           res.st.ok, res.secs, per_s(&res), res.errors, res.st.check_failed);
    fflush(stdout);
    bool short_of = res.st.ok < (uint64_t)b->o.preload || res.st.check_failed;
    result_free(&res);
    if (short_of) {
        fprintf(stderr, "gim-bench: preload stored fewer than %lld messages or failed checks\n",
                (long long)b->o.preload);
        return GIM_EIO;
    }
    return GIM_OK;
}

int main(int argc, char **argv)
{
    static struct bench b;
    struct link l = {0};
    struct result res[MAX_WORKLOADS], lim_nng, lim_sql;
    bool have_nng = false, have_sql = false;
    int nres = 0, status = 1;
    gim_err e = GIM_OK;

    memset(res, 0, sizeof res);
    memset(&lim_nng, 0, sizeof lim_nng);
    memset(&lim_sql, 0, sizeof lim_sql);
    int pr = parse_args(&b.o, argc, argv);
    if (pr)
        return pr == 1 ? 0 : 2;
    b.content_text = text_len_for(b.o.payload);
    b.partition = b.o.users >= b.o.conc;
    atomic_store(&b.next_rid,
                 wall_ms() * 1000000); /* fresh ids: no idempotent replay of old runs */

    if (b.o.preload_direct) {
        e = preload_direct(&b);
        if (e == GIM_OK && b.o.report_storage)
            e = report_storage(b.o.db);
        return e == GIM_OK ? 0 : 1;
    }

    b.secret = b.o.secret ? b.o.secret : getenv("GIM_TOKEN_SECRET");
    if ((b.o.nwl || b.o.preload) && (!b.secret || !*b.secret)) {
        fprintf(stderr, "gim-bench: no secret: pass --secret S or set GIM_TOKEN_SECRET\n");
        return 2;
    }
    b.last_seq = calloc((size_t)b.o.users, sizeof *b.last_seq);
    b.sender_seq = calloc((size_t)b.o.users, sizeof *b.sender_seq);
    if (!b.last_seq || !b.sender_seq) {
        e = GIM_ENOMEM;
        goto out;
    }
    if (b.o.nwl || b.o.preload) {
        /* Fail fast and plainly when nothing listens, rather than after a run of timeouts. */
        if (!service_answers(b.o.url, 2000, 3)) {
            fprintf(stderr, "gim-bench: no reply from gim-logic at %s\n", b.o.url);
            e = GIM_EIO;
            goto out;
        }
        if ((e = mint_tokens(&b)) != GIM_OK || (e = link_open(&l, b.o.url)) != GIM_OK)
            goto out;
    }
    if (b.o.preload && (e = preload_protocol(&b, &l)) != GIM_OK)
        goto out;
    for (int i = 0; i < b.o.nwl; i++) {
        if ((e = bench_phase(&b, &l, b.o.wl[i], &res[nres])) != GIM_OK)
            goto out;
        nres++;
    }
    if (b.o.limits) {
        if ((e = nng_limit(&b, &lim_nng)) != GIM_OK)
            goto out;
        have_nng = true;
        if (b.o.db) {
            if ((e = sqlite_limit(&b, &lim_sql)) != GIM_OK)
                goto out;
            have_sql = true;
        } else {
            fprintf(stderr, "gim-bench: no --db: the SQLite limit is skipped\n");
        }
    }
    status = 0;
    for (int i = 0; i < nres; i++) {
        print_result(&b, &res[i], have_nng ? &lim_nng : NULL, have_sql ? &lim_sql : NULL);
        if (!res[i].st.ok || res[i].st.check_failed)
            status = 1;
    }
    if (have_nng) {
        print_limit("nng", &b, &lim_nng);
        if (lim_nng.st.check_failed)
            status = 1;
    }
    if (have_sql)
        print_limit("sqlite", &b, &lim_sql);
    if (b.o.report_storage && report_storage(b.o.db) != GIM_OK)
        status = 1;
    if (b.o.server_pid)
        print_server(b.o.server_pid);
out:
    if (e != GIM_OK)
        fprintf(stderr, "gim-bench: stopped: %s\n", gim_err_name(e));
    fflush(stdout);
    link_close(&l);
    for (int i = 0; i < MAX_WORKLOADS; i++)
        result_free(&res[i]);
    result_free(&lim_nng);
    result_free(&lim_sql);
    for (int64_t i = 0; b.tokens && i < b.o.users; i++)
        free(b.tokens[i]);
    free(b.tokens);
    free(b.last_seq);
    free(b.sender_seq);
    return status;
}
