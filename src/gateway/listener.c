#include "listener.h"

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conn.h"
#include "log.h"
#include "textfile.h"

/* Accepts kept pending at once: nng accepts one connection per pending accept on each
 * readiness event, so more of them drain a burst of connects faster. */
#define ACCEPTS 8

struct listener;

struct acceptor {
    struct listener *l;
    nng_aio *aio;
};

struct listener {
    nng_stream_listener *l;
    struct acceptor acc[ACCEPTS];
    enum framing f;
    enum gwm_transport t;
    char *url;
    nng_tls_config *tls;
    nng_http_server *web; /* held for the web client handlers; NULL when none */
};

static void on_accept(void *arg)
{
    struct acceptor *a = arg;
    struct listener *l = a->l;
    int rv = nng_aio_result(a->aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        conn_accept(nng_aio_get_output(a->aio, 0), l->f, l->t);
    } else {
        /* E.g. out of file descriptors: pause a little rather than spin. */
        log_warn("accept failed", "url=%s err=\"%s\"", l->url, nng_strerror(rv));
        nng_msleep(20);
    }
    nng_stream_listener_accept(l->l, a->aio);
}

static int tls_setup(struct listener *l, const struct gw_config *cfg)
{
    char *cert = textfile_slurp(cfg->tls.cert_file, TEXTFILE_MAX_PEM_BYTES);
    char *key = textfile_slurp(cfg->tls.key_file, TEXTFILE_MAX_PEM_BYTES);
    int rv = cert && key ? nng_tls_config_alloc(&l->tls, NNG_TLS_MODE_SERVER) : NNG_ENOENT;
    if (rv == 0)
        rv = nng_tls_config_own_cert(l->tls, cert, key, NULL);
    if (rv == 0)
        rv = nng_stream_listener_set_ptr(l->l, NNG_OPT_TLS_CONFIG, l->tls);
    free(cert);
    free(key);
    return rv;
}

static int add_handler(nng_http_server *srv, nng_http_handler *h, int rv)
{
    if (rv == 0 && (rv = nng_http_server_add_handler(srv, h)) != 0)
        nng_http_handler_free(h);
    return rv;
}

static void warn_missing(const char *key, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        log_warn("web directory missing; its URLs answer 404", "key=%s path=%s", key, dir);
}

/* The web client and its .proto files, on the ws listener's own HTTP server. */
static int web_setup(struct listener *l, const struct gw_config *cfg)
{
    nng_http_handler *h = NULL;
    nng_url *url = NULL;
    int rv;
    if (!cfg->web.root[0] && !cfg->web.proto_dir[0])
        return 0;
    if ((rv = nng_url_parse(&url, l->url)) != 0)
        return rv;
    rv = nng_http_server_hold(&l->web, url);
    nng_url_free(url);
    if (rv != 0)
        return rv;
    if (cfg->web.root[0]) {
        warn_missing("web.root", cfg->web.root);
        rv = add_handler(l->web, h, nng_http_handler_alloc_directory(&h, "/demo", cfg->web.root));
        if (rv == 0)
            rv = add_handler(
                l->web, h,
                nng_http_handler_alloc_redirect(&h, "/", NNG_HTTP_STATUS_FOUND, "/demo/"));
    }
    if (rv == 0 && cfg->web.proto_dir[0]) {
        warn_missing("web.proto_dir", cfg->web.proto_dir);
        rv = add_handler(l->web, h,
                         nng_http_handler_alloc_directory(&h, "/proto", cfg->web.proto_dir));
    }
    return rv;
}

static enum gwm_transport transport_of(const char *url)
{
    if (strncmp(url, "tls+tcp://", 10) == 0)
        return GWM_TLS;
    if (strncmp(url, "wss://", 6) == 0)
        return GWM_WSS;
    if (strncmp(url, "ws://", 5) == 0)
        return GWM_WS;
    return GWM_TCP;
}

gim_err listener_open(struct listener **out, const struct gw_config *cfg, unsigned index,
                      char *errbuf, size_t errlen)
{
    const struct gw_listener *gl = &cfg->listeners[index];
    struct listener *l = calloc(1, sizeof *l);
    const char *step = "allocate";
    int rv = NNG_ENOMEM;
    *out = NULL;
    if (!l || !(l->url = strdup(gl->url)))
        goto fail;
    l->f = gl->framing;
    l->t = transport_of(gl->url);
    if ((rv = nng_stream_listener_alloc(&l->l, gl->url)) != 0)
        goto fail;
    step = "set options on";
    if (l->f == FRAMING_WS) {
        /* One receive = one whole WebSocket message (what nng's SP-over-ws transport sets). */
        if ((rv = nng_stream_listener_set_bool(l->l, "ws:msgmode", true)) != 0 ||
            (rv = nng_stream_listener_set_size(l->l, NNG_OPT_RECVMAXSZ,
                                               cfg->conn.max_frame_bytes)) != 0 ||
            (rv = nng_stream_listener_set_size(l->l, NNG_OPT_WS_RECVMAXFRAME,
                                               cfg->conn.max_frame_bytes)) != 0)
            goto fail;
    } else {
        nng_stream_listener_set_bool(l->l, NNG_OPT_TCP_NODELAY, true);
        nng_stream_listener_set_bool(l->l, NNG_OPT_TCP_KEEPALIVE, true);
    }
    if (l->t == GWM_TLS || l->t == GWM_WSS) {
        step = "set up TLS (tls.cert_file, tls.key_file) for";
        if ((rv = tls_setup(l, cfg)) != 0)
            goto fail;
    }
    step = "listen on";
    if ((rv = nng_stream_listener_listen(l->l)) != 0)
        goto fail;
    if (l->f == FRAMING_WS) {
        step = "serve the web client (web.root, web.proto_dir) on";
        if ((rv = web_setup(l, cfg)) != 0)
            goto fail;
    }
    step = "accept on";
    for (int i = 0; i < ACCEPTS; i++) {
        l->acc[i].l = l;
        if ((rv = nng_aio_alloc(&l->acc[i].aio, on_accept, &l->acc[i])) != 0)
            goto fail;
    }
    int port = 0;
    if (l->f != FRAMING_WS)
        nng_stream_listener_get_int(l->l, NNG_OPT_TCP_BOUND_PORT, &port);
    log_info("listening", "url=%s framing=%s port=%d", gl->url, gwcfg_framing_name(l->f), port);
    for (int i = 0; i < ACCEPTS; i++)
        nng_stream_listener_accept(l->l, l->acc[i].aio);
    *out = l;
    return GIM_OK;
fail:
    snprintf(errbuf, errlen, "listeners[%u]: cannot %s %s: %s", index, step, gl->url,
             nng_strerror(rv));
    listener_close(l);
    return rv == NNG_ENOMEM ? GIM_ENOMEM : GIM_EIO;
}

void listener_close(struct listener *l)
{
    if (!l)
        return;
    if (l->l)
        nng_stream_listener_close(l->l);
    for (int i = 0; i < ACCEPTS; i++)
        if (l->acc[i].aio)
            nng_aio_free(l->acc[i].aio); /* waits for a running accept callback */
    if (l->web)
        nng_http_server_release(l->web);
    if (l->l)
        nng_stream_listener_free(l->l);
    if (l->tls)
        nng_tls_config_free(l->tls);
    free(l->url);
    free(l);
}
