#include "conn.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "log.h"
#include "proto.h"
#include "registry.h"
#include "upstream.h"

#define RBUF_INITIAL 1024
#define WS_RING      8 /* WebSocket messages read ahead (pipelining) */

enum qkind { Q_PUSH, Q_REPLY };

struct conn {
    struct conn *prev, *next; /* all connections (list_mu) */
    uint64_t id;
    nng_stream *s;
    enum framing fr;
    enum gwm_transport tr;
    atomic_int refs;
    pthread_mutex_t mu;
    char addr[64];

    /* reading */
    nng_aio *raio;
    bool reading;
    uint8_t *rbuf; /* tcp: bytes [roff, rlen) not yet handled */
    size_t rcap, rlen, roff;
    nng_msg *rq[WS_RING]; /* ws: whole messages not yet handled */
    unsigned rq_head, rq_n;

    /* the frame being handled */
    struct upreq req;
    bool busy;
    int cur_type;
    int64_t cur_reqid;
    bool cur_silent, cur_signin;
    int64_t si_user, si_device;
    nng_msg *si_msg;
    struct devop signin_op;

    /* writing */
    nng_aio *waio;
    nng_msg **wq;
    unsigned wq_cap, wq_head, wq_n;
    size_t wq_bytes; /* queued + the one being sent */
    nng_msg *wcur;
    size_t wcur_len, woff;
    bool writing;

    /* session */
    int64_t user_id, device_id;
    bool signed_in;

    bool closing, draining, flush_close, no_signout;
};

/* A closed connection's PT_SIGN_OUT, run in the device's serialized queue. */
struct signout_op {
    struct devop op;
    struct upreq req;
    int64_t user_id, device_id;
    uint64_t conn_id;
    bool send;
    char addr[64];
};

static struct gw *G;
static atomic_ullong next_id;

static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn *all;
static long nconns;

/* The reaper: frees connections whose last reference is gone. */
static pthread_mutex_t reap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reap_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t freed_cv = PTHREAD_COND_INITIALIZER;
static struct conn *reap_head;
static long alive; /* allocated and not yet freed */
static bool reap_stop;
static pthread_t reaper;

static void conn_close(struct conn *c, enum gwm_close why, bool sign_out);
static void process(struct conn *c);
static void maybe_read_locked(struct conn *c);

/* ---- lifetime ---------------------------------------------------------------- */

void conn_ref(struct conn *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void conn_unref(struct conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_lock(&reap_mu);
    c->next = reap_head;
    reap_head = c;
    pthread_cond_signal(&reap_cv);
    pthread_mutex_unlock(&reap_mu);
}

uint64_t conn_id(const struct conn *c)
{
    return c->id;
}

static void conn_free(struct conn *c)
{
    nng_aio_free(c->raio);
    nng_aio_free(c->waio);
    upreq_fini(&c->req);
    if (c->s)
        nng_stream_free(c->s);
    for (unsigned i = 0; i < c->wq_n; i++)
        nng_msg_free(c->wq[(c->wq_head + i) % c->wq_cap]);
    for (unsigned i = 0; i < c->rq_n; i++)
        nng_msg_free(c->rq[(c->rq_head + i) % WS_RING]);
    if (c->wcur)
        nng_msg_free(c->wcur);
    if (c->si_msg)
        nng_msg_free(c->si_msg);
    free(c->wq);
    free(c->rbuf);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void *reap_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&reap_mu);
    for (;;) {
        while (!reap_head && !reap_stop)
            pthread_cond_wait(&reap_cv, &reap_mu);
        if (!reap_head)
            break;
        struct conn *c = reap_head;
        reap_head = c->next;
        pthread_mutex_unlock(&reap_mu);
        conn_free(c);
        pthread_mutex_lock(&reap_mu);
        alive--;
        pthread_cond_broadcast(&freed_cv);
    }
    pthread_mutex_unlock(&reap_mu);
    return NULL;
}

