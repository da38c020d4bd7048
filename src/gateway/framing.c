#include "framing.h"

enum framing_result framing_parse(enum framing f, const uint8_t *buf, size_t len, size_t max_body,
                                  size_t *hdr, size_t *body_len)
{
    uint64_t n = 0;
    size_t h = 0;
    *hdr = 0;
    *body_len = 0;
    if (f == FRAMING_BE16) {
        if (len < 2)
            return FRAMING_NEED_MORE;
        n = (uint64_t)buf[0] << 8 | buf[1];
        h = 2;
    } else if (f == FRAMING_UVARINT) {
        /* Base-128, least significant group first, at most 10 bytes for 64 bits. */
        for (;;) {
            if (h == len)
                return FRAMING_NEED_MORE;
            if (h == 10)
                return FRAMING_BAD;
            uint8_t b = buf[h];
            n |= (uint64_t)(b & 0x7f) << (7 * h);
            h++;
            if (!(b & 0x80))
                break;
        }
    } else {
        if (len > max_body)
            return FRAMING_TOO_LARGE;
        *body_len = len;
        return FRAMING_FRAME;
    }
    if (n > max_body)
        return FRAMING_TOO_LARGE;
    *hdr = h;
    *body_len = (size_t)n;
    return len - h >= n ? FRAMING_FRAME : FRAMING_NEED_MORE;
}

int framing_fits(enum framing f, size_t body_len)
{
    return f != FRAMING_BE16 || body_len <= FRAMING_BE16_MAX;
}

size_t framing_header(enum framing f, size_t body_len, uint8_t *out)
{
    size_t h = 0;
    if (f == FRAMING_BE16) {
        if (body_len > FRAMING_BE16_MAX)
            return 0;
        out[0] = (uint8_t)(body_len >> 8);
        out[1] = (uint8_t)body_len;
        return 2;
    }
    if (f == FRAMING_UVARINT) {
        uint64_t n = body_len;
        do {
            uint8_t b = n & 0x7f;
            n >>= 7;
            out[h++] = b | (n ? 0x80 : 0);
        } while (n);
    }
    return h;
}
