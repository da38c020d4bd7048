#include "config.h"

#include <cyaml/cyaml.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"

/* A config file is a few kilobytes; the cap keeps a wrong path such as /dev/zero from hanging. */
#define CONFIG_MAX_FILE_BYTES (1024 * 1024)

/*
 * What libcyaml loads: every scalar is a string and every field optional, so
 * a NULL pointer means "absent, keep the default". Integers and booleans are
 * deliberately strings: libcyaml 1.3.1 reads "12abc" as the integer 12, "1.5"
 * as 1, and any boolean other than false/no/off/0 (e.g. the typo "flase") as
 * true. parse_u32/parse_bool below are strict instead. Member names equal the
 * YAML keys and the gim_config members so one macro can name all three.
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
};

struct raw_log {
    char *level;
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
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    SCALAR(struct raw_log, level),
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
    CYAML_FIELD_END,
};

/* POINTER_NULL: a file holding just "---" or "~" is an empty document, i.e. no keys set. */
static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER_NULL_STR, struct raw_config, top_fields),
};

/* ---- the key table: defaults, overlay, range checks and printing --------- */

enum kind { K_URLS, K_STR, K_U32, K_BOOL };

struct key {
    const char *path; /* dotted YAML path, also the member designator */
    enum kind kind;
    size_t cfg_off, raw_off;
    size_t cfg_count_off, raw_count_off; /* K_URLS */
    uint32_t min, max;                   /* K_U32 range; K_URLS entry count */
    uint32_t def_u32;                    /* K_U32, K_BOOL */
    const char *def_str;                 /* K_STR */
    const char *const *def_list;         /* K_URLS, NULL-terminated */
    const char *const *choices;          /* K_STR, NULL-terminated; NULL = anything */
    bool secret;                         /* K_STR: masked by config_print */
};

