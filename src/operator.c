#include "operator.h"

#include <time.h>

#include "auth.h"
#include "config.h"

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
