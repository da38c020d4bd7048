#include "server.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "writer.h"

enum ctx_state { CTX_IDLE, CTX_RECV, CTX_WORK, CTX_SEND };

#define REQ_HEADER_BYTES 4 /* the request id nng's REQ puts before each request on the wire */

struct server_ctx {
    struct server *srv;
    struct worker *owner;
    nng_ctx ctx;
    nng_aio *aio;
    nng_msg *msg; /* the request being worked on; reused for the reply */
    _Atomic int state;
    struct request req;
    struct server_ctx *next; /* in the owner's ready queue */
};

struct worker {
    struct server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct server_ctx *head, *tail;
    struct store_conn *ro;
    bool stop;
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
    int bound;
    nng_tls_config *tls; /* for tls+tcp:// listeners; NULL until one needs it */
    _Atomic bool stopping;
};

static void ctx_recv(struct server_ctx *c)
{
    if (atomic_load(&c->srv->stopping)) {
        atomic_store(&c->state, CTX_IDLE);
        return;
    }
    atomic_store(&c->state, CTX_RECV);
    nng_ctx_recv(c->ctx, c->aio);
}

static void worker_push(struct worker *w, struct server_ctx *c)
{
    c->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = c;
    else
        w->head = c;
    w->tail = c;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* aio callback, on an nng thread: never blocks. */
static void ctx_cb(void *arg)
{
    struct server_ctx *c = arg;
    int rv = nng_aio_result(c->aio);
    switch (atomic_load(&c->state)) {
    case CTX_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
                atomic_store(&c->state, CTX_IDLE);
                return;
            }
            ctx_recv(c);
            return;
        }
        c->msg = nng_aio_get_msg(c->aio);
        atomic_store(&c->state, CTX_WORK);
        worker_push(c->owner, c);
        return;
    case CTX_SEND:
        if (rv != 0) {
            /* On failure the message is still ours. */
            nng_msg_free(nng_aio_get_msg(c->aio));
        }
        ctx_recv(c);
        return;
    default:
        return;
    }
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sends c->req's reply, reusing the request's nng message; any thread. */
static void ctx_reply(struct server_ctx *c)
{
    struct request *r = &c->req;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t dur = mono_ns() - r->start_ns;
    metrics_request(c->srv->metrics, r->type, gim_err_wire(r->code), dur);
    if (r->code != GIM_OK || log_enabled(LOG_LEVEL_DEBUG))
        log_write(
            r->code == GIM_OK || r->code == GIM_EUNAUTH || r->code == GIM_EBADREQ ? LOG_LEVEL_DEBUG
                                                                                  : LOG_LEVEL_INFO,
            "request", "request_id=%lld user=%lld device=%lld type=%d code=%s duration_us=%lld",
            (long long)r->request_id, (long long)r->sess.user_id, (long long)r->sess.device_id,
            r->type, gim_err_name(r->code), (long long)(dur / 1000));
    gim_err e = request_pack_output(r, &buf, &len);
    request_reset(r);
    nng_msg_clear(c->msg);
    if (e != GIM_OK || nng_msg_append(c->msg, buf, len) != 0) {
        free(buf);
        nng_msg_free(c->msg);
        c->msg = NULL;
        ctx_recv(c); /* the client's REQ resends after its timeout */
        return;
    }
    free(buf);
    nng_aio_set_msg(c->aio, c->msg);
    c->msg = NULL;
    atomic_store(&c->state, CTX_SEND);
    nng_ctx_send(c->ctx, c->aio);
}

/* The writer's completion: the commit is done, reply now. */
static void write_done(struct request *r)
{
    ctx_reply(r->sctx);
}

