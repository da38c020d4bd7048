#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtable.h"
#include "message.h"
#include "url.h"

/*
 * What libcyaml loads: every scalar is a string and every field optional, so
 * a NULL pointer means "absent, keep the default"; cfgtable.h says why and
 * parses them strictly. Member names equal the YAML keys and the gim_config
 * members so one macro can name all three.
 */
struct raw_database {
    char *path;
    char *synchronous;
    char *busy_timeout_ms;
    char *cache_mb;
    char *reader_cache_mb;
    char *mmap_mb;
    char *max_pages;
};

struct raw_auth {
    char *secret;
    char *secret_env;
    char *insecure_dev;
};

struct raw_tls {
    char *cert_file;
    char *key_file;
    char *ca_file;
};

struct raw_sync {
    char *page_size;
    char *max_bytes;
};

/* recall and idempotency */
struct raw_window {
    char *window_seconds;
};

struct raw_limits {
    char *max_request_bytes;
    char *max_content_bytes;
    char *max_mentions;
    char *max_group_members;
};

struct raw_presence {
    char *timeout_seconds;
};

struct raw_rooms {
    char *retain_messages;
};

struct raw_retention {
    char *days;
};

struct raw_writer {
    char *max_batch;
    char *max_queued;
};

struct raw_log {
    char *level;
};

struct raw_api {
    char *listen;
    char *cert_file;
    char *key_file;
    char *ca_file;
    char *max_body_bytes;
    char *workers;
};

struct raw_config {
    char **listen;
    unsigned listen_count;
    char **publish;
    unsigned publish_count;
    char *http;
    char *workers;
    char *contexts;
    struct raw_database database;
    struct raw_auth auth;
    struct raw_tls tls;
    struct raw_sync sync;
    struct raw_window recall;
    struct raw_window idempotency;
    struct raw_limits limits;
    struct raw_presence presence;
    struct raw_rooms rooms;
    struct raw_retention retention;
    struct raw_writer writer;
    struct raw_log log;
    struct raw_api api;
};

/* ---- libcyaml schema: the YAML shape ------------------------------------- */

