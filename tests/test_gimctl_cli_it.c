/*
 * gimctl as a command-line program: help, version, usage errors, the
 * sign-in hint and unknown users, run as the real binary (next to a real
 * gim-logic where a command needs one).
 *
 * The commands are taken from `gimctl help` itself, so a command added
 * later is checked here without touching this file: its --help, -h and
 * `help COMMAND` must print its help and run nothing.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static char out[64 * 1024];
static char err[16 * 1024];

static void setup(void)
{
    tl_start(&srv, NULL);
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(gimctl_cli, .init = setup, .fini = teardown, .timeout = 90);

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

/* Runs `[env] gimctl ARGS` in the server's directory (shell words); exit status, out, err. */
static int sh(const char *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(const char *env, const char *fmt, ...)
{
    char *args = NULL, *cmd = NULL, errpath[256];
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&args, fmt, ap) >= 0);
    va_end(ap);
    snprintf(errpath, sizeof errpath, "%s/cli.err", srv.dir);
    cr_assert(asprintf(&cmd, "cd '%s' && env -u GIM_TOKEN_SECRET %s '%s' %s 2>'%s'", srv.dir,
                       env ? env : "", GIMCTL_BIN, args, errpath) > 0);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    slurp(errpath, err, sizeof err);
    cr_assert(WIFEXITED(st), "gimctl died: %s", args);
    free(args);
    free(cmd);
    return WEXITSTATUS(st);
}

/* gimctl against the live service and its database. */
#define live(...)                                                                                  \
    sh(NULL, "--url '%s' --db '%s' --secret " TL_SECRET " %s", srv.url, srv.db, __VA_ARGS__)

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *first_line(const char *s)
{
    static char buf[1024];
    size_t n = strcspn(s, "\n");
    cr_assert_lt(n, sizeof buf);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* The command names listed by `gimctl help` (two-space indent under "commands:"). */
static int command_names(char names[][32], int cap)
{
    cr_assert_eq(sh(NULL, "help"), 0, "%s", err);
    const char *p = strstr(out, "\ncommands:\n");
    cr_assert_not_null(p, "%s", out);
    p += strlen("\ncommands:\n");
    int n = 0;
    while (strncmp(p, "  ", 2) == 0 && n < cap) {
        cr_assert_eq(sscanf(p, " %31s", names[n]), 1);
        n++;
        p = strchr(p, '\n') + 1;
    }
    return n;
}

Test(gimctl_cli, every_command_has_help_and_help_runs_nothing)
{
    char names[64][32];
    int n = command_names(names, 64);
    cr_assert_geq(n, 16, "%s", out);
    for (int i = 0; i < n; i++) {
        /* A dead URL and a missing database: running the command would fail loudly. */
        const char *dead = "--url ipc:///nonexistent/gim.ipc --db /nonexistent/gim.db "
                           "--user 5 --device 501 --timeout 300";
        cr_assert_eq(sh(NULL, "%s %s --help", dead, names[i]), 0, "%s --help: %s", names[i], err);
        cr_assert_str_eq(err, "", "%s --help must run nothing", names[i]);
        cr_assert(strncmp(out, "usage: gimctl ", 14) == 0, "%s --help:\n%s", names[i], out);
        char word[40];
        snprintf(word, sizeof word, " %s", names[i]);
        cr_assert_not_null(strstr(first_line(out), word), "%s: %s", names[i], out);
        cr_assert_gt(count_lines(out), 1, "%s: more than a synopsis", names[i]);
        char help[sizeof out];
        memcpy(help, out, sizeof out);
        cr_assert_eq(sh(NULL, "%s %s -h", dead, names[i]), 0, "%s -h: %s", names[i], err);
        cr_assert_str_eq(out, help, "%s -h", names[i]);
        cr_assert_eq(sh(NULL, "help %s", names[i]), 0, "help %s: %s", names[i], err);
        cr_assert_str_eq(out, help, "help %s", names[i]);
        /* After other arguments too (before any `--`). */
        cr_assert_eq(sh(NULL, "%s %s 1 2 --help", dead, names[i]), 0, "%s 1 2 --help", names[i]);
        cr_assert_str_eq(out, help, "%s 1 2 --help", names[i]);
    }
}

Test(gimctl_cli, help_has_no_side_effects_on_a_live_service)
{
    cr_assert_eq(live("--user 5 --device 501 ping --help"), 0, "%s", err);
    cr_assert_eq(live("--user 5 --device 501 send --to 6 hello --help"), 0, "%s", err);
    cr_assert_eq(live("--user 5 --device 501 room send 30 hello -h"), 0, "%s", err);
    cr_assert_eq(live("group create --owner 5 --help"), 0, "%s", err);
    cr_assert_eq(live("backup copy.db --help"), 0, "%s", err);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device"), 0, "nobody signed in");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), 0);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM room_message"), 0);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM chat_group"), 0);
    char path[256];
    struct stat sb;
    snprintf(path, sizeof path, "%s/copy.db", srv.dir);
    cr_assert_neq(stat(path, &sb), 0, "backup --help wrote %s", path);

    /* After `--` it is a TEXT like any other. */
    cr_assert_eq(live("--user 5 --device 501 send --to 6 -- --help"), 0, "%s", err);
    cr_assert(strncmp(out, "seq=1 send_time=", 16) == 0, "%s", out);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM v_message WHERE text = '--help'"), 1);
}

