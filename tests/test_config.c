#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define EXAMPLE_FILE GIM_SOURCE_DIR "/config/gim-logic.example.yaml"

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    if (tmpdir[0])
        return; /* a test-level .init may already have made it */
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gim-config-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp %s", tmpdir);
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[PATH_MAX + 256];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

TestSuite(config, .init = make_tmpdir, .fini = remove_tmpdir);

static void redirect_stderr_and_make_tmpdir(void)
{
    cr_redirect_stderr();
    make_tmpdir();
}

/* Writes text to tmpdir/name and returns the path in a static buffer. */
static const char *write_file(const char *name, const char *text)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s", path);
    cr_assert_eq(fputs(text, f) >= 0, 1);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static gim_err load_yaml(const char *yaml, struct gim_config *cfg, char *err, size_t errlen)
{
    return config_load(write_file("gim-logic.yaml", yaml), cfg, err, errlen);
}

/* Every rejected file must name the offending key on exactly one line. */
static void expect_bad(const char *yaml, const char *needle, const char *needle2)
{
    struct gim_config cfg;
    char err[256] = "";
    gim_err rc = load_yaml(yaml, &cfg, err, sizeof err);
    config_free(&cfg);
    cr_assert_eq(rc, GIM_ECONFIG, "yaml <<%s>>: rc %d, err '%s'", yaml, rc, err);
    cr_assert_not_null(strstr(err, needle), "error '%s' does not contain '%s'", err, needle);
    if (needle2)
        cr_assert_not_null(strstr(err, needle2), "error '%s' does not contain '%s'", err, needle2);
    cr_assert_null(strchr(err, '\n'), "error is not one line: '%s'", err);
}

/* config_print output as a heap string, for comparing whole configurations. */
static char *print_to_string(const struct gim_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    config_print(cfg, f);
    cr_assert_eq(fclose(f), 0);
    return buf;
}

Test(config, defaults_without_file)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_str_empty(err);

    cr_assert_eq(cfg.listen_count, 2);
    cr_assert_str_eq(cfg.listen[0], "tcp://127.0.0.1:7400");
    cr_assert_str_eq(cfg.listen[1], "ipc:///tmp/gim-logic.ipc");
    cr_assert_eq(cfg.publish_count, 1);
    cr_assert_str_eq(cfg.publish[0], "tcp://127.0.0.1:7401");
    cr_assert_str_eq(cfg.http, "http://127.0.0.1:7480");
    cr_assert_eq(cfg.workers, 4);
    cr_assert_eq(cfg.contexts, 256);
    cr_assert_str_eq(cfg.database.path, "data/gim.db");
    cr_assert_str_eq(cfg.database.synchronous, "full");
    cr_assert_eq(cfg.database.busy_timeout_ms, 5000);
    cr_assert_eq(cfg.database.cache_mb, 32);
    cr_assert_eq(cfg.database.reader_cache_mb, 4);
    cr_assert_eq(cfg.database.mmap_mb, 128);
    cr_assert_eq(cfg.database.max_pages, 0);
    cr_assert_str_eq(cfg.auth.secret, "");
    cr_assert_str_eq(cfg.auth.secret_env, "GIM_TOKEN_SECRET");
    cr_assert_not(cfg.auth.insecure_dev);
    cr_assert_str_eq(cfg.tls.cert_file, "");
    cr_assert_str_eq(cfg.tls.key_file, "");
    cr_assert_str_eq(cfg.tls.ca_file, "");
    cr_assert_eq(cfg.sync.page_size, 50);
    cr_assert_eq(cfg.sync.max_bytes, 65534);
    cr_assert_eq(cfg.recall.window_seconds, 120);
    cr_assert_eq(cfg.idempotency.window_seconds, 86400);
    cr_assert_eq(cfg.limits.max_request_bytes, 1048576);
    cr_assert_eq(cfg.limits.max_content_bytes, 16384);
    cr_assert_eq(cfg.limits.max_mentions, 100);
    cr_assert_eq(cfg.limits.max_group_members, 10000);
    cr_assert_eq(cfg.presence.timeout_seconds, 90);
    cr_assert_eq(cfg.rooms.retain_messages, 1000);
    cr_assert_eq(cfg.retention.days, 0);
    cr_assert_eq(cfg.writer.max_batch, 256);
    cr_assert_eq(cfg.writer.max_queued, 256);
    cr_assert_str_eq(cfg.log.level, "info");
    config_free(&cfg);
}

