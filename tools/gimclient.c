#include "gimclient.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textfile.h"

/*
 * One nng socket and the pipes its callbacks counted. Apart from the client
 * because a socket may outlive it: a parked socket's callbacks still run.
 */
struct client_sock {
    nng_socket sock;
    atomic_int pipes; /* added (ADD_POST) and not yet removed (REM_POST) */
    bool late;        /* a call timed out while a pipe was up: its reply may still come */
};

struct gim_client {
    struct client_sock *cs; /* NULL only before the first dial */
    char *url;
    int timeout_ms;
    int attempts;
    nng_tls_config *tls;
};

static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct client_sock *cs = arg;
    (void)p;
    atomic_fetch_add(&cs->pipes, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1);
}

/*
 * Lets go of a socket. nng 1.5.2 reads a message in two reads and issues the
 * second from the first's callback without looking whether the pipe was
 * closed in between; when it was, the pipe's receive never completes and
 * nng's one reaper thread waits for it for good, and with it every later
 * nng_close and every redial in the process (docs/reliability.md, "A reply on
 * its way when a pipe closes"). So a socket on which a reply may still be
 * arriving is not closed but parked: left open, and its struct left to nng's
 * callbacks (a few per process, and only after timeouts on a live link). A
 * socket without a pipe has nothing arriving: closed.
 */
static void sock_release(struct client_sock *cs)
{
    if (!cs || (cs->late && atomic_load(&cs->pipes) > 0))
        return;
    nng_close(cs->sock);
    free(cs);
}

/* Gives the client a new socket dialing c->url (non-blocking), releasing the old one. */
static int redial(struct gim_client *c)
{
    int rv;
    struct client_sock *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NNG_ENOMEM;
    if ((rv = nng_req0_open(&cs->sock)) != 0) {
        free(cs);
        return rv;
    }
    sock_release(c->cs);
    c->cs = cs;
    nng_pipe_notify(cs->sock, NNG_PIPE_EV_ADD_POST, pipe_event, cs);
    nng_pipe_notify(cs->sock, NNG_PIPE_EV_REM_POST, pipe_event, cs);
    nng_socket_set_ms(cs->sock, NNG_OPT_RECVTIMEO, c->timeout_ms);
    nng_socket_set_ms(cs->sock, NNG_OPT_SENDTIMEO, c->timeout_ms);
    nng_socket_set_ms(cs->sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(cs->sock, NNG_OPT_RECONNMAXT, 500);
    /* Non-blocking dial: the server may still be starting; nng keeps trying. */
    nng_dialer d;
    if ((rv = nng_dialer_create(&d, cs->sock, c->url)) != 0)
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
    sock_release(c->cs);
    if (c->tls)
        nng_tls_config_free(c->tls);
    free(c->url);
    free(c);
}

gim_err client_call_raw(struct gim_client *c, const void *buf, size_t len, uint8_t **reply,
                        size_t *rlen)
{
    for (int attempt = 0; attempt < c->attempts; attempt++) {
        /*
         * After a timeout: with a pipe up, the link works and the server is
         * slow, so the same socket sends again (nng REQ drops a reply to a try
         * it gave up on). Without one, nng 1.5.2's dialer may have stopped
         * redialing: a new socket.
         */
        if (attempt > 0 && atomic_load(&c->cs->pipes) == 0 && redial(c) != 0)
            continue;
        if (nng_send(c->cs->sock, (void *)buf, len, 0) != 0)
            continue;
        void *r = NULL;
        size_t n = 0;
        if (nng_recv(c->cs->sock, &r, &n, NNG_FLAG_ALLOC) != 0) {
            if (atomic_load(&c->cs->pipes) > 0)
                c->cs->late = true; /* its reply may still come: see sock_release */
            continue;
        }
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