Test(gimctl_cli, help_and_version)
{
    cr_assert_eq(sh(NULL, "--help"), 0);
    char help[sizeof out];
    memcpy(help, out, sizeof out);
    cr_assert(strncmp(help, "usage: gimctl [--url URL] [--db PATH]", 37) == 0, "%s", help);
    cr_assert_not_null(strstr(help, "--pub URL"), "%s", help);
    cr_assert_eq(sh(NULL, "-h"), 0);
    cr_assert_str_eq(out, help);
    cr_assert_eq(sh(NULL, "help"), 0);
    cr_assert_str_eq(out, help);
    cr_assert_eq(sh(NULL, "--db x.db --help"), 0);
    cr_assert_str_eq(out, help);

    /* The same version as the service's. */
    char want[64];
    FILE *p = popen("'" GIM_LOGIC_BIN "' --version", "r");
    cr_assert_not_null(p);
    size_t n = fread(want, 1, sizeof want - 1, p);
    want[n] = '\0';
    pclose(p);
    cr_assert(strncmp(want, "gim-logic ", 10) == 0, "%s", want);
    cr_assert_eq(sh(NULL, "--version"), 0);
    cr_assert(strncmp(out, "gimctl ", 7) == 0 && strcmp(out + 7, want + 10) == 0,
              "gimctl says %s, gim-logic %s", out, want);

    cr_assert_eq(sh(NULL, "help bogus"), 2);
    cr_assert_str_eq(first_line(err), "gimctl: help: unknown command 'bogus'");
}

/* A usage error: exit 2, `first` as the first line of stderr, then a synopsis, never the list. */
static void usage_error(const char *args, const char *first, const char *synopsis)
{
    cr_assert_eq(live(args), 2, "%s: %s", args, err);
    cr_assert_str_eq(first_line(err), first, "%s", args);
    cr_assert_null(strstr(err, "commands:"), "%s printed the command list:\n%s", args, err);
    const char *second = strchr(err, '\n') + 1;
    cr_assert(strncmp(second, synopsis, strlen(synopsis)) == 0, "%s: want %s after the error:\n%s",
              args, synopsis, err);
    cr_assert_leq(count_lines(err), 6, "%s: only the synopsis:\n%s", args, err);
    cr_assert_str_eq(out, "", "%s", args);
}

#define GLOBAL "usage: gimctl [--url URL]"

Test(gimctl_cli, usage_errors_name_the_word_and_why)
{
    usage_error("--user abc", "gimctl: --user: 'abc' is not a user id (a positive integer)",
                GLOBAL);
    usage_error("--user abc ping", "gimctl: --user: 'abc' is not a user id (a positive integer)",
                GLOBAL);
    usage_error("--device 0 ping", "gimctl: --device: '0' is not a device id (a positive integer)",
                GLOBAL);
    usage_error("--bogus ping", "gimctl: unknown option --bogus", GLOBAL);
    usage_error("-x ping", "gimctl: unknown option -x", GLOBAL);
    usage_error("--timeout abc ping",
                "gimctl: --timeout: 'abc' is not a timeout (milliseconds, 1..3600000)", GLOBAL);
    usage_error("--timeout -5 ping",
                "gimctl: --timeout: '-5' is not a timeout (milliseconds, 1..3600000)", GLOBAL);
    usage_error("--timeout 0 ping",
                "gimctl: --timeout: '0' is not a timeout (milliseconds, 1..3600000)", GLOBAL);
    usage_error("--timeout=9999999 ping",
                "gimctl: --timeout: '9999999' is not a timeout (milliseconds, 1..3600000)", GLOBAL);
    usage_error("--gateway '' ping", "gimctl: --gateway: the value is empty", GLOBAL);
    usage_error("--pub", "gimctl: --pub needs a value", GLOBAL);
    usage_error("bogus", "gimctl: unknown command 'bogus' (gimctl help lists them)", GLOBAL);

    usage_error("--user 1 --device 101 send --to x hi",
                "gimctl send: --to: 'x' is not an id (a positive integer)",
                "usage: gimctl --user U --device D send --to ID");
    usage_error("--user 1 --device 101 send --to 2 one two",
                "gimctl send: 'two': one TEXT argument only (quote it)",
                "usage: gimctl --user U --device D send");
    usage_error("--user 1 --device 101 sync --seq -1",
                "gimctl sync: --seq: '-1' is not a seq (0 or a positive integer)",
                "usage: gimctl --user U --device D sync");
    usage_error("--user 1 --device 101 ack abc",
                "gimctl ack: 'abc' is not a seq (a positive integer)",
                "usage: gimctl --user U --device D ack SEQ");
    usage_error("--user 1 recall --admin x",
                "gimctl recall: --admin: 'x' is not a seq (a positive integer)",
                "usage: gimctl --user U --device D recall SEQ\n"
                "       gimctl --user U recall --admin SEQ\n(gimctl recall --help");
    usage_error("room log", "gimctl room: log needs ROOM",
                "usage: gimctl --user U --device D room");
    usage_error("watch --count 0", "gimctl watch: --count: '0' is not a count (a positive integer)",
                "usage: gimctl [--pub URL]");
    usage_error("token --user 1 --device 2 --ttl 0",
                "gimctl token: --ttl: '0' is not a number of seconds (1 to ten years)",
                "usage: gimctl token");
    usage_error("stats extra", "gimctl stats: unexpected or bad argument 'extra'",
                "usage: gimctl [--db PATH] stats");
    usage_error("user abc", "gimctl user: unexpected or bad argument 'abc'",
                "usage: gimctl [--db PATH] user USER_ID");
    usage_error("ping now", "gimctl ping: unexpected argument 'now'", "usage: gimctl [--user U");

    /* --opt=value works, and good values pass. */
    cr_assert_eq(live("--user=7 --device=701 --timeout=3000 ping"), 0, "%s", err);
    cr_assert(strncmp(out, "code=EC_OK ", 11) == 0, "%s", out);
}