Test(config, empty_and_comment_only_files_keep_defaults)
{
    const char *texts[] = {"", "# nothing set\n\n", "---\n", "~\n"};
    struct gim_config defaults;
    char err[256] = "";
    cr_assert_eq(config_load(NULL, &defaults, err, sizeof err), GIM_OK, "%s", err);
    char *want = print_to_string(&defaults);
    config_free(&defaults);

    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct gim_config cfg;
        gim_err rc = load_yaml(texts[i], &cfg, err, sizeof err);
        char *got = print_to_string(&cfg);
        config_free(&cfg);
        cr_expect_eq(rc, GIM_OK, "<<%s>>: %s", texts[i], err);
        cr_expect_str_eq(got, want, "<<%s>>", texts[i]);
        free(got);
    }
    free(want);
}

static const char full_yaml[] =
    "listen: [tcp://0.0.0.0:9000, ipc:///run/a.ipc, tls+tcp://0.0.0.0:9443]\n"
    "publish:\n"
    "  - tcp://0.0.0.0:9001\n"
    "  - ipc:///run/b.ipc\n"
    "http: \"\"\n"
    "workers: 6\n"
    "contexts: 1024\n"
    "database:\n"
    "  path: /var/lib/gim/gim.db\n"
    "  synchronous: normal\n"
    "  busy_timeout_ms: 250\n"
    "  cache_mb: 128\n"
    "  reader_cache_mb: 16\n"
    "  mmap_mb: 64\n"
    "  max_pages: 100000\n"
    "auth: {secret: \"s3cret: with colon\", secret_env: MY_SECRET, insecure_dev: true}\n"
    "tls: {cert_file: /etc/gim/cert.pem, key_file: /etc/gim/key.pem, ca_file: /etc/gim/ca.pem}\n"
    "sync: {page_size: 10000, max_bytes: 4096}\n"
    "recall: {window_seconds: 0}\n"
    "idempotency: {window_seconds: 3600}\n"
    "limits: {max_request_bytes: 2048, max_content_bytes: 2048, max_mentions: 0, "
    "max_group_members: 2}\n"
    "presence: {timeout_seconds: 1}\n"
    "rooms: {retain_messages: 5}\n"
    "retention: {days: 30}\n"
    "writer: {max_batch: 65536}\n"
    "log: {level: debug}\n";