#define OFFS(m) .cfg_off = offsetof(struct gim_config, m), .raw_off = offsetof(struct raw_config, m)
#define URLS(m, lo, defs)                                                                          \
    {                                                                                              \
        .path = #m, .kind = K_URLS, OFFS(m),                                                       \
        .cfg_count_off = offsetof(struct gim_config, m##_count),                                   \
        .raw_count_off = offsetof(struct raw_config, m##_count), .min = lo,                        \
        .max = CONFIG_MAX_URLS, .def_list = defs                                                   \
    }
#define STR(m, def)                                                                                \
    {                                                                                              \
        .path = #m, .kind = K_STR, OFFS(m), .def_str = def                                         \
    }
#define CHOICE(m, def, list)                                                                       \
    {                                                                                              \
        .path = #m, .kind = K_STR, OFFS(m), .def_str = def, .choices = list                        \
    }
#define SECRET(m, def)                                                                             \
    {                                                                                              \
        .path = #m, .kind = K_STR, OFFS(m), .def_str = def, .secret = true                         \
    }
#define U32(m, lo, hi, def)                                                                        \
    {                                                                                              \
        .path = #m, .kind = K_U32, OFFS(m), .min = lo, .max = hi, .def_u32 = def                   \
    }
#define BOOL(m, def)                                                                               \
    {                                                                                              \
        .path = #m, .kind = K_BOOL, OFFS(m), .def_u32 = def                                        \
    }

static const char *const default_listen[] = {"tcp://127.0.0.1:7400", "ipc:///tmp/gim-logic.ipc",
                                             NULL};
static const char *const default_publish[] = {"tcp://127.0.0.1:7401", NULL};
/* SQLite's PRAGMA synchronous levels. */
static const char *const synchronous_modes[] = {"off", "normal", "full", "extra", NULL};
/* Must match log_level_parse(). */
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* In the order config_print writes them, which is the example file's order. */
static const struct key keys[] = {
    URLS(listen, 1, default_listen),
    URLS(publish, 1, default_publish),
    STR(http, "http://127.0.0.1:7480"),
    U32(workers, 1, 256, 16),
    U32(contexts, 1, 65536, 256),
    STR(database.path, "data/gim.db"),
    CHOICE(database.synchronous, "full", synchronous_modes),
    U32(database.busy_timeout_ms, 0, 600000, 5000),
    U32(database.cache_mb, 0, UINT32_MAX, 64),
    U32(database.reader_cache_mb, 0, UINT32_MAX, 8),
    U32(database.mmap_mb, 0, UINT32_MAX, 256),
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
    CHOICE(log.level, "info", log_levels),
};

#define NKEYS (sizeof keys / sizeof keys[0])

static void *at(const void *base, size_t off)
{
    return (char *)base + off;
}

/* ---- errors --------------------------------------------------------------- */

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
    /* Values quoted from the file may span lines; the caller logs exactly one. */
    for (char *p = errbuf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/*
 * libcyaml reports a load error as one message followed by a backtrace,
 * innermost frame first, each frame a separate log call. We keep the message
 * and the frames and turn them into "dotted.path: message" afterwards.
 */
struct cyaml_frame {
    char name[64];  /* mapping key; empty for a sequence entry */
    unsigned index; /* libcyaml counts entries from 1 */
    size_t line;
};

struct cyaml_capture {
    char problem[512];
    struct cyaml_frame frames[16];
    unsigned nframes;
};

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct cyaml_capture *cap = ctx;
    char line[512];
    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(line, sizeof line, fmt, args);
    line[strcspn(line, "\n")] = '\0';

    if (cap->nframes < sizeof cap->frames / sizeof cap->frames[0]) {
        struct cyaml_frame *f = &cap->frames[cap->nframes];
        memset(f, 0, sizeof *f);
        if (sscanf(line, "  in mapping field '%63[^']' (line: %zu", f->name, &f->line) == 2 ||
            sscanf(line, "  in sequence entry '%u' (line: %zu", &f->index, &f->line) == 2) {
            cap->nframes++;
            return;
        }
    }
    if (line[0] == ' ' || cap->problem[0])
        return; /* other frames ("in mapping"), or a follow-up to the first problem */
    const char *msg = line;
    if (strncmp(msg, "Load: ", 6) == 0)
        msg += 6;
    if (strcmp(msg, "Backtrace:") == 0)
        return;
    snprintf(cap->problem, sizeof cap->problem, "%s", msg);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void report_cyaml(const struct cyaml_capture *cap, cyaml_err_t ce, const char *file,
                         char *errbuf, size_t errlen)
{
    static const char unknown[] = "Unexpected key: ";
    static const char duplicate[] = "Mapping field already seen: ";
    char where[512] = "";
    size_t len = 0;
    const char *msg = cap->problem[0] ? cap->problem : cyaml_strerror(ce);
    unsigned skip = 0;

    /* A wrong entry count names an entry frame, but the sequence itself is at fault. */
    if ((starts_with(msg, "Excessive entries") || starts_with(msg, "Insufficient entries")) &&
        cap->nframes > 0 && !cap->frames[0].name[0])
        skip = 1;
    for (unsigned i = cap->nframes; i-- > skip && len < sizeof where;) {
        int n;
        if (cap->frames[i].name[0])
            n = snprintf(where + len, sizeof where - len, "%s%s", len ? "." : "",
                         cap->frames[i].name);
        else
            n = snprintf(where + len, sizeof where - len, "[%u]",
                         cap->frames[i].index ? cap->frames[i].index - 1 : 0);
        if (n > 0)
            len += (size_t)n;
    }
    if (len >= sizeof where)
        len = sizeof where - 1;

    if (starts_with(msg, unknown)) {
        snprintf(where + len, sizeof where - len, "%s%s", len ? "." : "", msg + strlen(unknown));
        msg = "unknown key";
    } else if (starts_with(msg, duplicate)) {
        msg = "duplicate key";
    }

    size_t msglen = strlen(msg);
    while (msglen > 0 && msg[msglen - 1] == '.')
        msglen--;
    const char *subject = where[0] ? where : file;
    /* libyaml's own position is not passed on; the enclosing value's line is the next best. */
    if (starts_with(msg, "libyaml:") && cap->nframes > 0)
        set_err(errbuf, errlen, "%s: %.*s (near line %zu)", subject, (int)msglen, msg,
                cap->frames[0].line);
    else
        set_err(errbuf, errlen, "%s: %.*s", subject, (int)msglen, msg);
}

/* ---- scalars -------------------------------------------------------------- */

/* Decimal digits only: no sign, no 0x, no trailing text. */
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

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
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
    char *copy[CONFIG_MAX_URLS] = {0};
    gim_err rc = GIM_OK;
    if (n > CONFIG_MAX_URLS)
        n = CONFIG_MAX_URLS;
    for (unsigned i = 0; i < n; i++) {
        copy[i] = strdup(src[i]);
        if (!copy[i]) {
            rc = GIM_ENOMEM;
            goto out;
        }
    }
    for (unsigned i = 0; i < CONFIG_MAX_URLS; i++)
        free(dst[i]);
    memcpy(dst, copy, sizeof copy);
    memset(copy, 0, sizeof copy);
    *count = n;
out:
    for (unsigned i = 0; i < CONFIG_MAX_URLS; i++)
        free(copy[i]);
    return rc;
}

/* ---- the passes over the key table ---------------------------------------- */

static gim_err set_defaults(struct gim_config *cfg)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < NKEYS && rc == GIM_OK; i++) {
        const struct key *k = &keys[i];
        switch (k->kind) {
        case K_URLS: {
            unsigned n = 0;
            while (k->def_list[n])
                n++;
            rc = replace_urls(at(cfg, k->cfg_off), at(cfg, k->cfg_count_off), k->def_list, n);
            break;
        }
        case K_STR:
            rc = replace_str(at(cfg, k->cfg_off), k->def_str);
            break;
        case K_U32:
            *(uint32_t *)at(cfg, k->cfg_off) = k->def_u32;
            break;
        case K_BOOL:
            *(bool *)at(cfg, k->cfg_off) = k->def_u32 != 0;
            break;
        }
    }
    return rc;
}

