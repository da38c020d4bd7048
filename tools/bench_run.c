/*
 * gim-bench, requests and runs: C nng contexts, each a state machine on its
 * own aio (SEND -> RECV -> build the next request), the requests each
 * workload sends, the checks of a sample of the replies, the measured window
 * and the percentiles. See bench.h for the whole tool.
 */
#include <errno.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "gimclient.h"
#include "proto.h"

#define MAX_REPORTED 5 /* check failures described on stderr */

const char *const bench_op_names[OP_COUNT] = {"signin", "send", "group",    "sync",
                                              "ack",    "echo", "heartbeat"};
const char *const bench_wl_names[] = {"signin", "send", "group", "sync", "mixed", "rw", "echo"};

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
    /*
     * --rate, an open loop: request k is due at t_begin + k * interval_ns. A context that gets
     * its reply takes the oldest request already due (read off the clock), else it waits on
     * the idle stack until the pacer thread hands it the next one. A request's latency counts
     * from when it was due, not from when a context was free to send it, so a service that
     * falls behind shows its queue in the latencies instead of slowing the offered load down
     * (the closed loop's "coordinated omission"). The pacer sleeps while no context is idle:
     * waking at every request's due time then only cost CPU, on the cores the service under
     * test shares (docs/benchmarks.md, "The open loop's own cost"). issued, idle[], nidle,
     * pacer_done and backlog_max are under mu; pacer_cv says a context became idle.
     * --read-rate paces -w rw's readers the same way and leaves its senders a closed loop, so
     * that the reads' latency is measured at a rate of their own while the sends saturate the
     * writer: closed-loop readers on saturated cores only measure their own count (Little's
     * law: readers / reads per second is their mean latency).
     */
    int64_t interval_ns; /* 0: closed loop */
    int paced_n;         /* contexts 0..paced_n-1 are paced (--read-rate: the readers); the
                          * others are a closed loop */
    int64_t issued;      /* requests started */
    pthread_cond_t pacer_cv;
    int *idle;
    int nidle;
    bool pacer_done; /* the pacer has left: a context that gets its reply now retires */
    int64_t backlog_max;
    int64_t pacer_wakes; /* the pacer's returns from a wait or a sleep; the pacer's own */
    char first_error[256];
    bool have_error;
};

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_wall_ms(void)
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

int64_t bench_rnd_below(uint64_t *s, int64_t n)
{
    return n > 0 ? (int64_t)(rnd(s) % (uint64_t)n) : 0;
}

