/*
 * cfgtable: the machinery gim-logic's config (config.c) and gim-gateway's
 * (gateway/gw_config.c) share: a table of keys, each with its dotted YAML
 * path, kind, default and range, and the passes over it (defaults, overlay
 * of the strings libcyaml read, range checks, printing, freeing), plus the
 * file loading with a size cap and the translation of libcyaml's errors into
 * one line that names the key.
 *
 * Why strings: every scalar is loaded by libcyaml as a string and parsed here
 * strictly, because libcyaml 1.3.1 reads "12abc" as the integer 12, "1.5" as
 * 1, and any boolean other than false/no/off/0 (e.g. the typo "flase") as
 * true. Each module keeps its own struct (the settings) and raw struct (what
 * libcyaml fills: a char * per scalar, NULL = absent); the key table holds the
 * offsets of each key in both.
 *
 * Error messages are written to errbuf as one line (newlines in quoted values
 * become spaces). Ownership: the strings of a settings struct belong to it and
 * are freed by cfgtable_free(); cfgtable_load_yaml()'s raw result is freed by
 * cfgtable_free_yaml().
 */
#ifndef GIM_CFGTABLE_H
#define GIM_CFGTABLE_H

#include <cyaml/cyaml.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* Room for the URLs of one CFGTABLE_URLS key (config.h and gw_config.h size their arrays so). */
#define CFGTABLE_MAX_URLS 8

enum cfgtable_kind {
    CFGTABLE_URLS, /* char *[CFGTABLE_MAX_URLS] + unsigned count; raw: char ** + unsigned */
    CFGTABLE_STR,  /* char * */
    CFGTABLE_U32,  /* uint32_t */
    CFGTABLE_BOOL, /* bool */
};

struct cfgtable_key {
    const char *path; /* dotted YAML path, also the member designator */
    enum cfgtable_kind kind;
    size_t cfg_off, raw_off;
    size_t cfg_count_off, raw_count_off; /* URLS */
    uint32_t min, max;                   /* U32 range; URLS entry count */
    uint32_t def_u32;                    /* U32, BOOL */
    const char *def_str;                 /* STR */
    const char *const *def_list;         /* URLS, NULL-terminated */
    const char *const *choices;          /* STR, NULL-terminated; NULL = anything */
    bool secret;                         /* STR: printed as "***" */
};

/* printf into errbuf (may be NULL), newlines folded so the caller logs exactly one line. */
void cfgtable_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decimal digits only: no sign, no 0x, no trailing text. false leaves *out alone. */
bool cfgtable_parse_u32(const char *s, uint32_t *out);
/* true/yes/on or false/no/off, any case. false leaves *out alone. */
bool cfgtable_parse_bool(const char *s, bool *out);

/* Sets every key of cfg to its default. GIM_ENOMEM (errbuf not written) if out of memory. */
gim_err cfgtable_defaults(void *cfg, const struct cfgtable_key *keys, size_t nkeys);
/* Overlays the keys present in raw; a bad scalar is GIM_ECONFIG naming the key. */
gim_err cfgtable_overlay(void *cfg, const void *raw, const struct cfgtable_key *keys, size_t nkeys,
                         char *errbuf, size_t errlen);
/* Range, choice and URL-count checks of the merged values. */
gim_err cfgtable_validate(const void *cfg, const struct cfgtable_key *keys, size_t nkeys,
                          char *errbuf, size_t errlen);
/* Frees the strings of the keys (not cfg itself). */
void cfgtable_free(void *cfg, const struct cfgtable_key *keys, size_t nkeys);
/* Writes keys[0..nkeys) as YAML, sections opened as their dotted paths change. */
void cfgtable_print(const void *cfg, const struct cfgtable_key *keys, size_t nkeys, FILE *out);
/* s (NULL = "") double-quoted so that any value reads back verbatim. */
void cfgtable_print_quoted(FILE *out, const char *s);
/* The paths of the keys whose values differ, at most max of them; returns how many differ. */
size_t cfgtable_changed(const void *a, const void *b, const struct cfgtable_key *keys, size_t nkeys,
                        const char **paths, size_t max);

/*
 * Reads the file at path (at most 1 MiB, so a wrong path such as /dev/zero
 * cannot hang) and loads it with schema. *raw is NULL for a file with no keys;
 * otherwise the caller frees it with cfgtable_free_yaml(schema, *raw).
 */
gim_err cfgtable_load_yaml(const char *path, const cyaml_schema_value_t *schema, void **raw,
                           char *errbuf, size_t errlen);
void cfgtable_free_yaml(const cyaml_schema_value_t *schema, void *raw);

#endif