static void check_full(const struct gim_config *cfg, const char *secret)
{
    cr_assert_eq(cfg->listen_count, 3);
    cr_assert_str_eq(cfg->listen[0], "tcp://0.0.0.0:9000");
    cr_assert_str_eq(cfg->listen[1], "ipc:///run/a.ipc");
    cr_assert_str_eq(cfg->listen[2], "tls+tcp://0.0.0.0:9443");
    cr_assert_eq(cfg->publish_count, 2);
    cr_assert_str_eq(cfg->publish[0], "tcp://0.0.0.0:9001");
    cr_assert_str_eq(cfg->publish[1], "ipc:///run/b.ipc");
    cr_assert_str_eq(cfg->http, "");
    cr_assert_eq(cfg->workers, 6);
    cr_assert_eq(cfg->contexts, 1024);
    cr_assert_str_eq(cfg->database.path, "/var/lib/gim/gim.db");
    cr_assert_str_eq(cfg->database.synchronous, "normal");
    cr_assert_eq(cfg->database.busy_timeout_ms, 250);
    cr_assert_eq(cfg->database.cache_mb, 128);
    cr_assert_eq(cfg->database.reader_cache_mb, 16);
    cr_assert_eq(cfg->database.mmap_mb, 64);
    cr_assert_eq(cfg->database.max_pages, 100000);
    cr_assert_str_eq(cfg->auth.secret, secret);
    cr_assert_str_eq(cfg->auth.secret_env, "MY_SECRET");
    cr_assert(cfg->auth.insecure_dev);
    cr_assert_str_eq(cfg->tls.cert_file, "/etc/gim/cert.pem");
    cr_assert_str_eq(cfg->tls.key_file, "/etc/gim/key.pem");
    cr_assert_str_eq(cfg->tls.ca_file, "/etc/gim/ca.pem");
    cr_assert_eq(cfg->sync.page_size, 10000);
    cr_assert_eq(cfg->sync.max_bytes, 4096);
    cr_assert_eq(cfg->recall.window_seconds, 0);
    cr_assert_eq(cfg->idempotency.window_seconds, 3600);
    cr_assert_eq(cfg->limits.max_request_bytes, 2048);
    cr_assert_eq(cfg->limits.max_content_bytes, 2048);
    cr_assert_eq(cfg->limits.max_mentions, 0);
    cr_assert_eq(cfg->limits.max_group_members, 2);
    cr_assert_eq(cfg->presence.timeout_seconds, 1);
    cr_assert_eq(cfg->rooms.retain_messages, 5);
    cr_assert_eq(cfg->retention.days, 30);
    cr_assert_eq(cfg->writer.max_batch, 65536);
    cr_assert_str_eq(cfg->log.level, "debug");
}

Test(config, full_file_read_back)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(load_yaml(full_yaml, &cfg, err, sizeof err), GIM_OK, "%s", err);
    check_full(&cfg, "s3cret: with colon");
    config_free(&cfg);
}

Test(config, printed_config_loads_back_the_same)
{
    struct gim_config cfg, again;
    char err[256] = "";
    cr_assert_eq(load_yaml(full_yaml, &cfg, err, sizeof err), GIM_OK, "%s", err);
    char *printed = print_to_string(&cfg);
    cr_assert_eq(config_load(write_file("printed.yaml", printed), &again, err, sizeof err), GIM_OK,
                 "%s\n%s", err, printed);
    /* Everything but the masked secret survives the round trip. */
    check_full(&again, "***");
    char *reprinted = print_to_string(&again);
    cr_assert_str_eq(reprinted, printed);
    free(reprinted);
    free(printed);
    config_free(&again);
    config_free(&cfg);
}

Test(config, partial_section_keeps_sibling_defaults)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(
        load_yaml("sync:\n  page_size: 7\nlisten: [ipc:///tmp/x.ipc]\n", &cfg, err, sizeof err),
        GIM_OK, "%s", err);
    cr_assert_eq(cfg.sync.page_size, 7);
    cr_assert_eq(cfg.sync.max_bytes, 65534);
    cr_assert_eq(cfg.listen_count, 1);
    cr_assert_str_eq(cfg.listen[0], "ipc:///tmp/x.ipc");
    cr_assert_null(cfg.listen[1]);
    cr_assert_eq(cfg.publish_count, 1);
    cr_assert_str_eq(cfg.publish[0], "tcp://127.0.0.1:7401");
    cr_assert_eq(cfg.workers, 4);
    config_free(&cfg);
}

Test(config, booleans_accept_yaml_spellings)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {{"true", true},   {"yes", true}, {"On", true},
                 {"false", false}, {"no", false}, {"OFF", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[64];
        struct gim_config cfg;
        char err[256] = "";
        snprintf(yaml, sizeof yaml, "auth: {insecure_dev: %s}\n", cases[i].text);
        gim_err rc = load_yaml(yaml, &cfg, err, sizeof err);
        bool got = cfg.auth.insecure_dev;
        config_free(&cfg);
        cr_expect_eq(rc, GIM_OK, "%s: %s", cases[i].text, err);
        cr_expect_eq(got, cases[i].want, "%s", cases[i].text);
    }
}

Test(config, unknown_top_level_key)
{
    expect_bad("workers: 4\nbogus_key: 1\n", "bogus_key", "unknown key");
}

