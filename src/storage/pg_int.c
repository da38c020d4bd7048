/* pg_int: helpers the PostgreSQL backend's areas share (pg_int.h). */
#include "storage/pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgstore.h"
#include "presence.h"

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

void pg_gateway(char *dst, const PGresult *res, int row, int col)
{
    size_t len = 0;
    const uint8_t *gw = pgstore_blob(res, row, col, &len);
    if (!gw)
        len = 0;
    if (len > PRESENCE_GATEWAY_MAX)
        len = PRESENCE_GATEWAY_MAX;
    if (len)
        memcpy(dst, gw, len);
    dst[len] = 0;
}

void pg_session(struct session *t, const PGresult *res, int row, int col)
{
    memset(t, 0, sizeof *t);
    t->device_id = pgstore_int(res, row, col);
    t->user_id = pgstore_int(res, row, col + 1);
    pg_gateway(t->gateway_id, res, row, col + 2);
    t->room_id = pgstore_int(res, row, col + 3);
}
