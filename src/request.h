/*
 * request: one gateway request on its way through gim-logic, and the
 * interface every handler implements.
 *
 * Path: server (nng context) -> dispatch (decode envelope, authenticate,
 * pick handler) -> handler -> store. A handler has up to three parts:
 *   prepare()   on the worker thread: decode and validate Input.data; no DB.
 *               It may answer alone (r->answered), e.g. a lease that only
 *               refreshes memory.
 *   read()      on the worker thread, with its read-only connection (sync).
 *   write()     inside the writer's transaction (send, ack, recall...).
 *   committed() on the writer thread after the commit: in-memory effects
 *               (presence) and pushes.
 * A handler has read() or write(), not both. Whatever fails sets r->code
 * (request_fail) and the reply carries it; a failed write() is rolled back.
 *
 * Ownership: the request owns env, in, out and scratch; request_reset()
 * frees them. Handlers put reply bytes in r->out with request_set_reply(),
 * or request_take_reply() for bytes they encoded themselves.
 */
#ifndef GIM_REQUEST_H
#define GIM_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
#include "proto.h"
#include "store.h"
#include "writer.h"

struct request;
struct server_ctx;
struct dispatch;

struct handler {
    int type; /* Pb__PackageType */
    const char *name;
    bool needs_session; /* false only for sign-in */
    gim_err (*prepare)(struct request *r);
    gim_err (*read)(struct request *r, struct store_conn *ro);
    gim_err (*write)(struct request *r, struct wctx *w);
    void (*committed)(struct request *r, struct wctx *w);
    /* PostgreSQL: the seq rows write() will lock, declared before its batch
     * runs (write_job.locks, writer.h). NULL: none. */
    gim_err (*locks)(struct request *r, struct wctx *w, struct writer_locks *l);
    /* Frees r->scratch; NULL when the handler keeps none. */
    void (*cleanup)(struct request *r);
};

struct request {
    /* --- input --- */
    Pb__GatewayRequest *env; /* decoded envelope (owned) */
    int type;                /* env->input->type, or PT_UNKNOWN */
    int64_t request_id;
    struct session sess; /* the caller's session (sign-in: the new one) */
    const char *client_addr;
    ProtobufCMessage *in; /* decoded Input.data (owned), per handler */
    void *scratch;        /* handler's own state between phases (owned by the handler) */
    const struct handler *h;
    const struct gim_config *cfg;

    /* --- output --- */
    gim_err code;
    bool answered; /* prepare() answered the request itself: no read() or write() follows */
    char errmsg[200];
    uint8_t *out; /* Output.data (owned, malloc) */
    size_t out_len;

    /* --- plumbing --- */
    struct write_job job;
    struct server_ctx *sctx; /* where the reply goes; NULL in unit tests */
    const struct dispatch *disp;
    int64_t start_ns;
};

/* Sets code and a printf-style message; returns code so handlers can `return request_fail(...)`. */
gim_err request_fail(struct request *r, gim_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Packs m into r->out (replacing any earlier reply data). */
gim_err request_set_reply(struct request *r, const ProtobufCMessage *m);

/* Makes buf (malloc'ed, len bytes, already encoded) r->out; r owns it from now on. */
void request_take_reply(struct request *r, uint8_t *buf, size_t len);

/*
 * Decodes Input.data as desc into r->in. Missing data decodes as the empty
 * message (proto3). Undecodable bytes, or a string that is not UTF-8 ->
 * GIM_EBADREQ with a message.
 */
gim_err request_decode_input(struct request *r, const ProtobufCMessageDescriptor *desc);

/*
 * proto3 string fields must hold UTF-8, but protobuf-c does not check it when
 * decoding: every decoded request message (request_decode_input, and the
 * envelope in dispatch) passes through here, m's nested messages included.
 * A string that is not UTF-8 -> GIM_EBADREQ naming the field.
 */
gim_err request_check_utf8(struct request *r, const ProtobufCMessage *m);

/*
 * Fills out with r's reply Output (type, request_id, code, message, data); its
 * pointers point into r, so pack it before r changes.
 */
void request_output(const struct request *r, Pb__Output *out);

/* Packs the reply Output (request_output) into a malloc'ed buffer. */
gim_err request_pack_output(const struct request *r, uint8_t **buf, size_t *len);

/* Frees everything the request owns and zeroes it for reuse. */
void request_reset(struct request *r);

#endif
