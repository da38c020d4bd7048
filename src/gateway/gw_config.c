#include "gw_config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtable.h"

/*
 * What libcyaml loads: every scalar a string and every field optional (NULL
 * = keep the default), parsed strictly by cfgtable (cfgtable.h says why).
 */
struct raw_listener {
    char *url;
    char *framing;
};

struct raw_logic {
    char **requests;
    unsigned requests_count;
    char **publish;
    unsigned publish_count;
    char *timeout_ms;
    char *attempts;
    char *lease_seconds;
};

struct raw_tls {
    char *cert_file;
    char *key_file;
};

struct raw_conn {
    char *max_frame_bytes;
    char *idle_seconds;
    char *write_timeout_ms;
    char *queue_soft_frames;
    char *queue_soft_bytes;
    char *queue_hard_frames;
    char *queue_hard_bytes;
};

struct raw_web {
    char *root;
    char *proto_dir;
};

struct raw_shutdown {
    char *drain_ms;
};

struct raw_log {
    char *level;
};

struct raw_config {
    char *gateway_id;
    struct raw_listener *listeners;
    unsigned listeners_count;
    char *http;
    struct raw_logic logic;
    struct raw_tls tls;
    struct raw_conn conn;
    struct raw_web web;
    struct raw_shutdown shutdown;
    struct raw_log log;
};

/* ---- libcyaml schema ------------------------------------------------------ */

