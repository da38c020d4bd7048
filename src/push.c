#include "push.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/*
 * What the push thread publishes for one push_deliver() call: a copy of the
 * sessions and of the Output, in one allocation.
 */
struct push_job {
    struct push_job *next;
    size_t bytes; /* the whole allocation, for the queue's bound */
    size_t n;
    int64_t exclude_device;
    Pb__Output out; /* data and message point into this allocation */
    struct session sessions[];
};

struct push {
    nng_socket sock;
    nng_aio *aio; /* the push thread's, for every send */
    _Atomic uint64_t published;
    _Atomic uint64_t dropped;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a job was queued, or stopping */
    pthread_cond_t idle_cv; /* the queue ran empty (push_flush) */
    struct push_job *head, *tail;
    size_t queued_bytes;
    bool busy; /* the thread is publishing a job it took off the queue */
    bool held; /* push_hold(): the thread takes no job (tests) */
    bool stopping, started;
};

/*
 * The queue's bound. Publishing never blocks the writer: past this, a push
 * is dropped (counted, logged), as PUB itself drops for a slow subscriber;
 * sync stays the source of truth. 64 MiB is ~300 fan-outs to 20,000 devices.
 */
#define PUSH_QUEUE_MAX_BYTES (64u << 20)
#define PUSH_NICE            19 /* see push_main */

/* One Delivery to one gateway: topic "<gateway>\n" + encoded Delivery. */
static void publish(struct push *p, const char *gateway, int64_t *devices, size_t n,
                    const Pb__Output *out)
{
    Pb__Delivery d = PB__DELIVERY__INIT;
    d.n_device_ids = n;
    d.device_ids = devices;
    d.output = (Pb__Output *)out;
    size_t tlen = strlen(gateway);
    size_t len = pb__delivery__get_packed_size(&d);
    nng_msg *m;
    if (nng_msg_alloc(&m, tlen + 1 + len) != 0)
        return;
    uint8_t *body = nng_msg_body(m);
    memcpy(body, gateway, tlen);
    body[tlen] = '\n';
    pb__delivery__pack(&d, body + tlen + 1);
    /*
     * PUB never blocks: a slow subscriber loses messages, it never slows us.
     * One aio for every send: nng_sendmsg() allocates one per call, whose id
     * costs a getrandom() (most of this thread's time in a 20,000-gateway
     * fan-out).
     */
    nng_aio_set_msg(p->aio, m);
    nng_send_aio(p->sock, p->aio);
    nng_aio_wait(p->aio);
    if (nng_aio_result(p->aio) != 0)
        nng_msg_free(m);
    else
        atomic_fetch_add_explicit(&p->published, 1, memory_order_relaxed);
}

/* FNV-1a: gateway ids are short strings chosen by our own gateways. */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/*
 * Groups a job's sessions by gateway with a hash table (linear in the
 * sessions; it was sessions x gateways, a second per room send of 20,000
 * devices on 20,000 gateways) and publishes one Delivery per gateway, in
 * the order each gateway first appears, each with its devices in order.
 */
static void publish_job(struct push *p, const struct push_job *j)
{
    size_t cap = 16;
    while (cap < 2 * j->n)
        cap *= 2;
    size_t *slot = malloc(cap * sizeof *slot);    /* table: 1 + index of the gateway's first */
    size_t *next = malloc(j->n * sizeof *next);   /* per session: 1 + index of the next one */
    size_t *last = malloc(j->n * sizeof *last);   /* per first session: its group's last */
    size_t *order = malloc(j->n * sizeof *order); /* first sessions, in order */
    int64_t *devices = malloc(j->n * sizeof *devices);
    size_t groups = 0;
    if (!slot || !next || !last || !order || !devices) {
        log_warn("push dropped", "devices=%zu reason=\"out of memory\"", j->n);
        goto out;
    }
    memset(slot, 0, cap * sizeof *slot);
    for (size_t i = 0; i < j->n; i++) {
        next[i] = 0;
        if (j->sessions[i].device_id == j->exclude_device)
            continue;
        const char *gw = j->sessions[i].gateway_id;
        size_t h = (size_t)hash_str(gw) & (cap - 1);
        while (slot[h] && strcmp(j->sessions[slot[h] - 1].gateway_id, gw) != 0)
            h = (h + 1) & (cap - 1);
        if (!slot[h]) {
            slot[h] = i + 1;
            last[i] = i;
            order[groups++] = i;
        } else {
            size_t first = slot[h] - 1;
            next[last[first]] = i + 1;
            last[first] = i;
        }
    }
    for (size_t g = 0; g < groups; g++) {
        size_t k = 0;
        for (size_t i = order[g] + 1; i; i = next[i - 1])
            devices[k++] = j->sessions[i - 1].device_id;
        publish(p, j->sessions[order[g]].gateway_id, devices, k, &j->out);
    }
out:
    free(slot);
    free(next);
    free(last);
    free(order);
    free(devices);
}

