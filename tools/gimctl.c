/*
 * gimctl main: global options, then one subcommand from the table below.
 *
 * Help never runs a command: `gimctl help [COMMAND]`, `gimctl --help`, and
 * `COMMAND --help` / `COMMAND -h` (anywhere before a `--`) print the text from
 * the table and exit 0. A usage error names the word that is wrong and prints
 * the one synopsis it concerns (gimctl_usage_error), never the whole list.
 */
#include "gimctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"

#ifndef GIM_VERSION
#define GIM_VERSION "unknown"
#endif

#define TIMEOUT_MAX_MS 3600000 /* an hour: anything longer is a typo */

struct subcommand {
    const char *name;
    int (*run)(struct gimctl *g, int argc, char **argv);
    const char *help;  /* one line for the command list */
    const char *usage; /* COMMAND --help; NULL: "usage: gimctl " + help */
};

/* One line per command; a new command needs only its line and its help text. */
/* clang-format off */
static const struct subcommand commands[] = {
    {"ping", gimctl_ping, "send a heartbeat (signing in first when --user/--device are given)", gimctl_usage_ping},
    {"token", gimctl_token, "token --user U --device D [--ttl S]: mint a sign-in token", gimctl_usage_token},
    {"group", gimctl_group, "group create|update|dissolve|add|remove|role|show|members (operator, via the service) | list (--db)", gimctl_usage_group},
    {"send", gimctl_send, "send --to ID [--group] TEXT (signs in at gateway gimctl); --system/--business B: operator send", gimctl_usage_send},
    {"sync", gimctl_sync, "sync [--seq N]: print the inbox (signs in at gateway gimctl)", gimctl_usage_sync},
    {"ack", gimctl_ack, "ack SEQ: acknowledge up to SEQ (signs in at gateway gimctl)", gimctl_usage_ack},
    {"recall", gimctl_recall, "recall SEQ: recall one's own message (signs in at gateway gimctl)", gimctl_usage_recall},
    {"stats", gimctl_stats, "stats: counts and file sizes of the --db database", gimctl_usage_stats},
    {"user", gimctl_user, "user U: a user's devices, presence, last seq and acks (--db)", gimctl_usage_user},
    {"backup", gimctl_backup, "backup FILE: online backup of the --db database to FILE", gimctl_usage_backup},
    {"watch", gimctl_watch, "watch [--count N]: print pushes to --gateway from --pub", gimctl_usage_watch},
    {"room", gimctl_room, "room subscribe|send|leave ROOM ...: live rooms (signs in); room log ROOM (--db)", gimctl_usage_room},
    {"online", gimctl_online, "online: devices online now, by gateway (--db, read-only)", gimctl_usage_online},
    {"devices", gimctl_devices, "devices --user U: a user's devices, acks, gateway (--db, read-only)", gimctl_usage_devices},
    {"history", gimctl_history, "history --user U [--with V | --group G]: an inbox from seq 1 (--db, read-only)", gimctl_usage_history},
    {"export", gimctl_export, "export --user U [--format jsonl|csv]: all of a user's messages (--db, read-only)", gimctl_usage_export},
    {"kick", gimctl_kick, "kick --device D: sign a device out now (operator, via the service)", gimctl_usage_kick},
    {"erase", gimctl_erase, "erase --user U --yes: erase a user's data (operator, via the service)", gimctl_usage_erase},
    {"pg-import", gimctl_pg_import, "pg-import --pg URL: copy the stopped --db database into PostgreSQL, verified", gimctl_usage_pg_import},
    {"pg-verify", gimctl_pg_verify, "pg-verify --pg URL: compare the --db database with its PostgreSQL copy", gimctl_usage_pg_verify},
};
/* clang-format on */

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const char SYNOPSIS[] =
    "usage: gimctl [--url URL] [--db PATH] [--gateway G] [--user U --device D]\n"
    "              [--secret S] [--timeout MS] [--pub URL] COMMAND [ARGS]\n"
    "       gimctl help [COMMAND] | --help | --version\n";