gim_err conn_module_init(struct gw *g)
{
    G = g;
    return pthread_create(&reaper, NULL, reap_thread, NULL) == 0 ? GIM_OK : GIM_ENOMEM;
}

void conn_module_fini(void)
{
    pthread_mutex_lock(&reap_mu);
    while (alive > 0 || reap_head)
        pthread_cond_wait(&freed_cv, &reap_mu);
    reap_stop = true;
    pthread_cond_signal(&reap_cv);
    pthread_mutex_unlock(&reap_mu);
    pthread_join(reaper, NULL);
}

long conn_count(void)
{
    pthread_mutex_lock(&list_mu);
    long n = nconns;
    pthread_mutex_unlock(&list_mu);
    return n;
}

/* ---- writing ----------------------------------------------------------------- */

static void send_cur_locked(struct conn *c)
{
    nng_aio_set_timeout(c->waio, (nng_duration)G->cfg->conn.write_timeout_ms);
    if (c->fr == FRAMING_WS) {
        /* Message mode: the stream takes one nng_msg and frees it once sent. */
        nng_aio_set_msg(c->waio, c->wcur);
    } else {
        nng_iov iov = {.iov_buf = (uint8_t *)nng_msg_body(c->wcur) + c->woff,
                       .iov_len = c->wcur_len - c->woff};
        nng_aio_set_iov(c->waio, 1, &iov);
    }
    nng_stream_send(c->s, c->waio);
}

static void start_write_locked(struct conn *c)
{
    if (c->writing || c->closing || c->wq_n == 0)
        return;
    c->wcur = c->wq[c->wq_head];
    c->wq_head = (c->wq_head + 1) % c->wq_cap;
    c->wq_n--;
    c->wcur_len = nng_msg_len(c->wcur);
    c->woff = 0;
    c->writing = true;
    conn_ref(c);
    send_cur_locked(c);
}

/* Draining or ending: the connection closes once nothing is left to do. */
static bool done_locked(struct conn *c)
{
    return !c->closing && (c->flush_close || c->draining) && !c->busy && !c->writing &&
           c->wq_n == 0;
}

static void on_write(void *arg)
{
    struct conn *c = arg;
    int rv = nng_aio_result(c->waio);
    bool fail = false, done;
    pthread_mutex_lock(&c->mu);
    if (rv == 0 && c->fr != FRAMING_WS) {
        c->woff += nng_aio_count(c->waio);
        if (c->woff < c->wcur_len && !c->closing) {
            send_cur_locked(c); /* a partial send: the rest, same reference */
            pthread_mutex_unlock(&c->mu);
            return;
        }
    }
    c->writing = false;
    if (rv == 0) {
        atomic_fetch_add(&gwm_global.frames_out, 1);
        if (c->fr != FRAMING_WS)
            nng_msg_free(c->wcur); /* ws freed it */
    } else {
        nng_msg *m = c->fr == FRAMING_WS ? nng_aio_get_msg(c->waio) : c->wcur;
        nng_aio_set_msg(c->waio, NULL);
        if (m)
            nng_msg_free(m);
        fail = true;
    }
    c->wcur = NULL;
    c->wq_bytes -= c->wcur_len;
    c->wcur_len = 0;
    if (!fail)
        start_write_locked(c);
    done = done_locked(c);
    bool flush = c->flush_close;
    pthread_mutex_unlock(&c->mu);
    if (fail)
        conn_close(c, rv == NNG_ETIMEDOUT ? GWM_CLOSE_SLOW : GWM_CLOSE_PEER, true);
    else if (done)
        conn_close(c, flush ? GWM_CLOSE_KICKED : GWM_CLOSE_SHUTDOWN, !flush);
    conn_unref(c);
}

