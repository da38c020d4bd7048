#include "cfgtable.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "textfile.h"

/* A config file is a few kilobytes; the cap keeps a wrong path such as /dev/zero from hanging. */
#define MAX_FILE_BYTES (1024 * 1024)

/*
 * What libcyaml loads: slot i holds key i, NULL when the file does not set
 * it; a string for scalars, the entry array and its count for sequences.
 */
struct slot {
    void *v;
    unsigned n;
};

static void *at(const void *base, size_t off)
{
    return (char *)base + off;
}

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

/* ---- the schema, generated from the key table ----------------------------- */

static size_t section_len(const char *path)
{
    const char *dot = strchr(path, '.');
    return dot ? (size_t)(dot - path) : 0;
}

static bool same_section(const char *a, const char *b)
{
    size_t n = section_len(a);
    return n && n == section_len(b) && strncmp(a, b, n) == 0;
}

static cyaml_schema_field_t key_field(const struct cfgtable_key *k, size_t i, const char *name)
{
    static const cyaml_schema_value_t url = {
        CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
    };
    size_t off = i * sizeof(struct slot);
    cyaml_schema_field_t f = {.key = name,
                              .data_offset = (uint32_t)(off + offsetof(struct slot, v))};
    if (k->kind == CFGTABLE_URLS || k->kind == CFGTABLE_LIST) {
        const cyaml_schema_value_t *e = k->kind == CFGTABLE_URLS ? &url : k->entry;
        f.count_offset = (uint32_t)(off + offsetof(struct slot, n));
        f.count_size = sizeof(unsigned);
        /* min >= 1: libcyaml loads an empty sequence exactly like an absent one (NULL, count
         * 0), so "publish: []" could only silently mean "keep the default". */
        f.value = (cyaml_schema_value_t){
            CYAML_VALUE_SEQUENCE(CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, char, e, k->min, k->max),
        };
        f.value.data_size = (e->flags & CYAML_FLAG_POINTER) ? sizeof(void *) : e->data_size;
    } else {
        f.value = (cyaml_schema_value_t){
            CYAML_VALUE_STRING(CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
        };
    }
    return f;
}

/*
 * One allocation: the top-level fields, then each section's, each list ended
 * by a zeroed CYAML_FIELD_END, then the section names. Every section's mapping
 * sits at offset 0, so all keys address the same slot array. *out is freed by
 * the caller.
 */
static gim_err schema_build(const struct cfgtable_key *keys, size_t nkeys,
                            cyaml_schema_value_t *top, cyaml_schema_field_t **out)
{
    size_t nfields = 3 * nkeys + 1, ntop = 0, names_len = 0;
    for (size_t i = 0; i < nkeys; i++) {
        names_len += strlen(keys[i].path) + 1;
        ntop +=
            !section_len(keys[i].path) || i == 0 || !same_section(keys[i - 1].path, keys[i].path);
    }
    cyaml_schema_field_t *f = calloc(1, nfields * sizeof *f + names_len);
    if (!f)
        return GIM_ENOMEM;
    char *names = (char *)(f + nfields);
    size_t t = 0, next = ntop + 1;
    for (size_t i = 0; i < nkeys; i++) {
        size_t n = section_len(keys[i].path);
        if (!n) {
            f[t++] = key_field(&keys[i], i, keys[i].path);
            continue;
        }
        if (i > 0 && same_section(keys[i - 1].path, keys[i].path))
            continue; /* added with the first key of its section */
        memcpy(names, keys[i].path, n);
        f[t++] = (cyaml_schema_field_t){
            .key = names,
            .value = {CYAML_VALUE_MAPPING(CYAML_FLAG_OPTIONAL, char, &f[next])},
        };
        names += n + 1;
        for (size_t j = i; j < nkeys && same_section(keys[i].path, keys[j].path); j++)
            f[next++] = key_field(&keys[j], j, keys[j].path + n + 1);
        next++; /* CYAML_FIELD_END */
    }
    /* POINTER_NULL_STR: a file holding just "---" or "~" is an empty document, i.e. no keys. */
    *top = (cyaml_schema_value_t){CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER_NULL_STR, char, f)};
    top->data_size = (uint32_t)(nkeys * sizeof(struct slot));
    *out = f;
    return GIM_OK;
}

