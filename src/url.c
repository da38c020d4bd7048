#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

enum form {
    F_HOSTPORT,      /* tcp, tls+tcp: HOST:PORT and nothing else */
    F_HOSTPORT_PATH, /* ws: HOST:PORT and an optional path */
    F_PATH,          /* ipc, abstract: a non-empty path or name */
    F_HTTP,          /* http: HOST[:PORT], path empty or "/" */
};

#define USE(u) (1u << (u))

static const struct scheme {
    const char *name;
    enum form form;
    unsigned uses;
} schemes[] = {
    {"tcp", F_HOSTPORT, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"tcp4", F_HOSTPORT, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"tcp6", F_HOSTPORT, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"tls+tcp", F_HOSTPORT, USE(URL_LISTEN)},
    {"tls+tcp4", F_HOSTPORT, USE(URL_LISTEN)},
    {"tls+tcp6", F_HOSTPORT, USE(URL_LISTEN)},
    {"ipc", F_PATH, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"abstract", F_PATH, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"ws", F_HOSTPORT_PATH, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"ws4", F_HOSTPORT_PATH, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"ws6", F_HOSTPORT_PATH, USE(URL_LISTEN) | USE(URL_PUBLISH)},
    {"http", F_HTTP, USE(URL_HTTP) | USE(URL_API)},
    {"https", F_HTTP, USE(URL_API)},
};

#define NSCHEMES (sizeof schemes / sizeof schemes[0])

/* Schemes nng knows but that cannot work for a use here, and why (one clause each). */
static const char *unsupported_why(const char *scheme, enum url_use use)
{
    if (strcmp(scheme, "inproc") == 0)
        return "inproc is in-process only, no gateway could connect";
    if (strncmp(scheme, "wss", 3) == 0)
        return "wss is not set up with a certificate here; use tls+tcp:// for TLS";
    if (strncmp(scheme, "tls+", 4) == 0 && use == URL_PUBLISH)
        return "the publish socket has no TLS configuration; use tcp, ipc or ws";
    if (strcmp(scheme, "https") == 0 && use != URL_API)
        return "https is not supported; serve http on a private address or put a TLS proxy "
               "in front";
    if (strcmp(scheme, "zt") == 0)
        return "ZeroTier is not built into Debian's nng";
    return NULL;
}

/* The example forms accepted for use, for the "use one of" hint. */
static const char *forms_for(enum url_use use)
{
    switch (use) {
    case URL_LISTEN:
        return "tcp://HOST:PORT, tls+tcp://HOST:PORT, ipc:///PATH, abstract://NAME or "
               "ws://HOST:PORT[/PATH] (tcp4/tcp6/ws4/ws6 too)";
    case URL_PUBLISH:
        return "tcp://HOST:PORT, ipc:///PATH, abstract://NAME or ws://HOST:PORT[/PATH] "
               "(tcp4/tcp6/ws4/ws6 too)";
    case URL_HTTP:
        return "http://HOST:PORT";
    case URL_API:
        return "http://HOST:PORT or https://HOST:PORT";
    }
    return "";
}

