#include "request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gim_err request_fail(struct request *r, gim_err code, const char *fmt, ...)
{
    r->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

gim_err request_set_reply(struct request *r, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    protobuf_c_message_pack(m, buf);
    free(r->out);
    r->out = buf;
    r->out_len = len;
    return GIM_OK;
}

gim_err request_decode_input(struct request *r, const ProtobufCMessageDescriptor *desc)
{
    const Pb__Input *in = r->env->input;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, in->data.len, in->data.data);
    if (!m)
        return request_fail(r, GIM_EBADREQ, "data is not a valid %s", desc->name);
    if (r->in)
        protobuf_c_message_free_unpacked(r->in, NULL);
    r->in = m;
    return GIM_OK;
}

gim_err request_pack_output(const struct request *r, uint8_t **buf, size_t *len)
{
    Pb__Output out = PB__OUTPUT__INIT;
    out.type = (Pb__PackageType)r->type;
    out.request_id = r->request_id;
    out.code = gim_err_wire(r->code);
    if (r->code != GIM_OK)
        out.message = (char *)(r->errmsg[0] ? r->errmsg : gim_err_name(r->code));
    if (r->code == GIM_OK && r->out) {
        out.data.data = r->out;
        out.data.len = r->out_len;
    }
    *len = pb__output__get_packed_size(&out);
    *buf = malloc(*len ? *len : 1);
    if (!*buf)
        return GIM_ENOMEM;
    pb__output__pack(&out, *buf);
    return GIM_OK;
}

void request_reset(struct request *r)
{
    if (r->h && r->h->cleanup)
        r->h->cleanup(r);
    if (r->in)
        protobuf_c_message_free_unpacked(r->in, NULL);
    if (r->env)
        pb__gateway_request__free_unpacked(r->env, NULL);
    free(r->out);
    struct server_ctx *keep = r->sctx;
    const struct dispatch *disp = r->disp;
    memset(r, 0, sizeof *r);
    r->sctx = keep;
    r->disp = disp;
}