/* Queues one frame (framed here). Returns false when it was dropped. */
static bool enqueue(struct conn *c, const uint8_t *body, size_t len, enum qkind kind)
{
    uint8_t hdr[FRAMING_MAX_HEADER];
    size_t hl = framing_header(c->fr, len, hdr);
    nng_msg *m = NULL;
    const struct gw_config *cfg = G->cfg;
    if (nng_msg_alloc(&m, hl + len) != 0)
        return false;
    memcpy(nng_msg_body(m), hdr, hl);
    memcpy((uint8_t *)nng_msg_body(m) + hl, body, len);
    size_t sz = hl + len;
    pthread_mutex_lock(&c->mu);
    unsigned frames = c->wq_n + (c->writing ? 1 : 0);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        nng_msg_free(m);
        return false;
    }
    if (kind == Q_PUSH &&
        (frames >= cfg->conn.queue_soft_frames || c->wq_bytes + sz > cfg->conn.queue_soft_bytes)) {
        pthread_mutex_unlock(&c->mu);
        nng_msg_free(m);
        atomic_fetch_add(&gwm_global.pushes_dropped, 1);
        return false;
    }
    if (frames + 1 > cfg->conn.queue_hard_frames || c->wq_bytes + sz > cfg->conn.queue_hard_bytes) {
        pthread_mutex_unlock(&c->mu);
        nng_msg_free(m);
        log_info("slow consumer closed", "conn=%llu addr=%s queued_frames=%u queued_bytes=%zu",
                 (unsigned long long)c->id, c->addr, frames, c->wq_bytes);
        conn_close(c, GWM_CLOSE_SLOW, true);
        return false;
    }
    if (c->wq_n == c->wq_cap) {
        unsigned ncap = c->wq_cap ? c->wq_cap * 2 : 4;
        nng_msg **nq = malloc(ncap * sizeof *nq);
        if (!nq) {
            pthread_mutex_unlock(&c->mu);
            nng_msg_free(m);
            return false;
        }
        for (unsigned i = 0; i < c->wq_n; i++)
            nq[i] = c->wq[(c->wq_head + i) % c->wq_cap];
        free(c->wq);
        c->wq = nq;
        c->wq_cap = ncap;
        c->wq_head = 0;
    }
    c->wq[(c->wq_head + c->wq_n) % c->wq_cap] = m;
    c->wq_n++;
    c->wq_bytes += sz;
    start_write_locked(c);
    pthread_mutex_unlock(&c->mu);
    return true;
}

static void reply_error(struct conn *c, int type, int64_t reqid, int code, const char *msg)
{
    Pb__Output o = PB__OUTPUT__INIT;
    uint8_t buf[512];
    o.type = (Pb__PackageType)type;
    o.request_id = reqid;
    o.code = code;
    o.message = (char *)msg;
    if (pb__output__get_packed_size(&o) > sizeof buf)
        return;
    enqueue(c, buf, pb__output__pack(&o, buf), Q_REPLY);
}

/* A reply from gim-logic, verbatim, unless it cannot be framed (be16 over 64 KiB): then the
 * client gets an error for that request instead of a truncated frame. */
static void reply_bytes(struct conn *c, const uint8_t *out, size_t len)
{
    if (framing_fits(c->fr, len)) {
        enqueue(c, out, len, Q_REPLY);
        return;
    }
    atomic_fetch_add(&gwm_global.frames_too_large, 1);
    log_warn("reply too large for the framing", "conn=%llu bytes=%zu type=%d",
             (unsigned long long)c->id, len, c->cur_type);
    reply_error(c, c->cur_type, c->cur_reqid, PB__ERROR_CODE__EC_TOO_LARGE,
                "reply larger than 65535 bytes cannot be sent with be16 framing");
}

void conn_push(struct conn *c, const uint8_t *output, size_t len, bool session_end)
{
    if (!framing_fits(c->fr, len)) {
        /* Dropped like a push to a slow client: the seq gap makes the client sync. */
        atomic_fetch_add(&gwm_global.frames_too_large, 1);
        atomic_fetch_add(&gwm_global.pushes_dropped, 1);
        return;
    }
    if (!session_end) {
        if (enqueue(c, output, len, Q_PUSH))
            atomic_fetch_add(&gwm_global.pushes_delivered, 1);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->no_signout = true;
    c->flush_close = true;
    int64_t dev = c->device_id;
    pthread_mutex_unlock(&c->mu);
    /* No longer the device's connection: a new sign-in elsewhere owns the device. */
    struct conn *cur = registry_take_if(G->reg, dev, c->id);
    if (cur)
        conn_unref(cur);
    enqueue(c, output, len, Q_REPLY);
    pthread_mutex_lock(&c->mu);
    bool done = done_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done)
        conn_close(c, GWM_CLOSE_KICKED, false);
}