Test(gimctl_cli, a_bad_signature_says_where_the_secrets_come_from)
{
    cr_assert_eq(sh(NULL, "--url '%s' --secret wrong --user 1 --device 101 ping", srv.url), 1);
    cr_assert(strstr(err, "sign-in failed: EC_UNAUTHENTICATED sign-in: bad signature\n"), "%s",
              err);
    cr_assert(strstr(err, "hint: the token secret gimctl used (from --secret) is probably not "
                          "the service's"),
              "%s", err);
    cr_assert(strstr(err, "auth.secret") && strstr(err, "GIM_TOKEN_SECRET") &&
                  strstr(err, "export GIM_TOKEN_SECRET=$(cat data/dev.secret)"),
              "%s", err);

    cr_assert_eq(sh("GIM_TOKEN_SECRET=wrong", "--url '%s' --user 1 --device 101 sync", srv.url), 1);
    cr_assert(strstr(err, "(from $GIM_TOKEN_SECRET)"), "%s", err);

    cr_assert_eq(sh("GIM_TOKEN_SECRET=wrong", "--url '%s' --user 1 recall --admin 1", srv.url), 1);
    cr_assert(strstr(err, "gimctl recall --admin: EC_UNAUTHENTICATED"), "%s", err);
    cr_assert(strstr(err, "hint: the token secret"), "%s", err);

    /* The right secret: no hint; another refusal is not about the secret: no hint either. */
    cr_assert_eq(live("--user 1 --device 101 ping"), 0, "%s", err);
    cr_assert_str_eq(err, "");
    cr_assert_eq(live("--user 1 recall --admin 99"), 1);
    cr_assert(strstr(err, "EC_NOT_FOUND"), "%s", err);
    cr_assert_null(strstr(err, "hint"), "%s", err);
}

Test(gimctl_cli, user_that_does_not_exist)
{
    cr_assert_eq(live("user 42"), 1);
    char want[512];
    snprintf(want, sizeof want, "gimctl user: no user 42 in %s (no devices, no messages)", srv.db);
    cr_assert_str_eq(first_line(err), want);
    cr_assert_str_eq(out, "", "nothing on stdout for a user that does not exist");

    cr_assert_eq(live("--user 42 --device 4201 ping"), 0, "%s", err);
    cr_assert_eq(live("user 42"), 0, "%s", err);
    cr_assert(strncmp(out, "user              42\n", 21) == 0, "%s", out);
}

Test(gimctl_cli, online_with_nobody_online)
{
    cr_assert_eq(live("online"), 0, "%s", err);
    cr_assert_str_eq(out, "online=0 gateways=0\n");
    cr_assert_eq(live("history --user 1"), 1);
    cr_assert(strstr(err, "no user 1 in "), "%s", err);
}

Test(gimctl_cli, no_secret_says_where_to_get_one)
{
    static const char *const cmds[] = {"--user 1 --device 101 ping", "--user 1 --device 101 sync",
                                       "--user 1 recall --admin 1", "token --user 1 --device 101"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        cr_assert_eq(sh(NULL, "--url '%s' %s", srv.url, cmds[i]), 2, "%s: %s", cmds[i], err);
        cr_assert(strstr(err, "no secret: ") &&
                      strstr(err, "export GIM_TOKEN_SECRET=$(cat data/dev.secret)"),
                  "%s: %s", cmds[i], err);
    }
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device"), 0);
}
