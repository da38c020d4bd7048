/* pg_int: helpers the PostgreSQL backend's areas share (pg_int.h). */
#include "storage/pg_int.h"

#include <stdio.h>
#include <stdlib.h>

gim_err pg_array_literal(const int64_t *ids, size_t n, char **out)
{
    /* "{" + n ids of at most 20 characters and a comma + "}" */
    char *buf = malloc(n * 21 + 3), *p = buf;
    if (!buf)
        return GIM_ENOMEM;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, i ? ",%lld" : "%lld", (long long)ids[i]);
    *p++ = '}';
    *p = 0;
    *out = buf;
    return GIM_OK;
}
