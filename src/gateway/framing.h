/*
 * framing: how one client packet (an encoded pb.Input or pb.Output) is cut
 * out of, and put onto, a connection's byte stream.
 *
 *   be16     2-byte big-endian body length, then the body (gim 2021-2023,
 *            alberliu/gn codec.go). A body is at most 65,535 bytes.
 *   uvarint  protobuf base-128 varint body length, then the body (gim 2023-).
 *   ws       one binary WebSocket message = one body, no prefix (nng's
 *            "ws:msgmode" does the cutting; framing only checks sizes).
 *
 * Pure functions over caller buffers; no allocation.
 */
#ifndef GIM_FRAMING_H
#define GIM_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include "gw_config.h"

#define FRAMING_BE16_MAX   65535u
#define FRAMING_MAX_HEADER 10

enum framing_result {
    FRAMING_NEED_MORE = 0, /* no whole frame yet */
    FRAMING_FRAME = 1,     /* *hdr header bytes then *body_len body bytes are in buf */
    FRAMING_TOO_LARGE = 2, /* the header announces more than max_body: close the connection */
    FRAMING_BAD = 3,       /* a malformed length (a uvarint over 10 bytes) */
};

/* Looks for one frame at the start of buf[0..len). For FRAMING_NEED_MORE,
 * hdr and body_len are set once the header itself is complete (body_len then
 * says how much buffer the frame needs), else *hdr is 0. */
enum framing_result framing_parse(enum framing f, const uint8_t *buf, size_t len, size_t max_body,
                                  size_t *hdr, size_t *body_len);

/* Writes the header for a body of body_len bytes into out (FRAMING_MAX_HEADER
 * bytes) and returns its length; 0 when the body cannot be framed (be16 over
 * 65,535 bytes): such a frame must never be sent, not even truncated. ws has
 * no header (returns 0 too): check framing_fits() first. */
size_t framing_header(enum framing f, size_t body_len, uint8_t *out);

/* Whether a body of body_len bytes can be sent with f at all. */
int framing_fits(enum framing f, size_t body_len);

#endif