Test(config, unknown_nested_key)
{
    expect_bad("sync:\n  page_size: 10\n  pagesize: 10\n", "sync.pagesize", "unknown key");
}

Test(config, wrong_type_string_where_int)
{
    expect_bad("workers: many\n", "workers", "many");
    expect_bad("database: {busy_timeout_ms: soon}\n", "database.busy_timeout_ms", NULL);
}

/* libcyaml alone would read these as 12, 1 and 16; they must be refused. */
Test(config, integers_are_strict_decimal)
{
    expect_bad("workers: 12abc\n", "workers", "12abc");
    expect_bad("workers: 1.5\n", "workers", NULL);
    expect_bad("workers: 0x10\n", "workers", NULL);
    expect_bad("workers: -1\n", "workers", NULL);
    expect_bad("workers: \"\"\n", "workers", NULL);
    expect_bad("contexts: 4294967296\n", "contexts", NULL);
}

Test(config, wrong_shape)
{
    expect_bad("database: {path: [a, b]}\n", "database.path", NULL);
    expect_bad("sync: 5\n", "sync", NULL);
    expect_bad("listen: tcp://127.0.0.1:1\n", "listen", NULL);
    expect_bad("listen: [[tcp://127.0.0.1:1]]\n", "listen[0]", NULL);
}

Test(config, bad_boolean)
{
    /* libcyaml's own bool parser would take this typo as true. */
    expect_bad("auth: {insecure_dev: flase}\n", "auth.insecure_dev", "flase");
}

Test(config, out_of_range_int)
{
    expect_bad("sync: {page_size: 0}\n", "sync.page_size", "must be between 1 and 10000, got 0");
}

