#include "cfgtable.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "textfile.h"

/* A config file is a few kilobytes; the cap keeps a wrong path such as /dev/zero from hanging. */
#define CFGTABLE_MAX_FILE_BYTES (1024 * 1024)

static void *at(const void *base, size_t off)
{
    return (char *)base + off;
}

/* ---- errors --------------------------------------------------------------- */

void cfgtable_err(char *errbuf, size_t errlen, const char *fmt, ...)
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
        cfgtable_err(errbuf, errlen, "%s: %.*s (near line %zu)", subject, (int)msglen, msg,
                     cap->frames[0].line);
    else
        cfgtable_err(errbuf, errlen, "%s: %.*s", subject, (int)msglen, msg);
}

/* ---- scalars -------------------------------------------------------------- */

/* Decimal digits only: no sign, no 0x, no trailing text. */
bool cfgtable_parse_u32(const char *s, uint32_t *out)
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

bool cfgtable_parse_bool(const char *s, bool *out)
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
    char *copy[CFGTABLE_MAX_URLS] = {0};
    gim_err rc = GIM_OK;
    if (n > CFGTABLE_MAX_URLS)
        n = CFGTABLE_MAX_URLS;
    for (unsigned i = 0; i < n; i++) {
        copy[i] = strdup(src[i]);
        if (!copy[i]) {
            rc = GIM_ENOMEM;
            goto out;
        }
    }
    for (unsigned i = 0; i < CFGTABLE_MAX_URLS; i++)
        free(dst[i]);
    memcpy(dst, copy, sizeof copy);
    memset(copy, 0, sizeof copy);
    *count = n;
out:
    for (unsigned i = 0; i < CFGTABLE_MAX_URLS; i++)
        free(copy[i]);
    return rc;
}

/* ---- the passes over the key table ---------------------------------------- */

gim_err cfgtable_defaults(void *cfg, const struct cfgtable_key *keys, size_t nkeys)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < nkeys && rc == GIM_OK; i++) {
        const struct cfgtable_key *k = &keys[i];
        switch (k->kind) {
        case CFGTABLE_URLS: {
            unsigned n = 0;
            while (k->def_list[n])
                n++;
            rc = replace_urls(at(cfg, k->cfg_off), at(cfg, k->cfg_count_off), k->def_list, n);
            break;
        }
        case CFGTABLE_STR:
            rc = replace_str(at(cfg, k->cfg_off), k->def_str);
            break;
        case CFGTABLE_U32:
            *(uint32_t *)at(cfg, k->cfg_off) = k->def_u32;
            break;
        case CFGTABLE_BOOL:
            *(bool *)at(cfg, k->cfg_off) = k->def_u32 != 0;
            break;
        }
    }
    return rc;
}

static gim_err overlay_key(void *cfg, const void *r, const struct cfgtable_key *k, char *errbuf,
                           size_t errlen)
{
    if (k->kind == CFGTABLE_URLS) {
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
    case CFGTABLE_STR:
        return replace_str(at(cfg, k->cfg_off), s);
    case CFGTABLE_U32:
        if (cfgtable_parse_u32(s, at(cfg, k->cfg_off)))
            return GIM_OK;
        cfgtable_err(errbuf, errlen, "%s: expected an unsigned 32-bit integer, got '%s'", k->path,
                     s);
        return GIM_ECONFIG;
    case CFGTABLE_BOOL:
        if (cfgtable_parse_bool(s, at(cfg, k->cfg_off)))
            return GIM_OK;
        cfgtable_err(errbuf, errlen, "%s: expected true or false, got '%s'", k->path, s);
        return GIM_ECONFIG;
    case CFGTABLE_URLS:
        break;
    }
    return GIM_OK;
}

gim_err cfgtable_overlay(void *cfg, const void *r, const struct cfgtable_key *keys, size_t nkeys,
                         char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < nkeys; i++) {
        rc = overlay_key(cfg, r, &keys[i], errbuf, errlen);
        if (rc != GIM_OK)
            goto out;
    }