/* ---- libcyaml's errors ----------------------------------------------------- */

/*
 * libcyaml reports a load error to its log callback: one message, then a
 * backtrace, innermost frame first. The frames' arguments are taken as they
 * are passed (a mapping frame's key is a string of our generated schema).
 */
struct frame {
    const char *name; /* mapping key; NULL for a sequence entry */
    unsigned index;   /* libcyaml counts entries from 1 */
    size_t line;
};

struct capture {
    char problem[256];
    char key[128]; /* the key an unknown- or duplicate-key message names */
    bool unknown, duplicate;
    struct frame frames[16];
    unsigned nframes;
};

static void capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct capture *c = ctx;
    if (level < CYAML_LOG_ERROR)
        return;
    if (strncmp(fmt, "  in ", 5) == 0) {
        struct frame f = {0};
        if (strncmp(fmt, "  in mapping field ", 19) == 0)
            f.name = va_arg(args, const char *);
        else if (strncmp(fmt, "  in sequence entry ", 20) == 0)
            f.index = va_arg(args, unsigned);
        else
            return; /* "in mapping": no key to name */
        f.line = va_arg(args, size_t);
        if (c->nframes < sizeof c->frames / sizeof c->frames[0])
            c->frames[c->nframes++] = f;
        return;
    }
    if (c->problem[0] || strcmp(fmt, "Load: Backtrace:\n") == 0)
        return;
    va_list copy;
    va_copy(copy, args);
    vsnprintf(c->problem, sizeof c->problem, strncmp(fmt, "Load: ", 6) ? fmt : fmt + 6, copy);
    va_end(copy);
    c->unknown = strcmp(fmt, "Load: Unexpected key: %s\n") == 0;
    c->duplicate = strcmp(fmt, "Load: Mapping field already seen: %s\n") == 0;
    if (c->unknown || c->duplicate)
        snprintf(c->key, sizeof c->key, "%s", va_arg(args, const char *));
}

static void report_cyaml(const struct capture *c, cyaml_err_t ce, const char *file, char *errbuf,
                         size_t errlen)
{
    char where[512] = "";
    size_t len = 0;
    const char *msg = c->problem[0] ? c->problem : cyaml_strerror(ce);
    /* A wrong entry count names an entry frame, but the sequence itself is at fault. */
    unsigned skip =
        (ce == CYAML_ERR_SEQUENCE_ENTRIES_MIN || ce == CYAML_ERR_SEQUENCE_ENTRIES_MAX) &&
        c->nframes > 0 && !c->frames[0].name;
    for (unsigned i = c->nframes; i-- > skip && len < sizeof where;) {
        int n = c->frames[i].name ? snprintf(where + len, sizeof where - len, "%s%s",
                                             len ? "." : "", c->frames[i].name)
                                  : snprintf(where + len, sizeof where - len, "[%u]",
                                             c->frames[i].index ? c->frames[i].index - 1 : 0);
        if (n > 0)
            len += (size_t)n;
    }
    if (len >= sizeof where)
        len = sizeof where - 1;
    if (c->unknown) {
        snprintf(where + len, sizeof where - len, "%s%s", len ? "." : "", c->key);
        msg = "unknown key";
    } else if (c->duplicate) {
        msg = "duplicate key";
    }
    int msglen = (int)strcspn(msg, "\n");
    while (msglen > 0 && msg[msglen - 1] == '.')
        msglen--;
    const char *subject = where[0] ? where : file;
    /* libyaml's own position is not passed on; the enclosing value's line is the next best. */
    if (ce == CYAML_ERR_LIBYAML_PARSER && c->nframes > 0)
        cfgtable_err(errbuf, errlen, "%s: %.*s (near line %zu)", subject, msglen, msg,
                     c->frames[0].line);
    else
        cfgtable_err(errbuf, errlen, "%s: %.*s", subject, msglen, msg);
}

