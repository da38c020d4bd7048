/*
 * config: the operator's settings, read from YAML with libcyaml.
 *
 * Every key has a default so the service runs with no file at all. Each key
 * is declared once, as a row of the key table in config.c (path, range,
 * default), from which cfgtable.c generates the libcyaml schema: adding a key
 * is that row and its member below. See config/gim-logic.example.yaml for
 * every key with its meaning.
 *
 * Ownership: config_load() fills a struct gim_config that the caller owns and
 * must release with config_free(), also after a failed load.
 */
#ifndef GIM_CONFIG_H
#define GIM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define CONFIG_MAX_URLS 8

struct config_database {
    char *backend;     /* sqlite|postgres, default "sqlite" */
    char *url;         /* postgresql://... (backend postgres only); a secret: never printed */
    char *path;        /* default "data/gim.db" */
    char *synchronous; /* off|normal|full|extra, default "full" */
    uint32_t busy_timeout_ms; /* default 5000 */
    uint32_t cache_mb;        /* page cache of the writer connection, default 32 */
    uint32_t reader_cache_mb; /* page cache of each reader connection, default 4 */
    uint32_t mmap_mb;   /* resident cap of the one shared mapping of the file (mapvfs.h); 0 = off */
    uint32_t max_pages; /* largest database, in pages (PRAGMA max_page_count); 0 = no limit */
};

struct config_auth {
    char *secret;      /* default "" */
    char *secret_env;  /* default "GIM_TOKEN_SECRET" */
    bool insecure_dev; /* default false */
};

struct config_tls {
    char *cert_file; /* PEM certificate for tls+tcp:// listen URLs, default "" */
    char *key_file;  /* PEM private key, default "" */
    char *ca_file;   /* CA that client certificates must chain to; "" = no client auth */
};

struct gim_config {
    char *listen[CONFIG_MAX_URLS]; /* default tcp://127.0.0.1:7400, ipc:///tmp/gim-logic.ipc */
    unsigned listen_count;
    char *publish[CONFIG_MAX_URLS]; /* default tcp://127.0.0.1:7401 */
    unsigned publish_count;
    char *http;        /* default "http://127.0.0.1:7480"; "" disables */
    uint32_t workers;  /* reader/worker threads, default 4, 1..256 */
    uint32_t contexts; /* nng REP contexts (requests in flight), default 256, 1..65536 */
    char *scheduling;  /* batch|normal, default "batch": the threads' Linux policy (scheduling.h) */
    struct config_database database;
    struct config_auth auth;
    struct config_tls tls;
    struct {
        uint32_t page_size; /* default 50, 1..10000 */
        uint32_t
            max_bytes; /* default 65534, >= 1024 and >= one message (message_page_worst_single) */
    } sync;
    struct {
        uint32_t window_seconds; /* default 120, 0 = no limit */
    } recall;
    struct {
        uint32_t window_seconds; /* default 86400 */
    } idempotency;
    struct {
        uint32_t max_request_bytes; /* default 1048576 */
        uint32_t max_content_bytes; /* default 16384 */
        uint32_t max_mentions;      /* default 100 */
        uint32_t max_group_members; /* default 10000 */
    } limits;
    struct {
        uint32_t timeout_seconds; /* default 90 */
    } presence;
    struct {
        uint32_t retain_messages; /* default 1000 */
    } rooms;
    struct {
        uint32_t days; /* default 0 = keep forever */
    } retention;
    struct {
        uint32_t max_batch; /* most requests per write transaction, default 256 */
        /* most write requests admitted at once (each holds an nng context of its
         * own, on top of `contexts`); beyond it EC_UNAVAILABLE at once. Default 256 */
        uint32_t max_queued;
    } writer;
    struct {
        char *level; /* debug|info|warn|error, default "info" */
    } log;
    /* The business API (api.h): HTTP/JSON for a company's own backend. */
    struct {
        char *listen;            /* http://HOST:PORT or https://HOST:PORT; default "" = off */
        char *cert_file;         /* PEM certificate for https://, default "" */
        char *key_file;          /* PEM private key for https://, default "" */
        char *ca_file;           /* CA that client certificates must chain to; "" = none asked */
        uint32_t max_body_bytes; /* largest request body, default 1048576 */
        uint32_t workers;        /* threads that translate and dispatch, default 4, 1..256 */
    } api;
};

/*
 * Fills *cfg with the defaults, then, if path is not NULL, overlays the YAML
 * file at path. Unknown keys, wrong types and out-of-range values fail with
 * GIM_ECONFIG and one line in errbuf naming the key and the problem
 * (e.g. "sync.page_size: must be between 1 and 10000, got 0").
 * On any return the caller must call config_free(cfg).
 */
gim_err config_load(const char *path, struct gim_config *cfg, char *errbuf, size_t errlen);

/* Releases everything config_load allocated; cfg itself is the caller's. Safe on a zeroed cfg. */
void config_free(struct gim_config *cfg);

/* Writes the effective config as YAML to out, with the secret masked as "***". */
void config_print(const struct gim_config *cfg, FILE *out);

/*
 * Compares two loaded configurations key by key: writes the dotted paths of
 * the keys whose values differ (e.g. "log.level", "listen") into paths, in
 * the example file's order, at most max of them, and returns how many it
 * wrote. The strings are static. For SIGHUP (main.c).
 */
size_t config_changed(const struct gim_config *a, const struct gim_config *b, const char **paths,
                      size_t max);

/* database.backend is postgres (else sqlite). */
bool config_is_postgres(const struct gim_config *cfg);

/*
 * The token secret in effect: auth.secret if set, else the value of the
 * environment variable auth.secret_env, else NULL. The string is not owned by
 * the caller.
 */
const char *config_secret(const struct gim_config *cfg);

#endif