out:
    if (rc == GIM_ENOMEM)
        cfgtable_err(errbuf, errlen, "out of memory");
    return rc;
}

static gim_err check_choice(const struct cfgtable_key *k, const char *v, char *errbuf,
                            size_t errlen)
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
    cfgtable_err(errbuf, errlen, "%s: must be one of %s, got '%s'", k->path, list, v);
    return GIM_ECONFIG;
}

/* Checks the merged result, so a default that a changed key invalidates is caught too. */
gim_err cfgtable_validate(const void *cfg, const struct cfgtable_key *keys, size_t nkeys,
                          char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        switch (k->kind) {
        case CFGTABLE_URLS: {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            if (n < k->min || n > k->max) {
                cfgtable_err(errbuf, errlen, "%s: must have between %u and %u URLs, got %u",
                             k->path, k->min, k->max, n);
                rc = GIM_ECONFIG;
                goto out;
            }
            for (unsigned j = 0; j < n; j++) {
                if (!urls[j] || !urls[j][0]) {
                    cfgtable_err(errbuf, errlen, "%s[%u]: must not be empty", k->path, j);
                    rc = GIM_ECONFIG;
                    goto out;
                }
            }
            break;
        }
        case CFGTABLE_STR: {
            const char *v = *(char *const *)at(cfg, k->cfg_off);
            if (!k->choices)
                break;
            rc = check_choice(k, v ? v : "", errbuf, errlen);
            if (rc != GIM_OK)
                goto out;
            break;
        }
        case CFGTABLE_U32: {
            uint32_t v = *(const uint32_t *)at(cfg, k->cfg_off);
            if (v >= k->min && v <= k->max)
                break;
            if (k->max == UINT32_MAX)
                cfgtable_err(errbuf, errlen, "%s: must be at least %u, got %u", k->path, k->min, v);
            else if (k->min == 0)
                cfgtable_err(errbuf, errlen, "%s: must be at most %u, got %u", k->path, k->max, v);
            else
                cfgtable_err(errbuf, errlen, "%s: must be between %u and %u, got %u", k->path,
                             k->min, k->max, v);
            rc = GIM_ECONFIG;
            goto out;
        }
        case CFGTABLE_BOOL:
            break;
        }
    }

out:
    return rc;
}

/* ---- file reading --------------------------------------------------------- */

static gim_err read_file(const char *path, char **text, size_t *len, char *errbuf, size_t errlen)
{
    gim_err rc = textfile_read(path, CFGTABLE_MAX_FILE_BYTES, text, len);
    switch (rc) {
    case GIM_OK:
        break;
    case GIM_ENOMEM:
        cfgtable_err(errbuf, errlen, "out of memory");
        break;
    case GIM_ETOOLARGE:
        cfgtable_err(errbuf, errlen, "cannot read %s: larger than %d bytes", path,
                     CFGTABLE_MAX_FILE_BYTES);
        rc = GIM_ECONFIG;
        break;
    default:
        cfgtable_err(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        rc = GIM_ECONFIG;
        break;
    }
    return rc;
}

gim_err cfgtable_load_yaml(const char *path, const cyaml_schema_value_t *schema, void **raw,
                           char *errbuf, size_t errlen)
{
    gim_err rc;
    char *text = NULL;
    size_t len = 0;
    struct cyaml_capture cap = {0};
    const cyaml_config_t cc = {
        .log_fn = capture_log,
        .log_ctx = &cap,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };

    *raw = NULL;
    rc = read_file(path, &text, &len, errbuf, errlen);
    if (rc != GIM_OK)
        goto out;
    cyaml_err_t ce =
        cyaml_load_data((const uint8_t *)text, len, &cc, schema, (cyaml_data_t **)raw, NULL);
    if (ce == CYAML_ERR_OOM) {
        cfgtable_err(errbuf, errlen, "out of memory");
        rc = GIM_ENOMEM;
        goto out;
    }
    if (ce != CYAML_OK) {
        report_cyaml(&cap, ce, path, errbuf, errlen);
        rc = GIM_ECONFIG;
        goto out;
    }
out:
    if (rc != GIM_OK && *raw) {
        cfgtable_free_yaml(schema, *raw);
        *raw = NULL;
    }
    free(text);
    return rc;
}

void cfgtable_free_yaml(const cyaml_schema_value_t *schema, void *raw)
{
    /* libcyaml only needs the allocator to free; no log function. */
    const cyaml_config_t cc = {.mem_fn = cyaml_mem, .log_level = CYAML_LOG_ERROR};
    if (raw)
        cyaml_free(&cc, schema, raw, 0);
}

void cfgtable_free(void *cfg, const struct cfgtable_key *keys, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        if (k->kind == CFGTABLE_URLS) {
            char **urls = at(cfg, k->cfg_off);
            unsigned *n = at(cfg, k->cfg_count_off);
            for (unsigned j = 0; j < CFGTABLE_MAX_URLS; j++) {
                free(urls[j]);
                urls[j] = NULL;
            }
            *n = 0;
        } else if (k->kind == CFGTABLE_STR) {
            char **v = at(cfg, k->cfg_off);
            free(*v);
            *v = NULL;
        }
    }
}

