#include "gimclient.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textfile.h"

struct gim_client {
    nng_socket sock;
    bool open;
    char *url;
    int timeout_ms;
    int attempts;
    nng_tls_config *tls;
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
    nng_dialer d;
    if ((rv = nng_dialer_create(&d, c->sock, c->url)) != 0)
        return rv;
    if (c->tls && (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, c->tls)) != 0)
        return rv;
    return nng_dialer_start(d, NNG_FLAG_NONBLOCK);
}

static int tls_setup(struct gim_client *c, const struct client_tls *t)
{
    int rv = nng_tls_config_alloc(&c->tls, NNG_TLS_MODE_CLIENT);
    if (rv == 0 && t->server_name)
        rv = nng_tls_config_server_name(c->tls, t->server_name);
    if (rv == 0 && t->ca_file)
        rv = nng_tls_config_ca_file(c->tls, t->ca_file);
    if (rv == 0 && t->cert_file && t->key_file) {
        char *cert = textfile_slurp(t->cert_file, TEXTFILE_MAX_PEM_BYTES);
        char *key = textfile_slurp(t->key_file, TEXTFILE_MAX_PEM_BYTES);
        rv = cert && key ? nng_tls_config_own_cert(c->tls, cert, key, NULL) : NNG_EINVAL;
        free(cert);
        free(key);
    }
    return rv;
}

gim_err client_open(struct gim_client **out, const char *url, int timeout_ms, int attempts)
{
    return client_open_tls(out, url, timeout_ms, attempts, NULL);
}

gim_err client_open_tls(struct gim_client **out, const char *url, int timeout_ms, int attempts,
                        const struct client_tls *tls)
{
    struct gim_client *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c || !(c->url = strdup(url))) {
        free(c);
        return GIM_ENOMEM;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    c->attempts = attempts > 0 ? attempts : 1;
    if ((tls && tls_setup(c, tls) != 0) || redial(c) != 0) {
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
    if (c->tls)
        nng_tls_config_free(c->tls);
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
