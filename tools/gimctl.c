/*
 * gimctl main: global options, then one subcommand from the table below.
 */
#include "gimctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"

struct subcommand {
    const char *name;
    int (*run)(struct gimctl *g, int argc, char **argv);
    const char *help;
};

static const struct subcommand commands[] = {
    {"ping", gimctl_ping, "send a heartbeat (signing in first when --user/--device are given)"},
    {"token", gimctl_token, "token --user U --device D [--ttl S]: mint a sign-in token"},
    {"group", gimctl_group, "group create|add|remove|list|show: edit groups in the --db file"},
    {"send", gimctl_send, "send --to ID [--group] TEXT (signs in at gateway gimctl)"},
    {"sync", gimctl_sync, "sync [--seq N]: print the inbox (signs in at gateway gimctl)"},
    {"ack", gimctl_ack, "ack SEQ: acknowledge up to SEQ (signs in at gateway gimctl)"},
    {"recall", gimctl_recall, "recall SEQ: recall one's own message (signs in at gateway gimctl)"},
    {"stats", gimctl_stats, "stats: counts and file sizes of the --db database"},
    {"user", gimctl_user, "user U: a user's devices, presence, last seq and acks (--db)"},
    {"backup", gimctl_backup, "backup FILE: online backup of the --db database to FILE"},
    {"watch", gimctl_watch, "watch [--count N]: print pushes to --gateway from --pub"},
    {"room", gimctl_room, "room subscribe|send|leave ROOM ...: live rooms (signs in)"},
    {"kick", gimctl_kick, "kick --device D: sign a device out now (operator, via the service)"},
    {"erase", gimctl_erase,
     "erase --user U --yes: erase a user's data (operator, via the service)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gimctl [--url URL] [--db PATH] [--gateway G] [--user U --device D]\n"
               "              [--secret S] [--timeout MS] [--pub URL] COMMAND [ARGS]\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int gimctl_parse_id(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v <= 0)
        return -1;
    *out = v;
    return 0;
}

struct gim_client *gimctl_client(const struct gimctl *g)
{
    struct gim_client *c = NULL;
    if (client_open(&c, g->url, g->timeout_ms, 3) != GIM_OK) {
        fprintf(stderr, "gimctl: cannot open a connection to %s\n", g->url);
        return NULL;
    }
    return c;
}

void gimctl_print_output(const Pb__Output *out)
{
    printf("code=%s request_id=%lld", gim_err_name((gim_err)out->code), (long long)out->request_id);
    if (out->message && *out->message)
        printf(" message=\"%s\"", out->message);
    if (out->data.len)
        printf(" data=%zu bytes", out->data.len);
    printf("\n");
}

int gimctl_session(const struct gimctl *g, struct gim_client *c, struct client_conn *conn)
{
    const char *secret = g->secret ? g->secret : getenv("GIM_TOKEN_SECRET");
    char *token = NULL;
    Pb__Output *out = NULL;
    int rc = 1;
    if (!g->user_id || !g->device_id) {
        fprintf(stderr, "gimctl: this command needs --user U --device D\n");
        return 2;
    }
    if (!secret || !*secret) {
        fprintf(stderr, "gimctl: no secret: set GIM_TOKEN_SECRET or pass --secret\n");
        return 2;
    }
    if (auth_mint(secret, g->user_id, g->device_id, time(NULL) + 3600, &token) != GIM_OK) {
        fprintf(stderr, "gimctl: cannot mint a token\n");
        return 1;
    }
    *conn = (struct client_conn){.user_id = g->user_id,
                                 .device_id = g->device_id,
                                 .gateway_id = g->gateway,
                                 .client_addr = "gimctl"};
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = g->user_id;
    in.device_id = g->device_id;
    in.token = token;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &in.base, &out) != GIM_OK) {
        fprintf(stderr, "gimctl: no reply from %s\n", g->url);
        goto out;
    }
    if (out->code != 0) {
        fprintf(stderr, "gimctl: sign-in failed: %s %s\n", gim_err_name((gim_err)out->code),
                out->message);
        goto out;
    }
    rc = 0;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    free(token);
    return rc;
}

int gimctl_ping(struct gimctl *g, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct client_conn conn = {.gateway_id = g->gateway, .client_addr = "gimctl"};
    Pb__Output *out = NULL;
    int rc = 1;
    struct gim_client *c = gimctl_client(g);
    if (!c)
        return 1;
    if (g->user_id && (rc = gimctl_session(g, c, &conn)) != 0)
        goto out;
    if (client_request(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, (int64_t)time(NULL), NULL, &out) !=
        GIM_OK) {
        fprintf(stderr, "gimctl: no reply from %s\n", g->url);
        rc = 1;
        goto out;
    }
    gimctl_print_output(out);
    rc = out->code == 0 ? 0 : 1;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    return rc;
}

static int global_opt(struct gimctl *g, int argc, char **argv, int *i)
{
    const char *o = argv[*i];
    if (*i + 1 >= argc)
        return -1;
    const char *v = argv[++*i];
    if (strcmp(o, "--url") == 0)
        g->url = v;
    else if (strcmp(o, "--db") == 0)
        g->db = v;
    else if (strcmp(o, "--gateway") == 0)
        g->gateway = v;
    else if (strcmp(o, "--secret") == 0)
        g->secret = v;
    else if (strcmp(o, "--pub") == 0)
        g->pub = v;
    else if (strcmp(o, "--user") == 0)
        return gimctl_parse_id(v, &g->user_id);
    else if (strcmp(o, "--device") == 0)
        return gimctl_parse_id(v, &g->device_id);
    else if (strcmp(o, "--timeout") == 0)
        g->timeout_ms = atoi(v);
    else
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    struct gimctl g = {.url = "tcp://127.0.0.1:7400",
                       .db = "data/gim.db",
                       .gateway = "gimctl",
                       .pub = "tcp://127.0.0.1:7401",
                       .timeout_ms = 5000};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (global_opt(&g, argc, argv, &i) != 0) {
            fprintf(stderr, "gimctl: bad option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (strcmp(argv[i], commands[k].name) == 0)
            return commands[k].run(&g, argc - i, argv + i);
    fprintf(stderr, "gimctl: unknown command %s\n", argv[i]);
    usage(stderr);
    return 2;
}