static void usage(FILE *f)
{
    fputs(SYNOPSIS, f);
    fputs("\nglobal options (before the command; --opt=value works too):\n"
          "  --url URL      a listen URL of gim-logic (default tcp://127.0.0.1:7400)\n"
          "  --db PATH      its database.path (default data/gim.db)\n"
          "  --gateway G    gateway id device commands sign in at (default gimctl)\n"
          "  --user U       user id; --device D: device id (device commands)\n"
          "  --secret S     token secret (default $GIM_TOKEN_SECRET): the service's auth.secret\n"
          "  --timeout MS   wait per reply, 1..3600000 ms (default 5000)\n"
          "  --pub URL      a publish URL of gim-logic, for watch (default tcp://127.0.0.1:7401)\n"
          "\ncommands:\n",
          f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fputs("\n`gimctl COMMAND --help` describes one. Exit status: 0 done, 1 refused, failed or\n"
          "not found (the reason is on stderr), 2 bad usage.\n",
          f);
}

static const struct subcommand *find(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

static void print_help(const struct subcommand *c, FILE *f)
{
    if (c->usage)
        fputs(c->usage, f);
    else
        fprintf(f, "usage: gimctl %s\n", c->help);
}

/* The synopsis lines of a help text: the "usage: " line and the "       gimctl" lines after it. */
static void print_synopsis(const struct subcommand *c, FILE *f)
{
    const char *s = c->usage;
    if (!s) {
        print_help(c, f);
        return;
    }
    for (bool first = true; *s; first = false) {
        size_t n = strcspn(s, "\n");
        size_t ind = strspn(s, " ");
        if (!first && strncmp(s + ind, "gimctl", 6) != 0)
            break;
        fprintf(f, "%.*s\n", (int)n, s);
        s += n + (s[n] == '\n');
    }
}

int gimctl_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    const struct subcommand *c = find(cmd);
    fprintf(stderr, "gimctl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (c)
        print_synopsis(c, stderr);
    fprintf(stderr, "(gimctl %s --help for more)\n", cmd);
    return 2;
}

void gimctl_secret_hint(const struct gimctl *g, int code, const char *message)
{
    if (code != GIM_EUNAUTH || !message || !strstr(message, "bad signature"))
        return;
    fprintf(stderr,
            "gimctl: hint: the token secret gimctl used (%s) is probably not the service's.\n"
            "  The service uses auth.secret from its config file, else the environment\n"
            "  variable auth.secret_env names (default GIM_TOKEN_SECRET) in its own environment.\n"
            "  `tools/dev.sh run` keeps its secret in data/dev.secret:\n"
            "    export GIM_TOKEN_SECRET=$(cat data/dev.secret)\n",
            g->secret ? "from --secret" : "from $GIM_TOKEN_SECRET");
}

int gimctl_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const struct store_val *v,
                   size_t n)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? store_bind(*st, v, n) : rc;
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
        fprintf(stderr, "gimctl: no secret: set GIM_TOKEN_SECRET or pass --secret%s",
                GIMCTL_DEV_SECRET_NOTE);
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
        gimctl_secret_hint(g, out->code, out->message);
        goto out;
    }
    rc = 0;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    free(token);
    return rc;
}

int64_t gimctl_request_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = (uint64_t)gim_clock_real_ms(NULL) * 1000003u ^ (uint64_t)getpid() << 20;
    v &= INT64_MAX;
    return v ? (int64_t)v : 1;
}

int gimctl_dev_open(const struct gimctl *g, struct gimctl_dev *d)
{
    /*
     * Random like a send's: if the server ever keys other requests by
     * (device, request_id), two gimctl runs must still not collide. Halved so
     * that counting up from it cannot overflow.
     */
    *d = (struct gimctl_dev){.g = g, .next_request_id = gimctl_request_id() / 2 + 1};
    if (!(d->c = gimctl_client(g)))
        return 1;
    int rc = gimctl_session(g, d->c, &d->conn);
    if (rc != 0)
        gimctl_dev_close(d);
    return rc;
}

void gimctl_dev_close(struct gimctl_dev *d)
{
    client_close(d->c);
    d->c = NULL;
}

int gimctl_call(const struct gimctl *g, struct gim_client *c, const struct client_conn *conn,
                const char *cmd, int type, int64_t request_id, const ProtobufCMessage *in,
                Pb__Output **out)
{
    *out = NULL;
    if (client_request(c, conn, type, request_id, in, out) != GIM_OK) {
        fprintf(stderr, "gimctl %s: no reply (is gim-logic running at %s?)\n", cmd, g->url);
        return 1;
    }
    if ((*out)->code != 0) {
        fprintf(stderr, "gimctl %s: %s: %s\n", cmd, gim_err_name((gim_err)(*out)->code),
                (*out)->message ? (*out)->message : "");
        gimctl_secret_hint(g, (*out)->code, (*out)->message);
        pb__output__free_unpacked(*out, NULL);
        *out = NULL;
        return 1;
    }
    return 0;
}

int gimctl_dev_call(struct gimctl_dev *d, const char *cmd, int type, int64_t request_id,
                    const ProtobufCMessage *in, Pb__Output **out)
{
    return gimctl_call(d->g, d->c, &d->conn, cmd, type,
                       request_id ? request_id : d->next_request_id++, in, out);
}

int gimctl_operator_call(struct gim_client *c, const struct gimctl *g, const char *cmd, int type,
                         const ProtobufCMessage *in, Pb__Output **out)
{
    struct client_conn conn = {.gateway_id = g->gateway, .client_addr = "gimctl"};
    return gimctl_call(g, c, &conn, cmd, type, gimctl_request_id(), in, out);
}

