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

#endif
