#include "http.h"

#include <arpa/inet.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "httpreply.h"
#include "log.h"
#include "metrics.h"
#include "presence.h"
#include "push.h"
#include "server.h"
#include "storage.h"
#include "storage/mapvfs.h"
#include "writer.h"

/*
 * nng frees a handler (and calls our destructor) when the server is reaped,
 * which may be after http_stop() returned; so the struct is reference
 * counted (the owner plus one per registered handler), and a callback that
 * starts after http_stop() began finds `closed` and touches nothing else.
 */
struct http {
    pthread_mutex_t mu; /* guards refs, active, closed */
    pthread_cond_t idle;
    int refs;
    int active; /* callbacks between enter() and leave() */
    bool closed;
    pthread_mutex_t db_mu;     /* one probe at a time on the health connection */
    struct store_conn *health; /* our own connection: the writer's is not thread-safe */
    char *db_path, *wal_path;
    nng_http_server *srv;
    struct http_opts o;
};

static void http_unref(void *arg)
{
    struct http *h = arg;
    pthread_mutex_lock(&h->mu);
    int left = --h->refs;
    pthread_mutex_unlock(&h->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->db_mu);
    free(h->db_path);
    free(h->wal_path);
    free(h);
}

static bool enter(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    bool ok = !h->closed;
    if (ok)
        h->active++;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

static void leave(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    if (--h->active == 0 && h->closed)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

static struct http *handler_http(nng_aio *aio)
{
    return nng_http_handler_get_data(nng_aio_get_input(aio, 1));
}

static int64_t file_size(const char *path, int64_t missing)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : missing;
}

static void on_metrics(nng_aio *aio)
{
    struct http *h = handler_http(aio);
    char *buf = NULL;
    size_t len = 0;
    if (!enter(h)) {
        httpreply_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "shutting down\n");
        return;
    }
    struct metrics_gauges g = {.pushes_published = push_published(h->o.push),
                               .pushes_dropped = push_dropped(h->o.push),
                               .database_bytes = file_size(h->db_path, -1),
                               .wal_bytes = file_size(h->wal_path, 0),
                               .writer_pending = writer_pending(h->o.writer),
                               .writer_checkpoints = writer_checkpoints(h->o.writer)};
    struct mapvfs_stats ms;
    mapvfs_stats(&ms);
    g.mmap_chosen_bytes = ms.chosen_bytes;
    g.mmap_retires = ms.retires;
    if (h->o.presence) {
        size_t sessions = 0, in_rooms = 0;
        presence_counts(h->o.presence, &sessions, &in_rooms);
        g.online_devices = sessions;
        g.room_subscriptions = in_rooms;
    }
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        metrics_write(h->o.metrics, &g, f);
        fclose(f);
    }
    leave(h);
    if (f && buf)
        httpreply_send(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", buf,
                       len);
    else
        httpreply_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "out of memory\n");
    free(buf);
}

/* Whether the writer could write now, on our own connection (tx->health_writable, storage.h). */
static bool db_writable(struct http *h, char *reason, size_t len)
{
    pthread_mutex_lock(&h->db_mu);
    bool ok = storage(h->health)->tx->health_writable(h->health, reason, len);
    pthread_mutex_unlock(&h->db_mu);
    return ok;
}

static void on_healthz(nng_aio *aio)
{
    struct http *h = handler_http(aio);
    char reason[300];
    if (!enter(h)) {
        httpreply_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "shutting down\n");
        return;
    }
    bool ok = false;
    if (!server_bound(h->o.server))
        snprintf(reason, sizeof reason, "sockets not bound");
    else
        ok = db_writable(h, reason, sizeof reason);
    leave(h);
    if (ok) {
        httpreply_text(aio, NNG_HTTP_STATUS_OK, "ok\n");
        return;
    }
    log_warn("unhealthy", "reason=\"%s\"", reason);
    strncat(reason, "\n", sizeof reason - strlen(reason) - 1);
    httpreply_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, reason);
}

