#include "httpreply.h"

#include <nng/supplemental/http/http.h>
#include <string.h>

void httpreply_send(nng_aio *aio, uint16_t status, const char *type, const char *body, size_t len)
{
    nng_http_res *res = NULL;
    int rv = nng_http_res_alloc(&res);
    if (rv == 0)
        rv = nng_http_res_set_status(res, status);
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Content-Type", type);
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Cache-Control", "no-store");
    if (rv == 0)
        rv = nng_http_res_copy_data(res, body, len);
    if (rv != 0) {
        if (res)
            nng_http_res_free(res);
        nng_aio_finish(aio, rv);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

void httpreply_text(nng_aio *aio, uint16_t status, const char *text)
{
    httpreply_send(aio, status, "text/plain; charset=utf-8", text, strlen(text));
}
