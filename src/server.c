#include "server.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "busy.h"
#include "clock.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "scheduling.h"
#include "textfile.h"
#include "writer.h"
#include "storage.h"

enum ctx_state { CTX_IDLE, CTX_RECV, CTX_WORK, CTX_SEND };

/*
 * The server's life (server.h): RUNNING until server_stop(); DRAINING while
 * the contexts answer what they hold (none starts a new receive); CLOSED
 * once every context is idle, when nothing can touch a context any more and
 * the socket, the aios and the memory go.
 */
enum srv_state { SRV_RUNNING, SRV_DRAINING, SRV_CLOSED };

#define REQ_HEADER_BYTES 4 /* the request id nng's REQ puts before each request on the wire */

/*
 * How long a reply may wait for its connection (a gateway that stopped
 * reading, a full TCP buffer) before it is dropped and the context goes back
 * to receiving. Without it such a gateway kept the context forever, and a
 * stop waited for it. The gateway's REQ resends after its own timeout.
 */
#define SEND_TIMEOUT_MS 5000

/* A stop that takes longer than this logs how many requests it still waits for, then again. */
#define DRAIN_LOG_MS 5000

struct server_ctx {
    struct server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    nng_msg *msg; /* the request being worked on; reused for the reply */
    _Atomic int state;
    bool refused; /* its write was refused at admission (logged quietly) */
    struct request req;
    struct server_ctx *next; /* in the server's ready queue */
};

/*
 * A worker serves any context: the next ready request goes to whichever
 * worker is free (see ready_push), so a slow read holds only its own worker.
 * Before, each context belonged to one worker (context i to worker i mod
 * workers), and a request queued behind a slow read of the same worker
 * waited for it while other workers sat idle: the p99 cause named in
 * docs/benchmarks.md.
 */
struct worker {
    struct server *srv;
    pthread_t thread;
    pthread_cond_t cv;         /* under srv->qmu: handed a context, or the stop */
    struct server_ctx *handed; /* a context given to this idle worker by ready_push */
    struct worker *next_idle;  /* in srv->idle */
    struct store_conn *ro;
    bool started;
};

struct server {
    const struct gim_config *cfg;
    nng_socket sock;
    bool sock_open;
    struct dispatch disp;
    struct writer *writer;
    struct metrics *metrics;
    struct server_ctx *ctxs;
    int nctx;
    struct worker *workers;
    int nworkers;
    /*
     * The ready queue (contexts holding a request no worker has taken yet) and
     * the idle workers, both under qmu. Idle workers form a stack: the one
     * that went idle last is woken first, while its cache and its connection's
     * pages are warm, and on 2 cores the same few threads keep running.
     */
    pthread_mutex_t qmu;
    struct server_ctx *qhead, *qtail;
    struct worker *idle;
    bool wstop;            /* the workers exit once nothing is queued */
    nng_tls_config *tls;   /* for tls+tcp:// listeners; NULL until one needs it */
    struct listeners *lst; /* and their watchdog (listener.h: nng 1.5.2's listener bug) */
    /* The readers' lock waits, cut short when the stop begins (busy.h). */
    struct busy_wait rbusy;
    /*
     * mu guards state and active, and makes "check the state, start a
     * receive" one step, so that the stop's cancel of every receiving
     * context cannot miss one that was about to start.
     */
    pthread_mutex_t mu;
    pthread_cond_t idle_cv; /* active reached 0 */
    enum srv_state state;
    int active;             /* contexts not CTX_IDLE */
    pthread_rwlock_t calls; /* held for reading around nng_ctx_send (ctx_reply) */
    /* Write admission (server.h): writes admitted and not yet answered, and the cap. */
    _Atomic int writes;
    int max_writes;
    _Atomic int64_t refused;        /* writes refused since the last warning */
    _Atomic int64_t refused_log_ms; /* when that warning was last logged */
    /*
     * The replier (see write_done): committed writes whose reply is not sent
     * yet, in commit order, under rmu; the replier sleeps on rcv only while
     * the list is empty. Without the thread (replier_on false: it could not
     * be started) the writer replies itself.
     */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    struct server_ctx *rhead, *rtail;
    bool rstop, replier_on;
    pthread_t replier;
};