static void *push_main(void *arg)
{
    struct push *p = arg;
    /*
     * Far below the writer and the workers: a fan-out to 20,000 gateways
     * keeps this thread busy for tens of ms, and on a small machine it took
     * the CPU from the sends it announces (unrelated 1:1 sends during back
     * to back room sends to 20,000 gateways, 2 cores: p99 67-96 ms at nice
     * 0 or 10, 16-21 ms at 19; docs/benchmarks.md). Pushes are best effort
     * and sync is the truth: a starved push queue fills and drops, counted.
     * Linux applies nice per thread.
     */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PUSH_NICE) != 0)
        log_debug("push thread keeps its priority", "error=\"%s\"", strerror(errno));
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while ((!p->head || p->held) && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        struct push_job *j = p->head;
        if (!j)
            break; /* stopping, and everything queued before is published */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued_bytes -= j->bytes;
        p->busy = true;
        pthread_mutex_unlock(&p->mu);
        publish_job(p, j);
        free(j);
        pthread_mutex_lock(&p->mu);
        p->busy = false;
        if (!p->head)
            pthread_cond_broadcast(&p->idle_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

gim_err push_open(struct push **out, const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    int rv;
    struct push *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return GIM_ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->idle_cv, NULL);
    if ((rv = nng_pub0_open(&p->sock)) != 0) {
        snprintf(errbuf, errlen, "cannot open PUB socket: %s", nng_strerror(rv));
        push_close(p);
        return GIM_EIO;
    }
    /*
     * nng's PUB queues 16 messages per subscriber by default and drops beyond:
     * a gateway's scheduling hiccup at thousands of pushes/s lost pushes
     * (2,000 connections at ~9,000 msgs/s: 24,385 of 45,337 pushes read with
     * 16, 49,222 of 49,222 with 1,024; docs/benchmarks.md).
     */
    nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, 1024);
    for (unsigned i = 0; i < cfg->publish_count; i++) {
        if ((rv = nng_listen(p->sock, cfg->publish[i], NULL, 0)) != 0) {
            snprintf(errbuf, errlen, "cannot publish on %s: %s", cfg->publish[i], nng_strerror(rv));
            push_close(p);
            return GIM_EIO;
        }
        log_info("publishing", "url=%s", cfg->publish[i]);
    }
    if ((rv = nng_aio_alloc(&p->aio, NULL, NULL)) != 0) {
        snprintf(errbuf, errlen, "cannot allocate the push aio: %s", nng_strerror(rv));
        push_close(p);
        return GIM_ENOMEM;
    }
    if (pthread_create(&p->thread, NULL, push_main, p) != 0) {
        snprintf(errbuf, errlen, "cannot start the push thread");
        push_close(p);
        return GIM_EINTERNAL;
    }
    p->started = true;
    *out = p;
    return GIM_OK;
}

void push_close(struct push *p)
{
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stopping = true;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL); /* publishes what was queued first */
    }
    nng_close(p->sock);
    if (p->aio)
        nng_aio_free(p->aio);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->idle_cv);
    free(p);
}

