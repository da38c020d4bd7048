#include "api.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "apiroute.h"
#include "clock.h"
#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "metrics.h"
#include "textfile.h"

/* How long a client may take to send a body it announced, before the connection is dropped. */
#define BODY_TIMEOUT_MS 10000

/* How long an answer given while stopping may take to reach the client's socket. The answer
 * is a few hundred bytes to a client that waits for it, so the kernel takes it at once; the
 * bound only keeps a client that stopped reading long ago from holding up the stop. */
#define DRAIN_TIMEOUT_MS 2000

/* The gateway_id of API requests in logs and in the envelope (operator requests need no session).
 */
#define API_GATEWAY "http-api"

/* One HTTP request, from nng's callback to the answer. */
struct api_call {
    struct api *api;
    nng_aio *haio;       /* nng's handler aio: finished with the answer, never before */
    nng_aio *rx;         /* writes "100 Continue" (continuing), then reads the body */
    nng_http_conn *conn; /* nng's, borrowed (answers given while stopping take it: deliver()) */
    nng_http_req *hreq;  /* nng's, borrowed (likewise) */
    bool continuing;
    struct api_call *rprev, *rnext; /* in api.reading while rx is busy */
    const struct apiroute *route;
    struct apiroute_in in;
    char *uri;     /* a copy of the request URI, cut at '?' (in.query points after it) */
    uint8_t *body; /* the body, body_len bytes */
    size_t body_len;
    struct request req;
    struct api_call *next; /* in the workers' queue */
};

/*
 * An answer given while stopping, which gim-logic writes itself instead of
 * nng's server: nng_http_server_stop() closes every connection at once, also
 * one whose answer nng has not written yet, so the client would see the
 * connection drop instead of its 503 (CI saw it: a kick answered while
 * stopping never reached the test). The connection is taken from the server
 * (nng_http_hijack), the answer is written with an aio of ours, and the call
 * stays in `active` until the write is done, so api_stop() stops the server
 * only after every answer left. The records are freed by api_stop(), after
 * the last write: an aio cannot be freed from its own callback.
 */
struct api_drain {
    struct api *api;
    nng_aio *aio;
    nng_http_conn *conn; /* ours since the hijack: closed and freed by api_stop() */
    nng_http_req *req;   /* likewise (a hijacker disposes of the request, http.h) */
    nng_http_res *res;
    struct api_drain *next;
};

/*
 * Like http.c: nng frees the handler (and calls its destructor) when the
 * server is reaped, which may be after api_stop() returned, so the struct is
 * reference counted (the owner plus the handler), and a callback that starts
 * after api_close() finds `closed` and answers 503 without touching
 * anything else.
 */
struct api {
    pthread_mutex_t mu;  /* guards refs, active, closed, the queue and stop */
    pthread_cond_t idle; /* active reached 0 */
    pthread_cond_t work; /* the queue has a call, or stop */
    int refs;
    int active; /* calls admitted and not yet answered, plus answers being drained */
    bool closed;
    struct api_drain *drained; /* every answer written while stopping: api_stop() frees them */
    bool stop;                 /* workers: exit */
    struct api_call *head, *tail;
    struct api_call *reading; /* calls waiting for their body: api_stop() aborts them */
    pthread_t *threads;
    struct store_conn **ro;
    int nworkers, created, started;
    _Atomic int writes; /* writes at the writer now (capped at writer.max_queued) */
    int max_writes;
    struct dispatch disp;
    struct writer *writer;
    nng_http_server *srv;
    nng_tls_config *tls;
    const struct gim_config *cfg;
    struct metrics *metrics;
};

static void api_unref(void *arg)
{
    struct api *a = arg;
    pthread_mutex_lock(&a->mu);
    int left = --a->refs;
    pthread_mutex_unlock(&a->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->idle);
    pthread_cond_destroy(&a->work);
    free(a->threads);
    free(a->ro);
    free(a);
}

/* ---- answers -------------------------------------------------------------- */