/* ---- values ---------------------------------------------------------------- */

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

/* true/yes/on or false/no/off, any case. */
static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
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
    for (unsigned i = 0; i < n && i < CFGTABLE_MAX_URLS; i++) {
        if (!(copy[i] = strdup(src[i]))) {
            rc = GIM_ENOMEM;
            goto out;
        }
    }
    for (unsigned i = 0; i < CFGTABLE_MAX_URLS; i++) {
        free(dst[i]);
        dst[i] = copy[i];
        copy[i] = NULL;
    }
    *count = n < CFGTABLE_MAX_URLS ? n : CFGTABLE_MAX_URLS;
out:
    for (unsigned i = 0; i < CFGTABLE_MAX_URLS; i++)
        free(copy[i]);
    return rc;
}

static gim_err set_defaults(void *cfg, const struct cfgtable_key *keys, size_t nkeys)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < nkeys && rc == GIM_OK; i++) {
        const struct cfgtable_key *k = &keys[i];
        unsigned n = 0;
        switch (k->kind) {
        case CFGTABLE_URLS:
            while (k->def_list[n])
                n++;
            rc = replace_urls(at(cfg, k->off), at(cfg, k->count_off), k->def_list, n);
            break;
        case CFGTABLE_STR:
            rc = replace_str(at(cfg, k->off), k->def_str);
            break;
        case CFGTABLE_U32:
            *(uint32_t *)at(cfg, k->off) = k->def_u32;
            break;
        case CFGTABLE_BOOL:
            *(bool *)at(cfg, k->off) = k->def_u32 != 0;
            break;
        case CFGTABLE_LIST:
            rc = k->apply(cfg, k->def_entries, k->def_count, NULL, 0);
            break;
        }
    }
    return rc;
}

static gim_err overlay(void *cfg, const struct slot *raw, const struct cfgtable_key *keys,
                       size_t nkeys, char *errbuf, size_t errlen)
{
    gim_err rc = GIM_OK;
    for (size_t i = 0; i < nkeys && rc == GIM_OK; i++) {
        const struct cfgtable_key *k = &keys[i];
        const char *s = raw[i].v;
        if (!s)
            continue;
        switch (k->kind) {
        case CFGTABLE_URLS:
            rc = replace_urls(at(cfg, k->off), at(cfg, k->count_off), raw[i].v, raw[i].n);
            break;
        case CFGTABLE_LIST:
            rc = k->apply(cfg, raw[i].v, raw[i].n, errbuf, errlen);
            break;
        case CFGTABLE_STR:
            rc = replace_str(at(cfg, k->off), s);
            break;
        case CFGTABLE_U32:
            if (!parse_u32(s, at(cfg, k->off))) {
                cfgtable_err(errbuf, errlen, "%s: expected an unsigned 32-bit integer, got '%s'",
                             k->path, s);
                rc = GIM_ECONFIG;
            }
            break;
        case CFGTABLE_BOOL:
            if (!parse_bool(s, at(cfg, k->off))) {
                cfgtable_err(errbuf, errlen, "%s: expected true or false, got '%s'", k->path, s);
                rc = GIM_ECONFIG;
            }
            break;
        }
    }
    return rc;
}

static bool check_choice(const struct cfgtable_key *k, const char *v, char *errbuf, size_t errlen)
{
    char list[128] = "";
    size_t len = 0;
    for (const char *const *c = k->choices; *c; c++) {
        if (strcmp(v, *c) == 0)
            return true;
        int n = snprintf(list + len, sizeof list - len, "%s%s", len ? "|" : "", *c);
        if (n > 0 && (size_t)n < sizeof list - len)
            len += (size_t)n;
    }
    cfgtable_err(errbuf, errlen, "%s: must be one of %s, got '%s'", k->path, list, v);
    return false;
}