void push_deliver(struct push *p, const struct session *sessions, size_t n, int64_t exclude_device,
                  const Pb__Output *out)
{
    if (!p || n == 0)
        return;
    bool has_msg = out->message && *out->message;
    size_t msg_len = has_msg ? strlen(out->message) + 1 : 0;
    size_t bytes = sizeof(struct push_job) + n * sizeof(struct session) + out->data.len + msg_len;
    struct push_job *j = NULL;

    pthread_mutex_lock(&p->mu);
    bool room = p->queued_bytes + bytes <= PUSH_QUEUE_MAX_BYTES && !p->stopping;
    pthread_mutex_unlock(&p->mu);
    if (!room || !(j = malloc(bytes))) {
        uint64_t d = atomic_fetch_add_explicit(&p->dropped, 1, memory_order_relaxed);
        if (d % 1000 == 0) /* the first, then one line per thousand */
            log_warn("push dropped", "devices=%zu dropped_total=%llu reason=\"%s\"", n,
                     (unsigned long long)d + 1, room ? "out of memory" : "push queue full");
        return;
    }
    j->next = NULL;
    j->bytes = bytes;
    j->n = n;
    j->exclude_device = exclude_device;
    memcpy(j->sessions, sessions, n * sizeof *sessions);
    uint8_t *tail = (uint8_t *)(j->sessions + n);
    j->out = *out;
    j->out.data.data = out->data.len ? tail : NULL;
    if (out->data.len)
        memcpy(tail, out->data.data, out->data.len);
    if (has_msg) {
        j->out.message = (char *)tail + out->data.len;
        memcpy(j->out.message, out->message, msg_len);
    }

    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued_bytes += bytes;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void push_hold(struct push *p, bool hold)
{
    pthread_mutex_lock(&p->mu);
    p->held = hold;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void push_flush(struct push *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->head || p->busy)
        pthread_cond_wait(&p->idle_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

uint64_t push_published(const struct push *p)
{
    return p ? atomic_load_explicit(&((struct push *)p)->published, memory_order_relaxed) : 0;
}

uint64_t push_dropped(const struct push *p)
{
    return p ? atomic_load_explicit(&((struct push *)p)->dropped, memory_order_relaxed) : 0;
}

void push_msg_init(struct push_msg *m)
{
    m->ss = m->stack;
    m->cap = PUSH_MSG_SESSIONS;
    m->n = 0;
    m->buf = NULL;
    m->buf_cap = 0;
}

void push_msg_free(struct push_msg *m)
{
    if (m->ss != m->stack)
        free(m->ss);
    free(m->buf);
    push_msg_init(m);
}

static void msg_lookup(struct push_msg *m, struct presence *pr, int64_t id,
                       size_t (*lookup)(struct presence *, int64_t, struct session *, size_t))
{
    size_t n = lookup(pr, id, m->ss, m->cap);
    if (n > m->cap) {
        struct session *grown = malloc(n * sizeof *grown);
        if (grown) {
            if (m->ss != m->stack)
                free(m->ss);
            m->ss = grown;
            m->cap = n;
            n = lookup(pr, id, m->ss, m->cap);
        }
        /* else: push to those we have rather than to none */
    }
    m->n = n < m->cap ? n : m->cap;
}

void push_msg_user(struct push_msg *m, struct presence *pr, int64_t user_id)
{
    msg_lookup(m, pr, user_id, presence_user_sessions);
}

/* The sessions of ss[0..n) whose user (by_room: room) is id into m. */
static void msg_of(struct push_msg *m, const struct session *ss, size_t n, bool by_room, int64_t id)
{
    m->n = 0;
    for (size_t i = 0; i < n; i++) {
        if ((by_room ? ss[i].room_id : ss[i].user_id) != id)
            continue;
        if (m->n == m->cap) {
            struct session *grown = malloc(2 * m->cap * sizeof *grown);
            if (!grown)
                return; /* push to those we have rather than to none */
            memcpy(grown, m->ss, m->n * sizeof *grown);
            if (m->ss != m->stack)
                free(m->ss);
            m->ss = grown;
            m->cap *= 2;
        }
        m->ss[m->n++] = ss[i];
    }
}

void push_msg_user_of(struct push_msg *m, const struct session *ss, size_t n, int64_t user_id)
{
    msg_of(m, ss, n, false, user_id);
}

void push_msg_room(struct push_msg *m, struct presence *pr, int64_t room_id)
{
    msg_lookup(m, pr, room_id, presence_room_sessions);
}

void push_msg_room_of(struct push_msg *m, const struct session *ss, size_t n, int64_t room_id)
{
    msg_of(m, ss, n, true, room_id ? room_id : -1); /* room 0 is no room */
}

void push_msg_send(struct push *p, struct push_msg *m, int64_t exclude_device,
                   const Pb__Message *msg)
{
    size_t i = 0;
    while (i < m->n && m->ss[i].device_id == exclude_device)
        i++;
    if (i == m->n)
        return;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = (Pb__Message *)msg; /* only read: packing does not change it */
    size_t len = pb__message_send__get_packed_size(&ms);
    if (len > m->buf_cap || !m->buf) {
        uint8_t *grown = realloc(m->buf, len ? len : 1);
        if (!grown) {
            log_warn("push dropped", "receiver=%" PRId64 " sessions=%zu reason=\"out of memory\"",
                     msg->receiver_id, m->n);
            return;
        }
        m->buf = grown;
        m->buf_cap = len ? len : 1;
    }
    pb__message_send__pack(&ms, m->buf);
    Pb__Output out = PB__OUTPUT__INIT;
    out.type = PB__PACKAGE_TYPE__PT_MESSAGE;
    out.data.data = m->buf;
    out.data.len = len;
    push_deliver(p, m->ss, m->n, exclude_device, &out);
}
