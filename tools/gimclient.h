/*
 * gimclient: a gateway's side of the protocol, for gimctl, gim-bench and the
 * integration tests.
 *
 * One client = one nng REQ socket dialed to one URL. A call that times out
 * resends the same bytes (same request_id: the server's idempotency makes
 * that safe) up to `attempts` times in all. Debian's nng 1.5.2 can stop
 * redialing when a connection drops during its handshake, so when the socket
 * has no connection up the resend goes out on a new socket. A socket with a
 * connection up is never closed after a timeout, not even by client_close:
 * its late reply may be arriving, and closing a pipe under an arriving
 * message can wedge nng 1.5.2 for the rest of the process (gimclient.c).
 *
 * Ownership: client_open's *out is the caller's (client_close). Replies
 * returned through **out are the caller's: pb__output__free_unpacked(out, NULL).
 */
#ifndef GIM_CLIENT_H
#define GIM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "proto.h"

struct gim_client;

/* A connection's identity as the gateway presents it. */
struct client_conn {
    int64_t user_id;
    int64_t device_id;
    const char *gateway_id;
    const char *client_addr;
};

gim_err client_open(struct gim_client **out, const char *url, int timeout_ms, int attempts);

/* TLS for tls+tcp:// URLs: the CA that signed the server's certificate, and
 * our own certificate and key (PEM files; NULL for none). */
struct client_tls {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *server_name; /* must match the server certificate, e.g. "localhost" */
};

/* Like client_open, over TLS. */
gim_err client_open_tls(struct gim_client **out, const char *url, int timeout_ms, int attempts,
                        const struct client_tls *tls);
void client_close(struct gim_client *c);

/* Sends raw request bytes and waits for the raw reply (malloc'ed, caller frees). */
gim_err client_call_raw(struct gim_client *c, const void *buf, size_t len, uint8_t **reply,
                        size_t *rlen);

/*
 * Sends GatewayRequest{conn, Input{type, request_id, data = packed data (or
 * none when NULL)}} and decodes the Output. GIM_EIO when no reply came
 * after every attempt, GIM_EBADREQ when the reply is not a pb.Output.
 */
gim_err client_request(struct gim_client *c, const struct client_conn *conn, int type,
                       int64_t request_id, const ProtobufCMessage *data, Pb__Output **out);

#endif