#define SCALAR(type, member)                                                                       \
    CYAML_FIELD_STRING_PTR(#member, CYAML_FLAG_OPTIONAL, type, member, 0, CYAML_UNLIMITED)
#define SECTION(member, fields)                                                                    \
    CYAML_FIELD_MAPPING(#member, CYAML_FLAG_OPTIONAL, struct raw_config, member, fields)
/*
 * min 1: libcyaml leaves an empty sequence exactly like an absent one (NULL,
 * count 0), so "publish: []" could only silently mean "keep the default".
 * Rejecting it is the honest option.
 */
#define URL_LIST(member)                                                                           \
    CYAML_FIELD_SEQUENCE(#member, CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, struct raw_config,     \
                         member, &url_schema, 1, CONFIG_MAX_URLS)

static const cyaml_schema_value_t url_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t database_fields[] = {
    SCALAR(struct raw_database, path),
    SCALAR(struct raw_database, synchronous),
    SCALAR(struct raw_database, busy_timeout_ms),
    SCALAR(struct raw_database, cache_mb),
    SCALAR(struct raw_database, reader_cache_mb),
    SCALAR(struct raw_database, mmap_mb),
    SCALAR(struct raw_database, max_pages),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t auth_fields[] = {
    SCALAR(struct raw_auth, secret),
    SCALAR(struct raw_auth, secret_env),
    SCALAR(struct raw_auth, insecure_dev),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t tls_fields[] = {
    SCALAR(struct raw_tls, cert_file),
    SCALAR(struct raw_tls, key_file),
    SCALAR(struct raw_tls, ca_file),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t sync_fields[] = {
    SCALAR(struct raw_sync, page_size),
    SCALAR(struct raw_sync, max_bytes),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t window_fields[] = {
    SCALAR(struct raw_window, window_seconds),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t limits_fields[] = {
    SCALAR(struct raw_limits, max_request_bytes),
    SCALAR(struct raw_limits, max_content_bytes),
    SCALAR(struct raw_limits, max_mentions),
    SCALAR(struct raw_limits, max_group_members),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t presence_fields[] = {
    SCALAR(struct raw_presence, timeout_seconds),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t rooms_fields[] = {
    SCALAR(struct raw_rooms, retain_messages),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t retention_fields[] = {
    SCALAR(struct raw_retention, days),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t writer_fields[] = {
    SCALAR(struct raw_writer, max_batch),
    SCALAR(struct raw_writer, max_queued),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    SCALAR(struct raw_log, level),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t api_fields[] = {
    SCALAR(struct raw_api, listen),
    SCALAR(struct raw_api, cert_file),
    SCALAR(struct raw_api, key_file),
    SCALAR(struct raw_api, ca_file),
    SCALAR(struct raw_api, max_body_bytes),
    SCALAR(struct raw_api, workers),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t top_fields[] = {
    URL_LIST(listen),
    URL_LIST(publish),
    SCALAR(struct raw_config, http),
    SCALAR(struct raw_config, workers),
    SCALAR(struct raw_config, contexts),
    SECTION(database, database_fields),
    SECTION(auth, auth_fields),
    SECTION(tls, tls_fields),
    SECTION(sync, sync_fields),
    SECTION(recall, window_fields),
    SECTION(idempotency, window_fields),
    SECTION(limits, limits_fields),
    SECTION(presence, presence_fields),
    SECTION(rooms, rooms_fields),
    SECTION(retention, retention_fields),
    SECTION(writer, writer_fields),
    SECTION(log, log_fields),
    SECTION(api, api_fields),
    CYAML_FIELD_END,
};

/* POINTER_NULL: a file holding just "---" or "~" is an empty document, i.e. no keys set. */
static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER_NULL_STR, struct raw_config, top_fields),
};

/* ---- the key table: defaults, overlay, range checks and printing --------- */

_Static_assert(CONFIG_MAX_URLS == CFGTABLE_MAX_URLS, "the key table's URL arrays");

#define OFFS(m) .cfg_off = offsetof(struct gim_config, m), .raw_off = offsetof(struct raw_config, m)
#define URLS(m, lo, defs)                                                                          \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_URLS, OFFS(m),                                                \
        .cfg_count_off = offsetof(struct gim_config, m##_count),                                   \
        .raw_count_off = offsetof(struct raw_config, m##_count), .min = lo,                        \
        .max = CONFIG_MAX_URLS, .def_list = defs                                                   \
    }
#define STR(m, def)                                                                                \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_STR, OFFS(m), .def_str = def                                  \
    }
#define CHOICE(m, def, list)                                                                       \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_STR, OFFS(m), .def_str = def, .choices = list                 \
    }
#define SECRET(m, def)                                                                             \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_STR, OFFS(m), .def_str = def, .secret = true                  \
    }
#define U32(m, lo, hi, def)                                                                        \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_U32, OFFS(m), .min = lo, .max = hi, .def_u32 = def            \
    }
#define BOOL(m, def)                                                                               \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_BOOL, OFFS(m), .def_u32 = def                                 \
    }

static const char *const default_listen[] = {"tcp://127.0.0.1:7400", "ipc:///tmp/gim-logic.ipc",
                                             NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
/* SQLite's PRAGMA synchronous levels. */
static const char *const synchronous_modes[] = {"off", "normal", "full", "extra", NULL};
/* Must match log_level_parse(). */
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* In the order config_print writes them, which is the example file's order. */
static const struct cfgtable_key keys[] = {
    URLS(listen, 1, default_listen),
    URLS(publish, 1, default_publish),
    STR(http, "http://127.0.0.1:7480"),
    U32(workers, 1, 256, 16),
    U32(contexts, 1, 65536, 256),
    STR(database.path, "data/gim.db"),
    CHOICE(database.synchronous, "full", synchronous_modes),
    U32(database.busy_timeout_ms, 0, 600000, 5000),
    U32(database.cache_mb, 0, UINT32_MAX, 32),
    U32(database.reader_cache_mb, 0, UINT32_MAX, 4),
    U32(database.mmap_mb, 0, UINT32_MAX, 0),
    U32(database.max_pages, 0, UINT32_MAX, 0),
    SECRET(auth.secret, ""),
    STR(auth.secret_env, "GIM_TOKEN_SECRET"),
    BOOL(auth.insecure_dev, false),
    STR(tls.cert_file, ""),
    STR(tls.key_file, ""),
    STR(tls.ca_file, ""),
    U32(sync.page_size, 1, 10000, 50),
    /* gim's seed-era TCP clients read into a 65,536-byte buffer that also holds the 2-byte
     * length: a reply Output of 65,535 bytes or more never completes there. */
    U32(sync.max_bytes, 1024, UINT32_MAX, 65534),
    U32(recall.window_seconds, 0, UINT32_MAX, 120),
    U32(idempotency.window_seconds, 0, UINT32_MAX, 86400),
    U32(limits.max_request_bytes, 1024, UINT32_MAX, 1048576),
    /* The upper bound is limits.max_request_bytes, checked in validate(). */
    U32(limits.max_content_bytes, 1, UINT32_MAX, 16384),
    U32(limits.max_mentions, 0, UINT32_MAX, 100),
    U32(limits.max_group_members, 2, UINT32_MAX, 10000),
    U32(presence.timeout_seconds, 1, UINT32_MAX, 90),
    U32(rooms.retain_messages, 1, UINT32_MAX, 1000),
    U32(retention.days, 0, UINT32_MAX, 0),
    U32(writer.max_batch, 1, 65536, 256),
    U32(writer.max_queued, 1, 65536, 256),
    CHOICE(log.level, "info", log_levels),
    STR(api.listen, ""),
    STR(api.cert_file, ""),
    STR(api.key_file, ""),
    STR(api.ca_file, ""),
    U32(api.max_body_bytes, 1024, 64 * 1024 * 1024, 1048576),
    U32(api.workers, 1, 256, 4),
};

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

/* Checks the merged result, so a default that a changed key invalidates is caught too. */
static gim_err validate(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc = cfgtable_validate(cfg, keys, NKEYS, errbuf, errlen);
    if (rc != GIM_OK)
        goto out;
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
    rc = check_urls(cfg, errbuf, errlen);
out:
    return rc;
}

/* ---- public --------------------------------------------------------------- */

gim_err config_load(const char *path, struct gim_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc;
    struct raw_config *r = NULL;

    if (errbuf && errlen > 0)
        errbuf[0] = '\0';
    memset(cfg, 0, sizeof *cfg);
    rc = cfgtable_defaults(cfg, keys, NKEYS);
    if (rc != GIM_OK) {
        cfgtable_err(errbuf, errlen, "out of memory");
        goto out;
    }
    if (path) {
        rc = cfgtable_load_yaml(path, &top_schema, (void **)&r, errbuf, errlen);
        if (rc != GIM_OK)
            goto out;
        /* r is NULL for a file with no keys at all (empty, or only comments). */
        if (r && (rc = cfgtable_overlay(cfg, r, keys, NKEYS, errbuf, errlen)) != GIM_OK)
            goto out;
    }
    rc = validate(cfg, errbuf, errlen);
out:
    cfgtable_free_yaml(&top_schema, r);
    return rc;
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
