#include "gw_http.h"

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "httpreply.h"
#include "log.h"
#include "upstream.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct upstream *UP; /* NULL once stopped */
static nng_http_server *srv;

static void on_metrics(nng_aio *aio)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        gwm_write(f);
        fprintf(f,
                "# HELP gim_gateway_lease_ok 1 when gim-logic accepted the latest lease.\n"
                "# TYPE gim_gateway_lease_ok gauge\ngim_gateway_lease_ok %ld\n",
                atomic_load(&gwm_global.lease_supported));
        fclose(f);
    }
    if (f && buf)
        httpreply_send(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", buf,
                       len);
    else
        httpreply_send(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                       14);
    free(buf);
}

static void on_healthz(nng_aio *aio)
{
    const char *why = NULL;
    pthread_mutex_lock(&mu);
    if (!UP)
        why = "shutting down\n";
    else if (!upstream_healthy(UP))
        why = "gim-logic has not answered within three lease intervals\n";
    pthread_mutex_unlock(&mu);
    httpreply_text(aio, why ? NNG_HTTP_STATUS_SERVICE_UNAVAILABLE : NNG_HTTP_STATUS_OK,
                   why ? why : "ok\n");
}

static int add(const char *path, void (*cb)(nng_aio *))
{
    nng_http_handler *h = NULL;
    int rv = nng_http_handler_alloc(&h, path, cb);
    if (rv == 0 && (rv = nng_http_server_add_handler(srv, h)) != 0)
        nng_http_handler_free(h);
    return rv;
}

gim_err gwhttp_start(const struct gw_config *cfg, struct upstream *up, char *errbuf, size_t errlen)
{
    nng_url *url = NULL;
    int rv;
    if (!cfg->http[0]) {
        log_info("http disabled", "%s", "http: \"\"");
        return GIM_OK;
    }
    if ((rv = nng_url_parse(&url, cfg->http)) != 0 || strcmp(url->u_scheme, "http") != 0) {
        snprintf(errbuf, errlen, "http: %s is not an http:// URL", cfg->http);
        if (url)
            nng_url_free(url);
        return GIM_ECONFIG;
    }
    pthread_mutex_lock(&mu);
    UP = up;
    pthread_mutex_unlock(&mu);
    rv = nng_http_server_hold(&srv, url);
    nng_url_free(url);
    if (rv == 0 && (rv = add("/metrics", on_metrics)) == 0 &&
        (rv = add("/healthz", on_healthz)) == 0)
        rv = nng_http_server_start(srv);
    if (rv != 0) {
        snprintf(errbuf, errlen, "http: cannot serve %s: %s", cfg->http, nng_strerror(rv));
        gwhttp_stop();
        return GIM_EIO;
    }
    log_info("http listening", "url=%s paths=/metrics,/healthz", cfg->http);
    return GIM_OK;
}

void gwhttp_stop(void)
{
    pthread_mutex_lock(&mu);
    UP = NULL;
    pthread_mutex_unlock(&mu);
    if (srv) {
        nng_http_server_stop(srv);
        nng_http_server_release(srv);
        srv = NULL;
    }
}