static void work(struct worker *w, struct server_ctx *c)
{
    struct request *r = &c->req;
    r->sctx = c;
    enum dispatch_next next =
        dispatch_begin(&c->srv->disp, r, nng_msg_body(c->msg), nng_msg_len(c->msg), w->ro);
    if (next == DISPATCH_WRITE)
        writer_submit(c->srv->writer, &r->job);
    else
        ctx_reply(c);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->head && w->stop)
            break;
        struct server_ctx *c = w->head;
        w->head = c->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        work(w, c);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Reads a whole PEM file into a NUL-terminated malloc'ed string. */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = 0;
        }
    }
    fclose(f);
    return buf;
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
    if (!(cert = read_pem(t->cert_file)) || !(key = read_pem(t->key_file))) {
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
        const char *url = s->cfg->listen[i];
        nng_listener l;
        int rv = nng_listener_create(&l, s->sock, url);
        if (rv == 0 && strncmp(url, "tls+", 4) == 0) {
            gim_err e = tls_setup(s, errbuf, errlen);
            if (e != GIM_OK)
                return e;
            rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, s->tls);
        }
        if (rv == 0)
            rv = nng_listener_start(l, 0);
        if (rv != 0) {
            snprintf(errbuf, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
            return GIM_EIO;
        }
        s->bound++;
        log_info("listening", "url=%s", url);
    }
    return GIM_OK;
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
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        if ((e = store_open(o->cfg, STORE_READER, &w->ro, errbuf, errlen)) != GIM_OK)
            return e;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(errbuf, errlen, "cannot start worker thread");
            return GIM_EINTERNAL;
        }
        w->started = true;
    }
    return GIM_OK;
}

static gim_err start_contexts(struct server *s, char *errbuf, size_t errlen)
{
    s->nctx = (int)s->cfg->contexts;
    s->ctxs = calloc((size_t)s->nctx, sizeof *s->ctxs);
    if (!s->ctxs)
        return GIM_ENOMEM;
    for (int i = 0; i < s->nctx; i++) {
        struct server_ctx *c = &s->ctxs[i];
        c->srv = s;
        c->owner = &s->workers[i % s->nworkers];
        int rv = nng_aio_alloc(&c->aio, ctx_cb, c);
        if (rv == 0)
            rv = nng_ctx_open(&c->ctx, s->sock);
        if (rv != 0) {
            snprintf(errbuf, errlen, "cannot open nng context: %s", nng_strerror(rv));
            return GIM_EIO;
        }
    }
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

static bool all_idle(struct server *s)
{
    for (int i = 0; i < s->nctx; i++) {
        int st = atomic_load(&s->ctxs[i].state);
        if (st == CTX_RECV)
            nng_aio_cancel(s->ctxs[i].aio);
        else if (st != CTX_IDLE)
            return false;
    }
    for (int i = 0; i < s->nctx; i++)
        if (atomic_load(&s->ctxs[i].state) != CTX_IDLE)
            return false;
    return true;
}

void server_stop(struct server *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    /* Contexts finish what they hold; a cancelled receive leaves them idle. */
    for (int tries = 0; s->ctxs && tries < 3000 && !all_idle(s); tries++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (s->sock_open)
        nng_close(s->sock);
    for (int i = 0; s->ctxs && i < s->nctx; i++) {
        if (s->ctxs[i].aio) {
            nng_aio_stop(s->ctxs[i].aio);
            nng_aio_free(s->ctxs[i].aio);
        }
        if (s->ctxs[i].msg)
            nng_msg_free(s->ctxs[i].msg);
        request_reset(&s->ctxs[i].req);
    }
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (w->started) {
            pthread_mutex_lock(&w->mu);
            w->stop = true;
            pthread_cond_signal(&w->cv);
            pthread_mutex_unlock(&w->mu);
            pthread_join(w->thread, NULL);
        }
        store_close(w->ro);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
    }
    if (s->tls)
        nng_tls_config_free(s->tls);
    free(s->ctxs);
    free(s->workers);
    free(s);
}

int server_bound(const struct server *s)
{
    return s && s->bound == (int)s->cfg->listen_count;
}