int64_t bench_uid(const struct bench *b, int64_t idx)
{
    return b->o.user_base + idx;
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

/*
 * The content of one text message: an encoded pb.Text whose text starts with
 * the request id in hex, so a reply's content proves it is this message's.
 */
gim_err bench_make_content(const struct bench *b, int64_t rid, uint8_t **buf, size_t *cap,
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
int64_t bench_text_len(int payload)
{
    for (int64_t l = payload - 2; l > 0; l--) {
        int64_t vl = l < 128 ? 1 : l < 16384 ? 2 : l < 2097152 ? 3 : 4;
        if (1 + vl + l <= payload)
            return l;
    }
    return 1;
}

/* ------------------------------------------------------------------- link */

gim_err bench_link_open(struct link *l, const char *urls)
{
    int rv;
    memset(l, 0, sizeof *l);
    for (const char *p = urls; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof l->url[0] || l->n_urls == BENCH_MAX_URLS) {
            fprintf(stderr,
                    "gim-bench: --url: at most %d URLs of at most %zu bytes, comma-separated\n",
                    BENCH_MAX_URLS, sizeof l->url[0] - 1);
            return GIM_ECONFIG;
        }
        snprintf(l->url[l->n_urls++], sizeof l->url[0], "%.*s", (int)n, p);
        p += n + (p[n] == ',');
    }
    if ((rv = nng_req0_open(&l->sock)) != 0) {
        fprintf(stderr, "gim-bench: cannot open a REQ socket: %s\n", nng_strerror(rv));
        return GIM_EIO;
    }
    l->open = true;
    nng_socket_set_ms(l->sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(l->sock, NNG_OPT_RECONNMAXT, 500);
    nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, 16 << 20);
    /* Non-blocking: the server may still be starting, nng keeps trying. */
    for (int i = 0; i < l->n_urls; i++) {
        if ((rv = nng_dial(l->sock, l->url[i], &l->dialer[i], NNG_FLAG_NONBLOCK)) != 0) {
            fprintf(stderr, "gim-bench: cannot dial %s: %s\n", l->url[i], nng_strerror(rv));
            return GIM_EIO;
        }
        l->has_dialer[i] = true;
    }
    return GIM_OK;
}

/*
 * Debian's nng 1.5.2 may give up redialing when a connection drops during its
 * handshake; fresh dialers on the same socket start over, and the contexts
 * (whose requests timed out) carry on with the next request.
 */
static void link_redial(struct link *l)
{
    for (int i = 0; i < l->n_urls; i++) {
        if (l->has_dialer[i])
            nng_dialer_close(l->dialer[i]);
        l->has_dialer[i] = nng_dial(l->sock, l->url[i], &l->dialer[i], NNG_FLAG_NONBLOCK) == 0;
    }
}

void bench_link_close(struct link *l)
{
    if (l->open)
        nng_close(l->sock);
    l->open = false;
    memset(l->has_dialer, 0, sizeof l->has_dialer);
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
        return bench_rnd_below(&c->rng, b->o.users);
    int64_t first = readers_of(c->run);
    int64_t n = c->run->n - first, id = c->id - first;
    int64_t slots = (b->o.users - id + n - 1) / n;
    return id + n * bench_rnd_below(&c->rng, slots);
}

int64_t bench_member(const struct bench *b, int64_t g, int64_t j)
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
        int64_t x = bench_rnd_below(&c->rng, o->mix_sync + o->mix_send + o->mix_ack);
        return x < o->mix_sync ? OP_SYNC : x < o->mix_sync + o->mix_send ? OP_SEND : OP_ACK;
    }
    case WL_RW:
        if (c->id >= o->readers)
            return OP_SEND;
        return bench_rnd_below(&c->rng, o->read_sync + o->read_hb) < o->read_sync ? OP_SYNC
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
    return 1 + bench_rnd_below(&c->rng, span);
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
        sgn.user_id = sgn.device_id = bench_uid(b, c->uidx);
        sgn.token = b->tokens[c->uidx];
        in.type = PB__PACKAGE_TYPE__PT_SIGN_IN;
        data = &sgn.base;
        break;
    case OP_SEND:
    case OP_ECHO:
    case OP_GROUP:
        if (c->op == OP_GROUP) {
            int64_t g = bench_rnd_below(&c->rng, b->o.groups);
            c->peer = b->o.group_base + g;
            c->uidx = bench_member(b, g, bench_rnd_below(&c->rng, b->o.group_size));
            msg.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
            msg.receiver_id = c->peer;
        } else {
            c->uidx = pick_sender(c);
            int64_t to = bench_rnd_below(&c->rng, b->o.users - 1);
            c->peer = to >= c->uidx ? to + 1 : to; /* never oneself */
            msg.receiver_type = PB__RECEIVER_TYPE__RT_USER;
            msg.receiver_id = bench_uid(b, c->peer);
        }
        if (bench_make_content(b, rid, &c->content, &c->content_cap, &c->content_len) != GIM_OK)
            return -1;
        msg.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        msg.message_content.data = c->content;
        msg.message_content.len = c->content_len;
        ms.message = &msg;
        in.type = PB__PACKAGE_TYPE__PT_MESSAGE;
        data = &ms.base;
        break;
    case OP_SYNC:
        c->uidx = bench_rnd_below(&c->rng, b->o.users);
        c->arg = si.seq = sync_start(c, c->uidx);
        in.type = PB__PACKAGE_TYPE__PT_SYNC;
        data = &si.base;
        break;
    case OP_ACK:
        c->uidx = bench_rnd_below(&c->rng, b->o.users);
        ack.device_ack = sync_from(b, c->uidx);
        ack.receive_time = bench_wall_ms();
        in.type = PB__PACKAGE_TYPE__PT_MESSAGE_ACK;
        data = &ack.base;
        break;
    case OP_HEARTBEAT:
        c->uidx = bench_rnd_below(&c->rng, b->o.users);
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
    req.user_id = bench_uid(b, c->uidx);
    req.device_id = bench_uid(b, c->uidx);
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
    int64_t uid = bench_uid(b, c->uidx);
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
             m->receiver_id != (group ? c->peer : bench_uid(b, c->peer)))
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
        report_failure(b, "sync of user %" PRId64 " from seq %" PRId64 ": %s",
                       bench_uid(b, c->uidx), c->arg, why);
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

void bench_push_latency(struct lats *s, uint64_t ns)
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
            bench_push_latency(&c->st.lat[c->op], (uint64_t)(t1 - c->t0));
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

