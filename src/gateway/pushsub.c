#include "pushsub.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "log.h"
#include "proto.h"
#include "registry.h"

struct pushsub {
    struct gw *g;
    nng_socket sock;
    bool open;
    nng_aio *aio;
    char topic[80];
    size_t topic_len;
};

static void deliver(struct pushsub *p, const uint8_t *buf, size_t len)
{
    Pb__Delivery *d = pb__delivery__unpack(NULL, len, buf);
    uint8_t *out = NULL;
    if (!d || !d->output) {
        log_warn("undecodable delivery dropped", "bytes=%zu", len);
        goto done;
    }
    size_t olen = pb__output__get_packed_size(d->output);
    if (!(out = malloc(olen + 1)))
        goto done;
    pb__output__pack(d->output, out);
    bool session_end = d->output->type == PB__PACKAGE_TYPE__PT_SIGN_OUT;
    atomic_fetch_add(&gwm_global.pushes_received, 1);
    for (size_t i = 0; i < d->n_device_ids; i++) {
        struct conn *c = registry_get(p->g->reg, d->device_ids[i]);
        if (!c) {
            atomic_fetch_add(&gwm_global.pushes_unknown_device, 1);
            continue;
        }
        if (session_end)
            log_info("session ended by gim-logic; closing", "device_id=%lld conn=%llu",
                     (long long)d->device_ids[i], (unsigned long long)conn_id(c));
        conn_push(c, out, olen, session_end);
        conn_unref(c);
    }
done:
    free(out);
    if (d)
        pb__delivery__free_unpacked(d, NULL);
}

static void on_recv(void *arg)
{
    struct pushsub *p = arg;
    int rv = nng_aio_result(p->aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(p->aio);
        nng_aio_set_msg(p->aio, NULL);
        size_t len = nng_msg_len(m);
        const uint8_t *b = nng_msg_body(m);
        if (len >= p->topic_len && memcmp(b, p->topic, p->topic_len) == 0)
            deliver(p, b + p->topic_len, len - p->topic_len);
        nng_msg_free(m);
    }
    nng_recv_aio(p->sock, p->aio);
}

gim_err pushsub_open(struct pushsub **out, struct gw *g, const char *gateway_id, char *errbuf,
                     size_t errlen)
{
    const struct gw_config *cfg = g->cfg;
    struct pushsub *p = calloc(1, sizeof *p);
    int rv;
    *out = NULL;
    if (!p)
        return GIM_ENOMEM;
    p->g = g;
    p->topic_len = (size_t)snprintf(p->topic, sizeof p->topic, "%s\n", gateway_id);
    if ((rv = nng_sub0_open(&p->sock)) != 0) {
        snprintf(errbuf, errlen, "logic.publish: cannot open a SUB socket: %s", nng_strerror(rv));
        goto fail;
    }
    p->open = true;
    /* Bursts (a group message to many devices here) must not overflow the default 128. */
    nng_socket_set_int(p->sock, NNG_OPT_RECVBUF, 8192);
    nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 1000);
    if ((rv = nng_socket_set(p->sock, NNG_OPT_SUB_SUBSCRIBE, p->topic, p->topic_len)) != 0) {
        snprintf(errbuf, errlen, "logic.publish: cannot subscribe: %s", nng_strerror(rv));
        goto fail;
    }
    for (unsigned i = 0; i < cfg->logic.publish_count; i++) {
        if ((rv = nng_dial(p->sock, cfg->logic.publish[i], NULL, NNG_FLAG_NONBLOCK)) != 0) {
            snprintf(errbuf, errlen, "logic.publish[%u]: cannot dial %s: %s", i,
                     cfg->logic.publish[i], nng_strerror(rv));
            goto fail;
        }
        log_info("subscribed to gim-logic pushes", "url=%s topic=%s", cfg->logic.publish[i],
                 gateway_id);
    }
    if ((rv = nng_aio_alloc(&p->aio, on_recv, p)) != 0)
        goto fail;
    nng_recv_aio(p->sock, p->aio);
    *out = p;
    return GIM_OK;
fail:
    pushsub_close(p);
    return GIM_EIO;
}

void pushsub_close(struct pushsub *p)
{
    if (!p)
        return;
    if (p->open)
        nng_close(p->sock);
    if (p->aio)
        nng_aio_free(p->aio);
    free(p);
}