/* c leaves the state machine for good (the server is stopping); the caller holds s->mu. */
static void ctx_idle_locked(struct server_ctx *c)
{
    struct server *s = c->srv;
    atomic_store(&c->state, CTX_IDLE);
    if (--s->active == 0)
        pthread_cond_broadcast(&s->idle_cv);
}

static void ctx_recv(struct server_ctx *c)
{
    struct server *s = c->srv;
    /* Under mu: server_stop cancels every CTX_RECV context under mu too. nng never runs
     * an aio's callback inside nng_ctx_recv, so holding mu here cannot deadlock. */
    pthread_mutex_lock(&s->mu);
    if (s->state != SRV_RUNNING) {
        ctx_idle_locked(c);
    } else {
        atomic_store(&c->state, CTX_RECV);
        nng_aio_set_timeout(c->aio, NNG_DURATION_INFINITE);
        nng_ctx_recv(c->ctx, c->aio);
    }
    pthread_mutex_unlock(&s->mu);
}

/* c holds a request: an idle worker takes it now, or the first worker to finish. */
static void ready_push(struct server *s, struct server_ctx *c)
{
    c->next = NULL;
    pthread_mutex_lock(&s->qmu);
    struct worker *w = s->idle;
    if (w) {
        s->idle = w->next_idle;
        w->handed = c;
    } else if (s->qtail) {
        s->qtail->next = c;
        s->qtail = c;
    } else {
        s->qhead = s->qtail = c;
    }
    pthread_mutex_unlock(&s->qmu);
    if (w)
        pthread_cond_signal(&w->cv); /* outside qmu: it wakes to a free mutex */
}

/* aio callback, on an nng thread: never blocks (mu is only ever held briefly). */
static void ctx_cb(void *arg)
{
    struct server_ctx *c = arg;
    int rv = nng_aio_result(c->aio);
    switch (atomic_load(&c->state)) {
    case CTX_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
                /* Only server_stop cancels or closes. */
                pthread_mutex_lock(&c->srv->mu);
                ctx_idle_locked(c);
                pthread_mutex_unlock(&c->srv->mu);
                return;
            }
            ctx_recv(c);
            return;
        }
        c->msg = nng_aio_get_msg(c->aio);
        atomic_store(&c->state, CTX_WORK);
        ready_push(c->srv, c);
        return;
    case CTX_SEND:
        if (rv != 0) {
            /* On failure (timeout included) the message is still ours. */
            nng_msg_free(nng_aio_get_msg(c->aio));
        }
        ctx_recv(c);
        return;
    default:
        return;
    }
}

/* Sends c->req's reply, reusing the request's nng message; any thread. */
static void ctx_reply(struct server_ctx *c)
{
    struct request *r = &c->req;
    int64_t dur = gim_clock_mono_ns() - r->start_ns;
    metrics_request(c->srv->metrics, r->type, gim_err_wire(r->code), dur);
    bool quiet = r->code == GIM_OK || r->code == GIM_EUNAUTH || r->code == GIM_EBADREQ ||
                 c->refused; /* refusals are counted in one warning a second instead */
    c->refused = false;
    if (r->code != GIM_OK || log_enabled(LOG_LEVEL_DEBUG))
        log_write(quiet ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "request",
                  "request_id=%lld user=%lld device=%lld type=%d code=%s duration_us=%lld",
                  (long long)r->request_id, (long long)r->sess.user_id,
                  (long long)r->sess.device_id, r->type, gim_err_name(r->code),
                  (long long)(dur / 1000));
    /* Packed straight into the request's message: no buffer of its own, no copy. */
    Pb__Output out;
    request_output(r, &out);
    size_t len = pb__output__get_packed_size(&out);
    if (nng_msg_realloc(c->msg, len) != 0) {
        request_reset(r);
        nng_msg_free(c->msg);
        c->msg = NULL;
        ctx_recv(c); /* the client's REQ resends after its timeout */
        return;
    }
    pb__output__pack(&out, nng_msg_body(c->msg));
    request_reset(r);
    nng_aio_set_msg(c->aio, c->msg);
    c->msg = NULL;
    atomic_store(&c->state, CTX_SEND);
    nng_aio_set_timeout(c->aio, SEND_TIMEOUT_MS);
    /* The send's callback can run (and the context go idle) before nng_ctx_send returns,
     * and nng still touches the context then: server_stop closes only after every such
     * call has returned (it takes `calls` for writing). */
    pthread_rwlock_rdlock(&c->srv->calls);
    nng_ctx_send(c->ctx, c->aio);
    pthread_rwlock_unlock(&c->srv->calls);
}