/* ---- closing and signing out ---------------------------------------------------- */

static void signout_done(struct upreq *r, int rv, nng_msg *reply)
{
    struct signout_op *op = r->arg;
    if (rv != 0)
        log_warn("sign-out got no reply", "device_id=%lld err=\"%s\"", (long long)op->device_id,
                 nng_strerror(rv));
    if (reply)
        nng_msg_free(reply);
    registry_done(G->reg, op->device_id);
    /* Our aio is still running this callback: reap frees it afterwards. */
    nng_aio_reap(op->req.aio);
    op->req.aio = NULL;
    upreq_fini(&op->req);
    free(op);
}

static void signout_start(struct devop *d)
{
    struct signout_op *op = (struct signout_op *)d;
    struct conn *cur = registry_take_if(G->reg, op->device_id, op->conn_id);
    nng_msg *m = NULL;
    if (cur)
        conn_unref(cur);
    if (!cur || !op->send)
        goto skip; /* replaced by a newer connection, or the session already ended */
    Pb__Input in = PB__INPUT__INIT;
    uint8_t buf[16];
    in.type = PB__PACKAGE_TYPE__PT_SIGN_OUT;
    size_t n = pb__input__pack(&in, buf);
    if (upreq_init(&op->req, G->up, signout_done, op) != GIM_OK ||
        upstream_build(G->up, op->user_id, op->device_id, op->addr, buf, n, &m) != GIM_OK)
        goto skip;
    upstream_call(&op->req, m);
    return;
skip:
    registry_done(G->reg, op->device_id);
    upreq_fini(&op->req);
    free(op);
}

static void queue_signout(struct conn *c, int64_t user, int64_t device, bool send)
{
    struct signout_op *op = calloc(1, sizeof *op);
    if (!op) {
        log_error("out of memory: device not signed out", "device_id=%lld", (long long)device);
        return;
    }
    op->op.start = signout_start;
    op->user_id = user;
    op->device_id = device;
    op->conn_id = c->id;
    op->send = send;
    snprintf(op->addr, sizeof op->addr, "%s", c->addr);
    registry_run(G->reg, device, &op->op);
}

static void conn_close(struct conn *c, enum gwm_close why, bool sign_out)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->closing = true;
    bool signed_in = c->signed_in;
    bool send = sign_out && !c->no_signout;
    int64_t user = c->user_id, dev = c->device_id;
    pthread_mutex_unlock(&c->mu);

    atomic_fetch_add(&gwm_global.closes[why], 1);
    atomic_fetch_sub(&gwm_global.connections[c->tr], 1);
    if (signed_in)
        atomic_fetch_sub(&gwm_global.signed_in, 1);
    log_debug("connection closed", "conn=%llu addr=%s reason=%d device_id=%lld",
              (unsigned long long)c->id, c->addr, (int)why, (long long)dev);
    nng_stream_close(c->s); /* pending reads and writes end with NNG_ECLOSED */
    if (signed_in)
        queue_signout(c, user, dev, send);

    pthread_mutex_lock(&list_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    nconns--;
    pthread_mutex_unlock(&list_mu);
    conn_unref(c); /* the open connection's own reference */
}

/* ---- handling one frame ----------------------------------------------------------- */

