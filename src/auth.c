#include "auth.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>

/* libjwt 1.10 hands integer claims back as long: ids and times must not be truncated. */
_Static_assert(sizeof(long) >= sizeof(int64_t), "auth needs a 64-bit long (libjwt claims)");

static const char *alg_name(jwt_alg_t alg)
{
    const char *s = jwt_alg_str(alg);
    return s ? s : "unknown";
}

/*
 * jwt_decode() reports every failure as EINVAL. A second decode without a key
 * (format checks only) tells a bad signature from a malformed token or a
 * refused alg, so operators get a useful reason. Its claims are never used.
 */
static void explain_decode_failure(const char *token, char *why, size_t whylen)
{
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, NULL, 0) != 0 || !jwt) {
        gim_err_why(why, whylen, "malformed token");
        return;
    }
    /* Without a key libjwt reports alg none whatever the header says: read the header. */
    const char *h = jwt_get_header(jwt, "alg");
    jwt_alg_t alg = h ? jwt_str_alg(h) : JWT_ALG_INVAL;
    if (alg == JWT_ALG_HS256)
        gim_err_why(why, whylen, "bad signature");
    else
        gim_err_why(why, whylen, "alg %s not accepted (HS256 only)", alg_name(alg));
    jwt_free(jwt);
}

enum claim { CLAIM_OK, CLAIM_MISSING, CLAIM_BAD };

/*
 * A claim that must be a JSON integer > 0. libjwt 1.10 returns 0 for a
 * string, real or boolean value (newer versions -1 with EINVAL), so "> 0"
 * also rejects every non-integer.
 */
static enum claim positive_int_claim(jwt_t *jwt, const char *name, int64_t *out)
{
    errno = 0;
    long v = jwt_get_grant_int(jwt, name);
    if (errno == ENOENT)
        return CLAIM_MISSING;
    if (errno != 0 || v <= 0)
        return CLAIM_BAD;
    *out = v;
    return CLAIM_OK;
}

/* A claim the token must carry as an integer > 0; false after saying why. */
static bool required_claim(jwt_t *jwt, const char *name, int64_t *out, char *why, size_t whylen)
{
    switch (positive_int_claim(jwt, name, out)) {
    case CLAIM_MISSING:
        gim_err_why(why, whylen, "token has no %s", name);
        return false;
    case CLAIM_BAD:
        gim_err_why(why, whylen, "%s must be a positive integer", name);
        return false;
    case CLAIM_OK:
        break;
    }
    return true;
}

/*
 * A positive decimal in canonical form (no sign, spaces, leading zeros or
 * trailing bytes) that fits int64: "05" and "5" must not both name user 5.
 */
static bool parse_id(const char *s, int64_t *out)
{
    if (!*s || *s == '0')
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end || v <= 0)
        return false;
    *out = v;
    return true;
}

/*
 * The checks every token passes, user or admin: size, HS256 signature with
 * our secret, exp in the future, nbf (if any) in the past. On GIM_OK *out
 * is the decoded token, which the caller frees with jwt_free().
 */
static gim_err open_token(const char *secret, const char *token, int64_t now_s, jwt_t **out,
                          char *why, size_t whylen)
{
    gim_err e = GIM_EUNAUTH;
    jwt_t *jwt = NULL;
    int64_t exp = 0, nbf = 0;
    size_t klen = secret ? strlen(secret) : 0;

    *out = NULL;
    if (klen == 0 || klen > INT_MAX) {
        gim_err_why(why, whylen, "no token secret configured");
        goto out;
    }
    if (!token || !*token) {
        gim_err_why(why, whylen, "empty token");
        goto out;
    }
    if (strnlen(token, AUTH_TOKEN_MAX + 1) > AUTH_TOKEN_MAX) {
        gim_err_why(why, whylen, "token longer than %d bytes", AUTH_TOKEN_MAX);
        goto out;
    }
    if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)klen) != 0 || !jwt) {
        jwt = NULL;
        explain_decode_failure(token, why, whylen);
        goto out;
    }
    /* A valid signature under another alg (HS384/HS512) is still refused: HS256 is the contract. */
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        gim_err_why(why, whylen, "alg %s not accepted (HS256 only)", alg_name(jwt_get_alg(jwt)));
        goto out;
    }
    /* libjwt reads the header's alg case-insensitively; RFC 7515 makes it case-sensitive. */
    const char *alg = jwt_get_header(jwt, "alg");
    if (!alg || strcmp(alg, "HS256") != 0) {
        gim_err_why(why, whylen, "alg \"%.16s\" not accepted (exactly \"HS256\" only)",
                    alg ? alg : "");
        goto out;
    }

    if (!required_claim(jwt, "exp", &exp, why, whylen))
        goto out;
    if (exp <= now_s) {
        gim_err_why(why, whylen, "token expired");
        goto out;
    }
    /* nbf is optional, but RFC 7519 forbids accepting a token before it: one we cannot
     * read (a string, a real, 0) is refused rather than ignored. */
    switch (positive_int_claim(jwt, "nbf", &nbf)) {
    case CLAIM_MISSING:
        break;
    case CLAIM_BAD:
        gim_err_why(why, whylen, "nbf must be a positive integer");
        goto out;
    case CLAIM_OK:
        if (nbf > now_s) {
            gim_err_why(why, whylen, "token not valid yet");
            goto out;
        }
        break;
    }
    *out = jwt;
    jwt = NULL;
    e = GIM_OK;
