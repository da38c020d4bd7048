#include "http.h"

#include <stdlib.h>

#include "config.h"

/* Placeholder until the operations issue lands: the endpoint is not served yet. */
struct http {
    int unused;
};

gim_err http_start(struct http **out, const struct http_opts *o, char *errbuf, size_t errlen)
{
    (void)o;
    (void)errbuf;
    (void)errlen;
    *out = NULL;
    return GIM_OK;
}

void http_stop(struct http *h)
{
    free(h);
}
