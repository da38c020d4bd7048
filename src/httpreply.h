/*
 * httpreply: one complete answer from a handler of nng's built-in HTTP
 * server, the way gim-logic's operator endpoint (http.c) and gim-gateway's
 * (gateway/gw_http.c) answer: a status, a Content-Type, "Cache-Control:
 * no-store" (metrics and health are live values) and a body copied into the
 * response.
 *
 * Ownership: the body is copied, so it stays the caller's. The response is
 * handed to nng with the aio; if it cannot be built (out of memory), the aio
 * finishes with nng's error and nng answers 500 itself.
 */
#ifndef GIM_HTTPREPLY_H
#define GIM_HTTPREPLY_H

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>

void httpreply_send(nng_aio *aio, uint16_t status, const char *type, const char *body, size_t len);
/* text as "text/plain; charset=utf-8". */
void httpreply_text(nng_aio *aio, uint16_t status, const char *text);

#endif
