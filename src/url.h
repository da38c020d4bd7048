/*
 * url: checks the scheme and form of the URLs the service binds (the listen,
 * publish and http keys), so that config validation can refuse a URL that
 * could never work with one line, before start-up creates anything.
 *
 * Parsing is nng's own (nng_url_parse), the parser the listeners use later.
 * The accepted schemes are those Debian's nng 1.5.2 listens on and that our
 * sockets are set up for: the REP listener (server.c) configures TLS for
 * tls+tcp URLs, the PUB socket (push.c) has no TLS at all, the HTTP
 * server (http.c) serves plain http, and the business API (api.c) serves
 * http or, with api.cert_file and api.key_file, https. Nothing is resolved or bound here, so a
 * check never depends on the network; a host name that does not resolve
 * still fails at start-up, naming the URL.
 */
#ifndef GIM_URL_H
#define GIM_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

enum url_use {
    URL_LISTEN,  /* nng REP listener: tcp[46], tls+tcp[46], ipc, abstract, ws[46] */
    URL_PUBLISH, /* nng PUB listener: tcp[46], ipc, abstract, ws[46] */
    URL_HTTP,    /* nng HTTP server: http */
    URL_API,     /* the business API's nng HTTP server (api.c): http, https */
};

/*
 * GIM_OK when url suits use; otherwise GIM_ECONFIG and one line in why
 * (without the key name, which the caller knows), e.g.
 * "'tcp://nohostport' needs an explicit port (HOST:PORT)".
 */
gim_err url_check(const char *url, enum url_use use, char *why, size_t whylen);

/* True when url uses nng's TLS transport (tls+tcp://, tls+tcp4://, tls+tcp6://). */
bool url_is_tls(const char *url);

#endif
