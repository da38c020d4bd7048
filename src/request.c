#include "request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Output.message is a proto3 string: a message cut short inside a character
 * (it may quote a long gateway_id) would make strict clients reject the whole
 * reply. Drops the incomplete character at the end of s, if any.
 */
static void utf8_trim_tail(char *s, size_t len)
{
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
        i--, back++;
    if (i == 0 || ((unsigned char)s[i - 1] & 0x80) == 0)
        return; /* ends in ASCII, or in stray continuation bytes: not a cut character */
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = (lead & 0xe0) == 0xc0   ? 1
                  : (lead & 0xf0) == 0xe0 ? 2
                  : (lead & 0xf8) == 0xf0 ? 3
                                          : 0;
    if (back < need)
        s[i - 1] = '\0';
}

gim_err request_fail(struct request *r, gim_err code, const char *fmt, ...)
{
    r->code = code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof r->errmsg)
        utf8_trim_tail(r->errmsg, sizeof r->errmsg - 1);
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

void request_take_reply(struct request *r, uint8_t *buf, size_t len)
{
    free(r->out);
    r->out = buf;
    r->out_len = len;
}

/* RFC 3629: no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        uint32_t cp, min;
        int more;
        if (*s < 0x80) {
            s++;
            continue;
        } else if ((*s & 0xe0) == 0xc0) {
            cp = *s & 0x1f, min = 0x80, more = 1;
        } else if ((*s & 0xf0) == 0xe0) {
            cp = *s & 0x0f, min = 0x800, more = 2;
        } else if ((*s & 0xf8) == 0xf0) {
            cp = *s & 0x07, min = 0x10000, more = 3;
        } else {
            return false;
        }
        for (int i = 1; i <= more; i++) {
            if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
                return false;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += more + 1;
    }
    return true;
}

/* The first string field in m or its nested messages that is not UTF-8 (and its message). */
static const ProtobufCFieldDescriptor *bad_string(const ProtobufCMessage *m,
                                                  const ProtobufCMessageDescriptor **in)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *member = (const char *)m + f->offset;
        const char *quant = (const char *)m + f->quantifier_offset;
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)quant != f->id)
            continue;
        /* A singular field is a pointer; a repeated one, a count and an array of pointers. */
        const void *const *items = (const void *const *)member;
        size_t n = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)quant;
            items = *(const void *const *const *)member;
        }
        for (size_t j = 0; j < n; j++) {
            if (!items[j])
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING && !utf8_valid(items[j])) {
                *in = d;
                return f;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCFieldDescriptor *bad = bad_string(items[j], in);
                if (bad)
                    return bad;
            }
        }
    }
    return NULL;
}

gim_err request_check_utf8(struct request *r, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *in = NULL;
    const ProtobufCFieldDescriptor *f = bad_string(m, &in);
    if (f)
        return request_fail(r, GIM_EBADREQ, "%s.%s is not valid UTF-8", in->name, f->name);
    return GIM_OK;
}

gim_err request_decode_input(struct request *r, const ProtobufCMessageDescriptor *desc)
{
    const Pb__Input *in = r->env->input;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, in->data.len, in->data.data);
    if (!m)
        return request_fail(r, GIM_EBADREQ, "data is not a valid %s", desc->name);
    if (request_check_utf8(r, m) != GIM_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return r->code;
    }
    if (r->in)
        protobuf_c_message_free_unpacked(r->in, NULL);
    r->in = m;
    return GIM_OK;
}

void request_output(const struct request *r, Pb__Output *out)
{
    pb__output__init(out);
    out->type = (Pb__PackageType)r->type;
    out->request_id = r->request_id;
    out->code = gim_err_wire(r->code);
    if (r->code != GIM_OK)
        out->message = (char *)(r->errmsg[0] ? r->errmsg : gim_err_name(r->code));
    if (r->code == GIM_OK && r->out) {
        out->data.data = r->out;
        out->data.len = r->out_len;
    }
}

gim_err request_pack_output(const struct request *r, uint8_t **buf, size_t *len)
{
    Pb__Output out;
    request_output(r, &out);
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
