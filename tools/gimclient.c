#include "gimclient.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct gim_client {
    nng_socket sock;
    bool open;
    char *url;
    int timeout_ms;
    int attempts;
};

static int redial(struct gim_client *c)
{
    int rv;
    if (c->open)
        nng_close(c->sock);
    c->open = false;
    if ((rv = nng_req0_open(&c->sock)) != 0)
        return rv;
    c->open = true;
    nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, c->timeout_ms);
    nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, c->timeout_ms);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500);
    /* Non-blocking dial: the server may still be starting; nng keeps trying. */
    return nng_dial(c->sock, c->url, NULL, NNG_FLAG_NONBLOCK);
}

gim_err client_open(struct gim_client **out, const char *url, int timeout_ms, int attempts)
{
    struct gim_client *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c || !(c->url = strdup(url))) {
        free(c);
        return GIM_ENOMEM;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    c->attempts = attempts > 0 ? attempts : 1;
    if (redial(c) != 0) {
        client_close(c);
        return GIM_EIO;
    }
    *out = c;
    return GIM_OK;
}

void client_close(struct gim_client *c)
{
    if (!c)
        return;
    if (c->open)
        nng_close(c->sock);
    free(c->url);
    free(c);
}

gim_err client_call_raw(struct gim_client *c, const void *buf, size_t len, uint8_t **reply,
                        size_t *rlen)
{
    for (int attempt = 0; attempt < c->attempts; attempt++) {
        if (attempt > 0 && redial(c) != 0)
            continue;
        if (nng_send(c->sock, (void *)buf, len, 0) != 0)
            continue;
        void *r = NULL;
        size_t n = 0;
        if (nng_recv(c->sock, &r, &n, NNG_FLAG_ALLOC) != 0)
            continue;
        *reply = malloc(n ? n : 1);
        if (*reply)
            memcpy(*reply, r, n);
        nng_free(r, n);
        *rlen = n;
        return *reply ? GIM_OK : GIM_ENOMEM;
    }
    return GIM_EIO;
}

gim_err client_request(struct gim_client *c, const struct client_conn *conn, int type,
                       int64_t request_id, const ProtobufCMessage *data, Pb__Output **out)
{
    gim_err e;
    Pb__Input in = PB__INPUT__INIT;
    Pb__GatewayRequest req = PB__GATEWAY_REQUEST__INIT;
    uint8_t *dbuf = NULL, *buf = NULL, *reply = NULL;
    size_t rlen = 0;
    *out = NULL;
    in.type = (Pb__PackageType)type;
    in.request_id = request_id;
    if (data) {
        in.data.len = protobuf_c_message_get_packed_size(data);
        if (!(dbuf = malloc(in.data.len + 1))) {
            e = GIM_ENOMEM;
            goto out;
        }
        protobuf_c_message_pack(data, dbuf);
        in.data.data = dbuf;
    }
    req.user_id = conn->user_id;
    req.device_id = conn->device_id;
    req.gateway_id = (char *)(conn->gateway_id ? conn->gateway_id : "");
    req.client_addr = (char *)(conn->client_addr ? conn->client_addr : "");
    req.input = &in;
    size_t len = pb__gateway_request__get_packed_size(&req);
    if (!(buf = malloc(len + 1))) {
        e = GIM_ENOMEM;
        goto out;
    }
    pb__gateway_request__pack(&req, buf);
    if ((e = client_call_raw(c, buf, len, &reply, &rlen)) != GIM_OK)
        goto out;
    *out = pb__output__unpack(NULL, rlen, reply);
    e = *out ? GIM_OK : GIM_EBADREQ;
out:
    free(dbuf);
    free(buf);
    free(reply);
    return e;
}
