/*
 * textfile: a whole small file read into memory, for the files a config key
 * names (the YAML config itself, TLS certificates and keys). Read in a loop
 * to EOF rather than sized with ftell, so pipes and /dev/stdin work, and
 * capped, so a wrong path such as /dev/zero fails instead of eating memory.
 * Used by gim-logic (cfgtable), gim-gateway (listener) and tools/gimclient.
 *
 * Ownership: on GIM_OK, *text is a NUL-terminated malloc'ed string the caller
 * frees; on failure *text is NULL.
 */
#ifndef GIM_TEXTFILE_H
#define GIM_TEXTFILE_H

#include <stddef.h>

#include "err.h"

/* A PEM certificate or key is a few kilobytes; 1 MiB is far beyond any real one. */
#define TEXTFILE_MAX_PEM_BYTES (1024 * 1024)

/*
 * Reads path into *text (and its length into *len unless len is NULL).
 * GIM_EIO (errno says why) if it cannot be opened or read, GIM_ETOOLARGE if
 * it holds max bytes or more, GIM_ENOMEM.
 */
gim_err textfile_read(const char *path, size_t max, char **text, size_t *len);

/* textfile_read's text, or NULL on any failure: for callers that only need "usable or not". */
char *textfile_slurp(const char *path, size_t max);

#endif
