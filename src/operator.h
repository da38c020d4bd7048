/*
 * operator: what every operator request (PT_ADMIN_RECALL, PT_ADMIN_KICK,
 * PT_ADMIN_ERASE, and the business API to come) shares.
 *
 * Operator requests act for no device, so they carry no session: each input
 * message starts with an operator token (field 1), checked here in the
 * handler's prepare(), before anything is written. The token is a JWT under
 * the service's own secret with sub "gim-admin" and adm 1 (auth.h); without
 * a configured secret there is no operator at all (insecure_dev does not
 * extend to operator requests).
 *
 * Idempotency of the business API's writes (PT_ADMIN_GROUP_*, PT_ADMIN_SEND):
 * prepare() computes the request's key and its canonical body
 * (operator_idem_init); write() first asks operator_idem_replay() whether the
 * key was answered before (then the stored reply is the answer and nothing
 * else runs), and after its change records the reply with
 * operator_idem_remember(), in the same transaction, so the record exists
 * exactly when the change does.
 */
#ifndef GIM_OPERATOR_H
#define GIM_OPERATOR_H

#include "err.h"
#include "request.h"

/*
 * GIM_OK when token is a valid operator token now; otherwise fails r with
 * GIM_EUNAUTH and the message "<what>: <reason>" and returns GIM_EUNAUTH.
 */
gim_err operator_auth(struct request *r, const char *token, const char *what);

/*
 * request_decode_input(r, d), then operator_auth() of the input's token,
 * which every operator input carries as field 1: one prologue for every
 * operator handler's prepare(). GIM_OK, or r is failed (GIM_EUNAUTH for a
 * bad token).
 */
gim_err operator_decode(struct request *r, const ProtobufCMessageDescriptor *d, const char *what);

/* Longest idempotency_key accepted, in bytes. */
#define OPERATOR_IDEM_KEY_MAX 200

/* One request's idempotency record as prepare() computes it. Owns key and body. */
struct operator_idem {
    char *key;     /* NULL: no key and no request_id, so no record */
    uint8_t *body; /* the input re-encoded without token and idempotency_key */
    size_t body_len;
    bool replayed; /* write() answered from an earlier record */
};

/*
 * Fills idem for the decoded input m: the key is "key:<idempotency_key>", or
 * "request_id:<N>" when the key is empty and r->request_id is not 0. token
 * and key_field point at m's token and idempotency_key fields: they are
 * emptied while m is encoded into idem->body, then restored, so a retry
 * with a fresh token still matches. A key over OPERATOR_IDEM_KEY_MAX bytes
 * fails r with GIM_EBADREQ. Free idem with operator_idem_free().
 */
gim_err operator_idem_init(struct request *r, struct operator_idem *idem, ProtobufCMessage *m,
                           char **token, char **key_field, const char *what);

/*
 * In write(), before any change: when idem's key has a record of the same
 * type and body, its reply becomes r's (idem->replayed = true); of another
 * request, r fails with GIM_EBADREQ. No record: GIM_OK, not replayed.
 */
gim_err operator_idem_replay(struct request *r, struct wctx *w, struct operator_idem *idem,
                             const char *what);

/* In write(), after the change: records r->out as the key's reply. No key: nothing. */
gim_err operator_idem_remember(struct request *r, struct wctx *w, const struct operator_idem *idem,
                               const char *what);

/* Frees what idem owns and zeroes it. */
void operator_idem_free(struct operator_idem *idem);

#endif
