/*
 * cfgtable: the configuration machinery of gim-logic (config.c) and
 * gim-gateway (gateway/gw_config.c). Each program declares every key once, as
 * one row of a struct cfgtable_key table (dotted YAML path, kind, place in
 * the settings struct, default, range), with the macros below.
 * cfgtable_load() generates the libcyaml schema from that table, loads the
 * file with it and fills the settings: defaults, then the keys the file sets,
 * then the range and choice checks. Adding a key is one row (and its member).
 *
 * Why libcyaml checks the shape and this module the values: Debian 12's
 * libcyaml (1.3.1) reads "12abc" as the integer 12, "0x10" as 16, "1.5" as 1
 * and any boolean but false/no/off/disable/0 (e.g. the typo "flase") as true;
 * it has no default for an absent field (an absent integer and 0 look alike)
 * and no validation callbacks (those exist only in libcyaml's unreleased
 * master). So every scalar is loaded as a string and parsed here strictly,
 * while libcyaml rejects unknown and duplicate keys, wrong node types and
 * sequences of the wrong length.
 *
 * Errors: one line in errbuf naming the key (newlines in quoted values become
 * spaces), e.g. "sync.page_size: must be between 1 and 10000, got 0". For the
 * shape errors libcyaml finds, the key path comes from the backtrace libcyaml
 * hands its log callback: its mapping frames carry the key strings of the
 * generated schema, i.e. of our table, and its sequence frames the index.
 *
 * Ownership: the strings of a settings struct belong to it and are freed by
 * cfgtable_free(); a CFGTABLE_LIST key's apply() owns what it stores.
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
    CFGTABLE_URLS, /* char *[CFGTABLE_MAX_URLS] + unsigned count */
    CFGTABLE_STR,  /* char * */
    CFGTABLE_U32,  /* uint32_t */
    CFGTABLE_BOOL, /* bool */
    CFGTABLE_LIST, /* a sequence of entries of the owner's own schema, stored by apply() */
};

/* A table's keys of one section must be adjacent (one mapping per section in the schema and
 * in the printed YAML); cfgtable_load() refuses a table where they are not. */
struct cfgtable_key {
    const char *path; /* "key" or "section.key": YAML path and member designator */
    enum cfgtable_kind kind;
    size_t off;                  /* of the member in the settings struct */
    size_t count_off;            /* URLS: of its unsigned count */
    uint32_t min, max;           /* U32: range; URLS, LIST: number of entries */
    uint32_t def_u32;            /* U32, BOOL */
    const char *def_str;         /* STR */
    const char *const *def_list; /* URLS, NULL-terminated */
    const char *const *choices;  /* STR, NULL-terminated; NULL = anything */
    bool secret;                 /* STR: printed as "***" */
    /* LIST: the schema of one entry, the default entries, and the function that
     * replaces the settings' list with n entries (defaults or loaded ones). */
    const cyaml_schema_value_t *entry;
    const void *def_entries;
    unsigned def_count;
    gim_err (*apply)(void *cfg, const void *entries, unsigned n, char *errbuf, size_t errlen);
};

/* One row each; T is the settings struct, m the member path (e.g. database.path). */
#define CFGTABLE_KEY(T, m, k) .path = #m, .kind = CFGTABLE_##k, .off = offsetof(T, m)
#define CFGTABLE_URLS(T, m, defs)                                                                  \
    {                                                                                              \
        CFGTABLE_KEY(T, m, URLS), .count_off = offsetof(T, m##_count), .min = 1,                   \
                                  .max = CFGTABLE_MAX_URLS, .def_list = defs                       \
    }
#define CFGTABLE_STR(T, m, def)                                                                    \
    {                                                                                              \
        CFGTABLE_KEY(T, m, STR), .def_str = def                                                    \
    }
#define CFGTABLE_CHOICE(T, m, def, list)                                                           \
    {                                                                                              \
        CFGTABLE_KEY(T, m, STR), .def_str = def, .choices = list                                   \
    }
#define CFGTABLE_SECRET(T, m, def)                                                                 \
    {                                                                                              \
        CFGTABLE_KEY(T, m, STR), .def_str = def, .secret = true                                    \
    }
#define CFGTABLE_U32(T, m, lo, hi, def)                                                            \
    {                                                                                              \
        CFGTABLE_KEY(T, m, U32), .min = lo, .max = hi, .def_u32 = def                              \
    }
#define CFGTABLE_BOOL(T, m, def)                                                                   \
    {                                                                                              \
        CFGTABLE_KEY(T, m, BOOL), .def_u32 = def                                                   \
    }

/* printf into errbuf (may be NULL), newlines folded so the caller logs exactly one line. */
void cfgtable_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Fills cfg (zeroed by the caller) with the defaults of keys[0..nkeys), then,
 * if path is not NULL, with the keys the YAML file at path sets (at most
 * 1 MiB, so a wrong path such as /dev/zero cannot hang), then checks ranges
 * and choices. GIM_ECONFIG (or GIM_ENOMEM) with one line in errbuf on any
 * problem; the caller frees cfg with cfgtable_free() in every case.
 */
gim_err cfgtable_load(const char *path, const struct cfgtable_key *keys, size_t nkeys, void *cfg,
                      char *errbuf, size_t errlen);
/* Frees the strings of the keys (not cfg itself, nor what a LIST key's apply() stored). */
void cfgtable_free(void *cfg, const struct cfgtable_key *keys, size_t nkeys);
/* Writes keys[0..nkeys) but LIST keys as YAML, sections opened as their dotted paths change. */
void cfgtable_print(const void *cfg, const struct cfgtable_key *keys, size_t nkeys, FILE *out);
/* s (NULL = "") double-quoted so that any value reads back verbatim. */
void cfgtable_print_quoted(FILE *out, const char *s);
/* Writes the paths of the keys whose values differ, at most max of them; returns how many. */
size_t cfgtable_changed(const void *a, const void *b, const struct cfgtable_key *keys, size_t nkeys,
                        const char **paths, size_t max);

#endif