/* Sends c's next request, whose latency counts from t0; retires c if it cannot be built. */
static void ctx_start(struct bctx *c, int64_t t0)
{
    int rc = build(c);
    nng_msg *m = NULL;
    if (rc > 0 && nng_msg_alloc(&m, 0) == 0 && nng_msg_append(m, c->buf, c->req_len) == 0) {
        c->sending = true;
        c->t0 = t0 ? t0 : bench_now_ns();
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

/* Under r->mu: the due time of the next request to start (open loop). */
static int64_t take_due(struct run *r)
{
    return r->t_begin + r->issued++ * r->interval_ns;
}

/* Under r->mu: how many requests are due at now (open loop), noting the backlog. */
static int64_t due_at(struct run *r, int64_t now)
{
    int64_t due = now < r->t_begin ? 0 : (now - r->t_begin) / r->interval_ns + 1;
    int64_t end = (r->t_end - r->t_begin + r->interval_ns - 1) / r->interval_ns;
    if (due > end)
        due = end;
    if (due - r->issued > r->backlog_max)
        r->backlog_max = due - r->issued;
    return due;
}

/*
 * Starts c's next request, or retires c when the run is over. Open loop: the oldest request
 * already due, else c waits on the idle stack for the pacer.
 */
static void ctx_next(struct bctx *c)
{
    struct run *r = c->run;
    if (atomic_load(&r->stop) || bench_now_ns() >= r->t_end) {
        ctx_finish(c);
        return;
    }
    if (!r->interval_ns || c->id >= r->paced_n) {
        ctx_start(c, 0);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (r->pacer_done) {
        pthread_mutex_unlock(&r->mu);
        ctx_finish(c);
        return;
    }
    if (r->issued >= due_at(r, bench_now_ns())) {
        r->idle[r->nidle++] = c->id;
        if (r->nidle == 1)
            pthread_cond_signal(&r->pacer_cv);
        pthread_mutex_unlock(&r->mu);
        return;
    }
    int64_t t0 = take_due(r);
    pthread_mutex_unlock(&r->mu);
    ctx_start(c, t0);
}

/* Now plus ms, capped at cap, as a timespec of CLOCK_MONOTONIC. */
static struct timespec deadline(int64_t now, int64_t ms, int64_t cap)
{
    int64_t at = now + ms * 1000000;
    if (at > cap)
        at = cap;
    return (struct timespec){.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000};
}

/*
 * The open loop's clock: while a context is idle, wakes when the next request is due and
 * hands every request whose time has come to an idle context; while none is idle, sleeps
 * until one is (the contexts take due requests themselves as they get their replies). At the
 * end of the run it retires the idle contexts. Waits are bounded by 100 ms so that a stop
 * (the hard deadline) is seen.
 */
static void *pacer_main(void *arg)
{
    struct run *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        int64_t now = bench_now_ns();
        if (now >= r->t_end || atomic_load(&r->stop))
            break;
        if (r->nidle == 0) {
            struct timespec ts = deadline(now, 100, r->t_end);
            pthread_cond_timedwait(&r->pacer_cv, &r->mu, &ts);
            r->pacer_wakes++;
            continue;
        }
        if (r->issued >= due_at(r, now)) {
            int64_t at = r->t_begin + r->issued * r->interval_ns;
            struct timespec ts = deadline(now, 100, at < r->t_end ? at : r->t_end);
            pthread_mutex_unlock(&r->mu);
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
            pthread_mutex_lock(&r->mu);
            r->pacer_wakes++;
            continue;
        }
        struct bctx *c = &r->ctx[r->idle[--r->nidle]];
        int64_t t0 = take_due(r);
        pthread_mutex_unlock(&r->mu);
        ctx_start(c, t0);
        pthread_mutex_lock(&r->mu);
    }
    r->pacer_done = true;
    int n = r->nidle;
    r->nidle = 0;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++)
        ctx_finish(&r->ctx[r->idle[i]]);
    return NULL;
}

static void ctx_cb(void *arg)
{
    struct bctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->sending) {
        c->sending = false;
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            on_failure(c, rv, bench_now_ns());
            ctx_next(c);
            return;
        }
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    int64_t t1 = bench_now_ns();
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
    free(r->idle);
    r->idle = NULL;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->pacer_cv);
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

void bench_result_free(struct result *res)
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

double bench_pct_ms(const struct lats *s, double q)
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
void bench_finish_result(struct result *res)
{
    struct stats *s = &res->st;
    for (int k = 0; k < OP_COUNT; k++) {
        if (s->lat[k].n)
            qsort(s->lat[k].v, s->lat[k].n, sizeof *s->lat[k].v, cmp_u64);
        lats_append(&res->all, s->lat[k].v, s->lat[k].n);
    }
    if (res->all.n)
        qsort(res->all.v, res->all.n, sizeof *res->all.v, cmp_u64);
    res->p50 = bench_pct_ms(&res->all, 0.50);
    res->p99 = bench_pct_ms(&res->all, 0.99);
    res->p999 = bench_pct_ms(&res->all, 0.999);
    res->errors = s->timeouts + s->nng_err;
    for (int k = 1; k < CODE_SLOTS; k++)
        res->errors += s->code[k];
}