static gim_err overlay_key(struct gim_config *cfg, const struct raw_config *r, const struct key *k,
                           char *errbuf, size_t errlen)
{
    if (k->kind == K_URLS) {
        char *const *src = *(char **const *)at(r, k->raw_off);
        unsigned n = *(const unsigned *)at(r, k->raw_count_off);
        if (!src)
            return GIM_OK;
        return replace_urls(at(cfg, k->cfg_off), at(cfg, k->cfg_count_off),
                            (const char *const *)src, n);
    }
    const char *s = *(char *const *)at(r, k->raw_off);
    if (!s)
        return GIM_OK;
    switch (k->kind) {
    case K_STR:
        return replace_str(at(cfg, k->cfg_off), s);
    case K_U32:
        if (parse_u32(s, at(cfg, k->cfg_off)))
            return GIM_OK;
        set_err(errbuf, errlen, "%s: expected an unsigned 32-bit integer, got '%s'", k->path, s);
        return GIM_ECONFIG;
    case K_BOOL:
        if (parse_bool(s, at(cfg, k->cfg_off)))
            return GIM_OK;
        set_err(errbuf, errlen, "%s: expected true or false, got '%s'", k->path, s);
        return GIM_ECONFIG;
    case K_URLS:
        break;
    }
    return GIM_OK;
}

static gim_err overlay(struct gim_config *cfg, const struct raw_config *r, char *errbuf,
                       size_t errlen)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < NKEYS; i++) {
        rc = overlay_key(cfg, r, &keys[i], errbuf, errlen);
        if (rc != GIM_OK)
            goto out;
    }
