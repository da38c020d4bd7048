/*
 * apiroute: the business API's routes, and for each the translation between
 * its JSON and the operator request it stands for.
 *
 * Each route is one operator PackageType (PT_ADMIN_*): encode() turns the
 * path's ids, the query, the JSON body, the bearer token and the
 * Idempotency-Key into exactly the protobuf input an nng caller would send
 * (logic.int.proto), and decode() turns the handler's reply data into the JSON
 * answer. Nothing here judges the request beyond its JSON form (unknown
 * fields, wrong types, ids that are not positive integers): the handler
 * checks the token and everything else, so both transports answer alike.
 * The JSON shapes are documented in docs/business-api.md and
 * docs/openapi.json; the table below is the one list of routes the server
 * serves (tests compare it with the OpenAPI file).
 *
 * Ownership: encode() returns a malloc'ed buffer the caller frees; decode()
 * borrows the unpacked reply and returns a new JSON reference (json_decref),
 * NULL when out of memory.
 */
#ifndef GIM_APIROUTE_H
#define GIM_APIROUTE_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define APIROUTE_MAX_PARAMS 2

/* What a route's encode() gets. */
struct apiroute_in {
    const json_t *body; /* the request body, a JSON object ({} when there was none) */
    int64_t params[APIROUTE_MAX_PARAMS]; /* the path's ids, in order, each > 0 */
    const char *query;                   /* the raw query string after '?', or NULL */
    const char *token;                   /* the bearer token ("" when none) */
    const char *idempotency_key;         /* the Idempotency-Key header ("" when none) */
};

struct apiroute {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/groups/{group_id}": "{...}" segments are positive int64 ids */
    int type;            /* the Pb__PackageType it stands for */
    int ok_status;       /* the HTTP status of a success */
    /* Input.data for the request; GIM_EBADREQ with why on a malformed request. */
    gim_err (*encode)(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                      size_t whylen);
    /* Output.data's message type, and the JSON answer made from it (the
     * caller unpacks and frees the message); both NULL when the route
     * answers no body. */
    const ProtobufCMessageDescriptor *reply;
    json_t *(*decode)(const ProtobufCMessage *reply);
};

/* The routes, in the order docs/business-api.md lists them. */
const struct apiroute *apiroute_table(size_t *n);

enum apiroute_miss {
    APIROUTE_FOUND,
    APIROUTE_NO_PATH,   /* 404: no route has this path */
    APIROUTE_NO_METHOD, /* 405: the path exists with other methods (allow lists them) */
    APIROUTE_BAD_PARAM, /* 400: the path fits a route but an id is not a positive int64 */
};

/*
 * Matches method and path (the raw request path, without the query, not
 * percent-decoded: an id is digits and nothing else). On APIROUTE_FOUND,
 * *route and params are set; on APIROUTE_NO_METHOD allow gets the methods
 * that path takes ("GET, PATCH, DELETE"); on APIROUTE_BAD_PARAM why says
 * which id is wrong.
 */
enum apiroute_miss apiroute_match(const char *method, const char *path,
                                  const struct apiroute **route,
                                  int64_t params[APIROUTE_MAX_PARAMS], char *allow, size_t allowlen,
                                  char *why, size_t whylen);

#endif