static uint16_t http_status(gim_err e)
{
    switch (gim_err_wire(e)) {
    case GIM_OK:
        return 200;
    case GIM_EBADREQ:
        return 400;
    case GIM_EUNAUTH:
        return 401;
    case GIM_EFORBIDDEN:
        return 403;
    case GIM_ENOTFOUND:
        return 404;
    case GIM_ETOOLARGE:
        return 413;
    case GIM_ERECALLEXPIRED:
        return 409;
    case GIM_EUNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}

static void leave(struct api *a);

/* A drained answer reached the client's socket (or failed to: the client is gone). */
static void drain_done(void *arg)
{
    struct api_drain *d = arg;
    if (nng_aio_result(d->aio) != 0)
        log_debug("api answer while stopping not delivered", "error=\"%s\"",
                  nng_strerror(nng_aio_result(d->aio)));
    leave(d->api);
}

/*
 * Hands res (consumed) to the client of haio. While the API runs, nng's server
 * writes it and keeps the connection alive. Once api_close() began, the
 * answer is drained (struct api_drain) and the connection ends after it.
 */
static void deliver(struct api *a, nng_aio *haio, nng_http_conn *conn, nng_http_req *req,
                    nng_http_res *res)
{
    struct api_drain *d = NULL;
    pthread_mutex_lock(&a->mu);
    if (a->closed && conn && req && (d = calloc(1, sizeof *d)) &&
        nng_aio_alloc(&d->aio, drain_done, d) == 0 &&
        nng_http_res_set_header(res, "Connection", "close") == 0) {
        d->api = a;
        d->conn = conn;
        d->req = req;
        d->res = res;
        d->next = a->drained;
        a->drained = d;
        a->active++; /* until drain_done() */
    } else if (d) {
        if (d->aio)
            nng_aio_free(d->aio);
        free(d);
        d = NULL; /* out of memory: nng's server writes it, as while running */
    }
    pthread_mutex_unlock(&a->mu);
    if (!d) {
        nng_aio_set_output(haio, 0, res);
        nng_aio_finish(haio, 0);
        return;
    }
    nng_http_hijack(conn); /* the server forgets the connection when haio finishes empty */
    nng_aio_finish(haio, 0);
    nng_aio_set_timeout(d->aio, DRAIN_TIMEOUT_MS);
    nng_http_conn_write_res(conn, res, d->aio);
}

/*
 * Finishes nng's handler aio with status and body (a JSON value, consumed;
 * NULL = no body). close: the connection ends after the answer (a body was
 * left unread, so the next bytes are not a request). conn and req are nng's
 * for this request (deliver()).
 */
static void send_json(struct api *a, nng_aio *haio, nng_http_conn *conn, nng_http_req *req,
                      uint16_t status, json_t *body, bool close, const char *allow)
{
    nng_http_res *res = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rv = nng_http_res_alloc(&res);
    json_decref(body);
    if (rv == 0)
        rv = nng_http_res_set_status(res, status);
    if (rv == 0 && text)
        rv = nng_http_res_set_header(res, "Content-Type", "application/json");
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Cache-Control", "no-store");
    if (rv == 0 && status == 401)
        rv = nng_http_res_set_header(res, "WWW-Authenticate", "Bearer");
    if (rv == 0 && allow && allow[0])
        rv = nng_http_res_set_header(res, "Allow", allow);
    if (rv == 0 && close)
        rv = nng_http_res_set_header(res, "Connection", "close");
    if (rv == 0 && text)
        rv = nng_http_res_copy_data(res, text, strlen(text));
    else if (rv == 0 && body && !text)
        rv = NNG_ENOMEM;
    free(text);
    if (rv != 0) {
        if (res)
            nng_http_res_free(res);
        nng_aio_finish(haio, rv); /* nng drops the connection */
        return;
    }
    deliver(a, haio, conn, req, res);
}

static void send_error(struct api *a, nng_aio *haio, nng_http_conn *conn, nng_http_req *req,
                       gim_err code, const char *msg, bool close, const char *allow)
{
    const char *name = gim_err_name((gim_err)gim_err_wire(code));
    json_t *j = json_pack("{s:s, s:s}", "code", name, "message", msg);
    if (!j) {
        /* The message quotes the request (a query, a path), which need not be UTF-8: JSON
         * strings must be, so every byte outside ASCII becomes '?'. */
        char safe[300];
        size_t i = 0;
        for (; msg[i] && i < sizeof safe - 1; i++)
            safe[i] = (unsigned char)msg[i] < 0x80 ? msg[i] : '?';
        safe[i] = '\0';
        j = json_pack("{s:s, s:s}", "code", name, "message", safe);
    }
    send_json(a, haio, conn, req, http_status(code), j, close, allow);
}

static void call_free(struct api_call *c)
{
    request_reset(&c->req);
    if (c->rx)
        nng_aio_free(c->rx);
    free(c->uri);
    free(c->body);
    free(c);
}

static void leave(struct api *a)
{
    pthread_mutex_lock(&a->mu);
    if (--a->active == 0 && a->closed)
        pthread_cond_broadcast(&a->idle);
    pthread_mutex_unlock(&a->mu);
}

/* The answer of a call that reached dispatch; any thread (a worker or the writer). */
static void answer(struct api_call *c)
{
    struct api *a = c->api;
    struct request *r = &c->req;
    int64_t dur = gim_clock_mono_ns() - r->start_ns;
    metrics_request(a->metrics, r->type, gim_err_wire(r->code), dur);
    if (r->code != GIM_OK || log_enabled(LOG_LEVEL_DEBUG)) {
        bool quiet = r->code == GIM_OK || r->code == GIM_EUNAUTH || r->code == GIM_EBADREQ ||
                     r->code == GIM_ENOTFOUND;
        log_write(quiet ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO, "api request",
                  "method=%s path=%s type=%d code=%s duration_us=%lld", c->route->method,
                  c->route->pattern, r->type, gim_err_name(r->code), (long long)(dur / 1000));
    }
    if (r->code != GIM_OK) {
        send_error(a, c->haio, c->conn, c->hreq, r->code,
                   r->errmsg[0] ? r->errmsg : gim_err_name(r->code), false, NULL);
    } else if (!c->route->decode) {
        send_json(a, c->haio, c->conn, c->hreq, (uint16_t)c->route->ok_status, NULL, false, NULL);
    } else {
        json_t *j = NULL;
        ProtobufCMessage *m = protobuf_c_message_unpack(c->route->reply, NULL, r->out_len, r->out);
        if (m) {
            j = c->route->decode(m);
            protobuf_c_message_free_unpacked(m, NULL);
        }
        if (j)
            send_json(a, c->haio, c->conn, c->hreq, (uint16_t)c->route->ok_status, j, false, NULL);
        else
            send_error(a, c->haio, c->conn, c->hreq, GIM_EINTERNAL,
                       "the reply could not be encoded as JSON", false, NULL);
    }
    call_free(c);
    leave(a);
}

/* An answer before dispatch (a malformed request): nothing was run. */
static void answer_early(struct api_call *c, gim_err code, const char *msg)
{
    struct api *a = c->api;
    log_debug("api request refused", "path=%s code=%s reason=\"%s\"", c->route->pattern,
              gim_err_name(code), msg);
    metrics_rejected(a->metrics);
    send_error(a, c->haio, c->conn, c->hreq, code, msg, false, NULL);
    call_free(c);
    leave(a);
}

/* ---- the request path ----------------------------------------------------- */

#define call_of(r) ((struct api_call *)((char *)(r)-offsetof(struct api_call, req)))

/* The writer's completion (dispatch.h): the commit is done or failed. */
static void write_done(struct request *r)
{
    struct api_call *c = call_of(r);
    atomic_fetch_sub(&c->api->writes, 1);
    answer(c);
}

/* The GatewayRequest an nng caller would send for this call: no session, the input as encoded. */
static gim_err envelope(const struct api_call *c, const uint8_t *data, size_t len, uint8_t **buf,
                        size_t *blen)
{
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    Pb__Input in = PB__INPUT__INIT;
    in.type = (Pb__PackageType)c->route->type;
    in.request_id = 0; /* idempotency comes from Idempotency-Key (idempotency_key) */
    in.data.data = (uint8_t *)data;
    in.data.len = len;
    env.gateway_id = API_GATEWAY;
    env.client_addr = API_GATEWAY;
    env.input = &in;
    *blen = pb__gateway_request__get_packed_size(&env);
    if (!(*buf = malloc(*blen ? *blen : 1)))
        return GIM_ENOMEM;
    pb__gateway_request__pack(&env, *buf);
    return GIM_OK;
}

/* On a worker: JSON -> protobuf -> dispatch, as server.c's work() does with nng's bytes. */
static void process(struct api_call *c, struct store_conn *ro)
{
    struct api *a = c->api;
    char why[300] = "";
    json_error_t jerr;
    json_t *body = NULL;
    uint8_t *data = NULL, *buf = NULL;
    size_t len = 0, blen = 0;
    gim_err e;
    if (c->body_len == 0) {
        body = json_object();
    } else if (!(body = json_loadb((const char *)c->body, c->body_len, JSON_REJECT_DUPLICATES,
                                   &jerr))) {
        snprintf(why, sizeof why, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        answer_early(c, GIM_EBADREQ, why);
        return;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        answer_early(c, GIM_EBADREQ, "the body must be a JSON object");
        return;
    }
    c->in.body = body;
    e = c->route->encode(&c->in, &data, &len, why, sizeof why);
    if (e == GIM_OK)
        e = envelope(c, data, len, &buf, &blen);
    c->in.body = NULL;
    json_decref(body); /* the decoded request copies what it keeps */
    free(data);
    if (e != GIM_OK) {
        answer_early(c, e == GIM_ENOMEM ? GIM_EINTERNAL : e, why[0] ? why : "out of memory");
        free(buf);
        return;
    }
    enum dispatch_next next = dispatch_begin(&a->disp, &c->req, buf, blen, ro);
    free(buf);
    if (next != DISPATCH_WRITE) {
        answer(c);
        return;
    }
    if (atomic_fetch_add(&a->writes, 1) >= a->max_writes) {
        atomic_fetch_sub(&a->writes, 1);
        request_fail(&c->req, GIM_EUNAVAILABLE,
                     "too many writes waiting for the database, retry later");
        answer(c);
        return;
    }
    writer_submit(a->writer, &c->req.job); /* write_done() follows */
}

static void *worker_main(void *arg)
{
    struct api *a = arg;
    pthread_mutex_lock(&a->mu);
    int me = a->started++;
    for (;;) {
        while (!a->head && !a->stop)
            pthread_cond_wait(&a->work, &a->mu);
        if (!a->head)
            break;
        struct api_call *c = a->head;
        a->head = c->next;
        if (!a->head)
            a->tail = NULL;
        pthread_mutex_unlock(&a->mu);
        if (c->haio) {
            process(c, a->ro[me]);
        } else { /* its body never came: nng already dropped the connection */
            call_free(c);
            leave(a);
        }
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void queue(struct api_call *c)
{
    struct api *a = c->api;
    c->next = NULL;
    pthread_mutex_lock(&a->mu);
    if (a->tail)
        a->tail->next = c;
    else
        a->head = c;
    a->tail = c;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->mu);
}

static void reading_unlink(struct api_call *c)
{
    struct api *a = c->api;
    pthread_mutex_lock(&a->mu);
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        a->reading = c->rnext;
    if (c->rnext)
        c->rnext->rprev = c->rprev;
    c->rprev = c->rnext = NULL;
    pthread_mutex_unlock(&a->mu);
}

/* Reads the body (or first writes the interim answer a client that sent
 * "Expect: 100-continue" waits for), within BODY_TIMEOUT_MS. */
static void read_body(struct api_call *c)
{
    static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct api *a = c->api;
    nng_iov iov = {.iov_buf = c->continuing ? cont : (char *)c->body,
                   .iov_len = c->continuing ? sizeof cont - 1 : c->body_len};
    pthread_mutex_lock(&a->mu);
    bool closed = a->closed;
    if (!closed) {
        c->rnext = a->reading;
        if (a->reading)
            a->reading->rprev = c;
        a->reading = c;
    }
    pthread_mutex_unlock(&a->mu);
    if (closed) { /* api_stop() began between the interim answer and the body */
        nng_aio *haio = c->haio;
        c->haio = NULL;
        nng_aio_finish(haio, NNG_ECLOSED);
        queue(c); /* a worker frees it */
        return;
    }
    nng_aio_set_iov(c->rx, 1, &iov);
    nng_aio_set_timeout(c->rx, BODY_TIMEOUT_MS);
    if (c->continuing)
        nng_http_conn_write_all(c->conn, c->rx);
    else
        nng_http_conn_read_all(c->conn, c->rx);
}

/* The body arrived (or the read failed: the connection goes, nothing was run). */
static void rx_done(void *arg)
{
    struct api_call *c = arg;
    int rv = nng_aio_result(c->rx);
    reading_unlink(c);
    if (rv == 0 && c->continuing) {
        c->continuing = false;
        read_body(c);
        return;
    }
    if (rv != 0) {
        /* Not call_free() here: an aio cannot be freed from its own callback. */
        nng_aio *haio = c->haio;
        c->haio = NULL;
        nng_aio_finish(haio, rv);
    }
    queue(c); /* a worker runs it, or frees it when haio is NULL */
}

/* Bearer token from the Authorization header; "" when there is none. */
static const char *bearer(nng_http_req *req)
{
    const char *h = nng_http_req_get_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return "";
    h += 7;
    while (*h == ' ')
        h++;
    return h;
}

/* nng's HTTP callback for everything under /v1: never blocks. */
static void on_request(nng_aio *haio)
{
    nng_http_req *req = nng_aio_get_input(haio, 0);
    nng_http_handler *hd = nng_aio_get_input(haio, 1);
    nng_http_conn *conn = nng_aio_get_input(haio, 2);
    struct api *a = nng_http_handler_get_data(hd);
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    const char *te = nng_http_req_get_header(req, "Transfer-Encoding");
    bool has_body = (cl && strcmp(cl, "0") != 0) || te;
    char allow[64], why[200];

    pthread_mutex_lock(&a->mu);
    bool open = !a->closed;
    if (open)
        a->active++;
    pthread_mutex_unlock(&a->mu);
    if (!open) {
        send_error(a, haio, conn, req, GIM_EUNAVAILABLE, "shutting down", true, NULL);
        return;
    }
    struct api_call *c = calloc(1, sizeof *c);
    if (!c || !(c->uri = strdup(nng_http_req_get_uri(req)))) {
        free(c);
        leave(a);
        nng_aio_finish(haio, NNG_ENOMEM);
        return;
    }
    c->api = a;
    c->haio = haio;
    c->conn = conn;
    c->hreq = req;
    char *q = strchr(c->uri, '?');
    if (q) {
        *q = '\0';
        c->in.query = q + 1;
    }
    char *frag = strchr(c->uri, '#');
    if (frag)
        *frag = '\0';
    enum apiroute_miss m = apiroute_match(nng_http_req_get_method(req), c->uri, &c->route,
                                          c->in.params, allow, sizeof allow, why, sizeof why);
    if (m != APIROUTE_FOUND) {
        static const struct apiroute none = {.method = "?", .pattern = "?"};
        c->route = &none;
        if (m == APIROUTE_BAD_PARAM)
            send_error(a, haio, conn, req, GIM_EBADREQ, why, has_body, NULL);
        else if (m == APIROUTE_NO_METHOD)
            send_json(a, haio, conn, req, 405,
                      json_pack("{s:s, s:s}", "code", "EC_BAD_REQUEST", "message",
                                "method not allowed on this path"),
                      has_body, allow);
        else
            send_error(a, haio, conn, req, GIM_ENOTFOUND,
                       "no such route (docs/openapi.json lists them)", has_body, NULL);
        call_free(c);
        leave(a);
        return;
    }
    c->in.token = bearer(req);
    const char *key = nng_http_req_get_header(req, "Idempotency-Key");
    c->in.idempotency_key = key ? key : "";
    /* nng 1.5.2 reads no chunked request bodies; the length must be known to be bounded. */
    uint64_t len = 0;
    char *end = NULL;
    if (te) {
        send_error(a, haio, conn, req, GIM_EBADREQ,
                   "send the body with a Content-Length (no Transfer-Encoding)", true, NULL);
        call_free(c);
        leave(a);
        return;
    }
    if (cl && (cl[0] < '0' || cl[0] > '9' || (len = strtoull(cl, &end, 10), *end != '\0'))) {
        send_error(a, haio, conn, req, GIM_EBADREQ, "bad Content-Length", true, NULL);
        call_free(c);
        leave(a);
        return;
    }
    if (len > a->cfg->api.max_body_bytes) {
        snprintf(why, sizeof why, "the body is %llu bytes; api.max_body_bytes is %u",
                 (unsigned long long)len, a->cfg->api.max_body_bytes);
        send_error(a, haio, conn, req, GIM_ETOOLARGE, why, true, NULL);
        call_free(c);
        leave(a);
        return;
    }
    if (len == 0) {
        queue(c);
        return;
    }
    if (!(c->body = malloc(len)) || nng_aio_alloc(&c->rx, rx_done, c) != 0) {
        call_free(c);
        leave(a);
        nng_aio_finish(haio, NNG_ENOMEM);
        return;
    }
    const char *expect = nng_http_req_get_header(req, "Expect");
    c->body_len = len;
    c->continuing = expect && strcasecmp(expect, "100-continue") == 0;
    read_body(c);
}

/* ---- start and stop ------------------------------------------------------- */

/* https://: the certificate and key, and client certificates when api.ca_file is set. */
static gim_err tls_setup(struct api *a, char *errbuf, size_t errlen)
{
    const struct gim_config *cfg = a->cfg;
    char *cert = NULL, *key = NULL;
    gim_err e = GIM_ECONFIG;
    int rv;
    if (!(cert = textfile_slurp(cfg->api.cert_file, TEXTFILE_MAX_PEM_BYTES)) ||
        !(key = textfile_slurp(cfg->api.key_file, TEXTFILE_MAX_PEM_BYTES))) {
        snprintf(errbuf, errlen, "api: cannot read api.cert_file %s or api.key_file %s",
                 cfg->api.cert_file, cfg->api.key_file);
        goto out;
    }
    if ((rv = nng_tls_config_alloc(&a->tls, NNG_TLS_MODE_SERVER)) != 0 ||
        (rv = nng_tls_config_own_cert(a->tls, cert, key, NULL)) != 0) {
        snprintf(errbuf, errlen, "api: bad TLS certificate or key: %s", nng_strerror(rv));
        goto out;
    }
    if (cfg->api.ca_file && cfg->api.ca_file[0] &&
        ((rv = nng_tls_config_ca_file(a->tls, cfg->api.ca_file)) != 0 ||
         (rv = nng_tls_config_auth_mode(a->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0)) {
        snprintf(errbuf, errlen, "api: bad api.ca_file %s: %s", cfg->api.ca_file, nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_http_server_set_tls(a->srv, a->tls)) != 0) {
        snprintf(errbuf, errlen, "api: cannot set up TLS: %s", nng_strerror(rv));
        goto out;
    }
    e = GIM_OK;
out:
    free(cert);
    free(key);
    return e;
}

static int add_handler(struct api *a)
{
    nng_http_handler *hd = NULL;
    int rv = nng_http_handler_alloc(&hd, "/v1", on_request);
    if (rv != 0)
        return rv;
    if ((rv = nng_http_handler_set_method(hd, NULL)) != 0 ||
        (rv = nng_http_handler_set_tree(hd)) != 0 ||
        (rv = nng_http_handler_collect_body(hd, false, 0)) != 0) {
        nng_http_handler_free(hd);
        return rv;
    }
    pthread_mutex_lock(&a->mu);
    a->refs++; /* the handler's, dropped by its destructor */
    pthread_mutex_unlock(&a->mu);
    if ((rv = nng_http_handler_set_data(hd, a, api_unref)) != 0) {
        nng_http_handler_free(hd);
        api_unref(a);
        return rv;
    }
    if ((rv = nng_http_server_add_handler(a->srv, hd)) != 0)
        nng_http_handler_free(hd); /* runs api_unref */
    return rv;
}

static gim_err start_workers(struct api *a, char *errbuf, size_t errlen)
{
    gim_err e;
    a->nworkers = (int)a->cfg->api.workers;
    if (!(a->threads = calloc((size_t)a->nworkers, sizeof *a->threads)) ||
        !(a->ro = calloc((size_t)a->nworkers, sizeof *a->ro))) {
        snprintf(errbuf, errlen, "api: out of memory");
        return GIM_ENOMEM;
    }
    for (int i = 0; i < a->nworkers; i++)
        if ((e = store_open(a->cfg, STORE_READER, &a->ro[i], errbuf, errlen)) != GIM_OK)
            return e;
    for (int i = 0; i < a->nworkers; i++) {
        if (pthread_create(&a->threads[i], NULL, worker_main, a) != 0) {
            snprintf(errbuf, errlen, "api: cannot start a worker thread");
            return GIM_EINTERNAL;
        }
        a->created++;
    }
    return GIM_OK;
}

static void log_bound(struct api *a)
{
    nng_sockaddr sa;
    if (nng_http_server_get_addr(a->srv, &sa) == 0 && sa.s_family == NNG_AF_INET) {
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        log_info("api listening", "url=%s addr=%s:%u", a->cfg->api.listen, ip,
                 (unsigned)ntohs(sa.s_in.sa_port));
    } else {
        log_info("api listening", "url=%s", a->cfg->api.listen);
    }
}

gim_err api_start(struct api **out, const struct api_opts *o, char *errbuf, size_t errlen)
{
    const char *u = o->cfg->api.listen;
    nng_url *url = NULL;
    gim_err e = GIM_OK;
    int rv;
    *out = NULL;
    if (!u || !*u)
        return GIM_OK;
    struct api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(errbuf, errlen, "api: out of memory");
        return GIM_ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->idle, NULL);
    pthread_cond_init(&a->work, NULL);
    a->refs = 1;
    a->cfg = o->cfg;
    a->metrics = o->metrics;
    a->writer = o->writer;
    a->max_writes = (int)o->cfg->writer.max_queued;
    a->disp = (struct dispatch){.cfg = o->cfg,
                                .presence = o->presence,
                                .clock = o->clock,
                                .metrics = o->metrics,
                                .write_done = write_done};
    if ((e = start_workers(a, errbuf, errlen)) != GIM_OK)
        goto fail;
    if ((rv = nng_url_parse(&url, u)) != 0) {
        snprintf(errbuf, errlen, "api: %s is not a URL: %s", u, nng_strerror(rv));
        e = GIM_ECONFIG;
        goto fail;
    }
    if ((rv = nng_http_server_hold(&a->srv, url)) != 0) {
        snprintf(errbuf, errlen, "api: cannot create a server for %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    if (strcmp(url->u_scheme, "https") == 0 && (e = tls_setup(a, errbuf, errlen)) != GIM_OK)
        goto fail;
    if ((rv = add_handler(a)) != 0) {
        snprintf(errbuf, errlen, "api: cannot add a handler on %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    if ((rv = nng_http_server_start(a->srv)) != 0) {
        snprintf(errbuf, errlen, "api: cannot listen on %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    log_bound(a);
    nng_url_free(url);
    *out = a;
    return GIM_OK;
fail:
    if (url)
        nng_url_free(url);
    api_stop(a);
    return e;
}

void api_close(struct api *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->closed = true;
    /* A body that is still on its way is not waited for (its call changed nothing yet). The
     * callbacks run on nng's threads, not inside the abort, so mu may be held here. */
    for (struct api_call *c = a->reading; c; c = c->rnext)
        nng_aio_abort(c->rx, NNG_ECLOSED);
    pthread_mutex_unlock(&a->mu);
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    api_close(a);
    pthread_mutex_lock(&a->mu);
    while (a->active > 0)
        pthread_cond_wait(&a->idle, &a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->work);
    struct api_drain *drained = a->drained;
    a->drained = NULL;
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < a->created; i++)
        pthread_join(a->threads[i], NULL);
    if (a->srv) {
        nng_http_server_stop(a->srv);
        nng_http_server_release(a->srv);
        a->srv = NULL;
    }
    while (drained) {
        struct api_drain *d = drained;
        drained = d->next;
        nng_aio_free(d->aio); /* waits for drain_done() to return */
        nng_http_conn_close(d->conn);
        nng_http_req_free(d->req);
        nng_http_res_free(d->res);
        free(d);
    }
    if (a->tls)
        nng_tls_config_free(a->tls);
    for (int i = 0; a->ro && i < a->nworkers; i++)
        store_close(a->ro[i]);
    api_unref(a);
}