/*
 * The writer's completion: the commit is done (or failed); the replier sends
 * the reply. The writer used to send it itself, and nng_ctx_send takes the
 * REP socket's lock, which nng's own threads hold while they receive for the
 * other contexts: measured off the CPU (sched_switch with user stacks, send
 * C=256, 2 s), 480 of the writer's 1,606 sleeps were on that lock inside
 * nng_ctx_send, about 157 ms of each second of the one serial stage, which a
 * CPU profile does not show. The writer now appends the context to a list
 * (one uncontended lock of ours) and wakes the replier only if it sleeps, so
 * a batch costs at most one wake-up; the replier sends the replies in commit
 * order. Bought (docs/benchmarks.md, "Issue 15: the writes' replies off the
 * writer"): more sends at saturation in 18 of 19 alternated pairs (+3 to
 * +22 %, one -10 %), lower medians. Paid in the tail: the writer no longer
 * waits for its replies and a wake-up is on every write's path, so p99 rose
 * by up to 10 ms at C=256, by about 30 ms for the sends of rw C=256, and by
 * 2 ms at a fixed 5,000 sends/s with C=64.
 */
static void write_done(struct request *r)
{
    struct server_ctx *c = r->sctx;
    struct server *s = c->srv;
    atomic_fetch_sub(&s->writes, 1);
    if (!s->replier_on) {
        ctx_reply(c);
        return;
    }
    c->next = NULL;
    pthread_mutex_lock(&s->rmu);
    bool wake = !s->rhead; /* only an empty list can have the replier asleep */
    if (s->rtail)
        s->rtail->next = c;
    else
        s->rhead = c;
    s->rtail = c;
    pthread_mutex_unlock(&s->rmu);
    if (wake)
        pthread_cond_signal(&s->rcv); /* outside rmu: it wakes to a free mutex */
}

/* The replier: takes every committed write at once and replies to each, until the stop. */
static void *replier_main(void *arg)
{
    struct server *s = arg;
    scheduling_apply_serial(s->cfg); /* every send waits for this thread too */
    pthread_mutex_lock(&s->rmu);
    for (;;) {
        while (!s->rhead && !s->rstop)
            pthread_cond_wait(&s->rcv, &s->rmu);
        struct server_ctx *c = s->rhead;
        if (!c)
            break; /* stopping, and nothing left to answer */
        s->rhead = s->rtail = NULL;
        pthread_mutex_unlock(&s->rmu);
        while (c) {
            struct server_ctx *next = c->next; /* c is the state machine's again after its reply */
            ctx_reply(c);
            c = next;
        }
        pthread_mutex_lock(&s->rmu);
    }
    pthread_mutex_unlock(&s->rmu);
    return NULL;
}

/* Without the replier (out of threads) the writer sends its replies itself: slower, correct. */
static void replier_start(struct server *s)
{
    if (pthread_create(&s->replier, NULL, replier_main, s) != 0) {
        log_warn("the writer sends its own replies", "reason=\"%s\"", "cannot start a thread");
        return;
    }
    pthread_setname_np(s->replier, "gim-reply"); /* top -H, perf: CPU by thread */
    s->replier_on = true;
}

/* After the drain: every context is idle, so nothing is queued and no write_done can follow. */
static void replier_stop(struct server *s)
{
    if (!s->replier_on)
        return;
    pthread_mutex_lock(&s->rmu);
    s->rstop = true;
    pthread_mutex_unlock(&s->rmu);
    pthread_cond_signal(&s->rcv);
    pthread_join(s->replier, NULL);
    s->replier_on = false;
}