static int add_route(struct http *h, const char *path, void (*cb)(nng_aio *))
{
    nng_http_handler *hd = NULL;
    int rv = nng_http_handler_alloc(&hd, path, cb);
    if (rv != 0)
        return rv;
    pthread_mutex_lock(&h->mu);
    h->refs++; /* the handler's, dropped by its destructor */
    pthread_mutex_unlock(&h->mu);
    if ((rv = nng_http_handler_set_data(hd, h, http_unref)) != 0) {
        nng_http_handler_free(hd);
        http_unref(h);
        return rv;
    }
    if ((rv = nng_http_server_add_handler(h->srv, hd)) != 0)
        nng_http_handler_free(hd); /* runs http_unref */
    return rv;
}

static gim_err open_health(struct http *h, char *errbuf, size_t errlen)
{
    size_t n = strlen(h->o.cfg->database.path) + sizeof "-wal";
    h->db_path = strdup(h->o.cfg->database.path);
    h->wal_path = malloc(n);
    if (!h->db_path || !h->wal_path) {
        snprintf(errbuf, errlen, "http: out of memory");
        return GIM_ENOMEM;
    }
    snprintf(h->wal_path, n, "%s-wal", h->db_path);
    if (!h->o.storage) {
        snprintf(errbuf, errlen, "http: no database backend given");
        return GIM_ECONFIG;
    }
    return h->o.storage->tx->health_open(h->o.cfg, &h->health, errbuf, errlen);
}

static void log_bound(struct http *h)
{
    nng_sockaddr sa;
    if (nng_http_server_get_addr(h->srv, &sa) == 0 && sa.s_family == NNG_AF_INET) {
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        log_info("http listening", "url=%s addr=%s:%u paths=/metrics,/healthz", h->o.cfg->http, ip,
                 (unsigned)ntohs(sa.s_in.sa_port));
    } else {
        log_info("http listening", "url=%s paths=/metrics,/healthz", h->o.cfg->http);
    }
}

gim_err http_start(struct http **out, const struct http_opts *o, char *errbuf, size_t errlen)
{
    const char *u = o->cfg->http;
    nng_url *url = NULL;
    gim_err e = GIM_OK;
    int rv;
    *out = NULL;
    if (!u || !*u) {
        log_info("http disabled", "%s", "http: \"\"");
        return GIM_OK;
    }
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(errbuf, errlen, "http: out of memory");
        return GIM_ENOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->idle, NULL);
    pthread_mutex_init(&h->db_mu, NULL);
    h->refs = 1;
    h->o = *o;
    if ((rv = nng_url_parse(&url, u)) != 0 || strcmp(url->u_scheme, "http") != 0) {
        snprintf(errbuf, errlen, "http: %s is not an http:// URL%s%s", u, rv ? ": " : "",
                 rv ? nng_strerror(rv) : "");
        e = GIM_ECONFIG;
        goto fail;
    }
    if ((e = open_health(h, errbuf, errlen)) != GIM_OK)
        goto fail;
    if ((rv = nng_http_server_hold(&h->srv, url)) != 0) {
        snprintf(errbuf, errlen, "http: cannot create a server for %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    if ((rv = add_route(h, "/metrics", on_metrics)) != 0 ||
        (rv = add_route(h, "/healthz", on_healthz)) != 0) {
        snprintf(errbuf, errlen, "http: cannot add a handler on %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    if ((rv = nng_http_server_start(h->srv)) != 0) {
        snprintf(errbuf, errlen, "http: cannot listen on %s: %s", u, nng_strerror(rv));
        e = GIM_EIO;
        goto fail;
    }
    log_bound(h);
    nng_url_free(url);
    *out = h;
    return GIM_OK;
fail:
    if (url)
        nng_url_free(url);
    if (h->srv) {
        nng_http_server_release(h->srv);
        h->srv = NULL;
    }
    http_stop(h);
    return e;
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->closed = true;
    while (h->active > 0)
        pthread_cond_wait(&h->idle, &h->mu);
    pthread_mutex_unlock(&h->mu);
    if (h->srv) {
        nng_http_server_stop(h->srv);
        nng_http_server_release(h->srv);
    }
    store_close(h->health);
    h->health = NULL;
    http_unref(h);
}