Test(config, range_bounds)
{
    static const struct {
        const char *yaml;
        const char *key; /* NULL: must load */
    } cases[] = {
        {"workers: 1\n", NULL},
        {"workers: 256\n", NULL},
        {"workers: 0\n", "workers"},
        {"workers: 257\n", "workers"},
        {"contexts: 65536\n", NULL},
        {"contexts: 0\n", "contexts"},
        {"contexts: 65537\n", "contexts"},
        {"sync: {page_size: 10001}\n", "sync.page_size"},
        {"sync: {max_bytes: 1023}\n", "sync.max_bytes"},
        /* One message of the default limits (16384 bytes, 100 mentions) needs a 17479-byte
         * page at worst (message_page_worst_single): one byte less cannot hold it. */
        {"sync: {max_bytes: 17479}\n", NULL},
        {"sync: {max_bytes: 17478}\n", "sync.max_bytes"},
        {"sync: {max_bytes: 4096}\nlimits: {max_content_bytes: 3000, max_mentions: 0}\n", NULL},
        {"sync: {max_bytes: 4096}\nlimits: {max_content_bytes: 5000, max_mentions: 0}\n",
         "sync.max_bytes"},
        {"database: {busy_timeout_ms: 600000}\n", NULL},
        {"database: {busy_timeout_ms: 600001}\n", "database.busy_timeout_ms"},
        {"limits: {max_request_bytes: 1023}\n", "limits.max_request_bytes"},
        {"limits: {max_content_bytes: 0}\n", "limits.max_content_bytes"},
        {"limits: {max_content_bytes: 1048577}\n", "limits.max_content_bytes"},
        /* The default max_content_bytes (16384) no longer fits. */
        {"limits: {max_request_bytes: 4096}\n", "limits.max_content_bytes"},
        {"limits: {max_group_members: 1}\n", "limits.max_group_members"},
        {"presence: {timeout_seconds: 0}\n", "presence.timeout_seconds"},
        {"rooms: {retain_messages: 0}\n", "rooms.retain_messages"},
        {"writer: {max_batch: 0}\n", "writer.max_batch"},
        {"writer: {max_batch: 65537}\n", "writer.max_batch"},
        {"writer: {max_queued: 0}\n", "writer.max_queued"},
        {"writer: {max_queued: 65537}\n", "writer.max_queued"},
        {"recall: {window_seconds: 4294967295}\n", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gim_config cfg;
        char err[256] = "";
        gim_err rc = load_yaml(cases[i].yaml, &cfg, err, sizeof err);
        config_free(&cfg);
        if (!cases[i].key) {
            cr_expect_eq(rc, GIM_OK, "<<%s>>: %s", cases[i].yaml, err);
            continue;
        }
        cr_expect_eq(rc, GIM_ECONFIG, "<<%s>> loaded", cases[i].yaml);
        cr_expect_not_null(strstr(err, cases[i].key), "<<%s>>: '%s'", cases[i].yaml, err);
    }
}

Test(config, bad_enum_like_string)
{
    expect_bad("database: {synchronous: sometimes}\n", "database.synchronous", "sometimes");
    expect_bad("log: {level: verbose}\n", "log.level", "verbose");
}

Test(config, too_many_listen_urls)
{
    expect_bad("listen: [tcp://h:1, tcp://h:2, tcp://h:3, tcp://h:4, tcp://h:5, tcp://h:6, "
               "tcp://h:7, tcp://h:8, tcp://h:9]\n",
               "listen: ", NULL);
}

Test(config, eight_listen_urls_fit)
{
    struct gim_config cfg;
    char err[256] = "";
    gim_err rc = load_yaml("listen: [tcp://h:1, tcp://h:2, tcp://h:3, tcp://h:4, tcp://h:5, "
                           "tcp://h:6, tcp://h:7, tcp://h:8]\n",
                           &cfg, err, sizeof err);
    unsigned n = cfg.listen_count;
    config_free(&cfg);
    cr_assert_eq(rc, GIM_OK, "%s", err);
    cr_assert_eq(n, CONFIG_MAX_URLS);
}

Test(config, empty_url_lists_and_urls)
{
    expect_bad("listen: []\n", "listen: ", NULL);
    expect_bad("publish: []\n", "publish: ", NULL);
    expect_bad("listen: [tcp://h:1, \"\"]\n", "listen[1]", NULL);
}

Test(config, tls_key_and_cert_go_together)
{
    expect_bad("tls: {cert_file: /c.pem}\n", "tls.key_file", "tls.cert_file");
    expect_bad("tls: {key_file: /k.pem}\n", "tls.cert_file", NULL);
}

/*
 * URLs are checked for scheme and form when the file is read, so a bad one
 * stops start-up with one line naming the key, before any database is
 * created (the checks mirror what Debian's nng 1.5.2 and our listeners accept).
 */
Test(config, bad_listen_urls)
{
    expect_bad("listen: [http://127.0.0.1:7600]\n", "listen[0]", "http");
    expect_bad("listen: [tcp://nohostport]\n", "listen[0]", "port");
    expect_bad("listen: [garbage]\n", "listen[0]", "garbage");
    expect_bad("listen: [tcp://127.0.0.1:7400, tcp://h:99999]\n", "listen[1]", "99999");
    expect_bad("listen: [tcp://h:0x10]\n", "listen[0]", "port");
    expect_bad("listen: [tcp://h:+5]\n", "listen[0]", "port");
    expect_bad("listen: [\"tcp://h:\"]\n", "listen[0]", NULL);
    expect_bad("listen: [tcp://h:7400/path]\n", "listen[0]", "path");
    expect_bad("listen: [\"tcp://h:7400?q=1\"]\n", "listen[0]", NULL);
    expect_bad("listen: [tcp://user@h:7400]\n", "listen[0]", NULL);
    expect_bad("listen: [\"tcp://h h:7400\"]\n", "listen[0]", "host");
    expect_bad("listen: [\"tcp://[nothex]:7400\"]\n", "listen[0]", "host");
    expect_bad("listen: [\" tcp://h:7400\"]\n", "listen[0]", NULL);
    expect_bad("listen: [TCP://h:7400]\n", "listen[0]", "TCP");
    expect_bad("listen: [ipc://]\n", "listen[0]", "path");
    expect_bad("listen: [inproc://gim]\n", "listen[0]", "inproc");
    expect_bad("listen: [wss://h:7400]\n", "listen[0]", "wss");
    expect_bad("listen: [zt://1234.5678:7400]\n", "listen[0]", "zt");
    expect_bad("listen: [ws://h]\n", "listen[0]", "port");
    /* A tls+tcp listener is useless without a certificate: say so before start-up. */
    expect_bad("listen: [tls+tcp://127.0.0.1:7400]\n", "listen[0]", "tls.cert_file");
}

Test(config, bad_publish_urls)
{
    expect_bad("publish: [http://127.0.0.1:7401]\n", "publish[0]", "http");
    expect_bad("publish: [tcp://127.0.0.1:7401, tcp://nohostport]\n", "publish[1]", "port");
    expect_bad("publish: [garbage]\n", "publish[0]", "garbage");
    /* The push socket has no TLS configuration: a tls+tcp publisher could never handshake. */
    expect_bad("tls: {cert_file: /c.pem, key_file: /k.pem}\npublish: [tls+tcp://h:7401]\n",
               "publish[0]", "tls+tcp");
    expect_bad("publish: [ipc://]\n", "publish[0]", "path");
}

Test(config, bad_http_urls)
{
    expect_bad("http: tcp://127.0.0.1:7480\n", "http: ", "tcp");
    expect_bad("http: https://127.0.0.1:7480\n", "http: ", "https");
    expect_bad("http: garbage\n", "http: ", "garbage");
    expect_bad("http: http://127.0.0.1:99999\n", "http: ", "99999");
    expect_bad("http: http://127.0.0.1:7480/metrics\n", "http: ", "path");
    expect_bad("http: \"http://h h:7480\"\n", "http: ", "host");
}

/* Every URL form the service can really listen on loads unchanged. */
Test(config, supported_url_forms_load)
{
    static const char *const good[] = {
        "listen: [tcp://127.0.0.1:7400, tcp4://0.0.0.0:7400, \"tcp6://[::1]:7400\", "
        "tcp://:7400, \"tcp://*:7400\", tcp://localhost:0, ipc:///tmp/gim.ipc, ipc://rel.ipc]\n",
        "listen: [abstract://gim-logic, ws://127.0.0.1:7402, ws://h:7402/gim, ws4://h:1, "
        "\"ws6://[::1]:7402\", tls+tcp://h:7443, tls+tcp4://h:7443, \"tls+tcp6://[::1]:7443\"]\n"
        "tls: {cert_file: /c.pem, key_file: /k.pem}\n",
        "publish: [tcp://127.0.0.1:7401, tcp4://h:1, \"tcp6://[::1]:65535\", ipc:///tmp/p.ipc, "
        "abstract://gim-pub, ws://h:7403/p, ws4://h:7403, \"ws6://[::1]:7403\"]\n",
        "http: http://127.0.0.1:7480\n",
        "http: http://localhost\n",
        "http: \"http://[::1]:7480/\"\n",
        "http: http://0.0.0.0:0\n",
        "http: \"\"\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct gim_config cfg;
        char err[256] = "";
        gim_err rc = load_yaml(good[i], &cfg, err, sizeof err);
        config_free(&cfg);
        cr_expect_eq(rc, GIM_OK, "<<%s>>: %s", good[i], err);
    }
}

Test(config, duplicate_key)
{
    expect_bad("workers: 1\nworkers: 2\n", "workers", "duplicate");
}

Test(config, missing_file)
{
    struct gim_config cfg;
    char err[512] = "";
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/does-not-exist.yaml", tmpdir);
    gim_err rc = config_load(path, &cfg, err, sizeof err);
    config_free(&cfg);
    cr_assert_eq(rc, GIM_ECONFIG);
    cr_assert_not_null(strstr(err, "cannot read"), "%s", err);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_not_null(strstr(err, "No such file"), "%s", err);
}

Test(config, directory_instead_of_file)
{
    struct gim_config cfg;
    char err[512] = "";
    gim_err rc = config_load(tmpdir, &cfg, err, sizeof err);
    config_free(&cfg);
    cr_assert_eq(rc, GIM_ECONFIG);
    cr_assert_not_null(strstr(err, "cannot read"), "%s", err);
}

Test(config, malformed_yaml)
{
    expect_bad("sync: {page_size: 10\nworkers: 3\n", "sync", NULL);
    expect_bad("workers: 4\n  contexts: 5\n", "workers", NULL);
    /* No key to blame: the file is named instead. */
    expect_bad("\"unterminated\n", tmpdir, NULL);
    expect_bad("- just\n- a list\n", tmpdir, NULL);
}

Test(config, libcyaml_errors_stay_off_stderr, .init = redirect_stderr_and_make_tmpdir,
     .fini = remove_tmpdir)
{
    expect_bad("bogus_key: 1\n", "bogus_key", NULL);
    expect_bad("sync: {page_size: [1]}\n", "sync.page_size", NULL);
    expect_bad("sync: {page_size: 1\n", "sync", NULL);
    fflush(stderr);
    cr_assert_stderr_eq_str("");
}

Test(config, print_masks_secret)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(load_yaml("auth: {secret: hunter2}\n", &cfg, err, sizeof err), GIM_OK, "%s", err);
    char *out = print_to_string(&cfg);
    config_free(&cfg);
    cr_assert_null(strstr(out, "hunter2"), "%s", out);
    cr_assert_not_null(strstr(out, "\n  secret: \"***\"\n"), "%s", out);
    cr_assert_not_null(strstr(out, "\nsync:\n  page_size: 50\n"), "%s", out);
    cr_assert_not_null(strstr(out, "listen:\n  - \"tcp://127.0.0.1:7400\"\n"), "%s", out);
    free(out);

    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    out = print_to_string(&cfg);
    config_free(&cfg);
    cr_assert_not_null(strstr(out, "\n  secret: \"\"\n"), "%s", out);
    free(out);
}