/* A write over writer.max_queued: EC_UNAVAILABLE now, and one warning a second at most. */
static void refuse_write(struct server *s, struct server_ctx *c)
{
    request_fail(&c->req, GIM_EUNAVAILABLE,
                 "too many writes waiting for the database, retry later");
    c->refused = true;
    int64_t n = atomic_fetch_add(&s->refused, 1) + 1;
    int64_t now = gim_clock_mono_ns() / 1000000, last = atomic_load(&s->refused_log_ms);
    if (now - last >= 1000 && atomic_compare_exchange_strong(&s->refused_log_ms, &last, now)) {
        atomic_fetch_sub(&s->refused, n);
        log_warn("writes refused", "count=%lld writer.max_queued=%d reason=\"%s\"", (long long)n,
                 s->max_writes, "the writer is behind (database locked or slow)");
    }
}

static void work(struct worker *w, struct server_ctx *c)
{
    struct server *s = c->srv;
    struct request *r = &c->req;
    r->sctx = c;
    enum dispatch_next next =
        dispatch_begin(&s->disp, r, nng_msg_body(c->msg), nng_msg_len(c->msg), w->ro);
    if (next != DISPATCH_WRITE) {
        ctx_reply(c);
        return;
    }
    if (atomic_fetch_add(&s->writes, 1) >= s->max_writes) {
        atomic_fetch_sub(&s->writes, 1);
        refuse_write(s, c);
        ctx_reply(c);
        return;
    }
    log_debug("write admitted", "request_id=%lld type=%d writes=%d", (long long)r->request_id,
              r->type, atomic_load(&s->writes));
    writer_submit(s->writer, &r->job); /* write_done() follows, here or on the writer thread */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *s = w->srv;
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        struct server_ctx *c = w->handed;
        w->handed = NULL;
        if (!c && s->qhead) {
            c = s->qhead;
            s->qhead = c->next;
            if (!s->qhead)
                s->qtail = NULL;
        }
        if (c) {
            pthread_mutex_unlock(&s->qmu);
            work(w, c);
            pthread_mutex_lock(&s->qmu);
            continue;
        }
        if (s->wstop)
            break;
        w->next_idle = s->idle;
        s->idle = w;
        while (!w->handed && !s->wstop)
            pthread_cond_wait(&w->cv, &s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}

/*
 * The server side of tls+tcp://: our certificate and key, and, when a CA is
 * configured, client certificates are required and must chain to it: that is
 * what keeps anyone but our gateways off a logic socket that crosses hosts.
 */
static gim_err tls_setup(struct server *s, char *errbuf, size_t errlen)
{
    const struct config_tls *t = &s->cfg->tls;
    char *cert = NULL, *key = NULL;
    gim_err e = GIM_ECONFIG;
    int rv;
    if (s->tls)
        return GIM_OK;
    if (!t->cert_file || !*t->cert_file || !t->key_file || !*t->key_file) {
        snprintf(errbuf, errlen, "tls+tcp:// listen URL needs tls.cert_file and tls.key_file");
        return GIM_ECONFIG;
    }
    if (!(cert = textfile_slurp(t->cert_file, TEXTFILE_MAX_PEM_BYTES)) ||
        !(key = textfile_slurp(t->key_file, TEXTFILE_MAX_PEM_BYTES))) {
        snprintf(errbuf, errlen, "cannot read tls.cert_file %s or tls.key_file %s", t->cert_file,
                 t->key_file);
        goto out;
    }
    if ((rv = nng_tls_config_alloc(&s->tls, NNG_TLS_MODE_SERVER)) != 0 ||
        (rv = nng_tls_config_own_cert(s->tls, cert, key, NULL)) != 0) {
        snprintf(errbuf, errlen, "bad TLS certificate or key: %s", nng_strerror(rv));
        goto out;
    }
    if (t->ca_file && *t->ca_file) {
        if ((rv = nng_tls_config_ca_file(s->tls, t->ca_file)) != 0 ||
            (rv = nng_tls_config_auth_mode(s->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
            snprintf(errbuf, errlen, "bad tls.ca_file %s: %s", t->ca_file, nng_strerror(rv));
            goto out;
        }
    } else {
        log_warn("TLS without client certificates", "%s",
                 "set tls.ca_file so that only your gateways can connect");
    }
    e = GIM_OK;
out:
    free(cert);
    free(key);
    return e;
}

static gim_err listen_all(struct server *s, char *errbuf, size_t errlen)
{
    for (unsigned i = 0; i < s->cfg->listen_count; i++) {
        gim_err e;
        if (strncmp(s->cfg->listen[i], "tls+", 4) == 0 &&
            (e = tls_setup(s, errbuf, errlen)) != GIM_OK)
            return e;
    }
    return listeners_start(&s->lst, s->sock, s->cfg->listen, s->cfg->listen_count, s->tls,
                           nng_req0_open, errbuf, errlen);
}

static gim_err start_workers(struct server *s, const struct server_opts *o, char *errbuf,
                             size_t errlen)
{
    gim_err e;
    s->nworkers = (int)o->cfg->workers;
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers)
        return GIM_ENOMEM;
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->srv = s;
        pthread_cond_init(&w->cv, NULL);
        if ((e = store_open(o->cfg, STORE_READER, &w->ro, errbuf, errlen)) != GIM_OK)
            return e;
        storage(w->ro)->tx->wait_locks(w->ro, &s->rbusy, s->rbusy.timeout_ms);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(errbuf, errlen, "cannot start worker thread");
            return GIM_EINTERNAL;
        }
        pthread_setname_np(w->thread, "gim-worker"); /* top -H, perf: CPU by thread */
        w->started = true;
    }
    return GIM_OK;
}

