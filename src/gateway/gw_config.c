#include "gw_config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtable.h"

/* One entry of "listeners" as libcyaml loads it (framing NULL = absent). */
struct raw_listener {
    char *url;
    char *framing;
};

static const cyaml_schema_field_t listener_fields[] = {
    CYAML_FIELD_STRING_PTR("url", CYAML_FLAG_OPTIONAL, struct raw_listener, url, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("framing", CYAML_FLAG_OPTIONAL, struct raw_listener, framing, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t listener_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_listener, listener_fields),
};

/* gim's seed-era test clients connect here with no flags. */
static const struct raw_listener default_listeners[] = {{"tcp://:8080", NULL},
                                                        {"ws://:8081/ws", NULL}};

static gim_err apply_listeners(void *cfg, const void *entries, unsigned n, char *errbuf,
                               size_t errlen);

#define C struct gw_config

static const char *const default_requests[] = {"tcp://127.0.0.1:7400", NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

_Static_assert(GWCFG_MAX_URLS == CFGTABLE_MAX_URLS, "the key table's URL arrays");

/* Every key, once (cfgtable.h), in print order: the example file's. */
static const struct cfgtable_key keys[] = {
    CFGTABLE_STR(C, gateway_id, ""),
    {.path = "listeners",
     .kind = CFGTABLE_LIST,
     .min = 1,
     .max = GWCFG_MAX_LISTENERS,
     .entry = &listener_schema,
     .def_entries = default_listeners,
     .def_count = 2,
     .apply = apply_listeners},
    CFGTABLE_STR(C, http, "http://127.0.0.1:8480"),
    CFGTABLE_URLS(C, logic.requests, default_requests),
    CFGTABLE_URLS(C, logic.publish, default_publish),
    CFGTABLE_U32(C, logic.timeout_ms, 100, 600000, 5000),
    CFGTABLE_U32(C, logic.attempts, 1, 10, 2),
    CFGTABLE_U32(C, logic.lease_seconds, 1, 3600, 30),
    CFGTABLE_STR(C, tls.cert_file, ""),
    CFGTABLE_STR(C, tls.key_file, ""),
    CFGTABLE_U32(C, conn.max_frame_bytes, 16, 16 * 1024 * 1024, 65535),
    CFGTABLE_U32(C, conn.idle_seconds, 1, UINT32_MAX / 1000, 720),
    CFGTABLE_U32(C, conn.write_timeout_ms, 10, UINT32_MAX, 10000),
    CFGTABLE_U32(C, conn.queue_soft_frames, 1, 1000000, 64),
    CFGTABLE_U32(C, conn.queue_soft_bytes, 1024, UINT32_MAX, 262144),
    CFGTABLE_U32(C, conn.queue_hard_frames, 1, 1000000, 1024),
    CFGTABLE_U32(C, conn.queue_hard_bytes, 1024, UINT32_MAX, 4194304),
    CFGTABLE_STR(C, web.root, "web"),
    CFGTABLE_STR(C, web.proto_dir, "proto"),
    CFGTABLE_U32(C, shutdown.drain_ms, 0, 600000, 10000),
    CFGTABLE_CHOICE(C, log.level, "info", log_levels),
};
#undef C

#define NKEYS (sizeof keys / sizeof keys[0])

static bool is_ws_url(const char *u)
{
    return strncmp(u, "ws://", 5) == 0 || strncmp(u, "wss://", 6) == 0;
}

static bool is_tcp_url(const char *u)
{
    return strncmp(u, "tcp://", 6) == 0 || strncmp(u, "tls+tcp://", 10) == 0;
}

/* Replaces cfg's listeners with n entries (the defaults or the file's), framing from the URL. */
static gim_err apply_listeners(void *c, const void *entries, unsigned n, char *errbuf,
                               size_t errlen)
{
    struct gw_config *cfg = c;
    const struct raw_listener *ls = entries;
    for (unsigned i = 0; i < GWCFG_MAX_LISTENERS; i++) {
        free(cfg->listeners[i].url);
        cfg->listeners[i].url = NULL;
    }
    cfg->listeners_count = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct raw_listener *l = &ls[i];
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

static gim_err validate(const struct gw_config *cfg, char *errbuf, size_t errlen)
{
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
    memset(cfg, 0, sizeof *cfg);
    gim_err rc = cfgtable_load(path, keys, NKEYS, cfg, errbuf, errlen);
    return rc == GIM_OK ? validate(cfg, errbuf, errlen) : rc;
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

/* The key table's order; cfgtable_print leaves the listeners (keys[1]) to us. */
void gwcfg_print(const struct gw_config *cfg, FILE *out)
{
    cfgtable_print(cfg, keys, 2, out);
    fputs("listeners:\n", out);
    for (unsigned j = 0; j < cfg->listeners_count; j++) {
        fputs("  - url: ", out);
        cfgtable_print_quoted(out, cfg->listeners[j].url);
        if (cfg->listeners[j].framing != FRAMING_WS)
            fprintf(out, "\n    framing: %s", gwcfg_framing_name(cfg->listeners[j].framing));
        fputc('\n', out);
    }
    cfgtable_print(cfg, keys + 2, NKEYS - 2, out);
}