Test(config, secret_from_file_or_environment)
{
    struct gim_config cfg;
    char err[256] = "";

    cr_assert_eq(load_yaml("auth: {secret_env: GIM_TEST_CONFIG_SECRET}\n", &cfg, err, sizeof err),
                 GIM_OK, "%s", err);
    unsetenv("GIM_TEST_CONFIG_SECRET");
    cr_assert_null(config_secret(&cfg));
    setenv("GIM_TEST_CONFIG_SECRET", "", 1);
    cr_assert_null(config_secret(&cfg));
    setenv("GIM_TEST_CONFIG_SECRET", "from-env", 1);
    cr_assert_str_eq(config_secret(&cfg), "from-env");
    config_free(&cfg);

    cr_assert_eq(load_yaml("auth: {secret: from-file, secret_env: GIM_TEST_CONFIG_SECRET}\n", &cfg,
                           err, sizeof err),
                 GIM_OK, "%s", err);
    cr_assert_str_eq(config_secret(&cfg), "from-file");
    config_free(&cfg);

    cr_assert_eq(load_yaml("auth: {secret_env: \"\"}\n", &cfg, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_null(config_secret(&cfg));
    config_free(&cfg);
    unsetenv("GIM_TEST_CONFIG_SECRET");
}

/* The example documents the defaults, so it must load to exactly them. */
Test(config, example_file_loads_to_defaults)
{
    struct gim_config example, defaults;
    char err[256] = "";
    cr_assert_eq(config_load(EXAMPLE_FILE, &example, err, sizeof err), GIM_OK, "%s: %s",
                 EXAMPLE_FILE, err);
    cr_assert_eq(config_load(NULL, &defaults, err, sizeof err), GIM_OK, "%s", err);
    char *a = print_to_string(&example);
    char *b = print_to_string(&defaults);
    config_free(&example);
    config_free(&defaults);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
}

Test(config, free_is_safe_on_zeroed_and_freed_config)
{
    struct gim_config cfg;
    memset(&cfg, 0, sizeof cfg);
    config_free(&cfg);
    char err[256];
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK);
    config_free(&cfg);
    config_free(&cfg);
    cr_assert_null(cfg.http);
}

Test(config, null_errbuf_is_allowed)
{
    struct gim_config cfg;
    cr_assert_eq(load_yaml("bogus: 1\n", &cfg, NULL, 0), GIM_ECONFIG);
    config_free(&cfg);
}

/* SIGHUP's comparison (main.c reload): the changed keys by path, in the example file's order. */
Test(config, changed_keys_are_named_in_file_order)
{
    struct gim_config a = {0}, b = {0};
    char err[256] = "";
    const char *paths[8];
    cr_assert_eq(config_load(NULL, &a, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(config_load(NULL, &b, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(config_changed(&a, &b, paths, 8), 0, "defaults equal defaults");
    config_free(&b);
    memset(&b, 0, sizeof b);
    cr_assert_eq(load_yaml("log: {level: debug}\n"
                           "listen: [\"tcp://127.0.0.1:7400\"]\n"
                           "auth: {insecure_dev: true}\n"
                           "writer: {max_queued: 9}\n",
                           &b, err, sizeof err),
                 GIM_OK, "%s", err);
    size_t n = config_changed(&a, &b, paths, 8);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(paths[0], "listen");
    cr_assert_str_eq(paths[1], "auth.insecure_dev");
    cr_assert_str_eq(paths[2], "writer.max_queued");
    cr_assert_str_eq(paths[3], "log.level");
    cr_assert_eq(config_changed(&a, &b, paths, 2), 2, "at most max paths");
    config_free(&a);
    config_free(&b);
}

/* database.backend and database.url (issue 17): the default, postgres with its URL, the pairing. */
Test(config, database_backend)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_str_eq(cfg.database.backend, "sqlite");
    cr_assert_str_eq(cfg.database.url, "");
    cr_assert_not(config_is_postgres(&cfg));
    config_free(&cfg);

    cr_assert_eq(
        load_yaml("database: {backend: postgres, url: \"postgresql://gim:pw@db:5432/gim\"}\n", &cfg,
                  err, sizeof err),
        GIM_OK, "%s", err);
    cr_assert(config_is_postgres(&cfg));
    cr_assert_str_eq(cfg.database.url, "postgresql://gim:pw@db:5432/gim");
    config_free(&cfg);
    cr_assert_eq(load_yaml("database: {backend: postgres, url: \"postgres://db/gim\"}\n", &cfg, err,
                           sizeof err),
                 GIM_OK, "%s", err);
    config_free(&cfg);

    expect_bad("database: {backend: mysql}\n", "database.backend", "mysql");
    expect_bad("database: {backend: postgres}\n", "database.url", "required");
    expect_bad("database: {url: \"postgresql://db/gim\"}\n", "database.url", "only used");
    expect_bad("database: {backend: postgres, url: \"mysql://u:pw@db/gim\"}\n", "database.url",
               "postgresql://");
}

/* The URL may carry a password: never printed, never in an error message. */
Test(config, database_url_is_never_printed)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(
        load_yaml("database: {backend: postgres, url: \"postgresql://gim:hunter2@db/gim\"}\n", &cfg,
                  err, sizeof err),
        GIM_OK, "%s", err);
    char *out = print_to_string(&cfg);
    config_free(&cfg);
    cr_assert_null(strstr(out, "hunter2"), "%s", out);
    cr_assert_not_null(strstr(out, "\n  backend: \"postgres\"\n  url: \"***\"\n"), "%s", out);
    free(out);
    cr_assert_neq(load_yaml("database: {backend: postgres, url: \"mysql://u:hunter2@db/gim\"}\n",
                            &cfg, err, sizeof err),
                  GIM_OK);
    config_free(&cfg);
    cr_assert_null(strstr(err, "hunter2"), "%s", err);
}

/* The business API and retention run on postgres too (issue 17, phase 2): no key refuses it. */
Test(config, postgres_takes_the_business_api_and_retention)
{
    struct gim_config cfg;
    char err[256] = "";
    cr_assert_eq(load_yaml("database: {backend: postgres, url: \"postgresql://db/gim\"}\n"
                           "api: {listen: \"http://127.0.0.1:7490\"}\n"
                           "retention: {days: 30}\n",
                           &cfg, err, sizeof err),
                 GIM_OK, "%s", err);
    config_free(&cfg);
}