static void on_reply(struct upreq *r, int rv, nng_msg *reply)
{
    struct conn *c = r->arg;
    const uint8_t *body = reply ? nng_msg_body(reply) : NULL;
    size_t len = reply ? nng_msg_len(reply) : 0;
    if (c->cur_signin) {
        Pb__Output *o = rv == 0 ? pb__output__unpack(NULL, len, body) : NULL;
        bool ok = o && o->code == PB__ERROR_CODE__EC_OK;
        if (o)
            pb__output__free_unpacked(o, NULL);
        if (ok) {
            pthread_mutex_lock(&c->mu);
            bool closing = c->closing, was = c->signed_in;
            if (!closing) {
                c->signed_in = true;
                c->user_id = c->si_user;
                c->device_id = c->si_device;
            }
            pthread_mutex_unlock(&c->mu);
            if (!was && !closing)
                atomic_fetch_add(&gwm_global.signed_in, 1);
            struct conn *old = registry_set_current(G->reg, c->si_device, c);
            if (closing) /* closed while signing in: logic holds a session nobody uses */
                queue_signout(c, c->si_user, c->si_device, true);
            registry_done(G->reg, c->si_device);
            if (old) {
                log_info("device signed in again; old connection closed",
                         "device_id=%lld old_conn=%llu new_conn=%llu", (long long)c->si_device,
                         (unsigned long long)conn_id(old), (unsigned long long)c->id);
                conn_close(old, GWM_CLOSE_REPLACED, false);
                conn_unref(old);
            }
        } else {
            registry_done(G->reg, c->si_device);
        }
    }
    if (rv != 0)
        reply_error(c, c->cur_type, c->cur_reqid, PB__ERROR_CODE__EC_UNAVAILABLE,
                    "gim-logic did not answer; retry later");
    else if (c->cur_silent)
        atomic_fetch_add(&gwm_global.replies_suppressed, 1);
    else
        reply_bytes(c, body, len);
    if (reply)
        nng_msg_free(reply);
    pthread_mutex_lock(&c->mu);
    c->busy = false;
    pthread_mutex_unlock(&c->mu);
    process(c);
    conn_unref(c); /* the request's reference */
}

static void signin_start(struct devop *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, signin_op));
    nng_msg *m = c->si_msg;
    c->si_msg = NULL;
    upstream_call(&c->req, m);
}

/* gim's seed-era clients ack with PT_MESSAGE whose data is a MessageACK (device_ack is
 * field 2); a real send has field 1 (message). */
static bool is_seed_ack(const Pb__Input *in)
{
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, in->data.len, in->data.data);
    bool ack = false;
    if (!ms)
        return false;
    if (!ms->message)
        for (size_t i = 0; i < ms->base.n_unknown_fields && !ack; i++)
            ack = ms->base.unknown_fields[i].tag == 2;
    pb__message_send__free_unpacked(ms, NULL);
    return ack;
}

