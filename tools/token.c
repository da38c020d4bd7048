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

static void token_usage(FILE *f)
{
    fprintf(f,
            "usage: gimctl token --user U --device D [--ttl SECONDS] [--secret S]\n"
            "  Prints an HS256 sign-in token for user U on device D, valid for SECONDS\n"
            "  (default %d). The secret is --secret, else $GIM_TOKEN_SECRET.\n",
            TTL_DEFAULT);
}

int gimctl_token(struct gimctl *g, int argc, char **argv)
{
    int64_t user_id = g->user_id, device_id = g->device_id, ttl = TTL_DEFAULT;
    const char *secret = g->secret;
    char *token = NULL;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            token_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gimctl token: %s needs a value\n", o);
            goto usage;
        }
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
        else {
            fprintf(stderr, "gimctl token: unknown option %s\n", o);
            goto usage;
        }
        if (bad) {
            fprintf(stderr, "gimctl token: %s: bad value \"%s\" (a positive integer%s)\n", o, v,
                    strcmp(o, "--ttl") == 0 ? " of seconds, at most ten years" : "");
            goto usage;
        }
    }
    if (user_id <= 0 || device_id <= 0) {
        fprintf(stderr, "gimctl token: --user and --device are required\n");
        goto usage;
    }
    if (!secret || !*secret)
        secret = getenv("GIM_TOKEN_SECRET");
    if (!secret || !*secret) {
        fprintf(stderr, "gimctl token: no secret: pass --secret S or set GIM_TOKEN_SECRET\n");
        return 2;
    }
    if (auth_mint(secret, user_id, device_id, (int64_t)time(NULL) + ttl, &token) != GIM_OK) {
        fprintf(stderr, "gimctl token: cannot mint a token\n");
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return 0;
usage:
    token_usage(stderr);
    return 2;
}
