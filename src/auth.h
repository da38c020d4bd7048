/*
 * auth: the sign-in token, a JWT signed with HS256 under the shared secret
 * (config auth.secret / the auth.secret_env variable) that the business
 * server and gim-logic both hold.
 *
 * Claims: `sub` = the user id as a decimal string (RFC 7519 makes sub a
 * string; a JSON number is refused), `did` = the device id as a JSON integer,
 * `exp` = expiry in seconds since the epoch (required). A present `nbf` is
 * honoured too. Only HS256 is accepted: "none" and every other alg are
 * refused even when their signature would check, so a token can never choose
 * its own verification rule.
 *
 * Signature checking and JSON parsing are libjwt's (1.10.2, which has no
 * claim validation API): this module only reads the decoded claims.
 * Thread-safe: no state is kept between calls.
 *
 * Ownership: auth_mint() returns a malloc'ed token the caller frees with free().
 */
#ifndef GIM_AUTH_H
#define GIM_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Longest token accepted, bytes: a real one is ~200; bounds work done on hostile input. */
#define AUTH_TOKEN_MAX 4096

/*
 * Verifies token under secret at time now_s (seconds since the epoch). On
 * GIM_OK fills *user_id (from sub) and *device_id (from did), both > 0. On
 * GIM_EUNAUTH leaves them untouched and writes a short human reason to why
 * (e.g. "token expired", "bad signature", "token has no exp"); why may be
 * NULL. A NULL or empty secret fails too ("no token secret configured").
 */
gim_err auth_verify(const char *secret, const char *token, int64_t now_s, int64_t *user_id,
                    int64_t *device_id, char *why, size_t whylen);

/*
 * Mints an HS256 token for (user_id, device_id) expiring at exp_s. On GIM_OK
 * *token_out is a malloc'ed string (free() it); otherwise it is NULL.
 * GIM_EBADREQ for an empty secret or ids/exp that are not > 0.
 */
gim_err auth_mint(const char *secret, int64_t user_id, int64_t device_id, int64_t exp_s,
                  char **token_out);

/*
 * Operator tokens, for requests that act for no device (PT_ADMIN_RECALL from
 * `gimctl recall --admin`): HS256 with the same secret, sub = "gim-admin",
 * adm = 1, exp required. A user token is never an operator token and an
 * operator token never signs a device in.
 */
#define AUTH_ADMIN_SUBJECT "gim-admin"

gim_err auth_verify_admin(const char *secret, const char *token, int64_t now_s, char *why,
                          size_t whylen);

/* Mints an operator token valid until exp_s; *token_out is malloc'ed (caller frees). */
gim_err auth_mint_admin(const char *secret, int64_t exp_s, char **token_out);

#endif
