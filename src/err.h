/*
 * err: the one error enum of gim-logic.
 *
 * Every function that can fail returns a gim_err. The values below
 * GIM_ERR_WIRE_MAX are the wire codes of pb.ErrorCode (logic.int.proto) so a
 * handler's result goes into Output.code unchanged. Append only; never
 * renumber: gateways and clients switch on these numbers.
 */
#ifndef GIM_ERR_H
#define GIM_ERR_H

#include <stddef.h>

typedef enum gim_err {
    GIM_OK = 0,
    GIM_EBADREQ = 1,        /* EC_BAD_REQUEST */
    GIM_EUNAUTH = 2,        /* EC_UNAUTHENTICATED */
    GIM_EFORBIDDEN = 3,     /* EC_FORBIDDEN */
    GIM_ENOTFOUND = 4,      /* EC_NOT_FOUND */
    GIM_ETOOLARGE = 5,      /* EC_TOO_LARGE */
    GIM_ERECALLEXPIRED = 6, /* EC_RECALL_EXPIRED */
    GIM_EUNAVAILABLE = 7,   /* EC_UNAVAILABLE: busy/locked/full database, shutting down */
    GIM_EINTERNAL = 8,      /* EC_INTERNAL */
    GIM_ERR_WIRE_MAX = 8,
    /* Internal codes: never sent; mapped to a wire code by gim_err_wire(). */
    GIM_ENOMEM = 100,
    GIM_ECONFIG = 101, /* bad configuration */
    GIM_EIO = 102,     /* file or socket error */
    GIM_ESCHEMA = 103, /* database newer than the binary, or a migration failed */
    GIM_ELOCKED = 104, /* the database is another process's (dblock.h) */
} gim_err;

/* Short stable name, e.g. "EC_NOT_FOUND". Never NULL. */
const char *gim_err_name(gim_err e);

/* The pb.ErrorCode to put on the wire for e. */
int gim_err_wire(gim_err e);

/*
 * printf into a caller's "why" buffer (the reason that goes with a gim_err);
 * why may be NULL or whylen 0, then nothing is written. Truncates to fit.
 */
void gim_err_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
