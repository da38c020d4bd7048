#include "gw_config.h"

#include <cyaml/cyaml.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1024 * 1024)

/*
 * What libcyaml loads: every scalar a string and every field optional (NULL
 * = keep the default), for the reason src/config.c gives: libcyaml 1.3.1
 * reads "12abc" as 12. parse_u32 below is strict.
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

enum kind { K_URLS, K_STR, K_U32 };

struct key {
    const char *path;
    enum kind kind;
    size_t cfg_off, raw_off, cfg_count_off, raw_count_off;
    uint32_t min, max, def_u32;
    const char *def_str;
    const char *const *def_list;
    const char *const *choices;
};

#define OFFS(m) .cfg_off = offsetof(struct gw_config, m), .raw_off = offsetof(struct raw_config, m)
#define URLS(m, defs)                                                                              \
    {                                                                                              \
        .path = #m, .kind = K_URLS, OFFS(m),                                                       \
        .cfg_count_off = offsetof(struct gw_config, m##_count),                                    \
        .raw_count_off = offsetof(struct raw_config, m##_count), .def_list = defs                  \
    }
#define STR(m, def, ch)                                                                            \
    {                                                                                              \
        .path = #m, .kind = K_STR, OFFS(m), .def_str = def, .choices = ch                          \
    }
#define U32(m, lo, hi, def)                                                                        \
    {                                                                                              \
        .path = #m, .kind = K_U32, OFFS(m), .min = lo, .max = hi, .def_u32 = def                   \
    }

static const char *const default_requests[] = {"tcp://127.0.0.1:7400", NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* In print order (the example file's order); listeners are printed after gateway_id. */
static const struct key keys[] = {
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

static void *at(const void *base, size_t off)
{
    return (char *)base + off;
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    for (char *p = errbuf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* libcyaml's first error line and the innermost mapping key it names (see src/config.c). */
struct capture {
    char problem[512];
    char field[64];
};

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct capture *cap = ctx;
    char line[512], name[64];
    size_t lineno;
    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(line, sizeof line, fmt, args);
    line[strcspn(line, "\n")] = '\0';
    if (sscanf(line, "  in mapping field '%63[^']' (line: %zu", name, &lineno) == 2) {
        if (!cap->field[0])
            snprintf(cap->field, sizeof cap->field, "%s", name);
        return;
    }
    if (line[0] == ' ' || cap->problem[0] || strcmp(line, "Backtrace:") == 0)
        return;
    snprintf(cap->problem, sizeof cap->problem, "%s",
             strncmp(line, "Load: ", 6) == 0 ? line + 6 : line);
}

static bool parse_u32(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

static gim_err replace_str(char **dst, const char *src)
{
    char *copy = strdup(src);
    if (!copy)
        return GIM_ENOMEM;
    free(*dst);
    *dst = copy;
    return GIM_OK;
}

static gim_err replace_urls(char **dst, unsigned *count, const char *const *src, unsigned n)
{
    for (unsigned i = 0; i < GWCFG_MAX_URLS; i++) {
        free(dst[i]);
        dst[i] = NULL;
    }
    *count = 0;
    for (unsigned i = 0; i < n && i < GWCFG_MAX_URLS; i++) {
        if (!(dst[i] = strdup(src[i])))
            return GIM_ENOMEM;
        *count = i + 1;
    }
    return GIM_OK;
}

static gim_err set_defaults(struct gw_config *cfg)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < NKEYS && rc == GIM_OK; i++) {
        const struct key *k = &keys[i];
        if (k->kind == K_URLS) {
            unsigned n = 0;
            while (k->def_list[n])
                n++;
            rc = replace_urls(at(cfg, k->cfg_off), at(cfg, k->cfg_count_off), k->def_list, n);
        } else if (k->kind == K_STR) {
            rc = replace_str(at(cfg, k->cfg_off), k->def_str);
        } else {
            *(uint32_t *)at(cfg, k->cfg_off) = k->def_u32;
        }
    }
    /* gim's seed-era test clients connect here with no flags. */
    static const struct {
        const char *url;
        enum framing f;
    } def[] = {{"tcp://:8080", FRAMING_BE16}, {"ws://:8081/ws", FRAMING_WS}};
    for (unsigned i = 0; i < 2 && rc == GIM_OK; i++) {
        cfg->listeners[i].framing = def[i].f;
        rc = replace_str(&cfg->listeners[i].url, def[i].url);
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
            set_err(errbuf, errlen, "listeners[%u].url: required", i);
            return GIM_ECONFIG;
        }
        if (is_ws_url(l->url)) {
            if (l->framing) {
                set_err(errbuf, errlen,
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
                set_err(errbuf, errlen,
                        "listeners[%u].framing: must be one of be16|uvarint, got '%s'", i,
                        l->framing);
                return GIM_ECONFIG;
            }
        } else {
            set_err(errbuf, errlen,
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
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < NKEYS && rc == GIM_OK; i++) {
        const struct key *k = &keys[i];
        if (k->kind == K_URLS) {
            char *const *src = *(char **const *)at(r, k->raw_off);
            if (src)
                rc = replace_urls(at(cfg, k->cfg_off), at(cfg, k->cfg_count_off),
                                  (const char *const *)src,
                                  *(const unsigned *)at(r, k->raw_count_off));
            continue;
        }
        const char *s = *(char *const *)at(r, k->raw_off);
        if (!s)
            continue;
        if (k->kind == K_STR) {
            rc = replace_str(at(cfg, k->cfg_off), s);
        } else if (!parse_u32(s, at(cfg, k->cfg_off))) {
            set_err(errbuf, errlen, "%s: expected an unsigned 32-bit integer, got '%s'", k->path,
                    s);
            return GIM_ECONFIG;
        }
    }
    if (rc == GIM_OK && r->listeners)
        rc = overlay_listeners(cfg, r, errbuf, errlen);
    if (rc == GIM_ENOMEM)
        set_err(errbuf, errlen, "out of memory");
    return rc;
}

static gim_err validate(const struct gw_config *cfg, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->kind == K_U32) {
            uint32_t v = *(const uint32_t *)at(cfg, k->cfg_off);
            if (v < k->min || v > k->max) {
                set_err(errbuf, errlen, "%s: must be between %u and %u, got %u", k->path, k->min,
                        k->max, v);
                return GIM_ECONFIG;
            }
        } else if (k->kind == K_STR && k->choices) {
            const char *v = *(char *const *)at(cfg, k->cfg_off);
            bool ok = false;
            for (const char *const *c = k->choices; *c && !ok; c++)
                ok = strcmp(v, *c) == 0;
            if (!ok) {
                set_err(errbuf, errlen, "%s: not a valid value: '%s'", k->path, v);
                return GIM_ECONFIG;
            }
        } else if (k->kind == K_URLS) {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            for (unsigned j = 0; j < n; j++) {
                if (!urls[j][0]) {
                    set_err(errbuf, errlen, "%s[%u]: must not be empty", k->path, j);
                    return GIM_ECONFIG;
                }
            }
        }
    }
    if (strlen(cfg->gateway_id) > 64 || strchr(cfg->gateway_id, '\n')) {
        set_err(errbuf, errlen, "gateway_id: at most 64 bytes and no newline");
        return GIM_ECONFIG;
    }
    bool tls_needed = false;
    for (unsigned i = 0; i < cfg->listeners_count; i++)
        tls_needed |= strncmp(cfg->listeners[i].url, "tls+tcp://", 10) == 0 ||
                      strncmp(cfg->listeners[i].url, "wss://", 6) == 0;
    if (tls_needed && (!cfg->tls.cert_file[0] || !cfg->tls.key_file[0])) {
        set_err(errbuf, errlen,
                "tls.cert_file: tls+tcp:// and wss:// listeners need "
                "tls.cert_file and tls.key_file");
        return GIM_ECONFIG;
    }
    if (cfg->conn.queue_soft_frames > cfg->conn.queue_hard_frames ||
        cfg->conn.queue_soft_bytes > cfg->conn.queue_hard_bytes) {
        set_err(errbuf, errlen, "conn.queue_soft_frames/bytes: must not exceed the hard limits");
        return GIM_ECONFIG;
    }
    return GIM_OK;
}

static gim_err read_file(const char *path, char **text, size_t *len, char *errbuf, size_t errlen)
{
    gim_err rc = GIM_ECONFIG;
    FILE *f = fopen(path, "rb");
    char *buf = malloc(MAX_FILE_BYTES + 1);
    size_t n = 0;
    if (!f || !buf) {
        set_err(errbuf, errlen, "cannot read %s: %s", path, f ? "out of memory" : strerror(errno));
        goto out;
    }
    n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    if (ferror(f) || n > MAX_FILE_BYTES) {
        set_err(errbuf, errlen, "cannot read %s: %s", path,
                ferror(f) ? strerror(errno) : "larger than 1 MiB");
        goto out;
    }
    *text = buf;
    *len = n;
    buf = NULL;
    rc = GIM_OK;
out:
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

gim_err gwcfg_load(const char *path, struct gw_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc;
    char *text = NULL;
    size_t len = 0;
    struct raw_config *r = NULL;
    struct capture cap = {0};
    const cyaml_config_t cc = {.log_fn = capture_log,
                               .log_ctx = &cap,
                               .mem_fn = cyaml_mem,
                               .log_level = CYAML_LOG_ERROR,
                               .flags = CYAML_CFG_DEFAULT};
    if (errbuf && errlen)
        errbuf[0] = '\0';
    memset(cfg, 0, sizeof *cfg);
    if ((rc = set_defaults(cfg)) != GIM_OK) {
        set_err(errbuf, errlen, "out of memory");
        goto out;
    }
    if (path) {
        if ((rc = read_file(path, &text, &len, errbuf, errlen)) != GIM_OK)
            goto out;
        cyaml_err_t ce = cyaml_load_data((const uint8_t *)text, len, &cc, &top_schema,
                                         (cyaml_data_t **)&r, NULL);
        if (ce != CYAML_OK) {
            const char *msg = cap.problem[0] ? cap.problem : cyaml_strerror(ce);
            if (strncmp(msg, "Unexpected key: ", 16) == 0)
                set_err(errbuf, errlen, "%s%s%s: unknown key", cap.field, cap.field[0] ? "." : "",
                        msg + 16);
            else
                set_err(errbuf, errlen, "%s: %s", cap.field[0] ? cap.field : path, msg);
            rc = GIM_ECONFIG;
            goto out;
        }
        if (r && (rc = overlay(cfg, r, errbuf, errlen)) != GIM_OK)
            goto out;
    }
    rc = validate(cfg, errbuf, errlen);
out:
    if (r)
        cyaml_free(&cc, &top_schema, r, 0);
    free(text);
    return rc;
}

void gwcfg_free(struct gw_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->kind == K_URLS) {
            char **urls = at(cfg, k->cfg_off);
            for (unsigned j = 0; j < GWCFG_MAX_URLS; j++)
                free(urls[j]);
        } else if (k->kind == K_STR) {
            free(*(char **)at(cfg, k->cfg_off));
        }
    }
    for (unsigned i = 0; i < GWCFG_MAX_LISTENERS; i++)
        free(cfg->listeners[i].url);
    memset(cfg, 0, sizeof *cfg);
}