static bool check_u32(const struct cfgtable_key *k, uint32_t v, char *errbuf, size_t errlen)
{
    if (v >= k->min && v <= k->max)
        return true;
    if (k->max == UINT32_MAX)
        cfgtable_err(errbuf, errlen, "%s: must be at least %u, got %u", k->path, k->min, v);
    else if (k->min == 0)
        cfgtable_err(errbuf, errlen, "%s: must be at most %u, got %u", k->path, k->max, v);
    else
        cfgtable_err(errbuf, errlen, "%s: must be between %u and %u, got %u", k->path, k->min,
                     k->max, v);
    return false;
}

/* Checks the merged result, so a default that a changed key invalidates is caught too. */
static gim_err validate(const void *cfg, const struct cfgtable_key *keys, size_t nkeys,
                        char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        bool ok = true;
        if (k->kind == CFGTABLE_URLS) {
            char *const *urls = at(cfg, k->off);
            for (unsigned j = 0; ok && j < *(const unsigned *)at(cfg, k->count_off); j++) {
                if (!urls[j] || !urls[j][0]) {
                    cfgtable_err(errbuf, errlen, "%s[%u]: must not be empty", k->path, j);
                    ok = false;
                }
            }
        } else if (k->kind == CFGTABLE_STR && k->choices) {
            ok = check_choice(k, *(char *const *)at(cfg, k->off), errbuf, errlen);
        } else if (k->kind == CFGTABLE_U32) {
            ok = check_u32(k, *(const uint32_t *)at(cfg, k->off), errbuf, errlen);
        }
        if (!ok)
            return GIM_ECONFIG;
    }
    return GIM_OK;
}

/* ---- loading ---------------------------------------------------------------- */

