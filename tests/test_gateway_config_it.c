/*
 * gim-gateway's configuration, through the binary: the example file is
 * exactly the defaults, and a bad file stops start-up (exit 2) with one line
 * naming the key.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int run(const char *yaml, char *out, size_t outlen)
{
    char path[] = "/tmp/gimgwcfg-XXXXXX", cmd[512];
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(yaml, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --config %s --print-config 2>&1", GIM_GATEWAY_BIN, path);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    remove(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(gateway_config, the_example_file_is_the_defaults)
{
    static char a[8192], b[8192];
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --print-config", GIM_GATEWAY_BIN);
    FILE *p = popen(cmd, "r");
    a[fread(a, 1, sizeof a - 1, p)] = '\0';
    cr_assert_eq(pclose(p), 0);
    snprintf(cmd, sizeof cmd, "%s --config %s/config/gim-gateway.example.yaml --print-config",
             GIM_GATEWAY_BIN, GIM_SOURCE_DIR);
    p = popen(cmd, "r");
    b[fread(b, 1, sizeof b - 1, p)] = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert_str_eq(a, b);
    cr_assert_not_null(strstr(a, "tcp://:8080"));
    cr_assert_not_null(strstr(a, "ws://:8081/ws"));
}

Test(gateway_config, bad_values_name_the_key)
{
    static const struct {
        const char *yaml, *want;
    } cases[] = {
        {"conn: {idle_seconds: 0}\n", "conn.idle_seconds: must be between"},
        {"conn: {idle_seconds: 12abc}\n", "conn.idle_seconds: expected an unsigned"},
        {"conn: {idel: 1}\n", "conn.idel: unknown key"},
        {"listeners: [{url: \"ws://:1/ws\", framing: be16}]\n", "listeners[0].framing"},
        {"listeners: [{url: \"tcp://:1\", framing: be32}]\n", "listeners[0].framing: must be"},
        {"listeners: [{url: \"udp://:1\"}]\n", "listeners[0].url: must start with"},
        {"listeners: [{url: \"wss://:1/ws\"}]\n", "tls.cert_file"},
        {"conn: {queue_soft_frames: 10, queue_hard_frames: 5}\n", "must not exceed"},
        {"gateway_id: \"a\\nb\"\n", "gateway_id"},
        {"log: {level: loud}\n", "log.level"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[2048];
        cr_assert_eq(run(cases[i].yaml, out, sizeof out), 2, "%s", cases[i].yaml);
        cr_assert_not_null(strstr(out, cases[i].want), "%s -> %s", cases[i].yaml, out);
        cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
    }
    char out[4096];
    cr_assert_eq(run("listeners: [{url: \"tcp://:9\", framing: uvarint}]\n", out, sizeof out), 0);
    cr_assert_not_null(strstr(out, "framing: uvarint"));
}