/* Returns true when the frame went to gim-logic (the reply comes through on_reply). */
static bool handle(struct conn *c, const uint8_t *body, size_t len)
{
    Pb__Input *in = pb__input__unpack(NULL, len, body);
    bool forwarded = false;
    nng_msg *m = NULL;
    if (!in) {
        atomic_fetch_add(&gwm_global.refused_local, 1);
        reply_error(c, 0, 0, PB__ERROR_CODE__EC_BAD_REQUEST, "frame is not a pb.Input");
        return false;
    }
    int type = in->type;
    c->cur_type = type;
    c->cur_reqid = in->request_id;
    c->cur_silent = false;
    c->cur_signin = false;
    pthread_mutex_lock(&c->mu);
    bool signed_in = c->signed_in;
    int64_t user = c->user_id, dev = c->device_id;
    pthread_mutex_unlock(&c->mu);

    if (type == PB__PACKAGE_TYPE__PT_HEARTBEAT && (!signed_in || upstream_lease_ok(G->up))) {
        /* The lease keeps this gateway's sessions online; as gim's connect layer did, the
         * gateway answers heartbeats itself. */
        atomic_fetch_add(&gwm_global.heartbeats_local, 1);
        reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_OK, NULL);
        goto out;
    }
    if (type == PB__PACKAGE_TYPE__PT_SIGN_OUT || type == PB__PACKAGE_TYPE__PT_GATEWAY_LEASE ||
        type >= 100) {
        atomic_fetch_add(&gwm_global.refused_local, 1);
        reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_FORBIDDEN,
                    "this package type is sent by gateways and operators, never by clients");
        goto out;
    }
    if (!signed_in && type != PB__PACKAGE_TYPE__PT_SIGN_IN) {
        atomic_fetch_add(&gwm_global.refused_local, 1);
        reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_UNAUTHENTICATED,
                    "sign in first (PT_SIGN_IN)");
        goto out;
    }
    if (type == PB__PACKAGE_TYPE__PT_SIGN_IN) {
        Pb__SignInInput *si = pb__sign_in_input__unpack(NULL, in->data.len, in->data.data);
        int64_t su = si ? si->user_id : 0, sd = si ? si->device_id : 0;
        if (si)
            pb__sign_in_input__free_unpacked(si, NULL);
        if (su <= 0 || sd <= 0) {
            atomic_fetch_add(&gwm_global.refused_local, 1);
            reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_BAD_REQUEST,
                        "PT_SIGN_IN needs a SignInInput with positive user_id and device_id");
            goto out;
        }
        if (signed_in && (sd != dev || su != user)) {
            atomic_fetch_add(&gwm_global.refused_local, 1);
            reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_FORBIDDEN,
                        "this connection is signed in as another device; open a new one");
            goto out;
        }
        if (upstream_build(G->up, user, dev, c->addr, body, len, &m) != GIM_OK)
            goto nomem;
        c->cur_signin = true;
        c->si_user = su;
        c->si_device = sd;
        c->si_msg = m;
        conn_ref(c);
        registry_run(G->reg, sd, &c->signin_op);
        forwarded = true;
        goto out;
    }
    if (type == PB__PACKAGE_TYPE__PT_MESSAGE && is_seed_ack(in))
        c->cur_silent = true;
    if (upstream_build(G->up, user, dev, c->addr, body, len, &m) != GIM_OK)
        goto nomem;
    conn_ref(c);
    upstream_call(&c->req, m);
    forwarded = true;
    goto out;
nomem:
    reply_error(c, type, in->request_id, PB__ERROR_CODE__EC_UNAVAILABLE, "gateway out of memory");
out:
    pb__input__free_unpacked(in, NULL);
    return forwarded;
}

/* Takes the next whole frame off the read side (a copy the caller frees), or NULL. */
static uint8_t *next_frame_locked(struct conn *c, size_t *len)
{
    uint8_t *copy = NULL;
    if (c->fr == FRAMING_WS) {
        if (c->rq_n == 0)
            return NULL;
        nng_msg *m = c->rq[c->rq_head];
        c->rq_head = (c->rq_head + 1) % WS_RING;
        c->rq_n--;
        *len = nng_msg_len(m);
        if ((copy = malloc(*len + 1)) != NULL)
            memcpy(copy, nng_msg_body(m), *len);
        nng_msg_free(m);
        return copy;
    }
    size_t hdr, blen;
    if (framing_parse(c->fr, c->rbuf + c->roff, c->rlen - c->roff, G->cfg->conn.max_frame_bytes,
                      &hdr, &blen) != FRAMING_FRAME)
        return NULL;
    if ((copy = malloc(blen + 1)) != NULL)
        memcpy(copy, c->rbuf + c->roff + hdr, blen);
    c->roff += hdr + blen;
    /* Never move the window under a pending read: it writes at the rlen it started with. */
    if (c->roff == c->rlen && !c->reading)
        c->roff = c->rlen = 0;
    *len = blen;
    return copy;
}