static gim_err read_file(const char *path, char **text, size_t *len, char *errbuf, size_t errlen)
{
    gim_err rc = textfile_read(path, MAX_FILE_BYTES, text, len);
    if (rc == GIM_ETOOLARGE)
        cfgtable_err(errbuf, errlen, "cannot read %s: larger than %d bytes", path, MAX_FILE_BYTES);
    else if (rc != GIM_OK && rc != GIM_ENOMEM)
        cfgtable_err(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
    return rc == GIM_OK || rc == GIM_ENOMEM ? rc : GIM_ECONFIG;
}

gim_err cfgtable_load(const char *path, const struct cfgtable_key *keys, size_t nkeys, void *cfg,
                      char *errbuf, size_t errlen)
{
    gim_err rc;
    char *text = NULL;
    size_t len = 0;
    cyaml_schema_value_t top;
    cyaml_schema_field_t *fields = NULL;
    struct slot *raw = NULL;
    struct capture cap = {0};
    const cyaml_config_t cc = {
        .log_fn = capture_log,
        .log_ctx = &cap,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };

    if (errbuf && errlen > 0)
        errbuf[0] = '\0';
    /* One mapping per section in the schema and in config_print: a section split in two
     * would make its second part unknown keys. A programming error, caught by any load. */
    for (size_t i = 1; i < nkeys; i++) {
        for (size_t j = 0; j + 1 < i && !same_section(keys[i - 1].path, keys[i].path); j++) {
            if (same_section(keys[j].path, keys[i].path)) {
                cfgtable_err(errbuf, errlen, "%s: its section's keys are not adjacent in the table",
                             keys[i].path);
                return GIM_EINTERNAL;
            }
        }
    }
    if ((rc = set_defaults(cfg, keys, nkeys)) != GIM_OK || !path)
        goto check;
    if ((rc = read_file(path, &text, &len, errbuf, errlen)) != GIM_OK ||
        (rc = schema_build(keys, nkeys, &top, &fields)) != GIM_OK)
        goto out;
    cyaml_err_t ce = cyaml_load_data((const uint8_t *)text, len, &cc, &top, (void **)&raw, NULL);
    if (ce == CYAML_ERR_OOM) {
        rc = GIM_ENOMEM;
    } else if (ce != CYAML_OK) {
        report_cyaml(&cap, ce, path, errbuf, errlen);
        rc = GIM_ECONFIG;
    } else if (raw) { /* NULL for a file with no keys at all (empty, or only comments) */
        rc = overlay(cfg, raw, keys, nkeys, errbuf, errlen);
    }
check:
    if (rc == GIM_OK)
        rc = validate(cfg, keys, nkeys, errbuf, errlen);
out:
    if (rc == GIM_ENOMEM)
        cfgtable_err(errbuf, errlen, "out of memory");
    if (raw)
        cyaml_free(&cc, &top, raw, 0);
    free(fields);
    free(text);
    return rc;
}

/* ---- the loaded settings ----------------------------------------------------- */

void cfgtable_free(void *cfg, const struct cfgtable_key *keys, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        if (k->kind == CFGTABLE_URLS) {
            char **urls = at(cfg, k->off);
            for (unsigned j = 0; j < CFGTABLE_MAX_URLS; j++) {
                free(urls[j]);
                urls[j] = NULL;
            }
            *(unsigned *)at(cfg, k->count_off) = 0;
        } else if (k->kind == CFGTABLE_STR) {
            char **v = at(cfg, k->off);
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
    for (size_t i = 0; i < nkeys; i++) {
        const struct cfgtable_key *k = &keys[i];
        size_t n = section_len(k->path);
        const char *indent = n ? "  " : "";
        if (k->kind == CFGTABLE_LIST)
            continue;
        if (n && (i == 0 || !same_section(keys[i - 1].path, k->path)))
            fprintf(out, "%.*s:\n", (int)n, k->path);
        fprintf(out, "%s%s:", indent, n ? k->path + n + 1 : k->path);
        if (k->kind == CFGTABLE_URLS) {
            char *const *urls = at(cfg, k->off);
            unsigned count = *(const unsigned *)at(cfg, k->count_off);
            for (unsigned j = 0; j < count && j < CFGTABLE_MAX_URLS; j++) {
                fprintf(out, "\n%s  - ", indent);
                cfgtable_print_quoted(out, urls[j]);
            }
        } else if (k->kind == CFGTABLE_STR) {
            const char *v = *(char *const *)at(cfg, k->off);
            fputc(' ', out);
            cfgtable_print_quoted(out, k->secret && v && v[0] ? "***" : v);
        } else if (k->kind == CFGTABLE_U32) {
            fprintf(out, " %u", *(const uint32_t *)at(cfg, k->off));
        } else {
            fprintf(out, " %s", *(const bool *)at(cfg, k->off) ? "true" : "false");
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
        if (k->kind == CFGTABLE_URLS) {
            char *const *ua = at(a, k->off), *const *ub = at(b, k->off);
            unsigned na = *(const unsigned *)at(a, k->count_off);
            differs = na != *(const unsigned *)at(b, k->count_off);
            for (unsigned j = 0; !differs && j < na && j < CFGTABLE_MAX_URLS; j++)
                differs = str_differs(ua[j], ub[j]);
        } else if (k->kind == CFGTABLE_STR) {
            differs = str_differs(*(char *const *)at(a, k->off), *(char *const *)at(b, k->off));
        } else if (k->kind == CFGTABLE_U32) {
            differs = *(const uint32_t *)at(a, k->off) != *(const uint32_t *)at(b, k->off);
        } else if (k->kind == CFGTABLE_BOOL) {
            differs = *(const bool *)at(a, k->off) != *(const bool *)at(b, k->off);
        }
        if (differs && n < max)
            paths[n++] = k->path;
    }
    return n;
}