/* A literal IPv4 address, or a host name: letters, digits, '-', '.' and '_' (container names). */
static bool valid_name(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-')
        return false;
    for (const char *p = h; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
            return false;
    return true;
}

/*
 * The host and port of a parsed URL. u_host is HOST, HOST:PORT, [V6] or
 * [V6]:PORT as written; nng fills u_port with the scheme's default when
 * none was written, so explicitness is read from u_host.
 */
static gim_err check_host_port(const char *url, const nng_url *u, bool port_required, char *why,
                               size_t whylen)
{
    const char *host = u->u_host ? u->u_host : "";
    const char *close = host[0] == '[' ? strchr(host, ']') : NULL;
    const char *colon = strrchr(close ? close : host, ':');
    if (host[0] == '[') {
        struct in6_addr a6;
        if (!close || inet_pton(AF_INET6, u->u_hostname, &a6) != 1) {
            gim_err_why(why, whylen, "'%s' has a bad host: [%s] is not an IPv6 address", url,
                        u->u_hostname);
            return GIM_ECONFIG;
        }
    } else if (u->u_hostname[0] && !valid_name(u->u_hostname)) {
        gim_err_why(why, whylen, "'%s' has a bad host '%s': want a name, an IPv4 address or [IPv6]",
                    url, u->u_hostname);
        return GIM_ECONFIG;
    }
    if (!colon) {
        if (!port_required)
            return GIM_OK;
        gim_err_why(why, whylen, "'%s' needs an explicit port (HOST:PORT)", url);
        return GIM_ECONFIG;
    }
    const char *port = colon + 1;
    size_t n = strlen(port);
    bool digits = n > 0 && n <= 5;
    for (size_t i = 0; digits && i < n; i++)
        digits = isdigit((unsigned char)port[i]);
    if (!digits || strtol(port, NULL, 10) > 65535) {
        gim_err_why(why, whylen, "'%s' has a bad port '%s': want 0 to 65535", url, port);
        return GIM_ECONFIG;
    }
    return GIM_OK;
}

static gim_err check_form(const char *url, const struct scheme *s, const nng_url *u, char *why,
                          size_t whylen)
{
    if (s->form == F_PATH) {
        /* nng puts everything after "scheme://" in u_path for these. */
        if (!u->u_path[0]) {
            gim_err_why(why, whylen, "'%s' needs a path (%s:///PATH or %s://NAME)", url, s->name,
                        s->name);
            return GIM_ECONFIG;
        }
        if (strcmp(s->name, "ipc") == 0 &&
            strlen(u->u_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            gim_err_why(why, whylen, "'%s' has a path longer than %zu bytes, the Unix socket limit",
                        url, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
            return GIM_ECONFIG;
        }
        return GIM_OK;
    }
    if (u->u_userinfo) {
        gim_err_why(why, whylen, "'%s' has user info (USER@), which %s does not take", url,
                    s->name);
        return GIM_ECONFIG;
    }
    if (u->u_query || u->u_fragment) {
        gim_err_why(why, whylen, "'%s' has a query or fragment, which %s does not take", url,
                    s->name);
        return GIM_ECONFIG;
    }
    if ((s->form == F_HOSTPORT && u->u_path[0]) ||
        (s->form == F_HTTP && u->u_path[0] && strcmp(u->u_path, "/") != 0)) {
        gim_err_why(why, whylen, "'%s' has a path '%s', which %s does not take", url, u->u_path,
                    s->form == F_HTTP ? "an http listener (it serves its own fixed paths)"
                                      : s->name);
        return GIM_ECONFIG;
    }
    return check_host_port(url, u, s->form != F_HTTP, why, whylen);
}

gim_err url_check(const char *url, enum url_use use, char *why, size_t whylen)
{
    const char *sep = strstr(url, "://");
    size_t slen = sep ? (size_t)(sep - url) : 0;
    char scheme[16] = "";
    if (!sep || slen == 0 || slen >= sizeof scheme) {
        gim_err_why(why, whylen, "'%s' is not a URL; use %s", url, forms_for(use));
        return GIM_ECONFIG;
    }
    memcpy(scheme, url, slen);
    /* Matched as written: nng lowercases the scheme, but server.c picks TLS by the raw prefix. */
    const struct scheme *s = NULL;
    for (size_t i = 0; i < NSCHEMES && !s; i++)
        if (strcmp(schemes[i].name, scheme) == 0 && (schemes[i].uses & USE(use)))
            s = &schemes[i];
    if (!s) {
        const char *reason = unsupported_why(scheme, use);
        if (reason)
            gim_err_why(why, whylen, "'%s': %s", url, reason);
        else
            gim_err_why(why, whylen, "'%s': scheme '%s' is not supported here; use %s", url, scheme,
                        forms_for(use));
        return GIM_ECONFIG;
    }
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv != 0) {
        gim_err_why(why, whylen, "'%s' is not a valid URL: %s", url, nng_strerror(rv));
        return GIM_ECONFIG;
    }
    gim_err e = check_form(url, s, u, why, whylen);
    nng_url_free(u);
    return e;
}

bool url_is_tls(const char *url)
{
    return strncmp(url, "tls+", 4) == 0;
}