/*
 * Write admission. A write holds its context until the writer has committed
 * it and the reply is sent; with the database locked by another process
 * that is busy_timeout_ms per batch, and when writes held every context,
 * heartbeats and syncs waited behind them for 10 s (issue 11, scenario 4).
 * So the contexts are `contexts` + writer.max_queued, and at most
 * writer.max_queued writes are admitted at once: whatever the writes do,
 * `contexts` contexts are left to receive reads (and to refuse further
 * writes at once with EC_UNAVAILABLE). A cap alone (within `contexts`) would
 * also refuse writes of a healthy server under a burst; extra contexts for
 * the parked writes keep today's concurrency for writes and make room for
 * reads. The alternative, a raw REP socket that could park requests without
 * holding a context, would mean carrying nng's backtrace by hand.
 */
static gim_err start_contexts(struct server *s, char *errbuf, size_t errlen)
{
    s->max_writes = (int)s->cfg->writer.max_queued;
    s->nctx = (int)s->cfg->contexts + s->max_writes;
    s->ctxs = calloc((size_t)s->nctx, sizeof *s->ctxs);
    if (!s->ctxs)
        return GIM_ENOMEM;
    for (int i = 0; i < s->nctx; i++) {
        struct server_ctx *c = &s->ctxs[i];
        c->srv = s;
        int rv = nng_aio_alloc(&c->aio, ctx_cb, c);
        if (rv == 0)
            rv = nng_ctx_open(&c->ctx, s->sock);
        if (rv != 0) {
            snprintf(errbuf, errlen, "cannot open nng context: %s", nng_strerror(rv));
            return GIM_EIO;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->active += s->nctx;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nctx; i++)
        ctx_recv(&s->ctxs[i]);
    return GIM_OK;
}

gim_err server_start(struct server **out, const struct server_opts *o, char *errbuf, size_t errlen)
{
    gim_err e;
    int rv;
    struct server *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return GIM_ENOMEM;
    s->cfg = o->cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    pthread_rwlock_init(&s->calls, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    busy_wait_init(&s->rbusy, o->cfg->database.busy_timeout_ms);
    s->writer = o->writer;
    s->metrics = o->metrics;
    s->disp = (struct dispatch){.cfg = o->cfg,
                                .presence = o->presence,
                                .clock = o->clock,
                                .metrics = o->metrics,
                                .write_done = write_done};
    if ((rv = nng_rep0_open(&s->sock)) != 0) {
        snprintf(errbuf, errlen, "cannot open REP socket: %s", nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    s->sock_open = true;
    /*
     * Oversized requests are refused by nng before we allocate anything for
     * them. nng measures the frame, which carries the REQ header (a 4-byte
     * request id per hop; gateways dial us directly) ahead of the request
     * that limits.max_request_bytes measures.
     */
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ,
                        (size_t)o->cfg->limits.max_request_bytes + REQ_HEADER_BYTES);
    if ((e = start_workers(s, o, errbuf, errlen)) != GIM_OK)
        goto fail;
    replier_start(s); /* before any context: a write can complete as soon as one receives */
    if ((e = start_contexts(s, errbuf, errlen)) != GIM_OK)
        goto fail;
    if ((e = listen_all(s, errbuf, errlen)) != GIM_OK)
        goto fail;
    *out = s;
    return GIM_OK;
fail:
    server_stop(s);
    return e;
}

/* DRAINING: waits until every context has answered what it holds; s->mu is held. */
static void drain(struct server *s)
{
    int64_t t0 = gim_clock_mono_ns();
    s->state = SRV_DRAINING;
    /* A receive that is waiting ends now; one that just got a request works it first. */
    for (int i = 0; i < s->nctx; i++)
        if (atomic_load(&s->ctxs[i].state) == CTX_RECV)
            nng_aio_cancel(s->ctxs[i].aio);
    while (s->active > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += DRAIN_LOG_MS / 1000;
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts) != 0 && s->active > 0)
            log_info("stopping: waiting for requests in flight", "requests=%d writes=%d", s->active,
                     atomic_load(&s->writes));
    }
    log_info("drained", "duration_ms=%lld", (long long)((gim_clock_mono_ns() - t0) / 1000000));
}

void server_stop(struct server *s)
{
    if (!s)
        return;
    /*
     * Readers stop waiting for locks, then RUNNING -> DRAINING -> CLOSED. The
     * writer must still be running (writes in flight reach it and are
     * answered), and app_stop told it to wait for no lock either, so the
     * drain takes what the admitted requests themselves need, never
     * busy_timeout_ms: see docs/reliability.md ("Stopping").
     */
    busy_wait_cancel(&s->rbusy);
    pthread_mutex_lock(&s->mu);
    if (s->ctxs)
        drain(s);
    s->state = SRV_CLOSED;
    pthread_mutex_unlock(&s->mu);
    replier_stop(s);
    /* Every context is idle; a thread may still be returning from its last nng_ctx_send. */
    pthread_rwlock_wrlock(&s->calls);
    pthread_rwlock_unlock(&s->calls);
    /* CLOSED: every context is idle, so no writer job, worker or callback holds one. */
    listeners_halt(s->lst); /* before the close: see listener.h */
    if (s->sock_open)
        nng_close(s->sock);
    listeners_stop(s->lst); /* after the close: until then nng may call its pipe callback */
    for (int i = 0; s->ctxs && i < s->nctx; i++) {
        if (s->ctxs[i].aio) {
            nng_aio_stop(s->ctxs[i].aio);
            nng_aio_free(s->ctxs[i].aio);
        }
        if (s->ctxs[i].msg)
            nng_msg_free(s->ctxs[i].msg);
        request_reset(&s->ctxs[i].req);
    }
    pthread_mutex_lock(&s->qmu);
    s->wstop = true;
    for (int i = 0; s->workers && i < s->nworkers; i++)
        pthread_cond_signal(&s->workers[i].cv);
    pthread_mutex_unlock(&s->qmu);
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        store_close(w->ro);
        pthread_cond_destroy(&w->cv);
    }
    if (s->tls)
        nng_tls_config_free(s->tls);
    busy_wait_destroy(&s->rbusy);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    pthread_rwlock_destroy(&s->calls);
    pthread_cond_destroy(&s->idle_cv);
    free(s->ctxs);
    free(s->workers);
    free(s);
}

int server_bound(const struct server *s)
{
    return s && listeners_bound(s->lst) == (int)s->cfg->listen_count;
}