/* Double-quoted so that any value, e.g. one with ": " or a leading '*', reads back verbatim. */
void cfgtable_print_quoted(FILE *out, const char *s)
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

void cfgtable_print(const void *cfg, const struct cfgtable_key *keys, size_t nkeys, FILE *out)
{
    const char *section = NULL;
    size_t section_len = 0;
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
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
        case CFGTABLE_URLS: {
            char *const *urls = at(cfg, k->cfg_off);
            unsigned n = *(const unsigned *)at(cfg, k->cfg_count_off);
            if (n == 0)
                fputs(" []", out);
            for (unsigned j = 0; j < n && j < CFGTABLE_MAX_URLS; j++) {
                fprintf(out, "\n%s  - ", indent);
                cfgtable_print_quoted(out, urls[j]);
            }
            break;
        }
        case CFGTABLE_STR: {
            const char *v = *(char *const *)at(cfg, k->cfg_off);
            fputc(' ', out);
            cfgtable_print_quoted(out, k->secret && v && v[0] ? "***" : v);
            break;
        }
        case CFGTABLE_U32:
            fprintf(out, " %u", *(const uint32_t *)at(cfg, k->cfg_off));
            break;
        case CFGTABLE_BOOL:
            fprintf(out, " %s", *(const bool *)at(cfg, k->cfg_off) ? "true" : "false");
            break;
        }
        fputc('\n', out);
    }
}

static bool str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

size_t cfgtable_changed(const void *a, const void *b, const struct cfgtable_key *keys, size_t nkeys,
                        const char **paths, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        bool differs = false;
        switch (k->kind) {
        case CFGTABLE_URLS: {
            char *const *ua = at(a, k->cfg_off), *const *ub = at(b, k->cfg_off);
            unsigned na = *(const unsigned *)at(a, k->cfg_count_off);
            differs = na != *(const unsigned *)at(b, k->cfg_count_off);
            for (unsigned j = 0; !differs && j < na && j < CFGTABLE_MAX_URLS; j++)
                differs = str_differs(ua[j], ub[j]);
            break;
        }
        case CFGTABLE_STR:
            differs =
                str_differs(*(char *const *)at(a, k->cfg_off), *(char *const *)at(b, k->cfg_off));
            break;
        case CFGTABLE_U32:
            differs = *(const uint32_t *)at(a, k->cfg_off) != *(const uint32_t *)at(b, k->cfg_off);
            break;
        case CFGTABLE_BOOL:
            differs = *(const bool *)at(a, k->cfg_off) != *(const bool *)at(b, k->cfg_off);
            break;
        }
        if (differs && n < max)
            paths[n++] = k->path;
    }
    return n;
}
