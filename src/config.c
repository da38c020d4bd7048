#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtable.h"
#include "message.h"
#include "url.h"

/*
 * Every key, once: its path (= the member of struct gim_config), kind, range
 * and default. The schema libcyaml loads with is generated from this table
 * (cfgtable.h). In the order config_print writes them, which is the example
 * file's order; a section's keys stay together.
 */
#define C struct gim_config

static const char *const default_listen[] = {"tcp://127.0.0.1:7400", "ipc:///tmp/gim-logic.ipc",
                                             NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
/* Where the data lives (store.h): an embedded SQLite file, or a PostgreSQL server. */
static const char *const backends[] = {"sqlite", "postgres", NULL};
/* SQLite's PRAGMA synchronous levels. */
static const char *const synchronous_modes[] = {"off", "normal", "full", "extra", NULL};
/* The threads' scheduling policy (scheduling.h). */
static const char *const scheduling_modes[] = {"batch", "normal", NULL};
/* Must match log_level_parse(). */
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

_Static_assert(CONFIG_MAX_URLS == CFGTABLE_MAX_URLS, "the key table's URL arrays");

static const struct cfgtable_key keys[] = {
    CFGTABLE_URLS(C, listen, default_listen),
    CFGTABLE_URLS(C, publish, default_publish),
    CFGTABLE_STR(C, http, "http://127.0.0.1:7480"),
    CFGTABLE_U32(C, workers, 1, 256, 4),
    CFGTABLE_U32(C, contexts, 1, 65536, 256),
    CFGTABLE_CHOICE(C, scheduling, "batch", scheduling_modes),
    CFGTABLE_CHOICE(C, database.backend, "sqlite", backends),
    /* A secret: it may carry a password (printed as "***", never logged). */
    CFGTABLE_SECRET(C, database.url, ""),
    CFGTABLE_STR(C, database.path, "data/gim.db"),
    CFGTABLE_CHOICE(C, database.synchronous, "full", synchronous_modes),
    CFGTABLE_U32(C, database.busy_timeout_ms, 0, 600000, 5000),
    CFGTABLE_U32(C, database.cache_mb, 0, UINT32_MAX, 32),
    CFGTABLE_U32(C, database.reader_cache_mb, 0, UINT32_MAX, 4),
    CFGTABLE_U32(C, database.mmap_mb, 0, UINT32_MAX, 128),
    CFGTABLE_U32(C, database.max_pages, 0, UINT32_MAX, 0),
    CFGTABLE_SECRET(C, auth.secret, ""),
    CFGTABLE_STR(C, auth.secret_env, "GIM_TOKEN_SECRET"),
    CFGTABLE_BOOL(C, auth.insecure_dev, false),
    CFGTABLE_STR(C, tls.cert_file, ""),
    CFGTABLE_STR(C, tls.key_file, ""),
    CFGTABLE_STR(C, tls.ca_file, ""),
    CFGTABLE_U32(C, sync.page_size, 1, 10000, 50),
    /* gim's seed-era TCP clients read into a 65,536-byte buffer that also holds the 2-byte
     * length: a reply Output of 65,535 bytes or more never completes there. */
    CFGTABLE_U32(C, sync.max_bytes, 1024, UINT32_MAX, 65534),
    CFGTABLE_U32(C, recall.window_seconds, 0, UINT32_MAX, 120),
    CFGTABLE_U32(C, idempotency.window_seconds, 0, UINT32_MAX, 86400),
    CFGTABLE_U32(C, limits.max_request_bytes, 1024, UINT32_MAX, 1048576),
    /* The upper bound is limits.max_request_bytes, checked in validate(). */
    CFGTABLE_U32(C, limits.max_content_bytes, 1, UINT32_MAX, 16384),
    CFGTABLE_U32(C, limits.max_mentions, 0, UINT32_MAX, 100),
    CFGTABLE_U32(C, limits.max_group_members, 2, UINT32_MAX, 10000),
    CFGTABLE_U32(C, presence.timeout_seconds, 1, UINT32_MAX, 90),
    CFGTABLE_U32(C, rooms.retain_messages, 1, UINT32_MAX, 1000),
    CFGTABLE_U32(C, retention.days, 0, UINT32_MAX, 0),
    CFGTABLE_U32(C, writer.max_batch, 1, 65536, 256),
    CFGTABLE_U32(C, writer.max_queued, 1, 65536, 256),
    CFGTABLE_CHOICE(C, log.level, "info", log_levels),
    CFGTABLE_STR(C, api.listen, ""),
    CFGTABLE_STR(C, api.cert_file, ""),
    CFGTABLE_STR(C, api.key_file, ""),
    CFGTABLE_STR(C, api.ca_file, ""),
    CFGTABLE_U32(C, api.max_body_bytes, 1024, 64 * 1024 * 1024, 1048576),
    CFGTABLE_U32(C, api.workers, 1, 256, 4),
};
#undef C

#define NKEYS (sizeof keys / sizeof keys[0])

/* ---- checks across keys ---------------------------------------------------- */

/* The business API's listener: its URL, and https:// only with a certificate and key. */
static gim_err check_api(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    char why[384];
    const char *u = cfg->api.listen;
    bool have_cert = cfg->api.cert_file && cfg->api.cert_file[0];
    bool have_key = cfg->api.key_file && cfg->api.key_file[0];
    if (have_cert != have_key) {
        cfgtable_err(errbuf, errlen, "%s: required when %s is set",
                     have_cert ? "api.key_file" : "api.cert_file",
                     have_cert ? "api.cert_file" : "api.key_file");
        return GIM_ECONFIG;
    }
    if (!u || !u[0])
        return GIM_OK;
    if (url_check(u, URL_API, why, sizeof why) != GIM_OK) {
        cfgtable_err(errbuf, errlen, "api.listen: %s", why);
        return GIM_ECONFIG;
    }
    /* nng would hand both the same server, and stopping one would stop the other. */
    if (cfg->http && strcmp(u, cfg->http) == 0) {
        cfgtable_err(errbuf, errlen,
                     "api.listen: '%s' is also `http`; give the API its own address", u);
        return GIM_ECONFIG;
    }
    if (strncmp(u, "https://", 8) == 0 && !have_cert) {
        cfgtable_err(errbuf, errlen, "api.listen: '%s' needs api.cert_file and api.key_file", u);
        return GIM_ECONFIG;
    }
    return GIM_OK;
}

/*
 * The URLs the service binds, for scheme and form (see url.h), so that a bad
 * one stops start-up here, naming its key, before the database is created.
 */
static gim_err check_urls(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    char why[384];
    bool have_tls = cfg->tls.cert_file && cfg->tls.cert_file[0];
    for (unsigned i = 0; i < cfg->listen_count; i++) {
        if (url_check(cfg->listen[i], URL_LISTEN, why, sizeof why) != GIM_OK) {
            cfgtable_err(errbuf, errlen, "listen[%u]: %s", i, why);
            return GIM_ECONFIG;
        }
        if (url_is_tls(cfg->listen[i]) && !have_tls) {
            cfgtable_err(errbuf, errlen, "listen[%u]: '%s' needs tls.cert_file and tls.key_file", i,
                         cfg->listen[i]);
            return GIM_ECONFIG;
        }
    }
    for (unsigned i = 0; i < cfg->publish_count; i++) {
        if (url_check(cfg->publish[i], URL_PUBLISH, why, sizeof why) != GIM_OK) {
            cfgtable_err(errbuf, errlen, "publish[%u]: %s", i, why);
            return GIM_ECONFIG;
        }
    }
    if (cfg->http && cfg->http[0] && url_check(cfg->http, URL_HTTP, why, sizeof why) != GIM_OK) {
        cfgtable_err(errbuf, errlen, "http: %s", why);
        return GIM_ECONFIG;
    }
    return check_api(cfg, errbuf, errlen);
}

/*
 * database.backend and database.url go together: postgres needs a
 * postgresql:// (or postgres://) URL, and a URL without postgres is a
 * mistake worth stopping for (the operator believes the data goes there).
 * The URL's own form is libpq's to judge (PQconninfoParse, at start-up);
 * the messages here never quote it, since it may hold a password.
 */
static gim_err check_database(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    bool pg = config_is_postgres(cfg);
    const char *u = cfg->database.url ? cfg->database.url : "";
    if (pg && !u[0]) {
        cfgtable_err(errbuf, errlen, "database.url: required when database.backend is postgres");
        return GIM_ECONFIG;
    }
    if (!pg && u[0]) {
        cfgtable_err(errbuf, errlen,
                     "database.url: only used when database.backend is postgres (it is sqlite)");
        return GIM_ECONFIG;
    }
    if (pg && strncmp(u, "postgresql://", 13) != 0 && strncmp(u, "postgres://", 11) != 0) {
        cfgtable_err(errbuf, errlen,
                     "database.url: must start with postgresql:// or postgres:// (not quoted: "
                     "it may hold a password)");
        return GIM_ECONFIG;
    }
    return GIM_OK;
}

/* The checks across keys, on the merged result (a default that a changed key invalidates too). */
static gim_err validate(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    if (cfg->limits.max_content_bytes > cfg->limits.max_request_bytes) {
        cfgtable_err(
            errbuf, errlen,
            "limits.max_content_bytes: must be at most limits.max_request_bytes (%u), got %u",
            cfg->limits.max_request_bytes, cfg->limits.max_content_bytes);
        rc = GIM_ECONFIG;
        goto out;
    }
    /* Every message the limits accept must fit a sync or room page on its own. */
    size_t one = message_page_worst_single(cfg->limits.max_content_bytes, cfg->limits.max_mentions);
    if (cfg->sync.max_bytes < one) {
        cfgtable_err(errbuf, errlen,
                     "sync.max_bytes: must be at least %zu to hold one message of "
                     "limits.max_content_bytes (%u) and limits.max_mentions (%u), got %u",
                     one, cfg->limits.max_content_bytes, cfg->limits.max_mentions,
                     cfg->sync.max_bytes);
        rc = GIM_ECONFIG;
        goto out;
    }
    /* Half a TLS setup would silently leave tls+tcp:// listeners unusable. */
    bool have_cert = cfg->tls.cert_file && cfg->tls.cert_file[0];
    bool have_key = cfg->tls.key_file && cfg->tls.key_file[0];
    if (have_cert != have_key) {
        cfgtable_err(errbuf, errlen, "%s: required when %s is set",
                     have_cert ? "tls.key_file" : "tls.cert_file",
                     have_cert ? "tls.cert_file" : "tls.key_file");
        rc = GIM_ECONFIG;
        goto out;
    }
    if ((rc = check_database(cfg, errbuf, errlen)) != GIM_OK)
        goto out;
    rc = check_urls(cfg, errbuf, errlen);
out:
    return rc;
}

/* ---- public --------------------------------------------------------------- */

gim_err config_load(const char *path, struct gim_config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    gim_err rc = cfgtable_load(path, keys, NKEYS, cfg, errbuf, errlen);
    return rc == GIM_OK ? validate(cfg, errbuf, errlen) : rc;
}

void config_free(struct gim_config *cfg)
{
    if (!cfg)
        return;
    cfgtable_free(cfg, keys, NKEYS);
    memset(cfg, 0, sizeof *cfg);
}

void config_print(const struct gim_config *cfg, FILE *out)
{
    cfgtable_print(cfg, keys, NKEYS, out);
}

bool config_is_postgres(const struct gim_config *cfg)
{
    return cfg->database.backend && strcmp(cfg->database.backend, "postgres") == 0;
}

const char *config_secret(const struct gim_config *cfg)
{
    if (cfg->auth.secret && cfg->auth.secret[0])
        return cfg->auth.secret;
    if (cfg->auth.secret_env && cfg->auth.secret_env[0]) {
        const char *v = getenv(cfg->auth.secret_env);
        if (v && v[0])
            return v;
    }
    return NULL;
}

size_t config_changed(const struct gim_config *a, const struct gim_config *b, const char **paths,
                      size_t max)
{
    return cfgtable_changed(a, b, keys, NKEYS, paths, max);
}