char *gimctl_operator_token(const struct gimctl *g, const char *cmd, int64_t ttl_s)
{
    const char *secret = g->secret ? g->secret : getenv("GIM_TOKEN_SECRET");
    char *token = NULL;
    if (!secret || !*secret) {
        fprintf(
            stderr,
            "gimctl %s: no secret: set GIM_TOKEN_SECRET or pass --secret" GIMCTL_DEV_SECRET_NOTE,
            cmd);
        return NULL;
    }
    if (auth_mint_admin(secret, time(NULL) + ttl_s, &token) != GIM_OK) {
        fprintf(stderr, "gimctl %s: cannot mint an operator token\n", cmd);
        return NULL;
    }
    return token;
}

const char gimctl_usage_ping[] =
    "usage: gimctl [--user U --device D] ping\n"
    "  Sends a heartbeat and prints the reply: `code=EC_OK request_id=N`. With\n"
    "  --user/--device it signs the device in first (at --gateway, default \"gimctl\");\n"
    "  without them there is no session and the reply is EC_UNAUTHENTICATED (exit 1),\n"
    "  which still shows that the service is up and answering.\n";

int gimctl_ping(struct gimctl *g, int argc, char **argv)
{
    if (argc > 1)
        return gimctl_usage_error("ping", "unexpected argument '%s'", argv[1]);
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

/* Parses a decimal int in 1..max; 0 on success. */
static int parse_int(const char *s, long long max, int *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v <= 0 || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int global_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int global_error(const char *fmt, ...)
{
    va_list ap;
    fputs("gimctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fputs(SYNOPSIS, stderr);
    fputs("(gimctl --help for more)\n", stderr);
    return 2;
}

/*
 * One global option at argv[*i] (`--opt VALUE` or `--opt=VALUE`); advances *i
 * past its value. 0, or 2 after saying which word is wrong and why.
 */
static int global_opt(struct gimctl *g, int argc, char **argv, int *i)
{
    static const char *const names[] = {"--url", "--db",   "--gateway", "--secret",
                                        "--pub", "--user", "--device",  "--timeout"};
    const char *arg = argv[*i], *eq = strchr(arg, '='), *v = NULL;
    char name[32];
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    bool known = false;
    if (nlen < sizeof name) {
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            known = known || strcmp(name, names[k]) == 0;
    }
    if (!known)
        return global_error("unknown option %.*s", (int)nlen, arg);
    if (eq)
        v = eq + 1;
    else if (*i + 1 < argc)
        v = argv[++*i];
    else
        return global_error("%s needs a value", name);
    if (strcmp(name, "--user") == 0 || strcmp(name, "--device") == 0) {
        bool user = name[2] == 'u';
        if (gimctl_parse_id(v, user ? &g->user_id : &g->device_id) != 0)
            return global_error("%s: '%s' is not a %s id (a positive integer)", name, v,
                                user ? "user" : "device");
        return 0;
    }
    if (strcmp(name, "--timeout") == 0) {
        if (parse_int(v, TIMEOUT_MAX_MS, &g->timeout_ms) != 0)
            return global_error("--timeout: '%s' is not a timeout (milliseconds, 1..%d)", v,
                                TIMEOUT_MAX_MS);
        return 0;
    }
    if (!*v)
        return global_error("%s: the value is empty", name);
    if (strcmp(name, "--url") == 0)
        g->url = v;
    else if (strcmp(name, "--db") == 0)
        g->db = v;
    else if (strcmp(name, "--gateway") == 0)
        g->gateway = v;
    else if (strcmp(name, "--secret") == 0)
        g->secret = v;
    else
        g->pub = v;
    return 0;
}

/* `gimctl help [COMMAND]` */
static int help_command(int argc, char **argv)
{
    if (argc == 1) {
        usage(stdout);
        return 0;
    }
    const struct subcommand *c = find(argv[1]);
    if (argc > 2 || !c)
        return global_error(argc > 2 ? "help takes one COMMAND" : "help: unknown command '%s'",
                            argv[1]);
    print_help(c, stdout);
    return 0;
}

/* True when the command's arguments ask for help: -h or --help before any `--`. */
static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    struct gimctl g = {.url = "tcp://127.0.0.1:7400",
                       .db = "data/gim.db",
                       .gateway = "gimctl",
                       .pub = "tcp://127.0.0.1:7401",
                       .timeout_ms = 5000};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("gimctl %s\n", GIM_VERSION);
            return 0;
        }
        int rc = global_opt(&g, argc, argv, &i);
        if (rc != 0)
            return rc;
    }
    if (i >= argc)
        return global_error("no COMMAND given");
    if (strcmp(argv[i], "help") == 0)
        return help_command(argc - i, argv + i);
    const struct subcommand *c = find(argv[i]);
    if (!c)
        return global_error("unknown command '%s' (gimctl help lists them)", argv[i]);
    if (wants_help(argc - i, argv + i)) {
        print_help(c, stdout);
        return 0;
    }
    return c->run(&g, argc - i, argv + i);
}
