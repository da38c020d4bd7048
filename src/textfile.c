#include "textfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

gim_err textfile_read(const char *path, size_t max, char **text, size_t *len)
{
    gim_err rc = GIM_OK;
    size_t cap = 4096, n = 0;
    char *buf = NULL;
    int saved = 0;
    FILE *f = fopen(path, "rb");
    *text = NULL;
    if (len)
        *len = 0;
    if (!f) {
        saved = errno;
        rc = GIM_EIO;
        goto out;
    }
    buf = malloc(cap + 1);
    if (!buf) {
        rc = GIM_ENOMEM;
        goto out;
    }
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (ferror(f)) {
            saved = errno;
            rc = GIM_EIO;
            goto out;
        }
        if (feof(f))
            break;
        if (cap >= max) {
            rc = GIM_ETOOLARGE;
            goto out;
        }
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            rc = GIM_ENOMEM;
            goto out;
        }
        buf = bigger;
        cap *= 2;
    }
    buf[n] = '\0';
    *text = buf;
    if (len)
        *len = n;
    buf = NULL;
out:
    if (f)
        fclose(f);
    free(buf);
    /* The caller's message quotes strerror(errno) of the failed open or read. */
    if (rc == GIM_EIO)
        errno = saved;
    return rc;
}

char *textfile_slurp(const char *path, size_t max)
{
    char *text = NULL;
    textfile_read(path, max, &text, NULL);
    return text;
}