out:
    if (jwt)
        jwt_free(jwt);
    return e;
}

gim_err auth_verify(const char *secret, const char *token, int64_t now_s, int64_t *user_id,
                    int64_t *device_id, char *why, size_t whylen)
{
    gim_err e = GIM_EUNAUTH;
    jwt_t *jwt = NULL;
    int64_t uid = 0, did = 0, adm = 0;

    if (open_token(secret, token, now_s, &jwt, why, whylen) != GIM_OK)
        goto out;
    if (positive_int_claim(jwt, "adm", &adm) != CLAIM_MISSING) {
        gim_err_why(why, whylen, "an operator token cannot sign a device in");
        goto out;
    }

    errno = 0;
    const char *sub = jwt_get_grant(jwt, "sub");
    if (!sub) {
        gim_err_why(why, whylen, errno == ENOENT ? "token has no sub" : "sub must be a string");
        goto out;
    }
    if (!parse_id(sub, &uid)) {
        gim_err_why(why, whylen, "sub must be a positive decimal user id");
        goto out;
    }

    if (!required_claim(jwt, "did", &did, why, whylen))
        goto out;

    *user_id = uid;
    *device_id = did;
    e = GIM_OK;
out:
    if (jwt)
        jwt_free(jwt);
    return e;
}

/*
 * An HS256 token of subject sub carrying the integer claim name = value and
 * exp: the one encoder behind a device's token and an operator's.
 */
static gim_err mint(const char *secret, const char *sub, const char *name, long value,
                    int64_t exp_s, char **token_out)
{
    gim_err e = GIM_EINTERNAL;
    jwt_t *jwt = NULL;
    size_t klen = secret ? strlen(secret) : 0;

    *token_out = NULL;
    if (klen == 0 || klen > INT_MAX || exp_s <= 0) {
        e = GIM_EBADREQ;
        goto out;
    }
    if (jwt_new(&jwt) != 0 || !jwt) {
        jwt = NULL;
        e = GIM_ENOMEM;
        goto out;
    }
    if (jwt_add_grant(jwt, "sub", sub) != 0 || jwt_add_grant_int(jwt, name, value) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)exp_s) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)klen) != 0)
        goto out;
    /* libjwt 1.10 allocates the encoded string with malloc(): the caller's free() matches. */
    errno = 0;
    *token_out = jwt_encode_str(jwt);
    if (!*token_out) {
        e = errno == ENOMEM ? GIM_ENOMEM : GIM_EINTERNAL;
        goto out;
    }
    e = GIM_OK;
out:
    if (jwt)
        jwt_free(jwt);
    return e;
}

gim_err auth_mint(const char *secret, int64_t user_id, int64_t device_id, int64_t exp_s,
                  char **token_out)
{
    char sub[24];
    *token_out = NULL;
    if (user_id <= 0 || device_id <= 0)
        return GIM_EBADREQ;
    snprintf(sub, sizeof sub, "%" PRId64, user_id);
    return mint(secret, sub, "did", (long)device_id, exp_s, token_out);
}

gim_err auth_verify_admin(const char *secret, const char *token, int64_t now_s, char *why,
                          size_t whylen)
{
    gim_err e = GIM_EUNAUTH;
    jwt_t *jwt = NULL;
    int64_t adm = 0;

    if (open_token(secret, token, now_s, &jwt, why, whylen) != GIM_OK)
        goto out;
    errno = 0;
    const char *sub = jwt_get_grant(jwt, "sub");
    if (!sub || strcmp(sub, AUTH_ADMIN_SUBJECT) != 0 ||
        positive_int_claim(jwt, "adm", &adm) != CLAIM_OK || adm != 1) {
        gim_err_why(why, whylen, "not an operator token");
        goto out;
    }
    e = GIM_OK;
out:
    if (jwt)
        jwt_free(jwt);
    return e;
}

gim_err auth_mint_admin(const char *secret, int64_t exp_s, char **token_out)
{
    return mint(secret, AUTH_ADMIN_SUBJECT, "adm", 1, exp_s, token_out);
}
