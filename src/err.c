#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *gim_err_name(gim_err e)
{
    switch (e) {
    case GIM_OK:
        return "EC_OK";
    case GIM_EBADREQ:
        return "EC_BAD_REQUEST";
    case GIM_EUNAUTH:
        return "EC_UNAUTHENTICATED";
    case GIM_EFORBIDDEN:
        return "EC_FORBIDDEN";
    case GIM_ENOTFOUND:
        return "EC_NOT_FOUND";
    case GIM_ETOOLARGE:
        return "EC_TOO_LARGE";
    case GIM_ERECALLEXPIRED:
        return "EC_RECALL_EXPIRED";
    case GIM_EUNAVAILABLE:
        return "EC_UNAVAILABLE";
    case GIM_EINTERNAL:
        return "EC_INTERNAL";
    case GIM_ENOMEM:
        return "ENOMEM";
    case GIM_ECONFIG:
        return "ECONFIG";
    case GIM_EIO:
        return "EIO";
    case GIM_ESCHEMA:
        return "ESCHEMA";
    case GIM_ELOCKED:
        return "ELOCKED";
    }
    return "EUNKNOWN";
}

int gim_err_wire(gim_err e)
{
    if ((int)e >= 0 && e <= GIM_ERR_WIRE_MAX)
        return (int)e;
    if (e == GIM_EIO)
        return GIM_EUNAVAILABLE;
    return GIM_EINTERNAL;
}

void gim_err_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}
