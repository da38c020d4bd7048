#include "operator.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "storage.h"
#include "wctx.h"

gim_err operator_auth(struct request *r, const char *token, const char *what)
{
    char why[100] = "";
    const char *secret = config_secret(r->cfg);
    if (!secret)
        return request_fail(r, GIM_EUNAUTH, "%s: no token secret configured", what);
    if (auth_verify_admin(secret, token, (int64_t)time(NULL), why, sizeof why) != GIM_OK)
        return request_fail(r, GIM_EUNAUTH, "%s: %s", what, why);
    return GIM_OK;
}

gim_err operator_decode(struct request *r, const ProtobufCMessageDescriptor *d, const char *what)
{
    gim_err e = request_decode_input(r, d);
    if (e != GIM_OK)
        return e;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || strcmp(f->name, "token") != 0)
        return request_fail(r, GIM_EINTERNAL, "%s: the input has no operator token", what);
    return operator_auth(r, *(const char *const *)((const char *)r->in + f->offset), what);
}

gim_err operator_idem_init(struct request *r, struct operator_idem *idem, ProtobufCMessage *m,
                           char **token, char **key_field, const char *what)
{
    char buf[OPERATOR_IDEM_KEY_MAX + 16];
    memset(idem, 0, sizeof *idem);
    size_t klen = strlen(*key_field);
    if (klen > OPERATOR_IDEM_KEY_MAX)
        return request_fail(r, GIM_EBADREQ, "%s: idempotency_key is %zu bytes, the limit is %d",
                            what, klen, OPERATOR_IDEM_KEY_MAX);
    if (klen > 0)
        snprintf(buf, sizeof buf, "key:%s", *key_field);
    else if (r->request_id != 0)
        snprintf(buf, sizeof buf, "request_id:%" PRId64, r->request_id);
    else
        return GIM_OK;
    if (!(idem->key = strdup(buf)))
        return request_fail(r, GIM_ENOMEM, "out of memory");

    char *saved_token = *token, *saved_key = *key_field;
    *token = (char *)protobuf_c_empty_string;
    *key_field = (char *)protobuf_c_empty_string;
    idem->body_len = protobuf_c_message_get_packed_size(m);
    idem->body = malloc(idem->body_len ? idem->body_len : 1);
    if (idem->body)
        protobuf_c_message_pack(m, idem->body);
    *token = saved_token;
    *key_field = saved_key;
    if (!idem->body)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    return GIM_OK;
}

/*
 * The claim is the backend's (storage.h, op_idem_claim: SQLite reads the
 * record; PostgreSQL claims the key first, so the same retry reaching two
 * instances at once applies once).
 */
gim_err operator_idem_replay(struct request *r, struct wctx *w, struct operator_idem *idem,
                             const char *what)
{
    idem->replayed = false;
    if (!idem->key)
        return GIM_OK;
    enum storage_op_idem found = STORAGE_OP_IDEM_NEW;
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int64_t expired_before = w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000;
    gim_err e =
        storage(w->db)->group->op_idem_claim(w, idem->key, r->type, idem->body, idem->body_len,
                                             expired_before, &found, &reply, &reply_len);
    if (e == GIM_ENOMEM)
        return request_fail(r, e, "out of memory");
    if (e != GIM_OK)
        return request_fail(r, e, "%s: cannot read the idempotency records", what);
    if (found == STORAGE_OP_IDEM_OTHER)
        return request_fail(r, GIM_EBADREQ,
                            "%s: idempotency key already used by a different request "
                            "(a retry must repeat the request exactly; use a new key)",
                            what);
    if (found == STORAGE_OP_IDEM_REPLAY) { /* the stored reply (none: NULL) becomes r's */
        idem->replayed = true;
        free(r->out);
        r->out = reply;
        r->out_len = reply_len;
    }
    return GIM_OK;
}

gim_err operator_idem_remember(struct request *r, struct wctx *w, const struct operator_idem *idem,
                               const char *what)
{
    if (!idem->key)
        return GIM_OK;
    gim_err e = storage(w->db)->group->op_idem_put(w, idem->key, r->type, idem->body,
                                                   idem->body_len, r->out, r->out_len);
    if (e != GIM_OK)
        return request_fail(r, e, "%s: cannot record the request", what);
    return GIM_OK;
}

void operator_idem_free(struct operator_idem *idem)
{
    if (!idem)
        return;
    free(idem->key);
    free(idem->body);
    memset(idem, 0, sizeof *idem);
}