const char *gwcfg_framing_name(enum framing f)
{
    return f == FRAMING_BE16 ? "be16" : f == FRAMING_UVARINT ? "uvarint" : "ws";
}

static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

void gwcfg_print(const struct gw_config *cfg, FILE *out)
{
    const char *section = NULL;
    size_t section_len = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *name = k->path, *indent = "";
        const char *dot = strchr(k->path, '.');
        if (dot) {
            size_t n = (size_t)(dot - k->path);
            if (!section || n != section_len || strncmp(section, k->path, n) != 0)
                fprintf(out, "%.*s:\n", (int)n, k->path);
            section = k->path;
            section_len = n;
            name = dot + 1;
            indent = "  ";
        } else {
            section = NULL;
        }
        fprintf(out, "%s%s:", indent, name);
        if (k->kind == K_URLS) {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            for (unsigned j = 0; j < n; j++) {
                fprintf(out, "\n%s  - ", indent);
                print_quoted(out, urls[j]);
            }
        } else if (k->kind == K_STR) {
            fputc(' ', out);
            print_quoted(out, *(char *const *)at(cfg, k->cfg_off));
        } else {
            fprintf(out, " %u", *(const uint32_t *)at(cfg, k->cfg_off));
        }
        fputc('\n', out);
        if (i == 0) {
            fputs("listeners:\n", out);
            for (unsigned j = 0; j < cfg->listeners_count; j++) {
                fputs("  - url: ", out);
                print_quoted(out, cfg->listeners[j].url);
                if (cfg->listeners[j].framing != FRAMING_WS)
                    fprintf(out, "\n    framing: %s",
                            gwcfg_framing_name(cfg->listeners[j].framing));
                fputc('\n', out);
            }
        }
    }
}
