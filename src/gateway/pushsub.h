/*
 * pushsub: receives gim-logic's pushes and hands them to connections.
 *
 * One nng SUB socket dials every URL of logic.publish and subscribes to
 * "<gateway_id>\n". Each message is that topic followed by an encoded
 * pb.Delivery; its output goes to the current connection of each listed
 * device (registry.h). An output of type PT_SIGN_OUT means gim-logic ended
 * the session (operator kick, signed in elsewhere): it is sent and the
 * connection closed without a sign-out. Delivery is best effort, like
 * gim-logic's PUB: a client detects a gap by its seqs and syncs.
 *
 * Ownership: pushsub_open's *out is the caller's (pushsub_close).
 */
#ifndef GIM_PUSHSUB_H
#define GIM_PUSHSUB_H

#include <stddef.h>

#include "err.h"
#include "gw.h"

struct pushsub;

gim_err pushsub_open(struct pushsub **out, struct gw *g, const char *gateway_id, char *errbuf,
                     size_t errlen);
void pushsub_close(struct pushsub *p);

#endif