#define SCALAR(type, member)                                                                       \
    CYAML_FIELD_STRING_PTR(#member, CYAML_FLAG_OPTIONAL, type, member, 0, CYAML_UNLIMITED)
#define SECTION(member, fields)                                                                    \
    CYAML_FIELD_MAPPING(#member, CYAML_FLAG_OPTIONAL, struct raw_config, member, fields)
#define URL_LIST(type, member)                                                                     \
    CYAML_FIELD_SEQUENCE(#member, CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, type, member,          \
                         &url_schema, 1, GWCFG_MAX_URLS)

static const cyaml_schema_value_t url_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t listener_fields[] = {
    SCALAR(struct raw_listener, url),
    SCALAR(struct raw_listener, framing),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t listener_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_listener, listener_fields),
};

static const cyaml_schema_field_t logic_fields[] = {
    URL_LIST(struct raw_logic, requests),    URL_LIST(struct raw_logic, publish),
    SCALAR(struct raw_logic, timeout_ms),    SCALAR(struct raw_logic, attempts),
    SCALAR(struct raw_logic, lease_seconds), CYAML_FIELD_END,
};

static const cyaml_schema_field_t tls_fields[] = {
    SCALAR(struct raw_tls, cert_file),
    SCALAR(struct raw_tls, key_file),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t conn_fields[] = {
    SCALAR(struct raw_conn, max_frame_bytes),  SCALAR(struct raw_conn, idle_seconds),
    SCALAR(struct raw_conn, write_timeout_ms), SCALAR(struct raw_conn, queue_soft_frames),
    SCALAR(struct raw_conn, queue_soft_bytes), SCALAR(struct raw_conn, queue_hard_frames),
    SCALAR(struct raw_conn, queue_hard_bytes), CYAML_FIELD_END,
};

static const cyaml_schema_field_t web_fields[] = {
    SCALAR(struct raw_web, root),
    SCALAR(struct raw_web, proto_dir),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t shutdown_fields[] = {
    SCALAR(struct raw_shutdown, drain_ms),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    SCALAR(struct raw_log, level),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t top_fields[] = {
    SCALAR(struct raw_config, gateway_id),
    CYAML_FIELD_SEQUENCE("listeners", CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, struct raw_config,
                         listeners, &listener_schema, 1, GWCFG_MAX_LISTENERS),
    SCALAR(struct raw_config, http),
    SECTION(logic, logic_fields),
    SECTION(tls, tls_fields),
    SECTION(conn, conn_fields),
    SECTION(web, web_fields),
    SECTION(shutdown, shutdown_fields),
    SECTION(log, log_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER_NULL_STR, struct raw_config, top_fields),
};

/* ---- the key table -------------------------------------------------------- */

_Static_assert(GWCFG_MAX_URLS == CFGTABLE_MAX_URLS, "the key table's URL arrays");

#define OFFS(m) .cfg_off = offsetof(struct gw_config, m), .raw_off = offsetof(struct raw_config, m)
#define URLS(m, defs)                                                                              \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_URLS, OFFS(m),                                                \
        .cfg_count_off = offsetof(struct gw_config, m##_count),                                    \
        .raw_count_off = offsetof(struct raw_config, m##_count), .min = 1, .max = GWCFG_MAX_URLS,  \
        .def_list = defs                                                                           \
    }
#define STR(m, def, ch)                                                                            \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_STR, OFFS(m), .def_str = def, .choices = ch                   \
    }
#define U32(m, lo, hi, def)                                                                        \
    {                                                                                              \
        .path = #m, .kind = CFGTABLE_U32, OFFS(m), .min = lo, .max = hi, .def_u32 = def            \
    }

static const char *const default_requests[] = {"tcp://127.0.0.1:7400", NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* In print order (the example file's order); listeners are printed after gateway_id. */
static const struct cfgtable_key keys[] = {
    STR(gateway_id, "", NULL),
    STR(http, "http://127.0.0.1:8480", NULL),
    URLS(logic.requests, default_requests),
    URLS(logic.publish, default_publish),
    U32(logic.timeout_ms, 100, 600000, 5000),
    U32(logic.attempts, 1, 10, 2),
    U32(logic.lease_seconds, 1, 3600, 30),
    STR(tls.cert_file, "", NULL),
    STR(tls.key_file, "", NULL),
    U32(conn.max_frame_bytes, 16, 16 * 1024 * 1024, 65535),
    U32(conn.idle_seconds, 1, UINT32_MAX / 1000, 720),
    U32(conn.write_timeout_ms, 10, UINT32_MAX, 10000),
    U32(conn.queue_soft_frames, 1, 1000000, 64),
    U32(conn.queue_soft_bytes, 1024, UINT32_MAX, 262144),
    U32(conn.queue_hard_frames, 1, 1000000, 1024),
    U32(conn.queue_hard_bytes, 1024, UINT32_MAX, 4194304),
    STR(web.root, "web", NULL),
    STR(web.proto_dir, "proto", NULL),
    U32(shutdown.drain_ms, 0, 600000, 10000),
    STR(log.level, "info", log_levels),
};

#define NKEYS (sizeof keys / sizeof keys[0])

/* Called on a zeroed cfg (gwcfg_load). */
static gim_err set_defaults(struct gw_config *cfg)
{
    gim_err rc = cfgtable_defaults(cfg, keys, NKEYS);
    /* gim's seed-era test clients connect here with no flags. */
    static const struct {
        const char *url;
        enum framing f;
    } def[] = {{"tcp://:8080", FRAMING_BE16}, {"ws://:8081/ws", FRAMING_WS}};
    for (unsigned i = 0; i < 2 && rc == GIM_OK; i++) {
        cfg->listeners[i].framing = def[i].f;
        if (!(cfg->listeners[i].url = strdup(def[i].url)))
            rc = GIM_ENOMEM;
        cfg->listeners_count = i + 1;
    }
    return rc;
}

static bool is_ws_url(const char *u)
{
    return strncmp(u, "ws://", 5) == 0 || strncmp(u, "wss://", 6) == 0;
}

static bool is_tcp_url(const char *u)
{
    return strncmp(u, "tcp://", 6) == 0 || strncmp(u, "tls+tcp://", 10) == 0;
}

static gim_err overlay_listeners(struct gw_config *cfg, const struct raw_config *r, char *errbuf,
                                 size_t errlen)
{
    for (unsigned i = 0; i < GWCFG_MAX_LISTENERS; i++) {
        free(cfg->listeners[i].url);
        cfg->listeners[i].url = NULL;
    }
    cfg->listeners_count = 0;
    for (unsigned i = 0; i < r->listeners_count; i++) {
        const struct raw_listener *l = &r->listeners[i];
        struct gw_listener *d = &cfg->listeners[i];
        if (!l->url || !l->url[0]) {
            cfgtable_err(errbuf, errlen, "listeners[%u].url: required", i);
            return GIM_ECONFIG;
        }
        if (is_ws_url(l->url)) {
            if (l->framing) {
                cfgtable_err(
                    errbuf, errlen,
                    "listeners[%u].framing: not allowed on a ws/wss listener (one WebSocket "
                    "message is one frame)",
                    i);
                return GIM_ECONFIG;
            }
            d->framing = FRAMING_WS;
        } else if (is_tcp_url(l->url)) {
            if (!l->framing || strcmp(l->framing, "be16") == 0) {
                d->framing = FRAMING_BE16;
            } else if (strcmp(l->framing, "uvarint") == 0) {
                d->framing = FRAMING_UVARINT;
            } else {
                cfgtable_err(errbuf, errlen,
                             "listeners[%u].framing: must be one of be16|uvarint, got '%s'", i,
                             l->framing);
                return GIM_ECONFIG;
            }
        } else {
            cfgtable_err(
                errbuf, errlen,
                "listeners[%u].url: must start with tcp://, tls+tcp://, ws:// or wss://, got "
                "'%s'",
                i, l->url);
            return GIM_ECONFIG;
        }
        if (!(d->url = strdup(l->url)))
            return GIM_ENOMEM;
        cfg->listeners_count = i + 1;
    }
    return GIM_OK;
}

static gim_err overlay(struct gw_config *cfg, const struct raw_config *r, char *errbuf,
                       size_t errlen)
{
    gim_err rc = cfgtable_overlay(cfg, r, keys, NKEYS, errbuf, errlen);
    if (rc == GIM_OK && r->listeners) {
        rc = overlay_listeners(cfg, r, errbuf, errlen);
        if (rc == GIM_ENOMEM)
            cfgtable_err(errbuf, errlen, "out of memory");
    }
    return rc;
}

static gim_err validate(const struct gw_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc = cfgtable_validate(cfg, keys, NKEYS, errbuf, errlen);
    if (rc != GIM_OK)
        return rc;
    if (strlen(cfg->gateway_id) > 64 || strchr(cfg->gateway_id, '\n')) {
        cfgtable_err(errbuf, errlen, "gateway_id: at most 64 bytes and no newline");
        return GIM_ECONFIG;
    }
    bool tls_needed = false;
    for (unsigned i = 0; i < cfg->listeners_count; i++)
        tls_needed |= strncmp(cfg->listeners[i].url, "tls+tcp://", 10) == 0 ||
                      strncmp(cfg->listeners[i].url, "wss://", 6) == 0;
    if (tls_needed && (!cfg->tls.cert_file[0] || !cfg->tls.key_file[0])) {
        cfgtable_err(errbuf, errlen,
                     "tls.cert_file: tls+tcp:// and wss:// listeners need "
                     "tls.cert_file and tls.key_file");
        return GIM_ECONFIG;
    }
    if (cfg->conn.queue_soft_frames > cfg->conn.queue_hard_frames ||
        cfg->conn.queue_soft_bytes > cfg->conn.queue_hard_bytes) {
        cfgtable_err(errbuf, errlen,
                     "conn.queue_soft_frames/bytes: must not exceed the hard limits");
        return GIM_ECONFIG;
    }
    return GIM_OK;
}

gim_err gwcfg_load(const char *path, struct gw_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc;
    struct raw_config *r = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    memset(cfg, 0, sizeof *cfg);
    if ((rc = set_defaults(cfg)) != GIM_OK) {
        cfgtable_err(errbuf, errlen, "out of memory");
        goto out;
    }
    if (path) {
        if ((rc = cfgtable_load_yaml(path, &top_schema, (void **)&r, errbuf, errlen)) != GIM_OK)
            goto out;
        if (r && (rc = overlay(cfg, r, errbuf, errlen)) != GIM_OK)
            goto out;
    }
    rc = validate(cfg, errbuf, errlen);
out:
    cfgtable_free_yaml(&top_schema, r);
    return rc;
}

void gwcfg_free(struct gw_config *cfg)
{
    if (!cfg)
        return;
    cfgtable_free(cfg, keys, NKEYS);
    for (unsigned i = 0; i < GWCFG_MAX_LISTENERS; i++)
        free(cfg->listeners[i].url);
    memset(cfg, 0, sizeof *cfg);
}

const char *gwcfg_framing_name(enum framing f)
{
    return f == FRAMING_BE16 ? "be16" : f == FRAMING_UVARINT ? "uvarint" : "ws";
}

/* The key table's order, but the listeners (not in the table) right after gateway_id (keys[0]). */
void gwcfg_print(const struct gw_config *cfg, FILE *out)
{
    cfgtable_print(cfg, keys, 1, out);
    fputs("listeners:\n", out);
    for (unsigned j = 0; j < cfg->listeners_count; j++) {
        fputs("  - url: ", out);
        cfgtable_print_quoted(out, cfg->listeners[j].url);
        if (cfg->listeners[j].framing != FRAMING_WS)
            fprintf(out, "\n    framing: %s", gwcfg_framing_name(cfg->listeners[j].framing));
        fputc('\n', out);
    }
    cfgtable_print(cfg, keys + 1, NKEYS - 1, out);
}