static void process(struct conn *c)
{
    for (;;) {
        size_t len = 0;
        pthread_mutex_lock(&c->mu);
        if (c->busy || c->closing || c->draining) {
            bool done = done_locked(c), flush = c->flush_close;
            pthread_mutex_unlock(&c->mu);
            if (done)
                conn_close(c, flush ? GWM_CLOSE_KICKED : GWM_CLOSE_SHUTDOWN, !flush);
            return;
        }
        uint8_t *f = next_frame_locked(c, &len);
        if (f)
            c->busy = true;
        /* Reading goes on while a frame is handled (bounded by the buffer or the ring): a
         * later frame waits for `busy`, and a client that closes meanwhile is noticed then,
         * not after the reply. */
        maybe_read_locked(c);
        pthread_mutex_unlock(&c->mu);
        if (!f)
            return;
        atomic_fetch_add(&gwm_global.frames_in, 1);
        bool forwarded = handle(c, f, len);
        free(f);
        if (forwarded)
            return; /* on_reply continues */
        pthread_mutex_lock(&c->mu);
        c->busy = false;
        pthread_mutex_unlock(&c->mu);
    }
}

/* ---- reading ----------------------------------------------------------------------- */

/* Starts a read if there is room. Never moves bytes a handled frame still uses: frames are
 * copied out before handling. */
static void maybe_read_locked(struct conn *c)
{
    if (c->reading || c->closing || c->draining)
        return;
    if (c->fr == FRAMING_WS) {
        if (c->rq_n >= WS_RING)
            return;
    } else {
        size_t hdr, blen;
        if (c->roff == c->rlen)
            c->roff = c->rlen = 0;
        enum framing_result fr = framing_parse(c->fr, c->rbuf + c->roff, c->rlen - c->roff,
                                               G->cfg->conn.max_frame_bytes, &hdr, &blen);
        if (fr == FRAMING_FRAME && c->rlen == c->rcap)
            return; /* full of frames: read again once they are handled */
        if (c->roff > 0 && (c->rlen == c->rcap || c->roff > c->rcap / 2)) {
            memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
            c->rlen -= c->roff;
            c->roff = 0;
        }
        size_t need = fr == FRAMING_NEED_MORE && hdr ? hdr + blen : c->rlen + 1;
        if (need > c->rcap) {
            size_t ncap = c->rcap;
            while (ncap < need)
                ncap *= 2;
            uint8_t *nb = realloc(c->rbuf, ncap);
            if (!nb)
                return; /* retried on the next frame; idle close as last resort */
            c->rbuf = nb;
            c->rcap = ncap;
        } else if (c->rlen == 0 && c->rcap > RBUF_INITIAL * 4) {
            /* A large frame is done: give the memory back (idle connections dominate). */
            uint8_t *nb = realloc(c->rbuf, RBUF_INITIAL);
            if (nb) {
                c->rbuf = nb;
                c->rcap = RBUF_INITIAL;
            }
        }
        nng_iov iov = {.iov_buf = c->rbuf + c->rlen, .iov_len = c->rcap - c->rlen};
        nng_aio_set_iov(c->raio, 1, &iov);
    }
    c->reading = true;
    conn_ref(c);
    nng_aio_set_timeout(c->raio, (nng_duration)G->cfg->conn.idle_seconds * 1000);
    nng_stream_recv(c->s, c->raio);
}