out:
    if (rc == GIM_ENOMEM)
        set_err(errbuf, errlen, "out of memory");
    return rc;
}

static gim_err check_choice(const struct key *k, const char *v, char *errbuf, size_t errlen)
{
    char list[128] = "";
    size_t len = 0;
    for (const char *const *c = k->choices; *c; c++) {
        if (strcmp(v, *c) == 0)
            return GIM_OK;
        int n = snprintf(list + len, sizeof list - len, "%s%s", len ? "|" : "", *c);
        if (n > 0 && (size_t)n < sizeof list - len)
            len += (size_t)n;
    }
    set_err(errbuf, errlen, "%s: must be one of %s, got '%s'", k->path, list, v);
    return GIM_ECONFIG;
}

/* Checks the merged result, so a default that a changed key invalidates is caught too. */
static gim_err validate(const struct gim_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        switch (k->kind) {
        case K_URLS: {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            if (n < k->min || n > k->max) {
                set_err(errbuf, errlen, "%s: must have between %u and %u URLs, got %u", k->path,
                        k->min, k->max, n);
                rc = GIM_ECONFIG;
                goto out;
            }
            for (unsigned j = 0; j < n; j++) {
                if (!urls[j] || !urls[j][0]) {
                    set_err(errbuf, errlen, "%s[%u]: must not be empty", k->path, j);
                    rc = GIM_ECONFIG;
                    goto out;
                }
            }
            break;
        }
        case K_STR: {
            const char *v = *(char *const *)at(cfg, k->cfg_off);
            if (!k->choices)
                break;
            rc = check_choice(k, v ? v : "", errbuf, errlen);
            if (rc != GIM_OK)
                goto out;
            break;
        }
        case K_U32: {
            uint32_t v = *(const uint32_t *)at(cfg, k->cfg_off);
            if (v >= k->min && v <= k->max)
                break;
            if (k->max == UINT32_MAX)
                set_err(errbuf, errlen, "%s: must be at least %u, got %u", k->path, k->min, v);
            else if (k->min == 0)
                set_err(errbuf, errlen, "%s: must be at most %u, got %u", k->path, k->max, v);
            else
                set_err(errbuf, errlen, "%s: must be between %u and %u, got %u", k->path, k->min,
                        k->max, v);
            rc = GIM_ECONFIG;
            goto out;
        }
        case K_BOOL:
            break;
        }
    }

    if (cfg->limits.max_content_bytes > cfg->limits.max_request_bytes) {
        set_err(errbuf, errlen,
                "limits.max_content_bytes: must be at most limits.max_request_bytes (%u), got %u",
                cfg->limits.max_request_bytes, cfg->limits.max_content_bytes);
        rc = GIM_ECONFIG;
        goto out;
    }
    /* Every message the limits accept must fit a sync or room page on its own. */
    size_t one = message_page_worst_single(cfg->limits.max_content_bytes, cfg->limits.max_mentions);
    if (cfg->sync.max_bytes < one) {
        set_err(errbuf, errlen,
                "sync.max_bytes: must be at least %zu to hold one message of "
                "limits.max_content_bytes (%u) and limits.max_mentions (%u), got %u",
                one, cfg->limits.max_content_bytes, cfg->limits.max_mentions, cfg->sync.max_bytes);
        rc = GIM_ECONFIG;
        goto out;
    }
    /* Half a TLS setup would silently leave tls+tcp:// listeners unusable. */
    bool have_cert = cfg->tls.cert_file && cfg->tls.cert_file[0];
    bool have_key = cfg->tls.key_file && cfg->tls.key_file[0];
    if (have_cert != have_key) {
        set_err(errbuf, errlen, "%s: required when %s is set",
                have_cert ? "tls.key_file" : "tls.cert_file",
                have_cert ? "tls.cert_file" : "tls.key_file");
        rc = GIM_ECONFIG;
        goto out;
    }
