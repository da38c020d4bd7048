#include "push.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

struct push {
    nng_socket sock;
    _Atomic uint64_t published;
};

gim_err push_open(struct push **out, const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    int rv;
    struct push *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return GIM_ENOMEM;
    if ((rv = nng_pub0_open(&p->sock)) != 0) {
        snprintf(errbuf, errlen, "cannot open PUB socket: %s", nng_strerror(rv));
        free(p);
        return GIM_EIO;
    }
    /* nng's PUB queues 16 messages per subscriber by default and drops beyond: a
     * gateway's scheduling hiccup at thousands of pushes/s would lose pushes. */
    nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, 1024);
    for (unsigned i = 0; i < cfg->publish_count; i++) {
        if ((rv = nng_listen(p->sock, cfg->publish[i], NULL, 0)) != 0) {
            snprintf(errbuf, errlen, "cannot publish on %s: %s", cfg->publish[i], nng_strerror(rv));
            push_close(p);
            return GIM_EIO;
        }
        log_info("publishing", "url=%s", cfg->publish[i]);
    }
    *out = p;
    return GIM_OK;
}

void push_close(struct push *p)
{
    if (!p)
        return;
    nng_close(p->sock);
    free(p);
}

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
    /* PUB never blocks: a slow subscriber loses messages, it never slows us. */
    if (nng_sendmsg(p->sock, m, NNG_FLAG_NONBLOCK) != 0)
        nng_msg_free(m);
    else
        atomic_fetch_add_explicit(&p->published, 1, memory_order_relaxed);
}

void push_deliver(struct push *p, const struct session *sessions, size_t n, int64_t exclude_device,
                  const Pb__Output *out)
{
    if (!p || n == 0)
        return;
    int64_t stackbuf[64];
    int64_t *devices = n <= 64 ? stackbuf : malloc(n * sizeof *devices);
    char *done = calloc(n, 1); /* sessions already published with an earlier gateway */
    if (!devices || !done)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (done[i] || sessions[i].device_id == exclude_device)
            continue;
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            if (done[j] || sessions[j].device_id == exclude_device ||
                strcmp(sessions[j].gateway_id, sessions[i].gateway_id) != 0)
                continue;
            done[j] = 1;
            devices[k++] = sessions[j].device_id;
        }
        publish(p, sessions[i].gateway_id, devices, k, out);
    }
out:
    if (devices != stackbuf)
        free(devices);
    free(done);
}

uint64_t push_published(const struct push *p)
{
    return p ? atomic_load_explicit(&((struct push *)p)->published, memory_order_relaxed) : 0;
}