/*
 * Runs workload wl on link with C contexts. Time-bound runs measure from
 * warmup to duration; ok_target > 0 runs until that many EC_OK replies (or
 * max_s). todo/ntodo: users to sign in (WL_SIGNIN). Fills res if not NULL.
 */
gim_err bench_run_workload(struct bench *b, struct link *l, enum workload wl, double warmup,
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
    pthread_cond_init(&r.pacer_cv, &ca);
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
    r.t_begin = bench_now_ns();
    r.t_measure = r.t_begin + (int64_t)(warmup * 1e9);
    r.t_end = r.t_measure + (int64_t)(duration * 1e9);
    atomic_store(&r.last_reply_ns, r.t_begin);
    r.active = r.n;
    /* --rate paces the measured workloads only: sign-in, preload and the echo limit run flat out.
     */
    int64_t rate = wl == WL_RW && b->o.read_rate ? b->o.read_rate : b->o.rate;
    bool paced = rate > 0 && ok_target == 0 && wl != WL_SIGNIN && wl != WL_ECHO;
    pthread_t pacer;
    bool pacer_started = false;
    if (paced) {
        r.interval_ns = 1000000000LL / rate > 0 ? 1000000000LL / rate : 1;
        r.paced_n = wl == WL_RW && b->o.read_rate ? readers_of(&r) : r.n;
        if (!(r.idle = malloc((size_t)r.n * sizeof *r.idle))) {
            e = GIM_ENOMEM;
            goto out;
        }
        for (int i = r.paced_n - 1; i >= 0; i--)
            r.idle[r.nidle++] = i;
        int rv = pthread_create(&pacer, NULL, pacer_main, &r);
        if (rv != 0) {
            fprintf(stderr, "gim-bench: cannot start the pacer thread: %s\n", strerror(rv));
            e = GIM_EIO;
            goto out;
        }
        pacer_started = true;
        for (int i = r.paced_n; i < r.n; i++) /* --read-rate: the senders, a closed loop */
            ctx_next(&r.ctx[i]);
    } else {
        for (int i = 0; i < r.n; i++)
            ctx_next(&r.ctx[i]);
    }

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
        int64_t now = bench_now_ns();
        long long t = atomic_load(&r.timeouts);
        if (t != seen_timeouts && now - atomic_load(&r.last_reply_ns) > timeout_ns / 2) {
            fprintf(stderr, "gim-bench: no reply for %lld ms: re-dialing %s\n",
                    (long long)((now - atomic_load(&r.last_reply_ns)) / 1000000), l->url[0]);
            link_redial(l);
            seen_timeouts = t;
        }
        if (ok_target > 0 && now >= next_progress) {
            fprintf(stderr, "gim-bench: %s: %lld of %lld ok\n", bench_wl_names[wl],
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
    if (pacer_started)
        pthread_join(pacer, NULL);

    if (res) {
        memset(res, 0, sizeof *res);
        res->wl = wl;
        int64_t end = ok_target > 0 ? atomic_load(&r.last_reply_ns) : r.t_end;
        res->secs = (double)(end - (ok_target > 0 ? r.t_begin : r.t_measure)) / 1e9;
        merge(res, &r);
        res->ok_all = (uint64_t)atomic_load(&r.ok_total);
        res->backlog_max = r.backlog_max;
        res->pacer_wakes = r.pacer_wakes;
        bench_finish_result(res);
    }
    if (r.have_error)
        fprintf(stderr, "gim-bench: %s: first error: %s\n", bench_wl_names[wl], r.first_error);
out:
    run_free(&r);
    return e;
}

/* Signs in every user (once more for those that failed); GIM_EUNAUTH if any stay out. */
gim_err bench_sign_in_all(struct bench *b, struct link *l)
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
    int64_t t0 = bench_now_ns();
    for (int attempt = 0; attempt < 2 && left > 0; attempt++) {
        memset(ok, 0, (size_t)left);
        if ((e = bench_run_workload(b, l, WL_SIGNIN, 0, 10.0 + (double)left / 200, 0, todo, left,
                                    ok, NULL)) != GIM_OK)
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
    b->signed_in_ns = bench_now_ns();
    fprintf(stderr, "gim-bench: signed in %lld users in %.2f s\n", (long long)n,
            (double)(b->signed_in_ns - t0) / 1e9);
out:
    free(todo);
    free(ok);
    return e;
}

double bench_per_s(const struct result *r)
{
    return r->secs > 0 ? (double)r->st.ok / r->secs : 0;
}