out:
    return rc;
}

/* ---- file reading --------------------------------------------------------- */

static gim_err read_file(const char *path, char **text, size_t *len, char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    size_t cap = 4096, n = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = GIM_ECONFIG;
        goto out;
    }
    buf = malloc(cap);
    if (!buf) {
        rc = GIM_ENOMEM;
        set_err(errbuf, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (ferror(f)) {
            set_err(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
            rc = GIM_ECONFIG;
            goto out;
        }
        if (feof(f))
            break;
        if (cap >= CONFIG_MAX_FILE_BYTES) {
            set_err(errbuf, errlen, "cannot read %s: larger than %d bytes", path,
                    CONFIG_MAX_FILE_BYTES);
            rc = GIM_ECONFIG;
            goto out;
        }
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            rc = GIM_ENOMEM;
            set_err(errbuf, errlen, "out of memory");
            goto out;
        }
        buf = bigger;
        cap *= 2;
    }
    *text = buf;
    *len = n;
    buf = NULL;
out:
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

/* ---- public --------------------------------------------------------------- */

gim_err config_load(const char *path, struct gim_config *cfg, char *errbuf, size_t errlen)
{
    gim_err rc;
    char *text = NULL;
    size_t len = 0;
    struct raw_config *r = NULL;
    struct cyaml_capture cap = {0};
    const cyaml_config_t cc = {
        .log_fn = capture_log,
        .log_ctx = &cap,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };

    if (errbuf && errlen > 0)
        errbuf[0] = '\0';
    memset(cfg, 0, sizeof *cfg);
    rc = set_defaults(cfg);
    if (rc != GIM_OK) {
        set_err(errbuf, errlen, "out of memory");
        goto out;
    }
    if (path) {
        rc = read_file(path, &text, &len, errbuf, errlen);
        if (rc != GIM_OK)
            goto out;
        cyaml_err_t ce = cyaml_load_data((const uint8_t *)text, len, &cc, &top_schema,
                                         (cyaml_data_t **)&r, NULL);
        if (ce == CYAML_ERR_OOM) {
            set_err(errbuf, errlen, "out of memory");
            rc = GIM_ENOMEM;
            goto out;
        }
        if (ce != CYAML_OK) {
            report_cyaml(&cap, ce, path, errbuf, errlen);
            rc = GIM_ECONFIG;
            goto out;
        }
        /* r is NULL for a file with no keys at all (empty, or only comments). */
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

void config_free(struct gim_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->kind == K_URLS) {
            char **urls = at(cfg, k->cfg_off);
            unsigned *n = at(cfg, k->cfg_count_off);
            for (unsigned j = 0; j < CONFIG_MAX_URLS; j++)
                free(urls[j]);
            *n = 0;
        } else if (k->kind == K_STR) {
            free(*(char **)at(cfg, k->cfg_off));
        }
    }
    memset(cfg, 0, sizeof *cfg);
}

/* Double-quoted so that any value, e.g. one with ": " or a leading '*', reads back verbatim. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

void config_print(const struct gim_config *cfg, FILE *out)
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
        switch (k->kind) {
        case K_URLS: {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            if (n == 0)
                fputs(" []", out);
            for (unsigned j = 0; j < n && j < CONFIG_MAX_URLS; j++) {
                fprintf(out, "\n%s  - ", indent);
                print_quoted(out, urls[j]);
            }
            break;
        }
        case K_STR: {
            const char *v = *(char *const *)at(cfg, k->cfg_off);
            fputc(' ', out);
            print_quoted(out, k->secret && v && v[0] ? "***" : v);
            break;
        }
        case K_U32:
            fprintf(out, " %u", *(const uint32_t *)at(cfg, k->cfg_off));
            break;
        case K_BOOL:
            fprintf(out, " %s", *(const bool *)at(cfg, k->cfg_off) ? "true" : "false");
            break;
        }
        fputc('\n', out);
    }
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
