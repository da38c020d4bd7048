#include "upstream.h"

#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "gw_metrics.h"
#include "log.h"
#include "proto.h"

enum { ST_IDLE = 0, ST_SEND, ST_RECV };

struct upstream {
    const struct gw_config *cfg;
    char gateway_id[65];
    nng_socket sock;
    bool sock_open;
    /* dialers and last_redial: upstream_open's, then the redialer thread's alone. */
    nng_dialer dialers[GWCFG_MAX_URLS];
    nng_time last_redial;
    /* Per dialer slot, for the redialer: the dialer's id (set before it starts), its pipes
     * up and the latest one's id (pipe_event), and when an answer last came (on_aio). */
    struct {
        atomic_uint id;
        atomic_int pipes;
        atomic_uint pipe;
        _Atomic nng_time answered;
    } links[GWCFG_MAX_URLS];
    pthread_mutex_t rmu; /* the redialer's wake-up: redial_wanted, redial_stop */
    pthread_cond_t rcv;
    bool redial_wanted, redial_stop, redialer_started;
    pthread_t redialer;
    atomic_long inflight;
    int64_t boot_id;
    atomic_bool lease_ok;
    atomic_llong last_answer_ms;
    pthread_mutex_t lmu; /* the lease thread's sleep */
    pthread_cond_t lcv;
    bool stopping, thread_started;
    pthread_t thread;
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The dialer slot a pipe belongs to, or -1 (a closed dialer's late pipe). */
static int link_of(struct upstream *up, nng_pipe p)
{
    unsigned id = (unsigned)nng_dialer_id(nng_pipe_dialer(p));
    for (unsigned i = 0; i < up->cfg->logic.requests_count; i++)
        if (atomic_load(&up->links[i].id) == id)
            return (int)i;
    return -1;
}

static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct upstream *up = arg;
    int i = link_of(up, p);
    if (i < 0)
        return;
    if (ev == NNG_PIPE_EV_ADD_POST)
        atomic_store(&up->links[i].pipe, (unsigned)nng_pipe_id(p));
    atomic_fetch_add(&up->links[i].pipes, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1);
}

/* Notes an answer on the link whose pipe brought it: a compare of pipe ids per link, no lock
 * (nng_pipe_dialer would take nng's global pipe lock on every reply). */
static void link_answered(struct upstream *up, nng_pipe p)
{
    unsigned id = (unsigned)nng_pipe_id(p);
    for (unsigned i = 0; i < up->cfg->logic.requests_count; i++)
        if (atomic_load(&up->links[i].pipe) == id) {
            atomic_store(&up->links[i].answered, nng_clock());
            return;
        }
}

static int dial_one(struct upstream *up, unsigned i)
{
    int rv = nng_dialer_create(&up->dialers[i], up->sock, up->cfg->logic.requests[i]);
    if (rv == 0) {
        atomic_store(&up->links[i].id, (unsigned)nng_dialer_id(up->dialers[i]));
        atomic_store(&up->links[i].pipes, 0);
        atomic_store(&up->links[i].pipe, 0);
        atomic_store(&up->links[i].answered, 0);
        nng_dialer_set_ms(up->dialers[i], NNG_OPT_RECONNMINT, 20);
        nng_dialer_set_ms(up->dialers[i], NNG_OPT_RECONNMAXT, 1000);
        /* Non-blocking: gim-logic may start after us; nng keeps trying. */
        rv = nng_dialer_start(up->dialers[i], NNG_FLAG_NONBLOCK);
    }
    return rv;
}

/*
 * A request timed out: the link may be one that nng 1.5.2 stopped redialing. New dialers
 * cost a reconnect; at most one round per second. Requests on the old pipes are resent by
 * nng REQ when their pipe closes. Runs on the redialer thread only.
 *
 * A link with a pipe up that answered within the last LINK_SILENT_MS (or two timeouts) is
 * left alone: gim-logic is slow, not gone, and a new connection would reach the same
 * process. Closing it would also cut the replies on their way: nng 1.5.2 reads a message in
 * two reads and issues the second from the first's callback without looking whether the
 * pipe was closed in between; when it was, that pipe's receive never completes, nng's one
 * reaper thread waits for it for good, and from then on no pipe is torn down, no dialer
 * whose pipe drops redials and nng_close never returns (SIGTERM hangs). docs/reliability.md,
 * "A reply on its way when a pipe closes"; tests/test_gimclient_it.c shows it within ~20
 * calls. A link silent that long carries no replies, so closing it is safe.
 */
#define LINK_SILENT_MS 1000
static void redial(struct upstream *up)
{
    nng_time now = nng_clock();
    if (up->last_redial && now - up->last_redial < 1000)
        return;
    up->last_redial = now;
    nng_time silent = 2 * (nng_time)up->cfg->logic.timeout_ms;
    if (silent < LINK_SILENT_MS)
        silent = LINK_SILENT_MS;
    unsigned redialed = 0;
    for (unsigned i = 0; i < up->cfg->logic.requests_count; i++) {
        if (atomic_load(&up->links[i].pipes) > 0 &&
            now - atomic_load(&up->links[i].answered) < silent)
            continue;
        nng_dialer_close(up->dialers[i]);
        int rv = dial_one(up, i);
        if (rv != 0)
            log_warn("redial failed", "url=%s err=\"%s\"", up->cfg->logic.requests[i],
                     nng_strerror(rv));
        redialed++;
    }
    if (!redialed)
        return;
    atomic_fetch_add(&gwm_global.upstream_redials, 1);
    log_warn("logic request timed out; links re-dialed", "links=%u", redialed);
}

/* The redialer: the one thread that closes and re-creates dialers. A timeout's callback runs
 * on one of nng's few task threads (4 on 2 cores), and nng's callbacks must not block:
 * closing a dialer takes the socket's and the transport's locks, and the teardown of its
 * pipes (on nng's reaper thread) waits for callbacks on those same task threads. When the
 * timeouts' callbacks redialed themselves, one closed the dialers while the others waited
 * for it on a mutex. At 15,000 connections (gim-gwbench, every request timing out as gim-logic
 * stopped) that ended with every task thread waiting: gdb showed one in nng_dialer_close and
 * three on the mutex, and the gateway hung for good, deaf to SIGTERM. (What
 * nng_dialer_close waited for, in a condition wait, was not found.) Now a callback only
 * raises a flag. */
static void *redialer_thread(void *arg)
{
    struct upstream *up = arg;
    pthread_mutex_lock(&up->rmu);
    while (!up->redial_stop) {
        if (!up->redial_wanted) {
            pthread_cond_wait(&up->rcv, &up->rmu);
            continue;
        }
        up->redial_wanted = false;
        pthread_mutex_unlock(&up->rmu);
        redial(up);
        pthread_mutex_lock(&up->rmu);
    }
    pthread_mutex_unlock(&up->rmu);
    return NULL;
}

static void redial_soon(struct upstream *up)
{
    pthread_mutex_lock(&up->rmu);
    up->redial_wanted = true;
    pthread_cond_signal(&up->rcv);
    pthread_mutex_unlock(&up->rmu);
}

static void finish(struct upreq *r, int rv, nng_msg *reply)
{
    struct upstream *up = r->up;
    if (r->ctx_open) {
        nng_ctx_close(r->ctx);
        r->ctx_open = false;
    }
    if (r->req) {
        nng_msg_free(r->req);
        r->req = NULL;
    }
    r->state = ST_IDLE;
    if (rv == 0) {
        gwm_latency((int64_t)(nng_clock() - r->started) * 1000);
        atomic_store(&up->last_answer_ms, wall_ms());
    } else {
        atomic_fetch_add(&gwm_global.upstream_errors, 1);
    }
    r->cb(r, rv, reply);
    atomic_fetch_sub(&up->inflight, 1);
}

static void attempt(struct upreq *r)
{
    struct upstream *up = r->up;
    nng_msg *m = NULL;
    int rv;
    if (r->ctx_open) {
        nng_ctx_close(r->ctx);
        r->ctx_open = false;
    }
    if ((rv = nng_ctx_open(&r->ctx, up->sock)) != 0 || (rv = nng_msg_dup(&m, r->req)) != 0) {
        finish(r, rv, NULL);
        return;
    }
    r->ctx_open = true;
    r->state = ST_SEND;
    nng_aio_set_msg(r->aio, m);
    nng_aio_set_timeout(r->aio, (nng_duration)up->cfg->logic.timeout_ms);
    nng_ctx_send(r->ctx, r->aio);
}

static void on_aio(void *arg)
{
    struct upreq *r = arg;
    int rv = nng_aio_result(r->aio);
    if (r->state == ST_SEND) {
        if (rv != 0) {
            nng_msg *m = nng_aio_get_msg(r->aio);
            nng_aio_set_msg(r->aio, NULL);
            if (m)
                nng_msg_free(m);
        } else {
            r->state = ST_RECV;
            nng_aio_set_timeout(r->aio, (nng_duration)r->up->cfg->logic.timeout_ms);
            nng_ctx_recv(r->ctx, r->aio);
            return;
        }
    } else if (rv == 0) {
        nng_msg *reply = nng_aio_get_msg(r->aio);
        nng_aio_set_msg(r->aio, NULL);
        link_answered(r->up, nng_msg_get_pipe(reply));
        finish(r, 0, reply);
        return;
    }
    if (rv == NNG_ETIMEDOUT) {
        atomic_fetch_add(&gwm_global.upstream_timeouts, 1);
        redial_soon(r->up);
    }
    if (rv != NNG_ECLOSED && r->left > 1) {
        r->left--;
        attempt(r);
        return;
    }
    finish(r, rv, NULL);
}

gim_err upreq_init(struct upreq *r, struct upstream *up, upreq_cb cb, void *arg)
{
    memset(r, 0, sizeof *r);
    r->up = up;
    r->cb = cb;
    r->arg = arg;
    return nng_aio_alloc(&r->aio, on_aio, r) == 0 ? GIM_OK : GIM_ENOMEM;
}

void upreq_fini(struct upreq *r)
{
    if (r->aio)
        nng_aio_free(r->aio);
    r->aio = NULL;
    if (r->ctx_open)
        nng_ctx_close(r->ctx);
    r->ctx_open = false;
    if (r->req)
        nng_msg_free(r->req);
    r->req = NULL;
}

void upstream_call(struct upreq *r, nng_msg *req)
{
    atomic_fetch_add(&r->up->inflight, 1);
    atomic_fetch_add(&gwm_global.upstream_requests, 1);
    r->req = req;
    r->left = r->up->cfg->logic.attempts;
    r->started = nng_clock();
    attempt(r);
}

gim_err upstream_build(struct upstream *up, int64_t user_id, int64_t device_id,
                       const char *client_addr, const uint8_t *input, size_t input_len,
                       nng_msg **out)
{
    /* GatewayRequest with field 5 (input) carried as the client's bytes, unparsed: a
     * length-delimited field is the same on the wire whether its bytes are a message or not. */
    Pb__GatewayRequest req = PB__GATEWAY_REQUEST__INIT;
    req.user_id = user_id;
    req.device_id = device_id;
    req.gateway_id = up->gateway_id;
    req.client_addr = (char *)client_addr;
    size_t head = pb__gateway_request__get_packed_size(&req);
    uint8_t tag[1 + 10];
    size_t tl = 0;
    tag[tl++] = (5 << 3) | 2;
    for (uint64_t n = input_len;; n >>= 7) {
        tag[tl++] = (uint8_t)((n & 0x7f) | (n >> 7 ? 0x80 : 0));
        if (!(n >> 7))
            break;
    }
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, head + tl + input_len) != 0)
        return GIM_ENOMEM;
    uint8_t *b = nng_msg_body(m);
    pb__gateway_request__pack(&req, b);
    memcpy(b + head, tag, tl);
    if (input_len)
        memcpy(b + head + tl, input, input_len);
    *out = m;
    return GIM_OK;
}