static void on_read(void *arg)
{
    struct conn *c = arg;
    int rv = nng_aio_result(c->raio);
    bool bad = false;
    pthread_mutex_lock(&c->mu);
    c->reading = false;
    if (rv == 0) {
        if (c->fr == FRAMING_WS) {
            nng_msg *m = nng_aio_get_msg(c->raio);
            nng_aio_set_msg(c->raio, NULL);
            if (m && nng_msg_len(m) > G->cfg->conn.max_frame_bytes) {
                nng_msg_free(m);
                bad = true;
            } else if (m) {
                c->rq[(c->rq_head + c->rq_n) % WS_RING] = m;
                c->rq_n++;
            }
        } else {
            c->rlen += nng_aio_count(c->raio);
            size_t hdr, blen;
            enum framing_result fr = framing_parse(c->fr, c->rbuf + c->roff, c->rlen - c->roff,
                                                   G->cfg->conn.max_frame_bytes, &hdr, &blen);
            bad = fr == FRAMING_TOO_LARGE || fr == FRAMING_BAD;
        }
    }
    bool draining = c->draining;
    pthread_mutex_unlock(&c->mu);
    if (rv != 0) {
        if (!(draining && rv == NNG_ECANCELED))
            conn_close(c, rv == NNG_ETIMEDOUT ? GWM_CLOSE_IDLE : GWM_CLOSE_PEER, true);
    } else if (bad) {
        log_info("bad frame: connection closed", "conn=%llu addr=%s max_frame_bytes=%u",
                 (unsigned long long)c->id, c->addr, G->cfg->conn.max_frame_bytes);
        conn_close(c, GWM_CLOSE_BAD_FRAME, true);
    } else {
        process(c);
        pthread_mutex_lock(&c->mu);
        maybe_read_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    conn_unref(c);
}

/* ---- accepting --------------------------------------------------------------------- */

static void peer_addr(nng_stream *s, char *out, size_t len)
{
    nng_sockaddr sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    snprintf(out, len, "?");
    if (nng_stream_get_addr(s, NNG_OPT_REMADDR, &sa) != 0)
        return;
    if (sa.s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
        snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(sa.s_in6.sa_port));
    }
}

void conn_accept(nng_stream *s, enum framing f, enum gwm_transport t)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c || (f != FRAMING_WS && !(c->rbuf = malloc(RBUF_INITIAL))) ||
        nng_aio_alloc(&c->raio, on_read, c) != 0 || nng_aio_alloc(&c->waio, on_write, c) != 0 ||
        upreq_init(&c->req, G->up, on_reply, c) != GIM_OK) {
        log_error("out of memory: connection refused", "%s", "");
        if (c) {
            if (c->raio)
                nng_aio_free(c->raio);
            if (c->waio)
                nng_aio_free(c->waio);
            upreq_fini(&c->req);
            free(c->rbuf);
            free(c);
        }
        nng_stream_free(s);
        return;
    }
    c->id = atomic_fetch_add(&next_id, 1) + 1;
    c->s = s;
    c->fr = f;
    c->tr = t;
    c->rcap = f == FRAMING_WS ? 0 : RBUF_INITIAL;
    c->signin_op.start = signin_start;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    peer_addr(s, c->addr, sizeof c->addr);
    pthread_mutex_lock(&reap_mu);
    alive++;
    pthread_mutex_unlock(&reap_mu);
    pthread_mutex_lock(&list_mu);
    c->next = all;
    if (all)
        all->prev = c;
    all = c;
    nconns++;
    pthread_mutex_unlock(&list_mu);
    atomic_fetch_add(&gwm_global.connections[t], 1);
    atomic_fetch_add(&gwm_global.accepted[t], 1);
    pthread_mutex_lock(&c->mu);
    maybe_read_locked(c);
    pthread_mutex_unlock(&c->mu);
}

/* ---- shutdown ---------------------------------------------------------------------- */

/* Calls fn on every open connection, each held by a reference while fn runs. */
static void for_all(void (*fn)(struct conn *))
{
    pthread_mutex_lock(&list_mu);
    long n = nconns, i = 0;
    struct conn **v = n ? malloc((size_t)n * sizeof *v) : NULL;
    for (struct conn *c = all; c && v && i < n; c = c->next) {
        conn_ref(c);
        v[i++] = c;
    }
    pthread_mutex_unlock(&list_mu);
    for (long j = 0; j < i; j++) {
        fn(v[j]);
        conn_unref(v[j]);
    }
    free(v);
}

static void drain_one(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->draining = true;
    bool done = done_locked(c);
    pthread_mutex_unlock(&c->mu);
    nng_aio_cancel(c->raio);
    if (done)
        conn_close(c, GWM_CLOSE_SHUTDOWN, true);
}

static void close_one(struct conn *c)
{
    conn_close(c, GWM_CLOSE_SHUTDOWN, true);
}

void conn_drain_all(void)
{
    for_all(drain_one);
}

void conn_close_all(void)
{
    for_all(close_one);
}
