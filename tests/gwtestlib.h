/*
 * gwtestlib: what the gateway integration tests share. gwt_start() runs the
 * real gim-gateway binary in front of a real gim-logic (testlib.h) on fresh
 * loopback ports; gwc_* is a small test client speaking gim's client
 * protocol over TCP (be16 or uvarint framing, plain sockets) or WebSocket
 * (nng's own ws stream dialer in message mode: one message = one frame).
 *
 * Returned Outputs are the caller's: pb__output__free_unpacked(o, NULL).
 */
#ifndef GIM_GWTESTLIB_H
#define GIM_GWTESTLIB_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"
#include "testlib.h"

struct gw_server {
    pid_t pid;
    char dir[128];
    char config[192];
    char log[192];
    char id[32];
    int be16_port, uvarint_port, ws_port, http_port;
    int more_port[2]; /* the ports of gwt_start_ex's {port1} and {port2} */
};

/* A gim-logic for gateways: tl_start plus a tcp:// listen URL, which the gateways use.
 * (Not ipc://: the gateway re-dials on timeouts, and an ipc dial aborted during its
 * handshake can make nng 1.5.2's ipc listener stop accepting; docs/gateway.md.) */
void gwt_start_logic(struct tl_server *logic, const char *extra_yaml);

/* Starts gim-gateway `id` in front of logic. logic_keys: extra keys of the logic mapping
 * (e.g. "lease_seconds: 1"), extra_yaml: extra top-level sections (e.g. "conn: {...}");
 * NULL for none. Returns once its TCP listener accepts (i.e. gim-logic answered the lease). */
void gwt_start(struct gw_server *g, const struct tl_server *logic, const char *id,
               const char *logic_keys, const char *extra_yaml);
/* Like gwt_start, with more YAML listener entries (e.g. "  - {url: \"wss://:{port1}/ws\"}\n":
 * {port1} and {port2} become free ports, picked again with the others when one was taken at
 * start-up; g->more_port[] says which) and web.root/web.proto_dir (NULL: disabled). */
void gwt_start_ex(struct gw_server *g, const struct tl_server *logic, const char *id,
                  const char *logic_keys, const char *extra_yaml, const char *more_listeners,
                  const char *web_root, const char *proto_dir);
/* SIGSTOP pid and wait until every thread of it is stopped: the signal is delivered
 * asynchronously, and on a loaded VM a running thread can go on for milliseconds. */
void gwt_freeze(pid_t pid);

/* SIGTERM and wait; the exit status (or 128+signal). */
int gwt_stop(struct gw_server *g);
void gwt_cleanup(struct gw_server *g);
/* GET path on the gateway's HTTP port: the body (malloc'ed) or NULL; *status the code. */
char *gwt_http_get(int port, const char *path, int *status);
/* The value of a metric line "name value" (name may include labels), -1 if absent. */
long gwt_metric(struct gw_server *g, const char *name);

enum gwc_kind { GWC_BE16, GWC_UVARINT, GWC_WS };

struct gwc {
    enum gwc_kind kind;
    int fd; /* tcp */
    nng_stream_dialer *dialer;
    nng_stream *ws;
    nng_aio *aio;  /* dial and send */
    nng_aio *raio; /* ws: a receive is always pending, so a close is always seen */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool rdone;
    uint8_t *buf; /* tcp receive buffer */
    size_t len, cap;
    bool eof;
};

/* Connects to the gateway's listener of that kind. rcvbuf > 0 sets SO_RCVBUF (slow readers). */
void gwc_connect(struct gwc *c, const struct gw_server *g, enum gwc_kind kind, int rcvbuf);
void gwc_close(struct gwc *c);
/* Encodes Input{type, request_id, data} with the connection's framing into out (returns
 * its length); for ws, only the Input. */
size_t gwc_frame(const struct gwc *c, int type, int64_t request_id, const ProtobufCMessage *data,
                 uint8_t *out, size_t cap);
/* Writes raw bytes (tcp) or one binary message (ws). */
void gwc_write(struct gwc *c, const void *buf, size_t len);
void gwc_send(struct gwc *c, int type, int64_t request_id, const ProtobufCMessage *data);
/* The next Output, or NULL after timeout_ms or at EOF (then c->eof). */
Pb__Output *gwc_recv(struct gwc *c, int timeout_ms);
/* Like gwc_recv but skips pushes (request_id 0 PT_MESSAGE outputs) until one with request_id. */
Pb__Output *gwc_reply(struct gwc *c, int64_t request_id, int timeout_ms);
/* Reads and discards until EOF; true when EOF came within timeout_ms. */
bool gwc_wait_closed(struct gwc *c, int timeout_ms);
/* Signs in through the gateway; returns the reply's code. */
int gwc_signin(struct gwc *c, int64_t user, int64_t device);

/* MessageSend of a text message to a user (RT_USER) or group (RT_GROUP). */
Pb__Output *gwc_send_text(struct gwc *c, int receiver_type, int64_t to, const char *text,
                          int64_t request_id);

#endif