long upstream_inflight(struct upstream *up)
{
    return up ? atomic_load(&up->inflight) : 0;
}

bool upstream_lease_ok(struct upstream *up)
{
    return atomic_load(&up->lease_ok);
}

bool upstream_healthy(struct upstream *up)
{
    int64_t last = atomic_load(&up->last_answer_ms);
    return last && wall_ms() - last < 3 * (int64_t)up->cfg->logic.lease_seconds * 1000;
}

const char *upstream_gateway_id(struct upstream *up)
{
    return up->gateway_id;
}

/* ---- the lease ------------------------------------------------------------- */

struct sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rv;
    nng_msg *reply;
};

static void sync_cb(struct upreq *r, int rv, nng_msg *reply)
{
    struct sync_call *s = r->arg;
    pthread_mutex_lock(&s->mu);
    s->done = true;
    s->rv = rv;
    s->reply = reply;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* One lease request. Returns 0 when gim-logic answered (*code set), else an nng error. */
static int lease_once(struct upstream *up, int *code)
{
    struct sync_call s = {.done = false};
    struct upreq r;
    Pb__GatewayLeaseInput li = PB__GATEWAY_LEASE_INPUT__INIT;
    Pb__Input in = PB__INPUT__INIT;
    uint8_t data[16], *ibuf = NULL;
    nng_msg *m = NULL;
    int rv = NNG_ENOMEM;
    li.boot_id = up->boot_id;
    in.type = PB__PACKAGE_TYPE__PT_GATEWAY_LEASE;
    in.request_id = wall_ms();
    in.data.len = pb__gateway_lease_input__pack(&li, data);
    in.data.data = data;
    size_t ilen = pb__input__get_packed_size(&in);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    if (upreq_init(&r, up, sync_cb, &s) != GIM_OK)
        goto out;
    if (!(ibuf = malloc(ilen + 1)))
        goto out_req;
    pb__input__pack(&in, ibuf);
    if (upstream_build(up, 0, 0, "", ibuf, ilen, &m) != GIM_OK)
        goto out_req;
    upstream_call(&r, m);
    pthread_mutex_lock(&s.mu);
    while (!s.done)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    rv = s.rv;
    if (rv == 0) {
        Pb__Output *o = pb__output__unpack(NULL, nng_msg_len(s.reply), nng_msg_body(s.reply));
        *code = o ? o->code : PB__ERROR_CODE__EC_INTERNAL;
        if (o)
            pb__output__free_unpacked(o, NULL);
        nng_msg_free(s.reply);
    }
out_req:
    upreq_fini(&r);
out:
    free(ibuf);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    return rv;
}

static void lease_log(struct upstream *up, int rv, int code, bool first)
{
    bool ok = rv == 0 && code == PB__ERROR_CODE__EC_OK;
    bool was = atomic_exchange(&up->lease_ok, ok);
    atomic_fetch_add(ok ? &gwm_global.leases_ok : &gwm_global.leases_failed, 1);
    if (ok) {
        atomic_store(&gwm_global.last_lease_ok_ms, wall_ms());
        atomic_store(&gwm_global.lease_supported, 1);
        if (first || !was)
            log_info("lease accepted", "gateway_id=%s boot_id=%lld interval_s=%u", up->gateway_id,
                     (long long)up->boot_id, up->cfg->logic.lease_seconds);
    } else if (rv == 0) {
        /* An older gim-logic that does not know PT_GATEWAY_LEASE: heartbeats are then
         * forwarded to it (conn.c), which keeps devices online the old way. */
        atomic_store(&gwm_global.lease_supported, 0);
        if (first || was)
            log_warn("lease refused; forwarding client heartbeats instead", "gateway_id=%s code=%d",
                     up->gateway_id, code);
    } else {
        log_warn("lease got no reply", "gateway_id=%s err=\"%s\"", up->gateway_id,
                 nng_strerror(rv));
    }
}

static void *lease_thread(void *arg)
{
    struct upstream *up = arg;
    pthread_mutex_lock(&up->lmu);
    while (!up->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += up->cfg->logic.lease_seconds;
        while (!up->stopping && pthread_cond_timedwait(&up->lcv, &up->lmu, &ts) == 0)
            ;
        if (up->stopping)
            break;
        pthread_mutex_unlock(&up->lmu);
        int code = 0;
        int rv = lease_once(up, &code);
        lease_log(up, rv, code, false);
        pthread_mutex_lock(&up->lmu);
    }
    pthread_mutex_unlock(&up->lmu);
    return NULL;
}

gim_err upstream_start(struct upstream *up, volatile int *stop)
{
    int code = 0, rv;
    /* Clients are accepted only once gim-logic has answered: before that every request
     * would fail anyway, and the lease must be in place before sessions exist. */
    while ((rv = lease_once(up, &code)) != 0) {
        log_warn("waiting for gim-logic", "url=%s err=\"%s\"", up->cfg->logic.requests[0],
                 nng_strerror(rv));
        if (stop && *stop)
            return GIM_EUNAVAILABLE;
    }
    lease_log(up, rv, code, true);
    if (pthread_create(&up->thread, NULL, lease_thread, up) != 0)
        return GIM_ENOMEM;
    up->thread_started = true;
    return GIM_OK;
}

gim_err upstream_open(struct upstream **out, const struct gw_config *cfg, const char *gateway_id,
                      char *errbuf, size_t errlen)
{
    struct upstream *up = calloc(1, sizeof *up);
    int rv;
    *out = NULL;
    if (!up)
        return GIM_ENOMEM;
    up->cfg = cfg;
    snprintf(up->gateway_id, sizeof up->gateway_id, "%s", gateway_id);
    pthread_mutex_init(&up->lmu, NULL);
    pthread_cond_init(&up->lcv, NULL);
    pthread_mutex_init(&up->rmu, NULL);
    pthread_cond_init(&up->rcv, NULL);
    /* A fresh id per process start: gim-logic signs out the sessions of an earlier boot. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    up->boot_id = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if ((rv = nng_req0_open(&up->sock)) != 0) {
        snprintf(errbuf, errlen, "logic: cannot open a REQ socket: %s", nng_strerror(rv));
        upstream_close(up);
        return GIM_EIO;
    }
    up->sock_open = true;
    nng_pipe_notify(up->sock, NNG_PIPE_EV_ADD_POST, pipe_event, up);
    nng_pipe_notify(up->sock, NNG_PIPE_EV_REM_POST, pipe_event, up);
    for (unsigned i = 0; i < cfg->logic.requests_count; i++) {
        if ((rv = dial_one(up, i)) != 0) {
            snprintf(errbuf, errlen, "logic.requests[%u]: cannot dial %s: %s", i,
                     cfg->logic.requests[i], nng_strerror(rv));
            upstream_close(up);
            return GIM_ECONFIG;
        }
        log_info("dialing gim-logic", "url=%s", cfg->logic.requests[i]);
    }
    if (pthread_create(&up->redialer, NULL, redialer_thread, up) != 0) {
        snprintf(errbuf, errlen, "logic: cannot start the redial thread");
        upstream_close(up);
        return GIM_ENOMEM;
    }
    up->redialer_started = true;
    *out = up;
    return GIM_OK;
}

/* Sets *stop under mu, wakes the thread waiting on cv and waits for it to end. */
static void stop_thread(pthread_t t, pthread_mutex_t *mu, pthread_cond_t *cv, bool *stop)
{
    pthread_mutex_lock(mu);
    *stop = true;
    pthread_cond_signal(cv);
    pthread_mutex_unlock(mu);
    pthread_join(t, NULL);
}

void upstream_close(struct upstream *up)
{
    if (!up)
        return;
    if (up->thread_started)
        stop_thread(up->thread, &up->lmu, &up->lcv, &up->stopping);
    if (up->redialer_started)
        stop_thread(up->redialer, &up->rmu, &up->rcv, &up->redial_stop);
    if (up->sock_open)
        nng_close(up->sock); /* requests still in flight end with NNG_ECLOSED */
    while (atomic_load(&up->inflight) > 0)
        nng_msleep(1); /* their callbacks still use up */
    pthread_mutex_destroy(&up->lmu);
    pthread_cond_destroy(&up->lcv);
    pthread_mutex_destroy(&up->rmu);
    pthread_cond_destroy(&up->rcv);
    free(up);
}
