/*
 * gimctl token: mints a sign-in token, as the business server would, for
 * tests, benchmarks and manual sessions (`gimctl token --user 1 --device 2`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "gimctl.h"

#define TTL_DEFAULT 3600
/* Ten years: anything longer is a typo, not a token anyone should hold. */
#define TTL_MAX (10 * 366 * 86400LL)

#define STR_(x) #x
#define STR(x)  STR_(x)

const char gimctl_usage_token[] =
    "usage: gimctl token --user U --device D [--ttl SECONDS] [--secret S]\n"
    "  Prints an HS256 sign-in token for user U on device D, valid for SECONDS\n"
    "  (default " STR(TTL_DEFAULT) "). The secret is --secret, else $GIM_TOKEN_SECRET.\n";

int gimctl_token(struct gimctl *g, int argc, char **argv)
{
    int64_t user_id = g->user_id, device_id = g->device_id, ttl = TTL_DEFAULT;
    const char *secret = g->secret;
    char *token = NULL;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            return gimctl_usage_error("token", "%s needs a value", o);
        const char *v = argv[++i];
        int bad = 0;
        if (strcmp(o, "--user") == 0)
            bad = gimctl_parse_id(v, &user_id);
        else if (strcmp(o, "--device") == 0)
            bad = gimctl_parse_id(v, &device_id);
        else if (strcmp(o, "--ttl") == 0)
            bad = gimctl_parse_id(v, &ttl) || ttl > TTL_MAX;
        else if (strcmp(o, "--secret") == 0)
            secret = v;
        else
            return gimctl_usage_error("token", "unknown option %s", o);
        if (bad)
            return gimctl_usage_error("token", "%s: '%s' is not %s", o, v,
                                      strcmp(o, "--ttl") == 0
                                          ? "a number of seconds (1 to ten years)"
                                          : "an id (a positive integer)");
    }
    if (user_id <= 0 || device_id <= 0)
        return gimctl_usage_error("token", "--user and --device are required");
    if (!secret || !*secret)
        secret = getenv("GIM_TOKEN_SECRET");
    if (!secret || !*secret) {
        fprintf(stderr, "gimctl token: no secret: pass --secret S or set GIM_TOKEN_SECRET%s",
                GIMCTL_DEV_SECRET_NOTE);
        return 2;
    }
    if (auth_mint(secret, user_id, device_id, (int64_t)time(NULL) + ttl, &token) != GIM_OK) {
        fprintf(stderr, "gimctl token: cannot mint a token\n");
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return 0;
}
